//! 规则: each corp's content-rule library, versioned, and who is told of each category's alerts.
//!
//! A save compiles the TOML first (nothing invalid is stored), measures it on the bundled labeled
//! set ([`crate::domain::scan::eval`]) and, when recall drops or the false-positive rate rises
//! against the library in force, stores nothing until the editor confirms. Every save is a new
//! version; a revert saves an old version's source again. The newest version is the corp's
//! library; a corp without one scans with the instance's. [`RuleBook`] keeps the compiled
//! libraries for the scanners (see `cache.rs` for how a save reaches every instance).

mod cache;
mod store;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use wecom_sdk::{CorpId, UserId};

use crate::auth;
use crate::domain::scan::eval::{self, EvalReport};
use crate::domain::scan::{LibraryError, RuleLibrary};
use crate::platform::db::{Db, StoreError};

pub use cache::{RECHECK, RuleBook};
pub use store::{
    CategoryRecipients, LibraryVersion, VersionSummary, category_recipients_in, current,
    newest_version, recipients, version, versions,
};

/// A library's TOML may be this large (the bundled default is under 10 KB).
pub const MAX_SOURCE_BYTES: usize = 256 * 1024;
/// A save's note may be this long (chars).
pub const MAX_NOTE_CHARS: usize = 200;
/// At most this many recipients per category.
pub const MAX_RECIPIENTS: usize = 50;
/// A category name may be this long (bytes; ASCII letters, digits, `_` and `-`).
pub const MAX_CATEGORY_LEN: usize = 64;

/// The quality gate's figures of a library on the bundled labeled set, kept with each version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    /// Share of the alert cases it flags (`None`: the set has none).
    pub recall: Option<f64>,
    /// Share of the clean cases it flags.
    pub fpr: Option<f64>,
    /// Alert cases of the set.
    pub alert_cases: usize,
    /// Clean cases of the set.
    pub clean_cases: usize,
    /// Whether every target of `scrm rules eval` was met.
    pub passed: bool,
}

impl Quality {
    /// The figures of a report.
    pub fn of(report: &EvalReport) -> Self {
        let overall = &report.engine.overall;
        Self {
            recall: overall.recall,
            fpr: overall.fpr,
            alert_cases: overall.alert_cases,
            clean_cases: overall.clean_cases,
            passed: report.passed,
        }
    }

    /// Measures `library` on the bundled labeled set (the same run as `scrm rules eval`).
    pub fn measure(library: &RuleLibrary) -> Self {
        Self::of(&eval::evaluate_bundled(library))
    }

    /// Whether `self` does worse than `before`: it misses alerts `before` found (lower recall) or
    /// flags more clean messages (higher false-positive rate).
    pub fn worse_than(&self, before: &Quality) -> bool {
        let lower = |new: Option<f64>, old: Option<f64>| match (new, old) {
            (Some(new), Some(old)) => new < old,
            _ => false,
        };
        lower(self.recall, before.recall) || lower(before.fpr, self.fpr)
    }
}

/// The library in force and the proposed one, side by side, for the editor to confirm.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Comparison {
    /// The corp's library now (its version; `None`: the instance's).
    pub current_version: Option<i64>,
    /// Its figures.
    pub current: Quality,
    /// The figures of the text being saved.
    pub proposed: Quality,
}

/// A library to save.
#[derive(Debug, Clone, Copy)]
pub struct Draft<'a> {
    /// The TOML.
    pub source: &'a str,
    /// What it changes, for the history.
    pub note: &'a str,
    /// The version the editor started from (`None`: the instance's library); a save over a newer
    /// one is refused, so that nobody overwrites a colleague's change unseen.
    pub base_version: Option<i64>,
    /// The editor saw the figures get worse and saves anyway.
    pub confirmed: bool,
}

/// Why a library was not saved.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// The TOML does not compile.
    #[error("invalid rule library: {0}")]
    Invalid(LibraryError),
    /// The TOML is larger than [`MAX_SOURCE_BYTES`].
    #[error("rule library of {0} bytes is too large")]
    TooLarge(usize),
    /// The note is longer than [`MAX_NOTE_CHARS`].
    #[error("note too long")]
    NoteTooLong,
    /// Someone saved a newer version since the editor loaded theirs.
    #[error("a newer version exists ({newest:?})")]
    Stale {
        /// The newest version now.
        newest: Option<i64>,
    },
    /// The figures get worse: nothing saved until the editor confirms.
    #[error("the quality gate needs a confirmation")]
    NeedsConfirmation(Comparison),
    /// No such version (revert).
    #[error("no such version")]
    NotFound,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SaveError {
    /// What the editor reads (Chinese), with the parser's reason for an invalid library.
    pub fn message(&self) -> String {
        match self {
            Self::Invalid(e) => format!(
                "规则库无效，未保存：规则 {} 的字段 {}：{}",
                e.rule, e.field, e.reason
            ),
            Self::TooLarge(bytes) => format!(
                "规则库过大（{} KB，上限 {} KB），未保存",
                bytes / 1024,
                MAX_SOURCE_BYTES / 1024
            ),
            Self::NoteTooLong => format!("备注最多 {MAX_NOTE_CHARS} 字"),
            Self::Stale { newest } => format!(
                "规则库已被他人修改（现在是第 {} 版），未保存：请刷新页面，在最新版本上修改",
                newest.unwrap_or(0)
            ),
            Self::NeedsConfirmation(_) => {
                "新规则库在标注集上的效果变差了，请确认后再保存".to_owned()
            }
            Self::NotFound => "没有这个版本".to_owned(),
            Self::Store(_) => "数据库暂时不可用，请稍后重试".to_owned(),
        }
    }
}

/// What a save stored.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Saved {
    /// The new version.
    pub version: i64,
    /// Its figures.
    pub quality: Quality,
}

/// Compiles `source` off the async threads (a large library with pinyin variants takes a while).
async fn compile(source: &str) -> Result<Arc<RuleLibrary>, SaveError> {
    let text = source.to_owned();
    let compiled = tokio::task::spawn_blocking(move || RuleLibrary::from_toml(&text))
        .await
        .map_err(|e| {
            SaveError::Invalid(LibraryError {
                rule: "library".to_owned(),
                field: "toml".to_owned(),
                reason: format!("编译中断：{e}"),
            })
        })?;
    compiled.map(Arc::new).map_err(SaveError::Invalid)
}

/// [`Quality::measure`] off the async threads.
async fn measure(library: &Arc<RuleLibrary>) -> Quality {
    let library = Arc::clone(library);
    tokio::task::spawn_blocking(move || Quality::measure(&library))
        .await
        .unwrap_or_default()
}

/// The figures of the corp's library in force now (and its version).
pub async fn quality_now(
    book: &RuleBook,
    corp: &CorpId,
) -> Result<(Option<i64>, Quality), StoreError> {
    let (version, library) = book.resolve_now(corp.as_str()).await?;
    Ok((version, measure(&library).await))
}

impl RuleBook {
    /// Saves `draft` as the corp's next version (see [`SaveError`] for what stops it), with an
    /// audit entry `rules.save`, and puts it in force on this instance at once.
    pub async fn save(
        &self,
        corp: &CorpId,
        draft: &Draft<'_>,
        author: &str,
        now_ms: i64,
    ) -> Result<Saved, SaveError> {
        if draft.source.len() > MAX_SOURCE_BYTES {
            return Err(SaveError::TooLarge(draft.source.len()));
        }
        let note = draft.note.trim();
        if note.chars().count() > MAX_NOTE_CHARS {
            return Err(SaveError::NoteTooLong);
        }
        let library = compile(draft.source).await?;
        let proposed = measure(&library).await;
        let (current_version, current_library) = self.resolve_now(corp.as_str()).await?;
        if current_version != draft.base_version {
            return Err(SaveError::Stale {
                newest: current_version,
            });
        }
        let current = measure(&current_library).await;
        let worse = proposed.worse_than(&current);
        if worse && !draft.confirmed {
            return Err(SaveError::NeedsConfirmation(Comparison {
                current_version,
                current,
                proposed,
            }));
        }
        let detail = serde_json::json!({
            "note": note,
            "previous": current_version,
            "recall": proposed.recall,
            "fpr": proposed.fpr,
            "previous_recall": current.recall,
            "previous_fpr": current.fpr,
            "confirmed_worse": worse,
        });
        let new = store::NewVersion {
            corp_id: corp.as_str(),
            source: draft.source,
            author,
            note,
            reverted_from: None,
            quality: &proposed,
            created_at_ms: now_ms,
        };
        let version = self
            .store_version(current_version, &new, "rules.save", detail)
            .await?;
        self.install(corp.as_str(), Some(version), library);
        Ok(Saved {
            version,
            quality: proposed,
        })
    }

    /// Saves version `old`'s source again as the corp's next version (no confirmation: the
    /// history shows each version's figures), with an audit entry `rules.revert`.
    pub async fn revert(
        &self,
        corp: &CorpId,
        old: i64,
        author: &str,
        now_ms: i64,
    ) -> Result<Saved, SaveError> {
        let Some(stored) = store::version(self.db(), corp.as_str(), old).await? else {
            return Err(SaveError::NotFound);
        };
        let library = compile(&stored.source).await?;
        let quality = measure(&library).await;
        let newest = store::newest_version(self.db(), corp.as_str()).await?;
        let note = format!("恢复第 {old} 版");
        let detail = serde_json::json!({
            "reverted_from": old,
            "previous": newest,
            "recall": quality.recall,
            "fpr": quality.fpr,
        });
        let new = store::NewVersion {
            corp_id: corp.as_str(),
            source: &stored.source,
            author,
            note: &note,
            reverted_from: Some(old),
            quality: &quality,
            created_at_ms: now_ms,
        };
        let version = self
            .store_version(newest, &new, "rules.revert", detail)
            .await?;
        self.install(corp.as_str(), Some(version), library);
        Ok(Saved { version, quality })
    }

    /// Writes the version and its audit entry in one transaction.
    async fn store_version(
        &self,
        expected: Option<i64>,
        new: &store::NewVersion<'_>,
        action: &str,
        mut detail: serde_json::Value,
    ) -> Result<i64, SaveError> {
        let mut tx = self.db().begin().await?;
        let Some(version) = store::insert_version_in(&mut tx, expected, new).await? else {
            tx.rollback().await?;
            let newest = store::newest_version(self.db(), new.corp_id).await?;
            return Err(SaveError::Stale { newest });
        };
        if let Some(d) = detail.as_object_mut() {
            d.insert("version".to_owned(), version.into());
        }
        auth::audit(
            &mut tx,
            new.corp_id,
            new.author,
            action,
            &format!("rule_library:{version}"),
            &detail,
            new.created_at_ms,
        )
        .await?;
        tx.commit().await?;
        metrics::counter!("scrm_rule_library_saves_total").increment(1);
        Ok(version)
    }
}

/// Why recipients were not set.
#[derive(Debug, thiserror::Error)]
pub enum RecipientsError {
    /// A category name that no rule could carry.
    #[error("invalid category {0:?}")]
    InvalidCategory(String),
    /// Too many recipients for a category.
    #[error("too many recipients for {0}")]
    TooMany(String),
    /// Userids that are no staff member of the corp (or have left), each named.
    #[error("unknown staff: {unknown:?}, departed: {departed:?}")]
    UnknownStaff {
        /// Not known at all.
        unknown: Vec<String>,
        /// Left the company.
        departed: Vec<String>,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RecipientsError {
    /// What the editor reads (Chinese), naming the ids at fault.
    pub fn message(&self) -> String {
        match self {
            Self::InvalidCategory(c) => format!(
                "类别“{c}”无效：只能用英文字母、数字、下划线和连字符，最多 {MAX_CATEGORY_LEN} 个字符"
            ),
            Self::TooMany(c) => format!("类别 {c} 最多 {MAX_RECIPIENTS} 位接收人"),
            Self::UnknownStaff { unknown, departed } => {
                let mut parts = Vec::new();
                if !unknown.is_empty() {
                    parts.push(format!("不是本企业的成员：{}", unknown.join("、")));
                }
                if !departed.is_empty() {
                    parts.push(format!("已离职：{}", departed.join("、")));
                }
                format!("未保存接收人。{}", parts.join("；"))
            }
            Self::Store(_) => "数据库暂时不可用，请稍后重试".to_owned(),
        }
    }
}

/// Whether `category` is a name a rule can carry here.
pub fn is_category(category: &str) -> bool {
    !category.is_empty()
        && category.len() <= MAX_CATEGORY_LEN
        && category
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Userids typed as one line: split on commas (either width), 、, and white space; duplicates
/// dropped, order kept.
pub fn parse_user_list(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for u in text
        .split([',', '，', '、', ';', '；'])
        .flat_map(str::split_whitespace)
    {
        if !out.iter().any(|o| o == u) {
            out.push(u.to_owned());
        }
    }
    out
}

/// Sets the recipients of several categories at once: every userid must be a current staff
/// member of the corp (all of them checked, all the wrong ones named), then each changed
/// category is written with an audit entry `rules.recipients`, in one transaction. The
/// categories that changed.
pub async fn set_recipients(
    db: &Db,
    corp: &CorpId,
    lists: &[(String, Vec<String>)],
    actor: &str,
    now_ms: i64,
) -> Result<Vec<String>, RecipientsError> {
    let mut unknown: Vec<String> = Vec::new();
    let mut departed: Vec<String> = Vec::new();
    for (category, users) in lists {
        if !is_category(category) {
            return Err(RecipientsError::InvalidCategory(category.clone()));
        }
        if users.len() > MAX_RECIPIENTS {
            return Err(RecipientsError::TooMany(category.clone()));
        }
        for user in users {
            if unknown.contains(user) || departed.contains(user) {
                continue;
            }
            let member = match UserId::try_from(user.as_str()) {
                Ok(id) => crate::domain::staff::get(db, corp, &id).await?,
                Err(_) => None,
            };
            match member {
                None => unknown.push(user.clone()),
                Some(m) if m.departed_at_ms.is_some() || m.status == 5 => {
                    departed.push(user.clone());
                }
                Some(_) => {}
            }
        }
    }
    if !unknown.is_empty() || !departed.is_empty() {
        return Err(RecipientsError::UnknownStaff { unknown, departed });
    }
    let mut changed = Vec::new();
    let mut tx = db.begin().await?;
    for (category, users) in lists {
        if !store::set_recipients_in(&mut tx, corp.as_str(), category, users, actor, now_ms).await?
        {
            continue;
        }
        auth::audit(
            &mut tx,
            corp.as_str(),
            actor,
            "rules.recipients",
            &format!("rule_recipient:{category}"),
            &serde_json::json!({ "category": category, "user_ids": users }),
            now_ms,
        )
        .await?;
        changed.push(category.clone());
    }
    tx.commit().await?;
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(recall: f64, fpr: f64) -> Quality {
        Quality {
            recall: Some(recall),
            fpr: Some(fpr),
            alert_cases: 10,
            clean_cases: 10,
            passed: true,
        }
    }

    #[test]
    fn worse_is_lower_recall_or_more_false_positives() {
        assert!(q(0.9, 0.01).worse_than(&q(0.95, 0.01)));
        assert!(q(0.95, 0.02).worse_than(&q(0.95, 0.01)));
        assert!(!q(0.95, 0.01).worse_than(&q(0.95, 0.01)));
        assert!(!q(0.97, 0.005).worse_than(&q(0.95, 0.01)));
        assert!(
            !Quality::default().worse_than(&q(0.95, 0.01)),
            "unknown figures compare as not worse"
        );
    }

    #[test]
    fn user_lists_split_on_any_separator_once_each() {
        assert_eq!(
            parse_user_list(" zhangsan, lisi，wangwu、lisi  zhaoliu;"),
            vec!["zhangsan", "lisi", "wangwu", "zhaoliu"]
        );
        assert!(parse_user_list(" ,， ").is_empty());
    }

    #[test]
    fn categories_are_plain_names() {
        assert!(is_category("private_payment"));
        assert!(is_category("off-book2"));
        assert!(!is_category(""));
        assert!(!is_category("私下收款"));
        assert!(!is_category("a b"));
        assert!(!is_category(&"x".repeat(MAX_CATEGORY_LEN + 1)));
    }

    #[test]
    fn an_invalid_library_says_why_in_chinese() {
        let e = SaveError::Invalid(RuleLibrary::from_toml("[[rule]]\nid = 1\n").unwrap_err());
        let m = e.message();
        assert!(m.starts_with("规则库无效，未保存"), "{m}");
        assert!(m.contains("id"), "{m}");
    }
}
