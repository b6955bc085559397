//! The emulator's state: corps and everything in them, tokens, faults, counters and deliveries,
//! behind one mutex. The methods here are what tests (and the admin API) use to arrange a
//! situation, make things happen the way a person in the WeCom client would (with the callback
//! WeCom pushes for it), and look at the outcome.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::secret::Secret;

use super::EmulatorConfig;
use super::archive::CorpArchive;
use super::callbacks::{CallbackKind, CallbackTarget, DeliveryMode, DeliveryRecord, Job, Outgoing};
use super::events;
use super::faults::{Fault, FaultKind};
use super::handlers::transfers;
use super::model::{
    App, ChatMember, Corp, Customer, DroppedMessage, GroupChat, MemberView, NewCustomer, NewStaff,
    Relation, RelationEdit, RelationView, Staff, Tag, TagGroup, TransferView, WriteRecord,
};
use super::seed::{self, SeedRng, SeedSpec, SeedSummary};

/// A token's owner and expiry.
pub(crate) struct TokenEntry {
    pub(crate) corp_id: String,
    pub(crate) app: usize,
    pub(crate) expires_at: i64,
}

/// Everything behind the mutex.
#[derive(Default)]
pub(crate) struct Inner {
    pub(crate) corps: BTreeMap<String, Corp>,
    /// Every token ever issued (expired ones answer 42001, unknown ones 40014).
    pub(crate) tokens: HashMap<String, TokenEntry>,
    pub(crate) faults: Vec<Fault>,
    pub(crate) down: bool,
    pub(crate) calls: BTreeMap<String, u64>,
    pub(crate) total_calls: u64,
    pub(crate) rate_limited: u64,
    pub(crate) faults_fired: u64,
    /// Fixed windows: key → (window index, count).
    pub(crate) windows: HashMap<String, (u64, u64)>,
    pub(crate) in_flight: HashMap<String, usize>,
    pub(crate) sent_messages: Vec<serde_json::Value>,
    pub(crate) dropped_messages: Vec<DroppedMessage>,
    /// `message/send` calls answered without delivering, by the duplicate check.
    pub(crate) duplicates_suppressed: u64,
    /// The newest [`MAX_WRITES`] successful write calls, oldest first.
    pub(crate) writes: VecDeque<WriteRecord>,
    pub(crate) deliveries: Vec<DeliveryRecord>,
    pub(crate) delivery_mode: DeliveryMode,
    pub(crate) held: Vec<Job>,
    /// Each corp's chat archive (`testkit::archive`), created on first use.
    pub(crate) archives: BTreeMap<String, CorpArchive>,
    /// OAuth codes issued by the authorize page (`testkit::web`), by code.
    pub(crate) oauth_codes: HashMap<String, super::web::OAuthCode>,
    /// The WeCom client a person is using: who is logged in and which chat is open.
    pub(crate) client: Option<super::web::ClientContext>,
}

impl Inner {
    /// The corp, created empty if it does not exist yet.
    pub(crate) fn corp_mut(&mut self, corp_id: &str) -> &mut Corp {
        self.corps
            .entry(corp_id.to_owned())
            .or_insert_with(|| Corp::new(corp_id))
    }

    /// The corp's chat archive, created empty if it does not exist yet.
    pub(crate) fn archive_mut(&mut self, corp_id: &str) -> &mut CorpArchive {
        self.archives.entry(corp_id.to_owned()).or_default()
    }

    /// Counts one event against every `(key, window_ms, limit)` if all have room; otherwise
    /// counts nothing and returns false. Windows are aligned to the Unix epoch (real time).
    pub(crate) fn count_windows(&mut self, windows: &[(String, u64, u64)]) -> bool {
        let now_ms = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
        let full = windows.iter().any(|(key, len, limit)| {
            let index = now_ms / (*len).max(1);
            match self.windows.get(key) {
                Some((i, count)) if *i == index => count >= limit,
                _ => *limit == 0,
            }
        });
        if full {
            return false;
        }
        for (key, len, _) in windows {
            let index = now_ms / (*len).max(1);
            let slot = self.windows.entry(key.clone()).or_insert((index, 0));
            if slot.0 != index {
                *slot = (index, 0);
            }
            slot.1 += 1;
        }
        true
    }

    /// Logs a successful write call, dropping the oldest record beyond [`MAX_WRITES`].
    pub(crate) fn record_write(&mut self, api: &str, corp_id: &str, body: serde_json::Value) {
        if self.writes.len() >= MAX_WRITES {
            self.writes.pop_front();
        }
        self.writes.push_back(WriteRecord {
            api: api.to_owned(),
            corp_id: corp_id.to_owned(),
            at: Instant::now(),
            at_unix_ms: chrono::Utc::now().timestamp_millis(),
            body,
        });
    }
}

/// How many [`WriteRecord`]s the emulator keeps; older ones are dropped first. A million small
/// bodies are a few hundred MB: enough for a load run, bounded for a long-lived `scrm emulator`.
pub const MAX_WRITES: usize = 1_000_000;

/// Counters, as `GET /testkit/stats` shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Calls per API path (`gettoken`, `externalcontact/get`, …), faulted ones included.
    pub calls: BTreeMap<String, u64>,
    /// All API calls.
    pub total_calls: u64,
    /// `gettoken` calls.
    pub gettoken: u64,
    /// 45009/45033 answered by the emulator's own limits (not injected faults).
    pub rate_limited: u64,
    /// Calls answered by an injected fault.
    pub faults_fired: u64,
    /// `message/send` bodies delivered to at least one member.
    pub messages_sent: usize,
    /// (message, member) deliveries dropped over the per-member limit.
    pub messages_dropped: usize,
    /// `message/send` calls not delivered because the duplicate check found the same message.
    pub duplicates_suppressed: u64,
    /// Write calls in the write log ([`EmulatorState::writes`], at most [`MAX_WRITES`]).
    pub writes: usize,
    /// Delivery records (a duplicated event has two).
    pub deliveries: usize,
    /// Records that got HTTP 200.
    pub delivered: usize,
    /// Records that did not (yet).
    pub undelivered: usize,
    /// HTTP requests made to callback targets.
    pub delivery_attempts: u64,
}

/// The emulator's state. Share it as `Arc<EmulatorState>` ([`super::EmulatorHandle::state`]).
///
/// Corps are keyed by corp id and created on first use. Mutations that stand for something a
/// person did in WeCom (a member adds a customer, edits a remark, leaves the company…) push the
/// callback WeCom would push, with `CreateTime` from the emulator clock; changes made through the
/// API push nothing (§2.5, "通过API进行的操作不会产生回调"), and neither does [`EmulatorState::seed`].
/// Mutations referring to an unknown member create a plain one (so a test needs no seeding);
/// those referring to an unknown customer, relation or chat return `false` and change nothing.
pub struct EmulatorState {
    pub(crate) config: EmulatorConfig,
    inner: Mutex<Inner>,
    offset_secs: AtomicI64,
    pub(crate) http: reqwest::Client,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) pending: tokio::sync::watch::Sender<usize>,
    pub(crate) me: Weak<EmulatorState>,
}

impl fmt::Debug for EmulatorState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("EmulatorState")
            .field("config", &self.config)
            .field("corps", &inner.corps.keys().collect::<Vec<_>>())
            .field("total_calls", &inner.total_calls)
            .field("deliveries", &inner.deliveries.len())
            .finish_non_exhaustive()
    }
}

/// How far the emulator clock may run ahead of real time (1000 years).
const MAX_OFFSET_SECS: i64 = 1000 * 366 * 86_400;

/// `d` in whole seconds as `i64` (saturating).
pub(crate) fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// A random id like WeCom's: `prefix` + base-62 characters, `len` in all.
pub(crate) fn random_id(prefix: &str, len: usize) -> String {
    SeedRng::new(rand::random()).id(prefix, len)
}

impl EmulatorState {
    /// A fresh state. Must be called inside a Tokio runtime (deliveries are spawned on it).
    pub(crate) fn new(config: EmulatorConfig) -> std::io::Result<Arc<Self>> {
        let runtime = tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(std::io::Error::other)?;
        let (pending, _) = tokio::sync::watch::channel(0);
        Ok(Arc::new_cyclic(|me| Self {
            config,
            inner: Mutex::new(Inner::default()),
            offset_secs: AtomicI64::new(0),
            http,
            runtime,
            pending,
            me: me.clone(),
        }))
    }

    /// Arranges the WeCom client in front of our pages: who is logged in, which chat is open
    /// (`None`: nobody; the authorize page refuses).
    pub fn set_client(&self, client: Option<super::web::ClientContext>) {
        self.lock().client = client;
    }

    /// The lock; a panic elsewhere while holding it does not make the state unusable.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    // ---------------------------------------------------------------------------------------
    // Clock
    // ---------------------------------------------------------------------------------------

    /// The emulator clock: real Unix seconds plus every [`EmulatorState::advance_clock`].
    pub fn now(&self) -> i64 {
        chrono::Utc::now().timestamp() + self.offset_secs.load(Ordering::SeqCst)
    }

    /// The emulator clock in Unix milliseconds (chat-archive `msgtime`).
    pub fn now_ms(&self) -> i64 {
        chrono::Utc::now()
            .timestamp_millis()
            .saturating_add(self.offset_secs.load(Ordering::SeqCst).saturating_mul(1000))
    }

    /// Moves the emulator clock forward: tokens expire, consistency delays pass, and transfers
    /// whose 24 h window ended are taken over (with their callbacks).
    pub fn advance_clock(&self, by: Duration) {
        // Bounded, so that clock arithmetic elsewhere can never overflow.
        let by = secs(by).min(MAX_OFFSET_SECS);
        let _ = self
            .offset_secs
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |offset| {
                Some(offset.saturating_add(by).min(MAX_OFFSET_SECS))
            });
        let now = self.now();
        let mut out = Vec::new();
        {
            let mut inner = self.lock();
            for corp in inner.corps.values_mut() {
                transfers::settle(corp, now, &mut out);
            }
        }
        self.enqueue(out);
    }

    // ---------------------------------------------------------------------------------------
    // Set-up
    // ---------------------------------------------------------------------------------------

    /// Registers a secret that `gettoken` accepts for the corp. Each secret has its own tokens;
    /// `agent_id` is the app's agentid (`None` for the 客户联系 / 通讯录 / 会话存档 secrets), which
    /// `message/send` and `ticket/get` check the token against (301002).
    pub fn add_app(&self, corp_id: &str, secret: &str, agent_id: Option<i64>) {
        let mut inner = self.lock();
        let corp = inner.corp_mut(corp_id);
        if corp.apps.iter().any(|a| a.secret.expose() == secret) {
            return;
        }
        corp.apps.push(App {
            secret: Secret::new(secret.to_owned()),
            agent_id,
            token: None,
            corp_ticket: None,
            agent_ticket: None,
        });
    }

    /// Makes every current token of the corp unknown (WeCom may invalidate tokens early): the
    /// next call with one answers 40014.
    pub fn invalidate_tokens(&self, corp_id: &str) {
        let mut inner = self.lock();
        inner.tokens.retain(|_, entry| entry.corp_id != corp_id);
        if let Some(corp) = inner.corps.get_mut(corp_id) {
            for app in &mut corp.apps {
                app.token = None;
            }
        }
    }

    /// Seeds the corp deterministically from `spec.rng_seed` (see [`SeedSpec`]). No callbacks.
    pub fn seed(&self, corp_id: &str, spec: &SeedSpec) -> SeedSummary {
        let now = self.now();
        let mut inner = self.lock();
        seed::seed(inner.corp_mut(corp_id), spec, now)
    }

    /// Sends the corp's events of `kind` to `target` from now on.
    pub fn set_callback_target(&self, corp_id: &str, kind: CallbackKind, target: CallbackTarget) {
        self.lock().corp_mut(corp_id).targets.insert(kind, target);
    }

    /// Stops sending the corp's events of `kind` (they are recorded as undelivered).
    pub fn clear_callback_target(&self, corp_id: &str, kind: CallbackKind) {
        self.lock().corp_mut(corp_id).targets.remove(&kind);
    }

    /// The agentid `msgaudit_notify` carries (default 2000004).
    pub fn set_archive_agent_id(&self, corp_id: &str, agent_id: i64) {
        self.lock().corp_mut(corp_id).archive_agent_id = agent_id;
    }

    /// Sets the delivery knobs for events queued from now on. Switching `reorder` off releases
    /// the held events.
    pub fn set_delivery(&self, mode: DeliveryMode) {
        let release = {
            let mut inner = self.lock();
            inner.delivery_mode = mode;
            !mode.reorder && !inner.held.is_empty()
        };
        if release {
            self.release_held();
        }
    }

    /// The customer limit of a member: transfers to a member at the limit fail (40099 at call
    /// time, status 4 at takeover). Unlimited by default.
    pub fn set_customer_limit(&self, corp_id: &str, userid: &str, limit: usize) {
        let mut inner = self.lock();
        let corp = inner.corp_mut(corp_id);
        corp.ensure_staff(userid);
        if let Some(staff) = corp.staff.get_mut(userid) {
            staff.customer_limit = Some(limit);
        }
    }

    /// A customer who refuses every transfer: on the transfer call their entry becomes status 3
    /// and WeCom pushes `transfer_fail` with `FailReason=customer_refused`.
    pub fn set_refuses_transfer(
        &self,
        corp_id: &str,
        external_userid: &str,
        refuses: bool,
    ) -> bool {
        let mut inner = self.lock();
        match inner.corp_mut(corp_id).customers.get_mut(external_userid) {
            Some(customer) => {
                customer.refuses_transfer = refuses;
                true
            }
            None => false,
        }
    }

    /// Whether a member has 客户联系 enabled (listed by `get_follow_user_list`; default true).
    pub fn set_follow_enabled(&self, corp_id: &str, userid: &str, enabled: bool) {
        let mut inner = self.lock();
        let corp = inner.corp_mut(corp_id);
        corp.ensure_staff(userid);
        if let Some(staff) = corp.staff.get_mut(userid) {
            staff.follow_enabled = enabled;
        }
    }

    /// Whether a member is in the chat-archive scope (`msgaudit/get_permit_user_list`; default true).
    pub fn set_archive_permit(&self, corp_id: &str, userid: &str, permitted: bool) {
        let mut inner = self.lock();
        let corp = inner.corp_mut(corp_id);
        corp.ensure_staff(userid);
        if let Some(staff) = corp.staff.get_mut(userid) {
            staff.archive_permitted = permitted;
        }
    }

    // ---------------------------------------------------------------------------------------
    // Faults
    // ---------------------------------------------------------------------------------------

    /// Queues a fault; the first queued fault matching a call is used (and counted down).
    pub fn inject_fault(&self, fault: Fault) {
        if fault.times > 0 {
            self.lock().faults.push(fault);
        }
    }

    /// Removes every queued fault.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// While down, every API call answers HTTP 503 (admin routes keep working).
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
    }

    /// Counts a call and says what happens to it before any API logic: down, a fault, or nothing.
    pub(crate) fn gate(&self, api: &str) -> (bool, Option<FaultKind>) {
        let mut inner = self.lock();
        *inner.calls.entry(api.to_owned()).or_default() += 1;
        inner.total_calls += 1;
        if inner.down {
            return (true, None);
        }
        let position = inner.faults.iter().position(|f| f.matches(api));
        let kind = position.and_then(|i| {
            let fault = inner.faults.get_mut(i)?;
            fault.times -= 1;
            let kind = fault.kind.clone();
            if fault.times == 0 {
                inner.faults.remove(i);
            }
            Some(kind)
        });
        if kind.is_some() {
            inner.faults_fired += 1;
        }
        (false, kind)
    }

    // ---------------------------------------------------------------------------------------
    // Mutations that push callbacks
    // ---------------------------------------------------------------------------------------

    /// A member adds a new customer (or a customer adds them): the relation exists at once, but
    /// read APIs show it only after the consistency delay. Pushes `add_external_contact` with
    /// `State` and `WelcomeCode` when given. Returns the customer's id.
    pub fn add_customer(&self, corp_id: &str, userid: &str, customer: NewCustomer) -> String {
        let now = self.now();
        let visible_at = now.saturating_add(secs(self.config.consistency_delay));
        let mut out = Vec::new();
        let external_userid = {
            let mut inner = self.lock();
            let corp = inner.corp_mut(corp_id);
            corp.ensure_staff(userid);
            let external_userid = match customer.external_userid.clone() {
                Some(id) => id,
                None => loop {
                    let id = random_id("wm", 32);
                    if !corp.customers.contains_key(&id) {
                        break id;
                    }
                },
            };
            let name = if customer.name.is_empty() {
                seed::person(&mut SeedRng::new(rand::random())).0
            } else {
                customer.name.clone()
            };
            corp.customers
                .entry(external_userid.clone())
                .or_insert_with(|| Customer {
                    external_userid: external_userid.clone(),
                    name,
                    customer_type: customer.customer_type.unwrap_or(1),
                    gender: 0,
                    avatar: format!("http://wx.qlogo.cn/mmhead/{}/0", random_id("", 24)),
                    unionid: None,
                    corp_name: customer.corp_name.clone(),
                    position: None,
                    refuses_transfer: false,
                });
            let live = corp.tag_index();
            let tag_ids = customer
                .tag_ids
                .iter()
                .filter(|t| live.contains_key(t.as_str()))
                .cloned()
                .collect();
            let relation = Relation {
                remark: customer.remark.clone().unwrap_or_default(),
                description: customer.description.clone().unwrap_or_default(),
                createtime: now,
                tag_ids,
                remark_corp_name: None,
                remark_mobiles: customer.remark_mobiles.clone(),
                oper_userid: userid.to_owned(),
                add_way: customer.add_way.unwrap_or(1),
                state: customer.state.clone(),
                deleted_by_customer: false,
                visible_at,
            };
            corp.insert_relation(userid, &external_userid, relation);
            let mut xml = events::external_contact(
                corp_id,
                now,
                "add_external_contact",
                userid,
                &external_userid,
            );
            if let Some(state) = &customer.state {
                xml.text("State", state);
            }
            if let Some(code) = &customer.welcome_code {
                xml.text("WelcomeCode", code);
            }
            out.push(Outgoing::new(corp_id, CallbackKind::Contacts, xml.finish()));
            external_userid
        };
        self.enqueue(out);
        external_userid
    }

    /// An existing customer adds another member (`add_external_contact`, honouring the
    /// consistency delay). False when the customer is unknown or the relation already exists.
    pub fn add_follow(
        &self,
        corp_id: &str,
        userid: &str,
        external_userid: &str,
        state: Option<&str>,
    ) -> bool {
        let now = self.now();
        let visible_at = now.saturating_add(secs(self.config.consistency_delay));
        let mut out = Vec::new();
        {
            let mut inner = self.lock();
            let corp = inner.corp_mut(corp_id);
            if !corp.customers.contains_key(external_userid)
                || corp.relation(userid, external_userid).is_some()
            {
                return false;
            }
            corp.ensure_staff(userid);
            corp.insert_relation(
                userid,
                external_userid,
                Relation {
                    remark: String::new(),
                    description: String::new(),
                    createtime: now,
                    tag_ids: Vec::new(),
                    remark_corp_name: None,
                    remark_mobiles: Vec::new(),
                    oper_userid: external_userid.to_owned(),
                    add_way: 1,
                    state: state.map(str::to_owned),
                    deleted_by_customer: false,
                    visible_at,
                },
            );
            let mut xml = events::external_contact(
                corp_id,
                now,
                "add_external_contact",
                userid,
                external_userid,
            );
            if let Some(state) = state {
                xml.text("State", state);
            }
            out.push(Outgoing::new(corp_id, CallbackKind::Contacts, xml.finish()));
        }
        self.enqueue(out);
        true
    }

    /// The member edits remark, description or corp tags in the client (`edit_external_contact`).
    pub fn edit_relation(
        &self,
        corp_id: &str,
        userid: &str,
        external_userid: &str,
        edit: RelationEdit,
    ) -> bool {
        let now = self.now();
        let mut out = Vec::new();
        {
            let mut inner = self.lock();
            let corp = inner.corp_mut(corp_id);
            let live: BTreeSet<String> = corp.tag_index().keys().map(|k| (*k).to_owned()).collect();
            let Some(rel) = corp.relation_mut(userid, external_userid) else {
                return false;
            };
            if let Some(remark) = edit.remark {
                rel.remark = remark;
            }
            if let Some(description) = edit.description {
                rel.description = description;
            }
            for tag in edit.add_tags {
                if live.contains(&tag) && !rel.tag_ids.contains(&tag) {
                    rel.tag_ids.push(tag);
                }
            }
            rel.tag_ids.retain(|t| !edit.remove_tags.contains(t));
            let xml = events::external_contact(
                corp_id,
                now,
                "edit_external_contact",
                userid,
                external_userid,
            )
            .finish();
            out.push(Outgoing::new(corp_id, CallbackKind::Contacts, xml));
        }
        self.enqueue(out);
        true
    }

    /// The member deletes the customer (员工删客户): the relation is gone; `del_external_contact`.
    pub fn staff_deletes_customer(
        &self,
        corp_id: &str,
        userid: &str,
        external_userid: &str,
    ) -> bool {
        let now = self.now();
        let mut out = Vec::new();
        {
            let mut inner = self.lock();
            let corp = inner.corp_mut(corp_id);
            if corp.remove_relation(userid, external_userid).is_none() {
                return false;
            }
            let xml = events::external_contact(
                corp_id,
                now,
                "del_external_contact",
                userid,
                external_userid,
            )
            .finish();
            out.push(Outgoing::new(corp_id, CallbackKind::Contacts, xml));
        }
        self.enqueue(out);
        true
    }

    /// The customer deletes the member (客户删员工): the relation stays listed, marked one-way;
    /// `del_follow_user`. False (and no callback) when there is no relation or it is already one-way.
    pub fn customer_deletes_staff(
        &self,
        corp_id: &str,
        userid: &str,
        external_userid: &str,
    ) -> bool {
        let now = self.now();
        let mut out = Vec::new();
        {
            let mut inner = self.lock();
            let corp = inner.corp_mut(corp_id);
            let Some(rel) = corp.relation_mut(userid, external_userid) else {
                return false;
            };
            if rel.deleted_by_customer {
                return false;
            }
            rel.deleted_by_customer = true;
            let xml =
                events::external_contact(corp_id, now, "del_follow_user", userid, external_userid)
                    .finish();
            out.push(Outgoing::new(corp_id, CallbackKind::Contacts, xml));
        }
        self.enqueue(out);
        true
    }

    /// Removes a relation without any callback: a lost event, for reconciliation tests.
    pub fn remove_relation_silently(
        &self,
        corp_id: &str,
        userid: &str,
        external_userid: &str,
    ) -> bool {
        self.lock()
            .corp_mut(corp_id)
            .remove_relation(userid, external_userid)
            .is_some()
    }

    /// A new member (`change_contact`/`create_user` with `UserID` and `Department` only, as
    /// WeCom sends to contact-sync URLs configured after 2022-08-15). False if the userid exists.
    pub fn add_staff(&self, corp_id: &str, staff: NewStaff) -> bool {
        let now = self.now();
        let mut out = Vec::new();
        {
            let mut inner = self.lock();
            let corp = inner.corp_mut(corp_id);
            if corp.staff.contains_key(&staff.userid) {
                return false;
            }
            let member = Staff::new(&staff.userid, &staff.name, staff.department);
            let departments = id_list(&member.department);
            corp.staff.insert(staff.userid.clone(), member);
            let xml = events::contact_user(corp_id, now, "create_user", &staff.userid)
                .text("Department", &departments)
                .finish();
            out.push(Outgoing::new(corp_id, CallbackKind::Directory, xml));
        }
        self.enqueue(out);
        true
    }

    /// The member leaves the company: status 5, gone from `get_follow_user_list` and from the
    /// customers' `follow_user`; their customers appear in `get_unassigned_list`, their group
    /// chats get status 1. Pushes `change_contact`/`delete_user`.
    pub fn depart_staff(&self, corp_id: &str, userid: &str) -> bool {
        let now = self.now();
        let mut out = Vec::new();
        {
            let mut inner = self.lock();
            let corp = inner.corp_mut(corp_id);
            let Some(staff) = corp.staff.get_mut(userid) else {
                return false;
            };
            if staff.is_departed() {
                return false;
            }
            staff.status = 5;
            staff.departed_at = Some(now);
            for chat in corp.chats.values_mut() {
                if chat.owner == userid && !chat.dismissed {
                    chat.status = 1;
                }
            }
            let xml = events::contact_user(corp_id, now, "delete_user", userid).finish();
            out.push(Outgoing::new(corp_id, CallbackKind::Directory, xml));
        }
        self.enqueue(out);
        true
    }

    /// An admin moves a member to other departments (the first is the main one):
    /// `change_contact`/`update_user` with `Department` and `MainDepartment`. False for an unknown
    /// or departed member, or an empty list.
    pub fn move_staff(&self, corp_id: &str, userid: &str, departments: Vec<i64>) -> bool {
        let now = self.now();
        let mut out = Vec::new();
        {
            let mut inner = self.lock();
            let corp = inner.corp_mut(corp_id);
            let Some(main) = departments.first().copied() else {
                return false;
            };
            let Some(staff) = corp.staff.get_mut(userid) else {
                return false;
            };
            if staff.is_departed() {
                return false;
            }
            staff.department.clone_from(&departments);
            staff.leads.retain(|d| departments.contains(d));
            let list = id_list(&departments);
            let xml = events::contact_user(corp_id, now, "update_user", userid)
                .text("Department", &list)
                .text("MainDepartment", &main.to_string())
                .finish();
            out.push(Outgoing::new(corp_id, CallbackKind::Directory, xml));
        }
        self.enqueue(out);
        true
    }

    /// An admin makes the member the leader of one of their departments (or no longer):
    /// `user/get` answers `is_leader_in_dept` and `department/list` `department_leader`
    /// accordingly; pushes `change_contact`/`update_user`. False for an unknown or departed member
    /// or a department they are not in.
    pub fn set_leader(&self, corp_id: &str, userid: &str, department: i64, leads: bool) -> bool {
        let now = self.now();
        let mut out = Vec::new();
        {
            let mut inner = self.lock();
            let corp = inner.corp_mut(corp_id);
            let Some(staff) = corp.staff.get_mut(userid) else {
                return false;
            };
            if staff.is_departed() || !staff.department.contains(&department) {
                return false;
            }
            let changed = if leads {
                staff.leads.insert(department)
            } else {
                staff.leads.remove(&department)
            };
            if changed {
                let list = id_list(&staff.department);
                let xml = events::contact_user(corp_id, now, "update_user", userid)
                    .text("Department", &list)
                    .finish();
                out.push(Outgoing::new(corp_id, CallbackKind::Directory, xml));
            }
        }
        self.enqueue(out);
        true
    }

    /// An admin creates a corp tag in the console (in the named group, created if needed):
    /// `change_external_tag`/`create` with `TagType=tag`. Returns the tag id (the existing one,
    /// without a callback, when the group already has a tag of that name).
    pub fn create_tag(&self, corp_id: &str, group_name: &str, tag_name: &str) -> String {
        let now = self.now();
        let mut out = Vec::new();
        let id = {
            let mut inner = self.lock();
            let corp = inner.corp_mut(corp_id);
            let taken: BTreeSet<String> = corp
                .tag_groups
                .iter()
                .flat_map(|g| {
                    std::iter::once(g.id.clone()).chain(g.tags.iter().map(|t| t.id.clone()))
                })
                .collect();
            let fresh = || loop {
                let id = random_id("et", 32);
                if !taken.contains(&id) {
                    break id;
                }
            };
            let index = match corp
                .tag_groups
                .iter()
                .position(|g| !g.deleted && g.name == group_name)
            {
                Some(i) => i,
                None => {
                    corp.tag_groups.push(TagGroup {
                        id: fresh(),
                        name: group_name.to_owned(),
                        create_time: now,
                        order: 0,
                        deleted: false,
                        tags: Vec::new(),
                    });
                    corp.tag_groups.len() - 1
                }
            };
            let Some(group) = corp.tag_groups.get_mut(index) else {
                return String::new();
            };
            if let Some(tag) = group.tags.iter().find(|t| !t.deleted && t.name == tag_name) {
                return tag.id.clone();
            }
            let mut id = fresh();
            while id == group.id {
                id = fresh();
            }
            group.tags.push(Tag {
                id: id.clone(),
                name: tag_name.to_owned(),
                create_time: now,
                order: 0,
                deleted: false,
            });
            out.push(Outgoing::new(
                corp_id,
                CallbackKind::Contacts,
                events::external_tag(corp_id, now, &id, "tag", "create"),
            ));
            id
        };
        self.enqueue(out);
        id
    }

    /// An admin deletes a corp tag or a whole tag group in the console: `change_external_tag`/
    /// `delete` (`TagType` `tag` or `tag_group`; a group's tags get no events of their own). A
    /// group whose last tag goes is deleted too. The tags leave every relation.
    pub fn delete_tag(&self, corp_id: &str, tag_id: &str) -> bool {
        let now = self.now();
        let mut out = Vec::new();
        {
            let mut inner = self.lock();
            let corp = inner.corp_mut(corp_id);
            let mut removed = BTreeSet::new();
            let mut tag_type = None;
            for group in corp.tag_groups.iter_mut().filter(|g| !g.deleted) {
                if group.id == tag_id {
                    group.deleted = true;
                    for tag in group.tags.iter_mut().filter(|t| !t.deleted) {
                        tag.deleted = true;
                        removed.insert(tag.id.clone());
                    }
                    tag_type = Some("tag_group");
                    break;
                }
                if let Some(tag) = group.tags.iter_mut().find(|t| !t.deleted && t.id == tag_id) {
                    tag.deleted = true;
                    removed.insert(tag.id.clone());
                    if group.tags.iter().all(|t| t.deleted) {
                        group.deleted = true;
                    }
                    tag_type = Some("tag");
                    break;
                }
            }
            let Some(tag_type) = tag_type else {
                return false;
            };
            corp.forget_tags(&removed);
            out.push(Outgoing::new(
                corp_id,
                CallbackKind::Contacts,
                events::external_tag(corp_id, now, tag_id, tag_type, "delete"),
            ));
        }
        self.enqueue(out);
        true
    }

    /// A member creates a customer group chat with these members (staff userids or customer
    /// ids): `change_external_chat`/`create`. Returns the chat id.
    pub fn create_group_chat(&self, corp_id: &str, owner: &str, members: Vec<String>) -> String {
        let now = self.now();
        let mut out = Vec::new();
        let chat_id = {
            let mut inner = self.lock();
            let corp = inner.corp_mut(corp_id);
            corp.ensure_staff(owner);
            let chat_id = loop {
                let id = random_id("wr", 32);
                if !corp.chats.contains_key(&id) {
                    break id;
                }
            };
            let mut chat = GroupChat {
                chat_id: chat_id.clone(),
                name: String::new(),
                owner: owner.to_owned(),
                create_time: now,
                notice: String::new(),
                members: Vec::new(),
                admin_list: Vec::new(),
                member_version: random_id("", 32).to_lowercase(),
                status: 0,
                dismissed: false,
                onjob_transfers: Vec::new(),
            };
            let owner_name = corp
                .staff
                .get(owner)
                .map(|s| s.name.clone())
                .unwrap_or_default();
            chat.name = format!("{owner_name}的客户群");
            chat.members.push(chat_member(corp, owner, now, None));
            for m in members {
                if chat.members.iter().all(|x| x.userid != m) {
                    chat.members.push(chat_member(corp, &m, now, Some(owner)));
                }
            }
            corp.chats.insert(chat_id.clone(), chat);
            out.push(Outgoing::new(
                corp_id,
                CallbackKind::Contacts,
                events::external_chat(corp_id, now, &chat_id, "create").finish(),
            ));
            chat_id
        };
        self.enqueue(out);
        chat_id
    }

    /// Members join a group chat: `update`/`add_member` with `JoinScene` 0, `MemChangeCnt`,
    /// `MemChangeList`, `LastMemVer`, `CurMemVer`. False for an unknown or dismissed chat, or
    /// when nobody new joins.
    pub fn add_chat_members(&self, corp_id: &str, chat_id: &str, members: Vec<String>) -> bool {
        self.change_chat_members(corp_id, chat_id, members, true)
    }

    /// Members leave a group chat: `update`/`del_member` with `QuitScene` 0 and the same fields.
    pub fn remove_chat_members(&self, corp_id: &str, chat_id: &str, members: Vec<String>) -> bool {
        self.change_chat_members(corp_id, chat_id, members, false)
    }

    fn change_chat_members(
        &self,
        corp_id: &str,
        chat_id: &str,
        members: Vec<String>,
        join: bool,
    ) -> bool {
        let now = self.now();
        let mut out = Vec::new();
        {
            let mut inner = self.lock();
            let corp = inner.corp_mut(corp_id);
            let Some(chat) = corp.chats.get(chat_id).filter(|c| !c.dismissed) else {
                return false;
            };
            let owner = chat.owner.clone();
            let mut changed: Vec<String> = Vec::new();
            let mut new_members = Vec::new();
            for m in members {
                let present = chat.members.iter().any(|x| x.userid == m);
                if present != join && !changed.contains(&m) {
                    if join {
                        new_members.push(chat_member(corp, &m, now, Some(&owner)));
                    }
                    changed.push(m);
                }
            }
            if changed.is_empty() {
                return false;
            }
            let Some(chat) = corp.chats.get_mut(chat_id) else {
                return false;
            };
            if join {
                chat.members.extend(new_members);
            } else {
                chat.members.retain(|x| !changed.contains(&x.userid));
            }
            let last =
                std::mem::replace(&mut chat.member_version, random_id("", 32).to_lowercase());
            let count = i64::try_from(changed.len()).unwrap_or(i64::MAX);
            let mut xml = events::external_chat(corp_id, now, chat_id, "update");
            if join {
                xml.text("UpdateDetail", "add_member")
                    .number("JoinScene", 0);
            } else {
                xml.text("UpdateDetail", "del_member")
                    .number("QuitScene", 0);
            }
            xml.number("MemChangeCnt", count)
                .items("MemChangeList", &changed)
                .text("LastMemVer", &last)
                .text("CurMemVer", &chat.member_version);
            out.push(Outgoing::new(corp_id, CallbackKind::Contacts, xml.finish()));
        }
        self.enqueue(out);
        true
    }

    /// The owner dismisses the group chat: `change_external_chat`/`dismiss`. The chat leaves
    /// `groupchat/list`; `groupchat/get` answers 49008.
    pub fn dismiss_group_chat(&self, corp_id: &str, chat_id: &str) -> bool {
        let now = self.now();
        let mut out = Vec::new();
        {
            let mut inner = self.lock();
            let corp = inner.corp_mut(corp_id);
            let Some(chat) = corp.chats.get_mut(chat_id).filter(|c| !c.dismissed) else {
                return false;
            };
            chat.dismissed = true;
            out.push(Outgoing::new(
                corp_id,
                CallbackKind::Contacts,
                events::external_chat(corp_id, now, chat_id, "dismiss").finish(),
            ));
        }
        self.enqueue(out);
        true
    }

    /// New chat-archive messages exist: pushes `msgaudit_notify` to the archive target, at most
    /// once per 15 s of emulator time like WeCom (a call within 15 s of the last push returns
    /// false and pushes nothing).
    pub fn msgaudit_notify(&self, corp_id: &str) -> bool {
        let now = self.now();
        let mut out = Vec::new();
        {
            let mut inner = self.lock();
            let corp = inner.corp_mut(corp_id);
            if corp
                .last_msgaudit_notify
                .is_some_and(|last| now - last < 15)
            {
                return false;
            }
            corp.last_msgaudit_notify = Some(now);
            out.push(Outgoing::new(
                corp_id,
                CallbackKind::Archive,
                events::msgaudit_notify(corp_id, now, corp.archive_agent_id),
            ));
        }
        self.enqueue(out);
        true
    }

    /// A member sends a text message to an app (§3.6, with a random `MsgId`), pushed to the
    /// app's target ([`CallbackKind::App`]).
    pub fn app_text_message(&self, corp_id: &str, agent_id: i64, from_userid: &str, content: &str) {
        let now = self.now();
        let msg_id = rand::random_range(1_000_000_000_000_000_000_i64..i64::MAX);
        let xml = events::app_text(corp_id, now, agent_id, from_userid, content, msg_id);
        self.enqueue(vec![Outgoing::new(
            corp_id,
            CallbackKind::App(agent_id),
            xml,
        )]);
    }

    /// Delivers arbitrary plaintext XML to the corp's target of `kind`.
    pub fn push_raw(&self, corp_id: &str, kind: CallbackKind, plaintext_xml: &str) {
        self.enqueue(vec![Outgoing::new(corp_id, kind, plaintext_xml.to_owned())]);
    }

    // ---------------------------------------------------------------------------------------
    // Inspection
    // ---------------------------------------------------------------------------------------

    /// Calls received for one API path (`"gettoken"`, `"externalcontact/get"`, …), including
    /// calls answered by a fault, 503 while down, or a limit.
    pub fn calls(&self, api: &str) -> u64 {
        self.lock().calls.get(api).copied().unwrap_or(0)
    }

    /// Calls received for every API.
    pub fn total_calls(&self) -> u64 {
        self.lock().total_calls
    }

    /// How many 45009/45033 the emulator's own limits answered (injected faults not included).
    pub fn rate_limited(&self) -> u64 {
        self.lock().rate_limited
    }

    /// How many calls were answered by an injected fault.
    pub fn faults_fired(&self) -> u64 {
        self.lock().faults_fired
    }

    /// The bodies of `message/send` calls that reached at least one member.
    pub fn sent_messages(&self) -> Vec<serde_json::Value> {
        self.lock().sent_messages.clone()
    }

    /// (message, member) deliveries WeCom dropped silently over the per-member limit.
    pub fn dropped_messages(&self) -> Vec<DroppedMessage> {
        self.lock().dropped_messages.clone()
    }

    /// How many `message/send` calls the duplicate check (`enable_duplicate_check`) answered with
    /// errcode 0 without delivering: they are in neither [`EmulatorState::sent_messages`] nor
    /// [`EmulatorState::dropped_messages`].
    pub fn duplicates_suppressed(&self) -> u64 {
        self.lock().duplicates_suppressed
    }

    /// The write log, oldest first: one record per call of a write API (`mark_tag`, `remark`,
    /// `add_corp_tag`, `edit_corp_tag`, `del_corp_tag`, `message/send`, the customer and group
    /// chat transfers) that answered errcode 0. Calls answered by a fault, a limit (45009/45033)
    /// or any other errcode are not in it. At most [`MAX_WRITES`] records are kept.
    pub fn writes(&self) -> Vec<WriteRecord> {
        self.lock().writes.iter().cloned().collect()
    }

    /// The write log of one API path (`"externalcontact/mark_tag"`, …), oldest first.
    pub fn writes_for(&self, api: &str) -> Vec<WriteRecord> {
        self.lock()
            .writes
            .iter()
            .filter(|w| w.api == api)
            .cloned()
            .collect()
    }

    /// Every delivery so far, in queue order.
    pub fn deliveries(&self) -> Vec<DeliveryRecord> {
        self.lock().deliveries.clone()
    }

    /// A relation as stored (ignoring the consistency delay), after settling due transfers.
    pub fn relation(
        &self,
        corp_id: &str,
        userid: &str,
        external_userid: &str,
    ) -> Option<RelationView> {
        self.settle_now(corp_id);
        let inner = self.lock();
        inner
            .corps
            .get(corp_id)?
            .relation(userid, external_userid)
            .map(RelationView::from)
    }

    /// The members (departed ones included) holding a relation with the customer.
    pub fn followers(&self, corp_id: &str, external_userid: &str) -> Vec<String> {
        self.settle_now(corp_id);
        let inner = self.lock();
        inner
            .corps
            .get(corp_id)
            .and_then(|c| c.followers.get(external_userid))
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// How many members (departed ones included) hold a relation with the customer.
    pub fn customer_owner_count(&self, corp_id: &str, external_userid: &str) -> usize {
        self.followers(corp_id, external_userid).len()
    }

    /// The customers a member holds a relation with.
    pub fn customers_of(&self, corp_id: &str, userid: &str) -> Vec<String> {
        self.settle_now(corp_id);
        let inner = self.lock();
        inner
            .corps
            .get(corp_id)
            .map(|c| c.relations_of(userid).map(|(e, _)| e.to_owned()).collect())
            .unwrap_or_default()
    }

    /// A member of the directory (`None` for an unknown userid).
    pub fn member(&self, corp_id: &str, userid: &str) -> Option<MemberView> {
        let inner = self.lock();
        let staff = inner.corps.get(corp_id)?.staff.get(userid)?;
        Some(MemberView {
            userid: staff.userid.clone(),
            name: staff.name.clone(),
            department: staff.department.clone(),
            leads: staff.leads.iter().copied().collect(),
            departed: staff.is_departed(),
        })
    }

    /// A customer's WeChat name (`None` for an unknown customer).
    pub fn customer_name(&self, corp_id: &str, external_userid: &str) -> Option<String> {
        let inner = self.lock();
        let customer = inner.corps.get(corp_id)?.customers.get(external_userid)?;
        Some(customer.name.clone())
    }

    /// A group chat's owner and member ids (`None` for an unknown chat).
    pub fn chat(&self, corp_id: &str, chat_id: &str) -> Option<(String, Vec<String>)> {
        let inner = self.lock();
        let chat = inner.corps.get(corp_id)?.chats.get(chat_id)?;
        Some((
            chat.owner.clone(),
            chat.members.iter().map(|m| m.userid.clone()).collect(),
        ))
    }

    /// Every customer transfer requested in the corp (one entry per customer per request), after
    /// settling due ones.
    pub fn transfers(&self, corp_id: &str) -> Vec<TransferView> {
        self.settle_now(corp_id);
        let inner = self.lock();
        inner
            .corps
            .get(corp_id)
            .map(|c| c.transfers.iter().map(TransferView::from).collect())
            .unwrap_or_default()
    }

    /// All counters at once.
    pub fn stats(&self) -> Stats {
        let inner = self.lock();
        let delivered = inner.deliveries.iter().filter(|d| d.delivered).count();
        Stats {
            calls: inner.calls.clone(),
            total_calls: inner.total_calls,
            gettoken: inner.calls.get("gettoken").copied().unwrap_or(0),
            rate_limited: inner.rate_limited,
            faults_fired: inner.faults_fired,
            messages_sent: inner.sent_messages.len(),
            messages_dropped: inner.dropped_messages.len(),
            duplicates_suppressed: inner.duplicates_suppressed,
            writes: inner.writes.len(),
            deliveries: inner.deliveries.len(),
            delivered,
            undelivered: inner.deliveries.len() - delivered,
            delivery_attempts: inner.deliveries.iter().map(|d| u64::from(d.attempts)).sum(),
        }
    }

    /// Settles the corp's due transfers (takeovers whose 24 h passed) and pushes their callbacks.
    fn settle_now(&self, corp_id: &str) {
        let now = self.now();
        let mut out = Vec::new();
        if let Some(corp) = self.lock().corps.get_mut(corp_id) {
            transfers::settle(corp, now, &mut out);
        }
        self.enqueue(out);
    }
}

/// A chat member for `id`: staff (type 1) if the corp has such a member, otherwise external.
fn chat_member(corp: &Corp, id: &str, now: i64, invitor: Option<&str>) -> ChatMember {
    let (member_type, name, unionid) = match corp.staff.get(id) {
        Some(staff) => (1, staff.name.clone(), None),
        None => match corp.customers.get(id) {
            Some(c) => (2, c.name.clone(), c.unionid.clone()),
            None => (2, String::new(), None),
        },
    };
    ChatMember {
        userid: id.to_owned(),
        member_type,
        join_time: now,
        join_scene: 1,
        invitor: invitor.map(str::to_owned),
        group_nickname: String::new(),
        name,
        unionid,
    }
}

/// Department ids as a callback's `Department` field says them: `1,2,3`.
fn id_list(ids: &[i64]) -> String {
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
}
