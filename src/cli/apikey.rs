//! `scrm apikey create|list|revoke`: API keys for scripts and service accounts. A key is shown
//! once, when created; only its SHA-256 is stored.

use anyhow::{Context as _, bail};
use clap::Subcommand;
use wecom_sdk::{CorpId, UserId};

use crate::auth::{self, ApiKeyInfo, Role};
use crate::platform::config::Config;
use crate::platform::db::{Db, now_ms};
use crate::startup;

/// `scrm apikey …`.
#[derive(Debug, Subcommand)]
pub enum ApikeyCommand {
    /// Create a key and print it (once: it cannot be shown again).
    Create {
        /// `admin`, `compliance` or `sales`.
        #[arg(long)]
        role: String,
        /// The staff member (WeCom userid) the key acts as; required for `sales`, whose key
        /// reaches only this staff member's customers.
        #[arg(long)]
        staff: Option<String>,
        /// The corp (default: the only configured corp).
        #[arg(long)]
        corp: Option<String>,
        /// A label to recognise the key by.
        #[arg(long, default_value = "cli")]
        name: String,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List keys (never their secrets).
    List {
        /// Only this corp.
        #[arg(long)]
        corp: Option<String>,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key: every later request with it gets 401.
    Revoke {
        /// Key id (from `list`).
        id: i64,
    },
}

/// Runs `scrm apikey …`. Exit code 0, or 1 when the key to revoke does not exist.
pub async fn run(config: &Config, command: ApikeyCommand) -> anyhow::Result<i32> {
    let db = startup::open_database(config).await?;
    let code = match command {
        ApikeyCommand::Create {
            role,
            staff,
            corp,
            name,
            json,
        } => {
            let corp = corp_of(config, corp)?;
            // A manager's reach is a team the console works out at sign-in: no API key role.
            let Some(role) = Role::parse(&role).filter(|r| *r != Role::Manager) else {
                bail!("--role {role:?}: must be admin, compliance or sales");
            };
            let staff = staff
                .filter(|s| !s.trim().is_empty())
                .map(|s| UserId::try_from(s.trim()))
                .transpose()
                .map_err(|e| anyhow::anyhow!("--staff: {e}"))?;
            if role == Role::Sales && staff.is_none() {
                bail!(
                    "--role sales needs --staff USERID: a sales key reaches only that staff member's customers"
                );
            }
            if let Some(user) = &staff
                && !staff_known(&db, &corp, user).await?
            {
                eprintln!(
                    "警告：员工 {user} 尚未同步到本地（运行 scrm sync 后即可看到其客户）/ \
                     warning: staff member {user} is not known yet"
                );
            }
            let now = now_ms();
            let (id, key) = auth::create_key(&db, &corp, role, staff.as_ref(), &name, now).await?;
            let mut tx = db.begin().await?;
            let detail =
                serde_json::json!({"id": id, "role": role.as_str(), "staff": staff, "name": name});
            auth::audit(
                &mut tx,
                corp.as_str(),
                "cli",
                "apikey.create",
                &format!("apikey:{id}"),
                &detail,
                now,
            )
            .await?;
            tx.commit().await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"id": id, "corp_id": corp, "role": role.as_str(),
                        "staff_user_id": staff, "name": name, "key": key})
                );
            } else {
                println!("{key}");
                eprintln!(
                    "API key {id} ({} {}) created for {corp}. It is shown only now: store it safely, \
                     send it as `Authorization: Bearer <key>`.",
                    role.as_str(),
                    staff.as_ref().map_or("(no staff member)", UserId::as_str)
                );
            }
            0
        }
        ApikeyCommand::List { corp, json } => {
            let keys = auth::list_keys(&db, corp.as_deref()).await?;
            if json {
                for key in &keys {
                    println!("{}", serde_json::to_string(key)?);
                }
            } else {
                print_keys(&keys);
            }
            0
        }
        ApikeyCommand::Revoke { id } => {
            let now = now_ms();
            let keys = auth::list_keys(&db, None).await?;
            match keys.iter().find(|k| k.id == id) {
                None => {
                    eprintln!("没有 id 为 {id} 的 API key / no API key {id}");
                    1
                }
                Some(k) if k.revoked_at_ms.is_some() => {
                    eprintln!("API key {id} 已被吊销 / was already revoked");
                    0
                }
                Some(k) => {
                    auth::revoke_key(&db, id, now).await?;
                    let mut tx = db.begin().await?;
                    auth::audit(
                        &mut tx,
                        &k.corp_id,
                        "cli",
                        "apikey.revoke",
                        &format!("apikey:{id}"),
                        &serde_json::json!({"id": id}),
                        now,
                    )
                    .await?;
                    tx.commit().await?;
                    println!("API key {id} revoked");
                    0
                }
            }
        }
    };
    db.close().await;
    Ok(code)
}

/// `--corp`, or the only configured corp.
pub(super) fn corp_of(config: &Config, corp: Option<String>) -> anyhow::Result<CorpId> {
    if let Some(corp) = corp {
        return match config.corps.iter().find(|c| c.corp_id == corp) {
            Some(c) => Ok(c.corp_id.clone()),
            None => bail!("--corp {corp}: not a corp in the configuration"),
        };
    }
    match config.corps.as_slice() {
        [one] => Ok(one.corp_id.clone()),
        [] => bail!(
            "no corp is configured: add one to the config file (see deploy/scrm.example.toml)"
        ),
        _ => bail!("several corps are configured: say which with --corp"),
    }
}

async fn staff_known(db: &Db, corp: &CorpId, user: &UserId) -> anyhow::Result<bool> {
    let known = crate::domain::staff::get(db, corp, user)
        .await
        .context("cannot read staff")?;
    Ok(known.is_some())
}

fn print_keys(keys: &[ApiKeyInfo]) {
    println!(
        "{:>5}  {:<20}  {:<10}  {:<16}  {:<12}  {:<19}  {:<19}  name",
        "id", "corp", "role", "staff", "prefix", "created (UTC)", "state"
    );
    for k in keys {
        let state = match k.revoked_at_ms {
            Some(at) => format!("revoked {}", super::utc(at)),
            None => "active".to_owned(),
        };
        println!(
            "{:>5}  {:<20}  {:<10}  {:<16}  {:<12}  {:<19}  {:<19}  {}",
            k.id,
            k.corp_id,
            k.role,
            k.staff_user_id.as_deref().unwrap_or("-"),
            k.key_prefix,
            super::utc(k.created_at_ms),
            state,
            k.name
        );
    }
}
