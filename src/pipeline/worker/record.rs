//! Outcomes recorded in batches (group commit): every attempt of a pool hands its outcome to one
//! [`Recorder`] and waits until the transaction holding it has committed. Whatever finished while
//! the previous commit was on its way to disk goes into the next one, so a backlog of short events
//! costs one commit (SQLite: one fsync; PostgreSQL: a few round trips) per batch of outcomes, not
//! one per event. The `done` outcomes of a batch are one statement per claim they came from;
//! retries and dead letters (rare) one statement each, in the same transaction.
//!
//! Nothing moves in the guarantees: a caller hears `applied` only once its row's new state is
//! committed, every write still names the lease token (a row taken over or replayed meanwhile is
//! left alone), and a batch the database refuses is recorded again row by row, each caller getting
//! its own answer.

use tokio::sync::{mpsc, oneshot};

use super::store::{LeaseTable, truncate_reason};
use crate::on_tx;
use crate::platform::db::{Db, StoreError, Tx};

/// Outcomes of one commit at most.
const MAX_BATCH: usize = 1024;

/// How an attempt ends, as written to its row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Finish {
    /// Processed.
    Done,
    /// Released for another attempt from `retry_at_ms` on.
    Retry {
        /// Not before.
        retry_at_ms: i64,
        /// Why, stored as `last_error`.
        reason: String,
    },
    /// Released like a retry without counting the attempt (a rate limit held it back).
    Defer {
        /// Not before.
        retry_at_ms: i64,
        /// Why.
        reason: String,
    },
    /// A dead letter.
    Dead {
        /// Why.
        reason: String,
    },
}

/// One attempt's outcome for the row `id` claimed under `owner`, at `at_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ending {
    pub id: i64,
    pub owner: String,
    pub at_ms: i64,
    pub finish: Finish,
}

type Reply = oneshot::Sender<Result<bool, StoreError>>;

/// The handle attempts record through. Cloning shares the one recording task, which ends once
/// every clone is dropped and what it was handed is recorded.
#[derive(Debug, Clone)]
pub(crate) struct Recorder {
    tx: mpsc::Sender<(Ending, Reply)>,
}

impl Recorder {
    /// Starts the task recording outcomes into `table` of `db`.
    pub(crate) fn spawn(db: Db, table: LeaseTable) -> Self {
        let (tx, rx) = mpsc::channel(MAX_BATCH);
        tokio::spawn(run(db, table, rx));
        Self { tx }
    }

    /// Records `ending` and returns once it is committed: true when the row was still held under
    /// its token (the outcome applied), false when the lease was gone and nothing was written.
    pub(crate) async fn record(&self, ending: Ending) -> Result<bool, StoreError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Other(sqlx::Error::PoolClosed);
        self.tx.send((ending, reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run(db: Db, table: LeaseTable, mut rx: mpsc::Receiver<(Ending, Reply)>) {
    let mut batch: Vec<(Ending, Reply)> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // Attempts finishing right now join this commit rather than wait for the next.
        tokio::task::yield_now().await;
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        metrics::histogram!("scrm_worker_outcome_batch_rows", "table" => table.table)
            .record(batch.len() as f64);
        let endings: Vec<&Ending> = batch.iter().map(|(ending, _)| ending).collect();
        match table.finish_all(&db, &endings).await {
            Ok(applied) => {
                for ((_, reply), applied) in batch.drain(..).zip(applied) {
                    let _ = reply.send(Ok(applied));
                }
            }
            Err(e) => {
                tracing::warn!(table = table.table, error = %e, cause = ?std::error::Error::source(&e), rows = batch.len(), "outcome batch not recorded; recording rows singly");
                for (ending, reply) in batch.drain(..) {
                    let one = table
                        .finish_all(&db, &[&ending])
                        .await
                        .map(|applied| applied.first().copied().unwrap_or(false));
                    let _ = reply.send(one);
                }
            }
        }
    }
}

impl LeaseTable {
    /// Writes `endings` in one transaction; per ending, whether its row was still held under its
    /// token (and so changed). The `done` ones are one statement; when it changes fewer rows than
    /// it names (a lease lost meanwhile: rare), the transaction starts over row by row to learn
    /// which.
    pub(crate) async fn finish_all(
        self,
        db: &Db,
        endings: &[&Ending],
    ) -> Result<Vec<bool>, StoreError> {
        let done: Vec<&Ending> = endings
            .iter()
            .copied()
            .filter(|e| e.finish == Finish::Done)
            .collect();
        if done.len() > 1 {
            let mut tx = db.begin().await?;
            let changed = self.done_many(&mut tx, &done).await?;
            if changed == done.len() {
                let mut applied = Vec::with_capacity(endings.len());
                for ending in endings {
                    applied.push(match ending.finish {
                        Finish::Done => true,
                        _ => self.finish_one(&mut tx, ending).await?,
                    });
                }
                tx.commit().await?;
                return Ok(applied);
            }
            tx.rollback().await?;
        }
        let mut tx = db.begin().await?;
        let mut applied = Vec::with_capacity(endings.len());
        for ending in endings {
            applied.push(self.finish_one(&mut tx, ending).await?);
        }
        tx.commit().await?;
        Ok(applied)
    }

    /// Marks the rows of `done` done, one statement per lease token (a batch holds the rows of a
    /// few claims), at the batch's latest time; returns how many rows changed. The ids are a list
    /// the database looks up by key: joining the table to a list of (id, token) pairs let SQLite
    /// scan the pending rows once per pair.
    async fn done_many(self, tx: &mut Tx, done: &[&Ending]) -> Result<usize, StoreError> {
        let mut by_owner: std::collections::BTreeMap<&str, Vec<i64>> =
            std::collections::BTreeMap::new();
        for e in done {
            by_owner.entry(e.owner.as_str()).or_default().push(e.id);
        }
        let at_ms = done.iter().map(|e| e.at_ms).max().unwrap_or(0);
        let ids = match tx {
            Tx::Sqlite(..) => "(SELECT value FROM json_each($3))",
            Tx::Postgres(_) => "(SELECT UNNEST($3::bigint[]))",
        };
        let sql = format!(
            "UPDATE {} SET state = 'done', {} = $2, lease_owner = NULL, lease_until_ms = 0 \
             WHERE lease_owner = $1 AND state = 'pending' AND id IN {ids}",
            self.table, self.done_at
        );
        let mut changed = 0;
        for (owner, ids) in by_owner {
            let n = match tx {
                Tx::Sqlite(t, _) => {
                    let list = serde_json::to_string(&ids).unwrap_or_else(|_| "[]".to_owned());
                    sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                        .bind(owner)
                        .bind(at_ms)
                        .bind(list)
                        .execute(&mut **t)
                        .await?
                        .rows_affected()
                }
                Tx::Postgres(t) => sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                    .bind(owner)
                    .bind(at_ms)
                    .bind(ids)
                    .execute(&mut **t)
                    .await?
                    .rows_affected(),
            };
            changed += usize::try_from(n).unwrap_or(usize::MAX);
        }
        Ok(changed)
    }

    /// Writes one ending inside `tx`; whether its row was still held under its token.
    async fn finish_one(self, tx: &mut Tx, e: &Ending) -> Result<bool, StoreError> {
        let (set, at_ms, reason) = match &e.finish {
            Finish::Done => (
                format!(
                    "state = 'done', {} = $3, lease_owner = NULL, lease_until_ms = 0, \
                     last_error = COALESCE($4, last_error)",
                    self.done_at
                ),
                e.at_ms,
                None,
            ),
            Finish::Retry {
                retry_at_ms,
                reason,
            } => (
                "lease_owner = NULL, lease_until_ms = $3, last_error = $4".to_owned(),
                *retry_at_ms,
                Some(reason),
            ),
            Finish::Defer {
                retry_at_ms,
                reason,
            } => (
                "lease_owner = NULL, lease_until_ms = $3, last_error = $4, \
                 attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END"
                    .to_owned(),
                *retry_at_ms,
                Some(reason),
            ),
            Finish::Dead { reason } => (
                "state = 'dead', dead_at_ms = $3, last_error = $4, lease_owner = NULL, \
                 lease_until_ms = 0"
                    .to_owned(),
                e.at_ms,
                Some(reason),
            ),
        };
        let sql = format!(
            "UPDATE {} SET {set} WHERE id = $1 AND lease_owner = $2 AND state = 'pending'",
            self.table
        );
        let n = on_tx!(tx, |conn| sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(e.id)
            .bind(&e.owner)
            .bind(at_ms)
            .bind(reason.map(|r| truncate_reason(r)))
            .execute(&mut *conn)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }
}
