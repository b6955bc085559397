//! The workers' SQL on a [`LeaseTable`] (the inbox, the outbox): renew a lease, finish a row (done,
//! retry later, dead letter); and the numbers operators watch on the inbox. Claiming and replaying
//! inbox rows are the inbox's own ([`crate::pipeline::inbox`]).
//!
//! Every write that finishes or renews a row names the lease token it was claimed under
//! (`WHERE id = $1 AND lease_owner = $2 AND state = 'pending'`): a worker whose lease expired and
//! was taken over, or whose row was replayed meanwhile, changes nothing.

use std::time::Duration;

use serde::Serialize;

use super::record::{Ending, Finish};
use crate::on_db;
use crate::platform::db::{Db, StoreError};

/// Longest `last_error` we store: a handler's reason is for people, and a runaway one must not
/// bloat the row.
pub const MAX_REASON_BYTES: usize = 2000;

/// Milliseconds in `d`, saturating (a huge configured duration must not wrap).
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `s` cut to at most `max` bytes on a character boundary.
pub(crate) fn truncate_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("")
}

/// `reason` cut to [`MAX_REASON_BYTES`] on a character boundary.
pub(crate) fn truncate_reason(reason: &str) -> &str {
    truncate_bytes(reason, MAX_REASON_BYTES)
}

/// A table whose rows are claimed under leases (the inbox, the outbox): `id`, `state` (`pending`
/// while claimable or held, then `done` or `dead`), `lease_owner`, `lease_until_ms` (also "not
/// before" while a retry waits), `last_error`, `dead_at_ms`, and a column for when it was done.
/// Every write here names the lease token, so a worker that lost its lease changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTable {
    /// Table name.
    pub table: &'static str,
    /// Column set to the time a row is done.
    pub done_at: &'static str,
}

/// The inbox's lease columns.
pub const INBOX: LeaseTable = LeaseTable {
    table: "inbox",
    done_at: "processed_at_ms",
};

impl LeaseTable {
    /// Extends the lease of a row this token still holds to `until_ms`. False when the lease is
    /// gone (taken over, finished or replayed).
    pub async fn renew(
        self,
        db: &Db,
        id: i64,
        owner: &str,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE {} SET lease_until_ms = $3 WHERE id = $1 AND lease_owner = $2 \
             AND state = 'pending'",
            self.table
        );
        let _turn = db.write_turn().await?;
        let n = on_db!(db, |pool| sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(id)
            .bind(owner)
            .bind(until_ms)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Marks a held row done. False (and nothing changed) when `owner` no longer holds it.
    /// `last_error` is kept: a row done after retries still says what went wrong before.
    pub async fn done(
        self,
        db: &Db,
        id: i64,
        owner: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.finish(db, id, owner, now_ms, Finish::Done).await
    }

    /// Releases a held row for another attempt no earlier than `retry_at_ms`, noting `reason`. The
    /// attempt was already counted when the row was claimed. False when `owner` no longer holds it.
    pub async fn retry(
        self,
        db: &Db,
        id: i64,
        owner: &str,
        retry_at_ms: i64,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let reason = reason.to_owned();
        let finish = Finish::Retry {
            retry_at_ms,
            reason,
        };
        self.finish(db, id, owner, retry_at_ms, finish).await
    }

    /// Releases a held row until `retry_at_ms` without counting the attempt it was claimed for
    /// (it never reached WeCom: a rate limit held it back). False when `owner` no longer holds it.
    pub async fn defer(
        self,
        db: &Db,
        id: i64,
        owner: &str,
        retry_at_ms: i64,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let reason = reason.to_owned();
        let finish = Finish::Defer {
            retry_at_ms,
            reason,
        };
        self.finish(db, id, owner, retry_at_ms, finish).await
    }

    /// Makes a held row a dead letter with `reason`: no worker claims it again until an operator
    /// puts it back. False when `owner` no longer holds it.
    pub async fn dead(
        self,
        db: &Db,
        id: i64,
        owner: &str,
        now_ms: i64,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let reason = reason.to_owned();
        self.finish(db, id, owner, now_ms, Finish::Dead { reason })
            .await
    }

    /// One ending, in a transaction of its own (the pools batch theirs through a
    /// [`super::record::Recorder`]).
    async fn finish(
        self,
        db: &Db,
        id: i64,
        owner: &str,
        at_ms: i64,
        finish: Finish,
    ) -> Result<bool, StoreError> {
        let ending = Ending {
            id,
            owner: owner.to_owned(),
            at_ms,
            finish,
        };
        let applied = self.finish_all(db, &[&ending]).await?;
        Ok(applied.first().copied().unwrap_or(false))
    }
}

/// [`LeaseTable::renew`] on the inbox.
pub async fn renew_lease(db: &Db, id: i64, owner: &str, until_ms: i64) -> Result<bool, StoreError> {
    INBOX.renew(db, id, owner, until_ms).await
}

/// [`LeaseTable::done`] on the inbox.
pub async fn mark_done(db: &Db, id: i64, owner: &str, now_ms: i64) -> Result<bool, StoreError> {
    INBOX.done(db, id, owner, now_ms).await
}

/// [`LeaseTable::retry`] on the inbox.
pub async fn schedule_retry(
    db: &Db,
    id: i64,
    owner: &str,
    retry_at_ms: i64,
    reason: &str,
) -> Result<bool, StoreError> {
    INBOX.retry(db, id, owner, retry_at_ms, reason).await
}

/// [`LeaseTable::dead`] on the inbox.
pub async fn mark_dead(
    db: &Db,
    id: i64,
    owner: &str,
    now_ms: i64,
    reason: &str,
) -> Result<bool, StoreError> {
    INBOX.dead(db, id, owner, now_ms, reason).await
}

/// What is waiting: the numbers `/metrics` reads at scrape time. Only `pending` and `dead` rows
/// are read (through the state index), never the ever-growing `done` ones.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Backlog {
    /// Rows not yet processed (including those in flight and those waiting to be retried).
    pub pending: i64,
    /// Pending rows a live lease holds: a worker is on them now.
    pub in_flight: i64,
    /// Pending rows that failed at least once and no live lease holds (waiting for their retry,
    /// or for a new claim after their worker died).
    pub retrying: i64,
    /// Dead letters: failed for good until replayed.
    pub dead: i64,
    /// When the oldest pending row was received (epoch ms).
    pub oldest_pending_ms: Option<i64>,
    /// Age of the oldest pending row in seconds (0 when nothing is pending).
    pub lag_secs: f64,
    /// The most attempts any pending row has had.
    pub attempts_max: i32,
}

/// The inbox by state, for `scrm inbox stats`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct InboxStats {
    /// See [`Backlog::pending`].
    pub pending: i64,
    /// See [`Backlog::in_flight`].
    pub in_flight: i64,
    /// See [`Backlog::retrying`].
    pub retrying: i64,
    /// Processed rows.
    pub done: i64,
    /// See [`Backlog::dead`].
    pub dead: i64,
    /// See [`Backlog::oldest_pending_ms`].
    pub oldest_pending_ms: Option<i64>,
    /// See [`Backlog::lag_secs`].
    pub lag_secs: f64,
    /// See [`Backlog::attempts_max`].
    pub attempts_max: i32,
}

/// The waiting rows of one corp or all, as of `now_ms`.
pub async fn backlog(db: &Db, corp_id: Option<&str>, now_ms: i64) -> Result<Backlog, StoreError> {
    const SQL: &str = "SELECT \
        COALESCE(SUM(CASE WHEN state = 'pending' THEN 1 ELSE 0 END), 0), \
        COALESCE(SUM(CASE WHEN state = 'pending' AND lease_owner IS NOT NULL \
            AND lease_until_ms > $2 THEN 1 ELSE 0 END), 0), \
        COALESCE(SUM(CASE WHEN state = 'pending' AND attempts > 0 \
            AND NOT (lease_owner IS NOT NULL AND lease_until_ms > $2) THEN 1 ELSE 0 END), 0), \
        COALESCE(SUM(CASE WHEN state = 'dead' THEN 1 ELSE 0 END), 0), \
        MIN(CASE WHEN state = 'pending' THEN received_at_ms END), \
        COALESCE(MAX(CASE WHEN state = 'pending' THEN attempts END), 0) \
        FROM inbox WHERE state IN ('pending', 'dead') AND ($1 IS NULL OR corp_id = $1)";
    let (pending, in_flight, retrying, dead, oldest_pending_ms, attempts_max): (
        i64,
        i64,
        i64,
        i64,
        Option<i64>,
        i32,
    ) = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp_id)
        .bind(now_ms)
        .fetch_one(pool)
        .await)?;
    let lag_secs = oldest_pending_ms.map_or(0.0, |oldest| {
        let age_ms = u64::try_from(now_ms.saturating_sub(oldest)).unwrap_or(0);
        Duration::from_millis(age_ms).as_secs_f64()
    });
    Ok(Backlog {
        pending,
        in_flight,
        retrying,
        dead,
        oldest_pending_ms,
        lag_secs,
        attempts_max,
    })
}

/// The inbox by state for one corp or all, as of now. Counting `done` reads every processed row's
/// index entry: fine for the CLI, not for every scrape (use [`backlog`] there).
pub async fn stats(db: &Db, corp_id: Option<&str>) -> Result<InboxStats, StoreError> {
    const DONE: &str =
        "SELECT COUNT(*) FROM inbox WHERE state = 'done' AND ($1 IS NULL OR corp_id = $1)";
    let b = backlog(db, corp_id, crate::platform::db::now_ms()).await?;
    let done: i64 = on_db!(db, |pool| sqlx::query_scalar(DONE)
        .bind(corp_id)
        .fetch_one(pool)
        .await)?;
    Ok(InboxStats {
        pending: b.pending,
        in_flight: b.in_flight,
        retrying: b.retrying,
        done,
        dead: b.dead,
        oldest_pending_ms: b.oldest_pending_ms,
        lag_secs: b.lag_secs,
        attempts_max: b.attempts_max,
    })
}

/// A row that failed for good, with why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct DeadLetter {
    /// Row id (for `scrm inbox show` and `scrm replay --id`).
    pub id: i64,
    /// Corp.
    pub corp_id: String,
    /// Callback configuration name.
    pub app: String,
    /// `MsgType`.
    pub msg_type: String,
    /// `Event`.
    pub event: Option<String>,
    /// `ChangeType`.
    pub change_type: Option<String>,
    /// Received, epoch ms.
    pub received_at_ms: i64,
    /// Attempts made.
    pub attempts: i32,
    /// The last failure's reason.
    pub last_error: Option<String>,
    /// When it became a dead letter, epoch ms.
    pub dead_at_ms: Option<i64>,
}

/// The `limit` most recent dead letters (of one corp or all), newest first.
pub async fn dead_letters(
    db: &Db,
    corp_id: Option<&str>,
    limit: i64,
) -> Result<Vec<DeadLetter>, StoreError> {
    // COALESCE: the backends sort NULLs differently.
    const SQL: &str = "SELECT id, corp_id, app, msg_type, event, change_type, received_at_ms, \
        attempts, last_error, dead_at_ms FROM inbox WHERE state = 'dead' \
        AND ($1 IS NULL OR corp_id = $1) ORDER BY COALESCE(dead_at_ms, 0) DESC, id DESC LIMIT $2";
    let rows = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp_id)
        .bind(limit)
        .fetch_all(pool)
        .await)?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_cut_on_a_character_boundary() {
        let long = "错".repeat(MAX_REASON_BYTES);
        let cut = truncate_reason(&long);
        assert!(cut.len() <= MAX_REASON_BYTES && cut.len() > MAX_REASON_BYTES - 3);
        assert!(cut.chars().all(|c| c == '错'));
        assert_eq!(truncate_reason("short"), "short");
    }

    #[test]
    fn millis_saturate() {
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
        assert_eq!(millis(Duration::MAX), i64::MAX);
    }
}
