//! The HTTP server with the limits the open internet needs (`[http]`): a cap on open connections,
//! a deadline for a request's head (which also closes idle keep-alive connections: hyper starts
//! the timer whenever it waits for the next request's head), a deadline for reading a body
//! ([`body_deadline`]), and in-flight caps per route class so a flood of API or metrics requests
//! cannot take the capacity WeCom's callbacks need ([`admit`]).
//!
//! `axum::serve` has none of these (it sets no timer, so hyper's header timeout is off), hence
//! the accept loop here: hyper's HTTP/1 connection builder with Tokio's timer, one task per
//! connection holding a permit of the connection cap, graceful shutdown that lets in-flight
//! requests finish.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::platform::config::HttpSettings;

/// How long shutdown waits for in-flight requests before it closes what is left.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// In-flight request caps per route class, shared by every connection.
#[derive(Debug, Clone)]
pub struct Admission {
    callbacks: Arc<Semaphore>,
    others: Arc<Semaphore>,
}

impl Admission {
    /// Caps from the settings.
    pub fn new(settings: &HttpSettings) -> Self {
        Self {
            callbacks: Arc::new(Semaphore::new(settings.callback_in_flight)),
            others: Arc::new(Semaphore::new(settings.api_in_flight)),
        }
    }
}

/// Middleware: a callback takes a permit of the callbacks' own pool, anything else (API,
/// metrics, health) one of the other pool; a full pool answers 503 at once with `Retry-After`,
/// rather than queueing behind the requests that filled it.
pub async fn admit(
    axum::extract::State(admission): axum::extract::State<Admission>,
    request: Request,
    next: Next,
) -> Response {
    let pool = if request.uri().path().starts_with("/wecom/callback/") {
        &admission.callbacks
    } else {
        &admission.others
    };
    let Ok(_permit) = Arc::clone(pool).try_acquire_owned() else {
        metrics::counter!("scrm_http_shed_total", "class" => class(request.uri().path()))
            .increment(1);
        let mut response = (
            StatusCode::SERVICE_UNAVAILABLE,
            "服务繁忙，请稍后重试 / busy, retry later",
        )
            .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    };
    next.run(request).await
}

fn class(path: &str) -> &'static str {
    if path.starts_with("/wecom/callback/") {
        "callback"
    } else if path.starts_with("/api/") {
        "api"
    } else {
        "operations"
    }
}

/// Reads a whole body within `deadline` and `limit` bytes. `None`: the deadline passed (the
/// client sends too slowly); `Some(Err)`: the body was too large or broken.
pub async fn body_deadline(
    body: Body,
    limit: usize,
    deadline: Duration,
) -> Option<Result<axum::body::Bytes, axum::Error>> {
    tokio::time::timeout(deadline, axum::body::to_bytes(body, limit))
        .await
        .ok()
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets in-flight requests finish
/// (up to [`SHUTDOWN_GRACE`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: &HttpSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let connections = Arc::new(Semaphore::new(settings.max_connections));
    let graceful = GracefulShutdown::new();
    let header_timeout = Duration::from_millis(settings.header_read_timeout_ms);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // At the cap, stop accepting: new connections wait in the kernel's backlog.
        let permit = tokio::select! {
            permit = Arc::clone(&connections).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        metrics::gauge!("scrm_http_connections").increment(1.0);
        let service = TowerToHyperService::new(router.clone());
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection closed with an error");
            }
            metrics::gauge!("scrm_http_connections").decrement(1.0);
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "shutdown: connections still open after {} s; closing them",
            SHUTDOWN_GRACE.as_secs()
        );
    }
    Ok(())
}
