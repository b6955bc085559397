//! 客户联系 reads and relation writes: `get_follow_user_list`, `list`, `get`,
//! `batch/get_by_user`, `mark_tag`, `remark` (protocol reference §4.2).

use std::collections::{BTreeSet, HashMap};

use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiErr, Ctx, active_member, chars, corp_of, decode_cursor, encode_cursor, object};
use crate::testkit::callbacks::Outgoing;
use crate::testkit::model::{Corp, Customer, Relation, Tag, TagGroup};
use crate::testkit::state::Inner;

/// `follow_user` of `get` pages this many followers.
const FOLLOW_PAGE: usize = 500;

/// Whether read APIs show the relation now: past the consistency delay, member still employed.
fn visible(corp: &Corp, userid: &str, rel: &Relation, now: i64) -> bool {
    rel.visible_at <= now && corp.active_staff(userid).is_some()
}

/// `external_contact` of `get` and `batch/get_by_user`.
pub(crate) fn external_contact_json(c: &Customer) -> Value {
    let mut map = object([
        ("external_userid", json!(c.external_userid)),
        ("name", json!(c.name)),
        ("type", json!(c.customer_type)),
        ("gender", json!(c.gender)),
        ("avatar", json!(c.avatar)),
    ]);
    if let Some(unionid) = &c.unionid {
        map.insert("unionid".into(), json!(unionid));
    }
    if c.customer_type == 2 {
        let corp_name = c.corp_name.clone().unwrap_or_default();
        map.insert("corp_name".into(), json!(corp_name));
        map.insert(
            "corp_full_name".into(),
            json!(format!("{corp_name}有限公司")),
        );
        map.insert(
            "position".into(),
            json!(c.position.clone().unwrap_or_default()),
        );
    }
    Value::Object(map)
}

/// The fields `follow_user` (get) and `follow_info` (batch) share.
fn follow_common(userid: &str, rel: &Relation) -> serde_json::Map<String, Value> {
    let mut map = object([
        ("userid", json!(userid)),
        ("remark", json!(rel.remark)),
        ("description", json!(rel.description)),
        ("createtime", json!(rel.createtime)),
        ("remark_mobiles", json!(rel.remark_mobiles)),
        ("oper_userid", json!(rel.oper_userid)),
        ("add_way", json!(rel.add_way)),
    ]);
    if let Some(name) = &rel.remark_corp_name {
        map.insert("remark_corp_name".into(), json!(name));
    }
    if let Some(state) = &rel.state {
        map.insert("state".into(), json!(state));
    }
    map
}

/// One `follow_user` element of `get`: tags with their names.
fn follow_user_json(
    userid: &str,
    rel: &Relation,
    tags: &HashMap<&str, (&TagGroup, &Tag)>,
) -> Value {
    let mut map = follow_common(userid, rel);
    let tag_list: Vec<Value> = rel
        .tag_ids
        .iter()
        .filter_map(|id| tags.get(id.as_str()))
        .map(|(group, tag)| {
            json!({"group_name": group.name, "tag_name": tag.name, "tag_id": tag.id, "type": 1})
        })
        .collect();
    map.insert("tags".into(), Value::Array(tag_list));
    Value::Object(map)
}

/// One `follow_info` of `batch/get_by_user`: tag ids only.
fn follow_info_json(userid: &str, rel: &Relation) -> Value {
    let mut map = follow_common(userid, rel);
    map.insert("tag_id".into(), json!(rel.tag_ids));
    Value::Object(map)
}

/// `GET externalcontact/get_follow_user_list`: employed members with 客户联系 enabled.
pub(crate) fn follow_user_list(
    inner: &mut Inner,
    ctx: &Ctx<'_>,
    _out: &mut Vec<Outgoing>,
) -> Result<Value, ApiErr> {
    let corp = corp_of(inner, ctx)?;
    let users: Vec<&str> = corp
        .staff
        .values()
        .filter(|s| !s.is_departed() && s.follow_enabled)
        .map(|s| s.userid.as_str())
        .collect();
    Ok(json!({ "follow_user": users }))
}

/// `GET externalcontact/list?userid=`: one member's customers, no paging; 84061 when none.
pub(crate) fn list(
    inner: &mut Inner,
    ctx: &Ctx<'_>,
    _out: &mut Vec<Outgoing>,
) -> Result<Value, ApiErr> {
    let corp = corp_of(inner, ctx)?;
    let userid = ctx.param("userid").ok_or_else(|| ApiErr::new(41009))?;
    if !corp.staff.contains_key(userid) {
        return Err(ApiErr::new(40003));
    }
    let ids: Vec<&str> = corp
        .relations_of(userid)
        .filter(|(_, rel)| visible(corp, userid, rel, ctx.now))
        .map(|(e, _)| e)
        .collect();
    if ids.is_empty() {
        return Err(ApiErr::new(84061));
    }
    Ok(json!({ "external_userid": ids }))
}

/// `GET externalcontact/get?external_userid=&cursor=`: one customer with their followers,
/// 500 per page (`next_cursor` only while more follow).
pub(crate) fn get(
    inner: &mut Inner,
    ctx: &Ctx<'_>,
    _out: &mut Vec<Outgoing>,
) -> Result<Value, ApiErr> {
    let corp = corp_of(inner, ctx)?;
    let ext = ctx
        .param("external_userid")
        .ok_or_else(|| ApiErr::new(41035))?;
    let customer = corp.customers.get(ext).ok_or_else(|| ApiErr::new(40096))?;
    let after = match ctx.param("cursor") {
        Some(cursor) => decode_cursor(cursor, 1)?.into_iter().next(),
        None => None,
    };
    let followers: Vec<(&str, &Relation)> = corp
        .followers
        .get(ext)
        .into_iter()
        .flatten()
        .filter_map(|u| corp.relation(u, ext).map(|r| (u.as_str(), r)))
        .filter(|(u, rel)| visible(corp, u, rel, ctx.now))
        .collect();
    if followers.is_empty() {
        return Err(ApiErr::new(84061));
    }
    let tags = corp.tag_index();
    let mut page: Vec<(&str, &Relation)> = followers
        .into_iter()
        .filter(|(u, _)| after.as_deref().is_none_or(|a| *u > a))
        .take(FOLLOW_PAGE + 1)
        .collect();
    let more = page.len() > FOLLOW_PAGE;
    page.truncate(FOLLOW_PAGE);
    let follow_user: Vec<Value> = page
        .iter()
        .map(|(u, rel)| follow_user_json(u, rel, &tags))
        .collect();
    let mut map = object([
        ("external_contact", external_contact_json(customer)),
        ("follow_user", Value::Array(follow_user)),
    ]);
    if more && let Some((last, _)) = page.last() {
        map.insert("next_cursor".into(), json!(encode_cursor(&[last])));
    }
    Ok(Value::Object(map))
}

#[derive(Deserialize)]
struct BatchRequest {
    #[serde(default)]
    userid_list: Vec<String>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
}

/// `POST externalcontact/batch/get_by_user`: one row per visible (customer, follower) pair of
/// the listed members, in (userid, external_userid) order. The cursor names the last row
/// returned, so paging is stable while relations change. Unknown or departed members in the list
/// are skipped (an assumption).
pub(crate) fn batch_get_by_user(
    inner: &mut Inner,
    ctx: &Ctx<'_>,
    _out: &mut Vec<Outgoing>,
) -> Result<Value, ApiErr> {
    let req: BatchRequest = ctx.body()?;
    if req.userid_list.is_empty() || req.userid_list.len() > 100 {
        return Err(ApiErr::with(
            40058,
            "userid_list must hold 1 to 100 userids",
        ));
    }
    let limit = match req.limit {
        Some(l) if l > 0 => usize::try_from(l.min(100)).unwrap_or(100),
        _ => 50,
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
    let corp = corp_of(inner, ctx)?;
    let users: BTreeSet<&str> = req.userid_list.iter().map(String::as_str).collect();
    let mut rows: Vec<(&str, &str, &Relation)> = Vec::with_capacity(limit + 1);
    'users: for userid in users {
        if let Some((au, _)) = &after
            && userid < au.as_str()
        {
            continue;
        }
        for (ext, rel) in corp.relations_of(userid) {
            if let Some((au, ae)) = &after
                && userid == au.as_str()
                && ext <= ae.as_str()
            {
                continue;
            }
            if !visible(corp, userid, rel, ctx.now) {
                continue;
            }
            rows.push((userid, ext, rel));
            if rows.len() > limit {
                break 'users;
            }
        }
    }
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next_cursor = match (more, rows.last()) {
        (true, Some((u, e, _))) => encode_cursor(&[u, e]),
        _ => String::new(),
    };
    let list: Vec<Value> = rows
        .iter()
        .filter_map(|(u, e, rel)| {
            let customer = corp.customers.get(*e)?;
            Some(json!({
                "external_contact": external_contact_json(customer),
                "follow_info": follow_info_json(u, rel),
            }))
        })
        .collect();
    Ok(json!({ "external_contact_list": list, "next_cursor": next_cursor }))
}

#[derive(Deserialize)]
struct MarkTagRequest {
    #[serde(default)]
    userid: Option<String>,
    #[serde(default)]
    external_userid: Option<String>,
    #[serde(default)]
    add_tag: Vec<String>,
    #[serde(default)]
    remove_tag: Vec<String>,
}

/// The relation a write API names: member (40058/40003), customer (41035/40096), relation (84061).
fn relation_of<'c>(
    corp: &'c mut Corp,
    userid: Option<&str>,
    external_userid: Option<&str>,
) -> Result<&'c mut Relation, ApiErr> {
    let userid = active_member(corp, userid)?.userid.clone();
    let ext = external_userid
        .filter(|e| !e.is_empty())
        .ok_or_else(|| ApiErr::new(41035))?;
    if !corp.customers.contains_key(ext) {
        return Err(ApiErr::new(40096));
    }
    corp.relation_mut(&userid, ext)
        .ok_or_else(|| ApiErr::new(84061))
}

/// `POST externalcontact/mark_tag`: tags per (member, customer) relation. No callback.
pub(crate) fn mark_tag(
    inner: &mut Inner,
    ctx: &Ctx<'_>,
    _out: &mut Vec<Outgoing>,
) -> Result<Value, ApiErr> {
    let req: MarkTagRequest = ctx.body()?;
    if req.add_tag.is_empty() && req.remove_tag.is_empty() {
        return Err(ApiErr::with(40058, "add_tag and remove_tag are both empty"));
    }
    let corp = corp_of(inner, ctx)?;
    let live: BTreeSet<String> = corp.tag_index().keys().map(|k| (*k).to_owned()).collect();
    if req
        .add_tag
        .iter()
        .chain(&req.remove_tag)
        .any(|t| !live.contains(t))
    {
        // Check the relation first: it is the more fundamental error.
        relation_of(corp, req.userid.as_deref(), req.external_userid.as_deref())?;
        return Err(ApiErr::new(40068));
    }
    let rel = relation_of(corp, req.userid.as_deref(), req.external_userid.as_deref())?;
    for tag in req.add_tag {
        if !rel.tag_ids.contains(&tag) {
            rel.tag_ids.push(tag);
        }
    }
    rel.tag_ids.retain(|t| !req.remove_tag.contains(t));
    Ok(json!({}))
}

#[derive(Deserialize)]
struct RemarkRequest {
    #[serde(default)]
    userid: Option<String>,
    #[serde(default)]
    external_userid: Option<String>,
    #[serde(default)]
    remark: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    remark_company: Option<String>,
    #[serde(default)]
    remark_mobiles: Option<Vec<String>>,
    #[serde(default)]
    remark_pic_mediaid: Option<String>,
}

/// `POST externalcontact/remark`: remark ≤ 20 characters, description ≤ 150, remark_company ≤ 20
/// (else 40058); `remark_mobiles` replaces the list (`[""]` clears it). No callback.
pub(crate) fn remark(
    inner: &mut Inner,
    ctx: &Ctx<'_>,
    _out: &mut Vec<Outgoing>,
) -> Result<Value, ApiErr> {
    let req: RemarkRequest = ctx.body()?;
    if req.remark.is_none()
        && req.description.is_none()
        && req.remark_company.is_none()
        && req.remark_mobiles.is_none()
        && req.remark_pic_mediaid.is_none()
    {
        return Err(ApiErr::with(40058, "nothing to change"));
    }
    let too_long = |v: &Option<String>, max: usize| v.as_deref().is_some_and(|s| chars(s) > max);
    if too_long(&req.remark, 20) {
        return Err(ApiErr::with(40058, "remark exceeds 20 characters"));
    }
    if too_long(&req.description, 150) {
        return Err(ApiErr::with(40058, "description exceeds 150 characters"));
    }
    if too_long(&req.remark_company, 20) {
        return Err(ApiErr::with(40058, "remark_company exceeds 20 characters"));
    }
    let corp = corp_of(inner, ctx)?;
    let rel = relation_of(corp, req.userid.as_deref(), req.external_userid.as_deref())?;
    if let Some(remark) = req.remark {
        rel.remark = remark;
    }
    if let Some(description) = req.description {
        rel.description = description;
    }
    if let Some(company) = req.remark_company {
        rel.remark_corp_name = Some(company).filter(|c| !c.is_empty());
    }
    if let Some(mobiles) = req.remark_mobiles {
        rel.remark_mobiles = mobiles.into_iter().filter(|m| !m.is_empty()).collect();
    }
    Ok(json!({}))
}
