//! Raising: one transaction that stores the evidence once, joins the open alert of the same burst
//! or opens one, escalates a deletion burst and writes the notifications into the outbox.

use super::*;

pub(super) struct Shape {
    kind: Kind,
    severity: Severity,
    category: Option<String>,
    rule_id: Option<String>,
    trigger_key: String,
    burst_key: String,
    text: Option<String>,
    spans: Vec<(usize, usize)>,
}

pub(super) fn shape(trigger: &Trigger<'_>, staff: &str) -> Shape {
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

/// The name in the row `key` (corp, id) that `sql` selects; the id when it has none.
async fn display_name(tx: &mut Tx, sql: &str, key: [&str; 2]) -> Result<String, StoreError> {
    let [corp, id] = key;
    let name: Option<String> = on_tx!(tx, |conn| sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(corp)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await)?;
    Ok(name
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| id.to_owned()))
}

/// The display names of the evidence's staff member and customer.
async fn names(tx: &mut Tx, e: &Evidence<'_>) -> Result<(String, Option<String>), StoreError> {
    const STAFF: &str = "SELECT name FROM staff WHERE corp_id = $1 AND user_id = $2";
    const CUSTOMER: &str = "SELECT name FROM customer WHERE corp_id = $1 AND external_user_id = $2";
    let staff = display_name(tx, STAFF, [e.corp_id, e.staff_user_id]).await?;
    let customer = match e.external_user_id {
        Some(ext) => Some(display_name(tx, CUSTOMER, [e.corp_id, ext]).await?),
        None => None,
    };
    Ok((staff, customer))
}

/// A relation ended: a deletion by the staff member or a vanished relation raises an alert, a
/// customer leaving a notice; a transfer nothing. Reads the relation (its status decides, so a
/// retry after a crash still raises it) and attaches its history. Once per relation end.
pub async fn relation_ended(
    db: &Db,
    wecom: &crate::platform::wecom::Wecom,
    corp: &CorpId,
    user: &UserId,
    ext: &ExternalUserId,
    source: &str,
    now_ms: i64,
) -> Result<Raised, StoreError> {
    let key = crate::domain::customers::RelationKey::new(corp, user, ext);
    let (corp, user, ext) = key.parts();
    let Some(ctx) = Ctx::of(wecom, corp) else {
        return Ok(Raised::default());
    };
    let Some(relation) = crate::domain::customers::get_relation(db, key).await? else {
        return Ok(Raised::default());
    };
    use crate::domain::customers::{EndReason, RelationStatus};
    let trigger = match relation.status {
        RelationStatus::Ended(EndReason::DeletedByStaff) => Trigger::Deletion,
        RelationStatus::Ended(EndReason::DeletedByCustomer) => Trigger::CustomerLoss,
        RelationStatus::Ended(EndReason::Vanished) => Trigger::Vanished,
        RelationStatus::Active | RelationStatus::Ended(EndReason::Transferred) => {
            return Ok(Raised::default());
        }
    };
    let at_ms = relation.ended_at_ms.unwrap_or(now_ms);
    let history = crate::domain::customers::relation_history(db, key).await?;
    // The last archived messages of the pair (references; their content is read, and audited,
    // through the archive API the link points to).
    let last_messages = crate::domain::archive::read::last_of_pair(
        db,
        key.corp_id,
        key.user_id,
        key.external_user_id,
        20,
    )
    .await?;
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
    let (staff, customer) = names(&mut tx, evidence).await?;
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
        let mut to = recipients(
            &mut tx,
            ctx,
            s.kind,
            s.category.as_deref(),
            evidence.staff_user_id,
        )
        .await?;
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

pub(super) fn title(s: &Shape, staff: &str, customer: Option<&str>) -> String {
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
pub(super) fn card(
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

pub(super) fn severity_label(s: Severity) -> &'static str {
    match s {
        Severity::Low => "低",
        Severity::Medium => "中",
        Severity::High => "高",
        Severity::Critical => "紧急",
    }
}
