//! Customers and their relations: the record, corp tags per relation, remark and description,
//! personal tags on the customer.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::extract::State;
use axum::http::Method;
use axum::response::Response;
use axum::routing::{get, patch, put};
use serde::Deserialize;
use serde_json::{Value, json};
use wecom_sdk::{ExternalUserId, UserId};

use super::schema::{accepted as accepted_schema, array, int, nullable, object, string};
use super::{
    ApiFailure, ApiResult, Auth, Body, Endpoint, PathParams, QueryParams, accepted, invalid, ok,
};
use crate::auth::{Action, Principal};
use crate::domain::customers as contacts;
use crate::domain::customers::record::{self, Author};
use crate::domain::tags;
use crate::http::AppState;
use crate::pipeline::outbox::{self, Intent};
use crate::platform::db::now_ms;

/// WeCom's limits on `remark` (characters).
/// Most tags one edit may name.
const MAX_TAGS_PER_EDIT: usize = 100;
/// The tag library is fetched from WeCom for unknown tag ids at most this often per corp.
const TAG_REFRESH: std::time::Duration = std::time::Duration::from_secs(30);

/// This module's endpoints.
pub fn endpoints() -> Vec<Endpoint> {
    let summary = object(
        &[
            ("external_user_id", string("客户 external_userid")),
            ("name", string("客户名称")),
            ("corp_name", string("客户企业")),
            ("followers", string("当前跟进成员，逗号分隔")),
        ],
        &["external_user_id", "name"],
    );
    let tag_ref = object(
        &[
            ("tag_id", string("标签 id")),
            ("name", nullable(string("标签名（库中已删除时为空）"))),
            ("group", nullable(string("标签组名"))),
            (
                "set_by",
                nullable(string("谁打的标签：成员 userid、apikey:ID 或 rule:ID")),
            ),
            ("rule_id", nullable(int("自动打标签规则"))),
        ],
        &["tag_id"],
    );
    let relation = object(
        &[
            ("user_id", string("跟进成员")),
            (
                "status",
                string("active | deleted_by_staff | deleted_by_customer | transferred | vanished"),
            ),
            ("remark", string("备注")),
            ("description", string("描述")),
            ("state", nullable(string("渠道（联系我 state）"))),
            ("added_at_ms", nullable(int("添加时间"))),
            ("tags", array(tag_ref)),
            (
                "pending",
                array(object(
                    &[
                        ("outbox_id", int("未送达的变更")),
                        ("kind", string("mark_tag | remark")),
                    ],
                    &["outbox_id", "kind"],
                )),
            ),
        ],
        &["user_id", "status", "tags", "pending"],
    );
    let record = object(
        &[
            (
                "customer",
                object(
                    &[
                        ("external_user_id", string("")),
                        ("name", string("")),
                        ("corp_name", string("")),
                    ],
                    &["external_user_id"],
                ),
            ),
            ("relations", array(relation)),
            (
                "personal_tags",
                array(object(
                    &[
                        ("tag_id", int("个人标签 id")),
                        ("name", string("名称")),
                        ("actor", string("谁打的")),
                        ("rule_id", nullable(int("规则"))),
                    ],
                    &["tag_id", "name"],
                )),
            ),
            ("stage", nullable(string("生命周期阶段"))),
        ],
        &["customer", "relations", "personal_tags"],
    );
    let tag_edit = object(
        &[
            ("add", array(string("要添加的企业标签 id"))),
            ("remove", array(string("要移除的企业标签 id"))),
        ],
        &[],
    );
    vec![
        Endpoint::new(
            Method::GET,
            "/customers",
            "客户列表（销售只看到自己跟进的客户）",
            get(list),
        )
        .tag("customers")
        .requires(Action::ReadCustomers)
        .scope("sales: 自己跟进的")
        .query("staff", string("只看该成员跟进的客户"), "成员 userid")
        .query("q", string("按名称、备注或 id 搜索"), "搜索")
        .query("phone", string("备注手机号包含这些数字"), "手机号")
        .query("tag", string("带有该企业标签（tag_id）"), "标签")
        .query("stage", string("处于该阶段；- 表示未设置阶段"), "阶段")
        .query(
            "channel",
            string("渠道（联系我 state），末尾 * 按前缀匹配"),
            "渠道",
        )
        .query(
            "added_from",
            string("添加日期起（YYYY-MM-DD，北京时间）"),
            "添加起",
        )
        .query("added_to", string("添加日期止（含当天）"), "添加止")
        .query(
            "ended_from",
            string("关系结束日期起：只列出在此期间被删除或转出的关系"),
            "结束起",
        )
        .query("ended_to", string("关系结束日期止（含当天）"), "结束止")
        .query(
            "after",
            string("分页：上一页最后一个 external_user_id"),
            "分页游标",
        )
        .query("limit", int("1–500，默认 50"), "条数")
        .response(
            200,
            object(
                &[
                    ("customers", array(summary)),
                    ("next", nullable(string("下一页游标"))),
                ],
                &["customers"],
            ),
        ),
        Endpoint::new(
            Method::GET,
            "/customers/{external_user_id}",
            "客户档案：资料、每个跟进关系的标签（含未送达的变更）、个人标签、阶段",
            get(show),
        )
        .tag("customers")
        .requires(Action::ReadCustomers)
        .scope("sales: 自己跟进的客户")
        .response(200, record),
        Endpoint::new(
            Method::PUT,
            "/customers/{external_user_id}/relations/{user_id}/tags",
            "给跟进关系打/去企业标签（经 outbox 调用 mark_tag）",
            put(edit_tags),
        )
        .tag("customers")
        .requires(Action::EditCustomers)
        .scope("sales: 只能改自己的跟进关系")
        .request(tag_edit)
        .response(
            202,
            accepted_schema(&[
                ("tag_ids", array(string("现在的企业标签"))),
                ("added", array(string(""))),
                ("removed", array(string(""))),
            ]),
        ),
        Endpoint::new(
            Method::PATCH,
            "/customers/{external_user_id}/relations/{user_id}",
            "修改备注、描述（经 outbox 调用 remark）",
            patch(edit_remark),
        )
        .tag("customers")
        .requires(Action::EditCustomers)
        .scope("sales: 只能改自己的跟进关系")
        .request(object(
            &[
                ("remark", string("备注，≤ 20 字")),
                ("description", string("描述，≤ 150 字")),
            ],
            &[],
        ))
        .response(202, accepted_schema(&[])),
        Endpoint::new(
            Method::PUT,
            "/customers/{external_user_id}/personal-tags",
            "给客户打/去个人标签（仅本系统，不同步企业微信）",
            put(edit_personal),
        )
        .tag("customers")
        .requires(Action::EditCustomers)
        .scope("sales: 自己跟进的客户")
        .request(object(
            &[
                ("add", array(int("个人标签 id"))),
                ("remove", array(int("个人标签 id"))),
            ],
            &[],
        ))
        .response(
            200,
            object(
                &[(
                    "personal_tags",
                    array(object(
                        &[("tag_id", int("")), ("name", string(""))],
                        &["tag_id"],
                    )),
                )],
                &["personal_tags"],
            ),
        ),
    ]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    staff: Option<String>,
    q: Option<String>,
    phone: Option<String>,
    tag: Option<String>,
    stage: Option<String>,
    channel: Option<String>,
    added_from: Option<String>,
    added_to: Option<String>,
    ended_from: Option<String>,
    ended_to: Option<String>,
    after: Option<String>,
    limit: Option<i64>,
}

/// A filter of the list that is not empty.
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

async fn list(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult {
    let staff = match (who.staff_scope(), q.staff.as_deref()) {
        (Some(own), Some(asked)) if own != asked => {
            return Err(ApiFailure::Forbidden(
                "只能查看自己跟进的客户 / only your own customers".to_owned(),
            ));
        }
        (Some(own), _) => Some(own),
        (None, asked) => asked,
    };
    let span = |from: &Option<String>, to: &Option<String>, name: &str| {
        crate::http::web::day_span(given(from), given(to)).map_err(|end| {
            invalid(
                format!("{name}_{end}"),
                "日期格式应为 YYYY-MM-DD / expected YYYY-MM-DD",
            )
        })
    };
    if let Some(phone) = given(&q.phone)
        && !phone.chars().any(|c| c.is_ascii_digit())
    {
        return Err(invalid("phone", "手机号应包含数字 / expected digits"));
    }
    let search = contacts::CustomerSearch {
        staff,
        team: None,
        query: given(&q.q),
        phone: given(&q.phone),
        tag_id: given(&q.tag),
        stage: given(&q.stage).map(|s| match s {
            "-" => contacts::StageFilter::Unset,
            named => contacts::StageFilter::Named(named),
        }),
        channel: given(&q.channel),
        added: span(&q.added_from, &q.added_to, "added")?,
        ended: span(&q.ended_from, &q.ended_to, "ended")?,
        after: q.after.as_deref(),
    };
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let rows = contacts::list_customers(&state.db, &who.corp_id, &search, limit).await?;
    let next = (i64::try_from(rows.len()).unwrap_or(0) == limit)
        .then(|| rows.last().map(|r| r.external_user_id.clone()))
        .flatten();
    ok(json!({"customers": rows, "next": next}))
}

async fn show(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    PathParams(ext): PathParams<ExternalUserId>,
) -> ApiResult {
    who.check_customer(&state.db, Action::ReadCustomers, &ext)
        .await?;
    let db = &state.db;
    let corp = &who.corp_id;
    let customer = contacts::get_customer(db, corp, &ext)
        .await?
        .ok_or(ApiFailure::NotFound("客户"))?;
    let library: HashMap<String, (String, String)> = {
        let groups = tags::library(db, corp.as_str()).await?;
        groups
            .into_iter()
            .flat_map(|g| {
                let group = g.name.clone();
                g.tags
                    .into_iter()
                    .map(move |t| (t.tag_id, (t.name, group.clone())))
            })
            .collect()
    };
    let pending = outbox::pending_for_customer(db, corp, &ext).await?;
    let mut relations = Vec::new();
    // A salesperson sees their own relation only, not colleagues' remarks, descriptions, tags.
    let own = who.staff_scope();
    for r in contacts::relations_of_customer(db, corp, &ext)
        .await?
        .into_iter()
        .filter(|r| own.is_none_or(|staff| r.user_id == staff))
    {
        let set_by: HashMap<String, record::TagAssignment> =
            record::tag_assignments(db, contacts::RelationKey::new(corp, &r.user_id, &ext))
                .await?
                .into_iter()
                .map(|a| (a.tag_id.clone(), a))
                .collect();
        let tags: Vec<Value> = r
            .tags()
            .into_iter()
            .filter(|t| library.contains_key(t) || !set_by.contains_key(t))
            .map(|t| {
                let known = library.get(&t);
                let who = set_by.get(&t);
                json!({
                    "tag_id": t,
                    "name": known.map(|k| &k.0),
                    "group": known.map(|k| &k.1),
                    "set_by": who.map(|a| &a.actor),
                    "rule_id": who.and_then(|a| a.rule_id),
                })
            })
            .collect();
        let mine: Vec<Value> = pending
            .iter()
            .filter(|(_, intent)| match intent {
                Intent::MarkTag { user_id, .. } | Intent::Remark { user_id, .. } => {
                    r.user_id == *user_id
                }
                _ => false,
            })
            .map(|(id, intent)| json!({"outbox_id": id, "kind": intent.kind()}))
            .collect();
        relations.push(json!({
            "user_id": r.user_id,
            "status": r.status,
            "remark": r.remark,
            "description": r.description,
            "state": r.state,
            "add_way": r.add_way,
            "added_at_ms": r.added_at_ms,
            "ended_at_ms": r.ended_at_ms,
            "tags": tags,
            "pending": mine,
        }));
    }
    let personal = record::customer_personal_tags(db, corp, &ext).await?;
    let stage = crate::domain::followup::customer_stage(db, corp, &ext).await?;
    ok(json!({
        "customer": customer,
        "relations": relations,
        "personal_tags": personal,
        "stage": stage,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TagEditBody {
    #[serde(default)]
    add: Vec<String>,
    #[serde(default)]
    remove: Vec<String>,
}

/// Checks that every id names a live corp tag; one we do not know yet makes us fetch the library
/// from WeCom once before refusing it.
pub(super) async fn check_tags(
    state: &AppState,
    corp: &str,
    fields: &[(&str, &[String])],
) -> Result<(), ApiFailure> {
    let live = |db| async move {
        Ok::<BTreeSet<String>, ApiFailure>(
            tags::live_tags(db, corp)
                .await?
                .into_iter()
                .map(|t| t.tag_id)
                .collect(),
        )
    };
    let unknown = |live: &BTreeSet<String>| {
        fields.iter().find_map(|(field, ids)| {
            ids.iter()
                .position(|t| !live.contains(t))
                .map(|i| (format!("{field}[{i}]"), ids[i].clone()))
        })
    };
    let mut known = live(&state.db).await?;
    if unknown(&known).is_none() {
        return Ok(());
    }
    // A tag created in WeCom a moment ago: fetch the library, then look again — at most once per
    // TAG_REFRESH per corp, whoever asks (a client looping on unknown ids cannot spend the corp's
    // WeCom quota).
    let may_refresh = crate::http::web::cooldown(
        state.coord.as_ref(),
        &format!("scrm:tag_refresh:{corp}"),
        TAG_REFRESH,
    )
    .await
    .is_none();
    if may_refresh && let Ok(creds) = state.wecom.credentials(corp, None) {
        match state.wecom.client.get_corp_tag_list(&creds, &[], &[]).await {
            Ok(groups) => {
                crate::domain::customers::record::replace_tag_library(
                    &state.db,
                    corp,
                    &crate::app::wecom_records::tag_library(&groups),
                    now_ms(),
                )
                .await?;
                known = live(&state.db).await?;
            }
            Err(e) => tracing::warn!(error = %e, "cannot refresh the tag library"),
        }
    }
    match unknown(&known) {
        None => Ok(()),
        Some((field, id)) => Err(invalid(
            field,
            format!("企业标签 {id} 不存在（企业微信中也没有） / unknown corp tag"),
        )),
    }
}

async fn authorize_relation(
    state: &AppState,
    who: &Principal,
    ext: &ExternalUserId,
    user_id: &UserId,
) -> Result<(), ApiFailure> {
    who.check_relation(Action::EditCustomers, user_id)?;
    who.check_customer(&state.db, Action::EditCustomers, ext)
        .await?;
    Ok(())
}

/// The relation (`user_id`, `ext`) of the principal's corp.
fn relation<'a>(
    who: &'a Principal,
    user_id: &'a UserId,
    ext: &'a ExternalUserId,
) -> contacts::RelationKey<'a> {
    contacts::RelationKey::new(&who.corp_id, user_id, ext)
}

async fn edit_tags(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    PathParams((ext, user_id)): PathParams<(ExternalUserId, UserId)>,
    Body(body): Body<TagEditBody>,
) -> ApiResult<Response> {
    authorize_relation(&state, &who, &ext, &user_id).await?;
    if body.add.is_empty() && body.remove.is_empty() {
        return Err(invalid(
            "add",
            "add 和 remove 不能都为空 / nothing to change",
        ));
    }
    if body.add.len() + body.remove.len() > MAX_TAGS_PER_EDIT {
        return Err(invalid(
            "add",
            format!("一次最多 {MAX_TAGS_PER_EDIT} 个标签"),
        ));
    }
    if let Some(i) = body.add.iter().position(|t| body.remove.contains(t)) {
        return Err(invalid(
            format!("add[{i}]"),
            "同一标签不能既添加又移除 / both added and removed",
        ));
    }
    // Removing a tag the library no longer lists is fine (WeCom dropped it already).
    check_tags(&state, who.corp_id.as_str(), &[("add", &body.add)]).await?;
    let author = Author {
        actor: who.actor(),
        rule_id: None,
    };
    let edit = record::edit_tags(
        &state.db,
        relation(&who, &user_id, &ext),
        &body.add,
        &body.remove,
        &author,
        None,
        now_ms(),
    )
    .await?;
    accepted(edit)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RemarkBody {
    remark: Option<String>,
    description: Option<String>,
}

async fn edit_remark(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    PathParams((ext, user_id)): PathParams<(ExternalUserId, UserId)>,
    Body(body): Body<RemarkBody>,
) -> ApiResult<Response> {
    authorize_relation(&state, &who, &ext, &user_id).await?;
    if body.remark.is_none() && body.description.is_none() {
        return Err(invalid(
            "remark",
            "remark 和 description 至少给一个 / nothing to change",
        ));
    }
    let id = record::edit_remark(
        &state.db,
        relation(&who, &user_id, &ext),
        body.remark.as_deref(),
        body.description.as_deref(),
        &who.actor(),
        now_ms(),
    )
    .await?;
    accepted(json!({"outbox_id": id}))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PersonalBody {
    #[serde(default)]
    add: Vec<i64>,
    #[serde(default)]
    remove: Vec<i64>,
}

async fn edit_personal(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    PathParams(ext): PathParams<ExternalUserId>,
    Body(body): Body<PersonalBody>,
) -> ApiResult<Response> {
    who.check_customer(&state.db, Action::EditCustomers, &ext)
        .await?;
    if body.add.len() + body.remove.len() > MAX_TAGS_PER_EDIT {
        return Err(invalid(
            "add",
            format!("一次最多 {MAX_TAGS_PER_EDIT} 个标签"),
        ));
    }
    if contacts::get_customer(&state.db, &who.corp_id, &ext)
        .await?
        .is_none()
    {
        return Err(ApiFailure::NotFound("客户"));
    }
    let author = Author {
        actor: who.actor(),
        rule_id: None,
    };
    record::edit_personal_tags(
        &state.db,
        &who.corp_id,
        &ext,
        &body.add,
        &body.remove,
        &author,
        now_ms(),
    )
    .await?;
    let now = record::customer_personal_tags(&state.db, &who.corp_id, &ext).await?;
    ok(json!({"personal_tags": now}))
}
