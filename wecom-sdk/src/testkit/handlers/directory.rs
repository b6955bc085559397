//! Members, departments, app messages, the chat-archive member list and the JS-SDK tickets
//! (§4.3, §4.4, §4.5).

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiErr, Ctx, corp_of};
use crate::testkit::callbacks::Outgoing;
use crate::testkit::model::{Corp, DroppedMessage, RecentMessage};
use crate::testkit::state::{Inner, random_id};

/// Tickets live this long (WeCom: 7200 s), on the emulator clock.
const TICKET_TTL: i64 = 7200;
/// Ticket fetches per corp per hour (§4.4).
const TICKETS_PER_CORP_PER_HOUR: u64 = 400;
/// Ticket fetches per app per hour (§4.4).
const TICKETS_PER_APP_PER_HOUR: u64 = 100;
const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 3_600_000;
/// `duplicate_check_interval` when absent or not positive (WeCom: 1800 s).
const DUPLICATE_INTERVAL_DEFAULT: i64 = 1800;
/// Longest `duplicate_check_interval` (WeCom: 4 h); larger values are clamped to it.
const DUPLICATE_INTERVAL_MAX: i64 = 4 * 3600;
/// Smallest duplicate-check memory that is pruned of deliveries older than the longest interval.
const RECENT_PRUNE_MIN: usize = 1024;

/// `GET user/get?userid=`: 41009 missing, 60111 unknown. Departed members answer with status 5.
pub(crate) fn user_get(
    inner: &mut Inner,
    ctx: &Ctx<'_>,
    _out: &mut Vec<Outgoing>,
) -> Result<Value, ApiErr> {
    let corp = corp_of(inner, ctx)?;
    let userid = ctx.param("userid").ok_or_else(|| ApiErr::new(41009))?;
    let staff = corp.staff.get(userid).ok_or_else(|| ApiErr::new(60111))?;
    let order: Vec<i64> = staff.department.iter().map(|_| 0).collect();
    let leader: Vec<i64> = staff
        .department
        .iter()
        .map(|d| i64::from(staff.leads.contains(d)))
        .collect();
    Ok(json!({
        "userid": staff.userid,
        "name": staff.name,
        "department": staff.department,
        "order": order,
        "position": staff.position,
        "mobile": staff.mobile,
        "gender": staff.gender.to_string(),
        "email": staff.email,
        "is_leader_in_dept": leader,
        "direct_leader": [],
        "avatar": "",
        "thumb_avatar": "",
        "telephone": "",
        "alias": "",
        "status": staff.status,
        "main_department": staff.department.first().copied().unwrap_or(1),
    }))
}

/// `GET department/list[?id=]`: all departments, or one and everything below it (60123 unknown).
pub(crate) fn department_list(
    inner: &mut Inner,
    ctx: &Ctx<'_>,
    _out: &mut Vec<Outgoing>,
) -> Result<Value, ApiErr> {
    let corp = corp_of(inner, ctx)?;
    let root = match ctx.param("id") {
        None => None,
        Some(id) => {
            let id: i64 = id.parse().map_err(|_| ApiErr::new(60123))?;
            if !corp.departments.contains_key(&id) {
                return Err(ApiErr::new(60123));
            }
            Some(id)
        }
    };
    let mut included: BTreeSet<i64> = BTreeSet::new();
    match root {
        None => included.extend(corp.departments.keys().copied()),
        Some(root) => {
            included.insert(root);
            // Departments are few; repeat until no child is added.
            loop {
                let before = included.len();
                for d in corp.departments.values() {
                    if included.contains(&d.parent_id) {
                        included.insert(d.id);
                    }
                }
                if included.len() == before {
                    break;
                }
            }
        }
    }
    let list: Vec<Value> = corp
        .departments
        .values()
        .filter(|d| included.contains(&d.id))
        .map(|d| {
            let leaders: Vec<&str> = corp
                .staff
                .values()
                .filter(|s| !s.is_departed() && s.leads.contains(&d.id))
                .map(|s| s.userid.as_str())
                .collect();
            json!({"id": d.id, "name": d.name, "parentid": d.parent_id, "order": d.order, "department_leader": leaders})
        })
        .collect();
    Ok(json!({ "department": list }))
}

#[derive(Deserialize)]
struct TextContent {
    #[serde(default)]
    content: String,
}

#[derive(Deserialize)]
struct TextCard {
    #[serde(default)]
    title: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    url: String,
}

#[derive(Deserialize)]
struct SendRequest {
    #[serde(default)]
    touser: Option<String>,
    #[serde(default)]
    toparty: Option<String>,
    #[serde(default)]
    totag: Option<String>,
    #[serde(default)]
    msgtype: Option<String>,
    #[serde(default)]
    agentid: Option<i64>,
    #[serde(default)]
    text: Option<TextContent>,
    #[serde(default)]
    markdown: Option<TextContent>,
    #[serde(default)]
    textcard: Option<TextCard>,
    #[serde(default)]
    enable_duplicate_check: Option<i64>,
    #[serde(default)]
    duplicate_check_interval: Option<i64>,
}

const MSG_TYPES: &[&str] = &[
    "text",
    "image",
    "voice",
    "video",
    "file",
    "textcard",
    "news",
    "mpnews",
    "markdown",
    "miniprogram_notice",
    "template_card",
];

fn split_ids(s: Option<&str>) -> Vec<String> {
    s.unwrap_or("")
        .split('|')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The duplicate check's key: the app, the receiver spec as sets (order, blanks and repeats of
/// the `|` lists do not matter), the msgtype and its body object. `serde_json`'s map is sorted,
/// so the body's text is the same for the same content whatever the request's key order.
fn duplicate_key(
    agent_id: i64,
    receivers: [&[String]; 3],
    msgtype: &str,
    content: Option<&Value>,
) -> String {
    let [users, parties, tags] = receivers.map(|ids| {
        ids.iter()
            .map(String::as_str)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
            .join("|")
    });
    let content = content.map(Value::to_string).unwrap_or_default();
    format!("{agent_id}\n{users}\n{parties}\n{tags}\n{msgtype}\n{content}")
}

/// Remembers a delivery for the duplicate check; forgets, now and then, deliveries older than
/// the longest interval (amortised: only when the memory has doubled since the last pruning).
fn remember_delivery(corp: &mut Corp, key: String, now: i64, msgid: &str) {
    if corp.recent_messages.len() >= corp.recent_prune_at {
        corp.recent_messages
            .retain(|_, m| now.saturating_sub(m.sent_at) < DUPLICATE_INTERVAL_MAX);
        corp.recent_prune_at = (corp.recent_messages.len() * 2).max(RECENT_PRUNE_MIN);
    }
    corp.recent_messages.insert(
        key,
        RecentMessage {
            sent_at: now,
            msgid: msgid.to_owned(),
        },
    );
}

/// `POST message/send`: the token's app must be `agentid` (301002); text and markdown ≤ 2048
/// bytes, textcard title ≤ 128 and description ≤ 512 bytes (45002); unknown or departed members,
/// unknown departments and every tag (contact tags are not emulated) are reported in
/// `invaliduser`/`invalidparty`/`invalidtag`; nothing valid → 81013. Per (app, member) at most
/// `message_per_user_per_minute`/`…_per_hour` deliveries: the rest is dropped silently.
///
/// With `enable_duplicate_check: 1`, the same content (msgtype and its body) from the same app to
/// the same receiver spec, delivered less than `duplicate_check_interval` seconds ago on the
/// emulator clock (default 1800, clamped to 14400), is answered as usual (with the earlier
/// delivery's `msgid`) but not delivered: nothing is sent, dropped or counted against the
/// per-member limits.
pub(crate) fn message_send(
    inner: &mut Inner,
    ctx: &Ctx<'_>,
    _out: &mut Vec<Outgoing>,
) -> Result<Value, ApiErr> {
    let req: SendRequest = ctx.body()?;
    let agent_id = req.agentid.ok_or_else(|| ApiErr::new(41011))?;
    if ctx.agent_id != Some(agent_id) {
        return Err(ApiErr::new(301002));
    }
    let msgtype = req.msgtype.as_deref().unwrap_or("");
    if !MSG_TYPES.contains(&msgtype) {
        return Err(ApiErr::new(40008));
    }
    match msgtype {
        "text" | "markdown" => {
            let body = if msgtype == "text" {
                &req.text
            } else {
                &req.markdown
            };
            let content = body.as_ref().map(|t| t.content.as_str()).unwrap_or("");
            if content.is_empty() {
                return Err(ApiErr::new(44004));
            }
            if content.len() > 2048 {
                return Err(ApiErr::new(45002));
            }
        }
        "textcard" => {
            let card = req
                .textcard
                .as_ref()
                .ok_or_else(|| ApiErr::with(40058, "textcard is required"))?;
            if card.title.is_empty() || card.url.is_empty() {
                return Err(ApiErr::with(40058, "textcard needs title and url"));
            }
            if card.title.len() > 128 || card.description.len() > 512 {
                return Err(ApiErr::new(45002));
            }
        }
        _ => {}
    }
    let users = split_ids(req.touser.as_deref());
    let parties = split_ids(req.toparty.as_deref());
    let tags = split_ids(req.totag.as_deref());
    if users.is_empty() && parties.is_empty() && tags.is_empty() {
        return Err(ApiErr::new(82001));
    }
    if users.len() > 1000 {
        return Err(ApiErr::with(40058, "touser exceeds 1000 members"));
    }
    if parties.len() > 100 {
        return Err(ApiErr::new(82002));
    }
    if tags.len() > 100 {
        return Err(ApiErr::new(82003));
    }
    let corp = corp_of(inner, ctx)?;
    let mut recipients: BTreeSet<String> = BTreeSet::new();
    let mut invalid_users = Vec::new();
    for u in &users {
        if u == "@all" {
            recipients.extend(
                corp.staff
                    .values()
                    .filter(|s| !s.is_departed())
                    .map(|s| s.userid.clone()),
            );
        } else if corp.active_staff(u).is_some() {
            recipients.insert(u.clone());
        } else {
            invalid_users.push(u.to_lowercase());
        }
    }
    let mut invalid_parties = Vec::new();
    for p in &parties {
        match p.parse::<i64>() {
            Ok(id) if corp.departments.contains_key(&id) => recipients.extend(
                corp.staff
                    .values()
                    .filter(|s| !s.is_departed() && s.department.contains(&id))
                    .map(|s| s.userid.clone()),
            ),
            _ => invalid_parties.push(p.clone()),
        }
    }
    if recipients.is_empty() {
        return Err(ApiErr::new(81013));
    }
    let answer = |msgid: String| {
        json!({
            "invaliduser": invalid_users.join("|"),
            "invalidparty": invalid_parties.join("|"),
            "invalidtag": tags.join("|"),
            "unlicenseduser": "",
            "msgid": msgid,
            "response_code": random_id("", 48),
        })
    };
    let key = duplicate_key(
        agent_id,
        [&users, &parties, &tags],
        msgtype,
        ctx.body.get(msgtype),
    );
    if req.enable_duplicate_check == Some(1) {
        let interval = match req.duplicate_check_interval {
            Some(secs) if secs > 0 => secs.min(DUPLICATE_INTERVAL_MAX),
            _ => DUPLICATE_INTERVAL_DEFAULT,
        };
        let earlier = corp
            .recent_messages
            .get(&key)
            .filter(|m| ctx.now.saturating_sub(m.sent_at) < interval)
            .map(|m| m.msgid.clone());
        if let Some(msgid) = earlier {
            inner.duplicates_suppressed += 1;
            return Ok(answer(msgid));
        }
    }
    let limits = &ctx.config.limits;
    let mut delivered = 0;
    for userid in &recipients {
        let key = format!("msg:{}:{agent_id}:{userid}", ctx.corp_id);
        let ok = inner.count_windows(&[
            (
                format!("{key}:m"),
                MINUTE_MS,
                limits.message_per_user_per_minute,
            ),
            (
                format!("{key}:h"),
                HOUR_MS,
                limits.message_per_user_per_hour,
            ),
        ]);
        if ok {
            delivered += 1;
        } else {
            inner.dropped_messages.push(DroppedMessage {
                agent_id,
                userid: userid.clone(),
                body: ctx.body.clone(),
            });
        }
    }
    let msgid = random_id("", 40);
    if delivered > 0 {
        inner.sent_messages.push(ctx.body.clone());
        let corp = corp_of(inner, ctx)?;
        remember_delivery(corp, key, ctx.now, &msgid);
    }
    Ok(answer(msgid))
}

/// `POST msgaudit/get_permit_user_list`: employed members in the archive scope.
pub(crate) fn permit_user_list(
    inner: &mut Inner,
    ctx: &Ctx<'_>,
    _out: &mut Vec<Outgoing>,
) -> Result<Value, ApiErr> {
    #[derive(Deserialize)]
    struct Request {
        #[serde(default, rename = "type")]
        edition: Option<i64>,
    }
    let req: Request = ctx.body()?;
    if req.edition.is_some_and(|t| !(1..=3).contains(&t)) {
        return Err(ApiErr::with(40058, "type must be 1, 2 or 3"));
    }
    let corp = corp_of(inner, ctx)?;
    let ids: Vec<&str> = corp
        .staff
        .values()
        .filter(|s| !s.is_departed() && s.archive_permitted)
        .map(|s| s.userid.as_str())
        .collect();
    Ok(json!({ "ids": ids }))
}

/// Counts a ticket fetch against the corp's and the app's hourly limits (45009 when full).
fn count_ticket(inner: &mut Inner, ctx: &Ctx<'_>) -> Result<(), ApiErr> {
    let ok = inner.count_windows(&[
        (
            format!("ticket:{}:h", ctx.corp_id),
            HOUR_MS,
            TICKETS_PER_CORP_PER_HOUR,
        ),
        (
            format!("ticket:{}:{}:h", ctx.corp_id, ctx.app),
            HOUR_MS,
            TICKETS_PER_APP_PER_HOUR,
        ),
    ]);
    if ok {
        Ok(())
    } else {
        inner.rate_limited += 1;
        Err(ApiErr::new(45009))
    }
}

/// `GET get_jsapi_ticket`: the corp ticket (for `wx.config`), the same while valid.
pub(crate) fn jsapi_ticket(
    inner: &mut Inner,
    ctx: &Ctx<'_>,
    _out: &mut Vec<Outgoing>,
) -> Result<Value, ApiErr> {
    count_ticket(inner, ctx)?;
    let corp = corp_of(inner, ctx)?;
    let app = corp
        .apps
        .get_mut(ctx.app)
        .ok_or_else(|| ApiErr::new(40014))?;
    let (ticket, expires) = current_ticket(&mut app.corp_ticket, ctx.now);
    Ok(json!({ "ticket": ticket, "expires_in": expires }))
}

/// `GET ticket/get?type=agent_config`: the app ticket (for `wx.agentConfig`); needs an app token
/// (40056 for a token without agentid).
pub(crate) fn agent_ticket(
    inner: &mut Inner,
    ctx: &Ctx<'_>,
    _out: &mut Vec<Outgoing>,
) -> Result<Value, ApiErr> {
    if ctx.param("type") != Some("agent_config") {
        return Err(ApiErr::with(40058, "type must be agent_config"));
    }
    if ctx.agent_id.is_none() {
        return Err(ApiErr::new(40056));
    }
    count_ticket(inner, ctx)?;
    let corp = corp_of(inner, ctx)?;
    let app = corp
        .apps
        .get_mut(ctx.app)
        .ok_or_else(|| ApiErr::new(40014))?;
    let (ticket, expires) = current_ticket(&mut app.agent_ticket, ctx.now);
    Ok(json!({ "ticket": ticket, "expires_in": expires }))
}

fn current_ticket(slot: &mut Option<(String, i64)>, now: i64) -> (String, i64) {
    match slot {
        Some((ticket, expires_at)) if *expires_at > now => (ticket.clone(), *expires_at - now),
        _ => {
            let ticket = random_id("", 86);
            *slot = Some((ticket.clone(), now + TICKET_TTL));
            (ticket, TICKET_TTL)
        }
    }
}
