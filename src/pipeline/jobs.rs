//! Long-running, resumable jobs (full sync and reconciliation now; transfers and archive pulls
//! later). A job's state lives in the `job` table: a JSON checkpoint (`cursor`), progress counters
//! and a lease. The instance running a job renews the lease as it checkpoints; if it dies, the
//! lease expires and another instance (or a restart) resumes from the last checkpoint.

use serde::Serialize;

use crate::on_db;
use crate::platform::db::{Db, StoreError, now_ms};

/// A job row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Job {
    /// Id.
    pub id: i64,
    /// Corp.
    pub corp_id: String,
    /// `sync`, …
    pub kind: String,
    /// `queued`, `running`, `done`, `failed`.
    pub state: String,
    /// The job's JSON checkpoint (internal: names staff and chats, so never served).
    #[serde(skip)]
    pub cursor: String,
    /// Units done.
    pub progress_done: i64,
    /// Units known so far.
    pub progress_total: i64,
    /// JSON summary of the outcome (counts).
    pub summary: String,
    /// Why it failed.
    pub error: Option<String>,
    /// Who holds it.
    #[serde(skip)]
    pub lease_owner: Option<String>,
    /// Lease expiry, epoch ms.
    pub lease_until_ms: i64,
    /// Created, epoch ms.
    pub created_at_ms: i64,
    /// First started.
    pub started_at_ms: Option<i64>,
    /// Finished.
    pub finished_at_ms: Option<i64>,
}

const COLUMNS: &str = "id, corp_id, kind, state, cursor, progress_done, progress_total, summary, \
    error, lease_owner, lease_until_ms, created_at_ms, started_at_ms, finished_at_ms";

/// Queues a job and returns its id.
pub async fn create(db: &Db, corp_id: &str, kind: &str) -> Result<i64, StoreError> {
    const SQL: &str = "INSERT INTO job (corp_id, kind, created_at_ms, updated_at_ms) \
        VALUES ($1, $2, $3, $3) RETURNING id";
    let now = now_ms();
    let id = on_db!(db, |pool| sqlx::query_scalar(SQL)
        .bind(corp_id)
        .bind(kind)
        .bind(now)
        .fetch_one(pool)
        .await)?;
    Ok(id)
}

/// One job.
pub async fn get(db: &Db, id: i64) -> Result<Job, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM job WHERE id = $1");
    let job = on_db!(db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
        .bind(id)
        .fetch_one(pool)
        .await)?;
    Ok(job)
}

/// The newest jobs of a kind (all corps when `corp_id` is `None`), newest first.
pub async fn list(
    db: &Db,
    corp_id: Option<&str>,
    kind: &str,
    limit: i64,
) -> Result<Vec<Job>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM job WHERE ($1 IS NULL OR corp_id = $1) AND kind = $2 \
         ORDER BY id DESC LIMIT $3"
    );
    let rows = on_db!(db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
        .bind(corp_id)
        .bind(kind)
        .bind(limit)
        .fetch_all(pool)
        .await)?;
    Ok(rows)
}

/// An unfinished job of this corp and kind whose lease is free (queued, or running on an
/// instance that died): the one to resume.
pub async fn resumable(db: &Db, corp_id: &str, kind: &str) -> Result<Option<i64>, StoreError> {
    const SQL: &str = "SELECT id FROM job WHERE corp_id = $1 AND kind = $2 \
        AND state IN ('queued', 'running') AND lease_until_ms < $3 ORDER BY id LIMIT 1";
    let id = on_db!(db, |pool| sqlx::query_scalar(SQL)
        .bind(corp_id)
        .bind(kind)
        .bind(now_ms())
        .fetch_optional(pool)
        .await)?;
    Ok(id)
}

/// Whether an unfinished job of this corp and kind is held by a live lease (running elsewhere).
pub async fn running_elsewhere(
    db: &Db,
    corp_id: &str,
    kind: &str,
    owner: &str,
) -> Result<bool, StoreError> {
    const SQL: &str = "SELECT COUNT(*) FROM job WHERE corp_id = $1 AND kind = $2 \
        AND state = 'running' AND lease_until_ms >= $3 AND lease_owner <> $4";
    let n: i64 = on_db!(db, |pool| sqlx::query_scalar(SQL)
        .bind(corp_id)
        .bind(kind)
        .bind(now_ms())
        .bind(owner)
        .fetch_one(pool)
        .await)?;
    Ok(n > 0)
}

/// Takes the job's lease for `owner` (free or already ours). `false`: someone else holds it,
/// or it has finished.
pub async fn claim(db: &Db, id: i64, owner: &str, lease_ms: i64) -> Result<bool, StoreError> {
    const SQL: &str = "UPDATE job SET state = 'running', lease_owner = $2, lease_until_ms = $3, \
        started_at_ms = COALESCE(started_at_ms, $4), updated_at_ms = $4 \
        WHERE id = $1 AND state IN ('queued', 'running') \
        AND (lease_until_ms < $4 OR lease_owner = $2)";
    let now = now_ms();
    let n = on_db!(db, |pool| sqlx::query(SQL)
        .bind(id)
        .bind(owner)
        .bind(now + lease_ms)
        .bind(now)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// Saves a checkpoint and renews the lease. `false`: the lease was lost (another instance took
/// the job over): stop working on it.
pub async fn checkpoint(
    db: &Db,
    id: i64,
    owner: &str,
    lease_ms: i64,
    cursor: &str,
    done: i64,
    total: i64,
) -> Result<bool, StoreError> {
    const SQL: &str = "UPDATE job SET cursor = $3, progress_done = $4, progress_total = $5, \
        lease_until_ms = $6, updated_at_ms = $7 WHERE id = $1 AND lease_owner = $2 \
        AND state = 'running'";
    let now = now_ms();
    let n = on_db!(db, |pool| sqlx::query(SQL)
        .bind(id)
        .bind(owner)
        .bind(cursor)
        .bind(done)
        .bind(total)
        .bind(now + lease_ms)
        .bind(now)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// Ends the job: `done` with its summary, or `failed` with the reason.
pub async fn finish(
    db: &Db,
    id: i64,
    owner: &str,
    outcome: Result<&str, &str>,
) -> Result<(), StoreError> {
    const SQL: &str = "UPDATE job SET state = $3, summary = COALESCE($4, summary), error = $5, \
        lease_owner = NULL, lease_until_ms = 0, finished_at_ms = $6, updated_at_ms = $6 \
        WHERE id = $1 AND lease_owner = $2";
    let (state, summary, error) = match outcome {
        Ok(summary) => ("done", Some(summary), None),
        Err(reason) => ("failed", None, Some(reason)),
    };
    on_db!(db, |pool| sqlx::query(SQL)
        .bind(id)
        .bind(owner)
        .bind(state)
        .bind(summary)
        .bind(error)
        .bind(now_ms())
        .execute(pool)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// Lets go of a job without finishing it (shutdown): another instance may resume it at once.
pub async fn release(db: &Db, id: i64, owner: &str) -> Result<(), StoreError> {
    const SQL: &str = "UPDATE job SET lease_until_ms = 0, updated_at_ms = $3 \
        WHERE id = $1 AND lease_owner = $2";
    on_db!(db, |pool| sqlx::query(SQL)
        .bind(id)
        .bind(owner)
        .bind(now_ms())
        .execute(pool)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// When the newest finished job of this corp and kind finished, epoch ms.
pub async fn last_finished_ms(
    db: &Db,
    corp_id: &str,
    kind: &str,
) -> Result<Option<i64>, StoreError> {
    const SQL: &str = "SELECT MAX(finished_at_ms) FROM job WHERE corp_id = $1 AND kind = $2 \
        AND state = 'done'";
    let ms = on_db!(db, |pool| sqlx::query_scalar(SQL)
        .bind(corp_id)
        .bind(kind)
        .fetch_one(pool)
        .await)?;
    Ok(ms)
}
