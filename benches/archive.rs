#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    reason = "a test or benchmark fails loudly"
)]
//! Chat archive throughput and worker memory (issue 7): `N` synthetic messages in the emulator,
//! pulled through the real `scrm archive-worker` child and the stand-in library (batches of
//! 1,000; RSA-2048 per message by us, `DecryptData` by the library), stored, then scanned by the
//! content rules. The worker's resident memory is sampled all along.
//!
//! ```text
//! cargo build --release -p wework-finance-standin
//! cargo bench --bench archive -- --backend sqlite --messages 100000
//! cargo bench --bench archive -- --backend postgres --messages 100000
//! cargo bench --bench archive -- --backend sqlite --messages 1000000   # the memory run
//! ```

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use scrm::app::archive_pull::{self, Archive};
use scrm::platform::config::Config;
use scrm::platform::db::Db;
use scrm::platform::wecom::Wecom;
use wecom_sdk::MemoryCoordinator;
use wecom_sdk::testkit::{Emulator, EmulatorConfig};

const CORP: &str = "ww1436e0e65a779aee";
const TOKEN: &str = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo";
const KEY: &str = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt";
const ARCHIVE_SECRET: &str = "bench-archive-secret";

fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(path)
}

fn rss_kib(pid: u32) -> Option<u64> {
    scrm::app::archive_pull::child::rss_kib(pid)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let flags = common::Flags::parse();
    let backend = flags.backend()?;
    let n = flags.number("--messages", 100_000)? as u64;
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_scrm"));
    let standin = exe.parent().unwrap().join("libwework_finance_standin.so");
    anyhow::ensure!(
        standin.exists(),
        "{} is missing: cargo build --release -p wework-finance-standin",
        standin.display()
    );
    let dir = tempfile::tempdir()?;
    let emulator = Emulator::start(EmulatorConfig::default()).await?;
    let state = emulator.state();
    state.set_archive_secret(CORP, ARCHIVE_SECRET);
    state.add_archive_public_key(
        CORP,
        1,
        &std::fs::read_to_string(fixture("archive/keys/v1.pub.pem"))?,
    )?;
    state.archive_synthetic(CORP, n);

    let (db_url, pg) = common::fresh_database(&backend, dir.path()).await?;
    let config_text = format!(
        "listen = \"127.0.0.1:0\"\ndatabase_url = \"{db_url}\"\n[sync]\nenabled = false\n\
         [archive]\nlibrary = \"{}\"\nworker_program = \"{}\"\nmedia = false\nmemory_limit_mb = 4096\n\
         [archive.worker_env]\nWEWORK_FINANCE_STANDIN_URL = \"http://{}\"\n\
         [[corps]]\ncorp_id = \"{CORP}\"\nalert_recipients = [\"compliance01\"]\n\
         [corps.archive]\nsecret = \"{ARCHIVE_SECRET}\"\nkeys = [{{ version = 1, file = \"{}\" }}]\n\
         [[corps.apps]]\nname = \"contacts\"\ntoken = \"{TOKEN}\"\nencoding_aes_key = \"{KEY}\"\n\
         secret = \"s\"\nagent_id = 1000002\n",
        standin.display(),
        exe.display(),
        emulator.addr(),
        fixture("archive/keys/v1.pem").display(),
    );
    let config = Config::from_toml(&config_text, &HashMap::new())?;
    let db = Db::connect(&db_url).await?;
    db.migrate().await?;
    let wecom = Wecom::new(&config, Arc::new(MemoryCoordinator::new()))?;
    let rules = Arc::new(scrm::domain::scan::RuleLibrary::default_library());
    let rules = scrm::domain::rule_book::RuleBook::new(db.clone(), rules);
    let archive = Archive::new(&config, db.clone(), wecom, rules).expect("archive configured");
    let mut sup = archive.supervisor(CORP).expect("corp");
    // Start the worker, then sample its memory from another thread while it works.
    sup.call(&scrm::domain::archive::proto::Request::Ping)
        .await?;
    let pid = sup.pid().expect("worker running");
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (done, state) = (Arc::clone(&done), Arc::clone(&state));
        std::thread::spawn(move || {
            let mut samples: Vec<(u64, u64)> = Vec::new();
            while !done.load(Ordering::Relaxed) {
                if let Some(kib) = rss_kib(pid) {
                    samples.push((state.archive_calls(CORP) * 1000, kib));
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            samples
        })
    };
    let started = Instant::now();
    let report =
        archive_pull::pull_until_caught_up(&db, CORP, &mut sup, &config.archive, None).await?;
    let pulled = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let samples = sampler.join().unwrap();
    let restarts = sup.restarts();
    sup.shutdown().await;
    let scan_started = Instant::now();
    let scanned = archive.scan_pending(CORP).await?;
    let scan = scan_started.elapsed();
    let alerts: i64 = scrm::on_db!(&db, |pool| sqlx::query_scalar(
        "SELECT COUNT(*) FROM alert_evidence WHERE corp_id = $1"
    )
    .bind(CORP)
    .fetch_one(pool)
    .await)?;

    assert_eq!(report.messages, n, "every message stored: {report:?}");
    assert_eq!(report.undecryptable, 0);
    assert_eq!(scanned, n);
    println!(
        "backend {backend}: {n} messages, {} GetChatData calls, worker restarts {restarts}",
        report.calls
    );
    println!(
        "pull + RSA + DecryptData + store: {:.1} s = {:.0} messages/s",
        pulled.as_secs_f64(),
        n as f64 / pulled.as_secs_f64()
    );
    println!(
        "scan (default rule library, scan_window, alerts): {:.1} s = {:.0} messages/s ({alerts} evidence rows)",
        scan.as_secs_f64(),
        n as f64 / scan.as_secs_f64()
    );
    println!(
        "end to end: {:.0} messages/s",
        n as f64 / (pulled + scan).as_secs_f64()
    );
    if !samples.is_empty() {
        let tenth = samples.len().div_ceil(10);
        let median = |s: &[(u64, u64)]| {
            let mut v: Vec<f64> = s.iter().map(|(_, k)| *k as f64 / 1024.0).collect();
            v.sort_by(f64::total_cmp);
            common::quantile(&v, 0.5)
        };
        let max = samples.iter().map(|(_, k)| *k).max().unwrap_or(0) as f64 / 1024.0;
        println!(
            "worker RSS (MiB): first tenth median {:.1}, last tenth median {:.1}, max {:.1} ({} samples)",
            median(&samples[..tenth]),
            median(&samples[samples.len() - tenth..]),
            max,
            samples.len()
        );
        let step = (samples.len() / 10).max(1);
        for (served, kib) in samples.iter().step_by(step) {
            println!(
                "  after ~{served:>8} messages served: {:.1} MiB",
                *kib as f64 / 1024.0
            );
        }
    }
    db.close().await;
    common::drop_database(pg).await?;
    Ok(())
}
