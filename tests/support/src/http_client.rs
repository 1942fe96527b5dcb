//! The HTTP client of the tests: reqwest (no default features, plain HTTP on loopback) for
//! probing test servers (`/readiness`, `/metrics`, the fake apiserver's REST and watch
//! endpoints). Responses are read whole into [`HttpResponse`]; watches are read line by line
//! through [`LineStream`].

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, anyhow};
use serde_json::Value;

/// How long [`request`] waits for a complete response.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("response body is not JSON: {}", self.text()))
    }
}

/// One client for every test in the process: no proxy from the environment, no pooled
/// connections (every request is a fresh connection, as a probe is).
fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .build()
            .expect("an HTTP client without TLS always builds")
    })
}

async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<reqwest::Response> {
    let method = reqwest::Method::from_bytes(method.as_bytes())
        .with_context(|| format!("bad HTTP method {method:?}"))?;
    let url = format!("http://{addr}{path}");
    let mut request = client()
        .request(method.clone(), &url)
        .header("accept", "application/json");
    if body.is_some() || matches!(method.as_str(), "POST" | "PUT" | "PATCH") {
        request = request
            .header("content-type", "application/json")
            .body(body.map(Value::to_string).unwrap_or_default());
    }
    request
        .send()
        .await
        .with_context(|| format!("{method} {url}"))
}

fn headers_of(response: &reqwest::Response) -> Vec<(String, String)> {
    response
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// Sends one request and reads the whole response.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<HttpResponse> {
    let exchange = async {
        let response = send(addr, method, path, body).await?;
        let status = response.status().as_u16();
        let headers = headers_of(&response);
        let body = response
            .bytes()
            .await
            .context("reading response body")?
            .to_vec();
        anyhow::Ok(HttpResponse {
            status,
            headers,
            body,
        })
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| {
            anyhow!("{method} {path} on {addr}: no complete response within {REQUEST_TIMEOUT:?}")
        })?
}

pub async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<HttpResponse> {
    request(addr, "GET", path, None).await
}

/// The value of the unlabelled Prometheus sample `name` on `addr`'s `/metrics`.
pub async fn metric(addr: SocketAddr, name: &str) -> anyhow::Result<f64> {
    let text = get(addr, "/metrics").await?.text();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .with_context(|| format!("metric {name} missing from {addr}/metrics"))
}

/// Opens a streaming GET (a watch) and hands back its body line by line.
pub async fn stream_lines(addr: SocketAddr, path: &str) -> anyhow::Result<LineStream> {
    let response = tokio::time::timeout(REQUEST_TIMEOUT, send(addr, "GET", path, None))
        .await
        .map_err(|_| {
            anyhow!("GET {path} on {addr}: no response head within {REQUEST_TIMEOUT:?}")
        })??;
    Ok(LineStream {
        status: response.status().as_u16(),
        headers: headers_of(&response),
        response,
        pending: Vec::new(),
        finished: false,
    })
}

/// The body of a streaming response, split into lines.
pub struct LineStream {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    response: reqwest::Response,
    pending: Vec<u8>,
    finished: bool,
}

impl std::fmt::Debug for LineStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineStream")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl LineStream {
    /// The next line; `Ok(None)` when the body ended cleanly, an error if the connection broke
    /// off mid-body or nothing arrived within `timeout`.
    pub async fn next_line(&mut self, timeout: Duration) -> anyhow::Result<Option<String>> {
        tokio::time::timeout(timeout, self.next_line_inner())
            .await
            .map_err(|_| anyhow!("no line within {timeout:?}"))?
    }

    /// The next line parsed as JSON (a watch event).
    pub async fn next_json(&mut self, timeout: Duration) -> anyhow::Result<Option<Value>> {
        match self.next_line(timeout).await? {
            None => Ok(None),
            Some(line) => serde_json::from_str(&line)
                .map(Some)
                .with_context(|| format!("not JSON: {line}")),
        }
    }

    async fn next_line_inner(&mut self) -> anyhow::Result<Option<String>> {
        loop {
            if let Some(pos) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=pos).collect();
                let text = String::from_utf8_lossy(&line)
                    .trim_end_matches(['\r', '\n'])
                    .to_owned();
                return Ok(Some(text));
            }
            if self.finished {
                if self.pending.is_empty() {
                    return Ok(None);
                }
                let rest = std::mem::take(&mut self.pending);
                return Ok(Some(String::from_utf8_lossy(&rest).into_owned()));
            }
            // A body cut off before its end (a chunked body without its last chunk) is an error.
            match self
                .response
                .chunk()
                .await
                .context("reading stream (cut off?)")?
            {
                Some(chunk) => self.pending.extend_from_slice(&chunk),
                None => self.finished = true,
            }
        }
    }
}
