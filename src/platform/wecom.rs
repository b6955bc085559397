//! The server's side of the WeCom API: one [`WecomClient`] for the process, the credentials of
//! each corp's apps from the configuration. WeCom's answers become our domain records in
//! [`crate::app::wecom_records`], so the domain modules never see WeCom's types.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wecom_sdk::Coordinator;
use wecom_sdk::api::{ApiConfig, ApiError, AppCredentials, WecomClient};

use crate::platform::config::{AlertSettings, Config, CorpConfig};

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
    judge: Option<Arc<crate::platform::judge::Judge>>,
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
            judge: crate::platform::judge::Judge::new(&config.judge).map(Arc::new),
        }
    }

    /// The `[alerts]` settings (who is told of a corp's alerts is in its [`CorpConfig`]).
    pub fn alert_settings(&self) -> &AlertSettings {
        &self.alerts
    }

    /// The external judge of borderline messages, when one is configured.
    pub fn judge(&self) -> Option<&crate::platform::judge::Judge> {
        self.judge.as_deref()
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

/// A reassignment's kind: resigned (the handover member has left) or on-job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferMode {
    /// 离职继承: `resigned/transfer_customer`, `groupchat/transfer`.
    Resigned,
    /// 在职继承: `transfer_customer`, `groupchat/onjob_transfer`.
    OnJob,
}

impl TransferMode {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Resigned => "resigned",
            Self::OnJob => "on_job",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "resigned" => Some(Self::Resigned),
            "on_job" => Some(Self::OnJob),
            _ => None,
        }
    }

    /// The SDK's mode.
    pub fn api(self) -> wecom_sdk::api::TransferMode {
        match self {
            Self::Resigned => wecom_sdk::api::TransferMode::Resigned,
            Self::OnJob => wecom_sdk::api::TransferMode::OnJob,
        }
    }
}

/// Seconds → epoch ms, `None` for 0 (WeCom's "unknown").
pub fn secs_to_ms(secs: i64) -> Option<i64> {
    (secs > 0).then(|| secs.saturating_mul(1000))
}
