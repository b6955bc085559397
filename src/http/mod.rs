//! HTTP surfaces. Handlers stay thin: extract, check, call one domain function, render.

pub mod api;
mod callback;
mod console;
pub(crate) mod ops;
pub mod server;
mod sidebar;
mod web;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

pub use callback::CallbackError;
pub use console::demo::{DemoAccess, DemoPerson};

use crate::pipeline::inbox::InboxWriter;
use crate::platform::config::{AppEndpoint, CallbackSettings, Config};
use crate::platform::db::Db;
use crate::platform::wecom::Wecom;

/// What every handler can reach.
#[derive(Debug)]
pub struct AppState {
    /// Callback configurations: corp id → app name → endpoint.
    pub endpoints: HashMap<String, HashMap<String, Arc<AppEndpoint>>>,
    /// Intake settings.
    pub settings: CallbackSettings,
    /// The group-commit writer of the inbox.
    pub writer: InboxWriter,
    /// The database (readiness, metrics).
    pub db: Db,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// The WeCom API (the tag library is fetched when an edit names a tag we do not know yet).
    pub wecom: Wecom,
    /// The configuration in force.
    pub config: Arc<Config>,
    /// Each corp's content rules (retroactive scans and the console's 规则 page use them).
    pub rules: crate::domain::rule_book::RuleBook,
    /// Shared buckets (per-key request rates, the tag-library refresh), across instances.
    pub coord: Arc<dyn wecom_sdk::Coordinator>,
    /// `scrm demo`'s one-click sign-ins (`None` for `scrm serve`: no `/demo` routes at all).
    pub demo: Option<Arc<DemoAccess>>,
}

impl AppState {
    fn endpoint(&self, corp_id: &str, app: &str) -> Result<&AppEndpoint, CallbackError> {
        self.endpoints
            .get(corp_id)
            .and_then(|apps| apps.get(app))
            .map(AsRef::as_ref)
            .ok_or(CallbackError::UnknownEndpoint)
    }
}

/// The application's routes, behind the in-flight caps per route class. `/metrics` is on it
/// unless `[metrics] listen` gives it a listener of its own ([`metrics_router`]).
pub fn router(state: Arc<AppState>) -> Router {
    let admission = server::Admission::new(&state.config.http);
    let mut routes = Router::new()
        .route(
            "/wecom/callback/{corp_id}/{app}",
            get(callback::verify_url).post(callback::receive),
        )
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz));
    if state.config.metrics.listen.is_none() {
        routes = routes.route("/metrics", get(ops::metrics));
    }
    if state.demo.is_some() {
        routes = routes.merge(console::demo::router());
    }
    routes
        .merge(api::router(&state.config.http))
        .merge(sidebar::router())
        .merge(console::router())
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            admission,
            server::admit,
        ))
}

/// `/metrics` alone, for `[metrics] listen`.
pub fn metrics_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(ops::metrics))
        .with_state(state)
}
