//! The corp tag library (企业客户标签): groups and tags mirrored from `get_corp_tag_list`, refreshed
//! on `change_external_tag` and by the reconciliation. A tag or group missing from a full listing
//! is marked deleted (never removed: relations and history still name it).

use serde::Serialize;

use crate::on_db;
use crate::platform::db::{Db, StoreError};

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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LibraryChanges {
    /// Tags now present.
    pub tags: usize,
    /// Tags marked deleted by this refresh.
    pub deleted: usize,
    /// Their ids (customers lose them: [`crate::domain::customers::record::forget_tags`]).
    #[serde(skip)]
    pub gone: Vec<String>,
}

/// Replaces our mirror with a full listing: upserts every group and tag, marks the rest deleted.
/// Customers keep the deleted tags until the caller forgets them: call
/// [`crate::domain::customers::record::replace_tag_library`], which does both.
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
    // A transaction begun through the pool: its writes take this process's turn first.
    let _turn = db.write_turn().await?;
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
    changes.gone = gone;
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
    // A transaction begun through the pool: its writes take this process's turn first.
    let _turn = db.write_turn().await?;
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

/// One group of the library with its live tags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupView {
    /// Group id.
    pub group_id: String,
    /// Name.
    pub name: String,
    /// Order (bigger first).
    pub sort_order: i64,
    /// Its tags.
    pub tags: Vec<Tag>,
}

/// The live library: groups (bigger order first) with their tags.
pub async fn library(db: &Db, corp_id: &str) -> Result<Vec<GroupView>, StoreError> {
    const GROUPS: &str = "SELECT group_id, name, sort_order FROM tag_group WHERE corp_id = $1 \
        AND deleted_at_ms IS NULL ORDER BY sort_order DESC, group_id";
    let groups: Vec<(String, String, i64)> = on_db!(db, |pool| sqlx::query_as(GROUPS)
        .bind(corp_id)
        .fetch_all(pool)
        .await)?;
    let mut tags = live_tags(db, corp_id).await?;
    tags.sort_by(|a, b| {
        b.sort_order
            .cmp(&a.sort_order)
            .then(a.tag_id.cmp(&b.tag_id))
    });
    Ok(groups
        .into_iter()
        .map(|(group_id, name, sort_order)| GroupView {
            tags: tags
                .iter()
                .filter(|t| t.group_id == group_id)
                .cloned()
                .collect(),
            group_id,
            name,
            sort_order,
        })
        .collect())
}

/// WeCom's limit on tag and group names (characters).
pub const MAX_NAME_CHARS: usize = 30;

/// A tag or group name: trimmed, 1..=[`MAX_NAME_CHARS`] characters; the reason in Chinese
/// otherwise.
pub fn check_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    let n = name.chars().count();
    if n == 0 {
        return Err("名称不能为空 / name is empty".to_owned());
    }
    if n > MAX_NAME_CHARS {
        return Err(format!(
            "名称最多 {MAX_NAME_CHARS} 个字（「{}…」）",
            name.chars().take(8).collect::<String>()
        ));
    }
    Ok(name.to_owned())
}

/// Whether `id` names a live group.
pub async fn is_group(db: &Db, corp_id: &str, id: &str) -> Result<bool, StoreError> {
    const SQL: &str = "SELECT COUNT(*) FROM tag_group WHERE corp_id = $1 AND group_id = $2 \
        AND deleted_at_ms IS NULL";
    let n: i64 = on_db!(db, |pool| sqlx::query_scalar(SQL)
        .bind(corp_id)
        .bind(id)
        .fetch_one(pool)
        .await)?;
    Ok(n > 0)
}

/// Asks WeCom to create tags (in a group, or a new group): the tags appear in the library once
/// the outbox has delivered the call (WeCom assigns the ids). Returns the outbox item.
pub async fn request_create(
    db: &Db,
    corp_id: &str,
    intent: &crate::pipeline::outbox::Intent,
    actor: &str,
    now_ms: i64,
) -> Result<i64, StoreError> {
    let mut tx = db.begin().await?;
    let id =
        crate::pipeline::outbox::enqueue(&mut tx, corp_id, intent, actor, None, now_ms).await?;
    crate::auth::audit(
        &mut tx,
        corp_id,
        actor,
        "tag_library.create",
        "",
        &serde_json::to_value(intent).unwrap_or_default(),
        now_ms,
    )
    .await?;
    tx.commit().await?;
    crate::pipeline::outbox::notify();
    Ok(id)
}

/// Renames or reorders a tag or group here at once and in WeCom through the outbox.
pub async fn edit(
    db: &Db,
    corp_id: &str,
    id: &str,
    name: Option<&str>,
    order: Option<u32>,
    actor: &str,
    now_ms: i64,
) -> Result<i64, StoreError> {
    const TAG: &str = "UPDATE tag SET name = COALESCE($3, name), sort_order = COALESCE($4, sort_order), \
        updated_at_ms = $5 WHERE corp_id = $1 AND tag_id = $2 AND deleted_at_ms IS NULL";
    const GROUP: &str = "UPDATE tag_group SET name = COALESCE($3, name), \
        sort_order = COALESCE($4, sort_order), updated_at_ms = $5 \
        WHERE corp_id = $1 AND group_id = $2 AND deleted_at_ms IS NULL";
    let mut tx = db.begin().await?;
    let mut n = 0;
    for sql in [TAG, GROUP] {
        n += crate::on_tx!(&mut tx, |conn| sqlx::query(sql)
            .bind(corp_id)
            .bind(id)
            .bind(name)
            .bind(order.map(i64::from))
            .bind(now_ms)
            .execute(&mut *conn)
            .await
            .map(|r| r.rows_affected()))?;
    }
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    let intent = crate::pipeline::outbox::Intent::EditCorpTag {
        id: id.to_owned(),
        name: name.map(str::to_owned),
        order,
    };
    let item =
        crate::pipeline::outbox::enqueue(&mut tx, corp_id, &intent, actor, None, now_ms).await?;
    crate::auth::audit(
        &mut tx,
        corp_id,
        actor,
        "tag_library.edit",
        id,
        &serde_json::json!({"name": name, "order": order}),
        now_ms,
    )
    .await?;
    tx.commit().await?;
    crate::pipeline::outbox::notify();
    Ok(item)
}

/// Deletes tags or whole groups here at once and in WeCom through the outbox. Returns the outbox
/// item and the deleted tag ids, which customers lose through
/// [`crate::domain::customers::record::delete_corp_tags`] (the one to call).
pub async fn delete(
    db: &Db,
    corp_id: &str,
    tag_ids: &[String],
    group_ids: &[String],
    actor: &str,
    now_ms: i64,
) -> Result<(i64, Vec<String>), StoreError> {
    const TAG: &str = "UPDATE tag SET deleted_at_ms = $3, updated_at_ms = $3 \
        WHERE corp_id = $1 AND tag_id = $2 AND deleted_at_ms IS NULL";
    const GROUP_TAGS: &str = "UPDATE tag SET deleted_at_ms = $3, updated_at_ms = $3 \
        WHERE corp_id = $1 AND group_id = $2 AND deleted_at_ms IS NULL RETURNING tag_id";
    const GROUP: &str = "UPDATE tag_group SET deleted_at_ms = $3, updated_at_ms = $3 \
        WHERE corp_id = $1 AND group_id = $2 AND deleted_at_ms IS NULL";
    let mut tx = db.begin().await?;
    let mut gone: Vec<String> = Vec::new();
    for tag in tag_ids {
        let n = crate::on_tx!(&mut tx, |conn| sqlx::query(TAG)
            .bind(corp_id)
            .bind(tag)
            .bind(now_ms)
            .execute(&mut *conn)
            .await
            .map(|r| r.rows_affected()))?;
        if n > 0 {
            gone.push(tag.clone());
        }
    }
    for group in group_ids {
        let tags: Vec<String> = crate::on_tx!(&mut tx, |conn| sqlx::query_scalar(GROUP_TAGS)
            .bind(corp_id)
            .bind(group)
            .bind(now_ms)
            .fetch_all(&mut *conn)
            .await)?;
        gone.extend(tags);
        crate::on_tx!(&mut tx, |conn| sqlx::query(GROUP)
            .bind(corp_id)
            .bind(group)
            .bind(now_ms)
            .execute(&mut *conn)
            .await
            .map(|_| ()))?;
    }
    let intent = crate::pipeline::outbox::Intent::DelCorpTag {
        tag_ids: tag_ids.to_vec(),
        group_ids: group_ids.to_vec(),
    };
    let item =
        crate::pipeline::outbox::enqueue(&mut tx, corp_id, &intent, actor, None, now_ms).await?;
    crate::auth::audit(
        &mut tx,
        corp_id,
        actor,
        "tag_library.delete",
        "",
        &serde_json::json!({"tag_ids": tag_ids, "group_ids": group_ids}),
        now_ms,
    )
    .await?;
    tx.commit().await?;
    crate::pipeline::outbox::notify();
    Ok((item, gone))
}
