//! Customer group chats (客户群, §4.2): the paged list and one chat with its members.

use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::client::{Request, WecomClient};
use super::config::AppCredentials;
use super::error::ApiError;
use super::wire::{as_flag, empty_as_none, invalid};
use crate::ids::{ChatId, UserId};

/// `externalcontact/groupchat/list` request. Serializes to WeCom's JSON:
/// `{"status_filter":0,"owner_filter":{"userid_list":[…]},"cursor":"…","limit":100}`
/// (`owner_filter` omitted when `owner_userids` is empty: the app's whole visibility).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupChatListRequest {
    /// 0 all, 1 owner left (待继承), 2 inheriting, 3 inherited.
    pub status_filter: u8,
    /// Only chats owned by these members (≤ 100).
    pub owner_userids: Vec<UserId>,
    /// `""` for the first page.
    pub cursor: String,
    /// Page size, 1..=1000 (required by WeCom).
    pub limit: u32,
}

impl Serialize for GroupChatListRequest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct OwnerFilter<'a> {
            userid_list: &'a [UserId],
        }
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("status_filter", &self.status_filter)?;
        if !self.owner_userids.is_empty() {
            map.serialize_entry(
                "owner_filter",
                &OwnerFilter {
                    userid_list: &self.owner_userids,
                },
            )?;
        }
        if !self.cursor.is_empty() {
            map.serialize_entry("cursor", &self.cursor)?;
        }
        map.serialize_entry("limit", &self.limit)?;
        map.end()
    }
}

/// One chat in a `groupchat/list` page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupChatRef {
    /// The chat.
    pub chat_id: ChatId,
    /// 0 normal, 1 owner left, 2 inheriting, 3 inherited.
    #[serde(default)]
    pub status: i64,
}

/// One page of `groupchat/list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupChatListPage {
    /// Chats of this page.
    #[serde(default)]
    pub group_chat_list: Vec<GroupChatRef>,
    /// Cursor of the next page; empty when done.
    #[serde(default)]
    pub next_cursor: String,
}

/// A member who invited someone, or a chat admin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitor {
    /// The member.
    pub userid: UserId,
}

/// One member of a customer group chat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupChatMember {
    /// A staff userid (`member_type` 1) or a customer's external_userid (2).
    pub userid: String,
    /// 1 staff member, 2 external contact.
    #[serde(default, rename = "type")]
    pub member_type: i64,
    /// Unix seconds.
    #[serde(default)]
    pub join_time: i64,
    /// 1 direct invite, 2 invite link, 3 QR code (not the callback's numbering).
    #[serde(default)]
    pub join_scene: i64,
    /// Only when invited by a staff member.
    #[serde(default, deserialize_with = "optional_invitor")]
    pub invitor: Option<Invitor>,
    /// Nickname inside the chat.
    #[serde(default)]
    pub group_nickname: String,
    /// Name (only with `need_name`).
    #[serde(default)]
    pub name: String,
    /// External members whose corp bound a WeChat developer account.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub unionid: Option<String>,
    /// The 加入群聊 `state` the member joined with.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub state: Option<String>,
}

/// `externalcontact/groupchat/get`: one chat with members and admins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupChat {
    /// The chat.
    pub chat_id: ChatId,
    /// Chat name.
    #[serde(default)]
    pub name: String,
    /// The owner.
    pub owner: UserId,
    /// Unix seconds.
    #[serde(default)]
    pub create_time: i64,
    /// The chat notice.
    #[serde(default)]
    pub notice: String,
    /// Members.
    #[serde(default)]
    pub member_list: Vec<GroupChatMember>,
    /// Admins.
    #[serde(default)]
    pub admin_list: Vec<Invitor>,
    /// Pairs with the callback's `CurMemVer`/`LastMemVer`.
    #[serde(default)]
    pub member_version: String,
}

/// `invitor` absent, `null`, `{}` or with an empty userid all mean "not invited by staff".
fn optional_invitor<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Invitor>, D::Error> {
    #[derive(Deserialize)]
    struct Raw {
        #[serde(default)]
        userid: String,
    }
    match Option::<Raw>::deserialize(deserializer)? {
        Some(raw) if !raw.userid.is_empty() => UserId::try_from(raw.userid)
            .map(|userid| Some(Invitor { userid }))
            .map_err(serde::de::Error::custom),
        _ => Ok(None),
    }
}

#[derive(Deserialize)]
struct OneGroupChat {
    group_chat: GroupChat,
}

#[derive(Serialize)]
struct GroupChatGet<'a> {
    chat_id: &'a ChatId,
    #[serde(serialize_with = "as_flag")]
    need_name: bool,
}

impl WecomClient {
    /// `POST externalcontact/groupchat/list`: one page of chats (≤ 100 owners, limit 1..=1000).
    pub async fn groupchat_list(
        &self,
        app: &AppCredentials,
        request: &GroupChatListRequest,
    ) -> Result<GroupChatListPage, ApiError> {
        const API: &str = "externalcontact/groupchat/list";
        if request.owner_userids.len() > 100 {
            return Err(invalid(
                API,
                format!("at most 100 owners (got {})", request.owner_userids.len()),
            ));
        }
        if request.limit == 0 || request.limit > 1000 {
            return Err(invalid(
                API,
                format!("limit must be 1 to 1000 (got {})", request.limit),
            ));
        }
        if request.status_filter > 3 {
            return Err(invalid(API, "status_filter must be 0 to 3"));
        }
        self.call(app, Request::post(API, request)?).await
    }

    /// `POST externalcontact/groupchat/get`: one chat; `need_name` adds members' names.
    pub async fn groupchat_get(
        &self,
        app: &AppCredentials,
        chat_id: &ChatId,
        need_name: bool,
    ) -> Result<GroupChat, ApiError> {
        let body = GroupChatGet { chat_id, need_name };
        let chat: OneGroupChat = self
            .call(app, Request::post("externalcontact/groupchat/get", &body)?)
            .await?;
        Ok(chat.group_chat)
    }
}
