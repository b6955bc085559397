//! `scrm outbox list|show|retry|stats`: what we owe WeCom, and putting dead letters back.

use clap::Subcommand;

use crate::pipeline::outbox::{self, OutboxEntry, OutboxFilter};
use crate::platform::config::Config;
use crate::platform::db::{StoreError, now_ms};
use crate::startup;

/// `scrm outbox …`.
#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// List items, newest first.
    List {
        /// Only this corp.
        #[arg(long)]
        corp: Option<String>,
        /// Only this state: pending, done, dead.
        #[arg(long)]
        state: Option<String>,
        /// Only this kind: mark_tag, remark, add_corp_tag, edit_corp_tag, del_corp_tag,
        /// message_send.
        #[arg(long)]
        kind: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: i64,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one item with its payload, last error and WeCom's answer.
    Show {
        /// Item id (from `list`).
        id: i64,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Put dead letters back to pending (attempts reset): one by id, or every dead letter.
    Retry {
        /// Item id; omit with `--all-dead`.
        id: Option<i64>,
        /// Every dead letter (of `--corp` when given).
        #[arg(long, conflicts_with = "id")]
        all_dead: bool,
        /// Only this corp (with `--all-dead`).
        #[arg(long)]
        corp: Option<String>,
    },
    /// Counts by state and the oldest pending item's age.
    Stats {
        /// Only this corp.
        #[arg(long)]
        corp: Option<String>,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `scrm outbox …`. Exit code 0; 1 when the item does not exist or is not a dead letter;
/// 2 for `retry` without an id or `--all-dead`.
pub async fn run(config: &Config, command: OutboxCommand) -> anyhow::Result<i32> {
    let db = startup::open_database(config).await?;
    let code = match command {
        OutboxCommand::List {
            corp,
            state,
            kind,
            limit,
            json,
        } => {
            let filter = OutboxFilter {
                corp_id: corp,
                state,
                kind,
                limit: limit.clamp(1, 1000),
                ..OutboxFilter::default()
            };
            let items = outbox::list(&db, &filter).await?;
            if json {
                for item in &items {
                    println!("{}", serde_json::to_string(item)?);
                }
            } else {
                print_table(&items);
            }
            0
        }
        OutboxCommand::Show { id, json } => match outbox::get(&db, id).await {
            Ok(item) if json => {
                println!("{}", serde_json::to_string_pretty(&item)?);
                0
            }
            Ok(item) => {
                print_item(&item);
                0
            }
            Err(StoreError::NotFound) => {
                eprintln!("outbox 中没有 id 为 {id} 的记录 / no outbox item {id}");
                1
            }
            Err(e) => return Err(e.into()),
        },
        OutboxCommand::Retry { id, all_dead, corp } => {
            if id.is_none() && !all_dead {
                eprintln!("give an item id, or --all-dead to retry every dead letter");
                db.close().await;
                return Ok(2);
            }
            let n = outbox::retry(&db, id, corp.as_deref(), now_ms()).await?;
            match (id, n) {
                (Some(id), 0) => {
                    eprintln!(
                        "outbox item {id} 不存在或不是死信（只有 dead 状态可重试）/ \
                         is not a dead letter"
                    );
                    1
                }
                _ => {
                    println!("{n} item(s) back to pending; a running server delivers them");
                    0
                }
            }
        }
        OutboxCommand::Stats { corp, json } => {
            let stats = outbox::stats(&db, corp.as_deref(), now_ms()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&stats)?);
            } else {
                println!("pending        {:>10}", stats.pending);
                println!("done           {:>10}", stats.done);
                println!("dead           {:>10}", stats.dead);
                #[allow(clippy::cast_precision_loss, reason = "an age in seconds for display")]
                let lag = stats.oldest_pending_age_ms as f64 / 1000.0;
                println!("oldest pending {lag:>10.1} s");
            }
            0
        }
    };
    db.close().await;
    Ok(code)
}

fn print_table(items: &[OutboxEntry]) {
    println!(
        "{:>8}  {:<19}  {:<20}  {:<14}  {:<8}  {:>8}  {:<32}  last error",
        "id", "created (UTC)", "corp", "kind", "state", "attempts", "order key"
    );
    for i in items {
        println!(
            "{:>8}  {:<19}  {:<20}  {:<14}  {:<8}  {:>8}  {:<32}  {}",
            i.id,
            super::utc(i.created_at_ms),
            i.corp_id,
            i.kind,
            i.state,
            i.attempts,
            i.order_key,
            i.last_error.as_deref().unwrap_or("-")
        );
    }
}

fn print_item(i: &OutboxEntry) {
    let at = |ms: Option<i64>| ms.map_or_else(|| "-".to_owned(), super::utc);
    println!("id:          {}", i.id);
    println!("corp:        {}", i.corp_id);
    println!("kind:        {}", i.kind);
    println!("order key:   {}", i.order_key);
    println!("actor:       {}", i.actor);
    println!("state:       {} (attempts {})", i.state, i.attempts);
    println!("created:     {} UTC", super::utc(i.created_at_ms));
    println!("delivered:   {}", at(i.delivered_at_ms));
    println!("dead:        {}", at(i.dead_at_ms));
    println!("last error:  {}", i.last_error.as_deref().unwrap_or("-"));
    println!("result:      {}", i.result.as_deref().unwrap_or("-"));
    println!();
    println!("{}", i.payload);
}
