//! The WeCom server-API client (§4): [`WecomClient`] with typed requests and responses for the
//! customer-contact, tag, group-chat, handover, messaging, directory, chat-archive and JS-SDK
//! ticket APIs, plus [`WecomClient::get_json`] / [`WecomClient::post_json`] for the rest.
//!
//! What every call gets, in one place (`client`):
//! - **Tokens** cached in the [`Coordinator`](crate::coord::Coordinator) per (corp, secret)
//!   (§7.6), refreshed by one caller per process *and* one instance per coordinator (§7.7);
//!   40014/42001/40082 drop the failed token and retry the call once; 40001 is a configuration
//!   error, never a gettoken loop.
//! - **Retries** with full-jitter exponential backoff for -1, 45033, 5xx, transport errors and
//!   undecodable bodies, except that writes which may have taken effect (message/send,
//!   transfers, add_corp_tag) are not repeated after a timeout or a garbled answer.
//! - **Rate limits** (§4.7) counted client-side in coordinator buckets, and a 60 s block per
//!   corp and API after WeCom answers 45009, during which calls fail fast.
//! - **Errors** as [`ApiError`]; WeCom's own are `ApiError::Wecom { errcode, .. }`.
//!
//! The access_token travels in the query string only, so no URL is ever logged or put into an
//! error; the secret and tokens are [`Secret`](crate::secret::Secret)s.

mod client;
mod config;
mod contact;
mod error;
mod group_chat;
mod message;
mod staff;
mod tag;
mod ticket;
mod transfer;
mod wire;

pub use client::{MAX_RESPONSE_BYTES, WecomClient};
pub use config::{ApiConfig, AppCredentials, RateLimits};
pub use contact::{
    BatchByUserPage, BatchContact, ExternalContact, ExternalContactDetail, FollowInfo, FollowUser,
    FollowUserTag, MAX_BATCH_USERS, RemarkRequest,
};
pub use error::ApiError;
pub use group_chat::{
    GroupChat, GroupChatListPage, GroupChatListRequest, GroupChatMember, GroupChatRef, Invitor,
};
pub use message::{AppMessage, MAX_DUPLICATE_CHECK_SECS, MessageBody, MessageSendResult};
pub use staff::{Department, StaffProfile};
pub use tag::{AddCorpTagRequest, CorpTag, MAX_TAG_NAME_CHARS, NewTag, TagGroup};
pub use ticket::{OAuthUser, TicketKind};
pub use transfer::{
    CustomerTransferOutcome, CustomerTransferStatus, FailedChat, MAX_TRANSFER_BATCH,
    MAX_TRANSFER_MSG_CHARS, TransferMode, TransferResultPage, UnassignedCustomer, UnassignedPage,
};
