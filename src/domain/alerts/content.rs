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

/// Scans one message and raises an alert per rule hit in scope. The sender's previous message in
/// the conversation (kept in `scan_window`) completes a phrase split over two messages; the other
/// party's latest message, when more recent, is read with it (a customer's request and the
/// staff member's reply are one exchange).
pub async fn scan_message(
    db: &Db,
    ctx: Ctx<'_>,
    library: &crate::domain::scan::RuleLibrary,
    m: &Scanned<'_>,
    now_ms: i64,
) -> Result<Vec<Raised>, StoreError> {
    let own = window_entry(db, WindowKey::of(m)).await?;
    let tail = conversation_tail(db, m.corp_id, &m.conversation).await?;
    let before = Before::of(ctx, m, own, &tail);
    let result = judged(ctx, library, m, &before, scan_text(library, m, &before)).await;
    if let Some(tail) = window_tail(m) {
        let mut tx = db.begin().await?;
        keep_window(&mut tx, WindowKey::of(m), &tail, m.at_ms).await?;
        tx.commit().await?;
    }
    raise_hits(db, ctx, library, m, &before, &result, now_ms).await
}

/// What a message is read with: the sender's own previous message (joined by the rules) and the
/// other party's message in between (read by the model only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Before {
    /// The sender's previous message in the conversation, when recent enough to count.
    pub prev: Option<String>,
    /// The latest message of someone else in the conversation, when recent enough and more recent
    /// than `prev`: the request this message answers.
    pub context: Option<String>,
}

impl Before {
    /// From the sender's window entry (`own`) and the conversation's latest messages (`tail`),
    /// what still counts for `m`.
    pub fn of(
        ctx: Ctx<'_>,
        m: &Scanned<'_>,
        own: Option<(String, i64)>,
        tail: &ConversationTail,
    ) -> Self {
        let own = own.filter(|(_, at)| window_counts(ctx, m, *at));
        let own_at = own.as_ref().map_or(i64::MIN, |(_, at)| *at);
        let context = tail
            .other_than(m.sender_id)
            .filter(|(_, text, at)| !text.is_empty() && *at >= own_at && window_counts(ctx, m, *at))
            .map(|(_, text, _)| text.clone());
        Self {
            prev: own.map(|(text, _)| text),
            context,
        }
    }

    fn input<'s>(&'s self, m: &'s Scanned<'_>) -> crate::domain::scan::ScanInput<'s> {
        crate::domain::scan::ScanInput {
            text: m.text,
            prev: self.prev.as_deref(),
            context: self.context.as_deref(),
            sender: m.sender,
            msg_type: m.msg_type,
        }
    }
}

/// A conversation's latest message and the latest one of a different sender (one `scan_window`
/// row per sender: the two newest rows), enough to find for any sender the latest message of
/// someone else.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConversationTail {
    /// `(sender, text, at_ms)` of the newest message.
    pub latest: Option<(String, String, i64)>,
    /// The newest message of a sender other than `latest`'s.
    pub other: Option<(String, String, i64)>,
}

impl ConversationTail {
    /// The latest message in the conversation not sent by `sender`.
    pub fn other_than(&self, sender: &str) -> Option<&(String, String, i64)> {
        match &self.latest {
            Some(latest) if latest.0 != sender => Some(latest),
            Some(_) => self.other.as_ref(),
            None => None,
        }
    }

    /// Takes in a message of `sender` (in the order they were sent; an older one changes
    /// nothing).
    pub fn push(&mut self, sender: &str, text: String, at_ms: i64) {
        match self.latest.take() {
            Some(latest) if latest.2 > at_ms => self.latest = Some(latest),
            Some(latest) => {
                if latest.0 != sender {
                    self.other = Some(latest);
                }
                self.latest = Some((sender.to_owned(), text, at_ms));
            }
            None => self.latest = Some((sender.to_owned(), text, at_ms)),
        }
    }
}

/// The conversation's two newest window rows.
pub async fn conversation_tail(
    db: &Db,
    corp_id: &str,
    conversation: &str,
) -> Result<ConversationTail, StoreError> {
    const TAIL: &str = "SELECT sender, text, at_ms FROM scan_window WHERE corp_id = $1 \
        AND conversation = $2 ORDER BY at_ms DESC, sender LIMIT 2";
    let rows: Vec<(String, String, i64)> = on_db!(db, |pool| sqlx::query_as(TAIL)
        .bind(corp_id)
        .bind(conversation)
        .fetch_all(pool)
        .await)?;
    let mut rows = rows.into_iter();
    Ok(ConversationTail {
        latest: rows.next(),
        other: rows.next(),
    })
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

/// The pure scan of `m` (with what came before it), counted in `/metrics`.
pub fn scan_text(
    library: &crate::domain::scan::RuleLibrary,
    m: &Scanned<'_>,
    before: &Before,
) -> crate::domain::scan::detector::Decision {
    metrics::counter!("scrm_scan_messages_total").increment(1);
    crate::domain::scan::Detector::bundled(library).decide(&before.input(m))
}

/// The decision, with the external judge's word where the model was unsure: no rule fired and the
/// model's score is borderline. The judge's "yes" raises (of its category when the library
/// watches it, else the model's), its "no" takes the model's hits back; without an answer the
/// detector's decision stands.
pub async fn judged(
    ctx: Ctx<'_>,
    library: &crate::domain::scan::RuleLibrary,
    m: &Scanned<'_>,
    before: &Before,
    decision: crate::domain::scan::detector::Decision,
) -> crate::domain::scan::ScanResult {
    use crate::domain::scan::{Hit, Sender, detector};
    let Some(judge) = ctx.judge else {
        return decision.result;
    };
    if decision.rule_hits > 0
        || m.text.is_empty()
        || m.text.len() > detector::MODEL_MAX_BYTES
        || !judge.borderline(decision.verdict.score)
    {
        return decision.result;
    }
    let question = crate::platform::judge::Question {
        text: m.text,
        prev: before.prev.as_deref(),
        context: before.context.as_deref(),
        sender: m.sender.as_str(),
        score: decision.verdict.score,
        category: decision.verdict.category,
    };
    let Some(answer) = judge.ask(&question).await else {
        return decision.result;
    };
    if !answer.alert {
        return crate::domain::scan::ScanResult::default();
    }
    let reason = answer.reason.as_deref().unwrap_or("").chars().take(200);
    let matched = format!("外部判定 (judge): {}", reason.collect::<String>());
    let mut result = decision.result;
    if result.hits.is_empty() {
        let category = answer
            .category
            .filter(|c| library.rules().iter().any(|r| &r.category == c))
            .unwrap_or_else(|| decision.verdict.category.to_owned());
        result.hits.push(Hit {
            rule_id: detector::JUDGE_RULE.to_owned(),
            category,
            severity: match m.sender {
                Sender::Staff => crate::domain::scan::Severity::Medium,
                Sender::Customer => crate::domain::scan::Severity::Low,
            },
            spans: vec![(0, m.text.chars().count())],
            matched,
            across_messages: before.context.is_some(),
        });
    } else {
        for hit in &mut result.hits {
            hit.matched = format!("{} · {matched}", hit.matched);
        }
    }
    result
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
    before: &Before,
    result: &crate::domain::scan::ScanResult,
    now_ms: i64,
) -> Result<Vec<Raised>, StoreError> {
    let mut raised = Vec::new();
    if result.hits.is_empty() {
        return Ok(raised);
    }
    // Why, in the model's words (once per message, for every hit's evidence): its score and the
    // features that drove it.
    let (model, drivers) =
        crate::domain::scan::Detector::bundled(library).explain(&before.input(m), 6);
    let drivers: Vec<String> = drivers
        .into_iter()
        .map(|d| format!("{} {:+.2}", d.feature, d.weight))
        .collect();
    for hit in &result.hits {
        // A hit only the model found (or an exchange, or the judge) takes the scope and recipients of the library's first rule
        // of its category: a library without one (a corp that watches other things) raises none.
        let rule = library.rule(&hit.rule_id).or_else(|| {
            [
                crate::domain::scan::detector::MODEL_RULE,
                crate::domain::scan::detector::EXCHANGE_RULE,
                crate::domain::scan::detector::JUDGE_RULE,
            ]
            .contains(&hit.rule_id.as_str())
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
                "prev": if hit.across_messages { before.prev.as_deref() } else { None },
                // The other party's message this one answers: the exchange is the event.
                "context": before.context.as_deref(),
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

#[cfg(test)]
mod tests {
    use super::ConversationTail;

    /// For any sender, the latest message of someone else: the newest when another sent it, else
    /// the newest of a different sender; older messages change nothing.
    #[test]
    fn the_tail_finds_the_other_partys_latest_message() {
        let mut tail = ConversationTail::default();
        assert_eq!(tail.other_than("staff"), None);
        tail.push("customer", "能便宜点吗".to_owned(), 10);
        assert_eq!(tail.other_than("staff").map(|m| m.2), Some(10));
        assert_eq!(tail.other_than("customer"), None);
        tail.push("staff", "我问问".to_owned(), 20);
        tail.push("staff", "可以".to_owned(), 30);
        assert_eq!(
            tail.other_than("staff").map(|m| m.1.as_str()),
            Some("能便宜点吗")
        );
        assert_eq!(
            tail.other_than("customer").map(|m| m.1.as_str()),
            Some("可以")
        );
        tail.push("customer", "旧消息".to_owned(), 5);
        assert_eq!(tail.latest.as_ref().map(|m| m.2), Some(30));
        tail.push("customer", "好".to_owned(), 40);
        assert_eq!(tail.other_than("customer").map(|m| m.2), Some(30));
        assert_eq!(tail.other_than("staff").map(|m| m.1.as_str()), Some("好"));
    }
}
