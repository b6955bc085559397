//! What a [`WecomClient`](super::WecomClient) is built from: where WeCom lives, how long to wait,
//! how to retry, the client-side rate limits (§4.7), and the credentials of one app.

use std::fmt::Write as _;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::ids::CorpId;
use crate::secret::Secret;

/// How the client talks to WeCom. `Default` gives the production values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// Where the API lives, up to and including `cgi-bin/` (a missing trailing `/` is added).
    /// Default `https://qyapi.weixin.qq.com/cgi-bin/`; tests aim it at an emulator.
    pub base_url: String,
    /// Whole-request deadline (connect, send, read the body). Default 10 s.
    pub timeout: Duration,
    /// TCP + TLS connect deadline. Default 3 s.
    pub connect_timeout: Duration,
    /// Retries after the first attempt for retryable failures (-1, 45033, 5xx, transport,
    /// undecodable bodies). Default 3.
    pub max_retries: u32,
    /// First backoff step; step `n` is `retry_base · 2^n`, capped at `retry_max`, fully
    /// jittered. Default 200 ms.
    pub retry_base: Duration,
    /// Longest single backoff. Default 5 s.
    pub retry_max: Duration,
    /// A token is cached for `expires_in - token_refresh_margin`, so it is replaced before WeCom
    /// expires it (tokens shorter than twice the margin are cached for 80 % of their life).
    /// Default 300 s.
    pub token_refresh_margin: Duration,
    /// Client-side limits, counted in the shared [`Coordinator`](crate::coord::Coordinator).
    pub limits: RateLimits,
    /// How long a call may wait for a full bucket to reopen before failing with
    /// [`ApiError::RateLimited`](super::ApiError::RateLimited). Default 2 s.
    pub max_limit_wait: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            base_url: "https://qyapi.weixin.qq.com/cgi-bin/".to_owned(),
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            max_retries: 3,
            retry_base: Duration::from_millis(200),
            retry_max: Duration::from_secs(5),
            token_refresh_margin: Duration::from_secs(300),
            limits: RateLimits::default(),
            max_limit_wait: Duration::from_secs(2),
        }
    }
}

/// WeCom's published limits (§4.7), enforced on our side so that we slow down before WeCom
/// answers 45009 and blocks the API for a whole window. Buckets are per corp, so every instance
/// sharing the coordinator shares them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// Calls of one API per corp per minute. Default 10 000.
    pub per_api_per_minute: u64,
    /// Calls of one API per corp per hour. Default 150 000.
    pub per_api_per_hour: u64,
    /// `message/send` deliveries to one member from one app per minute. Default 30 (WeCom drops
    /// the excess silently, so we refuse instead).
    pub message_per_user_per_minute: u64,
    /// `message/send` deliveries to one member from one app per hour. Default 1000.
    pub message_per_user_per_hour: u64,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            per_api_per_minute: 10_000,
            per_api_per_hour: 150_000,
            message_per_user_per_minute: 30,
            message_per_user_per_hour: 1000,
        }
    }
}

/// One app's credentials: which corp, which secret (客户联系, 通讯录, 会话存档 or a self-built app's),
/// and the app's agent id when it has one. `Debug` never shows the secret.
#[derive(Debug, Clone)]
pub struct AppCredentials {
    /// The corp the secret belongs to.
    pub corp_id: CorpId,
    /// The app secret (`corpsecret` of gettoken).
    pub secret: Secret<String>,
    /// The app's agent id (`None` for system apps such as 客户联系 or 通讯录同步).
    pub agent_id: Option<i64>,
}

impl AppCredentials {
    /// Credentials for `corp_id` with `secret`.
    pub fn new(corp_id: CorpId, secret: Secret<String>, agent_id: Option<i64>) -> Self {
        Self {
            corp_id,
            secret,
            agent_id,
        }
    }

    /// The part of every per-app key that names this app: `{corp_id}:{16 hex chars of
    /// sha256(secret)}`. Per (corp, secret), never per corp: every secret has its own token, and
    /// sharing one cache entry between apps gives 301002 (§7.6). The hash names the secret
    /// without revealing it.
    pub fn app_key(&self) -> String {
        let digest = Sha256::digest(self.secret.expose().as_bytes());
        let mut name = String::with_capacity(16);
        for byte in digest.iter().take(8) {
            let _ = write!(name, "{byte:02x}");
        }
        format!("{}:{name}", self.corp_id)
    }

    /// The coordinator key of this app's cached access_token:
    /// `wecom:token:{corp_id}:{first 16 hex chars of sha256(secret)}`.
    pub fn token_cache_key(&self) -> String {
        format!("wecom:token:{}", self.app_key())
    }
}
