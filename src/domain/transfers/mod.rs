//! Reassigning a member's customers and group chats (离职继承 / 在职继承).
//!
//! A [`plan`] turns "from zhangsan to lisi and wangwu, evenly" into a `transfer_job` with one
//! `transfer_item` per customer and group chat: its taker, and the flags that predict what WeCom
//! will refuse (taker = handover, an on-job customer or chat already moved twice in 90 days, a
//! taker who hit their customer limit lately). [`start`] lets the engine ([`engine`]) carry it
//! out: customers in calls of at most 100 per taker, group chats the same within the daily budget
//! of 300 per old owner (the rest is `scheduled` for the next day), every call through the
//! outbox. Each item then moves to a final state: `done`, `refused` (the customer said no) or
//! `failed` with WeCom's errcode and a reason; [`retry_failed`] re-plans only the failed ones.
//!
//! The job's whole state is in the database: a process killed mid-job resumes where it was, and
//! an outbox call repeated after a lost answer first asks WeCom what the earlier one did, so no
//! customer or chat is sent twice. Who planned, started and retried a job is in the append-only
//! `audit_log`.

mod plan;

use serde::{Deserialize, Serialize};

pub use plan::{PlanError, PlanRequest, Planned, RouteRule, Strategy, plan};

use wecom_sdk::{CorpId, ExternalUserId, UserId};

use crate::platform::db::{Db, StoreError, Tx};
use crate::{on_db, on_tx};

static WAKE: std::sync::LazyLock<tokio::sync::Notify> =
    std::sync::LazyLock::new(tokio::sync::Notify::new);

/// Tells the reassignment engine of this process that a job was started or changed.
pub fn wake() {
    WAKE.notify_one();
}

/// Resolves at the next [`wake`] (or at once if one came while nobody waited).
pub async fn woken() {
    WAKE.notified().await;
}

/// Customers or chats per WeCom call.
pub const BATCH: usize = wecom_sdk::api::MAX_TRANSFER_BATCH;

pub use crate::platform::wecom::TransferMode as Mode;

/// Item states that are not final.
pub const OPEN_STATES: [&str; 4] = ["planned", "scheduled", "sent", "waiting"];
/// Every item state, in the order the status table shows them.
pub const ITEM_STATES: [&str; 7] = [
    "planned",
    "scheduled",
    "sent",
    "waiting",
    "done",
    "refused",
    "failed",
];

/// A job row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct TransferJob {
    /// Id.
    pub id: i64,
    /// Corp.
    #[sqlx(try_from = "String")]
    pub corp_id: CorpId,
    /// `resigned` or `on_job`.
    pub mode: String,
    /// The member handing over.
    #[sqlx(try_from = "String")]
    pub handover_user_id: UserId,
    /// The takers, as a JSON array.
    pub takers: String,
    /// `even`, `workload`, `one` (one taker).
    pub strategy: String,
    /// The admin's note for the new owners (added to each customer's record at takeover).
    pub handover_note: String,
    /// On-job only: what WeCom tells the customer (≤ 200 characters).
    pub success_msg: Option<String>,
    /// `planned`, `running`, `done`, `cancelled`.
    pub state: String,
    /// What changed on the way (e.g. switched to on-job after 40097), for people.
    pub notice: String,
    /// Who planned it.
    pub created_by: String,
    /// Planned, epoch ms.
    pub created_at_ms: i64,
    /// Who started it.
    pub started_by: Option<String>,
    /// Started, epoch ms.
    pub started_at_ms: Option<i64>,
    /// Every item final, epoch ms.
    pub finished_at_ms: Option<i64>,
}

impl TransferJob {
    /// The mode (a stored value we wrote).
    pub fn mode(&self) -> Mode {
        Mode::parse(&self.mode).unwrap_or(Mode::OnJob)
    }

    /// The takers.
    pub fn taker_list(&self) -> Vec<String> {
        serde_json::from_str(&self.takers).unwrap_or_default()
    }
}

const JOB_COLUMNS: &str = "id, corp_id, mode, handover_user_id, takers, strategy, handover_note, \
    success_msg, state, notice, created_by, created_at_ms, started_by, started_at_ms, finished_at_ms";

/// An item row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct TransferItem {
    /// Id.
    pub id: i64,
    /// The job.
    pub job_id: i64,
    /// `customer` or `group_chat`.
    pub kind: String,
    /// The external_userid or chat_id.
    pub target_id: String,
    /// The member handing over.
    #[sqlx(try_from = "String")]
    pub handover_user_id: UserId,
    /// The taker.
    #[sqlx(try_from = "String")]
    pub takeover_user_id: UserId,
    /// `resigned` or `on_job`.
    pub mode: String,
    /// See [`ITEM_STATES`].
    pub state: String,
    /// What the preview predicted, as a JSON array of names.
    pub flags: String,
    /// WeCom's errcode, when it refused.
    pub errcode: Option<i64>,
    /// Why it failed (or was refused), for people.
    pub reason: Option<String>,
    /// The outbox call carrying it.
    pub outbox_id: Option<i64>,
    /// `scheduled`: not before this, epoch ms.
    pub not_before_ms: i64,
    /// When it was handed to the outbox.
    pub sent_at_ms: Option<i64>,
    /// Waiting: WeCom's automatic takeover time; done: when it happened.
    pub takeover_at_ms: Option<i64>,
    /// Updated, epoch ms.
    pub updated_at_ms: i64,
}

const ITEM_COLUMNS: &str = "id, job_id, kind, target_id, handover_user_id, takeover_user_id, \
    mode, state, flags, errcode, reason, outbox_id, not_before_ms, sent_at_ms, takeover_at_ms, \
    updated_at_ms";

/// One job.
pub async fn get_job(db: &Db, corp_id: &str, id: i64) -> Result<TransferJob, StoreError> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM transfer_job WHERE id = $1 AND corp_id = $2");
    let job = on_db!(db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
        .bind(id)
        .bind(corp_id)
        .fetch_optional(pool)
        .await)?;
    job.ok_or(StoreError::NotFound)
}

/// One job, whatever its corp (the engine and the CLI).
pub async fn job_by_id(db: &Db, id: i64) -> Result<TransferJob, StoreError> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM transfer_job WHERE id = $1");
    let job = on_db!(db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
        .bind(id)
        .fetch_optional(pool)
        .await)?;
    job.ok_or(StoreError::NotFound)
}

/// How many of a corp's reassignments are running now (the console's overview).
pub async fn running_count(db: &Db, corp_id: &CorpId) -> Result<i64, StoreError> {
    const SQL: &str = "SELECT COUNT(*) FROM transfer_job WHERE corp_id = $1 AND state = 'running'";
    let n = on_db!(db, |pool| sqlx::query_scalar(SQL)
        .bind(corp_id.as_str())
        .fetch_one(pool)
        .await)?;
    Ok(n)
}

/// The newest jobs of a corp (of one handover member, when given).
pub async fn list_jobs(
    db: &Db,
    corp_id: &CorpId,
    handover: Option<&str>,
    limit: i64,
) -> Result<Vec<TransferJob>, StoreError> {
    let corp_id = corp_id.as_str();
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM transfer_job WHERE corp_id = $1 \
         AND ($2 IS NULL OR handover_user_id = $2) ORDER BY id DESC LIMIT $3"
    );
    let jobs = on_db!(db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
        .bind(corp_id)
        .bind(handover)
        .bind(limit.clamp(1, 500))
        .fetch_all(pool)
        .await)?;
    Ok(jobs)
}

/// Which items [`items`] shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ItemFilter {
    /// Only this state.
    pub state: Option<String>,
    /// Only `customer` or `group_chat`.
    pub kind: Option<String>,
    /// Only this taker.
    pub takeover_user_id: Option<String>,
    /// Paging: ids above this.
    pub after_id: Option<i64>,
    /// At most this many (1–5000, default 500).
    pub limit: Option<i64>,
}

/// A job's items, by id.
pub async fn items(db: &Db, job_id: i64, f: &ItemFilter) -> Result<Vec<TransferItem>, StoreError> {
    let sql = format!(
        "SELECT {ITEM_COLUMNS} FROM transfer_item WHERE job_id = $1 AND ($2 IS NULL OR state = $2) \
         AND ($3 IS NULL OR kind = $3) AND ($4 IS NULL OR takeover_user_id = $4) \
         AND id > $5 ORDER BY id LIMIT $6"
    );
    let rows = on_db!(db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
        .bind(job_id)
        .bind(f.state.as_deref())
        .bind(f.kind.as_deref())
        .bind(f.takeover_user_id.as_deref())
        .bind(f.after_id.unwrap_or(0))
        .bind(f.limit.unwrap_or(500).clamp(1, 5000))
        .fetch_all(pool)
        .await)?;
    Ok(rows)
}

/// How many items of a job are in each (kind, state, taker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Count {
    /// `customer` or `group_chat`.
    pub kind: String,
    /// The state.
    pub state: String,
    /// The taker.
    pub takeover_user_id: String,
    /// How many.
    pub n: i64,
}

/// Counts of a job's items by kind, state and taker.
pub async fn counts(db: &Db, job_id: i64) -> Result<Vec<Count>, StoreError> {
    const SQL: &str = "SELECT kind, state, takeover_user_id, COUNT(*) AS n FROM transfer_item \
        WHERE job_id = $1 GROUP BY kind, state, takeover_user_id ORDER BY kind, takeover_user_id, state";
    let rows = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(job_id)
        .fetch_all(pool)
        .await)?;
    Ok(rows)
}

/// A job's progress: how many items are in each state, per kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// Customers by state.
    pub customers: std::collections::BTreeMap<String, i64>,
    /// Group chats by state.
    pub group_chats: std::collections::BTreeMap<String, i64>,
}

impl Progress {
    /// From [`counts`].
    pub fn of(counts: &[Count]) -> Self {
        let mut p = Self::default();
        for c in counts {
            let map = if c.kind == "customer" {
                &mut p.customers
            } else {
                &mut p.group_chats
            };
            *map.entry(c.state.clone()).or_default() += c.n;
        }
        p
    }

    /// All items.
    pub fn total(&self) -> i64 {
        self.customers
            .values()
            .chain(self.group_chats.values())
            .sum()
    }

    /// Items in a final state.
    pub fn finished(&self) -> i64 {
        self.customers
            .iter()
            .chain(&self.group_chats)
            .filter(|(s, _)| !OPEN_STATES.contains(&s.as_str()))
            .map(|(_, n)| n)
            .sum()
    }

    /// Items that still need work from us now (not waiting on WeCom's 24 h or the next day).
    pub fn in_flight(&self) -> i64 {
        self.customers
            .iter()
            .chain(&self.group_chats)
            .filter(|(s, _)| matches!(s.as_str(), "planned" | "sent"))
            .map(|(_, n)| n)
            .sum()
    }
}

/// Why a job cannot be started or retried.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A request that does not fit the job's data (422).
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A step the job's state does not allow (409).
    #[error("{0}")]
    Conflict(String),
}

impl From<sqlx::Error> for JobError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

/// Starts a planned job (`running`): the engine sends it. Items whose refusal the preview
/// predicted fail at once, without a call. Starting a running or finished job changes nothing.
/// Returns the job as it is now.
pub async fn start(
    db: &Db,
    corp_id: &str,
    id: i64,
    actor: &str,
    now_ms: i64,
) -> Result<TransferJob, JobError> {
    const START: &str = "UPDATE transfer_job SET state = 'running', started_by = $3, \
        started_at_ms = $4, updated_at_ms = $4 WHERE id = $1 AND corp_id = $2 AND state = 'planned'";
    let job = get_job(db, corp_id, id).await?;
    if job.state == "cancelled" {
        return Err(JobError::Conflict(
            "任务已取消，请重新计划 / the job was cancelled: plan again".to_owned(),
        ));
    }
    let mut tx = db.begin().await?;
    let n = on_tx!(&mut tx, |conn| sqlx::query(START)
        .bind(id)
        .bind(corp_id)
        .bind(actor)
        .bind(now_ms)
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected()))?;
    if n == 1 {
        fail_predicted(&mut tx, id, now_ms).await?;
        let progress = Progress::of(&counts_tx(&mut tx, id).await?);
        crate::auth::audit(
            &mut tx,
            corp_id,
            actor,
            "transfer.run",
            &format!("transfer_job:{id}"),
            &serde_json::json!({"handover": job.handover_user_id, "mode": job.mode, "progress": progress}),
            now_ms,
        )
        .await?;
    }
    tx.commit().await?;
    wake();
    Ok(get_job(db, corp_id, id).await?)
}

/// Planned items whose flags say WeCom will refuse them fail now, with the errcode it would give.
async fn fail_predicted(tx: &mut Tx, job_id: i64, now_ms: i64) -> Result<(), StoreError> {
    const SQL: &str = "UPDATE transfer_item SET state = 'failed', errcode = $2, reason = $3, \
        updated_at_ms = $4 WHERE job_id = $1 AND state = 'planned' AND flags LIKE $5";
    for (flag, errcode, reason) in [
        (
            "taker_is_handover",
            40130,
            "接替成员与原跟进成员相同（40130），未发送 / the taker is the handover member: not sent",
        ),
        (
            "transferred_twice_90d",
            40128,
            "该客户 90 天内已被在职继承两次（40128），未发送 / moved twice in 90 days: not sent",
        ),
        (
            "moved_twice_90d",
            40128,
            "该群 90 天内已被在职继承两次（40128），未发送 / moved twice in 90 days: not sent",
        ),
    ] {
        on_tx!(tx, |conn| sqlx::query(SQL)
            .bind(job_id)
            .bind(errcode)
            .bind(reason)
            .bind(now_ms)
            .bind(format!("%\"{flag}\"%"))
            .execute(&mut *conn)
            .await
            .map(|_| ()))?;
    }
    Ok(())
}

async fn counts_tx(tx: &mut Tx, job_id: i64) -> Result<Vec<Count>, StoreError> {
    const SQL: &str = "SELECT kind, state, takeover_user_id, COUNT(*) AS n FROM transfer_item \
        WHERE job_id = $1 GROUP BY kind, state, takeover_user_id";
    let rows = on_tx!(tx, |conn| sqlx::query_as(SQL)
        .bind(job_id)
        .fetch_all(&mut *conn)
        .await)?;
    Ok(rows)
}

/// Cancels a planned job (a started one cannot be taken back: WeCom already has its calls).
pub async fn cancel(
    db: &Db,
    corp_id: &str,
    id: i64,
    actor: &str,
    now_ms: i64,
) -> Result<(), JobError> {
    const SQL: &str = "UPDATE transfer_job SET state = 'cancelled', notice = $3, \
        finished_at_ms = $4, updated_at_ms = $4 WHERE id = $1 AND corp_id = $2 AND state = 'planned'";
    let mut tx = db.begin().await?;
    let n = on_tx!(&mut tx, |conn| sqlx::query(SQL)
        .bind(id)
        .bind(corp_id)
        .bind("管理员取消 / cancelled by an admin")
        .bind(now_ms)
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected()))?;
    if n == 0 {
        // The connection goes back before the job is read through the pool.
        tx.rollback().await?;
        let job = get_job(db, corp_id, id).await?;
        return Err(JobError::Conflict(format!(
            "任务状态为 {}，只有未执行的计划可以取消 / only a planned job can be cancelled",
            job.state
        )));
    }
    crate::auth::audit(
        &mut tx,
        corp_id,
        actor,
        "transfer.cancel",
        &format!("transfer_job:{id}"),
        &serde_json::json!({}),
        now_ms,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Puts a job's failed items back to `planned` (to `takeover`, when given, instead of their
/// taker) and the job back to `running`. Refused items stay refused: the customer decided.
/// Returns how many items were re-planned.
pub async fn retry_failed(
    db: &Db,
    corp: &CorpId,
    id: i64,
    takeover: Option<&str>,
    actor: &str,
    now_ms: i64,
) -> Result<u64, JobError> {
    const REPLAN: &str = "UPDATE transfer_item SET state = 'planned', takeover_user_id = \
        COALESCE($2, takeover_user_id), errcode = NULL, reason = NULL, outbox_id = NULL, \
        not_before_ms = 0, sent_at_ms = NULL, next_poll_ms = NULL, flags = $3, updated_at_ms = $4 \
        WHERE job_id = $1 AND state = 'failed'";
    const RUN: &str = "UPDATE transfer_job SET state = 'running', finished_at_ms = NULL, \
        updated_at_ms = $2 WHERE id = $1";
    let corp_id = corp.as_str();
    let job = get_job(db, corp_id, id).await?;
    if job.state == "planned" || job.state == "cancelled" {
        return Err(JobError::Conflict(format!(
            "任务状态为 {}，只有已开始的任务可以重试 / only a started job can be retried",
            job.state
        )));
    }
    if let Some(taker) = takeover {
        let taker = UserId::try_from(taker).map_err(|e| JobError::Invalid {
            field: "takeover_user_id",
            reason: e.to_string(),
        })?;
        plan::check_taker(db, corp, &taker)
            .await
            .map_err(|e| match e {
                PlanError::Store(s) => JobError::Store(s),
                PlanError::Invalid { reason, .. } => JobError::Invalid {
                    field: "takeover_user_id",
                    reason,
                },
            })?;
    }
    let mut tx = db.begin().await?;
    let n = on_tx!(&mut tx, |conn| sqlx::query(REPLAN)
        .bind(id)
        .bind(takeover)
        .bind("[]")
        .bind(now_ms)
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected()))?;
    if n > 0 {
        on_tx!(&mut tx, |conn| sqlx::query(RUN)
            .bind(id)
            .bind(now_ms)
            .execute(&mut *conn)
            .await
            .map(|_| ()))?;
    }
    crate::auth::audit(
        &mut tx,
        corp_id,
        actor,
        "transfer.retry",
        &format!("transfer_job:{id}"),
        &serde_json::json!({"items": n, "takeover": takeover}),
        now_ms,
    )
    .await?;
    tx.commit().await?;
    wake();
    Ok(n)
}

/// A value bound into [`update_items`]'s statement.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Val<'a> {
    /// An integer or NULL.
    Int(Option<i64>),
    /// A text or NULL.
    Text(Option<&'a str>),
}

/// WeCom says a job's mode is wrong: the job switches to `to` (once: only while it has no notice,
/// which becomes `notice`) and its open items follow, inside the caller's transaction.
pub async fn switch_mode_in(
    tx: &mut Tx,
    job_id: i64,
    to: Mode,
    notice: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    const JOB: &str = "UPDATE transfer_job SET mode = $2, notice = $3, updated_at_ms = $4 \
        WHERE id = $1 AND notice = ''";
    const OPEN: &str = "UPDATE transfer_item SET mode = $2, updated_at_ms = $3 \
        WHERE job_id = $1 AND state IN ('planned', 'scheduled')";
    on_tx!(tx, |conn| sqlx::query(JOB)
        .bind(job_id)
        .bind(to.as_str())
        .bind(notice)
        .bind(now_ms)
        .execute(&mut *conn)
        .await
        .map(|_| ()))?;
    on_tx!(tx, |conn| sqlx::query(OPEN)
        .bind(job_id)
        .bind(to.as_str())
        .bind(now_ms)
        .execute(&mut *conn)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// One customer WeCom holds for reassignment (`get_unassigned_list`).
#[derive(Debug, Clone, Copy)]
pub struct Unassigned<'a> {
    /// The departed member.
    pub handover_user_id: &'a str,
    /// The customer.
    pub external_user_id: &'a str,
    /// When the member left, when WeCom says.
    pub dimission_at_ms: Option<i64>,
}

/// Replaces our copy of WeCom's unassigned list for a corp, in one transaction.
pub async fn replace_unassigned(
    db: &Db,
    corp_id: &str,
    listed: &[Unassigned<'_>],
    now_ms: i64,
) -> Result<(), StoreError> {
    const CLEAR: &str = "DELETE FROM unassigned_customer WHERE corp_id = $1";
    const INSERT: &str = "INSERT INTO unassigned_customer (corp_id, handover_user_id, \
        external_user_id, dimission_at_ms, listed_at_ms) VALUES ($1, $2, $3, $4, $5) \
        ON CONFLICT (corp_id, handover_user_id, external_user_id) DO NOTHING";
    let mut tx = db.begin().await?;
    on_tx!(&mut tx, |conn| sqlx::query(CLEAR)
        .bind(corp_id)
        .execute(&mut *conn)
        .await
        .map(|_| ()))?;
    for u in listed {
        on_tx!(&mut tx, |conn| sqlx::query(INSERT)
            .bind(corp_id)
            .bind(u.handover_user_id)
            .bind(u.external_user_id)
            .bind(u.dimission_at_ms)
            .bind(now_ms)
            .execute(&mut *conn)
            .await
            .map(|_| ()))?;
    }
    tx.commit().await?;
    Ok(())
}

/// Items whose outbox call became a dead letter (or was cancelled) fail with its last error.
pub async fn fail_dead_calls(db: &Db, job_id: i64, now_ms: i64) -> Result<u64, StoreError> {
    const SQL: &str = "UPDATE transfer_item SET state = 'failed', updated_at_ms = $2, \
        reason = (SELECT '调用未成功 / the call failed: ' || COALESCE(o.last_error, o.state) \
        FROM outbox o WHERE o.id = transfer_item.outbox_id) \
        WHERE job_id = $1 AND state = 'sent' AND outbox_id IN \
        (SELECT id FROM outbox WHERE state IN ('dead', 'cancelled'))";
    let n = on_db!(db, |pool| sqlx::query(SQL)
        .bind(job_id)
        .bind(now_ms)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(n)
}

/// Items of one call become `sent` (only those still `planned` or `scheduled`: another round may
/// have taken some), inside the caller's transaction. Returns how many did.
pub async fn mark_sent_in(tx: &mut Tx, ids: &[i64], now_ms: i64) -> Result<u64, StoreError> {
    update_items_in(
        tx,
        "state = 'sent', sent_at_ms = $1, updated_at_ms = $1",
        "state IN ('planned', 'scheduled')",
        &[Val::Int(Some(now_ms))],
        ids,
    )
    .await
}

/// Items of one call point at the outbox item that makes it.
pub async fn link_outbox_in(tx: &mut Tx, ids: &[i64], outbox_id: i64) -> Result<(), StoreError> {
    update_items_in(
        tx,
        "outbox_id = $1",
        "TRUE",
        &[Val::Int(Some(outbox_id))],
        ids,
    )
    .await?;
    Ok(())
}

/// An open item was taken over at `at_ms` (carried over now). Returns 1 when it was open.
pub async fn mark_done_in(
    tx: &mut Tx,
    id: i64,
    at_ms: i64,
    now_ms: i64,
) -> Result<u64, StoreError> {
    const DONE: &str = "UPDATE transfer_item SET state = 'done', takeover_at_ms = $2, \
        carried_at_ms = $3, errcode = NULL, reason = NULL, updated_at_ms = $3 \
        WHERE id = $1 AND state IN ('planned', 'scheduled', 'sent', 'waiting')";
    let n = on_tx!(tx, |conn| sqlx::query(DONE)
        .bind(id)
        .bind(at_ms)
        .bind(now_ms)
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(n)
}

/// How many items of a job are not final.
pub async fn open_items(db: &Db, job_id: i64) -> Result<i64, StoreError> {
    const OPEN: &str = "SELECT COUNT(*) FROM transfer_item WHERE job_id = $1 \
        AND state IN ('planned', 'scheduled', 'sent', 'waiting')";
    let open = on_db!(db, |pool| sqlx::query_scalar(OPEN)
        .bind(job_id)
        .fetch_one(pool)
        .await)?;
    Ok(open)
}

/// A running job is `done`. Returns 1 when it was running.
pub async fn mark_finished_in(tx: &mut Tx, job_id: i64, now_ms: i64) -> Result<u64, StoreError> {
    const FINISH: &str = "UPDATE transfer_job SET state = 'done', finished_at_ms = $2, \
        updated_at_ms = $2 WHERE id = $1 AND state = 'running'";
    let n = on_tx!(tx, |conn| sqlx::query(FINISH)
        .bind(job_id)
        .bind(now_ms)
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(n)
}

/// WeCom no longer holds a customer of `handover_user_id` for reassignment (inside the caller's
/// transaction).
pub async fn forget_unassigned_in(
    tx: &mut Tx,
    corp_id: &CorpId,
    handover_user_id: &UserId,
    external_user_id: &ExternalUserId,
) -> Result<(), StoreError> {
    let (corp_id, handover_user_id, external_user_id) = (
        corp_id.as_str(),
        handover_user_id.as_str(),
        external_user_id.as_str(),
    );
    const UNASSIGNED: &str = "DELETE FROM unassigned_customer WHERE corp_id = $1 \
        AND handover_user_id = $2 AND external_user_id = $3";
    on_tx!(tx, |conn| sqlx::query(UNASSIGNED)
        .bind(corp_id)
        .bind(handover_user_id)
        .bind(external_user_id)
        .execute(&mut *conn)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// `UPDATE transfer_item SET {set} WHERE {only} AND id IN (…)` over `ids`, 500 at a time, inside
/// `tx`: `vals` bind `$1…$n` of `set` and `only`, the ids follow. Returns the rows changed.
pub(crate) async fn update_items_in(
    tx: &mut Tx,
    set: &str,
    only: &str,
    vals: &[Val<'_>],
    ids: &[i64],
) -> Result<u64, StoreError> {
    let mut n = 0;
    for chunk in ids.chunks(500) {
        let sql = format!(
            "UPDATE transfer_item SET {set} WHERE {only} AND id IN ({})",
            crate::platform::db::placeholders(vals.len() + 1, chunk.len())
        );
        n += on_tx!(tx, |conn| {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
            for v in vals {
                q = match *v {
                    Val::Int(i) => q.bind(i),
                    Val::Text(t) => q.bind(t),
                };
            }
            for id in chunk {
                q = q.bind(id);
            }
            q.execute(&mut *conn).await.map(|r| r.rows_affected())
        })?;
    }
    Ok(n)
}

/// [`update_items_in`] in a transaction of its own.
pub(crate) async fn update_items(
    db: &Db,
    set: &str,
    only: &str,
    vals: &[Val<'_>],
    ids: &[i64],
) -> Result<u64, StoreError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let mut tx = db.begin().await?;
    let n = update_items_in(&mut tx, set, only, vals, ids).await?;
    tx.commit().await?;
    Ok(n)
}

/// Whether the item errcodes WeCom gives per customer or chat mean the taker is unusable.
pub fn errcode_reason(errcode: i64) -> String {
    let text = match errcode {
        40096 => "客户不存在或不属于本企业 / unknown external_userid",
        40100 => "客户已在转接中 / the customer is already being transferred",
        40129 => "客户正在转接中 / a transfer of this customer is in progress",
        40128 => "90 天内已转接两次 / transferred twice in 90 days",
        40130 => "接替成员与原跟进成员相同 / the taker is the handover member",
        40099 => "接替成员客户数已达上限 / the taker is at their customer limit",
        40143 => "接替成员已被封禁 / the taker is banned",
        40131 => "原跟进成员不是该客户的跟进人 / the handover member does not follow this customer",
        40098 => "接替成员未实名认证或未激活 / the taker is not verified or not activated",
        40003 => "成员不存在或已离职 / unknown or departed member",
        90500 => "群主未离职，请用在职继承 / the owner has not left: use on-job",
        90501 => "不是客户群 / not a customer group chat",
        90502 => "群主已离职，请用离职继承 / the owner has left: use resigned",
        90507 => "群正在继承中 / the chat is being handed over",
        _ => "",
    };
    if text.is_empty() {
        format!("企业微信拒绝（{errcode}） / WeCom refused ({errcode})")
    } else {
        format!("{text}（{errcode}）")
    }
}
