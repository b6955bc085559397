//! `scrm reassign`: plan and run the reassignment of a member's customers and group chats in the
//! foreground, with a progress bar and a table of outcomes; `status`, `retry` and `departures`.
//!
//! The command runs the same engine and outbox delivery as `serve` (claims in the database make
//! a server running beside it harmless). It returns once every item has left our hands: sent and
//! waiting on WeCom's 24 h window, scheduled for the next day, or final. The server finishes the
//! waiting ones (`transfer_result` polling, callbacks); `scrm reassign status JOB` shows them.

use std::time::Duration;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use wecom_sdk::CorpId;

use crate::app::outbox_delivery::OutboxQueue;
use crate::app::transfers::{departures, engine};
use crate::domain::transfers::{
    self, Count, ItemFilter, JobError, Mode, PlanError, PlanRequest, Progress, Strategy,
    TransferJob,
};
use crate::pipeline::worker::WorkerPool;
use crate::platform::config::Config;
use crate::platform::coord;
use crate::platform::db::{Db, now_ms};
use crate::platform::wecom::Wecom;
use crate::startup;

/// Options of `scrm reassign`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ReassignArgs {
    /// Status, retry, departures (without one: plan and run).
    #[command(subcommand)]
    pub command: Option<ReassignCommand>,
    /// The corp (default: the only configured corp).
    #[arg(long)]
    pub corp: Option<String>,
    /// The member handing over (userid).
    #[arg(long = "from")]
    pub from: Option<String>,
    /// The takers (userids, comma-separated).
    #[arg(long = "to", value_delimiter = ',')]
    pub to: Vec<String>,
    /// How customers are spread over several takers.
    #[arg(long, value_enum, default_value = "even")]
    pub strategy: StrategyArg,
    /// Resigned or on-job (default: resigned when the member has left).
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// Leave the member's group chats where they are.
    #[arg(long)]
    pub no_group_chats: bool,
    /// A note for the new owners, added to each customer's record at takeover.
    #[arg(long)]
    pub note: Option<String>,
    /// On-job only: what WeCom tells the customer (≤ 200 characters).
    #[arg(long)]
    pub message: Option<String>,
    /// Plan and show the preview; send nothing (run it later with --resume).
    #[arg(long)]
    pub dry_run: bool,
    /// Run (or continue) this job instead of planning a new one.
    #[arg(long, value_name = "JOB")]
    pub resume: Option<i64>,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `--strategy`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum StrategyArg {
    /// Every taker gets the same number (±1).
    Even,
    /// Each customer to the taker with the fewest customers.
    Workload,
}

/// `--mode`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ModeArg {
    /// 离职继承.
    Resigned,
    /// 在职继承.
    OnJob,
}

/// `scrm reassign …`.
#[derive(Debug, clap::Subcommand)]
pub enum ReassignCommand {
    /// A job's progress per taker and its failed items.
    Status {
        /// The job.
        job: i64,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Re-plan a job's failed items (optionally to another taker) and run them.
    Retry {
        /// The job.
        job: i64,
        /// Give the failed items to this member instead.
        #[arg(long = "to")]
        to: Option<String>,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Departed members with customers or group chats not yet reassigned.
    Departures {
        /// The corp (default: the only configured corp).
        #[arg(long)]
        corp: Option<String>,
        /// Read WeCom's unassigned list (get_unassigned_list) first.
        #[arg(long)]
        refresh: bool,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `scrm reassign`. Exit codes: 0 every item sent or final without failure, 1 some items
/// failed (`scrm reassign retry JOB`), 2 bad input.
pub async fn run(config: &Config, args: ReassignArgs) -> anyhow::Result<i32> {
    let db = startup::open_database(config).await?;
    let coord = coord::connect(config.redis_url.as_deref())
        .await
        .context("cannot reach the coordination store (SCRM_REDIS_URL)")?;
    let wecom = Wecom::new(config, coord).context("cannot build the WeCom API client")?;
    let actor = format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "operator".to_owned())
    );
    let code = match args.command {
        Some(ReassignCommand::Status { job, json }) => status(&db, job, json).await?,
        Some(ReassignCommand::Retry { job, to, json }) => {
            let found = transfers::job_by_id(&db, job)
                .await
                .with_context(|| format!("job {job} not found"))?;
            match transfers::retry_failed(&db, &found.corp_id, job, to.as_deref(), &actor, now_ms())
                .await
            {
                Ok(n) => {
                    if !json {
                        println!("任务 {job}：{n} 项失败条目已重新计划 (re-planned)");
                    }
                    drive(config, &db, &wecom, job, json).await?
                }
                Err(e) => refuse(&e.to_string()),
            }
        }
        Some(ReassignCommand::Departures {
            corp,
            refresh,
            json,
        }) => {
            let corp = pick_corp(&wecom, corp.as_deref())?;
            if refresh {
                let n = departures::refresh_unassigned(&db, &wecom, &corp, now_ms())
                    .await
                    .context("get_unassigned_list")?;
                if !json {
                    println!("企业微信待分配列表：{n} 位客户 (WeCom's unassigned list)");
                }
            }
            let list = departures::list_departures(&db, corp.as_str()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!("没有待分配的离职成员 (no departed member with customers left)");
            } else {
                println!(
                    "{:<20} {:<12} {:>8} {:>8}  open job",
                    "member", "name", "客户", "客户群"
                );
                for d in list {
                    println!(
                        "{:<20} {:<12} {:>8} {:>8}  {}",
                        d.user_id,
                        d.name,
                        d.customers,
                        d.group_chats,
                        d.open_job.map(|j| j.to_string()).unwrap_or_default()
                    );
                }
            }
            0
        }
        None => plan_and_run(config, &db, &wecom, &args, &actor).await?,
    };
    db.close().await;
    Ok(code)
}

fn pick_corp(wecom: &Wecom, corp: Option<&str>) -> anyhow::Result<CorpId> {
    let ids = wecom.corp_ids();
    let id = match corp {
        Some(c) if ids.iter().any(|i| i == c) => c.to_owned(),
        Some(c) => anyhow::bail!("corp {c} is not configured (add it under [[corps]])"),
        None => match ids.as_slice() {
            [one] => one.clone(),
            [] => anyhow::bail!("no corp configured: add a [[corps]] section to scrm.toml"),
            _ => anyhow::bail!("several corps are configured: name one with --corp"),
        },
    };
    CorpId::try_from(id).map_err(|e| anyhow::anyhow!("--corp: {e}"))
}

fn refuse(reason: &str) -> i32 {
    eprintln!("无法执行 (refused): {reason}");
    2
}

async fn plan_and_run(
    config: &Config,
    db: &Db,
    wecom: &Wecom,
    args: &ReassignArgs,
    actor: &str,
) -> anyhow::Result<i32> {
    let job_id = if let Some(job) = args.resume {
        let found = transfers::job_by_id(db, job)
            .await
            .with_context(|| format!("job {job} not found"))?;
        if args.dry_run {
            print_preview(db, &found, args.json).await?;
            return Ok(0);
        }
        job
    } else {
        let corp = pick_corp(wecom, args.corp.as_deref())?;
        let Some(from) = args.from.as_deref() else {
            return Ok(refuse("--from USERID is required (or --resume JOB)"));
        };
        if args.to.is_empty() {
            return Ok(refuse("--to USERID[,USERID…] is required"));
        }
        let req = PlanRequest {
            handover_user_id: from.to_owned(),
            takeover_user_ids: args.to.clone(),
            strategy: match args.strategy {
                StrategyArg::Even => Strategy::Even,
                StrategyArg::Workload => Strategy::Workload,
            },
            mode: args.mode.map(|m| match m {
                ModeArg::Resigned => Mode::Resigned,
                ModeArg::OnJob => Mode::OnJob,
            }),
            include_group_chats: Some(!args.no_group_chats),
            handover_note: args.note.clone(),
            transfer_success_msg: args.message.clone(),
            ..PlanRequest::default()
        };
        let planned = match transfers::plan(db, &corp, &req, actor, now_ms()).await {
            Ok(p) => p,
            Err(PlanError::Invalid { field, reason }) => {
                return Ok(refuse(&format!("{field}: {reason}")));
            }
            Err(PlanError::Store(e)) => return Err(e.into()),
        };
        if !args.json {
            println!(
                "计划 (plan) job {}: {} → {}，{} 位客户、{} 个客户群，{}",
                planned.job.id,
                planned.job.handover_user_id,
                args.to.join(","),
                planned.customers,
                planned.group_chats,
                mode_name(planned.job.mode())
            );
            if planned.already_in_transfer > 0 {
                println!(
                    "  {} 项已在其他任务中转交，未计入 (already moving in another job)",
                    planned.already_in_transfer
                );
            }
        }
        if args.dry_run {
            print_preview(db, &planned.job, args.json).await?;
            if !args.json {
                println!(
                    "未发送 (dry run)。执行：scrm reassign --resume {}",
                    planned.job.id
                );
            }
            return Ok(0);
        }
        planned.job.id
    };
    let job = transfers::job_by_id(db, job_id).await?;
    match transfers::start(db, job.corp_id.as_str(), job_id, actor, now_ms()).await {
        Ok(_) => {}
        Err(JobError::Store(e)) => return Err(e.into()),
        Err(e) => return Ok(refuse(&e.to_string())),
    }
    drive(config, db, wecom, job_id, args.json).await
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Resigned => "离职继承 (resigned)",
        Mode::OnJob => "在职继承 (on-job)",
    }
}

/// What the preview shows: per taker, and every flagged item.
async fn print_preview(db: &Db, job: &TransferJob, json: bool) -> anyhow::Result<()> {
    let counts = transfers::counts(db, job.id).await?;
    let items = transfers::items(
        db,
        job.id,
        &ItemFilter {
            limit: Some(5000),
            ..ItemFilter::default()
        },
    )
    .await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "job": job, "per_taker": counts, "items": items,
            }))?
        );
        return Ok(());
    }
    print_table(&counts);
    let flagged: Vec<_> = items.iter().filter(|i| i.flags != "[]").collect();
    if !flagged.is_empty() {
        println!("预计企业微信会拒绝 (WeCom will refuse):");
        for i in flagged.iter().take(50) {
            println!(
                "  {:<10} {:<34} → {:<16} {}",
                i.kind, i.target_id, i.takeover_user_id, i.flags
            );
        }
        if flagged.len() > 50 {
            println!("  … 共 {} 项 (in all)", flagged.len());
        }
    }
    Ok(())
}

/// Runs the engine and the outbox delivery until nothing of the job needs us now, showing
/// progress; then prints the outcome. Exit code 1 when items failed.
async fn drive(
    config: &Config,
    db: &Db,
    wecom: &Wecom,
    job_id: i64,
    json: bool,
) -> anyhow::Result<i32> {
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let deliveries = WorkerPool::spawn_queue(
        OutboxQueue::new(db.clone(), wecom.clone()),
        crate::pipeline::worker::WorkerSettings::from(&config.outbox),
        format!("cli:{}", coord::instance_id()),
        crate::pipeline::outbox::wakeups(),
        async move {
            let _ = stop_rx.wait_for(|stopped| *stopped).await;
        },
    );
    let bar = progress_bar(json);
    let settings = config.transfers.clone();
    let outcome: anyhow::Result<Progress> = async {
        loop {
            engine::advance(db, wecom, &settings, now_ms()).await?;
            let progress = Progress::of(&transfers::counts(db, job_id).await?);
            bar.set_length(u64::try_from(progress.total()).unwrap_or(0).max(1));
            bar.set_position(u64::try_from(progress.total() - progress.in_flight()).unwrap_or(0));
            bar.set_message(format!(
                "job {job_id}: {} 发送中 sending, {} 等待客户 waiting, {} 完成 done",
                progress.in_flight(),
                count(&progress, "waiting"),
                count(&progress, "done")
            ));
            if progress.in_flight() == 0 {
                return Ok(progress);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    .await;
    bar.finish_and_clear();
    let _ = stop_tx.send(true);
    deliveries.join().await;
    outcome?;
    let failed = report(db, job_id, json).await?;
    Ok(i32::from(failed > 0))
}

fn count(p: &Progress, state: &str) -> i64 {
    p.customers.get(state).copied().unwrap_or(0) + p.group_chats.get(state).copied().unwrap_or(0)
}

async fn status(db: &Db, job_id: i64, json: bool) -> anyhow::Result<i32> {
    report(db, job_id, json).await?;
    Ok(0)
}

/// Prints a job's outcome (per taker and state, the failed items) as a table or JSON. Returns how
/// many items failed.
async fn report(db: &Db, job_id: i64, json: bool) -> anyhow::Result<usize> {
    let job = transfers::job_by_id(db, job_id)
        .await
        .with_context(|| format!("job {job_id} not found"))?;
    let counts = transfers::counts(db, job_id).await?;
    let failed = transfers::items(
        db,
        job_id,
        &ItemFilter {
            state: Some("failed".to_owned()),
            limit: Some(5000),
            ..ItemFilter::default()
        },
    )
    .await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "job": job, "progress": Progress::of(&counts), "per_taker": counts, "failed": failed,
            }))?
        );
    } else {
        print_outcome(&job, &counts, &failed);
    }
    Ok(failed.len())
}

fn print_outcome(job: &TransferJob, counts: &[Count], failed: &[transfers::TransferItem]) {
    println!(
        "任务 (job) {}  {}  {} → {}  状态 (state): {}",
        job.id,
        mode_name(job.mode()),
        job.handover_user_id,
        job.taker_list().join(","),
        job.state
    );
    if !job.notice.is_empty() {
        println!("  注意 (notice): {}", job.notice);
    }
    print_table(counts);
    if !failed.is_empty() {
        println!("失败 (failed):");
        for i in failed.iter().take(50) {
            println!(
                "  {:<10} {:<34} → {:<16} {}",
                i.kind,
                i.target_id,
                i.takeover_user_id,
                i.reason.as_deref().unwrap_or("")
            );
        }
        if failed.len() > 50 {
            println!("  … 共 {} 项 (in all)", failed.len());
        }
        println!(
            "重新计划失败条目 (retry the failed ones): scrm reassign retry {} [--to USERID]",
            job.id
        );
    }
    let progress = Progress::of(counts);
    if count(&progress, "waiting") > 0 {
        println!(
            "{} 位客户等待接替（企业微信 24 小时内客户可拒绝），服务端会继续跟进；查看：scrm reassign status {}",
            count(&progress, "waiting"),
            job.id
        );
    }
    if count(&progress, "scheduled") > 0 {
        println!(
            "{} 个客户群超出今日额度（每位原群主每天 300 个），次日自动继续",
            count(&progress, "scheduled")
        );
    }
}

/// The per-taker table: one row per (kind, taker), a column per state.
fn print_table(counts: &[Count]) {
    let mut rows: std::collections::BTreeMap<(&str, &str), [i64; 7]> = Default::default();
    for c in counts {
        let row = rows
            .entry((c.kind.as_str(), c.takeover_user_id.as_str()))
            .or_default();
        if let Some(i) = transfers::ITEM_STATES.iter().position(|s| *s == c.state)
            && let Some(cell) = row.get_mut(i)
        {
            *cell += c.n;
        }
    }
    print!("  {:<10} {:<16}", "kind", "taker");
    for s in transfers::ITEM_STATES {
        print!(" {s:>9}");
    }
    println!();
    for ((kind, taker), cells) in rows {
        print!("  {kind:<10} {taker:<16}");
        for n in cells {
            print!(" {n:>9}");
        }
        println!();
    }
}

fn progress_bar(hidden: bool) -> ProgressBar {
    let bar = ProgressBar::new(1);
    if hidden || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {elapsed_precise} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
