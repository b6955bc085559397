//! Reading alerts back (list, one alert with its evidence, history and deliveries) and moving
//! them through their lifecycle.

use super::*;

#[allow(clippy::too_many_arguments, reason = "one row of alert_event")]
pub(super) async fn history(
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

pub(super) const COLUMNS: &str = "id, corp_id, kind, severity, category, rule_id, staff_user_id, \
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
    /// Only about one of these staff members (a department, a manager's team).
    pub staff_in: Option<Vec<String>>,
    /// Only raised at or after this, epoch ms.
    pub since_ms: Option<i64>,
    /// Ids below this (paging).
    pub before_id: Option<i64>,
    /// At most this many (1–500).
    pub limit: i64,
}

/// Alerts of `corp` matching `f`.
pub async fn list(db: &Db, corp: &str, f: &AlertFilter) -> Result<Vec<Alert>, StoreError> {
    // Only the filters given go into the statement, so that each combination is planned for what it
    // asks: newest first along `alert_corp_id` (or the state's or staff member's index), stopping
    // when the page is full. (`$n IS NULL OR …` for every filter made SQLite read and sort every
    // alert of the corp.)
    let filters: [(&str, Option<&str>); 5] = [
        ("state", f.state.as_deref()),
        ("kind", f.kind.as_deref()),
        ("category", f.category.as_deref()),
        ("severity", f.severity.as_deref()),
        ("staff_user_id", f.staff_user_id.as_deref()),
    ];
    let mut sql = format!("SELECT {COLUMNS} FROM alert WHERE corp_id = $1");
    let mut n = 1;
    for (column, _) in filters.iter().filter(|(_, v)| v.is_some()) {
        n += 1;
        sql.push_str(&format!(" AND {column} = ${n}"));
    }
    for (column, value) in [("created_at_ms >=", f.since_ms), ("id <", f.before_id)] {
        if value.is_some() {
            n += 1;
            sql.push_str(&format!(" AND {column} ${n}"));
        }
    }
    let staff_in = f.staff_in.as_deref().map(crate::platform::db::json_list);
    if staff_in.is_some() {
        n += 1;
        sql.push_str(&format!(
            " AND staff_user_id IN {}",
            crate::platform::db::in_json_list(db, n)
        ));
    }
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", n + 1));
    let values = filters.iter().filter_map(|(_, v)| *v);
    let numbers = [f.since_ms, f.before_id].into_iter().flatten();
    let limit = f.limit.clamp(1, 500);
    let rows = on_db!(db, |pool| {
        let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str())).bind(corp);
        for v in values {
            q = q.bind(v);
        }
        for v in numbers {
            q = q.bind(v);
        }
        if let Some(list) = staff_in.as_deref() {
            q = q.bind(list);
        }
        q.bind(limit).fetch_all(pool).await
    })?;
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

/// Alerts about customer `ext` that are still open or acknowledged and that a salesperson may see
/// ([`Kind::shown_to_sales`]), newest first.
pub async fn unresolved_for_sales(
    db: &Db,
    corp: &CorpId,
    ext: &ExternalUserId,
) -> Result<Vec<Alert>, StoreError> {
    // The kinds are our own names, so they go into the statement as literals: the limit then
    // counts only alerts a salesperson may see.
    let kinds = Kind::ALL
        .into_iter()
        .filter(|k| k.shown_to_sales())
        .map(|k| format!("'{}'", k.as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {COLUMNS} FROM alert WHERE corp_id = $1 AND external_user_id = $2 \
         AND state IN ('open', 'acknowledged') AND kind IN ({kinds}) ORDER BY id DESC LIMIT 50"
    );
    let rows = on_db!(db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
        .bind(corp.as_str())
        .bind(ext.as_str())
        .fetch_all(pool)
        .await)?;
    Ok(rows)
}

/// Open alerts of `corp` by severity (`severity`, count).
pub async fn open_by_severity(db: &Db, corp: &CorpId) -> Result<Vec<(String, i64)>, StoreError> {
    const SQL: &str = "SELECT severity, COUNT(*) FROM alert WHERE corp_id = $1 AND state = 'open' \
        GROUP BY severity";
    let rows = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp.as_str())
        .fetch_all(pool)
        .await)?;
    Ok(rows)
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
