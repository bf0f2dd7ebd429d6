//! A fake MCP server for the integration tests (actix-web on 127.0.0.1:0): legacy handshake with SSE
//! responses, or 2026-07-28 stateless JSON; paginated lists; can be switched down (503) and back, and can
//! require a credential header (401 without it).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};

/// Items per page of every list.
pub const PAGE: usize = 2;

#[derive(Default)]
pub struct FakeState {
    pub modern: bool,
    pub down: AtomicBool,
    pub requests: AtomicUsize,
    pub tools: Mutex<Vec<Value>>,
    /// Open GET streams, each fed `notifications/tools/list_changed` by `change_tools`.
    pub streams: Mutex<Vec<tokio::sync::mpsc::UnboundedSender<String>>>,
    pub resources: Vec<Value>,
    pub templates: Vec<Value>,
    pub prompts: Vec<Value>,
    /// `(name, value)` every request must carry; requests without it get 401.
    pub required: Mutex<Option<(String, String)>>,
    /// Requests refused for lacking it.
    pub refused: AtomicUsize,
    /// `tools/list` requests without a cursor: discovery rounds.
    pub list_rounds: AtomicUsize,
}

impl FakeState {
    /// Whether `req` carries the required header (always, when none is required).
    fn authorized(&self, req: &HttpRequest) -> bool {
        let required = self.required.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let ok = required.is_none_or(|(name, value)| {
            req.headers().get(name.as_str()).and_then(|v| v.to_str().ok()) == Some(value.as_str())
        });
        if !ok {
            self.refused.fetch_add(1, Ordering::SeqCst);
        }
        ok
    }
}

fn unauthorized() -> HttpResponse {
    HttpResponse::Unauthorized()
        .insert_header(("www-authenticate", "Bearer error=\"invalid_token\""))
        .json(json!({"error": "invalid_token"}))
}

pub struct FakeMcp {
    pub url: String,
    pub state: Arc<FakeState>,
    handle: actix_web::dev::ServerHandle,
}

impl FakeMcp {
    /// `tools` tools (`t0`…), 3 resources, 1 template, 2 prompts.
    pub async fn start(modern: bool, tools: usize) -> Self {
        let state = Arc::new(FakeState {
            modern,
            tools: Mutex::new(
                (0..tools)
                    .map(|i| json!({"name": format!("t{i}"), "description": format!("tool {i}"), "inputSchema": {"type": "object"}}))
                    .collect(),
            ),
            resources: (0..3).map(|i| json!({"uri": format!("demo://res/{i}"), "name": format!("r{i}"), "mimeType": "text/plain"})).collect(),
            templates: vec![json!({"uriTemplate": "demo://tpl/{id}", "name": "tpl"})],
            prompts: (0..2).map(|i| json!({"name": format!("p{i}"), "arguments": [{"name": "x", "required": true}]})).collect(),
            ..Default::default()
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/mcp", listener.local_addr().expect("addr"));
        let data = web::Data::from(state.clone());
        let server = HttpServer::new(move || {
            App::new().app_data(data.clone()).service(
                web::resource("/mcp")
                    .route(web::post().to(post))
                    .route(web::delete().to(delete))
                    .route(web::get().to(stream)),
            )
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Self { url, state, handle }
    }

    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// Refuses (401) every request that does not carry `name: value`.
    pub fn require_header(&self, name: &str, value: &str) {
        *self.state.required.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((name.to_owned(), value.to_owned()));
    }

    /// Open notification streams.
    pub fn streams(&self) -> usize {
        let mut streams = self.state.streams.lock().unwrap_or_else(|p| p.into_inner());
        streams.retain(|tx| !tx.is_closed());
        streams.len()
    }

    /// Adds a tool and announces `notifications/tools/list_changed` on every open stream.
    pub fn add_tool(&self, name: &str) {
        self.state
            .tools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(json!({"name": name, "inputSchema": {"type": "object"}}));
        self.announce();
    }

    /// Discovery rounds so far (`tools/list` without a cursor).
    pub fn list_rounds(&self) -> usize {
        self.state.list_rounds.load(Ordering::SeqCst)
    }

    /// Announces `notifications/tools/list_changed` on every open stream (whether or not anything changed).
    pub fn announce(&self) {
        let note = json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"});
        for tx in self.state.streams.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = tx.send(format!("event: message\ndata: {note}\n\n"));
        }
    }
}

impl Drop for FakeMcp {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        actix_web::rt::spawn(async move { handle.stop(false).await });
    }
}

fn page(items: &[Value], key: &str, params: &Value) -> Value {
    let start: usize = params
        .get("cursor")
        .and_then(Value::as_str)
        .and_then(|c| c.strip_prefix("c"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let end = (start + PAGE).min(items.len());
    let mut result = json!({ key: items.get(start..end).unwrap_or_default() });
    if end < items.len() {
        result["nextCursor"] = json!(format!("c{end}"));
    }
    result
}

/// The legacy GET stream (and, for the modern fake, what `subscriptions/listen` answers).
fn notification_stream(state: &FakeState) -> HttpResponse {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let _ = tx.send(": open\n\n".to_owned());
    state.streams.lock().unwrap_or_else(|p| p.into_inner()).push(tx);
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|s| (Ok::<_, actix_web::Error>(actix_web::web::Bytes::from(s)), rx))
    });
    HttpResponse::Ok().content_type("text/event-stream").streaming(body)
}

async fn stream(state: web::Data<FakeState>, req: HttpRequest) -> HttpResponse {
    if !state.authorized(&req) {
        return unauthorized();
    }
    if state.modern || state.down.load(Ordering::SeqCst) {
        return HttpResponse::MethodNotAllowed().finish();
    }
    notification_stream(&state)
}

async fn delete(state: web::Data<FakeState>, req: HttpRequest) -> HttpResponse {
    if !state.authorized(&req) {
        return unauthorized();
    }
    HttpResponse::Ok().finish()
}

async fn post(state: web::Data<FakeState>, req: HttpRequest, body: web::Json<Value>) -> HttpResponse {
    state.requests.fetch_add(1, Ordering::SeqCst);
    if !state.authorized(&req) {
        return unauthorized();
    }
    if state.down.load(Ordering::SeqCst) {
        return HttpResponse::ServiceUnavailable().body("down");
    }
    let method = body["method"].as_str().unwrap_or_default().to_owned();
    let Some(id) = body.get("id").cloned() else { return HttpResponse::Accepted().finish() };
    let params = body.get("params").cloned().unwrap_or(json!({}));
    let modern_request = req.headers().get("mcp-protocol-version").is_some_and(|v| v == "2026-07-28");
    let caps = json!({"tools": {"listChanged": true}, "resources": {}, "prompts": {}});
    let result = match method.as_str() {
        "server/discover" if state.modern => {
            json!({"supportedVersions": ["2026-07-28"], "capabilities": caps, "serverInfo": {"name": "fake-modern", "version": "1"}})
        }
        "server/discover" => {
            return HttpResponse::BadRequest().json(json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32000, "message": "Bad Request: Server not initialized"}}));
        }
        "initialize" => {
            json!({"protocolVersion": "2025-11-25", "capabilities": caps, "serverInfo": {"name": "fake-legacy", "version": "1"}})
        }
        "tools/list" => {
            if params.get("cursor").is_none() {
                state.list_rounds.fetch_add(1, Ordering::SeqCst);
            }
            page(&state.tools.lock().unwrap_or_else(|p| p.into_inner()), "tools", &params)
        }
        "subscriptions/listen" if state.modern => return notification_stream(&state),
        "resources/list" => page(&state.resources, "resources", &params),
        "resources/templates/list" => page(&state.templates, "resourceTemplates", &params),
        "prompts/list" => page(&state.prompts, "prompts", &params),
        "ping" => json!({}),
        _ => {
            return HttpResponse::Ok().json(
                json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "no such method"}}),
            );
        }
    };
    let message = json!({"jsonrpc": "2.0", "id": id, "result": result});
    if state.modern || modern_request {
        return HttpResponse::Ok().json(message);
    }
    // Legacy answers come as SSE, with a priming event first, as server-everything does.
    let mut response = HttpResponse::Ok();
    response.content_type("text/event-stream");
    if method == "initialize" {
        response.insert_header(("mcp-session-id", "fake-session"));
    }
    response.body(format!("id: p\ndata:\n\nevent: message\ndata: {message}\n\n"))
}
