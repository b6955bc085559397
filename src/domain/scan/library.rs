//! A compiled rule library: the TOML format, its checks, and the scan over one message.
//!
//! Compiling turns every keyword, allow phrase, negation word and pattern cue of every rule into
//! one Aho-Corasick automaton over normalized text, so a scan is one normalization pass, one
//! automaton pass and a little bookkeeping, however many rules there are.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

use super::normalize::{Normalized, Normalizer};
use super::patterns::{self, Cue, PatternKind};
use super::{Hit, ScanInput, ScanResult, Sender, Severity};

/// A regex longer than this (in chars) is refused.
pub const MAX_REGEX_LEN: usize = 500;
/// Compiled size bounds for one regex (bytes), so a rule cannot make scanning slow or huge.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Bound of the lazy DFA cache per regex (bytes).
pub const REGEX_DFA_SIZE_LIMIT: usize = 1 << 20;
/// Libraries with more automaton patterns than this search with an NFA instead of a DFA.
pub const MAX_DFA_PATTERNS: usize = 50_000;
/// A keyword or allow phrase longer than this (in chars) is refused.
pub const MAX_PHRASE_LEN: usize = 100;
/// How many normalized chars may stand between a negation word of one char (`不`, `勿`) and the
/// keyword it negates; longer negation words (`不接受`, `禁止`) reach [`NEGATION_WINDOW_LONG`].
pub const NEGATION_WINDOW_SHORT: usize = 2;
/// See [`NEGATION_WINDOW_SHORT`].
pub const NEGATION_WINDOW_LONG: usize = 6;

const DEFAULT_LIBRARY: &str = include_str!("../../../fixtures/rules/default.toml");

/// Negation words used when a library names none: a keyword right after one of them (in the same
/// clause) is a warning or a refusal, not the deed (`我们不接受私下转账`, `请勿私下交易`).
pub const DEFAULT_NEGATIONS: &[&str] = &[
    "不",
    "勿",
    "别",
    "禁止",
    "严禁",
    "杜绝",
    "拒绝",
    "不接受",
    "不支持",
    "不允许",
    "不可以",
    "不能",
    "不要",
    "不得",
    "不会",
    "不存在",
    "谨防",
    "警惕",
    "防范",
    "防止",
    "提防",
    "小心",
    "避免",
    "举报",
    "投诉",
    "一律",
    "没有",
    "从不",
    "绝不",
    "从来不",
    "不提供",
    "不收",
    "不走",
];

/// Why [`RuleLibrary::explain`] decided what it did (for `scrm rules check`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Explanation {
    /// The text the matcher saw (`prev` and `text` joined, normalized).
    pub normalized: String,
    /// What fired, as [`RuleLibrary::scan`] reports it.
    pub hits: Vec<Hit>,
    /// Matches an allow-list phrase cancelled: (rule id, what matched, the allow phrase).
    pub allowed: Vec<(String, String, String)>,
}

/// Why a rule library cannot be used, naming the rule and field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{rule}.{field}: {reason}")]
pub struct LibraryError {
    /// The rule's id (or its index when it has none).
    pub rule: String,
    /// The field.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl LibraryError {
    fn new(rule: &str, field: &str, reason: impl Into<String>) -> Self {
        Self {
            rule: rule.to_owned(),
            field: field.to_owned(),
            reason: reason.into(),
        }
    }
}

/// One rule as the library wrote it (scope and recipients are for the alert layer).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rule {
    /// Stable id (`private_transfer`).
    pub id: String,
    /// Name shown to compliance staff (Chinese).
    pub name: String,
    /// `private_payment`, `off_book_order`, `contact_leak`, `kickback`, `poaching`, or any other.
    pub category: String,
    /// How bad a hit is.
    pub severity: Severity,
    /// Whose messages it applies to.
    pub senders: Vec<Sender>,
    /// Keywords (any one matches).
    pub keywords: Vec<String>,
    /// Allow phrases: a keyword or pattern match inside one of them does not count.
    pub allow: Vec<String>,
    /// Built-in patterns.
    pub patterns: Vec<PatternKind>,
    /// Message types that fire whatever the text (`redpacket`, `external_redpacket`).
    pub msg_types: Vec<String>,
    /// Regexes over the normalized text.
    pub regex: Vec<String>,
    /// Whether a negation word right before a keyword cancels it.
    pub negatable: bool,
    /// Scope: departments (empty: all).
    pub departments: Vec<String>,
    /// Scope: staff user ids (empty: all).
    pub staff: Vec<String>,
    /// Scope: customer tags (empty: all).
    pub customer_tags: Vec<String>,
    /// Who receives the alert (user ids; empty: the alert layer's default).
    pub recipients: Vec<String>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LibraryFile {
    #[serde(default)]
    rule: Vec<RuleFile>,
    /// Allow phrases for every rule.
    #[serde(default)]
    allow: Vec<String>,
    /// Negation words; absent: [`DEFAULT_NEGATIONS`].
    negations: Option<Vec<String>>,
    /// Words that mark a whole message as a warning or refusal about the topic.
    #[serde(default)]
    innocent_context: Vec<String>,
    /// Whether keywords also match written in pinyin or half pinyin (`xingongsi`, `跟wo走`).
    #[serde(default)]
    pinyin: bool,
}

fn default_true() -> bool {
    true
}

fn default_senders() -> Vec<Sender> {
    vec![Sender::Staff, Sender::Customer]
}

fn default_severity() -> Severity {
    Severity::Medium
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    id: String,
    name: String,
    category: String,
    #[serde(default = "default_severity")]
    severity: Severity,
    #[serde(default = "default_senders")]
    senders: Vec<Sender>,
    #[serde(default)]
    keywords: Vec<String>,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    patterns: Vec<String>,
    #[serde(default)]
    msg_types: Vec<String>,
    #[serde(default)]
    regex: Vec<String>,
    #[serde(default = "default_true")]
    negatable: bool,
    #[serde(default)]
    departments: Vec<String>,
    #[serde(default)]
    staff: Vec<String>,
    #[serde(default)]
    customer_tags: Vec<String>,
    #[serde(default)]
    recipients: Vec<String>,
}

/// What one automaton pattern stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Keyword { rule: u32, keyword: u32 },
    Allow { rule: Option<u32>, phrase: u32 },
    Negation,
    Context(u32),
    Cue(Cue),
}

/// Compiled rules. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct RuleLibrary {
    inner: Arc<Compiled>,
}

#[derive(Debug, Default)]
struct Compiled {
    /// The TOML it was compiled from.
    source: String,
    rules: Vec<Rule>,
    sender_mask: Vec<u8>,
    automaton: Option<AhoCorasick>,
    /// Per automaton pattern: its entries, `entries[ranges[p].0..ranges[p].1]`.
    ranges: Vec<(u32, u32)>,
    /// Per automaton pattern: whether it starts / ends with a Latin letter.
    latin_ends: Vec<(bool, bool)>,
    entries: Vec<Entry>,
    /// (rule, phrase as written) for every allow phrase; `None`: library-wide.
    allow_phrases: Vec<(Option<u32>, String)>,
    /// The innocent-context words as written.
    contexts: Vec<String>,
    regex_set: Option<RegexSet>,
    regexes: Vec<(u32, u32, Regex)>,
    /// Per pattern kind, the rules using it.
    pattern_rules: Vec<(PatternKind, Vec<u32>)>,
    msg_type_rules: Vec<(u32, u32)>,
}

/// Where in the normalized text something matched, before rules are applied.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    rule: u32,
    start: usize,
    end: usize,
    what: What,
    /// Original char span, when known better than from the normalized chars (emails).
    original: Option<(usize, usize)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum What {
    Keyword(u32),
    Pattern(PatternKind),
    Regex(u32),
    MsgType(u32),
}

#[derive(Debug, Default)]
struct Scratch {
    norm: Normalized,
    candidates: Vec<Candidate>,
    allows: Vec<(Option<u32>, u32, usize, usize)>,
    negations: Vec<(usize, usize)>,
    cues: Vec<(Cue, usize, usize)>,
    /// Innocent-context words that end inside `text`: (word, start, end).
    contexts: Vec<(u32, usize, usize)>,
    kept: Vec<Kept>,
}

/// A candidate that survived allow phrases, context and negation.
#[derive(Debug, Clone, Copy)]
struct Kept {
    rule: u32,
    span: (usize, usize),
    what: What,
    across: bool,
    start: usize,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

// The bundled library is checked by a test; an empty library is the safe fallback.
static DEFAULT: LazyLock<RuleLibrary> =
    LazyLock::new(|| RuleLibrary::from_toml(DEFAULT_LIBRARY).unwrap_or_default());

fn sender_bit(s: Sender) -> u8 {
    match s {
        Sender::Staff => 1,
        Sender::Customer => 2,
    }
}

fn to_u32(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

fn as_index(i: u32) -> usize {
    usize::try_from(i).unwrap_or(usize::MAX)
}

/// Turns a TOML error into one naming the rule (by index, counted from the `[[rule]]` headers
/// before the error) and the field (from the message).
fn toml_error(text: &str, err: &toml::de::Error) -> LibraryError {
    let message = err.message().to_owned();
    let rule = match err.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or("");
            match before.matches("[[rule]]").count() {
                0 => "library".to_owned(),
                n => format!("rule #{n}"),
            }
        }
        None => "library".to_owned(),
    };
    let key_on_line = err.span().and_then(|span| {
        let line_start = text.get(..span.start)?.rfind('\n').map_or(0, |i| i + 1);
        let line = text.get(line_start..)?.lines().next()?;
        let (key, _) = line.split_once('=')?;
        let key = key.trim();
        (!key.is_empty() && !key.starts_with('[')).then(|| key.to_owned())
    });
    let field = key_on_line
        .or_else(|| message.split('`').nth(1).map(str::to_owned))
        .unwrap_or_else(|| "toml".to_owned());
    LibraryError::new(&rule, &field, format!("规则库格式错误：{message}"))
}

struct Builder<'a> {
    normalizer: &'a Normalizer,
    patterns: Vec<String>,
    index: HashMap<String, usize>,
    per_pattern: Vec<Vec<Entry>>,
}

impl Builder<'_> {
    fn add(&mut self, normalized: String, entry: Entry) {
        let p = match self.index.get(&normalized) {
            Some(&p) => p,
            None => {
                let p = self.patterns.len();
                self.index.insert(normalized.clone(), p);
                self.patterns.push(normalized);
                self.per_pattern.push(Vec::new());
                p
            }
        };
        if let Some(list) = self.per_pattern.get_mut(p)
            && !list.contains(&entry)
        {
            list.push(entry);
        }
    }

    fn phrase(&self, rule: &str, field: &str, phrase: &str) -> Result<String, LibraryError> {
        if phrase.chars().count() > MAX_PHRASE_LEN {
            return Err(LibraryError::new(
                rule,
                field,
                format!("“{phrase}”超过 {MAX_PHRASE_LEN} 个字符"),
            ));
        }
        let mut n = Normalized::default();
        self.normalizer.normalize_into(&mut n, &[phrase]);
        if n.text.is_empty() {
            return Err(LibraryError::new(
                rule,
                field,
                format!("“{phrase}”归一化后为空（只有标点或空白）"),
            ));
        }
        Ok(n.text)
    }
}

impl RuleLibrary {
    /// Parses and compiles a library in the TOML format of `fixtures/rules/default.toml`.
    pub fn from_toml(text: &str) -> Result<Self, LibraryError> {
        let file: LibraryFile = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        let normalizer = Normalizer::global();
        let mut b = Builder {
            normalizer,
            patterns: Vec::new(),
            index: HashMap::new(),
            per_pattern: Vec::new(),
        };
        let mut c = Compiled::default();
        let mut ids: HashMap<String, usize> = HashMap::new();
        let mut regex_sources: Vec<String> = Vec::new();
        let mut cues_needed: Vec<Cue> = Vec::new();

        for (phrase_idx, phrase) in file.allow.iter().enumerate() {
            let n = b.phrase("library", "allow", phrase)?;
            c.allow_phrases.push((None, phrase.clone()));
            b.add(
                n,
                Entry::Allow {
                    rule: None,
                    phrase: to_u32(phrase_idx),
                },
            );
        }
        let negations: Vec<String> = match &file.negations {
            Some(list) => list.clone(),
            None => DEFAULT_NEGATIONS.iter().map(|s| (*s).to_owned()).collect(),
        };
        for word in &negations {
            let n = b.phrase("library", "negations", word)?;
            b.add(n, Entry::Negation);
        }
        for (k, word) in file.innocent_context.iter().enumerate() {
            let n = b.phrase("library", "innocent_context", word)?;
            b.add(n, Entry::Context(to_u32(k)));
        }
        c.contexts = file.innocent_context;

        for (i, r) in file.rule.into_iter().enumerate() {
            let rule_idx = to_u32(i);
            let id = r.id.trim().to_owned();
            if id.is_empty() {
                return Err(LibraryError::new(
                    &format!("rule #{}", i + 1),
                    "id",
                    "规则 id 不能为空",
                ));
            }
            if ids.insert(id.clone(), i).is_some() {
                return Err(LibraryError::new(&id, "id", "规则 id 重复"));
            }
            if r.category.trim().is_empty() {
                return Err(LibraryError::new(&id, "category", "类别不能为空"));
            }
            if r.senders.is_empty() {
                return Err(LibraryError::new(
                    &id,
                    "senders",
                    "至少要有一个发送方（staff 或 customer）",
                ));
            }
            if r.keywords.is_empty()
                && r.patterns.is_empty()
                && r.msg_types.is_empty()
                && r.regex.is_empty()
            {
                return Err(LibraryError::new(
                    &id,
                    "keywords",
                    "规则没有关键词、模式、消息类型或正则",
                ));
            }
            for (k, kw) in r.keywords.iter().enumerate() {
                let n = b.phrase(&id, "keywords", kw)?;
                let entry = Entry::Keyword {
                    rule: rule_idx,
                    keyword: to_u32(k),
                };
                if file.pinyin {
                    for variant in normalizer.pinyin_variants(&n) {
                        let v = b.phrase(&id, "keywords", &variant)?;
                        b.add(v, entry);
                    }
                }
                b.add(n, entry);
            }
            for phrase in &r.allow {
                let n = b.phrase(&id, "allow", phrase)?;
                let phrase_idx = to_u32(c.allow_phrases.len());
                c.allow_phrases.push((Some(rule_idx), phrase.clone()));
                b.add(
                    n,
                    Entry::Allow {
                        rule: Some(rule_idx),
                        phrase: phrase_idx,
                    },
                );
            }
            let mut kinds = Vec::new();
            for name in &r.patterns {
                let Some(kind) = PatternKind::from_name(name) else {
                    return Err(LibraryError::new(
                        &id,
                        "patterns",
                        format!(
                            "未知模式“{name}”（可用：mobile, bank_card, wechat_id, qq, alipay）"
                        ),
                    ));
                };
                if !kinds.contains(&kind) {
                    kinds.push(kind);
                }
                match c.pattern_rules.iter_mut().find(|(k, _)| *k == kind) {
                    Some((_, list)) => list.push(rule_idx),
                    None => c.pattern_rules.push((kind, vec![rule_idx])),
                }
                if let Some(cue) = kind.cue()
                    && !cues_needed.contains(&cue)
                {
                    cues_needed.push(cue);
                }
            }
            for (k, t) in r.msg_types.iter().enumerate() {
                if t.trim().is_empty() {
                    return Err(LibraryError::new(&id, "msg_types", "消息类型不能为空"));
                }
                c.msg_type_rules.push((rule_idx, to_u32(k)));
            }
            for (k, src) in r.regex.iter().enumerate() {
                let re = compile_regex(&id, src)?;
                c.regexes.push((rule_idx, to_u32(k), re));
                regex_sources.push(src.clone());
            }
            let mut mask = 0u8;
            for s in &r.senders {
                mask |= sender_bit(*s);
            }
            c.sender_mask.push(mask);
            c.rules.push(Rule {
                id,
                name: r.name,
                category: r.category.trim().to_owned(),
                severity: r.severity,
                senders: r.senders,
                keywords: r.keywords,
                allow: r.allow,
                patterns: kinds,
                msg_types: r.msg_types,
                regex: r.regex,
                negatable: r.negatable,
                departments: r.departments,
                staff: r.staff,
                customer_tags: r.customer_tags,
                recipients: r.recipients,
            });
        }
        for cue in cues_needed {
            for word in cue.words() {
                let n = b.phrase("library", "patterns", word)?;
                b.add(n, Entry::Cue(cue));
            }
        }
        if !regex_sources.is_empty() {
            let set = RegexSetBuilder::new(&regex_sources)
                .size_limit(REGEX_SIZE_LIMIT.saturating_mul(4))
                .dfa_size_limit(REGEX_DFA_SIZE_LIMIT.saturating_mul(4))
                .build()
                .map_err(|e| {
                    LibraryError::new("library", "regex", format!("正则表达式合计过大：{e}"))
                })?;
            c.regex_set = Some(set);
        }
        if !b.patterns.is_empty() {
            // A DFA is the fastest search; its memory grows with the patterns, so large libraries
            // fall back to the contiguous NFA.
            let kind = if b.patterns.len() <= MAX_DFA_PATTERNS {
                AhoCorasickKind::DFA
            } else {
                AhoCorasickKind::ContiguousNFA
            };
            let ac = AhoCorasick::builder()
                .match_kind(MatchKind::Standard)
                .kind(Some(kind))
                .build(&b.patterns)
                .map_err(|e| {
                    LibraryError::new("library", "keywords", format!("关键词自动机无法构建：{e}"))
                })?;
            c.automaton = Some(ac);
        }
        c.latin_ends = b
            .patterns
            .iter()
            .map(|p| {
                let first = p.chars().next().is_some_and(|ch| ch.is_ascii_alphabetic());
                let last = p.chars().last().is_some_and(|ch| ch.is_ascii_alphabetic());
                (first, last)
            })
            .collect();
        for list in b.per_pattern {
            let start = to_u32(c.entries.len());
            c.entries.extend(list);
            c.ranges.push((start, to_u32(c.entries.len())));
        }
        c.source = text.to_owned();
        Ok(Self { inner: Arc::new(c) })
    }

    /// The TOML text the library was compiled from (empty for the empty default).
    pub fn source(&self) -> &str {
        &self.inner.source
    }

    /// The TOML text of the bundled default library.
    pub fn default_source() -> &'static str {
        DEFAULT_LIBRARY
    }

    /// The bundled default library (compiled once per process).
    pub fn default_library() -> Self {
        DEFAULT.clone()
    }

    /// The rules, in library order.
    pub fn rules(&self) -> &[Rule] {
        &self.inner.rules
    }

    /// One rule by id.
    pub fn rule(&self, id: &str) -> Option<&Rule> {
        self.inner.rules.iter().find(|r| r.id == id)
    }

    /// Scans one message.
    pub fn scan(&self, input: &ScanInput<'_>) -> ScanResult {
        self.scan_then(input, |_, _| ()).0
    }

    /// Scans one message, then runs `then` on the result and the normalized `[prev, text]` the
    /// scan made (the second stage reads it instead of normalizing again).
    pub fn scan_then<T>(
        &self,
        input: &ScanInput<'_>,
        then: impl FnOnce(&ScanResult, &super::normalize::Normalized) -> T,
    ) -> (ScanResult, T) {
        let mut allowed = None;
        self.with_scratch(|s| {
            let result = self.run(s, input, &mut allowed);
            let after = then(&result, &s.norm);
            (result, after)
        })
    }

    /// Scans one message and says why.
    pub fn explain(&self, input: &ScanInput<'_>) -> Explanation {
        let mut allowed = Some(Vec::new());
        let (result, normalized) = self.with_scratch(|s| {
            let r = self.run(s, input, &mut allowed);
            (r, s.norm.text.clone())
        });
        Explanation {
            normalized,
            hits: result.hits,
            allowed: allowed.unwrap_or_default(),
        }
    }

    fn with_scratch<T>(&self, f: impl FnOnce(&mut Scratch) -> T) -> T {
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut s) => f(&mut s),
            Err(_) => f(&mut Scratch::default()),
        })
    }

    fn run(
        &self,
        s: &mut Scratch,
        input: &ScanInput<'_>,
        allowed: &mut Option<Vec<(String, String, String)>>,
    ) -> ScanResult {
        let c = &*self.inner;
        let normalizer = Normalizer::global();
        let text_start = match input.prev {
            Some(prev) if !prev.is_empty() => {
                normalizer.normalize_into(&mut s.norm, &[prev, input.text]);
                prev.chars().count()
            }
            _ => {
                normalizer.normalize_into(&mut s.norm, &[input.text]);
                0
            }
        };
        let bit = sender_bit(input.sender);
        let applies = |rule: u32| {
            c.sender_mask
                .get(as_index(rule))
                .is_some_and(|m| m & bit != 0)
        };
        s.candidates.clear();
        s.allows.clear();
        s.negations.clear();
        s.cues.clear();
        s.contexts.clear();

        if let Some(ac) = &c.automaton {
            for m in ac.find_overlapping_iter(&s.norm.text) {
                let Some(&(from, to)) = c.ranges.get(m.pattern().as_usize()) else {
                    continue;
                };
                let start = s.norm.char_at_byte(m.start());
                let end = s.norm.char_at_byte(m.end());
                let (latin_start, latin_end) = c
                    .latin_ends
                    .get(m.pattern().as_usize())
                    .copied()
                    .unwrap_or_default();
                if (latin_start && s.norm.glued_latin_at(start))
                    || (latin_end && s.norm.glued_latin_at(end))
                {
                    continue;
                }
                for e in c.entries.get(as_index(from)..as_index(to)).unwrap_or(&[]) {
                    match *e {
                        Entry::Keyword { rule, keyword } if applies(rule) => {
                            s.candidates.push(Candidate {
                                rule,
                                start,
                                end,
                                what: What::Keyword(keyword),
                                original: None,
                            })
                        }
                        Entry::Keyword { .. } => {}
                        Entry::Allow { rule, phrase } => s.allows.push((rule, phrase, start, end)),
                        Entry::Negation => s.negations.push((start, end)),
                        Entry::Context(k) => {
                            let ends_in_text = end
                                .checked_sub(1)
                                .and_then(|i| s.norm.origins.get(i))
                                .is_some_and(|o| o.end > text_start);
                            if ends_in_text {
                                s.contexts.push((k, start, end));
                            }
                        }
                        Entry::Cue(cue) => s.cues.push((cue, start, end)),
                    }
                }
            }
        }

        if !c.pattern_rules.is_empty() {
            let found = patterns::find(&s.norm, &s.cues, input, text_start);
            for f in found {
                if let Some((_, rules)) = c.pattern_rules.iter().find(|(k, _)| *k == f.kind) {
                    for &rule in rules.iter().filter(|&&r| applies(r)) {
                        s.candidates.push(Candidate {
                            rule,
                            start: f.start,
                            end: f.end,
                            what: What::Pattern(f.kind),
                            original: f.original,
                        });
                    }
                }
            }
        }

        if let Some(set) = &c.regex_set {
            let matched = set.matches(&s.norm.text);
            if matched.matched_any() {
                for (k, (rule, src, re)) in c.regexes.iter().enumerate() {
                    if !matched.matched(k) || !applies(*rule) {
                        continue;
                    }
                    for m in re.find_iter(&s.norm.text) {
                        let start = s.norm.char_at_byte(m.start());
                        let end = s.norm.char_at_byte(m.end());
                        if start < end {
                            s.candidates.push(Candidate {
                                rule: *rule,
                                start,
                                end,
                                what: What::Regex(*src),
                                original: None,
                            });
                        }
                    }
                }
            }
        }

        if let Some(t) = input.msg_type {
            for &(rule, k) in &c.msg_type_rules {
                let wanted = c
                    .rules
                    .get(as_index(rule))
                    .and_then(|r| r.msg_types.get(as_index(k)));
                if applies(rule) && wanted.is_some_and(|w| w == t) {
                    s.candidates.push(Candidate {
                        rule,
                        start: 0,
                        end: 0,
                        what: What::MsgType(k),
                        original: None,
                    });
                }
            }
        }

        self.collect(s, text_start, allowed)
    }

    /// Applies allow phrases, negations and the window, and builds one hit per rule.
    fn collect(
        &self,
        s: &mut Scratch,
        text_start: usize,
        allowed: &mut Option<Vec<(String, String, String)>>,
    ) -> ScanResult {
        let c = &*self.inner;
        let norm = &s.norm;
        let kept = &mut s.kept;
        kept.clear();
        for cand in &s.candidates {
            let rule = cand.rule;
            let Some(r) = c.rules.get(as_index(rule)) else {
                continue;
            };
            let (span, across) = if let What::MsgType(_) = cand.what {
                ((0, 0), false)
            } else {
                let Some((os, oe)) = cand
                    .original
                    .or_else(|| norm.original_span(cand.start, cand.end))
                else {
                    continue;
                };
                if oe <= text_start {
                    continue; // only in `prev`: reported with that message
                }
                (
                    (os.max(text_start) - text_start, oe - text_start),
                    os < text_start,
                )
            };
            if !matches!(cand.what, What::MsgType(_)) {
                let cover = s.allows.iter().find(|(ar, _, a_start, a_end)| {
                    (ar.is_none() || *ar == Some(rule))
                        && *a_start <= cand.start
                        && cand.end <= *a_end
                });
                if let Some(&(_, phrase, _, _)) = cover {
                    if let Some(list) = allowed.as_mut() {
                        let p = c
                            .allow_phrases
                            .get(as_index(phrase))
                            .map_or("", |(_, p)| p.as_str());
                        list.push((r.id.clone(), self.what_label(rule, cand.what), p.to_owned()));
                    }
                    continue;
                }
            }
            // An innocent-context word in the same clause (`飞单是违规行为`) makes the keyword a
            // topic, not a deed; in another clause (`私下转账给我，不用担心`) it does not.
            let same_clause = |&&(_, c_start, _): &&(u32, usize, usize)| {
                let (a, b) = (c_start.min(cand.start), c_start.max(cand.start));
                !norm.has_break_between(a, b)
            };
            if r.negatable
                && matches!(cand.what, What::Keyword(_))
                && let Some(&(k, _, _)) = s.contexts.iter().find(same_clause)
            {
                if let Some(list) = allowed.as_mut() {
                    let word = c.contexts.get(as_index(k)).map_or("", String::as_str);
                    list.push((
                        r.id.clone(),
                        self.what_label(rule, cand.what),
                        format!("语境：{word}"),
                    ));
                }
                continue;
            }
            if r.negatable && matches!(cand.what, What::Keyword(_)) {
                let negation = s.negations.iter().find(|&&(n_start, n_end)| {
                    let window = if n_end - n_start <= 1 {
                        NEGATION_WINDOW_SHORT
                    } else {
                        NEGATION_WINDOW_LONG
                    };
                    n_end <= cand.start
                        && cand.start - n_end <= window
                        && !norm.has_break_between(n_end.saturating_sub(1), cand.start)
                });
                if let Some(&(n_start, n_end)) = negation {
                    if let Some(list) = allowed.as_mut() {
                        let word: String = norm
                            .chars
                            .get(n_start..n_end)
                            .unwrap_or(&[])
                            .iter()
                            .collect();
                        list.push((
                            r.id.clone(),
                            self.what_label(rule, cand.what),
                            format!("否定词：{word}"),
                        ));
                    }
                    continue;
                }
            }
            kept.push(Kept {
                rule,
                span,
                what: cand.what,
                across,
                start: cand.start,
            });
        }
        if kept.is_empty() {
            return ScanResult::default();
        }
        kept.sort_by_key(|k| (k.rule, k.start));
        let mut hits: Vec<(usize, Hit)> = Vec::new();
        let mut i = 0;
        while let Some(first) = kept.get(i) {
            let rule = first.rule;
            let mut j = i;
            let mut spans: Vec<(usize, usize)> = Vec::new();
            let mut across = false;
            while let Some(k) = kept.get(j) {
                if k.rule != rule {
                    break;
                }
                if k.span.0 < k.span.1 {
                    spans.push(k.span);
                }
                across |= k.across;
                j += 1;
            }
            if let Some(r) = c.rules.get(as_index(rule)) {
                hits.push((
                    as_index(rule),
                    Hit {
                        rule_id: r.id.clone(),
                        category: r.category.clone(),
                        severity: r.severity,
                        spans: merge_spans(spans),
                        matched: self.what_label(rule, first.what),
                        across_messages: across,
                    },
                ));
            }
            i = j;
        }
        hits.sort_by(|a, b| b.1.severity.cmp(&a.1.severity).then(a.0.cmp(&b.0)));
        ScanResult {
            hits: hits.into_iter().map(|(_, h)| h).collect(),
        }
    }

    fn what_label(&self, rule: u32, what: What) -> String {
        let r = self.inner.rules.get(as_index(rule));
        match what {
            What::Keyword(k) => r
                .and_then(|r| r.keywords.get(as_index(k)))
                .cloned()
                .unwrap_or_default(),
            What::Pattern(p) => p.as_str().to_owned(),
            What::Regex(k) => r
                .and_then(|r| r.regex.get(as_index(k)))
                .cloned()
                .unwrap_or_default(),
            What::MsgType(k) => r
                .and_then(|r| r.msg_types.get(as_index(k)))
                .cloned()
                .unwrap_or_default(),
        }
    }

    /// Every keyword as the library wrote it: (rule id, category, keyword). For the plain
    /// substring baseline of `scrm rules eval`.
    pub fn keywords(&self) -> Vec<(&str, &str, &str)> {
        self.inner
            .rules
            .iter()
            .flat_map(|r| {
                r.keywords
                    .iter()
                    .map(move |k| (r.id.as_str(), r.category.as_str(), k.as_str()))
            })
            .collect()
    }

    /// How many rules.
    pub fn len(&self) -> usize {
        self.inner.rules.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn compile_regex(rule: &str, src: &str) -> Result<Regex, LibraryError> {
    let len = src.chars().count();
    if len > MAX_REGEX_LEN {
        return Err(LibraryError::new(
            rule,
            "regex",
            format!("正则表达式过长（{len} 个字符，上限 {MAX_REGEX_LEN}）"),
        ));
    }
    RegexBuilder::new(src)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_DFA_SIZE_LIMIT)
        .nest_limit(50)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(limit) => LibraryError::new(
                rule,
                "regex",
                format!("正则表达式编译后过大（超过 {limit} 字节）：{src}"),
            ),
            other => LibraryError::new(rule, "regex", format!("正则表达式无效：{other}")),
        })
}

/// Sorts spans and merges the ones that overlap or touch.
fn merge_spans(mut spans: Vec<(usize, usize)>) -> Vec<(usize, usize)> {
    spans.sort_unstable();
    let mut out: Vec<(usize, usize)> = Vec::with_capacity(spans.len());
    for (s, e) in spans {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}
