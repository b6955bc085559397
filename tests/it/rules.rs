#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly"
)]
//! `scrm rules test|check|eval`, run as the real binary: the JSON-lines interface other tools
//! script against, its exit codes, custom and broken libraries, and the quality targets on the
//! bundled labeled set.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

/// What a `scrm` process printed.
struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs the real `scrm` binary in `dir` with `args`, feeding `stdin` (no config from the
/// environment).
fn scrm(dir: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_scrm"))
        .args(args)
        .current_dir(dir)
        .env_remove("SCRM_CONFIG")
        .env_remove("SCRM_DATABASE_URL")
        .env("SCRM_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run scrm");
    let mut pipe = child.stdin.take().expect("stdin");
    let input = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        // The process may exit before reading everything (a usage error): that is its answer.
        let _ = pipe.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait for scrm");
    writer.join().expect("stdin writer");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

/// The chars `[start, end)` of `text`.
fn chars(text: &str, start: u64, end: u64) -> String {
    let (start, end) = (
        usize::try_from(start).unwrap(),
        usize::try_from(end).unwrap(),
    );
    text.chars().skip(start).take(end - start).collect()
}

fn spans(decision: &Value) -> Vec<(u64, u64)> {
    decision["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .map(|s| (s[0].as_u64().unwrap(), s[1].as_u64().unwrap()))
        .collect()
}

/// A small library of one's own, in the format of `fixtures/rules/default.toml`.
const DEMO_LIBRARY: &str = r#"
[[rule]]
id = "demo_secret"
name = "暗号（测试）"
category = "demo"
severity = "low"
senders = ["staff"]
keywords = ["暗号"]
allow = ["不是暗号"]
"#;

#[test]
fn test_prints_one_decision_per_line_and_reports_bad_lines_by_number() {
    let dir = tempfile::tempdir().unwrap();
    let evasion = "这单私 下 转 账给我吧";
    let mut input = Vec::new();
    let line = |input: &mut Vec<u8>, v: Value| {
        input.extend_from_slice(v.to_string().as_bytes());
        input.push(b'\n');
    };
    line(
        &mut input,
        json!({"id": "evasion", "text": evasion, "prev": null, "sender": "staff"}),
    );
    line(
        &mut input,
        json!({"id": "lookalike", "text": "我们不接受私下转账，请走公司对公账户"}),
    );
    input.extend_from_slice(b"{\"id\": \"broken\", \"text\": \n");
    input.extend_from_slice(b"{\"id\": \"latin1\", \"text\": \"caf\xe9\"}\n");
    line(&mut input, json!({"id": "empty", "text": ""}));
    line(
        &mut input,
        json!({"id": "after", "text": "以后加我私人微信聊", "sender": "staff"}),
    );
    line(
        &mut input,
        json!({"id": 42, "text": "好的，我下午把合同发您"}),
    );
    std::fs::write(dir.path().join("in.jsonl"), &input).unwrap();

    let out = scrm(dir.path(), &["rules", "test", "--input", "in.jsonl"], b"");

    assert_eq!(
        out.code, 1,
        "a malformed line makes the exit code 1; stderr: {}",
        out.stderr
    );
    let got = lines(&out.stdout);
    assert_eq!(
        got.len(),
        7,
        "one line per input line, in order: {}",
        out.stdout
    );

    assert_eq!(got[0]["id"], "evasion");
    assert_eq!(got[0]["alert"], true, "{}", got[0]);
    assert_eq!(got[0]["category"], "private_payment");
    assert!(got[0]["rule"].is_string(), "{}", got[0]);
    assert_eq!(
        spans(&got[0]),
        vec![(2, 9)],
        "the span covers 私 … 账 in the original text"
    );
    assert_eq!(chars(evasion, 2, 9), "私 下 转 账");

    assert_eq!(
        got[1],
        json!({"id": "lookalike", "alert": false, "category": null, "rule": null, "spans": []}),
        "a refusal that names the words is not an alert"
    );

    assert_eq!(got[2]["id"], Value::Null);
    let error = got[2]["error"].as_str().expect("an error line");
    assert!(error.starts_with("line 3: "), "{error}");

    assert_eq!(
        got[3]["id"], "latin1",
        "the id is recovered from an invalid UTF-8 line"
    );
    let error = got[3]["error"].as_str().expect("an error line");
    assert!(
        error.starts_with("line 4: ") && error.contains("UTF-8"),
        "{error}"
    );

    assert_eq!(
        got[4],
        json!({"id": "empty", "alert": false, "category": null, "rule": null, "spans": []})
    );

    assert_eq!(
        got[5]["id"], "after",
        "lines after bad ones are still scanned"
    );
    assert_eq!(got[5]["alert"], true, "{}", got[5]);
    assert_eq!(got[5]["category"], "contact_leak");

    assert_eq!(got[6]["id"], 42, "the id is echoed as given");
    assert_eq!(got[6]["alert"], false);
}

#[test]
fn test_reads_stdin_and_matches_across_the_previous_message() {
    let dir = tempfile::tempdir().unwrap();
    let input = [
        json!({"id": "split", "prev": "这单你可以私下", "text": "转账给我，便宜两百"}),
        json!({"id": "zw", "text": "加我\u{200b}薇\u{200b}信聊"}),
    ]
    .iter()
    .map(|v| format!("{v}\n"))
    .collect::<String>();

    let out = scrm(
        dir.path(),
        &["rules", "test", "--input", "-"],
        input.as_bytes(),
    );

    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    let got = lines(&out.stdout);
    assert_eq!(got.len(), 2, "{}", out.stdout);
    assert_eq!(got[0]["alert"], true, "{}", got[0]);
    assert_eq!(got[0]["category"], "private_payment");
    for (start, end) in spans(&got[0]) {
        assert!(
            end <= 9,
            "spans index `text`, not `prev` + `text`: {}",
            got[0]
        );
        assert!(start < end);
    }
    assert_eq!(
        spans(&got[0])[0].0,
        0,
        "the part in `text` starts at its first char"
    );
    assert_eq!(got[1]["alert"], true, "{}", got[1]);
    assert_eq!(got[1]["category"], "contact_leak");
}

#[test]
fn test_handles_a_one_megabyte_message() {
    let dir = tempfile::tempdir().unwrap();
    let filler = "您好，这是正常的课程咨询内容。".repeat(25_000);
    let text = format!("{filler}尾款私下转账给我");
    assert!(text.len() > 1_000_000);
    let start = u64::try_from(filler.chars().count()).unwrap() + 2;
    let input = format!(
        "{}\n{}\n",
        json!({"id": "huge", "text": text}),
        json!({"id": "small", "text": "好的"})
    );
    std::fs::write(dir.path().join("huge.jsonl"), input).unwrap();

    let out = scrm(dir.path(), &["rules", "test", "--input", "huge.jsonl"], b"");

    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    let got = lines(&out.stdout);
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[0]["alert"],
        true,
        "{}",
        out.stdout.chars().take(300).collect::<String>()
    );
    assert_eq!(spans(&got[0]), vec![(start, start + 4)]);
    assert_eq!(got[1]["alert"], false);
}

#[test]
fn test_with_a_custom_library_uses_only_its_rules() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("demo.toml"), DEMO_LIBRARY).unwrap();
    let input = [
        json!({"id": "hit", "text": "今天的暗 号是蓝色"}),
        json!({"id": "default-rule", "text": "这单私下转账给我"}),
        json!({"id": "allowed", "text": "这不是暗号，是门牌号"}),
        json!({"id": "customer", "text": "今天的暗号是蓝色", "sender": "customer"}),
    ]
    .iter()
    .map(|v| format!("{v}\n"))
    .collect::<String>();
    std::fs::write(dir.path().join("in.jsonl"), input).unwrap();

    let out = scrm(
        dir.path(),
        &[
            "rules",
            "test",
            "--input",
            "in.jsonl",
            "--rules",
            "demo.toml",
        ],
        b"",
    );

    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    let got = lines(&out.stdout);
    assert_eq!(
        got[0],
        json!({"id": "hit", "alert": true, "category": "demo", "rule": "demo_secret", "spans": [[3, 6]]})
    );
    assert_eq!(
        got[1]["alert"], false,
        "the default library is not loaded: {}",
        got[1]
    );
    assert_eq!(
        got[2]["alert"], false,
        "an allow phrase cancels the hit: {}",
        got[2]
    );
    assert_eq!(
        got[3]["alert"], false,
        "the rule is for staff only: {}",
        got[3]
    );
}

#[test]
fn a_broken_library_exits_2_naming_the_rule_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let bad_regex = format!(
        "{DEMO_LIBRARY}\n[[rule]]\nid = \"broken_regex\"\nname = \"坏正则\"\ncategory = \"demo\"\nregex = [\"(unclosed\"]\n"
    );
    std::fs::write(dir.path().join("regex.toml"), bad_regex).unwrap();
    std::fs::write(
        dir.path().join("pattern.toml"),
        "[[rule]]\nid = \"mind_reader\"\nname = \"读心\"\ncategory = \"demo\"\npatterns = [\"telepathy\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("in.jsonl"),
        "{\"id\":1,\"text\":\"你好\"}\n",
    )
    .unwrap();

    for (file, rule, field) in [
        ("regex.toml", "broken_regex", "regex"),
        ("pattern.toml", "mind_reader", "patterns"),
    ] {
        let out = scrm(
            dir.path(),
            &["rules", "test", "--input", "in.jsonl", "--rules", file],
            b"",
        );
        assert_eq!(
            out.code, 2,
            "{file}: stdout {} stderr {}",
            out.stdout, out.stderr
        );
        assert!(
            out.stdout.is_empty(),
            "nothing is scanned with a broken library"
        );
        assert!(
            out.stderr.contains(rule) && out.stderr.contains(field),
            "{file}: the error names the rule and field: {}",
            out.stderr
        );
    }

    let out = scrm(
        dir.path(),
        &["rules", "check", "你好", "--rules", "missing.toml"],
        b"",
    );
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("missing.toml"), "{}", out.stderr);

    let out = scrm(
        dir.path(),
        &["rules", "test", "--input", "nowhere.jsonl"],
        b"",
    );
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("nowhere.jsonl"), "{}", out.stderr);
}

#[test]
fn check_explains_a_hit_and_a_clean_message() {
    let dir = tempfile::tempdir().unwrap();

    let out = scrm(dir.path(), &["rules", "check", "这单私.下.转.账给我"], b"");
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert!(out.stdout.contains("归一化 (normalized)"), "{}", out.stdout);
    assert!(out.stdout.contains("private_payment"), "{}", out.stdout);
    assert!(
        out.stdout.contains("这单【私.下.转.账】给我"),
        "the original text is highlighted: {}",
        out.stdout
    );
    assert!(out.stdout.contains("告警 ALERT"), "{}", out.stdout);

    let out = scrm(
        dir.path(),
        &[
            "rules",
            "check",
            "转账给我，便宜两百",
            "--prev",
            "这单你可以私下",
        ],
        b"",
    );
    assert_eq!(out.code, 0);
    assert!(
        out.stdout.contains("跨消息 (across messages)"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("【转账】给我"), "{}", out.stdout);

    let out = scrm(
        dir.path(),
        &["rules", "check", "我们不接受私下转账，请走公司对公账户"],
        b"",
    );
    assert_eq!(out.code, 0);
    assert!(out.stdout.contains("不告警 (no alert)"), "{}", out.stdout);

    let out = scrm(
        dir.path(),
        &["rules", "check", "你好", "--sender", "boss"],
        b"",
    );
    assert_eq!(out.code, 2, "an unknown sender is refused");
}

#[test]
fn eval_meets_the_quality_targets_on_the_bundled_set() {
    let dir = tempfile::tempdir().unwrap();
    let out = scrm(dir.path(), &["rules", "eval"], b"");
    assert!(
        out.code == 0 && out.stdout.contains("通过 PASS"),
        "recall ≥ 95 % and FPR ≤ 3 % overall, per category and per technique:\n{}{}",
        out.stdout,
        out.stderr
    );
}

#[test]
fn eval_json_has_every_group_and_a_weaker_substring_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let out = scrm(dir.path(), &["rules", "eval", "--json"], b"");
    assert!(out.code == 0 || out.code == 1, "stderr: {}", out.stderr);
    let report: Value = serde_json::from_str(&out.stdout).expect("one JSON object");

    // The bundled set itself: hundreds of cases, every category and technique well covered.
    let cases = report["cases"].as_u64().unwrap();
    let clean = report["clean_cases"].as_u64().unwrap();
    assert!(cases >= 400, "{cases} cases");
    assert!(
        clean * 10 >= cases * 4,
        "at least 40 % clean cases: {clean} of {cases}"
    );
    let engine = &report["engine"];
    for category in [
        "private_payment",
        "off_book_order",
        "contact_leak",
        "kickback",
        "poaching",
    ] {
        let score = &engine["per_category"][category];
        assert!(
            score["alert_cases"].as_u64().unwrap() >= 60,
            "{category}: {score}"
        );
        assert!(
            score["clean_cases"].as_u64().unwrap() >= 20,
            "{category}: {score}"
        );
        assert!(
            score["recall"].is_f64() && score["fpr"].is_f64(),
            "{category}: {score}"
        );
        assert!(score["category_accuracy"].is_f64(), "{category}: {score}");
    }
    for technique in [
        "plain",
        "spaces",
        "punctuation",
        "traditional",
        "homophone",
        "pinyin",
        "letters",
        "zero_width",
        "width",
        "numerals",
        "emoji",
        "split",
        "mixed",
    ] {
        let score = &engine["per_technique"][technique];
        assert!(
            score["alert_cases"].as_u64().unwrap() >= 10,
            "{technique}: {score}"
        );
        assert!(score["recall"].is_f64(), "{technique}: {score}");
    }
    for technique in ["clean", "clean_lookalike"] {
        let score = &engine["per_technique"][technique];
        assert!(
            score["clean_cases"].as_u64().unwrap() >= 40,
            "{technique}: {score}"
        );
        assert!(score["fpr"].is_f64(), "{technique}: {score}");
    }

    // The substring filter every SCRM ships scores far below the engine.
    let baseline = &report["baseline"];
    let recall = |r: &Value| r["overall"]["recall"].as_f64().unwrap();
    let fpr = |r: &Value| r["overall"]["fpr"].as_f64().unwrap();
    assert!(
        report["keywords"].as_u64().unwrap() > 0,
        "the baseline has keywords to match"
    );
    assert!(
        recall(baseline) + 0.3 < recall(engine),
        "baseline recall {} vs engine {}",
        recall(baseline),
        recall(engine)
    );
    assert!(
        fpr(baseline) > fpr(engine),
        "baseline FPR {} vs engine {}",
        fpr(baseline),
        fpr(engine)
    );
    assert_eq!(
        baseline["per_technique"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        engine["per_technique"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        "the baseline is reported per technique too"
    );
}

#[test]
fn eval_computes_the_figures_and_fails_below_target() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("demo.toml"), DEMO_LIBRARY).unwrap();
    let case = |id: &str, text: &str, alert: bool, technique: &str| {
        json!({"id": id, "text": text, "prev": null, "sender": "staff", "alert": alert,
               "category": if alert { Some("demo") } else { None }, "technique": technique})
        .to_string()
    };
    let set = [
        case("a1", "今天的暗号是蓝色", true, "plain"),
        case("a2", "今天的暗 号是蓝色", true, "spaces"),
        case("a3", "口令是蓝色", true, "plain"),
        case("c1", "暗号游戏很好玩", false, "clean"),
        case("c2", "今天天气不错", false, "clean"),
    ]
    .join("\n");
    std::fs::write(dir.path().join("set.jsonl"), set).unwrap();

    let out = scrm(
        dir.path(),
        &[
            "rules",
            "eval",
            "--set",
            "set.jsonl",
            "--rules",
            "demo.toml",
            "--json",
        ],
        b"",
    );

    assert_eq!(out.code, 1, "targets missed: exit 1; stderr {}", out.stderr);
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    let overall = &report["engine"]["overall"];
    assert_eq!(overall["alert_cases"], 3);
    assert_eq!(overall["detected"], 2);
    assert_eq!(overall["recall"], 0.6667);
    assert_eq!(overall["category_accuracy"], 1.0);
    assert_eq!(overall["false_positives"], 1);
    assert_eq!(overall["fpr"], 0.5);
    let techniques: BTreeMap<String, Value> =
        serde_json::from_value(report["engine"]["per_technique"].clone()).unwrap();
    assert_eq!(techniques["plain"]["recall"], 0.5);
    assert_eq!(techniques["spaces"]["recall"], 1.0);
    assert_eq!(techniques["clean"]["fpr"], 0.5);
    assert_eq!(report["engine"]["misses"], json!(["a3"]));
    assert_eq!(report["engine"]["false_positive_ids"], json!(["c1"]));
    let baseline = &report["baseline"]["overall"];
    assert_eq!(baseline["detected"], 1, "the substring filter misses 暗 号");
    assert_eq!(baseline["false_positives"], 1);
    assert_eq!(report["passed"], false);
    let failures = report["failures"].as_array().unwrap();
    assert!(
        failures
            .iter()
            .any(|f| f.as_str().unwrap().starts_with("overall: recall")),
        "{failures:?}"
    );

    let out = scrm(
        dir.path(),
        &[
            "rules",
            "eval",
            "--set",
            "set.jsonl",
            "--rules",
            "demo.toml",
        ],
        b"",
    );
    assert_eq!(out.code, 1);
    assert!(out.stdout.contains("未通过 FAIL"), "{}", out.stdout);
    assert!(
        out.stdout.contains("a3"),
        "misses are listed: {}",
        out.stdout
    );

    std::fs::write(dir.path().join("bad.jsonl"), "{\"id\": \"x\"}\n").unwrap();
    let out = scrm(dir.path(), &["rules", "eval", "--set", "bad.jsonl"], b"");
    assert_eq!(out.code, 2, "an unusable set: exit 2");
    assert!(out.stderr.contains("line 1"), "{}", out.stderr);
}

#[test]
fn test_reports_a_line_over_the_size_limit_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut input = b"{\"id\": \"giant\", \"text\": \"".to_vec();
    input.resize(input.len() + 17 * 1024 * 1024, b'a');
    input.extend_from_slice(b"\"}\n{\"id\": \"next\", \"text\": \"\xe5\xa5\xbd\xe7\x9a\x84\"}\n");
    std::fs::write(dir.path().join("giant.jsonl"), input).unwrap();

    let out = scrm(
        dir.path(),
        &["rules", "test", "--input", "giant.jsonl"],
        b"",
    );

    assert_eq!(out.code, 1, "stderr: {}", out.stderr);
    let got = lines(&out.stdout);
    assert_eq!(got.len(), 2, "{}", out.stdout);
    let error = got[0]["error"].as_str().expect("an error line");
    assert!(
        error.starts_with("line 1: ") && error.contains("limit"),
        "{error}"
    );
    assert_eq!(
        got[1],
        json!({"id": "next", "alert": false, "category": null, "rule": null, "spans": []})
    );
}
