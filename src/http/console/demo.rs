//! `scrm demo`'s own pages: `/demo`, the start page (the emulated corp, how far the played day
//! has got, a sign-in per role, the tour), and `/demo/login/{role}`, one click to the console or
//! the sidebar as that role. They exist only in a server `scrm demo` started, which listens on
//! loopback only ([`DemoAccess`]); `scrm serve` has no such routes.
//!
//! Admin and compliance are console accounts the demo created: the click signs the account in as
//! its password would. The manager signs in through WeCom's QR login and the salesperson through
//! the sidebar's OAuth, both answered by the emulated WeCom client the click arranges (who is
//! logged in, which chat is open), so their roles and scopes are worked out as for a real member.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use wecom_sdk::testkit::{ClientContext, EmulatorState};
use wecom_sdk::{CorpId, ExternalUserId, UserId};

use super::{Failure, css_path, html, render, see_other, signed_in};
use crate::auth::account;
use crate::http::AppState;
use crate::platform::db::now_ms;

/// A member the tour names.
#[derive(Debug, Clone)]
pub struct DemoPerson {
    /// Their userid.
    pub user_id: UserId,
    /// Their name.
    pub name: String,
}

/// What `scrm demo` lets a visitor do with one click.
pub struct DemoAccess {
    /// The emulated corp.
    pub corp_id: CorpId,
    /// The console account of role admin.
    pub admin_account: String,
    /// The console account of role compliance.
    pub compliance_account: String,
    /// A department leader (role manager through WeCom's login).
    pub manager: DemoPerson,
    /// The salesperson whose sidebar the tour opens.
    pub salesperson: DemoPerson,
    /// The customer whose chat the sidebar is opened in, and the customer's name.
    pub customer: (ExternalUserId, String),
    /// The salesperson who resigns during the day.
    pub departing: DemoPerson,
    /// Staff and customers of the emulated corp (for the start page).
    pub size: (usize, usize),
    /// Steps of the day played so far, and in all.
    pub played: Arc<AtomicUsize>,
    /// Steps of the day.
    pub total: usize,
    /// The emulated WeCom (its client is arranged before each member's sign-in).
    pub wecom: Arc<EmulatorState>,
}

impl std::fmt::Debug for DemoAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoAccess")
            .field("corp_id", &self.corp_id)
            .finish_non_exhaustive()
    }
}

impl DemoAccess {
    /// The tour, in Chinese and English.
    pub fn tour(&self) -> Vec<(String, String)> {
        let (sales, departing, manager, customer) = (
            &self.salesperson.name,
            &self.departing.name,
            &self.manager.name,
            &self.customer.1,
        );
        vec![
            (
                "以合规身份登录，打开告警收件箱，处理「私下收款」告警：认领、写处理意见、关闭。".to_owned(),
                "Sign in as compliance, open the alert inbox and work the private-payment (私下收款) alert to a close.".to_owned(),
            ),
            (
                format!("在告警里还能看到：删除客户、批量删除、引导客户加私人微信，以及 {departing} 离职。"),
                format!("The inbox also holds a deleted customer, a mass deletion, a move to a personal WeChat, and {departing}'s departure."),
            ),
            (
                format!("以管理员身份登录，在「离职继承」里把 {departing} 的客户和客户群一键分配给同事，看进度直到完成。"),
                format!("Sign in as admin and reassign {departing}'s customers and group chats in one click (离职继承); follow the job to its end."),
            ),
            (
                format!("以销售 {sales} 的身份打开侧边栏（与客户 {customer} 的聊天中）：打标签、写跟进、设提醒。"),
                format!("Open the sidebar as salesperson {sales}, in the chat with {customer}: tag, note, remind."),
            ),
            (
                format!("以主管 {manager} 的身份扫码登录控制台：只看得到自己团队的客户和告警。"),
                format!("Sign in as manager {manager} through WeCom's QR login: only their team's customers and alerts."),
            ),
        ]
    }
}

/// One role's card on the start page.
struct RoleCard {
    title: &'static str,
    who: String,
    english: &'static str,
    href: &'static str,
    action: &'static str,
}

#[derive(Template)]
#[template(path = "console/demo.html")]
struct StartPage<'a> {
    css: &'a str,
    corp_id: &'a str,
    staff: usize,
    customers: usize,
    played: usize,
    total: usize,
    roles: Vec<RoleCard>,
    tour: Vec<(String, String)>,
}

/// The demo's routes (merged only when `scrm demo` serves).
pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/demo", get(start))
        .route("/demo/login/{role}", get(login))
}

/// The demo's access; `None` is answered 404 (the routes exist only in `scrm demo` anyway).
fn demo(state: &AppState) -> Option<&DemoAccess> {
    state.demo.as_deref()
}

async fn start(State(state): State<Arc<AppState>>) -> Response {
    let Some(d) = demo(&state) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let css = css_path();
    let roles = vec![
        RoleCard {
            title: "管理员",
            who: format!("账号 {}", d.admin_account),
            english: "admin: everything, reassignment",
            href: "/demo/login/admin",
            action: "进入控制台",
        },
        RoleCard {
            title: "合规",
            who: format!("账号 {}", d.compliance_account),
            english: "compliance: alerts, archive",
            href: "/demo/login/compliance",
            action: "进入告警收件箱",
        },
        RoleCard {
            title: "主管",
            who: d.manager.name.clone(),
            english: "manager: their team (WeCom QR login)",
            href: "/demo/login/manager",
            action: "企业微信扫码登录",
        },
        RoleCard {
            title: "销售",
            who: format!("{} · 客户 {}", d.salesperson.name, d.customer.1),
            english: "salesperson: the sidebar in a chat",
            href: "/demo/login/sales",
            action: "打开侧边栏",
        },
    ];
    let page = StartPage {
        css: &css,
        corp_id: d.corp_id.as_str(),
        staff: d.size.0,
        customers: d.size.1,
        played: d.played.load(Ordering::Relaxed).min(d.total),
        total: d.total,
        roles,
        tour: d.tour(),
    };
    html(StatusCode::OK, render(&page))
}

async fn login(State(state): State<Arc<AppState>>, Path(role): Path<String>) -> Response {
    let Some(d) = demo(&state) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let arrange = |userid: &UserId, entry: &str, customer: Option<&ExternalUserId>| {
        d.wecom.set_client(Some(ClientContext {
            corp_id: d.corp_id.to_string(),
            userid: Some(userid.to_string()),
            entry: entry.to_owned(),
            external_userid: customer.map(ToString::to_string),
            ..ClientContext::default()
        }));
    };
    match role.as_str() {
        "admin" | "compliance" => {
            let username = if role == "admin" {
                &d.admin_account
            } else {
                &d.compliance_account
            };
            let next = if role == "admin" {
                "/console"
            } else {
                "/console/alerts"
            };
            match account::get(&state.db, username).await {
                Ok(Some(account)) => signed_in(&state, &account, next, now_ms()).await,
                Ok(None) => StatusCode::NOT_FOUND.into_response(),
                Err(e) => Failure::from(e).into_response(),
            }
        }
        "manager" => {
            arrange(&d.manager.user_id, "normal", None);
            see_other(&format!(
                "/console/login/wecom?corp={}&next=/console",
                d.corp_id
            ))
        }
        "sales" => {
            arrange(
                &d.salesperson.user_id,
                "single_chat_tools",
                Some(&d.customer.0),
            );
            see_other(&format!("/sidebar?corp={}", d.corp_id))
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}
