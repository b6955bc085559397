//! The inbox: every decrypted callback, stored durably before WeCom hears "success".
//!
//! Intake hands rows to an [`InboxWriter`], which commits whatever arrived while the previous
//! commit was on its way to disk as one multi-row `INSERT` (group commit): each caller still waits
//! for *its* row to be durable, yet a burst of callbacks costs one fsync, not one each.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::QueryBuilder;
use tokio::sync::{Notify, mpsc, oneshot};
use wecom_sdk::MessageHeader;

use crate::on_db;
use crate::platform::db::{Db, StoreError};

/// A row about to be stored.
#[derive(Debug, Clone)]
pub struct NewInboxRow {
    /// The corp the callback URL belongs to.
    pub corp_id: String,
    /// The callback configuration's name (the `{app}` in the URL).
    pub app: String,
    /// `AgentID` from the envelope or the message, when present.
    pub agent_id: Option<String>,
    /// See [`dedup_key`].
    pub dedup_key: String,
    /// `MsgType` (empty when absent).
    pub msg_type: String,
    /// `Event`.
    pub event: Option<String>,
    /// `ChangeType`.
    pub change_type: Option<String>,
    /// `CreateTime` (unix seconds).
    pub create_time: Option<i64>,
    /// When we received it.
    pub received_at_ms: i64,
    /// The decrypted plaintext, exactly as WeCom sent it.
    pub body: String,
}

/// The key that tells a retry from a new event (wecom-protocol §2.3): app messages by
/// corp + agent + `MsgId`; events by SHA-256 of the whole plaintext, because `FromUserName` is `sys`
/// and `CreateTime` has one-second resolution, so distinct events share those.
///
/// The event key starts with the zero-padded `CreateTime` (part of the hashed plaintext, so a
/// retry has the same one): keys then grow with time and each commit touches the right edge of the
/// unique index instead of one random index page per row, which cut SQLite's write volume
/// several-fold in the load benchmark.
pub fn dedup_key(header: &MessageHeader, plaintext: &[u8]) -> String {
    if header.is_app_message() {
        let agent = header.agent_id.as_deref().unwrap_or("");
        let msg_id = header.msg_id.as_deref().unwrap_or("");
        return format!("msg:{agent}:{msg_id}");
    }
    let created = header.create_time.unwrap_or(0).clamp(0, 9_999_999_999);
    format!(
        "ev:{created:010}:{}",
        hex::encode(Sha256::digest(plaintext))
    )
}

/// Whether a row was new or a repeat of one already stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// The first time we saw this event.
    New,
    /// WeCom (or someone replaying) sent it before; nothing was added.
    Duplicate,
}

/// Stores a batch atomically with one commit. Returns, per row, whether it was new. Two rows of
/// the batch with the same key count once. The backends differ in how they learn which rows were
/// new (see `insert_sqlite`, `insert_postgres`).
pub async fn insert_batch(db: &Db, rows: &[&NewInboxRow]) -> Result<Vec<Stored>, StoreError> {
    let mut seen = HashSet::with_capacity(rows.len());
    let first: Vec<bool> = rows
        .iter()
        .map(|r| seen.insert((r.corp_id.as_str(), r.dedup_key.as_str())))
        .collect();
    let unique: Vec<&NewInboxRow> = rows
        .iter()
        .zip(&first)
        .filter_map(|(r, &is_first)| is_first.then_some(*r))
        .collect();
    if unique.is_empty() {
        return Ok(Vec::new());
    }
    let unique_new = match db {
        Db::Sqlite(pool) => insert_sqlite(pool, &unique).await?,
        Db::Postgres(pool) => insert_postgres(pool, &unique).await?,
    };
    let mut unique_new = unique_new.into_iter();
    Ok(first
        .iter()
        .map(
            |&is_first| match is_first.then(|| unique_new.next()).flatten() {
                Some(true) => Stored::New,
                _ => Stored::Duplicate,
            },
        )
        .collect())
}

const INSERT_HEAD: &str = "INSERT INTO inbox (corp_id, app, agent_id, dedup_key, msg_type, event, \
                           change_type, create_time, received_at_ms, body) ";
const INSERT_TAIL: &str = " ON CONFLICT (corp_id, dedup_key) DO NOTHING";

/// SQLite: one multi-row `INSERT` in one transaction. When fewer rows were inserted than sent,
/// roll back and insert them one by one (still one commit) to learn which ones repeat.
/// `RETURNING` would say it directly, but the driver hands each returned row across threads,
/// which costs more than the rare second pass.
async fn insert_sqlite(
    pool: &sqlx::SqlitePool,
    rows: &[&NewInboxRow],
) -> Result<Vec<bool>, StoreError> {
    let _turn = crate::platform::db::sqlite_write_turn(pool).await?;
    let mut tx = pool.begin().await?;
    let inserted = sqlite_insert(rows)
        .build()
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if usize::try_from(inserted).is_ok_and(|n| n == rows.len()) {
        tx.commit().await?;
        return Ok(vec![true; rows.len()]);
    }
    tx.rollback().await?;
    let mut tx = pool.begin().await?;
    let mut flags = Vec::with_capacity(rows.len());
    for row in rows {
        flags.push(
            sqlite_insert(&[row])
                .build()
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1,
        );
    }
    tx.commit().await?;
    Ok(flags)
}

fn sqlite_insert(rows: &[&NewInboxRow]) -> QueryBuilder<sqlx::Sqlite> {
    let mut qb = QueryBuilder::new(INSERT_HEAD);
    qb.push_values(rows.iter(), |mut b, r| {
        b.push_bind(r.corp_id.clone())
            .push_bind(r.app.clone())
            .push_bind(r.agent_id.clone())
            .push_bind(r.dedup_key.clone())
            .push_bind(r.msg_type.clone())
            .push_bind(r.event.clone())
            .push_bind(r.change_type.clone())
            .push_bind(r.create_time)
            .push_bind(r.received_at_ms)
            .push_bind(r.body.clone());
    });
    qb.push(INSERT_TAIL);
    qb
}

/// PostgreSQL: one statement whatever the batch size (arrays through `UNNEST`, so it is prepared
/// once), autocommitted, with `RETURNING` naming the rows that were new: one round trip per batch.
async fn insert_postgres(
    pool: &sqlx::PgPool,
    rows: &[&NewInboxRow],
) -> Result<Vec<bool>, StoreError> {
    const SQL: &str = "INSERT INTO inbox (corp_id, app, agent_id, dedup_key, msg_type, event, \
        change_type, create_time, received_at_ms, body) \
        SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
        $6::text[], $7::text[], $8::bigint[], $9::bigint[], $10::text[]) \
        ON CONFLICT (corp_id, dedup_key) DO NOTHING RETURNING corp_id, dedup_key";
    fn column<T>(rows: &[&NewInboxRow], f: impl Fn(&NewInboxRow) -> T) -> Vec<T> {
        rows.iter().map(|r| f(r)).collect()
    }
    let inserted: Vec<(String, String)> = sqlx::query_as(SQL)
        .bind(column(rows, |r| r.corp_id.clone()))
        .bind(column(rows, |r| r.app.clone()))
        .bind(column(rows, |r| r.agent_id.clone()))
        .bind(column(rows, |r| r.dedup_key.clone()))
        .bind(column(rows, |r| r.msg_type.clone()))
        .bind(column(rows, |r| r.event.clone()))
        .bind(column(rows, |r| r.change_type.clone()))
        .bind(column(rows, |r| r.create_time))
        .bind(column(rows, |r| r.received_at_ms))
        .bind(column(rows, |r| r.body.clone()))
        .fetch_all(pool)
        .await?;
    let new: HashSet<(String, String)> = inserted.into_iter().collect();
    Ok(rows
        .iter()
        .map(|r| new.contains(&(r.corp_id.clone(), r.dedup_key.clone())))
        .collect())
}

/// Rows in the inbox, for one corp or all.
pub async fn count(db: &Db, corp_id: Option<&str>) -> Result<i64, StoreError> {
    const SQL: &str = "SELECT COUNT(*) FROM inbox WHERE ($1 IS NULL OR corp_id = $1)";
    let n = on_db!(db, |pool| sqlx::query_scalar(SQL)
        .bind(corp_id)
        .fetch_one(pool)
        .await)?;
    Ok(n)
}

/// Callbacks of `corp_id` received from the start of the hour of `since_ms` on, counted per hour
/// (epoch hour index) and state: what the console's overview draws.
pub async fn hourly(
    db: &Db,
    corp_id: &str,
    since_ms: i64,
) -> Result<Vec<(i64, String, i64)>, StoreError> {
    // Whole hours, in the expression `inbox_corp_hour` is keyed by: one index range read in group
    // order.
    const SQL: &str = "SELECT received_at_ms / 3600000 AS hour, state, COUNT(*) FROM inbox \
        WHERE corp_id = $1 AND received_at_ms / 3600000 >= $2 \
        GROUP BY received_at_ms / 3600000, state";
    let rows = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp_id)
        .bind(since_ms.div_euclid(3_600_000))
        .fetch_all(pool)
        .await)?;
    Ok(rows)
}

/// Deletes up to `limit` processed rows received before `before_ms` (pending rows and dead letters
/// stay); returns how many went. The retention task calls it until it returns less than `limit`.
pub async fn prune_done(db: &Db, before_ms: i64, limit: i64) -> Result<u64, StoreError> {
    const SQL: &str = "DELETE FROM inbox WHERE id IN (SELECT id FROM inbox WHERE state = 'done' \
        AND received_at_ms < $1 ORDER BY id LIMIT $2)";
    let done = on_db!(db, |pool| sqlx::query(SQL)
        .bind(before_ms)
        .bind(limit)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(done)
}

/// Rows not yet processed by a worker.
pub async fn count_pending(db: &Db) -> Result<i64, StoreError> {
    const SQL: &str = "SELECT COUNT(*) FROM inbox WHERE state = 'pending'";
    let n = on_db!(db, |pool| sqlx::query_scalar(SQL).fetch_one(pool).await)?;
    Ok(n)
}

/// One stored callback, as operators see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct InboxEntry {
    /// Row id.
    pub id: i64,
    /// Corp.
    pub corp_id: String,
    /// Callback configuration name.
    pub app: String,
    /// Agent id, when the callback carried one.
    pub agent_id: Option<String>,
    /// De-duplication key.
    pub dedup_key: String,
    /// `MsgType`.
    pub msg_type: String,
    /// `Event`.
    pub event: Option<String>,
    /// `ChangeType`.
    pub change_type: Option<String>,
    /// `CreateTime`, unix seconds.
    pub create_time: Option<i64>,
    /// Received, epoch ms.
    pub received_at_ms: i64,
    /// `pending`, later `done` / `dead`.
    pub state: String,
    /// Processing attempts so far.
    pub attempts: i32,
    /// The decrypted plaintext (only filled by [`get`]).
    pub body: Option<String>,
}

/// The newest `limit` rows, newest first.
pub async fn list(
    db: &Db,
    corp_id: Option<&str>,
    limit: i64,
) -> Result<Vec<InboxEntry>, StoreError> {
    const SQL: &str = "SELECT id, corp_id, app, agent_id, dedup_key, msg_type, event, change_type, \
                       create_time, received_at_ms, state, attempts, NULL AS body FROM inbox \
                       WHERE ($1 IS NULL OR corp_id = $1) ORDER BY id DESC LIMIT $2";
    let rows = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp_id)
        .bind(limit)
        .fetch_all(pool)
        .await)?;
    Ok(rows)
}

/// One row with its plaintext.
pub async fn get(db: &Db, id: i64) -> Result<InboxEntry, StoreError> {
    const SQL: &str = "SELECT id, corp_id, app, agent_id, dedup_key, msg_type, event, change_type, \
                       create_time, received_at_ms, state, attempts, body FROM inbox WHERE id = $1";
    let row = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(id)
        .fetch_one(pool)
        .await)?;
    Ok(row)
}

/// Whether a row with this key exists (for tests and the durability check).
pub async fn contains(db: &Db, corp_id: &str, dedup_key: &str) -> Result<bool, StoreError> {
    const SQL: &str = "SELECT COUNT(*) FROM inbox WHERE corp_id = $1 AND dedup_key = $2";
    let n: i64 = on_db!(db, |pool| sqlx::query_scalar(SQL)
        .bind(corp_id)
        .bind(dedup_key)
        .fetch_one(pool)
        .await)?;
    Ok(n > 0)
}

type Reply = oneshot::Sender<Result<Stored, WriteError>>;

/// A write that did not happen. Cheap to clone to every caller of a failed batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// The database is down or overloaded: answer 503, WeCom retries.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database refused the row.
    #[error("database refused the row: {0}")]
    Refused(String),
    /// The writer has shut down.
    #[error("inbox writer stopped")]
    Stopped,
}

impl From<StoreError> for WriteError {
    fn from(e: StoreError) -> Self {
        let detail =
            std::error::Error::source(&e).map_or_else(|| e.to_string(), ToString::to_string);
        if e.is_unavailable() {
            Self::Unavailable(detail)
        } else {
            Self::Refused(detail)
        }
    }
}

/// The group-commit writer. Cloning shares the one writer task.
#[derive(Debug, Clone)]
pub struct InboxWriter {
    tx: mpsc::Sender<(NewInboxRow, Reply)>,
    committed: Arc<Notify>,
}

impl InboxWriter {
    /// Starts the writer task. `max_batch` bounds the rows of one commit. The task ends when every
    /// clone of the writer is dropped, after committing what it was handed.
    pub fn spawn(db: Db, max_batch: usize) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(max_batch.max(1) * 4);
        let committed = Arc::new(Notify::new());
        let task = tokio::spawn(run_writer(db, rx, max_batch.max(1), Arc::clone(&committed)));
        (Self { tx, committed }, task)
    }

    /// Notified (`notify_one`) after each commit that stored at least one new row, so the inbox
    /// workers ([`crate::pipeline::worker::WorkerPool`]) wake without polling. A commit while nobody waits
    /// leaves a permit: the next wait returns at once.
    pub fn commits(&self) -> Arc<Notify> {
        Arc::clone(&self.committed)
    }

    /// Stores one row and returns once it is durable (committed), or with the reason it is not.
    pub async fn store(&self, row: NewInboxRow) -> Result<Stored, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((row, reply))
            .await
            .map_err(|_| WriteError::Stopped)?;
        answer.await.map_err(|_| WriteError::Stopped)?
    }
}

async fn run_writer(
    db: Db,
    mut rx: mpsc::Receiver<(NewInboxRow, Reply)>,
    max_batch: usize,
    committed: Arc<Notify>,
) {
    let mut batch: Vec<(NewInboxRow, Reply)> = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut batch, max_batch).await > 0 {
        // Let request tasks that are already runnable hand in their rows before this commit: a
        // larger batch costs the same fsync and rewrites fewer index pages per row.
        tokio::task::yield_now().await;
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        metrics::histogram!("scrm_inbox_batch_rows").record(batch.len() as f64);
        let rows: Vec<&NewInboxRow> = batch.iter().map(|(row, _)| row).collect();
        match insert_batch(&db, &rows).await {
            Ok(outcomes) => {
                if outcomes.contains(&Stored::New) {
                    committed.notify_one();
                }
                for ((_, reply), outcome) in batch.drain(..).zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) if e.is_unavailable() => {
                tracing::error!(error = %e, cause = ?std::error::Error::source(&e), rows = batch.len(), "inbox batch not stored");
                let err = WriteError::from(e);
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(err.clone()));
                }
            }
            Err(e) => {
                // One bad row must not fail its neighbours: store them one by one.
                tracing::warn!(error = %e, cause = ?std::error::Error::source(&e), rows = batch.len(), "inbox batch refused; retrying rows singly");
                for (row, reply) in batch.drain(..) {
                    let outcome = insert_batch(&db, &[&row])
                        .await
                        .map_err(WriteError::from)
                        .and_then(|o| o.first().copied().ok_or(WriteError::Stopped));
                    if matches!(outcome, Ok(Stored::New)) {
                        committed.notify_one();
                    }
                    let _ = reply.send(outcome);
                }
            }
        }
    }
}

/// A row a worker holds under a lease, as the handler sees it.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ClaimedEvent {
    /// Inbox row id.
    pub id: i64,
    /// The corp the callback URL belongs to.
    pub corp_id: String,
    /// The callback configuration's name.
    pub app: String,
    /// `AgentID`, when the callback carried one.
    pub agent_id: Option<String>,
    /// `MsgType`.
    pub msg_type: String,
    /// `Event`.
    pub event: Option<String>,
    /// `ChangeType`.
    pub change_type: Option<String>,
    /// `CreateTime`, unix seconds.
    pub create_time: Option<i64>,
    /// When we received it, epoch ms.
    pub received_at_ms: i64,
    /// The decrypted plaintext XML, exactly as WeCom sent it.
    pub body: String,
    /// Attempts so far, including this one (1 the first time).
    pub attempts: i32,
}

/// Without the body: it holds customer data, which stays out of logs.
impl fmt::Debug for ClaimedEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClaimedEvent")
            .field("id", &self.id)
            .field("corp_id", &self.corp_id)
            .field("app", &self.app)
            .field("agent_id", &self.agent_id)
            .field("msg_type", &self.msg_type)
            .field("event", &self.event)
            .field("change_type", &self.change_type)
            .field("create_time", &self.create_time)
            .field("received_at_ms", &self.received_at_ms)
            .field("body_len", &self.body.len())
            .field("attempts", &self.attempts)
            .finish()
    }
}

impl ClaimedEvent {
    /// `msg_type/event/change_type` without the empty parts, for logs.
    pub fn kind(&self) -> String {
        [
            Some(self.msg_type.as_str()),
            self.event.as_deref(),
            self.change_type.as_deref(),
        ]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("/")
    }
}

/// Claims up to `limit` rows that nobody holds, oldest (lowest id) first, for `lease` from
/// `now_ms`: each gets `lease_owner = owner`, `lease_until_ms = now_ms + lease` and one more
/// attempt. A row is claimable while `pending` and its lease (or retry backoff) has run out, so a
/// row whose worker died is taken over by anyone once its lease expires. Returns the claimed rows
/// by id.
///
/// `owner` is the lease token: unique per claim (the pool appends a sequence number to its
/// instance name), so a completion under an old token cannot finish a row claimed again since.
pub async fn claim(
    db: &Db,
    owner: &str,
    now_ms: i64,
    lease: Duration,
    limit: usize,
) -> Result<Vec<ClaimedEvent>, StoreError> {
    // PostgreSQL: many instances claim at once; SKIP LOCKED steps over rows another claim holds,
    // and a row finished meanwhile is re-checked against the WHERE clause before it is locked.
    const PG: &str = "WITH picked AS (SELECT id FROM inbox \
        WHERE state = 'pending' AND lease_until_ms <= $3 ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED) \
        UPDATE inbox SET lease_owner = $1, lease_until_ms = $2, attempts = inbox.attempts + 1 \
        FROM picked WHERE inbox.id = picked.id \
        RETURNING inbox.id, inbox.corp_id, inbox.app, inbox.agent_id, inbox.msg_type, inbox.event, \
        inbox.change_type, inbox.create_time, inbox.received_at_ms, inbox.body, inbox.attempts";
    // SQLite: one writer at a time; repeating the lease test outside the subquery stops two claims
    // from both winning a row.
    const LITE: &str = "UPDATE inbox SET lease_owner = $1, lease_until_ms = $2, attempts = attempts + 1 \
        WHERE id IN (SELECT id FROM inbox WHERE state = 'pending' AND lease_until_ms <= $3 \
        ORDER BY id LIMIT $4) AND state = 'pending' AND lease_until_ms <= $3 \
        RETURNING id, corp_id, app, agent_id, msg_type, event, change_type, create_time, \
        received_at_ms, body, attempts";
    if limit == 0 {
        return Ok(Vec::new());
    }
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let until = now_ms.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
    let sql = match db {
        Db::Postgres(_) => PG,
        Db::Sqlite(_) => LITE,
    };
    let _turn = db.write_turn().await?;
    let mut rows: Vec<ClaimedEvent> = on_db!(db, |pool| sqlx::query_as(sql)
        .bind(owner)
        .bind(until)
        .bind(now_ms)
        .bind(limit)
        .fetch_all(pool)
        .await)?;
    rows.sort_by_key(|r| r.id);
    Ok(rows)
}

/// Which rows [`replay`] puts back. Fields left `None` do not filter; at least one selector
/// should be set (the CLI insists, unless `--all`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayFilter {
    /// One row.
    pub id: Option<i64>,
    /// Received at or after (epoch ms).
    pub since_ms: Option<i64>,
    /// Received before (epoch ms).
    pub until_ms: Option<i64>,
    /// Matches `msg_type`, `event` or `change_type` (e.g. `event`, `change_external_contact`,
    /// `add_external_contact`).
    pub event_type: Option<String>,
    /// Only this corp.
    pub corp_id: Option<String>,
    /// Only dead letters. Otherwise done rows, dead letters and pending rows that no live lease
    /// holds (waiting for a retry) are all put back.
    pub dead_only: bool,
}

impl ReplayFilter {
    /// True when nothing but the corp narrows the selection (every row would match).
    pub fn selects_everything(&self) -> bool {
        self.id.is_none()
            && self.since_ms.is_none()
            && self.until_ms.is_none()
            && self.event_type.is_none()
            && !self.dead_only
    }
}

/// Puts matching rows back to `pending` with no attempts, no lease and no error, body untouched,
/// so workers process them again (handlers are idempotent: wecom-protocol §2.3). A row a live lease
/// holds is left alone, so replay never makes two workers run one row at once. Returns how many
/// rows were put back.
pub async fn replay(db: &Db, filter: &ReplayFilter, now_ms: i64) -> Result<u64, StoreError> {
    const SQL: &str = "UPDATE inbox SET state = 'pending', attempts = 0, lease_owner = NULL, \
        lease_until_ms = 0, last_error = NULL, dead_at_ms = NULL, processed_at_ms = NULL, \
        replayed_at_ms = $7 \
        WHERE ($1 IS NULL OR id = $1) \
        AND ($2 IS NULL OR received_at_ms >= $2) \
        AND ($3 IS NULL OR received_at_ms < $3) \
        AND ($4 IS NULL OR msg_type = $4 OR event = $4 OR change_type = $4) \
        AND ($5 IS NULL OR corp_id = $5) \
        AND (state = 'dead' OR (NOT $6 AND (state = 'done' OR (state = 'pending' \
             AND (lease_owner IS NULL OR lease_until_ms <= $7)))))";
    let n = on_db!(db, |pool| sqlx::query(SQL)
        .bind(filter.id)
        .bind(filter.since_ms)
        .bind(filter.until_ms)
        .bind(filter.event_type.as_deref())
        .bind(filter.corp_id.as_deref())
        .bind(filter.dead_only)
        .bind(now_ms)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_without_selectors_selects_everything() {
        let corp_only = ReplayFilter {
            corp_id: Some("ww1".to_owned()),
            ..ReplayFilter::default()
        };
        assert!(corp_only.selects_everything());
        let dead = ReplayFilter {
            dead_only: true,
            ..ReplayFilter::default()
        };
        assert!(!dead.selects_everything());
    }
}
