//! The append-only audit log: every write made for a principal, in the write's transaction,
//! with the API key the request came with.

use serde::Serialize;

use crate::on_db;
use crate::platform::db::{Db, StoreError};

/// Appends to the audit log (inside the write's transaction when `tx` is given).
pub async fn audit(
    tx: &mut crate::platform::db::Tx,
    corp_id: &str,
    actor: &str,
    action: &str,
    target: &str,
    detail: &serde_json::Value,
    now_ms: i64,
) -> Result<(), StoreError> {
    const SQL: &str = "INSERT INTO audit_log (corp_id, actor, action, target, detail, at_ms, \
        key_id) VALUES ($1, $2, $3, $4, $5, $6, $7)";
    let key_id = REQUEST_KEY.try_with(std::cell::Cell::get).ok().flatten();
    crate::on_tx!(tx, |conn| sqlx::query(SQL)
        .bind(corp_id)
        .bind(actor)
        .bind(action)
        .bind(target)
        .bind(detail.to_string())
        .bind(now_ms)
        .bind(key_id)
        .execute(&mut *conn)
        .await
        .map(|_| ()))?;
    Ok(())
}

tokio::task_local! {
    /// The API key of the request being handled (set by the API's authentication, read by
    /// [`audit`]), so every audit row of a request names the key as well as the staff member.
    static REQUEST_KEY: std::cell::Cell<Option<i64>>;
}

/// Runs one request's handling with a slot for its API key (see [`note_request_key`]).
pub async fn with_request_key<F: std::future::Future>(handling: F) -> F::Output {
    REQUEST_KEY
        .scope(std::cell::Cell::new(None), handling)
        .await
}

/// Remembers the key the current request authenticated with (no effect outside
/// [`with_request_key`]).
pub fn note_request_key(key_id: Option<i64>) {
    let _ = REQUEST_KEY.try_with(|slot| slot.set(key_id));
}

/// One entry of the append-only audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct AuditEntry {
    /// Id (the order entries were written in).
    pub id: i64,
    /// Who did it (`zhangsan`, `apikey:3`, `cli:root`, `system`).
    pub actor: String,
    /// What (`transfer.plan`, `transfer.run`, …).
    pub action: String,
    /// On what (`transfer_job:7`).
    pub target: String,
    /// Details (JSON text).
    pub detail: String,
    /// When, epoch ms.
    pub at_ms: i64,
    /// The API key it was done with, if any.
    pub key_id: Option<i64>,
}

/// The audit entries of one target, oldest first (at most 1000).
pub async fn audit_entries(
    db: &Db,
    corp_id: &str,
    target: &str,
) -> Result<Vec<AuditEntry>, StoreError> {
    const SQL: &str = "SELECT id, actor, action, target, detail, at_ms, key_id FROM audit_log \
        WHERE corp_id = $1 AND target = $2 ORDER BY id LIMIT 1000";
    let rows = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp_id)
        .bind(target)
        .fetch_all(pool)
        .await)?;
    Ok(rows)
}

/// Which audit entries [`search`] returns (all `None`: every entry of the corp), newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only by this actor.
    pub actor: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// Only on this target.
    pub target: Option<String>,
    /// Only at or after this, epoch ms.
    pub since_ms: Option<i64>,
    /// Ids below this (paging).
    pub before_id: Option<i64>,
    /// At most this many (1–5000).
    pub limit: i64,
}

/// The audit entries of `corp_id` matching `f`, newest first.
pub async fn search(
    db: &Db,
    corp_id: &str,
    f: &AuditFilter,
) -> Result<Vec<AuditEntry>, StoreError> {
    const SQL: &str = "SELECT id, actor, action, target, detail, at_ms, key_id FROM audit_log \
        WHERE corp_id = $1 AND ($2 IS NULL OR actor = $2) AND ($3 IS NULL OR action = $3) \
        AND ($4 IS NULL OR target = $4) AND ($5 IS NULL OR at_ms >= $5) \
        AND ($6 IS NULL OR id < $6) ORDER BY id DESC LIMIT $7";
    let rows = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp_id)
        .bind(f.actor.as_deref())
        .bind(f.action.as_deref())
        .bind(f.target.as_deref())
        .bind(f.since_ms)
        .bind(f.before_id)
        .bind(f.limit.clamp(1, 5000))
        .fetch_all(pool)
        .await)?;
    Ok(rows)
}
