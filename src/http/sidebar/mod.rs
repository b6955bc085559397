//! The salesperson's sidebar (客户联系侧边栏, §6 of the protocol notes): the page WeCom opens in a
//! customer chat's toolbar. Sign-in is WeCom's OAuth (`auth/getuserinfo`): the code is used once
//! and the browser lands on a clean URL with a session cookie ([`crate::auth::session`]); the
//! session is the same sales [`crate::auth::Principal`] an API key would be, so every rule of the
//! policy applies. The page signs the JS-SDK in (`wx.config` with the corp ticket, `wx.agentConfig`
//! with the app ticket), asks WeCom which customer the chat is with, and loads the server-rendered
//! view of that customer — after the server checks that the salesperson follows them. Every write
//! carries the session's CSRF token; answers are HTML fragments the page swaps in.

mod views;

use std::sync::{Arc, LazyLock};

use askama::Template;
use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use wecom_sdk::api::{OAuthUser, TicketKind};
use wecom_sdk::{ChatId, CorpId, ExternalUserId, UserId};

use super::{AppState, web};
use crate::auth::session::{self, Session, SessionLimits, SignIn, Surface};
use crate::auth::{AccessError, Action, Denied};
use crate::domain::customers::record::{self, Author, RecordError};
use crate::domain::customers::{self, RelationKey, RelationStatus};
use crate::domain::followup::{self, FollowupError, NewReminder, ReminderChange};
use crate::domain::{group_chats, quick_replies};
use crate::platform::db::{StoreError, now_ms};

const SESSION_COOKIE: &str = "scrm_session";
const STATE_COOKIE: &str = "scrm_oauth";
/// Largest JSON body a sidebar action reads (a note is at most 2,000 characters).
const MAX_BODY_BYTES: usize = 64 << 10;

/// The sidebar's routes.
pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/sidebar", get(entry))
        .route("/sidebar/oauth", get(oauth_return))
        .route("/sidebar/jssdk", get(jssdk))
        .route("/sidebar/logout", post(logout))
        .route("/sidebar/home", get(home))
        .route("/sidebar/chat/{chat}", get(group_chat))
        .route("/sidebar/replies", get(replies))
        .route("/sidebar/replies/{id}/sent", post(reply_sent))
        .route("/sidebar/customer/{ext}", get(customer))
        .route("/sidebar/customer/{ext}/tags", post(toggle_tag))
        .route(
            "/sidebar/customer/{ext}/notes",
            post(add_note).get(older_notes),
        )
        .route("/sidebar/customer/{ext}/reminders", post(add_reminder))
        .route(
            "/sidebar/customer/{ext}/reminders/{id}/done",
            post(reminder_done),
        )
        .route("/sidebar/customer/{ext}/stage", post(set_stage))
        .route("/sidebar/customer/{ext}/remark", post(set_remark))
        .route("/sidebar/assets/{name}", get(asset))
}

// ---------------------------------------------------------------------------------------------
// Assets: embedded, named by their content's hash (cached for a year).
// ---------------------------------------------------------------------------------------------

static JS: LazyLock<web::Asset> = LazyLock::new(|| {
    web::Asset::named(
        "sidebar",
        "js",
        include_str!("../../../assets/sidebar/sidebar.js"),
        "application/javascript; charset=utf-8",
    )
});
static CSS: LazyLock<web::Asset> = LazyLock::new(|| {
    web::Asset::named(
        "sidebar",
        "css",
        include_str!("../../../assets/sidebar/sidebar.css"),
        "text/css; charset=utf-8",
    )
});

async fn asset(Path(name): Path<String>) -> Response {
    web::serve(&[&*JS, &*CSS], &name)
}

// ---------------------------------------------------------------------------------------------
// Answers
// ---------------------------------------------------------------------------------------------

/// Why a sidebar request did not go through; each has the Chinese a salesperson reads.
#[derive(Debug)]
enum Failure {
    /// No or an expired session (the page signs in again and comes back).
    SignedOut,
    /// The CSRF token is missing or wrong (a stale page or a forged request).
    Csrf,
    /// Not theirs to see or change.
    Forbidden(String),
    /// A field is wrong.
    Invalid(String),
    /// Nothing by that id.
    NotFound(&'static str),
    /// The sidebar is not set up, or the database or WeCom cannot answer now.
    Unavailable(String),
    /// Too many requests from this session (or sign-ins for this corp); try again after this.
    RateLimited(std::time::Duration),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::NotFound("记录"),
            e => {
                tracing::warn!(error = %e, "sidebar: database error");
                Self::Unavailable("数据库暂时不可用，请稍后重试".to_owned())
            }
        }
    }
}

impl From<AccessError> for Failure {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::Denied(Denied::Unauthenticated) => Self::SignedOut,
            AccessError::Denied(Denied::Forbidden(_)) => {
                Self::Forbidden("这不是你跟进的客户，不能查看或修改".to_owned())
            }
            AccessError::Store(s) => s.into(),
        }
    }
}

impl From<FollowupError> for Failure {
    fn from(e: FollowupError) -> Self {
        match e {
            FollowupError::Invalid { reason, .. } => Self::Invalid(reason),
            FollowupError::NotFound => Self::NotFound("记录"),
            FollowupError::NotFollowed => {
                Self::Forbidden("这不是你跟进的客户，不能设置提醒".to_owned())
            }
            FollowupError::WrongState(_) => Self::Invalid("提醒已完成或已取消".to_owned()),
            FollowupError::Store(s) => s.into(),
        }
    }
}

impl From<RecordError> for Failure {
    fn from(e: RecordError) -> Self {
        match e {
            RecordError::NotFollowed => Self::Forbidden("你已不再跟进此客户".to_owned()),
            RecordError::Empty => Self::Invalid("没有要修改的内容".to_owned()),
            RecordError::NotFound => Self::NotFound("标签"),
            e @ RecordError::TooLong { .. } => Self::Invalid(e.to_string()),
            RecordError::Store(s) => s.into(),
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let (status, title, detail) = match self {
            Self::SignedOut => (
                StatusCode::UNAUTHORIZED,
                "登录已过期",
                "正在重新登录，已输入的内容会保留。".to_owned(),
            ),
            Self::Csrf => (
                StatusCode::FORBIDDEN,
                "页面已过期",
                "请刷新侧边栏后再试。".to_owned(),
            ),
            Self::Forbidden(d) => (StatusCode::FORBIDDEN, "没有权限", d),
            Self::Invalid(d) => (StatusCode::UNPROCESSABLE_ENTITY, "无法保存", d),
            Self::NotFound(what) => (StatusCode::NOT_FOUND, "找不到", format!("{what}不存在")),
            Self::Unavailable(d) => (StatusCode::SERVICE_UNAVAILABLE, "暂时无法完成", d),
            Self::RateLimited(wait) => (
                StatusCode::TOO_MANY_REQUESTS,
                "操作太频繁",
                format!("请 {} 秒后再试。", wait.as_secs().max(1)),
            ),
        };
        let body = views::Notice {
            kind: "error",
            title,
            detail: &detail,
            retry: None,
        };
        (status, web::page_headers(), render(&body)).into_response()
    }
}

fn render(t: &impl Template) -> String {
    t.render().unwrap_or_else(|e| {
        tracing::error!(error = %e, "sidebar: template failed");
        "<p>页面出错</p>".to_owned()
    })
}

/// The page's Content-Security-Policy: our scripts and WeCom's JS-SDK only (no inline script),
/// no framing by other sites.
fn csp(state: &AppState) -> HeaderValue {
    let jssdk = origin_of(&state.config.sidebar.jssdk_script_url);
    let policy = format!(
        "default-src 'none'; script-src 'self' {jssdk}; connect-src 'self' {jssdk}; \
         style-src 'self'; img-src 'self' https: data:; base-uri 'none'; form-action 'self'; \
         frame-ancestors 'self'"
    );
    HeaderValue::from_str(&policy)
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'"))
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return String::new();
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    format!("{scheme}://{host}")
}

/// A whole page with a message (sign-in problems, a sidebar not set up).
fn page(status: StatusCode, title: &str, detail: &str) -> Response {
    let body = views::Page {
        title,
        detail,
        css: &format!("/sidebar/assets/{}", CSS.name),
    };
    (status, web::page_headers(), render(&body)).into_response()
}

// ---------------------------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------------------------

fn limits(state: &AppState) -> SessionLimits {
    let ms = |secs: u64| i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    SessionLimits {
        idle_ms: ms(state.config.sidebar.session_idle_secs),
        max_ms: ms(state.config.sidebar.session_max_secs),
    }
}

/// `Secure` (and `SameSite=None`, which WeCom's webviews may need) when we are served over https.
fn cookie_attributes(state: &AppState) -> &'static str {
    match state.config.sidebar.base() {
        Some(base) if base.starts_with("https://") => {
            "Path=/sidebar; HttpOnly; Secure; SameSite=None"
        }
        _ => "Path=/sidebar; HttpOnly; SameSite=Lax",
    }
}

/// Counts a request against `per_minute` in `bucket` ([`web::over_limit`]).
async fn rate(state: &AppState, bucket: &str, per_minute: u64) -> Result<(), Failure> {
    match web::over_limit(state.coord.as_ref(), bucket, per_minute).await {
        Some(wait) => Err(Failure::RateLimited(wait)),
        None => Ok(()),
    }
}

/// Sign-ins a corp may start per minute: each asks WeCom (`auth/getuserinfo`).
const SIGN_INS_PER_MINUTE: u64 = 600;

/// The signed-in salesperson of a request.
struct Signed(Session);

impl FromRequestParts<Arc<AppState>> for Signed {
    type Rejection = Failure;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let token = web::cookie(&parts.headers, SESSION_COOKIE).ok_or(Failure::SignedOut)?;
        let session = session::lookup(&state.db, token, Surface::Sidebar, limits(state), now_ms())
            .await?
            .ok_or(Failure::SignedOut)?;
        let who = &session.principal;
        let person = who.staff_user_id.as_ref().map_or("", |u| u.as_str());
        rate(
            state,
            &format!("scrm:sidebar:{}:{person}", who.corp_id),
            state.config.http.api_key_requests_per_minute,
        )
        .await?;
        Ok(Self(session))
    }
}

/// A write: a signed-in salesperson whose request echoes the session's CSRF token, and its JSON
/// body (bounded in size and time).
struct Write<T>(Session, T);

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for Write<T> {
    type Rejection = Failure;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let Signed(session) = Signed::from_request_parts(&mut parts, state).await?;
        let sent = parts
            .headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !crate::auth::api_key::constant_time_eq(sent.as_bytes(), session.csrf_token.as_bytes()) {
            return Err(Failure::Csrf);
        }
        let deadline = std::time::Duration::from_millis(state.config.http.body_timeout_ms);
        let bytes = match super::server::body_deadline(body, MAX_BODY_BYTES, deadline).await {
            Some(Ok(b)) => b,
            Some(Err(_)) => return Err(Failure::Invalid("请求内容过大或无法读取".to_owned())),
            None => return Err(Failure::Invalid("请求超时，请重试".to_owned())),
        };
        let value = serde_json::from_slice(&bytes)
            .map_err(|e| Failure::Invalid(format!("请求格式不对：{e}")))?;
        Ok(Self(session, value))
    }
}

// ---------------------------------------------------------------------------------------------
// Sign-in
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct EntryQuery {
    corp: Option<String>,
}

/// The corp a sidebar URL is for: `?corp=`, or the only configured one.
fn pick_corp(state: &AppState, asked: Option<&str>) -> Option<CorpId> {
    match asked {
        Some(c) => state
            .config
            .corps
            .iter()
            .find(|k| k.corp_id == c)
            .map(|k| k.corp_id.clone()),
        None => match state.config.corps.as_slice() {
            [one] => Some(one.corp_id.clone()),
            _ => None,
        },
    }
}

fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `GET /sidebar`: the page for a signed-in salesperson; anyone else is sent through WeCom's OAuth.
async fn entry(
    State(state): State<Arc<AppState>>,
    Query(q): Query<EntryQuery>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    let Some(base) = state.config.sidebar.base() else {
        return page(
            StatusCode::SERVICE_UNAVAILABLE,
            "侧边栏尚未配置",
            "管理员请在配置文件的 [sidebar] 中设置 public_url（企业微信应用的可信域名）。",
        );
    };
    let Some(corp) = pick_corp(&state, q.corp.as_deref()) else {
        return page(
            StatusCode::BAD_REQUEST,
            "无法确定企业",
            "侧边栏地址需要带上 ?corp=企业ID（配置了多个企业时）。",
        );
    };
    if let Some(token) = web::cookie(&headers, SESSION_COOKIE) {
        match session::lookup(&state.db, token, Surface::Sidebar, limits(&state), now_ms()).await {
            Ok(Some(s)) if s.principal.corp_id == corp => {
                return shell(&state, &s, base, &uri).await;
            }
            Ok(_) => {}
            Err(e) => return Failure::from(e).into_response(),
        }
    }
    let Ok(creds) = state.wecom.message_credentials(corp.as_str()) else {
        return page(
            StatusCode::SERVICE_UNAVAILABLE,
            "侧边栏尚未配置",
            "管理员请为该企业配置一个带 agent_id 和 secret 的自建应用。",
        );
    };
    let st = web::random_state();
    let mut url = format!(
        "{}?appid={}&redirect_uri={}&response_type=code&scope=snsapi_base&state={st}",
        state.config.sidebar.oauth_authorize_url,
        encode(corp.as_str()),
        encode(&format!("{base}/sidebar/oauth")),
    );
    if let Some(agent) = creds.agent_id {
        url.push_str(&format!("&agentid={agent}"));
    }
    url.push_str("#wechat_redirect");
    let set = format!(
        "{STATE_COOKIE}={st}.{corp}; Max-Age=600; {}",
        cookie_attributes(&state)
    );
    let mut response = (StatusCode::FOUND, [(header::LOCATION, url)]).into_response();
    if let Ok(v) = HeaderValue::from_str(&set) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

/// The page, with the JS-SDK signatures for its own URL (`base` + the request's path and query)
/// so that the first view needs one request more, the customer's. When they cannot be made now,
/// the page asks `/sidebar/jssdk` itself and shows why.
async fn shell(state: &AppState, s: &Session, base: &str, uri: &axum::http::Uri) -> Response {
    let path = uri.path_and_query().map_or("/sidebar", |p| p.as_str());
    let signed = signatures(state, &s.principal.corp_id, &format!("{base}{path}"), false)
        .await
        .map(|v| v.to_string())
        .unwrap_or_default();
    let body = views::Shell {
        csrf: &s.csrf_token,
        css: &format!("/sidebar/assets/{}", CSS.name),
        js: &format!("/sidebar/assets/{}", JS.name),
        jssdk: &state.config.sidebar.jssdk_script_url,
        signed: &signed,
    };
    let mut headers = web::page_headers();
    headers.insert(header::CONTENT_SECURITY_POLICY, csp(state));
    (StatusCode::OK, headers, render(&body)).into_response()
}

#[derive(Deserialize)]
struct OAuthReturn {
    code: Option<String>,
    state: Option<String>,
}

/// `GET /sidebar/oauth?code=…&state=…`: WeCom sends the salesperson back here. The code is used
/// once; a member gets a session and lands on the clean `/sidebar` URL.
async fn oauth_return(
    State(state): State<Arc<AppState>>,
    Query(q): Query<OAuthReturn>,
    headers: HeaderMap,
) -> Response {
    let expected = web::cookie(&headers, STATE_COOKIE).and_then(|v| v.split_once('.'));
    let (Some((want, corp)), Some(got)) = (expected, q.state.as_deref()) else {
        return page(
            StatusCode::BAD_REQUEST,
            "登录请求已失效",
            "请关闭后重新打开侧边栏。",
        );
    };
    if !crate::auth::api_key::constant_time_eq(want.as_bytes(), got.as_bytes()) {
        return page(
            StatusCode::BAD_REQUEST,
            "登录请求已失效",
            "请关闭后重新打开侧边栏。",
        );
    }
    let Some(corp) = pick_corp(&state, Some(corp)) else {
        return page(
            StatusCode::BAD_REQUEST,
            "无法确定企业",
            "请重新打开侧边栏。",
        );
    };
    let Some(code) = q.code.filter(|c| !c.is_empty() && c.len() <= 512) else {
        return page(
            StatusCode::FORBIDDEN,
            "未获得授权",
            "企业微信没有给出登录授权，请确认你在应用的可见范围内。",
        );
    };
    let Ok(creds) = state.wecom.message_credentials(corp.as_str()) else {
        return page(
            StatusCode::SERVICE_UNAVAILABLE,
            "侧边栏尚未配置",
            "管理员请为该企业配置一个带 agent_id 和 secret 的自建应用。",
        );
    };
    if let Err(e) = rate(
        &state,
        &format!("scrm:sidebar:oauth:{corp}"),
        SIGN_INS_PER_MINUTE,
    )
    .await
    {
        return e.into_response();
    }
    let user = match state.wecom.client.get_user_info(&creds, &code).await {
        Ok(OAuthUser::Member(user)) => user,
        Ok(OAuthUser::Outsider) => {
            return page(
                StatusCode::FORBIDDEN,
                "仅限企业成员使用",
                "你不是本企业的成员，无法使用客户侧边栏。",
            );
        }
        Err(e) if e.errcode() == Some(40029) => {
            return page(
                StatusCode::BAD_REQUEST,
                "登录码已失效",
                "请关闭后重新打开侧边栏（登录码只能使用一次）。",
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "sidebar: auth/getuserinfo failed");
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                "企业微信暂时无法登录",
                "请稍后重试。",
            );
        }
    };
    let (token, _) = match session::create(&state.db, &corp, SignIn::Staff(&user), now_ms()).await {
        Ok(created) => created,
        Err(e) => return Failure::from(e).into_response(),
    };
    tracing::info!(corp_id = %corp, user_id = %user, "sidebar: signed in");
    // Sessions nobody used for the idle limit go now (lookups refuse them anyway).
    if let Err(e) = session::sweep(&state.db, limits(&state).idle_ms, now_ms()).await {
        tracing::warn!(error = %e, "sidebar: cannot sweep idle sessions");
    }
    let attrs = cookie_attributes(&state);
    let max_age = state.config.sidebar.session_max_secs;
    let mut response = (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, format!("/sidebar?corp={corp}"))],
    )
        .into_response();
    for c in [
        format!("{SESSION_COOKIE}={token}; Max-Age={max_age}; {attrs}"),
        format!("{STATE_COOKIE}=; Max-Age=0; {attrs}"),
    ] {
        if let Ok(v) = HeaderValue::from_str(&c) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}

async fn logout(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Write(_, Nothing {}): Write<Nothing>,
) -> Response {
    if let Some(token) = web::cookie(&headers, SESSION_COOKIE)
        && let Err(e) = session::end(&state.db, token).await
    {
        return Failure::from(e).into_response();
    }
    let c = format!(
        "{SESSION_COOKIE}=; Max-Age=0; {}",
        cookie_attributes(&state)
    );
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&c) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

#[derive(Deserialize)]
struct JssdkQuery {
    url: String,
    /// WeCom refused the last signatures: fetch fresh tickets first (at most once per
    /// [`TICKET_REFRESH_EVERY`] per corp).
    #[serde(default)]
    refresh: bool,
}

/// How often a corp's pages may make us drop the cached tickets and fetch new ones (WeCom allows
/// a limited number of fetches per hour).
const TICKET_REFRESH_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

/// `GET /sidebar/jssdk?url=…`: both signatures for the page at `url` (which must be ours), each
/// with its own nonce and timestamp. The shell carries them already; the page asks here when its
/// URL is not the one the shell was signed for, or after WeCom refused them (`refresh`).
async fn jssdk(
    State(state): State<Arc<AppState>>,
    Signed(s): Signed,
    Query(q): Query<JssdkQuery>,
) -> Response {
    match signatures(&state, &s.principal.corp_id, &q.url, q.refresh).await {
        Ok(sig) => axum::Json(sig).into_response(),
        Err((status, message)) => {
            (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
        }
    }
}

/// `wx.config` and `wx.agentConfig` signatures for page `url` of `corp`, with the URL signed.
async fn signatures(
    state: &AppState,
    corp: &CorpId,
    url: &str,
    refresh: bool,
) -> Result<serde_json::Value, (StatusCode, String)> {
    let url = wecom_sdk::jssdk::page_url(url);
    let ours = state
        .config
        .sidebar
        .base()
        .is_some_and(|base| url.starts_with(&format!("{base}/sidebar")));
    if !ours {
        return Err((StatusCode::BAD_REQUEST, "只能为侧边栏页面签名".to_owned()));
    }
    let unavailable = |m: &str| (StatusCode::SERVICE_UNAVAILABLE, m.to_owned());
    let creds = state
        .wecom
        .message_credentials(corp.as_str())
        .map_err(|_| unavailable("企业没有配置自建应用"))?;
    let agent_id = creds
        .agent_id
        .ok_or_else(|| unavailable("自建应用没有 agent_id"))?;
    if refresh {
        // A lock nobody releases, each attempt its own owner: taken once, it bars the next
        // refresh for the whole period (on every instance), wherever the period falls.
        let key = format!("scrm:sidebar:ticket_refresh:{corp}");
        match state
            .coord
            .try_lock(&key, &web::random_state(), TICKET_REFRESH_EVERY)
            .await
        {
            Ok(true) => {
                tracing::info!(corp_id = %corp, "sidebar: WeCom refused a JS-SDK signature; fetching fresh tickets");
                for kind in [TicketKind::Corp, TicketKind::Agent] {
                    if let Err(e) = state.wecom.client.forget_ticket(&creds, kind).await {
                        tracing::warn!(error = %e, "sidebar: cannot drop a cached ticket");
                    }
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "sidebar: ticket refresh limit unavailable"),
        }
    }
    let tickets = tokio::try_join!(
        state.wecom.client.cached_ticket(&creds, TicketKind::Corp),
        state.wecom.client.cached_ticket(&creds, TicketKind::Agent),
    );
    let (corp_ticket, agent_ticket) = tickets.map_err(|e| {
        tracing::warn!(error = %e, "sidebar: jsapi ticket unavailable");
        unavailable(&format!("获取 JS-SDK 票据失败：{e}"))
    })?;
    let sign = |ticket: &str| {
        let nonce = web::random_state();
        let timestamp = now_ms() / 1000;
        let signature = wecom_sdk::jssdk::signature(ticket, &nonce, timestamp, url);
        serde_json::json!({ "timestamp": timestamp, "nonceStr": nonce, "signature": signature })
    };
    Ok(serde_json::json!({
        "url": url,
        "corpid": corp.as_str(),
        "agentid": agent_id,
        "config": sign(corp_ticket.expose()),
        "agent": sign(agent_ticket.expose()),
    }))
}

// ---------------------------------------------------------------------------------------------
// The customer
// ---------------------------------------------------------------------------------------------

/// The salesperson's relation with `ext`, checked by the policy (`check_customer`: the role may
/// `action`, and they follow the customer now). Only when it refuses are the relations read again,
/// to say why: a customer just added and not in our records yet, one they no longer follow, or
/// someone else's.
async fn checked(
    state: &AppState,
    s: &Session,
    ext: &ExternalUserId,
    action: Action,
) -> Result<UserId, Failure> {
    let who = &s.principal;
    let me = who.staff_user_id.clone().ok_or(Failure::SignedOut)?;
    who.require(action).map_err(AccessError::Denied)?;
    match who.check_customer(&state.db, action, ext).await {
        Ok(()) => return Ok(me),
        Err(AccessError::Denied(Denied::Forbidden(_))) => {}
        Err(e) => return Err(e.into()),
    }
    let key = RelationKey::new(&who.corp_id, &me, ext);
    Err(match customers::get_relation(&state.db, key).await? {
        Some(r) if r.status != RelationStatus::Active => {
            Failure::Forbidden("你已不再跟进此客户".to_owned())
        }
        // A customer nobody follows in our records yet: just added, WeCom's news on its way.
        None if customers::relations_of_customer(&state.db, &who.corp_id, ext)
            .await?
            .is_empty() =>
        {
            Failure::NotFound("客户资料（刚添加的客户需要几秒钟同步，请稍后再试）")
        }
        _ => Failure::Forbidden(
            "这不是你跟进的客户，不能查看或修改（如果刚刚添加，请稍后再试）".to_owned(),
        ),
    })
}

async fn view(
    state: &AppState,
    s: &Session,
    ext: &ExternalUserId,
    me: &UserId,
) -> Result<Response, Failure> {
    let html = views::customer(&state.db, &s.principal.corp_id, me, ext).await?;
    Ok((StatusCode::OK, web::page_headers(), html).into_response())
}

/// `GET /sidebar/home`: opened from the workbench, the salesperson's due reminders.
async fn home(State(state): State<Arc<AppState>>, Signed(s): Signed) -> Result<Response, Failure> {
    let who = &s.principal;
    let me = who.staff_user_id.clone().ok_or(Failure::SignedOut)?;
    let html = views::home(&state.db, &who.corp_id, &me, now_ms()).await?;
    Ok((StatusCode::OK, web::page_headers(), html).into_response())
}

/// `GET /sidebar/chat/{chat}`: opened in a customer group chat — for a salesperson who is in it.
async fn group_chat(
    State(state): State<Arc<AppState>>,
    Signed(s): Signed,
    Path(chat): Path<String>,
) -> Result<Response, Failure> {
    let who = &s.principal;
    let me = who.staff_user_id.clone().ok_or(Failure::SignedOut)?;
    let chat = ChatId::try_from(chat.as_str()).map_err(|_| Failure::NotFound("客户群"))?;
    let stored = group_chats::get(&state.db, &who.corp_id, &chat).await?;
    let Some(stored) = stored.filter(|c| c.dismissed_at_ms.is_none()) else {
        return Err(Failure::NotFound(
            "客户群资料（新建的群需要几秒钟同步，请稍后再试）",
        ));
    };
    match who
        .check_chat(&state.db, Action::ReadCustomers, &chat)
        .await
    {
        Ok(()) => {}
        Err(AccessError::Denied(Denied::Forbidden(_))) => {
            return Err(Failure::Forbidden(
                "你不在这个客户群里，不能查看群成员".to_owned(),
            ));
        }
        Err(e) => return Err(e.into()),
    }
    let html = views::chat(&state.db, &who.corp_id, &me, &stored).await?;
    Ok((StatusCode::OK, web::page_headers(), html).into_response())
}

#[derive(Deserialize)]
struct RepliesQuery {
    #[serde(default)]
    q: String,
}

/// `GET /sidebar/replies?q=…`: the quick-reply library, or the snippets that match.
async fn replies(
    State(state): State<Arc<AppState>>,
    Signed(s): Signed,
    Query(q): Query<RepliesQuery>,
) -> Result<Response, Failure> {
    s.principal
        .require(Action::ReadCustomers)
        .map_err(AccessError::Denied)?;
    if q.q.chars().count() > MAX_SEARCH_CHARS {
        return Err(Failure::Invalid(format!(
            "搜索词最多 {MAX_SEARCH_CHARS} 个字"
        )));
    }
    let html = views::replies(&state.db, &s.principal.corp_id, &q.q).await?;
    Ok((StatusCode::OK, web::page_headers(), html).into_response())
}

/// Longest quick-reply search.
const MAX_SEARCH_CHARS: usize = 40;

/// `POST /sidebar/replies/{id}/sent`: WeCom took the snippet into the chat; one more use.
async fn reply_sent(
    State(state): State<Arc<AppState>>,
    Path(id): Path<i64>,
    Write(s, Nothing {}): Write<Nothing>,
) -> Result<Response, Failure> {
    let who = &s.principal;
    let me = who.staff_user_id.clone().ok_or(Failure::SignedOut)?;
    // Sending writes into a customer's chat: the same right as the API's count of a send.
    who.require(Action::EditCustomers)
        .map_err(AccessError::Denied)?;
    if !quick_replies::record_use(&state.db, &who.corp_id, id, &me, now_ms()).await? {
        return Err(Failure::NotFound("话术（可能已被管理员删除）"));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn customer(
    State(state): State<Arc<AppState>>,
    Signed(s): Signed,
    Path(ext): Path<String>,
) -> Result<Response, Failure> {
    let ext = parse_ext(&ext)?;
    let me = checked(&state, &s, &ext, Action::ReadCustomers).await?;
    view(&state, &s, &ext, &me).await
}

fn parse_ext(ext: &str) -> Result<ExternalUserId, Failure> {
    ExternalUserId::try_from(ext).map_err(|_| Failure::NotFound("客户"))
}

/// A write with nothing to say (`{}`).
#[derive(Deserialize)]
struct Nothing {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TagToggle {
    tag_id: String,
    on: bool,
}

async fn toggle_tag(
    State(state): State<Arc<AppState>>,
    Path(ext): Path<String>,
    Write(s, body): Write<TagToggle>,
) -> Result<Response, Failure> {
    let ext = parse_ext(&ext)?;
    let me = checked(&state, &s, &ext, Action::EditCustomers).await?;
    let corp = &s.principal.corp_id;
    let known = crate::domain::tags::live_tags(&state.db, corp.as_str())
        .await?
        .iter()
        .any(|t| t.tag_id == body.tag_id);
    if body.on && !known {
        return Err(Failure::NotFound("标签（可能已在企业微信中删除）"));
    }
    let author = Author {
        actor: s.principal.actor(),
        rule_id: None,
    };
    let (add, remove) = if body.on {
        (vec![body.tag_id], Vec::new())
    } else {
        (Vec::new(), vec![body.tag_id])
    };
    let key = RelationKey::new(corp, &me, &ext);
    match record::edit_tags(&state.db, key, &add, &remove, &author, None, now_ms()).await {
        Ok(_) | Err(RecordError::Empty) => {}
        Err(e) => return Err(e.into()),
    }
    view(&state, &s, &ext, &me).await
}

#[derive(Deserialize)]
struct OlderQuery {
    before: i64,
}

/// `GET …/notes?before=ID`: the next page of older notes.
async fn older_notes(
    State(state): State<Arc<AppState>>,
    Signed(s): Signed,
    Path(ext): Path<String>,
    Query(q): Query<OlderQuery>,
) -> Result<Response, Failure> {
    let ext = parse_ext(&ext)?;
    checked(&state, &s, &ext, Action::ReadCustomers).await?;
    let html = views::older_notes(&state.db, &s.principal.corp_id, &ext, q.before).await?;
    Ok((StatusCode::OK, web::page_headers(), html).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewNote {
    body: String,
}

async fn add_note(
    State(state): State<Arc<AppState>>,
    Path(ext): Path<String>,
    Write(s, body): Write<NewNote>,
) -> Result<Response, Failure> {
    let ext = parse_ext(&ext)?;
    let me = checked(&state, &s, &ext, Action::EditCustomers).await?;
    followup::create_note(
        &state.db,
        &s.principal.corp_id,
        &ext,
        &s.principal.actor(),
        body.body.trim(),
        None,
        now_ms(),
    )
    .await?;
    view(&state, &s, &ext, &me).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewReminderBody {
    in_days: Option<i64>,
    due_at_ms: Option<i64>,
    title: Option<String>,
}

async fn add_reminder(
    State(state): State<Arc<AppState>>,
    Path(ext): Path<String>,
    Write(s, body): Write<NewReminderBody>,
) -> Result<Response, Failure> {
    let ext = parse_ext(&ext)?;
    let me = checked(&state, &s, &ext, Action::EditCustomers).await?;
    let now = now_ms();
    let due = match (body.in_days, body.due_at_ms) {
        (Some(days), None) if (1..=365).contains(&days) => now + days * 86_400_000,
        (None, Some(at)) => at,
        _ => return Err(Failure::Invalid("请选择 3 天、7 天或一个日期".to_owned())),
    };
    // Every reminder becomes an app message: the corp's hourly cap applies here too.
    let corp = &s.principal.corp_id;
    if let Ok(Some(_)) = state
        .coord
        .acquire(
            &format!("scrm:new_reminders:{corp}"),
            state.config.reminders.max_new_per_corp_per_hour,
            std::time::Duration::from_secs(3600),
        )
        .await
    {
        return Err(Failure::Unavailable(
            "本企业这一小时新建的提醒太多，请稍后再试".to_owned(),
        ));
    }
    let title = body
        .title
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "跟进客户".to_owned());
    let actor = s.principal.actor();
    followup::create_reminder(
        &state.db,
        &NewReminder {
            corp_id: corp,
            external_user_id: &ext,
            assignee: &me,
            title: &title,
            due_at_ms: due,
            created_by: &actor,
        },
        now,
    )
    .await?;
    view(&state, &s, &ext, &me).await
}

async fn reminder_done(
    State(state): State<Arc<AppState>>,
    Path((ext, id)): Path<(String, i64)>,
    Write(s, Nothing {}): Write<Nothing>,
) -> Result<Response, Failure> {
    let ext = parse_ext(&ext)?;
    let me = checked(&state, &s, &ext, Action::EditCustomers).await?;
    let corp = &s.principal.corp_id;
    let reminder = followup::get_reminder(&state.db, corp.as_str(), id)
        .await?
        .filter(|r| r.external_user_id == ext && me == r.assignee)
        .ok_or(Failure::NotFound("提醒"))?;
    followup::change_reminder(
        &state.db,
        corp.as_str(),
        reminder.id,
        ReminderChange::Done,
        &s.principal.actor(),
        now_ms(),
    )
    .await?;
    view(&state, &s, &ext, &me).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemarkBody {
    remark: String,
    description: String,
}

/// Remark and description of the salesperson's relation, sent to WeCom by `remark` (outbox).
async fn set_remark(
    State(state): State<Arc<AppState>>,
    Path(ext): Path<String>,
    Write(s, body): Write<RemarkBody>,
) -> Result<Response, Failure> {
    let ext = parse_ext(&ext)?;
    let me = checked(&state, &s, &ext, Action::EditCustomers).await?;
    let (remark, description) = (body.remark.trim(), body.description.trim());
    let key = RelationKey::new(&s.principal.corp_id, &me, &ext);
    record::edit_remark(
        &state.db,
        key,
        Some(remark),
        Some(description),
        &s.principal.actor(),
        now_ms(),
    )
    .await?;
    view(&state, &s, &ext, &me).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StageBody {
    stage: String,
}

async fn set_stage(
    State(state): State<Arc<AppState>>,
    Path(ext): Path<String>,
    Write(s, body): Write<StageBody>,
) -> Result<Response, Failure> {
    let ext = parse_ext(&ext)?;
    let me = checked(&state, &s, &ext, Action::EditCustomers).await?;
    followup::set_customer_stage(
        &state.db,
        &s.principal.corp_id,
        &ext,
        &body.stage,
        &s.principal.actor(),
        now_ms(),
    )
    .await?;
    view(&state, &s, &ext, &me).await
}
