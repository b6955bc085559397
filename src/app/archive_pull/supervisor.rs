//! The server's side of `scrm archive-worker`: starts the child, speaks the framed protocol to it,
//! and replaces it when it crashes (the pipe closes), hangs (no answer within the call timeout) or
//! grows past the memory limit (checked after every answer, so no answer is lost to it). Starts
//! back off from 1 s, doubling up to the configured maximum, and reset after a good answer.
//! Every restart is counted (`scrm_archive_worker_restarts_total{reason}`), logged and written to
//! the corp's cursor row, where `scrm archive status` and the API show it.

use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt as _;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::domain::archive::proto::{self, Reply, Request};
use crate::platform::db::Db;

/// How to start a worker for one corp.
#[derive(Clone)]
pub struct WorkerSpec {
    /// The corp.
    pub corp_id: String,
    /// The program run as `PROGRAM archive-worker`.
    pub program: PathBuf,
    /// The first frame (library, credentials, keys).
    pub hello: Request,
    /// The library's own timeout per call, seconds; the supervisor waits 5 s more.
    pub call_timeout_secs: i32,
    /// Resident memory above which the worker is replaced.
    pub memory_limit_kib: u64,
    /// Longest backoff between two starts.
    pub backoff_max: Duration,
    /// Extra environment of the worker.
    pub env: std::collections::BTreeMap<String, String>,
}

impl std::fmt::Debug for WorkerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret or the keys.
        f.debug_struct("WorkerSpec")
            .field("corp_id", &self.corp_id)
            .field("program", &self.program)
            .finish_non_exhaustive()
    }
}

/// Why a call got no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The worker died, hung or could not be started; it is replaced on the next call.
    #[error("archive worker {reason}: {detail}")]
    Worker {
        /// `crash`, `hang`, `start`, `protocol`.
        reason: &'static str,
        /// What happened.
        detail: String,
    },
    /// The library answered with an error code.
    #[error("library ret {ret}: {message}")]
    Library {
        /// The library's return code (0 for a load or configuration failure).
        ret: i32,
        /// What it means.
        message: String,
    },
}

struct Running {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    pid: u32,
}

/// One corp's worker.
pub struct Supervisor {
    spec: WorkerSpec,
    db: Option<Db>,
    running: Option<Running>,
    backoff: Duration,
    not_before: Option<Instant>,
    restarts: u64,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("spec", &self.spec)
            .field("pid", &self.running.as_ref().map(|r| r.pid))
            .field("restarts", &self.restarts)
            .finish()
    }
}

impl Supervisor {
    /// A supervisor; the worker starts on the first call. With `db`, restarts are recorded on the
    /// corp's cursor row.
    pub fn new(spec: WorkerSpec, db: Option<Db>) -> Self {
        Self {
            spec,
            db,
            running: None,
            backoff: Duration::from_secs(1),
            not_before: None,
            restarts: 0,
        }
    }

    /// Restarts so far (crash, hang, memory, failed start).
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// The worker's pid, when one runs.
    pub fn pid(&self) -> Option<u32> {
        self.running.as_ref().map(|r| r.pid)
    }

    /// Sends `request` and waits for its reply, starting the worker first when none runs.
    pub async fn call(&mut self, request: &Request) -> Result<Reply, CallError> {
        if self.running.is_none() {
            self.start().await?;
        }
        let reply = self.call_started(request).await;
        if !matches!(reply, Err(CallError::Worker { .. })) {
            self.backoff = Duration::from_secs(1);
            self.check_memory().await;
        }
        reply
    }

    /// Stops the worker (at shutdown): closes its stdin and waits briefly, then kills it.
    pub async fn shutdown(&mut self) {
        if let Some(mut run) = self.running.take() {
            drop(run.stdin);
            if tokio::time::timeout(Duration::from_secs(5), run.child.wait())
                .await
                .is_err()
            {
                let _ = run.child.kill().await;
            }
        }
    }

    async fn start(&mut self) -> Result<(), CallError> {
        if let Some(at) = self.not_before {
            tokio::time::sleep_until(at.into()).await;
        }
        // The vendor library sees only what it needs: no database or Redis URL, no secrets of
        // ours. `[archive.worker_env]` adds what the library wants (LD_LIBRARY_PATH, a proxy).
        let passed: Vec<(String, String)> = ["PATH", "LANG", "TZ", "SCRM_LOG", "RUST_LOG"]
            .iter()
            .filter_map(|name| std::env::var(name).ok().map(|v| ((*name).to_owned(), v)))
            .collect();
        let mut child = Command::new(&self.spec.program)
            .arg("archive-worker")
            .env_clear()
            .envs(passed)
            .envs(&self.spec.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                self.not_before = Some(Instant::now() + self.backoff);
                self.backoff = (self.backoff * 2).min(self.spec.backoff_max);
                CallError::Worker {
                    reason: "start",
                    detail: format!("cannot run {}: {e}", self.spec.program.display()),
                }
            })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(CallError::Worker {
                reason: "start",
                detail: "no pipes to the worker".into(),
            });
        };
        let pid = child.id().unwrap_or(0);
        self.running = Some(Running {
            child,
            stdin,
            stdout,
            pid,
        });
        tracing::info!(corp_id = %self.spec.corp_id, pid, "archive worker started");
        let hello = self.spec.hello.clone();
        match Box::pin(self.call_started(&hello)).await {
            Ok(Reply::Ready { versions }) => {
                tracing::info!(corp_id = %self.spec.corp_id, pid, key_versions = ?versions, "archive worker ready");
                Ok(())
            }
            Ok(other) => {
                // The variant only: a reply may carry chat content or media.
                self.replace(
                    "start",
                    format!("unexpected answer to hello: {}", other.variant()),
                )
                .await;
                Err(CallError::Worker {
                    reason: "start",
                    detail: "unexpected answer to hello".into(),
                })
            }
            Err(CallError::Library { ret, message }) => {
                // Loading or Init failed: the worker exits; try again after the backoff.
                self.replace("start", format!("ret {ret}: {message}")).await;
                Err(CallError::Library { ret, message })
            }
            Err(e) => Err(e),
        }
    }

    /// `call` without the start (used for hello).
    async fn call_started(&mut self, request: &Request) -> Result<Reply, CallError> {
        let Some(run) = self.running.as_mut() else {
            return Err(CallError::Worker {
                reason: "start",
                detail: "no worker".into(),
            });
        };
        let frame = proto::encode(request).map_err(|e| CallError::Worker {
            reason: "protocol",
            detail: e.to_string(),
        })?;
        let timeout = Duration::from_secs(
            u64::try_from(self.spec.call_timeout_secs.max(1)).unwrap_or(30) + 5,
        );
        let exchange = async {
            run.stdin.write_all(&frame).await?;
            run.stdin.flush().await?;
            proto::read_async::<Reply>(&mut run.stdout)
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Err(_) => {
                let detail = format!(
                    "no answer within {}s; the worker was killed",
                    timeout.as_secs()
                );
                self.replace("hang", detail.clone()).await;
                Err(CallError::Worker {
                    reason: "hang",
                    detail,
                })
            }
            Ok(Err(e)) => {
                let detail = self.exit_detail(&e.to_string()).await;
                self.replace("crash", detail.clone()).await;
                Err(CallError::Worker {
                    reason: "crash",
                    detail,
                })
            }
            Ok(Ok(Reply::Failed { ret, message })) => Err(CallError::Library { ret, message }),
            Ok(Ok(reply)) => Ok(reply),
        }
    }

    /// How the worker ended, when it did (a closed pipe usually means it died).
    async fn exit_detail(&mut self, io: &str) -> String {
        let Some(run) = self.running.as_mut() else {
            return io.to_owned();
        };
        match tokio::time::timeout(Duration::from_secs(2), run.child.wait()).await {
            Ok(Ok(status)) => match (status.code(), status.signal()) {
                (_, Some(sig)) => format!("killed by signal {sig}{}", signal_name(sig)),
                (Some(code), None) => format!("exited with status {code}"),
                _ => status.to_string(),
            },
            _ => io.to_owned(),
        }
    }

    async fn check_memory(&mut self) {
        let Some(pid) = self.pid() else { return };
        let Some(rss) = super::child::rss_kib(pid) else {
            return;
        };
        metrics::gauge!("scrm_archive_worker_rss_bytes", "corp_id" => self.spec.corp_id.clone())
            .set((rss * 1024) as f64);
        if rss > self.spec.memory_limit_kib {
            self.replace(
                "memory",
                format!(
                    "resident memory {} MiB over the limit of {} MiB",
                    rss / 1024,
                    self.spec.memory_limit_kib / 1024
                ),
            )
            .await;
        }
    }

    /// Kills the worker and counts a restart; the next call starts a new one after the backoff.
    async fn replace(&mut self, reason: &'static str, detail: String) {
        if let Some(mut run) = self.running.take() {
            let _ = run.child.kill().await;
        }
        self.restarts += 1;
        self.not_before = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(self.spec.backoff_max);
        metrics::counter!("scrm_archive_worker_restarts_total", "corp_id" => self.spec.corp_id.clone(), "reason" => reason).increment(1);
        tracing::warn!(corp_id = %self.spec.corp_id, reason, detail = %detail, restarts = self.restarts, "archive worker replaced");
        if let Some(db) = &self.db
            && let Err(e) = crate::domain::archive::store::record_restart(
                db,
                &self.spec.corp_id,
                reason,
                &detail,
            )
            .await
        {
            tracing::warn!(corp_id = %self.spec.corp_id, error = %e, "cannot record the archive worker restart");
        }
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        6 => " (SIGABRT)",
        9 => " (SIGKILL)",
        11 => " (SIGSEGV)",
        7 => " (SIGBUS)",
        _ => "",
    }
}
