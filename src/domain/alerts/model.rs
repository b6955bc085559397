//! What an alert is: its kinds, states and transitions, what raises it ([`Trigger`], [`Evidence`])
//! and who is told ([`Ctx`]).

use super::*;

/// What raised an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 员工删除客户 (`del_external_contact`, not by transfer).
    StaffDeletedCustomer,
    /// A deletion burst past `mass_deletion_count`.
    MassDeletion,
    /// 客户删除员工 (`del_follow_user`): a notice to the staff member.
    CustomerDeletedStaff,
    /// Found gone by the reconciliation, without any event: treated like a deletion.
    RelationVanished,
    /// A content rule matched a message.
    Content,
    /// The chat archive has not been pulled for too long (WeCom keeps messages ~5 days).
    ArchiveStalled,
}

impl Kind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StaffDeletedCustomer => "staff_deleted_customer",
            Self::MassDeletion => "mass_deletion",
            Self::CustomerDeletedStaff => "customer_deleted_staff",
            Self::RelationVanished => "relation_vanished",
            Self::Content => "content",
            Self::ArchiveStalled => "archive_stalled",
        }
    }

    /// Whether a salesperson who follows the customer may see the alert: only that the customer
    /// left a colleague (a notice meant for staff). Deletions by staff, vanished relations and
    /// content hits are compliance matters, the archive's health is the operators'.
    pub fn shown_to_sales(self) -> bool {
        matches!(self, Self::CustomerDeletedStaff)
    }

    /// Every kind.
    pub const ALL: [Self; 6] = [
        Self::StaffDeletedCustomer,
        Self::MassDeletion,
        Self::CustomerDeletedStaff,
        Self::RelationVanished,
        Self::Content,
        Self::ArchiveStalled,
    ];

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Where an alert is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// New.
    Open,
    /// Someone is on it.
    Acknowledged,
    /// Dealt with.
    Resolved,
    /// Not a real problem.
    FalsePositive,
}

impl State {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Acknowledged => "acknowledged",
            Self::Resolved => "resolved",
            Self::FalsePositive => "false_positive",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Open,
            Self::Acknowledged,
            Self::Resolved,
            Self::FalsePositive,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// A lifecycle step an operator takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// open → acknowledged.
    Acknowledge,
    /// open | acknowledged → resolved.
    Resolve,
    /// open | acknowledged → false_positive.
    FalsePositive,
    /// resolved | false_positive → open.
    Reopen,
}

impl Transition {
    /// The path segment and `alert_event.action`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Acknowledge => "acknowledge",
            Self::Resolve => "resolve",
            Self::FalsePositive => "false_positive",
            Self::Reopen => "reopen",
        }
    }

    pub(super) fn apply(self, from: State) -> Option<State> {
        use State::*;
        match (self, from) {
            (Self::Acknowledge, Open) => Some(Acknowledged),
            (Self::Resolve, Open | Acknowledged) => Some(Resolved),
            (Self::FalsePositive, Open | Acknowledged) => Some(FalsePositive),
            (Self::Reopen, Resolved | FalsePositive) => Some(Open),
            _ => None,
        }
    }
}

/// Why an alert was raised, with what its evidence needs.
#[derive(Debug, Clone)]
pub enum Trigger<'a> {
    /// A deletion by the staff member.
    Deletion,
    /// The customer deleted the staff member.
    CustomerLoss,
    /// The relation vanished (reconciliation).
    Vanished,
    /// A content rule hit.
    Content {
        /// The hit.
        hit: &'a Hit,
        /// The message text the spans point into.
        text: &'a str,
        /// The rule's own recipients, besides the corp's.
        recipients: &'a [String],
    },
    /// No archive pull succeeded for too long.
    ArchiveStalled {
        /// What is wrong (the last error, how long).
        detail: &'a str,
        /// `[archive] operators`, besides the corp's recipients.
        recipients: &'a [String],
    },
}

/// One piece of evidence.
#[derive(Debug, Clone)]
pub struct Evidence<'a> {
    /// The corp.
    pub corp_id: &'a str,
    /// The staff member concerned.
    pub staff_user_id: &'a str,
    /// The customer, when there is one.
    pub external_user_id: Option<&'a str>,
    /// Where it came from, unique per trigger: `inbox:<id>`, `sync:<job>:<user>:<ext>`, …
    pub source_ref: String,
    /// When it happened, epoch ms.
    pub at_ms: i64,
    /// Anything else worth showing (the relation's history, the message's conversation…).
    pub detail: serde_json::Value,
}

/// What [`raise`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Raised {
    /// The alert the evidence is part of (`None`: the evidence was there already).
    pub alert_id: Option<i64>,
    /// A new alert was opened.
    pub created: bool,
    /// The burst became a mass deletion now.
    pub escalated: bool,
}

/// Who gets an alert's messages, and the settings.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    /// `[alerts]`.
    pub settings: &'a AlertSettings,
    /// The corp's configuration (its `alert_recipients`).
    pub corp: &'a CorpConfig,
    /// The external judge of borderline messages, when configured.
    pub judge: Option<&'a crate::platform::judge::Judge>,
}

impl<'a> Ctx<'a> {
    /// Who is told of a corp's alerts and how (`None`: the corp is not configured).
    pub fn of(wecom: &'a crate::platform::wecom::Wecom, corp_id: &str) -> Option<Self> {
        wecom.corp(corp_id).map(|corp| Ctx {
            settings: wecom.alert_settings(),
            corp,
            judge: wecom.judge(),
        })
    }
}
