//! The per-callback hot path: read the POST body, verify and decrypt `Encrypt`, read the header.
//!
//! `taskset -c 1 cargo bench -p wecom-sdk --bench callback` (one core; throughput is in elements/s,
//! one element = one callback).
#![allow(
    clippy::expect_used,
    reason = "fixed, valid input: a failure should stop the bench loudly"
)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use wecom_sdk::{CallbackCrypto, parse_envelope, parse_event, parse_header};

// Key set B of the protocol reference (official Python sample).
const TOKEN: &str = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo";
const KEY: &str = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt";
const CORP: &str = "ww1436e0e65a779aee";
const TIMESTAMP: &str = "1718000000";
const NONCE: &str = "1372623149";

/// A pretty-printed `add_external_contact` of about 600 bytes with Chinese text, as WeCom sends it
/// (plus one element we do not read, as newer deployments add them).
const EVENT: &str = "<xml>
  <ToUserName><![CDATA[ww1436e0e65a779aee]]></ToUserName>
  <FromUserName><![CDATA[sys]]></FromUserName>
  <CreateTime>1718000000</CreateTime>
  <MsgType><![CDATA[event]]></MsgType>
  <Event><![CDATA[change_external_contact]]></Event>
  <ChangeType><![CDATA[add_external_contact]]></ChangeType>
  <UserID><![CDATA[zhangsan]]></UserID>
  <ExternalUserID><![CDATA[wmQ2pCAAAA1b2c3d4e5f6g7h8i9j0kLmN]]></ExternalUserID>
  <State><![CDATA[门店海报_徐汇漕溪北路店]]></State>
  <WelcomeCode><![CDATA[CALLBACK_CODE_9f3a7c21]]></WelcomeCode>
  <Remark><![CDATA[王总：展会留的名片，关注秋季新品]]></Remark>
</xml>";

fn callback(c: &mut Criterion) {
    let crypto = CallbackCrypto::new(TOKEN, KEY, CORP).expect("key set B is valid");
    let encrypt = crypto.encrypt_with_random(b"0123456789abcdef", EVENT.as_bytes());
    let signature = crypto.sign(TIMESTAMP, NONCE, &encrypt);
    let body = format!(
        "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName>\n<Encrypt><![CDATA[{encrypt}]]></Encrypt>\n<AgentID><![CDATA[]]></AgentID>\n</xml>"
    );
    assert!(
        (550..=700).contains(&EVENT.len()),
        "event is {} bytes",
        EVENT.len()
    );

    let mut group = c.benchmark_group("callback");
    group.throughput(Throughput::Elements(1));

    group.bench_function("verify+decrypt+envelope+header", |b| {
        b.iter(|| {
            let envelope = parse_envelope(black_box(body.as_bytes())).expect("envelope");
            let msg = crypto
                .open(black_box(&signature), TIMESTAMP, NONCE, &envelope.encrypt)
                .expect("open");
            parse_header(&msg).expect("header")
        })
    });
    group.bench_function("parse_envelope", |b| {
        b.iter(|| {
            parse_envelope(black_box(body.as_bytes()))
                .expect("envelope")
                .encrypt
                .len()
        })
    });
    group.bench_function("sign", |b| {
        b.iter(|| crypto.sign(TIMESTAMP, NONCE, black_box(&encrypt)))
    });
    group.bench_function("decrypt", |b| {
        b.iter(|| crypto.decrypt(black_box(&encrypt)).expect("decrypt"))
    });
    group.bench_function("parse_header", |b| {
        b.iter(|| parse_header(black_box(EVENT.as_bytes())).expect("header"))
    });
    group.bench_function("parse_event", |b| {
        b.iter(|| parse_event(black_box(EVENT)).expect("event"))
    });
    group.finish();
}

criterion_group!(benches, callback);
criterion_main!(benches);
