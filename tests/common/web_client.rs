//! A browser without a page engine, for HTTP-level tests of the sidebar and the console: cookies
//! kept by hand (and checked to be HttpOnly), redirects left to the test.

use std::collections::HashMap;

use serde_json::Value;

/// A browser: cookies kept by hand, redirects followed by the test.
pub struct Browser {
    http: reqwest::Client,
    pub cookies: HashMap<String, String>,
    base: String,
}

pub struct Answer {
    pub status: u16,
    pub location: Option<String>,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Answer {
    /// The value of the first hidden field `name` of the page's forms (`csrf`: the session's
    /// token every form carries).
    pub fn field(&self, name: &str) -> String {
        self.text
            .split(&format!("name=\"{name}\" value=\""))
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_else(|| panic!("a form with the field {name}: {}", self.text))
            .to_owned()
    }
}

impl Browser {
    pub fn new(base: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: HashMap::new(),
            base: base.to_owned(),
        }
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn keep(&mut self, r: reqwest::Response) -> Answer {
        for c in r.headers().get_all(reqwest::header::SET_COOKIE) {
            let c = c.to_str().unwrap();
            let (kv, attrs) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = kv.split_once('=').unwrap();
            if attrs.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_owned(), v.to_owned());
            }
            assert!(attrs.contains("HttpOnly"), "{c}");
        }
        Answer {
            status: r.status().as_u16(),
            location: r
                .headers()
                .get(reqwest::header::LOCATION)
                .map(|l| l.to_str().unwrap().to_owned()),
            headers: r.headers().clone(),
            text: r.text().await.unwrap(),
        }
    }

    pub async fn get(&mut self, path: &str) -> Answer {
        let r = self
            .http
            .get(self.url(path))
            .header(reqwest::header::COOKIE, self.cookie_header())
            .send()
            .await
            .unwrap();
        self.keep(r).await
    }

    pub async fn post(&mut self, path: &str, body: Value, csrf: Option<&str>) -> Answer {
        let mut req = self
            .http
            .post(self.url(path))
            .header(reqwest::header::COOKIE, self.cookie_header())
            .json(&body);
        if let Some(token) = csrf {
            req = req.header("X-CSRF-Token", token);
        }
        let r = req.send().await.unwrap();
        self.keep(r).await
    }

    /// Posts an HTML form (`application/x-www-form-urlencoded`).
    pub async fn post_form(&mut self, path: &str, fields: &[(&str, &str)]) -> Answer {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let r = self
            .http
            .post(self.url(path))
            .header(reqwest::header::COOKIE, self.cookie_header())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await
            .unwrap();
        self.keep(r).await
    }
}
