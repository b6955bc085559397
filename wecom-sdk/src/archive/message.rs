//! The decrypted message JSON of §5.4 (`shared/wecom-protocol.md`), typed per `msgtype`, unknown
//! types kept.
//!
//! [`ArchivedMessage::parse`] takes what `DecryptData` returned and:
//!
//! 1. runs [`sanitize_json`] on it, because WeCom's JSON can carry raw control bytes (an unescaped
//!    line break in `text.content`) that strict parsers refuse; they become `\u00XX` escapes, so
//!    the text keeps its line breaks;
//! 2. parses the result into a [`serde_json::Value`] kept whole as [`ArchivedMessage::raw`], the
//!    system of record;
//! 3. reads the common header (`action` first: a `switch` record has `user` and `time` and no
//!    `msgtype`), then the payload of the `msgtype` into a [`Content`].
//!
//! Only bytes that are not a JSON object, or an object without `msgid`, are errors. Everything else
//! degrades: a missing field is its default (`""`, `0`, empty list), numbers may come as numeric
//! strings, an unknown `msgtype` is [`Content::Unknown`], and a JSON-in-a-string (`mixed` and
//! `chatrecord` items) that does not parse is [`Content::Unknown`] holding the string.
//!
//! ```
//! use wecom_sdk::archive::message::{ArchivedMessage, Content, SenderKind};
//!
//! let bytes = b"{\"msgid\":\"m1\",\"action\":\"send\",\"from\":\"wmAbc\",\"tolist\":[\"zhangsan\"],\
//!     \"roomid\":\"\",\"msgtime\":1700000000000,\"msgtype\":\"text\",\
//!     \"text\":{\"content\":\"line one\nline two\"}}";
//! let msg = ArchivedMessage::parse(bytes)?;
//! assert_eq!(msg.content, Content::Text { content: "line one\nline two".into() });
//! assert_eq!(msg.sender_kind(), SenderKind::External);
//! assert_eq!(msg.scan_texts(), vec!["line one\nline two".to_owned()]);
//! # Ok::<(), wecom_sdk::archive::message::MessageError>(())
//! ```

use std::borrow::Cow;

use serde_json::{Map, Value};

/// How deep `mixed` / `chatrecord` items may nest (each level is a JSON string inside a JSON
/// string). Deeper items are [`Content::Unknown`]; real records nest two or three levels.
pub const MAX_NESTING: usize = 8;

/// Rewrites raw bytes < 0x20 inside JSON string values into `\u00XX` escapes and drops them outside
/// strings, where they can only be whitespace (`\t`, `\n` and `\r` outside strings are valid
/// whitespace and are kept as they are).
///
/// The string state follows backslash escapes, so `\"` and `\\` inside a string do not end or
/// confuse it. A raw control byte right after a backslash (an escape of nothing valid) becomes an
/// escaped backslash followed by the escaped byte, so both characters survive.
///
/// Returns [`Cow::Borrowed`] when nothing needed changing (always the case for valid JSON).
pub fn sanitize_json(raw: &[u8]) -> Cow<'_, [u8]> {
    enum Step {
        Keep,
        Drop,
        Escape,
        EscapeAfterBackslash,
    }
    let mut out: Option<Vec<u8>> = None;
    let mut in_string = false;
    let mut escaped = false;
    for (i, &b) in raw.iter().enumerate() {
        let step = if in_string {
            if escaped {
                escaped = false;
                if b < 0x20 {
                    Step::EscapeAfterBackslash
                } else {
                    Step::Keep
                }
            } else if b == b'\\' {
                escaped = true;
                Step::Keep
            } else if b == b'"' {
                in_string = false;
                Step::Keep
            } else if b < 0x20 {
                Step::Escape
            } else {
                Step::Keep
            }
        } else if b == b'"' {
            in_string = true;
            Step::Keep
        } else if b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r') {
            Step::Drop
        } else {
            Step::Keep
        };
        if let (Step::Keep, None) = (&step, &out) {
            continue;
        }
        let buf = out.get_or_insert_with(|| {
            let mut v = Vec::with_capacity(raw.len() + 16);
            v.extend_from_slice(raw.get(..i).unwrap_or_default());
            v
        });
        match step {
            Step::Keep => buf.push(b),
            Step::Drop => {}
            Step::Escape => push_unicode_escape(buf, b),
            Step::EscapeAfterBackslash => {
                buf.push(b'\\');
                push_unicode_escape(buf, b);
            }
        }
    }
    match out {
        Some(v) => Cow::Owned(v),
        None => Cow::Borrowed(raw),
    }
}

fn push_unicode_escape(buf: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    buf.extend_from_slice(b"\\u00");
    buf.push(HEX[usize::from(b >> 4)]);
    buf.push(HEX[usize::from(b & 0x0f)]);
}

/// Why decrypted bytes are not a message at all. Everything short of these parses (see the
/// module docs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// The bytes (after [`sanitize_json`]) are not JSON; the parser's reason, without content.
    #[error("decrypted message is not JSON: {0}")]
    NotJson(String),
    /// Valid JSON, but not an object.
    #[error("decrypted message is not a JSON object")]
    NotAnObject,
    /// An object without a usable `msgid` (absent, empty, or neither a string nor a number).
    #[error("decrypted message has no msgid")]
    MissingMsgid,
}

/// The record's `action`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `send`: a normal message.
    Send,
    /// `recall`: a revoke record (its content is [`Content::Revoke`]).
    Recall,
    /// `switch`: a member switched corp (no `msgtype`; [`Content::Switch`]).
    Switch,
    /// Anything else, kept verbatim (`""` when the record has no `action`).
    Other(String),
}

impl Action {
    fn from_wire(s: &str) -> Self {
        if s.eq_ignore_ascii_case("send") {
            Self::Send
        } else if s.eq_ignore_ascii_case("recall") {
            Self::Recall
        } else if s.eq_ignore_ascii_case("switch") {
            Self::Switch
        } else {
            Self::Other(s.to_owned())
        }
    }

    /// The wire spelling (`send`, `recall`, `switch`, or the unknown value).
    pub fn as_str(&self) -> &str {
        match self {
            Self::Send => "send",
            Self::Recall => "recall",
            Self::Switch => "switch",
            Self::Other(s) => s,
        }
    }
}

/// Who sent a message, judged by the prefix of `from` (§5.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenderKind {
    /// An internal member (a `userid`; also an empty `from`).
    Staff,
    /// An external person (`external_userid`, `wm…` or `wo…`).
    External,
    /// A robot (`wb…`).
    Robot,
}

/// Media a message refers to, for `GetMediaData` (§5.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRef {
    /// The id to pass to `GetMediaData`. Never empty: items without one are not listed.
    pub sdkfileid: String,
    /// The checksum to verify the download with; `None` when absent or empty.
    pub md5sum: Option<String>,
    /// The size in bytes to verify the download with; `None` when absent or 0.
    pub size: Option<u64>,
    /// `image`, `voice`, `video`, `file`, `emotion`, `meeting_voice_call` or `voip_doc_share`.
    pub kind: String,
    /// The file name, for `file` only.
    pub file_name: Option<String>,
    /// The extension to store it under: `fileext` for `file`; `amr` for voice, `mp4` for video,
    /// `gif`/`png` for an emotion of type 1/2 (§5.5); `None` when unknown (images may be jpg or
    /// png).
    pub file_ext: Option<String>,
}

/// The media fields of an `image` (and of an image inside `mixed` / `chatrecord`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MediaInfo {
    /// `md5sum`.
    pub md5sum: String,
    /// `filesize`, bytes.
    pub filesize: u64,
    /// `sdkfileid`.
    pub sdkfileid: String,
}

/// One `chatrecord.item[]`: a message of the forwarded conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRecordItem {
    /// The item's `type` verbatim (`ChatRecordText`, `ChatRecordFile`, `ChatRecordImage`,
    /// `ChatRecordVideo`, `ChatRecordLink`, `ChatRecordLocation`, `ChatRecordMixed`, `chatrecord`…).
    pub item_type: String,
    /// `msgtime` as WeCom gives it.
    pub msgtime: i64,
    /// `from_chatroom`: the item came from a group chat.
    pub from_chatroom: bool,
    /// The item's `content` (a JSON string) parsed as the payload of the type the item names
    /// (`ChatRecordText` → `text`, `ChatRecordMixed` → `mixed`…); [`Content::Unknown`] when it
    /// does not parse or the type is unknown.
    pub content: Content,
}

/// One `news` article (`info.item[]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewsItem {
    /// `title`.
    pub title: String,
    /// `description`.
    pub description: String,
    /// `url`.
    pub url: String,
    /// `picurl`.
    pub picurl: String,
}

/// One question of a `collect` form (`details[]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CollectDetail {
    /// `id`.
    pub id: u64,
    /// `ques`, the question.
    pub ques: String,
    /// `type`: `Text`, `Number`, `Date` or `Time`.
    pub kind: String,
}

/// A document shown during a meeting voice call (`demofiledata[]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DemoFile {
    /// `filename`.
    pub filename: String,
    /// `demooperator`, who showed it.
    pub demooperator: String,
    /// `starttime`, seconds.
    pub start_time_s: i64,
    /// `endtime`, seconds.
    pub end_time_s: i64,
}

/// A screen share during a meeting voice call (`sharescreendata[]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScreenShare {
    /// `share`, who shared.
    pub share: String,
    /// `starttime`, seconds.
    pub start_time_s: i64,
    /// `endtime`, seconds.
    pub end_time_s: i64,
}

/// The payload of a message, by `msgtype` (§5.4). Field names follow WeCom's, with units where
/// WeCom's name has none.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// `text`.
    Text {
        /// `content`, line breaks kept.
        content: String,
    },
    /// `image`.
    Image(MediaInfo),
    /// `revoke` (action `recall`).
    Revoke {
        /// The recalled message's msgid.
        pre_msgid: String,
    },
    /// `agree`: an external person agreed to archiving.
    Agree {
        /// The external person's id.
        userid: String,
        /// `agree_time`, ms.
        time_ms: i64,
    },
    /// `disagree`: an external person refused archiving.
    Disagree {
        /// The external person's id.
        userid: String,
        /// `disagree_time`, ms.
        time_ms: i64,
    },
    /// `voice` (AMR).
    Voice {
        /// `md5sum`.
        md5sum: String,
        /// `voice_size`, bytes.
        voice_size: u64,
        /// `play_length`, seconds.
        play_length_s: u32,
        /// `sdkfileid`.
        sdkfileid: String,
    },
    /// `video` (mp4).
    Video {
        /// `md5sum`.
        md5sum: String,
        /// `filesize`, bytes.
        filesize: u64,
        /// `play_length`, seconds.
        play_length_s: u32,
        /// `sdkfileid`.
        sdkfileid: String,
    },
    /// `card`: a shared contact (a risk signal, not text).
    Card {
        /// `corpname`.
        corpname: String,
        /// The shared person (external id if of another corp).
        userid: String,
    },
    /// `location`.
    Location {
        /// `longitude`.
        longitude: f64,
        /// `latitude`.
        latitude: f64,
        /// `address`.
        address: String,
        /// `title`.
        title: String,
        /// `zoom`.
        zoom: u32,
    },
    /// `emotion` (sticker).
    Emotion {
        /// `type`: 1 gif, 2 png.
        kind: u32,
        /// `width`.
        width: u32,
        /// `height`.
        height: u32,
        /// `imagesize`, bytes.
        imagesize: u64,
        /// `md5sum`.
        md5sum: String,
        /// `sdkfileid`.
        sdkfileid: String,
    },
    /// `file`.
    File {
        /// `md5sum`.
        md5sum: String,
        /// `filename`.
        filename: String,
        /// `fileext`.
        fileext: String,
        /// `filesize`, bytes.
        filesize: u64,
        /// `sdkfileid`.
        sdkfileid: String,
    },
    /// `link`.
    Link {
        /// `title`.
        title: String,
        /// `description`.
        description: String,
        /// `link_url`.
        link_url: String,
        /// `image_url`.
        image_url: String,
    },
    /// `weapp` (mini program).
    Weapp {
        /// `title`.
        title: String,
        /// `description`.
        description: String,
        /// `username`, the mini program's original id.
        username: String,
        /// `displayname`.
        displayname: String,
    },
    /// `chatrecord`: a forwarded conversation.
    ChatRecord {
        /// `title`.
        title: String,
        /// `item[]`, each content parsed from its JSON string.
        items: Vec<ChatRecordItem>,
    },
    /// `todo`.
    Todo {
        /// `title`.
        title: String,
        /// `content`.
        content: String,
    },
    /// `vote` (fields top-level or under `vote`).
    Vote {
        /// `votetitle`.
        votetitle: String,
        /// `voteitem[]`.
        voteitem: Vec<String>,
        /// `votetype`: 101 create, 102 vote.
        votetype: u32,
        /// `voteid`.
        voteid: String,
    },
    /// `collect` (填表, a form).
    Collect {
        /// `room_name`.
        room_name: String,
        /// `creator`.
        creator: String,
        /// `create_time` as given (a date string in samples; a number becomes its digits).
        create_time: String,
        /// `title`.
        title: String,
        /// `details[]`.
        details: Vec<CollectDetail>,
    },
    /// `redpacket` (internal) or `external_redpacket` (WeChat), both under the key `redpacket`.
    RedPacket {
        /// `external_redpacket` rather than `redpacket`.
        external: bool,
        /// `type`: 1 normal, 2 lucky group, 3 incentive group.
        kind: u32,
        /// `wish`.
        wish: String,
        /// `totalcnt`.
        total_count: u32,
        /// `totalamount`, fen (cents).
        total_amount_fen: u64,
    },
    /// `meeting` (an invitation or reply).
    Meeting {
        /// `topic`.
        topic: String,
        /// `starttime`, seconds.
        start_time_s: i64,
        /// `endtime`, seconds.
        end_time_s: i64,
        /// `address`.
        address: String,
        /// `remarks`.
        remarks: String,
        /// `meetingtype`: 101 invite, 102 reply.
        meetingtype: u32,
        /// `meetingid`.
        meetingid: u64,
        /// `status`: 1 attend … 7 not in room.
        status: u32,
    },
    /// `docmsg` (key `doc`).
    Doc {
        /// `title`.
        title: String,
        /// `doc_creator`.
        doc_creator: String,
        /// `link_url`.
        link_url: String,
    },
    /// `markdown` (key `info`; `info.content` or `info.markdown`).
    Markdown {
        /// The markdown text.
        content: String,
    },
    /// `news` (key `info`).
    News {
        /// `item[]`.
        items: Vec<NewsItem>,
    },
    /// `calendar`.
    Calendar {
        /// `title`.
        title: String,
        /// `creatorname`.
        creatorname: String,
        /// `attendeename[]`.
        attendeename: Vec<String>,
        /// `starttime`, seconds.
        start_time_s: i64,
        /// `endtime`, seconds.
        end_time_s: i64,
        /// `place`.
        place: String,
        /// `remarks`.
        remarks: String,
    },
    /// `mixed`: text and media in one message; each item parsed from its JSON string as the
    /// payload of its `type`.
    Mixed {
        /// The items in order.
        items: Vec<Content>,
    },
    /// `meeting_voice_call` (top-level `voiceid`).
    MeetingVoiceCall {
        /// Top-level `voiceid`.
        voiceid: String,
        /// `endtime`, seconds.
        end_time_s: i64,
        /// `sdkfileid` of the recording.
        sdkfileid: String,
        /// `demofiledata[]`.
        demofiledata: Vec<DemoFile>,
        /// `sharescreendata[]`.
        sharescreendata: Vec<ScreenShare>,
    },
    /// `voip_doc_share` (top-level `voipid`).
    VoipDocShare {
        /// Top-level `voipid`.
        voipid: String,
        /// `filename`.
        filename: String,
        /// `md5sum`.
        md5sum: String,
        /// `filesize`, bytes.
        filesize: u64,
        /// `sdkfileid`.
        sdkfileid: String,
    },
    /// `sphfeed` (视频号 post).
    SphFeed {
        /// `feed_type`: 2 image, 4 video, 9 live.
        feed_type: u32,
        /// `sph_name`.
        sph_name: String,
        /// `feed_desc`.
        feed_desc: String,
    },
    /// `voiptext` (an audio/video call's summary, key `info`).
    VoipText {
        /// `callduration`, seconds.
        callduration_s: i64,
        /// `invitetype`.
        invitetype: i64,
    },
    /// `qydiskfile` (微盘 file, key `info`).
    QyDiskFile {
        /// `filename`.
        filename: String,
    },
    /// `meeting_notification` (key `info`).
    MeetingNotification {
        /// `content`.
        content: String,
        /// `meeting_id`.
        meeting_id: i64,
        /// `notification_type`.
        notification_type: i64,
    },
    /// An `action: switch` record (no payload).
    Switch,
    /// A type we do not model, or an item whose JSON string did not parse.
    Unknown {
        /// The `msgtype` (or item type) as given.
        msgtype: String,
        /// The payload under the type's key (or the item's unparsed content string);
        /// `Null` when absent. The whole record stays in [`ArchivedMessage::raw`].
        payload: Value,
    },
}

/// One decrypted chat-archive record (§5.4).
#[derive(Debug, Clone, PartialEq)]
pub struct ArchivedMessage {
    /// `msgid`, the dedup key; opaque (a number is kept as its digits).
    pub msgid: String,
    /// `action`.
    pub action: Action,
    /// `from`; for a switch record, `user`.
    pub from: String,
    /// `tolist`.
    pub tolist: Vec<String>,
    /// `roomid`; `""` for 1:1 chats.
    pub roomid: String,
    /// `msgtime`, ms; for a switch record, `time`.
    pub msgtime_ms: i64,
    /// `msgtype`; `""` for a switch record.
    pub msgtype: String,
    /// The typed payload.
    pub content: Content,
    /// The whole sanitized decrypted JSON, the system of record.
    pub raw: Value,
}

impl ArchivedMessage {
    /// Sanitizes ([`sanitize_json`]) then parses. `Err` only when the bytes are not a JSON object
    /// or lack `msgid`; every other oddity (missing fields, numbers as strings, unknown msgtype,
    /// inner JSON-in-string that does not parse) degrades to defaults or [`Content::Unknown`].
    /// Never panics.
    pub fn parse(bytes: &[u8]) -> Result<Self, MessageError> {
        let clean = sanitize_json(bytes);
        let raw: Value =
            serde_json::from_slice(&clean).map_err(|e| MessageError::NotJson(e.to_string()))?;
        let obj = raw.as_object().ok_or(MessageError::NotAnObject)?;
        let msgid = obj.get("msgid").map(lenient_string).unwrap_or_default();
        if msgid.is_empty() {
            return Err(MessageError::MissingMsgid);
        }
        let action = Action::from_wire(&str_field(obj, "action"));
        let msg = if action == Action::Switch {
            Self {
                msgid,
                from: first_str(obj, &["user", "from"]),
                tolist: str_list(obj.get("tolist")),
                roomid: str_field(obj, "roomid"),
                msgtime_ms: obj
                    .get("time")
                    .or_else(|| obj.get("msgtime"))
                    .map_or(0, lenient_i64),
                msgtype: String::new(),
                content: Content::Switch,
                action,
                raw: Value::Null,
            }
        } else {
            let msgtype = str_field(obj, "msgtype");
            Self {
                msgid,
                from: str_field(obj, "from"),
                tolist: str_list(obj.get("tolist")),
                roomid: str_field(obj, "roomid"),
                msgtime_ms: i64_field(obj, "msgtime"),
                content: top_level_content(&msgtype, obj),
                msgtype,
                action,
                raw: Value::Null,
            }
        };
        Ok(Self { raw, ..msg })
    }

    /// Text the compliance scanner must read, in order, one piece per entry (empty pieces left
    /// out): `text.content`; the items of `mixed` and of `chatrecord` (recursively, so nested
    /// `chatrecord` / `mixed` items and their text items are read in order); link and weapp
    /// title then description; markdown content; news titles and descriptions; todo title then
    /// content; file name; docmsg title. A `card` is a risk type (see [`Self::scan_type`]), not
    /// text.
    pub fn scan_texts(&self) -> Vec<String> {
        let mut out = Vec::new();
        collect_texts(&self.content, &mut out);
        out
    }

    /// Media this message refers to: image, voice, video, file, emotion, meeting_voice_call,
    /// voip_doc_share, and media inside `mixed` / `chatrecord` items (recursively), in order.
    /// Only entries that carry a non-empty `sdkfileid` are listed.
    pub fn media(&self) -> Vec<MediaRef> {
        let mut out = Vec::new();
        collect_media(&self.content, &mut out);
        out
    }

    /// The message type to give the scanner's type rules: `redpacket` for an internal red
    /// packet, `external_redpacket` for a WeChat one, `card` for a card, otherwise the msgtype
    /// itself (`""` for a switch record).
    pub fn scan_type(&self) -> &str {
        match &self.content {
            Content::RedPacket { external: true, .. } => "external_redpacket",
            Content::RedPacket {
                external: false, ..
            } => "redpacket",
            Content::Card { .. } => "card",
            _ => &self.msgtype,
        }
    }

    /// For a revoke: the recalled msgid (`None` for anything else, or an empty `pre_msgid`).
    pub fn recalled_msgid(&self) -> Option<&str> {
        match &self.content {
            Content::Revoke { pre_msgid } if !pre_msgid.is_empty() => Some(pre_msgid),
            _ => None,
        }
    }

    /// Who sent it: `from` starting with `wm` or `wo` is an external person, `wb` a robot,
    /// anything else (including `""`) staff.
    pub fn sender_kind(&self) -> SenderKind {
        if self.from.starts_with("wm") || self.from.starts_with("wo") {
            SenderKind::External
        } else if self.from.starts_with("wb") {
            SenderKind::Robot
        } else {
            SenderKind::Staff
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Payloads.

/// The payload of a top-level record: the object under the type's key (with §5.4's exceptions),
/// plus the top-level ids two types keep outside it.
fn top_level_content(msgtype: &str, obj: &Map<String, Value>) -> Content {
    let keys: &[&str] = match msgtype {
        "external_redpacket" => &["redpacket", "external_redpacket"],
        "docmsg" => &["doc", "docmsg"],
        "markdown" | "news" | "voiptext" | "qydiskfile" | "meeting_notification" => {
            &["info", msgtype]
        }
        _ => &[msgtype],
    };
    let payload = keys.iter().find_map(|k| obj.get(*k)).map(object_of);
    let empty = Map::new();
    let fields: &Map<String, Value> = payload.as_ref().map_or(&empty, |p| p.as_ref());
    match msgtype {
        // Vote: silenceper reads the fields at top level; accept a `vote` object too.
        "vote" => vote(if fields.is_empty() { obj } else { fields }),
        "meeting_voice_call" => meeting_voice_call(fields, top_or_inner(obj, fields, "voiceid")),
        "voip_doc_share" => voip_doc_share(fields, top_or_inner(obj, fields, "voipid")),
        _ => match payload_content(msgtype, fields, 0) {
            Some(content) => content,
            None => Content::Unknown {
                msgtype: msgtype.to_owned(),
                payload: keys
                    .iter()
                    .find_map(|k| obj.get(*k))
                    .cloned()
                    .unwrap_or(Value::Null),
            },
        },
    }
}

/// A top-level id (`voiceid`, `voipid`), else the same field inside the payload.
fn top_or_inner(obj: &Map<String, Value>, fields: &Map<String, Value>, key: &str) -> String {
    let top = str_field(obj, key);
    if top.is_empty() {
        str_field(fields, key)
    } else {
        top
    }
}

/// A payload value as an object: an object as is, a string holding a JSON object parsed (after
/// sanitizing), anything else empty.
fn object_of(v: &Value) -> Cow<'_, Map<String, Value>> {
    match v {
        Value::Object(m) => Cow::Borrowed(m),
        Value::String(s) => match parse_inner(s) {
            Some(Value::Object(m)) => Cow::Owned(m),
            _ => Cow::Owned(Map::new()),
        },
        _ => Cow::Owned(Map::new()),
    }
}

fn parse_inner(s: &str) -> Option<Value> {
    serde_json::from_slice(&sanitize_json(s.as_bytes())).ok()
}

/// The content of a known type from its payload fields; `None` for a type we do not model.
/// `depth` counts JSON-in-string levels already entered.
fn payload_content(msgtype: &str, f: &Map<String, Value>, depth: usize) -> Option<Content> {
    let c = match msgtype {
        "text" => Content::Text {
            content: str_field(f, "content"),
        },
        "image" => Content::Image(MediaInfo {
            md5sum: str_field(f, "md5sum"),
            filesize: u64_field(f, "filesize"),
            sdkfileid: str_field(f, "sdkfileid"),
        }),
        "revoke" => Content::Revoke {
            pre_msgid: str_field(f, "pre_msgid"),
        },
        "agree" => Content::Agree {
            userid: str_field(f, "userid"),
            time_ms: i64_field(f, "agree_time"),
        },
        "disagree" => Content::Disagree {
            userid: str_field(f, "userid"),
            time_ms: i64_field(f, "disagree_time"),
        },
        "voice" => Content::Voice {
            md5sum: str_field(f, "md5sum"),
            voice_size: u64_field(f, "voice_size"),
            play_length_s: u32_field(f, "play_length"),
            sdkfileid: str_field(f, "sdkfileid"),
        },
        "video" => Content::Video {
            md5sum: str_field(f, "md5sum"),
            filesize: u64_field(f, "filesize"),
            play_length_s: u32_field(f, "play_length"),
            sdkfileid: str_field(f, "sdkfileid"),
        },
        "card" => Content::Card {
            corpname: str_field(f, "corpname"),
            userid: str_field(f, "userid"),
        },
        "location" => Content::Location {
            longitude: f.get("longitude").map_or(0.0, lenient_f64),
            latitude: f.get("latitude").map_or(0.0, lenient_f64),
            address: str_field(f, "address"),
            title: str_field(f, "title"),
            zoom: u32_field(f, "zoom"),
        },
        "emotion" => Content::Emotion {
            kind: u32_field(f, "type"),
            width: u32_field(f, "width"),
            height: u32_field(f, "height"),
            imagesize: u64_field(f, "imagesize"),
            md5sum: str_field(f, "md5sum"),
            sdkfileid: str_field(f, "sdkfileid"),
        },
        "file" => Content::File {
            md5sum: str_field(f, "md5sum"),
            filename: str_field(f, "filename"),
            fileext: str_field(f, "fileext"),
            filesize: u64_field(f, "filesize"),
            sdkfileid: str_field(f, "sdkfileid"),
        },
        "link" => Content::Link {
            title: str_field(f, "title"),
            description: str_field(f, "description"),
            link_url: str_field(f, "link_url"),
            image_url: str_field(f, "image_url"),
        },
        "weapp" => Content::Weapp {
            title: str_field(f, "title"),
            description: str_field(f, "description"),
            username: str_field(f, "username"),
            displayname: str_field(f, "displayname"),
        },
        "chatrecord" => Content::ChatRecord {
            title: str_field(f, "title"),
            items: array(f, "item")
                .map(|it| chat_record_item(it, depth))
                .collect(),
        },
        "todo" => Content::Todo {
            title: str_field(f, "title"),
            content: str_field(f, "content"),
        },
        "vote" => vote(f),
        "collect" => Content::Collect {
            room_name: str_field(f, "room_name"),
            creator: str_field(f, "creator"),
            create_time: str_field(f, "create_time"),
            title: str_field(f, "title"),
            details: array(f, "details")
                .map(|d| {
                    let d = object_of(d);
                    CollectDetail {
                        id: u64_field(&d, "id"),
                        ques: str_field(&d, "ques"),
                        kind: str_field(&d, "type"),
                    }
                })
                .collect(),
        },
        "redpacket" | "external_redpacket" => Content::RedPacket {
            external: msgtype == "external_redpacket",
            kind: u32_field(f, "type"),
            wish: str_field(f, "wish"),
            total_count: u32_field(f, "totalcnt"),
            total_amount_fen: u64_field(f, "totalamount"),
        },
        "meeting" => Content::Meeting {
            topic: str_field(f, "topic"),
            start_time_s: i64_field(f, "starttime"),
            end_time_s: i64_field(f, "endtime"),
            address: str_field(f, "address"),
            remarks: str_field(f, "remarks"),
            meetingtype: u32_field(f, "meetingtype"),
            meetingid: u64_field(f, "meetingid"),
            status: u32_field(f, "status"),
        },
        "docmsg" | "doc" => Content::Doc {
            title: str_field(f, "title"),
            doc_creator: str_field(f, "doc_creator"),
            link_url: str_field(f, "link_url"),
        },
        "markdown" => Content::Markdown {
            content: markdown_text(f),
        },
        "news" => Content::News {
            items: array(f, "item")
                .map(|n| {
                    let n = object_of(n);
                    NewsItem {
                        title: str_field(&n, "title"),
                        description: str_field(&n, "description"),
                        url: str_field(&n, "url"),
                        picurl: str_field(&n, "picurl"),
                    }
                })
                .collect(),
        },
        "calendar" => Content::Calendar {
            title: str_field(f, "title"),
            creatorname: str_field(f, "creatorname"),
            attendeename: str_list(f.get("attendeename")),
            start_time_s: i64_field(f, "starttime"),
            end_time_s: i64_field(f, "endtime"),
            place: str_field(f, "place"),
            remarks: str_field(f, "remarks"),
        },
        "mixed" => Content::Mixed {
            items: array(f, "item").map(|it| mixed_item(it, depth)).collect(),
        },
        "meeting_voice_call" => meeting_voice_call(f, str_field(f, "voiceid")),
        "voip_doc_share" => voip_doc_share(f, str_field(f, "voipid")),
        "sphfeed" => Content::SphFeed {
            feed_type: u32_field(f, "feed_type"),
            sph_name: str_field(f, "sph_name"),
            feed_desc: str_field(f, "feed_desc"),
        },
        "voiptext" => Content::VoipText {
            callduration_s: i64_field(f, "callduration"),
            invitetype: i64_field(f, "invitetype"),
        },
        "qydiskfile" => Content::QyDiskFile {
            filename: str_field(f, "filename"),
        },
        "meeting_notification" => Content::MeetingNotification {
            content: str_field(f, "content"),
            meeting_id: i64_field(f, "meeting_id"),
            notification_type: i64_field(f, "notification_type"),
        },
        _ => return None,
    };
    Some(c)
}

fn vote(f: &Map<String, Value>) -> Content {
    Content::Vote {
        votetitle: str_field(f, "votetitle"),
        voteitem: str_list(f.get("voteitem")),
        votetype: u32_field(f, "votetype"),
        voteid: str_field(f, "voteid"),
    }
}

/// `info.content`, else `info.markdown` (a string, or an object with `content`).
fn markdown_text(f: &Map<String, Value>) -> String {
    let content = str_field(f, "content");
    if !content.is_empty() {
        return content;
    }
    match f.get("markdown") {
        Some(Value::Object(m)) => str_field(m, "content"),
        Some(v) => lenient_string(v),
        None => String::new(),
    }
}

fn meeting_voice_call(f: &Map<String, Value>, voiceid: String) -> Content {
    Content::MeetingVoiceCall {
        voiceid,
        end_time_s: i64_field(f, "endtime"),
        sdkfileid: str_field(f, "sdkfileid"),
        demofiledata: array(f, "demofiledata")
            .map(|d| {
                let d = object_of(d);
                DemoFile {
                    filename: str_field(&d, "filename"),
                    demooperator: str_field(&d, "demooperator"),
                    start_time_s: i64_field(&d, "starttime"),
                    end_time_s: i64_field(&d, "endtime"),
                }
            })
            .collect(),
        sharescreendata: array(f, "sharescreendata")
            .map(|d| {
                let d = object_of(d);
                ScreenShare {
                    share: str_field(&d, "share"),
                    start_time_s: i64_field(&d, "starttime"),
                    end_time_s: i64_field(&d, "endtime"),
                }
            })
            .collect(),
    }
}

fn voip_doc_share(f: &Map<String, Value>, voipid: String) -> Content {
    Content::VoipDocShare {
        voipid,
        filename: str_field(f, "filename"),
        md5sum: str_field(f, "md5sum"),
        filesize: u64_field(f, "filesize"),
        sdkfileid: str_field(f, "sdkfileid"),
    }
}

/// The msgtype an item's `type` names: `ChatRecordText` → `text`, `ChatRecordMixed` → `mixed`,
/// `chatrecord` → `chatrecord`, `text` → `text`.
fn item_msgtype(item_type: &str) -> String {
    let t = item_type
        .strip_prefix("ChatRecord")
        .filter(|rest| !rest.is_empty())
        .unwrap_or(item_type);
    t.to_ascii_lowercase()
}

/// Parses an item's `content` (a JSON string, or leniently an object) as the payload of
/// `item_type`, one nesting level below `depth`.
fn item_content(item_type: &str, content: Option<&Value>, depth: usize) -> Content {
    let msgtype = item_msgtype(item_type);
    let unknown = || Content::Unknown {
        msgtype: item_type.to_owned(),
        payload: content.cloned().unwrap_or(Value::Null),
    };
    if depth >= MAX_NESTING {
        return unknown();
    }
    let parsed: Option<Cow<'_, Map<String, Value>>> = match content {
        Some(Value::Object(m)) => Some(Cow::Borrowed(m)),
        Some(Value::String(s)) => match parse_inner(s) {
            Some(Value::Object(m)) => Some(Cow::Owned(m)),
            _ => None,
        },
        _ => None,
    };
    let Some(fields) = parsed else {
        return unknown();
    };
    // Tolerate a payload wrapped in its own type key: {"text":{"content":"…"}}.
    let fields: &Map<String, Value> = match fields.get(msgtype.as_str()) {
        Some(Value::Object(inner)) if fields.len() == 1 => inner,
        _ => fields.as_ref(),
    };
    payload_content(&msgtype, fields, depth + 1).unwrap_or_else(unknown)
}

fn chat_record_item(item: &Value, depth: usize) -> ChatRecordItem {
    let o = object_of(item);
    let item_type = str_field(&o, "type");
    ChatRecordItem {
        content: item_content(&item_type, o.get("content"), depth),
        msgtime: i64_field(&o, "msgtime"),
        from_chatroom: o.get("from_chatroom").is_some_and(lenient_bool),
        item_type,
    }
}

fn mixed_item(item: &Value, depth: usize) -> Content {
    let o = object_of(item);
    item_content(&str_field(&o, "type"), o.get("content"), depth)
}

// ---------------------------------------------------------------------------------------------
// Scanner views.

fn push_text(out: &mut Vec<String>, s: &str) {
    if !s.is_empty() {
        out.push(s.to_owned());
    }
}

fn collect_texts(c: &Content, out: &mut Vec<String>) {
    match c {
        Content::Text { content } | Content::Markdown { content } => push_text(out, content),
        Content::Mixed { items } => items.iter().for_each(|i| collect_texts(i, out)),
        Content::ChatRecord { items, .. } => {
            items.iter().for_each(|i| collect_texts(&i.content, out));
        }
        Content::Link {
            title, description, ..
        }
        | Content::Weapp {
            title, description, ..
        } => {
            push_text(out, title);
            push_text(out, description);
        }
        Content::News { items } => items.iter().for_each(|n| {
            push_text(out, &n.title);
            push_text(out, &n.description);
        }),
        Content::Todo { title, content } => {
            push_text(out, title);
            push_text(out, content);
        }
        Content::File { filename, .. } => push_text(out, filename),
        Content::Doc { title, .. } => push_text(out, title),
        _ => {}
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

fn collect_media(c: &Content, out: &mut Vec<MediaRef>) {
    let mut push = |kind: &str,
                    sdkfileid: &str,
                    md5sum: &str,
                    size: u64,
                    name: Option<&str>,
                    ext: Option<&str>| {
        if !sdkfileid.is_empty() {
            out.push(MediaRef {
                sdkfileid: sdkfileid.to_owned(),
                md5sum: non_empty(md5sum),
                size: (size > 0).then_some(size),
                kind: kind.to_owned(),
                file_name: name.and_then(non_empty),
                file_ext: ext.and_then(non_empty),
            });
        }
    };
    match c {
        Content::Image(m) => push("image", &m.sdkfileid, &m.md5sum, m.filesize, None, None),
        Content::Voice {
            md5sum,
            voice_size,
            sdkfileid,
            ..
        } => {
            push("voice", sdkfileid, md5sum, *voice_size, None, Some("amr"));
        }
        Content::Video {
            md5sum,
            filesize,
            sdkfileid,
            ..
        } => {
            push("video", sdkfileid, md5sum, *filesize, None, Some("mp4"));
        }
        Content::File {
            md5sum,
            filename,
            fileext,
            filesize,
            sdkfileid,
        } => {
            push(
                "file",
                sdkfileid,
                md5sum,
                *filesize,
                Some(filename),
                Some(fileext),
            );
        }
        Content::Emotion {
            kind,
            imagesize,
            md5sum,
            sdkfileid,
            ..
        } => {
            let ext = match kind {
                1 => Some("gif"),
                2 => Some("png"),
                _ => None,
            };
            push("emotion", sdkfileid, md5sum, *imagesize, None, ext);
        }
        Content::MeetingVoiceCall { sdkfileid, .. } => {
            push("meeting_voice_call", sdkfileid, "", 0, None, None);
        }
        Content::VoipDocShare {
            md5sum,
            filesize,
            sdkfileid,
            ..
        } => {
            push("voip_doc_share", sdkfileid, md5sum, *filesize, None, None);
        }
        Content::Mixed { items } => items.iter().for_each(|i| collect_media(i, out)),
        Content::ChatRecord { items, .. } => {
            items.iter().for_each(|i| collect_media(&i.content, out));
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Lenient field readers: a wrong type or a missing field is the default, never an error.

/// A string as is; a number as its digits; anything else `""`.
fn lenient_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

fn str_field(o: &Map<String, Value>, key: &str) -> String {
    o.get(key).map(lenient_string).unwrap_or_default()
}

/// The first non-empty of `keys`.
fn first_str(o: &Map<String, Value>, keys: &[&str]) -> String {
    keys.iter()
        .map(|k| str_field(o, k))
        .find(|s| !s.is_empty())
        .unwrap_or_default()
}

/// A list of strings (numbers as digits, other entries skipped); a lone string is a list of one.
fn str_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .filter(|x| x.is_string() || x.is_number())
            .map(lenient_string)
            .collect(),
        Some(Value::String(s)) if !s.is_empty() => vec![s.clone()],
        _ => Vec::new(),
    }
}

fn array<'a>(o: &'a Map<String, Value>, key: &str) -> impl Iterator<Item = &'a Value> {
    o.get(key).and_then(Value::as_array).into_iter().flatten()
}

fn f64_to_i64(f: f64) -> Option<i64> {
    // `as` saturates; finite values in range are only truncated.
    f.is_finite().then_some(f as i64)
}

/// A number or a numeric string (integers, or a decimal truncated); anything else 0.
fn lenient_i64(v: &Value) -> i64 {
    let n = match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_u64().map(|u| i64::try_from(u).unwrap_or(i64::MAX)))
            .or_else(|| n.as_f64().and_then(f64_to_i64)),
        Value::String(s) => {
            let t = s.trim();
            t.parse::<i64>()
                .ok()
                .or_else(|| t.parse::<f64>().ok().and_then(f64_to_i64))
        }
        _ => None,
    };
    n.unwrap_or(0)
}

/// Like [`lenient_i64`] for unsigned values; negative is 0.
fn lenient_u64(v: &Value) -> u64 {
    let n = match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(|f| f as u64)
        }),
        Value::String(s) => {
            let t = s.trim();
            t.parse::<u64>().ok().or_else(|| {
                t.parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite() && *f >= 0.0)
                    .map(|f| f as u64)
            })
        }
        _ => None,
    };
    n.unwrap_or(0)
}

fn lenient_f64(v: &Value) -> f64 {
    let n = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    n.filter(|f| f.is_finite()).unwrap_or(0.0)
}

fn lenient_bool(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Number(_) => lenient_i64(v) != 0,
        Value::String(s) => matches!(s.trim(), "true" | "True" | "TRUE" | "1"),
        _ => false,
    }
}

fn i64_field(o: &Map<String, Value>, key: &str) -> i64 {
    o.get(key).map_or(0, lenient_i64)
}

fn u64_field(o: &Map<String, Value>, key: &str) -> u64 {
    o.get(key).map_or(0, lenient_u64)
}

/// Saturating: a value above `u32::MAX` is `u32::MAX`.
fn u32_field(o: &Map<String, Value>, key: &str) -> u32 {
    u32::try_from(u64_field(o, key)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        reason = "a test fails loudly"
    )]

    use super::*;

    const HDR_TO: &str = "wmErxtDgAAhteCglUZH2kUt3rq431qmg";
    const ROOM: &str = "wrErxtDgAAtAhYmtIn71iQhn8tyE9hGg";

    fn dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/archive/messages")
    }

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(dir().join(format!("{name}.json"))).expect(name)
    }

    fn parse(name: &str) -> ArchivedMessage {
        ArchivedMessage::parse(&fixture(name)).expect(name)
    }

    fn s(x: &str) -> String {
        x.to_owned()
    }

    fn text(x: &str) -> Content {
        Content::Text { content: s(x) }
    }

    fn image(md5: &str, size: u64, id: &str) -> Content {
        Content::Image(MediaInfo {
            md5sum: s(md5),
            filesize: size,
            sdkfileid: s(id),
        })
    }

    /// Every fixture, with the content it must parse to.
    fn expected() -> Vec<(&'static str, Content)> {
        vec![
            ("text", text("test")),
            (
                "image",
                image(
                    "50de8e5ae8ffe4f1df7a93841f71993a",
                    70961,
                    "CtYBMzA2OTAyMDEwMjA0NjIzMDYwMDIwMTAwMDIwNGJm",
                ),
            ),
            (
                "revoke",
                Content::Revoke {
                    pre_msgid: s("14822339130656386894_1700000000_external"),
                },
            ),
            (
                "agree",
                Content::Agree {
                    userid: s("wmGAgeDQAAvQeaTqWwkMTxGMkvI7OOuQ"),
                    time_ms: 1_603_875_826_656,
                },
            ),
            (
                "disagree",
                Content::Disagree {
                    userid: s(HDR_TO),
                    time_ms: 1_700_000_002_456,
                },
            ),
            (
                "voice",
                Content::Voice {
                    md5sum: s("9db09c7fa627c9e53f17736c786a74d5"),
                    voice_size: 6810,
                    play_length_s: 10,
                    sdkfileid: s("kcyZjZqOXhETGYxajB2Zkp5Rk8zYkZHWXFISTh0aXdTOEtDRE5"),
                },
            ),
            (
                "video",
                Content::Video {
                    md5sum: s("d06fc80c01d6fbffcca3b229ba41eac6"),
                    filesize: 15_169_724,
                    play_length_s: 108,
                    sdkfileid: s("Cr4BMzA2OTAyMDEwMjA0NjIzMDYwMDIwMTAwMDIwNGI2"),
                },
            ),
            (
                "card",
                Content::Card {
                    corpname: s("北京某某科技有限公司"),
                    userid: s("wmErxtDgAAKsLwJd3_2zFz3k7YFxB3Kg"),
                },
            ),
            (
                "location",
                Content::Location {
                    longitude: 116.397_128,
                    latitude: 39.916_527,
                    address: s("北京市东城区东华门街道"),
                    title: s("故宫博物院"),
                    zoom: 15,
                },
            ),
            (
                "emotion",
                Content::Emotion {
                    kind: 1,
                    width: 240,
                    height: 240,
                    imagesize: 102_400,
                    md5sum: s("3e1a5f2d9d4c2b1a0f9e8d7c6b5a4f3e"),
                    sdkfileid: s("ChBlbW90aW9uLXNka2ZpbGVpZC0wMQ=="),
                },
            ),
            (
                "file",
                Content::File {
                    md5sum: s("18e93fc2ea884df23b3d2d3b8667b9f0"),
                    filename: s("报价单2024.xlsx"),
                    fileext: s("xlsx"),
                    filesize: 18181,
                    sdkfileid: s("EtQBMzA2ODAyMDEwMjA0NjEzMDVmMDIwMTAwMDIwNDZi"),
                },
            ),
            (
                "link",
                Content::Link {
                    title: s("邀请你加入群聊"),
                    description: s("点击私聊加我微信，价格更优惠"),
                    link_url: s("https://example.com/join?id=1"),
                    image_url: s("https://example.com/cover.png"),
                },
            ),
            (
                "weapp",
                Content::Weapp {
                    title: s("开始聊天前请仔细阅读服务须知事项"),
                    description: s("客户需同意存档聊天记录"),
                    username: s("gh_0000000000@app"),
                    displayname: s("服务须知"),
                },
            ),
            (
                "chatrecord",
                Content::ChatRecord {
                    title: s("群聊的聊天记录"),
                    items: vec![
                        ChatRecordItem {
                            item_type: s("ChatRecordText"),
                            msgtime: 1_699_999_001,
                            from_chatroom: true,
                            content: text("第一条：转账给我私人账户"),
                        },
                        ChatRecordItem {
                            item_type: s("ChatRecordImage"),
                            msgtime: 1_699_999_002,
                            from_chatroom: true,
                            content: image("bb22", 4321, "img-in-chatrecord"),
                        },
                        ChatRecordItem {
                            item_type: s("ChatRecordFile"),
                            msgtime: 1_699_999_003,
                            from_chatroom: false,
                            content: Content::File {
                                md5sum: s("cc33"),
                                filename: s("合同.pdf"),
                                fileext: s("pdf"),
                                filesize: 99999,
                                sdkfileid: s("file-in-chatrecord"),
                            },
                        },
                        ChatRecordItem {
                            item_type: s("ChatRecordMixed"),
                            msgtime: 1_699_999_004,
                            from_chatroom: false,
                            content: Content::Mixed {
                                items: vec![
                                    text("合并里的文字"),
                                    image("aa11", 1234, "img-in-mixed-in-chatrecord"),
                                ],
                            },
                        },
                        ChatRecordItem {
                            item_type: s("chatrecord"),
                            msgtime: 1_699_999_005,
                            from_chatroom: false,
                            content: Content::ChatRecord {
                                title: s("张三和李四的聊天记录"),
                                items: vec![ChatRecordItem {
                                    item_type: s("ChatRecordText"),
                                    msgtime: 1_699_990_000,
                                    from_chatroom: false,
                                    content: text("嵌套的第一句"),
                                }],
                            },
                        },
                        ChatRecordItem {
                            item_type: s("ChatRecordText"),
                            msgtime: 1_699_999_006,
                            from_chatroom: true,
                            content: text("最后一条"),
                        },
                    ],
                },
            ),
            (
                "todo",
                Content::Todo {
                    title: s("来自张三的待办"),
                    content: s("周五前把报价单发给客户"),
                },
            ),
            (
                "vote",
                Content::Vote {
                    votetitle: s("团建去哪儿"),
                    voteitem: vec![s("爬山"), s("露营"), s("密室")],
                    votetype: 101,
                    voteid: s("2707524287201766016"),
                },
            ),
            (
                "collect",
                Content::Collect {
                    room_name: s("销售一组"),
                    creator: s("张三"),
                    create_time: s("2023-11-15 06:13:34"),
                    title: s("客户回访登记"),
                    details: vec![
                        CollectDetail {
                            id: 1,
                            ques: s("客户姓名"),
                            kind: s("Text"),
                        },
                        CollectDetail {
                            id: 2,
                            ques: s("回访次数"),
                            kind: s("Number"),
                        },
                        CollectDetail {
                            id: 3,
                            ques: s("回访日期"),
                            kind: s("Date"),
                        },
                    ],
                },
            ),
            (
                "redpacket",
                Content::RedPacket {
                    external: false,
                    kind: 2,
                    wish: s("恭喜发财，大吉大利"),
                    total_count: 5,
                    total_amount_fen: 3000,
                },
            ),
            (
                "external_redpacket",
                Content::RedPacket {
                    external: true,
                    kind: 1,
                    wish: s("感谢帮忙"),
                    total_count: 1,
                    total_amount_fen: 8888,
                },
            ),
            (
                "meeting",
                Content::Meeting {
                    topic: s("季度复盘会"),
                    start_time_s: 1_700_010_000,
                    end_time_s: 1_700_013_600,
                    address: s("3楼会议室"),
                    remarks: s("带上报表"),
                    meetingtype: 101,
                    meetingid: 1_405_515_101_986_016,
                    status: 1,
                },
            ),
            (
                "docmsg",
                Content::Doc {
                    title: s("客户跟进表"),
                    doc_creator: s("zhangsan"),
                    link_url: s("https://doc.weixin.qq.com/sheet/e3_AAAA"),
                },
            ),
            (
                "markdown",
                Content::Markdown {
                    content: s("## 今日线索\n> 新增 **3** 位客户"),
                },
            ),
            (
                "news",
                Content::News {
                    items: vec![
                        NewsItem {
                            title: s("双十一活动"),
                            description: s("全场五折"),
                            url: s("https://example.com/a"),
                            picurl: s("https://example.com/a.png"),
                        },
                        NewsItem {
                            title: s("新品上架"),
                            description: s("点击查看"),
                            url: s("https://example.com/b"),
                            picurl: s("https://example.com/b.png"),
                        },
                    ],
                },
            ),
            (
                "calendar",
                Content::Calendar {
                    title: s("客户拜访"),
                    creatorname: s("张三"),
                    attendeename: vec![s("李四"), s("王五")],
                    start_time_s: 1_700_100_000,
                    end_time_s: 1_700_103_600,
                    place: s("客户公司"),
                    remarks: s("带合同"),
                },
            ),
            (
                "mixed",
                Content::Mixed {
                    items: vec![
                        text("你好，看下这张图"),
                        image("dd44", 5555, "img-in-mixed"),
                        text("加我私人微信"),
                        Content::Emotion {
                            kind: 2,
                            width: 100,
                            height: 100,
                            imagesize: 2048,
                            md5sum: s("ee55"),
                            sdkfileid: s("emo-in-mixed"),
                        },
                    ],
                },
            ),
            (
                "meeting_voice_call",
                Content::MeetingVoiceCall {
                    voiceid: s("grb8a4c48a3c094a70982c518d55e40557"),
                    end_time_s: 1_700_003_600,
                    sdkfileid: s("ChBtZWV0aW5nLXZvaWNlLWNhbGw="),
                    demofiledata: vec![DemoFile {
                        filename: s("演示文稿.pptx"),
                        demooperator: s("zhangsan"),
                        start_time_s: 1_700_000_100,
                        end_time_s: 1_700_000_900,
                    }],
                    sharescreendata: vec![ScreenShare {
                        share: s("lisi"),
                        start_time_s: 1_700_001_000,
                        end_time_s: 1_700_001_500,
                    }],
                },
            ),
            (
                "voip_doc_share",
                Content::VoipDocShare {
                    voipid: s("gr2751c98b19300571f8afb3b74514bd1"),
                    filename: s("欢迎使用微盘.pdf.pdf"),
                    md5sum: s("ff893900f24e55e216e617a40e5c4648"),
                    filesize: 4_400_654,
                    sdkfileid: s("CpsBKjAqZUlLdWJMd2gvQ1JxMzd0ZjhxN"),
                },
            ),
            (
                "sphfeed",
                Content::SphFeed {
                    feed_type: 4,
                    sph_name: s("某某官方视频号"),
                    feed_desc: s("新品发布会回放"),
                },
            ),
            (
                "voiptext",
                Content::VoipText {
                    callduration_s: 125,
                    invitetype: 1,
                },
            ),
            (
                "qydiskfile",
                Content::QyDiskFile {
                    filename: s("产品手册.pdf"),
                },
            ),
            (
                "meeting_notification",
                Content::MeetingNotification {
                    content: s("张三将李四移出了会议"),
                    meeting_id: 1_405_515_101_986_016,
                    notification_type: 2,
                },
            ),
            ("switch", Content::Switch),
        ]
    }

    #[test]
    fn every_fixture_parses_to_its_variant_and_values() {
        for (name, content) in expected() {
            let msg = parse(name);
            assert_eq!(msg.content, content, "{name}");
            assert_eq!(
                msg.raw,
                serde_json::from_slice::<Value>(&fixture(name)).unwrap(),
                "{name}: raw is the whole JSON"
            );
            if name == "switch" {
                continue;
            }
            assert_eq!(msg.msgtype, name, "{name}");
            if !matches!(name, "text" | "agree") {
                // The generated fixtures share a header shape.
                assert!(msg.msgtime_ms == 1_700_000_000_123, "{name}: msgtime");
                assert_eq!(msg.msgid, msg.raw["msgid"].as_str().unwrap(), "{name}");
                assert_eq!(msg.from, msg.raw["from"].as_str().unwrap(), "{name}");
                assert!(
                    ["zhangsan", HDR_TO, "wbErxtDgAAsRWLAqXeaAaGdaU3TkyTBg"]
                        .contains(&msg.from.as_str()),
                    "{name}"
                );
                let to: Vec<String> = msg.raw["tolist"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_owned())
                    .collect();
                assert_eq!(msg.tolist, to, "{name}");
                assert_eq!(msg.tolist.len(), 1, "{name}");
                assert_eq!(
                    msg.action,
                    if name == "revoke" {
                        Action::Recall
                    } else {
                        Action::Send
                    },
                    "{name}"
                );
                assert!(
                    msg.roomid.is_empty() || msg.roomid == ROOM,
                    "{name}: roomid {}",
                    msg.roomid
                );
            }
        }
    }

    #[test]
    fn every_fixture_file_has_an_expectation() {
        let mut on_disk: Vec<String> = std::fs::read_dir(dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter_map(|n| n.strip_suffix(".json").map(str::to_owned))
            .collect();
        on_disk.sort();
        let mut covered: Vec<String> = expected().into_iter().map(|(n, _)| n.to_owned()).collect();
        covered.sort();
        assert_eq!(on_disk, covered);
        assert_eq!(covered.len(), 32, "31 msgtypes of §5.4 plus switch");
    }

    #[test]
    fn valid_json_fixtures_are_not_copied_by_sanitize() {
        for (name, _) in expected() {
            let bytes = fixture(name);
            assert!(matches!(sanitize_json(&bytes), Cow::Borrowed(_)), "{name}");
        }
    }

    #[test]
    fn official_text_sample() {
        let msg = parse("text");
        assert_eq!(msg.msgid, "CAQQluDa4QUY0On2rYSAgAMgzPrShAE=");
        assert_eq!(msg.action, Action::Send);
        assert_eq!(msg.from, "XuJinSheng");
        assert_eq!(msg.tolist, vec![s("icefog")]);
        assert_eq!(msg.roomid, "");
        assert_eq!(msg.msgtime_ms, 1_547_087_894_783);
        assert_eq!(msg.msgtype, "text");
        assert_eq!(msg.content, text("test"));
        assert_eq!(msg.scan_texts(), vec![s("test")]);
        assert_eq!(msg.scan_type(), "text");
        assert_eq!(msg.sender_kind(), SenderKind::Staff);
        assert!(msg.media().is_empty());
        assert_eq!(msg.recalled_msgid(), None);
    }

    #[test]
    fn official_agree_sample_with_the_other_msgid_format() {
        let msg = parse("agree");
        assert_eq!(msg.msgid, "8891446340739254950_1603875826");
        assert_eq!(msg.from, "wmGAgeDQAAvQeaTqWwkMTxGMkvI7OOuQ");
        assert_eq!(msg.tolist, vec![s("kenshin")]);
        assert_eq!(msg.msgtime_ms, 1_603_875_826_656);
        assert_eq!(
            msg.content,
            Content::Agree {
                userid: s("wmGAgeDQAAvQeaTqWwkMTxGMkvI7OOuQ"),
                time_ms: 1_603_875_826_656
            }
        );
        assert_eq!(msg.sender_kind(), SenderKind::External);
        assert!(msg.scan_texts().is_empty());
    }

    #[test]
    fn switch_record_has_user_and_time_and_no_msgtype() {
        let msg = parse("switch");
        assert_eq!(msg.msgid, "125289002219525886280");
        assert_eq!(msg.action, Action::Switch);
        assert_eq!(msg.from, "XuJinSheng");
        assert_eq!(msg.msgtime_ms, 1_554_119_421_840);
        assert_eq!(msg.msgtype, "");
        assert_eq!(msg.content, Content::Switch);
        assert!(msg.tolist.is_empty());
        assert_eq!(msg.scan_type(), "");
        assert!(msg.scan_texts().is_empty() && msg.media().is_empty());
    }

    #[test]
    fn recall_gives_the_recalled_msgid() {
        let msg = parse("revoke");
        assert_eq!(msg.action, Action::Recall);
        assert_eq!(msg.action.as_str(), "recall");
        assert_eq!(
            msg.recalled_msgid(),
            Some("14822339130656386894_1700000000_external")
        );
        assert_eq!(parse("text").recalled_msgid(), None);
        let empty = br#"{"msgid":"r2","action":"recall","msgtype":"revoke","revoke":{}}"#;
        assert_eq!(
            ArchivedMessage::parse(empty).unwrap().recalled_msgid(),
            None
        );
    }

    #[test]
    fn raw_control_bytes_inside_text_survive_as_escapes() {
        let bytes = b"{\"msgid\":\"c1\",\"action\":\"send\",\"from\":\"zhangsan\",\"tolist\":[],\"roomid\":\"\",\
            \"msgtime\":1,\"msgtype\":\"text\",\"text\":{\"content\":\"line1\nline2\r\ttab\x01bell\x1f\"}}";
        assert!(
            serde_json::from_slice::<Value>(bytes).is_err(),
            "strict JSON refuses the raw bytes"
        );
        let clean = sanitize_json(bytes);
        assert!(matches!(clean, Cow::Owned(_)));
        let clean_str = std::str::from_utf8(&clean).unwrap();
        assert!(
            clean_str.contains(r#"line1\u000aline2\u000d\u0009tab\u0001bell\u001f"#),
            "{clean_str}"
        );
        let msg = ArchivedMessage::parse(bytes).unwrap();
        assert_eq!(msg.content, text("line1\nline2\r\ttab\u{1}bell\u{1f}"));
        assert_eq!(
            msg.scan_texts(),
            vec![s("line1\nline2\r\ttab\u{1}bell\u{1f}")]
        );
        assert_eq!(
            msg.raw["text"]["content"],
            "line1\nline2\r\ttab\u{1}bell\u{1f}"
        );
    }

    #[test]
    fn control_bytes_between_tokens_are_dropped_and_whitespace_kept() {
        let bytes = b"{\x00\"msgid\"\x01:\x02\"c2\",\n\t\r\"action\":\"send\"\x1f,\"msgtype\":\"text\",\"text\":{\"content\":\"ok\"}\x0b}";
        let clean = sanitize_json(bytes);
        assert_eq!(
            &*clean,
            &b"{\"msgid\":\"c2\",\n\t\r\"action\":\"send\",\"msgtype\":\"text\",\"text\":{\"content\":\"ok\"}}"[..]
        );
        let msg = ArchivedMessage::parse(bytes).unwrap();
        assert_eq!(msg.msgid, "c2");
        assert_eq!(msg.content, text("ok"));
        // Only whitespace outside strings: nothing to change.
        let fine = b"{\n\t\"a\" : 1\r\n}";
        assert!(matches!(sanitize_json(fine), Cow::Borrowed(b) if b == fine));
    }

    #[test]
    fn escaped_quotes_and_backslashes_do_not_confuse_sanitize() {
        // Inside the string: \" (not the end), \\ (then the real end), then a control byte OUTSIDE
        // (dropped), then a string with \\\" and a raw newline inside (escaped).
        let bytes = b"{\"a\":\"say \\\"hi\\\" c:\\\\\"\x01,\"b\":\"x\\\\\\\"y\nz\"}";
        let clean = sanitize_json(bytes);
        assert_eq!(
            &*clean,
            &b"{\"a\":\"say \\\"hi\\\" c:\\\\\",\"b\":\"x\\\\\\\"y\\u000az\"}"[..]
        );
        let v: Value = serde_json::from_slice(&clean).unwrap();
        assert_eq!(v["a"], "say \"hi\" c:\\");
        assert_eq!(v["b"], "x\\\"y\nz");
        // A raw control byte right after a backslash keeps both characters.
        let odd = b"{\"a\":\"x\\\ny\"}";
        let v: Value = serde_json::from_slice(&sanitize_json(odd)).unwrap();
        assert_eq!(v["a"], "x\\\ny");
        // A \u escape is left alone.
        let esc = br#"{"a":"\u000a\"\\"}"#;
        assert!(matches!(sanitize_json(esc), Cow::Borrowed(_)));
    }

    #[test]
    fn mixed_json_in_string_gives_scan_texts_and_media_in_order() {
        let msg = parse("mixed");
        assert_eq!(
            msg.scan_texts(),
            vec![s("你好，看下这张图"), s("加我私人微信")]
        );
        assert_eq!(
            msg.media(),
            vec![
                MediaRef {
                    sdkfileid: s("img-in-mixed"),
                    md5sum: Some(s("dd44")),
                    size: Some(5555),
                    kind: s("image"),
                    file_name: None,
                    file_ext: None,
                },
                MediaRef {
                    sdkfileid: s("emo-in-mixed"),
                    md5sum: Some(s("ee55")),
                    size: Some(2048),
                    kind: s("emotion"),
                    file_name: None,
                    file_ext: Some(s("png")),
                },
            ]
        );
    }

    #[test]
    fn chatrecord_with_nested_mixed_and_chatrecord_gives_scan_texts_in_order() {
        let msg = parse("chatrecord");
        assert_eq!(
            msg.scan_texts(),
            vec![
                s("第一条：转账给我私人账户"),
                s("合同.pdf"),
                s("合并里的文字"),
                s("嵌套的第一句"),
                s("最后一条")
            ]
        );
        let ids: Vec<(String, String)> = msg
            .media()
            .into_iter()
            .map(|m| (m.kind, m.sdkfileid))
            .collect();
        assert_eq!(
            ids,
            vec![
                (s("image"), s("img-in-chatrecord")),
                (s("file"), s("file-in-chatrecord")),
                (s("image"), s("img-in-mixed-in-chatrecord")),
            ]
        );
    }

    #[test]
    fn inner_json_that_does_not_parse_is_unknown_and_the_rest_still_reads() {
        let bytes = br#"{"msgid":"m9","action":"send","msgtype":"mixed","mixed":{"item":[
            {"type":"text","content":"{\"content\":\"good\"}"},
            {"type":"text","content":"{not json"},
            {"type":"video","content":"{\"sdkfileid\":\"v1\",\"filesize\":\"77\"}"},
            {"type":"poll","content":"{\"a\":1}"},
            {"type":"text","content":{"content":"already an object"}}]}}"#;
        let msg = ArchivedMessage::parse(bytes).unwrap();
        let Content::Mixed { items } = &msg.content else {
            panic!("{:?}", msg.content)
        };
        assert_eq!(items.len(), 5);
        assert_eq!(items[0], text("good"));
        assert_eq!(
            items[1],
            Content::Unknown {
                msgtype: s("text"),
                payload: Value::String(s("{not json"))
            }
        );
        assert_eq!(
            items[2],
            Content::Video {
                md5sum: s(""),
                filesize: 77,
                play_length_s: 0,
                sdkfileid: s("v1")
            }
        );
        assert_eq!(
            items[3],
            Content::Unknown {
                msgtype: s("poll"),
                payload: Value::String(s("{\"a\":1}"))
            }
        );
        assert_eq!(items[4], text("already an object"));
        assert_eq!(msg.scan_texts(), vec![s("good"), s("already an object")]);
        let media = msg.media();
        assert_eq!(media.len(), 1);
        assert_eq!(
            media[0],
            MediaRef {
                sdkfileid: s("v1"),
                md5sum: None,
                size: Some(77),
                kind: s("video"),
                file_name: None,
                file_ext: Some(s("mp4"))
            }
        );
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_unknown_without_overflow() {
        // A mixed inside a mixed inside … 12 levels, a text at the bottom.
        let mut inner = serde_json::json!({"content": "deep"});
        let mut kind = "text";
        for _ in 0..12 {
            inner = serde_json::json!({"item": [{"type": kind, "content": inner.to_string()}]});
            kind = "mixed";
        }
        let record = serde_json::json!({"msgid": "deep", "action": "send", "msgtype": "mixed", "mixed": inner});
        let msg = ArchivedMessage::parse(record.to_string().as_bytes()).unwrap();
        let mut level = &msg.content;
        let mut depth = 0;
        while let Content::Mixed { items } = level {
            level = &items[0];
            depth += 1;
        }
        assert_eq!(
            depth,
            MAX_NESTING + 1,
            "top level plus MAX_NESTING string levels"
        );
        assert!(
            matches!(level, Content::Unknown { msgtype, .. } if msgtype == "mixed"),
            "{level:?}"
        );
        assert!(msg.scan_texts().is_empty());
    }

    #[test]
    fn media_for_image_file_and_the_rest() {
        assert_eq!(
            parse("image").media(),
            vec![MediaRef {
                sdkfileid: s("CtYBMzA2OTAyMDEwMjA0NjIzMDYwMDIwMTAwMDIwNGJm"),
                md5sum: Some(s("50de8e5ae8ffe4f1df7a93841f71993a")),
                size: Some(70961),
                kind: s("image"),
                file_name: None,
                file_ext: None,
            }]
        );
        assert_eq!(
            parse("file").media(),
            vec![MediaRef {
                sdkfileid: s("EtQBMzA2ODAyMDEwMjA0NjEzMDVmMDIwMTAwMDIwNDZi"),
                md5sum: Some(s("18e93fc2ea884df23b3d2d3b8667b9f0")),
                size: Some(18181),
                kind: s("file"),
                file_name: Some(s("报价单2024.xlsx")),
                file_ext: Some(s("xlsx")),
            }]
        );
        let kinds = |name: &str| -> Vec<(String, Option<u64>, Option<String>)> {
            parse(name)
                .media()
                .into_iter()
                .map(|m| (m.kind, m.size, m.file_ext))
                .collect()
        };
        assert_eq!(
            kinds("voice"),
            vec![(s("voice"), Some(6810), Some(s("amr")))]
        );
        assert_eq!(
            kinds("video"),
            vec![(s("video"), Some(15_169_724), Some(s("mp4")))]
        );
        assert_eq!(
            kinds("emotion"),
            vec![(s("emotion"), Some(102_400), Some(s("gif")))]
        );
        assert_eq!(
            kinds("meeting_voice_call"),
            vec![(s("meeting_voice_call"), None, None)]
        );
        assert_eq!(
            kinds("voip_doc_share"),
            vec![(s("voip_doc_share"), Some(4_400_654), None)]
        );
        for name in ["text", "link", "card", "redpacket", "qydiskfile", "switch"] {
            assert!(parse(name).media().is_empty(), "{name}");
        }
        let no_id = br#"{"msgid":"i0","msgtype":"image","image":{"md5sum":"x","filesize":1}}"#;
        assert!(ArchivedMessage::parse(no_id).unwrap().media().is_empty());
    }

    #[test]
    fn scan_texts_of_each_text_bearing_type() {
        let cases: [(&str, Vec<&str>); 9] = [
            (
                "link",
                vec!["邀请你加入群聊", "点击私聊加我微信，价格更优惠"],
            ),
            (
                "weapp",
                vec!["开始聊天前请仔细阅读服务须知事项", "客户需同意存档聊天记录"],
            ),
            ("markdown", vec!["## 今日线索\n> 新增 **3** 位客户"]),
            (
                "news",
                vec!["双十一活动", "全场五折", "新品上架", "点击查看"],
            ),
            ("todo", vec!["来自张三的待办", "周五前把报价单发给客户"]),
            ("file", vec!["报价单2024.xlsx"]),
            ("docmsg", vec!["客户跟进表"]),
            ("card", vec![]),
            ("redpacket", vec![]),
        ];
        for (name, want) in cases {
            let want: Vec<String> = want.into_iter().map(str::to_owned).collect();
            assert_eq!(parse(name).scan_texts(), want, "{name}");
        }
    }

    #[test]
    fn scan_type_flags_red_packets_and_cards() {
        let ext = parse("external_redpacket");
        assert_eq!(ext.msgtype, "external_redpacket");
        assert!(
            ext.raw.get("external_redpacket").is_none(),
            "the payload is under `redpacket`"
        );
        assert_eq!(ext.scan_type(), "external_redpacket");
        assert!(matches!(
            ext.content,
            Content::RedPacket {
                external: true,
                total_amount_fen: 8888,
                ..
            }
        ));
        assert_eq!(parse("redpacket").scan_type(), "redpacket");
        assert_eq!(parse("card").scan_type(), "card");
        assert_eq!(parse("link").scan_type(), "link");
    }

    #[test]
    fn unknown_msgtype_is_unknown_with_raw_kept() {
        let bytes = r#"{"msgid":"u1","action":"send","from":"zhangsan","tolist":["lisi"],"roomid":"","msgtime":5,
            "msgtype":"jielong","jielong":{"title":"接龙","items":[1,2]}}"#
            .as_bytes();
        let msg = ArchivedMessage::parse(bytes).unwrap();
        assert_eq!(msg.msgtype, "jielong");
        assert_eq!(
            msg.content,
            Content::Unknown {
                msgtype: s("jielong"),
                payload: serde_json::json!({"title":"接龙","items":[1,2]})
            }
        );
        assert_eq!(msg.raw["jielong"]["title"], "接龙");
        assert_eq!(msg.raw["msgid"], "u1");
        assert_eq!(msg.scan_type(), "jielong");
        assert!(msg.scan_texts().is_empty());
        let bare = ArchivedMessage::parse(br#"{"msgid":"u2","msgtype":"future"}"#).unwrap();
        assert_eq!(
            bare.content,
            Content::Unknown {
                msgtype: s("future"),
                payload: Value::Null
            }
        );
        assert_eq!(bare.action, Action::Other(String::new()));
    }

    #[test]
    fn errors_for_not_json_not_an_object_and_no_msgid() {
        let truncated = &fixture("text")[..40];
        assert!(matches!(
            ArchivedMessage::parse(truncated),
            Err(MessageError::NotJson(_))
        ));
        assert!(matches!(
            ArchivedMessage::parse(b""),
            Err(MessageError::NotJson(_))
        ));
        assert!(matches!(
            ArchivedMessage::parse(b"\xff\xfe"),
            Err(MessageError::NotJson(_))
        ));
        assert_eq!(
            ArchivedMessage::parse(br#"[{"msgid":"x"}]"#),
            Err(MessageError::NotAnObject)
        );
        assert_eq!(
            ArchivedMessage::parse(b"\"text\""),
            Err(MessageError::NotAnObject)
        );
        assert_eq!(
            ArchivedMessage::parse(br#"{"action":"send","msgtype":"text"}"#),
            Err(MessageError::MissingMsgid)
        );
        assert_eq!(
            ArchivedMessage::parse(br#"{"msgid":""}"#),
            Err(MessageError::MissingMsgid)
        );
        assert_eq!(
            ArchivedMessage::parse(br#"{"msgid":null}"#),
            Err(MessageError::MissingMsgid)
        );
        assert_eq!(
            ArchivedMessage::parse(br#"{"msgid":12345}"#).unwrap().msgid,
            "12345"
        );
        assert_eq!(
            MessageError::MissingMsgid.to_string(),
            "decrypted message has no msgid"
        );
        assert_eq!(
            MessageError::NotAnObject.to_string(),
            "decrypted message is not a JSON object"
        );
    }

    #[test]
    fn numbers_as_strings_and_wrong_types_degrade_to_defaults() {
        let bytes = br#"{"msgid":"n1","action":"send","from":"zhangsan","tolist":"lisi","roomid":null,
            "msgtime":"1700000000999","msgtype":"meeting","meeting":{"topic":7,"starttime":"1700010000",
            "endtime":1700013600.0,"meetingid":"1405515101986016","status":"x","meetingtype":-3}}"#;
        let msg = ArchivedMessage::parse(bytes).unwrap();
        assert_eq!(msg.msgtime_ms, 1_700_000_000_999);
        assert_eq!(msg.tolist, vec![s("lisi")]);
        assert_eq!(msg.roomid, "");
        assert_eq!(
            msg.content,
            Content::Meeting {
                topic: s("7"),
                start_time_s: 1_700_010_000,
                end_time_s: 1_700_013_600,
                address: s(""),
                remarks: s(""),
                meetingtype: 0,
                meetingid: 1_405_515_101_986_016,
                status: 0,
            }
        );
        // A missing payload is all defaults, not an error.
        let empty =
            ArchivedMessage::parse(br#"{"msgid":"n2","action":"send","msgtype":"text"}"#).unwrap();
        assert_eq!(empty.content, text(""));
        assert!(empty.scan_texts().is_empty());
        // A payload given as a JSON string is read too.
        let as_str = br#"{"msgid":"n3","msgtype":"text","text":"{\"content\":\"in a string\"}"}"#;
        assert_eq!(
            ArchivedMessage::parse(as_str).unwrap().content,
            text("in a string")
        );
        // Oversized values saturate.
        let big = br#"{"msgid":"n4","msgtype":"redpacket","redpacket":{"type":99999999999,"totalcnt":"5","totalamount":"12.7"}}"#;
        assert!(matches!(
            ArchivedMessage::parse(big).unwrap().content,
            Content::RedPacket {
                external: false,
                kind: u32::MAX,
                total_count: 5,
                total_amount_fen: 12,
                ..
            }
        ));
    }

    #[test]
    fn vote_under_a_vote_key_and_markdown_under_info_markdown() {
        let vote = br#"{"msgid":"v1","action":"send","msgtype":"vote","vote":{"votetitle":"t","voteitem":["a","b"],"votetype":"102","voteid":"9"}}"#;
        assert_eq!(
            ArchivedMessage::parse(vote).unwrap().content,
            Content::Vote {
                votetitle: s("t"),
                voteitem: vec![s("a"), s("b")],
                votetype: 102,
                voteid: s("9")
            }
        );
        let md =
            br#"{"msgid":"md1","action":"send","msgtype":"markdown","info":{"markdown":"**hi**"}}"#;
        assert_eq!(
            ArchivedMessage::parse(md).unwrap().content,
            Content::Markdown {
                content: s("**hi**")
            }
        );
        let md2 = br#"{"msgid":"md2","msgtype":"markdown","info":{"markdown":{"content":"x"}}}"#;
        assert_eq!(
            ArchivedMessage::parse(md2).unwrap().scan_texts(),
            vec![s("x")]
        );
    }

    #[test]
    fn sender_kind_by_prefix() {
        let kind = |from: &str| {
            let json = serde_json::json!({"msgid": "k", "action": "send", "from": from, "msgtype": "text"});
            ArchivedMessage::parse(json.to_string().as_bytes())
                .unwrap()
                .sender_kind()
        };
        assert_eq!(
            kind("wmGAgeDQAAvQeaTqWwkMTxGMkvI7OOuQ"),
            SenderKind::External
        );
        assert_eq!(kind("woAJ2GCAAAd4uL12hdfsdasfdsa"), SenderKind::External);
        assert_eq!(kind("wbErxtDgAAsRWLAqXeaAaGdaU3TkyTBg"), SenderKind::Robot);
        assert_eq!(kind("XuJinSheng"), SenderKind::Staff);
        assert_eq!(kind("zhangsan"), SenderKind::Staff);
        assert_eq!(kind(""), SenderKind::Staff);
        assert_eq!(parse("markdown").sender_kind(), SenderKind::Robot);
    }

    /// xorshift64*: deterministic, no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % u64::try_from(n).unwrap()).unwrap()
        }
    }

    /// Parses and exercises every view; any panic fails the test.
    fn exercise(bytes: &[u8]) {
        let clean = sanitize_json(bytes);
        // Sanitizing twice changes nothing more.
        assert!(
            matches!(sanitize_json(&clean), Cow::Borrowed(_)),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
        if let Ok(msg) = ArchivedMessage::parse(bytes) {
            assert!(!msg.msgid.is_empty());
            let _ = (
                msg.scan_texts(),
                msg.media(),
                msg.scan_type(),
                msg.recalled_msgid(),
                msg.sender_kind(),
            );
        }
    }

    #[test]
    fn random_bytes_truncations_and_mutations_never_panic() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let alphabet: &[u8] = b"{}[]\":,\\ntu0123456789.-eE \t\n\x00\x01\x1fabc\xe4\xb8\xad";
        for _ in 0..3000 {
            let len = rng.below(64);
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    if rng.below(4) == 0 {
                        (rng.next() & 0xff) as u8
                    } else {
                        alphabet[rng.below(alphabet.len())]
                    }
                })
                .collect();
            exercise(&bytes);
            let mut obj = b"{\"msgid\":\"f\",\"msgtype\":\"mixed\",".to_vec();
            obj.extend_from_slice(&bytes);
            exercise(&obj);
        }
        for (name, _) in expected() {
            let bytes = fixture(name);
            for cut in 0..=bytes.len() {
                exercise(&bytes[..cut]);
            }
            for _ in 0..200 {
                let mut m = bytes.clone();
                for _ in 0..=rng.below(4) {
                    let at = rng.below(m.len());
                    m[at] = alphabet[rng.below(alphabet.len())];
                }
                exercise(&m);
            }
        }
    }
}
