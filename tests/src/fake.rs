//! Tiny upstreams written for the tests: one that records every request byte for byte and answers
//! JSON-RPC (or 401 when a required credential header is missing), one that accepts connections and never
//! answers.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Request method.
    pub method: String,
    /// Request target (path and query).
    pub target: String,
    /// Headers in arrival order, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body after de-chunking.
    pub body: Vec<u8>,
}

impl Recorded {
    /// First value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }
}

/// An HTTP/1.1 upstream on 127.0.0.1:0 that records each request and answers
/// `{"jsonrpc":"2.0","id":<the request's id>,"result":{"receivedBytes":N}}` (202 for a notification).
pub struct RecordingUpstream {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Recorded>>>,
    gate: Option<Arc<Semaphore>>,
    task: JoinHandle<()>,
}

/// How a [`RecordingUpstream`] treats its connections.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordingOptions {
    /// Answer this many requests on a keep-alive connection, the last with `Connection: close`, then
    /// close it (hyper's and nginx's `keepalive_requests`); `None` keeps connections open.
    pub close_after: Option<usize>,
    /// Record each `tools/call` at once but answer it only when [`RecordingUpstream::release`] allows
    /// (other requests, such as the control plane's discovery, are answered at once).
    pub gated: bool,
    /// `(name, value)` every request must carry; others are recorded and answered 401 with
    /// `WWW-Authenticate: Bearer error="invalid_token"`, as an upstream resource server does.
    pub required_header: Option<(&'static str, &'static str)>,
}

impl RecordingUpstream {
    /// Starts listening.
    pub async fn start() -> Result<Self> {
        Self::start_with(RecordingOptions::default()).await
    }

    /// Starts listening with `options`.
    pub async fn start_with(options: RecordingOptions) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        let gate = options.gated.then(|| Arc::new(Semaphore::new(0)));
        let conn_gate = gate.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (sink, gate) = (sink.clone(), conn_gate.clone());
                tokio::spawn(async move {
                    let _ = serve_connection(stream, sink, options, gate).await;
                });
            }
        });
        Ok(Self { addr, received, gate, task })
    }

    /// Lets a gated upstream answer `n` more requests.
    pub fn release(&self, n: usize) {
        if let Some(gate) = &self.gate {
            gate.add_permits(n);
        }
    }

    /// `http://127.0.0.1:<port>/mcp`.
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Recorded> {
        self.received.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for RecordingUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_connection(
    stream: TcpStream,
    sink: Arc<Mutex<Vec<Recorded>>>,
    options: RecordingOptions,
    gate: Option<Arc<Semaphore>>,
) -> Result<()> {
    let close_after = options.close_after;
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut answered = 0;
    loop {
        let Some(request) = read_request(&mut reader).await? else { return Ok(()) };
        answered += 1;
        let last = close_after.is_some_and(|n| answered >= n);
        let close = last || request.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let connection = if last { "connection: close\r\n" } else { "" };
        let message = serde_json::from_slice::<Value>(&request.body).ok();
        let id = message.as_ref().and_then(|v| v.get("id").cloned());
        let call = message.is_some_and(|v| v["method"] == "tools/call");
        let len = request.body.len();
        let authorized =
            options.required_header.is_none_or(|(name, value)| request.header(name) == Some(value));
        sink.lock().unwrap_or_else(|p| p.into_inner()).push(request);
        if !authorized {
            let body = r#"{"error":"invalid_token"}"#;
            let response = format!(
                "HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Bearer error=\"invalid_token\"\r\ncontent-type: application/json\r\n{connection}content-length: {}\r\n\r\n{body}",
                body.len()
            );
            write.write_all(response.as_bytes()).await?;
            write.flush().await?;
            if close {
                return Ok(());
            }
            continue;
        }
        if let Some(gate) = gate.as_ref().filter(|_| call) {
            gate.acquire().await?.forget();
        }
        let response = match id {
            Some(id) => {
                let body = json!({"jsonrpc": "2.0", "id": id, "result": {"receivedBytes": len}}).to_string();
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{connection}content-length: {}\r\n\r\n{body}",
                    body.len()
                )
            }
            None => format!("HTTP/1.1 202 Accepted\r\n{connection}content-length: 0\r\n\r\n"),
        };
        write.write_all(response.as_bytes()).await?;
        write.flush().await?;
        if close {
            return Ok(());
        }
    }
}

/// Reads one HTTP/1.1 request; `None` on a clean end of stream before a request starts.
async fn read_request<R: AsyncBufReadExt + Unpin>(reader: &mut R) -> Result<Option<Recorded>> {
    let mut line = String::new();
    if reader.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        bail!("bad request line {line:?}")
    };
    let (method, target) = (method.to_owned(), target.to_owned());
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).await? == 0 {
            bail!("connection closed inside the headers");
        }
        let header = header.trim_end_matches(['\r', '\n']);
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').context("header without a colon")?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut request = Recorded { method, target, headers, body: Vec::new() };
    if request.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        loop {
            let mut size_line = String::new();
            reader.read_line(&mut size_line).await?;
            let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or("").trim(), 16)
                .with_context(|| format!("bad chunk size {size_line:?}"))?;
            if size == 0 {
                // Trailers, then the empty line.
                loop {
                    let mut trailer = String::new();
                    if reader.read_line(&mut trailer).await? == 0 || trailer.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            let start = request.body.len();
            request.body.resize(start + size, 0);
            reader.read_exact(&mut request.body[start..]).await?;
            let mut crlf = [0u8; 2];
            reader.read_exact(&mut crlf).await?;
        }
    } else if let Some(len) = request.header("content-length") {
        let len: usize = len.parse().context("bad content-length")?;
        request.body.resize(len, 0);
        reader.read_exact(&mut request.body).await?;
    }
    Ok(Some(request))
}

/// An upstream that accepts connections, reads whatever arrives and never answers.
pub struct SilentUpstream {
    addr: SocketAddr,
    accepted: Arc<Mutex<usize>>,
    task: JoinHandle<()>,
}

impl SilentUpstream {
    /// Starts listening on 127.0.0.1:0.
    pub async fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let accepted = Arc::new(Mutex::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut stream, _)) = listener.accept().await {
                *count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
                held.push(tokio::spawn(async move {
                    let mut sink = [0u8; 16 * 1024];
                    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                    // Keep the socket open after the peer half-closes: silence, not a reset.
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }));
            }
        });
        Ok(Self { addr, accepted, task })
    }

    /// `http://127.0.0.1:<port>/mcp`.
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        *self.accepted.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for SilentUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
