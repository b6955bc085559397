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
        AND deleted_at_ms IS NULL AND updated_at_ms < $2";
    const GONE_GROUPS: &str = "UPDATE tag_group SET deleted_at_ms = $2 WHERE corp_id = $1 \
        AND deleted_at_ms IS NULL AND updated_at_ms < $2";
    let mut changes = LibraryChanges::default();
    on_db!(db, |pool| {
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
        let gone = sqlx::query(GONE_TAGS)
            .bind(corp_id)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query(GONE_GROUPS)
            .bind(corp_id)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        changes.deleted = usize::try_from(gone).unwrap_or(usize::MAX);
        tx.commit().await
    })?;
    Ok(changes)
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
