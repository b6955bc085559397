//! Authorization: who is calling ([`Principal`]), what their role lets them do ([`Action`],
//! [`Role::may`]), and which data they reach (a sales principal only its own staff member's
//! customers). The API checks every request here — the router refuses a role an endpoint's action
//! does not allow, the handler checks the data scope — and so will the sidebar and console
//! sessions (WeCom login) later: they produce the same [`Principal`] and go through the same checks.
//!
//! - [`policy`]: roles, actions, principals, scope;
//! - [`api_key`]: the keys API callers present;
//! - [`audit`]: the audit log;
//! - [`session`]: web sessions (the sidebar through WeCom, the console through an account or
//!   WeCom's web login);
//! - [`members`]: which members may use the console, as what;
//! - [`team`]: a manager's team, from the directory;
//! - [`account`]: the console's own accounts.

pub mod account;
pub mod api_key;
pub mod audit;
pub mod members;
pub mod policy;
pub mod session;
pub mod team;

pub use api_key::{ApiKeyInfo, authenticate, create_key, list_keys, revoke_key};
pub use audit::{AuditEntry, audit, audit_entries, note_request_key, with_request_key};
pub use policy::{AccessError, Action, Denied, Principal, Role};

#[cfg(test)]
mod tests {
    use super::api_key::constant_time_eq;
    use super::*;

    fn principal(role: Role, staff: Option<&str>) -> Principal {
        Principal {
            corp_id: wecom_sdk::CorpId::try_from("ww1").unwrap(),
            role,
            staff_user_id: staff.map(|s| wecom_sdk::UserId::try_from(s).unwrap()),
            key_id: Some(7),
            account: None,
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
            Action::ManageQuickReplies,
            Action::ManageRules,
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
        // The quick-reply library: everyone reads it, a salesperson counts a send, only admins
        // change it.
        assert!(sales.require(Action::ReadCustomers).is_ok());
        assert!(compliance.require(Action::ManageQuickReplies).is_err());
        assert!(sales.require(Action::ManageQuickReplies).is_err());
        assert_eq!(Role::who_may(Action::ManageQuickReplies), "admin");
        // The content rules are compliance's to keep, with the admins; never a salesperson's.
        assert!(compliance.require(Action::ManageRules).is_ok());
        assert!(sales.require(Action::ManageRules).is_err());
        assert_eq!(Role::who_may(Action::ManageRules), "admin, compliance");
    }

    #[test]
    fn sales_reach_only_their_own_relations() {
        let user = |s: &str| wecom_sdk::UserId::try_from(s).unwrap();
        let sales = principal(Role::Sales, Some("zhangsan"));
        assert!(
            sales
                .check_relation(Action::EditCustomers, &user("zhangsan"))
                .is_ok()
        );
        assert!(
            sales
                .check_relation(Action::EditCustomers, &user("lisi"))
                .is_err()
        );
        // A sales key without a staff member reaches nobody.
        let orphan = principal(Role::Sales, None);
        assert!(
            orphan
                .check_relation(Action::EditCustomers, &user("zhangsan"))
                .is_err()
        );
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
