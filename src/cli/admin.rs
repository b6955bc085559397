//! `scrm admin create|password|disable|list`: console accounts of their own, so that a fresh
//! install can be set up before WeCom is (and compliance staff can sign in without WeCom's web
//! login). Passwords are hashed with Argon2id; without `--password-stdin` a strong one is
//! generated and printed once.

use std::io::BufRead as _;

use anyhow::bail;
use clap::Subcommand;
use rand::Rng as _;
use wecom_sdk::CorpId;

use crate::auth::Role;
use crate::auth::account::{self, AccountError};
use crate::platform::config::Config;
use crate::platform::db::now_ms;
use crate::startup;

/// `scrm admin …`.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a console account.
    Create {
        /// Login name (3–64 of a-z 0-9 . _ - @).
        #[arg(long)]
        username: String,
        /// `admin` or `compliance`.
        #[arg(long, default_value = "admin")]
        role: String,
        /// The corp the account acts in (default: the only configured corp).
        #[arg(long)]
        corp: Option<String>,
        /// Read the password from the first line of stdin instead of generating one.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a new password (and enable the account again).
    Password {
        /// Login name.
        #[arg(long)]
        username: String,
        /// Read the password from the first line of stdin instead of generating one.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable an account: it cannot sign in, and its sessions end now.
    Disable {
        /// Login name.
        #[arg(long)]
        username: String,
    },
    /// List accounts.
    List,
}

fn password(from_stdin: bool) -> anyhow::Result<(String, bool)> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        return Ok((line.trim_end_matches(['\r', '\n']).to_owned(), false));
    }
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::rng();
    let generated = (0..20)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect();
    Ok((generated, true))
}

/// The corp of a new account: `--corp` (a configured one, or any well-formed id before WeCom is
/// configured), else the only configured one.
fn corp_for(config: &Config, corp: Option<String>) -> anyhow::Result<CorpId> {
    match corp {
        Some(c) if config.corps.is_empty() => {
            CorpId::try_from(c.as_str()).map_err(|e| anyhow::anyhow!("--corp: {e}"))
        }
        other => super::apikey::corp_of(config, other),
    }
}

fn explain(e: AccountError) -> anyhow::Error {
    match e {
        AccountError::Invalid { field, reason } => anyhow::anyhow!("--{field}: {reason}"),
        AccountError::Exists(name) => anyhow::anyhow!("账号 {name} 已存在 / {name} exists"),
        AccountError::NotFound => anyhow::anyhow!("没有这个账号 / no such account"),
        e => anyhow::anyhow!(e),
    }
}

/// Runs `scrm admin …`. Exit code 0.
pub async fn run(config: &Config, command: AdminCommand) -> anyhow::Result<i32> {
    let db = startup::open_database(config).await?;
    match command {
        AdminCommand::Create {
            username,
            role,
            corp,
            password_stdin,
        } => {
            let corp = corp_for(config, corp)?;
            let Some(role) =
                Role::parse(&role).filter(|r| matches!(r, Role::Admin | Role::Compliance))
            else {
                bail!("--role {role:?}: must be admin or compliance");
            };
            let (password, generated) = password(password_stdin)?;
            let created = account::create(&db, &corp, &username, &password, role, "cli", now_ms())
                .await
                .map_err(explain)?;
            if generated {
                println!("{password}");
            }
            eprintln!(
                "控制台账号 {} （{}，企业 {}）已创建{}。登录地址：/console/login",
                created.username,
                created.role,
                created.corp_id,
                if generated {
                    "；上面是生成的密码，只显示这一次"
                } else {
                    ""
                }
            );
        }
        AdminCommand::Password {
            username,
            password_stdin,
        } => {
            let (password, generated) = password(password_stdin)?;
            account::set_password(&db, &username, &password, "cli", now_ms())
                .await
                .map_err(explain)?;
            if generated {
                println!("{password}");
            }
            eprintln!("账号 {username} 的密码已更新 / password set");
        }
        AdminCommand::Disable { username } => {
            account::disable(&db, &username, "cli", now_ms())
                .await
                .map_err(explain)?;
            eprintln!("账号 {username} 已停用，会话已结束 / disabled, sessions ended");
        }
        AdminCommand::List => {
            println!("{:<24} {:<12} {:<24} state", "username", "role", "corp");
            for a in account::list(&db, None).await? {
                let state = if a.disabled_at_ms.is_some() {
                    "disabled"
                } else {
                    "active"
                };
                println!(
                    "{:<24} {:<12} {:<24} {state}",
                    a.username, a.role, a.corp_id
                );
            }
        }
    }
    Ok(0)
}
