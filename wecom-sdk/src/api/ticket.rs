//! Web login and JS-SDK tickets (§4.4, §6.1, §6.2): `auth/getuserinfo` for an OAuth code, and the JS-SDK tickets: the corp ticket for `wx.config` and the app ticket for
//! `wx.agentConfig`. WeCom allows ≤ 400 fetches per hour per corp and ≤ 100 per app: callers
//! cache them for `expires_in`, per (corp, app) (§7.6).

use serde::Deserialize;

use super::client::{Request, WecomClient};
use super::config::AppCredentials;
use super::error::ApiError;
use crate::ids::UserId;
use crate::secret::Secret;

/// Which JS-SDK ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketKind {
    /// The corp's jsapi_ticket, for `wx.config`.
    Corp,
    /// The app's agent_config ticket, for `wx.agentConfig`.
    Agent,
}

impl TicketKind {
    fn name(self) -> &'static str {
        match self {
            Self::Corp => "corp",
            Self::Agent => "agent",
        }
    }
}

/// Who an OAuth code (§6.1) belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OAuthUser {
    /// A member of the corp.
    Member(UserId),
    /// Someone outside the corp (a WeChat user): `openid`, never a session of ours.
    Outsider,
}

#[derive(Deserialize)]
struct UserInfoResponse {
    #[serde(default)]
    userid: Option<String>,
}

#[derive(Deserialize)]
struct TicketResponse {
    #[serde(default)]
    ticket: String,
    #[serde(default)]
    expires_in: i64,
}

impl WecomClient {
    /// `GET auth/getuserinfo?code=…` with the token of the app the page belongs to. A code is
    /// single use and valid 5 minutes (40029 otherwise).
    pub async fn get_user_info(
        &self,
        app: &AppCredentials,
        code: &str,
    ) -> Result<OAuthUser, ApiError> {
        let response: UserInfoResponse = self
            .call(app, Request::get("auth/getuserinfo", &[("code", code)]))
            .await?;
        match response.userid.filter(|u| !u.is_empty()) {
            Some(u) => UserId::try_from(u)
                .map(OAuthUser::Member)
                .map_err(|e| ApiError::Decode {
                    api: "auth/getuserinfo",
                    message: e.to_string(),
                }),
            None => Ok(OAuthUser::Outsider),
        }
    }

    /// `GET get_jsapi_ticket`: the corp jsapi_ticket and its lifetime in seconds.
    pub async fn get_jsapi_ticket(
        &self,
        app: &AppCredentials,
    ) -> Result<(Secret<String>, i64), ApiError> {
        self.ticket(app, "get_jsapi_ticket", &[]).await
    }

    /// `GET ticket/get?type=agent_config`: the app ticket (use the token of the app whose
    /// agentid goes into agentConfig, else 42012) and its lifetime in seconds.
    pub async fn get_agent_ticket(
        &self,
        app: &AppCredentials,
    ) -> Result<(Secret<String>, i64), ApiError> {
        self.ticket(app, "ticket/get", &[("type", "agent_config")])
            .await
    }

    /// The corp ticket (`kind` [`TicketKind::Corp`]) or the app's agent_config ticket, from the
    /// coordinator's cache when there (shared by every instance), else fetched and cached until
    /// five minutes before it expires. One fetch per process at a time per ticket.
    pub async fn cached_ticket(
        &self,
        app: &AppCredentials,
        kind: TicketKind,
    ) -> Result<Secret<String>, ApiError> {
        let key = format!("wecom:ticket:{}:{}", kind.name(), app.app_key());
        let coord = self.coordinator();
        if let Some(t) = coord.get(&key).await?.filter(|t| !t.is_empty()) {
            return Ok(Secret::new(t));
        }
        let slot = self.refresh_slot(&key);
        let _guard = slot.lock().await;
        if let Some(t) = coord.get(&key).await?.filter(|t| !t.is_empty()) {
            return Ok(Secret::new(t));
        }
        let (ticket, expires_in) = match kind {
            TicketKind::Corp => self.get_jsapi_ticket(app).await?,
            TicketKind::Agent => self.get_agent_ticket(app).await?,
        };
        let ttl = u64::try_from(expires_in.saturating_sub(300))
            .unwrap_or(0)
            .max(60);
        coord
            .set(&key, ticket.expose(), std::time::Duration::from_secs(ttl))
            .await?;
        Ok(ticket)
    }

    /// Drops the cached ticket of `kind` (WeCom refused a signature made with it), so that the
    /// next [`Self::cached_ticket`] fetches a fresh one. Only the value read here is dropped: a
    /// ticket another instance just stored stays. Callers bound how often they do this — every
    /// fetch counts against WeCom's hourly limit.
    pub async fn forget_ticket(
        &self,
        app: &AppCredentials,
        kind: TicketKind,
    ) -> Result<(), ApiError> {
        let key = format!("wecom:ticket:{}:{}", kind.name(), app.app_key());
        let coord = self.coordinator();
        if let Some(t) = coord.get(&key).await? {
            coord.delete_if(&key, &t).await?;
        }
        Ok(())
    }

    async fn ticket(
        &self,
        app: &AppCredentials,
        api: &'static str,
        query: &[(&str, &str)],
    ) -> Result<(Secret<String>, i64), ApiError> {
        let response: TicketResponse = self.call(app, Request::get(api, query)).await?;
        if response.ticket.is_empty() {
            return Err(ApiError::Decode {
                api,
                message: "no ticket in the response".to_owned(),
            });
        }
        Ok((Secret::new(response.ticket), response.expires_in))
    }
}
