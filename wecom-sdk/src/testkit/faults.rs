//! Scripted faults: what a flaky WeCom (or the network in front of it) does to API calls.

use std::time::Duration;

/// A fault to apply to the next `times` matching API calls (admin routes are never faulted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The API path as in [`EmulatorState::calls`](super::EmulatorState::calls), e.g.
    /// `"externalcontact/get"` or `"gettoken"`; `None` matches every API.
    pub api: Option<String>,
    /// What happens.
    pub kind: FaultKind,
    /// How many calls it applies to. Faults are consumed in the order they were injected.
    pub times: u32,
}

/// What a faulted call gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// HTTP 200 `{"errcode":-1,"errmsg":"system busy…"}`.
    Busy,
    /// HTTP 200 with this errcode (e.g. 45009, 42001, 84061) and WeCom's errmsg for it.
    Errcode(i64),
    /// This HTTP status (e.g. 502) with a short plain-text body (`bad gateway`).
    Http(u16),
    /// HTTP 200 with a body that is not JSON.
    Garbage,
    /// No answer for 120 s (clients time out first), then HTTP 504.
    Silence,
    /// The normal answer, after this delay. The call counts as in flight meanwhile.
    Latency(Duration),
    /// The call takes effect, then its answer is lost on the way back (HTTP 504 from a gateway):
    /// what a caller sees when WeCom did the work but the response never arrived.
    AnswerLost,
}

impl Fault {
    /// Whether this fault applies to a call of `api`.
    pub(crate) fn matches(&self, api: &str) -> bool {
        self.times > 0 && self.api.as_deref().is_none_or(|a| a == api)
    }
}

/// How long [`FaultKind::Silence`] keeps a request open.
pub(crate) const SILENCE: Duration = Duration::from_secs(120);

/// The body of a [`FaultKind::Garbage`] answer: what a misconfigured proxy returns.
pub(crate) const GARBAGE: &str =
    "<html><body><h1>upstream sent an invalid response</h1>\u{0}\u{7f}";
