//! Operator endpoints: liveness, readiness, Prometheus metrics.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::inbox;

/// The process is up.
pub async fn healthz() -> &'static str {
    "ok"
}

/// The process can do its work: the database answers within two seconds.
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match tokio::time::timeout(Duration::from_secs(2), state.db.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready").into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: database error");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database timeout").into_response(),
    }
}

/// Prometheus text format. The inbox size is read from this instance's database at scrape time
/// (not kept in the process-wide recorder), so it is never stale.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut text = state.metrics.render();
    match tokio::time::timeout(Duration::from_secs(2), inbox::count_pending(&state.db)).await {
        Ok(Ok(n)) => {
            text.push_str("# HELP scrm_inbox_pending Stored callbacks not yet processed.\n");
            text.push_str("# TYPE scrm_inbox_pending gauge\n");
            text.push_str(&format!("scrm_inbox_pending {n}\n"));
        }
        _ => tracing::warn!("metrics: inbox size unavailable"),
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
