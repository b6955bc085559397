//! The explanation of one decision: what `scrm rules check` prints and the console's 试一试 box
//! shows, from one piece of code.

use std::io::{self, Write};

use super::{Explanation, Hit, RuleLibrary, ScanInput, Sender};

/// One message run through a library, with why it was decided so.
#[derive(Debug, Clone)]
pub struct Check<'a> {
    input: ScanInput<'a>,
    rules: usize,
    /// What the scanner decided and why (hits with their spans, cancelled matches).
    pub explanation: Explanation,
}

impl<'a> Check<'a> {
    /// Scans `input` with `library`, keeping the explanation.
    pub fn run(library: &RuleLibrary, input: ScanInput<'a>) -> Self {
        Self {
            explanation: library.explain(&input),
            rules: library.len(),
            input,
        }
    }

    /// The message that was checked.
    pub fn input(&self) -> &ScanInput<'a> {
        &self.input
    }

    /// The explanation as text, line by line (`scrm rules check`'s output).
    pub fn write<W: Write>(&self, out: &mut W) -> io::Result<()> {
        writeln!(out, "消息 (text):           {}", self.input.text)?;
        if let Some(prev) = self.input.prev {
            writeln!(out, "上一条 (prev):         {prev}")?;
        }
        if let Some(context) = self.input.context {
            writeln!(out, "对方上一条 (context):  {context}")?;
        }
        let sender = match self.input.sender {
            Sender::Staff => "staff 员工",
            Sender::Customer => "customer 客户",
        };
        writeln!(out, "发送者 (sender):       {sender}")?;
        if let Some(msg_type) = self.input.msg_type {
            writeln!(out, "消息类型 (msg_type):   {msg_type}")?;
        }
        writeln!(
            out,
            "归一化 (normalized):   {}",
            self.explanation.normalized
        )?;
        writeln!(out, "规则数 (rules):        {}", self.rules)?;
        writeln!(out)?;
        if self.explanation.hits.is_empty() {
            writeln!(out, "命中 (hits): 无 (none)")?;
        } else {
            writeln!(out, "命中 (hits): {}", self.explanation.hits.len())?;
            for (n, hit) in self.explanation.hits.iter().enumerate() {
                write_hit(out, n + 1, hit, self.input.text)?;
            }
        }
        if !self.explanation.allowed.is_empty() {
            writeln!(out)?;
            writeln!(
                out,
                "被允许短语取消 (cancelled by allow phrases): {}",
                self.explanation.allowed.len()
            )?;
            for (rule, matched, phrase) in &self.explanation.allowed {
                writeln!(
                    out,
                    "  - 规则 (rule) {rule}: 匹配 (matched) \"{matched}\" ← 允许短语 (allow phrase) \"{phrase}\""
                )?;
            }
        }
        writeln!(out)?;
        match self.explanation.hits.first() {
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

    /// [`Check::write`] into a string.
    pub fn to_text(&self) -> String {
        let mut out = Vec::new();
        // Writing into a Vec cannot fail.
        let _ = self.write(&mut out);
        String::from_utf8_lossy(&out).into_owned()
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

/// `text` with every span wrapped in 【】 (overlapping spans are merged into the first).
pub fn highlight(text: &str, spans: &[(usize, usize)]) -> String {
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
    fn the_text_names_the_hit_and_the_decision() {
        let library = RuleLibrary::default_library();
        let check = Check::run(
            &library,
            ScanInput {
                text: "这单私下转账给我",
                prev: None,
                context: None,
                sender: Sender::Staff,
                msg_type: None,
            },
        );
        let text = check.to_text();
        assert!(text.contains("【私下转账】"), "{text}");
        assert!(text.contains("结论 (decision): 告警 ALERT"), "{text}");
        assert_eq!(check.explanation.hits[0].category, "private_payment");
        let clean = Check::run(
            &library,
            ScanInput {
                text: "明天下午三点见",
                prev: None,
                context: None,
                sender: Sender::Staff,
                msg_type: None,
            },
        );
        assert!(
            clean
                .to_text()
                .contains("结论 (decision): 不告警 (no alert)")
        );
        assert!(clean.explanation.hits.is_empty());
    }
}
