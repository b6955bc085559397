//! Reassignment against the WeCom emulator with its limits on (issue 8's benchmark): a departed
//! member's customers and group chats planned, executed and followed to a final state.
//!
//! ```sh
//! cargo bench --bench transfers -- --backend sqlite --customers 10000 --chats 1000 --takers 4
//! cargo bench --bench transfers -- --backend postgres --customers 10000 --chats 1000 --takers 4
//! ```
//!
//! The engine (`transfers::engine::advance`) and the outbox workers run in this process on a fresh
//! database, with an emulated corp imported by a full sync; the engine's clock is the emulator's.
//! Reported:
//! 1. **plan**: the plan with its preview written;
//! 2. **execute**: from the start until every customer is sent and answered (waiting on WeCom's
//!    24 h window, refused or failed) and today's 300 chats are moved — wall time, and the calls
//!    made against the fewest the 100-per-call rule allows;
//! 3. **resolve**: the emulator's clock passes the 24 h window; the time until every customer is
//!    final (`transfer_result` polling, takeovers with their carry-over);
//! 4. **days**: the emulator's clock moves to each next midnight (China Standard Time) until every
//!    chat is moved (300 a day).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    reason = "a test or benchmark fails loudly"
)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use scrm::app::outbox_delivery::OutboxQueue;
use scrm::app::transfers::engine;
use scrm::domain::transfers::{self, ItemFilter, PlanRequest, Progress};
use scrm::pipeline::worker::WorkerPool;
use scrm::platform::config::{Config, TransferSettings};
use scrm::platform::db::Db;
use scrm::platform::wecom::Wecom;
use wecom_sdk::MemoryCoordinator;
use wecom_sdk::testkit::{Emulator, EmulatorConfig, EmulatorState, NewCustomer, NewStaff};

const CORP: &str = "ww1436e0e65a779aee";
const TOKEN: &str = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo";
const KEY: &str = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt";
const SECRET: &str = "bench-secret";
const HANDOVER: &str = "zhangsan";
const CUSTOMER_API: &str = "externalcontact/resigned/transfer_customer";
const CHAT_API: &str = "externalcontact/groupchat/transfer";

struct Options {
    backend: String,
    customers: usize,
    chats: usize,
    takers: usize,
}

fn options() -> anyhow::Result<Options> {
    let f = common::Flags::parse();
    let o = Options {
        backend: f.backend()?,
        customers: f.number("--customers", 10_000)?,
        chats: f.number("--chats", 1_000)?,
        takers: f.number("--takers", 4)?,
    };
    if o.takers == 0 || o.takers > 100 {
        bail!("--takers must be 1 to 100");
    }
    Ok(o)
}

fn set_up(state: &EmulatorState, o: &Options) -> Vec<String> {
    let mut takers = Vec::new();
    for i in 0..=o.takers {
        let userid = if i == 0 {
            HANDOVER.to_owned()
        } else {
            format!("taker{i:02}")
        };
        state.add_staff(
            CORP,
            NewStaff {
                userid: userid.clone(),
                name: format!("成员{i}"),
                department: Vec::new(),
            },
        );
        if i > 0 {
            takers.push(userid);
        }
    }
    let vip = state.create_tag(CORP, "客户等级", "VIP");
    for i in 0..o.customers {
        state.add_customer(
            CORP,
            HANDOVER,
            NewCustomer {
                name: format!("客户{i}"),
                external_userid: Some(format!("wmBenchTransfer{i:07}")),
                tag_ids: if i % 10 == 0 {
                    vec![vip.clone()]
                } else {
                    Vec::new()
                },
                ..NewCustomer::default()
            },
        );
    }
    for i in 0..o.chats {
        let member = format!("wmBenchTransfer{:07}", i % o.customers.max(1));
        state.create_group_chat(CORP, HANDOVER, vec![member]);
    }
    takers
}

async fn progress(db: &Db, job: i64) -> anyhow::Result<Progress> {
    Ok(Progress::of(&transfers::counts(db, job).await?))
}

fn count(p: &Progress, state: &str) -> i64 {
    p.customers.get(state).copied().unwrap_or(0) + p.group_chats.get(state).copied().unwrap_or(0)
}

/// Engine rounds at the emulator's time until `done` says so (the outbox workers deliver
/// meanwhile). Fails on a dead letter.
async fn rounds(
    db: &Db,
    wecom: &Wecom,
    state: &EmulatorState,
    job: i64,
    done: impl Fn(&Progress) -> bool,
) -> anyhow::Result<Progress> {
    let settings = TransferSettings::default();
    loop {
        engine::advance(db, wecom, &settings, state.now_ms()).await?;
        let p = progress(db, job).await?;
        let stats =
            scrm::pipeline::outbox::stats(db, Some(CORP), scrm::platform::db::now_ms()).await?;
        if stats.dead > 0 {
            bail!("{} outbox calls became dead letters", stats.dead);
        }
        if done(&p) && stats.pending == 0 {
            return Ok(p);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The fewest calls the 100-per-call rule allows for what was sent: per taker for customers,
/// per (taker, day) for chats.
fn minimum_calls(items: &[transfers::TransferItem]) -> (usize, usize) {
    let mut customers: BTreeMap<&str, usize> = BTreeMap::new();
    let mut chats: BTreeMap<(&str, i64), usize> = BTreeMap::new();
    for i in items {
        let Some(sent) = i.sent_at_ms else { continue };
        if i.kind == "customer" {
            *customers.entry(i.takeover_user_id.as_str()).or_default() += 1;
        } else {
            *chats
                .entry((i.takeover_user_id.as_str(), engine::day_start_ms(sent)))
                .or_default() += 1;
        }
    }
    (
        customers.values().map(|n| n.div_ceil(100)).sum(),
        chats.values().map(|n| n.div_ceil(100)).sum(),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("SCRM_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let o = options()?;
    let dir = tempfile::tempdir()?;
    let emulator = Emulator::start(EmulatorConfig::default()).await?;
    let state = emulator.state();
    state.add_app(CORP, SECRET, Some(1_000_002));
    let takers = set_up(&state, &o);

    let (db_url, pg) = common::fresh_database(&o.backend, dir.path()).await?;
    let config_text = format!(
        "listen = \"127.0.0.1:0\"\ndatabase_url = \"{db_url}\"\n[sync]\nenabled = false\n\
         [wecom]\napi_base_url = \"{}\"\n[[corps]]\ncorp_id = \"{CORP}\"\napi_app = \"contacts\"\n\
         [[corps.apps]]\nname = \"contacts\"\ntoken = \"{TOKEN}\"\nencoding_aes_key = \"{KEY}\"\n\
         secret = \"{SECRET}\"\nagent_id = 1000002\n",
        emulator.base_url()
    );
    let config = Config::from_toml(&config_text, &HashMap::new())?;
    let db = Db::connect(&db_url).await?;
    db.migrate().await?;
    let wecom = Wecom::new(&config, Arc::new(MemoryCoordinator::new()))?;
    let started = Instant::now();
    scrm::app::sync::run(&db, &wecom, &common::corp(CORP), "bench", None, &|_| {}).await?;
    // The member leaves once we know the corp (no callback target: what `delete_user` does).
    assert!(state.depart_staff(CORP, HANDOVER));
    scrm::domain::staff::mark_departed(
        &db,
        &common::corp(CORP),
        &common::user(HANDOVER),
        state.now_ms(),
        scrm::platform::db::now_ms(),
    )
    .await?;
    let n = scrm::app::transfers::departures::refresh_unassigned(
        &db,
        &wecom,
        &common::corp(CORP),
        scrm::platform::db::now_ms(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "backend {}: imported the corp and {n} unassigned customers in {:.1} s",
        o.backend,
        started.elapsed().as_secs_f64()
    );

    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let deliveries = WorkerPool::spawn_queue(
        OutboxQueue::new(db.clone(), wecom.clone()),
        scrm::pipeline::worker::WorkerSettings::from(&config.outbox),
        "bench".to_owned(),
        scrm::pipeline::outbox::wakeups(),
        async move {
            let _ = stop_rx.wait_for(|stopped| *stopped).await;
        },
    );

    // 1. Plan.
    let t = Instant::now();
    let planned = transfers::plan(
        &db,
        &common::corp(CORP),
        &PlanRequest {
            handover_user_id: HANDOVER.to_owned(),
            takeover_user_ids: takers.clone(),
            ..PlanRequest::default()
        },
        "bench",
        state.now_ms(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let plan_secs = t.elapsed().as_secs_f64();
    let job = planned.job.id;
    if planned.customers != o.customers || planned.group_chats != o.chats {
        bail!(
            "planned {} customers and {} chats",
            planned.customers,
            planned.group_chats
        );
    }

    // 2. Execute (day one).
    let t = Instant::now();
    transfers::start(&db, CORP, job, "bench", state.now_ms())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let p = rounds(&db, &wecom, &state, job, |p| p.in_flight() == 0).await?;
    let execute_secs = t.elapsed().as_secs_f64();
    let day_one_calls = (
        state.writes_for(CUSTOMER_API).len(),
        state.writes_for(CHAT_API).len(),
    );

    let day_one_chats = p.group_chats.get("done").copied().unwrap_or(0);
    let day_one_scheduled = count(&p, "scheduled");

    // 3. WeCom's 24 h window passes (and with it midnight): every customer is taken over (or
    //    refused, or over a limit), read back by polling `transfer_result`.
    state.advance_clock(Duration::from_secs(24 * 3600 + 60));
    let t = Instant::now();
    let p = rounds(&db, &wecom, &state, job, |p| {
        p.customers
            .iter()
            .all(|(s, _)| !transfers::OPEN_STATES.contains(&s.as_str()))
    })
    .await?;
    let resolve_secs = t.elapsed().as_secs_f64();
    let customers_final = p.customers.clone();

    // 4. The next days, for the chats over the budget.
    let t = Instant::now();
    let mut days = 2;
    let mut p = rounds(&db, &wecom, &state, job, |p| p.in_flight() == 0).await?;
    while count(&p, "scheduled") > 0 {
        let now = state.now_ms();
        let midnight = engine::next_day_ms(now);
        state.advance_clock(Duration::from_millis(
            u64::try_from(midnight - now).unwrap_or(0) + 1_000,
        ));
        days += 1;
        p = rounds(&db, &wecom, &state, job, |p| p.in_flight() == 0).await?;
    }
    let p = rounds(&db, &wecom, &state, job, |p| p.finished() == p.total()).await?;
    let days_secs = t.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    deliveries.join().await;
    let job_row = transfers::job_by_id(&db, job).await?;

    let items = transfers::items(
        &db,
        job,
        &ItemFilter {
            limit: Some(5000),
            ..ItemFilter::default()
        },
    )
    .await?;
    let mut all = items;
    while all.len() < o.customers + o.chats {
        let after = all.last().map(|i| i.id);
        let more = transfers::items(
            &db,
            job,
            &ItemFilter {
                after_id: after,
                limit: Some(5000),
                ..ItemFilter::default()
            },
        )
        .await?;
        if more.is_empty() {
            break;
        }
        all.extend(more);
    }
    let (min_customers, min_chats) = minimum_calls(&all);
    // Calls WeCom accepted; a call refused for an access_token that expired while the emulator's
    // clock jumped a day (42001) is repeated with a fresh token and counted apart.
    let calls = (
        state.writes_for(CUSTOMER_API).len(),
        state.writes_for(CHAT_API).len(),
    );
    let expired = state.calls(CUSTOMER_API) + state.calls(CHAT_API)
        - u64::try_from(calls.0 + calls.1).unwrap_or(0);
    println!(
        "plan     {} customers + {} chats over {} takers: {:.2} s",
        o.customers, o.chats, o.takers, plan_secs
    );
    let (outbox_items, outbox_attempts): (i64, i64) = scrm::on_db!(&db, |pool| sqlx::query_as(
        "SELECT COUNT(*), COALESCE(SUM(attempts), 0) FROM outbox \
         WHERE kind IN ('transfer_customer', 'transfer_group_chat')"
    )
    .fetch_one(pool)
    .await)?;
    println!(
        "execute  day one: {:.2} s wall; {} customer calls (minimum {}), {} chat calls; {} chats moved, {} scheduled",
        execute_secs,
        day_one_calls.0,
        min_customers,
        day_one_calls.1,
        day_one_chats,
        day_one_scheduled
    );
    println!(
        "resolve  24 h window passed → every customer final: {:.2} s wall; {:?}",
        resolve_secs, customers_final
    );
    println!(
        "days     {} days for the chats (300 a day): {:.2} s wall from day two; {} chat calls in all (minimum {}); chats {:?}; job {}",
        days, days_secs, calls.1, min_chats, p.group_chats, job_row.state
    );
    println!(
        "total    {} calls to WeCom's transfer APIs (minimum {}) from {} outbox items ({} attempts); \
         {} repeated after a token expired with the emulator's day jump; emulator rate-limit \
         answers {}; transfer_result calls {}",
        calls.0 + calls.1,
        min_customers + min_chats,
        outbox_items,
        outbox_attempts,
        expired,
        state.rate_limited(),
        state.calls("externalcontact/resigned/transfer_result")
    );
    let mut per: HashMap<String, usize> = HashMap::new();
    for t in state.transfers(CORP) {
        *per.entry(t.external_userid).or_default() += 1;
    }
    if per.len() != o.customers || per.values().any(|n| *n != 1) {
        bail!("every customer must be transferred exactly once");
    }
    db.close().await;
    common::drop_database(pg).await
}
