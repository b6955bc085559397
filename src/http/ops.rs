//! Operator endpoints: liveness, readiness, Prometheus metrics.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::outbox::{self, OutboxStats};
use crate::worker::{self, Backlog};

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

/// Prometheus text format. The inbox gauges are read from this instance's database at scrape time
/// (not kept in the process-wide recorder), so they are never stale and every instance reports the
/// shared queue; the workers' outcome counters (`scrm_worker_events_total`) come from the recorder.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut text = state.metrics.render();
    let read = worker::backlog(&state.db, None, crate::db::now_ms());
    match tokio::time::timeout(Duration::from_secs(2), read).await {
        Ok(Ok(backlog)) => push_backlog(&mut text, &backlog),
        Ok(Err(e)) => tracing::warn!(error = %e, "metrics: inbox backlog unavailable"),
        Err(_) => tracing::warn!("metrics: inbox backlog timed out"),
    }
    let read = outbox::stats(&state.db, None, crate::db::now_ms());
    match tokio::time::timeout(Duration::from_secs(2), read).await {
        Ok(Ok(stats)) => push_outbox(&mut text, &stats),
        Ok(Err(e)) => tracing::warn!(error = %e, "metrics: outbox counts unavailable"),
        Err(_) => tracing::warn!("metrics: outbox counts timed out"),
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

fn push_outbox(text: &mut String, s: &OutboxStats) {
    let age = s.oldest_pending_age_ms / 1000;
    push_gauges(
        text,
        [
            (
                "scrm_outbox_pending",
                "Changes to WeCom written but not yet delivered.",
                s.pending.to_string(),
            ),
            (
                "scrm_outbox_dead",
                "Changes to WeCom that failed for good until retried (scrm outbox retry).",
                s.dead.to_string(),
            ),
            (
                "scrm_outbox_lag_seconds",
                "Age of the oldest undelivered change (0 when none).",
                age.to_string(),
            ),
        ],
    );
}

fn push_gauges<const N: usize>(text: &mut String, gauges: [(&str, &str, String); N]) {
    for (name, help, value) in gauges {
        text.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
        ));
    }
}

fn push_backlog(text: &mut String, b: &Backlog) {
    let gauges: [(&str, &str, String); 5] = [
        (
            "scrm_inbox_pending",
            "Stored callbacks not yet processed.",
            b.pending.to_string(),
        ),
        (
            "scrm_inbox_in_flight",
            "Pending callbacks a worker holds right now.",
            b.in_flight.to_string(),
        ),
        (
            "scrm_inbox_retrying",
            "Pending callbacks that failed at least once and wait for another attempt.",
            b.retrying.to_string(),
        ),
        (
            "scrm_inbox_dead",
            "Dead letters: callbacks that failed for good until replayed.",
            b.dead.to_string(),
        ),
        (
            "scrm_inbox_lag_seconds",
            "Age of the oldest pending callback (0 when none).",
            b.lag_secs.to_string(),
        ),
    ];
    push_gauges(text, gauges);
}
