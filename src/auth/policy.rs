//! The policy: roles, the actions they allow ([`Role::may`], the one table), who is calling
//! ([`Principal`]) and the data scope on top of the role (a sales principal reaches only its own
//! staff member's customers and relations).

use serde::Serialize;
use wecom_sdk::{ChatId, CorpId, ExternalUserId, UserId};

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
    /// Reads and edits the customers, works the alerts, and reassigns the customers (from one
    /// member of the team to others of it), of the staff of the departments the member leads
    /// (WeCom's `is_leader_in_dept`, sub-departments included) and of their direct reports:
    /// [`Principal::team`]. A console role (WeCom login), never an API key's.
    Manager,
    /// Reads and edits only its own staff member's customers.
    Sales,
}

impl Role {
    /// Every role, in the order documents list them.
    pub const ALL: [Self; 4] = [Self::Admin, Self::Compliance, Self::Manager, Self::Sales];

    /// The one table of what each role may do (data scope comes on top: a sales principal only
    /// reaches its own staff member's customers, [`Principal::check_customer`]).
    pub fn may(self, action: Action) -> bool {
        use Action::*;
        match self {
            Self::Admin => true,
            Self::Compliance => matches!(
                action,
                ReadCustomers
                    | ReadOperations
                    | ReadTransfers
                    | ReadAlerts
                    | HandleAlerts
                    | ReadArchive
                    | ManageRules
            ),
            Self::Manager => matches!(
                action,
                ReadCustomers
                    | EditCustomers
                    | ReadAlerts
                    | HandleAlerts
                    | ReadTransfers
                    | ManageTransfers
            ),
            Self::Sales => matches!(action, ReadCustomers | EditCustomers),
        }
    }

    /// The roles an API key can have (a manager's reach is worked out at console sign-in).
    pub const API: [Self; 3] = [Self::Admin, Self::Compliance, Self::Sales];

    /// The API key roles that may do `action`, as the API documents show them
    /// (`admin, compliance`).
    pub fn who_may(action: Action) -> String {
        Self::API
            .iter()
            .filter(|r| r.may(action))
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Compliance => "compliance",
            Self::Manager => "manager",
            Self::Sales => "sales",
        }
    }

    /// Parses a stored or typed name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Self::Admin),
            "compliance" => Some(Self::Compliance),
            "manager" => Some(Self::Manager),
            "sales" => Some(Self::Sales),
            _ => None,
        }
    }
}

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read customers, relations, notes, reminders, stages, the tag library, the quick replies.
    ReadCustomers,
    /// Edit a customer's tags, remark, notes, reminders, stage; count a quick reply sent into a
    /// customer chat.
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
    /// Read the departed members and the reassignments (a manager: their team's).
    ReadTransfers,
    /// Plan, run and retry reassignments of a member's customers and group chats (a manager:
    /// from and to members of their team).
    ManageTransfers,
    /// Create, rename, reorder and delete quick-reply folders and snippets (话术库).
    ManageQuickReplies,
    /// Edit the corp's content-rule library, revert it, start a retroactive scan with it, and set
    /// who is told of each category's alerts (规则).
    ManageRules,
}

/// Who is calling: from an API key now, from a WeCom-login session later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// The corp the credentials belong to.
    pub corp_id: CorpId,
    /// Role.
    pub role: Role,
    /// The staff member acting (required for sales).
    pub staff_user_id: Option<UserId>,
    /// The API key, when authenticated by one.
    pub key_id: Option<i64>,
    /// The console account (`scrm admin create`), when signed in with one.
    pub account: Option<String>,
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
        match (&self.staff_user_id, self.key_id, &self.account) {
            (Some(user), _, _) => user.to_string(),
            (None, Some(id), _) => format!("apikey:{id}"),
            (None, None, Some(account)) => format!("console:{account}"),
            (None, None, None) => "system".to_owned(),
        }
    }

    /// Whether the role allows `action` at all.
    pub fn require(&self, action: Action) -> Result<(), Denied> {
        if self.role.may(action) {
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
    /// A manager's scope is a team, which this cannot say: it answers "nobody" (`Some("")`), so
    /// code that only knows single-member scopes finds nothing rather than everything; the
    /// console asks [`Principal::team`].
    pub fn staff_scope(&self) -> Option<&str> {
        match self.role {
            Role::Sales => Some(self.staff_user_id.as_ref().map_or("", UserId::as_str)),
            Role::Manager => Some(""),
            Role::Admin | Role::Compliance => None,
        }
    }

    /// The staff members whose customers and alerts this principal reaches: `None` for the whole
    /// corp (admin, compliance), the member alone for sales, and for a manager themself, the
    /// active members of the departments they lead (and of every department under those) and
    /// their direct reports.
    pub async fn team(&self, db: &Db) -> Result<Option<Vec<String>>, StoreError> {
        let own = self
            .staff_user_id
            .as_ref()
            .map_or_else(String::new, |u| u.as_str().to_owned());
        match self.role {
            Role::Admin | Role::Compliance => Ok(None),
            Role::Sales => Ok(Some(if own.is_empty() { vec![] } else { vec![own] })),
            Role::Manager if own.is_empty() => Ok(Some(vec![])),
            Role::Manager => super::team::team_of(db, &self.corp_id, &own)
                .await
                .map(Some),
        }
    }

    /// `action` on customer `external_user_id`: the role must allow it, and a sales principal's
    /// staff member must follow the customer now.
    pub async fn check_customer(
        &self,
        db: &Db,
        action: Action,
        external_user_id: &ExternalUserId,
    ) -> Result<(), AccessError> {
        self.require(action)?;
        if self.role == Role::Manager {
            let team = self.team(db).await?.unwrap_or_default();
            const FOLLOWERS: &str = "SELECT user_id FROM follow_relation WHERE corp_id = $1 \
                AND external_user_id = $2 AND status = 'active'";
            let followers: Vec<String> = on_db!(db, |pool| sqlx::query_scalar(FOLLOWERS)
                .bind(self.corp_id.as_str())
                .bind(external_user_id.as_str())
                .fetch_all(pool)
                .await)
            .map_err(StoreError::from)?;
            return if followers.iter().any(|f| team.contains(f)) {
                Ok(())
            } else {
                Err(Denied::Forbidden(
                    "不是你的团队跟进的客户 / not a customer of your team".to_owned(),
                )
                .into())
            };
        }
        let Some(user) = self.staff_scope() else {
            return Ok(());
        };
        const SQL: &str = "SELECT COUNT(*) FROM follow_relation WHERE corp_id = $1 AND user_id = $2 \
            AND external_user_id = $3 AND status = 'active'";
        let n: i64 = on_db!(db, |pool| sqlx::query_scalar(SQL)
            .bind(self.corp_id.as_str())
            .bind(user)
            .bind(external_user_id.as_str())
            .fetch_one(pool)
            .await)
        .map_err(StoreError::from)?;
        if n > 0 && !user.is_empty() {
            Ok(())
        } else {
            Err(Denied::Forbidden("不是你跟进的客户 / not one of your customers".to_owned()).into())
        }
    }

    /// `action` on customer group chat `chat_id`: the role must allow it, and a sales principal's
    /// staff member must be in the chat now (its owner or a staff member among its members).
    pub async fn check_chat(
        &self,
        db: &Db,
        action: Action,
        chat_id: &ChatId,
    ) -> Result<(), AccessError> {
        self.require(action)?;
        let Some(user) = self.staff_scope() else {
            return Ok(());
        };
        const SQL: &str = "SELECT COUNT(*) FROM group_chat c WHERE c.corp_id = $1 AND c.chat_id = $2 \
            AND c.dismissed_at_ms IS NULL AND (c.owner_user_id = $3 OR EXISTS (SELECT 1 \
            FROM group_chat_member m WHERE m.corp_id = c.corp_id AND m.chat_id = c.chat_id \
            AND m.member_id = $3 AND m.member_type = 1 AND m.left_at_ms IS NULL))";
        let n: i64 = on_db!(db, |pool| sqlx::query_scalar(SQL)
            .bind(self.corp_id.as_str())
            .bind(chat_id.as_str())
            .bind(user)
            .fetch_one(pool)
            .await)
        .map_err(StoreError::from)?;
        if n > 0 && !user.is_empty() {
            Ok(())
        } else {
            Err(Denied::Forbidden("不是你所在的客户群 / not a chat you are in".to_owned()).into())
        }
    }

    /// `action` on the relation of staff member `user_id`: a sales principal only on its own.
    pub fn check_relation(&self, action: Action, user_id: &UserId) -> Result<(), Denied> {
        self.require(action)?;
        match self.staff_scope() {
            Some(own) if own.is_empty() || own != user_id.as_str() => Err(Denied::Forbidden(
                "只能修改自己的跟进关系 / only your own relations".to_owned(),
            )),
            _ => Ok(()),
        }
    }
}
