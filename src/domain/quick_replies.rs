//! Quick replies (话术库): folders of prepared text snippets that a salesperson sends into a
//! customer chat from the sidebar. This module owns the tables `quick_reply_folder` and
//! `quick_reply`; admins change them ([`crate::auth::Action::ManageQuickReplies`]), everyone who
//! reads customers reads the library, and each send counts one use ([`record_use`]).
//!
//! - **Order.** Folders, and snippets inside a folder, show by `position`, then id. A new folder or
//!   snippet without a position goes last; a snippet moved to another folder without one too.
//! - **Names.** A folder name is unique in its corp, a snippet title in its folder (exact text after
//!   trimming; the unique indexes decide, so two concurrent creates cannot both win).
//! - **Limits.** Folder name 1–30 characters, title 1–40, body 1–1000 characters *and* at most
//!   2048 bytes of UTF-8. WeCom caps a text message at 2048 bytes; a snippet that the chat would
//!   refuse or cut is worse than a shorter one, so the byte cap is checked here, where the admin
//!   can still fix it. 1000 characters keeps Latin and mixed text comfortably inside that; pure
//!   Chinese (3 bytes a character) meets the byte cap first, at about 680 characters. At most 100
//!   folders and 2000 snippets per corp, which also keeps [`library`] (read whole, sorted by the
//!   database) small.
//! - **Deleting a folder** that still holds snippets is a [`QuickReplyConflict::FolderNotEmpty`]
//!   unless the caller asks for [`FolderDeletion::WithSnippets`]; then its snippets go with it in
//!   the same transaction. Deletes are real: nothing else refers to these rows, and the audit
//!   log keeps who changed what.
//! - **Search** ([`library`] with a query): the trimmed text anywhere in a title or body, through
//!   `LIKE … ESCAPE` with `%`, `_` and `\` escaped, so they match themselves. Case is ignored
//!   for Latin letters on both backends (SQLite's `LOWER` folds ASCII only; Chinese has no case).
//!
//! Every change, and every use, is written to the audit log in its own transaction, with the
//! actor. Whether the caller may make it is the caller's check, through [`crate::auth`].

use serde::Serialize;
use wecom_sdk::{CorpId, UserId};

use crate::auth;
use crate::platform::db::{Db, StoreError, Tx, like_contains};
use crate::{on_db, on_tx};

/// Longest folder name, in characters.
pub const MAX_FOLDER_NAME_CHARS: usize = 30;
/// Longest snippet title, in characters.
pub const MAX_TITLE_CHARS: usize = 40;
/// Longest snippet body, in characters (see the module docs for why).
pub const MAX_BODY_CHARS: usize = 1000;
/// Longest snippet body in bytes of UTF-8: WeCom's limit on a text message.
pub const MAX_BODY_BYTES: usize = 2048;
/// Most folders a corp may have.
pub const MAX_FOLDERS: i64 = 100;
/// Most snippets a corp may have, over all its folders.
pub const MAX_SNIPPETS: i64 = 2000;
/// Largest position a folder or snippet may be given.
pub const MAX_POSITION: i64 = 1_000_000;

/// A folder of the library.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Folder {
    /// Id.
    pub id: i64,
    /// Name, unique in the corp.
    pub name: String,
    /// Display order (smaller first; ties by id).
    pub position: i64,
}

/// A prepared text, as the sidebar sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Snippet {
    /// Id.
    pub id: i64,
    /// Its folder.
    pub folder_id: i64,
    /// Title, unique in the folder.
    pub title: String,
    /// The text sent into the chat.
    pub body: String,
    /// Display order inside the folder (smaller first; ties by id).
    pub position: i64,
    /// How often it was sent.
    pub use_count: i64,
    /// When it was last sent, epoch ms.
    pub last_used_at_ms: Option<i64>,
}

/// A folder with its snippets, in display order. Serialized flat: the folder's fields and
/// `snippets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FolderWithSnippets {
    /// The folder.
    #[serde(flatten)]
    pub folder: Folder,
    /// Its snippets (with a search: those that match).
    pub snippets: Vec<Snippet>,
}

/// A snippet to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSnippet<'a> {
    /// The folder (of the same corp).
    pub folder_id: i64,
    /// Title.
    pub title: &'a str,
    /// Text.
    pub body: &'a str,
    /// Display order; `None`: after the folder's last snippet.
    pub position: Option<i64>,
}

/// What a folder edit changes (`None` keeps the field).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FolderChange {
    /// New name.
    pub name: Option<String>,
    /// New position.
    pub position: Option<i64>,
}

/// What a snippet edit changes (`None` keeps the field).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnippetChange {
    /// Move to this folder (of the same corp); without `position`, it goes last there.
    pub folder_id: Option<i64>,
    /// New title.
    pub title: Option<String>,
    /// New text.
    pub body: Option<String>,
    /// New position.
    pub position: Option<i64>,
}

/// What to do with the snippets of a folder being deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FolderDeletion {
    /// Refuse when it still holds any ([`QuickReplyConflict::FolderNotEmpty`]).
    OnlyIfEmpty,
    /// Delete them with it.
    WithSnippets,
}

/// Why a change clashes with what is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuickReplyConflict {
    /// The corp has a folder of that name.
    DuplicateFolderName,
    /// The folder has a snippet of that title.
    DuplicateTitle,
    /// The folder still holds this many snippets.
    FolderNotEmpty {
        /// How many.
        snippets: i64,
    },
}

/// Why a quick-reply change was refused.
#[derive(Debug, thiserror::Error)]
pub enum QuickReplyError {
    /// A field is invalid (`name`, `title`, `body`, `position`, `folder_id`, or `folders` /
    /// `snippets` for the corp's limits).
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: String,
        /// Why, in Chinese.
        reason: String,
    },
    /// No such folder or snippet in this corp.
    #[error("not found")]
    NotFound,
    /// A duplicate name or title, or a folder deleted with snippets in it.
    #[error("conflict: {0:?}")]
    Conflict(QuickReplyConflict),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for QuickReplyError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

fn invalid(field: &str, reason: impl Into<String>) -> QuickReplyError {
    QuickReplyError::Invalid {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// A unique index refused the row: `conflict`; anything else is the database's failure.
fn or_conflict(e: sqlx::Error, conflict: QuickReplyConflict) -> QuickReplyError {
    match StoreError::from(e) {
        StoreError::Conflict(_) => QuickReplyError::Conflict(conflict),
        e => QuickReplyError::Store(e),
    }
}

/// A one-line label (folder name, title): trimmed, 1..=`max` characters, no control characters.
/// Returns the trimmed text.
fn check_label(field: &str, what: &str, text: &str, max: usize) -> Result<String, QuickReplyError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(invalid(
            field,
            format!("{what}不能为空 / must not be empty"),
        ));
    }
    if text.chars().count() > max {
        return Err(invalid(
            field,
            format!("{what}最多 {max} 个字 / at most {max} characters"),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(invalid(
            field,
            format!("{what}不能含换行或控制字符 / no line breaks or control characters"),
        ));
    }
    Ok(text.to_owned())
}

/// Checks a folder name (1..=30 characters, one line); returns it trimmed.
pub fn check_folder_name(name: &str) -> Result<String, QuickReplyError> {
    check_label("name", "分组名", name, MAX_FOLDER_NAME_CHARS)
}

/// Checks a snippet title (1..=40 characters, one line); returns it trimmed.
pub fn check_title(title: &str) -> Result<String, QuickReplyError> {
    check_label("title", "标题", title, MAX_TITLE_CHARS)
}

/// Checks a snippet body: 1..=1000 characters and at most 2048 bytes after trimming, line breaks
/// and tabs allowed, no other control characters. Returns it trimmed.
pub fn check_body(body: &str) -> Result<String, QuickReplyError> {
    let body = body.trim();
    if body.is_empty() {
        return Err(invalid("body", "内容不能为空 / must not be empty"));
    }
    if body.chars().count() > MAX_BODY_CHARS {
        return Err(invalid(
            "body",
            format!("内容最多 {MAX_BODY_CHARS} 个字 / at most {MAX_BODY_CHARS} characters"),
        ));
    }
    if body.len() > MAX_BODY_BYTES {
        return Err(invalid(
            "body",
            format!(
                "内容超过企业微信文本消息的 {MAX_BODY_BYTES} 字节上限（一个汉字占 3 字节，约 680 个汉字） \
                 / over WeCom's {MAX_BODY_BYTES}-byte limit of a text message"
            ),
        ));
    }
    if body
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(invalid(
            "body",
            "内容不能含控制字符 / no control characters",
        ));
    }
    Ok(body.to_owned())
}

/// Checks a position: 0..=1,000,000.
pub fn check_position(position: i64) -> Result<i64, QuickReplyError> {
    if (0..=MAX_POSITION).contains(&position) {
        Ok(position)
    } else {
        Err(invalid(
            "position",
            format!("位置须为 0–{MAX_POSITION} / must be 0 to {MAX_POSITION}"),
        ))
    }
}

const SNIPPET_COLUMNS: &str =
    "id, folder_id, title, body, position, use_count, last_used_at_ms FROM quick_reply";

/// A library row: the folder, and one of its snippets when it has any (that match).
type LibraryRow = (
    i64,
    String,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

/// Every folder with its snippets in display order (position, then id); with `query`, only
/// snippets whose title or body contains it (case-insensitive, trimmed; empty = all) and only
/// folders that keep a snippet.
pub async fn library(
    db: &Db,
    corp: &CorpId,
    query: Option<&str>,
) -> Result<Vec<FolderWithSnippets>, StoreError> {
    // One statement, so a folder and its snippets come from the same snapshot; rows arrive
    // grouped by folder.
    const SQL: &str = "SELECT f.id, f.name, f.position, s.id, s.title, s.body, s.position, \
        s.use_count, s.last_used_at_ms FROM quick_reply_folder f LEFT JOIN quick_reply s \
        ON s.corp_id = f.corp_id AND s.folder_id = f.id \
        AND ($2 IS NULL OR LOWER(s.title) LIKE $2 ESCAPE '\\' OR LOWER(s.body) LIKE $2 ESCAPE '\\') \
        WHERE f.corp_id = $1 ORDER BY f.position, f.id, s.position, s.id";
    let query = query.map(str::trim).filter(|q| !q.is_empty());
    // Longer than any body can be: nothing matches, and the database need not be asked.
    if query.is_some_and(|q| q.chars().count() > MAX_BODY_CHARS) {
        return Ok(Vec::new());
    }
    let pattern = query.map(like_contains);
    let rows: Vec<LibraryRow> = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp.as_str())
        .bind(pattern.as_deref())
        .fetch_all(pool)
        .await)?;
    let mut library: Vec<FolderWithSnippets> = Vec::new();
    for (folder_id, name, folder_position, id, title, body, position, use_count, last_used) in rows
    {
        if library.last().is_none_or(|f| f.folder.id != folder_id) {
            library.push(FolderWithSnippets {
                folder: Folder {
                    id: folder_id,
                    name,
                    position: folder_position,
                },
                snippets: Vec::new(),
            });
        }
        let (Some(id), Some(title), Some(body), Some(position), Some(use_count)) =
            (id, title, body, position, use_count)
        else {
            continue; // a folder without (matching) snippets
        };
        if let Some(current) = library.last_mut() {
            current.snippets.push(Snippet {
                id,
                folder_id,
                title,
                body,
                position,
                use_count,
                last_used_at_ms: last_used,
            });
        }
    }
    if query.is_some() {
        library.retain(|f| !f.snippets.is_empty());
    }
    Ok(library)
}

/// One folder of the corp.
pub async fn get_folder(db: &Db, corp: &CorpId, id: i64) -> Result<Option<Folder>, StoreError> {
    const SQL: &str =
        "SELECT id, name, position FROM quick_reply_folder WHERE corp_id = $1 AND id = $2";
    let row = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp.as_str())
        .bind(id)
        .fetch_optional(pool)
        .await)?;
    Ok(row)
}

/// One snippet of the corp.
pub async fn get_snippet(db: &Db, corp: &CorpId, id: i64) -> Result<Option<Snippet>, StoreError> {
    let sql = format!("SELECT {SNIPPET_COLUMNS} WHERE corp_id = $1 AND id = $2");
    let row = on_db!(db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
        .bind(corp.as_str())
        .bind(id)
        .fetch_optional(pool)
        .await)?;
    Ok(row)
}

/// One more use of snippet `id` (sent into a chat by `user`); false when there is no such snippet.
/// Counts it, moves `last_used_at_ms` forward (never back: instances' clocks differ a little)
/// and writes the send to the audit log with `user` as the actor.
pub async fn record_use(
    db: &Db,
    corp: &CorpId,
    id: i64,
    user: &UserId,
    now_ms: i64,
) -> Result<bool, StoreError> {
    const SQL: &str = "UPDATE quick_reply SET use_count = use_count + 1, last_used_at_ms = \
        CASE WHEN last_used_at_ms IS NULL OR last_used_at_ms < $3 THEN $3 ELSE last_used_at_ms END \
        WHERE corp_id = $1 AND id = $2";
    let mut tx = db.begin().await?;
    let n = on_tx!(&mut tx, |conn| sqlx::query(SQL)
        .bind(corp.as_str())
        .bind(id)
        .bind(now_ms)
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected()))?;
    if n == 0 {
        tx.rollback().await?;
        return Ok(false);
    }
    auth::audit(
        &mut tx,
        corp.as_str(),
        user.as_str(),
        "quick_reply.use",
        &format!("quick_reply:{id}"),
        &serde_json::json!({}),
        now_ms,
    )
    .await?;
    tx.commit().await?;
    metrics::counter!("scrm_quick_reply_uses_total").increment(1);
    Ok(true)
}

/// PostgreSQL: serializes the creates of one corp, so two at once cannot both pass the count
/// under the corp's limit. SQLite's `BEGIN IMMEDIATE` already lets one writer in at a time.
async fn lock_corp(tx: &mut Tx, corp: &CorpId) -> Result<(), StoreError> {
    const PG: &str = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))";
    if tx.is_postgres() {
        let key = format!("quick_reply:{corp}");
        on_tx!(tx, |conn| sqlx::query(PG)
            .bind(key.as_str())
            .execute(&mut *conn)
            .await
            .map(|_| ()))?;
    }
    Ok(())
}

/// Whether folder `id` is the corp's; on PostgreSQL it stays so until the transaction ends
/// (`FOR SHARE`: a concurrent delete of the folder waits, and then sees the new snippet).
async fn folder_exists_in(tx: &mut Tx, corp: &CorpId, id: i64) -> Result<bool, StoreError> {
    const PG: &str = "SELECT id FROM quick_reply_folder WHERE corp_id = $1 AND id = $2 FOR SHARE";
    const LITE: &str = "SELECT id FROM quick_reply_folder WHERE corp_id = $1 AND id = $2";
    let sql = if tx.is_postgres() { PG } else { LITE };
    let found: Option<i64> = on_tx!(tx, |conn| sqlx::query_scalar(sql)
        .bind(corp.as_str())
        .bind(id)
        .fetch_optional(&mut *conn)
        .await)?;
    Ok(found.is_some())
}

/// After the last snippet of folder `folder_id`.
async fn next_snippet_position(
    tx: &mut Tx,
    corp: &CorpId,
    folder_id: i64,
) -> Result<i64, StoreError> {
    const SQL: &str = "SELECT COALESCE(MAX(position), -1) + 1 FROM quick_reply \
        WHERE corp_id = $1 AND folder_id = $2";
    let next: i64 = on_tx!(tx, |conn| sqlx::query_scalar(SQL)
        .bind(corp.as_str())
        .bind(folder_id)
        .fetch_one(&mut *conn)
        .await)?;
    Ok(next.min(MAX_POSITION))
}

/// Creates a folder (name checked here; `position` `None`: after the last one); audited.
pub async fn create_folder(
    db: &Db,
    corp: &CorpId,
    name: &str,
    position: Option<i64>,
    actor: &str,
    now_ms: i64,
) -> Result<Folder, QuickReplyError> {
    const COUNT: &str = "SELECT COUNT(*) FROM quick_reply_folder WHERE corp_id = $1";
    const NEXT: &str =
        "SELECT COALESCE(MAX(position), -1) + 1 FROM quick_reply_folder WHERE corp_id = $1";
    const INSERT: &str = "INSERT INTO quick_reply_folder (corp_id, name, position, created_at_ms, \
        updated_at_ms) VALUES ($1, $2, $3, $4, $4) RETURNING id, name, position";
    let name = check_folder_name(name)?;
    let position = position.map(check_position).transpose()?;
    let mut tx = db.begin().await?;
    lock_corp(&mut tx, corp).await?;
    let (count, next): (i64, i64) = on_tx!(&mut tx, |conn| {
        let count = sqlx::query_scalar(COUNT)
            .bind(corp.as_str())
            .fetch_one(&mut *conn)
            .await?;
        let next = sqlx::query_scalar(NEXT)
            .bind(corp.as_str())
            .fetch_one(&mut *conn)
            .await?;
        Ok::<_, sqlx::Error>((count, next))
    })?;
    if count >= MAX_FOLDERS {
        return Err(invalid(
            "folders",
            format!("每个企业最多 {MAX_FOLDERS} 个分组 / at most {MAX_FOLDERS} folders per corp"),
        ));
    }
    let position = position.unwrap_or(next.min(MAX_POSITION));
    let folder: Folder = on_tx!(&mut tx, |conn| sqlx::query_as(INSERT)
        .bind(corp.as_str())
        .bind(&name)
        .bind(position)
        .bind(now_ms)
        .fetch_one(&mut *conn)
        .await)
    .map_err(|e| or_conflict(e, QuickReplyConflict::DuplicateFolderName))?;
    auth::audit(
        &mut tx,
        corp.as_str(),
        actor,
        "quick_reply_folder.create",
        &format!("quick_reply_folder:{}", folder.id),
        &serde_json::json!({"name": folder.name, "position": folder.position}),
        now_ms,
    )
    .await?;
    tx.commit().await?;
    Ok(folder)
}

/// Renames and/or moves a folder; audited. Nothing to change is `Invalid`.
pub async fn update_folder(
    db: &Db,
    corp: &CorpId,
    id: i64,
    change: &FolderChange,
    actor: &str,
    now_ms: i64,
) -> Result<Folder, QuickReplyError> {
    const UPDATE: &str = "UPDATE quick_reply_folder SET name = COALESCE($3, name), \
        position = COALESCE($4, position), updated_at_ms = $5 WHERE corp_id = $1 AND id = $2 \
        RETURNING id, name, position";
    if change.name.is_none() && change.position.is_none() {
        return Err(invalid(
            "name",
            "name 和 position 至少给一个 / nothing to change",
        ));
    }
    let name = change.name.as_deref().map(check_folder_name).transpose()?;
    let position = change.position.map(check_position).transpose()?;
    let mut tx = db.begin().await?;
    let folder: Option<Folder> = on_tx!(&mut tx, |conn| sqlx::query_as(UPDATE)
        .bind(corp.as_str())
        .bind(id)
        .bind(name.as_deref())
        .bind(position)
        .bind(now_ms)
        .fetch_optional(&mut *conn)
        .await)
    .map_err(|e| or_conflict(e, QuickReplyConflict::DuplicateFolderName))?;
    let folder = folder.ok_or(QuickReplyError::NotFound)?;
    auth::audit(
        &mut tx,
        corp.as_str(),
        actor,
        "quick_reply_folder.update",
        &format!("quick_reply_folder:{id}"),
        &serde_json::json!({"name": name, "position": position}),
        now_ms,
    )
    .await?;
    tx.commit().await?;
    Ok(folder)
}

/// Deletes a folder; one that still holds snippets only with [`FolderDeletion::WithSnippets`]
/// (they go in the same transaction). Audited. Returns how many snippets went with it.
pub async fn delete_folder(
    db: &Db,
    corp: &CorpId,
    id: i64,
    deletion: FolderDeletion,
    actor: &str,
    now_ms: i64,
) -> Result<i64, QuickReplyError> {
    // PostgreSQL: a snippet created into this folder at the same time waits for us (its
    // FOR SHARE), or we for it and then count it.
    const LOCK_PG: &str =
        "SELECT name FROM quick_reply_folder WHERE corp_id = $1 AND id = $2 FOR UPDATE";
    const LOCK_LITE: &str = "SELECT name FROM quick_reply_folder WHERE corp_id = $1 AND id = $2";
    const COUNT: &str = "SELECT COUNT(*) FROM quick_reply WHERE corp_id = $1 AND folder_id = $2";
    const SNIPPETS: &str = "DELETE FROM quick_reply WHERE corp_id = $1 AND folder_id = $2";
    const FOLDER: &str = "DELETE FROM quick_reply_folder WHERE corp_id = $1 AND id = $2";
    let mut tx = db.begin().await?;
    let lock = if tx.is_postgres() { LOCK_PG } else { LOCK_LITE };
    let name: Option<String> = on_tx!(&mut tx, |conn| sqlx::query_scalar(lock)
        .bind(corp.as_str())
        .bind(id)
        .fetch_optional(&mut *conn)
        .await)?;
    let name = name.ok_or(QuickReplyError::NotFound)?;
    let snippets: i64 = on_tx!(&mut tx, |conn| sqlx::query_scalar(COUNT)
        .bind(corp.as_str())
        .bind(id)
        .fetch_one(&mut *conn)
        .await)?;
    if snippets > 0 && deletion == FolderDeletion::OnlyIfEmpty {
        return Err(QuickReplyError::Conflict(
            QuickReplyConflict::FolderNotEmpty { snippets },
        ));
    }
    on_tx!(&mut tx, |conn| {
        sqlx::query(SNIPPETS)
            .bind(corp.as_str())
            .bind(id)
            .execute(&mut *conn)
            .await?;
        sqlx::query(FOLDER)
            .bind(corp.as_str())
            .bind(id)
            .execute(&mut *conn)
            .await
            .map(|_| ())
    })?;
    auth::audit(
        &mut tx,
        corp.as_str(),
        actor,
        "quick_reply_folder.delete",
        &format!("quick_reply_folder:{id}"),
        &serde_json::json!({"name": name, "snippets_deleted": snippets}),
        now_ms,
    )
    .await?;
    tx.commit().await?;
    Ok(snippets)
}

/// Creates a snippet (fields checked here; the folder must be the corp's, else `Invalid` for
/// `folder_id`); audited.
pub async fn create_snippet(
    db: &Db,
    corp: &CorpId,
    new: &NewSnippet<'_>,
    actor: &str,
    now_ms: i64,
) -> Result<Snippet, QuickReplyError> {
    const COUNT: &str = "SELECT COUNT(*) FROM quick_reply WHERE corp_id = $1";
    const INSERT: &str = "INSERT INTO quick_reply (corp_id, folder_id, title, body, position, \
        created_by, created_at_ms, updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
        RETURNING id, folder_id, title, body, position, use_count, last_used_at_ms";
    let title = check_title(new.title)?;
    let body = check_body(new.body)?;
    let position = new.position.map(check_position).transpose()?;
    let mut tx = db.begin().await?;
    lock_corp(&mut tx, corp).await?;
    if !folder_exists_in(&mut tx, corp, new.folder_id).await? {
        return Err(unknown_folder());
    }
    let count: i64 = on_tx!(&mut tx, |conn| sqlx::query_scalar(COUNT)
        .bind(corp.as_str())
        .fetch_one(&mut *conn)
        .await)?;
    if count >= MAX_SNIPPETS {
        return Err(invalid(
            "snippets",
            format!(
                "每个企业最多 {MAX_SNIPPETS} 条话术 / at most {MAX_SNIPPETS} snippets per corp"
            ),
        ));
    }
    let position = match position {
        Some(p) => p,
        None => next_snippet_position(&mut tx, corp, new.folder_id).await?,
    };
    let snippet: Snippet = on_tx!(&mut tx, |conn| sqlx::query_as(INSERT)
        .bind(corp.as_str())
        .bind(new.folder_id)
        .bind(&title)
        .bind(&body)
        .bind(position)
        .bind(actor)
        .bind(now_ms)
        .fetch_one(&mut *conn)
        .await)
    .map_err(|e| or_conflict(e, QuickReplyConflict::DuplicateTitle))?;
    auth::audit(
        &mut tx,
        corp.as_str(),
        actor,
        "quick_reply.create",
        &format!("quick_reply:{}", snippet.id),
        &serde_json::json!({"folder_id": snippet.folder_id, "title": snippet.title}),
        now_ms,
    )
    .await?;
    tx.commit().await?;
    Ok(snippet)
}

fn unknown_folder() -> QuickReplyError {
    invalid("folder_id", "分组不存在 / no such folder")
}

/// Edits a snippet: title, body, position, or its folder (of the same corp, else `Invalid` for
/// `folder_id`). Nothing to change is `Invalid`. Audited (which fields, not the text).
pub async fn update_snippet(
    db: &Db,
    corp: &CorpId,
    id: i64,
    change: &SnippetChange,
    actor: &str,
    now_ms: i64,
) -> Result<Snippet, QuickReplyError> {
    const LOCK_PG: &str =
        "SELECT folder_id, position FROM quick_reply WHERE corp_id = $1 AND id = $2 FOR UPDATE";
    const LOCK_LITE: &str =
        "SELECT folder_id, position FROM quick_reply WHERE corp_id = $1 AND id = $2";
    const UPDATE: &str = "UPDATE quick_reply SET folder_id = $3, title = COALESCE($4, title), \
        body = COALESCE($5, body), position = $6, updated_at_ms = $7 WHERE corp_id = $1 AND id = $2 \
        RETURNING id, folder_id, title, body, position, use_count, last_used_at_ms";
    let SnippetChange {
        folder_id,
        title,
        body,
        position,
    } = change;
    if folder_id.is_none() && title.is_none() && body.is_none() && position.is_none() {
        return Err(invalid(
            "title",
            "folder_id、title、body、position 至少给一个 / nothing to change",
        ));
    }
    let title = title.as_deref().map(check_title).transpose()?;
    let body = body.as_deref().map(check_body).transpose()?;
    let position = position.map(check_position).transpose()?;
    let mut tx = db.begin().await?;
    let lock = if tx.is_postgres() { LOCK_PG } else { LOCK_LITE };
    let current: Option<(i64, i64)> = on_tx!(&mut tx, |conn| sqlx::query_as(lock)
        .bind(corp.as_str())
        .bind(id)
        .fetch_optional(&mut *conn)
        .await)?;
    let (old_folder, old_position) = current.ok_or(QuickReplyError::NotFound)?;
    let folder = folder_id.unwrap_or(old_folder);
    let moved = folder != old_folder;
    if moved && !folder_exists_in(&mut tx, corp, folder).await? {
        return Err(unknown_folder());
    }
    let position = match (position, moved) {
        (Some(p), _) => p,
        (None, true) => next_snippet_position(&mut tx, corp, folder).await?,
        (None, false) => old_position,
    };
    let snippet: Option<Snippet> = on_tx!(&mut tx, |conn| sqlx::query_as(UPDATE)
        .bind(corp.as_str())
        .bind(id)
        .bind(folder)
        .bind(title.as_deref())
        .bind(body.as_deref())
        .bind(position)
        .bind(now_ms)
        .fetch_optional(&mut *conn)
        .await)
    .map_err(|e| or_conflict(e, QuickReplyConflict::DuplicateTitle))?;
    let snippet = snippet.ok_or(QuickReplyError::NotFound)?;
    let fields: Vec<&str> = [
        ("folder_id", moved),
        ("title", title.is_some()),
        ("body", body.is_some()),
        ("position", position != old_position),
    ]
    .into_iter()
    .filter_map(|(field, changed)| changed.then_some(field))
    .collect();
    auth::audit(
        &mut tx,
        corp.as_str(),
        actor,
        "quick_reply.update",
        &format!("quick_reply:{id}"),
        &serde_json::json!({"fields": fields, "folder_id": snippet.folder_id}),
        now_ms,
    )
    .await?;
    tx.commit().await?;
    Ok(snippet)
}

/// Deletes a snippet; audited.
pub async fn delete_snippet(
    db: &Db,
    corp: &CorpId,
    id: i64,
    actor: &str,
    now_ms: i64,
) -> Result<(), QuickReplyError> {
    const SQL: &str =
        "DELETE FROM quick_reply WHERE corp_id = $1 AND id = $2 RETURNING folder_id, title";
    let mut tx = db.begin().await?;
    let gone: Option<(i64, String)> = on_tx!(&mut tx, |conn| sqlx::query_as(SQL)
        .bind(corp.as_str())
        .bind(id)
        .fetch_optional(&mut *conn)
        .await)?;
    let (folder_id, title) = gone.ok_or(QuickReplyError::NotFound)?;
    auth::audit(
        &mut tx,
        corp.as_str(),
        actor,
        "quick_reply.delete",
        &format!("quick_reply:{id}"),
        &serde_json::json!({"folder_id": folder_id, "title": title}),
        now_ms,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(e: QuickReplyError) -> String {
        match e {
            QuickReplyError::Invalid { field, .. } => field,
            other => format!("not invalid: {other}"),
        }
    }

    #[test]
    fn labels_are_trimmed_and_bounded() {
        assert_eq!(
            check_folder_name("  开场白 ").ok().as_deref(),
            Some("开场白")
        );
        assert_eq!(field(check_folder_name("   ").unwrap_err()), "name");
        assert!(check_folder_name(&"分".repeat(MAX_FOLDER_NAME_CHARS)).is_ok());
        assert!(check_folder_name(&"分".repeat(MAX_FOLDER_NAME_CHARS + 1)).is_err());
        assert!(check_folder_name("两\n行").is_err());
        assert!(check_title(&"t".repeat(MAX_TITLE_CHARS)).is_ok());
        assert_eq!(
            field(check_title(&"t".repeat(MAX_TITLE_CHARS + 1)).unwrap_err()),
            "title"
        );
    }

    #[test]
    fn bodies_fit_a_wecom_text_message() {
        assert_eq!(
            check_body(" 您好\n请问 ").ok().as_deref(),
            Some("您好\n请问")
        );
        assert!(check_body("\n\t ").is_err());
        assert!(check_body(&"a".repeat(MAX_BODY_CHARS)).is_ok());
        assert!(check_body(&"a".repeat(MAX_BODY_CHARS + 1)).is_err());
        // 682 Chinese characters are 2046 bytes; 683 are over WeCom's limit.
        assert!(check_body(&"话".repeat(682)).is_ok());
        let over = check_body(&"话".repeat(683)).unwrap_err().to_string();
        assert!(over.contains("2048"), "{over}");
        assert!(check_body("bell\u{7}").is_err());
    }

    #[test]
    fn positions_are_bounded() {
        assert_eq!(check_position(0).ok(), Some(0));
        assert_eq!(check_position(MAX_POSITION).ok(), Some(MAX_POSITION));
        assert!(check_position(-1).is_err());
        assert!(check_position(MAX_POSITION + 1).is_err());
    }
}
