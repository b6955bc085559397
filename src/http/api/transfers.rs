//! Reassignment (离职继承 / 在职继承): departed members with customers left to reassign, planning a
//! job (the preview is its items), running it, following every item to a final state, and
//! re-planning the failed ones. Admins plan and run; admins and compliance read.

use std::sync::Arc;

use axum::extract::State;
use axum::http::Method;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::schema::{array, boolean, int, nullable, object, one_of, string};
use super::{ApiFailure, ApiResult, Auth, Body, Endpoint, PathParams, QueryParams, invalid, ok};
use crate::app::transfers::departures;
use crate::auth::{self, Action};
use crate::domain::transfers::{self, ITEM_STATES, ItemFilter, PlanRequest, Progress};
use crate::http::AppState;
use crate::platform::db::now_ms;

const KINDS: [&str; 2] = ["customer", "group_chat"];
const JOB_STATES: [&str; 4] = ["planned", "running", "done", "cancelled"];
/// Longest list of customers a plan may name (a member rarely has more; WeCom's own limit per
/// member is 50,000 with the largest packages).
const MAX_PLAN_CUSTOMERS: usize = 50_000;
/// Most routing rules per plan.
const MAX_RULES: usize = 100;

fn job_schema() -> Value {
    object(
        &[
            ("id", int("任务 id")),
            (
                "mode",
                one_of(&["resigned", "on_job"], "离职继承 / 在职继承"),
            ),
            ("handover_user_id", string("原跟进成员")),
            ("takers", string("接替成员（JSON 数组）")),
            ("strategy", one_of(&["one", "even", "workload"], "分配方式")),
            ("handover_note", string("交接备注")),
            ("success_msg", nullable(string("在职继承时发给客户的话"))),
            ("state", one_of(&JOB_STATES, "任务状态")),
            ("notice", string("执行中的变化（如改用在职继承）")),
            ("created_by", string("计划人")),
            ("created_at_ms", int("计划时间")),
            ("started_by", nullable(string("执行人"))),
            ("started_at_ms", nullable(int("执行时间"))),
            ("finished_at_ms", nullable(int("全部条目结束的时间"))),
        ],
        &["id", "mode", "handover_user_id", "state"],
    )
}

fn progress_schema() -> Value {
    object(
        &[
            ("customers", object(&[], &[])),
            ("group_chats", object(&[], &[])),
        ],
        &["customers", "group_chats"],
    )
}

fn item_schema() -> Value {
    object(
        &[
            ("id", int("条目 id")),
            ("job_id", int("任务 id")),
            ("kind", one_of(&KINDS, "客户或客户群")),
            ("target_id", string("external_userid 或 chat_id")),
            ("handover_user_id", string("原跟进成员")),
            ("takeover_user_id", string("接替成员")),
            ("mode", one_of(&["resigned", "on_job"], "方式")),
            ("state", one_of(&ITEM_STATES, "状态")),
            ("flags", string("预判企业微信会拒绝的原因（JSON 数组）")),
            ("errcode", nullable(int("企业微信错误码"))),
            ("reason", nullable(string("失败或拒绝的原因"))),
            ("outbox_id", nullable(int("承载它的 outbox 调用"))),
            ("not_before_ms", int("scheduled：不早于此时")),
            ("sent_at_ms", nullable(int("发出时间"))),
            (
                "takeover_at_ms",
                nullable(int("等待中：自动接替时间；完成：接替时间")),
            ),
            ("updated_at_ms", int("最后变更")),
        ],
        &["id", "kind", "target_id", "takeover_user_id", "state"],
    )
}

/// This module's endpoints.
pub fn endpoints() -> Vec<Endpoint> {
    let departure = object(
        &[
            ("user_id", string("离职成员")),
            ("name", string("姓名")),
            ("departed_at_ms", nullable(int("离职时间"))),
            ("customers", int("未分配的客户数")),
            ("group_chats", int("未分配的客户群数")),
            ("unassigned_listed", int("企业微信待分配列表中的客户数")),
            ("open_job", nullable(int("进行中或待执行的任务"))),
        ],
        &["user_id", "customers", "group_chats"],
    );
    let rule = object(
        &[
            ("tag_id", string("带此企业标签的客户")),
            ("stage", string("处于此阶段的客户")),
            ("takeover_user_id", string("交给谁（须是接替成员之一）")),
        ],
        &["takeover_user_id"],
    );
    let with_progress = object(
        &[("job", job_schema()), ("progress", progress_schema())],
        &["job", "progress"],
    );
    vec![
        Endpoint::new(
            Method::GET,
            "/transfers/departures",
            "离职成员：尚未分配的客户与客户群",
            get(list_departures),
        )
        .tag("transfers")
        .requires(Action::ReadTransfers)
        .response(
            200,
            object(&[("departures", array(departure))], &["departures"]),
        ),
        Endpoint::new(
            Method::POST,
            "/transfers/departures/refresh",
            "重新读取企业微信的待分配离职成员客户（get_unassigned_list）",
            post(refresh_departures),
        )
        .tag("transfers")
        .requires(Action::ManageTransfers)
        .response(
            200,
            object(&[("listed", int("企业微信列出的客户数"))], &["listed"]),
        ),
        Endpoint::new(
            Method::POST,
            "/transfers",
            "计划一次转交（不发送；预览见 /transfers/{id}/items）",
            post(plan),
        )
        .tag("transfers")
        .requires(Action::ManageTransfers)
        .request(object(
            &[
                ("handover_user_id", string("原跟进成员")),
                ("takeover_user_ids", array(string("接替成员（1–100 位）"))),
                (
                    "strategy",
                    one_of(&["even", "workload"], "多位接替成员时：平均 / 按当前客户数"),
                ),
                ("rules", array(rule)),
                (
                    "mode",
                    one_of(
                        &["resigned", "on_job"],
                        "默认：成员已离职则离职继承，否则在职继承",
                    ),
                ),
                ("customers", array(string("只转交这些客户（默认全部）"))),
                ("include_group_chats", boolean("同时转交其客户群（默认是）")),
                ("handover_note", string("给接替成员的交接备注（≤ 1000 字）")),
                (
                    "transfer_success_msg",
                    string("在职继承时企业微信发给客户的话（≤ 200 字）"),
                ),
            ],
            &["handover_user_id", "takeover_user_ids"],
        ))
        .response(
            201,
            object(
                &[
                    ("job", job_schema()),
                    ("customers", int("客户数")),
                    ("group_chats", int("客户群数")),
                    ("per_taker", object(&[], &[])),
                    ("flagged", object(&[], &[])),
                    (
                        "already_in_transfer",
                        int("已在其他任务中转交的条目（未计入）"),
                    ),
                    ("superseded_jobs", array(int("被取代的未执行计划"))),
                ],
                &["job", "customers", "group_chats"],
            ),
        ),
        Endpoint::new(Method::GET, "/transfers", "转交任务（最新在前）", get(list))
            .tag("transfers")
            .requires(Action::ReadTransfers)
            .query("handover_user_id", string("原跟进成员"), "按成员过滤")
            .query("limit", int("1–500，默认 50"), "条数")
            .response(
                200,
                object(&[("jobs", array(with_progress.clone()))], &["jobs"]),
            ),
        Endpoint::new(
            Method::GET,
            "/transfers/{id}",
            "一个任务：进度、各接替成员的状态、审计记录",
            get(get_one),
        )
        .tag("transfers")
        .requires(Action::ReadTransfers)
        .response(
            200,
            object(
                &[
                    ("job", job_schema()),
                    ("progress", progress_schema()),
                    ("per_taker", array(object(&[], &[]))),
                    ("audit", array(object(&[], &[]))),
                ],
                &["job", "progress", "per_taker", "audit"],
            ),
        ),
        Endpoint::new(
            Method::GET,
            "/transfers/{id}/items",
            "任务的每个客户与客户群：接替成员、状态、原因（计划中的任务即预览）",
            get(items),
        )
        .tag("transfers")
        .requires(Action::ReadTransfers)
        .query("state", one_of(&ITEM_STATES, "状态"), "按状态过滤")
        .query("kind", one_of(&KINDS, "客户或客户群"), "按类别过滤")
        .query("takeover_user_id", string("接替成员"), "按接替成员过滤")
        .query("after_id", int("分页：比该 id 大"), "分页")
        .query("limit", int("1–5000，默认 500"), "条数")
        .response(200, object(&[("items", array(item_schema()))], &["items"])),
        Endpoint::new(
            Method::POST,
            "/transfers/{id}/run",
            "执行计划（重复执行不会重复转交）",
            post(run),
        )
        .tag("transfers")
        .requires(Action::ManageTransfers)
        .response(200, with_progress.clone()),
        Endpoint::new(
            Method::POST,
            "/transfers/{id}/retry",
            "只重新计划失败的条目（可换一位接替成员）",
            post(retry),
        )
        .tag("transfers")
        .requires(Action::ManageTransfers)
        .request(object(
            &[(
                "takeover_user_id",
                string("改由此成员接替（默认原接替成员）"),
            )],
            &[],
        ))
        .response(
            200,
            object(
                &[
                    ("replanned", int("重新计划的条目数")),
                    ("job", job_schema()),
                    ("progress", progress_schema()),
                ],
                &["replanned", "job"],
            ),
        ),
        Endpoint::new(
            Method::POST,
            "/transfers/{id}/cancel",
            "取消尚未执行的计划",
            post(cancel),
        )
        .tag("transfers")
        .requires(Action::ManageTransfers)
        .response(200, with_progress),
    ]
}

async fn list_departures(State(state): State<Arc<AppState>>, Auth(who): Auth) -> ApiResult {
    let list = departures::list_departures(&state.db, who.corp_id.as_str()).await?;
    ok(json!({ "departures": list }))
}

async fn refresh_departures(State(state): State<Arc<AppState>>, Auth(who): Auth) -> ApiResult {
    let listed =
        departures::refresh_unassigned(&state.db, &state.wecom, &who.corp_id, now_ms()).await?;
    ok(json!({ "listed": listed }))
}

async fn plan(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    Body(req): Body<PlanRequest>,
) -> ApiResult {
    if req
        .customers
        .as_ref()
        .is_some_and(|c| c.len() > MAX_PLAN_CUSTOMERS)
    {
        return Err(invalid(
            "customers",
            format!("最多 {MAX_PLAN_CUSTOMERS} 位"),
        ));
    }
    if req.rules.len() > MAX_RULES {
        return Err(invalid("rules", format!("最多 {MAX_RULES} 条")));
    }
    let planned = transfers::plan(&state.db, &who.corp_id, &req, &who.actor(), now_ms()).await?;
    super::created(planned)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    handover_user_id: Option<String>,
    limit: Option<i64>,
}

async fn list(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult {
    if let Some(limit) = q.limit
        && !(1..=500).contains(&limit)
    {
        return Err(invalid("limit", "1–500"));
    }
    let jobs = transfers::list_jobs(
        &state.db,
        &who.corp_id,
        q.handover_user_id.as_deref(),
        q.limit.unwrap_or(50),
    )
    .await?;
    let mut out = Vec::with_capacity(jobs.len());
    for job in jobs {
        let progress = Progress::of(&transfers::counts(&state.db, job.id).await?);
        out.push(json!({"job": job, "progress": progress}));
    }
    ok(json!({ "jobs": out }))
}

async fn with_progress(state: &AppState, corp_id: &str, id: i64) -> ApiResult<Value> {
    let job = transfers::get_job(&state.db, corp_id, id)
        .await
        .map_err(not_found)?;
    let progress = Progress::of(&transfers::counts(&state.db, id).await?);
    Ok(json!({"job": job, "progress": progress}))
}

fn not_found(e: crate::platform::db::StoreError) -> ApiFailure {
    match e {
        crate::platform::db::StoreError::NotFound => ApiFailure::NotFound("转交任务"),
        e => e.into(),
    }
}

async fn get_one(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    PathParams(id): PathParams<i64>,
) -> ApiResult {
    let job = transfers::get_job(&state.db, who.corp_id.as_str(), id)
        .await
        .map_err(not_found)?;
    let counts = transfers::counts(&state.db, id).await?;
    let audit = auth::audit_entries(
        &state.db,
        who.corp_id.as_str(),
        &format!("transfer_job:{id}"),
    )
    .await?
    .into_iter()
    .map(|e| {
        json!({
            "actor": e.actor, "key_id": e.key_id, "action": e.action, "at_ms": e.at_ms,
            "detail": serde_json::from_str::<Value>(&e.detail).unwrap_or(Value::Null),
        })
    })
    .collect::<Vec<_>>();
    ok(json!({
        "job": job,
        "progress": Progress::of(&counts),
        "per_taker": counts,
        "audit": audit,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ItemsQuery {
    state: Option<String>,
    kind: Option<String>,
    takeover_user_id: Option<String>,
    after_id: Option<i64>,
    limit: Option<i64>,
}

async fn items(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    PathParams(id): PathParams<i64>,
    QueryParams(q): QueryParams<ItemsQuery>,
) -> ApiResult {
    if let Some(s) = &q.state
        && !ITEM_STATES.contains(&s.as_str())
    {
        return Err(invalid(
            "state",
            format!("只能是 {}", ITEM_STATES.join("、")),
        ));
    }
    if let Some(k) = &q.kind
        && !KINDS.contains(&k.as_str())
    {
        return Err(invalid("kind", "只能是 customer、group_chat"));
    }
    if let Some(limit) = q.limit
        && !(1..=5000).contains(&limit)
    {
        return Err(invalid("limit", "1–5000"));
    }
    transfers::get_job(&state.db, who.corp_id.as_str(), id)
        .await
        .map_err(not_found)?;
    let filter = ItemFilter {
        state: q.state,
        kind: q.kind,
        takeover_user_id: q.takeover_user_id,
        after_id: q.after_id,
        limit: q.limit,
    };
    let items = transfers::items(&state.db, id, &filter).await?;
    ok(json!({ "items": items }))
}

async fn run(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    PathParams(id): PathParams<i64>,
) -> ApiResult {
    transfers::get_job(&state.db, who.corp_id.as_str(), id)
        .await
        .map_err(not_found)?;
    transfers::start(&state.db, who.corp_id.as_str(), id, &who.actor(), now_ms()).await?;
    ok(with_progress(&state, who.corp_id.as_str(), id).await?)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RetryBody {
    takeover_user_id: Option<String>,
}

async fn retry(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    PathParams(id): PathParams<i64>,
    Body(body): Body<RetryBody>,
) -> ApiResult {
    transfers::get_job(&state.db, who.corp_id.as_str(), id)
        .await
        .map_err(not_found)?;
    let taker = body
        .takeover_user_id
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let n =
        transfers::retry_failed(&state.db, &who.corp_id, id, taker, &who.actor(), now_ms()).await?;
    let mut answer = with_progress(&state, who.corp_id.as_str(), id).await?;
    if let Some(map) = answer.as_object_mut() {
        map.insert("replanned".to_owned(), json!(n));
    }
    ok(answer)
}

async fn cancel(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    PathParams(id): PathParams<i64>,
) -> ApiResult {
    transfers::get_job(&state.db, who.corp_id.as_str(), id)
        .await
        .map_err(not_found)?;
    transfers::cancel(&state.db, who.corp_id.as_str(), id, &who.actor(), now_ms()).await?;
    ok(with_progress(&state, who.corp_id.as_str(), id).await?)
}
