//! `scrm rules test|check|eval`: the content scanner on a file, on one message, and on the
//! labeled set.
//!
//! None of these touch the database or the configuration: they run the scanner
//! ([`crate::domain::scan`]) on text. Exit codes are part of the interface other tools script against:
//! `test` 0 (every line read) / 1 (some line malformed); `check` 0; `eval` 0 (quality targets
//! met) / 1 (missed); all of them 2 when the rule library, the input or the set cannot be used.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};

use anyhow::Context as _;
use clap::Subcommand;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::scan::{Hit, RuleLibrary, ScanInput, Sender};

/// The project's labeled set, bundled so `scrm rules eval` works from any directory.
const BUNDLED_SET: &str = include_str!("../../fixtures/rules/labeled.jsonl");
/// Longer input lines are reported as errors instead of being held in memory.
const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;
/// The quality targets of `eval` (issue 6): recall on alert cases, false-positive rate on clean
/// ones, checked overall and for every category and technique with at least this many cases.
const TARGET_RECALL: f64 = 0.95;
const TARGET_FPR: f64 = 0.03;
const MIN_GROUP_CASES: usize = 5;
/// Misses and false positives listed under the `eval` table (`--json` lists all).
const LISTED_CASES: usize = 40;

/// Exit code: the command ran and found nothing wrong with its input.
const EXIT_OK: i32 = 0;
/// Exit code: `test` read a malformed line, or `eval` missed a target.
const EXIT_FINDINGS: i32 = 1;
/// Exit code: the library, the input or the set cannot be used.
const EXIT_UNUSABLE: i32 = 2;

/// `scrm rules …`.
#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Scan JSON lines `{"id", "text", "prev", "sender"}` and print one JSON line of the decision
    /// per input.
    Test {
        /// The input file (`-` for stdin).
        #[arg(long)]
        input: String,
        /// A rule library (TOML) instead of the bundled default.
        #[arg(long)]
        rules: Option<String>,
    },
    /// Explain the decision for one message.
    Check {
        /// The message text.
        text: String,
        /// The previous message of the same sender.
        #[arg(long)]
        prev: Option<String>,
        /// `staff` or `customer`.
        #[arg(long, default_value = "staff")]
        sender: String,
        /// WeCom's `msgtype` of the message (`redpacket`, `external_redpacket`, …).
        #[arg(long)]
        msg_type: Option<String>,
        /// A rule library (TOML) instead of the bundled default.
        #[arg(long)]
        rules: Option<String>,
    },
    /// Recall and false-positive rate on a labeled set, per category and evasion technique,
    /// against a plain substring filter.
    Eval {
        /// The labeled set (default: the bundled one).
        #[arg(long)]
        set: Option<String>,
        /// A rule library (TOML) instead of the bundled default.
        #[arg(long)]
        rules: Option<String>,
        /// One JSON object instead of tables.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `scrm rules …`. The configuration is not needed: the scanner is pure.
pub async fn run(command: RulesCommand) -> anyhow::Result<i32> {
    // Plain blocking I/O on stdin/stdout/files: this is the process's only task.
    match command {
        RulesCommand::Test { input, rules } => {
            let Some(library) = load_library(rules.as_deref()) else {
                return Ok(EXIT_UNUSABLE);
            };
            run_test(&library, &input)
        }
        RulesCommand::Check {
            text,
            prev,
            sender,
            msg_type,
            rules,
        } => {
            let Some(sender) = parse_sender(&sender) else {
                eprintln!(
                    "错误 (error): --sender 只能是 staff 或 customer (must be staff or customer), got {sender:?}"
                );
                return Ok(EXIT_UNUSABLE);
            };
            let Some(library) = load_library(rules.as_deref()) else {
                return Ok(EXIT_UNUSABLE);
            };
            let input = ScanInput {
                text: &text,
                prev: prev.as_deref(),
                sender,
                msg_type: msg_type.as_deref(),
            };
            let mut out = io::stdout().lock();
            write_check(&mut out, &library, &input)?;
            out.flush()?;
            Ok(EXIT_OK)
        }
        RulesCommand::Eval { set, rules, json } => {
            let Some(library) = load_library(rules.as_deref()) else {
                return Ok(EXIT_UNUSABLE);
            };
            let (name, text) = match &set {
                Some(path) => match std::fs::read_to_string(path) {
                    Ok(text) => (path.clone(), text),
                    Err(e) => {
                        eprintln!(
                            "错误 (error): 无法读取标注集 (cannot read the labeled set) {path}: {e}"
                        );
                        return Ok(EXIT_UNUSABLE);
                    }
                },
                None => (
                    "bundled fixtures/rules/labeled.jsonl".to_owned(),
                    BUNDLED_SET.to_owned(),
                ),
            };
            let cases = match parse_labeled_set(&text) {
                Ok(cases) => cases,
                Err(e) => {
                    eprintln!("错误 (error): 标注集无效 (invalid labeled set) {name}: {e}");
                    return Ok(EXIT_UNUSABLE);
                }
            };
            let report = evaluate(&library, &cases, name);
            let mut out = io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &report)?;
                writeln!(out)?;
            } else {
                write_eval(&mut out, &report)?;
            }
            out.flush()?;
            Ok(if report.passed {
                EXIT_OK
            } else {
                EXIT_FINDINGS
            })
        }
    }
}

/// The bundled library, or the TOML file at `path`. `None` after telling stderr why not.
fn load_library(path: Option<&str>) -> Option<RuleLibrary> {
    let Some(path) = path else {
        return Some(RuleLibrary::default_library());
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("错误 (error): 无法读取规则库 (cannot read the rule library) {path}: {e}");
            return None;
        }
    };
    match RuleLibrary::from_toml(&text) {
        Ok(library) => Some(library),
        Err(e) => {
            eprintln!(
                "错误 (error): 规则库无效 (invalid rule library) {path}: 规则 (rule) {} 字段 (field) {}: {}",
                e.rule, e.field, e.reason
            );
            None
        }
    }
}

fn parse_sender(s: &str) -> Option<Sender> {
    match s {
        "staff" => Some(Sender::Staff),
        "customer" => Some(Sender::Customer),
        _ => None,
    }
}

// ------------------------------------------------------------------------------------ test

/// One decision line of `scrm rules test`.
#[derive(Debug, Serialize)]
struct Decision<'a> {
    id: &'a Value,
    alert: bool,
    category: Option<&'a str>,
    rule: Option<&'a str>,
    spans: &'a [(usize, usize)],
}

/// The line printed for an input line that could not be scanned.
#[derive(Debug, Serialize)]
struct LineError<'a> {
    id: &'a Value,
    error: String,
}

/// One parsed input line (borrowing from the line's JSON).
struct InputLine<'a> {
    id: &'a Value,
    text: &'a str,
    prev: Option<&'a str>,
    sender: Sender,
    msg_type: Option<&'a str>,
}

fn run_test(library: &RuleLibrary, input: &str) -> anyhow::Result<i32> {
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let outcome = if input == "-" {
        scan_lines(library, &mut io::stdin().lock(), &mut out, true)
    } else {
        match File::open(input) {
            Ok(file) => scan_lines(library, &mut BufReader::new(file), &mut out, false),
            Err(e) => {
                eprintln!("错误 (error): 无法打开输入文件 (cannot open the input) {input}: {e}");
                return Ok(EXIT_UNUSABLE);
            }
        }
    };
    let flushed = out.flush();
    match outcome.and_then(|all_read| flushed.map(|()| all_read)) {
        Ok(all_read) => Ok(if all_read { EXIT_OK } else { EXIT_FINDINGS }),
        // The reader of our output went away (`| head`): nothing left to say.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(EXIT_OK),
        Err(e) => Err(e).with_context(|| format!("reading {input}")),
    }
}

/// Scans every line of `reader`, writing one line to `out` per input line, in order. Returns
/// whether every line was well-formed. Blank lines are skipped. `flush_each`: a program may be
/// feeding us a line at a time (stdin), so answer each line before blocking for the next.
fn scan_lines<R: BufRead, W: Write>(
    library: &RuleLibrary,
    reader: &mut R,
    out: &mut W,
    flush_each: bool,
) -> io::Result<bool> {
    let mut all_read = true;
    let mut buf = Vec::new();
    let mut number = 0usize;
    while let Some(len) = read_line_capped(reader, &mut buf, MAX_LINE_BYTES)? {
        number += 1;
        if buf.iter().all(u8::is_ascii_whitespace) && len == buf.len() {
            continue;
        }
        match decide_line(library, &buf, len, out) {
            Ok(()) => {}
            Err(LineFailure::Io(e)) => return Err(e),
            Err(LineFailure::Malformed { id, reason }) => {
                all_read = false;
                serde_json::to_writer(
                    &mut *out,
                    &LineError {
                        id: &id,
                        error: format!("line {number}: {reason}"),
                    },
                )?;
                out.write_all(b"\n")?;
            }
        }
        if flush_each {
            out.flush()?;
        }
    }
    Ok(all_read)
}

enum LineFailure {
    Io(io::Error),
    Malformed { id: Value, reason: String },
}

impl From<io::Error> for LineFailure {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<serde_json::Error> for LineFailure {
    fn from(e: serde_json::Error) -> Self {
        Self::Io(io::Error::other(e))
    }
}

fn decide_line<W: Write>(
    library: &RuleLibrary,
    bytes: &[u8],
    len: usize,
    out: &mut W,
) -> Result<(), LineFailure> {
    let malformed = |id: Value, reason: String| LineFailure::Malformed { id, reason };
    if len > bytes.len() {
        return Err(malformed(
            Value::Null,
            format!("line is {len} bytes, longer than the limit of {MAX_LINE_BYTES}"),
        ));
    }
    let line = match std::str::from_utf8(bytes) {
        Ok(line) => line,
        Err(e) => {
            // The id is usually plain ASCII before the bad bytes: recover it for the report.
            let id = id_of(&String::from_utf8_lossy(bytes));
            return Err(malformed(
                id,
                format!("invalid UTF-8 at byte {}", e.valid_up_to()),
            ));
        }
    };
    let value: Value =
        serde_json::from_str(line).map_err(|e| malformed(Value::Null, json_reason(&e)))?;
    let input = parse_input(&value).map_err(|reason| malformed(id_field(&value), reason))?;
    let result = library.scan(&ScanInput {
        text: input.text,
        prev: input.prev,
        sender: input.sender,
        msg_type: input.msg_type,
    });
    let hit = result.alert();
    serde_json::to_writer(
        &mut *out,
        &Decision {
            id: input.id,
            alert: hit.is_some(),
            category: hit.map(|h| h.category.as_str()),
            rule: hit.map(|h| h.rule_id.as_str()),
            spans: hit.map_or(&[][..], |h| h.spans.as_slice()),
        },
    )?;
    out.write_all(b"\n")?;
    Ok(())
}

fn parse_input(value: &Value) -> Result<InputLine<'_>, String> {
    let Value::Object(map) = value else {
        return Err("expected a JSON object {\"id\", \"text\", …}".to_owned());
    };
    let text = match map.get("text") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err("\"text\" must be a string".to_owned()),
        None => return Err("\"text\" is missing".to_owned()),
    };
    let prev = match map.get("prev") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err("\"prev\" must be a string or null".to_owned()),
    };
    let sender = match map.get("sender") {
        None | Some(Value::Null) => Sender::Staff,
        Some(Value::String(s)) => parse_sender(s)
            .ok_or_else(|| format!("\"sender\" must be \"staff\" or \"customer\", got {s:?}"))?,
        Some(_) => return Err("\"sender\" must be \"staff\" or \"customer\"".to_owned()),
    };
    let msg_type = match map.get("msg_type") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err("\"msg_type\" must be a string or null".to_owned()),
    };
    static NULL: Value = Value::Null;
    Ok(InputLine {
        id: map.get("id").unwrap_or(&NULL),
        text,
        prev,
        sender,
        msg_type,
    })
}

/// The `id` of a line that is JSON but not a valid input.
fn id_field(value: &Value) -> Value {
    value.get("id").cloned().unwrap_or(Value::Null)
}

/// The `id` of a line that may not even be JSON.
fn id_of(line: &str) -> Value {
    serde_json::from_str::<Value>(line).map_or(Value::Null, |v| id_field(&v))
}

/// serde_json's reason without its "at line 1 column N" (ours is the file's line number).
fn json_reason(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let reason = full
        .rsplit_once(" at line ")
        .map_or(full.as_str(), |(reason, _)| reason);
    format!("not valid JSON (column {}): {reason}", e.column())
}

/// Reads one line (without `\n` or `\r\n`) into `buf`, keeping at most `cap` bytes of it and
/// skipping the rest. Returns the line's full length, or `None` at the end of the input.
fn read_line_capped<R: BufRead>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    cap: usize,
) -> io::Result<Option<usize>> {
    buf.clear();
    let mut len = 0usize;
    let mut started = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            break;
        }
        started = true;
        let newline = available.iter().position(|&b| b == b'\n');
        let chunk = newline.map_or(available, |i| &available[..i]);
        let room = cap.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        len += chunk.len();
        let consumed = newline.map_or(chunk.len(), |i| i + 1);
        reader.consume(consumed);
        if newline.is_some() {
            break;
        }
    }
    if !started {
        return Ok(None);
    }
    if buf.last() == Some(&b'\r') && len == buf.len() {
        buf.pop();
        len -= 1;
    }
    Ok(Some(len))
}

// ----------------------------------------------------------------------------------- check

fn write_check<W: Write>(
    out: &mut W,
    library: &RuleLibrary,
    input: &ScanInput<'_>,
) -> io::Result<()> {
    let explanation = library.explain(input);
    writeln!(out, "消息 (text):           {}", input.text)?;
    if let Some(prev) = input.prev {
        writeln!(out, "上一条 (prev):         {prev}")?;
    }
    let sender = match input.sender {
        Sender::Staff => "staff 员工",
        Sender::Customer => "customer 客户",
    };
    writeln!(out, "发送者 (sender):       {sender}")?;
    if let Some(msg_type) = input.msg_type {
        writeln!(out, "消息类型 (msg_type):   {msg_type}")?;
    }
    writeln!(out, "归一化 (normalized):   {}", explanation.normalized)?;
    writeln!(out, "规则数 (rules):        {}", library.len())?;
    writeln!(out)?;
    if explanation.hits.is_empty() {
        writeln!(out, "命中 (hits): 无 (none)")?;
    } else {
        writeln!(out, "命中 (hits): {}", explanation.hits.len())?;
        for (n, hit) in explanation.hits.iter().enumerate() {
            write_hit(out, n + 1, hit, input.text)?;
        }
    }
    if !explanation.allowed.is_empty() {
        writeln!(out)?;
        writeln!(
            out,
            "被允许短语取消 (cancelled by allow phrases): {}",
            explanation.allowed.len()
        )?;
        for (rule, matched, phrase) in &explanation.allowed {
            writeln!(
                out,
                "  - 规则 (rule) {rule}: 匹配 (matched) \"{matched}\" ← 允许短语 (allow phrase) \"{phrase}\""
            )?;
        }
    }
    writeln!(out)?;
    match explanation.hits.first() {
        Some(hit) => writeln!(
            out,
            "结论 (decision): 告警 ALERT — 类别 (category) {} · 规则 (rule) {} · 严重度 (severity) {}",
            hit.category,
            hit.rule_id,
            hit.severity.as_str()
        ),
        None => writeln!(out, "结论 (decision): 不告警 (no alert)"),
    }
}

fn write_hit<W: Write>(out: &mut W, n: usize, hit: &Hit, text: &str) -> io::Result<()> {
    let across = if hit.across_messages {
        " · 跨消息 (across messages)"
    } else {
        ""
    };
    writeln!(
        out,
        "  {n}. 规则 (rule) {} · 类别 (category) {} · 严重度 (severity) {} · 匹配 (matched) \"{}\"{across}",
        hit.rule_id,
        hit.category,
        hit.severity.as_str(),
        hit.matched
    )?;
    for &(start, end) in &hit.spans {
        writeln!(
            out,
            "     [{start}, {end}) \"{}\"",
            char_slice(text, start, end)
        )?;
    }
    if !hit.spans.is_empty() {
        writeln!(out, "     {}", highlight(text, &hit.spans))?;
    }
    Ok(())
}

/// The chars `[start, end)` of `text` (clamped: a bad span must not crash the explanation).
fn char_slice(text: &str, start: usize, end: usize) -> String {
    text.chars()
        .skip(start)
        .take(end.saturating_sub(start))
        .collect()
}

/// `text` with every span wrapped in 【】.
fn highlight(text: &str, spans: &[(usize, usize)]) -> String {
    let mut spans: Vec<(usize, usize)> = spans.iter().copied().filter(|(s, e)| s < e).collect();
    spans.sort_unstable();
    let mut out = String::with_capacity(text.len() + spans.len() * 6);
    let mut next = spans.iter().peekable();
    let mut open_until: Option<usize> = None;
    let mut count = 0usize;
    for (i, ch) in text.chars().enumerate() {
        if open_until == Some(i) {
            out.push('】');
            open_until = None;
        }
        if open_until.is_none() {
            // Spans that start inside the open one (overlap) are merged into it.
            while next.peek().is_some_and(|(s, _)| *s < i) {
                next.next();
            }
            if let Some(&&(s, e)) = next.peek()
                && s == i
            {
                out.push('【');
                open_until = Some(e);
                next.next();
            }
        }
        out.push(ch);
        count = i + 1;
    }
    if open_until.is_some_and(|e| e >= count) {
        out.push('】');
    }
    out
}

// ------------------------------------------------------------------------------------ eval

/// One case of the labeled set (`fixtures/rules/labeled.jsonl`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LabeledCase {
    id: String,
    text: String,
    #[serde(default)]
    prev: Option<String>,
    #[serde(default = "default_sender")]
    sender: Sender,
    #[serde(default)]
    msg_type: Option<String>,
    alert: bool,
    category: Option<String>,
    technique: String,
}

fn default_sender() -> Sender {
    Sender::Staff
}

fn parse_labeled_set(text: &str) -> Result<Vec<LabeledCase>, String> {
    let mut cases = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let case: LabeledCase =
            serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        cases.push(case);
    }
    if cases.is_empty() {
        return Err("no cases".to_owned());
    }
    Ok(cases)
}

/// Counts for one group of cases.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    alert_cases: usize,
    detected: usize,
    category_correct: usize,
    clean_cases: usize,
    false_positives: usize,
}

impl Tally {
    fn add(&mut self, case: &LabeledCase, flagged: Option<&str>) {
        if case.alert {
            self.alert_cases += 1;
            if let Some(category) = flagged {
                self.detected += 1;
                if case.category.as_deref() == Some(category) {
                    self.category_correct += 1;
                }
            }
        } else {
            self.clean_cases += 1;
            if flagged.is_some() {
                self.false_positives += 1;
            }
        }
    }

    fn score(self) -> Score {
        let ratio = |n: usize, d: usize| (d > 0).then(|| round4(n as f64 / d as f64));
        Score {
            alert_cases: self.alert_cases,
            detected: self.detected,
            recall: ratio(self.detected, self.alert_cases),
            category_accuracy: ratio(self.category_correct, self.detected),
            clean_cases: self.clean_cases,
            false_positives: self.false_positives,
            fpr: ratio(self.false_positives, self.clean_cases),
        }
    }
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// Recall, false-positive rate and category accuracy of one group.
#[derive(Debug, Clone, Serialize)]
struct Score {
    alert_cases: usize,
    detected: usize,
    /// `detected / alert_cases`; null without alert cases.
    recall: Option<f64>,
    /// Of the detected alert cases, the share flagged with the labeled category.
    category_accuracy: Option<f64>,
    clean_cases: usize,
    false_positives: usize,
    /// `false_positives / clean_cases`; null without clean cases.
    fpr: Option<f64>,
}

/// One filter's figures on the set.
#[derive(Debug, Serialize)]
struct FilterReport {
    overall: Score,
    per_category: BTreeMap<String, Score>,
    per_technique: BTreeMap<String, Score>,
    /// Alert cases it did not flag.
    misses: Vec<String>,
    /// Clean cases it flagged.
    false_positive_ids: Vec<String>,
}

#[derive(Debug, Default)]
struct FilterTally {
    overall: Tally,
    per_category: BTreeMap<String, Tally>,
    per_technique: BTreeMap<String, Tally>,
    misses: Vec<String>,
    false_positive_ids: Vec<String>,
}

impl FilterTally {
    fn add(&mut self, case: &LabeledCase, flagged: Option<&str>) {
        self.overall.add(case, flagged);
        let category = case.category.clone().unwrap_or_else(|| "none".to_owned());
        self.per_category
            .entry(category)
            .or_default()
            .add(case, flagged);
        self.per_technique
            .entry(case.technique.clone())
            .or_default()
            .add(case, flagged);
        match (case.alert, flagged.is_some()) {
            (true, false) => self.misses.push(case.id.clone()),
            (false, true) => self.false_positive_ids.push(case.id.clone()),
            _ => {}
        }
    }

    fn report(self) -> FilterReport {
        let scores =
            |m: BTreeMap<String, Tally>| m.into_iter().map(|(k, t)| (k, t.score())).collect();
        FilterReport {
            overall: self.overall.score(),
            per_category: scores(self.per_category),
            per_technique: scores(self.per_technique),
            misses: self.misses,
            false_positive_ids: self.false_positive_ids,
        }
    }
}

/// What `scrm rules eval` found.
#[derive(Debug, Serialize)]
struct EvalReport {
    set: String,
    cases: usize,
    alert_cases: usize,
    clean_cases: usize,
    rules: usize,
    keywords: usize,
    targets: Targets,
    /// The scanner.
    engine: FilterReport,
    /// A plain substring filter over the library's raw keywords, on `prev` + `text`.
    baseline: FilterReport,
    /// Whether the engine met every target.
    passed: bool,
    /// Each target the engine missed.
    failures: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Targets {
    recall: f64,
    fpr: f64,
    min_group_cases: usize,
}

fn evaluate(library: &RuleLibrary, cases: &[LabeledCase], set: String) -> EvalReport {
    let keywords: Vec<(&str, &str)> = library
        .keywords()
        .into_iter()
        .filter(|(_, _, keyword)| !keyword.is_empty())
        .map(|(_, category, keyword)| (category, keyword))
        .collect();
    let mut engine = FilterTally::default();
    let mut baseline = FilterTally::default();
    for case in cases {
        let result = library.scan(&ScanInput {
            text: &case.text,
            prev: case.prev.as_deref(),
            sender: case.sender,
            msg_type: case.msg_type.as_deref(),
        });
        engine.add(case, result.alert().map(|hit| hit.category.as_str()));
        let joined = format!("{}{}", case.prev.as_deref().unwrap_or(""), case.text);
        let substring = keywords
            .iter()
            .find(|(_, keyword)| joined.contains(keyword))
            .map(|(category, _)| *category);
        baseline.add(case, substring);
    }
    let engine = engine.report();
    let failures = failures(&engine);
    EvalReport {
        set,
        cases: cases.len(),
        alert_cases: engine.overall.alert_cases,
        clean_cases: engine.overall.clean_cases,
        rules: library.len(),
        keywords: keywords.len(),
        targets: Targets {
            recall: TARGET_RECALL,
            fpr: TARGET_FPR,
            min_group_cases: MIN_GROUP_CASES,
        },
        passed: failures.is_empty(),
        failures,
        engine,
        baseline: baseline.report(),
    }
}

/// Every target missed: overall (whatever its size), then each category and technique with
/// enough cases.
fn failures(report: &FilterReport) -> Vec<String> {
    let mut failures = Vec::new();
    let mut check = |name: &str, score: &Score, min: usize| {
        if score.alert_cases >= min
            && let Some(recall) = score.recall
            && recall < TARGET_RECALL
        {
            failures.push(format!(
                "{name}: recall {} < {}",
                percent(Some(recall)),
                percent(Some(TARGET_RECALL))
            ));
        }
        if score.clean_cases >= min
            && let Some(fpr) = score.fpr
            && fpr > TARGET_FPR
        {
            failures.push(format!(
                "{name}: false-positive rate {} > {}",
                percent(Some(fpr)),
                percent(Some(TARGET_FPR))
            ));
        }
    };
    check("overall", &report.overall, 1);
    for (category, score) in &report.per_category {
        check(&format!("category {category}"), score, MIN_GROUP_CASES);
    }
    for (technique, score) in &report.per_technique {
        check(&format!("technique {technique}"), score, MIN_GROUP_CASES);
    }
    failures
}

fn percent(x: Option<f64>) -> String {
    x.map_or_else(|| "—".to_owned(), |x| format!("{:.1}%", x * 100.0))
}

fn write_eval<W: Write>(out: &mut W, report: &EvalReport) -> io::Result<()> {
    writeln!(
        out,
        "标注集 (labeled set): {} — {} 条 (cases): {} 告警 (alert), {} 正常 (clean)",
        report.set, report.cases, report.alert_cases, report.clean_cases
    )?;
    writeln!(
        out,
        "规则库 (library): {} 条规则 (rules), {} 个关键词 (keywords)",
        report.rules, report.keywords
    )?;
    writeln!(
        out,
        "目标 (targets): 召回率 (recall) ≥ {}, 误报率 (false-positive rate) ≤ {}, 每组 ≥ {} 条时逐组检查 (per group of ≥ {} cases)",
        percent(Some(TARGET_RECALL)),
        percent(Some(TARGET_FPR)),
        MIN_GROUP_CASES,
        MIN_GROUP_CASES
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "引擎 (engine) = 本扫描器 (this scanner); 子串基线 (substring baseline) = 原始关键词做子串匹配 (raw keywords as substrings of prev + text)"
    )?;
    writeln!(
        out,
        "{:<22} {:>6} {:>6} │ {:>8} {:>8} {:>8} │ {:>8} {:>8}",
        "", "", "", "engine", "", "", "baseline", ""
    )?;
    writeln!(
        out,
        "{:<22} {:>6} {:>6} │ {:>8} {:>8} {:>8} │ {:>8} {:>8}",
        "group", "alert", "clean", "recall", "FPR", "cat.acc", "recall", "FPR"
    )?;
    let row = |out: &mut W, name: &str, engine: &Score, baseline: Option<&Score>| {
        writeln!(
            out,
            "{:<22} {:>6} {:>6} │ {:>8} {:>8} {:>8} │ {:>8} {:>8}",
            name,
            engine.alert_cases,
            engine.clean_cases,
            percent(engine.recall),
            percent(engine.fpr),
            percent(engine.category_accuracy),
            percent(baseline.and_then(|b| b.recall)),
            percent(baseline.and_then(|b| b.fpr)),
        )
    };
    row(
        out,
        "overall",
        &report.engine.overall,
        Some(&report.baseline.overall),
    )?;
    writeln!(out, "按类别 (per category)")?;
    for (name, score) in &report.engine.per_category {
        row(
            out,
            &format!("  {name}"),
            score,
            report.baseline.per_category.get(name),
        )?;
    }
    writeln!(out, "按技巧 (per technique)")?;
    for (name, score) in &report.engine.per_technique {
        row(
            out,
            &format!("  {name}"),
            score,
            report.baseline.per_technique.get(name),
        )?;
    }
    write_ids(out, "漏报 (missed alert cases)", &report.engine.misses)?;
    write_ids(
        out,
        "误报 (false positives)",
        &report.engine.false_positive_ids,
    )?;
    writeln!(out)?;
    if report.passed {
        writeln!(out, "结论 (decision): 通过 PASS")
    } else {
        writeln!(out, "结论 (decision): 未通过 FAIL")?;
        for failure in &report.failures {
            writeln!(out, "  - {failure}")?;
        }
        Ok(())
    }
}

fn write_ids<W: Write>(out: &mut W, title: &str, ids: &[String]) -> io::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    writeln!(out)?;
    let shown: Vec<&str> = ids.iter().take(LISTED_CASES).map(String::as_str).collect();
    let more = ids.len().saturating_sub(LISTED_CASES);
    let tail = if more > 0 {
        format!(" … +{more} (--json lists all)")
    } else {
        String::new()
    };
    writeln!(out, "{title}: {}: {}{tail}", ids.len(), shown.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highlight_wraps_each_span_by_chars() {
        assert_eq!(
            highlight("这单私下转账给我", &[(2, 6)]),
            "这单【私下转账】给我"
        );
        assert_eq!(highlight("ab", &[(0, 1), (1, 2)]), "【a】【b】");
        assert_eq!(
            highlight("ab", &[(1, 9)]),
            "a【b】",
            "a span past the end closes at the end"
        );
        assert_eq!(
            highlight("abc", &[(0, 2), (1, 3)]),
            "【ab】c",
            "an overlap is dropped"
        );
        assert_eq!(highlight("", &[(0, 1)]), "");
    }

    #[test]
    fn capped_lines_report_their_full_length() {
        let mut reader = BufReader::with_capacity(4, &b"abcdefgh\r\nxy\n\nz"[..]);
        let mut buf = Vec::new();
        assert_eq!(read_line_capped(&mut reader, &mut buf, 5).unwrap(), Some(9));
        assert_eq!(buf, b"abcde");
        assert_eq!(read_line_capped(&mut reader, &mut buf, 5).unwrap(), Some(2));
        assert_eq!(buf, b"xy");
        assert_eq!(read_line_capped(&mut reader, &mut buf, 5).unwrap(), Some(0));
        assert_eq!(read_line_capped(&mut reader, &mut buf, 5).unwrap(), Some(1));
        assert_eq!(buf, b"z");
        assert_eq!(read_line_capped(&mut reader, &mut buf, 5).unwrap(), None);
    }

    #[test]
    fn the_bundled_set_parses() {
        let cases = parse_labeled_set(BUNDLED_SET).unwrap();
        assert!(cases.len() >= 400, "{} cases", cases.len());
    }
}
