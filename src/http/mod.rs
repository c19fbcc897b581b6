//! The HTTP listener (axum on hyper, HTTP/1.1), on `http_bind` (default 127.0.0.1:9754). The
//! ops router:
//! - `/healthz`: 200 while the process serves requests.
//! - `/readyz`: 200 when plans are loaded, the database answers and the last tick finished
//!   successfully within the last 3 minutes; else 503 with the reasons.
//! - `/metrics`: Prometheus text format 0.0.4 (counters from `metrics`, gauges from the
//!   database at scrape time).
//! - `/status`: the `Status` as JSON (what `contactplan status` shows).
//! - `POST /api/v1/orders`: orders into the store ([`api`]); always needs the API token, and
//!   refuses writes (403) when none is configured.
//! - `POST /api/v1/events`: a custom event of a customer ([`events`]), behind the token too.
//! - `GET /api/v1/openapi.json`: the API's OpenAPI 3 document (open).
//!
//! With an API token (`CONTACTPLAN_API_TOKEN` or the credential `api-token`), `/metrics` and
//! `/status` need `Authorization: Bearer <token>` (compared in constant time); the probes stay
//! open.
//!
//! A service: [`serve`] accepts until its stop token is cancelled, then stops accepting and
//! lets each open connection finish its request (hyper's graceful shutdown); connection tasks
//! run on the caller's task tracker, so shutdown awaits them.
//!
//! **Architecture Invariant:** the ops router changes nothing but orders and custom events: it
//! never changes the outbox or plans, and it writes only through `Store::ingest_orders` and
//! `Store::record_event`, one request in one transaction, behind the API token.

pub mod api;
pub mod events;

use crate::clock::SharedClock;
use crate::config::HttpLimits;
use crate::health::{self, Health};
use crate::metrics::{Gauges, Metrics};
use crate::store::{Store, secs};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing;
use secrecy::{ExposeSecret, SecretString};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What the ops router reads, and the store it writes orders to.
#[derive(Clone)]
pub struct Ops {
    /// The outbox, for the backlog (`/metrics`, `/status`) and the ping (`/readyz`).
    pub store: Store,
    /// "Now", for ages and readiness.
    pub clock: SharedClock,
    /// Readiness, the last tick, plan problems and the last SMTP error.
    pub health: Arc<Health>,
    /// The counters and histograms `/metrics` writes.
    pub metrics: Arc<Metrics>,
    /// Bearer token for `/metrics` and `/status`; `None`: open.
    pub api_token: Option<SecretString>,
    /// The daemon's lease owner id, for `/status`.
    pub instance: Arc<str>,
    /// The plans in force: which customers `POST /api/v1/orders` names that no plan does.
    pub served: Arc<crate::workspace::Served>,
    /// Called after `POST /api/v1/orders` changed a customer's totals or `POST /api/v1/events`
    /// recorded an event: wakes the scheduler, so
    /// milestones the orders reach go out now rather than at its next tick (at most a minute).
    pub orders_stored: Arc<dyn Fn() + Send + Sync>,
}

/// The ops router: probes, metrics, status and the orders API.
pub fn ops_router(ops: Ops) -> Router {
    let guarded = Router::new()
        .route("/metrics", routing::get(metrics))
        .route("/status", routing::get(status))
        .route_layer(middleware::from_fn_with_state(ops.clone(), require_token));
    Router::new()
        .route("/healthz", routing::get(healthz))
        .route("/readyz", routing::get(readyz))
        .route("/api/v1/openapi.json", routing::get(api::openapi))
        // Its body limit is its own (`api::MAX_BODY_BYTES`, applied in the handler).
        .route("/api/v1/orders", routing::post(api::post_orders))
        .route("/api/v1/events", routing::post(events::post_event))
        .merge(guarded)
        .fallback(not_found)
        .with_state(ops)
}

/// Binds `addr` (port 0 picks one).
///
/// # Errors
/// The address is in use or not allowed.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen on http_bind {addr}: {e}"))
}

/// How long a connection may take, at shutdown, to finish the response it is writing.
const CLOSE_GRACE: Duration = Duration::from_millis(100);

/// The open connections, oldest first, each with the token that closes it.
#[derive(Default)]
struct Connections {
    next_id: u64,
    open: std::collections::VecDeque<(u64, CancellationToken)>,
}

/// Serves `router` on `listener` until `stop` is cancelled, within `limits`; connections run
/// on `tracker`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: HttpLimits,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, max_connections = limits.max_connections, "HTTP listener: /healthz /readyz /metrics /status /api/v1/orders");
    }
    let router = router.layer(axum::extract::DefaultBodyLimit::max(limits.max_body_bytes));
    let service = hyper_util::service::TowerToHyperService::new(router);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let connections = Arc::new(std::sync::Mutex::new(Connections::default()));
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, for one: wait a little instead of spinning.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                        _ = stop.cancelled() => break,
                    }
                }
            },
            _ = stop.cancelled() => break,
        };
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                // At the cap: drop the oldest connection to make room for this one.
                let oldest = connections.lock().unwrap_or_else(|p| p.into_inner()).open.pop_front();
                if let Some((_, evict)) = oldest {
                    evict.cancel();
                }
                match tokio::time::timeout(Duration::from_secs(2), slots.clone().acquire_owned()).await {
                    Ok(Ok(slot)) => slot,
                    _ => continue, // dropped: nothing freed in time
                }
            }
        };
        let evict = CancellationToken::new();
        let id = {
            let mut c = connections.lock().unwrap_or_else(|p| p.into_inner());
            c.next_id += 1;
            let id = c.next_id;
            c.open.push_back((id, evict.clone()));
            id
        };
        let (service, connections, stop) = (service.clone(), connections.clone(), stop.clone());
        tracker.spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(limits.max_header_bytes.max(8192))
                .serve_connection(io, service);
            let mut conn = std::pin::pin!(conn);
            let ended = tokio::select! {
                ended = conn.as_mut() => ended,
                _ = stop.cancelled() => {
                    // Shutdown: an idle connection closes at once, a response being written
                    // gets a moment, a trickling client is dropped.
                    conn.as_mut().graceful_shutdown();
                    tokio::time::timeout(CLOSE_GRACE, conn).await.unwrap_or(Ok(()))
                }
                // Evicted at the cap (the oldest connection): dropped at once, so that a crowd
                // of stalled clients is cleared in moments and a probe gets through.
                _ = evict.cancelled() => Ok(()),
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
            connections.lock().unwrap_or_else(|p| p.into_inner()).open.retain(|(i, _)| *i != id);
            drop(slot);
        });
    }
    // Dropping the listener here closes the socket: nothing is accepted after stop.
}

const TEXT: &str = "text/plain; charset=utf-8";

async fn healthz() -> Response {
    ([(header::CONTENT_TYPE, TEXT)], "ok\n").into_response()
}

async fn readyz(State(ops): State<Ops>) -> Response {
    let reasons = health::not_ready(&ops.health, &ops.store).await;
    if reasons.is_empty() {
        ([(header::CONTENT_TYPE, TEXT)], "ready\n").into_response()
    } else {
        let body = format!("not ready: {}\n", reasons.join("; "));
        (StatusCode::SERVICE_UNAVAILABLE, [(header::CONTENT_TYPE, TEXT)], body).into_response()
    }
}

async fn metrics(State(ops): State<Ops>) -> Response {
    let text = ops.metrics.encode(ops.health.is_ready(), &gauges(&ops).await);
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
}

async fn status(State(ops): State<Ops>) -> Response {
    let status = health::of_daemon(&ops.health, &ops.store, secs(ops.clock.now()), &ops.instance).await;
    match serde_json::to_vec_pretty(&status) {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, TEXT)], format!("{e}\n")).into_response(),
    }
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, TEXT)],
        "not found: try /healthz /readyz /metrics /status /api/v1/orders /api/v1/openapi.json\n",
    )
        .into_response()
}

/// Database gauges for one scrape; `database_up = false` when it does not answer in time.
async fn gauges(ops: &Ops) -> Gauges {
    let now = secs(ops.clock.now());
    match tokio::time::timeout(health::DB_TIMEOUT, ops.store.backlog(now)).await {
        Ok(Ok(b)) => Gauges {
            database_up: true,
            depth: b.depth,
            oldest_due_age_secs: b.oldest_due.map_or(0, |d| (now - d).max(0)),
        },
        _ => Gauges::default(),
    }
}

/// Lets the request through when no token is configured or it presents the token.
async fn require_token(State(ops): State<Ops>, request: Request, next: Next) -> Response {
    if authorized(ops.api_token.as_ref(), request.headers()) {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer"), (header::CONTENT_TYPE, TEXT)],
        "bearer token required\n",
    )
        .into_response()
}

/// No token configured, or `Authorization: Bearer <token>` presents it (constant time).
fn authorized(token: Option<&SecretString>, headers: &axum::http::HeaderMap) -> bool {
    let Some(token) = token else { return true };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    presented.as_bytes().ct_eq(token.expose_secret().as_bytes()).into()
}

/// A GET to the daemon's listener (for `contactplan status`); returns status code and body.
///
/// # Errors
/// The connection or the HTTP exchange failed.
pub async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> anyhow::Result<(u16, String)> {
    request(addr, "GET", path, token, None).await.map(|(status, _, body)| (status, body))
}

/// One request to the daemon's listener (tests, benchmarks): method, path, an optional bearer
/// token and JSON body; returns the status code, the headers and the body.
///
/// # Errors
/// The connection or the HTTP exchange failed.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    json: Option<Vec<u8>>,
) -> anyhow::Result<(u16, axum::http::HeaderMap, String)> {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = hyper::Request::builder().method(method).uri(path).header(header::HOST, addr.to_string());
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if json.is_some() {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    let body = http_body_util::Full::new(bytes::Bytes::from(json.unwrap_or_default()));
    let resp = sender.send_request(req.body(body)?).await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, headers, String::from_utf8_lossy(&body).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        let token = SecretString::from("abc");
        let headers = |v: &str| {
            let mut h = axum::http::HeaderMap::new();
            h.insert(header::AUTHORIZATION, v.parse().unwrap());
            h
        };
        assert!(authorized(Some(&token), &headers("Bearer abc")));
        assert!(!authorized(Some(&token), &headers("Bearer abd")));
        assert!(!authorized(Some(&token), &headers("Bearer abcd")));
        assert!(!authorized(Some(&token), &headers("abc")));
        assert!(!authorized(Some(&token), &axum::http::HeaderMap::new()));
        assert!(authorized(None, &axum::http::HeaderMap::new()));
    }
}
