//! The server wired to the WeCom emulator: WeCom's side of callbacks goes to our callback URLs,
//! our API client goes to the emulator. Included by the test binaries that need it with
//! `#[path = "common/emulated.rs"] mod emulated;` next to `mod common;`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use scrm::platform::config::Config;
use scrm::platform::db::Db;
use tokio::sync::oneshot;
use wecom_sdk::testkit::{
    CallbackKind, CallbackTarget, Emulator, EmulatorConfig, EmulatorHandle, EmulatorState,
};

use crate::common::{ARCHIVE_KEY, ARCHIVE_TOKEN, Backend, CORP, KEY, TOKEN, TestDb};

/// The contacts app's secret in the emulator and in our config.
pub const SECRET: &str = "contacts-secret-0123456789abcdef";
/// Agent id of the contacts app.
pub const AGENT_ID: i64 = 1000002;

/// Options of one emulated deployment.
#[derive(Debug, Clone)]
pub struct Options {
    pub emulator: EmulatorConfig,
    /// Extra TOML appended to the server config.
    pub extra_config: String,
    /// Extra keys of the test corp's `[[corps]]` table (e.g. `alert_recipients = […]`).
    pub corp_config: String,
    /// `SCRM_REDIS_URL` for the server, if any.
    pub redis_url: Option<String>,
    /// Runs on the emulator before the server starts (set-up the server reads at once).
    pub before_server: Option<fn(&EmulatorState)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            emulator: quick_emulator(),
            extra_config: String::new(),
            corp_config: String::new(),
            redis_url: None,
            before_server: None,
        }
    }
}

/// Emulator settings for tests: WeCom's behaviour with short callback timeouts.
pub fn quick_emulator() -> EmulatorConfig {
    EmulatorConfig {
        callback_timeout: Duration::from_secs(2),
        callback_retry_interval: Duration::from_millis(100),
        ..EmulatorConfig::default()
    }
}

/// The emulator for several instances of ours sharing one token: tokens live an hour, the test
/// corp's contacts app is there. Also installs rustls' provider, which the instances need.
pub async fn shared_token_emulator() -> (EmulatorHandle, std::sync::Arc<EmulatorState>) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let emulator = Emulator::start(EmulatorConfig {
        token_ttl: Duration::from_secs(3600),
        ..quick_emulator()
    })
    .await
    .expect("emulator");
    let wecom = emulator.state();
    wecom.add_app(CORP, SECRET, Some(AGENT_ID));
    (emulator, wecom)
}

/// The follow-up reminders of a customer (100 at most).
pub async fn reminders_of(
    db: &Db,
    external_user_id: &str,
) -> Vec<scrm::domain::followup::Reminder> {
    scrm::domain::followup::list_reminders(
        db,
        CORP,
        &scrm::domain::followup::ReminderFilter {
            external_user_id: Some(external_user_id.to_owned()),
            limit: 100,
            ..Default::default()
        },
    )
    .await
    .expect("list reminders")
}

pub fn server_config(db_url: &str, api_base: &str, extra: &str, redis: Option<&str>) -> String {
    server_config_with(db_url, api_base, extra, "", redis)
}

/// [`server_config`] with extra keys in the corp's table.
pub fn server_config_with(
    db_url: &str,
    api_base: &str,
    extra: &str,
    corp: &str,
    redis: Option<&str>,
) -> String {
    let redis = redis
        .map(|r| format!("redis_url = \"{r}\"\n"))
        .unwrap_or_default();
    format!(
        r#"
listen = "127.0.0.1:0"
database_url = "{db_url}"
{redis}
[callback]
timestamp_window_secs = 0
[wecom]
api_base_url = "{api_base}"
timeout_ms = 3000
[worker]
concurrency = 4
max_attempts = 4
lease_secs = 5
[sync]
enabled = false
[metrics]
refresh_secs = 1
{extra}
[[corps]]
corp_id = "{CORP}"
api_app = "contacts"
{corp}
[[corps.apps]]
name = "contacts"
token = "{TOKEN}"
encoding_aes_key = "{KEY}"
secret = "{SECRET}"
agent_id = {AGENT_ID}
[[corps.apps]]
name = "directory"
token = "{ARCHIVE_TOKEN}"
encoding_aes_key = "{ARCHIVE_KEY}"
"#
    )
}

/// One server instance (its own port) on a database.
pub struct Instance {
    pub base_url: String,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Instance {
    /// Starts a server; `@BASE_URL@` in the config is its own address (known once bound).
    pub async fn start(config_text: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let config_text = config_text.replace("@BASE_URL@", &format!("http://{addr}"));
        let config = Config::from_toml(&config_text, &HashMap::new()).expect("test config");
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(scrm::serve(config, listener, async {
            let _ = rx.await;
        }));
        let base_url = format!("http://{addr}");
        let client = reqwest::Client::new();
        let mut up = false;
        for _ in 0..400 {
            if client
                .get(format!("{base_url}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(up, "server at {base_url} did not become ready");
        Self {
            base_url,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    pub fn callback_url(&self, app: &str) -> String {
        format!("{}/wecom/callback/{CORP}/{app}", self.base_url)
    }

    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server result");
        }
    }
}

/// The emulator, one server instance pointed at it, and a handle on the database.
pub struct EmulatedApp {
    pub emulator: EmulatorHandle,
    pub server: Instance,
    pub db: Db,
    pub test_db: TestDb,
    pub config_text: String,
}

impl EmulatedApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, Options::default()).await
    }

    pub async fn spawn_with(backend: Backend, options: Options) -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let emulator = Emulator::start(options.emulator.clone())
            .await
            .expect("start emulator");
        emulator.state().add_app(CORP, SECRET, Some(AGENT_ID));
        if let Some(set_up) = options.before_server {
            set_up(&emulator.state());
        }
        let test_db = TestDb::create(backend).await;
        // `{EMULATOR_ADDR}` in the extra config: where the emulator listens.
        let addr = emulator.addr().to_string();
        let config_text = server_config_with(
            &test_db.url,
            &emulator.base_url(),
            &options.extra_config.replace("{EMULATOR_ADDR}", &addr),
            &options.corp_config.replace("{EMULATOR_ADDR}", &addr),
            options.redis_url.as_deref(),
        );
        let server = Instance::start(&config_text).await;
        point_callbacks(&emulator.state(), &server);
        let db = test_db.connect().await;
        Self {
            emulator,
            server,
            db,
            test_db,
            config_text,
        }
    }

    pub fn wecom(&self) -> std::sync::Arc<EmulatorState> {
        self.emulator.state()
    }

    /// Waits until WeCom has delivered every callback and our workers have processed every
    /// stored event (done or dead).
    pub async fn settle(&self) {
        self.emulator.flush_callbacks().await;
        wait_idle(&self.db).await;
    }

    pub async fn stop(mut self) {
        self.server.stop().await;
        self.db.close().await;
        self.test_db.drop_database().await;
    }
}

/// Sends the emulator's callbacks for our corp to `server`.
pub fn point_callbacks(state: &EmulatorState, server: &Instance) {
    state.set_callback_target(
        CORP,
        CallbackKind::Contacts,
        CallbackTarget {
            url: server.callback_url("contacts"),
            token: TOKEN.to_owned(),
            encoding_aes_key: KEY.to_owned(),
        },
    );
    state.set_callback_target(
        CORP,
        CallbackKind::Directory,
        CallbackTarget {
            url: server.callback_url("directory"),
            token: ARCHIVE_TOKEN.to_owned(),
            encoding_aes_key: ARCHIVE_KEY.to_owned(),
        },
    );
}

/// A Redis database of its own (`db_index`, one per test that needs Redis), emptied first. Redis
/// is required: a missing server fails the test, naming the address.
pub async fn fresh_redis(db_index: u8) -> String {
    let base =
        std::env::var("SCRM_TEST_REDIS_HOST").unwrap_or_else(|_| "127.0.0.1:6379".to_owned());
    let url = format!("redis://{base}/{db_index}");
    let client = redis::Client::open(url.as_str()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| {
            panic!("Redis is required for this test and is not reachable at {url}: {e}")
        });
    redis::cmd("FLUSHDB")
        .query_async::<()>(&mut conn)
        .await
        .expect("FLUSHDB");
    url
}

/// Polls until no inbox row is pending or leased (20 s at most).
pub async fn wait_idle(db: &Db) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = scrm::pipeline::worker::stats(db, None)
            .await
            .expect("stats");
        if stats.pending == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "inbox not drained in 20 s: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `check` until it returns true (20 s at most).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A JSON client of `/api/v1` with one API key.
#[derive(Clone)]
pub struct Api {
    pub base_url: String,
    pub key: String,
    client: reqwest::Client,
}

impl Api {
    pub fn new(base_url: &str, key: &str) -> Self {
        Self {
            base_url: base_url.to_owned(),
            key: key.to_owned(),
            client: reqwest::Client::new(),
        }
    }

    /// `method path` (`/api/v1/…`) with an optional JSON body: status and JSON answer (`null`
    /// when the body is not JSON).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base_url))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("API request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("API body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        self.call(reqwest::Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
    pub async fn put(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }
    pub async fn patch(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.call(reqwest::Method::PATCH, path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> (u16, serde_json::Value) {
        self.call(reqwest::Method::DELETE, path, None).await
    }
}

impl EmulatedApp {
    /// An API client with a new key of `role` (`admin`, `compliance`, `sales`) acting as `staff`.
    pub async fn api(&self, role: &str, staff: Option<&str>) -> Api {
        let role = scrm::auth::Role::parse(role).expect("role");
        let staff = staff.map(crate::common::user);
        let (_, key) = scrm::auth::create_key(
            &self.db,
            &crate::common::corp(CORP),
            role,
            staff.as_ref(),
            "test",
            scrm::platform::db::now_ms(),
        )
        .await
        .expect("create API key");
        Api::new(&self.server.base_url, &key)
    }
}

/// Polls until no outbox item is pending (20 s at most).
pub async fn wait_outbox_idle(db: &Db) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = scrm::pipeline::outbox::stats(db, None, scrm::platform::db::now_ms())
            .await
            .expect("outbox stats");
        if stats.pending == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "outbox not drained in 20 s: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
