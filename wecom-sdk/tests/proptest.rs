//! Properties: crypto round trips for any message and prefix, the signature covers every byte of
//! `Encrypt`, and nothing that reads outside input panics, whatever it is given.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers and proptest bodies are test code; a failure should stop the test loudly"
)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use proptest::prelude::*;
use wecom_sdk::event::{CallbackEvent, ExternalContactEvent};
use wecom_sdk::{
    CallbackCrypto, CryptoError, EventError, parse_envelope, parse_event, parse_header,
};

const TOKEN: &str = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo";
const KEY: &str = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt";
const CORP: &str = "ww1436e0e65a779aee";

fn crypto() -> CallbackCrypto {
    CallbackCrypto::new(TOKEN, KEY, CORP).unwrap()
}

fn message() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..2048)
}

// --- crypto --------------------------------------------------------------------------------------

proptest! {
    #[test]
    fn encrypt_then_decrypt_round_trips(msg in message(), random in any::<[u8; 16]>()) {
        let c = crypto();
        let encrypt = c.encrypt_with_random(&random, &msg);
        let raw = STANDARD.decode(&encrypt).unwrap();
        prop_assert_eq!(raw.len() % 32, 0);
        let pad = raw.len() - (20 + msg.len() + CORP.len());
        prop_assert!((1..=32).contains(&pad));
        let decrypted = c.decrypt(&encrypt).unwrap();
        prop_assert_eq!(decrypted.random, random);
        prop_assert_eq!(&decrypted.msg, &msg);
        prop_assert_eq!(decrypted.receive_id.as_str(), CORP);
        let signature = c.sign("1700000000", "nonce", &encrypt);
        prop_assert_eq!(c.open(&signature, "1700000000", "nonce", &encrypt).unwrap(), msg);
    }

    #[test]
    fn any_change_to_encrypt_breaks_the_signature(
        msg in message(),
        random in any::<[u8; 16]>(),
        at in any::<prop::sample::Index>(),
        replacement in prop::sample::select(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/= %".chars().collect::<Vec<_>>()
        ),
    ) {
        let c = crypto();
        let encrypt = c.encrypt_with_random(&random, &msg);
        let signature = c.sign("1700000000", "1234", &encrypt);
        let i = at.index(encrypt.len());
        let original = encrypt.as_bytes()[i] as char;
        prop_assume!(original != replacement);
        let mut changed = encrypt;
        changed.replace_range(i..=i, replacement.encode_utf8(&mut [0; 4]));
        prop_assert_eq!(c.open(&signature, "1700000000", "1234", &changed), Err(CryptoError::InvalidSignature));
    }

    #[test]
    fn a_flipped_ciphertext_byte_is_caught_by_the_signature_and_decrypt_does_not_panic(
        msg in message(),
        random in any::<[u8; 16]>(),
        at in any::<prop::sample::Index>(),
        mask in 1u8..=255,
    ) {
        let c = crypto();
        let encrypt = c.encrypt_with_random(&random, &msg);
        let signature = c.sign("1700000000", "1234", &encrypt);
        let mut raw = STANDARD.decode(&encrypt).unwrap();
        let i = at.index(raw.len());
        raw[i] ^= mask;
        let tampered = STANDARD.encode(&raw);
        prop_assert_eq!(c.open(&signature, "1700000000", "1234", &tampered), Err(CryptoError::InvalidSignature));
        // CBC is malleable: without the signature a flip may or may not be noticed. It must not panic,
        // and if it "decrypts", it is not the original message in the original block.
        if let Ok(d) = c.decrypt(&tampered) {
            prop_assert!(d.random != random || d.msg != msg || d.receive_id != CORP);
        }
    }

    #[test]
    fn decrypt_never_panics_on_any_string(s in any::<String>()) {
        let _ = crypto().decrypt(&s);
    }

    #[test]
    fn decrypt_never_panics_on_any_well_sized_ciphertext(blocks in proptest::collection::vec(any::<[u8; 16]>(), 1..40)) {
        // Valid base64 of a whole number of AES blocks reaches the padding and length checks.
        let raw: Vec<u8> = blocks.concat();
        match crypto().decrypt(&STANDARD.encode(&raw)) {
            Ok(_) | Err(CryptoError::DecryptAes(_) | CryptoError::IllegalBuffer(_) | CryptoError::ReceiveIdMismatch { .. }) => {}
            Err(other) => prop_assert!(false, "unexpected {other:?}"),
        }
    }

    #[test]
    fn every_pad_value_round_trips(extra in 0usize..64) {
        let c = crypto();
        let msg = vec![b'x'; extra];
        prop_assert_eq!(c.decrypt(&c.encrypt(&msg)).unwrap().msg, msg);
    }
}

// --- parsers never panic -------------------------------------------------------------------------

proptest! {
    #[test]
    fn parse_envelope_never_panics(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_envelope(&body);
    }

    #[test]
    fn parse_header_never_panics(plaintext in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_header(&plaintext);
    }

    #[test]
    fn parse_event_never_panics(plaintext in any::<String>()) {
        let _ = parse_event(&plaintext);
    }

    #[test]
    fn parsers_never_panic_on_xml_looking_strings(s in "(<[/!?]?[A-Za-z_]{0,12}>|<!\\[CDATA\\[|\\]\\]>|&[a-z#x0-9]{0,6};?|[ -~]|\\PC){0,80}") {
        let _ = parse_envelope(s.as_bytes());
        let _ = parse_header(s.as_bytes());
        let _ = parse_event(&s);
    }

    #[test]
    fn structured_events_parse_or_fail_cleanly(doc in event_document()) {
        let result = parse_event(&doc);
        prop_assert!(!matches!(result, Err(EventError::Xml(_))), "generated documents are well-formed: {result:?}\n{doc}");
        if let Ok(parsed) = result {
            prop_assert_eq!(&parsed.header, &parse_header(doc.as_bytes()).unwrap());
            if let CallbackEvent::Unknown { raw, .. } = &parsed.event {
                prop_assert_eq!(raw, &doc);
            }
        }
    }

    #[test]
    fn ids_read_the_same_in_cdata_or_plain(
        user in "[A-Za-z0-9_.@-]{1,64}",
        customer in "w[mo][A-Za-z0-9_-]{1,40}",
        cdata in any::<[bool; 3]>(),
    ) {
        let wrap = |v: &str, c: bool| if c { format!("<![CDATA[{v}]]>") } else { v.to_owned() };
        let doc = format!(
            "<xml><ToUserName>{CORP}</ToUserName><FromUserName>sys</FromUserName><CreateTime>1</CreateTime>\
             <MsgType>event</MsgType><Event>change_external_contact</Event><ChangeType>{}</ChangeType>\
             <UserID>{}</UserID><ExternalUserID>{}</ExternalUserID></xml>",
            wrap("del_follow_user", cdata[0]), wrap(&user, cdata[1]), wrap(&customer, cdata[2]),
        );
        let CallbackEvent::ExternalContact(ExternalContactEvent::CustomerDeletedStaff(relation)) =
            parse_event(&doc).unwrap().event
        else {
            panic!("not del_follow_user: {doc}");
        };
        prop_assert_eq!(relation.user_id.as_str(), user.as_str());
        prop_assert_eq!(relation.external_user_id.as_str(), customer.as_str());
    }
}

/// A well-formed `<xml>` document with a real-looking header and a random mix of the elements the
/// events read, with values that are sometimes right, sometimes wrong, CDATA or plain.
fn event_document() -> impl Strategy<Value = String> {
    let msg_type = prop::sample::select(vec![
        "event", "text", "image", "voice", "video", "location", "link", "file",
    ]);
    let event = prop::sample::select(vec![
        "change_external_contact",
        "change_external_chat",
        "change_external_tag",
        "change_contact",
        "msgaudit_notify",
        "click",
        "view",
        "enter_agent",
        "subscribe",
    ]);
    let change_type = prop::sample::select(vec![
        "add_external_contact",
        "edit_external_contact",
        "add_half_external_contact",
        "del_external_contact",
        "del_follow_user",
        "transfer_fail",
        "msg_audit_approved",
        "create",
        "update",
        "dismiss",
        "delete",
        "shuffle",
        "create_user",
        "update_user",
        "delete_user",
        "create_party",
        "update_party",
        "delete_party",
        "update_tag",
        "new_thing",
    ]);
    let body = proptest::collection::vec(element(), 0..24);
    (msg_type, event, change_type, body, any::<bool>()).prop_map(|(m, e, c, body, pretty)| {
        let sep = if pretty { "\n  " } else { "" };
        format!(
            "<xml>{sep}<ToUserName><![CDATA[{CORP}]]></ToUserName>{sep}<FromUserName>lisi</FromUserName>{sep}\
             <CreateTime>1718000000</CreateTime>{sep}<MsgType>{m}</MsgType>{sep}<Event><![CDATA[{e}]]></Event>{sep}\
             <ChangeType>{c}</ChangeType>{sep}{}</xml>",
            body.join(sep)
        )
    })
}

fn element() -> impl Strategy<Value = String> {
    let name = prop::sample::select(vec![
        "UserID",
        "ExternalUserID",
        "State",
        "WelcomeCode",
        "Source",
        "FailReason",
        "ChatId",
        "UpdateDetail",
        "JoinScene",
        "QuitScene",
        "MemChangeCnt",
        "LastMemVer",
        "CurMemVer",
        "Id",
        "TagType",
        "StrategyId",
        "NewUserID",
        "Name",
        "Department",
        "MainDepartment",
        "IsLeaderInDept",
        "DirectLeader",
        "Gender",
        "Status",
        "ParentId",
        "Order",
        "TagId",
        "AddUserItems",
        "DelUserItems",
        "AddPartyItems",
        "DelPartyItems",
        "Content",
        "MediaId",
        "Location_X",
        "Location_Y",
        "Scale",
        "Label",
        "EventKey",
        "MsgId",
        "AgentID",
        "Unknown",
    ]);
    let value = prop_oneof![
        Just(String::new()),
        "[A-Za-z0-9_]{1,20}",
        "-?[0-9]{1,12}",
        "[0-9]{1,25}",
        "[0-9, ]{0,20}",
        "[01,]{0,9}",
        "[a-z ,]{0,20}",
        "-?[0-9]{1,3}\\.[0-9]{1,8}",
        "\\PC{0,20}",
        Just("DELETE_BY_TRANSFER".to_owned()),
        Just("tag_group".to_owned()),
        Just("add_member".to_owned()),
    ];
    let leaf = (name, value, any::<bool>()).prop_map(|(n, v, cdata)| {
        if cdata {
            format!("<{n}><![CDATA[{}]]></{n}>", v.replace("]]>", ""))
        } else {
            format!(
                "<{n}>{}</{n}>",
                v.replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;")
            )
        }
    });
    let items = proptest::collection::vec("[A-Za-z0-9_]{0,12}", 0..4).prop_map(|items| {
        let inner: String = items.iter().map(|i| format!("<Item>{i}</Item>")).collect();
        format!("<MemChangeList>{inner}</MemChangeList>")
    });
    let ext_attr = proptest::collection::vec(
        (
            prop::sample::select(vec![
                "<Type>0</Type>",
                "<Type>1</Type>",
                "<Type>2</Type>",
                "<Type>x</Type>",
                "",
            ]),
            "[a-z]{0,5}",
            prop::sample::select(vec![
                "<Text><Value>v</Value></Text>",
                "<Web><Title>t</Title><Url>u</Url></Web>",
                "",
            ]),
        ),
        0..4,
    )
    .prop_map(|items| {
        let inner: String = items
            .iter()
            .map(|(kind, name, value)| format!("<Item><Name>{name}</Name>{kind}{value}</Item>"))
            .collect();
        format!("<ExtAttr>{inner}</ExtAttr>")
    });
    prop_oneof![8 => leaf, 1 => items, 1 => ext_attr]
}
