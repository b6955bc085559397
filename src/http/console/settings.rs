//! 设置 in the console: the corp's callback configurations with the exact URL to paste into
//! WeCom's admin console and where, and a "检测" button that runs the callback self-test
//! ([`crate::app::selftest`]) against that URL as WeCom would — through whatever proxies sit in
//! front of this server.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::views::{self, Chrome};
use super::{Failure, Form, Signed, html, render};
use crate::app::selftest::{self, Verdict};
use crate::auth::Action;
use crate::http::AppState;

/// A self-test per corp at most this often (each stores a test event in the inbox).
const SELFTEST_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Where in WeCom's admin console a configuration's URL goes, by its usual name.
fn place(app: &str, agent: Option<i64>) -> &'static str {
    match app {
        "contacts" => "客户联系 → API → 接收事件服务器",
        "directory" => "管理工具 → 通讯录同步 → 接收事件服务器",
        "archive" => "管理工具 → 会话内容存档 → 接收事件服务器",
        _ if agent.is_some() => "应用管理 → 自建应用 → 接收消息",
        _ => "对应功能的“接收事件服务器”",
    }
}

/// The server's public address: the console's, else the sidebar's.
fn public_base(state: &AppState) -> Option<String> {
    let console = state.config.alerts.console_url.trim_end_matches('/');
    if console.starts_with("http") {
        return Some(console.to_owned());
    }
    state.config.sidebar.base().map(str::to_owned)
}

async fn render_page(
    state: &AppState,
    s: &crate::auth::session::Session,
    test: Option<views::SelftestView>,
    status: StatusCode,
) -> Result<Response, Failure> {
    let corp = &s.principal.corp_id;
    let base = public_base(state);
    let apps = state
        .config
        .corps
        .iter()
        .filter(|c| c.corp_id == *corp)
        .flat_map(|c| c.apps.iter())
        .map(|a| views::AppRow {
            url: selftest::callback_url(
                base.as_deref().unwrap_or("https://你的域名"),
                corp.as_str(),
                &a.name,
            ),
            place: place(&a.name, a.agent_id),
            sample: a.published_sample,
            name: a.name.clone(),
        })
        .collect();
    let keys = match state.config.corps.iter().find(|c| c.corp_id == *corp) {
        Some(c) => match &c.archive {
            Some(archive) => {
                let open =
                    crate::domain::archive::store::undecryptable_by_key(&state.db, corp.as_str())
                        .await?;
                let mut versions: Vec<i64> =
                    archive.keys.iter().map(|(v, _)| i64::from(*v)).collect();
                versions.extend(open.iter().map(|(v, _)| *v));
                versions.sort_unstable();
                versions.dedup();
                Some(
                    versions
                        .into_iter()
                        .map(|v| views::KeyRow {
                            version: v,
                            configured: archive.keys.iter().any(|(k, _)| i64::from(*k) == v),
                            undecryptable: open
                                .iter()
                                .find(|(k, _)| *k == v)
                                .map_or(0, |(_, n)| *n),
                        })
                        .collect(),
                )
            }
            None => None,
        },
        None => None,
    };
    let page = views::Settings {
        keys,
        values: values(state, corp),
        chrome: Chrome::new(&s.principal, &s.csrf_token, "/console/settings", None),
        corp_id: corp.to_string(),
        base_known: base.is_some(),
        may_manage: s.principal.role.may(Action::ManageSettings),
        apps,
        test,
    };
    Ok(html(status, render(&page)))
}

/// The reminder defaults and alert thresholds in force (from scrm.toml), with their keys.
fn values(state: &AppState, corp: &wecom_sdk::CorpId) -> Vec<views::SettingRow> {
    let r = &state.config.reminders;
    let a = &state.config.alerts;
    let yes = |b: bool| if b { "是" } else { "否" }.to_owned();
    let minutes = |secs: u64| format!("{} 分钟", secs / 60);
    let recipients = state
        .config
        .corps
        .iter()
        .find(|c| c.corp_id == *corp)
        .map(|c| c.alert_recipients.join("、"))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "（未设置）".to_owned());
    let row = |group, label, value, key| views::SettingRow {
        group,
        label,
        value,
        key,
    };
    vec![
        row(
            "跟进提醒",
            "添加客户后自动提醒",
            if r.after_add_days.is_empty() {
                "不提醒".to_owned()
            } else {
                r.after_add_days
                    .iter()
                    .map(|d| format!("第 {d} 天"))
                    .collect::<Vec<_>>()
                    .join("、")
            },
            "[reminders] after_add_days",
        ),
        row(
            "跟进提醒",
            "每企业每小时最多新建",
            format!("{} 条", r.max_new_per_corp_per_hour),
            "[reminders] max_new_per_corp_per_hour",
        ),
        row(
            "告警",
            "批量删除客户：数量",
            format!("超过 {} 个", a.mass_deletion_count),
            "[alerts] mass_deletion_count",
        ),
        row(
            "告警",
            "批量删除客户：时间窗口",
            minutes(a.mass_deletion_window_secs),
            "[alerts] mass_deletion_window_secs",
        ),
        row(
            "告警",
            "同一成员的新证据并入未处理告警",
            minutes(a.burst_window_secs),
            "[alerts] burst_window_secs",
        ),
        row(
            "告警",
            "拆成两条发送的敏感词也识别（间隔）",
            format!("{} 秒", a.message_window_secs),
            "[alerts] message_window_secs",
        ),
        row(
            "告警",
            "通知成员的上级",
            yes(a.notify_manager),
            "[alerts] notify_manager",
        ),
        row(
            "告警",
            "客户删除成员时提醒成员（流失提醒）",
            yes(a.notify_customer_loss),
            "[alerts] notify_customer_loss",
        ),
        row(
            "告警",
            "合规接收人",
            recipients,
            "[[corps]] alert_recipients",
        ),
        row(
            "告警",
            "规则变更后自动重扫",
            if a.rescan_days == 0 {
                "不自动重扫".to_owned()
            } else {
                format!("最近 {} 天", a.rescan_days)
            },
            "[alerts] rescan_days",
        ),
    ]
}

pub(super) async fn page(
    State(state): State<Arc<AppState>>,
    signed: Signed,
) -> Result<Response, Failure> {
    let s = signed.may(Action::ReadOperations)?;
    render_page(&state, &s, None, StatusCode::OK).await
}

pub(super) async fn run_selftest(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    form: Form,
) -> Result<Response, Failure> {
    let s = signed.may_write(Action::ManageSettings, &form)?;
    let corp = s.principal.corp_id.clone();
    let name = form.get("app").unwrap_or("").to_owned();
    let Some(app) = state.config.app(corp.as_str(), &name) else {
        return Err(Failure::Invalid("该企业没有这个回调应用".to_owned()));
    };
    let Some(base) = public_base(&state) else {
        return Err(Failure::Invalid(
            "先在配置中设置服务器的公网地址（[alerts] console_url），才能像企业微信一样从外部检测"
                .to_owned(),
        ));
    };
    if let Some(wait) = crate::http::web::cooldown(
        state.coord.as_ref(),
        &format!("scrm:console:selftest:{corp}"),
        SELFTEST_EVERY,
    )
    .await
    {
        return Err(Failure::RateLimited(wait));
    }
    let url = selftest::callback_url(&base, corp.as_str(), &name);
    let checks = selftest::check_all(&url, &app.crypto, corp.as_str())
        .await
        .map_err(|e| Failure::Invalid(format!("无法发起检测：{e}")))?;
    let failed = checks
        .iter()
        .filter(|c| matches!(c.verdict, Verdict::Fail(_)))
        .count();
    let view = views::SelftestView {
        app: name,
        url,
        passed: failed == 0,
        summary: if failed == 0 {
            "全部通过：可以在企业微信管理后台保存此回调地址。".to_owned()
        } else {
            format!("{failed} 项未通过，按提示修改后再检测。")
        },
        checks: checks
            .into_iter()
            .map(|c| {
                let (kind, mark, detail) = match c.verdict {
                    Verdict::Pass(d) => ("pass", "✔", d),
                    Verdict::Warn(d) => ("warn", "!", d),
                    Verdict::Fail(d) => ("fail", "✘", d),
                };
                views::CheckView {
                    name: c.name,
                    kind,
                    mark,
                    detail,
                }
            })
            .collect(),
    };
    render_page(&state, &s, Some(view), StatusCode::OK).await
}
