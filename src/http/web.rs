//! What the two page surfaces (the sidebar and the console) share: embedded assets served under
//! content-hashed names, reading a cookie, the headers of every page, and the per-person rate
//! limit.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest as _, Sha256};

/// A script or stylesheet compiled into the binary, named by its content's hash.
pub(crate) struct Asset {
    /// `stem.<12 hex>.ext`.
    pub(crate) name: String,
    body: &'static str,
    content_type: &'static str,
}

impl Asset {
    /// `body` under `stem.<hash>.ext`.
    pub(crate) fn named(
        stem: &str,
        ext: &str,
        body: &'static str,
        content_type: &'static str,
    ) -> Self {
        let hash = hex::encode(Sha256::digest(body.as_bytes()));
        Self {
            name: format!("{stem}.{}.{ext}", &hash[..12]),
            body,
            content_type,
        }
    }
}

/// The asset called `name` among `assets`, cached for a year (its name changes with it); 404
/// otherwise.
pub(crate) fn serve(assets: &[&Asset], name: &str) -> Response {
    match assets.iter().find(|a| a.name == name) {
        Some(a) => (
            [
                (header::CONTENT_TYPE, a.content_type),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            a.body,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Headers of every page and fragment: HTML, never cached, no sniffing, no referrer to other
/// sites. Each surface adds its own Content-Security-Policy.
pub(crate) fn page_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h
}

/// `yyyy-mm-dd` as midnight China Standard Time, epoch ms (the console's and the API's dates).
pub(crate) fn china_day_start_ms(day: &str) -> Option<i64> {
    let date = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()?;
    let tz = chrono::FixedOffset::east_opt(8 * 3600)?;
    let t = date.and_hms_opt(0, 0, 0)?.and_local_timezone(tz).single()?;
    Some(t.timestamp_millis())
}

/// The days `from` to `to` (inclusive, `yyyy-mm-dd`, China Standard Time) as a span; `Err` names
/// the end that is not a date.
pub(crate) fn day_span(
    from: Option<&str>,
    to: Option<&str>,
) -> Result<crate::domain::customers::Span, &'static str> {
    const DAY_MS: i64 = 86_400_000;
    let day = |d: Option<&str>, which: &'static str| {
        d.filter(|d| !d.is_empty())
            .map(|d| china_day_start_ms(d).ok_or(which))
            .transpose()
    };
    Ok(crate::domain::customers::Span {
        from_ms: day(from, "from")?,
        to_ms: day(to, "to")?.map(|t| t + DAY_MS),
    })
}

/// A random token of 24 letters and digits: an OAuth `state` (WeCom allows `a-zA-Z0-9`, ≤ 128),
/// a JS-SDK nonce, a lock owner.
pub(crate) fn random_state() -> String {
    use rand::Rng as _;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..24)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// At most once per `every`, measured from the last time (not a window that may reopen a moment
/// later): `None` when this call may go ahead (and starts the pause), `Some(every)` while the
/// pause runs. A coordinator that cannot answer lets the call through.
pub(crate) async fn cooldown(
    coord: &dyn wecom_sdk::Coordinator,
    key: &str,
    every: Duration,
) -> Option<Duration> {
    let owner = random_state();
    match coord.try_lock(key, &owner, every).await {
        Ok(true) => None,
        Ok(false) => Some(every),
        Err(e) => {
            tracing::warn!(error = %e, key, "cooldown unavailable; letting the call through");
            None
        }
    }
}

/// Counts a request against `per_minute` in `bucket` (10-second windows shared by every
/// instance): `Some(wait)` when over the limit. A coordinator that cannot answer lets the request
/// through.
pub(crate) async fn over_limit(
    coord: &dyn wecom_sdk::Coordinator,
    bucket: &str,
    per_minute: u64,
) -> Option<Duration> {
    const WINDOW: Duration = Duration::from_secs(10);
    match coord.acquire(bucket, per_minute.div_ceil(6), WINDOW).await {
        Ok(wait) => wait,
        Err(e) => {
            tracing::warn!(error = %e, bucket, "rate limit unavailable; letting the request through");
            None
        }
    }
}
