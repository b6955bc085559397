//! `scrm alerts list|rescan`: compliance alerts from the command line.

use anyhow::Context as _;
use clap::Subcommand;

use crate::app::rescan;
use crate::domain::alerts::{self, AlertFilter};
use crate::platform::config::Config;
use crate::platform::coord;
use crate::platform::wecom::Wecom;
use crate::startup;

/// `scrm alerts …`.
#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// The newest alerts.
    List {
        /// The corp (default: the only configured corp).
        #[arg(long)]
        corp: Option<String>,
        /// Only this state: open, acknowledged, resolved, false_positive.
        #[arg(long)]
        state: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: i64,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run the content rules again over stored messages (resumes an interrupted scan).
    Rescan {
        /// The corp (default: the only configured corp).
        #[arg(long)]
        corp: Option<String>,
        /// Messages of the last N days.
        #[arg(long, default_value_t = 7)]
        days: i64,
    },
}

/// Runs `scrm alerts …`.
pub async fn run(config: &Config, command: AlertsCommand) -> anyhow::Result<i32> {
    let db = startup::open_database(config).await?;
    let code = match command {
        AlertsCommand::List {
            corp,
            state,
            limit,
            json,
        } => {
            let corp = super::apikey::corp_of(config, corp)?;
            let filter = AlertFilter {
                state,
                limit,
                ..AlertFilter::default()
            };
            let list = alerts::list(&db, corp.as_str(), &filter).await?;
            if json {
                for a in &list {
                    println!("{}", serde_json::to_string(a)?);
                }
            } else {
                println!(
                    "{:>6}  {:<19}  {:<22}  {:<8}  {:<14}  {:>5}  title",
                    "id", "raised (UTC)", "kind", "severity", "state", "items"
                );
                for a in &list {
                    println!(
                        "{:>6}  {:<19}  {:<22}  {:<8}  {:<14}  {:>5}  {}",
                        a.id,
                        super::utc(a.created_at_ms),
                        a.kind,
                        a.severity,
                        a.state,
                        a.evidence_count,
                        a.title
                    );
                }
            }
            0
        }
        AlertsCommand::Rescan { corp, days } => {
            let corp = super::apikey::corp_of(config, corp)?;
            if !(1..=365).contains(&days) {
                anyhow::bail!("--days must be between 1 and 365");
            }
            let rules = crate::domain::rule_book::RuleBook::new(
                db.clone(),
                std::sync::Arc::new(startup::load_rules(config)?),
            );
            let coord = coord::connect(config.redis_url.as_deref())
                .await
                .context("cannot reach the coordination store (SCRM_REDIS_URL)")?;
            let wecom = Wecom::new(config, coord).context("cannot build the WeCom API client")?;
            let since =
                crate::platform::db::now_ms().saturating_sub(days.saturating_mul(86_400_000));
            let job = rescan::start(&db, corp.as_str(), since).await?;
            let owner = format!("cli:{}", crate::pipeline::worker::instance_owner());
            match rescan::run(&db, &wecom, &rules, job, &owner).await {
                Ok(s) => {
                    println!(
                        "job {job}: {} messages scanned, {} rule hits, {} new alerts",
                        s.messages, s.hits, s.alerts_opened
                    );
                    0
                }
                Err(rescan::RescanError::Busy(id)) => {
                    eprintln!("job {id} 正在其他实例运行 / is running elsewhere");
                    3
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    db.close().await;
    Ok(code)
}
