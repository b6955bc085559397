//! Shared test harness: a fresh database per test (temp SQLite file or a UUID-named PostgreSQL
//! database), the real router served on port 0 through `scrm::serve`, and WeCom's side of a
//! callback (signed, encrypted requests) from `wecom_sdk::sender`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use scrm::platform::config::Config;
use scrm::platform::db::Db;
use tokio::sync::oneshot;
use wecom_sdk::sender::{self, CallbackRequest};
use wecom_sdk::{CallbackCrypto, parse_header};

/// Official key set B (wecom-protocol §1.11): the test corp and its "contacts" app.
pub const CORP: &str = "ww1436e0e65a779aee";
pub const TOKEN: &str = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo";
pub const KEY: &str = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt";
/// A second configuration of the same corp with its own Token/key (set A's values).
pub const ARCHIVE_TOKEN: &str = "QDG6eK";
pub const ARCHIVE_KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";

/// PostgreSQL server used by the tests; it must be running (CI starts it).
pub fn pg_admin_url() -> String {
    std::env::var("SCRM_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// `sqlite` or `postgres` (file names, messages).
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// Emits one `#[tokio::test]` per backend for each named `async fn(Backend)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::common::Backend::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::common::Backend::Postgres).await;
            }
        }
    )*};
}

/// A fresh, empty database of the given backend. Keeps the temp folder alive.
pub struct TestDb {
    pub url: String,
    pub dir: tempfile::TempDir,
    pub pg_name: Option<String>,
    /// Set by [`TestDb::drop_database`]: nothing left for `Drop` to do.
    dropped: std::sync::atomic::AtomicBool,
}

impl TestDb {
    pub async fn create(backend: Backend) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        match backend {
            Backend::Sqlite => {
                let url = format!("sqlite://{}", dir.path().join("scrm.db").display());
                Self {
                    url,
                    dir,
                    pg_name: None,
                    dropped: false.into(),
                }
            }
            Backend::Postgres => {
                let admin = pg_admin_url();
                let name = format!("scrm_test_{}", uuid::Uuid::new_v4().simple());
                let db = Db::connect(&admin).await.unwrap_or_else(|e| {
                    panic!("PostgreSQL is required for the tests and is not reachable at {admin}: {e:?}")
                });
                let Db::Postgres(pool) = &db else {
                    unreachable!()
                };
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(pool)
                    .await
                    .expect("create test database");
                db.close().await;
                Self {
                    url: scrm::platform::db::with_database_name(&admin, &name),
                    dir,
                    pg_name: Some(name),
                    dropped: false.into(),
                }
            }
        }
    }

    pub async fn connect(&self) -> Db {
        let db = Db::connect(&self.url).await.expect("connect test database");
        db.migrate().await.expect("migrate");
        db
    }

    /// Drops the PostgreSQL database now (the SQLite file goes with the temp folder). A test that
    /// panics before this still loses its database: [`Drop`] drops it too.
    pub async fn drop_database(&self) {
        self.dropped
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(name) = &self.pg_name {
            let admin = Db::connect(&pg_admin_url())
                .await
                .expect("admin connection");
            if let Db::Postgres(pool) = &admin {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(pool)
                .await;
            }
            admin.close().await;
        }
    }
}

impl Drop for TestDb {
    /// Drops the PostgreSQL database of a test that ended early (a panic); after
    /// [`TestDb::drop_database`] this finds nothing to drop. Runs on a thread of its own: a drop
    /// cannot await, and the test's runtime may be shutting down.
    fn drop(&mut self) {
        if self.dropped.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let Some(name) = self.pg_name.take() else {
            return;
        };
        let admin = pg_admin_url();
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok(Db::Postgres(pool)) = Db::connect(&admin).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&pool)
                    .await;
                    pool.close().await;
                }
            });
        })
        .join();
    }
}

pub fn config_toml(db_url: &str, extra_callback: &str) -> String {
    // The database gauges of /metrics are refreshed every second (not 15) unless a test sets them.
    let metrics = if extra_callback.contains("[metrics]") {
        ""
    } else {
        "[metrics]\nrefresh_secs = 1\n"
    };
    format!(
        r#"
listen = "127.0.0.1:0"
database_url = "{db_url}"
{metrics}
[callback]
{extra_callback}
[[corps]]
corp_id = "{CORP}"
[[corps.apps]]
name = "contacts"
token = "{TOKEN}"
encoding_aes_key = "{KEY}"
[[corps.apps]]
name = "archive"
token = "{ARCHIVE_TOKEN}"
encoding_aes_key = "{ARCHIVE_KEY}"
agent_id = 2000004
"#
    )
}

pub struct TestApp {
    pub base_url: String,
    pub client: reqwest::Client,
    pub db: Db,
    pub test_db: TestDb,
    pub crypto: CallbackCrypto,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, "").await
    }

    /// `extra_callback`: lines for the `[callback]` table (e.g. `timestamp_window_secs = 0`).
    pub async fn spawn_with(backend: Backend, extra_callback: &str) -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let test_db = TestDb::create(backend).await;
        let config = Config::from_toml(&config_toml(&test_db.url, extra_callback), &HashMap::new())
            .expect("test config");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(scrm::serve(config, listener, async {
            let _ = rx.await;
        }));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client");
        let base_url = format!("http://{addr}");
        // serve() migrates before it accepts; wait until it answers.
        for _ in 0..200 {
            if client
                .get(format!("{base_url}/healthz"))
                .send()
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let db = test_db.connect().await;
        Self {
            base_url,
            client,
            db,
            test_db,
            crypto: CallbackCrypto::new(TOKEN, KEY, CORP).expect("crypto"),
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    pub fn callback_url(&self, app: &str) -> String {
        format!("{}/wecom/callback/{CORP}/{app}", self.base_url)
    }

    /// A signed POST of `plaintext` for the "contacts" app, with a fresh timestamp and nonce.
    pub fn event_request(&self, plaintext: &str) -> CallbackRequest {
        let now = chrono::Utc::now().timestamp().to_string();
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        sender::event(&self.crypto, plaintext, &now, &nonce, None)
    }

    pub async fn post(&self, app: &str, request: &CallbackRequest) -> reqwest::Response {
        self.client
            .post(format!("{}?{}", self.callback_url(app), request.query))
            .header("content-type", "text/xml")
            .body(request.body.clone().unwrap_or_default())
            .send()
            .await
            .expect("POST callback")
    }

    pub async fn post_callback(&self, request: &CallbackRequest) -> reqwest::Response {
        self.post("contacts", request).await
    }

    pub async fn post_raw(
        &self,
        app: &str,
        query: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.client
            .post(format!("{}?{query}", self.callback_url(app)))
            .body(body)
            .send()
            .await
            .expect("POST callback")
    }

    pub async fn get_callback(&self, app: &str, query: &str) -> reqwest::Response {
        self.client
            .get(format!("{}?{query}", self.callback_url(app)))
            .send()
            .await
            .expect("GET callback")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base_url))
            .send()
            .await
            .expect("GET")
    }

    pub async fn inbox_count(&self) -> i64 {
        scrm::pipeline::inbox::count(&self.db, None)
            .await
            .expect("count")
    }

    /// Stops the server gracefully (in-flight requests finish); the database stays.
    pub async fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server result");
        }
    }

    /// Stops the server and drops the test database.
    pub async fn stop(mut self) {
        self.shutdown().await;
        self.db.close().await;
        self.test_db.drop_database().await;
    }
}

/// A realistic `change_external_contact` event (≈ 600 bytes with Chinese text); `n` makes it unique.
pub fn add_contact_event(n: u64, create_time: i64) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
<CreateTime>{create_time}</CreateTime><MsgType><![CDATA[event]]></MsgType>\
<Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[add_external_contact]]></ChangeType>\
<UserID><![CDATA[zhangsan]]></UserID><ExternalUserID><![CDATA[wmQ2pCAAAA{n:022}]]></ExternalUserID>\
<State><![CDATA[展会二号展位-华东区-{n}]]></State><WelcomeCode><![CDATA[CALLBACK_CODE_{n:016x}]]></WelcomeCode></xml>"
    )
}

/// A `change_external_contact` callback of [`CORP`] as intake stores it.
pub fn contact_row(
    body: String,
    change_type: &str,
    create_time: i64,
    received_at_ms: i64,
) -> scrm::pipeline::inbox::NewInboxRow {
    scrm::pipeline::inbox::NewInboxRow {
        corp_id: CORP.to_owned(),
        app: "contacts".to_owned(),
        agent_id: None,
        dedup_key: dedup_key_of(&body),
        msg_type: "event".to_owned(),
        event: Some("change_external_contact".to_owned()),
        change_type: Some(change_type.to_owned()),
        create_time: Some(create_time),
        received_at_ms,
        body,
    }
}

/// The dedup key the server computes for a plaintext.
pub fn dedup_key_of(plaintext: &str) -> String {
    let header = parse_header(plaintext.as_bytes()).expect("test plaintext parses");
    scrm::pipeline::inbox::dedup_key(&header, plaintext.as_bytes())
}

/// A corp id known to be good (tests name ids as text; the server takes them typed).
pub fn corp(s: impl AsRef<str>) -> wecom_sdk::CorpId {
    wecom_sdk::CorpId::try_from(s.as_ref()).expect("a test corp id")
}

/// A staff userid known to be good.
pub fn user(s: impl AsRef<str>) -> wecom_sdk::UserId {
    wecom_sdk::UserId::try_from(s.as_ref()).expect("a test userid")
}

/// A customer id known to be good.
pub fn ext(s: impl AsRef<str>) -> wecom_sdk::ExternalUserId {
    wecom_sdk::ExternalUserId::try_from(s.as_ref()).expect("a test external_userid")
}

/// A chat id known to be good.
pub fn chat(s: impl AsRef<str>) -> wecom_sdk::ChatId {
    wecom_sdk::ChatId::try_from(s.as_ref()).expect("a test chat id")
}

/// A relation's ids, owned; [`Rel::key`] borrows them as the server's `RelationKey`.
pub struct Rel(
    wecom_sdk::CorpId,
    wecom_sdk::UserId,
    wecom_sdk::ExternalUserId,
);

impl Rel {
    /// The relation of `user` and `ext` in [`CORP`].
    pub fn new(user_id: impl AsRef<str>, ext_id: impl AsRef<str>) -> Self {
        Self::in_corp(CORP, user_id, ext_id)
    }

    /// The relation of `user` and `ext` in `corp`.
    pub fn in_corp(
        corp_id: impl AsRef<str>,
        user_id: impl AsRef<str>,
        ext_id: impl AsRef<str>,
    ) -> Self {
        Self(corp(corp_id), user(user_id), ext(ext_id))
    }

    /// The key.
    pub fn key(&self) -> scrm::domain::customers::RelationKey<'_> {
        scrm::domain::customers::RelationKey::new(&self.0, &self.1, &self.2)
    }
}

/// A customer named `name` followed by `user` (with `remark`), written straight to the store.
pub async fn seed_relation(db: &Db, ext: &str, name: &str, user: &str, remark: &str) {
    let now = scrm::platform::db::now_ms();
    seed_customer(db, ext, name, now).await;
    scrm::domain::customers::apply_relation(
        db,
        &corp(CORP),
        &scrm::domain::customers::RelationSnapshot {
            user_id: self::user(user),
            external_user_id: self::ext(ext),
            remark: remark.to_owned(),
            description: String::new(),
            remark_corp_name: String::new(),
            remark_mobiles: Vec::new(),
            tag_ids: Vec::new(),
            add_way: 1,
            state: None,
            oper_user_id: None,
            added_at_ms: Some(now),
        },
        now,
        None,
    )
    .await
    .expect("relation");
}

/// A customer of [`CORP`] named `name`, as WeCom's profile gives it, stored at `now`.
pub async fn seed_customer(db: &Db, ext: &str, name: &str, now: i64) {
    scrm::domain::customers::upsert_customer(
        db,
        CORP,
        &scrm::domain::customers::CustomerProfile {
            external_user_id: self::ext(ext),
            name: name.to_owned(),
            customer_type: 1,
            gender: 0,
            avatar: String::new(),
            corp_name: String::new(),
            corp_full_name: String::new(),
            position: String::new(),
            unionid: None,
        },
        now,
    )
    .await
    .expect("customer");
}

/// Scrapes `{base_url}/metrics` until `wanted` holds for the text (the database gauges are
/// refreshed in the background), 10 s at most; returns the last text.
pub async fn scrape_until(base_url: &str, wanted: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = reqwest::get(format!("{base_url}/metrics"))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text");
        if wanted(&text) || std::time::Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Waits until `/readyz` on `port` answers 200; false after ten seconds.
pub async fn wait_ready(port: u16) -> bool {
    let client = reqwest::Client::new();
    for _ in 0..400 {
        let answer = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await;
        if answer.is_ok_and(|r| r.status() == 200) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

/// What a `scrm` process printed.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the real `scrm` binary in `dir` with `args` (no config from the environment).
pub async fn scrm(dir: &std::path::Path, args: &[&str]) -> Output {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_scrm"))
        .args(args)
        .current_dir(dir)
        .env_remove("SCRM_CONFIG")
        .env_remove("SCRM_DATABASE_URL")
        .env("SCRM_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run scrm");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
