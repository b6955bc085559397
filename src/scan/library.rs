//! A compiled rule library.

use super::{Hit, ScanInput, ScanResult};

/// Why [`RuleLibrary::explain`] decided what it did (for `scrm rules check`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Explanation {
    /// The text the matcher saw (`prev` and `text` joined, normalized).
    pub normalized: String,
    /// What fired, as [`RuleLibrary::scan`] reports it.
    pub hits: Vec<Hit>,
    /// Matches an allow-list phrase cancelled: (rule id, what matched, the allow phrase).
    pub allowed: Vec<(String, String, String)>,
}

/// Why a rule library cannot be used, naming the rule and field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{rule}.{field}: {reason}")]
pub struct LibraryError {
    /// The rule's id (or its index when it has none).
    pub rule: String,
    /// The field.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

/// Compiled rules.
#[derive(Debug, Clone, Default)]
pub struct RuleLibrary {}

impl RuleLibrary {
    /// Parses and compiles a library in the TOML format of `fixtures/rules/default.toml`.
    pub fn from_toml(_text: &str) -> Result<Self, LibraryError> {
        Ok(Self {})
    }

    /// The bundled default library for Chinese sales chat.
    pub fn default_library() -> Self {
        Self {}
    }

    /// Scans one message.
    pub fn scan(&self, _input: &ScanInput<'_>) -> ScanResult {
        ScanResult::default()
    }

    /// Scans one message and says why.
    pub fn explain(&self, _input: &ScanInput<'_>) -> Explanation {
        Explanation::default()
    }

    /// Every keyword as the library wrote it: (rule id, category, keyword). For the plain
    /// substring baseline of `scrm rules eval`.
    pub fn keywords(&self) -> Vec<(&str, &str, &str)> {
        Vec::new()
    }

    /// How many rules.
    pub fn len(&self) -> usize {
        0
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
