//! The role matrix: every endpoint of the registry × every kind of caller → allowed or refused,
//! and a refused write changes nothing. A new endpoint without a row here fails the test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly"
)]

use crate::common;
use std::collections::BTreeMap;

use crate::common::{Backend, CORP, TestApp};
use scrm::auth::Role;
use scrm::platform::db::{Db, now_ms};

/// Allowed (`A`: anything but 401/403) or refused (`D`: 403) for: sales of the customer, sales of
/// another customer, compliance, admin; and a body that is valid for the endpoint, so that only
/// the caller decides. No key and a revoked key are always 401.
const MATRIX: &[(&str, &str, [char; 4], &str)] = &[
    ("get", "/customers", ['A', 'A', 'A', 'A'], ""),
    (
        "get",
        "/customers/{external_user_id}",
        ['A', 'D', 'A', 'A'],
        "",
    ),
    (
        "put",
        "/customers/{external_user_id}/relations/{user_id}/tags",
        ['A', 'D', 'D', 'A'],
        r#"{"add":["et1"]}"#,
    ),
    (
        "patch",
        "/customers/{external_user_id}/relations/{user_id}",
        ['A', 'D', 'D', 'A'],
        r#"{"remark":"王总"}"#,
    ),
    (
        "put",
        "/customers/{external_user_id}/personal-tags",
        ['A', 'D', 'D', 'A'],
        r#"{"add":[1]}"#,
    ),
    (
        "get",
        "/customers/{external_user_id}/notes",
        ['A', 'D', 'A', 'A'],
        "",
    ),
    (
        "post",
        "/customers/{external_user_id}/notes",
        ['A', 'D', 'D', 'A'],
        r#"{"body":"再联系"}"#,
    ),
    (
        "patch",
        "/notes/{id}",
        ['A', 'D', 'D', 'A'],
        r#"{"body":"改过"}"#,
    ),
    ("get", "/notes/{id}/revisions", ['A', 'D', 'A', 'A'], ""),
    ("get", "/reminders", ['A', 'A', 'A', 'A'], ""),
    (
        "get",
        "/customers/{external_user_id}/reminders",
        ['A', 'D', 'A', 'A'],
        "",
    ),
    (
        "post",
        "/customers/{external_user_id}/reminders",
        ['A', 'D', 'D', 'A'],
        r#"{"title":"回访","due_at_ms":DUE}"#,
    ),
    ("post", "/reminders/{id}/done", ['A', 'D', 'D', 'A'], "{}"),
    (
        "post",
        "/reminders/{id}/snooze",
        ['A', 'D', 'D', 'A'],
        r#"{"until_ms":DUE}"#,
    ),
    ("post", "/reminders/{id}/cancel", ['A', 'D', 'D', 'A'], "{}"),
    ("get", "/stages", ['A', 'A', 'A', 'A'], ""),
    (
        "put",
        "/stages",
        ['D', 'D', 'D', 'A'],
        r#"{"stages":["新客户","成交"]}"#,
    ),
    (
        "get",
        "/customers/{external_user_id}/stage",
        ['A', 'D', 'A', 'A'],
        "",
    ),
    (
        "put",
        "/customers/{external_user_id}/stage",
        ['A', 'D', 'D', 'A'],
        r#"{"stage":"意向"}"#,
    ),
    ("get", "/alerts", ['D', 'D', 'A', 'A'], ""),
    ("get", "/alerts/{id}", ['D', 'D', 'A', 'A'], ""),
    ("post", "/alerts/rescan", ['D', 'D', 'D', 'A'], "{}"),
    (
        "post",
        "/alerts/{id}/acknowledge",
        ['D', 'D', 'A', 'A'],
        "{}",
    ),
    ("post", "/alerts/{id}/resolve", ['D', 'D', 'A', 'A'], "{}"),
    (
        "post",
        "/alerts/{id}/false-positive",
        ['D', 'D', 'A', 'A'],
        "{}",
    ),
    ("post", "/alerts/{id}/reopen", ['D', 'D', 'A', 'A'], "{}"),
    ("get", "/archive/status", ['D', 'D', 'A', 'A'], ""),
    ("get", "/archive/messages", ['D', 'D', 'A', 'A'], ""),
    ("get", "/archive/messages/{id}", ['D', 'D', 'A', 'A'], ""),
    ("get", "/archive/media/{id}", ['D', 'D', 'A', 'A'], ""),
    ("get", "/archive/undecryptable", ['D', 'D', 'A', 'A'], ""),
    ("get", "/archive/reads", ['D', 'D', 'D', 'A'], ""),
    ("get", "/outbox", ['D', 'D', 'A', 'A'], ""),
    ("get", "/outbox/{id}", ['D', 'D', 'A', 'A'], ""),
    ("post", "/outbox/{id}/retry", ['D', 'D', 'D', 'A'], "{}"),
    ("get", "/tag-groups", ['A', 'A', 'A', 'A'], ""),
    (
        "post",
        "/tag-groups",
        ['D', 'D', 'D', 'A'],
        r#"{"name":"客户等级","tags":[{"name":"VIP"}]}"#,
    ),
    ("get", "/tag-groups/{group_id}", ['A', 'A', 'A', 'A'], ""),
    (
        "post",
        "/tag-groups/{group_id}/tags",
        ['D', 'D', 'D', 'A'],
        r#"{"tags":[{"name":"普通"}]}"#,
    ),
    (
        "patch",
        "/tag-groups/{group_id}",
        ['D', 'D', 'D', 'A'],
        r#"{"name":"等级"}"#,
    ),
    ("delete", "/tag-groups/{group_id}", ['D', 'D', 'D', 'A'], ""),
    (
        "patch",
        "/tags/{tag_id}",
        ['D', 'D', 'D', 'A'],
        r#"{"name":"重要"}"#,
    ),
    ("delete", "/tags/{tag_id}", ['D', 'D', 'D', 'A'], ""),
    ("get", "/personal-tags", ['A', 'A', 'A', 'A'], ""),
    (
        "post",
        "/personal-tags",
        ['A', 'A', 'D', 'A'],
        r#"{"name":"老客户"}"#,
    ),
    ("delete", "/personal-tags/{id}", ['D', 'D', 'D', 'A'], ""),
    ("get", "/auto-tag-rules", ['D', 'D', 'A', 'A'], ""),
    (
        "post",
        "/auto-tag-rules",
        ['D', 'D', 'D', 'A'],
        r#"{"name":"展会","trigger":"channel","patterns":["expo*"],"personal_tag_ids":[1]}"#,
    ),
    ("delete", "/auto-tag-rules/{id}", ['D', 'D', 'D', 'A'], ""),
    ("get", "/transfers/departures", ['D', 'D', 'A', 'A'], ""),
    (
        "post",
        "/transfers/departures/refresh",
        ['D', 'D', 'D', 'A'],
        "{}",
    ),
    (
        "post",
        "/transfers",
        ['D', 'D', 'D', 'A'],
        r#"{"handover_user_id":"lisi","takeover_user_ids":["wangwu"]}"#,
    ),
    ("get", "/transfers", ['D', 'D', 'A', 'A'], ""),
    ("get", "/transfers/{id}", ['D', 'D', 'A', 'A'], ""),
    ("get", "/transfers/{id}/items", ['D', 'D', 'A', 'A'], ""),
    ("post", "/transfers/{id}/run", ['D', 'D', 'D', 'A'], ""),
    ("post", "/transfers/{id}/retry", ['D', 'D', 'D', 'A'], "{}"),
    ("post", "/transfers/{id}/cancel", ['D', 'D', 'D', 'A'], ""),
    ("get", "/jobs", ['D', 'D', 'A', 'A'], ""),
    ("get", "/jobs/{id}", ['D', 'D', 'A', 'A'], ""),
    ("get", "/quick-replies", ['A', 'A', 'A', 'A'], ""),
    (
        "post",
        "/quick-replies/folders",
        ['D', 'D', 'D', 'A'],
        r#"{"name":"开场白"}"#,
    ),
    (
        "patch",
        "/quick-replies/folders/{id}",
        ['D', 'D', 'D', 'A'],
        r#"{"name":"问候"}"#,
    ),
    (
        "delete",
        "/quick-replies/folders/{id}",
        ['D', 'D', 'D', 'A'],
        "",
    ),
    (
        "post",
        "/quick-replies/snippets",
        ['D', 'D', 'D', 'A'],
        r#"{"folder_id":1,"title":"报价","body":"您好，报价单已发您"}"#,
    ),
    (
        "patch",
        "/quick-replies/snippets/{id}",
        ['D', 'D', 'D', 'A'],
        r#"{"title":"再问候"}"#,
    ),
    (
        "delete",
        "/quick-replies/snippets/{id}",
        ['D', 'D', 'D', 'A'],
        "",
    ),
    // Any salesperson of the corp counts a send (the library is corp-wide); compliance sends
    // nothing; the admin key acts for no staff member (422, still allowed).
    (
        "post",
        "/quick-replies/snippets/{id}/uses",
        ['A', 'A', 'D', 'A'],
        "",
    ),
];

const CALLERS: [&str; 4] = [
    "sales of the customer",
    "sales of another",
    "compliance",
    "admin",
];

/// Row counts (and open reminders) of everything a write could touch.
async fn fingerprint(db: &Db) -> BTreeMap<&'static str, i64> {
    let mut out = BTreeMap::new();
    for (name, sql) in [
        ("outbox", "SELECT COUNT(*) FROM outbox"),
        ("audit_log", "SELECT COUNT(*) FROM audit_log"),
        ("note", "SELECT COUNT(*) FROM note"),
        ("note_revision", "SELECT COUNT(*) FROM note_revision"),
        (
            "open reminders",
            "SELECT COUNT(*) FROM reminder WHERE state = 'open'",
        ),
        ("reminder", "SELECT COUNT(*) FROM reminder"),
        ("customer_stage", "SELECT COUNT(*) FROM customer_stage"),
        (
            "customer_personal_tag",
            "SELECT COUNT(*) FROM customer_personal_tag",
        ),
        (
            "personal_tag",
            "SELECT COUNT(*) FROM personal_tag WHERE deleted_at_ms IS NULL",
        ),
        ("auto_tag_rule", "SELECT COUNT(*) FROM auto_tag_rule"),
        ("corp_setting", "SELECT COUNT(*) FROM corp_setting"),
        ("transfer_job", "SELECT COUNT(*) FROM transfer_job"),
        ("job", "SELECT COUNT(*) FROM job"),
        ("archive_read", "SELECT COUNT(*) FROM archive_read"),
        (
            "quick_reply_folder",
            "SELECT COUNT(*) FROM quick_reply_folder",
        ),
        ("quick_reply", "SELECT COUNT(*) FROM quick_reply"),
        ("rule_library", "SELECT COUNT(*) FROM rule_library"),
        ("rule_recipient", "SELECT COUNT(*) FROM rule_recipient"),
        (
            "quick_reply uses",
            "SELECT CAST(COALESCE(SUM(use_count), 0) AS BIGINT) FROM quick_reply",
        ),
    ] {
        let n: i64 = scrm::on_db!(db, |pool| sqlx::query_scalar(sql).fetch_one(pool).await)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        out.insert(name, n);
    }
    out
}

both_backends!(every_endpoint_refuses_who_may_not_and_a_refused_write_changes_nothing);

async fn every_endpoint_refuses_who_may_not_and_a_refused_write_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let db = &app.db;
    let now = now_ms();
    for (ext, user) in [("wmOwn", "lisi"), ("wmOther", "wangwu")] {
        common::seed_relation(db, ext, "客户", user, "").await;
    }
    let note = scrm::domain::followup::create_note(
        db,
        &crate::common::corp(CORP),
        &crate::common::ext("wmOwn"),
        "lisi",
        "首次沟通",
        None,
        now,
    )
    .await
    .unwrap();
    let reminder = scrm::domain::followup::create_reminder(
        db,
        &scrm::domain::followup::NewReminder {
            corp_id: &crate::common::corp(CORP),
            external_user_id: &crate::common::ext("wmOwn"),
            assignee: &crate::common::user("lisi"),
            title: "回访",
            due_at_ms: now + 3_600_000,
            created_by: "lisi",
        },
        now,
    )
    .await
    .unwrap();
    // Folder 1 with snippet 1, so that refused changes and uses would have something to change.
    let folder = scrm::domain::quick_replies::create_folder(
        db,
        &crate::common::corp(CORP),
        "常用",
        None,
        "admin",
        now,
    )
    .await
    .unwrap();
    scrm::domain::quick_replies::create_snippet(
        db,
        &crate::common::corp(CORP),
        &scrm::domain::quick_replies::NewSnippet {
            folder_id: folder.id,
            title: "问候",
            body: "您好！",
            position: None,
        },
        "admin",
        now,
    )
    .await
    .unwrap();
    let key = |role: Role, staff: Option<&'static str>| {
        let db = db.clone();
        async move {
            let staff = staff.map(crate::common::user);
            scrm::auth::create_key(
                &db,
                &crate::common::corp(CORP),
                role,
                staff.as_ref(),
                "matrix",
                now_ms(),
            )
            .await
            .unwrap()
        }
    };
    let keys = [
        key(Role::Sales, Some("lisi")).await.1,
        key(Role::Sales, Some("wangwu")).await.1,
        key(Role::Compliance, None).await.1,
        key(Role::Admin, None).await.1,
    ];
    let (revoked_id, revoked) = key(Role::Admin, None).await;
    assert!(
        scrm::auth::revoke_key(db, revoked_id, now_ms())
            .await
            .unwrap()
    );

    // Every registered endpoint has a row, and every row an endpoint.
    let registered: Vec<(String, &str)> = scrm::http::api::endpoints()
        .iter()
        .map(scrm::http::api::Endpoint::key)
        .collect();
    for (method, path) in &registered {
        assert!(
            MATRIX.iter().any(|(m, p, _, _)| m == method && p == path),
            "{} {path}: add it to the role matrix",
            method.to_uppercase()
        );
    }
    assert_eq!(registered.len(), MATRIX.len(), "a row without an endpoint");

    let concrete = |path: &str| {
        path.replace("{external_user_id}", "wmOwn")
            .replace("{user_id}", "lisi")
            .replace("{group_id}", "grp1")
            .replace("{tag_id}", "et1")
            .replace("/notes/{id}", &format!("/notes/{}", note.id))
            .replace("/reminders/{id}", &format!("/reminders/{}", reminder.id))
            .replace("{id}", "1")
    };
    let due = (now_ms() + 86_400_000).to_string();
    let call = |method: &str, path: &str, body: &str, key: Option<&str>| {
        let (client, base) = (app.client.clone(), app.base_url.clone());
        let url = format!("{base}/api/v1{}", concrete(path));
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let key = key.map(str::to_owned);
        let body = body.replace("DUE", &due);
        async move {
            let mut request = client.request(method, url);
            if let Some(key) = key {
                request = request.bearer_auth(key);
            }
            if !body.is_empty() {
                request = request
                    .header("content-type", "application/json")
                    .body(body);
            }
            request.send().await.unwrap().status().as_u16()
        }
    };

    // Everything refused first: nothing may change.
    let before = fingerprint(db).await;
    let mut wrong = Vec::new();
    for (method, path, expected, body) in MATRIX {
        for (who, key) in [("no key", None), ("revoked key", Some(revoked.as_str()))] {
            let status = call(method, path, body, key).await;
            if status != 401 {
                wrong.push(format!("{method} {path} by {who}: {status}, expected 401"));
            }
        }
        for (i, grant) in expected.iter().enumerate() {
            if *grant == 'D' {
                let status = call(method, path, body, Some(&keys[i])).await;
                if status != 403 {
                    wrong.push(format!(
                        "{method} {path} by {}: {status}, expected 403",
                        CALLERS[i]
                    ));
                }
            }
        }
    }
    // A role the endpoint does not allow is refused before the request is read: a malformed body
    // gets 403, not 422 (the router checks the endpoint's action, the handler never runs).
    for (method, path, expected, body) in MATRIX {
        if body.is_empty() || expected[2] != 'D' {
            continue;
        }
        let status = call(method, path, "{\"broken", Some(&keys[2])).await;
        if status != 403 {
            wrong.push(format!(
                "{method} {path} by compliance with a malformed body: {status}, expected 403"
            ));
        }
    }
    assert_eq!(
        fingerprint(db).await,
        before,
        "a refused request changed something"
    );
    // Then what is allowed is not refused (it may still be invalid or not found).
    for (method, path, expected, body) in MATRIX {
        for (i, grant) in expected.iter().enumerate() {
            if *grant == 'A' {
                let status = call(method, path, body, Some(&keys[i])).await;
                if matches!(status, 401 | 403) {
                    wrong.push(format!(
                        "{method} {path} by {}: {status}, expected it allowed",
                        CALLERS[i]
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    app.stop().await;
}
