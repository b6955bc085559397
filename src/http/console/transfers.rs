//! 离职继承 in the console: departed members with customers left, the wizard (handover member,
//! takers, strategy, group chats, a handover note → a plan whose preview flags what WeCom will
//! refuse), and a job's page (start, cancel, retry the failed items, progress followed live).
//! The same domain functions as the API (`transfers::plan`, `start`, `cancel`, `retry_failed`),
//! so the engine, the outbox and the audit log see no difference. A manager sees and runs only
//! their team's: from a member of it, to members of it.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::views::{self, Chrome};
use super::{
    Failure, Form, Signed, html, name_of, named, query_map, render, see_other, staff_names, when,
};
use crate::app::transfers::departures;
use crate::auth::Action;
use crate::domain::staff;
use crate::domain::transfers::{
    self, ItemFilter, JobError, PlanError, PlanRequest, Progress, Strategy,
};
use crate::http::AppState;
use crate::platform::db::now_ms;

/// Items shown on a job's page.
const ITEMS_SHOWN: i64 = 200;

fn mode_label(mode: &str) -> &'static str {
    if mode == "resigned" {
        "离职继承"
    } else {
        "在职转接"
    }
}

fn job_state_label(state: &str) -> String {
    match state {
        "planned" => "待确认",
        "running" => "执行中",
        "done" => "已完成",
        "cancelled" => "已取消",
        other => other,
    }
    .to_owned()
}

fn item_state_label(state: &str) -> String {
    match state {
        "planned" => "待发送",
        "scheduled" => "排队中（明天继续）",
        "sent" => "已提交",
        "waiting" => "等待企业微信（24 小时内自动接替）",
        "done" => "已接替",
        "refused" => "客户拒绝",
        "failed" => "失败",
        other => other,
    }
    .to_owned()
}

fn flag_label(flag: &str) -> String {
    match flag {
        "taker_is_handover" => "接替成员就是原跟进成员".to_owned(),
        "transferred_twice_90d" => "客户 90 天内已转接 2 次，企业微信会拒绝".to_owned(),
        "moved_twice_90d" => "客户群 90 天内已转交 2 次".to_owned(),
        "taker_at_limit" => "接替成员今天的接替数已达上限，将在明天继续".to_owned(),
        other => other.to_owned(),
    }
}

pub(super) async fn list(
    State(state): State<Arc<AppState>>,
    signed: Signed,
) -> Result<Response, Failure> {
    let s = signed.may(Action::ReadTransfers)?;
    let corp = s.principal.corp_id.clone();
    let names = staff_names(&state, &corp).await?;
    let team = super::reach(&state, &s).await?;
    let in_team = |user: &str| team.as_ref().is_none_or(|t| t.iter().any(|u| u == user));
    let departures = departures::list_departures(&state.db, corp.as_str())
        .await?
        .into_iter()
        .filter(|d| in_team(&d.user_id))
        .map(|d| views::DepartureRow {
            departed: d.departed_at_ms.map(when).unwrap_or_default(),
            name: if d.name.trim().is_empty() {
                d.user_id.clone()
            } else {
                d.name
            },
            user_id: d.user_id,
            customers: d.customers,
            group_chats: d.group_chats,
            unassigned_listed: d.unassigned_listed,
            open_job: d.open_job,
        })
        .collect();
    let jobs = transfers::list_jobs(&state.db, &corp, None, 50)
        .await?
        .into_iter()
        .filter(|j| in_team(j.handover_user_id.as_str()))
        .map(|j| views::JobRow {
            id: j.id,
            handover: name_of(&names, j.handover_user_id.as_str()),
            mode: mode_label(&j.mode),
            takers: j
                .taker_list()
                .iter()
                .map(|t| name_of(&names, t))
                .collect::<Vec<_>>()
                .join("、"),
            state_label: job_state_label(&j.state),
            state: j.state,
            created: when(j.created_at_ms),
        })
        .collect();
    let page = views::Transfers {
        chrome: Chrome::new(&s.principal, &s.csrf_token, "/console/transfers", None),
        may_manage: s.principal.role.may(Action::ManageTransfers),
        departures,
        jobs,
    };
    Ok(html(StatusCode::OK, render(&page)))
}

pub(super) async fn new(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    uri: axum::http::Uri,
) -> Result<Response, Failure> {
    let s = signed.may(Action::ManageTransfers)?;
    let q = query_map(&uri);
    let chosen = q.get("handover").cloned().unwrap_or_default();
    let team = super::reach(&state, &s).await?;
    let members: Vec<_> = staff::list(&state.db, s.principal.corp_id.as_str())
        .await?
        .into_iter()
        .filter(|m| team.as_ref().is_none_or(|t| t.contains(&m.user_id)))
        .collect();
    let label = |m: &staff::StaffMember| {
        let name = if m.name.trim().is_empty() {
            m.user_id.clone()
        } else {
            m.name.clone()
        };
        let left = m.departed_at_ms.is_some() || m.status == 5;
        match (name == m.user_id, left) {
            (true, false) => name,
            (true, true) => format!("{name}（已离职）"),
            (false, false) => format!("{name}（{}）", m.user_id),
            (false, true) => format!("{name}（{}，已离职）", m.user_id),
        }
    };
    let handovers = members
        .iter()
        .map(|m| views::MemberOption {
            user_id: m.user_id.clone(),
            label: label(m),
            selected: m.user_id == chosen,
        })
        .collect();
    let takers = members
        .iter()
        .filter(|m| m.departed_at_ms.is_none() && m.status != 5 && m.user_id != chosen)
        .map(|m| views::MemberOption {
            user_id: m.user_id.clone(),
            label: label(m),
            selected: false,
        })
        .collect();
    let page = views::TransferNew {
        chrome: Chrome::new(&s.principal, &s.csrf_token, "/console/transfers", None),
        handovers,
        takers,
    };
    Ok(html(StatusCode::OK, render(&page)))
}

pub(super) async fn plan(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    form: Form,
) -> Result<Response, Failure> {
    let s = signed.may_write(Action::ManageTransfers, &form)?;
    let handover = form.get("handover").unwrap_or("").trim().to_owned();
    let takers: Vec<String> = form.all("taker").map(str::to_owned).take(100).collect();
    if handover.is_empty() || takers.is_empty() {
        return Err(Failure::Invalid(
            "请选择原跟进成员和至少一位接替成员".to_owned(),
        ));
    }
    if let Some(team) = super::reach(&state, &s).await?
        && let Some(outside) = std::iter::once(&handover)
            .chain(&takers)
            .find(|u| !team.contains(u))
    {
        let why = format!("{outside} 不在你负责的部门：只能在自己的团队内交接客户。");
        return Err(Failure::Forbidden(Box::new(s), why));
    }
    let note = form.get("handover_note").unwrap_or("").trim().to_owned();
    let request = PlanRequest {
        handover_user_id: handover,
        takeover_user_ids: takers,
        strategy: if form.get("strategy") == Some("workload") {
            Strategy::Workload
        } else {
            Strategy::Even
        },
        include_group_chats: Some(form.get("include_group_chats") == Some("true")),
        handover_note: (!note.is_empty()).then_some(note),
        ..PlanRequest::default()
    };
    match transfers::plan(
        &state.db,
        &s.principal.corp_id,
        &request,
        &s.principal.actor(),
        now_ms(),
    )
    .await
    {
        Ok(planned) => Ok(see_other(&format!("/console/transfers/{}", planned.job.id))),
        Err(PlanError::Invalid { reason, .. }) => Err(Failure::Invalid(reason)),
        Err(PlanError::Store(e)) => Err(e.into()),
    }
}

async fn job_of(
    state: &AppState,
    s: super::Session,
    id: &str,
) -> Result<(super::Session, transfers::TransferJob), Failure> {
    let Ok(id) = id.parse::<i64>() else {
        return Err(Failure::NotFound(Box::new(s), "交接任务"));
    };
    match transfers::get_job(&state.db, s.principal.corp_id.as_str(), id).await {
        Ok(job) => match super::reach(state, &s).await? {
            // A manager's: only a reassignment from a member of their team.
            Some(team) if !team.iter().any(|u| u == job.handover_user_id.as_str()) => Err(
                Failure::Forbidden(Box::new(s), "这项交接不属于你负责的部门。".to_owned()),
            ),
            _ => Ok((s, job)),
        },
        Err(crate::platform::db::StoreError::NotFound) => {
            Err(Failure::NotFound(Box::new(s), "交接任务"))
        }
        Err(e) => Err(e.into()),
    }
}

pub(super) async fn job(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Path(id): Path<String>,
    uri: axum::http::Uri,
) -> Result<Response, Failure> {
    let s = signed.may(Action::ReadTransfers)?;
    let (s, job) = job_of(&state, s, &id).await?;
    let names = staff_names(&state, &s.principal.corp_id).await?;
    let tally = views::Tally::of(
        &job.state,
        &Progress::of(&transfers::counts(&state.db, job.id).await?),
    );
    let items = transfers::items(
        &state.db,
        job.id,
        &ItemFilter {
            limit: Some(ITEMS_SHOWN),
            ..ItemFilter::default()
        },
    )
    .await?;
    let targets: Vec<&str> = items.iter().map(|i| i.target_id.as_str()).collect();
    let target_names =
        crate::domain::customers::display_names(&state.db, s.principal.corp_id.as_str(), &targets)
            .await?;
    let mut flagged = std::collections::BTreeMap::<String, usize>::new();
    for i in &items {
        for f in serde_json::from_str::<Vec<String>>(&i.flags).unwrap_or_default() {
            *flagged.entry(flag_label(&f)).or_default() += 1;
        }
    }
    let q = query_map(&uri);
    let flash = q.get("done").map(|what| match what.as_str() {
        "start" => "已开始执行，进度会自动更新".to_owned(),
        "cancel" => "已取消".to_owned(),
        n => format!("已重新安排 {n} 项"),
    });
    let page = views::TransferPage {
        chrome: Chrome::new(&s.principal, &s.csrf_token, "/console/transfers", flash),
        may_manage: s.principal.role.may(Action::ManageTransfers),
        id: job.id,
        handover: name_of(&names, job.handover_user_id.as_str()),
        mode: mode_label(&job.mode),
        takers: job
            .taker_list()
            .iter()
            .map(|t| name_of(&names, t))
            .collect::<Vec<_>>()
            .join("、"),
        created: when(job.created_at_ms),
        note: job.handover_note.clone(),
        notice: job.notice.clone(),
        state_label: job_state_label(&job.state),
        state: job.state.clone(),
        percent: if tally.total == 0 {
            0
        } else {
            tally.finished * 100 / tally.total
        },
        tally,
        flagged: flagged
            .into_iter()
            .map(|(f, n)| format!("{f}（{n} 项）"))
            .collect(),
        items: items
            .into_iter()
            .map(|i| views::ItemRow {
                kind: if i.kind == "customer" {
                    "客户"
                } else {
                    "客户群"
                },
                target: named(&target_names, &i.target_id),
                taker: name_of(&names, i.takeover_user_id.as_str()),
                state_label: item_state_label(&i.state),
                state: i.state,
                reason: i.reason.unwrap_or_default(),
            })
            .collect(),
    };
    Ok(html(StatusCode::OK, render(&page)))
}

pub(super) async fn progress(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Path(id): Path<String>,
) -> Result<Response, Failure> {
    let s = signed.may(Action::ReadTransfers)?;
    let (_, job) = job_of(&state, s, &id).await?;
    let progress = Progress::of(&transfers::counts(&state.db, job.id).await?);
    Ok((
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        axum::Json(views::Tally::of(&job.state, &progress)),
    )
        .into_response())
}

fn job_failure(s: super::Session, e: JobError) -> Failure {
    match e {
        JobError::Invalid { reason, .. } => Failure::Invalid(reason),
        JobError::Conflict(why) => Failure::Forbidden(Box::new(s), why),
        JobError::Store(e) => e.into(),
    }
}

/// `start`, `cancel` or `retry` on job `id`.
pub(super) async fn act(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Path((id, what)): Path<(String, String)>,
    form: Form,
) -> Result<Response, Failure> {
    let s = signed.may_write(Action::ManageTransfers, &form)?;
    let (s, job) = job_of(&state, s, &id).await?;
    let corp = s.principal.corp_id.clone();
    let actor = s.principal.actor();
    let now = now_ms();
    let done = match what.as_str() {
        "start" => transfers::start(&state.db, corp.as_str(), job.id, &actor, now)
            .await
            .map(|_| "start".to_owned()),
        "cancel" => transfers::cancel(&state.db, corp.as_str(), job.id, &actor, now)
            .await
            .map(|()| "cancel".to_owned()),
        "retry" => transfers::retry_failed(&state.db, &corp, job.id, None, &actor, now)
            .await
            .map(|n| n.to_string()),
        _ => return Err(Failure::NotFound(Box::new(s), "操作")),
    };
    match done {
        Ok(done) => {
            transfers::wake();
            Ok(see_other(&format!(
                "/console/transfers/{}?done={done}",
                job.id
            )))
        }
        Err(e) => Err(job_failure(s, e)),
    }
}
