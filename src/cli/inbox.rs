//! `scrm inbox count|list|show|stats`.

use anyhow::Context as _;
use clap::Subcommand;

use crate::pipeline::inbox::{self, InboxEntry};
use crate::pipeline::worker::{self, DeadLetter, InboxStats};
use crate::platform::config::Config;
use crate::platform::db::{Db, StoreError};

/// Dead letters `stats` lists under the numbers.
const DEAD_LETTERS_SHOWN: i64 = 10;

/// `scrm inbox …`.
#[derive(Debug, Subcommand)]
pub enum InboxCommand {
    /// Print the number of stored callbacks (one number).
    Count {
        /// Only this corp.
        #[arg(long)]
        corp: Option<String>,
    },
    /// List the newest stored callbacks.
    List {
        /// Only this corp.
        #[arg(long)]
        corp: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: i64,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Counts by state (pending, in flight, retrying, done, dead), the oldest pending row's age,
    /// and the newest dead letters with their reasons.
    Stats {
        /// Only this corp.
        #[arg(long)]
        corp: Option<String>,
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one stored callback with its decrypted plaintext.
    Show {
        /// Row id (from `list`).
        id: i64,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(config: &Config, command: InboxCommand) -> anyhow::Result<i32> {
    let db = Db::connect(&config.effective_database_url())
        .await
        .context("cannot open the database")?;
    db.migrate()
        .await
        .context("cannot apply database migrations")?;
    let code = match command {
        InboxCommand::Count { corp } => {
            println!("{}", inbox::count(&db, corp.as_deref()).await?);
            0
        }
        InboxCommand::List { corp, limit, json } => {
            let rows = inbox::list(&db, corp.as_deref(), limit.clamp(1, 10_000)).await?;
            if json {
                for row in &rows {
                    println!("{}", serde_json::to_string(row)?);
                }
            } else {
                print_table(&rows);
            }
            0
        }
        InboxCommand::Stats { corp, json } => {
            let stats = worker::stats(&db, corp.as_deref()).await?;
            let dead_letters =
                worker::dead_letters(&db, corp.as_deref(), DEAD_LETTERS_SHOWN).await?;
            if json {
                let report = StatsReport {
                    stats,
                    dead_letters,
                };
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_stats(&stats, &dead_letters);
            }
            0
        }
        InboxCommand::Show { id, json } => match inbox::get(&db, id).await {
            Ok(row) if json => {
                println!("{}", serde_json::to_string_pretty(&row)?);
                0
            }
            Ok(row) => {
                print_entry(&row);
                0
            }
            Err(StoreError::NotFound) => {
                eprintln!("inbox 中没有 id 为 {id} 的记录");
                1
            }
            Err(e) => return Err(e.into()),
        },
    };
    db.close().await;
    Ok(code)
}

fn received(row: &InboxEntry) -> String {
    super::utc(row.received_at_ms)
}

/// `scrm inbox stats --json`.
#[derive(serde::Serialize)]
struct StatsReport {
    #[serde(flatten)]
    stats: InboxStats,
    dead_letters: Vec<DeadLetter>,
}

fn print_stats(stats: &InboxStats, dead_letters: &[DeadLetter]) {
    println!("pending        {:>10}", stats.pending);
    println!("  in flight    {:>10}", stats.in_flight);
    println!("  retrying     {:>10}", stats.retrying);
    println!("done           {:>10}", stats.done);
    println!("dead           {:>10}", stats.dead);
    match stats.oldest_pending_ms {
        Some(oldest) => println!(
            "oldest pending {} UTC (lag {:.1} s)",
            super::utc(oldest),
            stats.lag_secs
        ),
        None => println!("oldest pending -"),
    }
    println!("max attempts   {:>10}", stats.attempts_max);
    if dead_letters.is_empty() {
        return;
    }
    println!();
    println!(
        "{:>8}  {:<19}  {:<20}  {:>8}  {:<40}  reason",
        "id", "dead (UTC)", "corp", "attempts", "kind"
    );
    for letter in dead_letters {
        let kind = [
            Some(letter.msg_type.as_str()),
            letter.event.as_deref(),
            letter.change_type.as_deref(),
        ]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("/");
        println!(
            "{:>8}  {:<19}  {:<20}  {:>8}  {:<40}  {}",
            letter.id,
            letter.dead_at_ms.map_or_else(|| "-".to_owned(), super::utc),
            letter.corp_id,
            letter.attempts,
            kind,
            letter.last_error.as_deref().unwrap_or("-")
        );
    }
}

fn kind(row: &InboxEntry) -> String {
    [
        Some(row.msg_type.as_str()),
        row.event.as_deref(),
        row.change_type.as_deref(),
    ]
    .into_iter()
    .flatten()
    .filter(|s| !s.is_empty())
    .collect::<Vec<_>>()
    .join("/")
}

fn print_table(rows: &[InboxEntry]) {
    println!(
        "{:>8}  {:<19}  {:<20}  {:<12}  {:<8}  kind",
        "id", "received (UTC)", "corp", "app", "state"
    );
    for row in rows {
        println!(
            "{:>8}  {:<19}  {:<20}  {:<12}  {:<8}  {}",
            row.id,
            received(row),
            row.corp_id,
            row.app,
            row.state,
            kind(row)
        );
    }
}

fn print_entry(row: &InboxEntry) {
    println!("id:          {}", row.id);
    println!("corp / app:  {} / {}", row.corp_id, row.app);
    println!("agent_id:    {}", row.agent_id.as_deref().unwrap_or("-"));
    println!("kind:        {}", kind(row));
    println!(
        "create_time: {}",
        row.create_time
            .map_or_else(|| "-".to_owned(), |t| t.to_string())
    );
    println!("received:    {} UTC", received(row));
    println!("state:       {} (attempts {})", row.state, row.attempts);
    println!("dedup_key:   {}", row.dedup_key);
    println!();
    println!("{}", row.body.as_deref().unwrap_or(""));
}
