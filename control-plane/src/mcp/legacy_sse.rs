//! The deprecated HTTP+SSE transport (2024-11-05): a GET stream whose first event names the POST endpoint;
//! every POST is answered 202 and its JSON-RPC response arrives on the stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use reqwest::Method;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use url::Url;

use super::http::status_error;
use super::sse::Parser;
use super::{LEGACY_VERSION, McpClient, McpError, ServerHello, hello_from, initialize_params, response_for};

/// How long the stream may take to announce its endpoint, and a response to arrive on it.
const STREAM_WAIT: Duration = Duration::from_secs(30);

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, McpError>>>>>;

/// A conversation over HTTP+SSE.
pub struct SseSession {
    client: McpClient,
    post_url: Url,
    hello: ServerHello,
    next_id: u64,
    pending: Pending,
    reader: JoinHandle<()>,
}

impl SseSession {
    /// Opens the stream, waits for the `endpoint` event and runs the handshake.
    pub async fn open(client: &McpClient, url: Url) -> Result<Self, McpError> {
        let response =
            client.request(Method::GET, url.clone()).header(ACCEPT, "text/event-stream").send().await?;
        if !response.status().is_success() {
            return Err(status_error(response).await);
        }
        let pending: Pending = Arc::default();
        let (endpoint_tx, endpoint_rx) = oneshot::channel();
        let reader = tokio::spawn(read_stream(response, pending.clone(), endpoint_tx));
        let endpoint = match tokio::time::timeout(STREAM_WAIT, endpoint_rx).await {
            Ok(Ok(endpoint)) => endpoint,
            Ok(Err(_)) => {
                reader.abort();
                return Err(McpError::protocol("the SSE stream ended before an endpoint event"));
            }
            Err(_) => {
                reader.abort();
                return Err(McpError::Timeout(STREAM_WAIT));
            }
        };
        let post_url = url.join(&endpoint).map_err(|e| McpError::protocol(format!("bad endpoint: {e}")))?;
        // The endpoint comes from the server: keep it on the registered origin.
        if post_url.origin() != url.origin() {
            reader.abort();
            return Err(McpError::protocol(format!(
                "the endpoint {post_url} is not on {}",
                url.origin().ascii_serialization()
            )));
        }
        let mut session = Self {
            client: client.clone(),
            post_url,
            hello: ServerHello::default(),
            next_id: 1,
            pending,
            reader,
        };
        let result = session.request("initialize", initialize_params()).await?;
        session.hello = hello_from(&result, LEGACY_VERSION);
        session.post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await?;
        Ok(session)
    }

    pub fn hello(&self) -> &ServerHello {
        &self.hello
    }

    async fn post(&self, body: &Value) -> Result<(), McpError> {
        let response = self
            .client
            .request(Method::POST, self.post_url.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await?;
        if response.status().is_success() { Ok(()) } else { Err(status_error(response).await) }
    }

    /// Sends a request and waits for its response on the stream.
    pub async fn request(&mut self, method: &str, params: Value) -> Result<Value, McpError> {
        let id = self.next_id;
        self.next_id += 1;
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).insert(id, tx);
        let posted =
            self.post(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})).await;
        if let Err(e) = posted {
            self.pending.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
            return Err(e);
        }
        match tokio::time::timeout(STREAM_WAIT, rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(McpError::protocol("the SSE stream ended before the response")),
            Err(_) => Err(McpError::Timeout(STREAM_WAIT)),
        }
    }

    /// Drops the stream, which ends the session.
    pub fn close(self) {
        self.reader.abort();
    }
}

impl Drop for SseSession {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn read_stream(mut response: reqwest::Response, pending: Pending, endpoint: oneshot::Sender<String>) {
    let mut parser = Parser::default();
    let mut endpoint = Some(endpoint);
    while let Ok(Some(chunk)) = response.chunk().await {
        let Ok(events) = parser.feed(&chunk) else {
            // An endless line or event: the stream is dropped (its waiters fail) rather than buffered.
            tracing::warn!("An upstream's SSE stream sent a line or event over the size limit; closing it.");
            break;
        };
        for event in events {
            if event.event == "endpoint" {
                if let Some(tx) = endpoint.take() {
                    let _ = tx.send(event.data.trim().to_owned());
                }
                continue;
            }
            let Ok(message) = serde_json::from_str::<Value>(&event.data) else { continue };
            let Some(id) = message.get("id").and_then(Value::as_u64) else { continue };
            let waiter = pending.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
            if let (Some(tx), Some(outcome)) = (waiter, response_for(&message, id)) {
                let _ = tx.send(outcome);
            }
        }
    }
    // Waiters see their sender dropped: "the stream ended".
    pending.lock().unwrap_or_else(PoisonError::into_inner).clear();
}
