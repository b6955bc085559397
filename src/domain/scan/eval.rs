//! The quality gate over a labeled set: recall and false-positive rate of a library, overall,
//! per category and per evasion technique, beside a plain substring filter of the same keywords.
//! `scrm rules eval` prints it; the console runs it before saving a corp's library.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

use super::detector::Detector;
use super::{RuleLibrary, ScanInput, Sender};

/// The project's labeled set, bundled so the gate works from any directory.
pub const BUNDLED_SET: &str = include_str!("../../../fixtures/rules/labeled.jsonl");
/// How reports name the bundled set.
pub const BUNDLED_SET_NAME: &str = "bundled fixtures/rules/labeled.jsonl";
/// The quality targets (issue 6): recall on alert cases, false-positive rate on clean ones,
/// checked overall and for every category and technique with at least this many cases.
pub const TARGET_RECALL: f64 = 0.95;
/// See [`TARGET_RECALL`].
pub const TARGET_FPR: f64 = 0.03;
/// See [`TARGET_RECALL`].
pub const MIN_GROUP_CASES: usize = 5;
/// The corpus gate (issue 22) checks each family and author with at least this many cases.
pub const MIN_CORPUS_GROUP_CASES: usize = 15;
/// The corpus's authors the model is never trained on: its figures on them are the honest ones.
pub const HELD_OUT_AUTHORS: [&str; 3] = ["dai", "eli", "gus"];
/// The corpus, by author (`fixtures/corpus/`, see its README).
pub const CORPUS: [(&str, &str); 7] = [
    ("ana", include_str!("../../../fixtures/corpus/ana.jsonl")),
    ("bo", include_str!("../../../fixtures/corpus/bo.jsonl")),
    ("chen", include_str!("../../../fixtures/corpus/chen.jsonl")),
    ("dai", include_str!("../../../fixtures/corpus/dai.jsonl")),
    ("eli", include_str!("../../../fixtures/corpus/eli.jsonl")),
    // Everyday chat only (greetings, scheduling, acknowledgements): what most traffic is.
    ("fay", include_str!("../../../fixtures/corpus/fay.jsonl")),
    ("gus", include_str!("../../../fixtures/corpus/gus.jsonl")),
];

/// The corpus's cases of the authors `keep` accepts.
pub fn corpus_cases(keep: impl Fn(&str) -> bool) -> Vec<LabeledCase> {
    CORPUS
        .iter()
        .filter(|(author, _)| keep(author))
        .flat_map(|(_, text)| parse_labeled_set(text).unwrap_or_default())
        .collect()
}

/// The held-out part of the corpus ([`HELD_OUT_AUTHORS`]).
pub fn held_out_cases() -> Vec<LabeledCase> {
    corpus_cases(|a| HELD_OUT_AUTHORS.contains(&a))
}

/// Misses and false positives listed under the `eval` table (`--json` lists all).
const LISTED_CASES: usize = 40;

static BUNDLED: LazyLock<Vec<LabeledCase>> =
    LazyLock::new(|| parse_labeled_set(BUNDLED_SET).unwrap_or_default());

/// The bundled labeled set, parsed once (a unit test keeps it parseable).
pub fn bundled_cases() -> &'static [LabeledCase] {
    &BUNDLED
}

/// [`evaluate`] on the bundled set.
pub fn evaluate_bundled(library: &RuleLibrary) -> EvalReport {
    evaluate(library, bundled_cases(), BUNDLED_SET_NAME.to_owned())
}

/// One case of the labeled set (`fixtures/rules/labeled.jsonl`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabeledCase {
    /// Stable id (listed among misses and false positives).
    pub id: String,
    /// The message.
    pub text: String,
    #[serde(default)]
    pub prev: Option<String>,
    #[serde(default = "default_sender")]
    pub sender: Sender,
    #[serde(default)]
    pub msg_type: Option<String>,
    /// Whether an alert is the right answer.
    pub alert: bool,
    /// The alert's category, for alert cases.
    pub category: Option<String>,
    /// The evasion technique (or the kind of innocent look-alike) the case tests.
    pub technique: String,
    /// Who wrote it (the corpus: each author wrote without the rules or the others' cases).
    #[serde(default)]
    pub author: Option<String>,
    /// How it is phrased (`direct`, `indirect`, `euphemism`, …; for clean cases `refusal`,
    /// `warning`, `system_number`, …).
    #[serde(default)]
    pub family: Option<String>,
    /// The trade it comes from.
    #[serde(default)]
    pub industry: Option<String>,
    /// Who wrote `prev` (the corpus: a customer's request answered by the salesperson).
    #[serde(default)]
    pub prev_sender: Option<Sender>,
}

impl LabeledCase {
    /// The case as the scanner sees it: `prev` from the other party (a customer's request the
    /// salesperson answers) is the model's context, not the rules' previous message.
    pub fn input(&self) -> ScanInput<'_> {
        let other = self.prev_sender.is_some_and(|s| s != self.sender);
        ScanInput {
            text: &self.text,
            prev: if other { None } else { self.prev.as_deref() },
            context: if other { self.prev.as_deref() } else { None },
            sender: self.sender,
            msg_type: self.msg_type.as_deref(),
        }
    }
}

fn default_sender() -> Sender {
    Sender::Staff
}

/// Parses a labeled set (JSON lines); the reason names the line.
pub fn parse_labeled_set(text: &str) -> Result<Vec<LabeledCase>, String> {
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
pub struct Score {
    pub alert_cases: usize,
    pub detected: usize,
    /// `detected / alert_cases`; null without alert cases.
    pub recall: Option<f64>,
    /// Of the detected alert cases, the share flagged with the labeled category.
    pub category_accuracy: Option<f64>,
    pub clean_cases: usize,
    pub false_positives: usize,
    /// `false_positives / clean_cases`; null without clean cases.
    pub fpr: Option<f64>,
}

/// One filter's figures on the set.
#[derive(Debug, Serialize)]
pub struct FilterReport {
    pub overall: Score,
    pub per_category: BTreeMap<String, Score>,
    pub per_technique: BTreeMap<String, Score>,
    /// Per phrasing family (corpus cases).
    pub per_family: BTreeMap<String, Score>,
    /// Per author (corpus cases).
    pub per_author: BTreeMap<String, Score>,
    /// Alert cases it did not flag.
    pub misses: Vec<String>,
    /// Clean cases it flagged.
    pub false_positive_ids: Vec<String>,
}

#[derive(Debug, Default)]
struct FilterTally {
    overall: Tally,
    per_category: BTreeMap<String, Tally>,
    per_technique: BTreeMap<String, Tally>,
    per_family: BTreeMap<String, Tally>,
    per_author: BTreeMap<String, Tally>,
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
        if let Some(family) = &case.family {
            self.per_family
                .entry(family.clone())
                .or_default()
                .add(case, flagged);
        }
        if let Some(author) = &case.author {
            self.per_author
                .entry(author.clone())
                .or_default()
                .add(case, flagged);
        }
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
            per_family: scores(self.per_family),
            per_author: scores(self.per_author),
            misses: self.misses,
            false_positive_ids: self.false_positive_ids,
        }
    }
}

/// What `scrm rules eval` found.
#[derive(Debug, Serialize)]
pub struct EvalReport {
    /// Which set.
    pub set: String,
    /// Its cases, alert and clean.
    pub cases: usize,
    /// Cases that should raise an alert.
    pub alert_cases: usize,
    /// Cases that should not.
    pub clean_cases: usize,
    /// Rules of the library.
    pub rules: usize,
    /// Keywords of the library.
    pub keywords: usize,
    /// What it was measured against.
    pub targets: Targets,
    /// The scanner.
    pub engine: FilterReport,
    /// A plain substring filter over the library's raw keywords, on `prev` + `text`.
    pub baseline: FilterReport,
    /// Whether the engine met every target.
    pub passed: bool,
    /// Each target the engine missed.
    pub failures: Vec<String>,
}

/// The quality targets a report was measured against.
#[derive(Debug, Serialize)]
pub struct Targets {
    pub recall: f64,
    pub fpr: f64,
    pub min_group_cases: usize,
}

/// Runs `library` (and the plain substring filter of its keywords) over `cases`.
pub fn evaluate(library: &RuleLibrary, cases: &[LabeledCase], set: String) -> EvalReport {
    evaluate_with(library, cases, set, MIN_GROUP_CASES, |input| {
        library.scan(input)
    })
}

/// Runs both stages ([`Detector`]) over `cases`, checked per group of at least `min_group`.
pub fn evaluate_detector(
    detector: &Detector<'_>,
    cases: &[LabeledCase],
    set: String,
    min_group: usize,
) -> EvalReport {
    evaluate_with(detector.rules, cases, set, min_group, |input| {
        detector.scan(input)
    })
}

fn evaluate_with(
    library: &RuleLibrary,
    cases: &[LabeledCase],
    set: String,
    min_group: usize,
    scan: impl Fn(&ScanInput<'_>) -> super::ScanResult,
) -> EvalReport {
    let keywords: Vec<(&str, &str)> = library
        .keywords()
        .into_iter()
        .filter(|(_, _, keyword)| !keyword.is_empty())
        .map(|(_, category, keyword)| (category, keyword))
        .collect();
    let mut engine = FilterTally::default();
    let mut baseline = FilterTally::default();
    for case in cases {
        let result = scan(&case.input());
        engine.add(case, result.alert().map(|hit| hit.category.as_str()));
        let joined = format!("{}{}", case.prev.as_deref().unwrap_or(""), case.text);
        let substring = keywords
            .iter()
            .find(|(_, keyword)| joined.contains(keyword))
            .map(|(category, _)| *category);
        baseline.add(case, substring);
    }
    let engine = engine.report();
    let failures = failures(&engine, min_group);
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
            min_group_cases: min_group,
        },
        passed: failures.is_empty(),
        failures,
        engine,
        baseline: baseline.report(),
    }
}

/// Every target missed: overall (whatever its size), then each category and technique with
/// enough cases.
fn failures(report: &FilterReport, min_group: usize) -> Vec<String> {
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
    let groups = [
        ("category", &report.per_category),
        ("technique", &report.per_technique),
        ("family", &report.per_family),
        ("author", &report.per_author),
    ];
    for (kind, scores) in groups {
        for (name, score) in scores {
            check(&format!("{kind} {name}"), score, min_group);
        }
    }
    failures
}

/// `x` as a percentage with one decimal (`—` for none).
pub fn percent(x: Option<f64>) -> String {
    x.map_or_else(|| "—".to_owned(), |x| format!("{:.1}%", x * 100.0))
}

/// The report as `scrm rules eval` prints it.
pub fn write_eval<W: Write>(out: &mut W, report: &EvalReport) -> io::Result<()> {
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
        report.targets.min_group_cases,
        report.targets.min_group_cases
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
    for (title, groups) in [
        ("按表达方式 (per family)", &report.engine.per_family),
        ("按作者 (per author)", &report.engine.per_author),
    ] {
        if groups.is_empty() {
            continue;
        }
        writeln!(out, "{title}")?;
        for (name, score) in groups {
            row(out, &format!("  {name}"), score, None)?;
        }
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
    fn the_bundled_set_parses() {
        let cases = parse_labeled_set(BUNDLED_SET).unwrap();
        assert!(cases.len() >= 400, "{} cases", cases.len());
        assert_eq!(bundled_cases().len(), cases.len());
    }

    #[test]
    fn the_bundled_library_passes_and_an_empty_one_finds_nothing() {
        let report = evaluate_bundled(&RuleLibrary::default_library());
        assert!(report.passed, "{:?}", report.failures);
        let recall = report.engine.overall.recall.unwrap();
        assert!(recall >= TARGET_RECALL, "{recall}");
        let empty = evaluate_bundled(&RuleLibrary::from_toml("").unwrap());
        assert_eq!(empty.engine.overall.recall, Some(0.0));
        assert_eq!(empty.engine.overall.fpr, Some(0.0));
        assert!(!empty.passed);
    }
}
