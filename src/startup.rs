//! Wiring: open the database, apply migrations, start the inbox writer, serve HTTP until shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::app::events::EventProcessor;
use crate::app::outbox_delivery::OutboxQueue;
use crate::app::sync;
use crate::http::{self, AppState};
use crate::pipeline::inbox::InboxWriter;
use crate::pipeline::outbox;
use crate::pipeline::worker::WorkerPool;
use crate::platform::config::Config;
use crate::platform::db::Db;
use crate::platform::wecom::Wecom;
use crate::platform::{coord, telemetry};

/// Opens the configured database and applies migrations.
pub async fn open_database(config: &Config) -> anyhow::Result<Db> {
    let url = config.effective_database_url();
    let db = Db::connect(&url)
        .await
        .with_context(|| format!("cannot open the database ({})", redact_url(&url)))?;
    db.migrate()
        .await
        .context("cannot apply database migrations")?;
    Ok(db)
}

/// Serves until `shutdown` resolves, then finishes in-flight requests and commits before returning.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_with(config, listener, shutdown, None).await
}

/// [`serve`], with `scrm demo`'s one-click sign-ins when `demo` is given (loopback only).
pub async fn serve_with(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    demo: Option<Arc<http::DemoAccess>>,
) -> anyhow::Result<()> {
    let addr = listener.local_addr().ok();
    if demo.is_some() && !addr.is_some_and(|a| a.ip().is_loopback()) {
        anyhow::bail!("the demo's one-click sign-ins are served on loopback only (127.0.0.1)");
    }
    if let Some(addr) = addr
        && !addr.ip().is_loopback()
    {
        let samples = config.published_sample_apps();
        if !samples.is_empty() {
            anyhow::bail!(
                "refusing to serve on {addr}: the callback configuration of {} uses a published sample \
                 Token or EncodingAESKey (WeCom's documents, deploy/scrm.emulator.toml), so anyone could \
                 sign callbacks. Use the values of your WeCom admin console, or listen on 127.0.0.1 for \
                 the emulator.",
                samples.join(", ")
            );
        }
    }
    if config.callback.timestamp_window_secs == 0 {
        tracing::warn!(
            "callback.timestamp_window_secs = 0: replayed callbacks of any age are accepted (signed \
             requests captured once can be sent again). Use 600 unless you test with the emulator."
        );
    }
    let db = open_database(&config).await?;
    let (rules, rules_source) = load_rules_with_source(&config)?;
    // Each corp's library saved in the console, else this instance's.
    let rules = crate::domain::rule_book::RuleBook::new(db.clone(), Arc::new(rules));
    if config.corps.is_empty() {
        tracing::warn!(
            "no corp configured: callbacks will answer 404. Add a [[corps]] section with its [[corps.apps]] to scrm.toml (see deploy/scrm.example.toml)"
        );
    }
    let write_db = db
        .dedicated_writer()
        .await
        .context("cannot open the inbox writer's connection")?;
    let (writer, writer_task) = InboxWriter::spawn(write_db.clone(), config.callback.max_batch);
    let coord = coord::connect(config.redis_url.as_deref())
        .await
        .context("cannot reach Redis (redis_url / SCRM_REDIS_URL)")?;
    let wecom = Wecom::new(&config, coord.clone()).context("cannot build the WeCom API client")?;
    rescan_on_rule_change(
        &db,
        &wecom,
        &rules,
        &rules_source,
        config.alerts.rescan_days,
    )
    .await?;
    let owner = coord::instance_id();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let archive =
        crate::app::archive_pull::Archive::new(&config, db.clone(), wecom.clone(), rules.clone())
            .map(Arc::new);
    let archive_tasks = archive.as_ref().map_or_else(Vec::new, |a| {
        tracing::info!(corps = ?a.corp_ids(), "chat archive: pulling");
        Arc::clone(a).spawn(coord.clone(), owner.clone(), stop_rx.clone())
    });
    // The workers' commits need not wait for the disk: what they did follows from rows committed
    // durably before (see `Db::for_workers`).
    let work_db = db
        .for_workers()
        .await
        .context("cannot open the workers' connections")?;
    let workers = {
        let mut stop = stop_rx.clone();
        WorkerPool::spawn(
            work_db.clone(),
            Arc::new(
                EventProcessor::new(work_db.clone(), wecom.clone())
                    .with_reminders(config.reminders.clone())
                    .with_rules(rules.clone())
                    .with_archive(archive.clone()),
            ),
            crate::pipeline::worker::WorkerSettings::from(&config.worker),
            owner.clone(),
            writer.commits(),
            async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            },
        )
    };
    let deliveries = {
        let mut stop = stop_rx.clone();
        WorkerPool::spawn_queue(
            OutboxQueue::new(work_db.clone(), wecom.clone()),
            crate::pipeline::worker::WorkerSettings::from(&config.outbox),
            owner.clone(),
            outbox::wakeups(),
            async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            },
        )
    };
    let scheduler = config.sync.enabled.then(|| {
        tokio::spawn(sync::schedule(
            db.clone(),
            wecom.clone(),
            coord.clone(),
            owner.clone(),
            config.sync.clone(),
            stop_rx.clone(),
        ))
    });
    let reminders = tokio::spawn(crate::domain::followup::run_reminders(
        db.clone(),
        config.reminders.clone(),
        stop_rx.clone(),
    ));
    let retention = tokio::spawn(crate::app::retention::run(
        db.clone(),
        config.retention.clone(),
        stop_rx.clone(),
    ));
    let transfers = tokio::spawn(crate::app::transfers::engine::run(
        db.clone(),
        wecom.clone(),
        config.transfers.clone(),
        coord::LeaderLock::new(
            coord.clone(),
            "transfers",
            &owner,
            std::time::Duration::from_secs(config.transfers.tick_secs.saturating_mul(10).max(30)),
        ),
        stop_rx.clone(),
    ));
    let mut endpoints: HashMap<String, HashMap<String, _>> = HashMap::new();
    for ((corp, app), endpoint) in config.endpoints() {
        endpoints.entry(corp).or_default().insert(app, endpoint);
    }
    let state = Arc::new(AppState {
        endpoints,
        settings: config.callback.clone(),
        writer,
        db: db.clone(),
        metrics: telemetry::metrics_handle(),
        wecom: wecom.clone(),
        config: Arc::new(config.clone()),
        rules: rules.clone(),
        coord: coord.clone(),
        demo,
    });
    tracing::info!(addr = ?addr, backend = db.backend(), corps = config.corps.len(), coordination = if config.redis_url.is_some() { "redis" } else { "in-process" }, instance = %owner, "serving");
    for corp in &config.corps {
        for app in &corp.apps {
            tracing::info!(corp_id = %corp.corp_id, app = %app.name, path = %format!("/wecom/callback/{}/{}", corp.corp_id, app.name), "callback URL");
        }
    }
    let gauges = tokio::spawn(http::ops::refresh_gauges(
        db.clone(),
        std::time::Duration::from_secs(config.metrics.refresh_secs),
        stop_rx.clone(),
    ));
    let metrics_server = match config.metrics.listen {
        Some(addr) => {
            let metrics_listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} ([metrics] listen)"))?;
            tracing::info!(%addr, "metrics on their own listener");
            let router = http::metrics_router(Arc::clone(&state));
            let settings = config.http.clone();
            let mut stop = stop_rx.clone();
            Some(tokio::spawn(async move {
                http::server::serve(metrics_listener, router, &settings, async move {
                    let _ = stop.wait_for(|stopped| *stopped).await;
                })
                .await
            }))
        }
        None => None,
    };
    let served = http::server::serve(listener, http::router(state), &config.http, shutdown)
        .await
        .context("HTTP server failed");
    // Stop the workers and the scheduler: in-flight events finish; unfinished jobs resume later.
    let _ = stop_tx.send(true);
    workers.join().await;
    deliveries.join().await;
    if let Some(scheduler) = scheduler {
        let _ = scheduler.await;
    }
    let _ = reminders.await;
    let _ = retention.await;
    let _ = transfers.await;
    let _ = gauges.await;
    if let Some(metrics_server) = metrics_server {
        let _ = metrics_server.await;
    }
    for task in archive_tasks {
        let _ = task.await;
    }
    served?;
    // The router (and with it every writer handle) is gone: the writer drains and stops.
    writer_task.await.context("inbox writer panicked")?;
    write_db.close().await;
    work_db.close().await;
    db.close().await;
    tracing::info!("stopped");
    Ok(())
}

pub use crate::platform::config::redact_url;

/// The content rule library of `[alerts] rules_file`, or the bundled default.
pub fn load_rules(config: &Config) -> anyhow::Result<crate::domain::scan::RuleLibrary> {
    Ok(load_rules_with_source(config)?.0)
}

/// [`load_rules`] and the library's TOML text.
fn load_rules_with_source(
    config: &Config,
) -> anyhow::Result<(crate::domain::scan::RuleLibrary, String)> {
    let Some(path) = &config.alerts.rules_file else {
        let source = crate::domain::scan::RuleLibrary::default_source().to_owned();
        return Ok((crate::domain::scan::RuleLibrary::default_library(), source));
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("alerts.rules_file: cannot read {}", path.display()))?;
    let library = crate::domain::scan::RuleLibrary::from_toml(&text)
        .with_context(|| format!("alerts.rules_file {}: invalid rule library", path.display()))?;
    Ok((library, text))
}

/// When the rule library differs from the one the last start used, stored messages of the last
/// `alerts.rescan_days` are scanned again in the background (a resumable job per corp); the first
/// start only records the library.
async fn rescan_on_rule_change(
    db: &Db,
    wecom: &Wecom,
    rules: &crate::domain::rule_book::RuleBook,
    source: &str,
    days: u32,
) -> anyhow::Result<()> {
    use crate::domain::settings;
    use sha2::Digest as _;
    const FINGERPRINT: &str = "rules_fingerprint";
    let fingerprint = hex::encode(sha2::Sha256::digest(source.as_bytes()));
    for corp in wecom.corp_ids() {
        let old = settings::get(db, &corp, FINGERPRINT).await?;
        if old.as_deref() == Some(fingerprint.as_str()) {
            continue;
        }
        let now = crate::platform::db::now_ms();
        // A corp with a library of its own (规则 page) does not scan with the instance's.
        let own = crate::domain::rule_book::newest_version(db, &corp)
            .await?
            .is_some();
        if old.is_some() && days > 0 && !own {
            let since = now.saturating_sub(i64::from(days) * 86_400_000);
            let job = crate::app::rescan::start(db, &corp, since).await?;
            tracing::info!(corp_id = %corp, job_id = job, days, "rule library changed: scanning stored messages again");
            let (db, wecom, rules) = (db.clone(), wecom.clone(), rules.clone());
            let owner = format!("start:{}", crate::pipeline::worker::instance_owner());
            tokio::spawn(async move {
                if let Err(e) = crate::app::rescan::run(&db, &wecom, &rules, job, &owner).await {
                    tracing::warn!(job_id = job, error = %e, "retroactive scan stopped; `scrm alerts rescan` resumes it");
                }
            });
        }
        settings::set(db, &corp, FINGERPRINT, &fingerprint, "system", now).await?;
    }
    Ok(())
}
