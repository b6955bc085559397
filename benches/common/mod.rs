//! What the benchmarks share: a fresh database of either backend, dropped afterwards.
#![allow(dead_code)]

use anyhow::Context as _;
use scrm::platform::db::Db;

/// A fresh database: a file in `dir` for SQLite, a new uniquely named database on
/// `SCRM_TEST_PG_URL` (default the local server) for PostgreSQL. Returns its URL and, for
/// PostgreSQL, what [`drop_database`] needs.
pub async fn fresh_database(
    backend: &str,
    dir: &std::path::Path,
) -> anyhow::Result<(String, Option<(String, String)>)> {
    if backend == "sqlite" {
        return Ok((format!("sqlite://{}", dir.join("scrm.db").display()), None));
    }
    let admin = std::env::var("SCRM_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("scrm_bench_{}", uuid::Uuid::new_v4().simple());
    let db = Db::connect(&admin)
        .await
        .with_context(|| format!("PostgreSQL at {admin}"))?;
    if let Db::Postgres(pool) = &db {
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(pool)
            .await?;
    }
    db.close().await;
    Ok((
        scrm::platform::db::with_database_name(&admin, &name),
        Some((admin, name)),
    ))
}

/// Drops a database [`fresh_database`] created on PostgreSQL.
pub async fn drop_database(pg: Option<(String, String)>) -> anyhow::Result<()> {
    let Some((admin, name)) = pg else {
        return Ok(());
    };
    let admin_db = Db::connect(&admin).await?;
    if let Db::Postgres(pool) = &admin_db {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(pool)
        .await?;
    }
    admin_db.close().await;
    Ok(())
}

/// The value at quantile `q` (0..=1) of sorted `values`.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a short vector"
    )]
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The `--name value` pairs of a benchmark's command line (cargo's own `--bench` is skipped).
pub struct Flags(std::collections::HashMap<String, String>);

impl Flags {
    /// This process's arguments.
    pub fn parse() -> Self {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut pairs = std::collections::HashMap::new();
        let mut i = 0;
        while i < args.len() {
            match args.get(i + 1) {
                Some(value) if args[i].starts_with("--") && !value.starts_with("--") => {
                    pairs.insert(args[i].clone(), value.clone());
                    i += 2;
                }
                _ => i += 1,
            }
        }
        Self(pairs)
    }

    /// `--name N`, or `default`.
    pub fn number(&self, name: &str, default: usize) -> anyhow::Result<usize> {
        self.0.get(name).map_or(Ok(default), |v| {
            v.parse().map_err(|e| anyhow::anyhow!("{name} {v:?}: {e}"))
        })
    }

    /// `--backend sqlite|postgres` (default sqlite).
    pub fn backend(&self) -> anyhow::Result<String> {
        let backend = self.0.get("--backend").map_or("sqlite", String::as_str);
        if backend != "sqlite" && backend != "postgres" {
            anyhow::bail!("--backend must be sqlite or postgres");
        }
        Ok(backend.to_owned())
    }
}

/// A corp id known to be good (the benchmarks name ids as text; the server takes them typed).
pub fn corp(s: impl AsRef<str>) -> wecom_sdk::CorpId {
    wecom_sdk::CorpId::try_from(s.as_ref()).expect("a benchmark corp id")
}

/// A staff userid known to be good.
pub fn user(s: impl AsRef<str>) -> wecom_sdk::UserId {
    wecom_sdk::UserId::try_from(s.as_ref()).expect("a benchmark userid")
}

/// Runs this benchmark again pinned to `core` (through `taskset`, no `unsafe` affinity calls)
/// unless it already is (`mark` set), and exits with that run's status; returns when pinned.
pub fn pin_to_core(core: usize, mark: &str) -> anyhow::Result<()> {
    if std::env::var_os(mark).is_some() {
        return Ok(());
    }
    let status = std::process::Command::new("taskset")
        .args(["-c", &core.to_string()])
        .arg(std::env::current_exe()?)
        .args(std::env::args().skip(1))
        .env(mark, "1")
        .status()
        .context("taskset (util-linux) is required")?;
    std::process::exit(status.code().unwrap_or(1));
}
