//! Inbox workers on both backends: leased claims shared by two instances, lease expiry and
//! take-over, retries, dead letters, panics, heartbeats, shutdown, replay, stats, `/metrics` and
//! the `replay` / `inbox stats` commands.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly"
)]

use crate::common;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{Backend, CORP, TestApp, TestDb, add_contact_event};
use scrm::pipeline::inbox::{self, ClaimedEvent, InboxWriter, NewInboxRow, ReplayFilter, Stored};
use scrm::pipeline::worker::{
    self, DrainReport, HandlerError, InboxHandler, WorkerPool, WorkerSettings,
};
use scrm::platform::db::{Db, now_ms};
use tokio::sync::{Notify, Semaphore, oneshot};

const OTHER_CORP: &str = "wwotherCorp000001";

// ---------------------------------------------------------------------------------------------
// Rows

fn row(n: u64, corp: &str, change_type: &str, received_at_ms: i64) -> NewInboxRow {
    let create_time = received_at_ms / 1000;
    let body = if change_type == "add_external_contact" {
        add_contact_event(n, create_time)
    } else {
        format!(
            "<xml><ToUserName><![CDATA[{corp}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
<CreateTime>{create_time}</CreateTime><MsgType><![CDATA[event]]></MsgType>\
<Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[{change_type}]]></ChangeType>\
<UserID><![CDATA[zhangsan]]></UserID><ExternalUserID><![CDATA[wmQ2pCAAAA{n:022}]]></ExternalUserID></xml>"
        )
    };
    NewInboxRow {
        corp_id: corp.to_owned(),
        app: "contacts".to_owned(),
        agent_id: None,
        dedup_key: format!("ev:test:{n:08}"),
        msg_type: "event".to_owned(),
        event: Some("change_external_contact".to_owned()),
        change_type: Some(change_type.to_owned()),
        create_time: Some(create_time),
        received_at_ms,
        body,
    }
}

/// Stores `rows` and returns their ids in insertion order.
async fn insert(db: &Db, rows: &[NewInboxRow]) -> Vec<i64> {
    let before: HashSet<i64> = all_ids(db).await.into_iter().collect();
    let refs: Vec<&NewInboxRow> = rows.iter().collect();
    let stored = inbox::insert_batch(db, &refs).await.unwrap();
    assert!(stored.iter().all(|s| *s == Stored::New));
    let ids: Vec<i64> = all_ids(db)
        .await
        .into_iter()
        .filter(|id| !before.contains(id))
        .collect();
    assert_eq!(ids.len(), rows.len());
    ids
}

async fn insert_n(db: &Db, count: u64) -> Vec<i64> {
    let now = now_ms();
    let rows: Vec<NewInboxRow> = (0..count)
        .map(|n| row(n, CORP, "add_external_contact", now))
        .collect();
    insert(db, &rows).await
}

async fn all_ids(db: &Db) -> Vec<i64> {
    let mut ids: Vec<i64> = inbox::list(db, None, 100_000)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    ids.sort_unstable();
    ids
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
struct RowState {
    state: String,
    attempts: i32,
    lease_owner: Option<String>,
    lease_until_ms: i64,
    last_error: Option<String>,
    processed_at_ms: Option<i64>,
    dead_at_ms: Option<i64>,
    replayed_at_ms: Option<i64>,
}

async fn row_state(db: &Db, id: i64) -> RowState {
    const SQL: &str = "SELECT state, attempts, lease_owner, lease_until_ms, last_error, \
        processed_at_ms, dead_at_ms, replayed_at_ms FROM inbox WHERE id = $1";
    scrm::on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(id)
        .fetch_one(pool)
        .await)
    .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// Decides each call's answer: `(event, nth call for this row, 1-based)`.
type Script = Box<dyn Fn(&ClaimedEvent, usize) -> Result<(), HandlerError> + Send + Sync>;

/// What every handler sharing it saw: the attempts numbers per row, and whether two calls ever
/// ran one row at the same time.
#[derive(Default)]
struct Log {
    calls: Mutex<HashMap<i64, Vec<i32>>>,
    running: Mutex<HashSet<i64>>,
    overlaps: AtomicU64,
}

impl Log {
    fn calls(&self, id: i64) -> Vec<i32> {
        self.calls
            .lock()
            .unwrap()
            .get(&id)
            .cloned()
            .unwrap_or_default()
    }

    fn total(&self) -> usize {
        self.calls.lock().unwrap().values().map(Vec::len).sum()
    }
}

struct Recorder {
    log: Arc<Log>,
    script: Script,
    delay: Duration,
    gate: Option<Arc<Semaphore>>,
    handled: AtomicU64,
}

impl Recorder {
    fn new(script: Script) -> Self {
        Self {
            log: Arc::new(Log::default()),
            script,
            delay: Duration::ZERO,
            gate: None,
            handled: AtomicU64::new(0),
        }
    }

    fn ok() -> Self {
        Self::new(Box::new(|_, _| Ok(())))
    }

    fn sharing(mut self, log: &Arc<Log>) -> Self {
        self.log = Arc::clone(log);
        self
    }

    fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Calls wait until the test adds a permit to `gate`.
    fn with_gate(mut self, gate: &Arc<Semaphore>) -> Self {
        self.gate = Some(Arc::clone(gate));
        self
    }

    fn calls(&self, id: i64) -> Vec<i32> {
        self.log.calls(id)
    }
}

#[async_trait::async_trait]
impl InboxHandler for Recorder {
    async fn handle(&self, event: &ClaimedEvent) -> Result<(), HandlerError> {
        if !self.log.running.lock().unwrap().insert(event.id) {
            self.log.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        let nth = {
            let mut calls = self.log.calls.lock().unwrap();
            let seen = calls.entry(event.id).or_default();
            seen.push(event.attempts);
            seen.len()
        };
        if let Some(gate) = &self.gate {
            let _permit = gate.acquire().await.unwrap();
        }
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.log.running.lock().unwrap().remove(&event.id);
        self.handled.fetch_add(1, Ordering::SeqCst);
        (self.script)(event, nth)
    }
}

/// Retries at once (no backoff), polls fast.
fn fast() -> WorkerSettings {
    WorkerSettings {
        concurrency: 4,
        lease: Duration::from_secs(30),
        max_attempts: 10,
        backoff_base: Duration::ZERO,
        backoff_max: Duration::ZERO,
        idle_poll: Duration::from_millis(20),
    }
}

/// Waits (up to 30 s) until `check` is true.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn done_count(db: &Db) -> i64 {
    worker::stats(db, None).await.unwrap().done
}

fn report(done: u64, retried: u64, dead: u64) -> DrainReport {
    DrainReport {
        done,
        retried,
        dead,
        lease_lost: 0,
    }
}

// ---------------------------------------------------------------------------------------------
// Claims and leases

/// Two instances (two connection pools) on one database share the rows: each row is handled
/// exactly once, never by both at the same time, and both do some of the work.
async fn two_pools_process_every_row_exactly_once(backend: Backend) {
    let test_db = TestDb::create(backend).await;
    let db_a = test_db.connect().await;
    let db_b = test_db.connect().await;
    let ids = insert_n(&db_a, 120).await;
    let log = Arc::new(Log::default());
    let a = Arc::new(
        Recorder::ok()
            .sharing(&log)
            .with_delay(Duration::from_millis(2)),
    );
    let b = Arc::new(
        Recorder::ok()
            .sharing(&log)
            .with_delay(Duration::from_millis(2)),
    );
    let pool_a = WorkerPool::spawn(
        db_a.clone(),
        a.clone(),
        fast(),
        "instance-a".to_owned(),
        Arc::new(Notify::new()),
        std::future::pending(),
    );
    let pool_b = WorkerPool::spawn(
        db_b.clone(),
        b.clone(),
        fast(),
        "instance-b".to_owned(),
        Arc::new(Notify::new()),
        std::future::pending(),
    );
    let db = &db_a;
    eventually(
        "every row done",
        || async move { done_count(db).await == 120 },
    )
    .await;
    pool_a.stop().await;
    pool_b.stop().await;

    for id in &ids {
        assert_eq!(log.calls(*id), vec![1], "row {id}");
        assert_eq!(row_state(&db_a, *id).await.state, "done");
    }
    assert_eq!(log.total(), 120);
    assert_eq!(log.overlaps.load(Ordering::SeqCst), 0);
    let (by_a, by_b) = (
        a.handled.load(Ordering::SeqCst),
        b.handled.load(Ordering::SeqCst),
    );
    assert_eq!(by_a + by_b, 120);
    assert!(by_a > 0 && by_b > 0, "a: {by_a}, b: {by_b}");
    let stats = worker::stats(&db_a, None).await.unwrap();
    assert_eq!((stats.pending, stats.done), (0, 120));
    db_a.close().await;
    db_b.close().await;
    test_db.drop_database().await;
}

/// A worker claimed a row and died: once its lease has run out anyone takes the row over and
/// finishes it once; a row under a live lease is left alone; the dead worker's late completion
/// changes nothing.
async fn expired_lease_is_reclaimed_and_finished_once(backend: Backend) {
    let test_db = TestDb::create(backend).await;
    let db = test_db.connect().await;
    let ids = insert_n(&db, 2).await;
    let (busy_id, died_id) = (ids[0], ids[1]);
    let now = now_ms();
    // Claimed now for a minute: live.
    let busy = inbox::claim(&db, "busy-worker#1", now, Duration::from_secs(60), 1)
        .await
        .unwrap();
    assert_eq!(busy.iter().map(|e| e.id).collect::<Vec<_>>(), vec![busy_id]);
    // Claimed two minutes ago with a 30 s lease: expired. The live one was not claimable then.
    let died = inbox::claim(
        &db,
        "killed-worker#1",
        now - 120_000,
        Duration::from_secs(30),
        5,
    )
    .await
    .unwrap();
    assert_eq!(died.iter().map(|e| e.id).collect::<Vec<_>>(), vec![died_id]);
    assert_eq!(died[0].attempts, 1);

    let recorder = Recorder::ok();
    let done = worker::drain(&db, &recorder, &fast()).await.unwrap();
    assert_eq!(done, report(1, 0, 0));
    assert_eq!(
        recorder.calls(died_id),
        vec![2],
        "the dead worker's attempt counts"
    );
    assert!(recorder.calls(busy_id).is_empty());
    let held = row_state(&db, busy_id).await;
    assert_eq!(
        (held.state.as_str(), held.lease_owner.as_deref()),
        ("pending", Some("busy-worker#1"))
    );

    // The "dead" worker comes back and tries to finish its row.
    assert!(
        !worker::mark_done(&db, died_id, "killed-worker#1", now_ms())
            .await
            .unwrap()
    );
    assert_eq!(
        worker::drain(&db, &recorder, &fast()).await.unwrap(),
        report(0, 0, 0)
    );
    assert_eq!(recorder.calls(died_id), vec![2], "finished once");
    assert_eq!(row_state(&db, died_id).await.state, "done");
    db.close().await;
    test_db.drop_database().await;
}

/// A worker whose lease was taken over cannot finish, retry, bury or renew the row.
async fn stolen_lease_cannot_complete(backend: Backend) {
    let test_db = TestDb::create(backend).await;
    let db = test_db.connect().await;
    let id = insert_n(&db, 1).await[0];
    let now = now_ms();
    let lease = Duration::from_secs(30);
    inbox::claim(&db, "slow#1", now - 60_000, lease, 1)
        .await
        .unwrap();
    let stolen = inbox::claim(&db, "fast#1", now, lease, 1).await.unwrap();
    assert_eq!(stolen.len(), 1);
    assert_eq!(stolen[0].attempts, 2);
    let before = row_state(&db, id).await;
    assert_eq!(before.lease_owner.as_deref(), Some("fast#1"));

    assert!(!worker::mark_done(&db, id, "slow#1", now).await.unwrap());
    assert!(
        !worker::schedule_retry(&db, id, "slow#1", now, "late")
            .await
            .unwrap()
    );
    assert!(
        !worker::mark_dead(&db, id, "slow#1", now, "late")
            .await
            .unwrap()
    );
    assert!(
        !worker::renew_lease(&db, id, "slow#1", now + 999_999)
            .await
            .unwrap()
    );
    assert_eq!(row_state(&db, id).await, before, "nothing changed");

    assert!(
        worker::renew_lease(&db, id, "fast#1", now + 90_000)
            .await
            .unwrap()
    );
    assert_eq!(row_state(&db, id).await.lease_until_ms, now + 90_000);
    assert!(worker::mark_done(&db, id, "fast#1", now).await.unwrap());
    assert!(
        !worker::mark_done(&db, id, "fast#1", now).await.unwrap(),
        "a row is finished once"
    );
    let after = row_state(&db, id).await;
    assert_eq!(after.state, "done");
    assert_eq!(after.processed_at_ms, Some(now));
    assert_eq!(after.lease_owner, None);
    db.close().await;
    test_db.drop_database().await;
}

// ---------------------------------------------------------------------------------------------
// Outcomes

/// Also: the outcomes are counted in `scrm_worker_events_total`.
async fn retry_twice_then_ok_is_done_with_three_attempts(backend: Backend) {
    let metrics = scrm::platform::telemetry::metrics_handle();
    let test_db = TestDb::create(backend).await;
    let db = test_db.connect().await;
    let id = insert_n(&db, 1).await[0];
    let recorder = Recorder::new(Box::new(|_, nth| {
        if nth <= 2 {
            Err(HandlerError::retry_after(
                "接口繁忙 errcode -1",
                Duration::ZERO,
            ))
        } else {
            Ok(())
        }
    }));
    let outcome = worker::drain(&db, &recorder, &fast()).await.unwrap();
    assert_eq!(outcome, report(1, 2, 0));
    assert_eq!(recorder.calls(id), vec![1, 2, 3]);
    let state = row_state(&db, id).await;
    assert_eq!((state.state.as_str(), state.attempts), ("done", 3));
    assert_eq!(state.last_error.as_deref(), Some("接口繁忙 errcode -1"));
    assert!(state.processed_at_ms.is_some());
    assert_eq!(state.lease_owner, None);
    let counters = metrics.render();
    for outcome in ["done", "retry"] {
        assert!(
            counters.contains(&format!(
                "scrm_worker_events_total{{outcome=\"{outcome}\"}}"
            )),
            "{counters}"
        );
    }
    db.close().await;
    test_db.drop_database().await;
}

async fn always_retry_becomes_a_dead_letter_after_max_attempts(backend: Backend) {
    let test_db = TestDb::create(backend).await;
    let db = test_db.connect().await;
    let id = insert_n(&db, 1).await[0];
    let recorder = Recorder::new(Box::new(|_, _| {
        Err(HandlerError::retry("errcode 45009: api freq out of limit"))
    }));
    let settings = WorkerSettings {
        max_attempts: 4,
        ..fast()
    };
    let outcome = worker::drain(&db, &recorder, &settings).await.unwrap();
    assert_eq!(outcome, report(0, 3, 1));
    assert_eq!(recorder.calls(id), vec![1, 2, 3, 4]);
    let state = row_state(&db, id).await;
    assert_eq!((state.state.as_str(), state.attempts), ("dead", 4));
    assert_eq!(
        state.last_error.as_deref(),
        Some("errcode 45009: api freq out of limit")
    );
    assert!(state.dead_at_ms.is_some());

    let letters = worker::dead_letters(&db, None, 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].id, id);
    assert_eq!(letters[0].attempts, 4);
    assert_eq!(
        letters[0].last_error.as_deref(),
        Some("errcode 45009: api freq out of limit")
    );
    assert!(
        worker::dead_letters(&db, Some(OTHER_CORP), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Dead letters are not claimed again.
    assert_eq!(
        worker::drain(&db, &recorder, &settings).await.unwrap(),
        report(0, 0, 0)
    );
    db.close().await;
    test_db.drop_database().await;
}

/// A rate limit on our side is not a failure: however often an event is held back, its attempts
/// are not used up, and it is done once the quota reopens.
async fn deferred_attempts_are_not_counted(backend: Backend) {
    let test_db = TestDb::create(backend).await;
    let db = test_db.connect().await;
    let id = insert_n(&db, 1).await[0];
    let recorder = Recorder::new(Box::new(|_, nth| {
        if nth <= 6 {
            Err(HandlerError::Defer {
                reason: "client-side rate limit reached".to_owned(),
                after: Duration::ZERO,
            })
        } else {
            Ok(())
        }
    }));
    let settings = WorkerSettings {
        max_attempts: 4,
        ..fast()
    };
    let outcome = worker::drain(&db, &recorder, &settings).await.unwrap();
    assert_eq!(outcome, report(1, 6, 0));
    assert_eq!(
        recorder.calls(id),
        vec![1; 7],
        "every claim was the first attempt"
    );
    let state = row_state(&db, id).await;
    assert_eq!((state.state.as_str(), state.attempts), ("done", 1));
    assert_eq!(
        state.last_error.as_deref(),
        Some("client-side rate limit reached")
    );
    db.close().await;
    test_db.drop_database().await;
}

async fn permanent_failure_is_dead_at_once(backend: Backend) {
    let test_db = TestDb::create(backend).await;
    let db = test_db.connect().await;
    let ids = insert_n(&db, 3).await;
    let bad = ids[1];
    let recorder = Recorder::new(Box::new(move |event, _| {
        if event.id == bad {
            Err(HandlerError::permanent("无法解析 ExternalUserID"))
        } else {
            Ok(())
        }
    }));
    let outcome = worker::drain(&db, &recorder, &fast()).await.unwrap();
    assert_eq!(outcome, report(2, 0, 1));
    assert_eq!(recorder.calls(bad), vec![1]);
    let state = row_state(&db, bad).await;
    assert_eq!((state.state.as_str(), state.attempts), ("dead", 1));
    assert_eq!(state.last_error.as_deref(), Some("无法解析 ExternalUserID"));
    assert_eq!(row_state(&db, ids[0]).await.state, "done");
    assert_eq!(row_state(&db, ids[2]).await.state, "done");
    db.close().await;
    test_db.drop_database().await;
}

/// `drain`: a panic is a retry with the panic's message, and the other rows go on.
async fn panicking_handler_is_retried(backend: Backend) {
    let test_db = TestDb::create(backend).await;
    let db = test_db.connect().await;
    let ids = insert_n(&db, 3).await;
    let recorder = Recorder::new(Box::new(|event, nth| {
        assert!(nth > 1, "handler bug on row {}", event.id);
        Ok(())
    }));
    let outcome = worker::drain(&db, &recorder, &fast()).await.unwrap();
    assert_eq!(outcome, report(3, 3, 0));
    for id in ids {
        let state = row_state(&db, id).await;
        assert_eq!((state.state.as_str(), state.attempts), ("done", 2));
        let reason = state.last_error.unwrap();
        assert!(
            reason.contains("handler panicked") && reason.contains(&format!("row {id}")),
            "{reason}"
        );
    }
    db.close().await;
    test_db.drop_database().await;
}

/// The pool: a panicking handler task does not take the pool down; the row is retried.
async fn pool_survives_a_panicking_handler(backend: Backend) {
    let test_db = TestDb::create(backend).await;
    let db = test_db.connect().await;
    let ids = insert_n(&db, 5).await;
    let recorder = Arc::new(Recorder::new(Box::new(|_, nth| {
        assert!(nth > 1, "first call panics");
        Ok(())
    })));
    let wake = Arc::new(Notify::new());
    let pool = WorkerPool::spawn(
        db.clone(),
        recorder.clone(),
        fast(),
        "panicky".to_owned(),
        Arc::clone(&wake),
        std::future::pending(),
    );
    let dbr = &db;
    eventually(
        "every row done",
        || async move { done_count(dbr).await == 5 },
    )
    .await;
    for id in &ids {
        let state = row_state(&db, *id).await;
        assert_eq!(state.attempts, 2, "row {id}");
        assert!(
            state
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("first call panics"))
        );
    }
    // Still working.
    let late = insert(&db, &[row(99, CORP, "del_follow_user", now_ms())]).await[0];
    wake.notify_one();
    eventually(
        "the late row done",
        || async move { done_count(dbr).await == 6 },
    )
    .await;
    assert_eq!(recorder.calls(late), vec![1, 2]);
    pool.stop().await;
    db.close().await;
    test_db.drop_database().await;
}

/// Retries wait out their backoff (or the delay the handler asked for): `drain` leaves them.
async fn retries_wait_for_their_backoff(backend: Backend) {
    let test_db = TestDb::create(backend).await;
    let db = test_db.connect().await;
    let ids = insert_n(&db, 2).await;
    let asks = ids[1];
    let recorder = Recorder::new(Box::new(move |event, _| {
        if event.id == asks {
            Err(HandlerError::retry_after(
                "not a contact yet (84061)",
                Duration::from_secs(120),
            ))
        } else {
            Err(HandlerError::retry("upstream 502"))
        }
    }));
    let settings = WorkerSettings {
        backoff_base: Duration::from_secs(3600),
        backoff_max: Duration::from_secs(7200),
        ..fast()
    };
    let before = now_ms();
    assert_eq!(
        worker::drain(&db, &recorder, &settings).await.unwrap(),
        report(0, 2, 0)
    );
    let after = now_ms();
    assert_eq!(
        worker::drain(&db, &recorder, &settings).await.unwrap(),
        report(0, 0, 0),
        "nothing is due"
    );
    let backoff = row_state(&db, ids[0]).await;
    assert_eq!(
        (backoff.state.as_str(), backoff.lease_owner.as_deref()),
        ("pending", None)
    );
    // Equal jitter: between half and all of the base delay for the first retry.
    assert!(backoff.lease_until_ms >= before + 1_800_000, "{backoff:?}");
    assert!(backoff.lease_until_ms <= after + 3_600_000, "{backoff:?}");
    let asked = row_state(&db, asks).await;
    assert!(
        asked.lease_until_ms >= before + 120_000 && asked.lease_until_ms <= after + 120_000,
        "{asked:?}"
    );
    assert_eq!(
        asked.last_error.as_deref(),
        Some("not a contact yet (84061)")
    );
    let stats = worker::stats(&db, None).await.unwrap();
    assert_eq!((stats.pending, stats.retrying, stats.in_flight), (2, 2, 0));
    db.close().await;
    test_db.drop_database().await;
}

// ---------------------------------------------------------------------------------------------
// The pool: heartbeat, shutdown, wake-ups

/// A handler running for several leases keeps its row: the lease is renewed meanwhile, so
/// another worker cannot claim it.
async fn heartbeat_keeps_a_long_handler_leased(backend: Backend) {
    let test_db = TestDb::create(backend).await;
    let db = test_db.connect().await;
    let id = insert_n(&db, 1).await[0];
    let gate = Arc::new(Semaphore::new(0));
    let slow = Arc::new(Recorder::ok().with_gate(&gate));
    let settings = WorkerSettings {
        lease: Duration::from_millis(900),
        ..fast()
    };
    let pool = WorkerPool::spawn(
        db.clone(),
        slow.clone(),
        settings.clone(),
        "slow-instance".to_owned(),
        Arc::new(Notify::new()),
        std::future::pending(),
    );
    let log = Arc::clone(&slow.log);
    eventually("the handler started", || {
        let log = Arc::clone(&log);
        async move { log.total() == 1 }
    })
    .await;
    let first_lease = row_state(&db, id).await.lease_until_ms;
    // Three leases' time.
    tokio::time::sleep(Duration::from_millis(2700)).await;
    let other = Recorder::ok();
    assert_eq!(
        worker::drain(&db, &other, &settings).await.unwrap(),
        report(0, 0, 0),
        "the row is still held"
    );
    let renewed = row_state(&db, id).await;
    assert!(renewed.lease_until_ms > first_lease + 1000, "{renewed:?}");
    assert!(
        renewed
            .lease_owner
            .as_deref()
            .is_some_and(|o| o.starts_with("slow-instance#"))
    );
    gate.add_permits(1);
    let dbr = &db;
    eventually("the row done", || async move { done_count(dbr).await == 1 }).await;
    assert_eq!(row_state(&db, id).await.attempts, 1);
    assert_eq!(slow.calls(id), vec![1]);
    pool.stop().await;
    db.close().await;
    test_db.drop_database().await;
}

/// On shutdown the pool claims nothing more and finishes the events it holds.
async fn shutdown_finishes_events_in_flight(backend: Backend) {
    let test_db = TestDb::create(backend).await;
    let db = test_db.connect().await;
    let ids = insert_n(&db, 4).await;
    let gate = Arc::new(Semaphore::new(0));
    let recorder = Arc::new(Recorder::ok().with_gate(&gate));
    let (stop, stopped) = oneshot::channel::<()>();
    let pool = WorkerPool::spawn(
        db.clone(),
        recorder.clone(),
        WorkerSettings {
            concurrency: 2,
            ..fast()
        },
        "stopping".to_owned(),
        Arc::new(Notify::new()),
        async {
            let _ = stopped.await;
        },
    );
    let log = Arc::clone(&recorder.log);
    eventually("two handlers started", || {
        let log = Arc::clone(&log);
        async move { log.total() == 2 }
    })
    .await;
    stop.send(()).unwrap();
    gate.add_permits(1);
    pool.join().await;

    assert_eq!(recorder.log.total(), 2);
    for id in &ids[..2] {
        assert_eq!(row_state(&db, *id).await.state, "done");
    }
    for id in &ids[2..] {
        let state = row_state(&db, *id).await;
        assert_eq!(
            (state.state.as_str(), state.attempts, state.lease_owner),
            ("pending", 0, None),
            "not claimed after shutdown"
        );
    }
    db.close().await;
    test_db.drop_database().await;
}

/// The inbox writer pokes the pool after each commit: rows are processed without waiting for the
/// (here: hour-long) idle poll.
async fn writer_commits_wake_the_pool(backend: Backend) {
    let test_db = TestDb::create(backend).await;
    let db = test_db.connect().await;
    let write_db = db.dedicated_writer().await.unwrap();
    let (writer, writer_task) = InboxWriter::spawn(write_db.clone(), 16);
    let recorder = Arc::new(Recorder::ok());
    let pool = WorkerPool::spawn(
        db.clone(),
        recorder.clone(),
        WorkerSettings {
            idle_poll: Duration::from_secs(3600),
            ..fast()
        },
        "woken".to_owned(),
        writer.commits(),
        std::future::pending(),
    );
    // Let the pool make its first (empty) claim and go to sleep.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for n in 0..3 {
        let stored = writer
            .store(row(n, CORP, "add_external_contact", now_ms()))
            .await
            .unwrap();
        assert_eq!(stored, Stored::New);
        let dbr = &db;
        let expected = i64::try_from(n).unwrap() + 1;
        eventually("the stored row processed", || async move {
            done_count(dbr).await == expected
        })
        .await;
    }
    assert_eq!(recorder.log.total(), 3);
    pool.stop().await;
    drop(writer);
    writer_task.await.unwrap();
    write_db.close().await;
    db.close().await;
    test_db.drop_database().await;
}

// ---------------------------------------------------------------------------------------------
// Replay and stats

/// Replay by id, by type (any of MsgType/Event/ChangeType), by corp, by time and dead letters only:
/// the rows come back with no attempts and their body, and are processed again. A row under a
/// live lease is never replayed.
async fn replay_puts_rows_back_and_they_are_processed_again(backend: Backend) {
    let test_db = TestDb::create(backend).await;
    let db = test_db.connect().await;
    let t0 = 1_700_000_000_000;
    let ids = insert(
        &db,
        &[
            row(1, CORP, "add_external_contact", t0),
            row(2, CORP, "del_follow_user", t0 + 1000),
            row(3, OTHER_CORP, "add_external_contact", t0 + 2000),
            row(4, CORP, "add_external_contact", t0 + 3000),
        ],
    )
    .await;
    let (a, b, c, d) = (ids[0], ids[1], ids[2], ids[3]);
    let recorder = Recorder::ok();
    let settings = fast();
    assert_eq!(
        worker::drain(&db, &recorder, &settings).await.unwrap(),
        report(4, 0, 0)
    );
    let replay = |filter: ReplayFilter| {
        let db = db.clone();
        async move { inbox::replay(&db, &filter, now_ms()).await.unwrap() }
    };
    let counts = |r: &Recorder| ids.iter().map(|id| r.calls(*id).len()).collect::<Vec<_>>();

    // By id.
    let before = now_ms();
    assert_eq!(
        replay(ReplayFilter {
            id: Some(a),
            ..ReplayFilter::default()
        })
        .await,
        1
    );
    let back = row_state(&db, a).await;
    assert_eq!(
        (back.state.as_str(), back.attempts, back.processed_at_ms),
        ("pending", 0, None)
    );
    assert!(back.replayed_at_ms.is_some_and(|t| t >= before));
    assert_eq!(
        worker::drain(&db, &recorder, &settings).await.unwrap(),
        report(1, 0, 0)
    );
    assert_eq!(counts(&recorder), vec![2, 1, 1, 1]);
    assert_eq!(recorder.calls(a), vec![1, 1], "attempts start again");

    // By ChangeType within one corp.
    assert_eq!(
        replay(ReplayFilter {
            event_type: Some("add_external_contact".to_owned()),
            corp_id: Some(CORP.to_owned()),
            ..ReplayFilter::default()
        })
        .await,
        2
    );
    worker::drain(&db, &recorder, &settings).await.unwrap();
    assert_eq!(counts(&recorder), vec![3, 1, 1, 2]);

    // By Event: every row.
    assert_eq!(
        replay(ReplayFilter {
            event_type: Some("change_external_contact".to_owned()),
            ..ReplayFilter::default()
        })
        .await,
        4
    );
    worker::drain(&db, &recorder, &settings).await.unwrap();
    assert_eq!(counts(&recorder), vec![4, 2, 2, 3]);

    // By time: since inclusive, until exclusive.
    assert_eq!(
        replay(ReplayFilter {
            since_ms: Some(t0 + 1000),
            until_ms: Some(t0 + 3000),
            ..ReplayFilter::default()
        })
        .await,
        2
    );
    worker::drain(&db, &recorder, &settings).await.unwrap();
    assert_eq!(counts(&recorder), vec![4, 3, 3, 3]);
    assert_eq!(
        replay(ReplayFilter {
            event_type: Some("no_such_event".to_owned()),
            ..ReplayFilter::default()
        })
        .await,
        0
    );

    // Dead letters only.
    let dead_only = ReplayFilter {
        dead_only: true,
        ..ReplayFilter::default()
    };
    assert_eq!(replay(dead_only.clone()).await, 0);
    replay(ReplayFilter {
        id: Some(b),
        ..ReplayFilter::default()
    })
    .await;
    let held = inbox::claim(&db, "w#1", now_ms(), Duration::from_secs(60), 1)
        .await
        .unwrap();
    assert_eq!(held[0].id, b);
    assert!(
        worker::mark_dead(&db, b, "w#1", now_ms(), "broken")
            .await
            .unwrap()
    );
    assert_eq!(replay(dead_only).await, 1);
    let revived = row_state(&db, b).await;
    assert_eq!(
        (
            revived.state.as_str(),
            revived.attempts,
            revived.last_error,
            revived.dead_at_ms
        ),
        ("pending", 0, None, None)
    );
    assert_eq!(
        inbox::get(&db, b).await.unwrap().body.as_deref(),
        Some(row(2, CORP, "del_follow_user", t0 + 1000).body.as_str()),
        "the body is kept"
    );

    // A row under a live lease is left alone, whatever the filter.
    let held = inbox::claim(&db, "w#2", now_ms(), Duration::from_secs(60), 1)
        .await
        .unwrap();
    assert_eq!(held[0].id, b);
    assert_eq!(
        replay(ReplayFilter {
            id: Some(b),
            ..ReplayFilter::default()
        })
        .await,
        0
    );
    assert_eq!(row_state(&db, b).await.lease_owner.as_deref(), Some("w#2"));
    assert_eq!(
        replay(ReplayFilter::default()).await,
        3,
        "all but the held row"
    );
    assert_eq!(row_state(&db, c).await.state, "pending");
    assert_eq!(row_state(&db, d).await.state, "pending");
    db.close().await;
    test_db.drop_database().await;
}

/// Every state counted, per corp and overall; the oldest pending row's age.
async fn stats_count_every_state(backend: Backend) {
    let test_db = TestDb::create(backend).await;
    let db = test_db.connect().await;
    let base = now_ms() - 100_000;
    let mut rows: Vec<NewInboxRow> = (1..=7)
        .map(|n| row(n, CORP, "add_external_contact", base + 1000 * n as i64))
        .collect();
    rows.push(row(8, OTHER_CORP, "add_external_contact", base + 8000));
    let ids = insert(&db, &rows).await;
    let now = now_ms();
    let lease = Duration::from_secs(60);
    // Rows 1, 2 done.
    let claimed = inbox::claim(&db, "w#1", now, lease, 2).await.unwrap();
    for event in &claimed {
        assert!(worker::mark_done(&db, event.id, "w#1", now).await.unwrap());
    }
    // Row 3 dead.
    inbox::claim(&db, "w#2", now, lease, 1).await.unwrap();
    assert!(
        worker::mark_dead(&db, ids[2], "w#2", now, "gone")
            .await
            .unwrap()
    );
    // Row 4 waiting for its retry, two attempts made.
    inbox::claim(&db, "w#3", now - 120_000, lease, 1)
        .await
        .unwrap();
    inbox::claim(&db, "w#3b", now, lease, 1).await.unwrap();
    assert!(
        worker::schedule_retry(&db, ids[3], "w#3b", now + 3_600_000, "later")
            .await
            .unwrap()
    );
    // Row 5 in flight.
    inbox::claim(&db, "w#4", now, lease, 1).await.unwrap();
    // Row 6 held by a worker that died (lease expired): retrying, not in flight.
    let died = inbox::claim(&db, "w#5", now - 120_000, lease, 1)
        .await
        .unwrap();
    assert_eq!(died[0].id, ids[5]);
    // Rows 7 and 8 fresh.

    let all = worker::stats(&db, None).await.unwrap();
    assert_eq!(
        (
            all.pending,
            all.in_flight,
            all.retrying,
            all.done,
            all.dead,
            all.attempts_max
        ),
        (5, 1, 2, 2, 1, 2)
    );
    assert_eq!(all.oldest_pending_ms, Some(base + 4000));
    assert!(all.lag_secs >= 95.0 && all.lag_secs < 300.0, "{all:?}");

    let corp = worker::stats(&db, Some(CORP)).await.unwrap();
    assert_eq!(
        (
            corp.pending,
            corp.in_flight,
            corp.retrying,
            corp.done,
            corp.dead
        ),
        (4, 1, 2, 2, 1)
    );
    let other = worker::stats(&db, Some(OTHER_CORP)).await.unwrap();
    assert_eq!(
        (
            other.pending,
            other.retrying,
            other.done,
            other.dead,
            other.attempts_max
        ),
        (1, 0, 0, 0, 0)
    );
    assert_eq!(other.oldest_pending_ms, Some(base + 8000));
    let nobody = worker::stats(&db, Some("wwnobody")).await.unwrap();
    assert_eq!((nobody.pending, nobody.done), (0, 0));
    assert_eq!((nobody.oldest_pending_ms, nobody.lag_secs), (None, 0.0));

    let backlog = worker::backlog(&db, None, now_ms()).await.unwrap();
    assert_eq!(
        (
            backlog.pending,
            backlog.in_flight,
            backlog.retrying,
            backlog.dead
        ),
        (5, 1, 2, 1)
    );
    db.close().await;
    test_db.drop_database().await;
}

/// `/metrics` reads the backlog gauges at scrape time. The rows are a dead letter and one row
/// held under a long lease, so a worker pool running in the server cannot change them.
async fn metrics_show_the_backlog(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ids = insert(
        &app.db,
        &[
            row(1, CORP, "add_external_contact", now_ms() - 120_000),
            row(2, CORP, "add_external_contact", now_ms() - 60_000),
        ],
    )
    .await;
    let lease = Duration::from_secs(600);
    let claimed = inbox::claim(&app.db, "m#1", now_ms(), lease, 1)
        .await
        .unwrap();
    assert_eq!(claimed[0].id, ids[0]);
    assert!(
        worker::mark_dead(&app.db, ids[0], "m#1", now_ms(), "bad")
            .await
            .unwrap()
    );
    let held = inbox::claim(&app.db, "m#2", now_ms(), lease, 1)
        .await
        .unwrap();
    assert_eq!(held[0].id, ids[1]);

    let text = common::scrape_until(&app.base_url, |t| {
        t.lines().any(|l| l == "scrm_inbox_dead 1")
            && t.lines().any(|l| l == "scrm_inbox_in_flight 1")
    })
    .await;
    let gauge = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing in\n{text}"))
            .parse()
            .unwrap()
    };
    assert_eq!(gauge("scrm_inbox_dead"), 1.0);
    assert_eq!(gauge("scrm_inbox_pending"), 1.0);
    assert_eq!(gauge("scrm_inbox_in_flight"), 1.0);
    assert_eq!(gauge("scrm_inbox_retrying"), 0.0);
    let lag = gauge("scrm_inbox_lag_seconds");
    assert!((59.0..600.0).contains(&lag), "{lag}");
    assert!(
        text.contains("# TYPE scrm_inbox_lag_seconds gauge"),
        "{text}"
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// CLI

async fn scrm(dir: &Path, url: &str, args: &[&str]) -> common::Output {
    let mut all = vec!["--database-url", url];
    all.extend_from_slice(args);
    common::scrm(dir, &all).await
}

async fn replay_and_stats_commands(backend: Backend) {
    let test_db = TestDb::create(backend).await;
    let db = test_db.connect().await;
    let t0 = 1_700_000_000_000;
    let ids = insert(
        &db,
        &[
            row(1, CORP, "add_external_contact", t0),
            row(2, CORP, "del_follow_user", t0 + 10_000),
            row(3, OTHER_CORP, "add_external_contact", t0 + 20_000),
        ],
    )
    .await;
    let bad = ids[1];
    let recorder = Recorder::new(Box::new(move |event, _| {
        if event.id == bad {
            Err(HandlerError::permanent("客户不存在 84061"))
        } else {
            Ok(())
        }
    }));
    worker::drain(&db, &recorder, &fast()).await.unwrap();
    let (dir, url) = (test_db.dir.path(), test_db.url.as_str());

    let stats = scrm(dir, url, &["inbox", "stats", "--json"]).await;
    assert_eq!(stats.code, 0, "{}", stats.stderr);
    let json: serde_json::Value = serde_json::from_str(&stats.stdout).expect("JSON");
    assert_eq!(json["pending"], 0);
    assert_eq!(json["done"], 2);
    assert_eq!(json["dead"], 1);
    assert_eq!(json["oldest_pending_ms"], serde_json::Value::Null);
    assert_eq!(json["dead_letters"][0]["id"], bad);
    assert_eq!(json["dead_letters"][0]["last_error"], "客户不存在 84061");
    let corp = scrm(
        dir,
        url,
        &["inbox", "stats", "--json", "--corp", OTHER_CORP],
    )
    .await;
    let json: serde_json::Value = serde_json::from_str(&corp.stdout).expect("JSON");
    assert_eq!(
        (json["done"].clone(), json["dead"].clone()),
        (1.into(), 0.into())
    );
    let table = scrm(dir, url, &["inbox", "stats"]).await;
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(
        table.stdout.contains("dead")
            && table.stdout.contains("客户不存在 84061")
            && table
                .stdout
                .contains("event/change_external_contact/del_follow_user"),
        "{}",
        table.stdout
    );

    let refused = scrm(dir, url, &["replay"]).await;
    assert_eq!(refused.code, 2);
    assert!(refused.stderr.contains("--all"), "{}", refused.stderr);
    let refused = scrm(dir, url, &["replay", "--corp", CORP]).await;
    assert_eq!(refused.code, 2, "a corp alone selects everything of it");
    let bad_time = scrm(dir, url, &["replay", "--since", "yesterday"]).await;
    assert_eq!(bad_time.code, 2);
    assert_eq!(worker::stats(&db, None).await.unwrap().pending, 0);

    let by_id = scrm(dir, url, &["replay", "--id", &ids[0].to_string()]).await;
    assert_eq!(
        (by_id.code, by_id.stdout.as_str()),
        (0, "1\n"),
        "{}",
        by_id.stderr
    );
    assert_eq!(row_state(&db, ids[0]).await.state, "pending");

    let dead = scrm(dir, url, &["replay", "--dead"]).await;
    assert_eq!(dead.stdout, "1\n", "{}", dead.stderr);
    assert_eq!(row_state(&db, bad).await.state, "pending");

    let by_type = scrm(
        dir,
        url,
        &[
            "replay",
            "--type",
            "add_external_contact",
            "--corp",
            OTHER_CORP,
        ],
    )
    .await;
    assert_eq!(by_type.stdout, "1\n", "{}", by_type.stderr);

    worker::drain(&db, &Recorder::ok(), &fast()).await.unwrap();
    // RFC 3339 and epoch seconds: [t0 + 5 s, t0 + 15 s) holds row 2 only.
    let since = chrono::DateTime::from_timestamp_millis(t0 + 5000)
        .unwrap()
        .to_rfc3339();
    let until = ((t0 + 15_000) / 1000).to_string();
    let by_time = scrm(dir, url, &["replay", "--since", &since, "--until", &until]).await;
    assert_eq!(by_time.stdout, "1\n", "{}", by_time.stderr);
    assert_eq!(row_state(&db, bad).await.state, "pending");

    let all = scrm(dir, url, &["replay", "--all"]).await;
    assert_eq!(all.stdout, "3\n", "{}", all.stderr);
    let stats = worker::stats(&db, None).await.unwrap();
    assert_eq!((stats.pending, stats.done, stats.dead), (3, 0, 0));
    db.close().await;
    test_db.drop_database().await;
}

both_backends!(
    two_pools_process_every_row_exactly_once,
    expired_lease_is_reclaimed_and_finished_once,
    stolen_lease_cannot_complete,
    retry_twice_then_ok_is_done_with_three_attempts,
    always_retry_becomes_a_dead_letter_after_max_attempts,
    deferred_attempts_are_not_counted,
    permanent_failure_is_dead_at_once,
    panicking_handler_is_retried,
    pool_survives_a_panicking_handler,
    retries_wait_for_their_backoff,
    heartbeat_keeps_a_long_handler_leased,
    shutdown_finishes_events_in_flight,
    writer_commits_wake_the_pool,
    replay_puts_rows_back_and_they_are_processed_again,
    stats_count_every_state,
    metrics_show_the_backlog,
    replay_and_stats_commands,
);
