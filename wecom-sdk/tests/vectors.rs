//! The official WeCom crypto vectors (sets A and B) and our generated ones (set V), byte for byte,
//! in both directions, plus the negative tests of protocol reference §1.11.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers and proptest bodies are test code; a failure should stop the test loudly"
)]

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use wecom_sdk::event::{AppMessage, ExternalContactEvent};
use wecom_sdk::{
    CallbackCrypto, CallbackEvent, CryptoError, EnvelopeError, parse_envelope, parse_event,
    parse_header,
};

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../fixtures/crypto/vectors.json"
);

#[derive(Debug, Deserialize)]
struct File {
    sets: BTreeMap<String, KeySet>,
    vectors: Vec<Vector>,
}

#[derive(Debug, Deserialize)]
struct KeySet {
    token: String,
    encoding_aes_key: String,
    receive_id: String,
}

#[derive(Debug, Deserialize)]
struct Vector {
    id: String,
    set: String,
    kind: String,
    msg_signature: String,
    timestamp: String,
    nonce: String,
    encrypt: String,
    echostr_query: Option<String>,
    body: Option<String>,
    random_ascii: Option<String>,
    msg: String,
    pad: usize,
}

fn load() -> File {
    let text = std::fs::read_to_string(VECTORS).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn crypto_for(file: &File, set: &str) -> CallbackCrypto {
    let keys = &file.sets[set];
    CallbackCrypto::new(&keys.token, &keys.encoding_aes_key, &keys.receive_id).unwrap()
}

fn vector<'f>(file: &'f File, id: &str) -> &'f Vector {
    file.vectors.iter().find(|v| v.id == id).unwrap()
}

/// Standard percent-decoding, once (`+` stays `+`: this is a query value, not a form).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn the_file_holds_every_vector_of_the_reference() {
    let file = load();
    let ids: Vec<&str> = file.vectors.iter().map(|v| v.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "A-GET", "A-XML", "A-JSON", "B-GET", "B-XML", "B-JSON", "V1", "V2", "V3"
        ]
    );
}

#[test]
fn every_signature_matches() {
    let file = load();
    for v in &file.vectors {
        let crypto = crypto_for(&file, &v.set);
        assert_eq!(
            crypto.sign(&v.timestamp, &v.nonce, &v.encrypt),
            v.msg_signature,
            "{}",
            v.id
        );
        crypto
            .verify_signature(&v.msg_signature, &v.timestamp, &v.nonce, &v.encrypt)
            .unwrap();
    }
}

#[test]
fn every_vector_decrypts_to_the_expected_msg_and_receiveid_with_its_pad() {
    let file = load();
    for v in &file.vectors {
        let crypto = crypto_for(&file, &v.set);
        let decrypted = crypto
            .decrypt(&v.encrypt)
            .unwrap_or_else(|e| panic!("{}: {e}", v.id));
        assert_eq!(decrypted.msg, v.msg.as_bytes(), "{}", v.id);
        assert_eq!(
            decrypted.receive_id, file.sets[&v.set].receive_id,
            "{}",
            v.id
        );
        if let Some(random) = &v.random_ascii {
            assert_eq!(&decrypted.random, random.as_bytes(), "{}", v.id);
        }
        let ciphertext_len = STANDARD.decode(&v.encrypt).unwrap().len();
        let body_len = 20 + decrypted.msg.len() + decrypted.receive_id.len();
        assert_eq!(ciphertext_len - body_len, v.pad, "{} pad", v.id);
        assert_eq!(
            ciphertext_len % 32,
            0,
            "{}: WeCom pads to 32-byte blocks",
            v.id
        );

        let opened = crypto
            .open(&v.msg_signature, &v.timestamp, &v.nonce, &v.encrypt)
            .unwrap();
        assert_eq!(opened, v.msg.as_bytes(), "{}", v.id);
    }
}

#[test]
fn pads_above_16_decrypt() {
    // A 16-byte-block unpadder (the WeKnora bug) rejects these; ours must not.
    let file = load();
    for (id, pad) in [("A-XML", 30), ("B-XML", 22), ("V2", 32), ("V1", 25)] {
        let v = vector(&file, id);
        assert_eq!(v.pad, pad, "{id}");
        assert_eq!(
            crypto_for(&file, &v.set).decrypt(&v.encrypt).unwrap().msg,
            v.msg.as_bytes(),
            "{id}"
        );
    }
}

#[test]
fn re_encrypting_with_the_recovered_prefix_is_byte_identical() {
    let file = load();
    for v in &file.vectors {
        let crypto = crypto_for(&file, &v.set);
        let decrypted = crypto.decrypt(&v.encrypt).unwrap();
        assert_eq!(
            crypto.encrypt_with_random(&decrypted.random, &decrypted.msg),
            v.encrypt,
            "{}",
            v.id
        );
    }
}

#[test]
fn generated_vectors_come_from_the_fixed_prefix() {
    let file = load();
    for v in file.vectors.iter().filter(|v| v.kind == "generated") {
        let crypto = crypto_for(&file, &v.set);
        let encrypt = crypto.encrypt_with_random(b"0123456789abcdef", v.msg.as_bytes());
        assert_eq!(encrypt, v.encrypt, "{}", v.id);
        assert_eq!(
            crypto.sign(&v.timestamp, &v.nonce, &encrypt),
            v.msg_signature,
            "{}",
            v.id
        );
    }
}

#[test]
fn echostr_from_the_query_decodes_to_the_signed_form() {
    let file = load();
    let v = vector(&file, "A-GET");
    let query = v.echostr_query.as_deref().unwrap();
    assert!(query.contains("%2F") && query.contains("%2B") && query.contains("%3D"));
    let echostr = percent_decode(query);
    assert_eq!(echostr, v.encrypt);
    let crypto = crypto_for(&file, "A");
    let reply = crypto
        .open(&v.msg_signature, &v.timestamp, &v.nonce, &echostr)
        .unwrap();
    assert_eq!(reply, b"1616140317555161061");

    // Decoding twice is the classic bug: it turns nothing here, but a form decoder turns `+` into
    // a space, and the signature no longer matches.
    let form_decoded = echostr.replace('+', " ");
    assert_eq!(
        crypto.open(&v.msg_signature, &v.timestamp, &v.nonce, &form_decoded),
        Err(CryptoError::InvalidSignature)
    );
}

#[test]
fn every_body_carries_the_encrypt_it_was_signed_with() {
    let file = load();
    let mut seen = 0;
    for v in &file.vectors {
        let Some(body) = &v.body else { continue };
        let envelope = parse_envelope(body.as_bytes()).unwrap_or_else(|e| panic!("{}: {e}", v.id));
        assert_eq!(envelope.encrypt, v.encrypt, "{}", v.id);
        assert!(envelope.to_user_name.is_some(), "{}", v.id);
        assert!(envelope.agent_id.is_some(), "{}", v.id);
        seen += 1;
    }
    assert_eq!(seen, 4, "A-XML, A-JSON, B-XML, B-JSON");
}

#[test]
fn the_official_json_plaintexts_are_not_json() {
    let file = load();
    for v in file.vectors.iter().filter(|v| v.kind == "post_json") {
        assert!(
            matches!(parse_header(v.msg.as_bytes()), Err(EnvelopeError::Json(_))),
            "{}: `: :mycreate\"` must be refused",
            v.id
        );
    }
}

#[test]
fn the_xml_plaintexts_have_the_expected_headers_and_events() {
    let file = load();

    let a = parse_header(vector(&file, "A-XML").msg.as_bytes()).unwrap();
    assert_eq!(
        (a.to_user_name.as_str(), a.from_user_name.as_str()),
        ("wx5823bf96d3bd56c7", "mycreate")
    );
    assert_eq!(
        (a.msg_type.as_str(), a.create_time),
        ("text", Some(1_409_659_813))
    );
    assert_eq!(a.msg_id.as_deref(), Some("4561255354251345929"));
    assert_eq!(a.agent_id.as_deref(), Some("218"));
    let parsed = parse_event(&vector(&file, "A-XML").msg).unwrap();
    assert_eq!(parsed.header, a);
    assert!(matches!(
        parsed.event,
        CallbackEvent::Message { ref from, message: AppMessage::Text { ref content } }
            if from.as_str() == "mycreate" && content.as_deref() == Some("hello")
    ));

    let b = parse_event(&vector(&file, "B-XML").msg).unwrap();
    assert_eq!(b.header.from_user_name, "ChenJiaShun");
    assert_eq!(b.header.agent_id.as_deref(), Some("1000002"));
    assert!(matches!(
        b.event,
        CallbackEvent::Message { message: AppMessage::Text { ref content }, .. } if content.as_deref() == Some("你好")
    ));

    let v3 = parse_event(&vector(&file, "V3").msg).unwrap();
    let CallbackEvent::ExternalContact(ExternalContactEvent::StaffDeletedCustomer(deleted)) =
        v3.event
    else {
        panic!("{:?}", v3.event);
    };
    assert_eq!(deleted.user_id.as_str(), "zhangsan");
    assert!(!deleted.is_by_transfer());
}

// --- negative tests (§1.11) ----------------------------------------------------------------------

#[test]
fn a_flipped_signature_character_is_refused() {
    let file = load();
    for v in &file.vectors {
        let crypto = crypto_for(&file, &v.set);
        for at in [0, 17, v.msg_signature.len() - 1] {
            let mut flipped = v.msg_signature.clone().into_bytes();
            flipped[at] = if flipped[at] == b'0' { b'1' } else { b'0' };
            let flipped = String::from_utf8(flipped).unwrap();
            assert_eq!(
                crypto.open(&flipped, &v.timestamp, &v.nonce, &v.encrypt),
                Err(CryptoError::InvalidSignature),
                "{} at {at}",
                v.id
            );
        }
        let upper = v.msg_signature.to_uppercase();
        assert_eq!(
            crypto.verify_signature(&upper, &v.timestamp, &v.nonce, &v.encrypt),
            Err(CryptoError::InvalidSignature),
            "{}: the signature is lowercase hex, compared exactly",
            v.id
        );
        assert_eq!(
            crypto.verify_signature("", &v.timestamp, &v.nonce, &v.encrypt),
            Err(CryptoError::InvalidSignature)
        );
        // Each of the other three signed values matters too.
        assert!(
            crypto
                .open(&v.msg_signature, "1", &v.nonce, &v.encrypt)
                .is_err(),
            "{}",
            v.id
        );
        assert!(
            crypto
                .open(&v.msg_signature, &v.timestamp, "1", &v.encrypt)
                .is_err(),
            "{}",
            v.id
        );
    }
}

#[test]
fn the_other_sets_key_does_not_decrypt() {
    let file = load();
    for v in &file.vectors {
        let other = if v.set == "A" { "B" } else { "A" };
        let err = crypto_for(&file, other).decrypt(&v.encrypt).unwrap_err();
        assert!(
            matches!(
                err,
                CryptoError::DecryptAes(_) | CryptoError::IllegalBuffer(_)
            ),
            "{} with set {other}'s key: {err:?}",
            v.id
        );
    }
    let b_xml = vector(&file, "B-XML");
    assert!(matches!(
        crypto_for(&file, "A").decrypt(&b_xml.encrypt),
        Err(CryptoError::DecryptAes(_) | CryptoError::IllegalBuffer(_))
    ));
}

#[test]
fn a_wrong_expected_receiveid_is_refused_and_names_the_real_one() {
    let file = load();
    for v in &file.vectors {
        let keys = &file.sets[&v.set];
        let crypto =
            CallbackCrypto::new(&keys.token, &keys.encoding_aes_key, "ww0000000000000000").unwrap();
        let err = crypto.decrypt(&v.encrypt).unwrap_err();
        assert_eq!(
            err,
            CryptoError::ReceiveIdMismatch {
                found: keys.receive_id.clone()
            },
            "{}",
            v.id
        );
        assert_eq!(err.code(), -40005);
        // An empty expected id skips the check (third-party apps of personal developers).
        let any = CallbackCrypto::new(&keys.token, &keys.encoding_aes_key, "").unwrap();
        assert_eq!(
            any.decrypt(&v.encrypt).unwrap().receive_id,
            keys.receive_id,
            "{}",
            v.id
        );
    }
}

#[test]
fn truncated_base64_is_a_decode_error() {
    let file = load();
    for v in &file.vectors {
        let crypto = crypto_for(&file, &v.set);
        let truncated = &v.encrypt[..v.encrypt.len() - 1];
        assert_eq!(
            crypto.decrypt(truncated),
            Err(CryptoError::DecodeBase64),
            "{}",
            v.id
        );
        assert_eq!(
            crypto.decrypt(&format!("{} ", v.encrypt)),
            Err(CryptoError::DecodeBase64),
            "{}",
            v.id
        );
        assert_eq!(CryptoError::DecodeBase64.code(), -40010);
    }
}

#[test]
fn a_length_not_a_multiple_of_16_is_a_decrypt_error() {
    let file = load();
    for v in &file.vectors {
        let crypto = crypto_for(&file, &v.set);
        let raw = STANDARD.decode(&v.encrypt).unwrap();
        for cut in [1, 5, 15, 17] {
            let short = STANDARD.encode(&raw[..raw.len() - cut]);
            let err = crypto.decrypt(&short).unwrap_err();
            assert!(
                matches!(err, CryptoError::DecryptAes(_)),
                "{} minus {cut}: {err:?}",
                v.id
            );
            assert_eq!(err.code(), -40007);
        }
    }
    let crypto = crypto_for(&file, "B");
    assert!(matches!(
        crypto.decrypt(""),
        Err(CryptoError::DecryptAes(_))
    ));
}
