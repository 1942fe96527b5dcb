//! A minimal HTTP/1.1 client over a raw TCP stream, for probing test servers (`/readiness`,
//! `/metrics`, the fake apiserver's REST and watch endpoints) without an HTTP client crate.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

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

/// Sends one request (`Connection: close`) and reads the whole response.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<HttpResponse> {
    let exchange = async {
        let mut reader = send_request(addr, method, path, body).await?;
        let (status, headers) = read_head(&mut reader).await?;
        let chunked = is_chunked(&headers);
        let length = header_value(&headers, "content-length").and_then(|v| v.parse::<usize>().ok());
        let mut body = Vec::new();
        if chunked {
            while let Some(chunk) = read_chunk(&mut reader).await? {
                body.extend_from_slice(&chunk);
            }
        } else if let Some(length) = length {
            body.resize(length, 0);
            reader
                .read_exact(&mut body)
                .await
                .context("reading response body")?;
        } else {
            reader
                .read_to_end(&mut body)
                .await
                .context("reading response body")?;
        }
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

/// Opens a streaming GET (a watch) and hands back its body line by line.
pub async fn stream_lines(addr: SocketAddr, path: &str) -> anyhow::Result<LineStream> {
    let mut reader = send_request(addr, "GET", path, None).await?;
    let (status, headers) = tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut reader))
        .await
        .map_err(|_| {
            anyhow!("GET {path} on {addr}: no response head within {REQUEST_TIMEOUT:?}")
        })??;
    Ok(LineStream {
        status,
        chunked: is_chunked(&headers),
        headers,
        reader,
        pending: Vec::new(),
        finished: false,
    })
}

/// The body of a streaming response, split into lines.
pub struct LineStream {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    chunked: bool,
    reader: BufReader<TcpStream>,
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
            if self.chunked {
                match read_chunk(&mut self.reader).await? {
                    Some(chunk) => self.pending.extend_from_slice(&chunk),
                    None => self.finished = true,
                }
            } else {
                let mut buf = [0u8; 4096];
                let n = self.reader.read(&mut buf).await.context("reading stream")?;
                if n == 0 {
                    self.finished = true;
                }
                self.pending.extend_from_slice(&buf[..n]);
            }
        }
    }
}

async fn send_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<BufReader<TcpStream>> {
    let mut stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: application/json\r\n"
    );
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .await
        .context("writing request")?;
    stream
        .write_all(body.as_bytes())
        .await
        .context("writing request body")?;
    Ok(BufReader::new(stream))
}

async fn read_head(
    reader: &mut BufReader<TcpStream>,
) -> anyhow::Result<(u16, Vec<(String, String)>)> {
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .await
        .context("reading status line")?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {line:?}"))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader
            .read_line(&mut line)
            .await
            .context("reading header")?
            == 0
        {
            bail!("connection closed inside the response head");
        }
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        if let Some((k, v)) = trimmed.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    Ok((status, headers))
}

fn header_value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn is_chunked(headers: &[(String, String)]) -> bool {
    header_value(headers, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
}

/// One chunk of a chunked body; None after the terminating zero-length chunk.
/// A connection that closes before that chunk is an error: the stream was cut off.
async fn read_chunk(reader: &mut BufReader<TcpStream>) -> anyhow::Result<Option<Vec<u8>>> {
    let mut line = String::new();
    if reader
        .read_line(&mut line)
        .await
        .context("reading chunk size")?
        == 0
    {
        bail!("connection closed before the end of the chunked body");
    }
    let size_text = line.trim().split(';').next().unwrap_or_default();
    let size =
        usize::from_str_radix(size_text, 16).with_context(|| format!("bad chunk size {line:?}"))?;
    if size == 0 {
        // Trailers (none expected) end with an empty line.
        loop {
            line.clear();
            if reader.read_line(&mut line).await? == 0 || line.trim().is_empty() {
                return Ok(None);
            }
        }
    }
    let mut chunk = vec![0; size + 2];
    reader
        .read_exact(&mut chunk)
        .await
        .context("reading chunk (cut off?)")?;
    chunk.truncate(size);
    Ok(Some(chunk))
}
