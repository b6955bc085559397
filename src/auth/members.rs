//! Which members of the corp may use the console through WeCom's web login, and as what. An
//! admin's grant (`console_member`) decides; without one the directory does: the leader of a
//! department manages it, any other member with 客户联系 works their own customers. Departed,
//! disabled and unknown members never get in. A grant (or its removal) is audited and ends the
//! member's sessions, so the new role holds from their next request.

use wecom_sdk::{CorpId, UserId};

use super::Role;
use super::session::{self, Holder};
use crate::on_db;
use crate::platform::db::{Db, StoreError};

/// What an admin decided for a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// This role.
    Role(Role),
    /// Kept out of the console, whatever the directory says.
    NoAccess,
}

impl Grant {
    /// The stored name (`none` for [`Grant::NoAccess`]).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Role(r) => r.as_str(),
            Self::NoAccess => "none",
        }
    }

    /// Parses a stored or posted name.
    pub fn parse(s: &str) -> Option<Self> {
        if s == "none" {
            Some(Self::NoAccess)
        } else {
            Role::parse(s).map(Self::Role)
        }
    }
}

/// Why a member may not sign in to the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not in our copy of the directory (not synced yet, or not a member).
    Unknown,
    /// Left the corp, or disabled in WeCom.
    Inactive,
    /// No grant, leads no department and has no 客户联系.
    NoRole,
    /// An admin keeps them out.
    Revoked,
}

impl Refusal {
    /// What the sign-in page says.
    pub fn message(self) -> &'static str {
        match self {
            Self::Unknown => {
                "系统里还没有你的成员信息：请管理员先同步通讯录（scrm sync），再来登录。"
            }
            Self::Inactive => "你的企业微信账号已停用或已离职，不能登录控制台。",
            Self::NoRole => "你没有控制台权限：请联系管理员在「成员与权限」中为你开通。",
            Self::Revoked => "管理员已关闭你的控制台权限。",
        }
    }
}

/// A member's console role now, or why they have none.
pub async fn console_role(
    db: &Db,
    corp_id: &CorpId,
    user_id: &UserId,
) -> Result<Result<Role, Refusal>, StoreError> {
    const STAFF: &str = "SELECT status, departed_at_ms, has_customer_contact, leads_departments \
        FROM staff WHERE corp_id = $1 AND user_id = $2";
    let row: Option<(i64, Option<i64>, i64, String)> = on_db!(db, |pool| sqlx::query_as(STAFF)
        .bind(corp_id.as_str())
        .bind(user_id.as_str())
        .fetch_optional(pool)
        .await)?;
    let Some((status, departed, contact, leads)) = row else {
        return Ok(Err(Refusal::Unknown));
    };
    let grant = granted(db, corp_id, user_id.as_str()).await?;
    Ok(decide(
        &Directory {
            status,
            departed: departed.is_some(),
            customer_contact: contact != 0,
            leads: &leads,
        },
        grant,
    ))
}

/// What the directory says of a member.
struct Directory<'a> {
    status: i64,
    departed: bool,
    customer_contact: bool,
    leads: &'a str,
}

/// The one rule: active members only; an admin's grant first; else leaders manage, members with
/// 客户联系 sell.
fn decide(d: &Directory<'_>, grant: Option<Grant>) -> Result<Role, Refusal> {
    if d.departed || d.status != 1 {
        return Err(Refusal::Inactive);
    }
    match grant {
        Some(Grant::Role(role)) => Ok(role),
        Some(Grant::NoAccess) => Err(Refusal::Revoked),
        None if d.leads.split(',').any(|x| !x.trim().is_empty()) => Ok(Role::Manager),
        None if d.customer_contact => Ok(Role::Sales),
        None => Err(Refusal::NoRole),
    }
}

/// One member as the admin's page lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterRow {
    /// userid.
    pub user_id: String,
    /// Name.
    pub name: String,
    /// The admin's grant, if any.
    pub grant: Option<Grant>,
    /// What signing in gives them now.
    pub role: Result<Role, Refusal>,
}

/// Every member of the corp with their grant and console role (departed members last).
pub async fn roster(db: &Db, corp_id: &CorpId) -> Result<Vec<RosterRow>, StoreError> {
    const SQL: &str = "SELECT user_id, name, status, departed_at_ms, has_customer_contact, \
        leads_departments FROM staff WHERE corp_id = $1 ORDER BY departed_at_ms IS NOT NULL, user_id";
    type Row = (String, String, i64, Option<i64>, i64, String);
    let rows: Vec<Row> = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp_id.as_str())
        .fetch_all(pool)
        .await)?;
    let grants = grants(db, corp_id).await?;
    Ok(rows
        .into_iter()
        .map(|(user_id, name, status, departed, contact, leads)| {
            let grant = grants.get(&user_id).copied();
            let role = decide(
                &Directory {
                    status,
                    departed: departed.is_some(),
                    customer_contact: contact != 0,
                    leads: &leads,
                },
                grant,
            );
            RosterRow {
                user_id,
                name,
                grant,
                role,
            }
        })
        .collect())
}

/// An admin's grant for the member, if any.
pub async fn granted(
    db: &Db,
    corp_id: &CorpId,
    user_id: &str,
) -> Result<Option<Grant>, StoreError> {
    const SQL: &str = "SELECT role FROM console_member WHERE corp_id = $1 AND user_id = $2";
    let role: Option<String> = on_db!(db, |pool| sqlx::query_scalar(SQL)
        .bind(corp_id.as_str())
        .bind(user_id)
        .fetch_optional(pool)
        .await)?;
    Ok(role.as_deref().and_then(Grant::parse))
}

/// Every grant of the corp: member → grant.
pub async fn grants(
    db: &Db,
    corp_id: &CorpId,
) -> Result<std::collections::HashMap<String, Grant>, StoreError> {
    const SQL: &str = "SELECT user_id, role FROM console_member WHERE corp_id = $1";
    let rows: Vec<(String, String)> = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp_id.as_str())
        .fetch_all(pool)
        .await)?;
    Ok(rows
        .into_iter()
        .filter_map(|(u, r)| Grant::parse(&r).map(|g| (u, g)))
        .collect())
}

/// Sets (`Some`) or removes (`None`, back to the directory's say) the member's grant; audited as
/// `console.role` with the grant before and after, and the member's sessions end. Returns
/// whether anything changed.
pub async fn set_grant(
    db: &Db,
    corp_id: &CorpId,
    user_id: &UserId,
    grant: Option<Grant>,
    actor: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    const UPSERT: &str = "INSERT INTO console_member (corp_id, user_id, role, granted_by, \
        granted_at_ms) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (corp_id, user_id) DO UPDATE \
        SET role = $3, granted_by = $4, granted_at_ms = $5";
    const DELETE: &str = "DELETE FROM console_member WHERE corp_id = $1 AND user_id = $2";
    let before = granted(db, corp_id, user_id.as_str()).await?;
    if before == grant {
        return Ok(false);
    }
    let mut tx = db.begin().await?;
    match grant {
        Some(g) => crate::on_tx!(&mut tx, |conn| sqlx::query(UPSERT)
            .bind(corp_id.as_str())
            .bind(user_id.as_str())
            .bind(g.as_str())
            .bind(actor)
            .bind(now_ms)
            .execute(conn)
            .await
            .map(|_| ()))?,
        None => crate::on_tx!(&mut tx, |conn| sqlx::query(DELETE)
            .bind(corp_id.as_str())
            .bind(user_id.as_str())
            .execute(conn)
            .await
            .map(|_| ()))?,
    }
    super::audit::audit(
        &mut tx,
        corp_id.as_str(),
        actor,
        "console.role",
        user_id.as_str(),
        &serde_json::json!({
            "from": before.map_or("directory", Grant::as_str),
            "to": grant.map_or("directory", Grant::as_str),
        }),
        now_ms,
    )
    .await?;
    tx.commit().await?;
    session::end_all(db, corp_id, Holder::Member(user_id.as_str())).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(status: i64, departed: bool, contact: bool, leads: &str) -> Directory<'_> {
        Directory {
            status,
            departed,
            customer_contact: contact,
            leads,
        }
    }

    #[test]
    fn grants_come_first_then_the_directory_and_only_for_active_members() {
        let leader = member(1, false, true, "2,3");
        assert_eq!(decide(&leader, None), Ok(Role::Manager));
        assert_eq!(decide(&member(1, false, true, ""), None), Ok(Role::Sales));
        assert_eq!(
            decide(&member(1, false, false, ""), None),
            Err(Refusal::NoRole)
        );
        assert_eq!(
            decide(&leader, Some(Grant::Role(Role::Compliance))),
            Ok(Role::Compliance)
        );
        assert_eq!(
            decide(&leader, Some(Grant::NoAccess)),
            Err(Refusal::Revoked)
        );
        let gone = member(1, true, true, "2");
        assert_eq!(
            decide(&gone, Some(Grant::Role(Role::Admin))),
            Err(Refusal::Inactive)
        );
        assert_eq!(
            decide(&member(2, false, true, ""), None),
            Err(Refusal::Inactive)
        );
        for g in ["admin", "compliance", "manager", "sales", "none"] {
            assert_eq!(Grant::parse(g).map(Grant::as_str), Some(g));
        }
        assert_eq!(Grant::parse("root"), None);
    }
}
