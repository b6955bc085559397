//! What a stored callback does: the inbox workers hand each event here, and it updates customers,
//! follow relations, staff, departments, the tag library and group chats. Every step is
//! idempotent (upserts keyed by WeCom ids, history entries de-duplicated by inbox row), so a retry,
//! a replay or WeCom's own duplicate delivery changes nothing twice.

use std::sync::Arc;
use std::time::Duration;

use wecom_sdk::api::ApiError;
use wecom_sdk::event::{
    AppMessage, CallbackEvent, ContactEvent, ExternalChatEvent, ExternalContactEvent, StaffChange,
    TransferFailReason,
};
use wecom_sdk::{ChatId, CorpId, ExternalUserId, UserId, parse_event};

use crate::app::wecom_records;
use crate::domain::customers::record::{self, RecordError, Trigger};
use crate::domain::customers::{
    self, EndReason, RelationChange, RelationKey, RelationStatus, Source,
};
use crate::domain::group_chats::ChatSnapshot;
use crate::domain::rule_book::RuleBook;
use crate::domain::scan::RuleLibrary;
use crate::domain::{group_chats, staff};
use crate::pipeline::inbox::ClaimedEvent;
use crate::pipeline::worker::{HandlerError, InboxHandler};
use crate::platform::config::ReminderSettings;
use crate::platform::db::{Db, StoreError, now_ms};
use crate::platform::wecom::{self, NoSecret, Wecom};

/// The domain handler of inbox events.
#[derive(Debug, Clone)]
pub struct EventProcessor {
    db: Db,
    wecom: Wecom,
    reminders: ReminderSettings,
    rules: RuleBook,
    archive: Option<Arc<crate::app::archive_pull::Archive>>,
}

impl EventProcessor {
    /// A processor writing to `db` and reading WeCom through `wecom`, with the default follow-up
    /// reminders of `[reminders]`.
    pub fn new(db: Db, wecom: Wecom) -> Self {
        Self {
            rules: RuleBook::new(db.clone(), Arc::new(RuleLibrary::default_library())),
            db,
            wecom,
            reminders: ReminderSettings::default(),
            archive: None,
        }
    }

    /// The same, waking this instance's archive pullers on `msgaudit_notify`.
    pub fn with_archive(mut self, archive: Option<Arc<crate::app::archive_pull::Archive>>) -> Self {
        self.archive = archive;
        self
    }

    /// The same, scanning app messages with each corp's library of `rules` instead of the
    /// bundled one.
    pub fn with_rules(mut self, rules: RuleBook) -> Self {
        self.rules = rules;
        self
    }

    /// The same, creating `settings.after_add_days` reminders for every new relation.
    pub fn with_reminders(mut self, settings: ReminderSettings) -> Self {
        self.reminders = settings;
        self
    }
}

impl From<StoreError> for HandlerError {
    fn from(e: StoreError) -> Self {
        HandlerError::Retry {
            reason: format!("database: {e} ({:?})", std::error::Error::source(&e)),
            after: None,
        }
    }
}

impl From<NoSecret> for HandlerError {
    fn from(e: NoSecret) -> Self {
        // Fixable by configuration; retried (slowly) and replayable once dead.
        HandlerError::Retry {
            reason: e.to_string(),
            after: Some(Duration::from_secs(60)),
        }
    }
}

/// The departments of `departments` whose `is_leader_in_dept` flag is set (the lists are parallel).
fn led(departments: impl Iterator<Item = i64>, flags: impl Iterator<Item = bool>) -> Vec<i64> {
    departments
        .zip(flags)
        .filter_map(|(d, leader)| leader.then_some(d))
        .collect()
}

/// A rule that could not be applied: retried (the database is the only thing that can fail).
fn record_failure(e: RecordError) -> HandlerError {
    match e {
        RecordError::Store(e) => e.into(),
        e => HandlerError::retry(format!("auto-tagging: {e}")),
    }
}

/// How a WeCom error ends an attempt.
fn api_failure(what: &str, e: &ApiError) -> HandlerError {
    let reason = format!("{what}: {e}");
    match e {
        ApiError::RateLimited { retry_after, .. } => HandlerError::Defer {
            reason,
            after: *retry_after,
        },
        // The id is not one WeCom knows in this corp: no retry can help.
        ApiError::Wecom {
            errcode: 40096 | 40003 | 60111,
            ..
        } => HandlerError::Permanent { reason },
        // 84061 right after an add is WeCom's eventual consistency; anything else may pass too.
        _ => HandlerError::Retry {
            reason,
            after: None,
        },
    }
}

#[async_trait::async_trait]
impl InboxHandler for EventProcessor {
    async fn handle(&self, ev: &ClaimedEvent) -> Result<(), HandlerError> {
        let parsed = parse_event(&ev.body).map_err(|e| HandlerError::Permanent {
            reason: format!("stored event does not parse: {e}"),
        })?;
        let event_ms = parsed
            .header
            .create_time
            .and_then(wecom::secs_to_ms)
            .unwrap_or(ev.received_at_ms);
        let corp = CorpId::try_from(ev.corp_id.as_str()).map_err(|e| HandlerError::Permanent {
            reason: format!("stored event's corp: {e}"),
        })?;
        let ctx = Ctx {
            p: self,
            corp: &corp,
            app: &ev.app,
            source: Source::Callback(ev.id),
            event_ms,
        };
        match parsed.event {
            CallbackEvent::ExternalContact(e) => ctx.external_contact(e).await,
            CallbackEvent::ExternalChat(e) => ctx.external_chat(e).await,
            CallbackEvent::ExternalTag(_) => ctx.refresh_tags().await,
            CallbackEvent::Contact(e) => ctx.contact(e).await,
            CallbackEvent::Message {
                from,
                message: AppMessage::Text { content },
            } => {
                let agent = parsed.header.agent_id.as_deref().unwrap_or("");
                ctx.app_text(&from, agent, content.as_deref().unwrap_or(""))
                    .await
            }
            // New archived messages exist: recorded for the corp's puller on whichever instance
            // leads it (coalesced: one pull catches up however many notices came), and this
            // instance's puller woken.
            CallbackEvent::MsgAuditNotify => {
                crate::domain::archive::store::record_notify(
                    &self.db,
                    &ev.corp_id,
                    crate::platform::db::now_ms(),
                )
                .await?;
                if let Some(archive) = &self.archive {
                    archive.wake(&ev.corp_id);
                }
                Ok(())
            }
            // Other app messages and menu events are handled by later features; storing them is
            // all intake promises, so they are done here.
            CallbackEvent::Message { .. }
            | CallbackEvent::AppEvent { .. }
            | CallbackEvent::Unknown { .. } => Ok(()),
        }
    }
}

struct Ctx<'a> {
    p: &'a EventProcessor,
    corp: &'a CorpId,
    app: &'a str,
    source: Source,
    event_ms: i64,
}

impl Ctx<'_> {
    fn db(&self) -> &Db {
        &self.p.db
    }

    async fn record(
        &self,
        user: &UserId,
        ext: &ExternalUserId,
        change: &str,
        detail: &str,
    ) -> Result<(), HandlerError> {
        customers::record_event(
            self.db(),
            RelationKey::new(self.corp, user, ext),
            change,
            self.source,
            detail,
            self.event_ms,
        )
        .await?;
        Ok(())
    }

    async fn external_contact(&self, e: ExternalContactEvent) -> Result<(), HandlerError> {
        let (user, ext) = e.relation();
        let (user, ext) = (user.clone(), ext.clone());
        match e {
            ExternalContactEvent::Added(_)
            | ExternalContactEvent::HalfAdded(_)
            | ExternalContactEvent::Edited(_)
            | ExternalContactEvent::MsgAuditApproved(_) => self.refresh_customer(&user, &ext).await,
            ExternalContactEvent::StaffDeletedCustomer(d) => {
                if d.is_by_transfer() {
                    crate::app::transfers::engine::handed_over(
                        self.db(),
                        RelationKey::new(self.corp, &user, &ext),
                        self.event_ms,
                    )
                    .await?;
                    return self.end(&user, &ext, EndReason::Transferred).await;
                }
                self.end(&user, &ext, EndReason::DeletedByStaff).await
            }
            ExternalContactEvent::CustomerDeletedStaff(_) => {
                self.end(&user, &ext, EndReason::DeletedByCustomer).await
            }
            ExternalContactEvent::TransferFailed(f) => {
                let reason = match &f.fail_reason {
                    Some(TransferFailReason::CustomerRefused) => "customer_refused",
                    Some(TransferFailReason::CustomerLimitExceed) => "customer_limit_exceed",
                    Some(TransferFailReason::Other(other)) => other.as_str(),
                    None => "",
                };
                crate::app::transfers::engine::transfer_failed(
                    self.db(),
                    RelationKey::new(self.corp, &user, &ext),
                    reason,
                )
                .await?;
                self.record(&user, &ext, "transfer_failed", reason).await
            }
        }
    }

    /// Reads the customer and every follow relation WeCom shows, and applies them.
    async fn refresh_customer(
        &self,
        user: &UserId,
        ext: &ExternalUserId,
    ) -> Result<(), HandlerError> {
        let creds = self
            .p
            .wecom
            .credentials(self.corp.as_str(), Some(self.app))?;
        let detail = match self
            .p
            .wecom
            .client
            .get_external_contact_all(&creds, ext)
            .await
        {
            Ok(detail) => detail,
            // Not a contact (any more): fine if we already know the relation ended since.
            Err(e) if e.errcode() == Some(84061) && self.relation_ended(user, ext).await? => {
                return Ok(());
            }
            Err(e) => return Err(api_failure("externalcontact/get", &e)),
        };
        let now = now_ms();
        customers::upsert_customer(
            self.db(),
            self.corp.as_str(),
            &wecom_records::customer_profile(&detail.external_contact),
            now,
        )
        .await?;
        let mut saw_event_user = false;
        for f in &detail.follow_user {
            let snapshot = wecom_records::relation_from_follow_user(ext, f);
            saw_event_user |= snapshot.user_id == *user;
            // The change and its history entry are one transaction.
            let note = customers::ChangeNote {
                source: self.source,
                detail: "",
                at_ms: self.event_ms,
            };
            let change =
                customers::apply_relation_noted(self.db(), self.corp, &snapshot, now, None, note)
                    .await?;
            let added = match change {
                RelationChange::Added | RelationChange::Reactivated => true,
                // A retry of this event, whose earlier attempt stored the addition and stopped
                // (killed, lease lost) before what follows it: finish that now (it is idempotent).
                RelationChange::Unchanged | RelationChange::Edited => {
                    self.added_by_this_event(&snapshot).await?
                }
                RelationChange::StaleIgnored => false,
            };
            if added {
                self.relation_added(&snapshot).await?;
            }
        }
        if !saw_event_user && !self.relation_ended(user, ext).await? {
            // WeCom does not (yet, or any more) show this staff member: try again later; a relation
            // that never appears ends as a dead letter with this reason.
            return Err(HandlerError::Retry {
                reason: format!("externalcontact/get does not list follow user {user} yet"),
                after: None,
            });
        }
        Ok(())
    }

    /// Whether this event's history holds the addition of the relation (an earlier attempt made
    /// it).
    async fn added_by_this_event(
        &self,
        s: &customers::RelationSnapshot,
    ) -> Result<bool, HandlerError> {
        let relation = RelationKey::new(self.corp, &s.user_id, &s.external_user_id);
        for change in [RelationChange::Added, RelationChange::Reactivated] {
            let Some(label) = change.history_label() else {
                continue;
            };
            if customers::changed_by(self.db(), relation, label, self.source).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// A customer was added (or re-added): the default follow-up reminders, and channel rules by
    /// the 联系我 `state` it came through.
    async fn relation_added(&self, s: &customers::RelationSnapshot) -> Result<(), HandlerError> {
        let relation = RelationKey::new(self.corp, &s.user_id, &s.external_user_id);
        crate::app::transfers::engine::relation_added(
            self.db(),
            relation,
            s.added_at_ms.unwrap_or(self.event_ms),
        )
        .await?;
        crate::domain::followup::create_default_reminders(
            self.db(),
            self.corp,
            &s.user_id,
            &s.external_user_id,
            s.added_at_ms.unwrap_or_else(now_ms),
            &self.p.reminders,
        )
        .await?;
        if let Some(state) = s.state.as_deref().filter(|v| !v.is_empty()) {
            record::apply_rules(self.db(), relation, Trigger::Channel, state, now_ms())
                .await
                .map_err(record_failure)?;
        }
        Ok(())
    }

    /// Customers who joined a group chat: group rules on their relation with the chat's owner, or
    /// on all their relations when the owner does not follow them.
    async fn customers_joined(
        &self,
        chat: &ChatSnapshot,
        joined: &[String],
    ) -> Result<(), HandlerError> {
        let customers = chat
            .members
            .iter()
            .filter(|m| m.member_type == 2 && joined.contains(&m.member_id));
        for m in customers {
            let Ok(ext) = ExternalUserId::try_from(m.member_id.as_str()) else {
                continue;
            };
            let relations = customers::relations_of_customer(self.db(), self.corp, &ext).await?;
            let active: Vec<_> = relations
                .iter()
                .filter(|r| r.status == RelationStatus::Active)
                .collect();
            let owners: Vec<_> = active
                .iter()
                .filter(|r| r.user_id == chat.owner_user_id)
                .collect();
            let targets = if owners.is_empty() {
                active.iter().collect()
            } else {
                owners
            };
            for r in targets {
                record::apply_rules(
                    self.db(),
                    RelationKey::new(self.corp, &r.user_id, &r.external_user_id),
                    Trigger::GroupJoin,
                    chat.chat_id.as_str(),
                    now_ms(),
                )
                .await
                .map_err(record_failure)?;
            }
        }
        Ok(())
    }

    /// Whether we hold this relation as ended (a deletion was processed before this event).
    async fn relation_ended(
        &self,
        user: &UserId,
        ext: &ExternalUserId,
    ) -> Result<bool, HandlerError> {
        Ok(
            customers::get_relation(self.db(), RelationKey::new(self.corp, user, ext))
                .await?
                .is_some_and(|r| r.status != RelationStatus::Active),
        )
    }

    async fn end(
        &self,
        user: &UserId,
        ext: &ExternalUserId,
        reason: EndReason,
    ) -> Result<(), HandlerError> {
        let note = customers::ChangeNote {
            source: self.source,
            detail: "",
            at_ms: self.event_ms,
        };
        customers::end_relation(
            self.db(),
            RelationKey::new(self.corp, user, ext),
            reason,
            now_ms(),
            note,
        )
        .await?;
        // After the history entry, so the alert carries it; raised at most once per relation end.
        crate::domain::alerts::relation_ended(
            self.db(),
            &self.p.wecom,
            self.corp,
            user,
            ext,
            &self.source_label(),
            now_ms(),
        )
        .await?;
        Ok(())
    }

    /// A text a staff member sent to one of our apps: the content rules.
    async fn app_text(&self, from: &UserId, agent: &str, text: &str) -> Result<(), HandlerError> {
        let Some(alerts) = crate::domain::alerts::Ctx::of(&self.p.wecom, self.corp.as_str()) else {
            return Ok(());
        };
        let message = crate::domain::alerts::Scanned::app_text(
            self.corp,
            agent,
            from,
            text,
            self.source_label(),
            self.event_ms,
        );
        let library = self.p.rules.lookup(self.corp.as_str()).await?;
        crate::domain::alerts::scan_message(self.db(), alerts, &library, &message, now_ms())
            .await?;
        Ok(())
    }

    fn source_label(&self) -> String {
        match self.source {
            Source::Callback(id) => format!("inbox:{id}"),
            Source::Sync(id) => format!("sync:{id}"),
        }
    }

    async fn external_chat(&self, e: ExternalChatEvent) -> Result<(), HandlerError> {
        let chat_id = e.chat_id().clone();
        if let ExternalChatEvent::Dismissed { .. } = e {
            group_chats::dismiss(self.db(), self.corp, &chat_id, self.event_ms).await?;
            return Ok(());
        }
        let creds = self
            .p
            .wecom
            .credentials(self.corp.as_str(), Some(self.app))?;
        let chat = self
            .p
            .wecom
            .client
            .groupchat_get(&creds, &chat_id, true)
            .await
            .map_err(|e| api_failure("groupchat/get", &e))?;
        if let ExternalChatEvent::Updated(update) = &e
            && let Some(expected) = &update.cur_mem_ver
            && !chat.member_version.is_empty()
            && &chat.member_version != expected
            && self
                .is_older_version(&chat_id, &chat.member_version)
                .await?
        {
            // WeCom processes group changes asynchronously: the answer predates the event.
            return Err(HandlerError::Retry {
                reason: format!(
                    "groupchat/get still shows an older member_version than {expected}"
                ),
                after: Some(Duration::from_secs(2)),
            });
        }
        let snapshot = wecom_records::chat_snapshot(&chat);
        let diff =
            group_chats::apply(self.db(), self.corp, &snapshot, None, None, now_ms()).await?;
        if !diff.joined.is_empty() {
            self.customers_joined(&snapshot, &diff.joined).await?;
        }
        Ok(())
    }

    /// Whether `version` is the one we already applied (so WeCom has not caught up yet).
    async fn is_older_version(
        &self,
        chat_id: &ChatId,
        version: &str,
    ) -> Result<bool, HandlerError> {
        let stored = group_chats::get(self.db(), self.corp, chat_id).await?;
        Ok(stored.is_some_and(|s| s.member_version == version))
    }

    async fn refresh_tags(&self) -> Result<(), HandlerError> {
        let creds = self
            .p
            .wecom
            .credentials(self.corp.as_str(), Some(self.app))?;
        let groups = self
            .p
            .wecom
            .client
            .get_corp_tag_list(&creds, &[], &[])
            .await
            .map_err(|e| api_failure("get_corp_tag_list", &e))?;
        crate::domain::customers::record::replace_tag_library(
            self.db(),
            self.corp.as_str(),
            &wecom_records::tag_library(&groups),
            now_ms(),
        )
        .await?;
        Ok(())
    }

    async fn contact(&self, e: ContactEvent) -> Result<(), HandlerError> {
        let now = now_ms();
        match e {
            ContactEvent::StaffCreated(change) | ContactEvent::StaffUpdated(change) => {
                self.staff_change(&change, now).await
            }
            ContactEvent::StaffDeparted { user_id } => {
                staff::mark_departed(self.db(), self.corp, &user_id, self.event_ms, now).await?;
                crate::app::transfers::departures::on_departed(
                    self.db(),
                    &self.p.wecom,
                    self.corp,
                    &user_id,
                    now,
                )
                .await?;
                Ok(())
            }
            ContactEvent::DepartmentCreated(d) | ContactEvent::DepartmentUpdated(d) => {
                staff::upsert_department(
                    self.db(),
                    self.corp.as_str(),
                    i64::from(d.id),
                    d.name.as_deref(),
                    d.parent_id.map(i64::from),
                    d.order.map(i64::from),
                    now,
                )
                .await?;
                Ok(())
            }
            ContactEvent::DepartmentDeleted { id } => {
                staff::delete_department(self.db(), self.corp.as_str(), i64::from(id), now).await?;
                Ok(())
            }
            // Directory tags are not customer tags; nothing of ours depends on them yet.
            ContactEvent::TagMembersUpdated(_) => Ok(()),
        }
    }

    /// Since 2022-08-15 contact callbacks carry only the userid and departments: take what the
    /// event says, then complete it with `user/get` when an app can read the directory.
    async fn staff_change(&self, c: &StaffChange, now: i64) -> Result<(), HandlerError> {
        let user_id = c.new_user_id.as_ref().unwrap_or(&c.user_id);
        let mut update = staff::StaffUpdate {
            user_id: user_id.to_string(),
            name: c.name.clone(),
            departments: c
                .department
                .as_ref()
                .map(|d| d.iter().map(|&x| i64::from(x)).collect()),
            main_department: c.main_department.map(i64::from),
            position: c.position.clone(),
            status: c.status.map(i64::from),
            has_customer_contact: None,
            direct_leaders: c
                .direct_leader
                .as_ref()
                .map(|d| d.iter().map(ToString::to_string).collect()),
            leads_departments: c
                .department
                .as_ref()
                .zip(c.is_leader_in_dept.as_ref())
                .map(|(d, l)| led(d.iter().map(|&x| i64::from(x)), l.iter().copied())),
        };
        if let Ok(creds) = self.p.wecom.credentials(self.corp.as_str(), Some(self.app)) {
            match self.p.wecom.client.user_get(&creds, user_id).await {
                Ok(profile) => update = crate::app::wecom_records::with_profile(update, &profile),
                // Outside the app's visibility or already gone: the event's fields will do.
                Err(ApiError::Wecom {
                    errcode: 60111 | 60011 | 40003 | 48002,
                    ..
                }) => {}
                Err(e) => return Err(api_failure("user/get", &e)),
            }
        }
        staff::upsert(self.db(), self.corp.as_str(), &update, now).await?;
        Ok(())
    }
}
