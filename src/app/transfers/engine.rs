//! The engine that carries running jobs out: hands planned items to the outbox in calls of at
//! most 100 per (mode, taker), keeps group chats within the daily budget per old owner (the rest
//! `scheduled` for the next day, China Standard Time), polls `transfer_result` for customers in
//! WeCom's 24 h window, applies the carry-over when a customer is taken over, and finishes a job
//! once every item is final (audit entry, an app message per taker).
//!
//! Everything it decides is written before anything is sent: an item becomes `sent` in the same
//! transaction that writes the outbox call carrying it, so a restart never sends an item twice
//! and never forgets one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use tokio::sync::watch;
use wecom_sdk::{CorpId, ExternalUserId, UserId};

use crate::domain::customers::RelationKey;
use crate::domain::transfers::{
    BATCH, Mode, TransferItem, TransferJob, Val, job_by_id, update_items,
};
use crate::domain::{customers, followup, transfers};
use crate::on_db;
use crate::pipeline::outbox::{self, Intent, Message};
use crate::platform::config::TransferSettings;
use crate::platform::coord::LeaderLock;
use crate::platform::db::{Db, StoreError, Tx, now_ms};
use crate::platform::wecom::Wecom;

pub use crate::domain::transfers::wake;

const DAY_MS: i64 = 86_400_000;
const CST_OFFSET_MS: i64 = 8 * 3_600_000;
/// First look at a customer's transfer state after the call (refusals can be immediate).
pub(crate) const FIRST_POLL_MS: i64 = 60_000;

/// The start of the China Standard Time day holding `now_ms`.
pub fn day_start_ms(now_ms: i64) -> i64 {
    (now_ms + CST_OFFSET_MS).div_euclid(DAY_MS) * DAY_MS - CST_OFFSET_MS
}

/// The next midnight, China Standard Time, after `now_ms`.
pub fn next_day_ms(now_ms: i64) -> i64 {
    day_start_ms(now_ms) + DAY_MS
}

pub(crate) use crate::platform::db::placeholders;

/// What one [`advance`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Advanced {
    /// Outbox calls written.
    pub calls: usize,
    /// Group chats moved to the next day.
    pub scheduled: u64,
    /// Customers whose state was read from `transfer_result`.
    pub polled: usize,
    /// Items that reached a final state.
    pub finished_items: u64,
    /// Jobs finished.
    pub finished_jobs: usize,
}

/// One round over every running job, at `now_ms` (the engine's clock: tests pass the emulator's).
pub async fn advance(
    db: &Db,
    wecom: &Wecom,
    settings: &TransferSettings,
    now_ms: i64,
) -> Result<Advanced, StoreError> {
    const RUNNING: &str = "SELECT id FROM transfer_job WHERE state = 'running' ORDER BY id";
    let ids: Vec<i64> = on_db!(db, |pool| sqlx::query_scalar(RUNNING).fetch_all(pool).await)?;
    let mut out = Advanced::default();
    for id in ids {
        let job = job_by_id(db, id).await?;
        out.finished_items += transfers::fail_dead_calls(db, id, now_ms).await?;
        out.calls += dispatch_customers(db, &job, now_ms).await?;
        let (calls, scheduled) = dispatch_chats(db, &job, settings, now_ms).await?;
        out.calls += calls;
        out.scheduled += scheduled;
        out.polled += poll(db, wecom, &job, settings, now_ms).await?;
        if finish_if_done(db, &job, now_ms).await? {
            out.finished_jobs += 1;
        }
    }
    if out.calls > 0 {
        outbox::notify();
    }
    Ok(out)
}

/// Runs [`advance`] every `tick_secs` and whenever [`wake`] is called, until `stop` turns true.
/// With several instances one leads (`leader`); the others skip their rounds. Correctness does
/// not depend on it (claims are conditional updates), only the number of `transfer_result` reads.
pub async fn run(
    db: Db,
    wecom: Wecom,
    settings: TransferSettings,
    leader: LeaderLock,
    mut stop: watch::Receiver<bool>,
) {
    let tick = Duration::from_secs(settings.tick_secs.max(1));
    loop {
        if *stop.borrow() {
            let _ = leader.release().await;
            return;
        }
        let leads = match leader.acquire().await {
            Ok(leads) => leads,
            Err(e) => {
                tracing::warn!(error = %e, "transfer engine: leader lock unavailable; running the round anyway");
                true
            }
        };
        if leads && let Err(e) = advance(&db, &wecom, &settings, now_ms()).await {
            tracing::warn!(error = %e, "transfer engine round failed; trying again");
        }
        tokio::select! {
            () = tokio::time::sleep(tick) => {}
            () = crate::domain::transfers::woken() => {}
            _ = stop.changed() => {}
        }
    }
}

#[derive(Debug, sqlx::FromRow)]
struct Pending {
    id: i64,
    target_id: String,
    takeover_user_id: String,
    mode: String,
}

async fn pending(db: &Db, job_id: i64, sql: &str, now_ms: i64) -> Result<Vec<Pending>, StoreError> {
    let rows = on_db!(db, |pool| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(job_id)
        .bind(now_ms)
        .fetch_all(pool)
        .await)?;
    Ok(rows)
}

/// Items of one kind go out in calls of at most 100 per (mode, taker), in their order; `intent`
/// makes the call for (mode, taker, targets). Returns the calls written.
async fn send_in_calls(
    db: &Db,
    job: &TransferJob,
    rows: Vec<Pending>,
    now_ms: i64,
    intent: impl Fn(Mode, &str, Vec<String>) -> Intent,
) -> Result<usize, StoreError> {
    let mut by_call: BTreeMap<(String, String), Vec<Pending>> = BTreeMap::new();
    for r in rows {
        by_call
            .entry((r.mode.clone(), r.takeover_user_id.clone()))
            .or_default()
            .push(r);
    }
    let mut calls = 0;
    for ((mode, taker), items) in by_call {
        let mode = Mode::parse(&mode).unwrap_or(Mode::OnJob);
        for chunk in items.chunks(BATCH) {
            let targets = chunk.iter().map(|p| p.target_id.clone()).collect();
            if hand_over(db, job, &intent(mode, &taker, targets), chunk, now_ms).await? {
                calls += 1;
            }
        }
    }
    Ok(calls)
}

/// Planned customers go out in calls of at most 100 per (mode, taker).
#[tracing::instrument(skip_all, fields(job_id = job.id, corp_id = %job.corp_id))]
async fn dispatch_customers(db: &Db, job: &TransferJob, now_ms: i64) -> Result<usize, StoreError> {
    const SQL: &str = "SELECT id, target_id, takeover_user_id, mode FROM transfer_item \
        WHERE job_id = $1 AND kind = 'customer' AND state = 'planned' AND $2 >= 0 ORDER BY id";
    let rows = pending(db, job.id, SQL, now_ms).await?;
    send_in_calls(db, job, rows, now_ms, |mode, taker, targets| {
        Intent::TransferCustomers {
            job_id: job.id,
            mode,
            handover_user_id: job.handover_user_id.to_string(),
            takeover_user_id: taker.to_owned(),
            external_user_ids: targets,
            success_msg: job.success_msg.clone().filter(|_| mode == Mode::OnJob),
        }
    })
    .await
}

/// Group chats due now go out within today's budget per old owner; the rest wait for the next
/// day (`scheduled`). Returns (calls written, chats moved to the next day).
#[tracing::instrument(skip_all, fields(job_id = job.id, corp_id = %job.corp_id))]
async fn dispatch_chats(
    db: &Db,
    job: &TransferJob,
    settings: &TransferSettings,
    now_ms: i64,
) -> Result<(usize, u64), StoreError> {
    const DUE: &str = "SELECT id, target_id, takeover_user_id, mode FROM transfer_item \
        WHERE job_id = $1 AND kind = 'group_chat' AND (state = 'planned' \
        OR (state = 'scheduled' AND not_before_ms <= $2)) ORDER BY id";
    const USED: &str = "SELECT COUNT(*) FROM transfer_item WHERE corp_id = $1 \
        AND handover_user_id = $2 AND kind = 'group_chat' AND state IN ('sent', 'done') \
        AND sent_at_ms >= $3";
    let due = pending(db, job.id, DUE, now_ms).await?;
    if due.is_empty() {
        return Ok((0, 0));
    }
    let day = day_start_ms(now_ms);
    let used: i64 = on_db!(db, |pool| sqlx::query_scalar(USED)
        .bind(job.corp_id.as_str())
        .bind(job.handover_user_id.as_str())
        .bind(day)
        .fetch_one(pool)
        .await)?;
    let budget = usize::try_from(i64::from(settings.groups_per_owner_per_day) - used).unwrap_or(0);
    let mut due = due;
    let later: Vec<Pending> = if due.len() > budget {
        due.split_off(budget)
    } else {
        Vec::new()
    };
    let calls = send_in_calls(db, job, due, now_ms, |mode, taker, targets| {
        Intent::TransferGroupChats {
            job_id: job.id,
            mode,
            handover_user_id: job.handover_user_id.to_string(),
            new_owner: taker.to_owned(),
            chat_ids: targets,
        }
    })
    .await?;
    let scheduled = schedule(db, &later, next_day_ms(now_ms), now_ms).await?;
    Ok((calls, scheduled))
}

/// Moves chats to `scheduled` not before `not_before_ms`.
async fn schedule(
    db: &Db,
    items: &[Pending],
    not_before_ms: i64,
    now_ms: i64,
) -> Result<u64, StoreError> {
    let ids: Vec<i64> = items.iter().map(|p| p.id).collect();
    set_scheduled(db, &ids, not_before_ms, now_ms).await
}

/// Items by id back to `scheduled` (no call) for `not_before_ms`.
pub(crate) async fn set_scheduled(
    db: &Db,
    ids: &[i64],
    not_before_ms: i64,
    now_ms: i64,
) -> Result<u64, StoreError> {
    update_items(
        db,
        "state = 'scheduled', not_before_ms = $1, outbox_id = NULL, sent_at_ms = NULL, \
         updated_at_ms = $2",
        "state IN ('planned', 'scheduled', 'sent')",
        &[Val::Int(Some(not_before_ms)), Val::Int(Some(now_ms))],
        ids,
    )
    .await
}

/// One call: the items become `sent` and the outbox call is written, in one transaction. When
/// another engine round took some of them meanwhile, nothing is written.
async fn hand_over(
    db: &Db,
    job: &TransferJob,
    intent: &Intent,
    chunk: &[Pending],
    now_ms: i64,
) -> Result<bool, StoreError> {
    let ids: Vec<i64> = chunk.iter().map(|p| p.id).collect();
    let mut tx = db.begin().await?;
    let n = transfers::mark_sent_in(&mut tx, &ids, now_ms).await?;
    if usize::try_from(n).ok() != Some(chunk.len()) {
        tx.rollback().await?;
        return Ok(false);
    }
    let outbox_id = outbox::enqueue(
        &mut tx,
        job.corp_id.as_str(),
        intent,
        &format!("transfer_job:{}", job.id),
        None,
        now_ms,
    )
    .await?;
    transfers::link_outbox_in(&mut tx, &ids, outbox_id).await?;
    tx.commit().await?;
    Ok(true)
}

/// Reads `transfer_result` for every taker with customers due for a look, and applies it.
#[tracing::instrument(skip_all, fields(job_id = job.id, corp_id = %job.corp_id))]
async fn poll(
    db: &Db,
    wecom: &Wecom,
    job: &TransferJob,
    settings: &TransferSettings,
    now_ms: i64,
) -> Result<usize, StoreError> {
    const DUE: &str = "SELECT DISTINCT takeover_user_id, mode FROM transfer_item WHERE job_id = $1 \
        AND kind = 'customer' AND state = 'waiting' AND COALESCE(next_poll_ms, 0) <= $2";
    let pairs: Vec<(String, String)> = on_db!(db, |pool| sqlx::query_as(DUE)
        .bind(job.id)
        .bind(now_ms)
        .fetch_all(pool)
        .await)?;
    let mut polled = 0;
    for (taker, mode) in pairs {
        let mode = Mode::parse(&mode).unwrap_or(Mode::OnJob);
        let Ok(taker) = UserId::try_from(taker) else {
            continue;
        };
        let states = match transfer_states(wecom, &job.corp_id, mode, &job.handover_user_id, &taker)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(job = job.id, taker = %taker, error = %e, "transfer_result failed; polling again next round");
                continue;
            }
        };
        polled += states.len();
        apply_states(db, job, taker.as_str(), &states, settings, now_ms).await?;
    }
    Ok(polled)
}

/// A customer's state in WeCom: status (1–5) and takeover time (epoch ms, 0 when none).
pub(crate) type States = HashMap<String, (i64, i64)>;

/// Every page of `transfer_result` between `handover` and `taker`.
pub(crate) async fn transfer_states(
    wecom: &Wecom,
    corp_id: &CorpId,
    mode: Mode,
    handover: &UserId,
    taker: &UserId,
) -> Result<States, String> {
    let creds = wecom
        .credentials(corp_id.as_str(), None)
        .map_err(|e| e.to_string())?;
    let mut out = States::new();
    let mut cursor = String::new();
    for _ in 0..1000 {
        let page = wecom
            .client
            .transfer_result(&creds, mode.api(), handover, taker, &cursor)
            .await
            .map_err(|e| e.to_string())?;
        for c in page.customer {
            out.insert(
                c.external_userid.to_string(),
                (c.status, c.takeover_time.saturating_mul(1000)),
            );
        }
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    Ok(out)
}

/// Applies WeCom's states to the job's waiting customers of `taker`, a statement (or one
/// transaction) per outcome rather than per customer.
async fn apply_states(
    db: &Db,
    job: &TransferJob,
    taker: &str,
    states: &States,
    settings: &TransferSettings,
    now_ms: i64,
) -> Result<(), StoreError> {
    const WAITING: &str = "SELECT id, target_id FROM transfer_item WHERE job_id = $1 \
        AND kind = 'customer' AND state = 'waiting' AND takeover_user_id = $2 \
        AND COALESCE(next_poll_ms, 0) <= $3";
    let rows: Vec<(i64, String)> = on_db!(db, |pool| sqlx::query_as(WAITING)
        .bind(job.id)
        .bind(taker)
        .bind(now_ms)
        .fetch_all(pool)
        .await)?;
    let next = now_ms + i64::try_from(settings.poll_interval_secs).unwrap_or(600) * 1000;
    let mut done: Vec<(i64, i64)> = Vec::new();
    // (takeover time, next look) → items still waiting.
    let mut waiting: BTreeMap<(Option<i64>, i64), Vec<i64>> = BTreeMap::new();
    let mut refused = Vec::new();
    let mut at_limit = Vec::new();
    let mut no_record = Vec::new();
    for (id, ext) in rows {
        match states.get(&ext).copied() {
            Some((1, at)) => done.push((id, if at > 0 { at } else { now_ms })),
            Some((2, at)) => {
                // Look again at the poll interval, or right after the automatic takeover.
                let look = if at > now_ms {
                    next.min(at + 1000)
                } else {
                    next
                };
                waiting
                    .entry((Some(at).filter(|t| *t > 0), look))
                    .or_default()
                    .push(id);
            }
            Some((3, _)) => refused.push(id),
            Some((4, _)) => at_limit.push(id),
            Some((5, _)) => no_record.push(id),
            _ => waiting.entry((None, next)).or_default().push(id),
        }
    }
    complete_many(db, &done, now_ms).await?;
    for ((at, look), ids) in waiting {
        set_waiting(db, &ids, at, look, now_ms).await?;
    }
    conclude(db, &refused, "refused", None, REFUSED, now_ms).await?;
    conclude(
        db,
        &at_limit,
        "failed",
        Some(40099),
        &crate::domain::transfers::errcode_reason(40099),
        now_ms,
    )
    .await?;
    conclude(db, &no_record, "failed", None, NO_RECORD, now_ms).await?;
    Ok(())
}

/// Why a refused customer is refused.
pub(crate) const REFUSED: &str = "客户拒绝了转接 / the customer refused";
const NO_RECORD: &str =
    "企业微信无接替记录（原跟进成员已不再跟进该客户） / WeCom has no record of this transfer";

/// Keeps customers `waiting`, to look again at `next_poll_ms`.
pub(crate) async fn set_waiting(
    db: &Db,
    ids: &[i64],
    takeover_at_ms: Option<i64>,
    next_poll_ms: i64,
    now_ms: i64,
) -> Result<u64, StoreError> {
    update_items(
        db,
        "takeover_at_ms = COALESCE($1, takeover_at_ms), next_poll_ms = $2, updated_at_ms = $3",
        "state = 'waiting'",
        &[
            Val::Int(takeover_at_ms),
            Val::Int(Some(next_poll_ms)),
            Val::Int(Some(now_ms)),
        ],
        ids,
    )
    .await
}

/// Open items end `refused` or `failed`. Returns how many were open.
pub(crate) async fn conclude(
    db: &Db,
    ids: &[i64],
    state: &str,
    errcode: Option<i64>,
    reason: &str,
    now_ms: i64,
) -> Result<u64, StoreError> {
    update_items(
        db,
        "state = $1, errcode = $2, reason = $3, updated_at_ms = $4",
        "state IN ('planned', 'scheduled', 'sent', 'waiting')",
        &[
            Val::Text(Some(state)),
            Val::Int(errcode),
            Val::Text(Some(reason)),
            Val::Int(Some(now_ms)),
        ],
        ids,
    )
    .await
}

fn item_sql(filter: &str) -> String {
    format!(
        "SELECT id, job_id, kind, target_id, handover_user_id, takeover_user_id, mode, state, \
         flags, errcode, reason, outbox_id, not_before_ms, sent_at_ms, takeover_at_ms, \
         updated_at_ms FROM transfer_item WHERE {filter}"
    )
}

/// A customer (or chat) was taken over at `at_ms`: [`complete_many`] for one item.
pub async fn complete(db: &Db, item_id: i64, at_ms: i64, now_ms: i64) -> Result<bool, StoreError> {
    Ok(complete_many(db, &[(item_id, at_ms)], now_ms).await? == 1)
}

/// Items taken over, each at its time: the item is `done` and a customer's record carries over
/// to the taker in the same transaction — open reminders of the old owner reassigned, the admin's
/// handover note added to the customer's notes, the old relation's corp tags applied to the new
/// one (here and, through the outbox, in WeCom), and the old relation ended as `transferred`. An item already final changes nothing. Returns how many were open.
pub async fn complete_many(db: &Db, done: &[(i64, i64)], now_ms: i64) -> Result<usize, StoreError> {
    let mut jobs: HashMap<i64, TransferJob> = HashMap::new();
    // The corp tags that still exist, per corp (a deleted tag is not applied to the taker).
    let mut live_tags: HashMap<CorpId, HashSet<String>> = HashMap::new();
    let mut completed = 0;
    // One transaction per chunk: a commit (an fsync on SQLite) per few hundred customers.
    for chunk in done.chunks(200) {
        let ids: Vec<i64> = chunk.iter().map(|(id, _)| *id).collect();
        let sql = item_sql(&format!("id IN ({})", placeholders(1, ids.len())));
        let items: Vec<TransferItem> = on_db!(db, |pool| {
            let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()));
            for id in &ids {
                q = q.bind(id);
            }
            q.fetch_all(pool).await
        })?;
        for item in &items {
            if let std::collections::hash_map::Entry::Vacant(e) = jobs.entry(item.job_id) {
                let job = job_by_id(db, item.job_id).await?;
                if !live_tags.contains_key(&job.corp_id) {
                    let tags = crate::domain::tags::live_tags(db, job.corp_id.as_str()).await?;
                    live_tags.insert(
                        job.corp_id.clone(),
                        tags.into_iter().map(|t| t.tag_id).collect(),
                    );
                }
                e.insert(job);
            }
        }
        let empty = HashSet::new();
        let mut tx = db.begin().await?;
        for item in &items {
            let at_ms = chunk
                .iter()
                .find(|(id, _)| *id == item.id)
                .map_or(now_ms, |(_, at)| *at);
            let n = transfers::mark_done_in(&mut tx, item.id, at_ms, now_ms).await?;
            if n != 1 {
                continue;
            }
            completed += 1;
            if item.kind == "customer"
                && let Some(job) = jobs.get(&item.job_id)
            {
                let live = live_tags.get(&job.corp_id).unwrap_or(&empty);
                carry_over(&mut tx, job, item, live, at_ms, now_ms).await?;
            }
        }
        tx.commit().await?;
    }
    if completed > 0 {
        outbox::notify();
    }
    Ok(completed)
}

async fn carry_over(
    tx: &mut Tx,
    job: &TransferJob,
    item: &TransferItem,
    live: &HashSet<String>,
    at_ms: i64,
    now_ms: i64,
) -> Result<(), StoreError> {
    let Ok(ext) = ExternalUserId::try_from(item.target_id.as_str()) else {
        tracing::warn!(
            item = item.id,
            "a customer item without a valid external_userid"
        );
        return Ok(());
    };
    let (corp, ext, from, to) = (
        &job.corp_id,
        &ext,
        &item.handover_user_id,
        &item.takeover_user_id,
    );
    let (old_relation, new_relation) = (
        RelationKey::new(corp, from, ext),
        RelationKey::new(corp, to, ext),
    );
    followup::reassign_open_reminders(tx, corp, ext, from, to, now_ms).await?;
    if !job.handover_note.is_empty() {
        let body = format!("【交接】{}（原跟进人 {from} → {to}）", job.handover_note);
        followup::add_note_in(tx, corp, ext, &job.created_by, &body, now_ms).await?;
    }
    let old: Vec<String> = customers::relation_tag_ids_in(tx, old_relation)
        .await?
        .unwrap_or_default()
        .into_iter()
        .filter(|t| live.contains(t))
        .collect();
    let new: Option<Vec<String>> = if old.is_empty() {
        None
    } else {
        customers::relation_tag_ids_in(tx, new_relation).await?
    };
    // What the taker's relation lacks (all of it while we have not seen that relation yet).
    let seen = new.is_some();
    let has: Vec<String> = new.unwrap_or_default();
    let missing: Vec<String> = old.into_iter().filter(|t| !has.contains(t)).collect();
    if !missing.is_empty() {
        if seen {
            let mut merged = has;
            merged.extend(missing.iter().cloned());
            customers::set_relation_tag_ids_in(tx, new_relation, &merged, now_ms).await?;
        }
        outbox::enqueue(
            tx,
            corp.as_str(),
            &Intent::MarkTag {
                user_id: to.clone(),
                external_user_id: ext.clone(),
                add: missing,
                remove: Vec::new(),
            },
            &format!("transfer_job:{}", job.id),
            Some(&format!("transfer_item:{}:tags", item.id)),
            now_ms,
        )
        .await?;
    }
    // WeCom no longer holds the customer for reassignment.
    transfers::forget_unassigned_in(tx, corp, from, ext).await?;
    // WeCom removes the handover member's relation in both modes (on-job also says so with
    // `del_external_contact`/`DELETE_BY_TRANSFER`, which then finds it ended).
    customers::end_by_transfer(
        tx,
        old_relation,
        item.id,
        &format!("→ {to}（转交任务 {}）", job.id),
        at_ms,
        now_ms,
    )
    .await?;
    Ok(())
}

/// The open customer item of `(handover → taker, ext)` in a running job, if any.
async fn open_item(
    db: &Db,
    corp_id: &CorpId,
    handover: Option<&UserId>,
    taker: Option<&UserId>,
    ext: &ExternalUserId,
) -> Result<Option<i64>, StoreError> {
    const SQL: &str = "SELECT i.id FROM transfer_item i JOIN transfer_job j ON j.id = i.job_id \
        WHERE i.corp_id = $1 AND i.kind = 'customer' AND i.target_id = $2 \
        AND i.state IN ('sent', 'waiting') AND j.state = 'running' \
        AND ($3 IS NULL OR i.handover_user_id = $3) AND ($4 IS NULL OR i.takeover_user_id = $4) \
        ORDER BY i.id DESC LIMIT 1";
    let id = on_db!(db, |pool| sqlx::query_scalar(SQL)
        .bind(corp_id.as_str())
        .bind(ext.as_str())
        .bind(handover.map(UserId::as_str))
        .bind(taker.map(UserId::as_str))
        .fetch_optional(pool)
        .await)?;
    Ok(id)
}

/// WeCom added `ext` to `taker` (`add_external_contact` after a takeover): the item completes.
pub async fn relation_added(
    db: &Db,
    relation: RelationKey<'_>,
    at_ms: i64,
) -> Result<bool, StoreError> {
    let RelationKey {
        corp_id,
        user_id: taker,
        external_user_id: ext,
    } = relation;
    match open_item(db, corp_id, None, Some(taker), ext).await? {
        Some(id) => complete(db, id, at_ms, now_ms()).await,
        None => Ok(false),
    }
}

/// WeCom removed `ext` from `handover` because of the transfer (`DELETE_BY_TRANSFER`).
pub async fn handed_over(
    db: &Db,
    relation: RelationKey<'_>,
    at_ms: i64,
) -> Result<bool, StoreError> {
    let RelationKey {
        corp_id,
        user_id: handover,
        external_user_id: ext,
    } = relation;
    match open_item(db, corp_id, Some(handover), None, ext).await? {
        Some(id) => complete(db, id, at_ms, now_ms()).await,
        None => Ok(false),
    }
}

/// `transfer_fail` for `taker` (`UserID`) and `ext`: the customer refused, or the taker hit their
/// limit.
pub async fn transfer_failed(
    db: &Db,
    relation: RelationKey<'_>,
    reason: &str,
) -> Result<bool, StoreError> {
    let RelationKey {
        corp_id,
        user_id: taker,
        external_user_id: ext,
    } = relation;
    // WeCom's `UserID` here is the taker in practice; the handover member is looked up too in
    // case it is not (`transfer_result` polling settles it either way).
    let id = match open_item(db, corp_id, None, Some(taker), ext).await? {
        Some(id) => id,
        None => match open_item(db, corp_id, Some(taker), None, ext).await? {
            Some(id) => id,
            None => return Ok(false),
        },
    };
    let now = now_ms();
    let n = match reason {
        "customer_limit_exceed" => {
            conclude(
                db,
                &[id],
                "failed",
                Some(40099),
                &crate::domain::transfers::errcode_reason(40099),
                now,
            )
            .await?
        }
        "customer_refused" => conclude(db, &[id], "refused", None, REFUSED, now).await?,
        other => {
            conclude(
                db,
                &[id],
                "failed",
                None,
                &format!("转接失败（{other}） / the transfer failed ({other})"),
                now,
            )
            .await?
        }
    };
    Ok(n == 1)
}

/// A job with no open item is `done`: audit entry and an app message to each taker about what
/// they received.
async fn finish_if_done(db: &Db, job: &TransferJob, now_ms: i64) -> Result<bool, StoreError> {
    if transfers::open_items(db, job.id).await? > 0 {
        return Ok(false);
    }
    let counts = crate::domain::transfers::counts(db, job.id).await?;
    let mut tx = db.begin().await?;
    if transfers::mark_finished_in(&mut tx, job.id, now_ms).await? != 1 {
        tx.rollback().await?;
        return Ok(false);
    }
    let progress = crate::domain::transfers::Progress::of(&counts);
    crate::auth::audit(
        &mut tx,
        job.corp_id.as_str(),
        "system",
        "transfer.finish",
        &format!("transfer_job:{}", job.id),
        &serde_json::json!({"handover": job.handover_user_id, "mode": job.mode, "progress": progress}),
        now_ms,
    )
    .await?;
    for (taker, text) in summaries(job, &counts) {
        outbox::enqueue(
            &mut tx,
            job.corp_id.as_str(),
            &Intent::MessageSend {
                to_users: vec![taker.clone()],
                message: Message::Text { content: text },
            },
            &format!("transfer_job:{}", job.id),
            Some(&format!("transfer:{}:summary:{taker}", job.id)),
            now_ms,
        )
        .await?;
    }
    tx.commit().await?;
    outbox::notify();
    tracing::info!(job = job.id, handover = %job.handover_user_id, "transfer job finished");
    Ok(true)
}

/// The message each taker with anything received gets.
fn summaries(
    job: &TransferJob,
    counts: &[crate::domain::transfers::Count],
) -> Vec<(String, String)> {
    let mut per: BTreeMap<&str, [i64; 3]> = BTreeMap::new();
    for c in counts {
        let e = per.entry(c.takeover_user_id.as_str()).or_default();
        match (c.kind.as_str(), c.state.as_str()) {
            ("customer", "done") => e[0] += c.n,
            ("group_chat", "done") => e[1] += c.n,
            (_, "refused" | "failed") => e[2] += c.n,
            _ => {}
        }
    }
    let how = if job.mode() == Mode::Resigned {
        "离职继承"
    } else {
        "在职继承"
    };
    per.into_iter()
        .filter(|(_, [c, g, _])| c + g > 0)
        .map(|(taker, [c, g, missed])| {
            let mut text = format!(
                "【客户交接】您已接收 {} 的 {c} 位客户、{g} 个客户群（{how}）。\
                 客户的标签、跟进记录和待办提醒已随客户转给您。",
                job.handover_user_id
            );
            if missed > 0 {
                text.push_str(&format!("另有 {missed} 项未能转接，管理员可在控制台查看。"));
            }
            if !job.handover_note.is_empty() {
                text.push_str(&format!("\n交接备注：{}", job.handover_note));
            }
            (
                taker.to_owned(),
                crate::pipeline::worker::truncate_bytes(&text, 2000).to_owned(),
            )
        })
        .collect()
}
