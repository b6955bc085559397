//! 标签 in the console: the corp tag library as WeCom has it, what is still on its way to WeCom
//! (pending `add_corp_tag`/`del_corp_tag` items) and what WeCom refused; admins create groups and
//! tags and delete them — through the outbox, the same functions as `/api/v1/tags`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::views::{self, Chrome};
use super::{Failure, Form, Signed, html, query_map, render, see_other};
use crate::auth::Action;
use crate::domain::customers::record::{self, Trigger};
use crate::domain::tags;
use crate::http::AppState;
use crate::pipeline::outbox::{self, Intent, NewTag, OutboxFilter};
use crate::platform::db::now_ms;

/// What an outbox item about the library says, for people.
fn describe(intent: &Intent) -> Option<String> {
    match intent {
        Intent::AddCorpTag {
            group_name, tags, ..
        } => Some(format!(
            "新建{}{}",
            group_name
                .as_deref()
                .map(|g| format!("标签组「{g}」："))
                .unwrap_or_default(),
            tags.iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join("、")
        )),
        Intent::DelCorpTag { tag_ids, group_ids } => Some(format!(
            "删除 {} 个标签、{} 个标签组",
            tag_ids.len(),
            group_ids.len()
        )),
        Intent::EditCorpTag { name, .. } => Some(format!(
            "修改标签{}",
            name.as_deref()
                .map(|n| format!("为「{n}」"))
                .unwrap_or_default()
        )),
        _ => None,
    }
}

pub(super) async fn page(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    uri: axum::http::Uri,
) -> Result<Response, Failure> {
    let s = signed.may(Action::ReadCustomers)?;
    let corp = s.principal.corp_id.as_str();
    let groups = tags::library(&state.db, corp)
        .await?
        .into_iter()
        .map(|g| views::TagGroupRow {
            id: g.group_id,
            name: g.name,
            tags: g
                .tags
                .into_iter()
                .map(|t| views::TagRow {
                    id: t.tag_id,
                    name: t.name,
                })
                .collect(),
        })
        .collect();
    let mut pending = Vec::new();
    let mut dead = Vec::new();
    for kind in ["add_corp_tag", "del_corp_tag", "edit_corp_tag"] {
        for state_name in ["pending", "dead"] {
            let items = outbox::list(
                &state.db,
                &OutboxFilter {
                    corp_id: Some(corp.to_owned()),
                    kind: Some(kind.to_owned()),
                    state: Some(state_name.to_owned()),
                    limit: 20,
                    ..OutboxFilter::default()
                },
            )
            .await?;
            for item in items {
                let Some(what) = serde_json::from_str::<Intent>(&item.payload)
                    .ok()
                    .as_ref()
                    .and_then(describe)
                else {
                    continue;
                };
                if state_name == "pending" {
                    pending.push(what);
                } else {
                    dead.push(format!("{what}（{}）", item.last_error.unwrap_or_default()));
                }
            }
        }
    }
    let q = query_map(&uri);
    let flash = if q.contains_key("rule") {
        Some("已保存自动打标签规则".to_owned())
    } else {
        q.get("done")
            .map(|_| "已提交给企业微信，稍后自动同步".to_owned())
    };
    let names: std::collections::HashMap<String, String> = tags::live_tags(&state.db, corp)
        .await?
        .into_iter()
        .map(|t| (t.tag_id, t.name))
        .collect();
    let rules = record::rules(&state.db, corp, None)
        .await?
        .into_iter()
        .map(|r| views::AutoTagRow {
            id: r.id,
            name: r.name,
            trigger: trigger_label(r.trigger),
            patterns: r.patterns.join("、"),
            tags: r
                .corp_tag_ids
                .iter()
                .map(|t| {
                    names
                        .get(t)
                        .cloned()
                        .unwrap_or_else(|| format!("{t}（已删除）"))
                })
                .collect::<Vec<_>>()
                .join("、"),
        })
        .collect();
    let page = views::Tags {
        may_manage_rules: s.principal.role.may(Action::ManageSettings),
        rules,
        chrome: Chrome::new(&s.principal, &s.csrf_token, "/console/tags", flash),
        may_manage: s.principal.role.may(Action::ManageTags),
        groups,
        pending,
        dead,
    };
    Ok(html(StatusCode::OK, render(&page)))
}

/// Tag names typed as one line, split on commas (either width) and 、, each checked.
fn names_of(text: &str) -> Result<Vec<NewTag>, Failure> {
    let names: Vec<NewTag> = text
        .split([',', '，', '、'])
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| {
            tags::check_name(n)
                .map_err(Failure::Invalid)
                .map(|name| NewTag { name, order: None })
        })
        .collect::<Result<_, _>>()?;
    if names.is_empty() {
        return Err(Failure::Invalid(
            "至少一个标签（企业微信不允许空标签组）".to_owned(),
        ));
    }
    if names.len() > 100 {
        return Err(Failure::Invalid("一次最多 100 个标签".to_owned()));
    }
    Ok(names)
}

pub(super) async fn create_group(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    form: Form,
) -> Result<Response, Failure> {
    let s = signed.may_write(Action::ManageTags, &form)?;
    let group = tags::check_name(form.get("group").unwrap_or("")).map_err(Failure::Invalid)?;
    let intent = Intent::AddCorpTag {
        group_id: None,
        group_name: Some(group),
        group_order: None,
        tags: names_of(form.get("tags").unwrap_or(""))?,
    };
    let who = &s.principal;
    tags::request_create(
        &state.db,
        who.corp_id.as_str(),
        &intent,
        &who.actor(),
        now_ms(),
    )
    .await?;
    Ok(see_other("/console/tags?done=1"))
}

pub(super) async fn add_tags(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Path(group_id): Path<String>,
    form: Form,
) -> Result<Response, Failure> {
    let s = signed.may_write(Action::ManageTags, &form)?;
    let who = &s.principal;
    if !tags::is_group(&state.db, who.corp_id.as_str(), &group_id).await? {
        return Err(Failure::Invalid(
            "标签组不存在（可能已在企业微信中删除）".to_owned(),
        ));
    }
    let intent = Intent::AddCorpTag {
        group_id: Some(group_id),
        group_name: None,
        group_order: None,
        tags: names_of(form.get("tags").unwrap_or(""))?,
    };
    tags::request_create(
        &state.db,
        who.corp_id.as_str(),
        &intent,
        &who.actor(),
        now_ms(),
    )
    .await?;
    Ok(see_other("/console/tags?done=1"))
}

/// `POST /console/tags/rename`: a tag or a group gets a new name, here at once and in WeCom
/// through the outbox (pending until WeCom has it).
pub(super) async fn rename(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    form: Form,
) -> Result<Response, Failure> {
    let s = signed.may_write(Action::ManageTags, &form)?;
    let who = &s.principal;
    let id = form.get("id").unwrap_or("").trim().to_owned();
    let name = tags::check_name(form.get("name").unwrap_or("")).map_err(Failure::Invalid)?;
    let corp = who.corp_id.as_str();
    let known = tags::is_group(&state.db, corp, &id).await?
        || tags::get_tag(&state.db, corp, &id)
            .await?
            .is_some_and(|t| t.deleted_at_ms.is_none());
    if id.is_empty() || !known {
        return Err(Failure::Invalid("标签不存在（可能已删除）".to_owned()));
    }
    match tags::edit(
        &state.db,
        corp,
        &id,
        Some(&name),
        None,
        &who.actor(),
        now_ms(),
    )
    .await
    {
        Ok(_) => Ok(see_other("/console/tags?done=1")),
        Err(crate::platform::db::StoreError::NotFound) => {
            Err(Failure::Invalid("标签不存在（可能已删除）".to_owned()))
        }
        Err(e) => Err(e.into()),
    }
}

pub(super) async fn delete_tag(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Path(tag_id): Path<String>,
    form: Form,
) -> Result<Response, Failure> {
    let s = signed.may_write(Action::ManageTags, &form)?;
    let who = &s.principal;
    if tags::get_tag(&state.db, who.corp_id.as_str(), &tag_id)
        .await?
        .is_none_or(|t| t.deleted_at_ms.is_some())
    {
        return Err(Failure::Invalid("标签不存在（可能已删除）".to_owned()));
    }
    record::delete_corp_tags(
        &state.db,
        who.corp_id.as_str(),
        &[tag_id],
        &[],
        &who.actor(),
        now_ms(),
    )
    .await?;
    Ok(see_other("/console/tags?done=1"))
}

pub(super) async fn delete_group(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Path(group_id): Path<String>,
    form: Form,
) -> Result<Response, Failure> {
    let s = signed.may_write(Action::ManageTags, &form)?;
    let who = &s.principal;
    if !tags::is_group(&state.db, who.corp_id.as_str(), &group_id).await? {
        return Err(Failure::Invalid("标签组不存在（可能已删除）".to_owned()));
    }
    record::delete_corp_tags(
        &state.db,
        who.corp_id.as_str(),
        &[],
        &[group_id],
        &who.actor(),
        now_ms(),
    )
    .await?;
    Ok(see_other("/console/tags?done=1"))
}

fn trigger_label(t: Trigger) -> &'static str {
    match t {
        Trigger::Channel => "渠道活码（state）",
        Trigger::GroupJoin => "加入客户群",
        Trigger::Keyword => "客户消息关键词",
    }
}

/// `POST /console/tags/rules`: an auto-tagging rule — a name, what starts it, what it matches
/// (one per line or comma-separated), the corp tags it sets (`tag`, repeated).
pub(super) async fn create_rule(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    form: Form,
) -> Result<Response, Failure> {
    let s = signed.may_write(Action::ManageSettings, &form)?;
    let who = &s.principal;
    let corp = who.corp_id.as_str();
    let name = tags::check_name(form.get("name").unwrap_or("")).map_err(Failure::Invalid)?;
    let trigger = match form.get("trigger").unwrap_or("") {
        "channel" => Trigger::Channel,
        "group_join" => Trigger::GroupJoin,
        "keyword" => Trigger::Keyword,
        _ => return Err(Failure::Invalid("请选择触发方式".to_owned())),
    };
    let rule = record::NewRule {
        name,
        trigger,
        patterns: form
            .get("patterns")
            .unwrap_or("")
            .split(['\n', ',', '，', '、'])
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect(),
        corp_tag_ids: form.all("tag").map(str::to_owned).collect(),
        personal_tag_ids: Vec::new(),
    };
    rule.check()
        .map_err(|(_, why)| Failure::Invalid(why.to_owned()))?;
    for id in &rule.corp_tag_ids {
        if tags::get_tag(&state.db, corp, id)
            .await?
            .is_none_or(|t| t.deleted_at_ms.is_some())
        {
            return Err(Failure::Invalid(format!("标签 {id} 不存在（可能已删除）")));
        }
    }
    record::create_rule(&state.db, corp, &rule, &who.actor(), now_ms()).await?;
    Ok(see_other("/console/tags?rule=1"))
}

/// `POST /console/tags/rules/{id}/delete`: the rule stops (tags it set stay).
pub(super) async fn delete_rule(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Path(id): Path<i64>,
    form: Form,
) -> Result<Response, Failure> {
    let s = signed.may_write(Action::ManageSettings, &form)?;
    let who = &s.principal;
    match record::delete_rule(&state.db, who.corp_id.as_str(), id, &who.actor(), now_ms()).await {
        Ok(()) => Ok(see_other("/console/tags?rule=1")),
        Err(record::RecordError::NotFound) => Err(Failure::NotFound(Box::new(s), "规则")),
        Err(record::RecordError::Store(e)) => Err(e.into()),
        Err(e) => Err(Failure::Invalid(e.to_string())),
    }
}
