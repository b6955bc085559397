//! What a person's WeCom client does in front of a web page of ours (§6): the OAuth authorize
//! page that hands our server a code for whoever is logged in (and the desktop browser's QR login
//! page, §6.6, for the console), `auth/getuserinfo` that turns the
//! code into a userid once, and a stand-in for WeCom's JS-SDK script (`/jweixin.js`) with the
//! same API (`wx.config`, `wx.ready`, `wx.error`, `wx.agentConfig`, `wx.invoke`). The script checks
//! both signatures here exactly as WeCom does — the corp ticket for `config`, the app's
//! agent_config ticket for `agentConfig`, over the page URL without its fragment — and answers the
//! context APIs from the "client" a test arranges with `POST /testkit/client` (who is logged in,
//! which chat is open). `sendChatMessage` goes into the write log as `jssdk/sendChatMessage`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::handlers::{ApiErr, Ctx};
use super::state::{EmulatorState, Inner, random_id};
use crate::jssdk;

/// How long an OAuth code is good for (WeCom: 5 minutes).
const CODE_TTL_SECS: i64 = 300;

/// The WeCom client a person is using, as a test arranges it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientContext {
    /// The corp the client is logged in to.
    pub corp_id: String,
    /// The member logged in (`None` with `outsider`: a WeChat user, not a member).
    #[serde(default)]
    pub userid: Option<String>,
    /// The person is not a member of the corp (OAuth gives an openid, not a userid).
    #[serde(default)]
    pub outsider: bool,
    /// Where the page was opened from (`getContext`'s `entry`): `single_chat_tools`,
    /// `contact_profile`, `group_chat_tools`, `normal`, …
    #[serde(default)]
    pub entry: String,
    /// The customer of the open 1:1 chat or profile.
    #[serde(default)]
    pub external_userid: Option<String>,
    /// The customer group chat that is open.
    #[serde(default)]
    pub chat_id: Option<String>,
    /// On a QR login page (§6.6), the person taps 拒绝 instead of confirming: WeCom sends only
    /// `state` back.
    #[serde(default)]
    pub refuses_login: bool,
}

/// An issued OAuth code.
pub(crate) struct OAuthCode {
    corp_id: String,
    userid: Option<String>,
    issued_at: i64,
    used: bool,
}

/// WeCom's own pages: the OAuth authorize page and the JS-SDK script.
pub(crate) fn routes() -> Router<Arc<EmulatorState>> {
    Router::new()
        .route("/connect/oauth2/authorize", get(authorize))
        .route("/wwlogin/sso/login", get(sso_login))
        .route("/wwopen/sso/qrConnect", get(sso_login))
        .route("/jweixin.js", get(script))
}

/// Under `/testkit`: the client a test arranges, and what the stand-in script asks.
pub(crate) fn admin_routes() -> Router<Arc<EmulatorState>> {
    Router::new()
        .route("/client", post(set_client).get(client))
        .route("/jssdk/verify", post(verify))
        .route("/jssdk/send", post(send_chat_message))
}

fn page(status: StatusCode, text: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        format!("<!doctype html><meta charset=utf-8><title>WeCom</title><p>{text}</p>"),
    )
        .into_response()
}

/// JSON for the stand-in script (another origin than the page: CORS open).
fn cors_json(value: &Value) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        value.to_string(),
    )
        .into_response()
}

/// `GET /connect/oauth2/authorize?appid=CORPID&redirect_uri=…&response_type=code&scope=…&state=…`:
/// the logged-in member is sent back to `redirect_uri` with a fresh code and the same `state`.
async fn authorize(
    State(state): State<Arc<EmulatorState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let param = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    let (appid, redirect, st) = (param("appid"), param("redirect_uri"), param("state"));
    if param("response_type") != "code" {
        return page(StatusCode::BAD_REQUEST, "response_type 必须是 code");
    }
    if !matches!(param("scope"), "snsapi_base" | "snsapi_privateinfo") {
        return page(StatusCode::BAD_REQUEST, "scope 参数错误");
    }
    if !(redirect.starts_with("http://") || redirect.starts_with("https://")) {
        return page(StatusCode::BAD_REQUEST, "redirect_uri 参数错误");
    }
    if st.len() > 128 || !st.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return page(StatusCode::BAD_REQUEST, "state 参数错误");
    }
    let now = state.now();
    let code = {
        let mut inner = state.lock();
        if !inner.corps.contains_key(appid) {
            return page(StatusCode::BAD_REQUEST, "appid 参数错误");
        }
        let Some(client) = inner.client.clone().filter(|c| c.corp_id == appid) else {
            return page(StatusCode::FORBIDDEN, "请在企业微信客户端打开链接");
        };
        let code = random_id("", 32);
        inner
            .oauth_codes
            .retain(|_, c| now - c.issued_at <= CODE_TTL_SECS);
        inner.oauth_codes.insert(
            code.clone(),
            OAuthCode {
                corp_id: client.corp_id,
                userid: if client.outsider { None } else { client.userid },
                issued_at: now,
                used: false,
            },
        );
        code
    };
    let sep = if redirect.contains('?') { '&' } else { '?' };
    let location = format!("{redirect}{sep}code={code}&state={st}");
    (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
}

/// The desktop browser's QR login (§6.6): `GET /wwlogin/sso/login?login_type=CorpApp&appid=CORPID&
/// agentid=AGENTID&redirect_uri=…&state=…` (and the older `/wwopen/sso/qrConnect`, the same without
/// `login_type`). With nobody arranged to scan, the page shows its QR code and waits; when the
/// client a test arranged (its member of that corp) scans and confirms, the browser goes back to
/// `redirect_uri` with a fresh code — the same kind of code `auth/getuserinfo` takes from the
/// OAuth page — and `state`; a refusal sends `state` alone.
async fn sso_login(
    State(state): State<Arc<EmulatorState>>,
    uri: axum::http::Uri,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let param = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    let (appid, redirect, st) = (param("appid"), param("redirect_uri"), param("state"));
    if uri.path().starts_with("/wwlogin/") && param("login_type") != "CorpApp" {
        return page(StatusCode::BAD_REQUEST, "login_type 参数错误");
    }
    if !(redirect.starts_with("http://") || redirect.starts_with("https://")) {
        return page(StatusCode::BAD_REQUEST, "redirect_uri 参数错误");
    }
    if st.len() > 128 || !st.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return page(StatusCode::BAD_REQUEST, "state 参数错误");
    }
    let Ok(agent) = param("agentid").parse::<i64>() else {
        return page(StatusCode::BAD_REQUEST, "agentid 参数错误");
    };
    let now = state.now();
    let sep = if redirect.contains('?') { '&' } else { '?' };
    let location = {
        let mut inner = state.lock();
        let Some(corp) = inner.corps.get(appid) else {
            return page(StatusCode::BAD_REQUEST, "appid 参数错误");
        };
        if !corp.apps.iter().any(|a| a.agent_id == Some(agent)) {
            return page(StatusCode::BAD_REQUEST, "agentid 参数错误");
        }
        let Some(client) = inner.client.clone().filter(|c| c.corp_id == appid) else {
            return page(StatusCode::OK, "请使用企业微信扫描二维码登录");
        };
        if client.refuses_login {
            format!("{redirect}{sep}state={st}")
        } else if client.outsider || client.userid.is_none() {
            return page(StatusCode::FORBIDDEN, "你不是该企业的成员，无法登录");
        } else {
            let code = random_id("", 32);
            inner
                .oauth_codes
                .retain(|_, c| now - c.issued_at <= CODE_TTL_SECS);
            inner.oauth_codes.insert(
                code.clone(),
                OAuthCode {
                    corp_id: client.corp_id,
                    userid: client.userid,
                    issued_at: now,
                    used: false,
                },
            );
            format!("{redirect}{sep}code={code}&state={st}")
        }
    };
    (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
}

/// `GET auth/getuserinfo?code=…`: once per code, within 5 minutes, for the code's corp (40029
/// otherwise). A member gets `userid`; an outsider `openid` and `external_userid`.
pub(crate) fn user_info(
    inner: &mut Inner,
    ctx: &Ctx<'_>,
    _out: &mut Vec<super::callbacks::Outgoing>,
) -> Result<Value, ApiErr> {
    let invalid = || ApiErr::with(40029, "invalid code");
    let code = ctx.param("code").ok_or_else(invalid)?;
    let entry = inner.oauth_codes.get_mut(code).ok_or_else(invalid)?;
    if entry.used || entry.corp_id != ctx.corp_id || ctx.now - entry.issued_at > CODE_TTL_SECS {
        return Err(invalid());
    }
    entry.used = true;
    Ok(match &entry.userid {
        Some(userid) => json!({ "userid": userid }),
        None => json!({ "openid": random_id("o", 28), "external_userid": random_id("wm", 32) }),
    })
}

async fn set_client(State(state): State<Arc<EmulatorState>>, body: Bytes) -> Response {
    match serde_json::from_slice::<ClientContext>(&body) {
        Ok(client) => {
            state.set_client(Some(client));
            cors_json(&json!({}))
        }
        Err(e) => page(StatusCode::BAD_REQUEST, &format!("bad client: {e}")),
    }
}

async fn client(State(state): State<Arc<EmulatorState>>) -> Response {
    cors_json(&serde_json::to_value(state.lock().client.clone()).unwrap_or(Value::Null))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VerifyRequest {
    kind: String,
    corpid: String,
    #[serde(default)]
    agentid: Option<i64>,
    timestamp: i64,
    nonce_str: String,
    signature: String,
    url: String,
}

/// What WeCom's client answers `wx.config` / `wx.agentConfig`: `…:ok`, or `…:invalid signature`
/// (40093) for a wrong ticket, URL, nonce or timestamp.
async fn verify(State(state): State<Arc<EmulatorState>>, body: Bytes) -> Response {
    let Ok(req) = serde_json::from_slice::<VerifyRequest>(&body) else {
        return cors_json(&json!({"errMsg": "config:fail invalid arguments"}));
    };
    let now = state.now();
    let url = jssdk::page_url(&req.url);
    let signed = |ticket: &(String, i64)| {
        ticket.1 > now
            && jssdk::signature(&ticket.0, &req.nonce_str, req.timestamp, url) == req.signature
    };
    let inner = state.lock();
    let apps = inner
        .corps
        .get(&req.corpid)
        .map(|c| c.apps.as_slice())
        .unwrap_or(&[]);
    let (name, ok) = match req.kind.as_str() {
        "config" => (
            "config",
            apps.iter()
                .filter_map(|a| a.corp_ticket.as_ref())
                .any(signed),
        ),
        "agentConfig" => (
            "agentConfig",
            apps.iter()
                .filter(|a| a.agent_id.is_some() && a.agent_id == req.agentid)
                .filter_map(|a| a.agent_ticket.as_ref())
                .any(signed),
        ),
        _ => return cors_json(&json!({"errMsg": "fail unknown kind"})),
    };
    if ok {
        cors_json(&json!({ "errMsg": format!("{name}:ok") }))
    } else {
        cors_json(&json!({ "errMsg": format!("{name}:invalid signature"), "errCode": 40093 }))
    }
}

/// `sendChatMessage`: what the person would find in the chat's input box, logged as a write.
async fn send_chat_message(State(state): State<Arc<EmulatorState>>, body: Bytes) -> Response {
    let Ok(message) = serde_json::from_slice::<Value>(&body) else {
        return cors_json(&json!({"err_msg": "sendChatMessage:fail invalid arguments"}));
    };
    let mut inner = state.lock();
    let Some(client) = inner.client.clone() else {
        return cors_json(&json!({"err_msg": "sendChatMessage:fail no chat"}));
    };
    if client.external_userid.is_none() && client.chat_id.is_none() {
        return cors_json(&json!({"err_msg": "sendChatMessage:fail no chat"}));
    }
    let body = json!({
        "userid": client.userid,
        "external_userid": client.external_userid,
        "chat_id": client.chat_id,
        "message": message,
    });
    inner.record_write("jssdk/sendChatMessage", &client.corp_id, body);
    cors_json(&json!({"err_msg": "sendChatMessage:ok"}))
}

async fn script() -> Response {
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                "application/javascript; charset=utf-8",
            ),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        JWEIXIN,
    )
        .into_response()
}

/// The stand-in script: WeCom's API shape, answered by this emulator.
const JWEIXIN: &str = r#"(function () {
  'use strict';
  var origin = new URL(document.currentScript.src).origin;
  var s = { configured: false, agent: null, ready: [], errors: [] };
  function post(path, body) {
    return fetch(origin + path, { method: 'POST', body: JSON.stringify(body) }).then(function (r) { return r.json(); });
  }
  function pageUrl() { return location.href.split('#')[0]; }
  function call(f, arg) { if (typeof f === 'function') { f(arg); } }
  window.wx = {
    config: function (c) {
      post('/testkit/jssdk/verify', { kind: 'config', corpid: c.appId, timestamp: c.timestamp,
        nonceStr: c.nonceStr, signature: c.signature, url: pageUrl() }).then(function (r) {
        if (r.errMsg === 'config:ok') { s.configured = true; s.ready.forEach(function (f) { f(); }); }
        else { s.errors.forEach(function (f) { f(r); }); }
      });
    },
    ready: function (f) { if (s.configured) { f(); } else { s.ready.push(f); } },
    error: function (f) { s.errors.push(f); },
    agentConfig: function (c) {
      post('/testkit/jssdk/verify', { kind: 'agentConfig', corpid: c.corpid, agentid: Number(c.agentid),
        timestamp: c.timestamp, nonceStr: c.nonceStr, signature: c.signature, url: pageUrl() }).then(function (r) {
        if (r.errMsg === 'agentConfig:ok') { s.agent = c.corpid; call(c.success, r); } else { call(c.fail, r); }
      }, function () { call(c.fail, { errMsg: 'agentConfig:fail network' }); });
    },
    invoke: function (name, args, cb) {
      if (!s.agent) { call(cb, { err_msg: name + ':fail no permission' }); return; }
      fetch(origin + '/testkit/client').then(function (r) { return r.json(); }).then(function (ctx) {
        ctx = ctx || {};
        if (name === 'getContext') { call(cb, { err_msg: 'getContext:ok', entry: ctx.entry || 'normal' }); }
        else if (name === 'getCurExternalContact') {
          if ((ctx.entry === 'single_chat_tools' || ctx.entry === 'contact_profile') && ctx.external_userid) {
            call(cb, { err_msg: 'getCurExternalContact:ok', userId: ctx.external_userid });
          } else { call(cb, { err_msg: 'getCurExternalContact:fail without context of external contact' }); }
        } else if (name === 'getCurExternalChat') {
          if (ctx.entry === 'group_chat_tools' && ctx.chat_id) { call(cb, { err_msg: 'getCurExternalChat:ok', chatId: ctx.chat_id }); }
          else { call(cb, { err_msg: 'getCurExternalChat:fail without context of external chat' }); }
        } else if (name === 'sendChatMessage') { post('/testkit/jssdk/send', args || {}).then(cb); }
        else { call(cb, { err_msg: name + ':fail not supported' }); }
      });
    }
  };
})();
"#;
