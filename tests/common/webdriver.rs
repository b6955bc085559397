//! A small W3C WebDriver client for the browser tests: Debian's `chromium` driven by
//! `chromedriver` (both installed by `scripts/test.sh`), headless, one session per test.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A running chromedriver and one browser session.
pub struct Browser {
    driver: Child,
    http: reqwest::Client,
    session: String,
    base: String,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium of `width`×`height`. Panics (the test fails
    /// loudly) when either is missing.
    pub async fn start(width: u32, height: u32) -> Self {
        let chromium =
            std::env::var("SCRM_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
        let driver_bin = std::env::var("SCRM_TEST_CHROMEDRIVER")
            .unwrap_or_else(|_| "/usr/bin/chromedriver".to_owned());
        assert!(
            std::path::Path::new(&chromium).exists() && std::path::Path::new(&driver_bin).exists(),
            "browser tests need {chromium} and {driver_bin}: run scripts/test.sh (it installs Debian's \
             chromium and chromium-driver)"
        );
        let port = crate::common::free_port();
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = http
                .get(format!("{base}/status"))
                .send()
                .await
                .ok()
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().expect("profile dir").keep();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--hide-scrollbars", "--lang=zh-CN", "--force-device-scale-factor=1",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.display()),
                ]
            }
        }}});
        let answer: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("session json");
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {answer}"))
            .to_owned();
        let mut browser = Self {
            driver,
            http,
            session,
            base,
        };
        browser.resize(width, height).await;
        browser
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let answer: Value = req
            .send()
            .await
            .expect("webdriver")
            .json()
            .await
            .expect("webdriver json");
        answer["value"].clone()
    }

    /// Opens `url` (redirects followed by the browser).
    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// The window's inner size.
    pub async fn resize(&mut self, width: u32, height: u32) {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        )
        .await;
    }

    /// Runs `script` in the page and returns its value.
    pub async fn eval(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    /// Waits (10 s at most) until `condition` (a JS expression) is true; panics with the page's
    /// text otherwise.
    pub async fn wait_for(&self, what: &str, condition: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.eval(&format!("return !!({condition});")).await == json!(true) {
                return;
            }
            if Instant::now() > deadline {
                let text = self
                    .eval("return document.body ? document.body.innerText : '';")
                    .await;
                let url = self.eval("return location.href;").await;
                panic!("timed out waiting for {what} at {url}; the page shows: {text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The id of the first element matching `css`.
    async fn find(&self, css: &str) -> String {
        let found = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_owned()
    }

    /// Clicks the first element matching `css`.
    pub async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Types `text` into the first element matching `css`.
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Forgets every cookie (a new person at the same browser).
    pub async fn clear_cookies(&self) {
        self.call(reqwest::Method::DELETE, "/cookie", None).await;
    }

    /// On an open alert page of the console: acknowledge it with `comment`, then resolve it,
    /// waiting for the page to show each state.
    pub async fn acknowledge_and_resolve(&self, comment: &str) {
        self.type_into("form.steps textarea", comment).await;
        self.click("form.steps button[value='acknowledge']").await;
        self.wait_for(
            "acknowledged",
            "document.querySelector('.alert-head .state').innerText === '处理中'",
        )
        .await;
        self.click("form.steps button[value='resolve']").await;
        self.wait_for(
            "resolved",
            "document.querySelector('.alert-head .state').innerText === '已解决'",
        )
        .await;
    }

    /// Saves a PNG of the viewport to `target/screenshots/{name}.png`.
    pub async fn screenshot(&self, name: &str) {
        let png = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("screenshot"))
            .expect("png");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        std::fs::write(dir.join(format!("{name}.png")), bytes).expect("write screenshot");
    }

    /// Ends the session and the driver.
    pub async fn quit(mut self) {
        let url = format!("{}/session/{}", self.base, self.session);
        let _ = self.http.delete(url).send().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}
