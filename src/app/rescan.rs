//! The retroactive scan: after a rule changes, the stored messages run through the content rules
//! again, as a resumable job (`jobs` kind `rescan`, checkpoint after every batch). Alerts it
//! raises are de-duplicated by evidence like any other, so running it twice raises nothing twice.
//! The stored messages are the texts sent to our apps (in the inbox) and the archived chat
//! (`archive_message`): the archive phase clears the messages' `scanned` flag once and lets the
//! archive's own scanner work them off, so the flag is that phase's checkpoint.

use serde::{Deserialize, Serialize};
use wecom_sdk::event::{AppMessage, CallbackEvent};

use crate::domain::alerts::{Scanned, scan_message};
use crate::domain::rule_book::RuleBook;
use crate::on_db;
use crate::pipeline::jobs;
use crate::platform::db::{Db, StoreError};
use crate::platform::wecom::Wecom;

/// The `jobs.kind` of a retroactive scan.
pub const JOB_KIND: &str = "rescan";
/// Messages read per batch (one checkpoint each).
const BATCH: i64 = 500;
/// The job's lease; renewed by every checkpoint.
const LEASE_MS: i64 = 120_000;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Cursor {
    after_id: i64,
    since_ms: i64,
    done: i64,
    hits: i64,
    alerts_opened: i64,
    #[serde(default)]
    archive_reset: bool,
}

/// What a finished scan did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RescanSummary {
    /// Messages scanned.
    pub messages: i64,
    /// Rule hits (each new one is evidence of an alert).
    pub hits: i64,
    /// Alerts opened by this scan.
    pub alerts_opened: i64,
}

/// Why a scan could not run.
#[derive(Debug, thiserror::Error)]
pub enum RescanError {
    /// The corp is not configured.
    #[error("corp {0} is not configured")]
    UnknownCorp(String),
    /// Another instance is running this corp's scan.
    #[error("a retroactive scan of this corp is running elsewhere (job {0})")]
    Busy(i64),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Queues a scan of `corp`'s messages received at or after `since_ms` (or returns the one still
/// to be finished). The job's id; [`run`] works it.
pub async fn start(db: &Db, corp: &str, since_ms: i64) -> Result<i64, StoreError> {
    if let Some(id) = jobs::resumable(db, corp, JOB_KIND).await? {
        return Ok(id);
    }
    let id = jobs::create(db, corp, JOB_KIND).await?;
    let cursor = Cursor {
        since_ms,
        ..Cursor::default()
    };
    let owner = format!("start:{id}");
    if jobs::claim(db, id, &owner, 1).await? {
        let text = serde_json::to_string(&cursor).unwrap_or_default();
        jobs::checkpoint(db, id, &owner, 1, &text, 0, 0).await?;
        jobs::release(db, id, &owner).await?;
    }
    Ok(id)
}

/// [`start`], recorded in the audit log as `action` by `actor` (the console's 规则 page).
pub async fn start_audited(
    db: &Db,
    corp: &str,
    since_ms: i64,
    actor: &str,
    action: &str,
    now_ms: i64,
) -> Result<i64, StoreError> {
    let id = start(db, corp, since_ms).await?;
    let mut tx = db.begin().await?;
    crate::auth::audit(
        &mut tx,
        corp,
        actor,
        action,
        &format!("job:{id}"),
        &serde_json::json!({ "since_ms": since_ms }),
        now_ms,
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// Works job `id` in the background as `owner`, logging how it ended (the API's and the
/// console's rescans: the request answers at once, the job's progress is in `jobs`).
pub fn spawn(db: Db, wecom: Wecom, rules: RuleBook, id: i64, owner: String) {
    tokio::spawn(async move {
        match run(&db, &wecom, &rules, id, &owner).await {
            Ok(summary) => tracing::info!(job_id = id, ?summary, "retroactive scan done"),
            Err(e) => {
                tracing::warn!(job_id = id, error = %e, "retroactive scan stopped; it resumes when started again")
            }
        }
    });
}

/// Works job `id` to the end as `owner`, resuming from its checkpoint, with the library in force
/// for the job's corp when it starts.
#[tracing::instrument(name = "rescan", skip_all, fields(job_id = id))]
pub async fn run(
    db: &Db,
    wecom: &Wecom,
    rules: &RuleBook,
    id: i64,
    owner: &str,
) -> Result<RescanSummary, RescanError> {
    const TOTAL: &str = "SELECT COUNT(*) FROM inbox WHERE corp_id = $1 AND msg_type = 'text' \
        AND received_at_ms >= $2";
    const PAGE: &str = "SELECT id, body, received_at_ms FROM inbox WHERE corp_id = $1 \
        AND msg_type = 'text' AND received_at_ms >= $2 AND id > $3 ORDER BY id LIMIT $4";
    let job = jobs::get(db, id).await?;
    let corp = job.corp_id.clone();
    let ctx = crate::domain::alerts::Ctx::of(wecom, &corp)
        .ok_or_else(|| RescanError::UnknownCorp(corp.clone()))?;
    if !jobs::claim(db, id, owner, LEASE_MS).await? {
        return Err(RescanError::Busy(id));
    }
    let library = rules.lookup(&corp).await?;
    let library = &*library;
    let mut cursor: Cursor = serde_json::from_str(&job.cursor).unwrap_or_default();
    let total: i64 = on_db!(db, |pool| sqlx::query_scalar(TOTAL)
        .bind(&corp)
        .bind(cursor.since_ms)
        .fetch_one(pool)
        .await)
    .map_err(StoreError::from)?;
    loop {
        let rows: Vec<(i64, String, i64)> = on_db!(db, |pool| sqlx::query_as(PAGE)
            .bind(&corp)
            .bind(cursor.since_ms)
            .bind(cursor.after_id)
            .bind(BATCH)
            .fetch_all(pool)
            .await)
        .map_err(StoreError::from)?;
        let Some(&(last, _, _)) = rows.last() else {
            break;
        };
        for (row_id, body, received_at_ms) in &rows {
            let Ok(parsed) = wecom_sdk::parse_event(body) else {
                continue;
            };
            let CallbackEvent::Message {
                from,
                message: AppMessage::Text { content },
            } = parsed.event
            else {
                continue;
            };
            let agent = parsed.header.agent_id.unwrap_or_default();
            let at_ms = parsed
                .header
                .create_time
                .and_then(crate::platform::wecom::secs_to_ms)
                .unwrap_or(*received_at_ms);
            let message = Scanned::app_text(
                &ctx.corp.corp_id,
                &agent,
                &from,
                content.as_deref().unwrap_or(""),
                format!("inbox:{row_id}"),
                at_ms,
            );
            let raised =
                scan_message(db, ctx, library, &message, crate::platform::db::now_ms()).await?;
            cursor.hits +=
                i64::try_from(raised.iter().filter(|r| r.alert_id.is_some()).count()).unwrap_or(0);
            cursor.alerts_opened +=
                i64::try_from(raised.iter().filter(|r| r.created).count()).unwrap_or(0);
        }
        cursor.after_id = last;
        cursor.done += i64::try_from(rows.len()).unwrap_or(0);
        let text = serde_json::to_string(&cursor).unwrap_or_default();
        if !jobs::checkpoint(
            db,
            id,
            owner,
            LEASE_MS,
            &text,
            cursor.done,
            total.max(cursor.done),
        )
        .await?
        {
            return Err(RescanError::Busy(id));
        }
    }
    if !cursor.archive_reset {
        crate::domain::archive::store::unmark_scanned_since(db, &corp, cursor.since_ms).await?;
        cursor.archive_reset = true;
        let text = serde_json::to_string(&cursor).unwrap_or_default();
        jobs::checkpoint(
            db,
            id,
            owner,
            LEASE_MS,
            &text,
            cursor.done,
            total.max(cursor.done),
        )
        .await?;
    }
    let archived = crate::app::archive_pull::scan_pending(db, wecom, library, &corp).await?;
    cursor.done += i64::try_from(archived).unwrap_or(0);
    let summary = RescanSummary {
        messages: cursor.done,
        hits: cursor.hits,
        alerts_opened: cursor.alerts_opened,
    };
    let text = serde_json::to_string(&summary).unwrap_or_default();
    jobs::finish(db, id, owner, Ok(&text)).await?;
    Ok(summary)
}
