//! `/api/docs`: the API described for people, from the same registry as `/api/openapi.json`,
//! readable without a key, under a strict CSP with its stylesheet served from the binary, and
//! behind the same in-flight cap as the rest of the API.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly"
)]

use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::common::{self, Backend, TestApp};

const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; base-uri 'none'; \
                   frame-ancestors 'none'";

/// `text` as the page's templates escape it.
fn escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;")
}

/// The `<article>` of the endpoint whose anchor is `id`.
fn article<'a>(page: &'a str, id: &str) -> &'a str {
    let start = page
        .find(&format!(r#"<article class="endpoint panel" id="{id}">"#))
        .unwrap_or_else(|| panic!("no article for {id}"));
    let len = page[start..].find("</article>").expect("article closed");
    &page[start..start + len]
}

async fn docs_page(app: &TestApp) -> String {
    let response = app.get("/api/docs").await;
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// Without any credentials: 200, HTML, the strict CSP, never cached; a Chinese page that links
/// the OpenAPI document and says how to authenticate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_docs_page_is_public_html_under_a_strict_csp() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let response = app.get("/api/docs").await;
    assert_eq!(response.status(), 200);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("content-type"), "text/html; charset=utf-8");
    assert_eq!(header("content-security-policy"), CSP);
    assert_eq!(header("cache-control"), "no-store");
    assert_eq!(header("x-content-type-options"), "nosniff");
    let page = response.text().await.unwrap();
    assert!(page.contains(r#"<html lang="zh-CN">"#));
    assert!(page.contains("<title>API 文档</title>"));
    assert!(page.contains(r#"<a href="/api/openapi.json">"#));
    assert!(page.contains("Authorization: Bearer &lt;密钥&gt;"));
    assert!(page.contains("scrm apikey create"));
    // The CSP allows no script and no inline style: the page must need neither.
    assert!(!page.contains("<script"), "no script");
    assert!(!page.contains("<style"), "no inline stylesheet");
    assert!(!page.contains("style="), "no inline style attribute");
    app.stop().await;
}

/// Every operation of `/api/openapi.json` has its section, with its method, full path, the
/// summary and who may call it as the document says; nothing else is listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_docs_list_every_operation_of_the_openapi_document() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let page = docs_page(&app).await;
    let document: Value = app.get("/api/openapi.json").await.json().await.unwrap();
    let paths = document["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            let id = op["operationId"].as_str().unwrap();
            let section = article(&page, id);
            let upper = method.to_uppercase();
            assert!(
                section.contains(&format!(
                    r#"<span class="method method-{method}">{upper}</span> <code class="path">{path}</code>"#
                )),
                "{upper} {path} not shown in {section}"
            );
            let summary = escaped(op["summary"].as_str().unwrap());
            assert!(
                section.contains(&format!(r#"<p class="summary">{summary}</p>"#)),
                "{upper} {path}: summary"
            );
            let who = escaped(
                op["description"]
                    .as_str()
                    .unwrap()
                    .strip_prefix("权限 / who: ")
                    .unwrap(),
            );
            assert!(
                section.contains(&format!(r#"<dd class="who">{who}</dd>"#)),
                "{upper} {path}: who"
            );
            // The table of contents links it.
            assert!(
                page.contains(&format!(r##"<a href="#{id}">"##)),
                "{id} in the contents"
            );
            // A ready-to-copy curl with the key.
            assert!(
                section.contains("Bearer $SCRM_API_KEY"),
                "{upper} {path}: curl"
            );
        }
    }
    assert!(
        operations > 50,
        "the registry has its endpoints: {operations}"
    );
    assert_eq!(
        page.matches(r#"<article class="endpoint panel""#).count(),
        operations,
        "one section per operation, no more"
    );
    app.stop().await;
}

/// An admin-only endpoint says so; a scoped one names its scope; query parameters, the request
/// schema and the curl example are shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_docs_say_who_may_call_and_how() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let page = docs_page(&app).await;

    let transfers = article(&page, "post_transfers");
    assert!(
        transfers.contains(r#"<dd class="who">admin</dd>"#),
        "{transfers}"
    );
    assert!(transfers.contains("<h4>请求体（JSON Schema）</h4>"));
    assert!(transfers.contains("curl -X POST &#34;$SCRM_URL/api/v1/transfers&#34;"));
    assert!(
        transfers.contains("-d &#39;{"),
        "an example body: {transfers}"
    );

    let notes = article(&page, "get_customers_external_user_id_notes");
    assert!(notes.contains("sales: 自己跟进的客户"), "{notes}");
    assert!(
        notes.contains("<td><code>limit</code></td><td>查询</td><td><code>integer (int64)</code></td><td>条数：1–200，默认 50</td>"),
        "{notes}"
    );
    assert!(notes.contains("<td><code>external_user_id</code></td><td>路径</td>"));
    assert!(notes.contains("$SCRM_URL/api/v1/customers/${EXTERNAL_USER_ID}/notes"));
    assert!(!notes.contains("请求体"), "a GET has no body");

    // Grouped by tag, with a Chinese heading, in the contents too.
    assert!(page.contains(r##"<a href="#tag-quick-replies">话术库</a>"##));
    app.stop().await;
}

/// The stylesheet the page links: 200, CSS, cached for a year; any other name is 404, for HEAD
/// as for GET.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_docs_stylesheet_is_served_from_the_binary() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let page = docs_page(&app).await;
    let start = page
        .find(r#"<link rel="stylesheet" href=""#)
        .expect("a stylesheet")
        + r#"<link rel="stylesheet" href=""#.len();
    let href = &page[start..start + page[start..].find('"').unwrap()];
    assert!(href.starts_with("/api/docs/assets/docs."), "{href}");
    assert!(href.ends_with(".css"), "{href}");

    let css = app.get(href).await;
    assert_eq!(css.status(), 200);
    assert_eq!(
        css.headers()["content-type"].to_str().unwrap(),
        "text/css; charset=utf-8"
    );
    assert_eq!(
        css.headers()["cache-control"].to_str().unwrap(),
        "public, max-age=31536000, immutable"
    );
    let body = css.text().await.unwrap();
    assert!(body.contains(".method-get"), "the page's stylesheet");

    let unknown = "/api/docs/assets/docs.000000000000.css";
    assert_eq!(app.get(unknown).await.status(), 404);
    let head = |path: String| app.client.head(format!("{}{path}", app.base_url)).send();
    assert_eq!(head(unknown.to_owned()).await.unwrap().status(), 404);
    assert_eq!(
        head("/api/docs/assets/console.css".to_owned())
            .await
            .unwrap()
            .status(),
        404,
        "only the docs' own assets"
    );
    app.stop().await;
}

/// The page quotes the limits in force, and is shed with the rest of the API when the in-flight
/// pool is full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_docs_quote_the_limits_and_share_the_api_pool() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        "[http]\napi_in_flight = 2\nbody_timeout_ms = 5000\napi_key_requests_per_minute = 600\n",
    )
    .await;
    let page = docs_page(&app).await;
    assert!(
        page.contains("每分钟最多 600 次请求"),
        "the configured rate"
    );
    assert!(page.contains("每 10 秒最多 100 次"));
    assert!(page.contains("须在 5 秒内传完"));

    let (_, key) = scrm::auth::create_key(
        &app.db,
        &common::corp(common::CORP),
        scrm::auth::Role::Admin,
        None,
        "test",
        scrm::platform::db::now_ms(),
    )
    .await
    .unwrap();
    let addr = app.base_url.trim_start_matches("http://").to_owned();
    // Two API requests that never finish their bodies hold the pool.
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST /api/v1/transfers HTTP/1.1\r\nHost: scrm\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        holders.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let shed = app.get("/api/docs").await;
    assert_eq!(shed.status(), 503, "the docs share the API's pool");
    assert_eq!(shed.headers()["retry-after"].to_str().unwrap(), "1");
    drop(holders);
    app.stop().await;
}
