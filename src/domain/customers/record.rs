//! The customer record's tags and remarks, changed from our side: corp tags per follow relation
//! (sent to WeCom by `mark_tag`), remark and description (sent by `remark`), personal tags (ours
//! only), and the auto-tagging rules that set tags by channel, group chat or chat keywords.
//!
//! Each change updates our tables and writes its outbox intent in one transaction: our record
//! shows the change at once, marked pending until the outbox has delivered it. WeCom does not
//! call back for changes made through its API, so until then a fresh snapshot from WeCom (an
//! `edit_external_contact` callback, the nightly sync) does not know about them:
//! [`with_pending`] lays the undelivered intents over such a snapshot, so applying it does not
//! undo our edit, and once delivered WeCom's own answer agrees. Last writer wins by the time WeCom
//! saw it: an edit made in the WeCom client after our delivery comes back by callback and wins.

use std::collections::BTreeSet;

use serde::Serialize;

use wecom_sdk::{CorpId, ExternalUserId};

use crate::auth;
use crate::domain::customers::{RelationKey, RelationSnapshot};
use crate::pipeline::outbox::{self, Intent};
use crate::platform::db::{Db, StoreError, Tx};
use crate::{on_db, on_tx};

/// Longest remark WeCom's `remark` accepts, in characters.
pub const MAX_REMARK_CHARS: usize = 20;
/// Longest description WeCom's `remark` accepts, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 150;

/// Why a record change was refused.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The staff member does not (or no longer) follow the customer.
    #[error("the staff member does not follow this customer")]
    NotFollowed,
    /// Nothing to change.
    #[error("nothing to change")]
    Empty,
    /// No such personal tag or rule.
    #[error("not found")]
    NotFound,
    /// A remark or description longer than WeCom accepts (`field` is `remark` or
    /// `description`, `label` its Chinese name).
    #[error("{label}最多 {max} 个字")]
    TooLong {
        /// The field.
        field: &'static str,
        /// 备注 or 描述.
        label: &'static str,
        /// Its limit in characters.
        max: usize,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for RecordError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

/// Who or what makes a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Author {
    /// The acting staff member or key (`Principal::actor`), or `rule:<id>`.
    pub actor: String,
    /// The auto-tagging rule, when a rule made it.
    pub rule_id: Option<i64>,
}

/// What a tag edit did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TagEdit {
    /// The outbox item telling WeCom (`None` when nothing changed).
    pub outbox_id: Option<i64>,
    /// The relation's corp tags now (as we show them, pending delivery).
    pub tag_ids: Vec<String>,
    /// Tags that were added.
    pub added: Vec<String>,
    /// Tags that were removed.
    pub removed: Vec<String>,
}

fn parse_list(json: &str) -> Vec<String> {
    serde_json::from_str(json).unwrap_or_default()
}

fn json_list(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".to_owned())
}

/// The active relation's tag list, locked for this transaction on PostgreSQL.
async fn locked_tags(tx: &mut Tx, relation: RelationKey<'_>) -> Result<Option<String>, StoreError> {
    let (corp_id, user_id, ext) = relation.parts();
    let sql = if tx.is_postgres() {
        "SELECT tag_ids FROM follow_relation WHERE corp_id = $1 AND user_id = $2 \
         AND external_user_id = $3 AND status = 'active' FOR UPDATE"
    } else {
        "SELECT tag_ids FROM follow_relation WHERE corp_id = $1 AND user_id = $2 \
         AND external_user_id = $3 AND status = 'active'"
    };
    let row = on_tx!(tx, |conn| sqlx::query_scalar(sql)
        .bind(corp_id)
        .bind(user_id)
        .bind(ext)
        .fetch_optional(&mut *conn)
        .await)?;
    Ok(row)
}

/// Adds and removes corp tags on the relation and writes the `mark_tag` intent.
/// Only real changes are sent (a tag already there is not added again). With an
/// `idempotency_key`, an edit already made under that key is not made again (a rule applied by a
/// replayed event). Callers check that the tags exist in the library.
pub async fn edit_tags(
    db: &Db,
    relation: RelationKey<'_>,
    add: &[String],
    remove: &[String],
    author: &Author,
    idempotency_key: Option<&str>,
    now_ms: i64,
) -> Result<TagEdit, RecordError> {
    let (corp_id, user_id, ext) = relation.parts();
    const SET: &str = "UPDATE follow_relation SET tag_ids = $4, updated_at_ms = $5 \
        WHERE corp_id = $1 AND user_id = $2 AND external_user_id = $3";
    const ASSIGN: &str = "INSERT INTO tag_assignment (corp_id, user_id, external_user_id, tag_id, \
        rule_id, actor, at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) \
        ON CONFLICT (corp_id, user_id, external_user_id, tag_id) DO UPDATE \
        SET rule_id = excluded.rule_id, actor = excluded.actor, at_ms = excluded.at_ms";
    const UNASSIGN: &str = "DELETE FROM tag_assignment WHERE corp_id = $1 AND user_id = $2 \
        AND external_user_id = $3 AND tag_id = $4";
    if add.is_empty() && remove.is_empty() {
        return Err(RecordError::Empty);
    }
    let mut tx = db.begin().await?;
    if let Some(key) = idempotency_key
        && outbox::exists(&mut tx, corp_id, key).await?
    {
        let tags = locked_tags(&mut tx, relation).await?;
        return Ok(TagEdit {
            outbox_id: None,
            tag_ids: tags.as_deref().map(parse_list).unwrap_or_default(),
            added: Vec::new(),
            removed: Vec::new(),
        });
    }
    let current = locked_tags(&mut tx, relation)
        .await?
        .ok_or(RecordError::NotFollowed)?;
    let mut tags: BTreeSet<String> = parse_list(&current).into_iter().collect();
    let remove_set: BTreeSet<&String> = remove.iter().collect();
    let added: Vec<String> = add
        .iter()
        .filter(|t| !remove_set.contains(t))
        .filter(|t| tags.insert((*t).clone()))
        .cloned()
        .collect();
    let removed: Vec<String> = remove.iter().filter(|t| tags.remove(*t)).cloned().collect();
    let tag_ids: Vec<String> = tags.into_iter().collect();
    if added.is_empty() && removed.is_empty() {
        return Ok(TagEdit {
            outbox_id: None,
            tag_ids,
            added,
            removed,
        });
    }
    on_tx!(&mut tx, |conn| sqlx::query(SET)
        .bind(corp_id)
        .bind(user_id)
        .bind(ext)
        .bind(json_list(&tag_ids))
        .bind(now_ms)
        .execute(&mut *conn)
        .await
        .map(|_| ()))?;
    for tag in &added {
        on_tx!(&mut tx, |conn| sqlx::query(ASSIGN)
            .bind(corp_id)
            .bind(user_id)
            .bind(ext)
            .bind(tag)
            .bind(author.rule_id)
            .bind(&author.actor)
            .bind(now_ms)
            .execute(&mut *conn)
            .await
            .map(|_| ()))?;
    }
    for tag in &removed {
        on_tx!(&mut tx, |conn| sqlx::query(UNASSIGN)
            .bind(corp_id)
            .bind(user_id)
            .bind(ext)
            .bind(tag)
            .execute(&mut *conn)
            .await
            .map(|_| ()))?;
    }
    let intent = Intent::MarkTag {
        user_id: relation.user_id.clone(),
        external_user_id: relation.external_user_id.clone(),
        add: added.clone(),
        remove: removed.clone(),
    };
    let outbox_id = outbox::enqueue(
        &mut tx,
        corp_id,
        &intent,
        &author.actor,
        idempotency_key,
        now_ms,
    )
    .await?;
    auth::audit(
        &mut tx,
        corp_id,
        &author.actor,
        "relation.tags",
        &format!("{user_id}/{ext}"),
        &serde_json::json!({"add": added, "remove": removed, "rule_id": author.rule_id, "outbox_id": outbox_id}),
        now_ms,
    )
    .await?;
    tx.commit().await?;
    outbox::notify();
    Ok(TagEdit {
        outbox_id: Some(outbox_id),
        tag_ids,
        added,
        removed,
    })
}

/// Sets remark and/or description of a relation and writes the `remark` intent. Either longer
/// than WeCom accepts is [`RecordError::TooLong`], before anything is written.
pub async fn edit_remark(
    db: &Db,
    relation: RelationKey<'_>,
    remark: Option<&str>,
    description: Option<&str>,
    actor: &str,
    now_ms: i64,
) -> Result<i64, RecordError> {
    let (corp_id, user_id, ext) = relation.parts();
    const SET: &str = "UPDATE follow_relation SET remark = COALESCE($4, remark), \
        description = COALESCE($5, description), updated_at_ms = $6 \
        WHERE corp_id = $1 AND user_id = $2 AND external_user_id = $3 AND status = 'active'";
    if remark.is_none() && description.is_none() {
        return Err(RecordError::Empty);
    }
    let limits = [
        ("remark", "备注", MAX_REMARK_CHARS, remark),
        ("description", "描述", MAX_DESCRIPTION_CHARS, description),
    ];
    for (field, label, max, value) in limits {
        if value.is_some_and(|v| v.chars().count() > max) {
            return Err(RecordError::TooLong { field, label, max });
        }
    }
    let mut tx = db.begin().await?;
    let n = on_tx!(&mut tx, |conn| sqlx::query(SET)
        .bind(corp_id)
        .bind(user_id)
        .bind(ext)
        .bind(remark)
        .bind(description)
        .bind(now_ms)
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected()))?;
    if n == 0 {
        return Err(RecordError::NotFollowed);
    }
    let intent = Intent::Remark {
        user_id: relation.user_id.clone(),
        external_user_id: relation.external_user_id.clone(),
        remark: remark.map(str::to_owned),
        description: description.map(str::to_owned),
    };
    let id = outbox::enqueue(&mut tx, corp_id, &intent, actor, None, now_ms).await?;
    auth::audit(
        &mut tx,
        corp_id,
        actor,
        "relation.remark",
        &format!("{user_id}/{ext}"),
        &serde_json::json!({"remark": remark, "description": description, "outbox_id": id}),
        now_ms,
    )
    .await?;
    tx.commit().await?;
    outbox::notify();
    Ok(id)
}

/// `snapshot` (what WeCom reports now) with our undelivered edits of that relation on top, in the
/// order they were made: what WeCom will show once the outbox has delivered them.
pub async fn with_pending(
    db: &Db,
    corp_id: &CorpId,
    snapshot: &RelationSnapshot,
) -> Result<RelationSnapshot, StoreError> {
    let mut page = with_pending_all(db, corp_id, &[snapshot]).await?;
    Ok(page.pop().unwrap_or_else(|| snapshot.clone()))
}

/// [`with_pending`] for many snapshots (a page of a sync) with one query for the pending edits.
pub async fn with_pending_all(
    db: &Db,
    corp_id: &CorpId,
    snapshots: &[&RelationSnapshot],
) -> Result<Vec<RelationSnapshot>, StoreError> {
    let customers: Vec<&str> = snapshots
        .iter()
        .map(|s| s.external_user_id.as_str())
        .collect();
    let pending = outbox::pending_for_customers(db, corp_id, &customers).await?;
    if pending.is_empty() {
        return Ok(snapshots.iter().map(|s| (*s).clone()).collect());
    }
    // A tag deleted from the library since the edit will not reach WeCom.
    let live: BTreeSet<String> = crate::domain::tags::live_tags(db, corp_id.as_str())
        .await?
        .into_iter()
        .map(|t| t.tag_id)
        .collect();
    Ok(snapshots
        .iter()
        .map(|s| {
            let edits = pending.get(s.external_user_id.as_str());
            overlay(s, edits.map_or(&[][..], Vec::as_slice), &live)
        })
        .collect())
}

/// `snapshot` with `pending` (one customer's edits, oldest first) applied.
fn overlay(
    snapshot: &RelationSnapshot,
    pending: &[(i64, Intent)],
    live: &BTreeSet<String>,
) -> RelationSnapshot {
    let mut s = snapshot.clone();
    for (_, intent) in pending {
        match intent {
            Intent::MarkTag {
                user_id,
                add,
                remove,
                ..
            } if s.user_id == *user_id => {
                for t in add {
                    if live.contains(t) && !s.tag_ids.contains(t) {
                        s.tag_ids.push(t.clone());
                    }
                }
                s.tag_ids.retain(|t| !remove.contains(t));
            }
            Intent::Remark {
                user_id,
                remark,
                description,
                ..
            } if s.user_id == *user_id => {
                if let Some(r) = remark {
                    s.remark.clone_from(r);
                }
                if let Some(d) = description {
                    s.description.clone_from(d);
                }
            }
            _ => {}
        }
    }
    s
}

/// A corp tag on a relation, with who set it when we know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct TagAssignment {
    /// Tag id.
    pub tag_id: String,
    /// The rule that set it.
    pub rule_id: Option<i64>,
    /// Who set it.
    pub actor: String,
    /// When, epoch ms.
    pub at_ms: i64,
}

/// Who set the tags of one relation (tags set in the WeCom client have no entry).
pub async fn tag_assignments(
    db: &Db,
    relation: RelationKey<'_>,
) -> Result<Vec<TagAssignment>, StoreError> {
    let (corp_id, user_id, ext) = relation.parts();
    const SQL: &str = "SELECT tag_id, rule_id, actor, at_ms FROM tag_assignment \
        WHERE corp_id = $1 AND user_id = $2 AND external_user_id = $3 ORDER BY tag_id";
    let rows = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp_id)
        .bind(user_id)
        .bind(ext)
        .fetch_all(pool)
        .await)?;
    Ok(rows)
}

// ---------------------------------------------------------------------------------------------
// Personal tags
// ---------------------------------------------------------------------------------------------

/// A personal tag (ours only, never sent to WeCom).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct PersonalTag {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Display color (`#rrggbb` or empty).
    pub color: String,
    /// Who created it.
    pub created_by: String,
    /// Created, epoch ms.
    pub created_at_ms: i64,
}

/// Creates a personal tag; `Conflict` when a live one has that name.
pub async fn create_personal_tag(
    db: &Db,
    corp_id: &str,
    name: &str,
    color: &str,
    actor: &str,
    now_ms: i64,
) -> Result<PersonalTag, StoreError> {
    const SQL: &str = "INSERT INTO personal_tag (corp_id, name, color, created_by, created_at_ms) \
        VALUES ($1, $2, $3, $4, $5) RETURNING id, name, color, created_by, created_at_ms";
    let mut tx = db.begin().await?;
    let tag: PersonalTag = on_tx!(&mut tx, |conn| sqlx::query_as(SQL)
        .bind(corp_id)
        .bind(name)
        .bind(color)
        .bind(actor)
        .bind(now_ms)
        .fetch_one(&mut *conn)
        .await)?;
    auth::audit(
        &mut tx,
        corp_id,
        actor,
        "personal_tag.create",
        &tag.id.to_string(),
        &serde_json::json!({"name": name}),
        now_ms,
    )
    .await?;
    tx.commit().await?;
    Ok(tag)
}

/// Live personal tags of a corp.
pub async fn personal_tags(db: &Db, corp_id: &str) -> Result<Vec<PersonalTag>, StoreError> {
    const SQL: &str = "SELECT id, name, color, created_by, created_at_ms FROM personal_tag \
        WHERE corp_id = $1 AND deleted_at_ms IS NULL ORDER BY name";
    let rows = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp_id)
        .fetch_all(pool)
        .await)?;
    Ok(rows)
}

/// Deletes a personal tag (and takes it off every customer).
pub async fn delete_personal_tag(
    db: &Db,
    corp_id: &str,
    id: i64,
    actor: &str,
    now_ms: i64,
) -> Result<(), RecordError> {
    const DEL: &str = "UPDATE personal_tag SET deleted_at_ms = $3 WHERE corp_id = $1 AND id = $2 \
        AND deleted_at_ms IS NULL";
    const OFF: &str = "DELETE FROM customer_personal_tag WHERE corp_id = $1 AND tag_id = $2";
    let mut tx = db.begin().await?;
    let n = on_tx!(&mut tx, |conn| sqlx::query(DEL)
        .bind(corp_id)
        .bind(id)
        .bind(now_ms)
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected()))?;
    if n == 0 {
        return Err(RecordError::NotFound);
    }
    on_tx!(&mut tx, |conn| sqlx::query(OFF)
        .bind(corp_id)
        .bind(id)
        .execute(&mut *conn)
        .await
        .map(|_| ()))?;
    auth::audit(
        &mut tx,
        corp_id,
        actor,
        "personal_tag.delete",
        &id.to_string(),
        &serde_json::json!({}),
        now_ms,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A personal tag on a customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct CustomerPersonalTag {
    /// Tag id.
    pub tag_id: i64,
    /// Its name.
    pub name: String,
    /// The rule that set it.
    pub rule_id: Option<i64>,
    /// Who set it.
    pub actor: String,
    /// When, epoch ms.
    pub at_ms: i64,
}

/// Personal tags on a customer.
pub async fn customer_personal_tags(
    db: &Db,
    corp_id: &CorpId,
    ext: &ExternalUserId,
) -> Result<Vec<CustomerPersonalTag>, StoreError> {
    let (corp_id, ext) = (corp_id.as_str(), ext.as_str());
    const SQL: &str = "SELECT c.tag_id, p.name, c.rule_id, c.actor, c.at_ms \
        FROM customer_personal_tag c JOIN personal_tag p ON p.corp_id = c.corp_id AND p.id = c.tag_id \
        WHERE c.corp_id = $1 AND c.external_user_id = $2 AND p.deleted_at_ms IS NULL ORDER BY p.name";
    let rows = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp_id)
        .bind(ext)
        .fetch_all(pool)
        .await)?;
    Ok(rows)
}

/// Adds and removes personal tags on a customer. Unknown or deleted tag ids are `NotFound`. One
/// statement per step whatever the number of tags (the write lock is held once, briefly).
pub async fn edit_personal_tags(
    db: &Db,
    corp_id: &CorpId,
    ext: &ExternalUserId,
    add: &[i64],
    remove: &[i64],
    author: &Author,
    now_ms: i64,
) -> Result<(), RecordError> {
    let (corp_id, ext) = (corp_id.as_str(), ext.as_str());
    let mut add = add.to_vec();
    add.sort_unstable();
    add.dedup();
    let mut remove = remove.to_vec();
    remove.sort_unstable();
    remove.dedup();
    if add.is_empty() && remove.is_empty() {
        return Err(RecordError::Empty);
    }
    let mut tx = db.begin().await?;
    if !add.is_empty() {
        let live = format!(
            "SELECT COUNT(*) FROM personal_tag WHERE corp_id = $1 AND deleted_at_ms IS NULL \
             AND id IN ({})",
            crate::platform::db::placeholders(2, add.len())
        );
        let n: i64 = on_tx!(&mut tx, |conn| {
            let mut q = sqlx::query_scalar(sqlx::AssertSqlSafe(live.as_str())).bind(corp_id);
            for id in &add {
                q = q.bind(id);
            }
            q.fetch_one(&mut *conn).await
        })?;
        if usize::try_from(n).ok() != Some(add.len()) {
            return Err(RecordError::NotFound);
        }
        let insert = format!(
            "INSERT INTO customer_personal_tag (corp_id, external_user_id, tag_id, rule_id, actor, \
             at_ms) SELECT $1, $2, id, $3, $4, $5 FROM personal_tag WHERE corp_id = $1 \
             AND id IN ({}) ON CONFLICT (corp_id, external_user_id, tag_id) DO NOTHING",
            crate::platform::db::placeholders(6, add.len())
        );
        on_tx!(&mut tx, |conn| {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(insert.as_str()))
                .bind(corp_id)
                .bind(ext)
                .bind(author.rule_id)
                .bind(&author.actor)
                .bind(now_ms);
            for id in &add {
                q = q.bind(id);
            }
            q.execute(&mut *conn).await.map(|_| ())
        })?;
    }
    if !remove.is_empty() {
        let delete = format!(
            "DELETE FROM customer_personal_tag WHERE corp_id = $1 AND external_user_id = $2 \
             AND tag_id IN ({})",
            crate::platform::db::placeholders(3, remove.len())
        );
        on_tx!(&mut tx, |conn| {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(delete.as_str()))
                .bind(corp_id)
                .bind(ext);
            for id in &remove {
                q = q.bind(id);
            }
            q.execute(&mut *conn).await.map(|_| ())
        })?;
    }
    auth::audit(
        &mut tx,
        corp_id,
        &author.actor,
        "customer.personal_tags",
        ext,
        &serde_json::json!({"add": add, "remove": remove, "rule_id": author.rule_id}),
        now_ms,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Auto-tagging rules
// ---------------------------------------------------------------------------------------------

/// What starts a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A customer added through a 联系我 way whose `state` matches (exact, or a prefix ending in
    /// `*`).
    Channel,
    /// A customer joining a group chat with one of these chat ids.
    GroupJoin,
    /// A message of the customer in archived chat containing one of these keywords.
    Keyword,
}

impl Trigger {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Channel => "channel",
            Self::GroupJoin => "group_join",
            Self::Keyword => "keyword",
        }
    }
}

/// An auto-tagging rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Trigger.
    pub trigger: Trigger,
    /// What the trigger matches.
    pub patterns: Vec<String>,
    /// Corp tags it sets.
    pub corp_tag_ids: Vec<String>,
    /// Personal tags it sets.
    pub personal_tag_ids: Vec<i64>,
    /// Whether it runs.
    pub enabled: bool,
    /// Who created it.
    pub created_by: String,
    /// Created, epoch ms.
    pub created_at_ms: i64,
}

type RuleRow = (
    i64,
    String,
    String,
    String,
    String,
    String,
    i64,
    String,
    i64,
);

fn rule_from(row: RuleRow) -> Option<Rule> {
    let (id, name, trigger, patterns, corp, personal, enabled, created_by, created_at_ms) = row;
    let trigger = match trigger.as_str() {
        "channel" => Trigger::Channel,
        "group_join" => Trigger::GroupJoin,
        "keyword" => Trigger::Keyword,
        _ => return None,
    };
    Some(Rule {
        id,
        name,
        trigger,
        patterns: parse_list(&patterns),
        corp_tag_ids: parse_list(&corp),
        personal_tag_ids: serde_json::from_str(&personal).unwrap_or_default(),
        enabled: enabled != 0,
        created_by,
        created_at_ms,
    })
}

/// A rule to create.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct NewRule {
    /// Name.
    pub name: String,
    /// Trigger.
    pub trigger: Trigger,
    /// What it matches.
    pub patterns: Vec<String>,
    /// Corp tags to set.
    #[serde(default)]
    pub corp_tag_ids: Vec<String>,
    /// Personal tags to set.
    #[serde(default)]
    pub personal_tag_ids: Vec<i64>,
}

impl NewRule {
    /// What is wrong with the rule as written, as `(field, reason)`: patterns present, bounded
    /// and long enough for keywords, at least one tag and not too many. Whether the tags exist
    /// is the caller's to check.
    pub fn check(&self) -> Result<(), (String, &'static str)> {
        let bad = |field: &str, why| Err((field.to_owned(), why));
        if self.patterns.is_empty() || self.patterns.iter().any(|p| p.trim().is_empty()) {
            return bad(
                "patterns",
                "至少一个非空的匹配内容 / at least one non-empty pattern",
            );
        }
        if self.patterns.len() > 200 {
            return bad("patterns", "最多 200 个");
        }
        if let Some(i) = self.patterns.iter().position(|p| p.chars().count() > 100) {
            return Err((format!("patterns[{i}]"), "最多 100 个字"));
        }
        if self.corp_tag_ids.len() > 100 || self.personal_tag_ids.len() > 100 {
            return bad("corp_tag_ids", "每条规则最多打 100 个标签");
        }
        if self.corp_tag_ids.is_empty() && self.personal_tag_ids.is_empty() {
            return bad(
                "corp_tag_ids",
                "规则至少要打一个标签 / a rule must set at least one tag",
            );
        }
        if self.trigger == Trigger::Keyword && self.patterns.iter().any(|p| p.chars().count() < 2) {
            return bad(
                "patterns",
                "关键词至少 2 个字，避免误打 / keywords need at least 2 characters",
            );
        }
        Ok(())
    }
}

/// Creates a rule.
pub async fn create_rule(
    db: &Db,
    corp_id: &str,
    rule: &NewRule,
    actor: &str,
    now_ms: i64,
) -> Result<i64, StoreError> {
    const SQL: &str = "INSERT INTO auto_tag_rule (corp_id, name, trigger_kind, patterns, \
        corp_tag_ids, personal_tag_ids, created_by, created_at_ms) \
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id";
    let mut tx = db.begin().await?;
    let id: i64 = on_tx!(&mut tx, |conn| sqlx::query_scalar(SQL)
        .bind(corp_id)
        .bind(&rule.name)
        .bind(rule.trigger.as_str())
        .bind(json_list(&rule.patterns))
        .bind(json_list(&rule.corp_tag_ids))
        .bind(serde_json::to_string(&rule.personal_tag_ids).unwrap_or_else(|_| "[]".to_owned()))
        .bind(actor)
        .bind(now_ms)
        .fetch_one(&mut *conn)
        .await)?;
    auth::audit(
        &mut tx,
        corp_id,
        actor,
        "auto_tag_rule.create",
        &id.to_string(),
        &serde_json::json!({"name": rule.name}),
        now_ms,
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// Live rules of a corp (of one trigger when given).
pub async fn rules(
    db: &Db,
    corp_id: &str,
    trigger: Option<Trigger>,
) -> Result<Vec<Rule>, StoreError> {
    const SQL: &str = "SELECT id, name, trigger_kind, patterns, corp_tag_ids, personal_tag_ids, \
        enabled, created_by, created_at_ms FROM auto_tag_rule WHERE corp_id = $1 \
        AND deleted_at_ms IS NULL AND ($2 IS NULL OR trigger_kind = $2) ORDER BY id";
    let rows: Vec<RuleRow> = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp_id)
        .bind(trigger.map(Trigger::as_str))
        .fetch_all(pool)
        .await)?;
    Ok(rows.into_iter().filter_map(rule_from).collect())
}

/// Deletes a rule (tags it set stay, still naming it).
pub async fn delete_rule(
    db: &Db,
    corp_id: &str,
    id: i64,
    actor: &str,
    now_ms: i64,
) -> Result<(), RecordError> {
    const SQL: &str = "UPDATE auto_tag_rule SET deleted_at_ms = $3 WHERE corp_id = $1 AND id = $2 \
        AND deleted_at_ms IS NULL";
    let mut tx = db.begin().await?;
    let n = on_tx!(&mut tx, |conn| sqlx::query(SQL)
        .bind(corp_id)
        .bind(id)
        .bind(now_ms)
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected()))?;
    if n == 0 {
        return Err(RecordError::NotFound);
    }
    auth::audit(
        &mut tx,
        corp_id,
        actor,
        "auto_tag_rule.delete",
        &id.to_string(),
        &serde_json::json!({}),
        now_ms,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

fn matches(trigger: Trigger, pattern: &str, value: &str) -> bool {
    match trigger {
        Trigger::Channel => match pattern.strip_suffix('*') {
            Some(prefix) => value.starts_with(prefix),
            None => value == pattern,
        },
        Trigger::GroupJoin => value == pattern,
        Trigger::Keyword => {
            !pattern.is_empty() && value.to_lowercase().contains(&pattern.to_lowercase())
        }
    }
}

/// Runs the enabled rules of `trigger` whose patterns match `value` on the relation (`user_id`,
/// `ext`): their corp tags go out by `mark_tag` (each rule once per relation, however often the
/// event is replayed), their personal tags are set on the customer. Tags the library does not
/// list (deleted in WeCom) are left out. Returns the ids of the rules that fired.
pub async fn apply_rules(
    db: &Db,
    relation: RelationKey<'_>,
    trigger: Trigger,
    value: &str,
    now_ms: i64,
) -> Result<Vec<i64>, RecordError> {
    let corp_id = relation.corp_id;
    let (user_id, ext) = (relation.user_id, relation.external_user_id);
    let mut fired = Vec::new();
    let live: BTreeSet<String> = crate::domain::tags::live_tags(db, corp_id.as_str())
        .await?
        .into_iter()
        .map(|t| t.tag_id)
        .collect();
    for rule in rules(db, corp_id.as_str(), Some(trigger)).await? {
        if !rule.enabled || !rule.patterns.iter().any(|p| matches(trigger, p, value)) {
            continue;
        }
        let author = Author {
            actor: format!("rule:{}", rule.id),
            rule_id: Some(rule.id),
        };
        let corp_tags: Vec<String> = rule
            .corp_tag_ids
            .iter()
            .filter(|t| live.contains(*t))
            .cloned()
            .collect();
        if !corp_tags.is_empty() {
            let key = format!("rule:{}:{user_id}:{ext}", rule.id);
            match edit_tags(db, relation, &corp_tags, &[], &author, Some(&key), now_ms).await {
                Ok(_) => {}
                // The relation ended meanwhile: nothing to tag.
                Err(RecordError::NotFollowed) => continue,
                Err(e) => return Err(e),
            }
        }
        if !rule.personal_tag_ids.is_empty() {
            match edit_personal_tags(
                db,
                corp_id,
                ext,
                &rule.personal_tag_ids,
                &[],
                &author,
                now_ms,
            )
            .await
            {
                // A personal tag deleted since the rule was made.
                Ok(()) | Err(RecordError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        fired.push(rule.id);
    }
    Ok(fired)
}

/// The hook for archived chat (the chat-archive feature calls it for each customer message):
/// keyword rules on the relation between the customer and the staff member in the chat.
pub async fn on_customer_message(
    db: &Db,
    relation: RelationKey<'_>,
    text: &str,
    now_ms: i64,
) -> Result<Vec<i64>, RecordError> {
    apply_rules(db, relation, Trigger::Keyword, text, now_ms).await
}

/// WeCom removes a deleted tag from every customer: so do we, on the relations that carry one of
/// `tag_ids`, and we forget who set it.
pub async fn forget_tags(
    db: &Db,
    corp_id: &str,
    tag_ids: &[String],
    now_ms: i64,
) -> Result<u64, StoreError> {
    const FIND: &str = "SELECT user_id, external_user_id, tag_ids FROM follow_relation \
        WHERE corp_id = $1 AND LOWER(tag_ids) LIKE $2 ESCAPE '\\'";
    const SET: &str = "UPDATE follow_relation SET tag_ids = $4, updated_at_ms = $5 \
        WHERE corp_id = $1 AND user_id = $2 AND external_user_id = $3 AND tag_ids = $6";
    const UNASSIGN: &str = "DELETE FROM tag_assignment WHERE corp_id = $1 AND tag_id = $2";
    let mut changed = 0;
    for tag in tag_ids {
        let pattern =
            crate::platform::db::like_contains(&serde_json::Value::from(tag.as_str()).to_string());
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

/// Replaces the tag library mirror with WeCom's full listing and strips the tags it no longer has
/// from every customer.
pub async fn replace_tag_library(
    db: &Db,
    corp_id: &str,
    groups: &[crate::domain::tags::LibraryGroup],
    now_ms: i64,
) -> Result<crate::domain::tags::LibraryChanges, StoreError> {
    let changes = crate::domain::tags::replace_library(db, corp_id, groups, now_ms).await?;
    forget_tags(db, corp_id, &changes.gone, now_ms).await?;
    Ok(changes)
}

/// Deletes tags or whole groups (here at once, in WeCom through the outbox); customers lose them,
/// as in WeCom. Returns the outbox item.
pub async fn delete_corp_tags(
    db: &Db,
    corp_id: &str,
    tag_ids: &[String],
    group_ids: &[String],
    actor: &str,
    now_ms: i64,
) -> Result<i64, StoreError> {
    let (item, gone) =
        crate::domain::tags::delete(db, corp_id, tag_ids, group_ids, actor, now_ms).await?;
    forget_tags(db, corp_id, &gone, now_ms).await?;
    Ok(item)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_by_trigger() {
        assert!(matches(Trigger::Channel, "展会2026", "展会2026"));
        assert!(!matches(Trigger::Channel, "展会2026", "展会2026b"));
        assert!(matches(Trigger::Channel, "展会*", "展会2026"));
        assert!(!matches(Trigger::Channel, "展会*", "官网"));
        assert!(matches(
            Trigger::GroupJoin,
            "wrOgQhDgAAMYQiS5ol9G7gK9JVAAAA",
            "wrOgQhDgAAMYQiS5ol9G7gK9JVAAAA"
        ));
        assert!(matches(Trigger::Keyword, "报价", "麻烦发一下报价单"));
        assert!(matches(Trigger::Keyword, "VIP", "我想办vip"));
        assert!(!matches(Trigger::Keyword, "", "anything"));
    }
}
