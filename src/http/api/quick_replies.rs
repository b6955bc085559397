//! Quick replies (话术库): thin handlers over [`crate::domain::quick_replies`]. Everyone who reads
//! customers reads the library; admins manage folders and snippets; a salesperson's send into a
//! chat counts one use. The library is corp-wide, so there is no data scope beyond the corp: a
//! folder or snippet of another corp is 404.

use std::sync::Arc;

use axum::extract::State;
use axum::http::Method;
use axum::routing::{delete, get, patch, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::schema::{array, boolean, int, nullable, object, string};
use super::{
    ApiFailure, ApiResult, Auth, Body, Endpoint, PathParams, QueryParams, created, errors,
};
use super::{invalid, ok};
use crate::auth::Action;
use crate::domain::quick_replies::{
    self as quick, FolderChange, FolderDeletion, NewSnippet, SnippetChange,
};
use crate::http::AppState;
use crate::platform::db::now_ms;

fn folder_schema() -> Value {
    object(
        &[
            ("id", int("分组 id")),
            ("name", string("分组名，1–30 字，企业内唯一")),
            ("position", int("排序（小的在前，相同按 id）")),
        ],
        &["id", "name", "position"],
    )
}

fn snippet_schema() -> Value {
    object(
        &[
            ("id", int("话术 id")),
            ("folder_id", int("所在分组")),
            ("title", string("标题，1–40 字，分组内唯一")),
            (
                "body",
                string("发送的文本，1–1000 字且不超过 2048 字节（企业微信文本消息上限）"),
            ),
            ("position", int("分组内排序（小的在前，相同按 id）")),
            ("use_count", int("被发送的次数")),
            ("last_used_at_ms", nullable(int("最近一次发送时间"))),
        ],
        &[
            "id",
            "folder_id",
            "title",
            "body",
            "position",
            "use_count",
            "last_used_at_ms",
        ],
    )
}

/// This module's endpoints.
pub fn endpoints() -> Vec<Endpoint> {
    let folder = folder_schema();
    let snippet = snippet_schema();
    let mut with_snippets = folder.clone();
    if let Some(props) = with_snippets["properties"].as_object_mut() {
        props.insert("snippets".to_owned(), array(snippet.clone()));
    }
    let position = int("排序，0–1000000；不给则排在最后");
    vec![
        Endpoint::new(
            Method::GET,
            "/quick-replies",
            "话术库：全部分组及其话术（按排序），含使用次数；q 为搜索",
            get(library),
        )
        .tag("quick-replies")
        .requires(Action::ReadCustomers)
        .query(
            "q",
            string(""),
            "标题或内容包含该文字（不区分大小写，% 和 _ 按字面匹配）；只返回有匹配话术的分组",
        )
        .response(
            200,
            object(&[("folders", array(with_snippets))], &["folders"]),
        ),
        Endpoint::new(
            Method::POST,
            "/quick-replies/folders",
            "新建话术分组",
            post(create_folder),
        )
        .tag("quick-replies")
        .requires(Action::ManageQuickReplies)
        .request(object(
            &[
                ("name", string("分组名，1–30 字")),
                ("position", position.clone()),
            ],
            &["name"],
        ))
        .response(201, folder.clone()),
        Endpoint::new(
            Method::PATCH,
            "/quick-replies/folders/{id}",
            "重命名或调整分组排序",
            patch(update_folder),
        )
        .tag("quick-replies")
        .requires(Action::ManageQuickReplies)
        .request(object(
            &[("name", string("新名称")), ("position", int("新排序"))],
            &[],
        ))
        .response(200, folder),
        Endpoint::new(
            Method::DELETE,
            "/quick-replies/folders/{id}",
            "删除分组（分组里还有话术时为 409，除非 cascade=true 一并删除）",
            delete(delete_folder),
        )
        .tag("quick-replies")
        .requires(Action::ManageQuickReplies)
        .query("cascade", boolean(""), "true：连同分组里的话术一并删除")
        .response(
            200,
            object(
                &[
                    ("deleted", int("删除的分组 id")),
                    ("snippets_deleted", int("一并删除的话术条数")),
                ],
                &["deleted", "snippets_deleted"],
            ),
        ),
        Endpoint::new(
            Method::POST,
            "/quick-replies/snippets",
            "新建话术",
            post(create_snippet),
        )
        .tag("quick-replies")
        .requires(Action::ManageQuickReplies)
        .request(object(
            &[
                ("folder_id", int("所在分组")),
                ("title", string("标题，1–40 字")),
                ("body", string("文本，1–1000 字且不超过 2048 字节")),
                ("position", position),
            ],
            &["folder_id", "title", "body"],
        ))
        .response(201, snippet.clone()),
        Endpoint::new(
            Method::PATCH,
            "/quick-replies/snippets/{id}",
            "修改话术：标题、内容、排序，或移到另一分组（不给排序则排在那里最后）",
            patch(update_snippet),
        )
        .tag("quick-replies")
        .requires(Action::ManageQuickReplies)
        .request(object(
            &[
                ("folder_id", int("移到该分组")),
                ("title", string("新标题")),
                ("body", string("新内容")),
                ("position", int("新排序")),
            ],
            &[],
        ))
        .response(200, snippet.clone()),
        Endpoint::new(
            Method::DELETE,
            "/quick-replies/snippets/{id}",
            "删除话术",
            delete(delete_snippet),
        )
        .tag("quick-replies")
        .requires(Action::ManageQuickReplies)
        .response(
            200,
            object(&[("deleted", int("删除的话术 id"))], &["deleted"]),
        ),
        Endpoint::new(
            Method::POST,
            "/quick-replies/snippets/{id}/uses",
            "记一次使用：成员把这条话术发进了客户会话",
            post(record_use),
        )
        .tag("quick-replies")
        .requires(Action::EditCustomers)
        .scope("须以成员身份调用（绑定成员的 API 密钥）")
        .response(200, snippet),
    ]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LibraryQuery {
    q: Option<String>,
}

async fn library(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    QueryParams(query): QueryParams<LibraryQuery>,
) -> ApiResult {
    let folders = quick::library(&state.db, &who.corp_id, query.q.as_deref()).await?;
    ok(json!({"folders": folders}))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewFolderBody {
    name: String,
    position: Option<i64>,
}

async fn create_folder(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    Body(body): Body<NewFolderBody>,
) -> ApiResult {
    let folder = quick::create_folder(
        &state.db,
        &who.corp_id,
        &body.name,
        body.position,
        &who.actor(),
        now_ms(),
    )
    .await
    .map_err(|e| errors::quick_reply(e, "分组"))?;
    created(folder)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FolderChangeBody {
    name: Option<String>,
    position: Option<i64>,
}

async fn update_folder(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    PathParams(id): PathParams<i64>,
    Body(body): Body<FolderChangeBody>,
) -> ApiResult {
    let change = FolderChange {
        name: body.name,
        position: body.position,
    };
    let folder = quick::update_folder(&state.db, &who.corp_id, id, &change, &who.actor(), now_ms())
        .await
        .map_err(|e| errors::quick_reply(e, "分组"))?;
    ok(folder)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteFolderQuery {
    cascade: Option<bool>,
}

async fn delete_folder(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    PathParams(id): PathParams<i64>,
    QueryParams(query): QueryParams<DeleteFolderQuery>,
) -> ApiResult {
    let deletion = if query.cascade == Some(true) {
        FolderDeletion::WithSnippets
    } else {
        FolderDeletion::OnlyIfEmpty
    };
    let snippets = quick::delete_folder(
        &state.db,
        &who.corp_id,
        id,
        deletion,
        &who.actor(),
        now_ms(),
    )
    .await
    .map_err(|e| errors::quick_reply(e, "分组"))?;
    ok(json!({"deleted": id, "snippets_deleted": snippets}))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSnippetBody {
    folder_id: i64,
    title: String,
    body: String,
    position: Option<i64>,
}

async fn create_snippet(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    Body(body): Body<NewSnippetBody>,
) -> ApiResult {
    let new = NewSnippet {
        folder_id: body.folder_id,
        title: &body.title,
        body: &body.body,
        position: body.position,
    };
    let snippet = quick::create_snippet(&state.db, &who.corp_id, &new, &who.actor(), now_ms())
        .await
        .map_err(|e| errors::quick_reply(e, "话术"))?;
    created(snippet)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnippetChangeBody {
    folder_id: Option<i64>,
    title: Option<String>,
    body: Option<String>,
    position: Option<i64>,
}

async fn update_snippet(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    PathParams(id): PathParams<i64>,
    Body(body): Body<SnippetChangeBody>,
) -> ApiResult {
    let change = SnippetChange {
        folder_id: body.folder_id,
        title: body.title,
        body: body.body,
        position: body.position,
    };
    let snippet =
        quick::update_snippet(&state.db, &who.corp_id, id, &change, &who.actor(), now_ms())
            .await
            .map_err(|e| errors::quick_reply(e, "话术"))?;
    ok(snippet)
}

async fn delete_snippet(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    PathParams(id): PathParams<i64>,
) -> ApiResult {
    quick::delete_snippet(&state.db, &who.corp_id, id, &who.actor(), now_ms())
        .await
        .map_err(|e| errors::quick_reply(e, "话术"))?;
    ok(json!({"deleted": id}))
}

/// The send is counted for the staff member the caller acts as: a key without one (an admin's
/// script) has nobody to count it for.
async fn record_use(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    PathParams(id): PathParams<i64>,
) -> ApiResult {
    let Some(user) = who.staff_user_id.as_ref() else {
        return Err(invalid(
            "staff_user_id",
            "须以成员身份调用：该 API 密钥没有绑定成员 / the key acts for no staff member",
        ));
    };
    if !quick::record_use(&state.db, &who.corp_id, id, user, now_ms()).await? {
        return Err(ApiFailure::NotFound("话术"));
    }
    let snippet = quick::get_snippet(&state.db, &who.corp_id, id)
        .await?
        .ok_or(ApiFailure::NotFound("话术"))?;
    ok(snippet)
}
