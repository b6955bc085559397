//! `scrm export`: a corp's customers, relations (with tags), tag library and notes as CSV.

use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::app::export;
use crate::platform::config::Config;
use crate::startup;

/// Options of `scrm export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The corp (default: the only configured one).
    #[arg(long)]
    pub corp: Option<String>,
    /// The folder the files are written into (created if missing).
    #[arg(long, default_value = "export")]
    pub out: PathBuf,
}

/// Runs `scrm export`: 0 when every file is written, 2 when the corp is not clear.
pub async fn run(config: &Config, args: ExportArgs) -> anyhow::Result<i32> {
    let corp = match (&args.corp, config.corps.as_slice()) {
        (Some(corp), _) => corp.clone(),
        (None, [only]) => only.corp_id.to_string(),
        (None, corps) => {
            let ids: Vec<String> = corps.iter().map(|c| c.corp_id.to_string()).collect();
            eprintln!(
                "错误 (error): 请用 --corp 指定企业 (name the corp with --corp); configured: {}",
                if ids.is_empty() {
                    "none".to_owned()
                } else {
                    ids.join(", ")
                }
            );
            return Ok(2);
        }
    };
    let db = startup::open_database(config).await?;
    let bar = ProgressBar::new_spinner();
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}") {
        bar.set_style(style);
    }
    let outcome = export::export(&db, &corp, &args.out, |file, rows| {
        bar.set_message(format!("{file}: {rows} 行 (rows)"));
        bar.tick();
    })
    .await;
    bar.finish_and_clear();
    db.close().await;
    let exported = outcome?;
    println!("导出 (exported) {corp} → {}", args.out.display());
    for (file, rows) in exported.files {
        println!("  {file:<16} {rows:>8} 行 (rows)");
    }
    Ok(0)
}
