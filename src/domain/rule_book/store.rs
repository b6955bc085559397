//! The SQL of `rule_library` (a corp's library, one row per saved version) and `rule_recipient`
//! (who is told of a category's alerts). Nothing else queries these tables.

use serde::Serialize;

use super::Quality;
use crate::platform::db::{Db, StoreError, Tx};
use crate::{on_db, on_tx};

/// One saved version of a corp's library, without its source (the history).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VersionSummary {
    /// 1, 2, 3 … per corp.
    pub version: i64,
    /// Who saved it (`console:<account>`, …).
    pub author: String,
    /// What the author said it changes.
    pub note: String,
    /// The version it restored, for a revert.
    pub reverted_from: Option<i64>,
    /// The quality gate's figures when it was saved.
    pub quality: Quality,
    /// When, epoch ms.
    pub created_at_ms: i64,
}

/// One saved version with its TOML.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LibraryVersion {
    /// Who, when, why.
    pub summary: VersionSummary,
    /// The TOML as saved.
    pub source: String,
}

#[derive(sqlx::FromRow)]
struct Row {
    version: i64,
    author: String,
    note: String,
    reverted_from: Option<i64>,
    eval: String,
    created_at_ms: i64,
}

impl From<Row> for VersionSummary {
    fn from(r: Row) -> Self {
        Self {
            version: r.version,
            author: r.author,
            note: r.note,
            reverted_from: r.reverted_from,
            // Figures that do not parse (written by a later release) show as unknown.
            quality: serde_json::from_str(&r.eval).unwrap_or_default(),
            created_at_ms: r.created_at_ms,
        }
    }
}

/// The newest version number of the corp's library (`None`: the corp has none of its own). One
/// lookup of the primary key: what the scanners' cache asks every few seconds.
pub async fn newest_version(db: &Db, corp_id: &str) -> Result<Option<i64>, StoreError> {
    const SQL: &str = "SELECT MAX(version) FROM rule_library WHERE corp_id = $1";
    let v: Option<i64> = on_db!(db, |pool| sqlx::query_scalar(SQL)
        .bind(corp_id)
        .fetch_one(pool)
        .await)?;
    Ok(v)
}

/// One version with its source.
pub async fn version(
    db: &Db,
    corp_id: &str,
    version: i64,
) -> Result<Option<LibraryVersion>, StoreError> {
    const SQL: &str = "SELECT version, author, note, reverted_from, eval, created_at_ms, source \
        FROM rule_library WHERE corp_id = $1 AND version = $2";
    let row: Option<(String, Row)> = on_db!(db, |pool| sqlx::query_as::<_, RowWithSource>(SQL)
        .bind(corp_id)
        .bind(version)
        .fetch_optional(pool)
        .await)?
    .map(|r| (r.source, r.row));
    Ok(row.map(|(source, row)| LibraryVersion {
        summary: row.into(),
        source,
    }))
}

#[derive(sqlx::FromRow)]
struct RowWithSource {
    #[sqlx(flatten)]
    row: Row,
    source: String,
}

/// The corp's newest version with its source (`None`: the instance's library applies).
pub async fn current(db: &Db, corp_id: &str) -> Result<Option<LibraryVersion>, StoreError> {
    match newest_version(db, corp_id).await? {
        Some(v) => version(db, corp_id, v).await,
        None => Ok(None),
    }
}

/// The corp's versions, newest first (at most `limit`).
pub async fn versions(
    db: &Db,
    corp_id: &str,
    limit: i64,
) -> Result<Vec<VersionSummary>, StoreError> {
    const SQL: &str = "SELECT version, author, note, reverted_from, eval, created_at_ms \
        FROM rule_library WHERE corp_id = $1 ORDER BY version DESC LIMIT $2";
    let rows: Vec<Row> = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp_id)
        .bind(limit)
        .fetch_all(pool)
        .await)?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// What [`insert_version_in`] writes.
pub(super) struct NewVersion<'a> {
    pub(super) corp_id: &'a str,
    pub(super) source: &'a str,
    pub(super) author: &'a str,
    pub(super) note: &'a str,
    pub(super) reverted_from: Option<i64>,
    pub(super) quality: &'a Quality,
    pub(super) created_at_ms: i64,
}

/// Writes the next version of the corp's library, if the newest one is still `expected`: the
/// new version's number, or `None` when someone saved meanwhile (also when a save racing this
/// one took the number first: the primary key refuses the second).
pub(super) async fn insert_version_in(
    tx: &mut Tx,
    expected: Option<i64>,
    v: &NewVersion<'_>,
) -> Result<Option<i64>, StoreError> {
    const NEWEST: &str = "SELECT MAX(version) FROM rule_library WHERE corp_id = $1";
    const INSERT: &str = "INSERT INTO rule_library (corp_id, version, source, author, note, \
        reverted_from, eval, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
        ON CONFLICT (corp_id, version) DO NOTHING";
    let newest: Option<i64> = on_tx!(tx, |conn| sqlx::query_scalar(NEWEST)
        .bind(v.corp_id)
        .fetch_one(&mut *conn)
        .await)?;
    if newest != expected {
        return Ok(None);
    }
    let next = newest.unwrap_or(0) + 1;
    let eval = serde_json::to_string(v.quality).unwrap_or_else(|_| "{}".to_owned());
    let n = on_tx!(tx, |conn| sqlx::query(INSERT)
        .bind(v.corp_id)
        .bind(next)
        .bind(v.source)
        .bind(v.author)
        .bind(v.note)
        .bind(v.reverted_from)
        .bind(&eval)
        .bind(v.created_at_ms)
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok((n == 1).then_some(next))
}

/// Who is told of a category's content alerts in a corp.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CategoryRecipients {
    /// The rule category (`private_payment`, …).
    pub category: String,
    /// WeCom userids, in the order they were typed.
    pub user_ids: Vec<String>,
    /// Who set them last.
    pub updated_by: String,
    /// When, epoch ms.
    pub updated_at_ms: i64,
}

fn split(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Every category of the corp with recipients, by category.
pub async fn recipients(db: &Db, corp_id: &str) -> Result<Vec<CategoryRecipients>, StoreError> {
    const SQL: &str = "SELECT category, user_ids, updated_by, updated_at_ms FROM rule_recipient \
        WHERE corp_id = $1 ORDER BY category";
    let rows: Vec<(String, String, String, i64)> = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp_id)
        .fetch_all(pool)
        .await)?;
    Ok(rows
        .into_iter()
        .map(
            |(category, user_ids, updated_by, updated_at_ms)| CategoryRecipients {
                category,
                user_ids: split(&user_ids),
                updated_by,
                updated_at_ms,
            },
        )
        .collect())
}

/// The recipients of `category` in the corp, inside the alert's transaction.
pub async fn category_recipients_in(
    tx: &mut Tx,
    corp_id: &str,
    category: &str,
) -> Result<Vec<String>, StoreError> {
    const SQL: &str = "SELECT user_ids FROM rule_recipient WHERE corp_id = $1 AND category = $2";
    let list: Option<String> = on_tx!(tx, |conn| sqlx::query_scalar(SQL)
        .bind(corp_id)
        .bind(category)
        .fetch_optional(&mut *conn)
        .await)?;
    Ok(list.as_deref().map(split).unwrap_or_default())
}

/// Sets (or, for an empty list, removes) the recipients of `category`. Whether anything changed.
pub(super) async fn set_recipients_in(
    tx: &mut Tx,
    corp_id: &str,
    category: &str,
    user_ids: &[String],
    actor: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    const OLD: &str = "SELECT user_ids FROM rule_recipient WHERE corp_id = $1 AND category = $2";
    const DELETE: &str = "DELETE FROM rule_recipient WHERE corp_id = $1 AND category = $2";
    const UPSERT: &str = "INSERT INTO rule_recipient (corp_id, category, user_ids, updated_by, \
        updated_at_ms) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (corp_id, category) DO UPDATE \
        SET user_ids = excluded.user_ids, updated_by = excluded.updated_by, \
        updated_at_ms = excluded.updated_at_ms";
    let old: Option<String> = on_tx!(tx, |conn| sqlx::query_scalar(OLD)
        .bind(corp_id)
        .bind(category)
        .fetch_optional(&mut *conn)
        .await)?;
    let old = old.as_deref().map(split).unwrap_or_default();
    if old == user_ids {
        return Ok(false);
    }
    if user_ids.is_empty() {
        on_tx!(tx, |conn| sqlx::query(DELETE)
            .bind(corp_id)
            .bind(category)
            .execute(&mut *conn)
            .await
            .map(|_| ()))?;
    } else {
        on_tx!(tx, |conn| sqlx::query(UPSERT)
            .bind(corp_id)
            .bind(category)
            .bind(user_ids.join(","))
            .bind(actor)
            .bind(now_ms)
            .execute(&mut *conn)
            .await
            .map(|_| ()))?;
    }
    Ok(true)
}
