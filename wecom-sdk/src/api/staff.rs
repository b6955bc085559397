//! Staff and the contacts directory (§4.4, `department/list`), and the members covered by the
//! chat archive (§4.5).

use serde::{Deserialize, Serialize};

use super::client::{Request, WecomClient};
use super::config::AppCredentials;
use super::error::ApiError;
use super::wire::string_or_number;
use crate::ids::UserId;

/// `user/get`: one member. Self-built apps created after 2022-06-20 see many fields empty
/// without the member's consent; all of them default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaffProfile {
    /// The member.
    pub userid: UserId,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Department ids.
    #[serde(default)]
    pub department: Vec<i64>,
    /// Main department.
    #[serde(default)]
    pub main_department: Option<i64>,
    /// Job title.
    #[serde(default)]
    pub position: String,
    /// Mobile (often withheld).
    #[serde(default)]
    pub mobile: String,
    /// Email (often withheld).
    #[serde(default)]
    pub email: String,
    /// `"0"` unknown, `"1"` male, `"2"` female (a string here, unlike elsewhere).
    #[serde(default, deserialize_with = "string_or_number")]
    pub gender: String,
    /// 1 active, 2 disabled, 4 not activated, 5 left.
    #[serde(default)]
    pub status: i64,
    /// Direct leaders' userids.
    #[serde(default)]
    pub direct_leader: Vec<String>,
    /// Per department in `department`: 1 leader, 0 not.
    #[serde(default)]
    pub is_leader_in_dept: Vec<i64>,
    /// Avatar URL.
    #[serde(default)]
    pub avatar: String,
    /// Alias.
    #[serde(default)]
    pub alias: String,
}

/// One department of `department/list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Department {
    /// Department id (1 is the root).
    pub id: i64,
    /// Name (may be withheld for newer apps).
    #[serde(default)]
    pub name: String,
    /// Parent department (0 for the root).
    #[serde(default)]
    pub parentid: i64,
    /// Bigger sorts first.
    #[serde(default)]
    pub order: i64,
    /// Leaders' userids.
    #[serde(default)]
    pub department_leader: Vec<String>,
}

#[derive(Deserialize)]
struct DepartmentList {
    #[serde(default)]
    department: Vec<Department>,
}

#[derive(Deserialize)]
struct PermitUserList {
    #[serde(default)]
    ids: Vec<UserId>,
}

#[derive(Serialize)]
struct NoFilter {}

impl WecomClient {
    /// `GET user/get?userid=…` (60111 when the member does not exist).
    pub async fn user_get(
        &self,
        app: &AppCredentials,
        userid: &UserId,
    ) -> Result<StaffProfile, ApiError> {
        let query = [("userid", userid.as_str())];
        self.call(app, Request::get("user/get", &query)).await
    }

    /// `GET department/list[?id=ID]`: the department and all below it (everything visible when
    /// `None`).
    pub async fn department_list(
        &self,
        app: &AppCredentials,
        id: Option<i64>,
    ) -> Result<Vec<Department>, ApiError> {
        let id = id.map(|id| id.to_string());
        let query: Vec<(&str, &str)> = id.iter().map(|id| ("id", id.as_str())).collect();
        let list: DepartmentList = self
            .call(app, Request::get("department/list", &query))
            .await?;
        Ok(list.department)
    }

    /// `POST msgaudit/get_permit_user_list` (all editions): members whose chats are archived.
    /// Needs the 会话内容存档 secret.
    pub async fn msgaudit_get_permit_user_list(
        &self,
        app: &AppCredentials,
    ) -> Result<Vec<UserId>, ApiError> {
        let list: PermitUserList = self
            .call(
                app,
                Request::post("msgaudit/get_permit_user_list", &NoFilter {})?,
            )
            .await?;
        Ok(list.ids)
    }
}
