//! Content rules on messages (callbacks, the chat archive, rescans): the per-sender window of the
//! previous message, the scan, and the hits raised as alerts in scope.

use super::*;

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
        corp_id: &'a CorpId,
        agent_id: &str,
        from: &'a UserId,
        text: &'a str,
        source_ref: String,
        at_ms: i64,
    ) -> Self {
        Self {
            corp_id: corp_id.as_str(),
            conversation: format!("app:{agent_id}:{from}"),
            sender_id: from.as_str(),
            sender: crate::domain::scan::Sender::Staff,
            staff_user_id: from.as_str(),
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
        keep_window(&mut tx, WindowKey::of(m), &tail, m.at_ms).await?;
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
    let prev = window_entry(db, WindowKey::of(m)).await?;
    Ok(prev.and_then(|(text, at)| window_counts(ctx, m, at).then_some(text)))
}

/// Whose previous message the scan window keeps: a sender in a conversation of a corp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowKey<'a> {
    /// The corp.
    pub corp_id: &'a str,
    /// The conversation ([`Scanned::conversation`]).
    pub conversation: &'a str,
    /// The sender (a userid or an external_userid).
    pub sender_id: &'a str,
}

impl<'a> WindowKey<'a> {
    /// The window of `m`'s sender in `m`'s conversation.
    pub fn of<'s: 'a>(m: &'a Scanned<'s>) -> Self {
        Self {
            corp_id: m.corp_id,
            conversation: &m.conversation,
            sender_id: m.sender_id,
        }
    }
}

/// The sender's last remembered message in the conversation and when it was sent.
pub async fn window_entry(
    db: &Db,
    key: WindowKey<'_>,
) -> Result<Option<(String, i64)>, StoreError> {
    let WindowKey {
        corp_id,
        conversation,
        sender_id: sender,
    } = key;
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
    crate::domain::scan::Detector::bundled(library).scan(&input)
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
    key: WindowKey<'_>,
    tail: &str,
    at_ms: i64,
) -> Result<(), StoreError> {
    let WindowKey {
        corp_id,
        conversation,
        sender_id: sender,
    } = key;
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
    if result.hits.is_empty() {
        return Ok(raised);
    }
    // Why, in the model's words (once per message, for every hit's evidence): its score and the
    // features that drove it.
    let (model, drivers) = crate::domain::scan::Detector::bundled(library).explain(
        &crate::domain::scan::ScanInput {
            text: m.text,
            prev,
            sender: m.sender,
            msg_type: m.msg_type,
        },
        6,
    );
    let drivers: Vec<String> = drivers
        .into_iter()
        .map(|d| format!("{} {:+.2}", d.feature, d.weight))
        .collect();
    for hit in &result.hits {
        // A hit only the model found takes the scope and recipients of the library's first rule
        // of its category: a library without one (a corp that watches other things) raises none.
        let rule = library.rule(&hit.rule_id).or_else(|| {
            (hit.rule_id == crate::domain::scan::detector::MODEL_RULE)
                .then(|| library.rules().iter().find(|r| r.category == hit.category))
                .flatten()
        });
        let Some(rule) = rule else {
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
                "model": {"score": model.score, "features": drivers},
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
pub(super) async fn in_scope(
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
        // Ids that fail WeCom's shape cannot name a relation we hold.
        let (Ok(corp), Ok(user), Ok(ext)) = (
            CorpId::try_from(m.corp_id),
            UserId::try_from(m.staff_user_id),
            ExternalUserId::try_from(ext),
        ) else {
            return Ok(false);
        };
        let key = crate::domain::customers::RelationKey::new(&corp, &user, &ext);
        let relation = crate::domain::customers::get_relation(db, key).await?;
        let tags = relation.map(|r| r.tags()).unwrap_or_default();
        if !tags.iter().any(|t| rule.customer_tags.contains(t)) {
            return Ok(false);
        }
    }
    Ok(true)
}
