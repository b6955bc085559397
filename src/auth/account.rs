//! Console accounts of their own (账号密码登录): a bootstrap admin for a fresh install, before
//! WeCom is configured (`scrm admin create`), and accounts for compliance staff. Passwords are
//! hashed with Argon2id (PHC string in `console_account.password_hash`); a login with an unknown
//! name still spends one hash, so response times do not tell which names exist.

use std::sync::LazyLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use rand::Rng as _;
use serde::Serialize;
use wecom_sdk::CorpId;

use super::Role;
use crate::platform::db::{Db, StoreError};
use crate::{on_db, on_tx};

/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// Longest password accepted (hashing is bounded work).
pub const MAX_PASSWORD_BYTES: usize = 256;

/// A console account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Account {
    /// Id.
    pub id: i64,
    /// The corp it acts in.
    #[sqlx(try_from = "String")]
    pub corp_id: CorpId,
    /// Login name (unique).
    pub username: String,
    /// `admin` or `compliance`.
    pub role: String,
    /// Disabled, epoch ms (a disabled account cannot log in).
    pub disabled_at_ms: Option<i64>,
}

impl Account {
    /// The role, typed (`None` for a stored name this build does not know).
    pub fn role(&self) -> Option<Role> {
        Role::parse(&self.role)
    }
}

/// Why an account was not created or changed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// A field is wrong.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The name is taken.
    #[error("username {0} exists")]
    Exists(String),
    /// No such account.
    #[error("no such account")]
    NotFound,
    /// Hashing failed (should not happen).
    #[error("password hashing failed: {0}")]
    Hash(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> AccountError {
    AccountError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// A login name: 3–64 of `a-z 0-9 . _ - @`.
pub fn check_username(name: &str) -> Result<String, AccountError> {
    let name = name.trim().to_ascii_lowercase();
    let ok = (3..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-@".contains(&b));
    if ok {
        Ok(name)
    } else {
        Err(invalid(
            "username",
            "3–64 个字符：小写字母、数字和 . _ - @ / 3–64 of a-z 0-9 . _ - @",
        ))
    }
}

/// A password: at least [`MIN_PASSWORD_CHARS`] characters, at most [`MAX_PASSWORD_BYTES`] bytes.
pub fn check_password(password: &str) -> Result<(), AccountError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(invalid(
            "password",
            format!("至少 {MIN_PASSWORD_CHARS} 个字符 / at least {MIN_PASSWORD_CHARS} characters"),
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(invalid("password", "太长 / too long"));
    }
    Ok(())
}

fn hash_now(password: &[u8], salt: &[u8; 16]) -> Result<String, AccountError> {
    let salt = SaltString::encode_b64(salt).map_err(|e| AccountError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| AccountError::Hash(e.to_string()))
}

async fn hash_password(password: String) -> Result<String, AccountError> {
    let salt: [u8; 16] = rand::rng().random();
    tokio::task::spawn_blocking(move || hash_now(password.as_bytes(), &salt))
        .await
        .map_err(|e| AccountError::Hash(e.to_string()))?
}

/// A hash of a random password nobody knows, checked against when the name is unknown, so that
/// such a login costs the same work as a real one.
static DECOY: LazyLock<String> = LazyLock::new(|| {
    let secret: [u8; 32] = rand::rng().random();
    let salt: [u8; 16] = rand::rng().random();
    hash_now(&secret, &salt).unwrap_or_default()
});

/// Whether `password` matches the PHC string `stored` (the decoy when `None`).
async fn matches(password: String, stored: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || {
        let stored = stored.unwrap_or_else(|| DECOY.clone());
        PasswordHash::new(&stored).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false)
}

const COLUMNS: &str = "id, corp_id, username, role, disabled_at_ms";

/// Creates an account of `corp` (role admin or compliance), audited as `actor`.
pub async fn create(
    db: &Db,
    corp: &CorpId,
    username: &str,
    password: &str,
    role: Role,
    actor: &str,
    now_ms: i64,
) -> Result<Account, AccountError> {
    let username = check_username(username)?;
    check_password(password)?;
    if matches!(role, Role::Sales | Role::Manager) {
        return Err(invalid(
            "role",
            "销售和部门负责人通过企业微信登录，不需要控制台账号 / sales and managers sign in through WeCom",
        ));
    }
    let hash = hash_password(password.to_owned()).await?;
    const EXISTS: &str = "SELECT COUNT(*) FROM console_account WHERE username = $1";
    const INSERT: &str = "INSERT INTO console_account (corp_id, username, password_hash, role, \
        created_at_ms, updated_at_ms) VALUES ($1, $2, $3, $4, $5, $5)";
    let mut tx = db.begin().await?;
    let n: i64 = on_tx!(&mut tx, |conn| sqlx::query_scalar(EXISTS)
        .bind(&username)
        .fetch_one(&mut *conn)
        .await)
    .map_err(StoreError::from)?;
    if n > 0 {
        return Err(AccountError::Exists(username));
    }
    on_tx!(&mut tx, |conn| sqlx::query(INSERT)
        .bind(corp.as_str())
        .bind(&username)
        .bind(&hash)
        .bind(role.as_str())
        .bind(now_ms)
        .execute(&mut *conn)
        .await
        .map(|_| ()))
    .map_err(StoreError::from)?;
    super::audit::audit(
        &mut tx,
        corp.as_str(),
        actor,
        "console.account.create",
        &format!("console_account:{username}"),
        &serde_json::json!({ "role": role.as_str() }),
        now_ms,
    )
    .await?;
    tx.commit().await?;
    get(db, &username).await?.ok_or(AccountError::NotFound)
}

/// Sets a new password (and enables the account again), audited as `actor`.
pub async fn set_password(
    db: &Db,
    username: &str,
    password: &str,
    actor: &str,
    now_ms: i64,
) -> Result<Account, AccountError> {
    let username = check_username(username)?;
    check_password(password)?;
    let account = get(db, &username).await?.ok_or(AccountError::NotFound)?;
    let hash = hash_password(password.to_owned()).await?;
    const SQL: &str = "UPDATE console_account SET password_hash = $2, disabled_at_ms = NULL, \
        updated_at_ms = $3 WHERE username = $1";
    let mut tx = db.begin().await?;
    on_tx!(&mut tx, |conn| sqlx::query(SQL)
        .bind(&username)
        .bind(&hash)
        .bind(now_ms)
        .execute(&mut *conn)
        .await
        .map(|_| ()))
    .map_err(StoreError::from)?;
    super::audit::audit(
        &mut tx,
        account.corp_id.as_str(),
        actor,
        "console.account.password",
        &format!("console_account:{username}"),
        &serde_json::json!({}),
        now_ms,
    )
    .await?;
    tx.commit().await?;
    get(db, &username).await?.ok_or(AccountError::NotFound)
}

/// Disables an account and ends its sessions, audited as `actor`.
pub async fn disable(
    db: &Db,
    username: &str,
    actor: &str,
    now_ms: i64,
) -> Result<(), AccountError> {
    let username = check_username(username)?;
    let account = get(db, &username).await?.ok_or(AccountError::NotFound)?;
    const SQL: &str =
        "UPDATE console_account SET disabled_at_ms = $2, updated_at_ms = $2 WHERE username = $1";
    const SESSIONS: &str = "DELETE FROM web_session WHERE account = $1";
    let mut tx = db.begin().await?;
    on_tx!(&mut tx, |conn| sqlx::query(SQL)
        .bind(&username)
        .bind(now_ms)
        .execute(&mut *conn)
        .await
        .map(|_| ()))
    .map_err(StoreError::from)?;
    on_tx!(&mut tx, |conn| sqlx::query(SESSIONS)
        .bind(&username)
        .execute(&mut *conn)
        .await
        .map(|_| ()))
    .map_err(StoreError::from)?;
    super::audit::audit(
        &mut tx,
        account.corp_id.as_str(),
        actor,
        "console.account.disable",
        &format!("console_account:{username}"),
        &serde_json::json!({}),
        now_ms,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// One account by name.
pub async fn get(db: &Db, username: &str) -> Result<Option<Account>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM console_account WHERE username = $1");
    let row = on_db!(db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
        .bind(username)
        .fetch_optional(pool)
        .await)?;
    Ok(row)
}

/// Every account (of `corp` when given), by name.
pub async fn list(db: &Db, corp: Option<&CorpId>) -> Result<Vec<Account>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM console_account WHERE ($1 IS NULL OR corp_id = $1) ORDER BY username"
    );
    let rows = on_db!(db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
        .bind(corp.map(CorpId::as_str))
        .fetch_all(pool)
        .await)?;
    Ok(rows)
}

/// The enabled account `username` whose password is `password`; `None` otherwise (an unknown
/// name, a wrong password, a disabled account — indistinguishable to the caller).
pub async fn verify(
    db: &Db,
    username: &str,
    password: &str,
) -> Result<Option<Account>, StoreError> {
    const SQL: &str = "SELECT password_hash FROM console_account WHERE username = $1";
    let name = username.trim().to_ascii_lowercase();
    if password.len() > MAX_PASSWORD_BYTES || name.len() > 64 {
        return Ok(None);
    }
    let stored: Option<String> = on_db!(db, |pool| sqlx::query_scalar(SQL)
        .bind(&name)
        .fetch_optional(pool)
        .await)?;
    let known = stored.is_some();
    let ok = matches(password.to_owned(), stored).await;
    if !(known && ok) {
        return Ok(None);
    }
    Ok(get(db, &name).await?.filter(|a| a.disabled_at_ms.is_none()))
}
