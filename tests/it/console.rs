//! The console over HTTP and in Chromium against `scrm serve` and the emulated WeCom: a
//! compliance officer follows the link of an alert's text card, signs in with a console account
//! and works the alert to resolved (each step in the alert's history and the audit log); wrong
//! passwords, throttled guessing, forged forms, a sidebar session and a disabled account get
//! nowhere; an admin sees the integration's health, exports alerts and the audit log as CSV, and
//! works alerts in bulk.

use std::time::Duration;

use scrm::auth::Role;
use scrm::auth::account;
use scrm::domain::alerts::{self, AlertFilter};
use scrm::platform::db::now_ms;
use wecom_sdk::testkit::{NewCustomer, SeedSpec};

use crate::common::{Backend, CORP};
use crate::emulated::{EmulatedApp, Options};
use crate::web_client::{Answer, Browser};

both_backends!(
    a_compliance_officer_follows_the_alert_link_and_works_it_to_resolved,
    wrong_passwords_forged_forms_and_other_sessions_get_nowhere,
    an_admin_sees_health_exports_and_works_alerts_in_bulk,
    in_the_browser_an_alert_is_worked_to_a_close,
    customers_are_searched_and_shown_whole_and_archive_reads_are_logged,
    an_admin_keeps_the_quick_replies_and_compliance_only_reads_them,
    the_settings_give_the_callback_urls_and_test_them_as_wecom_would,
    an_admin_grows_the_tag_library_through_wecom,
);

const OFFICER: &str = "zhao.li";
const ADMIN: &str = "admin";
const PASSWORD: &str = "correct horse battery staple";

struct Fixture {
    app: EmulatedApp,
    staff: Vec<String>,
}

async fn fixture(backend: Backend) -> Fixture {
    fixture_at(backend, "https://scrm.example.com").await
}

/// The console reached at `console_url` (`@BASE_URL@`: the server's own address).
async fn fixture_at(backend: Backend, console_url: &str) -> Fixture {
    let app = EmulatedApp::spawn_with(
        backend,
        Options {
            extra_config: format!("[alerts]\nconsole_url = \"{console_url}\"\n"),
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
            rng_seed: 11,
            ..SeedSpec::default()
        },
    );
    app.settle().await;
    let corp = crate::common::corp(CORP);
    for (name, role) in [(OFFICER, Role::Compliance), (ADMIN, Role::Admin)] {
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
    /// Salesperson `who` deletes a customer: a `staff_deleted_customer` alert (one per staff
    /// member: their later deletions are more evidence of it). Returns its id.
    async fn deletion_alert(&self, who: usize, name: &str) -> i64 {
        let ext = self.app.wecom().add_customer(
            CORP,
            &self.staff[who],
            NewCustomer {
                name: name.to_owned(),
                ..NewCustomer::default()
            },
        );
        self.app.settle().await;
        assert!(
            self.app
                .wecom()
                .staff_deletes_customer(CORP, &self.staff[who], &ext)
        );
        self.app.settle().await;
        self.alerts().await[0].id
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

    async fn audit_actions(&self) -> Vec<(String, String)> {
        scrm::auth::audit::search(
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
        .map(|e| (e.actor, e.action))
        .collect()
    }
}

async fn sign_in(browser: &mut Browser, username: &str, next: &str) -> Answer {
    browser
        .post_form(
            "/console/login",
            &[
                ("username", username),
                ("password", PASSWORD),
                ("next", next),
            ],
        )
        .await
}

async fn a_compliance_officer_follows_the_alert_link_and_works_it_to_resolved(backend: Backend) {
    let f = fixture(backend).await;
    let id = f.deletion_alert(0, "钱总").await;
    let link = format!("/console/alerts/{id}");
    let mut browser = Browser::new(&f.app.server.base_url);

    // The card's link, not signed in: to the sign-in page, which knows where to come back to.
    let first = browser.get(&link).await;
    assert_eq!(first.status, 303);
    let login = first.location.unwrap();
    assert_eq!(
        login,
        format!("/console/login?next=%2Fconsole%2Falerts%2F{id}")
    );
    let form = browser.get(&login).await;
    assert_eq!(form.status, 200);
    assert!(
        form.text.contains(&format!("value=\"{link}\"")),
        "{}",
        form.text
    );

    let signed = sign_in(&mut browser, OFFICER, &link).await;
    assert_eq!(signed.status, 303, "{}", signed.text);
    assert_eq!(signed.location.as_deref(), Some(link.as_str()));
    let set = signed.headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        set.contains("Path=/console") && set.contains("SameSite=Strict") && set.contains("Secure"),
        "{set}"
    );

    let page = browser.get(&link).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("删除了客户"), "{}", page.text);
    assert!(page.text.contains("员工删除客户") && page.text.contains("待处理"));
    assert!(
        page.text.contains("好友关系记录"),
        "the relation's history: {}",
        page.text
    );
    let csrf = page.field("csrf");

    let step = format!("/console/alerts/{id}/step");
    let ack = browser
        .post_form(
            &step,
            &[
                ("csrf", &csrf),
                ("step", "acknowledge"),
                ("comment", "已联系成员核实"),
            ],
        )
        .await;
    assert_eq!(ack.status, 303, "{}", ack.text);
    let page = browser.get(&ack.location.unwrap()).await;
    assert!(page.text.contains("处理中") && page.text.contains("已联系成员核实"));
    assert!(page.text.contains("已开始处理"), "the flash: {}", page.text);
    // Acknowledging twice is a conflict, said plainly.
    let again = browser
        .post_form(&step, &[("csrf", &csrf), ("step", "acknowledge")])
        .await;
    assert_eq!(again.status, 409, "{}", again.text);
    assert!(again.text.contains("可能刚被同事处理过"));
    let resolved = browser
        .post_form(
            &step,
            &[
                ("csrf", &csrf),
                ("step", "resolve"),
                ("comment", "客户已由同事接手"),
            ],
        )
        .await;
    assert_eq!(resolved.status, 303);
    assert_eq!(f.alerts().await[0].state, "resolved");

    let actions = f.audit_actions().await;
    let actor = format!("console:{OFFICER}");
    for action in ["console.login", "alert.acknowledge", "alert.resolve"] {
        assert!(
            actions.contains(&(actor.clone(), action.to_owned())),
            "{action} by {actor}: {actions:?}"
        );
    }

    // Signing out ends the session: the link leads to the sign-in page again.
    let out = browser
        .post_form("/console/logout", &[("csrf", &csrf)])
        .await;
    assert_eq!(out.status, 303);
    assert_eq!(browser.get(&link).await.status, 303);
    assert!(
        f.audit_actions()
            .await
            .contains(&(actor, "console.logout".to_owned()))
    );
    f.app.stop().await;
}

async fn wrong_passwords_forged_forms_and_other_sessions_get_nowhere(backend: Backend) {
    let f = fixture(backend).await;
    let id = f.deletion_alert(0, "孙总").await;
    let mut browser = Browser::new(&f.app.server.base_url);
    // The sign-in limit counts per epoch-aligned minute: the six attempts below must fall in one.
    let (_, left) = wecom_sdk::coord::current_window(Duration::from_secs(60));
    if left < Duration::from_secs(15) {
        tokio::time::sleep(left + Duration::from_millis(100)).await;
    }

    // A wrong password: refused, recorded against the account; an unknown name: the same words.
    let wrong = browser
        .post_form(
            "/console/login",
            &[
                ("username", OFFICER),
                ("password", "not the password"),
                ("next", "/console"),
            ],
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.text.contains("账号或密码错误"));
    assert!(!browser.cookies.contains_key("scrm_console"));
    let unknown = browser
        .post_form(
            "/console/login",
            &[
                ("username", "nobody"),
                ("password", PASSWORD),
                ("next", "/console"),
            ],
        )
        .await;
    assert_eq!(unknown.status, 401);
    assert!(unknown.text.contains("账号或密码错误"));
    assert!(f.audit_actions().await.contains(&(
        format!("console:{OFFICER}"),
        "console.login_failed".to_owned()
    )));
    // Guessing is throttled per name (five a minute), even with the right password after.
    for _ in 0..4 {
        browser
            .post_form(
                "/console/login",
                &[
                    ("username", OFFICER),
                    ("password", "guess"),
                    ("next", "/console"),
                ],
            )
            .await;
    }
    let throttled = sign_in(&mut browser, OFFICER, "/console").await;
    assert_eq!(throttled.status, 429, "{}", throttled.text);
    assert!(throttled.text.contains("尝试次数过多"));

    // Somewhere else after signing in: never. The next page is one of ours.
    let admin = sign_in(&mut browser, ADMIN, "https://evil.example/phish").await;
    assert_eq!(admin.status, 303);
    assert_eq!(admin.location.as_deref(), Some("/console"));

    // A forged form (no token, or another session's) changes nothing.
    let step = format!("/console/alerts/{id}/step");
    let forged = browser.post_form(&step, &[("step", "resolve")]).await;
    assert_eq!(forged.status, 403);
    assert!(forged.text.contains("页面已过期"));
    let mut other = Browser::new(&f.app.server.base_url);
    sign_in(&mut other, "admin", "/console").await;
    let other_csrf = other.get("/console/alerts").await.field("csrf");
    let crossed = browser
        .post_form(&step, &[("csrf", &other_csrf), ("step", "resolve")])
        .await;
    assert_eq!(crossed.status, 403);
    assert_eq!(f.alerts().await[0].state, "open");

    // A salesperson's sidebar session is not a console session.
    let corp = crate::common::corp(CORP);
    let user = crate::common::user(&f.staff[0]);
    let (token, _) = scrm::auth::session::create(
        &f.app.db,
        &corp,
        scrm::auth::session::SignIn::Staff(&user),
        now_ms(),
    )
    .await
    .unwrap();
    let mut sales = Browser::new(&f.app.server.base_url);
    sales.cookies.insert("scrm_console".to_owned(), token);
    assert_eq!(sales.get("/console/alerts").await.status, 303);

    // A disabled account cannot sign in, and its open session ends.
    let mut officer = Browser::new(&f.app.server.base_url);
    // (its name is throttled for a minute: sign in as the admin's colleague instead)
    account::create(
        &f.app.db,
        &corp,
        "qian.compliance",
        PASSWORD,
        Role::Compliance,
        "test",
        now_ms(),
    )
    .await
    .unwrap();
    assert_eq!(
        sign_in(&mut officer, "qian.compliance", "/console")
            .await
            .status,
        303
    );
    assert_eq!(officer.get("/console/alerts").await.status, 200);
    account::disable(&f.app.db, "qian.compliance", "test", now_ms())
        .await
        .unwrap();
    assert_eq!(officer.get("/console/alerts").await.status, 303);
    assert_eq!(
        sign_in(&mut officer, "qian.compliance", "/console")
            .await
            .status,
        401
    );

    // Sales has no console account at all.
    let refused = account::create(
        &f.app.db,
        &corp,
        "sales.one",
        PASSWORD,
        Role::Sales,
        "test",
        now_ms(),
    )
    .await;
    assert!(matches!(
        refused,
        Err(account::AccountError::Invalid { field: "role", .. })
    ));
    f.app.stop().await;
}

async fn an_admin_sees_health_exports_and_works_alerts_in_bulk(backend: Backend) {
    let f = fixture(backend).await;
    let first = f.deletion_alert(0, "周总").await;
    let second = f.deletion_alert(1, "吴总").await;
    let mut browser = Browser::new(&f.app.server.base_url);
    assert_eq!(sign_in(&mut browser, ADMIN, "/console").await.status, 303);

    let overview = browser.get("/console").await;
    assert_eq!(overview.status, 200, "{}", overview.text);
    for shown in [
        "待处理回调",
        "回调死信",
        "发送死信",
        "会话存档",
        "未处理告警",
        "最近 24 小时收到的回调",
    ] {
        assert!(overview.text.contains(shown), "{shown}: {}", overview.text);
    }
    assert!(overview.text.contains("<svg"), "the chart");
    let csp = overview.headers["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );

    // The inbox filters; the CSV has the same rows, for Excel.
    let list = browser
        .get("/console/alerts?state=open&kind=staff_deleted_customer")
        .await;
    assert_eq!(list.status, 200);
    assert!(list.text.contains(&format!("/console/alerts/{first}")));
    assert!(list.text.contains(&format!("/console/alerts/{second}")));
    let none = browser.get("/console/alerts?state=resolved").await;
    assert!(none.text.contains("没有符合条件的告警"));
    let csv = browser.get("/console/alerts.csv?state=open").await;
    assert_eq!(csv.status, 200);
    assert!(
        csv.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert!(csv.text.starts_with('\u{feff}'), "a BOM for Excel");
    assert_eq!(csv.text.lines().count(), 3, "{}", csv.text);
    assert!(csv.text.contains("员工删除客户"));

    // Both resolved in one go.
    let csrf = list.field("csrf");
    let bulk = browser
        .post_form(
            "/console/alerts/bulk",
            &[
                ("csrf", &csrf),
                ("step", "resolve"),
                ("id", &first.to_string()),
                ("id", &second.to_string()),
                ("comment", "批量处理"),
                ("back", "/console/alerts?state=open"),
            ],
        )
        .await;
    assert_eq!(bulk.status, 303, "{}", bulk.text);
    let back = bulk.location.unwrap();
    assert_eq!(back, "/console/alerts?state=open&done=2");
    assert!(browser.get(&back).await.text.contains("已处理 2 条告警"));
    assert!(f.alerts().await.iter().all(|a| a.state == "resolved"));

    // The audit log, filtered and exported; a cell that looks like a formula is defused.
    let audit = browser.get("/console/audit?action=alert.resolve").await;
    assert_eq!(audit.status, 200);
    assert_eq!(
        audit.text.matches("<td>alert.resolve</td>").count(),
        2,
        "{}",
        audit.text
    );
    let exported = browser.get("/console/audit.csv").await;
    assert!(exported.text.contains("console.login") && exported.text.contains("alert.resolve"));
    let mut tx = f.app.db.begin().await.unwrap();
    scrm::auth::audit(
        &mut tx,
        CORP,
        "=HYPERLINK(\"x\")",
        "test",
        "t",
        &serde_json::json!({}),
        now_ms(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let exported = browser.get("/console/audit.csv").await;
    assert!(
        exported.text.contains("\"'=HYPERLINK(\"\"x\"\")\""),
        "{}",
        exported.text
    );

    // Compliance sees no more than its role: the overview yes (operations), nothing of admin's.
    let mut officer = Browser::new(&f.app.server.base_url);
    sign_in(&mut officer, OFFICER, "/console").await;
    assert_eq!(officer.get("/console").await.status, 200);
    // Reassignment: compliance follows the jobs, only admins start one.
    let transfers = officer.get("/console/transfers").await;
    assert_eq!(transfers.status, 200);
    assert!(
        !transfers.text.contains("/console/transfers/new"),
        "no wizard link"
    );
    let wizard = officer.get("/console/transfers/new").await;
    assert_eq!(wizard.status, 403, "{}", wizard.text);
    assert!(wizard.text.contains("不能使用这个页面"));
    let csrf = officer.get("/console/alerts").await.field("csrf");
    let planned = officer
        .post_form(
            "/console/transfers/plan",
            &[
                ("csrf", &csrf),
                ("handover", &f.staff[0]),
                ("taker", &f.staff[1]),
            ],
        )
        .await;
    assert_eq!(planned.status, 403);
    assert!(
        scrm::domain::transfers::list_jobs(&f.app.db, &crate::common::corp(CORP), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        browser.get("/console/transfers/new").await.status,
        200,
        "the admin may"
    );
    f.app.stop().await;
}

/// Real Chromium: the officer opens the card's link, signs in on the page, acknowledges with a
/// comment and resolves; the admin's overview, alerts and audit pages. Screenshots at 1280×800.
async fn in_the_browser_an_alert_is_worked_to_a_close(backend: Backend) {
    let f = fixture(backend).await;
    let id = f.deletion_alert(0, "郑总").await;
    f.deletion_alert(1, "冯总").await;
    f.app.wecom().add_customer(
        CORP,
        &f.staff[1],
        NewCustomer {
            name: "卫总".to_owned(),
            ..NewCustomer::default()
        },
    );
    f.app.settle().await;
    let base = f.app.server.base_url.clone();
    let name = |view: &str| format!("console-{view}-{}", backend.name());
    let browser = crate::webdriver::Browser::start(1280, 800).await;
    browser.goto(&format!("{base}/console/alerts/{id}")).await;
    browser
        .wait_for("the sign-in page", "document.querySelector('main.login')")
        .await;
    browser.type_into("input[name='username']", OFFICER).await;
    browser.type_into("input[name='password']", PASSWORD).await;
    browser.screenshot(&name("login")).await;
    browser.click("main.login button[type='submit']").await;
    browser
        .wait_for("the alert", "document.querySelector('form.steps')")
        .await;
    assert_eq!(
        browser.eval("return location.pathname;").await,
        serde_json::json!(format!("/console/alerts/{id}"))
    );
    browser.screenshot(&name("alert")).await;
    browser
        .acknowledge_and_resolve("已与成员核实：客户为误加好友")
        .await;
    browser.screenshot(&name("alert-resolved")).await;
    let state = f
        .alerts()
        .await
        .into_iter()
        .find(|a| a.id == id)
        .unwrap()
        .state;
    assert_eq!(state, "resolved");

    browser.goto(&format!("{base}/console/alerts")).await;
    browser
        .wait_for("the inbox", "document.querySelector('table.list tbody tr')")
        .await;
    browser.screenshot(&name("alerts")).await;
    browser.goto(&format!("{base}/console")).await;
    browser
        .wait_for("the overview", "document.querySelector('.tiles')")
        .await;
    browser.screenshot(&name("overview")).await;
    browser.goto(&format!("{base}/console/audit")).await;
    browser
        .wait_for(
            "the audit log",
            "document.querySelector('table.list tbody tr')",
        )
        .await;
    let text = browser.eval("return document.body.innerText;").await;
    assert!(text.as_str().unwrap().contains("alert.resolve"), "{text}");
    browser.screenshot(&name("audit")).await;
    browser.goto(&format!("{base}/console/customers")).await;
    browser
        .wait_for(
            "the customers",
            "document.querySelector('table.list tbody tr a')",
        )
        .await;
    browser.screenshot(&name("customers")).await;
    browser.click("table.list tbody tr a").await;
    browser
        .wait_for("a customer", "document.querySelector('.relation')")
        .await;
    browser.screenshot(&name("customer")).await;
    browser.goto(&format!("{base}/console/settings")).await;
    browser
        .wait_for("the settings", "document.querySelector('code.url')")
        .await;
    browser.screenshot(&name("settings")).await;
    browser.quit().await;
    f.app.stop().await;
}

async fn customers_are_searched_and_shown_whole_and_archive_reads_are_logged(backend: Backend) {
    let f = fixture(backend).await;
    let ext = f.app.wecom().add_customer(
        CORP,
        &f.staff[0],
        NewCustomer {
            name: "钱总".to_owned(),
            ..NewCustomer::default()
        },
    );
    let other = f.app.wecom().add_customer(
        CORP,
        &f.staff[1],
        NewCustomer {
            name: "孙姐".to_owned(),
            ..NewCustomer::default()
        },
    );
    f.app.settle().await;
    let corp = crate::common::corp(CORP);
    scrm::domain::followup::create_note(
        &f.app.db,
        &corp,
        &crate::common::ext(&ext),
        &f.staff[0],
        "客户喜欢晚上沟通",
        None,
        now_ms(),
    )
    .await
    .unwrap();
    let mut officer = Browser::new(&f.app.server.base_url);
    assert_eq!(sign_in(&mut officer, OFFICER, "/console").await.status, 303);

    // Search by name; by follower.
    let found = officer.get("/console/customers?q=%E9%92%B1").await;
    assert_eq!(found.status, 200, "{}", found.text);
    assert!(
        found.text.contains("钱总") && !found.text.contains("孙姐"),
        "{}",
        found.text
    );
    let theirs = officer
        .get(&format!("/console/customers?staff={}", f.staff[1]))
        .await;
    assert!(theirs.text.contains("孙姐") && !theirs.text.contains("钱总"));
    assert!(theirs.text.contains(&format!("/console/customers/{other}")));

    // One customer: the relation with its history, the note; the archive read is logged.
    let before = scrm::domain::archive::read::reads(&f.app.db, CORP, 100)
        .await
        .unwrap()
        .len();
    let page = officer.get(&format!("/console/customers/{ext}")).await;
    assert_eq!(page.status, 200, "{}", page.text);
    for shown in ["钱总", "跟进中", "添加好友", "客户喜欢晚上沟通", "会话存档"]
    {
        assert!(page.text.contains(shown), "{shown}: {}", page.text);
    }
    let reads = scrm::domain::archive::read::reads(&f.app.db, CORP, 100)
        .await
        .unwrap();
    assert_eq!(reads.len(), before + 1, "one logged read");
    assert_eq!(reads[0].actor, format!("console:{OFFICER}"));
    assert!(reads[0].target.contains(&ext), "{:?}", reads[0]);
    assert_eq!(
        officer
            .get("/console/customers/wmNoSuchCustomer0000000001")
            .await
            .status,
        404
    );
    f.app.stop().await;
}

async fn an_admin_keeps_the_quick_replies_and_compliance_only_reads_them(backend: Backend) {
    let f = fixture(backend).await;
    let corp = crate::common::corp(CORP);
    let mut admin = Browser::new(&f.app.server.base_url);
    assert_eq!(sign_in(&mut admin, ADMIN, "/console").await.status, 303);
    let page = admin.get("/console/replies").await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("还没有话术"));
    let csrf = page.field("csrf");

    let created = admin
        .post_form(
            "/console/replies/folders",
            &[("csrf", &csrf), ("name", "报价")],
        )
        .await;
    assert_eq!(created.status, 303, "{}", created.text);
    let library = scrm::domain::quick_replies::library(&f.app.db, &corp, None)
        .await
        .unwrap();
    let folder = library[0].folder.id.to_string();
    let added = admin
        .post_form(
            "/console/replies/snippets",
            &[
                ("csrf", &csrf),
                ("folder_id", &folder),
                ("title", "标准版价格"),
                ("body", "标准版每年 2,980 元。"),
            ],
        )
        .await;
    assert_eq!(added.status, 303, "{}", added.text);
    let snippet = scrm::domain::quick_replies::library(&f.app.db, &corp, None)
        .await
        .unwrap()[0]
        .snippets[0]
        .id;
    let edited = admin
        .post_form(
            &format!("/console/replies/snippets/{snippet}"),
            &[
                ("csrf", &csrf),
                ("title", "标准版价格"),
                ("body", "标准版每年 2,680 元（限时）。"),
            ],
        )
        .await;
    assert_eq!(edited.status, 303);
    let shown = admin.get("/console/replies?done=saved").await;
    assert!(
        shown.text.contains("2,680") && shown.text.contains("已保存"),
        "{}",
        shown.text
    );
    // A duplicate title and an empty folder name are refused with the reason.
    let duplicate = admin
        .post_form(
            "/console/replies/snippets",
            &[
                ("csrf", &csrf),
                ("folder_id", &folder),
                ("title", "标准版价格"),
                ("body", "x"),
            ],
        )
        .await;
    assert_eq!(duplicate.status, 422);
    assert!(
        duplicate.text.contains("已有同样标题"),
        "{}",
        duplicate.text
    );
    let empty = admin
        .post_form(
            "/console/replies/folders",
            &[("csrf", &csrf), ("name", " ")],
        )
        .await;
    assert_eq!(empty.status, 422);

    // Compliance reads the library and its use counts, changes nothing.
    let mut officer = Browser::new(&f.app.server.base_url);
    sign_in(&mut officer, OFFICER, "/console").await;
    let read = officer.get("/console/replies").await;
    assert_eq!(read.status, 200);
    assert!(read.text.contains("2,680") && !read.text.contains("新建文件夹"));
    let officer_csrf = officer.get("/console/alerts").await.field("csrf");
    let refused = officer
        .post_form(
            &format!("/console/replies/snippets/{snippet}/delete"),
            &[("csrf", &officer_csrf)],
        )
        .await;
    assert_eq!(refused.status, 403);

    // A folder with snippets goes only when asked to take them along.
    let kept = admin
        .post_form(
            &format!("/console/replies/folders/{folder}/delete"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(kept.status, 422);
    assert!(kept.text.contains("还有 1 条话术"), "{}", kept.text);
    let gone = admin
        .post_form(
            &format!("/console/replies/folders/{folder}/delete"),
            &[("csrf", &csrf), ("cascade", "true")],
        )
        .await;
    assert_eq!(gone.status, 303);
    assert!(
        scrm::domain::quick_replies::library(&f.app.db, &corp, None)
            .await
            .unwrap()
            .is_empty()
    );
    f.app.stop().await;
}

async fn the_settings_give_the_callback_urls_and_test_them_as_wecom_would(backend: Backend) {
    let f = fixture_at(backend, "@BASE_URL@").await;
    let base = f.app.server.base_url.clone();
    let mut admin = Browser::new(&base);
    assert_eq!(sign_in(&mut admin, ADMIN, "/console").await.status, 303);
    let page = admin.get("/console/settings").await;
    assert_eq!(page.status, 200, "{}", page.text);
    for app in ["contacts", "directory"] {
        assert!(
            page.text
                .contains(&format!("{base}/wecom/callback/{CORP}/{app}")),
            "{app}: {}",
            page.text
        );
    }
    assert!(page.text.contains("客户联系 → API → 接收事件服务器"));
    // The values in force, each with the key that changes it; no archive for this corp.
    for shown in [
        "提醒与告警",
        "[alerts] mass_deletion_count",
        "[reminders] after_add_days",
        "未启用会话内容存档",
    ] {
        assert!(page.text.contains(shown), "{shown}: {}", page.text);
    }
    let csrf = page.field("csrf");
    let inbox_before = scrm::pipeline::inbox::count(&f.app.db, Some(CORP))
        .await
        .unwrap();
    let tested = admin
        .post_form(
            "/console/settings/selftest",
            &[("csrf", &csrf), ("app", "contacts")],
        )
        .await;
    assert_eq!(tested.status, 200, "{}", tested.text);
    assert!(tested.text.contains("全部通过"), "{}", tested.text);
    assert_eq!(
        tested.text.matches("class=\"check-pass\"").count(),
        3,
        "{}",
        tested.text
    );
    assert_eq!(
        scrm::pipeline::inbox::count(&f.app.db, Some(CORP))
            .await
            .unwrap(),
        inbox_before + 1,
        "the signed test event was stored"
    );
    // Once per ten seconds per corp; an unknown app is named.
    let again = admin
        .post_form(
            "/console/settings/selftest",
            &[("csrf", &csrf), ("app", "contacts")],
        )
        .await;
    assert_eq!(again.status, 429);
    let unknown = admin
        .post_form(
            "/console/settings/selftest",
            &[("csrf", &csrf), ("app", "nope")],
        )
        .await;
    assert_eq!(unknown.status, 422);

    // Compliance reads the addresses, runs nothing.
    let mut officer = Browser::new(&base);
    sign_in(&mut officer, OFFICER, "/console").await;
    let read = officer.get("/console/settings").await;
    assert_eq!(read.status, 200);
    assert!(!read.text.contains("/console/settings/selftest"));
    let refused = officer
        .post_form(
            "/console/settings/selftest",
            &[("csrf", &read.field("csrf")), ("app", "contacts")],
        )
        .await;
    assert_eq!(refused.status, 403);
    f.app.stop().await;
}

async fn an_admin_grows_the_tag_library_through_wecom(backend: Backend) {
    let f = fixture(backend).await;
    let mut admin = Browser::new(&f.app.server.base_url);
    assert_eq!(sign_in(&mut admin, ADMIN, "/console").await.status, 303);
    let page = admin.get("/console/tags").await;
    assert_eq!(page.status, 200, "{}", page.text);
    let csrf = page.field("csrf");

    let created = admin
        .post_form(
            "/console/tags/groups",
            &[
                ("csrf", &csrf),
                ("group", "意向等级"),
                ("tags", "高意向，中意向, 低意向"),
            ],
        )
        .await;
    assert_eq!(created.status, 303, "{}", created.text);
    let flashed = admin.get("/console/tags?done=1").await;
    assert!(
        flashed.text.contains("已提交给企业微信"),
        "{}",
        flashed.text
    );
    crate::emulated::wait_outbox_idle(&f.app.db).await;
    let library = admin.get("/console/tags").await;
    for name in ["意向等级", "高意向", "中意向", "低意向"] {
        assert!(library.text.contains(name), "{name}: {}", library.text);
    }
    assert!(
        !library.text.contains("同步中："),
        "delivered: {}",
        library.text
    );
    let in_wecom = scrm::domain::tags::library(&f.app.db, CORP).await.unwrap();
    let group = in_wecom
        .iter()
        .find(|g| g.name == "意向等级")
        .expect("the group");
    assert_eq!(group.tags.len(), 3);

    // One tag away, through WeCom again.
    let low = group
        .tags
        .iter()
        .find(|t| t.name == "低意向")
        .unwrap()
        .tag_id
        .clone();
    let deleted = admin
        .post_form(&format!("/console/tags/{low}/delete"), &[("csrf", &csrf)])
        .await;
    assert_eq!(deleted.status, 303, "{}", deleted.text);
    crate::emulated::wait_outbox_idle(&f.app.db).await;
    let after = admin.get("/console/tags").await;
    assert!(
        !after.text.contains("低意向") && after.text.contains("高意向"),
        "{}",
        after.text
    );

    // A rename: here at once, and WeCom gets the new name through the outbox.
    let mid = group
        .tags
        .iter()
        .find(|t| t.name == "中意向")
        .unwrap()
        .tag_id
        .clone();
    let renamed = admin
        .post_form(
            "/console/tags/rename",
            &[("csrf", &csrf), ("id", &mid), ("name", "一般意向")],
        )
        .await;
    assert_eq!(renamed.status, 303, "{}", renamed.text);
    crate::emulated::wait_outbox_idle(&f.app.db).await;
    let edits = f.app.wecom().writes_for("externalcontact/edit_corp_tag");
    assert_eq!(edits.len(), 1, "{edits:?}");
    assert_eq!(edits[0].body["id"], mid.as_str());
    assert_eq!(edits[0].body["name"], "一般意向");
    let after = admin.get("/console/tags").await;
    assert!(after.text.contains("一般意向") && !after.text.contains("中意向"));
    let unknown = admin
        .post_form(
            "/console/tags/rename",
            &[("csrf", &csrf), ("id", "etNoSuchTag"), ("name", "x")],
        )
        .await;
    assert_eq!(unknown.status, 422);

    // An auto-tagging rule: customers added through the expo's 联系我 get 高意向 in WeCom.
    let high = group
        .tags
        .iter()
        .find(|t| t.name == "高意向")
        .unwrap()
        .tag_id
        .clone();
    assert!(after.text.contains("还没有自动打标签规则"));
    let ruled = admin
        .post_form(
            "/console/tags/rules",
            &[
                ("csrf", &csrf),
                ("name", "展会渠道"),
                ("trigger", "channel"),
                ("patterns", "expo*"),
                ("tag", &high),
            ],
        )
        .await;
    assert_eq!(ruled.status, 303, "{}", ruled.text);
    let ext = f.app.wecom().add_customer(
        CORP,
        &f.staff[0],
        NewCustomer {
            name: "展会客户".to_owned(),
            state: Some("expo2026".to_owned()),
            ..NewCustomer::default()
        },
    );
    f.app.settle().await;
    crate::emulated::wait_outbox_idle(&f.app.db).await;
    let relation = f
        .app
        .wecom()
        .relation(CORP, &f.staff[0], &ext)
        .expect("the relation in WeCom");
    assert!(relation.tag_ids.contains(&high), "{relation:?}");
    let listed = admin.get("/console/tags").await;
    assert!(listed.text.contains("展会渠道") && listed.text.contains("expo*"));
    let no_tag = admin
        .post_form(
            "/console/tags/rules",
            &[
                ("csrf", &csrf),
                ("name", "空规则"),
                ("trigger", "keyword"),
                ("patterns", "报价"),
            ],
        )
        .await;
    assert_eq!(no_tag.status, 422, "a rule sets at least one tag");
    let rule_id = scrm::domain::customers::record::rules(&f.app.db, CORP, None)
        .await
        .unwrap()[0]
        .id;
    let removed = admin
        .post_form(
            &format!("/console/tags/rules/{rule_id}/delete"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(removed.status, 303);
    assert!(
        scrm::domain::customers::record::rules(&f.app.db, CORP, None)
            .await
            .unwrap()
            .is_empty()
    );
    let actions = f.audit_actions().await;
    for action in [
        "auto_tag_rule.create",
        "auto_tag_rule.delete",
        "tag_library.edit",
    ] {
        assert!(
            actions.contains(&(format!("console:{ADMIN}"), action.to_owned())),
            "{action}: {actions:?}"
        );
    }

    // A name too long is refused before anything is queued; compliance changes nothing.
    let long = "一".repeat(31);
    let refused = admin
        .post_form(
            &format!("/console/tags/groups/{}/tags", group.group_id),
            &[("csrf", &csrf), ("tags", &long)],
        )
        .await;
    assert_eq!(refused.status, 422, "{}", refused.text);
    let mut officer = Browser::new(&f.app.server.base_url);
    sign_in(&mut officer, OFFICER, "/console").await;
    let read = officer.get("/console/tags").await;
    assert!(read.text.contains("高意向") && !read.text.contains("新建标签组"));
    let not_allowed = officer
        .post_form(
            "/console/tags/groups",
            &[("csrf", &read.field("csrf")), ("group", "x"), ("tags", "y")],
        )
        .await;
    assert_eq!(not_allowed.status, 403);
    f.app.stop().await;
}
