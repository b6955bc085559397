//! The WeCom emulator (`wecom_sdk::testkit`) against WeCom's documented behaviour: talked to with
//! plain `reqwest` and `serde_json::Value` only (never with this crate's API client), and with a
//! small callback receiver that verifies and decrypts with `CallbackCrypto`.
#![cfg(feature = "testkit")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers are test code; a failure should stop the test loudly"
)]

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value, json};
use wecom_sdk::event::{
    ChatUpdateDetail, ContactEvent, ExternalChatEvent, ExternalContactEvent, ExternalTagEvent,
    TransferFailReason,
};
use wecom_sdk::testkit::{
    CallbackKind, CallbackTarget, DeliveryMode, Emulator, EmulatorConfig, EmulatorHandle,
    EmulatorLimits, Fault, FaultKind, NewCustomer, NewStaff, RelationEdit, SeedSpec, TransferMode,
};
use wecom_sdk::{CallbackCrypto, CallbackEvent, parse_envelope, parse_event};

const CORP: &str = "ww1436e0e65a779aee";
const SECRET: &str = "contacts-secret";
const APP_SECRET: &str = "app-secret";
const AGENT: i64 = 1_000_002;
const CB_TOKEN: &str = "QDG6eK";
const CB_KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";

// -------------------------------------------------------------------------------------------
// Harness
// -------------------------------------------------------------------------------------------

struct Env {
    emu: EmulatorHandle,
    http: reqwest::Client,
}

impl Env {
    async fn start(config: EmulatorConfig) -> Self {
        let emu = Emulator::start(config).await.expect("emulator starts");
        emu.state().add_app(CORP, SECRET, None);
        emu.state().add_app(CORP, APP_SECRET, Some(AGENT));
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("http client");
        Self { emu, http }
    }

    async fn default() -> Self {
        Self::start(quick()).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.emu.base_url())
    }

    async fn get(&self, path: &str) -> Value {
        let resp = self.http.get(self.url(path)).send().await.expect("GET");
        assert_eq!(resp.status(), 200, "WeCom answers HTTP 200 even on errors");
        resp.json().await.expect("JSON")
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> Value {
        let resp = self
            .http
            .post(self.url(&format!("{path}?access_token={token}")))
            .json(&body)
            .send()
            .await
            .expect("POST");
        assert_eq!(resp.status(), 200, "WeCom answers HTTP 200 even on errors");
        resp.json().await.expect("JSON")
    }

    async fn token_of(&self, secret: &str) -> String {
        let v = self
            .get(&format!("gettoken?corpid={CORP}&corpsecret={secret}"))
            .await;
        assert_eq!(v["errcode"], 0, "{v}");
        v["access_token"].as_str().expect("token").to_owned()
    }

    async fn token(&self) -> String {
        self.token_of(SECRET).await
    }
}

/// WeCom's behaviour with quick callbacks.
fn quick() -> EmulatorConfig {
    EmulatorConfig {
        callback_timeout: Duration::from_millis(500),
        callback_retry_interval: Duration::from_millis(20),
        ..EmulatorConfig::default()
    }
}

fn code(v: &Value) -> i64 {
    v["errcode"].as_i64().unwrap_or(i64::MIN)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until at least `margin` is left in the current epoch-aligned minute, so that a test
/// counting calls against a per-minute limit does not straddle two windows.
async fn away_from_minute_edge(margin: Duration) {
    let now_ms = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap();
    let left = 60_000 - now_ms % 60_000;
    if left < u64::try_from(margin.as_millis()).unwrap() {
        tokio::time::sleep(Duration::from_millis(left + 50)).await;
    }
}

#[derive(Debug, Clone)]
enum Answer {
    Status(u16),
    Hang,
}

#[derive(Debug, Clone)]
struct Received {
    plaintext: String,
    nonce: String,
    agent_id: String,
}

#[derive(Clone, Default)]
struct ReceiverState {
    log: Arc<Mutex<Vec<Received>>>,
    plan: Arc<Mutex<VecDeque<Answer>>>,
    rejected: Arc<Mutex<u32>>,
}

/// A callback URL that checks signatures and decrypts like our server, answering per plan.
struct Receiver {
    url: String,
    state: ReceiverState,
}

impl Receiver {
    async fn start(plan: Vec<Answer>) -> Self {
        let state = ReceiverState::default();
        state.plan.lock().unwrap().extend(plan);
        let app = Router::new()
            .route("/cb", post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url: format!("http://{addr}/cb"),
            state,
        }
    }

    fn target(&self) -> CallbackTarget {
        CallbackTarget {
            url: self.url.clone(),
            token: CB_TOKEN.into(),
            encoding_aes_key: CB_KEY.into(),
        }
    }

    fn received(&self) -> Vec<Received> {
        self.state.log.lock().unwrap().clone()
    }

    fn events(&self) -> Vec<CallbackEvent> {
        self.received()
            .iter()
            .map(|r| parse_event(&r.plaintext).expect("well-formed event").event)
            .collect()
    }

    fn rejected(&self) -> u32 {
        *self.state.rejected.lock().unwrap()
    }
}

async fn receive(
    State(state): State<ReceiverState>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> StatusCode {
    let query = query.unwrap_or_default();
    let params: HashMap<&str, &str> = query.split('&').filter_map(|p| p.split_once('=')).collect();
    let crypto = CallbackCrypto::new(CB_TOKEN, CB_KEY, CORP).unwrap();
    let opened = parse_envelope(&body).ok().and_then(|env| {
        let msg = crypto
            .open(
                params.get("msg_signature")?,
                params.get("timestamp")?,
                params.get("nonce")?,
                &env.encrypt,
            )
            .ok()?;
        Some(Received {
            plaintext: String::from_utf8(msg).ok()?,
            nonce: (*params.get("nonce")?).to_owned(),
            agent_id: env.agent_id.as_deref().unwrap_or("").to_owned(),
        })
    });
    let Some(received) = opened else {
        *state.rejected.lock().unwrap() += 1;
        return StatusCode::BAD_REQUEST;
    };
    state.log.lock().unwrap().push(received);
    let answer = state
        .plan
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(Answer::Status(200));
    match answer {
        Answer::Status(code) => StatusCode::from_u16(code).unwrap(),
        Answer::Hang => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            StatusCode::OK
        }
    }
}

fn small() -> SeedSpec {
    SeedSpec {
        staff: 6,
        departments: 4,
        customers: 40,
        follows_per_customer: (1, 2),
        tag_groups: 3,
        tags_per_group: 4,
        group_chats: 6,
        members_per_chat: (3, 6),
        rng_seed: 7,
    }
}

// -------------------------------------------------------------------------------------------
// Tokens
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn gettoken_returns_the_same_token_until_it_expires_on_the_emulator_clock() {
    let env = Env::default().await;
    let first = env
        .get(&format!("gettoken?corpid={CORP}&corpsecret={SECRET}"))
        .await;
    assert_eq!((code(&first), first["errmsg"].as_str()), (0, Some("ok")));
    assert_eq!(first["expires_in"], 7200);
    let token = first["access_token"].as_str().unwrap().to_owned();
    assert!(token.len() >= 32);
    assert_eq!(env.token().await, token, "same token while valid");
    assert_ne!(
        env.token_of(APP_SECRET).await,
        token,
        "each secret has its own token"
    );

    let ok = env
        .get(&format!(
            "externalcontact/get_follow_user_list?access_token={token}"
        ))
        .await;
    assert_eq!(code(&ok), 0);

    env.emu.state().advance_clock(Duration::from_secs(7201));
    let expired = env
        .get(&format!(
            "externalcontact/get_follow_user_list?access_token={token}"
        ))
        .await;
    assert_eq!(code(&expired), 42001, "{expired}");
    let fresh = env.token().await;
    assert_ne!(fresh, token, "a new token after expiry");
    let ok = env
        .get(&format!(
            "externalcontact/get_follow_user_list?access_token={fresh}"
        ))
        .await;
    assert_eq!(code(&ok), 0);
    assert_eq!(env.emu.state().calls("gettoken"), 4);
}

#[tokio::test]
async fn gettoken_and_token_errors_use_wecoms_codes() {
    let env = Env::default().await;
    let cases = [
        ("gettoken?corpsecret=x".to_owned(), 41002),
        (format!("gettoken?corpid={CORP}"), 41004),
        ("gettoken?corpid=wwnope&corpsecret=x".to_owned(), 40013),
        (format!("gettoken?corpid={CORP}&corpsecret=wrong"), 40001),
        ("externalcontact/get_follow_user_list".to_owned(), 41001),
        (
            "externalcontact/get_follow_user_list?access_token=bogus".to_owned(),
            40014,
        ),
    ];
    for (path, expected) in cases {
        let v = env.get(&path).await;
        assert_eq!(code(&v), expected, "{path}: {v}");
        let msg = v["errmsg"].as_str().unwrap();
        assert!(
            msg.contains(", hint: [") && msg.ends_with(&format!("e={expected}")),
            "{msg}"
        );
    }
    // WeCom may drop tokens early: 40014, then a new one works.
    let token = env.token().await;
    env.emu.state().invalidate_tokens(CORP);
    let v = env
        .get(&format!(
            "externalcontact/get_follow_user_list?access_token={token}"
        ))
        .await;
    assert_eq!(code(&v), 40014);
    assert_ne!(env.token().await, token);
}

#[tokio::test]
async fn malformed_bodies_wrong_methods_and_unknown_apis() {
    let env = Env::default().await;
    let token = env.token().await;
    let resp = env
        .http
        .post(env.url(&format!(
            "externalcontact/batch/get_by_user?access_token={token}"
        )))
        .body("{\"userid_list\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(code(&v), 40058);
    assert!(
        v["errmsg"]
            .as_str()
            .unwrap()
            .contains("Warning: wrong json format."),
        "{v}"
    );
    // A wrong type is 40058 too.
    let v = env
        .post(
            "externalcontact/batch/get_by_user",
            &token,
            json!({"userid_list": "zhangsan"}),
        )
        .await;
    assert_eq!(code(&v), 40058, "{v}");
    // GET of a POST API.
    let v = env
        .get(&format!(
            "externalcontact/groupchat/list?access_token={token}"
        ))
        .await;
    assert_eq!(code(&v), 40058);
    let resp = env
        .http
        .get(env.url(&format!("no/such/api?access_token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404, "a missing emulator API is loud");
}

// -------------------------------------------------------------------------------------------
// Seeding and reads
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn seeding_is_deterministic_and_sized_as_asked() {
    let a = Env::default().await;
    let b = Env::default().await;
    let spec = small();
    let sa = a.emu.state().seed(CORP, &spec);
    let sb = b.emu.state().seed(CORP, &spec);
    assert_eq!(sa, sb, "same seed, same corp");
    let other = b.emu.state().seed(
        "wwother",
        &SeedSpec {
            rng_seed: 8,
            ..spec.clone()
        },
    );
    assert_ne!(other.customers, sa.customers);

    assert_eq!(sa.staff.len(), 6);
    assert_eq!(sa.customers.len(), 40);
    assert_eq!(sa.chats.len(), 6);
    assert_eq!(sa.tag_ids.len(), 12);
    assert!(sa.relations >= 40 && sa.relations <= 80, "{}", sa.relations);
    for ext in &sa.customers {
        assert!(
            ext.starts_with("wm") && ext.len() == 32 && ext.is_ascii(),
            "{ext}"
        );
    }
    for chat in &sa.chats {
        assert!(chat.starts_with("wr"), "{chat}");
    }
    assert!(sa.staff.iter().all(|u| u.is_ascii() && u.len() <= 64));

    let token = a.token().await;
    let follow = a
        .get(&format!(
            "externalcontact/get_follow_user_list?access_token={token}"
        ))
        .await;
    assert_eq!(
        strings(&follow["follow_user"])
            .into_iter()
            .collect::<BTreeSet<_>>(),
        sa.staff.iter().cloned().collect::<BTreeSet<_>>()
    );
    let user = a
        .get(&format!(
            "user/get?access_token={token}&userid={}",
            sa.staff[0]
        ))
        .await;
    assert_eq!(code(&user), 0);
    let name = user["name"].as_str().unwrap();
    assert!(!name.is_ascii(), "a Chinese name: {name}");
    assert_eq!(user["status"], 1);
    assert_eq!(
        user["gender"].as_str().map(str::len),
        Some(1),
        "gender is a string"
    );

    let depts = a
        .get(&format!("department/list?access_token={token}"))
        .await;
    assert_eq!(depts["department"].as_array().unwrap().len(), 4);
    let sub = a
        .get(&format!("department/list?access_token={token}&id=1"))
        .await;
    assert_eq!(sub["department"].as_array().unwrap().len(), 4);
    let v = a
        .get(&format!("department/list?access_token={token}&id=999"))
        .await;
    assert_eq!(code(&v), 60123);

    let tags = a
        .post("externalcontact/get_corp_tag_list", &token, json!({}))
        .await;
    let groups = tags["tag_group"].as_array().unwrap();
    assert_eq!(groups.len(), 3);
    assert!(
        groups
            .iter()
            .all(|g| g["tag"].as_array().unwrap().len() == 4)
    );

    let chats = a
        .post(
            "externalcontact/groupchat/list",
            &token,
            json!({"limit": 1000}),
        )
        .await;
    assert_eq!(chats["group_chat_list"].as_array().unwrap().len(), 6);
    let chat = a
        .post(
            "externalcontact/groupchat/get",
            &token,
            json!({"chat_id": sa.chats[0], "need_name": 1}),
        )
        .await;
    let members = chat["group_chat"]["member_list"].as_array().unwrap();
    assert!((3..=6).contains(&members.len()), "{chat}");
    assert_eq!(
        chat["group_chat"]["member_version"].as_str().unwrap().len(),
        32
    );
    assert!(members.iter().all(|m| m.get("name").is_some()));
    assert!(
        members.iter().any(|m| m["type"] == 2),
        "customers in the chat"
    );
}

#[tokio::test]
async fn seeding_pushes_no_callbacks() {
    let env = Env::default().await;
    let receiver = Receiver::start(vec![]).await;
    env.emu
        .state()
        .set_callback_target(CORP, CallbackKind::Contacts, receiver.target());
    env.emu.state().seed(CORP, &small());
    env.emu.flush_callbacks().await;
    assert!(env.emu.state().deliveries().is_empty());
    assert!(receiver.received().is_empty());
}

#[tokio::test]
async fn batch_get_by_user_pages_visit_every_pair_exactly_once() {
    let env = Env::default().await;
    let seeded = env.emu.state().seed(
        CORP,
        &SeedSpec {
            staff: 130,
            customers: 400,
            follows_per_customer: (1, 3),
            group_chats: 0,
            rng_seed: 99,
            ..small()
        },
    );
    let token = env.token().await;
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut pages = 0;
    for chunk in seeded.staff.chunks(100) {
        let mut cursor = String::new();
        loop {
            let v = env
                .post(
                    "externalcontact/batch/get_by_user",
                    &token,
                    json!({"userid_list": chunk, "cursor": cursor, "limit": 7}),
                )
                .await;
            assert_eq!(code(&v), 0, "{v}");
            let rows = v["external_contact_list"].as_array().unwrap();
            assert!(rows.len() <= 7);
            pages += 1;
            for row in rows {
                let ext = row["external_contact"]["external_userid"].as_str().unwrap();
                let user = row["follow_info"]["userid"].as_str().unwrap();
                assert!(row["follow_info"]["tag_id"].is_array());
                seen.push((user.to_owned(), ext.to_owned()));
            }
            cursor = v["next_cursor"].as_str().unwrap().to_owned();
            if cursor.is_empty() {
                break;
            }
        }
    }
    let unique: BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no pair twice");
    assert_eq!(seen.len(), seeded.relations, "every pair once");
    assert!(pages > seeded.relations / 7);
    // Cross-check with list?userid.
    let user = &seeded.staff[0];
    let listed = env
        .get(&format!(
            "externalcontact/list?access_token={token}&userid={user}"
        ))
        .await;
    let from_list: BTreeSet<String> = strings(&listed["external_userid"]).into_iter().collect();
    let from_batch: BTreeSet<String> = seen
        .iter()
        .filter(|(u, _)| u == user)
        .map(|(_, e)| e.clone())
        .collect();
    assert_eq!(from_list, from_batch);

    // Limits: 1..=100 userids; limit is clamped to 100; default 50.
    for bad in [json!([]), json!(vec!["u"; 101])] {
        let v = env
            .post(
                "externalcontact/batch/get_by_user",
                &token,
                json!({"userid_list": bad}),
            )
            .await;
        assert_eq!(code(&v), 40058);
    }
    let chunk: Vec<&String> = seeded.staff.iter().take(100).collect();
    let big = env
        .post(
            "externalcontact/batch/get_by_user",
            &token,
            json!({"userid_list": chunk, "limit": 1000}),
        )
        .await;
    assert_eq!(big["external_contact_list"].as_array().unwrap().len(), 100);
    let default = env
        .post(
            "externalcontact/batch/get_by_user",
            &token,
            json!({"userid_list": chunk}),
        )
        .await;
    assert_eq!(
        default["external_contact_list"].as_array().unwrap().len(),
        50
    );
    let bad_cursor = env
        .post(
            "externalcontact/batch/get_by_user",
            &token,
            json!({"userid_list": chunk, "cursor": "!!"}),
        )
        .await;
    assert_eq!(code(&bad_cursor), 40058);
}

#[tokio::test]
async fn externalcontact_get_shows_followers_500_per_page_and_errors() {
    let env = Env::default().await;
    let seeded = env.emu.state().seed(
        CORP,
        &SeedSpec {
            staff: 520,
            customers: 1,
            follows_per_customer: (520, 520),
            group_chats: 0,
            ..small()
        },
    );
    let token = env.token().await;
    let ext = &seeded.customers[0];
    let page1 = env
        .get(&format!(
            "externalcontact/get?access_token={token}&external_userid={ext}"
        ))
        .await;
    assert_eq!(code(&page1), 0);
    assert_eq!(page1["external_contact"]["external_userid"], json!(ext));
    assert_eq!(page1["follow_user"].as_array().unwrap().len(), 500);
    let cursor = page1["next_cursor"].as_str().expect("more followers");
    let page2 = env
        .get(&format!(
            "externalcontact/get?access_token={token}&external_userid={ext}&cursor={cursor}"
        ))
        .await;
    assert_eq!(page2["follow_user"].as_array().unwrap().len(), 20);
    assert!(page2.get("next_cursor").is_none());
    let all: BTreeSet<String> = page1["follow_user"]
        .as_array()
        .unwrap()
        .iter()
        .chain(page2["follow_user"].as_array().unwrap())
        .map(|f| f["userid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(all.len(), 520);
    let f = &page1["follow_user"][0];
    for field in [
        "remark",
        "description",
        "createtime",
        "tags",
        "remark_mobiles",
        "add_way",
        "oper_userid",
    ] {
        assert!(f.get(field).is_some(), "follow_user has {field}: {f}");
    }

    let unknown = env
        .get(&format!(
            "externalcontact/get?access_token={token}&external_userid=wmNOPE"
        ))
        .await;
    assert_eq!(code(&unknown), 40096);
    let missing = env
        .get(&format!("externalcontact/get?access_token={token}"))
        .await;
    assert_eq!(code(&missing), 41035);
    // A member without customers: list → 84061; unknown member → 40003.
    env.emu.state().add_staff(
        CORP,
        NewStaff {
            userid: "newbie".into(),
            name: "新人".into(),
            department: vec![1],
        },
    );
    let v = env
        .get(&format!(
            "externalcontact/list?access_token={token}&userid=newbie"
        ))
        .await;
    assert_eq!(code(&v), 84061);
    let v = env
        .get(&format!(
            "externalcontact/list?access_token={token}&userid=ghost"
        ))
        .await;
    assert_eq!(code(&v), 40003);
    let v = env
        .get(&format!("user/get?access_token={token}&userid=ghost"))
        .await;
    assert_eq!(code(&v), 60111);
}

#[tokio::test]
async fn a_new_relation_is_invisible_during_the_consistency_delay() {
    let env = Env::start(EmulatorConfig {
        consistency_delay: Duration::from_secs(30),
        ..quick()
    })
    .await;
    let state = env.emu.state();
    let ext = state.add_customer(
        CORP,
        "lisi",
        NewCustomer {
            name: "王总".into(),
            ..NewCustomer::default()
        },
    );
    let token = env.token().await;
    let get = format!("externalcontact/get?access_token={token}&external_userid={ext}");
    assert_eq!(code(&env.get(&get).await), 84061);
    let batch = env
        .post(
            "externalcontact/batch/get_by_user",
            &token,
            json!({"userid_list": ["lisi"]}),
        )
        .await;
    assert!(
        batch["external_contact_list"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(state.relation(CORP, "lisi", &ext).is_some(), "it exists");

    state.advance_clock(Duration::from_secs(31));
    let v = env.get(&get).await;
    assert_eq!(code(&v), 0, "{v}");
    assert_eq!(v["external_contact"]["name"], "王总");
    let batch = env
        .post(
            "externalcontact/batch/get_by_user",
            &token,
            json!({"userid_list": ["lisi"]}),
        )
        .await;
    assert_eq!(batch["external_contact_list"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn departed_staff_leave_the_follow_lists_and_their_customers_wait_unassigned() {
    let env = Env::default().await;
    let state = env.emu.state();
    let seeded = state.seed(CORP, &small());
    let leaver = seeded.staff[0].clone();
    let theirs = state.customers_of(CORP, &leaver);
    assert!(!theirs.is_empty());
    assert!(state.depart_staff(CORP, &leaver));
    let token = env.token().await;
    let follow = env
        .get(&format!(
            "externalcontact/get_follow_user_list?access_token={token}"
        ))
        .await;
    assert!(!strings(&follow["follow_user"]).contains(&leaver));
    let user = env
        .get(&format!("user/get?access_token={token}&userid={leaver}"))
        .await;
    assert_eq!(user["status"], 5);
    let v = env
        .get(&format!(
            "externalcontact/get?access_token={token}&external_userid={}",
            theirs[0]
        ))
        .await;
    let followers: Vec<Value> = v["follow_user"].as_array().cloned().unwrap_or_default();
    assert!(followers.iter().all(|f| f["userid"] != json!(leaver)));

    let mut listed = Vec::new();
    let mut cursor = String::new();
    loop {
        let v = env
            .post(
                "externalcontact/get_unassigned_list",
                &token,
                json!({"cursor": cursor, "page_size": 2}),
            )
            .await;
        assert_eq!(code(&v), 0, "{v}");
        for row in v["info"].as_array().unwrap() {
            assert_eq!(row["handover_userid"], json!(leaver));
            assert!(row["dimission_time"].as_i64().unwrap() > 0);
            listed.push(row["external_userid"].as_str().unwrap().to_owned());
        }
        if v["is_last"] == true {
            break;
        }
        cursor = v["next_cursor"].as_str().unwrap().to_owned();
    }
    assert_eq!(listed, theirs);
    let v = env
        .post(
            "externalcontact/get_unassigned_list",
            &token,
            json!({"page_size": 1001}),
        )
        .await;
    assert_eq!(code(&v), 40058);
}

// -------------------------------------------------------------------------------------------
// Limits and faults
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_per_minute_limit_answers_45009() {
    let env = Env::start(EmulatorConfig {
        limits: EmulatorLimits {
            per_api_per_minute: 3,
            ..EmulatorLimits::default()
        },
        ..quick()
    })
    .await;
    away_from_minute_edge(Duration::from_secs(10)).await;
    let token = env.token().await;
    let path = format!("externalcontact/get_follow_user_list?access_token={token}");
    for _ in 0..3 {
        assert_eq!(code(&env.get(&path).await), 0);
    }
    let v = env.get(&path).await;
    assert_eq!(code(&v), 45009, "{v}");
    assert_eq!(env.emu.state().rate_limited(), 1);
    // Per API: another API still answers.
    let v = env
        .post("externalcontact/get_corp_tag_list", &token, json!({}))
        .await;
    assert_eq!(code(&v), 0);
}

#[tokio::test]
async fn too_many_calls_in_flight_answer_45033() {
    let env = Env::start(EmulatorConfig {
        limits: EmulatorLimits {
            max_concurrent_per_api: 2,
            ..EmulatorLimits::default()
        },
        ..quick()
    })
    .await;
    let token = env.token().await;
    let api = "externalcontact/get_follow_user_list";
    env.emu.state().inject_fault(Fault {
        api: Some(api.into()),
        kind: FaultKind::Latency(Duration::from_millis(1500)),
        times: 2,
    });
    let path = format!("{api}?access_token={token}");
    let slow = || env.get(&path);
    let third = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        env.get(&path).await
    };
    let (a, b, c) = tokio::join!(slow(), slow(), third);
    assert_eq!((code(&a), code(&b)), (0, 0));
    assert_eq!(code(&c), 45033, "{c}");
    assert_eq!(env.emu.state().rate_limited(), 1);
    assert_eq!(code(&env.get(&path).await), 0, "free again");
}

#[tokio::test]
async fn every_fault_kind_does_what_it_says() {
    let env = Env::default().await;
    let state = env.emu.state();
    let token = env.token().await;
    let api = "externalcontact/get_follow_user_list";
    let path = format!("{api}?access_token={token}");
    let inject = |kind: FaultKind| {
        state.inject_fault(Fault {
            api: Some(api.into()),
            kind,
            times: 1,
        });
    };

    inject(FaultKind::Busy);
    assert_eq!(code(&env.get(&path).await), -1);
    assert_eq!(code(&env.get(&path).await), 0, "times counts down");

    inject(FaultKind::Errcode(42001));
    let other = env
        .post("externalcontact/get_corp_tag_list", &token, json!({}))
        .await;
    assert_eq!(code(&other), 0, "only the named API is faulted");
    assert_eq!(code(&env.get(&path).await), 42001);

    inject(FaultKind::Http(502));
    let resp = env.http.get(env.url(&path)).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.text().await.unwrap(), "bad gateway");

    inject(FaultKind::Garbage);
    let resp = env.http.get(env.url(&path)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.bytes().await.unwrap();
    assert!(serde_json::from_slice::<Value>(&body).is_err(), "not JSON");

    inject(FaultKind::Latency(Duration::from_millis(300)));
    let started = Instant::now();
    assert_eq!(code(&env.get(&path).await), 0);
    assert!(started.elapsed() >= Duration::from_millis(300));

    // The work is done (the write log has it), the answer is lost.
    let writes = state.writes().len();
    state.inject_fault(Fault {
        api: Some("externalcontact/add_corp_tag".into()),
        kind: FaultKind::AnswerLost,
        times: 1,
    });
    let lost = env
        .http
        .post(env.url(&format!(
            "externalcontact/add_corp_tag?access_token={token}"
        )))
        .json(&json!({"group_name": "丢失的回答", "tag": [{"name": "已创建"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(lost.status(), 504);
    assert_eq!(state.writes().len(), writes + 1, "the call took effect");
    let tags = env
        .post("externalcontact/get_corp_tag_list", &token, json!({}))
        .await;
    assert!(tags.to_string().contains("已创建"), "{tags}");

    inject(FaultKind::Silence);
    let silent = env
        .http
        .get(env.url(&path))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(silent.is_err_and(|e| e.is_timeout()), "no answer");

    // None = every API, gettoken included; clear_faults removes them.
    state.inject_fault(Fault {
        api: None,
        kind: FaultKind::Busy,
        times: 5,
    });
    let v = env
        .get(&format!("gettoken?corpid={CORP}&corpsecret={SECRET}"))
        .await;
    assert_eq!(code(&v), -1);
    state.clear_faults();
    assert_eq!(code(&env.get(&path).await), 0);

    state.set_down(true);
    let resp = env.http.get(env.url(&path)).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    state.set_down(false);
    assert_eq!(code(&env.get(&path).await), 0);

    assert_eq!(state.faults_fired(), 8, "seven on the API, one answer lost");
    assert_eq!(state.calls(api), 10, "faulted and down calls are counted");
    assert_eq!(
        state.rate_limited(),
        0,
        "faults are not the emulator's limits"
    );
}

// -------------------------------------------------------------------------------------------
// Callbacks
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_failing_receiver_gets_retries_until_it_answers_200() {
    let env = Env::default().await;
    let receiver = Receiver::start(vec![Answer::Status(500), Answer::Status(500)]).await;
    let state = env.emu.state();
    state.set_callback_target(CORP, CallbackKind::Contacts, receiver.target());
    let ext = state.add_customer(
        CORP,
        "lisi",
        NewCustomer {
            name: "王总".into(),
            state: Some("expo2024".into()),
            welcome_code: Some("WELCOME1".into()),
            ..NewCustomer::default()
        },
    );
    env.emu.flush_callbacks().await;

    let records = state.deliveries();
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(
        (record.attempts, record.delivered, record.last_status),
        (3, true, Some(200))
    );
    assert_eq!(record.kind, CallbackKind::Contacts);
    let received = receiver.received();
    assert_eq!(received.len(), 3, "three signed, decryptable requests");
    assert_eq!(receiver.rejected(), 0);
    assert!(received.iter().all(|r| r.plaintext == record.plaintext));
    let nonces: BTreeSet<&str> = received.iter().map(|r| r.nonce.as_str()).collect();
    assert_eq!(nonces.len(), 3, "a fresh nonce per attempt");

    let parsed = parse_event(&record.plaintext).unwrap();
    assert_eq!(parsed.header.to_user_name, CORP);
    assert_eq!(parsed.header.from_user_name, "sys");
    let now = state.now();
    assert!((now - 5..=now).contains(&parsed.header.create_time.unwrap()));
    let CallbackEvent::ExternalContact(ExternalContactEvent::Added(added)) = parsed.event else {
        panic!("not an add: {}", record.plaintext);
    };
    assert_eq!(added.user_id.as_str(), "lisi");
    assert_eq!(added.external_user_id.as_str(), ext);
    assert_eq!(added.state.as_deref(), Some("expo2024"));
    assert_eq!(added.welcome_code.as_deref(), Some("WELCOME1"));
}

#[tokio::test]
async fn a_receiver_that_never_answers_gets_four_attempts() {
    let env = Env::start(EmulatorConfig {
        callback_timeout: Duration::from_millis(150),
        callback_retries: 3,
        callback_retry_interval: Duration::from_millis(10),
        ..EmulatorConfig::default()
    })
    .await;
    let receiver = Receiver::start(vec![Answer::Hang; 4]).await;
    let state = env.emu.state();
    state.set_callback_target(CORP, CallbackKind::Contacts, receiver.target());
    state.add_customer(CORP, "lisi", NewCustomer::default());
    env.emu.flush_callbacks().await;
    let record = &state.deliveries()[0];
    assert_eq!(
        (record.attempts, record.delivered, record.last_status),
        (4, false, None)
    );
    assert!(record.error.as_deref().unwrap().contains("deadline"));
    assert_eq!(receiver.received().len(), 4);

    // A refused connection is retried the same way.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    state.set_callback_target(
        CORP,
        CallbackKind::Directory,
        CallbackTarget {
            url: format!("http://{closed}/cb"),
            token: CB_TOKEN.into(),
            encoding_aes_key: CB_KEY.into(),
        },
    );
    state.depart_staff(CORP, "lisi");
    env.emu.flush_callbacks().await;
    let record = &state.deliveries()[1];
    assert_eq!((record.attempts, record.delivered), (4, false));
    assert_eq!(record.error.as_deref(), Some("connection failed"));
}

#[tokio::test]
async fn events_without_a_target_are_recorded_undelivered() {
    let env = Env::default().await;
    let state = env.emu.state();
    state.add_customer(CORP, "lisi", NewCustomer::default());
    env.emu.flush_callbacks().await;
    let record = &state.deliveries()[0];
    assert_eq!((record.attempts, record.delivered), (0, false));
    assert!(record.error.as_deref().unwrap().contains("no contacts"));
    assert_eq!(state.stats().undelivered, 1);
}

#[tokio::test]
async fn duplicate_drop_and_reorder_modes() {
    let env = Env::default().await;
    let receiver = Receiver::start(vec![]).await;
    let state = env.emu.state();
    state.set_callback_target(CORP, CallbackKind::Contacts, receiver.target());

    state.set_delivery(DeliveryMode {
        duplicate: true,
        ..DeliveryMode::default()
    });
    state.add_customer(CORP, "lisi", NewCustomer::default());
    env.emu.flush_callbacks().await;
    let got = receiver.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].plaintext, got[1].plaintext);
    assert_eq!(state.deliveries().len(), 2);

    state.set_delivery(DeliveryMode {
        drop_next: 1,
        ..DeliveryMode::default()
    });
    let dropped = state.add_customer(CORP, "lisi", NewCustomer::default());
    let kept = state.add_customer(CORP, "lisi", NewCustomer::default());
    env.emu.flush_callbacks().await;
    let got = receiver.received();
    assert_eq!(got.len(), 3);
    assert!(got[2].plaintext.contains(&kept));
    assert!(got.iter().all(|r| !r.plaintext.contains(&dropped)));
    let records = state.deliveries();
    assert!(records[2].dropped && records[2].attempts == 0);
    assert!(records[3].delivered);

    state.set_delivery(DeliveryMode {
        reorder: true,
        ..DeliveryMode::default()
    });
    let ids: Vec<String> = (0..3)
        .map(|_| state.add_customer(CORP, "lisi", NewCustomer::default()))
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(receiver.received().len(), 3, "held until flushed");
    env.emu.flush_callbacks().await;
    let got = receiver.received();
    let order: Vec<usize> = got[3..]
        .iter()
        .map(|r| ids.iter().position(|id| r.plaintext.contains(id)).unwrap())
        .collect();
    assert_eq!(order, vec![2, 1, 0], "reverse order");
}

#[tokio::test]
async fn mutations_push_the_callbacks_wecom_pushes() {
    let env = Env::default().await;
    let contacts = Receiver::start(vec![]).await;
    let directory = Receiver::start(vec![]).await;
    let archive = Receiver::start(vec![]).await;
    let app = Receiver::start(vec![]).await;
    let state = env.emu.state();
    state.set_callback_target(CORP, CallbackKind::Contacts, contacts.target());
    state.set_callback_target(CORP, CallbackKind::Directory, directory.target());
    state.set_callback_target(CORP, CallbackKind::Archive, archive.target());
    state.set_callback_target(CORP, CallbackKind::App(AGENT), app.target());

    let tag = state.create_tag(CORP, "客户等级", "VIP");
    let ext = state.add_customer(CORP, "lisi", NewCustomer::default());
    assert!(state.add_follow(CORP, "wangwu", &ext, Some("referral")));
    assert!(state.edit_relation(
        CORP,
        "lisi",
        &ext,
        RelationEdit {
            remark: Some("王总-采购".into()),
            add_tags: vec![tag.clone()],
            ..RelationEdit::default()
        },
    ));
    assert!(state.customer_deletes_staff(CORP, "wangwu", &ext));
    assert!(!state.customer_deletes_staff(CORP, "wangwu", &ext), "once");
    assert!(state.staff_deletes_customer(CORP, "lisi", &ext));
    assert!(!state.staff_deletes_customer(CORP, "lisi", &ext), "gone");
    let chat = state.create_group_chat(CORP, "wangwu", vec![ext.clone()]);
    let newcomer = state.add_customer(CORP, "wangwu", NewCustomer::default());
    assert!(state.add_chat_members(CORP, &chat, vec![newcomer.clone()]));
    assert!(state.remove_chat_members(CORP, &chat, vec![ext.clone()]));
    assert!(state.dismiss_group_chat(CORP, &chat));
    assert!(state.delete_tag(CORP, &tag));
    env.emu.flush_callbacks().await;

    let events = contacts.events();
    let mut kinds = Vec::new();
    for e in &events {
        kinds.push(match e {
            CallbackEvent::ExternalTag(ExternalTagEvent::Created(t)) => {
                assert_eq!(t.id.as_str(), tag);
                "tag create"
            }
            CallbackEvent::ExternalTag(ExternalTagEvent::Deleted(_)) => "tag delete",
            CallbackEvent::ExternalContact(ExternalContactEvent::Added(a)) => {
                if a.user_id.as_str() == "wangwu" && a.external_user_id.as_str() == ext {
                    assert_eq!(a.state.as_deref(), Some("referral"));
                }
                "add"
            }
            CallbackEvent::ExternalContact(ExternalContactEvent::Edited(_)) => "edit",
            CallbackEvent::ExternalContact(ExternalContactEvent::CustomerDeletedStaff(r)) => {
                assert_eq!(r.user_id.as_str(), "wangwu");
                "del_follow_user"
            }
            CallbackEvent::ExternalContact(ExternalContactEvent::StaffDeletedCustomer(d)) => {
                assert!(!d.is_by_transfer());
                "del_external_contact"
            }
            CallbackEvent::ExternalChat(ExternalChatEvent::Created { chat_id }) => {
                assert_eq!(chat_id.as_str(), chat);
                "chat create"
            }
            CallbackEvent::ExternalChat(ExternalChatEvent::Updated(u)) => {
                assert_eq!(u.mem_change_cnt, Some(1));
                assert_eq!(u.mem_change_list.len(), 1);
                assert_ne!(u.last_mem_ver, u.cur_mem_ver);
                match u.update_detail {
                    Some(ChatUpdateDetail::AddMember) => "chat add_member",
                    Some(ChatUpdateDetail::DelMember) => "chat del_member",
                    _ => "chat update?",
                }
            }
            CallbackEvent::ExternalChat(ExternalChatEvent::Dismissed { .. }) => "chat dismiss",
            other => panic!("unexpected {other:?}"),
        });
    }
    kinds.sort_unstable();
    let mut expected = vec![
        "add",
        "add",
        "add",
        "chat add_member",
        "chat create",
        "chat del_member",
        "chat dismiss",
        "del_external_contact",
        "del_follow_user",
        "edit",
        "tag create",
        "tag delete",
    ];
    expected.sort_unstable();
    assert_eq!(kinds, expected);
    assert_eq!(contacts.rejected(), 0);

    // The relation deleted by the customer is still listed (as WeCom does).
    let kept = state.relation(CORP, "wangwu", &ext).unwrap();
    assert!(kept.deleted_by_customer);
    assert!(state.relation(CORP, "lisi", &ext).is_none());

    // Directory, archive and app messages.
    assert!(state.add_staff(
        CORP,
        NewStaff {
            userid: "liuyang".into(),
            name: "刘洋".into(),
            department: vec![1],
        },
    ));
    assert!(state.depart_staff(CORP, "liuyang"));
    assert!(state.msgaudit_notify(CORP));
    assert!(!state.msgaudit_notify(CORP), "at most one per 15 s");
    state.advance_clock(Duration::from_secs(15));
    assert!(state.msgaudit_notify(CORP));
    state.app_text_message(CORP, AGENT, "lisi", "帮我查一下客户王总的标签");
    env.emu.flush_callbacks().await;

    let dir = directory.events();
    assert!(
        matches!(&dir[0], CallbackEvent::Contact(ContactEvent::StaffCreated(s)) if s.user_id.as_str() == "liuyang" && s.department == Some(vec![1]))
    );
    assert!(
        matches!(&dir[1], CallbackEvent::Contact(ContactEvent::StaffDeparted { user_id }) if user_id.as_str() == "liuyang")
    );
    let notes = archive.received();
    assert_eq!(notes.len(), 2);
    let header = parse_event(&notes[0].plaintext).unwrap();
    assert_eq!(header.header.agent_id.as_deref(), Some("2000004"));
    assert_eq!(header.event, CallbackEvent::MsgAuditNotify);
    assert_eq!(notes[0].agent_id, "2000004");
    let msgs = app.received();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].agent_id, AGENT.to_string());
    assert!(matches!(parse_event(&msgs[0].plaintext).unwrap().event,
        CallbackEvent::Message { ref from, .. } if from.as_str() == "lisi"));
}

#[tokio::test]
async fn api_changes_push_nothing_and_raw_xml_is_delivered_as_given() {
    let env = Env::default().await;
    let receiver = Receiver::start(vec![]).await;
    let state = env.emu.state();
    let seeded = state.seed(CORP, &small());
    state.set_callback_target(CORP, CallbackKind::Contacts, receiver.target());
    let token = env.token().await;
    let user = &seeded.staff[0];
    let ext = state.customers_of(CORP, user)[0].clone();
    let v = env
        .post(
            "externalcontact/remark",
            &token,
            json!({"userid": user, "external_userid": ext, "remark": "新备注"}),
        )
        .await;
    assert_eq!(code(&v), 0);
    let v = env
        .post(
            "externalcontact/add_corp_tag",
            &token,
            json!({"group_name": "新分组", "tag": [{"name": "新标签"}]}),
        )
        .await;
    assert_eq!(code(&v), 0);
    env.emu.flush_callbacks().await;
    assert!(
        state.deliveries().is_empty(),
        "API-made changes call nobody back"
    );

    let xml =
        "<xml><ToUserName><![CDATA[ww1436e0e65a779aee]]></ToUserName><Custom>1</Custom></xml>";
    state.push_raw(CORP, CallbackKind::Contacts, xml);
    env.emu.flush_callbacks().await;
    assert_eq!(receiver.received()[0].plaintext, xml);
}

// -------------------------------------------------------------------------------------------
// Tags and relation writes
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn corp_tag_writes_follow_wecoms_rules() {
    let env = Env::default().await;
    let token = env.token().await;
    let add = |body: Value| env.post("externalcontact/add_corp_tag", &token, body);
    let created = add(json!({"group_name": "客户等级", "order": 5, "tag": [
        {"name": "A类"}, {"name": "B类"}, {"name": "A类"}]}))
    .await;
    assert_eq!(code(&created), 0, "{created}");
    let group = &created["tag_group"];
    let group_id = group["group_id"].as_str().unwrap().to_owned();
    assert_eq!(
        group["tag"].as_array().unwrap().len(),
        2,
        "duplicates collapse"
    );
    let a = group["tag"][0]["id"].as_str().unwrap().to_owned();
    assert!(a.starts_with("et"));

    assert_eq!(
        code(&add(json!({"group_id": group_id, "tag": [{"name": "A类"}]})).await),
        40071
    );
    assert_eq!(
        code(&add(json!({"group_id": group_id, "tag": [{"name": "长".repeat(31)}]})).await),
        40058
    );
    assert_eq!(
        code(&add(json!({"group_name": "空分组", "tag": []})).await),
        40058
    );
    assert_eq!(
        code(&add(json!({"group_id": "etNOPE", "tag": [{"name": "x"}]})).await),
        40068
    );
    let more = add(json!({"group_id": group_id, "tag": [{"name": "C类"}]})).await;
    assert_eq!(more["tag_group"]["tag"].as_array().unwrap().len(), 1);

    let edit = |body: Value| env.post("externalcontact/edit_corp_tag", &token, body);
    assert_eq!(code(&edit(json!({"id": a, "name": "A类客户"})).await), 0);
    assert_eq!(code(&edit(json!({"id": a, "name": "B类"})).await), 40071);
    assert_eq!(
        code(&edit(json!({"id": "etNOPE", "name": "x"})).await),
        40068
    );

    let listed = env
        .post(
            "externalcontact/get_corp_tag_list",
            &token,
            json!({"tag_id": [a]}),
        )
        .await;
    assert_eq!(listed["tag_group"][0]["tag"][0]["name"], "A类客户");
    assert_eq!(listed["tag_group"][0]["tag"][0]["deleted"], false);

    // Deleting every tag of a group deletes the group.
    let b = group["tag"][1]["id"].as_str().unwrap().to_owned();
    let c = more["tag_group"]["tag"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let del = env
        .post(
            "externalcontact/del_corp_tag",
            &token,
            json!({"tag_id": [a, b, c]}),
        )
        .await;
    assert_eq!(code(&del), 0);
    let all = env
        .post("externalcontact/get_corp_tag_list", &token, json!({}))
        .await;
    assert!(all["tag_group"].as_array().unwrap().is_empty(), "{all}");
    let by_group = env
        .post(
            "externalcontact/get_corp_tag_list",
            &token,
            json!({"group_id": [group_id]}),
        )
        .await;
    assert_eq!(by_group["tag_group"][0]["deleted"], true, "{by_group}");
    assert_eq!(
        code(
            &env.post("externalcontact/del_corp_tag", &token, json!({}))
                .await
        ),
        40058
    );

    // 3000 corp tags at most.
    let names: Vec<Value> = (0..3000)
        .map(|i| json!({"name": format!("t{i}")}))
        .collect();
    let full = add(json!({"group_name": "大分组", "tag": names})).await;
    assert_eq!(code(&full), 0);
    assert_eq!(
        code(&add(json!({"group_name": "再来", "tag": [{"name": "x"}]})).await),
        40126
    );
}

#[tokio::test]
async fn mark_tag_and_remark_change_one_relation() {
    let env = Env::default().await;
    let state = env.emu.state();
    let seeded = state.seed(CORP, &small());
    let token = env.token().await;
    let user = seeded.staff[0].clone();
    let mine = state.customers_of(CORP, &user);
    let ext = mine[0].clone();
    let stranger = seeded
        .customers
        .iter()
        .find(|c| !mine.contains(c))
        .unwrap()
        .clone();
    let tag = seeded.tag_ids[0].clone();
    let mark = |ext: &str, add: Vec<String>, remove: Vec<String>| {
        env.post(
            "externalcontact/mark_tag",
            &token,
            json!({"userid": user, "external_userid": ext, "add_tag": add, "remove_tag": remove}),
        )
    };
    assert_eq!(code(&mark(&ext, vec![], vec![]).await), 40058);
    assert_eq!(
        code(&mark(&stranger, vec![tag.clone()], vec![]).await),
        84061
    );
    assert_eq!(
        code(&mark("wmNOPE", vec![tag.clone()], vec![]).await),
        40096
    );
    assert_eq!(
        code(&mark(&ext, vec!["etNOPE".into()], vec![]).await),
        40068
    );
    let before = state.relation(CORP, &user, &ext).unwrap().tag_ids;
    assert_eq!(code(&mark(&ext, vec![tag.clone()], vec![]).await), 0);
    let after = state.relation(CORP, &user, &ext).unwrap().tag_ids;
    assert!(after.contains(&tag));
    assert_eq!(
        after.len(),
        before.len() + usize::from(!before.contains(&tag))
    );
    let got = env
        .get(&format!(
            "externalcontact/get?access_token={token}&external_userid={ext}"
        ))
        .await;
    let follow = got["follow_user"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["userid"] == json!(user))
        .unwrap();
    assert!(
        follow["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["tag_id"] == json!(tag) && t["type"] == 1)
    );
    assert_eq!(code(&mark(&ext, vec![], vec![tag.clone()]).await), 0);
    assert!(
        !state
            .relation(CORP, &user, &ext)
            .unwrap()
            .tag_ids
            .contains(&tag)
    );

    let remark = |body: Value| env.post("externalcontact/remark", &token, body);
    let base = json!({"userid": user, "external_userid": ext});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    assert_eq!(
        code(&remark(base.clone()).await),
        40058,
        "nothing to change"
    );
    assert_eq!(
        code(&remark(with("remark", json!("备".repeat(21)))).await),
        40058
    );
    assert_eq!(
        code(&remark(with("description", json!("述".repeat(151)))).await),
        40058
    );
    assert_eq!(
        code(&remark(with("remark_company", json!("公".repeat(21)))).await),
        40058
    );
    assert_eq!(
        code(&remark(with("remark", json!("备".repeat(20)))).await),
        0
    );
    assert_eq!(
        code(&remark(with("remark_mobiles", json!(["13800000001"]))).await),
        0
    );
    let r = state.relation(CORP, &user, &ext).unwrap();
    assert_eq!(r.remark, "备".repeat(20));
    assert_eq!(r.remark_mobiles, vec!["13800000001".to_owned()]);
    assert_eq!(code(&remark(with("remark_mobiles", json!([""]))).await), 0);
    assert!(
        state
            .relation(CORP, &user, &ext)
            .unwrap()
            .remark_mobiles
            .is_empty()
    );
}

// -------------------------------------------------------------------------------------------
// Group chats
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn groupchat_list_pages_filters_and_get_errors() {
    let env = Env::default().await;
    let state = env.emu.state();
    let seeded = state.seed(
        CORP,
        &SeedSpec {
            group_chats: 9,
            ..small()
        },
    );
    let token = env.token().await;
    let list = |body: Value| env.post("externalcontact/groupchat/list", &token, body);
    assert_eq!(code(&list(json!({})).await), 40058, "limit is required");
    assert_eq!(code(&list(json!({"limit": 1001})).await), 40058);
    assert_eq!(code(&list(json!({"limit": 0})).await), 40058);
    let mut all = Vec::new();
    let mut cursor = String::new();
    loop {
        let v = list(json!({"limit": 2, "cursor": cursor})).await;
        assert_eq!(code(&v), 0);
        for c in v["group_chat_list"].as_array().unwrap() {
            all.push(c["chat_id"].as_str().unwrap().to_owned());
        }
        cursor = v["next_cursor"].as_str().unwrap().to_owned();
        if cursor.is_empty() {
            break;
        }
    }
    assert_eq!(
        all.iter().cloned().collect::<BTreeSet<_>>(),
        seeded.chats.iter().cloned().collect::<BTreeSet<_>>()
    );
    assert_eq!(all.len(), 9);

    let (owner, _) = state.chat(CORP, &seeded.chats[0]).unwrap();
    let owned = list(json!({"limit": 100, "owner_filter": {"userid_list": [owner]}})).await;
    let owned = owned["group_chat_list"].as_array().unwrap();
    assert!(owned.iter().any(|c| c["chat_id"] == json!(seeded.chats[0])));
    assert!(
        owned
            .iter()
            .all(|c| state.chat(CORP, c["chat_id"].as_str().unwrap()).unwrap().0 == owner)
    );

    state.depart_staff(CORP, &owner);
    let left = list(json!({"limit": 100, "status_filter": 1})).await;
    assert_eq!(
        left["group_chat_list"].as_array().unwrap().len(),
        owned.len(),
        "the departed owner's chats wait for inheritance"
    );

    let get = |chat: &str| {
        env.post(
            "externalcontact/groupchat/get",
            &token,
            json!({"chat_id": chat}),
        )
    };
    assert_eq!(code(&get("wrNOPE").await), 40050);
    let v = get(&seeded.chats[1]).await;
    assert!(
        v["group_chat"]["member_list"][0].get("name").is_none(),
        "no need_name"
    );
    state.dismiss_group_chat(CORP, &seeded.chats[1]);
    assert_eq!(code(&get(&seeded.chats[1]).await), 49008);
}

#[tokio::test]
async fn group_chat_transfers_check_owners_and_the_daily_limit() {
    let env = Env::start(EmulatorConfig {
        limits: EmulatorLimits {
            groups_per_owner_per_day: 2,
            ..EmulatorLimits::default()
        },
        ..quick()
    })
    .await;
    let state = env.emu.state();
    let chats: Vec<String> = (0..4)
        .map(|_| state.create_group_chat(CORP, "zhangsan", vec!["wmCustomer1".into()]))
        .collect();
    state.add_staff(
        CORP,
        NewStaff {
            userid: "lisi".into(),
            name: "李四".into(),
            department: vec![1],
        },
    );
    let transfer = |api: &'static str, list: Value| {
        let path = format!("externalcontact/{api}");
        let body = json!({"chat_id_list": list, "new_owner": "lisi"});
        let env = &env;
        // Fetched per call: the clock moves a day in this test.
        async move { env.post(&path, &env.token().await, body).await }
    };
    let failed = |v: &Value| -> Vec<(String, i64)> {
        v["failed_chat_list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["chat_id"].as_str().unwrap().to_owned(), code(f)))
            .collect()
    };
    // Owner still employed: the resigned API refuses, the on-job API works.
    let v = transfer("groupchat/transfer", json!([chats[0], "wrNOPE"])).await;
    assert_eq!(code(&v), 0);
    assert_eq!(
        failed(&v),
        vec![(chats[0].clone(), 90500), ("wrNOPE".to_owned(), 90501)]
    );
    let v = transfer("groupchat/onjob_transfer", json!([chats[0], chats[1]])).await;
    assert!(failed(&v).is_empty(), "{v}");
    assert_eq!(state.chat(CORP, &chats[0]).unwrap().0, "lisi");
    // zhangsan handed over 2 chats today: a third is over the limit.
    let v = transfer("groupchat/onjob_transfer", json!([chats[2]])).await;
    assert_eq!(code(&v), 45009);
    assert_eq!(
        state.chat(CORP, &chats[2]).unwrap().0,
        "zhangsan",
        "nothing changed"
    );
    // Owner left: the on-job API refuses, the resigned API works (the next day).
    state.advance_clock(Duration::from_secs(86_400));
    state.depart_staff(CORP, "zhangsan");
    let v = transfer("groupchat/onjob_transfer", json!([chats[2]])).await;
    assert_eq!(failed(&v), vec![(chats[2].clone(), 90502)]);
    let v = transfer("groupchat/transfer", json!([chats[2], chats[3]])).await;
    assert!(failed(&v).is_empty(), "{v}");
    let (owner, members) = state.chat(CORP, &chats[3]).unwrap();
    assert_eq!(owner, "lisi");
    assert!(members.contains(&"lisi".to_owned()));
    assert_eq!(
        code(&transfer("groupchat/transfer", json!([])).await),
        40058
    );
}

// -------------------------------------------------------------------------------------------
// Customer transfers
// -------------------------------------------------------------------------------------------

/// Two members with customers, and a receiver for their corp's customer events.
async fn transfer_setup() -> (Env, Receiver, String, String) {
    let env = Env::default().await;
    let receiver = Receiver::start(vec![]).await;
    let state = env.emu.state();
    state.set_callback_target(CORP, CallbackKind::Contacts, receiver.target());
    for i in 0..4 {
        state.add_customer(
            CORP,
            "zhangsan",
            NewCustomer {
                external_userid: Some(format!("wmZhangsanCustomer{i:02}AAAAAAAAAAAAA")),
                ..NewCustomer::default()
            },
        );
    }
    state.add_customer(
        CORP,
        "lisi",
        NewCustomer {
            external_userid: Some("wmLisiCustomer00AAAAAAAAAAAAAAAA".into()),
            ..NewCustomer::default()
        },
    );
    env.emu.flush_callbacks().await;
    let before = receiver.received().len();
    assert_eq!(before, 5);
    (env, receiver, "zhangsan".into(), "lisi".into())
}

async fn transfer_result(
    env: &Env,
    token: &str,
    api: &str,
    handover: &str,
    takeover: &str,
) -> Value {
    env.post(
        &format!("externalcontact/{api}"),
        token,
        json!({"handover_userid": handover, "takeover_userid": takeover}),
    )
    .await
}

#[tokio::test]
async fn onjob_transfer_takes_over_after_24_hours_with_delete_by_transfer() {
    let (env, receiver, a, b) = transfer_setup().await;
    let state = env.emu.state();
    let token = env.token().await;
    let mine = state.customers_of(CORP, &a);
    let (x, y) = (mine[0].clone(), mine[1].clone());
    state.edit_relation(
        CORP,
        &a,
        &x,
        RelationEdit {
            remark: Some("老客户".into()),
            ..RelationEdit::default()
        },
    );
    let requested = state.now();
    let v = env
        .post(
            "externalcontact/transfer_customer",
            &token,
            json!({"handover_userid": a, "takeover_userid": b,
                   "external_userid": [x, y, "wmUnknownAAAAAAAAAAAAAAAAAAAAAAAA", "wmLisiCustomer00AAAAAAAAAAAAAAAA"]}),
        )
        .await;
    assert_eq!(code(&v), 0, "{v}");
    let codes: Vec<i64> = v["customer"].as_array().unwrap().iter().map(code).collect();
    assert_eq!(codes, vec![0, 0, 40096, 40131]);

    let waiting = transfer_result(&env, &token, "transfer_result", &a, &b).await;
    let entries = waiting["customer"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    for e in entries {
        assert_eq!(e["status"], 2);
        let t = e["takeover_time"].as_i64().unwrap();
        assert!(
            (requested + 86_400..=requested + 86_402).contains(&t),
            "{e}"
        );
    }
    // In transfer already: 40129; the same member twice: 40130.
    let again = env
        .post(
            "externalcontact/transfer_customer",
            &token,
            json!({"handover_userid": a, "takeover_userid": b, "external_userid": [x]}),
        )
        .await;
    assert_eq!(code(&again["customer"][0]), 40129);
    let same = env
        .post(
            "externalcontact/transfer_customer",
            &token,
            json!({"handover_userid": a, "takeover_userid": a, "external_userid": [mine[2]]}),
        )
        .await;
    assert_eq!(code(&same["customer"][0]), 40130);

    state.advance_clock(Duration::from_secs(86_401));
    env.emu.flush_callbacks().await;
    let done = transfer_result(&env, &env.token().await, "transfer_result", &a, &b).await;
    assert!(
        done["customer"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["status"] == 1),
        "{done}"
    );
    assert!(state.relation(CORP, &a, &x).is_none());
    let moved = state.relation(CORP, &b, &x).unwrap();
    assert_eq!(moved.remark, "老客户", "the relation moves with its remark");
    assert_eq!(state.customer_owner_count(CORP, &x), 1);

    let mut by_transfer = Vec::new();
    let mut added_to_b = Vec::new();
    for e in receiver.events() {
        match e {
            CallbackEvent::ExternalContact(ExternalContactEvent::StaffDeletedCustomer(d)) => {
                assert!(d.is_by_transfer(), "only DELETE_BY_TRANSFER deletions here");
                assert_eq!(d.user_id.as_str(), a);
                by_transfer.push(d.external_user_id.as_str().to_owned());
            }
            CallbackEvent::ExternalContact(ExternalContactEvent::Added(ad))
                if ad.user_id.as_str() == b =>
            {
                added_to_b.push(ad.external_user_id.as_str().to_owned());
            }
            _ => {}
        }
    }
    by_transfer.sort();
    assert_eq!(by_transfer, vec![x.clone(), y.clone()]);
    assert!(added_to_b.contains(&x) && added_to_b.contains(&y));
    let transfers = state.transfers(CORP);
    assert!(
        transfers
            .iter()
            .all(|t| t.mode == TransferMode::OnJob && t.status == 1)
    );
}

#[tokio::test]
async fn transfer_rules_refusals_and_limits() {
    let (env, receiver, a, b) = transfer_setup().await;
    let state = env.emu.state();
    let mine = state.customers_of(CORP, &a);
    let call = |api: &'static str, handover: String, takeover: String, exts: Vec<String>| {
        let env = &env;
        async move {
            // Fetched per call: the clock moves days in this test.
            env.post(
                &format!("externalcontact/{api}"),
                &env.token().await,
                json!({"handover_userid": handover, "takeover_userid": takeover, "external_userid": exts}),
            )
            .await
        }
    };
    let too_many: Vec<String> = (0..101).map(|i| format!("wm{i}")).collect();
    assert_eq!(
        code(&call("transfer_customer", a.clone(), b.clone(), too_many).await),
        40058
    );
    assert_eq!(
        code(&call("transfer_customer", a.clone(), b.clone(), vec![]).await),
        40058
    );
    assert_eq!(
        code(
            &call(
                "resigned/transfer_customer",
                a.clone(),
                b.clone(),
                vec![mine[0].clone()]
            )
            .await
        ),
        40097,
        "the resigned API needs a departed handover"
    );
    assert_eq!(
        code(
            &call(
                "transfer_customer",
                a.clone(),
                "ghost".into(),
                vec![mine[0].clone()]
            )
            .await
        ),
        40003
    );

    // Two on-job transfers of one customer within 90 days, then 40128.
    let x = mine[0].clone();
    for (from, to) in [(&a, &b), (&b, &a)] {
        let v = call(
            "transfer_customer",
            from.clone(),
            to.clone(),
            vec![x.clone()],
        )
        .await;
        assert_eq!(code(&v["customer"][0]), 0, "{v}");
        state.advance_clock(Duration::from_secs(86_401));
    }
    assert!(state.relation(CORP, &a, &x).is_some(), "back with a");
    let third = call("transfer_customer", a.clone(), b.clone(), vec![x.clone()]).await;
    assert_eq!(code(&third["customer"][0]), 40128);

    // A customer who refuses: status 3 and transfer_fail customer_refused.
    let refuser = mine[1].clone();
    assert!(state.set_refuses_transfer(CORP, &refuser, true));
    let v = call(
        "transfer_customer",
        a.clone(),
        b.clone(),
        vec![refuser.clone()],
    )
    .await;
    assert_eq!(code(&v["customer"][0]), 0);
    let r = state.transfers(CORP).into_iter().last().unwrap();
    assert_eq!((r.status, r.takeover_time), (3, 0));

    // A taker at the limit: 40099 at call time.
    let b_count = state.customers_of(CORP, &b).len();
    state.set_customer_limit(CORP, &b, b_count);
    let v = call(
        "transfer_customer",
        a.clone(),
        b.clone(),
        vec![mine[2].clone()],
    )
    .await;
    assert_eq!(code(&v["customer"][0]), 40099);
    // …and at takeover time: status 4 and transfer_fail customer_limit_exceed.
    state.set_customer_limit(CORP, &b, b_count + 1);
    let v = call(
        "transfer_customer",
        a.clone(),
        b.clone(),
        vec![mine[2].clone()],
    )
    .await;
    assert_eq!(code(&v["customer"][0]), 0);
    state.add_customer(CORP, &b, NewCustomer::default());
    state.advance_clock(Duration::from_secs(86_401));
    env.emu.flush_callbacks().await;
    let last = state.transfers(CORP).into_iter().last().unwrap();
    assert_eq!(last.status, 4);
    assert!(
        state.relation(CORP, &a, &mine[2]).is_some(),
        "the customer stays"
    );

    let reasons: Vec<(String, TransferFailReason)> = receiver
        .events()
        .into_iter()
        .filter_map(|e| match e {
            CallbackEvent::ExternalContact(ExternalContactEvent::TransferFailed(f)) => Some((
                f.external_user_id.as_str().to_owned(),
                f.fail_reason.unwrap(),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        reasons,
        vec![
            (refuser, TransferFailReason::CustomerRefused),
            (mine[2].clone(), TransferFailReason::CustomerLimitExceed),
        ]
    );
}

#[tokio::test]
async fn resigned_transfer_moves_a_departed_members_customers() {
    let (env, receiver, a, b) = transfer_setup().await;
    let state = env.emu.state();
    let token = env.token().await;
    let mine = state.customers_of(CORP, &a);
    state.depart_staff(CORP, &a);
    let onjob = env
        .post(
            "externalcontact/transfer_customer",
            &token,
            json!({"handover_userid": a, "takeover_userid": b, "external_userid": [mine[0]]}),
        )
        .await;
    assert_eq!(
        code(&onjob),
        40131,
        "the on-job API refuses a departed handover"
    );
    let v = env
        .post(
            "externalcontact/resigned/transfer_customer",
            &token,
            json!({"handover_userid": a, "takeover_userid": b, "external_userid": mine}),
        )
        .await;
    assert!(
        v["customer"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| code(c) == 0),
        "{v}"
    );
    let unassigned = env
        .post("externalcontact/get_unassigned_list", &token, json!({}))
        .await;
    assert!(
        unassigned["info"].as_array().unwrap().is_empty(),
        "in transfer: {unassigned}"
    );
    assert_eq!(unassigned["is_last"], true);
    let again = env
        .post(
            "externalcontact/resigned/transfer_customer",
            &token,
            json!({"handover_userid": a, "takeover_userid": b, "external_userid": [mine[0]]}),
        )
        .await;
    assert_eq!(code(&again["customer"][0]), 40100);

    state.advance_clock(Duration::from_secs(86_401));
    env.emu.flush_callbacks().await;
    let result = env
        .post(
            "externalcontact/resigned/transfer_result",
            &env.token().await,
            json!({"handover_userid": a, "takeover_userid": b}),
        )
        .await;
    let statuses: Vec<i64> = result["customer"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses, vec![1; mine.len()]);
    assert!(state.customers_of(CORP, &a).is_empty());
    for ext in &mine {
        assert_eq!(state.followers(CORP, ext), vec![b.clone()]);
    }
    let deletions = receiver
        .events()
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                CallbackEvent::ExternalContact(ExternalContactEvent::StaffDeletedCustomer(_))
            )
        })
        .count();
    assert_eq!(deletions, 0, "no DELETE_BY_TRANSFER for a member who left");
}

// -------------------------------------------------------------------------------------------
// Messages, archive members, tickets
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn message_send_checks_the_app_the_receivers_and_the_size() {
    let env = Env::default().await;
    let state = env.emu.state();
    let seeded = state.seed(CORP, &small());
    let app = env.token_of(APP_SECRET).await;
    let contacts = env.token().await;
    let to = &seeded.staff[0];
    let text = |touser: &str, content: &str| json!({"touser": touser, "msgtype": "text", "agentid": AGENT, "text": {"content": content}});
    let v = env
        .post(
            "message/send",
            &app,
            text(&format!("{to}|Nobody"), "客户王总已被李四删除"),
        )
        .await;
    assert_eq!(code(&v), 0, "{v}");
    assert_eq!(
        v["invaliduser"], "nobody",
        "invalid ids come back lowercased"
    );
    assert!(v["msgid"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(
        code(&env.post("message/send", &contacts, text(to, "x")).await),
        301002
    );
    let mut other_agent = text(to, "x");
    other_agent["agentid"] = json!(AGENT + 1);
    assert_eq!(
        code(&env.post("message/send", &app, other_agent).await),
        301002
    );
    assert_eq!(
        code(
            &env.post("message/send", &app, text("nobody|ghost", "x"))
                .await
        ),
        81013
    );
    assert_eq!(
        code(
            &env.post("message/send", &app, text(to, &"字".repeat(683)))
                .await
        ),
        45002,
        "2049 bytes"
    );
    assert_eq!(
        code(
            &env.post("message/send", &app, text(to, &"a".repeat(2048)))
                .await
        ),
        0
    );
    assert_eq!(
        code(&env.post("message/send", &app, text("", "x")).await),
        82001
    );
    let mut bad_type = text(to, "x");
    bad_type["msgtype"] = json!("telegram");
    assert_eq!(code(&env.post("message/send", &app, bad_type).await), 40008);
    let sent = state.sent_messages();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0]["text"]["content"], "客户王总已被李四删除");
}

#[tokio::test]
async fn messages_over_the_per_member_limit_are_dropped_silently() {
    let env = Env::start(EmulatorConfig {
        limits: EmulatorLimits {
            message_per_user_per_minute: 3,
            ..EmulatorLimits::default()
        },
        ..quick()
    })
    .await;
    let state = env.emu.state();
    state.add_staff(
        CORP,
        NewStaff {
            userid: "lisi".into(),
            name: "李四".into(),
            department: vec![1],
        },
    );
    state.add_staff(
        CORP,
        NewStaff {
            userid: "wangwu".into(),
            name: "王五".into(),
            department: vec![1],
        },
    );
    away_from_minute_edge(Duration::from_secs(10)).await;
    let app = env.token_of(APP_SECRET).await;
    for i in 0..5 {
        let v = env
            .post(
                "message/send",
                &app,
                json!({"touser": "lisi", "msgtype": "text", "agentid": AGENT, "text": {"content": format!("告警{i}")}}),
            )
            .await;
        assert_eq!(code(&v), 0, "WeCom does not say it dropped anything");
    }
    let v = env
        .post(
            "message/send",
            &app,
            json!({"touser": "lisi|wangwu", "msgtype": "text", "agentid": AGENT, "text": {"content": "群发"}}),
        )
        .await;
    assert_eq!(code(&v), 0);
    assert_eq!(
        state.sent_messages().len(),
        4,
        "three to lisi, one reaching wangwu"
    );
    let dropped = state.dropped_messages();
    assert_eq!(dropped.len(), 3);
    assert!(
        dropped
            .iter()
            .all(|d| d.userid == "lisi" && d.agent_id == AGENT)
    );
    assert_eq!(state.stats().messages_dropped, 3);
}

/// Adds `lisi` and `wangwu` to department 1.
fn add_two_members(state: &wecom_sdk::testkit::EmulatorState) {
    for (userid, name) in [("lisi", "李四"), ("wangwu", "王五")] {
        state.add_staff(
            CORP,
            NewStaff {
                userid: userid.into(),
                name: name.into(),
                department: vec![1],
            },
        );
    }
}

/// A text message from the app that asks for the duplicate check.
fn checked_text(touser: &str, content: &str, interval: Option<i64>) -> Value {
    let mut body = json!({
        "touser": touser, "msgtype": "text", "agentid": AGENT,
        "text": {"content": content}, "enable_duplicate_check": 1,
    });
    if let Some(secs) = interval {
        body["duplicate_check_interval"] = json!(secs);
    }
    body
}

#[tokio::test]
async fn the_duplicate_check_suppresses_the_same_message_until_the_interval_passes() {
    let env = Env::default().await;
    let state = env.emu.state();
    add_two_members(&state);
    let app = env.token_of(APP_SECRET).await;
    let send = |body: Value| env.post("message/send", &app, body);

    let first = send(checked_text("lisi|nobody", "客户王总已被删除", Some(600))).await;
    assert_eq!(code(&first), 0, "{first}");
    assert_eq!(state.sent_messages().len(), 1);

    let again = send(checked_text("nobody|lisi", "客户王总已被删除", Some(600))).await;
    assert_eq!(code(&again), 0, "a duplicate is answered as usual: {again}");
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&again), keys(&first), "same shape as a delivery");
    assert_eq!(again["invaliduser"], "nobody");
    assert_eq!(
        again["msgid"], first["msgid"],
        "the delivered message's msgid"
    );
    assert_eq!(state.sent_messages().len(), 1, "not delivered again");
    assert!(state.dropped_messages().is_empty(), "not dropped either");
    assert_eq!(state.duplicates_suppressed(), 1);
    assert_eq!(state.stats().duplicates_suppressed, 1);

    let other = send(checked_text("lisi|nobody", "客户李总已被删除", Some(600))).await;
    assert_eq!(code(&other), 0);
    assert_ne!(other["msgid"], first["msgid"]);
    assert_eq!(state.sent_messages().len(), 2, "other content goes at once");
    let other_receiver = send(checked_text("wangwu", "客户王总已被删除", Some(600))).await;
    assert_eq!(code(&other_receiver), 0);
    assert_eq!(
        state.sent_messages().len(),
        3,
        "other receivers get it at once"
    );

    // The emulator clock runs on with real time too: judge "inside" with a margin.
    state.advance_clock(Duration::from_secs(540));
    send(checked_text("lisi|nobody", "客户王总已被删除", Some(600))).await;
    assert_eq!(
        state.sent_messages().len(),
        3,
        "540 s is inside the interval"
    );
    state.advance_clock(Duration::from_secs(60));
    let later = send(checked_text("lisi|nobody", "客户王总已被删除", Some(600))).await;
    assert_eq!(code(&later), 0);
    assert_ne!(later["msgid"], first["msgid"]);
    assert_eq!(
        state.sent_messages().len(),
        4,
        "delivered once the interval passed"
    );
    assert_eq!(state.duplicates_suppressed(), 2);

    // A textcard is the same message when its whole card is.
    let card = |url: &str| {
        json!({
            "touser": "lisi", "msgtype": "textcard", "agentid": AGENT, "enable_duplicate_check": 1,
            "textcard": {"title": "离职继承完成", "description": "共 120 位客户", "url": url, "btntxt": "详情"},
        })
    };
    assert_eq!(code(&send(card("https://scrm.example/t/77")).await), 0);
    assert_eq!(code(&send(card("https://scrm.example/t/77")).await), 0);
    assert_eq!(
        state.sent_messages().len(),
        5,
        "the same card is suppressed"
    );
    assert_eq!(code(&send(card("https://scrm.example/t/78")).await), 0);
    assert_eq!(
        state.sent_messages().len(),
        6,
        "another url is another card"
    );
    assert_eq!(state.duplicates_suppressed(), 3);
}

#[tokio::test]
async fn the_duplicate_interval_defaults_to_1800_s_and_is_capped_at_4_hours() {
    let env = Env::default().await;
    let state = env.emu.state();
    add_two_members(&state);
    // Hours pass on the emulator clock: fetch the app token (7200 s) before each call.
    async fn send(env: &Env, body: Value) -> Value {
        let app = env.token_of(APP_SECRET).await;
        env.post("message/send", &app, body).await
    }

    send(&env, checked_text("lisi", "默认间隔", None)).await;
    send(&env, checked_text("lisi", "最长间隔", Some(100_000))).await;
    assert_eq!(state.sent_messages().len(), 2);
    // The emulator clock runs on with real time too: judge "inside" with a margin.
    state.advance_clock(Duration::from_secs(1740));
    send(&env, checked_text("lisi", "默认间隔", None)).await;
    assert_eq!(state.sent_messages().len(), 2, "inside the default 1800 s");
    state.advance_clock(Duration::from_secs(60));
    send(&env, checked_text("lisi", "默认间隔", None)).await;
    assert_eq!(state.sent_messages().len(), 3, "1800 s later it goes");

    state.advance_clock(Duration::from_secs(14_340 - 1800));
    let v = send(&env, checked_text("lisi", "最长间隔", Some(100_000))).await;
    assert_eq!(
        code(&v),
        0,
        "a longer interval is clamped, not refused: {v}"
    );
    assert_eq!(state.sent_messages().len(), 3, "inside 4 h");
    state.advance_clock(Duration::from_secs(60));
    send(&env, checked_text("lisi", "最长间隔", Some(100_000))).await;
    assert_eq!(
        state.sent_messages().len(),
        4,
        "4 h is the longest interval"
    );
    assert_eq!(state.duplicates_suppressed(), 2);
}

#[tokio::test]
async fn without_the_duplicate_check_the_same_message_is_delivered_twice() {
    let env = Env::default().await;
    let state = env.emu.state();
    add_two_members(&state);
    let app = env.token_of(APP_SECRET).await;
    let plain =
        json!({"touser": "lisi", "msgtype": "text", "agentid": AGENT, "text": {"content": "告警"}});
    assert_eq!(
        code(&env.post("message/send", &app, plain.clone()).await),
        0
    );
    assert_eq!(
        code(&env.post("message/send", &app, plain.clone()).await),
        0
    );
    let mut off = plain.clone();
    off["enable_duplicate_check"] = json!(0);
    assert_eq!(code(&env.post("message/send", &app, off).await), 0);
    assert_eq!(state.sent_messages().len(), 3);
    assert_eq!(state.duplicates_suppressed(), 0);

    // The check compares with the last delivery, made with or without it.
    let mut on = plain;
    on["enable_duplicate_check"] = json!(1);
    assert_eq!(code(&env.post("message/send", &app, on).await), 0);
    assert_eq!(state.sent_messages().len(), 3);
    assert_eq!(state.duplicates_suppressed(), 1);
}

#[tokio::test]
async fn suppressed_duplicates_do_not_count_against_the_per_member_limit() {
    let env = Env::start(EmulatorConfig {
        limits: EmulatorLimits {
            message_per_user_per_minute: 2,
            ..EmulatorLimits::default()
        },
        ..quick()
    })
    .await;
    let state = env.emu.state();
    add_two_members(&state);
    away_from_minute_edge(Duration::from_secs(10)).await;
    let app = env.token_of(APP_SECRET).await;
    for _ in 0..5 {
        let v = env
            .post("message/send", &app, checked_text("lisi", "同一条", None))
            .await;
        assert_eq!(code(&v), 0);
    }
    env.post("message/send", &app, checked_text("lisi", "第二条", None))
        .await;
    assert_eq!(state.sent_messages().len(), 2);
    assert!(
        state.dropped_messages().is_empty(),
        "four duplicates used no quota"
    );
    assert_eq!(state.duplicates_suppressed(), 4);
    env.post("message/send", &app, checked_text("lisi", "第三条", None))
        .await;
    assert_eq!(
        state.dropped_messages().len(),
        1,
        "the limit of 2 is reached now"
    );
}

#[tokio::test]
async fn the_write_log_records_successful_writes_with_their_bodies() {
    let env = Env::default().await;
    let state = env.emu.state();
    let seeded = state.seed(CORP, &small());
    let token = env.token().await;
    let user = seeded.staff[0].clone();
    let ext = state.customers_of(CORP, &user)[0].clone();
    let tag = seeded.tag_ids[0].clone();
    let body = json!({"userid": user, "external_userid": ext, "add_tag": [tag], "remove_tag": []});

    let before = Instant::now();
    let v = env
        .post("externalcontact/mark_tag", &token, body.clone())
        .await;
    let after = Instant::now();
    assert_eq!(code(&v), 0, "{v}");
    let writes = state.writes_for("externalcontact/mark_tag");
    assert_eq!(writes.len(), 1);
    let w = &writes[0];
    assert_eq!(w.api, "externalcontact/mark_tag");
    assert_eq!(w.corp_id, CORP);
    assert_eq!(w.body, body, "the request as sent");
    assert!(before <= w.at && w.at <= after, "real time of the change");
    let unix_ms = chrono::Utc::now().timestamp_millis();
    assert!((unix_ms - 60_000..=unix_ms).contains(&w.at_unix_ms));

    // Reads are not writes; a remark is, after the mark_tag.
    env.post("externalcontact/get_corp_tag_list", &token, json!({}))
        .await;
    let remark = json!({"userid": user, "external_userid": ext, "remark": "王总"});
    assert_eq!(
        code(
            &env.post("externalcontact/remark", &token, remark.clone())
                .await
        ),
        0
    );
    let all = state.writes();
    let apis: Vec<&str> = all.iter().map(|w| w.api.as_str()).collect();
    assert_eq!(apis, ["externalcontact/mark_tag", "externalcontact/remark"]);
    assert_eq!(all[1].body, remark);
    assert!(all[0].at <= all[1].at);
    assert_eq!(state.stats().writes, 2);

    // Over HTTP, filtered by API, without the Instant.
    let resp = env
        .http
        .get(format!(
            "http://{}/testkit/writes?api=externalcontact%2Fmark_tag",
            env.emu.addr()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let listed: Value = resp.json().await.unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["api"], "externalcontact/mark_tag");
    assert_eq!(listed[0]["corp_id"], CORP);
    assert_eq!(listed[0]["body"], body);
    assert_eq!(listed[0]["at_unix_ms"], w.at_unix_ms);
    assert!(listed[0].get("at").is_none());
}

#[tokio::test]
async fn the_write_log_skips_errcodes_faults_and_limits() {
    let env = Env::start(EmulatorConfig {
        limits: EmulatorLimits {
            per_api_per_minute: 2,
            ..EmulatorLimits::default()
        },
        ..quick()
    })
    .await;
    let state = env.emu.state();
    let seeded = state.seed(CORP, &small());
    away_from_minute_edge(Duration::from_secs(10)).await;
    let token = env.token().await;
    let user = seeded.staff[0].clone();
    let ext = state.customers_of(CORP, &user)[0].clone();
    let mark = |tag: &str| {
        env.post(
            "externalcontact/mark_tag",
            &token,
            json!({"userid": user, "external_userid": ext, "add_tag": [tag]}),
        )
    };

    assert_eq!(code(&mark("etNOPE").await), 40068);
    state.inject_fault(Fault {
        api: Some("externalcontact/mark_tag".into()),
        kind: FaultKind::Busy,
        times: 1,
    });
    assert_eq!(code(&mark(&seeded.tag_ids[0]).await), -1);
    assert!(
        state.writes().is_empty(),
        "neither a 40068 nor a faulted call is a write"
    );
    assert_eq!(code(&mark(&seeded.tag_ids[0]).await), 0);
    assert_eq!(
        code(&mark(&seeded.tag_ids[0]).await),
        45009,
        "the third counted call of the minute: a faulted call is not counted"
    );
    assert_eq!(state.writes().len(), 1, "only the call answered 0");
    assert_eq!(state.writes_for("externalcontact/remark").len(), 0);
}

#[tokio::test]
async fn archive_members_and_jsapi_tickets() {
    let env = Env::default().await;
    let state = env.emu.state();
    let seeded = state.seed(CORP, &small());
    state.set_archive_permit(CORP, &seeded.staff[0], false);
    let token = env.token().await;
    let v = env
        .post("msgaudit/get_permit_user_list", &token, json!({}))
        .await;
    let ids = strings(&v["ids"]);
    assert_eq!(ids.len(), seeded.staff.len() - 1);
    assert!(!ids.contains(&seeded.staff[0]));

    let app = env.token_of(APP_SECRET).await;
    let t1 = env
        .get(&format!("get_jsapi_ticket?access_token={app}"))
        .await;
    let t2 = env
        .get(&format!("get_jsapi_ticket?access_token={app}"))
        .await;
    assert_eq!(code(&t1), 0);
    assert_eq!(t1["ticket"], t2["ticket"], "cached while valid");
    assert_eq!(t1["expires_in"], 7200);
    let agent = env
        .get(&format!("ticket/get?access_token={app}&type=agent_config"))
        .await;
    assert_eq!(code(&agent), 0);
    assert_ne!(agent["ticket"], t1["ticket"], "two kinds of ticket");
    let no_agent = env
        .get(&format!(
            "ticket/get?access_token={token}&type=agent_config"
        ))
        .await;
    assert_eq!(code(&no_agent), 40056);
    let bad_type = env
        .get(&format!("ticket/get?access_token={app}&type=x"))
        .await;
    assert_eq!(code(&bad_type), 40058);
}

// -------------------------------------------------------------------------------------------
// Admin HTTP
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_admin_api_drives_the_emulator_over_http() {
    let emu = Emulator::start(quick()).await.unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let admin = |path: &str| format!("http://{}/testkit/{path}", emu.addr());
    let post = |path: &str, body: Value| {
        let req = http.post(admin(path)).json(&body);
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    let (s, _) = post("apps", json!({"corp_id": CORP, "secret": SECRET})).await;
    assert_eq!(s, 200);
    let (s, seeded) = post(
        "seed",
        json!({"corp_id": CORP, "staff": 3, "customers": 5, "rng_seed": 1}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(seeded["staff"].as_array().unwrap().len(), 3);
    assert_eq!(seeded["customers"].as_array().unwrap().len(), 5);

    let receiver = Receiver::start(vec![]).await;
    let (s, _) = post(
        "callback-target",
        json!({"corp_id": CORP, "kind": "contacts", "url": receiver.url, "token": CB_TOKEN, "encoding_aes_key": CB_KEY}),
    )
    .await;
    assert_eq!(s, 200);
    let (s, bad) = post(
        "callback-target",
        json!({"corp_id": CORP, "kind": "contacts", "url": receiver.url, "token": CB_TOKEN, "encoding_aes_key": "short"}),
    )
    .await;
    assert_eq!(s, 400, "{bad}");
    let (s, added) = post(
        "customers",
        json!({"corp_id": CORP, "userid": "lisi", "name": "王总", "state": "expo2024"}),
    )
    .await;
    assert_eq!(s, 200);
    let ext = added["external_userid"].as_str().unwrap().to_owned();
    let (s, flushed) = post("flush", json!({})).await;
    assert_eq!(
        (s, flushed["deliveries"].as_u64()),
        (reqwest::StatusCode::OK, Some(1))
    );
    assert!(receiver.received()[0].plaintext.contains(&ext));

    let (s, _) = post(
        "faults",
        json!({"api": "gettoken", "kind": "errcode", "errcode": 45009, "times": 2}),
    )
    .await;
    assert_eq!(s, 200);
    let token_url = format!(
        "{}gettoken?corpid={CORP}&corpsecret={SECRET}",
        emu.base_url()
    );
    let v: Value = http
        .get(&token_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(code(&v), 45009);
    let resp = http.delete(admin("faults")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = http
        .get(&token_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(code(&v), 0);
    let (s, _) = post("faults", json!({"kind": "teleport"})).await;
    assert_eq!(s, 400);

    let before = emu.state().now();
    let (_, clock) = post("clock/advance", json!({"secs": 7200})).await;
    assert!(clock["now"].as_i64().unwrap() >= before + 7200);
    let v: Value = http
        .get(format!(
            "{}externalcontact/get_follow_user_list?access_token={}",
            emu.base_url(),
            v["access_token"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(code(&v), 42001, "the advanced clock expired the token");

    let (s, _) = post("down", json!({"down": true})).await;
    assert_eq!(s, 200);
    assert_eq!(http.get(&token_url).send().await.unwrap().status(), 503);
    let (s, _) = post("down", json!({"down": false})).await;
    assert_eq!(s, 200);

    let stats: Value = http
        .get(admin("stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["gettoken"], 3);
    assert_eq!(stats["calls"]["externalcontact/get_follow_user_list"], 1);
    assert_eq!(stats["total_calls"], 4);
    assert_eq!(stats["faults_fired"], 1);
    assert_eq!(stats["deliveries"], 1);
    assert_eq!(stats["delivered"], 1);
    let deliveries: Value = http
        .get(admin("deliveries"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(deliveries[0]["kind"], "contacts");
    assert_eq!(deliveries[0]["attempts"], 1);
}

#[tokio::test]
async fn dropping_the_handle_stops_the_server() {
    let emu = Emulator::start(quick()).await.unwrap();
    let addr = emu.addr();
    assert!(tokio::net::TcpStream::connect(addr).await.is_ok());
    drop(emu);
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still listening on {addr}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `POST /testkit/actions` plays what a WeCom user does, each with WeCom's callback and API state;
/// an action that cannot happen (an unknown relation, a member already gone) is a 400 and changes
/// nothing.
#[tokio::test]
async fn the_admin_api_plays_what_a_wecom_user_does() {
    let emu = Emulator::start(quick()).await.unwrap();
    let state = emu.state();
    state.add_app(CORP, SECRET, Some(AGENT));
    let seeded = state.seed(
        CORP,
        &SeedSpec {
            staff: 3,
            departments: 2,
            customers: 4,
            follows_per_customer: (1, 1),
            tag_groups: 1,
            tags_per_group: 2,
            group_chats: 1,
            members_per_chat: (2, 3),
            rng_seed: 3,
        },
    );
    let contacts = Receiver::start(vec![]).await;
    let directory = Receiver::start(vec![]).await;
    state.set_callback_target(CORP, CallbackKind::Contacts, contacts.target());
    state.set_callback_target(CORP, CallbackKind::Directory, directory.target());
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("http://{}/testkit/actions", emu.addr());
    let act = |body: Value| {
        let req = http.post(&url).json(&body);
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    let customer = seeded.customers[0].clone();
    let owner = state.followers(CORP, &customer)[0].clone();

    // The member tags the customer in the WeCom client.
    let tag = seeded.tag_ids[0].clone();
    let (s, _) = act(
        json!({"action": "edit_customer", "corp_id": CORP, "userid": owner,
        "external_userid": customer, "add_tags": [tag], "remark": "老客户"}),
    )
    .await;
    assert_eq!(s, 200);
    let relation = state.relation(CORP, &owner, &customer).unwrap();
    assert!(relation.tag_ids.contains(&tag));
    assert_eq!(relation.remark, "老客户");
    // An admin creates a tag; the customer deletes the member; the member deletes another.
    let (s, created) = act(
        json!({"action": "create_tag", "corp_id": CORP, "group": "意向",
        "name": "高意向"}),
    )
    .await;
    assert_eq!(s, 200);
    assert!(created["tag_id"].as_str().is_some_and(|t| !t.is_empty()));
    let (s, _) = act(json!({"action": "customer_deletes_staff", "corp_id": CORP,
        "userid": owner, "external_userid": customer}))
    .await;
    assert_eq!(s, 200);
    assert!(
        state
            .relation(CORP, &owner, &customer)
            .unwrap()
            .deleted_by_customer
    );
    let other = seeded.customers[1].clone();
    let other_owner = state.followers(CORP, &other)[0].clone();
    let (s, _) = act(json!({"action": "staff_deletes_customer", "corp_id": CORP,
        "userid": other_owner, "external_userid": other}))
    .await;
    assert_eq!(s, 200);
    assert!(state.relation(CORP, &other_owner, &other).is_none());
    let (s, again) = act(json!({"action": "staff_deletes_customer", "corp_id": CORP,
        "userid": other_owner, "external_userid": other}))
    .await;
    assert_eq!(s, 400, "{again}");
    // A member moves department, another resigns (twice: the second changes nothing).
    let (s, _) = act(
        json!({"action": "staff_moves", "corp_id": CORP, "userid": seeded.staff[0],
        "department": [seeded.departments[0]]}),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) =
        act(json!({"action": "staff_resigns", "corp_id": CORP, "userid": seeded.staff[1]})).await;
    assert_eq!(s, 200);
    let (s, _) =
        act(json!({"action": "staff_resigns", "corp_id": CORP, "userid": seeded.staff[1]})).await;
    assert_eq!(s, 400);
    // A customer joins the group chat, then leaves it.
    let chat = seeded.chats[0].clone();
    let joiner = seeded.customers[3].clone();
    let (s, _) = act(
        json!({"action": "join_group", "corp_id": CORP, "chat_id": chat,
        "members": [joiner]}),
    )
    .await;
    assert_eq!(s, 200);
    assert!(state.chat(CORP, &chat).unwrap().1.contains(&joiner));
    let (s, _) = act(
        json!({"action": "leave_group", "corp_id": CORP, "chat_id": chat,
        "members": [joiner]}),
    )
    .await;
    assert_eq!(s, 200);
    assert!(!state.chat(CORP, &chat).unwrap().1.contains(&joiner));
    // A message in a 1:1 chat is archived.
    let before = state.archive_newest_seq(CORP);
    let (s, sent) = act(
        json!({"action": "chat_message", "corp_id": CORP, "from": seeded.staff[2],
        "to": [seeded.customers[2]], "content": "您好，资料已发"}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(sent["seq"].as_u64(), Some(before + 1));
    assert!(
        sent["msgid"]
            .as_str()
            .is_some_and(|m| m.ends_with("_external"))
    );
    // Bad input: an unknown action, a missing field.
    let (s, bad) = act(json!({"action": "teleport", "corp_id": CORP})).await;
    assert_eq!(s, 400, "{bad}");
    let (s, _) = act(json!({"action": "staff_resigns", "corp_id": CORP})).await;
    assert_eq!(s, 400);

    state.flush_callbacks().await;
    let pushed: Vec<String> = contacts
        .received()
        .into_iter()
        .map(|r| r.plaintext)
        .collect();
    for change in [
        "edit_external_contact",
        "del_follow_user",
        "del_external_contact",
        "<ChangeType><![CDATA[create]]></ChangeType>",
        "add_member",
        "del_member",
    ] {
        assert!(
            pushed.iter().any(|p| p.contains(change)),
            "{change} in {pushed:#?}"
        );
    }
    let directory: Vec<String> = directory
        .received()
        .into_iter()
        .map(|r| r.plaintext)
        .collect();
    assert!(
        directory.iter().any(|p| p.contains("update_user")
            && p.contains(&format!(
                "<MainDepartment><![CDATA[{}]]></MainDepartment>",
                seeded.departments[0]
            ))),
        "{directory:#?}"
    );
    assert_eq!(
        directory
            .iter()
            .filter(|p| p.contains("delete_user"))
            .count(),
        1
    );
}
