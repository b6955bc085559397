//! The JS-SDK signature (§6.2): the same algorithm for `wx.config` (signed with the corp
//! jsapi_ticket) and `wx.agentConfig` (signed with the app's agent_config ticket).

use sha1::{Digest, Sha1};

/// `lowercase hex(SHA-1("jsapi_ticket=TICKET&noncestr=NONCE&timestamp=TS&url=URL"))`. `url` is
/// the page URL exactly as the browser has it, without the `#fragment`; `timestamp` is in seconds.
pub fn signature(ticket: &str, noncestr: &str, timestamp: i64, url: &str) -> String {
    let text = format!("jsapi_ticket={ticket}&noncestr={noncestr}&timestamp={timestamp}&url={url}");
    Sha1::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The page URL to sign: everything before the first `#`.
pub fn page_url(href: &str) -> &str {
    href.split('#').next().unwrap_or(href)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICKET: &str =
        "sM4AOVdWfPE4DxkXGEs8VMCPGGVi4C3VM0P37wVUCFvkVAy_90u5h9nbSlYy3-Sl-HhTdfl2fzFy1AOcHKP7qg";

    #[test]
    fn official_vectors() {
        assert_eq!(
            signature(
                TICKET,
                "Wm3WZYTPz0wzccnW",
                1_414_587_457,
                "http://mp.weixin.qq.com?params=value"
            ),
            "0f9de62fce790f9a083d5c99e95740ceb90c27ed"
        );
        assert_eq!(
            signature(
                TICKET,
                "Wm3WZYTPz0wzccnW",
                1_414_587_457,
                "http://mp.weixin.qq.com"
            ),
            "f4d90daf4b3bca3078ab155816175ba34c443a7b"
        );
    }

    #[test]
    fn the_fragment_is_not_signed() {
        assert_eq!(
            page_url("https://a.example/s?x=1#/customer"),
            "https://a.example/s?x=1"
        );
        assert_eq!(page_url("https://a.example/s"), "https://a.example/s");
    }
}
