//! `scrm replay`: put stored callbacks back to pending so the workers process them again (after a
//! handler fix, or for dead letters). Safe because handlers are idempotent.

use anyhow::Context as _;
use clap::Args;

use crate::pipeline::inbox::{self, ReplayFilter};
use crate::platform::config::Config;
use crate::platform::db::{Db, now_ms};

/// `scrm replay …`: at least one of `--id`, `--since`, `--until`, `--type`, `--dead`, or `--all`.
/// Prints how many rows were put back.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// One row (the id from `scrm inbox list`).
    #[arg(long)]
    pub id: Option<i64>,
    /// Received at or after this time: RFC 3339 (`2024-05-01T08:00:00+08:00`) or epoch seconds.
    #[arg(long, value_parser = parse_time_ms)]
    pub since: Option<i64>,
    /// Received before this time: RFC 3339 or epoch seconds.
    #[arg(long, value_parser = parse_time_ms)]
    pub until: Option<i64>,
    /// `MsgType`, `Event` or `ChangeType`, e.g. `add_external_contact`.
    #[arg(long = "type")]
    pub event_type: Option<String>,
    /// Only this corp.
    #[arg(long)]
    pub corp: Option<String>,
    /// Only dead letters.
    #[arg(long)]
    pub dead: bool,
    /// Allow replaying without any of the selectors above (every row, or every row of `--corp`).
    #[arg(long)]
    pub all: bool,
}

/// Epoch seconds or RFC 3339, as epoch milliseconds.
fn parse_time_ms(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<i64>() {
        return secs
            .checked_mul(1000)
            .ok_or_else(|| format!("{text} 超出范围"));
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|e| {
            format!("无法识别的时间 {text:?}（{e}）：请用 RFC 3339（如 2024-05-01T08:00:00+08:00）或 Unix 秒数")
        })
}

/// Runs `scrm replay`. Exit code 2 when no selector was given without `--all`.
pub async fn run(config: &Config, args: ReplayArgs) -> anyhow::Result<i32> {
    let filter = ReplayFilter {
        id: args.id,
        since_ms: args.since,
        until_ms: args.until,
        event_type: args.event_type,
        corp_id: args.corp,
        dead_only: args.dead,
    };
    if filter.selects_everything() && !args.all {
        eprintln!(
            "未指定重放范围：请给出 --id、--since/--until、--type 或 --dead；确实要重放全部记录时加 --all"
        );
        return Ok(2);
    }
    let db = Db::connect(&config.effective_database_url())
        .await
        .context("cannot open the database")?;
    db.migrate()
        .await
        .context("cannot apply database migrations")?;
    let replayed = inbox::replay(&db, &filter, now_ms()).await;
    db.close().await;
    println!("{}", replayed?);
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::parse_time_ms;

    #[test]
    fn times_are_epoch_seconds_or_rfc3339() {
        assert_eq!(parse_time_ms("1700000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_time_ms("2023-11-14T22:13:20Z"), Ok(1_700_000_000_000));
        assert_eq!(
            parse_time_ms("2023-11-15T06:13:20.5+08:00"),
            Ok(1_700_000_000_500)
        );
        assert!(parse_time_ms("yesterday").is_err());
        assert!(parse_time_ms("9223372036854775807").is_err());
    }
}
