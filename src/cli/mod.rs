//! The `scrm` command line. Every command reads the same configuration as `serve`.

mod admin;
mod alerts;
mod apikey;
mod archive;
mod backup;
mod demo;
mod emulator;
mod export;
mod inbox;
mod outbox;
mod reassign;
mod replay;
mod rules;
mod selftest;
mod sync;

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::platform::config::Config;
use crate::platform::telemetry;
use crate::startup;

/// 企业微信 SCRM 服务端 (self-hosted WeCom SCRM server).
#[derive(Debug, Parser)]
#[command(name = "scrm", version, about)]
pub struct Cli {
    /// Config file (default: ./scrm.toml when present).
    #[arg(long, global = true, env = "SCRM_CONFIG")]
    pub config: Option<PathBuf>,
    /// Database URL (`sqlite://path` or `postgres://…`); overrides the config file.
    #[arg(long, global = true)]
    pub database_url: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (applies migrations first).
    Serve {
        /// Listen address, e.g. 0.0.0.0:8080 (overrides the config).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Look at stored callbacks.
    Inbox {
        /// What to show.
        #[command(subcommand)]
        command: inbox::InboxCommand,
    },
    /// Look at what we owe WeCom (tag edits, remarks, messages) and retry dead letters.
    Outbox {
        /// What to do.
        #[command(subcommand)]
        command: outbox::OutboxCommand,
    },
    /// Compliance alerts: list them, scan stored messages again.
    Alerts {
        /// What to do.
        #[command(subcommand)]
        command: alerts::AlertsCommand,
    },
    /// Chat archive (会话内容存档): status, pull now, retry undecryptable records.
    Archive {
        /// What to do.
        #[command(subcommand)]
        command: archive::ArchiveCommand,
    },
    /// The isolated chat-archive child process (started by `serve`; speaks over its pipes).
    #[command(hide = true)]
    ArchiveWorker,
    /// Console accounts (账号密码登录): the first admin of a fresh install, compliance staff.
    Admin {
        /// What to do.
        #[command(subcommand)]
        command: admin::AdminCommand,
    },
    /// API keys for scripts and service accounts.
    Apikey {
        /// What to do.
        #[command(subcommand)]
        command: apikey::ApikeyCommand,
    },
    /// The compliance content scanner: test rules on a file or one message, measure them.
    Rules {
        /// What to do.
        #[command(subcommand)]
        command: rules::RulesCommand,
    },
    /// Reassign a member's customers and group chats (离职继承 / 在职继承): plan, run, follow.
    Reassign(reassign::ReassignArgs),
    /// Put processed or failed callbacks back to pending so workers process them again.
    Replay(replay::ReplayArgs),
    /// Full sync and reconciliation with WeCom (resumes an interrupted run).
    Sync(sync::SyncArgs),
    /// The whole product in one process: the server on SQLite, an emulated corp, a played working day.
    Demo(demo::DemoArgs),
    /// Run the WeCom emulator (API and callback sender) for demos and tests.
    Emulator(emulator::EmulatorArgs),
    /// Back up the embedded SQLite database online into a new file (PostgreSQL: use pg_dump).
    Backup(backup::BackupArgs),
    /// Export a corp's customers, relations (with tags), tag library and notes as CSV files.
    Export(export::ExportArgs),

    /// Check a callback configuration end to end.
    Callback {
        /// What to check.
        #[command(subcommand)]
        command: CallbackCommand,
    },
}

/// `scrm callback …`.
#[derive(Debug, Subcommand)]
pub enum CallbackCommand {
    /// Send a signed URL verification and a signed test event exactly as WeCom would, and say
    /// precisely what is wrong.
    Selftest(selftest::SelftestArgs),
}

/// Parses the command line and runs it. Returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    let env: HashMap<String, String> = std::env::vars().collect();
    // The scanner needs no configuration: a broken scrm.toml must not stop it.
    let command = match cli.command {
        Command::Rules { command } => return rules::run(command).await,
        other => other,
    };
    let mut config = Config::load(cli.config.as_deref(), &env).context("configuration error")?;
    if let Some(url) = cli.database_url {
        config.database_url = Some(url);
    }
    match command {
        Command::Serve { listen } => {
            telemetry::init_tracing(config.log_format, &config.log_level);
            if let Some(listen) = listen {
                config.listen = listen.parse().with_context(|| {
                    format!("--listen {listen:?} is not an address like 0.0.0.0:8080")
                })?;
            }
            if config.source.is_none() {
                tracing::info!(
                    "no config file: running on the embedded SQLite default in {}. Copy deploy/scrm.example.toml to scrm.toml to add a corp.",
                    config.data_dir.display()
                );
            }
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen))?;
            startup::serve(config, listener, shutdown_signal()).await?;
            Ok(0)
        }
        Command::Migrate => {
            telemetry::init_tracing(config.log_format, &config.log_level);
            let db = startup::open_database(&config).await?;
            println!("migrations applied ({})", db.backend());
            db.close().await;
            Ok(0)
        }
        Command::Inbox { command } => inbox::run(&config, command).await,
        Command::Outbox { command } => outbox::run(&config, command).await,
        Command::Admin { command } => admin::run(&config, command).await,
        Command::Apikey { command } => apikey::run(&config, command).await,
        Command::Alerts { command } => alerts::run(&config, command).await,
        Command::Archive { command } => {
            telemetry::init_tracing(config.log_format, &config.log_level);
            archive::run(&config, command).await
        }
        Command::ArchiveWorker => Ok(crate::app::archive_pull::child::run()),
        Command::Rules { command } => rules::run(command).await,
        Command::Replay(args) => replay::run(&config, args).await,
        Command::Reassign(args) => {
            telemetry::init_tracing(config.log_format, &config.log_level);
            reassign::run(&config, args).await
        }
        Command::Sync(args) => {
            telemetry::init_tracing(config.log_format, &config.log_level);
            sync::run(&config, args).await
        }
        Command::Demo(args) => {
            // The demo tells its story on stdout: the server's log shows warnings only, unless
            // asked for more.
            let asked = std::env::var_os("SCRM_LOG_LEVEL").is_some();
            let level = if asked {
                config.log_level.as_str()
            } else {
                "warn"
            };
            telemetry::init_tracing(config.log_format, level);
            demo::run(args, shutdown_signal()).await
        }
        Command::Emulator(args) => {
            telemetry::init_tracing(config.log_format, &config.log_level);
            emulator::run(args, shutdown_signal()).await
        }
        Command::Export(args) => export::run(&config, args).await,
        Command::Backup(args) => backup::run(&config, args).await,

        Command::Callback {
            command: CallbackCommand::Selftest(args),
        } => selftest::run(&config, args).await,
    }
}

/// An epoch-ms time as `YYYY-MM-DD HH:MM:SS` UTC.
fn utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
    )
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
