//! Departures: members who left (`delete_user`, or status 5 in the directory) with customers or
//! group chats not yet reassigned, and what WeCom holds for reassignment (`get_unassigned_list`).
//! A departure with anything to reassign sends the corp's `admin_recipients` an app message
//! suggesting the reassignment.

use serde::Serialize;
use wecom_sdk::{CorpId, UserId};

use crate::on_db;
use crate::pipeline::outbox::{self, Intent, Message};
use crate::platform::db::{Db, StoreError};
use crate::platform::wecom::Wecom;

/// A departed member with something left to reassign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Departure {
    /// The member.
    pub user_id: String,
    /// Their name.
    pub name: String,
    /// When they left, epoch ms.
    pub departed_at_ms: Option<i64>,
    /// Customers not yet reassigned (our active relations, or what WeCom lists as unassigned).
    pub customers: i64,
    /// Group chats they still own.
    pub group_chats: i64,
    /// Of the customers, how many WeCom's unassigned list holds (as last refreshed).
    pub unassigned_listed: i64,
    /// A planned or running job of theirs, if any.
    pub open_job: Option<i64>,
}

/// Not in a started job that moves or moved it.
const NOT_MOVING: &str = "NOT EXISTS (SELECT 1 FROM transfer_item i JOIN transfer_job j \
    ON j.id = i.job_id WHERE i.corp_id = s.corp_id AND i.handover_user_id = s.user_id \
    AND i.target_id = {target} AND j.state IN ('running', 'done') \
    AND i.state IN ('planned', 'scheduled', 'sent', 'waiting', 'done'))";

fn not_moving(target: &str) -> String {
    NOT_MOVING.replace("{target}", target)
}

/// Departed members of a corp with customers or chats left to reassign, newest departure first.
pub async fn list_departures(db: &Db, corp_id: &str) -> Result<Vec<Departure>, StoreError> {
    let sql = format!(
        "SELECT s.user_id, s.name, s.departed_at_ms, \
         (SELECT COUNT(*) FROM (SELECT r.external_user_id AS ext FROM follow_relation r \
            WHERE r.corp_id = s.corp_id AND r.user_id = s.user_id AND r.status = 'active' \
          UNION SELECT u.external_user_id AS ext FROM unassigned_customer u \
            WHERE u.corp_id = s.corp_id AND u.handover_user_id = s.user_id) c \
          WHERE {}) AS customers, \
         (SELECT COUNT(*) FROM group_chat g WHERE g.corp_id = s.corp_id \
            AND g.owner_user_id = s.user_id AND g.dismissed_at_ms IS NULL AND {}) AS group_chats, \
         (SELECT COUNT(*) FROM unassigned_customer u WHERE u.corp_id = s.corp_id \
            AND u.handover_user_id = s.user_id) AS unassigned_listed, \
         (SELECT MAX(j.id) FROM transfer_job j WHERE j.corp_id = s.corp_id \
            AND j.handover_user_id = s.user_id AND j.state IN ('planned', 'running')) AS open_job \
         FROM staff s WHERE s.corp_id = $1 AND (s.departed_at_ms IS NOT NULL OR s.status = 5) \
         ORDER BY s.departed_at_ms DESC, s.user_id",
        not_moving("c.ext"),
        not_moving("g.chat_id"),
    );
    let rows: Vec<Departure> =
        on_db!(db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(corp_id)
            .fetch_all(pool)
            .await)?;
    Ok(rows
        .into_iter()
        .filter(|d| d.customers > 0 || d.group_chats > 0)
        .collect())
}

/// Why the unassigned list could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// WeCom failed (or the corp has no secret).
    #[error("{0}")]
    Wecom(String),
}

impl From<sqlx::Error> for RefreshError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

/// Reads WeCom's whole `get_unassigned_list` (cursor paging, 1000 a page) and replaces our copy;
/// members it names are marked departed. Returns how many customers it lists.
pub async fn refresh_unassigned(
    db: &Db,
    wecom: &Wecom,
    corp_id: &CorpId,
    now_ms: i64,
) -> Result<usize, RefreshError> {
    let creds = wecom
        .credentials(corp_id.as_str(), None)
        .map_err(|e| RefreshError::Wecom(e.to_string()))?;
    let mut rows = Vec::new();
    let mut cursor = String::new();
    for _ in 0..10_000 {
        let page = wecom
            .client
            .get_unassigned_list(&creds, &cursor, 1000)
            .await
            .map_err(|e| RefreshError::Wecom(e.to_string()))?;
        rows.extend(page.info);
        if page.is_last || page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    let listed: Vec<crate::domain::transfers::Unassigned<'_>> = rows
        .iter()
        .map(|r| crate::domain::transfers::Unassigned {
            handover_user_id: r.handover_userid.as_str(),
            external_user_id: r.external_userid.as_str(),
            dimission_at_ms: crate::platform::wecom::secs_to_ms(r.dimission_time),
        })
        .collect();
    crate::domain::transfers::replace_unassigned(db, corp_id.as_str(), &listed, now_ms).await?;
    let mut members: Vec<(&UserId, i64)> = rows
        .iter()
        .map(|r| {
            (
                &r.handover_userid,
                crate::platform::wecom::secs_to_ms(r.dimission_time).unwrap_or(now_ms),
            )
        })
        .collect();
    members.sort_unstable();
    members.dedup_by_key(|m| m.0);
    for (user, at) in &members {
        crate::domain::staff::mark_departed(db, corp_id, user, *at, now_ms).await?;
    }
    let owners: Vec<&UserId> = members.iter().map(|(u, _)| *u).collect();
    import_chats(db, wecom, &creds, corp_id, &owners, now_ms).await?;
    Ok(rows.len())
}

/// The group chats of departed members that we do not know yet: the sync reads only the chats
/// of members with 客户联系 (a departed member is not one), so a member who left before we were
/// installed would otherwise seem to own none. `groupchat/list` by owner (100 a call), then
/// `groupchat/get` for each unknown chat.
async fn import_chats(
    db: &Db,
    wecom: &Wecom,
    creds: &wecom_sdk::api::AppCredentials,
    corp_id: &CorpId,
    owners: &[&UserId],
    now_ms: i64,
) -> Result<(), RefreshError> {
    let owners: Vec<UserId> = owners.iter().map(|u| (*u).clone()).collect();
    let wecom_error = |e: wecom_sdk::api::ApiError| RefreshError::Wecom(e.to_string());
    for chunk in owners.chunks(100) {
        let mut cursor = String::new();
        for _ in 0..10_000 {
            let page = wecom
                .client
                .groupchat_list(
                    creds,
                    &wecom_sdk::api::GroupChatListRequest {
                        status_filter: 0,
                        owner_userids: chunk.to_vec(),
                        cursor: cursor.clone(),
                        limit: 1000,
                    },
                )
                .await
                .map_err(wecom_error)?;
            for listed in &page.group_chat_list {
                if crate::domain::group_chats::get(db, corp_id, &listed.chat_id)
                    .await?
                    .is_some()
                {
                    continue;
                }
                let chat = match wecom
                    .client
                    .groupchat_get(creds, &listed.chat_id, true)
                    .await
                {
                    Ok(chat) => chat,
                    // Dismissed between the listing and now.
                    Err(wecom_sdk::api::ApiError::Wecom { errcode: 90501, .. }) => continue,
                    Err(e) => return Err(wecom_error(e)),
                };
                crate::domain::group_chats::apply(
                    db,
                    corp_id,
                    &crate::app::wecom_records::chat_snapshot(&chat),
                    Some(listed.status),
                    None,
                    now_ms,
                )
                .await?;
            }
            if page.next_cursor.is_empty() {
                break;
            }
            cursor = page.next_cursor;
        }
    }
    Ok(())
}

/// A member left: when they have customers or chats to reassign and the corp names admins, the
/// admins get an app message (once per member).
pub async fn on_departed(
    db: &Db,
    wecom: &Wecom,
    corp_id: &CorpId,
    user_id: &UserId,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let corp_key = corp_id;
    let (corp_id, user_id) = (corp_id.as_str(), user_id.as_str());
    let Some(corp) = wecom.corp(corp_id) else {
        return Ok(false);
    };
    // What WeCom holds for reassignment now; the list in our database serves when WeCom fails.
    match refresh_unassigned(db, wecom, corp_key, now_ms).await {
        Ok(_) => {}
        Err(RefreshError::Store(e)) => return Err(e),
        Err(RefreshError::Wecom(e)) => {
            tracing::warn!(corp_id, user_id, error = %e, "get_unassigned_list failed; using the stored list");
        }
    }
    if corp.admin_recipients.is_empty() {
        return Ok(false);
    }
    let Some(d) = list_departures(db, corp_id)
        .await?
        .into_iter()
        .find(|d| d.user_id == user_id)
    else {
        return Ok(false);
    };
    let who = if d.name.is_empty() {
        d.user_id.clone()
    } else {
        format!("{}（{}）", d.name, d.user_id)
    };
    let text = format!(
        "【离职交接】成员 {who} 已离职，尚有 {} 位客户、{} 个客户群未分配。\
         请在控制台“离职继承”中分配，或运行：scrm reassign --corp {corp_id} --from {} --to 接替成员",
        d.customers, d.group_chats, d.user_id
    );
    let mut tx = db.begin().await?;
    outbox::enqueue(
        &mut tx,
        corp_id,
        &Intent::MessageSend {
            to_users: corp.admin_recipients.clone(),
            message: Message::Text { content: text },
        },
        "system",
        Some(&format!("departure:{user_id}")),
        now_ms,
    )
    .await?;
    tx.commit().await?;
    outbox::notify();
    Ok(true)
}
