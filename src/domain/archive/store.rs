//! The archive's tables (migration 0006): the cursor per corp, messages, undecryptable records,
//! media and the read log. The cursor moves only inside the transaction that stored (or recorded
//! as undecryptable) every record up to its new value, and only from the value the pull started
//! at (compare and set), so two pullers can never leave a gap or move it backwards.

use serde::Serialize;
use wecom_sdk::archive::message::{ArchivedMessage, SenderKind};

use crate::domain::archive::proto::{Item, Outcome};
use crate::platform::db::{Db, StoreError, Tx};
use crate::{on_db, on_tx};

/// A corp's archive state, as `scrm archive status` and the API show it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct CursorRow {
    /// The corp.
    pub corp_id: String,
    /// Every record up to here is stored or recorded as undecryptable.
    pub seq: i64,
    /// The largest seq the library returned.
    pub newest_seen_seq: i64,
    /// Send time of the newest stored message, epoch ms.
    pub newest_msg_time_ms: Option<i64>,
    /// Last pull attempt.
    pub last_pull_at_ms: Option<i64>,
    /// Last pull that completed.
    pub last_success_at_ms: Option<i64>,
    /// The last error (cleared by a good pull).
    pub last_error: Option<String>,
    /// When.
    pub last_error_at_ms: Option<i64>,
    /// Worker restarts so far.
    pub worker_restarts: i64,
    /// Why the worker was last replaced.
    pub last_restart_reason: Option<String>,
    /// When the last stall alert went out.
    pub stall_alerted_at_ms: Option<i64>,
}

const CURSOR_COLUMNS: &str = "corp_id, seq, newest_seen_seq, newest_msg_time_ms, last_pull_at_ms, \
    last_success_at_ms, last_error, last_error_at_ms, worker_restarts, last_restart_reason, \
    stall_alerted_at_ms";

/// The corp's cursor row, created at seq 0 when missing.
pub async fn cursor(db: &Db, corp_id: &str, now_ms: i64) -> Result<CursorRow, StoreError> {
    const ENSURE: &str = "INSERT INTO archive_cursor (corp_id, updated_at_ms) VALUES ($1, $2) \
        ON CONFLICT (corp_id) DO NOTHING";
    on_db!(db, |pool| sqlx::query(ENSURE)
        .bind(corp_id)
        .bind(now_ms)
        .execute(pool)
        .await
        .map(|_| ()))?;
    find_cursor(db, corp_id).await?.ok_or(StoreError::NotFound)
}

/// The corp's cursor row, if it has one.
pub async fn find_cursor(db: &Db, corp_id: &str) -> Result<Option<CursorRow>, StoreError> {
    let sql = format!("SELECT {CURSOR_COLUMNS} FROM archive_cursor WHERE corp_id = $1");
    Ok(on_db!(db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(
        sql.as_str()
    ))
    .bind(corp_id)
    .fetch_optional(pool)
    .await)?)
}

/// Every corp's cursor row.
pub async fn cursors(db: &Db) -> Result<Vec<CursorRow>, StoreError> {
    let sql = format!("SELECT {CURSOR_COLUMNS} FROM archive_cursor ORDER BY corp_id");
    Ok(on_db!(db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(
        sql.as_str()
    ))
    .fetch_all(pool)
    .await)?)
}

/// Records a failed pull (the cursor stays).
pub async fn record_error(
    db: &Db,
    corp_id: &str,
    error: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    const SQL: &str = "UPDATE archive_cursor SET last_error = $2, last_error_at_ms = $3, \
        last_pull_at_ms = $3, updated_at_ms = $3 WHERE corp_id = $1";
    cursor(db, corp_id, now_ms).await?;
    on_db!(db, |pool| sqlx::query(SQL)
        .bind(corp_id)
        .bind(crate::pipeline::worker::truncate_bytes(error, 2000))
        .bind(now_ms)
        .execute(pool)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// Records a pull that found nothing new.
pub async fn record_caught_up(db: &Db, corp_id: &str, now_ms: i64) -> Result<(), StoreError> {
    const SQL: &str = "UPDATE archive_cursor SET last_error = NULL, last_pull_at_ms = $2, \
        last_success_at_ms = $2, stall_alerted_at_ms = NULL, updated_at_ms = $2 WHERE corp_id = $1";
    on_db!(db, |pool| sqlx::query(SQL)
        .bind(corp_id)
        .bind(now_ms)
        .execute(pool)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// Counts a worker restart.
pub async fn record_restart(
    db: &Db,
    corp_id: &str,
    reason: &str,
    detail: &str,
) -> Result<(), StoreError> {
    const SQL: &str = "UPDATE archive_cursor SET worker_restarts = worker_restarts + 1, \
        last_restart_reason = $2, last_error = $3, last_error_at_ms = $4, updated_at_ms = $4 \
        WHERE corp_id = $1";
    let now = crate::platform::db::now_ms();
    cursor(db, corp_id, now).await?;
    let error = format!("archive worker replaced ({reason}): {detail}");
    on_db!(db, |pool| sqlx::query(SQL)
        .bind(corp_id)
        .bind(reason)
        .bind(crate::pipeline::worker::truncate_bytes(&error, 2000))
        .bind(now)
        .execute(pool)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// Marks that a stall alert went out.
pub async fn record_stall_alert(db: &Db, corp_id: &str, now_ms: i64) -> Result<(), StoreError> {
    const SQL: &str = "UPDATE archive_cursor SET stall_alerted_at_ms = $2 WHERE corp_id = $1";
    on_db!(db, |pool| sqlx::query(SQL)
        .bind(corp_id)
        .bind(now_ms)
        .execute(pool)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// What storing a batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stored {
    /// New messages stored.
    pub messages: u64,
    /// Records already stored (a re-pull).
    pub duplicates: u64,
    /// Records recorded as undecryptable.
    pub undecryptable: u64,
    /// The cursor after the batch.
    pub seq: i64,
}

/// The cursor moved since the batch was asked for: another puller stored it.
#[derive(Debug, thiserror::Error)]
pub enum StoreBatchError {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Another instance advanced the cursor first; nothing was changed.
    #[error("the cursor moved from {expected}: another puller got there first")]
    CursorMoved {
        /// The seq this pull started from.
        expected: i64,
    },
}

/// A message ready for its row.
struct Row<'a> {
    m: &'a ArchivedMessage,
    seq: i64,
    msgid: &'a str,
    sender_kind: &'static str,
    staff_id: Option<&'a str>,
    external_userid: Option<&'a str>,
    text: Option<String>,
    payload: String,
}

/// Whether an id is an external person's (`wm…`/`wo…` external_userid).
pub fn is_external(id: &str) -> bool {
    id.starts_with("wm") || id.starts_with("wo")
}

fn row<'a>(m: &'a ArchivedMessage, seq: i64, msgid: &'a str) -> Row<'a> {
    let sender_kind = match m.sender_kind() {
        SenderKind::Staff => "staff",
        SenderKind::External => "customer",
        SenderKind::Robot => "robot",
    };
    let (staff_id, external_userid) = if m.roomid.is_empty() {
        let peer = m.tolist.first().map(String::as_str);
        match (sender_kind, peer) {
            ("staff", Some(p)) if is_external(p) => (Some(m.from.as_str()), Some(p)),
            ("customer", Some(p)) if !is_external(p) => (Some(p), Some(m.from.as_str())),
            ("staff", _) => (Some(m.from.as_str()), None),
            _ => (None, None),
        }
    } else if sender_kind == "staff" {
        (Some(m.from.as_str()), None)
    } else {
        (None, None)
    };
    let texts = m.scan_texts();
    Row {
        m,
        seq,
        msgid,
        sender_kind,
        staff_id,
        external_userid,
        text: (!texts.is_empty()).then(|| texts.join("\n")),
        payload: m.raw.to_string(),
    }
}

/// Stores a batch and moves the cursor from `from_seq` to the batch's largest seq, in one
/// transaction. Undecryptable records (and decrypted JSON that does not parse) are recorded with
/// their reason and the ciphertext, so a fixed key can decrypt them later.
pub async fn store_batch(
    db: &Db,
    corp_id: &str,
    from_seq: i64,
    items: &[Item],
    media_max_bytes: u64,
    now_ms: i64,
) -> Result<Stored, StoreBatchError> {
    const MOVE: &str = "UPDATE archive_cursor SET seq = $3, \
        newest_seen_seq = CASE WHEN newest_seen_seq > $3 THEN newest_seen_seq ELSE $3 END, \
        newest_msg_time_ms = CASE WHEN newest_msg_time_ms IS NULL OR newest_msg_time_ms < $4 \
            THEN $4 ELSE newest_msg_time_ms END, \
        last_pull_at_ms = $5, last_success_at_ms = $5, last_error = NULL, \
        stall_alerted_at_ms = NULL, messages = messages + $6, updated_at_ms = $5 \
        WHERE corp_id = $1 AND seq = $2";
    let to_seq = items
        .iter()
        .map(|i| i64::try_from(i.record.seq).unwrap_or(i64::MAX))
        .max()
        .unwrap_or(from_seq)
        .max(from_seq);
    let mut stored = Stored {
        seq: to_seq,
        ..Stored::default()
    };
    let mut tx = db.begin().await?;
    // Records of a pull are past the cursor: none of them can be recorded as undecryptable yet.
    let newest_time = store_items(
        &mut tx,
        corp_id,
        items,
        media_max_bytes,
        now_ms,
        &mut stored,
        false,
    )
    .await?;
    let moved = on_tx!(&mut tx, |conn| sqlx::query(MOVE)
        .bind(corp_id)
        .bind(from_seq)
        .bind(to_seq)
        .bind(newest_time.unwrap_or(0))
        .bind(now_ms)
        .bind(i64::try_from(stored.messages).unwrap_or(i64::MAX))
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected()))
    .map_err(StoreError::from)?;
    if moved == 0 {
        return Err(StoreBatchError::CursorMoved { expected: from_seq });
    }
    tx.commit().await?;
    if stored.undecryptable > 0 {
        metrics::counter!("scrm_archive_undecryptable_total", "corp_id" => corp_id.to_owned())
            .increment(stored.undecryptable);
        tracing::warn!(
            corp_id,
            undecryptable = stored.undecryptable,
            seq = to_seq,
            "archived records could not be decrypted; they are recorded with the reason (scrm archive status)"
        );
    }
    metrics::counter!("scrm_archive_messages_total", "corp_id" => corp_id.to_owned())
        .increment(stored.messages);
    Ok(stored)
}

/// Stores re-decrypted records (no cursor move: they are behind it already); those that still
/// fail get their attempt counted and the new reason.
pub async fn store_redecrypted(
    db: &Db,
    corp_id: &str,
    items: &[Item],
    media_max_bytes: u64,
    now_ms: i64,
) -> Result<Stored, StoreError> {
    const COUNT: &str = "UPDATE archive_cursor SET messages = messages + $2 WHERE corp_id = $1";
    let mut stored = Stored::default();
    let mut tx = db.begin().await?;
    store_items(
        &mut tx,
        corp_id,
        items,
        media_max_bytes,
        now_ms,
        &mut stored,
        true,
    )
    .await?;
    if stored.messages > 0 {
        on_tx!(&mut tx, |conn| sqlx::query(COUNT)
            .bind(corp_id)
            .bind(i64::try_from(stored.messages).unwrap_or(i64::MAX))
            .execute(&mut *conn)
            .await
            .map(|_| ()))?;
    }
    tx.commit().await?;
    Ok(stored)
}

/// Each item as a message (with its consequences) or as an undecryptable record; the newest send
/// time stored. `recorded`: the items may be recorded as undecryptable already (a retry), so a
/// decrypted one resolves its record.
async fn store_items(
    tx: &mut crate::platform::db::Tx,
    corp_id: &str,
    items: &[Item],
    media_max_bytes: u64,
    now_ms: i64,
    stored: &mut Stored,
    recorded: bool,
) -> Result<Option<i64>, StoreError> {
    let mut newest_time: Option<i64> = None;
    for item in items {
        let seq = i64::try_from(item.record.seq).unwrap_or(i64::MAX);
        let parsed = match &item.outcome {
            Outcome::Plain { json } => ArchivedMessage::parse(json.as_bytes())
                .map_err(|e| ("corrupt_payload".to_owned(), format!("decrypted JSON: {e}"))),
            Outcome::Undecryptable { reason, detail } => Err((reason.clone(), detail.clone())),
        };
        match parsed {
            Ok(m) => {
                let r = row(&m, seq, &item.record.msgid);
                if insert_message(tx, corp_id, &r, now_ms).await? {
                    stored.messages += 1;
                    newest_time = newest_time.max(Some(m.msgtime_ms));
                    after_insert(tx, corp_id, &m, &item.record.msgid, media_max_bytes, now_ms)
                        .await?;
                } else {
                    stored.duplicates += 1;
                }
                if recorded {
                    resolve_undecryptable(tx, corp_id, &item.record.msgid, now_ms).await?;
                }
            }
            Err((reason, detail)) => {
                stored.undecryptable += 1;
                record_undecryptable(tx, corp_id, item, &reason, &detail, now_ms).await?;
            }
        }
    }
    Ok(newest_time)
}

async fn insert_message(
    tx: &mut crate::platform::db::Tx,
    corp_id: &str,
    r: &Row<'_>,
    now_ms: i64,
) -> Result<bool, StoreError> {
    const SQL: &str = "INSERT INTO archive_message (corp_id, seq, msgid, action, msgtype, sender, \
        sender_kind, receivers, room_id, msg_time_ms, staff_id, external_userid, text, payload, \
        stored_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
        ON CONFLICT (corp_id, msgid) DO NOTHING";
    let action = match &r.m.action {
        wecom_sdk::archive::message::Action::Send => "send",
        wecom_sdk::archive::message::Action::Recall => "recall",
        wecom_sdk::archive::message::Action::Switch => "switch",
        wecom_sdk::archive::message::Action::Other(other) => other.as_str(),
    };
    let receivers = serde_json::to_string(&r.m.tolist).unwrap_or_else(|_| "[]".into());
    let room = (!r.m.roomid.is_empty()).then_some(r.m.roomid.as_str());
    let n = on_tx!(tx, |conn| sqlx::query(SQL)
        .bind(corp_id)
        .bind(r.seq)
        .bind(r.msgid)
        .bind(action)
        .bind(&r.m.msgtype)
        .bind(&r.m.from)
        .bind(r.sender_kind)
        .bind(&receivers)
        .bind(room)
        .bind(r.m.msgtime_ms)
        .bind(r.staff_id)
        .bind(r.external_userid)
        .bind(r.text.as_deref())
        .bind(&r.payload)
        .bind(now_ms)
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// A new message's consequences: a recall marks the message it recalls (never deletes it); media
/// is queued for download (or recorded as too large).
async fn after_insert(
    tx: &mut crate::platform::db::Tx,
    corp_id: &str,
    m: &ArchivedMessage,
    msgid: &str,
    media_max_bytes: u64,
    now_ms: i64,
) -> Result<(), StoreError> {
    const REVOKE: &str = "UPDATE archive_message SET revoked_at_ms = $3, revoked_by = $4 \
        WHERE corp_id = $1 AND msgid = $2";
    const MEDIA: &str = "INSERT INTO archive_media (corp_id, sdkfileid, msgid, kind, md5sum, \
        size, file_name, state, updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
        ON CONFLICT (corp_id, sdkfileid) DO NOTHING";
    if let Some(recalled) = m.recalled_msgid() {
        on_tx!(tx, |conn| sqlx::query(REVOKE)
            .bind(corp_id)
            .bind(recalled)
            .bind(m.msgtime_ms)
            .bind(msgid)
            .execute(&mut *conn)
            .await
            .map(|_| ()))?;
    }
    for media in m.media() {
        let size = media.size.map(|s| i64::try_from(s).unwrap_or(i64::MAX));
        let state = if media.size.is_some_and(|s| s > media_max_bytes) {
            "too_large"
        } else {
            "pending"
        };
        on_tx!(tx, |conn| sqlx::query(MEDIA)
            .bind(corp_id)
            .bind(&media.sdkfileid)
            .bind(msgid)
            .bind(&media.kind)
            .bind(media.md5sum.as_deref())
            .bind(size)
            .bind(media.file_name.as_deref())
            .bind(state)
            .bind(now_ms)
            .execute(&mut *conn)
            .await
            .map(|_| ()))?;
    }
    Ok(())
}

async fn record_undecryptable(
    tx: &mut crate::platform::db::Tx,
    corp_id: &str,
    item: &Item,
    reason: &str,
    detail: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    const SQL: &str = "INSERT INTO archive_undecryptable (corp_id, seq, msgid, publickey_ver, \
        reason, detail, encrypt_random_key, encrypt_chat_msg, recorded_at_ms) \
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (corp_id, msgid) DO UPDATE SET \
        attempts = archive_undecryptable.attempts + 1, reason = excluded.reason, \
        detail = excluded.detail";
    let r = &item.record;
    on_tx!(tx, |conn| sqlx::query(SQL)
        .bind(corp_id)
        .bind(i64::try_from(r.seq).unwrap_or(i64::MAX))
        .bind(&r.msgid)
        .bind(i64::from(r.publickey_ver))
        .bind(reason)
        .bind(detail)
        .bind(&r.encrypt_random_key)
        .bind(&r.encrypt_chat_msg)
        .bind(now_ms)
        .execute(&mut *conn)
        .await
        .map(|_| ()))?;
    tracing::warn!(corp_id, seq = r.seq, msgid = %r.msgid, publickey_ver = r.publickey_ver, reason, detail, "archived record not decryptable; recorded");
    Ok(())
}

async fn resolve_undecryptable(
    tx: &mut crate::platform::db::Tx,
    corp_id: &str,
    msgid: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    const SQL: &str = "UPDATE archive_undecryptable SET resolved_at_ms = $3 \
        WHERE corp_id = $1 AND msgid = $2 AND resolved_at_ms IS NULL";
    on_tx!(tx, |conn| sqlx::query(SQL)
        .bind(corp_id)
        .bind(msgid)
        .bind(now_ms)
        .execute(&mut *conn)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// A recorded undecryptable record.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct UndecryptableRow {
    /// Row id.
    pub id: i64,
    /// The corp.
    pub corp_id: String,
    /// Its seq.
    pub seq: i64,
    /// Its msgid.
    pub msgid: String,
    /// The key version that wrapped it.
    pub publickey_ver: i64,
    /// `unknown_key_version`, `bad_key`, `corrupt_key`, `corrupt_payload`, `not_utf8`.
    pub reason: String,
    /// Detail.
    pub detail: String,
    /// Decryption attempts.
    pub attempts: i32,
    /// When first recorded.
    pub recorded_at_ms: i64,
    /// When a later attempt decrypted it.
    pub resolved_at_ms: Option<i64>,
}

/// Undecryptable records of a corp (`open_only`: not yet resolved), newest first.
pub async fn undecryptable(
    db: &Db,
    corp_id: &str,
    open_only: bool,
    limit: i64,
) -> Result<Vec<UndecryptableRow>, StoreError> {
    const SQL: &str = "SELECT id, corp_id, seq, msgid, publickey_ver, reason, detail, attempts, \
        recorded_at_ms, resolved_at_ms FROM archive_undecryptable WHERE corp_id = $1 \
        AND ($2 = FALSE OR resolved_at_ms IS NULL) ORDER BY seq DESC LIMIT $3";
    Ok(on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp_id)
        .bind(open_only)
        .bind(limit)
        .fetch_all(pool)
        .await)?)
}

/// Open undecryptable records with their ciphertext, for another attempt (seq ascending).
pub async fn open_records(
    db: &Db,
    corp_id: &str,
    after_id: i64,
    limit: i64,
) -> Result<Vec<(i64, wecom_sdk::archive::EncryptedRecord)>, StoreError> {
    const SQL: &str = "SELECT id, seq, msgid, publickey_ver, encrypt_random_key, encrypt_chat_msg \
        FROM archive_undecryptable WHERE corp_id = $1 AND resolved_at_ms IS NULL AND id > $2 \
        ORDER BY id LIMIT $3";
    let rows: Vec<(i64, i64, String, i64, String, String)> = on_db!(db, |pool| {
        sqlx::query_as(SQL)
            .bind(corp_id)
            .bind(after_id)
            .bind(limit)
            .fetch_all(pool)
            .await
    })?;
    Ok(rows
        .into_iter()
        .map(|(id, seq, msgid, ver, key, msg)| {
            (
                id,
                wecom_sdk::archive::EncryptedRecord {
                    seq: u64::try_from(seq).unwrap_or(0),
                    msgid,
                    publickey_ver: u32::try_from(ver).unwrap_or(0),
                    encrypt_random_key: key,
                    encrypt_chat_msg: msg,
                },
            )
        })
        .collect())
}

/// Counts for the status view and `/metrics`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    /// Stored messages.
    pub messages: i64,
    /// Undecryptable records not yet resolved.
    pub undecryptable_open: i64,
    /// Messages not yet scanned.
    pub unscanned: i64,
    /// Media waiting for download.
    pub media_pending: i64,
    /// Media that failed for good.
    pub media_failed: i64,
}

/// Undecryptable records of one corp not yet resolved (through the partial index on open ones).
pub async fn count_undecryptable_open(db: &Db, corp_id: &str) -> Result<i64, StoreError> {
    const SQL: &str = "SELECT COUNT(*) FROM archive_undecryptable WHERE corp_id = $1 \
        AND resolved_at_ms IS NULL";
    Ok(on_db!(db, |pool| sqlx::query_scalar(SQL)
        .bind(corp_id)
        .fetch_one(pool)
        .await)?)
}

/// Undecryptable records still open, by the `publickey_ver` they were encrypted for.
pub async fn undecryptable_by_key(db: &Db, corp_id: &str) -> Result<Vec<(i64, i64)>, StoreError> {
    const SQL: &str = "SELECT publickey_ver, COUNT(*) FROM archive_undecryptable \
        WHERE corp_id = $1 AND resolved_at_ms IS NULL GROUP BY publickey_ver ORDER BY publickey_ver";
    Ok(on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp_id)
        .fetch_all(pool)
        .await)?)
}

/// The counts of one corp. The stored messages are the cursor's counter, added to in the
/// transaction that stores them (a count of `archive_message` reads a million index entries per
/// million messages); the others are counted through partial or state indexes.
pub async fn counts(db: &Db, corp_id: &str) -> Result<Counts, StoreError> {
    const SQL: &str = "SELECT \
        COALESCE((SELECT messages FROM archive_cursor WHERE corp_id = $1), 0), \
        (SELECT COUNT(*) FROM archive_undecryptable WHERE corp_id = $1 AND resolved_at_ms IS NULL), \
        (SELECT COUNT(*) FROM archive_message WHERE corp_id = $1 AND NOT scanned), \
        (SELECT COUNT(*) FROM archive_media WHERE corp_id = $1 AND state = 'pending'), \
        (SELECT COUNT(*) FROM archive_media WHERE corp_id = $1 AND state = 'failed')";
    let (messages, undecryptable_open, unscanned, media_pending, media_failed): (
        i64,
        i64,
        i64,
        i64,
        i64,
    ) = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp_id)
        .fetch_one(pool)
        .await)?;
    Ok(Counts {
        messages,
        undecryptable_open,
        unscanned,
        media_pending,
        media_failed,
    })
}

/// A media file still to download, with where its download stands.
#[derive(Debug, sqlx::FromRow)]
pub struct PendingMedia {
    /// `id`.
    pub id: i64,
    /// `sdkfileid`.
    pub sdkfileid: String,
    /// `md5sum`.
    pub md5sum: Option<String>,
    /// `size`.
    pub size: Option<i64>,
    /// `next_index`.
    pub next_index: String,
    /// `bytes_done`.
    pub bytes_done: i64,
    /// `attempts`.
    pub attempts: i32,
}

/// The oldest media file of a corp still to download.
pub async fn next_pending_media(
    db: &Db,
    corp_id: &str,
) -> Result<Option<PendingMedia>, StoreError> {
    const NEXT: &str = "SELECT id, sdkfileid, md5sum, size, next_index, bytes_done, attempts \
        FROM archive_media WHERE corp_id = $1 AND state = 'pending' ORDER BY id LIMIT 1";
    let next = on_db!(db, |pool| sqlx::query_as(NEXT)
        .bind(corp_id)
        .fetch_optional(pool)
        .await)?;
    Ok(next)
}

/// A media file's new state (`done` with its path, `too_large`, `failed` with the error).
pub async fn set_media_state(
    db: &Db,
    id: i64,
    state: &str,
    error: Option<&str>,
    path: Option<&str>,
) -> Result<(), StoreError> {
    const SQL: &str = "UPDATE archive_media SET state = $2, error = $3, path = COALESCE($4, path), \
        attempts = attempts + CASE WHEN $2 = 'failed' THEN 1 ELSE 0 END, updated_at_ms = $5 \
        WHERE id = $1";
    on_db!(db, |pool| sqlx::query(SQL)
        .bind(id)
        .bind(state)
        .bind(error)
        .bind(path)
        .bind(crate::platform::db::now_ms())
        .execute(pool)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// A failed download attempt: tried again later, `failed` once `max_attempts` were made.
pub async fn media_failed_attempt(
    db: &Db,
    id: i64,
    error: &str,
    max_attempts: i32,
    now_ms: i64,
) -> Result<(), StoreError> {
    const RETRY: &str = "UPDATE archive_media SET attempts = attempts + 1, error = $2, \
        state = CASE WHEN attempts + 1 >= $3 THEN 'failed' ELSE state END, updated_at_ms = $4 \
        WHERE id = $1";
    on_db!(db, |pool| sqlx::query(RETRY)
        .bind(id)
        .bind(error)
        .bind(max_attempts)
        .bind(now_ms)
        .execute(pool)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// Where a download stands after a chunk (a restart resumes from here).
pub async fn media_checkpoint(
    db: &Db,
    id: i64,
    next_index: &str,
    bytes_done: i64,
    now_ms: i64,
) -> Result<(), StoreError> {
    const CHECKPOINT: &str = "UPDATE archive_media SET next_index = $2, bytes_done = $3, \
        updated_at_ms = $4 WHERE id = $1";
    on_db!(db, |pool| sqlx::query(CHECKPOINT)
        .bind(id)
        .bind(next_index)
        .bind(bytes_done)
        .bind(now_ms)
        .execute(pool)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// Expires up to `limit` downloaded media last written before `before_ms`: the row says `expired`
/// without a path, and its file is deleted unless a row still `done` shares it (same content is
/// stored once). Returns the rows expired; a file that cannot be deleted is logged and left.
pub async fn expire_media(db: &Db, before_ms: i64, limit: i64) -> Result<u64, StoreError> {
    const OLD: &str = "SELECT id, path FROM archive_media WHERE state = 'done' \
        AND updated_at_ms < $1 ORDER BY id LIMIT $2";
    const EXPIRE: &str = "UPDATE archive_media SET state = 'expired', path = NULL, \
        updated_at_ms = $2 WHERE id = $1 AND state = 'done'";
    const SHARED: &str = "SELECT COUNT(*) FROM archive_media WHERE path = $1 AND state = 'done'";
    let rows: Vec<(i64, Option<String>)> = on_db!(db, |pool| sqlx::query_as(OLD)
        .bind(before_ms)
        .bind(limit)
        .fetch_all(pool)
        .await)?;
    let now = crate::platform::db::now_ms();
    for (id, path) in &rows {
        on_db!(db, |pool| sqlx::query(EXPIRE)
            .bind(id)
            .bind(now)
            .execute(pool)
            .await
            .map(|_| ()))?;
        let Some(path) = path else { continue };
        let shared: i64 = on_db!(db, |pool| sqlx::query_scalar(SHARED)
            .bind(path)
            .fetch_one(pool)
            .await)?;
        if shared == 0
            && let Err(e) = std::fs::remove_file(path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(media_id = id, error = %e, "an expired media file cannot be deleted");
        }
    }
    Ok(rows.len() as u64)
}

/// The file of content already downloaded for another message (same md5).
pub async fn downloaded_path(
    db: &Db,
    corp_id: &str,
    md5: &str,
) -> Result<Option<String>, StoreError> {
    const SAME: &str = "SELECT path FROM archive_media WHERE corp_id = $1 AND md5sum = $2 \
        AND state = 'done' AND path IS NOT NULL LIMIT 1";
    let path = on_db!(db, |pool| sqlx::query_scalar(SAME)
        .bind(corp_id)
        .bind(md5)
        .fetch_optional(pool)
        .await)?;
    Ok(path)
}

/// Records a `msgaudit_notify` (the corp's puller, on whichever instance, pulls soon).
pub async fn record_notify(db: &Db, corp_id: &str, now_ms: i64) -> Result<(), StoreError> {
    const SQL: &str = "INSERT INTO archive_cursor (corp_id, notified_at_ms, updated_at_ms) \
        VALUES ($1, $2, $2) ON CONFLICT (corp_id) DO UPDATE SET notified_at_ms = excluded.notified_at_ms";
    on_db!(db, |pool| sqlx::query(SQL)
        .bind(corp_id)
        .bind(now_ms)
        .execute(pool)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// Whether a `msgaudit_notify` came since the corp's last pull.
pub async fn notified_since_last_pull(db: &Db, corp_id: &str) -> bool {
    const SQL: &str = "SELECT 1 FROM archive_cursor WHERE corp_id = $1 AND notified_at_ms IS NOT NULL \
        AND (last_pull_at_ms IS NULL OR notified_at_ms >= last_pull_at_ms)";
    let found: Result<Option<i32>, _> = on_db!(db, |pool| sqlx::query_scalar(SQL)
        .bind(corp_id)
        .fetch_optional(pool)
        .await);
    matches!(found, Ok(Some(_)))
}

/// A stored message not scanned yet: id, msgid, msgtype, sender, sender kind, room, time, staff
/// member, customer, text.
pub type Unscanned = (
    i64,
    String,
    String,
    String,
    String,
    Option<String>,
    i64,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// The next 500 messages of a corp not scanned yet, in id order.
pub async fn unscanned_page(db: &Db, corp_id: &str) -> Result<Vec<Unscanned>, StoreError> {
    const NEXT: &str = "SELECT id, msgid, msgtype, sender, sender_kind, room_id, msg_time_ms, \
        staff_id, external_userid, text FROM archive_message \
        WHERE corp_id = $1 AND NOT scanned ORDER BY id LIMIT 500";
    let rows = on_db!(db, |pool| sqlx::query_as(NEXT)
        .bind(corp_id)
        .fetch_all(pool)
        .await)?;
    Ok(rows)
}

/// Messages `first..=last` of a corp were scanned (inside the caller's transaction, with the scan
/// window). Returns how many were marked.
pub async fn mark_scanned_in(
    tx: &mut Tx,
    corp_id: &str,
    first: i64,
    last: i64,
) -> Result<u64, StoreError> {
    const DONE: &str = "UPDATE archive_message SET scanned = TRUE WHERE corp_id = $1 \
        AND id BETWEEN $2 AND $3";
    let marked = on_tx!(tx, |conn| sqlx::query(DONE)
        .bind(corp_id)
        .bind(first)
        .bind(last)
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(marked)
}

/// Messages of a corp since `since_ms` are to be scanned again (a rescan with new rules).
pub async fn unmark_scanned_since(db: &Db, corp_id: &str, since_ms: i64) -> Result<(), StoreError> {
    const RESET: &str = "UPDATE archive_message SET scanned = FALSE WHERE corp_id = $1 \
        AND msg_time_ms >= $2 AND scanned";
    on_db!(db, |pool| sqlx::query(RESET)
        .bind(corp_id)
        .bind(since_ms)
        .execute(pool)
        .await
        .map(|_| ()))?;
    Ok(())
}
