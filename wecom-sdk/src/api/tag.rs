//! Corp customer tags (企业客户标签, §4.2): list, add, edit, delete, and tagging one relation.
//! Changes made here do not come back as callbacks: the caller updates its own copy.

use serde::{Deserialize, Serialize};

use super::client::{Request, WecomClient};
use super::config::AppCredentials;
use super::error::ApiError;
use super::wire::{Empty, bool_or_int, check_chars, invalid};
use crate::ids::{ExternalUserId, TagId, UserId};

/// Longest tag or group name WeCom accepts.
pub const MAX_TAG_NAME_CHARS: usize = 30;

/// One corp tag inside a [`TagGroup`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorpTag {
    /// The tag id (`et…`).
    pub id: TagId,
    /// Tag name.
    #[serde(default)]
    pub name: String,
    /// Unix seconds.
    #[serde(default)]
    pub create_time: i64,
    /// Bigger sorts first.
    #[serde(default)]
    pub order: u32,
    /// Only reported when filtering by id.
    #[serde(default, deserialize_with = "bool_or_int")]
    pub deleted: bool,
}

/// A tag group with its tags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagGroup {
    /// The group id.
    pub group_id: TagId,
    /// Group name.
    #[serde(default)]
    pub group_name: String,
    /// Unix seconds.
    #[serde(default)]
    pub create_time: i64,
    /// Bigger sorts first.
    #[serde(default)]
    pub order: u32,
    /// Only reported when filtering by id.
    #[serde(default, deserialize_with = "bool_or_int")]
    pub deleted: bool,
    /// The group's tags.
    #[serde(default)]
    pub tag: Vec<CorpTag>,
}

/// A tag to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewTag {
    /// ≤ 30 characters; duplicates in one group collapse to one.
    pub name: String,
    /// Bigger sorts first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<u32>,
}

/// `externalcontact/add_corp_tag`: tags into an existing group (`group_id`) or a group to
/// create or extend by name (`group_name`, `order`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddCorpTagRequest {
    /// Add into this existing group (then `group_name`/`order` are ignored by WeCom).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_id: Option<TagId>,
    /// Create this group (or add to it when it exists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_name: Option<String>,
    /// Order of a new group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<u32>,
    /// At least one tag: WeCom has no empty groups.
    pub tag: Vec<NewTag>,
}

#[derive(Deserialize)]
struct TagGroupList {
    #[serde(default)]
    tag_group: Vec<TagGroup>,
}

#[derive(Deserialize)]
struct OneTagGroup {
    tag_group: TagGroup,
}

#[derive(Serialize)]
struct TagFilter<'a> {
    #[serde(skip_serializing_if = "<[TagId]>::is_empty")]
    tag_id: &'a [TagId],
    #[serde(skip_serializing_if = "<[TagId]>::is_empty")]
    group_id: &'a [TagId],
}

#[derive(Serialize)]
struct EditTag<'a> {
    id: &'a TagId,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    order: Option<u32>,
}

#[derive(Serialize)]
struct MarkTag<'a> {
    userid: &'a UserId,
    external_userid: &'a ExternalUserId,
    #[serde(skip_serializing_if = "<[TagId]>::is_empty")]
    add_tag: &'a [TagId],
    #[serde(skip_serializing_if = "<[TagId]>::is_empty")]
    remove_tag: &'a [TagId],
}

impl WecomClient {
    /// `POST externalcontact/get_corp_tag_list`: all groups, or only the given tags / groups
    /// (WeCom ignores `tag_ids` when `group_ids` is non-empty).
    pub async fn get_corp_tag_list(
        &self,
        app: &AppCredentials,
        tag_ids: &[TagId],
        group_ids: &[TagId],
    ) -> Result<Vec<TagGroup>, ApiError> {
        let body = TagFilter {
            tag_id: tag_ids,
            group_id: group_ids,
        };
        let list: TagGroupList = self
            .call(
                app,
                Request::post("externalcontact/get_corp_tag_list", &body)?,
            )
            .await?;
        Ok(list.tag_group)
    }

    /// `POST externalcontact/add_corp_tag`: the group with the new tags and their ids. Not
    /// retried after a timeout (the tags may exist by then; list them to find out).
    pub async fn add_corp_tag(
        &self,
        app: &AppCredentials,
        request: &AddCorpTagRequest,
    ) -> Result<TagGroup, ApiError> {
        const API: &str = "externalcontact/add_corp_tag";
        if request.tag.is_empty() {
            return Err(invalid(
                API,
                "at least one tag: WeCom cannot create empty groups",
            ));
        }
        if request.group_id.is_none() && request.group_name.as_deref().is_none_or(str::is_empty) {
            return Err(invalid(API, "group_id or group_name is required"));
        }
        check_chars(
            API,
            "group_name",
            request.group_name.as_deref(),
            MAX_TAG_NAME_CHARS,
        )?;
        for tag in &request.tag {
            if tag.name.is_empty() {
                return Err(invalid(API, "tag names cannot be empty"));
            }
            check_chars(API, "tag name", Some(&tag.name), MAX_TAG_NAME_CHARS)?;
        }
        let group: OneTagGroup = self.call(app, Request::post(API, request)?).await?;
        Ok(group.tag_group)
    }

    /// `POST externalcontact/edit_corp_tag`: rename and/or reorder one tag or group.
    pub async fn edit_corp_tag(
        &self,
        app: &AppCredentials,
        id: &TagId,
        name: Option<&str>,
        order: Option<u32>,
    ) -> Result<(), ApiError> {
        const API: &str = "externalcontact/edit_corp_tag";
        if name.is_none() && order.is_none() {
            return Err(invalid(API, "nothing to change"));
        }
        if name.is_some_and(str::is_empty) {
            return Err(invalid(API, "name cannot be empty"));
        }
        check_chars(API, "name", name, MAX_TAG_NAME_CHARS)?;
        let body = EditTag { id, name, order };
        let _: Empty = self.call(app, Request::post(API, &body)?).await?;
        Ok(())
    }

    /// `POST externalcontact/del_corp_tag`: delete tags and/or whole groups (not both empty).
    pub async fn del_corp_tag(
        &self,
        app: &AppCredentials,
        tag_ids: &[TagId],
        group_ids: &[TagId],
    ) -> Result<(), ApiError> {
        const API: &str = "externalcontact/del_corp_tag";
        if tag_ids.is_empty() && group_ids.is_empty() {
            return Err(invalid(API, "tag_id and group_id cannot both be empty"));
        }
        let body = TagFilter {
            tag_id: tag_ids,
            group_id: group_ids,
        };
        let _: Empty = self.call(app, Request::post(API, &body)?).await?;
        Ok(())
    }

    /// `POST externalcontact/mark_tag`: add and remove tags on the (member, customer) relation.
    pub async fn mark_tag(
        &self,
        app: &AppCredentials,
        userid: &UserId,
        external_userid: &ExternalUserId,
        add: &[TagId],
        remove: &[TagId],
    ) -> Result<(), ApiError> {
        const API: &str = "externalcontact/mark_tag";
        if add.is_empty() && remove.is_empty() {
            return Err(invalid(API, "add_tag and remove_tag cannot both be empty"));
        }
        let body = MarkTag {
            userid,
            external_userid,
            add_tag: add,
            remove_tag: remove,
        };
        let _: Empty = self.call(app, Request::post(API, &body)?).await?;
        Ok(())
    }
}
