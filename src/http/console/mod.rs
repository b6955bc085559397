//! The console (控制台) for admins and compliance staff: sign-in with a console account
//! (`scrm admin create`), the integration's health at a glance, the alerts inbox worked to a
//! close (the link in an alert's text card, `{console_url}/console/alerts/{id}`, opens exactly
//! that alert after signing in), and the audit log. Server-rendered pages and plain forms (each
//! carrying the session's CSRF token), the same sessions table and [`crate::auth::Principal`] as
//! the sidebar and the API, so every rule of the policy applies unchanged.

mod customer_pages;
pub(crate) mod demo;
mod members;
mod replies;
mod rules;
mod settings;
mod tag_pages;
mod transfers;
mod views;
mod wecom_login;

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use askama::Template;
use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use wecom_sdk::{CorpId, ExternalUserId, UserId};

use super::{AppState, web};
use crate::auth::Action;
use crate::auth::account;
use crate::auth::audit::{self, AuditFilter};
use crate::auth::session::{self, Session, SessionLimits, SignIn, Surface};
use crate::domain::alerts::{self, AlertFilter, Transition, TransitionError};
use crate::domain::customers::{self, RelationKey};
use crate::pipeline::{inbox, outbox, worker};
use crate::platform::db::{StoreError, now_ms};
use views::{Chrome, label};

const COOKIE: &str = "scrm_console";
/// Largest form a console page posts (a comment is at most 2,000 characters; a bulk action
/// names at most a page of alerts).
const MAX_FORM_BYTES: usize = 64 << 10;
/// A console session ends after this long without a request…
const IDLE_MS: i64 = 2 * 3600 * 1000;
/// …and this long after signing in, whatever happens.
const MAX_MS: i64 = 12 * 3600 * 1000;
/// Sign-in attempts per account name per minute (and for the whole instance, ten times that).
const LOGINS_PER_MINUTE: u64 = 5;
/// Rows per page of the alerts inbox and the audit log.
const PAGE_ROWS: i64 = 50;
/// Most rows of a CSV export.
const CSV_ROWS: i64 = 5000;

/// The console's routes.
pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/console", get(overview))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/logout/everywhere", post(logout_everywhere))
        .route("/console/login/wecom", get(wecom_login::start))
        .route("/console/login/wecom/return", get(wecom_login::finish))
        .route("/console/alerts", get(alerts_page))
        .route("/console/alerts.csv", get(alerts_csv))
        .route("/console/alerts/bulk", post(bulk_step))
        .route("/console/alerts/{id}", get(alert_page))
        .route("/console/alerts/{id}/step", post(step))
        .route("/console/customers", get(customer_pages::list))
        .route("/console/customers/{ext}", get(customer_pages::one))
        .route("/console/tags", get(tag_pages::page))
        .route("/console/tags/groups", post(tag_pages::create_group))
        .route("/console/tags/groups/{id}/tags", post(tag_pages::add_tags))
        .route(
            "/console/tags/groups/{id}/delete",
            post(tag_pages::delete_group),
        )
        .route("/console/tags/{id}/delete", post(tag_pages::delete_tag))
        .route("/console/tags/rename", post(tag_pages::rename))
        .route("/console/tags/rules", post(tag_pages::create_rule))
        .route(
            "/console/tags/rules/{id}/delete",
            post(tag_pages::delete_rule),
        )
        .route("/console/transfers", get(transfers::list))
        .route("/console/transfers/new", get(transfers::new))
        .route("/console/transfers/plan", post(transfers::plan))
        .route("/console/transfers/{id}", get(transfers::job))
        .route("/console/transfers/{id}/progress", get(transfers::progress))
        .route("/console/transfers/{id}/{action}", post(transfers::act))
        .route("/console/rules", get(rules::page))
        .route("/console/rules/try", post(rules::try_it))
        .route("/console/rules/save", post(rules::save))
        .route(
            "/console/rules/versions/{version}",
            get(rules::version_page),
        )
        .route(
            "/console/rules/versions/{version}/revert",
            post(rules::revert),
        )
        .route("/console/rules/rescan", post(rules::rescan))
        .route("/console/rules/rescan/{id}", get(rules::rescan_status))
        .route("/console/rules/recipients", post(rules::recipients))
        .route("/console/replies", get(replies::page))
        .route("/console/replies/folders", post(replies::create_folder))
        .route(
            "/console/replies/folders/{id}/delete",
            post(replies::delete_folder),
        )
        .route("/console/replies/snippets", post(replies::create_snippet))
        .route(
            "/console/replies/snippets/{id}",
            post(replies::update_snippet),
        )
        .route(
            "/console/replies/snippets/{id}/delete",
            post(replies::delete_snippet),
        )
        .route("/console/members", get(members::page))
        .route("/console/members/{user}/role", post(members::set_role))
        .route(
            "/console/members/{user}/sessions/end",
            post(members::end_member_sessions),
        )
        .route("/console/sessions/{id}/end", post(members::end_session))
        .route("/console/settings", get(settings::page))
        .route("/console/settings/selftest", post(settings::run_selftest))
        .route("/console/audit", get(audit_page))
        .route("/console/audit.csv", get(audit_csv))
        .route("/console/assets/{name}", get(asset))
}

// ---------------------------------------------------------------------------------------------
// Assets
// ---------------------------------------------------------------------------------------------

static CSS: LazyLock<web::Asset> = LazyLock::new(|| {
    web::Asset::named(
        "console",
        "css",
        include_str!("../../../assets/console/console.css"),
        "text/css; charset=utf-8",
    )
});
static JS: LazyLock<web::Asset> = LazyLock::new(|| {
    web::Asset::named(
        "console",
        "js",
        include_str!("../../../assets/console/console.js"),
        "application/javascript; charset=utf-8",
    )
});

fn css_path() -> String {
    format!("/console/assets/{}", CSS.name)
}

fn assets() -> (String, String) {
    (css_path(), format!("/console/assets/{}", JS.name))
}

async fn asset(Path(name): Path<String>) -> Response {
    web::serve(&[&*CSS, &*JS], &name)
}

// ---------------------------------------------------------------------------------------------
// Answers
// ---------------------------------------------------------------------------------------------

/// Headers of every console page: no caching, a strict CSP (our own script and styles only), no
/// framing.
fn html_headers() -> HeaderMap {
    let mut h = web::page_headers();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self' data:; \
             form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    h
}

fn render(t: &impl Template) -> String {
    t.render().unwrap_or_else(|e| {
        tracing::error!(error = %e, "console: template failed");
        "<p>页面出错</p>".to_owned()
    })
}

fn html(status: StatusCode, body: String) -> Response {
    (status, html_headers(), body).into_response()
}

fn see_other(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// Why a console request did not go through.
#[derive(Debug)]
enum Failure {
    /// Not signed in (or the session ended): to the sign-in page, then back to `next`.
    SignedOut { next: String },
    /// Signed in, but the role may not see this page or do this.
    Forbidden(Box<Session>, String),
    /// The form's CSRF token is missing or wrong.
    Csrf,
    /// Nothing by that id.
    NotFound(Box<Session>, &'static str),
    /// A field is wrong.
    Invalid(String),
    /// The database cannot answer now.
    Unavailable,
    /// Too many attempts; try again after this.
    RateLimited(std::time::Duration),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        tracing::warn!(error = %e, "console: database error");
        Self::Unavailable
    }
}

fn bare_page(status: StatusCode, title: &str, detail: &str) -> Response {
    let body = format!(
        "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <link rel=\"stylesheet\" href=\"{}\"></head><body><main><section class=\"panel notice\">\
         <h1>{title}</h1><p>{detail}</p><p><a href=\"/console\">返回控制台</a></p></section></main>\
         </body></html>",
        css_path()
    );
    html(status, body)
}

fn session_page(status: StatusCode, s: &Session, title: &str, detail: &str) -> Response {
    let page = views::Page {
        chrome: Chrome::new(&s.principal, &s.csrf_token, "", None),
        title,
        detail,
    };
    html(status, render(&page))
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        match self {
            Self::SignedOut { next } => {
                see_other(&format!("/console/login?next={}", encode(&next)))
            }
            Self::Forbidden(s, why) => session_page(StatusCode::FORBIDDEN, &s, "没有权限", &why),
            Self::NotFound(s, what) => session_page(
                StatusCode::NOT_FOUND,
                &s,
                "找不到",
                &format!("{what}不存在"),
            ),
            Self::Csrf => bare_page(
                StatusCode::FORBIDDEN,
                "页面已过期",
                "请返回上一页，刷新后再提交。",
            ),
            Self::Invalid(why) => bare_page(StatusCode::UNPROCESSABLE_ENTITY, "无法提交", &why),
            Self::Unavailable => bare_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "暂时无法完成",
                "数据库暂时不可用，请稍后重试。",
            ),
            Self::RateLimited(wait) => bare_page(
                StatusCode::TOO_MANY_REQUESTS,
                "操作太频繁",
                &format!("请 {} 秒后再试。", wait.as_secs().max(1)),
            ),
        }
    }
}

fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

// ---------------------------------------------------------------------------------------------
// Sessions and forms
// ---------------------------------------------------------------------------------------------

const LIMITS: SessionLimits = SessionLimits {
    idle_ms: IDLE_MS,
    max_ms: MAX_MS,
};

/// `Secure` when the console is reached over https (its configured address says so).
fn cookie_attributes(state: &AppState) -> &'static str {
    if state.config.alerts.console_url.starts_with("https://") {
        "Path=/console; HttpOnly; Secure; SameSite=Strict"
    } else {
        "Path=/console; HttpOnly; SameSite=Strict"
    }
}

/// A signed-in console user.
struct Signed(Session);

impl FromRequestParts<Arc<AppState>> for Signed {
    type Rejection = Failure;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let next = if parts.method == Method::GET {
            parts
                .uri
                .path_and_query()
                .map_or_else(|| "/console".to_owned(), |p| p.as_str().to_owned())
        } else {
            "/console".to_owned()
        };
        let token = web::cookie(&parts.headers, COOKIE)
            .ok_or_else(|| Failure::SignedOut { next: next.clone() })?;
        let session = session::lookup(&state.db, token, Surface::Console, LIMITS, now_ms())
            .await?
            .ok_or(Failure::SignedOut { next })?;
        // Each signed-in person as many requests as an API key.
        let bucket = format!("scrm:console:{}", session.principal.actor());
        let per_minute = state.config.http.api_key_requests_per_minute;
        if let Some(wait) = web::over_limit(state.coord.as_ref(), &bucket, per_minute).await {
            return Err(Failure::RateLimited(wait));
        }
        Ok(Self(session))
    }
}

impl Signed {
    /// The session, when its role may `action`.
    fn may(self, action: Action) -> Result<Session, Failure> {
        if self.0.principal.role.may(action) {
            Ok(self.0)
        } else {
            let why = format!(
                "你的角色（{}）不能使用这个页面。",
                views::role_label(self.0.principal.role)
            );
            Err(Failure::Forbidden(Box::new(self.0), why))
        }
    }
}

impl Signed {
    /// The session, for a write: the role may `action` and the form echoes the CSRF token.
    fn may_write(self, action: Action, form: &Form) -> Result<Session, Failure> {
        let s = self.may(action)?;
        if form.carries(&s) {
            Ok(s)
        } else {
            Err(Failure::Csrf)
        }
    }
}

/// A posted form (`application/x-www-form-urlencoded`, bounded in size and time), its fields in
/// order (a field may repeat: `id=1&id=2`).
struct Form(Vec<(String, String)>);

impl Form {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, key: &str) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the form echoes the session's CSRF token.
    fn carries(&self, s: &Session) -> bool {
        let sent = self.get("csrf").unwrap_or("");
        crate::auth::api_key::constant_time_eq(sent.as_bytes(), s.csrf_token.as_bytes())
    }
}

impl FromRequest<Arc<AppState>> for Form {
    type Rejection = Failure;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let deadline = std::time::Duration::from_millis(state.config.http.body_timeout_ms);
        let bytes = match super::server::body_deadline(req.into_body(), MAX_FORM_BYTES, deadline)
            .await
        {
            Some(Ok(b)) => b,
            Some(Err(_)) => return Err(Failure::Invalid("提交的内容过大或无法读取".to_owned())),
            None => return Err(Failure::Invalid("提交超时，请重试".to_owned())),
        };
        Ok(Self(
            url::form_urlencoded::parse(&bytes)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        ))
    }
}

/// Query parameters as a map (the last of a repeated key wins), each bounded.
fn query_map(uri: &axum::http::Uri) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .filter(|(_, v)| !v.is_empty() && v.len() <= 200)
        .map(|(k, v)| (k.into_owned(), v.trim().to_owned()))
        .collect()
}

/// `YYYY-MM-DD HH:mm` in China Standard Time.
fn when(ms: i64) -> String {
    let Some(tz) = chrono::FixedOffset::east_opt(8 * 3600) else {
        return String::new();
    };
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

/// Names of staff members, looked up once (the userid when unknown).
async fn staff_names(
    state: &AppState,
    corp: &wecom_sdk::CorpId,
) -> Result<std::collections::HashMap<String, String>, Failure> {
    Ok(crate::domain::staff::list(&state.db, corp.as_str())
        .await?
        .into_iter()
        .map(|m| {
            let name = if m.name.trim().is_empty() {
                m.user_id.clone()
            } else {
                m.name
            };
            (m.user_id, name)
        })
        .collect())
}

fn name_of(names: &std::collections::HashMap<String, String>, user: &str) -> String {
    names.get(user).cloned().unwrap_or_else(|| user.to_owned())
}

/// `名字（id）` when the name is known and differs, else the id.
fn named(names: &std::collections::HashMap<String, String>, id: &str) -> String {
    match names.get(id) {
        Some(name) if name != id => format!("{name}（{id}）"),
        _ => id.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// Sign-in
// ---------------------------------------------------------------------------------------------

/// Where to go after signing in: a console page, never another site.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/console") && !n.starts_with("//") && !n.contains('\\') => {
            n.to_owned()
        }
        _ => "/console".to_owned(),
    }
}

fn login_form(
    state: &AppState,
    status: StatusCode,
    next: &str,
    username: &str,
    error: Option<&str>,
) -> Response {
    let css = css_path();
    let corps = wecom_login::corps(state);
    let several = corps.len() > 1;
    let wecom = corps
        .iter()
        .map(|c| views::WecomLogin {
            href: format!("/console/login/wecom?corp={c}&next={}", encode(next)),
            label: if several {
                format!("企业微信扫码登录（{c}）")
            } else {
                "企业微信扫码登录".to_owned()
            },
        })
        .collect();
    let page = views::Login {
        css: &css,
        next,
        username,
        error,
        wecom,
    };
    html(status, render(&page))
}

async fn login_page(State(state): State<Arc<AppState>>, uri: axum::http::Uri) -> Response {
    let q = query_map(&uri);
    login_form(
        &state,
        StatusCode::OK,
        &safe_next(q.get("next").map(String::as_str)),
        "",
        None,
    )
}

/// Counts a sign-in attempt: per account name and for the whole instance.
async fn throttle(state: &AppState, username: &str) -> Result<(), std::time::Duration> {
    const MINUTE: std::time::Duration = std::time::Duration::from_secs(60);
    for (bucket, limit) in [
        (format!("scrm:console:login:{username}"), LOGINS_PER_MINUTE),
        ("scrm:console:login:*".to_owned(), LOGINS_PER_MINUTE * 10),
    ] {
        match state.coord.acquire(&bucket, limit, MINUTE).await {
            Ok(None) => {}
            Ok(Some(wait)) => return Err(wait),
            Err(e) => tracing::warn!(error = %e, "console: sign-in limit unavailable"),
        }
    }
    Ok(())
}

async fn login(State(state): State<Arc<AppState>>, form: Form) -> Response {
    let next = safe_next(form.get("next"));
    let username = form
        .get("username")
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let password = form.get("password").unwrap_or("");
    if username.is_empty() || username.len() > 64 || password.is_empty() {
        return login_form(
            &state,
            StatusCode::UNPROCESSABLE_ENTITY,
            &next,
            &username,
            Some("请输入账号和密码"),
        );
    }
    if let Err(wait) = throttle(&state, &username).await {
        return login_form(
            &state,
            StatusCode::TOO_MANY_REQUESTS,
            &next,
            &username,
            Some(&format!(
                "尝试次数过多，请 {} 秒后再试",
                wait.as_secs().max(1)
            )),
        );
    }
    let now = now_ms();
    let verified = match account::verify(&state.db, &username, password).await {
        Ok(v) => v,
        Err(e) => return Failure::from(e).into_response(),
    };
    let Some(account) = verified else {
        // Known names get the failure in their corp's audit log; unknown ones only in the log.
        if let Ok(Some(known)) = account::get(&state.db, &username).await {
            let _ = record(
                &state,
                &known.corp_id,
                &format!("console:{username}"),
                "console.login_failed",
                now,
            )
            .await;
        }
        tracing::info!(username = %username, "console: sign-in refused");
        return login_form(
            &state,
            StatusCode::UNAUTHORIZED,
            &next,
            &username,
            Some("账号或密码错误，或账号已停用"),
        );
    };
    signed_in(&state, &account, &next, now).await
}

/// Signs `account` in: the session, its audit row, the cookie, and on to `next`.
async fn signed_in(state: &AppState, account: &account::Account, next: &str, now: i64) -> Response {
    let (token, s) =
        match session::create(&state.db, &account.corp_id, SignIn::Account(account), now).await {
            Ok(created) => created,
            Err(e) => return Failure::from(e).into_response(),
        };
    if let Err(e) = record(
        state,
        &account.corp_id,
        &s.principal.actor(),
        "console.login",
        now,
    )
    .await
    {
        return Failure::from(e).into_response();
    }
    if let Err(e) = session::sweep(&state.db, IDLE_MS, now).await {
        tracing::warn!(error = %e, "console: cannot sweep idle sessions");
    }
    tracing::info!(username = %account.username, "console: signed in");
    let mut r = see_other(next);
    let c = format!(
        "{COOKIE}={token}; Max-Age={}; {}",
        MAX_MS / 1000,
        cookie_attributes(state)
    );
    if let Ok(v) = HeaderValue::from_str(&c) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// One audit row of a sign-in or sign-out.
async fn record(
    state: &AppState,
    corp: &CorpId,
    actor: &str,
    action: &str,
    now: i64,
) -> Result<(), StoreError> {
    let mut tx = state.db.begin().await?;
    audit::audit(
        &mut tx,
        corp.as_str(),
        actor,
        action,
        "console",
        &serde_json::json!({}),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

async fn logout(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    signed: Signed,
    form: Form,
) -> Result<Response, Failure> {
    let s = signed.0;
    if !form.carries(&s) {
        return Err(Failure::Csrf);
    }
    if let Some(token) = web::cookie(&headers, COOKIE) {
        session::end(&state.db, token).await?;
    }
    record(
        &state,
        &s.principal.corp_id,
        &s.principal.actor(),
        "console.logout",
        now_ms(),
    )
    .await?;
    let mut r = see_other("/console/login");
    let c = format!("{COOKIE}=; Max-Age=0; {}", cookie_attributes(&state));
    if let Ok(v) = HeaderValue::from_str(&c) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(r)
}

/// "退出所有设备": every session of the signed-in person ends (this one too).
async fn logout_everywhere(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    form: Form,
) -> Result<Response, Failure> {
    let s = signed.0;
    if !form.carries(&s) {
        return Err(Failure::Csrf);
    }
    let who = &s.principal;
    let ended = match session::Holder::of(who) {
        Some(holder) => session::end_all(&state.db, &who.corp_id, holder).await?,
        None => 0,
    };
    let mut tx = state.db.begin().await?;
    audit::audit(
        &mut tx,
        who.corp_id.as_str(),
        &who.actor(),
        "console.logout_everywhere",
        "console",
        &serde_json::json!({ "sessions": ended }),
        now_ms(),
    )
    .await?;
    tx.commit().await?;
    let mut r = see_other("/console/login");
    let c = format!("{COOKIE}=; Max-Age=0; {}", cookie_attributes(&state));
    if let Ok(v) = HeaderValue::from_str(&c) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(r)
}

// ---------------------------------------------------------------------------------------------
// Overview
// ---------------------------------------------------------------------------------------------

/// An alert's page shows the conversation around this many archived evidences…
const CONTEXT_EVIDENCE: usize = 10;
/// …this many messages before and after each.
const CONTEXT_MESSAGES: i64 = 3;

/// How many hours the overview's chart covers.
const CHART_HOURS: i64 = 24;
/// WeCom keeps archived messages about five days; past this lag the banner turns red.
const ARCHIVE_LAG_WARN_MS: i64 = 3 * 86_400_000;
/// The full sync runs nightly: the overview marks one older than this.
const SYNC_STALE_MS: i64 = 2 * 86_400_000;

/// A duration as a person says how long ago something was: 刚刚, 5 分钟前, 3 小时前, 2 天前.
fn ago(ms: i64) -> String {
    match ms.max(0) / 60_000 {
        0 => "刚刚".to_owned(),
        m @ 1..60 => format!("{m} 分钟前"),
        m @ 60..2880 => format!("{} 小时前", m / 60),
        m => format!("{} 天前", m / 1440),
    }
}

async fn overview(State(state): State<Arc<AppState>>, signed: Signed) -> Result<Response, Failure> {
    if !signed.0.principal.role.may(Action::ReadOperations) {
        // Managers and salespeople start where their work is.
        return Ok(see_other(views::home_of(signed.0.principal.role)));
    }
    let s = signed.may(Action::ReadOperations)?;
    let corp = s.principal.corp_id.clone();
    let now = now_ms();
    let backlog = worker::backlog(&state.db, Some(corp.as_str()), now).await?;
    let out = outbox::backlog(&state.db, Some(corp.as_str()), now).await?;
    let open = alerts::open_by_severity(&state.db, &corp).await?;
    let cursor = crate::domain::archive::store::find_cursor(&state.db, corp.as_str()).await?;
    let undecryptable =
        crate::domain::archive::store::count_undecryptable_open(&state.db, corp.as_str()).await?;
    let mut banners = Vec::new();
    if backlog.dead > 0 {
        banners.push(format!(
            "有 {} 条回调处理失败（死信），请运行 scrm inbox dead 查看原因后 scrm replay 重放，否则这些事件不会生效。",
            backlog.dead
        ));
    }
    if out.dead > 0 {
        banners.push(format!(
            "有 {} 条发往企业微信的修改失败（死信），请运行 scrm outbox dead 查看并 scrm outbox retry 重试。",
            out.dead
        ));
    }
    let archive_lag = cursor
        .as_ref()
        .and_then(|c| c.last_success_at_ms)
        .map(|t| now - t);
    if let Some(lag) = archive_lag
        && lag > ARCHIVE_LAG_WARN_MS
    {
        banners.push(format!(
            "会话存档已 {} 小时没有拉取成功：企业微信只保留约 5 天的消息，超过就会永久丢失。",
            lag / 3_600_000
        ));
    }
    let reassigning = crate::domain::transfers::running_count(&state.db, &corp).await?;
    let last_sync = crate::pipeline::jobs::last_finished_ms(
        &state.db,
        corp.as_str(),
        crate::app::sync::JOB_KIND,
    )
    .await?;
    let sync_stale = last_sync.is_none_or(|t| now - t > SYNC_STALE_MS);
    let open_total: i64 = open.iter().map(|(_, n)| n).sum();
    let tiles = vec![
        views::Tile {
            label: "待处理回调",
            value: backlog.pending.to_string(),
            note: format!("最久等待 {:.0} 秒", backlog.lag_secs),
            href: "/console",
            bad: backlog.lag_secs > 60.0,
        },
        views::Tile {
            label: "回调死信",
            value: backlog.dead.to_string(),
            note: "失败的回调，需重放".to_owned(),
            href: "/console",
            bad: backlog.dead > 0,
        },
        views::Tile {
            label: "待发往企业微信",
            value: out.pending.to_string(),
            note: format!("最久等待 {} 秒", out.oldest_pending_age_ms / 1000),
            href: "/console",
            bad: out.oldest_pending_age_ms > 600_000,
        },
        views::Tile {
            label: "发送死信",
            value: out.dead.to_string(),
            note: "失败的修改，需重试".to_owned(),
            href: "/console",
            bad: out.dead > 0,
        },
        views::Tile {
            label: "会话存档",
            value: archive_lag.map_or_else(|| "未启用".to_owned(), ago),
            note: format!("无法解密 {undecryptable} 条"),
            href: "/console",
            bad: archive_lag.is_some_and(|lag| lag > ARCHIVE_LAG_WARN_MS) || undecryptable > 0,
        },
        views::Tile {
            label: "进行中的继承",
            value: reassigning.to_string(),
            note: "离职继承与在职继承".to_owned(),
            href: "/console/transfers",
            bad: false,
        },
        views::Tile {
            label: "上次全量同步",
            value: last_sync.map_or_else(|| "从未".to_owned(), |t| ago(now - t)),
            note: last_sync.map_or_else(
                || "请运行 scrm sync 或等待夜间同步".to_owned(),
                |t| format!("完成于 {}", when(t)),
            ),
            href: "/console/settings",
            bad: sync_stale,
        },
        views::Tile {
            label: "未处理告警",
            value: open_total.to_string(),
            note: "点击查看".to_owned(),
            href: "/console/alerts?state=open",
            bad: open.iter().any(|(sev, n)| sev == "critical" && *n > 0),
        },
    ];
    // From the chart's first hour on, 23 hours before the current one.
    let chart = chart(
        &inbox::hourly(
            &state.db,
            corp.as_str(),
            now - (CHART_HOURS - 1) * 3_600_000,
        )
        .await?,
        now,
    );
    let open_by_severity = views::SEVERITIES
        .iter()
        .map(|(sev, label)| {
            let n = open.iter().find(|(s, _)| s == sev).map_or(0, |(_, n)| *n);
            ((*sev).to_owned(), (*label).to_owned(), n)
        })
        .collect();
    let page = views::Overview {
        chrome: Chrome::new(&s.principal, &s.csrf_token, "/console", None),
        banners,
        tiles,
        chart,
        open_by_severity,
    };
    Ok(html(StatusCode::OK, render(&page)))
}

/// The last [`CHART_HOURS`] hours as stacked bars: processed below, failed or waiting above.
fn chart(rows: &[(i64, String, i64)], now: i64) -> views::Chart {
    const WIDTH: i64 = 960;
    const HEIGHT: i64 = 160;
    let last = now / 3_600_000;
    let slot = WIDTH / CHART_HOURS;
    let bar = slot - 6;
    let count = |hour: i64, state: &str| -> i64 {
        rows.iter()
            .filter(|(h, s, _)| *h == hour && s == state)
            .map(|(_, _, n)| *n)
            .sum()
    };
    let hours: Vec<i64> = (0..CHART_HOURS)
        .map(|i| last - CHART_HOURS + 1 + i)
        .collect();
    let totals: Vec<(i64, i64, i64)> = hours
        .iter()
        .map(|h| (count(*h, "done"), count(*h, "dead"), count(*h, "pending")))
        .collect();
    let max = totals.iter().map(|(d, x, p)| d + x + p).max().unwrap_or(0);
    let scale = |n: i64| if max == 0 { 0 } else { n * HEIGHT / max };
    let tz = chrono::FixedOffset::east_opt(8 * 3600);
    let bars = hours
        .iter()
        .zip(&totals)
        .enumerate()
        .map(|(i, (hour, (done, dead, pending)))| {
            let i = i64::try_from(i).unwrap_or(0);
            let h_done = scale(*done);
            let h_other = scale(dead + pending);
            let label = tz
                .and_then(|tz| {
                    chrono::DateTime::from_timestamp(hour * 3600, 0)
                        .map(|t| t.with_timezone(&tz).format("%H:00").to_string())
                })
                .unwrap_or_default();
            views::Bar {
                x: i * slot + 3,
                y_done: HEIGHT - h_done,
                h_done,
                y_other: HEIGHT - h_done - h_other,
                h_other,
                done: *done,
                dead: *dead,
                pending: *pending,
                label,
                tick: i % 3 == 0,
            }
        })
        .collect();
    views::Chart {
        width: WIDTH,
        height: HEIGHT,
        bar,
        bars,
        total: totals.iter().map(|(d, x, p)| d + x + p).sum(),
        max,
    }
}

// ---------------------------------------------------------------------------------------------
// Alerts
// ---------------------------------------------------------------------------------------------

/// The staff whose customers and alerts the session reaches (`None`: the whole corp).
async fn reach(state: &AppState, s: &Session) -> Result<Option<Vec<String>>, Failure> {
    Ok(s.principal.team(&state.db).await?)
}

/// Refuses an alert about someone outside the session's reach.
fn within_reach(s: Session, reach: Option<&[String]>, staff: &str) -> Result<Session, Failure> {
    match reach {
        Some(team) if !team.iter().any(|u| u == staff) => Err(Failure::Forbidden(
            Box::new(s),
            "这条告警涉及的成员不在你负责的部门。".to_owned(),
        )),
        _ => Ok(s),
    }
}

/// [`alert_filter`] for this session: a department (`dept`, with the departments under it)
/// narrows to its members, and a manager only ever sees their team.
async fn scoped_alert_filter(
    state: &AppState,
    s: &Session,
    q: &BTreeMap<String, String>,
    limit: i64,
) -> Result<AlertFilter, Failure> {
    let mut filter = alert_filter(q, limit);
    let corp = s.principal.corp_id.as_str();
    let department = match q.get("dept").and_then(|d| d.parse::<i64>().ok()) {
        Some(d) => Some(crate::auth::team::members_under(&state.db, corp, &[d]).await?),
        None => None,
    };
    filter.staff_in = match (department, reach(state, s).await?) {
        (Some(d), Some(team)) => Some(d.into_iter().filter(|u| team.contains(u)).collect()),
        (Some(only), None) | (None, Some(only)) => Some(only),
        (None, None) => None,
    };
    Ok(filter)
}

/// The alerts filter of a query string, checked against the known names.
fn alert_filter(q: &BTreeMap<String, String>, limit: i64) -> AlertFilter {
    let known = |key: &str, table: &[(&str, &str)]| {
        q.get(key)
            .filter(|v| table.iter().any(|(name, _)| name == v))
            .cloned()
    };
    AlertFilter {
        state: known("state", &views::STATES),
        kind: known("kind", &views::KINDS),
        severity: known("severity", &views::SEVERITIES),
        category: q.get("category").cloned(),
        staff_user_id: q.get("staff").cloned(),
        staff_in: None,
        since_ms: q
            .get("since")
            .and_then(|d| crate::http::web::china_day_start_ms(d)),
        before_id: q.get("before").and_then(|b| b.parse().ok()),
        limit,
    }
}

/// The query string of `q` without `before` (for links that keep the filter).
fn filter_query(q: &BTreeMap<String, String>) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in q.iter().filter(|(k, _)| k.as_str() != "before") {
        out.append_pair(k, v);
    }
    out.finish()
}

async fn alerts_page(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    uri: axum::http::Uri,
) -> Result<Response, Failure> {
    let s = signed.may(Action::ReadAlerts)?;
    let q = query_map(&uri);
    let filter = scoped_alert_filter(&state, &s, &q, PAGE_ROWS).await?;
    let rows = alerts::list(&state.db, s.principal.corp_id.as_str(), &filter).await?;
    let departments =
        crate::domain::staff::departments(&state.db, s.principal.corp_id.as_str()).await?;
    let query = filter_query(&q);
    let next_page = (i64::try_from(rows.len()).unwrap_or(0) == PAGE_ROWS)
        .then(|| rows.last().map(|a| format!("{query}&before={}", a.id)))
        .flatten();
    let names = staff_names(&state, &s.principal.corp_id).await?;
    let alerts = rows
        .into_iter()
        .map(|a| views::AlertRow {
            id: a.id,
            when: when(a.created_at_ms),
            severity_label: label(&views::SEVERITIES, &a.severity),
            kind_label: label(&views::KINDS, &a.kind),
            state_label: label(&views::STATES, &a.state),
            severity: a.severity,
            title: a.title,
            staff: name_of(&names, &a.staff_user_id),
            evidence_count: a.evidence_count,
            state: a.state,
        })
        .collect();
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    let flash = q.get("done").map(|n| format!("已处理 {n} 条告警"));
    let page = views::Alerts {
        chrome: Chrome::new(&s.principal, &s.csrf_token, "/console/alerts", flash),
        states: views::options(&views::STATES, &get("state")),
        kinds: views::options(&views::KINDS, &get("kind")),
        severities: views::options(&views::SEVERITIES, &get("severity")),
        filter: views::AlertFilterView {
            departments: views::department_choices(&departments, &get("dept")),
            category: get("category"),
            staff: get("staff"),
            since: get("since"),
        },
        query,
        alerts,
        next_page,
    };
    Ok(html(StatusCode::OK, render(&page)))
}

/// One CSV field: quoted, and a leading `= + - @` defused (spreadsheets run those as formulas).
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn csv(name: &str, header: &[&str], rows: impl Iterator<Item = Vec<String>>) -> Response {
    // A BOM, so that Excel opens the Chinese as UTF-8.
    let mut body = String::from("\u{feff}");
    body.push_str(
        &header
            .iter()
            .map(|h| csv_field(h))
            .collect::<Vec<_>>()
            .join(","),
    );
    body.push_str("\r\n");
    for row in rows {
        body.push_str(
            &row.iter()
                .map(|f| csv_field(f))
                .collect::<Vec<_>>()
                .join(","),
        );
        body.push_str("\r\n");
    }
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        body,
    )
        .into_response()
}

async fn alerts_csv(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    uri: axum::http::Uri,
) -> Result<Response, Failure> {
    let s = signed.may(Action::ReadAlerts)?;
    let q = query_map(&uri);
    let filter = scoped_alert_filter(&state, &s, &q, CSV_ROWS).await?;
    let rows = alerts::list(&state.db, s.principal.corp_id.as_str(), &filter).await?;
    Ok(csv(
        "alerts.csv",
        &[
            "id",
            "告警时间",
            "严重程度",
            "类型",
            "类别",
            "标题",
            "成员",
            "客户",
            "证据条数",
            "状态",
        ],
        rows.into_iter().map(|a| {
            vec![
                a.id.to_string(),
                when(a.created_at_ms),
                label(&views::SEVERITIES, &a.severity),
                label(&views::KINDS, &a.kind),
                a.category.unwrap_or_default(),
                a.title,
                a.staff_user_id,
                a.external_user_id.unwrap_or_default(),
                a.evidence_count.to_string(),
                label(&views::STATES, &a.state),
            ]
        }),
    ))
}

/// The steps an alert in `state` can take, as buttons.
fn steps_from(state: &str) -> Vec<views::StepButton> {
    let b = |value, label, quiet| views::StepButton {
        value,
        label,
        quiet,
    };
    match state {
        "open" => vec![
            b("acknowledge", "开始处理", false),
            b("resolve", "已解决", false),
            b("false_positive", "误报", true),
        ],
        "acknowledged" => vec![
            b("resolve", "已解决", false),
            b("false_positive", "误报", true),
        ],
        "resolved" | "false_positive" => vec![b("reopen", "重新打开", true)],
        _ => Vec::new(),
    }
}

fn transition_of(step: &str) -> Option<Transition> {
    match step {
        "acknowledge" => Some(Transition::Acknowledge),
        "resolve" => Some(Transition::Resolve),
        "false_positive" => Some(Transition::FalsePositive),
        "reopen" => Some(Transition::Reopen),
        _ => None,
    }
}

fn history_label(action: &str) -> String {
    match action {
        "created" => "创建".to_owned(),
        "escalated" => "升级通知".to_owned(),
        "acknowledge" => "开始处理".to_owned(),
        "resolve" => "标记已解决".to_owned(),
        "false_positive" => "标记误报".to_owned(),
        "reopen" => "重新打开".to_owned(),
        other => other.to_owned(),
    }
}

fn change_label(change: &str) -> String {
    match change {
        "added" => "添加好友",
        "edited" => "修改备注/标签",
        "reactivated" => "重新添加",
        "deleted_by_staff" => "员工删除客户",
        "deleted_by_customer" => "客户删除员工",
        "transferred" => "转接给同事",
        "vanished" => "关系消失（对账发现）",
        "transfer_failed" => "转接失败",
        other => other,
    }
    .to_owned()
}

async fn alert_page(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Path(id): Path<String>,
    uri: axum::http::Uri,
) -> Result<Response, Failure> {
    let s = signed.may(Action::ReadAlerts)?;
    let Ok(id) = id.parse::<i64>() else {
        return Err(Failure::NotFound(Box::new(s), "告警"));
    };
    let corp = s.principal.corp_id.clone();
    let Some(a) = alerts::get(&state.db, corp.as_str(), id).await? else {
        return Err(Failure::NotFound(Box::new(s), "告警"));
    };
    let team = reach(&state, &s).await?;
    let s = within_reach(s, team.as_deref(), &a.staff_user_id)?;
    let (evidence, history, deliveries) = alerts::details(&state.db, id).await?;
    // Archived messages shown as evidence are a read of archived chat: logged like any other.
    let archived = evidence
        .iter()
        .filter(|e| e.source_ref.starts_with("archive:"))
        .count();
    let reader = crate::domain::archive::read::Reader {
        actor: s.principal.actor(),
        role: s.principal.role.as_str(),
        corp_id: corp.as_str(),
    };
    crate::domain::archive::read::evidence_shown(
        &state.db,
        &reader,
        id,
        i64::try_from(archived).unwrap_or(i64::MAX),
    )
    .await?;
    // The conversation around the first archived evidences, for who may read archived chat.
    let mut contexts = std::collections::HashMap::new();
    if s.principal.role.may(Action::ReadArchive) {
        let names = staff_names(&state, &corp).await?;
        for msgid in evidence
            .iter()
            .filter_map(|e| e.source_ref.strip_prefix("archive:"))
            .take(CONTEXT_EVIDENCE)
        {
            let lines =
                crate::domain::archive::read::around(&state.db, &reader, msgid, CONTEXT_MESSAGES)
                    .await?
                    .into_iter()
                    .map(|m| views::ContextLine {
                        when: when(m.msg_time_ms),
                        sender: name_of(&names, &m.sender),
                        staff: m.sender_kind == "staff",
                        text: if m.revoked_at_ms.is_some() {
                            format!("（已撤回）{}", m.text.unwrap_or_default())
                        } else {
                            m.text.unwrap_or_else(|| format!("[{}]", m.msgtype))
                        },
                        this: m.msgid == msgid,
                    })
                    .collect::<Vec<_>>();
            contexts.insert(format!("archive:{msgid}"), lines);
        }
    }
    let evidence = evidence
        .into_iter()
        .map(|e| {
            let spans: Vec<(usize, usize)> = serde_json::from_str::<Vec<[usize; 2]>>(&e.spans)
                .unwrap_or_default()
                .into_iter()
                .map(|[a, b]| (a, b))
                .collect();
            views::EvidenceView {
                context: contexts.remove(&e.source_ref).unwrap_or_default(),
                when: when(e.at_ms),
                source: e.source_ref,
                customer: e.external_user_id.unwrap_or_default(),
                parts: e
                    .text
                    .as_deref()
                    .map(|t| views::highlight(t, &spans))
                    .unwrap_or_default(),
                detail: if e.detail == "{}" {
                    String::new()
                } else {
                    e.detail
                },
            }
        })
        .collect();
    let mut relation = Vec::new();
    if let (Ok(user), Some(Ok(ext))) = (
        UserId::try_from(a.staff_user_id.as_str()),
        a.external_user_id.as_deref().map(ExternalUserId::try_from),
    ) {
        for r in
            customers::relation_history(&state.db, RelationKey::new(&corp, &user, &ext)).await?
        {
            relation.push(views::RelationRow {
                when: when(r.at_ms),
                change: change_label(&r.change),
                source: if r.source == "callback" {
                    "企业微信回调"
                } else {
                    "对账"
                }
                .to_owned(),
                detail: r.detail,
            });
        }
    }
    let q = query_map(&uri);
    let flash = q
        .get("done")
        .map(|step| format!("已{}", history_label(step)));
    // The one member's name, not the corp's whole list.
    let member = match UserId::try_from(a.staff_user_id.as_str()) {
        Ok(user) => crate::domain::staff::get(&state.db, &corp, &user).await?,
        Err(_) => None,
    };
    let member_name: std::collections::HashMap<String, String> =
        member.into_iter().map(|m| (m.user_id, m.name)).collect();
    let page = views::AlertPage {
        chrome: Chrome::new(&s.principal, &s.csrf_token, "/console/alerts", flash),
        id: a.id,
        steps: steps_from(&a.state),
        severity_label: label(&views::SEVERITIES, &a.severity),
        state_label: label(&views::STATES, &a.state),
        kind_label: label(&views::KINDS, &a.kind),
        title: a.title,
        severity: a.severity,
        state: a.state,
        category: a.category.unwrap_or_default(),
        rule_id: a.rule_id.unwrap_or_default(),
        staff: named(&member_name, &a.staff_user_id),
        customer: match a.external_user_id {
            Some(ext) => named(
                &customers::display_names(&state.db, corp.as_str(), &[ext.as_str()]).await?,
                &ext,
            ),
            None => "—".to_owned(),
        },
        created: when(a.created_at_ms),
        first: when(a.first_at_ms),
        last: when(a.last_at_ms),
        evidence,
        relation,
        history: history
            .into_iter()
            .map(|h| views::HistoryView {
                when: when(h.at_ms),
                actor: h.actor,
                action: history_label(&h.action),
                comment: h.comment,
            })
            .collect(),
        deliveries: deliveries
            .into_iter()
            .map(|d| {
                let (state_label, class) = match (d.skipped.as_deref(), d.state.as_deref()) {
                    (Some(why), _) => (format!("未发送：{why}"), "dead"),
                    (None, Some("done")) => ("已送达".to_owned(), "done"),
                    (None, Some("dead")) => (
                        format!("发送失败：{}", d.last_error.unwrap_or_default()),
                        "dead",
                    ),
                    (None, _) => ("发送中".to_owned(), "pending"),
                };
                views::DeliveryView {
                    recipient: d.recipient,
                    reason: if d.reason == "escalated" {
                        "升级"
                    } else {
                        "新告警"
                    }
                    .to_owned(),
                    state: state_label,
                    state_class: class.to_owned(),
                }
            })
            .collect(),
    };
    Ok(html(StatusCode::OK, render(&page)))
}

/// A comment, trimmed and bounded.
fn comment_of(form: &Form) -> Result<String, Failure> {
    let comment = form.get("comment").unwrap_or("").trim().to_owned();
    if comment.chars().count() > 2000 {
        return Err(Failure::Invalid("处理说明最多 2000 字".to_owned()));
    }
    Ok(comment)
}

async fn step(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Path(id): Path<i64>,
    form: Form,
) -> Result<Response, Failure> {
    let s = signed.may_write(Action::HandleAlerts, &form)?;
    let Some(step) = form.get("step").and_then(transition_of) else {
        return Err(Failure::Invalid("未知的操作".to_owned()));
    };
    let comment = comment_of(&form)?;
    let team = reach(&state, &s).await?;
    if team.is_some() {
        let Some(a) = alerts::get(&state.db, s.principal.corp_id.as_str(), id).await? else {
            return Err(Failure::NotFound(Box::new(s), "告警"));
        };
        let staff = a.staff_user_id;
        return step_within(
            &state,
            within_reach(s, team.as_deref(), &staff)?,
            id,
            step,
            &comment,
        )
        .await;
    }
    step_within(&state, s, id, step, &comment).await
}

/// One step on alert `id`, which the session reaches.
async fn step_within(
    state: &AppState,
    s: Session,
    id: i64,
    step: Transition,
    comment: &str,
) -> Result<Response, Failure> {
    let who = &s.principal;
    match alerts::transition(
        &state.db,
        who.corp_id.as_str(),
        id,
        step,
        &who.actor(),
        comment,
        now_ms(),
    )
    .await
    {
        Ok(_) => Ok(see_other(&format!(
            "/console/alerts/{id}?done={}",
            step.as_str()
        ))),
        Err(TransitionError::NotFound) => Err(Failure::NotFound(Box::new(s), "告警")),
        Err(TransitionError::Conflict { state: now, .. }) => Ok(session_page(
            StatusCode::CONFLICT,
            &s,
            "告警状态已变化",
            &format!(
                "这条告警现在是「{}」，可能刚被同事处理过。请返回告警页面查看。",
                label(&views::STATES, &now)
            ),
        )),
        Err(TransitionError::Store(e)) => Err(e.into()),
    }
}

async fn bulk_step(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    form: Form,
) -> Result<Response, Failure> {
    let s = signed.may_write(Action::HandleAlerts, &form)?;
    let Some(step) = form.get("step").and_then(transition_of) else {
        return Err(Failure::Invalid("未知的操作".to_owned()));
    };
    let comment = comment_of(&form)?;
    let ids: Vec<i64> = form
        .all("id")
        .filter_map(|v| v.parse().ok())
        .take(500)
        .collect();
    let who = &s.principal;
    let team = reach(&state, &s).await?;
    let mut done = 0;
    for id in &ids {
        if let Some(team) = &team {
            // Outside the team: skipped like one another hand changed first.
            match alerts::get(&state.db, who.corp_id.as_str(), *id).await? {
                Some(a) if team.contains(&a.staff_user_id) => {}
                _ => continue,
            }
        }
        match alerts::transition(
            &state.db,
            who.corp_id.as_str(),
            *id,
            step,
            &who.actor(),
            &comment,
            now_ms(),
        )
        .await
        {
            Ok(_) => done += 1,
            // Another state already (or gone): skipped, the count says how many went through.
            Err(TransitionError::NotFound | TransitionError::Conflict { .. }) => {}
            Err(TransitionError::Store(e)) => return Err(e.into()),
        }
    }
    let back = safe_next(form.get("back"));
    let sep = if back.contains('?') { '&' } else { '?' };
    Ok(see_other(&format!("{back}{sep}done={done}")))
}

// ---------------------------------------------------------------------------------------------
// Audit log
// ---------------------------------------------------------------------------------------------

fn audit_filter(q: &BTreeMap<String, String>, limit: i64) -> AuditFilter {
    AuditFilter {
        actor: q.get("actor").cloned(),
        action: q.get("action").cloned(),
        target: q.get("target").cloned(),
        since_ms: q
            .get("since")
            .and_then(|d| crate::http::web::china_day_start_ms(d)),
        before_id: q.get("before").and_then(|b| b.parse().ok()),
        limit,
    }
}

async fn audit_page(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    uri: axum::http::Uri,
) -> Result<Response, Failure> {
    let s = signed.may(Action::ReadOperations)?;
    let q = query_map(&uri);
    let rows = audit::search(
        &state.db,
        s.principal.corp_id.as_str(),
        &audit_filter(&q, PAGE_ROWS),
    )
    .await?;
    let query = filter_query(&q);
    let next_page = (i64::try_from(rows.len()).unwrap_or(0) == PAGE_ROWS)
        .then(|| rows.last().map(|e| format!("{query}&before={}", e.id)))
        .flatten();
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    let page = views::Audit {
        chrome: Chrome::new(&s.principal, &s.csrf_token, "/console/audit", None),
        filter: views::AuditFilterView {
            actor: get("actor"),
            action: get("action"),
            target: get("target"),
            since: get("since"),
        },
        query,
        entries: rows
            .into_iter()
            .map(|e| views::AuditRow {
                when: when(e.at_ms),
                actor: e.actor,
                action: e.action,
                target: e.target,
                detail: if e.detail == "{}" {
                    String::new()
                } else {
                    e.detail
                },
            })
            .collect(),
        next_page,
    };
    Ok(html(StatusCode::OK, render(&page)))
}

async fn audit_csv(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    uri: axum::http::Uri,
) -> Result<Response, Failure> {
    let s = signed.may(Action::ReadOperations)?;
    let q = query_map(&uri);
    let rows = audit::search(
        &state.db,
        s.principal.corp_id.as_str(),
        &audit_filter(&q, CSV_ROWS),
    )
    .await?;
    Ok(csv(
        "audit.csv",
        &["id", "时间", "操作人", "操作", "对象", "详情", "API key"],
        rows.into_iter().map(|e| {
            vec![
                e.id.to_string(),
                when(e.at_ms),
                e.actor,
                e.action,
                e.target,
                e.detail,
                e.key_id.map(|k| k.to_string()).unwrap_or_default(),
            ]
        }),
    ))
}
