//! 规则 in the console against `scrm serve` and the emulated WeCom: an admin adds a keyword and
//! the next message to the app raises an alert (before the save the same message raised
//! nothing); an invalid library is refused with the parser's reason; 试一试 marks the spans of
//! the edited, unsaved text; a library that does worse on the labeled set is saved only once
//! confirmed; a revert saves an old version again; the retroactive scan starts from the page;
//! per-category recipients receive the alert's message; each change is in the audit log; a
//! salesperson's session is refused and changes nothing; a second instance sees a save within
//! the cache's window. And one walk of the page in Chromium, with its screenshot.

use std::sync::Arc;
use std::time::Duration;

use scrm::auth::Role;
use scrm::auth::account;
use scrm::domain::alerts::{self, AlertFilter};
use scrm::domain::rule_book::{self, Draft, RuleBook};
use scrm::domain::scan::RuleLibrary;
use scrm::platform::db::now_ms;
use wecom_sdk::testkit::{CallbackKind, CallbackTarget, NewStaff, SeedSpec};

use crate::common::{Backend, CORP};
use crate::emulated::{AGENT_ID, EmulatedApp, Options, eventually, wait_outbox_idle};
use crate::web_client::{Answer, Browser};

both_backends!(
    an_added_keyword_is_in_force_for_the_next_message,
    an_invalid_library_is_refused_with_the_reason_and_changes_nothing,
    the_try_box_marks_the_spans_of_the_edited_text,
    a_worse_library_is_saved_only_once_confirmed,
    reverts_rescans_and_recipients_are_audited,
    category_recipients_receive_the_alert_message,
    a_salesperson_is_refused_and_nothing_changes,
    another_instance_sees_a_save_within_the_window,
    in_the_browser_the_rules_are_tried_and_saved,
);

const ADMIN: &str = "admin";
const OFFICER: &str = "zhao.li";
const PASSWORD: &str = "correct horse battery staple";
/// The corp's alert recipient (compliance).
const COMPLIANCE: &str = "hegui01";
/// A risk officer who should hear of payment alerts only.
const RISK: &str = "fengkong01";
/// The message the default library lets through and the added rule catches.
const COUPON_TEXT: &str = "这是内部折扣码 VIP2026，别外传";
/// A rule to add to the default library.
const COUPON_RULE: &str = "\n[[rule]]\nid = \"coupon_leak\"\nname = \"泄露内部折扣码\"\n\
    category = \"leak\"\nseverity = \"medium\"\nkeywords = [\"内部折扣码\"]\n";

struct Fixture {
    app: EmulatedApp,
    /// `[0]` the salesperson, `[1]` their colleague.
    staff: Vec<String>,
}

async fn fixture(backend: Backend) -> Fixture {
    let app = EmulatedApp::spawn_with(
        backend,
        Options {
            extra_config:
                "[alerts]\nconsole_url = \"https://scrm.example.com\"\nnotify_manager = false\n"
                    .to_owned(),
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
            rng_seed: 5,
            ..SeedSpec::default()
        },
    );
    for (userid, name) in [(COMPLIANCE, "合规李娜"), (RISK, "风控王强")] {
        assert!(app.wecom().add_staff(
            CORP,
            NewStaff {
                userid: userid.to_owned(),
                name: name.to_owned(),
                department: Vec::new(),
            },
        ));
    }
    app.wecom().set_callback_target(
        CORP,
        CallbackKind::App(AGENT_ID),
        CallbackTarget {
            url: app.server.callback_url("contacts"),
            token: crate::common::TOKEN.to_owned(),
            encoding_aes_key: crate::common::KEY.to_owned(),
        },
    );
    app.settle().await;
    let corp = crate::common::corp(CORP);
    for (name, role) in [(ADMIN, Role::Admin), (OFFICER, Role::Compliance)] {
        account::create(&app.db, &corp, name, PASSWORD, role, "test", now_ms())
            .await
            .unwrap();
    }
    Fixture {
        app,
        staff: seeded.staff,
    }
}

impl Fixture {
    async fn settle(&self) {
        self.app.settle().await;
        wait_outbox_idle(&self.app.db).await;
    }

    /// The salesperson sends `text` to the app, and everything it causes is done.
    async fn message(&self, text: &str) {
        self.app
            .wecom()
            .app_text_message(CORP, AGENT_ID, &self.staff[0], text);
        self.settle().await;
    }

    async fn alerts(&self) -> Vec<alerts::Alert> {
        alerts::list(
            &self.app.db,
            CORP,
            &AlertFilter {
                limit: 100,
                ..AlertFilter::default()
            },
        )
        .await
        .unwrap()
    }

    async fn versions(&self) -> Vec<rule_book::VersionSummary> {
        rule_book::versions(&self.app.db, CORP, 100).await.unwrap()
    }

    /// (actor, action, target) of the corp's `rules.*` audit entries, oldest first.
    async fn rule_audit(&self) -> Vec<(String, String, String)> {
        let mut rows: Vec<(String, String, String)> = scrm::auth::audit::search(
            &self.app.db,
            CORP,
            &scrm::auth::audit::AuditFilter {
                limit: 1000,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action.starts_with("rules."))
        .map(|e| (e.actor, e.action, e.target))
        .collect();
        rows.reverse();
        rows
    }

    /// The text cards WeCom delivered: (recipients sorted, title).
    fn cards(&self) -> Vec<(Vec<String>, String)> {
        self.app
            .wecom()
            .sent_messages()
            .iter()
            .filter(|m| m["msgtype"] == "textcard")
            .map(|m| {
                let mut to: Vec<String> = m["touser"]
                    .as_str()
                    .unwrap_or("")
                    .split('|')
                    .map(str::to_owned)
                    .collect();
                to.sort();
                (to, m["textcard"]["title"].as_str().unwrap_or("").to_owned())
            })
            .collect()
    }

    async fn signed_in(&self, username: &str) -> Browser {
        let mut browser = Browser::new(&self.app.server.base_url);
        let answer = browser
            .post_form(
                "/console/login",
                &[
                    ("username", username),
                    ("password", PASSWORD),
                    ("next", "/console/rules"),
                ],
            )
            .await;
        assert_eq!(answer.status, 303, "{}", answer.text);
        browser
    }
}

/// The page's TOML (the textarea, unescaped as a browser would).
fn source_of(page: &Answer) -> String {
    let inner = page
        .text
        .split("name=\"source\"")
        .nth(1)
        .and_then(|r| r.split_once('>'))
        .and_then(|(_, r)| r.split("</textarea>").next())
        .expect("the editor's textarea");
    inner
        .replace("&quot;", "\"")
        .replace("&#34;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Posts the editor's form to `action` (`save` or `try`).
async fn post_editor(
    browser: &mut Browser,
    action: &str,
    csrf: &str,
    fields: &[(&str, &str)],
) -> Answer {
    let mut all = vec![("csrf", csrf), ("sender", "staff")];
    all.extend_from_slice(fields);
    browser
        .post_form(&format!("/console/rules/{action}"), &all)
        .await
}

fn with_coupon_rule() -> String {
    format!("{}{COUPON_RULE}", RuleLibrary::default_source())
}

async fn an_added_keyword_is_in_force_for_the_next_message(backend: Backend) {
    let f = fixture(backend).await;
    let mut admin = f.signed_in(ADMIN).await;
    let page = admin.get("/console/rules").await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("实例默认规则"), "{}", page.text);
    assert!(page.text.contains("private_transfer"), "the rules summary");
    assert_eq!(source_of(&page), RuleLibrary::default_source());
    assert_eq!(page.field("base"), "");

    // Before the save: the default library lets the message through.
    f.message(COUPON_TEXT).await;
    assert!(f.alerts().await.is_empty(), "{:?}", f.alerts().await);

    let source = with_coupon_rule();
    let saved = post_editor(
        &mut admin,
        "save",
        &page.field("csrf"),
        &[
            ("base", ""),
            ("source", &source),
            ("note", "新增内部折扣码规则"),
        ],
    )
    .await;
    assert_eq!(saved.status, 303, "{}", saved.text);
    assert_eq!(
        saved.location.as_deref(),
        Some("/console/rules?done=saved&v=1#rescan")
    );

    // The next message with the keyword raises an alert of the new rule.
    f.message(COUPON_TEXT).await;
    let raised = f.alerts().await;
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0].rule_id.as_deref(), Some("coupon_leak"));
    assert_eq!(raised[0].category.as_deref(), Some("leak"));

    let page = admin.get("/console/rules?done=saved&v=1").await;
    assert!(page.text.contains("第 1 版"), "{}", page.text);
    assert!(page.text.contains("console:admin"));
    assert!(page.text.contains("新增内部折扣码规则"));
    assert!(
        page.text.contains("coupon_leak"),
        "the summary lists the new rule"
    );
    assert!(
        page.text.contains("开始追溯扫描"),
        "the retroactive scan is offered"
    );
    assert_eq!(source_of(&page), source);
    assert_eq!(page.field("base"), "1");
    let versions = f.versions().await;
    assert_eq!(versions.len(), 1);
    assert_eq!(
        (versions[0].author.as_str(), versions[0].note.as_str()),
        ("console:admin", "新增内部折扣码规则")
    );
    assert!(versions[0].quality.passed, "{:?}", versions[0].quality);
    assert_eq!(
        f.rule_audit().await,
        vec![(
            "console:admin".to_owned(),
            "rules.save".to_owned(),
            "rule_library:1".to_owned()
        )]
    );
    f.app.stop().await;
}

async fn an_invalid_library_is_refused_with_the_reason_and_changes_nothing(backend: Backend) {
    let f = fixture(backend).await;
    let mut admin = f.signed_in(ADMIN).await;
    let csrf = admin.get("/console/rules").await.field("csrf");
    let broken = "[[rule]]\nid = \"x\"\nname = \"x\"\ncategory = \"x\"\nkeywords = [\"a\"\n";
    let refused = post_editor(
        &mut admin,
        "save",
        &csrf,
        &[("base", ""), ("source", broken), ("note", "坏的")],
    )
    .await;
    assert_eq!(refused.status, 422, "{}", refused.text);
    assert!(
        refused.text.contains("规则库无效，未保存") && refused.text.contains("规则库格式错误"),
        "the parser's reason: {}",
        refused.text
    );
    assert_eq!(source_of(&refused), broken, "the text stays to be fixed");

    // Valid TOML, but a regex that does not compile: named with the rule and the field.
    let bad_regex =
        "[[rule]]\nid = \"bad_one\"\nname = \"x\"\ncategory = \"x\"\nregex = [\"(unclosed\"]\n";
    let refused = post_editor(
        &mut admin,
        "save",
        &csrf,
        &[("base", ""), ("source", bad_regex)],
    )
    .await;
    assert_eq!(refused.status, 422);
    assert!(
        refused.text.contains("bad_one")
            && refused.text.contains("regex")
            && refused.text.contains("正则表达式无效"),
        "{}",
        refused.text
    );
    assert!(f.versions().await.is_empty());
    assert!(f.rule_audit().await.is_empty());
    // Still the default library: its rules fire, the broken one's do not exist.
    f.message("钱直接私下转账给我就行").await;
    assert_eq!(
        f.alerts().await[0].category.as_deref(),
        Some("private_payment")
    );
    f.app.stop().await;
}

async fn the_try_box_marks_the_spans_of_the_edited_text(backend: Backend) {
    let f = fixture(backend).await;
    let mut officer = f.signed_in(OFFICER).await;
    let page = officer.get("/console/rules").await;
    let csrf = page.field("csrf");

    // The library in force, unchanged in the editor.
    let tried = post_editor(
        &mut officer,
        "try",
        &csrf,
        &[
            ("base", ""),
            ("source", RuleLibrary::default_source()),
            ("text", "这单私下转账给我"),
        ],
    )
    .await;
    assert_eq!(tried.status, 200, "{}", tried.text);
    assert!(tried.text.contains("当前生效的规则"), "{}", tried.text);
    assert!(
        tried.text.contains("<mark>私下转账</mark>"),
        "{}",
        tried.text
    );
    // The CLI's explanation, word for word.
    assert!(tried.text.contains("结论 (decision): 告警 ALERT"));
    assert!(tried.text.contains("归一化 (normalized):"));

    // The edited text, not saved: its new keyword is marked across the previous message too.
    let edited = format!(
        "{}\n[[rule]]\nid = \"code_word\"\nname = \"暗号\"\ncategory = \"leak\"\nkeywords = [\"暗号\"]\n",
        RuleLibrary::default_source()
    );
    let tried = post_editor(
        &mut officer,
        "try",
        &csrf,
        &[
            ("base", ""),
            ("source", &edited),
            ("text", "今天的暗号是芝麻开门"),
        ],
    )
    .await;
    assert_eq!(tried.status, 200, "{}", tried.text);
    assert!(tried.text.contains("编辑中的规则（未保存）"));
    assert!(tried.text.contains("<mark>暗号</mark>"), "{}", tried.text);
    assert!(tried.text.contains("code_word"));
    assert_eq!(source_of(&tried), edited, "the edit is kept");
    // A clean sentence: no mark, no alert.
    let clean = post_editor(
        &mut officer,
        "try",
        &csrf,
        &[
            ("base", ""),
            ("source", &edited),
            ("text", "明天下午三点见"),
        ],
    )
    .await;
    assert!(!clean.text.contains("<mark>"));
    assert!(clean.text.contains("结论 (decision): 不告警 (no alert)"));
    // An edit that does not compile cannot be tried, and says why.
    let broken = post_editor(
        &mut officer,
        "try",
        &csrf,
        &[("base", ""), ("source", "pinyin = 3"), ("text", "暗号")],
    )
    .await;
    assert_eq!(broken.status, 422);
    assert!(
        broken.text.contains("编辑中的规则库无效"),
        "{}",
        broken.text
    );
    // Trying saves nothing.
    assert!(f.versions().await.is_empty());
    assert!(f.rule_audit().await.is_empty());
    f.app.stop().await;
}

async fn a_worse_library_is_saved_only_once_confirmed(backend: Backend) {
    let f = fixture(backend).await;
    let mut admin = f.signed_in(ADMIN).await;
    let csrf = admin.get("/console/rules").await.field("csrf");
    let only_coupons = COUPON_RULE.trim_start();
    let fields = [
        ("base", ""),
        ("source", only_coupons),
        ("note", "只保留折扣码规则"),
    ];
    let asked = post_editor(&mut admin, "save", &csrf, &fields).await;
    assert_eq!(asked.status, 200, "{}", asked.text);
    assert!(asked.text.contains("效果变差"), "{}", asked.text);
    assert!(asked.text.contains("仍然保存"));
    assert!(
        asked.text.contains("召回率") && asked.text.contains("0.0%"),
        "the figures side by side: {}",
        asked.text
    );
    assert_eq!(source_of(&asked), only_coupons, "the text is kept");
    assert!(f.versions().await.is_empty(), "nothing saved unconfirmed");
    assert!(f.rule_audit().await.is_empty());
    // The default library is still in force.
    f.message("钱直接私下转账给我就行").await;
    assert_eq!(f.alerts().await.len(), 1);

    let mut confirmed = fields.to_vec();
    confirmed.push(("confirm", "1"));
    let saved = post_editor(&mut admin, "save", &csrf, &confirmed).await;
    assert_eq!(saved.status, 303, "{}", saved.text);
    let versions = f.versions().await;
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0].quality.recall, Some(0.0));
    assert!(!versions[0].quality.passed);
    let audit = scrm::auth::audit::audit_entries(&f.app.db, CORP, "rule_library:1")
        .await
        .unwrap();
    assert_eq!(audit.len(), 1);
    let detail: serde_json::Value = serde_json::from_str(&audit[0].detail).unwrap();
    assert_eq!(detail["confirmed_worse"], true, "{detail}");
    // Now only the coupon rule is in force.
    f.message("钱直接私下转账给我就行").await;
    f.message(COUPON_TEXT).await;
    let raised = f.alerts().await;
    assert_eq!(raised.len(), 2, "{raised:?}");
    assert_eq!(raised[0].rule_id.as_deref(), Some("coupon_leak"));
    f.app.stop().await;
}

async fn reverts_rescans_and_recipients_are_audited(backend: Backend) {
    let f = fixture(backend).await;
    // A message before any rule catches it; a retroactive scan finds it later.
    f.message(COUPON_TEXT).await;
    assert!(f.alerts().await.is_empty());
    let mut admin = f.signed_in(ADMIN).await;
    let csrf = admin.get("/console/rules").await.field("csrf");
    let v1 = with_coupon_rule();
    assert_eq!(
        post_editor(
            &mut admin,
            "save",
            &csrf,
            &[("base", ""), ("source", &v1), ("note", "加折扣码")]
        )
        .await
        .status,
        303
    );
    let v2 = RuleLibrary::default_source();
    assert_eq!(
        post_editor(
            &mut admin,
            "save",
            &csrf,
            &[("base", "1"), ("source", v2), ("note", "去掉折扣码")]
        )
        .await
        .status,
        303
    );
    // A save from a page loaded before version 2 would overwrite it unseen: refused.
    let stale = post_editor(
        &mut admin,
        "save",
        &csrf,
        &[("base", "1"), ("source", &v1), ("note", "旧页面")],
    )
    .await;
    assert_eq!(stale.status, 409, "{}", stale.text);
    assert!(stale.text.contains("已被他人修改"), "{}", stale.text);
    assert_eq!(f.versions().await.len(), 2);

    // 恢复此版本: version 1's text becomes version 3.
    let page = admin.get("/console/rules").await;
    assert!(page.text.contains("/console/rules/versions/1/revert"));
    let reverted = admin
        .post_form("/console/rules/versions/1/revert", &[("csrf", &csrf)])
        .await;
    assert_eq!(reverted.status, 303, "{}", reverted.text);
    assert_eq!(
        reverted.location.as_deref(),
        Some("/console/rules?done=reverted&v=3#rescan")
    );
    let v3 = rule_book::current(&f.app.db, CORP).await.unwrap().unwrap();
    assert_eq!((v3.summary.version, v3.summary.reverted_from), (3, Some(1)));
    assert_eq!(v3.source, v1);
    assert_eq!(v3.summary.note, "恢复第 1 版");
    let old = admin.get("/console/rules/versions/1").await;
    assert_eq!(old.status, 200);
    assert!(old.text.contains("内部折扣码"), "{}", old.text);
    assert_eq!(admin.get("/console/rules/versions/9").await.status, 404);
    assert_eq!(
        admin
            .post_form("/console/rules/versions/9/revert", &[("csrf", &csrf)])
            .await
            .status,
        404
    );

    // The retroactive scan, started from the page, finds the old message with version 3.
    let started = admin
        .post_form("/console/rules/rescan", &[("csrf", &csrf), ("days", "1")])
        .await;
    assert_eq!(started.status, 303, "{}", started.text);
    let location = started.location.unwrap();
    let job: i64 = location
        .split("job=")
        .nth(1)
        .and_then(|r| r.split('#').next())
        .unwrap()
        .parse()
        .unwrap();
    let db = f.app.db.clone();
    eventually("the retroactive scan finishes", || {
        let db = db.clone();
        async move {
            scrm::pipeline::jobs::get(&db, job)
                .await
                .is_ok_and(|j| j.state == "done")
        }
    })
    .await;
    f.settle().await;
    let raised = f.alerts().await;
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0].rule_id.as_deref(), Some("coupon_leak"));
    let status = admin.get(&format!("/console/rules/rescan/{job}")).await;
    assert_eq!(status.status, 200);
    let status: serde_json::Value = serde_json::from_str(&status.text).unwrap();
    assert_eq!(status["state"], "done", "{status}");
    assert!(
        status["outcome"].as_str().unwrap().contains("新告警 1 条"),
        "{status}"
    );
    let page = admin.get(&location).await;
    assert!(page.text.contains("已完成"), "{}", page.text);
    assert!(
        admin
            .get("/console/rules/rescan/999999")
            .await
            .status
            .eq(&404)
    );

    // Recipients of a category.
    let set = admin
        .post_form(
            "/console/rules/recipients",
            &[
                ("csrf", &csrf),
                ("category", "private_payment"),
                ("users", RISK),
                ("category", "leak"),
                ("users", ""),
            ],
        )
        .await;
    assert_eq!(set.status, 303, "{}", set.text);

    let actions: Vec<(String, String)> = f
        .rule_audit()
        .await
        .into_iter()
        .map(|(actor, action, target)| {
            assert_eq!(actor, "console:admin");
            (action, target)
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("rules.save", "rule_library:1".to_owned()),
        ("rules.save", "rule_library:2".to_owned()),
        ("rules.revert", "rule_library:3".to_owned()),
        ("rules.rescan", format!("job:{job}")),
        (
            "rules.recipients",
            "rule_recipient:private_payment".to_owned(),
        ),
    ]
    .into_iter()
    .map(|(a, t)| (a.to_owned(), t))
    .collect();
    assert_eq!(actions, expected);
    f.app.stop().await;
}

async fn category_recipients_receive_the_alert_message(backend: Backend) {
    let f = fixture(backend).await;
    let payment = "钱直接私下转账给我就行";
    let leak = "加我私人微信 abc_12345 细聊";
    let library = RuleLibrary::default_library();
    let category = |text: &str| {
        library
            .scan(&scrm::domain::scan::ScanInput {
                text,
                prev: None,
                context: None,
                sender: scrm::domain::scan::Sender::Staff,
                msg_type: Some("text"),
            })
            .alert()
            .map(|h| h.category.clone())
    };
    assert_eq!(category(payment).as_deref(), Some("private_payment"));
    let other = category(leak).expect("a hit of another category");
    assert_ne!(other, "private_payment");

    let mut admin = f.signed_in(ADMIN).await;
    let page = admin.get("/console/rules").await;
    assert!(
        page.text.contains("私下收款"),
        "categories by their Chinese names"
    );
    let csrf = page.field("csrf");
    // Unknown ids are named, and nothing is stored.
    let refused = admin
        .post_form(
            "/console/rules/recipients",
            &[
                ("csrf", &csrf),
                ("category", "private_payment"),
                ("users", &format!("{RISK}, nobody99，ghost7")),
            ],
        )
        .await;
    assert_eq!(refused.status, 422, "{}", refused.text);
    assert!(
        refused.text.contains("不是本企业的成员：nobody99、ghost7"),
        "{}",
        refused.text
    );
    assert!(
        refused.text.contains("nobody99，ghost7"),
        "the typed list is kept"
    );
    assert!(
        rule_book::recipients(&f.app.db, CORP)
            .await
            .unwrap()
            .is_empty()
    );
    // The risk officer for payments; the compliance officer named again is told once.
    let set = admin
        .post_form(
            "/console/rules/recipients",
            &[
                ("csrf", &csrf),
                ("category", "private_payment"),
                ("users", &format!("{RISK}，{COMPLIANCE}")),
            ],
        )
        .await;
    assert_eq!(set.status, 303, "{}", set.text);
    let stored = rule_book::recipients(&f.app.db, CORP).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].user_ids, vec![RISK, COMPLIANCE]);
    let page = admin.get("/console/rules").await;
    assert!(page.text.contains(&format!("{RISK}, {COMPLIANCE}")));

    f.message(payment).await;
    f.message(leak).await;
    let cards = f.cards();
    assert_eq!(cards.len(), 2, "{cards:?}");
    let to_of = |label: &str| {
        cards
            .iter()
            .find(|(_, title)| title.contains(label))
            .map(|(to, _)| to.clone())
            .unwrap_or_else(|| panic!("no card about {label}: {cards:?}"))
    };
    let mut both = vec![COMPLIANCE.to_owned(), RISK.to_owned()];
    both.sort();
    assert_eq!(to_of("私下收款"), both, "deduplicated");
    assert_eq!(
        to_of(alerts::category_label(&other)),
        vec![COMPLIANCE.to_owned()],
        "other categories do not reach the risk officer"
    );
    // What the alert's page shows as deliveries.
    let raised = f.alerts().await;
    let payment_alert = raised
        .iter()
        .find(|a| a.category.as_deref() == Some("private_payment"))
        .unwrap();
    let (_, _, deliveries) = alerts::details(&f.app.db, payment_alert.id).await.unwrap();
    let mut recipients: Vec<String> = deliveries.into_iter().map(|d| d.recipient).collect();
    recipients.sort();
    assert_eq!(recipients, both);
    f.app.stop().await;
}

async fn a_salesperson_is_refused_and_nothing_changes(backend: Backend) {
    let f = fixture(backend).await;
    // A salesperson signed into the console (as WeCom's web login will do: a console session of
    // a staff member whose role is sales).
    let corp = crate::common::corp(CORP);
    let user = crate::common::user(&f.staff[0]);
    let (token, session) = scrm::auth::session::create(
        &f.app.db,
        &corp,
        scrm::auth::session::SignIn::Staff(&user),
        now_ms(),
    )
    .await
    .unwrap();
    scrm::on_db!(&f.app.db, |pool| sqlx::query(
        "UPDATE web_session SET surface = 'console' WHERE csrf_token = $1"
    )
    .bind(&session.csrf_token)
    .execute(pool)
    .await
    .map(|r| r.rows_affected()))
    .unwrap();
    let mut sales = Browser::new(&f.app.server.base_url);
    sales.cookies.insert("scrm_console".to_owned(), token);
    let page = sales.get("/console/rules").await;
    assert_eq!(page.status, 403, "{}", page.text);
    assert!(page.text.contains("没有权限"));
    assert!(
        !page.text.contains("href=\"/console/rules\""),
        "no 规则 in a salesperson's navigation"
    );
    let csrf = session.csrf_token.as_str();
    let source = with_coupon_rule();
    let writes: [(&str, Vec<(&str, &str)>); 6] = [
        (
            "/console/rules/save",
            vec![("csrf", csrf), ("base", ""), ("source", &source)],
        ),
        (
            "/console/rules/try",
            vec![("csrf", csrf), ("source", &source), ("text", "内部折扣码")],
        ),
        ("/console/rules/versions/1/revert", vec![("csrf", csrf)]),
        ("/console/rules/rescan", vec![("csrf", csrf)]),
        (
            "/console/rules/recipients",
            vec![("csrf", csrf), ("category", "leak"), ("users", RISK)],
        ),
        ("/console/rules/versions/1", vec![]),
    ];
    for (path, fields) in &writes {
        let answer = if fields.is_empty() {
            sales.get(path).await
        } else {
            sales.post_form(path, fields).await
        };
        assert_eq!(answer.status, 403, "{path}: {}", answer.text);
    }

    // A sidebar session is no console session at all.
    let (sidebar, _) = scrm::auth::session::create(
        &f.app.db,
        &corp,
        scrm::auth::session::SignIn::Staff(&user),
        now_ms(),
    )
    .await
    .unwrap();
    let mut other = Browser::new(&f.app.server.base_url);
    other.cookies.insert("scrm_console".to_owned(), sidebar);
    assert_eq!(other.get("/console/rules").await.status, 303);
    assert_eq!(
        other
            .post_form("/console/rules/save", &[("source", &source)])
            .await
            .status,
        303
    );

    // An admin's form without the session's CSRF token is refused too.
    let mut admin = f.signed_in(ADMIN).await;
    let forged = post_editor(
        &mut admin,
        "save",
        "not-the-token",
        &[("base", ""), ("source", &source)],
    )
    .await;
    assert_eq!(forged.status, 403);

    assert!(f.versions().await.is_empty());
    assert!(
        rule_book::recipients(&f.app.db, CORP)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(f.rule_audit().await.is_empty());
    assert!(
        scrm::pipeline::jobs::list(&f.app.db, Some(CORP), "rescan", 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Compliance may: the same save goes through for the officer.
    let mut officer = f.signed_in(OFFICER).await;
    let csrf = officer.get("/console/rules").await.field("csrf");
    let saved = post_editor(
        &mut officer,
        "save",
        &csrf,
        &[("base", ""), ("source", &source)],
    )
    .await;
    assert_eq!(saved.status, 303, "{}", saved.text);
    assert_eq!(f.versions().await[0].author, "console:zhao.li");
    f.app.stop().await;
}

/// Two instances on one database: the one that saves uses the new library at once; the other
/// keeps its compiled copy for the window (no query per message), then asks once and follows.
async fn another_instance_sees_a_save_within_the_window(backend: Backend) {
    let test_db = crate::common::TestDb::create(backend).await;
    let db = test_db.connect().await;
    let corp = crate::common::corp(CORP);
    let instance = Arc::new(RuleLibrary::default_library());
    let window = Duration::from_millis(1500);
    let saver = RuleBook::with_recheck(db.clone(), Arc::clone(&instance), window);
    let other = RuleBook::with_recheck(db.clone(), Arc::clone(&instance), window);

    // No library of its own: the instance's.
    let (version, library) = other.resolve(CORP).await.unwrap();
    assert_eq!(version, None);
    assert!(Arc::ptr_eq(&library, &instance));
    let checks = other.version_checks();
    for _ in 0..200 {
        other.lookup(CORP).await.unwrap();
    }
    assert_eq!(
        other.version_checks(),
        checks,
        "no query per message inside the window"
    );

    let source = with_coupon_rule();
    let saved = saver
        .save(
            &corp,
            &Draft {
                source: &source,
                note: "加折扣码",
                base_version: None,
                confirmed: false,
            },
            "console:admin",
            now_ms(),
        )
        .await
        .unwrap();
    assert_eq!(saved.version, 1);
    let now = saver.lookup(CORP).await.unwrap();
    assert!(
        now.rule("coupon_leak").is_some(),
        "the saving instance at once"
    );
    let before = other.lookup(CORP).await.unwrap();
    assert!(
        before.rule("coupon_leak").is_none(),
        "the other keeps its copy inside the window"
    );
    let deadline = std::time::Instant::now() + window * 4;
    loop {
        let (version, library) = other.resolve(CORP).await.unwrap();
        if version == Some(1) {
            assert!(library.rule("coupon_leak").is_some());
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the other instance never noticed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let checks = other.version_checks();
    for _ in 0..200 {
        other.lookup(CORP).await.unwrap();
    }
    assert!(other.version_checks() <= checks + 1);
    // Another corp is untouched: still the instance's.
    let (version, library) = other.resolve("wwanothercorp0001").await.unwrap();
    assert_eq!(version, None);
    assert!(Arc::ptr_eq(&library, &instance));
    db.close().await;
    test_db.drop_database().await;
}

async fn in_the_browser_the_rules_are_tried_and_saved(backend: Backend) {
    let f = fixture(backend).await;
    let base = f.app.server.base_url.clone();
    let name = |view: &str| match backend {
        Backend::Sqlite => format!("console-{view}"),
        Backend::Postgres => format!("console-{view}-postgres"),
    };
    let browser = crate::webdriver::Browser::start(1280, 800).await;
    browser.goto(&format!("{base}/console/rules")).await;
    browser
        .wait_for("the sign-in page", "document.querySelector('main.login')")
        .await;
    browser.type_into("input[name='username']", ADMIN).await;
    browser.type_into("input[name='password']", PASSWORD).await;
    browser.click("main.login button[type='submit']").await;
    browser
        .wait_for("the rules page", "document.querySelector('textarea.toml')")
        .await;
    let nav = browser
        .eval("return Array.from(document.querySelectorAll('.top nav a')).map(a => a.innerText);")
        .await;
    let nav: Vec<String> = serde_json::from_value(nav).unwrap();
    let at = |label: &str| nav.iter().position(|l| l == label).unwrap();
    assert!(
        at("标签") < at("规则") && at("规则") < at("话术库"),
        "{nav:?}"
    );
    // Add a rule at the end of the library, try a sentence against it, unsaved.
    browser
        .eval(
            "const t = document.querySelector('textarea.toml'); t.focus(); \
             t.setSelectionRange(t.value.length, t.value.length); return true;",
        )
        .await;
    browser.type_into("textarea.toml", COUPON_RULE).await;
    browser
        .type_into(".trial textarea[name='text']", COUPON_TEXT)
        .await;
    browser
        .click(".trial button[formaction='/console/rules/try']")
        .await;
    browser
        .wait_for(
            "the try result",
            "document.querySelector('.trial-result mark')",
        )
        .await;
    let marked = browser
        .eval("return document.querySelector('.trial-result p.text mark').innerText;")
        .await;
    assert_eq!(marked, serde_json::json!("内部折扣码"));
    let kept = browser
        .eval("return document.querySelector('textarea.toml').value.includes('coupon_leak');")
        .await;
    assert_eq!(kept, serde_json::json!(true), "the edit survives the try");
    browser.eval("window.scrollTo(0, 0); return true;").await;
    browser.screenshot(&name("rules")).await;
    assert!(f.versions().await.is_empty());

    browser
        .type_into("input[name='note']", "新增内部折扣码规则")
        .await;
    browser.click(".save-row button[type='submit']").await;
    browser
        .wait_for(
            "saved",
            "document.querySelector('.flash') && document.querySelector('.flash').innerText.includes('第 1 版')",
        )
        .await;
    browser.screenshot(&name("rules-saved")).await;
    assert_eq!(f.versions().await.len(), 1);
    f.message(COUPON_TEXT).await;
    assert_eq!(f.alerts().await[0].rule_id.as_deref(), Some("coupon_leak"));

    // A library that does worse: the figures side by side, saved only through 仍然保存.
    browser
        .eval(&format!(
            "document.querySelector('textarea.toml').value = {}; window.scrollTo(0, 0); return true;",
            serde_json::json!(COUPON_RULE.trim_start())
        ))
        .await;
    browser.click(".save-row button[type='submit']").await;
    browser
        .wait_for("the comparison", "document.querySelector('#compare')")
        .await;
    browser.screenshot(&name("rules-confirm")).await;
    assert_eq!(f.versions().await.len(), 1, "not saved unconfirmed");
    browser.click(".save-row button[name='confirm']").await;
    browser
        .wait_for(
            "saved anyway",
            "document.querySelector('.flash') && document.querySelector('.flash').innerText.includes('第 2 版')",
        )
        .await;
    assert_eq!(f.versions().await.len(), 2);
    browser.quit().await;
    f.app.stop().await;
}
