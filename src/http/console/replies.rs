//! 话术库 in the console: the folders and snippets salespeople send from the sidebar, with how
//! often each was sent; admins add, edit and delete them (the same `quick_replies` functions as
//! the API, audited the same way).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::views::{self, Chrome};
use super::{Failure, Form, Signed, html, query_map, render, see_other, when};
use crate::auth::Action;
use crate::domain::quick_replies::{
    self, FolderDeletion, NewSnippet, QuickReplyConflict, QuickReplyError, SnippetChange,
};
use crate::http::AppState;
use crate::platform::db::now_ms;

pub(super) async fn page(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    uri: axum::http::Uri,
) -> Result<Response, Failure> {
    let s = signed.may(Action::ReadCustomers)?;
    let folders = quick_replies::library(&state.db, &s.principal.corp_id, None)
        .await?
        .into_iter()
        .map(|f| views::ReplyFolderView {
            id: f.folder.id,
            name: f.folder.name,
            snippets: f
                .snippets
                .into_iter()
                .map(|r| views::ReplyView {
                    id: r.id,
                    title: r.title,
                    body: r.body,
                    use_count: r.use_count,
                    last_used: r.last_used_at_ms.map_or_else(|| "—".to_owned(), when),
                })
                .collect(),
        })
        .collect();
    let flash = query_map(&uri).get("done").map(|what| match what.as_str() {
        "folder" => "文件夹已创建".to_owned(),
        "deleted" => "已删除".to_owned(),
        _ => "已保存".to_owned(),
    });
    let page = views::Replies {
        chrome: Chrome::new(&s.principal, &s.csrf_token, "/console/replies", flash),
        may_manage: s.principal.role.may(Action::ManageQuickReplies),
        folders,
    };
    Ok(html(StatusCode::OK, render(&page)))
}

/// Why a change was refused, as the page says it.
fn refused(e: QuickReplyError) -> Failure {
    match e {
        QuickReplyError::Invalid { reason, .. } => Failure::Invalid(reason),
        QuickReplyError::NotFound => {
            Failure::Invalid("话术或文件夹不存在（可能已被删除）".to_owned())
        }
        QuickReplyError::Conflict(QuickReplyConflict::DuplicateFolderName) => {
            Failure::Invalid("已有同名的文件夹".to_owned())
        }
        QuickReplyError::Conflict(QuickReplyConflict::DuplicateTitle) => {
            Failure::Invalid("这个文件夹里已有同样标题的话术".to_owned())
        }
        QuickReplyError::Conflict(QuickReplyConflict::FolderNotEmpty { snippets }) => {
            Failure::Invalid(format!(
                "文件夹里还有 {snippets} 条话术：勾选“连同话术一起删除”，或先移走它们"
            ))
        }
        QuickReplyError::Store(e) => e.into(),
    }
}

fn id_of(form: &Form, key: &str) -> Result<i64, Failure> {
    form.get(key)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Failure::Invalid("缺少或错误的编号".to_owned()))
}

pub(super) async fn create_folder(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    form: Form,
) -> Result<Response, Failure> {
    let s = signed.may_write(Action::ManageQuickReplies, &form)?;
    let who = &s.principal;
    quick_replies::create_folder(
        &state.db,
        &who.corp_id,
        form.get("name").unwrap_or(""),
        None,
        &who.actor(),
        now_ms(),
    )
    .await
    .map_err(refused)?;
    Ok(see_other("/console/replies?done=folder"))
}

pub(super) async fn delete_folder(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Path(id): Path<i64>,
    form: Form,
) -> Result<Response, Failure> {
    let s = signed.may_write(Action::ManageQuickReplies, &form)?;
    let who = &s.principal;
    let deletion = if form.get("cascade") == Some("true") {
        FolderDeletion::WithSnippets
    } else {
        FolderDeletion::OnlyIfEmpty
    };
    quick_replies::delete_folder(
        &state.db,
        &who.corp_id,
        id,
        deletion,
        &who.actor(),
        now_ms(),
    )
    .await
    .map_err(refused)?;
    Ok(see_other("/console/replies?done=deleted"))
}

pub(super) async fn create_snippet(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    form: Form,
) -> Result<Response, Failure> {
    let s = signed.may_write(Action::ManageQuickReplies, &form)?;
    let who = &s.principal;
    let new = NewSnippet {
        folder_id: id_of(&form, "folder_id")?,
        title: form.get("title").unwrap_or(""),
        body: form.get("body").unwrap_or(""),
        position: None,
    };
    quick_replies::create_snippet(&state.db, &who.corp_id, &new, &who.actor(), now_ms())
        .await
        .map_err(refused)?;
    Ok(see_other("/console/replies?done=saved"))
}

pub(super) async fn update_snippet(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Path(id): Path<i64>,
    form: Form,
) -> Result<Response, Failure> {
    let s = signed.may_write(Action::ManageQuickReplies, &form)?;
    let who = &s.principal;
    let change = SnippetChange {
        title: form.get("title").map(str::to_owned),
        body: form.get("body").map(str::to_owned),
        ..SnippetChange::default()
    };
    quick_replies::update_snippet(&state.db, &who.corp_id, id, &change, &who.actor(), now_ms())
        .await
        .map_err(refused)?;
    Ok(see_other("/console/replies?done=saved"))
}

pub(super) async fn delete_snippet(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Path(id): Path<i64>,
    form: Form,
) -> Result<Response, Failure> {
    let s = signed.may_write(Action::ManageQuickReplies, &form)?;
    let who = &s.principal;
    quick_replies::delete_snippet(&state.db, &who.corp_id, id, &who.actor(), now_ms())
        .await
        .map_err(refused)?;
    Ok(see_other("/console/replies?done=deleted"))
}
