//! Upgrades: migrations stay backward compatible for one release (docs/operations.md, Upgrades).
//! A binary on a schema a newer release migrated — an additive migration it does not know — starts,
//! serves and stores callbacks (a previous-release instance restarting in a rollout, or a rollback);
//! a schema with an unknown migration marked breaking is refused, naming it. With the previous
//! release's binary itself: `rolling_upgrade_with_the_previous_release`, run by
//! `scripts/rolling-upgrade.sh`, which builds that binary.

use std::path::Path;
use std::time::Duration;

use scrm::platform::db::{Db, MigrationError};
use wecom_sdk::CallbackCrypto;
use wecom_sdk::sender::{self, CallbackRequest};

use crate::common::{Backend, CORP, KEY, TOKEN, TestDb, config_toml, scrm};
use crate::emulated::Instance;

both_backends!(a_schema_from_a_newer_release_runs_unless_a_migration_breaks_it,);

/// A customer deleting a member (`del_follow_user`: processed without a WeCom call), signed and
/// encrypted for the "contacts" app as WeCom sends it; `n` makes it unique.
fn callback(n: u64) -> CallbackRequest {
    let now = chrono::Utc::now().timestamp();
    let plaintext = format!(
        "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
<CreateTime>{now}</CreateTime><MsgType><![CDATA[event]]></MsgType>\
<Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[del_follow_user]]></ChangeType>\
<UserID><![CDATA[zhangsan]]></UserID><ExternalUserID><![CDATA[wmUpgrade{n:023}]]></ExternalUserID></xml>"
    );
    let crypto = CallbackCrypto::new(TOKEN, KEY, CORP).expect("crypto");
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    sender::event(&crypto, &plaintext, &now.to_string(), &nonce, None)
}

/// Sends callback `n` to the server at `base`: it must answer `success`.
async fn send(base: &str, n: u64) {
    let request = callback(n);
    let answer = reqwest::Client::new()
        .post(format!(
            "{base}/wecom/callback/{CORP}/contacts?{}",
            request.query
        ))
        .header("content-type", "text/xml")
        .body(request.body.clone().unwrap_or_default())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "callback {n} to {base}");
    assert_eq!(answer.text().await.unwrap(), "success");
}

/// Waits until `count` events are processed, each once.
async fn all_processed_once(db: &Db, count: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let stats = scrm::pipeline::worker::stats(db, None).await.unwrap();
        if u64::try_from(stats.done).unwrap() == count {
            assert_eq!(stats.pending + stats.dead, 0, "{stats:?}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every callback processed: {stats:?} of {count}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows = scrm::pipeline::inbox::list(db, None, 10_000).await.unwrap();
    assert_eq!(
        rows.len() as u64,
        count,
        "each acknowledged callback stored once"
    );
    assert!(
        rows.iter().all(|r| r.state == "done" && r.attempts == 1),
        "each processed once"
    );
}

/// A migration of a newer release, as its binary would have recorded it.
async fn record_future_migration(db: &Db, version: i64, description: &str) {
    let checksum: Vec<u8> = vec![0xab; 48];
    let sql = "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
               VALUES ($1, $2, TRUE, $3, 1)";
    scrm::on_db!(db, |pool| sqlx::query(sql)
        .bind(version)
        .bind(description)
        .bind(&checksum)
        .execute(pool)
        .await
        .map(|_| ()))
    .unwrap();
}

async fn a_schema_from_a_newer_release_runs_unless_a_migration_breaks_it(backend: Backend) {
    let test_db = TestDb::create(backend).await;
    let db = test_db.connect().await;
    // The newer release added a column and recorded its migration.
    scrm::on_db!(&db, |pool| sqlx::query(
        "ALTER TABLE inbox ADD COLUMN future_note TEXT"
    )
    .execute(pool)
    .await
    .map(|_| ()))
    .unwrap();
    record_future_migration(&db, 9001, "add inbox future note").await;
    db.migrate()
        .await
        .expect("an additive migration of a newer release is skipped");

    // This release's server starts on it and stores and processes callbacks.
    let mut server =
        Instance::start(&config_toml(&test_db.url, "timestamp_window_secs = 0\n")).await;
    for n in 0..5 {
        send(&server.base_url, n).await;
    }
    all_processed_once(&db, 5).await;
    server.stop().await;

    // A breaking one: refused, named, nothing applied.
    record_future_migration(&db, 9002, "breaking drop inbox dedup key").await;
    match db.migrate().await {
        Err(MigrationError::TooNew {
            version,
            description,
        }) => {
            assert_eq!(version, 9002);
            assert_eq!(description, "breaking drop inbox dedup key");
        }
        other => panic!("a breaking migration of a newer release must stop the start: {other:?}"),
    }
    let dir = tempfile::tempdir().unwrap();
    let out = scrm(dir.path(), &["--database-url", &test_db.url, "migrate"]).await;
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("migrated by a newer release") && out.stderr.contains("9002"),
        "{}",
        out.stderr
    );
    db.close().await;
    test_db.drop_database().await;
}

/// A `scrm serve` process of `binary` on `db_url`, killed on drop.
struct Server {
    child: tokio::process::Child,
    base: String,
}

impl Server {
    async fn start(binary: &Path, dir: &Path, name: &str, db_url: &str) -> Self {
        let port = crate::common::free_port();
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            config_toml(db_url, "timestamp_window_secs = 0\n").replace(
                "listen = \"127.0.0.1:0\"",
                &format!("listen = \"127.0.0.1:{port}\""),
            ),
        )
        .unwrap();
        let child = tokio::process::Command::new(binary)
            .args(["--config", &config.to_string_lossy(), "serve"])
            .env_remove("SCRM_CONFIG")
            .env_remove("SCRM_DATABASE_URL")
            .env("SCRM_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        assert!(
            crate::common::wait_ready(port).await,
            "{name} ({}) did not become ready",
            binary.display()
        );
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// The previous release's binary (built by `scripts/rolling-upgrade.sh`) and this one on one
/// PostgreSQL database: the old one creates the schema and serves, the new one migrates while the
/// old one serves, the old one restarts on the newer schema, callbacks go to both all along —
/// every acknowledged callback is stored once and processed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the previous release's binary: scripts/rolling-upgrade.sh builds it and runs this test"]
async fn rolling_upgrade_with_the_previous_release() {
    let previous = std::env::var("SCRM_PREVIOUS_BINARY").expect(
        "SCRM_PREVIOUS_BINARY: the previous release's scrm (scripts/rolling-upgrade.sh sets it)",
    );
    let previous = Path::new(&previous);
    let current = Path::new(env!("CARGO_BIN_EXE_scrm"));
    let test_db = TestDb::create(Backend::Postgres).await;
    let dir = tempfile::tempdir().unwrap();
    let mut sent = 0u64;
    let old = Server::start(previous, dir.path(), "old", &test_db.url).await;
    for _ in 0..20 {
        send(&old.base, sent).await;
        sent += 1;
    }
    let new = Server::start(current, dir.path(), "new", &test_db.url).await;
    for i in 0..40 {
        // Both serve at once: alternate, as a load balancer would.
        let base = if i % 2 == 0 { &old.base } else { &new.base };
        send(base, sent).await;
        sent += 1;
    }
    // The old release restarts in the middle of the rollout, on the newer schema.
    old.kill().await;
    let old = Server::start(previous, dir.path(), "old-again", &test_db.url).await;
    for i in 0..40 {
        let base = if i % 2 == 0 { &old.base } else { &new.base };
        send(base, sent).await;
        sent += 1;
    }
    let db = test_db.connect().await;
    all_processed_once(&db, sent).await;
    old.kill().await;
    new.kill().await;
    db.close().await;
    test_db.drop_database().await;
}
