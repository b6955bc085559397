//! Reassignment (离职继承 / 在职继承) end to end against the emulated WeCom: a departure is noticed
//! and suggested to the admins, a plan spreads a member's customers and group chats over takers,
//! the job sends them in calls of at most 100 within WeCom's limits, and every item reaches a
//! final state — through refusals, takers at their limit, the daily group budget, faults, a crash,
//! bad input and retries — with tags, notes and reminders carried over.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly"
)]

use crate::common;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::common::{Backend, CORP};
use crate::emulated::{Api, EmulatedApp, Options, eventually, quick_emulator, wait_outbox_idle};
use scrm::domain::transfers::{self, ItemFilter, Progress};
use scrm::platform::config::{Config, TransferSettings};
use scrm::platform::wecom::Wecom;
use serde_json::{Value, json};
use wecom_sdk::MemoryCoordinator;
use wecom_sdk::testkit::{
    EmulatorConfig, EmulatorState, Fault, FaultKind, NewCustomer, NewStaff, TransferMode,
};

const HANDOVER: &str = "zhangsan";
const TAKER_A: &str = "lisi";
const TAKER_B: &str = "wangwu";
const SPARE: &str = "zhaoliu";
const ADMIN: &str = "admin01";
const NOTE: &str = "客户喜欢晚上沟通";

both_backends!(
    a_departed_members_customers_and_chats_all_reach_a_final_state,
    faults_halfway_through_lose_nothing_and_send_nobody_twice,
    an_employed_member_sent_to_the_resigned_api_switches_to_on_job,
    bad_input_gets_clear_errors_and_the_same_plan_twice_moves_nobody_twice,
    failed_items_are_retried_to_another_taker,
    a_customer_moved_twice_in_90_days_is_flagged_and_not_sent,
);
both_backends!(a_server_killed_mid_job_resumes_without_sending_twice);
both_backends!(in_the_console_an_admin_reassigns_a_departed_members_customers);

struct Fixture {
    app: EmulatedApp,
    wecom: Wecom,
    admin: Api,
}

fn staff(state: &EmulatorState, userid: &str, name: &str) {
    assert!(state.add_staff(
        CORP,
        NewStaff {
            userid: userid.to_owned(),
            name: name.to_owned(),
            department: Vec::new(),
        },
    ));
}

/// The handover member and takers; `customers` customers of the handover member (every tenth
/// tagged VIP), `chats` group chats they own. Made before the server listens, so no callback is
/// delivered: the server learns it all from a full sync, as a corp that adopts us would.
fn corp(state: &EmulatorState, customers: usize, chats: usize) {
    for (id, name) in [
        (HANDOVER, "张三"),
        (TAKER_A, "李四"),
        (TAKER_B, "王五"),
        (SPARE, "赵六"),
        (ADMIN, "管理员"),
    ] {
        staff(state, id, name);
    }
    let vip = state.create_tag(CORP, "客户等级", "VIP");
    let mut first = Vec::new();
    for i in 0..customers {
        let ext = state.add_customer(
            CORP,
            HANDOVER,
            NewCustomer {
                name: format!("客户{i}"),
                external_userid: Some(format!("wmTransferTest{i:06}")),
                tag_ids: if i % 10 == 0 {
                    vec![vip.clone()]
                } else {
                    Vec::new()
                },
                ..NewCustomer::default()
            },
        );
        if first.len() < 3 {
            first.push(ext);
        }
    }
    for i in 0..chats {
        let member = format!("wmTransferTest{:06}", i % customers.max(1));
        state.create_group_chat(CORP, HANDOVER, vec![member, TAKER_A.to_owned()]);
    }
}

fn big_corp(state: &EmulatorState) {
    corp(state, 2_350, 420);
    // Ten customers refuse; wangwu can take 1,160 more customers at most.
    for i in (1..2_350).step_by(235) {
        assert!(state.set_refuses_transfer(CORP, &format!("wmTransferTest{i:06}"), true));
    }
    state.set_customer_limit(CORP, TAKER_B, 1_160);
}

fn small_corp(state: &EmulatorState) {
    corp(state, 250, 5);
}

fn console_corp(state: &EmulatorState) {
    corp(state, 6, 2);
}

fn tiny_corp(state: &EmulatorState) {
    corp(state, 3, 0);
}

fn ext(i: usize) -> String {
    format!("wmTransferTest{i:06}")
}

impl Fixture {
    async fn spawn(backend: Backend, set_up: fn(&EmulatorState)) -> Self {
        let app = EmulatedApp::spawn_with(
            backend,
            Options {
                emulator: EmulatorConfig {
                    consistency_delay: Duration::ZERO,
                    ..quick_emulator()
                },
                extra_config: "[outbox]\nbackoff_max_secs = 1\nlease_secs = 5\n".to_owned(),
                corp_config: format!("admin_recipients = [\"{ADMIN}\"]"),
                before_server: Some(set_up),
                ..Options::default()
            },
        )
        .await;
        let config = Config::from_toml(&app.config_text, &HashMap::new()).expect("config");
        let wecom = Wecom::new(&config, Arc::new(MemoryCoordinator::new())).expect("client");
        scrm::app::sync::run(
            &app.db,
            &wecom,
            &crate::common::corp(CORP),
            "test",
            None,
            &|_| {},
        )
        .await
        .expect("initial sync");
        let admin = app.api("admin", None).await;
        Self { app, wecom, admin }
    }

    /// Every callback delivered and processed, every outbox call made (thousands of takeovers
    /// take longer than the harness's 20 s).
    async fn settle(&self) {
        self.app.emulator.flush_callbacks().await;
        within(180, "inbox drained", || async {
            scrm::pipeline::worker::stats(&self.app.db, None)
                .await
                .unwrap()
                .pending
                == 0
        })
        .await;
        wait_outbox_idle(&self.app.db).await;
    }

    async fn progress(&self, job: i64) -> Progress {
        Progress::of(&transfers::counts(&self.app.db, job).await.unwrap())
    }

    /// Waits until nothing of the job needs us now (every item waiting, scheduled or final).
    /// (A 45009 blocks the API for WeCom's minute: up to two minutes.)
    async fn until_handed_over(&self, job: i64) {
        within(120, "every item sent and answered", || async {
            self.progress(job).await.in_flight() == 0
        })
        .await;
        wait_outbox_idle(&self.app.db).await;
    }

    /// One engine round at the emulator's time (the server's own rounds run on real time).
    async fn advance_engine(&self) {
        scrm::app::transfers::engine::advance(
            &self.app.db,
            &self.wecom,
            &TransferSettings::default(),
            self.app.wecom().now_ms(),
        )
        .await
        .expect("engine round");
    }

    /// WeCom's clock passes the 24 h window (and midnight); the engine rounds until the job is
    /// done.
    async fn next_day(&self, job: i64) {
        self.app
            .wecom()
            .advance_clock(Duration::from_secs(25 * 3600));
        self.settle().await;
        for _ in 0..100 {
            self.advance_engine().await;
            self.settle().await;
            if transfers::job_by_id(&self.app.db, job).await.unwrap().state == "done" {
                return;
            }
        }
        panic!("job {job} not done: {:?}", self.progress(job).await);
    }

    async fn plan(&self, body: Value) -> (u16, Value) {
        self.admin.post("/api/v1/transfers", body).await
    }

    async fn run(&self, job: i64) -> (u16, Value) {
        self.admin
            .post(&format!("/api/v1/transfers/{job}/run"), json!({}))
            .await
    }

    async fn items(&self, job: i64, state: Option<&str>) -> Vec<transfers::TransferItem> {
        transfers::items(
            &self.app.db,
            job,
            &ItemFilter {
                state: state.map(str::to_owned),
                limit: Some(5000),
                ..ItemFilter::default()
            },
        )
        .await
        .unwrap()
    }

    /// How many transfer records WeCom holds per customer.
    fn records_per_customer(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for t in self.app.wecom().transfers(CORP) {
            *out.entry(t.external_userid).or_default() += 1;
        }
        out
    }

    async fn stop(self) {
        self.app.stop().await;
    }
}

/// Polls `check` until it returns true, `secs` at most.
async fn within<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn count(map: &BTreeMap<String, i64>, state: &str) -> i64 {
    map.get(state).copied().unwrap_or(0)
}

async fn a_departed_members_customers_and_chats_all_reach_a_final_state(backend: Backend) {
    let f = Fixture::spawn(backend, big_corp).await;
    let db = &f.app.db;
    let now = scrm::platform::db::now_ms();
    // What the salesperson wrote down, to be handed over with the customer.
    scrm::domain::followup::create_note(
        db,
        &crate::common::corp(CORP),
        &crate::common::ext(ext(0)),
        HANDOVER,
        NOTE,
        None,
        now,
    )
    .await
    .unwrap();
    let reminder = scrm::domain::followup::create_reminder(
        db,
        &scrm::domain::followup::NewReminder {
            corp_id: &crate::common::corp(CORP),
            external_user_id: &crate::common::ext(ext(0)),
            assignee: &crate::common::user(HANDOVER),
            title: "周五回访报价",
            due_at_ms: now + 86_400_000,
            created_by: HANDOVER,
        },
        now,
    )
    .await
    .unwrap();

    // Departure: noticed, listed, suggested to the admin.
    assert!(f.app.wecom().depart_staff(CORP, HANDOVER));
    f.settle().await;
    let (status, body) = f.admin.get("/api/v1/transfers/departures").await;
    assert_eq!(status, 200, "{body}");
    let d = &body["departures"][0];
    assert_eq!(d["user_id"], HANDOVER, "{body}");
    assert_eq!(
        (d["customers"].as_i64(), d["group_chats"].as_i64()),
        (Some(2_350), Some(420))
    );
    assert_eq!(d["unassigned_listed"], 2_350, "get_unassigned_list read");
    let suggested: Vec<Value> = f
        .app
        .wecom()
        .sent_messages()
        .into_iter()
        .filter(|m| m["touser"] == ADMIN)
        .collect();
    assert_eq!(suggested.len(), 1, "{suggested:?}");
    let text = suggested[0]["text"]["content"].as_str().unwrap();
    assert!(text.contains("2350 位客户、420 个客户群"), "{text}");

    // Plan: even split, preview of every item.
    let (status, planned) = f
        .plan(json!({
            "handover_user_id": HANDOVER,
            "takeover_user_ids": [TAKER_A, TAKER_B],
            "handover_note": NOTE,
        }))
        .await;
    assert_eq!(status, 201, "{planned}");
    assert_eq!(planned["customers"], 2_350);
    assert_eq!(planned["group_chats"], 420);
    assert_eq!(planned["job"]["mode"], "resigned");
    assert_eq!(planned["job"]["state"], "planned");
    assert_eq!(planned["per_taker"][TAKER_A], 1_175 + 210);
    assert_eq!(planned["per_taker"][TAKER_B], 1_175 + 210);
    let job = planned["job"]["id"].as_i64().unwrap();
    let (status, preview) = f
        .admin
        .get(&format!("/api/v1/transfers/{job}/items?limit=5000"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(preview["items"].as_array().unwrap().len(), 2_770);
    assert_eq!(
        f.app
            .wecom()
            .calls("externalcontact/resigned/transfer_customer"),
        0
    );

    // Run: the fewest calls the 100-per-call rule allows, 300 chats today.
    let (status, body) = f.run(job).await;
    assert_eq!(status, 200, "{body}");
    f.until_handed_over(job).await;
    assert_eq!(
        f.app
            .wecom()
            .calls("externalcontact/resigned/transfer_customer"),
        24,
        "12 calls of ≤ 100 per taker"
    );
    assert_eq!(f.app.wecom().calls("externalcontact/groupchat/transfer"), 4);
    let p = f.progress(job).await;
    assert_eq!(count(&p.group_chats, "done"), 300, "{p:?}");
    assert_eq!(count(&p.group_chats, "scheduled"), 120, "{p:?}");
    assert_eq!(count(&p.customers, "refused"), 10, "{p:?}");
    let b_refused = f
        .items(job, Some("refused"))
        .await
        .iter()
        .filter(|i| i.takeover_user_id == TAKER_B)
        .count();
    let at_limit = f.items(job, Some("failed")).await;
    assert_eq!(at_limit.len(), 15 - b_refused, "{p:?}");
    assert!(at_limit.iter().all(|i| i.errcode == Some(40099)
        && i.takeover_user_id == TAKER_B
        && i.reason.as_deref().unwrap_or("").contains("上限")));
    let waiting = 2_350 - 10 - at_limit.len();
    assert_eq!(
        count(&p.customers, "waiting"),
        i64::try_from(waiting).unwrap()
    );
    let scheduled = f.items(job, Some("scheduled")).await;
    assert!(
        scheduled
            .iter()
            .all(|i| i.not_before_ms > scrm::platform::db::now_ms())
    );

    // WeCom's window passes; the next day the rest of the chats go.
    f.next_day(job).await;
    let p = f.progress(job).await;
    assert_eq!(
        count(&p.customers, "done"),
        i64::try_from(waiting).unwrap(),
        "{p:?}"
    );
    assert_eq!(count(&p.group_chats, "done"), 420, "{p:?}");
    assert_eq!(p.in_flight() + count(&p.customers, "waiting"), 0, "{p:?}");
    assert_eq!(f.app.wecom().calls("externalcontact/groupchat/transfer"), 6);
    let records = f.records_per_customer();
    assert_eq!(
        records.len(),
        2_350 - at_limit.len(),
        "40099 starts no transfer"
    );
    assert!(
        records.values().all(|n| *n == 1),
        "nobody transferred twice"
    );

    // Carry-over: the taker has the customer's tags, the note, the handover note, the reminder.
    let item0 = f
        .items(job, Some("done"))
        .await
        .into_iter()
        .find(|i| i.target_id == ext(0))
        .expect("customer 0 taken over");
    let taker = item0.takeover_user_id.clone();
    let relation = f
        .app
        .wecom()
        .relation(CORP, taker.as_str(), &ext(0))
        .expect("moved in WeCom");
    assert_eq!(relation.tag_ids.len(), 1, "VIP kept");
    let ours = scrm::domain::customers::relations_of_customer(
        db,
        &crate::common::corp(CORP),
        &crate::common::ext(ext(0)),
    )
    .await
    .unwrap();
    let mine = ours
        .iter()
        .find(|r| r.user_id == taker)
        .expect("our relation");
    assert_eq!(mine.status, "active");
    assert!(mine.tag_ids.contains(&relation.tag_ids[0]), "{mine:?}");
    let old = ours.iter().find(|r| r.user_id == HANDOVER).unwrap();
    assert_eq!(old.status, "transferred");
    let notes = scrm::domain::followup::list_notes(
        db,
        &crate::common::corp(CORP),
        &crate::common::ext(ext(0)),
        None,
        50,
    )
    .await
    .unwrap();
    assert!(
        notes.iter().any(|n| n.body == NOTE),
        "the salesperson's note stays"
    );
    assert!(
        notes
            .iter()
            .any(|n| n.body.contains("【交接】") && n.body.contains(NOTE)),
        "{notes:?}"
    );
    let moved = scrm::domain::followup::get_reminder(db, CORP, reminder.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(taker, moved.assignee);
    // Each taker is told what they received.
    for t in [TAKER_A, TAKER_B] {
        let told = f
            .app
            .wecom()
            .sent_messages()
            .into_iter()
            .filter(|m| m["touser"] == t)
            .filter_map(|m| m["text"]["content"].as_str().map(str::to_owned))
            .find(|c| c.contains("【客户交接】"));
        let told = told.unwrap_or_else(|| panic!("{t} was not told"));
        assert!(
            told.contains("210 个客户群") && told.contains(NOTE),
            "{told}"
        );
    }
    // No deletion alert for any of it; the audit trail has the whole story.
    let alerts = scrm::domain::alerts::list(
        db,
        CORP,
        &scrm::domain::alerts::AlertFilter {
            limit: 500,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(alerts.is_empty(), "{alerts:?}");
    let (_, detail) = f.admin.get(&format!("/api/v1/transfers/{job}")).await;
    assert_eq!(detail["job"]["state"], "done");
    let actions: Vec<&str> = detail["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        ["transfer.plan", "transfer.run", "transfer.finish"]
    );
    // What is left for the admin: the refused and the ones over the limit.
    let (_, body) = f.admin.get("/api/v1/transfers/departures").await;
    assert_eq!(
        body["departures"][0]["customers"],
        i64::try_from(10 + at_limit.len()).unwrap(),
        "{body}"
    );
    assert_eq!(body["departures"][0]["group_chats"], 0, "{body}");
    // Planning what is left flags the taker WeCom said was full.
    let (status, again) = f
        .plan(json!({"handover_user_id": HANDOVER, "takeover_user_ids": [TAKER_B]}))
        .await;
    assert_eq!(status, 201, "{again}");
    let left = i64::try_from(10 + at_limit.len()).unwrap();
    assert_eq!(again["customers"], left, "{again}");
    assert_eq!(again["flagged"]["taker_at_limit"], left, "{again}");
    // The audit trail cannot be rewritten.
    let tampered = scrm::on_db!(db, |pool| sqlx::query(
        "UPDATE audit_log SET actor = 'someone'"
    )
    .execute(pool)
    .await
    .map(|_| ()));
    assert!(tampered.is_err(), "audit_log is append-only");
    let erased = scrm::on_db!(db, |pool| sqlx::query("DELETE FROM audit_log")
        .execute(pool)
        .await
        .map(|_| ()));
    assert!(erased.is_err(), "audit_log is append-only");
    f.stop().await;
}

async fn faults_halfway_through_lose_nothing_and_send_nobody_twice(backend: Backend) {
    let f = Fixture::spawn(backend, small_corp).await;
    assert!(f.app.wecom().depart_staff(CORP, HANDOVER));
    f.settle().await;
    let api = "externalcontact/resigned/transfer_customer";
    let state = f.app.wecom();
    // The first call is done by WeCom but its answer is lost; then busy, rate limited, a 502.
    for kind in [
        FaultKind::AnswerLost,
        FaultKind::Busy,
        FaultKind::Errcode(45009),
        FaultKind::Http(502),
    ] {
        state.inject_fault(Fault {
            api: Some(api.to_owned()),
            kind,
            times: 1,
        });
    }
    state.inject_fault(Fault {
        api: Some("externalcontact/groupchat/transfer".to_owned()),
        kind: FaultKind::AnswerLost,
        times: 1,
    });
    let (status, planned) = f
        .plan(json!({"handover_user_id": HANDOVER, "takeover_user_ids": [TAKER_A]}))
        .await;
    assert_eq!(status, 201, "{planned}");
    let job = planned["job"]["id"].as_i64().unwrap();
    assert_eq!(f.run(job).await.0, 200);
    f.until_handed_over(job).await;
    let p = f.progress(job).await;
    assert_eq!(count(&p.customers, "waiting"), 250, "{p:?}");
    assert_eq!(count(&p.group_chats, "done"), 5, "{p:?}");
    assert!(state.faults_fired() >= 5);
    let records = f.records_per_customer();
    assert_eq!(records.len(), 250);
    assert!(records.values().all(|n| *n == 1), "nobody sent twice");
    f.next_day(job).await;
    let p = f.progress(job).await;
    assert_eq!(count(&p.customers, "done"), 250, "{p:?}");
    f.stop().await;
}

async fn an_employed_member_sent_to_the_resigned_api_switches_to_on_job(backend: Backend) {
    let f = Fixture::spawn(backend, small_corp).await;
    let message = "您好，我的同事李四将继续为您服务。";
    let (status, planned) = f
        .plan(json!({
            "handover_user_id": HANDOVER,
            "takeover_user_ids": [TAKER_A],
            "mode": "resigned",
        }))
        .await;
    assert_eq!(status, 201, "{planned}");
    let job = planned["job"]["id"].as_i64().unwrap();
    assert_eq!(f.run(job).await.0, 200);
    f.until_handed_over(job).await;
    let j = transfers::job_by_id(&f.app.db, job).await.unwrap();
    assert_eq!(j.mode, "on_job");
    assert!(j.notice.contains("40097"), "{}", j.notice);
    assert_eq!(
        f.app
            .wecom()
            .calls("externalcontact/resigned/transfer_customer"),
        1
    );
    assert_eq!(f.app.wecom().calls("externalcontact/transfer_customer"), 3);
    let p = f.progress(job).await;
    assert_eq!(count(&p.customers, "waiting"), 250, "{p:?}");
    assert_eq!(count(&p.group_chats, "done"), 5, "{p:?}");
    assert_eq!(
        f.app
            .wecom()
            .calls("externalcontact/groupchat/onjob_transfer"),
        1
    );
    // The on-job message is only allowed on on-job plans, and reaches WeCom.
    let (status, body) = f
        .plan(json!({
            "handover_user_id": TAKER_A, "takeover_user_ids": [SPARE],
            "mode": "resigned", "transfer_success_msg": message,
        }))
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("transfer_success_msg"))
    );

    // The takeover: WeCom removes the old relation (DELETE_BY_TRANSFER), which is no deletion.
    f.next_day(job).await;
    let p = f.progress(job).await;
    assert_eq!(count(&p.customers, "done"), 250, "{p:?}");
    let alerts = scrm::domain::alerts::list(
        &f.app.db,
        CORP,
        &scrm::domain::alerts::AlertFilter {
            limit: 50,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(alerts.is_empty(), "{alerts:?}");
    let ours = scrm::domain::customers::relations_of_customer(
        &f.app.db,
        &crate::common::corp(CORP),
        &crate::common::ext(ext(7)),
    )
    .await
    .unwrap();
    let old = ours.iter().find(|r| r.user_id == HANDOVER).unwrap();
    assert_eq!(old.status, "transferred");
    assert!(
        f.app
            .wecom()
            .transfers(CORP)
            .iter()
            .all(|t| t.mode == TransferMode::OnJob)
    );

    // With a message, on-job from the start.
    let (status, planned) = f
        .plan(json!({
            "handover_user_id": TAKER_A, "takeover_user_ids": [SPARE],
            "customers": [ext(1), ext(2)], "transfer_success_msg": message,
        }))
        .await;
    assert_eq!(status, 201, "{planned}");
    assert_eq!(planned["job"]["mode"], "on_job");
    assert_eq!(
        planned["group_chats"], 0,
        "a list of customers moves no chat"
    );
    let job = planned["job"]["id"].as_i64().unwrap();
    assert_eq!(f.run(job).await.0, 200);
    f.until_handed_over(job).await;
    let sent = f
        .app
        .wecom()
        .writes_for("externalcontact/transfer_customer");
    let last = sent.last().unwrap();
    assert_eq!(
        last.body["transfer_success_msg"], message,
        "{:?}",
        last.body
    );
    f.stop().await;
}

async fn bad_input_gets_clear_errors_and_the_same_plan_twice_moves_nobody_twice(backend: Backend) {
    let f = Fixture::spawn(backend, tiny_corp).await;
    assert!(f.app.wecom().depart_staff(CORP, HANDOVER));
    assert!(f.app.wecom().depart_staff(CORP, SPARE));
    f.settle().await;
    let cases = [
        (
            json!({"handover_user_id": "nobody", "takeover_user_ids": [TAKER_A]}),
            "handover_user_id",
        ),
        (
            json!({"handover_user_id": HANDOVER, "takeover_user_ids": ["nobody"]}),
            "takeover_user_ids",
        ),
        (
            json!({"handover_user_id": HANDOVER, "takeover_user_ids": [SPARE]}),
            "takeover_user_ids",
        ),
        (
            json!({"handover_user_id": HANDOVER, "takeover_user_ids": []}),
            "takeover_user_ids",
        ),
        (
            json!({"handover_user_id": HANDOVER, "takeover_user_ids": [TAKER_A], "customers": ["wmSomeoneElse"]}),
            "customers",
        ),
        (
            json!({"handover_user_id": HANDOVER, "takeover_user_ids": [TAKER_A], "mode": "on_job",
                   "transfer_success_msg": "好".repeat(201)}),
            "transfer_success_msg",
        ),
        (
            json!({"handover_user_id": HANDOVER, "takeover_user_ids": [TAKER_A],
                   "rules": [{"tag_id": "t1", "takeover_user_id": TAKER_B}]}),
            "rules[0].takeover_user_id",
        ),
        (
            json!({"handover_user_id": HANDOVER, "takeover_user_ids": [TAKER_A], "surprise": 1}),
            "surprise",
        ),
    ];
    for (body, field) in cases {
        let (status, answer) = f.plan(body.clone()).await;
        assert_eq!(status, 422, "{body} → {answer}");
        assert!(
            answer["field"].as_str().unwrap_or("").contains(field)
                || answer["message"].as_str().unwrap_or("").contains(field),
            "{body} → {answer}"
        );
    }
    let compliance = f.app.api("compliance", None).await;
    let (status, _) = compliance
        .post(
            "/api/v1/transfers",
            json!({"handover_user_id": HANDOVER, "takeover_user_ids": [TAKER_A]}),
        )
        .await;
    assert_eq!(status, 403, "compliance reads, does not reassign");
    assert_eq!(compliance.get("/api/v1/transfers").await.0, 200);
    let sales = f.app.api("sales", Some(TAKER_A)).await;
    assert_eq!(sales.get("/api/v1/transfers/departures").await.0, 403);
    assert_eq!(f.admin.get("/api/v1/transfers/999999").await.0, 404);
    assert_eq!(f.run(999_999).await.0, 404);

    // Taker = handover is predicted and fails without a call.
    let (status, planned) = f
        .plan(json!({"handover_user_id": HANDOVER, "takeover_user_ids": [HANDOVER, TAKER_A]}))
        .await;
    assert_eq!(status, 201, "{planned}");
    assert!(
        planned["flagged"]["taker_is_handover"].as_i64().unwrap() >= 1,
        "{planned}"
    );
    let first = planned["job"]["id"].as_i64().unwrap();
    // A newer plan supersedes it; the cancelled one cannot run.
    let (status, planned) = f
        .plan(json!({"handover_user_id": HANDOVER, "takeover_user_ids": [TAKER_A]}))
        .await;
    assert_eq!(status, 201);
    assert_eq!(planned["superseded_jobs"], json!([first]));
    assert_eq!(f.run(first).await.0, 409);
    let job = planned["job"]["id"].as_i64().unwrap();
    let (status, _) = f
        .admin
        .post(&format!("/api/v1/transfers/{job}/retry"), json!({}))
        .await;
    assert_eq!(status, 409, "a planned job has nothing to retry");
    // Running it twice, and planning it again, moves nobody twice.
    assert_eq!(f.run(job).await.0, 200);
    assert_eq!(f.run(job).await.0, 200);
    f.until_handed_over(job).await;
    let (status, again) = f
        .plan(json!({"handover_user_id": HANDOVER, "takeover_user_ids": [TAKER_B]}))
        .await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(again["customers"], 0, "{again}");
    assert_eq!(again["already_in_transfer"], 3, "{again}");
    let again_id = again["job"]["id"].as_i64().unwrap();
    assert_eq!(f.run(again_id).await.0, 200);
    f.settle().await;
    assert_eq!(
        f.app
            .wecom()
            .calls("externalcontact/resigned/transfer_customer"),
        1
    );
    assert!(f.records_per_customer().values().all(|n| *n == 1));
    let (status, _) = f
        .admin
        .post(&format!("/api/v1/transfers/{job}/cancel"), json!({}))
        .await;
    assert_eq!(status, 409, "a started job cannot be cancelled");
    f.stop().await;
}

async fn failed_items_are_retried_to_another_taker(backend: Backend) {
    let f = Fixture::spawn(backend, small_corp).await;
    assert!(f.app.wecom().depart_staff(CORP, HANDOVER));
    f.settle().await;
    let (status, planned) = f
        .plan(json!({"handover_user_id": HANDOVER, "takeover_user_ids": [TAKER_A, TAKER_B]}))
        .await;
    assert_eq!(status, 201, "{planned}");
    let job = planned["job"]["id"].as_i64().unwrap();
    // wangwu leaves between the plan and the run: WeCom refuses every call to them.
    assert!(f.app.wecom().depart_staff(CORP, TAKER_B));
    f.settle().await;
    assert_eq!(f.run(job).await.0, 200);
    f.until_handed_over(job).await;
    let failed = f.items(job, Some("failed")).await;
    assert_eq!(failed.len(), 125 + 2, "wangwu's customers and chats");
    assert!(failed.iter().all(|i| i.takeover_user_id == TAKER_B));
    assert!(
        failed
            .iter()
            .all(|i| i.errcode == Some(40003) || i.errcode == Some(60111)),
        "{:?}",
        failed.first()
    );
    // Retry only the failed ones, to zhaoliu.
    let (status, body) = f
        .admin
        .post(
            &format!("/api/v1/transfers/{job}/retry"),
            json!({"takeover_user_id": SPARE}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["replanned"], 127);
    f.until_handed_over(job).await;
    let p = f.progress(job).await;
    assert_eq!(count(&p.customers, "waiting"), 250, "{p:?}");
    assert_eq!(count(&p.group_chats, "done"), 5, "{p:?}");
    assert_eq!(
        f.items(job, None)
            .await
            .iter()
            .filter(|i| i.takeover_user_id == SPARE)
            .count(),
        127
    );
    let (_, detail) = f.admin.get(&format!("/api/v1/transfers/{job}")).await;
    let actions: Vec<&str> = detail["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["action"].as_str())
        .collect();
    assert_eq!(actions, ["transfer.plan", "transfer.run", "transfer.retry"]);
    f.stop().await;
}

async fn a_customer_moved_twice_in_90_days_is_flagged_and_not_sent(backend: Backend) {
    let f = Fixture::spawn(backend, tiny_corp).await;
    let mut from = HANDOVER;
    let mut to = TAKER_A;
    for _ in 0..2 {
        let (status, planned) = f
            .plan(json!({"handover_user_id": from, "takeover_user_ids": [to]}))
            .await;
        assert_eq!(status, 201, "{planned}");
        assert_eq!(planned["job"]["mode"], "on_job");
        assert_eq!(planned["customers"], 3);
        let job = planned["job"]["id"].as_i64().unwrap();
        assert_eq!(f.run(job).await.0, 200);
        f.until_handed_over(job).await;
        f.next_day(job).await;
        std::mem::swap(&mut from, &mut to);
    }
    let calls = f.app.wecom().calls("externalcontact/transfer_customer");
    let (status, planned) = f
        .plan(json!({"handover_user_id": from, "takeover_user_ids": [to]}))
        .await;
    assert_eq!(status, 201, "{planned}");
    assert_eq!(planned["flagged"]["transferred_twice_90d"], 3, "{planned}");
    let job = planned["job"]["id"].as_i64().unwrap();
    assert_eq!(f.run(job).await.0, 200);
    f.until_handed_over(job).await;
    let failed = f.items(job, Some("failed")).await;
    assert_eq!(failed.len(), 3);
    assert!(failed.iter().all(|i| i.errcode == Some(40128)));
    assert_eq!(
        f.app.wecom().calls("externalcontact/transfer_customer"),
        calls,
        "not sent"
    );
    within(30, "the job done", || async {
        transfers::job_by_id(&f.app.db, job).await.unwrap().state == "done"
    })
    .await;
    f.stop().await;
}

async fn a_server_killed_mid_job_resumes_without_sending_twice(backend: Backend) {
    use std::process::Stdio;
    let f = Fixture::spawn(backend, small_corp).await;
    assert!(f.app.wecom().depart_staff(CORP, HANDOVER));
    f.settle().await;
    // Every call takes a while, so the kill lands between calls of the job.
    f.app.wecom().inject_fault(Fault {
        api: Some("externalcontact/resigned/transfer_customer".to_owned()),
        kind: FaultKind::Latency(Duration::from_millis(600)),
        times: 100,
    });
    let (status, planned) = f
        .plan(json!({"handover_user_id": HANDOVER, "takeover_user_ids": [TAKER_A]}))
        .await;
    assert_eq!(status, 201, "{planned}");
    let job = planned["job"]["id"].as_i64().unwrap();

    // A second server, the real binary, on the same database, runs it and is killed.
    let config_path = f.app.test_db.dir.path().join("scrm.toml");
    std::fs::write(&config_path, &f.app.config_text).unwrap();
    let start = |port: u16| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_scrm"))
            .arg("--config")
            .arg(&config_path)
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env("SCRM_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start scrm")
    };
    // Our in-process server stops first, so the binary is the only one working the job.
    let mut app = f.app;
    app.server.stop().await;
    let port = common::free_port();
    let mut child = start(port);
    assert!(common::wait_ready(port).await);
    let db = &app.db;
    scrm::domain::transfers::start(db, CORP, job, "test", scrm::platform::db::now_ms())
        .await
        .unwrap();
    eventually("a call made", || async {
        !app.wecom()
            .writes_for("externalcontact/resigned/transfer_customer")
            .is_empty()
    })
    .await;
    child.start_kill().expect("kill -9");
    let _ = child.wait().await;
    let before = app
        .wecom()
        .calls("externalcontact/resigned/transfer_customer");
    assert!(before < 3, "killed mid-job ({before} calls)");

    let port = common::free_port();
    let mut child = start(port);
    assert!(common::wait_ready(port).await);
    eventually("every item handed over after the restart", || async {
        Progress::of(&transfers::counts(db, job).await.unwrap()).in_flight() == 0
    })
    .await;
    child.start_kill().expect("stop");
    let _ = child.wait().await;
    let p = Progress::of(&transfers::counts(db, job).await.unwrap());
    assert_eq!(count(&p.customers, "waiting"), 250, "{p:?}");
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for t in app.wecom().transfers(CORP) {
        *per.entry(t.external_userid).or_default() += 1;
    }
    assert_eq!(per.len(), 250);
    assert!(per.values().all(|n| *n == 1), "nobody sent twice");
    app.db.close().await;
    app.test_db.drop_database().await;
}

both_backends!(
    the_command_line_plans_previews_runs_and_reports,
    plans_route_by_tag_and_stage_and_spread_by_workload,
    a_member_who_left_before_we_were_installed_is_found_with_customers_and_chats,
);

fn corp_with_an_old_departure(state: &EmulatorState) {
    corp(state, 250, 5);
    assert!(state.depart_staff(CORP, HANDOVER));
}

/// The sync reads only members with 客户联系; one who left before we were installed is known
/// from WeCom's unassigned list, and their customers and chats are reassigned like any other's.
async fn a_member_who_left_before_we_were_installed_is_found_with_customers_and_chats(
    backend: Backend,
) {
    let f = Fixture::spawn(backend, corp_with_an_old_departure).await;
    let (status, body) = f.admin.get("/api/v1/transfers/departures").await;
    assert_eq!(status, 200);
    assert_eq!(body["departures"], json!([]), "nothing known yet");
    let (status, body) = f
        .admin
        .post("/api/v1/transfers/departures/refresh", json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["listed"], 250);
    let (_, body) = f.admin.get("/api/v1/transfers/departures").await;
    let d = &body["departures"][0];
    assert_eq!(d["user_id"], HANDOVER, "{body}");
    assert_eq!(
        (d["customers"].as_i64(), d["group_chats"].as_i64()),
        (Some(250), Some(5))
    );
    let (status, planned) = f
        .plan(json!({"handover_user_id": HANDOVER, "takeover_user_ids": [TAKER_A]}))
        .await;
    assert_eq!(status, 201, "{planned}");
    assert_eq!(
        (
            planned["customers"].as_i64(),
            planned["group_chats"].as_i64()
        ),
        (Some(250), Some(5))
    );
    assert_eq!(planned["job"]["mode"], "resigned");
    let job = planned["job"]["id"].as_i64().unwrap();
    assert_eq!(f.run(job).await.0, 200);
    f.until_handed_over(job).await;
    let p = f.progress(job).await;
    assert_eq!(count(&p.customers, "waiting"), 250, "{p:?}");
    assert_eq!(count(&p.group_chats, "done"), 5, "{p:?}");
    f.stop().await;
}

/// Customers with the VIP tag go to lisi, customers in 成交 to zhaoliu, the rest by workload
/// (wangwu already follows 40 customers). Nothing is sent by planning.
async fn plans_route_by_tag_and_stage_and_spread_by_workload(backend: Backend) {
    let f = Fixture::spawn(backend, small_corp).await;
    let db = &f.app.db;
    let vip: String = scrm::on_db!(db, |pool| sqlx::query_scalar(
        "SELECT tag_id FROM tag WHERE corp_id = $1 AND name = 'VIP'"
    )
    .bind(CORP)
    .fetch_one(pool)
    .await)
    .unwrap();
    for i in [1, 2, 3] {
        scrm::domain::followup::set_customer_stage(
            db,
            &crate::common::corp(CORP),
            &crate::common::ext(ext(i)),
            "成交",
            "test",
            scrm::platform::db::now_ms(),
        )
        .await
        .unwrap();
    }
    for i in 0..40 {
        f.app.wecom().add_customer(
            CORP,
            TAKER_B,
            NewCustomer {
                name: format!("王五的客户{i}"),
                ..NewCustomer::default()
            },
        );
    }
    f.settle().await;
    let (status, planned) = f
        .plan(json!({
            "handover_user_id": HANDOVER,
            "takeover_user_ids": [TAKER_A, TAKER_B, SPARE],
            "strategy": "workload",
            "rules": [
                {"tag_id": vip, "takeover_user_id": TAKER_A},
                {"stage": "成交", "takeover_user_id": SPARE},
            ],
            "include_group_chats": false,
        }))
        .await;
    assert_eq!(status, 201, "{planned}");
    let job = planned["job"]["id"].as_i64().unwrap();
    assert_eq!(planned["job"]["strategy"], "workload");
    let items = f.items(job, None).await;
    let taker_of = |i: usize| {
        items
            .iter()
            .find(|it| it.target_id == ext(i))
            .map(|it| it.takeover_user_id.clone())
            .unwrap()
    };
    assert_eq!(taker_of(0), TAKER_A, "VIP (every tenth) to lisi");
    assert_eq!(taker_of(10), TAKER_A);
    assert_eq!(taker_of(2), SPARE, "成交 to zhaoliu");
    let per = |t: &str| items.iter().filter(|i| i.takeover_user_id == t).count();
    // The rest by workload: wangwu starts at 40 customers, so in the end each has about as many.
    let loads = [per(TAKER_A), per(TAKER_B) + 40, per(SPARE)];
    assert_eq!(loads.iter().sum::<usize>(), 290, "{loads:?}");
    assert!(
        loads.iter().max().unwrap() - loads.iter().min().unwrap() <= 1,
        "{loads:?}"
    );
    assert_eq!(
        f.app
            .wecom()
            .calls("externalcontact/resigned/transfer_customer"),
        0
    );
    assert_eq!(f.app.wecom().calls("externalcontact/transfer_customer"), 0);
    f.stop().await;
}

async fn the_command_line_plans_previews_runs_and_reports(backend: Backend) {
    let f = Fixture::spawn(backend, small_corp).await;
    assert!(f.app.wecom().depart_staff(CORP, HANDOVER));
    f.settle().await;
    // The command alone does the work: no server runs beside it.
    let mut app = f.app;
    app.server.stop().await;
    let dir = app.test_db.dir.path().to_path_buf();
    std::fs::write(dir.join("scrm.toml"), &app.config_text).unwrap();

    let out = common::scrm(&dir, &["reassign", "departures"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains(HANDOVER) && out.stdout.contains("250"),
        "{}",
        out.stdout
    );

    let out = common::scrm(&dir, &["reassign", "--from", "nobody", "--to", TAKER_A]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("nobody"), "{}", out.stderr);

    let out = common::scrm(
        &dir,
        &[
            "reassign",
            "--from",
            HANDOVER,
            "--to",
            "lisi,wangwu",
            "--dry-run",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("dry run"), "{}", out.stdout);
    assert_eq!(
        app.wecom()
            .calls("externalcontact/resigned/transfer_customer"),
        0
    );
    let job = transfers::list_jobs(&app.db, &crate::common::corp(CORP), Some(HANDOVER), 1)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(job.state, "planned");

    let id = job.id.to_string();
    let out = common::scrm(&dir, &["reassign", "--resume", &id]).await;
    assert_eq!(out.code, 0, "{out:?}");
    for expected in [TAKER_A, TAKER_B, "waiting", "scrm reassign status"] {
        assert!(out.stdout.contains(expected), "{expected}: {}", out.stdout);
    }
    assert_eq!(
        app.wecom()
            .calls("externalcontact/resigned/transfer_customer"),
        4,
        "125 customers per taker: 2 calls each"
    );

    let out = common::scrm(&dir, &["reassign", "status", &id, "--json"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let status: Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(status["progress"]["customers"]["waiting"], 250, "{status}");
    assert_eq!(status["progress"]["group_chats"]["done"], 5, "{status}");
    assert_eq!(
        status["job"]["started_by"]
            .as_str()
            .map(|s| s.starts_with("cli:")),
        Some(true)
    );
    app.db.close().await;
    app.test_db.drop_database().await;
}

/// The console's reassignment wizard in Chromium: the departed member is listed, the admin picks
/// two takers and writes a handover note, previews the plan, runs it and watches the progress
/// reach the end without reloading; the customers and chats are the takers' in WeCom.
async fn in_the_console_an_admin_reassigns_a_departed_members_customers(backend: Backend) {
    let f = Fixture::spawn(backend, console_corp).await;
    assert!(f.app.wecom().depart_staff(CORP, HANDOVER));
    f.settle().await;
    let corp = crate::common::corp(CORP);
    let password = "a long console password";
    scrm::auth::account::create(
        &f.app.db,
        &corp,
        "boss",
        password,
        scrm::auth::Role::Admin,
        "test",
        scrm::platform::db::now_ms(),
    )
    .await
    .unwrap();
    let base = f.app.server.base_url.clone();
    let shot = |view: &str| format!("console-{view}-{}", backend.name());
    let browser = crate::webdriver::Browser::start(1280, 800).await;
    browser.goto(&format!("{base}/console/transfers")).await;
    browser
        .wait_for("the sign-in page", "document.querySelector('main.login')")
        .await;
    browser.type_into("input[name='username']", "boss").await;
    browser.type_into("input[name='password']", password).await;
    browser.click("main.login button[type='submit']").await;
    browser
        .wait_for(
            "the departures",
            &format!("document.body.innerText.includes('待交接的离职成员') && document.body.innerText.includes('{HANDOVER}')"),
        )
        .await;
    browser.screenshot(&shot("transfers")).await;
    browser
        .click(&format!(
            "a[href='/console/transfers/new?handover={HANDOVER}']"
        ))
        .await;
    browser
        .wait_for("the wizard", "document.querySelector('form.wizard')")
        .await;
    browser
        .click(&format!("input[name='taker'][value='{TAKER_A}']"))
        .await;
    browser
        .click(&format!("input[name='taker'][value='{TAKER_B}']"))
        .await;
    browser
        .type_into("textarea[name='handover_note']", NOTE)
        .await;
    browser.screenshot(&shot("transfer-new")).await;
    browser.click("form.wizard button[type='submit']").await;
    browser
        .wait_for(
            "the preview",
            "document.querySelector('[data-job-state]') && document.querySelector('[data-job-state]').innerText === '待确认'",
        )
        .await;
    let rows = browser
        .eval("return document.querySelectorAll('table.list tbody tr').length;")
        .await;
    assert_eq!(rows, json!(8), "6 customers and 2 chats");
    let path = browser.eval("return location.pathname;").await;
    let job: i64 = path
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    browser.click("form[action$='/start'] button").await;
    browser
        .wait_for(
            "running",
            "document.querySelector('[data-job-state]').innerText === '执行中'",
        )
        .await;
    f.until_handed_over(job).await;
    // WeCom takes the customers over after 24 hours; the page follows without a reload.
    f.next_day(job).await;
    browser
        .wait_for(
            "the job done, seen by the page itself",
            "document.querySelector('[data-job-state]').innerText === '已完成'",
        )
        .await;
    browser.screenshot(&shot("transfer-done")).await;
    // The quick replies the salespeople send, as an admin keeps them.
    let folder = scrm::domain::quick_replies::create_folder(
        &f.app.db,
        &corp,
        "问候",
        None,
        "test",
        scrm::platform::db::now_ms(),
    )
    .await
    .unwrap();
    scrm::domain::quick_replies::create_snippet(
        &f.app.db,
        &corp,
        &scrm::domain::quick_replies::NewSnippet {
            folder_id: folder.id,
            title: "交接后的第一句",
            body: "您好，我是您的新顾问，之前的同事已把您的情况交接给我，有任何问题随时找我。",
            position: None,
        },
        "test",
        scrm::platform::db::now_ms(),
    )
    .await
    .unwrap();
    browser.goto(&format!("{base}/console/replies")).await;
    browser
        .wait_for(
            "the quick replies",
            "document.querySelector('.snippet-edit')",
        )
        .await;
    browser.screenshot(&shot("replies")).await;
    browser.goto(&format!("{base}/console/tags")).await;
    browser
        .wait_for("the tag library", "document.querySelector('.badge.tag')")
        .await;
    browser.screenshot(&shot("tags")).await;
    let progress = f.progress(job).await;
    assert_eq!(
        (progress.total(), progress.finished()),
        (8, 8),
        "{progress:?}"
    );
    assert_eq!(f.items(job, Some("done")).await.len(), 8);
    for i in 0..6 {
        let owners = f.app.wecom().followers(CORP, &ext(i));
        assert!(
            owners.iter().any(|o| o == TAKER_A || o == TAKER_B)
                && !owners.iter().any(|o| o == HANDOVER),
            "customer {i}: {owners:?}"
        );
    }
    browser.quit().await;
    f.stop().await;
}
