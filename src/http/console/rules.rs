//! 规则 in the console: the corp's content-rule library (its version, who saved it, a readable
//! summary and the TOML to edit), a 试一试 box that explains one message the way
//! `scrm rules check` does (against the edited text before it is saved), saving behind the quality
//! gate of `scrm rules eval`, the version history with 恢复此版本, the retroactive scan the API
//! starts, and who is told of each category's alerts. The work is `domain::rule_book`'s; every
//! change is in the audit log (`rules.save`, `rules.revert`, `rules.rescan`, `rules.recipients`).

use std::sync::Arc;

use askama::Template;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use wecom_sdk::CorpId;

use super::views::{self, Chrome, Part, label};
use super::{Failure, Form, Session, Signed, html, query_map, render, see_other, when};
use crate::auth::Action;
use crate::domain::alerts::category_label;
use crate::domain::rule_book::{self, Comparison, Draft, Quality, SaveError};
use crate::domain::scan::check::Check;
use crate::domain::scan::eval::percent;
use crate::domain::scan::{RuleLibrary, ScanInput, Sender};
use crate::http::AppState;
use crate::pipeline::jobs;
use crate::platform::db::now_ms;

/// A form carrying a library: the TOML url-encoded (a CJK character is nine bytes there), so up
/// to three times [`rule_book::MAX_SOURCE_BYTES`] and room for the other fields.
const MAX_LIBRARY_FORM_BYTES: usize = 3 * rule_book::MAX_SOURCE_BYTES + (64 << 10);
/// A sentence to try, and the message before it (chars).
const MAX_TRIAL_CHARS: usize = 2000;
/// Versions listed in the history.
const HISTORY_ROWS: i64 = 50;
/// The categories every corp sees in the recipients form, whatever its library names.
const BUILT_IN_CATEGORIES: [&str; 5] = [
    "private_payment",
    "off_book_order",
    "contact_leak",
    "kickback",
    "poaching",
];

/// [`Form`], for the forms that carry a whole library (larger than the console's other forms).
pub(super) struct LibraryForm(Form);

impl FromRequest<Arc<AppState>> for LibraryForm {
    type Rejection = Failure;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let deadline = std::time::Duration::from_millis(state.config.http.body_timeout_ms);
        let bytes = match crate::http::server::body_deadline(
            req.into_body(),
            MAX_LIBRARY_FORM_BYTES,
            deadline,
        )
        .await
        {
            Some(Ok(b)) => b,
            Some(Err(_)) => {
                return Err(Failure::Invalid(format!(
                    "提交的内容过大或无法读取（规则库最多 {} KB）",
                    rule_book::MAX_SOURCE_BYTES / 1024
                )));
            }
            None => return Err(Failure::Invalid("提交超时，请重试".to_owned())),
        };
        Ok(Self(Form(
            url::form_urlencoded::parse(&bytes)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )))
    }
}

// ---------------------------------------------------------------------------------------------
// What the page shows
// ---------------------------------------------------------------------------------------------

/// The library in force.
struct CurrentView {
    /// `第 3 版` or `实例默认规则`.
    label: String,
    /// Whether the corp has a library of its own.
    own: bool,
    author: String,
    when: String,
    note: String,
    /// For the instance's library: where it comes from.
    origin: String,
    rule_count: usize,
    keyword_count: usize,
    quality: QualityView,
}

struct RuleRow {
    id: String,
    name: String,
    category: String,
    category_label: String,
    severity: String,
    severity_label: String,
    keywords: usize,
    patterns: String,
    senders: String,
    scope: String,
}

/// A library's figures on the labeled set, as the page prints them.
struct QualityView {
    recall: String,
    fpr: String,
    passed: bool,
    known: bool,
}

impl QualityView {
    fn of(q: &Quality) -> Self {
        Self {
            recall: percent(q.recall),
            fpr: percent(q.fpr),
            passed: q.passed,
            known: q.recall.is_some() || q.fpr.is_some(),
        }
    }
}

/// What the editor typed into the 试一试 box.
#[derive(Default)]
struct TrialInput {
    text: String,
    prev: String,
    customer: bool,
}

struct HitView {
    rule_id: String,
    category_label: String,
    severity: String,
    severity_label: String,
    matched: String,
    across: bool,
    parts: Vec<Part>,
}

/// The outcome of 试一试.
struct TrialView {
    /// Which library answered.
    against: String,
    /// The sentence with every hit's spans marked.
    parts: Vec<Part>,
    hits: Vec<HitView>,
    /// `scrm rules check`'s explanation, word for word.
    explanation: String,
}

/// The gate's figures side by side, to confirm a save that does worse.
struct ComparisonView {
    current_label: String,
    current: QualityView,
    proposed: QualityView,
    recall_worse: bool,
    fpr_worse: bool,
}

impl ComparisonView {
    fn of(c: &Comparison) -> Self {
        let lower = |a: Option<f64>, b: Option<f64>| matches!((a, b), (Some(a), Some(b)) if a < b);
        Self {
            current_label: version_label(c.current_version),
            current: QualityView::of(&c.current),
            proposed: QualityView::of(&c.proposed),
            recall_worse: lower(c.proposed.recall, c.current.recall),
            fpr_worse: lower(c.current.fpr, c.proposed.fpr),
        }
    }
}

/// A retroactive scan.
struct JobView {
    id: i64,
    state: String,
    state_label: String,
    done: i64,
    total: i64,
    running: bool,
    when: String,
    outcome: String,
}

struct VersionRow {
    version: i64,
    author: String,
    when: String,
    note: String,
    recall: String,
    fpr: String,
    current: bool,
}

struct RecipientRow {
    category: String,
    label: String,
    users: String,
    updated: String,
}

/// The 规则 page.
#[derive(Template)]
#[template(path = "console/rules.html")]
struct RulesPage {
    chrome: Chrome,
    current: CurrentView,
    rules: Vec<RuleRow>,
    source: String,
    base: String,
    note: String,
    error: Option<String>,
    trial: TrialInput,
    result: Option<TrialView>,
    comparison: Option<ComparisonView>,
    saved: Option<i64>,
    job: Option<JobView>,
    versions: Vec<VersionRow>,
    recipients: Vec<RecipientRow>,
    recipients_error: Option<String>,
}

/// One stored version, read-only.
#[derive(Template)]
#[template(path = "console/rule_version.html")]
struct VersionPage {
    chrome: Chrome,
    version: i64,
    author: String,
    when: String,
    note: String,
    quality: QualityView,
    current: bool,
    source: String,
}

fn version_label(v: Option<i64>) -> String {
    v.map_or_else(|| "实例默认规则".to_owned(), |v| format!("第 {v} 版"))
}

fn severity_label(s: &str) -> String {
    label(&views::SEVERITIES, s)
}

fn job_state_label(state: &str) -> &'static str {
    match state {
        "queued" => "排队中",
        "running" => "扫描中",
        "done" => "已完成",
        "failed" => "失败",
        _ => "未知",
    }
}

fn scope_of(r: &crate::domain::scan::Rule) -> String {
    let mut parts = Vec::new();
    if !r.departments.is_empty() {
        parts.push(format!("部门 {}", r.departments.join("、")));
    }
    if !r.staff.is_empty() {
        parts.push(format!("成员 {}", r.staff.join("、")));
    }
    if !r.customer_tags.is_empty() {
        parts.push(format!("客户标签 {}", r.customer_tags.join("、")));
    }
    if parts.is_empty() {
        "全部".to_owned()
    } else {
        parts.join("；")
    }
}

fn rule_rows(library: &RuleLibrary) -> Vec<RuleRow> {
    library
        .rules()
        .iter()
        .map(|r| {
            let mut patterns: Vec<String> =
                r.patterns.iter().map(|p| p.as_str().to_owned()).collect();
            patterns.extend(r.msg_types.iter().map(|t| format!("消息类型 {t}")));
            if !r.regex.is_empty() {
                patterns.push(format!("正则 {} 条", r.regex.len()));
            }
            RuleRow {
                id: r.id.clone(),
                name: r.name.clone(),
                category_label: category_label(&r.category).to_owned(),
                category: r.category.clone(),
                severity: r.severity.as_str().to_owned(),
                severity_label: severity_label(r.severity.as_str()),
                keywords: r.keywords.len(),
                patterns: if patterns.is_empty() {
                    "—".to_owned()
                } else {
                    patterns.join("、")
                },
                senders: r
                    .senders
                    .iter()
                    .map(|s| match s {
                        Sender::Staff => "员工",
                        Sender::Customer => "客户",
                    })
                    .collect::<Vec<_>>()
                    .join("、"),
                scope: scope_of(r),
            }
        })
        .collect()
}

fn job_view(job: &jobs::Job) -> JobView {
    let outcome = serde_json::from_str::<crate::app::rescan::RescanSummary>(&job.summary)
        .ok()
        .map(|s| {
            format!(
                "扫描 {} 条消息，命中 {} 次，新告警 {} 条",
                s.messages, s.hits, s.alerts_opened
            )
        })
        .or_else(|| job.error.clone().map(|e| format!("出错：{e}")))
        .unwrap_or_default();
    JobView {
        id: job.id,
        state_label: job_state_label(&job.state).to_owned(),
        running: matches!(job.state.as_str(), "queued" | "running"),
        state: job.state.clone(),
        done: job.progress_done,
        total: job.progress_total,
        when: when(job.created_at_ms),
        outcome,
    }
}

/// The editor's side of the page: what is typed, and what the last action answered.
#[derive(Default)]
struct Editing {
    /// The TOML in the textarea (`None`: the library in force).
    source: Option<String>,
    /// The version the editor started from (`None` with `source` `None`: the one in force).
    base: Option<Option<i64>>,
    note: String,
    error: Option<String>,
    trial: TrialInput,
    result: Option<TrialView>,
    comparison: Option<ComparisonView>,
    saved: Option<i64>,
    job: Option<i64>,
    flash: Option<String>,
    recipients_error: Option<String>,
    /// The recipients as typed, when they were refused.
    recipients_typed: Vec<(String, String)>,
}

/// The rules page of the session's corp with `e` filled in.
async fn page_of(state: &AppState, s: &Session, e: Editing) -> Result<RulesPage, Failure> {
    let corp = &s.principal.corp_id;
    let db = &state.db;
    let stored = rule_book::current(db, corp.as_str()).await?;
    let (version, library) = state.rules.resolve_now(corp.as_str()).await?;
    let instance_origin = match &state.config.alerts.rules_file {
        Some(path) => format!("配置文件 {}", path.display()),
        None => "内置默认规则库".to_owned(),
    };
    let history = rule_book::versions(db, corp.as_str(), HISTORY_ROWS).await?;
    let quality = match &stored {
        Some(v) => v.summary.quality,
        None => Quality::default(),
    };
    let current = CurrentView {
        label: version_label(version),
        own: stored.is_some(),
        author: stored
            .as_ref()
            .map(|v| v.summary.author.clone())
            .unwrap_or_default(),
        when: stored
            .as_ref()
            .map(|v| when(v.summary.created_at_ms))
            .unwrap_or_default(),
        note: stored
            .as_ref()
            .map(|v| v.summary.note.clone())
            .unwrap_or_default(),
        origin: instance_origin,
        rule_count: library.len(),
        keyword_count: library.keywords().len(),
        quality: QualityView::of(&quality),
    };
    let source = e.source.unwrap_or_else(|| match &stored {
        Some(v) => v.source.clone(),
        None => library.source().to_owned(),
    });
    let base = e.base.unwrap_or(version);
    let job = match e.job {
        Some(id) => jobs::get(db, id)
            .await
            .ok()
            .filter(|j| j.corp_id == corp.as_str() && j.kind == crate::app::rescan::JOB_KIND),
        None => jobs::list(db, Some(corp.as_str()), crate::app::rescan::JOB_KIND, 1)
            .await?
            .into_iter()
            .next(),
    };
    let recipients = recipient_rows(state, corp, &library, &e.recipients_typed).await?;
    Ok(RulesPage {
        chrome: Chrome::new(&s.principal, &s.csrf_token, "/console/rules", e.flash),
        rules: rule_rows(&library),
        current,
        source,
        base: base.map(|v| v.to_string()).unwrap_or_default(),
        note: e.note,
        error: e.error,
        trial: e.trial,
        result: e.result,
        comparison: e.comparison,
        saved: e.saved,
        job: job.as_ref().map(job_view),
        versions: history
            .into_iter()
            .map(|v| VersionRow {
                current: Some(v.version) == version,
                version: v.version,
                author: v.author,
                when: when(v.created_at_ms),
                note: v.note,
                recall: percent(v.quality.recall),
                fpr: percent(v.quality.fpr),
            })
            .collect(),
        recipients,
        recipients_error: e.recipients_error,
    })
}

/// The built-in categories, then the library's own, then any that only have recipients; each
/// with its recipients (as typed, when a change was refused).
async fn recipient_rows(
    state: &AppState,
    corp: &CorpId,
    library: &RuleLibrary,
    typed: &[(String, String)],
) -> Result<Vec<RecipientRow>, Failure> {
    let stored = rule_book::recipients(&state.db, corp.as_str()).await?;
    let mut categories: Vec<String> = BUILT_IN_CATEGORIES
        .iter()
        .map(|c| (*c).to_owned())
        .collect();
    let mut extra: Vec<String> = library
        .rules()
        .iter()
        .map(|r| r.category.clone())
        .chain(stored.iter().map(|r| r.category.clone()))
        .filter(|c| !categories.contains(c))
        .collect();
    extra.sort();
    extra.dedup();
    categories.extend(extra);
    Ok(categories
        .into_iter()
        .map(|category| {
            let saved = stored.iter().find(|r| r.category == category);
            let users = typed
                .iter()
                .find(|(c, _)| *c == category)
                .map(|(_, u)| u.clone())
                .or_else(|| saved.map(|r| r.user_ids.join(", ")))
                .unwrap_or_default();
            RecipientRow {
                label: category_label(&category).to_owned(),
                updated: saved
                    .map(|r| format!("{} · {}", r.updated_by, when(r.updated_at_ms)))
                    .unwrap_or_default(),
                category,
                users,
            }
        })
        .collect())
}

fn page_response(status: StatusCode, page: &RulesPage) -> Response {
    html(status, render(page))
}

// ---------------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------------

pub(super) async fn page(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    uri: axum::http::Uri,
) -> Result<Response, Failure> {
    let s = signed.may(Action::ManageRules)?;
    let q = query_map(&uri);
    let version = q.get("v").and_then(|v| v.parse::<i64>().ok());
    let flash = q.get("done").map(|done| match done.as_str() {
        "saved" => format!(
            "已保存为{}，已在本实例生效（其他实例几秒内生效）",
            version_label(version)
        ),
        "reverted" => format!("已恢复，保存为{}", version_label(version)),
        "rescan" => "追溯扫描已开始".to_owned(),
        "recipients" => match q.get("n").map(String::as_str) {
            Some("0") => "接收人没有变化".to_owned(),
            _ => "接收人已保存".to_owned(),
        },
        _ => "已完成".to_owned(),
    });
    let saved = q
        .get("done")
        .filter(|d| matches!(d.as_str(), "saved" | "reverted"))
        .and(version);
    let editing = Editing {
        flash,
        saved,
        job: q.get("job").and_then(|j| j.parse().ok()),
        ..Editing::default()
    };
    let page = page_of(&state, &s, editing).await?;
    Ok(page_response(StatusCode::OK, &page))
}

/// The editor's fields of a posted library form.
fn editing_of(form: &Form) -> Editing {
    Editing {
        source: Some(form.get("source").unwrap_or("").to_owned()),
        base: Some(form.get("base").and_then(|b| b.trim().parse().ok())),
        note: form.get("note").unwrap_or("").to_owned(),
        trial: TrialInput {
            text: form.get("text").unwrap_or("").to_owned(),
            prev: form.get("prev").unwrap_or("").to_owned(),
            customer: form.get("sender") == Some("customer"),
        },
        ..Editing::default()
    }
}

/// 试一试: one sentence through the edited (unsaved) library, or the one in force when the
/// textarea is empty, explained as `scrm rules check` explains it.
pub(super) async fn try_it(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    LibraryForm(form): LibraryForm,
) -> Result<Response, Failure> {
    let s = signed.may_write(Action::ManageRules, &form)?;
    let mut e = editing_of(&form);
    let text = e.trial.text.trim().to_owned();
    let prev = e.trial.prev.trim().to_owned();
    if text.is_empty() {
        e.error = Some("请输入要试的一句话".to_owned());
        let page = page_of(&state, &s, e).await?;
        return Ok(page_response(StatusCode::UNPROCESSABLE_ENTITY, &page));
    }
    if text.chars().count() > MAX_TRIAL_CHARS || prev.chars().count() > MAX_TRIAL_CHARS {
        e.error = Some(format!("试一试的消息最多 {MAX_TRIAL_CHARS} 字"));
        let page = page_of(&state, &s, e).await?;
        return Ok(page_response(StatusCode::UNPROCESSABLE_ENTITY, &page));
    }
    let corp = s.principal.corp_id.as_str();
    let (_, current) = state.rules.resolve_now(corp).await?;
    let source = e.source.clone().unwrap_or_default();
    let edited = !source.trim().is_empty() && source != current.source();
    let library = if edited {
        if source.len() > rule_book::MAX_SOURCE_BYTES {
            e.error = Some(SaveError::TooLarge(source.len()).message());
            let page = page_of(&state, &s, e).await?;
            return Ok(page_response(StatusCode::UNPROCESSABLE_ENTITY, &page));
        }
        let compiled = tokio::task::spawn_blocking(move || RuleLibrary::from_toml(&source)).await;
        match compiled {
            Ok(Ok(library)) => Arc::new(library),
            Ok(Err(err)) => {
                e.error = Some(format!(
                    "编辑中的规则库无效，无法试用：规则 {} 的字段 {}：{}",
                    err.rule, err.field, err.reason
                ));
                let page = page_of(&state, &s, e).await?;
                return Ok(page_response(StatusCode::UNPROCESSABLE_ENTITY, &page));
            }
            Err(_) => return Err(Failure::Unavailable),
        }
    } else {
        current
    };
    let input = ScanInput {
        text: &text,
        prev: (!prev.is_empty()).then_some(prev.as_str()),
        context: None,
        sender: if e.trial.customer {
            Sender::Customer
        } else {
            Sender::Staff
        },
        msg_type: None,
    };
    let check = Check::run(&library, input);
    let all: Vec<(usize, usize)> = check
        .explanation
        .hits
        .iter()
        .flat_map(|h| h.spans.iter().copied())
        .collect();
    e.result = Some(TrialView {
        against: if edited {
            "编辑中的规则（未保存）".to_owned()
        } else {
            "当前生效的规则".to_owned()
        },
        parts: views::highlight(&text, &all),
        hits: check
            .explanation
            .hits
            .iter()
            .map(|h| HitView {
                rule_id: h.rule_id.clone(),
                category_label: category_label(&h.category).to_owned(),
                severity: h.severity.as_str().to_owned(),
                severity_label: severity_label(h.severity.as_str()),
                matched: h.matched.clone(),
                across: h.across_messages,
                parts: views::highlight(&text, &h.spans),
            })
            .collect(),
        explanation: check.to_text(),
    });
    let page = page_of(&state, &s, e).await?;
    Ok(page_response(StatusCode::OK, &page))
}

/// 保存: through the quality gate; a worse library comes back with the figures side by side and
/// is stored only when the form says 仍然保存 (`confirm=1`).
pub(super) async fn save(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    LibraryForm(form): LibraryForm,
) -> Result<Response, Failure> {
    let s = signed.may_write(Action::ManageRules, &form)?;
    let mut e = editing_of(&form);
    let source = e.source.clone().unwrap_or_default();
    let draft = Draft {
        source: &source,
        note: &e.note,
        base_version: e.base.flatten(),
        confirmed: form.get("confirm") == Some("1"),
    };
    let who = &s.principal;
    match state
        .rules
        .save(&who.corp_id, &draft, &who.actor(), now_ms())
        .await
    {
        Ok(saved) => Ok(see_other(&format!(
            "/console/rules?done=saved&v={}#rescan",
            saved.version
        ))),
        Err(SaveError::Store(err)) => Err(err.into()),
        Err(err) => {
            let status = match &err {
                SaveError::NeedsConfirmation(c) => {
                    e.comparison = Some(ComparisonView::of(c));
                    StatusCode::OK
                }
                SaveError::Stale { .. } => StatusCode::CONFLICT,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            e.error = Some(err.message());
            let page = page_of(&state, &s, e).await?;
            Ok(page_response(status, &page))
        }
    }
}

/// One stored version, read-only, with 恢复此版本.
pub(super) async fn version_page(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Path(version): Path<String>,
) -> Result<Response, Failure> {
    let s = signed.may(Action::ManageRules)?;
    let corp = s.principal.corp_id.as_str();
    let Ok(version) = version.parse::<i64>() else {
        return Err(Failure::NotFound(Box::new(s), "规则版本"));
    };
    let Some(v) = rule_book::version(&state.db, corp, version).await? else {
        return Err(Failure::NotFound(Box::new(s), "规则版本"));
    };
    let newest = rule_book::newest_version(&state.db, corp).await?;
    let page = VersionPage {
        chrome: Chrome::new(&s.principal, &s.csrf_token, "/console/rules", None),
        version: v.summary.version,
        author: v.summary.author,
        when: when(v.summary.created_at_ms),
        note: v.summary.note,
        quality: QualityView::of(&v.summary.quality),
        current: newest == Some(version),
        source: v.source,
    };
    Ok(html(StatusCode::OK, render(&page)))
}

/// 恢复此版本: the old version's source saved again as the newest.
pub(super) async fn revert(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Path(version): Path<i64>,
    form: Form,
) -> Result<Response, Failure> {
    let s = signed.may_write(Action::ManageRules, &form)?;
    let who = &s.principal;
    match state
        .rules
        .revert(&who.corp_id, version, &who.actor(), now_ms())
        .await
    {
        Ok(saved) => Ok(see_other(&format!(
            "/console/rules?done=reverted&v={}#rescan",
            saved.version
        ))),
        Err(SaveError::NotFound) => Err(Failure::NotFound(Box::new(s), "规则版本")),
        Err(SaveError::Store(err)) => Err(err.into()),
        Err(err) => {
            let status = if matches!(err, SaveError::Stale { .. }) {
                StatusCode::CONFLICT
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            let e = Editing {
                error: Some(err.message()),
                ..Editing::default()
            };
            let page = page_of(&state, &s, e).await?;
            Ok(page_response(status, &page))
        }
    }
}

/// 追溯扫描: the same job as `POST /api/v1/alerts/rescan`, with the corp's library in force.
pub(super) async fn rescan(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    form: Form,
) -> Result<Response, Failure> {
    let s = signed.may_write(Action::ManageRules, &form)?;
    let days = match form.get("days").map(str::trim).filter(|d| !d.is_empty()) {
        None => 7,
        Some(d) => match d.parse::<i64>() {
            Ok(n) if (1..=365).contains(&n) => n,
            _ => return Err(Failure::Invalid("扫描天数须在 1–365 之间".to_owned())),
        },
    };
    let now = now_ms();
    let since = now.saturating_sub(days.saturating_mul(86_400_000));
    let who = &s.principal;
    let job = crate::app::rescan::start_audited(
        &state.db,
        who.corp_id.as_str(),
        since,
        &who.actor(),
        "rules.rescan",
        now,
    )
    .await?;
    crate::app::rescan::spawn(
        state.db.clone(),
        state.wecom.clone(),
        state.rules.clone(),
        job,
        format!("console:{}", crate::pipeline::worker::instance_owner()),
    );
    Ok(see_other(&format!(
        "/console/rules?done=rescan&job={job}#rescan"
    )))
}

/// A rescan's progress for the page's script: `{state, label, done, total, outcome}`.
pub(super) async fn rescan_status(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Path(id): Path<String>,
) -> Result<Response, Failure> {
    let s = signed.may(Action::ManageRules)?;
    let job = match id.parse::<i64>() {
        Ok(id) => jobs::get(&state.db, id).await.ok(),
        Err(_) => None,
    };
    let Some(job) = job.filter(|j| {
        j.corp_id == s.principal.corp_id.as_str() && j.kind == crate::app::rescan::JOB_KIND
    }) else {
        return Err(Failure::NotFound(Box::new(s), "扫描任务"));
    };
    let v = job_view(&job);
    Ok((
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        axum::Json(serde_json::json!({
            "state": v.state,
            "label": v.state_label,
            "done": v.done,
            "total": v.total,
            "outcome": v.outcome,
        })),
    )
        .into_response())
}

/// The recipients form: `category` and `users` fields in pairs.
pub(super) async fn recipients(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    form: Form,
) -> Result<Response, Failure> {
    let s = signed.may_write(Action::ManageRules, &form)?;
    let typed: Vec<(String, String)> = form
        .all("category")
        .zip(form.all("users"))
        .map(|(c, u)| (c.trim().to_owned(), u.to_owned()))
        .take(200)
        .collect();
    let lists: Vec<(String, Vec<String>)> = typed
        .iter()
        .map(|(c, u)| (c.clone(), rule_book::parse_user_list(u)))
        .collect();
    let who = &s.principal;
    match rule_book::set_recipients(&state.db, &who.corp_id, &lists, &who.actor(), now_ms()).await {
        Ok(changed) => Ok(see_other(&format!(
            "/console/rules?done=recipients&n={}#recipients",
            changed.len()
        ))),
        Err(rule_book::RecipientsError::Store(err)) => Err(err.into()),
        Err(err) => {
            let e = Editing {
                recipients_error: Some(err.message()),
                recipients_typed: typed,
                ..Editing::default()
            };
            let page = page_of(&state, &s, e).await?;
            Ok(page_response(StatusCode::UNPROCESSABLE_ENTITY, &page))
        }
    }
}
