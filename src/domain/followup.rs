//! Follow-up work on a customer: notes (跟进记录), reminders (跟进提醒) and the lifecycle stage
//! (生命周期阶段). This module owns the tables `note`, `note_revision`, `reminder`,
//! `customer_stage` and `stage_change`; the corp's stage list is its `stages` setting
//! ([`crate::domain::settings`]).
//!
//! - Notes belong to the customer, not to a relation: whoever may read the customer (so every
//!   later owner) sees all of them. They are never deleted; an edit keeps the replaced content as a
//!   `note_revision` row and bumps `revision`.
//! - Reminders have one assignee (a staff member who follows the customer). A due reminder is
//!   sent to the assignee as an app message through the outbox: [`run_due_reminders_once`] claims
//!   it (sets `notified_at_ms`) and enqueues the `message/send` intent in one transaction, under
//!   the idempotency key `reminder:{id}:{snoozes}`, so two instances or a crash never send it
//!   twice; a snooze clears `notified_at_ms` and bumps `snoozes`, so it fires once more later.
//! - Stages: the corp's list (default [`DEFAULT_STAGES`]) and each customer's current stage with
//!   every change (who, when, from, to).
//!
//! Every write made for a principal is also written to the audit log in the same transaction.
//! Authorization (role, scope) is the caller's job, through [`crate::auth`].

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use serde::Serialize;
use tokio::sync::watch;

use crate::auth;
use crate::pipeline::outbox::{self, Intent, Message};
use crate::platform::config::ReminderSettings;
use crate::platform::db::{Db, StoreError, Tx};
use crate::{on_db, on_tx};

/// Longest note body, in characters.
pub const MAX_NOTE_CHARS: usize = 5000;
/// Longest attachment link, in bytes.
pub const MAX_URL_LEN: usize = 2000;
/// Longest reminder title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Open reminders one customer may have (every one becomes an app message when due).
pub const MAX_OPEN_REMINDERS: i64 = 100;
/// The stage list when a corp has not set one.
pub const DEFAULT_STAGES: [&str; 5] = ["新客户", "意向", "成交", "复购", "流失"];
/// Most stages a corp may define.
pub const MAX_STAGES: usize = 20;
/// Longest stage name, in characters.
pub const MAX_STAGE_CHARS: usize = 20;
/// WeCom's limit on a text app message, in bytes.
const MAX_MESSAGE_BYTES: usize = 2048;
/// How far ahead a reminder may be due (ten years), so times stay sane.
const MAX_AHEAD_MS: i64 = 10 * 366 * 86_400_000;
/// Reminders claimed per query round of [`run_due_reminders_once`].
const CLAIM_BATCH: i64 = 100;
/// China Standard Time, in which reminder messages show their due time.
const CHINA_OFFSET_SECS: i32 = 8 * 3600;

/// Why a follow-up change was refused.
#[derive(Debug, thiserror::Error)]
pub enum FollowupError {
    /// A field is invalid (422 with `field` and `reason`).
    #[error("{field}: {reason}")]
    Invalid {
        /// The field (`body`, `attachment_url`, `title`, `due_at_ms`, `until_ms`, `stages[2]`…).
        field: String,
        /// Why, in Chinese.
        reason: String,
    },
    /// No such note or reminder in this corp.
    #[error("not found")]
    NotFound,
    /// The assignee does not follow the customer (now).
    #[error("the assignee does not follow this customer")]
    NotFollowed,
    /// The reminder is not in a state that allows this (done, cancelled).
    #[error("reminder is {0}")]
    WrongState(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for FollowupError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

fn invalid(field: &str, reason: impl Into<String>) -> FollowupError {
    FollowupError::Invalid {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Notes
// ---------------------------------------------------------------------------------------------

/// A follow-up note, as it reads now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Note {
    /// Id.
    pub id: i64,
    /// Corp.
    pub corp_id: String,
    /// The customer.
    pub external_user_id: String,
    /// Who wrote it (`Principal::actor`).
    pub author: String,
    /// The text.
    pub body: String,
    /// An http(s) link to an attachment.
    pub attachment_url: Option<String>,
    /// 1 when never edited; each edit adds one.
    pub revision: i64,
    /// Written, epoch ms.
    pub created_at_ms: i64,
    /// Last changed, epoch ms.
    pub updated_at_ms: i64,
    /// Who made the last edit (`None` when never edited).
    pub last_edited_by: Option<String>,
}

/// An earlier content of a note, replaced by an edit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct NoteRevision {
    /// The revision number this content had.
    pub revision: i64,
    /// The text it had.
    pub body: String,
    /// The link it had.
    pub attachment_url: Option<String>,
    /// Who replaced it.
    pub edited_by: String,
    /// When it was replaced, epoch ms.
    pub edited_at_ms: i64,
}

const NOTE_COLUMNS: &str = "id, corp_id, external_user_id, author, body, attachment_url, revision, \
    created_at_ms, updated_at_ms, (SELECT r.edited_by FROM note_revision r WHERE r.note_id = note.id \
    ORDER BY r.revision DESC LIMIT 1) AS last_edited_by";

/// Checks a note body: 1..=5000 characters, not only spaces.
pub fn check_note_body(body: &str) -> Result<(), FollowupError> {
    if body.trim().is_empty() {
        return Err(invalid("body", "内容不能为空 / must not be empty"));
    }
    if body.chars().count() > MAX_NOTE_CHARS {
        return Err(invalid(
            "body",
            format!("内容最多 {MAX_NOTE_CHARS} 个字 / at most {MAX_NOTE_CHARS} characters"),
        ));
    }
    Ok(())
}

/// Checks an attachment link: an absolute http or https URL with a host, at most 2000 bytes.
/// An empty or blank link means none.
pub fn check_attachment_url(url: Option<&str>) -> Result<Option<String>, FollowupError> {
    let Some(url) = url.map(str::trim).filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    if url.len() > MAX_URL_LEN {
        return Err(invalid(
            "attachment_url",
            format!("链接最长 {MAX_URL_LEN} 个字符 / at most {MAX_URL_LEN} bytes"),
        ));
    }
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
            Ok(Some(url.to_owned()))
        }
        _ => Err(invalid(
            "attachment_url",
            "只接受 http:// 或 https:// 链接 / must be an http(s) URL",
        )),
    }
}

async fn note_in(tx: &mut Tx, corp_id: &str, id: i64) -> Result<Option<Note>, StoreError> {
    let sql = format!("SELECT {NOTE_COLUMNS} FROM note WHERE id = $1 AND corp_id = $2");
    let row = on_tx!(tx, |conn| sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
        .bind(id)
        .bind(corp_id)
        .fetch_optional(&mut *conn)
        .await)?;
    Ok(row)
}

/// Writes a note on a customer (body and link checked here) and audits it.
pub async fn create_note(
    db: &Db,
    corp_id: &str,
    external_user_id: &str,
    author: &str,
    body: &str,
    attachment_url: Option<&str>,
    now_ms: i64,
) -> Result<Note, FollowupError> {
    const INSERT: &str = "INSERT INTO note (corp_id, external_user_id, author, body, \
        attachment_url, revision, created_at_ms, updated_at_ms) VALUES ($1, $2, $3, $4, $5, 1, $6, $6) \
        RETURNING id";
    check_note_body(body)?;
    let url = check_attachment_url(attachment_url)?;
    let mut tx = db.begin().await?;
    let id: i64 = on_tx!(&mut tx, |conn| sqlx::query_scalar(INSERT)
        .bind(corp_id)
        .bind(external_user_id)
        .bind(author)
        .bind(body)
        .bind(url.as_deref())
        .bind(now_ms)
        .fetch_one(&mut *conn)
        .await)?;
    auth::audit(
        &mut tx,
        corp_id,
        author,
        "note.create",
        &format!("note:{id}"),
        &serde_json::json!({"external_user_id": external_user_id}),
        now_ms,
    )
    .await?;
    let note = note_in(&mut tx, corp_id, id)
        .await?
        .ok_or(FollowupError::NotFound)?;
    tx.commit().await?;
    Ok(note)
}

/// A note written by the system for `author` inside the caller's transaction (the handover note
/// of a reassignment), with no audit entry of its own: the caller's action is audited.
pub async fn add_note_in(
    tx: &mut Tx,
    corp_id: &str,
    external_user_id: &str,
    author: &str,
    body: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    const NOTE: &str = "INSERT INTO note (corp_id, external_user_id, author, body, revision, \
        created_at_ms, updated_at_ms) VALUES ($1, $2, $3, $4, 1, $5, $5)";
    on_tx!(tx, |conn| sqlx::query(NOTE)
        .bind(corp_id)
        .bind(external_user_id)
        .bind(author)
        .bind(body)
        .bind(now_ms)
        .execute(&mut *conn)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// One note of the corp.
pub async fn get_note(db: &Db, corp_id: &str, id: i64) -> Result<Option<Note>, StoreError> {
    let sql = format!("SELECT {NOTE_COLUMNS} FROM note WHERE id = $1 AND corp_id = $2");
    let row = on_db!(db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
        .bind(id)
        .bind(corp_id)
        .fetch_optional(pool)
        .await)?;
    Ok(row)
}

/// A customer's notes, newest first: at most `limit` (1..=200) with ids below `before_id`.
pub async fn list_notes(
    db: &Db,
    corp_id: &str,
    external_user_id: &str,
    before_id: Option<i64>,
    limit: i64,
) -> Result<Vec<Note>, StoreError> {
    let sql = format!(
        "SELECT {NOTE_COLUMNS} FROM note WHERE corp_id = $1 AND external_user_id = $2 \
         AND ($3 IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
    );
    let rows = on_db!(db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
        .bind(corp_id)
        .bind(external_user_id)
        .bind(before_id)
        .bind(limit.clamp(1, 200))
        .fetch_all(pool)
        .await)?;
    Ok(rows)
}

/// What an edit changes: `None` keeps the field; `attachment_url: Some(None)` removes the link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoteEdit {
    /// New text.
    pub body: Option<String>,
    /// New link, or `Some(None)` for none.
    pub attachment_url: Option<Option<String>>,
}

/// Edits a note: the replaced content becomes a revision, `revision` goes up by one, and the edit
/// is audited. An edit that changes nothing records nothing. Whether `editor` may edit it (its
/// author or an admin) is the caller's check.
pub async fn edit_note(
    db: &Db,
    corp_id: &str,
    id: i64,
    edit: &NoteEdit,
    editor: &str,
    now_ms: i64,
) -> Result<Note, FollowupError> {
    const LOCK_PG: &str = "SELECT revision, body, attachment_url FROM note \
        WHERE id = $1 AND corp_id = $2 FOR UPDATE";
    const LOCK_LITE: &str = "SELECT revision, body, attachment_url FROM note \
        WHERE id = $1 AND corp_id = $2";
    const REVISION: &str = "INSERT INTO note_revision (note_id, revision, body, attachment_url, \
        edited_by, edited_at_ms) VALUES ($1, $2, $3, $4, $5, $6)";
    const UPDATE: &str = "UPDATE note SET body = $2, attachment_url = $3, revision = revision + 1, \
        updated_at_ms = $4 WHERE id = $1";
    if edit.body.is_none() && edit.attachment_url.is_none() {
        return Err(invalid(
            "body",
            "body 和 attachment_url 至少给一个 / nothing to change",
        ));
    }
    if let Some(body) = &edit.body {
        check_note_body(body)?;
    }
    let new_url = match &edit.attachment_url {
        Some(url) => Some(check_attachment_url(url.as_deref())?),
        None => None,
    };
    let mut tx = db.begin().await?;
    let lock = if tx.is_postgres() { LOCK_PG } else { LOCK_LITE };
    let current: Option<(i64, String, Option<String>)> = on_tx!(&mut tx, |conn| {
        sqlx::query_as(lock)
            .bind(id)
            .bind(corp_id)
            .fetch_optional(&mut *conn)
            .await
    })?;
    let (revision, old_body, old_url) = current.ok_or(FollowupError::NotFound)?;
    let body = edit.body.clone().unwrap_or_else(|| old_body.clone());
    let url = new_url.unwrap_or_else(|| old_url.clone());
    if body != old_body || url != old_url {
        on_tx!(&mut tx, |conn| sqlx::query(REVISION)
            .bind(id)
            .bind(revision)
            .bind(&old_body)
            .bind(old_url.as_deref())
            .bind(editor)
            .bind(now_ms)
            .execute(&mut *conn)
            .await
            .map(|_| ()))?;
        on_tx!(&mut tx, |conn| sqlx::query(UPDATE)
            .bind(id)
            .bind(&body)
            .bind(url.as_deref())
            .bind(now_ms)
            .execute(&mut *conn)
            .await
            .map(|_| ()))?;
        auth::audit(
            &mut tx,
            corp_id,
            editor,
            "note.edit",
            &format!("note:{id}"),
            &serde_json::json!({"replaced_revision": revision}),
            now_ms,
        )
        .await?;
    }
    let note = note_in(&mut tx, corp_id, id)
        .await?
        .ok_or(FollowupError::NotFound)?;
    tx.commit().await?;
    Ok(note)
}

/// The replaced contents of a note, newest first.
pub async fn note_revisions(db: &Db, note_id: i64) -> Result<Vec<NoteRevision>, StoreError> {
    const SQL: &str = "SELECT revision, body, attachment_url, edited_by, edited_at_ms \
        FROM note_revision WHERE note_id = $1 ORDER BY revision DESC";
    let rows = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(note_id)
        .fetch_all(pool)
        .await)?;
    Ok(rows)
}

// ---------------------------------------------------------------------------------------------
// Reminders
// ---------------------------------------------------------------------------------------------

/// A follow-up reminder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Reminder {
    /// Id.
    pub id: i64,
    /// Corp.
    pub corp_id: String,
    /// The customer.
    pub external_user_id: String,
    /// The customer's name, when we know the customer.
    pub customer_name: Option<String>,
    /// The staff member to remind.
    pub assignee: String,
    /// What to do.
    pub title: String,
    /// Due, epoch ms.
    pub due_at_ms: i64,
    /// `open`, `done` or `cancelled`.
    pub state: String,
    /// How often it was snoozed.
    pub snoozes: i64,
    /// `manual` (the API) or `after_add` (a default after adding the customer).
    pub source: String,
    /// Who created it (`system` for defaults).
    pub created_by: String,
    /// Created, epoch ms.
    pub created_at_ms: i64,
    /// Done or cancelled, epoch ms.
    pub done_at_ms: Option<i64>,
    /// Who marked it done or cancelled it.
    pub done_by: Option<String>,
    /// When it was handed to the outbox as an app message (`None`: not yet, or snoozed since).
    pub notified_at_ms: Option<i64>,
    /// The outbox item of that message.
    pub outbox_id: Option<i64>,
    /// Last changed, epoch ms.
    pub updated_at_ms: i64,
}

const REMINDER_COLUMNS: &str = "r.id, r.corp_id, r.external_user_id, c.name AS customer_name, \
    r.assignee, r.title, r.due_at_ms, r.state, r.snoozes, r.source, r.created_by, r.created_at_ms, \
    r.done_at_ms, r.done_by, r.notified_at_ms, r.outbox_id, r.updated_at_ms \
    FROM reminder r LEFT JOIN customer c ON c.corp_id = r.corp_id \
    AND c.external_user_id = r.external_user_id";

/// A reminder to create from the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewReminder<'a> {
    /// Corp.
    pub corp_id: &'a str,
    /// The customer.
    pub external_user_id: &'a str,
    /// The staff member to remind: must follow the customer.
    pub assignee: &'a str,
    /// What to do (1..=200 characters).
    pub title: &'a str,
    /// Due, epoch ms.
    pub due_at_ms: i64,
    /// Who creates it (`Principal::actor`).
    pub created_by: &'a str,
}

/// Hands `from`'s open reminders on a customer to `to` (a reassignment), inside the caller's
/// transaction.
pub async fn reassign_open_reminders(
    tx: &mut Tx,
    corp_id: &str,
    external_user_id: &str,
    from: &str,
    to: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    const REMINDERS: &str = "UPDATE reminder SET assignee = $4, updated_at_ms = $5 \
        WHERE corp_id = $1 AND external_user_id = $2 AND assignee = $3 AND state = 'open'";
    on_tx!(tx, |conn| sqlx::query(REMINDERS)
        .bind(corp_id)
        .bind(external_user_id)
        .bind(from)
        .bind(to)
        .bind(now_ms)
        .execute(&mut *conn)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// Checks a reminder title: 1..=200 characters, not only spaces.
pub fn check_title(title: &str) -> Result<(), FollowupError> {
    if title.trim().is_empty() {
        return Err(invalid("title", "标题不能为空 / must not be empty"));
    }
    if title.chars().count() > MAX_TITLE_CHARS {
        return Err(invalid(
            "title",
            format!("标题最多 {MAX_TITLE_CHARS} 个字 / at most {MAX_TITLE_CHARS} characters"),
        ));
    }
    Ok(())
}

fn check_due(field: &str, due_at_ms: i64, now_ms: i64) -> Result<(), FollowupError> {
    if due_at_ms <= 0 || due_at_ms > now_ms.saturating_add(MAX_AHEAD_MS) {
        return Err(invalid(
            field,
            "时间无效（毫秒时间戳，十年以内） / not a sane epoch-ms time",
        ));
    }
    Ok(())
}

async fn reminder_in(tx: &mut Tx, corp_id: &str, id: i64) -> Result<Option<Reminder>, StoreError> {
    let sql = format!("SELECT {REMINDER_COLUMNS} WHERE r.id = $1 AND r.corp_id = $2");
    let row = on_tx!(tx, |conn| sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
        .bind(id)
        .bind(corp_id)
        .fetch_optional(&mut *conn)
        .await)?;
    Ok(row)
}

async fn follows(
    tx: &mut Tx,
    corp_id: &str,
    user_id: &str,
    external_user_id: &str,
) -> Result<bool, StoreError> {
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

/// Creates a reminder (source `manual`): title and due time checked here, the assignee must
/// follow the customer ([`FollowupError::NotFollowed`]); audited.
pub async fn create_reminder(
    db: &Db,
    new: &NewReminder<'_>,
    now_ms: i64,
) -> Result<Reminder, FollowupError> {
    const INSERT: &str = "INSERT INTO reminder (corp_id, external_user_id, assignee, title, \
        due_at_ms, source, created_by, created_at_ms, updated_at_ms) \
        VALUES ($1, $2, $3, $4, $5, 'manual', $6, $7, $7) RETURNING id";
    const OPEN: &str = "SELECT COUNT(*) FROM reminder WHERE corp_id = $1 \
        AND external_user_id = $2 AND state = 'open'";
    check_title(new.title)?;
    check_due("due_at_ms", new.due_at_ms, now_ms)?;
    let mut tx = db.begin().await?;
    if !follows(&mut tx, new.corp_id, new.assignee, new.external_user_id).await? {
        return Err(FollowupError::NotFollowed);
    }
    let open: i64 = on_tx!(&mut tx, |conn| sqlx::query_scalar(OPEN)
        .bind(new.corp_id)
        .bind(new.external_user_id)
        .fetch_one(&mut *conn)
        .await)?;
    if open >= MAX_OPEN_REMINDERS {
        return Err(invalid(
            "due_at_ms",
            format!(
                "该客户已有 {MAX_OPEN_REMINDERS} 条未完成的提醒 / at most {MAX_OPEN_REMINDERS} open reminders per customer"
            ),
        ));
    }
    let id: i64 = on_tx!(&mut tx, |conn| sqlx::query_scalar(INSERT)
        .bind(new.corp_id)
        .bind(new.external_user_id)
        .bind(new.assignee)
        .bind(new.title)
        .bind(new.due_at_ms)
        .bind(new.created_by)
        .bind(now_ms)
        .fetch_one(&mut *conn)
        .await)?;
    auth::audit(
        &mut tx,
        new.corp_id,
        new.created_by,
        "reminder.create",
        &format!("reminder:{id}"),
        &serde_json::json!({
            "external_user_id": new.external_user_id,
            "assignee": new.assignee,
            "due_at_ms": new.due_at_ms,
        }),
        now_ms,
    )
    .await?;
    let reminder = reminder_in(&mut tx, new.corp_id, id)
        .await?
        .ok_or(FollowupError::NotFound)?;
    tx.commit().await?;
    Ok(reminder)
}

/// One reminder of the corp.
pub async fn get_reminder(db: &Db, corp_id: &str, id: i64) -> Result<Option<Reminder>, StoreError> {
    let sql = format!("SELECT {REMINDER_COLUMNS} WHERE r.id = $1 AND r.corp_id = $2");
    let row = on_db!(db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
        .bind(id)
        .bind(corp_id)
        .fetch_optional(pool)
        .await)?;
    Ok(row)
}

/// Which reminders [`list_reminders`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReminderFilter {
    /// Only this staff member's.
    pub assignee: Option<String>,
    /// Only this customer's.
    pub external_user_id: Option<String>,
    /// Only in this state (`open`, `done`, `cancelled`); `None`: any.
    pub state: Option<String>,
    /// Only due before this, epoch ms.
    pub due_before_ms: Option<i64>,
    /// Only of customers this staff member follows now (a salesperson's view).
    pub followed_by: Option<String>,
    /// At most this many (1..=500).
    pub limit: i64,
}

/// Reminders of a corp, soonest due first.
pub async fn list_reminders(
    db: &Db,
    corp_id: &str,
    f: &ReminderFilter,
) -> Result<Vec<Reminder>, StoreError> {
    let sql = format!(
        "SELECT {REMINDER_COLUMNS} WHERE r.corp_id = $1 AND ($2 IS NULL OR r.assignee = $2) \
         AND ($3 IS NULL OR r.external_user_id = $3) AND ($4 IS NULL OR r.state = $4) \
         AND ($5 IS NULL OR r.due_at_ms < $5) \
         AND ($7 IS NULL OR EXISTS (SELECT 1 FROM follow_relation f WHERE f.corp_id = r.corp_id \
           AND f.external_user_id = r.external_user_id AND f.user_id = $7 AND f.status = 'active')) \
         ORDER BY r.due_at_ms, r.id LIMIT $6"
    );
    let rows = on_db!(db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
        .bind(corp_id)
        .bind(f.assignee.as_deref())
        .bind(f.external_user_id.as_deref())
        .bind(f.state.as_deref())
        .bind(f.due_before_ms)
        .bind(f.limit.clamp(1, 500))
        .bind(f.followed_by.as_deref())
        .fetch_all(pool)
        .await)?;
    Ok(rows)
}

/// What to do to an open reminder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReminderChange {
    /// Mark it done (again: no change).
    Done,
    /// Cancel it (again: no change).
    Cancel,
    /// Move it to a later due time; it fires once more then.
    Snooze {
        /// The new due time, epoch ms (must be after now).
        until_ms: i64,
    },
}

/// Marks a reminder done, cancels or snoozes it, and audits the change. Doing what is done
/// already changes nothing; a done reminder cannot be cancelled or snoozed, a cancelled one not
/// done or snoozed ([`FollowupError::WrongState`]).
pub async fn change_reminder(
    db: &Db,
    corp_id: &str,
    id: i64,
    change: ReminderChange,
    actor: &str,
    now_ms: i64,
) -> Result<Reminder, FollowupError> {
    const LOCK_PG: &str = "SELECT state FROM reminder WHERE id = $1 AND corp_id = $2 FOR UPDATE";
    const LOCK_LITE: &str = "SELECT state FROM reminder WHERE id = $1 AND corp_id = $2";
    const CLOSE: &str = "UPDATE reminder SET state = $2, done_at_ms = $3, done_by = $4, \
        updated_at_ms = $3 WHERE id = $1";
    // A snooze clears the notification, so the reminder fires again; the new `snoozes` gives that
    // message its own idempotency key.
    const SNOOZE: &str = "UPDATE reminder SET due_at_ms = $2, notified_at_ms = NULL, \
        outbox_id = NULL, snoozes = snoozes + 1, updated_at_ms = $3 WHERE id = $1";
    if let ReminderChange::Snooze { until_ms } = change {
        if until_ms <= now_ms {
            return Err(invalid(
                "until_ms",
                "推迟到的时间必须在将来 / must be in the future",
            ));
        }
        check_due("until_ms", until_ms, now_ms)?;
    }
    let mut tx = db.begin().await?;
    let lock = if tx.is_postgres() { LOCK_PG } else { LOCK_LITE };
    let state: Option<String> = on_tx!(&mut tx, |conn| sqlx::query_scalar(lock)
        .bind(id)
        .bind(corp_id)
        .fetch_optional(&mut *conn)
        .await)?;
    let state = state.ok_or(FollowupError::NotFound)?;
    let (action, detail) = match (change, state.as_str()) {
        (ReminderChange::Done, "done") | (ReminderChange::Cancel, "cancelled") => {
            let unchanged = reminder_in(&mut tx, corp_id, id)
                .await?
                .ok_or(FollowupError::NotFound)?;
            tx.commit().await?;
            return Ok(unchanged);
        }
        (_, "open") => match change {
            ReminderChange::Done | ReminderChange::Cancel => {
                let (to, action) = if change == ReminderChange::Done {
                    ("done", "reminder.done")
                } else {
                    ("cancelled", "reminder.cancel")
                };
                on_tx!(&mut tx, |conn| sqlx::query(CLOSE)
                    .bind(id)
                    .bind(to)
                    .bind(now_ms)
                    .bind(actor)
                    .execute(&mut *conn)
                    .await
                    .map(|_| ()))?;
                (action, serde_json::json!({}))
            }
            ReminderChange::Snooze { until_ms } => {
                on_tx!(&mut tx, |conn| sqlx::query(SNOOZE)
                    .bind(id)
                    .bind(until_ms)
                    .bind(now_ms)
                    .execute(&mut *conn)
                    .await
                    .map(|_| ()))?;
                ("reminder.snooze", serde_json::json!({"until_ms": until_ms}))
            }
        },
        (_, other) => return Err(FollowupError::WrongState(other.to_owned())),
    };
    auth::audit(
        &mut tx,
        corp_id,
        actor,
        action,
        &format!("reminder:{id}"),
        &detail,
        now_ms,
    )
    .await?;
    let reminder = reminder_in(&mut tx, corp_id, id)
        .await?
        .ok_or(FollowupError::NotFound)?;
    tx.commit().await?;
    Ok(reminder)
}

/// The default reminders of a new relation: one per `settings.after_add_days`, due that many days
/// after `added_at_ms`, assigned to `user_id`, source `after_add`. Each is created once however
/// often this runs for the same add (dedup `after_add:{user}:{ext}:{days}:{added_at_ms}`).
/// Returns how many were created now.
pub async fn create_default_reminders(
    db: &Db,
    corp_id: &str,
    user_id: &str,
    external_user_id: &str,
    added_at_ms: i64,
    settings: &ReminderSettings,
) -> Result<usize, StoreError> {
    const INSERT: &str = "INSERT INTO reminder (corp_id, external_user_id, assignee, title, \
        due_at_ms, source, created_by, created_at_ms, dedup, updated_at_ms) \
        VALUES ($1, $2, $3, $4, $5, 'after_add', 'system', $6, $7, $6) \
        ON CONFLICT (corp_id, dedup) DO NOTHING";
    if settings.after_add_days.is_empty() {
        return Ok(0);
    }
    let now = crate::platform::db::now_ms();
    let mut created = 0;
    let mut tx = db.begin().await?;
    for &days in &settings.after_add_days {
        let due = added_at_ms.saturating_add(i64::from(days).saturating_mul(86_400_000));
        let title = format!("添加客户 {days} 天回访");
        let dedup = format!("after_add:{user_id}:{external_user_id}:{days}:{added_at_ms}");
        let n = on_tx!(&mut tx, |conn| sqlx::query(INSERT)
            .bind(corp_id)
            .bind(external_user_id)
            .bind(user_id)
            .bind(&title)
            .bind(due)
            .bind(now)
            .bind(&dedup)
            .execute(&mut *conn)
            .await
            .map(|r| r.rows_affected()))?;
        created += usize::try_from(n).unwrap_or(0);
    }
    tx.commit().await?;
    Ok(created)
}

/// The app message of a due reminder, at most 2048 bytes.
pub fn reminder_message(title: &str, customer: &str, due_at_ms: i64) -> String {
    let due = DateTime::from_timestamp_millis(due_at_ms)
        .zip(FixedOffset::east_opt(CHINA_OFFSET_SECS))
        .map(|(t, china)| t.with_timezone(&china).format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default();
    let text = format!(
        "跟进提醒：{}（客户：{}，到期 {due}）",
        truncate_chars(title, MAX_TITLE_CHARS),
        truncate_chars(customer, 64)
    );
    crate::pipeline::worker::truncate_bytes(&text, MAX_MESSAGE_BYTES).to_owned()
}

fn truncate_chars(s: &str, max: usize) -> &str {
    s.char_indices().nth(max).map_or(s, |(i, _)| &s[..i])
}

/// What a claim returns: the reminder's fields the message needs.
type Claimed = (String, String, String, String, i64, i64);

/// Claims one due reminder and enqueues its app message in the same transaction. `None` when
/// another run (this or another instance) claimed it first, or it was done or snoozed meanwhile.
async fn notify_one(db: &Db, id: i64, now_ms: i64) -> Result<Option<i64>, StoreError> {
    // The `notified_at_ms IS NULL` test makes the claim atomic: on PostgreSQL a concurrent claim
    // of the same row waits for ours and then finds it claimed; SQLite has one writer.
    const CLAIM: &str = "UPDATE reminder SET notified_at_ms = $2, updated_at_ms = $2 \
        WHERE id = $1 AND state = 'open' AND notified_at_ms IS NULL AND due_at_ms <= $2 \
        RETURNING corp_id, external_user_id, assignee, title, due_at_ms, snoozes";
    const NAME: &str = "SELECT name FROM customer WHERE corp_id = $1 AND external_user_id = $2";
    const SET_OUTBOX: &str = "UPDATE reminder SET outbox_id = $2 WHERE id = $1";
    let mut tx = db.begin().await?;
    let claimed: Option<Claimed> = on_tx!(&mut tx, |conn| sqlx::query_as(CLAIM)
        .bind(id)
        .bind(now_ms)
        .fetch_optional(&mut *conn)
        .await)?;
    let Some((corp_id, ext, assignee, title, due_at_ms, snoozes)) = claimed else {
        return Ok(None);
    };
    let name: Option<String> = on_tx!(&mut tx, |conn| sqlx::query_scalar(NAME)
        .bind(&corp_id)
        .bind(&ext)
        .fetch_optional(&mut *conn)
        .await)?;
    let customer = name
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| ext.clone());
    let intent = Intent::MessageSend {
        to_users: vec![assignee],
        message: Message::Text {
            content: reminder_message(&title, &customer, due_at_ms),
        },
    };
    let key = format!("reminder:{id}:{snoozes}");
    let outbox_id =
        outbox::enqueue(&mut tx, &corp_id, &intent, "system", Some(&key), now_ms).await?;
    on_tx!(&mut tx, |conn| sqlx::query(SET_OUTBOX)
        .bind(id)
        .bind(outbox_id)
        .execute(&mut *conn)
        .await
        .map(|_| ()))?;
    tx.commit().await?;
    Ok(Some(outbox_id))
}

/// Hands every open reminder due by `now_ms` and not yet notified to the outbox, each as an app
/// message to its assignee, once (see [`notify_one`]'s claim). Returns how many this run sent.
pub async fn run_due_reminders_once(db: &Db, now_ms: i64) -> Result<usize, StoreError> {
    const DUE: &str = "SELECT id FROM reminder WHERE state = 'open' AND notified_at_ms IS NULL \
        AND due_at_ms <= $1 AND id > $2 ORDER BY id LIMIT $3";
    let mut sent = 0;
    let mut after = 0_i64;
    loop {
        let ids: Vec<i64> = on_db!(db, |pool| sqlx::query_scalar(DUE)
            .bind(now_ms)
            .bind(after)
            .bind(CLAIM_BATCH)
            .fetch_all(pool)
            .await)?;
        for &id in &ids {
            if notify_one(db, id, now_ms).await?.is_some() {
                sent += 1;
            }
        }
        if sent > 0 {
            outbox::notify();
        }
        match ids.last() {
            Some(&last) if i64::try_from(ids.len()).unwrap_or(0) == CLAIM_BATCH => after = last,
            _ => break,
        }
    }
    if sent > 0 {
        metrics::counter!("scrm_reminders_sent_total").increment(u64::try_from(sent).unwrap_or(0));
    }
    Ok(sent)
}

/// The reminder loop of `serve`: every `check_interval_secs`, [`run_due_reminders_once`]; returns
/// when `stop` turns true (or its sender is gone).
pub async fn run_reminders(db: Db, settings: ReminderSettings, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(settings.check_interval_secs.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
                continue;
            }
        }
        if *stop.borrow() {
            return;
        }
        match run_due_reminders_once(&db, crate::platform::db::now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(sent = n, "due reminders handed to the outbox"),
            Err(e) => {
                tracing::warn!(error = %e, cause = ?std::error::Error::source(&e), "cannot send due reminders")
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Lifecycle stages
// ---------------------------------------------------------------------------------------------

const STAGES_SETTING: &str = "stages";

fn parse_stages(value: Option<String>) -> Vec<String> {
    let parsed = value.and_then(|v| match serde_json::from_str::<Vec<String>>(&v) {
        Ok(list) if !list.is_empty() => Some(list),
        _ => {
            tracing::warn!("corp setting 'stages' is not a JSON array of names; using the default");
            None
        }
    });
    parsed.unwrap_or_else(|| DEFAULT_STAGES.iter().map(|s| (*s).to_owned()).collect())
}

/// The corp's lifecycle stages, in order ([`DEFAULT_STAGES`] when never set).
pub async fn stages(db: &Db, corp_id: &str) -> Result<Vec<String>, StoreError> {
    let value = crate::domain::settings::get(db, corp_id, STAGES_SETTING).await?;
    Ok(parse_stages(value))
}

/// Checks a stage list: 1..=20 names, each non-empty after trimming, at most 20 characters,
/// no two the same. Returns the trimmed names.
pub fn check_stages(list: &[String]) -> Result<Vec<String>, FollowupError> {
    if list.is_empty() || list.len() > MAX_STAGES {
        return Err(invalid(
            "stages",
            format!("阶段数量须为 1–{MAX_STAGES} 个 / 1 to {MAX_STAGES} stages"),
        ));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(list.len());
    for (i, name) in list.iter().enumerate() {
        let name = name.trim();
        let field = format!("stages[{i}]");
        if name.is_empty() {
            return Err(invalid(&field, "阶段名不能为空 / must not be empty"));
        }
        if name.chars().count() > MAX_STAGE_CHARS {
            return Err(invalid(
                &field,
                format!("阶段名最多 {MAX_STAGE_CHARS} 个字 / at most {MAX_STAGE_CHARS} characters"),
            ));
        }
        if !seen.insert(name) {
            return Err(invalid(&field, "阶段名重复 / duplicate name"));
        }
        out.push(name.to_owned());
    }
    Ok(out)
}

/// Replaces the corp's stage list (checked by [`check_stages`]); audited. Customers keep a stage
/// that is no longer listed until it is changed. Returns the stored list.
pub async fn set_stages(
    db: &Db,
    corp_id: &str,
    list: &[String],
    actor: &str,
    now_ms: i64,
) -> Result<Vec<String>, FollowupError> {
    let list = check_stages(list)?;
    let value = serde_json::to_string(&list)
        .map_err(|e| StoreError::Other(sqlx::Error::Encode(e.into())))?;
    let mut tx = db.begin().await?;
    crate::domain::settings::set_in(&mut tx, corp_id, STAGES_SETTING, &value, actor, now_ms)
        .await?;
    auth::audit(
        &mut tx,
        corp_id,
        actor,
        "stages.set",
        "corp_setting:stages",
        &serde_json::json!({"stages": list}),
        now_ms,
    )
    .await?;
    tx.commit().await?;
    Ok(list)
}

/// One change of a customer's stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct StageChange {
    /// The stage before (`None` for the first).
    pub from_stage: Option<String>,
    /// The stage after.
    pub to_stage: String,
    /// Who changed it.
    pub actor: String,
    /// When, epoch ms.
    pub at_ms: i64,
}

/// A customer's stage and how it got there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CustomerStage {
    /// The stage now (`None` when never set).
    pub stage: Option<String>,
    /// Who set it.
    pub updated_by: Option<String>,
    /// When, epoch ms.
    pub updated_at_ms: Option<i64>,
    /// Every change, oldest first.
    pub history: Vec<StageChange>,
}

/// A customer's stage now (`None` when never set).
pub async fn customer_stage(
    db: &Db,
    corp_id: &str,
    external_user_id: &str,
) -> Result<Option<String>, StoreError> {
    const SQL: &str =
        "SELECT stage FROM customer_stage WHERE corp_id = $1 AND external_user_id = $2";
    let row = on_db!(db, |pool| sqlx::query_scalar(SQL)
        .bind(corp_id)
        .bind(external_user_id)
        .fetch_optional(pool)
        .await)?;
    Ok(row)
}

/// A customer's stage with who set it and its history.
pub async fn customer_stage_record(
    db: &Db,
    corp_id: &str,
    external_user_id: &str,
) -> Result<CustomerStage, StoreError> {
    const NOW: &str = "SELECT stage, updated_by, updated_at_ms FROM customer_stage \
        WHERE corp_id = $1 AND external_user_id = $2";
    const HISTORY: &str = "SELECT from_stage, to_stage, actor, at_ms FROM stage_change \
        WHERE corp_id = $1 AND external_user_id = $2 ORDER BY id";
    let now: Option<(String, String, i64)> = on_db!(db, |pool| sqlx::query_as(NOW)
        .bind(corp_id)
        .bind(external_user_id)
        .fetch_optional(pool)
        .await)?;
    let history = on_db!(db, |pool| sqlx::query_as(HISTORY)
        .bind(corp_id)
        .bind(external_user_id)
        .fetch_all(pool)
        .await)?;
    let (stage, updated_by, updated_at_ms) = match now {
        Some((s, by, at)) => (Some(s), Some(by), Some(at)),
        None => (None, None, None),
    };
    Ok(CustomerStage {
        stage,
        updated_by,
        updated_at_ms,
        history,
    })
}

/// Sets a customer's stage (one of the corp's [`stages`], else `Invalid` for `stage`), appending
/// the change to its history and the audit log in the same transaction. Setting the stage it has
/// records nothing. Returns whether it changed.
pub async fn set_customer_stage(
    db: &Db,
    corp_id: &str,
    external_user_id: &str,
    stage: &str,
    actor: &str,
    now_ms: i64,
) -> Result<bool, FollowupError> {
    // The first stage of a customer: the insert wins once; a concurrent one waits for it (its
    // unique key) and then takes the update path below.
    const FIRST: &str = "INSERT INTO customer_stage (corp_id, external_user_id, stage, updated_by, \
        updated_at_ms) VALUES ($1, $2, $3, $4, $5) \
        ON CONFLICT (corp_id, external_user_id) DO NOTHING";
    const LOCK_PG: &str = "SELECT stage FROM customer_stage WHERE corp_id = $1 \
        AND external_user_id = $2 FOR UPDATE";
    const LOCK_LITE: &str =
        "SELECT stage FROM customer_stage WHERE corp_id = $1 AND external_user_id = $2";
    const UPDATE: &str = "UPDATE customer_stage SET stage = $3, updated_by = $4, updated_at_ms = $5 \
        WHERE corp_id = $1 AND external_user_id = $2";
    const HISTORY: &str = "INSERT INTO stage_change (corp_id, external_user_id, from_stage, \
        to_stage, actor, at_ms) VALUES ($1, $2, $3, $4, $5, $6)";
    let mut tx = db.begin().await?;
    let value = crate::domain::settings::get_in(&mut tx, corp_id, STAGES_SETTING).await?;
    let allowed = parse_stages(value);
    if !allowed.iter().any(|s| s == stage) {
        return Err(invalid(
            "stage",
            format!(
                "不是本企业的阶段（可选：{}） / not one of the corp's stages",
                allowed.join("、")
            ),
        ));
    }
    let inserted = on_tx!(&mut tx, |conn| sqlx::query(FIRST)
        .bind(corp_id)
        .bind(external_user_id)
        .bind(stage)
        .bind(actor)
        .bind(now_ms)
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected()))?;
    let from = if inserted == 1 {
        None
    } else {
        let lock = if tx.is_postgres() { LOCK_PG } else { LOCK_LITE };
        let current: Option<String> = on_tx!(&mut tx, |conn| sqlx::query_scalar(lock)
            .bind(corp_id)
            .bind(external_user_id)
            .fetch_optional(&mut *conn)
            .await)?;
        if current.as_deref() == Some(stage) {
            return Ok(false);
        }
        on_tx!(&mut tx, |conn| sqlx::query(UPDATE)
            .bind(corp_id)
            .bind(external_user_id)
            .bind(stage)
            .bind(actor)
            .bind(now_ms)
            .execute(&mut *conn)
            .await
            .map(|_| ()))?;
        current
    };
    on_tx!(&mut tx, |conn| sqlx::query(HISTORY)
        .bind(corp_id)
        .bind(external_user_id)
        .bind(from.as_deref())
        .bind(stage)
        .bind(actor)
        .bind(now_ms)
        .execute(&mut *conn)
        .await
        .map(|_| ()))?;
    auth::audit(
        &mut tx,
        corp_id,
        actor,
        "customer.stage",
        &format!("customer:{external_user_id}"),
        &serde_json::json!({"from": from, "to": stage}),
        now_ms,
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_shows_china_time_and_fits_wecom() {
        // 2024-01-01 00:00 UTC is 08:00 in China.
        let text = reminder_message("回访", "王总", 1_704_067_200_000);
        assert_eq!(text, "跟进提醒：回访（客户：王总，到期 2024-01-01 08:00）");
        let long = "长".repeat(5000);
        assert!(reminder_message(&long, &long, 0).len() <= MAX_MESSAGE_BYTES);
        assert!(reminder_message("x", "y", i64::MAX).contains("到期"));
    }

    #[test]
    fn links_must_be_http() {
        assert!(check_attachment_url(Some("https://example.com/a.pdf")).is_ok());
        assert_eq!(check_attachment_url(Some("  ")).ok(), Some(None));
        for bad in [
            "ftp://example.com/x",
            "javascript:alert(1)",
            "example.com",
            "http://",
        ] {
            assert!(check_attachment_url(Some(bad)).is_err(), "{bad}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(check_attachment_url(Some(&long)).is_err());
    }

    #[test]
    fn stage_lists_are_checked() {
        let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            check_stages(&names(&[" 新 ", "老"])).ok(),
            Some(names(&["新", "老"]))
        );
        assert!(check_stages(&[]).is_err());
        assert!(check_stages(&names(&["a", "a"])).is_err());
        assert!(check_stages(&names(&["a", " "])).is_err());
        assert!(check_stages(&names(&[&"长".repeat(21)])).is_err());
        let many: Vec<String> = (0..21).map(|i| i.to_string()).collect();
        assert!(check_stages(&many).is_err());
        assert_eq!(parse_stages(Some("not json".to_owned())).len(), 5);
    }
}
