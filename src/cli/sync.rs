//! `scrm sync [--corp ID]`: run (or resume) the full sync and reconciliation in the foreground,
//! with a progress bar, then print what it repaired.

use std::time::Duration;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::app::sync::{self, SyncError, SyncProgress, SyncSummary};
use crate::pipeline::jobs;
use crate::platform::config::Config;
use crate::platform::coord::{self, LeaderLock};
use crate::platform::wecom::Wecom;
use crate::startup;

/// Options of `scrm sync`.
#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    /// Only this corp (default: every configured corp).
    #[arg(long)]
    pub corp: Option<String>,
    /// Print the outcome as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Show the newest sync jobs instead of running one.
    #[arg(long)]
    pub status: bool,
}

/// Runs `scrm sync`. Exit code 0 when every corp synced, 3 when another instance was running one,
/// 1 when a sync failed (it resumes from its checkpoint next time).
pub async fn run(config: &Config, args: SyncArgs) -> anyhow::Result<i32> {
    let db = startup::open_database(config).await?;
    if args.status {
        let list = jobs::list(&db, args.corp.as_deref(), sync::JOB_KIND, 20).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&list)?);
        } else {
            println!(
                "{:>6}  {:<22} {:<8} {:>11}  summary",
                "job", "corp", "state", "progress"
            );
            for j in list {
                println!(
                    "{:>6}  {:<22} {:<8} {:>5}/{:<5}  {}",
                    j.id,
                    j.corp_id,
                    j.state,
                    j.progress_done,
                    j.progress_total,
                    j.error.unwrap_or(j.summary)
                );
            }
        }
        db.close().await;
        return Ok(0);
    }
    let coord = coord::connect(config.redis_url.as_deref())
        .await
        .context("cannot reach the coordination store (SCRM_REDIS_URL)")?;
    let wecom = Wecom::new(config, coord.clone()).context("cannot build the WeCom API client")?;
    let corps = match &args.corp {
        Some(c) if wecom.corp_ids().contains(c) => vec![c.clone()],
        Some(c) => anyhow::bail!("corp {c} is not configured (add it under [[corps]])"),
        None => wecom.corp_ids(),
    };
    if corps.is_empty() {
        anyhow::bail!(
            "no corp configured: add a [[corps]] section with an app secret to scrm.toml"
        );
    }
    let owner = coord::instance_id();
    let mut code = 0;
    let mut results: Vec<serde_json::Value> = Vec::new();
    for corp in corps {
        let corp = wecom_sdk::CorpId::try_from(corp).map_err(|e| anyhow::anyhow!("corp: {e}"))?;
        let leader = LeaderLock::new(
            coord.clone(),
            &format!("sync:{corp}"),
            &owner,
            Duration::from_secs(120),
        );
        if !leader.acquire().await? {
            eprintln!(
                "企业 {corp}：另一个实例正在同步 (another instance is running this corp's sync)"
            );
            code = code.max(3);
            continue;
        }
        let bar = progress_bar(args.json);
        bar.set_message(format!("{corp} 同步中"));
        let report = |p: &SyncProgress| {
            bar.set_length(u64::try_from(p.total).unwrap_or(1));
            bar.set_position(u64::try_from(p.done).unwrap_or(0));
            bar.set_message(format!(
                "{corp} job {} {}: {} relations, {} chats, {} calls",
                p.job_id,
                p.phase,
                p.summary.relations_seen,
                p.summary.chats_seen,
                p.summary.api_calls
            ));
        };
        let outcome = sync::run(&db, &wecom, &corp, &owner, Some(&leader), &report).await;
        bar.finish_and_clear();
        let _ = leader.release().await;
        match outcome {
            Ok((job_id, summary)) => {
                if args.json {
                    results.push(
                        serde_json::json!({"corp_id": corp, "job_id": job_id, "summary": summary}),
                    );
                } else {
                    print_summary(corp.as_str(), job_id, &summary);
                }
            }
            Err(SyncError::Busy { job_id, .. }) => {
                eprintln!("企业 {corp}：另一个实例正在同步 (job {job_id:?})");
                code = code.max(3);
            }
            Err(e) => {
                eprintln!(
                    "企业 {corp}：同步中断 (sync stopped): {e}. 下次运行会从检查点继续 (the next run resumes from the checkpoint)."
                );
                code = 1;
            }
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    }
    db.close().await;
    Ok(code)
}

pub(super) fn progress_bar(hidden: bool) -> ProgressBar {
    let bar = ProgressBar::new(1);
    if hidden || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} [{bar:30}] {percent:>3}% {elapsed_precise} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn print_summary(corp: &str, job_id: i64, s: &SyncSummary) {
    println!("企业 {corp} 同步完成 (job {job_id})");
    let rows = [
        ("跟进成员 follow users", s.follow_users),
        ("客户关系 relations read", s.relations_seen),
        ("补录新增 missed adds repaired", s.added),
        ("重新添加 re-added", s.reactivated),
        ("补录修改 missed edits repaired", s.edited),
        ("补录删除 vanished relations", s.vanished),
        ("标签 tags", s.tags),
        ("客户群 group chats read", s.chats_seen),
        ("客户群变更 group chats changed", s.chats_changed),
        ("已解散 group chats gone", s.chats_gone),
        ("API 调用 API calls", s.api_calls),
    ];
    for (label, n) in rows {
        println!("  {label:<34} {n:>8}");
    }
}
