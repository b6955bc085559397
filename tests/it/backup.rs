//! Backup and restore, as docs/operations.md tells an operator to do them: SQLite online with
//! `scrm backup` (`VACUUM INTO`) while callbacks keep arriving, PostgreSQL with `pg_dump -Fc` and
//! `pg_restore`; a server started on the restored database serves what was backed up. And
//! retention: old processed callbacks and archive media go, nothing else.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly"
)]

use crate::common::{Backend, CORP, TestDb};
use crate::emulated::{EmulatedApp, Instance};
use scrm::domain::customers as contacts;
use scrm::platform::db::{BackupError, Db};
use wecom_sdk::testkit::{NewCustomer, NewStaff};

/// The rows a restore must bring back.
async fn counts(db: &Db) -> (i64, i64, i64) {
    let inbox: i64 = scrm::on_db!(db, |pool| sqlx::query_scalar("SELECT COUNT(*) FROM inbox")
        .fetch_one(pool)
        .await)
    .unwrap();
    (
        inbox,
        contacts::count_customers(db, CORP).await.unwrap(),
        contacts::count_relations(db, CORP, "active").await.unwrap(),
    )
}

async fn corp_with_customers(backend: Backend, n: usize) -> (EmulatedApp, String) {
    let app = EmulatedApp::spawn(backend).await;
    let sales = "sales01".to_owned();
    assert!(app.wecom().add_staff(
        CORP,
        NewStaff {
            userid: sales.clone(),
            name: "销售王芳".to_owned(),
            department: Vec::new(),
        },
    ));
    for i in 0..n {
        app.wecom().add_customer(
            CORP,
            &sales,
            NewCustomer {
                name: format!("客户{i}"),
                ..NewCustomer::default()
            },
        );
    }
    app.settle().await;
    (app, sales)
}

/// A server on `url` (the test's config with its database replaced) answers ready and holds the
/// rows: every stored callback, and at least the customers (events stored but not yet processed
/// when the backup was taken are processed by the restored server).
async fn serve_restored(app: &EmulatedApp, url: &str, want: (i64, i64, i64)) {
    let config = app.config_text.replace(&app.test_db.url, url);
    assert_ne!(config, app.config_text, "the database URL is in the config");
    let mut restored = Instance::start(&config).await;
    let db = Db::connect(url).await.unwrap();
    let got = counts(&db).await;
    assert_eq!(got.0, want.0, "stored callbacks");
    assert!(got.1 >= want.1 && got.2 >= want.2, "{got:?} < {want:?}");
    db.close().await;
    restored.stop().await;
}

#[tokio::test]
async fn sqlite_backs_up_online_and_restores() {
    let (app, sales) = corp_with_customers(Backend::Sqlite, 20).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nightly").join("scrm-backup.db");
    // Callbacks keep arriving while the backup runs.
    for i in 0..20 {
        app.wecom().add_customer(
            CORP,
            &sales,
            NewCustomer {
                name: format!("新客户{i}"),
                ..NewCustomer::default()
            },
        );
    }
    let bytes = app.db.backup_into(&file).await.expect("backup");
    assert!(bytes > 0);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    // Never over an existing file.
    assert!(matches!(
        app.db.backup_into(&file).await,
        Err(BackupError::Io(_))
    ));
    app.settle().await;
    let live = counts(&app.db).await;
    assert_eq!(live.1, 40);
    // The copy is one consistent file: it checks, and holds at least the first 20 customers, each
    // with its relation.
    let url = format!("sqlite://{}", file.display());
    let backup = Db::connect(&url).await.unwrap();
    let check: String = scrm::on_db!(&backup, |pool| sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(pool)
        .await)
    .unwrap();
    assert_eq!(check, "ok");
    let copied = counts(&backup).await;
    assert!((20..=40).contains(&copied.1), "{copied:?}");
    assert_eq!(copied.1, copied.2, "every customer with its relation");
    backup.close().await;
    serve_restored(&app, &url, copied).await;
    app.stop().await;
}

#[tokio::test]
async fn postgres_restores_from_pg_dump() {
    let (app, _) = corp_with_customers(Backend::Postgres, 15).await;
    assert!(matches!(
        app.db
            .backup_into(std::path::Path::new("/tmp/never.db"))
            .await,
        Err(BackupError::Unsupported)
    ));
    let want = counts(&app.db).await;
    assert_eq!(want.1, 15);
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("scrm.dump");
    let status = std::process::Command::new("pg_dump")
        .args(["-Fc", "--no-owner", "-d", &app.test_db.url, "-f"])
        .arg(&dump)
        .status()
        .expect("pg_dump is installed with PostgreSQL (scripts/test.sh installs it)");
    assert!(status.success(), "pg_dump: {status}");
    let target = TestDb::create(Backend::Postgres).await;
    let status = std::process::Command::new("pg_restore")
        .args(["--no-owner", "--exit-on-error", "-d", &target.url])
        .arg(&dump)
        .status()
        .expect("pg_restore");
    assert!(status.success(), "pg_restore: {status}");
    serve_restored(&app, &target.url, want).await;
    target.drop_database().await;
    app.stop().await;
}

both_backends!(retention_removes_old_processed_callbacks_and_media_only);

async fn retention_removes_old_processed_callbacks_and_media_only(backend: Backend) {
    let test_db = TestDb::create(backend).await;
    let db = test_db.connect().await;
    let now = scrm::platform::db::now_ms();
    let day = 86_400_000;
    let row = |key: &str, at: i64| scrm::pipeline::inbox::NewInboxRow {
        corp_id: CORP.to_owned(),
        app: "contacts".to_owned(),
        agent_id: None,
        dedup_key: key.to_owned(),
        msg_type: "event".to_owned(),
        event: Some("change_external_contact".to_owned()),
        change_type: Some("add_external_contact".to_owned()),
        create_time: Some(at / 1000),
        received_at_ms: at,
        body: "<xml/>".to_owned(),
    };
    let rows: Vec<_> = (0..2500)
        .map(|i| row(&format!("old-done-{i}"), now - 100 * day))
        .chain([
            row("old-dead", now - 100 * day),
            row("old-pending", now - 100 * day),
            row("new-done", now - day),
        ])
        .collect();
    let refs: Vec<_> = rows.iter().collect();
    scrm::pipeline::inbox::insert_batch(&db, &refs)
        .await
        .unwrap();
    scrm::on_db!(&db, |pool| sqlx::query(
        "UPDATE inbox SET state = CASE WHEN dedup_key = 'old-dead' THEN 'dead' \
         WHEN dedup_key = 'old-pending' THEN 'pending' ELSE 'done' END"
    )
    .execute(pool)
    .await
    .map(|_| ()))
    .unwrap();
    // Media: an old file alone, an old file shared with a newer row, a new file.
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, b"media").unwrap();
        path.display().to_string()
    };
    let (alone, shared, fresh) = (file("alone"), file("shared"), file("fresh"));
    for (id, path, at) in [
        ("f1", &alone, now - 40 * day),
        ("f2", &shared, now - 40 * day),
        ("f3", &shared, now - day),
        ("f4", &fresh, now - day),
    ] {
        scrm::on_db!(&db, |pool| sqlx::query(
            "INSERT INTO archive_media (corp_id, sdkfileid, msgid, kind, state, path, updated_at_ms) \
             VALUES ($1, $2, $3, 'image', 'done', $4, $5)"
        )
        .bind(CORP)
        .bind(id)
        .bind(format!("msg-{id}"))
        .bind(path)
        .bind(at)
        .execute(pool)
        .await
        .map(|_| ()))
        .unwrap();
    }
    let settings = scrm::platform::config::RetentionSettings {
        inbox_days: 90,
        media_days: 30,
        check_interval_secs: 3600,
    };
    let pruned = scrm::app::retention::run_once(&db, &settings, now)
        .await
        .unwrap();
    assert_eq!((pruned.inbox, pruned.media), (2500, 2));
    let left: Vec<String> = scrm::on_db!(&db, |pool| sqlx::query_scalar(
        "SELECT dedup_key FROM inbox ORDER BY dedup_key"
    )
    .fetch_all(pool)
    .await)
    .unwrap();
    assert_eq!(left, ["new-done", "old-dead", "old-pending"]);
    let media: Vec<(String, String, Option<String>)> = scrm::on_db!(&db, |pool| sqlx::query_as(
        "SELECT sdkfileid, state, path FROM archive_media ORDER BY sdkfileid"
    )
    .fetch_all(pool)
    .await)
    .unwrap();
    assert_eq!(media[0], ("f1".to_owned(), "expired".to_owned(), None));
    assert_eq!(media[1], ("f2".to_owned(), "expired".to_owned(), None));
    assert_eq!(media[2].1, "done");
    assert!(
        !std::path::Path::new(&alone).exists(),
        "the old file is deleted"
    );
    assert!(
        std::path::Path::new(&shared).exists(),
        "a file a newer row shares stays"
    );
    assert!(std::path::Path::new(&fresh).exists());
    // Again: nothing more.
    let again = scrm::app::retention::run_once(&db, &settings, now)
        .await
        .unwrap();
    assert_eq!((again.inbox, again.media), (0, 0));
    // 0 keeps forever.
    let keep = scrm::platform::config::RetentionSettings {
        inbox_days: 0,
        media_days: 0,
        ..settings
    };
    let none = scrm::app::retention::run_once(&db, &keep, now + 1000 * day)
        .await
        .unwrap();
    assert_eq!((none.inbox, none.media), (0, 0));
    db.close().await;
    test_db.drop_database().await;
}

/// Callbacks must outlive the retroactive scan's days; a bad interval is refused by name.
#[test]
fn retention_settings_are_checked() {
    let load = |extra: &str| {
        scrm::platform::config::Config::from_toml(extra, &std::collections::HashMap::new())
            .map(|c| c.retention)
            .map_err(|e| e.to_string())
    };
    assert_eq!(load("").unwrap().inbox_days, 90);
    let short = load("[retention]\ninbox_days = 5\n").unwrap_err();
    assert!(short.contains("retention.inbox_days"), "{short}");
    assert_eq!(load("[retention]\ninbox_days = 0\n").unwrap().inbox_days, 0);
    let fast = load("[retention]\ncheck_interval_secs = 1\n").unwrap_err();
    assert!(fast.contains("retention.check_interval_secs"), "{fast}");
}
