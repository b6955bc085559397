//! Full sync and reconciliation (`scrm sync`, and nightly in `serve`): pulls the tag library, the
//! follow users, every (customer, follower) pair through `batch/get_by_user` (100 users and 100 rows
//! per call, the fewest calls the page sizes allow) and every group chat; diffs against our tables;
//! repairs missed adds, edits and deletions and records each repair in the relation history with
//! the job's id.
//!
//! It is a resumable job: the phase and the WeCom cursor are checkpointed after every page, so a
//! restarted or taken-over run continues where the last one stopped. Relations that a run has seen
//! are marked with its job id; the ones it did not see (and that nothing touched since the run
//! started) vanished from WeCom without an event and are ended as `vanished`.

use serde::{Deserialize, Serialize};
use wecom_sdk::api::{ApiError, AppCredentials, GroupChatListRequest};
use wecom_sdk::{ChatId, CorpId, ExternalUserId, UserId};

use crate::app::wecom_records;
use crate::domain::customers::{self, EndReason, RelationChange, RelationKey, Source};
use crate::domain::{group_chats, staff};
use crate::pipeline::jobs;
use crate::platform::coord::LeaderLock;
use crate::platform::db::{Db, StoreError, now_ms};
use crate::platform::wecom::{NoSecret, Wecom};

/// The job kind in the `job` table.
pub const JOB_KIND: &str = "sync";
/// Users per `batch/get_by_user` call and per `groupchat/list` owner filter (WeCom's maximum).
const USERS_PER_CALL: usize = 100;
/// Rows per `batch/get_by_user` page (WeCom's maximum).
const ROWS_PER_PAGE: u32 = 100;
/// Chats per `groupchat/list` page (WeCom's maximum).
const CHATS_PER_PAGE: u32 = 1000;
/// A run's lease on its job; renewed at every checkpoint.
const LEASE_MS: i64 = 120_000;

/// Why a sync stopped.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// WeCom refused or failed.
    #[error("WeCom API: {0}")]
    Api(#[from] ApiError),
    /// The database failed.
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// No app secret for the corp.
    #[error(transparent)]
    NoSecret(#[from] NoSecret),
    /// Another instance runs this corp's sync now.
    #[error("another instance is running the sync of corp {corp_id} (job {job_id:?})")]
    Busy {
        /// The corp.
        corp_id: String,
        /// Its running job, when known.
        job_id: Option<i64>,
    },
    /// The lease was taken over (this instance was too slow or paused): stop, the other goes on.
    #[error("lost the lease on job {0}")]
    LeaseLost(i64),
    /// The checkpoint in the database does not parse.
    #[error("job {0} has an unreadable checkpoint: {1}")]
    BadCheckpoint(i64, String),
}

/// What a run found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SyncSummary {
    /// Follow users (staff with 客户联系).
    pub follow_users: u64,
    /// (customer, follower) rows read.
    pub relations_seen: u64,
    /// Relations WeCom has and we did not (a missed add).
    pub added: u64,
    /// Relations re-added after they had ended.
    pub reactivated: u64,
    /// Relations whose remark, description or tags differed (a missed edit).
    pub edited: u64,
    /// Relations gone from WeCom without an event (a missed deletion).
    pub vanished: u64,
    /// Tags in the library.
    pub tags: u64,
    /// Group chats read.
    pub chats_seen: u64,
    /// Group chats whose members or details differed.
    pub chats_changed: u64,
    /// Group chats gone from WeCom.
    pub chats_gone: u64,
    /// WeCom API calls made by this run (all attempts of it).
    pub api_calls: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
enum Phase {
    #[default]
    Tags,
    Customers,
    Vanished,
    Chats,
    GoneChats,
    Done,
}

/// The checkpoint stored in `job.cursor` (`{}` for a new job).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct Checkpoint {
    phase: Phase,
    follow_users: Vec<UserId>,
    /// Index of the current chunk of `USERS_PER_CALL` users.
    chunk: usize,
    /// WeCom's cursor inside the current chunk.
    page_cursor: String,
    /// Chats listed on the current `groupchat/list` page and not yet read.
    chat_queue: Vec<(ChatId, i64)>,
    summary: SyncSummary,
}

/// Progress as a run reports it after each page.
#[derive(Debug, Clone, Serialize)]
pub struct SyncProgress {
    /// The job.
    pub job_id: i64,
    /// `tags`, `customers`, `vanished`, `chats`, `gone_chats`, `done`.
    pub phase: &'static str,
    /// Units done (one per follow user per phase).
    pub done: i64,
    /// Units in all.
    pub total: i64,
    /// Counts so far.
    pub summary: SyncSummary,
}

impl Phase {
    fn name(&self) -> &'static str {
        match self {
            Self::Tags => "tags",
            Self::Customers => "customers",
            Self::Vanished => "vanished",
            Self::Chats => "chats",
            Self::GoneChats => "gone_chats",
            Self::Done => "done",
        }
    }
}

struct Run<'a> {
    db: &'a Db,
    wecom: &'a Wecom,
    creds: AppCredentials,
    corp: &'a CorpId,
    job_id: i64,
    started_ms: i64,
    owner: &'a str,
    leader: Option<&'a LeaderLock>,
    progress: &'a (dyn Fn(&SyncProgress) + Send + Sync),
    cp: Checkpoint,
}

/// Runs (or resumes) the sync of one corp to its end. `owner` is this instance's id; `leader`,
/// when given, is renewed at each checkpoint. Returns the job id and what it did.
#[tracing::instrument(name = "sync", skip_all, fields(corp_id = %corp))]
pub async fn run(
    db: &Db,
    wecom: &Wecom,
    corp: &CorpId,
    owner: &str,
    leader: Option<&LeaderLock>,
    progress: &(dyn Fn(&SyncProgress) + Send + Sync),
) -> Result<(i64, SyncSummary), SyncError> {
    let corp_id = corp.as_str();
    let creds = wecom.credentials(corp_id, None)?;
    if jobs::running_elsewhere(db, corp_id, JOB_KIND, owner).await? {
        let job_id = jobs::list(db, Some(corp_id), JOB_KIND, 1)
            .await?
            .first()
            .map(|j| j.id);
        return Err(SyncError::Busy {
            corp_id: corp_id.to_owned(),
            job_id,
        });
    }
    let job_id = match jobs::resumable(db, corp_id, JOB_KIND).await? {
        Some(id) => id,
        None => jobs::create(db, corp_id, JOB_KIND).await?,
    };
    if !jobs::claim(db, job_id, owner, LEASE_MS).await? {
        return Err(SyncError::Busy {
            corp_id: corp_id.to_owned(),
            job_id: Some(job_id),
        });
    }
    let job = jobs::get(db, job_id).await?;
    let cp: Checkpoint = serde_json::from_str(&job.cursor)
        .map_err(|e| SyncError::BadCheckpoint(job_id, e.to_string()))?;
    if job.progress_done > 0 || cp.phase != Phase::Tags {
        tracing::info!(corp_id, job_id, phase = cp.phase.name(), "resuming sync");
    }
    let mut run = Run {
        db,
        wecom,
        creds,
        corp,
        job_id,
        started_ms: job.started_at_ms.unwrap_or_else(now_ms),
        owner,
        leader,
        progress,
        cp,
    };
    match run.steps().await {
        Ok(()) => {
            let summary = serde_json::to_string(&run.cp.summary).unwrap_or_default();
            jobs::finish(db, job_id, owner, Ok(&summary)).await?;
            tracing::info!(corp_id, job_id, summary = %summary, "sync finished");
            Ok((job_id, run.cp.summary))
        }
        Err(e @ SyncError::LeaseLost(_)) => Err(e),
        Err(e) => {
            // Keep the job resumable: a transient failure (WeCom down, rate limited) continues from
            // the checkpoint on the next run.
            let _ = jobs::release(db, job_id, owner).await;
            Err(e)
        }
    }
}

impl Run<'_> {
    fn units(&self) -> (i64, i64) {
        let users = i64::try_from(self.cp.follow_users.len()).unwrap_or(i64::MAX);
        let chunk_users = |chunk: usize| {
            i64::try_from((chunk * USERS_PER_CALL).min(self.cp.follow_users.len()))
                .unwrap_or(i64::MAX)
        };
        let done = match self.cp.phase {
            Phase::Tags => 0,
            Phase::Customers => chunk_users(self.cp.chunk),
            Phase::Vanished => users,
            Phase::Chats => users + chunk_users(self.cp.chunk),
            Phase::GoneChats | Phase::Done => users * 2,
        };
        (done, (users * 2).max(1))
    }

    async fn checkpoint(&mut self) -> Result<(), SyncError> {
        let (done, total) = self.units();
        let cursor = serde_json::to_string(&self.cp).unwrap_or_else(|_| "{}".to_owned());
        if !jobs::checkpoint(
            self.db,
            self.job_id,
            self.owner,
            LEASE_MS,
            &cursor,
            done,
            total,
        )
        .await?
        {
            return Err(SyncError::LeaseLost(self.job_id));
        }
        if let Some(leader) = self.leader {
            let _ = leader.acquire().await;
        }
        (self.progress)(&SyncProgress {
            job_id: self.job_id,
            phase: self.cp.phase.name(),
            done,
            total,
            summary: self.cp.summary.clone(),
        });
        Ok(())
    }

    /// Moves the cursor past a page: to WeCom's next cursor, or to the next chunk of users when
    /// WeCom says the chunk is done (an empty cursor).
    fn next_page(&mut self, next_cursor: String) {
        if next_cursor.is_empty() {
            self.cp.chunk += 1;
            self.cp.page_cursor.clear();
        } else {
            self.cp.page_cursor = next_cursor;
        }
    }

    fn call(&mut self) {
        self.cp.summary.api_calls += 1;
    }

    async fn steps(&mut self) -> Result<(), SyncError> {
        loop {
            match self.cp.phase {
                Phase::Tags => self.tags_and_users().await?,
                Phase::Customers => self.customers_page().await?,
                Phase::Vanished => self.vanished().await?,
                Phase::Chats => self.chats_step().await?,
                Phase::GoneChats => self.gone_chats().await?,
                Phase::Done => return Ok(()),
            }
            self.checkpoint().await?;
        }
    }

    async fn tags_and_users(&mut self) -> Result<(), SyncError> {
        self.call();
        let groups = self
            .wecom
            .client
            .get_corp_tag_list(&self.creds, &[], &[])
            .await?;
        let changes = crate::domain::customers::record::replace_tag_library(
            self.db,
            self.corp.as_str(),
            &wecom_records::tag_library(&groups),
            now_ms(),
        )
        .await?;
        self.cp.summary.tags = changes.tags as u64;
        self.call();
        let users = self.wecom.client.get_follow_user_list(&self.creds).await?;
        let now = now_ms();
        for u in &users {
            staff::upsert(
                self.db,
                self.corp.as_str(),
                &staff::StaffUpdate {
                    user_id: u.to_string(),
                    has_customer_contact: Some(true),
                    ..staff::StaffUpdate::default()
                },
                now,
            )
            .await?;
        }
        self.directory(&users).await?;
        self.cp.follow_users = users.to_vec();
        self.cp.summary.follow_users = users.len() as u64;
        self.cp.chunk = 0;
        self.cp.page_cursor.clear();
        self.cp.phase = Phase::Customers;
        Ok(())
    }

    /// Names, departments and leaders: `get_follow_user_list` gives userids only, and contact
    /// callbacks only what changes later. The department tree in one call, then `user/get` for
    /// each member we know by id only (a later run asks again only for new members). An app
    /// without directory access (48002, 60011) leaves the ids as they are.
    async fn directory(&mut self, users: &[UserId]) -> Result<(), SyncError> {
        let no_access = |e: &wecom_sdk::api::ApiError| matches!(e.errcode(), Some(48002 | 60011));
        self.call();
        let departments = match self.wecom.client.department_list(&self.creds, None).await {
            Ok(list) => list,
            Err(e) if no_access(&e) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let now = now_ms();
        for d in &departments {
            staff::upsert_department(
                self.db,
                self.corp.as_str(),
                d.id,
                Some(d.name.as_str()).filter(|n| !n.is_empty()),
                Some(d.parentid),
                Some(d.order),
                now,
            )
            .await?;
        }
        let unnamed = staff::unnamed(self.db, self.corp.as_str()).await?;
        for user in users.iter().filter(|u| unnamed.contains(u.as_str())) {
            self.call();
            let profile = match self.wecom.client.user_get(&self.creds, user).await {
                Ok(profile) => profile,
                Err(e) if no_access(&e) || e.errcode() == Some(60111) => continue,
                Err(e) => return Err(e.into()),
            };
            let update = wecom_records::with_profile(
                staff::StaffUpdate {
                    user_id: user.to_string(),
                    ..staff::StaffUpdate::default()
                },
                &profile,
            );
            staff::upsert(self.db, self.corp.as_str(), &update, now_ms()).await?;
        }
        Ok(())
    }

    fn chunk_users(&self) -> Option<Vec<UserId>> {
        let start = self.cp.chunk * USERS_PER_CALL;
        let ids = self.cp.follow_users.get(start..)?;
        if ids.is_empty() {
            return None;
        }
        Some(ids.iter().take(USERS_PER_CALL).cloned().collect())
    }

    async fn customers_page(&mut self) -> Result<(), SyncError> {
        let Some(users) = self.chunk_users() else {
            self.cp.phase = Phase::Vanished;
            return Ok(());
        };
        self.call();
        let page = self
            .wecom
            .client
            .batch_get_by_user(&self.creds, &users, &self.cp.page_cursor, ROWS_PER_PAGE)
            .await?;
        let now = now_ms();
        let rows: Vec<_> = page
            .external_contact_list
            .iter()
            .map(|row| {
                let ext = &row.external_contact.external_userid;
                (
                    wecom_records::customer_profile(&row.external_contact),
                    wecom_records::relation_from_follow_info(ext, &row.follow_info),
                )
            })
            .collect();
        // The page in one transaction: each change with its history entry, a sync killed in the
        // middle and resumed applies the page again (it is idempotent) and records nothing twice.
        let note = customers::ChangeNote {
            source: Source::Sync(self.job_id),
            detail: "repaired by reconciliation",
            at_ms: now,
        };
        let changes =
            customers::apply_page(self.db, self.corp, &rows, now, self.job_id, note).await?;
        // Each time the relations seen grow fourfold (from 400 on), the planner learns the new
        // size: the plans made while the tables were empty would scan them for every row.
        let (before, after) = (
            self.cp.summary.relations_seen,
            self.cp.summary.relations_seen + changes.len() as u64,
        );
        if (0..12).any(|k| (before..after).contains(&(400u64 << (2 * k)))) {
            self.db
                .refresh_statistics(&[
                    "follow_relation",
                    "customer",
                    "customer_search",
                    "relation_event",
                ])
                .await?;
        }
        for change in changes {
            self.cp.summary.relations_seen += 1;
            match change {
                RelationChange::Added => self.cp.summary.added += 1,
                RelationChange::Reactivated => self.cp.summary.reactivated += 1,
                RelationChange::Edited => self.cp.summary.edited += 1,
                RelationChange::Unchanged | RelationChange::StaleIgnored => {}
            }
        }
        self.next_page(page.next_cursor);
        Ok(())
    }

    async fn vanished(&mut self) -> Result<(), SyncError> {
        let now = now_ms();
        for user in self.cp.follow_users.clone() {
            let gone = customers::unseen_active_relations(
                self.db,
                self.corp,
                &user,
                self.job_id,
                self.started_ms,
            )
            .await?;
            for ext in gone {
                let Ok(ext) = ExternalUserId::try_from(ext) else {
                    continue;
                };
                let note = customers::ChangeNote {
                    source: Source::Sync(self.job_id),
                    detail: "relation gone from WeCom without a deletion event",
                    at_ms: now,
                };
                let ended = customers::end_relation(
                    self.db,
                    RelationKey::new(self.corp, &user, &ext),
                    EndReason::Vanished,
                    now,
                    note,
                )
                .await?;
                if ended {
                    self.cp.summary.vanished += 1;
                    crate::domain::alerts::relation_ended(
                        self.db,
                        self.wecom,
                        self.corp,
                        &user,
                        &ext,
                        &format!("sync:{}", self.job_id),
                        now,
                    )
                    .await?;
                }
            }
        }
        self.cp.chunk = 0;
        self.cp.page_cursor.clear();
        self.cp.phase = Phase::Chats;
        Ok(())
    }

    /// One step of the chat phase: read the queued chats, or list the next page.
    async fn chats_step(&mut self) -> Result<(), SyncError> {
        if !self.cp.chat_queue.is_empty() {
            // Up to 50 chats between checkpoints.
            let take = self.cp.chat_queue.len().min(50);
            let batch: Vec<(ChatId, i64)> = self.cp.chat_queue.drain(..take).collect();
            for (chat_id, status) in batch {
                let id = chat_id.clone();
                self.call();
                let chat = match self
                    .wecom
                    .client
                    .groupchat_get(&self.creds, &id, true)
                    .await
                {
                    Ok(chat) => chat,
                    // Dismissed between the listing and now.
                    Err(ApiError::Wecom { errcode: 90501, .. }) => continue,
                    Err(e) => {
                        self.cp.chat_queue.insert(0, (chat_id, status));
                        return Err(e.into());
                    }
                };
                let diff = group_chats::apply(
                    self.db,
                    self.corp,
                    &wecom_records::chat_snapshot(&chat),
                    Some(status),
                    Some(self.job_id),
                    now_ms(),
                )
                .await?;
                self.cp.summary.chats_seen += 1;
                if !diff.is_empty() {
                    self.cp.summary.chats_changed += 1;
                }
            }
            return Ok(());
        }
        let Some(owners) = self.chunk_users() else {
            self.cp.phase = Phase::GoneChats;
            return Ok(());
        };
        self.call();
        let page = self
            .wecom
            .client
            .groupchat_list(
                &self.creds,
                &GroupChatListRequest {
                    status_filter: 0,
                    owner_userids: owners,
                    cursor: self.cp.page_cursor.clone(),
                    limit: CHATS_PER_PAGE,
                },
            )
            .await?;
        self.cp.chat_queue = page
            .group_chat_list
            .iter()
            .map(|c| (c.chat_id.clone(), c.status))
            .collect();
        self.next_page(page.next_cursor);
        Ok(())
    }

    async fn gone_chats(&mut self) -> Result<(), SyncError> {
        let now = now_ms();
        for owner in self.cp.follow_users.clone() {
            let gone = group_chats::unseen_live_chats(
                self.db,
                self.corp,
                &owner,
                self.job_id,
                self.started_ms,
            )
            .await?;
            for chat_id in gone {
                let Ok(chat_id) = ChatId::try_from(chat_id) else {
                    continue;
                };
                group_chats::dismiss(self.db, self.corp, &chat_id, now).await?;
                self.cp.summary.chats_gone += 1;
            }
        }
        self.cp.phase = Phase::Done;
        Ok(())
    }
}

/// The most recent scheduled run time at or before `now_ms`: `daily_at_minute` after midnight
/// China Standard Time (UTC+8, no daylight saving).
pub fn last_scheduled_ms(now_ms: i64, daily_at_minute: u32) -> i64 {
    const DAY_MS: i64 = 86_400_000;
    const CST_OFFSET_MS: i64 = 8 * 3_600_000;
    let local = now_ms + CST_OFFSET_MS;
    let midnight_local = local - local.rem_euclid(DAY_MS);
    let mut at = midnight_local + i64::from(daily_at_minute) * 60_000 - CST_OFFSET_MS;
    if at > now_ms {
        at -= DAY_MS;
    }
    at
}

/// Whether a corp's sync is due: never finished, finished before the last scheduled time, or an
/// unfinished job waits to be resumed.
pub async fn is_due(db: &Db, corp_id: &str, daily_at_minute: u32) -> Result<bool, StoreError> {
    if jobs::resumable(db, corp_id, JOB_KIND).await?.is_some() {
        return Ok(true);
    }
    let last = jobs::last_finished_ms(db, corp_id, JOB_KIND).await?;
    Ok(last.is_none_or(|ms| ms < last_scheduled_ms(now_ms(), daily_at_minute)))
}

/// The scheduler `serve` runs: every minute, for each configured corp whose sync is due, takes the
/// corp's leader lock (so one instance of many runs it) and runs or resumes the sync.
pub async fn schedule(
    db: Db,
    wecom: Wecom,
    coord: std::sync::Arc<dyn wecom_sdk::Coordinator>,
    owner: String,
    settings: crate::platform::config::SyncSettings,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let daily_at_minute = settings.daily_at_minute;
    let mut tick =
        tokio::time::interval(std::time::Duration::from_secs(settings.check_interval_secs));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        for corp in wecom.corp_ids() {
            if *shutdown.borrow() {
                return;
            }
            let Ok(corp_id) = CorpId::try_from(corp.as_str()) else {
                continue;
            };
            if wecom.credentials(&corp, None).is_err() {
                continue;
            }
            match is_due(&db, &corp, daily_at_minute).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(corp_id = %corp, error = %e, "cannot tell whether the sync is due");
                    continue;
                }
            }
            let leader = LeaderLock::new(
                coord.clone(),
                &format!("sync:{corp}"),
                &owner,
                std::time::Duration::from_millis(u64::try_from(LEASE_MS).unwrap_or(120_000)),
            );
            match leader.acquire().await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(corp_id = %corp, error = %e, "leader lock unavailable");
                    continue;
                }
            }
            // Asked again under the lock: another instance may have finished the sync and let the
            // lock go since we asked, and would otherwise be followed by a second full sync.
            if !matches!(is_due(&db, &corp, daily_at_minute).await, Ok(true)) {
                let _ = leader.release().await;
                continue;
            }
            let outcome = tokio::select! {
                r = run(&db, &wecom, &corp_id, &owner, Some(&leader), &|_| {}) => Some(r),
                _ = shutdown.changed() => None,
            };
            match outcome {
                Some(Ok(_)) | None => {}
                Some(Err(SyncError::Busy { .. })) => {}
                Some(Err(e)) => {
                    tracing::warn!(corp_id = %corp, error = %e, "sync stopped; it resumes at the next tick")
                }
            }
            let _ = leader.release().await;
        }
    }
}
