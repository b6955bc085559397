//! The `scrm` command line, run as a real process.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly"
)]

use crate::common;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::common::{
    Backend, CORP, KEY, Output, TestApp, TestDb, add_contact_event, config_toml, scrm,
};

async fn selftest(dir: &Path, config: &str, url: &str, app: &str) -> Output {
    scrm(
        dir,
        &[
            "--config", config, "callback", "selftest", "--url", url, "--corp", CORP, "--app", app,
        ],
    )
    .await
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

async fn inbox_commands_show_what_was_stored(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for n in 0..3 {
        let response = app
            .post_callback(&app.event_request(&add_contact_event(n, now())))
            .await;
        assert_eq!(response.status(), 200);
    }
    let dir = app.test_db.dir.path();
    let url = app.test_db.url.clone();

    let count = scrm(dir, &["--database-url", &url, "inbox", "count"]).await;
    assert_eq!(
        (count.code, count.stdout.as_str()),
        (0, "3\n"),
        "{}",
        count.stderr
    );
    let other = scrm(
        dir,
        &[
            "--database-url",
            &url,
            "inbox",
            "count",
            "--corp",
            "wwother",
        ],
    )
    .await;
    assert_eq!(other.stdout, "0\n");

    let list = scrm(
        dir,
        &[
            "--database-url",
            &url,
            "inbox",
            "list",
            "--json",
            "--limit",
            "2",
        ],
    )
    .await;
    assert_eq!(list.code, 0, "{}", list.stderr);
    let rows: Vec<serde_json::Value> = list
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["corp_id"], CORP);
    assert_eq!(rows[0]["change_type"], "add_external_contact");
    let id = rows[0]["id"].as_i64().expect("id");

    let table = scrm(dir, &["--database-url", &url, "inbox", "list"]).await;
    assert!(
        table
            .stdout
            .contains("event/change_external_contact/add_external_contact"),
        "{}",
        table.stdout
    );

    let show = scrm(
        dir,
        &["--database-url", &url, "inbox", "show", &id.to_string()],
    )
    .await;
    assert_eq!(show.code, 0);
    assert!(
        show.stdout.contains("<ExternalUserID><![CDATA[wmQ2pCAAAA"),
        "{}",
        show.stdout
    );
    let show_json = scrm(
        dir,
        &[
            "--database-url",
            &url,
            "inbox",
            "show",
            &id.to_string(),
            "--json",
        ],
    )
    .await;
    let row: serde_json::Value = serde_json::from_str(&show_json.stdout).expect("JSON");
    assert!(
        row["body"]
            .as_str()
            .is_some_and(|b| b.contains("展会二号展位"))
    );

    let missing = scrm(dir, &["--database-url", &url, "inbox", "show", "999999"]).await;
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("999999"));
    app.stop().await;
}

async fn selftest_passes_against_a_correct_server_and_names_the_fault_otherwise(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let dir = app.test_db.dir.path();
    let good = dir.join("good.toml");
    std::fs::write(&good, config_toml(&app.test_db.url, "")).expect("config");
    let good = good.to_string_lossy().into_owned();

    let pass = selftest(dir, &good, &app.base_url, "contacts").await;
    assert_eq!(pass.code, 0, "{}{}", pass.stdout, pass.stderr);
    assert!(pass.stdout.contains("全部通过"), "{}", pass.stdout);
    assert_eq!(
        app.inbox_count().await,
        1,
        "the test event is stored like any other"
    );

    // The operator typed another Token into the WeCom console than the server has.
    let wrong_token = config_toml(&app.test_db.url, "").replace(common::TOKEN, "SomeOtherToken");
    let wrong = dir.join("wrong.toml");
    std::fs::write(&wrong, wrong_token).expect("config");
    let fail = selftest(dir, &wrong.to_string_lossy(), &app.base_url, "contacts").await;
    assert_eq!(fail.code, 1);
    assert!(fail.stdout.contains("签名校验失败"), "{}", fail.stdout);

    // Wrong path (unknown app on the server side).
    let wrong_path = format!("{}/wecom/callback/{CORP}/nope", app.base_url);
    let path = selftest(dir, &good, &wrong_path, "contacts").await;
    assert_eq!(path.code, 1);
    assert!(path.stdout.contains("路径不存在"), "{}", path.stdout);

    // Nothing listening.
    let port = common::free_port();
    let down = selftest(dir, &good, &format!("http://127.0.0.1:{port}"), "contacts").await;
    assert_eq!(down.code, 1);
    assert!(down.stdout.contains("无法连接"), "{}", down.stdout);

    // An app the config does not have.
    let unknown = selftest(dir, &good, &app.base_url, "ghost").await;
    assert_eq!(unknown.code, 2);
    assert!(unknown.stderr.contains("ghost"), "{}", unknown.stderr);
    app.stop().await;
}

async fn migrate_applies_the_schema(backend: Backend) {
    let test_db = TestDb::create(backend).await;
    let out = scrm(
        test_db.dir.path(),
        &["--database-url", &test_db.url, "migrate"],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("migrations applied"));
    let db = scrm::platform::db::Db::connect(&test_db.url)
        .await
        .expect("connect");
    assert_eq!(
        scrm::pipeline::inbox::count(&db, None)
            .await
            .expect("inbox table exists"),
        0
    );
    db.close().await;
    test_db.drop_database().await;
}

both_backends!(
    inbox_commands_show_what_was_stored,
    selftest_passes_against_a_correct_server_and_names_the_fault_otherwise,
    migrate_applies_the_schema,
);

/// A bad EncodingAESKey stops start-up with a message naming the corp, the app and the field.
#[tokio::test]
async fn bad_key_stops_startup_naming_corp_and_app() {
    let dir = tempfile::tempdir().expect("dir");
    let text = config_toml("sqlite://x.db", "").replace(KEY, "not-a-valid-key");
    std::fs::write(dir.path().join("scrm.toml"), text).expect("config");
    let out = scrm(dir.path(), &["serve"]).await;
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("corps[0].apps[0].encoding_aes_key"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(CORP) && out.stderr.contains("contacts"),
        "{}",
        out.stderr
    );
    assert!(
        !dir.path().join("x.db").exists(),
        "nothing is created before the config is valid"
    );
}

/// With no config file at all, `serve` starts on the embedded SQLite default.
#[tokio::test]
async fn serve_without_config_starts_on_embedded_sqlite() {
    let dir = tempfile::tempdir().expect("dir");
    let port = common::free_port();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_scrm"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .current_dir(dir.path())
        .env_remove("SCRM_CONFIG")
        .env_remove("SCRM_DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start");
    let ready = common::wait_ready(port).await;
    assert!(ready, "serve did not become ready");
    assert!(
        dir.path().join("data/scrm.db").exists(),
        "the embedded database is created in ./data"
    );
    // SIGTERM: graceful shutdown, exit 0, and the log says how to add a corp.
    let pid = child.id().expect("pid").to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("exits")
        .expect("output");
    assert_eq!(out.status.code(), Some(0));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("scrm.toml"), "{log}");
}

/// `scrm emulator` serves an emulated corp; `scrm sync` imports it with a final table, and
/// `scrm sync --status --json` shows the finished job.
#[tokio::test]
async fn emulator_and_sync_commands_import_an_emulated_corp() {
    let dir = tempfile::tempdir().expect("dir");
    let port = common::free_port();
    let mut emulator = tokio::process::Command::new(env!("CARGO_BIN_EXE_scrm"))
        .args([
            "emulator",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--corp",
            CORP,
            "--secret",
            "cli-secret",
            "--staff",
            "6",
            "--customers",
            "40",
            "--group-chats",
            "3",
        ])
        .current_dir(dir.path())
        .env("SCRM_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start emulator");
    let client = reqwest::Client::new();
    let mut up = false;
    for _ in 0..400 {
        if client
            .get(format!("http://127.0.0.1:{port}/testkit/stats"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(up, "emulator did not start");
    let config = config_toml("sqlite://scrm.db", "")
        .replacen(
            "[callback]",
            &format!("[wecom]\napi_base_url = \"http://127.0.0.1:{port}/cgi-bin/\"\n[callback]"),
            1,
        )
        .replacen(
            "name = \"contacts\"",
            "name = \"contacts\"\nsecret = \"cli-secret\"",
            1,
        );
    std::fs::write(dir.path().join("scrm.toml"), config).expect("config");

    let out = scrm(dir.path(), &["sync"]).await;
    assert_eq!(out.code, 0, "{} {}", out.stdout, out.stderr);
    assert!(out.stdout.contains("同步完成"), "{}", out.stdout);
    assert!(out.stdout.contains("API calls"), "{}", out.stdout);

    let status = scrm(dir.path(), &["sync", "--status", "--json"]).await;
    assert_eq!(status.code, 0, "{}", status.stderr);
    let jobs: serde_json::Value = serde_json::from_str(&status.stdout).expect("json");
    assert_eq!(jobs[0]["state"], "done", "{jobs}");
    assert_eq!(jobs[0]["corp_id"], CORP);
    assert!(
        jobs[0].get("cursor").is_none(),
        "the checkpoint is not shown"
    );

    // A corp that is not configured is a clear error.
    let wrong = scrm(dir.path(), &["sync", "--corp", "wwnotconfigured"]).await;
    assert_eq!(wrong.code, 2);
    assert!(wrong.stderr.contains("not configured"), "{}", wrong.stderr);
    emulator.kill().await.expect("stop emulator");
}

/// `scrm archive keygen`: a private key only its owner reads, the public key WeCom's console
/// takes (the emulator's parser is WeCom's side), the line for scrm.toml — and never a key
/// written over.
#[tokio::test]
async fn archive_keygen_makes_a_pair_and_never_overwrites_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = scrm(
        dir.path(),
        &["archive", "keygen", "--out", "keys", "--version", "3"],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let private = dir.path().join("keys/archive-key-v3.pem");
    let public = dir.path().join("keys/archive-key-v3.pub.pem");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&private).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let public_pem = std::fs::read_to_string(&public).unwrap();
    assert!(out.stdout.contains(public_pem.trim()), "{}", out.stdout);
    assert!(
        out.stdout.contains("keys = [{ version = 3, file = "),
        "{}",
        out.stdout
    );
    // The pair works: what the public key wraps, the private key unwraps.
    let mut ring = wecom_sdk::archive::keys::KeyRing::new();
    ring.insert_pem(3, &std::fs::read_to_string(&private).unwrap())
        .unwrap();
    let wrapped = wecom_sdk::archive::keys::PublicKey::from_pem(&public_pem)
        .unwrap()
        .wrap("the message key")
        .unwrap();
    assert_eq!(ring.unwrap_key(3, &wrapped).unwrap(), "the message key");

    let before = std::fs::read(&private).unwrap();
    let again = scrm(
        dir.path(),
        &["archive", "keygen", "--out", "keys", "--version", "3"],
    )
    .await;
    assert_ne!(again.code, 0);
    assert!(
        again.stderr.contains("not replacing a key"),
        "{}",
        again.stderr
    );
    assert_eq!(std::fs::read(&private).unwrap(), before);
}
