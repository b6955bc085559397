//! Every domain error becomes an HTTP status here, and only here, so the same refusal answers the
//! same way from every endpoint:
//!
//! | error | status |
//! |---|---|
//! | `StoreError::NotFound` | 404 |
//! | `QuickReplyError::NotFound` (the folder or snippet in the path) | 404 |
//! | `StoreError::Conflict`, `RecordError::NotFollowed`, `JobError::Conflict`, `TransitionError::Conflict`, `FollowupError::WrongState`, `QuickReplyError::Conflict` | 409 |
//! | `…::Invalid`, `RecordError::Empty`/`NotFound` (a field), `FollowupError::NotFollowed` (the assignee field), an unknown `folder_id` in a quick-reply body | 422 |
//! | `Denied::Unauthenticated` | 401 |
//! | `Denied::Forbidden` | 403 |
//! | `StoreError` (unavailable), `RefreshError::Wecom` | 503 |

use super::{ApiFailure, invalid};
use crate::app::transfers::departures::RefreshError;
use crate::auth::{AccessError, Denied};
use crate::domain::alerts::TransitionError;
use crate::domain::customers::record::RecordError;
use crate::domain::followup::FollowupError;
use crate::domain::quick_replies::{QuickReplyConflict, QuickReplyError};
use crate::domain::transfers::{JobError, PlanError};
use crate::platform::db::StoreError;

impl From<StoreError> for ApiFailure {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::NotFound("记录"),
            StoreError::Conflict(_) => {
                Self::Conflict("与现有记录冲突 / conflicts with an existing record".to_owned())
            }
            e => {
                tracing::warn!(error = %e, cause = ?std::error::Error::source(&e), "API: database error");
                Self::Unavailable("database".to_owned())
            }
        }
    }
}

impl From<Denied> for ApiFailure {
    fn from(d: Denied) -> Self {
        match d {
            Denied::Unauthenticated => Self::Unauthenticated,
            Denied::Forbidden(reason) => Self::Forbidden(reason),
        }
    }
}

impl From<AccessError> for ApiFailure {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::Denied(d) => d.into(),
            AccessError::Store(s) => s.into(),
        }
    }
}

impl From<PlanError> for ApiFailure {
    fn from(e: PlanError) -> Self {
        match e {
            PlanError::Store(s) => s.into(),
            PlanError::Invalid { field, reason } => invalid(field, reason),
        }
    }
}

impl From<JobError> for ApiFailure {
    fn from(e: JobError) -> Self {
        match e {
            JobError::Store(s) => s.into(),
            JobError::Invalid { field, reason } => invalid(field, reason),
            JobError::Conflict(reason) => ApiFailure::Conflict(reason),
        }
    }
}

impl From<RecordError> for ApiFailure {
    fn from(e: RecordError) -> Self {
        match e {
            RecordError::NotFollowed => ApiFailure::Conflict(
                "该成员当前没有跟进此客户 / this staff member does not follow the customer"
                    .to_owned(),
            ),
            RecordError::Empty => invalid("add", "add 和 remove 不能都为空 / nothing to change"),
            RecordError::NotFound => invalid("add", "个人标签不存在 / unknown personal tag"),
            e @ RecordError::TooLong { field, .. } => invalid(field, e.to_string()),
            RecordError::Store(e) => e.into(),
        }
    }
}

impl From<TransitionError> for ApiFailure {
    fn from(e: TransitionError) -> Self {
        match e {
            TransitionError::NotFound => Self::NotFound("告警"),
            TransitionError::Conflict { action, state } => Self::Conflict(format!(
                "状态为 {state} 的告警不能执行 {action} / cannot {action} an alert that is {state}"
            )),
            TransitionError::Store(e) => e.into(),
        }
    }
}

impl From<RefreshError> for ApiFailure {
    fn from(e: RefreshError) -> Self {
        match e {
            RefreshError::Store(e) => e.into(),
            RefreshError::Wecom(reason) => {
                Self::Unavailable(format!("企业微信 get_unassigned_list: {reason}"))
            }
        }
    }
}

/// A follow-up refusal; `what` names the record for a 404 (跟进记录, 提醒, 阶段…). An assignee
/// who does not follow the customer is a field of the request (422), unlike a relation named in
/// the path ([`RecordError::NotFollowed`], 409).
pub(super) fn followup(e: FollowupError, what: &'static str) -> ApiFailure {
    match e {
        FollowupError::Invalid { field, reason } => invalid(field, reason),
        FollowupError::NotFound => ApiFailure::NotFound(what),
        FollowupError::NotFollowed => invalid(
            "assignee",
            "该成员没有跟进此客户 / the assignee does not follow this customer",
        ),
        FollowupError::WrongState(state) => ApiFailure::Conflict(format!(
            "提醒已{}，不能这样操作 / the reminder is {state}",
            match state.as_str() {
                "done" => "完成",
                "cancelled" => "取消",
                _ => "变更",
            }
        )),
        FollowupError::Store(e) => e.into(),
    }
}

/// A quick-reply refusal; `what` names the record of the path for a 404 (分组, 话术). A folder
/// named in the body that does not exist is a field of the request (422, from the domain).
pub(super) fn quick_reply(e: QuickReplyError, what: &'static str) -> ApiFailure {
    match e {
        QuickReplyError::Invalid { field, reason } => invalid(field, reason),
        QuickReplyError::NotFound => ApiFailure::NotFound(what),
        QuickReplyError::Conflict(conflict) => ApiFailure::Conflict(match conflict {
            QuickReplyConflict::DuplicateFolderName => {
                "已有同名分组 / a folder of that name exists".to_owned()
            }
            QuickReplyConflict::DuplicateTitle => {
                "该分组里已有同名话术 / the folder has a snippet of that title".to_owned()
            }
            QuickReplyConflict::FolderNotEmpty { snippets } => format!(
                "分组里还有 {snippets} 条话术：请先移走或删除，或加 ?cascade=true 一并删除 \
                 / the folder still holds {snippets} snippets (?cascade=true deletes them too)"
            ),
        }),
        QuickReplyError::Store(e) => e.into(),
    }
}
