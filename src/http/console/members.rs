//! 成员与权限: who of the corp's members gets which console role when they sign in through
//! WeCom (an admin's grant, else the directory: department leaders manage, members with 客户联系
//! sell), and the live sessions, each of which an admin can end. Every change is audited; a
//! changed role ends the member's sessions so it holds from their next request.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use wecom_sdk::UserId;

use super::views::{self, Chrome};
use super::{Failure, Form, IDLE_MS, Signed, html, render, see_other, when};
use crate::auth::members::{self, Grant};
use crate::auth::session::{self, Holder};
use crate::auth::{Action, Role, audit};
use crate::http::AppState;
use crate::platform::db::now_ms;

/// The choices of the grant select, in order: the directory's say first.
const GRANTS: [(&str, &str); 6] = [
    ("directory", "按通讯录"),
    ("admin", "管理员"),
    ("compliance", "合规"),
    ("manager", "部门负责人"),
    ("sales", "销售"),
    ("none", "禁止登录"),
];

pub(super) async fn page(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    uri: axum::http::Uri,
) -> Result<Response, Failure> {
    let s = signed.may(Action::ManageSettings)?;
    let corp = &s.principal.corp_id;
    let now = now_ms();
    let roster = members::roster(&state.db, corp).await?;
    // Sidebar sessions may idle longer than the console's.
    let idle = i64::try_from(state.config.sidebar.session_idle_secs)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000)
        .max(IDLE_MS);
    let sessions = session::list(&state.db, corp, idle, now).await?;
    let names: std::collections::HashMap<&str, &str> = roster
        .iter()
        .map(|r| (r.user_id.as_str(), r.name.as_str()))
        .collect();
    let rows = roster
        .iter()
        .map(|r| {
            let current = r.grant.map_or("directory", Grant::as_str);
            views::MemberRow {
                user_id: r.user_id.clone(),
                name: if r.name.trim().is_empty() {
                    r.user_id.clone()
                } else {
                    r.name.clone()
                },
                role: match r.role {
                    Ok(role) => views::role_label(role).to_owned(),
                    Err(why) => match why {
                        members::Refusal::Inactive => "不能登录（已离职或停用）",
                        members::Refusal::Revoked => "不能登录（已禁止）",
                        _ => "不能登录（无权限）",
                    }
                    .to_owned(),
                },
                granted: r.grant.is_some(),
                choices: GRANTS
                    .iter()
                    .map(|(value, label)| views::Choice {
                        value: (*value).to_owned(),
                        label: (*label).to_owned(),
                        selected: *value == current,
                    })
                    .collect(),
                sessions: sessions.iter().filter(|x| x.user_id == r.user_id).count(),
            }
        })
        .collect();
    let sessions = sessions
        .iter()
        .map(|x| views::SessionRow {
            id: x.id.clone(),
            who: match &x.account {
                Some(a) => format!("账号 {a}"),
                None => names
                    .get(x.user_id.as_str())
                    .map_or_else(|| x.user_id.clone(), |n| format!("{n}（{}）", x.user_id)),
            },
            surface: if x.surface == "sidebar" {
                "侧边栏"
            } else {
                "控制台"
            },
            role: Role::parse(&x.role).map_or("", views::role_label),
            since: when(x.created_at_ms),
            seen: when(x.last_seen_at_ms),
        })
        .collect();
    let flash = super::query_map(&uri)
        .get("done")
        .map(|d| match d.as_str() {
            "role" => "已更新权限，该成员需重新登录".to_owned(),
            "ended" => "已结束会话".to_owned(),
            _ => "已完成".to_owned(),
        });
    let page = views::Members {
        chrome: Chrome::new(&s.principal, &s.csrf_token, "/console/members", flash),
        members: rows,
        sessions,
    };
    Ok(html(StatusCode::OK, render(&page)))
}

/// `POST /console/members/{user}/role`: `role` = a role, `none`, or `directory` (no grant).
pub(super) async fn set_role(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Path(user): Path<String>,
    form: Form,
) -> Result<Response, Failure> {
    let s = signed.may_write(Action::ManageSettings, &form)?;
    let Ok(user) = UserId::try_from(user.as_str()) else {
        return Err(Failure::NotFound(Box::new(s), "成员"));
    };
    let grant = match form.get("role").unwrap_or("") {
        "directory" => None,
        other => match Grant::parse(other) {
            Some(g) => Some(g),
            None => return Err(Failure::Invalid("未知的角色".to_owned())),
        },
    };
    let corp = &s.principal.corp_id;
    if crate::domain::staff::get(&state.db, corp, &user)
        .await?
        .is_none()
    {
        return Err(Failure::NotFound(Box::new(s), "成员"));
    }
    // An admin cannot lock themself out by accident.
    if s.principal.staff_user_id.as_ref() == Some(&user)
        && !matches!(grant, Some(Grant::Role(Role::Admin)))
    {
        return Err(Failure::Invalid(
            "不能修改自己的权限：请另一位管理员操作".to_owned(),
        ));
    }
    members::set_grant(
        &state.db,
        corp,
        &user,
        grant,
        &s.principal.actor(),
        now_ms(),
    )
    .await?;
    Ok(see_other("/console/members?done=role"))
}

/// `POST /console/members/{user}/sessions/end`: every session of the member.
pub(super) async fn end_member_sessions(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Path(user): Path<String>,
    form: Form,
) -> Result<Response, Failure> {
    let s = signed.may_write(Action::ManageSettings, &form)?;
    let Ok(user) = UserId::try_from(user.as_str()) else {
        return Err(Failure::NotFound(Box::new(s), "成员"));
    };
    let corp = &s.principal.corp_id;
    let n = session::end_all(&state.db, corp, Holder::Member(user.as_str())).await?;
    record(
        &state,
        &s,
        user.as_str(),
        serde_json::json!({ "sessions": n }),
    )
    .await?;
    Ok(see_other("/console/members?done=ended"))
}

/// `POST /console/sessions/{id}/end`: one session.
pub(super) async fn end_session(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Path(id): Path<String>,
    form: Form,
) -> Result<Response, Failure> {
    let s = signed.may_write(Action::ManageSettings, &form)?;
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Failure::NotFound(Box::new(s), "会话"));
    }
    let Some(ended) = session::end_by_id(&state.db, &s.principal.corp_id, &id).await? else {
        return Err(Failure::NotFound(Box::new(s), "会话"));
    };
    let target = ended
        .account
        .map_or(ended.user_id, |a| format!("console:{a}"));
    record(
        &state,
        &s,
        &target,
        serde_json::json!({ "sessions": 1, "surface": ended.surface }),
    )
    .await?;
    Ok(see_other("/console/members?done=ended"))
}

async fn record(
    state: &AppState,
    s: &session::Session,
    target: &str,
    detail: serde_json::Value,
) -> Result<(), Failure> {
    let mut tx = state.db.begin().await?;
    audit::audit(
        &mut tx,
        s.principal.corp_id.as_str(),
        &s.principal.actor(),
        "console.sessions_revoked",
        target,
        &detail,
        now_ms(),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
