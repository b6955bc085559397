//! Chat archive end to end: the real `scrm archive-worker` child loading the stand-in library
//! (`wework-finance-standin`, built by `scripts/test.sh`), which pulls from the emulator. Each
//! fault mode of the library (crash, hang, leak, error codes, unknown key version, corrupt
//! payload) and what the server must do about it: store every message or record why not, never
//! leave a gap in the cursor, feed the scanner, show its health, audit every read.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly"
)]

use crate::{common, emulated};
use std::path::PathBuf;
use std::time::Duration;

use crate::common::{ARCHIVE_KEY, ARCHIVE_TOKEN, Backend, CORP};
use crate::emulated::{EmulatedApp, Instance, Options, eventually};
use scrm::platform::db::Db;
use serde_json::json;
use wecom_sdk::testkit::{ArchiveFault, CallbackKind, CallbackTarget, EmulatorState};

const ARCHIVE_SECRET: &str = "archive-secret-0123456789";
const COMPLIANCE: &str = "compliance01";
const STAFF: &str = "zhangsan";
const CUSTOMER: &str = "wmCustomerAAAAAAAAAAAAAAAAAAAA1";

both_backends!(
    archived_chat_is_stored_linked_scanned_and_audited,
    library_and_wecom_errors_are_recorded_and_retried,
    undecryptable_records_are_recorded_then_decrypted_once_the_key_is_configured,
);
both_backends!(a_crashing_library_is_replaced_and_no_message_is_skipped);
both_backends!(a_batch_stored_by_another_puller_changes_nothing);
both_backends!(a_deletion_alert_links_the_last_archived_messages);
both_backends!(the_console_shows_the_conversation_around_archived_evidence);

pub(crate) fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(path)
}

/// The stand-in library next to the test binaries (`cargo build -p wework-finance-standin`).
pub(crate) fn standin() -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_scrm"));
    let lib = exe
        .parent()
        .expect("target dir")
        .join("libwework_finance_standin.so");
    assert!(
        lib.exists(),
        "{} is missing: build it with `cargo build -p wework-finance-standin` (scripts/test.sh does)",
        lib.display()
    );
    lib
}

fn pem(name: &str) -> String {
    std::fs::read_to_string(fixture(&format!("archive/keys/{name}"))).unwrap()
}

/// WeCom's side: the archive secret and the corp's public keys v1 and v2 (v2 current).
fn archive_wecom(state: &EmulatorState) {
    state.set_archive_secret(CORP, ARCHIVE_SECRET);
    state
        .add_archive_public_key(CORP, 1, &pem("v1.pub.pem"))
        .unwrap();
    state
        .add_archive_public_key(CORP, 2, &pem("v2.pub.pem"))
        .unwrap();
}

struct Settings {
    poll_secs: u64,
    memory_mb: u64,
    keys: &'static [u32],
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            poll_secs: 1,
            memory_mb: 512,
            keys: &[1, 2],
        }
    }
}

fn keys_toml(keys: &[u32]) -> String {
    let list: Vec<String> = keys
        .iter()
        .map(|v| {
            format!(
                "{{ version = {v}, file = \"{}\" }}",
                fixture(&format!("archive/keys/v{v}.pem")).display()
            )
        })
        .collect();
    format!("keys = [{}]", list.join(", "))
}

async fn spawn(backend: Backend, s: Settings) -> (EmulatedApp, tempfile::TempDir) {
    let media = tempfile::tempdir().unwrap();
    let extra = format!(
        "[archive]\nlibrary = \"{}\"\nworker_program = \"{}\"\npoll_interval_secs = {}\n\
         call_timeout_secs = 2\nmemory_limit_mb = {}\nrestart_backoff_max_secs = 1\n\
         media_dir = \"{}\"\noperators = [\"ops01\"]\n\
         [archive.worker_env]\nWEWORK_FINANCE_STANDIN_URL = \"http://{{EMULATOR_ADDR}}\"\n",
        standin().display(),
        env!("CARGO_BIN_EXE_scrm"),
        s.poll_secs,
        s.memory_mb,
        media.path().display(),
    );
    let corp = format!(
        "alert_recipients = [\"{COMPLIANCE}\"]\n[corps.archive]\nsecret = \"{ARCHIVE_SECRET}\"\n{}\n",
        keys_toml(s.keys)
    );
    let app = EmulatedApp::spawn_with(
        backend,
        Options {
            extra_config: extra,
            corp_config: corp,
            before_server: Some(archive_wecom),
            ..Options::default()
        },
    )
    .await;
    // msgaudit_notify comes through the 会话存档 callback configuration.
    app.wecom().set_callback_target(
        CORP,
        CallbackKind::Archive,
        CallbackTarget {
            url: app.server.callback_url("directory"),
            token: ARCHIVE_TOKEN.to_owned(),
            encoding_aes_key: ARCHIVE_KEY.to_owned(),
        },
    );
    (app, media)
}

async fn count(db: &Db, sql: &str) -> i64 {
    scrm::on_db!(db, |pool| sqlx::query_scalar::<_, i64>(
        sqlx::AssertSqlSafe(sql)
    )
    .bind(CORP)
    .fetch_one(pool)
    .await)
    .unwrap()
}

async fn cursor(db: &Db) -> scrm::domain::archive::store::CursorRow {
    scrm::domain::archive::store::cursor(db, CORP, scrm::platform::db::now_ms())
        .await
        .unwrap()
}

async fn wait_seq(app: &EmulatedApp, seq: u64) {
    let db = app.db.clone();
    eventually(&format!("cursor at seq {seq}"), || {
        let db = db.clone();
        async move { cursor(&db).await.seq >= i64::try_from(seq).unwrap() }
    })
    .await;
}

async fn stored(db: &Db) -> i64 {
    count(
        db,
        "SELECT COUNT(*) FROM archive_message WHERE corp_id = $1",
    )
    .await
}

/// A 1:1 chat and a room: every message stored with its links, the recalled one marked (not
/// deleted), a private-payment phrase raises a content alert pointing at the archived message,
/// reading through the API is audited, a salesperson may not read it, status is visible.
async fn archived_chat_is_stored_linked_scanned_and_audited(backend: Backend) {
    let (app, _media) = spawn(backend, Settings::default()).await;
    let w = app.wecom();
    let (_, hello) = w.archive_text(CORP, STAFF, &[CUSTOMER], "", "您好，这是我们的报价单");
    let (_, reply) = w.archive_text(CORP, CUSTOMER, &[STAFF], "", "好的，我看一下");
    let (_, risky) = w.archive_text(
        CORP,
        STAFF,
        &[CUSTOMER],
        "",
        "你私 下 转账给我，比走公司便宜",
    );
    let (_, room) = w.archive_text(
        CORP,
        STAFF,
        &[CUSTOMER, "lisi"],
        "wrRoomAAAAAAAAAAAAAAAAAAAAAA01",
        "大家好",
    );
    let recall = json!({
        "msgid": "recall-0001", "action": "recall", "from": STAFF, "tolist": [CUSTOMER],
        "roomid": "", "msgtime": w.now_ms(), "msgtype": "revoke",
        "revoke": {"pre_msgid": hello},
    });
    let last = w.archive_push(CORP, &recall.to_string(), None);
    wait_seq(&app, last).await;
    assert_eq!(stored(&app.db).await, 5);

    let row: (Option<String>, Option<String>, Option<i64>, Option<String>) =
        scrm::on_db!(&app.db, |pool| sqlx::query_as(
            "SELECT staff_id, external_userid, revoked_at_ms, revoked_by FROM archive_message \
             WHERE corp_id = $1 AND msgid = $2"
        )
        .bind(CORP)
        .bind(&hello)
        .fetch_one(pool)
        .await)
        .unwrap();
    assert_eq!(row.0.as_deref(), Some(STAFF));
    assert_eq!(row.1.as_deref(), Some(CUSTOMER));
    assert!(row.2.is_some(), "the recalled message is marked");
    assert_eq!(row.3.as_deref(), Some("recall-0001"));
    let linked: (String, Option<String>, Option<String>) = scrm::on_db!(&app.db, |pool| {
        sqlx::query_as(
            "SELECT sender_kind, staff_id, external_userid FROM archive_message \
             WHERE corp_id = $1 AND msgid = $2",
        )
        .bind(CORP)
        .bind(&reply)
        .fetch_one(pool)
        .await
    })
    .unwrap();
    assert_eq!(
        linked,
        ("customer".into(), Some(STAFF.into()), Some(CUSTOMER.into()))
    );
    let room_row: Option<String> = scrm::on_db!(&app.db, |pool| sqlx::query_scalar(
        "SELECT room_id FROM archive_message WHERE corp_id = $1 AND msgid = $2"
    )
    .bind(CORP)
    .bind(&room)
    .fetch_one(pool)
    .await)
    .unwrap();
    assert_eq!(room_row.as_deref(), Some("wrRoomAAAAAAAAAAAAAAAAAAAAAA01"));

    // Scanned: one content alert with the archived message as evidence.
    let db = app.db.clone();
    eventually("every archived message scanned", || {
        let db = db.clone();
        async move {
            count(
                &db,
                "SELECT COUNT(*) FROM archive_message WHERE corp_id = $1 AND NOT scanned",
            )
            .await
                == 0
        }
    })
    .await;
    let evidence = count(
        &app.db,
        &format!(
            "SELECT COUNT(*) FROM alert_evidence WHERE corp_id = $1 AND source_ref = 'archive:{risky}'"
        ),
    )
    .await;
    assert_eq!(
        evidence, 1,
        "the private-payment message is evidence of an alert"
    );
    let innocent = count(
        &app.db,
        &format!(
            "SELECT COUNT(*) FROM alert_evidence WHERE corp_id = $1 AND source_ref = 'archive:{reply}'"
        ),
    )
    .await;
    assert_eq!(innocent, 0);

    // Read through the API: compliance may, and the read is logged; sales may not.
    let compliance = app.api("compliance", None).await;
    let (status, body) = compliance
        .get(&format!(
            "/api/v1/archive/messages?external_userid={CUSTOMER}&limit=10"
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    let messages = body["messages"].as_array().unwrap();
    // The four messages of the 1:1 chat (the room message is not one with this customer).
    assert_eq!(messages.len(), 4, "{body}");
    let first_id = messages[0]["id"].as_i64().unwrap();
    let (status, one) = compliance
        .get(&format!("/api/v1/archive/messages/{first_id}"))
        .await;
    assert_eq!(status, 200, "{one}");
    assert!(one["message"]["payload"].is_object());
    let reads = count(
        &app.db,
        "SELECT COUNT(*) FROM archive_read WHERE corp_id = $1",
    )
    .await;
    assert_eq!(reads, 2, "a list and a detail read are both logged");
    let (_, log) = app
        .api("admin", None)
        .await
        .get("/api/v1/archive/reads")
        .await;
    assert_eq!(log["reads"][0]["what"], "message", "{log}");
    assert_eq!(log["reads"][1]["items"], 4, "{log}");
    let sales = app.api("sales", Some(STAFF)).await;
    let (status, _) = sales.get("/api/v1/archive/messages").await;
    assert_eq!(status, 403);
    let (status, _) = reqwest::get(format!("{}/api/v1/archive/messages", app.server.base_url))
        .await
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(status, 401);
    let reads = count(
        &app.db,
        "SELECT COUNT(*) FROM archive_read WHERE corp_id = $1",
    )
    .await;
    assert_eq!(reads, 2, "refused reads show nothing and log nothing");

    // The alert shows the archived message as evidence: that is a read of archived chat too.
    let alert_id: i64 = scrm::on_db!(&app.db, |pool| sqlx::query_scalar(sqlx::AssertSqlSafe(
        format!("SELECT alert_id FROM alert_evidence WHERE source_ref = 'archive:{risky}'")
    ))
    .fetch_one(pool)
    .await)
    .unwrap();
    let (status, shown) = compliance.get(&format!("/api/v1/alerts/{alert_id}")).await;
    assert_eq!(status, 200, "{shown}");
    let evidence_reads = count(
        &app.db,
        "SELECT COUNT(*) FROM archive_read WHERE corp_id = $1 AND what = 'alert_evidence'",
    )
    .await;
    assert_eq!(evidence_reads, 1, "showing archived evidence is logged");

    // Health.
    let (status, health) = compliance.get("/api/v1/archive/status").await;
    assert_eq!(status, 200);
    let corp = &health["corps"][0];
    assert_eq!(corp["seq"], json!(last), "{health}");
    assert_eq!(corp["lag_seq"], 0);
    assert_eq!(corp["undecryptable_open"], 0);
    assert_eq!(corp["messages"], 5);
    assert!(corp["last_error"].is_null(), "{health}");
    let metrics = reqwest::get(format!("{}/metrics", app.server.base_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("scrm_archive_lag_seq"), "{metrics}");
    assert!(metrics.contains("scrm_archive_undecryptable"), "{metrics}");
    app.stop().await;
}

/// The library segfaults in the middle of a 2,500-message backlog: the worker is replaced and
/// every message is stored once, with no gap in the cursor.
async fn a_crashing_library_is_replaced_and_no_message_is_skipped(backend: Backend) {
    let (app, _media) = spawn(backend, Settings::default()).await;
    let w = app.wecom();
    w.archive_fault(CORP, ArchiveFault::Crash, 2);
    w.archive_synthetic(CORP, 2500);
    wait_seq(&app, 2500).await;
    assert_eq!(stored(&app.db).await, 2500);
    let distinct = count(
        &app.db,
        "SELECT COUNT(DISTINCT seq) FROM archive_message WHERE corp_id = $1 AND seq BETWEEN 1 AND 2500",
    )
    .await;
    assert_eq!(distinct, 2500, "every seq from 1 to 2500, none skipped");
    let c = cursor(&app.db).await;
    assert!(c.worker_restarts >= 2, "{c:?}");
    assert_eq!(c.last_restart_reason.as_deref(), Some("crash"));
    app.stop().await;
}

/// A hang: killed after the call timeout and replaced; a leak past the memory limit: replaced
/// between calls, with the answer kept.
#[tokio::test]
async fn a_hanging_or_leaking_library_is_replaced() {
    let (app, _media) = spawn(
        Backend::Sqlite,
        Settings {
            memory_mb: 96,
            ..Settings::default()
        },
    )
    .await;
    let w = app.wecom();
    w.archive_fault(CORP, ArchiveFault::Hang, 1);
    let (seq, _) = w.archive_text(CORP, STAFF, &[CUSTOMER], "", "在吗");
    let db = app.db.clone();
    eventually("the hung worker is replaced", || {
        let db = db.clone();
        async move { cursor(&db).await.last_restart_reason.as_deref() == Some("hang") }
    })
    .await;
    wait_seq(&app, seq).await;
    let before = cursor(&app.db).await.worker_restarts;
    w.archive_fault(CORP, ArchiveFault::Leak { bytes: 160 << 20 }, 1);
    let (seq, _) = w.archive_text(CORP, STAFF, &[CUSTOMER], "", "报价发你了");
    wait_seq(&app, seq).await;
    eventually("the leaking worker is replaced", || {
        let db = db.clone();
        async move {
            let c = cursor(&db).await;
            c.last_restart_reason.as_deref() == Some("memory") && c.worker_restarts > before
        }
    })
    .await;
    assert_eq!(
        stored(&app.db).await,
        2,
        "the leaking call's answer was stored"
    );
    app.stop().await;
}

/// A network error from the library and an errcode from WeCom are recorded as the last error
/// (cursor unchanged) and the next round succeeds.
async fn library_and_wecom_errors_are_recorded_and_retried(backend: Backend) {
    let (app, _media) = spawn(backend, Settings::default()).await;
    let w = app.wecom();
    let (seq, _) = w.archive_text(CORP, STAFF, &[CUSTOMER], "", "第一条");
    wait_seq(&app, seq).await;
    w.archive_fault(CORP, ArchiveFault::Errcode(301042), 1);
    w.archive_fault(CORP, ArchiveFault::Ret(10001), 1);
    let (seq2, _) = w.archive_text(CORP, STAFF, &[CUSTOMER], "", "第二条");
    let db = app.db.clone();
    eventually("the errcode is recorded", || {
        let db = db.clone();
        async move {
            cursor(&db)
                .await
                .last_error
                .is_some_and(|e| e.contains("301042") || e.contains("10001"))
        }
    })
    .await;
    wait_seq(&app, seq2).await;
    let c = cursor(&app.db).await;
    assert!(c.last_error.is_none(), "a good pull clears it: {c:?}");
    assert_eq!(c.worker_restarts, 0, "an error code is not a crash");
    assert_eq!(stored(&app.db).await, 2);
    app.stop().await;
}

/// Records wrapped with a key version we lack, with the wrong key for a version, or with a
/// damaged payload are recorded with their reason (loudly: status, API) and the cursor moves
/// past them; adding the missing key and restarting decrypts the unknown-version ones.
async fn undecryptable_records_are_recorded_then_decrypted_once_the_key_is_configured(
    backend: Backend,
) {
    let (mut app, _media) = spawn(backend, Settings::default()).await;
    let w = app.wecom();
    let (ok_seq, _) = w.archive_text(CORP, STAFF, &[CUSTOMER], "", "正常");
    wait_seq(&app, ok_seq).await;
    // Damaged payload.
    w.archive_fault(CORP, ArchiveFault::CorruptPayload, 1);
    let (bad_seq, _) = w.archive_text(CORP, STAFF, &[CUSTOMER], "", "损坏");
    wait_seq(&app, bad_seq).await;
    // Version 3 becomes current in WeCom; we do not have it yet.
    w.add_archive_public_key(CORP, 3, &pem("v3.pub.pem"))
        .unwrap();
    let (v3_seq, v3_msgid) = w.archive_text(CORP, STAFF, &[CUSTOMER], "", "用新密钥加密的消息");
    wait_seq(&app, v3_seq).await;
    // The wrong key uploaded as version 2.
    w.add_archive_public_key(CORP, 2, &pem("vother.pub.pem"))
        .unwrap();
    let wrong = json!({"msgid": "wrong-key-1", "action": "send", "from": STAFF,
        "tolist": [CUSTOMER], "roomid": "", "msgtime": w.now_ms(), "msgtype": "text",
        "text": {"content": "错误密钥"}});
    let wrong_seq = w.archive_push(CORP, &wrong.to_string(), Some(2));
    wait_seq(&app, wrong_seq).await;

    let compliance = app.api("compliance", None).await;
    let (status, body) = compliance.get("/api/v1/archive/undecryptable").await;
    assert_eq!(status, 200);
    let mut reasons: Vec<(String, String)> = body["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["msgid"].as_str().unwrap().to_owned(),
                r["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    reasons.sort();
    let mut expected_reasons: Vec<&str> = reasons.iter().map(|(_, r)| r.as_str()).collect();
    expected_reasons.sort_unstable();
    assert_eq!(
        expected_reasons,
        vec!["bad_key", "corrupt_payload", "unknown_key_version"],
        "{body}"
    );
    assert!(reasons.contains(&(v3_msgid.clone(), "unknown_key_version".into())));
    let (_, health) = compliance.get("/api/v1/archive/status").await;
    assert_eq!(health["corps"][0]["undecryptable_open"], 3, "{health}");
    assert_eq!(
        health["corps"][0]["seq"],
        json!(wrong_seq),
        "the cursor moved past them"
    );
    assert_eq!(stored(&app.db).await, 1);

    // The operator adds key version 3 and restarts: the recorded v3 message is decrypted.
    app.server.stop().await;
    let config = app
        .config_text
        .replace(&keys_toml(&[1, 2]), &keys_toml(&[1, 2, 3]));
    assert_ne!(config, app.config_text);
    app.server = Instance::start(&config).await;
    let db = app.db.clone();
    let msgid = v3_msgid.clone();
    eventually(
        "the v3 message is decrypted after the key is configured",
        || {
            let (db, msgid) = (db.clone(), msgid.clone());
            async move {
                count(
                &db,
                &format!(
                    "SELECT COUNT(*) FROM archive_message WHERE corp_id = $1 AND msgid = '{msgid}'"
                ),
            )
            .await
                == 1
            }
        },
    )
    .await;
    let open: Vec<String> = scrm::domain::archive::store::undecryptable(&app.db, CORP, true, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.reason)
        .collect();
    assert_eq!(
        open.len(),
        2,
        "bad key and corrupt payload stay recorded: {open:?}"
    );
    assert!(!open.contains(&"unknown_key_version".to_owned()));
    app.stop().await;
}

/// Media: downloaded in 512 KiB chunks, md5 checked, one file for two messages with the same
/// content, served (and audited) through the API.
#[tokio::test]
async fn media_is_downloaded_checked_deduplicated_and_audited() {
    let (app, media_dir) = spawn(Backend::Sqlite, Settings::default()).await;
    let w = app.wecom();
    let bytes: Vec<u8> = (0..1_300_000u32).map(|i| (i % 251) as u8).collect();
    let m1 = w.archive_add_media(CORP, bytes.clone());
    let m2 = w.archive_add_media(CORP, bytes.clone());
    let image = |id: &str, m: &wecom_sdk::testkit::ArchiveMedia| {
        json!({"msgid": id, "action": "send", "from": STAFF, "tolist": [CUSTOMER], "roomid": "",
            "msgtime": w.now_ms(), "msgtype": "file", "file": {"md5sum": m.md5sum,
            "filename": "合同.pdf", "fileext": "pdf", "filesize": m.size, "sdkfileid": m.sdkfileid}})
        .to_string()
    };
    w.archive_push(CORP, &image("file-1", &m1), None);
    let seq = w.archive_push(CORP, &image("file-2", &m2), None);
    wait_seq(&app, seq).await;
    let db = app.db.clone();
    eventually("both media rows downloaded", || {
        let db = db.clone();
        async move {
            count(
                &db,
                "SELECT COUNT(*) FROM archive_media WHERE corp_id = $1 AND state = 'done'",
            )
            .await
                == 2
        }
    })
    .await;
    let paths: Vec<String> = scrm::on_db!(&app.db, |pool| sqlx::query_scalar(
        "SELECT path FROM archive_media WHERE corp_id = $1 ORDER BY id"
    )
    .bind(CORP)
    .fetch_all(pool)
    .await)
    .unwrap();
    assert_eq!(paths[0], paths[1], "one file for the same content");
    assert!(paths[0].starts_with(media_dir.path().to_str().unwrap()));
    assert_eq!(std::fs::read(&paths[0]).unwrap(), bytes);

    let compliance = app.api("compliance", None).await;
    let (_, list) = compliance.get("/api/v1/archive/messages").await;
    let id = list["messages"][0]["id"].as_i64().unwrap();
    let (_, detail) = compliance
        .get(&format!("/api/v1/archive/messages/{id}"))
        .await;
    let media_id = detail["media"][0]["id"].as_i64().unwrap();
    assert_eq!(detail["media"][0]["state"], "done", "{detail}");
    let response = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/archive/media/{media_id}",
            app.server.base_url
        ))
        .bearer_auth(&compliance.key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("attachment")
    );
    assert_eq!(response.bytes().await.unwrap().as_ref(), bytes.as_slice());
    let media_reads = count(
        &app.db,
        "SELECT COUNT(*) FROM archive_read WHERE corp_id = $1 AND what = 'media'",
    )
    .await;
    assert_eq!(media_reads, 1);
    app.stop().await;
}

/// A library that answers a media chunk with no data and the same index, or with a chunk that
/// is not base64, costs an attempt each and the file is fetched on a later round: the puller is
/// never held by it.
#[tokio::test]
async fn a_media_library_that_makes_no_progress_is_retried_not_waited_on() {
    let (app, _media) = spawn(Backend::Sqlite, Settings::default()).await;
    let w = app.wecom();
    let bytes: Vec<u8> = (0..700_000u32).map(|i| (i % 241) as u8).collect();
    let m = w.archive_add_media(CORP, bytes.clone());
    w.archive_fault(CORP, ArchiveFault::MediaStall, 1);
    w.archive_fault(CORP, ArchiveFault::MediaGarbage, 1);
    let file = json!({"msgid": "stall-1", "action": "send", "from": STAFF, "tolist": [CUSTOMER],
        "roomid": "", "msgtime": w.now_ms(), "msgtype": "file", "file": {"md5sum": m.md5sum,
        "filename": "报价.xlsx", "fileext": "xlsx", "filesize": m.size, "sdkfileid": m.sdkfileid}})
    .to_string();
    w.archive_push(CORP, &file, None);
    let (seq, _) = w.archive_text(CORP, STAFF, &[CUSTOMER], "", "文件收到了吗");
    wait_seq(&app, seq).await;
    let db = app.db.clone();
    eventually("the file downloaded after two failed attempts", || {
        let db = db.clone();
        async move {
            count(
                &db,
                "SELECT COUNT(*) FROM archive_media WHERE corp_id = $1 AND state = 'done'",
            )
            .await
                == 1
        }
    })
    .await;
    let (attempts, path): (i32, String) = scrm::on_db!(&app.db, |pool| sqlx::query_as(
        "SELECT attempts, path FROM archive_media WHERE corp_id = $1"
    )
    .bind(CORP)
    .fetch_one(pool)
    .await)
    .unwrap();
    assert_eq!(
        attempts, 2,
        "one attempt each for the stall and the garbage"
    );
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    app.stop().await;
}

/// A library that prints to standard output (even bytes that look like a frame) cannot corrupt
/// the worker's protocol: the worker keeps its channel on a private descriptor, and the pull goes
/// on without a restart.
#[tokio::test]
async fn a_library_that_prints_does_not_corrupt_the_protocol() {
    let (app, _media) = spawn(Backend::Sqlite, Settings::default()).await;
    let w = app.wecom();
    w.archive_fault(CORP, ArchiveFault::Print, 3);
    let (seq, _) = w.archive_text(CORP, STAFF, &[CUSTOMER], "", "打印也不怕");
    wait_seq(&app, seq).await;
    assert_eq!(stored(&app.db).await, 1);
    let restarts: i64 = scrm::on_db!(&app.db, |pool| sqlx::query_scalar(
        "SELECT worker_restarts FROM archive_cursor WHERE corp_id = $1"
    )
    .bind(CORP)
    .fetch_one(pool)
    .await)
    .unwrap();
    assert_eq!(restarts, 0, "no restart: the frames were not corrupted");
    app.stop().await;
}

/// With a long poll interval, `msgaudit_notify` is what triggers the pull.
#[tokio::test]
async fn msgaudit_notify_triggers_a_pull() {
    let (app, _media) = spawn(
        Backend::Sqlite,
        Settings {
            poll_secs: 3600,
            ..Settings::default()
        },
    )
    .await;
    let w = app.wecom();
    // The start-up round has run (nothing to pull yet).
    let db = app.db.clone();
    eventually("the first round ran", || {
        let db = db.clone();
        async move { cursor(&db).await.last_pull_at_ms.is_some() }
    })
    .await;
    // archive_text pushes msgaudit_notify (at most one per 15 s, as WeCom).
    let (seq, _) = w.archive_text(CORP, STAFF, &[CUSTOMER], "", "通知触发");
    app.emulator.flush_callbacks().await;
    wait_seq(&app, seq).await;
    assert_eq!(stored(&app.db).await, 1);
    app.stop().await;
}

/// No successful pull for longer than `stall_alert_secs`: one critical alert to the corp's
/// compliance recipients and the operators, not one per round.
#[tokio::test]
async fn a_stalled_archive_alerts_operators_once() {
    let (app, _media) = spawn(Backend::Sqlite, Settings::default()).await;
    let w = app.wecom();
    let (seq, _) = w.archive_text(CORP, STAFF, &[CUSTOMER], "", "在吗");
    wait_seq(&app, seq).await;
    // WeCom unreachable from now on, and the last success three hours ago — set once a pull has
    // failed, so that a round already under way when WeCom went down cannot record a success after
    // it (rounds run one after another).
    w.set_down(true);
    let db = app.db.clone();
    eventually("a failed pull", || {
        let db = db.clone();
        async move { cursor(&db).await.last_error.is_some() }
    })
    .await;
    let three_hours_ago = scrm::platform::db::now_ms() - 3 * 3_600_000;
    scrm::on_db!(&app.db, |pool| sqlx::query(
        "UPDATE archive_cursor SET last_success_at_ms = $2 WHERE corp_id = $1"
    )
    .bind(CORP)
    .bind(three_hours_ago)
    .execute(pool)
    .await
    .map(|_| ()))
    .unwrap();
    let db = app.db.clone();
    eventually("a stall alert", || {
        let db = db.clone();
        async move {
            count(
                &db,
                "SELECT COUNT(*) FROM alert WHERE corp_id = $1 AND kind = 'archive_stalled'",
            )
            .await
                == 1
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let alerts = count(
        &app.db,
        "SELECT COUNT(*) FROM alert WHERE corp_id = $1 AND kind = 'archive_stalled'",
    )
    .await;
    assert_eq!(alerts, 1, "one alert per stall");
    let to: Vec<String> = scrm::on_db!(&app.db, |pool| sqlx::query_scalar(
        "SELECT d.recipient FROM alert_delivery d JOIN alert a ON a.id = d.alert_id \
         WHERE a.corp_id = $1 AND a.kind = 'archive_stalled' ORDER BY d.recipient"
    )
    .bind(CORP)
    .fetch_all(pool)
    .await)
    .unwrap();
    assert_eq!(to, vec![COMPLIANCE.to_owned(), "ops01".to_owned()]);
    let c = cursor(&app.db).await;
    assert!(c.last_error.is_some(), "{c:?}");
    app.stop().await;
}

/// Configuration mistakes are startup errors that say what to fix.
#[test]
fn archive_configuration_errors_are_clear() {
    let env = std::collections::HashMap::new();
    let base = |archive: &str, corp: &str| {
        format!(
            "{archive}\n[[corps]]\ncorp_id = \"{CORP}\"\n{corp}\n[[corps.apps]]\nname = \"a\"\n\
             token = \"{ARCHIVE_TOKEN}\"\nencoding_aes_key = \"{ARCHIVE_KEY}\"\n"
        )
    };
    let corp = format!("[corps.archive]\nsecret = \"s\"\n{}", keys_toml(&[1]));
    let err = scrm::platform::config::Config::from_toml(&base("", &corp), &env).unwrap_err();
    assert!(err.to_string().contains("archive.library"), "{err}");
    let bad_key = "[corps.archive]\nsecret = \"s\"\nkeys = [{ version = 4, pem = \"nope\" }]";
    let err = scrm::platform::config::Config::from_toml(
        &base("[archive]\nlibrary = \"/x.so\"", bad_key),
        &env,
    )
    .unwrap_err();
    assert!(err.to_string().contains("publickey_ver 4"), "{err}");
    let err = scrm::platform::config::Config::from_toml(
        &base("[archive]\nlibrary = \"/x.so\"\nbatch_limit = 1001", &corp),
        &env,
    )
    .unwrap_err();
    assert!(err.to_string().contains("batch_limit"), "{err}");
    let ok = scrm::platform::config::Config::from_toml(
        &base("[archive]\nlibrary = \"/x.so\"", &corp),
        &env,
    )
    .unwrap();
    assert_eq!(ok.corps[0].archive.as_ref().unwrap().keys[0].0, 1);
    assert!(
        !format!("{:?}", ok.corps[0].archive).contains("BEGIN"),
        "keys never in Debug"
    );
}

/// Two pullers with the same batch: the cursor's compare-and-set lets the first store it and the
/// second change nothing (no duplicate, no cursor moved backwards).
async fn a_batch_stored_by_another_puller_changes_nothing(backend: Backend) {
    use scrm::domain::archive::proto::{Item, Outcome};
    use scrm::domain::archive::store::{self, StoreBatchError};
    let test_db = common::TestDb::create(backend).await;
    let db = test_db.connect().await;
    let items: Vec<Item> = (1..=3u64)
        .map(|seq| Item {
            record: wecom_sdk::archive::EncryptedRecord {
                seq,
                msgid: format!("m{seq}"),
                publickey_ver: 1,
                encrypt_random_key: String::new(),
                encrypt_chat_msg: String::new(),
            },
            outcome: Outcome::Plain {
                json: json!({"msgid": format!("m{seq}"), "action": "send", "from": STAFF,
                    "tolist": [CUSTOMER], "roomid": "", "msgtime": 1_700_000_000_000i64 + seq as i64,
                    "msgtype": "text", "text": {"content": "你好"}})
                .to_string(),
            },
        })
        .collect();
    let now = scrm::platform::db::now_ms();
    store::cursor(&db, CORP, now).await.unwrap();
    let first = store::store_batch(&db, CORP, 0, &items, 1 << 20, now)
        .await
        .unwrap();
    assert_eq!((first.messages, first.seq), (3, 3));
    let second = store::store_batch(&db, CORP, 0, &items, 1 << 20, now).await;
    assert!(
        matches!(second, Err(StoreBatchError::CursorMoved { expected: 0 })),
        "{second:?}"
    );
    assert_eq!(stored(&db).await, 3);
    assert_eq!(cursor(&db).await.seq, 3);
    // A re-pull from the stored cursor of records already there stores nothing twice.
    let again = store::store_batch(&db, CORP, 3, &items, 1 << 20, now)
        .await
        .unwrap();
    assert_eq!((again.messages, again.duplicates, again.seq), (0, 3, 3));
    db.close().await;
    test_db.drop_database().await;
}

/// The command line: `scrm archive pull` with its own worker, `status --json`, `undecryptable`;
/// media over `media_max_bytes` is recorded, not fetched.
#[tokio::test]
async fn the_archive_command_line_pulls_and_reports() {
    let emulator = wecom_sdk::testkit::Emulator::start(emulated::quick_emulator())
        .await
        .unwrap();
    let w = emulator.state();
    archive_wecom(&w);
    w.add_archive_public_key(CORP, 3, &pem("v3.pub.pem"))
        .unwrap();
    w.archive_text(CORP, STAFF, &[CUSTOMER], "", "用未配置的密钥");
    w.add_archive_public_key(CORP, 2, &pem("v2.pub.pem"))
        .unwrap();
    let (_, _) = w.archive_text(CORP, STAFF, &[CUSTOMER], "", "你好");
    let big = w.archive_add_media(CORP, vec![7u8; 300_000]);
    let file = json!({"msgid": "big-file", "action": "send", "from": STAFF, "tolist": [CUSTOMER],
        "roomid": "", "msgtime": w.now_ms(), "msgtype": "file", "file": {"md5sum": big.md5sum,
        "filename": "大文件.zip", "fileext": "zip", "filesize": big.size, "sdkfileid": big.sdkfileid}});
    w.archive_push(CORP, &file.to_string(), None);
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "database_url = \"sqlite://{}/scrm.db\"\n[archive]\nlibrary = \"{}\"\nmedia_max_bytes = 100000\n\
         media_dir = \"{}/media\"\n[archive.worker_env]\nWEWORK_FINANCE_STANDIN_URL = \"http://{}\"\n\
         [[corps]]\ncorp_id = \"{CORP}\"\n[corps.archive]\nsecret = \"{ARCHIVE_SECRET}\"\n{}\n\
         [[corps.apps]]\nname = \"a\"\ntoken = \"{ARCHIVE_TOKEN}\"\nencoding_aes_key = \"{ARCHIVE_KEY}\"\n",
        dir.path().display(),
        standin().display(),
        dir.path().display(),
        emulator.addr(),
        keys_toml(&[1, 2]),
    );
    std::fs::write(dir.path().join("scrm.toml"), config).unwrap();
    let out = common::scrm(dir.path(), &["archive", "pull"]).await;
    assert_eq!(out.code, 1, "one record was undecryptable: {out:?}");
    assert!(out.stdout.contains("2 new messages"), "{out:?}");
    assert!(out.stdout.contains("1 undecryptable"), "{out:?}");
    assert!(out.stdout.contains("cursor at seq 3"), "{out:?}");
    let out = common::scrm(dir.path(), &["archive", "status", "--json"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let status: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(status[0]["seq"], 3, "{status}");
    assert_eq!(status[0]["undecryptable_open"], 1, "{status}");
    assert_eq!(status[0]["messages"], 2, "{status}");
    let out = common::scrm(dir.path(), &["archive", "undecryptable"]).await;
    assert!(out.stdout.contains("unknown_key_version"), "{out:?}");
    let db = Db::connect(&format!("sqlite://{}/scrm.db", dir.path().display()))
        .await
        .unwrap();
    let state: String = scrm::on_db!(&db, |pool| sqlx::query_scalar(
        "SELECT state FROM archive_media WHERE msgid = 'big-file'"
    )
    .fetch_one(pool)
    .await)
    .unwrap();
    assert_eq!(state, "too_large");
    db.close().await;
}

/// A staff member deletes a customer they chatted with: the alert's evidence lists the last
/// archived messages of the pair (references, not content) and links to them.
async fn a_deletion_alert_links_the_last_archived_messages(backend: Backend) {
    let (app, _media) = spawn(backend, Settings::default()).await;
    let w = app.wecom();
    let ext = w.add_customer(
        CORP,
        STAFF,
        wecom_sdk::testkit::NewCustomer {
            name: "王总".into(),
            ..Default::default()
        },
    );
    app.settle().await;
    w.archive_text(CORP, STAFF, &[&ext], "", "王总您好");
    let (seq, _) = w.archive_text(CORP, &ext, &[STAFF], "", "不需要了");
    wait_seq(&app, seq).await;
    assert!(w.staff_deletes_customer(CORP, STAFF, &ext));
    app.settle().await;
    let detail: String = scrm::on_db!(&app.db, |pool| sqlx::query_scalar(
        "SELECT e.detail FROM alert_evidence e JOIN alert a ON a.id = e.alert_id \
         WHERE a.corp_id = $1 AND a.kind = 'staff_deleted_customer'"
    )
    .bind(CORP)
    .fetch_one(pool)
    .await)
    .unwrap();
    let detail: serde_json::Value = serde_json::from_str(&detail).unwrap();
    let last = detail["last_messages"].as_array().unwrap();
    assert_eq!(last.len(), 2, "{detail}");
    assert_eq!(last[0]["sender_kind"], "customer", "newest first: {detail}");
    assert!(last[0].get("text").is_none(), "references only, no content");
    assert!(
        detail["messages_api"]
            .as_str()
            .unwrap()
            .contains(&format!("external_userid={ext}"))
    );
    app.stop().await;
}

/// An alert raised by an archived message: on its console page, compliance sees the messages
/// before and after it in the same chat (not the room's), the hit among them, and the read is in
/// the archive read log; a salesperson's console session reaches no alert page at all.
async fn the_console_shows_the_conversation_around_archived_evidence(backend: Backend) {
    let (app, _media) = spawn(backend, Settings::default()).await;
    let w = app.wecom();
    w.archive_text(CORP, STAFF, &[CUSTOMER], "", "您好，这是我们的报价单");
    w.archive_text(
        CORP,
        STAFF,
        &[CUSTOMER, "lisi"],
        "wrRoomAAAAAAAAAAAAAAAAAAAAAA01",
        "群里的另一件事",
    );
    w.archive_text(CORP, CUSTOMER, &[STAFF], "", "价格能再低一点吗");
    let (_, risky) = w.archive_text(
        CORP,
        STAFF,
        &[CUSTOMER],
        "",
        "你私 下 转账给我，比走公司便宜",
    );
    let (last, _) = w.archive_text(CORP, CUSTOMER, &[STAFF], "", "好的，发我账号");
    wait_seq(&app, last).await;
    let db = app.db.clone();
    let source = format!("archive:{risky}");
    eventually("the message is evidence of an alert", || {
        let (db, source) = (db.clone(), source.clone());
        async move {
            count(
                &db,
                &format!(
                    "SELECT COUNT(*) FROM alert_evidence WHERE corp_id = $1 AND source_ref = '{source}'"
                ),
            )
            .await
                == 1
        }
    })
    .await;
    let alert: i64 = scrm::on_db!(&app.db, |pool| sqlx::query_scalar(
        "SELECT alert_id FROM alert_evidence WHERE corp_id = $1 AND source_ref = $2"
    )
    .bind(CORP)
    .bind(&source)
    .fetch_one(pool)
    .await)
    .unwrap();
    let corp = crate::common::corp(CORP);
    scrm::auth::account::create(
        &app.db,
        &corp,
        "officer",
        "correct horse battery staple",
        scrm::auth::Role::Compliance,
        "test",
        scrm::platform::db::now_ms(),
    )
    .await
    .unwrap();
    let mut officer = crate::web_client::Browser::new(&app.server.base_url);
    let signed = officer
        .post_form(
            "/console/login",
            &[
                ("username", "officer"),
                ("password", "correct horse battery staple"),
                ("next", "/console"),
            ],
        )
        .await;
    assert_eq!(signed.status, 303, "{}", signed.text);
    let page = officer.get(&format!("/console/alerts/{alert}")).await;
    assert_eq!(page.status, 200, "{}", page.text);
    let context = page
        .text
        .split("<details class=\"context\">")
        .nth(1)
        .expect("the conversation around the evidence")
        .split("</details>")
        .next()
        .unwrap();
    let before = context
        .find("价格能再低一点吗")
        .expect("the message before");
    let hit = context
        .find("li class=\"from-staff this\"")
        .expect("the hit, marked");
    let after = context.find("好的，发我账号").expect("the message after");
    assert!(before < hit && hit < after, "in order: {context}");
    assert!(context.contains("您好，这是我们的报价单"));
    assert!(!context.contains("群里的另一件事"), "not the room's");
    let logged = count(
        &app.db,
        &format!(
            "SELECT COUNT(*) FROM archive_read WHERE corp_id = $1 AND what = 'alert_context' \
             AND target = '{risky}' AND actor = 'console:officer' AND items = 4"
        ),
    )
    .await;
    assert_eq!(logged, 1, "the read of the conversation is logged");
    // The settings show the corp's archive key versions.
    let settings = officer.get("/console/settings").await;
    assert_eq!(settings.status, 200);
    assert!(settings.text.contains("会话存档私钥"));
    assert!(settings.text.contains("已配置"), "{}", settings.text);
    app.stop().await;
}
