//! Text normalization with an offset map back to the original.
//!
//! Every normalized char remembers the `[start, end)` char range of the original it came from, so a
//! match in the normalized text can be highlighted in the original. The steps, in one pass per
//! char and two cheap passes over the result:
//!
//! 1. NFKC (full/half width, circled digits `①` → `1`), lowercase, traditional → simplified
//!    (`fixtures/rules/t2s.txt`); whitespace, punctuation, symbols, emoji and zero-width / format
//!    chars are dropped (only letters and digits survive).
//! 2. Chinese numerals (`一三八`, `壹叁捌`, `幺`, `两`, `〇`) → ASCII digits, but only inside runs of
//!    at least [`MIN_NUMERAL_RUN`] numerals or digits, so `一起` and `两个` stay words.
//! 3. Variants of the sensitive vocabulary (`fixtures/rules/variants.txt`: `薇信`, `V X`, `sx`,
//!    `zhuanzhang`, `微xin` …) → their canonical word.
//!
//! The same pipeline normalizes rule keywords when a library is compiled, so both sides agree.

use std::collections::HashMap;
use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, MatchKind};
use unicode_normalization::UnicodeNormalization;

/// Numerals in a run shorter than this stay as they are (`一一`, `三四个`).
pub const MIN_NUMERAL_RUN: usize = 5;

/// Flag: no original char was dropped between the previous normalized char and this one.
pub const JOINED: u8 = 1;
/// Flag: a clause break (sentence punctuation, line break, the start of a message) comes before
/// this char.
pub const BREAK: u8 = 2;

const T2S_TABLE: &str = include_str!("../../../fixtures/rules/t2s.txt");
const PINYIN_TABLE: &str = include_str!("../../../fixtures/rules/pinyin.txt");
const VARIANT_TABLE: &str = include_str!("../../../fixtures/rules/variants.txt");

/// First and last code point of the dense traditional → simplified table (CJK extension A and
/// the unified ideographs, where every common traditional char lives).
const HAN_FIRST: u32 = 0x3400;
const HAN_LAST: u32 = 0x9FFF;

/// Where one normalized char came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// First original char (index in chars, not bytes).
    pub start: usize,
    /// One past the last original char.
    pub end: usize,
    /// Byte offset of this char in [`Normalized::text`].
    pub byte: usize,
    /// [`JOINED`] and [`BREAK`].
    pub flags: u8,
}

/// A normalized text and its map back to the original.
#[derive(Debug, Clone, Default)]
pub struct Normalized {
    /// The normalized text.
    pub text: String,
    /// The normalized chars (the chars of `text`).
    pub chars: Vec<char>,
    /// For every normalized char, where it came from.
    pub origins: Vec<Origin>,
    spare_chars: Vec<char>,
    spare_origins: Vec<Origin>,
}

impl Normalized {
    /// Becomes a copy of `other`, reusing its own buffers.
    pub fn copy_from(&mut self, other: &Self) {
        self.text.clone_from(&other.text);
        self.chars.clone_from(&other.chars);
        self.origins.clone_from(&other.origins);
    }

    /// The normalized char index that starts at byte `byte` of `text` (or the first one after it).
    pub fn char_at_byte(&self, byte: usize) -> usize {
        self.origins.partition_point(|o| o.byte < byte)
    }

    /// The original `[start, end)` char range of the normalized chars `[start, end)`.
    pub fn original_span(&self, start: usize, end: usize) -> Option<(usize, usize)> {
        let first = self.origins.get(start)?;
        let last = self.origins.get(end.checked_sub(1)?)?;
        Some((first.start, last.end.max(first.start)))
    }

    /// Whether normalized char `i` is a Latin letter glued (in the original) to a Latin letter
    /// before it: a match may not start or end between the two.
    pub fn glued_latin_at(&self, i: usize) -> bool {
        i > 0
            && self.chars.get(i).is_some_and(char::is_ascii_alphabetic)
            && self.chars.get(i - 1).is_some_and(char::is_ascii_alphabetic)
            && self.origins.get(i).is_some_and(|o| o.flags & JOINED != 0)
    }

    /// Whether a clause break separates normalized chars `from` and `to` (exclusive of `from`,
    /// inclusive of `to`).
    pub fn has_break_between(&self, from: usize, to: usize) -> bool {
        let to = to.min(self.origins.len().saturating_sub(1));
        self.origins
            .get(from.saturating_add(1)..=to)
            .is_some_and(|os| os.iter().any(|o| o.flags & BREAK != 0))
    }

    fn clear(&mut self) {
        self.text.clear();
        self.chars.clear();
        self.origins.clear();
    }
}

/// The normalizer: its tables, parsed once.
#[derive(Debug)]
pub struct Normalizer {
    t2s: Vec<char>,
    pinyin: HashMap<char, &'static str>,
    variants: Option<AhoCorasick>,
    /// Per variant pattern: the canonical word, and whether its first / last char is a Latin
    /// letter (then that end must not be glued to another Latin letter of the original).
    variant_info: Vec<VariantInfo>,
}

#[derive(Debug, Clone)]
struct VariantInfo {
    canonical: Vec<char>,
    latin_start: bool,
    latin_end: bool,
}

static NORMALIZER: LazyLock<Normalizer> = LazyLock::new(Normalizer::build);

/// Normalizes one text.
pub fn normalize(text: &str) -> Normalized {
    let mut out = Normalized::default();
    Normalizer::global().normalize_into(&mut out, &[text]);
    out
}

impl Normalizer {
    /// The process-wide normalizer (tables from `fixtures/rules/`).
    pub fn global() -> &'static Normalizer {
        &NORMALIZER
    }

    fn build() -> Self {
        let t2s = parse_t2s(T2S_TABLE);
        let pinyin = parse_pinyin(PINYIN_TABLE);
        let mut n = Normalizer {
            t2s,
            pinyin: pinyin.clone(),
            variants: None,
            variant_info: Vec::new(),
        };
        let mut forms: Vec<String> = Vec::new();
        let mut info: Vec<VariantInfo> = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut add = |n: &Normalizer, variant: &str, canonical: &str| {
            let v = n.simple_form(variant);
            let c: Vec<char> = n.simple_form(canonical).chars().collect();
            if v.is_empty() || c.is_empty() || v.chars().eq(c.iter().copied()) {
                return;
            }
            if seen.contains_key(&v) {
                return;
            }
            let latin_start = v.chars().next().is_some_and(|ch| ch.is_ascii_alphabetic());
            let latin_end = v.chars().last().is_some_and(|ch| ch.is_ascii_alphabetic());
            seen.insert(v.clone(), forms.len());
            forms.push(v);
            info.push(VariantInfo {
                canonical: c,
                latin_start,
                latin_end,
            });
        };
        for line in VARIANT_TABLE.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(words) = line.strip_prefix("@pinyin") {
                for word in words.split_whitespace() {
                    for variant in pinyin_mixes(word, &pinyin) {
                        add(&n, &variant, word);
                    }
                }
            } else if let Some((canonical, variants)) = line.split_once('=') {
                for variant in variants.split_whitespace() {
                    add(&n, variant, canonical.trim());
                }
            }
        }
        n.variants = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&forms)
            .ok();
        n.variant_info = info;
        n
    }

    /// Every mix of Han chars and their pinyin in `word` (already normalized), except `word`
    /// itself: `跟我走` → `genwozou`, `跟wo走`, … Words of five chars or more get only the mixes
    /// with at most two syllables, and their full pinyin. Empty if a char has no pinyin.
    pub fn pinyin_variants(&self, word: &str) -> Vec<String> {
        pinyin_mixes(word, &self.pinyin)
    }

    /// Step 1 only (no numerals, no variants): for variant tables.
    fn simple_form(&self, s: &str) -> String {
        let mut out = Normalized::default();
        self.push_chars(&mut out, s, 0, true);
        out.chars.iter().collect()
    }

    /// Normalizes `parts` (e.g. the previous message and this one) as one text; the original
    /// char indices count through all parts in order. Only the first part starts a clause: a
    /// sentence split over two messages (`公司不让` | `加私人微信`) is still one clause.
    pub fn normalize_into(&self, out: &mut Normalized, parts: &[&str]) {
        out.clear();
        let mut offset = 0;
        for (k, part) in parts.iter().enumerate() {
            offset = self.push_chars(out, part, offset, k == 0);
        }
        convert_numerals(out);
        rebuild_text(out);
        if self.apply_variants(out) {
            rebuild_text(out);
        }
    }

    /// Step 1 over one part; returns the original char offset after it.
    fn push_chars(
        &self,
        out: &mut Normalized,
        s: &str,
        offset: usize,
        starts_clause: bool,
    ) -> usize {
        let mut pending: u8 = if starts_clause { BREAK } else { 0 };
        let mut gap = true;
        let mut idx = offset;
        for c in s.chars() {
            let start = idx;
            idx += 1;
            let code = u32::from(c);
            if c.is_ascii() {
                if c.is_ascii_alphanumeric() {
                    self.keep(out, c.to_ascii_lowercase(), start, &mut pending, &mut gap);
                } else {
                    drop_char(c, &mut pending, &mut gap);
                }
            } else if (0x4E00..=HAN_LAST).contains(&code) {
                let d = self.to_simplified(c);
                self.keep(out, d, start, &mut pending, &mut gap);
            } else if (0xFF01..=0xFF5E).contains(&code) {
                // Full-width ASCII: NFKC would do the same, only slower.
                let d = char::from_u32(code - 0xFEE0).unwrap_or(c);
                if d.is_ascii_alphanumeric() {
                    self.keep(out, d.to_ascii_lowercase(), start, &mut pending, &mut gap);
                } else {
                    drop_char(d, &mut pending, &mut gap);
                }
            } else {
                let mut kept_any = false;
                for d in std::iter::once(c).nfkc() {
                    for e in d.to_lowercase() {
                        let e = self.to_simplified(e);
                        if e.is_alphanumeric() {
                            self.keep(out, e, start, &mut pending, &mut gap);
                            kept_any = true;
                        } else {
                            drop_char(e, &mut pending, &mut gap);
                        }
                    }
                }
                if !kept_any {
                    drop_char(c, &mut pending, &mut gap);
                }
            }
        }
        idx
    }

    #[inline]
    fn keep(&self, out: &mut Normalized, c: char, start: usize, pending: &mut u8, gap: &mut bool) {
        let mut flags = *pending;
        if !*gap {
            flags |= JOINED;
        }
        out.chars.push(c);
        out.origins.push(Origin {
            start,
            end: start + 1,
            byte: 0,
            flags,
        });
        *pending = 0;
        *gap = false;
    }

    #[inline]
    fn to_simplified(&self, c: char) -> char {
        let code = u32::from(c);
        if (HAN_FIRST..=HAN_LAST).contains(&code) {
            let i = usize::try_from(code - HAN_FIRST).unwrap_or(usize::MAX);
            self.t2s.get(i).copied().unwrap_or(c)
        } else {
            c
        }
    }

    /// Replaces variants by their canonical word; whether anything changed (then `text` is stale).
    fn apply_variants(&self, out: &mut Normalized) -> bool {
        let Some(ac) = &self.variants else {
            return false;
        };
        if out.chars.is_empty() {
            return false;
        }
        let mut found = false;
        let mut next_copy = 0; // next normalized char not yet copied
        out.spare_chars.clear();
        out.spare_origins.clear();
        for m in ac.find_iter(&out.text) {
            let Some(info) = self.variant_info.get(m.pattern().as_usize()) else {
                continue;
            };
            let cs = out.char_at_byte(m.start());
            let ce = out.char_at_byte(m.end());
            if cs >= ce || cs < next_copy || !latin_ends_free(out, cs, ce, info) {
                continue;
            }
            let (Some(first), Some(last)) = (out.origins.get(cs), out.origins.get(ce - 1)) else {
                continue;
            };
            let (first, last) = (*first, *last);
            found = true;
            out.spare_chars
                .extend_from_slice(out.chars.get(next_copy..cs).unwrap_or(&[]));
            out.spare_origins
                .extend_from_slice(out.origins.get(next_copy..cs).unwrap_or(&[]));
            for (k, &c) in info.canonical.iter().enumerate() {
                let flags = if k == 0 { first.flags } else { JOINED };
                out.spare_chars.push(c);
                out.spare_origins.push(Origin {
                    start: first.start,
                    end: last.end,
                    byte: 0,
                    flags,
                });
            }
            next_copy = ce;
        }
        if !found {
            return false;
        }
        out.spare_chars
            .extend_from_slice(out.chars.get(next_copy..).unwrap_or(&[]));
        out.spare_origins
            .extend_from_slice(out.origins.get(next_copy..).unwrap_or(&[]));
        std::mem::swap(&mut out.chars, &mut out.spare_chars);
        std::mem::swap(&mut out.origins, &mut out.spare_origins);
        true
    }
}

/// A variant whose end is a Latin letter glued (in the original) to another Latin letter is part of
/// a word (`wx` in `wxyz`), not a variant.
fn latin_ends_free(out: &Normalized, cs: usize, ce: usize, info: &VariantInfo) -> bool {
    let glued_latin = |i: usize| {
        out.chars.get(i).is_some_and(|c| c.is_ascii_alphabetic())
            && out.origins.get(i).is_some_and(|o| o.flags & JOINED != 0)
    };
    let start_ok = !info.latin_start
        || cs == 0
        || !(glued_latin(cs)
            && out
                .chars
                .get(cs - 1)
                .is_some_and(|c| c.is_ascii_alphabetic()));
    let end_ok = !info.latin_end || !glued_latin(ce);
    start_ok && end_ok
}

fn drop_char(c: char, pending: &mut u8, gap: &mut bool) {
    *gap = true;
    if is_clause_break(c) {
        *pending |= BREAK;
    }
}

fn is_clause_break(c: char) -> bool {
    matches!(
        c,
        ',' | '.'
            | '!'
            | '?'
            | ';'
            | '\n'
            | '\r'
            | '。'
            | '、'
            | '…'
            | '，'
            | '！'
            | '？'
            | '；'
            | '~'
    )
}

/// The digit a Chinese numeral stands for in a digit run.
pub fn numeral_digit(c: char) -> Option<char> {
    Some(match c {
        '0'..='9' => c,
        '零' | '〇' | '洞' => '0',
        '一' | '壹' | '幺' | '么' => '1',
        '二' | '贰' | '两' => '2',
        '三' | '叁' | '参' => '3',
        '四' | '肆' => '4',
        '五' | '伍' => '5',
        '六' | '陆' => '6',
        '七' | '柒' | '拐' => '7',
        '八' | '捌' => '8',
        '九' | '玖' | '勾' => '9',
        _ => return None,
    })
}

fn convert_numerals(out: &mut Normalized) {
    let n = out.chars.len();
    let mut i = 0;
    while i < n {
        let Some(c) = out.chars.get(i).copied() else {
            break;
        };
        if numeral_digit(c).is_none() {
            i += 1;
            continue;
        }
        let mut j = i;
        let mut has_han = false;
        while let Some(&d) = out.chars.get(j) {
            if numeral_digit(d).is_none() {
                break;
            }
            has_han |= !d.is_ascii_digit();
            j += 1;
        }
        if has_han && j - i >= MIN_NUMERAL_RUN {
            for c in out.chars.get_mut(i..j).unwrap_or(&mut []) {
                if let Some(d) = numeral_digit(*c) {
                    *c = d;
                }
            }
        }
        i = j;
    }
}

fn rebuild_text(out: &mut Normalized) {
    out.text.clear();
    for (c, o) in out.chars.iter().zip(out.origins.iter_mut()) {
        o.byte = out.text.len();
        out.text.push(*c);
    }
}

fn parse_t2s(table: &str) -> Vec<char> {
    let size = usize::try_from(HAN_LAST - HAN_FIRST + 1).unwrap_or(0);
    let mut dense: Vec<char> = (HAN_FIRST..=HAN_LAST).filter_map(char::from_u32).collect();
    dense.truncate(size);
    for line in table.lines() {
        if line.starts_with('#') {
            continue;
        }
        let mut cs = line.chars();
        let (Some(t), Some(s)) = (cs.next(), cs.next()) else {
            continue;
        };
        let code = u32::from(t);
        if (HAN_FIRST..=HAN_LAST).contains(&code) {
            let i = usize::try_from(code - HAN_FIRST).unwrap_or(usize::MAX);
            if let Some(slot) = dense.get_mut(i) {
                *slot = s;
            }
        }
    }
    dense
}

fn parse_pinyin(table: &'static str) -> HashMap<char, &'static str> {
    let mut map = HashMap::new();
    for line in table.lines() {
        if line.starts_with('#') {
            continue;
        }
        if let Some((syllable, chars)) = line.split_once(' ') {
            for c in chars.chars() {
                map.entry(c).or_insert(syllable);
            }
        }
    }
    map
}

/// Every mix of Han chars and pinyin syllables of `word` except the word itself (`微信` →
/// `wei信`, `微xin`, `weixin`). Words over 4 chars get the mixes with at most two syllables and
/// the full pinyin; words over 12 chars none.
fn pinyin_mixes(word: &str, pinyin: &HashMap<char, &str>) -> Vec<String> {
    let chars: Vec<char> = word.chars().collect();
    let Some(syllables) = chars
        .iter()
        .map(|c| pinyin.get(c).copied())
        .collect::<Option<Vec<_>>>()
    else {
        return Vec::new();
    };
    let n = chars.len();
    if n == 0 || n > 12 {
        return Vec::new();
    }
    let full = (1u32 << n) - 1;
    let masks: Vec<u32> = if n <= 4 {
        (1..=full).collect()
    } else {
        (1..=full)
            .filter(|m| m.count_ones() <= 2 || *m == full)
            .collect()
    };
    masks
        .into_iter()
        .map(|mask| {
            let mut s = String::new();
            for (k, (c, py)) in chars.iter().zip(&syllables).enumerate() {
                if mask & (1 << k) != 0 {
                    s.push_str(py);
                } else {
                    s.push(*c);
                }
            }
            s
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        normalize(s).text
    }

    #[test]
    fn width_case_traditional_and_separators() {
        assert_eq!(norm("私 下 轉 賬"), "私下转账");
        assert_eq!(norm("ＡＢＣ１２３"), "abc123");
        assert_eq!(norm("私\u{200B}下\u{FEFF}转\u{2060}账"), "私下转账");
        assert_eq!(norm("私😀下🙏🏻转❤️账"), "私下转账");
        assert_eq!(norm("①③⑧"), "138");
    }

    #[test]
    fn numerals_only_in_runs() {
        assert_eq!(norm("一三八一二三四五六七八"), "13812345678");
        assert_eq!(norm("幺叁捌 壹贰叁肆"), "1381234");
        assert_eq!(norm("我们一起两个人"), "我们一起两个人");
    }

    #[test]
    fn variants_become_canonical() {
        assert_eq!(norm("加我薇信"), "加我微信");
        assert_eq!(norm("加我V X"), "加我微信");
        assert_eq!(norm("sx转账"), "私下转账");
        assert_eq!(norm("微xin"), "微信");
        assert_eq!(norm("zhuanzhang"), "转账");
    }

    #[test]
    fn latin_variants_not_inside_words() {
        assert_eq!(norm("wxyz"), "wxyz");
        assert_eq!(norm("thanks xiaoming"), "thanksxiaoming");
        assert_eq!(norm("pizza"), "pizza");
    }

    #[test]
    fn origins_map_back() {
        let n = normalize("私 下\u{200B}转账");
        assert_eq!(n.text, "私下转账");
        let spans: Vec<(usize, usize)> = n.origins.iter().map(|o| (o.start, o.end)).collect();
        assert_eq!(spans, vec![(0, 1), (2, 3), (4, 5), (5, 6)]);
        let v = normalize("加V X");
        assert_eq!(v.text, "加微信");
        assert_eq!(v.original_span(1, 3), Some((1, 4)));
    }
}
