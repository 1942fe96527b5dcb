//! The one HTTP server of every binary (health, readiness, metrics), bounded whatever clients
//! send: a header read timeout that is also the keep-alive idle timeout, a header size limit,
//! request bodies refused, a lifetime per connection (which also ends responses a client stops
//! reading), and a connection cap, global and per client. At the global cap the client holding
//! the most connections loses its oldest one, so one client cannot keep probes out. Handlers
//! can read the client's address with `ConnectInfo<SocketAddr>`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio_util::sync::CancellationToken;
use tower_service::Service;

use crate::conns::{ConnLimits, ConnStats, ConnectionTable};
use crate::prom;

/// What one HTTP server allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Open connections at most; at the cap the busiest client's oldest connection is closed.
    pub max_connections: usize,
    /// Open connections per client address; more are closed at once.
    pub max_per_client: usize,
    /// Time to send a whole request header, also the idle time allowed between requests.
    pub header_timeout: Duration,
    /// The most a connection may buffer for a request header (hyper's minimum is 8 KiB).
    pub max_header_bytes: usize,
    /// How long a connection may stay open at all.
    pub lifetime: Duration,
}

impl Default for HttpLimits {
    /// 128 connections of 16 KiB headers: about 4 MiB at most, and a probe always gets in.
    fn default() -> Self {
        HttpLimits {
            max_connections: 128,
            max_per_client: 16,
            header_timeout: Duration::from_secs(5),
            max_header_bytes: 16 * 1024,
            lifetime: Duration::from_secs(60),
        }
    }
}

/// Counters of what an HTTP server admitted and refused, for the binaries' metrics.
#[derive(Debug, Default)]
pub struct HttpStats {
    pub conns: Arc<ConnStats>,
    pub bodies_refused: AtomicU64,
    pub lifetime_expired: AtomicU64,
}

impl HttpStats {
    /// Appends the counters in the Prometheus text format, names starting with `prefix`.
    pub fn render(&self, prefix: &str, out: &mut String) {
        self.conns.render(prefix, "http", out);
        let counters = [
            (
                "bodies_refused",
                "HTTP requests refused because they carried a body.",
                &self.bodies_refused,
            ),
            (
                "lifetime_expired",
                "HTTP connections closed at the end of their lifetime.",
                &self.lifetime_expired,
            ),
        ];
        for (name, help, value) in counters {
            let name = format!("{prefix}_http_{name}_total");
            prom::counter(out, &name, help, value.load(Ordering::Relaxed));
        }
    }
}

/// Whether a request says it carries a body.
fn has_body<B>(request: &Request<B>) -> bool {
    let headers = request.headers();
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.to_str().map_or(true, |v| v.trim() != "0"))
}

/// Serves `router` on `listener` within `limits` until `shutdown`; `what` names the server in
/// the logs.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    limits: HttpLimits,
    stats: Arc<HttpStats>,
    shutdown: CancellationToken,
    what: &'static str,
) {
    let connections = ConnectionTable::new(
        ConnLimits {
            max_connections: limits.max_connections,
            max_per_client: limits.max_per_client,
        },
        stats.conns.clone(),
    );
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(8 * 1024))
        .keep_alive(true);
    let tracker = tokio_util::task::TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: wait a little instead of spinning.
                tracing::warn!(%error, "{what} server cannot accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(guard) = connections.admit(peer.ip()) else {
            drop(stream);
            continue;
        };
        let service = {
            let router = router.clone();
            let stats = stats.clone();
            hyper::service::service_fn(move |mut request: Request<Incoming>| {
                let mut router = router.clone();
                let stats = stats.clone();
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                async move {
                    if has_body(&request) {
                        stats.bodies_refused.fetch_add(1, Ordering::Relaxed);
                        return Ok(body_refused());
                    }
                    router.call(request).await
                }
            })
        };
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let stats = stats.clone();
        let lifetime = limits.lifetime;
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let mut draining = false;
            let deadline = tokio::time::sleep(lifetime);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    _ = connection.as_mut() => break,
                    _ = &mut deadline => {
                        stats.lifetime_expired.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    // Evicted at the cap: closed at once.
                    _ = guard.evicted.cancelled() => break,
                    // The server stops: the request in flight is answered, then it closes.
                    _ = shutdown.cancelled(), if !draining => {
                        draining = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(guard);
        });
    }
    tracker.close();
    // Requests in flight are answered; a client that holds a connection open (a stalled
    // header, an unread response) does not hold up the process's exit.
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::debug!(
            open = tracker.len(),
            "{what} server stops with connections open"
        );
    }
}

/// How long a stopping server waits for its connections to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

fn body_refused() -> Response<axum::body::Body> {
    let mut response = Response::new(axum::body::Body::from("request bodies are not accepted\n"));
    *response.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
    response.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_any_length_but_zero_or_any_transfer_encoding() {
        let request = |name: header::HeaderName, value: &str| {
            Request::builder()
                .header(name, value)
                .body(())
                .unwrap_or_else(|_| Request::new(()))
        };
        assert!(!has_body(&Request::new(())));
        assert!(!has_body(&request(header::CONTENT_LENGTH, "0")));
        assert!(has_body(&request(header::CONTENT_LENGTH, "12")));
        assert!(has_body(&request(header::TRANSFER_ENCODING, "chunked")));
    }

    /// Sends `request` on a fresh connection; the status code of the reply.
    async fn status_of(addr: std::net::SocketAddr, request: &[u8]) -> std::io::Result<u16> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(request).await?;
        let mut reply = Vec::new();
        let _ = stream.read_to_end(&mut reply).await;
        let text = String::from_utf8_lossy(&reply);
        Ok(text
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .unwrap_or(0))
    }

    #[tokio::test]
    async fn bodies_and_oversized_headers_are_refused_and_gets_answered() -> std::io::Result<()> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(HttpStats::default());
        let shutdown = CancellationToken::new();
        let router = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let server = tokio::spawn(serve_http(
            listener,
            router,
            HttpLimits::default(),
            stats.clone(),
            shutdown.clone(),
            "test",
        ));
        let get = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        assert_eq!(status_of(addr, get).await?, 200);
        let post = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(status_of(addr, post).await?, 413);
        let chunked = b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(status_of(addr, chunked).await?, 413);
        let mut big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 64 * 1024));
        big.extend(b"\r\n\r\n");
        assert_eq!(status_of(addr, &big).await?, 431);
        assert_eq!(stats.bodies_refused.load(Ordering::Relaxed), 2);
        shutdown.cancel();
        let _ = server.await;
        assert_eq!(stats.conns.open.load(Ordering::Relaxed), 0);
        Ok(())
    }
}
