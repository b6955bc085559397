//! The console through WeCom's web login (扫码登录, §6.6) against the emulated WeCom: a
//! department leader signs in as a manager and reaches only their departments' alerts and
//! customers; a salesperson only their own customers; a member without a role, a cancelled scan,
//! a reused code and a forged `state` get nowhere. An admin grants and withdraws roles on 成员与权限
//! (each change audited, the member's sessions ended), ends sessions one by one, and filters the
//! alerts by department; "退出所有设备" ends every session of the person.

use scrm::auth::account;
use scrm::auth::{Action, Role};
use scrm::domain::alerts::{self, AlertFilter};
use scrm::domain::staff::{self, StaffUpdate};
use scrm::platform::db::now_ms;
use wecom_sdk::testkit::{ClientContext, NewCustomer, NewStaff};

use crate::common::{Backend, CORP};
use crate::emulated::{EmulatedApp, Options};
use crate::web_client::{Answer, Browser};

both_backends!(
    members_sign_in_with_wecom_and_reach_what_their_role_allows,
    a_manager_reassigns_customers_only_within_their_team,
    in_the_browser_a_manager_scans_in_and_an_admin_sets_roles,
);

const ADMIN: &str = "admin";
const PASSWORD: &str = "correct horse battery staple";
/// Leads 华东销售部 (2), which has 上海组 (3) under it.
const MANAGER: &str = "wang.mgr";
/// In 上海组 (3).
const SHANGHAI: &str = "li.sh";
/// In 华南销售部 (4).
const SOUTH: &str = "chen.hn";
/// No 客户联系, leads nothing: no console role until an admin grants one.
const CLERK: &str = "zhou.cmp";

struct Fixture {
    app: EmulatedApp,
}

async fn fixture(backend: Backend) -> Fixture {
    let app = EmulatedApp::spawn_with(
        backend,
        Options {
            extra_config: "[alerts]\nconsole_url = \"@BASE_URL@\"\n\
                 [console]\nsso_login_url = \"http://{EMULATOR_ADDR}/wwlogin/sso/login\"\n"
                .to_owned(),
            ..Options::default()
        },
    )
    .await;
    for (user, name, dept) in [
        (MANAGER, "王经理", 2),
        (SHANGHAI, "李上海", 3),
        (SOUTH, "陈华南", 4),
        (CLERK, "周合规", 1),
    ] {
        assert!(app.wecom().add_staff(
            CORP,
            NewStaff {
                userid: user.to_owned(),
                name: name.to_owned(),
                department: vec![dept],
            },
        ));
    }
    app.settle().await;
    // The directory as the reconciliation stores it: the tree, who leads what, who has 客户联系.
    let now = now_ms();
    for (id, name, parent) in [
        (1, "总公司", None),
        (2, "华东销售部", Some(1)),
        (3, "上海组", Some(2)),
        (4, "华南销售部", Some(1)),
    ] {
        staff::upsert_department(&app.db, CORP, id, Some(name), parent, None, now)
            .await
            .unwrap();
    }
    for (user, dept, leads, contact) in [
        (MANAGER, 2, vec![2], true),
        (SHANGHAI, 3, vec![], true),
        (SOUTH, 4, vec![], true),
        (CLERK, 1, vec![], false),
    ] {
        staff::upsert(
            &app.db,
            CORP,
            &StaffUpdate {
                user_id: user.to_owned(),
                departments: Some(vec![dept]),
                main_department: Some(dept),
                status: Some(1),
                has_customer_contact: Some(contact),
                leads_departments: Some(leads),
                ..StaffUpdate::default()
            },
            now,
        )
        .await
        .unwrap();
    }
    account::create(
        &app.db,
        &crate::common::corp(CORP),
        ADMIN,
        PASSWORD,
        Role::Admin,
        "test",
        now,
    )
    .await
    .unwrap();
    Fixture { app }
}

impl Fixture {
    fn customer(&self, user: &str, name: &str) -> String {
        self.app.wecom().add_customer(
            CORP,
            user,
            NewCustomer {
                name: name.to_owned(),
                ..NewCustomer::default()
            },
        )
    }

    /// `user` deletes a new customer: an alert about them. Returns its id.
    async fn deletion_alert(&self, user: &str, name: &str) -> i64 {
        let ext = self.customer(user, name);
        self.app.settle().await;
        assert!(self.app.wecom().staff_deletes_customer(CORP, user, &ext));
        self.app.settle().await;
        self.alerts()
            .await
            .into_iter()
            .find(|a| a.staff_user_id == user)
            .expect("an alert about the member")
            .id
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

    async fn audit(&self) -> Vec<(String, String, String)> {
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
        .map(|e| (e.actor, e.action, e.target))
        .collect()
    }

    fn scan_with(&self, user: Option<&str>, refuses: bool) {
        self.app.wecom().set_client(Some(ClientContext {
            corp_id: CORP.to_owned(),
            userid: user.map(str::to_owned),
            outsider: user.is_none(),
            refuses_login: refuses,
            ..ClientContext::default()
        }));
    }

    /// Starts the WeCom sign-in for `next` and lets `user` scan: WeCom's answer (its redirect
    /// back to us, or its own page).
    async fn scan(&self, browser: &mut Browser, user: Option<&str>, next: &str) -> Answer {
        self.scan_with(user, false);
        let start = browser
            .get(&format!(
                "/console/login/wecom?next={}",
                url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
            ))
            .await;
        assert_eq!(start.status, 302, "{}", start.text);
        let to_wecom = start.location.unwrap();
        let emulator = format!("http://{}/wwlogin/sso/login?", self.app.emulator.addr());
        assert!(to_wecom.starts_with(&emulator), "{to_wecom}");
        for part in [
            "login_type=CorpApp",
            &format!("appid={CORP}"),
            "agentid=",
            "redirect_uri=http",
        ] {
            assert!(to_wecom.contains(part), "{part} in {to_wecom}");
        }
        browser.get(&to_wecom).await
    }

    /// Signs `user` in through WeCom: the console's page after the return.
    async fn sign_in(&self, browser: &mut Browser, user: &str, next: &str) -> Answer {
        let wecom = self.scan(browser, Some(user), next).await;
        assert_eq!(wecom.status, 302, "{}", wecom.text);
        browser.get(&wecom.location.unwrap()).await
    }
}

/// The bootstrap admin signs in with the console account's password.
async fn admin_signs_in(browser: &mut Browser) {
    let signed = browser
        .post_form(
            "/console/login",
            &[
                ("username", ADMIN),
                ("password", PASSWORD),
                ("next", "/console"),
            ],
        )
        .await;
    assert_eq!(signed.status, 303, "{}", signed.text);
}

async fn members_sign_in_with_wecom_and_reach_what_their_role_allows(backend: Backend) {
    let f = fixture(backend).await;
    let base = f.app.server.base_url.clone();
    let east_alert = f.deletion_alert(SHANGHAI, "孙总").await;
    let south_alert = f.deletion_alert(SOUTH, "吴总").await;
    let east_customer = f.customer(SHANGHAI, "上海客户");
    let south_customer = f.customer(SOUTH, "华南客户");
    f.app.settle().await;

    // The login page offers WeCom; nobody scanning yet: WeCom's page shows its QR code.
    let mut manager = Browser::new(&base);
    let login = manager.get("/console/login?next=/console/alerts").await;
    assert!(login.text.contains("企业微信扫码登录"), "{}", login.text);
    f.app.wecom().set_client(None);
    let start = manager.get("/console/login/wecom").await;
    let qr = manager.get(&start.location.unwrap()).await;
    assert_eq!(qr.status, 200);
    assert!(qr.text.contains("扫描二维码"));

    // The department leader scans: a manager, sent on by a page of ours (the session cookie is
    // SameSite=Strict), the overview not theirs so the alerts first.
    let signed = f.sign_in(&mut manager, MANAGER, "/console").await;
    assert_eq!(signed.status, 200, "{}", signed.text);
    assert!(signed.text.contains("url=/console"), "{}", signed.text);
    assert!(manager.cookies.contains_key("scrm_console"));
    assert!(!manager.cookies.contains_key("scrm_console_sso"));
    let home = manager.get("/console").await;
    assert_eq!(home.status, 303);
    assert_eq!(home.location.as_deref(), Some("/console/alerts"));
    let inbox = manager.get("/console/alerts").await;
    assert_eq!(inbox.status, 200);
    assert!(inbox.text.contains("部门负责人"), "the role is shown");
    assert!(
        inbox
            .text
            .contains(&format!("/console/alerts/{east_alert}")),
        "{}",
        inbox.text
    );
    assert!(
        !inbox
            .text
            .contains(&format!("/console/alerts/{south_alert}"))
    );
    assert!(
        !inbox.text.contains("成员与权限"),
        "no admin pages in the menu"
    );
    assert_eq!(
        manager
            .get(&format!("/console/alerts/{east_alert}"))
            .await
            .status,
        200
    );
    assert_eq!(
        manager
            .get(&format!("/console/alerts/{south_alert}"))
            .await
            .status,
        403
    );
    let csrf = inbox.field("csrf");
    let foreign = manager
        .post_form(
            &format!("/console/alerts/{south_alert}/step"),
            &[("csrf", &csrf), ("step", "resolve")],
        )
        .await;
    assert_eq!(foreign.status, 403);
    let bulk = manager
        .post_form(
            "/console/alerts/bulk",
            &[
                ("csrf", &csrf),
                ("step", "acknowledge"),
                ("id", &east_alert.to_string()),
                ("id", &south_alert.to_string()),
                ("back", "/console/alerts"),
            ],
        )
        .await;
    assert_eq!(bulk.location.as_deref(), Some("/console/alerts?done=1"));
    let states: Vec<(i64, String)> = f
        .alerts()
        .await
        .into_iter()
        .map(|a| (a.id, a.state))
        .collect();
    assert!(states.contains(&(east_alert, "acknowledged".to_owned())));
    assert!(states.contains(&(south_alert, "open".to_owned())));
    let customers = manager.get("/console/customers").await;
    assert!(customers.text.contains("上海客户"), "{}", customers.text);
    assert!(!customers.text.contains("华南客户"));
    assert_eq!(
        manager
            .get(&format!("/console/customers/{east_customer}"))
            .await
            .status,
        200
    );
    assert_eq!(
        manager
            .get(&format!("/console/customers/{south_customer}"))
            .await
            .status,
        403
    );
    for page in ["/console/members", "/console/audit", "/console/settings"] {
        assert_eq!(manager.get(page).await.status, 403, "{page}");
    }

    // A salesperson: their own customers, no alerts.
    let mut sales = Browser::new(&base);
    assert_eq!(f.sign_in(&mut sales, SOUTH, "/console").await.status, 200);
    let own = sales.get("/console").await;
    assert_eq!(own.location.as_deref(), Some("/console/customers"));
    let own = sales.get("/console/customers").await;
    assert!(own.text.contains("华南客户"), "{}", own.text);
    assert!(!own.text.contains("上海客户"));
    assert_eq!(sales.get("/console/alerts").await.status, 403);

    // No role, a cancelled scan, a reused code, a forged state: no session.
    let mut clerk = Browser::new(&base);
    let none = f.sign_in(&mut clerk, CLERK, "/console").await;
    assert_eq!(none.status, 403);
    assert!(none.text.contains("没有控制台权限"), "{}", none.text);
    assert!(!clerk.cookies.contains_key("scrm_console"));
    f.scan_with(Some(CLERK), true);
    let start = clerk.get("/console/login/wecom").await;
    let back = clerk.get(&start.location.unwrap()).await;
    assert!(!back.location.as_deref().unwrap().contains("code="));
    let cancelled = clerk.get(&back.location.unwrap()).await;
    assert_eq!(cancelled.status, 403);
    assert!(cancelled.text.contains("登录已取消"));
    let mut replay = Browser::new(&base);
    let wecom = f.scan(&mut replay, Some(MANAGER), "/console").await;
    let used = wecom.location.unwrap();
    assert_eq!(replay.get(&used).await.status, 200);
    let again = f.scan(&mut replay, Some(MANAGER), "/console").await;
    let fresh_state = again.location.unwrap();
    let fresh_state = fresh_state.split("state=").nth(1).unwrap();
    let reused = format!(
        "{}state={fresh_state}",
        used.split("state=").next().unwrap()
    );
    let refused = replay.get(&reused).await;
    assert_eq!(refused.status, 400);
    assert!(refused.text.contains("登录码已失效"), "{}", refused.text);
    let mut forger = Browser::new(&base);
    let wecom = f.scan(&mut forger, Some(MANAGER), "/console").await;
    let forged = wecom.location.unwrap().replace("state=", "state=X");
    assert_eq!(forger.get(&forged).await.status, 400);
    assert!(!forger.cookies.contains_key("scrm_console"));

    // The admin: departments filter the alerts (sub-departments included).
    let mut admin = Browser::new(&base);
    admin_signs_in(&mut admin).await;
    let east = admin.get("/console/alerts?dept=2").await;
    assert!(east.text.contains("华东销售部"));
    assert!(east.text.contains(&format!("/console/alerts/{east_alert}")));
    assert!(
        !east
            .text
            .contains(&format!("/console/alerts/{south_alert}"))
    );
    let south = admin.get("/console/alerts?dept=4").await;
    assert!(
        !south
            .text
            .contains(&format!("/console/alerts/{east_alert}"))
    );
    assert!(
        south
            .text
            .contains(&format!("/console/alerts/{south_alert}"))
    );

    // 成员与权限: the roles as signing in gives them, and the live sessions.
    let members = admin.get("/console/members").await;
    assert_eq!(members.status, 200, "{}", members.text);
    assert!(members.text.contains("王经理"));
    assert!(members.text.contains("不能登录（无权限）"), "the clerk");
    let csrf = members.field("csrf");
    // Granting compliance to the clerk: audited; they sign in and see every alert.
    let granted = admin
        .post_form(
            &format!("/console/members/{CLERK}/role"),
            &[("csrf", &csrf), ("role", "compliance")],
        )
        .await;
    assert_eq!(granted.status, 303, "{}", granted.text);
    assert!(f.audit().await.contains(&(
        format!("console:{ADMIN}"),
        "console.role".to_owned(),
        CLERK.to_owned()
    )));
    let mut officer = Browser::new(&base);
    assert_eq!(
        f.sign_in(&mut officer, CLERK, "/console/alerts")
            .await
            .status,
        200
    );
    let all = officer.get("/console/alerts").await;
    assert!(all.text.contains(&format!("/console/alerts/{south_alert}")));
    assert!(all.text.contains("合规"));
    // A forged form (no token) changes no role.
    let forged = admin
        .post_form(
            &format!("/console/members/{SOUTH}/role"),
            &[("role", "admin")],
        )
        .await;
    assert_eq!(forged.status, 403);
    assert_eq!(
        scrm::auth::members::granted(&f.app.db, &crate::common::corp(CORP), SOUTH)
            .await
            .unwrap(),
        None
    );

    // Withdrawing the manager's access ends their session at once and keeps them out.
    let withdrawn = admin
        .post_form(
            &format!("/console/members/{MANAGER}/role"),
            &[("csrf", &csrf), ("role", "none")],
        )
        .await;
    assert_eq!(withdrawn.status, 303);
    assert_eq!(manager.get("/console/alerts").await.status, 303);
    let kept_out = f.sign_in(&mut manager, MANAGER, "/console").await;
    assert_eq!(kept_out.status, 403);
    assert!(kept_out.text.contains("管理员已关闭"));

    // The admin ends the salesperson's session from the list.
    let members = admin.get("/console/members").await;
    let id = members
        .text
        .split("action=\"/console/sessions/")
        .skip(1)
        .map(|r| r.split('/').next().unwrap().to_owned())
        .collect::<Vec<_>>();
    assert!(!id.is_empty(), "{}", members.text);
    let before = sales.get("/console/customers").await.status;
    assert_eq!(before, 200);
    for id in &id {
        // Every listed session but the admin's own.
        let row_owner = members
            .text
            .split(&format!("/console/sessions/{id}/end"))
            .next()
            .unwrap()
            .rsplit("<tr>")
            .next()
            .unwrap()
            .to_owned();
        if row_owner.contains(SOUTH) || row_owner.contains("陈华南") {
            let ended = admin
                .post_form(&format!("/console/sessions/{id}/end"), &[("csrf", &csrf)])
                .await;
            assert_eq!(ended.status, 303);
        }
    }
    assert_eq!(sales.get("/console/customers").await.status, 303);
    assert!(f.audit().await.contains(&(
        format!("console:{ADMIN}"),
        "console.sessions_revoked".to_owned(),
        SOUTH.to_owned()
    )));

    // 退出所有设备: the officer on two browsers; signing out everywhere from one ends both.
    let mut second = Browser::new(&base);
    assert_eq!(
        f.sign_in(&mut second, CLERK, "/console/alerts")
            .await
            .status,
        200
    );
    let page = officer.get("/console/alerts").await;
    let out = officer
        .post_form(
            "/console/logout/everywhere",
            &[("csrf", &page.field("csrf"))],
        )
        .await;
    assert_eq!(out.status, 303);
    assert_eq!(second.get("/console/alerts").await.status, 303);
    assert_eq!(officer.get("/console/alerts").await.status, 303);
    let audit = f.audit().await;
    assert!(audit.contains(&(
        CLERK.to_owned(),
        "console.logout_everywhere".to_owned(),
        "console".to_owned()
    )));
    for who in [MANAGER, SOUTH, CLERK] {
        assert!(
            audit.contains(&(
                who.to_owned(),
                "console.login".to_owned(),
                "console".to_owned()
            )),
            "{who}: {audit:?}"
        );
    }
    assert!(audit.contains(&(
        MANAGER.to_owned(),
        "console.login_refused".to_owned(),
        "console".to_owned()
    )));
    f.app.stop().await;
}

both_backends!(every_console_route_refuses_the_roles_that_may_not);

/// Routes anyone may reach (signing in and out, the assets).
const PUBLIC: [&str; 6] = [
    "/console/login",
    "/console/login/wecom",
    "/console/login/wecom/return",
    "/console/logout",
    "/console/logout/everywhere",
    "/console/assets/{name}",
];

/// Every console route with the action its role must allow, as the router in
/// `src/http/console/mod.rs` lists them (the test reads it, so a new route without a line here
/// fails).
const MATRIX: [(&str, &str, Action); 44] = [
    ("GET", "/console", Action::ReadOperations),
    ("GET", "/console/alerts", Action::ReadAlerts),
    ("GET", "/console/alerts.csv", Action::ReadAlerts),
    ("POST", "/console/alerts/bulk", Action::HandleAlerts),
    ("GET", "/console/alerts/{id}", Action::ReadAlerts),
    ("POST", "/console/alerts/{id}/step", Action::HandleAlerts),
    ("GET", "/console/customers", Action::ReadCustomers),
    ("GET", "/console/customers/{ext}", Action::ReadCustomers),
    ("GET", "/console/tags", Action::ReadCustomers),
    ("POST", "/console/tags/groups", Action::ManageTags),
    ("POST", "/console/tags/groups/{id}/tags", Action::ManageTags),
    (
        "POST",
        "/console/tags/groups/{id}/delete",
        Action::ManageTags,
    ),
    ("POST", "/console/tags/{id}/delete", Action::ManageTags),
    ("POST", "/console/tags/rename", Action::ManageTags),
    ("POST", "/console/tags/rules", Action::ManageSettings),
    (
        "POST",
        "/console/tags/rules/{id}/delete",
        Action::ManageSettings,
    ),
    ("GET", "/console/rules", Action::ManageRules),
    ("POST", "/console/rules/try", Action::ManageRules),
    ("POST", "/console/rules/save", Action::ManageRules),
    (
        "GET",
        "/console/rules/versions/{version}",
        Action::ManageRules,
    ),
    (
        "POST",
        "/console/rules/versions/{version}/revert",
        Action::ManageRules,
    ),
    ("POST", "/console/rules/rescan", Action::ManageRules),
    ("GET", "/console/rules/rescan/{id}", Action::ManageRules),
    ("POST", "/console/rules/recipients", Action::ManageRules),
    ("GET", "/console/transfers", Action::ReadTransfers),
    ("GET", "/console/transfers/new", Action::ManageTransfers),
    ("POST", "/console/transfers/plan", Action::ManageTransfers),
    ("GET", "/console/transfers/{id}", Action::ReadTransfers),
    (
        "GET",
        "/console/transfers/{id}/progress",
        Action::ReadTransfers,
    ),
    (
        "POST",
        "/console/transfers/{id}/{action}",
        Action::ManageTransfers,
    ),
    ("GET", "/console/replies", Action::ReadCustomers),
    (
        "POST",
        "/console/replies/folders",
        Action::ManageQuickReplies,
    ),
    (
        "POST",
        "/console/replies/folders/{id}/delete",
        Action::ManageQuickReplies,
    ),
    (
        "POST",
        "/console/replies/snippets",
        Action::ManageQuickReplies,
    ),
    (
        "POST",
        "/console/replies/snippets/{id}",
        Action::ManageQuickReplies,
    ),
    (
        "POST",
        "/console/replies/snippets/{id}/delete",
        Action::ManageQuickReplies,
    ),
    ("GET", "/console/members", Action::ManageSettings),
    (
        "POST",
        "/console/members/{user}/role",
        Action::ManageSettings,
    ),
    (
        "POST",
        "/console/members/{user}/sessions/end",
        Action::ManageSettings,
    ),
    ("POST", "/console/sessions/{id}/end", Action::ManageSettings),
    ("GET", "/console/settings", Action::ReadOperations),
    ("POST", "/console/settings/selftest", Action::ManageSettings),
    ("GET", "/console/audit", Action::ReadOperations),
    ("GET", "/console/audit.csv", Action::ReadOperations),
];

/// `(method, path)` of every route `router()` in the console's source registers.
fn routes_in_source() -> Vec<(String, String)> {
    let src = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/http/console/mod.rs"
    ))
    .unwrap();
    let body = src
        .split("pub(crate) fn router()")
        .nth(1)
        .unwrap()
        .split("\n}\n")
        .next()
        .unwrap();
    let mut out = Vec::new();
    for piece in body.split(".route(").skip(1) {
        let path = piece.split('"').nth(1).unwrap().to_owned();
        let handlers = piece.split_once(',').unwrap().1;
        let handlers = handlers.split(")\n").next().unwrap();
        for (method, call) in [("GET", "get("), ("POST", "post(")] {
            if handlers.contains(call) {
                out.push((method.to_owned(), path.clone()));
            }
        }
    }
    out
}

fn filled(path: &str) -> String {
    path.replace("{id}", "999999")
        .replace("{ext}", "wmNOBODY")
        .replace("{user}", "nobody")
        .replace("{version}", "999")
        .replace("{action}", "start")
}

async fn every_console_route_refuses_the_roles_that_may_not(backend: Backend) {
    let f = fixture(backend).await;
    let base = f.app.server.base_url.clone();
    let corp = crate::common::corp(CORP);

    let listed: Vec<(String, String)> = MATRIX
        .iter()
        .map(|(m, p, _)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    let in_source = routes_in_source();
    assert!(in_source.len() > 40, "{in_source:?}");
    for route in &in_source {
        assert!(
            listed.contains(route) || PUBLIC.contains(&route.1.as_str()),
            "{route:?} is not in the console's role matrix"
        );
    }

    // One session per role: accounts for admin and compliance, members for manager and sales.
    account::create(
        &f.app.db,
        &corp,
        "officer",
        PASSWORD,
        Role::Compliance,
        "test",
        now_ms(),
    )
    .await
    .unwrap();
    let mut sessions = Vec::new();
    for role in Role::ALL {
        let created = match role {
            Role::Admin | Role::Compliance => {
                let name = if role == Role::Admin {
                    ADMIN
                } else {
                    "officer"
                };
                let a = account::get(&f.app.db, name).await.unwrap().unwrap();
                scrm::auth::session::create(
                    &f.app.db,
                    &corp,
                    scrm::auth::session::SignIn::Account(&a),
                    now_ms(),
                )
                .await
            }
            Role::Manager | Role::Sales => {
                let user = wecom_sdk::UserId::try_from(if role == Role::Manager {
                    MANAGER
                } else {
                    SOUTH
                })
                .unwrap();
                scrm::auth::session::create(
                    &f.app.db,
                    &corp,
                    scrm::auth::session::SignIn::Member(&user, role),
                    now_ms(),
                )
                .await
            }
        };
        let (token, session) = created.unwrap();
        assert_eq!(session.principal.role, role);
        let mut browser = Browser::new(&base);
        browser.cookies.insert("scrm_console".to_owned(), token);
        sessions.push((role, browser, session.csrf_token));
    }

    let mut checked = 0;
    for (method, path, action) in MATRIX {
        for (role, browser, csrf) in &mut sessions {
            let url = filled(path);
            let answer = if method == "GET" {
                browser.get(&url).await
            } else {
                browser.post_form(&url, &[("csrf", csrf.as_str())]).await
            };
            // Refused for the role (a refusal for the data scope, a customer not of the team, is not this).
            let refused = answer.status == 403 && answer.text.contains("不能使用这个页面");
            if role.may(action) {
                assert!(
                    !refused && answer.status < 500,
                    "{method} {path} as {role:?}: {} {}",
                    answer.status,
                    answer.text
                );
            } else if path == "/console" {
                // Who may not see the overview starts on a page of their own instead.
                assert_eq!(answer.status, 303, "{method} {path} as {role:?}");
                assert_ne!(answer.location.as_deref(), Some("/console"));
            } else {
                assert!(
                    refused,
                    "{method} {path} as {role:?} must be refused: {} {}",
                    answer.status, answer.text
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, MATRIX.len() * Role::ALL.len());
    f.app.stop().await;
}

/// Real Chromium: the department leader clicks 企业微信扫码登录, WeCom (the emulator, with the
/// leader's phone arranged to confirm) sends the browser back, and the console opens on their
/// department's alerts; the admin's 成员与权限. Screenshots at 1280×800.
/// 离职继承 as a department leader: the page lists only their team's members and reassignments;
/// a plan from or to someone outside the team is refused and nothing is planned; one inside it is
/// planned and started, audited under the manager's name; another team's job is not theirs to
/// read or start.
async fn a_manager_reassigns_customers_only_within_their_team(backend: Backend) {
    let f = fixture(backend).await;
    let base = f.app.server.base_url.clone();
    f.customer(SHANGHAI, "上海客户");
    f.customer(SOUTH, "华南客户");
    f.app.settle().await;
    let jobs = |db: scrm::platform::db::Db| async move {
        scrm::domain::transfers::list_jobs(&db, &crate::common::corp(CORP), None, 50)
            .await
            .unwrap()
    };
    // The admin's reassignment in 华南: not the manager's.
    let mut admin = Browser::new(&base);
    admin_signs_in(&mut admin).await;
    let form = admin.get("/console/transfers/new").await;
    assert!(form.text.contains("陈华南"), "{}", form.text);
    let south_plan = admin
        .post_form(
            "/console/transfers/plan",
            &[
                ("csrf", &form.field("csrf")),
                ("handover", SOUTH),
                ("taker", CLERK),
            ],
        )
        .await;
    assert_eq!(south_plan.status, 303, "{}", south_plan.text);
    let south_job = south_plan.location.unwrap();

    // The customer search's filters, through the page (their logic: tests/it/hardening.rs).
    let search = admin.get("/console/customers").await;
    for control in [
        "name=\"phone\"",
        "name=\"tag\"",
        "name=\"stage\"",
        "name=\"channel\"",
        "name=\"added_from\"",
        "name=\"ended_to\"",
    ] {
        assert!(search.text.contains(control), "{control}");
    }
    assert!(search.text.contains("上海客户") && search.text.contains("华南客户"));
    let unset = admin
        .get("/console/customers?stage=-&added_from=2020-01-01")
        .await;
    assert!(unset.text.contains("上海客户"), "{}", unset.text);
    let none = admin.get("/console/customers?channel=nowhere").await;
    assert!(none.text.contains("没有符合条件的客户"), "{}", none.text);
    let bad = admin.get("/console/customers?added_from=2026-13-45").await;
    assert!(
        bad.status >= 400 && bad.text.contains("日期格式"),
        "{} {}",
        bad.status,
        bad.text
    );

    let mut manager = Browser::new(&base);
    assert_eq!(
        f.sign_in(&mut manager, MANAGER, "/console").await.status,
        200
    );
    let list = manager.get("/console/transfers").await;
    assert_eq!(list.status, 200, "{}", list.text);
    assert!(list.text.contains("离职继承"), "in the menu");
    assert!(
        !list.text.contains(&format!("href=\"{south_job}\"")),
        "{}",
        list.text
    );
    let form = manager.get("/console/transfers/new").await;
    assert_eq!(form.status, 200, "{}", form.text);
    assert!(form.text.contains("李上海") && form.text.contains("王经理"));
    assert!(
        !form.text.contains("陈华南") && !form.text.contains("周合规"),
        "{}",
        form.text
    );
    let csrf = form.field("csrf");
    for (handover, taker) in [(SHANGHAI, SOUTH), (SOUTH, SHANGHAI)] {
        let refused = manager
            .post_form(
                "/console/transfers/plan",
                &[("csrf", &csrf), ("handover", handover), ("taker", taker)],
            )
            .await;
        assert_eq!(
            refused.status, 403,
            "{handover} → {taker}: {}",
            refused.text
        );
        assert!(
            refused.text.contains("只能在自己的团队内交接"),
            "{}",
            refused.text
        );
    }
    assert_eq!(jobs(f.app.db.clone()).await.len(), 1, "nothing planned");
    for path in [south_job.clone(), format!("{south_job}/progress")] {
        assert_eq!(manager.get(&path).await.status, 403, "{path}");
    }
    let foreign = manager
        .post_form(&format!("{south_job}/start"), &[("csrf", &csrf)])
        .await;
    assert_eq!(foreign.status, 403, "{}", foreign.text);

    // Within the team: planned, shown, started.
    let planned = manager
        .post_form(
            "/console/transfers/plan",
            &[
                ("csrf", &csrf),
                ("handover", SHANGHAI),
                ("taker", MANAGER),
                ("handover_note", "李上海调岗，客户由王经理接手"),
            ],
        )
        .await;
    assert_eq!(planned.status, 303, "{}", planned.text);
    let own_job = planned.location.unwrap();
    let page = manager.get(&own_job).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("李上海调岗"), "{}", page.text);
    let started = manager
        .post_form(&format!("{own_job}/start"), &[("csrf", &csrf)])
        .await;
    assert_eq!(started.status, 303, "{}", started.text);
    assert_eq!(
        started.location.as_deref(),
        Some(format!("{own_job}?done=start").as_str())
    );
    let all = jobs(f.app.db.clone()).await;
    assert_eq!(all.len(), 2);
    let own = all
        .iter()
        .find(|j| j.handover_user_id.as_str() == SHANGHAI)
        .unwrap();
    assert_eq!(own.state, "running");
    assert_eq!(own.taker_list(), [MANAGER]);
    assert!(
        manager
            .get("/console/transfers")
            .await
            .text
            .contains(&own_job),
        "the team's job is listed"
    );
    let audit = f.audit().await;
    let by_manager: Vec<_> = audit
        .iter()
        .filter(|(actor, action, _)| actor.contains(MANAGER) && action.starts_with("transfer"))
        .collect();
    assert!(by_manager.len() >= 2, "plan and start audited: {audit:?}");
    f.app.stop().await;
}

async fn in_the_browser_a_manager_scans_in_and_an_admin_sets_roles(backend: Backend) {
    let f = fixture(backend).await;
    f.deletion_alert(SHANGHAI, "孙总").await;
    f.deletion_alert(SOUTH, "吴总").await;
    let base = f.app.server.base_url.clone();
    let name = |view: &str| format!("console-{view}-{}", backend.name());
    let browser = crate::webdriver::Browser::start(1280, 800).await;
    browser.goto(&format!("{base}/console/alerts")).await;
    browser
        .wait_for("the sign-in page", "document.querySelector('.sso a')")
        .await;
    browser.screenshot(&name("login-wecom")).await;
    f.scan_with(Some(MANAGER), false);
    browser.click(".sso a").await;
    browser
        .wait_for(
            "the manager's alerts",
            "location.pathname === '/console/alerts' && !!document.querySelector('table.list')",
        )
        .await;
    let text = browser.eval("return document.body.innerText;").await;
    let text = text.as_str().unwrap().to_owned();
    assert!(text.contains("部门负责人"), "{text}");
    // The team's member (the list shows members by name) and their customer; nothing of the
    // other department.
    assert!(text.contains("李上海") && text.contains("孙总"), "{text}");
    assert!(
        !text.contains("陈华南") && !text.contains("吴总") && !text.contains(SOUTH),
        "{text}"
    );
    browser.screenshot(&name("manager-alerts")).await;
    browser
        .click("button[formaction='/console/logout/everywhere']")
        .await;
    browser
        .wait_for("signed out", "!!document.querySelector('main.login')")
        .await;
    browser.type_into("input[name='username']", ADMIN).await;
    browser.type_into("input[name='password']", PASSWORD).await;
    browser.click("main.login form button[type='submit']").await;
    browser
        .wait_for("the overview", "!!document.querySelector('.tiles')")
        .await;
    browser.goto(&format!("{base}/console/members")).await;
    browser
        .wait_for(
            "the members",
            "!!document.querySelector('table.list select')",
        )
        .await;
    let text = browser.eval("return document.body.innerText;").await;
    assert!(text.as_str().unwrap().contains("王经理"), "{text}");
    browser.screenshot(&name("members")).await;
    browser.quit().await;
    f.app.stop().await;
}
