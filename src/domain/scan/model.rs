//! The second stage: a linear model over the normalized text, trained on the labeled corpus
//! (`scrm rules train`), that reads phrasing the keyword rules never listed — indirect offers,
//! commission talk without the word 回扣, a customer's proposal — and the warnings and refusals that
//! name the misconduct without committing it.
//!
//! ```text
//! text, prev ─▶ normalize (the rules' normalizer) ─▶ shape (digit runs → classes: an 11-digit
//!           mobile, a long number, a short one) ─▶ features: char 1–3-grams of the text,
//!           2–3-grams of prev, the grams across the seam, Latin words, the sender, and which rule
//!           categories fired ─▶ one weight vector per output (alert, then each category)
//!           ─▶ logistic score; the alert when it reaches the model's threshold
//! ```
//!
//! A model is data: a text file (`fixtures/rules/model.tsv` is the bundled one, embedded) of
//! `feature \t weights`, so a corp's own model can be stored and loaded as its rules are. Every
//! decision is explained by the features that drove it ([`Model::explain`]).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::LazyLock;

use super::normalize::{Normalized, Normalizer};
use super::{ScanInput, ScanResult};

/// The bundled model, trained by `scrm rules train` on `fixtures/corpus` (the held-out authors
/// excluded) and `fixtures/rules/labeled.jsonl`.
pub const BUNDLED_MODEL: &str = include_str!("../../../fixtures/rules/model.tsv");

static BUNDLED: LazyLock<Model> = LazyLock::new(|| match Model::parse(BUNDLED_MODEL) {
    Ok(model) => model,
    Err(e) => {
        tracing::error!(error = %e, "the bundled content model does not parse; the second stage is off");
        Model::empty()
    }
});

/// The categories a model scores, in the order of its weight columns after the alert column.
pub const CATEGORIES: [&str; 5] = [
    "private_payment",
    "off_book_order",
    "contact_leak",
    "kickback",
    "poaching",
];
/// Weight columns: the alert, then each of [`CATEGORIES`].
pub const OUTPUTS: usize = 1 + CATEGORIES.len();

/// The weights are keyed by a feature's FNV hash already: hashing it again would only cost time.
#[derive(Debug, Clone, Copy, Default)]
struct PassThrough(u64);

impl std::hash::Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Weights = HashMap<u64, [f32; OUTPUTS], std::hash::BuildHasherDefault<PassThrough>>;
/// The alert column alone: what every message needs, a quarter of the memory to walk.
type AlertWeights = HashMap<u64, f32, std::hash::BuildHasherDefault<PassThrough>>;

/// A trained model: weights per feature (by its 64-bit hash) and the decision threshold.
#[derive(Debug, Clone)]
pub struct Model {
    weights: Weights,
    alert_weights: AlertWeights,
    bias: [f32; OUTPUTS],
    /// The alert's score threshold (0–1).
    pub threshold: f32,
    /// Features with a weight.
    pub features: usize,
}

/// Why a model file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("model line {line}: {reason}")]
pub struct ModelError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// What the model says of one message.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Verdict {
    /// The alert's probability (0–1).
    pub score: f32,
    /// Whether it reaches the threshold.
    pub alert: bool,
    /// The most likely category.
    pub category: &'static str,
}

/// One feature's part in a decision.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Driver {
    /// The feature, readable (`text:私下`, `prev:转我`, `rule:kickback`, `word:paypal`).
    pub feature: String,
    /// Its weight toward the alert (positive: toward it).
    pub weight: f32,
}

impl Model {
    /// The bundled model (parsed once per process).
    pub fn bundled() -> &'static Model {
        &BUNDLED
    }

    /// A model that never alerts (no weights, threshold above any score).
    pub fn empty() -> Self {
        Self {
            weights: Weights::default(),
            alert_weights: AlertWeights::default(),
            bias: [-20.0; OUTPUTS],
            threshold: 1.1,
            features: 0,
        }
    }

    /// Parses a model file: `# comments`, `threshold \t t`, `bias \t w…`, then `feature \t w…`
    /// ([`OUTPUTS`] weights each).
    pub fn parse(text: &str) -> Result<Self, ModelError> {
        let mut model = Self::empty();
        model.bias = [0.0; OUTPUTS];
        model.threshold = 0.5;
        for (i, line) in text.lines().enumerate() {
            let err = |reason: &str| ModelError {
                line: i + 1,
                reason: reason.to_owned(),
            };
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, rest) = line.split_once('\t').ok_or_else(|| err("no tab"))?;
            if name == "threshold" {
                model.threshold = rest.trim().parse().map_err(|_| err("bad threshold"))?;
                continue;
            }
            let mut w = [0.0f32; OUTPUTS];
            let mut n = 0;
            for (slot, value) in w.iter_mut().zip(rest.split(' ')) {
                *slot = value.parse().map_err(|_| err("bad weight"))?;
                n += 1;
            }
            if n != OUTPUTS {
                return Err(err("wrong number of weights"));
            }
            if name == "bias" {
                model.bias = w;
            } else {
                let key = hash(name);
                model.weights.insert(key, w);
                model.alert_weights.insert(key, w[0]);
            }
        }
        model.features = model.weights.len();
        Ok(model)
    }

    /// Writes the model file [`Model::parse`] reads; `names` gives each feature's text, sorted.
    pub fn write(
        bias: &[f32; OUTPUTS],
        threshold: f32,
        weights: &[(String, [f32; OUTPUTS])],
        header: &str,
    ) -> String {
        let mut out = String::new();
        for line in header.lines() {
            let _ = writeln!(out, "# {line}");
        }
        let row = |w: &[f32; OUTPUTS]| {
            w.iter()
                .map(|x| format!("{x:.4}"))
                .map(|s| {
                    if s == "-0.0000" {
                        "0.0000".to_owned()
                    } else {
                        s
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        let _ = writeln!(out, "threshold\t{threshold:.4}");
        let _ = writeln!(out, "bias\t{}", row(bias));
        for (name, w) in weights {
            let _ = writeln!(out, "{name}\t{}", row(w));
        }
        out
    }

    /// Scores one message (`rules`: what the first stage found on it).
    pub fn judge(&self, input: &ScanInput<'_>, rules: &ScanResult) -> Verdict {
        self.judge_normalized(input, rules, None)
    }

    /// [`Model::judge`] given the rules' normalization of `prev` and `text` (read when the model
    /// reads `prev`, not the other party's message), so the text is normalized once.
    pub fn judge_normalized(
        &self,
        input: &ScanInput<'_>,
        rules: &ScanResult,
        normalized: Option<&Normalized>,
    ) -> Verdict {
        let mut sums = self.bias;
        FEATURES.with(|cell| {
            let mut f = cell.borrow_mut();
            f.extract_normalized(input, rules, normalized);
            for h in &f.hashes {
                if let Some(w) = self.alert_weights.get(h) {
                    sums[0] += w;
                }
            }
            // The category only matters for an alert.
            if sigmoid(sums[0]) >= self.threshold {
                for h in &f.hashes {
                    if let Some(w) = self.weights.get(h) {
                        for (s, x) in sums.iter_mut().zip(w).skip(1) {
                            *s += x;
                        }
                    }
                }
            }
        });
        self.verdict(&sums)
    }

    fn verdict(&self, sums: &[f32; OUTPUTS]) -> Verdict {
        let score = sigmoid(sums[0]);
        let best = (1..OUTPUTS)
            .max_by(|a, b| sums[*a].total_cmp(&sums[*b]))
            .unwrap_or(1);
        Verdict {
            score,
            alert: score >= self.threshold,
            category: CATEGORIES[best - 1],
        }
    }

    /// The features of one message that carry weight toward (or against) the alert, strongest
    /// first, at most `n`.
    pub fn explain(&self, input: &ScanInput<'_>, rules: &ScanResult, n: usize) -> Vec<Driver> {
        let mut f = Features::named();
        f.extract(input, rules);
        let mut drivers: Vec<Driver> = f
            .hashes
            .iter()
            .zip(&f.names)
            .filter_map(|(h, name)| {
                self.weights.get(h).map(|w| Driver {
                    feature: name.clone(),
                    weight: w[0],
                })
            })
            .filter(|d| d.weight.abs() >= 0.05)
            .collect();
        drivers.sort_by(|a, b| b.weight.abs().total_cmp(&a.weight.abs()));
        drivers.dedup_by(|a, b| a.feature == b.feature);
        drivers.truncate(n);
        drivers
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x.clamp(-30.0, 30.0)).exp())
}

/// FNV-1a, 64 bits: stable across builds and platforms (the model file names features by text;
/// the hash only indexes them in memory).
pub fn hash(s: &str) -> u64 {
    hash_parts(&[s.as_bytes()])
}

/// FNV-1a's starting state.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a from state `h` over `bytes` (a feature is hashed in pieces: prefix, then each char).
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn hash_parts(parts: &[&[u8]]) -> u64 {
    parts.iter().fold(FNV_OFFSET, |h, part| fnv(h, part))
}

/// Word lists whose presence the model reads as features of their own, so that what it learns
/// from one author's refusals, warnings, training slides and official accounts carries to another
/// author's different words for the same thing; and the slots of an improper offer (someone offers
/// or asks, an off-the-books channel, money), whose co-occurrence is a feature.
const CUES: [(&str, &[&str]); 8] = [
    (
        "neg",
        &[
            "不能",
            "不可以",
            "不行",
            "不允许",
            "不准",
            "严禁",
            "禁止",
            "杜绝",
            "拒绝",
            "不要",
            "不得",
            "没办法",
            "没法",
            "不接受",
            "不收",
            "不做",
            "不干",
            "不加",
            "不方便",
            "做不了",
            "只能走",
            "必须走",
            "必须",
            "一律",
            "请走",
            "不会",
            "不了",
            "没有的",
            "cant",
            "cannot",
            "notallowed",
            "never",
            "dont",
            "wont",
            "against",
            "sorry",
            "不好意思",
            "抱歉",
        ],
    ),
    (
        "warn",
        &[
            "提醒",
            "通报",
            "通知",
            "警告",
            "红线",
            "开除",
            "辞退",
            "处分",
            "处罚",
            "解除",
            "违规",
            "违者",
            "严查",
            "查到",
            "举报",
            "重申",
            "合规",
            "纪律",
            "制度",
            "高压线",
            "被抓",
            "丢饭碗",
            "reminder",
            "warning",
            "policy",
            "compliance",
            "violat",
            "psa",
            "所有人",
        ],
    ),
    (
        "train",
        &[
            "培训",
            "案例",
            "课堂",
            "讨论",
            "练习",
            "情景",
            "模拟",
            "考题",
            "问答",
            "学习",
            "讲师",
            "示例",
            "常见",
            "怎么回应",
            "怎么办",
            "风险",
            "faq",
            "training",
            "quiz",
            "slide",
            "101",
            "q:",
            "a:",
            "问:",
            "答:",
        ],
    ),
    (
        "company",
        &[
            "公司",
            "对公",
            "官方",
            "官网",
            "企业微信",
            "工作号",
            "门店",
            "店里",
            "合同",
            "开票",
            "发票",
            "系统",
            "正规",
            "平台",
            "company",
            "official",
            "business",
            "invoice",
            "contract",
            "corporate",
            "workaccount",
            "wecom",
        ],
    ),
    (
        "id",
        &[
            "编号",
            "单号",
            "订单号",
            "型号",
            "运单",
            "工单",
            "预约码",
            "取号",
            "验证码",
            "序列号",
            "账号id",
            "sku",
            "no.",
            "code",
            "license",
            "key",
            "invoiceno",
            "hs",
        ],
    ),
    (
        "offer",
        &[
            "转我",
            "给我",
            "打给我",
            "发我",
            "加我",
            "找我",
            "留一份",
            "给你",
            "分你",
            "私下",
            "单独",
            "我这边",
            "我这",
            "跟我",
            "带你",
            "介绍你",
            "payme",
            "dmme",
            "addme",
            "tome",
        ],
    ),
    (
        "channel",
        &[
            "私人",
            "个人",
            "小号",
            "自己的",
            "私号",
            "私聊",
            "微信",
            "支付宝",
            "现金",
            "红包",
            "银行卡",
            "卡号",
            "收款码",
            "二维码",
            "电话",
            "手机",
            "qq",
            "paypal",
            "whatsapp",
            "telegram",
            "wechat",
            "alipay",
            "personal",
            "private",
            "cash",
        ],
    ),
    (
        "money",
        &[
            "钱",
            "款",
            "费",
            "元",
            "块",
            "万",
            "返点",
            "回扣",
            "提成",
            "佣金",
            "点数",
            "好处",
            "定金",
            "尾款",
            "价",
            "commission",
            "kickback",
            "rebate",
            "usd",
            "rmb",
            "$",
        ],
    ),
];

static CUE_MATCHER: LazyLock<Option<(aho_corasick::AhoCorasick, Vec<usize>)>> =
    LazyLock::new(|| {
        let mut words = Vec::new();
        let mut kinds = Vec::new();
        for (kind, (_, list)) in CUES.iter().enumerate() {
            for w in *list {
                words.push(*w);
                kinds.push(kind);
            }
        }
        // A few hundred words: a DFA is small and the fastest to run.
        aho_corasick::AhoCorasick::builder()
            .kind(Some(aho_corasick::AhoCorasickKind::DFA))
            .ascii_case_insensitive(true)
            .build(&words)
            .ok()
            .map(|ac| (ac, kinds))
    });

/// Words a reply that agrees starts with (normalized: lower case, no spaces).
const ACCEPT: [&str; 16] = [
    "可以",
    "好的",
    "好啊",
    "好嘞",
    "好",
    "行",
    "没问题",
    "ok",
    "嗯",
    "成",
    "妥",
    "当然",
    "sure",
    "yes",
    "老规矩",
    "安排",
];

/// Whether a reply agrees to what it answers: it opens with a word of agreement and has no refusal
/// or warning anywhere (the cue lists the model reads). "好的，转我吧" agrees; "不可以，请走公司账户"
/// and "直接在企业微信找我就行" do not.
pub fn accepts(reply: &str) -> bool {
    const REFUSES: u32 = 0b11; // neg, warn
    let normalized = super::normalize::normalize(reply).text;
    let opening = normalized.trim_start_matches(|c: char| !c.is_alphanumeric());
    ACCEPT.iter().any(|w| opening.starts_with(w)) && cues_in(&normalized) & REFUSES == 0
}

/// Which [`CUES`] occur in `text`, as a bit per list.
fn cues_in(text: &str) -> u32 {
    let Some((ac, kinds)) = &*CUE_MATCHER else {
        return 0;
    };
    let mut found = 0u32;
    for m in ac.find_overlapping_iter(text) {
        if let Some(kind) = kinds.get(m.pattern().as_usize()) {
            found |= 1 << kind;
        }
    }
    found
}

thread_local! {
    static FEATURES: std::cell::RefCell<Features> = std::cell::RefCell::new(Features::default());
}

/// The features of one message, reused between messages (no allocation per message once warm).
#[derive(Default)]
pub struct Features {
    norm: Normalized,
    shaped: Vec<char>,
    text_norm: String,
    text_chars: Vec<char>,
    /// The UTF-8 of each char of `shaped` (with its length), for hashing its grams.
    encoded: Vec<([u8; 4], usize)>,
    /// Feature hashes (duplicates possible: a repeated gram counts again).
    pub hashes: Vec<u64>,
    /// Their names, when `named`.
    pub names: Vec<String>,
    /// Whether to keep names (explanations, training).
    pub named: bool,
}

impl Features {
    /// A feature extractor that keeps the names (training, explanations).
    pub fn named() -> Self {
        Self {
            named: true,
            ..Self::default()
        }
    }

    fn push(&mut self, prefix: &str, gram: &str) {
        self.hashes
            .push(hash_parts(&[prefix.as_bytes(), gram.as_bytes()]));
        if self.named {
            self.names.push(format!("{prefix}{gram}"));
        }
    }

    /// Normalizes `text` into `self.shaped`: the rules' normalizer, then digit runs as classes
    /// (`#` an 11-digit mobile, `%` another number of 7 or more digits, `0` a shorter one).
    fn shape(&mut self, from: usize, to: usize) {
        self.shaped.clear();
        let chars = self.norm.chars.get(from..to).unwrap_or(&[]);
        let mut i = 0;
        while i < chars.len() {
            if chars[i].is_ascii_digit() {
                let start = i;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
                let n = i - start;
                self.shaped.push(match n {
                    11 if chars[start] == '1' => '#',
                    7.. => '%',
                    _ => '0',
                });
            } else {
                self.shaped.push(chars[i]);
                i += 1;
            }
        }
    }

    fn grams(&mut self, prefix: &str, sizes: &[usize]) {
        // Each char's UTF-8 once, the prefix's hash state once: this is the hot path.
        let start = fnv(FNV_OFFSET, prefix.as_bytes());
        self.encoded.clear();
        self.encoded.extend(self.shaped.iter().map(|c| {
            let mut utf8 = [0u8; 4];
            let len = c.encode_utf8(&mut utf8).len();
            (utf8, len)
        }));
        for &n in sizes {
            for (i, w) in self.encoded.windows(n).enumerate() {
                let h = w
                    .iter()
                    .fold(start, |h, (bytes, len)| fnv(h, &bytes[..*len]));
                self.hashes.push(h);
                if self.named {
                    let mut name = String::from(prefix);
                    name.extend(&self.shaped[i..i + n]);
                    self.names.push(name);
                }
            }
        }
    }

    /// [`Features::push`] of a feature written in parts.
    fn push_parts(&mut self, prefix: &str, parts: &[&str]) {
        let mut bytes: Vec<&[u8]> = Vec::with_capacity(parts.len() + 1);
        bytes.push(prefix.as_bytes());
        bytes.extend(parts.iter().map(|p| p.as_bytes()));
        self.hashes.push(hash_parts(&bytes));
        if self.named {
            self.names.push(format!("{prefix}{}", parts.concat()));
        }
    }

    /// [`Features::push`] of a gram given as chars (hashed from their UTF-8 without a String).
    fn push_chars(&mut self, prefix: &str, gram: &[char]) {
        let mut utf8 = [0u8; 4];
        let h = gram
            .iter()
            .fold(fnv(FNV_OFFSET, prefix.as_bytes()), |h, c| {
                fnv(h, c.encode_utf8(&mut utf8).as_bytes())
            });
        self.hashes.push(h);
        if self.named {
            let mut name = String::from(prefix);
            name.extend(gram.iter());
            self.names.push(name);
        }
    }

    /// Extracts the features of one message into `hashes` (and `names`). What came before is
    /// the other party's message when there is one (`q:` grams: the request a reply answers),
    /// else the sender's own previous message (`p:` grams and the grams across the seam: a phrase
    /// split over two messages).
    pub fn extract(&mut self, input: &ScanInput<'_>, rules: &ScanResult) {
        self.extract_normalized(input, rules, None);
    }

    /// [`Features::extract`] with the rules' normalization of `[prev, text]` (or `[text]`) when
    /// there is one: used unless the other party's message is what came before.
    pub fn extract_normalized(
        &mut self,
        input: &ScanInput<'_>,
        rules: &ScanResult,
        normalized: Option<&Normalized>,
    ) {
        self.hashes.clear();
        self.names.clear();
        let text = input.text;
        let sender = input.sender;
        let (before, own) = match (input.context, input.prev) {
            (Some(c), _) if !c.is_empty() => (Some(c), false),
            (_, Some(p)) if !p.is_empty() => (Some(p), true),
            _ => (None, false),
        };
        let normalized = normalized.filter(|_| own || before.is_none());
        // before and text normalized in one pass (as the rules do), then told apart by where
        // each normalized char came from.
        let parts: &[&str] = match before {
            Some(before) => &[before, text],
            None => &[text],
        };
        match normalized {
            Some(n) => self.norm.copy_from(n),
            None => Normalizer::global().normalize_into(&mut self.norm, parts),
        }
        let boundary = match before {
            Some(before) => {
                let before_chars = before.chars().count();
                self.norm
                    .origins
                    .partition_point(|o| o.start < before_chars)
            }
            None => 0,
        };
        let all = self.norm.chars.len();
        self.shape(boundary, all);
        self.text_norm.clear();
        self.text_norm
            .extend(self.norm.chars.get(boundary..).unwrap_or(&[]).iter());
        let mut text_chars = std::mem::take(&mut self.text_chars);
        text_chars.clear();
        text_chars.extend_from_slice(&self.shaped);
        self.grams("t:", &[1, 2, 3]);
        // Latin words whole (English and mixed messages, abbreviations such as vx, zfb).
        let mut word = String::new();
        for c in text_chars.iter().chain(std::iter::once(&' ')) {
            if c.is_ascii_lowercase() {
                word.push(*c);
            } else if !word.is_empty() {
                let w = std::mem::take(&mut word);
                self.push("w:", &w);
            }
        }
        if before.is_some() {
            self.shape(0, boundary);
            if own {
                // The end of prev and the start of text: a phrase split over the two.
                let tail_len = self.shaped.len().min(4);
                let seam: Vec<char> = self.shaped[self.shaped.len() - tail_len..]
                    .iter()
                    .chain(&text_chars[..text_chars.len().min(4)])
                    .copied()
                    .collect();
                self.grams("p:", &[2, 3]);
                for n in [2, 3] {
                    for (i, w) in seam.windows(n).enumerate() {
                        // Only grams that cross the seam.
                        if i < tail_len && i + n > tail_len {
                            self.push_chars("j:", w);
                        }
                    }
                }
            } else {
                self.grams("q:", &[2, 3]);
            }
        }
        let sender_name = sender.as_str();
        self.push("s:", sender_name);
        self.text_chars = text_chars;
        // The cue lists of the (normalized) text, each alone, with the rules' verdict and the sender, and the offer slots in pairs.
        let cues = cues_in(&self.text_norm);
        let ruled = if rules.hits.is_empty() { "-" } else { "+" };
        for (kind, (name, _)) in CUES.iter().enumerate() {
            if cues & (1 << kind) != 0 {
                self.push("c:", name);
                self.push_parts("cr:", &[name, ruled]);
                self.push_parts("cs:", &[name, ":", sender_name]);
            }
        }
        const OFFER: u32 = 1 << 5;
        const CHANNEL: u32 = 1 << 6;
        const MONEY: u32 = 1 << 7;
        for (pair, name) in [
            (OFFER | CHANNEL, "offer+channel"),
            (OFFER | MONEY, "offer+money"),
            (CHANNEL | MONEY, "channel+money"),
            (OFFER | CHANNEL | MONEY, "offer+channel+money"),
        ] {
            if cues & pair == pair {
                self.push("slot:", name);
            }
        }
        for hit in &rules.hits {
            let category = hit.category.clone();
            self.push("r:", &category);
            self.push("r:", "any");
        }
    }
}

/// How `scrm rules train` fits a model: logistic regression per output, AdaGrad with L2, a fixed
/// order of examples per epoch (a seeded shuffle), so the same corpus gives the same file.
#[derive(Debug, Clone, Copy)]
pub struct TrainOptions {
    /// Passes over the examples.
    pub epochs: usize,
    /// L2 strength.
    pub l2: f32,
    /// AdaGrad's step.
    pub rate: f32,
    /// The shuffle's seed.
    pub seed: u64,
    /// Weights smaller than this are dropped from the file.
    pub prune: f32,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            epochs: 20,
            l2: 3e-4,
            rate: 0.5,
            seed: 7,
            prune: 0.02,
        }
    }
}

/// One training example: its features' names and its labels.
#[derive(Debug, Clone)]
pub struct Example {
    /// Feature names (as [`Features::extract`] makes them with names kept).
    pub features: Vec<String>,
    /// Whether it is an alert.
    pub alert: bool,
    /// Its category's index in [`CATEGORIES`], for alerts.
    pub category: Option<usize>,
}

/// Fits the weights. Returns the bias and the weights by feature name, sorted by name.
pub fn train(
    examples: &[Example],
    o: TrainOptions,
) -> ([f32; OUTPUTS], Vec<(String, [f32; OUTPUTS])>) {
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut names: Vec<&str> = Vec::new();
    let rows: Vec<Vec<usize>> = examples
        .iter()
        .map(|e| {
            let mut ids: Vec<usize> = e
                .features
                .iter()
                .map(|f| {
                    *index.entry(f.as_str()).or_insert_with(|| {
                        names.push(f.as_str());
                        names.len() - 1
                    })
                })
                .collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        })
        .collect();
    let n = names.len();
    let mut w = vec![[0.0f32; OUTPUTS]; n];
    let mut g2 = vec![[1e-6f32; OUTPUTS]; n];
    let mut bias = [0.0f32; OUTPUTS];
    let mut bias_g2 = [1e-6f32; OUTPUTS];
    let mut order: Vec<usize> = (0..examples.len()).collect();
    let mut state = o.seed.max(1);
    for _ in 0..o.epochs {
        // Fisher–Yates with xorshift: the same seed, the same order.
        for i in (1..order.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let j = usize::try_from(state % (i as u64 + 1)).unwrap_or(0);
            order.swap(i, j);
        }
        for &e in &order {
            let ex = &examples[e];
            let ids = &rows[e];
            for out in 0..OUTPUTS {
                // The alert output learns from every example; a category's only from alerts
                // (one against the rest).
                let label = if out == 0 {
                    ex.alert
                } else if ex.alert {
                    ex.category == Some(out - 1)
                } else {
                    continue;
                };
                let z = bias[out] + ids.iter().map(|&i| w[i][out]).sum::<f32>();
                let g = sigmoid(z) - if label { 1.0 } else { 0.0 };
                for &i in ids {
                    let gi = g + o.l2 * w[i][out];
                    g2[i][out] += gi * gi;
                    w[i][out] -= o.rate * gi / g2[i][out].sqrt();
                }
                bias_g2[out] += g * g;
                bias[out] -= o.rate * g / bias_g2[out].sqrt();
            }
        }
    }
    let mut kept: Vec<(String, [f32; OUTPUTS])> = names
        .iter()
        .zip(w)
        .filter(|(_, w)| w.iter().any(|x| x.abs() >= o.prune))
        .map(|(name, w)| ((*name).to_owned(), w))
        .collect();
    kept.sort_by(|a, b| a.0.cmp(&b.0));
    (bias, kept)
}

/// The examples `scrm rules train` fits: the corpus's training authors (every author but
/// [`super::eval::HELD_OUT_AUTHORS`]) and the bundled labeled set, with the features `library`'s
/// hits add.
pub fn training_examples(library: &super::RuleLibrary) -> (Vec<Example>, usize) {
    use super::eval;
    let mut cases = eval::corpus_cases(|a| !eval::HELD_OUT_AUTHORS.contains(&a));
    let from_corpus = cases.len();
    cases.extend(eval::bundled_cases().iter().cloned());
    let mut features = Features::named();
    let examples = cases
        .iter()
        .map(|c| {
            let input = c.input();
            features.extract(&input, &library.scan(&input));
            Example {
                features: std::mem::take(&mut features.names),
                alert: c.alert,
                category: c
                    .category
                    .as_deref()
                    .and_then(|k| CATEGORIES.iter().position(|x| *x == k)),
            }
        })
        .collect();
    (examples, from_corpus)
}

/// Trains on [`training_examples`] and returns the model file, the number of examples and of
/// features kept. The same inputs give the same file, byte for byte.
pub fn train_file(
    library: &super::RuleLibrary,
    options: TrainOptions,
    threshold: f32,
) -> (String, usize, usize) {
    let (examples, from_corpus) = training_examples(library);
    let (bias, weights) = train(&examples, options);
    let weights: Vec<_> = weights
        .into_iter()
        .filter(|(name, _)| !name.contains(['\t', '\n', '\r']))
        .collect();
    let header = format!(
        "The content model (second stage), written by `scrm rules train` — do not edit by hand.\n\
         Trained on {from_corpus} corpus cases (authors other than {}) and {} cases of \
         fixtures/rules/labeled.jsonl;\n{} epochs, L2 {}, rate {}, seed {}, threshold {threshold}. \
         Columns: alert, then {}.",
        super::eval::HELD_OUT_AUTHORS.join(", "),
        examples.len() - from_corpus,
        options.epochs,
        options.l2,
        options.rate,
        options.seed,
        CATEGORIES.join(", ")
    );
    let text = Model::write(&bias, threshold, &weights, &header);
    (text, examples.len(), weights.len())
}

/// The threshold the bundled model is written with.
pub const DEFAULT_THRESHOLD: f32 = 0.6;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::scan::eval::{self, evaluate_detector};
    use crate::domain::scan::{Detector, RuleLibrary, ScanInput, Sender, Severity};

    fn input(text: &str) -> ScanInput<'_> {
        ScanInput {
            text,
            prev: None,
            context: None,
            sender: Sender::Staff,
            msg_type: None,
        }
    }

    #[test]
    fn the_bundled_model_is_what_train_makes() {
        let (text, _, _) = train_file(
            &RuleLibrary::default_library(),
            TrainOptions::default(),
            DEFAULT_THRESHOLD,
        );
        assert!(
            text == BUNDLED_MODEL,
            "fixtures/rules/model.tsv is stale: run `scrm rules train`"
        );
        let model = Model::bundled();
        assert!(model.features > 10_000, "{}", model.features);
        assert!((model.threshold - DEFAULT_THRESHOLD).abs() < 1e-6);
    }

    #[test]
    fn a_bad_model_file_names_its_line() {
        assert_eq!(Model::parse("threshold\tx").unwrap_err().line, 1);
        assert_eq!(Model::parse("# c\nbias\t1 2").unwrap_err().line, 2);
        assert!(Model::parse("a\t1 2 3 4 5 6").is_ok());
        let empty = Model::empty();
        let rules = RuleLibrary::default_library();
        let d = Detector {
            rules: &rules,
            model: &empty,
        };
        assert!(d.scan(&input("事成之后少不了你的那份")).hits.is_empty());
    }

    /// Phrasing without a keyword the rules list: found by the model, explained by its features;
    /// a warning that names the misconduct: quiet; a customer's proposal: a low signal.
    #[test]
    fn the_second_stage_reads_meaning_the_rules_miss() {
        let rules = RuleLibrary::default_library();
        let d = Detector::bundled(&rules);
        let offer = input("这单您签了，事成之后少不了您那份，我单独给您安排");
        assert!(rules.scan(&offer).hits.is_empty(), "no rule knows this");
        let found = d.scan(&offer);
        let hit = found.alert().expect("the model finds it");
        assert_eq!(hit.rule_id, crate::domain::scan::detector::MODEL_RULE);
        assert_eq!(hit.category, "kickback");
        assert!(!d.drivers(&offer, 5).is_empty());
        let warning = input("公司重申：严禁私下收款，一经发现立即开除，请大家引以为戒");
        assert!(d.scan(&warning).hits.is_empty(), "{:?}", d.decide(&warning));
        let proposal = ScanInput {
            sender: Sender::Customer,
            ..input("能不能不走你们公司，我直接把钱转你个人，便宜点就行")
        };
        let signal = d.scan(&proposal);
        assert_eq!(signal.alert().map(|h| h.severity), Some(Severity::Low));
    }

    /// The gate of issue 22 on the authors the model never saw. The issue's targets (recall ≥ 95 %,
    /// false alarms ≤ 3 %, overall and per group of ≥ 15) are met for recall, not yet for false
    /// alarms (4.5 % overall when this landed, 8.3 % for customers' innocent questions): this holds
    /// the landed figures so that nothing gets worse; `scrm rules eval --corpus` prints the table.
    #[test]
    fn held_out_authors_floor() {
        let rules = RuleLibrary::default_library();
        let report = evaluate_detector(
            &Detector::bundled(&rules),
            &eval::held_out_cases(),
            "held-out".to_owned(),
            eval::MIN_CORPUS_GROUP_CASES,
        );
        let overall = &report.engine.overall;
        assert_eq!(overall.alert_cases + overall.clean_cases, 1770);
        assert!(overall.recall.unwrap() >= 0.98, "{overall:?}");
        assert!(overall.fpr.unwrap() <= 0.045, "{overall:?}");
        for (kind, groups) in [
            ("family", &report.engine.per_family),
            ("author", &report.engine.per_author),
            ("category", &report.engine.per_category),
        ] {
            for (name, s) in groups {
                if s.alert_cases >= eval::MIN_CORPUS_GROUP_CASES {
                    assert!(
                        s.recall.unwrap() >= eval::TARGET_RECALL,
                        "{kind} {name}: {s:?}"
                    );
                }
                if s.clean_cases >= eval::MIN_CORPUS_GROUP_CASES {
                    assert!(s.fpr.unwrap() <= 0.09, "{kind} {name}: {s:?}");
                }
            }
        }
    }

    /// Everyday chat — most of what is scanned — stays quiet, alone and as a reply.
    #[test]
    fn everyday_chat_stays_quiet() {
        let rules = RuleLibrary::default_library();
        let d = Detector::bundled(&rules);
        for text in [
            "你好",
            "在吗",
            "好的",
            "收到",
            "嗯嗯",
            "谢谢",
            "明天见",
            "好的，我们六点下班",
            "我下午三点到店",
            "合同我已经发你邮箱了",
            "发票开好了",
            "OK",
            "👌",
        ] {
            assert!(
                d.scan(&input(text)).hits.is_empty(),
                "{text}: {:?}",
                d.decide(&input(text))
            );
        }
        let reply = ScanInput {
            context: Some("到了给我打电话"),
            ..input("好的")
        };
        assert!(d.scan(&reply).hits.is_empty(), "{:?}", d.decide(&reply));
    }

    /// A customer's proposal and the staff member's agreement are one exchange, raised on the
    /// reply at the staff member's severity; a refusal of the same proposal is quiet.
    #[test]
    fn an_agreement_to_a_customers_proposal_is_an_exchange() {
        let rules = RuleLibrary::default_library();
        let d = Detector::bundled(&rules);
        let proposal = "你私人手机号给我一个呗，以后直接找你";
        let yes = ScanInput {
            context: Some(proposal),
            ..input("好的，你记一下")
        };
        let hit = d.scan(&yes).hits.into_iter().next().expect("an exchange");
        assert_eq!(hit.category, "contact_leak");
        assert_eq!(hit.severity, Severity::Medium);
        assert!(hit.across_messages);
        assert!(
            !d.scan(&input("好的，你记一下"))
                .hits
                .iter()
                .any(|h| h.category == "contact_leak")
        );
        let no = ScanInput {
            context: Some(proposal),
            ..input("不好意思，私人号码不方便给，有事在这里找我就行")
        };
        assert!(d.scan(&no).hits.is_empty(), "{:?}", d.decide(&no));
        assert!(super::accepts("好的，转我吧"));
        assert!(super::accepts("OK 没问题"));
        assert!(!super::accepts("不可以，请走公司账户"));
        assert!(!super::accepts("直接在企业微信找我就行"));
    }

    #[test]
    fn the_labeled_set_still_passes_with_both_stages() {
        let rules = RuleLibrary::default_library();
        let report = evaluate_detector(
            &Detector::bundled(&rules),
            eval::bundled_cases(),
            eval::BUNDLED_SET_NAME.to_owned(),
            eval::MIN_GROUP_CASES,
        );
        assert!(report.passed, "{:?}", report.failures);
    }
}
