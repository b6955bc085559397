//! Full sync and inbox-worker throughput against the WeCom emulator (issue 4's benchmark).
//!
//! ```sh
//! cargo bench --bench sync_workers -- --backend sqlite --staff 200 --customers 20000 --events 100000
//! cargo bench --bench sync_workers -- --backend postgres --staff 200 --customers 20000 --events 100000
//! ```
//!
//! 1. **Sync**: seeds an emulated corp, runs `scrm::app::sync::run` on a fresh database and reports wall
//!    time, the calls made per API against the minimum the page sizes allow, and how often the
//!    emulator answered a rate limit (must be 0: the client keeps under WeCom's published limits),
//!    and how much the process's peak resident set grew over the sync. `--workers 0` stops there
//!    (a corp of a million relations: `--customers 666667 --workers 0`).
//! 2. **Workers**: stores a backlog of `--events` callbacks and lets a worker pool (the one `serve`
//!    runs, `--concurrency` events at a time) process it, reporting events/s. Two backlogs: events
//!    that need a WeCom call (`edit_external_contact` → `externalcontact/get`) and events that do not
//!    (`del_follow_user`). WeCom itself allows 10,000 calls per API per minute and corp, so in
//!    production the first kind is bounded by that (≈ 167/s per corp); this bench lifts the limit in
//!    the emulator and the client to measure the engine.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark fails loudly"
)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use scrm::app::events::EventProcessor;
use scrm::pipeline::inbox::NewInboxRow;
use scrm::pipeline::worker::{WorkerPool, WorkerSettings};
use scrm::platform::config::Config;
use scrm::platform::db::Db;
use scrm::platform::wecom::Wecom;
use tokio::sync::Notify;
use wecom_sdk::MemoryCoordinator;
use wecom_sdk::testkit::{Emulator, EmulatorConfig, EmulatorLimits, SeedSpec};

const CORP: &str = "ww1436e0e65a779aee";
const TOKEN: &str = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo";
const KEY: &str = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt";
const SECRET: &str = "bench-secret";

struct Options {
    backend: String,
    staff: usize,
    customers: usize,
    chats: usize,
    events: usize,
    concurrency: usize,
    workers: bool,
}

fn options() -> anyhow::Result<Options> {
    let f = common::Flags::parse();
    Ok(Options {
        backend: f.backend()?,
        staff: f.number("--staff", 200)?,
        customers: f.number("--customers", 20_000)?,
        chats: f.number("--chats", 500)?,
        events: f.number("--events", 100_000)?,
        concurrency: f.number("--concurrency", 16)?,
        workers: f.number("--workers", 1)? != 0,
    })
}

fn event_row(n: usize, user: &str, ext: &str, change: &str, create_time: i64) -> NewInboxRow {
    let body = format!(
        "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
         <CreateTime>{create_time}</CreateTime><MsgType><![CDATA[event]]></MsgType>\
         <Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[{change}]]></ChangeType>\
         <UserID><![CDATA[{user}]]></UserID><ExternalUserID><![CDATA[{ext}]]></ExternalUserID>\
         <State><![CDATA[bench-{n}]]></State></xml>"
    );
    let header = wecom_sdk::parse_header(body.as_bytes()).expect("bench event parses");
    NewInboxRow {
        corp_id: CORP.to_owned(),
        app: "contacts".to_owned(),
        agent_id: None,
        dedup_key: scrm::pipeline::inbox::dedup_key(&header, body.as_bytes()),
        msg_type: "event".to_owned(),
        event: Some("change_external_contact".to_owned()),
        change_type: Some(change.to_owned()),
        create_time: Some(create_time),
        received_at_ms: scrm::platform::db::now_ms(),
        body,
    }
}

async fn relation_pairs(db: &Db, limit: i64) -> anyhow::Result<Vec<(String, String)>> {
    const SQL: &str = "SELECT user_id, external_user_id FROM follow_relation WHERE corp_id = $1 \
        AND status = 'active' ORDER BY user_id, external_user_id LIMIT $2";
    let rows = scrm::on_db!(db, |pool| sqlx::query_as(SQL)
        .bind(CORP)
        .bind(limit)
        .fetch_all(pool)
        .await)?;
    Ok(rows)
}

async fn worker_run(
    db: &Db,
    wecom: &Wecom,
    pairs: &[(String, String)],
    events: usize,
    change: &str,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let base = chrono::Utc::now().timestamp() - 10_000_000;
    let rows: Vec<NewInboxRow> = (0..events)
        .map(|n| {
            let (user, ext) = &pairs[n % pairs.len()];
            event_row(n, user, ext, change, base + i64::try_from(n).unwrap_or(0))
        })
        .collect();
    for chunk in rows.chunks(1000) {
        let refs: Vec<&NewInboxRow> = chunk.iter().collect();
        scrm::pipeline::inbox::insert_batch(db, &refs).await?;
    }
    // The workers' own connections, as `serve` opens them.
    let work_db = db.for_workers().await?;
    let started = Instant::now();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let pool = WorkerPool::spawn(
        work_db.clone(),
        Arc::new(EventProcessor::new(work_db.clone(), wecom.clone())),
        WorkerSettings {
            concurrency,
            ..WorkerSettings::default()
        },
        scrm::pipeline::worker::instance_owner(),
        Arc::new(Notify::new()),
        async move {
            let _ = stop_rx.await;
        },
    );
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let stats = scrm::pipeline::worker::stats(db, Some(CORP)).await?;
        if stats.pending == 0 {
            if stats.dead > 0 {
                bail!("{} events went dead", stats.dead);
            }
            break;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let _ = stop_tx.send(());
    pool.join().await;
    work_db.close().await;
    Ok(events as f64 / secs)
}

/// A `/proc/self/status` figure in KiB (`VmRSS` now, `VmHWM` the peak).
fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let o = options()?;
    let dir = tempfile::tempdir()?;
    let emulator = Emulator::start(EmulatorConfig {
        limits: EmulatorLimits {
            per_api_per_minute: 10_000,
            per_api_per_hour: 150_000,
            ..EmulatorLimits::default()
        },
        ..EmulatorConfig::default()
    })
    .await?;
    let state = emulator.state();
    state.add_app(CORP, SECRET, Some(1_000_002));
    let seeded = state.seed(
        CORP,
        &SeedSpec {
            staff: o.staff,
            departments: 10,
            customers: o.customers,
            follows_per_customer: (1, 2),
            tag_groups: 5,
            tags_per_group: 8,
            group_chats: o.chats,
            members_per_chat: (3, 30),
            rng_seed: 2026,
        },
    );
    let (db_url, pg) = common::fresh_database(&o.backend, dir.path()).await?;
    let config_text = format!(
        "database_url = \"{db_url}\"\n[wecom]\napi_base_url = \"{}\"\n[[corps]]\ncorp_id = \"{CORP}\"\n\
         [[corps.apps]]\nname = \"contacts\"\ntoken = \"{TOKEN}\"\nencoding_aes_key = \"{KEY}\"\nsecret = \"{SECRET}\"\n",
        emulator.base_url()
    );
    let config = Config::from_toml(&config_text, &HashMap::new())?;
    let db = Db::connect(&db_url).await?;
    db.migrate().await?;
    let wecom = Wecom::new(&config, Arc::new(MemoryCoordinator::new()))?;

    // 1. Full sync. Memory: the emulator's corp is in memory already; what the sync adds shows as
    // the growth of this process's peak resident set over the run, flat if it keeps nothing per
    // relation.
    let rss_before = rss_kib("VmHWM");
    let started = Instant::now();
    let (_, summary) =
        scrm::app::sync::run(&db, &wecom, &common::corp(CORP), "bench", None, &|_| {}).await?;
    let wall = started.elapsed().as_secs_f64();
    let chunks = o.staff.div_ceil(100) as u64;
    let batch_calls = state.calls("externalcontact/batch/get_by_user");
    let min_batch = summary.relations_seen.div_ceil(100);
    println!("backend: {}", o.backend);
    println!(
        "sync: {} staff, {} customers, {} relations, {} chats in {wall:.2} s",
        summary.follow_users,
        seeded.customers.len(),
        summary.relations_seen,
        summary.chats_seen
    );
    println!(
        "  batch/get_by_user calls {batch_calls} (minimum {min_batch}..{}), groupchat/list {}, groupchat/get {}, \
         get_corp_tag_list {}, get_follow_user_list {}, gettoken {}; total {} ({} counted by the run)",
        min_batch + chunks,
        state.calls("externalcontact/groupchat/list"),
        state.calls("externalcontact/groupchat/get"),
        state.calls("externalcontact/get_corp_tag_list"),
        state.calls("externalcontact/get_follow_user_list"),
        state.calls("gettoken"),
        state.total_calls(),
        summary.api_calls
    );
    println!(
        "  rate-limit answers from the emulator: {}",
        state.rate_limited()
    );
    println!(
        "  resident memory: peak {:.1} MiB before the sync (the emulated corp included), {:.1} MiB after \
         ({:.1} MiB per 100,000 relations above the start)",
        rss_before as f64 / 1024.0,
        rss_kib("VmHWM") as f64 / 1024.0,
        rss_kib("VmHWM").saturating_sub(rss_before) as f64 / 1024.0 * 100_000.0
            / summary.relations_seen.max(1) as f64
    );
    if !o.workers {
        db.close().await;
        return common::drop_database(pg).await;
    }

    // 2. Workers: lift the per-API limit on both sides to measure the engine, not WeCom's quota.
    drop(wecom);
    let lifted = Emulator::start(EmulatorConfig {
        limits: EmulatorLimits {
            per_api_per_minute: u64::MAX / 4,
            per_api_per_hour: u64::MAX / 4,
            max_concurrent_per_api: 10_000,
            ..EmulatorLimits::default()
        },
        ..EmulatorConfig::default()
    })
    .await?;
    lifted.state().add_app(CORP, SECRET, Some(1_000_002));
    lifted.state().seed(
        CORP,
        &SeedSpec {
            staff: o.staff,
            departments: 10,
            customers: o.customers,
            follows_per_customer: (1, 2),
            tag_groups: 5,
            tags_per_group: 8,
            group_chats: 0,
            members_per_chat: (3, 30),
            rng_seed: 2026,
        },
    );
    let mut api = wecom_sdk::ApiConfig {
        base_url: lifted.base_url(),
        ..wecom_sdk::ApiConfig::default()
    };
    api.limits.per_api_per_minute = u64::MAX / 4;
    api.limits.per_api_per_hour = u64::MAX / 4;
    let wecom = Wecom::with_client(
        &config,
        wecom_sdk::WecomClient::new(api, Arc::new(MemoryCoordinator::new()))?,
    );
    let pairs = relation_pairs(&db, 100_000).await?;
    let with_api = worker_run(
        &db,
        &wecom,
        &pairs,
        o.events,
        "edit_external_contact",
        o.concurrency,
    )
    .await?;
    println!(
        "workers: {} edit_external_contact events (one externalcontact/get each): {with_api:.0} events/s",
        o.events
    );
    let without_api = worker_run(
        &db,
        &wecom,
        &pairs,
        o.events,
        "del_follow_user",
        o.concurrency,
    )
    .await?;
    println!(
        "workers: {} del_follow_user events (no WeCom call): {without_api:.0} events/s",
        o.events
    );
    db.close().await;
    common::drop_database(pg).await
}
