//! Black-box tests of callback intake: `/wecom/callback/{corp_id}/{app}` on the real router, on
//! SQLite and PostgreSQL. Every refusal is checked for its status code *and* for leaving the inbox
//! unchanged.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly"
)]

use crate::common;
use crate::common::{Backend, CORP, TestApp, add_contact_event, dedup_key_of};
use base64::Engine as _;
use wecom_sdk::sender;

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Official vector B-GET (wecom-protocol §1.11): answered with the bare decrypted echostr.
async fn official_url_verification_answers_bare_echostr(backend: Backend) {
    let app = TestApp::spawn_with(backend, "timestamp_window_secs = 0").await;
    let query = "msg_signature=012bc692d0a58dd4b10f8dfe5c4ac00ae211ebeb&timestamp=1476416373&nonce=47744683\
&echostr=fsi1xnbH4yQh0%2BPJxcOdhhK6TDXkjMyhEPA7xB2TGz6b%2Bg7xyAbEkRxN%2F3cNXW9qdqjnoVzEtpbhnFyq6SVHyA%3D%3D";
    let response = app.get_callback("contacts", query).await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(
        response.bytes().await.unwrap().as_ref(),
        b"1288432023552776189"
    );
    assert_eq!(app.inbox_count().await, 0, "a verification stores nothing");
    app.stop().await;
}

/// §7.3: a proxy that decoded the query once already turns '+' into ' '; we still verify.
async fn doubly_decoded_echostr_still_verifies(backend: Backend) {
    let app = TestApp::spawn_with(backend, "timestamp_window_secs = 0").await;
    let query = "msg_signature=012bc692d0a58dd4b10f8dfe5c4ac00ae211ebeb&timestamp=1476416373&nonce=47744683\
&echostr=fsi1xnbH4yQh0+PJxcOdhhK6TDXkjMyhEPA7xB2TGz6b+g7xyAbEkRxN/3cNXW9qdqjnoVzEtpbhnFyq6SVHyA%3D%3D";
    let response = app.get_callback("contacts", query).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "1288432023552776189");
    app.stop().await;
}

/// Official vector B-XML: stored with its exact plaintext and a MsgId-based key.
async fn official_event_is_stored_with_its_plaintext(backend: Backend) {
    let app = TestApp::spawn_with(backend, "timestamp_window_secs = 0").await;
    let body = "<xml><ToUserName><![CDATA[ww1436e0e65a779aee]]></ToUserName>\n<Encrypt><![CDATA[Kl7kjoSf6DMD1zh7rtrHjFaDapSCkaOnwu3bqLc5tAybhhMl9pFeK8NslNPVdMwmBQTNoW4mY7AIjeLvEl3NyeTkAgGzBhzTtRLNshw2AEew+kkYcD+Fq72Kt00fT0WnN87hGrW8SqGc+NcT3mu87Ha3dz1pSDi6GaUA6A0sqfde0VJPQbZ9U+3JWcoD4Z5jaU0y9GSh010wsHF8KZD24YhmZH4ch4Ka7ilEbjbfvhKkNL65HHL0J6EYJIZUC2pFrdkJ7MhmEbU2qARR4iQHE7wy24qy0cRX3Mfp6iELcDNfSsPGjUQVDGxQDCWjayJOpcwocugux082f49HKYg84EpHSGXAyh+/oxwaWbvL6aSDPOYuPDGOCI8jmnKiypE+]]></Encrypt>\n<AgentID><![CDATA[1000002]]></AgentID>\n</xml>";
    let query = "msg_signature=0c3914025cb4b4d68103f6bfc8db550f79dcf48e&timestamp=1476422779&nonce=1597212914";
    let response = app.post_raw("contacts", query, body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "success");
    let rows = scrm::pipeline::inbox::list(&app.db, Some(CORP), 10)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let row = scrm::pipeline::inbox::get(&app.db, rows[0].id)
        .await
        .unwrap();
    assert_eq!(row.dedup_key, "msg:1000002:1456453720");
    assert_eq!(row.msg_type, "text");
    assert_eq!(row.agent_id.as_deref(), Some("1000002"));
    assert_eq!(row.create_time, Some(1_476_422_779));
    // Stored as pending; the server's inbox workers then process it (an app message has nothing
    // to fetch, so it is done at the first attempt).
    assert!(
        matches!(row.state.as_str(), "pending" | "done"),
        "{}",
        row.state
    );
    let mut row = row;
    for _ in 0..400 {
        if row.state == "done" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        row = scrm::pipeline::inbox::get(&app.db, rows[0].id)
            .await
            .unwrap();
    }
    assert_eq!((row.state.as_str(), row.attempts), ("done", 1));
    assert_eq!(
        row.body.as_deref(),
        Some(
            "<xml><ToUserName>ww1436e0e65a779aee</ToUserName><FromUserName>ChenJiaShun</FromUserName><CreateTime>1476422779</CreateTime><MsgType>text</MsgType><Content>你好</Content><MsgId>1456453720</MsgId><AgentID>1000002</AgentID></xml>"
        )
    );
    app.stop().await;
}

async fn duplicate_callback_is_stored_once_and_acknowledged_twice(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let request = app.event_request(&add_contact_event(1, now()));
    let first = app.post_callback(&request).await;
    let second = app.post_callback(&request).await;
    assert_eq!(first.status(), 200);
    assert_eq!(second.status(), 200, "WeCom retries must be acknowledged");
    assert_eq!(second.text().await.unwrap(), "success");
    assert_eq!(app.inbox_count().await, 1, "a duplicate must not add a row");
    app.stop().await;
}

/// A retry is re-encrypted with a new random prefix and new nonce; the plaintext decides.
async fn retry_with_fresh_encryption_is_still_a_duplicate(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let plaintext = add_contact_event(2, now());
    for _ in 0..4 {
        let response = app.post_callback(&app.event_request(&plaintext)).await;
        assert_eq!(response.status(), 200);
    }
    assert_eq!(app.inbox_count().await, 1);
    assert!(
        scrm::pipeline::inbox::contains(&app.db, CORP, &dedup_key_of(&plaintext))
            .await
            .unwrap()
    );
    app.stop().await;
}

/// WxJava #897/#3002: distinct events in the same second from `sys` must all be kept.
async fn events_in_the_same_second_are_all_kept(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let second = now();
    for n in 0..5 {
        let response = app
            .post_callback(&app.event_request(&add_contact_event(n, second)))
            .await;
        assert_eq!(response.status(), 200);
    }
    assert_eq!(app.inbox_count().await, 5);
    app.stop().await;
}

/// WeCom may deliver the same event concurrently; every delivery gets 200, one row is stored.
async fn concurrent_duplicates_store_one_row(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let plaintext = add_contact_event(3, now());
    let requests: Vec<_> = (0..8).map(|_| app.event_request(&plaintext)).collect();
    let answers = futures::future::join_all(requests.iter().map(|r| app.post_callback(r))).await;
    for answer in answers {
        assert_eq!(answer.status(), 200);
    }
    assert_eq!(app.inbox_count().await, 1);
    app.stop().await;
}

/// App messages are keyed by agent + MsgId: the same MsgId with another body is a duplicate.
async fn app_messages_are_keyed_by_msg_id(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let msg = |content: &str, create_time: i64| {
        format!(
            "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[lisi]]></FromUserName><CreateTime>{create_time}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{content}]]></Content><MsgId>7382910012345678901</MsgId><AgentID>1000002</AgentID></xml>"
        )
    };
    assert_eq!(
        app.post_callback(&app.event_request(&msg("帮我查一下客户王总的标签", now())))
            .await
            .status(),
        200
    );
    assert_eq!(
        app.post_callback(&app.event_request(&msg("帮我查一下客户王总的标签", now() + 1)))
            .await
            .status(),
        200
    );
    assert_eq!(app.inbox_count().await, 1);
    assert!(
        scrm::pipeline::inbox::contains(&app.db, CORP, "msg:1000002:7382910012345678901")
            .await
            .unwrap()
    );
    app.stop().await;
}

/// Unknown event types are stored raw and acknowledged, never refused.
async fn unknown_events_are_stored_not_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let plaintext = format!(
        "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>{}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[sys_approval_change]]></Event><ApprovalInfo><SpNo>202611230001</SpNo></ApprovalInfo></xml>",
        now()
    );
    let response = app.post_callback(&app.event_request(&plaintext)).await;
    assert_eq!(response.status(), 200);
    let rows = scrm::pipeline::inbox::list(&app.db, None, 1).await.unwrap();
    assert_eq!(rows[0].event.as_deref(), Some("sys_approval_change"));
    let row = scrm::pipeline::inbox::get(&app.db, rows[0].id)
        .await
        .unwrap();
    assert_eq!(row.body.as_deref(), Some(plaintext.as_str()));
    app.stop().await;
}

/// Each configuration has its own keys: the archive app's event must be signed with its own.
async fn each_app_uses_its_own_keys(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let plaintext = format!(
        "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>{}</CreateTime><MsgType><![CDATA[event]]></MsgType><AgentID>2000004</AgentID><Event><![CDATA[msgaudit_notify]]></Event></xml>",
        now()
    );
    // Signed with the contacts keys, sent to the archive URL: refused.
    let wrong = app.event_request(&plaintext);
    assert_eq!(app.post("archive", &wrong).await.status(), 403);
    let archive =
        wecom_sdk::CallbackCrypto::new(common::ARCHIVE_TOKEN, common::ARCHIVE_KEY, CORP).unwrap();
    let right = sender::event(
        &archive,
        &plaintext,
        &now().to_string(),
        "42",
        Some("2000004"),
    );
    assert_eq!(app.post("archive", &right).await.status(), 200);
    let rows = scrm::pipeline::inbox::list(&app.db, None, 10)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].app.as_str(), rows[0].agent_id.as_deref()),
        ("archive", Some("2000004"))
    );
    app.stop().await;
}

fn replace_param(query: &str, name: &str, value: &str) -> String {
    query
        .split('&')
        .map(|p| {
            if p.starts_with(&format!("{name}=")) {
                format!("{name}={value}")
            } else {
                p.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn remove_param(query: &str, name: &str) -> String {
    query
        .split('&')
        .filter(|p| !p.starts_with(&format!("{name}=")))
        .collect::<Vec<_>>()
        .join("&")
}

/// Signature problems: 403, nothing stored.
async fn bad_signatures_are_forbidden(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let request = app.event_request(&add_contact_event(4, now()));
    let body = request.body.clone().unwrap();
    let sig = request
        .query
        .split('&')
        .next()
        .unwrap()
        .trim_start_matches("msg_signature=");
    let mut flipped = sig.to_owned();
    flipped.replace_range(0..1, if sig.starts_with('0') { "1" } else { "0" });
    for (what, query) in [
        (
            "flipped signature",
            replace_param(&request.query, "msg_signature", &flipped),
        ),
        (
            "uppercase signature",
            replace_param(&request.query, "msg_signature", &sig.to_uppercase()),
        ),
        (
            "missing signature",
            remove_param(&request.query, "msg_signature"),
        ),
        ("other nonce", replace_param(&request.query, "nonce", "1")),
    ] {
        let response = app.post_raw("contacts", &query, body.clone()).await;
        assert_eq!(response.status(), 403, "{what}");
    }
    // A tampered body with the original signature.
    let tampered = body.replacen("<Encrypt><![CDATA[", "<Encrypt><![CDATA[A", 1);
    assert_eq!(
        app.post_raw("contacts", &request.query, tampered)
            .await
            .status(),
        403
    );
    assert_eq!(app.inbox_count().await, 0);
    app.stop().await;
}

/// A message for another corp (wrong key pair or misrouted): 403, nothing stored.
async fn wrong_receiveid_is_forbidden(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let other =
        wecom_sdk::CallbackCrypto::new(common::TOKEN, common::KEY, "wwffffffffffffffff").unwrap();
    let request = sender::event(
        &other,
        &add_contact_event(5, now()),
        &now().to_string(),
        "7",
        None,
    );
    let response = app.post_callback(&request).await;
    assert_eq!(response.status(), 403);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .starts_with("receiveid_mismatch")
    );
    assert_eq!(app.inbox_count().await, 0);
    app.stop().await;
}

/// Someone holding the Token but not the key: the signature verifies, the ciphertext does not.
async fn undecryptable_ciphertexts_are_bad_requests(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let b64 = base64::engine::general_purpose::STANDARD;
    let good = app.crypto.encrypt(add_contact_event(6, now()).as_bytes());
    let raw = b64.decode(&good).unwrap();
    let wrong_key = wecom_sdk::CallbackCrypto::new(common::TOKEN, common::ARCHIVE_KEY, CORP)
        .unwrap()
        .encrypt(add_contact_event(6, now()).as_bytes());
    let cases = [
        (
            "truncated base64",
            good[..good.len() - 3].to_owned(),
            "bad_base64",
        ),
        ("not base64", "!!!!".to_owned(), "bad_base64"),
        (
            "length not a multiple of 16",
            b64.encode(&raw[..raw.len() - 5]),
            "decrypt_failed",
        ),
        (
            "last block dropped",
            b64.encode(&raw[..raw.len() - 16]),
            "decrypt_failed",
        ),
        ("another key", wrong_key, ""),
        ("empty", String::new(), "decrypt_failed"),
    ];
    for (what, encrypt, code) in cases {
        let ts = now().to_string();
        let sig = app.crypto.sign(&ts, "99", &encrypt);
        let query = format!("msg_signature={sig}&timestamp={ts}&nonce=99");
        let body = format!(
            "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
        );
        let response = app.post_raw("contacts", &query, body).await;
        assert_eq!(response.status(), 400, "{what}");
        let text = response.text().await.unwrap();
        assert!(text.starts_with(code), "{what}: {text}");
    }
    assert_eq!(app.inbox_count().await, 0);
    app.stop().await;
}

/// Malformed envelopes and malformed (but correctly encrypted) messages: 400, nothing stored.
async fn malformed_xml_is_a_bad_request(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ts = now().to_string();
    for (what, body) in [
        ("not XML", "hello".to_owned()),
        (
            "unclosed",
            "<xml><Encrypt><![CDATA[abc]]></Encrypt>".to_owned(),
        ),
        (
            "no Encrypt",
            format!("<xml><ToUserName>{CORP}</ToUserName></xml>"),
        ),
        ("empty body", String::new()),
        (
            "DTD",
            "<!DOCTYPE x [<!ENTITY a \"b\">]><xml><Encrypt>&a;</Encrypt></xml>".to_owned(),
        ),
    ] {
        let sig = app.crypto.sign(&ts, "5", "abc");
        let response = app
            .post_raw(
                "contacts",
                &format!("msg_signature={sig}&timestamp={ts}&nonce=5"),
                body,
            )
            .await;
        assert_eq!(response.status(), 400, "{what}");
    }
    let deep = format!(
        "<xml>{}{}</xml>",
        "<a>".repeat(10_000),
        "</a>".repeat(10_000)
    );
    let bomb = "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol1 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\"><!ENTITY lol2 \"&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;\">]><xml><MsgType>&lol2;</MsgType></xml>".to_owned();
    for (what, plaintext) in [
        ("plaintext not XML", "just text".to_owned()),
        (
            "plaintext unclosed",
            "<xml><MsgType>event</MsgType>".to_owned(),
        ),
        (
            "mismatched tags",
            "<xml><MsgType>event</Event></xml>".to_owned(),
        ),
        ("entity bomb", bomb),
        ("deep nesting", deep),
        (
            "NUL byte",
            "<xml><MsgType>event\0</MsgType></xml>".to_owned(),
        ),
    ] {
        let response = app.post_callback(&app.event_request(&plaintext)).await;
        assert_eq!(response.status(), 400, "{what}");
        assert!(
            response
                .text()
                .await
                .unwrap()
                .starts_with("malformed_message"),
            "{what}"
        );
    }
    // A non-UTF-8 plaintext, encrypted correctly.
    let encrypt = app.crypto.encrypt(&[0xff, 0xfe, b'<']);
    let sig = app.crypto.sign(&ts, "6", &encrypt);
    let body = format!("<xml><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>");
    assert_eq!(
        app.post_raw(
            "contacts",
            &format!("msg_signature={sig}&timestamp={ts}&nonce=6"),
            body
        )
        .await
        .status(),
        400
    );
    assert_eq!(app.inbox_count().await, 0);
    app.stop().await;
}

/// Sends a request head and `body_prefix` on a raw connection, never the rest of the body, and
/// returns the status line: proof that the server answered without reading the whole body.
async fn status_without_sending_everything(
    app: &TestApp,
    path_and_query: &str,
    head: &str,
    body_prefix: &[u8],
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = app.base_url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("POST {path_and_query} HTTP/1.1\r\nHost: {addr}\r\n{head}\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let _ = stream.write_all(body_prefix).await;
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while !answer.windows(2).any(|w| w == b"\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server waited for the rest of the body");
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

/// Bodies over the limit: 413 without reading them all, whether the length is declared or not.
async fn oversized_bodies_are_refused(backend: Backend) {
    let app = TestApp::spawn_with(backend, "max_body_bytes = 4096").await;
    let request = app.event_request(&add_contact_event(7, now()));
    let path = format!("/wecom/callback/{CORP}/contacts?{}", request.query);
    // Declares 5 MiB, sends 1 KiB: refused on the declaration alone.
    let declared = status_without_sending_everything(
        &app,
        &path,
        "Content-Length: 5242880\r\n",
        &[b'x'; 1024],
    )
    .await;
    assert!(declared.starts_with("HTTP/1.1 413"), "{declared}");
    // Chunked, no length: refused once the limit is crossed, before the body ends.
    let mut chunks = Vec::new();
    for _ in 0..8 {
        chunks.extend_from_slice(b"400\r\n");
        chunks.extend_from_slice(&[b'x'; 1024]);
        chunks.extend_from_slice(b"\r\n");
    }
    let chunked =
        status_without_sending_everything(&app, &path, "Transfer-Encoding: chunked\r\n", &chunks)
            .await;
    assert!(chunked.starts_with("HTTP/1.1 413"), "{chunked}");
    // The limit leaves room for real callbacks.
    assert_eq!(app.post_callback(&request).await.status(), 200);
    assert_eq!(app.inbox_count().await, 1);
    app.stop().await;
}

/// Timestamps outside the window: 403; window 0 turns the check off.
async fn stale_timestamps_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let plaintext = add_contact_event(8, now());
    for offset in [-3600, 3600] {
        let ts = (now() + offset).to_string();
        let request = sender::event(&app.crypto, &plaintext, &ts, "n", None);
        let response = app.post_callback(&request).await;
        assert_eq!(response.status(), 403, "offset {offset}");
        assert!(
            response
                .text()
                .await
                .unwrap()
                .starts_with("stale_timestamp")
        );
    }
    let within = sender::event(
        &app.crypto,
        &plaintext,
        &(now() - 300).to_string(),
        "n",
        None,
    );
    assert_eq!(app.post_callback(&within).await.status(), 200);
    assert_eq!(app.inbox_count().await, 1);
    app.stop().await;
    let relaxed = TestApp::spawn_with(backend, "timestamp_window_secs = 0").await;
    let old = sender::event(&relaxed.crypto, &plaintext, "1409659813", "n", None);
    assert_eq!(relaxed.post_callback(&old).await.status(), 200);
    relaxed.stop().await;
}

/// Malformed or missing query parameters: 400 (missing signature: 403); unknown path: 404.
async fn malformed_queries_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let request = app.event_request(&add_contact_event(9, now()));
    let body = request.body.clone().unwrap();
    for (what, query, status) in [
        (
            "timestamp not a number",
            replace_param(&request.query, "timestamp", "soon"),
            400,
        ),
        (
            "no timestamp",
            remove_param(&request.query, "timestamp"),
            400,
        ),
        ("no nonce", remove_param(&request.query, "nonce"), 400),
        ("no query", String::new(), 403),
        (
            "duplicated parameter",
            format!("{}&nonce=%zz", request.query),
            400,
        ),
    ] {
        let response = app.post_raw("contacts", &query, body.clone()).await;
        assert_eq!(response.status(), status, "{what}");
    }
    let verify = sender::verification(&app.crypto, "123", &now().to_string(), "1");
    assert_eq!(
        app.get_callback("contacts", &remove_param(&verify.query, "echostr"))
            .await
            .status(),
        400
    );
    let unknown_app = app
        .client
        .post(format!(
            "{}/wecom/callback/{CORP}/nope?{}",
            app.base_url, request.query
        ))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(unknown_app.status(), 404);
    let unknown_corp = app
        .client
        .post(format!(
            "{}/wecom/callback/wwunknown/contacts?{}",
            app.base_url, request.query
        ))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown_corp.status(), 404);
    assert_eq!(app.inbox_count().await, 0);
    app.stop().await;
}

/// Storage that cannot commit in time: 503 so WeCom retries; the retry then lands exactly once.
async fn stalled_storage_answers_503_and_the_retry_is_stored_once(backend: Backend) {
    let app = TestApp::spawn_with(backend, "store_timeout_ms = 300").await;
    let request = app.event_request(&add_contact_event(10, now()));
    // Another session holds a write lock on the inbox.
    let blocker = app.test_db.connect().await;
    let mut tx = match &blocker {
        scrm::platform::db::Db::Sqlite(pool) => {
            let mut conn = pool.acquire().await.unwrap();
            sqlx::query("BEGIN EXCLUSIVE")
                .execute(&mut *conn)
                .await
                .unwrap();
            Lock::Sqlite(conn)
        }
        scrm::platform::db::Db::Postgres(pool) => {
            let mut tx = pool.begin().await.unwrap();
            sqlx::query("LOCK TABLE inbox IN EXCLUSIVE MODE")
                .execute(&mut *tx)
                .await
                .unwrap();
            Lock::Postgres(tx)
        }
    };
    let response = app.post_callback(&request).await;
    assert_eq!(response.status(), 503);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .starts_with("storage_unavailable")
    );
    match &mut tx {
        Lock::Sqlite(conn) => {
            sqlx::query("COMMIT").execute(&mut **conn).await.unwrap();
        }
        Lock::Postgres(tx) => {
            sqlx::query("SELECT 1").execute(&mut **tx).await.unwrap();
        }
    }
    drop(tx);
    blocker.close().await;
    // WeCom's retry: acknowledged, and only one row exists however the first attempt ended.
    let mut status = 0;
    for _ in 0..40 {
        status = app.post_callback(&request).await.status().as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert_eq!(status, 200);
    assert_eq!(app.inbox_count().await, 1);
    app.stop().await;
}

/// PostgreSQL goes away (connections dropped, new ones refused): 503, then the retry lands once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_answers_503_and_recovers() {
    let app = TestApp::spawn_with(Backend::Postgres, "store_timeout_ms = 4500").await;
    let name = app.test_db.pg_name.clone().unwrap();
    let admin = scrm::platform::db::Db::connect(&common::pg_admin_url())
        .await
        .unwrap();
    let scrm::platform::db::Db::Postgres(pool) = &admin else {
        unreachable!()
    };
    let run = |sql: String| async move {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(pool)
            .await
            .unwrap()
    };
    run(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false")).await;
    run(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    ))
    .await;
    let request = app.event_request(&add_contact_event(12, now()));
    let down = app.post_callback(&request).await;
    assert_eq!(down.status(), 503);
    assert_eq!(app.get("/readyz").await.status(), 503);
    run(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true")).await;
    let mut status = 0;
    for _ in 0..40 {
        status = app.post_callback(&request).await.status().as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert_eq!(status, 200);
    let db = app.test_db.connect().await;
    assert_eq!(scrm::pipeline::inbox::count(&db, None).await.unwrap(), 1);
    db.close().await;
    admin.close().await;
    app.stop().await;
}

enum Lock {
    Sqlite(sqlx::pool::PoolConnection<sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

/// Operators: health, readiness and metrics.
async fn operator_endpoints_report_health_and_counts(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert_eq!(app.get("/healthz").await.text().await.unwrap(), "ok");
    assert_eq!(app.get("/readyz").await.status(), 200);
    let request = app.event_request(&add_contact_event(11, now()));
    app.post_callback(&request).await;
    app.post_callback(&request).await;
    // The pending gauge comes from this app's database, refreshed in the background.
    let metrics = common::scrape_until(&app.base_url, |t| {
        t.lines().any(|l| l == "scrm_inbox_pending 1")
    })
    .await;
    assert!(
        metrics.contains("scrm_callbacks_total{outcome=\"stored\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("scrm_callbacks_total{outcome=\"duplicate\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("scrm_callback_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l == "scrm_inbox_pending 1"),
        "{metrics}"
    );
    app.stop().await;
}

/// Shutdown while callbacks are in flight: every callback answered `success` is in the inbox.
async fn shutdown_keeps_every_acknowledged_callback(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    let plaintexts: Vec<String> = (100..160).map(|n| add_contact_event(n, now())).collect();
    let mut tasks = Vec::new();
    for plaintext in &plaintexts {
        let request = app.event_request(plaintext);
        let client = app.client.clone();
        let url = format!("{}?{}", app.callback_url("contacts"), request.query);
        let key = dedup_key_of(plaintext);
        tasks.push(tokio::spawn(async move {
            let answer = client
                .post(url)
                .body(request.body.unwrap_or_default())
                .send()
                .await;
            (key, answer.map(|r| r.status().as_u16()).unwrap_or(0))
        }));
    }
    // Shut down mid-flight: once the first callbacks are stored (a fixed sleep is too short on a
    // loaded machine and too long on a fast one).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while app.inbox_count().await == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    app.shutdown().await;
    let mut acknowledged = 0;
    for task in tasks {
        let (key, status) = task.await.unwrap();
        if status == 200 {
            acknowledged += 1;
            assert!(
                scrm::pipeline::inbox::contains(&app.db, CORP, &key)
                    .await
                    .unwrap(),
                "acknowledged but lost: {key}"
            );
        }
    }
    assert!(
        acknowledged > 0,
        "some callbacks should have been answered before shutdown"
    );
    assert!(app.inbox_count().await >= acknowledged);
    app.stop().await;
}

both_backends!(
    official_url_verification_answers_bare_echostr,
    doubly_decoded_echostr_still_verifies,
    official_event_is_stored_with_its_plaintext,
    duplicate_callback_is_stored_once_and_acknowledged_twice,
    retry_with_fresh_encryption_is_still_a_duplicate,
    events_in_the_same_second_are_all_kept,
    concurrent_duplicates_store_one_row,
    app_messages_are_keyed_by_msg_id,
    unknown_events_are_stored_not_refused,
    each_app_uses_its_own_keys,
    bad_signatures_are_forbidden,
    wrong_receiveid_is_forbidden,
    undecryptable_ciphertexts_are_bad_requests,
    malformed_xml_is_a_bad_request,
    oversized_bodies_are_refused,
    stale_timestamps_are_refused,
    malformed_queries_are_refused,
    stalled_storage_answers_503_and_the_retry_is_stored_once,
    operator_endpoints_report_health_and_counts,
    shutdown_keeps_every_acknowledged_callback,
);
