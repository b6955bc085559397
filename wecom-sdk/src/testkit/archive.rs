//! The chat archive's backend (会话内容存档, `shared/wecom-protocol.md` §5): what WeCom's closed
//! library talks to, played for the stand-in library (`wecom-sdk/finance-standin`) over the
//! private wire format of [`crate::archive::standin`]:
//!
//! * `POST /finance/chatdata` ([`ChatDataRequest`] → [`ChatDataResponse`]) for `GetChatData`;
//! * `POST /finance/media` ([`MediaRequest`] → [`MediaResponse`]) for `GetMediaData`.
//!
//! They are not under `/cgi-bin/`: they stand for the library's own backend, not the server API
//! (no token, not in [`EmulatorState::calls`], no API faults or limits; 503 while
//! [down](EmulatorState::set_down)).
//!
//! Per corp: the 会话内容存档 secret, the uploaded public keys by version, the records by seq
//! (1, 2, 3…), media files, and scripted [`ArchiveFault`]s. Records are kept as their decrypted
//! JSON and sealed when served, with a fresh per-record key each time: `encrypt_random_key` is
//! the key text wrapped (RSA PKCS#1 v1.5) with the public key of the record's version,
//! `encrypt_chat_msg` the JSON sealed under it ([`standin::seal`]). A record whose version has
//! no key on the emulator gets 256 random bytes as `encrypt_random_key`.
//!
//! Assumptions where WeCom publishes nothing: a wrong corp id or secret is errcode 40001 in the
//! body for `GetChatData` and ret 10004 for `GetMediaData`; a malformed `indexbuf` is ret 10000;
//! `outindexbuf` names the next chunk's range (`Range:bytes=START-END`), or the last chunk's
//! own range once finished; records older than the 5-day retention (by their `msgtime`, on the
//! emulator clock) are skipped silently, as if they were never there.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use md5::{Digest as _, Md5};
use serde_json::json;

use super::api::{errmsg_text, error_json};
use super::handlers::ApiErr;
use super::state::{EmulatorState, random_id};
use crate::archive::keys::{KeyError, PublicKey};
use crate::archive::standin::{
    self, ChatDataRequest, ChatDataResponse, Directive, MediaRequest, MediaResponse,
};
use crate::archive::{ChatDataBatch, EncryptedRecord};
use crate::secret::Secret;

/// Records are served for this long after their `msgtime` (§5.0: 5 days).
pub(crate) const RETENTION_MS: i64 = 5 * 86_400 * 1000;

/// Media chunks are at most this long (§5.1: 512 KB).
pub(crate) const MEDIA_CHUNK: usize = 512 * 1024;

/// The most records one `GetChatData` serves.
const MAX_LIMIT: u32 = 1000;

/// What the next archive calls of a corp get ([`EmulatorState::archive_fault`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFault {
    /// `GetChatData` crashes the calling process (a real SIGSEGV in the stand-in).
    Crash,
    /// `GetChatData` never returns.
    Hang,
    /// `GetChatData` leaks this many bytes (every page touched), then answers normally.
    Leak {
        /// How much.
        bytes: u64,
    },
    /// `GetChatData` returns this code (e.g. 10001 network error).
    Ret(i32),
    /// `GetChatData` returns 0 with `{"errcode":N,"errmsg":…}` as its JSON (e.g. 301042).
    Errcode(i64),
    /// `GetChatData` prints to standard output (as vendor libraries do), then answers normally.
    Print,
    /// `GetChatData` answers normally but every record of the call gets a damaged
    /// `encrypt_chat_msg` (`DecryptData` then fails with 10006).
    CorruptPayload,
    /// `GetMediaData` crashes the calling process.
    MediaCrash,
    /// `GetMediaData` returns this code.
    MediaRet(i32),
    /// `GetMediaData` answers 0 with no data, the same index and `is_finish = false`: a library
    /// that makes no progress.
    MediaStall,
    /// `GetMediaData` answers 0 with a chunk that is not base64.
    MediaGarbage,
}

impl ArchiveFault {
    fn is_media(self) -> bool {
        matches!(
            self,
            Self::MediaCrash | Self::MediaRet(_) | Self::MediaStall | Self::MediaGarbage
        )
    }
}

/// A media file the archive serves ([`EmulatorState::archive_add_media`]): put these into a
/// message's `image`/`file`/… payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveMedia {
    /// The id `GetMediaData` takes.
    pub sdkfileid: String,
    /// MD5 of the bytes, lowercase hex (as in a message's `md5sum`).
    pub md5sum: String,
    /// Length in bytes.
    pub size: u64,
}

/// One corp's archive.
#[derive(Default)]
pub(crate) struct CorpArchive {
    secret: Option<Secret<String>>,
    keys: BTreeMap<u32, Arc<PublicKey>>,
    /// The version new records use: the last key added.
    current_version: Option<u32>,
    /// Seq ascending, contiguous from 1.
    segments: Vec<Segment>,
    newest_seq: u64,
    faults: Vec<(ArchiveFault, u32)>,
    media: HashMap<String, Arc<[u8]>>,
    calls: u64,
    media_calls: u64,
}

/// Records: one kept as JSON, or a run of synthetic ones made up when served.
enum Segment {
    One(Stored),
    Synthetic {
        first_seq: u64,
        count: u64,
        /// `msgtime` of the run's last record; each earlier one is 1 ms earlier.
        last_ms: i64,
        publickey_ver: u32,
    },
}

struct Stored {
    seq: u64,
    msgid: String,
    msgtime_ms: i64,
    publickey_ver: u32,
    json: Arc<str>,
}

impl Segment {
    fn last_seq(&self) -> u64 {
        match self {
            Self::One(r) => r.seq,
            Self::Synthetic {
                first_seq, count, ..
            } => first_seq + count.saturating_sub(1),
        }
    }
}

/// A record to seal: everything but the crypto.
struct Plain {
    seq: u64,
    msgid: String,
    publickey_ver: u32,
    json: Arc<str>,
    key: Option<Arc<PublicKey>>,
}

impl CorpArchive {
    fn authorised(&self, secret: &str) -> bool {
        self.secret
            .as_ref()
            .is_some_and(|s| s.expose().as_bytes() == secret.as_bytes())
    }

    fn take_fault(&mut self, media: bool) -> Option<ArchiveFault> {
        let i = self
            .faults
            .iter()
            .position(|(f, times)| *times > 0 && f.is_media() == media)?;
        let (fault, times) = self.faults.get_mut(i)?;
        let fault = *fault;
        *times -= 1;
        if *times == 0 {
            self.faults.remove(i);
        }
        Some(fault)
    }

    fn push_segment(&mut self, segment: Segment) {
        self.newest_seq = segment.last_seq();
        self.segments.push(segment);
    }

    /// Up to `limit` live records after `after`, oldest first.
    fn plan(&self, after: u64, limit: u32, now_ms: i64) -> Vec<Plain> {
        let cutoff = now_ms.saturating_sub(RETENTION_MS);
        let limit = usize::try_from(limit.min(MAX_LIMIT)).unwrap_or(1000);
        let mut out = Vec::with_capacity(limit.min(1024));
        let start = self.segments.partition_point(|s| s.last_seq() <= after);
        for segment in self.segments.get(start..).unwrap_or_default() {
            if out.len() >= limit {
                break;
            }
            match segment {
                Segment::One(r) => {
                    if r.seq > after && r.msgtime_ms >= cutoff {
                        out.push(Plain {
                            seq: r.seq,
                            msgid: r.msgid.clone(),
                            publickey_ver: r.publickey_ver,
                            json: Arc::clone(&r.json),
                            key: self.keys.get(&r.publickey_ver).cloned(),
                        });
                    }
                }
                Segment::Synthetic {
                    first_seq,
                    count,
                    last_ms,
                    publickey_ver,
                } => {
                    let last_seq = first_seq + count.saturating_sub(1);
                    // msgtime(seq) = last_ms - (last_seq - seq) ≥ cutoff
                    let live_from = u64::try_from(last_ms.saturating_sub(cutoff))
                        .map_or(u64::MAX, |d| last_seq.saturating_sub(d));
                    let from = (after + 1).max(*first_seq).max(live_from);
                    let key = self.keys.get(publickey_ver).cloned();
                    let mut seq = from;
                    while seq <= last_seq && out.len() < limit {
                        let gap = i64::try_from(last_seq - seq).unwrap_or(i64::MAX);
                        let msgtime = last_ms.saturating_sub(gap);
                        let (msgid, json) = synthetic_message(seq, msgtime);
                        out.push(Plain {
                            seq,
                            msgid,
                            publickey_ver: *publickey_ver,
                            json: Arc::from(json),
                            key: key.clone(),
                        });
                        seq += 1;
                    }
                }
            }
        }
        out
    }
}

/// splitmix64: the synthetic messages' deterministic randomness.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const SALES_LINES: [&str; 12] = [
    "您好，我是您的专属顾问，有什么可以帮您？",
    "这款产品目前有优惠活动，本周下单享九折。",
    "合同我已经发到您的邮箱了，请查收。",
    "好的，明天上午十点给您回电。",
    "发票会在付款后三个工作日内开出。",
    "请问您方便什么时候来门店体验？",
    "这个型号有现货，今天下单明天发货。",
    "收到，我跟经理确认一下价格再回复您。",
    "售后电话在说明书背面，全国联保。",
    "谢谢您的信任，有问题随时联系我。",
    "我们公司账户信息在合同第二页。",
    "订单已经提交，物流单号稍后发您。",
];

/// The synthetic text message of `seq`: (msgid, JSON). About 3 in 100 ask for a private
/// transfer (`私下转账给我`), 3 in 100 give a mobile number; the rest is plain sales chat.
/// Conversations are 1:1 between one of 20 members (`sales00`…`sales19`) and a customer who
/// changes every 10 messages.
pub(crate) fn synthetic_message(seq: u64, msgtime_ms: i64) -> (String, String) {
    let h = mix(seq);
    let sales = format!("sales{:02}", h % 20);
    let customer = format!("wmSynth{:016x}", mix(seq / 10));
    let content = match (h >> 8) % 100 {
        0..=2 => "这个价格公司批不下来，私下转账给我，我给你走内部价。".to_owned(),
        3..=5 => format!(
            "加我私人微信吧，我手机号 13{:09}",
            (h >> 16) % 1_000_000_000
        ),
        _ => SALES_LINES
            .get(usize::try_from((h >> 24) % 12).unwrap_or(0))
            .copied()
            .unwrap_or("好的")
            .to_owned(),
    };
    let (from, to) = if (h >> 40) & 1 == 0 {
        (sales, customer)
    } else {
        (customer, sales)
    };
    let msgid = format!("synth{seq}_{}_external", msgtime_ms / 1000);
    let json = json!({
        "msgid": msgid,
        "action": "send",
        "from": from,
        "tolist": [to],
        "roomid": "",
        "msgtime": msgtime_ms,
        "msgtype": "text",
        "text": {"content": content},
    })
    .to_string();
    (msgid, json)
}

/// `msgid` and `msgtime` of a decrypted message, read leniently: raw control bytes (which
/// WeCom's JSON may carry inside strings) are blanked for this look only.
fn lenient_fields(json: &str) -> (Option<String>, Option<i64>) {
    let cleaned: Vec<u8> = json
        .bytes()
        .map(|b| if b < 0x20 { b' ' } else { b })
        .collect();
    match serde_json::from_slice::<serde_json::Value>(&cleaned) {
        Ok(v) => (
            v.get("msgid")
                .and_then(|m| m.as_str())
                .filter(|m| !m.is_empty())
                .map(str::to_owned),
            v.get("msgtime").and_then(serde_json::Value::as_i64),
        ),
        Err(_) => (None, None),
    }
}

/// A msgid like WeCom's numeric kind: 19 digits, `_`, Unix seconds.
fn random_msgid(now_ms: i64) -> String {
    let n = rand::random_range(1_000_000_000_000_000_000_u64..10_000_000_000_000_000_000);
    format!("{n}_{}", now_ms / 1000)
}

/// Seals one record. `corrupt` damages its ciphertext (the tag then fails).
fn seal(plain: Plain, corrupt: bool) -> EncryptedRecord {
    let key_text = standin::random_key_text();
    let encrypt_random_key = plain
        .key
        .as_ref()
        .and_then(|k| k.wrap(&key_text).ok())
        .unwrap_or_else(|| {
            let junk: Vec<u8> = (0..256).map(|_| rand::random::<u8>()).collect();
            STANDARD.encode(junk)
        });
    let mut encrypt_chat_msg = standin::seal(&key_text, plain.json.as_bytes());
    if corrupt && let Ok(mut raw) = STANDARD.decode(encrypt_chat_msg.as_bytes()) {
        // A byte of the ciphertext, past the 16-byte IV.
        if let Some(b) = raw.get_mut(20) {
            *b ^= 0x5a;
        }
        encrypt_chat_msg = STANDARD.encode(raw);
    }
    EncryptedRecord {
        seq: plain.seq,
        msgid: plain.msgid,
        publickey_ver: plain.publickey_ver,
        encrypt_random_key,
        encrypt_chat_msg,
    }
}

/// errmsg texts of the archive's server-side codes (§5.1), else the API's.
fn archive_errmsg(code: i64) -> &'static str {
    match code {
        301042 => "ip not in whitelist",
        301048 => "sdkfileid not exist or expired",
        301052 => "msgaudit service expired",
        301053 => "msgaudit service not open",
        301058 => "request too large, please reduce limit",
        _ => errmsg_text(code),
    }
}

fn error_body(code: i64, text: &str) -> String {
    error_json(&ApiErr::with(code, text)).to_string()
}

fn json_response<T: serde::Serialize>(value: &T) -> Response {
    match serde_json::to_string(value) {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn unavailable() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "service unavailable").into_response()
}

fn bad_request(what: &str) -> Response {
    (StatusCode::BAD_REQUEST, what.to_owned()).into_response()
}

fn directive_of(fault: ArchiveFault) -> Option<Directive> {
    match fault {
        ArchiveFault::Crash | ArchiveFault::MediaCrash => Some(Directive::Crash),
        ArchiveFault::Hang => Some(Directive::Hang),
        ArchiveFault::Leak { bytes } => Some(Directive::Leak { bytes }),
        ArchiveFault::Ret(ret) | ArchiveFault::MediaRet(ret) => Some(Directive::Ret { ret }),
        ArchiveFault::Print => Some(Directive::Print),
        ArchiveFault::Errcode(_)
        | ArchiveFault::CorruptPayload
        | ArchiveFault::MediaStall
        | ArchiveFault::MediaGarbage => None,
    }
}

/// What one `GetChatData` call gets, decided under the lock.
enum ChatPlan {
    Down,
    Directive(Directive),
    Body(String),
    Records {
        plain: Vec<Plain>,
        corrupt: bool,
        leak: Option<Directive>,
    },
}

/// `POST /finance/chatdata`.
pub(crate) async fn chatdata(State(state): State<Arc<EmulatorState>>, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<ChatDataRequest>(&body) else {
        return bad_request("not a chatdata request");
    };
    let plan = state.archive_plan(&request);
    let (plain, corrupt, directive) = match plan {
        ChatPlan::Down => return unavailable(),
        ChatPlan::Directive(d) => {
            return json_response(&ChatDataResponse {
                directive: Some(d),
                body: String::new(),
            });
        }
        ChatPlan::Body(body) => {
            return json_response(&ChatDataResponse {
                directive: None,
                body,
            });
        }
        ChatPlan::Records {
            plain,
            corrupt,
            leak,
        } => (plain, corrupt, leak),
    };
    // RSA for up to 1000 records: off the async workers.
    let sealed = tokio::task::spawn_blocking(move || {
        let chatdata = plain.into_iter().map(|p| seal(p, corrupt)).collect();
        serde_json::to_string(&ChatDataBatch {
            errcode: 0,
            errmsg: "ok".to_owned(),
            chatdata,
        })
    })
    .await;
    match sealed {
        Ok(Ok(body)) => json_response(&ChatDataResponse { directive, body }),
        _ => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// `POST /finance/media`.
pub(crate) async fn media(State(state): State<Arc<EmulatorState>>, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<MediaRequest>(&body) else {
        return bad_request("not a media request");
    };
    match state.archive_media_chunk(&request) {
        Some(answer) => json_response(&answer),
        None => unavailable(),
    }
}

/// `Range:bytes=START-END` → START; `""` → 0.
fn parse_index(index: &str) -> Option<usize> {
    if index.is_empty() {
        return Some(0);
    }
    let range = index.trim().strip_prefix("Range:bytes=")?;
    let (start, _end) = range.split_once('-')?;
    start.trim().parse().ok()
}

fn media_ret(ret: i32) -> MediaResponse {
    MediaResponse {
        directive: None,
        ret,
        outindexbuf: String::new(),
        data_b64: String::new(),
        is_finish: false,
    }
}

/// Lowercase hex of MD5.
fn md5_hex(bytes: &[u8]) -> String {
    let digest = Md5::digest(bytes);
    let mut out = String::with_capacity(32);
    for b in digest.iter() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

impl EmulatorState {
    /// The corp's 会话内容存档 secret, which `Init` of the stand-in library passes on: calls
    /// with another secret get errcode 40001.
    pub fn set_archive_secret(&self, corp_id: &str, secret: &str) {
        let mut inner = self.lock();
        inner.corp_mut(corp_id);
        inner.archive_mut(corp_id).secret = Some(Secret::new(secret.to_owned()));
    }

    /// Registers (or replaces) the corp's uploaded 消息加密公钥 of `version` (PEM, `BEGIN PUBLIC
    /// KEY`). The last key added becomes the version new records use.
    pub fn add_archive_public_key(
        &self,
        corp_id: &str,
        version: u32,
        pem: &str,
    ) -> Result<(), KeyError> {
        let key = PublicKey::from_pem(pem)?;
        let mut inner = self.lock();
        inner.corp_mut(corp_id);
        let archive = inner.archive_mut(corp_id);
        archive.keys.insert(version, Arc::new(key));
        archive.current_version = Some(version);
        Ok(())
    }

    /// Appends a record: `json` is the decrypted message (§5.4) verbatim and may hold raw
    /// control bytes. Its outer msgid is the JSON's `msgid` (read leniently; generated if
    /// absent) and its retention runs from the JSON's `msgtime` (else now). `publickey_ver`
    /// `None` means the current key's version (0 if there is none). Returns the record's seq
    /// (1, 2, 3… per corp) and pushes `msgaudit_notify` (throttled to one per 15 s).
    pub fn archive_push(&self, corp_id: &str, json: &str, publickey_ver: Option<u32>) -> u64 {
        let now_ms = self.now_ms();
        let (msgid, msgtime) = lenient_fields(json);
        let seq = {
            let mut inner = self.lock();
            inner.corp_mut(corp_id);
            let archive = inner.archive_mut(corp_id);
            let seq = archive.newest_seq + 1;
            let publickey_ver = publickey_ver.or(archive.current_version).unwrap_or(0);
            archive.push_segment(Segment::One(Stored {
                seq,
                msgid: msgid.unwrap_or_else(|| random_msgid(now_ms)),
                msgtime_ms: msgtime.unwrap_or(now_ms),
                publickey_ver,
                json: Arc::from(json),
            }));
            seq
        };
        let _ = self.msgaudit_notify(corp_id);
        seq
    }

    /// A text message in WeCom's shape (`action` send, `msgtime` = emulator clock in ms, a
    /// random msgid, `_external` appended when a party is external), pushed with
    /// [`EmulatorState::archive_push`]. `roomid` is `""` for a 1:1 chat. Returns (seq, msgid).
    pub fn archive_text(
        &self,
        corp_id: &str,
        from: &str,
        tolist: &[&str],
        roomid: &str,
        content: &str,
    ) -> (u64, String) {
        let now_ms = self.now_ms();
        let external = std::iter::once(from)
            .chain(tolist.iter().copied())
            .any(|id| id.starts_with("wm") || id.starts_with("wo"));
        let mut msgid = random_msgid(now_ms);
        if external {
            msgid.push_str("_external");
        }
        let json = json!({
            "msgid": msgid,
            "action": "send",
            "from": from,
            "tolist": tolist,
            "roomid": roomid,
            "msgtime": now_ms,
            "msgtype": "text",
            "text": {"content": content},
        })
        .to_string();
        let seq = self.archive_push(corp_id, &json, None);
        (seq, msgid)
    }

    /// Appends `count` synthetic text messages (for benchmarks: nothing is kept per message).
    /// Their content follows from their seq alone: mostly plain sales chat, about 3 in 100 ask
    /// for a private transfer (`私下转账给我`) and 3 in 100 give a mobile number. Their
    /// `msgtime`s end now, 1 ms apart. Pushes `msgaudit_notify` like
    /// [`EmulatorState::archive_push`].
    pub fn archive_synthetic(&self, corp_id: &str, count: u64) {
        if count == 0 {
            return;
        }
        let now_ms = self.now_ms();
        {
            let mut inner = self.lock();
            inner.corp_mut(corp_id);
            let archive = inner.archive_mut(corp_id);
            let publickey_ver = archive.current_version.unwrap_or(0);
            let first_seq = archive.newest_seq + 1;
            archive.push_segment(Segment::Synthetic {
                first_seq,
                count,
                last_ms: now_ms,
                publickey_ver,
            });
        }
        let _ = self.msgaudit_notify(corp_id);
    }

    /// Stores a media file for `GetMediaData` (served in 512 KiB chunks).
    pub fn archive_add_media(&self, corp_id: &str, bytes: Vec<u8>) -> ArchiveMedia {
        let md5sum = md5_hex(&bytes);
        let size = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        let mut inner = self.lock();
        inner.corp_mut(corp_id);
        let archive = inner.archive_mut(corp_id);
        let sdkfileid = loop {
            let id = format!("CtYKJDM{}", random_id("", 120));
            if !archive.media.contains_key(&id) {
                break id;
            }
        };
        archive.media.insert(sdkfileid.clone(), Arc::from(bytes));
        ArchiveMedia {
            sdkfileid,
            md5sum,
            size,
        }
    }

    /// Applies `fault` to the corp's next `times` `GetChatData` calls (`GetMediaData` calls for
    /// the `Media*` kinds). Faults of one kind of call are used in the order they were queued.
    pub fn archive_fault(&self, corp_id: &str, fault: ArchiveFault, times: u32) {
        if times == 0 {
            return;
        }
        let mut inner = self.lock();
        inner.corp_mut(corp_id);
        inner.archive_mut(corp_id).faults.push((fault, times));
    }

    /// `GetChatData` calls the corp's archive received (faulted and refused ones included).
    pub fn archive_calls(&self, corp_id: &str) -> u64 {
        self.lock().archives.get(corp_id).map_or(0, |a| a.calls)
    }

    /// `GetMediaData` calls the corp's archive received (faulted and refused ones included).
    pub fn archive_media_calls(&self, corp_id: &str) -> u64 {
        self.lock()
            .archives
            .get(corp_id)
            .map_or(0, |a| a.media_calls)
    }

    /// The seq of the corp's newest record (0 when there is none).
    pub fn archive_newest_seq(&self, corp_id: &str) -> u64 {
        self.lock()
            .archives
            .get(corp_id)
            .map_or(0, |a| a.newest_seq)
    }

    /// Decides one `GetChatData` call under the lock (sealing happens outside it).
    fn archive_plan(&self, request: &ChatDataRequest) -> ChatPlan {
        let now_ms = self.now_ms();
        let mut inner = self.lock();
        if inner.down {
            return ChatPlan::Down;
        }
        let Some(archive) = inner.archives.get_mut(&request.corpid) else {
            return ChatPlan::Body(error_body(40001, "invalid secret"));
        };
        archive.calls += 1;
        let fault = archive.take_fault(false);
        let mut corrupt = false;
        let mut leak = None;
        match fault {
            Some(ArchiveFault::Errcode(code)) => {
                return ChatPlan::Body(error_body(code, archive_errmsg(code)));
            }
            Some(ArchiveFault::CorruptPayload) => corrupt = true,
            // Acted out by the library, which then answers normally.
            Some(f @ (ArchiveFault::Leak { .. } | ArchiveFault::Print)) => leak = directive_of(f),
            Some(f) => {
                if let Some(d) = directive_of(f) {
                    return ChatPlan::Directive(d);
                }
            }
            None => {}
        }
        if !archive.authorised(&request.secret) {
            return ChatPlan::Body(error_body(40001, "invalid secret"));
        }
        ChatPlan::Records {
            plain: archive.plan(request.seq, request.limit, now_ms),
            corrupt,
            leak,
        }
    }

    /// Answers one `GetMediaData` call; `None` while down.
    fn archive_media_chunk(&self, request: &MediaRequest) -> Option<MediaResponse> {
        let file = {
            let mut inner = self.lock();
            if inner.down {
                return None;
            }
            let Some(archive) = inner.archives.get_mut(&request.corpid) else {
                return Some(media_ret(10004));
            };
            archive.media_calls += 1;
            match archive.take_fault(true) {
                Some(ArchiveFault::MediaStall) => {
                    return Some(MediaResponse {
                        outindexbuf: request.indexbuf.clone(),
                        ..media_ret(0)
                    });
                }
                Some(ArchiveFault::MediaGarbage) => {
                    return Some(MediaResponse {
                        outindexbuf: "Range:bytes=0-1".to_owned(),
                        data_b64: "@@not base64@@".to_owned(),
                        ..media_ret(0)
                    });
                }
                Some(fault) => {
                    if let Some(directive) = directive_of(fault) {
                        return Some(MediaResponse {
                            directive: Some(directive),
                            ..media_ret(0)
                        });
                    }
                }
                None => {}
            }
            if !archive.authorised(&request.secret) {
                return Some(media_ret(10004));
            }
            match archive.media.get(&request.sdkfileid) {
                Some(file) => Arc::clone(file),
                None => return Some(media_ret(10005)),
            }
        };
        let Some(start) = parse_index(&request.indexbuf).filter(|s| *s <= file.len()) else {
            return Some(media_ret(10000));
        };
        let end = start.saturating_add(MEDIA_CHUNK).min(file.len());
        let finished = end == file.len();
        let outindexbuf = if finished {
            format!("Range:bytes={start}-{}", end.saturating_sub(1))
        } else {
            let next_end = end.saturating_add(MEDIA_CHUNK).min(file.len());
            format!("Range:bytes={end}-{}", next_end - 1)
        };
        Some(MediaResponse {
            directive: None,
            ret: 0,
            outindexbuf,
            data_b64: STANDARD.encode(file.get(start..end).unwrap_or_default()),
            is_finish: finished,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        reason = "a test fails loudly"
    )]
    use super::*;

    #[test]
    fn synthetic_messages_are_deterministic_and_mixed() {
        let (id, json) = synthetic_message(42, 1_700_000_000_000);
        assert_eq!(
            synthetic_message(42, 1_700_000_000_000),
            (id.clone(), json.clone())
        );
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["msgid"], id.as_str());
        assert_eq!(v["msgtype"], "text");
        let texts: Vec<String> = (1..=1000).map(|s| synthetic_message(s, 0).1).collect();
        let transfer = texts.iter().filter(|t| t.contains("私下转账给我")).count();
        let phone = texts.iter().filter(|t| t.contains("手机号 13")).count();
        assert!((10..=60).contains(&transfer), "{transfer}");
        assert!((10..=60).contains(&phone), "{phone}");
    }

    #[test]
    fn lenient_fields_survive_control_bytes() {
        let json = "{\"msgid\":\"abc\",\"msgtime\":123,\"text\":{\"content\":\"a\nb\u{1}\"}}";
        assert_eq!(lenient_fields(json), (Some("abc".into()), Some(123)));
        assert_eq!(lenient_fields("not json"), (None, None));
    }

    #[test]
    fn media_index_parses() {
        assert_eq!(parse_index(""), Some(0));
        assert_eq!(parse_index("Range:bytes=524288-1048575"), Some(524_288));
        assert_eq!(parse_index("bytes=1-2"), None);
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
    }

    #[test]
    fn plan_skips_expired_and_honours_after_and_limit() {
        let mut a = CorpArchive::default();
        let now = 10 * RETENTION_MS;
        for (seq, t) in [(1, now - RETENTION_MS - 1), (2, now - 5), (3, now)] {
            a.push_segment(Segment::One(Stored {
                seq,
                msgid: format!("m{seq}"),
                msgtime_ms: t,
                publickey_ver: 1,
                json: Arc::from("{}"),
            }));
        }
        a.push_segment(Segment::Synthetic {
            first_seq: 4,
            count: 10,
            last_ms: now,
            publickey_ver: 1,
        });
        let seqs = |after, limit| -> Vec<u64> {
            a.plan(after, limit, now).iter().map(|p| p.seq).collect()
        };
        assert_eq!(seqs(0, 3), vec![2, 3, 4]);
        assert_eq!(seqs(2, 2), vec![3, 4]);
        assert_eq!(seqs(12, 10), vec![13]);
        assert_eq!(seqs(13, 10), Vec::<u64>::new());
        assert_eq!(a.newest_seq, 13);
        // The run's oldest records expire first, 1 ms apart: msgtime(seq) = now - (13 - seq).
        assert_eq!(a.plan(3, 1, now + RETENTION_MS - 6)[0].seq, 7);
        assert!(a.plan(0, 10, now + RETENTION_MS + 1).is_empty());
    }
}
