//! API keys (`scrm apikey create`): `scrm_<12 hex prefix>_<48 hex secret>`, shown once, stored as
//! the SHA-256 of the whole key; the prefix finds the row.

use rand::Rng as _;
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use wecom_sdk::{CorpId, UserId};

use super::{Principal, Role};
use crate::on_db;
use crate::platform::db::{Db, StoreError};

/// A stored key, without its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ApiKeyInfo {
    /// Id.
    pub id: i64,
    /// Corp.
    pub corp_id: String,
    /// Label.
    pub name: String,
    /// Role.
    pub role: String,
    /// Staff member.
    pub staff_user_id: Option<String>,
    /// The key's visible prefix.
    pub key_prefix: String,
    /// Created, epoch ms.
    pub created_at_ms: i64,
    /// Revoked, epoch ms.
    pub revoked_at_ms: Option<i64>,
    /// Last authenticated request, epoch ms.
    pub last_used_at_ms: Option<i64>,
}

fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Creates a key; returns its id and the key itself (the only time it is ever shown).
pub async fn create_key(
    db: &Db,
    corp_id: &CorpId,
    role: Role,
    staff_user_id: Option<&UserId>,
    name: &str,
    now_ms: i64,
) -> Result<(i64, String), StoreError> {
    const SQL: &str = "INSERT INTO api_key (corp_id, name, role, staff_user_id, key_prefix, key_hash, \
        created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id";
    let mut rng = rand::rng();
    let prefix = hex::encode(rng.random::<[u8; 6]>());
    let secret = hex::encode(rng.random::<[u8; 24]>());
    let key = format!("scrm_{prefix}_{secret}");
    let id = on_db!(db, |pool| sqlx::query_scalar(SQL)
        .bind(corp_id.as_str())
        .bind(name)
        .bind(role.as_str())
        .bind(staff_user_id.map(UserId::as_str))
        .bind(&prefix)
        .bind(hash(&key))
        .bind(now_ms)
        .fetch_one(pool)
        .await)?;
    Ok((id, key))
}

/// The principal a bearer key stands for; `None` for a malformed, unknown, wrong or revoked key.
pub async fn authenticate(
    db: &Db,
    key: &str,
    now_ms: i64,
) -> Result<Option<Principal>, StoreError> {
    const FIND: &str = "SELECT id, corp_id, role, staff_user_id, key_hash, revoked_at_ms \
        FROM api_key WHERE key_prefix = $1";
    // Written at most once a minute per key, so reads stay reads.
    const USED: &str = "UPDATE api_key SET last_used_at_ms = $2 WHERE id = $1 \
        AND (last_used_at_ms IS NULL OR last_used_at_ms < $3)";
    let Some(prefix) = key
        .strip_prefix("scrm_")
        .and_then(|rest| rest.split_once('_'))
        .map(|(prefix, _)| prefix)
        .filter(|p| p.len() == 12 && p.bytes().all(|b| b.is_ascii_hexdigit()))
    else {
        return Ok(None);
    };
    let row: Option<StoredKey> = on_db!(db, |pool| sqlx::query_as(FIND)
        .bind(prefix)
        .fetch_optional(pool)
        .await)?;
    let Some((id, corp_id, role, staff_user_id, stored, revoked)) = row else {
        return Ok(None);
    };
    if revoked.is_some() || !constant_time_eq(hash(key).as_bytes(), stored.as_bytes()) {
        return Ok(None);
    }
    let Some(role) = Role::parse(&role) else {
        return Ok(None);
    };
    // Ids were checked when the key was made; a row that fails the check stands for nobody.
    let Ok(corp_id) = CorpId::try_from(corp_id) else {
        return Ok(None);
    };
    let Ok(staff_user_id) = staff_user_id.map(UserId::try_from).transpose() else {
        return Ok(None);
    };
    on_db!(db, |pool| sqlx::query(USED)
        .bind(id)
        .bind(now_ms)
        .bind(now_ms - 60_000)
        .execute(pool)
        .await
        .map(|_| ()))?;
    Ok(Some(Principal {
        corp_id,
        role,
        staff_user_id,
        key_id: Some(id),
        account: None,
    }))
}

/// An `api_key` row as [`authenticate`] reads it: id, corp, role, staff member, hash, revoked at.
type StoredKey = (i64, String, String, Option<String>, String, Option<i64>);

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Revokes a key; false when there is no such key or it was revoked already.
pub async fn revoke_key(db: &Db, id: i64, now_ms: i64) -> Result<bool, StoreError> {
    const SQL: &str =
        "UPDATE api_key SET revoked_at_ms = $2 WHERE id = $1 AND revoked_at_ms IS NULL";
    let n = on_db!(db, |pool| sqlx::query(SQL)
        .bind(id)
        .bind(now_ms)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// Keys, newest first (of one corp when given).
pub async fn list_keys(db: &Db, corp_id: Option<&str>) -> Result<Vec<ApiKeyInfo>, StoreError> {
    const SQL: &str = "SELECT id, corp_id, name, role, staff_user_id, key_prefix, created_at_ms, \
        revoked_at_ms, last_used_at_ms FROM api_key WHERE ($1 IS NULL OR corp_id = $1) \
        ORDER BY id DESC";
    let rows = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp_id)
        .fetch_all(pool)
        .await)?;
    Ok(rows)
}
