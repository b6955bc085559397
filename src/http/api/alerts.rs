//! Compliance alerts: list with filters, one alert with its evidence, history and deliveries, and
//! the lifecycle steps (acknowledge, resolve, false positive, reopen). Compliance and admin only.

use std::sync::Arc;

use axum::extract::State;
use axum::http::Method;
use axum::routing::{MethodRouter, get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::schema::{array, int, nullable, object, one_of, string};
use super::{ApiFailure, ApiResult, Auth, Body, Endpoint, PathParams, QueryParams, invalid, ok};
use crate::auth::Action;
use crate::domain::alerts::{self, AlertFilter, Transition};
use crate::http::AppState;
use crate::platform::db::now_ms;

const STATES: [&str; 4] = ["open", "acknowledged", "resolved", "false_positive"];
const KINDS: [&str; 6] = [
    "staff_deleted_customer",
    "mass_deletion",
    "customer_deleted_staff",
    "relation_vanished",
    "content",
    "archive_stalled",
];
const SEVERITIES: [&str; 4] = ["low", "medium", "high", "critical"];
/// Longest comment on a lifecycle step, in chars.
const MAX_COMMENT_CHARS: usize = 2000;

fn alert_schema() -> Value {
    object(
        &[
            ("id", int("告警 id")),
            ("kind", one_of(&KINDS, "触发原因")),
            ("severity", one_of(&SEVERITIES, "严重程度")),
            (
                "category",
                nullable(string("内容规则类别（private_payment 等）")),
            ),
            ("rule_id", nullable(string("内容规则 id"))),
            ("staff_user_id", string("涉及的成员")),
            ("external_user_id", nullable(string("涉及的客户（第一个）"))),
            ("title", string("标题")),
            ("state", one_of(&STATES, "状态")),
            ("evidence_count", int("证据条数")),
            ("first_at_ms", int("最早证据时间")),
            ("last_at_ms", int("最近证据时间")),
            ("created_at_ms", int("告警时间")),
            ("updated_at_ms", int("最后变更")),
        ],
        &["id", "kind", "severity", "state", "title"],
    )
}

fn step(
    path: &'static str,
    summary: &'static str,
    handler: MethodRouter<Arc<AppState>>,
) -> Endpoint {
    Endpoint::new(Method::POST, path, summary, handler)
        .tag("alerts")
        .requires(Action::HandleAlerts)
        .request(object(&[("comment", string("说明，≤ 2000 字"))], &[]))
        .response(
            200,
            object(
                &[("id", int("告警 id")), ("state", one_of(&STATES, "新状态"))],
                &["id", "state"],
            ),
        )
}

/// This module's endpoints.
pub fn endpoints() -> Vec<Endpoint> {
    let evidence = object(
        &[
            (
                "source_ref",
                string("来源（inbox:ID、relation:…、archive:…）"),
            ),
            ("trigger_key", string("触发器")),
            ("external_user_id", nullable(string("客户"))),
            ("text", nullable(string("消息原文"))),
            ("spans", array(array(int("命中位置 [起, 止)，按字符计")))),
            ("detail", object(&[], &[])),
            ("at_ms", int("发生时间")),
        ],
        &["source_ref", "at_ms"],
    );
    let history = object(
        &[
            ("actor", string("谁")),
            (
                "action",
                string("created、escalated、acknowledge、resolve、false_positive、reopen"),
            ),
            ("from_state", nullable(string("原状态"))),
            ("to_state", nullable(string("新状态"))),
            ("comment", string("说明")),
            ("at_ms", int("时间")),
        ],
        &["actor", "action", "at_ms"],
    );
    let delivery = object(
        &[
            ("recipient", string("接收人")),
            ("reason", string("created 或 escalated")),
            ("outbox_id", nullable(int("发送条目"))),
            ("skipped", nullable(string("未发送的原因（如已离职）"))),
            ("state", nullable(string("发送状态 pending/done/dead"))),
            ("last_error", nullable(string("发送失败原因"))),
        ],
        &["recipient", "reason"],
    );
    vec![
        Endpoint::new(Method::GET, "/alerts", "合规告警（最新在前）", get(list))
            .tag("alerts")
            .requires(Action::ReadAlerts)
            .query("state", one_of(&STATES, "状态"), "按状态过滤")
            .query("kind", one_of(&KINDS, "触发原因"), "按触发原因过滤")
            .query("category", string("内容规则类别"), "按类别过滤")
            .query(
                "severity",
                one_of(&SEVERITIES, "严重程度"),
                "按严重程度过滤",
            )
            .query("staff_user_id", string("成员"), "按成员过滤")
            .query("since_ms", int("告警时间不早于"), "按时间过滤")
            .query("before_id", int("分页：比该 id 小"), "分页")
            .query("limit", int("1–500，默认 50"), "条数")
            .response(
                200,
                object(&[("alerts", array(alert_schema()))], &["alerts"]),
            ),
        Endpoint::new(
            Method::GET,
            "/alerts/{id}",
            "一个告警及其证据、处理记录和通知",
            get(get_one),
        )
        .tag("alerts")
        .requires(Action::ReadAlerts)
        .response(
            200,
            object(
                &[
                    ("alert", alert_schema()),
                    ("evidence", array(evidence)),
                    ("history", array(history)),
                    ("deliveries", array(delivery)),
                ],
                &["alert", "evidence", "history", "deliveries"],
            ),
        ),
        Endpoint::new(
            Method::POST,
            "/alerts/rescan",
            "用当前规则重新扫描已存消息（可续跑的后台任务；进度见 /jobs/{id}）",
            post(rescan),
        )
        .tag("alerts")
        .requires(Action::ManageSettings)
        .request(object(
            &[("days", int("扫描最近多少天的消息，1–365，默认 7"))],
            &[],
        ))
        .response(202, object(&[("job_id", int("任务 id"))], &["job_id"])),
        step(
            "/alerts/{id}/acknowledge",
            "确认：已开始处理（open → acknowledged）",
            post(acknowledge),
        ),
        step(
            "/alerts/{id}/resolve",
            "处理完毕（→ resolved）",
            post(resolve),
        ),
        step(
            "/alerts/{id}/false-positive",
            "误报（→ false_positive）",
            post(false_positive),
        ),
        step(
            "/alerts/{id}/reopen",
            "重新打开（resolved / false_positive → open）",
            post(reopen),
        ),
    ]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    state: Option<String>,
    kind: Option<String>,
    category: Option<String>,
    severity: Option<String>,
    staff_user_id: Option<String>,
    since_ms: Option<i64>,
    before_id: Option<i64>,
    limit: Option<i64>,
}

fn one_of_field(field: &str, value: &Option<String>, allowed: &[&str]) -> Result<(), ApiFailure> {
    match value {
        Some(v) if !allowed.contains(&v.as_str()) => {
            Err(invalid(field, format!("只能是 {}", allowed.join("、"))))
        }
        _ => Ok(()),
    }
}

async fn list(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult {
    one_of_field("state", &q.state, &STATES)?;
    one_of_field("kind", &q.kind, &KINDS)?;
    one_of_field("severity", &q.severity, &SEVERITIES)?;
    if let Some(limit) = q.limit
        && !(1..=500).contains(&limit)
    {
        return Err(invalid("limit", "1–500"));
    }
    let filter = AlertFilter {
        state: q.state,
        kind: q.kind,
        category: q.category,
        severity: q.severity,
        staff_user_id: q.staff_user_id,
        staff_in: None,
        since_ms: q.since_ms,
        before_id: q.before_id,
        limit: q.limit.unwrap_or(50),
    };
    let list = alerts::list(&state.db, who.corp_id.as_str(), &filter).await?;
    ok(json!({"alerts": list}))
}

async fn get_one(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    PathParams(id): PathParams<i64>,
) -> ApiResult {
    let Some(alert) = alerts::get(&state.db, who.corp_id.as_str(), id).await? else {
        return Err(ApiFailure::NotFound("告警"));
    };
    let (evidence, history, deliveries) = alerts::details(&state.db, id).await?;
    let archived = evidence
        .iter()
        .filter(|e| e.source_ref.starts_with("archive:"))
        .count();
    crate::domain::archive::read::evidence_shown(
        &state.db,
        &crate::domain::archive::read::Reader {
            actor: who.actor(),
            role: who.role.as_str(),
            corp_id: who.corp_id.as_str(),
        },
        id,
        i64::try_from(archived).unwrap_or(i64::MAX),
    )
    .await?;
    let evidence: Vec<Value> = evidence
        .into_iter()
        .map(|e| {
            json!({
                "source_ref": e.source_ref,
                "trigger_key": e.trigger_key,
                "external_user_id": e.external_user_id,
                "text": e.text,
                "spans": serde_json::from_str::<Value>(&e.spans).unwrap_or_else(|_| json!([])),
                "detail": serde_json::from_str::<Value>(&e.detail).unwrap_or_else(|_| json!({})),
                "at_ms": e.at_ms,
            })
        })
        .collect();
    ok(json!({"alert": alert, "evidence": evidence, "history": history, "deliveries": deliveries}))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RescanBody {
    days: Option<i64>,
}

async fn rescan(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    Body(body): Body<RescanBody>,
) -> ApiResult {
    let days = body.days.unwrap_or(7);
    if !(1..=365).contains(&days) {
        return Err(invalid("days", "1–365"));
    }
    let since = now_ms().saturating_sub(days.saturating_mul(86_400_000));
    let job_id = crate::app::rescan::start(&state.db, who.corp_id.as_str(), since).await?;
    crate::app::rescan::spawn(
        state.db.clone(),
        state.wecom.clone(),
        state.rules.clone(),
        job_id,
        format!("api:{}", crate::pipeline::worker::instance_owner()),
    );
    super::accepted(json!({"job_id": job_id}))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StepBody {
    #[serde(default)]
    comment: String,
}

async fn take(
    state: &AppState,
    who: &crate::auth::Principal,
    id: i64,
    step: Transition,
    body: StepBody,
) -> ApiResult {
    if body.comment.chars().count() > MAX_COMMENT_CHARS {
        return Err(invalid("comment", format!("最多 {MAX_COMMENT_CHARS} 字")));
    }
    match alerts::transition(
        &state.db,
        who.corp_id.as_str(),
        id,
        step,
        &who.actor(),
        body.comment.trim(),
        now_ms(),
    )
    .await
    {
        Ok(to) => ok(json!({"id": id, "state": to.as_str()})),
        Err(e) => Err(e.into()),
    }
}

async fn acknowledge(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    PathParams(id): PathParams<i64>,
    Body(body): Body<StepBody>,
) -> ApiResult {
    take(&state, &who, id, Transition::Acknowledge, body).await
}

async fn resolve(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    PathParams(id): PathParams<i64>,
    Body(body): Body<StepBody>,
) -> ApiResult {
    take(&state, &who, id, Transition::Resolve, body).await
}

async fn false_positive(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    PathParams(id): PathParams<i64>,
    Body(body): Body<StepBody>,
) -> ApiResult {
    take(&state, &who, id, Transition::FalsePositive, body).await
}

async fn reopen(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    PathParams(id): PathParams<i64>,
    Body(body): Body<StepBody>,
) -> ApiResult {
    take(&state, &who, id, Transition::Reopen, body).await
}
