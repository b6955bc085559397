//! The HTTP side of the emulator: `/cgi-bin/*` with WeCom's conventions (§4.0) and the order in
//! which a call is judged:
//!
//! 1. counted ([`EmulatorState::calls`]); 503 while [down](EmulatorState::set_down);
//! 2. an injected fault, if one matches (it takes the call's concurrency slot, like a slow WeCom);
//! 3. 45033 when `max_concurrent_per_api` calls of this API of this corp are in flight;
//! 4. `access_token` (41001 missing, 40014 unknown, 42001 expired) — `gettoken` has its own checks;
//! 5. 45009 when the corp's minute or hour window for this API is full;
//! 6. the JSON body (40058 "Warning: wrong json format." when it does not parse; GET of a POST
//!    API is 40058 too);
//! 7. the handler. Unknown paths answer HTTP 404 so that a missing emulator API is obvious.
//!    A write API's call that the handler answers with errcode 0 goes into the write log
//!    ([`EmulatorState::writes`]), under the same lock as its change; a call stopped at any
//!    earlier step never reaches it.
//!
//! Every WeCom answer is HTTP 200 JSON with `errcode` and `errmsg`; errmsg texts follow WeCom's
//! (`invalid access_token, hint: [1700000000_23_1f…], from ip: 127.0.0.1, more info at
//! https://open.work.weixin.qq.com/devtool/query?e=40014`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use serde_json::{Value, json};

use super::archive;
use super::callbacks::Outgoing;
use super::faults::{FaultKind, GARBAGE, SILENCE};
use super::handlers::{self, ApiErr, Ctx, Route};
use super::model::App;
use super::state::{EmulatorState, TokenEntry, random_id, secs};
use super::{EmulatorLimits, admin, handlers::transfers};
use crate::archive::standin::{CHATDATA_PATH, MEDIA_PATH};
use crate::secret::Secret;

const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 3_600_000;

/// The emulator's routes: the API and the admin API.
pub(crate) fn router(state: Arc<EmulatorState>) -> Router {
    Router::new()
        .route("/cgi-bin/{*api}", any(api_entry))
        .route(CHATDATA_PATH, post(archive::chatdata))
        .route(MEDIA_PATH, post(archive::media))
        .nest("/testkit", admin::routes())
        .merge(super::web::routes())
        .with_state(state)
}

/// WeCom's short text for an errcode.
pub(crate) fn errmsg_text(code: i64) -> &'static str {
    match code {
        -1 => "system busy",
        0 => "ok",
        40001 => "invalid credential, access_token is invalid or not latest",
        40003 => "invalid userid",
        40008 => "invalid message type",
        40013 => "invalid corpid",
        40014 => "invalid access_token",
        40050 => "chatid not found",
        40056 => "invalid agentid",
        40058 => "invalid Request Parameter",
        40068 => "invalid tagid",
        40071 => "UserTag Name Already Exist",
        40096 => "invalid external userid",
        40097 => "invalid handover userid: not resigned",
        40099 => "external contact count reach limit",
        40100 => "external contact is already in transfer",
        40126 => "corp tag count reach limit 3000",
        40128 => "transfer too frequently",
        40129 => "customer is in transfer",
        40130 => "handover userid is the same as takeover userid",
        40131 => "handover userid is not the follow user of the customer",
        41001 => "access_token missing",
        41002 => "corpid missing",
        41004 => "corpsecret missing",
        41009 => "missing userid",
        41011 => "missing agentid",
        41035 => "missing external userid",
        42001 => "access_token expired",
        44004 => "empty content",
        45002 => "content size out of limit",
        45009 => "api freq out of limit",
        45033 => "api concurrent out of limit",
        49008 => "group chat already dismissed",
        60111 => "userid not found",
        60123 => "invalid party id",
        81013 => "user & party & tag all invalid",
        81017 => "too many members in visible range, use owner_filter",
        82001 => "All touser & toparty & totag invalid",
        82002 => "invalid partyid list size",
        82003 => "invalid tagid list size",
        84061 => "not external contact",
        90500 => "the owner of this chat is not resigned",
        90501 => "chat is not external group chat",
        90502 => "the owner of this chat is already resigned",
        301002 => "not allow operate another agent with this accesstoken.",
        _ => "unknown error",
    }
}

/// The JSON of an error, errmsg in WeCom's style.
pub(crate) fn error_json(err: &ApiErr) -> Value {
    let text = err.detail.as_deref().unwrap_or(errmsg_text(err.code));
    let hint = format!(
        "{}_{:02}_{}",
        chrono::Utc::now().timestamp(),
        rand::random_range(0..100),
        random_id("", 32).to_lowercase()
    );
    json!({
        "errcode": err.code,
        "errmsg": format!(
            "{text}, hint: [{hint}], from ip: 127.0.0.1, more info at https://open.work.weixin.qq.com/devtool/query?e={}",
            err.code
        ),
    })
}

/// `errcode: 0, errmsg: "ok"` added to a handler's object.
fn ok_json(value: Value) -> Value {
    let mut map = match value {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    map.insert("errcode".into(), json!(0));
    map.insert("errmsg".into(), json!("ok"));
    Value::Object(map)
}

fn json_response(value: &Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        value.to_string(),
    )
        .into_response()
}

fn plain_response(status: StatusCode, body: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.to_owned(),
    )
        .into_response()
}

/// Percent-decodes one query component (`+` is a space).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(v) = hex {
                    out.push(v);
                    i += 2;
                } else {
                    out.push(b'%');
                }
            }
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The query string as a map (first value of each name wins).
pub(crate) fn parse_query(query: &str) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        map.entry(percent_decode(k))
            .or_insert_with(|| percent_decode(v));
    }
    map
}

/// Holds one concurrency slot of (corp, API) until dropped.
struct InFlight {
    state: Arc<EmulatorState>,
    key: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut inner = self.state.lock();
        if let Some(n) = inner.in_flight.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                inner.in_flight.remove(&self.key);
            }
        }
    }
}

/// Takes a concurrency slot, or `None` (and counts a 45033) when all are taken.
fn enter(
    state: &Arc<EmulatorState>,
    api: &str,
    query: &HashMap<String, String>,
) -> Option<InFlight> {
    let max = state.config.limits.max_concurrent_per_api;
    let mut inner = state.lock();
    let corp = if api == "gettoken" {
        query.get("corpid").cloned().unwrap_or_default()
    } else {
        query
            .get("access_token")
            .and_then(|t| inner.tokens.get(t))
            .map(|e| e.corp_id.clone())
            .unwrap_or_default()
    };
    let key = format!("{corp}\n{api}");
    let n = inner.in_flight.entry(key.clone()).or_insert(0);
    if *n >= max {
        inner.rate_limited += 1;
        return None;
    }
    *n += 1;
    drop(inner);
    Some(InFlight {
        state: Arc::clone(state),
        key,
    })
}

async fn api_entry(
    State(state): State<Arc<EmulatorState>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let api = uri
        .path()
        .strip_prefix("/cgi-bin/")
        .unwrap_or_default()
        .trim_matches('/')
        .to_owned();
    let query = parse_query(uri.query().unwrap_or(""));
    let (down, fault) = state.gate(&api);
    if down {
        return plain_response(StatusCode::SERVICE_UNAVAILABLE, "service unavailable");
    }
    let Some(_slot) = enter(&state, &api, &query) else {
        return json_response(&error_json(&ApiErr::new(45033)));
    };
    match fault {
        Some(FaultKind::Busy) => return json_response(&error_json(&ApiErr::new(-1))),
        Some(FaultKind::Errcode(code)) => return json_response(&error_json(&ApiErr::new(code))),
        Some(FaultKind::Http(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY);
            let text = status.canonical_reason().unwrap_or("error").to_lowercase();
            return plain_response(status, &text);
        }
        Some(FaultKind::Garbage) => {
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/html")],
                GARBAGE,
            )
                .into_response();
        }
        Some(FaultKind::Silence) => {
            tokio::time::sleep(SILENCE).await;
            return plain_response(StatusCode::GATEWAY_TIMEOUT, "gateway timeout");
        }
        Some(FaultKind::Latency(delay)) => tokio::time::sleep(delay).await,
        Some(FaultKind::AnswerLost) | None => {}
    }
    if api == "gettoken" {
        return json_response(&gettoken(&state, &query));
    }
    let Some(route) = handlers::route(&api) else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
            json!({"errcode": 404, "errmsg": format!("the emulator has no API {api}")}).to_string(),
        )
            .into_response();
    };
    let mut out = Vec::new();
    let answer = match call(&state, &api, route, &method, &query, &body, &mut out) {
        Ok(value) => ok_json(value),
        Err(err) => error_json(&err),
    };
    state.enqueue(out);
    if fault == Some(FaultKind::AnswerLost) {
        return plain_response(StatusCode::GATEWAY_TIMEOUT, "gateway timeout");
    }
    json_response(&answer)
}

/// Counts one call of `api` against the corp's minute and hour windows.
fn within_api_limits(
    inner: &mut super::state::Inner,
    corp_id: &str,
    api: &str,
    limits: &EmulatorLimits,
) -> bool {
    let key = format!("api:{corp_id}:{api}");
    let ok = inner.count_windows(&[
        (format!("{key}:m"), MINUTE_MS, limits.per_api_per_minute),
        (format!("{key}:h"), HOUR_MS, limits.per_api_per_hour),
    ]);
    if !ok {
        inner.rate_limited += 1;
    }
    ok
}

/// Steps 4–7 of the module docs, under the lock.
fn call(
    state: &EmulatorState,
    api: &str,
    route: Route,
    method: &Method,
    query: &HashMap<String, String>,
    body: &[u8],
    out: &mut Vec<Outgoing>,
) -> Result<Value, ApiErr> {
    let now = state.now();
    let token = query
        .get("access_token")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiErr::new(41001))?;
    let mut inner = state.lock();
    let entry = inner.tokens.get(token).ok_or_else(|| ApiErr::new(40014))?;
    if entry.expires_at <= now {
        return Err(ApiErr::new(42001));
    }
    let corp_id = entry.corp_id.clone();
    let app = entry.app;
    if !within_api_limits(&mut inner, &corp_id, api, &state.config.limits) {
        return Err(ApiErr::new(45009));
    }
    if route.post && method != Method::POST {
        return Err(ApiErr::with(
            40058,
            "invalid Request Parameter: POST required",
        ));
    }
    let body: Value = if route.post {
        parse_body(body)?
    } else {
        Value::Object(serde_json::Map::new())
    };
    let agent_id = match inner.corps.get_mut(&corp_id) {
        Some(corp) => {
            transfers::settle(corp, now, out);
            corp.apps.get(app).and_then(|a| a.agent_id)
        }
        None => return Err(ApiErr::new(40013)),
    };
    let ctx = Ctx {
        corp_id: &corp_id,
        app,
        agent_id,
        query,
        body: &body,
        now,
        config: &state.config,
    };
    let answer = (route.handler)(&mut inner, &ctx, out);
    if route.write && answer.is_ok() {
        inner.record_write(api, &corp_id, body);
    }
    answer
}

/// A POST body: empty means `{}`; anything but a JSON object is 40058 "wrong json format".
fn parse_body(body: &[u8]) -> Result<Value, ApiErr> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(serde_json::Map::new()));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(ApiErr::with(
            40058,
            "Warning: wrong json format. the body must be a JSON object",
        )),
        Err(e) => Err(ApiErr::with(
            40058,
            format!("Warning: wrong json format. {e}"),
        )),
    }
}

/// `GET gettoken?corpid=&corpsecret=`: 41002/41004 missing, 40013 unknown corp, 45009 over the
/// corp's gettoken limits, 40001 wrong secret. The same token while it is valid (`expires_in`
/// is then what is left of it).
fn gettoken(state: &EmulatorState, query: &HashMap<String, String>) -> Value {
    let now = state.now();
    let result = (|| -> Result<Value, ApiErr> {
        let corp_id = query
            .get("corpid")
            .filter(|c| !c.is_empty())
            .ok_or_else(|| ApiErr::new(41002))?;
        let secret = query
            .get("corpsecret")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ApiErr::new(41004))?;
        let mut inner = state.lock();
        if !inner.corps.contains_key(corp_id) {
            return Err(ApiErr::new(40013));
        }
        if !within_api_limits(&mut inner, corp_id, "gettoken", &state.config.limits) {
            return Err(ApiErr::new(45009));
        }
        let ttl = secs(state.config.token_ttl).max(1);
        let corp = inner.corp_mut(corp_id);
        let index = corp
            .apps
            .iter()
            .position(|a: &App| a.secret.expose() == secret)
            .ok_or_else(|| ApiErr::new(40001))?;
        let app = corp.apps.get_mut(index).ok_or_else(|| ApiErr::new(40001))?;
        if let Some((token, expires_at)) = &app.token
            && *expires_at > now
        {
            return Ok(json!({"access_token": token.expose(), "expires_in": *expires_at - now}));
        }
        let token = random_id("", 64);
        let expires_at = now.saturating_add(ttl);
        app.token = Some((Secret::new(token.clone()), expires_at));
        inner.tokens.insert(
            token.clone(),
            TokenEntry {
                corp_id: corp_id.clone(),
                app: index,
                expires_at,
            },
        );
        Ok(json!({"access_token": token, "expires_in": ttl}))
    })();
    match result {
        Ok(value) => ok_json(value),
        Err(err) => error_json(&err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode_once() {
        let q = parse_query("a=1%2B2&b=x+y&c=%zz&d");
        assert_eq!(q.get("a").map(String::as_str), Some("1+2"));
        assert_eq!(q.get("b").map(String::as_str), Some("x y"));
        assert_eq!(q.get("c").map(String::as_str), Some("%zz"));
        assert_eq!(q.get("d").map(String::as_str), Some(""));
    }

    #[test]
    fn errors_read_like_wecom() {
        let v = error_json(&ApiErr::new(40014));
        assert_eq!(v["errcode"], 40014);
        let msg = v["errmsg"].as_str().unwrap();
        assert!(msg.starts_with("invalid access_token, hint: ["), "{msg}");
        assert!(msg.ends_with("query?e=40014"), "{msg}");
    }
}
