//! Reading archived content: every read goes through here and is written to `archive_read`
//! (who, when, what, how many) in the same call, so no path shows a message without leaving a
//! trace. The log is append-only; nothing updates or deletes it.

use serde::Serialize;

use wecom_sdk::{CorpId, ExternalUserId, UserId};

use crate::on_db;
use crate::platform::db::{Db, StoreError};

/// Who reads (for the log).
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    /// Actor id (`apikey:3`, a userid, `cli`).
    pub actor: String,
    /// Role name.
    pub role: &'a str,
    /// The corp read.
    pub corp_id: &'a str,
}

/// Filters for a message list.
#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    /// Messages of this staff member (1:1 chats and what they said in rooms).
    pub staff_id: Option<String>,
    /// Messages with this customer.
    pub external_userid: Option<String>,
    /// Messages of this room.
    pub room_id: Option<String>,
    /// Sent at or after.
    pub since_ms: Option<i64>,
    /// Sent before.
    pub until_ms: Option<i64>,
    /// Page: ids below this.
    pub before_id: Option<i64>,
    /// At most this many (1–500).
    pub limit: i64,
}

/// One archived message.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct MessageRow {
    /// Row id.
    pub id: i64,
    /// Its seq.
    pub seq: i64,
    /// WeCom's msgid.
    pub msgid: String,
    /// `send`, `recall`, `switch`.
    pub action: String,
    /// `text`, `image`, …
    pub msgtype: String,
    /// Sender id.
    pub sender: String,
    /// `staff`, `customer`, `robot`.
    pub sender_kind: String,
    /// Receivers (JSON array).
    pub receivers: String,
    /// The room, `None` for 1:1.
    pub room_id: Option<String>,
    /// Send time, epoch ms.
    pub msg_time_ms: i64,
    /// The staff member of a 1:1 chat (or the sender in a room).
    pub staff_id: Option<String>,
    /// The customer of a 1:1 chat.
    pub external_userid: Option<String>,
    /// The text the scanner reads.
    pub text: Option<String>,
    /// The whole decrypted JSON.
    pub payload: String,
    /// When it was recalled.
    pub revoked_at_ms: Option<i64>,
    /// The recall record's msgid.
    pub revoked_by: Option<String>,
}

const MEDIA_COLUMNS: &str = "id, sdkfileid, msgid, kind, md5sum, size, file_name, state, \
    bytes_done, error, path";

const COLUMNS: &str = "id, seq, msgid, action, msgtype, sender, sender_kind, receivers, room_id, \
    msg_time_ms, staff_id, external_userid, text, payload, revoked_at_ms, revoked_by";

async fn log(
    db: &Db,
    who: &Reader<'_>,
    what: &str,
    target: &str,
    items: i64,
) -> Result<(), StoreError> {
    const SQL: &str = "INSERT INTO archive_read (at_ms, actor, role, corp_id, what, target, items) \
        VALUES ($1, $2, $3, $4, $5, $6, $7)";
    on_db!(db, |pool| sqlx::query(SQL)
        .bind(crate::platform::db::now_ms())
        .bind(&who.actor)
        .bind(who.role)
        .bind(who.corp_id)
        .bind(what)
        .bind(target)
        .bind(items)
        .execute(pool)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// Archived messages shown as an alert's evidence (their text) are a read of archived chat:
/// logged like any other (`what` = `alert_evidence`, target = the alert).
pub async fn evidence_shown(
    db: &Db,
    who: &Reader<'_>,
    alert_id: i64,
    items: i64,
) -> Result<(), StoreError> {
    if items == 0 {
        return Ok(());
    }
    log(
        db,
        who,
        "alert_evidence",
        &format!("alert:{alert_id}"),
        items,
    )
    .await
}

/// Messages of the reader's corp, newest first; the read is logged with the filter.
pub async fn messages(
    db: &Db,
    who: &Reader<'_>,
    f: &MessageFilter,
) -> Result<Vec<MessageRow>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM archive_message WHERE corp_id = $1 \
         AND ($2 IS NULL OR staff_id = $2 OR sender = $2) \
         AND ($3 IS NULL OR external_userid = $3 OR sender = $3) \
         AND ($4 IS NULL OR room_id = $4) \
         AND ($5 IS NULL OR msg_time_ms >= $5) AND ($6 IS NULL OR msg_time_ms < $6) \
         AND ($7 IS NULL OR id < $7) ORDER BY msg_time_ms DESC, id DESC LIMIT $8"
    );
    let rows: Vec<MessageRow> =
        on_db!(db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(who.corp_id)
            .bind(f.staff_id.as_deref())
            .bind(f.external_userid.as_deref())
            .bind(f.room_id.as_deref())
            .bind(f.since_ms)
            .bind(f.until_ms)
            .bind(f.before_id)
            .bind(f.limit)
            .fetch_all(pool)
            .await)?;
    let target = serde_json::json!({
        "staff_id": f.staff_id, "external_userid": f.external_userid, "room_id": f.room_id,
        "since_ms": f.since_ms, "until_ms": f.until_ms, "before_id": f.before_id,
    })
    .to_string();
    log(
        db,
        who,
        "messages",
        &target,
        i64::try_from(rows.len()).unwrap_or(0),
    )
    .await?;
    Ok(rows)
}

/// The conversation around message `msgid`: up to `around` messages before it and after it in
/// the same chat (the room, or the staff member's 1:1 chat with the customer), oldest first,
/// the message itself among them. Logged (`what` = `alert_context`, target = the msgid); empty
/// when the message is not archived.
pub async fn around(
    db: &Db,
    who: &Reader<'_>,
    msgid: &str,
    around: i64,
) -> Result<Vec<MessageRow>, StoreError> {
    let find = format!("SELECT {COLUMNS} FROM archive_message WHERE corp_id = $1 AND msgid = $2");
    let Some(m): Option<MessageRow> = on_db!(db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(
        find.as_str()
    ))
    .bind(who.corp_id)
    .bind(msgid)
    .fetch_optional(pool)
    .await)?
    else {
        return Ok(Vec::new());
    };
    // The same chat: the room, else the pair (either side may be the sender).
    let chat = "AND (($3 IS NOT NULL AND room_id = $3) OR ($3 IS NULL AND room_id IS NULL         AND staff_id = $4 AND external_userid = $5))";
    let side = |cmp: &str, order: &str| {
        format!(
            "SELECT {COLUMNS} FROM archive_message WHERE corp_id = $1 {chat}              AND (msg_time_ms {cmp} $2 OR (msg_time_ms = $2 AND id {cmp} $6))              ORDER BY msg_time_ms {order}, id {order} LIMIT $7"
        )
    };
    let mut rows = Vec::new();
    for (cmp, order) in [("<", "DESC"), (">", "ASC")] {
        let sql = side(cmp, order);
        let part: Vec<MessageRow> =
            on_db!(db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(who.corp_id)
                .bind(m.msg_time_ms)
                .bind(m.room_id.as_deref())
                .bind(m.staff_id.as_deref())
                .bind(m.external_userid.as_deref())
                .bind(m.id)
                .bind(around.clamp(0, 50))
                .fetch_all(pool)
                .await)?;
        rows.extend(part);
    }
    rows.push(m);
    rows.sort_by_key(|r| (r.msg_time_ms, r.id));
    log(
        db,
        who,
        "alert_context",
        msgid,
        i64::try_from(rows.len()).unwrap_or(0),
    )
    .await?;
    Ok(rows)
}

/// One message by row id (of the reader's corp); logged.
pub async fn message(db: &Db, who: &Reader<'_>, id: i64) -> Result<Option<MessageRow>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM archive_message WHERE corp_id = $1 AND id = $2");
    let row: Option<MessageRow> =
        on_db!(db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(who.corp_id)
            .bind(id)
            .fetch_optional(pool)
            .await)?;
    if let Some(r) = &row {
        log(db, who, "message", &r.msgid, 1).await?;
    }
    Ok(row)
}

/// A downloaded media file of the reader's corp: (path, file name, kind); logged.
pub async fn media_file(
    db: &Db,
    who: &Reader<'_>,
    id: i64,
) -> Result<Option<MediaRow>, StoreError> {
    let sql = format!("SELECT {MEDIA_COLUMNS} FROM archive_media WHERE corp_id = $1 AND id = $2");
    let row: Option<MediaRow> =
        on_db!(db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(who.corp_id)
            .bind(id)
            .fetch_optional(pool)
            .await)?;
    if let Some(r) = &row
        && r.state == "done"
    {
        log(db, who, "media", &r.msgid, 1).await?;
    }
    Ok(row)
}

/// A media row.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct MediaRow {
    /// Row id.
    pub id: i64,
    /// WeCom's file id.
    pub sdkfileid: String,
    /// The message it belongs to.
    pub msgid: String,
    /// `image`, `voice`, `video`, `file`, …
    pub kind: String,
    /// Expected md5 (hex).
    pub md5sum: Option<String>,
    /// Expected size.
    pub size: Option<i64>,
    /// File name (for files).
    pub file_name: Option<String>,
    /// `pending`, `done`, `too_large`, `failed`, `expired` (deleted by `[retention] media_days`).
    pub state: String,
    /// Bytes downloaded so far.
    pub bytes_done: i64,
    /// Why it failed.
    pub error: Option<String>,
    /// Where it is stored.
    pub path: Option<String>,
}

/// Media of one message (no content, so not logged).
pub async fn media_of(db: &Db, corp_id: &str, msgid: &str) -> Result<Vec<MediaRow>, StoreError> {
    let sql = format!(
        "SELECT {MEDIA_COLUMNS} FROM archive_media WHERE corp_id = $1 AND msgid = $2 ORDER BY id"
    );
    Ok(on_db!(db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(
        sql.as_str()
    ))
    .bind(corp_id)
    .bind(msgid)
    .fetch_all(pool)
    .await)?)
}

/// One entry of the read log.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ReadRow {
    /// Row id.
    pub id: i64,
    /// When.
    pub at_ms: i64,
    /// Who.
    pub actor: String,
    /// With which role.
    pub role: String,
    /// `messages`, `message`, `media`.
    pub what: String,
    /// The filter or the msgid.
    pub target: String,
    /// How many messages it showed.
    pub items: i64,
}

/// The read log of a corp, newest first.
pub async fn reads(db: &Db, corp_id: &str, limit: i64) -> Result<Vec<ReadRow>, StoreError> {
    const SQL: &str = "SELECT id, at_ms, actor, role, what, target, items FROM archive_read \
        WHERE corp_id = $1 ORDER BY id DESC LIMIT $2";
    Ok(on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp_id)
        .bind(limit)
        .fetch_all(pool)
        .await)?)
}

/// The newest archived messages of a staff member's 1:1 chat with a customer, as references
/// (id, time, sender kind, type) without their content, for a deletion alert's evidence: reading
/// them goes through the audited API.
pub async fn last_of_pair(
    db: &Db,
    corp_id: &CorpId,
    staff_id: &UserId,
    external_userid: &ExternalUserId,
    limit: i64,
) -> Result<Vec<serde_json::Value>, StoreError> {
    let (corp_id, staff_id, external_userid) = (
        corp_id.as_str(),
        staff_id.as_str(),
        external_userid.as_str(),
    );
    const SQL: &str = "SELECT id, msg_time_ms, sender_kind, msgtype FROM archive_message \
        WHERE corp_id = $1 AND staff_id = $2 AND external_userid = $3 \
        ORDER BY msg_time_ms DESC, id DESC LIMIT $4";
    let rows: Vec<(i64, i64, String, String)> = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp_id)
        .bind(staff_id)
        .bind(external_userid)
        .bind(limit)
        .fetch_all(pool)
        .await)?;
    Ok(rows
        .into_iter()
        .map(|(id, at, kind, msgtype)| {
            serde_json::json!({"id": id, "msg_time_ms": at, "sender_kind": kind, "msgtype": msgtype})
        })
        .collect())
}
