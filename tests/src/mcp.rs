//! A raw MCP-over-HTTP client for tests that need to see the wire: both response media types, SSE events
//! with their arrival times, GET streams, DELETE, legacy sessions and 2026-07-28 request metadata.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::sse::{SseEvent, SseParser};

/// Last legacy (handshake) revision.
pub const LEGACY_VERSION: &str = "2025-11-25";
/// The stateless revision.
pub const MODERN_VERSION: &str = "2026-07-28";
/// Default per-request timeout of the raw client (a whole POST response, SSE included).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A response to a POST, read to its end.
#[derive(Debug, Clone)]
pub struct McpResponse {
    /// HTTP status.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// Raw body (empty for an SSE response: see `events`).
    pub body: Bytes,
    /// SSE events in arrival order, when the response was `text/event-stream`.
    pub events: Vec<SseEvent>,
    /// SSE comment lines seen.
    pub comments: usize,
    /// When the request was sent.
    pub sent_at: Instant,
    /// When the response headers arrived.
    pub headers_at: Instant,
}

impl McpResponse {
    /// `Content-Type` without parameters, lowercase.
    pub fn content_type(&self) -> String {
        content_type(&self.headers)
    }

    /// Whether the body was an SSE stream.
    pub fn is_sse(&self) -> bool {
        self.content_type() == "text/event-stream"
    }

    /// The body as JSON (for `application/json` responses and JSON error bodies).
    pub fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!("status {}, body is not JSON: {:?}", self.status, String::from_utf8_lossy(&self.body))
        })
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Every JSON-RPC message of the response: the JSON body (object or array) or each SSE `data`.
    pub fn messages(&self) -> Vec<Value> {
        if self.is_sse() {
            return self.events.iter().filter_map(SseEvent::json).collect();
        }
        match serde_json::from_slice::<Value>(&self.body) {
            Ok(Value::Array(items)) => items,
            Ok(value) => vec![value],
            Err(_) => Vec::new(),
        }
    }

    /// The JSON-RPC response (result or error) with this id.
    pub fn response_for(&self, id: &Value) -> Option<Value> {
        self.messages()
            .into_iter()
            .find(|m| m.get("id") == Some(id) && (m.get("result").is_some() || m.get("error").is_some()))
    }

    /// SSE events carrying a JSON-RPC notification with this method, with their arrival times.
    pub fn notifications(&self, method: &str) -> Vec<(Instant, Value)> {
        self.events
            .iter()
            .filter_map(|e| e.json().map(|v| (e.at, v)))
            .filter(|(_, v)| v.get("method").and_then(Value::as_str) == Some(method))
            .collect()
    }

    /// Response header value as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
    }
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Outcome of the legacy handshake.
#[derive(Debug, Clone)]
pub struct Initialized {
    /// `Mcp-Session-Id` the server assigned (none for a stateless server).
    pub session_id: Option<String>,
    /// Negotiated protocol version.
    pub protocol_version: String,
    /// The whole `initialize` result (capabilities, serverInfo, instructions).
    pub result: Value,
}

/// What a GET stream did within a wait.
#[derive(Debug)]
pub enum StreamEvent {
    /// An event arrived.
    Event(SseEvent),
    /// The server ended the stream.
    Ended,
    /// Nothing happened and the stream is still open.
    StillOpen,
}

/// An open `GET` SSE stream; events are read by a background task and stamped on arrival.
pub struct SseStream {
    /// HTTP status of the GET.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// Body of a non-SSE answer (e.g. a 405 or 409 error).
    pub body: Bytes,
    rx: mpsc::UnboundedReceiver<SseEvent>,
    reader: Option<tokio::task::JoinHandle<()>>,
}

impl SseStream {
    /// `Content-Type` without parameters.
    pub fn content_type(&self) -> String {
        content_type(&self.headers)
    }

    /// Waits up to `timeout` for the next event.
    pub async fn next(&mut self, timeout: Duration) -> StreamEvent {
        match tokio::time::timeout(timeout, self.rx.recv()).await {
            Ok(Some(event)) => StreamEvent::Event(event),
            Ok(None) => StreamEvent::Ended,
            Err(_) => StreamEvent::StillOpen,
        }
    }

    /// Closes the stream from the client side.
    pub fn close(&mut self) {
        if let Some(reader) = self.reader.take() {
            reader.abort();
        }
    }
}

impl Drop for SseStream {
    fn drop(&mut self) {
        self.close();
    }
}

/// `params._meta` entries a 2026-07-28 request must carry.
pub fn modern_meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "mcpgw-e2e", "version": "0.0.0"},
    })
}

/// A 2026-07-28 request body: `params._meta` merged into `params`.
pub fn modern_body(id: Value, method: &str, params: Value) -> Value {
    let mut params = match params {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    let meta = params.entry("_meta").or_insert_with(|| json!({}));
    if let (Some(meta), Value::Object(required)) = (meta.as_object_mut(), modern_meta()) {
        for (k, v) in required {
            meta.entry(k).or_insert(v);
        }
    }
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

/// The routing headers of a 2026-07-28 request (`MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`).
pub fn modern_headers(method: &str, params: &Value) -> Vec<(String, String)> {
    let mut headers = vec![
        ("MCP-Protocol-Version".to_owned(), MODERN_VERSION.to_owned()),
        ("Mcp-Method".to_owned(), method.to_owned()),
    ];
    let name = match method {
        "tools/call" | "prompts/get" => params.get("name"),
        "resources/read" => params.get("uri"),
        _ => None,
    };
    if let Some(name) = name.and_then(Value::as_str) {
        headers.push(("Mcp-Name".to_owned(), name.to_owned()));
    }
    headers
}

/// Raw MCP client for one endpoint URL. Cheap to clone; clones share the request-id counter and the
/// session state they had when cloned.
#[derive(Clone)]
pub struct McpHttp {
    http: reqwest::Client,
    url: String,
    next_id: Arc<AtomicI64>,
    /// `Mcp-Session-Id` sent on every request once set (legacy sessions).
    pub session_id: Option<String>,
    /// `MCP-Protocol-Version` sent on every request once set (legacy sessions).
    pub protocol_version: Option<String>,
    /// Headers added to every request.
    pub extra_headers: Vec<(String, String)>,
}

impl McpHttp {
    /// A client for `url` with no session.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            http: crate::http_client(),
            url: url.into(),
            next_id: Arc::new(AtomicI64::new(1)),
            session_id: None,
            protocol_version: None,
            extra_headers: Vec::new(),
        }
    }

    /// The endpoint URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A fresh request id.
    pub fn next_id(&self) -> Value {
        json!(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    fn request(&self, method: reqwest::Method) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, &self.url);
        if let Some(session) = &self.session_id {
            req = req.header("Mcp-Session-Id", session);
        }
        if let Some(version) = &self.protocol_version {
            req = req.header("MCP-Protocol-Version", version);
        }
        for (k, v) in &self.extra_headers {
            req = req.header(k, v);
        }
        req
    }

    /// Legacy handshake: `initialize` (2025-11-25) then `notifications/initialized`; keeps the session id
    /// and negotiated version for later requests and returns them with the `initialize` result.
    pub async fn initialize(&mut self) -> Result<Initialized> {
        self.session_id = None;
        self.protocol_version = None;
        let id = self.next_id();
        let resp = self
            .post(&json!({
                "jsonrpc": "2.0", "id": id, "method": "initialize",
                "params": {
                    "protocolVersion": LEGACY_VERSION,
                    "capabilities": {},
                    "clientInfo": {"name": "mcpgw-e2e", "version": "0.0.0"},
                },
            }))
            .await?;
        if resp.status != StatusCode::OK {
            bail!("initialize: status {}: {}", resp.status, resp.text());
        }
        let message =
            resp.response_for(&id).with_context(|| format!("initialize: no response in {resp:?}"))?;
        let result =
            message.get("result").cloned().with_context(|| format!("initialize failed: {message}"))?;
        self.session_id = resp.header("mcp-session-id");
        self.protocol_version = result.get("protocolVersion").and_then(Value::as_str).map(str::to_owned);
        let ack = self.post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await?;
        if !ack.status.is_success() {
            bail!("notifications/initialized: status {}: {}", ack.status, ack.text());
        }
        let protocol_version =
            self.protocol_version.clone().context("initialize result has no protocolVersion")?;
        Ok(Initialized { session_id: self.session_id.clone(), protocol_version, result })
    }

    /// POSTs one JSON-RPC message and reads the whole response (JSON or SSE).
    pub async fn post(&self, message: &Value) -> Result<McpResponse> {
        self.post_with(message, &[]).await
    }

    /// POSTs one JSON-RPC message with additional headers.
    pub async fn post_with(&self, message: &Value, headers: &[(String, String)]) -> Result<McpResponse> {
        self.post_bytes(serde_json::to_vec(message)?, headers).await
    }

    /// POSTs exactly these bytes (for byte-identity and size tests) with the MCP `Accept` header.
    pub async fn post_bytes(&self, body: Vec<u8>, headers: &[(String, String)]) -> Result<McpResponse> {
        let mut req = self
            .request(reqwest::Method::POST)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json, text/event-stream")
            .body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let sent_at = Instant::now();
        tokio::time::timeout(REQUEST_TIMEOUT, read_response(req, sent_at))
            .await
            .map_err(|_| anyhow!("POST {}: no complete response within {REQUEST_TIMEOUT:?}", self.url))?
    }

    /// A request with a fresh id; returns the JSON-RPC response message (result or error).
    pub async fn call(&self, method: &str, params: Value) -> Result<Value> {
        let id = self.next_id();
        let resp =
            self.post(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})).await?;
        resp.response_for(&id).with_context(|| {
            format!("{method}: no JSON-RPC response: status {} body {}", resp.status, resp.text())
        })
    }

    /// `tools/call` in the current session; returns the `result` or fails with the JSON-RPC error.
    pub async fn call_tool(&self, name: &str, arguments: Value) -> Result<Value> {
        let message = self.call("tools/call", json!({"name": name, "arguments": arguments})).await?;
        message.get("result").cloned().with_context(|| format!("tools/call {name} failed: {message}"))
    }

    /// Every item of a paginated list (`tools/list` → `tools`, ...), following `nextCursor`; in the
    /// current session, or as 2026-07-28 requests when `modern`. Returns the items and the page count.
    pub async fn list_all(&self, method: &str, key: &str, modern: bool) -> Result<(Vec<Value>, usize)> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        for page in 1..=1000 {
            let params = cursor.as_ref().map_or_else(|| json!({}), |c| json!({"cursor": c}));
            let message = if modern {
                let (id, resp) = self.modern(method, params).await?;
                resp.response_for(&id)
                    .with_context(|| format!("{method}: status {} body {}", resp.status, resp.text()))?
            } else {
                self.call(method, params).await?
            };
            let result = message.get("result").with_context(|| format!("{method} failed: {message}"))?;
            items.extend(result.get(key).and_then(Value::as_array).cloned().unwrap_or_default());
            match result.get("nextCursor").and_then(Value::as_str) {
                Some(next) if !next.is_empty() => cursor = Some(next.to_owned()),
                _ => return Ok((items, page)),
            }
        }
        bail!("{method}: more than 1000 pages")
    }

    /// A 2026-07-28 request (routing headers + `_meta`, no session); returns the whole response.
    pub async fn modern(&self, method: &str, params: Value) -> Result<(Value, McpResponse)> {
        let id = self.next_id();
        let headers = modern_headers(method, &params);
        let resp = self.post_with(&modern_body(id.clone(), method, params), &headers).await?;
        Ok((id, resp))
    }

    /// Opens a `GET` stream (`Accept: text/event-stream`) on the current session.
    pub async fn open_get_stream(&self) -> Result<SseStream> {
        let resp = self
            .request(reqwest::Method::GET)
            .header("Accept", "text/event-stream")
            .send()
            .await
            .with_context(|| format!("GET {}", self.url))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        if content_type(&headers) != "text/event-stream" {
            let body = tokio::time::timeout(REQUEST_TIMEOUT, resp.bytes()).await??;
            let (_tx, rx) = mpsc::unbounded_channel();
            return Ok(SseStream { status, headers, body, rx, reader: None });
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            let mut resp = resp;
            let mut parser = SseParser::default();
            while let Ok(Some(chunk)) = resp.chunk().await {
                for event in parser.feed(&chunk, Instant::now()) {
                    if tx.send(event).is_err() {
                        return;
                    }
                }
            }
        });
        Ok(SseStream { status, headers, body: Bytes::new(), rx, reader: Some(reader) })
    }

    /// `DELETE` of the current session; returns the status.
    pub async fn delete_session(&self) -> Result<StatusCode> {
        let resp = self
            .request(reqwest::Method::DELETE)
            .send()
            .await
            .with_context(|| format!("DELETE {}", self.url))?;
        Ok(resp.status())
    }
}

async fn read_response(req: reqwest::RequestBuilder, sent_at: Instant) -> Result<McpResponse> {
    let mut resp = req.send().await.context("send")?;
    let headers_at = Instant::now();
    let status = resp.status();
    let headers = resp.headers().clone();
    let sse = content_type(&headers) == "text/event-stream";
    let mut parser = SseParser::default();
    let mut events = Vec::new();
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.context("read body")? {
        if sse {
            events.extend(parser.feed(&chunk, Instant::now()));
        } else {
            body.extend_from_slice(&chunk);
        }
    }
    Ok(McpResponse {
        status,
        headers,
        body: Bytes::from(body),
        events,
        comments: parser.comments,
        sent_at,
        headers_at,
    })
}

/// Header name/value pairs from `(&str, &str)` literals.
pub fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}
