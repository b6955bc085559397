//! `scrm rules test|check|eval|train`: the content scanner (both stages: rules and model) on a
//! file, on one message, on the labeled set and the corpus; and the model's training.
//!
//! None of these touch the database or the configuration: they run the scanner
//! ([`crate::domain::scan`]) on text. Exit codes are part of the interface other tools script against:
//! `test` 0 (every line read) / 1 (some line malformed); `check` 0; `eval` 0 (quality targets
//! met) / 1 (missed); all of them 2 when the rule library, the input or the set cannot be used.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};

use anyhow::Context as _;
use clap::Subcommand;
use serde::Serialize;
use serde_json::Value;

use crate::domain::scan::check::Check;
use crate::domain::scan::eval::{self, evaluate, evaluate_detector, parse_labeled_set, write_eval};
use crate::domain::scan::model::{self, TrainOptions};
use crate::domain::scan::{Detector, RuleLibrary, ScanInput, Sender};

/// Longer input lines are reported as errors instead of being held in memory.
const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// Exit code: the command ran and found nothing wrong with its input.
const EXIT_OK: i32 = 0;
/// Exit code: `test` read a malformed line, or `eval` missed a target.
const EXIT_FINDINGS: i32 = 1;
/// Exit code: the library, the input or the set cannot be used.
const EXIT_UNUSABLE: i32 = 2;

/// `scrm rules …`.
#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Scan JSON lines `{"id", "text", "prev", "context", "sender"}` and print one JSON line of the decision
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
        /// The other party's message this one answers (a customer's request): read by the model.
        #[arg(long)]
        context: Option<String>,
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
        /// Both stages (rules and the model) on the held-out part of the corpus
        /// (`fixtures/corpus`, authors the model never saw), checked per family and author.
        #[arg(long, conflicts_with = "set")]
        corpus: bool,
        /// Both stages on `--set` (default: the rules alone, as the console's gate runs them).
        #[arg(long)]
        detector: bool,
    },
    /// Train the model (the second stage) on the corpus's training authors and the bundled
    /// labeled set, and write the model file.
    Train {
        /// Where to write it.
        #[arg(long, default_value = "fixtures/rules/model.tsv")]
        out: String,
        /// Passes over the examples.
        #[arg(long, default_value_t = 20)]
        epochs: usize,
        /// The alert's score threshold.
        #[arg(long, default_value_t = crate::domain::scan::model::DEFAULT_THRESHOLD)]
        threshold: f32,
        /// L2 strength.
        #[arg(long, default_value_t = 3e-4)]
        l2: f32,
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
            context,
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
                context: context.as_deref(),
                sender,
                msg_type: msg_type.as_deref(),
            };
            let mut out = io::stdout().lock();
            Check::run(&library, input).write(&mut out)?;
            write_model_check(&mut out, &Detector::bundled(&library), &input)?;
            out.flush()?;
            Ok(EXIT_OK)
        }
        RulesCommand::Train {
            out,
            epochs,
            threshold,
            l2,
        } => train(&out, epochs, threshold, l2),
        RulesCommand::Eval {
            set,
            rules,
            json,
            corpus,
            detector,
        } => {
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
                    eval::BUNDLED_SET_NAME.to_owned(),
                    eval::BUNDLED_SET.to_owned(),
                ),
            };
            let cases = match parse_labeled_set(&text) {
                Ok(cases) => cases,
                Err(e) => {
                    eprintln!("错误 (error): 标注集无效 (invalid labeled set) {name}: {e}");
                    return Ok(EXIT_UNUSABLE);
                }
            };
            let both = Detector::bundled(&library);
            let report = if corpus {
                evaluate_detector(
                    &both,
                    &eval::held_out_cases(),
                    format!(
                        "fixtures/corpus, held-out authors {}",
                        eval::HELD_OUT_AUTHORS.join(", ")
                    ),
                    eval::MIN_CORPUS_GROUP_CASES,
                )
            } else if detector {
                evaluate_detector(&both, &cases, name, eval::MIN_GROUP_CASES)
            } else {
                evaluate(&library, &cases, name)
            };
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

/// The model's part of `scrm rules check`: its score, the decision of both stages, and the
/// features that drove it.
fn write_model_check<W: Write>(
    out: &mut W,
    detector: &Detector<'_>,
    input: &ScanInput<'_>,
) -> io::Result<()> {
    let decision = detector.decide(input);
    writeln!(out)?;
    writeln!(
        out,
        "模型 (model): 得分 (score) {:.1}% / 阈值 (threshold) {:.1}% → {}，类别 (category) {}",
        decision.verdict.score * 100.0,
        detector.model.threshold * 100.0,
        if decision.verdict.alert {
            "告警 (alert)"
        } else {
            "不告警 (no alert)"
        },
        decision.verdict.category
    )?;
    for d in detector.drivers(input, 8) {
        writeln!(out, "  {:+.2}  {}", d.weight, d.feature)?;
    }
    let verdict = match (decision.rule_hits, decision.result.alert()) {
        (0, None) => "不告警 (no alert)".to_owned(),
        (_, None) => "规则命中被模型否决 (the model overrules the rules: a warning, refusal or training text)".to_owned(),
        (0, Some(hit)) => format!("告警：仅模型发现 (alert, found by the model only): {}", hit.category),
        (_, Some(hit)) => format!("告警 (alert): {} ({})", hit.category, hit.rule_id),
    };
    writeln!(out, "两级结论 (both stages): {verdict}")
}

/// `scrm rules train`: fits the model on the corpus's training authors and the bundled labeled
/// set, writes it, and prints its figures on the held-out authors.
fn train(out: &str, epochs: usize, threshold: f32, l2: f32) -> anyhow::Result<i32> {
    let library = RuleLibrary::default_library();
    let options = TrainOptions {
        epochs,
        l2,
        ..TrainOptions::default()
    };
    let (text, examples, weights) = model::train_file(&library, options, threshold);
    std::fs::write(out, &text).with_context(|| format!("writing {out}"))?;
    let trained = model::Model::parse(&text)?;
    let detector = Detector {
        rules: &library,
        model: &trained,
    };
    let report = evaluate_detector(
        &detector,
        &eval::held_out_cases(),
        "held-out authors".to_owned(),
        eval::MIN_CORPUS_GROUP_CASES,
    );
    println!("写入 (wrote) {out}: {weights} 个特征 (features) from {examples} examples");
    let mut stdout = io::stdout().lock();
    write_eval(&mut stdout, &report)?;
    Ok(EXIT_OK)
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
    context: Option<&'a str>,
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
    let result = Detector::bundled(library).scan(&ScanInput {
        text: input.text,
        prev: input.prev,
        context: input.context,
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
    let optional = |key: &str| match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(format!("\"{key}\" must be a string or null")),
    };
    let prev = optional("prev")?;
    let context = optional("context")?;
    let sender = match map.get("sender") {
        None | Some(Value::Null) => Sender::Staff,
        Some(Value::String(s)) => parse_sender(s)
            .ok_or_else(|| format!("\"sender\" must be \"staff\" or \"customer\", got {s:?}"))?,
        Some(_) => return Err("\"sender\" must be \"staff\" or \"customer\"".to_owned()),
    };
    let msg_type = optional("msg_type")?;
    static NULL: Value = Value::Null;
    Ok(InputLine {
        id: map.get("id").unwrap_or(&NULL),
        text,
        prev,
        context,
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
