//! Progress of long-running jobs (full sync now; transfers later): `GET /api/v1/jobs?kind=sync`
//! and `GET /api/v1/jobs/{id}`. Only counts and states, no customer data.

use std::sync::Arc;

use axum::extract::State;
use axum::http::Method;
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;

use super::schema::{array, int, nullable, object, string};
use super::{ApiResult, Auth, Endpoint, PathParams, QueryParams, ok};
use crate::auth::Action;
use crate::http::AppState;
use crate::pipeline::jobs;

/// `GET /api/v1/jobs` and `GET /api/v1/jobs/{id}`.
pub fn endpoints() -> Vec<Endpoint> {
    let job = object(
        &[
            ("id", int("任务 id")),
            ("corp_id", string("企业")),
            ("kind", string("sync 等")),
            ("state", string("queued | running | done | failed")),
            ("progress_done", int("已完成")),
            ("progress_total", int("总数")),
            ("error", nullable(string("失败原因"))),
        ],
        &["id", "kind", "state"],
    );
    vec![
        Endpoint::new(Method::GET, "/jobs", "长任务列表（同步等）", get(list))
            .tag("operations")
            .requires(Action::ReadOperations)
            .query("kind", string("任务类型，默认 sync"), "任务类型")
            .query("limit", int("最多条数（1–200）"), "最多条数")
            .response(200, object(&[("jobs", array(job.clone()))], &["jobs"])),
        Endpoint::new(
            Method::GET,
            "/jobs/{id}",
            "一个长任务及其进度",
            get(get_one),
        )
        .tag("operations")
        .requires(Action::ReadOperations)
        .response(200, job),
    ]
}

/// Filters of the job list.
#[derive(Debug, Deserialize)]
pub struct JobQuery {
    kind: Option<String>,
    limit: Option<i64>,
}

/// The newest jobs of a kind, of the caller's corp.
pub async fn list(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    QueryParams(q): QueryParams<JobQuery>,
) -> ApiResult<Response> {
    let kind = q.kind.as_deref().unwrap_or(crate::app::sync::JOB_KIND);
    let limit = q.limit.unwrap_or(20).clamp(1, 200);
    let list = jobs::list(&state.db, Some(who.corp_id.as_str()), kind, limit).await?;
    ok(serde_json::json!({ "jobs": list }))
}

/// One job, with its progress.
pub async fn get_one(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    PathParams(id): PathParams<i64>,
) -> ApiResult<Response> {
    let job = jobs::get(&state.db, id).await?;
    if who.corp_id != job.corp_id {
        return Err(super::ApiFailure::NotFound("任务"));
    }
    ok(job)
}
