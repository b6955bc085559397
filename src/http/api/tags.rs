//! The corp tag library (changes go to WeCom through the outbox), personal tags and
//! auto-tagging rules.

use std::sync::Arc;

use axum::extract::State;
use axum::http::Method;
use axum::response::Response;
use axum::routing::{delete, get, patch, post};
use serde::Deserialize;
use serde_json::json;

use super::schema::{accepted as accepted_schema, array, int, object, one_of, string};
use super::{
    ApiFailure, ApiResult, Auth, Body, Endpoint, PathParams, accepted, created, invalid, ok,
};
use crate::auth::Action;
use crate::domain::customers::record::{self, NewRule, RecordError};
use crate::domain::tags;
use crate::http::AppState;
use crate::pipeline::outbox::{self, Intent, NewTag, OutboxFilter};
use crate::platform::db::{StoreError, now_ms};

/// This module's endpoints.
pub fn endpoints() -> Vec<Endpoint> {
    let tag = object(
        &[
            ("tag_id", string("标签 id")),
            ("group_id", string("标签组 id")),
            ("name", string("名称")),
            ("sort_order", int("排序（大的在前）")),
        ],
        &["tag_id", "name"],
    );
    let group = object(
        &[
            ("group_id", string("标签组 id")),
            ("name", string("名称")),
            ("sort_order", int("排序")),
            ("tags", array(tag)),
        ],
        &["group_id", "name", "tags"],
    );
    let new_tags = array(object(
        &[("name", string("标签名，≤ 30 字")), ("order", int("排序"))],
        &["name"],
    ));
    let personal = object(
        &[
            ("id", int("个人标签 id")),
            ("name", string("名称")),
            ("color", string("颜色 #rrggbb")),
            ("created_by", string("创建人")),
            ("created_at_ms", int("创建时间")),
        ],
        &["id", "name"],
    );
    let rule = object(
        &[
            ("id", int("规则 id")),
            ("name", string("名称")),
            (
                "trigger",
                one_of(
                    &["channel", "group_join", "keyword"],
                    "触发：渠道（联系我 state）、入群、会话关键词",
                ),
            ),
            (
                "patterns",
                array(string("渠道 state（可用 前缀*）、群 chat_id 或关键词")),
            ),
            ("corp_tag_ids", array(string("要打的企业标签"))),
            ("personal_tag_ids", array(int("要打的个人标签"))),
            ("enabled", super::schema::boolean("是否启用")),
        ],
        &["id", "name", "trigger", "patterns"],
    );
    vec![
        Endpoint::new(
            Method::GET,
            "/tag-groups",
            "企业标签库（含尚未送达企业微信的新建请求）",
            get(library),
        )
        .tag("tags")
        .requires(Action::ReadCustomers)
        .response(
            200,
            object(
                &[
                    ("groups", array(group)),
                    (
                        "pending",
                        array(object(&[("outbox_id", int("")), ("kind", string(""))], &[])),
                    ),
                ],
                &["groups"],
            ),
        ),
        Endpoint::new(
            Method::POST,
            "/tag-groups",
            "新建标签组及其标签（经 outbox 调用 add_corp_tag；送达后出现在标签库）",
            post(create_group),
        )
        .tag("tags")
        .requires(Action::ManageTags)
        .request(object(
            &[
                ("name", string("标签组名，≤ 30 字")),
                ("order", int("排序")),
                ("tags", new_tags.clone()),
            ],
            &["name", "tags"],
        ))
        .response(202, accepted_schema(&[])),
        Endpoint::new(
            Method::POST,
            "/tag-groups/{group_id}/tags",
            "向已有标签组添加标签（经 outbox）",
            post(add_tags),
        )
        .tag("tags")
        .requires(Action::ManageTags)
        .request(object(&[("tags", new_tags)], &["tags"]))
        .response(202, accepted_schema(&[])),
        Endpoint::new(
            Method::PATCH,
            "/tag-groups/{group_id}",
            "重命名或调整标签组排序（立即生效并经 outbox 同步）",
            patch(edit_one),
        )
        .tag("tags")
        .requires(Action::ManageTags)
        .request(object(
            &[("name", string("新名称")), ("order", int("新排序"))],
            &[],
        ))
        .response(202, accepted_schema(&[])),
        Endpoint::new(
            Method::DELETE,
            "/tag-groups/{group_id}",
            "删除标签组及其全部标签",
            delete(delete_group),
        )
        .tag("tags")
        .requires(Action::ManageTags)
        .response(202, accepted_schema(&[])),
        Endpoint::new(
            Method::PATCH,
            "/tags/{tag_id}",
            "重命名或调整标签排序",
            patch(edit_one),
        )
        .tag("tags")
        .requires(Action::ManageTags)
        .request(object(
            &[("name", string("新名称")), ("order", int("新排序"))],
            &[],
        ))
        .response(202, accepted_schema(&[])),
        Endpoint::new(
            Method::DELETE,
            "/tags/{tag_id}",
            "删除标签（客户身上的该标签一并去掉，与企业微信一致）",
            delete(delete_tag),
        )
        .tag("tags")
        .requires(Action::ManageTags)
        .response(202, accepted_schema(&[])),
        Endpoint::new(
            Method::GET,
            "/personal-tags",
            "个人标签（仅本系统）",
            get(list_personal),
        )
        .tag("tags")
        .requires(Action::ReadCustomers)
        .response(
            200,
            object(
                &[("personal_tags", array(personal.clone()))],
                &["personal_tags"],
            ),
        ),
        Endpoint::new(
            Method::POST,
            "/personal-tags",
            "新建个人标签",
            post(create_personal),
        )
        .tag("tags")
        .requires(Action::EditCustomers)
        .request(object(
            &[
                ("name", string("名称，≤ 30 字")),
                ("color", string("#rrggbb")),
            ],
            &["name"],
        ))
        .response(201, personal),
        Endpoint::new(
            Method::DELETE,
            "/personal-tags/{id}",
            "删除个人标签",
            delete(delete_personal),
        )
        .tag("tags")
        .requires(Action::ManageTags)
        .response(200, object(&[("deleted", int(""))], &["deleted"])),
        Endpoint::new(
            Method::GET,
            "/auto-tag-rules",
            "自动打标签规则",
            get(list_rules),
        )
        .tag("tags")
        .requires(Action::ReadOperations)
        .response(200, object(&[("rules", array(rule.clone()))], &["rules"])),
        Endpoint::new(
            Method::POST,
            "/auto-tag-rules",
            "新建自动打标签规则",
            post(create_rule),
        )
        .tag("tags")
        .requires(Action::ManageSettings)
        .request(object(
            &[
                ("name", string("名称")),
                (
                    "trigger",
                    one_of(&["channel", "group_join", "keyword"], "触发"),
                ),
                ("patterns", array(string("匹配内容"))),
                ("corp_tag_ids", array(string("企业标签"))),
                ("personal_tag_ids", array(int("个人标签"))),
            ],
            &["name", "trigger", "patterns"],
        ))
        .response(201, rule),
        Endpoint::new(
            Method::DELETE,
            "/auto-tag-rules/{id}",
            "删除规则（已打的标签保留并注明来源）",
            delete(delete_rule),
        )
        .tag("tags")
        .requires(Action::ManageSettings)
        .response(200, object(&[("deleted", int(""))], &["deleted"])),
        Endpoint::new(
            Method::GET,
            "/tag-groups/{group_id}",
            "一个标签组",
            get(one_group),
        )
        .tag("tags")
        .requires(Action::ReadCustomers)
        .response(
            200,
            object(
                &[
                    ("group_id", string("")),
                    ("name", string("")),
                    ("tags", array(string(""))),
                ],
                &["group_id"],
            ),
        ),
    ]
}

async fn library(State(state): State<Arc<AppState>>, Auth(who): Auth) -> ApiResult {
    let groups = tags::library(&state.db, who.corp_id.as_str()).await?;
    let pending = pending_library_items(&state, who.corp_id.as_str()).await?;
    ok(json!({"groups": groups, "pending": pending}))
}

async fn pending_library_items(
    state: &AppState,
    corp: &str,
) -> Result<Vec<serde_json::Value>, StoreError> {
    let items = outbox::list(
        &state.db,
        &OutboxFilter {
            corp_id: Some(corp.to_owned()),
            state: Some("pending".to_owned()),
            order_key: Some("tag_library".to_owned()),
            limit: 200,
            ..OutboxFilter::default()
        },
    )
    .await?;
    Ok(items
        .into_iter()
        .map(|i| json!({"outbox_id": i.id, "id": i.id, "kind": i.kind, "payload": serde_json::from_str::<serde_json::Value>(&i.payload).unwrap_or_default(), "last_error": i.last_error}))
        .collect())
}

async fn one_group(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    PathParams(group_id): PathParams<String>,
) -> ApiResult {
    let group = tags::library(&state.db, who.corp_id.as_str())
        .await?
        .into_iter()
        .find(|g| g.group_id == group_id)
        .ok_or(ApiFailure::NotFound("标签组"))?;
    ok(group)
}

fn check_name(field: &str, name: &str) -> Result<(), ApiFailure> {
    tags::check_name(name)
        .map(|_| ())
        .map_err(|reason| invalid(field, reason))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewTagBody {
    name: String,
    order: Option<u32>,
}

fn new_tags(tags: &[NewTagBody]) -> Result<Vec<NewTag>, ApiFailure> {
    if tags.is_empty() {
        return Err(invalid(
            "tags",
            "至少一个标签（企业微信不允许空标签组） / at least one tag",
        ));
    }
    if tags.len() > 100 {
        return Err(invalid("tags", "一次最多 100 个标签"));
    }
    tags.iter()
        .enumerate()
        .map(|(i, t)| {
            check_name(&format!("tags[{i}].name"), &t.name)?;
            Ok(NewTag {
                name: t.name.trim().to_owned(),
                order: t.order,
            })
        })
        .collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewGroupBody {
    name: String,
    order: Option<u32>,
    tags: Vec<NewTagBody>,
}

async fn create_group(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    Body(body): Body<NewGroupBody>,
) -> ApiResult<Response> {
    check_name("name", &body.name)?;
    let intent = Intent::AddCorpTag {
        group_id: None,
        group_name: Some(body.name.trim().to_owned()),
        group_order: body.order,
        tags: new_tags(&body.tags)?,
    };
    let id = tags::request_create(
        &state.db,
        who.corp_id.as_str(),
        &intent,
        &who.actor(),
        now_ms(),
    )
    .await?;
    accepted(json!({"outbox_id": id}))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AddTagsBody {
    tags: Vec<NewTagBody>,
}

async fn add_tags(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    PathParams(group_id): PathParams<String>,
    Body(body): Body<AddTagsBody>,
) -> ApiResult<Response> {
    if !tags::is_group(&state.db, who.corp_id.as_str(), &group_id).await? {
        return Err(ApiFailure::NotFound("标签组"));
    }
    let intent = Intent::AddCorpTag {
        group_id: Some(group_id),
        group_name: None,
        group_order: None,
        tags: new_tags(&body.tags)?,
    };
    let id = tags::request_create(
        &state.db,
        who.corp_id.as_str(),
        &intent,
        &who.actor(),
        now_ms(),
    )
    .await?;
    accepted(json!({"outbox_id": id}))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EditBody {
    name: Option<String>,
    order: Option<u32>,
}

async fn edit_one(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    PathParams(id): PathParams<String>,
    Body(body): Body<EditBody>,
) -> ApiResult<Response> {
    if body.name.is_none() && body.order.is_none() {
        return Err(invalid(
            "name",
            "name 和 order 至少给一个 / nothing to change",
        ));
    }
    if let Some(name) = &body.name {
        check_name("name", name)?;
    }
    let name = body.name.as_deref().map(str::trim);
    match tags::edit(
        &state.db,
        who.corp_id.as_str(),
        &id,
        name,
        body.order,
        &who.actor(),
        now_ms(),
    )
    .await
    {
        Ok(item) => accepted(json!({"outbox_id": item})),
        Err(StoreError::NotFound) => Err(ApiFailure::NotFound("标签或标签组")),
        Err(e) => Err(e.into()),
    }
}

async fn delete_tag(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    PathParams(tag_id): PathParams<String>,
) -> ApiResult<Response> {
    if tags::get_tag(&state.db, who.corp_id.as_str(), &tag_id)
        .await?
        .is_none_or(|t| t.deleted_at_ms.is_some())
    {
        return Err(ApiFailure::NotFound("标签"));
    }
    let item = record::delete_corp_tags(
        &state.db,
        who.corp_id.as_str(),
        &[tag_id],
        &[],
        &who.actor(),
        now_ms(),
    )
    .await?;
    accepted(json!({"outbox_id": item}))
}

async fn delete_group(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    PathParams(group_id): PathParams<String>,
) -> ApiResult<Response> {
    if !tags::is_group(&state.db, who.corp_id.as_str(), &group_id).await? {
        return Err(ApiFailure::NotFound("标签组"));
    }
    let item = record::delete_corp_tags(
        &state.db,
        who.corp_id.as_str(),
        &[],
        &[group_id],
        &who.actor(),
        now_ms(),
    )
    .await?;
    accepted(json!({"outbox_id": item}))
}

async fn list_personal(State(state): State<Arc<AppState>>, Auth(who): Auth) -> ApiResult {
    ok(json!({"personal_tags": record::personal_tags(&state.db, who.corp_id.as_str()).await?}))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PersonalBody {
    name: String,
    #[serde(default)]
    color: String,
}

async fn create_personal(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    Body(body): Body<PersonalBody>,
) -> ApiResult<Response> {
    check_name("name", &body.name)?;
    let color_ok = body.color.is_empty()
        || (body.color.len() == 7
            && body.color.starts_with('#')
            && body.color[1..].bytes().all(|b| b.is_ascii_hexdigit()));
    if !color_ok {
        return Err(invalid(
            "color",
            "颜色格式为 #rrggbb / color must be #rrggbb",
        ));
    }
    match record::create_personal_tag(
        &state.db,
        who.corp_id.as_str(),
        body.name.trim(),
        &body.color,
        &who.actor(),
        now_ms(),
    )
    .await
    {
        Ok(tag) => created(tag),
        Err(StoreError::Conflict(_)) => Err(invalid(
            "name",
            "已有同名个人标签 / a personal tag of that name exists",
        )),
        Err(e) => Err(e.into()),
    }
}

async fn delete_personal(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    PathParams(id): PathParams<i64>,
) -> ApiResult {
    match record::delete_personal_tag(&state.db, who.corp_id.as_str(), id, &who.actor(), now_ms())
        .await
    {
        Ok(()) => ok(json!({"deleted": id})),
        Err(RecordError::NotFound) => Err(ApiFailure::NotFound("个人标签")),
        Err(RecordError::Store(e)) => Err(e.into()),
        Err(e) => Err(invalid("id", e.to_string())),
    }
}

async fn list_rules(State(state): State<Arc<AppState>>, Auth(who): Auth) -> ApiResult {
    ok(json!({"rules": record::rules(&state.db, who.corp_id.as_str(), None).await?}))
}

async fn create_rule(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    Body(body): Body<NewRule>,
) -> ApiResult<Response> {
    check_name("name", &body.name)?;
    body.check().map_err(|(field, why)| invalid(field, why))?;
    super::customers::check_tags(
        &state,
        who.corp_id.as_str(),
        &[("corp_tag_ids", &body.corp_tag_ids)],
    )
    .await?;
    let live: Vec<i64> = record::personal_tags(&state.db, who.corp_id.as_str())
        .await?
        .into_iter()
        .map(|t| t.id)
        .collect();
    if let Some(i) = body.personal_tag_ids.iter().position(|t| !live.contains(t)) {
        return Err(invalid(
            format!("personal_tag_ids[{i}]"),
            "个人标签不存在 / unknown personal tag",
        ));
    }
    let id = record::create_rule(
        &state.db,
        who.corp_id.as_str(),
        &body,
        &who.actor(),
        now_ms(),
    )
    .await?;
    let rule = record::rules(&state.db, who.corp_id.as_str(), None)
        .await?
        .into_iter()
        .find(|r| r.id == id)
        .ok_or(ApiFailure::NotFound("规则"))?;
    created(rule)
}

async fn delete_rule(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    PathParams(id): PathParams<i64>,
) -> ApiResult {
    match record::delete_rule(&state.db, who.corp_id.as_str(), id, &who.actor(), now_ms()).await {
        Ok(()) => ok(json!({"deleted": id})),
        Err(RecordError::NotFound) => Err(ApiFailure::NotFound("规则")),
        Err(RecordError::Store(e)) => Err(e.into()),
        Err(e) => Err(invalid("id", e.to_string())),
    }
}
