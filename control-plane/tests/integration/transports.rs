//! WebSocket and stdio upstream servers: registration rules and their error codes, stdio secret
//! environments (sealed, never read back, merged into the routing table's command), discovery of real
//! servers over both transports (the Python SDK over stdio and WebSocket, server-everything over stdio),
//! the WebSocket handshake the client sends, and health checks of dead instances.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::test::TestRequest;
use diesel::QueryableByName;
use diesel::sql_types::Bytea;
use diesel_async::RunQueryDsl;
use futures_util::{SinkExt, StreamExt};
use mcpgw_control_plane::config::HealthDefaults;
use mcpgw_control_plane::health::Checker;
use mcpgw_control_plane::mcp::{McpClient, StdioPrograms};
use mcpgw_control_plane::ssrf::SsrfPolicy;
use mcpgw_proto::v1::resource::Kind;
use mcpgw_proto::v1::{HealthStatus, ResourceKind};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_util::sync::CancellationToken;

use crate::registry::{export, import};
use crate::support::{FakeProxy, Reply, TestApp, TestGrpc, admin, get, hello};

/// How long a real peer (Python starts in 1-3 s, more on a loaded machine) may take to answer.
const PEER_WAIT: Duration = Duration::from_secs(60);
/// A secret environment value that must never be read back.
const SECRET: &str = "s3cret-env-value";

fn peers_dir() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(&manifest).join("tests").join("peers")
}

fn require(path: PathBuf) -> String {
    assert!(
        path.exists(),
        "{} is missing: run tests/peers/install.sh (scripts/test.sh does)",
        path.display()
    );
    // Not canonicalized: the venv's python is a symlink that must stay one (it finds the venv by it).
    path.to_string_lossy().into_owned()
}

/// The peers' Python (an absolute path: what `--stdio-programs` lists) and `py_server.py`.
fn python() -> (String, String) {
    (require(peers_dir().join(".venv/bin/python")), require(peers_dir().join("py_server.py")))
}

/// Polls `check` until it holds, failing after `PEER_WAIT` (a readiness poll, not a sleep for correctness).
async fn within<F: AsyncFnMut() -> bool>(what: &str, mut check: F) {
    let deadline = Instant::now() + PEER_WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn post(app: &TestApp, uri: &str, body: Value) -> Reply {
    app.call(admin(TestRequest::post().uri(uri)).set_json(body)).await
}

async fn refresh(app: &TestApp, id: &str) -> Reply {
    app.call(admin(TestRequest::post().uri(&format!("/api/v1/servers/{id}/refresh")))).await
}

fn tool_names(server: &Value) -> Vec<String> {
    server["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect()
}

/// `py_server.py --transport websocket` on a free port (another one if it lost the port race); killed when
/// dropped.
struct PyWebSocket {
    _child: tokio::process::Child,
    url: String,
}

impl PyWebSocket {
    async fn start(name: &str) -> Self {
        let (python, script) = python();
        for _ in 0..4 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a port")
                .port();
            let mut child = tokio::process::Command::new(&python)
                .args([
                    script.as_str(),
                    "--transport",
                    "websocket",
                    "--port",
                    &port.to_string(),
                    "--name",
                    name,
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("start py_server.py");
            let deadline = Instant::now() + PEER_WAIT;
            loop {
                if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                    return Self { _child: child, url: format!("ws://127.0.0.1:{port}/ws") };
                }
                if child.try_wait().expect("its status").is_some() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "py_server.py --transport websocket did not listen on {port}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("py_server.py --transport websocket exited four times");
    }
}

/// What the fake WebSocket server saw: the handshake's headers and the client's answer to its request.
#[derive(Default)]
struct Seen {
    headers: Vec<(String, String)>,
    answer: Option<Value>,
}

/// A WebSocket MCP server on port 0 that records the handshake, sends a ping and a `roots/list` request
/// of its own before answering `initialize`, lists its tools (`tools.listChanged` advertised) and tells
/// every open connection when `announce` is called.
struct FakeWs {
    url: String,
    seen: Arc<Mutex<Seen>>,
    tools: Arc<Mutex<Vec<String>>>,
    changed: tokio::sync::broadcast::Sender<()>,
}

impl FakeWs {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        let url = format!("ws://{}/ws", listener.local_addr().expect("addr"));
        let fake = Self {
            url,
            seen: Arc::default(),
            tools: Arc::new(Mutex::new(vec!["ws-tool".to_owned()])),
            changed: tokio::sync::broadcast::channel(16).0,
        };
        let (seen, tools, changed) = (fake.seen.clone(), fake.tools.clone(), fake.changed.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(serve_ws(tcp, seen.clone(), tools.clone(), changed.subscribe()));
            }
        });
        fake
    }

    /// Adds a tool and sends `notifications/tools/list_changed` on every open connection.
    fn add_tool(&self, name: &str) {
        let mut tools = self.tools.lock().expect("lock");
        if !tools.iter().any(|t| t == name) {
            tools.push(name.to_owned());
        }
        let _ = self.changed.send(());
    }
}

async fn serve_ws(
    tcp: tokio::net::TcpStream,
    seen: Arc<Mutex<Seen>>,
    tools: Arc<Mutex<Vec<String>>>,
    mut changed: tokio::sync::broadcast::Receiver<()>,
) {
    // tungstenite's callback type: its error is an HTTP response, large by design.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, mut response: Response| {
        seen.lock().expect("lock").headers = request
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        if let Some(p) = request.headers().get("sec-websocket-protocol") {
            response.headers_mut().insert("sec-websocket-protocol", p.clone());
        }
        Ok(response)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else { return };
    loop {
        let frame = tokio::select! {
            frame = ws.next() => frame,
            Ok(()) = changed.recv() => {
                let note = json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"});
                let _ = ws.send(Message::text(note.to_string())).await;
                continue;
            }
        };
        let Some(Ok(frame)) = frame else { return };
        let Message::Text(text) = frame else { continue };
        let message: Value = serde_json::from_str(&text).expect("JSON");
        if message.get("id") == Some(&json!("srv-1")) {
            seen.lock().expect("lock").answer = Some(message);
            continue;
        }
        let (Some(id), Some(method)) = (message.get("id"), message["method"].as_str()) else { continue };
        let result = match method {
            "initialize" => {
                let roots = json!({"jsonrpc": "2.0", "id": "srv-1", "method": "roots/list"});
                let note = json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {}});
                let _ = ws.send(Message::Ping(vec![1, 2].into())).await;
                let _ = ws.send(Message::text(roots.to_string())).await;
                let _ = ws.send(Message::text(note.to_string())).await;
                json!({"protocolVersion": "2025-11-25", "capabilities": {"tools": {"listChanged": true}},
                    "serverInfo": {"name": "fake-ws", "version": "1"}})
            }
            "tools/list" => {
                let names = tools.lock().expect("lock").clone();
                let items: Vec<Value> =
                    names.iter().map(|n| json!({"name": n, "inputSchema": {"type": "object"}})).collect();
                json!({"tools": items})
            }
            _ => json!({}),
        };
        let reply = json!({"jsonrpc": "2.0", "id": id, "result": result});
        let _ = ws.send(Message::text(reply.to_string())).await;
    }
}

#[actix_web::test]
async fn registration_refusals_have_their_codes() {
    let plain = TestApp::start().await;
    let stdio = json!({"name": "s", "transport_type": "stdio", "auto_discover": false,
        "command": {"program": "mcp-test-server"}});
    let refused = plain.create(stdio.clone()).await;
    assert_eq!((refused.status, refused.code()), (StatusCode::BAD_REQUEST, "stdio_not_allowed"));
    let message = refused.body["message"].as_str().unwrap_or_default();
    assert!(message.contains("--stdio-programs") && message.contains("empty"), "{message}");

    let app = TestApp::start().await.with_stdio_programs(&["mcp-test-server", "/opt/mcp/server"]);
    let with = |extra: Value| {
        let mut body = json!({"name": "s", "transport_type": "stdio", "auto_discover": false});
        body.as_object_mut().expect("object").extend(extra.as_object().cloned().unwrap_or_default());
        body
    };
    for (body, code) in [
        (with(json!({"command": {"program": "npx"}})), "stdio_not_allowed"),
        (with(json!({"command": {"program": "/opt/mcp/other"}})), "stdio_not_allowed"),
        (with(json!({"command": {"program": ""}})), "invalid_command"),
        (with(json!({"command": {"program": "mcp/server"}})), "invalid_command"),
        (with(json!({"command": {"program": "mcp-test-server", "args": ["a\u{0}b"]}})), "invalid_command"),
        (with(json!({"command": {"program": "mcp-test-server", "args": vec!["x"; 65]}})), "invalid_command"),
        (with(json!({"command": {"program": "mcp-test-server", "env": {"9X": "v"}}})), "invalid_command"),
        (
            with(json!({"command": {"program": "mcp-test-server", "secret_env": {"A=B": SECRET}}})),
            "invalid_command",
        ),
        (
            with(json!({"command": {"program": "mcp-test-server", "working_directory": "tmp"}})),
            "invalid_command",
        ),
        (with(json!({"command": {"program": "mcp-test-server", "shell": true}})), "unknown_field"),
        (with(json!({})), "missing_field"),
        (with(json!({"endpoint_url": "http://127.0.0.1:1/mcp"})), "invalid_endpoint_url"),
        (
            with(
                json!({"endpoint_url": "http://127.0.0.1:1/mcp", "command": {"program": "mcp-test-server"}}),
            ),
            "conflicting_fields",
        ),
        (
            with(json!({"command": {"program": "mcp-test-server"},
                "upstream_auth": {"type": "static_header", "header": "X-Key", "value": SECRET}})),
            "invalid_upstream_auth",
        ),
        (
            json!({"name": "s", "transport_type": "smoke-signals", "endpoint_url": "http://h/"}),
            "invalid_transport_type",
        ),
        (
            json!({"name": "s", "endpoint_url": "http://h/", "command": {"program": "mcp-test-server"}}),
            "conflicting_fields",
        ),
        (json!({"name": "s", "instances": [{"command": {"program": "mcp-test-server"}}]}), "invalid_command"),
        (
            json!({"name": "w", "transport_type": "websocket", "endpoint_url": "https://127.0.0.1:1/ws"}),
            "invalid_endpoint_url",
        ),
        (json!({"name": "w", "endpoint_url": "ws://127.0.0.1:1/ws"}), "invalid_endpoint_url"),
        (
            json!({"name": "w", "transport_type": "websocket", "endpoint_url": "ws://169.254.169.254/ws"}),
            "endpoint_url_not_allowed",
        ),
    ] {
        let reply = app.create(body.clone()).await;
        assert_eq!((reply.status, reply.code()), (StatusCode::BAD_REQUEST, code), "{body}: {}", reply.body);
        assert!(!reply.body.to_string().contains(SECRET), "{}", reply.body);
    }
    assert!(app.table().await.1.is_empty(), "nothing was written");

    // Allowed: both transports, then the instances API with each one's rules.
    let ws = app
        .create(
            json!({"name": "w", "transport_type": "websocket", "endpoint_url": "wss://mcp.example.com/ws",
            "auto_discover": false}),
        )
        .await;
    assert_eq!(ws.status, StatusCode::CREATED, "{}", ws.body);
    assert_eq!(ws.body["transport_type"], "websocket");
    let created = app.create(with(json!({"command": {"program": "mcp-test-server", "args": ["--x"]}}))).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["endpoint_url"], "stdio:mcp-test-server");
    assert_eq!(created.body["instances"][0]["command"]["args"], json!(["--x"]));
    let listed = app.call(get("/api/v1/servers?transport_type=stdio")).await;
    assert_eq!(listed.body.as_array().map(Vec::len), Some(1), "{}", listed.body);
    let stats = app.call(get("/api/v1/admin/stats")).await;
    assert_eq!(stats.body["servers_by_transport"], json!({"stdio": 1, "websocket": 1}), "{}", stats.body);
    let (stdio_id, ws_id) = (created.body["id"].as_str().expect("id"), ws.body["id"].as_str().expect("id"));
    let add = |id: &str| format!("/api/v1/servers/{id}/instances");
    for (uri, body, code) in [
        (add(stdio_id), json!({"command": {"program": "npx"}}), "stdio_not_allowed"),
        (add(stdio_id), json!({"endpoint_url": "http://127.0.0.1:1/mcp"}), "invalid_endpoint_url"),
        (add(stdio_id), json!({"command": {"program": "mcp-test-server"}}), "instance_endpoint_taken"),
        (add(ws_id), json!({"command": {"program": "mcp-test-server"}}), "invalid_command"),
        (add(ws_id), json!({"endpoint_url": "http://127.0.0.1:1/mcp"}), "invalid_endpoint_url"),
    ] {
        let reply = post(&app, &uri, body.clone()).await;
        assert_eq!(reply.code(), code, "{uri} {body}: {}", reply.body);
    }
    let second = post(
        &app,
        &add(stdio_id),
        json!({"command": {"program": "/opt/mcp/server", "secret_env": {"K": SECRET}}}),
    )
    .await;
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.body);
    assert_eq!(second.body["command"]["secret_env"], json!(["K"]));
    assert!(!second.body.to_string().contains(SECRET));

    // The OpenAPI document describes the new fields.
    let doc = app.call(TestRequest::get().uri("/api/v1/openapi.json")).await.body;
    let schemas = &doc["components"]["schemas"];
    for (schema, field) in [
        ("InstanceRequest", "command"),
        ("ServerRequest", "command"),
        ("CommandRequest", "secret_env"),
        ("CommandView", "secret_env"),
        ("InstanceView", "command"),
    ] {
        assert!(schemas[schema]["properties"][field].is_object(), "{schema}.{field}: {}", schemas[schema]);
    }

    // Without --secrets-key a secret environment cannot be sealed.
    let keyless = TestApp::without_secrets().await.with_stdio_programs(&["mcp-test-server"]);
    let refused = keyless
        .create(with(json!({"command": {"program": "mcp-test-server", "secret_env": {"K": SECRET}}})))
        .await;
    assert_eq!(refused.code(), "secrets_key_not_configured", "{}", refused.body);
}

#[derive(QueryableByName)]
struct Sealed {
    #[diesel(sql_type = Bytea)]
    sealed: Vec<u8>,
}

#[actix_web::test]
async fn secret_env_is_sealed_never_read_back_and_reaches_the_routing_table() {
    let app = TestApp::start().await.with_stdio_programs(&["mcp-test-server"]);
    let grpc = TestGrpc::start(app.hub.clone()).await;
    let created = app
        .create(json!({"name": "secretive", "transport_type": "stdio", "auto_discover": false,
            "command": {"program": "mcp-test-server", "args": ["--stdio"], "env": {"MODE": "test"},
                "secret_env": {"API_TOKEN": SECRET}, "working_directory": "/tmp"}}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.body["id"].as_str().expect("id").to_owned();
    let command = &created.body["instances"][0]["command"];
    assert_eq!(command["secret_env"], json!(["API_TOKEN"]));
    assert_eq!(command["env"], json!({"MODE": "test"}));

    // No read, list, health view, export or audit record carries the value.
    let reads = [
        app.call(get(&format!("/api/v1/servers/{id}"))).await.body,
        app.call(get("/api/v1/servers")).await.body,
        app.call(get(&format!("/api/v1/servers/{id}/health"))).await.body,
        app.call(get("/api/v1/audit?kind=admin")).await.body,
    ];
    for body in &reads {
        assert!(!body.to_string().contains(SECRET), "{body}");
    }
    assert_eq!(reads[0]["instances"][0]["command"]["secret_env"], json!(["API_TOKEN"]), "{}", reads[0]);
    let exported = export(&app).await;
    assert!(!exported.contains(SECRET) && exported.contains("- API_TOKEN"), "{exported}");
    let mut conn = app.pool.get().await.expect("connection");
    let rows: Vec<Sealed> =
        diesel::sql_query("SELECT sealed FROM upstream_credentials WHERE kind = 'stdio_env'")
            .load(&mut conn)
            .await
            .expect("read the sealed row");
    drop(conn);
    assert_eq!(rows.len(), 1);
    assert!(!rows[0].sealed.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()), "stored sealed");

    // The proxies get the command with the secret merged into its environment.
    let mut proxy = FakeProxy::open(&grpc, hello("proxy-stdio")).await.expect("stream accepted");
    let snapshot = proxy.next_within(Duration::from_secs(5)).await;
    let command = snapshot
        .upserts
        .iter()
        .find_map(|r| match &r.kind {
            Some(Kind::Instance(i)) => i.command.clone(),
            _ => None,
        })
        .expect("the instance carries its command");
    assert_eq!((command.program.as_str(), command.working_directory.as_str()), ("mcp-test-server", "/tmp"));
    assert_eq!(command.args, ["--stdio"]);
    assert_eq!(command.env.get("API_TOKEN").map(String::as_str), Some(SECRET));
    assert_eq!(command.env.get("MODE").map(String::as_str), Some("test"));
    let server = snapshot.upserts.iter().find_map(|r| match &r.kind {
        Some(Kind::Server(s)) => Some(s.transport),
        _ => None,
    });
    assert_eq!(server, Some(mcpgw_proto::v1::Transport::Stdio as i32));

    // A PATCH keeps it; the export applied back changes nothing; a name kept without a value is refused.
    let patched = app
        .call(
            admin(TestRequest::patch().uri(&format!("/api/v1/servers/{id}")))
                .set_json(json!({"description": "d"})),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    let env_in_table = |app: &TestApp| {
        let set = app.hub.current();
        set.iter()
            .find_map(|r| match &r.kind {
                Some(Kind::Instance(i)) => i.command.as_ref().and_then(|c| c.env.get("API_TOKEN").cloned()),
                _ => None,
            })
            .unwrap_or_default()
    };
    assert_eq!(env_in_table(&app), SECRET);
    let again = import(&app, "", &export(&app).await).await;
    assert_eq!(again.body["unchanged"], 1, "{}", again.body);
    let unknown = app
        .call(admin(TestRequest::patch().uri(&format!("/api/v1/servers/{id}"))).set_json(json!({"command":
            {"program": "mcp-test-server", "secret_env": ["API_TOKEN", "OTHER"]}})))
        .await;
    assert_eq!(unknown.code(), "invalid_command", "{}", unknown.body);
    // The name alone (kept) becomes a name with a value (replaced), one level deeper.
    let rotated: String = exported
        .lines()
        .map(|line| match line.split_once("- API_TOKEN") {
            Some((indent, "")) => format!("{indent}  API_TOKEN: rotated-value\n"),
            _ => format!("{line}\n"),
        })
        .collect();
    let dry = import(&app, "?dry_run=true", &rotated).await;
    assert_eq!(dry.body["updated"], 1, "{}", dry.body);
    assert!(dry.body.to_string().contains("(new value)") && !dry.body.to_string().contains("rotated-value"));
    let applied = import(&app, "", &rotated).await;
    assert_eq!(applied.body["updated"], 1, "{}", applied.body);
    assert_eq!(env_in_table(&app), "rotated-value");
}

#[actix_web::test]
async fn discovers_a_python_sdk_server_over_stdio() {
    let (python, script) = python();
    let app = TestApp::start().await.with_stdio_programs(&[python.as_str()]);
    let created = app
        .create(json!({"name": "py-stdio", "transport_type": "stdio", "auto_discover": false,
            "command": {"program": python, "args": [script, "--transport", "stdio", "--name", "py-stdio"],
                "secret_env": {"PY_TOKEN": SECRET}}}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.body["id"].as_str().expect("id");
    let found = refresh(&app, id).await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.body);
    let tools = tool_names(&found.body);
    for tool in ["echo", "add", "whoami"] {
        assert!(tools.iter().any(|t| t == tool), "{tool} in {tools:?}");
    }
    assert_eq!(found.body["discovery"]["server_info"]["name"], "py-stdio", "{}", found.body["discovery"]);
}

#[actix_web::test]
async fn a_stdio_process_gets_its_command_environment_and_nothing_else() {
    let (python, script) = python();
    let app = TestApp::start().await.with_stdio_programs(&["sh"]);
    // The server starts only if its secret arrived, merged with `env`, and nothing else was inherited
    // (the test runner has HOME and MCPGW_* variables): otherwise the shell exits 1 before answering.
    let check =
        r#"[ "$PY_TOKEN" = "$WANT" ] && [ -z "${HOME:-}${MCPGW_TEST_PG:-}" ] && [ -n "$PATH" ] && exec "$@""#;
    let created = app
        .create(json!({"name": "env-check", "transport_type": "stdio", "auto_discover": false,
            "command": {"program": "sh", "args": ["-c", check, "sh", python, script, "--transport", "stdio"],
                "env": {"WANT": SECRET}, "secret_env": {"PY_TOKEN": SECRET}, "working_directory": "/"}}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let found = refresh(&app, created.body["id"].as_str().expect("id")).await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.body);
    assert!(tool_names(&found.body).contains(&"echo".to_owned()));
}

#[actix_web::test]
async fn discovers_server_everything_over_stdio() {
    let entry =
        require(peers_dir().join("node_modules/@modelcontextprotocol/server-everything/dist/index.js"));
    let app = TestApp::start().await.with_stdio_programs(&["node"]);
    let created = app
        .create(json!({"name": "everything-stdio", "transport_type": "stdio", "auto_discover": false,
            "command": {"program": "node", "args": [entry, "stdio"]}}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let found = refresh(&app, created.body["id"].as_str().expect("id")).await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.body);
    let tools = tool_names(&found.body);
    assert!(tools.iter().any(|t| t == "echo"), "{tools:?}");
    assert!(found.body["resources"].as_array().is_some_and(|r| !r.is_empty()), "resources listed, paged");
}

#[actix_web::test]
async fn discovers_a_python_sdk_server_over_websocket() {
    let server = PyWebSocket::start("py-ws").await;
    let app = TestApp::start().await;
    let created = app
        .create(json!({"name": "py-ws", "transport_type": "websocket", "endpoint_url": server.url, "auto_discover": false}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let found = refresh(&app, created.body["id"].as_str().expect("id")).await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.body);
    let tools = tool_names(&found.body);
    assert!(tools.iter().any(|t| t == "whoami") && tools.iter().any(|t| t == "echo"), "{tools:?}");
}

#[actix_web::test]
async fn the_websocket_handshake_offers_mcp_and_carries_the_credential() {
    let fake = FakeWs::start().await;
    let app = TestApp::start().await;
    let created = app
        .create(json!({"name": "fake-ws", "transport_type": "websocket", "endpoint_url": fake.url,
            "auto_discover": false,
            "upstream_auth": {"type": "static_header", "header": "X-Api-Key", "value": SECRET}}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.body["id"].as_str().expect("id").to_owned();
    let found = refresh(&app, &id).await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.body);
    assert_eq!(tool_names(&found.body), ["ws-tool"]);
    {
        let seen = fake.seen.lock().expect("lock");
        let header = |name: &str| seen.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        assert_eq!(header("sec-websocket-protocol"), Some("mcp"));
        assert_eq!(header("x-api-key"), Some(SECRET));
        let answer = seen.answer.as_ref().expect("the client answered the server's request");
        assert_eq!(answer["error"]["code"], -32601, "{answer}");
    }

    // The leader's watcher keeps a WebSocket open and rediscovers on tools/list_changed.
    let stop = CancellationToken::new();
    let watcher = actix_web::rt::spawn(mcpgw_control_plane::discovery::watch::run(
        app.state().discoverer.clone(),
        stop.clone(),
    ));
    within("the new tool discovered after a list change", async || {
        // Announced again at every poll: the watcher may not have connected at the first.
        fake.add_tool("ws-new");
        let got = app.call(get(&format!("/api/v1/servers/{id}?include_tools=true"))).await;
        tool_names(&got.body).contains(&"ws-new".to_owned())
    })
    .await;
    stop.cancel();
    let _ = watcher.await;
}

fn health_of(app: &TestApp, instance: &str) -> Option<i32> {
    match app.hub.current().get(ResourceKind::InstanceHealth, instance)?.kind.as_ref()? {
        Kind::InstanceHealth(h) => Some(h.status),
        _ => None,
    }
}

#[actix_web::test]
async fn health_checks_judge_stdio_and_websocket_instances() {
    let (python, script) = python();
    let alive_ws = PyWebSocket::start("alive-ws").await;
    let dead_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let app = TestApp::start().await.with_stdio_programs(&["false", python.as_str()]);
    let checks = json!({"interval": "100ms", "timeout": "20s", "unhealthy_threshold": 2});
    let mut ids = Vec::new();
    for body in [
        json!({"name": "exits", "transport_type": "stdio", "command": {"program": "false"}}),
        json!({"name": "dead-ws", "transport_type": "websocket", "endpoint_url": format!("ws://127.0.0.1:{dead_port}/ws")}),
        json!({"name": "py-stdio", "transport_type": "stdio",
            "command": {"program": python, "args": [script, "--transport", "stdio"]}}),
        json!({"name": "alive-ws", "transport_type": "websocket", "endpoint_url": alive_ws.url}),
    ] {
        let mut body = body;
        body["auto_discover"] = json!(false);
        body["health_check"] = checks.clone();
        let created = app.create(body).await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
        ids.push(created.body["instances"][0]["id"].as_str().expect("instance id").to_owned());
    }
    app.hub.refresh().await.expect("publish");
    let client = McpClient::new(Arc::new(SsrfPolicy::default()))
        .expect("client")
        .with_stdio_programs(StdioPrograms::new(["false".to_owned(), python.clone()]));
    let checker = Checker {
        pool: app.pool.clone(),
        client,
        defaults: HealthDefaults {
            interval: Duration::from_millis(100),
            timeout: Duration::from_secs(20),
            healthy_threshold: 1,
            unhealthy_threshold: 2,
            concurrency: 4,
        },
        replica_id: "transports".into(),
        hub: app.hub.clone(),
    };
    let stop = CancellationToken::new();
    let task = actix_web::rt::spawn({
        let stop = stop.clone();
        async move { checker.run(stop).await }
    });
    let want =
        [HealthStatus::Unhealthy, HealthStatus::Unhealthy, HealthStatus::Healthy, HealthStatus::Healthy];
    within("stdio and WebSocket instances judged", async || {
        ids.iter().zip(want).all(|(id, want)| health_of(&app, id) == Some(want as i32))
    })
    .await;
    stop.cancel();
    let _ = task.await;
    let exits = app.call(get("/api/v1/servers?name=exits")).await.body;
    let error = exits[0]["instances"][0]["last_error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains("exited"), "{error}");
}
