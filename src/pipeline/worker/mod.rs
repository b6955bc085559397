//! Inbox workers: take stored callbacks out of the inbox and hand them to the domain's
//! [`InboxHandler`], at least once and never twice at the same time.
//!
//! A worker *claims* rows under a lease (PostgreSQL `FOR UPDATE SKIP LOCKED`, SQLite's single
//! writer), so several instances on one PostgreSQL share the work; a row whose worker died is
//! claimed again by anyone once its lease runs out, and a long handler keeps its lease by renewing
//! it every third of the lease. The handler's answer decides what happens next: done; retried
//! later with exponential backoff and jitter (or the delay the handler asked for); or, after
//! [`WorkerSettings::max_attempts`] or at once for a [`HandlerError::Permanent`], a dead letter
//! that waits for an operator's [`replay`]. A panicking handler counts as a retry.
//!
//! Handlers must be idempotent (wecom-protocol §2.3): a row may be processed again after a lease
//! expired mid-event, after a replay, or when recording the outcome failed.
//!
//! Under a backlog the database sees batches, not events: a pool claims once half its slots are
//! free (one statement for many rows), and the attempts' outcomes are committed together by one
//! recorder per pool (`record`), each attempt waiting for the commit that holds its outcome.
//!
//! [`WorkerPool`] runs this in the server; [`drain`] runs it until nothing is claimable (tests, CLI).

mod pool;
mod record;
mod store;

use std::any::Any;
use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use rand::Rng as _;
use serde::Serialize;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::Instrument as _;

use crate::platform::db::{Db, StoreError, now_ms};

pub use pool::WorkerPool;
pub(crate) use store::truncate_bytes;
pub use store::{
    Backlog, DeadLetter, INBOX, InboxStats, LeaseTable, MAX_REASON_BYTES, backlog, dead_letters,
    mark_dead, mark_done, renew_lease, schedule_retry, stats,
};

use crate::pipeline::inbox::{ClaimedEvent, claim};
use record::{Ending, Finish, Recorder};

/// A table of work claimed under leases and the handler of its rows: the inbox (callbacks to
/// process) and the outbox (calls to make to WeCom) run on the same [`WorkerPool`] and [`drain`],
/// with the same leases, heartbeat, backoff and dead letters.
#[async_trait::async_trait]
pub trait Queue: Send + Sync {
    /// A claimed row.
    type Item: Send + Sync;
    /// The queue's name in logs.
    const NAME: &'static str;
    /// Counter of attempts by `outcome`.
    const OUTCOMES_METRIC: &'static str;
    /// Histogram of handling time, seconds.
    const SECONDS_METRIC: &'static str;

    /// The database holding the table.
    fn db(&self) -> &Db;
    /// The table's lease columns.
    fn table(&self) -> LeaseTable;
    /// A row's id.
    fn id(item: &Self::Item) -> i64;
    /// Attempts so far, this one included.
    fn attempts(item: &Self::Item) -> i32;
    /// The span one attempt runs in.
    fn span(item: &Self::Item) -> tracing::Span;
    /// Claims up to `limit` rows for `lease` under the token `owner`.
    async fn claim(
        &self,
        owner: &str,
        now_ms: i64,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<Self::Item>, StoreError>;
    /// Handles one row. Must be idempotent: the same row can come again.
    async fn handle(&self, item: &Self::Item) -> Result<(), HandlerError>;
}

/// The inbox as a [`Queue`]: stored callbacks, handed to an [`InboxHandler`]. `H` is any pointer
/// to one (`Arc<dyn InboxHandler>` for the pool, a reference for [`drain`]).
pub struct InboxQueue<H> {
    db: Db,
    handler: H,
}

impl<H> InboxQueue<H> {
    /// The inbox of `db`, handled by `handler`.
    pub fn new(db: Db, handler: H) -> Self {
        Self { db, handler }
    }
}

#[async_trait::async_trait]
impl<H> Queue for InboxQueue<H>
where
    H: std::ops::Deref + Send + Sync,
    H::Target: InboxHandler,
{
    type Item = ClaimedEvent;
    const NAME: &'static str = "inbox";
    const OUTCOMES_METRIC: &'static str = "scrm_worker_events_total";
    const SECONDS_METRIC: &'static str = "scrm_worker_handle_seconds";

    fn db(&self) -> &Db {
        &self.db
    }
    fn table(&self) -> LeaseTable {
        INBOX
    }
    fn id(item: &ClaimedEvent) -> i64 {
        item.id
    }
    fn attempts(item: &ClaimedEvent) -> i32 {
        item.attempts
    }
    fn span(event: &ClaimedEvent) -> tracing::Span {
        tracing::info_span!("inbox_event", event_id = event.id, corp_id = %event.corp_id, attempt = event.attempts, kind = %event.kind())
    }
    async fn claim(
        &self,
        owner: &str,
        now_ms: i64,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<ClaimedEvent>, StoreError> {
        claim(&self.db, owner, now_ms, lease, limit).await
    }
    async fn handle(&self, item: &ClaimedEvent) -> Result<(), HandlerError> {
        self.handler.handle(item).await
    }
}

/// What the domain implements to process one stored callback.
#[async_trait::async_trait]
pub trait InboxHandler: Send + Sync {
    /// Processes one event. Must be idempotent: the same row can come again.
    async fn handle(&self, event: &ClaimedEvent) -> Result<(), HandlerError>;
}

/// Why a handler did not finish an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// Try again later (the WeCom API is down or rate-limited, a row it needs is not there yet…).
    /// `after`: how long to wait; `None` uses the pool's exponential backoff.
    #[error("retry: {reason}")]
    Retry {
        /// What went wrong, stored as `last_error`.
        reason: String,
        /// Wait at least this long before the next attempt.
        after: Option<Duration>,
    },
    /// Not a failure: our own side holds the call back (the client's share of WeCom's quota for
    /// this API is used up for now). Tried again after `after`; the attempt is not counted, so a
    /// long backlog behind WeCom's limits never turns into dead letters.
    #[error("deferred: {reason}")]
    Defer {
        /// Why, stored as `last_error`.
        reason: String,
        /// When the quota reopens.
        after: Duration,
    },
    /// Retrying cannot help (the event cannot be understood, the corp is gone): dead letter now.
    #[error("permanent failure: {reason}")]
    Permanent {
        /// What went wrong, stored as `last_error`.
        reason: String,
    },
}

impl HandlerError {
    /// Retry with the pool's backoff.
    pub fn retry(reason: impl Into<String>) -> Self {
        Self::Retry {
            reason: reason.into(),
            after: None,
        }
    }

    /// Retry no earlier than `after` from now.
    pub fn retry_after(reason: impl Into<String>, after: Duration) -> Self {
        Self::Retry {
            reason: reason.into(),
            after: Some(after),
        }
    }

    /// Give up on this event.
    pub fn permanent(reason: impl Into<String>) -> Self {
        Self::Permanent {
            reason: reason.into(),
        }
    }

    /// The reason, whichever the kind.
    pub fn reason(&self) -> &str {
        match self {
            Self::Retry { reason, .. }
            | Self::Defer { reason, .. }
            | Self::Permanent { reason } => reason,
        }
    }
}

/// How workers run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSettings {
    /// Events handled at once by one pool (and rows claimed per statement at most).
    pub concurrency: usize,
    /// How long a claim holds a row before anyone may take it over; renewed every third of it
    /// while the handler runs.
    pub lease: Duration,
    /// Attempts before a retried event becomes a dead letter.
    pub max_attempts: i32,
    /// First retry delay; doubled per attempt.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// How often an idle pool looks for work it was not woken for (retries coming due, rows
    /// stored by another instance).
    pub idle_poll: Duration,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            concurrency: 4,
            lease: Duration::from_secs(30),
            max_attempts: 10,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(600),
            idle_poll: Duration::from_secs(1),
        }
    }
}

/// The delay before retrying an event that has had `attempts` attempts: `backoff_base · 2^(attempts−1)`
/// capped at `backoff_max`, then a random point in its upper half ("equal jitter": many events
/// failing together do not come back together, and none comes back much sooner than planned).
pub fn retry_delay(settings: &WorkerSettings, attempts: i32) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(0)
        .min(32);
    let full = settings
        .backoff_base
        .saturating_mul(2_u32.saturating_pow(doublings))
        .min(settings.backoff_max);
    let half = full / 2;
    let jitter = Duration::try_from_secs_f64(half.as_secs_f64() * rand::rng().random::<f64>())
        .unwrap_or(Duration::ZERO)
        .min(half);
    (full - half) + jitter
}

/// How one attempt was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Processed: state `done`.
    Done,
    /// Released for a later attempt.
    Retried,
    /// Held back by a rate limit; the attempt was not counted.
    Deferred,
    /// Dead letter.
    Dead,
    /// The lease was no longer ours (expired and taken over, or replayed): nothing was written.
    LeaseLost,
}

impl Outcome {
    /// The `outcome` label of `scrm_worker_events_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Retried => "retry",
            Self::Deferred => "deferred",
            Self::Dead => "dead",
            Self::LeaseLost => "lease_lost",
        }
    }
}

/// What [`drain`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DrainReport {
    /// Attempts that finished their event.
    pub done: u64,
    /// Attempts that released their event for a retry.
    pub retried: u64,
    /// Events that became dead letters.
    pub dead: u64,
    /// Attempts whose lease was gone when they finished.
    pub lease_lost: u64,
}

impl DrainReport {
    fn add(&mut self, outcome: Outcome) {
        let counter = match outcome {
            Outcome::Done => &mut self.done,
            Outcome::Retried | Outcome::Deferred => &mut self.retried,
            Outcome::Dead => &mut self.dead,
            Outcome::LeaseLost => &mut self.lease_lost,
        };
        *counter += 1;
    }
}

/// Processes claimable rows, `settings.concurrency` at a time, until none is claimable now. Rows
/// waiting for a retry later, and rows another worker holds, are left. Stops at the first database
/// error (rows it held are retried when their lease expires).
///
/// Terminates as long as handlers eventually stop asking for immediate retries (`max_attempts`
/// bounds that).
pub async fn drain(
    db: &Db,
    handler: &dyn InboxHandler,
    settings: &WorkerSettings,
) -> Result<DrainReport, StoreError> {
    drain_queue(&InboxQueue::new(db.clone(), handler), settings).await
}

/// [`drain`] for any [`Queue`].
pub async fn drain_queue<Q: Queue>(
    queue: &Q,
    settings: &WorkerSettings,
) -> Result<DrainReport, StoreError> {
    let instance = format!("drain:{}", instance_owner());
    let recorder = Recorder::spawn(queue.db().clone(), queue.table());
    let mut report = DrainReport::default();
    let mut seq: u64 = 0;
    loop {
        seq += 1;
        let owner = format!("{instance}#{seq}");
        let items = queue
            .claim(
                &owner,
                now_ms(),
                settings.lease,
                settings.concurrency.max(1),
            )
            .await?;
        if items.is_empty() {
            return Ok(report);
        }
        let attempts = items
            .iter()
            .map(|item| {
                let handling = caught(queue.handle(item));
                settle(queue, &recorder, item, &owner, settings, handling)
            })
            .collect();
        for outcome in join_all(attempts).await {
            report.add(outcome?);
        }
    }
}

/// A lease owner naming this process: `host:pid:random`. Give each instance (each
/// [`WorkerPool`]) its own; the pool appends a claim sequence number.
pub fn instance_owner() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty() && h.len() <= 64)
        .unwrap_or_else(|| "scrm".to_owned());
    format!(
        "{host}:{}:{:08x}",
        std::process::id(),
        rand::rng().random::<u32>()
    )
}

/// Runs one attempt under the lease `owner` holds, with the heartbeat, and records its outcome.
async fn settle<Q, F>(
    queue: &Q,
    recorder: &Recorder,
    item: &Q::Item,
    owner: &str,
    settings: &WorkerSettings,
    handling: F,
) -> Result<Outcome, StoreError>
where
    Q: Queue + ?Sized,
    F: Future<Output = Result<(), HandlerError>>,
{
    let span = Q::span(item);
    settle_in_span(queue, recorder, item, owner, settings, handling)
        .instrument(span)
        .await
}

async fn settle_in_span<Q, F>(
    queue: &Q,
    recorder: &Recorder,
    item: &Q::Item,
    owner: &str,
    settings: &WorkerSettings,
    handling: F,
) -> Result<Outcome, StoreError>
where
    Q: Queue + ?Sized,
    F: Future<Output = Result<(), HandlerError>>,
{
    let (db, table, id, attempts) = (queue.db(), queue.table(), Q::id(item), Q::attempts(item));
    let started = Instant::now();
    let result = with_heartbeat(db, table, id, owner, settings.lease, handling).await;
    metrics::histogram!(Q::SECONDS_METRIC).record(started.elapsed().as_secs_f64());
    let now = now_ms();
    let (planned, finish) = match &result {
        Ok(()) => (Outcome::Done, Finish::Done),
        Err(HandlerError::Permanent { reason }) => (
            Outcome::Dead,
            Finish::Dead {
                reason: reason.clone(),
            },
        ),
        Err(HandlerError::Defer { reason, after }) => (
            Outcome::Deferred,
            Finish::Defer {
                retry_at_ms: now.saturating_add(store::millis(*after)),
                reason: reason.clone(),
            },
        ),
        Err(HandlerError::Retry { reason, .. }) if attempts >= settings.max_attempts => (
            Outcome::Dead,
            Finish::Dead {
                reason: reason.clone(),
            },
        ),
        Err(HandlerError::Retry { reason, after }) => {
            let delay = after.unwrap_or_else(|| retry_delay(settings, attempts));
            (
                Outcome::Retried,
                Finish::Retry {
                    retry_at_ms: now.saturating_add(store::millis(delay)),
                    reason: reason.clone(),
                },
            )
        }
    };
    let ending = Ending {
        id,
        owner: owner.to_owned(),
        at_ms: now,
        finish,
    };
    let applied = recorder.record(ending).await?;
    let outcome = if applied { planned } else { Outcome::LeaseLost };
    metrics::counter!(Q::OUTCOMES_METRIC, "outcome" => outcome.as_str()).increment(1);
    let reason = result.as_ref().err().map(HandlerError::reason);
    let queue_name = Q::NAME;
    match outcome {
        Outcome::Done => tracing::debug!(queue = queue_name, "processed"),
        Outcome::Retried => tracing::info!(queue = queue_name, reason, "will be retried"),
        Outcome::Deferred => {
            tracing::debug!(queue = queue_name, reason, "deferred by a rate limit")
        }
        Outcome::Dead => tracing::warn!(queue = queue_name, reason, "dead letter"),
        Outcome::LeaseLost => {
            tracing::warn!(
                queue = queue_name,
                planned = planned.as_str(),
                "lease lost before the outcome was recorded"
            );
        }
    }
    Ok(outcome)
}

/// Polls `handling` while renewing the row's lease every third of `lease`, so a long handler
/// keeps its row. Renewal stops once the lease is found gone; the handler runs on (it is
/// idempotent, and stopping it halfway would help nobody).
async fn with_heartbeat<F: Future>(
    db: &Db,
    table: LeaseTable,
    id: i64,
    owner: &str,
    lease: Duration,
    handling: F,
) -> F::Output {
    let period = (lease / 3).max(Duration::from_millis(10));
    let heartbeat = async {
        let mut tick = tokio::time::interval_at(Instant::now() + period, period);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let until = now_ms().saturating_add(store::millis(lease));
            match table.renew(db, id, owner, until).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!("lease lost while the handler runs");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, cause = ?std::error::Error::source(&e), "cannot renew the lease")
                }
            }
        }
        std::future::pending::<Infallible>().await
    };
    tokio::select! {
        output = handling => output,
        never = heartbeat => match never {},
    }
}

/// `fut`, with a panic turned into a retry (for [`drain`], whose handler is borrowed and so
/// cannot run in a task of its own; the pool learns of panics from the task's `JoinError`).
async fn caught<F>(fut: F) -> Result<(), HandlerError>
where
    F: Future<Output = Result<(), HandlerError>>,
{
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(move |cx| {
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(poll) => poll,
            // Never polled again after this.
            Err(payload) => Poll::Ready(Err(panicked(payload.as_ref()))),
        }
    })
    .await
}

/// The retry a panic becomes, with the panic's message.
fn panicked(payload: &(dyn Any + Send)) -> HandlerError {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text panic payload".to_owned());
    HandlerError::retry(format!("handler panicked: {message}"))
}

/// Polls every future until all are ready; outputs in input order.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut waiting = false;
        for (fut, slot) in futures.iter_mut().zip(outputs.iter_mut()) {
            if slot.is_none() {
                match fut.as_mut().poll(cx) {
                    Poll::Ready(output) => *slot = Some(output),
                    Poll::Pending => waiting = true,
                }
            }
        }
        if waiting {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

impl From<&crate::platform::config::WorkerConfig> for WorkerSettings {
    /// The pool settings a `[worker]` or `[outbox]` section stands for.
    fn from(c: &crate::platform::config::WorkerConfig) -> Self {
        Self {
            concurrency: c.concurrency,
            max_attempts: c.max_attempts,
            lease: Duration::from_secs(c.lease_secs),
            backoff_max: Duration::from_secs(c.backoff_max_secs),
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(base_ms: u64, max_ms: u64) -> WorkerSettings {
        WorkerSettings {
            backoff_base: Duration::from_millis(base_ms),
            backoff_max: Duration::from_millis(max_ms),
            ..WorkerSettings::default()
        }
    }

    #[test]
    fn retry_delay_doubles_within_its_upper_half_and_stops_at_the_cap() {
        let s = settings(1000, 60_000);
        for _ in 0..200 {
            let first = retry_delay(&s, 1);
            assert!(first >= Duration::from_millis(500) && first <= Duration::from_secs(1));
            let third = retry_delay(&s, 3);
            assert!(third >= Duration::from_secs(2) && third <= Duration::from_secs(4));
            let late = retry_delay(&s, 40);
            assert!(late >= Duration::from_secs(30) && late <= Duration::from_secs(60));
        }
        assert!(retry_delay(&s, i32::MAX) <= Duration::from_secs(60));
        assert!(retry_delay(&s, 0) <= Duration::from_secs(1));
        assert!(retry_delay(&s, i32::MIN) <= Duration::from_secs(1));
        assert_eq!(retry_delay(&settings(0, 0), 5), Duration::ZERO);
        let huge = WorkerSettings {
            backoff_base: Duration::MAX,
            backoff_max: Duration::MAX,
            ..WorkerSettings::default()
        };
        assert!(retry_delay(&huge, 9) >= Duration::MAX / 2);
    }

    #[test]
    fn retry_delay_is_jittered() {
        let s = settings(1000, 60_000);
        let delays: std::collections::HashSet<Duration> =
            (0..50).map(|_| retry_delay(&s, 4)).collect();
        assert!(delays.len() > 1, "fifty equal delays: no jitter");
    }

    #[tokio::test]
    async fn a_panic_becomes_a_retry_naming_it() {
        let out = caught(async {
            tokio::task::yield_now().await;
            if std::hint::black_box(true) {
                panic!("boom {}", 42);
            }
            Ok(())
        })
        .await;
        assert_eq!(out, Err(HandlerError::retry("handler panicked: boom 42")));
        let fine = caught(async { Ok(()) }).await;
        assert_eq!(fine, Ok(()));
    }

    #[tokio::test]
    async fn join_all_keeps_input_order() {
        let futures: Vec<_> = (0..5_u64)
            .map(|i| async move {
                tokio::time::sleep(Duration::from_millis(20 - 4 * i)).await;
                i
            })
            .collect();
        assert_eq!(join_all(futures).await, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn debug_leaves_the_body_out() {
        let event = ClaimedEvent {
            id: 7,
            corp_id: "ww1".to_owned(),
            app: "contacts".to_owned(),
            agent_id: None,
            msg_type: "event".to_owned(),
            event: Some("change_external_contact".to_owned()),
            change_type: None,
            create_time: None,
            received_at_ms: 0,
            body: "<xml>张三的手机号</xml>".to_owned(),
            attempts: 1,
        };
        let text = format!("{event:?}");
        assert!(!text.contains("张三"), "{text}");
        assert!(text.contains("body_len"));
        assert_eq!(event.kind(), "event/change_external_contact");
    }
}
