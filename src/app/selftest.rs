//! The callback self-test: plays WeCom against a callback URL (ours, through whatever proxies
//! sit in front) and says precisely what is wrong. Callback set-up is where self-hosted installs
//! fail. Used by `scrm callback selftest` and the console's settings page.

use std::time::{Duration, Instant};

use wecom_sdk::{CallbackCrypto, sender};

/// WeCom gives up on a callback after this long.
const WECOM_DEADLINE: Duration = Duration::from_secs(5);
/// Slower than this works, but leaves little room.
const SLOW: Duration = Duration::from_secs(1);

/// One check's verdict.
#[derive(Debug)]
pub enum Verdict {
    /// It works.
    Pass(String),
    /// It works, with a caveat.
    Warn(String),
    /// It does not work: why, and what to change.
    Fail(String),
}

/// One check and its verdict.
#[derive(Debug)]
pub struct Check {
    /// What was checked (Chinese).
    pub name: &'static str,
    /// How it went.
    pub verdict: Verdict,
}

/// Plays WeCom against callback `url` of `corp` with `crypto`: a signed URL verification, a
/// signed test event (stored as an `scrm_selftest` event) and a forged request.
pub async fn check_all(
    url: &str,
    crypto: &CallbackCrypto,
    corp: &str,
) -> Result<Vec<Check>, reqwest::Error> {
    let client = reqwest::Client::builder()
        .timeout(WECOM_DEADLINE + Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    Ok(vec![
        Check {
            name: "URL 验证 (GET)",
            verdict: check_verification(&client, url, crypto).await,
        },
        Check {
            name: "事件推送 (POST)",
            verdict: check_event(&client, url, crypto, corp).await,
        },
        Check {
            name: "拒绝伪造签名",
            verdict: check_forgery(&client, url, crypto).await,
        },
    ])
}

/// Appends the standard path to a bare base URL.
pub fn callback_url(url: &str, corp: &str, app: &str) -> String {
    let trimmed = url.trim_end_matches('/');
    let after_scheme = trimmed.split_once("://").map_or(trimmed, |(_, rest)| rest);
    if after_scheme.contains('/') {
        trimmed.to_owned()
    } else {
        format!("{trimmed}/wecom/callback/{corp}/{app}")
    }
}

fn fresh_nonce() -> String {
    rand::random::<u32>().to_string()
}

fn now_secs() -> String {
    chrono::Utc::now().timestamp().to_string()
}

async fn send(
    client: &reqwest::Client,
    url: &str,
    request: &sender::CallbackRequest,
) -> Result<(u16, String, Duration), Verdict> {
    let full = format!(
        "{url}{}{}",
        if url.contains('?') { '&' } else { '?' },
        request.query
    );
    let started = Instant::now();
    let builder = match &request.body {
        Some(body) => client
            .post(&full)
            .header("content-type", "text/xml")
            .body(body.clone()),
        None => client.get(&full),
    };
    let response = builder.send().await.map_err(|e| {
        if e.is_timeout() {
            Verdict::Fail(format!(
                "超过 {} 秒未响应：企业微信会判定失败并重试",
                WECOM_DEADLINE.as_secs()
            ))
        } else if e.is_connect() {
            Verdict::Fail(format!(
                "无法连接：{}（检查地址、端口、防火墙与 HTTPS 证书）",
                error_chain(&e)
            ))
        } else {
            Verdict::Fail(format!("请求失败：{}", error_chain(&e)))
        }
    })?;
    let status = response.status().as_u16();
    let body = response
        .text()
        .await
        .map_err(|e| Verdict::Fail(format!("读取响应失败：{}", error_chain(&e))))?;
    Ok((status, body, started.elapsed()))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Explains a non-200 answer.
fn explain_status(status: u16, body: &str) -> Verdict {
    let hint = match status {
        404 => "路径不存在：检查回调 URL 中的企业 ID 与应用名，或反向代理的转发路径".to_owned(),
        403 if body.starts_with("receiveid_mismatch") => {
            "receiveid 不一致：服务器上该应用的 EncodingAESKey 属于另一个企业，或 URL 中的企业 ID 有误".to_owned()
        }
        403 if body.starts_with("stale_timestamp") => {
            "时间戳超出窗口：服务器时钟与本机相差过大，请校准时间 (NTP)".to_owned()
        }
        403 => "签名校验失败：服务器上的 Token 与本地配置不一致".to_owned(),
        400 if body.starts_with("decrypt_failed") || body.starts_with("illegal_buffer") => {
            "解密失败：服务器上的 EncodingAESKey 与本地配置不一致".to_owned()
        }
        301 | 302 | 307 | 308 => "被重定向：企业微信不跟随重定向，请填写最终地址（注意 http/https）".to_owned(),
        502..=504 => "网关错误：反向代理无法连到 scrm 服务".to_owned(),
        _ => format!("HTTP {status}"),
    };
    let first_line = body
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(120)
        .collect::<String>();
    Verdict::Fail(format!("{hint}（HTTP {status}，响应：{first_line:?}）"))
}

fn timed(elapsed: Duration, ok: &str) -> Verdict {
    let ms = elapsed.as_millis();
    if elapsed > WECOM_DEADLINE {
        Verdict::Fail(format!("响应用时 {ms} ms，超过企业微信的 5 秒期限"))
    } else if elapsed > SLOW {
        Verdict::Warn(format!("{ok}，但用时 {ms} ms，离 5 秒期限太近"))
    } else {
        Verdict::Pass(format!("{ok}，用时 {ms} ms"))
    }
}

async fn check_verification(
    client: &reqwest::Client,
    url: &str,
    crypto: &CallbackCrypto,
) -> Verdict {
    let echo = format!(
        "{}",
        1_000_000_000_000_000_000u64 + rand::random::<u64>() % 8_000_000_000_000_000_000
    );
    let request = sender::verification(crypto, &echo, &now_secs(), &fresh_nonce());
    let (status, body, elapsed) = match send(client, url, &request).await {
        Ok(answer) => answer,
        Err(verdict) => return verdict,
    };
    if status != 200 {
        return explain_status(status, &body);
    }
    if body == echo {
        return timed(elapsed, "返回了解密后的 echostr");
    }
    if body.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}') == echo {
        return Verdict::Fail(
            "返回内容含多余的换行、空格或 BOM：必须只返回明文 echostr".to_owned(),
        );
    }
    if body.contains(&echo) {
        return Verdict::Fail(
            "返回内容被包装（JSON/HTML/引号）：必须只返回明文 echostr".to_owned(),
        );
    }
    let encrypted = request
        .query
        .split('&')
        .find_map(|p| p.strip_prefix("echostr="))
        .unwrap_or("");
    if !encrypted.is_empty() && (body.contains(encrypted) || body.len() > 40) {
        return Verdict::Fail("返回的不是解密后的 echostr（可能原样返回了密文）".to_owned());
    }
    Verdict::Fail(format!(
        "返回内容与 echostr 不一致：{:?}",
        body.chars().take(80).collect::<String>()
    ))
}

async fn check_event(
    client: &reqwest::Client,
    url: &str,
    crypto: &CallbackCrypto,
    corp: &str,
) -> Verdict {
    let now = now_secs();
    let plaintext = format!(
        "<xml><ToUserName><![CDATA[{corp}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>{now}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[scrm_selftest]]></Event><SelftestId><![CDATA[{}]]></SelftestId></xml>",
        fresh_nonce()
    );
    let request = sender::event(crypto, &plaintext, &now, &fresh_nonce(), None);
    match send(client, url, &request).await {
        Err(verdict) => verdict,
        Ok((200, body, elapsed)) if body.is_empty() || body == "success" => {
            timed(elapsed, "测试事件已被接收")
        }
        Ok((200, body, _)) => Verdict::Fail(format!(
            "HTTP 200 但响应不是 success 或空：{:?}",
            body.chars().take(80).collect::<String>()
        )),
        Ok((status, body, _)) => explain_status(status, &body),
    }
}

async fn check_forgery(client: &reqwest::Client, url: &str, crypto: &CallbackCrypto) -> Verdict {
    let mut request = sender::verification(crypto, "1234567890", &now_secs(), &fresh_nonce());
    // Flip the signature: a server that still answers 200 accepts anyone's events.
    request.query = request
        .query
        .replacen("msg_signature=", "msg_signature=0", 1);
    match send(client, url, &request).await {
        Err(verdict) => verdict,
        Ok((status, _, _)) if (400..500).contains(&status) => {
            Verdict::Pass(format!("伪造签名被拒绝 (HTTP {status})"))
        }
        Ok((status, _, _)) => Verdict::Fail(format!(
            "伪造签名的请求得到 HTTP {status}：服务器没有校验签名，任何人都能伪造事件"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_get_the_standard_path() {
        assert_eq!(
            callback_url("http://h:8080", "ww1", "a"),
            "http://h:8080/wecom/callback/ww1/a"
        );
        assert_eq!(
            callback_url("https://h/", "ww1", "a"),
            "https://h/wecom/callback/ww1/a"
        );
        assert_eq!(callback_url("https://h/x/cb", "ww1", "a"), "https://h/x/cb");
    }
}
