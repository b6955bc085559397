//! `scrm backup`: an online backup of the embedded SQLite database.

use std::path::PathBuf;

use crate::platform::config::Config;
use crate::platform::db::BackupError;
use crate::startup;

/// Options of `scrm backup`.
#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// The backup file to create (it must not exist), e.g. /backup/scrm-2026-12-07.db.
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs `scrm backup`: 0 when written, 2 on PostgreSQL (use `pg_dump`) or when the file exists.
pub async fn run(config: &Config, args: BackupArgs) -> anyhow::Result<i32> {
    let db = startup::open_database(config).await?;
    let outcome = db.backup_into(&args.out).await;
    db.close().await;
    match outcome {
        Ok(bytes) => {
            println!(
                "备份完成 (backup written): {} ({:.1} MB)",
                args.out.display(),
                bytes as f64 / 1e6
            );
            Ok(0)
        }
        Err(e @ (BackupError::Unsupported | BackupError::Io(_))) => {
            eprintln!("错误 (error): {e}");
            Ok(2)
        }
        Err(e) => Err(e.into()),
    }
}
