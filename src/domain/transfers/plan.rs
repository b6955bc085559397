//! Planning a reassignment: which customers and chats, to which taker, and what WeCom will refuse.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use wecom_sdk::{CorpId, UserId};

use super::{Mode, TransferJob, get_job};
use crate::platform::db::{Db, StoreError, Tx};
use crate::{on_db, on_tx};

/// How customers are spread over several takers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Round robin: every taker gets the same number (±1).
    #[default]
    Even,
    /// Each customer to the taker with the fewest customers now (their own plus this plan's).
    Workload,
}

impl Strategy {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Even => "even",
            Self::Workload => "workload",
        }
    }
}

/// Customers with a corp tag, or in a lifecycle stage, go to one taker (before the strategy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteRule {
    /// A corp tag id on the handover member's relation.
    #[serde(default)]
    pub tag_id: Option<String>,
    /// A lifecycle stage (e.g. 成交).
    #[serde(default)]
    pub stage: Option<String>,
    /// Who gets them.
    pub takeover_user_id: String,
}

/// What to plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanRequest {
    /// The member handing over.
    pub handover_user_id: String,
    /// The takers (1–100).
    pub takeover_user_ids: Vec<String>,
    /// How to spread over several takers (default even).
    #[serde(default)]
    pub strategy: Strategy,
    /// Customers by tag or stage to a specific taker, first match wins.
    #[serde(default)]
    pub rules: Vec<RouteRule>,
    /// Resigned or on-job (default: resigned when the member has left).
    #[serde(default)]
    pub mode: Option<Mode>,
    /// Only these customers (default: all of the member's).
    #[serde(default)]
    pub customers: Option<Vec<String>>,
    /// Also hand over the member's group chats (default true).
    #[serde(default)]
    pub include_group_chats: Option<bool>,
    /// A note for the new owners, added to each customer's record at takeover.
    #[serde(default)]
    pub handover_note: Option<String>,
    /// On-job only: what WeCom tells the customer (≤ 200 characters).
    #[serde(default)]
    pub transfer_success_msg: Option<String>,
}

/// Why a plan was refused.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The request names something unknown or impossible (422).
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: String,
        /// Why.
        reason: String,
    },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> PlanError {
    PlanError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A new plan and its preview.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Planned {
    /// The job (`planned`).
    pub job: TransferJob,
    /// Customers in it.
    pub customers: usize,
    /// Group chats in it.
    pub group_chats: usize,
    /// Items per taker.
    pub per_taker: BTreeMap<String, usize>,
    /// Items per flag (what WeCom will refuse or may refuse).
    pub flagged: BTreeMap<String, usize>,
    /// Customers and chats left out because another job already moves (or moved) them.
    pub already_in_transfer: usize,
    /// Earlier plans of this member that were never started, now cancelled.
    pub superseded_jobs: Vec<i64>,
}

struct Member {
    departed: bool,
}

async fn member(db: &Db, corp_id: &CorpId, user_id: &UserId) -> Result<Option<Member>, StoreError> {
    let (corp_id, user_id) = (corp_id.as_str(), user_id.as_str());
    const SQL: &str =
        "SELECT departed_at_ms, status FROM staff WHERE corp_id = $1 AND user_id = $2";
    let row: Option<(Option<i64>, i64)> = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp_id)
        .bind(user_id)
        .fetch_optional(pool)
        .await)?;
    Ok(row.map(|(departed_at, status)| Member {
        departed: departed_at.is_some() || status == 5,
    }))
}

/// A taker must be a member we know who has not left.
pub(crate) async fn check_taker(
    db: &Db,
    corp_id: &CorpId,
    taker: &UserId,
) -> Result<(), PlanError> {
    match member(db, corp_id, taker).await? {
        None => Err(invalid(
            "takeover_user_ids",
            format!("成员 {taker} 不存在 / unknown member {taker}"),
        )),
        Some(m) if m.departed => Err(invalid(
            "takeover_user_ids",
            format!("接替成员 {taker} 已离职 / the taker {taker} has left"),
        )),
        Some(_) => Ok(()),
    }
}

fn tag_list(json: &str) -> Vec<String> {
    serde_json::from_str(json).unwrap_or_default()
}

/// Plans a reassignment (nothing is sent until [`super::start`]). Earlier never-started plans of
/// the same member are cancelled; customers and chats another job moves (or moved) are left out.
pub async fn plan(
    db: &Db,
    corp: &CorpId,
    req: &PlanRequest,
    actor: &str,
    now_ms: i64,
) -> Result<Planned, PlanError> {
    let corp_id = corp.as_str();
    let handover = req.handover_user_id.trim();
    if handover.is_empty() {
        return Err(invalid("handover_user_id", "必填 / required"));
    }
    let handover_id =
        UserId::try_from(handover).map_err(|e| invalid("handover_user_id", e.to_string()))?;
    let takers = unique(&req.takeover_user_ids);
    let taker_ids = takers
        .iter()
        .map(|t| UserId::try_from(t.as_str()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("takeover_user_ids", e.to_string()))?;
    if takers.is_empty() || takers.len() > 100 {
        return Err(invalid(
            "takeover_user_ids",
            "需要 1 到 100 位接替成员 / 1 to 100 takers",
        ));
    }
    let handover_member = member(db, corp, &handover_id).await?;
    let has_relations = count_active(db, corp, &handover_id).await? > 0;
    let Some(handover_member) =
        handover_member.or_else(|| has_relations.then_some(Member { departed: false }))
    else {
        return Err(invalid(
            "handover_user_id",
            format!("成员 {handover} 不存在 / unknown member {handover}"),
        ));
    };
    for t in &taker_ids {
        if *t != handover_id {
            check_taker(db, corp, t).await?;
        }
    }
    for (i, r) in req.rules.iter().enumerate() {
        if r.tag_id.is_some() == r.stage.is_some() {
            return Err(invalid(
                format!("rules[{i}]"),
                "tag_id 与 stage 二选一 / exactly one of tag_id and stage",
            ));
        }
        if !takers.contains(&r.takeover_user_id) {
            return Err(invalid(
                format!("rules[{i}].takeover_user_id"),
                "须是接替成员之一 / must be one of takeover_user_ids",
            ));
        }
    }
    let mode = req.mode.unwrap_or(if handover_member.departed {
        Mode::Resigned
    } else {
        Mode::OnJob
    });
    let success_msg = req
        .transfer_success_msg
        .as_deref()
        .map(str::trim)
        .filter(|m| !m.is_empty());
    if let Some(msg) = success_msg {
        if mode == Mode::Resigned {
            return Err(invalid(
                "transfer_success_msg",
                "仅在职继承可设置 / on-job transfers only",
            ));
        }
        if msg.chars().count() > wecom_sdk::api::MAX_TRANSFER_MSG_CHARS {
            return Err(invalid(
                "transfer_success_msg",
                "最多 200 个字 / at most 200 characters",
            ));
        }
    }
    let note = req.handover_note.as_deref().unwrap_or("").trim();
    if note.chars().count() > 1000 {
        return Err(invalid(
            "handover_note",
            "最多 1000 个字 / at most 1000 characters",
        ));
    }

    let moving = moving_targets(db, corp, &handover_id).await?;
    let mut customers = candidates(db, corp, &handover_id, mode).await?;
    let mut already = 0;
    if let Some(only) = &req.customers {
        let wanted: BTreeSet<&str> = only.iter().map(String::as_str).collect();
        let unknown: Vec<&str> = wanted
            .iter()
            .filter(|c| !customers.contains_key(**c) && !moving.contains(**c))
            .copied()
            .collect();
        if !unknown.is_empty() {
            let shown: Vec<&str> = unknown.iter().take(5).copied().collect();
            return Err(invalid(
                "customers",
                format!(
                    "{} 位客户不是 {handover} 的客户：{} / {} customers are not {handover}'s",
                    unknown.len(),
                    shown.join(", "),
                    unknown.len()
                ),
            ));
        }
        customers.retain(|c, _| wanted.contains(c.as_str()));
    }
    customers.retain(|c, _| {
        let keep = !moving.contains(c);
        already += usize::from(!keep);
        keep
    });
    let mut chats = if req.include_group_chats.unwrap_or(true) && req.customers.is_none() {
        owned_chats(db, corp, &handover_id).await?
    } else {
        Vec::new()
    };
    chats.retain(|c| {
        let keep = !moving.contains(c);
        already += usize::from(!keep);
        keep
    });

    let stages = if req.rules.iter().any(|r| r.stage.is_some()) {
        stages_of(db, corp_id).await?
    } else {
        HashMap::new()
    };
    let mut load = if req.strategy == Strategy::Workload {
        workloads(db, corp, &taker_ids).await?
    } else {
        HashMap::new()
    };
    let mut assigned: Vec<(String, String, &'static str)> = Vec::new();
    let mut round = 0usize;
    for (ext, tags) in &customers {
        let routed = req.rules.iter().find(|r| match (&r.tag_id, &r.stage) {
            (Some(t), _) => tags.contains(t),
            (None, Some(s)) => stages.get(ext.as_str()) == Some(s),
            (None, None) => false,
        });
        let taker = match routed {
            Some(r) => r.takeover_user_id.clone(),
            None => pick(&takers, req.strategy, &load, &mut round),
        };
        *load.entry(taker.clone()).or_default() += 1;
        assigned.push((ext.clone(), taker, "customer"));
    }
    for (chat_round, chat) in chats.iter().enumerate() {
        let taker = takers
            .get(chat_round % takers.len())
            .cloned()
            .unwrap_or_default();
        assigned.push((chat.clone(), taker, "group_chat"));
    }

    let twice_customers = if mode == Mode::OnJob {
        moved_twice(db, corp_id, "customer", now_ms).await?
    } else {
        BTreeSet::new()
    };
    let twice_chats = if mode == Mode::OnJob {
        moved_twice(db, corp_id, "group_chat", now_ms).await?
    } else {
        BTreeSet::new()
    };
    let at_limit = takers_at_limit(db, corp_id, now_ms).await?;
    let mut flagged: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_taker: BTreeMap<String, usize> = BTreeMap::new();
    let rows: Vec<NewItem> = assigned
        .into_iter()
        .map(|(target, taker, kind)| {
            let mut flags = Vec::new();
            if taker == handover {
                flags.push("taker_is_handover");
            }
            if kind == "customer" && twice_customers.contains(&target) {
                flags.push("transferred_twice_90d");
            }
            if kind == "group_chat" && twice_chats.contains(&target) {
                flags.push("moved_twice_90d");
            }
            if kind == "customer" && at_limit.contains(&taker) {
                flags.push("taker_at_limit");
            }
            for f in &flags {
                *flagged.entry((*f).to_owned()).or_default() += 1;
            }
            *per_taker.entry(taker.clone()).or_default() += 1;
            NewItem {
                kind,
                target,
                taker,
                flags: serde_json::to_string(&flags).unwrap_or_else(|_| "[]".to_owned()),
            }
        })
        .collect();

    let mut tx = db.begin().await?;
    let superseded = supersede(&mut tx, corp, &handover_id, now_ms).await?;
    let job_id = insert_job(
        &mut tx,
        corp_id,
        &JobRow {
            mode,
            handover,
            takers: &takers,
            strategy: if takers.len() == 1 {
                "one"
            } else {
                req.strategy.as_str()
            },
            note,
            success_msg,
            actor,
        },
        now_ms,
    )
    .await?;
    insert_items(&mut tx, corp, job_id, &handover_id, mode, &rows, now_ms).await?;
    let n_customers = rows.iter().filter(|r| r.kind == "customer").count();
    let n_chats = rows.len() - n_customers;
    crate::auth::audit(
        &mut tx,
        corp_id,
        actor,
        "transfer.plan",
        &format!("transfer_job:{job_id}"),
        &serde_json::json!({
            "handover": handover, "takers": takers, "mode": mode.as_str(),
            "strategy": req.strategy.as_str(), "customers": n_customers, "group_chats": n_chats,
            "flagged": flagged, "superseded": superseded,
        }),
        now_ms,
    )
    .await?;
    tx.commit().await?;
    Ok(Planned {
        job: get_job(db, corp_id, job_id).await?,
        customers: n_customers,
        group_chats: n_chats,
        per_taker,
        flagged,
        already_in_transfer: already,
        superseded_jobs: superseded,
    })
}

fn unique(ids: &[String]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    ids.iter()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty() && seen.insert(t.clone()))
        .collect()
}

fn pick(
    takers: &[String],
    strategy: Strategy,
    load: &HashMap<String, i64>,
    round: &mut usize,
) -> String {
    match strategy {
        Strategy::Even => {
            let t = takers
                .get(*round % takers.len())
                .cloned()
                .unwrap_or_default();
            *round += 1;
            t
        }
        Strategy::Workload => takers
            .iter()
            .min_by_key(|t| load.get(*t).copied().unwrap_or(0))
            .cloned()
            .unwrap_or_default(),
    }
}

async fn count_active(db: &Db, corp_id: &CorpId, user: &UserId) -> Result<i64, StoreError> {
    let (corp_id, user) = (corp_id.as_str(), user.as_str());
    const SQL: &str = "SELECT COUNT(*) FROM follow_relation WHERE corp_id = $1 AND user_id = $2 \
        AND status = 'active'";
    let n = on_db!(db, |pool| sqlx::query_scalar(SQL)
        .bind(corp_id)
        .bind(user)
        .fetch_one(pool)
        .await)?;
    Ok(n)
}

/// The member's customers with the corp tags of their relation: our active relations, and for a
/// departed member also what WeCom lists as unassigned.
async fn candidates(
    db: &Db,
    corp_id: &CorpId,
    handover: &UserId,
    mode: Mode,
) -> Result<BTreeMap<String, Vec<String>>, StoreError> {
    let (corp_id, handover) = (corp_id.as_str(), handover.as_str());
    const RELATIONS: &str = "SELECT external_user_id, tag_ids FROM follow_relation \
        WHERE corp_id = $1 AND user_id = $2 AND status = 'active'";
    const UNASSIGNED: &str = "SELECT external_user_id FROM unassigned_customer \
        WHERE corp_id = $1 AND handover_user_id = $2";
    let rows: Vec<(String, String)> = on_db!(db, |pool| sqlx::query_as(RELATIONS)
        .bind(corp_id)
        .bind(handover)
        .fetch_all(pool)
        .await)?;
    let mut out: BTreeMap<String, Vec<String>> = rows
        .into_iter()
        .map(|(ext, tags)| (ext, tag_list(&tags)))
        .collect();
    if mode == Mode::Resigned {
        let listed: Vec<String> = on_db!(db, |pool| sqlx::query_scalar(UNASSIGNED)
            .bind(corp_id)
            .bind(handover)
            .fetch_all(pool)
            .await)?;
        for ext in listed {
            out.entry(ext).or_default();
        }
    }
    Ok(out)
}

async fn owned_chats(db: &Db, corp_id: &CorpId, owner: &UserId) -> Result<Vec<String>, StoreError> {
    let (corp_id, owner) = (corp_id.as_str(), owner.as_str());
    const SQL: &str = "SELECT chat_id FROM group_chat WHERE corp_id = $1 AND owner_user_id = $2 \
        AND dismissed_at_ms IS NULL ORDER BY chat_id";
    let rows = on_db!(db, |pool| sqlx::query_scalar(SQL)
        .bind(corp_id)
        .bind(owner)
        .fetch_all(pool)
        .await)?;
    Ok(rows)
}

/// Customers and chats of `handover` that a running job is moving now (one that moved them
/// ended the relation, so a customer who came back can be planned again).
async fn moving_targets(
    db: &Db,
    corp_id: &CorpId,
    handover: &UserId,
) -> Result<BTreeSet<String>, StoreError> {
    let (corp_id, handover) = (corp_id.as_str(), handover.as_str());
    const SQL: &str = "SELECT i.target_id FROM transfer_item i JOIN transfer_job j ON j.id = i.job_id \
        WHERE i.corp_id = $1 AND i.handover_user_id = $2 AND j.state = 'running' \
        AND i.state IN ('planned', 'scheduled', 'sent', 'waiting')";
    let rows: Vec<String> = on_db!(db, |pool| sqlx::query_scalar(SQL)
        .bind(corp_id)
        .bind(handover)
        .fetch_all(pool)
        .await)?;
    Ok(rows.into_iter().collect())
}

async fn stages_of(db: &Db, corp_id: &str) -> Result<HashMap<String, String>, StoreError> {
    const SQL: &str = "SELECT external_user_id, stage FROM customer_stage WHERE corp_id = $1";
    let rows: Vec<(String, String)> = on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(corp_id)
        .fetch_all(pool)
        .await)?;
    Ok(rows.into_iter().collect())
}

async fn workloads(
    db: &Db,
    corp_id: &CorpId,
    takers: &[UserId],
) -> Result<HashMap<String, i64>, StoreError> {
    let mut out = HashMap::new();
    for t in takers {
        out.insert(t.to_string(), count_active(db, corp_id, t).await?);
    }
    Ok(out)
}

/// Customers (or chats) moved on-job at least twice in the last 90 days.
async fn moved_twice(
    db: &Db,
    corp_id: &str,
    kind: &str,
    now_ms: i64,
) -> Result<BTreeSet<String>, StoreError> {
    const SQL: &str = "SELECT target_id FROM transfer_item WHERE corp_id = $1 AND kind = $2 \
        AND mode = 'on_job' AND state IN ('waiting', 'done') AND sent_at_ms > $3 \
        GROUP BY target_id HAVING COUNT(*) >= 2";
    let since = now_ms.saturating_sub(90 * 86_400_000);
    let rows: Vec<String> = on_db!(db, |pool| sqlx::query_scalar(SQL)
        .bind(corp_id)
        .bind(kind)
        .bind(since)
        .fetch_all(pool)
        .await)?;
    Ok(rows.into_iter().collect())
}

/// Takers WeCom said were at their customer limit in the last day.
async fn takers_at_limit(
    db: &Db,
    corp_id: &str,
    now_ms: i64,
) -> Result<BTreeSet<String>, StoreError> {
    const SQL: &str = "SELECT DISTINCT takeover_user_id FROM transfer_item WHERE corp_id = $1 \
        AND errcode = 40099 AND updated_at_ms > $2";
    let rows: Vec<String> = on_db!(db, |pool| sqlx::query_scalar(SQL)
        .bind(corp_id)
        .bind(now_ms.saturating_sub(86_400_000))
        .fetch_all(pool)
        .await)?;
    Ok(rows.into_iter().collect())
}

/// Cancels the member's plans that were never started.
async fn supersede(
    tx: &mut Tx,
    corp_id: &CorpId,
    handover: &UserId,
    now_ms: i64,
) -> Result<Vec<i64>, StoreError> {
    let (corp_id, handover) = (corp_id.as_str(), handover.as_str());
    const SQL: &str = "UPDATE transfer_job SET state = 'cancelled', notice = $3, \
        finished_at_ms = $4, updated_at_ms = $4 WHERE corp_id = $1 AND handover_user_id = $2 \
        AND state = 'planned' RETURNING id";
    let ids = on_tx!(tx, |conn| sqlx::query_scalar(SQL)
        .bind(corp_id)
        .bind(handover)
        .bind("被新的计划取代 / superseded by a newer plan")
        .bind(now_ms)
        .fetch_all(&mut *conn)
        .await)?;
    Ok(ids)
}

struct JobRow<'a> {
    mode: Mode,
    handover: &'a str,
    takers: &'a [String],
    strategy: &'a str,
    note: &'a str,
    success_msg: Option<&'a str>,
    actor: &'a str,
}

async fn insert_job(
    tx: &mut Tx,
    corp_id: &str,
    j: &JobRow<'_>,
    now_ms: i64,
) -> Result<i64, StoreError> {
    const SQL: &str = "INSERT INTO transfer_job (corp_id, mode, handover_user_id, takers, strategy, \
        handover_note, success_msg, created_by, created_at_ms, updated_at_ms) \
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) RETURNING id";
    let id = on_tx!(tx, |conn| sqlx::query_scalar(SQL)
        .bind(corp_id)
        .bind(j.mode.as_str())
        .bind(j.handover)
        .bind(serde_json::to_string(j.takers).unwrap_or_else(|_| "[]".to_owned()))
        .bind(j.strategy)
        .bind(j.note)
        .bind(j.success_msg)
        .bind(j.actor)
        .bind(now_ms)
        .fetch_one(&mut *conn)
        .await)?;
    Ok(id)
}

struct NewItem {
    kind: &'static str,
    target: String,
    taker: String,
    flags: String,
}

/// Rows per multi-row INSERT (9 values each, well under SQLite's variable limit).
const INSERT_CHUNK: usize = 500;

async fn insert_items(
    tx: &mut Tx,
    corp_id: &CorpId,
    job_id: i64,
    handover: &UserId,
    mode: Mode,
    rows: &[NewItem],
    now_ms: i64,
) -> Result<(), StoreError> {
    let (corp_id, handover) = (corp_id.as_str(), handover.as_str());
    for chunk in rows.chunks(INSERT_CHUNK) {
        let mut sql = String::from(
            "INSERT INTO transfer_item (corp_id, job_id, kind, target_id, handover_user_id, \
             takeover_user_id, mode, flags, created_at_ms, updated_at_ms) VALUES ",
        );
        for i in 0..chunk.len() {
            let b = i * 4;
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "($1, $2, ${}, ${}, $3, ${}, $4, ${}, $5, $5)",
                b + 6,
                b + 7,
                b + 8,
                b + 9
            ));
        }
        on_tx!(tx, |conn| {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(corp_id)
                .bind(job_id)
                .bind(handover)
                .bind(mode.as_str())
                .bind(now_ms);
            for r in chunk {
                q = q.bind(r.kind).bind(&r.target).bind(&r.taker).bind(&r.flags);
            }
            q.execute(&mut *conn).await.map(|_| ())
        })?;
    }
    Ok(())
}
