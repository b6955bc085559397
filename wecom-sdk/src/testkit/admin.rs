//! The admin API under `/testkit/`, for scripts and other processes (`scrm emulator`): JSON in,
//! JSON out, never faulted and never down. Errors are HTTP 400 `{"error": "…"}`.
//!
//! | route | body | answer |
//! |---|---|---|
//! | `POST /testkit/apps` | `{"corp_id","secret","agent_id"?}` | `{}` |
//! | `POST /testkit/seed` | `{"corp_id", …any [`SeedSpec`](super::SeedSpec) field}` | the [`SeedSummary`](super::SeedSummary) |
//! | `POST /testkit/callback-target` | `{"corp_id","kind":"contacts"\|"directory"\|"archive"\|"app:1000002","url","token","encoding_aes_key"}` | `{}` |
//! | `POST /testkit/customers` | `{"corp_id","userid","name"?,"external_userid"?,"state"?,"remark"?,"description"?,"tag_ids"?,"welcome_code"?}` | `{"external_userid"}` |
//! | `POST /testkit/faults` | `{"api"?,"kind":"busy"\|"errcode"\|"http"\|"garbage"\|"silence"\|"latency","errcode"?,"status"?,"delay_ms"?,"times"?}` | `{}` |
//! | `DELETE /testkit/faults` | | `{}` |
//! | `POST /testkit/down` | `{"down":true}` | `{}` |
//! | `POST /testkit/clock/advance` | `{"secs":N}` | `{"now"}` |
//! | `GET /testkit/clock` | | `{"now"}` |
//! | `GET /testkit/stats` | | the [`Stats`](super::Stats) |
//! | `GET /testkit/deliveries` | | `[{"corp_id","kind","plaintext","attempts","delivered","last_status","dropped","error"}]` |
//! | `GET /testkit/writes[?api=externalcontact/mark_tag]` | | the [write log](super::EmulatorState::writes), oldest first: `[{"api","corp_id","at_unix_ms","body"}]` |
//! | `POST /testkit/flush` | | `{"deliveries": n}` once every delivery finished |
//! | `POST /testkit/actions` | `{"action", …}`, one of the [actions](Action) a WeCom user takes | `{"ok":true, …}`; 400 when nothing could change (unknown member, relation, chat) |
//!
//! The actions, each with exactly the callbacks and API state WeCom gives:
//!
//! | `action` | fields | WeCom pushes |
//! |---|---|---|
//! | `staff_deletes_customer` | `corp_id`, `userid`, `external_userid` | `del_external_contact` |
//! | `customer_deletes_staff` | `corp_id`, `userid`, `external_userid` | `del_follow_user` |
//! | `edit_customer` | `corp_id`, `userid`, `external_userid`, `add_tags`?, `remove_tags`?, `remark`?, `description`? (the member in the WeCom client) | `edit_external_contact` |
//! | `staff_resigns` | `corp_id`, `userid` | `change_contact`/`delete_user` |
//! | `staff_moves` | `corp_id`, `userid`, `department` (ids, main first) | `change_contact`/`update_user` |
//! | `create_tag` | `corp_id`, `group`, `name` → `tag_id` | `change_external_tag`/`create` |
//! | `delete_tag` | `corp_id`, `tag_id` | `change_external_tag`/`delete` |
//! | `join_group` / `leave_group` | `corp_id`, `chat_id`, `members` | `change_external_chat`/`update` |
//! | `chat_message` | `corp_id`, `from`, `to` (ids), `room_id`? (group chat), `content` → `seq`, `msgid` (archived) | `msgaudit_notify` |
//! | `app_message` | `corp_id`, `agent_id`, `userid`, `content` (a member writes to an app) | the text message |

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::callbacks::{CallbackKind, CallbackTarget};
use super::faults::{Fault, FaultKind};
use super::model::NewCustomer;
use super::seed::SeedSpec;
use super::state::EmulatorState;

type Shared = State<Arc<EmulatorState>>;

/// Largest count `POST /testkit/seed` accepts for any field (a bigger corp is a typo).
const MAX_SEED: usize = 1_000_000;

pub(crate) fn routes() -> Router<Arc<EmulatorState>> {
    Router::new()
        .route("/apps", post(apps))
        .route("/seed", post(seed))
        .route("/callback-target", post(callback_target))
        .route("/customers", post(customers))
        .route("/faults", post(add_fault).delete(clear_faults))
        .route("/down", post(down))
        .route("/clock/advance", post(advance_clock))
        .route("/clock", get(clock))
        .route("/stats", get(stats))
        .route("/deliveries", get(deliveries))
        .route("/writes", get(writes))
        .route("/flush", post(flush))
        .route("/actions", post(action))
        .merge(super::web::admin_routes())
}

fn reply(value: &Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

fn bad_request(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "application/json")],
        json!({ "error": message }).to_string(),
    )
        .into_response()
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Box<Response>> {
    serde_json::from_slice(body)
        .map_err(|e| Box::new(bad_request(&format!("bad request body: {e}"))))
}

#[derive(Deserialize)]
struct AppRequest {
    corp_id: String,
    secret: String,
    #[serde(default)]
    agent_id: Option<i64>,
}

async fn apps(State(state): Shared, body: Bytes) -> Response {
    match parse::<AppRequest>(&body) {
        Ok(req) => {
            state.add_app(&req.corp_id, &req.secret, req.agent_id);
            reply(&json!({}))
        }
        Err(resp) => *resp,
    }
}

#[derive(Deserialize)]
struct SeedRequest {
    corp_id: String,
    #[serde(default)]
    staff: Option<usize>,
    #[serde(default)]
    departments: Option<usize>,
    #[serde(default)]
    customers: Option<usize>,
    #[serde(default)]
    follows_per_customer: Option<(usize, usize)>,
    #[serde(default)]
    tag_groups: Option<usize>,
    #[serde(default)]
    tags_per_group: Option<usize>,
    #[serde(default)]
    group_chats: Option<usize>,
    #[serde(default)]
    members_per_chat: Option<(usize, usize)>,
    #[serde(default)]
    rng_seed: Option<u64>,
}

async fn seed(State(state): Shared, body: Bytes) -> Response {
    let req = match parse::<SeedRequest>(&body) {
        Ok(req) => req,
        Err(resp) => return *resp,
    };
    let d = SeedSpec::default();
    let spec = SeedSpec {
        staff: req.staff.unwrap_or(d.staff),
        departments: req.departments.unwrap_or(d.departments),
        customers: req.customers.unwrap_or(d.customers),
        follows_per_customer: req.follows_per_customer.unwrap_or(d.follows_per_customer),
        tag_groups: req.tag_groups.unwrap_or(d.tag_groups),
        tags_per_group: req.tags_per_group.unwrap_or(d.tags_per_group),
        group_chats: req.group_chats.unwrap_or(d.group_chats),
        members_per_chat: req.members_per_chat.unwrap_or(d.members_per_chat),
        rng_seed: req.rng_seed.unwrap_or(d.rng_seed),
    };
    let sizes = [
        spec.staff,
        spec.departments,
        spec.customers,
        spec.follows_per_customer.1,
        spec.tag_groups,
        spec.tags_per_group,
        spec.group_chats,
        spec.members_per_chat.1,
    ];
    if sizes.iter().any(|n| *n > MAX_SEED) {
        return bad_request("seed sizes are limited to 1000000");
    }
    let summary = state.seed(&req.corp_id, &spec);
    reply(&json!({
        "staff": summary.staff,
        "customers": summary.customers,
        "chats": summary.chats,
        "tag_ids": summary.tag_ids,
        "departments": summary.departments,
        "relations": summary.relations,
    }))
}

#[derive(Deserialize)]
struct TargetRequest {
    corp_id: String,
    kind: String,
    #[serde(default)]
    agent_id: Option<i64>,
    url: String,
    token: String,
    encoding_aes_key: String,
}

async fn callback_target(State(state): Shared, body: Bytes) -> Response {
    let req = match parse::<TargetRequest>(&body) {
        Ok(req) => req,
        Err(resp) => return *resp,
    };
    let kind = match (req.kind.as_str(), req.agent_id) {
        ("app", Some(agent_id)) => Some(CallbackKind::App(agent_id)),
        (label, _) => CallbackKind::parse(label),
    };
    let Some(kind) = kind else {
        return bad_request("kind must be contacts, directory, archive or app:AGENTID");
    };
    if let Err(e) = crate::CallbackCrypto::new(&req.token, &req.encoding_aes_key, &req.corp_id) {
        return bad_request(&format!("unusable token or encoding_aes_key: {e}"));
    }
    state.set_callback_target(
        &req.corp_id,
        kind,
        CallbackTarget {
            url: req.url,
            token: req.token,
            encoding_aes_key: req.encoding_aes_key,
        },
    );
    reply(&json!({}))
}

#[derive(Deserialize)]
struct CustomerRequest {
    corp_id: String,
    userid: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    external_userid: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    remark: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    tag_ids: Vec<String>,
    #[serde(default)]
    welcome_code: Option<String>,
}

async fn customers(State(state): Shared, body: Bytes) -> Response {
    let req = match parse::<CustomerRequest>(&body) {
        Ok(req) => req,
        Err(resp) => return *resp,
    };
    let external_userid = state.add_customer(
        &req.corp_id,
        &req.userid,
        NewCustomer {
            name: req.name,
            external_userid: req.external_userid,
            state: req.state,
            remark: req.remark,
            description: req.description,
            tag_ids: req.tag_ids,
            welcome_code: req.welcome_code,
            ..NewCustomer::default()
        },
    );
    reply(&json!({ "external_userid": external_userid }))
}

#[derive(Deserialize)]
struct FaultRequest {
    #[serde(default)]
    api: Option<String>,
    kind: String,
    #[serde(default)]
    errcode: Option<i64>,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    delay_ms: Option<u64>,
    #[serde(default)]
    times: Option<u32>,
}

async fn add_fault(State(state): Shared, body: Bytes) -> Response {
    let req = match parse::<FaultRequest>(&body) {
        Ok(req) => req,
        Err(resp) => return *resp,
    };
    let kind = match (req.kind.as_str(), req.errcode, req.status, req.delay_ms) {
        ("busy", ..) => FaultKind::Busy,
        ("errcode", Some(code), ..) => FaultKind::Errcode(code),
        ("http", _, Some(status), _) => FaultKind::Http(status),
        ("garbage", ..) => FaultKind::Garbage,
        ("silence", ..) => FaultKind::Silence,
        ("latency", _, _, Some(ms)) => FaultKind::Latency(Duration::from_millis(ms)),
        ("answer_lost", ..) => FaultKind::AnswerLost,
        _ => {
            return bad_request(
                "kind must be busy, errcode (with errcode), http (with status), garbage, silence, latency (with delay_ms) or answer_lost",
            );
        }
    };
    state.inject_fault(Fault {
        api: req.api.filter(|a| !a.is_empty()),
        kind,
        times: req.times.unwrap_or(1),
    });
    reply(&json!({}))
}

async fn clear_faults(State(state): Shared) -> Response {
    state.clear_faults();
    reply(&json!({}))
}

#[derive(Deserialize)]
struct DownRequest {
    down: bool,
}

async fn down(State(state): Shared, body: Bytes) -> Response {
    match parse::<DownRequest>(&body) {
        Ok(req) => {
            state.set_down(req.down);
            reply(&json!({}))
        }
        Err(resp) => *resp,
    }
}

#[derive(Deserialize)]
struct AdvanceRequest {
    secs: u64,
}

async fn advance_clock(State(state): Shared, body: Bytes) -> Response {
    match parse::<AdvanceRequest>(&body) {
        Ok(req) => {
            state.advance_clock(Duration::from_secs(req.secs));
            reply(&json!({ "now": state.now() }))
        }
        Err(resp) => *resp,
    }
}

async fn clock(State(state): Shared) -> Response {
    reply(&json!({ "now": state.now() }))
}

async fn stats(State(state): Shared) -> Response {
    match serde_json::to_value(state.stats()) {
        Ok(v) => reply(&v),
        Err(e) => bad_request(&e.to_string()),
    }
}

async fn deliveries(State(state): Shared) -> Response {
    let list: Vec<Value> = state
        .deliveries()
        .into_iter()
        .map(|d| {
            json!({
                "corp_id": d.corp_id, "kind": d.kind.label(), "plaintext": d.plaintext,
                "attempts": d.attempts, "delivered": d.delivered, "last_status": d.last_status,
                "dropped": d.dropped, "error": d.error,
            })
        })
        .collect();
    reply(&Value::Array(list))
}

async fn writes(State(state): Shared, RawQuery(query): RawQuery) -> Response {
    let query = super::api::parse_query(query.as_deref().unwrap_or(""));
    let records = match query.get("api").filter(|a| !a.is_empty()) {
        Some(api) => state.writes_for(api),
        None => state.writes(),
    };
    match serde_json::to_value(records) {
        Ok(v) => reply(&v),
        Err(e) => bad_request(&e.to_string()),
    }
}

async fn flush(State(state): Shared) -> Response {
    state.flush_callbacks().await;
    reply(&json!({ "deliveries": state.deliveries().len() }))
}

/// What a WeCom user does, played through `POST /testkit/actions`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// 员工删除客户.
    StaffDeletesCustomer {
        /// The corp.
        corp_id: String,
        /// The member.
        userid: String,
        /// The customer.
        external_userid: String,
    },
    /// 客户删除员工.
    CustomerDeletesStaff {
        /// The corp.
        corp_id: String,
        /// The member.
        userid: String,
        /// The customer.
        external_userid: String,
    },
    /// The member edits the customer in the WeCom client (tags, remark, description).
    EditCustomer {
        /// The corp.
        corp_id: String,
        /// The member.
        userid: String,
        /// The customer.
        external_userid: String,
        /// Corp tags added.
        #[serde(default)]
        add_tags: Vec<String>,
        /// Corp tags removed.
        #[serde(default)]
        remove_tags: Vec<String>,
        /// A new remark.
        #[serde(default)]
        remark: Option<String>,
        /// A new description.
        #[serde(default)]
        description: Option<String>,
    },
    /// The member leaves the company (离职).
    StaffResigns {
        /// The corp.
        corp_id: String,
        /// The member.
        userid: String,
    },
    /// The member moves to other departments.
    StaffMoves {
        /// The corp.
        corp_id: String,
        /// The member.
        userid: String,
        /// Department ids, the main one first.
        department: Vec<i64>,
    },
    /// An admin creates a corp tag.
    CreateTag {
        /// The corp.
        corp_id: String,
        /// The tag group's name (created when missing).
        group: String,
        /// The tag's name.
        name: String,
    },
    /// An admin deletes a corp tag.
    DeleteTag {
        /// The corp.
        corp_id: String,
        /// The tag.
        tag_id: String,
    },
    /// Members or customers join a group chat.
    JoinGroup {
        /// The corp.
        corp_id: String,
        /// The chat.
        chat_id: String,
        /// Who joins.
        members: Vec<String>,
    },
    /// Members or customers leave a group chat.
    LeaveGroup {
        /// The corp.
        corp_id: String,
        /// The chat.
        chat_id: String,
        /// Who leaves.
        members: Vec<String>,
    },
    /// A text message in a 1:1 or group chat, archived (会话内容存档).
    ChatMessage {
        /// The corp.
        corp_id: String,
        /// The sender (userid or external_userid).
        from: String,
        /// The receivers.
        to: Vec<String>,
        /// The group chat, or empty for a 1:1 chat.
        #[serde(default)]
        room_id: String,
        /// The text.
        content: String,
    },
    /// A member writes to an app.
    AppMessage {
        /// The corp.
        corp_id: String,
        /// The app.
        agent_id: i64,
        /// The member.
        userid: String,
        /// The text.
        content: String,
    },
}

/// Largest text an action carries (WeCom's own text limit is 2,048 bytes).
const MAX_ACTION_TEXT: usize = 2_048;

async fn action(State(state): Shared, body: Bytes) -> Response {
    let action = match parse::<Action>(&body) {
        Ok(action) => action,
        Err(resp) => return *resp,
    };
    match action.apply(&state) {
        Ok(answer) => reply(&answer),
        Err(ActionRefused(why)) => bad_request(&why),
    }
}

/// Why an [`Action`] changed nothing (the admin API's 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionRefused(pub String);

impl std::fmt::Display for ActionRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ActionRefused {}

impl Action {
    /// Plays the action on `state`, pushing the callbacks WeCom would: `{"ok": true, …}` (with
    /// `tag_id`, or `seq` and `msgid`), or why nothing could change.
    pub fn apply(self, state: &EmulatorState) -> Result<Value, ActionRefused> {
        let nothing = |what: &str| Err(ActionRefused(format!("nothing changed: {what}")));
        let refuse = |why: &str| Err(ActionRefused(why.to_owned()));
        match self {
            Action::StaffDeletesCustomer {
                corp_id,
                userid,
                external_userid,
            } => {
                if !state.staff_deletes_customer(&corp_id, &userid, &external_userid) {
                    return nothing("no such relation");
                }
            }
            Action::CustomerDeletesStaff {
                corp_id,
                userid,
                external_userid,
            } => {
                if !state.customer_deletes_staff(&corp_id, &userid, &external_userid) {
                    return nothing("no such relation");
                }
            }
            Action::EditCustomer {
                corp_id,
                userid,
                external_userid,
                add_tags,
                remove_tags,
                remark,
                description,
            } => {
                let edit = super::model::RelationEdit {
                    remark,
                    description,
                    add_tags,
                    remove_tags,
                };
                if !state.edit_relation(&corp_id, &userid, &external_userid, edit) {
                    return nothing("no such relation");
                }
            }
            Action::StaffResigns { corp_id, userid } => {
                if !state.depart_staff(&corp_id, &userid) {
                    return nothing("no such active member");
                }
            }
            Action::StaffMoves {
                corp_id,
                userid,
                department,
            } => {
                if !state.move_staff(&corp_id, &userid, department) {
                    return nothing("no such active member, or no department");
                }
            }
            Action::CreateTag {
                corp_id,
                group,
                name,
            } => {
                if group.is_empty() || name.is_empty() {
                    return refuse("group and name must not be empty");
                }
                let tag_id = state.create_tag(&corp_id, &group, &name);
                return Ok(json!({"ok": true, "tag_id": tag_id}));
            }
            Action::DeleteTag { corp_id, tag_id } => {
                if !state.delete_tag(&corp_id, &tag_id) {
                    return nothing("no such tag");
                }
            }
            Action::JoinGroup {
                corp_id,
                chat_id,
                members,
            } => {
                if !state.add_chat_members(&corp_id, &chat_id, members) {
                    return nothing("no such chat, or nobody new");
                }
            }
            Action::LeaveGroup {
                corp_id,
                chat_id,
                members,
            } => {
                if !state.remove_chat_members(&corp_id, &chat_id, members) {
                    return nothing("no such chat, or nobody in it");
                }
            }
            Action::ChatMessage {
                corp_id,
                from,
                to,
                room_id,
                content,
            } => {
                if content.len() > MAX_ACTION_TEXT || to.is_empty() {
                    return refuse("to must name someone; content at most 2048 bytes");
                }
                let to: Vec<&str> = to.iter().map(String::as_str).collect();
                let (seq, msgid) = state.archive_text(&corp_id, &from, &to, &room_id, &content);
                return Ok(json!({"ok": true, "seq": seq, "msgid": msgid}));
            }
            Action::AppMessage {
                corp_id,
                agent_id,
                userid,
                content,
            } => {
                if content.len() > MAX_ACTION_TEXT {
                    return refuse("content at most 2048 bytes");
                }
                state.app_text_message(&corp_id, agent_id, &userid, &content);
            }
        }
        Ok(json!({"ok": true}))
    }
}
