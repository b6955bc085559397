//! What the two page surfaces (the sidebar and the console) share: embedded assets served under
//! content-hashed names, and reading a cookie.

use axum::http::{HeaderMap, StatusCode, header};
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
