//! The client core: one HTTP client, the shared access_token cache with its single-flight
//! refresh, retries with jittered backoff, the 45009 block, and the client-side buckets. The
//! typed APIs in the sibling modules are thin wrappers over [`WecomClient::get_json`] and
//! [`WecomClient::post_json`].
//!
//! Order of one call: token (cache → in-process mutex → coordinator lock → gettoken) → per
//! attempt: block key, buckets, one HTTP request, decide on the errcode. A token error
//! (40014/42001/40082) drops exactly the token that failed and retries the call once.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::Rng as _;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::config::{ApiConfig, AppCredentials};
use super::error::ApiError;
use crate::coord::{CoordError, Coordinator};
use crate::secret::Secret;

/// Largest response body we read (a full `batch/get_by_user` page is well below this).
pub const MAX_RESPONSE_BYTES: usize = 32 << 20;

/// Errcodes meaning "this access_token is no good": drop it, fetch once, retry once (§4.1).
const TOKEN_ERRORS: [i64; 3] = [40014, 42001, 40082];
/// gettoken answers that will not change by asking again: held for [`BAD_SECRET_HOLD`] so a
/// loop of callers cannot get the server's IP blocked (§4.1: repeated wrong secrets → 1 h).
const CONFIG_ERRORS: [i64; 2] = [40001, 40013];
const BAD_SECRET_HOLD: Duration = Duration::from_secs(60);
/// How long WeCom blocks an API after a minute-window 45009 (§4.7).
const FREQUENCY_BLOCK: Duration = Duration::from_secs(60);
const TOKEN_LOCK_TTL: Duration = Duration::from_secs(10);
const TOKEN_POLL: Duration = Duration::from_millis(25);
/// A waiter gives up when the cache stays empty this long (the lock holder is stuck and keeps
/// renewing, or the coordinator misbehaves); the lock TTL alone frees a crashed holder.
const TOKEN_WAIT_MAX: Duration = Duration::from_secs(30);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
/// Sleeping to a window edge lands a little past it, in the new window.
const WINDOW_SLACK: Duration = Duration::from_millis(5);

/// Writes that may have taken effect even when we saw no answer: never retried after a read
/// timeout, a reset mid-request or an undecodable body (a second transfer or message would be
/// real). Connect errors, -1, 45033 and 5xx are still retried: WeCom did not act on those.
const NON_IDEMPOTENT: [&str; 10] = [
    "message/send",
    "appchat/send",
    "externalcontact/transfer_customer",
    "externalcontact/resigned/transfer_customer",
    "externalcontact/groupchat/transfer",
    "externalcontact/groupchat/onjob_transfer",
    "externalcontact/add_corp_tag",
    "externalcontact/add_contact_way",
    "externalcontact/send_welcome_msg",
    "externalcontact/add_msg_template",
];

/// Calls whose lost answer (a 5xx after WeCom may have done the work) is not retried here: a
/// second transfer of the same customers or chats is not harmless (a new 24 h window, the
/// 2-in-90-days count), so the caller checks what WeCom has before sending again.
const ASK_BEFORE_REPEATING: [&str; 4] = [
    "externalcontact/transfer_customer",
    "externalcontact/resigned/transfer_customer",
    "externalcontact/groupchat/transfer",
    "externalcontact/groupchat/onjob_transfer",
];

/// A WeCom server-API client for any number of corps and apps. Cheap to clone (state behind an
/// `Arc`); build one per process and share it. Tokens and buckets live in the [`Coordinator`],
/// so several instances sharing a coordinator share them too.
#[derive(Clone)]
pub struct WecomClient {
    inner: Arc<Inner>,
}

struct Inner {
    config: ApiConfig,
    base: reqwest::Url,
    http: reqwest::Client,
    coord: Arc<dyn Coordinator>,
    /// One refresher per token key inside this process.
    refresh: Mutex<HashMap<String, Arc<tokio::sync::Mutex<RefreshState>>>>,
    /// Names this instance as a lock owner.
    instance: String,
}

/// What the last in-process refresh of one key left behind.
#[derive(Default)]
pub(crate) struct RefreshState {
    /// A refresh that failed, and when: callers that queued before it get the same error
    /// instead of repeating the same doomed gettoken one after the other.
    failed: Option<(Instant, ApiError)>,
}

impl fmt::Debug for WecomClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the coordinator: its Debug may show cached tokens.
        f.debug_struct("WecomClient")
            .field("base_url", &self.inner.base.as_str())
            .field("instance", &self.inner.instance)
            .finish_non_exhaustive()
    }
}

/// One prepared call: the API path, the query (besides access_token), an optional JSON body
/// (POST when present) and extra buckets to count (message recipients).
pub(crate) struct Request<'a> {
    api: &'static str,
    query: &'a [(&'a str, &'a str)],
    body: Option<Vec<u8>>,
    buckets: Vec<Bucket>,
}

impl<'a> Request<'a> {
    pub(crate) fn get(api: &'static str, query: &'a [(&'a str, &'a str)]) -> Self {
        Self {
            api,
            query,
            body: None,
            buckets: Vec::new(),
        }
    }

    pub(crate) fn post<B: Serialize + ?Sized>(
        api: &'static str,
        body: &B,
    ) -> Result<Self, ApiError> {
        let body = serde_json::to_vec(body).map_err(|e| ApiError::Invalid {
            api,
            message: format!("body does not serialize: {e}"),
        })?;
        Ok(Self {
            api,
            query: &[],
            body: Some(body),
            buckets: Vec::new(),
        })
    }

    pub(crate) fn with_buckets(mut self, buckets: Vec<Bucket>) -> Self {
        self.buckets = buckets;
        self
    }
}

/// A fixed-window bucket in the coordinator.
pub(crate) struct Bucket {
    pub(crate) key: String,
    pub(crate) limit: u64,
    pub(crate) window: Duration,
}

impl Bucket {
    pub(crate) fn per_minute(key: String, limit: u64) -> Self {
        Self {
            key,
            limit,
            window: MINUTE,
        }
    }

    pub(crate) fn per_hour(key: String, limit: u64) -> Self {
        Self {
            key,
            limit,
            window: HOUR,
        }
    }
}

/// Why one attempt failed, before deciding whether to try again.
enum Failure {
    Wecom {
        errcode: i64,
        errmsg: String,
    },
    Http(u16),
    /// The request never reached WeCom.
    Connect(String),
    /// It may have: timeout, reset, broken body.
    Transport(String),
    /// Not JSON, or no errcode: a proxy page or a cut-off body; asking again may help.
    Decode(String),
    /// errcode 0 but not the shape we expect: the same answer will not parse next time.
    Shape(String),
}

impl Failure {
    fn from_reqwest(error: reqwest::Error) -> Self {
        let connect = error.is_connect();
        let message = describe(&error.without_url());
        if connect {
            Self::Connect(message)
        } else {
            Self::Transport(message)
        }
    }

    fn into_error(self, api: &'static str, redact: &[&str]) -> ApiError {
        match self {
            Self::Wecom { errcode, errmsg } => ApiError::Wecom {
                api,
                errcode,
                errmsg: scrub(errmsg, redact),
            },
            Self::Http(status) => ApiError::Http { api, status },
            Self::Connect(message) | Self::Transport(message) => ApiError::Transport {
                api,
                message: scrub(message, redact),
            },
            Self::Decode(message) | Self::Shape(message) => ApiError::Decode {
                api,
                message: scrub(message, redact),
            },
        }
    }
}

/// The error and its sources, one line, no URL (the caller strips it).
fn describe(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// Belt and braces: no token or secret in any error text, whatever WeCom or a proxy echoed.
fn scrub(mut text: String, redact: &[&str]) -> String {
    for secret in redact.iter().filter(|s| !s.is_empty()) {
        if text.contains(secret) {
            text = text.replace(secret, "[redacted]");
        }
    }
    text
}

fn now_ms() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(now.as_millis()).unwrap_or(u64::MAX)
}

/// The part of every response we look at before the payload.
#[derive(serde::Deserialize)]
struct Status {
    errcode: Option<i64>,
    #[serde(default)]
    errmsg: String,
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, Failure> {
    let status: Status =
        serde_json::from_slice(body).map_err(|e| Failure::Decode(json_error(&e)))?;
    match status.errcode {
        None => Err(Failure::Decode("no errcode in the response".to_owned())),
        Some(0) => serde_json::from_slice(body).map_err(|e| Failure::Shape(json_error(&e))),
        Some(errcode) => Err(Failure::Wecom {
            errcode,
            errmsg: status.errmsg,
        }),
    }
}

/// A serde_json error without echoing bytes of a body that is not JSON at all.
fn json_error(error: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match error.classify() {
        Category::Data => format!("unexpected JSON shape: {error}"),
        Category::Syntax | Category::Eof | Category::Io => format!(
            "not JSON (line {}, column {})",
            error.line(),
            error.column()
        ),
    }
}

async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, Failure> {
    let too_large = || Failure::Decode(format!("response larger than {MAX_RESPONSE_BYTES} bytes"));
    if response
        .content_length()
        .is_some_and(|n| usize::try_from(n).map_or(true, |n| n > MAX_RESPONSE_BYTES))
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(Failure::from_reqwest)? {
        if body.len().saturating_add(chunk.len()) > MAX_RESPONSE_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// API paths are ours (constants or a caller's `&'static str`), but they are joined onto the
/// base URL: refuse anything that could leave `cgi-bin/`.
fn check_api(api: &'static str) -> Result<(), ApiError> {
    let plausible = !api.is_empty()
        && !api.starts_with('/')
        && !api.contains("..")
        && api
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'.'));
    if plausible {
        Ok(())
    } else {
        Err(ApiError::Invalid {
            api,
            message: "API path must be a relative path like `externalcontact/get`".to_owned(),
        })
    }
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    #[serde(default)]
    access_token: String,
    #[serde(default)]
    expires_in: i64,
}

impl WecomClient {
    /// A client for `config`, keeping tokens, locks and buckets in `coord`. Fails with
    /// [`ApiError::Invalid`] (api `"client"`) on a bad `base_url` or when the HTTP client
    /// cannot be built.
    pub fn new(config: ApiConfig, coord: Arc<dyn Coordinator>) -> Result<Self, ApiError> {
        let invalid = |message: String| ApiError::Invalid {
            api: "client",
            message,
        };
        let mut base = config.base_url.trim().to_owned();
        if !base.ends_with('/') {
            base.push('/');
        }
        let base = reqwest::Url::parse(&base).map_err(|e| invalid(format!("base_url: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(invalid("base_url must be an http(s) URL".to_owned()));
        }
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            // The token rides in the query string: never follow it anywhere else.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| invalid(format!("HTTP client: {}", describe(&e.without_url()))))?;
        let instance = format!("{:016x}", rand::random::<u64>());
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                base,
                http,
                coord,
                refresh: Mutex::new(HashMap::new()),
                instance,
            }),
        })
    }

    /// The configuration this client was built with.
    pub fn config(&self) -> &ApiConfig {
        &self.inner.config
    }

    /// The app's access_token: from the shared cache, or fetched by exactly one caller across
    /// all tasks and all instances sharing the coordinator while the others wait for it.
    pub async fn access_token(&self, app: &AppCredentials) -> Result<Secret<String>, ApiError> {
        self.token(app).await
    }

    /// `GET {base_url}{api}?access_token=…&{query}` for any API without a typed method; `T` is
    /// read from the whole response (unknown fields such as `errcode` are ignored by lenient
    /// types). `api` is the path after `cgi-bin/`, e.g. `"externalcontact/get"`.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        app: &AppCredentials,
        api: &'static str,
        query: &[(&str, &str)],
    ) -> Result<T, ApiError> {
        self.call(app, Request::get(api, query)).await
    }

    /// `POST {base_url}{api}?access_token=…` with `body` as JSON, for any API without a typed
    /// method.
    pub async fn post_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        app: &AppCredentials,
        api: &'static str,
        body: &B,
    ) -> Result<T, ApiError> {
        self.call(app, Request::post(api, body)?).await
    }

    /// One authenticated call: token, attempts, and one refresh-and-retry on a token error.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        app: &AppCredentials,
        req: Request<'_>,
    ) -> Result<T, ApiError> {
        let span = tracing::debug_span!("wecom_api", api = req.api, corp_id = %app.corp_id);
        tracing::Instrument::instrument(self.call_inner(app, req), span).await
    }

    async fn call_inner<T: DeserializeOwned>(
        &self,
        app: &AppCredentials,
        req: Request<'_>,
    ) -> Result<T, ApiError> {
        check_api(req.api)?;
        // Before the token: a blocked API must not even cost a gettoken.
        self.check_block(app, req.api).await?;
        // The request's own buckets (message recipients) count once per call: a retried
        // attempt delivers nothing twice. The per-API buckets count every attempt, as WeCom does.
        let deadline = Instant::now().checked_add(self.inner.config.max_limit_wait);
        for bucket in &req.buckets {
            self.take(req.api, bucket, deadline).await?;
        }
        let mut token = self.token(app).await?;
        let mut refreshed = false;
        loop {
            match self.execute(app, &req, Some(&token)).await {
                Err(ApiError::Wecom { errcode, .. })
                    if !refreshed && TOKEN_ERRORS.contains(&errcode) =>
                {
                    tracing::info!(
                        errcode,
                        "access_token rejected; dropping it and retrying once"
                    );
                    self.inner
                        .coord
                        .delete_if(&app.token_cache_key(), token.expose())
                        .await?;
                    token = self.token(app).await?;
                    refreshed = true;
                }
                other => return other,
            }
        }
    }

    /// The attempts of one request with one token (none for gettoken itself).
    async fn execute<T: DeserializeOwned>(
        &self,
        app: &AppCredentials,
        req: &Request<'_>,
        token: Option<&Secret<String>>,
    ) -> Result<T, ApiError> {
        let api = req.api;
        let url = self.inner.base.join(api).map_err(|e| ApiError::Invalid {
            api,
            message: format!("API path: {e}"),
        })?;
        let redact = [
            token.map_or("", |t| t.expose().as_str()),
            app.secret.expose().as_str(),
        ];
        let idempotent = !NON_IDEMPOTENT.contains(&api);
        let max_retries = self.inner.config.max_retries;
        let mut attempt: u32 = 0;
        loop {
            self.check_block(app, api).await?;
            self.take_units(app, req).await?;
            let failure = match self.attempt(&url, req, token).await {
                Ok(value) => return Ok(value),
                Err(failure) => failure,
            };
            let retry = match &failure {
                Failure::Wecom { errcode: 45009, .. } => {
                    tracing::warn!(
                        errcode = 45009,
                        attempt,
                        "frequency limit hit; blocking the API"
                    );
                    if let Err(error) = self.block(app, api).await {
                        tracing::warn!(%error, "could not store the 45009 block");
                    }
                    return Err(ApiError::RateLimited {
                        api,
                        retry_after: FREQUENCY_BLOCK,
                    });
                }
                Failure::Wecom { errcode, .. } => matches!(errcode, -1 | 45033),
                // A 5xx from a gateway may come after WeCom did the work (the answer was lost).
                // A transfer repeated would start a second one: it goes back to its caller, who
                // asks WeCom first (`transfer_result`, `groupchat/list`).
                Failure::Http(status) => *status >= 500 && !ASK_BEFORE_REPEATING.contains(&api),
                Failure::Connect(_) => true,
                Failure::Transport(_) | Failure::Decode(_) => idempotent,
                Failure::Shape(_) => false,
            };
            if !retry || attempt >= max_retries {
                let error = failure.into_error(api, &redact);
                tracing::debug!(attempt, errcode = error.errcode(), "WeCom call failed");
                return Err(error);
            }
            let delay = self.backoff(attempt);
            tracing::debug!(attempt, delay_ms = delay.as_millis(), "retrying WeCom call");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    async fn attempt<T: DeserializeOwned>(
        &self,
        url: &reqwest::Url,
        req: &Request<'_>,
        token: Option<&Secret<String>>,
    ) -> Result<T, Failure> {
        let http = &self.inner.http;
        let mut builder = match &req.body {
            Some(body) => http
                .post(url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone()),
            None => http.get(url.clone()),
        };
        if let Some(token) = token {
            builder = builder.query(&[("access_token", token.expose().as_str())]);
        }
        if !req.query.is_empty() {
            builder = builder.query(req.query);
        }
        let response = builder.send().await.map_err(Failure::from_reqwest)?;
        let status = response.status();
        if !status.is_success() {
            return Err(Failure::Http(status.as_u16()));
        }
        let body = read_capped(response).await?;
        decode(&body)
    }

    /// Full jitter: uniform in `0 ..= min(retry_max, retry_base · 2^attempt)`.
    fn backoff(&self, attempt: u32) -> Duration {
        let config = &self.inner.config;
        let step = config
            .retry_base
            .saturating_mul(2u32.saturating_pow(attempt))
            .min(config.retry_max);
        let cap = u64::try_from(step.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(rand::rng().random_range(0..=cap))
    }

    fn block_key(app: &AppCredentials, api: &str) -> String {
        format!("wecom:block:{}:{api}", app.corp_id)
    }

    /// Fails fast while WeCom has this API blocked for the corp (after a 45009).
    async fn check_block(&self, app: &AppCredentials, api: &'static str) -> Result<(), ApiError> {
        let Some(until) = self.inner.coord.get(&Self::block_key(app, api)).await? else {
            return Ok(());
        };
        let left = until
            .parse::<u64>()
            .ok()
            .and_then(|until| until.checked_sub(now_ms()))
            .filter(|ms| *ms > 0)
            .map_or(Duration::from_secs(1), Duration::from_millis);
        tracing::debug!(
            retry_after_ms = left.as_millis(),
            "API blocked after 45009; not calling"
        );
        Err(ApiError::RateLimited {
            api,
            retry_after: left,
        })
    }

    async fn block(&self, app: &AppCredentials, api: &str) -> Result<(), CoordError> {
        let until = now_ms().saturating_add(60_000);
        self.inner
            .coord
            .set(
                &Self::block_key(app, api),
                &until.to_string(),
                FREQUENCY_BLOCK,
            )
            .await
    }

    /// One unit from the per-API minute and hour buckets, waiting for a window to reopen when
    /// that fits in `max_limit_wait`.
    async fn take_units(&self, app: &AppCredentials, req: &Request<'_>) -> Result<(), ApiError> {
        let limits = self.inner.config.limits;
        let prefix = format!("wecom:rl:{}:{}", app.corp_id, req.api);
        let deadline = Instant::now().checked_add(self.inner.config.max_limit_wait);
        let per_api = [
            Bucket::per_minute(format!("{prefix}:m"), limits.per_api_per_minute),
            Bucket::per_hour(format!("{prefix}:h"), limits.per_api_per_hour),
        ];
        for bucket in &per_api {
            self.take(req.api, bucket, deadline).await?;
        }
        Ok(())
    }

    async fn take(
        &self,
        api: &'static str,
        bucket: &Bucket,
        deadline: Option<Instant>,
    ) -> Result<(), ApiError> {
        loop {
            let Some(wait) = self
                .inner
                .coord
                .acquire(&bucket.key, bucket.limit, bucket.window)
                .await?
            else {
                return Ok(());
            };
            let fits = match (Instant::now().checked_add(wait), deadline) {
                (Some(wake), Some(deadline)) => wake <= deadline,
                (Some(_), None) => true,
                (None, _) => false,
            };
            if !fits {
                tracing::debug!(
                    window_secs = bucket.window.as_secs(),
                    retry_after_ms = wait.as_millis(),
                    "client-side rate limit reached"
                );
                return Err(ApiError::RateLimited {
                    api,
                    retry_after: wait,
                });
            }
            tokio::time::sleep(wait.saturating_add(WINDOW_SLACK)).await;
        }
    }

    /// The coordinator the client caches in.
    pub(crate) fn coordinator(&self) -> &Arc<dyn Coordinator> {
        &self.inner.coord
    }

    pub(crate) fn refresh_slot(&self, key: &str) -> Arc<tokio::sync::Mutex<RefreshState>> {
        let mut slots = self
            .inner
            .refresh
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(slots.entry(key.to_owned()).or_default())
    }

    async fn cached_token(&self, key: &str) -> Result<Option<Secret<String>>, ApiError> {
        let value = self.inner.coord.get(key).await?;
        Ok(value.filter(|t| !t.is_empty()).map(Secret::new))
    }

    async fn token(&self, app: &AppCredentials) -> Result<Secret<String>, ApiError> {
        let key = app.token_cache_key();
        if let Some(token) = self.cached_token(&key).await? {
            return Ok(token);
        }
        let queued = Instant::now();
        let slot = self.refresh_slot(&key);
        let mut state = slot.lock().await;
        if let Some((at, error)) = &state.failed
            && *at >= queued
        {
            return Err(error.clone());
        }
        // Double-check: whoever held the mutex before us may have filled the cache.
        if let Some(token) = self.cached_token(&key).await? {
            return Ok(token);
        }
        let result = self.refresh_shared(app, &key).await;
        state.failed = match &result {
            Ok(_) => None,
            Err(error) => Some((Instant::now(), error.clone())),
        };
        result
    }

    /// One refresher across instances: the holder of the coordinator lock fetches; everybody
    /// else polls the cache until the token appears or the lock frees up.
    async fn refresh_shared(
        &self,
        app: &AppCredentials,
        key: &str,
    ) -> Result<Secret<String>, ApiError> {
        let coord = &self.inner.coord;
        let lock = format!("wecom:token-lock:{}", app.app_key());
        let owner = format!("{}-{:016x}", self.inner.instance, rand::random::<u64>());
        let started = Instant::now();
        loop {
            if coord.try_lock(&lock, &owner, TOKEN_LOCK_TTL).await? {
                let result = self.refresh_locked(app, key).await;
                if let Err(error) = coord.unlock(&lock, &owner).await {
                    tracing::warn!(%error, "could not release the token lock; it expires by itself");
                }
                return result;
            }
            tokio::time::sleep(TOKEN_POLL).await;
            if let Some(token) = self.cached_token(key).await? {
                return Ok(token);
            }
            self.check_config_error(app).await?;
            if started.elapsed() > TOKEN_WAIT_MAX {
                return Err(ApiError::Coordination(CoordError(
                    "gave up waiting for another instance to refresh the access_token".to_owned(),
                )));
            }
        }
    }

    fn config_error_key(app: &AppCredentials) -> String {
        format!("wecom:token-refused:{}", app.app_key())
    }

    /// Fails with the remembered gettoken refusal (40001 bad secret, 40013 bad corpid).
    async fn check_config_error(&self, app: &AppCredentials) -> Result<(), ApiError> {
        let refused = self.inner.coord.get(&Self::config_error_key(app)).await?;
        match refused.and_then(|code| code.parse::<i64>().ok()) {
            Some(errcode) => Err(ApiError::Wecom {
                api: "gettoken",
                errcode,
                errmsg: "gettoken refused these credentials moments ago; not asking again yet"
                    .to_owned(),
            }),
            None => Ok(()),
        }
    }

    async fn refresh_locked(
        &self,
        app: &AppCredentials,
        key: &str,
    ) -> Result<Secret<String>, ApiError> {
        // Double-check under the lock: the previous holder may have just stored it.
        if let Some(token) = self.cached_token(key).await? {
            return Ok(token);
        }
        self.check_config_error(app).await?;
        let (token, ttl) = match self.fetch_token(app).await {
            Ok(fetched) => fetched,
            Err(error) => {
                if let Some(errcode) = error.errcode().filter(|c| CONFIG_ERRORS.contains(c)) {
                    tracing::error!(errcode, corp_id = %app.corp_id, "gettoken refused the app credentials");
                    self.inner
                        .coord
                        .set(
                            &Self::config_error_key(app),
                            &errcode.to_string(),
                            BAD_SECRET_HOLD,
                        )
                        .await?;
                }
                return Err(error);
            }
        };
        self.inner.coord.set(key, token.expose(), ttl).await?;
        tracing::info!(corp_id = %app.corp_id, ttl_secs = ttl.as_secs(), "access_token refreshed");
        Ok(token)
    }

    async fn fetch_token(
        &self,
        app: &AppCredentials,
    ) -> Result<(Secret<String>, Duration), ApiError> {
        const API: &str = "gettoken";
        let query = [
            ("corpid", app.corp_id.as_str()),
            ("corpsecret", app.secret.expose().as_str()),
        ];
        let response: TokenResponse = self.execute(app, &Request::get(API, &query), None).await?;
        let token = Secret::new(response.access_token);
        if token.expose().is_empty() {
            return Err(ApiError::Decode {
                api: API,
                message: "gettoken returned no access_token".to_owned(),
            });
        }
        let ttl = self
            .token_ttl(response.expires_in)
            .ok_or_else(|| ApiError::Decode {
                api: API,
                message: format!("gettoken returned expires_in {}", response.expires_in),
            })?;
        Ok((token, ttl))
    }

    /// `expires_in - margin`, or 80 % of `expires_in` for tokens shorter than twice the margin.
    fn token_ttl(&self, expires_in: i64) -> Option<Duration> {
        let life = Duration::from_secs(u64::try_from(expires_in).ok().filter(|s| *s > 0)?);
        let margin = self.inner.config.token_refresh_margin;
        Some(if life >= margin.saturating_mul(2) {
            life.saturating_sub(margin)
        } else {
            life / 5 * 4
        })
    }

    /// The configured client-side limits (the typed modules add their own buckets).
    pub(crate) fn limits(&self) -> super::config::RateLimits {
        self.inner.config.limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coord::MemoryCoordinator;

    fn client(margin: u64) -> WecomClient {
        let config = ApiConfig {
            token_refresh_margin: Duration::from_secs(margin),
            ..ApiConfig::default()
        };
        WecomClient::new(config, Arc::new(MemoryCoordinator::new())).unwrap()
    }

    #[test]
    fn token_ttl_keeps_a_margin_or_eighty_percent() {
        let c = client(300);
        assert_eq!(c.token_ttl(7200), Some(Duration::from_secs(6900)));
        assert_eq!(c.token_ttl(600), Some(Duration::from_secs(300)));
        assert_eq!(c.token_ttl(500), Some(Duration::from_secs(400)));
        assert_eq!(c.token_ttl(0), None);
        assert_eq!(c.token_ttl(-5), None);
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let c = client(300);
        for attempt in 0..40 {
            let cap = Duration::from_millis(200)
                .saturating_mul(2u32.saturating_pow(attempt))
                .min(Duration::from_secs(5));
            assert!(c.backoff(attempt) <= cap);
        }
        let spread: std::collections::HashSet<_> = (0..20).map(|_| c.backoff(4)).collect();
        assert!(spread.len() > 1, "full jitter varies");
    }

    #[test]
    fn api_paths_cannot_leave_cgi_bin() {
        assert!(check_api("externalcontact/get").is_ok());
        assert!(check_api("/etc/passwd").is_err());
        assert!(check_api("../x").is_err());
        assert!(check_api("http://evil.example/x").is_err());
        assert!(check_api("a?b=c").is_err());
        assert!(check_api("").is_err());
    }

    #[test]
    fn decode_needs_an_errcode_and_reports_wecom_errors() {
        assert!(matches!(
            decode::<serde_json::Value>(b"{\"ok\":1}"),
            Err(Failure::Decode(_))
        ));
        assert!(matches!(
            decode::<serde_json::Value>(b"<html>"),
            Err(Failure::Decode(m)) if !m.contains("html")
        ));
        assert!(matches!(
            decode::<serde_json::Value>(b"{\"errcode\":-1,\"errmsg\":\"busy\"}"),
            Err(Failure::Wecom { errcode: -1, .. })
        ));
        assert!(decode::<serde_json::Value>(b"{\"errcode\":0}").is_ok());
    }

    #[test]
    fn scrub_removes_secrets() {
        assert_eq!(
            scrub("bad tok123 x".to_owned(), &["tok123", ""]),
            "bad [redacted] x"
        );
    }

    #[test]
    fn bad_base_urls_are_refused() {
        let coord: Arc<dyn Coordinator> = Arc::new(MemoryCoordinator::new());
        for base in ["not a url", "ftp://x/", "mailto:a@b"] {
            let config = ApiConfig {
                base_url: base.to_owned(),
                ..ApiConfig::default()
            };
            assert!(
                matches!(
                    WecomClient::new(config, Arc::clone(&coord)),
                    Err(ApiError::Invalid { .. })
                ),
                "{base}"
            );
        }
    }
}
