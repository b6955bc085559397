//! `/api/docs`: the JSON API described as one server-rendered page, for people; the machines
//! read `/api/openapi.json`. Both are built in [`super::router`] from the same [`Endpoint`] list
//! that registers the routes, so the page cannot name a path, a method or a role the router
//! does not have.
//!
//! The page is rendered once, when the router is built (it depends only on the endpoint list and
//! the `[http]` limits it quotes), and served with a strict Content-Security-Policy: no script at
//! all, and styles only from our own stylesheet under `/api/docs/assets/`, named by its content's
//! hash and cached for a year like the console's. Reading it needs no key: it describes the API
//! and holds no data. It sits behind the same in-flight cap as every non-callback route.

use std::sync::{Arc, LazyLock};

use askama::Template;
use axum::Router;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::Value;

use super::{Endpoint, MAX_BODY_BYTES, operation_id, path_params};
use crate::http::{AppState, web};
use crate::platform::config::HttpSettings;

/// Where the page is served.
const PAGE_PATH: &str = "/api/docs";

/// The page's policy: no script, nothing from elsewhere, no framing.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; base-uri 'none'; \
                   frame-ancestors 'none'";

static CSS: LazyLock<web::Asset> = LazyLock::new(|| {
    web::Asset::named(
        "docs",
        "css",
        include_str!("../../../assets/api/docs.css"),
        "text/css; charset=utf-8",
    )
});

/// `/api/docs` and its stylesheet, the page rendered from `endpoints` now.
pub(super) fn router(endpoints: &[Endpoint], http: &HttpSettings) -> Router<Arc<AppState>> {
    let page = match render(endpoints, http) {
        Ok(html) => Some(Bytes::from(html)),
        Err(e) => {
            tracing::error!(error = %e, "API docs: template failed");
            None
        }
    };
    Router::new()
        .route(
            PAGE_PATH,
            get(move || {
                let page = page.clone();
                async move { serve_page(page) }
            }),
        )
        .route("/api/docs/assets/{name}", get(asset))
}

fn serve_page(page: Option<Bytes>) -> Response {
    let Some(page) = page else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "文档生成失败 / docs unavailable",
        )
            .into_response();
    };
    let mut headers = web::page_headers();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    (headers, page).into_response()
}

async fn asset(Path(name): Path<String>) -> Response {
    web::serve(&[&*CSS], &name)
}

// ---------------------------------------------------------------------------------------------
// The page
// ---------------------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "api/docs.html")]
struct DocsPage<'a> {
    css: String,
    version: &'static str,
    groups: &'a [Group],
    endpoint_count: usize,
    per_minute: u64,
    per_ten_seconds: u64,
    body_limit_mib: usize,
    body_timeout_secs: u64,
}

/// The endpoints of one tag.
struct Group {
    /// The anchor (`tag-customers`).
    anchor: String,
    /// The heading (`客户`).
    title: String,
    /// The tag as the OpenAPI document names it.
    tag: String,
    endpoints: Vec<EndpointView>,
}

/// One endpoint as the page shows it.
struct EndpointView {
    /// The operation id of the OpenAPI document, as the anchor.
    anchor: String,
    /// `GET`.
    method: String,
    /// `get`, for the badge's colour.
    method_class: String,
    /// The full path, `/api/v1/…`.
    path: String,
    summary: String,
    who: String,
    status: u16,
    params: Vec<ParamView>,
    request: Option<String>,
    response: String,
    curl: String,
}

struct ParamView {
    name: String,
    /// `路径` or `查询`.
    location: &'static str,
    type_label: String,
    description: String,
}

fn render(endpoints: &[Endpoint], http: &HttpSettings) -> Result<String, askama::Error> {
    let groups = groups(endpoints);
    DocsPage {
        css: format!("/api/docs/assets/{}", CSS.name),
        version: env!("CARGO_PKG_VERSION"),
        groups: &groups,
        endpoint_count: endpoints.len(),
        per_minute: http.api_key_requests_per_minute,
        per_ten_seconds: http.api_key_requests_per_minute.div_ceil(6),
        body_limit_mib: MAX_BODY_BYTES >> 20,
        body_timeout_secs: http.body_timeout_ms.div_ceil(1000),
    }
    .render()
}

/// The endpoints grouped by tag (by the first path segment when an endpoint has none), groups
/// and endpoints in the order the registry lists them.
fn groups(endpoints: &[Endpoint]) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    for e in endpoints {
        let tag = if e.tag.is_empty() {
            e.path
                .split('/')
                .find(|s| !s.is_empty())
                .unwrap_or("api")
                .to_owned()
        } else {
            e.tag.to_owned()
        };
        let view = view(e);
        match groups.iter_mut().find(|g| g.tag == tag) {
            Some(group) => group.endpoints.push(view),
            None => groups.push(Group {
                anchor: format!("tag-{tag}"),
                title: group_title(&tag).unwrap_or(&tag).to_owned(),
                tag,
                endpoints: vec![view],
            }),
        }
    }
    groups
}

fn view(e: &Endpoint) -> EndpointView {
    let mut params: Vec<ParamView> = path_params(e.path)
        .into_iter()
        .map(|name| ParamView {
            name: name.to_owned(),
            location: "路径",
            type_label: "string".to_owned(),
            description: "必填".to_owned(),
        })
        .collect();
    params.extend(e.query.iter().map(|(name, schema, description)| ParamView {
        name: (*name).to_owned(),
        location: "查询",
        type_label: type_label(schema),
        description: param_description(
            description,
            schema["description"].as_str().unwrap_or_default(),
        ),
    }));
    EndpointView {
        anchor: operation_id(&e.method, e.path),
        method: e.method.as_str().to_owned(),
        method_class: e.method.as_str().to_lowercase(),
        path: format!("/api/v1{}", e.path),
        summary: e.summary.to_owned(),
        who: e.who(),
        status: e.status,
        params,
        request: e.request.as_ref().map(pretty),
        response: pretty(&e.response),
        curl: curl_example(&e.method, e.path, e.request.as_ref()),
    }
}

fn pretty(schema: &Value) -> String {
    serde_json::to_string_pretty(schema).unwrap_or_else(|_| schema.to_string())
}

/// The Chinese heading of a tag the registry uses.
fn group_title(tag: &str) -> Option<&'static str> {
    Some(match tag {
        "customers" => "客户",
        "tags" => "标签（企业标签、个人标签、自动打标签规则）",
        "followup" => "跟进（跟进记录、提醒、阶段）",
        "alerts" => "合规告警",
        "archive" => "会话存档",
        "quick-replies" => "话术库",
        "transfers" => "离职继承",
        "operations" => "运行状态（任务、发往企业微信的变更）",
        _ => return None,
    })
}

/// A parameter's description: the registry gives a short one and the schema often a longer one
/// (`条数` and `1–500，默认 50`); show both, saying nothing twice (`分页游标` and
/// `分页：上一页最后一个 id` read `分页游标：上一页最后一个 id`).
fn param_description(short: &str, schema: &str) -> String {
    if schema.is_empty() || short.contains(schema) {
        return short.to_owned();
    }
    if short.is_empty() {
        return schema.to_owned();
    }
    match schema.split_once('：') {
        Some((head, tail)) if short.starts_with(head) => format!("{short}：{tail}"),
        _ => format!("{short}：{schema}"),
    }
}

/// A JSON Schema's type in a few characters: `integer (int64)`, `string: a | b`,
/// `array<string>`, `integer (int64) | null`.
fn type_label(schema: &Value) -> String {
    if let Some(alternatives) = schema["anyOf"].as_array().or(schema["oneOf"].as_array()) {
        return alternatives
            .iter()
            .map(type_label)
            .collect::<Vec<_>>()
            .join(" | ");
    }
    if let Some(values) = schema["enum"].as_array() {
        let values: Vec<&str> = values.iter().filter_map(Value::as_str).collect();
        return format!("string: {}", values.join(" | "));
    }
    match schema["type"].as_str() {
        Some("array") => format!("array<{}>", type_label(&schema["items"])),
        Some(t) => match schema["format"].as_str() {
            Some(format) => format!("{t} ({format})"),
            None => t.to_owned(),
        },
        None => "any".to_owned(),
    }
}

/// A request body of the right shape for `schema`: every property present, strings empty (or the
/// first allowed value), numbers 0, booleans false, one element per array.
fn example(schema: &Value) -> Value {
    if let Some(alternatives) = schema["anyOf"].as_array().or(schema["oneOf"].as_array()) {
        return alternatives
            .iter()
            .find(|s| s["type"] != "null")
            .map_or(Value::Null, example);
    }
    if let Some(first) = schema["enum"].as_array().and_then(|v| v.first()) {
        return first.clone();
    }
    match schema["type"].as_str() {
        Some("object") => Value::Object(
            schema["properties"]
                .as_object()
                .map(|props| props.iter().map(|(k, v)| (k.clone(), example(v))).collect())
                .unwrap_or_default(),
        ),
        Some("array") => Value::Array(vec![example(&schema["items"])]),
        Some("string") => Value::String(String::new()),
        Some("integer" | "number") => Value::from(0),
        Some("boolean") => Value::Bool(false),
        _ => Value::Null,
    }
}

/// A `curl` command for the endpoint, to paste into a POSIX shell once `SCRM_URL` and
/// `SCRM_API_KEY` are set: path parameters become shell variables (`{id}` → `${ID}`; curl would
/// read braces as a URL pattern), a body is an example of the request's schema.
fn curl_example(method: &Method, path: &str, request: Option<&Value>) -> String {
    let mut url = String::from("$SCRM_URL/api/v1");
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        url.push('/');
        match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(name) => {
                url.push_str("${");
                url.push_str(&name.to_uppercase());
                url.push('}');
            }
            None => url.push_str(segment),
        }
    }
    let mut lines = vec![if method == Method::GET {
        format!("curl \"{url}\"")
    } else {
        format!("curl -X {method} \"{url}\"")
    }];
    lines.push("-H \"Authorization: Bearer $SCRM_API_KEY\"".to_owned());
    if let Some(schema) = request {
        lines.push("-H 'Content-Type: application/json'".to_owned());
        lines.push(format!("-d {}", shell_quote(&example(schema).to_string())));
    }
    lines.join(" \\\n  ")
}

/// `s` as one single-quoted shell word.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::http::api::schema::{array, int, nullable, object, one_of, string};

    #[test]
    fn curl_of_a_get_names_the_key_and_turns_path_parameters_into_variables() {
        assert_eq!(
            curl_example(&Method::GET, "/customers/{external_user_id}/notes", None),
            "curl \"$SCRM_URL/api/v1/customers/${EXTERNAL_USER_ID}/notes\" \\\n  \
             -H \"Authorization: Bearer $SCRM_API_KEY\""
        );
    }

    #[test]
    fn curl_of_a_post_sends_an_example_body_of_the_schema() {
        let schema = object(
            &[
                ("name", string("分组名")),
                ("position", int("排序")),
                ("kind", one_of(&["customer", "group_chat"], "类别")),
                ("user_ids", array(string("成员"))),
                ("due_at_ms", nullable(int("到期"))),
            ],
            &["name"],
        );
        let curl = curl_example(&Method::POST, "/transfers/{id}/retry", Some(&schema));
        let lines: Vec<&str> = curl.split(" \\\n  ").collect();
        assert_eq!(
            lines,
            [
                "curl -X POST \"$SCRM_URL/api/v1/transfers/${ID}/retry\"",
                "-H \"Authorization: Bearer $SCRM_API_KEY\"",
                "-H 'Content-Type: application/json'",
                r#"-d '{"due_at_ms":0,"kind":"customer","name":"","position":0,"user_ids":[""]}'"#,
            ]
        );
        // The body is the JSON the schema describes.
        let body = lines[3]
            .strip_prefix("-d '")
            .and_then(|s| s.strip_suffix('\''))
            .unwrap();
        let parsed: Value = serde_json::from_str(body).unwrap();
        assert_eq!(parsed["user_ids"], json!([""]));
    }

    #[test]
    fn a_body_with_a_quote_stays_one_shell_word() {
        let schema = one_of(&["it's"], "");
        let curl = curl_example(&Method::PUT, "/x", Some(&schema));
        assert!(curl.ends_with(r#"-d '"it'\''s"'"#), "{curl}");
    }

    #[test]
    fn types_read_as_short_labels() {
        assert_eq!(type_label(&int("")), "integer (int64)");
        assert_eq!(type_label(&string("")), "string");
        assert_eq!(
            type_label(&one_of(&["open", "done"], "")),
            "string: open | done"
        );
        assert_eq!(type_label(&nullable(int(""))), "integer (int64) | null");
        assert_eq!(type_label(&array(string(""))), "array<string>");
        assert_eq!(type_label(&json!({})), "any");
    }

    #[test]
    fn parameter_descriptions_are_said_once() {
        assert_eq!(
            param_description("条数", "1–500，默认 50"),
            "条数：1–500，默认 50"
        );
        assert_eq!(
            param_description("分页", "分页：比该 id 小"),
            "分页：比该 id 小"
        );
        assert_eq!(
            param_description("分页游标", "分页：只要 id 小于它的"),
            "分页游标：只要 id 小于它的"
        );
        assert_eq!(param_description("状态", "状态"), "状态");
        assert_eq!(param_description("true：一并删除", ""), "true：一并删除");
        assert_eq!(param_description("", "成员"), "成员");
    }

    #[test]
    fn every_endpoint_is_in_a_group_under_its_operation_id() {
        let all = super::super::endpoints();
        let groups = groups(&all);
        let listed: Vec<&str> = groups
            .iter()
            .flat_map(|g| g.endpoints.iter().map(|e| e.anchor.as_str()))
            .collect();
        assert_eq!(listed.len(), all.len());
        for e in &all {
            assert!(listed.contains(&operation_id(&e.method, e.path).as_str()));
        }
        for g in &groups {
            assert!(
                group_title(&g.tag).is_some(),
                "tag {} has no Chinese heading",
                g.tag
            );
        }
    }

    #[test]
    fn untagged_endpoints_are_grouped_by_their_first_path_segment() {
        let untagged = Endpoint::new(Method::GET, "/widgets/{id}", "一个部件", get(|| async {}));
        let groups = groups(std::slice::from_ref(&untagged));
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].anchor, "tag-widgets");
        assert_eq!(groups[0].title, "widgets");
    }
}
