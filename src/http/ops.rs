//! Operator endpoints: liveness, readiness, Prometheus metrics.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::Digest as _;

use super::AppState;
use crate::pipeline::outbox::{self, OutboxStats};
use crate::pipeline::worker::{self, Backlog};

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

/// Prometheus text format, from the process-wide recorder only: the database gauges (inbox and
/// outbox backlogs) are refreshed by [`refresh_gauges`] in the background, so a scrape — however
/// frequent, from whomever — never touches the database. With `[metrics] token` the scrape needs
/// `Authorization: Bearer <token>`.
pub async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(token) = &state.config.metrics.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let same: bool = subtle::ConstantTimeEq::ct_eq(
            sha2::Sha256::digest(given.as_bytes()).as_slice(),
            sha2::Sha256::digest(token.expose().as_bytes()).as_slice(),
        )
        .into();
        if !same {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "metrics need Authorization: Bearer <[metrics] token>",
            )
                .into_response();
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// Sets the database gauges every `every` until `stop` turns true. Every instance runs it (the
/// queries are indexed counts over the shared tables; no leader needed).
pub async fn refresh_gauges(
    db: crate::platform::db::Db,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    for (name, help) in GAUGES {
        metrics::describe_gauge!(name, help);
    }
    loop {
        let now = crate::platform::db::now_ms();
        match tokio::time::timeout(Duration::from_secs(10), worker::backlog(&db, None, now)).await {
            Ok(Ok(b)) => set_backlog(&b),
            Ok(Err(e)) => tracing::warn!(error = %e, "metrics: inbox backlog unavailable"),
            Err(_) => tracing::warn!("metrics: inbox backlog timed out"),
        }
        match tokio::time::timeout(Duration::from_secs(10), outbox::stats(&db, None, now)).await {
            Ok(Ok(s)) => set_outbox(&s),
            Ok(Err(e)) => tracing::warn!(error = %e, "metrics: outbox counts unavailable"),
            Err(_) => tracing::warn!("metrics: outbox counts timed out"),
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
    }
}

/// The database gauges and what they mean.
const GAUGES: [(&str, &str); 8] = [
    ("scrm_inbox_pending", "Stored callbacks not yet processed."),
    (
        "scrm_inbox_in_flight",
        "Pending callbacks a worker holds right now.",
    ),
    (
        "scrm_inbox_retrying",
        "Pending callbacks that failed at least once and wait for another attempt.",
    ),
    (
        "scrm_inbox_dead",
        "Dead letters: callbacks that failed for good until replayed.",
    ),
    (
        "scrm_inbox_lag_seconds",
        "Age of the oldest pending callback (0 when none).",
    ),
    (
        "scrm_outbox_pending",
        "Changes to WeCom written but not yet delivered.",
    ),
    (
        "scrm_outbox_dead",
        "Changes to WeCom that failed for good until retried (scrm outbox retry).",
    ),
    (
        "scrm_outbox_lag_seconds",
        "Age of the oldest undelivered change (0 when none).",
    ),
];

#[allow(
    clippy::cast_precision_loss,
    reason = "gauges are floats; counts stay far below 2^52"
)]
fn set_outbox(s: &OutboxStats) {
    metrics::gauge!("scrm_outbox_pending").set(s.pending as f64);
    metrics::gauge!("scrm_outbox_dead").set(s.dead as f64);
    metrics::gauge!("scrm_outbox_lag_seconds").set((s.oldest_pending_age_ms / 1000) as f64);
}

#[allow(
    clippy::cast_precision_loss,
    reason = "gauges are floats; counts stay far below 2^52"
)]
fn set_backlog(b: &Backlog) {
    metrics::gauge!("scrm_inbox_pending").set(b.pending as f64);
    metrics::gauge!("scrm_inbox_in_flight").set(b.in_flight as f64);
    metrics::gauge!("scrm_inbox_retrying").set(b.retrying as f64);
    metrics::gauge!("scrm_inbox_dead").set(b.dead as f64);
    metrics::gauge!("scrm_inbox_lag_seconds").set(b.lag_secs);
}
