//! The outbox: every call that changes WeCom (`mark_tag`, `remark`, `add/edit/del_corp_tag`,
//! `message/send`, the reassignment calls) is first written here as an [`Intent`], in the same
//! transaction as our own change ([`enqueue`] takes the [`Tx`]), then delivered by the outbox
//! workers ([`OutboxQueue`] on the shared [`crate::pipeline::worker::WorkerPool`]): leased, retried with
//! backoff, dead-lettered with a reason, and put back by an operator ([`retry`]).
//!
//! Order: items with the same `(corp, order_key)` are delivered one at a time, in the order they
//! were written ([`Intent::order_key`]: one customer's tag and remark edits, the tag library, the
//! messages to one member). A dead item stops blocking its successors: they are newer intents.
//!
//! Idempotency: an intent written twice under the same `idempotency_key` is stored once; a
//! delivery repeated (a lease lost mid-call, a crash between the call and recording it) does not
//! double its effect — `mark_tag`, `remark`, `edit_corp_tag` set state; a `del_corp_tag` of a tag
//! already gone counts as done; a repeated `add_corp_tag` first looks for the tags it would create;
//! `message/send` asks WeCom's duplicate check to drop a second identical message.

use serde::{Deserialize, Serialize};
use std::sync::{Arc, LazyLock};
use tokio::sync::Notify;

use std::time::Duration;

use wecom_sdk::api::ApiError;
use wecom_sdk::{CorpId, ExternalUserId, UserId};

use crate::pipeline::worker::{HandlerError, LeaseTable, MAX_REASON_BYTES};
use crate::platform::db::{Db, StoreError, Tx};
use crate::{on_db, on_tx};

/// The outbox's lease columns.
pub const OUTBOX: LeaseTable = LeaseTable {
    table: "outbox",
    done_at: "delivered_at_ms",
};

/// A change to make in WeCom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Intent {
    /// `externalcontact/mark_tag` on one (staff, customer) relation.
    MarkTag {
        /// The staff member.
        user_id: UserId,
        /// The customer.
        external_user_id: ExternalUserId,
        /// Corp tag ids to add.
        add: Vec<String>,
        /// Corp tag ids to remove.
        remove: Vec<String>,
    },
    /// `externalcontact/remark`: remark and/or description of one relation.
    Remark {
        /// The staff member.
        user_id: UserId,
        /// The customer.
        external_user_id: ExternalUserId,
        /// New remark (≤ 20 characters).
        remark: Option<String>,
        /// New description (≤ 150 characters).
        description: Option<String>,
    },
    /// `externalcontact/add_corp_tag`: tags into a group (`group_id`) or a new group.
    AddCorpTag {
        /// An existing group.
        group_id: Option<String>,
        /// A group to create (or add to, when WeCom has one of that name).
        group_name: Option<String>,
        /// Order of a new group.
        group_order: Option<u32>,
        /// The tags: name and order.
        tags: Vec<NewTag>,
    },
    /// `externalcontact/edit_corp_tag`: rename or reorder a tag or a group.
    EditCorpTag {
        /// A tag or group id.
        id: String,
        /// New name.
        name: Option<String>,
        /// New order.
        order: Option<u32>,
    },
    /// `externalcontact/del_corp_tag`.
    DelCorpTag {
        /// Tags to delete.
        tag_ids: Vec<String>,
        /// Groups to delete.
        group_ids: Vec<String>,
    },
    /// `externalcontact/(resigned/)transfer_customer`: up to 100 customers of one reassignment
    /// job to one taker (`src/transfers`).
    TransferCustomers {
        /// The `transfer_job`.
        job_id: i64,
        /// `resigned` or `on_job`.
        mode: crate::platform::wecom::TransferMode,
        /// The member handing over.
        handover_user_id: String,
        /// The taker.
        takeover_user_id: String,
        /// The customers (1–100).
        external_user_ids: Vec<String>,
        /// On-job only: what WeCom tells the customer.
        success_msg: Option<String>,
    },
    /// `externalcontact/groupchat/(onjob_)transfer`: up to 100 group chats of one job to one new
    /// owner.
    TransferGroupChats {
        /// The `transfer_job`.
        job_id: i64,
        /// `resigned` or `on_job`.
        mode: crate::platform::wecom::TransferMode,
        /// The old owner.
        handover_user_id: String,
        /// The new owner.
        new_owner: String,
        /// The chats (1–100).
        chat_ids: Vec<String>,
    },
    /// `message/send` from the corp's notification app.
    MessageSend {
        /// Receivers (staff user ids).
        to_users: Vec<String>,
        /// What it says.
        message: Message,
    },
}

/// A tag to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTag {
    /// Name (≤ 30 characters).
    pub name: String,
    /// Order (bigger first).
    pub order: Option<u32>,
}

/// An app message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// Plain text.
    Text {
        /// The text (≤ 2048 bytes).
        content: String,
    },
    /// A card with a link.
    TextCard {
        /// Title (≤ 128 bytes).
        title: String,
        /// Description (≤ 512 bytes).
        description: String,
        /// Link.
        url: String,
    },
}

impl Message {
    /// A text card cut to WeCom's limits (title 128 bytes, description 512 bytes).
    pub fn text_card(title: &str, description: &str, url: String) -> Self {
        Self::TextCard {
            title: crate::pipeline::worker::truncate_bytes(title, 128).to_owned(),
            description: crate::pipeline::worker::truncate_bytes(description, 512).to_owned(),
            url,
        }
    }
}

impl Intent {
    /// The `kind` column.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::MarkTag { .. } => "mark_tag",
            Self::Remark { .. } => "remark",
            Self::AddCorpTag { .. } => "add_corp_tag",
            Self::EditCorpTag { .. } => "edit_corp_tag",
            Self::DelCorpTag { .. } => "del_corp_tag",
            Self::TransferCustomers { .. } => "transfer_customer",
            Self::TransferGroupChats { .. } => "transfer_group_chat",
            Self::MessageSend { .. } => "message_send",
        }
    }

    /// Items with the same key are delivered one at a time, in order.
    pub fn order_key(&self) -> String {
        match self {
            Self::MarkTag {
                external_user_id, ..
            }
            | Self::Remark {
                external_user_id, ..
            } => customer_key(external_user_id.as_str()),
            Self::AddCorpTag { .. } | Self::EditCorpTag { .. } | Self::DelCorpTag { .. } => {
                "tag_library".to_owned()
            }
            // One member's handover calls one at a time: WeCom's checks (already in transfer,
            // the daily chat budget) see the previous call's effect.
            Self::TransferCustomers {
                handover_user_id, ..
            }
            | Self::TransferGroupChats {
                handover_user_id, ..
            } => format!("transfer:{handover_user_id}"),
            Self::MessageSend { to_users, .. } => format!("message:{}", to_users.join("|")),
        }
    }
}

/// The prefix of a customer's [`customer_key`].
const CUSTOMER_KEY: &str = "customer:";

/// The order key of one customer's relation edits.
pub fn customer_key(external_user_id: &str) -> String {
    format!("{CUSTOMER_KEY}{external_user_id}")
}

static WAKE: LazyLock<Arc<Notify>> = LazyLock::new(|| Arc::new(Notify::new()));

/// What the outbox workers wait on besides their poll: notified by [`notify`].
pub fn wakeups() -> Arc<Notify> {
    Arc::clone(&WAKE)
}

/// Tells the outbox workers of this process that items were committed.
pub fn notify() {
    WAKE.notify_one();
}

/// Writes `intent` inside `tx`. With an `idempotency_key` the same intent is stored once per
/// corp: the second write returns the first item's id. Call [`notify`] after the commit.
pub async fn enqueue(
    tx: &mut Tx,
    corp_id: &str,
    intent: &Intent,
    actor: &str,
    idempotency_key: Option<&str>,
    now_ms: i64,
) -> Result<i64, StoreError> {
    const INSERT: &str = "INSERT INTO outbox (corp_id, kind, order_key, payload, idempotency_key, \
        actor, created_at_ms, updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
        ON CONFLICT (corp_id, idempotency_key) DO NOTHING RETURNING id";
    const EXISTING: &str = "SELECT id FROM outbox WHERE corp_id = $1 AND idempotency_key = $2";
    let payload = serde_json::to_string(intent)
        .map_err(|e| StoreError::Other(sqlx::Error::Encode(e.into())))?;
    let id: Option<i64> = on_tx!(tx, |conn| sqlx::query_scalar(INSERT)
        .bind(corp_id)
        .bind(intent.kind())
        .bind(intent.order_key())
        .bind(&payload)
        .bind(idempotency_key)
        .bind(actor)
        .bind(now_ms)
        .fetch_optional(&mut *conn)
        .await)?;
    if let Some(id) = id {
        // Inside the span of whatever wrote it (an inbox event, an API request, a job), so a log
        // line follows a callback to its WeCom call (the delivery's span is `outbox_item{id}`).
        tracing::debug!(
            outbox_id = id,
            corp_id,
            kind = intent.kind(),
            "outbox item written"
        );
        return Ok(id);
    }
    let id = on_tx!(tx, |conn| sqlx::query_scalar(EXISTING)
        .bind(corp_id)
        .bind(idempotency_key)
        .fetch_one(&mut *conn)
        .await)?;
    Ok(id)
}

/// Whether an intent was written under `idempotency_key` already.
pub async fn exists(tx: &mut Tx, corp_id: &str, idempotency_key: &str) -> Result<bool, StoreError> {
    const SQL: &str = "SELECT COUNT(*) FROM outbox WHERE corp_id = $1 AND idempotency_key = $2";
    let n: i64 = on_tx!(tx, |conn| sqlx::query_scalar(SQL)
        .bind(corp_id)
        .bind(idempotency_key)
        .fetch_one(&mut *conn)
        .await)?;
    Ok(n > 0)
}

/// One outbox item, as operators and the API see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct OutboxEntry {
    /// Id.
    pub id: i64,
    /// Corp.
    pub corp_id: String,
    /// `mark_tag`, `remark`, `add_corp_tag`, `edit_corp_tag`, `del_corp_tag`, `message_send`,
    /// `transfer_customer`, `transfer_group_chat`.
    pub kind: String,
    /// Items with the same key go one at a time.
    pub order_key: String,
    /// The intent, as JSON.
    pub payload: String,
    /// Who caused it.
    pub actor: String,
    /// `pending`, `done`, `dead`, `cancelled`.
    pub state: String,
    /// Delivery attempts so far.
    pub attempts: i32,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// What WeCom answered, when it matters (created tag ids, a message id), as JSON.
    pub result: Option<String>,
    /// Written, epoch ms.
    pub created_at_ms: i64,
    /// Delivered, epoch ms.
    pub delivered_at_ms: Option<i64>,
    /// Became a dead letter, epoch ms.
    pub dead_at_ms: Option<i64>,
    /// While pending: not before this (a retry's backoff or a held lease).
    pub lease_until_ms: i64,
}

const COLUMNS: &str = "id, corp_id, kind, order_key, payload, actor, state, attempts, last_error, \
    result, created_at_ms, delivered_at_ms, dead_at_ms, lease_until_ms";

/// Which items [`list`] shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxFilter {
    /// Only this corp.
    pub corp_id: Option<String>,
    /// Only this state.
    pub state: Option<String>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only this order key (e.g. one customer's).
    pub order_key: Option<String>,
    /// Only ids below this (paging, newest first).
    pub before_id: Option<i64>,
    /// At most this many.
    pub limit: i64,
}

/// Items, newest first.
pub async fn list(db: &Db, f: &OutboxFilter) -> Result<Vec<OutboxEntry>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM outbox WHERE ($1 IS NULL OR corp_id = $1) \
         AND ($2 IS NULL OR state = $2) AND ($3 IS NULL OR kind = $3) \
         AND ($4 IS NULL OR order_key = $4) AND ($5 IS NULL OR id < $5) ORDER BY id DESC LIMIT $6"
    );
    let rows = on_db!(db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
        .bind(f.corp_id.as_deref())
        .bind(f.state.as_deref())
        .bind(f.kind.as_deref())
        .bind(f.order_key.as_deref())
        .bind(f.before_id)
        .bind(f.limit.clamp(1, 1000))
        .fetch_all(pool)
        .await)?;
    Ok(rows)
}

/// One item.
pub async fn get(db: &Db, id: i64) -> Result<OutboxEntry, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM outbox WHERE id = $1");
    let row = on_db!(db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
        .bind(id)
        .fetch_optional(pool)
        .await)?;
    row.ok_or(StoreError::NotFound)
}

/// Pending relation edits (`mark_tag`, `remark`) of one customer, oldest first: what our record
/// shows that WeCom has not been told yet.
pub async fn pending_for_customer(
    db: &Db,
    corp_id: &CorpId,
    external_user_id: &ExternalUserId,
) -> Result<Vec<(i64, Intent)>, StoreError> {
    let mut by_customer = pending_for_customers(db, corp_id, &[external_user_id.as_str()]).await?;
    Ok(by_customer
        .remove(external_user_id.as_str())
        .unwrap_or_default())
}

/// [`pending_for_customer`] for many customers in one query, by external user id (customers with
/// nothing pending are absent).
pub async fn pending_for_customers(
    db: &Db,
    corp_id: &CorpId,
    external_user_ids: &[&str],
) -> Result<std::collections::HashMap<String, Vec<(i64, Intent)>>, StoreError> {
    let keys: Vec<String> = external_user_ids.iter().map(|e| customer_key(e)).collect();
    let sql = format!(
        "SELECT id, order_key, payload FROM outbox WHERE corp_id = $1 AND order_key IN {} \
         AND state = 'pending' ORDER BY id",
        crate::platform::db::in_json_list(db, 2)
    );
    let rows: Vec<(i64, String, String)> =
        on_db!(db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(corp_id.as_str())
            .bind(crate::platform::db::json_list(&keys))
            .fetch_all(pool)
            .await)?;
    let mut by_customer: std::collections::HashMap<String, Vec<(i64, Intent)>> =
        std::collections::HashMap::new();
    for (id, key, payload) in rows {
        let (Some(ext), Ok(intent)) = (
            key.strip_prefix(CUSTOMER_KEY),
            serde_json::from_str::<Intent>(&payload),
        ) else {
            continue;
        };
        by_customer
            .entry(ext.to_owned())
            .or_default()
            .push((id, intent));
    }
    Ok(by_customer)
}

/// Puts dead items back for delivery now, with their attempts reset: `id` one item, else every
/// dead item (of `corp_id`, when given). Returns how many.
pub async fn retry(
    db: &Db,
    id: Option<i64>,
    corp_id: Option<&str>,
    now_ms: i64,
) -> Result<u64, StoreError> {
    const SQL: &str = "UPDATE outbox SET state = 'pending', lease_owner = NULL, lease_until_ms = 0, \
        attempts = 0, dead_at_ms = NULL, updated_at_ms = $3 \
        WHERE state = 'dead' AND ($1 IS NULL OR id = $1) AND ($2 IS NULL OR corp_id = $2)";
    let n = on_db!(db, |pool| sqlx::query(SQL)
        .bind(id)
        .bind(corp_id)
        .bind(now_ms)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
    if n > 0 {
        notify();
    }
    Ok(n)
}

/// Records what WeCom answered for a delivered item.
pub(crate) async fn set_result(
    db: &Db,
    id: i64,
    result: &serde_json::Value,
) -> Result<(), StoreError> {
    const SQL: &str = "UPDATE outbox SET result = $2 WHERE id = $1";
    let mut text = result.to_string();
    if text.len() > MAX_REASON_BYTES * 4 {
        text = serde_json::json!({"truncated": true}).to_string();
    }
    on_db!(db, |pool| sqlx::query(SQL)
        .bind(id)
        .bind(text)
        .execute(pool)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// Counts by state, and the age of the oldest pending item, for `/metrics` and `scrm outbox`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OutboxStats {
    /// Waiting for delivery (or being delivered).
    pub pending: i64,
    /// Delivered.
    pub done: i64,
    /// Dead letters.
    pub dead: i64,
    /// Oldest pending item's age, ms (0 when none).
    pub oldest_pending_age_ms: i64,
}

/// [`OutboxStats`] now.
pub async fn stats(db: &Db, corp_id: Option<&str>, now_ms: i64) -> Result<OutboxStats, StoreError> {
    const SQL: &str = "SELECT state, COUNT(*), MIN(created_at_ms) FROM outbox \
        WHERE ($1 IS NULL OR corp_id = $1) GROUP BY state";
    let rows: Vec<(String, i64, Option<i64>)> = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp_id)
        .fetch_all(pool)
        .await)?;
    let mut s = OutboxStats::default();
    for (state, n, oldest) in rows {
        match state.as_str() {
            "pending" => {
                s.pending = n;
                s.oldest_pending_age_ms = oldest.map_or(0, |t| (now_ms - t).max(0));
            }
            "done" => s.done = n,
            "dead" => s.dead = n,
            _ => {}
        }
    }
    Ok(s)
}

/// What waits for WeCom or failed for good, as the console's overview shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OutboxBacklog {
    /// Waiting for delivery (or being delivered).
    pub pending: i64,
    /// Dead letters.
    pub dead: i64,
    /// Oldest pending item's age, ms (0 when none).
    pub oldest_pending_age_ms: i64,
}

/// [`OutboxBacklog`] now: the pending and dead items only, through `outbox_state_id`, so it costs
/// the same however many items were delivered ([`stats`] counts those too).
pub async fn backlog(
    db: &Db,
    corp_id: Option<&str>,
    now_ms: i64,
) -> Result<OutboxBacklog, StoreError> {
    const SQL: &str = "SELECT state, COUNT(*), MIN(created_at_ms) FROM outbox \
        WHERE state IN ('pending', 'dead') AND ($1 IS NULL OR corp_id = $1) GROUP BY state";
    let rows: Vec<(String, i64, Option<i64>)> = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp_id)
        .fetch_all(pool)
        .await)?;
    let mut b = OutboxBacklog::default();
    for (state, n, oldest) in rows {
        if state == "pending" {
            b.pending = n;
            b.oldest_pending_age_ms = oldest.map_or(0, |t| (now_ms - t).max(0));
        } else {
            b.dead = n;
        }
    }
    Ok(b)
}

/// A claimed outbox item.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OutboxItem {
    /// Id.
    pub id: i64,
    /// Corp.
    pub corp_id: String,
    /// Kind.
    pub kind: String,
    /// The intent as JSON.
    pub payload: String,
    /// Attempts so far, this one included.
    pub attempts: i32,
    /// Written, epoch ms.
    pub created_at_ms: i64,
}

/// Claims the head of each key: a pending item whose lease (or backoff) has run out and that has
/// no older pending item of the same `(corp, order_key)` — one held by another worker or waiting
/// out a retry blocks its successors, which keeps each key in order across instances.
pub(crate) async fn claim(
    db: &Db,
    owner: &str,
    now_ms: i64,
    lease: Duration,
    limit: usize,
) -> Result<Vec<OutboxItem>, StoreError> {
    const HEAD: &str = "o.state = 'pending' AND o.lease_until_ms <= $3 AND NOT EXISTS \
        (SELECT 1 FROM outbox p WHERE p.corp_id = o.corp_id AND p.order_key = o.order_key \
        AND p.state = 'pending' AND p.id < o.id)";
    if limit == 0 {
        return Ok(Vec::new());
    }
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let until = now_ms.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
    let sql = match db {
        Db::Postgres(_) => format!(
            "WITH picked AS (SELECT o.id FROM outbox o WHERE {HEAD} ORDER BY o.id LIMIT $4 \
             FOR UPDATE SKIP LOCKED) \
             UPDATE outbox SET lease_owner = $1, lease_until_ms = $2, attempts = outbox.attempts + 1 \
             FROM picked WHERE outbox.id = picked.id AND outbox.state = 'pending' \
             RETURNING outbox.id, outbox.corp_id, outbox.kind, outbox.payload, outbox.attempts, \
             outbox.created_at_ms"
        ),
        Db::Sqlite(_) => format!(
            "UPDATE outbox SET lease_owner = $1, lease_until_ms = $2, attempts = attempts + 1 \
             WHERE id IN (SELECT o.id FROM outbox o WHERE {HEAD} ORDER BY o.id LIMIT $4) \
             AND state = 'pending' AND lease_until_ms <= $3 \
             RETURNING id, corp_id, kind, payload, attempts, created_at_ms"
        ),
    };
    let _turn = db.write_turn().await?;
    let mut rows: Vec<OutboxItem> =
        on_db!(db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(owner)
            .bind(until)
            .bind(now_ms)
            .bind(limit)
            .fetch_all(pool)
            .await)?;
    rows.sort_by_key(|r| r.id);
    Ok(rows)
}

/// What a WeCom error means for an item: retry (when waiting can help) or a dead letter.
pub(crate) fn failure(api: &str, e: &ApiError) -> HandlerError {
    let reason = format!("{api}: {e}");
    match e {
        ApiError::RateLimited { retry_after, .. } => HandlerError::Defer {
            reason,
            after: *retry_after,
        },
        ApiError::Invalid { .. } => HandlerError::permanent(reason),
        ApiError::Wecom { errcode: 84061, .. } => HandlerError::permanent(format!(
            "{reason} (该成员已不再跟进此客户 / the staff member no longer follows this customer)"
        )),
        ApiError::Wecom {
            errcode:
                40096 | 40003 | 60111 | 40058 | 40063 | 40071 | 40126 | 45002 | 81013 | 48002 | 60011
                | 84074 | 301002 | 40056,
            ..
        } => HandlerError::permanent(reason),
        _ => HandlerError::retry(reason),
    }
}
