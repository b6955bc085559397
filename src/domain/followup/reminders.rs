//! Reminders (跟进提醒): one assignee who follows the customer; a due reminder becomes an app
//! message through the outbox, once (claimed with its message in one transaction).
use super::*;

/// A follow-up reminder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Reminder {
    /// Id.
    pub id: i64,
    /// Corp.
    #[sqlx(try_from = "String")]
    pub corp_id: CorpId,
    /// The customer.
    #[sqlx(try_from = "String")]
    pub external_user_id: ExternalUserId,
    /// The customer's name, when we know the customer.
    pub customer_name: Option<String>,
    /// The staff member to remind.
    pub assignee: String,
    /// What to do.
    pub title: String,
    /// Due, epoch ms.
    pub due_at_ms: i64,
    /// `open`, `done` or `cancelled`.
    pub state: String,
    /// How often it was snoozed.
    pub snoozes: i64,
    /// `manual` (the API) or `after_add` (a default after adding the customer).
    pub source: String,
    /// Who created it (`system` for defaults).
    pub created_by: String,
    /// Created, epoch ms.
    pub created_at_ms: i64,
    /// Done or cancelled, epoch ms.
    pub done_at_ms: Option<i64>,
    /// Who marked it done or cancelled it.
    pub done_by: Option<String>,
    /// When it was handed to the outbox as an app message (`None`: not yet, or snoozed since).
    pub notified_at_ms: Option<i64>,
    /// The outbox item of that message.
    pub outbox_id: Option<i64>,
    /// Last changed, epoch ms.
    pub updated_at_ms: i64,
}

const REMINDER_COLUMNS: &str = "r.id, r.corp_id, r.external_user_id, c.name AS customer_name, \
    r.assignee, r.title, r.due_at_ms, r.state, r.snoozes, r.source, r.created_by, r.created_at_ms, \
    r.done_at_ms, r.done_by, r.notified_at_ms, r.outbox_id, r.updated_at_ms \
    FROM reminder r LEFT JOIN customer c ON c.corp_id = r.corp_id \
    AND c.external_user_id = r.external_user_id";

/// A reminder to create from the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewReminder<'a> {
    /// Corp.
    pub corp_id: &'a CorpId,
    /// The customer.
    pub external_user_id: &'a ExternalUserId,
    /// The staff member to remind: must follow the customer.
    pub assignee: &'a UserId,
    /// What to do (1..=200 characters).
    pub title: &'a str,
    /// Due, epoch ms.
    pub due_at_ms: i64,
    /// Who creates it (`Principal::actor`).
    pub created_by: &'a str,
}

/// Hands `from`'s open reminders on a customer to `to` (a reassignment), inside the caller's
/// transaction.
pub async fn reassign_open_reminders(
    tx: &mut Tx,
    corp_id: &CorpId,
    external_user_id: &ExternalUserId,
    from: &UserId,
    to: &UserId,
    now_ms: i64,
) -> Result<(), StoreError> {
    let (corp_id, external_user_id, from, to) = (
        corp_id.as_str(),
        external_user_id.as_str(),
        from.as_str(),
        to.as_str(),
    );
    const REMINDERS: &str = "UPDATE reminder SET assignee = $4, updated_at_ms = $5 \
        WHERE corp_id = $1 AND external_user_id = $2 AND assignee = $3 AND state = 'open'";
    on_tx!(tx, |conn| sqlx::query(REMINDERS)
        .bind(corp_id)
        .bind(external_user_id)
        .bind(from)
        .bind(to)
        .bind(now_ms)
        .execute(&mut *conn)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// Checks a reminder title: 1..=200 characters, not only spaces.
pub fn check_title(title: &str) -> Result<(), FollowupError> {
    if title.trim().is_empty() {
        return Err(invalid("title", "标题不能为空 / must not be empty"));
    }
    if title.chars().count() > MAX_TITLE_CHARS {
        return Err(invalid(
            "title",
            format!("标题最多 {MAX_TITLE_CHARS} 个字 / at most {MAX_TITLE_CHARS} characters"),
        ));
    }
    Ok(())
}

fn check_due(field: &str, due_at_ms: i64, now_ms: i64) -> Result<(), FollowupError> {
    if due_at_ms <= 0 || due_at_ms > now_ms.saturating_add(MAX_AHEAD_MS) {
        return Err(invalid(
            field,
            "时间无效（毫秒时间戳，十年以内） / not a sane epoch-ms time",
        ));
    }
    Ok(())
}

async fn reminder_in(tx: &mut Tx, corp_id: &str, id: i64) -> Result<Option<Reminder>, StoreError> {
    let sql = format!("SELECT {REMINDER_COLUMNS} WHERE r.id = $1 AND r.corp_id = $2");
    let row = on_tx!(tx, |conn| sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
        .bind(id)
        .bind(corp_id)
        .fetch_optional(&mut *conn)
        .await)?;
    Ok(row)
}

/// Creates a reminder (source `manual`): title and due time checked here, the assignee must
/// follow the customer ([`FollowupError::NotFollowed`]); audited.
pub async fn create_reminder(
    db: &Db,
    new: &NewReminder<'_>,
    now_ms: i64,
) -> Result<Reminder, FollowupError> {
    const INSERT: &str = "INSERT INTO reminder (corp_id, external_user_id, assignee, title, \
        due_at_ms, source, created_by, created_at_ms, updated_at_ms) \
        VALUES ($1, $2, $3, $4, $5, 'manual', $6, $7, $7) RETURNING id";
    const OPEN: &str = "SELECT COUNT(*) FROM reminder WHERE corp_id = $1 \
        AND external_user_id = $2 AND state = 'open'";
    check_title(new.title)?;
    check_due("due_at_ms", new.due_at_ms, now_ms)?;
    let mut tx = db.begin().await?;
    let relation = RelationKey::new(new.corp_id, new.assignee, new.external_user_id);
    if !crate::domain::customers::is_following_in(&mut tx, relation).await? {
        return Err(FollowupError::NotFollowed);
    }
    let open: i64 = on_tx!(&mut tx, |conn| sqlx::query_scalar(OPEN)
        .bind(new.corp_id.as_str())
        .bind(new.external_user_id.as_str())
        .fetch_one(&mut *conn)
        .await)?;
    if open >= MAX_OPEN_REMINDERS {
        return Err(invalid(
            "due_at_ms",
            format!(
                "该客户已有 {MAX_OPEN_REMINDERS} 条未完成的提醒 / at most {MAX_OPEN_REMINDERS} open reminders per customer"
            ),
        ));
    }
    let id: i64 = on_tx!(&mut tx, |conn| sqlx::query_scalar(INSERT)
        .bind(new.corp_id.as_str())
        .bind(new.external_user_id.as_str())
        .bind(new.assignee.as_str())
        .bind(new.title)
        .bind(new.due_at_ms)
        .bind(new.created_by)
        .bind(now_ms)
        .fetch_one(&mut *conn)
        .await)?;
    auth::audit(
        &mut tx,
        new.corp_id.as_str(),
        new.created_by,
        "reminder.create",
        &format!("reminder:{id}"),
        &serde_json::json!({
            "external_user_id": new.external_user_id,
            "assignee": new.assignee,
            "due_at_ms": new.due_at_ms,
        }),
        now_ms,
    )
    .await?;
    let reminder = reminder_in(&mut tx, new.corp_id.as_str(), id)
        .await?
        .ok_or(FollowupError::NotFound)?;
    tx.commit().await?;
    Ok(reminder)
}

/// One reminder of the corp.
pub async fn get_reminder(db: &Db, corp_id: &str, id: i64) -> Result<Option<Reminder>, StoreError> {
    let sql = format!("SELECT {REMINDER_COLUMNS} WHERE r.id = $1 AND r.corp_id = $2");
    let row = on_db!(db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
        .bind(id)
        .bind(corp_id)
        .fetch_optional(pool)
        .await)?;
    Ok(row)
}

/// Which reminders [`list_reminders`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReminderFilter {
    /// Only this staff member's.
    pub assignee: Option<String>,
    /// Only this customer's.
    pub external_user_id: Option<String>,
    /// Only in this state (`open`, `done`, `cancelled`); `None`: any.
    pub state: Option<String>,
    /// Only due before this, epoch ms.
    pub due_before_ms: Option<i64>,
    /// Only of customers this staff member follows now (a salesperson's view).
    pub followed_by: Option<String>,
    /// At most this many (1..=500).
    pub limit: i64,
}

/// Reminders of a corp, soonest due first.
pub async fn list_reminders(
    db: &Db,
    corp_id: &str,
    f: &ReminderFilter,
) -> Result<Vec<Reminder>, StoreError> {
    let sql = format!(
        "SELECT {REMINDER_COLUMNS} WHERE r.corp_id = $1 AND ($2 IS NULL OR r.assignee = $2) \
         AND ($3 IS NULL OR r.external_user_id = $3) AND ($4 IS NULL OR r.state = $4) \
         AND ($5 IS NULL OR r.due_at_ms < $5) \
         AND ($7 IS NULL OR EXISTS (SELECT 1 FROM follow_relation f WHERE f.corp_id = r.corp_id \
           AND f.external_user_id = r.external_user_id AND f.user_id = $7 AND f.status = 'active')) \
         ORDER BY r.due_at_ms, r.id LIMIT $6"
    );
    let rows = on_db!(db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
        .bind(corp_id)
        .bind(f.assignee.as_deref())
        .bind(f.external_user_id.as_deref())
        .bind(f.state.as_deref())
        .bind(f.due_before_ms)
        .bind(f.limit.clamp(1, 500))
        .bind(f.followed_by.as_deref())
        .fetch_all(pool)
        .await)?;
    Ok(rows)
}

/// What to do to an open reminder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReminderChange {
    /// Mark it done (again: no change).
    Done,
    /// Cancel it (again: no change).
    Cancel,
    /// Move it to a later due time; it fires once more then.
    Snooze {
        /// The new due time, epoch ms (must be after now).
        until_ms: i64,
    },
}

/// Marks a reminder done, cancels or snoozes it, and audits the change. Doing what is done
/// already changes nothing; a done reminder cannot be cancelled or snoozed, a cancelled one not
/// done or snoozed ([`FollowupError::WrongState`]).
pub async fn change_reminder(
    db: &Db,
    corp_id: &str,
    id: i64,
    change: ReminderChange,
    actor: &str,
    now_ms: i64,
) -> Result<Reminder, FollowupError> {
    const LOCK_PG: &str = "SELECT state FROM reminder WHERE id = $1 AND corp_id = $2 FOR UPDATE";
    const LOCK_LITE: &str = "SELECT state FROM reminder WHERE id = $1 AND corp_id = $2";
    const CLOSE: &str = "UPDATE reminder SET state = $2, done_at_ms = $3, done_by = $4, \
        updated_at_ms = $3 WHERE id = $1";
    // A snooze clears the notification, so the reminder fires again; the new `snoozes` gives that
    // message its own idempotency key.
    const SNOOZE: &str = "UPDATE reminder SET due_at_ms = $2, notified_at_ms = NULL, \
        outbox_id = NULL, snoozes = snoozes + 1, updated_at_ms = $3 WHERE id = $1";
    if let ReminderChange::Snooze { until_ms } = change {
        if until_ms <= now_ms {
            return Err(invalid(
                "until_ms",
                "推迟到的时间必须在将来 / must be in the future",
            ));
        }
        check_due("until_ms", until_ms, now_ms)?;
    }
    let mut tx = db.begin().await?;
    let lock = if tx.is_postgres() { LOCK_PG } else { LOCK_LITE };
    let state: Option<String> = on_tx!(&mut tx, |conn| sqlx::query_scalar(lock)
        .bind(id)
        .bind(corp_id)
        .fetch_optional(&mut *conn)
        .await)?;
    let state = state.ok_or(FollowupError::NotFound)?;
    let (action, detail) = match (change, state.as_str()) {
        (ReminderChange::Done, "done") | (ReminderChange::Cancel, "cancelled") => {
            let unchanged = reminder_in(&mut tx, corp_id, id)
                .await?
                .ok_or(FollowupError::NotFound)?;
            tx.commit().await?;
            return Ok(unchanged);
        }
        (_, "open") => match change {
            ReminderChange::Done | ReminderChange::Cancel => {
                let (to, action) = if change == ReminderChange::Done {
                    ("done", "reminder.done")
                } else {
                    ("cancelled", "reminder.cancel")
                };
                on_tx!(&mut tx, |conn| sqlx::query(CLOSE)
                    .bind(id)
                    .bind(to)
                    .bind(now_ms)
                    .bind(actor)
                    .execute(&mut *conn)
                    .await
                    .map(|_| ()))?;
                (action, serde_json::json!({}))
            }
            ReminderChange::Snooze { until_ms } => {
                on_tx!(&mut tx, |conn| sqlx::query(SNOOZE)
                    .bind(id)
                    .bind(until_ms)
                    .bind(now_ms)
                    .execute(&mut *conn)
                    .await
                    .map(|_| ()))?;
                ("reminder.snooze", serde_json::json!({"until_ms": until_ms}))
            }
        },
        (_, other) => return Err(FollowupError::WrongState(other.to_owned())),
    };
    auth::audit(
        &mut tx,
        corp_id,
        actor,
        action,
        &format!("reminder:{id}"),
        &detail,
        now_ms,
    )
    .await?;
    let reminder = reminder_in(&mut tx, corp_id, id)
        .await?
        .ok_or(FollowupError::NotFound)?;
    tx.commit().await?;
    Ok(reminder)
}

/// The default reminders of a new relation: one per `settings.after_add_days`, due that many days
/// after `added_at_ms`, assigned to `user_id`, source `after_add`. Each is created once however
/// often this runs for the same add (dedup `after_add:{user}:{ext}:{days}:{added_at_ms}`).
/// Returns how many were created now.
pub async fn create_default_reminders(
    db: &Db,
    corp_id: &CorpId,
    user_id: &UserId,
    external_user_id: &ExternalUserId,
    added_at_ms: i64,
    settings: &ReminderSettings,
) -> Result<usize, StoreError> {
    let (corp_id, user_id, external_user_id) = (
        corp_id.as_str(),
        user_id.as_str(),
        external_user_id.as_str(),
    );
    const INSERT: &str = "INSERT INTO reminder (corp_id, external_user_id, assignee, title, \
        due_at_ms, source, created_by, created_at_ms, dedup, updated_at_ms) \
        VALUES ($1, $2, $3, $4, $5, 'after_add', 'system', $6, $7, $6) \
        ON CONFLICT (corp_id, dedup) DO NOTHING";
    if settings.after_add_days.is_empty() {
        return Ok(0);
    }
    let now = crate::platform::db::now_ms();
    let mut created = 0;
    let mut tx = db.begin().await?;
    for &days in &settings.after_add_days {
        let due = added_at_ms.saturating_add(i64::from(days).saturating_mul(86_400_000));
        let title = format!("添加客户 {days} 天回访");
        let dedup = format!("after_add:{user_id}:{external_user_id}:{days}:{added_at_ms}");
        let n = on_tx!(&mut tx, |conn| sqlx::query(INSERT)
            .bind(corp_id)
            .bind(external_user_id)
            .bind(user_id)
            .bind(&title)
            .bind(due)
            .bind(now)
            .bind(&dedup)
            .execute(&mut *conn)
            .await
            .map(|r| r.rows_affected()))?;
        created += usize::try_from(n).unwrap_or(0);
    }
    tx.commit().await?;
    Ok(created)
}

/// The app message of a due reminder, at most 2048 bytes.
pub fn reminder_message(title: &str, customer: &str, due_at_ms: i64) -> String {
    let due = DateTime::from_timestamp_millis(due_at_ms)
        .zip(FixedOffset::east_opt(CHINA_OFFSET_SECS))
        .map(|(t, china)| t.with_timezone(&china).format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default();
    let text = format!(
        "跟进提醒：{}（客户：{}，到期 {due}）",
        truncate_chars(title, MAX_TITLE_CHARS),
        truncate_chars(customer, 64)
    );
    crate::pipeline::worker::truncate_bytes(&text, MAX_MESSAGE_BYTES).to_owned()
}

fn truncate_chars(s: &str, max: usize) -> &str {
    s.char_indices().nth(max).map_or(s, |(i, _)| &s[..i])
}

/// What a claim returns: the reminder's fields the message needs.
type Claimed = (String, String, String, String, i64, i64);

/// Claims one due reminder and enqueues its app message in the same transaction. `None` when
/// another run (this or another instance) claimed it first, or it was done or snoozed meanwhile.
async fn notify_one(db: &Db, id: i64, now_ms: i64) -> Result<Option<i64>, StoreError> {
    // The `notified_at_ms IS NULL` test makes the claim atomic: on PostgreSQL a concurrent claim
    // of the same row waits for ours and then finds it claimed; SQLite has one writer.
    const CLAIM: &str = "UPDATE reminder SET notified_at_ms = $2, updated_at_ms = $2 \
        WHERE id = $1 AND state = 'open' AND notified_at_ms IS NULL AND due_at_ms <= $2 \
        RETURNING corp_id, external_user_id, assignee, title, due_at_ms, snoozes";
    const NAME: &str = "SELECT name FROM customer WHERE corp_id = $1 AND external_user_id = $2";
    const SET_OUTBOX: &str = "UPDATE reminder SET outbox_id = $2 WHERE id = $1";
    let mut tx = db.begin().await?;
    let claimed: Option<Claimed> = on_tx!(&mut tx, |conn| sqlx::query_as(CLAIM)
        .bind(id)
        .bind(now_ms)
        .fetch_optional(&mut *conn)
        .await)?;
    let Some((corp_id, ext, assignee, title, due_at_ms, snoozes)) = claimed else {
        return Ok(None);
    };
    let name: Option<String> = on_tx!(&mut tx, |conn| sqlx::query_scalar(NAME)
        .bind(&corp_id)
        .bind(&ext)
        .fetch_optional(&mut *conn)
        .await)?;
    let customer = name
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| ext.clone());
    let intent = Intent::MessageSend {
        to_users: vec![assignee],
        message: Message::Text {
            content: reminder_message(&title, &customer, due_at_ms),
        },
    };
    let key = format!("reminder:{id}:{snoozes}");
    let outbox_id =
        outbox::enqueue(&mut tx, &corp_id, &intent, "system", Some(&key), now_ms).await?;
    on_tx!(&mut tx, |conn| sqlx::query(SET_OUTBOX)
        .bind(id)
        .bind(outbox_id)
        .execute(&mut *conn)
        .await
        .map(|_| ()))?;
    tx.commit().await?;
    Ok(Some(outbox_id))
}

/// Hands every open reminder due by `now_ms` and not yet notified to the outbox, each as an app
/// message to its assignee, once (see [`notify_one`]'s claim). Returns how many this run sent.
pub async fn run_due_reminders_once(db: &Db, now_ms: i64) -> Result<usize, StoreError> {
    const DUE: &str = "SELECT id FROM reminder WHERE state = 'open' AND notified_at_ms IS NULL \
        AND due_at_ms <= $1 AND id > $2 ORDER BY id LIMIT $3";
    let mut sent = 0;
    let mut after = 0_i64;
    loop {
        let ids: Vec<i64> = on_db!(db, |pool| sqlx::query_scalar(DUE)
            .bind(now_ms)
            .bind(after)
            .bind(CLAIM_BATCH)
            .fetch_all(pool)
            .await)?;
        for &id in &ids {
            if notify_one(db, id, now_ms).await?.is_some() {
                sent += 1;
            }
        }
        if sent > 0 {
            outbox::notify();
        }
        match ids.last() {
            Some(&last) if i64::try_from(ids.len()).unwrap_or(0) == CLAIM_BATCH => after = last,
            _ => break,
        }
    }
    if sent > 0 {
        metrics::counter!("scrm_reminders_sent_total").increment(u64::try_from(sent).unwrap_or(0));
    }
    Ok(sent)
}

/// The reminder loop of `serve`: every `check_interval_secs`, [`run_due_reminders_once`]; returns
/// when `stop` turns true (or its sender is gone).
pub async fn run_reminders(db: Db, settings: ReminderSettings, mut stop: watch::Receiver<bool>) {
    let mut tick =
        crate::platform::ticker::interval(Duration::from_secs(settings.check_interval_secs));
    while crate::platform::ticker::next_tick(&mut tick, &mut stop).await {
        match run_due_reminders_once(&db, crate::platform::db::now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(sent = n, "due reminders handed to the outbox"),
            Err(e) => {
                tracing::warn!(error = %e, cause = ?std::error::Error::source(&e), "cannot send due reminders")
            }
        }
    }
}
