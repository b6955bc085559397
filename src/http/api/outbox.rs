//! The outbox as operators see it: what is waiting, delivered or dead, and retrying dead items.

use std::sync::Arc;

use axum::extract::State;
use axum::http::Method;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::schema::{array, int, nullable, object, one_of, string};
use super::{ApiFailure, ApiResult, Auth, Endpoint, PathParams, QueryParams, invalid, ok};
use crate::auth::Action;
use crate::http::AppState;
use crate::pipeline::outbox::{self, OutboxFilter};
use crate::platform::db::now_ms;

const STATES: [&str; 4] = ["pending", "done", "dead", "cancelled"];

/// This module's endpoints.
pub fn endpoints() -> Vec<Endpoint> {
    let item = object(
        &[
            ("id", int("条目 id")),
            (
                "kind",
                one_of(
                    &[
                        "mark_tag",
                        "remark",
                        "add_corp_tag",
                        "edit_corp_tag",
                        "del_corp_tag",
                        "message_send",
                        "transfer_customer",
                        "transfer_group_chat",
                    ],
                    "调用",
                ),
            ),
            ("order_key", string("同一 key 的条目按顺序逐个送达")),
            ("payload", string("要做的变更（JSON）")),
            ("actor", string("谁发起的")),
            ("state", one_of(&STATES, "状态")),
            ("attempts", int("已尝试次数")),
            ("last_error", nullable(string("最近一次失败原因"))),
            ("result", nullable(string("企业微信的返回（JSON）"))),
            ("created_at_ms", int("写入时间")),
            ("delivered_at_ms", nullable(int("送达时间"))),
            ("dead_at_ms", nullable(int("放弃时间"))),
        ],
        &["id", "kind", "state", "attempts"],
    );
    vec![
        Endpoint::new(
            Method::GET,
            "/outbox",
            "发往企业微信的变更（最新在前）",
            get(list),
        )
        .tag("operations")
        .requires(Action::ReadOperations)
        .query("state", one_of(&STATES, "状态"), "按状态过滤")
        .query("kind", string("调用"), "按调用过滤")
        .query("before_id", int("分页：比该 id 小"), "分页")
        .query("limit", int("1–1000，默认 100"), "条数")
        .response(
            200,
            object(
                &[
                    ("items", array(item.clone())),
                    (
                        "stats",
                        object(
                            &[
                                ("pending", int("")),
                                ("done", int("")),
                                ("dead", int("")),
                                ("oldest_pending_age_ms", int("")),
                            ],
                            &[],
                        ),
                    ),
                ],
                &["items"],
            ),
        ),
        Endpoint::new(Method::GET, "/outbox/{id}", "一个条目", get(get_one))
            .tag("operations")
            .requires(Action::ReadOperations)
            .response(200, item),
        Endpoint::new(
            Method::POST,
            "/outbox/{id}/retry",
            "重新投递一个失败（dead）的条目",
            post(retry),
        )
        .tag("operations")
        .requires(Action::RetryOutbox)
        .response(
            200,
            object(&[("retried", int("放回队列的条数"))], &["retried"]),
        ),
    ]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    state: Option<String>,
    kind: Option<String>,
    before_id: Option<i64>,
    limit: Option<i64>,
}

async fn list(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult {
    if let Some(s) = &q.state
        && !STATES.contains(&s.as_str())
    {
        return Err(invalid("state", "只能是 pending、done、dead、cancelled"));
    }
    let filter = OutboxFilter {
        corp_id: Some(who.corp_id.to_string()),
        state: q.state,
        kind: q.kind,
        before_id: q.before_id,
        limit: q.limit.unwrap_or(100),
        ..OutboxFilter::default()
    };
    let items = outbox::list(&state.db, &filter).await?;
    let stats = outbox::stats(&state.db, Some(who.corp_id.as_str()), now_ms()).await?;
    ok(json!({"items": items, "stats": stats}))
}

async fn get_one(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    PathParams(id): PathParams<i64>,
) -> ApiResult {
    let item = outbox::get(&state.db, id).await?;
    if who.corp_id != item.corp_id {
        return Err(ApiFailure::NotFound("条目"));
    }
    ok(item)
}

async fn retry(
    State(state): State<Arc<AppState>>,
    Auth(who): Auth,
    PathParams(id): PathParams<i64>,
) -> ApiResult {
    let n = outbox::retry(&state.db, Some(id), Some(who.corp_id.as_str()), now_ms()).await?;
    if n == 0 {
        return Err(ApiFailure::Conflict(
            "只有失败（dead）的条目可以重试 / only dead items can be retried".to_owned(),
        ));
    }
    ok(json!({"retried": n}))
}
