//! Streamable HTTP, both eras: modern stateless requests carrying `_meta` and the routing headers, or a
//! legacy session opened with `initialize` and closed with DELETE. Responses may be JSON or SSE.

use reqwest::Method;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap};
use serde_json::{Value, json};
use url::Url;

use super::sse::Parser;
use super::{
    LEGACY_VERSION, MAX_BODY, MODERN_VERSION, McpClient, McpError, ServerHello, hello_from,
    initialize_params, response_for,
};

const SESSION_HEADER: &str = "mcp-session-id";

enum Era {
    Modern,
    Legacy { session: Option<String> },
}

/// A conversation over Streamable HTTP.
pub struct Streamable {
    client: McpClient,
    url: Url,
    era: Era,
    hello: ServerHello,
    next_id: u64,
}

impl Streamable {
    /// Tries the 2026-07-28 way: `server/discover`. A modern server without it (404 + -32601) is still
    /// modern, with unknown capabilities.
    pub async fn discover(client: &McpClient, url: Url) -> Result<Self, McpError> {
        let hello = ServerHello { protocol_version: MODERN_VERSION.to_owned(), ..Default::default() };
        let mut session = Self { client: client.clone(), url, era: Era::Modern, hello, next_id: 1 };
        match session.request("server/discover", json!({})).await {
            Ok(result) => {
                session.hello = hello_from(&result, MODERN_VERSION);
                session.hello.protocol_version = MODERN_VERSION.to_owned();
                Ok(session)
            }
            Err(McpError::Status { status: 404, code: Some(-32601), .. }) => Ok(session),
            Err(e) => Err(e),
        }
    }

    /// The legacy handshake: `initialize`, then `notifications/initialized`.
    pub async fn initialize(client: &McpClient, url: Url) -> Result<Self, McpError> {
        let era = Era::Legacy { session: None };
        let mut session =
            Self { client: client.clone(), url, era, hello: ServerHello::default(), next_id: 1 };
        let (result, headers) = session.send("initialize", initialize_params()).await?;
        let id = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        session.era = Era::Legacy { session: id };
        session.hello = hello_from(&result, LEGACY_VERSION);
        session.notify("notifications/initialized").await?;
        Ok(session)
    }

    pub fn hello(&self) -> &ServerHello {
        &self.hello
    }

    pub fn is_modern(&self) -> bool {
        matches!(self.era, Era::Modern)
    }

    /// Sends a request and returns its result.
    pub async fn request(&mut self, method: &str, params: Value) -> Result<Value, McpError> {
        self.send(method, params).await.map(|(result, _)| result)
    }

    fn build(&self, method: &str, body: &Value) -> reqwest::RequestBuilder {
        let mut req = self
            .client
            .request(Method::POST, self.url.clone())
            .header(ACCEPT, "application/json, text/event-stream")
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string());
        match &self.era {
            Era::Modern => {
                req = req.header("mcp-protocol-version", MODERN_VERSION).header("mcp-method", method);
            }
            Era::Legacy { session } => {
                if !self.hello.protocol_version.is_empty() {
                    req = req.header("mcp-protocol-version", &self.hello.protocol_version);
                }
                if let Some(id) = session {
                    req = req.header(SESSION_HEADER, id);
                }
            }
        }
        req
    }

    async fn send(&mut self, method: &str, params: Value) -> Result<(Value, HeaderMap), McpError> {
        let id = self.next_id;
        self.next_id += 1;
        let params = match (&self.era, params) {
            (Era::Modern, Value::Object(mut map)) => {
                map.insert("_meta".into(), modern_meta());
                Value::Object(map)
            }
            (_, params) => params,
        };
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let response = self.build(method, &body).send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        if !status.is_success() {
            return Err(status_error(response).await);
        }
        let result = read_response(response, id).await?;
        Ok((result, headers))
    }

    async fn notify(&self, method: &str) -> Result<(), McpError> {
        let body = json!({"jsonrpc": "2.0", "method": method});
        let response = self.build(method, &body).send().await?;
        if response.status().is_success() { Ok(()) } else { Err(status_error(response).await) }
    }

    /// Opens the server's notification stream: the GET stream of a legacy session, or a 2026-07-28
    /// `subscriptions/listen` for list changes. The caller reads the SSE body.
    pub async fn notifications(&mut self) -> Result<reqwest::Response, McpError> {
        let response = match &self.era {
            Era::Legacy { session } => {
                let mut req =
                    self.client.request(Method::GET, self.url.clone()).header(ACCEPT, "text/event-stream");
                if let Some(id) = session {
                    req = req.header(SESSION_HEADER, id);
                }
                if !self.hello.protocol_version.is_empty() {
                    req = req.header("mcp-protocol-version", &self.hello.protocol_version);
                }
                req.send().await?
            }
            Era::Modern => {
                let id = self.next_id;
                self.next_id += 1;
                let filter = json!({"toolsListChanged": true, "resourcesListChanged": true, "promptsListChanged": true});
                // The filter is `params.notifications` (what the Python SDK, the reference, validates).
                let body = json!({"jsonrpc": "2.0", "id": id, "method": "subscriptions/listen",
                    "params": {"notifications": filter, "_meta": modern_meta()}});
                self.build("subscriptions/listen", &body).send().await?
            }
        };
        if !response.status().is_success() {
            return Err(status_error(response).await);
        }
        Ok(response)
    }

    /// Ends a legacy session with DELETE (servers may answer 405; either way the session is over).
    pub async fn close(self) {
        if let Era::Legacy { session: Some(id) } = &self.era {
            let mut req = self.client.request(Method::DELETE, self.url.clone()).header(SESSION_HEADER, id);
            if !self.hello.protocol_version.is_empty() {
                req = req.header("mcp-protocol-version", &self.hello.protocol_version);
            }
            let _ = req.send().await;
        }
    }
}

fn modern_meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "mcpgw-control-plane", "version": env!("CARGO_PKG_VERSION")},
    })
}

/// Builds the error for a non-2xx answer, keeping a JSON-RPC error code when the body has one.
pub(crate) async fn status_error(response: reqwest::Response) -> McpError {
    let status = response.status().as_u16();
    let text = read_limited(response, 64 * 1024).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let parsed: Option<Value> = serde_json::from_str(&text).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let code = error.and_then(|e| e.get("code")).and_then(Value::as_i64);
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map_or_else(|| text.trim().chars().take(300).collect(), str::to_owned);
    McpError::Status { status, code, message }
}

async fn read_limited(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, McpError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        body.extend_from_slice(&chunk);
        if body.len() > limit {
            return Err(McpError::protocol(format!("the response is larger than {limit} bytes")));
        }
    }
    Ok(body)
}

/// Reads the response to request `id` from a JSON or SSE body.
async fn read_response(mut response: reqwest::Response, id: u64) -> Result<Value, McpError> {
    let content_type =
        response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    if content_type.starts_with("text/event-stream") {
        let mut parser = Parser::default();
        let mut read = 0usize;
        while let Some(chunk) = response.chunk().await? {
            read += chunk.len();
            if read > MAX_BODY {
                return Err(McpError::protocol("the SSE response is larger than the limit"));
            }
            let events = parser.feed(&chunk).map_err(|e| McpError::protocol(e.to_string()))?;
            for event in events {
                let Ok(message) = serde_json::from_str::<Value>(&event.data) else { continue };
                if let Some(outcome) = response_for(&message, id) {
                    return outcome;
                }
            }
        }
        return Err(McpError::protocol("the SSE stream ended without a response"));
    }
    let body = read_limited(response, MAX_BODY).await?;
    let message: Value = serde_json::from_slice(&body)
        .map_err(|e| McpError::protocol(format!("the response is not JSON ({content_type}): {e}")))?;
    let messages = match message {
        Value::Array(items) => items,
        other => vec![other],
    };
    messages
        .iter()
        .find_map(|m| response_for(m, id))
        .unwrap_or_else(|| Err(McpError::protocol(format!("no JSON-RPC response with id {id}"))))
}
