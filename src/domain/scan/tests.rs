//! Engine tests: evasions, look-alikes, spans, bad input, and the labeled set's quality targets.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{RuleLibrary, ScanInput, Sender, Severity};

fn staff(text: &str) -> ScanInput<'_> {
    ScanInput {
        text,
        prev: None,
        context: None,
        sender: Sender::Staff,
        msg_type: None,
    }
}

fn top(lib: &RuleLibrary, input: &ScanInput<'_>) -> Option<(String, Vec<(usize, usize)>)> {
    lib.scan(input)
        .alert()
        .map(|h| (h.category.clone(), h.spans.clone()))
}

fn category(text: &str) -> Option<String> {
    top(&RuleLibrary::default_library(), &staff(text)).map(|(c, _)| c)
}

#[test]
fn long_order_numbers_are_not_bank_cards() {
    // 4111111111111111 passes Luhn.
    assert_eq!(category("您的订单号 4111111111111111 已发货"), None);
    assert_eq!(category("快递单号是4111111111111111"), None);
    assert_eq!(
        category("转到这个卡号 4111111111111111").as_deref(),
        Some("private_payment")
    );
}

#[test]
fn default_library_compiles() {
    let lib = RuleLibrary::from_toml(include_str!("../../../fixtures/rules/default.toml"));
    assert!(lib.is_ok(), "{:?}", lib.err());
    assert!(RuleLibrary::default_library().len() >= 6);
}

#[test]
fn every_evasion_of_the_issue_is_caught() {
    let cases = [
        ("私 下 转 账给我", "private_payment"),
        ("维修费私下轉賬给师傅", "private_payment"),
        ("加我薇信聊", "contact_leak"),
        ("加我V X", "contact_leak"),
        ("sx转账给我就行", "private_payment"),
        ("打我电话一三八一二三四五六七八", "contact_leak"),
        ("私\u{200B}下\u{200B}转\u{200B}账", "private_payment"),
        ("私下ｚｈｕａｎｚｈａｎｇ", "private_payment"),
        ("私下转账", "private_payment"),
        ("私😀下🙏转❤️账", "private_payment"),
        ("加我微xin", "contact_leak"),
        ("回🔥扣按老规矩给你", "kickback"),
        ("这单飞，单给同行", "off_book_order"),
    ];
    for (text, want) in cases {
        assert_eq!(category(text).as_deref(), Some(want), "{text}");
    }
}

#[test]
fn innocent_look_alikes_do_not_fire() {
    for text in [
        "我们不接受私下转账",
        "请转到公司对公账户",
        "公司严禁员工私下转账收款，您放心",
        "飞行时间大概两个小时",
        "thanks xiaoming, see you",
        "我们一起两个人去",
        "订单号 20261202138001380，请妥善保存",
        "",
    ] {
        assert_eq!(category(text), None, "{text}");
    }
}

#[test]
fn phrase_split_across_messages_matches_once() {
    let lib = RuleLibrary::default_library();
    let input = ScanInput {
        text: "转账给我",
        prev: Some("我们私下"),
        context: None,
        sender: Sender::Staff,
        msg_type: None,
    };
    let result = lib.scan(&input);
    let hit = result.alert();
    assert!(
        hit.is_some_and(|h| h.across_messages && h.spans == vec![(0, 2)]),
        "{result:?}"
    );
    // The whole phrase inside prev is not reported again.
    let input = ScanInput {
        text: "好的",
        prev: Some("私下转账给我"),
        context: None,
        sender: Sender::Staff,
        msg_type: None,
    };
    assert!(lib.scan(&input).hits.is_empty());
}

#[test]
fn spans_map_back_to_the_original_text() {
    let lib = RuleLibrary::default_library();
    // 私 下 转 账: chars 2..9 of "好的私 下 转 账"
    let got = top(&lib, &staff("好的私 下 转 账"));
    assert_eq!(got, Some(("private_payment".to_owned(), vec![(2, 9)])));
    let got = top(&lib, &staff("私\u{200B}下转账"));
    assert_eq!(got.map(|g| g.1), Some(vec![(0, 5)]));
    // A mobile number written with spaces and Chinese numerals.
    let got = top(&lib, &staff("号码：一三八 1234 5678，谢谢"));
    assert_eq!(got, Some(("contact_leak".to_owned(), vec![(3, 16)])));
    // An email after an Alipay cue.
    let got = top(&lib, &staff("支付宝账号 abc.d@163.com"));
    assert_eq!(got, Some(("private_payment".to_owned(), vec![(0, 19)])));
}

#[test]
fn hits_are_sorted_most_severe_first_one_per_rule() {
    let lib = RuleLibrary::default_library();
    let result = lib.scan(&staff("回扣私下转我，加我微信，私下转账"));
    let severities: Vec<Severity> = result.hits.iter().map(|h| h.severity).collect();
    let mut sorted = severities.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(severities, sorted);
    assert_eq!(
        result.hits.first().map(|h| h.category.as_str()),
        Some("kickback")
    );
    let ids: Vec<&str> = result.hits.iter().map(|h| h.rule_id.as_str()).collect();
    let mut dedup = ids.clone();
    dedup.dedup();
    assert_eq!(ids, dedup);
    let pp = result.hits.iter().find(|h| h.rule_id == "private_transfer");
    assert_eq!(pp.map(|h| h.spans.clone()), Some(vec![(2, 6), (12, 16)]));
}

#[test]
fn message_types_fire_without_text() {
    let lib = RuleLibrary::default_library();
    let input = ScanInput {
        text: "",
        prev: None,
        context: None,
        sender: Sender::Customer,
        msg_type: Some("external_redpacket"),
    };
    let result = lib.scan(&input);
    assert_eq!(
        result.alert().map(|h| (h.rule_id.as_str(), h.spans.len())),
        Some(("payment_message", 0))
    );
}

#[test]
fn explain_names_the_allow_phrase() {
    let lib = RuleLibrary::default_library();
    let e = lib.explain(&staff("我们不接受私下转账，请走公司对公账户"));
    assert!(e.hits.is_empty(), "{e:?}");
    assert!(e.normalized.contains("私下转账"));
    assert!(
        e.allowed
            .iter()
            .any(|(rule, what, _)| rule == "private_transfer" && what == "私下转账"),
        "{e:?}"
    );
}

#[test]
fn huge_message_is_scanned_in_bounded_time() {
    let lib = RuleLibrary::default_library();
    let unit = "您好，这个方案包含三年免费升级，1 3 8 私 下 😀 ";
    let text: String = unit.repeat(1_000_000 / unit.len() + 1);
    assert!(text.len() >= 1_000_000);
    let start = Instant::now();
    let result = lib.scan(&staff(&text));
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "took {:?}",
        start.elapsed()
    );
    assert!(result.hits.len() <= lib.len());
    let digits = "1".repeat(1_000_000);
    assert!(lib.scan(&staff(&digits)).hits.is_empty());
}

#[test]
fn bad_regex_is_refused_naming_rule_and_field() {
    let bad = "[[rule]]\nid = \"r1\"\nname = \"x\"\ncategory = \"c\"\nregex = [\"(unclosed\"]\n";
    let err = RuleLibrary::from_toml(bad).err();
    assert_eq!(
        err.as_ref().map(|e| (e.rule.as_str(), e.field.as_str())),
        Some(("r1", "regex")),
        "{err:?}"
    );
    let long = format!(
        "[[rule]]\nid = \"r2\"\nname = \"x\"\ncategory = \"c\"\nregex = [\"{}\"]\n",
        "a".repeat(600)
    );
    let err = RuleLibrary::from_toml(&long).err();
    assert!(
        err.as_ref()
            .is_some_and(|e| e.rule == "r2" && e.field == "regex" && e.reason.contains("过长")),
        "{err:?}"
    );
    let huge =
        "[[rule]]\nid = \"r3\"\nname = \"x\"\ncategory = \"c\"\nregex = [\"(\\\\w{100}){100}\"]\n";
    let err = RuleLibrary::from_toml(huge).err();
    assert!(
        err.as_ref()
            .is_some_and(|e| e.rule == "r3" && e.field == "regex"),
        "{err:?}"
    );
}

#[test]
fn a_good_regex_matches_normalized_text() {
    let lib = RuleLibrary::from_toml(
        "[[rule]]\nid = \"r\"\nname = \"x\"\ncategory = \"c\"\nregex = [\"私下.{0,2}转\"]\n",
    );
    let lib = lib.ok();
    let hit = lib.as_ref().and_then(|l| top(l, &staff("私 下 快 转")));
    assert_eq!(hit, Some(("c".to_owned(), vec![(0, 7)])));
}

#[test]
fn unknown_fields_and_bad_values_are_refused() {
    for (toml, field) in [
        (
            "[[rule]]\nid = \"a\"\nname = \"x\"\ncategory = \"c\"\nkeywords = [\"k\"]\ncolour = 1\n",
            "colour",
        ),
        (
            "[[rule]]\nid = \"a\"\nname = \"x\"\ncategory = \"c\"\npatterns = [\"iban\"]\n",
            "patterns",
        ),
        (
            "[[rule]]\nid = \"a\"\nname = \"x\"\ncategory = \"c\"\nkeywords = [\"！！\"]\n",
            "keywords",
        ),
        (
            "[[rule]]\nid = \"a\"\nname = \"x\"\ncategory = \"c\"\n",
            "keywords",
        ),
        (
            "[[rule]]\nid = \"a\"\nname = \"x\"\ncategory = \"c\"\nkeywords = [\"k\"]\nseverity = \"huge\"\n",
            "severity",
        ),
    ] {
        let err = RuleLibrary::from_toml(toml).err();
        assert!(
            err.as_ref()
                .is_some_and(|e| e.field.contains(field) || e.reason.contains(field)),
            "{toml}: {err:?}"
        );
    }
    let dup = "[[rule]]\nid = \"a\"\nname = \"x\"\ncategory = \"c\"\nkeywords = [\"k\"]\n\
               [[rule]]\nid = \"a\"\nname = \"y\"\ncategory = \"c\"\nkeywords = [\"j\"]\n";
    assert_eq!(
        RuleLibrary::from_toml(dup).err().map(|e| e.field),
        Some("id".to_owned())
    );
}

#[test]
fn scope_fields_are_exposed() {
    let lib = RuleLibrary::from_toml(
        "[[rule]]\nid = \"a\"\nname = \"x\"\ncategory = \"c\"\nkeywords = [\"k\"]\n\
         departments = [\"销售部\"]\nstaff = [\"zhangsan\"]\ncustomer_tags = [\"vip\"]\nrecipients = [\"lisi\"]\n",
    )
    .ok();
    let rule = lib.as_ref().and_then(|l| l.rules().first());
    assert_eq!(
        rule.map(|r| r.departments.clone()),
        Some(vec!["销售部".to_owned()])
    );
    assert_eq!(
        rule.map(|r| r.recipients.clone()),
        Some(vec!["lisi".to_owned()])
    );
    assert_eq!(rule.map(|r| r.senders.len()), Some(2));
}

/// Realistic generated keywords: `count` distinct 2–6 char Chinese phrases.
pub fn generated_keywords(count: usize) -> Vec<String> {
    const CHARS: &str = "账户款项转移收付汇票据客户资料订单合同价格优惠返利佣金渠道代理私人内部外部员工经理主管老板同行竞品报价发票税点现金卡号密码验证码二维码链接群聊好友";
    let chars: Vec<char> = CHARS.chars().collect();
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut seen = std::collections::HashSet::new();
    while seen.len() < count {
        let len = 2 + usize::try_from(next() % 5).unwrap_or(0);
        let kw: String = (0..len)
            .map(|_| {
                chars
                    .get(usize::try_from(next() % chars.len() as u64).unwrap_or(0))
                    .copied()
                    .unwrap_or('账')
            })
            .collect();
        seen.insert(kw);
    }
    let mut v: Vec<String> = seen.into_iter().collect();
    v.sort();
    v
}

#[test]
fn five_thousand_rules_compile_fast() {
    let kws = generated_keywords(15_000);
    let mut toml = String::new();
    for (i, chunk) in kws.chunks(3).enumerate().take(5_000) {
        let list: Vec<String> = chunk.iter().map(|k| format!("\"{k}\"")).collect();
        toml.push_str(&format!(
            "[[rule]]\nid = \"g{i}\"\nname = \"规则{i}\"\ncategory = \"c{}\"\nkeywords = [{}]\npatterns = [\"mobile\", \"bank_card\", \"wechat_id\", \"qq\", \"alipay\"]\n",
            i % 7,
            list.join(", ")
        ));
    }
    let start = Instant::now();
    let lib = RuleLibrary::from_toml(&toml);
    let took = start.elapsed();
    assert!(
        lib.as_ref().is_ok_and(|l| l.len() == 5_000),
        "{:?}",
        lib.err()
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let lib = lib.ok();
    let kw = kws.first().cloned().unwrap_or_default();
    assert!(lib.is_some_and(|l| !l.scan(&staff(&format!("您好{kw}"))).hits.is_empty()));
}

#[derive(serde::Deserialize)]
struct Labeled {
    id: String,
    text: String,
    prev: Option<String>,
    sender: Sender,
    alert: bool,
    category: Option<String>,
    technique: String,
}

/// Recall ≥ 95 % per category and per technique, false-positive rate ≤ 3 % per category and technique.
#[test]
fn labeled_set_meets_quality_targets() {
    let lib = RuleLibrary::default_library();
    let data = include_str!("../../../fixtures/rules/labeled.jsonl");
    // group → (alerts, caught, cleans, false positives)
    let mut stats: BTreeMap<String, (u32, u32, u32, u32)> = BTreeMap::new();
    let mut misses = Vec::new();
    for line in data.lines().filter(|l| !l.trim().is_empty()) {
        let case: Labeled = match serde_json::from_str(line) {
            Ok(c) => c,
            Err(e) => panic!("bad labeled line {line}: {e}"),
        };
        let input = ScanInput {
            text: &case.text,
            prev: case.prev.as_deref(),
            context: None,
            sender: case.sender,
            msg_type: None,
        };
        let got = lib.scan(&input).alert().map(|h| h.category.clone());
        let groups = [
            format!(
                "category {}",
                case.category.clone().unwrap_or_else(|| "none".to_owned())
            ),
            format!("technique {}", case.technique),
        ];
        for g in groups {
            let e = stats.entry(g).or_default();
            if case.alert {
                e.0 += 1;
                if got.is_some() && got == case.category {
                    e.1 += 1;
                }
            } else {
                e.2 += 1;
                if got.is_some() {
                    e.3 += 1;
                }
            }
        }
        let ok = if case.alert {
            got.is_some() && got == case.category
        } else {
            got.is_none()
        };
        if !ok {
            misses.push(format!(
                "{} alert={} got={got:?} | {:?} | {}",
                case.id, case.alert, case.prev, case.text
            ));
        }
    }
    let mut failed = Vec::new();
    for (group, (alerts, caught, cleans, fps)) in &stats {
        let recall = if *alerts > 0 {
            f64::from(*caught) / f64::from(*alerts)
        } else {
            1.0
        };
        let fpr = if *cleans > 0 {
            f64::from(*fps) / f64::from(*cleans)
        } else {
            0.0
        };
        println!(
            "{group:<28} recall {caught:>3}/{alerts:<3} = {recall:.3}  fpr {fps:>2}/{cleans:<3} = {fpr:.3}"
        );
        if recall < 0.95 || fpr > 0.03 {
            failed.push(group.clone());
        }
    }
    for m in &misses {
        println!("MISS {m}");
    }
    assert!(failed.is_empty(), "below target: {failed:?}");
}
