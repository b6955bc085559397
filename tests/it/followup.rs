//! Follow-up notes, reminders and lifecycle stages through `/api/v1` against the emulated WeCom:
//! notes keep their history and every follower sees them, reminders reach the assignee once as
//! an app message through the outbox (also with two runs at once), snoozes fire again, default
//! reminders are created once, stage changes are recorded with the actor; authorization and
//! validation change nothing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly"
)]

use crate::common::{Backend, CORP};
use crate::emulated::{Api, EmulatedApp, Options, eventually, wait_outbox_idle};
use chrono::{DateTime, FixedOffset};
use scrm::domain::customers as contacts;
use scrm::domain::followup;
use scrm::platform::config::ReminderSettings;
use scrm::platform::db::{Db, now_ms};
use serde_json::{Value, json};
use wecom_sdk::testkit::{NewCustomer, SeedSpec};

both_backends!(
    notes_keep_their_history_and_every_follower_sees_them,
    credentials_and_scope_are_enforced_and_change_nothing,
    bad_input_gets_a_field_and_a_reason_and_changes_nothing,
    a_due_reminder_reaches_the_assignee_once_and_again_after_a_snooze,
    the_serve_loop_sends_due_reminders,
    default_reminders_are_created_once,
    stage_changes_are_recorded_with_the_actor,
);

const DAY_MS: i64 = 86_400_000;

/// Three staff members; the first follows 王总, known to our tables through the add callback.
struct Fixture {
    app: EmulatedApp,
    staff: Vec<String>,
    ext: String,
}

async fn fixture_with(backend: Backend, reminder_check_secs: u64) -> Fixture {
    let options = Options {
        extra_config: format!("[reminders]\ncheck_interval_secs = {reminder_check_secs}\n"),
        ..Options::default()
    };
    let app = EmulatedApp::spawn_with(backend, options).await;
    let seeded = app.wecom().seed(
        CORP,
        &SeedSpec {
            staff: 3,
            departments: 1,
            customers: 0,
            group_chats: 0,
            rng_seed: 23,
            ..SeedSpec::default()
        },
    );
    let ext = app.wecom().add_customer(
        CORP,
        &seeded.staff[0],
        NewCustomer {
            name: "王总".to_owned(),
            ..NewCustomer::default()
        },
    );
    app.settle().await;
    let relation = contacts::get_relation(
        &app.db,
        crate::common::Rel::in_corp(CORP, &seeded.staff[0], &ext).key(),
    )
    .await
    .unwrap()
    .expect("the add callback created the relation");
    assert_eq!(relation.status, "active");
    Fixture {
        app,
        staff: seeded.staff,
        ext,
    }
}

/// The reminder loop of `serve` stays out of the way (its one tick at start finds nothing).
async fn fixture(backend: Backend) -> Fixture {
    fixture_with(backend, 3600).await
}

/// A second staff member starts following the same customer.
async fn add_follower(f: &Fixture, user: &str) {
    assert!(f.app.wecom().add_follow(CORP, user, &f.ext, None));
    f.app.settle().await;
    let relation = contacts::get_relation(
        &f.app.db,
        crate::common::Rel::in_corp(CORP, user, &f.ext).key(),
    )
    .await
    .unwrap()
    .expect("relation");
    assert_eq!(relation.status, "active");
}

async fn count(db: &Db, table: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) FROM {table}");
    scrm::on_db!(db, |pool| sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(pool)
        .await)
    .unwrap()
}

async fn audit_actions(db: &Db, action: &str) -> Vec<String> {
    scrm::on_db!(db, |pool| sqlx::query_scalar(
        "SELECT actor FROM audit_log WHERE action = $1 ORDER BY id"
    )
    .bind(action)
    .fetch_all(pool)
    .await)
    .unwrap()
}

/// Rows of every table this area writes, to show that a refused request wrote nothing.
async fn footprint(db: &Db) -> Vec<i64> {
    let mut counts = Vec::new();
    for table in [
        "note",
        "note_revision",
        "reminder",
        "corp_setting",
        "customer_stage",
        "stage_change",
        "audit_log",
        "outbox",
    ] {
        counts.push(count(db, table).await);
    }
    counts
}

fn notes_path(ext: &str) -> String {
    format!("/api/v1/customers/{ext}/notes")
}

/// The reminder app messages WeCom delivered: (touser, content).
fn reminder_messages(f: &Fixture) -> Vec<(String, String)> {
    f.app
        .wecom()
        .sent_messages()
        .into_iter()
        .filter_map(|m| {
            let content = m["text"]["content"].as_str()?.to_owned();
            content
                .starts_with("跟进提醒：")
                .then(|| (m["touser"].as_str().unwrap_or("").to_owned(), content))
        })
        .collect()
}

fn china_time(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .unwrap()
        .with_timezone(&FixedOffset::east_opt(8 * 3600).unwrap())
        .format("%Y-%m-%d %H:%M")
        .to_string()
}

async fn notes_keep_their_history_and_every_follower_sees_them(backend: Backend) {
    let f = fixture(backend).await;
    let (first, second) = (&f.staff[0], &f.staff[1]);
    let sales = f.app.api("sales", Some(first)).await;

    let (status, note) = sales
        .post(
            &notes_path(&f.ext),
            json!({"body": "第一次沟通：对套餐 A 有兴趣", "attachment_url": "https://files.example.com/quote.pdf"}),
        )
        .await;
    assert_eq!(status, 201, "{note}");
    assert_eq!(note["author"], json!(first));
    assert_eq!(note["revision"], json!(1));
    assert_eq!(note["external_user_id"], json!(f.ext));
    let id = note["id"].as_i64().unwrap();
    let (status, later) = sales
        .post(&notes_path(&f.ext), json!({"body": "约了下周二见面"}))
        .await;
    assert_eq!(status, 201, "{later}");
    assert_eq!(later["attachment_url"], Value::Null);

    // Newest first, paged.
    let (status, list) = sales.get(&notes_path(&f.ext)).await;
    assert_eq!(status, 200, "{list}");
    let bodies: Vec<&str> = list["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["约了下周二见面", "第一次沟通：对套餐 A 有兴趣"]);
    let (_, page) = sales.get(&format!("{}?limit=1", notes_path(&f.ext))).await;
    assert_eq!(page["notes"].as_array().unwrap().len(), 1);
    let next = page["next_before_id"].as_i64().unwrap();
    let (_, rest) = sales
        .get(&format!("{}?limit=1&before_id={next}", notes_path(&f.ext)))
        .await;
    assert_eq!(rest["notes"][0]["id"], json!(id));

    // Edits keep the replaced content.
    let (status, edited) = sales
        .patch(
            &format!("/api/v1/notes/{id}"),
            json!({"body": "第一次沟通：对套餐 B 更有兴趣"}),
        )
        .await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(edited["revision"], json!(2));
    assert_eq!(edited["last_edited_by"], json!(first));
    assert_eq!(
        edited["attachment_url"],
        json!("https://files.example.com/quote.pdf")
    );
    let (status, edited) = sales
        .patch(
            &format!("/api/v1/notes/{id}"),
            json!({"attachment_url": null}),
        )
        .await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(
        (edited["revision"].clone(), edited["attachment_url"].clone()),
        (json!(3), Value::Null)
    );
    // An edit that changes nothing records nothing.
    let (status, same) = sales
        .patch(
            &format!("/api/v1/notes/{id}"),
            json!({"body": "第一次沟通：对套餐 B 更有兴趣"}),
        )
        .await;
    assert_eq!((status, same["revision"].clone()), (200, json!(3)));
    let (status, history) = sales.get(&format!("/api/v1/notes/{id}/revisions")).await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(
        history["note"]["body"],
        json!("第一次沟通：对套餐 B 更有兴趣")
    );
    let revisions = history["revisions"].as_array().unwrap();
    assert_eq!(revisions.len(), 2, "{history}");
    assert_eq!(revisions[0]["revision"], json!(2));
    assert_eq!(revisions[0]["body"], json!("第一次沟通：对套餐 B 更有兴趣"));
    assert_eq!(
        revisions[0]["attachment_url"],
        json!("https://files.example.com/quote.pdf")
    );
    assert_eq!(revisions[1]["revision"], json!(1));
    assert_eq!(revisions[1]["body"], json!("第一次沟通：对套餐 A 有兴趣"));
    assert_eq!(revisions[1]["edited_by"], json!(first));

    // A colleague who starts following the customer sees every note, may not edit another's…
    add_follower(&f, second).await;
    let colleague = f.app.api("sales", Some(second)).await;
    let (status, seen) = colleague.get(&notes_path(&f.ext)).await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["notes"].as_array().unwrap().len(), 2);
    assert_eq!(seen["notes"][1]["author"], json!(first));
    let (status, _) = colleague
        .patch(&format!("/api/v1/notes/{id}"), json!({"body": "改别人的"}))
        .await;
    assert_eq!(status, 403);
    // …an admin may.
    let admin = f.app.api("admin", None).await;
    let (status, fixed) = admin
        .patch(
            &format!("/api/v1/notes/{id}"),
            json!({"body": "管理员更正"}),
        )
        .await;
    assert_eq!((status, fixed["revision"].clone()), (200, json!(4)));

    // The first owner lets go of the customer: the notes stay with the customer, for its owner.
    assert!(f.app.wecom().staff_deletes_customer(CORP, first, &f.ext));
    f.app.settle().await;
    assert_eq!(sales.get(&notes_path(&f.ext)).await.0, 403);
    let (status, seen) = colleague.get(&notes_path(&f.ext)).await;
    assert_eq!(status, 200);
    let ids: Vec<i64> = seen["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_i64().unwrap())
        .collect();
    assert!(ids.contains(&id), "{seen}");
    assert_eq!(
        colleague
            .get(&format!("/api/v1/notes/{id}/revisions"))
            .await
            .0,
        200
    );
    let (status, _) = colleague
        .post(&notes_path(&f.ext), json!({"body": "接手后第一次联系"}))
        .await;
    assert_eq!(status, 201);

    assert_eq!(
        audit_actions(&f.app.db, "note.create").await,
        vec![first.clone(), first.clone(), second.clone()]
    );
    assert_eq!(audit_actions(&f.app.db, "note.edit").await.len(), 3);
    assert_eq!(count(&f.app.db, "note_revision").await, 3);
    f.app.stop().await;
}

async fn credentials_and_scope_are_enforced_and_change_nothing(backend: Backend) {
    let f = fixture(backend).await;
    let (owner, colleague, stranger_id) = (&f.staff[0], &f.staff[1], &f.staff[2]);
    let sales = f.app.api("sales", Some(owner)).await;
    let (status, note) = sales
        .post(&notes_path(&f.ext), json!({"body": "已有的记录"}))
        .await;
    assert_eq!(status, 201);
    let note_id = note["id"].as_i64().unwrap();
    let due = now_ms() + DAY_MS;
    let (status, reminder) = sales
        .post(
            &format!("/api/v1/customers/{}/reminders", f.ext),
            json!({"title": "回访", "due_at_ms": due}),
        )
        .await;
    assert_eq!(status, 201, "{reminder}");
    let reminder_id = reminder["id"].as_i64().unwrap();
    let before = footprint(&f.app.db).await;

    // No credentials: 401 everywhere.
    let nobody = Api::new(&f.app.server.base_url, "");
    assert_eq!(nobody.get(&notes_path(&f.ext)).await.0, 401);
    assert_eq!(
        nobody
            .post(&notes_path(&f.ext), json!({"body": "x"}))
            .await
            .0,
        401
    );
    assert_eq!(nobody.get("/api/v1/stages").await.0, 401);
    assert_eq!(nobody.get("/api/v1/reminders").await.0, 401);

    // A salesperson who does not follow the customer reaches none of it.
    let stranger = f.app.api("sales", Some(stranger_id)).await;
    let ext = &f.ext;
    let refused = [
        stranger.get(&notes_path(ext)).await,
        stranger
            .post(&notes_path(ext), json!({"body": "不该写入"}))
            .await,
        stranger
            .patch(&format!("/api/v1/notes/{note_id}"), json!({"body": "改"}))
            .await,
        stranger
            .get(&format!("/api/v1/notes/{note_id}/revisions"))
            .await,
        stranger
            .get(&format!("/api/v1/customers/{ext}/reminders"))
            .await,
        stranger
            .post(
                &format!("/api/v1/customers/{ext}/reminders"),
                json!({"title": "x", "due_at_ms": due}),
            )
            .await,
        stranger
            .post(&format!("/api/v1/reminders/{reminder_id}/done"), json!({}))
            .await,
        stranger
            .post(
                &format!("/api/v1/reminders/{reminder_id}/snooze"),
                json!({"until_ms": due + DAY_MS}),
            )
            .await,
        stranger
            .post(
                &format!("/api/v1/reminders/{reminder_id}/cancel"),
                json!({}),
            )
            .await,
        stranger
            .get(&format!("/api/v1/customers/{ext}/stage"))
            .await,
        stranger
            .put(
                &format!("/api/v1/customers/{ext}/stage"),
                json!({"stage": "意向"}),
            )
            .await,
        stranger
            .put("/api/v1/stages", json!({"stages": ["甲", "乙"]}))
            .await,
        stranger
            .get(&format!("/api/v1/reminders?assignee={owner}"))
            .await,
    ];
    for (i, (status, body)) in refused.iter().enumerate() {
        assert_eq!(*status, 403, "request {i}: {body}");
        assert_eq!(body["code"], json!("forbidden"), "request {i}");
    }
    // Their own reminder list is theirs only, and empty.
    let (status, own) = stranger.get("/api/v1/reminders").await;
    assert_eq!((status, own["reminders"].clone()), (200, json!([])));

    // The owner may not remind a colleague, nor change the corp's stages.
    add_follower(&f, colleague).await;
    let before = {
        // The follower's add may create default reminders (the lead's event hook); recount.
        let mut b = before;
        b[2] = count(&f.app.db, "reminder").await;
        b
    };
    let (status, body) = sales
        .post(
            &format!("/api/v1/customers/{ext}/reminders"),
            json!({"assignee": colleague, "title": "x", "due_at_ms": due}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        sales
            .put("/api/v1/stages", json!({"stages": ["甲"]}))
            .await
            .0,
        403
    );
    // A colleague following the customer may not close someone else's reminder.
    let other = f.app.api("sales", Some(colleague)).await;
    assert_eq!(
        other
            .post(&format!("/api/v1/reminders/{reminder_id}/done"), json!({}))
            .await
            .0,
        403
    );
    // Compliance reads, writes nothing.
    let compliance = f.app.api("compliance", None).await;
    assert_eq!(compliance.get(&notes_path(ext)).await.0, 200);
    assert_eq!(
        compliance
            .get(&format!("/api/v1/notes/{note_id}/revisions"))
            .await
            .0,
        200
    );
    assert_eq!(
        compliance
            .post(&notes_path(ext), json!({"body": "合规不写"}))
            .await
            .0,
        403
    );
    assert_eq!(
        compliance
            .put(
                &format!("/api/v1/customers/{ext}/stage"),
                json!({"stage": "意向"})
            )
            .await
            .0,
        403
    );
    // Another corp's key does not see this corp's notes and reminders at all.
    let (_, key) = scrm::auth::create_key(
        &f.app.db,
        &crate::common::corp("wwOTHERCORP"),
        scrm::auth::Role::Admin,
        None,
        "t",
        0,
    )
    .await
    .unwrap();
    let foreign = Api::new(&f.app.server.base_url, &key);
    let (status, body) = foreign
        .patch(
            &format!("/api/v1/notes/{note_id}"),
            json!({"body": "跨企业"}),
        )
        .await;
    assert_eq!((status, body["code"].clone()), (404, json!("not_found")));
    assert_eq!(
        foreign
            .get(&format!("/api/v1/notes/{note_id}/revisions"))
            .await
            .0,
        404
    );
    assert_eq!(
        foreign
            .post(&format!("/api/v1/reminders/{reminder_id}/done"), json!({}))
            .await
            .0,
        404
    );
    let (status, list) = foreign.get("/api/v1/reminders").await;
    assert_eq!((status, list["reminders"].clone()), (200, json!([])));

    assert_eq!(footprint(&f.app.db).await, before, "refusals wrote nothing");
    let current = followup::get_reminder(&f.app.db, CORP, reminder_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((current.state.as_str(), current.due_at_ms), ("open", due));

    // Every endpoint of this area is documented.
    let document: Value = reqwest::get(format!("{}/api/openapi.json", f.app.server.base_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (path, method) in [
        ("/api/v1/customers/{external_user_id}/notes", "get"),
        ("/api/v1/customers/{external_user_id}/notes", "post"),
        ("/api/v1/notes/{id}", "patch"),
        ("/api/v1/notes/{id}/revisions", "get"),
        ("/api/v1/reminders", "get"),
        ("/api/v1/customers/{external_user_id}/reminders", "get"),
        ("/api/v1/customers/{external_user_id}/reminders", "post"),
        ("/api/v1/reminders/{id}/done", "post"),
        ("/api/v1/reminders/{id}/snooze", "post"),
        ("/api/v1/reminders/{id}/cancel", "post"),
        ("/api/v1/stages", "get"),
        ("/api/v1/stages", "put"),
        ("/api/v1/customers/{external_user_id}/stage", "get"),
        ("/api/v1/customers/{external_user_id}/stage", "put"),
    ] {
        let op = &document["paths"][path][method];
        assert_eq!(op["tags"], json!(["followup"]), "{method} {path}");
        assert!(op["summary"].as_str().is_some_and(|s| !s.is_empty()));
    }
    f.app.stop().await;
}

async fn bad_input_gets_a_field_and_a_reason_and_changes_nothing(backend: Backend) {
    let f = fixture(backend).await;
    let user = &f.staff[0];
    let sales = f.app.api("sales", Some(user)).await;
    let admin = f.app.api("admin", None).await;
    let ext = &f.ext;
    let (status, note) = sales.post(&notes_path(ext), json!({"body": "原文"})).await;
    assert_eq!(status, 201);
    let note_path = format!("/api/v1/notes/{}", note["id"]);
    let reminders = format!("/api/v1/customers/{ext}/reminders");
    let (status, reminder) = sales
        .post(
            &reminders,
            json!({"title": "回访", "due_at_ms": now_ms() + DAY_MS}),
        )
        .await;
    assert_eq!(status, 201);
    let snooze = format!("/api/v1/reminders/{}/snooze", reminder["id"]);
    let before = footprint(&f.app.db).await;

    let too_long = "字".repeat(5001);
    let cases: Vec<(&Api, reqwest::Method, String, Option<Value>, &str)> = vec![
        (
            &sales,
            reqwest::Method::POST,
            notes_path(ext),
            Some(json!({"body": ""})),
            "body",
        ),
        (
            &sales,
            reqwest::Method::POST,
            notes_path(ext),
            Some(json!({"body": "  \n "})),
            "body",
        ),
        (
            &sales,
            reqwest::Method::POST,
            notes_path(ext),
            Some(json!({"body": too_long})),
            "body",
        ),
        (
            &sales,
            reqwest::Method::POST,
            notes_path(ext),
            Some(json!({})),
            "body",
        ),
        (&sales, reqwest::Method::POST, notes_path(ext), None, "body"),
        (
            &sales,
            reqwest::Method::POST,
            notes_path(ext),
            Some(json!({"body": 5})),
            "body",
        ),
        (
            &sales,
            reqwest::Method::POST,
            notes_path(ext),
            Some(json!({"body": "ok", "attachment_url": "ftp://files.example.com/a"})),
            "attachment_url",
        ),
        (
            &sales,
            reqwest::Method::POST,
            notes_path(ext),
            Some(json!({"body": "ok", "attachment_url": "javascript:alert(1)"})),
            "attachment_url",
        ),
        (
            &sales,
            reqwest::Method::POST,
            notes_path(ext),
            Some(
                json!({"body": "ok", "attachment_url": format!("https://e.com/{}", "a".repeat(2000))}),
            ),
            "attachment_url",
        ),
        (
            &sales,
            reqwest::Method::PATCH,
            note_path.clone(),
            Some(json!({})),
            "body",
        ),
        (
            &sales,
            reqwest::Method::PATCH,
            note_path.clone(),
            Some(json!({"body": ""})),
            "body",
        ),
        (
            &sales,
            reqwest::Method::PATCH,
            note_path.clone(),
            Some(json!({"attachment_url": "not a url"})),
            "attachment_url",
        ),
        (
            &sales,
            reqwest::Method::GET,
            format!("{}?before_id=abc", notes_path(ext)),
            None,
            "query",
        ),
        (
            &sales,
            reqwest::Method::GET,
            "/api/v1/notes/abc/revisions".to_owned(),
            None,
            "path",
        ),
        (
            &sales,
            reqwest::Method::POST,
            reminders.clone(),
            Some(json!({"title": " ", "due_at_ms": now_ms() + DAY_MS})),
            "title",
        ),
        (
            &sales,
            reqwest::Method::POST,
            reminders.clone(),
            Some(json!({"title": "长".repeat(201), "due_at_ms": now_ms() + DAY_MS})),
            "title",
        ),
        (
            &sales,
            reqwest::Method::POST,
            reminders.clone(),
            Some(json!({"title": "x", "due_at_ms": -5})),
            "due_at_ms",
        ),
        (
            &sales,
            reqwest::Method::POST,
            reminders.clone(),
            Some(json!({"title": "x"})),
            "body",
        ),
        // The assignee must follow the customer; an admin key acting as nobody must name one.
        (
            &admin,
            reqwest::Method::POST,
            reminders.clone(),
            Some(json!({"assignee": f.staff[2], "title": "x", "due_at_ms": now_ms() + DAY_MS})),
            "assignee",
        ),
        (
            &admin,
            reqwest::Method::POST,
            reminders.clone(),
            Some(json!({"title": "x", "due_at_ms": now_ms() + DAY_MS})),
            "assignee",
        ),
        (
            &sales,
            reqwest::Method::POST,
            snooze.clone(),
            Some(json!({"until_ms": now_ms() - 60_000})),
            "until_ms",
        ),
        (
            &sales,
            reqwest::Method::POST,
            snooze.clone(),
            Some(json!({})),
            "body",
        ),
        (
            &sales,
            reqwest::Method::GET,
            "/api/v1/reminders?state=lost".to_owned(),
            None,
            "state",
        ),
        (
            &admin,
            reqwest::Method::PUT,
            "/api/v1/stages".to_owned(),
            Some(json!({"stages": []})),
            "stages",
        ),
        (
            &admin,
            reqwest::Method::PUT,
            "/api/v1/stages".to_owned(),
            Some(json!({"stages": ["意向", "成交", "意向"]})),
            "stages[2]",
        ),
        (
            &admin,
            reqwest::Method::PUT,
            "/api/v1/stages".to_owned(),
            Some(json!({"stages": ["新客户", ""]})),
            "stages[1]",
        ),
        (
            &admin,
            reqwest::Method::PUT,
            "/api/v1/stages".to_owned(),
            Some(json!({"stages": ["一二三四五六七八九十一二三四五六七八九十多"]})),
            "stages[0]",
        ),
        (
            &admin,
            reqwest::Method::PUT,
            "/api/v1/stages".to_owned(),
            Some(json!({"stages": (0..21).map(|i| format!("阶段{i}")).collect::<Vec<_>>()})),
            "stages",
        ),
        (
            &sales,
            reqwest::Method::PUT,
            format!("/api/v1/customers/{ext}/stage"),
            Some(json!({"stage": "不存在的阶段"})),
            "stage",
        ),
    ];
    for (i, (api, method, path, body, field)) in cases.into_iter().enumerate() {
        let (status, answer) = api.call(method.clone(), &path, body).await;
        assert_eq!(status, 422, "case {i}: {method} {path}: {answer}");
        assert_eq!(answer["code"], json!("invalid"), "case {i}");
        assert_eq!(answer["field"], json!(field), "case {i}: {answer}");
        assert!(
            answer["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "case {i}: {answer}"
        );
    }
    // A customer nobody has heard of is 404 for an admin.
    let (status, body) = admin
        .post(
            &notes_path("wmNOSUCHCUSTOMER0000000000000000"),
            json!({"body": "x"}),
        )
        .await;
    assert_eq!((status, body["code"].clone()), (404, json!("not_found")));
    assert_eq!(admin.get("/api/v1/notes/999999/revisions").await.0, 404);

    assert_eq!(
        footprint(&f.app.db).await,
        before,
        "invalid input wrote nothing"
    );
    let (_, unchanged) = sales.get(&format!("{note_path}/revisions")).await;
    assert_eq!(unchanged["note"]["body"], json!("原文"));
    assert_eq!(unchanged["revisions"], json!([]));
    f.app.stop().await;
}

async fn a_due_reminder_reaches_the_assignee_once_and_again_after_a_snooze(backend: Backend) {
    let f = fixture(backend).await;
    let user = &f.staff[0];
    let sales = f.app.api("sales", Some(user)).await;
    let path = format!("/api/v1/customers/{}/reminders", f.ext);
    let start = now_ms();
    // On a minute, so that `due + i` shows the same time in every message.
    let due = (start / 60_000 + 2) * 60_000;
    let mut ids = Vec::new();
    for i in 0..5 {
        let (status, r) = sales
            .post(
                &path,
                json!({"title": format!("回访报价 {i}"), "due_at_ms": due + i}),
            )
            .await;
        assert_eq!(status, 201, "{r}");
        assert_eq!(r["assignee"], json!(user), "defaults to the caller");
        assert_eq!(r["state"], json!("open"));
        assert_eq!(r["customer_name"], json!("王总"));
        ids.push(r["id"].as_i64().unwrap());
    }
    // Nothing is due yet.
    assert_eq!(
        followup::run_due_reminders_once(&f.app.db, start)
            .await
            .unwrap(),
        0
    );

    // Two runs at once (as two instances would): each reminder is handed over exactly once.
    let other = f.app.test_db.connect().await;
    let at = due + 60_000;
    let (a, b) = tokio::join!(
        followup::run_due_reminders_once(&f.app.db, at),
        followup::run_due_reminders_once(&other, at)
    );
    assert_eq!(a.unwrap() + b.unwrap(), 5);
    assert_eq!(
        followup::run_due_reminders_once(&f.app.db, at)
            .await
            .unwrap(),
        0
    );
    wait_outbox_idle(&f.app.db).await;
    let sent = reminder_messages(&f);
    assert_eq!(sent.len(), 5, "{sent:?}");
    for (i, (to, content)) in sent.iter().enumerate() {
        assert_eq!(to, user);
        assert!(content.contains("王总"), "{content}");
        assert!(content.contains(&china_time(due)), "{content}");
        assert!(content.len() <= 2048);
        assert!(
            sent.iter().filter(|(_, c)| c == content).count() == 1,
            "message {i} sent twice"
        );
    }
    for i in 0..5 {
        assert!(
            sent.iter()
                .any(|(_, c)| c.starts_with(&format!("跟进提醒：回访报价 {i}（"))),
            "{sent:?}"
        );
    }
    let (_, listed) = sales.get("/api/v1/reminders").await;
    let first = listed["reminders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == json!(ids[0]))
        .unwrap()
        .clone();
    assert!(
        first["notified_at_ms"].is_i64() && first["outbox_id"].is_i64(),
        "{first}"
    );
    // Filters: due before, state.
    let (_, early) = sales
        .get(&format!("/api/v1/reminders?due_before_ms={}", due + 2))
        .await;
    let early: Vec<i64> = early["reminders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(early, ids[..2].to_vec());

    // Snoozed: it fires once more, at the new time, and only then.
    let until = now_ms() + 3_600_000;
    let (status, snoozed) = sales
        .post(
            &format!("/api/v1/reminders/{}/snooze", ids[0]),
            json!({"until_ms": until}),
        )
        .await;
    assert_eq!(status, 200, "{snoozed}");
    assert_eq!(snoozed["snoozes"], json!(1));
    assert_eq!(snoozed["due_at_ms"], json!(until));
    assert_eq!(snoozed["notified_at_ms"], Value::Null);
    assert_eq!(
        followup::run_due_reminders_once(&f.app.db, at)
            .await
            .unwrap(),
        0
    );
    let (a, b) = tokio::join!(
        followup::run_due_reminders_once(&f.app.db, until + 1),
        followup::run_due_reminders_once(&other, until + 1)
    );
    assert_eq!(a.unwrap() + b.unwrap(), 1);
    wait_outbox_idle(&f.app.db).await;
    let sent = reminder_messages(&f);
    assert_eq!(sent.len(), 6, "{sent:?}");
    assert!(
        sent[5].1.starts_with("跟进提醒：回访报价 0（") && sent[5].1.contains(&china_time(until)),
        "{sent:?}"
    );

    // Done ends it; a done reminder is neither snoozed nor cancelled, and done again is a no-op.
    let done_path = format!("/api/v1/reminders/{}/done", ids[0]);
    let (status, done) = sales.post(&done_path, json!({})).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(
        (done["state"].clone(), done["done_by"].clone()),
        (json!("done"), json!(user))
    );
    assert_eq!(sales.post(&done_path, json!({})).await.0, 200);
    let (status, body) = sales
        .post(
            &format!("/api/v1/reminders/{}/snooze", ids[0]),
            json!({"until_ms": now_ms() + DAY_MS}),
        )
        .await;
    assert_eq!((status, body["code"].clone()), (409, json!("conflict")));
    assert_eq!(
        sales
            .post(&format!("/api/v1/reminders/{}/cancel", ids[0]), json!({}))
            .await
            .0,
        409
    );
    let (status, cancelled) = sales
        .post(&format!("/api/v1/reminders/{}/cancel", ids[1]), json!({}))
        .await;
    assert_eq!(
        (status, cancelled["state"].clone()),
        (200, json!("cancelled"))
    );
    // Open ones only by default; all with state=all.
    let (_, open) = sales.get(&path).await;
    let open_ids: Vec<i64> = open["reminders"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["source"] == json!("manual"))
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(open_ids, ids[2..].to_vec());
    let (_, all) = sales.get(&format!("{path}?state=all")).await;
    assert!(all["reminders"].as_array().unwrap().len() >= 5);

    let outbox = scrm::pipeline::outbox::list(
        &f.app.db,
        &scrm::pipeline::outbox::OutboxFilter {
            kind: Some("message_send".to_owned()),
            limit: 100,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(outbox.len(), 6, "one outbox item per firing");
    assert!(outbox.iter().all(|o| o.state == "done"), "{outbox:?}");
    assert_eq!(
        audit_actions(&f.app.db, "reminder.snooze").await,
        vec![user.clone()]
    );
    other.close().await;
    f.app.stop().await;
}

async fn the_serve_loop_sends_due_reminders(backend: Backend) {
    let f = fixture_with(backend, 1).await;
    let user = &f.staff[0];
    let sales = f.app.api("sales", Some(user)).await;
    let (status, r) = sales
        .post(
            &format!("/api/v1/customers/{}/reminders", f.ext),
            json!({"title": "今天要回电话", "due_at_ms": now_ms() - 1000}),
        )
        .await;
    assert_eq!(status, 201, "{r}");
    let id = r["id"].as_i64().unwrap();
    eventually("the loop hands the reminder to the outbox", || async {
        followup::get_reminder(&f.app.db, CORP, id)
            .await
            .unwrap()
            .is_some_and(|r| r.outbox_id.is_some())
    })
    .await;
    wait_outbox_idle(&f.app.db).await;
    let sent = reminder_messages(&f);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, *user);
    assert!(
        sent[0]
            .1
            .starts_with("跟进提醒：今天要回电话（客户：王总，到期 ")
    );
    f.app.stop().await;
}

async fn default_reminders_are_created_once(backend: Backend) {
    let f = fixture(backend).await;
    let user = &f.staff[0];
    let settings = ReminderSettings {
        after_add_days: vec![3, 7],
        ..ReminderSettings::default()
    };
    // A fixed add time of our own, apart from any the event hook may have used.
    let added = now_ms() - 3_600_000;
    let db = &f.app.db;
    let (corp, staff, customer) = (
        crate::common::corp(CORP),
        crate::common::user(user),
        crate::common::ext(&f.ext),
    );
    let n = followup::create_default_reminders(db, &corp, &staff, &customer, added, &settings)
        .await
        .unwrap();
    assert_eq!(n, 2);
    // Replays (also two at once) create nothing more.
    let other = f.app.test_db.connect().await;
    let (a, b) = tokio::join!(
        followup::create_default_reminders(db, &corp, &staff, &customer, added, &settings),
        followup::create_default_reminders(&other, &corp, &staff, &customer, added, &settings)
    );
    assert_eq!((a.unwrap(), b.unwrap()), (0, 0));
    let none = ReminderSettings {
        after_add_days: Vec::new(),
        ..ReminderSettings::default()
    };
    assert_eq!(
        followup::create_default_reminders(db, &corp, &staff, &customer, added + 1, &none)
            .await
            .unwrap(),
        0
    );

    let sales = f.app.api("sales", Some(user)).await;
    let (status, list) = sales
        .get(&format!("/api/v1/customers/{}/reminders", f.ext))
        .await;
    assert_eq!(status, 200, "{list}");
    let ours: Vec<&Value> = list["reminders"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["source"] == json!("after_add")
                && [added + 3 * DAY_MS, added + 7 * DAY_MS]
                    .contains(&r["due_at_ms"].as_i64().unwrap())
        })
        .collect();
    assert_eq!(ours.len(), 2, "{list}");
    assert_eq!(ours[0]["title"], json!("添加客户 3 天回访"));
    assert_eq!(ours[1]["title"], json!("添加客户 7 天回访"));
    assert!(
        ours.iter()
            .all(|r| r["assignee"] == json!(user) && r["created_by"] == json!("system"))
    );
    // They fire like any other, once.
    let fired = followup::run_due_reminders_once(db, added + 3 * DAY_MS)
        .await
        .unwrap();
    assert!(fired >= 1);
    wait_outbox_idle(db).await;
    assert!(
        reminder_messages(&f)
            .iter()
            .any(|(to, c)| to == user && c.starts_with("跟进提醒：添加客户 3 天回访（客户：王总")),
        "{:?}",
        reminder_messages(&f)
    );
    other.close().await;
    f.app.stop().await;
}

async fn stage_changes_are_recorded_with_the_actor(backend: Backend) {
    let f = fixture(backend).await;
    let user = &f.staff[0];
    let sales = f.app.api("sales", Some(user)).await;
    let stage_path = format!("/api/v1/customers/{}/stage", f.ext);

    let (status, stages) = sales.get("/api/v1/stages").await;
    assert_eq!(status, 200);
    assert_eq!(
        stages["stages"],
        json!(["新客户", "意向", "成交", "复购", "流失"])
    );
    let (status, record) = sales.get(&stage_path).await;
    assert_eq!(status, 200, "{record}");
    assert_eq!(
        (record["stage"].clone(), record["history"].clone()),
        (Value::Null, json!([]))
    );
    assert_eq!(
        followup::customer_stage(
            &f.app.db,
            &crate::common::corp(CORP),
            &crate::common::ext(&f.ext)
        )
        .await
        .unwrap(),
        None
    );

    let (status, record) = sales.put(&stage_path, json!({"stage": "意向"})).await;
    assert_eq!(status, 200, "{record}");
    assert_eq!(record["stage"], json!("意向"));
    assert_eq!(record["updated_by"], json!(user));
    // The same stage again records nothing.
    let (status, again) = sales.put(&stage_path, json!({"stage": "意向"})).await;
    assert_eq!(status, 200);
    assert_eq!(again["history"].as_array().unwrap().len(), 1, "{again}");
    let admin = f.app.api("admin", None).await;
    let (status, record) = admin.put(&stage_path, json!({"stage": "成交"})).await;
    assert_eq!(status, 200, "{record}");
    let history = record["history"].as_array().unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(
        (
            history[0]["from_stage"].clone(),
            history[0]["to_stage"].clone(),
            history[0]["actor"].clone()
        ),
        (Value::Null, json!("意向"), json!(user))
    );
    assert_eq!(history[1]["from_stage"], json!("意向"));
    assert_eq!(history[1]["to_stage"], json!("成交"));
    let admin_actor = history[1]["actor"].as_str().unwrap();
    assert!(admin_actor.starts_with("apikey:"), "{admin_actor}");
    assert_eq!(
        followup::customer_stage(
            &f.app.db,
            &crate::common::corp(CORP),
            &crate::common::ext(&f.ext)
        )
        .await
        .unwrap(),
        Some("成交".to_owned())
    );

    // The corp's own list: old stages stay on customers, new changes must use the list.
    let (status, set) = admin
        .put(
            "/api/v1/stages",
            json!({"stages": [" 潜在 ", "意向", "签约"]}),
        )
        .await;
    assert_eq!(status, 200, "{set}");
    assert_eq!(set["stages"], json!(["潜在", "意向", "签约"]));
    assert_eq!(sales.get("/api/v1/stages").await.1["stages"], set["stages"]);
    assert_eq!(sales.get(&stage_path).await.1["stage"], json!("成交"));
    let (status, body) = sales.put(&stage_path, json!({"stage": "复购"})).await;
    assert_eq!((status, body["field"].clone()), (422, json!("stage")));
    // Concurrent changes by two people: every change is recorded and the history chains.
    let other = f.app.api("sales", Some(user)).await;
    let (a, b) = tokio::join!(
        sales.put(&stage_path, json!({"stage": "签约"})),
        other.put(&stage_path, json!({"stage": "潜在"}))
    );
    assert_eq!((a.0, b.0), (200, 200));
    let (_, record) = sales.get(&stage_path).await;
    let history = record["history"].as_array().unwrap();
    assert_eq!(history.len(), 4, "{record}");
    for pair in history.windows(2) {
        assert_eq!(pair[1]["from_stage"], pair[0]["to_stage"], "{record}");
    }
    assert_eq!(record["stage"], history[3]["to_stage"]);

    assert_eq!(audit_actions(&f.app.db, "customer.stage").await.len(), 4);
    assert_eq!(
        audit_actions(&f.app.db, "stages.set").await,
        vec![admin_actor.to_owned()]
    );
    f.app.stop().await;
}
