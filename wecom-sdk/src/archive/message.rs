//! TEMPORARY stub of the message parser's API (replaced by the real parser).
#![allow(missing_docs)]
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("not an object")]
    NotAnObject,
    #[error("no msgid")]
    MissingMsgid,
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action { Send, Recall, Switch, Other(String) }
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenderKind { Staff, External, Robot }
#[derive(Debug, Clone, PartialEq)]
pub enum Content { Unknown }
#[derive(Debug, Clone, PartialEq)]
pub struct MediaRef { pub sdkfileid: String, pub md5sum: Option<String>, pub size: Option<u64>, pub kind: String, pub file_name: Option<String>, pub file_ext: Option<String> }
#[derive(Debug, Clone, PartialEq)]
pub struct ArchivedMessage { pub msgid: String, pub action: Action, pub from: String, pub tolist: Vec<String>, pub roomid: String, pub msgtime_ms: i64, pub msgtype: String, pub content: Content, pub raw: serde_json::Value }
impl ArchivedMessage {
    pub fn parse(bytes: &[u8]) -> Result<Self, MessageError> {
        let raw: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| MessageError::NotJson(e.to_string()))?;
        let s = |k: &str| raw.get(k).and_then(|v| v.as_str()).unwrap_or("").to_owned();
        Ok(Self { msgid: s("msgid"), action: Action::Send, from: s("from"), tolist: vec![], roomid: s("roomid"), msgtime_ms: raw.get("msgtime").and_then(|v| v.as_i64()).unwrap_or(0), msgtype: s("msgtype"), content: Content::Unknown, raw })
    }
    pub fn scan_texts(&self) -> Vec<String> { vec![] }
    pub fn media(&self) -> Vec<MediaRef> { vec![] }
    pub fn scan_type(&self) -> &str { &self.msgtype }
    pub fn recalled_msgid(&self) -> Option<&str> { None }
    pub fn sender_kind(&self) -> SenderKind { SenderKind::Staff }
}
