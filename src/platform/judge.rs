//! The optional external judge (`[judge]`): an HTTP endpoint asked about borderline messages, with
//! a timeout and a budget per minute. Whatever goes wrong — a timeout, a refusal, an answer that
//! does not parse, the budget spent — the answer is `None` and the embedded detector's decision
//! stands.
//!
//! The exchange, one JSON object each way:
//!
//! ```text
//! POST {url}   {"text": "…", "prev": "…"|null, "context": "…"|null, "sender": "staff"|"customer",
//!               "score": 0.62, "category": "kickback"}
//! 200          {"alert": true, "category": "kickback", "reason": "…"}   (category, reason optional)
//! ```

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use wecom_sdk::Secret;

use crate::platform::config::JudgeSettings;

/// Answers larger than this are not read.
const MAX_ANSWER_BYTES: usize = 16 * 1024;

/// What the judge is asked.
#[derive(Debug, Clone, Serialize)]
pub struct Question<'a> {
    /// The message.
    pub text: &'a str,
    /// The sender's previous message.
    pub prev: Option<&'a str>,
    /// The other party's message it answers.
    pub context: Option<&'a str>,
    /// `staff` or `customer`.
    pub sender: &'a str,
    /// The embedded model's score.
    pub score: f32,
    /// The embedded model's category.
    pub category: &'a str,
}

/// What the judge answers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Answer {
    /// Whether compliance must see it.
    pub alert: bool,
    /// Its category, when the judge names one.
    #[serde(default)]
    pub category: Option<String>,
    /// Why, in the judge's words (kept in the alert's evidence).
    #[serde(default)]
    pub reason: Option<String>,
}

/// The client, with its budget.
#[derive(Debug)]
pub struct Judge {
    client: reqwest::Client,
    url: String,
    token: Option<Secret<String>>,
    /// Scores in `[low, high)` are borderline.
    pub low: f32,
    /// See `low`.
    pub high: f32,
    max_per_minute: u32,
    /// The current minute's start and the questions asked in it.
    spent: Mutex<(Instant, u32)>,
}

impl Judge {
    /// The judge `settings` configure; `None` when no URL is set.
    pub fn new(settings: &JudgeSettings) -> Option<Self> {
        let url = settings.url.clone()?;
        let timeout = Duration::from_millis(settings.timeout_ms);
        let client = match reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
        {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, "the external judge's HTTP client cannot be built; no judge");
                return None;
            }
        };
        Some(Self {
            client,
            url,
            token: settings.token.clone(),
            low: settings.low,
            high: settings.high,
            max_per_minute: settings.max_per_minute,
            spent: Mutex::new((Instant::now(), 0)),
        })
    }

    /// Whether the model's `score` is borderline.
    pub fn borderline(&self, score: f32) -> bool {
        (self.low..self.high).contains(&score)
    }

    /// Takes one question from this minute's budget.
    fn take_budget(&self) -> bool {
        let Ok(mut spent) = self.spent.lock() else {
            return false;
        };
        if spent.0.elapsed() >= Duration::from_secs(60) {
            *spent = (Instant::now(), 0);
        }
        if spent.1 >= self.max_per_minute {
            return false;
        }
        spent.1 += 1;
        true
    }

    /// Asks; `None` when the judge cannot answer in time (or the budget is spent).
    pub async fn ask(&self, question: &Question<'_>) -> Option<Answer> {
        if !self.take_budget() {
            metrics::counter!("scrm_scan_judge_total", "outcome" => "over_budget").increment(1);
            return None;
        }
        let mut request = self.client.post(&self.url).json(question);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose());
        }
        let outcome = async {
            let mut response = request.send().await.map_err(transport)?;
            if !response.status().is_success() {
                return Err("refused");
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(transport)? {
                if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                    return Err("too_large");
                }
                body.extend_from_slice(&chunk);
            }
            serde_json::from_slice::<Answer>(&body).map_err(|_| "malformed")
        }
        .await;
        match outcome {
            Ok(answer) => {
                metrics::counter!("scrm_scan_judge_total", "outcome" => "answered").increment(1);
                Some(answer)
            }
            Err(why) => {
                tracing::warn!(
                    outcome = why,
                    "the external judge did not answer; the detector decides alone"
                );
                metrics::counter!("scrm_scan_judge_total", "outcome" => why).increment(1);
                None
            }
        }
    }
}

/// The outcome of a request that failed in transport, for the metric and the log.
fn transport(e: reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else {
        "unreachable"
    }
}
