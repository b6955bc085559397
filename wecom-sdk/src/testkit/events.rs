//! The plaintext XML of the callbacks WeCom pushes (protocol reference §3), built exactly as the
//! examples there: strings in CDATA, numbers plain.

use std::fmt::Write as _;

/// One `<xml>…</xml>` document under construction.
pub(crate) struct EventXml(String);

impl EventXml {
    /// The header every system event carries (`FromUserName` = `sys`, `MsgType` = `event`).
    pub(crate) fn system(corp_id: &str, create_time: i64, event: &str) -> Self {
        let mut x = Self(String::with_capacity(512));
        x.0.push_str("<xml>");
        x.text("ToUserName", corp_id)
            .text("FromUserName", "sys")
            .number("CreateTime", create_time)
            .text("MsgType", "event")
            .text("Event", event);
        x
    }

    /// The header of a message a member sent to an app.
    pub(crate) fn message(corp_id: &str, from: &str, create_time: i64, msg_type: &str) -> Self {
        let mut x = Self(String::with_capacity(512));
        x.0.push_str("<xml>");
        x.text("ToUserName", corp_id)
            .text("FromUserName", from)
            .number("CreateTime", create_time)
            .text("MsgType", msg_type);
        x
    }

    /// `<name><![CDATA[value]]></name>`; a `]]>` inside the value is split across two sections.
    pub(crate) fn text(&mut self, name: &str, value: &str) -> &mut Self {
        let _ = write!(
            self.0,
            "<{name}><![CDATA[{}]]></{name}>",
            value.replace("]]>", "]]]]><![CDATA[>")
        );
        self
    }

    /// `<name>value</name>` for a number.
    pub(crate) fn number(&mut self, name: &str, value: i64) -> &mut Self {
        let _ = write!(self.0, "<{name}>{value}</{name}>");
        self
    }

    /// `<name><Item><![CDATA[a]]></Item>…</name>`.
    pub(crate) fn items(&mut self, name: &str, items: &[String]) -> &mut Self {
        let _ = write!(self.0, "<{name}>");
        for item in items {
            self.text("Item", item);
        }
        let _ = write!(self.0, "</{name}>");
        self
    }

    /// The finished document.
    pub(crate) fn finish(&mut self) -> String {
        let mut out = std::mem::take(&mut self.0);
        out.push_str("</xml>");
        out
    }
}

/// A `change_external_contact` event (§3.1) with its common fields.
pub(crate) fn external_contact(
    corp_id: &str,
    create_time: i64,
    change_type: &str,
    userid: &str,
    external_userid: &str,
) -> EventXml {
    let mut x = EventXml::system(corp_id, create_time, "change_external_contact");
    x.text("ChangeType", change_type)
        .text("UserID", userid)
        .text("ExternalUserID", external_userid);
    x
}

/// A `change_external_chat` event (§3.2) with its common fields.
pub(crate) fn external_chat(
    corp_id: &str,
    create_time: i64,
    chat_id: &str,
    change_type: &str,
) -> EventXml {
    let mut x = EventXml::system(corp_id, create_time, "change_external_chat");
    x.text("ChatId", chat_id).text("ChangeType", change_type);
    x
}

/// A `change_external_tag` event (§3.3).
pub(crate) fn external_tag(
    corp_id: &str,
    create_time: i64,
    id: &str,
    tag_type: &str,
    change_type: &str,
) -> String {
    EventXml::system(corp_id, create_time, "change_external_tag")
        .text("Id", id)
        .text("TagType", tag_type)
        .text("ChangeType", change_type)
        .finish()
}

/// A `change_contact` event (§3.4) about one member.
pub(crate) fn contact_user(
    corp_id: &str,
    create_time: i64,
    change_type: &str,
    userid: &str,
) -> EventXml {
    let mut x = EventXml::system(corp_id, create_time, "change_contact");
    x.text("ChangeType", change_type).text("UserID", userid);
    x
}

/// `msgaudit_notify` (§3.5).
pub(crate) fn msgaudit_notify(corp_id: &str, create_time: i64, agent_id: i64) -> String {
    let mut x = EventXml(String::with_capacity(256));
    x.0.push_str("<xml>");
    x.text("ToUserName", corp_id)
        .text("FromUserName", "sys")
        .number("CreateTime", create_time)
        .text("MsgType", "event")
        .number("AgentID", agent_id)
        .text("Event", "msgaudit_notify");
    x.finish()
}

/// A text message a member sent to an app (§3.6).
pub(crate) fn app_text(
    corp_id: &str,
    create_time: i64,
    agent_id: i64,
    from: &str,
    content: &str,
    msg_id: i64,
) -> String {
    EventXml::message(corp_id, from, create_time, "text")
        .text("Content", content)
        .number("MsgId", msg_id)
        .number("AgentID", agent_id)
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_parse_as_the_events_they_claim_to_be() {
        let xml = external_contact("ww1", 1_700_000_000, "add_external_contact", "lisi", "wm1")
            .text("State", "expo]]>2024")
            .finish();
        let parsed = crate::parse_event(&xml).unwrap();
        let crate::CallbackEvent::ExternalContact(crate::event::ExternalContactEvent::Added(a)) =
            parsed.event
        else {
            panic!("not an add: {xml}");
        };
        assert_eq!(a.state.as_deref(), Some("expo]]>2024"));
        assert_eq!(parsed.header.create_time, Some(1_700_000_000));
    }
}
