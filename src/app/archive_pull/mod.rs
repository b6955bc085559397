//! Chat archive (会话内容存档): pulls every archived message of each configured corp through
//! WeCom's library, stores it (or records why it cannot be decrypted), feeds the content scanner
//! and downloads media.
//!
//! ```text
//! msgaudit_notify ─▶ notified_at_ms (any instance) ─┐
//! timer (poll_interval_secs) ───────────────────────┴▶ puller of the corp (leader lock)
//!    └▶ Supervisor ═pipes═▶ scrm archive-worker (library: GetChatData, DecryptData; our RSA)
//!    └▶ store_batch: messages + undecryptable + media rows + cursor, one transaction
//!    └▶ scan unscanned messages (alerts::scan_message) ─▶ alerts
//!    └▶ media downloads (chunks, resumable, md5 checked, deduplicated)
//! ```
//!
//! The library never runs in the server process: [`supervisor`] replaces the worker on a crash,
//! a hang or memory growth, and the cursor only moves past what is stored, so a worker lost
//! mid-batch loses nothing (the batch is asked for again).

pub mod child;
pub mod media;
pub mod supervisor;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;

use crate::domain::archive::proto::{Reply, Request};
use crate::domain::archive::store;
use crate::domain::rule_book::RuleBook;
use crate::domain::scan::RuleLibrary;
use crate::platform::config::{ArchiveSettings, Config, CorpArchive};
use crate::platform::coord::LeaderLock;
use crate::platform::db::{Db, StoreError, now_ms};
use crate::platform::wecom::Wecom;
use supervisor::{CallError, Supervisor, WorkerSpec};

/// The archive of every configured corp, as `serve` runs it.
pub struct Archive {
    db: Db,
    wecom: Wecom,
    rules: RuleBook,
    settings: ArchiveSettings,
    corps: Vec<(String, CorpArchive)>,
    wakers: HashMap<String, Arc<Notify>>,
    program: PathBuf,
    media_dir: PathBuf,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive")
            .field(
                "corps",
                &self.corps.iter().map(|(c, _)| c).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Why a pull stopped.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The worker or the library failed.
    #[error(transparent)]
    Call(#[from] CallError),
    /// WeCom answered an errcode inside the batch (301042 IP not allowed, …).
    #[error("GetChatData errcode {errcode}: {errmsg}")]
    Wecom {
        /// The errcode.
        errcode: i64,
        /// The errmsg.
        errmsg: String,
    },
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The worker answered something else than a batch.
    #[error("unexpected answer from the archive worker")]
    Protocol,
}

/// What a pull did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PullReport {
    /// `GetChatData` calls.
    pub calls: u64,
    /// New messages stored.
    pub messages: u64,
    /// Records seen again (already stored).
    pub duplicates: u64,
    /// Records recorded as undecryptable.
    pub undecryptable: u64,
    /// The cursor afterwards.
    pub seq: i64,
}

impl Archive {
    /// The archive for `config`, scanning with each corp's library of `rules`: `None` when no
    /// library is configured or no corp uses it.
    pub fn new(config: &Config, db: Db, wecom: Wecom, rules: RuleBook) -> Option<Self> {
        config.archive.library.as_ref()?;
        let corps: Vec<(String, CorpArchive)> = config
            .corps
            .iter()
            .filter_map(|c| c.archive.clone().map(|a| (c.corp_id.to_string(), a)))
            .collect();
        if corps.is_empty() {
            return None;
        }
        let wakers = corps
            .iter()
            .map(|(c, _)| (c.clone(), Arc::new(Notify::new())))
            .collect();
        let program = config
            .archive
            .worker_program
            .clone()
            .or_else(|| std::env::current_exe().ok())
            .unwrap_or_else(|| PathBuf::from("scrm"));
        Some(Self {
            db,
            wecom,
            rules,
            media_dir: media_dir(config),
            settings: config.archive.clone(),
            corps,
            wakers,
            program,
        })
    }

    /// The corps whose archive is pulled.
    pub fn corp_ids(&self) -> Vec<String> {
        self.corps.iter().map(|(c, _)| c.clone()).collect()
    }

    /// Wakes the corp's puller on this instance (a `msgaudit_notify` arrived here).
    pub fn wake(&self, corp_id: &str) {
        if let Some(w) = self.wakers.get(corp_id) {
            w.notify_one();
        }
    }

    /// A supervisor for the corp's worker.
    pub fn supervisor(&self, corp_id: &str) -> Option<Supervisor> {
        let (_, corp) = self.corps.iter().find(|(c, _)| c == corp_id)?;
        Some(Supervisor::new(
            worker_spec(&self.settings, &self.program, corp_id, corp),
            Some(self.db.clone()),
        ))
    }

    /// Runs one puller per corp until `stop` turns true.
    pub fn spawn(
        self: Arc<Self>,
        coord: Arc<dyn wecom_sdk::Coordinator>,
        owner: String,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        self.corp_ids()
            .into_iter()
            .map(|corp| {
                let me = Arc::clone(&self);
                let (coord, owner, stop) = (coord.clone(), owner.clone(), stop.clone());
                tokio::spawn(async move { me.run_corp(&corp, coord, &owner, stop).await })
            })
            .collect()
    }

    async fn run_corp(
        &self,
        corp_id: &str,
        coord: Arc<dyn wecom_sdk::Coordinator>,
        owner: &str,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let Some(mut sup) = self.supervisor(corp_id) else {
            return;
        };
        let waker = self.wakers.get(corp_id).cloned().unwrap_or_default();
        let ttl = Duration::from_secs(u64::from(self.settings.call_timeout_secs) * 2 + 60);
        let lock = LeaderLock::new(coord, &format!("archive:{corp_id}"), owner, ttl);
        let interval = Duration::from_secs(self.settings.poll_interval_secs);
        let mut next_round = tokio::time::Instant::now();
        let mut retried_undecryptable = false;
        let mut failures: u32 = 0;
        loop {
            // A round is due when woken here, when another instance recorded a notify, or when
            // the timer (the poll interval, shorter after a failure) has run out.
            let due = tokio::time::Instant::now() >= next_round
                || store::notified_since_last_pull(&self.db, corp_id).await;
            if !due {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    () = waker.notified() => {}
                    () = tokio::time::sleep(Duration::from_secs(2)) => continue,
                }
            }
            if *stop.borrow() {
                break;
            }
            next_round = tokio::time::Instant::now() + interval;
            match lock.acquire().await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(corp_id, error = %e, "archive leader lock unavailable");
                    continue;
                }
            }
            if !retried_undecryptable {
                match self.retry_undecryptable(corp_id, &mut sup).await {
                    Ok(n) => {
                        retried_undecryptable = true;
                        if n > 0 {
                            tracing::info!(
                                corp_id,
                                decrypted = n,
                                "recorded undecryptable messages decrypted with the keys now configured"
                            );
                        }
                    }
                    Err(e) => {
                        tracing::warn!(corp_id, error = %e, "cannot retry undecryptable records")
                    }
                }
            }
            let pulled = self.pull(corp_id, &mut sup, &lock).await;
            if let Err(e) = &pulled {
                failures = failures.saturating_add(1);
                tracing::warn!(corp_id, error = %e, failures, "archive pull failed; the cursor stays, the next round asks again");
                let _ = store::record_error(&self.db, corp_id, &e.to_string(), now_ms()).await;
            } else {
                failures = 0;
            }
            if let Err(e) = self.scan_pending(corp_id).await {
                tracing::warn!(corp_id, error = %e, "scanning archived messages failed");
            }
            if self.settings.media {
                let downloaded = media::download_pending(
                    &self.db,
                    corp_id,
                    &mut sup,
                    &self.media_dir,
                    &self.settings,
                    Duration::from_secs(30),
                )
                .await;
                if let Err(e) = downloaded {
                    tracing::warn!(corp_id, error = %e, "media download failed");
                }
            }
            if let Err(e) = self.check_stall(corp_id).await {
                tracing::warn!(corp_id, error = %e, "cannot check the archive for a stall");
            }
            if failures > 0 {
                // Retry soon, then less often, never later than the poll interval.
                let wait = Duration::from_secs(2u64.saturating_pow(failures.min(6)));
                next_round = tokio::time::Instant::now() + wait.min(interval);
            }
        }
        sup.shutdown().await;
        let _ = lock.release().await;
    }

    /// Pulls until caught up (a batch shorter than the limit).
    pub async fn pull(
        &self,
        corp_id: &str,
        sup: &mut Supervisor,
        lock: &LeaderLock,
    ) -> Result<PullReport, PullError> {
        let report = pull_until_caught_up(&self.db, corp_id, sup, &self.settings, Some(lock)).await;
        update_gauges(&self.db, corp_id).await;
        report
    }

    /// Scans stored messages not scanned yet (new ones, and any left by a crash).
    pub async fn scan_pending(&self, corp_id: &str) -> Result<u64, StoreError> {
        let library = self.rules.lookup(corp_id).await?;
        scan_pending(&self.db, &self.wecom, &library, corp_id).await
    }

    /// Tries the recorded undecryptable records again with the worker's keys.
    pub async fn retry_undecryptable(
        &self,
        corp_id: &str,
        sup: &mut Supervisor,
    ) -> Result<u64, PullError> {
        retry_undecryptable(&self.db, corp_id, sup, self.settings.media_max_bytes).await
    }

    /// Raises an operator alert when no pull succeeded for `stall_alert_secs` (once per stall).
    async fn check_stall(&self, corp_id: &str) -> Result<(), StoreError> {
        let now = now_ms();
        let c = store::cursor(&self.db, corp_id, now).await?;
        let since = c.last_success_at_ms.or(c.last_pull_at_ms);
        let Some(since) = since else { return Ok(()) };
        let limit_ms =
            i64::try_from(self.settings.stall_alert_secs).unwrap_or(i64::MAX / 2000) * 1000;
        if now - since < limit_ms || c.stall_alerted_at_ms.is_some() {
            return Ok(());
        }
        let Some(ctx) = crate::domain::alerts::Ctx::of(&self.wecom, corp_id) else {
            return Ok(());
        };
        let hours = (now - since) / 3_600_000;
        let detail = format!(
            "已有 {hours} 小时未成功拉取会话存档（企业微信只保留约 5 天）。最近的错误：{}",
            c.last_error.as_deref().unwrap_or("无")
        );
        let evidence = crate::domain::alerts::Evidence {
            corp_id,
            staff_user_id: "",
            external_user_id: None,
            source_ref: format!("archive_stall:{corp_id}:{since}"),
            at_ms: now,
            detail: serde_json::json!({
                "last_success_at_ms": c.last_success_at_ms,
                "last_error": c.last_error,
                "seq": c.seq,
            }),
        };
        let trigger = crate::domain::alerts::Trigger::ArchiveStalled {
            detail: &detail,
            recipients: &self.settings.operators,
        };
        crate::domain::alerts::raise(&self.db, ctx, &trigger, &evidence, now).await?;
        store::record_stall_alert(&self.db, corp_id, now).await?;
        metrics::counter!("scrm_archive_stall_alerts_total", "corp_id" => corp_id.to_owned())
            .increment(1);
        tracing::error!(corp_id, hours, "chat archive stalled: operators alerted");
        Ok(())
    }
}

/// Where media goes: `[archive] media_dir`, else `{data_dir}/archive-media`.
pub fn media_dir(config: &Config) -> PathBuf {
    config
        .archive
        .media_dir
        .clone()
        .unwrap_or_else(|| config.data_dir.join("archive-media"))
}

/// The worker spec of a corp.
pub fn worker_spec(
    settings: &ArchiveSettings,
    program: &std::path::Path,
    corp_id: &str,
    corp: &CorpArchive,
) -> WorkerSpec {
    WorkerSpec {
        corp_id: corp_id.to_owned(),
        program: program.to_path_buf(),
        hello: Request::Hello {
            library: settings
                .library
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            corp_id: corp_id.to_owned(),
            secret: corp.secret.expose().clone(),
            keys: corp
                .keys
                .iter()
                .map(|(v, pem)| (*v, pem.expose().clone()))
                .collect(),
            proxy: settings.proxy.clone(),
            proxy_password: settings
                .proxy_password
                .as_ref()
                .map(|p| p.expose().clone())
                .unwrap_or_default(),
        },
        call_timeout_secs: i32::try_from(settings.call_timeout_secs).unwrap_or(30),
        memory_limit_kib: settings.memory_limit_mb.saturating_mul(1024),
        backoff_max: Duration::from_secs(settings.restart_backoff_max_secs),
        env: settings.worker_env.clone(),
    }
}

/// Pulls batches from the stored cursor until one comes back shorter than the limit. Each batch
/// is stored with the cursor move in one transaction; a failure leaves the cursor where the last
/// stored batch put it.
#[tracing::instrument(name = "archive_pull", skip_all, fields(corp_id = %corp_id))]
pub async fn pull_until_caught_up(
    db: &Db,
    corp_id: &str,
    sup: &mut Supervisor,
    settings: &ArchiveSettings,
    lock: Option<&LeaderLock>,
) -> Result<PullReport, PullError> {
    let mut report = PullReport::default();
    loop {
        let started = now_ms();
        let cursor = store::cursor(db, corp_id, started).await?;
        let request = Request::Pull {
            seq: u64::try_from(cursor.seq).unwrap_or(0),
            limit: settings.batch_limit,
            timeout_secs: i32::try_from(settings.call_timeout_secs).unwrap_or(30),
        };
        let timer = std::time::Instant::now();
        let reply = sup.call(&request).await;
        metrics::histogram!("scrm_archive_pull_seconds").record(timer.elapsed().as_secs_f64());
        report.calls += 1;
        let items = match reply? {
            Reply::Batch {
                errcode, errmsg, ..
            } if errcode != 0 => return Err(PullError::Wecom { errcode, errmsg }),
            Reply::Batch { items, .. } => items,
            _ => return Err(PullError::Protocol),
        };
        let full = items.len() >= settings.batch_limit as usize;
        if items.is_empty() {
            store::record_caught_up(db, corp_id, now_ms()).await?;
            report.seq = cursor.seq;
            return Ok(report);
        }
        match store::store_batch(
            db,
            corp_id,
            cursor.seq,
            &items,
            settings.media_max_bytes,
            now_ms(),
        )
        .await
        {
            Ok(stored) => {
                report.messages += stored.messages;
                report.duplicates += stored.duplicates;
                report.undecryptable += stored.undecryptable;
                report.seq = stored.seq;
            }
            Err(store::StoreBatchError::CursorMoved { expected }) => {
                // Another puller stored this batch: start again from where it left the cursor.
                tracing::info!(
                    corp_id,
                    expected,
                    "archive cursor moved under this pull; continuing from the stored cursor"
                );
            }
            Err(store::StoreBatchError::Store(e)) => return Err(e.into()),
        }
        if let Some(lock) = lock
            && !matches!(lock.acquire().await, Ok(true))
        {
            return Ok(report);
        }
        if !full {
            return Ok(report);
        }
    }
}

/// Sends the open undecryptable records to the worker again (its keys may now include the right
/// one) and stores what decrypts. Returns how many were decrypted.
pub async fn retry_undecryptable(
    db: &Db,
    corp_id: &str,
    sup: &mut Supervisor,
    media_max_bytes: u64,
) -> Result<u64, PullError> {
    let mut after = 0;
    let mut decrypted = 0;
    loop {
        let rows = store::open_records(db, corp_id, after, 500).await?;
        let Some((last, _)) = rows.last() else {
            return Ok(decrypted);
        };
        after = *last;
        let records = rows.into_iter().map(|(_, r)| r).collect();
        let Reply::Batch { items, .. } = sup.call(&Request::Redecrypt { records }).await? else {
            return Err(PullError::Protocol);
        };
        let stored =
            store::store_redecrypted(db, corp_id, &items, media_max_bytes, now_ms()).await?;
        decrypted += stored.messages;
    }
}

/// Scans stored, unscanned messages of a corp in id order and marks them scanned. A page of
/// messages is scanned against an in-memory copy of the senders' previous messages, and the
/// window and the `scanned` marks are written once per page (one commit, not three per message);
/// only messages with a hit touch the alerts. A crash mid-page scans the page again, which raises
/// nothing twice (evidence is unique per message).
pub async fn scan_pending(
    db: &Db,
    wecom: &Wecom,
    rules: &RuleLibrary,
    corp_id: &str,
) -> Result<u64, StoreError> {
    type Key = (String, String);
    let mut scanned = 0;
    loop {
        let rows = store::unscanned_page(db, corp_id).await?;
        let (Some(first), Some(last)) = (rows.first().map(|r| r.0), rows.last().map(|r| r.0))
        else {
            return Ok(scanned);
        };
        let ctx = crate::domain::alerts::Ctx::of(wecom, corp_id);
        let mut window: HashMap<Key, Option<(String, i64)>> = HashMap::new();
        let mut touched: HashMap<Key, (String, i64)> = HashMap::new();
        // Per conversation, its latest messages: the other party's request a reply answers.
        let mut tails: HashMap<String, crate::domain::alerts::ConversationTail> = HashMap::new();
        let mut owners: HashMap<String, Option<String>> = HashMap::new();
        for (_, msgid, msgtype, sender, kind, room, at, staff, ext, text) in rows {
            let Some(ctx) = ctx else { continue };
            if kind == "robot" {
                continue;
            }
            let owner = match (&room, &staff) {
                (Some(room), None) => {
                    if !owners.contains_key(room) {
                        let ids = (
                            wecom_sdk::CorpId::try_from(corp_id),
                            wecom_sdk::ChatId::try_from(room.as_str()),
                        );
                        let found = match ids {
                            (Ok(corp), Ok(chat)) => {
                                crate::domain::group_chats::get(db, &corp, &chat)
                                    .await?
                                    .map(|chat| chat.owner_user_id.to_string())
                            }
                            // Not ids WeCom hands out: no chat of ours.
                            _ => None,
                        };
                        owners.insert(room.clone(), found);
                    }
                    owners.get(room).cloned().flatten()
                }
                _ => None,
            };
            let Some(staff_user) = staff.or(owner).filter(|s| !s.is_empty()) else {
                continue;
            };
            let conversation = match (&room, &ext) {
                (Some(room), _) => format!("room:{room}"),
                (None, Some(ext)) => format!("single:{staff_user}:{ext}"),
                (None, None) => format!("single:{sender}"),
            };
            let m = crate::domain::alerts::Scanned {
                corp_id,
                conversation,
                sender_id: &sender,
                sender: if kind == "customer" {
                    crate::domain::scan::Sender::Customer
                } else {
                    crate::domain::scan::Sender::Staff
                },
                staff_user_id: &staff_user,
                external_user_id: ext.as_deref(),
                text: text.as_deref().unwrap_or(""),
                // The stored msgtype is the message's `scan_type` (red packets, cards and the rest
                // are named by their msgtype).
                msg_type: Some(&msgtype),
                source_ref: format!("archive:{msgid}"),
                at_ms: at,
            };
            let key: Key = (m.conversation.clone(), sender.clone());
            if !window.contains_key(&key) {
                let entry = crate::domain::alerts::window_entry(
                    db,
                    crate::domain::alerts::WindowKey::of(&m),
                )
                .await?;
                window.insert(key.clone(), entry);
            }
            if !tails.contains_key(&m.conversation) {
                let tail =
                    crate::domain::alerts::conversation_tail(db, corp_id, &m.conversation).await?;
                tails.insert(m.conversation.clone(), tail);
            }
            let own = window.get(&key).cloned().flatten();
            let before = crate::domain::alerts::Before::of(
                ctx,
                &m,
                own.clone(),
                tails.get(&m.conversation).unwrap_or(&Default::default()),
            );
            let decision = crate::domain::alerts::scan_text(rules, &m, &before);
            let result = crate::domain::alerts::judged(ctx, rules, &m, &before, decision).await;
            if let Some(tail) = crate::domain::alerts::window_tail(&m) {
                if own.is_none_or(|(_, prev_at)| prev_at <= at) {
                    window.insert(key.clone(), Some((tail.clone(), at)));
                    touched.insert(key, (tail.clone(), at));
                }
                if let Some(conversation) = tails.get_mut(&m.conversation) {
                    conversation.push(&sender, tail, at);
                }
            }
            if !result.hits.is_empty() {
                crate::domain::alerts::raise_hits(db, ctx, rules, &m, &before, &result, now_ms())
                    .await?;
            }
        }
        let mut tx = db.begin().await?;
        for ((conversation, sender), (tail, at)) in &touched {
            let key = crate::domain::alerts::WindowKey {
                corp_id,
                conversation,
                sender_id: sender,
            };
            crate::domain::alerts::keep_window(&mut tx, key, tail, *at).await?;
        }
        let marked = store::mark_scanned_in(&mut tx, corp_id, first, last).await?;
        tx.commit().await?;
        scanned += marked;
    }
}

/// The status of a corp's archive, as the CLI, the API and `/metrics` show it.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The cursor row.
    #[serde(flatten)]
    pub cursor: store::CursorRow,
    /// Counts.
    #[serde(flatten)]
    pub counts: store::Counts,
    /// `newest_seen_seq - seq`.
    pub lag_seq: i64,
    /// Age of the newest stored message, seconds.
    pub newest_message_age_secs: Option<i64>,
}

/// The status of every corp that has a cursor row.
pub async fn status(db: &Db) -> Result<Vec<Status>, StoreError> {
    let mut out = Vec::new();
    for cursor in store::cursors(db).await? {
        out.push(status_from(db, cursor).await?);
    }
    Ok(out)
}

/// The status of one corp (`None` before its first pull).
pub async fn corp_status(db: &Db, corp_id: &str) -> Result<Option<Status>, StoreError> {
    match store::find_cursor(db, corp_id).await? {
        Some(cursor) => Ok(Some(status_from(db, cursor).await?)),
        None => Ok(None),
    }
}

async fn status_from(db: &Db, cursor: store::CursorRow) -> Result<Status, StoreError> {
    let counts = store::counts(db, &cursor.corp_id).await?;
    let now = now_ms();
    Ok(Status {
        lag_seq: (cursor.newest_seen_seq - cursor.seq).max(0),
        newest_message_age_secs: cursor.newest_msg_time_ms.map(|t| ((now - t) / 1000).max(0)),
        cursor,
        counts,
    })
}

async fn update_gauges(db: &Db, corp_id: &str) {
    let Ok(Some(s)) = corp_status(db, corp_id).await else {
        return;
    };
    let corp = corp_id.to_owned();
    metrics::gauge!("scrm_archive_seq", "corp_id" => corp.clone()).set(s.cursor.seq as f64);
    metrics::gauge!("scrm_archive_lag_seq", "corp_id" => corp.clone()).set(s.lag_seq as f64);
    metrics::gauge!("scrm_archive_undecryptable", "corp_id" => corp.clone())
        .set(s.counts.undecryptable_open as f64);
    if let Some(age) = s.newest_message_age_secs {
        metrics::gauge!("scrm_archive_newest_message_age_seconds", "corp_id" => corp.clone())
            .set(age as f64);
    }
    metrics::gauge!("scrm_archive_worker_restarts", "corp_id" => corp)
        .set(s.cursor.worker_restarts as f64);
}
