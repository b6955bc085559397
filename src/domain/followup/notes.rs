//! Notes (跟进记录): never deleted; an edit keeps the replaced content as a `note_revision`.
use super::*;

/// A follow-up note, as it reads now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Note {
    /// Id.
    pub id: i64,
    /// Corp.
    #[sqlx(try_from = "String")]
    pub corp_id: CorpId,
    /// The customer.
    #[sqlx(try_from = "String")]
    pub external_user_id: ExternalUserId,
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
    corp_id: &CorpId,
    external_user_id: &ExternalUserId,
    author: &str,
    body: &str,
    attachment_url: Option<&str>,
    now_ms: i64,
) -> Result<Note, FollowupError> {
    check_note_body(body)?;
    let url = check_attachment_url(attachment_url)?;
    let mut tx = db.begin().await?;
    let id = insert_note(
        &mut tx,
        corp_id,
        external_user_id,
        author,
        body,
        url.as_deref(),
        now_ms,
    )
    .await?;
    auth::audit(
        &mut tx,
        corp_id.as_str(),
        author,
        "note.create",
        &format!("note:{id}"),
        &serde_json::json!({"external_user_id": external_user_id}),
        now_ms,
    )
    .await?;
    let note = note_in(&mut tx, corp_id.as_str(), id)
        .await?
        .ok_or(FollowupError::NotFound)?;
    tx.commit().await?;
    Ok(note)
}

/// A note written by the system for `author` inside the caller's transaction (the handover note
/// of a reassignment), with no audit entry of its own: the caller's action is audited.
pub async fn add_note_in(
    tx: &mut Tx,
    corp_id: &CorpId,
    external_user_id: &ExternalUserId,
    author: &str,
    body: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    insert_note(tx, corp_id, external_user_id, author, body, None, now_ms).await?;
    Ok(())
}

/// The one `INSERT` of a note (revision 1); returns its id.
async fn insert_note(
    tx: &mut Tx,
    corp_id: &CorpId,
    external_user_id: &ExternalUserId,
    author: &str,
    body: &str,
    attachment_url: Option<&str>,
    now_ms: i64,
) -> Result<i64, StoreError> {
    let (corp_id, external_user_id) = (corp_id.as_str(), external_user_id.as_str());
    const INSERT: &str = "INSERT INTO note (corp_id, external_user_id, author, body, \
        attachment_url, revision, created_at_ms, updated_at_ms) VALUES ($1, $2, $3, $4, $5, 1, $6, $6) \
        RETURNING id";
    let id = on_tx!(tx, |conn| sqlx::query_scalar(INSERT)
        .bind(corp_id)
        .bind(external_user_id)
        .bind(author)
        .bind(body)
        .bind(attachment_url)
        .bind(now_ms)
        .fetch_one(&mut *conn)
        .await)?;
    Ok(id)
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
    corp_id: &CorpId,
    external_user_id: &ExternalUserId,
    before_id: Option<i64>,
    limit: i64,
) -> Result<Vec<Note>, StoreError> {
    let (corp_id, external_user_id) = (corp_id.as_str(), external_user_id.as_str());
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
