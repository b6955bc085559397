//! What the sidebar shows, as compile-time templates (`templates/sidebar/`), and the view of one
//! customer assembled from the domain: the profile, this salesperson's relation, the tag library
//! with what is on (and what WeCom has not confirmed yet), notes of every owner, open reminders.

use std::collections::{BTreeSet, HashMap};

use askama::Template;
use wecom_sdk::{CorpId, ExternalUserId, UserId};

use crate::domain::customers::{self, RelationStatus};
use crate::domain::{alerts, followup, group_chats, quick_replies, staff, tags};
use crate::pipeline::outbox::{self, Intent, OutboxFilter};
use crate::platform::db::{Db, StoreError};

/// The page the toolbar opens: assets, the CSRF token, WeCom's JS-SDK.
#[derive(Template)]
#[template(path = "sidebar/shell.html")]
pub(super) struct Shell<'a> {
    pub(super) csrf: &'a str,
    pub(super) css: &'a str,
    pub(super) js: &'a str,
    pub(super) jssdk: &'a str,
    /// The JS-SDK signatures for this page's URL, as JSON (empty: the page asks for them).
    pub(super) signed: &'a str,
}

/// A whole page with one message (sign-in problems).
#[derive(Template)]
#[template(path = "sidebar/page.html")]
pub(super) struct Page<'a> {
    pub(super) title: &'a str,
    pub(super) detail: &'a str,
    pub(super) css: &'a str,
}

/// A message in place of a view.
#[derive(Template)]
#[template(path = "sidebar/notice.html")]
pub(super) struct Notice<'a> {
    pub(super) kind: &'a str,
    pub(super) title: &'a str,
    pub(super) detail: &'a str,
    pub(super) retry: Option<&'a str>,
}

pub(super) struct TagView {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) on: bool,
    pub(super) pending: bool,
    /// WeCom refused the last change of this tag: why, in Chinese.
    pub(super) refused: Option<String>,
}

pub(super) struct TagGroupView {
    pub(super) name: String,
    pub(super) tags: Vec<TagView>,
}

pub(super) struct NoteView {
    pub(super) author: String,
    pub(super) when: String,
    pub(super) body: String,
    pub(super) handover: bool,
}

pub(super) struct StageChangeView {
    pub(super) from: String,
    pub(super) to: String,
    pub(super) who: String,
    pub(super) when: String,
}

pub(super) struct AlertView {
    pub(super) text: String,
    pub(super) when: String,
}

pub(super) struct ReminderView {
    pub(super) id: i64,
    pub(super) title: String,
    pub(super) due: String,
}

/// One customer, as the salesperson sees them.
#[derive(Template)]
#[template(path = "sidebar/customer.html")]
pub(super) struct CustomerView {
    pub(super) ext: String,
    pub(super) base: String,
    pub(super) name: String,
    pub(super) initial: String,
    pub(super) avatar: String,
    pub(super) corp_name: String,
    pub(super) remark: String,
    pub(super) description: String,
    pub(super) channel: String,
    pub(super) added: String,
    pub(super) colleagues: Vec<String>,
    pub(super) stage: Option<String>,
    pub(super) stages: Vec<String>,
    pub(super) stage_history: Vec<StageChangeView>,
    pub(super) alerts: Vec<AlertView>,
    pub(super) tag_groups: Vec<TagGroupView>,
    pub(super) personal_tags: Vec<String>,
    pub(super) notes: Vec<NoteView>,
    pub(super) older: Option<i64>,
    pub(super) reminders: Vec<ReminderView>,
}

/// Older notes, for "查看更早的记录".
#[derive(Template)]
#[template(path = "sidebar/notes.html")]
pub(super) struct NotesPage {
    pub(super) base: String,
    pub(super) notes: Vec<NoteView>,
    pub(super) older: Option<i64>,
}

pub(super) struct DueView {
    pub(super) link: String,
    pub(super) customer: String,
    pub(super) title: String,
    pub(super) due: String,
}

pub(super) struct RecentView {
    pub(super) link: String,
    pub(super) name: String,
    pub(super) remark: String,
    pub(super) when: String,
}

/// Opened from the workbench (no chat): the salesperson's reminders due within a week and the
/// customers they were last active with.
#[derive(Template)]
#[template(path = "sidebar/home.html")]
pub(super) struct Home {
    pub(super) reminders: Vec<DueView>,
    pub(super) recent: Vec<RecentView>,
}

pub(super) struct ChatCustomerView {
    pub(super) name: String,
    /// Their view, when the salesperson follows them.
    pub(super) link: Option<String>,
    pub(super) followers: Vec<String>,
    pub(super) tags: Vec<String>,
}

/// A customer group chat: who is in it, and which members are our customers with their tags.
#[derive(Template)]
#[template(path = "sidebar/chat.html")]
pub(super) struct ChatView {
    pub(super) name: String,
    pub(super) owner: String,
    pub(super) staff: usize,
    pub(super) customers: Vec<ChatCustomerView>,
    /// Customers in the chat nobody here follows (WeChat users who joined through others).
    pub(super) others: usize,
}

/// The quick-reply library (or what matches a search), as a fragment.
#[derive(Template)]
#[template(path = "sidebar/replies.html")]
pub(super) struct Replies {
    pub(super) folders: Vec<quick_replies::FolderWithSnippets>,
    pub(super) query: String,
}

/// Customers shown as "recently active" on the workbench.
const RECENT_CUSTOMERS: i64 = 20;

/// The workbench view of staff member `me`.
pub(super) async fn home(
    db: &Db,
    corp: &CorpId,
    me: &UserId,
    now_ms: i64,
) -> Result<String, StoreError> {
    let filter = followup::ReminderFilter {
        assignee: Some(me.to_string()),
        state: Some("open".to_owned()),
        due_before_ms: Some(now_ms + 7 * 86_400_000),
        followed_by: Some(me.to_string()),
        limit: 50,
        ..followup::ReminderFilter::default()
    };
    let reminders = followup::list_reminders(db, corp.as_str(), &filter)
        .await?
        .into_iter()
        .map(|r| DueView {
            link: base_of(&r.external_user_id),
            customer: r
                .customer_name
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| r.external_user_id.to_string()),
            title: r.title,
            due: when(r.due_at_ms),
        })
        .collect();
    let recent = customers::recently_active(db, corp, me, RECENT_CUSTOMERS)
        .await?
        .into_iter()
        .map(|c| RecentView {
            link: base_of(&c.external_user_id),
            name: if c.name.is_empty() {
                c.external_user_id.to_string()
            } else {
                c.name
            },
            remark: c.remark,
            when: if c.active_at_ms > 0 {
                when(c.active_at_ms)
            } else {
                String::new()
            },
        })
        .collect();
    Ok(Home { reminders, recent }.render().unwrap_or_else(|e| {
        tracing::error!(error = %e, "sidebar: home template failed");
        String::new()
    }))
}

/// Notes shown at once; older ones on request.
const NOTES_PER_PAGE: usize = 30;

fn base_of(ext: &ExternalUserId) -> String {
    format!(
        "/sidebar/customer/{}",
        url::form_urlencoded::byte_serialize(ext.as_str().as_bytes()).collect::<String>()
    )
}

/// A page of notes (newest first) before note `before`, and the id to ask for the next page.
async fn notes_page(
    db: &Db,
    names: &mut Names<'_>,
    ext: &ExternalUserId,
    before: Option<i64>,
) -> Result<(Vec<NoteView>, Option<i64>), StoreError> {
    let limit = i64::try_from(NOTES_PER_PAGE + 1).unwrap_or(31);
    let mut rows = followup::list_notes(db, names.corp, ext, before, limit).await?;
    let more = rows.len() > NOTES_PER_PAGE;
    rows.truncate(NOTES_PER_PAGE);
    let older = if more {
        rows.last().map(|n| n.id)
    } else {
        None
    };
    let mut notes = Vec::with_capacity(rows.len());
    for n in rows {
        notes.push(NoteView {
            author: names.of(&n.author).await?,
            when: when(n.created_at_ms),
            handover: n.body.starts_with("【交接】"),
            body: n.body,
        });
    }
    Ok((notes, older))
}

/// Notes of `ext` older than `before`, as a fragment.
pub(super) async fn older_notes(
    db: &Db,
    corp: &CorpId,
    ext: &ExternalUserId,
    before: i64,
) -> Result<String, StoreError> {
    let mut names = Names {
        db,
        corp,
        known: HashMap::new(),
    };
    let (notes, older) = notes_page(db, &mut names, ext, Some(before)).await?;
    let page = NotesPage {
        base: base_of(ext),
        notes,
        older,
    };
    Ok(page.render().unwrap_or_else(|e| {
        tracing::error!(error = %e, "sidebar: notes template failed");
        String::new()
    }))
}

/// `MM-DD HH:mm` in China Standard Time (the year too when it is not this year's).
fn when(ms: i64) -> String {
    let Some(tz) = chrono::FixedOffset::east_opt(8 * 3600) else {
        return String::new();
    };
    let Some(t) = chrono::DateTime::from_timestamp_millis(ms) else {
        return String::new();
    };
    let t = t.with_timezone(&tz);
    let now = chrono::Utc::now().with_timezone(&tz);
    if chrono::Datelike::year(&t) == chrono::Datelike::year(&now) {
        t.format("%m-%d %H:%M").to_string()
    } else {
        t.format("%Y-%m-%d %H:%M").to_string()
    }
}

/// Display names of staff members (and of other actors as they are), looked up once each.
struct Names<'a> {
    db: &'a Db,
    corp: &'a CorpId,
    known: HashMap<String, String>,
}

impl Names<'_> {
    async fn of(&mut self, actor: &str) -> Result<String, StoreError> {
        if let Some(n) = self.known.get(actor) {
            return Ok(n.clone());
        }
        let name = match UserId::try_from(actor) {
            Ok(user) => staff::get(self.db, self.corp, &user)
                .await?
                .map(|m| m.name)
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| actor.to_owned()),
            Err(_) => actor.to_owned(),
        };
        let name = if actor.starts_with("apikey:") || actor == "system" {
            "系统".to_owned()
        } else {
            name
        };
        self.known.insert(actor.to_owned(), name.clone());
        Ok(name)
    }
}

/// The view of `ext` for staff member `me` of `corp`.
pub(super) async fn customer(
    db: &Db,
    corp: &CorpId,
    me: &UserId,
    ext: &ExternalUserId,
) -> Result<String, StoreError> {
    let profile = customers::get_customer(db, corp, ext).await?;
    let relations = customers::relations_of_customer(db, corp, ext).await?;
    let mine = relations.iter().find(|r| r.user_id == *me);
    let mut names = Names {
        db,
        corp,
        known: HashMap::new(),
    };
    let mut colleagues = Vec::new();
    for r in relations
        .iter()
        .filter(|r| r.user_id != *me && r.status == RelationStatus::Active)
    {
        colleagues.push(names.of(r.user_id.as_str()).await?);
    }
    let on: BTreeSet<String> = mine
        .map(|r| r.tags().into_iter().collect())
        .unwrap_or_default();
    let mut pending = BTreeSet::new();
    for (_, intent) in outbox::pending_for_customer(db, corp, ext).await? {
        if let Intent::MarkTag {
            user_id,
            add,
            remove,
            ..
        } = intent
            && user_id == *me
        {
            pending.extend(add);
            pending.extend(remove);
        }
    }
    let refused = refused_tags(db, corp, me, ext).await?;
    let tag_groups = tags::library(db, corp.as_str())
        .await?
        .into_iter()
        .map(|g| TagGroupView {
            name: g.name,
            tags: g
                .tags
                .into_iter()
                .map(|t| TagView {
                    on: on.contains(&t.tag_id),
                    pending: pending.contains(&t.tag_id),
                    refused: refused.get(&t.tag_id).cloned(),
                    id: t.tag_id,
                    name: t.name,
                })
                .collect(),
        })
        .collect();
    let personal_tags = customers::record::customer_personal_tags(db, corp, ext)
        .await?
        .into_iter()
        .map(|t| t.name)
        .collect();
    let (notes, older) = notes_page(db, &mut names, ext, None).await?;
    let filter = followup::ReminderFilter {
        assignee: Some(me.to_string()),
        external_user_id: Some(ext.to_string()),
        state: Some("open".to_owned()),
        limit: 50,
        ..followup::ReminderFilter::default()
    };
    let reminders = followup::list_reminders(db, corp.as_str(), &filter)
        .await?
        .into_iter()
        .map(|r| ReminderView {
            id: r.id,
            title: r.title,
            due: when(r.due_at_ms),
        })
        .collect();
    let stage = followup::customer_stage_record(db, corp, ext).await?;
    let mut stage_history = Vec::new();
    for c in stage.history.iter().rev().take(STAGE_CHANGES_SHOWN) {
        stage_history.push(StageChangeView {
            from: c
                .from_stage
                .clone()
                .unwrap_or_else(|| "（未设置）".to_owned()),
            to: c.to_stage.clone(),
            who: names.of(&c.actor).await?,
            when: when(c.at_ms),
        });
    }
    let mut alerts = Vec::new();
    for a in alerts::unresolved_for_sales(db, corp, ext).await? {
        alerts.push(AlertView {
            text: sales_alert_text(&a.kind, &names.of(&a.staff_user_id).await?),
            when: when(a.first_at_ms),
        });
    }
    let name = profile
        .as_ref()
        .map(|p| p.name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| ext.to_string());
    let view = CustomerView {
        base: base_of(ext),
        ext: ext.to_string(),
        initial: name.chars().next().map(String::from).unwrap_or_default(),
        name,
        avatar: profile
            .as_ref()
            .map(|p| p.avatar.clone())
            .filter(|a| a.starts_with("https://") || a.starts_with("http://"))
            .unwrap_or_default(),
        corp_name: profile.map(|p| p.corp_name).unwrap_or_default(),
        remark: mine.map(|r| r.remark.clone()).unwrap_or_default(),
        description: mine.map(|r| r.description.clone()).unwrap_or_default(),
        channel: mine.and_then(|r| r.state.clone()).unwrap_or_default(),
        added: mine
            .and_then(|r| r.added_at_ms)
            .map(when)
            .unwrap_or_else(|| "—".to_owned()),
        colleagues,
        stage: stage.stage,
        stages: followup::stages(db, corp.as_str()).await?,
        stage_history,
        alerts,
        tag_groups,
        personal_tags,
        notes,
        older,
        reminders,
    };
    Ok(view.render().unwrap_or_else(|e| {
        tracing::error!(error = %e, "sidebar: customer template failed");
        "<p>页面出错</p>".to_owned()
    }))
}

/// Stage changes shown under the stages (newest first).
const STAGE_CHANGES_SHOWN: usize = 5;

/// What an alert a salesperson may see says, in their words.
fn sales_alert_text(kind: &str, staff: &str) -> String {
    match alerts::Kind::parse(kind) {
        Some(alerts::Kind::CustomerDeletedStaff) => {
            format!("客户删除了同事 {staff}，沟通时请留意客户的态度")
        }
        _ => "有一条待处理的提醒".to_owned(),
    }
}

/// Tags whose last change by `me` WeCom refused (a dead `mark_tag`), with the reason in Chinese.
/// The newest change of each tag decides: a later one that went through clears the refusal.
async fn refused_tags(
    db: &Db,
    corp: &CorpId,
    me: &UserId,
    ext: &ExternalUserId,
) -> Result<HashMap<String, String>, StoreError> {
    let filter = OutboxFilter {
        corp_id: Some(corp.to_string()),
        kind: Some("mark_tag".to_owned()),
        order_key: Some(outbox::customer_key(ext.as_str())),
        limit: 50,
        ..OutboxFilter::default()
    };
    let mut decided = BTreeSet::new();
    let mut refused = HashMap::new();
    for item in outbox::list(db, &filter).await? {
        let Ok(Intent::MarkTag {
            user_id,
            add,
            remove,
            ..
        }) = serde_json::from_str::<Intent>(&item.payload)
        else {
            continue;
        };
        if user_id != *me {
            continue;
        }
        for tag in add.into_iter().chain(remove) {
            if decided.insert(tag.clone()) && item.state == "dead" {
                refused.insert(tag, refusal(item.last_error.as_deref().unwrap_or("")));
            }
        }
    }
    Ok(refused)
}

/// WeCom's refusal of a `mark_tag`, as a salesperson can act on it (the errcode in the stored
/// reason decides; §4.6 of the protocol notes).
pub(super) fn refusal(last_error: &str) -> String {
    let code = last_error.split("errcode ").nth(1).and_then(|rest| {
        let digits: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '-')
            .collect();
        digits.parse::<i64>().ok()
    });
    match code {
        Some(40068) => "企业微信中已没有这个标签，请刷新后重试".to_owned(),
        Some(84061) => "企业微信显示你已不再是该客户的好友".to_owned(),
        Some(40096) => "企业微信不认识这个客户".to_owned(),
        Some(60011 | 48002 | 84074) => "应用没有为你打标签的权限，请联系管理员".to_owned(),
        Some(40003 | 60111) => "企业微信中找不到你的账号，请联系管理员".to_owned(),
        Some(code) => format!("企业微信拒绝了修改（错误码 {code}）"),
        None => "企业微信没有接受这次修改".to_owned(),
    }
}

/// Group chat `chat` as staff member `me` sees it: its customers we know, with their tags and who
/// follows them.
pub(super) async fn chat(
    db: &Db,
    corp: &CorpId,
    me: &UserId,
    chat: &group_chats::GroupChat,
) -> Result<String, StoreError> {
    let mut names = Names {
        db,
        corp,
        known: HashMap::new(),
    };
    let members = group_chats::members(db, corp, &chat.chat_id).await?;
    let relations = customers::active_relations_in_chat(db, corp, &chat.chat_id).await?;
    let tag_names: HashMap<String, String> = tags::live_tags(db, corp.as_str())
        .await?
        .into_iter()
        .map(|t| (t.tag_id, t.name))
        .collect();
    let mut list = Vec::new();
    let mut others = 0;
    for m in members.iter().filter(|m| m.member_type == 2) {
        let of_member: Vec<_> = relations
            .iter()
            .filter(|r| r.external_user_id == m.member_id.as_str())
            .collect();
        if of_member.is_empty() {
            others += 1;
            continue;
        }
        let mut followers = Vec::new();
        let mut tags = BTreeSet::new();
        let mut mine = None;
        for r in &of_member {
            followers.push(names.of(r.user_id.as_str()).await?);
            tags.extend(r.tags().iter().filter_map(|t| tag_names.get(t).cloned()));
            if r.user_id == *me {
                mine = Some(base_of(&r.external_user_id));
            }
        }
        let name = [&m.group_nickname, &m.name]
            .into_iter()
            .find(|n| !n.trim().is_empty())
            .cloned()
            .unwrap_or_else(|| m.member_id.clone());
        list.push(ChatCustomerView {
            name,
            link: mine,
            followers,
            tags: tags.into_iter().collect(),
        });
    }
    let view = ChatView {
        name: if chat.name.is_empty() {
            "未命名客户群".to_owned()
        } else {
            chat.name.clone()
        },
        owner: names.of(chat.owner_user_id.as_str()).await?,
        staff: members.iter().filter(|m| m.member_type == 1).count(),
        customers: list,
        others,
    };
    Ok(view.render().unwrap_or_else(|e| {
        tracing::error!(error = %e, "sidebar: chat template failed");
        "<p>页面出错</p>".to_owned()
    }))
}

/// The corp's quick replies matching `query` (all when empty).
pub(super) async fn replies(db: &Db, corp: &CorpId, query: &str) -> Result<String, StoreError> {
    let query = query.trim();
    let folders = quick_replies::library(db, corp, Some(query).filter(|q| !q.is_empty())).await?;
    let view = Replies {
        folders,
        query: query.to_owned(),
    };
    Ok(view.render().unwrap_or_else(|e| {
        tracing::error!(error = %e, "sidebar: replies template failed");
        String::new()
    }))
}
