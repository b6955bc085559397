//! The long-running pool: one supervisor task claims rows for its free slots and runs each event in
//! tasks of its own, waking when the inbox writer commits, when an event finishes, and every
//! `idle_poll`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio::task::{JoinError, JoinHandle, JoinSet};
use tracing::Instrument as _;

use super::record::Recorder;
use super::{HandlerError, InboxHandler, InboxQueue, Queue, WorkerSettings, panicked, settle};
use crate::platform::db::{Db, now_ms};

/// An idle pool looks for work at least this rarely, whatever `idle_poll` says (a zero would spin).
const MIN_POLL: Duration = Duration::from_millis(10);

struct Shared<Q> {
    queue: Q,
    recorder: Recorder,
    settings: WorkerSettings,
    owner: String,
}

/// Workers of one instance. Dropping the handle stops the pool like [`WorkerPool::stop`] does,
/// without waiting for it.
#[derive(Debug)]
pub struct WorkerPool {
    task: JoinHandle<()>,
    stop: Option<oneshot::Sender<()>>,
}

impl WorkerPool {
    /// Starts the pool. `owner` names this instance in leases (unique per instance, e.g.
    /// [`super::instance_owner`]); each claim appends a sequence number. `wake` is notified when
    /// new rows may be there (the inbox writer's [`crate::pipeline::inbox::InboxWriter::commits`]). Once
    /// `shutdown` resolves, the pool claims nothing more and finishes the events it holds.
    pub fn spawn(
        db: Db,
        handler: Arc<dyn InboxHandler>,
        settings: WorkerSettings,
        owner: String,
        wake: Arc<Notify>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        Self::spawn_queue(
            InboxQueue::new(db, handler),
            settings,
            owner,
            wake,
            shutdown,
        )
    }

    /// [`WorkerPool::spawn`] for any [`Queue`].
    pub fn spawn_queue<Q>(
        queue: Q,
        settings: WorkerSettings,
        owner: String,
        wake: Arc<Notify>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Self
    where
        Q: Queue + 'static,
        Q::Item: 'static,
    {
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let stop = async move {
            tokio::select! {
                () = shutdown => {}
                _ = stop_rx => {}
            }
        };
        let shared = Arc::new(Shared {
            recorder: Recorder::spawn(queue.db().clone(), queue.table()),
            queue,
            settings,
            owner,
        });
        let task = tokio::spawn(supervise(shared, wake, stop));
        Self {
            task,
            stop: Some(stop_tx),
        }
    }

    /// Waits until the pool has stopped: after `shutdown` resolved and every event it held was
    /// finished and recorded.
    pub async fn join(mut self) {
        let _keep_running = self.stop.take();
        wait(&mut self.task).await;
    }

    /// Stops claiming now, finishes the events in flight, and returns once they are recorded.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        wait(&mut self.task).await;
    }
}

async fn wait(task: &mut JoinHandle<()>) {
    if let Err(e) = task.await {
        tracing::error!(error = %e, "worker pool supervisor failed");
    }
}

async fn supervise<Q>(shared: Arc<Shared<Q>>, wake: Arc<Notify>, stop: impl Future<Output = ()>)
where
    Q: Queue + 'static,
    Q::Item: 'static,
{
    let mut stop = std::pin::pin!(stop);
    let concurrency = shared.settings.concurrency.max(1);
    let idle = shared.settings.idle_poll.max(MIN_POLL);
    let mut running: JoinSet<()> = JoinSet::new();
    // Claims wait until half the slots are free (or all are): under a backlog one statement
    // then claims many rows, instead of one per finished event.
    let refill = (concurrency / 2).max(1);
    let mut seq: u64 = 0;
    tracing::info!(queue = Q::NAME, owner = %shared.owner, concurrency, "worker pool started");
    loop {
        while let Some(joined) = running.try_join_next() {
            log_join(joined);
        }
        let free = concurrency.saturating_sub(running.len());
        if free >= refill || running.is_empty() {
            seq += 1;
            let owner = format!("{}#{seq}", shared.owner);
            match shared
                .queue
                .claim(&owner, now_ms(), shared.settings.lease, free)
                .await
            {
                Ok(items) => {
                    for item in items {
                        running.spawn(run_one(Arc::clone(&shared), item, owner.clone()));
                    }
                }
                // Waits for the next wake-up or poll before trying again.
                Err(e) => {
                    tracing::warn!(queue = Q::NAME, error = %e, cause = ?std::error::Error::source(&e), "cannot claim rows");
                }
            }
        }
        tokio::select! {
            biased;
            () = &mut stop => break,
            Some(joined) = running.join_next(), if !running.is_empty() => log_join(joined),
            () = wake.notified() => {}
            () = tokio::time::sleep(idle) => {}
        }
    }
    tracing::info!(
        queue = Q::NAME,
        in_flight = running.len(),
        "worker pool stopping: finishing the rows it holds"
    );
    while let Some(joined) = running.join_next().await {
        log_join(joined);
    }
    tracing::info!(queue = Q::NAME, "worker pool stopped");
}

fn log_join(joined: Result<(), JoinError>) {
    if let Err(e) = joined {
        tracing::error!(error = %e, "worker task failed");
    }
}

/// One row: the handler in a task of its own (so a panic surfaces as a `JoinError`, and the
/// heartbeat runs beside it), then the outcome recorded.
async fn run_one<Q>(shared: Arc<Shared<Q>>, item: Q::Item, owner: String)
where
    Q: Queue + 'static,
    Q::Item: 'static,
{
    let item = Arc::new(item);
    let span = Q::span(&item);
    let job = {
        let shared = Arc::clone(&shared);
        let item = Arc::clone(&item);
        tokio::spawn(async move { shared.queue.handle(&item).await }.instrument(span))
    };
    let handling = async move {
        match job.await {
            Ok(result) => result,
            Err(e) if e.is_panic() => Err(panicked(e.into_panic().as_ref())),
            Err(_) => Err(HandlerError::retry("handler task was cancelled")),
        }
    };
    let settled = settle(
        &shared.queue,
        &shared.recorder,
        &item,
        &owner,
        &shared.settings,
        handling,
    )
    .await;
    if let Err(e) = settled {
        tracing::warn!(
            queue = Q::NAME,
            id = Q::id(&item),
            error = %e,
            cause = ?std::error::Error::source(&e),
            "cannot record the outcome; the row is retried once its lease expires"
        );
    }
}
