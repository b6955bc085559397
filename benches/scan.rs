#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly"
)]
//! The content scanner on one core (issue 6): 5,000 generated keyword rules plus the default
//! library (which turns every pattern on), over 100-char sales-chat messages (most innocent, some hits).
//!
//! Both stages are measured: the rules alone, then rules + the model (issue 22: ≥ 100,000
//! messages/s with the second stage on).
//!
//! Run pinned: `taskset -c 1 cargo bench --bench scan`. Prints messages/s per round and the median.

use std::hint::black_box;
use std::time::Instant;

use scrm::domain::scan::{Detector, RuleLibrary, ScanInput, Sender};

const RULES: usize = 5_000;
const MESSAGES: usize = 20_000;
const ROUNDS: usize = 5;
const TARGET_CHARS: usize = 100;

/// Innocent sales-chat sentences the messages are made of.
const SENTENCES: &[&str] = &[
    "您好，请问今天下午方便来看房吗？",
    "这款车现在有置换补贴，旧车可以抵五千。",
    "孩子这周的作业完成得很好，继续加油！",
    "合同我发您邮箱了，看完有问题随时问我。",
    "您的保单已经生效，电子保单在App里可以下载。",
    "明天上午十点有一节试听课，给您留个位置？",
    "报价单已经更新了，第二页是实施周期。",
    "周末门店人比较多，建议您提前预约😊",
    "这个户型南北通透，采光特别好，楼层也合适。",
    "好的，我跟经理申请一下看能不能再优惠。",
    "系统演示约在周四下午两点可以吗？",
    "我们的理财产品风险等级是R2，比较稳健。",
    "您反馈的bug研发已经修复了，今晚发版。",
    "公司账户信息：开户行招商银行上海分行。",
    "您的订单号 202612020001387 已经发货了。",
    "客服热线 400-820-1234，24小时有人接听。",
    "我们不接受私下转账，请走公司对公账户。",
    "这套课程原价13800元，活动价9800。",
];

/// Sentences that should raise an alert.
const HITS: &[&str] = &[
    "钱私 下 转 账给我就行。",
    "加我薇信，内部价我私下发你。",
    "晚上找我打这个一三八一二三四五六七八。",
    "这单飞🧧单给同行那边做。",
    "回扣按老规矩给你。",
];

/// `count` distinct 2–6 char Chinese keywords (deterministic).
fn generated_keywords(count: usize) -> Vec<String> {
    // Common chars of sales and finance vocabulary (so random 2-char words rarely occur in chat).
    const CHARS: &str = "账户款项转移收付汇票据订单合同价格优惠返利佣金渠道代理私人内部外部员工经理主管老板同行竞品报价发票税点现金卡号密码验证码链接群聊好友贷息押租赁担保抵债券股基金期货汇率盈亏损赔偿违约押金押款垫资套现洗钱刷单虚开走账挂靠串标围标陪标贿赂索贿赃款黑户白条高利息差暗扣明扣私扣截留挪用侵占冒领伪造变造篡改泄露倒卖窃取诱导欺诈虚假夸大承诺保本保息兜底刚兑返还退佣分润拆单拼单代签代付代收代缴代办代持代购代理商加盟费保证金服务费咨询费手续费通道费技术费介绍费渠道费";
    let chars: Vec<char> = CHARS.chars().collect();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < count {
        let len = 2 + rng.below(5);
        let kw: String = (0..len).map(|_| chars[rng.below(chars.len())]).collect();
        seen.insert(kw);
    }
    seen.into_iter().collect()
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n).unwrap()).unwrap()
    }
}

fn library() -> RuleLibrary {
    let keywords = generated_keywords(RULES * 3);
    let mut toml = String::from("pinyin = false\n");
    for (i, chunk) in keywords.chunks(3).enumerate().take(RULES) {
        let list: Vec<String> = chunk.iter().map(|k| format!("\"{k}\"")).collect();
        toml.push_str(&format!(
            "[[rule]]\nid = \"gen{i}\"\nname = \"规则{i}\"\ncategory = \"cat{}\"\nseverity = \"medium\"\n\
             keywords = [{}]\n",
            i % 5,
            list.join(", ")
        ));
    }
    // The default library's rules too: every pattern (mobile, bank_card, wechat_id, qq, alipay),
    // negations, innocent context and allow phrases are on the path.
    let default = include_str!("../fixtures/rules/default.toml");
    let rules_start = default.find("\n[[rule]]").unwrap() + 1;
    let header: String = default[..rules_start]
        .lines()
        .filter(|l| !l.starts_with("pinyin"))
        .collect::<Vec<_>>()
        .join("\n");
    let full = format!("{header}\n{toml}\n{}", &default[rules_start..]);
    let start = Instant::now();
    let lib = RuleLibrary::from_toml(&full).expect("bench library compiles");
    println!("compiled {} rules in {:?}", lib.len(), start.elapsed());
    lib
}

fn messages() -> Vec<(String, Option<String>)> {
    let mut rng = Rng(42);
    let mut out = Vec::with_capacity(MESSAGES);
    for i in 0..MESSAGES {
        let mut text = String::new();
        if i % 20 == 0 {
            text.push_str(HITS[rng.below(HITS.len())]);
        }
        while text.chars().count() < TARGET_CHARS {
            text.push_str(SENTENCES[rng.below(SENTENCES.len())]);
        }
        let text: String = text.chars().take(TARGET_CHARS).collect();
        let prev = (i % 2 == 0).then(|| SENTENCES[rng.below(SENTENCES.len())].to_owned());
        out.push((text, prev));
    }
    out
}

fn main() {
    let lib = library();
    let msgs = messages();
    for (stage, both) in [("rules", false), ("rules + model", true)] {
        let detector = Detector::bundled(&lib);
        let mut rates = Vec::new();
        let mut alerts = 0usize;
        for round in 0..ROUNDS {
            alerts = 0;
            let start = Instant::now();
            for (text, prev) in &msgs {
                let input = ScanInput {
                    text,
                    prev: prev.as_deref(),
                    context: None,
                    sender: Sender::Staff,
                    msg_type: None,
                };
                let result = if both {
                    detector.scan(black_box(&input))
                } else {
                    lib.scan(black_box(&input))
                };
                alerts += usize::from(result.alert().is_some());
            }
            let secs = start.elapsed().as_secs_f64();
            let rate = msgs.len() as f64 / secs;
            println!("{stage} round {round}: {rate:>10.0} messages/s");
            rates.push(rate);
        }
        rates.sort_by(f64::total_cmp);
        let median = rates[rates.len() / 2];
        println!(
            "scan ({stage}): {} messages of {TARGET_CHARS} chars (half with prev), {} rules, {alerts} alerts; median {median:.0} messages/s",
            msgs.len(),
            lib.len()
        );
    }
}
