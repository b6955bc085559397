//! The API handlers, one function per endpoint, each a synchronous change of [`Inner`] under the
//! state's lock. [`route`] maps a path to its handler.

pub(crate) mod chats;
pub(crate) mod contacts;
pub(crate) mod directory;
pub(crate) mod tags;
pub(crate) mod transfers;

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::EmulatorConfig;
use super::callbacks::Outgoing;
use super::state::Inner;

/// What a handler knows about the call.
pub(crate) struct Ctx<'a> {
    pub(crate) corp_id: &'a str,
    /// Index of the calling app (the token's secret) in the corp's apps.
    pub(crate) app: usize,
    /// The calling app's agentid, if it has one.
    pub(crate) agent_id: Option<i64>,
    pub(crate) query: &'a HashMap<String, String>,
    /// The JSON body (an empty object for GET APIs).
    pub(crate) body: &'a Value,
    /// Emulator clock.
    pub(crate) now: i64,
    pub(crate) config: &'a EmulatorConfig,
}

impl Ctx<'_> {
    /// The body as `T`; a type mismatch is 40058.
    pub(crate) fn body<T: DeserializeOwned>(&self) -> Result<T, ApiErr> {
        T::deserialize(self.body)
            .map_err(|e| ApiErr::with(40058, format!("invalid Request Parameter: {e}")))
    }

    /// A non-empty query parameter.
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.query
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// An API error: WeCom's errcode and, optionally, a more precise errmsg text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiErr {
    pub(crate) code: i64,
    pub(crate) detail: Option<String>,
}

impl ApiErr {
    pub(crate) fn new(code: i64) -> Self {
        Self { code, detail: None }
    }

    pub(crate) fn with(code: i64, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: Some(detail.into()),
        }
    }
}

/// A handler: success is the response object without `errcode`/`errmsg`.
pub(crate) type Handler = fn(&mut Inner, &Ctx<'_>, &mut Vec<Outgoing>) -> Result<Value, ApiErr>;

/// How an API is called.
#[derive(Clone, Copy)]
pub(crate) struct Route {
    pub(crate) handler: Handler,
    /// POST with a JSON body (else GET with query parameters).
    pub(crate) post: bool,
    /// A write API: a call answered errcode 0 goes into the write log.
    pub(crate) write: bool,
}

/// The handler of an API path (relative to `/cgi-bin/`), `gettoken` excepted.
pub(crate) fn route(api: &str) -> Option<Route> {
    let get = |handler: Handler| {
        Some(Route {
            handler,
            post: false,
            write: false,
        })
    };
    let post = |handler: Handler| {
        Some(Route {
            handler,
            post: true,
            write: false,
        })
    };
    let write = |handler: Handler| {
        Some(Route {
            handler,
            post: true,
            write: true,
        })
    };
    match api {
        "externalcontact/get_follow_user_list" => get(contacts::follow_user_list),
        "externalcontact/list" => get(contacts::list),
        "externalcontact/get" => get(contacts::get),
        "externalcontact/batch/get_by_user" => post(contacts::batch_get_by_user),
        "externalcontact/mark_tag" => write(contacts::mark_tag),
        "externalcontact/remark" => write(contacts::remark),
        "externalcontact/get_corp_tag_list" => post(tags::list),
        "externalcontact/add_corp_tag" => write(tags::add),
        "externalcontact/edit_corp_tag" => write(tags::edit),
        "externalcontact/del_corp_tag" => write(tags::delete),
        "externalcontact/groupchat/list" => post(chats::list),
        "externalcontact/groupchat/get" => post(chats::get),
        "externalcontact/groupchat/transfer" => write(chats::transfer_resigned),
        "externalcontact/groupchat/onjob_transfer" => write(chats::transfer_onjob),
        "externalcontact/get_unassigned_list" => post(transfers::unassigned_list),
        "externalcontact/transfer_customer" => write(transfers::transfer_onjob),
        "externalcontact/resigned/transfer_customer" => write(transfers::transfer_resigned),
        "externalcontact/transfer_result" => post(transfers::result_onjob),
        "externalcontact/resigned/transfer_result" => post(transfers::result_resigned),
        "user/get" => get(directory::user_get),
        "department/list" => get(directory::department_list),
        "message/send" => write(directory::message_send),
        "msgaudit/get_permit_user_list" => post(directory::permit_user_list),
        "get_jsapi_ticket" => get(directory::jsapi_ticket),
        "ticket/get" => get(directory::agent_ticket),
        "auth/getuserinfo" => get(super::web::user_info),
        _ => None,
    }
}

/// An opaque, URL-safe paging cursor over string keys.
pub(crate) fn encode_cursor(parts: &[&str]) -> String {
    URL_SAFE_NO_PAD.encode(parts.join("\n"))
}

/// The keys of a cursor made by [`encode_cursor`] with `n` parts; anything else is 40058.
pub(crate) fn decode_cursor(cursor: &str, n: usize) -> Result<Vec<String>, ApiErr> {
    let invalid = || ApiErr::with(40058, "invalid cursor");
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let parts: Vec<String> = text.split('\n').map(str::to_owned).collect();
    if parts.len() == n {
        Ok(parts)
    } else {
        Err(invalid())
    }
}

/// Length in characters, as WeCom counts text limits.
pub(crate) fn chars(s: &str) -> usize {
    s.chars().count()
}

/// The usual check of a member id in a request: missing → 40058, unknown or departed → 40003.
pub(crate) fn active_member<'c>(
    corp: &'c super::model::Corp,
    userid: Option<&str>,
) -> Result<&'c super::model::Staff, ApiErr> {
    let userid = userid
        .filter(|u| !u.is_empty())
        .ok_or_else(|| ApiErr::with(40058, "missing userid"))?;
    corp.active_staff(userid).ok_or_else(|| ApiErr::new(40003))
}

/// The calling corp (it exists: the token was issued for it).
pub(crate) fn corp_of<'i>(
    inner: &'i mut Inner,
    ctx: &Ctx<'_>,
) -> Result<&'i mut super::model::Corp, ApiErr> {
    inner
        .corps
        .get_mut(ctx.corp_id)
        .ok_or_else(|| ApiErr::new(40013))
}

/// A JSON object from key/value pairs.
pub(crate) fn object<const N: usize>(pairs: [(&str, Value); N]) -> serde_json::Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}
