//! Who is told: recipients by kind and severity, managers from the directory, the app messages
//! and their escalation.

use super::*;

/// Who hears of an alert of `kind` about `staff`: the corp's compliance recipients, for a content
/// alert the recipients the corp set for its `category` (规则 page), and the staff member's
/// manager; for a customer loss, the staff member themself.
pub(super) async fn recipients(
    tx: &mut Tx,
    ctx: Ctx<'_>,
    kind: Kind,
    category: Option<&str>,
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
    if kind == Kind::Content
        && let Some(category) = category
    {
        to.extend(
            crate::domain::rule_book::category_recipients_in(
                tx,
                ctx.corp.corp_id.as_str(),
                category,
            )
            .await?,
        );
    }
    if ctx.settings.notify_manager {
        to.extend(managers(tx, &ctx.corp.corp_id, staff).await?);
    }
    to.retain(|u| u != staff);
    let mut seen = std::collections::HashSet::new();
    to.retain(|u| seen.insert(u.clone()));
    Ok(to)
}

/// The staff member's managers: their direct leaders, else the leaders of their main department.
pub async fn managers(tx: &mut Tx, corp: &CorpId, staff: &str) -> Result<Vec<String>, StoreError> {
    let corp = corp.as_str();
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

pub(super) fn split_list(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|x| !x.is_empty())
}

/// Queues one app message of `message` to `to` for `alert_id` (`reason`: created, escalated),
/// skipping recipients who left the company, and records each recipient's delivery.
pub(super) async fn notify(
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
pub(super) async fn escalate(
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
    let to = recipients(tx, ctx, Kind::MassDeletion, None, evidence.staff_user_id).await?;
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
