//! The JSON API under `/api/v1`, its OpenAPI document at `/api/openapi.json` and the page for
//! people at `/api/docs` ([`docs`]).
//!
//! Every endpoint is declared once as an [`Endpoint`] (method, path, summary, who may call it,
//! request and response schemas, the handler): the router, the OpenAPI document and the docs page
//! are all built from that one list, so neither document can miss an endpoint.
//!
//! Every handler starts with the [`Auth`] extractor (401 without valid credentials) and asks
//! [`crate::auth`] before it reads or changes anything (403 outside its role or scope).
//! Malformed bodies, paths and queries answer 400/422 with `{"code","message","field","reason"}`.

mod alerts;
mod archive;
mod customers;
mod docs;
mod errors;
mod followup;
mod jobs;
mod outbox;
mod quick_replies;
pub(crate) mod schema;
mod tags;
mod transfers;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::AppState;
use crate::auth::{self, Action, Principal};
use crate::platform::config::HttpSettings;
use crate::platform::db::now_ms;

/// Why a request failed, as the client sees it.
#[derive(Debug)]
pub enum ApiFailure {
    /// 401.
    Unauthenticated,
    /// 403.
    Forbidden(String),
    /// 404: what was not found.
    NotFound(&'static str),
    /// 422 (or 400 for unparsable input): which field, and why.
    Invalid {
        /// The field (`add[0]`, `due_at_ms`, `body`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// 409.
    Conflict(String),
    /// 503: the database or WeCom cannot answer now.
    Unavailable(String),
    /// 408: the body did not arrive in time.
    Timeout,
    /// 429: this API key made too many requests; try again after this long.
    RateLimited(std::time::Duration),
    /// 503 with `Retry-After`: a bounded resource (concurrent downloads) is in use; retry soon.
    Busy(String),
}

/// A 422 for `field`.
pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ApiFailure {
    ApiFailure::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            Self::Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                json!({"code": "unauthenticated", "message": "需要有效的凭证：Authorization: Bearer <API 密钥>"}),
            ),
            Self::Forbidden(reason) => (
                StatusCode::FORBIDDEN,
                json!({"code": "forbidden", "message": reason}),
            ),
            Self::NotFound(what) => (
                StatusCode::NOT_FOUND,
                json!({"code": "not_found", "message": format!("{what}不存在 / {what} not found")}),
            ),
            Self::Invalid { field, reason } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"code": "invalid", "message": format!("{field}: {reason}"), "field": field, "reason": reason}),
            ),
            Self::Conflict(reason) => (
                StatusCode::CONFLICT,
                json!({"code": "conflict", "message": reason}),
            ),
            Self::Unavailable(reason) => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"code": "unavailable", "message": format!("暂不可用，请稍后重试 / {reason}")}),
            ),
            Self::Timeout => (
                StatusCode::REQUEST_TIMEOUT,
                json!({"code": "timeout", "message": "请求体接收超时 / the body did not arrive in time"}),
            ),
            Self::Busy(reason) => {
                let mut response = (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({"code": "unavailable", "message": format!("繁忙，请稍后重试 / {reason}")})),
                )
                    .into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
                return response;
            }
            Self::RateLimited(wait) => {
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                let mut response = (
                    StatusCode::TOO_MANY_REQUESTS,
                    Json(json!({"code": "rate_limited", "message": format!("请求过于频繁，请 {secs} 秒后重试 / too many requests")})),
                )
                    .into_response();
                if let Ok(value) = header::HeaderValue::from_str(&secs.max(1).to_string()) {
                    response.headers_mut().insert(header::RETRY_AFTER, value);
                }
                return response;
            }
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// What handlers return.
pub type ApiResult<T = Response> = Result<T, ApiFailure>;

/// The authenticated caller. Rejects with 401 when the `Authorization: Bearer` key is missing,
/// malformed, unknown or revoked.
#[derive(Debug, Clone)]
pub struct Auth(pub Principal);

/// The action the matched endpoint requires ([`Endpoint::requires`]), carried in the request's
/// extensions to the [`Auth`] extractor, which refuses a principal whose role does not allow it.
#[derive(Debug, Clone, Copy)]
struct Required(Action);

impl FromRequestParts<Arc<AppState>> for Auth {
    type Rejection = ApiFailure;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let key = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or(ApiFailure::Unauthenticated)?;
        match auth::authenticate(&state.db, key, now_ms()).await? {
            Some(principal) => {
                auth::note_request_key(principal.key_id);
                if let Some(key_id) = principal.key_id {
                    per_key_rate(state, key_id).await?;
                }
                if let Some(Required(action)) = parts.extensions.get::<Required>() {
                    principal.require(*action)?;
                }
                Ok(Self(principal))
            }
            None => Err(ApiFailure::Unauthenticated),
        }
    }
}

/// Counts a request of `key_id` against `[http] api_key_requests_per_minute`, in 10-second
/// windows shared by every instance. A coordinator that cannot answer lets the request through
/// (the in-flight caps still hold).
async fn per_key_rate(state: &AppState, key_id: i64) -> Result<(), ApiFailure> {
    const WINDOW: std::time::Duration = std::time::Duration::from_secs(10);
    let limit = state.config.http.api_key_requests_per_minute.div_ceil(6);
    match state
        .coord
        .acquire(&format!("scrm:apikey:{key_id}"), limit, WINDOW)
        .await
    {
        Ok(None) => Ok(()),
        Ok(Some(wait)) => {
            metrics::counter!("scrm_api_rate_limited_total").increment(1);
            Err(ApiFailure::RateLimited(wait))
        }
        Err(e) => {
            tracing::warn!(error = %e, "API key rate limit unavailable; letting the request through");
            Ok(())
        }
    }
}

/// A JSON body whose errors name the field (`add[0]: invalid type: integer, expected a string`).
#[derive(Debug)]
pub struct Body<T>(pub T);

/// Largest JSON body the API reads (the biggest real request, a plan naming 50,000 customers,
/// is about 2 MB).
pub const MAX_BODY_BYTES: usize = 4 << 20;

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for Body<T> {
    type Rejection = ApiFailure;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let deadline = std::time::Duration::from_millis(state.config.http.body_timeout_ms);
        let bytes = match super::server::body_deadline(req.into_body(), MAX_BODY_BYTES, deadline)
            .await
        {
            Some(Ok(bytes)) => bytes,
            Some(Err(_)) => {
                return Err(invalid(
                    "body",
                    format!("请求体无法读取或超过 {MAX_BODY_BYTES} 字节 / unreadable or too large"),
                ));
            }
            None => return Err(ApiFailure::Timeout),
        };
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(de).map(Self).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." { "body".to_owned() } else { path };
            invalid(field, e.inner().to_string())
        })
    }
}

/// Path parameters, with a JSON error naming the parameter.
#[derive(Debug)]
pub struct PathParams<T>(pub T);

impl<T, S> FromRequestParts<S> for PathParams<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiFailure;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|e| invalid("path", e.body_text()))
    }
}

/// Query parameters, with a JSON error naming the parameter.
#[derive(Debug)]
pub struct QueryParams<T>(pub T);

impl<T, S> FromRequestParts<S> for QueryParams<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiFailure;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e| invalid("query", e.body_text()))
    }
}

/// 200 with a JSON body.
pub fn ok(body: impl serde::Serialize) -> ApiResult {
    Ok(Json(body).into_response())
}

/// 202: accepted, WeCom will be told through the outbox (`outbox_id`).
pub fn accepted(body: impl serde::Serialize) -> ApiResult {
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// 201 with the created record.
pub fn created(body: impl serde::Serialize) -> ApiResult {
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// One documented endpoint.
pub struct Endpoint {
    method: Method,
    path: &'static str,
    summary: &'static str,
    tag: &'static str,
    action: Option<Action>,
    scope: &'static str,
    query: Vec<(&'static str, Value, &'static str)>,
    request: Option<Value>,
    status: u16,
    response: Value,
    route: MethodRouter<Arc<AppState>>,
}

impl Endpoint {
    /// An endpoint: `method` `path` (axum syntax, `{id}`), answered by `route`.
    pub fn new(
        method: Method,
        path: &'static str,
        summary: &'static str,
        route: MethodRouter<Arc<AppState>>,
    ) -> Self {
        Self {
            method,
            path,
            summary,
            tag: "",
            action: None,
            scope: "",
            query: Vec::new(),
            request: None,
            status: 200,
            response: json!({"type": "object"}),
            route,
        }
    }

    /// Its group in the document.
    pub fn tag(mut self, tag: &'static str) -> Self {
        self.tag = tag;
        self
    }

    /// What a caller's role must allow: the router refuses anyone else (403) before the handler
    /// reads the request, and the document's "who" is generated from the same table
    /// ([`auth::Role::may`]).
    pub fn requires(mut self, action: Action) -> Self {
        self.action = Some(action);
        self
    }

    /// The data scope on top of the role, for the document (`sales: 自己跟进的客户`); the handler
    /// checks it.
    pub fn scope(mut self, scope: &'static str) -> Self {
        self.scope = scope;
        self
    }

    /// The action it requires.
    pub fn action(&self) -> Option<Action> {
        self.action
    }

    /// Who may call it, as the document says.
    pub fn who(&self) -> String {
        let roles = self.action.map(auth::Role::who_may).unwrap_or_default();
        match (roles.is_empty(), self.scope.is_empty()) {
            (_, true) => roles,
            (true, false) => self.scope.to_owned(),
            (false, false) => format!("{roles}；{}", self.scope),
        }
    }

    /// A query parameter.
    pub fn query(mut self, name: &'static str, schema: Value, description: &'static str) -> Self {
        self.query.push((name, schema, description));
        self
    }

    /// The JSON request body's schema.
    pub fn request(mut self, schema: Value) -> Self {
        self.request = Some(schema);
        self
    }

    /// The success status and body schema.
    pub fn response(mut self, status: u16, schema: Value) -> Self {
        self.status = status;
        self.response = schema;
        self
    }

    /// `(method, path)` as the document lists it.
    pub fn key(&self) -> (String, &'static str) {
        (self.method.as_str().to_lowercase(), self.path)
    }
}

/// Every endpoint under `/api/v1`.
pub fn endpoints() -> Vec<Endpoint> {
    let mut all = Vec::new();
    all.extend(customers::endpoints());
    all.extend(alerts::endpoints());
    all.extend(archive::endpoints());
    all.extend(tags::endpoints());
    all.extend(followup::endpoints());
    all.extend(quick_replies::endpoints());
    all.extend(outbox::endpoints());
    all.extend(transfers::endpoints());
    all.extend(jobs::endpoints());
    all
}

/// The OpenAPI 3.1 document of `endpoints`.
pub fn openapi(endpoints: &[Endpoint]) -> Value {
    let mut paths = serde_json::Map::new();
    for e in endpoints {
        let mut parameters: Vec<Value> = path_params(e.path)
            .into_iter()
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        for (name, schema, description) in &e.query {
            parameters.push(json!({"name": name, "in": "query", "required": false, "schema": schema, "description": description}));
        }
        let mut op = json!({
            "summary": e.summary,
            "description": if e.action.is_none() { String::new() } else { format!("权限 / who: {}", e.who()) },
            "tags": [e.tag],
            "operationId": operation_id(&e.method, e.path),
            "security": [{"bearer": []}],
            "parameters": parameters,
            "responses": {
                e.status.to_string(): {"description": "OK", "content": {"application/json": {"schema": e.response}}},
                "401": error_response("缺少或无效的凭证 / missing or invalid credentials"),
                "403": error_response("超出角色或数据范围 / outside the role or data scope"),
                "422": error_response("参数错误（field、reason） / invalid input (field, reason)"),
                "503": error_response("数据库暂不可用 / database unavailable"),
            },
        });
        if let Some(request) = &e.request
            && let Some(map) = op.as_object_mut()
        {
            map.insert(
                "requestBody".to_owned(),
                json!({"required": true, "content": {"application/json": {"schema": request}}}),
            );
        }
        let item = paths
            .entry(format!("/api/v1{}", e.path))
            .or_insert_with(|| json!({}));
        if let Some(item) = item.as_object_mut() {
            item.insert(e.method.as_str().to_lowercase(), op);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "SCRM API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "企业微信 SCRM：客户、标签、跟进记录、提醒、阶段、话术库与发往企业微信的变更（outbox）。Authorization: Bearer <API key>（scrm apikey create）。",
        },
        "servers": [{"url": "/"}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": schema::error()},
        },
        "paths": paths,
    })
}

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect()
}

fn operation_id(method: &Method, path: &str) -> String {
    let mut id = method.as_str().to_lowercase();
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        id.push('_');
        id.push_str(&seg.replace(['{', '}'], "").replace('-', "_"));
    }
    id
}

/// `/api/v1/…`, `/api/openapi.json` and `/api/docs` (which quotes the `[http]` limits).
pub fn router(http: &HttpSettings) -> Router<Arc<AppState>> {
    let endpoints = endpoints();
    let document = Arc::new(openapi(&endpoints));
    let docs = docs::router(&endpoints, http);
    let mut v1: Router<Arc<AppState>> = Router::new();
    for e in endpoints {
        let route = match e.action {
            Some(action) => e.route.layer(axum::Extension(Required(action))),
            None => e.route,
        };
        v1 = v1.route(e.path, route);
    }
    Router::new()
        .nest(
            "/api/v1",
            v1.fallback(|| async { ApiFailure::NotFound("接口") })
                // Every audit row of a request names the API key it came with; every log line
                // of it is in an `api{method, path}` span.
                .layer(axum::middleware::from_fn(
                    |request: Request, next: axum::middleware::Next| {
                        let span = tracing::info_span!(
                            "api",
                            method = %request.method(),
                            path = %request.uri().path()
                        );
                        tracing::Instrument::instrument(
                            auth::with_request_key(next.run(request)),
                            span,
                        )
                    },
                )),
        )
        .route(
            "/api/openapi.json",
            get(move || {
                let document = Arc::clone(&document);
                async move { Json((*document).clone()) }
            }),
        )
        .merge(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_endpoint_declares_the_action_it_requires() {
        let all = endpoints();
        let undeclared: Vec<String> = all
            .iter()
            .filter(|e| e.action().is_none())
            .map(|e| format!("{} {}", e.method, e.path))
            .collect();
        assert!(undeclared.is_empty(), "no .requires(…): {undeclared:?}");
    }

    #[test]
    fn the_document_says_who_from_the_policy_table() {
        let all = endpoints();
        let doc = openapi(&all);
        let described = |method: &str, path: &str| {
            doc["paths"][format!("/api/v1{path}")][method]["description"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(
            described("post", "/transfers"),
            "权限 / who: admin",
            "ManageTransfers is admin's only"
        );
        assert_eq!(described("get", "/alerts"), "权限 / who: admin, compliance");
        assert_eq!(
            described("get", "/customers/{external_user_id}/notes"),
            "权限 / who: admin, compliance, sales；sales: 自己跟进的客户"
        );
        assert_eq!(
            described("post", "/quick-replies/snippets"),
            "权限 / who: admin",
            "ManageQuickReplies is admin's only"
        );
        assert_eq!(
            described("get", "/quick-replies"),
            "权限 / who: admin, compliance, sales"
        );
        assert!(
            described("post", "/quick-replies/snippets/{id}/uses")
                .starts_with("权限 / who: admin, sales；"),
            "a salesperson counts a send"
        );
    }
}
