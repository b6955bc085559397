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
use wecom_sdk::{CorpId, ExternalUserId, UserId};

use crate::auth;
use crate::domain::customers::RelationKey;
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

mod notes;
mod reminders;
mod stages;

pub use notes::*;
pub use reminders::*;
pub use stages::*;

#[cfg(test)]
mod tests {
    use super::stages::parse_stages;
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
