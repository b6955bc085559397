//! The console's pages as compile-time templates (`templates/console/`), and the labels they
//! show. Every page extends `layout.html`, which reads [`Chrome`]: the navigation the role may
//! use, who is signed in, the CSRF token the forms carry.

use askama::Template;

use crate::auth::{Action, Principal, Role};

/// One entry of the navigation.
pub(super) struct NavItem {
    pub(super) href: &'static str,
    pub(super) label: &'static str,
    pub(super) active: bool,
}

/// What every page around its content shows.
pub(super) struct Chrome {
    pub(super) css: String,
    pub(super) js: String,
    pub(super) csrf: String,
    pub(super) who: String,
    pub(super) role: &'static str,
    pub(super) nav: Vec<NavItem>,
    pub(super) flash: Option<String>,
}

/// The pages of the console, with the action that lets a role see each.
const PAGES: [(&str, &str, Action); 10] = [
    ("/console", "概览", Action::ReadOperations),
    ("/console/alerts", "告警", Action::ReadAlerts),
    ("/console/customers", "客户", Action::ReadCustomers),
    ("/console/tags", "标签", Action::ReadCustomers),
    ("/console/rules", "规则", Action::ManageRules),
    ("/console/transfers", "离职继承", Action::ReadTransfers),
    ("/console/replies", "话术库", Action::ReadCustomers),
    ("/console/audit", "审计日志", Action::ReadOperations),
    ("/console/members", "成员与权限", Action::ManageSettings),
    ("/console/settings", "设置", Action::ReadOperations),
];

/// The first page `role` may open (where `/console` sends those who may not see the overview).
pub(super) fn home_of(role: Role) -> &'static str {
    PAGES
        .iter()
        .find(|(_, _, action)| role.may(*action))
        .map_or("/console/customers", |(href, _, _)| href)
}

pub(super) fn role_label(role: Role) -> &'static str {
    match role {
        Role::Admin => "管理员",
        Role::Compliance => "合规",
        Role::Manager => "部门负责人",
        Role::Sales => "销售",
    }
}

impl Chrome {
    pub(super) fn new(who: &Principal, csrf: &str, active: &str, flash: Option<String>) -> Self {
        let (css, js) = super::assets();
        Self {
            css,
            js,
            csrf: csrf.to_owned(),
            who: who
                .account
                .clone()
                .or_else(|| who.staff_user_id.as_ref().map(ToString::to_string))
                .unwrap_or_default(),
            role: role_label(who.role),
            nav: PAGES
                .iter()
                .filter(|(_, _, action)| who.role.may(*action))
                .map(|(href, label, _)| NavItem {
                    href,
                    label,
                    active: *href == active,
                })
                .collect(),
            flash,
        }
    }
}

/// The sign-in page.
#[derive(Template)]
#[template(path = "console/login.html")]
pub(super) struct Login<'a> {
    pub(super) css: &'a str,
    pub(super) next: &'a str,
    pub(super) username: &'a str,
    pub(super) error: Option<&'a str>,
    pub(super) wecom: Vec<WecomLogin>,
}

/// A "sign in through WeCom" button of the sign-in page.
pub(super) struct WecomLogin {
    pub(super) href: String,
    pub(super) label: String,
}

/// A page with one message (refusals, missing things).
#[derive(Template)]
#[template(path = "console/page.html")]
pub(super) struct Page<'a> {
    pub(super) chrome: Chrome,
    pub(super) title: &'a str,
    pub(super) detail: &'a str,
}

/// A choice of a filter's `<select>`.
pub(super) struct Opt {
    pub(super) value: &'static str,
    pub(super) label: &'static str,
    pub(super) selected: bool,
}

/// Choices with "全部" first, `current` selected.
/// An option of a list read from the database.
pub(super) struct Choice {
    pub(super) value: String,
    pub(super) label: String,
    pub(super) selected: bool,
}

/// The departments as options (indented under their parents), "全部" first.
pub(super) fn department_choices(
    all: &[crate::domain::staff::Department],
    current: &str,
) -> Vec<Choice> {
    fn walk(
        all: &[crate::domain::staff::Department],
        parent: Option<i64>,
        depth: usize,
        current: &str,
        out: &mut Vec<Choice>,
    ) {
        for d in all.iter().filter(|d| {
            d.parent_id == parent
                || (parent.is_none() && !all.iter().any(|p| Some(p.id) == d.parent_id))
        }) {
            if out.iter().any(|c| c.value == d.id.to_string()) || depth > 16 {
                continue;
            }
            let value = d.id.to_string();
            out.push(Choice {
                selected: value == current,
                label: format!(
                    "{}{}",
                    "　".repeat(depth),
                    if d.name.is_empty() { &value } else { &d.name }
                ),
                value,
            });
            walk(all, Some(d.id), depth + 1, current, out);
        }
    }
    let mut out = vec![Choice {
        value: String::new(),
        label: "全部".to_owned(),
        selected: current.is_empty(),
    }];
    walk(all, None, 0, current, &mut out);
    out
}

pub(super) fn options(all: &[(&'static str, &'static str)], current: &str) -> Vec<Opt> {
    std::iter::once(("", "全部"))
        .chain(all.iter().copied())
        .map(|(value, label)| Opt {
            value,
            label,
            selected: value == current,
        })
        .collect()
}

pub(super) const STATES: [(&str, &str); 4] = [
    ("open", "待处理"),
    ("acknowledged", "处理中"),
    ("resolved", "已解决"),
    ("false_positive", "误报"),
];
pub(super) const KINDS: [(&str, &str); 6] = [
    ("staff_deleted_customer", "员工删除客户"),
    ("mass_deletion", "批量删除客户"),
    ("customer_deleted_staff", "客户删除员工"),
    ("relation_vanished", "好友关系消失"),
    ("content", "聊天内容违规"),
    ("archive_stalled", "会话存档停滞"),
];
pub(super) const SEVERITIES: [(&str, &str); 4] = [
    ("critical", "严重"),
    ("high", "高"),
    ("medium", "中"),
    ("low", "低"),
];

/// The Chinese label of a stored name, or the name itself.
pub(super) fn label(table: &[(&'static str, &'static str)], value: &str) -> String {
    table
        .iter()
        .find(|(v, _)| *v == value)
        .map_or_else(|| value.to_owned(), |(_, l)| (*l).to_owned())
}

/// The filter as typed back into the form.
#[derive(Default)]
pub(super) struct AlertFilterView {
    pub(super) departments: Vec<Choice>,
    pub(super) category: String,
    pub(super) staff: String,
    pub(super) since: String,
}

pub(super) struct AlertRow {
    pub(super) id: i64,
    pub(super) when: String,
    pub(super) severity: String,
    pub(super) severity_label: String,
    pub(super) kind_label: String,
    pub(super) title: String,
    pub(super) staff: String,
    pub(super) evidence_count: i64,
    pub(super) state: String,
    pub(super) state_label: String,
}

/// The alerts inbox.
#[derive(Template)]
#[template(path = "console/alerts.html")]
pub(super) struct Alerts {
    pub(super) chrome: Chrome,
    pub(super) states: Vec<Opt>,
    pub(super) kinds: Vec<Opt>,
    pub(super) severities: Vec<Opt>,
    pub(super) filter: AlertFilterView,
    pub(super) query: String,
    pub(super) alerts: Vec<AlertRow>,
    pub(super) next_page: Option<String>,
}

/// A piece of a message: plain, or inside a hit span.
pub(super) struct Part {
    pub(super) text: String,
    pub(super) hit: bool,
}

pub(super) struct EvidenceView {
    pub(super) when: String,
    pub(super) source: String,
    pub(super) customer: String,
    pub(super) parts: Vec<Part>,
    pub(super) detail: String,
    /// The archived messages around it (for roles that may read archived chat).
    pub(super) context: Vec<ContextLine>,
}

/// One message of the conversation around an evidence.
pub(super) struct ContextLine {
    pub(super) when: String,
    pub(super) sender: String,
    pub(super) staff: bool,
    pub(super) text: String,
    pub(super) this: bool,
}

pub(super) struct RelationRow {
    pub(super) when: String,
    pub(super) change: String,
    pub(super) source: String,
    pub(super) detail: String,
}

pub(super) struct HistoryView {
    pub(super) when: String,
    pub(super) actor: String,
    pub(super) action: String,
    pub(super) comment: String,
}

pub(super) struct DeliveryView {
    pub(super) recipient: String,
    pub(super) reason: String,
    pub(super) state: String,
    pub(super) state_class: String,
}

pub(super) struct StepButton {
    pub(super) value: &'static str,
    pub(super) label: &'static str,
    pub(super) quiet: bool,
}

/// One alert with everything needed to work it.
#[derive(Template)]
#[template(path = "console/alert.html")]
pub(super) struct AlertPage {
    pub(super) chrome: Chrome,
    pub(super) id: i64,
    pub(super) title: String,
    pub(super) severity: String,
    pub(super) severity_label: String,
    pub(super) state: String,
    pub(super) state_label: String,
    pub(super) kind_label: String,
    pub(super) category: String,
    pub(super) rule_id: String,
    pub(super) staff: String,
    pub(super) customer: String,
    pub(super) created: String,
    pub(super) first: String,
    pub(super) last: String,
    pub(super) steps: Vec<StepButton>,
    pub(super) evidence: Vec<EvidenceView>,
    pub(super) relation: Vec<RelationRow>,
    pub(super) history: Vec<HistoryView>,
    pub(super) deliveries: Vec<DeliveryView>,
}

/// `text` cut into plain parts and parts inside `spans` (character offsets `[start, end)`,
/// clamped to the text, overlapping ones merged).
pub(super) fn highlight(text: &str, spans: &[(usize, usize)]) -> Vec<Part> {
    let chars: Vec<char> = text.chars().collect();
    let mut marked = vec![false; chars.len()];
    for &(start, end) in spans {
        for m in marked
            .iter_mut()
            .take(end.min(chars.len()))
            .skip(start.min(chars.len()))
        {
            *m = true;
        }
    }
    let mut parts: Vec<Part> = Vec::new();
    for (c, hit) in chars.into_iter().zip(marked) {
        match parts.last_mut() {
            Some(p) if p.hit == hit => p.text.push(c),
            _ => parts.push(Part {
                text: c.to_string(),
                hit,
            }),
        }
    }
    parts
}

pub(super) struct AuditRow {
    pub(super) when: String,
    pub(super) actor: String,
    pub(super) action: String,
    pub(super) target: String,
    pub(super) detail: String,
}

#[derive(Default)]
pub(super) struct AuditFilterView {
    pub(super) actor: String,
    pub(super) action: String,
    pub(super) target: String,
    pub(super) since: String,
}

/// The audit log.
#[derive(Template)]
#[template(path = "console/audit.html")]
pub(super) struct Audit {
    pub(super) chrome: Chrome,
    pub(super) filter: AuditFilterView,
    pub(super) query: String,
    pub(super) entries: Vec<AuditRow>,
    pub(super) next_page: Option<String>,
}

pub(super) struct Tile {
    pub(super) label: &'static str,
    pub(super) value: String,
    pub(super) note: String,
    pub(super) href: &'static str,
    pub(super) bad: bool,
}

pub(super) struct Bar {
    pub(super) x: i64,
    pub(super) y_done: i64,
    pub(super) h_done: i64,
    pub(super) y_other: i64,
    pub(super) h_other: i64,
    pub(super) done: i64,
    pub(super) dead: i64,
    pub(super) pending: i64,
    pub(super) label: String,
    pub(super) tick: bool,
}

pub(super) struct Chart {
    pub(super) width: i64,
    pub(super) height: i64,
    pub(super) bar: i64,
    pub(super) bars: Vec<Bar>,
    pub(super) total: i64,
    pub(super) max: i64,
}

/// The integration's health at a glance.
#[derive(Template)]
#[template(path = "console/overview.html")]
pub(super) struct Overview {
    pub(super) chrome: Chrome,
    pub(super) banners: Vec<String>,
    pub(super) tiles: Vec<Tile>,
    pub(super) chart: Chart,
    pub(super) open_by_severity: Vec<(String, String, i64)>,
}

pub(super) struct DepartureRow {
    pub(super) user_id: String,
    pub(super) name: String,
    pub(super) departed: String,
    pub(super) customers: i64,
    pub(super) group_chats: i64,
    pub(super) unassigned_listed: i64,
    pub(super) open_job: Option<i64>,
}

pub(super) struct JobRow {
    pub(super) id: i64,
    pub(super) handover: String,
    pub(super) mode: &'static str,
    pub(super) takers: String,
    pub(super) state: String,
    pub(super) state_label: String,
    pub(super) created: String,
}

/// Departed members with customers left, and the latest jobs.
#[derive(Template)]
#[template(path = "console/transfers.html")]
pub(super) struct Transfers {
    pub(super) chrome: Chrome,
    pub(super) may_manage: bool,
    pub(super) departures: Vec<DepartureRow>,
    pub(super) jobs: Vec<JobRow>,
}

pub(super) struct MemberOption {
    pub(super) user_id: String,
    pub(super) label: String,
    pub(super) selected: bool,
}

/// The wizard's first step: who hands over, to whom, how.
#[derive(Template)]
#[template(path = "console/transfer_new.html")]
pub(super) struct TransferNew {
    pub(super) chrome: Chrome,
    pub(super) handovers: Vec<MemberOption>,
    pub(super) takers: Vec<MemberOption>,
}

/// A job's items counted as its page and the page's live progress read them.
#[derive(serde::Serialize)]
pub(super) struct Tally {
    pub(super) state: String,
    pub(super) total: i64,
    pub(super) finished: i64,
    pub(super) done: i64,
    pub(super) refused: i64,
    pub(super) failed: i64,
    pub(super) waiting: i64,
}

impl Tally {
    /// The counts of job in `state` with `p`.
    pub(super) fn of(state: &str, p: &crate::domain::transfers::Progress) -> Self {
        let n = |item_state: &str| -> i64 {
            p.customers.get(item_state).copied().unwrap_or(0)
                + p.group_chats.get(item_state).copied().unwrap_or(0)
        };
        Self {
            state: state.to_owned(),
            total: p.total(),
            finished: p.finished(),
            done: n("done"),
            refused: n("refused"),
            failed: n("failed"),
            waiting: n("waiting"),
        }
    }
}

pub(super) struct ItemRow {
    pub(super) kind: &'static str,
    pub(super) target: String,
    pub(super) taker: String,
    pub(super) state: String,
    pub(super) state_label: String,
    pub(super) reason: String,
}

/// A job: the preview before it runs, its progress while it runs.
#[derive(Template)]
#[template(path = "console/transfer.html")]
pub(super) struct TransferPage {
    pub(super) chrome: Chrome,
    pub(super) may_manage: bool,
    pub(super) id: i64,
    pub(super) handover: String,
    pub(super) mode: &'static str,
    pub(super) takers: String,
    pub(super) created: String,
    pub(super) note: String,
    pub(super) notice: String,
    pub(super) state: String,
    pub(super) state_label: String,
    pub(super) tally: Tally,
    pub(super) percent: i64,
    pub(super) flagged: Vec<String>,
    pub(super) items: Vec<ItemRow>,
}

pub(super) struct CustomerRow {
    /// URL-encoded external_userid.
    pub(super) id: String,
    pub(super) name: String,
    pub(super) corp_name: String,
    pub(super) followers: String,
}

/// The customer search.
#[derive(Template)]
#[template(path = "console/customers.html")]
pub(super) struct Customers {
    pub(super) chrome: Chrome,
    pub(super) q: String,
    pub(super) phone: String,
    pub(super) channel: String,
    pub(super) tags: Vec<Choice>,
    pub(super) stages: Vec<Choice>,
    pub(super) added_from: String,
    pub(super) added_to: String,
    pub(super) ended_from: String,
    pub(super) ended_to: String,
    /// Listing relations that ended (the followers column may be empty).
    pub(super) ended: bool,
    pub(super) staff: Vec<MemberOption>,
    pub(super) customers: Vec<CustomerRow>,
    pub(super) next_page: Option<String>,
}

pub(super) struct RelationView {
    pub(super) staff: String,
    pub(super) status: &'static str,
    pub(super) status_class: &'static str,
    pub(super) remark: String,
    pub(super) channel: String,
    pub(super) added: String,
    pub(super) tags: Vec<String>,
    pub(super) history: Vec<RelationRow>,
}

pub(super) struct NoteRow {
    pub(super) when: String,
    pub(super) author: String,
    pub(super) body: String,
}

pub(super) struct ReminderRow {
    pub(super) title: String,
    pub(super) assignee: String,
    pub(super) due: String,
    pub(super) state: &'static str,
}

pub(super) struct MessageView {
    pub(super) when: String,
    pub(super) kind: &'static str,
    pub(super) sender: String,
    pub(super) text: String,
}

/// One customer, everything the corp knows.
#[derive(Template)]
#[template(path = "console/customer.html")]
pub(super) struct CustomerPage {
    pub(super) chrome: Chrome,
    pub(super) id: String,
    pub(super) name: String,
    pub(super) corp_name: String,
    pub(super) stage: String,
    pub(super) personal_tags: Vec<String>,
    pub(super) relations: Vec<RelationView>,
    pub(super) notes: Vec<NoteRow>,
    pub(super) reminders: Vec<ReminderRow>,
    pub(super) may_read_archive: bool,
    pub(super) messages: Vec<MessageView>,
}

pub(super) struct ReplyView {
    pub(super) id: i64,
    pub(super) title: String,
    pub(super) body: String,
    pub(super) use_count: i64,
    pub(super) last_used: String,
}

pub(super) struct ReplyFolderView {
    pub(super) id: i64,
    pub(super) name: String,
    pub(super) snippets: Vec<ReplyView>,
}

/// The quick-reply library, editable by admins.
#[derive(Template)]
#[template(path = "console/replies.html")]
pub(super) struct Replies {
    pub(super) chrome: Chrome,
    pub(super) may_manage: bool,
    pub(super) folders: Vec<ReplyFolderView>,
}

pub(super) struct AppRow {
    pub(super) name: String,
    pub(super) place: &'static str,
    pub(super) url: String,
    pub(super) sample: bool,
}

pub(super) struct CheckView {
    pub(super) name: &'static str,
    pub(super) kind: &'static str,
    pub(super) mark: &'static str,
    pub(super) detail: String,
}

pub(super) struct SelftestView {
    pub(super) app: String,
    pub(super) url: String,
    pub(super) checks: Vec<CheckView>,
    pub(super) passed: bool,
    pub(super) summary: String,
}

/// The corp's callback configurations and their self-test.
#[derive(Template)]
#[template(path = "console/settings.html")]
pub(super) struct Settings {
    pub(super) chrome: Chrome,
    pub(super) corp_id: String,
    pub(super) base_known: bool,
    pub(super) may_manage: bool,
    pub(super) apps: Vec<AppRow>,
    pub(super) test: Option<SelftestView>,
    /// `None`: the corp does not use the chat archive.
    pub(super) keys: Option<Vec<KeyRow>>,
    pub(super) values: Vec<SettingRow>,
}

/// A chat-archive private key version and its state.
pub(super) struct KeyRow {
    pub(super) version: i64,
    pub(super) configured: bool,
    pub(super) undecryptable: i64,
}

/// One configured value as the settings page lists it.
pub(super) struct SettingRow {
    pub(super) group: &'static str,
    pub(super) label: &'static str,
    pub(super) value: String,
    pub(super) key: &'static str,
}

pub(super) struct TagRow {
    pub(super) id: String,
    pub(super) name: String,
}

pub(super) struct TagGroupRow {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) tags: Vec<TagRow>,
}

/// The corp tag library.
#[derive(Template)]
#[template(path = "console/tags.html")]
pub(super) struct Tags {
    pub(super) chrome: Chrome,
    pub(super) may_manage: bool,
    pub(super) groups: Vec<TagGroupRow>,
    pub(super) pending: Vec<String>,
    pub(super) dead: Vec<String>,
    pub(super) may_manage_rules: bool,
    pub(super) rules: Vec<AutoTagRow>,
}

/// An auto-tagging rule on 标签.
pub(super) struct AutoTagRow {
    pub(super) id: i64,
    pub(super) name: String,
    pub(super) trigger: &'static str,
    pub(super) patterns: String,
    pub(super) tags: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_are_marked_by_character_and_clamped() {
        let parts = highlight("加我微信转账给你", &[(2, 4), (5, 7), (6, 99)]);
        let shown: Vec<(String, bool)> = parts.into_iter().map(|p| (p.text, p.hit)).collect();
        assert_eq!(
            shown,
            vec![
                ("加我".to_owned(), false),
                ("微信".to_owned(), true),
                ("转".to_owned(), false),
                ("账给你".to_owned(), true),
            ]
        );
        assert!(highlight("", &[(0, 3)]).is_empty());
    }
}

/// A member on 成员与权限.
pub(super) struct MemberRow {
    pub(super) user_id: String,
    pub(super) name: String,
    pub(super) role: String,
    pub(super) granted: bool,
    pub(super) choices: Vec<Choice>,
    pub(super) sessions: usize,
}

/// A live session on 成员与权限.
pub(super) struct SessionRow {
    pub(super) id: String,
    pub(super) who: String,
    pub(super) surface: &'static str,
    pub(super) role: &'static str,
    pub(super) since: String,
    pub(super) seen: String,
}

/// 成员与权限: console roles and live sessions.
#[derive(Template)]
#[template(path = "console/members.html")]
pub(super) struct Members {
    pub(super) chrome: Chrome,
    pub(super) members: Vec<MemberRow>,
    pub(super) sessions: Vec<SessionRow>,
}
