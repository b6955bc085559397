//! `scrm archive status|pull|retry|undecryptable`: the chat archive from the command line.

use std::sync::Arc;

use anyhow::Context as _;
use clap::Subcommand;

use crate::app::archive_pull::{self, Archive};
use crate::domain::archive::store;
use crate::platform::config::Config;
use crate::platform::coord;
use crate::platform::wecom::Wecom;
use crate::startup;

/// `scrm archive …`.
#[derive(Debug, Subcommand)]
pub enum ArchiveCommand {
    /// Make a key pair for the archive's 消息加密公钥: the private key file (0600) for
    /// `[corps.archive] keys`, and the public key to paste into WeCom's admin console.
    Keygen {
        /// The folder for `archive-key-v{N}.pem` and `archive-key-v{N}.pub.pem`.
        #[arg(long)]
        out: std::path::PathBuf,
        /// The version WeCom will give the key (1 for the first, then one more each time).
        #[arg(long, default_value_t = 1)]
        version: u32,
    },
    /// Cursor, lag, last error, worker restarts and undecryptable count of every corp.
    Status {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Pull now until caught up, scan what is new and fetch pending media (what `serve` does on
    /// `msgaudit_notify`).
    Pull {
        /// The corp (default: the only configured corp).
        #[arg(long)]
        corp: Option<String>,
    },
    /// Try the recorded undecryptable records again with the keys now configured.
    Retry {
        /// The corp (default: the only configured corp).
        #[arg(long)]
        corp: Option<String>,
    },
    /// The records that could not be decrypted, with the reason.
    Undecryptable {
        /// The corp (default: the only configured corp).
        #[arg(long)]
        corp: Option<String>,
        /// Also those decrypted since.
        #[arg(long)]
        all: bool,
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
}

/// Runs `scrm archive …`.
pub async fn run(config: &Config, command: ArchiveCommand) -> anyhow::Result<i32> {
    if let ArchiveCommand::Keygen { out, version } = &command {
        return keygen(out, *version);
    }
    let db = startup::open_database(config).await?;
    let code = match command {
        // Answered above, before the database is opened.
        ArchiveCommand::Keygen { out, version } => keygen(&out, version)?,
        ArchiveCommand::Status { json } => {
            let all = archive_pull::status(&db).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else if all.is_empty() {
                println!("no archive pulled yet");
            } else {
                println!(
                    "{:<20}  {:>10}  {:>7}  {:>9}  {:>13}  {:>8}  {:>8}  last success (UTC)   last error",
                    "corp", "seq", "lag", "messages", "undecryptable", "restarts", "media…"
                );
                for s in &all {
                    println!(
                        "{:<20}  {:>10}  {:>7}  {:>9}  {:>13}  {:>8}  {:>8}  {:<19}  {}",
                        s.cursor.corp_id,
                        s.cursor.seq,
                        s.lag_seq,
                        s.counts.messages,
                        s.counts.undecryptable_open,
                        s.cursor.worker_restarts,
                        s.counts.media_pending,
                        s.cursor
                            .last_success_at_ms
                            .map(super::utc)
                            .unwrap_or_else(|| "never".into()),
                        s.cursor.last_error.as_deref().unwrap_or("-"),
                    );
                }
            }
            0
        }
        ArchiveCommand::Pull { corp } => {
            let corp = super::apikey::corp_of(config, corp)?;
            let (archive, mut sup) = open(config, &db, corp.as_str()).await?;
            let report = archive_pull::pull_until_caught_up(
                &db,
                corp.as_str(),
                &mut sup,
                &config.archive,
                None,
            )
            .await
            .context("pull failed (the cursor stays where the last stored batch put it)")?;
            let scanned = archive.scan_pending(corp.as_str()).await?;
            let media = if config.archive.media {
                archive_pull::media::download_pending(
                    &db,
                    corp.as_str(),
                    &mut sup,
                    &archive_pull::media_dir(config),
                    &config.archive,
                    std::time::Duration::from_secs(3600),
                )
                .await?
            } else {
                0
            };
            sup.shutdown().await;
            println!(
                "pulled: {} calls, {} new messages, {} already stored, {} undecryptable; cursor at seq {}; {} scanned; {} media files",
                report.calls,
                report.messages,
                report.duplicates,
                report.undecryptable,
                report.seq,
                scanned,
                media
            );
            i32::from(report.undecryptable > 0)
        }
        ArchiveCommand::Retry { corp } => {
            let corp = super::apikey::corp_of(config, corp)?;
            let (archive, mut sup) = open(config, &db, corp.as_str()).await?;
            let n = archive.retry_undecryptable(corp.as_str(), &mut sup).await?;
            let scanned = archive.scan_pending(corp.as_str()).await?;
            sup.shutdown().await;
            let left = store::counts(&db, corp.as_str()).await?.undecryptable_open;
            println!("decrypted {n}; {scanned} scanned; {left} still undecryptable");
            i32::from(left > 0)
        }
        ArchiveCommand::Undecryptable { corp, all, limit } => {
            let corp = super::apikey::corp_of(config, corp)?;
            let rows = store::undecryptable(&db, corp.as_str(), !all, limit).await?;
            println!(
                "{:>10}  {:<36}  {:>3}  {:<20}  {:>8}  detail",
                "seq", "msgid", "ver", "reason", "attempts"
            );
            for r in &rows {
                println!(
                    "{:>10}  {:<36}  {:>3}  {:<20}  {:>8}  {}{}",
                    r.seq,
                    r.msgid,
                    r.publickey_ver,
                    r.reason,
                    r.attempts,
                    r.detail,
                    if r.resolved_at_ms.is_some() {
                        " (decrypted since)"
                    } else {
                        ""
                    }
                );
            }
            0
        }
    };
    db.close().await;
    Ok(code)
}

async fn open(
    config: &Config,
    db: &crate::platform::db::Db,
    corp: &str,
) -> anyhow::Result<(Archive, archive_pull::supervisor::Supervisor)> {
    let coord = coord::connect(config.redis_url.as_deref()).await?;
    let wecom = Wecom::new(config, coord).context("cannot build the WeCom API client")?;
    let rules =
        crate::domain::rule_book::RuleBook::new(db.clone(), Arc::new(startup::load_rules(config)?));
    let archive = Archive::new(config, db.clone(), wecom, rules).context(
        "the chat archive is not configured: set [archive] library and the corp's [corps.archive]",
    )?;
    let sup = archive
        .supervisor(corp)
        .with_context(|| format!("corp {corp} has no [corps.archive]"))?;
    Ok((archive, sup))
}

/// `scrm archive keygen`: never over an existing file (a lost private key loses every message
/// wrapped with its public key).
fn keygen(out: &std::path::Path, version: u32) -> anyhow::Result<i32> {
    use std::io::Write as _;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let private = out.join(format!("archive-key-v{version}.pem"));
    let public = out.join(format!("archive-key-v{version}.pub.pem"));
    for path in [&private, &public] {
        if path.exists() {
            anyhow::bail!(
                "{} exists: not replacing a key (choose another --version or folder)",
                path.display()
            );
        }
    }
    let (private_pem, public_pem) = wecom_sdk::archive::keys::generate_pem_pair()?;
    let mut file = crate::platform::db::private_file()
        .write(true)
        .create_new(true)
        .open(&private)
        .with_context(|| format!("cannot write {}", private.display()))?;
    file.write_all(private_pem.as_bytes())?;
    std::fs::write(&public, &public_pem)
        .with_context(|| format!("cannot write {}", public.display()))?;
    println!(
        "私钥 (private key, keep it; 0600): {}\n公钥 (public key): {}\n",
        private.display(),
        public.display()
    );
    println!(
        "粘贴到企业微信管理后台 → 管理工具 → 会话内容存档 → 消息加密公钥 (paste into WeCom's admin console):\n"
    );
    println!("{public_pem}");
    println!(
        "scrm.toml, [corps.archive] of the corp — with the version WeCom shows for this key:\n  keys = [{{ version = {version}, file = \"{}\" }}]",
        private.display()
    );
    Ok(0)
}
