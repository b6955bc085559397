//! Customers and follow relations (客户 and 跟进关系): the profile WeCom returns for a customer,
//! one relation per (staff member, customer), and the history of every relation — who added or
//! ended it, when, why and from which source (a callback or the reconciliation).
//!
//! Relations are never deleted, only ended: the alert and reassignment features read the history.

pub mod record;

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use wecom_sdk::{ChatId, CorpId, ExternalUserId, UserId};

use crate::platform::db::{Db, StoreError, Tx, json_rows};
use crate::{on_db, on_tx};

/// One follow relation: a staff member and a customer of a corp. The three ids are typed, so
/// they cannot be passed in the wrong order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelationKey<'a> {
    /// Corp.
    pub corp_id: &'a CorpId,
    /// The staff member.
    pub user_id: &'a UserId,
    /// The customer.
    pub external_user_id: &'a ExternalUserId,
}

impl<'a> RelationKey<'a> {
    /// The relation of `user_id` and `external_user_id` in `corp_id`.
    pub fn new(
        corp_id: &'a CorpId,
        user_id: &'a UserId,
        external_user_id: &'a ExternalUserId,
    ) -> Self {
        Self {
            corp_id,
            user_id,
            external_user_id,
        }
    }

    /// The ids as stored (corp, staff member, customer), for binding.
    pub fn parts(self) -> (&'a str, &'a str, &'a str) {
        (
            self.corp_id.as_str(),
            self.user_id.as_str(),
            self.external_user_id.as_str(),
        )
    }
}

/// A customer's profile, as `externalcontact/get` and `batch/get_by_user` return it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct CustomerProfile {
    /// `external_userid`.
    #[sqlx(try_from = "String")]
    pub external_user_id: ExternalUserId,
    /// Name (WeChat nickname or WeCom name).
    pub name: String,
    /// 1 WeChat user, 2 WeCom user.
    pub customer_type: i64,
    /// 0 unknown, 1 male, 2 female.
    pub gender: i64,
    /// Avatar URL.
    pub avatar: String,
    /// Company (WeCom users only).
    pub corp_name: String,
    /// Full company name (WeCom users only).
    pub corp_full_name: String,
    /// Position (WeCom users only).
    pub position: String,
    /// unionid, when the corp bound a WeChat developer account.
    pub unionid: Option<String>,
}

/// A relation as WeCom reports it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RelationSnapshot {
    /// The staff member.
    pub user_id: UserId,
    /// The customer.
    pub external_user_id: ExternalUserId,
    /// 备注.
    pub remark: String,
    /// 描述.
    pub description: String,
    /// 备注企业名称.
    pub remark_corp_name: String,
    /// 备注手机号.
    pub remark_mobiles: Vec<String>,
    /// Corp (and strategy) tag ids on this relation, sorted.
    pub tag_ids: Vec<String>,
    /// How the customer was added (`add_way`).
    pub add_way: i64,
    /// The 联系我 `state` that brought the customer (channel attribution).
    pub state: Option<String>,
    /// Who initiated the add.
    pub oper_user_id: Option<String>,
    /// When the relation was created in WeCom (`createtime`), epoch ms.
    pub added_at_ms: Option<i64>,
}

/// Why a relation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EndReason {
    /// 员工删客户 (`del_external_contact`).
    DeletedByStaff,
    /// 客户删员工 (`del_follow_user`).
    DeletedByCustomer,
    /// Removed by WeCom because the customer was handed over (`Source=DELETE_BY_TRANSFER`).
    Transferred,
    /// Gone from WeCom without any event; found by the reconciliation.
    Vanished,
}

impl EndReason {
    /// The `status` column value.
    pub fn status(self) -> &'static str {
        match self {
            Self::DeletedByStaff => "deleted_by_staff",
            Self::DeletedByCustomer => "deleted_by_customer",
            Self::Transferred => "transferred",
            Self::Vanished => "vanished",
        }
    }
}

/// A relation's state: the `status` column, read back typed (an unknown stored value is an error,
/// not a guess).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "&'static str")]
pub enum RelationStatus {
    /// The staff member follows the customer.
    Active,
    /// It ended, and why.
    Ended(EndReason),
}

impl RelationStatus {
    /// The stored name (`active`, or the [`EndReason::status`]).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Ended(reason) => reason.status(),
        }
    }
}

impl From<RelationStatus> for &'static str {
    fn from(s: RelationStatus) -> Self {
        s.as_str()
    }
}

impl TryFrom<String> for RelationStatus {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Ok(match s.as_str() {
            "active" => Self::Active,
            "deleted_by_staff" => Self::Ended(EndReason::DeletedByStaff),
            "deleted_by_customer" => Self::Ended(EndReason::DeletedByCustomer),
            "transferred" => Self::Ended(EndReason::Transferred),
            "vanished" => Self::Ended(EndReason::Vanished),
            _ => return Err(format!("unknown relation status {s:?}")),
        })
    }
}

impl PartialEq<&str> for RelationStatus {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Display for RelationStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What applying a snapshot changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RelationChange {
    /// We did not know the relation.
    Added,
    /// It had ended and WeCom shows it again, added after it ended (a re-add).
    Reactivated,
    /// Remark, description, mobiles or tags differ.
    Edited,
    /// Nothing differs.
    Unchanged,
    /// The relation ended after this snapshot's relation was created: the snapshot is stale
    /// (WeCom is eventually consistent), so it was not applied.
    StaleIgnored,
}

impl RelationChange {
    /// The `change` a relation's history records for this outcome; `None` when nothing changed.
    pub fn history_label(self) -> Option<&'static str> {
        match self {
            Self::Added => Some("added"),
            Self::Reactivated => Some("reactivated"),
            Self::Edited => Some("edited"),
            Self::Unchanged | Self::StaleIgnored => None,
        }
    }
}

/// A relation as we store it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct FollowRelation {
    /// Staff member.
    #[sqlx(try_from = "String")]
    pub user_id: UserId,
    /// Customer.
    #[sqlx(try_from = "String")]
    pub external_user_id: ExternalUserId,
    /// 备注.
    pub remark: String,
    /// 描述.
    pub description: String,
    /// 备注企业名称.
    pub remark_corp_name: String,
    /// JSON array of mobiles.
    pub remark_mobiles: String,
    /// JSON array of tag ids.
    pub tag_ids: String,
    /// `add_way`.
    pub add_way: i64,
    /// Channel `state`.
    pub state: Option<String>,
    /// Who initiated the add.
    pub oper_user_id: Option<String>,
    /// Created in WeCom, epoch ms.
    pub added_at_ms: Option<i64>,
    /// Active, or how it ended.
    #[sqlx(try_from = "String")]
    pub status: RelationStatus,
    /// When it ended.
    pub ended_at_ms: Option<i64>,
}

impl FollowRelation {
    /// Tag ids on the relation.
    pub fn tags(&self) -> Vec<String> {
        serde_json::from_str(&self.tag_ids).unwrap_or_default()
    }
}

/// Where a change was learnt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A stored callback, by inbox row id.
    Callback(i64),
    /// A reconciliation job, by job id.
    Sync(i64),
}

impl Source {
    fn parts(self) -> (&'static str, Option<i64>, Option<i64>) {
        match self {
            Self::Callback(id) => ("callback", Some(id), None),
            Self::Sync(id) => ("sync", None, Some(id)),
        }
    }

    fn tag(self) -> String {
        match self {
            Self::Callback(id) => format!("inbox:{id}"),
            Self::Sync(id) => format!("job:{id}"),
        }
    }
}

/// One entry of a relation's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct RelationEvent {
    /// Row id.
    pub id: i64,
    /// Staff member.
    #[sqlx(try_from = "String")]
    pub user_id: UserId,
    /// Customer.
    #[sqlx(try_from = "String")]
    pub external_user_id: ExternalUserId,
    /// `added`, `edited`, `reactivated`, `deleted_by_staff`, `deleted_by_customer`, `transferred`,
    /// `vanished`, `transfer_failed`.
    pub change: String,
    /// `callback` or `sync`.
    pub source: String,
    /// The inbox row, for callbacks.
    pub inbox_id: Option<i64>,
    /// The job, for reconciliation repairs.
    pub job_id: Option<i64>,
    /// Free text (e.g. the transfer failure reason).
    pub detail: String,
    /// When it happened (the event's time, or when the repair was made), epoch ms.
    pub at_ms: i64,
}

/// Inserts or refreshes a customer's profile.
pub async fn upsert_customer(
    db: &Db,
    corp_id: &str,
    c: &CustomerProfile,
    now_ms: i64,
) -> Result<(), StoreError> {
    let mut tx = db.begin().await?;
    upsert_customers_in(&mut tx, corp_id, &[c], now_ms).await?;
    tx.commit().await?;
    Ok(())
}

/// A customer's profile.
pub async fn get_customer(
    db: &Db,
    corp_id: &CorpId,
    external_user_id: &ExternalUserId,
) -> Result<Option<CustomerProfile>, StoreError> {
    let (corp_id, external_user_id) = (corp_id.as_str(), external_user_id.as_str());
    const SQL: &str = "SELECT external_user_id, name, customer_type, gender, avatar, corp_name, \
        corp_full_name, position, unionid FROM customer WHERE corp_id = $1 AND external_user_id = $2";
    let row = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp_id)
        .bind(external_user_id)
        .fetch_optional(pool)
        .await)?;
    Ok(row)
}

const RELATION_COLUMNS: &str = "user_id, external_user_id, remark, description, remark_corp_name, \
    remark_mobiles, tag_ids, add_way, state, oper_user_id, added_at_ms, status, ended_at_ms";

/// One relation.
pub async fn get_relation(
    db: &Db,
    relation: RelationKey<'_>,
) -> Result<Option<FollowRelation>, StoreError> {
    let (corp_id, user_id, external_user_id) = relation.parts();
    let sql = format!(
        "SELECT {RELATION_COLUMNS} FROM follow_relation WHERE corp_id = $1 AND user_id = $2 \
         AND external_user_id = $3"
    );
    let row = on_db!(db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
        .bind(corp_id)
        .bind(user_id)
        .bind(external_user_id)
        .fetch_optional(pool)
        .await)?;
    Ok(row)
}

/// Every relation of one customer (all staff, any status).
pub async fn relations_of_customer(
    db: &Db,
    corp_id: &CorpId,
    external_user_id: &ExternalUserId,
) -> Result<Vec<FollowRelation>, StoreError> {
    let sql = format!(
        "SELECT {RELATION_COLUMNS} FROM follow_relation WHERE corp_id = $1 \
         AND external_user_id = $2 ORDER BY user_id"
    );
    let rows = on_db!(db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
        .bind(corp_id.as_str())
        .bind(external_user_id.as_str())
        .fetch_all(pool)
        .await)?;
    Ok(rows)
}

/// The active relations of every customer who is a member of group chat `chat_id` now (any
/// staff member's), ordered by customer then staff member.
pub async fn active_relations_in_chat(
    db: &Db,
    corp_id: &CorpId,
    chat_id: &ChatId,
) -> Result<Vec<FollowRelation>, StoreError> {
    let columns = RELATION_COLUMNS
        .split(", ")
        .map(|c| format!("r.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {columns} FROM group_chat_member m JOIN follow_relation r \
         ON r.corp_id = m.corp_id AND r.external_user_id = m.member_id AND r.status = 'active' \
         WHERE m.corp_id = $1 AND m.chat_id = $2 AND m.left_at_ms IS NULL AND m.member_type = 2 \
         ORDER BY r.external_user_id, r.user_id"
    );
    let rows = on_db!(db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
        .bind(corp_id.as_str())
        .bind(chat_id.as_str())
        .fetch_all(pool)
        .await)?;
    Ok(rows)
}

/// A customer of a staff member, with when something last happened with them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct RecentCustomer {
    /// Customer.
    #[sqlx(try_from = "String")]
    pub external_user_id: ExternalUserId,
    /// Name (empty until WeCom's profile arrives).
    pub name: String,
    /// The staff member's remark.
    pub remark: String,
    /// Last activity, epoch ms.
    pub active_at_ms: i64,
}

/// The customers staff member `user_id` follows now, most recently active first. Activity is the
/// latest of: the last archived message between the two, the last note anyone wrote about the
/// customer, and when the relation was added. Each comes from an index (archive pair, notes by
/// customer), once per customer of the staff member.
pub async fn recently_active(
    db: &Db,
    corp_id: &CorpId,
    user_id: &UserId,
    limit: i64,
) -> Result<Vec<RecentCustomer>, StoreError> {
    const SQL: &str = "SELECT external_user_id, name, remark, \
        CASE WHEN msg_at >= note_at AND msg_at >= added_at THEN msg_at \
             WHEN note_at >= added_at THEN note_at ELSE added_at END AS active_at_ms \
        FROM (SELECT r.external_user_id, COALESCE(c.name, '') AS name, r.remark, \
          COALESCE((SELECT MAX(a.msg_time_ms) FROM archive_message a WHERE a.corp_id = r.corp_id \
            AND a.staff_id = r.user_id AND a.external_userid = r.external_user_id), 0) AS msg_at, \
          COALESCE((SELECT n.created_at_ms FROM note n WHERE n.corp_id = r.corp_id \
            AND n.external_user_id = r.external_user_id ORDER BY n.id DESC LIMIT 1), 0) AS note_at, \
          COALESCE(r.added_at_ms, 0) AS added_at \
          FROM follow_relation r LEFT JOIN customer c ON c.corp_id = r.corp_id \
            AND c.external_user_id = r.external_user_id \
          WHERE r.corp_id = $1 AND r.user_id = $2 AND r.status = 'active') t \
        ORDER BY active_at_ms DESC, external_user_id LIMIT $3";
    let rows = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp_id.as_str())
        .bind(user_id.as_str())
        .bind(limit.clamp(1, 100))
        .fetch_all(pool)
        .await)?;
    Ok(rows)
}

/// The names of customers and group chats among `ids` (external userids and chat ids), by id;
/// unknown ids and empty names are left out. For pages that list ids of both kinds.
pub async fn display_names(
    db: &Db,
    corp_id: &str,
    ids: &[&str],
) -> Result<std::collections::HashMap<String, String>, StoreError> {
    let mut out = std::collections::HashMap::new();
    for chunk in ids.chunks(200) {
        let list = crate::platform::db::placeholders(2, chunk.len());
        let sql = format!(
            "SELECT external_user_id, name FROM customer WHERE corp_id = $1 AND external_user_id IN ({list}) \
             UNION ALL SELECT chat_id, name FROM group_chat WHERE corp_id = $1 AND chat_id IN ({list})"
        );
        let rows: Vec<(String, String)> = on_db!(db, |pool| {
            let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str())).bind(corp_id);
            for id in chunk {
                q = q.bind(*id);
            }
            q.fetch_all(pool).await
        })?;
        out.extend(rows.into_iter().filter(|(_, name)| !name.is_empty()));
    }
    Ok(out)
}

/// Counts of relations by status, for one corp.
pub async fn count_relations(db: &Db, corp_id: &str, status: &str) -> Result<i64, StoreError> {
    const SQL: &str = "SELECT COUNT(*) FROM follow_relation WHERE corp_id = $1 AND status = $2";
    let n = on_db!(db, |pool| sqlx::query_scalar(SQL)
        .bind(corp_id)
        .bind(status)
        .fetch_one(pool)
        .await)?;
    Ok(n)
}

/// Customers stored for one corp.
pub async fn count_customers(db: &Db, corp_id: &str) -> Result<i64, StoreError> {
    const SQL: &str = "SELECT COUNT(*) FROM customer WHERE corp_id = $1";
    let n = on_db!(db, |pool| sqlx::query_scalar(SQL)
        .bind(corp_id)
        .fetch_one(pool)
        .await)?;
    Ok(n)
}

fn json_list(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".to_owned())
}

/// Who brought the news a relation change is recorded under (its history entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeNote<'a> {
    /// The callback or job.
    pub source: Source,
    /// Why, for people.
    pub detail: &'a str,
    /// When it happened, epoch ms.
    pub at_ms: i64,
}

/// Applies what WeCom reports about a relation and says what changed. `seen_by_job` marks the
/// relation as seen by a reconciliation job. A snapshot of a relation created before the stored
/// relation ended is stale and ignored (WeCom may list a deleted relation for a while).
///
/// Each outcome is decided by the statement that makes the change (an insert that conflicts, an
/// update whose condition no longer holds), so two workers applying the same news at once record
/// one `Added` or `Edited` between them, never two.
pub async fn apply_relation(
    db: &Db,
    corp: &CorpId,
    s: &RelationSnapshot,
    now_ms: i64,
    seen_by_job: Option<i64>,
) -> Result<RelationChange, StoreError> {
    apply(db, corp, s, now_ms, seen_by_job, None).await
}

/// [`apply_relation`], writing the change's history entry under `note` in the same transaction.
/// A change is then never stored without its entry: a handler stopped between the change and
/// what follows it (a worker killed, a lease lost) finds on its retry, which sees the relation
/// unchanged, that its source made the change ([`changed_by`]) and can finish the rest.
pub async fn apply_relation_noted(
    db: &Db,
    corp: &CorpId,
    s: &RelationSnapshot,
    now_ms: i64,
    seen_by_job: Option<i64>,
    note: ChangeNote<'_>,
) -> Result<RelationChange, StoreError> {
    apply(db, corp, s, now_ms, seen_by_job, Some(note)).await
}

async fn apply(
    db: &Db,
    corp: &CorpId,
    s: &RelationSnapshot,
    now_ms: i64,
    seen_by_job: Option<i64>,
    note: Option<ChangeNote<'_>>,
) -> Result<RelationChange, StoreError> {
    // Our edits not yet delivered stay on top of what WeCom reports (see `crate::domain::customers::record`).
    let overlaid = crate::domain::customers::record::with_pending(db, corp, s).await?;
    let mut tx = db.begin().await?;
    let outcome = apply_overlaid_in(&mut tx, corp, &overlaid, now_ms, seen_by_job, note).await?;
    tx.commit().await?;
    Ok(outcome)
}

/// What a reconciliation page brings: each customer's profile and relation, applied in one
/// transaction (one commit per page, not two per relation). Our edits not yet delivered stay on
/// top of WeCom's snapshots, as in [`apply_relation_noted`]; each change is noted under `note`.
///
/// The page's customers are one statement, its new relations one more and their history entries
/// a third (a corp's first sync is nearly all new relations); relations we hold already take
/// [`apply`]'s statements each.
pub async fn apply_page(
    db: &Db,
    corp: &CorpId,
    rows: &[(CustomerProfile, RelationSnapshot)],
    now_ms: i64,
    seen_by_job: i64,
    note: ChangeNote<'_>,
) -> Result<Vec<RelationChange>, StoreError> {
    let snapshots: Vec<&RelationSnapshot> = rows.iter().map(|(_, s)| s).collect();
    let overlaid = crate::domain::customers::record::with_pending_all(db, corp, &snapshots).await?;
    let profiles: Vec<&CustomerProfile> = rows.iter().map(|(p, _)| p).collect();
    let mut tx = db.begin().await?;
    upsert_customers_in(&mut tx, corp.as_str(), &profiles, now_ms).await?;
    let inserted = insert_new_relations_in(&mut tx, corp, &overlaid, now_ms, seen_by_job).await?;
    let mut out = Vec::with_capacity(rows.len());
    let mut added = Vec::new();
    for s in &overlaid {
        let key = (s.user_id.as_str(), s.external_user_id.as_str());
        if inserted.contains(&key) {
            out.push(RelationChange::Added);
            added.push(s);
        } else {
            out.push(
                apply_overlaid_in(&mut tx, corp, s, now_ms, Some(seen_by_job), Some(note)).await?,
            );
        }
    }
    record_added_in(&mut tx, corp, &added, note).await?;
    tx.commit().await?;
    Ok(out)
}

/// Upserts `profiles` (the last of each customer wins) in one statement.
async fn upsert_customers_in(
    tx: &mut Tx,
    corp_id: &str,
    profiles: &[&CustomerProfile],
    now_ms: i64,
) -> Result<(), StoreError> {
    const COLUMNS: &str = "external_user_id, name, customer_type, gender, avatar, corp_name, \
        corp_full_name, position, unionid";
    const UPSERT: &str = "ON CONFLICT (corp_id, external_user_id) DO UPDATE SET name = excluded.name, \
        customer_type = excluded.customer_type, gender = excluded.gender, avatar = excluded.avatar, \
        corp_name = excluded.corp_name, corp_full_name = excluded.corp_full_name, \
        position = excluded.position, unionid = excluded.unionid, updated_at_ms = excluded.updated_at_ms";
    let mut last: HashMap<&str, &CustomerProfile> = HashMap::new();
    for p in profiles {
        last.insert(p.external_user_id.as_str(), p);
    }
    if last.is_empty() {
        return Ok(());
    }
    let json = serde_json::Value::Array(
        last.values()
            .map(|c| {
                serde_json::json!({
                    "external_user_id": c.external_user_id.as_str(), "name": c.name,
                    "customer_type": c.customer_type, "gender": c.gender, "avatar": c.avatar,
                    "corp_name": c.corp_name, "corp_full_name": c.corp_full_name,
                    "position": c.position, "unionid": c.unionid,
                })
            })
            .collect(),
    )
    .to_string();
    let rows = json_rows(
        tx.is_postgres(),
        2,
        &[
            ("external_user_id", "text"),
            ("name", "text"),
            ("customer_type", "bigint"),
            ("gender", "bigint"),
            ("avatar", "text"),
            ("corp_name", "text"),
            ("corp_full_name", "text"),
            ("position", "text"),
            ("unionid", "text"),
        ],
    );
    let sql = format!(
        "INSERT INTO customer (corp_id, {COLUMNS}, updated_at_ms) SELECT $1, {COLUMNS}, $3 \
         FROM {rows} AS c WHERE true {UPSERT}"
    );
    on_tx!(tx, |conn| sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(corp_id)
        .bind(json)
        .bind(now_ms)
        .execute(&mut *conn)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// Inserts the relations of `snapshots` we do not hold yet, in one statement; returns them as
/// (user, customer).
async fn insert_new_relations_in<'s>(
    tx: &mut Tx,
    corp: &CorpId,
    snapshots: &'s [RelationSnapshot],
    now_ms: i64,
    seen_by_job: i64,
) -> Result<HashSet<(&'s str, &'s str)>, StoreError> {
    const COLUMNS: &str = "user_id, external_user_id, remark, description, remark_corp_name, \
        remark_mobiles, tag_ids, add_way, state, oper_user_id, added_at_ms";
    if snapshots.is_empty() {
        return Ok(HashSet::new());
    }
    let json = serde_json::Value::Array(
        snapshots
            .iter()
            .map(|s| {
                let mut tags = s.tag_ids.clone();
                tags.sort();
                tags.dedup();
                serde_json::json!({
                    "user_id": s.user_id.as_str(), "external_user_id": s.external_user_id.as_str(),
                    "remark": s.remark, "description": s.description,
                    "remark_corp_name": s.remark_corp_name,
                    "remark_mobiles": json_list(&s.remark_mobiles), "tag_ids": json_list(&tags),
                    "add_way": s.add_way, "state": s.state, "oper_user_id": s.oper_user_id,
                    "added_at_ms": s.added_at_ms,
                })
            })
            .collect(),
    )
    .to_string();
    let rows = json_rows(
        tx.is_postgres(),
        2,
        &[
            ("user_id", "text"),
            ("external_user_id", "text"),
            ("remark", "text"),
            ("description", "text"),
            ("remark_corp_name", "text"),
            ("remark_mobiles", "text"),
            ("tag_ids", "text"),
            ("add_way", "bigint"),
            ("state", "text"),
            ("oper_user_id", "text"),
            ("added_at_ms", "bigint"),
        ],
    );
    let sql = format!(
        "INSERT INTO follow_relation (corp_id, {COLUMNS}, last_seen_job, updated_at_ms, status) \
         SELECT $1, {COLUMNS}, $3, $4, 'active' FROM {rows} AS r WHERE true \
         ON CONFLICT (corp_id, user_id, external_user_id) DO NOTHING \
         RETURNING user_id, external_user_id"
    );
    let inserted: Vec<(String, String)> =
        on_tx!(tx, |conn| sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(corp.as_str())
            .bind(json)
            .bind(seen_by_job)
            .bind(now_ms)
            .fetch_all(&mut *conn)
            .await)?;
    let inserted: HashSet<(String, String)> = inserted.into_iter().collect();
    Ok(snapshots
        .iter()
        .map(|s| (s.user_id.as_str(), s.external_user_id.as_str()))
        .filter(|(u, e)| inserted.contains(&((*u).to_owned(), (*e).to_owned())))
        .collect())
}

/// The `added` history entries of `relations`, in one statement.
async fn record_added_in(
    tx: &mut Tx,
    corp: &CorpId,
    relations: &[&RelationSnapshot],
    note: ChangeNote<'_>,
) -> Result<(), StoreError> {
    let Some(label) = RelationChange::Added.history_label() else {
        return Ok(());
    };
    if relations.is_empty() {
        return Ok(());
    }
    let json = serde_json::Value::Array(
        relations
            .iter()
            .map(|s| {
                let key = RelationKey::new(corp, &s.user_id, &s.external_user_id);
                serde_json::json!({
                    "user_id": s.user_id.as_str(), "external_user_id": s.external_user_id.as_str(),
                    "dedup": event_dedup(key, label, note.source),
                })
            })
            .collect(),
    )
    .to_string();
    let rows = json_rows(
        tx.is_postgres(),
        8,
        &[
            ("user_id", "text"),
            ("external_user_id", "text"),
            ("dedup", "text"),
        ],
    );
    let (kind, inbox_id, job_id) = note.source.parts();
    let sql = format!(
        "INSERT INTO relation_event (corp_id, user_id, external_user_id, change, source, inbox_id, \
         job_id, detail, at_ms, dedup) SELECT $1, r.user_id, r.external_user_id, $2, $3, $4, $5, \
         $6, $7, r.dedup FROM {rows} AS r WHERE true ON CONFLICT (corp_id, dedup) DO NOTHING"
    );
    on_tx!(tx, |conn| sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(corp.as_str())
        .bind(label)
        .bind(kind)
        .bind(inbox_id)
        .bind(job_id)
        .bind(note.detail)
        .bind(note.at_ms)
        .bind(json)
        .execute(&mut *conn)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// [`apply`]'s statements for a snapshot already overlaid with our pending edits, inside the
/// caller's transaction.
async fn apply_overlaid_in(
    tx: &mut Tx,
    corp: &CorpId,
    s: &RelationSnapshot,
    now_ms: i64,
    seen_by_job: Option<i64>,
    note: Option<ChangeNote<'_>>,
) -> Result<RelationChange, StoreError> {
    let corp_id = corp.as_str();
    let mut tags = s.tag_ids.clone();
    tags.sort();
    tags.dedup();
    let mobiles = json_list(&s.remark_mobiles);
    let tag_json = json_list(&tags);
    // $1..$3 the relation, $4..$12 WeCom's fields, $13 the job, $14 now.
    const INSERT: &str = "INSERT INTO follow_relation (corp_id, user_id, external_user_id, remark, \
        description, remark_corp_name, remark_mobiles, tag_ids, add_way, state, oper_user_id, \
        added_at_ms, status, ended_at_ms, last_seen_job, updated_at_ms) \
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'active', NULL, $13, $14) \
        ON CONFLICT (corp_id, user_id, external_user_id) DO NOTHING";
    const SET: &str = "remark = $4, description = $5, remark_corp_name = $6, remark_mobiles = $7, \
        tag_ids = $8, add_way = $9, state = COALESCE($10, state), \
        oper_user_id = COALESCE($11, oper_user_id), added_at_ms = COALESCE($12, added_at_ms), \
        last_seen_job = COALESCE($13, last_seen_job), updated_at_ms = $14";
    let reactivate = format!(
        "UPDATE follow_relation SET {SET}, status = 'active', ended_at_ms = NULL \
         WHERE corp_id = $1 AND user_id = $2 AND external_user_id = $3 AND status <> 'active' \
         AND (ended_at_ms IS NULL OR $12 IS NULL OR $12 > ended_at_ms)"
    );
    let edit = format!(
        "UPDATE follow_relation SET {SET} WHERE corp_id = $1 AND user_id = $2 \
         AND external_user_id = $3 AND status = 'active' AND (remark <> $4 OR description <> $5 \
         OR remark_corp_name <> $6 OR remark_mobiles <> $7 OR tag_ids <> $8)"
    );
    let seen = format!(
        "UPDATE follow_relation SET {SET} WHERE corp_id = $1 AND user_id = $2 \
         AND external_user_id = $3 AND status = 'active'"
    );
    let statements: [(&str, RelationChange); 4] = [
        (INSERT, RelationChange::Added),
        (reactivate.as_str(), RelationChange::Reactivated),
        (edit.as_str(), RelationChange::Edited),
        (seen.as_str(), RelationChange::Unchanged),
    ];
    // Without a match the relation exists, has ended, and this snapshot predates the end.
    let mut outcome = RelationChange::StaleIgnored;
    for (sql, change) in statements {
        let n = on_tx!(tx, |conn| sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(corp_id)
            .bind(s.user_id.as_str())
            .bind(s.external_user_id.as_str())
            .bind(&s.remark)
            .bind(&s.description)
            .bind(&s.remark_corp_name)
            .bind(&mobiles)
            .bind(&tag_json)
            .bind(s.add_way)
            .bind(&s.state)
            .bind(&s.oper_user_id)
            .bind(s.added_at_ms)
            .bind(seen_by_job)
            .bind(now_ms)
            .execute(&mut *conn)
            .await
            .map(|r| r.rows_affected()))?;
        if n > 0 {
            outcome = change;
            break;
        }
    }
    if let (Some(note), Some(label)) = (note, outcome.history_label()) {
        let relation = RelationKey::new(corp, &s.user_id, &s.external_user_id);
        record_event_in(tx, relation, label, note).await?;
    }
    Ok(outcome)
}

/// Ends a relation for `reason` at `note.at_ms`, with its history entry in the same transaction
/// (a retry after a crash between the two would find the relation already ended and leave it
/// without one). A relation we never saw is recorded as ended, so a late, stale add cannot revive
/// it. A relation re-added after `at_ms` (WeCom's `createtime` is later) stays active: the end is
/// older news. Returns whether this call changed the relation, decided by the statement itself so
/// that concurrent ends record one change.
pub async fn end_relation(
    db: &Db,
    relation: RelationKey<'_>,
    reason: EndReason,
    now_ms: i64,
    note: ChangeNote<'_>,
) -> Result<bool, StoreError> {
    let (corp_id, user_id, external_user_id) = relation.parts();
    const END: &str = "UPDATE follow_relation SET status = $4, ended_at_ms = $5, updated_at_ms = $6 \
        WHERE corp_id = $1 AND user_id = $2 AND external_user_id = $3 AND status <> $4 \
        AND NOT (status = 'active' AND added_at_ms IS NOT NULL AND added_at_ms > $5)";
    const UNSEEN: &str = "INSERT INTO follow_relation (corp_id, user_id, external_user_id, status, \
        ended_at_ms, updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6) \
        ON CONFLICT (corp_id, user_id, external_user_id) DO NOTHING";
    // PostgreSQL: the same three steps as one statement (one round trip, not five). Its parts see
    // one snapshot: the insert runs only when the update matched nothing, the history entry only
    // when either changed a row.
    const PG_ONE: &str = "WITH ended AS (UPDATE follow_relation SET status = $4, ended_at_ms = $5, \
        updated_at_ms = $6 WHERE corp_id = $1 AND user_id = $2 AND external_user_id = $3 \
        AND status <> $4 AND NOT (status = 'active' AND added_at_ms IS NOT NULL AND added_at_ms > $5) \
        RETURNING 1), \
        unseen AS (INSERT INTO follow_relation (corp_id, user_id, external_user_id, status, \
        ended_at_ms, updated_at_ms) SELECT $1, $2, $3, $4, $5, $6 WHERE NOT EXISTS (SELECT 1 FROM ended) \
        ON CONFLICT (corp_id, user_id, external_user_id) DO NOTHING RETURNING 1), \
        noted AS (INSERT INTO relation_event (corp_id, user_id, external_user_id, change, source, \
        inbox_id, job_id, detail, at_ms, dedup) SELECT $1, $2, $3, $4, $7, $8, $9, $10, $5, $11 \
        WHERE EXISTS (SELECT 1 FROM ended) OR EXISTS (SELECT 1 FROM unseen) \
        ON CONFLICT (corp_id, dedup) DO NOTHING) \
        SELECT (SELECT COUNT(*) FROM ended) + (SELECT COUNT(*) FROM unseen)";
    if let Db::Postgres(pool) = db {
        let (kind, inbox_id, job_id) = note.source.parts();
        let changed: i64 = sqlx::query_scalar(PG_ONE)
            .bind(corp_id)
            .bind(user_id)
            .bind(external_user_id)
            .bind(reason.status())
            .bind(note.at_ms)
            .bind(now_ms)
            .bind(kind)
            .bind(inbox_id)
            .bind(job_id)
            .bind(note.detail)
            .bind(event_dedup(relation, reason.status(), note.source))
            .fetch_one(pool)
            .await?;
        return Ok(changed > 0);
    }
    let mut tx = db.begin().await?;
    let mut changed = false;
    for sql in [END, UNSEEN] {
        let n = on_tx!(&mut tx, |conn| sqlx::query(sql)
            .bind(corp_id)
            .bind(user_id)
            .bind(external_user_id)
            .bind(reason.status())
            .bind(note.at_ms)
            .bind(now_ms)
            .execute(&mut *conn)
            .await
            .map(|r| r.rows_affected()))?;
        if n > 0 {
            changed = true;
            break;
        }
    }
    if changed {
        record_event_in(&mut tx, relation, reason.status(), note).await?;
    }
    tx.commit().await?;
    Ok(changed)
}

/// Whether the relation is active (the staff member follows the customer now), inside the
/// caller's transaction.
pub async fn is_following_in(tx: &mut Tx, relation: RelationKey<'_>) -> Result<bool, StoreError> {
    let (corp_id, user_id, external_user_id) = relation.parts();
    const SQL: &str = "SELECT COUNT(*) FROM follow_relation WHERE corp_id = $1 AND user_id = $2 \
        AND external_user_id = $3 AND status = 'active'";
    let n: i64 = on_tx!(tx, |conn| sqlx::query_scalar(SQL)
        .bind(corp_id)
        .bind(user_id)
        .bind(external_user_id)
        .fetch_one(&mut *conn)
        .await)?;
    Ok(n > 0)
}

/// The corp tag ids of a relation inside the caller's transaction (`None`: no such relation).
pub async fn relation_tag_ids_in(
    tx: &mut Tx,
    relation: RelationKey<'_>,
) -> Result<Option<Vec<String>>, StoreError> {
    let (corp_id, user_id, external_user_id) = relation.parts();
    const TAGS: &str = "SELECT tag_ids FROM follow_relation WHERE corp_id = $1 AND user_id = $2 \
        AND external_user_id = $3";
    let json: Option<String> = on_tx!(tx, |conn| sqlx::query_scalar(TAGS)
        .bind(corp_id)
        .bind(user_id)
        .bind(external_user_id)
        .fetch_optional(&mut *conn)
        .await)?;
    Ok(json.map(|t| serde_json::from_str(&t).unwrap_or_default()))
}

/// Sets a relation's corp tag ids inside the caller's transaction (a reassignment carrying the
/// handover member's tags over; WeCom is told through the outbox by the caller).
pub async fn set_relation_tag_ids_in(
    tx: &mut Tx,
    relation: RelationKey<'_>,
    tag_ids: &[String],
    now_ms: i64,
) -> Result<(), StoreError> {
    let (corp_id, user_id, external_user_id) = relation.parts();
    const SET_TAGS: &str = "UPDATE follow_relation SET tag_ids = $4, updated_at_ms = $5 \
        WHERE corp_id = $1 AND user_id = $2 AND external_user_id = $3";
    on_tx!(tx, |conn| sqlx::query(SET_TAGS)
        .bind(corp_id)
        .bind(user_id)
        .bind(external_user_id)
        .bind(serde_json::to_string(tag_ids).unwrap_or_else(|_| "[]".to_owned()))
        .bind(now_ms)
        .execute(&mut *conn)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// A handover took the customer away from `user_id` (reassignment item `item_id`, inside the
/// caller's transaction): the relation ends as `transferred` and its history says to whom.
/// Returns whether the relation changed (a second call for the same item changes nothing).
#[allow(clippy::too_many_arguments)]
pub async fn end_by_transfer(
    tx: &mut Tx,
    relation: RelationKey<'_>,
    item_id: i64,
    detail: &str,
    at_ms: i64,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let (corp_id, user_id, external_user_id) = relation.parts();
    const END: &str = "UPDATE follow_relation SET status = $4, ended_at_ms = $5, updated_at_ms = $6 \
        WHERE corp_id = $1 AND user_id = $2 AND external_user_id = $3 AND status = 'active'";
    const HISTORY: &str = "INSERT INTO relation_event (corp_id, user_id, external_user_id, change, \
        source, detail, at_ms, dedup) VALUES ($1, $2, $3, $4, 'transfer', $5, $6, $7) \
        ON CONFLICT (corp_id, dedup) DO NOTHING";
    let status = EndReason::Transferred.status();
    let n = on_tx!(tx, |conn| sqlx::query(END)
        .bind(corp_id)
        .bind(user_id)
        .bind(external_user_id)
        .bind(status)
        .bind(at_ms)
        .bind(now_ms)
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected()))?;
    if n == 0 {
        return Ok(false);
    }
    let dedup = format!("transfer_item:{item_id}:{status}:{user_id}:{external_user_id}");
    on_tx!(tx, |conn| sqlx::query(HISTORY)
        .bind(corp_id)
        .bind(user_id)
        .bind(external_user_id)
        .bind(status)
        .bind(detail)
        .bind(at_ms)
        .bind(&dedup)
        .execute(&mut *conn)
        .await
        .map(|_| ()))?;
    Ok(true)
}

/// Records a change in a relation's history, once per (source, change, relation): replaying an
/// event or resuming a job does not record it twice. Returns whether it was new.
#[allow(clippy::too_many_arguments)]
pub async fn record_event(
    db: &Db,
    relation: RelationKey<'_>,
    change: &str,
    source: Source,
    detail: &str,
    at_ms: i64,
) -> Result<bool, StoreError> {
    let (corp_id, user_id, external_user_id) = relation.parts();
    let (kind, inbox_id, job_id) = source.parts();
    let dedup = event_dedup(relation, change, source);
    let n = on_db!(db, |pool| sqlx::query(INSERT_EVENT)
        .bind(corp_id)
        .bind(user_id)
        .bind(external_user_id)
        .bind(change)
        .bind(kind)
        .bind(inbox_id)
        .bind(job_id)
        .bind(detail)
        .bind(at_ms)
        .bind(&dedup)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// The history entry of a change, once per (source, change, relation).
const INSERT_EVENT: &str = "INSERT INTO relation_event (corp_id, user_id, external_user_id, change, \
    source, inbox_id, job_id, detail, at_ms, dedup) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
    ON CONFLICT (corp_id, dedup) DO NOTHING";

fn event_dedup(relation: RelationKey<'_>, change: &str, source: Source) -> String {
    let (_, user_id, external_user_id) = relation.parts();
    format!("{}:{change}:{user_id}:{external_user_id}", source.tag())
}

/// [`record_event`] in the caller's transaction.
async fn record_event_in(
    tx: &mut Tx,
    relation: RelationKey<'_>,
    change: &str,
    note: ChangeNote<'_>,
) -> Result<(), StoreError> {
    let (corp_id, user_id, external_user_id) = relation.parts();
    let (kind, inbox_id, job_id) = note.source.parts();
    let dedup = event_dedup(relation, change, note.source);
    on_tx!(tx, |conn| sqlx::query(INSERT_EVENT)
        .bind(corp_id)
        .bind(user_id)
        .bind(external_user_id)
        .bind(change)
        .bind(kind)
        .bind(inbox_id)
        .bind(job_id)
        .bind(note.detail)
        .bind(note.at_ms)
        .bind(&dedup)
        .execute(&mut *conn)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// Whether `source` recorded `change` for the relation: a retried handler asking whether its
/// earlier attempt made the change.
pub async fn changed_by(
    db: &Db,
    relation: RelationKey<'_>,
    change: &str,
    source: Source,
) -> Result<bool, StoreError> {
    const SQL: &str = "SELECT COUNT(*) FROM relation_event WHERE corp_id = $1 AND dedup = $2";
    let dedup = event_dedup(relation, change, source);
    let n: i64 = on_db!(db, |pool| sqlx::query_scalar(SQL)
        .bind(relation.corp_id.as_str())
        .bind(&dedup)
        .fetch_one(pool)
        .await)?;
    Ok(n > 0)
}

/// A relation's history, oldest first.
pub async fn relation_history(
    db: &Db,
    relation: RelationKey<'_>,
) -> Result<Vec<RelationEvent>, StoreError> {
    let (corp_id, user_id, external_user_id) = relation.parts();
    const SQL: &str = "SELECT id, user_id, external_user_id, change, source, inbox_id, job_id, \
        detail, at_ms FROM relation_event WHERE corp_id = $1 AND user_id = $2 \
        AND external_user_id = $3 ORDER BY id";
    let rows = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp_id)
        .bind(user_id)
        .bind(external_user_id)
        .fetch_all(pool)
        .await)?;
    Ok(rows)
}

/// History entries of one corp recorded by one job (the repairs a reconciliation made).
pub async fn job_repairs(
    db: &Db,
    corp_id: &str,
    job_id: i64,
) -> Result<Vec<RelationEvent>, StoreError> {
    const SQL: &str = "SELECT id, user_id, external_user_id, change, source, inbox_id, job_id, \
        detail, at_ms FROM relation_event WHERE corp_id = $1 AND job_id = $2 ORDER BY id";
    let rows = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp_id)
        .bind(job_id)
        .fetch_all(pool)
        .await)?;
    Ok(rows)
}

/// Active relations of `user_id` that job `job_id` has not seen in WeCom and that nothing has
/// touched since the job started (a callback applied meanwhile is newer than the job's listing).
pub async fn unseen_active_relations(
    db: &Db,
    corp_id: &CorpId,
    user_id: &UserId,
    job_id: i64,
    job_started_ms: i64,
) -> Result<Vec<String>, StoreError> {
    const SQL: &str = "SELECT external_user_id FROM follow_relation WHERE corp_id = $1 \
        AND user_id = $2 AND status = 'active' AND (last_seen_job IS NULL OR last_seen_job <> $3) \
        AND updated_at_ms < $4 ORDER BY external_user_id";
    let rows = on_db!(db, |pool| sqlx::query_scalar(SQL)
        .bind(corp_id.as_str())
        .bind(user_id.as_str())
        .bind(job_id)
        .bind(job_started_ms)
        .fetch_all(pool)
        .await)?;
    Ok(rows)
}

/// Staff members who have active relations in our tables.
pub async fn users_with_active_relations(
    db: &Db,
    corp_id: &str,
) -> Result<Vec<String>, StoreError> {
    const SQL: &str = "SELECT DISTINCT user_id FROM follow_relation WHERE corp_id = $1 \
        AND status = 'active' ORDER BY user_id";
    let rows = on_db!(db, |pool| sqlx::query_scalar(SQL)
        .bind(corp_id)
        .fetch_all(pool)
        .await)?;
    Ok(rows)
}

/// A customer in a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct CustomerSummary {
    /// `external_userid`.
    pub external_user_id: String,
    /// Name.
    pub name: String,
    /// Company (WeCom users).
    pub corp_name: String,
    /// Staff members following now, comma-separated.
    pub followers: String,
}

/// What a customer search asks. Every field given narrows it; [`Default`] lists every customer
/// someone follows now.
#[derive(Debug, Clone, Copy, Default)]
pub struct CustomerSearch<'a> {
    /// Followed by this staff member (their relation is the one the other filters read).
    pub staff: Option<&'a str>,
    /// Followed by one of these (a manager's team).
    pub team: Option<&'a [String]>,
    /// Anywhere in the name or a remark (case ignored), or exactly the `external_userid`.
    pub query: Option<&'a str>,
    /// Digits found in a relation's remark mobiles (备注手机号).
    pub phone: Option<&'a str>,
    /// A relation carries this corp tag.
    pub tag_id: Option<&'a str>,
    /// The customer's lifecycle stage.
    pub stage: Option<StageFilter<'a>>,
    /// The relation came through this channel (联系我 `state`); a trailing `*` matches a prefix.
    pub channel: Option<&'a str>,
    /// The relation was added in this span.
    pub added: Span,
    /// A relation ended in this span. Then the relation read is an ended one and the customer
    /// need not be followed by anyone any more (who was lost, when).
    pub ended: Span,
    /// After this `external_userid` (paging).
    pub after: Option<&'a str>,
}

/// A stage to search for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageFilter<'a> {
    /// Customers at this stage.
    Named(&'a str),
    /// Customers nobody has given a stage (the sidebar's 未设置).
    Unset,
}

/// A half-open span of time, epoch ms: `from <= t < to`; either end may be open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    /// From this instant on.
    pub from_ms: Option<i64>,
    /// Before this instant.
    pub to_ms: Option<i64>,
}

impl Span {
    /// Whether either end is given.
    pub fn is_set(&self) -> bool {
        self.from_ms.is_some() || self.to_ms.is_some()
    }
}

/// A value bound to a search statement.
enum Bind<'a> {
    Text(&'a str),
    Owned(String),
    Int(i64),
}

/// The binds of a statement built as it goes: each value pushed answers its placeholder.
#[derive(Default)]
struct Binds<'a>(Vec<Bind<'a>>);

impl<'a> Binds<'a> {
    fn push(&mut self, value: Bind<'a>) -> String {
        self.0.push(value);
        format!("${}", self.0.len())
    }
    fn text(&mut self, value: &'a str) -> String {
        self.push(Bind::Text(value))
    }
    fn owned(&mut self, value: String) -> String {
        self.push(Bind::Owned(value))
    }
    fn int(&mut self, value: i64) -> String {
        self.push(Bind::Int(value))
    }
}

/// The conditions `search` asks of one relation (aliased `r`), ANDed: the status (active, or ended
/// in the span asked), then phone, tag, channel and date added.
fn relation_conditions<'a>(
    db: &Db,
    r: &str,
    search: &CustomerSearch<'a>,
    binds: &mut Binds<'a>,
) -> String {
    let mut sql = String::new();
    if search.ended.is_set() {
        sql.push_str(&format!(
            " AND {r}.status <> 'active' AND {r}.ended_at_ms IS NOT NULL"
        ));
        if let Some(from) = search.ended.from_ms {
            sql.push_str(&format!(" AND {r}.ended_at_ms >= {}", binds.int(from)));
        }
        if let Some(to) = search.ended.to_ms {
            sql.push_str(&format!(" AND {r}.ended_at_ms < {}", binds.int(to)));
        }
    } else {
        sql.push_str(&format!(" AND {r}.status = 'active'"));
    }
    if let Some(from) = search.added.from_ms {
        sql.push_str(&format!(" AND {r}.added_at_ms >= {}", binds.int(from)));
    }
    if let Some(to) = search.added.to_ms {
        sql.push_str(&format!(" AND {r}.added_at_ms < {}", binds.int(to)));
    }
    if let Some(phone) = search.phone {
        // Stored as a JSON array of strings; the digits asked anywhere in one of them.
        let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
        sql.push_str(&format!(
            " AND {r}.remark_mobiles LIKE {}",
            binds.owned(format!("%{digits}%"))
        ));
    }
    if let Some(tag) = search.tag_id {
        let tag = binds.text(tag);
        sql.push_str(&match db {
            Db::Postgres(_) => format!(" AND {r}.tag_ids::jsonb @> jsonb_build_array({tag}::text)"),
            Db::Sqlite(_) => {
                format!(" AND EXISTS (SELECT 1 FROM json_each({r}.tag_ids) WHERE value = {tag})")
            }
        });
    }
    if let Some(channel) = search.channel {
        match channel.strip_suffix('*') {
            Some(prefix) => {
                let n = prefix.chars().count();
                sql.push_str(&format!(
                    " AND SUBSTR({r}.state, 1, {n}) = {}",
                    binds.text(prefix)
                ));
            }
            None => sql.push_str(&format!(" AND {r}.state = {}", binds.text(channel))),
        }
    }
    sql
}

/// Customers matching `search`, ordered by id after `search.after` (paging), at most `limit`.
pub async fn list_customers(
    db: &Db,
    corp_id: &CorpId,
    search: &CustomerSearch<'_>,
    limit: i64,
) -> Result<Vec<CustomerSummary>, StoreError> {
    let followers = match db {
        Db::Postgres(_) => "STRING_AGG(r.user_id, ',' ORDER BY r.user_id)",
        Db::Sqlite(_) => "GROUP_CONCAT(r.user_id, ',' ORDER BY r.user_id)",
    };
    let query = search.query;
    let like = query.map(crate::platform::db::like_contains);
    let team = search.team.map(crate::platform::db::json_list);
    // Each statement walks customers in external_userid order and stops when the page is full; a
    // page's followers are read for its rows only. Only what is asked goes into it, so that each
    // shape is planned for itself. CROSS JOIN keeps SQLite's join order as written (PostgreSQL
    // plans it as any join).
    let mut sql = format!(
        "SELECT c.external_user_id, c.name, c.corp_name, COALESCE((SELECT {followers} FROM \
         follow_relation r WHERE r.corp_id = c.corp_id AND r.external_user_id = c.external_user_id \
         AND r.status = 'active'), '') AS followers "
    );
    let mut binds = Binds::default();
    binds.text(corp_id.as_str());
    // A phone number is searched in `customer_search` first (it holds the remark mobiles), then
    // checked on the relation.
    let phone = search
        .phone
        .map(|p| p.chars().filter(char::is_ascii_digit).collect::<String>());
    let key = match (search.staff, query, like.as_deref()) {
        (Some(staff), query, like) => {
            // One member's customers: their relations in key order, a few hundred at most. The
            // remark searched is the member's own (one relation per member and customer).
            let user = binds.text(staff);
            sql.push_str(&format!(
                "FROM follow_relation o CROSS JOIN customer c WHERE o.corp_id = $1 \
                 AND o.user_id = {user} AND c.corp_id = o.corp_id \
                 AND c.external_user_id = o.external_user_id"
            ));
            sql.push_str(&relation_conditions(db, "o", search, &mut binds));
            if let Some(team) = team.clone() {
                binds.owned(team);
                sql.push_str(&format!(
                    " AND o.user_id IN {}",
                    crate::platform::db::in_json_list(db, binds.0.len())
                ));
            }
            if let (Some(query), Some(like)) = (query, like) {
                let (like, id) = (binds.text(like), binds.text(query));
                sql.push_str(&format!(
                    " AND (LOWER(c.name) LIKE {like} ESCAPE '\\' OR c.external_user_id = {id} \
                     OR LOWER(o.remark) LIKE {like} ESCAPE '\\' OR o.remark_mobiles LIKE {like} \
                     ESCAPE '\\')"
                ));
            }
            "o.external_user_id"
        }
        (None, query, like) if query.is_some() || phone.is_some() => {
            // Every customer: `customer_search` holds each one's lower-cased name and, for each
            // active relation, its remark and remark mobiles, one per line (migrations 0015,
            // 0016), so a query is one narrow scan instead of a lookup of every customer's
            // relations. A query with a line break could match across two of them: that one is
            // compared with each on its own.
            sql.push_str(
                "FROM customer_search s CROSS JOIN customer c WHERE s.corp_id = $1 \
                 AND c.corp_id = s.corp_id AND c.external_user_id = s.external_user_id",
            );
            if let (Some(query), Some(like)) = (query, like) {
                let (like, id) = (binds.text(like), binds.text(query));
                if query.contains('\n') {
                    sql.push_str(&format!(
                        " AND (LOWER(c.name) LIKE {like} ESCAPE '\\' OR c.external_user_id = {id} \
                         OR EXISTS (SELECT 1 FROM follow_relation m WHERE m.corp_id = c.corp_id \
                         AND m.external_user_id = c.external_user_id AND m.status = 'active' \
                         AND LOWER(m.remark) LIKE {like} ESCAPE '\\'))"
                    ));
                } else {
                    sql.push_str(&format!(
                        " AND (s.text LIKE {like} ESCAPE '\\' OR s.external_user_id = {id})"
                    ));
                }
            }
            if let Some(digits) = phone.as_ref().filter(|_| !search.ended.is_set()) {
                // (The mobiles of ended relations are not in customer_search.)
                let digits = binds.owned(format!("%{digits}%"));
                sql.push_str(&format!(" AND s.text LIKE {digits}"));
            }
            "s.external_user_id"
        }
        (None, _, _) => {
            sql.push_str("FROM customer c WHERE c.corp_id = $1");
            "c.external_user_id"
        }
    };
    if search.staff.is_none() {
        // One relation that answers every relation filter (and, for a manager, is a team
        // member's): by default, anyone's active relation. With a date span, the relations in
        // it are read along their time index and the customers found among them; otherwise each
        // customer in key order is checked until the page is full.
        let by_time = search.added.is_set() || search.ended.is_set();
        let mut relation = String::from(if by_time {
            "follow_relation a WHERE a.corp_id = $1"
        } else {
            "follow_relation a WHERE a.corp_id = c.corp_id"
        });
        relation.push_str(&relation_conditions(db, "a", search, &mut binds));
        if let Some(team) = team {
            binds.owned(team);
            relation.push_str(&format!(
                " AND a.user_id IN {}",
                crate::platform::db::in_json_list(db, binds.0.len())
            ));
        }
        if by_time {
            sql.push_str(&format!(
                " AND c.external_user_id IN (SELECT a.external_user_id FROM {relation})"
            ));
        } else {
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM {relation} AND a.external_user_id = c.external_user_id)"
            ));
        }
    }
    match search.stage {
        Some(StageFilter::Named(stage)) => {
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM customer_stage g WHERE g.corp_id = c.corp_id \
                 AND g.external_user_id = c.external_user_id AND g.stage = {})",
                binds.text(stage)
            ));
        }
        Some(StageFilter::Unset) => sql.push_str(
            " AND NOT EXISTS (SELECT 1 FROM customer_stage g WHERE g.corp_id = c.corp_id \
             AND g.external_user_id = c.external_user_id)",
        ),
        None => {}
    }
    if let Some(after) = search.after {
        let after = binds.text(after);
        sql.push_str(&format!(" AND {key} > {after}"));
    }
    let limit = binds.int(limit.clamp(1, 500));
    sql.push_str(&format!(" ORDER BY {key} LIMIT {limit}"));
    let rows = on_db!(db, |pool| {
        let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()));
        for value in &binds.0 {
            q = match value {
                Bind::Text(v) => q.bind(*v),
                Bind::Owned(v) => q.bind(v.as_str()),
                Bind::Int(v) => q.bind(*v),
            };
        }
        q.fetch_all(pool).await
    })?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_status_reads_back_typed_and_an_unknown_one_is_an_error() {
        for name in [
            "active",
            "deleted_by_staff",
            "deleted_by_customer",
            "transferred",
            "vanished",
        ] {
            let status = RelationStatus::try_from(name.to_owned()).unwrap();
            assert_eq!(status.as_str(), name);
            assert_eq!(serde_json::to_value(status).unwrap(), name);
        }
        assert_eq!(
            RelationStatus::try_from("deleted_by_staff".to_owned()),
            Ok(RelationStatus::Ended(EndReason::DeletedByStaff))
        );
        assert!(RelationStatus::try_from("paused".to_owned()).is_err());
    }
}
