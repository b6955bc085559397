//! Chat archive: health (no content), archived messages and media (every read is logged in the
//! read audit), undecryptable records and the read log. Compliance and admin only.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{Method, header};
use axum::response::IntoResponse as _;
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use super::schema::{array, int, nullable, object, string};
use super::{ApiFailure, ApiResult, Auth, Endpoint, PathParams, QueryParams, invalid, ok};
use crate::app::archive_pull;
use crate::auth::{Action, Principal};
use crate::domain::archive::read::{self, MessageFilter, Reader};
use crate::domain::archive::store;
use crate::http::AppState;

fn message_schema() -> Value {
    object(
        &[
            ("id", int("行 id")),
            ("seq", int("企业微信 seq")),
            ("msgid", string("消息 id")),
            ("action", string("send / recall / switch")),
            ("msgtype", string("消息类型（text、image、redpacket…）")),
            ("sender", string("发送者 id")),
            ("sender_kind", string("staff / customer / robot")),
            ("receivers", array(string("接收者 id"))),
            ("room_id", nullable(string("群聊 id，单聊为空"))),
            ("msg_time_ms", int("发送时间")),
            ("staff_id", nullable(string("单聊中的成员"))),
            ("external_userid", nullable(string("单聊中的客户"))),
            ("text", nullable(string("可扫描的文本"))),
            ("payload", object(&[], &[])),
            ("revoked_at_ms", nullable(int("撤回时间（撤回的消息保留）"))),
            ("revoked_by", nullable(string("撤回记录的 msgid"))),
        ],
        &["id", "msgid", "msgtype", "sender", "msg_time_ms"],
    )
}

/// This module's endpoints.
pub fn endpoints() -> Vec<Endpoint> {
    let status = object(
        &[
            ("corp_id", string("企业")),
            (
                "seq",
                int("已存到的 seq（之前的每条都已保存或记录为无法解密）"),
            ),
            ("newest_seen_seq", int("见到的最大 seq")),
            ("lag_seq", int("newest_seen_seq − seq")),
            (
                "newest_message_age_secs",
                nullable(int("最新已存消息距今秒数")),
            ),
            ("last_success_at_ms", nullable(int("最近一次成功拉取"))),
            ("last_error", nullable(string("最近的错误"))),
            ("worker_restarts", int("存档进程重启次数")),
            (
                "last_restart_reason",
                nullable(string("crash / hang / memory / start")),
            ),
            ("messages", int("已存消息")),
            ("undecryptable_open", int("无法解密且尚未解决的记录")),
            ("unscanned", int("尚未扫描的消息")),
            ("media_pending", int("待下载的媒体")),
            ("media_failed", int("下载失败的媒体")),
        ],
        &[
            "corp_id",
            "seq",
            "lag_seq",
            "worker_restarts",
            "undecryptable_open",
        ],
    );
    let undecryptable = object(
        &[
            ("seq", int("seq")),
            ("msgid", string("消息 id")),
            ("publickey_ver", int("加密公钥版本")),
            (
                "reason",
                string("unknown_key_version、bad_key、corrupt_key、corrupt_payload、not_utf8"),
            ),
            ("detail", string("说明")),
            ("attempts", int("尝试次数")),
            ("recorded_at_ms", int("记录时间")),
            ("resolved_at_ms", nullable(int("配置正确密钥后解密的时间"))),
        ],
        &["seq", "msgid", "reason"],
    );
    vec![
        Endpoint::new(
            Method::GET,
            "/archive/status",
            "会话存档状态：游标、延迟、错误、重启、无法解密数",
            get(status_of),
        )
        .tag("archive")
        .requires(Action::ReadArchive)
        .response(200, object(&[("corps", array(status))], &["corps"])),
        Endpoint::new(
            Method::GET,
            "/archive/messages",
            "存档消息（最新在前；每次读取都记入审计）",
            get(messages),
        )
        .tag("archive")
        .requires(Action::ReadArchive)
        .query("staff_id", string("成员"), "某成员的消息")
        .query("external_userid", string("客户"), "与某客户的消息")
        .query("room_id", string("群聊"), "某群的消息")
        .query("since_ms", int("不早于"), "按时间过滤")
        .query("until_ms", int("早于"), "按时间过滤")
        .query("before_id", int("分页：比该 id 小"), "分页")
        .query("limit", int("1–500，默认 100"), "条数")
        .response(
            200,
            object(&[("messages", array(message_schema()))], &["messages"]),
        ),
        Endpoint::new(
            Method::GET,
            "/archive/messages/{id}",
            "一条存档消息及其媒体（记入审计）",
            get(message),
        )
        .tag("archive")
        .requires(Action::ReadArchive)
        .response(
            200,
            object(
                &[
                    ("message", message_schema()),
                    ("media", array(object(&[], &[]))),
                ],
                &["message", "media"],
            ),
        ),
        Endpoint::new(
            Method::GET,
            "/archive/media/{id}",
            "下载存档媒体文件（记入审计）",
            get(media),
        )
        .tag("archive")
        .requires(Action::ReadArchive)
        .response(200, string("文件内容")),
        Endpoint::new(
            Method::GET,
            "/archive/undecryptable",
            "无法解密的记录及原因",
            get(undecryptable_list),
        )
        .tag("archive")
        .requires(Action::ReadArchive)
        .query("all", string("true：也列出已解决的"), "范围")
        .response(
            200,
            object(&[("records", array(undecryptable))], &["records"]),
        ),
        Endpoint::new(
            Method::GET,
            "/archive/reads",
            "谁在何时读了哪些存档内容",
            get(reads),
        )
        .tag("archive")
        .requires(Action::ManageSettings)
        .query("limit", int("1–1000，默认 100"), "条数")
        .response(
            200,
            object(&[("reads", array(object(&[], &[])))], &["reads"]),
        ),
    ]
}

/// The caller, for the read log.
fn reader(who: &Principal) -> Reader<'_> {
    Reader {
        actor: who.actor(),
        role: who.role.as_str(),
        corp_id: who.corp_id.as_str(),
    }
}

async fn status_of(State(state): State<Arc<AppState>>, Auth(who): Auth) -> ApiResult {
    let corps: Vec<_> = archive_pull::corp_status(&state.db, who.corp_id.as_str())
        .await?
        .into_iter()
        .collect();
    ok(json!({ "corps": corps }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MessagesQuery {
    staff_id: Option<String>,
    external_userid: Option<String>,
    room_id: Option<String>,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    before_id: Option<i64>,
    limit: Option<i64>,
}

fn render(m: read::MessageRow) -> Value {
    let receivers: Value = serde_json::from_str(&m.receivers).unwrap_or_else(|_| json!([]));
    let payload: Value = serde_json::from_str(&m.payload).unwrap_or(Value::Null);
    json!({
        "id": m.id, "seq": m.seq, "msgid": m.msgid, "action": m.action, "msgtype": m.msgtype,
        "sender": m.sender, "sender_kind": m.sender_kind, "receivers": receivers,
        "room_id": m.room_id, "msg_time_ms": m.msg_time_ms, "staff_id": m.staff_id,
        "external_userid": m.external_userid, "text": m.text, "payload": payload,
        "revoked_at_ms": m.revoked_at_ms, "revoked_by": m.revoked_by,
    })
}

async fn messages(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    QueryParams(q): QueryParams<MessagesQuery>,
) -> ApiResult {
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(invalid("limit", "1–500"));
    }
    let r = reader(&who);
    let filter = MessageFilter {
        staff_id: q.staff_id,
        external_userid: q.external_userid,
        room_id: q.room_id,
        since_ms: q.since_ms,
        until_ms: q.until_ms,
        before_id: q.before_id,
        limit,
    };
    let rows = read::messages(&state.db, &r, &filter).await?;
    ok(json!({ "messages": rows.into_iter().map(render).collect::<Vec<_>>() }))
}

async fn message(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    PathParams(id): PathParams<i64>,
) -> ApiResult {
    let r = reader(&who);
    let Some(m) = read::message(&state.db, &r, id).await? else {
        return Err(ApiFailure::NotFound("存档消息"));
    };
    let media = read::media_of(&state.db, who.corp_id.as_str(), &m.msgid).await?;
    let media: Vec<Value> = media
        .into_iter()
        .map(|x| {
            json!({"id": x.id, "kind": x.kind, "md5sum": x.md5sum, "size": x.size,
                   "file_name": x.file_name, "state": x.state, "error": x.error})
        })
        .collect();
    ok(json!({ "message": render(m), "media": media }))
}

async fn media(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    PathParams(id): PathParams<i64>,
) -> ApiResult {
    let r = reader(&who);
    let Some(m) = read::media_file(&state.db, &r, id).await? else {
        return Err(ApiFailure::NotFound("存档媒体"));
    };
    let Some(path) = m.path.filter(|_| m.state == "done") else {
        return Err(ApiFailure::Conflict(format!(
            "媒体尚未下载（状态 {}）",
            m.state
        )));
    };
    // Streamed from disk in 64 KiB reads (a file may be 200 MB), at most MAX_DOWNLOADS at once.
    let Ok(permit) = Arc::clone(&DOWNLOADS).try_acquire_owned() else {
        return Err(ApiFailure::Busy(format!(
            "同时下载的媒体已达 {MAX_DOWNLOADS} 个 / {MAX_DOWNLOADS} downloads in progress"
        )));
    };
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| ApiFailure::Unavailable(format!("媒体文件不可读: {e}")))?;
    let length = file.metadata().await.map(|m| m.len()).ok();
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
        Permitted {
            file,
            _permit: permit,
        },
        64 * 1024,
    ));
    let name = m
        .file_name
        .unwrap_or_else(|| format!("{}-{}", m.kind, m.id));
    // An ASCII fallback and the real (often Chinese) name per RFC 6266 / 5987.
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let disposition = format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}");
    let mut response = (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response();
    if let Some(length) = length
        && let Ok(value) = header::HeaderValue::from_str(&length.to_string())
    {
        response.headers_mut().insert(header::CONTENT_LENGTH, value);
    }
    Ok(response)
}

/// Media downloads streaming at once (each holds a file and a connection, not the file's bytes).
const MAX_DOWNLOADS: usize = 16;
static DOWNLOADS: std::sync::LazyLock<Arc<tokio::sync::Semaphore>> =
    std::sync::LazyLock::new(|| Arc::new(tokio::sync::Semaphore::new(MAX_DOWNLOADS)));

/// A file being sent, with its place among the downloads (given back when the body is dropped:
/// sent, or the client went away).
struct Permitted {
    file: tokio::fs::File,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl tokio::io::AsyncRead for Permitted {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.file).poll_read(cx, buf)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UndecryptableQuery {
    all: Option<bool>,
}

async fn undecryptable_list(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    QueryParams(q): QueryParams<UndecryptableQuery>,
) -> ApiResult {
    let rows = store::undecryptable(
        &state.db,
        who.corp_id.as_str(),
        !q.all.unwrap_or(false),
        500,
    )
    .await?;
    ok(json!({ "records": rows }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReadsQuery {
    limit: Option<i64>,
}

async fn reads(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    QueryParams(q): QueryParams<ReadsQuery>,
) -> ApiResult {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(invalid("limit", "1–1000"));
    }
    ok(json!({ "reads": read::reads(&state.db, who.corp_id.as_str(), limit).await? }))
}
