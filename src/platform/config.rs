//! Configuration: defaults, then `scrm.toml`, then `SCRM_…` environment variables, checked once at
//! start into typed values. A bad value stops start-up with the field and the reason; secrets never
//! print.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use wecom_sdk::{CallbackCrypto, CorpId, Secret};

use crate::platform::db::Db;

/// The config file read when `--config`/`SCRM_CONFIG` names none and it exists.
pub const DEFAULT_CONFIG_FILE: &str = "scrm.toml";

/// A configuration problem, naming the field and the reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The path tried.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has fields of the wrong type.
    #[error("config file {path}: {message}")]
    Parse {
        /// The path read.
        path: PathBuf,
        /// What the TOML parser said.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("{field}: {reason}")]
    Invalid {
        /// Which field (`corps[0].apps[1].encoding_aes_key`, `SCRM_LISTEN`, …).
        field: String,
        /// Why it is refused.
        reason: String,
    },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

/// The file as written (every field optional); see [`Config`] for the checked form.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    callback: RawCallback,
    redis_url: Option<String>,
    #[serde(default)]
    wecom: RawWecom,
    #[serde(default)]
    worker: RawWorker,
    #[serde(default)]
    sync: RawSync,
    #[serde(default)]
    outbox: RawWorker,
    #[serde(default)]
    reminders: RawReminders,
    #[serde(default)]
    alerts: RawAlerts,
    #[serde(default)]
    archive: RawArchive,
    #[serde(default)]
    transfers: RawTransfers,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    sidebar: SidebarSettings,
    #[serde(default)]
    console: ConsoleSettings,
    #[serde(default)]
    judge: JudgeSettings,
    #[serde(default)]
    retention: RetentionSettings,
    #[serde(default)]
    corps: Vec<RawCorp>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    header_read_timeout_ms: Option<u64>,
    body_timeout_ms: Option<u64>,
    max_connections: Option<usize>,
    api_in_flight: Option<usize>,
    callback_in_flight: Option<usize>,
    api_key_requests_per_minute: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<String>,
    token: Option<String>,
    refresh_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTransfers {
    poll_interval_secs: Option<u64>,
    tick_secs: Option<u64>,
    groups_per_owner_per_day: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArchive {
    library: Option<PathBuf>,
    worker_program: Option<PathBuf>,
    poll_interval_secs: Option<u64>,
    batch_limit: Option<u32>,
    call_timeout_secs: Option<u32>,
    memory_limit_mb: Option<u64>,
    restart_backoff_max_secs: Option<u64>,
    media: Option<bool>,
    media_dir: Option<PathBuf>,
    media_max_bytes: Option<u64>,
    stall_alert_secs: Option<u64>,
    proxy: Option<String>,
    proxy_password: Option<Secret<String>>,
    #[serde(default)]
    operators: Vec<String>,
    #[serde(default)]
    worker_env: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCorpArchive {
    secret: Secret<String>,
    #[serde(default)]
    keys: Vec<RawArchiveKey>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArchiveKey {
    version: u32,
    file: Option<PathBuf>,
    pem: Option<Secret<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReminders {
    after_add_days: Option<Vec<u32>>,
    check_interval_secs: Option<u64>,
    max_new_per_corp_per_hour: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlerts {
    console_url: Option<String>,
    burst_window_secs: Option<u64>,
    mass_deletion_count: Option<u32>,
    mass_deletion_window_secs: Option<u64>,
    notify_customer_loss: Option<bool>,
    notify_manager: Option<bool>,
    message_window_secs: Option<u64>,
    rules_file: Option<PathBuf>,
    rescan_days: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWecom {
    api_base_url: Option<String>,
    timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorker {
    concurrency: Option<usize>,
    max_attempts: Option<i32>,
    lease_secs: Option<u64>,
    backoff_max_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSync {
    enabled: Option<bool>,
    daily_at: Option<String>,
    check_interval_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<LogFormat>,
    level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCallback {
    max_body_bytes: Option<usize>,
    timestamp_window_secs: Option<u64>,
    max_batch: Option<usize>,
    store_timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCorp {
    corp_id: String,
    api_app: Option<String>,
    message_app: Option<String>,
    #[serde(default)]
    alert_recipients: Vec<String>,
    #[serde(default)]
    admin_recipients: Vec<String>,
    archive: Option<RawCorpArchive>,
    #[serde(default)]
    apps: Vec<RawApp>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    name: String,
    token: Secret<String>,
    encoding_aes_key: Secret<String>,
    secret: Option<Secret<String>>,
    agent_id: Option<i64>,
}

/// Callback intake settings.
#[derive(Debug, Clone)]
pub struct CallbackSettings {
    /// Bodies above this are refused with 413 before being read in full.
    pub max_body_bytes: usize,
    /// Requests whose `timestamp` is further than this from our clock are refused; 0 turns it off.
    pub timestamp_window_secs: u64,
    /// Most rows committed together by the inbox writer.
    pub max_batch: usize,
    /// Longest wait for the durable write before answering 503 (WeCom gives up after 5 s and
    /// retries; a write that lands late is then recognised as a duplicate).
    pub store_timeout_ms: u64,
}

impl Default for CallbackSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            timestamp_window_secs: 600,
            max_batch: 512,
            store_timeout_ms: 4000,
        }
    }
}

/// One WeCom callback configuration (客户联系, 通讯录, 会话存档 or a self-built app), with its own
/// Token and EncodingAESKey.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// The `{app}` in `/wecom/callback/{corp_id}/{app}`.
    pub name: String,
    /// Checked crypto built from Token, EncodingAESKey and the corp id.
    pub crypto: CallbackCrypto,
    /// The app secret for API calls (used from the API client on).
    pub secret: Option<Secret<String>>,
    /// The app's agent id, when it has one.
    pub agent_id: Option<i64>,
    /// Its Token or EncodingAESKey is one of the published samples (the official test vectors,
    /// the emulator's configuration): anyone can sign callbacks for it.
    pub published_sample: bool,
}

/// The Tokens and EncodingAESKeys published in WeCom's documents and in this repository's
/// emulator configuration.
const PUBLISHED_TOKENS: [&str; 2] = ["QDG6eK", "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo"];
const PUBLISHED_KEYS: [&str; 2] = [
    "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C",
    "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt",
];

fn is_published_sample(token: &str, key: &str) -> bool {
    PUBLISHED_TOKENS.contains(&token) || PUBLISHED_KEYS.contains(&key)
}

/// A corp and its callback configurations.
#[derive(Debug, Clone)]
pub struct CorpConfig {
    /// The corp id.
    pub corp_id: CorpId,
    /// Its callback configurations.
    pub apps: Vec<AppConfig>,
    /// The app whose secret calls the customer-contact and directory APIs (`api_app`); when
    /// unset, the first app with a secret.
    pub api_app: Option<String>,
    /// The app that sends app messages (reminders, alerts): needs a secret and an `agent_id`; when
    /// unset, the first app with both.
    pub message_app: Option<String>,
    /// Compliance staff (userids) who receive every alert of this corp.
    pub alert_recipients: Vec<String>,
    /// Admins (userids) told by app message when a member leaves with customers to reassign.
    pub admin_recipients: Vec<String>,
    /// Chat archive (会话内容存档), when the corp uses it.
    pub archive: Option<CorpArchive>,
}

/// A corp's chat-archive credentials: the 会话内容存档 secret and every private key it ever
/// uploaded, by `publickey_ver`.
#[derive(Debug, Clone)]
pub struct CorpArchive {
    /// The 会话内容存档 Secret (for `Init`).
    pub secret: Secret<String>,
    /// PEM private keys by version, checked at load.
    pub keys: Vec<(u32, Secret<String>)>,
}

/// Chat archive settings (`[archive]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSettings {
    /// WeCom's library (`libWeWorkFinanceSdk_C.so`, or the stand-in); the archive is off without it.
    pub library: Option<PathBuf>,
    /// The program run as `PROGRAM archive-worker`: this executable unless set.
    pub worker_program: Option<PathBuf>,
    /// A pull runs this often even without `msgaudit_notify`.
    pub poll_interval_secs: u64,
    /// Records asked for per `GetChatData` call (at most 1000).
    pub batch_limit: u32,
    /// The `timeout` given to the library per call, seconds; a call not answered within this plus
    /// 5 s counts as a hang and the worker is restarted.
    pub call_timeout_secs: u32,
    /// The worker is restarted (between calls) when its resident memory passes this.
    pub memory_limit_mb: u64,
    /// Longest wait between two worker restarts (the backoff doubles from 1 s up to this).
    pub restart_backoff_max_secs: u64,
    /// Whether media (images, voice, video, files) is downloaded.
    pub media: bool,
    /// Where media files go (`{data_dir}/archive-media` unless set).
    pub media_dir: Option<PathBuf>,
    /// Media larger than this is recorded, not downloaded.
    pub media_max_bytes: u64,
    /// Operators get an alert when no pull succeeded for this long (WeCom keeps messages ~5 days).
    pub stall_alert_secs: u64,
    /// Proxy for the library (`socks5://…` or `http://…`), empty for none.
    pub proxy: String,
    /// `user:password` for the proxy.
    pub proxy_password: Option<Secret<String>>,
    /// Environment of the worker process (e.g. `LD_LIBRARY_PATH` for the OpenSSL the library
    /// ships with), added to the server's own.
    pub worker_env: std::collections::BTreeMap<String, String>,
    /// Operators (userids) alerted when the archive stalls, besides each corp's
    /// `alert_recipients`.
    pub operators: Vec<String>,
}

impl Default for ArchiveSettings {
    fn default() -> Self {
        Self {
            library: None,
            worker_program: None,
            poll_interval_secs: 60,
            batch_limit: 1000,
            call_timeout_secs: 30,
            memory_limit_mb: 1024,
            restart_backoff_max_secs: 60,
            media: true,
            media_dir: None,
            media_max_bytes: 200 * 1024 * 1024,
            stall_alert_secs: 7200,
            proxy: String::new(),
            proxy_password: None,
            worker_env: std::collections::BTreeMap::new(),
            operators: Vec::new(),
        }
    }
}

impl CorpConfig {
    /// The app to send app messages with (see [`CorpConfig::message_app`]).
    pub fn message_credentials(&self) -> Option<&AppConfig> {
        let usable = |a: &&AppConfig| a.secret.is_some() && a.agent_id.is_some();
        self.message_app
            .as_deref()
            .and_then(|name| self.apps.iter().filter(usable).find(|a| a.name == name))
            .or_else(|| self.apps.iter().find(usable))
    }

    /// The app to call WeCom's APIs with: `preferred` (e.g. the app a callback came through) if
    /// it has a secret, else `api_app`, else the first app with a secret.
    pub fn api_credentials(&self, preferred: Option<&str>) -> Option<&AppConfig> {
        let with_secret = |name: &str| {
            self.apps
                .iter()
                .find(|a| a.name == name && a.secret.is_some())
        };
        preferred
            .and_then(with_secret)
            .or_else(|| self.api_app.as_deref().and_then(with_secret))
            .or_else(|| self.apps.iter().find(|a| a.secret.is_some()))
    }
}

/// The WeCom API client's settings.
#[derive(Debug, Clone)]
pub struct WecomSettings {
    /// Base URL of the API (`https://qyapi.weixin.qq.com/cgi-bin/`; the emulator's in tests).
    pub api_base_url: String,
    /// Timeout of one API call.
    pub timeout_ms: u64,
}

/// Inbox worker settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Events processed at once by this instance.
    pub concurrency: usize,
    /// Attempts before an event becomes a dead letter.
    pub max_attempts: i32,
    /// How long a claim lasts before another worker may take the event over.
    pub lease_secs: u64,
    /// Longest wait between two attempts (the backoff doubles from 1 s up to this).
    pub backoff_max_secs: u64,
}

/// Compliance alerts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertSettings {
    /// Where the console is reached; an alert's text card links to `{console_url}/console/alerts/{id}`.
    pub console_url: String,
    /// New evidence of the same staff member and trigger joins an open alert this long after its
    /// last evidence, instead of raising another.
    pub burst_window_secs: u64,
    /// More deletions than this by one staff member within `mass_deletion_window_secs` make one
    /// mass-deletion alert.
    pub mass_deletion_count: u32,
    /// See `mass_deletion_count`.
    pub mass_deletion_window_secs: u64,
    /// Tell the staff member when a customer deletes them (流失提醒).
    pub notify_customer_loss: bool,
    /// Also alert the staff member's manager (direct leader, else the leaders of their main
    /// department).
    pub notify_manager: bool,
    /// A sender's previous message counts for a phrase split over two messages when at most this
    /// old.
    pub message_window_secs: u64,
    /// The content rule library (TOML, the format of `fixtures/rules/default.toml`); the bundled
    /// default library when unset.
    pub rules_file: Option<PathBuf>,
    /// When the rule library changed since the last start, messages of this many days are scanned
    /// again (0: never automatically).
    pub rescan_days: u32,
}

impl Default for AlertSettings {
    fn default() -> Self {
        Self {
            console_url: "http://127.0.0.1:8080".to_owned(),
            burst_window_secs: 3600,
            mass_deletion_count: 5,
            mass_deletion_window_secs: 3600,
            notify_customer_loss: true,
            notify_manager: true,
            message_window_secs: 600,
            rules_file: None,
            rescan_days: 7,
        }
    }
}

/// Follow-up reminders.
#[derive(Debug, Clone)]
pub struct ReminderSettings {
    /// Reminders created for the staff member when a customer is added, days after the add.
    pub after_add_days: Vec<u32>,
    /// How often due reminders are looked for.
    pub check_interval_secs: u64,
    /// Reminders the API may create per corp and hour (each becomes an app message when due): a
    /// key looping on the endpoint cannot flood the corp's staff or its WeCom quota.
    pub max_new_per_corp_per_hour: u64,
}

impl Default for ReminderSettings {
    /// 3 and 7 days after the add, looked for every 30 s, 2,000 new ones per corp and hour.
    fn default() -> Self {
        Self {
            after_add_days: vec![3, 7],
            check_interval_secs: 30,
            max_new_per_corp_per_hour: 2000,
        }
    }
}

/// Limits of the HTTP server (`src/http/server.rs`) against slow and greedy clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// A request's head must arrive within this; an idle keep-alive connection is closed after it
    /// too (hyper starts the timer when it waits for the next head).
    pub header_read_timeout_ms: u64,
    /// A request's body must arrive within this (callbacks and API bodies): 408 otherwise.
    pub body_timeout_ms: u64,
    /// Open connections at most; further ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// API, metrics and health requests handled at once; more are answered 503 at once.
    pub api_in_flight: usize,
    /// WeCom callbacks handled at once: a pool of their own, which API traffic cannot take.
    pub callback_in_flight: usize,
    /// Requests one API key may make per minute (counted in 10-second windows, shared by every
    /// instance through the coordinator); more are answered 429 with `Retry-After`.
    pub api_key_requests_per_minute: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            header_read_timeout_ms: 10_000,
            body_timeout_ms: 10_000,
            max_connections: 10_000,
            api_in_flight: 256,
            callback_in_flight: 1024,
            api_key_requests_per_minute: 1200,
        }
    }
}

/// `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSettings {
    /// Serve `/metrics` on this address only (not on the main listener).
    pub listen: Option<SocketAddr>,
    /// Require `Authorization: Bearer <token>`.
    pub token: Option<Secret<String>>,
    /// How often the database gauges (inbox, outbox backlogs) are refreshed in the background; a
    /// scrape never queries the database.
    pub refresh_secs: u64,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            listen: None,
            token: None,
            refresh_secs: 15,
        }
    }
}

/// The reassignment engine (`src/transfers`).
#[derive(Debug, Clone)]
pub struct TransferSettings {
    /// How often customers waiting on WeCom's 24 h acceptance window are polled
    /// (`transfer_result`).
    pub poll_interval_secs: u64,
    /// How often the engine looks for work besides being woken (new jobs, due chats, polls).
    pub tick_secs: u64,
    /// Group chats of one old owner handed over per day (China Standard Time); WeCom allows 300.
    pub groups_per_owner_per_day: u32,
}

impl Default for TransferSettings {
    /// Poll every 10 minutes, tick every 2 s, 300 chats a day.
    fn default() -> Self {
        Self {
            poll_interval_secs: 600,
            tick_secs: 2,
            groups_per_owner_per_day: 300,
        }
    }
}

/// The console's sign-in through WeCom (`[console]`): members scan a QR code with the WeCom app
/// on WeCom's login page (§6.6), which sends them back to `{alerts.console_url}/console/login/wecom/return`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleSettings {
    /// WeCom's QR login page: the newer `…/wwlogin/sso/login` (the default), or the older
    /// `…/wwopen/sso/qrConnect`, which takes no `login_type`.
    pub sso_login_url: String,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        Self {
            sso_login_url: "https://login.work.weixin.qq.com/wwlogin/sso/login".to_owned(),
        }
    }
}

impl ConsoleSettings {
    /// The URL is http(s) without query or fragment.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = &self.sso_login_url;
        if !(url.starts_with("https://") || url.starts_with("http://"))
            || url.contains('#')
            || url.contains('?')
        {
            return Err(invalid(
                "console.sso_login_url",
                "must be an http(s) URL without query or #fragment",
            ));
        }
        Ok(())
    }

    /// Whether the page is the older `qrConnect` (no `login_type`).
    pub fn legacy_qr_connect(&self) -> bool {
        self.sso_login_url.contains("/qrConnect")
    }
}

/// The salesperson's sidebar (`/sidebar`, WeCom's chat toolbar). Deserialized as it is written
/// (each key has its default here) and checked by [`SidebarSettings::validate`]: the pattern a
/// section follows when it has nothing to derive.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SidebarSettings {
    /// Our address as the WeCom client reaches it (`https://scrm.example.com`): OAuth's
    /// `redirect_uri` and the pages the JS-SDK signs are under it. Its host must be the app's
    /// 可信域名. Unset: the sidebar answers 503 with a setup hint.
    pub public_url: Option<String>,
    /// WeCom's OAuth authorize page.
    pub oauth_authorize_url: String,
    /// WeCom's JS-SDK script (`jweixin`), loaded by the sidebar page.
    pub jssdk_script_url: String,
    /// A session ends after this long without a request.
    pub session_idle_secs: u64,
    /// A session ends this long after sign-in, however busy.
    pub session_max_secs: u64,
}

impl Default for SidebarSettings {
    /// WeCom's own addresses; 8 hours idle, 7 days at most.
    fn default() -> Self {
        Self {
            public_url: None,
            oauth_authorize_url: "https://open.weixin.qq.com/connect/oauth2/authorize".to_owned(),
            jssdk_script_url: "https://res.wx.qq.com/open/js/jweixin-1.2.0.js".to_owned(),
            session_idle_secs: 8 * 3600,
            session_max_secs: 7 * 24 * 3600,
        }
    }
}

impl SidebarSettings {
    /// Every URL is http(s) without a fragment; the expiries are positive and idle ≤ absolute.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let urls = [
            ("sidebar.public_url", self.public_url.as_deref()),
            (
                "sidebar.oauth_authorize_url",
                Some(self.oauth_authorize_url.as_str()),
            ),
            (
                "sidebar.jssdk_script_url",
                Some(self.jssdk_script_url.as_str()),
            ),
        ];
        for (field, url) in urls {
            let Some(url) = url else { continue };
            if !(url.starts_with("https://") || url.starts_with("http://")) || url.contains('#') {
                return Err(invalid(field, "must be an http(s) URL without #fragment"));
            }
        }
        if self.session_idle_secs == 0 || self.session_max_secs == 0 {
            return Err(invalid("sidebar.session_idle_secs", "must be positive"));
        }
        if self.session_idle_secs > self.session_max_secs {
            return Err(invalid(
                "sidebar.session_idle_secs",
                "must not exceed session_max_secs",
            ));
        }
        Ok(())
    }

    /// `public_url` without a trailing slash.
    pub fn base(&self) -> Option<&str> {
        self.public_url.as_deref().map(|u| u.trim_end_matches('/'))
    }
}

/// An external judge (`[judge]`, off by default): an HTTP endpoint — a self-hosted language model
/// behind a small adapter — asked about the messages the content model finds borderline (its score
/// in `[low, high)`, no rule fired). Its answer replaces the model's there; a timeout, an error or
/// a spent budget leaves the embedded detector's decision, which always works alone.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JudgeSettings {
    /// `POST` endpoint; unset: no judge.
    pub url: Option<String>,
    /// Sent as `Authorization: Bearer …` when set.
    pub token: Option<Secret<String>>,
    /// A question's whole time (connect, send, answer).
    pub timeout_ms: u64,
    /// Questions per minute at most (per instance); past it the detector decides alone.
    pub max_per_minute: u32,
    /// The model's scores from here…
    pub low: f32,
    /// …up to here (not included) are borderline.
    pub high: f32,
}

impl Default for JudgeSettings {
    /// Off; 1.5 s, 60 questions a minute, scores 0.35–0.9.
    fn default() -> Self {
        Self {
            url: None,
            token: None,
            timeout_ms: 1500,
            max_per_minute: 60,
            low: 0.35,
            high: 0.9,
        }
    }
}

impl JudgeSettings {
    /// The URL is http(s); the timeout and budget are positive; `0 ≤ low < high ≤ 1`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(invalid("judge.url", "must be an http(s) URL"));
        }
        if self.timeout_ms == 0 || self.timeout_ms > 60_000 {
            return Err(invalid("judge.timeout_ms", "must be between 1 and 60000"));
        }
        if self.max_per_minute == 0 {
            return Err(invalid("judge.max_per_minute", "must be positive"));
        }
        if !((0.0..1.0).contains(&self.low) && self.low < self.high && self.high <= 1.0) {
            return Err(invalid("judge.low", "need 0 ≤ low < high ≤ 1"));
        }
        Ok(())
    }
}

/// What is deleted when old (`[retention]`): processed callbacks (the inbox rows handled without
/// error; dead letters stay until replayed) and downloaded chat-archive media files (the message
/// and its text stay; the media row says `expired`). 0 keeps forever.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSettings {
    /// Processed inbox rows older than this many days are deleted (WeCom retries a callback for
    /// minutes, so the dedup they give is long past).
    pub inbox_days: u32,
    /// Downloaded archive media files older than this many days are deleted.
    pub media_days: u32,
    /// How often the cleanup runs.
    pub check_interval_secs: u64,
}

impl Default for RetentionSettings {
    /// Callbacks 90 days, media forever, hourly.
    fn default() -> Self {
        Self {
            inbox_days: 90,
            media_days: 0,
            check_interval_secs: 3600,
        }
    }
}

impl RetentionSettings {
    /// Kept callbacks cover the retroactive scan's `rescan_days`; the interval is at least a
    /// minute.
    pub fn validate(&self, rescan_days: u32) -> Result<(), ConfigError> {
        if self.inbox_days != 0 && self.inbox_days <= rescan_days {
            return Err(invalid(
                "retention.inbox_days",
                "must be 0 (keep) or more than alerts.rescan_days (the retroactive scan reads them)",
            ));
        }
        if self.check_interval_secs < 60 {
            return Err(invalid(
                "retention.check_interval_secs",
                "must be at least 60",
            ));
        }
        Ok(())
    }

    /// The cut-off of `days` before `now_ms`, or `None` for 0 (keep).
    pub fn cutoff_ms(days: u32, now_ms: i64) -> Option<i64> {
        (days > 0).then(|| now_ms.saturating_sub(i64::from(days).saturating_mul(86_400_000)))
    }
}

/// The scheduled reconciliation.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    /// Whether `serve` runs it on its schedule.
    pub enabled: bool,
    /// Minutes after midnight China Standard Time (UTC+8) at which it runs each day.
    pub daily_at_minute: u32,
    /// How often the scheduler looks whether a sync is due (and resumes an interrupted one).
    pub check_interval_secs: u64,
}

/// The checked configuration. Its `Debug` hides the passwords of the database and Redis URLs.
#[derive(Clone)]
pub struct Config {
    /// Where `serve` listens.
    pub listen: SocketAddr,
    /// Folder for the embedded database and other local state.
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; `None` means the SQLite file in `data_dir`.
    pub database_url: Option<String>,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter (`info`, `scrm=debug,info`, …).
    pub log_level: String,
    /// Callback intake settings.
    pub callback: CallbackSettings,
    /// Configured corps.
    pub corps: Vec<CorpConfig>,
    /// The file this came from, if any.
    pub source: Option<PathBuf>,
    /// Redis for coordination between instances (`SCRM_REDIS_URL`); in-process when unset.
    pub redis_url: Option<String>,
    /// The WeCom API client.
    pub wecom: WecomSettings,
    /// Inbox workers.
    pub worker: WorkerConfig,
    /// Scheduled reconciliation.
    pub sync: SyncSettings,
    /// Outbox workers (deliveries to WeCom).
    pub outbox: WorkerConfig,
    /// Follow-up reminders.
    pub reminders: ReminderSettings,
    /// Compliance alerts.
    pub alerts: AlertSettings,
    /// Chat archive.
    pub archive: ArchiveSettings,
    /// Reassignment.
    pub transfers: TransferSettings,
    /// HTTP server limits.
    pub http: HttpSettings,
    /// `/metrics`.
    pub metrics: MetricsSettings,
    /// The salesperson's sidebar.
    pub sidebar: SidebarSettings,
    /// The optional external judge of borderline messages.
    pub judge: JudgeSettings,
    /// How long processed callbacks and archived media are kept.
    pub retention: RetentionSettings,
    /// The console's WeCom login.
    pub console: ConsoleSettings,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field(
                "database_url",
                &self.database_url.as_deref().map(redact_url),
            )
            .field("log_format", &self.log_format)
            .field("log_level", &self.log_level)
            .field("callback", &self.callback)
            .field("corps", &self.corps)
            .field("source", &self.source)
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("wecom", &self.wecom)
            .field("worker", &self.worker)
            .field("sync", &self.sync)
            .field("outbox", &self.outbox)
            .field("reminders", &self.reminders)
            .field("alerts", &self.alerts)
            .field("archive", &self.archive)
            .field("transfers", &self.transfers)
            .field("http", &self.http)
            .field("metrics", &self.metrics)
            .field("sidebar", &self.sidebar)
            .field("console", &self.console)
            .field("judge", &self.judge)
            .field("retention", &self.retention)
            .finish()
    }
}

/// A URL without its password (`postgres://scrm:***@db:5432/scrm`), for logs and errors: the one
/// place a URL is made fit to print.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}://{}:***@{}", &url[..scheme_end], user, &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

impl Config {
    /// Loads the configuration: `path` if given (it must exist), else `scrm.toml` if present, else
    /// defaults; then the `SCRM_…` variables of `env`.
    pub fn load(path: Option<&Path>, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let (table, source) = match path {
            Some(p) => (read_file(p)?, Some(p.to_path_buf())),
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => {
                let p = Path::new(DEFAULT_CONFIG_FILE);
                (read_file(p)?, Some(p.to_path_buf()))
            }
            None => (toml::Table::new(), None),
        };
        let shown = source
            .clone()
            .unwrap_or_else(|| PathBuf::from("<defaults>"));
        let raw = raw_with_env(table, env, &shown)?;
        Self::from_raw(raw, env, source)
    }

    /// Parses TOML text (for tests and tools) and applies `env`.
    pub fn from_toml(text: &str, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let table = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<inline>"),
            message: e.to_string(),
        })?;
        let raw = raw_with_env(table, env, Path::new("<inline>"))?;
        Self::from_raw(raw, env, None)
    }

    fn from_raw(
        raw: RawConfig,
        env: &HashMap<String, String>,
        source: Option<PathBuf>,
    ) -> Result<Self, ConfigError> {
        let var = |name: &str| env.get(name).filter(|v| !v.is_empty()).cloned();
        let listen_text = var("SCRM_LISTEN")
            .or(raw.listen)
            .unwrap_or_else(|| "0.0.0.0:8080".to_owned());
        let listen = listen_text.parse().map_err(|_| {
            invalid(
                "listen",
                format!("{listen_text:?} is not an address like 0.0.0.0:8080"),
            )
        })?;
        let data_dir = var("SCRM_DATA_DIR")
            .map(PathBuf::from)
            .or(raw.data_dir)
            .unwrap_or_else(|| PathBuf::from("data"));
        let database_url = var("SCRM_DATABASE_URL").or(raw.database_url);
        if let Some(url) = &database_url {
            let known = ["sqlite:", "postgres://", "postgresql://"];
            if !known.iter().any(|p| url.starts_with(p)) {
                return Err(invalid(
                    "database_url",
                    "must start with sqlite: or postgres://",
                ));
            }
        }
        let log_format = match var("SCRM_LOG_FORMAT") {
            Some(v) if v == "json" => LogFormat::Json,
            Some(v) if v == "pretty" => LogFormat::Pretty,
            Some(v) => {
                return Err(invalid(
                    "SCRM_LOG_FORMAT",
                    format!("{v:?} is neither pretty nor json"),
                ));
            }
            None => raw.log.format.unwrap_or_default(),
        };
        let log_level = var("SCRM_LOG_LEVEL")
            .or(raw.log.level)
            .unwrap_or_else(|| "info".to_owned());

        let defaults = CallbackSettings::default();
        let callback = CallbackSettings {
            max_body_bytes: env_number(env, "SCRM_CALLBACK_MAX_BODY_BYTES")?
                .or(raw.callback.max_body_bytes)
                .unwrap_or(defaults.max_body_bytes),
            timestamp_window_secs: env_number(env, "SCRM_CALLBACK_TIMESTAMP_WINDOW_SECS")?
                .or(raw.callback.timestamp_window_secs)
                .unwrap_or(defaults.timestamp_window_secs),
            max_batch: raw.callback.max_batch.unwrap_or(defaults.max_batch),
            store_timeout_ms: raw
                .callback
                .store_timeout_ms
                .unwrap_or(defaults.store_timeout_ms),
        };
        if callback.max_body_bytes < 1024 {
            return Err(invalid("callback.max_body_bytes", "must be at least 1024"));
        }
        if !(10..=4500).contains(&callback.store_timeout_ms) {
            return Err(invalid(
                "callback.store_timeout_ms",
                "must be between 10 and 4500 (WeCom waits 5 s)",
            ));
        }
        if !(1..=4096).contains(&callback.max_batch) {
            return Err(invalid("callback.max_batch", "must be between 1 and 4096"));
        }

        let redis_url = var("SCRM_REDIS_URL").or(raw.redis_url);
        if let Some(url) = &redis_url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return Err(invalid(
                "redis_url",
                "must start with redis:// or rediss://",
            ));
        }
        let api_base_url = var("SCRM_WECOM_API_BASE")
            .or(raw.wecom.api_base_url)
            .unwrap_or_else(|| "https://qyapi.weixin.qq.com/cgi-bin/".to_owned());
        if !(api_base_url.starts_with("https://") || api_base_url.starts_with("http://")) {
            return Err(invalid("wecom.api_base_url", "must be an http(s) URL"));
        }
        if api_base_url.starts_with("http://") && !is_loopback_url(&api_base_url) {
            return Err(invalid(
                "wecom.api_base_url",
                "plain http:// is allowed only for a local emulator (127.0.0.1, ::1, localhost): \
                 access tokens and secrets would cross the network unencrypted",
            ));
        }
        let wecom = WecomSettings {
            api_base_url: if api_base_url.ends_with('/') {
                api_base_url
            } else {
                format!("{api_base_url}/")
            },
            timeout_ms: raw.wecom.timeout_ms.unwrap_or(10_000),
        };
        let worker = WorkerConfig {
            concurrency: raw.worker.concurrency.unwrap_or(16),
            max_attempts: raw.worker.max_attempts.unwrap_or(10),
            lease_secs: raw.worker.lease_secs.unwrap_or(60),
            backoff_max_secs: raw.worker.backoff_max_secs.unwrap_or(600).max(1),
        };
        if !(1..=256).contains(&worker.concurrency) {
            return Err(invalid("worker.concurrency", "must be between 1 and 256"));
        }
        if !(1..=100).contains(&worker.max_attempts) {
            return Err(invalid("worker.max_attempts", "must be between 1 and 100"));
        }
        if worker.lease_secs < 5 {
            return Err(invalid("worker.lease_secs", "must be at least 5"));
        }
        let daily_at = raw.sync.daily_at.unwrap_or_else(|| "03:00".to_owned());
        let daily_at_minute = parse_clock(&daily_at).ok_or_else(|| {
            invalid(
                "sync.daily_at",
                format!("{daily_at:?} is not a time like 03:00 (China Standard Time)"),
            )
        })?;
        let sync = SyncSettings {
            enabled: raw.sync.enabled.unwrap_or(true),
            daily_at_minute,
            check_interval_secs: raw.sync.check_interval_secs.unwrap_or(60).max(1),
        };

        let outbox = WorkerConfig {
            concurrency: raw.outbox.concurrency.unwrap_or(8),
            max_attempts: raw.outbox.max_attempts.unwrap_or(15),
            lease_secs: raw.outbox.lease_secs.unwrap_or(60),
            backoff_max_secs: raw.outbox.backoff_max_secs.unwrap_or(300).max(1),
        };
        if !(1..=256).contains(&outbox.concurrency) {
            return Err(invalid("outbox.concurrency", "must be between 1 and 256"));
        }
        if !(1..=100).contains(&outbox.max_attempts) {
            return Err(invalid("outbox.max_attempts", "must be between 1 and 100"));
        }
        if outbox.lease_secs < 5 {
            return Err(invalid("outbox.lease_secs", "must be at least 5"));
        }
        let defaults = ReminderSettings::default();
        let reminders = ReminderSettings {
            after_add_days: raw
                .reminders
                .after_add_days
                .unwrap_or(defaults.after_add_days),
            check_interval_secs: raw
                .reminders
                .check_interval_secs
                .unwrap_or(defaults.check_interval_secs)
                .max(1),
            max_new_per_corp_per_hour: raw
                .reminders
                .max_new_per_corp_per_hour
                .unwrap_or(defaults.max_new_per_corp_per_hour)
                .max(1),
        };
        if reminders.after_add_days.iter().any(|&d| d == 0 || d > 365) {
            return Err(invalid(
                "reminders.after_add_days",
                "each must be between 1 and 365 days",
            ));
        }

        let td = TransferSettings::default();
        let transfers = TransferSettings {
            poll_interval_secs: raw
                .transfers
                .poll_interval_secs
                .unwrap_or(td.poll_interval_secs)
                .max(1),
            tick_secs: raw.transfers.tick_secs.unwrap_or(td.tick_secs).max(1),
            groups_per_owner_per_day: raw
                .transfers
                .groups_per_owner_per_day
                .unwrap_or(td.groups_per_owner_per_day),
        };
        if !(1..=300).contains(&transfers.groups_per_owner_per_day) {
            return Err(invalid(
                "transfers.groups_per_owner_per_day",
                "must be between 1 and 300 (WeCom's daily limit)",
            ));
        }
        let http = http_settings(raw.http)?;
        let metrics = metrics_settings(raw.metrics, env)?;
        let alerts = alert_settings(raw.alerts)?;
        let corps = check_corps(raw.corps)?;
        let archive = archive_settings(raw.archive, &corps)?;
        raw.sidebar.validate()?;
        raw.console.validate()?;
        raw.judge.validate()?;
        raw.retention.validate(alerts.rescan_days)?;
        Ok(Self {
            judge: raw.judge,
            retention: raw.retention,
            sidebar: raw.sidebar,
            console: raw.console,
            archive,
            transfers,
            http,
            metrics,
            outbox,
            reminders,
            alerts,
            listen,
            data_dir,
            database_url,
            log_format,
            log_level,
            callback,
            corps,
            source,
            redis_url,
            wecom,
            worker,
            sync,
        })
    }

    /// The database URL in force: the configured one or the SQLite file in `data_dir`.
    pub fn effective_database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| Db::default_sqlite_url(&self.data_dir))
    }

    /// The callback configurations by `(corp_id, app)`.
    pub fn endpoints(&self) -> HashMap<(String, String), Arc<AppEndpoint>> {
        self.corps
            .iter()
            .flat_map(|corp| {
                corp.apps.iter().map(move |app| {
                    let key = (corp.corp_id.to_string(), app.name.clone());
                    let endpoint = AppEndpoint {
                        corp_id: corp.corp_id.clone(),
                        app: app.name.clone(),
                        crypto: app.crypto.clone(),
                    };
                    (key, Arc::new(endpoint))
                })
            })
            .collect()
    }

    /// `corp/app` of every callback configuration that uses a published Token or EncodingAESKey.
    pub fn published_sample_apps(&self) -> Vec<String> {
        self.corps
            .iter()
            .flat_map(|c| {
                c.apps
                    .iter()
                    .filter(|a| a.published_sample)
                    .map(move |a| format!("{}/{}", c.corp_id, a.name))
            })
            .collect()
    }

    /// One app's configuration.
    pub fn app(&self, corp_id: &str, app: &str) -> Option<&AppConfig> {
        self.corps
            .iter()
            .find(|c| c.corp_id.as_str() == corp_id)
            .and_then(|c| c.apps.iter().find(|a| a.name == app))
    }
}

/// What the callback handler needs of one configuration.
#[derive(Debug)]
pub struct AppEndpoint {
    /// The corp.
    pub corp_id: CorpId,
    /// The configuration's name.
    pub app: String,
    /// Its crypto.
    pub crypto: CallbackCrypto,
}

/// `"HH:MM"` → minutes after midnight.
fn parse_clock(text: &str) -> Option<u32> {
    let (h, m) = text.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

fn read_file(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Lays `SCRM_<SECTION>__<KEY>=value` variables over the file (any key of any section; `__`
/// separates the levels, the rest is the key in upper case: `SCRM_HTTP__MAX_CONNECTIONS=2000`,
/// `SCRM_ARCHIVE__POLL_INTERVAL_SECS=30`, `SCRM___LISTEN` for a top-level key). The value is read
/// as a TOML value when it is one (`2000`, `true`, `["a", "b"]`, `"0123"` for a string of digits),
/// else taken as a string. The `[[corps]]` list is not reachable this way: it lives in the file.
/// Returns the names of the variables it applied.
fn overlay_env(
    table: &mut toml::Table,
    env: &HashMap<String, String>,
) -> Result<Vec<String>, ConfigError> {
    let mut applied = Vec::new();
    let mut names: Vec<&String> = env.keys().collect();
    names.sort();
    for name in names {
        let Some(path) = name.strip_prefix("SCRM_").filter(|p| p.contains("__")) else {
            continue;
        };
        let value = &env[name];
        if value.is_empty() {
            continue;
        }
        let segments: Vec<String> = path
            .split("__")
            .filter(|s| !s.is_empty())
            .map(str::to_ascii_lowercase)
            .collect();
        let Some((key, sections)) = segments.split_last() else {
            return Err(invalid(name, "names no key"));
        };
        let mut at = &mut *table;
        for section in sections {
            let entry = at
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            at = entry.as_table_mut().ok_or_else(|| {
                invalid(
                    name,
                    format!("[{section}] is not a section (a list lives in the file)"),
                )
            })?;
        }
        let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.clone()));
        at.insert(key.clone(), parsed);
        applied.push(name.clone());
    }
    Ok(applied)
}

/// The file with the environment laid over it, checked against the fields we know.
fn raw_with_env(
    mut table: toml::Table,
    env: &HashMap<String, String>,
    source: &Path,
) -> Result<RawConfig, ConfigError> {
    let applied = overlay_env(&mut table, env)?;
    RawConfig::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Parse {
        path: source.to_path_buf(),
        message: if applied.is_empty() {
            e.to_string()
        } else {
            format!("{e} (in the file or one of {})", applied.join(", "))
        },
    })
}

fn env_number<T: std::str::FromStr>(
    env: &HashMap<String, String>,
    name: &str,
) -> Result<Option<T>, ConfigError> {
    match env.get(name).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| invalid(name, format!("{v:?} is not a whole number"))),
    }
}

/// Whether an `http://host[:port]/…` URL names this machine.
fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(bracketed) = host.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or("")
    } else {
        host.split(':').next().unwrap_or("")
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn http_settings(raw: RawHttp) -> Result<HttpSettings, ConfigError> {
    let d = HttpSettings::default();
    let http = HttpSettings {
        header_read_timeout_ms: raw
            .header_read_timeout_ms
            .unwrap_or(d.header_read_timeout_ms),
        body_timeout_ms: raw.body_timeout_ms.unwrap_or(d.body_timeout_ms),
        max_connections: raw.max_connections.unwrap_or(d.max_connections),
        api_in_flight: raw.api_in_flight.unwrap_or(d.api_in_flight),
        callback_in_flight: raw.callback_in_flight.unwrap_or(d.callback_in_flight),
        api_key_requests_per_minute: raw
            .api_key_requests_per_minute
            .unwrap_or(d.api_key_requests_per_minute),
    };
    if !(6..=1_000_000).contains(&http.api_key_requests_per_minute) {
        return Err(invalid(
            "http.api_key_requests_per_minute",
            "must be between 6 and 1000000",
        ));
    }
    if !(100..=120_000).contains(&http.header_read_timeout_ms) {
        return Err(invalid(
            "http.header_read_timeout_ms",
            "must be between 100 and 120000",
        ));
    }
    if !(100..=120_000).contains(&http.body_timeout_ms) {
        return Err(invalid(
            "http.body_timeout_ms",
            "must be between 100 and 120000",
        ));
    }
    if !(16..=1_000_000).contains(&http.max_connections) {
        return Err(invalid(
            "http.max_connections",
            "must be between 16 and 1000000",
        ));
    }
    if http.api_in_flight == 0 || http.callback_in_flight == 0 {
        return Err(invalid(
            "http.api_in_flight",
            "api_in_flight and callback_in_flight must be positive",
        ));
    }
    Ok(http)
}

fn metrics_settings(
    raw: RawMetrics,
    env: &HashMap<String, String>,
) -> Result<MetricsSettings, ConfigError> {
    let listen = match raw.listen.as_deref().filter(|l| !l.is_empty()) {
        Some(text) => Some(text.parse().map_err(|_| {
            invalid(
                "metrics.listen",
                format!("{text:?} is not an address like 127.0.0.1:9100"),
            )
        })?),
        None => None,
    };
    let token = env
        .get("SCRM_METRICS_TOKEN")
        .filter(|t| !t.is_empty())
        .cloned()
        .or(raw.token)
        .filter(|t| !t.is_empty());
    if token.as_ref().is_some_and(|t| t.len() < 16) {
        return Err(invalid("metrics.token", "must be at least 16 characters"));
    }
    Ok(MetricsSettings {
        listen,
        token: token.map(Secret::new),
        refresh_secs: raw.refresh_secs.unwrap_or(15).clamp(1, 3600),
    })
}

fn check_corps(raw: Vec<RawCorp>) -> Result<Vec<CorpConfig>, ConfigError> {
    let mut corps: Vec<CorpConfig> = Vec::with_capacity(raw.len());
    for (i, corp) in raw.into_iter().enumerate() {
        let field = format!("corps[{i}].corp_id");
        let corp_id = CorpId::try_from(corp.corp_id).map_err(|e| invalid(&field, e.to_string()))?;
        if corps.iter().any(|c| c.corp_id == corp_id) {
            return Err(invalid(
                field,
                format!("corp {corp_id} is configured twice"),
            ));
        }
        let mut apps: Vec<AppConfig> = Vec::with_capacity(corp.apps.len());
        for (j, app) in corp.apps.into_iter().enumerate() {
            let at = |f: &str| {
                format!(
                    "corps[{i}].apps[{j}].{f} (corp {corp_id}, app {:?})",
                    app.name
                )
            };
            let name_ok = !app.name.is_empty()
                && app.name.len() <= 64
                && app
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !name_ok {
                return Err(invalid(
                    at("name"),
                    "must be 1 to 64 letters, digits, '-' or '_' (it is part of the callback URL)",
                ));
            }
            if apps.iter().any(|a| a.name == app.name) {
                return Err(invalid(at("name"), "two apps of one corp share this name"));
            }
            let crypto = CallbackCrypto::new(
                app.token.expose(),
                app.encoding_aes_key.expose(),
                corp_id.as_str(),
            )
            .map_err(|e| match e {
                wecom_sdk::CryptoError::IllegalToken => invalid(at("token"), e.to_string()),
                _ => invalid(at("encoding_aes_key"), e.to_string()),
            })?;
            let published = is_published_sample(app.token.expose(), app.encoding_aes_key.expose());
            apps.push(AppConfig {
                name: app.name,
                crypto,
                secret: app.secret,
                agent_id: app.agent_id,
                published_sample: published,
            });
        }
        if let Some(api_app) = &corp.api_app
            && !apps
                .iter()
                .any(|a| &a.name == api_app && a.secret.is_some())
        {
            return Err(invalid(
                format!("corps[{i}].api_app (corp {corp_id})"),
                format!("names no app with a secret: {api_app:?}"),
            ));
        }
        if let Some(message_app) = &corp.message_app
            && !apps
                .iter()
                .any(|a| &a.name == message_app && a.secret.is_some() && a.agent_id.is_some())
        {
            return Err(invalid(
                format!("corps[{i}].message_app (corp {corp_id})"),
                format!("names no app with both a secret and an agent_id: {message_app:?}"),
            ));
        }
        let archive = corp
            .archive
            .map(|a| corp_archive(a, i, corp_id.as_str()))
            .transpose()?;
        corps.push(CorpConfig {
            archive,
            corp_id,
            apps,
            api_app: corp.api_app,
            message_app: corp.message_app,
            alert_recipients: corp
                .alert_recipients
                .into_iter()
                .filter(|r| !r.trim().is_empty())
                .collect(),
            admin_recipients: corp
                .admin_recipients
                .into_iter()
                .filter(|r| !r.trim().is_empty())
                .collect(),
        });
    }
    Ok(corps)
}

/// A corp's `[corps.archive]`: every key read and checked now, so a bad one is a startup error
/// naming the corp and the version, never a pull that silently cannot decrypt.
fn corp_archive(raw: RawCorpArchive, i: usize, corp_id: &str) -> Result<CorpArchive, ConfigError> {
    let at = |f: &str| format!("corps[{i}].archive.{f} (corp {corp_id})");
    if raw.secret.expose().trim().is_empty() {
        return Err(invalid(at("secret"), "must not be empty"));
    }
    let mut keys: Vec<(u32, Secret<String>)> = Vec::with_capacity(raw.keys.len());
    for (j, key) in raw.keys.into_iter().enumerate() {
        let field = at(&format!("keys[{j}]"));
        if keys.iter().any(|(v, _)| *v == key.version) {
            return Err(invalid(
                field,
                format!("publickey_ver {} is configured twice", key.version),
            ));
        }
        let pem = match (key.file, key.pem) {
            (Some(path), None) => Secret::new(
                std::fs::read_to_string(&path)
                    .map_err(|e| invalid(&field, format!("cannot read {}: {e}", path.display())))?,
            ),
            (None, Some(pem)) => pem,
            _ => return Err(invalid(field, "give exactly one of file and pem")),
        };
        wecom_sdk::archive::keys::KeyRing::new()
            .insert_pem(key.version, pem.expose())
            .map_err(|e| invalid(&field, e.to_string()))?;
        keys.push((key.version, pem));
    }
    Ok(CorpArchive {
        secret: raw.secret,
        keys,
    })
}

fn archive_settings(raw: RawArchive, corps: &[CorpConfig]) -> Result<ArchiveSettings, ConfigError> {
    let d = ArchiveSettings::default();
    let s = ArchiveSettings {
        library: raw.library,
        worker_program: raw.worker_program,
        poll_interval_secs: raw
            .poll_interval_secs
            .unwrap_or(d.poll_interval_secs)
            .max(1),
        batch_limit: raw.batch_limit.unwrap_or(d.batch_limit),
        call_timeout_secs: raw.call_timeout_secs.unwrap_or(d.call_timeout_secs),
        memory_limit_mb: raw.memory_limit_mb.unwrap_or(d.memory_limit_mb),
        restart_backoff_max_secs: raw
            .restart_backoff_max_secs
            .unwrap_or(d.restart_backoff_max_secs)
            .max(1),
        media: raw.media.unwrap_or(d.media),
        media_dir: raw.media_dir,
        media_max_bytes: raw.media_max_bytes.unwrap_or(d.media_max_bytes),
        stall_alert_secs: raw.stall_alert_secs.unwrap_or(d.stall_alert_secs).max(60),
        proxy: raw.proxy.unwrap_or_default(),
        proxy_password: raw.proxy_password,
        operators: raw.operators,
        worker_env: raw.worker_env,
    };
    if !(1..=1000).contains(&s.batch_limit) {
        return Err(invalid(
            "archive.batch_limit",
            "must be between 1 and 1000 (GetChatData's limit)",
        ));
    }
    if !(1..=600).contains(&s.call_timeout_secs) {
        return Err(invalid(
            "archive.call_timeout_secs",
            "must be between 1 and 600",
        ));
    }
    if s.memory_limit_mb < 32 {
        return Err(invalid("archive.memory_limit_mb", "must be at least 32"));
    }
    if s.library.is_none()
        && let Some(corp) = corps.iter().find(|c| c.archive.is_some())
    {
        return Err(invalid(
            "archive.library",
            format!(
                "corp {} has [corps.archive] but no library is configured \
                 (the path of libWeWorkFinanceSdk_C.so)",
                corp.corp_id
            ),
        ));
    }
    Ok(s)
}

fn alert_settings(raw: RawAlerts) -> Result<AlertSettings, ConfigError> {
    let d = AlertSettings::default();
    let console_url = raw
        .console_url
        .unwrap_or(d.console_url)
        .trim_end_matches('/')
        .to_owned();
    if !(console_url.starts_with("https://") || console_url.starts_with("http://")) {
        return Err(invalid("alerts.console_url", "must be an http(s) URL"));
    }
    let s = AlertSettings {
        console_url,
        burst_window_secs: raw.burst_window_secs.unwrap_or(d.burst_window_secs),
        mass_deletion_count: raw.mass_deletion_count.unwrap_or(d.mass_deletion_count),
        mass_deletion_window_secs: raw
            .mass_deletion_window_secs
            .unwrap_or(d.mass_deletion_window_secs),
        notify_customer_loss: raw.notify_customer_loss.unwrap_or(d.notify_customer_loss),
        notify_manager: raw.notify_manager.unwrap_or(d.notify_manager),
        message_window_secs: raw.message_window_secs.unwrap_or(d.message_window_secs),
        rules_file: raw.rules_file,
        rescan_days: raw.rescan_days.unwrap_or(d.rescan_days),
    };
    if s.rescan_days > 365 {
        return Err(invalid("alerts.rescan_days", "at most 365"));
    }
    if s.mass_deletion_count < 2 {
        return Err(invalid("alerts.mass_deletion_count", "must be at least 2"));
    }
    if s.burst_window_secs == 0 || s.mass_deletion_window_secs == 0 {
        return Err(invalid(
            "alerts.burst_window_secs / mass_deletion_window_secs",
            "must be at least 1 second",
        ));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt";

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, &HashMap::new())
    }

    fn with_env(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_toml(text, &env)
    }

    #[test]
    fn every_key_is_settable_from_the_environment() {
        let config = with_env(
            "[http]\nmax_connections = 10\n",
            &[
                ("SCRM_HTTP__MAX_CONNECTIONS", "2000"),
                ("SCRM_ALERTS__NOTIFY_MANAGER", "false"),
                ("SCRM_ALERTS__CONSOLE_URL", "https://scrm.example.cn"),
                ("SCRM_METRICS__TOKEN", "\"0123456789012345\""),
                ("SCRM___LISTEN", "127.0.0.1:9000"),
                ("SCRM_UNRELATED", "left alone"),
            ],
        )
        .unwrap();
        assert_eq!(
            config.http.max_connections, 2000,
            "the variable wins over the file"
        );
        assert!(!config.alerts.notify_manager);
        assert_eq!(config.alerts.console_url, "https://scrm.example.cn");
        assert_eq!(
            config.metrics.token.as_ref().map(|t| t.expose().as_str()),
            Some("0123456789012345"),
            "a quoted value stays a string"
        );
        assert_eq!(config.listen.to_string(), "127.0.0.1:9000");
    }

    #[test]
    fn a_wrong_variable_names_itself() {
        let unknown = with_env("", &[("SCRM_HTTP__MAX_CONECTIONS", "5")]).unwrap_err();
        assert!(unknown.to_string().contains("max_conections"), "{unknown}");
        let wrong_type = with_env("", &[("SCRM_HTTP__MAX_CONNECTIONS", "many")]).unwrap_err();
        assert!(wrong_type.to_string().contains("SCRM_"), "{wrong_type}");
        let into_list = with_env("", &[("SCRM_CORPS__CORP_ID", "ww1")]).unwrap_err();
        assert!(
            into_list.to_string().contains("SCRM_CORPS__CORP_ID"),
            "{into_list}"
        );
    }

    #[test]
    fn debug_and_urls_hide_passwords() {
        let config = load(
            "database_url = \"postgres://scrm:db-pass-7f3a@db.internal:5432/scrm\"\n\
             redis_url = \"redis://:redis-pass-91c2@cache.internal:6379/0\"\n",
        )
        .expect("config");
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("db-pass-7f3a") && !shown.contains("redis-pass-91c2"),
            "{shown}"
        );
        assert!(
            shown.contains("postgres://scrm:***@db.internal:5432/scrm"),
            "{shown}"
        );
        assert_eq!(redact_url("sqlite://data/scrm.db"), "sqlite://data/scrm.db");
    }

    #[test]
    fn defaults_without_a_file() {
        let c = load("").unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.callback.max_body_bytes, 1024 * 1024);
        assert_eq!(c.callback.timestamp_window_secs, 600);
        assert!(c.effective_database_url().starts_with("sqlite://"));
        assert!(c.corps.is_empty());
    }

    #[test]
    fn bad_key_names_corp_and_app() {
        let text = r#"
            [[corps]]
            corp_id = "ww1436e0e65a779aee"
            [[corps.apps]]
            name = "contacts"
            token = "abc"
            encoding_aes_key = "tooshort"
        "#;
        let msg = load(text).unwrap_err().to_string();
        assert!(msg.contains("corps[0].apps[0].encoding_aes_key"), "{msg}");
        assert!(
            msg.contains("ww1436e0e65a779aee") && msg.contains("contacts"),
            "{msg}"
        );
    }

    #[test]
    fn env_overrides_file_and_is_checked() {
        let env = HashMap::from([
            ("SCRM_LISTEN".to_owned(), "127.0.0.1:9999".to_owned()),
            (
                "SCRM_CALLBACK_TIMESTAMP_WINDOW_SECS".to_owned(),
                "0".to_owned(),
            ),
        ]);
        let c = Config::from_toml("listen = \"0.0.0.0:1\"", &env).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9999");
        assert_eq!(c.callback.timestamp_window_secs, 0);
        let bad = HashMap::from([("SCRM_CALLBACK_MAX_BODY_BYTES".to_owned(), "lots".to_owned())]);
        let msg = Config::from_toml("", &bad).unwrap_err().to_string();
        assert!(msg.contains("SCRM_CALLBACK_MAX_BODY_BYTES"), "{msg}");
    }

    #[test]
    fn secrets_do_not_print() {
        let text = format!(
            "[[corps]]\ncorp_id = \"ww1\"\n[[corps.apps]]\nname = \"app\"\ntoken = \"Tok3nValue\"\nencoding_aes_key = \"{KEY}\"\nsecret = \"S3cretValue\"\n"
        );
        let c = load(&text).unwrap();
        let shown = format!("{c:?}");
        for secret in ["Tok3nValue", KEY, "S3cretValue"] {
            assert!(!shown.contains(secret), "{secret} leaked in {shown}");
        }
    }

    #[test]
    fn unknown_fields_and_duplicate_apps_are_refused() {
        assert!(
            load("lisen = \"x\"")
                .unwrap_err()
                .to_string()
                .contains("lisen")
        );
        let text = format!(
            "[[corps]]\ncorp_id = \"ww1\"\n[[corps.apps]]\nname = \"a\"\ntoken = \"t\"\nencoding_aes_key = \"{KEY}\"\n[[corps.apps]]\nname = \"a\"\ntoken = \"t\"\nencoding_aes_key = \"{KEY}\"\n"
        );
        assert!(
            load(&text)
                .unwrap_err()
                .to_string()
                .contains("share this name")
        );
    }
}
