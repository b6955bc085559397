//! Customer transfers (§4.2, §4.8): on-job (`transfer_customer`) and resigned
//! (`resigned/transfer_customer`), their results, `get_unassigned_list`, and the 24 h takeover
//! that [`settle`] performs when the emulator clock passes `takeover_time`.
//!
//! Per-customer errcodes on the transfer calls, checked in this order: 40096 unknown customer,
//! 40131 the handover member does not follow the customer, 40130 taker = handover, 40129 (on-job)
//! / 40100 (resigned) already waiting in a transfer, 40128 (on-job) two on-job transfers of the
//! customer in the last 90 days, 40099 the taker is at their customer limit. Call-level: 40058 for
//! 0 or more than 100 customers, 40003 unknown or departed taker, 40097 the resigned API with a
//! handover still employed, and (an assumption, WeCom does not publish it) 40131 the on-job API
//! with a handover who has left.

use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiErr, Ctx, chars, corp_of, decode_cursor, encode_cursor};
use crate::testkit::callbacks::{CallbackKind, Outgoing};
use crate::testkit::events;
use crate::testkit::model::{Corp, Relation, Transfer, TransferMode};
use crate::testkit::state::Inner;

/// The customer may refuse for this long; then the takeover happens.
const TAKEOVER_DELAY: i64 = 24 * 3600;
/// On-job transfers per customer are limited within this window.
const NINETY_DAYS: i64 = 90 * 86_400;
/// `transfer_result` page size.
const RESULT_PAGE: usize = 1000;

#[derive(Deserialize)]
struct TransferRequest {
    #[serde(default)]
    handover_userid: Option<String>,
    #[serde(default)]
    takeover_userid: Option<String>,
    #[serde(default)]
    external_userid: Vec<String>,
    #[serde(default)]
    transfer_success_msg: Option<String>,
}

fn transfer(
    inner: &mut Inner,
    ctx: &Ctx<'_>,
    out: &mut Vec<Outgoing>,
    mode: TransferMode,
) -> Result<Value, ApiErr> {
    let req: TransferRequest = ctx.body()?;
    if req.external_userid.is_empty() || req.external_userid.len() > 100 {
        return Err(ApiErr::with(
            40058,
            "external_userid must hold 1 to 100 customers",
        ));
    }
    if req
        .transfer_success_msg
        .as_deref()
        .is_some_and(|m| chars(m) > 200)
    {
        return Err(ApiErr::with(
            40058,
            "transfer_success_msg exceeds 200 characters",
        ));
    }
    let handover = req
        .handover_userid
        .filter(|u| !u.is_empty())
        .ok_or_else(|| ApiErr::with(40058, "handover_userid is required"))?;
    let takeover = req
        .takeover_userid
        .filter(|u| !u.is_empty())
        .ok_or_else(|| ApiErr::with(40058, "takeover_userid is required"))?;
    let corp = corp_of(inner, ctx)?;
    let handover_left = corp
        .staff
        .get(&handover)
        .ok_or_else(|| ApiErr::new(40003))?
        .is_departed();
    let taker = corp
        .active_staff(&takeover)
        .ok_or_else(|| ApiErr::new(40003))?;
    let taker_limit = taker.customer_limit;
    match mode {
        TransferMode::Resigned if !handover_left => return Err(ApiErr::new(40097)),
        TransferMode::OnJob if handover_left => {
            return Err(ApiErr::with(
                40131,
                "handover_userid has left: use resigned/transfer_customer",
            ));
        }
        _ => {}
    }
    let mut incoming = corp.customer_count(&takeover)
        + corp
            .transfers
            .iter()
            .filter(|t| t.takeover == takeover && t.status == 2)
            .count();
    let mut results = Vec::new();
    for ext in &req.external_userid {
        let code = if !corp.customers.contains_key(ext) {
            40096
        } else if corp.relation(&handover, ext).is_none() {
            40131
        } else if handover == takeover {
            40130
        } else if corp
            .transfers
            .iter()
            .any(|t| t.external_userid == *ext && t.handover == handover && t.status == 2)
        {
            match mode {
                TransferMode::OnJob => 40129,
                TransferMode::Resigned => 40100,
            }
        } else if mode == TransferMode::OnJob
            && corp
                .transfers
                .iter()
                .filter(|t| {
                    t.mode == TransferMode::OnJob
                        && t.external_userid == *ext
                        && ctx.now - t.requested_at < NINETY_DAYS
                })
                .count()
                >= 2
        {
            40128
        } else if taker_limit.is_some_and(|limit| incoming >= limit) {
            40099
        } else {
            0
        };
        if code == 0 {
            let refuses = corp.customers.get(ext).is_some_and(|c| c.refuses_transfer);
            let (status, takeover_time) = if refuses {
                (3, 0)
            } else {
                incoming += 1;
                (2, ctx.now.saturating_add(TAKEOVER_DELAY))
            };
            corp.transfers.push(Transfer {
                mode,
                handover: handover.clone(),
                takeover: takeover.clone(),
                external_userid: ext.clone(),
                status,
                takeover_time,
                requested_at: ctx.now,
            });
            if refuses {
                let xml =
                    events::external_contact(&corp.id, ctx.now, "transfer_fail", &takeover, ext)
                        .text("FailReason", "customer_refused")
                        .finish();
                out.push(Outgoing::new(&corp.id, CallbackKind::Contacts, xml));
            }
        }
        results.push(json!({ "external_userid": ext, "errcode": code }));
    }
    Ok(json!({ "customer": results }))
}

/// `POST externalcontact/transfer_customer` (在职继承).
pub(crate) fn transfer_onjob(
    inner: &mut Inner,
    ctx: &Ctx<'_>,
    out: &mut Vec<Outgoing>,
) -> Result<Value, ApiErr> {
    transfer(inner, ctx, out, TransferMode::OnJob)
}

/// `POST externalcontact/resigned/transfer_customer` (离职继承).
pub(crate) fn transfer_resigned(
    inner: &mut Inner,
    ctx: &Ctx<'_>,
    out: &mut Vec<Outgoing>,
) -> Result<Value, ApiErr> {
    transfer(inner, ctx, out, TransferMode::Resigned)
}

#[derive(Deserialize)]
struct ResultRequest {
    #[serde(default)]
    handover_userid: Option<String>,
    #[serde(default)]
    takeover_userid: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
}

/// The latest record per customer of (handover, takeover), by external_userid, 1000 per page.
fn result(inner: &mut Inner, ctx: &Ctx<'_>, mode: TransferMode) -> Result<Value, ApiErr> {
    let req: ResultRequest = ctx.body()?;
    let handover = req
        .handover_userid
        .filter(|u| !u.is_empty())
        .ok_or_else(|| ApiErr::with(40058, "handover_userid is required"))?;
    let takeover = req
        .takeover_userid
        .filter(|u| !u.is_empty())
        .ok_or_else(|| ApiErr::with(40058, "takeover_userid is required"))?;
    let after = match req.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(cursor) => decode_cursor(cursor, 1)?.into_iter().next(),
        None => None,
    };
    let corp = corp_of(inner, ctx)?;
    let mut latest: std::collections::BTreeMap<&str, &Transfer> = std::collections::BTreeMap::new();
    for t in corp
        .transfers
        .iter()
        .filter(|t| t.mode == mode && t.handover == handover && t.takeover == takeover)
    {
        latest.insert(t.external_userid.as_str(), t);
    }
    let mut page: Vec<&Transfer> = latest
        .into_iter()
        .filter(|(ext, _)| after.as_deref().is_none_or(|a| *ext > a))
        .map(|(_, t)| t)
        .take(RESULT_PAGE + 1)
        .collect();
    let more = page.len() > RESULT_PAGE;
    page.truncate(RESULT_PAGE);
    let next_cursor = match (more, page.last()) {
        (true, Some(last)) => encode_cursor(&[&last.external_userid]),
        _ => String::new(),
    };
    let customers: Vec<Value> = page
        .iter()
        .map(|t| {
            json!({"external_userid": t.external_userid, "status": t.status, "takeover_time": t.takeover_time})
        })
        .collect();
    Ok(json!({ "customer": customers, "next_cursor": next_cursor }))
}

/// `POST externalcontact/transfer_result`.
pub(crate) fn result_onjob(
    inner: &mut Inner,
    ctx: &Ctx<'_>,
    _out: &mut Vec<Outgoing>,
) -> Result<Value, ApiErr> {
    result(inner, ctx, TransferMode::OnJob)
}

/// `POST externalcontact/resigned/transfer_result`.
pub(crate) fn result_resigned(
    inner: &mut Inner,
    ctx: &Ctx<'_>,
    _out: &mut Vec<Outgoing>,
) -> Result<Value, ApiErr> {
    result(inner, ctx, TransferMode::Resigned)
}

#[derive(Deserialize)]
struct UnassignedRequest {
    #[serde(default)]
    page_id: Option<i64>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    page_size: Option<i64>,
}

/// `POST externalcontact/get_unassigned_list`: customers of departed members not (yet) in a
/// waiting or finished transfer, by (handover, customer). `page_size` default and max 1000
/// (more is 40058); `cursor` paging, or `page_id` paging while `page_id * page_size < 50000`.
pub(crate) fn unassigned_list(
    inner: &mut Inner,
    ctx: &Ctx<'_>,
    _out: &mut Vec<Outgoing>,
) -> Result<Value, ApiErr> {
    let req: UnassignedRequest = ctx.body()?;
    let page_size = match req.page_size {
        None | Some(0) => 1000,
        Some(n) if (1..=1000).contains(&n) => usize::try_from(n).unwrap_or(1000),
        Some(_) => return Err(ApiErr::with(40058, "page_size must be 1 to 1000")),
    };
    let after = match req.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(cursor) => {
            let mut parts = decode_cursor(cursor, 2)?.into_iter();
            Some((
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            ))
        }
        None => None,
    };
    let offset = match (&after, req.page_id.unwrap_or(0)) {
        (Some(_), _) => 0,
        (None, page_id) if page_id >= 0 => {
            let offset = usize::try_from(page_id)
                .unwrap_or(usize::MAX)
                .saturating_mul(page_size);
            if offset >= 50_000 {
                return Err(ApiErr::with(
                    40058,
                    "page_id paging ends at 50000 records: use cursor",
                ));
            }
            offset
        }
        (None, _) => return Err(ApiErr::with(40058, "page_id must not be negative")),
    };
    let corp = corp_of(inner, ctx)?;
    let mut rows: Vec<(&str, &str, i64)> = Vec::new();
    for staff in corp.staff.values().filter(|s| s.is_departed()) {
        for (ext, _) in corp.relations_of(&staff.userid) {
            let in_transfer = corp.transfers.iter().any(|t| {
                t.handover == staff.userid && t.external_userid == ext && matches!(t.status, 1 | 2)
            });
            if in_transfer {
                continue;
            }
            if let Some((au, ae)) = &after
                && (staff.userid.as_str(), ext) <= (au.as_str(), ae.as_str())
            {
                continue;
            }
            rows.push((&staff.userid, ext, staff.departed_at.unwrap_or(0)));
        }
    }
    let remaining: Vec<_> = rows.into_iter().skip(offset).collect();
    let is_last = remaining.len() <= page_size;
    let page: Vec<_> = remaining.into_iter().take(page_size).collect();
    let next_cursor = match (is_last, page.last()) {
        (false, Some((u, e, _))) => encode_cursor(&[u, e]),
        _ => String::new(),
    };
    let info: Vec<Value> = page
        .iter()
        .map(|(u, e, t)| json!({"handover_userid": u, "external_userid": e, "dimission_time": t}))
        .collect();
    Ok(json!({ "info": info, "is_last": is_last, "next_cursor": next_cursor }))
}

/// Performs every waiting transfer whose `takeover_time` has come: the relation moves to the
/// taker (remark, description and tags kept; `createtime` = takeover time; WeCom pushes
/// `add_external_contact` for the taker unless they already followed the customer), the
/// handover's relation is removed (on-job: `del_external_contact` with
/// `Source=DELETE_BY_TRANSFER` to the handover), status 1. A taker at the customer limit gets
/// status 4 and `transfer_fail`/`customer_limit_exceed`; a relation that vanished meanwhile
/// gets status 5. Events carry the takeover time as `CreateTime`.
pub(crate) fn settle(corp: &mut Corp, now: i64, out: &mut Vec<Outgoing>) {
    for i in 0..corp.transfers.len() {
        let Some(t) = corp
            .transfers
            .get(i)
            .filter(|t| t.status == 2 && t.takeover_time <= now)
            .cloned()
        else {
            continue;
        };
        let at = t.takeover_time;
        let ext = t.external_userid.as_str();
        let status = match corp.relation(&t.handover, ext).cloned() {
            None => 5,
            Some(old) => {
                let already = corp.relation(&t.takeover, ext).is_some();
                let limit = corp.staff.get(&t.takeover).and_then(|s| s.customer_limit);
                if !already && limit.is_some_and(|l| corp.customer_count(&t.takeover) >= l) {
                    let xml =
                        events::external_contact(&corp.id, at, "transfer_fail", &t.takeover, ext)
                            .text("FailReason", "customer_limit_exceed")
                            .finish();
                    out.push(Outgoing::new(&corp.id, CallbackKind::Contacts, xml));
                    4
                } else {
                    if !already {
                        corp.insert_relation(
                            &t.takeover,
                            ext,
                            Relation {
                                createtime: at,
                                oper_userid: t.handover.clone(),
                                add_way: 202,
                                deleted_by_customer: false,
                                visible_at: at,
                                ..old
                            },
                        );
                        let xml = events::external_contact(
                            &corp.id,
                            at,
                            "add_external_contact",
                            &t.takeover,
                            ext,
                        )
                        .finish();
                        out.push(Outgoing::new(&corp.id, CallbackKind::Contacts, xml));
                    }
                    corp.remove_relation(&t.handover, ext);
                    if t.mode == TransferMode::OnJob {
                        let xml = events::external_contact(
                            &corp.id,
                            at,
                            "del_external_contact",
                            &t.handover,
                            ext,
                        )
                        .text("Source", "DELETE_BY_TRANSFER")
                        .finish();
                        out.push(Outgoing::new(&corp.id, CallbackKind::Contacts, xml));
                    }
                    1
                }
            }
        };
        if let Some(record) = corp.transfers.get_mut(i) {
            record.status = status;
        }
    }
}
