//! The one error type of the API client. Every WeCom-side failure is [`ApiError::Wecom`] with its
//! errcode; the client decides on errcodes only, never on `errmsg` (§4.0).

use std::time::Duration;

use crate::coord::CoordError;

/// A WeCom API call failed. No variant carries a URL, an access_token or a secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// WeCom answered with a non-zero `errcode` (after the client's own retries / token refresh).
    #[error("{api}: WeCom errcode {errcode}: {errmsg}")]
    Wecom {
        /// The API path after `cgi-bin/`, e.g. `externalcontact/get`.
        api: &'static str,
        /// WeCom's error code (§4.6).
        errcode: i64,
        /// WeCom's message; for people, not for decisions.
        errmsg: String,
    },
    /// Not sent: a client-side bucket is full for longer than `max_limit_wait`, or WeCom answered
    /// 45009 and the API is blocked for this corp until the window passes.
    #[error("{api}: rate limited, retry after {retry_after:?}")]
    RateLimited {
        /// The API path.
        api: &'static str,
        /// When trying again makes sense.
        retry_after: Duration,
    },
    /// WeCom (or a proxy in front of it) answered with a non-2xx HTTP status.
    #[error("{api}: HTTP status {status}")]
    Http {
        /// The API path.
        api: &'static str,
        /// The HTTP status code.
        status: u16,
    },
    /// The request did not complete: connect failure, timeout, reset. The message never holds
    /// the URL (it carries the access_token).
    #[error("{api}: transport error: {message}")]
    Transport {
        /// The API path.
        api: &'static str,
        /// What went wrong, without the URL.
        message: String,
    },
    /// The body was not the JSON we expected (garbage, missing `errcode`, wrong shape).
    #[error("{api}: undecodable response: {message}")]
    Decode {
        /// The API path.
        api: &'static str,
        /// What did not parse.
        message: String,
    },
    /// We refused to send the request (e.g. more than 100 ids, an empty change); nothing was sent.
    #[error("{api}: invalid request: {message}")]
    Invalid {
        /// The API path.
        api: &'static str,
        /// Which rule the request broke.
        message: String,
    },
    /// The coordinator (token cache, locks, buckets) failed.
    #[error(transparent)]
    Coordination(#[from] CoordError),
}

impl ApiError {
    /// WeCom's errcode, for [`ApiError::Wecom`].
    pub fn errcode(&self) -> Option<i64> {
        match self {
            Self::Wecom { errcode, .. } => Some(*errcode),
            _ => None,
        }
    }

    /// The API this error is about (`None` for coordinator failures).
    pub fn api(&self) -> Option<&'static str> {
        match self {
            Self::Wecom { api, .. }
            | Self::RateLimited { api, .. }
            | Self::Http { api, .. }
            | Self::Transport { api, .. }
            | Self::Decode { api, .. }
            | Self::Invalid { api, .. } => Some(api),
            Self::Coordination(_) => None,
        }
    }

    /// Whether the same call may succeed later unchanged, so a job may requeue it (after
    /// `retry_after` for [`ApiError::RateLimited`]). The client has already spent its own
    /// retries; this is for the caller's next round. False for configuration errors (40001),
    /// permanent WeCom answers and requests we refused.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Wecom { errcode, .. } => matches!(
                errcode,
                -1 | 6000 | 40014 | 42001 | 40082 | 45009 | 45033 | 41096
            ),
            Self::Http { status, .. } => *status >= 500 || *status == 429,
            Self::RateLimited { .. }
            | Self::Transport { .. }
            | Self::Decode { .. }
            | Self::Coordination(_) => true,
            Self::Invalid { .. } => false,
        }
    }
}
