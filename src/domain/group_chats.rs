//! Customer group chats (客户群) and their members. WeCom's group events do not reliably say who
//! joined or left, so every change is applied by diffing a fresh `groupchat/get` against what we
//! store; `member_version` tells whether anything changed at all.

use std::collections::HashSet;

use serde::Serialize;

use wecom_sdk::{ChatId, CorpId, UserId};

use crate::on_db;
use crate::platform::db::{Db, StoreError};

/// A group chat as WeCom reports it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatSnapshot {
    /// `chat_id`.
    pub chat_id: ChatId,
    /// Name.
    pub name: String,
    /// Owner's userid.
    pub owner_user_id: UserId,
    /// 群公告.
    pub notice: String,
    /// Created, epoch ms.
    pub created_at_ms: Option<i64>,
    /// `member_version`.
    pub member_version: String,
    /// Current members.
    pub members: Vec<MemberSnapshot>,
}

/// A member of a chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSnapshot {
    /// Staff userid or customer external id.
    pub member_id: String,
    /// 1 staff, 2 customer.
    pub member_type: i64,
    /// Name (when asked with need_name).
    pub name: String,
    /// 群昵称.
    pub group_nickname: String,
    /// `join_scene`.
    pub join_scene: i64,
    /// Joined, epoch ms.
    pub joined_at_ms: Option<i64>,
}

/// A stored chat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct GroupChat {
    /// `chat_id`.
    #[sqlx(try_from = "String")]
    pub chat_id: ChatId,
    /// Name.
    pub name: String,
    /// Owner.
    #[sqlx(try_from = "String")]
    pub owner_user_id: UserId,
    /// `member_version` last applied.
    pub member_version: String,
    /// WeCom's list status (0 normal, 1 owner left, 2 inheriting, 3 inherited).
    pub status: i64,
    /// When it was dismissed.
    pub dismissed_at_ms: Option<i64>,
}

/// What applying a snapshot changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChatDiff {
    /// The chat was new to us.
    pub created: bool,
    /// Members who joined since we last looked.
    pub joined: Vec<String>,
    /// Members who left.
    pub left: Vec<String>,
    /// Name, owner or notice changed.
    pub details_changed: bool,
}

impl ChatDiff {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        !self.created && self.joined.is_empty() && self.left.is_empty() && !self.details_changed
    }
}

/// One stored chat.
pub async fn get(
    db: &Db,
    corp_id: &CorpId,
    chat_id: &ChatId,
) -> Result<Option<GroupChat>, StoreError> {
    let (corp_id, chat_id) = (corp_id.as_str(), chat_id.as_str());
    const SQL: &str = "SELECT chat_id, name, owner_user_id, member_version, status, dismissed_at_ms \
        FROM group_chat WHERE corp_id = $1 AND chat_id = $2";
    let row = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp_id)
        .bind(chat_id)
        .fetch_optional(pool)
        .await)?;
    Ok(row)
}

/// Current members' ids of a chat, sorted.
pub async fn current_members(
    db: &Db,
    corp_id: &CorpId,
    chat_id: &ChatId,
) -> Result<Vec<String>, StoreError> {
    let (corp_id, chat_id) = (corp_id.as_str(), chat_id.as_str());
    const SQL: &str = "SELECT member_id FROM group_chat_member WHERE corp_id = $1 AND chat_id = $2 \
        AND left_at_ms IS NULL ORDER BY member_id";
    let rows = on_db!(db, |pool| sqlx::query_scalar(SQL)
        .bind(corp_id)
        .bind(chat_id)
        .fetch_all(pool)
        .await)?;
    Ok(rows)
}

/// A current member of a stored chat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ChatMember {
    /// Staff userid or customer external id.
    pub member_id: String,
    /// 1 staff, 2 customer.
    pub member_type: i64,
    /// Name (when WeCom gave one).
    pub name: String,
    /// 群昵称.
    pub group_nickname: String,
    /// Joined, epoch ms.
    pub joined_at_ms: Option<i64>,
}

/// The current members of a chat: staff first, then customers, each by when they joined.
pub async fn members(
    db: &Db,
    corp_id: &CorpId,
    chat_id: &ChatId,
) -> Result<Vec<ChatMember>, StoreError> {
    let (corp_id, chat_id) = (corp_id.as_str(), chat_id.as_str());
    const SQL: &str = "SELECT member_id, member_type, name, group_nickname, joined_at_ms \
        FROM group_chat_member WHERE corp_id = $1 AND chat_id = $2 AND left_at_ms IS NULL \
        ORDER BY member_type, joined_at_ms, member_id";
    let rows = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp_id)
        .bind(chat_id)
        .fetch_all(pool)
        .await)?;
    Ok(rows)
}

/// Applies a fresh snapshot: upserts the chat, adds joined members, marks departed ones as left.
/// `status` is the list status when known; `seen_by_job` marks it seen by a reconciliation.
pub async fn apply(
    db: &Db,
    corp: &CorpId,
    s: &ChatSnapshot,
    status: Option<i64>,
    seen_by_job: Option<i64>,
    now_ms: i64,
) -> Result<ChatDiff, StoreError> {
    let before = get(db, corp, &s.chat_id).await?;
    let stored: HashSet<String> = current_members(db, corp, &s.chat_id)
        .await?
        .into_iter()
        .collect();
    let corp_id = corp.as_str();
    let fresh: HashSet<&str> = s.members.iter().map(|m| m.member_id.as_str()).collect();
    let mut diff = ChatDiff {
        created: before.is_none(),
        joined: s
            .members
            .iter()
            .filter(|m| !stored.contains(&m.member_id))
            .map(|m| m.member_id.clone())
            .collect(),
        left: stored
            .iter()
            .filter(|id| !fresh.contains(id.as_str()))
            .cloned()
            .collect(),
        details_changed: before
            .as_ref()
            .is_some_and(|b| b.name != s.name || b.owner_user_id != s.owner_user_id),
    };
    diff.left.sort();
    const CHAT: &str = "INSERT INTO group_chat (corp_id, chat_id, name, owner_user_id, notice, \
        created_at_ms, status, member_version, last_seen_job, updated_at_ms) \
        VALUES ($1, $2, $3, $4, $5, $6, COALESCE($7, 0), $8, $9, $10) \
        ON CONFLICT (corp_id, chat_id) DO UPDATE SET name = excluded.name, \
        owner_user_id = excluded.owner_user_id, notice = excluded.notice, \
        created_at_ms = COALESCE(excluded.created_at_ms, group_chat.created_at_ms), \
        status = COALESCE($7, group_chat.status), member_version = excluded.member_version, \
        dismissed_at_ms = NULL, \
        last_seen_job = COALESCE(excluded.last_seen_job, group_chat.last_seen_job), \
        updated_at_ms = excluded.updated_at_ms";
    // The new or changed members in one statement (a list of any length, one bind).
    const MEMBER_COLUMNS: &str =
        "member_id, member_type, name, group_nickname, join_scene, joined_at_ms";
    const MEMBER_UPSERT: &str = "ON CONFLICT (corp_id, chat_id, member_id) DO UPDATE SET \
        member_type = excluded.member_type, name = excluded.name, \
        group_nickname = excluded.group_nickname, join_scene = excluded.join_scene, \
        joined_at_ms = excluded.joined_at_ms, left_at_ms = NULL, updated_at_ms = excluded.updated_at_ms";
    let members = crate::platform::db::json_rows(
        matches!(db, Db::Postgres(_)),
        3,
        &[
            ("member_id", "text"),
            ("member_type", "bigint"),
            ("name", "text"),
            ("group_nickname", "text"),
            ("join_scene", "bigint"),
            ("joined_at_ms", "bigint"),
        ],
    );
    let members_sql = format!(
        "INSERT INTO group_chat_member (corp_id, chat_id, {MEMBER_COLUMNS}, updated_at_ms) \
         SELECT $1, $2, {MEMBER_COLUMNS}, $4 FROM {members} AS m WHERE true {MEMBER_UPSERT}"
    );
    // One entry per member (the last wins): a statement may not change a row twice.
    let mut changed_or_new: std::collections::BTreeMap<&str, &MemberSnapshot> =
        std::collections::BTreeMap::new();
    for m in s
        .members
        .iter()
        .filter(|m| !stored.contains(&m.member_id) || before.is_none())
    {
        changed_or_new.insert(m.member_id.as_str(), m);
    }
    let members_json = serde_json::Value::Array(
        changed_or_new
            .values()
            .map(|m| {
                serde_json::json!({
                    "member_id": m.member_id, "member_type": m.member_type, "name": m.name,
                    "group_nickname": m.group_nickname, "join_scene": m.join_scene,
                    "joined_at_ms": m.joined_at_ms,
                })
            })
            .collect(),
    )
    .to_string();
    const LEFT: &str = "UPDATE group_chat_member SET left_at_ms = $4, updated_at_ms = $4 \
        WHERE corp_id = $1 AND chat_id = $2 AND member_id = $3 AND left_at_ms IS NULL";
    // A transaction begun through the pool: its writes take this process's turn first.
    let _turn = db.write_turn().await?;
    on_db!(db, |pool| {
        let mut tx = pool.begin().await?;
        sqlx::query(CHAT)
            .bind(corp_id)
            .bind(s.chat_id.as_str())
            .bind(&s.name)
            .bind(s.owner_user_id.as_str())
            .bind(&s.notice)
            .bind(s.created_at_ms)
            .bind(status)
            .bind(&s.member_version)
            .bind(seen_by_job)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        if !changed_or_new.is_empty() {
            sqlx::query(sqlx::AssertSqlSafe(members_sql.as_str()))
                .bind(corp_id)
                .bind(s.chat_id.as_str())
                .bind(&members_json)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
        }
        for id in &diff.left {
            sqlx::query(LEFT)
                .bind(corp_id)
                .bind(s.chat_id.as_str())
                .bind(id)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    })?;
    Ok(diff)
}

/// A reassignment gave the chat a new owner.
pub async fn set_owner(
    db: &Db,
    corp_id: &CorpId,
    chat_id: &ChatId,
    owner_user_id: &UserId,
    at_ms: i64,
) -> Result<(), StoreError> {
    let (corp_id, chat_id, owner_user_id) =
        (corp_id.as_str(), chat_id.as_str(), owner_user_id.as_str());
    const SQL: &str = "UPDATE group_chat SET owner_user_id = $3, updated_at_ms = $4 \
        WHERE corp_id = $1 AND chat_id = $2";
    on_db!(db, |pool| sqlx::query(SQL)
        .bind(corp_id)
        .bind(chat_id)
        .bind(owner_user_id)
        .bind(at_ms)
        .execute(pool)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// Marks a chat dismissed (members are kept, as history).
pub async fn dismiss(
    db: &Db,
    corp_id: &CorpId,
    chat_id: &ChatId,
    at_ms: i64,
) -> Result<(), StoreError> {
    let (corp_id, chat_id) = (corp_id.as_str(), chat_id.as_str());
    const SQL: &str = "INSERT INTO group_chat (corp_id, chat_id, dismissed_at_ms, updated_at_ms) \
        VALUES ($1, $2, $3, $3) ON CONFLICT (corp_id, chat_id) DO UPDATE SET \
        dismissed_at_ms = COALESCE(group_chat.dismissed_at_ms, excluded.dismissed_at_ms), \
        updated_at_ms = excluded.updated_at_ms";
    on_db!(db, |pool| sqlx::query(SQL)
        .bind(corp_id)
        .bind(chat_id)
        .bind(at_ms)
        .execute(pool)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// Chats of a corp that are not dismissed.
pub async fn count_live(db: &Db, corp_id: &str) -> Result<i64, StoreError> {
    const SQL: &str =
        "SELECT COUNT(*) FROM group_chat WHERE corp_id = $1 AND dismissed_at_ms IS NULL";
    let n = on_db!(db, |pool| sqlx::query_scalar(SQL)
        .bind(corp_id)
        .fetch_one(pool)
        .await)?;
    Ok(n)
}

/// Live chats owned by `owner_user_id` that job `job_id` did not see: gone from WeCom.
pub async fn unseen_live_chats(
    db: &Db,
    corp_id: &CorpId,
    owner_user_id: &UserId,
    job_id: i64,
    job_started_ms: i64,
) -> Result<Vec<String>, StoreError> {
    let (corp_id, owner_user_id) = (corp_id.as_str(), owner_user_id.as_str());
    const SQL: &str = "SELECT chat_id FROM group_chat WHERE corp_id = $1 AND owner_user_id = $2 \
        AND dismissed_at_ms IS NULL AND (last_seen_job IS NULL OR last_seen_job <> $3) \
        AND updated_at_ms < $4 ORDER BY chat_id";
    let rows = on_db!(db, |pool| sqlx::query_scalar(SQL)
        .bind(corp_id)
        .bind(owner_user_id)
        .bind(job_id)
        .bind(job_started_ms)
        .fetch_all(pool)
        .await)?;
    Ok(rows)
}
