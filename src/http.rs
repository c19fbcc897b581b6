//! The HTTP listener (hyper, HTTP/1.1, GET only), on `http_bind` (default 127.0.0.1:9754):
//! - `/healthz`: 200 while the process serves requests.
//! - `/readyz`: 200 when plans are loaded, the database answers and the last tick finished
//!   successfully within the last 3 minutes; else 503 with the reasons.
//! - `/metrics`: Prometheus text format (counters from the monitor, gauges from the database).
//! - `/status`: the `Status` as JSON (what `contactplan status` shows).
//!
//! With an API token (`CONTACTPLAN_API_TOKEN` or the credential `api-token`), `/metrics` and
//! `/status` need `Authorization: Bearer <token>`; the probes stay open.
//!
//! **Architecture Invariant:** the listener only reads: it never changes the outbox or plans.

use crate::dispatch::Daemon;
use crate::monitor::Gauges;
use crate::store::secs;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, header};
use std::net::SocketAddr;
use std::sync::Arc;

/// Binds `addr` and serves in a background task; returns the bound address (port 0 picks one).
pub async fn serve(daemon: Arc<Daemon>, addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on http_bind {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    tracing::info!(addr = %bound, "HTTP listener: /healthz /readyz /metrics /status");
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let daemon = daemon.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let daemon = daemon.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(&daemon, req).await) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await {
                    tracing::debug!(error = %e, "HTTP connection ended with an error");
                }
            });
        }
    });
    Ok(bound)
}

fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

const TEXT: &str = "text/plain; charset=utf-8";

async fn handle<B>(daemon: &Daemon, req: Request<B>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return respond(StatusCode::METHOD_NOT_ALLOWED, TEXT, "only GET\n");
    }
    let path = req.uri().path();
    if matches!(path, "/metrics" | "/status") && !authorized(daemon, &req) {
        let mut r = respond(StatusCode::UNAUTHORIZED, TEXT, "bearer token required\n");
        r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        return r;
    }
    match path {
        "/healthz" => respond(StatusCode::OK, TEXT, "ok\n"),
        "/readyz" => {
            let reasons = crate::status::not_ready(daemon).await;
            if reasons.is_empty() {
                respond(StatusCode::OK, TEXT, "ready\n")
            } else {
                respond(StatusCode::SERVICE_UNAVAILABLE, TEXT, format!("not ready: {}\n", reasons.join("; ")))
            }
        }
        "/metrics" => {
            respond(StatusCode::OK, crate::metrics::CONTENT_TYPE, daemon.monitor.render(&gauges(daemon).await))
        }
        "/status" => match serde_json::to_vec_pretty(&crate::status::of_daemon(daemon).await) {
            Ok(json) => respond(StatusCode::OK, "application/json", json),
            Err(e) => respond(StatusCode::INTERNAL_SERVER_ERROR, TEXT, format!("{e}\n")),
        },
        _ => respond(StatusCode::NOT_FOUND, TEXT, "not found: try /healthz /readyz /metrics /status\n"),
    }
}

/// Database gauges for one scrape; `database_up = false` when it does not answer in time.
async fn gauges(daemon: &Daemon) -> Gauges {
    let now = secs(daemon.clock.now());
    match tokio::time::timeout(crate::status::DB_TIMEOUT, daemon.store.backlog(now)).await {
        Ok(Ok(b)) => Gauges {
            database_up: true,
            depth: b.depth,
            oldest_due_age_secs: b.oldest_due.map_or(0, |d| (now - d).max(0)),
        },
        _ => Gauges::default(),
    }
}

/// No token configured, or the request presents it (compared in constant time).
fn authorized<B>(daemon: &Daemon, req: &Request<B>) -> bool {
    let Some(token) = &daemon.config.api_token else { return true };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    constant_time_eq(presented.as_bytes(), token.0.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A GET to the daemon's listener (for `contactplan status`); returns status code and body.
pub async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> anyhow::Result<(u16, String)> {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = Request::builder().uri(path).header(header::HOST, addr.to_string());
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let resp = sender.send_request(req.body(http_body_util::Empty::<Bytes>::new())?).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn token_comparison() {
        assert!(super::constant_time_eq(b"abc", b"abc"));
        assert!(!super::constant_time_eq(b"abc", b"abd"));
        assert!(!super::constant_time_eq(b"abc", b"abcd"));
    }
}
