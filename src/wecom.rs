//! The server's side of the WeCom API: one [`WecomClient`] for the process, the credentials of
//! each corp's apps from the configuration, and the conversions from WeCom's answers into our
//! domain records (so the domain modules never see WeCom's JSON).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use wecom_sdk::Coordinator;
use wecom_sdk::api::{
    ApiConfig, ApiError, AppCredentials, ExternalContact, FollowInfo, FollowUser, GroupChat,
    TagGroup, WecomClient,
};

use crate::config::AlertSettings;
use crate::config::{Config, CorpConfig};
use crate::contacts::{CustomerProfile, RelationSnapshot};
use crate::group_chats::{ChatSnapshot, MemberSnapshot};
use crate::tags::{LibraryGroup, LibraryTag};

/// A corp has no app with a secret, so no API can be called for it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("corp {0} has no app with a secret: add `secret` to one of its [[corps.apps]]")]
pub struct NoSecret(pub String);

/// The API client and every corp's credentials.
#[derive(Debug, Clone)]
pub struct Wecom {
    /// The process's one client (token cache, retries, rate limits).
    pub client: WecomClient,
    corps: Arc<HashMap<String, CorpConfig>>,
    alerts: Arc<AlertSettings>,
}

impl Wecom {
    /// Builds the client from the configuration, sharing `coord` for tokens and buckets.
    pub fn new(config: &Config, coord: Arc<dyn Coordinator>) -> Result<Self, ApiError> {
        let api = ApiConfig {
            base_url: config.wecom.api_base_url.clone(),
            timeout: Duration::from_millis(config.wecom.timeout_ms),
            ..ApiConfig::default()
        };
        Ok(Self::with_client(config, WecomClient::new(api, coord)?))
    }

    /// The configured corps with a client built elsewhere (benchmarks, tests with other limits).
    pub fn with_client(config: &Config, client: WecomClient) -> Self {
        let corps = config
            .corps
            .iter()
            .map(|c| (c.corp_id.to_string(), c.clone()))
            .collect();
        Self {
            client,
            corps: Arc::new(corps),
            alerts: Arc::new(config.alerts.clone()),
        }
    }

    /// Who is told of a corp's alerts and how (`None`: the corp is not configured).
    pub fn alert_ctx(&self, corp_id: &str) -> Option<crate::alerts::Ctx<'_>> {
        self.corps.get(corp_id).map(|corp| crate::alerts::Ctx {
            settings: &self.alerts,
            corp,
        })
    }

    /// A configured corp.
    pub fn corp(&self, corp_id: &str) -> Option<&CorpConfig> {
        self.corps.get(corp_id)
    }

    /// The configured corps' ids.
    pub fn corp_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.corps.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Credentials to call the API for `corp_id`, preferring the app `preferred` (the one a
    /// callback came through) when it has a secret.
    pub fn credentials(
        &self,
        corp_id: &str,
        preferred: Option<&str>,
    ) -> Result<AppCredentials, NoSecret> {
        let corp = self
            .corps
            .get(corp_id)
            .ok_or_else(|| NoSecret(corp_id.to_owned()))?;
        let app = corp
            .api_credentials(preferred)
            .ok_or_else(|| NoSecret(corp_id.to_owned()))?;
        let secret = app
            .secret
            .clone()
            .ok_or_else(|| NoSecret(corp_id.to_owned()))?;
        Ok(AppCredentials {
            corp_id: corp.corp_id.clone(),
            secret,
            agent_id: app.agent_id,
        })
    }
}

impl Wecom {
    /// Credentials of the app that sends app messages for `corp_id` (it has an agent id).
    pub fn message_credentials(&self, corp_id: &str) -> Result<AppCredentials, NoSecret> {
        let app = self
            .corps
            .get(corp_id)
            .and_then(CorpConfig::message_credentials)
            .ok_or_else(|| NoSecret(corp_id.to_owned()))?;
        let secret = app
            .secret
            .clone()
            .ok_or_else(|| NoSecret(corp_id.to_owned()))?;
        let corp = self
            .corps
            .get(corp_id)
            .ok_or_else(|| NoSecret(corp_id.to_owned()))?;
        Ok(AppCredentials {
            corp_id: corp.corp_id.clone(),
            secret,
            agent_id: app.agent_id,
        })
    }
}

/// Seconds → epoch ms, `None` for 0 (WeCom's "unknown").
pub fn secs_to_ms(secs: i64) -> Option<i64> {
    (secs > 0).then(|| secs.saturating_mul(1000))
}

/// Our profile from WeCom's `external_contact`.
pub fn customer_profile(c: &ExternalContact) -> CustomerProfile {
    CustomerProfile {
        external_user_id: c.external_userid.to_string(),
        name: c.name.clone(),
        customer_type: c.contact_type,
        gender: c.gender,
        avatar: c.avatar.clone(),
        corp_name: c.corp_name.clone(),
        corp_full_name: c.corp_full_name.clone(),
        position: c.position.clone(),
        unionid: c.unionid.clone().filter(|u| !u.is_empty()),
    }
}

/// A relation from `externalcontact/get`'s `follow_user` entry.
pub fn relation_from_follow_user(external_user_id: &str, f: &FollowUser) -> RelationSnapshot {
    RelationSnapshot {
        user_id: f.userid.to_string(),
        external_user_id: external_user_id.to_owned(),
        remark: f.remark.clone(),
        description: f.description.clone(),
        remark_corp_name: f.remark_corp_name.clone(),
        remark_mobiles: f.remark_mobiles.clone(),
        // Personal tags (type 2) have no id and are the salesperson's own: not ours to mirror.
        tag_ids: f
            .tags
            .iter()
            .filter_map(|t| t.tag_id.as_ref().map(ToString::to_string))
            .collect(),
        add_way: f.add_way,
        state: f.state.clone().filter(|s| !s.is_empty()),
        oper_user_id: Some(f.oper_userid.clone()).filter(|s| !s.is_empty()),
        added_at_ms: secs_to_ms(f.createtime),
    }
}

/// A relation from `batch/get_by_user`'s `follow_info`.
pub fn relation_from_follow_info(external_user_id: &str, f: &FollowInfo) -> RelationSnapshot {
    RelationSnapshot {
        user_id: f.userid.to_string(),
        external_user_id: external_user_id.to_owned(),
        remark: f.remark.clone(),
        description: f.description.clone(),
        remark_corp_name: f.remark_corp_name.clone(),
        remark_mobiles: f.remark_mobiles.clone(),
        tag_ids: f.tag_id.iter().map(ToString::to_string).collect(),
        add_way: f.add_way,
        state: f.state.clone().filter(|s| !s.is_empty()),
        oper_user_id: Some(f.oper_userid.clone()).filter(|s| !s.is_empty()),
        added_at_ms: secs_to_ms(f.createtime),
    }
}

/// The tag library from `get_corp_tag_list`.
pub fn tag_library(groups: &[TagGroup]) -> Vec<LibraryGroup> {
    groups
        .iter()
        .filter(|g| !g.deleted)
        .map(|g| LibraryGroup {
            group_id: g.group_id.to_string(),
            name: g.group_name.clone(),
            sort_order: i64::from(g.order),
            created_at_ms: secs_to_ms(g.create_time),
            tags: g
                .tag
                .iter()
                .filter(|t| !t.deleted)
                .map(|t| LibraryTag {
                    tag_id: t.id.to_string(),
                    name: t.name.clone(),
                    sort_order: i64::from(t.order),
                    created_at_ms: secs_to_ms(t.create_time),
                })
                .collect(),
        })
        .collect()
}

/// A chat snapshot from `groupchat/get`.
pub fn chat_snapshot(g: &GroupChat) -> ChatSnapshot {
    ChatSnapshot {
        chat_id: g.chat_id.to_string(),
        name: g.name.clone(),
        owner_user_id: g.owner.to_string(),
        notice: g.notice.clone(),
        created_at_ms: secs_to_ms(g.create_time),
        member_version: g.member_version.clone(),
        members: g
            .member_list
            .iter()
            .map(|m| MemberSnapshot {
                member_id: m.userid.clone(),
                member_type: m.member_type,
                name: m.name.clone(),
                group_nickname: m.group_nickname.clone(),
                join_scene: m.join_scene,
                joined_at_ms: secs_to_ms(m.join_time),
            })
            .collect(),
    }
}
