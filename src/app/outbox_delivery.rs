//! Delivering outbox items to WeCom: claim in order per key, call the API, map WeCom's answer to
//! done, retry (with the wait WeCom asked for) or a dead letter with a reason people can act on.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;
use wecom_sdk::api::{
    AddCorpTagRequest, ApiError, AppCredentials, AppMessage, MessageBody, RemarkRequest,
};
use wecom_sdk::{ExternalUserId, TagId, UserId};

use crate::domain::tags;
use crate::pipeline::outbox::{Intent, Message, OUTBOX, OutboxItem, claim, failure, set_result};
use crate::pipeline::worker::{HandlerError, LeaseTable, Queue};
use crate::platform::db::{Db, StoreError, now_ms};
use crate::platform::wecom::Wecom;

/// How long WeCom's duplicate check of `message/send` covers a repeated delivery.
const DUPLICATE_CHECK_SECS: u32 = 4 * 3600;

/// The outbox as a [`Queue`] delivering to WeCom.
#[derive(Debug, Clone)]
pub struct OutboxQueue {
    db: Db,
    wecom: Wecom,
}

impl OutboxQueue {
    /// Delivers the outbox of `db` through `wecom`.
    pub fn new(db: Db, wecom: Wecom) -> Self {
        Self { db, wecom }
    }
}

#[async_trait::async_trait]
impl Queue for OutboxQueue {
    type Item = OutboxItem;
    const NAME: &'static str = "outbox";
    const OUTCOMES_METRIC: &'static str = "scrm_outbox_attempts_total";
    const SECONDS_METRIC: &'static str = "scrm_outbox_call_seconds";

    fn db(&self) -> &Db {
        &self.db
    }
    fn table(&self) -> LeaseTable {
        OUTBOX
    }
    fn id(item: &OutboxItem) -> i64 {
        item.id
    }
    fn attempts(item: &OutboxItem) -> i32 {
        item.attempts
    }
    fn span(item: &OutboxItem) -> tracing::Span {
        tracing::info_span!("outbox_item", id = item.id, corp_id = %item.corp_id, kind = %item.kind, attempt = item.attempts)
    }
    async fn claim(
        &self,
        owner: &str,
        now_ms: i64,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        claim(&self.db, owner, now_ms, lease, limit).await
    }
    async fn handle(&self, item: &OutboxItem) -> Result<(), HandlerError> {
        let intent: Intent = serde_json::from_str(&item.payload)
            .map_err(|e| HandlerError::permanent(format!("stored intent does not parse: {e}")))?;
        let result = Delivery {
            q: self,
            item,
            corp: &item.corp_id,
        }
        .deliver(&intent)
        .await?;
        if let Some(result) = result {
            set_result(&self.db, item.id, &result).await?;
        }
        let age = (now_ms() - item.created_at_ms).max(0);
        #[allow(
            clippy::cast_precision_loss,
            reason = "milliseconds to seconds for a histogram"
        )]
        metrics::histogram!("scrm_outbox_delivery_seconds", "kind" => intent.kind())
            .record(age as f64 / 1000.0);
        Ok(())
    }
}

struct Delivery<'a> {
    q: &'a OutboxQueue,
    item: &'a OutboxItem,
    corp: &'a str,
}

fn tag_ids(ids: &[String]) -> Result<Vec<TagId>, HandlerError> {
    ids.iter()
        .map(|t| TagId::try_from(t.as_str()).map_err(|e| HandlerError::permanent(e.to_string())))
        .collect()
}

impl Delivery<'_> {
    fn wecom(&self) -> &Wecom {
        &self.q.wecom
    }

    fn creds(&self) -> Result<AppCredentials, HandlerError> {
        self.wecom()
            .credentials(self.corp, None)
            .map_err(HandlerError::from)
    }

    async fn deliver(&self, intent: &Intent) -> Result<Option<serde_json::Value>, HandlerError> {
        match intent {
            Intent::MarkTag {
                user_id,
                external_user_id,
                add,
                remove,
            } => self.mark_tag(user_id, external_user_id, add, remove).await,
            Intent::Remark {
                user_id,
                external_user_id,
                remark,
                description,
            } => {
                let request = RemarkRequest {
                    userid: user_id.clone(),
                    external_userid: external_user_id.clone(),
                    remark: remark.clone(),
                    description: description.clone(),
                    remark_company: None,
                    remark_mobiles: None,
                };
                self.wecom()
                    .client
                    .remark(&self.creds()?, &request)
                    .await
                    .map_err(|e| failure("externalcontact/remark", &e))?;
                Ok(None)
            }
            Intent::AddCorpTag {
                group_id,
                group_name,
                group_order,
                tags,
            } => {
                self.add_corp_tag(group_id, group_name, *group_order, tags)
                    .await
            }
            Intent::EditCorpTag { id, name, order } => {
                let tag = TagId::try_from(id.as_str())
                    .map_err(|e| HandlerError::permanent(e.to_string()))?;
                match self
                    .wecom()
                    .client
                    .edit_corp_tag(&self.creds()?, &tag, name.as_deref(), *order)
                    .await
                {
                    Ok(()) => Ok(None),
                    // Deleted in WeCom meanwhile: our mirror follows WeCom.
                    Err(ApiError::Wecom { errcode: 40068, .. }) => {
                        self.refresh_library().await?;
                        Ok(Some(
                            json!({"skipped": "tag or group no longer exists in WeCom"}),
                        ))
                    }
                    Err(e) => Err(failure("externalcontact/edit_corp_tag", &e)),
                }
            }
            Intent::DelCorpTag {
                tag_ids: t,
                group_ids,
            } => {
                let (t, g) = (tag_ids(t)?, tag_ids(group_ids)?);
                match self
                    .wecom()
                    .client
                    .del_corp_tag(&self.creds()?, &t, &g)
                    .await
                {
                    Ok(()) => Ok(None),
                    // Already gone (deleted in WeCom, or by an earlier attempt whose answer was
                    // lost): deleting is done either way.
                    Err(ApiError::Wecom { errcode: 40068, .. }) => {
                        self.refresh_library().await?;
                        Ok(Some(json!({"note": "already deleted in WeCom"})))
                    }
                    Err(e) => Err(failure("externalcontact/del_corp_tag", &e)),
                }
            }
            Intent::MessageSend { to_users, message } => self.message_send(to_users, message).await,
            Intent::TransferCustomers {
                job_id,
                mode,
                handover_user_id,
                takeover_user_id,
                external_user_ids: _,
                success_msg,
            } => {
                crate::app::transfers::deliver::customers(
                    &self.q.db,
                    self.wecom(),
                    self.item,
                    crate::app::transfers::deliver::CustomerCall {
                        job_id: *job_id,
                        mode: *mode,
                        handover: handover_user_id,
                        taker: takeover_user_id,
                        success_msg: success_msg.as_deref(),
                    },
                )
                .await
            }
            Intent::TransferGroupChats {
                job_id,
                mode,
                new_owner,
                ..
            } => {
                crate::app::transfers::deliver::group_chats(
                    &self.q.db,
                    self.wecom(),
                    self.item,
                    *job_id,
                    *mode,
                    new_owner,
                )
                .await
            }
        }
    }

    /// `mark_tag`; on 40068 (a tag deleted in WeCom, or one we never knew), refreshes the library
    /// and sends what is left, so one deleted tag does not block the rest of the edit.
    async fn mark_tag(
        &self,
        userid: &UserId,
        external_userid: &ExternalUserId,
        add: &[String],
        remove: &[String],
    ) -> Result<Option<serde_json::Value>, HandlerError> {
        let creds = self.creds()?;
        let call = |add: Vec<TagId>, remove: Vec<TagId>| {
            let creds = &creds;
            async move {
                self.wecom()
                    .client
                    .mark_tag(creds, userid, external_userid, &add, &remove)
                    .await
            }
        };
        match call(tag_ids(add)?, tag_ids(remove)?).await {
            Ok(()) => return Ok(None),
            Err(ApiError::Wecom { errcode: 40068, .. }) => {}
            Err(e) => return Err(failure("externalcontact/mark_tag", &e)),
        }
        self.refresh_library().await?;
        let live: BTreeSet<String> = tags::live_tags(&self.q.db, self.corp)
            .await?
            .into_iter()
            .map(|t| t.tag_id)
            .collect();
        let keep = |ids: &[String]| -> Vec<String> {
            ids.iter().filter(|t| live.contains(*t)).cloned().collect()
        };
        let (add_left, remove_left) = (keep(add), keep(remove));
        let dropped: Vec<&String> = add
            .iter()
            .chain(remove)
            .filter(|t| !live.contains(*t))
            .collect();
        if dropped.is_empty() {
            // WeCom refused tags its own listing still shows: a consistency lag; try again later.
            return Err(HandlerError::retry(
                "externalcontact/mark_tag: 40068 for tags the library still lists",
            ));
        }
        if !add_left.is_empty() || !remove_left.is_empty() {
            call(tag_ids(&add_left)?, tag_ids(&remove_left)?)
                .await
                .map_err(|e| failure("externalcontact/mark_tag", &e))?;
        }
        Ok(Some(json!({
            "dropped_tags": dropped,
            "note": "已在企业微信删除的标签未设置 / tags deleted in WeCom were left out",
        })))
    }

    async fn add_corp_tag(
        &self,
        group_id: &Option<String>,
        group_name: &Option<String>,
        group_order: Option<u32>,
        new: &[crate::pipeline::outbox::NewTag],
    ) -> Result<Option<serde_json::Value>, HandlerError> {
        let creds = self.creds()?;
        if self.item.attempts > 1
            && let Some(found) = self
                .existing_tags(&creds, group_id, group_name, new)
                .await?
        {
            // An earlier attempt created them and its answer was lost.
            return Ok(Some(found));
        }
        let request = AddCorpTagRequest {
            group_id: group_id
                .as_deref()
                .map(TagId::try_from)
                .transpose()
                .map_err(|e| HandlerError::permanent(e.to_string()))?,
            group_name: group_name.clone(),
            order: group_order,
            tag: new
                .iter()
                .map(|t| wecom_sdk::api::NewTag {
                    name: t.name.clone(),
                    order: t.order,
                })
                .collect(),
        };
        let group = self
            .wecom()
            .client
            .add_corp_tag(&creds, &request)
            .await
            .map_err(|e| failure("externalcontact/add_corp_tag", &e))?;
        let library = crate::app::wecom_records::tag_library(std::slice::from_ref(&group));
        for g in &library {
            tags::upsert_group(&self.q.db, self.corp, g, now_ms()).await?;
        }
        Ok(Some(created(&group)))
    }

    /// The group and tags an `add_corp_tag` would create, when WeCom already has all of them.
    async fn existing_tags(
        &self,
        creds: &AppCredentials,
        group_id: &Option<String>,
        group_name: &Option<String>,
        new: &[crate::pipeline::outbox::NewTag],
    ) -> Result<Option<serde_json::Value>, HandlerError> {
        let groups = self
            .wecom()
            .client
            .get_corp_tag_list(creds, &[], &[])
            .await
            .map_err(|e| failure("externalcontact/get_corp_tag_list", &e))?;
        let group = groups.iter().find(|g| match (group_id, group_name) {
            (Some(id), _) => g.group_id.as_str() == id,
            (None, Some(name)) => &g.group_name == name,
            (None, None) => false,
        });
        let Some(group) = group else { return Ok(None) };
        let all_there = new
            .iter()
            .all(|t| group.tag.iter().any(|have| have.name == t.name));
        if !all_there {
            return Ok(None);
        }
        crate::domain::customers::record::replace_tag_library(
            &self.q.db,
            self.corp,
            &crate::app::wecom_records::tag_library(&groups),
            now_ms(),
        )
        .await?;
        Ok(Some(created(group)))
    }

    async fn refresh_library(&self) -> Result<(), HandlerError> {
        let groups = self
            .wecom()
            .client
            .get_corp_tag_list(&self.creds()?, &[], &[])
            .await
            .map_err(|e| failure("externalcontact/get_corp_tag_list", &e))?;
        crate::domain::customers::record::replace_tag_library(
            &self.q.db,
            self.corp,
            &crate::app::wecom_records::tag_library(&groups),
            now_ms(),
        )
        .await?;
        Ok(())
    }

    async fn message_send(
        &self,
        to_users: &[String],
        message: &Message,
    ) -> Result<Option<serde_json::Value>, HandlerError> {
        let creds = self.wecom().message_credentials(self.corp)?;
        let Some(agent_id) = creds.agent_id else {
            return Err(HandlerError::retry_after(
                format!(
                    "corp {} has no app with both a secret and an agent_id to send app messages",
                    self.corp
                ),
                Duration::from_secs(60),
            ));
        };
        let touser = to_users
            .iter()
            .map(|u| {
                UserId::try_from(u.as_str()).map_err(|e| HandlerError::permanent(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let body = match message {
            Message::Text { content } => MessageBody::Text {
                content: content.clone(),
            },
            Message::TextCard {
                title,
                description,
                url,
            } => MessageBody::TextCard {
                title: title.clone(),
                description: description.clone(),
                url: url.clone(),
                btntxt: None,
            },
        };
        let mut request = AppMessage::to_users(agent_id, touser, body);
        // A repeated delivery (its first answer lost) is dropped by WeCom, not shown twice.
        request.enable_duplicate_check = true;
        request.duplicate_check_interval = Some(DUPLICATE_CHECK_SECS);
        let sent = self
            .wecom()
            .client
            .message_send(&creds, &request)
            .await
            .map_err(|e| failure("message/send", &e))?;
        Ok(Some(json!({
            "msgid": sent.msgid,
            "invaliduser": sent.invaliduser,
        })))
    }
}

fn created(group: &wecom_sdk::api::TagGroup) -> serde_json::Value {
    json!({
        "group_id": group.group_id.as_str(),
        "group_name": group.group_name,
        "tags": group.tag.iter().map(|t| json!({"id": t.id.as_str(), "name": t.name})).collect::<Vec<_>>(),
    })
}
