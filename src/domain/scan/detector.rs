//! The two stages together: the rules (fast, explainable, exact spans) and the model (phrasing the
//! rules never listed; warnings and refusals that only name the misconduct). What both the live
//! scan, the archive scan and the retroactive scan call.
//!
//! - The model alerts and a rule fired: the rule's hits (their spans and severity).
//! - The model alerts and no rule fired: one hit of the model's category (`rule_id` `model`),
//!   the whole message as its span.
//! - No rule fired and the model does not alert: nothing.
//! - A rule of the bundled library fired but the model is sure it is innocent (score under
//!   [`VETO`]: a warning, a refusal, training material naming the word): nothing. A corp's own
//!   rules (ids the bundled library does not have) always stand: the model never saw their hits.
//!
//! - A staff member's reply that agrees ("好的", "可以，转我吧") to the customer's proposal it answers
//!   (the other party's message before it, which the detector flags as a customer's message): one
//!   hit of the proposal's category (`rule_id` `exchange`) on the reply.
//!
//! A message the customer sent is a lower-severity `low` signal about the staff member in the
//! conversation (the alert layer attributes it to them and it joins their burst).

use super::model::{Driver, Model, Verdict};
use super::{Hit, RuleLibrary, ScanInput, ScanResult, Sender, Severity};

/// Under this score a rule's hit is taken back.
pub const VETO: f32 = 0.1;
/// What a customer's message must score (without a rule's hit) for an agreement to it to be an
/// exchange.
pub const PROPOSAL: f32 = 0.9;
/// What a message flagged with the other party's message must score alone.
pub const OWN_WORDS: f32 = 0.3;
/// Texts longer than this (bytes) are left to the rules: the model learned from chat messages.
pub const MODEL_MAX_BYTES: usize = 2_000;
/// The verdict on a text the model does not judge (longer than [`MODEL_MAX_BYTES`]).
const UNJUDGED: Verdict = Verdict {
    score: 0.0,
    alert: false,
    category: "",
};
/// The `rule_id` of a hit only the model found.
pub const MODEL_RULE: &str = "model";
/// The `rule_id` of a staff member's reply agreeing to a customer's proposal.
pub const EXCHANGE_RULE: &str = "exchange";
/// The `rule_id` of a hit the external judge raised on a message the model was unsure of.
pub const JUDGE_RULE: &str = "judge";

/// Rules and model.
#[derive(Debug, Clone, Copy)]
pub struct Detector<'a> {
    /// The first stage.
    pub rules: &'a RuleLibrary,
    /// The second stage.
    pub model: &'a Model,
}

/// A decision with its reasons (for `scrm rules check` and the alert's evidence).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Decision {
    /// What is raised.
    pub result: ScanResult,
    /// The rules' own hits, before the model's word.
    pub rule_hits: usize,
    /// The model's verdict.
    pub verdict: Verdict,
}

impl<'a> Detector<'a> {
    /// `rules` with the bundled model.
    pub fn bundled(rules: &'a RuleLibrary) -> Self {
        Self {
            rules,
            model: Model::bundled(),
        }
    }

    /// Scans one message.
    pub fn scan(&self, input: &ScanInput<'_>) -> ScanResult {
        self.decide(input).result
    }

    /// Scans one message and keeps the model's verdict.
    pub fn decide(&self, input: &ScanInput<'_>) -> Decision {
        if input.text.len() > MODEL_MAX_BYTES {
            // Longer than any chat message the model learned from (a document pasted, a file's
            // text): the rules alone.
            let rules = self.rules.scan(input);
            return Decision {
                rule_hits: rules.hits.len(),
                result: rules,
                verdict: UNJUDGED,
            };
        }
        // One normalization for both stages.
        let (rules, verdict) = self.rules.scan_then(input, |rules, normalized| {
            self.model.judge_normalized(input, rules, Some(normalized))
        });
        let rule_hits = rules.hits.len();
        let mut result = if !rules.hits.is_empty() {
            // The veto weighs the sentence the first hit is in, not the whole message: a message
            // of innocent sentences around one offer is not innocent.
            let veto = verdict.score < VETO && {
                let sentence = sentence_around(input.text, rules.hits[0].spans.first().copied());
                sentence.len() == input.text.len()
                    || self
                        .model
                        .judge(
                            &ScanInput {
                                text: sentence,
                                ..*input
                            },
                            &rules,
                        )
                        .score
                        < VETO
            };
            if veto {
                // Only the hits of the bundled rules, whose hits the model learned to weigh: a
                // corp's own rule (an id the default library does not have) always stands.
                let known = RuleLibrary::default_library();
                ScanResult {
                    hits: rules
                        .hits
                        .into_iter()
                        .filter(|h| known.rule(&h.rule_id).is_none())
                        .collect(),
                }
            } else {
                rules
            }
        } else if verdict.alert && self.watches(verdict.category) && self.own_words(input) {
            ScanResult {
                hits: vec![Hit {
                    rule_id: MODEL_RULE.to_owned(),
                    category: verdict.category.to_owned(),
                    severity: Severity::Medium,
                    spans: vec![(0, input.text.chars().count())],
                    matched: format!("模型 {:.0}%", verdict.score * 100.0),
                    across_messages: input.prev.is_some_and(|p| !p.is_empty())
                        || input.context.is_some_and(|c| !c.is_empty()),
                }],
            }
        } else {
            ScanResult::default()
        };
        if result.hits.is_empty()
            && let Some(hit) = self.exchange(input)
        {
            result.hits.push(hit);
        }
        if input.sender == Sender::Customer {
            for hit in &mut result.hits {
                hit.severity = Severity::Low;
            }
        }
        Decision {
            result,
            rule_hits,
            verdict,
        }
    }

    /// Whether a message the model flags with the other party's message before it says something
    /// itself: the message alone scores at least [`OWN_WORDS`] ("好的" after an innocent question is
    /// not an alert because of the question's words).
    fn own_words(&self, input: &ScanInput<'_>) -> bool {
        input.context.is_none_or(str::is_empty)
            || self
                .model
                .judge(
                    &ScanInput {
                        context: None,
                        ..*input
                    },
                    &ScanResult::default(),
                )
                .score
                >= OWN_WORDS
    }

    /// A staff member's reply that agrees to the customer's proposal it answers ("好的，转我吧" after
    /// "钱直接转你个人行吗"): the exchange is one event, raised on the reply (the staff member's act),
    /// of the proposal's category, with the reply as its span.
    fn exchange(&self, input: &ScanInput<'_>) -> Option<Hit> {
        let context = input.context.filter(|c| !c.is_empty())?;
        if input.sender != Sender::Staff
            || context.len() > MODEL_MAX_BYTES
            || !super::model::accepts(input.text)
        {
            return None;
        }
        let proposal = self.decide(&ScanInput {
            text: context,
            prev: None,
            context: None,
            sender: Sender::Customer,
            msg_type: None,
        });
        // A clear proposal only (a rule's hit, or the model sure of it): an agreement to an
        // ordinary request ("到了给我打电话" → "好的") is not an exchange.
        if proposal.rule_hits == 0 && proposal.verdict.score < PROPOSAL {
            return None;
        }
        let asked = proposal.result.alert()?;
        Some(Hit {
            rule_id: EXCHANGE_RULE.to_owned(),
            category: asked.category.clone(),
            severity: Severity::Medium,
            spans: vec![(0, input.text.chars().count())],
            matched: format!("客户提议 (proposal): {}", asked.matched),
            across_messages: true,
        })
    }

    /// Whether the library has a rule of `category`: the model speaks only for categories the
    /// library watches (a corp's own library may leave some out). Asked only of a message the
    /// model alone flags, not of every message.
    fn watches(&self, category: &str) -> bool {
        self.rules.rules().iter().any(|r| r.category == category)
    }

    /// The model's strongest features on one message.
    pub fn drivers(&self, input: &ScanInput<'_>, n: usize) -> Vec<Driver> {
        self.explain(input, n).1
    }

    /// The model's verdict on one message and its `n` strongest features, from one scan of the
    /// rules (an alert's evidence, `scrm rules check`).
    pub fn explain(&self, input: &ScanInput<'_>, n: usize) -> (Verdict, Vec<Driver>) {
        let rules = self.rules.scan(input);
        let verdict = if input.text.len() > MODEL_MAX_BYTES {
            UNJUDGED
        } else {
            self.model.judge(input, &rules)
        };
        let drivers = self.model.explain(input, &rules, n);
        (verdict, drivers)
    }
}

/// The sentence of `text` holding the char span `span` (up to the sentence marks around it), or
/// the whole text.
fn sentence_around(text: &str, span: Option<(usize, usize)>) -> &str {
    const MARKS: [char; 8] = ['。', '！', '？', '!', '?', '；', ';', '\n'];
    let Some((start, end)) = span else {
        return text;
    };
    let mut from = 0;
    let mut to = text.len();
    for (i, (byte, c)) in text.char_indices().enumerate() {
        if MARKS.contains(&c) {
            if i < start {
                from = byte + c.len_utf8();
            } else if i >= end {
                to = byte;
                break;
            }
        }
    }
    text.get(from..to).unwrap_or(text)
}
