//! The outer layer of a callback: the POST body (`<xml><ToUserName/><Encrypt/><AgentID/></xml>`,
//! or its JSON twin) and the header fields of the decrypted message inside it.

use std::borrow::Cow;

use crate::xml::{self, XmlError};

/// Why a body or a decrypted message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The body is not UTF-8.
    #[error("not UTF-8")]
    NotUtf8,
    /// The XML is malformed or refused (see [`XmlError`]).
    #[error(transparent)]
    Xml(#[from] XmlError),
    /// The JSON is malformed or not an object.
    #[error("malformed JSON: {0}")]
    Json(String),
    /// The body has no `Encrypt` element (-40002 in the official samples).
    #[error("no Encrypt element")]
    NoEncrypt,
    /// An element the envelope carries once appears twice: which one counts would be a guess
    /// (and only `Encrypt` is signed), so the body is refused.
    #[error("{0} appears more than once")]
    Repeated(&'static str),
}

/// A callback body as WeCom posts it. Only `encrypt` is covered by the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The corp id (or suite id for third-party instruction callbacks); informational only.
    pub to_user_name: Option<Cow<'a, str>>,
    /// The base64 ciphertext, exactly as sent (no trimming: it is what was signed).
    pub encrypt: Cow<'a, str>,
    /// The receiving app's agent id; may be absent or empty.
    pub agent_id: Option<Cow<'a, str>>,
}

/// Reads a POST body: XML, or JSON when the first non-blank byte is `{`.
pub fn parse_envelope(body: &[u8]) -> Result<Envelope<'_>, EnvelopeError> {
    let text = std::str::from_utf8(body).map_err(|_| EnvelopeError::NotUtf8)?;
    if text.trim_start().starts_with('{') {
        return parse_json_envelope(text);
    }
    let mut to_user_name = None;
    let mut encrypt = None;
    let mut agent_id = None;
    let mut repeated = None;
    xml::walk(text, |leaf| {
        if leaf.path.len() != 1 {
            return;
        }
        let (name, slot) = match leaf.name() {
            "ToUserName" => ("ToUserName", &mut to_user_name),
            "Encrypt" => ("Encrypt", &mut encrypt),
            "AgentID" => ("AgentID", &mut agent_id),
            _ => return,
        };
        if slot.is_some() {
            repeated.get_or_insert(name);
        }
        *slot = Some(leaf.text);
    })?;
    if let Some(name) = repeated {
        return Err(EnvelopeError::Repeated(name));
    }
    Ok(Envelope {
        to_user_name,
        encrypt: encrypt.ok_or(EnvelopeError::NoEncrypt)?,
        agent_id,
    })
}

fn parse_json_envelope(text: &str) -> Result<Envelope<'static>, EnvelopeError> {
    // Read as a list of pairs: a JSON object may repeat a key, and a map would keep the last.
    let pairs: Pairs =
        serde_json::from_str(text).map_err(|e| EnvelopeError::Json(e.to_string()))?;
    // The official JSON samples disagree on case (`encrypt` vs `Encrypt`): accept both, once.
    let field = |name: &'static str, label: &'static str| {
        let mut found = pairs.0.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name));
        let first = found.next();
        if found.next().is_some() {
            return Err(EnvelopeError::Repeated(label));
        }
        Ok(first.and_then(|(_, v)| json_scalar(v)).map(Cow::Owned))
    };
    Ok(Envelope {
        to_user_name: field("tousername", "ToUserName")?,
        encrypt: field("encrypt", "Encrypt")?.ok_or(EnvelopeError::NoEncrypt)?,
        agent_id: field("agentid", "AgentID")?,
    })
}

/// A JSON object's members in order, repeats kept.
struct Pairs(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Pairs {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Pairs;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Pairs, A::Error> {
                let mut pairs = Vec::new();
                // A callback envelope has three members; a body of thousands is not one.
                while let Some(pair) = map.next_entry::<String, serde_json::Value>()? {
                    if pairs.len() >= 64 {
                        return Err(serde::de::Error::custom("too many members"));
                    }
                    pairs.push(pair);
                }
                Ok(Pairs(pairs))
            }
        }
        de.deserialize_map(Visit)
    }
}

fn json_scalar(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The header every decrypted message carries; enough to route, de-duplicate and index it.
/// The typed event is read later from the stored plaintext (see [`crate::event`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageHeader {
    /// `ToUserName`: the corp id.
    pub to_user_name: String,
    /// `FromUserName`: `sys` for system events, the staff userid for app messages.
    pub from_user_name: String,
    /// `CreateTime` in unix seconds, when present and numeric.
    pub create_time: Option<i64>,
    /// `MsgType`: `event`, `text`, `image`…; empty when absent (third-party suite callbacks).
    pub msg_type: String,
    /// `Event`, for `MsgType=event`.
    pub event: Option<String>,
    /// `ChangeType`, for the `change_*` events.
    pub change_type: Option<String>,
    /// `MsgId`, for app messages.
    pub msg_id: Option<String>,
    /// `AgentID`, for app messages and some events.
    pub agent_id: Option<String>,
}

impl MessageHeader {
    /// True for messages a user sent to an app (they carry a `MsgId` and are de-duplicated by it).
    pub fn is_app_message(&self) -> bool {
        self.msg_type != "event" && self.msg_id.as_deref().is_some_and(|id| !id.is_empty())
    }
}

/// Reads the header of a decrypted message (XML, or JSON when it starts with `{`). The whole
/// document is checked, so a malformed one is refused here, before anything is stored.
pub fn parse_header(plaintext: &[u8]) -> Result<MessageHeader, EnvelopeError> {
    let text = std::str::from_utf8(plaintext).map_err(|_| EnvelopeError::NotUtf8)?;
    parse_header_str(text)
}

/// [`parse_header`] for a message already known to be UTF-8.
pub fn parse_header_str(text: &str) -> Result<MessageHeader, EnvelopeError> {
    if text.trim_start().starts_with('{') {
        return parse_json_header(text);
    }
    let mut fields = HeaderFields::default();
    xml::walk(text, |leaf| {
        if let [name] = leaf.path
            && let Some(slot) = fields.slot(name)
        {
            *slot = Some(leaf.text);
        }
    })?;
    Ok(fields.into_header())
}

/// The header elements of an XML message as found (the last one wins). Shared by
/// [`parse_header`] and [`crate::event::parse_event`], so both read the header the same way.
#[derive(Debug, Default)]
pub(crate) struct HeaderFields<'a> {
    to_user_name: Option<Cow<'a, str>>,
    from_user_name: Option<Cow<'a, str>>,
    create_time: Option<Cow<'a, str>>,
    msg_type: Option<Cow<'a, str>>,
    event: Option<Cow<'a, str>>,
    change_type: Option<Cow<'a, str>>,
    msg_id: Option<Cow<'a, str>>,
    agent_id: Option<Cow<'a, str>>,
}

impl<'a> HeaderFields<'a> {
    /// Where a top-level element named `name` goes, if it is a header element.
    pub(crate) fn slot(&mut self, name: &str) -> Option<&mut Option<Cow<'a, str>>> {
        Some(match name {
            "ToUserName" => &mut self.to_user_name,
            "FromUserName" => &mut self.from_user_name,
            "CreateTime" => &mut self.create_time,
            "MsgType" => &mut self.msg_type,
            "Event" => &mut self.event,
            "ChangeType" => &mut self.change_type,
            "MsgId" => &mut self.msg_id,
            "AgentID" => &mut self.agent_id,
            _ => return None,
        })
    }

    /// The header: texts verbatim (present-but-empty stays `Some("")`), `CreateTime` as a number
    /// when it is one.
    pub(crate) fn into_header(self) -> MessageHeader {
        let owned = |t: Option<Cow<'a, str>>| t.map(Cow::into_owned);
        MessageHeader {
            to_user_name: owned(self.to_user_name).unwrap_or_default(),
            from_user_name: owned(self.from_user_name).unwrap_or_default(),
            create_time: self.create_time.and_then(|t| t.trim().parse().ok()),
            msg_type: owned(self.msg_type).unwrap_or_default(),
            event: owned(self.event),
            change_type: owned(self.change_type),
            msg_id: owned(self.msg_id),
            agent_id: owned(self.agent_id),
        }
    }
}

fn parse_json_header(text: &str) -> Result<MessageHeader, EnvelopeError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| EnvelopeError::Json(e.to_string()))?;
    let object = value
        .as_object()
        .ok_or_else(|| EnvelopeError::Json("not an object".into()))?;
    let field = |name: &str| {
        object
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| json_scalar(v))
    };
    Ok(MessageHeader {
        to_user_name: field("ToUserName").unwrap_or_default(),
        from_user_name: field("FromUserName").unwrap_or_default(),
        create_time: field("CreateTime").and_then(|t| t.parse().ok()),
        msg_type: field("MsgType").unwrap_or_default(),
        event: field("Event"),
        change_type: field("ChangeType"),
        msg_id: field("MsgId"),
        agent_id: field("AgentID"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_xml_envelope_with_whitespace_between_elements() {
        let body = b"<xml><ToUserName><![CDATA[ww1]]></ToUserName>\n<Encrypt><![CDATA[abc+/=]]></Encrypt>\n<AgentID><![CDATA[1000002]]></AgentID>\n</xml>";
        let env = parse_envelope(body).unwrap();
        assert_eq!(env.encrypt, "abc+/=");
        assert_eq!(env.to_user_name.as_deref(), Some("ww1"));
        assert_eq!(env.agent_id.as_deref(), Some("1000002"));
    }

    #[test]
    fn reads_json_envelope_in_either_case() {
        let lower =
            parse_envelope(br#"{"tousername":"ww1","encrypt":"abc","agentid":218}"#).unwrap();
        assert_eq!(
            (lower.encrypt.as_ref(), lower.agent_id.as_deref()),
            ("abc", Some("218"))
        );
        let upper =
            parse_envelope(br#"{"ToUserName":"ww1","Encrypt":"abc","AgentID":218}"#).unwrap();
        assert_eq!(upper.encrypt, "abc");
    }

    #[test]
    fn envelope_without_encrypt_is_refused() {
        assert_eq!(
            parse_envelope(b"<xml><ToUserName>x</ToUserName></xml>"),
            Err(EnvelopeError::NoEncrypt)
        );
        for (body, name) in [
            (&b"<xml><Encrypt>a</Encrypt><Encrypt>b</Encrypt></xml>"[..], "Encrypt"),
            (b"<xml><ToUserName>a</ToUserName><Encrypt>x</Encrypt><ToUserName>b</ToUserName></xml>", "ToUserName"),
            (b"<xml><Encrypt>x</Encrypt><AgentID>1</AgentID><AgentID>2</AgentID></xml>", "AgentID"),
            (br#"{"Encrypt":"a","Encrypt":"b"}"#, "Encrypt"),
            (br#"{"encrypt":"a","Encrypt":"b"}"#, "Encrypt"),
            (br#"{"Encrypt":"a","AgentID":1,"agentid":2}"#, "AgentID"),
        ] {
            assert_eq!(parse_envelope(body), Err(EnvelopeError::Repeated(name)));
        }
        // Nested elements of the same name are not the envelope's.
        assert!(
            parse_envelope(b"<xml><Encrypt>a</Encrypt><x><Encrypt>b</Encrypt></x></xml>").is_ok()
        );
        assert!(matches!(
            parse_envelope(b"<xml><Encrypt>"),
            Err(EnvelopeError::Xml(_))
        ));
        assert!(matches!(
            parse_envelope(b"{\"encrypt\":"),
            Err(EnvelopeError::Json(_))
        ));
        assert_eq!(parse_envelope(&[0xff, 0xfe]), Err(EnvelopeError::NotUtf8));
    }

    #[test]
    fn header_of_event_and_app_message() {
        let ev = parse_header(b"<xml><ToUserName><![CDATA[ww1]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_contact]]></Event><ChangeType>del_external_contact</ChangeType><UserID>zhangsan</UserID></xml>").unwrap();
        assert_eq!(ev.msg_type, "event");
        assert_eq!(ev.event.as_deref(), Some("change_external_contact"));
        assert_eq!(ev.change_type.as_deref(), Some("del_external_contact"));
        assert_eq!(ev.create_time, Some(1_700_000_000));
        assert!(!ev.is_app_message());
        let msg = parse_header("<xml><ToUserName>ww1</ToUserName><FromUserName>lisi</FromUserName><CreateTime>1</CreateTime><MsgType>text</MsgType><Content>你好</Content><MsgId>7382910012345678901</MsgId><AgentID>1000002</AgentID></xml>".as_bytes()).unwrap();
        assert!(msg.is_app_message());
        assert_eq!(msg.msg_id.as_deref(), Some("7382910012345678901"));
        assert_eq!(msg.agent_id.as_deref(), Some("1000002"));
    }
}
