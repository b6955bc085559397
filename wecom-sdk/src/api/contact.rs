//! Customers (客户联系, §4.2): who has customer contact enabled, a member's customers, one
//! customer's detail with its followers, the batch sync API, and remarks.

use serde::{Deserialize, Serialize};

use super::client::{Request, WecomClient};
use super::config::AppCredentials;
use super::error::ApiError;
use super::wire::{Empty, check_chars, empty_as_none, invalid};
use crate::ids::{ExternalUserId, TagId, UserId};

/// Most staff ids per `batch/get_by_user` call, and the largest page.
pub const MAX_BATCH_USERS: usize = 100;
/// Pages `get_external_contact_all` follows before giving up (500 followers a page).
const MAX_DETAIL_PAGES: usize = 1000;

/// A customer as `externalcontact/get` and `batch/get_by_user` describe them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExternalContact {
    /// The customer's id.
    pub external_userid: ExternalUserId,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Job title (WeCom users only).
    #[serde(default)]
    pub position: String,
    /// Avatar URL.
    #[serde(default)]
    pub avatar: String,
    /// Short corp name (WeCom users only).
    #[serde(default)]
    pub corp_name: String,
    /// Full corp name (WeCom users only).
    #[serde(default)]
    pub corp_full_name: String,
    /// 1 WeChat user, 2 WeCom user.
    #[serde(default, rename = "type")]
    pub contact_type: i64,
    /// 0 unknown, 1 male, 2 female.
    #[serde(default)]
    pub gender: i64,
    /// Only when the corp bound a WeChat developer account.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub unionid: Option<String>,
    /// The customer's public profile, kept as WeCom sent it.
    #[serde(default)]
    pub external_profile: Option<serde_json::Value>,
}

/// A tag on one follow relation, as `externalcontact/get` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowUserTag {
    /// Group name.
    #[serde(default)]
    pub group_name: String,
    /// Tag name.
    #[serde(default)]
    pub tag_name: String,
    /// Absent for personal tags.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub tag_id: Option<TagId>,
    /// 1 corp tag, 2 personal tag, 3 strategy tag.
    #[serde(default, rename = "type")]
    pub tag_type: i64,
}

/// One member following the customer (`follow_user[]` of `externalcontact/get`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowUser {
    /// The member.
    pub userid: UserId,
    /// The member's remark for the customer.
    #[serde(default)]
    pub remark: String,
    /// The member's description.
    #[serde(default)]
    pub description: String,
    /// When the relation started (unix seconds).
    #[serde(default)]
    pub createtime: i64,
    /// Tags on this relation.
    #[serde(default)]
    pub tags: Vec<FollowUserTag>,
    /// Remarked company.
    #[serde(default)]
    pub remark_corp_name: String,
    /// Remarked phone numbers.
    #[serde(default)]
    pub remark_mobiles: Vec<String>,
    /// Who initiated: a member userid or the customer's external_userid.
    #[serde(default)]
    pub oper_userid: String,
    /// How the customer was added (§4.2 list; store as int).
    #[serde(default)]
    pub add_way: i64,
    /// The 联系我 `state`, our channel attribution key.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub state: Option<String>,
}

/// `externalcontact/get`: the customer and (one page of) their followers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExternalContactDetail {
    /// The customer.
    pub external_contact: ExternalContact,
    /// Followers inside the app's visibility (this page).
    #[serde(default)]
    pub follow_user: Vec<FollowUser>,
    /// More followers to fetch (`None` when done).
    #[serde(default, deserialize_with = "empty_as_none")]
    pub next_cursor: Option<String>,
}

/// The follow relation in a `batch/get_by_user` row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowInfo {
    /// The member.
    pub userid: UserId,
    /// The member's remark for the customer.
    #[serde(default)]
    pub remark: String,
    /// The member's description.
    #[serde(default)]
    pub description: String,
    /// When the relation started (unix seconds).
    #[serde(default)]
    pub createtime: i64,
    /// Corp and strategy tag ids (personal tags are omitted by WeCom).
    #[serde(default)]
    pub tag_id: Vec<TagId>,
    /// Remarked company.
    #[serde(default)]
    pub remark_corp_name: String,
    /// Remarked phone numbers.
    #[serde(default)]
    pub remark_mobiles: Vec<String>,
    /// Who initiated.
    #[serde(default)]
    pub oper_userid: String,
    /// How the customer was added.
    #[serde(default)]
    pub add_way: i64,
    /// The 联系我 `state`.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub state: Option<String>,
}

/// One (customer, follower) row of `batch/get_by_user`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchContact {
    /// The customer.
    pub external_contact: ExternalContact,
    /// The relation to one of the requested members.
    pub follow_info: FollowInfo,
}

/// One page of `batch/get_by_user`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchByUserPage {
    /// Rows of this page.
    #[serde(default)]
    pub external_contact_list: Vec<BatchContact>,
    /// Cursor of the next page; empty when done.
    #[serde(default)]
    pub next_cursor: String,
}

/// `externalcontact/remark`: what to change on one relation (`None` leaves a field alone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemarkRequest {
    /// The member whose relation this is.
    pub userid: UserId,
    /// The customer.
    pub external_userid: ExternalUserId,
    /// ≤ 20 characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remark: Option<String>,
    /// ≤ 150 characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// ≤ 20 characters (only effective for WeChat-user customers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remark_company: Option<String>,
    /// Replaces the list; `[""]` clears it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remark_mobiles: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct FollowUserList {
    #[serde(default)]
    follow_user: Vec<UserId>,
}

#[derive(Deserialize)]
struct CustomerList {
    #[serde(default)]
    external_userid: Vec<ExternalUserId>,
}

#[derive(Serialize)]
struct BatchByUserBody<'a> {
    userid_list: &'a [UserId],
    cursor: &'a str,
    limit: u32,
}

impl WecomClient {
    /// `GET externalcontact/get_follow_user_list`: members with customer contact enabled.
    pub async fn get_follow_user_list(
        &self,
        app: &AppCredentials,
    ) -> Result<Vec<UserId>, ApiError> {
        let list: FollowUserList = self
            .call(
                app,
                Request::get("externalcontact/get_follow_user_list", &[]),
            )
            .await?;
        Ok(list.follow_user)
    }

    /// `GET externalcontact/list?userid=…`: all customers of one member (84061 when the member
    /// has none surfaces as that WeCom error).
    pub async fn list_external_contacts(
        &self,
        app: &AppCredentials,
        userid: &UserId,
    ) -> Result<Vec<ExternalUserId>, ApiError> {
        let query = [("userid", userid.as_str())];
        let list: CustomerList = self
            .call(app, Request::get("externalcontact/list", &query))
            .await?;
        Ok(list.external_userid)
    }

    /// `GET externalcontact/get`: one customer and one page of their followers.
    pub async fn get_external_contact(
        &self,
        app: &AppCredentials,
        external_userid: &ExternalUserId,
        cursor: Option<&str>,
    ) -> Result<ExternalContactDetail, ApiError> {
        let mut query = vec![("external_userid", external_userid.as_str())];
        if let Some(cursor) = cursor.filter(|c| !c.is_empty()) {
            query.push(("cursor", cursor));
        }
        self.call(app, Request::get("externalcontact/get", &query))
            .await
    }

    /// `externalcontact/get`, following `next_cursor` and merging all pages' followers.
    pub async fn get_external_contact_all(
        &self,
        app: &AppCredentials,
        external_userid: &ExternalUserId,
    ) -> Result<ExternalContactDetail, ApiError> {
        let mut detail = self
            .get_external_contact(app, external_userid, None)
            .await?;
        let mut cursor = detail.next_cursor.take();
        let mut pages = 1;
        while let Some(current) = cursor {
            if pages >= MAX_DETAIL_PAGES {
                return Err(ApiError::Decode {
                    api: "externalcontact/get",
                    message: format!("more than {MAX_DETAIL_PAGES} follower pages"),
                });
            }
            let page = self
                .get_external_contact(app, external_userid, Some(&current))
                .await?;
            detail.follow_user.extend(page.follow_user);
            cursor = page.next_cursor;
            if cursor.as_deref() == Some(current.as_str()) {
                return Err(ApiError::Decode {
                    api: "externalcontact/get",
                    message: "next_cursor did not advance".to_owned(),
                });
            }
            pages += 1;
        }
        Ok(detail)
    }

    /// `POST externalcontact/batch/get_by_user`: one page of (customer, follower) rows for up to
    /// [`MAX_BATCH_USERS`] members; `limit` 1..=100. Start with `cursor = ""`.
    pub async fn batch_get_by_user(
        &self,
        app: &AppCredentials,
        userids: &[UserId],
        cursor: &str,
        limit: u32,
    ) -> Result<BatchByUserPage, ApiError> {
        const API: &str = "externalcontact/batch/get_by_user";
        if userids.is_empty() || userids.len() > MAX_BATCH_USERS {
            return Err(invalid(
                API,
                format!(
                    "userid_list must hold 1 to {MAX_BATCH_USERS} ids (got {})",
                    userids.len()
                ),
            ));
        }
        if limit == 0 || limit > 100 {
            return Err(invalid(
                API,
                format!("limit must be 1 to 100 (got {limit})"),
            ));
        }
        let body = BatchByUserBody {
            userid_list: userids,
            cursor,
            limit,
        };
        self.call(app, Request::post(API, &body)?).await
    }

    /// `POST externalcontact/remark`: set remark, description, company or phone numbers of one
    /// relation. At least one field; lengths as WeCom allows them.
    pub async fn remark(
        &self,
        app: &AppCredentials,
        request: &RemarkRequest,
    ) -> Result<(), ApiError> {
        const API: &str = "externalcontact/remark";
        if request.remark.is_none()
            && request.description.is_none()
            && request.remark_company.is_none()
            && request.remark_mobiles.is_none()
        {
            return Err(invalid(API, "nothing to change"));
        }
        check_chars(API, "remark", request.remark.as_deref(), 20)?;
        check_chars(API, "description", request.description.as_deref(), 150)?;
        check_chars(API, "remark_company", request.remark_company.as_deref(), 20)?;
        let _: Empty = self.call(app, Request::post(API, request)?).await?;
        Ok(())
    }
}
