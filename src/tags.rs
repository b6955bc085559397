//! The corp tag library (企业客户标签): groups and tags mirrored from `get_corp_tag_list`, refreshed
//! on `change_external_tag` and by the reconciliation. A tag or group missing from a full listing
//! is marked deleted (never removed: relations and history still name it).

use serde::Serialize;

use crate::db::{Db, StoreError};
use crate::on_db;

/// A tag group and its tags, as WeCom lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibraryGroup {
    /// Group id.
    pub group_id: String,
    /// Group name.
    pub name: String,
    /// WeCom's `order` (bigger first).
    pub sort_order: i64,
    /// Created, epoch ms.
    pub created_at_ms: Option<i64>,
    /// Its tags.
    pub tags: Vec<LibraryTag>,
}

/// One tag of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibraryTag {
    /// Tag id.
    pub tag_id: String,
    /// Name.
    pub name: String,
    /// WeCom's `order`.
    pub sort_order: i64,
    /// Created, epoch ms.
    pub created_at_ms: Option<i64>,
}

/// A stored tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Tag {
    /// Tag id.
    pub tag_id: String,
    /// Its group.
    pub group_id: String,
    /// Name.
    pub name: String,
    /// Order.
    pub sort_order: i64,
    /// Set when WeCom no longer lists it.
    pub deleted_at_ms: Option<i64>,
}

/// What a library refresh changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LibraryChanges {
    /// Tags now present.
    pub tags: usize,
    /// Tags marked deleted by this refresh.
    pub deleted: usize,
}

/// Replaces our mirror with a full listing: upserts every group and tag, marks the rest deleted.
pub async fn replace_library(
    db: &Db,
    corp_id: &str,
    groups: &[LibraryGroup],
    now_ms: i64,
) -> Result<LibraryChanges, StoreError> {
    const GROUP: &str = "INSERT INTO tag_group (corp_id, group_id, name, sort_order, created_at_ms, \
        updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (corp_id, group_id) DO UPDATE \
        SET name = excluded.name, sort_order = excluded.sort_order, deleted_at_ms = NULL, \
        updated_at_ms = excluded.updated_at_ms";
    const TAG: &str = "INSERT INTO tag (corp_id, tag_id, group_id, name, sort_order, created_at_ms, \
        updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (corp_id, tag_id) DO UPDATE \
        SET group_id = excluded.group_id, name = excluded.name, sort_order = excluded.sort_order, \
        deleted_at_ms = NULL, updated_at_ms = excluded.updated_at_ms";
    // Everything not touched by this refresh (updated_at_ms older) is gone from WeCom.
    const GONE_TAGS: &str = "UPDATE tag SET deleted_at_ms = $2 WHERE corp_id = $1 \
        AND deleted_at_ms IS NULL AND updated_at_ms < $2 RETURNING tag_id";
    const GONE_GROUPS: &str = "UPDATE tag_group SET deleted_at_ms = $2 WHERE corp_id = $1 \
        AND deleted_at_ms IS NULL AND updated_at_ms < $2";
    let mut changes = LibraryChanges::default();
    let gone: Vec<String> = on_db!(db, |pool| {
        let mut tx = pool.begin().await?;
        for g in groups {
            sqlx::query(GROUP)
                .bind(corp_id)
                .bind(&g.group_id)
                .bind(&g.name)
                .bind(g.sort_order)
                .bind(g.created_at_ms)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
            for t in &g.tags {
                sqlx::query(TAG)
                    .bind(corp_id)
                    .bind(&t.tag_id)
                    .bind(&g.group_id)
                    .bind(&t.name)
                    .bind(t.sort_order)
                    .bind(t.created_at_ms)
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?;
                changes.tags += 1;
            }
        }
        let gone: Vec<String> = sqlx::query_scalar(GONE_TAGS)
            .bind(corp_id)
            .bind(now_ms)
            .fetch_all(&mut *tx)
            .await?;
        sqlx::query(GONE_GROUPS)
            .bind(corp_id)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await.map(|()| gone)
    })?;
    changes.deleted = gone.len();
    forget_on_relations(db, corp_id, &gone, now_ms).await?;
    Ok(changes)
}

/// Adds or updates one group and its tags (an `add_corp_tag` answer), leaving the rest alone.
pub async fn upsert_group(
    db: &Db,
    corp_id: &str,
    g: &LibraryGroup,
    now_ms: i64,
) -> Result<(), StoreError> {
    const GROUP: &str = "INSERT INTO tag_group (corp_id, group_id, name, sort_order, created_at_ms, \
        updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (corp_id, group_id) DO UPDATE \
        SET name = excluded.name, sort_order = excluded.sort_order, deleted_at_ms = NULL, \
        updated_at_ms = excluded.updated_at_ms";
    const TAG: &str = "INSERT INTO tag (corp_id, tag_id, group_id, name, sort_order, created_at_ms, \
        updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (corp_id, tag_id) DO UPDATE \
        SET group_id = excluded.group_id, name = excluded.name, sort_order = excluded.sort_order, \
        deleted_at_ms = NULL, updated_at_ms = excluded.updated_at_ms";
    on_db!(db, |pool| {
        let mut tx = pool.begin().await?;
        sqlx::query(GROUP)
            .bind(corp_id)
            .bind(&g.group_id)
            .bind(&g.name)
            .bind(g.sort_order)
            .bind(g.created_at_ms)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        for t in &g.tags {
            sqlx::query(TAG)
                .bind(corp_id)
                .bind(&t.tag_id)
                .bind(&g.group_id)
                .bind(&t.name)
                .bind(t.sort_order)
                .bind(t.created_at_ms)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    })?;
    Ok(())
}

/// WeCom removes a deleted tag from every customer: so do we, on the relations that carry one of
/// `tag_ids`, and we forget who set it.
pub async fn forget_on_relations(
    db: &Db,
    corp_id: &str,
    tag_ids: &[String],
    now_ms: i64,
) -> Result<u64, StoreError> {
    const FIND: &str = "SELECT user_id, external_user_id, tag_ids FROM follow_relation \
        WHERE corp_id = $1 AND tag_ids LIKE $2";
    const SET: &str = "UPDATE follow_relation SET tag_ids = $4, updated_at_ms = $5 \
        WHERE corp_id = $1 AND user_id = $2 AND external_user_id = $3 AND tag_ids = $6";
    const UNASSIGN: &str = "DELETE FROM tag_assignment WHERE corp_id = $1 AND tag_id = $2";
    let mut changed = 0;
    for tag in tag_ids {
        let pattern = format!("%{}%", serde_json::Value::from(tag.as_str()));
        let rows: Vec<(String, String, String)> = on_db!(db, |pool| sqlx::query_as(FIND)
            .bind(corp_id)
            .bind(&pattern)
            .fetch_all(pool)
            .await)?;
        for (user, ext, json) in rows {
            let mut ids: Vec<String> = serde_json::from_str(&json).unwrap_or_default();
            let before = ids.len();
            ids.retain(|t| t != tag);
            if ids.len() == before {
                continue;
            }
            let new = serde_json::to_string(&ids).unwrap_or_else(|_| "[]".to_owned());
            changed += on_db!(db, |pool| sqlx::query(SET)
                .bind(corp_id)
                .bind(&user)
                .bind(&ext)
                .bind(&new)
                .bind(now_ms)
                .bind(&json)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()))?;
        }
        on_db!(db, |pool| sqlx::query(UNASSIGN)
            .bind(corp_id)
            .bind(tag)
            .execute(pool)
            .await
            .map(|_| ()))?;
    }
    Ok(changed)
}

/// Tags of one corp that WeCom still lists.
pub async fn live_tags(db: &Db, corp_id: &str) -> Result<Vec<Tag>, StoreError> {
    const SQL: &str = "SELECT tag_id, group_id, name, sort_order, deleted_at_ms FROM tag \
        WHERE corp_id = $1 AND deleted_at_ms IS NULL ORDER BY group_id, sort_order DESC, tag_id";
    let rows = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp_id)
        .fetch_all(pool)
        .await)?;
    Ok(rows)
}

/// One tag, deleted or not.
pub async fn get_tag(db: &Db, corp_id: &str, tag_id: &str) -> Result<Option<Tag>, StoreError> {
    const SQL: &str = "SELECT tag_id, group_id, name, sort_order, deleted_at_ms FROM tag \
        WHERE corp_id = $1 AND tag_id = $2";
    let row = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp_id)
        .bind(tag_id)
        .fetch_optional(pool)
        .await)?;
    Ok(row)
}
