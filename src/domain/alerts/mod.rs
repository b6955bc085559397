//! Compliance alerts: a staff member deleting customers (and many at once), customers leaving,
//! relations that vanished without an event, and content rules on messages from any source.
//!
//! Everything arrives as [`Trigger`] + evidence and goes through [`raise`]: one transaction that
//! stores the evidence once (a replayed event adds nothing), joins it to the open alert of the same
//! burst (staff member + trigger [+ rule] while `burst_window_secs` has not passed since its last
//! evidence) or opens a new one, escalates a deletion burst to a mass deletion past
//! `mass_deletion_count`, and writes the notifications into the outbox in the same transaction —
//! so an alert is never raised without its message, nor sent twice.
//!
//! Lifecycle: open → acknowledged → resolved | false_positive, and reopen; every change is kept
//! in `alert_event` with who, when and a comment.

use serde::Serialize;

use crate::domain::scan::{Hit, Severity};
use crate::pipeline::outbox::{self, Intent, Message};
use crate::platform::config::{AlertSettings, CorpConfig};
use crate::platform::db::{Db, StoreError, Tx};
use crate::{on_db, on_tx};

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

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::StaffDeletedCustomer,
            Self::MassDeletion,
            Self::CustomerDeletedStaff,
            Self::RelationVanished,
            Self::Content,
            Self::ArchiveStalled,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
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

    fn apply(self, from: State) -> Option<State> {
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
}

impl<'a> Ctx<'a> {
    /// Who is told of a corp's alerts and how (`None`: the corp is not configured).
    pub fn of(wecom: &'a crate::platform::wecom::Wecom, corp_id: &str) -> Option<Self> {
        wecom.corp(corp_id).map(|corp| Ctx {
            settings: wecom.alert_settings(),
            corp,
        })
    }
}

struct Shape {
    kind: Kind,
    severity: Severity,
    category: Option<String>,
    rule_id: Option<String>,
    trigger_key: String,
    burst_key: String,
    text: Option<String>,
    spans: Vec<(usize, usize)>,
}

fn shape(trigger: &Trigger<'_>, staff: &str) -> Shape {
    let plain = |kind, severity, key: &str| Shape {
        kind,
        severity,
        category: None,
        rule_id: None,
        trigger_key: key.to_owned(),
        burst_key: format!("{key}:{staff}"),
        text: None,
        spans: Vec::new(),
    };
    match trigger {
        Trigger::Deletion => plain(Kind::StaffDeletedCustomer, Severity::High, "deletion"),
        Trigger::CustomerLoss => plain(Kind::CustomerDeletedStaff, Severity::Low, "loss"),
        Trigger::Vanished => plain(Kind::RelationVanished, Severity::High, "vanished"),
        Trigger::Content { hit, text, .. } => Shape {
            kind: Kind::Content,
            severity: hit.severity,
            category: Some(hit.category.clone()),
            rule_id: Some(hit.rule_id.clone()),
            trigger_key: format!("content:{}", hit.rule_id),
            burst_key: format!("content:{}:{staff}", hit.rule_id),
            text: Some((*text).to_owned()),
            spans: hit.spans.clone(),
        },
        Trigger::ArchiveStalled { detail, .. } => Shape {
            text: Some((*detail).to_owned()),
            ..plain(Kind::ArchiveStalled, Severity::Critical, "archive_stalled")
        },
    }
}

/// Chinese names of the built-in categories (others are shown as they are).
pub fn category_label(category: &str) -> &str {
    match category {
        "private_payment" => "私下收款",
        "off_book_order" => "飞单/私单",
        "contact_leak" => "私加联系方式",
        "kickback" => "回扣",
        "poaching" => "挖客户",
        other => other,
    }
}

async fn display_name(tx: &mut Tx, sql: &str, corp: &str, id: &str) -> Result<String, StoreError> {
    let name: Option<String> = on_tx!(tx, |conn| sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(corp)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await)?;
    Ok(name
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| id.to_owned()))
}

async fn staff_name(tx: &mut Tx, corp: &str, user: &str) -> Result<String, StoreError> {
    display_name(
        tx,
        "SELECT name FROM staff WHERE corp_id = $1 AND user_id = $2",
        corp,
        user,
    )
    .await
}

async fn customer_name(tx: &mut Tx, corp: &str, ext: &str) -> Result<String, StoreError> {
    display_name(
        tx,
        "SELECT name FROM customer WHERE corp_id = $1 AND external_user_id = $2",
        corp,
        ext,
    )
    .await
}

/// A relation ended: a deletion by the staff member or a vanished relation raises an alert, a
/// customer leaving a notice; a transfer nothing. Reads the relation (its status decides, so a
/// retry after a crash still raises it) and attaches its history. Once per relation end.
pub async fn relation_ended(
    db: &Db,
    wecom: &crate::platform::wecom::Wecom,
    corp: &str,
    user: &str,
    ext: &str,
    source: &str,
    now_ms: i64,
) -> Result<Raised, StoreError> {
    let Some(ctx) = Ctx::of(wecom, corp) else {
        return Ok(Raised::default());
    };
    let Some(relation) = crate::domain::customers::get_relation(db, corp, user, ext).await? else {
        return Ok(Raised::default());
    };
    let trigger = match relation.status.as_str() {
        "deleted_by_staff" => Trigger::Deletion,
        "deleted_by_customer" => Trigger::CustomerLoss,
        "vanished" => Trigger::Vanished,
        _ => return Ok(Raised::default()),
    };
    let at_ms = relation.ended_at_ms.unwrap_or(now_ms);
    let history = crate::domain::customers::relation_history(db, corp, user, ext).await?;
    // The last archived messages of the pair (references; their content is read, and audited,
    // through the archive API the link points to).
    let last_messages = crate::domain::archive::read::last_of_pair(db, corp, user, ext, 20).await?;
    let evidence = Evidence {
        corp_id: corp,
        staff_user_id: user,
        external_user_id: Some(ext),
        source_ref: format!("relation:{user}:{ext}:{at_ms}"),
        at_ms,
        detail: serde_json::json!({
            "source": source,
            "status": relation.status,
            "added_at_ms": relation.added_at_ms,
            "ended_at_ms": relation.ended_at_ms,
            "remark": relation.remark,
            "history": history,
            "last_messages": last_messages,
            "messages_url": format!(
                "{}/console/archive?staff_id={user}&external_userid={ext}",
                ctx.settings.console_url
            ),
            "messages_api": format!(
                "/api/v1/archive/messages?staff_id={user}&external_userid={ext}"
            ),
        }),
    };
    raise(db, ctx, &trigger, &evidence, now_ms).await
}

/// One message for the content rules, from any source (an app message, an archived chat message,
/// a file).
#[derive(Debug, Clone)]
pub struct Scanned<'a> {
    /// The corp.
    pub corp_id: &'a str,
    /// The conversation (`app:<agentid>:<userid>`, a chat room id, `single:<a>:<b>`…): the
    /// previous message of the same sender in it completes a phrase split over two messages.
    pub conversation: String,
    /// The sender's id (userid or external_userid).
    pub sender_id: &'a str,
    /// Staff member or customer.
    pub sender: crate::domain::scan::Sender,
    /// The staff member the alert concerns (the sender, or the staff member in the chat).
    pub staff_user_id: &'a str,
    /// The customer in the conversation, when known.
    pub external_user_id: Option<&'a str>,
    /// The text (may be empty for non-text messages).
    pub text: &'a str,
    /// WeCom's `msgtype`.
    pub msg_type: Option<&'a str>,
    /// Unique id of the message: `inbox:<id>`, `archive:<msgid>`.
    pub source_ref: String,
    /// When it was sent, epoch ms.
    pub at_ms: i64,
}

impl<'a> Scanned<'a> {
    /// A text a staff member sent to app `agent_id` (`source_ref`: its inbox row).
    pub fn app_text(
        corp_id: &'a str,
        agent_id: &str,
        from: &'a str,
        text: &'a str,
        source_ref: String,
        at_ms: i64,
    ) -> Self {
        Self {
            corp_id,
            conversation: format!("app:{agent_id}:{from}"),
            sender_id: from,
            sender: crate::domain::scan::Sender::Staff,
            staff_user_id: from,
            external_user_id: None,
            text,
            msg_type: Some("text"),
            source_ref,
            at_ms,
        }
    }
}

/// Scans one message and raises an alert per rule hit in scope; the sender's previous message in
/// the conversation (kept in `scan_window`) completes a phrase split over two messages.
pub async fn scan_message(
    db: &Db,
    ctx: Ctx<'_>,
    library: &crate::domain::scan::RuleLibrary,
    m: &Scanned<'_>,
    now_ms: i64,
) -> Result<Vec<Raised>, StoreError> {
    let prev = window_prev(db, ctx, m).await?;
    let result = scan_text(library, m, prev.as_deref());
    if let Some(tail) = window_tail(m) {
        let mut tx = db.begin().await?;
        keep_window(
            &mut tx,
            m.corp_id,
            &m.conversation,
            m.sender_id,
            &tail,
            m.at_ms,
        )
        .await?;
        tx.commit().await?;
    }
    raise_hits(db, ctx, library, m, prev.as_deref(), &result, now_ms).await
}

/// The sender's previous message in the conversation, when recent enough to count.
pub async fn window_prev(
    db: &Db,
    ctx: Ctx<'_>,
    m: &Scanned<'_>,
) -> Result<Option<String>, StoreError> {
    let prev = window_entry(db, m.corp_id, &m.conversation, m.sender_id).await?;
    Ok(prev.and_then(|(text, at)| window_counts(ctx, m, at).then_some(text)))
}

/// The sender's last remembered message in the conversation and when it was sent.
pub async fn window_entry(
    db: &Db,
    corp_id: &str,
    conversation: &str,
    sender: &str,
) -> Result<Option<(String, i64)>, StoreError> {
    const PREV: &str = "SELECT text, at_ms FROM scan_window WHERE corp_id = $1 AND conversation = $2 \
        AND sender = $3";
    Ok(on_db!(db, |pool| sqlx::query_as(PREV)
        .bind(corp_id)
        .bind(conversation)
        .bind(sender)
        .fetch_optional(pool)
        .await)?)
}

/// Whether a previous message sent at `at_ms` still counts for `m`.
pub fn window_counts(ctx: Ctx<'_>, m: &Scanned<'_>, at_ms: i64) -> bool {
    let window_ms = i64::try_from(ctx.settings.message_window_secs)
        .unwrap_or(i64::MAX / 2)
        .saturating_mul(1000);
    at_ms <= m.at_ms && at_ms >= m.at_ms.saturating_sub(window_ms)
}

/// The pure scan of `m` (with `prev`), counted in `/metrics`.
pub fn scan_text(
    library: &crate::domain::scan::RuleLibrary,
    m: &Scanned<'_>,
    prev: Option<&str>,
) -> crate::domain::scan::ScanResult {
    let input = crate::domain::scan::ScanInput {
        text: m.text,
        prev,
        sender: m.sender,
        msg_type: m.msg_type,
    };
    metrics::counter!("scrm_scan_messages_total").increment(1);
    library.scan(&input)
}

/// What of `m` the window remembers (its last characters); `None` for a message without text.
pub fn window_tail(m: &Scanned<'_>) -> Option<String> {
    /// Only this much of a message is remembered for the window.
    const KEPT_CHARS: usize = 200;
    if m.text.is_empty() {
        return None;
    }
    let n = m.text.chars().count();
    Some(m.text.chars().skip(n.saturating_sub(KEPT_CHARS)).collect())
}

/// Remembers `tail` as the sender's latest message in the conversation (an older one never
/// replaces a newer one).
pub async fn keep_window(
    tx: &mut Tx,
    corp_id: &str,
    conversation: &str,
    sender: &str,
    tail: &str,
    at_ms: i64,
) -> Result<(), StoreError> {
    const KEEP: &str = "INSERT INTO scan_window (corp_id, conversation, sender, text, at_ms) \
        VALUES ($1, $2, $3, $4, $5) ON CONFLICT (corp_id, conversation, sender) DO UPDATE \
        SET text = excluded.text, at_ms = excluded.at_ms WHERE scan_window.at_ms <= excluded.at_ms";
    on_tx!(tx, |conn| sqlx::query(KEEP)
        .bind(corp_id)
        .bind(conversation)
        .bind(sender)
        .bind(tail)
        .bind(at_ms)
        .execute(&mut *conn)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// Raises an alert for each hit of `result` whose rule applies to `m`.
pub async fn raise_hits(
    db: &Db,
    ctx: Ctx<'_>,
    library: &crate::domain::scan::RuleLibrary,
    m: &Scanned<'_>,
    prev: Option<&str>,
    result: &crate::domain::scan::ScanResult,
    now_ms: i64,
) -> Result<Vec<Raised>, StoreError> {
    let mut raised = Vec::new();
    for hit in &result.hits {
        let Some(rule) = library.rule(&hit.rule_id) else {
            continue;
        };
        if !in_scope(db, rule, m).await? {
            continue;
        }
        metrics::counter!("scrm_scan_hits_total", "category" => hit.category.clone()).increment(1);
        let evidence = Evidence {
            corp_id: m.corp_id,
            staff_user_id: m.staff_user_id,
            external_user_id: m.external_user_id,
            source_ref: m.source_ref.clone(),
            at_ms: m.at_ms,
            detail: serde_json::json!({
                "conversation": m.conversation,
                "sender": m.sender_id,
                "msg_type": m.msg_type,
                "matched": hit.matched,
                "across_messages": hit.across_messages,
                "prev": if hit.across_messages { prev } else { None },
            }),
        };
        let trigger = Trigger::Content {
            hit,
            text: m.text,
            recipients: &rule.recipients,
        };
        raised.push(raise(db, ctx, &trigger, &evidence, now_ms).await?);
    }
    Ok(raised)
}

/// Whether `rule` applies to the message: its staff members, departments and customer tags (each
/// list, when not empty, must match).
async fn in_scope(
    db: &Db,
    rule: &crate::domain::scan::library::Rule,
    m: &Scanned<'_>,
) -> Result<bool, StoreError> {
    const DEPARTMENTS: &str = "SELECT departments FROM staff WHERE corp_id = $1 AND user_id = $2";
    if !rule.staff.is_empty() && !rule.staff.iter().any(|s| s == m.staff_user_id) {
        return Ok(false);
    }
    if !rule.departments.is_empty() {
        let departments: Option<String> = on_db!(db, |pool| sqlx::query_scalar(DEPARTMENTS)
            .bind(m.corp_id)
            .bind(m.staff_user_id)
            .fetch_optional(pool)
            .await)?;
        let departments = departments.unwrap_or_default();
        if !split_list(&departments).any(|d| rule.departments.iter().any(|r| r == d)) {
            return Ok(false);
        }
    }
    if !rule.customer_tags.is_empty() {
        let Some(ext) = m.external_user_id else {
            return Ok(false);
        };
        let relation =
            crate::domain::customers::get_relation(db, m.corp_id, m.staff_user_id, ext).await?;
        let tags = relation.map(|r| r.tags()).unwrap_or_default();
        if !tags.iter().any(|t| rule.customer_tags.contains(t)) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Stores `evidence` for `trigger`, joining or opening an alert, and queues its notifications —
/// all in one transaction. Idempotent per (`source_ref`, trigger).
pub async fn raise(
    db: &Db,
    ctx: Ctx<'_>,
    trigger: &Trigger<'_>,
    evidence: &Evidence<'_>,
    now_ms: i64,
) -> Result<Raised, StoreError> {
    const SEEN: &str = "SELECT COUNT(*) FROM alert_evidence WHERE corp_id = $1 AND source_ref = $2 \
        AND trigger_key = $3";
    // A burst ends when its window has passed or the alert was closed.
    const CLOSE_BURST: &str = "UPDATE alert SET burst_key = NULL WHERE corp_id = $1 AND burst_key = $2 \
        AND (last_at_ms < $3 OR state IN ('resolved', 'false_positive'))";
    const OPEN: &str = "INSERT INTO alert (corp_id, kind, severity, category, rule_id, staff_user_id, \
        external_user_id, title, state, burst_key, evidence_count, first_at_ms, last_at_ms, \
        created_at_ms, updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'open', $9, 0, $10, $10, \
        $11, $11) ON CONFLICT (corp_id, burst_key) DO NOTHING RETURNING id";
    const BURST: &str = "SELECT id FROM alert WHERE corp_id = $1 AND burst_key = $2";
    const ADD: &str = "INSERT INTO alert_evidence (alert_id, corp_id, source_ref, trigger_key, \
        external_user_id, text, spans, detail, at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
        ON CONFLICT (corp_id, source_ref, trigger_key) DO NOTHING";
    const COUNT: &str = "UPDATE alert SET evidence_count = evidence_count + 1, \
        last_at_ms = CASE WHEN last_at_ms < $2 THEN $2 ELSE last_at_ms END, updated_at_ms = $3 \
        WHERE id = $1 RETURNING kind";
    let s = shape(trigger, evidence.staff_user_id);
    let corp = evidence.corp_id;
    let mut tx = db.begin().await?;
    let seen: i64 = on_tx!(&mut tx, |conn| sqlx::query_scalar(SEEN)
        .bind(corp)
        .bind(&evidence.source_ref)
        .bind(&s.trigger_key)
        .fetch_one(&mut *conn)
        .await)?;
    if seen > 0 {
        return Ok(Raised::default());
    }
    let window_ms = i64::try_from(ctx.settings.burst_window_secs)
        .unwrap_or(i64::MAX / 2)
        .saturating_mul(1000);
    on_tx!(&mut tx, |conn| sqlx::query(CLOSE_BURST)
        .bind(corp)
        .bind(&s.burst_key)
        .bind(evidence.at_ms.saturating_sub(window_ms))
        .execute(&mut *conn)
        .await
        .map(|_| ()))?;
    let staff = staff_name(&mut tx, corp, evidence.staff_user_id).await?;
    let customer = match evidence.external_user_id {
        Some(ext) => Some(customer_name(&mut tx, corp, ext).await?),
        None => None,
    };
    let title = title(&s, &staff, customer.as_deref());
    let opened: Option<i64> = on_tx!(&mut tx, |conn| sqlx::query_scalar(OPEN)
        .bind(corp)
        .bind(s.kind.as_str())
        .bind(s.severity.as_str())
        .bind(&s.category)
        .bind(&s.rule_id)
        .bind(evidence.staff_user_id)
        .bind(evidence.external_user_id)
        .bind(&title)
        .bind(&s.burst_key)
        .bind(evidence.at_ms)
        .bind(now_ms)
        .fetch_optional(&mut *conn)
        .await)?;
    let (alert_id, created) = match opened {
        Some(id) => (id, true),
        None => {
            let id: i64 = on_tx!(&mut tx, |conn| sqlx::query_scalar(BURST)
                .bind(corp)
                .bind(&s.burst_key)
                .fetch_one(&mut *conn)
                .await)?;
            (id, false)
        }
    };
    let spans = serde_json::to_string(&s.spans).unwrap_or_else(|_| "[]".to_owned());
    on_tx!(&mut tx, |conn| sqlx::query(ADD)
        .bind(alert_id)
        .bind(corp)
        .bind(&evidence.source_ref)
        .bind(&s.trigger_key)
        .bind(evidence.external_user_id)
        .bind(&s.text)
        .bind(&spans)
        .bind(evidence.detail.to_string())
        .bind(evidence.at_ms)
        .execute(&mut *conn)
        .await
        .map(|_| ()))?;
    let kind: String = on_tx!(&mut tx, |conn| sqlx::query_scalar(COUNT)
        .bind(alert_id)
        .bind(evidence.at_ms)
        .bind(now_ms)
        .fetch_one(&mut *conn)
        .await)?;
    let mut raised = Raised {
        alert_id: Some(alert_id),
        created,
        escalated: false,
    };
    if created {
        history(
            &mut tx,
            corp,
            alert_id,
            "system",
            "created",
            None,
            Some(State::Open),
            "",
            now_ms,
        )
        .await?;
        let card = card(
            ctx.settings,
            alert_id,
            &title,
            &s,
            evidence,
            &staff,
            customer.as_deref(),
        );
        let reason = "created";
        let mut to = recipients(&mut tx, ctx, s.kind, evidence.staff_user_id).await?;
        if let Trigger::Content { recipients, .. } | Trigger::ArchiveStalled { recipients, .. } =
            trigger
        {
            to.extend(
                recipients
                    .iter()
                    .filter(|r| !to.contains(r))
                    .cloned()
                    .collect::<Vec<_>>(),
            );
        }
        notify(&mut tx, corp, alert_id, reason, &to, &card, now_ms).await?;
    }
    if s.kind == Kind::StaffDeletedCustomer && kind == Kind::StaffDeletedCustomer.as_str() {
        raised.escalated = escalate(&mut tx, ctx, alert_id, evidence, &staff, now_ms).await?;
    }
    tx.commit().await?;
    outbox::notify();
    Ok(raised)
}

fn title(s: &Shape, staff: &str, customer: Option<&str>) -> String {
    let customer = customer.unwrap_or("未知客户");
    match s.kind {
        Kind::StaffDeletedCustomer => format!("员工 {staff} 删除了客户 {customer}"),
        Kind::MassDeletion => format!("员工 {staff} 批量删除客户"),
        Kind::CustomerDeletedStaff => format!("客户 {customer} 删除了员工 {staff}"),
        Kind::RelationVanished => {
            format!("员工 {staff} 与客户 {customer} 的好友关系消失（未收到删除事件）")
        }
        Kind::Content => format!(
            "{staff} 的消息触发「{}」规则 {}",
            category_label(s.category.as_deref().unwrap_or("")),
            s.rule_id.as_deref().unwrap_or("")
        ),
        Kind::ArchiveStalled => "会话存档拉取停滞，消息可能丢失".to_owned(),
    }
}

/// The text card of a new alert: what, who, when, an excerpt, and the link to it.
fn card(
    settings: &AlertSettings,
    alert_id: i64,
    title: &str,
    s: &Shape,
    evidence: &Evidence<'_>,
    staff: &str,
    customer: Option<&str>,
) -> Message {
    let when = chrono::FixedOffset::east_opt(8 * 3600)
        .zip(chrono::DateTime::from_timestamp_millis(evidence.at_ms))
        .map(|(tz, t)| t.with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default();
    let mut description =
        format!("<div class=\"gray\">{when}</div><div class=\"normal\">员工：{staff}</div>");
    if let Some(c) = customer {
        description.push_str(&format!("<div class=\"normal\">客户：{c}</div>"));
    }
    if let Some(text) = &s.text {
        let excerpt: String = text.chars().take(60).collect();
        description.push_str(&format!("<div class=\"highlight\">{excerpt}</div>"));
    }
    description.push_str(&format!(
        "<div class=\"gray\">严重程度：{}</div>",
        severity_label(s.severity)
    ));
    Message::text_card(
        title,
        &description,
        format!("{}/console/alerts/{alert_id}", settings.console_url),
    )
}

fn severity_label(s: Severity) -> &'static str {
    match s {
        Severity::Low => "低",
        Severity::Medium => "中",
        Severity::High => "高",
        Severity::Critical => "紧急",
    }
}

/// Who hears of an alert of `kind` about `staff`: the corp's compliance recipients and the staff
/// member's manager; for a customer loss, the staff member themself.
async fn recipients(
    tx: &mut Tx,
    ctx: Ctx<'_>,
    kind: Kind,
    staff: &str,
) -> Result<Vec<String>, StoreError> {
    let mut to: Vec<String> = Vec::new();
    if kind == Kind::CustomerDeletedStaff {
        if ctx.settings.notify_customer_loss {
            to.push(staff.to_owned());
        }
        return Ok(to);
    }
    to.extend(ctx.corp.alert_recipients.iter().cloned());
    if ctx.settings.notify_manager {
        to.extend(managers(tx, &ctx.corp.corp_id.to_string(), staff).await?);
    }
    to.retain(|u| u != staff);
    let mut seen = std::collections::HashSet::new();
    to.retain(|u| seen.insert(u.clone()));
    Ok(to)
}

/// The staff member's managers: their direct leaders, else the leaders of their main department.
pub async fn managers(tx: &mut Tx, corp: &str, staff: &str) -> Result<Vec<String>, StoreError> {
    const ME: &str =
        "SELECT direct_leaders, main_department FROM staff WHERE corp_id = $1 AND user_id = $2";
    const LEADERS: &str = "SELECT user_id, leads_departments FROM staff WHERE corp_id = $1 \
        AND leads_departments <> '' AND user_id <> $2";
    let me: Option<(String, Option<i64>)> = on_tx!(tx, |conn| sqlx::query_as(ME)
        .bind(corp)
        .bind(staff)
        .fetch_optional(&mut *conn)
        .await)?;
    let Some((direct, main)) = me else {
        return Ok(Vec::new());
    };
    let direct: Vec<String> = split_list(&direct).map(str::to_owned).collect();
    if !direct.is_empty() {
        return Ok(direct);
    }
    let Some(main) = main else {
        return Ok(Vec::new());
    };
    let leaders: Vec<(String, String)> = on_tx!(tx, |conn| sqlx::query_as(LEADERS)
        .bind(corp)
        .bind(staff)
        .fetch_all(&mut *conn)
        .await)?;
    let main = main.to_string();
    Ok(leaders
        .into_iter()
        .filter(|(_, led)| split_list(led).any(|d| d == main))
        .map(|(user, _)| user)
        .collect())
}

fn split_list(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|x| !x.is_empty())
}

/// Queues one app message of `message` to `to` for `alert_id` (`reason`: created, escalated),
/// skipping recipients who left the company, and records each recipient's delivery.
async fn notify(
    tx: &mut Tx,
    corp: &str,
    alert_id: i64,
    reason: &str,
    to: &[String],
    message: &Message,
    now_ms: i64,
) -> Result<(), StoreError> {
    const DEPARTED: &str = "SELECT COUNT(*) FROM staff WHERE corp_id = $1 AND user_id = $2 \
        AND (departed_at_ms IS NOT NULL OR status = 5)";
    const RECORD: &str = "INSERT INTO alert_delivery (alert_id, corp_id, recipient, reason, outbox_id, \
        skipped, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) \
        ON CONFLICT (alert_id, reason, recipient) DO NOTHING";
    let mut reachable = Vec::new();
    let mut skipped = Vec::new();
    for user in to {
        let gone: i64 = on_tx!(tx, |conn| sqlx::query_scalar(DEPARTED)
            .bind(corp)
            .bind(user)
            .fetch_one(&mut *conn)
            .await)?;
        if gone > 0 {
            skipped.push(user.clone());
        } else {
            reachable.push(user.clone());
        }
    }
    let outbox_id = if reachable.is_empty() {
        None
    } else {
        let intent = Intent::MessageSend {
            to_users: reachable.clone(),
            message: message.clone(),
        };
        let key = format!("alert:{alert_id}:{reason}");
        Some(outbox::enqueue(tx, corp, &intent, "system", Some(&key), now_ms).await?)
    };
    for (user, skip) in reachable.iter().map(|u| (u, None)).chain(
        skipped
            .iter()
            .map(|u| (u, Some("已离职，未发送 / left the company"))),
    ) {
        on_tx!(tx, |conn| sqlx::query(RECORD)
            .bind(alert_id)
            .bind(corp)
            .bind(user)
            .bind(reason)
            .bind(if skip.is_none() { outbox_id } else { None })
            .bind(skip)
            .bind(now_ms)
            .execute(&mut *conn)
            .await
            .map(|_| ()))?;
    }
    Ok(())
}

/// Turns a deletion burst into a mass deletion once more than `mass_deletion_count` of its
/// deletions fall within `mass_deletion_window_secs`: severity critical, and one more message.
async fn escalate(
    tx: &mut Tx,
    ctx: Ctx<'_>,
    alert_id: i64,
    evidence: &Evidence<'_>,
    staff: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    const RECENT: &str = "SELECT COUNT(*) FROM alert_evidence WHERE alert_id = $1 AND at_ms >= $2";
    const SET: &str = "UPDATE alert SET kind = 'mass_deletion', severity = 'critical', title = $2, \
        updated_at_ms = $3 WHERE id = $1 AND kind = 'staff_deleted_customer'";
    let window_ms = i64::try_from(ctx.settings.mass_deletion_window_secs)
        .unwrap_or(i64::MAX / 2)
        .saturating_mul(1000);
    let recent: i64 = on_tx!(tx, |conn| sqlx::query_scalar(RECENT)
        .bind(alert_id)
        .bind(evidence.at_ms.saturating_sub(window_ms))
        .fetch_one(&mut *conn)
        .await)?;
    if recent <= i64::from(ctx.settings.mass_deletion_count) {
        return Ok(false);
    }
    let minutes = ctx.settings.mass_deletion_window_secs / 60;
    let title = format!("员工 {staff} 在 {minutes} 分钟内删除了 {recent} 位客户");
    let n = on_tx!(tx, |conn| sqlx::query(SET)
        .bind(alert_id)
        .bind(&title)
        .bind(now_ms)
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected()))?;
    if n == 0 {
        return Ok(false);
    }
    history(
        tx,
        evidence.corp_id,
        alert_id,
        "system",
        "escalated",
        None,
        None,
        &format!("{recent} deletions"),
        now_ms,
    )
    .await?;
    let description = format!(
        "<div class=\"highlight\">批量删除客户，请立即核查</div><div class=\"gray\">严重程度：{}</div>",
        severity_label(Severity::Critical)
    );
    let message = Message::text_card(
        &title,
        &description,
        format!("{}/console/alerts/{alert_id}", ctx.settings.console_url),
    );
    let to = recipients(tx, ctx, Kind::MassDeletion, evidence.staff_user_id).await?;
    notify(
        tx,
        evidence.corp_id,
        alert_id,
        "escalated",
        &to,
        &message,
        now_ms,
    )
    .await?;
    Ok(true)
}

#[allow(clippy::too_many_arguments, reason = "one row of alert_event")]
async fn history(
    tx: &mut Tx,
    corp: &str,
    alert_id: i64,
    actor: &str,
    action: &str,
    from: Option<State>,
    to: Option<State>,
    comment: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    const SQL: &str = "INSERT INTO alert_event (alert_id, corp_id, actor, action, from_state, to_state, \
        comment, at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
    on_tx!(tx, |conn| sqlx::query(SQL)
        .bind(alert_id)
        .bind(corp)
        .bind(actor)
        .bind(action)
        .bind(from.map(State::as_str))
        .bind(to.map(State::as_str))
        .bind(comment)
        .bind(now_ms)
        .execute(&mut *conn)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// An alert as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Alert {
    /// Id.
    pub id: i64,
    /// Corp.
    pub corp_id: String,
    /// See [`Kind`].
    pub kind: String,
    /// `low` … `critical`.
    pub severity: String,
    /// Content category.
    pub category: Option<String>,
    /// Content rule.
    pub rule_id: Option<String>,
    /// The staff member concerned.
    pub staff_user_id: String,
    /// The (first) customer concerned.
    pub external_user_id: Option<String>,
    /// What happened, in Chinese.
    pub title: String,
    /// See [`State`].
    pub state: String,
    /// Pieces of evidence.
    pub evidence_count: i64,
    /// First evidence, epoch ms.
    pub first_at_ms: i64,
    /// Last evidence, epoch ms.
    pub last_at_ms: i64,
    /// Raised, epoch ms.
    pub created_at_ms: i64,
    /// Last change, epoch ms.
    pub updated_at_ms: i64,
}

const COLUMNS: &str = "id, corp_id, kind, severity, category, rule_id, staff_user_id, \
    external_user_id, title, state, evidence_count, first_at_ms, last_at_ms, created_at_ms, \
    updated_at_ms";

/// Which alerts [`list`] returns (all `None`: every alert of the corp), newest first.
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    /// Only this state.
    pub state: Option<String>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only this category.
    pub category: Option<String>,
    /// Only this severity.
    pub severity: Option<String>,
    /// Only about this staff member.
    pub staff_user_id: Option<String>,
    /// Only raised at or after this, epoch ms.
    pub since_ms: Option<i64>,
    /// Ids below this (paging).
    pub before_id: Option<i64>,
    /// At most this many (1–500).
    pub limit: i64,
}

/// Alerts of `corp` matching `f`.
pub async fn list(db: &Db, corp: &str, f: &AlertFilter) -> Result<Vec<Alert>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM alert WHERE corp_id = $1 AND ($2 IS NULL OR state = $2) \
         AND ($3 IS NULL OR kind = $3) AND ($4 IS NULL OR category = $4) \
         AND ($5 IS NULL OR severity = $5) AND ($6 IS NULL OR staff_user_id = $6) \
         AND ($7 IS NULL OR created_at_ms >= $7) AND ($8 IS NULL OR id < $8) \
         ORDER BY id DESC LIMIT $9"
    );
    let rows = on_db!(db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
        .bind(corp)
        .bind(f.state.as_deref())
        .bind(f.kind.as_deref())
        .bind(f.category.as_deref())
        .bind(f.severity.as_deref())
        .bind(f.staff_user_id.as_deref())
        .bind(f.since_ms)
        .bind(f.before_id)
        .bind(f.limit.clamp(1, 500))
        .fetch_all(pool)
        .await)?;
    Ok(rows)
}

/// One alert of `corp`.
pub async fn get(db: &Db, corp: &str, id: i64) -> Result<Option<Alert>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM alert WHERE corp_id = $1 AND id = $2");
    let row = on_db!(db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
        .bind(corp)
        .bind(id)
        .fetch_optional(pool)
        .await)?;
    Ok(row)
}

/// A piece of evidence as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct EvidenceRow {
    /// Id.
    pub id: i64,
    /// Where it came from.
    pub source_ref: String,
    /// The trigger.
    pub trigger_key: String,
    /// The customer.
    pub external_user_id: Option<String>,
    /// The message text.
    pub text: Option<String>,
    /// Hit spans in `text` (chars), JSON.
    pub spans: String,
    /// More, JSON.
    pub detail: String,
    /// When, epoch ms.
    pub at_ms: i64,
}

/// A lifecycle entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct HistoryRow {
    /// Who.
    pub actor: String,
    /// created, escalated, acknowledge, resolve, false_positive, reopen.
    pub action: String,
    /// From.
    pub from_state: Option<String>,
    /// To.
    pub to_state: Option<String>,
    /// Why.
    pub comment: String,
    /// When, epoch ms.
    pub at_ms: i64,
}

/// A notification and its delivery state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct DeliveryRow {
    /// Who.
    pub recipient: String,
    /// created, escalated.
    pub reason: String,
    /// The outbox item.
    pub outbox_id: Option<i64>,
    /// Why it was not sent.
    pub skipped: Option<String>,
    /// The outbox item's state (pending, done, dead).
    pub state: Option<String>,
    /// The outbox item's last error.
    pub last_error: Option<String>,
}

/// Evidence, history and deliveries of one alert.
pub async fn details(
    db: &Db,
    id: i64,
) -> Result<(Vec<EvidenceRow>, Vec<HistoryRow>, Vec<DeliveryRow>), StoreError> {
    const EVIDENCE: &str = "SELECT id, source_ref, trigger_key, external_user_id, text, spans, detail, \
        at_ms FROM alert_evidence WHERE alert_id = $1 ORDER BY id LIMIT 1000";
    const HISTORY: &str = "SELECT actor, action, from_state, to_state, comment, at_ms FROM alert_event \
        WHERE alert_id = $1 ORDER BY id";
    const DELIVERIES: &str = "SELECT d.recipient, d.reason, d.outbox_id, d.skipped, o.state, \
        o.last_error FROM alert_delivery d LEFT JOIN outbox o ON o.id = d.outbox_id \
        WHERE d.alert_id = $1 ORDER BY d.id";
    let evidence = on_db!(db, |pool| sqlx::query_as(EVIDENCE)
        .bind(id)
        .fetch_all(pool)
        .await)?;
    let history = on_db!(db, |pool| sqlx::query_as(HISTORY)
        .bind(id)
        .fetch_all(pool)
        .await)?;
    let deliveries = on_db!(db, |pool| sqlx::query_as(DELIVERIES)
        .bind(id)
        .fetch_all(pool)
        .await)?;
    Ok((evidence, history, deliveries))
}

/// Why a lifecycle step was refused.
#[derive(Debug, thiserror::Error)]
pub enum TransitionError {
    /// No such alert in the corp.
    #[error("no such alert")]
    NotFound,
    /// Not from this state.
    #[error("cannot {action} an alert that is {state}")]
    Conflict {
        /// The step.
        action: &'static str,
        /// The alert's state.
        state: String,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Takes a lifecycle step as `actor` with `comment`; returns the new state.
pub async fn transition(
    db: &Db,
    corp: &str,
    id: i64,
    step: Transition,
    actor: &str,
    comment: &str,
    now_ms: i64,
) -> Result<State, TransitionError> {
    const CURRENT: &str = "SELECT state FROM alert WHERE corp_id = $1 AND id = $2";
    const SET: &str = "UPDATE alert SET state = $3, updated_at_ms = $4 WHERE corp_id = $1 AND id = $2 \
        AND state = $5";
    let mut tx = db.begin().await?;
    let current: Option<String> = on_tx!(&mut tx, |conn| sqlx::query_scalar(CURRENT)
        .bind(corp)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await)
    .map_err(StoreError::from)?;
    let current = current.ok_or(TransitionError::NotFound)?;
    let from = State::parse(&current).ok_or_else(|| TransitionError::Conflict {
        action: step.as_str(),
        state: current.clone(),
    })?;
    let to = step.apply(from).ok_or_else(|| TransitionError::Conflict {
        action: step.as_str(),
        state: current.clone(),
    })?;
    on_tx!(&mut tx, |conn| sqlx::query(SET)
        .bind(corp)
        .bind(id)
        .bind(to.as_str())
        .bind(now_ms)
        .bind(from.as_str())
        .execute(&mut *conn)
        .await
        .map(|_| ()))
    .map_err(StoreError::from)?;
    history(
        &mut tx,
        corp,
        id,
        actor,
        step.as_str(),
        Some(from),
        Some(to),
        comment,
        now_ms,
    )
    .await?;
    crate::auth::audit(
        &mut tx,
        corp,
        actor,
        &format!("alert.{}", step.as_str()),
        &format!("alert:{id}"),
        &serde_json::json!({"from": from.as_str(), "to": to.as_str(), "comment": comment}),
        now_ms,
    )
    .await?;
    tx.commit().await?;
    Ok(to)
}
