//! Customer group chats: `groupchat/list`, `groupchat/get`, and the two ownership transfers
//! `groupchat/transfer` (owner left) and `groupchat/onjob_transfer` (§4.2, §4.8).

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiErr, Ctx, corp_of, decode_cursor, encode_cursor};
use crate::testkit::callbacks::Outgoing;
use crate::testkit::model::{ChatMember, GroupChat};
use crate::testkit::state::Inner;

/// 90 days in seconds.
const NINETY_DAYS: i64 = 90 * 86_400;

#[derive(Deserialize, Default)]
struct OwnerFilter {
    #[serde(default)]
    userid_list: Vec<String>,
}

#[derive(Deserialize)]
struct ListRequest {
    #[serde(default)]
    status_filter: Option<i64>,
    #[serde(default)]
    owner_filter: Option<OwnerFilter>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
}

/// `POST externalcontact/groupchat/list`: `limit` required, 1..=1000 (40058); `status_filter`
/// 0 all, 1 owner left, 2 inheriting, 3 inherited; `owner_filter.userid_list` ≤ 100; without an
/// owner filter a corp of more than 1000 members answers 81017. Dismissed chats are not listed.
pub(crate) fn list(
    inner: &mut Inner,
    ctx: &Ctx<'_>,
    _out: &mut Vec<Outgoing>,
) -> Result<Value, ApiErr> {
    let req: ListRequest = ctx.body()?;
    let limit = req
        .limit
        .filter(|l| (1..=1000).contains(l))
        .and_then(|l| usize::try_from(l).ok())
        .ok_or_else(|| ApiErr::with(40058, "limit must be 1 to 1000"))?;
    let status = req.status_filter.unwrap_or(0);
    if !(0..=3).contains(&status) {
        return Err(ApiErr::with(40058, "status_filter must be 0 to 3"));
    }
    let owners = req.owner_filter.unwrap_or_default().userid_list;
    if owners.len() > 100 {
        return Err(ApiErr::with(40058, "owner_filter.userid_list exceeds 100"));
    }
    let after = match req.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(cursor) => decode_cursor(cursor, 1)?.into_iter().next(),
        None => None,
    };
    let corp = corp_of(inner, ctx)?;
    if owners.is_empty() && corp.staff.len() > 1000 {
        return Err(ApiErr::new(81017));
    }
    let mut page: Vec<&GroupChat> = corp
        .chats
        .values()
        .filter(|c| !c.dismissed)
        .filter(|c| status == 0 || c.status == status)
        .filter(|c| owners.is_empty() || owners.contains(&c.owner))
        .filter(|c| after.as_deref().is_none_or(|a| c.chat_id.as_str() > a))
        .take(limit + 1)
        .collect();
    let more = page.len() > limit;
    page.truncate(limit);
    let next_cursor = match (more, page.last()) {
        (true, Some(last)) => encode_cursor(&[&last.chat_id]),
        _ => String::new(),
    };
    let list: Vec<Value> = page
        .iter()
        .map(|c| json!({"chat_id": c.chat_id, "status": c.status}))
        .collect();
    Ok(json!({ "group_chat_list": list, "next_cursor": next_cursor }))
}

fn member_json(m: &ChatMember, need_name: bool) -> Value {
    let mut v = json!({
        "userid": m.userid, "type": m.member_type, "join_time": m.join_time,
        "join_scene": m.join_scene, "group_nickname": m.group_nickname,
    });
    if let Some(map) = v.as_object_mut() {
        if let Some(invitor) = &m.invitor {
            map.insert("invitor".into(), json!({ "userid": invitor }));
        }
        if need_name {
            map.insert("name".into(), json!(m.name));
        }
        if let Some(unionid) = &m.unionid {
            map.insert("unionid".into(), json!(unionid));
        }
    }
    v
}

#[derive(Deserialize)]
struct GetRequest {
    #[serde(default)]
    chat_id: Option<String>,
    #[serde(default)]
    need_name: Option<i64>,
}

/// `POST externalcontact/groupchat/get`: 40050 unknown chat, 49008 dismissed; member `name`
/// only with `need_name: 1`.
pub(crate) fn get(
    inner: &mut Inner,
    ctx: &Ctx<'_>,
    _out: &mut Vec<Outgoing>,
) -> Result<Value, ApiErr> {
    let req: GetRequest = ctx.body()?;
    let chat_id = req
        .chat_id
        .as_deref()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiErr::with(40058, "chat_id is required"))?;
    let corp = corp_of(inner, ctx)?;
    let chat = corp.chats.get(chat_id).ok_or_else(|| ApiErr::new(40050))?;
    if chat.dismissed {
        return Err(ApiErr::new(49008));
    }
    let need_name = req.need_name == Some(1);
    let members: Vec<Value> = chat
        .members
        .iter()
        .map(|m| member_json(m, need_name))
        .collect();
    let admins: Vec<Value> = chat
        .admin_list
        .iter()
        .map(|a| json!({ "userid": a }))
        .collect();
    Ok(json!({
        "group_chat": {
            "chat_id": chat.chat_id, "name": chat.name, "owner": chat.owner,
            "create_time": chat.create_time, "notice": chat.notice,
            "member_list": members, "admin_list": admins, "member_version": chat.member_version,
        }
    }))
}

#[derive(Deserialize)]
struct TransferRequest {
    #[serde(default)]
    chat_id_list: Vec<String>,
    #[serde(default)]
    new_owner: Option<String>,
}

/// `groupchat/transfer` (`resigned`) or `groupchat/onjob_transfer`. Per chat: 90501 unknown or
/// dismissed, 90500 owner still employed (resigned variant), 90502 owner already left (on-job
/// variant), 40130 new owner is the owner, 40128 a third on-job transfer within 90 days (an
/// assumption: WeCom publishes the rule, not the code). A call that would hand over more than
/// `groups_per_owner_per_day` chats of one old owner in one day answers 45009 as a whole and
/// changes nothing (an assumption). The change is immediate and pushes no callback.
fn transfer(inner: &mut Inner, ctx: &Ctx<'_>, resigned: bool) -> Result<Value, ApiErr> {
    let req: TransferRequest = ctx.body()?;
    if req.chat_id_list.is_empty() || req.chat_id_list.len() > 100 {
        return Err(ApiErr::with(40058, "chat_id_list must hold 1 to 100 chats"));
    }
    let corp = corp_of(inner, ctx)?;
    let new_owner = super::active_member(corp, req.new_owner.as_deref())?
        .userid
        .clone();
    let day = (ctx.now + 8 * 3600).div_euclid(86_400);
    let mut failed = Vec::new();
    let mut accepted: Vec<(String, String)> = Vec::new();
    for chat_id in &req.chat_id_list {
        let fail = match corp.chats.get(chat_id).filter(|c| !c.dismissed) {
            None => Some(90501),
            Some(chat) => {
                let owner_left = corp.staff.get(&chat.owner).is_none_or(|s| s.is_departed());
                let recent = chat
                    .onjob_transfers
                    .iter()
                    .filter(|t| ctx.now - **t < NINETY_DAYS)
                    .count();
                if resigned && !owner_left {
                    Some(90500)
                } else if !resigned && owner_left {
                    Some(90502)
                } else if chat.owner == new_owner {
                    Some(40130)
                } else if !resigned && recent >= 2 {
                    Some(40128)
                } else {
                    None
                }
            }
        };
        match fail {
            Some(code) => failed.push(json!({
                "chat_id": chat_id, "errcode": code, "errmsg": super::super::api::errmsg_text(code),
            })),
            None => {
                if let Some(chat) = corp.chats.get(chat_id)
                    && accepted.iter().all(|(c, _)| c != chat_id)
                {
                    accepted.push((chat_id.clone(), chat.owner.clone()));
                }
            }
        }
    }
    let mut per_owner: HashMap<&str, u64> = HashMap::new();
    for (_, owner) in &accepted {
        *per_owner.entry(owner).or_default() += 1;
    }
    let limit = ctx.config.limits.groups_per_owner_per_day;
    let over = per_owner.iter().any(|(owner, n)| {
        let done = corp
            .chat_handover_per_day
            .get(&((*owner).to_owned(), day))
            .copied()
            .unwrap_or(0);
        done + n > limit
    });
    if over {
        return Err(ApiErr::with(
            45009,
            "api freq out of limit: too many group chats of one owner handed over today",
        ));
    }
    for (owner, n) in per_owner {
        *corp
            .chat_handover_per_day
            .entry((owner.to_owned(), day))
            .or_default() += n;
    }
    let new_owner_name = corp
        .staff
        .get(&new_owner)
        .map(|s| s.name.clone())
        .unwrap_or_default();
    for (chat_id, _) in &accepted {
        if let Some(chat) = corp.chats.get_mut(chat_id) {
            chat.owner.clone_from(&new_owner);
            if resigned {
                chat.status = 3;
            } else {
                chat.status = 0;
                chat.onjob_transfers.push(ctx.now);
            }
            if chat.members.iter().all(|m| m.userid != new_owner) {
                chat.members.push(ChatMember {
                    userid: new_owner.clone(),
                    member_type: 1,
                    join_time: ctx.now,
                    join_scene: 1,
                    invitor: None,
                    group_nickname: String::new(),
                    name: new_owner_name.clone(),
                    unionid: None,
                });
            }
        }
    }
    Ok(json!({ "failed_chat_list": failed }))
}

/// `POST externalcontact/groupchat/transfer`: chats whose owner left.
pub(crate) fn transfer_resigned(
    inner: &mut Inner,
    ctx: &Ctx<'_>,
    _out: &mut Vec<Outgoing>,
) -> Result<Value, ApiErr> {
    transfer(inner, ctx, true)
}

/// `POST externalcontact/groupchat/onjob_transfer`: chats of an employed owner.
pub(crate) fn transfer_onjob(
    inner: &mut Inner,
    ctx: &Ctx<'_>,
    _out: &mut Vec<Outgoing>,
) -> Result<Value, ApiErr> {
    transfer(inner, ctx, false)
}
