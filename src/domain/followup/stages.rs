//! Lifecycle stages (生命周期阶段): the corp's list (a setting) and each customer's stage with every
//! change.
use super::*;

const STAGES_SETTING: &str = "stages";

pub(super) fn parse_stages(value: Option<String>) -> Vec<String> {
    let parsed = value.and_then(|v| match serde_json::from_str::<Vec<String>>(&v) {
        Ok(list) if !list.is_empty() => Some(list),
        _ => {
            tracing::warn!("corp setting 'stages' is not a JSON array of names; using the default");
            None
        }
    });
    parsed.unwrap_or_else(|| DEFAULT_STAGES.iter().map(|s| (*s).to_owned()).collect())
}

/// The corp's lifecycle stages, in order ([`DEFAULT_STAGES`] when never set).
pub async fn stages(db: &Db, corp_id: &str) -> Result<Vec<String>, StoreError> {
    let value = crate::domain::settings::get(db, corp_id, STAGES_SETTING).await?;
    Ok(parse_stages(value))
}

/// Checks a stage list: 1..=20 names, each non-empty after trimming, at most 20 characters,
/// no two the same. Returns the trimmed names.
pub fn check_stages(list: &[String]) -> Result<Vec<String>, FollowupError> {
    if list.is_empty() || list.len() > MAX_STAGES {
        return Err(invalid(
            "stages",
            format!("阶段数量须为 1–{MAX_STAGES} 个 / 1 to {MAX_STAGES} stages"),
        ));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(list.len());
    for (i, name) in list.iter().enumerate() {
        let name = name.trim();
        let field = format!("stages[{i}]");
        if name.is_empty() {
            return Err(invalid(&field, "阶段名不能为空 / must not be empty"));
        }
        if name.chars().count() > MAX_STAGE_CHARS {
            return Err(invalid(
                &field,
                format!("阶段名最多 {MAX_STAGE_CHARS} 个字 / at most {MAX_STAGE_CHARS} characters"),
            ));
        }
        if !seen.insert(name) {
            return Err(invalid(&field, "阶段名重复 / duplicate name"));
        }
        out.push(name.to_owned());
    }
    Ok(out)
}

/// Replaces the corp's stage list (checked by [`check_stages`]); audited. Customers keep a stage
/// that is no longer listed until it is changed. Returns the stored list.
pub async fn set_stages(
    db: &Db,
    corp_id: &str,
    list: &[String],
    actor: &str,
    now_ms: i64,
) -> Result<Vec<String>, FollowupError> {
    let list = check_stages(list)?;
    let value = serde_json::to_string(&list)
        .map_err(|e| StoreError::Other(sqlx::Error::Encode(e.into())))?;
    let mut tx = db.begin().await?;
    crate::domain::settings::set_in(&mut tx, corp_id, STAGES_SETTING, &value, actor, now_ms)
        .await?;
    auth::audit(
        &mut tx,
        corp_id,
        actor,
        "stages.set",
        "corp_setting:stages",
        &serde_json::json!({"stages": list}),
        now_ms,
    )
    .await?;
    tx.commit().await?;
    Ok(list)
}

/// One change of a customer's stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct StageChange {
    /// The stage before (`None` for the first).
    pub from_stage: Option<String>,
    /// The stage after.
    pub to_stage: String,
    /// Who changed it.
    pub actor: String,
    /// When, epoch ms.
    pub at_ms: i64,
}

/// A customer's stage and how it got there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CustomerStage {
    /// The stage now (`None` when never set).
    pub stage: Option<String>,
    /// Who set it.
    pub updated_by: Option<String>,
    /// When, epoch ms.
    pub updated_at_ms: Option<i64>,
    /// Every change, oldest first.
    pub history: Vec<StageChange>,
}

/// A customer's stage now (`None` when never set).
pub async fn customer_stage(
    db: &Db,
    corp_id: &CorpId,
    external_user_id: &ExternalUserId,
) -> Result<Option<String>, StoreError> {
    let (corp_id, external_user_id) = (corp_id.as_str(), external_user_id.as_str());
    const SQL: &str =
        "SELECT stage FROM customer_stage WHERE corp_id = $1 AND external_user_id = $2";
    let row = on_db!(db, |pool| sqlx::query_scalar(SQL)
        .bind(corp_id)
        .bind(external_user_id)
        .fetch_optional(pool)
        .await)?;
    Ok(row)
}

/// A customer's stage with who set it and its history.
pub async fn customer_stage_record(
    db: &Db,
    corp_id: &CorpId,
    external_user_id: &ExternalUserId,
) -> Result<CustomerStage, StoreError> {
    let (corp_id, external_user_id) = (corp_id.as_str(), external_user_id.as_str());
    const NOW: &str = "SELECT stage, updated_by, updated_at_ms FROM customer_stage \
        WHERE corp_id = $1 AND external_user_id = $2";
    const HISTORY: &str = "SELECT from_stage, to_stage, actor, at_ms FROM stage_change \
        WHERE corp_id = $1 AND external_user_id = $2 ORDER BY id";
    let now: Option<(String, String, i64)> = on_db!(db, |pool| sqlx::query_as(NOW)
        .bind(corp_id)
        .bind(external_user_id)
        .fetch_optional(pool)
        .await)?;
    let history = on_db!(db, |pool| sqlx::query_as(HISTORY)
        .bind(corp_id)
        .bind(external_user_id)
        .fetch_all(pool)
        .await)?;
    let (stage, updated_by, updated_at_ms) = match now {
        Some((s, by, at)) => (Some(s), Some(by), Some(at)),
        None => (None, None, None),
    };
    Ok(CustomerStage {
        stage,
        updated_by,
        updated_at_ms,
        history,
    })
}

/// Sets a customer's stage (one of the corp's [`stages`], else `Invalid` for `stage`), appending
/// the change to its history and the audit log in the same transaction. Setting the stage it has
/// records nothing. Returns whether it changed.
pub async fn set_customer_stage(
    db: &Db,
    corp_id: &CorpId,
    external_user_id: &ExternalUserId,
    stage: &str,
    actor: &str,
    now_ms: i64,
) -> Result<bool, FollowupError> {
    let (corp_id, external_user_id) = (corp_id.as_str(), external_user_id.as_str());
    // The first stage of a customer: the insert wins once; a concurrent one waits for it (its
    // unique key) and then takes the update path below.
    const FIRST: &str = "INSERT INTO customer_stage (corp_id, external_user_id, stage, updated_by, \
        updated_at_ms) VALUES ($1, $2, $3, $4, $5) \
        ON CONFLICT (corp_id, external_user_id) DO NOTHING";
    const LOCK_PG: &str = "SELECT stage FROM customer_stage WHERE corp_id = $1 \
        AND external_user_id = $2 FOR UPDATE";
    const LOCK_LITE: &str =
        "SELECT stage FROM customer_stage WHERE corp_id = $1 AND external_user_id = $2";
    const UPDATE: &str = "UPDATE customer_stage SET stage = $3, updated_by = $4, updated_at_ms = $5 \
        WHERE corp_id = $1 AND external_user_id = $2";
    const HISTORY: &str = "INSERT INTO stage_change (corp_id, external_user_id, from_stage, \
        to_stage, actor, at_ms) VALUES ($1, $2, $3, $4, $5, $6)";
    let mut tx = db.begin().await?;
    let value = crate::domain::settings::get_in(&mut tx, corp_id, STAGES_SETTING).await?;
    let allowed = parse_stages(value);
    if !allowed.iter().any(|s| s == stage) {
        return Err(invalid(
            "stage",
            format!(
                "不是本企业的阶段（可选：{}） / not one of the corp's stages",
                allowed.join("、")
            ),
        ));
    }
    let inserted = on_tx!(&mut tx, |conn| sqlx::query(FIRST)
        .bind(corp_id)
        .bind(external_user_id)
        .bind(stage)
        .bind(actor)
        .bind(now_ms)
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected()))?;
    let from = if inserted == 1 {
        None
    } else {
        let lock = if tx.is_postgres() { LOCK_PG } else { LOCK_LITE };
        let current: Option<String> = on_tx!(&mut tx, |conn| sqlx::query_scalar(lock)
            .bind(corp_id)
            .bind(external_user_id)
            .fetch_optional(&mut *conn)
            .await)?;
        if current.as_deref() == Some(stage) {
            return Ok(false);
        }
        on_tx!(&mut tx, |conn| sqlx::query(UPDATE)
            .bind(corp_id)
            .bind(external_user_id)
            .bind(stage)
            .bind(actor)
            .bind(now_ms)
            .execute(&mut *conn)
            .await
            .map(|_| ()))?;
        current
    };
    on_tx!(&mut tx, |conn| sqlx::query(HISTORY)
        .bind(corp_id)
        .bind(external_user_id)
        .bind(from.as_deref())
        .bind(stage)
        .bind(actor)
        .bind(now_ms)
        .execute(&mut *conn)
        .await
        .map(|_| ()))?;
    auth::audit(
        &mut tx,
        corp_id,
        actor,
        "customer.stage",
        &format!("customer:{external_user_id}"),
        &serde_json::json!({"from": from, "to": stage}),
        now_ms,
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}
