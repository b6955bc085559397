//! Authorization: who is calling ([`Principal`]), what their role lets them do ([`Action`]), and
//! which data they reach (a sales principal only its own staff member's customers). The API
//! checks every request here, and so will the sidebar and console sessions (WeCom login) later:
//! they produce the same [`Principal`] and go through the same checks.
//!
//! API keys (`scrm apikey create`): `scrm_<12 hex prefix>_<48 hex secret>`, shown once, stored as
//! the SHA-256 of the whole key; the prefix finds the row.

use rand::Rng as _;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::on_db;
use crate::platform::db::{Db, StoreError};

/// A role, as `--role` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything in the corp.
    Admin,
    /// Reads every customer, note and history; changes no customer record.
    Compliance,
    /// Reads and edits only its own staff member's customers.
    Sales,
}

impl Role {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Compliance => "compliance",
            Self::Sales => "sales",
        }
    }

    /// Parses a stored or typed name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Self::Admin),
            "compliance" => Some(Self::Compliance),
            "sales" => Some(Self::Sales),
            _ => None,
        }
    }
}

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read customers, relations, notes, reminders, stages, the tag library.
    ReadCustomers,
    /// Edit a customer's tags, remark, notes, reminders, stage.
    EditCustomers,
    /// Create, rename, reorder, delete corp tags; personal tags.
    ManageTags,
    /// Auto-tagging rules, lifecycle stage list and other corp settings.
    ManageSettings,
    /// Read the outbox and jobs (operations).
    ReadOperations,
    /// Retry dead outbox items.
    RetryOutbox,
    /// Read compliance alerts and their evidence.
    ReadAlerts,
    /// Acknowledge, resolve, mark false positive, reopen alerts.
    HandleAlerts,
    /// Read archived chat content (every read is logged) and the archive's health.
    ReadArchive,
    /// Plan, run and retry reassignments of a member's customers and group chats.
    ManageTransfers,
}

/// Who is calling: from an API key now, from a WeCom-login session later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// The corp the credentials belong to.
    pub corp_id: String,
    /// Role.
    pub role: Role,
    /// The staff member acting (required for sales).
    pub staff_user_id: Option<String>,
    /// The API key, when authenticated by one.
    pub key_id: Option<i64>,
}

/// Why a request may not proceed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No or invalid credentials (401).
    #[error("unauthenticated")]
    Unauthenticated,
    /// Valid credentials, outside their role or scope (403).
    #[error("forbidden: {0}")]
    Forbidden(String),
}

/// A check failed, or the database could not answer it.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// Denied.
    #[error(transparent)]
    Denied(#[from] Denied),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Principal {
    /// Who the audit trail and every write record: the staff member, else the key.
    pub fn actor(&self) -> String {
        match (&self.staff_user_id, self.key_id) {
            (Some(user), _) => user.clone(),
            (None, Some(id)) => format!("apikey:{id}"),
            (None, None) => "system".to_owned(),
        }
    }

    /// Whether the role allows `action` at all.
    pub fn require(&self, action: Action) -> Result<(), Denied> {
        use Action::*;
        let allowed = match self.role {
            Role::Admin => true,
            Role::Compliance => matches!(
                action,
                ReadCustomers | ReadOperations | ReadAlerts | HandleAlerts | ReadArchive
            ),
            Role::Sales => matches!(action, ReadCustomers | EditCustomers),
        };
        if allowed {
            Ok(())
        } else {
            Err(Denied::Forbidden(format!(
                "角色 {} 无此权限 / role {} may not do this",
                self.role.as_str(),
                self.role.as_str()
            )))
        }
    }

    /// The staff member whose customers this principal is limited to (`None`: all of the corp).
    pub fn staff_scope(&self) -> Option<&str> {
        match self.role {
            Role::Sales => Some(self.staff_user_id.as_deref().unwrap_or("")),
            Role::Admin | Role::Compliance => None,
        }
    }

    /// `action` on customer `external_user_id`: the role must allow it, and a sales principal's
    /// staff member must follow the customer now.
    pub async fn check_customer(
        &self,
        db: &Db,
        action: Action,
        external_user_id: &str,
    ) -> Result<(), AccessError> {
        self.require(action)?;
        let Some(user) = self.staff_scope() else {
            return Ok(());
        };
        const SQL: &str = "SELECT COUNT(*) FROM follow_relation WHERE corp_id = $1 AND user_id = $2 \
            AND external_user_id = $3 AND status = 'active'";
        let n: i64 = on_db!(db, |pool| sqlx::query_scalar(SQL)
            .bind(&self.corp_id)
            .bind(user)
            .bind(external_user_id)
            .fetch_one(pool)
            .await)
        .map_err(StoreError::from)?;
        if n > 0 && !user.is_empty() {
            Ok(())
        } else {
            Err(Denied::Forbidden("不是你跟进的客户 / not one of your customers".to_owned()).into())
        }
    }

    /// `action` on the relation of staff member `user_id`: a sales principal only on its own.
    pub fn check_relation(&self, action: Action, user_id: &str) -> Result<(), Denied> {
        self.require(action)?;
        match self.staff_scope() {
            Some(own) if own.is_empty() || own != user_id => Err(Denied::Forbidden(
                "只能修改自己的跟进关系 / only your own relations".to_owned(),
            )),
            _ => Ok(()),
        }
    }
}

/// A stored key, without its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ApiKeyInfo {
    /// Id.
    pub id: i64,
    /// Corp.
    pub corp_id: String,
    /// Label.
    pub name: String,
    /// Role.
    pub role: String,
    /// Staff member.
    pub staff_user_id: Option<String>,
    /// The key's visible prefix.
    pub key_prefix: String,
    /// Created, epoch ms.
    pub created_at_ms: i64,
    /// Revoked, epoch ms.
    pub revoked_at_ms: Option<i64>,
    /// Last authenticated request, epoch ms.
    pub last_used_at_ms: Option<i64>,
}

fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Creates a key; returns its id and the key itself (the only time it is ever shown).
pub async fn create_key(
    db: &Db,
    corp_id: &str,
    role: Role,
    staff_user_id: Option<&str>,
    name: &str,
    now_ms: i64,
) -> Result<(i64, String), StoreError> {
    const SQL: &str = "INSERT INTO api_key (corp_id, name, role, staff_user_id, key_prefix, key_hash, \
        created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id";
    let mut rng = rand::rng();
    let prefix = hex::encode(rng.random::<[u8; 6]>());
    let secret = hex::encode(rng.random::<[u8; 24]>());
    let key = format!("scrm_{prefix}_{secret}");
    let id = on_db!(db, |pool| sqlx::query_scalar(SQL)
        .bind(corp_id)
        .bind(name)
        .bind(role.as_str())
        .bind(staff_user_id)
        .bind(&prefix)
        .bind(hash(&key))
        .bind(now_ms)
        .fetch_one(pool)
        .await)?;
    Ok((id, key))
}

/// The principal a bearer key stands for; `None` for a malformed, unknown, wrong or revoked key.
pub async fn authenticate(
    db: &Db,
    key: &str,
    now_ms: i64,
) -> Result<Option<Principal>, StoreError> {
    const FIND: &str = "SELECT id, corp_id, role, staff_user_id, key_hash, revoked_at_ms \
        FROM api_key WHERE key_prefix = $1";
    // Written at most once a minute per key, so reads stay reads.
    const USED: &str = "UPDATE api_key SET last_used_at_ms = $2 WHERE id = $1 \
        AND (last_used_at_ms IS NULL OR last_used_at_ms < $3)";
    let Some(prefix) = key
        .strip_prefix("scrm_")
        .and_then(|rest| rest.split_once('_'))
        .map(|(prefix, _)| prefix)
        .filter(|p| p.len() == 12 && p.bytes().all(|b| b.is_ascii_hexdigit()))
    else {
        return Ok(None);
    };
    let row: Option<StoredKey> = on_db!(db, |pool| sqlx::query_as(FIND)
        .bind(prefix)
        .fetch_optional(pool)
        .await)?;
    let Some((id, corp_id, role, staff_user_id, stored, revoked)) = row else {
        return Ok(None);
    };
    if revoked.is_some() || !constant_time_eq(hash(key).as_bytes(), stored.as_bytes()) {
        return Ok(None);
    }
    let Some(role) = Role::parse(&role) else {
        return Ok(None);
    };
    on_db!(db, |pool| sqlx::query(USED)
        .bind(id)
        .bind(now_ms)
        .bind(now_ms - 60_000)
        .execute(pool)
        .await
        .map(|_| ()))?;
    Ok(Some(Principal {
        corp_id,
        role,
        staff_user_id,
        key_id: Some(id),
    }))
}

/// An `api_key` row as [`authenticate`] reads it: id, corp, role, staff member, hash, revoked at.
type StoredKey = (i64, String, String, Option<String>, String, Option<i64>);

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Revokes a key; false when there is no such key or it was revoked already.
pub async fn revoke_key(db: &Db, id: i64, now_ms: i64) -> Result<bool, StoreError> {
    const SQL: &str =
        "UPDATE api_key SET revoked_at_ms = $2 WHERE id = $1 AND revoked_at_ms IS NULL";
    let n = on_db!(db, |pool| sqlx::query(SQL)
        .bind(id)
        .bind(now_ms)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// Keys, newest first (of one corp when given).
pub async fn list_keys(db: &Db, corp_id: Option<&str>) -> Result<Vec<ApiKeyInfo>, StoreError> {
    const SQL: &str = "SELECT id, corp_id, name, role, staff_user_id, key_prefix, created_at_ms, \
        revoked_at_ms, last_used_at_ms FROM api_key WHERE ($1 IS NULL OR corp_id = $1) \
        ORDER BY id DESC";
    let rows = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp_id)
        .fetch_all(pool)
        .await)?;
    Ok(rows)
}

/// Appends to the audit log (inside the write's transaction when `tx` is given).
pub async fn audit(
    tx: &mut crate::platform::db::Tx,
    corp_id: &str,
    actor: &str,
    action: &str,
    target: &str,
    detail: &serde_json::Value,
    now_ms: i64,
) -> Result<(), StoreError> {
    const SQL: &str = "INSERT INTO audit_log (corp_id, actor, action, target, detail, at_ms, \
        key_id) VALUES ($1, $2, $3, $4, $5, $6, $7)";
    let key_id = REQUEST_KEY.try_with(std::cell::Cell::get).ok().flatten();
    crate::on_tx!(tx, |conn| sqlx::query(SQL)
        .bind(corp_id)
        .bind(actor)
        .bind(action)
        .bind(target)
        .bind(detail.to_string())
        .bind(now_ms)
        .bind(key_id)
        .execute(&mut *conn)
        .await
        .map(|_| ()))?;
    Ok(())
}

tokio::task_local! {
    /// The API key of the request being handled (set by the API's authentication, read by
    /// [`audit`]), so every audit row of a request names the key as well as the staff member.
    static REQUEST_KEY: std::cell::Cell<Option<i64>>;
}

/// Runs one request's handling with a slot for its API key (see [`note_request_key`]).
pub async fn with_request_key<F: std::future::Future>(handling: F) -> F::Output {
    REQUEST_KEY
        .scope(std::cell::Cell::new(None), handling)
        .await
}

/// Remembers the key the current request authenticated with (no effect outside
/// [`with_request_key`]).
pub fn note_request_key(key_id: Option<i64>) {
    let _ = REQUEST_KEY.try_with(|slot| slot.set(key_id));
}

/// One entry of the append-only audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct AuditEntry {
    /// Id (the order entries were written in).
    pub id: i64,
    /// Who did it (`zhangsan`, `apikey:3`, `cli:root`, `system`).
    pub actor: String,
    /// What (`transfer.plan`, `transfer.run`, …).
    pub action: String,
    /// On what (`transfer_job:7`).
    pub target: String,
    /// Details (JSON text).
    pub detail: String,
    /// When, epoch ms.
    pub at_ms: i64,
    /// The API key it was done with, if any.
    pub key_id: Option<i64>,
}

/// The audit entries of one target, oldest first (at most 1000).
pub async fn audit_entries(
    db: &Db,
    corp_id: &str,
    target: &str,
) -> Result<Vec<AuditEntry>, StoreError> {
    const SQL: &str = "SELECT id, actor, action, target, detail, at_ms, key_id FROM audit_log \
        WHERE corp_id = $1 AND target = $2 ORDER BY id LIMIT 1000";
    let rows = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp_id)
        .bind(target)
        .fetch_all(pool)
        .await)?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(role: Role, staff: Option<&str>) -> Principal {
        Principal {
            corp_id: "ww1".to_owned(),
            role,
            staff_user_id: staff.map(str::to_owned),
            key_id: Some(7),
        }
    }

    #[test]
    fn roles_allow_what_they_should() {
        let admin = principal(Role::Admin, None);
        let compliance = principal(Role::Compliance, None);
        let sales = principal(Role::Sales, Some("zhangsan"));
        for a in [
            Action::ReadCustomers,
            Action::EditCustomers,
            Action::ManageTags,
            Action::ManageSettings,
            Action::ReadOperations,
            Action::RetryOutbox,
        ] {
            assert!(admin.require(a).is_ok(), "{a:?}");
        }
        assert!(compliance.require(Action::ReadCustomers).is_ok());
        assert!(compliance.require(Action::ReadOperations).is_ok());
        assert!(compliance.require(Action::EditCustomers).is_err());
        assert!(compliance.require(Action::ManageTags).is_err());
        assert!(sales.require(Action::EditCustomers).is_ok());
        assert!(sales.require(Action::ManageTags).is_err());
        assert!(sales.require(Action::ReadOperations).is_err());
        assert!(sales.require(Action::RetryOutbox).is_err());
    }

    #[test]
    fn sales_reach_only_their_own_relations() {
        let sales = principal(Role::Sales, Some("zhangsan"));
        assert!(
            sales
                .check_relation(Action::EditCustomers, "zhangsan")
                .is_ok()
        );
        assert!(sales.check_relation(Action::EditCustomers, "lisi").is_err());
        // A sales key without a staff member reaches nobody.
        let orphan = principal(Role::Sales, None);
        assert!(orphan.check_relation(Action::EditCustomers, "").is_err());
        assert_eq!(principal(Role::Admin, None).actor(), "apikey:7");
        assert_eq!(sales.actor(), "zhangsan");
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
