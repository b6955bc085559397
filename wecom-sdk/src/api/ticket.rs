//! JS-SDK tickets (§4.4, §6.2): the corp ticket for `wx.config` and the app ticket for
//! `wx.agentConfig`. WeCom allows ≤ 400 fetches per hour per corp and ≤ 100 per app: callers
//! cache them for `expires_in`, per (corp, app) (§7.6).

use serde::Deserialize;

use super::client::{Request, WecomClient};
use super::config::AppCredentials;
use super::error::ApiError;
use crate::secret::Secret;

#[derive(Deserialize)]
struct TicketResponse {
    #[serde(default)]
    ticket: String,
    #[serde(default)]
    expires_in: i64,
}

impl WecomClient {
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
