//! WeCom's side of a callback: signed, encrypted requests exactly as WeCom sends them. Used by
//! `scrm callback selftest`, the load benchmark and the tests.

use std::fmt::Write as _;

use crate::crypto::CallbackCrypto;

/// A request to send to a callback URL: the query string (without `?`) and, for POST, the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackRequest {
    /// `msg_signature=…&timestamp=…&nonce=…[&echostr=…]`, percent-encoded.
    pub query: String,
    /// The XML envelope for POST; `None` for the GET verification.
    pub body: Option<String>,
}

/// The GET that WeCom sends when an admin saves the callback URL; the right answer is `echo`.
pub fn verification(
    crypto: &CallbackCrypto,
    echo: &str,
    timestamp: &str,
    nonce: &str,
) -> CallbackRequest {
    let echostr = crypto.encrypt(echo.as_bytes());
    let signature = crypto.sign(timestamp, nonce, &echostr);
    let query = format!(
        "msg_signature={signature}&timestamp={}&nonce={}&echostr={}",
        percent_encode(timestamp),
        percent_encode(nonce),
        percent_encode(&echostr)
    );
    CallbackRequest { query, body: None }
}

/// The POST of one event or message (`plaintext` is the decrypted XML WeCom would send).
pub fn event(
    crypto: &CallbackCrypto,
    plaintext: &str,
    timestamp: &str,
    nonce: &str,
    agent_id: Option<&str>,
) -> CallbackRequest {
    let encrypt = crypto.encrypt(plaintext.as_bytes());
    let signature = crypto.sign(timestamp, nonce, &encrypt);
    let query = format!(
        "msg_signature={signature}&timestamp={}&nonce={}",
        percent_encode(timestamp),
        percent_encode(nonce)
    );
    let body = format!(
        "<xml><ToUserName><![CDATA[{}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt><AgentID><![CDATA[{}]]></AgentID></xml>",
        crypto.receive_id(),
        agent_id.unwrap_or("")
    );
    CallbackRequest {
        query,
        body: Some(body),
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters (so `+`, `/`, `=` are encoded).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_open_with_the_same_crypto() {
        let c = CallbackCrypto::new("tok", "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt", "ww1")
            .unwrap();
        let r = event(
            &c,
            "<xml><A>1</A></xml>",
            "1700000000",
            "n1",
            Some("1000002"),
        );
        let env = crate::parse_envelope(r.body.as_deref().unwrap_or("").as_bytes()).unwrap();
        let sig = r
            .query
            .split('&')
            .next()
            .and_then(|p| p.strip_prefix("msg_signature="))
            .unwrap();
        assert_eq!(
            c.open(sig, "1700000000", "n1", &env.encrypt).unwrap(),
            b"<xml><A>1</A></xml>"
        );
        assert_eq!(percent_encode("a+b/c="), "a%2Bb%2Fc%3D");
    }
}
