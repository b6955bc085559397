//! `/wecom/callback/{corp_id}/{app}`: WeCom's URL verification (GET) and event delivery (POST).
//!
//! POST: verify → decrypt → check receiveid → read the header → one durable write → `success`.
//! Every refusal has its own status (403 for anything that says "not from WeCom or wrong keys",
//! 400 for malformed input, 413 for oversized bodies, 503 when storage is down so WeCom retries)
//! and stores nothing.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use wecom_sdk::{CryptoError, EnvelopeError, parse_envelope, parse_header_str};

use super::AppState;
use crate::pipeline::inbox::{self, NewInboxRow, Stored, WriteError};
use crate::platform::config::AppEndpoint;

/// The signature parameters WeCom appends to every callback URL.
#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    msg_signature: Option<String>,
    timestamp: Option<String>,
    nonce: Option<String>,
    echostr: Option<String>,
}

/// Why a callback was refused. Each maps to one status and a stable code.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    /// No such corp or app in the configuration.
    #[error("no callback configuration for this corp and app")]
    UnknownEndpoint,
    /// The query string could not be read.
    #[error("malformed query string")]
    MalformedQuery,
    /// `msg_signature` is missing.
    #[error("missing msg_signature")]
    MissingSignature,
    /// `timestamp` or `nonce` (or `echostr` on GET) is missing or malformed.
    #[error("missing or malformed {0}")]
    BadParameter(&'static str),
    /// The timestamp is outside the configured window.
    #[error("timestamp outside the accepted window")]
    StaleTimestamp,
    /// The body exceeds the configured limit.
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    /// The body could not be read.
    #[error("body could not be read")]
    BodyRead,
    /// The body did not arrive within `[http] body_timeout_ms`.
    #[error("body not received in time")]
    BodyTimeout,
    /// The envelope is not valid XML/JSON or lacks `Encrypt`.
    #[error("malformed envelope: {0}")]
    Envelope(EnvelopeError),
    /// Signature, AES, padding, length or receiveid failed.
    #[error("{0}")]
    Crypto(CryptoError),
    /// The decrypted message is not a well-formed document.
    #[error("malformed message: {0}")]
    Message(EnvelopeError),
    /// The inbox could not store the event.
    #[error("inbox: {0}")]
    Store(WriteError),
}

impl CallbackError {
    fn status(&self) -> StatusCode {
        match self {
            Self::UnknownEndpoint => StatusCode::NOT_FOUND,
            Self::MissingSignature | Self::StaleTimestamp => StatusCode::FORBIDDEN,
            Self::Crypto(CryptoError::InvalidSignature | CryptoError::ReceiveIdMismatch { .. }) => {
                StatusCode::FORBIDDEN
            }
            Self::Crypto(_)
            | Self::MalformedQuery
            | Self::BadParameter(_)
            | Self::BodyRead
            | Self::Envelope(_)
            | Self::Message(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Store(WriteError::Refused(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A stable machine-readable code, also the `outcome` label of the callback counter.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownEndpoint => "unknown_endpoint",
            Self::MalformedQuery => "malformed_query",
            Self::MissingSignature => "missing_signature",
            Self::BadParameter(_) => "bad_parameter",
            Self::StaleTimestamp => "stale_timestamp",
            Self::TooLarge(_) => "body_too_large",
            Self::BodyRead => "body_unreadable",
            Self::BodyTimeout => "body_timeout",
            Self::Envelope(_) => "malformed_envelope",
            Self::Crypto(CryptoError::InvalidSignature) => "invalid_signature",
            Self::Crypto(CryptoError::ReceiveIdMismatch { .. }) => "receiveid_mismatch",
            Self::Crypto(CryptoError::DecodeBase64) => "bad_base64",
            Self::Crypto(CryptoError::DecryptAes(_)) => "decrypt_failed",
            Self::Crypto(CryptoError::IllegalBuffer(_)) => "illegal_buffer",
            Self::Crypto(CryptoError::IllegalAesKey(_) | CryptoError::IllegalToken) => "bad_key",
            Self::Message(_) => "malformed_message",
            Self::Store(_) => "storage_unavailable",
        }
    }

    /// What the operator reads (in Chinese, like everything a person reads).
    fn message(&self) -> &'static str {
        match self {
            Self::UnknownEndpoint => "未配置该企业或应用的回调",
            Self::MalformedQuery => "查询参数格式错误",
            Self::MissingSignature => "缺少 msg_signature 签名",
            Self::BadParameter(_) => "缺少或错误的 timestamp / nonce / echostr 参数",
            Self::StaleTimestamp => "timestamp 超出允许的时间窗口",
            Self::TooLarge(_) => "请求体过大",
            Self::BodyRead => "无法读取请求体",
            Self::BodyTimeout => "请求体接收超时",
            Self::Envelope(_) => "请求体不是有效的回调报文",
            Self::Crypto(CryptoError::InvalidSignature) => "签名校验失败：请检查 Token",
            Self::Crypto(CryptoError::ReceiveIdMismatch { .. }) => {
                "receiveid 与企业 ID 不一致：请检查 EncodingAESKey 与回调地址中的企业 ID"
            }
            Self::Crypto(_) => "解密失败：请检查 EncodingAESKey",
            Self::Message(_) => "解密后的消息格式错误",
            Self::Store(_) => "存储暂不可用，请稍后重试",
        }
    }
}

impl IntoResponse for CallbackError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = format!("{}: {}\n", self.code(), self.message());
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            body,
        )
            .into_response()
    }
}

/// GET: URL verification. Answers the bare decrypted echostr.
pub async fn verify_url(
    State(state): State<Arc<AppState>>,
    Path((corp_id, app)): Path<(String, String)>,
    query: Result<Query<CallbackQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let started = Instant::now();
    let result = verify_url_inner(&state, &corp_id, &app, query).map(|msg| ("verify", msg));
    finish("verify", &corp_id, &app, started, result)
}

fn verify_url_inner(
    state: &AppState,
    corp_id: &str,
    app: &str,
    query: Result<Query<CallbackQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Vec<u8>, CallbackError> {
    let endpoint = state.endpoint(corp_id, app)?;
    let Query(q) = query.map_err(|_| CallbackError::MalformedQuery)?;
    let (signature, timestamp, nonce) = signature_params(state, &q)?;
    let mut echostr = Cow::Borrowed(
        q.echostr
            .as_deref()
            .filter(|e| !e.is_empty())
            .ok_or(CallbackError::BadParameter("echostr"))?,
    );
    if echostr.contains(' ') {
        // Decoded twice on the way (a proxy, then us): '+' became ' '. Base64 has no spaces.
        tracing::warn!(
            corp_id,
            app,
            "echostr contained spaces; treating them as '+' (double URL decoding upstream?)"
        );
        echostr = Cow::Owned(echostr.replace(' ', "+"));
    }
    endpoint
        .crypto
        .open(signature, timestamp, nonce, &echostr)
        .map_err(|e| crypto_error(endpoint, e))
}

/// POST: an event or a message. Stores it durably, then answers `success`.
pub async fn receive(
    State(state): State<Arc<AppState>>,
    Path((corp_id, app)): Path<(String, String)>,
    query: Result<Query<CallbackQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let result = receive_inner(&state, &corp_id, &app, query, &headers, body)
        .await
        .map(|stored| match stored {
            Stored::New => ("stored", "success"),
            Stored::Duplicate => ("duplicate", "success"),
        });
    finish("event", &corp_id, &app, started, result)
}

#[tracing::instrument(name = "callback", skip_all, fields(corp_id = %corp_id, app = %app))]
async fn receive_inner(
    state: &AppState,
    corp_id: &str,
    app: &str,
    query: Result<Query<CallbackQuery>, axum::extract::rejection::QueryRejection>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Stored, CallbackError> {
    let endpoint = state.endpoint(corp_id, app)?;
    let Query(q) = query.map_err(|_| CallbackError::MalformedQuery)?;
    let (signature, timestamp, nonce) = signature_params(state, &q)?;
    let body = read_body(
        headers,
        body,
        state.settings.max_body_bytes,
        Duration::from_millis(state.config.http.body_timeout_ms),
    )
    .await?;
    let envelope = parse_envelope(&body).map_err(CallbackError::Envelope)?;
    let plaintext = endpoint
        .crypto
        .open(signature, timestamp, nonce, &envelope.encrypt)
        .map_err(|e| crypto_error(endpoint, e))?;
    // XML forbids NUL, and PostgreSQL text cannot hold it: refuse it here, not in the database.
    if plaintext.contains(&0) {
        return Err(CallbackError::Message(EnvelopeError::NotUtf8));
    }
    let body =
        String::from_utf8(plaintext).map_err(|_| CallbackError::Message(EnvelopeError::NotUtf8))?;
    let header = parse_header_str(&body).map_err(CallbackError::Message)?;
    let dedup_key = inbox::dedup_key(&header, body.as_bytes());
    let agent_id = header
        .agent_id
        .or_else(|| envelope.agent_id.map(|a| a.into_owned()))
        .filter(|a| !a.is_empty());
    let row = NewInboxRow {
        corp_id: endpoint.corp_id.to_string(),
        app: endpoint.app.clone(),
        agent_id,
        dedup_key,
        msg_type: header.msg_type,
        event: header.event,
        change_type: header.change_type,
        create_time: header.create_time,
        received_at_ms: crate::platform::db::now_ms(),
        body,
    };
    let deadline = Duration::from_millis(state.settings.store_timeout_ms);
    match tokio::time::timeout(deadline, state.writer.store(row)).await {
        Ok(stored) => stored.map_err(CallbackError::Store),
        Err(_) => Err(CallbackError::Store(WriteError::Unavailable(format!(
            "not durable within {} ms",
            state.settings.store_timeout_ms
        )))),
    }
}

/// Reads the body, refusing a declared length over `limit` before reading anything, an
/// undeclared one as soon as it crosses `limit`, and one that takes longer than `deadline`.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    deadline: Duration,
) -> Result<Bytes, CallbackError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(CallbackError::TooLarge(limit));
    }
    let Some(read) = super::server::body_deadline(body, limit, deadline).await else {
        return Err(CallbackError::BodyTimeout);
    };
    read.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            CallbackError::TooLarge(limit)
        } else {
            CallbackError::BodyRead
        }
    })
}

/// Reads and checks `msg_signature`, `timestamp` and `nonce`, including the timestamp window.
fn signature_params<'q>(
    state: &AppState,
    q: &'q CallbackQuery,
) -> Result<(&'q str, &'q str, &'q str), CallbackError> {
    let signature = q
        .msg_signature
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or(CallbackError::MissingSignature)?;
    let timestamp = q
        .timestamp
        .as_deref()
        .filter(|t| !t.is_empty())
        .ok_or(CallbackError::BadParameter("timestamp"))?;
    let seconds: i64 = timestamp
        .parse()
        .map_err(|_| CallbackError::BadParameter("timestamp"))?;
    let nonce = q
        .nonce
        .as_deref()
        .filter(|n| !n.is_empty())
        .ok_or(CallbackError::BadParameter("nonce"))?;
    let window = state.settings.timestamp_window_secs;
    if window > 0 {
        let now = chrono::Utc::now().timestamp();
        if now.abs_diff(seconds) > window {
            return Err(CallbackError::StaleTimestamp);
        }
    }
    Ok((signature, timestamp, nonce))
}

fn crypto_error(endpoint: &AppEndpoint, e: CryptoError) -> CallbackError {
    if let CryptoError::ReceiveIdMismatch { found } = &e {
        // Not secret, and the one fact that makes a misrouted callback obvious.
        tracing::warn!(corp_id = %endpoint.corp_id, app = %endpoint.app, decrypted_receiveid = %found,
            "callback addressed to another corp: wrong EncodingAESKey or wrong corp in the URL");
    }
    CallbackError::Crypto(e)
}

/// Counts, times and logs one callback's outcome. A success carries its `outcome` label and the
/// plain-text body to answer with.
fn finish<B: IntoResponse>(
    kind: &'static str,
    corp_id: &str,
    app: &str,
    started: Instant,
    result: Result<(&'static str, B), CallbackError>,
) -> Response {
    match result {
        Ok((outcome, body)) => {
            metrics::counter!("scrm_callbacks_total", "outcome" => outcome).increment(1);
            metrics::histogram!("scrm_callback_duration_seconds")
                .record(started.elapsed().as_secs_f64());
            ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
        }
        Err(e) => {
            metrics::counter!("scrm_callbacks_total", "outcome" => e.code()).increment(1);
            if matches!(e, CallbackError::Store(_)) {
                tracing::error!(corp_id, app, kind, code = e.code(), error = %e, "callback not stored; WeCom will retry");
            } else {
                tracing::warn!(corp_id, app, kind, code = e.code(), error = %e, "callback refused");
            }
            e.into_response()
        }
    }
}
