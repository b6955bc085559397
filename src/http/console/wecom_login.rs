//! Signing in to the console through WeCom (§6.6): in a desktop browser, WeCom's QR login page
//! (扫码登录); inside the WeCom client (its user agent says `wxwork`), the webview OAuth of §6.1,
//! no QR needed. Either way WeCom sends the browser back with a single-use code and our `state`,
//! bound to a short-lived cookie; `auth/getuserinfo` with the app's token turns the code into a
//! member, [`members::console_role`] into a role, and the session is the same kind as an
//! account's.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use wecom_sdk::CorpId;
use wecom_sdk::api::OAuthUser;

use super::{COOKIE, Failure, MAX_MS, cookie_attributes, encode, login_form, record, safe_next};
use crate::auth::members;
use crate::auth::session::{self, SignIn};
use crate::http::{AppState, web};
use crate::platform::db::now_ms;

/// The cookie binding WeCom's round trip to this browser: `state.corp.next`.
const STATE_COOKIE: &str = "scrm_console_sso";
/// WeCom sign-ins a corp may start per minute (each asks `auth/getuserinfo`).
const SIGN_INS_PER_MINUTE: u64 = 60;

/// The corps whose members can sign in through WeCom: those with an app (agent id and secret).
pub(super) fn corps(state: &AppState) -> Vec<CorpId> {
    state
        .config
        .corps
        .iter()
        .filter(|c| {
            state
                .wecom
                .message_credentials(c.corp_id.as_str())
                .is_ok_and(|cr| cr.agent_id.is_some())
        })
        .map(|c| c.corp_id.clone())
        .collect()
}

#[derive(Deserialize)]
pub(super) struct Start {
    corp: Option<String>,
    next: Option<String>,
}

fn refused(state: &AppState, status: StatusCode, next: &str, why: &str) -> Response {
    login_form(state, status, next, "", Some(why))
}

/// `GET /console/login/wecom?corp=…&next=…`: to WeCom's login page for the corp's app.
pub(super) async fn start(
    State(state): State<Arc<AppState>>,
    Query(q): Query<Start>,
    headers: HeaderMap,
) -> Response {
    let next = safe_next(q.next.as_deref());
    let usable = corps(&state);
    let corp = match q.corp.as_deref() {
        Some(asked) => usable.into_iter().find(|c| c.as_str() == asked),
        None if usable.len() == 1 => usable.into_iter().next(),
        None => None,
    };
    let Some(corp) = corp else {
        return refused(
            &state,
            StatusCode::BAD_REQUEST,
            &next,
            "没有可用于企业微信登录的应用：请在配置中为企业设置带 agent_id 和 secret 的自建应用。",
        );
    };
    let Ok(creds) = state.wecom.message_credentials(corp.as_str()) else {
        return refused(
            &state,
            StatusCode::SERVICE_UNAVAILABLE,
            &next,
            "企业微信应用未配置。",
        );
    };
    let agent = creds.agent_id.unwrap_or_default();
    let st = web::random_state();
    let redirect = encode(&format!(
        "{}/console/login/wecom/return",
        state.config.alerts.console_url.trim_end_matches('/')
    ));
    let in_wecom = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ua| ua.to_ascii_lowercase().contains("wxwork"));
    let url = if in_wecom {
        format!(
            "{}?appid={corp}&redirect_uri={redirect}&response_type=code&scope=snsapi_base\
             &state={st}&agentid={agent}#wechat_redirect",
            state.config.sidebar.oauth_authorize_url,
        )
    } else if state.config.console.legacy_qr_connect() {
        format!(
            "{}?appid={corp}&agentid={agent}&redirect_uri={redirect}&state={st}",
            state.config.console.sso_login_url
        )
    } else {
        format!(
            "{}?login_type=CorpApp&appid={corp}&agentid={agent}&redirect_uri={redirect}&state={st}",
            state.config.console.sso_login_url
        )
    };
    // Lax, not Strict: the browser comes back from WeCom's site, and must bring this along.
    let cookie = format!(
        "{STATE_COOKIE}={st}.{corp}.{}; Max-Age=600; {}",
        encode(&next),
        cookie_attributes(&state).replace("SameSite=Strict", "SameSite=Lax")
    );
    let mut r = (StatusCode::FOUND, [(header::LOCATION, url)]).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[derive(Deserialize)]
pub(super) struct Return {
    code: Option<String>,
    state: Option<String>,
}

/// `GET /console/login/wecom/return?code=…&state=…`: the member WeCom vouches for gets a console
/// session with their role, and lands where they were going.
pub(super) async fn finish(
    State(state): State<Arc<AppState>>,
    Query(q): Query<Return>,
    headers: HeaderMap,
) -> Response {
    let stale = || {
        refused(
            &state,
            StatusCode::BAD_REQUEST,
            "/console",
            "登录请求已失效，请重新扫码登录。",
        )
    };
    let Some(bound) = web::cookie(&headers, STATE_COOKIE) else {
        return stale();
    };
    let mut parts = bound.splitn(3, '.');
    let (Some(want), Some(corp), Some(next)) = (parts.next(), parts.next(), parts.next()) else {
        return stale();
    };
    let next = safe_next(
        url::form_urlencoded::parse(format!("n={next}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .as_deref(),
    );
    let got = q.state.as_deref().unwrap_or("");
    if !crate::auth::api_key::constant_time_eq(want.as_bytes(), got.as_bytes()) {
        return stale();
    }
    let Some(corp) = corps(&state).into_iter().find(|c| c.as_str() == corp) else {
        return stale();
    };
    let Some(code) = q.code.filter(|c| !c.is_empty() && c.len() <= 512) else {
        return refused(
            &state,
            StatusCode::FORBIDDEN,
            &next,
            "登录已取消：没有在企业微信里确认登录。",
        );
    };
    let Ok(creds) = state.wecom.message_credentials(corp.as_str()) else {
        return refused(
            &state,
            StatusCode::SERVICE_UNAVAILABLE,
            &next,
            "企业微信应用未配置。",
        );
    };
    if let Some(wait) = web::over_limit(
        state.coord.as_ref(),
        &format!("scrm:console:sso:{corp}"),
        SIGN_INS_PER_MINUTE,
    )
    .await
    {
        return Failure::RateLimited(wait).into_response();
    }
    let user = match state.wecom.client.get_user_info(&creds, &code).await {
        Ok(OAuthUser::Member(user)) => user,
        Ok(OAuthUser::Outsider) => {
            return refused(
                &state,
                StatusCode::FORBIDDEN,
                &next,
                "仅限本企业成员登录控制台。",
            );
        }
        Err(e) if e.errcode() == Some(40029) => {
            return refused(
                &state,
                StatusCode::BAD_REQUEST,
                &next,
                "登录码已失效（只能使用一次），请重新扫码登录。",
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "console: auth/getuserinfo failed");
            return refused(
                &state,
                StatusCode::SERVICE_UNAVAILABLE,
                &next,
                "企业微信暂时无法登录，请稍后重试或使用控制台账号登录。",
            );
        }
    };
    let now = now_ms();
    let role = match members::console_role(&state.db, &corp, &user).await {
        Ok(Ok(role)) => role,
        Ok(Err(refusal)) => {
            let _ = record(&state, &corp, user.as_str(), "console.login_refused", now).await;
            tracing::info!(corp_id = %corp, user_id = %user, ?refusal, "console: WeCom sign-in refused");
            return refused(&state, StatusCode::FORBIDDEN, &next, refusal.message());
        }
        Err(e) => return Failure::from(e).into_response(),
    };
    let (token, s) = match session::create(&state.db, &corp, SignIn::Member(&user, role), now).await
    {
        Ok(created) => created,
        Err(e) => return Failure::from(e).into_response(),
    };
    if let Err(e) = record(&state, &corp, &s.principal.actor(), "console.login", now).await {
        return Failure::from(e).into_response();
    }
    tracing::info!(corp_id = %corp, user_id = %user, role = role.as_str(), "console: signed in through WeCom");
    let attrs = cookie_attributes(&state);
    // A page of ours moves on, not a redirect: the navigation from WeCom's site is cross-site,
    // and the SameSite=Strict session cookie would not go along a redirect of it.
    let mut r = onward(&next);
    for c in [
        format!("{COOKIE}={token}; Max-Age={}; {attrs}", MAX_MS / 1000),
        format!(
            "{STATE_COOKIE}=; Max-Age=0; {}",
            attrs.replace("SameSite=Strict", "SameSite=Lax")
        ),
    ] {
        if let Ok(v) = HeaderValue::from_str(&c) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}

/// "Signed in": a page that goes on to `next` at once (and a link, should it not).
fn onward(next: &str) -> Response {
    let next = next
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&#39;");
    let body = format!(
        "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"0;url={next}\"><title>已登录</title>\
         <link rel=\"stylesheet\" href=\"{}\"></head><body><main><section class=\"panel notice\">\
         <h1>已登录</h1><p><a href=\"{next}\">继续</a></p></section></main></body></html>",
        super::css_path()
    );
    super::html(StatusCode::OK, body)
}
