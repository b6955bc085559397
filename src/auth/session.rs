//! Web sessions: a random token in an HttpOnly cookie, its SHA-256 in `web_session`, a CSRF token
//! every write must echo, and two expiries — idle (no request for so long) and absolute (since
//! sign-in). A session is good on the surface it was signed in on: the salesperson's sidebar
//! (WeCom's OAuth; the same [`Principal`] an API key of role `sales` for that staff member would
//! be) or the console (an [`Account`] with its role). Every rule of [`super::policy`] applies
//! unchanged.

use rand::Rng as _;
use sha2::{Digest as _, Sha256};
use wecom_sdk::{CorpId, UserId};

use super::account::Account;
use super::{Principal, Role};
use crate::on_db;
use crate::platform::db::{Db, StoreError};

/// How long a session lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Without a request for this long, the session is over (ms).
    pub idle_ms: i64,
    /// Since sign-in, at most this long (ms).
    pub max_ms: i64,
}

/// A live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Who it stands for.
    pub principal: Principal,
    /// What every write must send back (`X-CSRF-Token`).
    pub csrf_token: String,
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn random_hex(bytes: usize) -> String {
    let mut rng = rand::rng();
    let raw: Vec<u8> = (0..bytes).map(|_| rng.random::<u8>()).collect();
    hex::encode(raw)
}

/// Where a session was signed in, and where it is good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// The salesperson's sidebar (WeCom OAuth; always a sales principal of that staff member).
    Sidebar,
    /// The console (an account, with its role).
    Console,
}

impl Surface {
    fn as_str(self) -> &'static str {
        match self {
            Self::Sidebar => "sidebar",
            Self::Console => "console",
        }
    }
}

/// Who a new session is for.
#[derive(Debug, Clone, Copy)]
pub enum SignIn<'a> {
    /// A salesperson in the sidebar.
    Staff(&'a UserId),
    /// A console account.
    Account(&'a Account),
    /// A member on the console through WeCom's web login, with the role worked out for them
    /// ([`super::members::console_role`]).
    Member(&'a UserId, Role),
}

/// Signs someone of `corp_id` in; returns the cookie's token (shown only now) and the session.
pub async fn create(
    db: &Db,
    corp_id: &CorpId,
    who: SignIn<'_>,
    now_ms: i64,
) -> Result<(String, Session), StoreError> {
    const SQL: &str = "INSERT INTO web_session (token_hash, corp_id, user_id, csrf_token, \
        created_at_ms, last_seen_at_ms, surface, role, account) \
        VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8)";
    let token = random_hex(32);
    let csrf_token = random_hex(16);
    let (surface, user, role, account) = match who {
        SignIn::Staff(user) => (Surface::Sidebar, user.as_str(), Role::Sales, None),
        SignIn::Account(a) => (
            Surface::Console,
            "",
            a.role().unwrap_or(Role::Compliance),
            Some(a.username.as_str()),
        ),
        SignIn::Member(user, role) => (Surface::Console, user.as_str(), role, None),
    };
    on_db!(db, |pool| sqlx::query(SQL)
        .bind(hash(&token))
        .bind(corp_id.as_str())
        .bind(user)
        .bind(&csrf_token)
        .bind(now_ms)
        .bind(surface.as_str())
        .bind(role.as_str())
        .bind(account)
        .execute(pool)
        .await
        .map(|_| ()))?;
    let session = Session {
        principal: Principal {
            corp_id: corp_id.clone(),
            role,
            staff_user_id: UserId::try_from(user).ok(),
            key_id: None,
            account: account.map(str::to_owned),
        },
        csrf_token,
    };
    Ok((token, session))
}

/// A stored session row: corp, staff member (empty for an account), CSRF token, created, last
/// seen, surface, role, account.
type Row = (
    String,
    String,
    String,
    i64,
    i64,
    String,
    String,
    Option<String>,
);

/// The live session of `token` on `surface`: `None` for an unknown, idle or too old one (which is
/// removed), or one signed in elsewhere. The last-seen time is written at most once a minute, so
/// reads stay reads.
pub async fn lookup(
    db: &Db,
    token: &str,
    surface: Surface,
    limits: SessionLimits,
    now_ms: i64,
) -> Result<Option<Session>, StoreError> {
    const FIND: &str = "SELECT corp_id, user_id, csrf_token, created_at_ms, last_seen_at_ms, \
        surface, role, account FROM web_session WHERE token_hash = $1";
    const SEEN: &str = "UPDATE web_session SET last_seen_at_ms = $2 WHERE token_hash = $1 \
        AND last_seen_at_ms < $3";
    if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let key = hash(token);
    let row: Option<Row> = on_db!(db, |pool| sqlx::query_as(FIND)
        .bind(&key)
        .fetch_optional(pool)
        .await)?;
    let Some((corp, user, csrf_token, created, seen, signed_on, role, account)) = row else {
        return Ok(None);
    };
    if signed_on != surface.as_str() {
        return Ok(None);
    }
    if now_ms - seen > limits.idle_ms || now_ms - created > limits.max_ms {
        end(db, token).await?;
        return Ok(None);
    }
    let Ok(corp) = CorpId::try_from(corp) else {
        return Ok(None);
    };
    let staff_user_id = UserId::try_from(user).ok();
    let principal = match (surface, Role::parse(&role)) {
        (Surface::Sidebar, _) if staff_user_id.is_some() => Principal {
            corp_id: corp,
            role: Role::Sales,
            staff_user_id,
            key_id: None,
            account: None,
        },
        (Surface::Console, Some(role)) if account.is_some() || staff_user_id.is_some() => {
            Principal {
                corp_id: corp,
                role,
                staff_user_id,
                key_id: None,
                account,
            }
        }
        _ => return Ok(None),
    };
    on_db!(db, |pool| sqlx::query(SEEN)
        .bind(&key)
        .bind(now_ms)
        .bind(now_ms - 60_000)
        .execute(pool)
        .await
        .map(|_| ()))?;
    Ok(Some(Session {
        principal,
        csrf_token,
    }))
}

/// Signs the session of `token` out.
pub async fn end(db: &Db, token: &str) -> Result<(), StoreError> {
    const SQL: &str = "DELETE FROM web_session WHERE token_hash = $1";
    on_db!(db, |pool| sqlx::query(SQL)
        .bind(hash(token))
        .execute(pool)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// Removes sessions nobody used for `idle_ms` (a sweep; `lookup` refuses them anyway).
pub async fn sweep(db: &Db, idle_ms: i64, now_ms: i64) -> Result<u64, StoreError> {
    const SQL: &str = "DELETE FROM web_session WHERE last_seen_at_ms < $1";
    let n = on_db!(db, |pool| sqlx::query(SQL)
        .bind(now_ms - idle_ms)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(n)
}

/// Whose sessions: a console account's, or a member's (sidebar and console).
#[derive(Debug, Clone, Copy)]
pub enum Holder<'a> {
    /// The console account of this name.
    Account(&'a str),
    /// The staff member of this userid.
    Member(&'a str),
}

impl Holder<'_> {
    /// As the principal of one of its sessions would be recorded.
    pub fn of(p: &Principal) -> Option<Holder<'_>> {
        match (&p.account, &p.staff_user_id) {
            (Some(a), _) => Some(Holder::Account(a)),
            (None, Some(u)) => Some(Holder::Member(u.as_str())),
            (None, None) => None,
        }
    }
}

/// Ends every session of `holder` in `corp_id` (sign out everywhere; an admin's revocation; a
/// role change). Returns how many ended.
pub async fn end_all(db: &Db, corp_id: &CorpId, holder: Holder<'_>) -> Result<u64, StoreError> {
    const BY_ACCOUNT: &str = "DELETE FROM web_session WHERE corp_id = $1 AND account = $2";
    const BY_MEMBER: &str = "DELETE FROM web_session WHERE corp_id = $1 AND user_id = $2";
    let (sql, who) = match holder {
        Holder::Account(a) => (BY_ACCOUNT, a),
        Holder::Member(u) => (BY_MEMBER, u),
    };
    if who.is_empty() {
        return Ok(0);
    }
    let n = on_db!(db, |pool| sqlx::query(sql)
        .bind(corp_id.as_str())
        .bind(who)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(n)
}

/// A live session as an admin sees it (never its token).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SessionInfo {
    /// Its id: the SHA-256 of the token, which cannot be turned back into the token.
    pub id: String,
    /// The member (empty for an account).
    pub user_id: String,
    /// The console account, if any.
    pub account: Option<String>,
    /// `sidebar` or `console`.
    pub surface: String,
    /// Its role.
    pub role: String,
    /// Signed in at.
    pub created_at_ms: i64,
    /// Last request (to the minute).
    pub last_seen_at_ms: i64,
}

/// The id [`SessionInfo`] gives the session of `token`.
pub fn id_of(token: &str) -> String {
    hash(token)
}

/// The sessions of `corp_id` still within the idle limit, most recently used first.
pub async fn list(
    db: &Db,
    corp_id: &CorpId,
    idle_ms: i64,
    now_ms: i64,
) -> Result<Vec<SessionInfo>, StoreError> {
    const SQL: &str = "SELECT token_hash AS id, user_id, account, surface, role, created_at_ms, \
        last_seen_at_ms FROM web_session WHERE corp_id = $1 AND last_seen_at_ms >= $2 \
        ORDER BY last_seen_at_ms DESC LIMIT 500";
    let rows = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp_id.as_str())
        .bind(now_ms - idle_ms)
        .fetch_all(pool)
        .await)?;
    Ok(rows)
}

/// Ends the session of id `id` in `corp_id` (an admin's revocation); whose it was, if it existed.
pub async fn end_by_id(
    db: &Db,
    corp_id: &CorpId,
    id: &str,
) -> Result<Option<SessionInfo>, StoreError> {
    const FIND: &str = "SELECT token_hash AS id, user_id, account, surface, role, created_at_ms, \
        last_seen_at_ms FROM web_session WHERE corp_id = $1 AND token_hash = $2";
    const DELETE: &str = "DELETE FROM web_session WHERE corp_id = $1 AND token_hash = $2";
    let mut tx = db.begin().await?;
    let found: Option<SessionInfo> = crate::on_tx!(&mut tx, |conn| sqlx::query_as(FIND)
        .bind(corp_id.as_str())
        .bind(id)
        .fetch_optional(conn)
        .await)?;
    if found.is_some() {
        crate::on_tx!(&mut tx, |conn| sqlx::query(DELETE)
            .bind(corp_id.as_str())
            .bind(id)
            .execute(conn)
            .await
            .map(|_| ()))?;
    }
    tx.commit().await?;
    Ok(found)
}
