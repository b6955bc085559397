//! Compliance alerts through the emulator's callbacks: a staff member deleting a customer (and
//! many at once), a customer leaving, a relation vanished without an event, content rules on
//! messages to the app; delivery to the emulator's `message/send`; the lifecycle through the API.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly"
)]

use crate::common::{Backend, CORP};
use crate::emulated::{AGENT_ID, EmulatedApp, Options, eventually, wait_outbox_idle};
use crate::{common, emulated};
use serde_json::{Value, json};
use wecom_sdk::testkit::{CallbackKind, CallbackTarget, NewCustomer, NewStaff, SeedSpec};

both_backends!(
    a_deletion_alerts_compliance_and_the_manager_once,
    a_deletion_by_transfer_raises_nothing,
    many_deletions_make_one_mass_deletion_alert,
    a_customer_leaving_is_a_notice_to_the_staff_member,
    a_vanished_relation_is_treated_like_a_deletion,
    a_recipient_who_left_is_skipped_and_recorded,
    messages_to_the_app_are_scanned_for_content_rules,
    the_lifecycle_works_through_the_api_and_is_authorized,
);
both_backends!(a_configured_rule_library_scopes_rules_and_adds_their_recipients);
both_backends!(a_retroactive_scan_finds_old_messages_once);
both_backends!(changing_the_rule_library_rescans_stored_messages);

/// A broken rule library stops `serve` at start, naming the rule and the field.
#[tokio::test]
async fn a_broken_rule_library_stops_startup() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.toml"),
        "[[rule]]\nid = \"bad_one\"\nname = \"x\"\ncategory = \"x\"\nseverity = \"medium\"\n\
         regex = [\"(unclosed\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("scrm.toml"),
        "listen = \"127.0.0.1:0\"\n[alerts]\nrules_file = \"rules.toml\"\n",
    )
    .unwrap();
    let out = common::scrm(dir.path(), &["serve"]).await;
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("rules_file")
            && out.stderr.contains("bad_one")
            && out.stderr.contains("regex"),
        "{}",
        out.stderr
    );
}

/// Staff: `[0]` the salesperson, `[1]` their manager, `[2]` compliance.
struct Fixture {
    app: EmulatedApp,
    staff: Vec<String>,
}

/// The compliance officer every alert of the corp goes to.
const COMPLIANCE: &str = "hegui01";

async fn fixture_with(backend: Backend, extra: &str) -> Fixture {
    let app = EmulatedApp::spawn_with(
        backend,
        Options {
            extra_config: format!(
                "[alerts]\nconsole_url = \"https://scrm.example.com\"\nmass_deletion_count = 5\n{extra}"
            ),
            corp_config: format!("alert_recipients = [\"{COMPLIANCE}\"]"),
            ..Options::default()
        },
    )
    .await;
    let seeded = app.wecom().seed(
        CORP,
        &SeedSpec {
            staff: 2,
            departments: 1,
            customers: 0,
            group_chats: 0,
            rng_seed: 7,
            ..SeedSpec::default()
        },
    );
    assert!(app.wecom().add_staff(
        CORP,
        NewStaff {
            userid: COMPLIANCE.to_owned(),
            name: "合规李娜".to_owned(),
            department: Vec::new(),
        },
    ));
    app.settle().await;
    // What change_contact would have told us: staff[1] leads staff[0].
    scrm::domain::staff::upsert(
        &app.db,
        CORP,
        &scrm::domain::staff::StaffUpdate {
            user_id: seeded.staff[0].clone(),
            direct_leaders: Some(vec![seeded.staff[1].clone()]),
            ..Default::default()
        },
        scrm::platform::db::now_ms(),
    )
    .await
    .unwrap();
    let mut staff = seeded.staff;
    staff.push(COMPLIANCE.to_owned());
    Fixture { app, staff }
}

fn point_app_messages(f: &Fixture) {
    f.app.wecom().set_callback_target(
        CORP,
        CallbackKind::App(AGENT_ID),
        CallbackTarget {
            url: f.app.server.callback_url("contacts"),
            token: common::TOKEN.to_owned(),
            encoding_aes_key: common::KEY.to_owned(),
        },
    );
}

async fn fixture(backend: Backend) -> Fixture {
    fixture_with(backend, "").await
}

impl Fixture {
    fn add_customer(&self, user: &str, name: &str) -> String {
        self.app.wecom().add_customer(
            CORP,
            user,
            NewCustomer {
                name: name.to_owned(),
                ..NewCustomer::default()
            },
        )
    }

    async fn alerts(&self) -> Vec<scrm::domain::alerts::Alert> {
        scrm::domain::alerts::list(
            &self.app.db,
            CORP,
            &scrm::domain::alerts::AlertFilter {
                limit: 500,
                ..Default::default()
            },
        )
        .await
        .unwrap()
    }

    /// The text cards WeCom delivered, as (touser, title).
    fn cards(&self) -> Vec<(String, String)> {
        self.app
            .wecom()
            .sent_messages()
            .iter()
            .filter(|m| m["msgtype"] == "textcard")
            .map(|m| {
                (
                    m["touser"].as_str().unwrap_or_default().to_owned(),
                    m["textcard"]["title"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect()
    }

    async fn settle(&self) {
        self.app.settle().await;
        wait_outbox_idle(&self.app.db).await;
    }
}

fn users(touser: &str) -> Vec<String> {
    let mut u: Vec<String> = touser.split('|').map(str::to_owned).collect();
    u.sort();
    u
}

async fn a_deletion_alerts_compliance_and_the_manager_once(backend: Backend) {
    let f = fixture(backend).await;
    let (sales, manager, compliance) = (&f.staff[0], &f.staff[1], &f.staff[2]);
    let ext = f.add_customer(sales, "王总");
    f.settle().await;
    assert!(f.app.wecom().staff_deletes_customer(CORP, sales, &ext));
    f.settle().await;

    let alerts = f.alerts().await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let a = &alerts[0];
    assert_eq!(
        (a.kind.as_str(), a.severity.as_str(), a.state.as_str()),
        ("staff_deleted_customer", "high", "open")
    );
    assert_eq!(a.staff_user_id, *sales);
    assert_eq!(a.external_user_id.as_deref(), Some(ext.as_str()));
    assert!(
        a.title.contains("王总") && a.title.contains("删除了客户"),
        "{}",
        a.title
    );
    let cards = f.cards();
    assert_eq!(cards.len(), 1, "{cards:?}");
    let mut expected = vec![manager.clone(), compliance.clone()];
    expected.sort();
    assert_eq!(users(&cards[0].0), expected);
    let sent = f.app.wecom().sent_messages();
    let card = &sent.iter().find(|m| m["msgtype"] == "textcard").unwrap()["textcard"];
    assert_eq!(
        card["url"],
        json!(format!("https://scrm.example.com/console/alerts/{}", a.id))
    );

    // The evidence carries the relation's history; the API shows it to compliance.
    let api = f.app.api("compliance", Some(compliance)).await;
    let (status, body) = api.get(&format!("/api/v1/alerts/{}", a.id)).await;
    assert_eq!(status, 200, "{body}");
    let history: Vec<&str> = body["evidence"][0]["detail"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["change"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["added", "deleted_by_staff"]);
    assert_eq!(body["deliveries"].as_array().unwrap().len(), 2, "{body}");
    assert!(
        body["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["state"] == "done"),
        "{body}"
    );

    // Replaying the event raises nothing new and sends nothing again.
    let n = scrm::pipeline::inbox::replay(
        &f.app.db,
        &scrm::pipeline::inbox::ReplayFilter {
            event_type: Some("del_external_contact".to_owned()),
            ..Default::default()
        },
        scrm::platform::db::now_ms(),
    )
    .await
    .unwrap();
    assert_eq!(n, 1);
    f.settle().await;
    let again = f.alerts().await;
    assert_eq!((again.len(), again[0].evidence_count), (1, 1));
    assert_eq!(f.cards().len(), 1);
    f.app.stop().await;
}

async fn a_deletion_by_transfer_raises_nothing(backend: Backend) {
    let f = fixture(backend).await;
    let sales = &f.staff[0];
    let ext = f.add_customer(sales, "李总");
    f.settle().await;
    // WeCom removes the relation of a handed-over customer with Source=DELETE_BY_TRANSFER.
    assert!(f.app.wecom().remove_relation_silently(CORP, sales, &ext));
    let now = chrono::Utc::now().timestamp();
    f.app.wecom().push_raw(
        CORP,
        CallbackKind::Contacts,
        &format!(
            "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
             <CreateTime>{now}</CreateTime><MsgType><![CDATA[event]]></MsgType>\
             <Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[del_external_contact]]></ChangeType>\
             <UserID><![CDATA[{sales}]]></UserID><ExternalUserID><![CDATA[{ext}]]></ExternalUserID>\
             <Source><![CDATA[DELETE_BY_TRANSFER]]></Source></xml>"
        ),
    );
    f.settle().await;
    let relation = scrm::domain::customers::get_relation(
        &f.app.db,
        crate::common::Rel::in_corp(CORP, sales, &ext).key(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(relation.status, "transferred");
    assert!(f.alerts().await.is_empty());
    assert!(f.cards().is_empty());
    f.app.stop().await;
}

async fn many_deletions_make_one_mass_deletion_alert(backend: Backend) {
    let f = fixture(backend).await;
    let sales = &f.staff[0];
    let customers: Vec<String> = (0..7)
        .map(|i| f.add_customer(sales, &format!("客户{i}")))
        .collect();
    f.settle().await;
    for ext in &customers {
        assert!(f.app.wecom().staff_deletes_customer(CORP, sales, ext));
    }
    f.settle().await;
    let alerts = f.alerts().await;
    assert_eq!(alerts.len(), 1, "one aggregated alert, not 7: {alerts:?}");
    let a = &alerts[0];
    assert_eq!(
        (a.kind.as_str(), a.severity.as_str(), a.evidence_count),
        ("mass_deletion", "critical", 7)
    );
    assert!(
        a.title.contains("批量") || a.title.contains("位客户"),
        "{}",
        a.title
    );
    // Two messages: the first deletion, and the escalation past 5.
    let cards = f.cards();
    assert_eq!(cards.len(), 2, "{cards:?}");
    assert!(cards[1].1.contains("删除了 6 位客户"), "{cards:?}");
    let (_, history, _) = scrm::domain::alerts::details(&f.app.db, a.id)
        .await
        .unwrap();
    let actions: Vec<&str> = history.iter().map(|h| h.action.as_str()).collect();
    assert_eq!(actions, ["created", "escalated"]);
    // Another staff member's deletion is their own alert.
    let other = f.add_customer(&f.staff[1], "赵总");
    f.settle().await;
    assert!(
        f.app
            .wecom()
            .staff_deletes_customer(CORP, &f.staff[1], &other)
    );
    f.settle().await;
    assert_eq!(f.alerts().await.len(), 2);
    f.app.stop().await;
}

async fn a_customer_leaving_is_a_notice_to_the_staff_member(backend: Backend) {
    let f = fixture(backend).await;
    let sales = &f.staff[0];
    let ext = f.add_customer(sales, "周总");
    f.settle().await;
    assert!(f.app.wecom().customer_deletes_staff(CORP, sales, &ext));
    f.settle().await;
    let alerts = f.alerts().await;
    assert_eq!(alerts.len(), 1);
    assert_eq!(
        (alerts[0].kind.as_str(), alerts[0].severity.as_str()),
        ("customer_deleted_staff", "low")
    );
    let cards = f.cards();
    assert_eq!(cards.len(), 1);
    assert_eq!(cards[0].0, *sales, "流失提醒 goes to the staff member only");
    assert!(cards[0].1.contains("周总"), "{cards:?}");
    f.app.stop().await;
}

async fn a_vanished_relation_is_treated_like_a_deletion(backend: Backend) {
    let f = fixture(backend).await;
    let sales = &f.staff[0];
    let ext = f.add_customer(sales, "吴总");
    f.settle().await;
    // Gone from WeCom, and no callback ever came: the reconciliation finds it.
    assert!(f.app.wecom().remove_relation_silently(CORP, sales, &ext));
    let config =
        scrm::platform::config::Config::from_toml(&f.app.config_text, &Default::default()).unwrap();
    let wecom = scrm::platform::wecom::Wecom::new(
        &config,
        std::sync::Arc::new(wecom_sdk::MemoryCoordinator::new()),
    )
    .unwrap();
    let (_, summary) = scrm::app::sync::run(
        &f.app.db,
        &wecom,
        &crate::common::corp(CORP),
        "test",
        None,
        &|_| {},
    )
    .await
    .unwrap();
    assert_eq!(summary.vanished, 1);
    wait_outbox_idle(&f.app.db).await;
    let alerts = f.alerts().await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].kind, "relation_vanished");
    assert_eq!(alerts[0].severity, "high");
    assert!(
        alerts[0].title.contains("未收到删除事件"),
        "{}",
        alerts[0].title
    );
    let (evidence, _, _) = scrm::domain::alerts::details(&f.app.db, alerts[0].id)
        .await
        .unwrap();
    let detail: Value = serde_json::from_str(&evidence[0].detail).unwrap();
    assert!(
        detail["source"].as_str().unwrap().starts_with("sync:"),
        "{detail}"
    );
    assert_eq!(f.cards().len(), 1);
    f.app.stop().await;
}

async fn a_recipient_who_left_is_skipped_and_recorded(backend: Backend) {
    let f = fixture(backend).await;
    let (sales, manager, compliance) = (&f.staff[0], &f.staff[1], &f.staff[2]);
    scrm::domain::staff::mark_departed(
        &f.app.db,
        &crate::common::corp(CORP),
        &crate::common::user(manager),
        1,
        scrm::platform::db::now_ms(),
    )
    .await
    .unwrap();
    let ext = f.add_customer(sales, "郑总");
    f.settle().await;
    assert!(f.app.wecom().staff_deletes_customer(CORP, sales, &ext));
    f.settle().await;
    let cards = f.cards();
    assert_eq!(cards.len(), 1);
    assert_eq!(
        cards[0].0, *compliance,
        "the departed manager is not messaged"
    );
    let alert = &f.alerts().await[0];
    let (_, _, deliveries) = scrm::domain::alerts::details(&f.app.db, alert.id)
        .await
        .unwrap();
    let skipped: Vec<_> = deliveries.iter().filter(|d| d.skipped.is_some()).collect();
    assert_eq!(skipped.len(), 1, "{deliveries:?}");
    assert_eq!(skipped[0].recipient, *manager);
    assert!(skipped[0].skipped.as_deref().unwrap().contains("离职"));
    f.app.stop().await;
}

async fn messages_to_the_app_are_scanned_for_content_rules(backend: Backend) {
    let f = fixture(backend).await;
    let sales = &f.staff[0];
    point_app_messages(&f);
    // Innocent look-alike: nothing.
    f.app.wecom().app_text_message(
        CORP,
        AGENT_ID,
        sales,
        "我们不接受私下转账，请转到公司对公账户",
    );
    f.settle().await;
    assert!(f.alerts().await.is_empty(), "{:?}", f.alerts().await);
    // An evasion: spaced out, traditional characters.
    let text = "您好，钱直接私 下 轉 賬給我就行";
    f.app.wecom().app_text_message(CORP, AGENT_ID, sales, text);
    f.settle().await;
    let alerts = f.alerts().await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].kind, "content");
    assert_eq!(alerts[0].category.as_deref(), Some("private_payment"));
    let (evidence, _, _) = scrm::domain::alerts::details(&f.app.db, alerts[0].id)
        .await
        .unwrap();
    assert_eq!(evidence[0].text.as_deref(), Some(text));
    let spans: Vec<(usize, usize)> = serde_json::from_str(&evidence[0].spans).unwrap();
    let chars: Vec<char> = text.chars().collect();
    let hit: String = spans
        .iter()
        .flat_map(|&(a, b)| chars[a..b].iter())
        .collect();
    assert!(
        hit.contains('私') && hit.contains('賬'),
        "{spans:?} → {hit}"
    );
    // A second hit of the same rule by the same person joins the alert.
    f.app
        .wecom()
        .app_text_message(CORP, AGENT_ID, sales, "私下转账更便宜");
    f.settle().await;
    let alerts = f.alerts().await;
    assert_eq!(
        (alerts.len(), alerts[0].evidence_count),
        (1, 2),
        "{alerts:?}"
    );
    assert_eq!(f.cards().len(), 1, "one message per burst");
    f.app.stop().await;
}

async fn the_lifecycle_works_through_the_api_and_is_authorized(backend: Backend) {
    let f = fixture(backend).await;
    let (sales, compliance) = (&f.staff[0], &f.staff[2]);
    let ext = f.add_customer(sales, "孙总");
    f.settle().await;
    assert!(f.app.wecom().staff_deletes_customer(CORP, sales, &ext));
    f.settle().await;
    let id = f.alerts().await[0].id;
    let path = |step: &str| format!("/api/v1/alerts/{id}/{step}");

    // Without credentials 401, for a salesperson 403; nothing changes.
    let anonymous = emulated::Api::new(&f.app.server.base_url, "scrm_000000000000_nothing");
    assert_eq!(anonymous.get("/api/v1/alerts").await.0, 401);
    let seller = f.app.api("sales", Some(sales)).await;
    assert_eq!(seller.get("/api/v1/alerts").await.0, 403);
    assert_eq!(seller.post(&path("resolve"), json!({})).await.0, 403);
    assert_eq!(f.alerts().await[0].state, "open");

    let api = f.app.api("compliance", Some(compliance)).await;
    let (status, list) = api
        .get("/api/v1/alerts?state=open&kind=staff_deleted_customer")
        .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["alerts"].as_array().unwrap().len(), 1);
    let (status, list) = api.get("/api/v1/alerts?state=resolved").await;
    assert_eq!((status, list["alerts"].as_array().unwrap().len()), (200, 0));
    let (status, bad) = api.get("/api/v1/alerts?state=closed").await;
    assert_eq!(
        (status, bad["field"].clone()),
        (422, json!("state")),
        "{bad}"
    );

    // Reopen is only for closed alerts; resolve after acknowledge; reopen; false positive.
    let (status, _) = api.post(&path("reopen"), json!({})).await;
    assert_eq!(status, 409);
    let (status, body) = api
        .post(&path("acknowledge"), json!({"comment": "已联系该员工"}))
        .await;
    assert_eq!(
        (status, body["state"].clone()),
        (200, json!("acknowledged")),
        "{body}"
    );
    let (status, _) = api.post(&path("acknowledge"), json!({})).await;
    assert_eq!(status, 409, "acknowledging twice is a conflict");
    let (status, body) = api
        .post(
            &path("resolve"),
            json!({"comment": "客户主动要求删除，已核实"}),
        )
        .await;
    assert_eq!((status, body["state"].clone()), (200, json!("resolved")));
    let (status, body) = api.post(&path("reopen"), json!({"comment": "复查"})).await;
    assert_eq!((status, body["state"].clone()), (200, json!("open")));
    let (status, body) = api.post(&path("false-positive"), json!({})).await;
    assert_eq!(
        (status, body["state"].clone()),
        (200, json!("false_positive"))
    );
    let long = "长".repeat(2001);
    let (status, body) = api.post(&path("reopen"), json!({"comment": long})).await;
    assert_eq!(
        (status, body["field"].clone()),
        (422, json!("comment")),
        "{body}"
    );
    let (status, body) = api.post(&path("reopen"), json!({"note": "x"})).await;
    assert_eq!(status, 422, "unknown fields are refused: {body}");
    let (status, _) = api.post("/api/v1/alerts/999999/resolve", json!({})).await;
    assert_eq!(status, 404);

    let (status, detail) = api.get(&format!("/api/v1/alerts/{id}")).await;
    assert_eq!(status, 200);
    let steps: Vec<(String, String)> = detail["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["action"].as_str().unwrap().to_owned(),
                h["actor"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("created".to_owned(), "system".to_owned()),
            ("acknowledge".to_owned(), compliance.clone()),
            ("resolve".to_owned(), compliance.clone()),
            ("reopen".to_owned(), compliance.clone()),
            ("false_positive".to_owned(), compliance.clone()),
        ]
    );
    assert_eq!(detail["history"][1]["comment"], json!("已联系该员工"));
    assert_eq!(detail["alert"]["state"], json!("false_positive"));

    // Every endpoint is in the OpenAPI document.
    let doc: Value = reqwest::get(format!("{}/api/openapi.json", f.app.server.base_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for p in [
        "/api/v1/alerts",
        "/api/v1/alerts/{id}",
        "/api/v1/alerts/{id}/acknowledge",
        "/api/v1/alerts/{id}/resolve",
        "/api/v1/alerts/{id}/false-positive",
        "/api/v1/alerts/{id}/reopen",
    ] {
        assert!(doc["paths"][p].is_object(), "{p} missing");
    }
    eventually("nothing pending", || async {
        scrm::pipeline::outbox::stats(&f.app.db, None, scrm::platform::db::now_ms())
            .await
            .unwrap()
            .pending
            == 0
    })
    .await;
    f.app.stop().await;
}

async fn a_configured_rule_library_scopes_rules_and_adds_their_recipients(backend: Backend) {
    // The two seeded userids are deterministic for a seed; read them from a throwaway emulator.
    let probe = wecom_sdk::testkit::Emulator::start(emulated::quick_emulator())
        .await
        .unwrap();
    let staff = probe
        .state()
        .seed(
            CORP,
            &SeedSpec {
                staff: 2,
                departments: 1,
                customers: 0,
                group_chats: 0,
                rng_seed: 7,
                ..SeedSpec::default()
            },
        )
        .staff;
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        format!(
            "[[rule]]\nid = \"coupon_leak\"\nname = \"泄露内部折扣码\"\ncategory = \"leak\"\n\
             severity = \"medium\"\nkeywords = [\"内部折扣码\"]\nstaff = [\"{}\"]\n\
             recipients = [\"{}\"]\n",
            staff[0], staff[1]
        ),
    )
    .unwrap();
    let f = fixture_with(backend, &format!("rules_file = \"{}\"\n", rules.display())).await;
    assert_eq!(
        f.staff[..2],
        staff[..],
        "the same seed gives the same staff"
    );
    point_app_messages(&f);
    // The rule is scoped to staff[0]: staff[1] saying it raises nothing.
    f.app
        .wecom()
        .app_text_message(CORP, AGENT_ID, &f.staff[1], "这是内部折扣码 VIP2026");
    f.settle().await;
    assert!(f.alerts().await.is_empty());
    // The default library is replaced: its phrases raise nothing either.
    f.app
        .wecom()
        .app_text_message(CORP, AGENT_ID, &f.staff[0], "私下转账给我");
    f.settle().await;
    assert!(f.alerts().await.is_empty());
    f.app
        .wecom()
        .app_text_message(CORP, AGENT_ID, &f.staff[0], "内 部 折 扣 码 发你了");
    f.settle().await;
    let alerts = f.alerts().await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(
        (alerts[0].rule_id.as_deref(), alerts[0].category.as_deref()),
        (Some("coupon_leak"), Some("leak"))
    );
    // Compliance, the manager (staff[1] leads staff[0]) and the rule's recipient (staff[1] again:
    // once).
    let cards = f.cards();
    assert_eq!(cards.len(), 1);
    let mut expected = vec![f.staff[1].clone(), COMPLIANCE.to_owned()];
    expected.sort();
    assert_eq!(users(&cards[0].0), expected);
    f.app.stop().await;
}

async fn a_retroactive_scan_finds_old_messages_once(backend: Backend) {
    let f = fixture(backend).await;
    point_app_messages(&f);
    let sales = &f.staff[0];
    // Said before any rule knew the phrase.
    f.app
        .wecom()
        .app_text_message(CORP, AGENT_ID, sales, "这是内部折扣码 VIP2026，别外传");
    f.settle().await;
    assert!(f.alerts().await.is_empty());

    let library = scrm::domain::scan::RuleLibrary::from_toml(
        "[[rule]]\nid = \"coupon_leak\"\nname = \"泄露内部折扣码\"\ncategory = \"leak\"\n\
         severity = \"medium\"\nkeywords = [\"内部折扣码\"]\n",
    )
    .unwrap();
    let config =
        scrm::platform::config::Config::from_toml(&f.app.config_text, &Default::default()).unwrap();
    let wecom = scrm::platform::wecom::Wecom::new(
        &config,
        std::sync::Arc::new(wecom_sdk::MemoryCoordinator::new()),
    )
    .unwrap();
    let library =
        scrm::domain::rule_book::RuleBook::new(f.app.db.clone(), std::sync::Arc::new(library));
    let job = scrm::app::rescan::start(&f.app.db, CORP, 0).await.unwrap();
    let summary = scrm::app::rescan::run(&f.app.db, &wecom, &library, job, "t1")
        .await
        .unwrap();
    assert_eq!(
        (summary.messages, summary.hits, summary.alerts_opened),
        (1, 1, 1)
    );
    let alerts = f.alerts().await;
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].rule_id.as_deref(), Some("coupon_leak"));
    let done = scrm::pipeline::jobs::get(&f.app.db, job).await.unwrap();
    assert_eq!((done.state.as_str(), done.progress_done), ("done", 1));
    // Again: nothing new.
    let job = scrm::app::rescan::start(&f.app.db, CORP, 0).await.unwrap();
    let summary = scrm::app::rescan::run(&f.app.db, &wecom, &library, job, "t2")
        .await
        .unwrap();
    assert_eq!(
        (summary.messages, summary.hits, summary.alerts_opened),
        (1, 0, 0)
    );
    assert_eq!(f.alerts().await[0].evidence_count, 1);

    // Through the API (admin only; the server's library), progress at /jobs/{id}.
    let seller = f.app.api("sales", Some(sales)).await;
    assert_eq!(seller.post("/api/v1/alerts/rescan", json!({})).await.0, 403);
    let admin = f.app.api("admin", None).await;
    let (status, body) = admin
        .post("/api/v1/alerts/rescan", json!({"days": 0}))
        .await;
    assert_eq!(
        (status, body["field"].clone()),
        (422, json!("days")),
        "{body}"
    );
    let (status, body) = admin
        .post("/api/v1/alerts/rescan", json!({"days": 7}))
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["job_id"].as_i64().unwrap();
    eventually("the scan is done", || async {
        admin.get(&format!("/api/v1/jobs/{id}")).await.1["state"] == "done"
    })
    .await;

    // The command line lists the alert.
    let path = f.app.test_db.dir.path().join("cli.toml");
    std::fs::write(&path, &f.app.config_text).unwrap();
    let out = common::scrm(
        f.app.test_db.dir.path(),
        &[
            "--config",
            path.to_str().unwrap(),
            "alerts",
            "list",
            "--json",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let listed: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["rule_id"], json!("coupon_leak"));
    f.app.stop().await;
}

async fn changing_the_rule_library_rescans_stored_messages(backend: Backend) {
    let mut f = fixture(backend).await;
    point_app_messages(&f);
    f.app
        .wecom()
        .app_text_message(CORP, AGENT_ID, &f.staff[0], "这是内部折扣码 VIP2026");
    f.settle().await;
    assert!(f.alerts().await.is_empty());
    // An operator adds a rule and restarts.
    f.app.server.stop().await;
    let rules = f.app.test_db.dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nid = \"coupon_leak\"\nname = \"泄露内部折扣码\"\ncategory = \"leak\"\n\
         severity = \"medium\"\nkeywords = [\"内部折扣码\"]\n",
    )
    .unwrap();
    let text = f.app.config_text.replacen(
        "[alerts]\n",
        &format!("[alerts]\nrules_file = \"{}\"\n", rules.display()),
        1,
    );
    let mut second = emulated::Instance::start(&text).await;
    eventually("the stored message is scanned again", || async {
        f.alerts().await.len() == 1
    })
    .await;
    assert_eq!(f.alerts().await[0].rule_id.as_deref(), Some("coupon_leak"));
    second.stop().await;
    // The same library again: no new scan.
    let mut third = emulated::Instance::start(&text).await;
    let jobs = scrm::pipeline::jobs::list(&f.app.db, Some(CORP), scrm::app::rescan::JOB_KIND, 10)
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    third.stop().await;
    f.app.stop().await;
}

/// A stand-in for a self-hosted language model behind the judge protocol: "yes" to texts naming
/// 那份, a slow answer to texts with 慢, "no" to the rest; it counts the questions.
async fn spawn_judge() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let asked = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    let app = axum::Router::new().route(
        "/judge",
        axum::routing::post(move |body: axum::Json<Value>| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let text = body["text"].as_str().unwrap_or_default().to_owned();
                if text.contains('慢') {
                    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
                }
                axum::Json(if text.contains("那份") {
                    json!({"alert": true, "category": "kickback", "reason": "事成之后的好处"})
                } else {
                    json!({"alert": false})
                })
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/judge"), asked)
}

/// The external judge is asked about the messages without a rule's hit whose score is borderline
/// (here every score, to make the test independent of the model's weights), within its budget and
/// timeout; its "yes" raises an alert of its category with its reason, its "no" raises nothing, and
/// a message a rule catches never waits for it.
#[tokio::test]
async fn an_external_judge_decides_borderline_messages() {
    use std::sync::atomic::Ordering;
    let (url, asked) = spawn_judge().await;
    let f = fixture_with(
        Backend::Sqlite,
        &format!(
            "\n[judge]\nurl = \"{url}\"\ntimeout_ms = 300\nmax_per_minute = 3\nlow = 0.0\nhigh = 1.0\n"
        ),
    )
    .await;
    let sales = &f.staff[0];
    point_app_messages(&f);
    let say = |text: &str| f.app.wecom().app_text_message(CORP, AGENT_ID, sales, text);
    // The judge says no: nothing, whatever the model thought.
    say("周五的会改到下午三点了");
    f.settle().await;
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    assert!(f.alerts().await.is_empty(), "{:?}", f.alerts().await);
    // The judge says yes: an alert of its category, its reason in the evidence.
    say("这个项目您多帮忙，回头那份我记着");
    f.settle().await;
    assert_eq!(asked.load(Ordering::SeqCst), 2);
    let alerts = f.alerts().await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].category.as_deref(), Some("kickback"));
    let (evidence, _, _) = scrm::domain::alerts::details(&f.app.db, alerts[0].id)
        .await
        .unwrap();
    let detail = evidence[0].detail.to_string();
    assert!(detail.contains("事成之后的好处"), "{detail}");
    // A rule's hit: raised without asking.
    say("私下转账给我，便宜五百");
    f.settle().await;
    assert_eq!(asked.load(Ordering::SeqCst), 2);
    assert_eq!(f.alerts().await.len(), 2);
    // Too slow: the detector decides alone (an innocent message stays quiet), the scan goes on.
    let started = std::time::Instant::now();
    say("今天路上有点慢，晚点到");
    f.settle().await;
    assert_eq!(asked.load(Ordering::SeqCst), 3);
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    assert_eq!(f.alerts().await.len(), 2);
    // The budget (3 a minute) is spent: not asked again.
    say("合同下周一寄出，请注意查收，那份附件也在里面");
    f.settle().await;
    assert_eq!(asked.load(Ordering::SeqCst), 3);
    f.app.stop().await;
}
