//! The API client against a small scripted WeCom stand-in (an axum app on 127.0.0.1:0): token
//! single-flight within and across instances, token errors, bad secrets, retries, 45009 blocks,
//! client-side limits, timeouts of writes, oversized requests, request JSON, lenient responses,
//! and secrets kept out of Debug output, errors and logs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "the stand-in server and helpers are test code; a failure should stop the test loudly"
)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use wecom_sdk::api::{
    AddCorpTagRequest, ApiConfig, ApiError, AppCredentials, AppMessage, GroupChatListRequest,
    MessageBody, NewTag, RateLimits, RemarkRequest, TransferMode, WecomClient,
};
use wecom_sdk::coord::{CoordError, Coordinator, MemoryCoordinator};
use wecom_sdk::{ChatId, CorpId, ExternalUserId, Secret, TagId, UserId};

const CORP: &str = "ww1436e0e65a779aee";
const SECRET: &str = "contact-secret-0123456789abcdef";
const OTHER_SECRET: &str = "app-secret-fedcba9876543210";
const FOLLOW: &str = "externalcontact/get_follow_user_list";

// ---------------------------------------------------------------------------------------------
// The WeCom stand-in

#[derive(Clone)]
enum Reply {
    Json(Value),
    Status(u16),
    Garbage,
    Silence(Duration),
}

fn errcode(code: i64) -> Reply {
    Reply::Json(json!({"errcode": code, "errmsg": format!("scripted {code}")}))
}

#[derive(Debug, Clone)]
struct Seen {
    api: String,
    query: HashMap<String, String>,
    body: String,
}

impl Seen {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

struct Fake {
    /// secret → app name used in the tokens it gets.
    secrets: HashMap<String, String>,
    gettoken_delay: Duration,
    expires_in: AtomicI64,
    script: Mutex<HashMap<String, VecDeque<Reply>>>,
    answers: Mutex<HashMap<String, Value>>,
    seen: Mutex<Vec<Seen>>,
    issued: AtomicUsize,
    valid: Mutex<HashSet<String>>,
}

impl Fake {
    fn new() -> Self {
        Self::with_delay(Duration::ZERO)
    }

    fn with_delay(gettoken_delay: Duration) -> Self {
        Self {
            secrets: HashMap::from([
                (SECRET.to_owned(), "contact".to_owned()),
                (OTHER_SECRET.to_owned(), "app".to_owned()),
            ]),
            gettoken_delay,
            expires_in: AtomicI64::new(7200),
            script: Mutex::default(),
            answers: Mutex::default(),
            seen: Mutex::default(),
            issued: AtomicUsize::new(0),
            valid: Mutex::default(),
        }
    }

    fn script(&self, api: &str, replies: impl IntoIterator<Item = Reply>) {
        self.script
            .lock()
            .unwrap()
            .entry(api.to_owned())
            .or_default()
            .extend(replies);
    }

    fn answer(&self, api: &str, body: Value) {
        self.answers.lock().unwrap().insert(api.to_owned(), body);
    }

    fn seen(&self, api: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.api == api)
            .cloned()
            .collect()
    }

    fn calls(&self, api: &str) -> usize {
        self.seen(api).len()
    }

    fn total_calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn tokens_issued(&self) -> usize {
        self.issued.load(Ordering::SeqCst)
    }
}

async fn render(reply: Reply) -> Response {
    match reply {
        Reply::Json(value) => axum::Json(value).into_response(),
        Reply::Status(code) => (
            StatusCode::from_u16(code).unwrap(),
            "<html>bad gateway</html>",
        )
            .into_response(),
        Reply::Garbage => (
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body>运营商劫持</body></html>",
        )
            .into_response(),
        Reply::Silence(pause) => {
            tokio::time::sleep(pause).await;
            axum::Json(json!({"errcode": 0, "errmsg": "ok"})).into_response()
        }
    }
}

async fn handle(
    State(fake): State<Arc<Fake>>,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let api = uri
        .path()
        .strip_prefix("/cgi-bin/")
        .unwrap_or(uri.path())
        .to_owned();
    fake.seen.lock().unwrap().push(Seen {
        api: api.clone(),
        query: query.clone(),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let scripted = fake
        .script
        .lock()
        .unwrap()
        .get_mut(&api)
        .and_then(VecDeque::pop_front);
    if let Some(reply) = scripted {
        return render(reply).await;
    }
    if api == "gettoken" {
        tokio::time::sleep(fake.gettoken_delay).await;
        let app = query
            .get("corpsecret")
            .and_then(|s| fake.secrets.get(s))
            .filter(|_| query.get("corpid").map(String::as_str) == Some(CORP));
        let Some(app) = app else {
            return render(Reply::Json(
                json!({"errcode": 40001, "errmsg": "invalid credential"}),
            ))
            .await;
        };
        let n = fake.issued.fetch_add(1, Ordering::SeqCst) + 1;
        let token = format!("tok-{app}-{n}");
        fake.valid.lock().unwrap().insert(token.clone());
        let expires_in = fake.expires_in.load(Ordering::SeqCst);
        return render(Reply::Json(json!({
            "errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": expires_in
        })))
        .await;
    }
    let token_ok = query
        .get("access_token")
        .is_some_and(|t| fake.valid.lock().unwrap().contains(t));
    if !token_ok {
        return render(errcode(40014)).await;
    }
    let answer = fake
        .answers
        .lock()
        .unwrap()
        .get(&api)
        .cloned()
        .unwrap_or_else(|| json!({"errcode": 0, "errmsg": "ok"}));
    render(Reply::Json(answer)).await
}

async fn serve(fake: Fake) -> (Arc<Fake>, String) {
    let fake = Arc::new(fake);
    fake.answer(
        FOLLOW,
        json!({"errcode": 0, "errmsg": "ok", "follow_user": ["zhangsan", "lisi"]}),
    );
    fake.answer(
        "message/send",
        json!({"errcode": 0, "errmsg": "ok", "invaliduser": "", "msgid": "msg-1"}),
    );
    let router = axum::Router::new()
        .fallback(handle)
        .with_state(Arc::clone(&fake));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (fake, format!("http://{addr}/cgi-bin/"))
}

fn config(base_url: &str) -> ApiConfig {
    ApiConfig {
        base_url: base_url.to_owned(),
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(1),
        max_retries: 3,
        retry_base: Duration::from_millis(2),
        retry_max: Duration::from_millis(10),
        ..ApiConfig::default()
    }
}

fn client(base_url: &str) -> WecomClient {
    WecomClient::new(config(base_url), Arc::new(MemoryCoordinator::new())).unwrap()
}

fn app_with(secret: &str) -> AppCredentials {
    AppCredentials::new(
        CorpId::try_from(CORP).unwrap(),
        Secret::new(secret.to_owned()),
        Some(1_000_002),
    )
}

fn app() -> AppCredentials {
    app_with(SECRET)
}

fn user(id: &str) -> UserId {
    UserId::try_from(id).unwrap()
}

fn customer(id: &str) -> ExternalUserId {
    ExternalUserId::try_from(id).unwrap()
}

fn text_to(userid: &str) -> AppMessage {
    AppMessage::to_users(
        1_000_002,
        vec![user(userid)],
        MessageBody::Text {
            content: "客户王总已被李四删除，请关注。".to_owned(),
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Tokens

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_calls_in_one_process_fetch_one_token() {
    let (fake, base) = serve(Fake::with_delay(Duration::from_millis(50))).await;
    let client = client(&base);
    let app = app();

    let calls = (0..100).map(|_| {
        let (client, app) = (client.clone(), app.clone());
        tokio::spawn(async move { client.get_follow_user_list(&app).await })
    });
    let results = futures_join(calls).await;

    for result in results {
        assert_eq!(result.unwrap(), vec![user("zhangsan"), user("lisi")]);
    }
    assert_eq!(
        fake.tokens_issued(),
        1,
        "one gettoken for 100 concurrent callers"
    );
    assert_eq!(fake.calls("gettoken"), 1);
    assert_eq!(fake.calls(FOLLOW), 100);
    assert!(
        fake.seen(FOLLOW)
            .iter()
            .all(|s| s.query.get("access_token").map(String::as_str) == Some("tok-contact-1"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_sharing_a_coordinator_fetch_one_token() {
    let (fake, base) = serve(Fake::with_delay(Duration::from_millis(100))).await;
    let coord: Arc<dyn Coordinator> = Arc::new(MemoryCoordinator::new());
    let first = WecomClient::new(config(&base), Arc::clone(&coord)).unwrap();
    let second = WecomClient::new(config(&base), Arc::clone(&coord)).unwrap();
    let app = app();

    let calls = (0..40).map(|i| {
        let client = if i % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        let app = app.clone();
        tokio::spawn(async move { client.access_token(&app).await })
    });
    let tokens: HashSet<String> = futures_join(calls)
        .await
        .into_iter()
        .map(|t| t.unwrap().expose().clone())
        .collect();

    assert_eq!(
        fake.calls("gettoken"),
        1,
        "the coordinator lock makes one refresher"
    );
    assert_eq!(tokens, HashSet::from(["tok-contact-1".to_owned()]));
    assert_eq!(
        coord.get(&app.token_cache_key()).await.unwrap().as_deref(),
        Some("tok-contact-1")
    );
}

#[tokio::test]
async fn a_rejected_token_is_dropped_refetched_once_and_the_call_retried_once() {
    for code in [42001, 40014, 40082] {
        let (fake, base) = serve(Fake::new()).await;
        let client = client(&base);
        let app = app();
        fake.script(FOLLOW, [errcode(code)]);

        let users = client.get_follow_user_list(&app).await.unwrap();

        assert_eq!(users.len(), 2, "{code}");
        assert_eq!(fake.calls("gettoken"), 2, "{code}: one refetch");
        let seen = fake.seen(FOLLOW);
        assert_eq!(seen.len(), 2, "{code}: one retry");
        assert_eq!(seen[0].query["access_token"], "tok-contact-1");
        assert_eq!(
            seen[1].query["access_token"], "tok-contact-2",
            "{code}: retried with the new token"
        );
        assert_eq!(
            client.access_token(&app).await.unwrap().expose(),
            "tok-contact-2"
        );
    }
}

#[tokio::test]
async fn a_token_error_twice_in_a_row_is_returned_not_looped() {
    let (fake, base) = serve(Fake::new()).await;
    let client = client(&base);
    fake.script(FOLLOW, [errcode(42001), errcode(42001)]);

    let error = client.get_follow_user_list(&app()).await.unwrap_err();

    assert_eq!(error.errcode(), Some(42001));
    assert_eq!(fake.calls("gettoken"), 2);
    assert_eq!(fake.calls(FOLLOW), 2);
}

#[tokio::test]
async fn a_bad_secret_is_reported_after_exactly_one_gettoken() {
    let (fake, base) = serve(Fake::new()).await;
    let client = client(&base);
    let bad = app_with("wrong-secret-000");

    let first = client.get_follow_user_list(&bad).await.unwrap_err();
    let second = client.get_follow_user_list(&bad).await.unwrap_err();

    assert!(
        matches!(
            &first,
            ApiError::Wecom {
                api: "gettoken",
                errcode: 40001,
                ..
            }
        ),
        "{first:?}"
    );
    assert_eq!(second.errcode(), Some(40001));
    assert!(!first.is_retryable());
    assert_eq!(
        fake.calls("gettoken"),
        1,
        "never loop on gettoken with a bad secret"
    );
    assert_eq!(fake.calls(FOLLOW), 0);
    // Another app of the same corp is not affected.
    assert!(client.get_follow_user_list(&app()).await.is_ok());
}

#[tokio::test]
async fn concurrent_callers_share_one_failed_gettoken() {
    let (fake, base) = serve(Fake::with_delay(Duration::from_millis(50))).await;
    let client = client(&base);
    fake.script("gettoken", std::iter::repeat_n(Reply::Status(503), 4));
    let app = app();

    let calls = (0..20).map(|_| {
        let (client, app) = (client.clone(), app.clone());
        tokio::spawn(async move { client.access_token(&app).await })
    });
    for result in futures_join(calls).await {
        assert!(matches!(
            result,
            Err(ApiError::Http {
                api: "gettoken",
                status: 503
            })
        ));
    }
    assert_eq!(
        fake.calls("gettoken"),
        4,
        "one refresh with its retries, not one per caller"
    );
}

#[tokio::test]
async fn apps_of_one_corp_have_their_own_tokens() {
    let (fake, base) = serve(Fake::new()).await;
    let client = client(&base);
    let contact = app_with(SECRET);
    let other = app_with(OTHER_SECRET);

    client.get_follow_user_list(&contact).await.unwrap();
    client.get_follow_user_list(&other).await.unwrap();
    client.get_follow_user_list(&contact).await.unwrap();

    let tokens: Vec<String> = fake
        .seen(FOLLOW)
        .iter()
        .map(|s| s.query["access_token"].clone())
        .collect();
    assert_eq!(tokens, ["tok-contact-1", "tok-app-2", "tok-contact-1"]);
    assert_ne!(contact.token_cache_key(), other.token_cache_key());
    let key = contact.token_cache_key();
    let hash = key.strip_prefix(&format!("wecom:token:{CORP}:")).unwrap();
    assert_eq!(hash.len(), 16);
    assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(!key.contains(SECRET));
}

#[tokio::test]
async fn a_token_is_replaced_before_it_expires() {
    let (fake, base) = serve(Fake::new()).await;
    fake.expires_in.store(2, Ordering::SeqCst);
    let client = client(&base);
    let app = app();

    client.get_follow_user_list(&app).await.unwrap();
    client.get_follow_user_list(&app).await.unwrap();
    assert_eq!(fake.calls("gettoken"), 1, "cached");
    tokio::time::sleep(Duration::from_millis(1700)).await; // past 80 % of 2 s
    client.get_follow_user_list(&app).await.unwrap();

    assert_eq!(fake.calls("gettoken"), 2);
}

// ---------------------------------------------------------------------------------------------
// Retries

#[tokio::test]
async fn system_busy_twice_then_ok_succeeds_on_the_third_call() {
    let (fake, base) = serve(Fake::new()).await;
    let client = client(&base);
    fake.script(FOLLOW, [errcode(-1), errcode(-1)]);

    let users = client.get_follow_user_list(&app()).await.unwrap();

    assert_eq!(users.len(), 2);
    assert_eq!(fake.calls(FOLLOW), 3);
    assert_eq!(fake.calls("gettoken"), 1);
}

#[tokio::test]
async fn busy_and_concurrency_errors_give_up_after_max_retries() {
    let (fake, base) = serve(Fake::new()).await;
    let client = client(&base);
    fake.script(
        FOLLOW,
        [
            errcode(45033),
            errcode(-1),
            errcode(-1),
            errcode(-1),
            errcode(-1),
        ],
    );

    let error = client.get_follow_user_list(&app()).await.unwrap_err();

    assert_eq!(error.errcode(), Some(-1));
    assert!(error.is_retryable());
    assert_eq!(fake.calls(FOLLOW), 4, "1 + max_retries");
}

#[tokio::test]
async fn server_errors_are_retried_for_reads_and_writes() {
    let (fake, base) = serve(Fake::new()).await;
    let client = client(&base);
    fake.script(FOLLOW, [Reply::Status(502), Reply::Status(502)]);
    fake.script("message/send", [Reply::Status(502), errcode(-1)]);

    assert!(client.get_follow_user_list(&app()).await.is_ok());
    let sent = client.message_send(&app(), &text_to("lisi")).await.unwrap();

    assert_eq!(fake.calls(FOLLOW), 3);
    assert_eq!(
        fake.calls("message/send"),
        3,
        "5xx and -1 did not deliver: retried"
    );
    assert_eq!(sent.msgid, "msg-1");

    fake.script(FOLLOW, std::iter::repeat_n(Reply::Status(502), 4));
    let error = client.get_follow_user_list(&app()).await.unwrap_err();
    assert!(
        matches!(error, ApiError::Http { status: 502, .. }),
        "{error:?}"
    );
    assert_eq!(fake.calls(FOLLOW), 3 + 4);
}

#[tokio::test]
async fn garbage_is_a_decode_error_after_retries_and_not_retried_for_writes() {
    let (fake, base) = serve(Fake::new()).await;
    let client = client(&base);
    fake.script(FOLLOW, std::iter::repeat_n(Reply::Garbage, 4));
    fake.script("message/send", [Reply::Garbage]);

    let read = client.get_follow_user_list(&app()).await.unwrap_err();
    let write = client
        .message_send(&app(), &text_to("lisi"))
        .await
        .unwrap_err();

    assert!(
        matches!(&read, ApiError::Decode { api: FOLLOW, .. }),
        "{read:?}"
    );
    assert_eq!(fake.calls(FOLLOW), 4);
    assert!(
        matches!(
            &write,
            ApiError::Decode {
                api: "message/send",
                ..
            }
        ),
        "{write:?}"
    );
    assert_eq!(
        fake.calls("message/send"),
        1,
        "the message may have gone out"
    );
    assert!(
        !format!("{read}").contains("运营商"),
        "the body is not echoed"
    );
}

#[tokio::test]
async fn a_body_without_errcode_is_a_decode_error() {
    let (fake, base) = serve(Fake::new()).await;
    let client = client(&base);
    fake.answer(FOLLOW, json!({"follow_user": ["zhangsan"]}));

    let error = client.get_follow_user_list(&app()).await.unwrap_err();

    assert!(matches!(error, ApiError::Decode { .. }), "{error:?}");
    assert_eq!(fake.calls(FOLLOW), 4, "maybe a proxy's page: asked again");
}

#[tokio::test]
async fn an_unexpected_shape_is_a_decode_error_without_retries() {
    let (fake, base) = serve(Fake::new()).await;
    let client = client(&base);
    fake.answer(
        FOLLOW,
        json!({"errcode": 0, "errmsg": "ok", "follow_user": ["zhangsan", ""]}),
    );

    let error = client.get_follow_user_list(&app()).await.unwrap_err();

    assert!(
        matches!(&error, ApiError::Decode { api: FOLLOW, message } if message.contains("userid")),
        "{error:?}"
    );
    assert_eq!(
        fake.calls(FOLLOW),
        1,
        "the same answer will not parse next time"
    );
}

#[tokio::test]
async fn silence_is_a_timeout_and_writes_are_not_retried() {
    let (fake, base) = serve(Fake::new()).await;
    let config = ApiConfig {
        timeout: Duration::from_millis(500),
        ..config(&base)
    };
    let client = WecomClient::new(config, Arc::new(MemoryCoordinator::new())).unwrap();
    let app = app();
    client.access_token(&app).await.unwrap();
    fake.script("message/send", [Reply::Silence(Duration::from_secs(10))]);
    fake.script(
        "externalcontact/transfer_customer",
        [Reply::Silence(Duration::from_secs(10))],
    );
    fake.script(
        FOLLOW,
        std::iter::repeat_n(Reply::Silence(Duration::from_secs(10)), 4),
    );

    let started = Instant::now();
    let send = client
        .message_send(&app, &text_to("lisi"))
        .await
        .unwrap_err();
    let transfer = client
        .transfer_customer(
            &app,
            TransferMode::OnJob,
            &user("zhangsan"),
            &user("lisi"),
            &[customer("wmAAAA")],
            None,
        )
        .await
        .unwrap_err();
    let read = client.get_follow_user_list(&app).await.unwrap_err();

    for error in [&send, &transfer, &read] {
        assert!(matches!(error, ApiError::Transport { .. }), "{error:?}");
        let text = format!("{error} {error:?}");
        assert!(!text.contains("tok-contact"), "{text}");
        assert!(!text.contains("access_token"), "{text}");
        assert!(!text.contains("127.0.0.1"), "no URL in {text}");
    }
    assert_eq!(
        fake.calls("message/send"),
        1,
        "a write that may have happened is not repeated"
    );
    assert_eq!(fake.calls("externalcontact/transfer_customer"), 1);
    assert_eq!(fake.calls(FOLLOW), 4, "reads are retried");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the client timed out, not the server"
    );
}

#[tokio::test]
async fn connect_failures_are_transport_errors() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = client(&format!("http://{addr}/cgi-bin/"));

    let error = client.get_follow_user_list(&app()).await.unwrap_err();

    assert!(
        matches!(
            error,
            ApiError::Transport {
                api: "gettoken",
                ..
            }
        ),
        "{error:?}"
    );
    let text = format!("{error:?} {error}");
    assert!(
        !text.contains(SECRET) && !text.contains("corpsecret"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// Rate limits

#[tokio::test]
async fn frequency_limit_blocks_the_api_and_later_calls_fail_fast() {
    let (fake, base) = serve(Fake::new()).await;
    let coord: Arc<dyn Coordinator> = Arc::new(MemoryCoordinator::new());
    let client = WecomClient::new(config(&base), Arc::clone(&coord)).unwrap();
    let app = app();
    fake.script(FOLLOW, [errcode(45009)]);

    let first = client.get_follow_user_list(&app).await.unwrap_err();
    let second = client.get_follow_user_list(&app).await.unwrap_err();

    assert!(
        matches!(first, ApiError::RateLimited { api: FOLLOW, retry_after } if retry_after == Duration::from_secs(60)),
        "{first:?}"
    );
    assert!(
        matches!(second, ApiError::RateLimited { retry_after, .. } if retry_after <= Duration::from_secs(60) && retry_after > Duration::from_secs(50)),
        "{second:?}"
    );
    assert_eq!(fake.calls(FOLLOW), 1, "no hammering while blocked");
    assert!(
        coord
            .get(&format!("wecom:block:{CORP}:{FOLLOW}"))
            .await
            .unwrap()
            .is_some()
    );
    // Another instance sharing the coordinator is blocked too; other APIs are not.
    let other = WecomClient::new(config(&base), Arc::clone(&coord)).unwrap();
    assert!(matches!(
        other.get_follow_user_list(&app).await,
        Err(ApiError::RateLimited { .. })
    ));
    assert_eq!(fake.calls(FOLLOW), 1);
    fake.answer(
        "externalcontact/list",
        json!({"errcode": 0, "errmsg": "ok", "external_userid": ["wmAAAA"]}),
    );
    assert_eq!(
        client
            .list_external_contacts(&app, &user("zhangsan"))
            .await
            .unwrap(),
        vec![customer("wmAAAA")]
    );
}

#[tokio::test]
async fn messages_to_one_member_past_the_per_member_limit_are_refused() {
    let (fake, base) = serve(Fake::new()).await;
    let config = ApiConfig {
        limits: RateLimits {
            message_per_user_per_minute: 2,
            ..RateLimits::default()
        },
        max_limit_wait: Duration::ZERO,
        ..config(&base)
    };
    let client = WecomClient::new(config, Arc::new(MemoryCoordinator::new())).unwrap();
    let app = app();

    // Stay clear of a minute boundary, where the window (and the count) would reset.
    let into_minute = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 60;
    if into_minute >= 58 {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    client.message_send(&app, &text_to("lisi")).await.unwrap();
    client.message_send(&app, &text_to("LiSi")).await.unwrap();
    let third = client
        .message_send(&app, &text_to("lisi"))
        .await
        .unwrap_err();
    let elsewhere = client.message_send(&app, &text_to("wangwu")).await;

    assert!(
        matches!(third, ApiError::RateLimited { api: "message/send", retry_after } if retry_after <= Duration::from_secs(60)),
        "{third:?}"
    );
    assert!(elsewhere.is_ok(), "other members have their own bucket");
    assert_eq!(fake.calls("message/send"), 3);
}

#[tokio::test]
async fn the_per_api_bucket_refuses_past_its_limit() {
    let (fake, base) = serve(Fake::new()).await;
    let config = ApiConfig {
        limits: RateLimits {
            per_api_per_hour: 3,
            ..RateLimits::default()
        },
        max_limit_wait: Duration::from_millis(50),
        ..config(&base)
    };
    let client = WecomClient::new(config, Arc::new(MemoryCoordinator::new())).unwrap();
    let app = app();

    for _ in 0..3 {
        client.get_follow_user_list(&app).await.unwrap();
    }
    let error = client.get_follow_user_list(&app).await.unwrap_err();

    assert!(matches!(error, ApiError::RateLimited { .. }), "{error:?}");
    assert_eq!(fake.calls(FOLLOW), 3);
}

/// A coordinator whose minute buckets are full for `full_for` from the first time anybody asks,
/// then free.
#[derive(Debug)]
struct BrieflyFull {
    inner: MemoryCoordinator,
    full_for: Duration,
    refusals: AtomicU64,
    opens_at: Mutex<Option<Instant>>,
}

impl BrieflyFull {
    fn new(full_for: Duration) -> Self {
        Self {
            inner: MemoryCoordinator::new(),
            full_for,
            refusals: AtomicU64::new(0),
            opens_at: Mutex::new(None),
        }
    }
}

#[async_trait::async_trait]
impl Coordinator for BrieflyFull {
    async fn get(&self, key: &str) -> Result<Option<String>, CoordError> {
        self.inner.get(key).await
    }
    async fn set(&self, key: &str, value: &str, ttl: Duration) -> Result<(), CoordError> {
        self.inner.set(key, value, ttl).await
    }
    async fn delete_if(&self, key: &str, value: &str) -> Result<bool, CoordError> {
        self.inner.delete_if(key, value).await
    }
    async fn try_lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, CoordError> {
        self.inner.try_lock(key, owner, ttl).await
    }
    async fn unlock(&self, key: &str, owner: &str) -> Result<(), CoordError> {
        self.inner.unlock(key, owner).await
    }
    async fn acquire(
        &self,
        bucket: &str,
        limit: u64,
        window: Duration,
    ) -> Result<Option<Duration>, CoordError> {
        let opens_at = *self
            .opens_at
            .lock()
            .unwrap()
            .get_or_insert_with(|| Instant::now() + self.full_for);
        let now = Instant::now();
        if bucket.ends_with(":m") && now < opens_at {
            self.refusals.fetch_add(1, Ordering::SeqCst);
            return Ok(Some(opens_at - now));
        }
        self.inner.acquire(bucket, limit, window).await
    }
}

#[tokio::test]
async fn a_full_bucket_that_reopens_within_max_limit_wait_is_waited_for() {
    let (fake, base) = serve(Fake::new()).await;
    let coord = Arc::new(BrieflyFull::new(Duration::from_millis(150)));
    let config = ApiConfig {
        max_limit_wait: Duration::from_secs(1),
        ..config(&base)
    };
    let client = WecomClient::new(config, Arc::clone(&coord) as Arc<dyn Coordinator>).unwrap();

    let started = Instant::now();
    client.get_follow_user_list(&app()).await.unwrap();

    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );
    assert!(coord.refusals.load(Ordering::SeqCst) >= 1);
    assert_eq!(fake.calls(FOLLOW), 1);
}

#[tokio::test]
async fn a_full_bucket_past_max_limit_wait_fails_without_a_request() {
    let (fake, base) = serve(Fake::new()).await;
    let coord = Arc::new(BrieflyFull::new(Duration::from_secs(30)));
    let config = ApiConfig {
        max_limit_wait: Duration::from_millis(20),
        ..config(&base)
    };
    let client = WecomClient::new(config, coord as Arc<dyn Coordinator>).unwrap();

    let started = Instant::now();
    let error = client.get_follow_user_list(&app()).await.unwrap_err();

    assert!(
        matches!(error, ApiError::RateLimited { retry_after, .. } if retry_after > Duration::from_secs(20)),
        "{error:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(1), "failed fast");
    assert_eq!(fake.total_calls(), 0, "not even gettoken went out");
}

// ---------------------------------------------------------------------------------------------
// Requests we refuse, request bodies, responses

#[tokio::test]
async fn oversized_or_empty_batches_are_refused_without_a_request() {
    let (fake, base) = serve(Fake::new()).await;
    let client = client(&base);
    let app = app();
    let users: Vec<UserId> = (0..101).map(|i| user(&format!("u{i}"))).collect();
    let customers: Vec<ExternalUserId> = (0..101).map(|i| customer(&format!("wm{i}"))).collect();
    let chats: Vec<ChatId> = (0..101)
        .map(|i| ChatId::try_from(format!("wr{i}")).unwrap())
        .collect();
    let (a, b) = (user("zhangsan"), user("lisi"));

    let refused = [
        client
            .batch_get_by_user(&app, &users, "", 100)
            .await
            .unwrap_err(),
        client
            .batch_get_by_user(&app, &[], "", 100)
            .await
            .unwrap_err(),
        client
            .batch_get_by_user(&app, &users[..2], "", 101)
            .await
            .unwrap_err(),
        client
            .transfer_customer(&app, TransferMode::Resigned, &a, &b, &customers, None)
            .await
            .unwrap_err(),
        client
            .transfer_customer(&app, TransferMode::OnJob, &a, &b, &[], None)
            .await
            .unwrap_err(),
        client
            .transfer_customer(
                &app,
                TransferMode::Resigned,
                &a,
                &b,
                &customers[..1],
                Some("hi"),
            )
            .await
            .unwrap_err(),
        client
            .transfer_customer(
                &app,
                TransferMode::OnJob,
                &a,
                &b,
                &customers[..1],
                Some(&"长".repeat(201)),
            )
            .await
            .unwrap_err(),
        client
            .groupchat_transfer(&app, TransferMode::Resigned, &chats, &a)
            .await
            .unwrap_err(),
        client
            .mark_tag(&app, &a, &customers[0], &[], &[])
            .await
            .unwrap_err(),
        client.del_corp_tag(&app, &[], &[]).await.unwrap_err(),
        client
            .message_send(
                &app,
                &AppMessage::to_users(
                    1,
                    vec![],
                    MessageBody::Text {
                        content: "x".into(),
                    },
                ),
            )
            .await
            .unwrap_err(),
        client
            .add_corp_tag(
                &app,
                &AddCorpTagRequest {
                    group_id: None,
                    group_name: Some("g".into()),
                    order: None,
                    tag: vec![],
                },
            )
            .await
            .unwrap_err(),
        client
            .get_unassigned_list(&app, "", 1001)
            .await
            .unwrap_err(),
    ];

    for error in &refused {
        assert!(matches!(error, ApiError::Invalid { .. }), "{error:?}");
        assert!(!error.is_retryable());
    }
    assert_eq!(fake.total_calls(), 0, "nothing was sent, not even gettoken");
}

#[test]
fn request_bodies_serialize_to_wecom_json() {
    let card = AppMessage {
        touser: vec![user("lisi"), user("wangwu")],
        toparty: vec![1, 2],
        totag: vec![],
        agentid: 1_000_002,
        body: MessageBody::TextCard {
            title: "离职继承完成".into(),
            description: "<div class=\"gray\">2024年6月10日</div>".into(),
            url: "https://scrm.example/transfer/77".into(),
            btntxt: Some("详情".into()),
        },
        enable_duplicate_check: true,
        duplicate_check_interval: Some(1800),
    };
    assert_eq!(
        serde_json::to_value(&card).unwrap(),
        json!({
            "touser": "lisi|wangwu", "toparty": "1|2", "msgtype": "textcard", "agentid": 1000002,
            "textcard": {"title": "离职继承完成", "description": "<div class=\"gray\">2024年6月10日</div>",
                         "url": "https://scrm.example/transfer/77", "btntxt": "详情"},
            "enable_duplicate_check": 1, "duplicate_check_interval": 1800
        })
    );
    let markdown = AppMessage::to_users(
        7,
        vec![user("lisi")],
        MessageBody::Markdown {
            content: "**合规告警**".into(),
        },
    );
    assert_eq!(
        serde_json::to_value(&markdown).unwrap(),
        json!({"touser": "lisi", "msgtype": "markdown", "agentid": 7,
               "markdown": {"content": "**合规告警**"}, "enable_duplicate_check": 0})
    );

    let list = GroupChatListRequest {
        status_filter: 1,
        owner_userids: vec![user("abel")],
        cursor: "c1".into(),
        limit: 10,
    };
    assert_eq!(
        serde_json::to_value(&list).unwrap(),
        json!({"status_filter": 1, "owner_filter": {"userid_list": ["abel"]}, "cursor": "c1", "limit": 10})
    );
    let all = GroupChatListRequest {
        status_filter: 0,
        owner_userids: vec![],
        cursor: String::new(),
        limit: 1000,
    };
    assert_eq!(
        serde_json::to_value(&all).unwrap(),
        json!({"status_filter": 0, "limit": 1000})
    );

    let add = AddCorpTagRequest {
        group_id: None,
        group_name: Some("客户等级".into()),
        order: Some(1),
        tag: vec![
            NewTag {
                name: "A".into(),
                order: Some(2),
            },
            NewTag {
                name: "B".into(),
                order: None,
            },
        ],
    };
    assert_eq!(
        serde_json::to_value(&add).unwrap(),
        json!({"group_name": "客户等级", "order": 1, "tag": [{"name": "A", "order": 2}, {"name": "B"}]})
    );

    let remark = RemarkRequest {
        userid: user("zhangsan"),
        external_userid: customer("woAJ2GCAAAd1NPGHKSD4wKmE8Aabj9AAA"),
        remark: Some("备注信息".into()),
        description: None,
        remark_company: None,
        remark_mobiles: Some(vec![String::new()]),
    };
    assert_eq!(
        serde_json::to_value(&remark).unwrap(),
        json!({"userid": "zhangsan", "external_userid": "woAJ2GCAAAd1NPGHKSD4wKmE8Aabj9AAA",
               "remark": "备注信息", "remark_mobiles": [""]})
    );
}

#[tokio::test]
async fn typed_calls_send_wecom_requests() {
    let (fake, base) = serve(Fake::new()).await;
    let client = client(&base);
    let app = app();
    let tag = |s: &str| TagId::try_from(s).unwrap();
    fake.answer(
        "externalcontact/batch/get_by_user",
        json!({"errcode": 0, "errmsg": "ok", "external_contact_list": [], "next_cursor": ""}),
    );
    fake.answer(
        "externalcontact/groupchat/get",
        json!({"errcode": 0, "errmsg": "ok", "group_chat": {"chat_id": "wrX", "owner": "abel"}}),
    );
    fake.answer(
        "department/list",
        json!({"errcode": 0, "errmsg": "ok", "department": []}),
    );
    fake.answer(
        "externalcontact/get",
        json!({"errcode": 0, "errmsg": "ok", "external_contact": {"external_userid": "wmAAAA"}}),
    );

    client
        .mark_tag(
            &app,
            &user("zhangsan"),
            &customer("wmAAAA"),
            &[tag("et1"), tag("et2")],
            &[],
        )
        .await
        .unwrap();
    client
        .batch_get_by_user(&app, &[user("zhangsan"), user("lisi")], "", 100)
        .await
        .unwrap();
    client
        .groupchat_get(&app, &ChatId::try_from("wrX").unwrap(), true)
        .await
        .unwrap();
    client
        .edit_corp_tag(&app, &tag("et1"), Some("新名字"), None)
        .await
        .unwrap();
    client.department_list(&app, Some(2)).await.unwrap();
    client
        .get_external_contact(&app, &customer("wmAAAA"), Some("CUR"))
        .await
        .unwrap();

    let mark = &fake.seen("externalcontact/mark_tag")[0];
    assert_eq!(
        mark.json(),
        json!({"userid": "zhangsan", "external_userid": "wmAAAA", "add_tag": ["et1", "et2"]})
    );
    assert!(
        !mark.body.contains("access_token"),
        "the token goes in the query only"
    );
    assert_eq!(mark.query["access_token"], "tok-contact-1");
    assert_eq!(
        fake.seen("externalcontact/batch/get_by_user")[0].json(),
        json!({"userid_list": ["zhangsan", "lisi"], "cursor": "", "limit": 100})
    );
    assert_eq!(
        fake.seen("externalcontact/groupchat/get")[0].json(),
        json!({"chat_id": "wrX", "need_name": 1})
    );
    assert_eq!(
        fake.seen("externalcontact/edit_corp_tag")[0].json(),
        json!({"id": "et1", "name": "新名字"})
    );
    assert_eq!(fake.seen("department/list")[0].query["id"], "2");
    let get = &fake.seen("externalcontact/get")[0];
    assert_eq!(get.query["external_userid"], "wmAAAA");
    assert_eq!(get.query["cursor"], "CUR");
}

#[tokio::test]
async fn transfers_report_per_customer_errcodes() {
    let (fake, base) = serve(Fake::new()).await;
    let client = client(&base);
    let app = app();
    fake.answer(
        "externalcontact/resigned/transfer_customer",
        json!({"errcode": 0, "errmsg": "ok", "customer": [
            {"external_userid": "woAJ2GCAAAXtWyujaWJHDDGi0mACBBBB", "errcode": 0},
            {"external_userid": "woAJ2GCAAAXtWyujaWJHDDGi0mACAAAA", "errcode": 40096}]}),
    );
    fake.answer(
        "externalcontact/groupchat/onjob_transfer",
        json!({"errcode": 0, "errmsg": "ok", "failed_chat_list": [
            {"chat_id": "wrOgQhDgAAcwMTB7YmDkbeBsgT_KAAAA", "errcode": 90500,
             "errmsg": "the owner of this chat is not resigned"}]}),
    );
    fake.answer(
        "externalcontact/transfer_result",
        json!({"errcode": 0, "errmsg": "ok", "next_cursor": "NEXT", "customer": [
            {"external_userid": "woAJCCCC", "status": 1, "takeover_time": 1588262400},
            {"external_userid": "woAJAAAA", "status": 3, "takeover_time": 0}]}),
    );
    let customers = [
        customer("woAJ2GCAAAXtWyujaWJHDDGi0mACBBBB"),
        customer("woAJ2GCAAAXtWyujaWJHDDGi0mACAAAA"),
    ];

    let outcomes = client
        .transfer_customer(
            &app,
            TransferMode::Resigned,
            &user("zhangsan"),
            &user("lisi"),
            &customers,
            None,
        )
        .await
        .unwrap();
    let failed = client
        .groupchat_transfer(
            &app,
            TransferMode::OnJob,
            &[ChatId::try_from("wrOgQhDgAAcwMTB7YmDkbeBsgT_KAAAA").unwrap()],
            &user("lisi"),
        )
        .await
        .unwrap();
    let results = client
        .transfer_result(
            &app,
            TransferMode::OnJob,
            &user("zhangsan"),
            &user("lisi"),
            "",
        )
        .await
        .unwrap();

    let codes: Vec<(String, i64)> = outcomes
        .iter()
        .map(|o| (o.external_userid.to_string(), o.errcode))
        .collect();
    assert_eq!(
        codes,
        [
            ("woAJ2GCAAAXtWyujaWJHDDGi0mACBBBB".to_owned(), 0),
            ("woAJ2GCAAAXtWyujaWJHDDGi0mACAAAA".to_owned(), 40096)
        ]
    );
    assert_eq!(
        fake.seen("externalcontact/resigned/transfer_customer")[0].json(),
        json!({"handover_userid": "zhangsan", "takeover_userid": "lisi",
               "external_userid": ["woAJ2GCAAAXtWyujaWJHDDGi0mACBBBB", "woAJ2GCAAAXtWyujaWJHDDGi0mACAAAA"]})
    );
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].errcode, 90500);
    assert_eq!(
        fake.seen("externalcontact/groupchat/onjob_transfer")[0].json(),
        json!({"chat_id_list": ["wrOgQhDgAAcwMTB7YmDkbeBsgT_KAAAA"], "new_owner": "lisi"})
    );
    assert_eq!(results.next_cursor, "NEXT");
    assert_eq!(
        results
            .customer
            .iter()
            .map(|c| c.status)
            .collect::<Vec<_>>(),
        [1, 3]
    );
    assert_eq!(
        fake.seen("externalcontact/transfer_result")[0].json(),
        json!({"handover_userid": "zhangsan", "takeover_userid": "lisi"})
    );
}

#[tokio::test]
async fn on_job_transfers_carry_the_message_to_the_customer() {
    let (fake, base) = serve(Fake::new()).await;
    let client = client(&base);
    client
        .transfer_customer(
            &app(),
            TransferMode::OnJob,
            &user("zhangsan"),
            &user("lisi"),
            &[customer("wmAAAA")],
            Some("您好，您的服务已升级"),
        )
        .await
        .unwrap();

    assert_eq!(
        fake.seen("externalcontact/transfer_customer")[0].json()["transfer_success_msg"],
        "您好，您的服务已升级"
    );
}

#[tokio::test]
async fn responses_decode_leniently() {
    let (fake, base) = serve(Fake::new()).await;
    let client = client(&base);
    let app = app();
    fake.answer(
        "externalcontact/groupchat/get",
        json!({"errcode":0,"errmsg":"ok","group_chat":{"chat_id":"wrOgQhDgAAMYQiS5ol9G7gK9JVAAAA","name":"销售客服群",
         "owner":"ZhuShengBen","create_time":1572505490,"notice":"文明沟通，拒绝脏话",
         "member_list":[{"userid":"abel","type":1,"join_time":1572505491,"join_scene":1,"invitor":{"userid":"jack"},"group_nickname":"客服小张","name":"张三丰"},
                        {"userid":"wmOgQhDgAAuXFJGwbve4g4iXknfOAAAA","type":2,"unionid":"ozynqsulJFCZ2z1aYeS8h-nuasdAAA","join_time":1572505491,"join_scene":1,"group_nickname":"顾客老王","name":"王语嫣","invitor":{"userid":""}}],
         "admin_list":[{"userid":"sam"},{"userid":"pony"}],"member_version":"71217227bbd112ecfe3a49c482195cb4","new_field":[1]}}),
    );
    fake.answer(
        "user/get",
        json!({"errcode":0,"errmsg":"ok","userid":"zhangsan","name":"张三","department":[1,2],"order":[1,2],
               "position":"后台工程师","gender":"1","is_leader_in_dept":[1,0],"direct_leader":["lisi"],
               "main_department":1,"status":1,"extattr":{"attrs":[]}}),
    );
    fake.answer(
        "department/list",
        json!({"errcode":0,"errmsg":"ok","department":[{"id":2,"name":"广州研发中心","parentid":1,"order":10,"department_leader":["zhangsan"]}]}),
    );
    fake.answer(
        "externalcontact/get_corp_tag_list",
        json!({"errcode":0,"errmsg":"ok","tag_group":[{"group_id":"TAG_GROUPID1","group_name":"GOURP_NAME","create_time":1557838797,"order":1,"deleted":false,
               "tag":[{"id":"TAG_ID1","name":"NAME1","create_time":1557838797,"order":1,"deleted":false},{"id":"TAG_ID2","name":"NAME2"}]}]}),
    );
    fake.answer(
        "externalcontact/add_corp_tag",
        json!({"errcode":0,"errmsg":"ok","tag_group":{"group_id":"etG","group_name":"客户等级","create_time":1,"order":1,
               "tag":[{"id":"etA","name":"A","create_time":1,"order":2}]}}),
    );
    fake.answer(
        "externalcontact/get_unassigned_list",
        json!({"errcode":0,"errmsg":"ok","info":[{"handover_userid":"zhangsan","external_userid":"woAJ2GCAAAd4uL12hdfsdasassdDmAAAAA","dimission_time":1550838571}],"is_last":false,"next_cursor":"aSfwejksvhToiMMfFeIGZZ"}),
    );
    fake.answer(
        "externalcontact/groupchat/list",
        json!({"errcode":0,"errmsg":"ok","group_chat_list":[{"chat_id":"wrOgQhDgAAMYQiS5ol9G7gK9JVAAAA","status":0}],"next_cursor":"n"}),
    );
    fake.answer(
        "msgaudit/get_permit_user_list",
        json!({"errcode":0,"errmsg":"ok","ids":["userid_111","userid_222"]}),
    );
    fake.answer(
        "get_jsapi_ticket",
        json!({"errcode":0,"errmsg":"ok","ticket":"bxLdikRXVbTPdHSM05e5u5sUoXNKd8","expires_in":7200}),
    );
    fake.answer(
        "ticket/get",
        json!({"errcode":0,"errmsg":"ok","ticket":"agent-ticket-1","expires_in":7200}),
    );
    fake.answer(
        "message/send",
        json!({"errcode":0,"errmsg":"ok","invaliduser":"userid1|userid2","invalidparty":"","invalidtag":"","unlicenseduser":"","msgid":"xxxx","response_code":"xyzxyz"}),
    );

    let chat = client
        .groupchat_get(
            &app,
            &ChatId::try_from("wrOgQhDgAAMYQiS5ol9G7gK9JVAAAA").unwrap(),
            true,
        )
        .await
        .unwrap();
    assert_eq!(chat.owner, user("ZhuShengBen"));
    assert_eq!(chat.member_list.len(), 2);
    assert_eq!(
        chat.member_list[0].invitor.as_ref().unwrap().userid,
        user("jack")
    );
    assert_eq!(chat.member_list[1].member_type, 2);
    assert_eq!(
        chat.member_list[1].invitor, None,
        "an empty invitor is no invitor"
    );
    assert_eq!(
        chat.member_list[1].unionid.as_deref(),
        Some("ozynqsulJFCZ2z1aYeS8h-nuasdAAA")
    );
    assert_eq!(chat.admin_list.len(), 2);

    let staff = client.user_get(&app, &user("zhangsan")).await.unwrap();
    assert_eq!(
        (staff.gender.as_str(), staff.main_department, staff.status),
        ("1", Some(1), 1)
    );
    assert_eq!(staff.mobile, "", "withheld fields default");

    let departments = client.department_list(&app, None).await.unwrap();
    assert_eq!(departments[0].name, "广州研发中心");
    assert_eq!(departments[0].department_leader, ["zhangsan"]);
    assert!(!fake.seen("department/list")[0].query.contains_key("id"));

    let groups = client.get_corp_tag_list(&app, &[], &[]).await.unwrap();
    assert_eq!(groups[0].tag.len(), 2);
    assert_eq!(groups[0].tag[1].order, 0);
    assert_eq!(
        fake.seen("externalcontact/get_corp_tag_list")[0].json(),
        json!({})
    );

    let added = client
        .add_corp_tag(
            &app,
            &AddCorpTagRequest {
                group_id: None,
                group_name: Some("客户等级".into()),
                order: None,
                tag: vec![NewTag {
                    name: "A".into(),
                    order: Some(2),
                }],
            },
        )
        .await
        .unwrap();
    assert_eq!(added.tag[0].id, TagId::try_from("etA").unwrap());

    let unassigned = client.get_unassigned_list(&app, "", 1000).await.unwrap();
    assert!(!unassigned.is_last);
    assert_eq!(unassigned.info[0].dimission_time, 1550838571);

    let chats = client
        .groupchat_list(
            &app,
            &GroupChatListRequest {
                status_filter: 0,
                owner_userids: vec![],
                cursor: String::new(),
                limit: 100,
            },
        )
        .await
        .unwrap();
    assert_eq!(chats.group_chat_list.len(), 1);

    let permitted = client.msgaudit_get_permit_user_list(&app).await.unwrap();
    assert_eq!(permitted, [user("userid_111"), user("userid_222")]);

    let (ticket, expires_in) = client.get_jsapi_ticket(&app).await.unwrap();
    assert_eq!(
        (ticket.expose().as_str(), expires_in),
        ("bxLdikRXVbTPdHSM05e5u5sUoXNKd8", 7200)
    );
    let (agent, _) = client.get_agent_ticket(&app).await.unwrap();
    assert_eq!(agent.expose(), "agent-ticket-1");
    assert_eq!(fake.seen("ticket/get")[0].query["type"], "agent_config");

    let sent = client
        .message_send(&app, &text_to("userid1"))
        .await
        .unwrap();
    assert_eq!(sent.invalid_users(), ["userid1", "userid2"]);
}

#[tokio::test]
async fn get_external_contact_all_follows_the_cursor() {
    let (fake, base) = serve(Fake::new()).await;
    let client = client(&base);
    let contact = json!({"external_userid":"woAJ2GCAAAXtWyujaWJHDDGi0mACHAAA","name":"李四","type":2,"gender":1,
        "external_profile":{"external_attr":[{"type":0,"name":"文本名称","text":{"value":"文本"}}]}});
    fake.script(
        "externalcontact/get",
        [
            Reply::Json(json!({"errcode":0,"errmsg":"ok","external_contact":contact,
                "follow_user":[{"userid":"rocky","remark":"李部长","createtime":1525779812,
                    "tags":[{"group_name":"g","tag_name":"t","tag_id":"etAJ2GCAAAXtWyujaWJHDDGi0mACHAAA","type":1},
                            {"group_name":"g","tag_name":"personal","type":2}],
                    "remark_mobiles":["13800000001"],"oper_userid":"rocky","add_way":1}],
                "next_cursor":"NEXT_CURSOR"})),
            Reply::Json(json!({"errcode":0,"errmsg":"ok","external_contact":contact,
                "follow_user":[{"userid":"tommy","createtime":1525881637,"state":"外联二维码1",
                    "oper_userid":"woAJ2GCAAAXtWyujaWJHDDGi0mACHAAA","add_way":3}],
                "next_cursor":""})),
        ],
    );

    let detail = client
        .get_external_contact_all(&app(), &customer("woAJ2GCAAAXtWyujaWJHDDGi0mACHAAA"))
        .await
        .unwrap();

    assert_eq!(detail.external_contact.name, "李四");
    assert_eq!(detail.external_contact.contact_type, 2);
    let followers: Vec<&str> = detail
        .follow_user
        .iter()
        .map(|f| f.userid.as_str())
        .collect();
    assert_eq!(followers, ["rocky", "tommy"]);
    assert_eq!(
        detail.follow_user[0].tags[1].tag_id, None,
        "personal tags have no id"
    );
    assert_eq!(detail.follow_user[1].state.as_deref(), Some("外联二维码1"));
    assert_eq!(detail.next_cursor, None);
    let seen = fake.seen("externalcontact/get");
    assert_eq!(seen.len(), 2);
    assert!(!seen[0].query.contains_key("cursor"));
    assert_eq!(seen[1].query["cursor"], "NEXT_CURSOR");
}

#[tokio::test]
async fn generic_calls_reach_any_api() {
    let (fake, base) = serve(Fake::new()).await;
    let client = client(&base);
    fake.answer(
        "externalcontact/add_contact_way",
        json!({"errcode":0,"errmsg":"ok","config_id":"42b34949e138eb6e027c123cba77fAAA"}),
    );

    let created: Value = client
        .post_json(
            &app(),
            "externalcontact/add_contact_way",
            &json!({"type": 1, "scene": 2, "state": "s1"}),
        )
        .await
        .unwrap();
    let got: Value = client
        .get_json(&app(), "user/get", &[("userid", "zhangsan")])
        .await
        .unwrap();
    let escape = client
        .get_json::<Value>(&app(), "../../evil", &[])
        .await
        .unwrap_err();

    assert_eq!(created["config_id"], "42b34949e138eb6e027c123cba77fAAA");
    assert_eq!(got["errcode"], 0);
    assert_eq!(fake.seen("user/get")[0].query["userid"], "zhangsan");
    assert!(matches!(escape, ApiError::Invalid { .. }));
}

// ---------------------------------------------------------------------------------------------
// Secrets stay secret

/// Records every span field and event field as text.
struct Capture {
    lines: Arc<Mutex<Vec<String>>>,
    next_id: AtomicU64,
}

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={value:?} ", field.name());
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut fields = Fields(format!("span {} ", span.metadata().name()));
        span.record(&mut fields);
        self.lines.lock().unwrap().push(fields.0);
        tracing::span::Id::from_u64(self.next_id.fetch_add(1, Ordering::SeqCst) + 1)
    }
    fn record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let mut fields = Fields(String::from("record "));
        values.record(&mut fields);
        self.lines.lock().unwrap().push(fields.0);
    }
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields(format!("event {} ", event.metadata().target()));
        event.record(&mut fields);
        self.lines.lock().unwrap().push(fields.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test]
async fn secrets_and_tokens_stay_out_of_debug_errors_and_logs() {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let _guard = tracing::subscriber::set_default(Capture {
        lines: Arc::clone(&lines),
        next_id: AtomicU64::new(0),
    });
    let (fake, base) = serve(Fake::new()).await;
    let config = ApiConfig {
        timeout: Duration::from_millis(800),
        ..config(&base)
    };
    let client = WecomClient::new(config, Arc::new(MemoryCoordinator::new())).unwrap();
    let app = app();
    fake.script(FOLLOW, [errcode(42001), errcode(-1)]);
    fake.script("message/send", [Reply::Silence(Duration::from_secs(10))]);
    // WeCom's errmsg may echo anything; the client must not pass a token on.
    fake.script(
        "externalcontact/list",
        [Reply::Json(
            json!({"errcode": 40003, "errmsg": "invalid userid tok-contact-2 x"}),
        )],
    );

    let token = client.access_token(&app).await.unwrap();
    client.get_follow_user_list(&app).await.unwrap();
    let timeout = client
        .message_send(&app, &text_to("lisi"))
        .await
        .unwrap_err();
    let echoed = client
        .list_external_contacts(&app, &user("zhangsan"))
        .await
        .unwrap_err();
    let refused = client
        .get_follow_user_list(&app_with("wrong-secret-000"))
        .await
        .unwrap_err();

    let debug = format!(
        "{client:?} {app:?} {token:?} {token} {timeout:?} {timeout} {echoed:?} {echoed} {refused:?} {refused} {:?}",
        client.config()
    );
    let logs = lines.lock().unwrap().join("\n");
    assert!(!logs.is_empty(), "the client does trace");
    for text in [&debug, &logs] {
        for secret in [SECRET, "wrong-secret-000", "tok-contact-1", "tok-contact-2"] {
            assert!(!text.contains(secret), "{secret} leaked into: {text}");
        }
        assert!(!text.contains("access_token="), "no URL in: {text}");
    }
    assert!(debug.contains("[redacted]"));
    assert!(matches!(echoed, ApiError::Wecom { errcode: 40003, .. }));
    assert_eq!(
        fake.calls("gettoken"),
        3,
        "first, after 42001, and the bad secret"
    );
}

// ---------------------------------------------------------------------------------------------

async fn futures_join<T: Send + 'static>(
    handles: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let handles: Vec<_> = handles.collect();
    let mut results = Vec::with_capacity(handles.len());
    for handle in handles {
        results.push(handle.await.unwrap());
    }
    results
}

/// A gateway's 5xx may come after WeCom started the transfer: the client does not repeat a
/// transfer call by itself (its caller asks `transfer_result` first).
#[tokio::test]
async fn a_transfer_call_is_not_repeated_after_a_server_error() {
    let (fake, base) = serve(Fake::new()).await;
    let client = client(&base);
    let api = "externalcontact/resigned/transfer_customer";
    fake.script(api, [Reply::Status(504)]);
    let handover = wecom_sdk::UserId::try_from("zhangsan").unwrap();
    let taker = wecom_sdk::UserId::try_from("lisi").unwrap();
    let ext = wecom_sdk::ExternalUserId::try_from("wmAAAA").unwrap();
    let error = client
        .transfer_customer(
            &app(),
            wecom_sdk::api::TransferMode::Resigned,
            &handover,
            &taker,
            &[ext],
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, ApiError::Http { status: 504, .. }),
        "{error:?}"
    );
    assert_eq!(fake.calls(api), 1, "not repeated");
}
