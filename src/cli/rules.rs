//! `scrm rules test|check|eval`: the content scanner on a file, on one message, and on the
//! labeled set.

use clap::Subcommand;

use crate::config::Config;

/// `scrm rules …`.
#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Scan JSON lines `{"id", "text", "prev", "sender"}` and print one JSON line of the decision
    /// per input.
    Test {
        /// The input file (`-` for stdin).
        #[arg(long)]
        input: String,
        /// A rule library (TOML) instead of the bundled default.
        #[arg(long)]
        rules: Option<String>,
    },
    /// Explain the decision for one message.
    Check {
        /// The message text.
        text: String,
        /// The previous message of the same sender.
        #[arg(long)]
        prev: Option<String>,
        /// `staff` or `customer`.
        #[arg(long, default_value = "staff")]
        sender: String,
        /// A rule library (TOML) instead of the bundled default.
        #[arg(long)]
        rules: Option<String>,
    },
    /// Recall and false-positive rate on a labeled set, per category and evasion technique,
    /// against a plain substring filter.
    Eval {
        /// The labeled set (default: the bundled one).
        #[arg(long)]
        set: Option<String>,
        /// A rule library (TOML) instead of the bundled default.
        #[arg(long)]
        rules: Option<String>,
        /// One JSON object instead of tables.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `scrm rules …`.
pub async fn run(_config: &Config, _command: RulesCommand) -> anyhow::Result<i32> {
    anyhow::bail!("scrm rules: not built yet")
}
