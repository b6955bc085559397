//! Delivering the outbox's transfer calls: `transfer_customer` / `resigned/transfer_customer` and
//! `groupchat/transfer` / `groupchat/onjob_transfer` for the items an engine round handed over.
//!
//! A repeated attempt (its first answer lost to a crash, a timeout, a lost lease) first asks WeCom
//! what the earlier one did — `transfer_result` for customers, `groupchat/list` of the new owner
//! for chats — and sends only what WeCom has not got, so no customer or chat is sent twice.
//! Answers that concern the whole call (40097: the handover member has not left; 40131 on-job:
//! they have) switch the job's mode once and put the items back for the engine; permanent errors
//! fail the items with WeCom's errcode and a reason; transient ones retry the call.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;
use wecom_sdk::api::{ApiError, GroupChatListRequest};
use wecom_sdk::{ChatId, CorpId, ExternalUserId, UserId};

use super::engine::{self, FIRST_POLL_MS, next_day_ms};
use crate::domain::transfers::{
    Mode, TransferJob, Val, errcode_reason, job_by_id, update_items, update_items_in,
};
use crate::on_db;
use crate::pipeline::outbox::{OutboxItem, failure};
use crate::pipeline::worker::HandlerError;
use crate::platform::db::{Db, StoreError, Tx, now_ms};
use crate::platform::wecom::Wecom;

/// Attempts of a group call rate-limited with 45009 before its chats wait for the next day.
const CHAT_LIMIT_ATTEMPTS: i32 = 3;

fn bad_id(e: impl std::fmt::Display) -> HandlerError {
    HandlerError::permanent(e.to_string())
}

/// The items this outbox call still carries (`sent`), as (id, target).
async fn carried(db: &Db, outbox_id: i64) -> Result<Vec<(i64, String)>, StoreError> {
    const SQL: &str = "SELECT id, target_id FROM transfer_item WHERE outbox_id = $1 \
        AND state = 'sent' ORDER BY id";
    let rows = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(outbox_id)
        .fetch_all(pool)
        .await)?;
    Ok(rows)
}

/// Sets sent items (by id) to a state, with an errcode and reason (`None` clears them).
async fn set_items(
    db: &Db,
    ids: &[i64],
    state: &str,
    errcode: Option<i64>,
    reason: Option<&str>,
    next_poll_ms: Option<i64>,
) -> Result<(), StoreError> {
    update_items(
        db,
        "state = $1, errcode = $2, reason = $3, next_poll_ms = $4, updated_at_ms = $5",
        "state = 'sent'",
        &[
            Val::Text(Some(state)),
            Val::Int(errcode),
            Val::Text(reason),
            Val::Int(next_poll_ms),
            Val::Int(Some(now_ms())),
        ],
        ids,
    )
    .await?;
    Ok(())
}

/// WeCom says the job's mode is wrong for the whole call: the job switches to `to` (once; the
/// notice says why) and the call's items go back to `planned` in that mode. When the job already
/// switched the other way, the items fail with `errcode` instead.
async fn switch_mode(
    db: &Db,
    job: &TransferJob,
    ids: &[i64],
    to: Mode,
    errcode: i64,
    notice: &str,
) -> Result<serde_json::Value, HandlerError> {
    let now = now_ms();
    let current = job_by_id(db, job.id).await?;
    if current.mode() != to && !current.notice.is_empty() {
        set_items(
            db,
            ids,
            "failed",
            Some(errcode),
            Some(&errcode_reason(errcode)),
            None,
        )
        .await?;
        return Ok(json!({"failed": ids.len(), "errcode": errcode}));
    }
    let mut tx = db.begin().await?;
    crate::domain::transfers::switch_mode_in(&mut tx, job.id, to, notice, now).await?;
    replan(&mut tx, ids, to, now).await?;
    tx.commit().await?;
    engine::wake();
    tracing::warn!(
        job = job.id,
        errcode,
        to = to.as_str(),
        "transfer job switched mode"
    );
    Ok(json!({"switched_to": to.as_str(), "errcode": errcode, "replanned": ids.len()}))
}

/// This call's items go back to `planned` in `mode`, for the engine to send again.
async fn replan(tx: &mut Tx, ids: &[i64], mode: Mode, now: i64) -> Result<(), StoreError> {
    update_items_in(
        tx,
        "state = 'planned', mode = $1, outbox_id = NULL, sent_at_ms = NULL, updated_at_ms = $2",
        "state = 'sent'",
        &[Val::Text(Some(mode.as_str())), Val::Int(Some(now))],
        ids,
    )
    .await?;
    Ok(())
}

/// A call written before its job switched mode is not made: its items go back to the engine in
/// the job's mode. `None` when the call's mode is still the job's.
async fn outdated(
    db: &Db,
    job: &TransferJob,
    call_mode: Mode,
    ids: &[i64],
) -> Result<Option<serde_json::Value>, StoreError> {
    if job.mode() == call_mode {
        return Ok(None);
    }
    let mut tx = db.begin().await?;
    replan(&mut tx, ids, job.mode(), now_ms()).await?;
    tx.commit().await?;
    engine::wake();
    Ok(Some(
        json!({"note": "the job switched mode before this call", "replanned": ids.len()}),
    ))
}

const SWITCHED_TO_ON_JOB: &str = "交接成员仍在职（40097），已改用在职继承 / the handover member has not left (40097): switched to on-job";
const SWITCHED_TO_RESIGNED: &str =
    "交接成员已离职，已改用离职继承 / the handover member has left: switched to resigned";

/// One `transfer_customer` call as the outbox holds it.
pub(crate) struct CustomerCall<'a> {
    /// The `transfer_job`.
    pub job_id: i64,
    /// Resigned or on-job.
    pub mode: Mode,
    /// The member handing over.
    pub handover: &'a str,
    /// The taker.
    pub taker: &'a str,
    /// On-job only: what WeCom tells the customer.
    pub success_msg: Option<&'a str>,
}

/// Delivers one `transfer_customer` call.
pub(crate) async fn customers(
    db: &Db,
    wecom: &Wecom,
    item: &OutboxItem,
    call: CustomerCall<'_>,
) -> Result<Option<serde_json::Value>, HandlerError> {
    let CustomerCall {
        job_id,
        mode,
        handover,
        taker,
        success_msg,
    } = call;
    let job = job_by_id(db, job_id).await?;
    let mut rows = carried(db, item.id).await?;
    if rows.is_empty() {
        return Ok(Some(json!({"note": "nothing left to send"})));
    }
    let corp = CorpId::try_from(item.corp_id.as_str()).map_err(bad_id)?;
    let handover_id = UserId::try_from(handover).map_err(bad_id)?;
    let taker_id = UserId::try_from(taker).map_err(bad_id)?;
    if item.attempts > 1 {
        // An earlier attempt may have reached WeCom: what it started is not sent again.
        let states = engine::transfer_states(wecom, &corp, mode, &handover_id, &taker_id)
            .await
            .map_err(HandlerError::retry)?;
        // Any record (waiting, done, refused, taker full) means the call reached WeCom: the
        // engine's polling reads the final state; sending again would start a second transfer.
        let (started, rest): (Vec<_>, Vec<_>) = rows
            .into_iter()
            .partition(|(_, ext)| states.get(ext).is_some_and(|(s, _)| (1..=4).contains(s)));
        let ids: Vec<i64> = started.iter().map(|(id, _)| *id).collect();
        set_items(db, &ids, "waiting", None, None, Some(now_ms())).await?;
        rows = rest;
        if rows.is_empty() {
            return Ok(Some(json!({"note": "an earlier attempt sent them all"})));
        }
    }
    let ids: Vec<i64> = rows.iter().map(|(id, _)| *id).collect();
    if let Some(answer) = outdated(db, &job, mode, &ids).await? {
        return Ok(Some(answer));
    }
    let creds = wecom.credentials(&item.corp_id, None)?;
    let exts = rows
        .iter()
        .map(|(_, e)| ExternalUserId::try_from(e.as_str()).map_err(bad_id))
        .collect::<Result<Vec<_>, _>>()?;
    let answer = wecom
        .client
        .transfer_customer(
            &creds,
            mode.api(),
            &handover_id,
            &taker_id,
            &exts,
            success_msg,
        )
        .await;
    let outcomes = match answer {
        Ok(o) => o,
        Err(ApiError::Wecom { errcode: 40097, .. }) if mode == Mode::Resigned => {
            return switch_mode(db, &job, &ids, Mode::OnJob, 40097, SWITCHED_TO_ON_JOB)
                .await
                .map(Some);
        }
        Err(ApiError::Wecom { errcode: 40131, .. })
            if mode == Mode::OnJob && departed(db, &corp, &handover_id).await? =>
        {
            return switch_mode(db, &job, &ids, Mode::Resigned, 40131, SWITCHED_TO_RESIGNED)
                .await
                .map(Some);
        }
        Err(e) => return call_failed(db, &ids, "transfer_customer", &e).await,
    };
    let mut by_code: std::collections::BTreeMap<i64, Vec<i64>> = Default::default();
    for (id, ext) in &rows {
        let code = outcomes
            .iter()
            .find(|o| o.external_userid.as_str() == ext)
            .map(|o| o.errcode);
        match code {
            Some(c) => by_code.entry(c).or_default().push(*id),
            None => by_code.entry(-2).or_default().push(*id),
        }
    }
    let first_poll = now_ms() + FIRST_POLL_MS;
    let mut summary = serde_json::Map::new();
    for (code, ids) in &by_code {
        summary.insert(code.to_string(), json!(ids.len()));
        match code {
            0 => set_items(db, ids, "waiting", None, None, Some(first_poll)).await?,
            // Already in a transfer: ours, when an earlier attempt's answer was lost.
            40100 | 40129 if item.attempts > 1 => {
                set_items(db, ids, "waiting", None, None, Some(now_ms())).await?;
            }
            -2 => {
                set_items(
                    db,
                    ids,
                    "failed",
                    None,
                    Some("企业微信未返回该客户的结果 / WeCom did not answer for this customer"),
                    None,
                )
                .await?;
            }
            c => set_items(db, ids, "failed", Some(*c), Some(&errcode_reason(*c)), None).await?,
        }
    }
    Ok(Some(json!({ "errcodes": summary })))
}

async fn departed(db: &Db, corp_id: &CorpId, user: &UserId) -> Result<bool, StoreError> {
    Ok(crate::domain::staff::get(db, corp_id, user)
        .await?
        .is_some_and(|s| s.departed_at_ms.is_some() || s.status == 5))
}

/// What a whole-call error means for a transfer call: the transfer errcodes (taker not
/// verified, banned, at the limit, a transfer in progress, wrong mode…) do not change by
/// waiting; the rest is classified like every outbox call.
fn transfer_failure(api: &str, e: &ApiError) -> HandlerError {
    match e {
        ApiError::Wecom {
            errcode:
                40097 | 40098 | 40099 | 40100 | 40128 | 40129 | 40130 | 40131 | 40143 | 90500..=90507,
            ..
        } => HandlerError::permanent(format!("{api}: {e}")),
        _ => failure(api, e),
    }
}

/// A call WeCom refused as a whole: permanent refusals fail the items with the errcode (the
/// outbox item is done: the items hold the outcome); anything else retries the call.
async fn call_failed(
    db: &Db,
    ids: &[i64],
    api: &str,
    e: &ApiError,
) -> Result<Option<serde_json::Value>, HandlerError> {
    match transfer_failure(api, e) {
        HandlerError::Permanent { reason } => {
            let text = match e.errcode() {
                Some(c) => format!("{}：{reason}", errcode_reason(c)),
                None => reason.clone(),
            };
            set_items(db, ids, "failed", e.errcode(), Some(&text), None).await?;
            Ok(Some(json!({"failed": ids.len(), "reason": reason})))
        }
        other => Err(other),
    }
}

/// Delivers one group chat transfer call.
pub(crate) async fn group_chats(
    db: &Db,
    wecom: &Wecom,
    item: &OutboxItem,
    job_id: i64,
    mode: Mode,
    new_owner: &str,
) -> Result<Option<serde_json::Value>, HandlerError> {
    let job = job_by_id(db, job_id).await?;
    let mut rows = carried(db, item.id).await?;
    if rows.is_empty() {
        return Ok(Some(json!({"note": "nothing left to send"})));
    }
    let all: Vec<i64> = rows.iter().map(|(id, _)| *id).collect();
    if let Some(answer) = outdated(db, &job, mode, &all).await? {
        return Ok(Some(answer));
    }
    let creds = wecom.credentials(&item.corp_id, None)?;
    let corp = CorpId::try_from(item.corp_id.as_str()).map_err(bad_id)?;
    let owner = UserId::try_from(new_owner).map_err(bad_id)?;
    let done_at = now_ms();
    if item.attempts > 1 {
        let owned = owned_by(wecom, &creds, &owner).await?;
        let (moved, rest): (Vec<_>, Vec<_>) =
            rows.into_iter().partition(|(_, c)| owned.contains(c));
        for (id, chat) in &moved {
            chat_done(db, &corp, *id, chat, &owner, done_at).await?;
        }
        rows = rest;
        if rows.is_empty() {
            return Ok(Some(json!({"note": "an earlier attempt moved them all"})));
        }
    }
    let chats = rows
        .iter()
        .map(|(_, c)| ChatId::try_from(c.as_str()).map_err(bad_id))
        .collect::<Result<Vec<_>, _>>()?;
    let ids: Vec<i64> = rows.iter().map(|(id, _)| *id).collect();
    let failed = match wecom
        .client
        .groupchat_transfer(&creds, mode.api(), &chats, &owner)
        .await
    {
        Ok(f) => f,
        Err(ApiError::RateLimited { retry_after, .. }) => {
            if item.attempts >= CHAT_LIMIT_ATTEMPTS {
                // Over the old owner's daily budget (changes made outside this job count too).
                let n = engine::set_scheduled(db, &ids, next_day_ms(now_ms()), now_ms()).await?;
                engine::wake();
                return Ok(Some(json!({"rescheduled_next_day": n})));
            }
            return Err(HandlerError::retry_after(
                "groupchat transfer: rate limited (45009)",
                retry_after.max(Duration::from_secs(1)),
            ));
        }
        Err(e) => return call_failed(db, &ids, "groupchat transfer", &e).await,
    };
    let mut wrong_mode = Vec::new();
    let mut failed_ids = BTreeSet::new();
    for f in &failed {
        let Some((id, _)) = rows.iter().find(|(_, c)| c == f.chat_id.as_str()) else {
            continue;
        };
        failed_ids.insert(*id);
        match (f.errcode, mode) {
            (90500, Mode::Resigned) | (90502, Mode::OnJob) => wrong_mode.push(*id),
            (code, _) => {
                let reason = if f.errmsg.is_empty() {
                    errcode_reason(code)
                } else {
                    format!("{}（{}）", errcode_reason(code), f.errmsg)
                };
                set_items(db, &[*id], "failed", Some(code), Some(&reason), None).await?;
            }
        }
    }
    for (id, chat) in rows.iter().filter(|(id, _)| !failed_ids.contains(id)) {
        chat_done(db, &corp, *id, chat, &owner, done_at).await?;
    }
    if !wrong_mode.is_empty() {
        let (to, code, notice) = if mode == Mode::Resigned {
            (Mode::OnJob, 90500, SWITCHED_TO_ON_JOB)
        } else {
            (Mode::Resigned, 90502, SWITCHED_TO_RESIGNED)
        };
        switch_mode(db, &job, &wrong_mode, to, code, notice).await?;
    }
    Ok(Some(json!({
        "moved": rows.len() - failed_ids.len(),
        "failed": failed_ids.len() - wrong_mode.len(),
        "replanned": wrong_mode.len(),
    })))
}

async fn chat_done(
    db: &Db,
    corp_id: &CorpId,
    id: i64,
    chat: &str,
    new_owner: &UserId,
    at_ms: i64,
) -> Result<(), HandlerError> {
    let chat = ChatId::try_from(chat).map_err(bad_id)?;
    engine::complete(db, id, at_ms, at_ms).await?;
    crate::domain::group_chats::set_owner(db, corp_id, &chat, new_owner, at_ms).await?;
    Ok(())
}

/// The chats WeCom lists with `owner` as owner.
async fn owned_by(
    wecom: &Wecom,
    creds: &wecom_sdk::api::AppCredentials,
    owner: &UserId,
) -> Result<BTreeSet<String>, HandlerError> {
    let mut out = BTreeSet::new();
    let mut cursor = String::new();
    for _ in 0..1000 {
        let page = wecom
            .client
            .groupchat_list(
                creds,
                &GroupChatListRequest {
                    status_filter: 0,
                    owner_userids: vec![owner.clone()],
                    cursor: cursor.clone(),
                    limit: 1000,
                },
            )
            .await
            .map_err(|e| failure("externalcontact/groupchat/list", &e))?;
        out.extend(
            page.group_chat_list
                .into_iter()
                .map(|c| c.chat_id.to_string()),
        );
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    Ok(out)
}
