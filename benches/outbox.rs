//! Outbox delivery against the WeCom emulator while it enforces WeCom's limits (issue 5's
//! benchmark): tag edits made through `/api/v1` until WeCom (the emulator) has applied them.
//!
//! ```sh
//! cargo bench --bench outbox -- --backend sqlite
//! cargo bench --bench outbox -- --backend postgres
//! ```
//!
//! A real `scrm serve` (in process, on its own port) runs on a fresh database with an emulated corp
//! imported by a full sync. Every edit is a `PUT /api/v1/customers/{ext}/relations/{user}/tags` on
//! its own relation; its latency runs from sending the request to the moment the emulator applied
//! the `externalcontact/mark_tag` call (the emulator's write log, same clock).
//!
//! 1. **Paced**: `--rate` edits/s for `--seconds`, below WeCom's 10,000 calls per API per corp per
//!    minute (≈ 167/s): the latency a salesperson sees.
//! 2. **Backlog**: `--backlog` edits at once, more than one minute's quota, from `--clients`
//!    concurrent API clients, starting at a fresh minute window: the delivery rate WeCom's limits
//!    allow, and that nothing is refused by WeCom (the client keeps under the limit), lost or
//!    turned into a dead letter on the way.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    reason = "a test or benchmark fails loudly"
)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use scrm::platform::config::Config;
use scrm::platform::db::Db;
use scrm::platform::wecom::Wecom;
use tokio::sync::{Mutex, Semaphore};
use wecom_sdk::MemoryCoordinator;
use wecom_sdk::testkit::{Emulator, EmulatorConfig, EmulatorState, SeedSpec};

const CORP: &str = "ww1436e0e65a779aee";
const TOKEN: &str = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo";
const KEY: &str = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt";
const SECRET: &str = "bench-secret";
const MARK_TAG: &str = "externalcontact/mark_tag";
/// WeCom's calls per API per corp per minute.
const MINUTE_QUOTA: usize = 10_000;

struct Options {
    backend: String,
    rate: usize,
    seconds: usize,
    backlog: usize,
    clients: usize,
}

fn options() -> anyhow::Result<Options> {
    let f = common::Flags::parse();
    let o = Options {
        backend: f.backend()?,
        rate: f.number("--rate", 100)?,
        seconds: f.number("--seconds", 30)?,
        backlog: f.number("--backlog", 15_000)?,
        clients: f.number("--clients", 32)?,
    };
    if o.rate == 0 || o.clients == 0 {
        bail!("--rate and --clients must be positive");
    }
    Ok(o)
}

/// When each edit was sent, by relation.
type Sent = Arc<Mutex<HashMap<(String, String), Instant>>>;

struct Phase {
    edits: usize,
    first_sent: Instant,
    sent: Sent,
    writes_before: usize,
}

struct Report {
    delivered: usize,
    rate: f64,
    /// The rate over the first minute's quota (10,000 calls).
    quota_rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// Sends tag edits through the API.
struct Editor {
    http: reqwest::Client,
    base: String,
    key: String,
    tag: String,
}

impl Editor {
    /// Adds the bench tag to `pair`'s relation.
    async fn edit(&self, (user, ext): &(String, String)) -> anyhow::Result<()> {
        let response = self
            .http
            .put(format!(
                "{}/api/v1/customers/{ext}/relations/{user}/tags",
                self.base
            ))
            .bearer_auth(&self.key)
            .json(&serde_json::json!({"add": [self.tag]}))
            .send()
            .await?;
        if response.status() != 202 {
            bail!(
                "tag edit answered {}: {}",
                response.status(),
                response.text().await?
            );
        }
        Ok(())
    }

    /// Sends one edit in the background, noting when; `permit` is held until it is answered.
    fn spawn(
        self: &Arc<Self>,
        tasks: &mut tokio::task::JoinSet<anyhow::Result<()>>,
        pair: (String, String),
        sent: &Sent,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) {
        let (editor, sent) = (Arc::clone(self), Arc::clone(sent));
        tasks.spawn(async move {
            sent.lock().await.insert(pair.clone(), Instant::now());
            let answered = editor.edit(&pair).await;
            drop(permit);
            answered
        });
    }
}

/// Waits until the outbox has nothing pending; fails on a dead letter.
async fn drained(db: &Db) -> anyhow::Result<()> {
    loop {
        let stats =
            scrm::pipeline::outbox::stats(db, Some(CORP), scrm::platform::db::now_ms()).await?;
        if stats.dead > 0 {
            bail!("{} outbox items became dead letters", stats.dead);
        }
        if stats.pending == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Matches the emulator's `mark_tag` writes since the phase began with the sends.
async fn report(state: &EmulatorState, phase: Phase) -> anyhow::Result<Report> {
    let writes = state.writes_for(MARK_TAG);
    let writes = &writes[phase.writes_before..];
    let sent = phase.sent.lock().await;
    let mut latencies = Vec::with_capacity(writes.len());
    let mut last = phase.first_sent;
    let mut at_quota = phase.first_sent;
    for w in writes {
        let user = w.body["userid"].as_str().unwrap_or_default().to_owned();
        let ext = w.body["external_userid"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let Some(at) = sent.get(&(user, ext)) else {
            bail!("WeCom saw a mark_tag nobody sent: {}", w.body);
        };
        latencies.push(w.at.saturating_duration_since(*at).as_secs_f64() * 1000.0);
        last = last.max(w.at);
        if latencies.len() <= MINUTE_QUOTA {
            at_quota = at_quota.max(w.at);
        }
    }
    if writes.len() != phase.edits {
        bail!(
            "{} edits sent, {} reached WeCom: each must arrive exactly once",
            phase.edits,
            writes.len()
        );
    }
    latencies.sort_by(f64::total_cmp);
    let span = last
        .saturating_duration_since(phase.first_sent)
        .as_secs_f64();
    let quota_span = at_quota
        .saturating_duration_since(phase.first_sent)
        .as_secs_f64();
    Ok(Report {
        delivered: writes.len(),
        rate: writes.len() as f64 / span.max(1e-9),
        quota_rate: writes.len().min(MINUTE_QUOTA) as f64 / quota_span.max(1e-9),
        p50_ms: common::quantile(&latencies, 0.5),
        p99_ms: common::quantile(&latencies, 0.99),
        max_ms: latencies.last().copied().unwrap_or(f64::NAN),
    })
}

/// Sleeps until a second into the next epoch minute (WeCom's and our limiter's windows).
async fn next_minute() {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let into = now.as_millis() % 60_000;
    let wait = 60_000 - u64::try_from(into).unwrap() + 1_000;
    tokio::time::sleep(Duration::from_millis(wait)).await;
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let o = options()?;
    let paced = o.rate * o.seconds;
    let dir = tempfile::tempdir()?;
    let emulator = Emulator::start(EmulatorConfig::default()).await?;
    let state = emulator.state();
    state.add_app(CORP, SECRET, Some(1_000_002));
    state.seed(
        CORP,
        &SeedSpec {
            staff: 200,
            departments: 5,
            customers: paced + o.backlog,
            follows_per_customer: (1, 1),
            tag_groups: 2,
            tags_per_group: 5,
            group_chats: 0,
            members_per_chat: (0, 0),
            rng_seed: 55,
        },
    );
    // A tag no relation has yet: every edit is a real change (an edit that changes nothing is
    // answered without an outbox item).
    let tag = state.create_tag(CORP, "基准", "bench");

    let (db_url, pg) = common::fresh_database(&o.backend, dir.path()).await?;
    let config_text = format!(
        "listen = \"127.0.0.1:0\"\ndatabase_url = \"{db_url}\"\n[sync]\nenabled = false\n\
         [http]\napi_key_requests_per_minute = 1000000\napi_in_flight = 4096\n[wecom]\napi_base_url = \"{}\"\n[[corps]]\ncorp_id = \"{CORP}\"\napi_app = \"contacts\"\n\
         [[corps.apps]]\nname = \"contacts\"\ntoken = \"{TOKEN}\"\nencoding_aes_key = \"{KEY}\"\n\
         secret = \"{SECRET}\"\nagent_id = 1000002\n",
        emulator.base_url()
    );
    let config = Config::from_toml(&config_text, &HashMap::new())?;
    let db = Db::connect(&db_url).await?;
    db.migrate().await?;
    {
        let wecom = Wecom::new(&config, Arc::new(MemoryCoordinator::new()))?;
        let started = Instant::now();
        let (_, summary) =
            scrm::app::sync::run(&db, &wecom, &common::corp(CORP), "bench", None, &|_| {}).await?;
        println!(
            "backend {}: imported {} relations in {:.1} s",
            o.backend,
            summary.relations_seen,
            started.elapsed().as_secs_f64()
        );
    }
    let pairs: Vec<(String, String)> = scrm::on_db!(&db, |pool| sqlx::query_as(
        "SELECT user_id, external_user_id FROM follow_relation WHERE corp_id = $1 \
         ORDER BY external_user_id"
    )
    .bind(CORP)
    .fetch_all(pool)
    .await)?;
    if pairs.len() < paced + o.backlog {
        bail!("only {} relations imported", pairs.len());
    }
    let (_, key) = scrm::auth::create_key(
        &db,
        &common::corp(CORP),
        scrm::auth::Role::Admin,
        None,
        "bench",
        scrm::platform::db::now_ms(),
    )
    .await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(scrm::serve(config, listener, async {
        let _ = stop_rx.await;
    }));
    let http = reqwest::Client::new();
    let editor = Arc::new(Editor {
        http: http.clone(),
        base: base.clone(),
        key,
        tag,
    });
    while http.get(format!("{base}/readyz")).send().await.is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // 1. Paced.
    next_minute().await;
    let sent: Sent = Arc::default();
    let phase = Phase {
        edits: paced,
        first_sent: Instant::now(),
        sent: Arc::clone(&sent),
        writes_before: state.writes_for(MARK_TAG).len(),
    };
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / o.rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    for pair in pairs[..paced].iter().cloned() {
        tick.tick().await;
        editor.spawn(&mut tasks, pair, &sent, None);
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    drained(&db).await?;
    let paced_report = report(&state, phase).await?;

    // 2. Backlog, from a fresh minute window.
    next_minute().await;
    let sent: Sent = Arc::default();
    let phase = Phase {
        edits: o.backlog,
        first_sent: Instant::now(),
        sent: Arc::clone(&sent),
        writes_before: state.writes_for(MARK_TAG).len(),
    };
    let gate = Arc::new(Semaphore::new(o.clients));
    let accepting = Instant::now();
    for pair in pairs[paced..paced + o.backlog].iter().cloned() {
        let permit = Arc::clone(&gate).acquire_owned().await?;
        editor.spawn(&mut tasks, pair, &sent, Some(permit));
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let accept_secs = accepting.elapsed().as_secs_f64();
    drained(&db).await?;
    let backlog_report = report(&state, phase).await?;
    let attempts_max: i32 = scrm::on_db!(&db, |pool| sqlx::query_scalar(
        "SELECT COALESCE(MAX(attempts), 0) FROM outbox"
    )
    .fetch_one(pool)
    .await)?;

    println!(
        "paced   {} edits at {}/s: delivered {} at {:.0} items/s; API → WeCom latency p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        paced,
        o.rate,
        paced_report.delivered,
        paced_report.rate,
        paced_report.p50_ms,
        paced_report.p99_ms,
        paced_report.max_ms
    );
    println!(
        "backlog {} edits from {} clients: accepted by the API at {:.0}/s; delivered {} at {:.0} items/s \
         (the first minute's quota at {:.0}/s); latency p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        o.backlog,
        o.clients,
        o.backlog as f64 / accept_secs,
        backlog_report.delivered,
        backlog_report.rate,
        backlog_report.quota_rate,
        backlog_report.p50_ms,
        backlog_report.p99_ms,
        backlog_report.max_ms
    );
    println!(
        "WeCom limit: 10000 mark_tag per corp per minute; emulator rate-limit answers {}; most attempts for one item {}; dead letters 0",
        state.rate_limited(),
        attempts_max
    );
    let _ = stop_tx.send(());
    server.await??;
    db.close().await;
    common::drop_database(pg).await
}
