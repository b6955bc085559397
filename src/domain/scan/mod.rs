//! The content scanner: decides whether one message (with the previous message of the same
//! sender) breaks a compliance rule, and where. Pure and synchronous — no database, no I/O — so
//! the same engine serves archived chat, messages to the app, `scrm rules test` on a file, and the
//! retroactive scan job.
//!
//! ```text
//! text ─▶ normalize (NFKC, width, case, traditional → simplified, separators/emoji/zero-width
//!         removed, homophones and pinyin → canonical, Chinese/circled numerals → digits),
//!         keeping for every normalized char the char span of the original it came from
//!      ─▶ keywords (one automaton over every rule's keywords) + patterns (mobile, bank card with
//!         Luhn, WeChat / QQ / Alipay ids) + message types (red packet, transfer)
//!      ─▶ allow-list phrases cancel the hits they cover ─▶ hits mapped back to spans of `text`
//! ```
//!
//! A phrase split across the previous message and this one matches too (`prev` is scanned
//! joined to `text`; hits only in `prev` are not reported again).
//!
//! [`check`] explains one decision and [`eval`] measures a library on the labeled set: both are
//! shared by `scrm rules check|eval` and the console's 规则 page.

pub mod check;
pub mod detector;
pub mod eval;
pub mod library;
pub mod model;
pub mod normalize;
pub mod patterns;

pub use detector::Detector;
pub use library::{Explanation, LibraryError, Rule, RuleLibrary};
pub use model::Model;
pub use patterns::PatternKind;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sender {
    /// Our staff member (the salesperson).
    Staff,
    /// The customer.
    Customer,
}

impl Sender {
    /// The stored and wire name (`staff`, `customer`), as serde writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Staff => "staff",
            Self::Customer => "customer",
        }
    }
}

/// How bad a hit is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth a look.
    Low,
    /// Default.
    Medium,
    /// Act today.
    High,
    /// Act now.
    Critical,
}

impl Severity {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

/// One message to scan.
#[derive(Debug, Clone, Copy)]
pub struct ScanInput<'a> {
    /// The message text (for non-text messages: their searchable text, may be empty).
    pub text: &'a str,
    /// The previous message of the same sender in the same conversation, if recent.
    pub prev: Option<&'a str>,
    /// The other party's message just before this one (the customer's request a staff member
    /// answers), when more recent than `prev`: read by the model only (a request and its reply
    /// are one exchange), never joined by the rules.
    pub context: Option<&'a str>,
    /// Who wrote it.
    pub sender: Sender,
    /// WeCom's `msgtype` (`text`, `redpacket`, `external_redpacket`, …); `None` for plain text.
    pub msg_type: Option<&'a str>,
}

/// One rule that fired.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Hit {
    /// The rule's id.
    pub rule_id: String,
    /// Its category (`private_payment`, `off_book_order`, `contact_leak`, `kickback`, `poaching`,
    /// or a library's own).
    pub category: String,
    /// Its severity.
    pub severity: Severity,
    /// Where in `text`: `[start, end)` in Unicode scalar values (chars), sorted, not overlapping.
    pub spans: Vec<(usize, usize)>,
    /// What matched, as the rule wrote it (a keyword, or a pattern's name such as `mobile`).
    pub matched: String,
    /// Whether the match needed the previous message.
    pub across_messages: bool,
}

/// What [`RuleLibrary::scan`] found, most severe first.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ScanResult {
    /// Every rule that fired (at most one hit per rule).
    pub hits: Vec<Hit>,
}

impl ScanResult {
    /// The hit an alert is raised for: the most severe (first) one.
    pub fn alert(&self) -> Option<&Hit> {
        self.hits.first()
    }
}

#[cfg(test)]
mod tests;
