//! App messages to staff (`message/send`, §4.3): text, markdown and text cards, with the
//! per-recipient limits of §4.7 counted before sending (WeCom silently drops the excess).

use std::collections::BTreeSet;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

use super::client::{Bucket, Request, WecomClient};
use super::config::AppCredentials;
use super::error::ApiError;
use super::wire::{check_chars, invalid, pipe_join, string_or_number};
use crate::ids::UserId;

const API: &str = "message/send";
/// Longest `duplicate_check_interval` WeCom accepts (4 h).
pub const MAX_DUPLICATE_CHECK_SECS: u32 = 4 * 3600;

/// What a message says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageBody {
    /// Plain text (links as `<a href>`).
    Text {
        /// The text.
        content: String,
    },
    /// WeCom's markdown subset (shown in the WeCom client only).
    Markdown {
        /// The markdown.
        content: String,
    },
    /// A card with a title, an HTML-ish description and a link.
    TextCard {
        /// Title.
        title: String,
        /// Description (`<div class="gray|normal|highlight">`).
        description: String,
        /// Where the card leads (required).
        url: String,
        /// Button text (≤ 4 characters; WeCom's default 详情).
        btntxt: Option<String>,
    },
}

impl MessageBody {
    /// WeCom's `msgtype`, also the key of the body object.
    pub fn msgtype(&self) -> &'static str {
        match self {
            Self::Text { .. } => "text",
            Self::Markdown { .. } => "markdown",
            Self::TextCard { .. } => "textcard",
        }
    }
}

/// A `message/send` request. Serializes to WeCom's JSON:
/// `{"touser":"a|b","toparty":"1|2","totag":"3","msgtype":"textcard","agentid":1000002,
/// "textcard":{…},"enable_duplicate_check":1,"duplicate_check_interval":1800}`
/// (empty receiver lists are left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppMessage {
    /// Members (≤ 1000; `@all` is accepted and then no per-member bucket applies).
    pub touser: Vec<UserId>,
    /// Departments (≤ 100).
    pub toparty: Vec<i64>,
    /// Tags of the contacts directory (≤ 100).
    pub totag: Vec<i64>,
    /// The sending app.
    pub agentid: i64,
    /// The content.
    pub body: MessageBody,
    /// Let WeCom drop a repeat of the same content inside the interval.
    pub enable_duplicate_check: bool,
    /// Seconds (WeCom's default 1800, at most [`MAX_DUPLICATE_CHECK_SECS`]).
    pub duplicate_check_interval: Option<u32>,
}

impl AppMessage {
    /// A message from app `agentid` to members `touser`, without duplicate check.
    pub fn to_users(agentid: i64, touser: Vec<UserId>, body: MessageBody) -> Self {
        Self {
            touser,
            toparty: Vec::new(),
            totag: Vec::new(),
            agentid,
            body,
            enable_duplicate_check: false,
            duplicate_check_interval: None,
        }
    }

    fn validate(&self) -> Result<(), ApiError> {
        if self.touser.is_empty() && self.toparty.is_empty() && self.totag.is_empty() {
            return Err(invalid(
                API,
                "touser, toparty and totag cannot all be empty",
            ));
        }
        for (field, len, max) in [
            ("touser", self.touser.len(), 1000),
            ("toparty", self.toparty.len(), 100),
            ("totag", self.totag.len(), 100),
        ] {
            if len > max {
                return Err(invalid(
                    API,
                    format!("{field} holds {len} receivers (max {max})"),
                ));
            }
        }
        if self
            .duplicate_check_interval
            .is_some_and(|s| s > MAX_DUPLICATE_CHECK_SECS)
        {
            return Err(invalid(
                API,
                format!("duplicate_check_interval exceeds {MAX_DUPLICATE_CHECK_SECS} s"),
            ));
        }
        match &self.body {
            MessageBody::Text { content } | MessageBody::Markdown { content } => {
                if content.is_empty() {
                    return Err(invalid(API, "content cannot be empty"));
                }
            }
            MessageBody::TextCard {
                title,
                description,
                url,
                btntxt,
            } => {
                if title.is_empty() || description.is_empty() || url.is_empty() {
                    return Err(invalid(API, "textcard needs title, description and url"));
                }
                check_chars(API, "btntxt", btntxt.as_deref(), 4)?;
            }
        }
        Ok(())
    }

    /// Members this message counts against, once each (WeCom ids are case-insensitive).
    fn counted_recipients(&self) -> BTreeSet<String> {
        self.touser
            .iter()
            .map(|u| u.as_str().to_ascii_lowercase())
            .filter(|u| u != "@all")
            .collect()
    }
}

impl Serialize for AppMessage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Content<'a> {
            content: &'a str,
        }
        #[derive(Serialize)]
        struct TextCard<'a> {
            title: &'a str,
            description: &'a str,
            url: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            btntxt: Option<&'a str>,
        }
        let mut map = serializer.serialize_map(None)?;
        if !self.touser.is_empty() {
            map.serialize_entry("touser", &pipe_join(&self.touser))?;
        }
        if !self.toparty.is_empty() {
            map.serialize_entry("toparty", &pipe_join(&self.toparty))?;
        }
        if !self.totag.is_empty() {
            map.serialize_entry("totag", &pipe_join(&self.totag))?;
        }
        map.serialize_entry("msgtype", self.body.msgtype())?;
        map.serialize_entry("agentid", &self.agentid)?;
        match &self.body {
            MessageBody::Text { content } | MessageBody::Markdown { content } => {
                map.serialize_entry(self.body.msgtype(), &Content { content })?;
            }
            MessageBody::TextCard {
                title,
                description,
                url,
                btntxt,
            } => {
                let card = TextCard {
                    title,
                    description,
                    url,
                    btntxt: btntxt.as_deref(),
                };
                map.serialize_entry("textcard", &card)?;
            }
        }
        map.serialize_entry(
            "enable_duplicate_check",
            &u8::from(self.enable_duplicate_check),
        )?;
        if let Some(interval) = self.duplicate_check_interval {
            map.serialize_entry("duplicate_check_interval", &interval)?;
        }
        map.end()
    }
}

/// What `message/send` reports: receivers it could not reach (`|`-separated, lowercased by
/// WeCom) and the id to recall the message with.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MessageSendResult {
    /// Unknown members.
    #[serde(default, deserialize_with = "string_or_number")]
    pub invaliduser: String,
    /// Unknown departments.
    #[serde(default, deserialize_with = "string_or_number")]
    pub invalidparty: String,
    /// Unknown tags.
    #[serde(default, deserialize_with = "string_or_number")]
    pub invalidtag: String,
    /// Members without a licence.
    #[serde(default, deserialize_with = "string_or_number")]
    pub unlicenseduser: String,
    /// Recall id (valid 24 h).
    #[serde(default, deserialize_with = "string_or_number")]
    pub msgid: String,
}

impl MessageSendResult {
    /// The unreachable members, split (empty when all were reached).
    pub fn invalid_users(&self) -> Vec<&str> {
        self.invaliduser
            .split('|')
            .filter(|s| !s.is_empty())
            .collect()
    }
}

impl WecomClient {
    /// `POST message/send`. Counts one unit per member in `touser` in their minute and hour
    /// buckets for this app (§4.7) and fails with [`ApiError::RateLimited`] rather than let WeCom
    /// drop the message. Not retried after a timeout: the message may have been delivered.
    pub async fn message_send(
        &self,
        app: &AppCredentials,
        message: &AppMessage,
    ) -> Result<MessageSendResult, ApiError> {
        message.validate()?;
        let limits = self.limits();
        let mut buckets = Vec::new();
        for userid in message.counted_recipients() {
            let prefix = format!("wecom:rl:{}:msg:{}:{userid}", app.corp_id, message.agentid);
            buckets.push(Bucket::per_minute(
                format!("{prefix}:m"),
                limits.message_per_user_per_minute,
            ));
            buckets.push(Bucket::per_hour(
                format!("{prefix}:h"),
                limits.message_per_user_per_hour,
            ));
        }
        let request = Request::post(API, message)?.with_buckets(buckets);
        self.call(app, request).await
    }
}
