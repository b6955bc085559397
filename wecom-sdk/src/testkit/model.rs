//! What the emulator knows about a corp (its staff, customers, relations, tags, group chats and
//! transfers), plus the public input and view types of [`EmulatorState`](super::EmulatorState).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use serde::Serialize;

use crate::secret::Secret;

use super::callbacks::{CallbackKind, CallbackTarget};

/// The agentid WeCom shows for the 会话内容存档 app unless told otherwise.
pub(crate) const DEFAULT_ARCHIVE_AGENT_ID: i64 = 2_000_004;

/// One corp.
pub(crate) struct Corp {
    pub(crate) id: String,
    pub(crate) apps: Vec<App>,
    pub(crate) departments: BTreeMap<i64, Department>,
    pub(crate) staff: BTreeMap<String, Staff>,
    pub(crate) customers: BTreeMap<String, Customer>,
    /// Keyed by (userid, external_userid): the order `batch/get_by_user` pages in.
    pub(crate) relations: BTreeMap<(String, String), Relation>,
    /// external_userid → its followers' userids.
    pub(crate) followers: HashMap<String, BTreeSet<String>>,
    pub(crate) tag_groups: Vec<TagGroup>,
    pub(crate) chats: BTreeMap<String, GroupChat>,
    pub(crate) transfers: Vec<Transfer>,
    /// (old owner, day) → group chats handed over that day.
    pub(crate) chat_handover_per_day: HashMap<(String, i64), u64>,
    pub(crate) targets: HashMap<CallbackKind, CallbackTarget>,
    pub(crate) archive_agent_id: i64,
    pub(crate) last_msgaudit_notify: Option<i64>,
    /// `message/send` duplicate check: (app, receivers, msgtype, content) key → the last delivery.
    pub(crate) recent_messages: HashMap<String, RecentMessage>,
    /// Size of `recent_messages` at which stale entries are pruned next.
    pub(crate) recent_prune_at: usize,
}

impl Corp {
    pub(crate) fn new(id: &str) -> Self {
        let mut departments = BTreeMap::new();
        departments.insert(
            1,
            Department {
                id: 1,
                name: "总公司".to_owned(),
                parent_id: 0,
                order: 100_000_000,
            },
        );
        Self {
            id: id.to_owned(),
            apps: Vec::new(),
            departments,
            staff: BTreeMap::new(),
            customers: BTreeMap::new(),
            relations: BTreeMap::new(),
            followers: HashMap::new(),
            tag_groups: Vec::new(),
            chats: BTreeMap::new(),
            transfers: Vec::new(),
            chat_handover_per_day: HashMap::new(),
            targets: HashMap::new(),
            archive_agent_id: DEFAULT_ARCHIVE_AGENT_ID,
            last_msgaudit_notify: None,
            recent_messages: HashMap::new(),
            recent_prune_at: 0,
        }
    }

    /// Adds (or replaces) a relation and indexes it.
    pub(crate) fn insert_relation(&mut self, userid: &str, external_userid: &str, rel: Relation) {
        self.relations
            .insert((userid.to_owned(), external_userid.to_owned()), rel);
        self.followers
            .entry(external_userid.to_owned())
            .or_default()
            .insert(userid.to_owned());
    }

    /// Removes a relation; returns it.
    pub(crate) fn remove_relation(
        &mut self,
        userid: &str,
        external_userid: &str,
    ) -> Option<Relation> {
        let removed = self
            .relations
            .remove(&(userid.to_owned(), external_userid.to_owned()));
        if let Some(set) = self.followers.get_mut(external_userid) {
            set.remove(userid);
            if set.is_empty() {
                self.followers.remove(external_userid);
            }
        }
        removed
    }

    pub(crate) fn relation(&self, userid: &str, external_userid: &str) -> Option<&Relation> {
        self.relations
            .get(&(userid.to_owned(), external_userid.to_owned()))
    }

    pub(crate) fn relation_mut(
        &mut self,
        userid: &str,
        external_userid: &str,
    ) -> Option<&mut Relation> {
        self.relations
            .get_mut(&(userid.to_owned(), external_userid.to_owned()))
    }

    /// The customers a member follows, in external_userid order.
    pub(crate) fn relations_of<'a>(
        &'a self,
        userid: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a Relation)> + 'a {
        self.relations
            .range((userid.to_owned(), String::new())..)
            .take_while(move |((u, _), _)| u == userid)
            .map(|((_, e), r)| (e.as_str(), r))
    }

    /// How many customers a member follows.
    pub(crate) fn customer_count(&self, userid: &str) -> usize {
        self.relations_of(userid).count()
    }

    /// A member still employed (not departed).
    pub(crate) fn active_staff(&self, userid: &str) -> Option<&Staff> {
        self.staff.get(userid).filter(|s| !s.is_departed())
    }

    /// Every live (not deleted) tag: id → (group, tag).
    pub(crate) fn tag_index(&self) -> HashMap<&str, (&TagGroup, &Tag)> {
        let mut index = HashMap::new();
        for group in self.tag_groups.iter().filter(|g| !g.deleted) {
            for tag in group.tags.iter().filter(|t| !t.deleted) {
                index.insert(tag.id.as_str(), (group, tag));
            }
        }
        index
    }

    /// How many live corp tags exist (the 3000 limit counts these).
    pub(crate) fn live_tag_count(&self) -> usize {
        self.tag_groups
            .iter()
            .filter(|g| !g.deleted)
            .map(|g| g.tags.iter().filter(|t| !t.deleted).count())
            .sum()
    }

    /// Removes deleted tags from every relation.
    pub(crate) fn forget_tags(&mut self, tag_ids: &BTreeSet<String>) {
        if tag_ids.is_empty() {
            return;
        }
        for rel in self.relations.values_mut() {
            rel.tag_ids.retain(|t| !tag_ids.contains(t));
        }
    }

    /// Makes sure a member exists, creating a plain one in the root department if needed.
    pub(crate) fn ensure_staff(&mut self, userid: &str) {
        if !self.staff.contains_key(userid) {
            self.staff
                .insert(userid.to_owned(), Staff::new(userid, userid, vec![1]));
        }
    }
}

/// One secret of a corp (an app, or the 客户联系 / 通讯录 / 会话存档 secrets).
pub(crate) struct App {
    pub(crate) secret: Secret<String>,
    pub(crate) agent_id: Option<i64>,
    /// The current access token and its expiry (emulator clock).
    pub(crate) token: Option<(Secret<String>, i64)>,
    /// The corp jsapi_ticket fetched with this app's token, and its expiry.
    pub(crate) corp_ticket: Option<(String, i64)>,
    /// The agent_config ticket of this app, and its expiry.
    pub(crate) agent_ticket: Option<(String, i64)>,
}

pub(crate) struct Department {
    pub(crate) id: i64,
    pub(crate) name: String,
    pub(crate) parent_id: i64,
    pub(crate) order: i64,
}

pub(crate) struct Staff {
    pub(crate) userid: String,
    pub(crate) name: String,
    pub(crate) department: Vec<i64>,
    pub(crate) position: String,
    pub(crate) mobile: String,
    pub(crate) gender: i64,
    pub(crate) email: String,
    /// 1 active, 5 left.
    pub(crate) status: i64,
    /// 客户联系 enabled (listed by `get_follow_user_list`).
    pub(crate) follow_enabled: bool,
    /// In the chat-archive scope (`msgaudit/get_permit_user_list`).
    pub(crate) archive_permitted: bool,
    pub(crate) customer_limit: Option<usize>,
    pub(crate) departed_at: Option<i64>,
    /// The departments the member leads (`is_leader_in_dept`).
    pub(crate) leads: BTreeSet<i64>,
}

impl Staff {
    pub(crate) fn new(userid: &str, name: &str, department: Vec<i64>) -> Self {
        Self {
            userid: userid.to_owned(),
            name: name.to_owned(),
            department: if department.is_empty() {
                vec![1]
            } else {
                department
            },
            position: String::new(),
            mobile: String::new(),
            gender: 0,
            email: String::new(),
            status: 1,
            follow_enabled: true,
            archive_permitted: true,
            customer_limit: None,
            departed_at: None,
            leads: BTreeSet::new(),
        }
    }

    pub(crate) fn is_departed(&self) -> bool {
        self.status == 5
    }
}

pub(crate) struct Customer {
    pub(crate) external_userid: String,
    pub(crate) name: String,
    /// 1 WeChat user, 2 WeCom user of another corp.
    pub(crate) customer_type: i64,
    pub(crate) gender: i64,
    pub(crate) avatar: String,
    pub(crate) unionid: Option<String>,
    pub(crate) corp_name: Option<String>,
    pub(crate) position: Option<String>,
    pub(crate) refuses_transfer: bool,
}

#[derive(Clone)]
pub(crate) struct Relation {
    pub(crate) remark: String,
    pub(crate) description: String,
    pub(crate) createtime: i64,
    pub(crate) tag_ids: Vec<String>,
    pub(crate) remark_corp_name: Option<String>,
    pub(crate) remark_mobiles: Vec<String>,
    pub(crate) oper_userid: String,
    pub(crate) add_way: i64,
    pub(crate) state: Option<String>,
    pub(crate) deleted_by_customer: bool,
    /// Read APIs show the relation from this time on (consistency delay).
    pub(crate) visible_at: i64,
}

pub(crate) struct TagGroup {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) create_time: i64,
    pub(crate) order: u32,
    pub(crate) deleted: bool,
    pub(crate) tags: Vec<Tag>,
}

pub(crate) struct Tag {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) create_time: i64,
    pub(crate) order: u32,
    pub(crate) deleted: bool,
}

pub(crate) struct GroupChat {
    pub(crate) chat_id: String,
    pub(crate) name: String,
    pub(crate) owner: String,
    pub(crate) create_time: i64,
    pub(crate) notice: String,
    pub(crate) members: Vec<ChatMember>,
    pub(crate) admin_list: Vec<String>,
    pub(crate) member_version: String,
    /// 0 normal, 1 owner left, 2 inheriting, 3 inherited.
    pub(crate) status: i64,
    pub(crate) dismissed: bool,
    /// Emulator times of the on-job transfers of this chat.
    pub(crate) onjob_transfers: Vec<i64>,
}

pub(crate) struct ChatMember {
    pub(crate) userid: String,
    /// 1 staff, 2 external.
    pub(crate) member_type: i64,
    pub(crate) join_time: i64,
    /// 1 direct invite, 2 invite link, 3 QR code.
    pub(crate) join_scene: i64,
    pub(crate) invitor: Option<String>,
    pub(crate) group_nickname: String,
    pub(crate) name: String,
    pub(crate) unionid: Option<String>,
}

/// On-job (在职继承) or resigned (离职继承) transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransferMode {
    /// `externalcontact/transfer_customer`: the handover member is still employed.
    OnJob,
    /// `externalcontact/resigned/transfer_customer`: the handover member has left.
    Resigned,
}

#[derive(Clone)]
pub(crate) struct Transfer {
    pub(crate) mode: TransferMode,
    pub(crate) handover: String,
    pub(crate) takeover: String,
    pub(crate) external_userid: String,
    /// 1 done, 2 waiting, 3 refused, 4 taker at limit, 5 no record.
    pub(crate) status: i64,
    pub(crate) takeover_time: i64,
    pub(crate) requested_at: i64,
}

/// A customer for [`EmulatorState::add_customer`](super::EmulatorState::add_customer). Only
/// `name` matters; everything else has a sensible default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewCustomer {
    /// The customer's WeChat name (a Chinese name is generated when empty).
    pub name: String,
    /// The id to use (`wm…`/`wo…`); generated (`wm` + 30 characters) when `None`.
    pub external_userid: Option<String>,
    /// The `state` of the 「联系我」 code that brought the customer (sent as `State`).
    pub state: Option<String>,
    /// The member's remark for the customer.
    pub remark: Option<String>,
    /// The member's description of the customer.
    pub description: Option<String>,
    /// Corp tags on the new relation (unknown ids are ignored).
    pub tag_ids: Vec<String>,
    /// Remark mobiles on the new relation.
    pub remark_mobiles: Vec<String>,
    /// `add_way` (default 1, QR code).
    pub add_way: Option<i64>,
    /// 1 WeChat user (default), 2 WeCom user of another corp.
    pub customer_type: Option<i64>,
    /// For `customer_type` 2: the customer's company.
    pub corp_name: Option<String>,
    /// `WelcomeCode` to send with the event (none when `None`).
    pub welcome_code: Option<String>,
}

/// Changes for [`EmulatorState::edit_relation`](super::EmulatorState::edit_relation), made by the
/// member in the WeCom client (so WeCom pushes `edit_external_contact`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelationEdit {
    /// A new remark, if any.
    pub remark: Option<String>,
    /// A new description, if any.
    pub description: Option<String>,
    /// Corp tags to add (unknown ids are ignored).
    pub add_tags: Vec<String>,
    /// Corp tags to remove.
    pub remove_tags: Vec<String>,
}

/// A member for [`EmulatorState::add_staff`](super::EmulatorState::add_staff).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewStaff {
    /// The userid (ASCII, ≤ 64 bytes).
    pub userid: String,
    /// The member's name.
    pub name: String,
    /// Department ids (the root, 1, when empty).
    pub department: Vec<i64>,
}

/// A relation as the emulator holds it (regardless of the consistency delay).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationView {
    /// The member's remark.
    pub remark: String,
    /// The member's description.
    pub description: String,
    /// Corp tag ids on the relation.
    pub tag_ids: Vec<String>,
    /// The customer deleted the member (`del_follow_user`); the relation is still listed.
    pub deleted_by_customer: bool,
    /// Remark mobiles.
    pub remark_mobiles: Vec<String>,
    /// The `state` the relation was added with.
    pub state: Option<String>,
    /// When the relation was added (emulator clock).
    pub createtime: i64,
    /// `add_way`.
    pub add_way: i64,
}

impl From<&Relation> for RelationView {
    fn from(r: &Relation) -> Self {
        Self {
            remark: r.remark.clone(),
            description: r.description.clone(),
            tag_ids: r.tag_ids.clone(),
            deleted_by_customer: r.deleted_by_customer,
            remark_mobiles: r.remark_mobiles.clone(),
            state: r.state.clone(),
            createtime: r.createtime,
            add_way: r.add_way,
        }
    }
}

/// A member as the directory holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// userid.
    pub userid: String,
    /// Name.
    pub name: String,
    /// Department ids, the main one first.
    pub department: Vec<i64>,
    /// The departments they lead.
    pub leads: Vec<i64>,
    /// They left the company.
    pub departed: bool,
}

/// One customer of one transfer request, as `transfer_result` would report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferView {
    /// On-job or resigned.
    pub mode: TransferMode,
    /// The member handing over.
    pub handover_userid: String,
    /// The member taking over.
    pub takeover_userid: String,
    /// The customer.
    pub external_userid: String,
    /// 1 done, 2 waiting, 3 refused by the customer, 4 taker at the customer limit, 5 no record.
    pub status: i64,
    /// When the takeover happens or happened (0 when refused).
    pub takeover_time: i64,
    /// When the transfer was requested (emulator clock).
    pub requested_at: i64,
}

impl From<&Transfer> for TransferView {
    fn from(t: &Transfer) -> Self {
        Self {
            mode: t.mode,
            handover_userid: t.handover.clone(),
            takeover_userid: t.takeover.clone(),
            external_userid: t.external_userid.clone(),
            status: t.status,
            takeover_time: t.takeover_time,
            requested_at: t.requested_at,
        }
    }
}

/// A `message/send` delivery WeCom dropped silently (over the per-member limit).
#[derive(Debug, Clone, PartialEq)]
pub struct DroppedMessage {
    /// The sending app.
    pub agent_id: i64,
    /// The recipient whose limit was reached.
    pub userid: String,
    /// The request body.
    pub body: serde_json::Value,
}

/// The last delivery of one message content to one receiver spec, for the duplicate check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecentMessage {
    /// Emulator clock.
    pub(crate) sent_at: i64,
    /// The `msgid` that delivery answered with.
    pub(crate) msgid: String,
}

/// A successful call of a write API ([`EmulatorState::writes`](super::EmulatorState::writes)),
/// for measuring how long a change takes from a client's decision to WeCom. Serializes without
/// `at` (an [`Instant`] means nothing to another process); `at_unix_ms` is the same moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WriteRecord {
    /// The API path, as in [`EmulatorState::calls`](super::EmulatorState::calls)
    /// (`externalcontact/mark_tag`, `message/send`, …).
    pub api: String,
    /// The calling corp.
    pub corp_id: String,
    /// When the emulator applied the write (real, monotonic time; not the emulator clock).
    #[serde(skip)]
    pub at: Instant,
    /// The same moment in Unix epoch milliseconds (real time).
    pub at_unix_ms: i64,
    /// The request's JSON body.
    pub body: serde_json::Value,
}
