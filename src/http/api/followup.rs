//! Follow-up notes (跟进记录), reminders and lifecycle stages: thin handlers over
//! [`crate::domain::followup`]. Everything on a customer is authorized by
//! [`crate::auth::Principal::check_customer`]; a note or reminder is loaded first (another corp's
//! is 404), then its customer is checked.

use std::sync::Arc;

use axum::extract::State;
use axum::http::Method;
use axum::routing::{get, patch, post, put};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use wecom_sdk::{CorpId, ExternalUserId, UserId};

use super::schema::{array, int, nullable, object, one_of, string};
use super::{
    ApiFailure, ApiResult, Auth, Body, Endpoint, PathParams, QueryParams, created, errors, invalid,
    ok,
};
use crate::auth::{Action, Principal, Role};
use crate::domain::customers;
use crate::domain::followup::{
    self, NewReminder, Note, NoteEdit, Reminder, ReminderChange, ReminderFilter,
};
use crate::http::AppState;
use crate::platform::db::now_ms;

/// Reminder states a list may ask for (`all`: any).
const STATES: [&str; 4] = ["open", "done", "cancelled", "all"];

fn note_schema() -> Value {
    object(
        &[
            ("id", int("跟进记录 id")),
            ("external_user_id", string("客户")),
            ("author", string("作者：成员 userid 或 apikey:ID")),
            ("body", string("内容，1–5000 字")),
            ("attachment_url", nullable(string("附件链接（http/https）"))),
            ("revision", int("版本号：未修改为 1，每次修改加 1")),
            ("created_at_ms", int("写入时间")),
            ("updated_at_ms", int("最后修改时间")),
            ("last_edited_by", nullable(string("最后修改人"))),
        ],
        &["id", "external_user_id", "author", "body", "revision"],
    )
}

fn reminder_schema() -> Value {
    object(
        &[
            ("id", int("提醒 id")),
            ("external_user_id", string("客户")),
            ("customer_name", nullable(string("客户名称"))),
            ("assignee", string("提醒谁（成员 userid）")),
            ("title", string("标题，1–200 字")),
            ("due_at_ms", int("到期时间")),
            (
                "state",
                one_of(&["open", "done", "cancelled"], "open | done | cancelled"),
            ),
            ("snoozes", int("推迟次数")),
            ("source", one_of(&["manual", "after_add"], "来源")),
            ("created_by", string("创建人（默认提醒为 system）")),
            ("done_at_ms", nullable(int("完成或取消时间"))),
            ("done_by", nullable(string("完成或取消的人"))),
            (
                "notified_at_ms",
                nullable(int("已作为应用消息交给 outbox 的时间")),
            ),
            ("outbox_id", nullable(int("那条应用消息的 outbox 条目"))),
        ],
        &[
            "id",
            "external_user_id",
            "assignee",
            "title",
            "due_at_ms",
            "state",
        ],
    )
}

fn stage_schema() -> Value {
    object(
        &[
            ("stage", nullable(string("当前阶段（从未设置为 null）"))),
            ("updated_by", nullable(string("设置人"))),
            ("updated_at_ms", nullable(int("设置时间"))),
            (
                "history",
                array(object(
                    &[
                        ("from_stage", nullable(string("原阶段"))),
                        ("to_stage", string("新阶段")),
                        ("actor", string("谁改的")),
                        ("at_ms", int("何时")),
                    ],
                    &["to_stage", "actor", "at_ms"],
                )),
            ),
        ],
        &["stage", "history"],
    )
}

/// This module's endpoints.
pub fn endpoints() -> Vec<Endpoint> {
    let note = note_schema();
    let reminder = reminder_schema();
    let stages = object(&[("stages", array(string("阶段名")))], &["stages"]);
    let state_query = one_of(&STATES, "状态，默认 open；all 为全部");
    vec![
        Endpoint::new(
            Method::GET,
            "/customers/{external_user_id}/notes",
            "客户的跟进记录（新的在前，所有跟进人可见）",
            get(list_notes),
        )
        .tag("followup")
        .requires(Action::ReadCustomers)
        .scope("sales: 自己跟进的客户")
        .query("before_id", int("分页：只要 id 小于它的"), "分页游标")
        .query("limit", int("1–200，默认 50"), "条数")
        .response(
            200,
            object(
                &[
                    ("notes", array(note.clone())),
                    ("next_before_id", nullable(int("下一页的 before_id"))),
                ],
                &["notes"],
            ),
        ),
        Endpoint::new(
            Method::POST,
            "/customers/{external_user_id}/notes",
            "写跟进记录",
            post(create_note),
        )
        .tag("followup")
        .requires(Action::EditCustomers)
        .scope("sales: 自己跟进的客户")
        .request(object(
            &[
                ("body", string("内容，1–5000 字")),
                (
                    "attachment_url",
                    nullable(string("附件链接，http/https，≤ 2000")),
                ),
            ],
            &["body"],
        ))
        .response(201, note.clone()),
        Endpoint::new(
            Method::PATCH,
            "/notes/{id}",
            "修改跟进记录（保留历史版本）",
            patch(edit_note),
        )
        .tag("followup")
        .requires(Action::EditCustomers)
        .scope("作者本人或 admin；sales 须仍跟进该客户")
        .request(object(
            &[
                ("body", string("新内容")),
                (
                    "attachment_url",
                    nullable(string("新附件链接；null 为去掉附件")),
                ),
            ],
            &[],
        ))
        .response(200, note.clone()),
        Endpoint::new(
            Method::GET,
            "/notes/{id}/revisions",
            "跟进记录的历史版本（新的在前）",
            get(note_revisions),
        )
        .tag("followup")
        .requires(Action::ReadCustomers)
        .scope("sales: 自己跟进的客户")
        .response(
            200,
            object(
                &[
                    ("note", note),
                    (
                        "revisions",
                        array(object(
                            &[
                                ("revision", int("这一版的版本号")),
                                ("body", string("这一版的内容")),
                                ("attachment_url", nullable(string("这一版的附件链接"))),
                                ("edited_by", string("谁把这一版改掉的")),
                                ("edited_at_ms", int("何时改掉的")),
                            ],
                            &["revision", "body", "edited_by", "edited_at_ms"],
                        )),
                    ),
                ],
                &["note", "revisions"],
            ),
        ),
        Endpoint::new(
            Method::GET,
            "/reminders",
            "跟进提醒列表（销售只看到自己的）",
            get(list_reminders),
        )
        .tag("followup")
        .requires(Action::ReadCustomers)
        .scope("sales: 只有自己的")
        .query("assignee", string("被提醒的成员"), "成员 userid")
        .query("state", state_query.clone(), "状态")
        .query("due_before_ms", int("只要在此之前到期的"), "到期时间上限")
        .query("limit", int("1–500，默认 100"), "条数")
        .response(
            200,
            object(&[("reminders", array(reminder.clone()))], &["reminders"]),
        ),
        Endpoint::new(
            Method::GET,
            "/customers/{external_user_id}/reminders",
            "客户的跟进提醒",
            get(customer_reminders),
        )
        .tag("followup")
        .requires(Action::ReadCustomers)
        .scope("sales: 自己跟进的客户")
        .query("state", state_query, "状态")
        .response(
            200,
            object(&[("reminders", array(reminder.clone()))], &["reminders"]),
        ),
        Endpoint::new(
            Method::POST,
            "/customers/{external_user_id}/reminders",
            "设跟进提醒（到期时以应用消息发给被提醒人）",
            post(create_reminder),
        )
        .tag("followup")
        .requires(Action::EditCustomers)
        .scope("sales: 自己跟进的客户，只能提醒自己")
        .request(object(
            &[
                (
                    "assignee",
                    string("被提醒的成员（须跟进该客户），默认调用者本人"),
                ),
                ("title", string("标题，1–200 字")),
                ("due_at_ms", int("到期时间（毫秒时间戳）")),
            ],
            &["title", "due_at_ms"],
        ))
        .response(201, reminder.clone()),
        Endpoint::new(
            Method::POST,
            "/reminders/{id}/done",
            "完成提醒",
            post(done_reminder),
        )
        .tag("followup")
        .requires(Action::EditCustomers)
        .scope("sales: 自己的提醒")
        .response(200, reminder.clone()),
        Endpoint::new(
            Method::POST,
            "/reminders/{id}/snooze",
            "推迟提醒（到时再提醒一次）",
            post(snooze_reminder),
        )
        .tag("followup")
        .requires(Action::EditCustomers)
        .scope("sales: 自己的提醒")
        .request(object(
            &[("until_ms", int("推迟到（须在将来）"))],
            &["until_ms"],
        ))
        .response(200, reminder.clone()),
        Endpoint::new(
            Method::POST,
            "/reminders/{id}/cancel",
            "取消提醒",
            post(cancel_reminder),
        )
        .tag("followup")
        .requires(Action::EditCustomers)
        .scope("sales: 自己的提醒")
        .response(200, reminder),
        Endpoint::new(
            Method::GET,
            "/stages",
            "本企业的客户生命周期阶段",
            get(list_stages),
        )
        .tag("followup")
        .requires(Action::ReadCustomers)
        .response(200, stages.clone()),
        Endpoint::new(
            Method::PUT,
            "/stages",
            "设置生命周期阶段列表",
            put(set_stages),
        )
        .tag("followup")
        .requires(Action::ManageSettings)
        .request(stages.clone())
        .response(200, stages),
        Endpoint::new(
            Method::GET,
            "/customers/{external_user_id}/stage",
            "客户的生命周期阶段及变更历史",
            get(customer_stage),
        )
        .tag("followup")
        .requires(Action::ReadCustomers)
        .scope("sales: 自己跟进的客户")
        .response(200, stage_schema()),
        Endpoint::new(
            Method::PUT,
            "/customers/{external_user_id}/stage",
            "设置客户的生命周期阶段",
            put(set_customer_stage),
        )
        .tag("followup")
        .requires(Action::EditCustomers)
        .scope("sales: 自己跟进的客户")
        .request(object(&[("stage", string("本企业的阶段之一"))], &["stage"]))
        .response(200, stage_schema()),
    ]
}

/// 404 unless we know the customer (a write on an id nobody has heard of).
async fn known_customer(
    state: &AppState,
    corp: &CorpId,
    ext: &ExternalUserId,
) -> Result<(), ApiFailure> {
    match customers::get_customer(&state.db, corp, ext).await? {
        Some(_) => Ok(()),
        None => Err(ApiFailure::NotFound("客户")),
    }
}

/// The `state` query: default `open`, `all` for any.
fn state_filter(state: Option<&str>) -> Result<Option<String>, ApiFailure> {
    match state.unwrap_or("open") {
        "all" => Ok(None),
        s @ ("open" | "done" | "cancelled") => Ok(Some(s.to_owned())),
        _ => Err(invalid(
            "state",
            "须为 open、done、cancelled 或 all / unknown state",
        )),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NotesQuery {
    before_id: Option<i64>,
    limit: Option<i64>,
}

async fn list_notes(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    PathParams(ext): PathParams<ExternalUserId>,
    QueryParams(q): QueryParams<NotesQuery>,
) -> ApiResult {
    who.check_customer(&state.db, Action::ReadCustomers, &ext)
        .await?;
    let limit = q.limit.unwrap_or(50).clamp(1, 200);
    let notes = followup::list_notes(&state.db, &who.corp_id, &ext, q.before_id, limit).await?;
    let next = (i64::try_from(notes.len()).unwrap_or(0) == limit)
        .then(|| notes.last().map(|n| n.id))
        .flatten();
    ok(json!({"notes": notes, "next_before_id": next}))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewNoteBody {
    body: String,
    attachment_url: Option<String>,
}

async fn create_note(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    PathParams(ext): PathParams<ExternalUserId>,
    Body(body): Body<NewNoteBody>,
) -> ApiResult {
    who.check_customer(&state.db, Action::EditCustomers, &ext)
        .await?;
    known_customer(&state, &who.corp_id, &ext).await?;
    let note = followup::create_note(
        &state.db,
        &who.corp_id,
        &ext,
        &who.actor(),
        &body.body,
        body.attachment_url.as_deref(),
        now_ms(),
    )
    .await
    .map_err(|e| errors::followup(e, "跟进记录"))?;
    created(note)
}

/// Tells a field given as `null` (`Some(None)`) from one left out (`None`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoteEditBody {
    body: Option<String>,
    #[serde(default, deserialize_with = "present")]
    attachment_url: Option<Option<String>>,
}

/// The note of the caller's corp, after the caller may `action` its customer.
async fn load_note(
    state: &AppState,
    who: &Principal,
    id: i64,
    action: Action,
) -> Result<Note, ApiFailure> {
    let note = followup::get_note(&state.db, who.corp_id.as_str(), id)
        .await?
        .ok_or(ApiFailure::NotFound("跟进记录"))?;
    who.check_customer(&state.db, action, &note.external_user_id)
        .await?;
    Ok(note)
}

async fn edit_note(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    PathParams(id): PathParams<i64>,
    Body(body): Body<NoteEditBody>,
) -> ApiResult {
    let note = load_note(&state, &who, id, Action::EditCustomers).await?;
    if who.role != Role::Admin && note.author != who.actor() {
        return Err(ApiFailure::Forbidden(
            "只有作者本人或管理员能修改跟进记录 / only the author or an admin may edit a note"
                .to_owned(),
        ));
    }
    let edit = NoteEdit {
        body: body.body,
        attachment_url: body.attachment_url,
    };
    let note = followup::edit_note(
        &state.db,
        who.corp_id.as_str(),
        id,
        &edit,
        &who.actor(),
        now_ms(),
    )
    .await
    .map_err(|e| errors::followup(e, "跟进记录"))?;
    ok(note)
}

async fn note_revisions(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    PathParams(id): PathParams<i64>,
) -> ApiResult {
    let note = load_note(&state, &who, id, Action::ReadCustomers).await?;
    let revisions = followup::note_revisions(&state.db, note.id).await?;
    ok(json!({"note": note, "revisions": revisions}))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemindersQuery {
    assignee: Option<String>,
    state: Option<String>,
    due_before_ms: Option<i64>,
    limit: Option<i64>,
}

async fn list_reminders(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    QueryParams(q): QueryParams<RemindersQuery>,
) -> ApiResult {
    let assignee = match (who.staff_scope(), q.assignee) {
        (Some(own), Some(asked)) if own != asked => {
            return Err(ApiFailure::Forbidden(
                "只能查看自己的提醒 / only your own reminders".to_owned(),
            ));
        }
        (Some(own), _) => Some(own.to_owned()),
        (None, asked) => asked,
    };
    let filter = ReminderFilter {
        assignee,
        external_user_id: None,
        state: state_filter(q.state.as_deref())?,
        due_before_ms: q.due_before_ms,
        // A salesperson's list drops customers they no longer follow.
        followed_by: who.staff_scope().map(str::to_owned),
        limit: q.limit.unwrap_or(100).clamp(1, 500),
    };
    let reminders = followup::list_reminders(&state.db, who.corp_id.as_str(), &filter).await?;
    ok(json!({"reminders": reminders}))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomerRemindersQuery {
    state: Option<String>,
}

async fn customer_reminders(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    PathParams(ext): PathParams<ExternalUserId>,
    QueryParams(q): QueryParams<CustomerRemindersQuery>,
) -> ApiResult {
    who.check_customer(&state.db, Action::ReadCustomers, &ext)
        .await?;
    let filter = ReminderFilter {
        external_user_id: Some(ext.to_string()),
        // A salesperson sees their own reminders of the customer, not colleagues'.
        assignee: who.staff_scope().map(str::to_owned),
        state: state_filter(q.state.as_deref())?,
        limit: 500,
        ..ReminderFilter::default()
    };
    let reminders = followup::list_reminders(&state.db, who.corp_id.as_str(), &filter).await?;
    ok(json!({"reminders": reminders}))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewReminderBody {
    assignee: Option<UserId>,
    title: String,
    due_at_ms: i64,
}

async fn create_reminder(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    PathParams(ext): PathParams<ExternalUserId>,
    Body(body): Body<NewReminderBody>,
) -> ApiResult {
    who.check_customer(&state.db, Action::EditCustomers, &ext)
        .await?;
    let Some(assignee) = body.assignee.or_else(|| who.staff_user_id.clone()) else {
        return Err(invalid(
            "assignee",
            "须指定提醒谁（成员 userid） / who to remind",
        ));
    };
    if who.staff_scope().is_some_and(|own| assignee != own) {
        return Err(ApiFailure::Forbidden(
            "销售只能给自己设提醒 / sales may only remind themselves".to_owned(),
        ));
    }
    known_customer(&state, &who.corp_id, &ext).await?;
    // Every reminder becomes an app message: at most so many new ones per corp and hour.
    if let Ok(Some(wait)) = state
        .coord
        .acquire(
            &format!("scrm:new_reminders:{}", who.corp_id),
            state.config.reminders.max_new_per_corp_per_hour,
            std::time::Duration::from_secs(3600),
        )
        .await
    {
        return Err(ApiFailure::RateLimited(wait));
    }
    let actor = who.actor();
    let new = NewReminder {
        corp_id: &who.corp_id,
        external_user_id: &ext,
        assignee: &assignee,
        title: &body.title,
        due_at_ms: body.due_at_ms,
        created_by: &actor,
    };
    let reminder = followup::create_reminder(&state.db, &new, now_ms())
        .await
        .map_err(|e| errors::followup(e, "提醒"))?;
    created(reminder)
}

/// The reminder of the caller's corp that the caller may change: its customer is theirs to edit,
/// and a sales principal's own.
async fn load_reminder(state: &AppState, who: &Principal, id: i64) -> Result<Reminder, ApiFailure> {
    let reminder = followup::get_reminder(&state.db, who.corp_id.as_str(), id)
        .await?
        .ok_or(ApiFailure::NotFound("提醒"))?;
    who.check_customer(&state.db, Action::EditCustomers, &reminder.external_user_id)
        .await?;
    if who
        .staff_scope()
        .is_some_and(|own| own != reminder.assignee)
    {
        return Err(ApiFailure::Forbidden(
            "只能处理自己的提醒 / only your own reminders".to_owned(),
        ));
    }
    Ok(reminder)
}

async fn change(state: &AppState, who: &Principal, id: i64, change: ReminderChange) -> ApiResult {
    load_reminder(state, who, id).await?;
    let reminder = followup::change_reminder(
        &state.db,
        who.corp_id.as_str(),
        id,
        change,
        &who.actor(),
        now_ms(),
    )
    .await
    .map_err(|e| errors::followup(e, "提醒"))?;
    ok(reminder)
}

async fn done_reminder(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    PathParams(id): PathParams<i64>,
) -> ApiResult {
    change(&state, &who, id, ReminderChange::Done).await
}

async fn cancel_reminder(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    PathParams(id): PathParams<i64>,
) -> ApiResult {
    change(&state, &who, id, ReminderChange::Cancel).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnoozeBody {
    until_ms: i64,
}

async fn snooze_reminder(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    PathParams(id): PathParams<i64>,
    Body(body): Body<SnoozeBody>,
) -> ApiResult {
    let snooze = ReminderChange::Snooze {
        until_ms: body.until_ms,
    };
    change(&state, &who, id, snooze).await
}

async fn list_stages(State(state): State<Arc<AppState>>, Auth(who): Auth) -> ApiResult {
    let stages = followup::stages(&state.db, who.corp_id.as_str()).await?;
    ok(json!({"stages": stages}))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StagesBody {
    stages: Vec<String>,
}

async fn set_stages(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    Body(body): Body<StagesBody>,
) -> ApiResult {
    let stages = followup::set_stages(
        &state.db,
        who.corp_id.as_str(),
        &body.stages,
        &who.actor(),
        now_ms(),
    )
    .await
    .map_err(|e| errors::followup(e, "阶段"))?;
    ok(json!({"stages": stages}))
}

async fn customer_stage(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    PathParams(ext): PathParams<ExternalUserId>,
) -> ApiResult {
    who.check_customer(&state.db, Action::ReadCustomers, &ext)
        .await?;
    let record = followup::customer_stage_record(&state.db, &who.corp_id, &ext).await?;
    ok(record)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StageBody {
    stage: String,
}

async fn set_customer_stage(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    PathParams(ext): PathParams<ExternalUserId>,
    Body(body): Body<StageBody>,
) -> ApiResult {
    who.check_customer(&state.db, Action::EditCustomers, &ext)
        .await?;
    known_customer(&state, &who.corp_id, &ext).await?;
    followup::set_customer_stage(
        &state.db,
        &who.corp_id,
        &ext,
        &body.stage,
        &who.actor(),
        now_ms(),
    )
    .await
    .map_err(|e| errors::followup(e, "客户"))?;
    let record = followup::customer_stage_record(&state.db, &who.corp_id, &ext).await?;
    ok(record)
}
