//! JSON-RPC over a message transport — WebSocket text frames or stdio lines, one message each: the
//! `initialize` handshake, requests matched to their responses by id, and what the server sends
//! meanwhile. The server's own requests are answered (`ping` with an empty result, anything else with
//! -32601: the client declares no capabilities, so a server has nothing else to ask); notifications are
//! skipped, except that `next_notification` hands them to the list_changed watcher.

use serde_json::{Value, json};

use super::stdio::StdioWire;
use super::websocket::WsWire;
use super::{LEGACY_VERSION, McpError, ServerHello, hello_from, initialize_params, response_for};

/// Where the messages go: a WebSocket or a process's stdin and stdout.
pub(crate) enum Wire {
    WebSocket(WsWire),
    Stdio(StdioWire),
}

impl Wire {
    async fn send(&mut self, message: &Value) -> Result<(), McpError> {
        let text = message.to_string();
        match self {
            Self::WebSocket(ws) => ws.send(text).await,
            Self::Stdio(process) => process.send(text).await,
        }
    }

    /// The next message; `None` when the peer closed.
    async fn recv(&mut self) -> Result<Option<Value>, McpError> {
        match self {
            Self::WebSocket(ws) => ws.recv().await,
            Self::Stdio(process) => process.recv().await,
        }
    }

    /// Why the peer is gone, for the error of a request it did not answer.
    async fn gone(&mut self) -> McpError {
        match self {
            Self::WebSocket(_) => McpError::protocol("the server closed the WebSocket before answering"),
            Self::Stdio(process) => process.gone().await,
        }
    }

    async fn close(self) {
        match self {
            Self::WebSocket(ws) => ws.close().await,
            Self::Stdio(process) => process.close().await,
        }
    }
}

/// A conversation over a message transport, opened with `initialize`.
pub struct MessageSession {
    wire: Wire,
    hello: ServerHello,
    next_id: u64,
}

impl MessageSession {
    /// The handshake: `initialize`, then `notifications/initialized`.
    pub(crate) async fn initialize(wire: Wire) -> Result<Self, McpError> {
        let mut session = Self { wire, hello: ServerHello::default(), next_id: 1 };
        let result = session.request("initialize", initialize_params()).await?;
        session.hello = hello_from(&result, LEGACY_VERSION);
        session.wire.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await?;
        Ok(session)
    }

    pub fn hello(&self) -> &ServerHello {
        &self.hello
    }

    /// Sends a request and waits for its response, answering the server's requests meanwhile. Bounded by
    /// the caller's timeout.
    pub async fn request(&mut self, method: &str, params: Value) -> Result<Value, McpError> {
        let id = self.next_id;
        self.next_id += 1;
        self.wire.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})).await?;
        loop {
            let Some(message) = self.wire.recv().await? else { return Err(self.wire.gone().await) };
            for message in batch(message) {
                if let Some(outcome) = response_for(&message, id) {
                    return outcome;
                }
                self.answer(&message).await?;
            }
        }
    }

    /// The method of the next notification the server sends (its requests are answered meanwhile);
    /// `None` when it closes the connection.
    pub async fn next_notification(&mut self) -> Result<Option<String>, McpError> {
        loop {
            let Some(message) = self.wire.recv().await? else { return Ok(None) };
            for message in batch(message) {
                if message.get("id").is_none()
                    && let Some(method) = message.get("method").and_then(Value::as_str)
                {
                    return Ok(Some(method.to_owned()));
                }
                self.answer(&message).await?;
            }
        }
    }

    /// Answers a request of the server; anything else (notifications, stray responses) is skipped.
    async fn answer(&mut self, message: &Value) -> Result<(), McpError> {
        let (Some(method), Some(id)) = (message.get("method").and_then(Value::as_str), message.get("id"))
        else {
            return Ok(());
        };
        let reply = if method == "ping" {
            json!({"jsonrpc": "2.0", "id": id, "result": {}})
        } else {
            let text = format!("the mcpgw control plane does not handle {method}");
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": text}})
        };
        self.wire.send(&reply).await
    }

    /// Ends the conversation: a WebSocket is closed, a process killed.
    pub async fn close(self) {
        self.wire.close().await;
    }
}

/// The messages of a JSON-RPC batch, or the one message.
fn batch(message: Value) -> Vec<Value> {
    match message {
        Value::Array(items) => items,
        other => vec![other],
    }
}
