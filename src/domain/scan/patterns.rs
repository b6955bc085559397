//! Built-in patterns over the normalized text: mobile numbers, bank cards (Luhn), and WeChat /
//! QQ / Alipay accounts after their cue word.
//!
//! Digits work on the normalized digit stream (Chinese numerals already digits, separators and
//! emoji gone), but a number must start and end where the original had a break or the run
//! ends: `138 1234 5678` is a mobile number, the middle of `订单号20231138123456789` is not.

use std::sync::LazyLock;

use regex::Regex;

use super::ScanInput;
use super::normalize::{JOINED, Normalized};

/// A built-in pattern a rule can name in `patterns = [...]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PatternKind {
    /// Mainland mobile number `1[3-9]` + 9 digits (optionally `86`/`0086` before it).
    Mobile,
    /// 16–19 digits that pass the Luhn check.
    BankCard,
    /// A WeChat id after a WeChat cue (`微信`, `vx`, `wx` …).
    WechatId,
    /// 5–11 digits after a QQ cue (`qq`, `扣扣`).
    Qq,
    /// A mobile number or email after an Alipay cue (`支付宝`, `zfb`).
    Alipay,
}

impl PatternKind {
    /// The name rules use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mobile => "mobile",
            Self::BankCard => "bank_card",
            Self::WechatId => "wechat_id",
            Self::Qq => "qq",
            Self::Alipay => "alipay",
        }
    }

    /// Parses a rule's pattern name.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name.trim() {
            "mobile" => Self::Mobile,
            "bank_card" => Self::BankCard,
            "wechat_id" => Self::WechatId,
            "qq" => Self::Qq,
            "alipay" => Self::Alipay,
            _ => return None,
        })
    }

    /// The cue word this pattern needs before the account, if any.
    pub fn cue(self) -> Option<Cue> {
        match self {
            Self::Mobile | Self::BankCard => None,
            Self::WechatId => Some(Cue::Wechat),
            Self::Qq => Some(Cue::Qq),
            Self::Alipay => Some(Cue::Alipay),
        }
    }
}

/// A word that announces an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cue {
    /// `微信` (and every variant the normalizer maps to it).
    Wechat,
    /// `qq`.
    Qq,
    /// `支付宝`.
    Alipay,
}

impl Cue {
    /// The cue words (normalized with the library's pipeline at compile time).
    pub fn words(self) -> &'static [&'static str] {
        match self {
            Self::Wechat => &["微信"],
            Self::Qq => &["qq"],
            Self::Alipay => &["支付宝"],
        }
    }
}

/// One pattern match, in normalized chars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// Which pattern.
    pub kind: PatternKind,
    /// First normalized char.
    pub start: usize,
    /// One past the last.
    pub end: usize,
    /// The original span, when the match is not made of normalized chars (an email).
    pub original: Option<(usize, usize)>,
}

/// Chars allowed between a cue and the account (`微信号是`, `支付宝账号`).
fn is_filler(c: char) -> bool {
    matches!(
        c,
        '号' | '是' | '为' | '码' | '账' | '户' | '名' | '搜' | '加' | '我' | '的' | '收' | '款'
    )
}

const MAX_FILLER: usize = 4;

static EMAIL_AFTER_CUE: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r"^[\s:：,，是为的号账户收款\-]{0,12}([A-Za-z0-9._%+\-]{1,64}@[A-Za-z0-9\-]{1,63}(?:\.[A-Za-z0-9\-]{1,63})*\.[A-Za-z]{2,10})",
    )
    .ok()
});

/// Finds every built-in pattern in `norm`. `cues` are the cue matches of the automaton;
/// `text_start` is the original char index where `input.text` starts (after `prev`).
pub fn find(
    norm: &Normalized,
    cues: &[(Cue, usize, usize)],
    input: &ScanInput<'_>,
    text_start: usize,
) -> Vec<Found> {
    let mut out = Vec::new();
    find_numbers(norm, &mut out);
    for &(cue, start, end) in cues {
        let mut pos = end;
        while pos < end + MAX_FILLER && norm.chars.get(pos).copied().is_some_and(is_filler) {
            pos += 1;
        }
        match cue {
            Cue::Wechat => {
                if norm.chars.get(pos).is_some_and(char::is_ascii_alphabetic) {
                    let run = run_end(norm, pos, |c| c.is_ascii_alphanumeric());
                    if (6..=20).contains(&(run - pos)) {
                        out.push(Found {
                            kind: PatternKind::WechatId,
                            start,
                            end: run,
                            original: None,
                        });
                    }
                }
            }
            Cue::Qq => {
                let run = run_end(norm, pos, |c| c.is_ascii_digit());
                if (5..=11).contains(&(run - pos)) {
                    out.push(Found {
                        kind: PatternKind::Qq,
                        start,
                        end: run,
                        original: None,
                    });
                }
            }
            Cue::Alipay => {
                let run = run_end(norm, pos, |c| c.is_ascii_digit());
                if run - pos >= 11 && is_mobile_at(norm, pos) {
                    out.push(Found {
                        kind: PatternKind::Alipay,
                        start,
                        end: pos + 11,
                        original: None,
                    });
                } else if let Some(span) = email_after(norm, end, input, text_start) {
                    let cue_start = norm.origins.get(start).map_or(span.0, |o| o.start);
                    out.push(Found {
                        kind: PatternKind::Alipay,
                        start,
                        end,
                        original: Some((cue_start, span.1)),
                    });
                }
            }
        }
    }
    out
}

fn run_end(norm: &Normalized, from: usize, pred: impl Fn(&char) -> bool) -> usize {
    let mut i = from;
    while norm.chars.get(i).is_some_and(&pred) {
        i += 1;
    }
    i
}

fn is_mobile_at(norm: &Normalized, at: usize) -> bool {
    norm.chars.get(at) == Some(&'1')
        && norm
            .chars
            .get(at + 1)
            .is_some_and(|c| ('3'..='9').contains(c))
}

/// Mobile numbers and bank cards: numbers that start and end at a break of the original.
fn find_numbers(norm: &Normalized, out: &mut Vec<Found>) {
    let chars = &norm.chars;
    let mut i = 0;
    while i < chars.len() {
        if !chars.get(i).is_some_and(char::is_ascii_digit) {
            i += 1;
            continue;
        }
        let j = run_end(norm, i, |c| c.is_ascii_digit());
        if j - i >= 11 {
            let seg_start =
                |k: usize| k == i || norm.origins.get(k).is_some_and(|o| o.flags & JOINED == 0);
            let seg_end = |k: usize| k == j || seg_start(k);
            let mut a = i;
            while a + 11 <= j {
                if !seg_start(a) {
                    a += 1;
                    continue;
                }
                if let Some(end) = card_at(norm, a, j, &seg_end).filter(|_| !after_id_cue(chars, a))
                {
                    out.push(Found {
                        kind: PatternKind::BankCard,
                        start: a,
                        end,
                        original: None,
                    });
                    a = end;
                    continue;
                }
                let prefixed = [0usize, 2, 4].into_iter().find(|&off| {
                    let st = a + off;
                    let prefix_ok = match off {
                        0 => true,
                        2 => chars.get(a..a + 2) == Some(&['8', '6'][..]),
                        _ => chars.get(a..a + 4) == Some(&['0', '0', '8', '6'][..]),
                    };
                    prefix_ok && st + 11 <= j && seg_end(st + 11) && is_mobile_at(norm, st)
                });
                if let Some(off) = prefixed {
                    out.push(Found {
                        kind: PatternKind::Mobile,
                        start: a,
                        end: a + off + 11,
                        original: None,
                    });
                    a += off + 11;
                    continue;
                }
                a += 1;
            }
        }
        i = j;
    }
}

/// Words that name a long number as something other than a card (订单号 4111…): such a number
/// is not reported as a bank card even when it passes Luhn.
const ID_CUES: [&str; 12] = [
    "订单号",
    "订单",
    "单号",
    "编号",
    "运单",
    "工单",
    "流水号",
    "发票号",
    "合同号",
    "快递",
    "物流",
    "批次号",
];

/// Whether the normalized chars just before `a` end with an [`ID_CUES`] word (optionally followed
/// by 是 / 为).
fn after_id_cue(chars: &[char], a: usize) -> bool {
    let before: String = chars
        .get(a.saturating_sub(5)..a)
        .unwrap_or(&[])
        .iter()
        .collect();
    let before = before
        .strip_suffix('是')
        .or_else(|| before.strip_suffix('为'))
        .unwrap_or(&before);
    ID_CUES.iter().any(|cue| before.ends_with(cue))
}

fn card_at(
    norm: &Normalized,
    a: usize,
    run_end: usize,
    seg_end: &impl Fn(usize) -> bool,
) -> Option<usize> {
    (16..=19)
        .rev()
        .map(|len| a + len)
        .find(|&b| b <= run_end && seg_end(b) && luhn(norm.chars.get(a..b).unwrap_or(&[])))
}

/// The Luhn check over ASCII digits.
pub fn luhn(digits: &[char]) -> bool {
    if digits.is_empty() {
        return false;
    }
    let mut sum = 0u32;
    for (k, c) in digits.iter().rev().enumerate() {
        let Some(mut d) = c.to_digit(10) else {
            return false;
        };
        if k % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum.is_multiple_of(10)
}

/// An email right after the cue that ends at normalized char `cue_end`, read from the original
/// text (normalization drops `@` and `.`). Returns its original char span.
fn email_after(
    norm: &Normalized,
    cue_end: usize,
    input: &ScanInput<'_>,
    text_start: usize,
) -> Option<(usize, usize)> {
    let re = EMAIL_AFTER_CUE.as_ref()?;
    let after = norm.origins.get(cue_end.checked_sub(1)?)?.end;
    let in_text = after.checked_sub(text_start)?;
    let (byte, _) = input.text.char_indices().nth(in_text)?;
    let rest = input.text.get(byte..)?;
    let caps = re.captures(rest)?;
    let m = caps.get(1)?;
    let start = in_text + rest.get(..m.start())?.chars().count();
    let end = start + m.as_str().chars().count();
    Some((text_start + start, text_start + end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_known_numbers() {
        let visa: Vec<char> = "4111111111111111".chars().collect();
        assert!(luhn(&visa));
        let bad: Vec<char> = "4111111111111112".chars().collect();
        assert!(!luhn(&bad));
    }

    #[test]
    fn an_order_number_is_not_a_card() {
        let chars = |s: &str| s.chars().collect::<Vec<char>>();
        assert!(after_id_cue(&chars("您的订单号4111"), 5));
        assert!(after_id_cue(&chars("单号是4111"), 3));
        assert!(!after_id_cue(&chars("卡号4111"), 2));
        assert!(!after_id_cue(&chars("4111"), 0));
    }
}
