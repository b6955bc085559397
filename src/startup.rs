//! Wiring: open the database, apply migrations, start the inbox writer, serve HTTP until shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::db::Db;
use crate::events::EventProcessor;
use crate::http::{self, AppState};
use crate::inbox::InboxWriter;
use crate::outbox::{self, OutboxQueue};
use crate::wecom::Wecom;
use crate::worker::WorkerPool;
use crate::{coord, sync, telemetry};

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
    let db = open_database(&config).await?;
    let rules = Arc::new(load_rules(&config)?);
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
    let owner = coord::instance_id();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let workers = {
        let mut stop = stop_rx.clone();
        WorkerPool::spawn(
            db.clone(),
            Arc::new(
                EventProcessor::new(db.clone(), wecom.clone())
                    .with_reminders(config.reminders.clone())
                    .with_rules(rules.clone()),
            ),
            config.worker.settings(),
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
            OutboxQueue::new(db.clone(), wecom.clone()),
            config.outbox.settings(),
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
    let reminders = tokio::spawn(crate::followup::run_reminders(
        db.clone(),
        config.reminders.clone(),
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
    });
    let addr = listener.local_addr().ok();
    tracing::info!(addr = ?addr, backend = db.backend(), corps = config.corps.len(), coordination = if config.redis_url.is_some() { "redis" } else { "in-process" }, instance = %owner, "serving");
    for corp in &config.corps {
        for app in &corp.apps {
            tracing::info!(corp_id = %corp.corp_id, app = %app.name, path = %format!("/wecom/callback/{}/{}", corp.corp_id, app.name), "callback URL");
        }
    }
    let served = axum::serve(listener, http::router(state))
        .with_graceful_shutdown(shutdown)
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
    served?;
    // The router (and with it every writer handle) is gone: the writer drains and stops.
    writer_task.await.context("inbox writer panicked")?;
    write_db.close().await;
    db.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// The URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}://{}:***@{}", &url[..scheme_end], user, &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// The content rule library of `[alerts] rules_file`, or the bundled default.
pub fn load_rules(config: &Config) -> anyhow::Result<crate::scan::RuleLibrary> {
    let Some(path) = &config.alerts.rules_file else {
        return Ok(crate::scan::RuleLibrary::default_library());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("alerts.rules_file: cannot read {}", path.display()))?;
    crate::scan::RuleLibrary::from_toml(&text)
        .with_context(|| format!("alerts.rules_file {}: invalid rule library", path.display()))
}
