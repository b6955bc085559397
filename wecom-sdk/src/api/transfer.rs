//! Handing customers and group chats over (离职继承 / 在职继承, §4.2, §4.8): the list of
//! departed members' customers, transfers of up to 100 customers or chats per call, and the
//! transfer results. Transfers are never retried after a timeout (they may have started).

use serde::{Deserialize, Serialize};

use super::client::{Request, WecomClient};
use super::config::AppCredentials;
use super::error::ApiError;
use super::wire::{bool_or_int, check_chars, invalid};
use crate::ids::{ChatId, ExternalUserId, UserId};

/// Most customers or chats per transfer call.
pub const MAX_TRANSFER_BATCH: usize = 100;
/// Longest `transfer_success_msg` (on-job transfers only).
pub const MAX_TRANSFER_MSG_CHARS: usize = 200;

/// Which handover: the member has left (离职继承) or is still employed (在职继承).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransferMode {
    /// The handover member has left the company.
    Resigned,
    /// The handover member is still employed.
    OnJob,
}

impl TransferMode {
    fn customer_api(self) -> &'static str {
        match self {
            Self::Resigned => "externalcontact/resigned/transfer_customer",
            Self::OnJob => "externalcontact/transfer_customer",
        }
    }

    fn result_api(self) -> &'static str {
        match self {
            Self::Resigned => "externalcontact/resigned/transfer_result",
            Self::OnJob => "externalcontact/transfer_result",
        }
    }

    fn groupchat_api(self) -> &'static str {
        match self {
            Self::Resigned => "externalcontact/groupchat/transfer",
            Self::OnJob => "externalcontact/groupchat/onjob_transfer",
        }
    }
}

/// A customer of a departed member waiting to be assigned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnassignedCustomer {
    /// The departed member.
    pub handover_userid: UserId,
    /// The customer.
    pub external_userid: ExternalUserId,
    /// When the member left (unix seconds).
    #[serde(default)]
    pub dimission_time: i64,
}

/// One page of `get_unassigned_list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnassignedPage {
    /// Customers of this page.
    #[serde(default)]
    pub info: Vec<UnassignedCustomer>,
    /// No more pages.
    #[serde(default, deserialize_with = "bool_or_int")]
    pub is_last: bool,
    /// Cursor of the next page.
    #[serde(default)]
    pub next_cursor: String,
}

/// The per-customer answer of a transfer call: 0 means the transfer started (final after 24 h,
/// see `transfer_result`), anything else is why this customer was not transferred.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerTransferOutcome {
    /// The customer.
    pub external_userid: ExternalUserId,
    /// 0, or e.g. 40096, 40100, 40128, 40129, 40130.
    #[serde(default)]
    pub errcode: i64,
}

/// A customer's state in `transfer_result`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerTransferStatus {
    /// The customer.
    pub external_userid: ExternalUserId,
    /// 1 done, 2 waiting, 3 refused by the customer, 4 taker at limit, 5 no record (on-job).
    #[serde(default)]
    pub status: i64,
    /// Done: when; waiting: the automatic takeover time; else 0.
    #[serde(default)]
    pub takeover_time: i64,
}

/// One page of `transfer_result`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferResultPage {
    /// Customers of this page.
    #[serde(default)]
    pub customer: Vec<CustomerTransferStatus>,
    /// Cursor of the next page; empty when done.
    #[serde(default)]
    pub next_cursor: String,
}

/// A chat that a group transfer could not move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedChat {
    /// The chat.
    pub chat_id: ChatId,
    /// E.g. 90500 owner not resigned, 90502 owner already resigned, 90507 in progress.
    #[serde(default)]
    pub errcode: i64,
    /// WeCom's text.
    #[serde(default)]
    pub errmsg: String,
}

#[derive(Serialize)]
struct UnassignedBody<'a> {
    cursor: &'a str,
    page_size: u32,
}

#[derive(Serialize)]
struct TransferCustomerBody<'a> {
    handover_userid: &'a UserId,
    takeover_userid: &'a UserId,
    external_userid: &'a [ExternalUserId],
    #[serde(skip_serializing_if = "Option::is_none")]
    transfer_success_msg: Option<&'a str>,
}

#[derive(Deserialize)]
struct TransferCustomerResponse {
    #[serde(default)]
    customer: Vec<CustomerTransferOutcome>,
}

#[derive(Serialize)]
struct TransferResultBody<'a> {
    handover_userid: &'a UserId,
    takeover_userid: &'a UserId,
    #[serde(skip_serializing_if = "str::is_empty")]
    cursor: &'a str,
}

#[derive(Serialize)]
struct GroupChatTransferBody<'a> {
    chat_id_list: &'a [ChatId],
    new_owner: &'a UserId,
}

#[derive(Deserialize)]
struct GroupChatTransferResponse {
    #[serde(default)]
    failed_chat_list: Vec<FailedChat>,
}

fn check_batch(api: &'static str, what: &str, len: usize) -> Result<(), ApiError> {
    if len == 0 || len > MAX_TRANSFER_BATCH {
        Err(invalid(
            api,
            format!("{what} must hold 1 to {MAX_TRANSFER_BATCH} ids (got {len})"),
        ))
    } else {
        Ok(())
    }
}

impl WecomClient {
    /// `POST externalcontact/get_unassigned_list` in cursor mode (`""` first); `page_size`
    /// 1..=1000.
    pub async fn get_unassigned_list(
        &self,
        app: &AppCredentials,
        cursor: &str,
        page_size: u32,
    ) -> Result<UnassignedPage, ApiError> {
        const API: &str = "externalcontact/get_unassigned_list";
        if page_size == 0 || page_size > 1000 {
            return Err(invalid(
                API,
                format!("page_size must be 1 to 1000 (got {page_size})"),
            ));
        }
        let body = UnassignedBody { cursor, page_size };
        self.call(app, Request::post(API, &body)?).await
    }

    /// Transfers 1..=100 customers from `handover` to `takeover`
    /// (`Resigned` → `resigned/transfer_customer`, `OnJob` → `transfer_customer`). The overall
    /// call can succeed while single customers fail: read each outcome's errcode.
    /// `transfer_success_msg` (≤ 200 characters, sent to the customer) exists for `OnJob` only.
    pub async fn transfer_customer(
        &self,
        app: &AppCredentials,
        mode: TransferMode,
        handover: &UserId,
        takeover: &UserId,
        customers: &[ExternalUserId],
        transfer_success_msg: Option<&str>,
    ) -> Result<Vec<CustomerTransferOutcome>, ApiError> {
        let api = mode.customer_api();
        check_batch(api, "external_userid", customers.len())?;
        if mode == TransferMode::Resigned && transfer_success_msg.is_some() {
            return Err(invalid(
                api,
                "transfer_success_msg exists for on-job transfers only",
            ));
        }
        check_chars(
            api,
            "transfer_success_msg",
            transfer_success_msg,
            MAX_TRANSFER_MSG_CHARS,
        )?;
        let body = TransferCustomerBody {
            handover_userid: handover,
            takeover_userid: takeover,
            external_userid: customers,
            transfer_success_msg,
        };
        let response: TransferCustomerResponse = self.call(app, Request::post(api, &body)?).await?;
        Ok(response.customer)
    }

    /// One page (`""` first) of the transfer states between `handover` and `takeover`.
    pub async fn transfer_result(
        &self,
        app: &AppCredentials,
        mode: TransferMode,
        handover: &UserId,
        takeover: &UserId,
        cursor: &str,
    ) -> Result<TransferResultPage, ApiError> {
        let body = TransferResultBody {
            handover_userid: handover,
            takeover_userid: takeover,
            cursor,
        };
        self.call(app, Request::post(mode.result_api(), &body)?)
            .await
    }

    /// Moves 1..=100 group chats to `new_owner` (`Resigned` → `groupchat/transfer`, `OnJob` →
    /// `groupchat/onjob_transfer`); returns the chats that did not move.
    pub async fn groupchat_transfer(
        &self,
        app: &AppCredentials,
        mode: TransferMode,
        chat_ids: &[ChatId],
        new_owner: &UserId,
    ) -> Result<Vec<FailedChat>, ApiError> {
        let api = mode.groupchat_api();
        check_batch(api, "chat_id_list", chat_ids.len())?;
        let body = GroupChatTransferBody {
            chat_id_list: chat_ids,
            new_owner,
        };
        let response: GroupChatTransferResponse =
            self.call(app, Request::post(api, &body)?).await?;
        Ok(response.failed_chat_list)
    }
}
