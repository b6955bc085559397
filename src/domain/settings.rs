//! Per-corp settings (`corp_setting`): named JSON or text values with who set them and when. The
//! lifecycle stages ([`crate::domain::followup`]) and the fingerprint of the rule library the last
//! start scanned with are kept here; this module is the table's only reader and writer.

use crate::platform::db::{Db, StoreError, Tx};
use crate::{on_db, on_tx};

const GET: &str = "SELECT value FROM corp_setting WHERE corp_id = $1 AND name = $2";

/// A setting's value (`None`: never set).
pub async fn get(db: &Db, corp_id: &str, name: &str) -> Result<Option<String>, StoreError> {
    let value = on_db!(db, |pool| sqlx::query_scalar(GET)
        .bind(corp_id)
        .bind(name)
        .fetch_optional(pool)
        .await)?;
    Ok(value)
}

/// A setting's value, read inside the caller's transaction.
pub async fn get_in(tx: &mut Tx, corp_id: &str, name: &str) -> Result<Option<String>, StoreError> {
    let value = on_tx!(tx, |conn| sqlx::query_scalar(GET)
        .bind(corp_id)
        .bind(name)
        .fetch_optional(&mut *conn)
        .await)?;
    Ok(value)
}

/// Sets a setting inside the caller's transaction (so an audit entry can go with it).
pub async fn set_in(
    tx: &mut Tx,
    corp_id: &str,
    name: &str,
    value: &str,
    actor: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    const UPSERT: &str = "INSERT INTO corp_setting (corp_id, name, value, updated_by, updated_at_ms) \
        VALUES ($1, $2, $3, $4, $5) ON CONFLICT (corp_id, name) DO UPDATE \
        SET value = excluded.value, updated_by = excluded.updated_by, \
        updated_at_ms = excluded.updated_at_ms";
    on_tx!(tx, |conn| sqlx::query(UPSERT)
        .bind(corp_id)
        .bind(name)
        .bind(value)
        .bind(actor)
        .bind(now_ms)
        .execute(&mut *conn)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// Sets a setting in a transaction of its own.
pub async fn set(
    db: &Db,
    corp_id: &str,
    name: &str,
    value: &str,
    actor: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    let mut tx = db.begin().await?;
    set_in(&mut tx, corp_id, name, value, actor, now_ms).await?;
    tx.commit().await?;
    Ok(())
}
