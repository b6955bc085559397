//! Progress of long-running jobs (full sync now; transfers later): `GET /api/v1/jobs?kind=sync`
//! and `GET /api/v1/jobs/{id}`. Only counts and states, no customer data.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use crate::db::StoreError;
use crate::jobs;

/// Filters of the job list.
#[derive(Debug, Deserialize)]
pub struct JobQuery {
    kind: Option<String>,
    corp_id: Option<String>,
    limit: Option<i64>,
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({"code": code, "message": message})),
    )
        .into_response()
}

fn store_error(e: &StoreError) -> Response {
    match e {
        StoreError::NotFound => error(StatusCode::NOT_FOUND, "not_found", "任务不存在"),
        e => {
            tracing::warn!(error = %e, cause = ?std::error::Error::source(e), "job query failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                "数据库暂不可用，请稍后重试",
            )
        }
    }
}

/// The newest jobs of a kind.
pub async fn list(State(state): State<Arc<AppState>>, Query(q): Query<JobQuery>) -> Response {
    let kind = q.kind.as_deref().unwrap_or(crate::sync::JOB_KIND);
    let limit = q.limit.unwrap_or(20).clamp(1, 200);
    match jobs::list(&state.db, q.corp_id.as_deref(), kind, limit).await {
        Ok(list) => Json(serde_json::json!({ "jobs": list })).into_response(),
        Err(e) => store_error(&e),
    }
}

/// One job, with its progress.
pub async fn get(State(state): State<Arc<AppState>>, Path(id): Path<i64>) -> Response {
    match jobs::get(&state.db, id).await {
        Ok(job) => Json(job).into_response(),
        Err(e) => store_error(&e),
    }
}
