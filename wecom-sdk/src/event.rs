//! Typed callback events, read from the decrypted plaintext XML (protocol reference §3).
//!
//! [`parse_event`] walks the document once with [`crate::xml::walk`] (so CDATA and plain text read
//! the same, unknown elements are ignored, DTDs and entity bombs are refused) and returns a
//! [`ParsedEvent`]: the common [`MessageHeader`] every payload carries (`ToUserName`,
//! `FromUserName`, `CreateTime`, `MsgType`, `Event`, `ChangeType`, `MsgId`, `AgentID`; identical to
//! what [`crate::envelope::parse_header`] returns) plus a [`CallbackEvent`] chosen on
//! `(MsgType, Event, ChangeType)`.
//!
//! How fields are read, for every variant:
//!
//! * The ids an event is *about* (`UserID` and `ExternalUserID` of a customer change, `ChatId`,
//!   a tag's `Id`, a department's `Id`…) are required: missing or empty is
//!   [`EventError::Missing`], and an id that fails its check in [`crate::ids`] is
//!   [`EventError::InvalidId`]. Ids and numbers are trimmed; numbers may sit inside CDATA.
//! * Every other field is optional: an absent or empty element is `None` (or an empty `Vec` for
//!   lists). A number that is present but does not parse is [`EventError::InvalidNumber`].
//! * A malformed document is an error; an event we do not model (or a known `Event` with an
//!   unknown `ChangeType`) is **not**: it becomes [`CallbackEvent::Unknown`] with the raw XML, so
//!   it can be stored and acknowledged (WeCom adds event types without notice).
//!
//! ```
//! use wecom_sdk::event::{CallbackEvent, ExternalContactEvent, parse_event};
//!
//! let xml = "<xml><ToUserName><![CDATA[ww1436e0e65a779aee]]></ToUserName>\
//!     <FromUserName><![CDATA[sys]]></FromUserName><CreateTime>1700000000</CreateTime>\
//!     <MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_contact]]></Event>\
//!     <ChangeType><![CDATA[del_external_contact]]></ChangeType><UserID><![CDATA[zhangsan]]></UserID>\
//!     <ExternalUserID><![CDATA[wmAJ2GCAAAXtWyujaWJHDDGi0mACAAAA]]></ExternalUserID></xml>";
//! let parsed = parse_event(xml)?;
//! assert_eq!(parsed.header.create_time, Some(1_700_000_000));
//! let CallbackEvent::ExternalContact(ExternalContactEvent::StaffDeletedCustomer(del)) = parsed.event
//! else {
//!     panic!("not a deletion");
//! };
//! assert_eq!(del.user_id.as_str(), "zhangsan");
//! assert!(!del.is_by_transfer(), "no Source: the staff member deleted the customer");
//! # Ok::<(), wecom_sdk::event::EventError>(())
//! ```

use std::borrow::Cow;
use std::str::FromStr;

use crate::envelope::{HeaderFields, MessageHeader};
use crate::ids::{ChatId, CorpId, ExternalUserId, IdError, TagId, UserId};
use crate::xml::{self, XmlError};

/// Why a decrypted message could not be read as an event. An *unknown* event is not an error
/// (see [`CallbackEvent::Unknown`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The XML is malformed or refused (see [`XmlError`]).
    #[error(transparent)]
    Xml(#[from] XmlError),
    /// A required element (named as WeCom spells it) is absent or empty.
    #[error("required element {0} is missing or empty")]
    Missing(&'static str),
    /// A numeric element (named as WeCom spells it) holds something other than a number.
    #[error("element {0} is not a valid number")]
    InvalidNumber(&'static str),
    /// An id failed its check.
    #[error("element {field} is not a valid id")]
    InvalidId {
        /// The element, as WeCom spells it.
        field: &'static str,
        /// What was wrong with it.
        #[source]
        source: IdError,
    },
}

/// A decrypted callback: the header every payload carries, and the typed event.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedEvent {
    /// `ToUserName`, `FromUserName`, `CreateTime`, `MsgType`, `Event`, `ChangeType`, `MsgId`, `AgentID`.
    pub header: MessageHeader,
    /// What happened.
    pub event: CallbackEvent,
}

impl ParsedEvent {
    /// `ToUserName` as a corp id (it is the corp id for a corp's own apps, the only kind we serve).
    pub fn corp_id(&self) -> Result<CorpId, IdError> {
        CorpId::try_from(self.header.to_user_name.as_str())
    }
}

/// What a callback says happened, by `(MsgType, Event, ChangeType)`.
#[derive(Debug, Clone, PartialEq)]
pub enum CallbackEvent {
    /// `Event=change_external_contact` (客户变更).
    ExternalContact(ExternalContactEvent),
    /// `Event=change_external_chat` (客户群变更).
    ExternalChat(ExternalChatEvent),
    /// `Event=change_external_tag` (企业客户标签变更).
    ExternalTag(ExternalTagEvent),
    /// `Event=change_contact` (通讯录变更).
    Contact(ContactEvent),
    /// `Event=msgaudit_notify`: new chat-archive messages are waiting; no payload (the archive app's
    /// id is in the header's `agent_id`).
    MsgAuditNotify,
    /// A message a staff member sent to one of our apps (`MsgType` = `text`, `image`…).
    Message {
        /// `FromUserName`: the staff member who sent it.
        from: UserId,
        /// What was sent.
        message: AppMessage,
    },
    /// A staff member used one of our apps (`Event` = `click`, `view`, `enter_agent`).
    AppEvent {
        /// `FromUserName`: the staff member.
        from: UserId,
        /// What they did.
        event: AppEvent,
    },
    /// Anything not modelled above, including a known `Event` with an unknown `ChangeType`. Store
    /// it and acknowledge it; never refuse it.
    Unknown {
        /// `MsgType` (empty when absent).
        msg_type: String,
        /// `Event`, when present.
        event: Option<String>,
        /// `ChangeType`, when present.
        change_type: Option<String>,
        /// The whole decrypted XML, unchanged.
        raw: String,
    },
}

impl CallbackEvent {
    /// True for [`CallbackEvent::Unknown`].
    pub fn is_unknown(&self) -> bool {
        matches!(self, Self::Unknown { .. })
    }
}

// ---------------------------------------------------------------------------------------------
// change_external_contact
// ---------------------------------------------------------------------------------------------

/// `change_external_contact`, by `ChangeType`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExternalContactEvent {
    /// `add_external_contact`: a staff member added a customer (or accepted one).
    Added(CustomerAdded),
    /// `edit_external_contact`: the staff member edited the customer's remark, description or tags.
    Edited(ContactRelation),
    /// `add_half_external_contact`: the customer added a staff member who skips verification; the
    /// staff member has not confirmed yet.
    HalfAdded(CustomerAdded),
    /// `del_external_contact`: the staff member deleted the customer (员工删客户).
    StaffDeletedCustomer(StaffDeletedCustomer),
    /// `del_follow_user`: the customer deleted the staff member (客户删员工).
    CustomerDeletedStaff(ContactRelation),
    /// `transfer_fail`: a handed-over customer could not be taken over.
    TransferFailed(TransferFailed),
    /// `msg_audit_approved`: the customer agreed to chat archiving.
    MsgAuditApproved(MsgAuditApproved),
}

impl ExternalContactEvent {
    /// The staff member and the customer the event is about.
    pub fn relation(&self) -> (&UserId, &ExternalUserId) {
        match self {
            Self::Added(e) | Self::HalfAdded(e) => (&e.user_id, &e.external_user_id),
            Self::Edited(e) | Self::CustomerDeletedStaff(e) => (&e.user_id, &e.external_user_id),
            Self::StaffDeletedCustomer(e) => (&e.user_id, &e.external_user_id),
            Self::TransferFailed(e) => (&e.user_id, &e.external_user_id),
            Self::MsgAuditApproved(e) => (&e.user_id, &e.external_user_id),
        }
    }
}

/// A staff member and a customer, for the events that carry nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactRelation {
    /// `UserID`: the staff member.
    pub user_id: UserId,
    /// `ExternalUserID`: the customer.
    pub external_user_id: ExternalUserId,
}

/// `add_external_contact` / `add_half_external_contact`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerAdded {
    /// `UserID`: the staff member.
    pub user_id: UserId,
    /// `ExternalUserID`: the customer.
    pub external_user_id: ExternalUserId,
    /// `State`: the `state` of the 「联系我」 code or link that brought the customer.
    pub state: Option<String>,
    /// `WelcomeCode`: usable once, for 20 s, with `send_welcome_msg`.
    pub welcome_code: Option<String>,
}

/// `del_external_contact`: the staff member deleted the customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffDeletedCustomer {
    /// `UserID`: the staff member.
    pub user_id: UserId,
    /// `ExternalUserID`: the customer.
    pub external_user_id: ExternalUserId,
    /// `Source`: `DELETE_BY_TRANSFER` when WeCom removed the relation itself after an on-job transfer.
    pub source: Option<String>,
}

impl StaffDeletedCustomer {
    /// `Source=DELETE_BY_TRANSFER`: the relation went away because the customer was handed over
    /// (在职继承), not because the staff member deleted them. Do not alert on it.
    pub fn is_by_transfer(&self) -> bool {
        self.source.as_deref() == Some("DELETE_BY_TRANSFER")
    }
}

/// `transfer_fail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferFailed {
    /// `UserID`: per the docs the staff member; in practice the taker (`transfer_result` is authoritative).
    pub user_id: UserId,
    /// `ExternalUserID`: the customer.
    pub external_user_id: ExternalUserId,
    /// `FailReason`.
    pub fail_reason: Option<TransferFailReason>,
}

/// Why a handed-over customer was not taken over (`FailReason`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferFailReason {
    /// `customer_refused`.
    CustomerRefused,
    /// `customer_limit_exceed`: the taker reached the customer limit.
    CustomerLimitExceed,
    /// A value not documented when this was written.
    Other(String),
}

/// `msg_audit_approved`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MsgAuditApproved {
    /// `UserID`: the staff member.
    pub user_id: UserId,
    /// `ExternalUserID`: the customer who agreed.
    pub external_user_id: ExternalUserId,
    /// `WelcomeCode`.
    pub welcome_code: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// change_external_chat
// ---------------------------------------------------------------------------------------------

/// `change_external_chat`, by `ChangeType`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExternalChatEvent {
    /// `create`.
    Created {
        /// `ChatId`.
        chat_id: ChatId,
    },
    /// `update`.
    Updated(GroupChatUpdate),
    /// `dismiss`.
    Dismissed {
        /// `ChatId`.
        chat_id: ChatId,
    },
}

impl ExternalChatEvent {
    /// The group chat the event is about.
    pub fn chat_id(&self) -> &ChatId {
        match self {
            Self::Created { chat_id } | Self::Dismissed { chat_id } => chat_id,
            Self::Updated(update) => &update.chat_id,
        }
    }
}

/// `change_external_chat` / `update`. Which members changed is not always said: compare
/// `cur_mem_ver` with `groupchat/get`'s `member_version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupChatUpdate {
    /// `ChatId`.
    pub chat_id: ChatId,
    /// `UpdateDetail`.
    pub update_detail: Option<ChatUpdateDetail>,
    /// `JoinScene` (add_member): 0 invited by a member, 3 scanned the group QR code.
    pub join_scene: Option<u32>,
    /// `QuitScene` (del_member): 0 left, 1 removed by the owner or an admin.
    pub quit_scene: Option<u32>,
    /// `MemChangeCnt`: how many members changed.
    pub mem_change_cnt: Option<u32>,
    /// `MemChangeList/Item`: the changed members. Staff userids and customer ids mix here, so they
    /// stay strings.
    pub mem_change_list: Vec<String>,
    /// `LastMemVer`: member-list version before the change.
    pub last_mem_ver: Option<String>,
    /// `CurMemVer`: member-list version after the change.
    pub cur_mem_ver: Option<String>,
}

/// What changed in a group chat (`UpdateDetail`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatUpdateDetail {
    /// `add_member`.
    AddMember,
    /// `del_member`.
    DelMember,
    /// `change_owner`.
    ChangeOwner,
    /// `change_name`.
    ChangeName,
    /// `change_notice`.
    ChangeNotice,
    /// A value not documented when this was written.
    Other(String),
}

// ---------------------------------------------------------------------------------------------
// change_external_tag
// ---------------------------------------------------------------------------------------------

/// `change_external_tag`, by `ChangeType`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExternalTagEvent {
    /// `create`.
    Created(TagChange),
    /// `update`: name or order changed.
    Updated(TagChange),
    /// `delete`. Deleting a group deletes its tags with no event per tag.
    Deleted(TagChange),
    /// `shuffle`: the tags of a group were reordered.
    Shuffled {
        /// `Id`: the group; `None` (an empty `Id`) means every group was reordered.
        group_id: Option<TagId>,
        /// `StrategyId`, for strategy (规则组) tags.
        strategy_id: Option<u64>,
    },
}

/// A created, updated or deleted customer tag or tag group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagChange {
    /// `Id`: the tag or the tag group, as `tag_type` says.
    pub id: TagId,
    /// `TagType`.
    pub tag_type: Option<TagKind>,
    /// `StrategyId`, for strategy (规则组) tags.
    pub strategy_id: Option<u64>,
}

/// `TagType`: what an `Id` in `change_external_tag` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagKind {
    /// `tag`.
    Tag,
    /// `tag_group`.
    TagGroup,
    /// A value not documented when this was written.
    Other(String),
}

// ---------------------------------------------------------------------------------------------
// change_contact
// ---------------------------------------------------------------------------------------------

/// `change_contact` (通讯录), by `ChangeType`. Contact-sync URLs configured after 2022-08-15 only
/// get `UserID`/`Department` and `Id`/`ParentId`: re-read with `user/get`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactEvent {
    /// `create_user`.
    StaffCreated(Box<StaffChange>),
    /// `update_user`: only the changed fields are sent.
    StaffUpdated(Box<StaffChange>),
    /// `delete_user`: the staff member left (离职), the trigger to offer resigned transfer.
    StaffDeparted {
        /// `UserID`.
        user_id: UserId,
    },
    /// `create_party`.
    DepartmentCreated(DepartmentChange),
    /// `update_party`.
    DepartmentUpdated(DepartmentChange),
    /// `delete_party`.
    DepartmentDeleted {
        /// `Id`.
        id: u32,
    },
    /// `update_tag`: members of a contacts tag (通讯录标签, not a customer tag) changed.
    TagMembersUpdated(ContactTagChange),
}

/// `create_user` / `update_user` (boxed in [`ContactEvent`]: it is by far the largest event).
/// Numbers are WeCom's codes, kept as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffChange {
    /// `UserID`.
    pub user_id: UserId,
    /// `NewUserID`: only when the userid itself changed.
    pub new_user_id: Option<UserId>,
    /// `Name`.
    pub name: Option<String>,
    /// `Department`: department ids, from `"1,2,3"`.
    pub department: Option<Vec<u32>>,
    /// `MainDepartment`.
    pub main_department: Option<u32>,
    /// `IsLeaderInDept`: one flag per department, from `"1,0,0"`.
    pub is_leader_in_dept: Option<Vec<bool>>,
    /// `DirectLeader`: from `"lisi,wangwu"`.
    pub direct_leader: Option<Vec<UserId>>,
    /// `Position`.
    pub position: Option<String>,
    /// `Mobile`.
    pub mobile: Option<String>,
    /// `Gender`: 1 male, 2 female.
    pub gender: Option<u8>,
    /// `Email`.
    pub email: Option<String>,
    /// `BizMail`.
    pub biz_mail: Option<String>,
    /// `Status`: 1 active, 2 disabled, 4 not activated, 5 left.
    pub status: Option<u8>,
    /// `Avatar`: URL.
    pub avatar: Option<String>,
    /// `Alias`.
    pub alias: Option<String>,
    /// `Telephone`.
    pub telephone: Option<String>,
    /// `Address`.
    pub address: Option<String>,
    /// `ExtAttr/Item`: custom attributes (empty when absent).
    pub ext_attr: Vec<ExtAttr>,
}

/// One custom staff attribute (`ExtAttr/Item`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtAttr {
    /// `Type` 0: `<Text><Value/></Text>`.
    Text {
        /// `Name`.
        name: String,
        /// `Text/Value`.
        value: String,
    },
    /// `Type` 1: `<Web><Title/><Url/></Web>`.
    Web {
        /// `Name`.
        name: String,
        /// `Web/Title`.
        title: String,
        /// `Web/Url`.
        url: String,
    },
}

/// `create_party` / `update_party`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepartmentChange {
    /// `Id`.
    pub id: u32,
    /// `Name`.
    pub name: Option<String>,
    /// `ParentId`.
    pub parent_id: Option<u32>,
    /// `Order`: larger sorts first.
    pub order: Option<u32>,
}

/// `update_tag`: a contacts tag's members changed (comma-separated lists, empty when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactTagChange {
    /// `TagId`: a contacts tag is a number, unlike a customer tag's [`TagId`].
    pub tag_id: u32,
    /// `AddUserItems`.
    pub add_user_items: Vec<UserId>,
    /// `DelUserItems`.
    pub del_user_items: Vec<UserId>,
    /// `AddPartyItems`: department ids.
    pub add_party_items: Vec<u32>,
    /// `DelPartyItems`: department ids.
    pub del_party_items: Vec<u32>,
}

// ---------------------------------------------------------------------------------------------
// App messages and app events
// ---------------------------------------------------------------------------------------------

/// A message sent to one of our apps, by `MsgType`. `MsgId` and `AgentID` are in the header.
#[derive(Debug, Clone, PartialEq)]
pub enum AppMessage {
    /// `text`.
    Text {
        /// `Content`.
        content: Option<String>,
    },
    /// `image`.
    Image {
        /// `PicUrl`.
        pic_url: Option<String>,
        /// `MediaId` (valid 3 days).
        media_id: Option<String>,
    },
    /// `voice`.
    Voice {
        /// `MediaId` (valid 3 days).
        media_id: Option<String>,
        /// `Format`, e.g. `amr`.
        format: Option<String>,
    },
    /// `video`.
    Video {
        /// `MediaId` (valid 3 days).
        media_id: Option<String>,
        /// `ThumbMediaId`.
        thumb_media_id: Option<String>,
    },
    /// `location`.
    Location {
        /// `Location_X`: latitude.
        latitude: Option<f64>,
        /// `Location_Y`: longitude.
        longitude: Option<f64>,
        /// `Scale`: map zoom.
        scale: Option<u32>,
        /// `Label`: the place's name.
        label: Option<String>,
        /// `AppType`, e.g. `wxwork`.
        app_type: Option<String>,
    },
    /// `link`.
    Link {
        /// `Title`.
        title: Option<String>,
        /// `Description`.
        description: Option<String>,
        /// `Url`.
        url: Option<String>,
        /// `PicUrl`.
        pic_url: Option<String>,
    },
}

/// Something a staff member did in one of our apps, by `Event`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppEvent {
    /// `click`: a menu button.
    Click {
        /// `EventKey`: the button's key.
        event_key: Option<String>,
    },
    /// `view`: a menu link.
    View {
        /// `EventKey`: the URL.
        url: Option<String>,
    },
    /// `enter_agent`: the staff member opened the app.
    EnterAgent {
        /// `EventKey` (usually empty).
        event_key: Option<String>,
    },
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

/// Reads a decrypted message as a typed event. One pass over the document; see the module docs for
/// what is required and what is optional. Never panics.
pub fn parse_event(plaintext: &str) -> Result<ParsedEvent, EventError> {
    let mut f = Fields::default();
    xml::walk(plaintext, |leaf| {
        // The walker lends the path only for this call; names are matched, never stored.
        match leaf.path {
            [name] => {
                if let Some(slot) = f.slot(name) {
                    *slot = Some(leaf.text);
                }
            }
            [list, item] if list == "MemChangeList" && item == "Item" => {
                f.mem_change_list.push(leaf.text);
            }
            [attr, item, rest @ ..] if attr == "ExtAttr" && item == "Item" => {
                f.ext_attr.push(rest, leaf.text);
            }
            _ => {}
        }
    })?;

    // The same reading as `parse_header`, so the two agree.
    let header = std::mem::take(&mut f.header).into_header();

    let change_type = header.change_type.as_deref().unwrap_or("");
    let known = match (header.msg_type.as_str(), header.event.as_deref()) {
        ("event", Some("change_external_contact")) => {
            external_contact(change_type, f)?.map(CallbackEvent::ExternalContact)
        }
        ("event", Some("change_external_chat")) => {
            external_chat(change_type, f)?.map(CallbackEvent::ExternalChat)
        }
        ("event", Some("change_external_tag")) => {
            external_tag(change_type, f)?.map(CallbackEvent::ExternalTag)
        }
        ("event", Some("change_contact")) => contact(change_type, f)?.map(CallbackEvent::Contact),
        ("event", Some("msgaudit_notify")) => Some(CallbackEvent::MsgAuditNotify),
        ("event", Some(event @ ("click" | "view" | "enter_agent"))) => {
            let from = required_id("FromUserName", Some(Cow::Borrowed(&header.from_user_name)))?;
            let event_key = owned(f.event_key);
            let event = match event {
                "click" => AppEvent::Click { event_key },
                "view" => AppEvent::View { url: event_key },
                _ => AppEvent::EnterAgent { event_key },
            };
            Some(CallbackEvent::AppEvent { from, event })
        }
        (msg_type @ ("text" | "image" | "voice" | "video" | "location" | "link"), _) => {
            let from = required_id("FromUserName", Some(Cow::Borrowed(&header.from_user_name)))?;
            let message = app_message(msg_type, f)?;
            Some(CallbackEvent::Message { from, message })
        }
        _ => None,
    };
    let event = match known {
        Some(event) => event,
        None => CallbackEvent::Unknown {
            msg_type: header.msg_type.clone(),
            event: header.event.clone(),
            change_type: header.change_type.clone(),
            raw: plaintext.to_owned(),
        },
    };
    Ok(ParsedEvent { header, event })
}

fn external_contact(
    change_type: &str,
    f: Fields<'_>,
) -> Result<Option<ExternalContactEvent>, EventError> {
    let known = matches!(
        change_type,
        "add_external_contact"
            | "edit_external_contact"
            | "add_half_external_contact"
            | "del_external_contact"
            | "del_follow_user"
            | "transfer_fail"
            | "msg_audit_approved"
    );
    if !known {
        return Ok(None);
    }
    let user_id: UserId = required_id("UserID", f.user_id)?;
    let external_user_id: ExternalUserId = required_id("ExternalUserID", f.external_user_id)?;
    let added = |state, welcome_code| CustomerAdded {
        user_id: user_id.clone(),
        external_user_id: external_user_id.clone(),
        state: owned(state),
        welcome_code: owned(welcome_code),
    };
    let event = match change_type {
        "add_external_contact" => ExternalContactEvent::Added(added(f.state, f.welcome_code)),
        "add_half_external_contact" => {
            ExternalContactEvent::HalfAdded(added(f.state, f.welcome_code))
        }
        "edit_external_contact" => ExternalContactEvent::Edited(ContactRelation {
            user_id,
            external_user_id,
        }),
        "del_follow_user" => ExternalContactEvent::CustomerDeletedStaff(ContactRelation {
            user_id,
            external_user_id,
        }),
        "del_external_contact" => {
            ExternalContactEvent::StaffDeletedCustomer(StaffDeletedCustomer {
                user_id,
                external_user_id,
                source: owned(f.source),
            })
        }
        "transfer_fail" => ExternalContactEvent::TransferFailed(TransferFailed {
            user_id,
            external_user_id,
            fail_reason: owned(f.fail_reason).map(|r| match r.as_str() {
                "customer_refused" => TransferFailReason::CustomerRefused,
                "customer_limit_exceed" => TransferFailReason::CustomerLimitExceed,
                _ => TransferFailReason::Other(r),
            }),
        }),
        _ => ExternalContactEvent::MsgAuditApproved(MsgAuditApproved {
            user_id,
            external_user_id,
            welcome_code: owned(f.welcome_code),
        }),
    };
    Ok(Some(event))
}

fn external_chat(
    change_type: &str,
    f: Fields<'_>,
) -> Result<Option<ExternalChatEvent>, EventError> {
    if !matches!(change_type, "create" | "update" | "dismiss") {
        return Ok(None);
    }
    let chat_id: ChatId = required_id("ChatId", f.chat_id)?;
    let event = match change_type {
        "create" => ExternalChatEvent::Created { chat_id },
        "dismiss" => ExternalChatEvent::Dismissed { chat_id },
        _ => ExternalChatEvent::Updated(GroupChatUpdate {
            chat_id,
            update_detail: owned(f.update_detail).map(|d| match d.as_str() {
                "add_member" => ChatUpdateDetail::AddMember,
                "del_member" => ChatUpdateDetail::DelMember,
                "change_owner" => ChatUpdateDetail::ChangeOwner,
                "change_name" => ChatUpdateDetail::ChangeName,
                "change_notice" => ChatUpdateDetail::ChangeNotice,
                _ => ChatUpdateDetail::Other(d),
            }),
            join_scene: number("JoinScene", f.join_scene)?,
            quit_scene: number("QuitScene", f.quit_scene)?,
            mem_change_cnt: number("MemChangeCnt", f.mem_change_cnt)?,
            mem_change_list: f
                .mem_change_list
                .into_iter()
                .filter(|item| !item.is_empty())
                .map(Cow::into_owned)
                .collect(),
            last_mem_ver: owned(f.last_mem_ver),
            cur_mem_ver: owned(f.cur_mem_ver),
        }),
    };
    Ok(Some(event))
}

fn external_tag(change_type: &str, f: Fields<'_>) -> Result<Option<ExternalTagEvent>, EventError> {
    let strategy_id = number("StrategyId", f.strategy_id)?;
    if change_type == "shuffle" {
        let group_id = optional_id("Id", f.id)?;
        return Ok(Some(ExternalTagEvent::Shuffled {
            group_id,
            strategy_id,
        }));
    }
    if !matches!(change_type, "create" | "update" | "delete") {
        return Ok(None);
    }
    let change = TagChange {
        id: required_id("Id", f.id)?,
        tag_type: owned(f.tag_type).map(|t| match t.as_str() {
            "tag" => TagKind::Tag,
            "tag_group" => TagKind::TagGroup,
            _ => TagKind::Other(t),
        }),
        strategy_id,
    };
    Ok(Some(match change_type {
        "create" => ExternalTagEvent::Created(change),
        "update" => ExternalTagEvent::Updated(change),
        _ => ExternalTagEvent::Deleted(change),
    }))
}

fn contact(change_type: &str, f: Fields<'_>) -> Result<Option<ContactEvent>, EventError> {
    let event = match change_type {
        "create_user" => ContactEvent::StaffCreated(Box::new(staff_change(f)?)),
        "update_user" => ContactEvent::StaffUpdated(Box::new(staff_change(f)?)),
        "delete_user" => ContactEvent::StaffDeparted {
            user_id: required_id("UserID", f.user_id)?,
        },
        "create_party" => ContactEvent::DepartmentCreated(department_change(f)?),
        "update_party" => ContactEvent::DepartmentUpdated(department_change(f)?),
        "delete_party" => ContactEvent::DepartmentDeleted {
            id: required_number("Id", f.id)?,
        },
        "update_tag" => ContactEvent::TagMembersUpdated(ContactTagChange {
            tag_id: required_number("TagId", f.tag_id)?,
            add_user_items: id_list("AddUserItems", f.add_user_items)?.unwrap_or_default(),
            del_user_items: id_list("DelUserItems", f.del_user_items)?.unwrap_or_default(),
            add_party_items: number_list("AddPartyItems", f.add_party_items)?.unwrap_or_default(),
            del_party_items: number_list("DelPartyItems", f.del_party_items)?.unwrap_or_default(),
        }),
        _ => return Ok(None),
    };
    Ok(Some(event))
}

fn staff_change(f: Fields<'_>) -> Result<StaffChange, EventError> {
    Ok(StaffChange {
        user_id: required_id("UserID", f.user_id)?,
        new_user_id: optional_id("NewUserID", f.new_user_id)?,
        name: owned(f.name),
        department: number_list("Department", f.department)?,
        main_department: number("MainDepartment", f.main_department)?,
        is_leader_in_dept: flag_list("IsLeaderInDept", f.is_leader_in_dept)?,
        direct_leader: id_list("DirectLeader", f.direct_leader)?,
        position: owned(f.position),
        mobile: owned(f.mobile),
        gender: number("Gender", f.gender)?,
        email: owned(f.email),
        biz_mail: owned(f.biz_mail),
        status: number("Status", f.status)?,
        avatar: owned(f.avatar),
        alias: owned(f.alias),
        telephone: owned(f.telephone),
        address: owned(f.address),
        ext_attr: f.ext_attr.finish(),
    })
}

fn department_change(f: Fields<'_>) -> Result<DepartmentChange, EventError> {
    Ok(DepartmentChange {
        id: required_number("Id", f.id)?,
        name: owned(f.name),
        parent_id: number("ParentId", f.parent_id)?,
        order: number("Order", f.order)?,
    })
}

fn app_message(msg_type: &str, f: Fields<'_>) -> Result<AppMessage, EventError> {
    Ok(match msg_type {
        "text" => AppMessage::Text {
            content: owned(f.content),
        },
        "image" => AppMessage::Image {
            pic_url: owned(f.pic_url),
            media_id: owned(f.media_id),
        },
        "voice" => AppMessage::Voice {
            media_id: owned(f.media_id),
            format: owned(f.format),
        },
        "video" => AppMessage::Video {
            media_id: owned(f.media_id),
            thumb_media_id: owned(f.thumb_media_id),
        },
        "location" => AppMessage::Location {
            latitude: coordinate("Location_X", f.location_x)?,
            longitude: coordinate("Location_Y", f.location_y)?,
            scale: number("Scale", f.scale)?,
            label: owned(f.label),
            app_type: owned(f.app_type),
        },
        _ => AppMessage::Link {
            title: owned(f.title),
            description: owned(f.description),
            url: owned(f.url),
            pic_url: owned(f.pic_url),
        },
    })
}

// ---------------------------------------------------------------------------------------------
// Field conversion
// ---------------------------------------------------------------------------------------------

type Text<'a> = Option<Cow<'a, str>>;

/// Text as sent, `None` when absent or empty.
fn owned(text: Text<'_>) -> Option<String> {
    text.filter(|t| !t.is_empty()).map(Cow::into_owned)
}

/// Trimmed, `None` when absent or blank.
fn trimmed<'t>(text: &'t Text<'_>) -> Option<&'t str> {
    text.as_deref().map(str::trim).filter(|t| !t.is_empty())
}

fn make_id<T: TryFrom<String, Error = IdError>>(
    field: &'static str,
    s: &str,
) -> Result<T, EventError> {
    T::try_from(s.to_owned()).map_err(|source| EventError::InvalidId { field, source })
}

fn required_id<T: TryFrom<String, Error = IdError>>(
    field: &'static str,
    text: Text<'_>,
) -> Result<T, EventError> {
    let s = trimmed(&text).ok_or(EventError::Missing(field))?;
    make_id(field, s)
}

fn optional_id<T: TryFrom<String, Error = IdError>>(
    field: &'static str,
    text: Text<'_>,
) -> Result<Option<T>, EventError> {
    trimmed(&text).map(|s| make_id(field, s)).transpose()
}

fn parse_number<T: FromStr>(field: &'static str, s: &str) -> Result<T, EventError> {
    s.parse().map_err(|_| EventError::InvalidNumber(field))
}

fn number<T: FromStr>(field: &'static str, text: Text<'_>) -> Result<Option<T>, EventError> {
    trimmed(&text).map(|s| parse_number(field, s)).transpose()
}

fn required_number<T: FromStr>(field: &'static str, text: Text<'_>) -> Result<T, EventError> {
    let s = trimmed(&text).ok_or(EventError::Missing(field))?;
    parse_number(field, s)
}

/// A latitude or longitude: a finite decimal.
fn coordinate(field: &'static str, text: Text<'_>) -> Result<Option<f64>, EventError> {
    match number::<f64>(field, text)? {
        Some(v) if !v.is_finite() => Err(EventError::InvalidNumber(field)),
        other => Ok(other),
    }
}

/// The pieces of a comma-separated list, trimmed, empty pieces (`"1,,2,"`) skipped.
fn pieces(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|p| !p.is_empty())
}

fn number_list<T: FromStr>(
    field: &'static str,
    text: Text<'_>,
) -> Result<Option<Vec<T>>, EventError> {
    trimmed(&text)
        .map(|s| pieces(s).map(|p| parse_number(field, p)).collect())
        .transpose()
}

fn id_list<T: TryFrom<String, Error = IdError>>(
    field: &'static str,
    text: Text<'_>,
) -> Result<Option<Vec<T>>, EventError> {
    trimmed(&text)
        .map(|s| pieces(s).map(|p| make_id(field, p)).collect())
        .transpose()
}

fn flag_list(field: &'static str, text: Text<'_>) -> Result<Option<Vec<bool>>, EventError> {
    trimmed(&text)
        .map(|s| {
            pieces(s)
                .map(|p| match p {
                    "1" => Ok(true),
                    "0" => Ok(false),
                    _ => Err(EventError::InvalidNumber(field)),
                })
                .collect()
        })
        .transpose()
}

/// Every element any event reads, as found (last one wins, as in [`crate::envelope::parse_header`]).
#[derive(Default)]
struct Fields<'a> {
    header: HeaderFields<'a>,
    // change_external_contact.
    user_id: Text<'a>,
    external_user_id: Text<'a>,
    state: Text<'a>,
    welcome_code: Text<'a>,
    source: Text<'a>,
    fail_reason: Text<'a>,
    // change_external_chat.
    chat_id: Text<'a>,
    update_detail: Text<'a>,
    join_scene: Text<'a>,
    quit_scene: Text<'a>,
    mem_change_cnt: Text<'a>,
    mem_change_list: Vec<Cow<'a, str>>,
    last_mem_ver: Text<'a>,
    cur_mem_ver: Text<'a>,
    // change_external_tag (and `Id` of a department).
    id: Text<'a>,
    tag_type: Text<'a>,
    strategy_id: Text<'a>,
    // change_contact.
    new_user_id: Text<'a>,
    name: Text<'a>,
    department: Text<'a>,
    main_department: Text<'a>,
    is_leader_in_dept: Text<'a>,
    direct_leader: Text<'a>,
    position: Text<'a>,
    mobile: Text<'a>,
    gender: Text<'a>,
    email: Text<'a>,
    biz_mail: Text<'a>,
    status: Text<'a>,
    avatar: Text<'a>,
    alias: Text<'a>,
    telephone: Text<'a>,
    address: Text<'a>,
    ext_attr: ExtAttrs<'a>,
    parent_id: Text<'a>,
    order: Text<'a>,
    tag_id: Text<'a>,
    add_user_items: Text<'a>,
    del_user_items: Text<'a>,
    add_party_items: Text<'a>,
    del_party_items: Text<'a>,
    // App messages and events.
    content: Text<'a>,
    pic_url: Text<'a>,
    media_id: Text<'a>,
    format: Text<'a>,
    thumb_media_id: Text<'a>,
    location_x: Text<'a>,
    location_y: Text<'a>,
    scale: Text<'a>,
    label: Text<'a>,
    app_type: Text<'a>,
    title: Text<'a>,
    description: Text<'a>,
    url: Text<'a>,
    event_key: Text<'a>,
}

impl<'a> Fields<'a> {
    /// Where a top-level element goes; `None` for elements no event reads.
    fn slot(&mut self, name: &str) -> Option<&mut Text<'a>> {
        if let Some(slot) = self.header.slot(name) {
            return Some(slot);
        }
        Some(match name {
            "UserID" => &mut self.user_id,
            "ExternalUserID" => &mut self.external_user_id,
            "State" => &mut self.state,
            "WelcomeCode" => &mut self.welcome_code,
            "Source" => &mut self.source,
            "FailReason" => &mut self.fail_reason,
            "ChatId" => &mut self.chat_id,
            "UpdateDetail" => &mut self.update_detail,
            "JoinScene" => &mut self.join_scene,
            "QuitScene" => &mut self.quit_scene,
            "MemChangeCnt" => &mut self.mem_change_cnt,
            "LastMemVer" => &mut self.last_mem_ver,
            "CurMemVer" => &mut self.cur_mem_ver,
            "Id" => &mut self.id,
            "TagType" => &mut self.tag_type,
            "StrategyId" => &mut self.strategy_id,
            "NewUserID" => &mut self.new_user_id,
            "Name" => &mut self.name,
            "Department" => &mut self.department,
            "MainDepartment" => &mut self.main_department,
            "IsLeaderInDept" => &mut self.is_leader_in_dept,
            "DirectLeader" => &mut self.direct_leader,
            "Position" => &mut self.position,
            "Mobile" => &mut self.mobile,
            "Gender" => &mut self.gender,
            "Email" => &mut self.email,
            "BizMail" => &mut self.biz_mail,
            "Status" => &mut self.status,
            "Avatar" => &mut self.avatar,
            "Alias" => &mut self.alias,
            "Telephone" => &mut self.telephone,
            "Address" => &mut self.address,
            "ParentId" => &mut self.parent_id,
            "Order" => &mut self.order,
            "TagId" => &mut self.tag_id,
            "AddUserItems" => &mut self.add_user_items,
            "DelUserItems" => &mut self.del_user_items,
            "AddPartyItems" => &mut self.add_party_items,
            "DelPartyItems" => &mut self.del_party_items,
            "Content" => &mut self.content,
            "PicUrl" => &mut self.pic_url,
            "MediaId" => &mut self.media_id,
            "Format" => &mut self.format,
            "ThumbMediaId" => &mut self.thumb_media_id,
            "Location_X" => &mut self.location_x,
            "Location_Y" => &mut self.location_y,
            "Scale" => &mut self.scale,
            "Label" => &mut self.label,
            "AppType" => &mut self.app_type,
            "Title" => &mut self.title,
            "Description" => &mut self.description,
            "Url" => &mut self.url,
            "EventKey" => &mut self.event_key,
            _ => return None,
        })
    }
}

/// `ExtAttr/Item` children as the walker reports them. The walker names leaves, not the `<Item>`
/// boundaries, so an item ends when a leaf it already has comes again (each item has at most one
/// `Name`, `Type`, `Text/Value`, `Web/Title` and `Web/Url`).
#[derive(Default)]
struct ExtAttrs<'a> {
    done: Vec<ExtAttrItem<'a>>,
    current: ExtAttrItem<'a>,
}

#[derive(Default)]
struct ExtAttrItem<'a> {
    name: Text<'a>,
    kind: Text<'a>,
    value: Text<'a>,
    title: Text<'a>,
    url: Text<'a>,
}

impl<'a> ExtAttrs<'a> {
    /// Takes the leaf at `ExtAttr/Item/<rest>`.
    fn push(&mut self, rest: &[String], text: Cow<'a, str>) {
        let slot: for<'r> fn(&'r mut ExtAttrItem<'a>) -> &'r mut Text<'a> = match rest {
            [n] if n == "Name" => |i| &mut i.name,
            [n] if n == "Type" => |i| &mut i.kind,
            [a, b] if a == "Text" && b == "Value" => |i| &mut i.value,
            [a, b] if a == "Web" && b == "Title" => |i| &mut i.title,
            [a, b] if a == "Web" && b == "Url" => |i| &mut i.url,
            _ => return,
        };
        if slot(&mut self.current).is_some() {
            self.done.push(std::mem::take(&mut self.current));
        }
        *slot(&mut self.current) = Some(text);
    }

    /// The attributes found; items of an unknown `Type` (e.g. mini-programs) are skipped.
    fn finish(mut self) -> Vec<ExtAttr> {
        let current = std::mem::take(&mut self.current);
        let has_any = current.name.is_some()
            || current.kind.is_some()
            || current.value.is_some()
            || current.title.is_some()
            || current.url.is_some();
        if has_any {
            self.done.push(current);
        }
        self.done
            .into_iter()
            .filter_map(|item| {
                let is_web = match trimmed(&item.kind) {
                    Some("0") => false,
                    Some("1") => true,
                    Some(_) => return None,
                    None => item.title.is_some() || item.url.is_some(),
                };
                let text = |t: Text<'_>| t.map(Cow::into_owned).unwrap_or_default();
                let name = text(item.name);
                Some(if is_web {
                    ExtAttr::Web {
                        name,
                        title: text(item.title),
                        url: text(item.url),
                    }
                } else {
                    ExtAttr::Text {
                        name,
                        value: text(item.value),
                    }
                })
            })
            .collect()
    }
}
