//! Corp customer tags: `get_corp_tag_list`, `add_corp_tag`, `edit_corp_tag`, `del_corp_tag`
//! (§4.2). API-made changes push no callback. Deleted tags are kept as tombstones, shown (with
//! `deleted: true`) only when asked for by id, as WeCom does.

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiErr, Ctx, chars, corp_of};
use crate::testkit::callbacks::Outgoing;
use crate::testkit::model::{Corp, Tag, TagGroup};
use crate::testkit::state::{Inner, random_id};

/// Corp tags per corp (40126 above).
const MAX_TAGS: usize = 3000;
/// Longest tag or group name, in characters.
const MAX_NAME: usize = 30;

fn tag_json(tag: &Tag, with_deleted: bool) -> Value {
    let mut v =
        json!({"id": tag.id, "name": tag.name, "create_time": tag.create_time, "order": tag.order});
    if with_deleted && let Some(map) = v.as_object_mut() {
        map.insert("deleted".into(), json!(tag.deleted));
    }
    v
}

fn group_json<'a>(
    group: &TagGroup,
    tags: impl Iterator<Item = &'a Tag>,
    with_deleted: bool,
) -> Value {
    let mut tags: Vec<&Tag> = tags.collect();
    tags.sort_by(|a, b| {
        b.order
            .cmp(&a.order)
            .then(a.create_time.cmp(&b.create_time))
    });
    let tag_list: Vec<Value> = tags.iter().map(|t| tag_json(t, with_deleted)).collect();
    let mut v = json!({
        "group_id": group.id, "group_name": group.name, "create_time": group.create_time,
        "order": group.order, "tag": tag_list,
    });
    if with_deleted && let Some(map) = v.as_object_mut() {
        map.insert("deleted".into(), json!(group.deleted));
    }
    v
}

#[derive(Deserialize)]
struct ListRequest {
    #[serde(default)]
    tag_id: Vec<String>,
    #[serde(default)]
    group_id: Vec<String>,
}

/// `POST externalcontact/get_corp_tag_list`: all live groups, or those named by `group_id`, or
/// the groups of the tags named by `tag_id` (ignored when `group_id` is given). Bigger `order`
/// first.
pub(crate) fn list(
    inner: &mut Inner,
    ctx: &Ctx<'_>,
    _out: &mut Vec<Outgoing>,
) -> Result<Value, ApiErr> {
    let req: ListRequest = ctx.body()?;
    let corp = corp_of(inner, ctx)?;
    let mut groups: Vec<&TagGroup> = corp.tag_groups.iter().collect();
    groups.sort_by(|a, b| {
        b.order
            .cmp(&a.order)
            .then(a.create_time.cmp(&b.create_time))
    });
    let out: Vec<Value> = if !req.group_id.is_empty() {
        groups
            .into_iter()
            .filter(|g| req.group_id.contains(&g.id))
            .map(|g| group_json(g, g.tags.iter(), true))
            .collect()
    } else if !req.tag_id.is_empty() {
        groups
            .into_iter()
            .filter_map(|g| {
                let mut tags = g
                    .tags
                    .iter()
                    .filter(|t| req.tag_id.contains(&t.id))
                    .peekable();
                tags.peek()?;
                Some(group_json(g, tags, true))
            })
            .collect()
    } else {
        groups
            .into_iter()
            .filter(|g| !g.deleted)
            .map(|g| group_json(g, g.tags.iter().filter(|t| !t.deleted), false))
            .collect()
    };
    Ok(json!({ "tag_group": out }))
}

#[derive(Deserialize)]
struct NewTag {
    #[serde(default)]
    name: String,
    #[serde(default)]
    order: Option<u32>,
}

#[derive(Deserialize)]
struct AddRequest {
    #[serde(default)]
    group_id: Option<String>,
    #[serde(default)]
    group_name: Option<String>,
    #[serde(default)]
    order: Option<u32>,
    #[serde(default)]
    tag: Vec<NewTag>,
}

fn fresh_tag_id(corp: &Corp) -> String {
    loop {
        let id = random_id("et", 32);
        let taken = corp
            .tag_groups
            .iter()
            .any(|g| g.id == id || g.tags.iter().any(|t| t.id == id));
        if !taken {
            return id;
        }
    }
}

/// `POST externalcontact/add_corp_tag`: into `group_id`, or into the group named `group_name`
/// (created when missing). Names 1..=30 characters (40058), unique in their group (40071; the
/// request's own duplicates collapse), at most 3000 live tags per corp (40126).
pub(crate) fn add(
    inner: &mut Inner,
    ctx: &Ctx<'_>,
    _out: &mut Vec<Outgoing>,
) -> Result<Value, ApiErr> {
    let req: AddRequest = ctx.body()?;
    if req.tag.is_empty() {
        return Err(ApiErr::with(
            40058,
            "tag is empty: tag groups cannot be empty",
        ));
    }
    let mut names: Vec<(String, Option<u32>)> = Vec::new();
    for t in &req.tag {
        let name = t.name.trim();
        if name.is_empty() || chars(name) > MAX_NAME {
            return Err(ApiErr::with(40058, "tag name must be 1 to 30 characters"));
        }
        if names.iter().all(|(n, _)| n != name) {
            names.push((name.to_owned(), t.order));
        }
    }
    let corp = corp_of(inner, ctx)?;
    let index = match req.group_id.as_deref().filter(|g| !g.is_empty()) {
        Some(group_id) => corp
            .tag_groups
            .iter()
            .position(|g| !g.deleted && g.id == group_id)
            .ok_or_else(|| ApiErr::new(40068))?,
        None => {
            let group_name = req
                .group_name
                .as_deref()
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .ok_or_else(|| ApiErr::with(40058, "group_id or group_name is required"))?;
            if chars(group_name) > MAX_NAME {
                return Err(ApiErr::with(40058, "group name must be 1 to 30 characters"));
            }
            match corp
                .tag_groups
                .iter()
                .position(|g| !g.deleted && g.name == group_name)
            {
                Some(i) => i,
                None => {
                    if corp.live_tag_count() + names.len() > MAX_TAGS {
                        return Err(ApiErr::new(40126));
                    }
                    let id = fresh_tag_id(corp);
                    corp.tag_groups.push(TagGroup {
                        id,
                        name: group_name.to_owned(),
                        create_time: ctx.now,
                        order: req.order.unwrap_or(0),
                        deleted: false,
                        tags: Vec::new(),
                    });
                    corp.tag_groups.len() - 1
                }
            }
        }
    };
    let existing: BTreeSet<String> = corp
        .tag_groups
        .get(index)
        .map(|g| {
            g.tags
                .iter()
                .filter(|t| !t.deleted)
                .map(|t| t.name.clone())
                .collect()
        })
        .unwrap_or_default();
    let duplicate = names.iter().any(|(n, _)| existing.contains(n));
    let over = corp.live_tag_count() + names.len() > MAX_TAGS;
    if duplicate || over {
        // Do not leave behind a group created for this request.
        if corp
            .tag_groups
            .get(index)
            .is_some_and(|g| g.tags.is_empty())
        {
            corp.tag_groups.remove(index);
        }
        return Err(ApiErr::new(if duplicate { 40071 } else { 40126 }));
    }
    let mut created = Vec::new();
    for (name, order) in names {
        let id = fresh_tag_id(corp);
        created.push(Tag {
            id,
            name,
            create_time: ctx.now,
            order: order.unwrap_or(0),
            deleted: false,
        });
    }
    let group = corp
        .tag_groups
        .get_mut(index)
        .ok_or_else(|| ApiErr::new(-1))?;
    let response = group_json(group, created.iter(), false);
    group.tags.extend(created);
    Ok(json!({ "tag_group": response }))
}

#[derive(Deserialize)]
struct EditRequest {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    order: Option<u32>,
}

/// `POST externalcontact/edit_corp_tag`: renames or reorders a tag or a group (40068 unknown,
/// 40071 name taken).
pub(crate) fn edit(
    inner: &mut Inner,
    ctx: &Ctx<'_>,
    _out: &mut Vec<Outgoing>,
) -> Result<Value, ApiErr> {
    let req: EditRequest = ctx.body()?;
    let id = req
        .id
        .as_deref()
        .filter(|i| !i.is_empty())
        .ok_or_else(|| ApiErr::with(40058, "id is required"))?;
    let name = req.name.as_deref().map(str::trim);
    if name.is_some_and(|n| n.is_empty() || chars(n) > MAX_NAME) {
        return Err(ApiErr::with(40058, "name must be 1 to 30 characters"));
    }
    if name.is_none() && req.order.is_none() {
        return Err(ApiErr::with(40058, "nothing to change"));
    }
    let corp = corp_of(inner, ctx)?;
    if let Some(gi) = corp
        .tag_groups
        .iter()
        .position(|g| !g.deleted && g.id == id)
    {
        if let Some(n) = name
            && corp
                .tag_groups
                .iter()
                .any(|g| !g.deleted && g.id != id && g.name == n)
        {
            return Err(ApiErr::new(40071));
        }
        if let Some(group) = corp.tag_groups.get_mut(gi) {
            if let Some(n) = name {
                group.name = n.to_owned();
            }
            if let Some(order) = req.order {
                group.order = order;
            }
        }
        return Ok(json!({}));
    }
    for group in corp.tag_groups.iter_mut().filter(|g| !g.deleted) {
        let Some(ti) = group.tags.iter().position(|t| !t.deleted && t.id == id) else {
            continue;
        };
        if let Some(n) = name
            && group
                .tags
                .iter()
                .any(|t| !t.deleted && t.id != id && t.name == n)
        {
            return Err(ApiErr::new(40071));
        }
        if let Some(tag) = group.tags.get_mut(ti) {
            if let Some(n) = name {
                tag.name = n.to_owned();
            }
            if let Some(order) = req.order {
                tag.order = order;
            }
        }
        return Ok(json!({}));
    }
    Err(ApiErr::new(40068))
}

#[derive(Deserialize)]
struct DeleteRequest {
    #[serde(default)]
    tag_id: Vec<String>,
    #[serde(default)]
    group_id: Vec<String>,
}

/// `POST externalcontact/del_corp_tag`: deletes tags and groups (40068 if any id is unknown;
/// nothing is deleted then). A group whose last tag goes is deleted too; tags leave relations.
pub(crate) fn delete(
    inner: &mut Inner,
    ctx: &Ctx<'_>,
    _out: &mut Vec<Outgoing>,
) -> Result<Value, ApiErr> {
    let req: DeleteRequest = ctx.body()?;
    if req.tag_id.is_empty() && req.group_id.is_empty() {
        return Err(ApiErr::with(40058, "tag_id and group_id are both empty"));
    }
    let corp = corp_of(inner, ctx)?;
    let live = corp.tag_index();
    let live_groups: BTreeSet<&str> = corp
        .tag_groups
        .iter()
        .filter(|g| !g.deleted)
        .map(|g| g.id.as_str())
        .collect();
    if req.tag_id.iter().any(|t| !live.contains_key(t.as_str()))
        || req
            .group_id
            .iter()
            .any(|g| !live_groups.contains(g.as_str()))
    {
        return Err(ApiErr::new(40068));
    }
    let mut removed = BTreeSet::new();
    for group in corp.tag_groups.iter_mut().filter(|g| !g.deleted) {
        let whole = req.group_id.contains(&group.id);
        for tag in group.tags.iter_mut().filter(|t| !t.deleted) {
            if whole || req.tag_id.contains(&tag.id) {
                tag.deleted = true;
                removed.insert(tag.id.clone());
            }
        }
        if whole || group.tags.iter().all(|t| t.deleted) {
            group.deleted = true;
        }
    }
    corp.forget_tags(&removed);
    Ok(json!({}))
}
