//! 客户 in the console: search the corp's customers (name, remark, id, phone, tag, stage, follower,
//! channel, dates added and ended), and one
//! customer with every relation and its history, tags, notes, reminders, stage — and, for roles
//! that may read it, the latest archived messages (a read written to `archive_read`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use wecom_sdk::ExternalUserId;

use super::views::{self, Chrome};
use super::{Failure, Signed, change_label, html, name_of, query_map, render, staff_names, when};
use crate::auth::{AccessError, Action, Denied};
use crate::domain::archive::read::{self, MessageFilter, Reader};
use crate::domain::customers::{self, RelationKey, RelationStatus};
use crate::domain::{followup, staff, tags};
use crate::http::AppState;

/// Customers per page of the search.
const PAGE: i64 = 50;
/// Archived messages shown on a customer's page.
const MESSAGES: i64 = 50;

pub(super) async fn list(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    uri: axum::http::Uri,
) -> Result<Response, Failure> {
    let s = signed.may(Action::ReadCustomers)?;
    let corp = s.principal.corp_id.clone();
    let q = query_map(&uri);
    let query = q.get("q").map(|v| v.chars().take(64).collect::<String>());
    let members = staff::list(&state.db, corp.as_str()).await?;
    // Any well-formed member id (one not synced yet still has customers).
    let team = super::reach(&state, &s).await?;
    let chosen = q
        .get("staff")
        .filter(|u| wecom_sdk::UserId::try_from(u.as_str()).is_ok())
        .filter(|u| team.as_ref().is_none_or(|t| t.contains(u)))
        .cloned();
    let names: HashMap<String, String> = members
        .iter()
        .map(|m| {
            (
                m.user_id.clone(),
                if m.name.trim().is_empty() {
                    m.user_id.clone()
                } else {
                    m.name.clone()
                },
            )
        })
        .collect();
    let text = |name: &str| q.get(name).map(|v| v.chars().take(64).collect::<String>());
    let (phone, tag, stage, channel) = (text("phone"), text("tag"), text("stage"), text("channel"));
    let dates = |from: &str, to: &str| {
        crate::http::web::day_span(
            q.get(from).map(String::as_str),
            q.get(to).map(String::as_str),
        )
    };
    let (Ok(added), Ok(ended)) = (
        dates("added_from", "added_to"),
        dates("ended_from", "ended_to"),
    ) else {
        return Err(Failure::Invalid("日期格式应为 YYYY-MM-DD。".to_owned()));
    };
    let search = customers::CustomerSearch {
        staff: chosen.as_deref(),
        team: team.as_deref(),
        query: query.as_deref(),
        phone: phone
            .as_deref()
            .filter(|p| p.chars().any(|c| c.is_ascii_digit())),
        tag_id: tag.as_deref(),
        stage: stage.as_deref().map(|s| match s {
            "-" => customers::StageFilter::Unset,
            named => customers::StageFilter::Named(named),
        }),
        channel: channel.as_deref(),
        added,
        ended,
        after: q.get("after").map(String::as_str),
    };
    let rows = customers::list_customers(&state.db, &corp, &search, PAGE).await?;
    let ended = search.ended.is_set();
    let library = tags::library(&state.db, corp.as_str()).await?;
    let tag_choices = std::iter::once(views::Choice {
        value: String::new(),
        label: "全部".to_owned(),
        selected: tag.is_none(),
    })
    .chain(library.iter().flat_map(|g| {
        g.tags.iter().map(|t| views::Choice {
            value: t.tag_id.clone(),
            label: format!("{} · {}", g.name, t.name),
            selected: tag.as_deref() == Some(t.tag_id.as_str()),
        })
    }))
    .collect();
    let stage_choices = std::iter::once(("", "全部"))
        .chain(std::iter::once(("-", "未设置")))
        .map(|(v, l)| (v.to_owned(), l.to_owned()))
        .chain(
            followup::stages(&state.db, corp.as_str())
                .await?
                .into_iter()
                .map(|s| (s.clone(), s)),
        )
        .map(|(value, label)| views::Choice {
            selected: stage.as_deref().unwrap_or("") == value,
            value,
            label,
        })
        .collect();
    let next_page = (i64::try_from(rows.len()).unwrap_or(0) == PAGE)
        .then(|| {
            rows.last().map(|c| {
                let mut out = url::form_urlencoded::Serializer::new(String::new());
                for (k, v) in q.iter().filter(|(k, _)| k.as_str() != "after") {
                    out.append_pair(k, v);
                }
                out.append_pair("after", &c.external_user_id);
                out.finish()
            })
        })
        .flatten();
    let customers = rows
        .into_iter()
        .map(|c| views::CustomerRow {
            id: url::form_urlencoded::byte_serialize(c.external_user_id.as_bytes()).collect(),
            name: if c.name.is_empty() {
                c.external_user_id.clone()
            } else {
                c.name
            },
            corp_name: c.corp_name,
            followers: c
                .followers
                .split(',')
                .filter(|u| !u.is_empty())
                .map(|u| names.get(u).cloned().unwrap_or_else(|| u.to_owned()))
                .collect::<Vec<_>>()
                .join("、"),
        })
        .collect();
    let staff = std::iter::once(views::MemberOption {
        user_id: String::new(),
        label: "全部".to_owned(),
        selected: chosen.is_none(),
    })
    .chain(
        members
            .iter()
            .filter(|m| m.departed_at_ms.is_none())
            .filter(|m| team.as_ref().is_none_or(|t| t.contains(&m.user_id)))
            .map(|m| views::MemberOption {
                user_id: m.user_id.clone(),
                label: names.get(&m.user_id).cloned().unwrap_or_default(),
                selected: chosen.as_deref() == Some(m.user_id.as_str()),
            }),
    )
    .collect();
    let page = views::Customers {
        chrome: Chrome::new(&s.principal, &s.csrf_token, "/console/customers", None),
        q: query.clone().unwrap_or_default(),
        phone: phone.clone().unwrap_or_default(),
        channel: channel.clone().unwrap_or_default(),
        tags: tag_choices,
        stages: stage_choices,
        added_from: q.get("added_from").cloned().unwrap_or_default(),
        added_to: q.get("added_to").cloned().unwrap_or_default(),
        ended_from: q.get("ended_from").cloned().unwrap_or_default(),
        ended_to: q.get("ended_to").cloned().unwrap_or_default(),
        ended,
        staff,
        customers,
        next_page,
    };
    Ok(html(StatusCode::OK, render(&page)))
}

fn status_of(status: RelationStatus) -> (&'static str, &'static str) {
    match status.as_str() {
        "active" => ("跟进中", "done"),
        "deleted_by_staff" => ("员工已删除", "failed"),
        "deleted_by_customer" => ("客户已删除", "failed"),
        "transferred" => ("已转接", "cancelled"),
        "vanished" => ("关系消失", "failed"),
        _ => ("已结束", "cancelled"),
    }
}

pub(super) async fn one(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Path(ext): Path<String>,
) -> Result<Response, Failure> {
    let s = signed.may(Action::ReadCustomers)?;
    let Ok(ext) = ExternalUserId::try_from(ext.as_str()) else {
        return Err(Failure::NotFound(Box::new(s), "客户"));
    };
    let who = s.principal.clone();
    match who
        .check_customer(&state.db, Action::ReadCustomers, &ext)
        .await
    {
        Ok(()) => {}
        Err(AccessError::Denied(Denied::Forbidden(why))) => {
            return Err(Failure::Forbidden(Box::new(s), why));
        }
        Err(AccessError::Denied(Denied::Unauthenticated)) => {
            return Err(Failure::SignedOut {
                next: "/console/customers".to_owned(),
            });
        }
        Err(AccessError::Store(e)) => return Err(e.into()),
    }
    let corp = &who.corp_id;
    let profile = customers::get_customer(&state.db, corp, &ext).await?;
    let relations = customers::relations_of_customer(&state.db, corp, &ext).await?;
    if profile.is_none() && relations.is_empty() {
        return Err(Failure::NotFound(Box::new(s), "客户"));
    }
    let names = staff_names(&state, corp).await?;
    let name_of = |actor: &str| name_of(&names, actor);
    let tag_names: HashMap<String, String> = tags::live_tags(&state.db, corp.as_str())
        .await?
        .into_iter()
        .map(|t| (t.tag_id, t.name))
        .collect();
    let mut relation_views = Vec::new();
    for r in &relations {
        let history =
            customers::relation_history(&state.db, RelationKey::new(corp, &r.user_id, &ext))
                .await?
                .into_iter()
                .map(|h| views::RelationRow {
                    when: when(h.at_ms),
                    change: change_label(&h.change),
                    source: if h.source == "callback" {
                        "企业微信回调"
                    } else {
                        "对账"
                    }
                    .to_owned(),
                    detail: h.detail,
                })
                .collect();
        let (status, status_class) = status_of(r.status);
        relation_views.push(views::RelationView {
            staff: name_of(r.user_id.as_str()),
            status,
            status_class,
            remark: r.remark.clone(),
            channel: r.state.clone().unwrap_or_default(),
            added: r.added_at_ms.map(when).unwrap_or_default(),
            tags: r
                .tags()
                .iter()
                .map(|t| tag_names.get(t).cloned().unwrap_or_else(|| t.clone()))
                .collect(),
            history,
        });
    }
    let notes = followup::list_notes(&state.db, corp, &ext, None, 50)
        .await?
        .into_iter()
        .map(|n| views::NoteRow {
            when: when(n.created_at_ms),
            author: name_of(&n.author),
            body: n.body,
        })
        .collect();
    let reminders = followup::list_reminders(
        &state.db,
        corp.as_str(),
        &followup::ReminderFilter {
            external_user_id: Some(ext.to_string()),
            limit: 50,
            ..followup::ReminderFilter::default()
        },
    )
    .await?
    .into_iter()
    .map(|r| views::ReminderRow {
        title: r.title,
        assignee: name_of(&r.assignee),
        due: when(r.due_at_ms),
        state: match r.state.as_str() {
            "open" => "待办",
            "done" => "已完成",
            _ => "已取消",
        },
    })
    .collect();
    let may_read_archive = who.role.may(Action::ReadArchive);
    let messages = if may_read_archive {
        let reader = Reader {
            actor: who.actor(),
            role: who.role.as_str(),
            corp_id: corp.as_str(),
        };
        let filter = MessageFilter {
            external_userid: Some(ext.to_string()),
            limit: MESSAGES,
            ..MessageFilter::default()
        };
        let mut rows = read::messages(&state.db, &reader, &filter).await?;
        rows.reverse();
        rows.into_iter()
            .map(|m| views::MessageView {
                when: when(m.msg_time_ms),
                kind: if m.sender_kind == "staff" {
                    "staff"
                } else {
                    "customer"
                },
                sender: name_of(&m.sender),
                text: m.text.unwrap_or_else(|| format!("[{}]", m.msgtype)),
            })
            .collect()
    } else {
        Vec::new()
    };
    let page = views::CustomerPage {
        chrome: Chrome::new(&s.principal, &s.csrf_token, "/console/customers", None),
        id: ext.to_string(),
        name: profile
            .as_ref()
            .map(|p| p.name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| ext.to_string()),
        corp_name: profile.map(|p| p.corp_name).unwrap_or_default(),
        stage: followup::customer_stage(&state.db, corp, &ext)
            .await?
            .unwrap_or_default(),
        personal_tags: customers::record::customer_personal_tags(&state.db, corp, &ext)
            .await?
            .into_iter()
            .map(|t| t.name)
            .collect(),
        relations: relation_views,
        notes,
        reminders,
        may_read_archive,
        messages,
    };
    Ok(html(StatusCode::OK, render(&page)))
}
