//! Micro-benchmarks of the proxy's hot path: session tokens, JSON-RPC inspection, 2026-07-28 header checks,
//! authentication and instance selection. Run with `cargo bench -p mcpgw-proxy --bench hot_path`.

use std::sync::Arc;
use std::time::Duration;

use mcpgw_proto::ResourceSet;
use mcpgw_proto::v1::ApiKey;
use mcpgw_proto::v1::{Instance, LoadBalancing, Resource, Server, Transport, resource::Kind};
use mcpgw_proto::validate::api_key_digest;
use mcpgw_proxy::headers::Noted;
use mcpgw_proxy::identity::{AuthSettings, Credentials};
use mcpgw_proxy::jsonrpc::Rpc;
use mcpgw_proxy::routing::{InstanceStates, PeerSettings, RoutingTable};
use mcpgw_proxy::session::{Scope, SessionKeys, generate_key};

fn main() {
    divan::main();
}

fn keys() -> SessionKeys {
    SessionKeys::new(&generate_key(), &[generate_key()], Duration::from_secs(3600))
}

#[divan::bench]
fn token_seal(b: divan::Bencher) {
    let k = keys();
    b.bench(|| {
        k.seal(
            Scope::Session("2f1c7d0e-0b7e-4c43-9a36-1f1f7d9c2a10", "key:0b7e2f1c"),
            "inst-3",
            "a1b2c3d4-e5f6-7890-abcd-ef0123456789",
        )
    });
}

#[divan::bench]
fn token_open(b: divan::Bencher) {
    let k = keys();
    let token =
        k.seal(Scope::Session("srv", "key:0b7e2f1c"), "inst-3", "a1b2c3d4-e5f6-7890-abcd-ef0123456789");
    b.bench(|| k.open(Scope::Session("srv", "key:0b7e2f1c"), divan::black_box(&token)).unwrap());
}

#[divan::bench(args = [0, 1024, 100 * 1024])]
fn jsonrpc_inspect(b: divan::Bencher, padding: usize) {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"message": "x".repeat(padding)},
                   "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}})
    .to_string();
    b.bench(|| Rpc::inspect(divan::black_box(body.as_bytes())).unwrap());
}

/// Authenticating an API key among `n` keys of the table: digest of the presented key, one map lookup,
/// the principal cloned (what every authenticated request pays over an anonymous one).
#[divan::bench(args = [1, 1000, 100_000])]
fn authenticate_api_key(b: divan::Bencher, n: usize) {
    let mut credentials = Credentials::default();
    for i in 0..n {
        let key = ApiKey {
            id: format!("key-{i}"),
            digest: api_key_digest(&format!("mcpgw_secret-{i}")).to_vec(),
            tenant_id: "acme".into(),
            roles: vec!["user".into()],
            ..Default::default()
        };
        credentials.add_api_key(&key).unwrap();
    }
    let auth =
        AuthSettings { anonymous: false, public_url: url::Url::parse("http://127.0.0.1:8080").unwrap() };
    let mut req = pingora::http::RequestHeader::build("POST", b"/mcp/alpha", None).unwrap();
    req.insert_header("authorization", format!("Bearer mcpgw_secret-{}", n / 2)).unwrap();
    let now = std::time::SystemTime::now();
    b.bench(|| {
        auth.authenticate(divan::black_box(&req), Noted::ANY, &credentials, Some("alpha"), now).unwrap()
    });
}

/// Authenticating a JWT whose signature was verified before (the path every call after the first one of a
/// token takes): digest of the token, one cache lookup, the audience check, the principal cloned.
#[divan::bench]
fn authenticate_jwt_cached(b: divan::Bencher) {
    use base64::Engine;
    use ring::signature::KeyPair;
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
    let jwks = serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "k1"}]});
    let mut credentials = Credentials::default();
    credentials
        .add_issuer(&mcpgw_proto::v1::TrustedIssuer {
            id: "idp".into(),
            issuer: "https://idp.example".into(),
            jwks_json: jwks.to_string(),
            algorithms: vec!["EdDSA".into()],
            ..Default::default()
        })
        .unwrap();
    let now = std::time::SystemTime::now();
    let secs = now.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = serde_json::json!({"iss": "https://idp.example", "sub": "alice",
        "aud": "http://127.0.0.1:8080/mcp/alpha", "exp": secs + 3600, "roles": ["user"]});
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some("k1".into());
    let token =
        jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_ed_der(pkcs8.as_ref()))
            .unwrap();
    let auth =
        AuthSettings { anonymous: false, public_url: url::Url::parse("http://127.0.0.1:8080").unwrap() };
    let mut req = pingora::http::RequestHeader::build("POST", b"/mcp/alpha", None).unwrap();
    req.insert_header("authorization", format!("Bearer {token}")).unwrap();
    auth.authenticate(&req, Noted::ANY, &credentials, Some("alpha"), now).unwrap();
    b.bench(|| {
        auth.authenticate(divan::black_box(&req), Noted::ANY, &credentials, Some("alpha"), now).unwrap()
    });
}

fn table(policy: LoadBalancing, instances: usize) -> Arc<RoutingTable> {
    let mut resources = vec![Resource {
        kind: Some(Kind::Server(Server {
            id: "s".into(),
            name: "alpha".into(),
            transport: Transport::StreamableHttp as i32,
            load_balancing: policy as i32,
            hash_key: "header:x-user".into(),
            ..Default::default()
        })),
    }];
    for i in 0..instances {
        resources.push(Resource {
            kind: Some(Kind::Instance(Instance {
                id: format!("inst-{i}"),
                server_id: "s".into(),
                endpoint_url: format!("http://127.0.0.1:{}/mcp", 3000 + i),
                weight: 1 + (i as u32 % 3),
                ..Default::default()
            })),
        });
    }
    let set = ResourceSet::new(1, resources).unwrap();
    let settings = PeerSettings {
        connect_timeout: Duration::from_secs(1),
        pool_idle_timeout: Duration::from_secs(1),
        dns_refresh: Duration::ZERO,
        ssrf: Default::default(),
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    Arc::new(
        rt.block_on(RoutingTable::build(
            &set,
            &RoutingTable::default(),
            &InstanceStates::default(),
            &settings,
        ))
        .unwrap(),
    )
}

const POLICIES: [LoadBalancing; 5] = [
    LoadBalancing::RoundRobin,
    LoadBalancing::Weighted,
    LoadBalancing::LeastConnections,
    LoadBalancing::Random,
    LoadBalancing::ConsistentHash,
];

#[divan::bench(args = POLICIES, consts = [3, 30])]
fn select<const N: usize>(b: divan::Bencher, policy: LoadBalancing) {
    let table = table(policy, N);
    let server = table.server("alpha").unwrap();
    b.bench(|| server.selector().pick(divan::black_box(b"user-42"), &[]).unwrap());
}

#[divan::bench]
fn routing_lookup(b: divan::Bencher) {
    let table = table(LoadBalancing::RoundRobin, 3);
    b.bench(|| table.server(divan::black_box("alpha")).is_some());
}

/// One authorization decision for a `tools/call` by a principal whose custom role has `n` rules (one per
/// server, each with a few tool globs), plus an API key narrowing: the policy path every named message
/// takes.
#[divan::bench(args = [10, 1000])]
fn authorize_tool_call(b: divan::Bencher, n: usize) {
    use mcpgw_proto::v1::{PermissionRule, Role};
    use mcpgw_proxy::policy::{ItemKind, Policy};
    let rules: Vec<PermissionRule> = (0..n)
        .map(|i| PermissionRule {
            server: format!("server-{i}"),
            tools: vec![format!("read_{i}_*"), "list_*".into(), format!("tool-{i}")],
            ..Default::default()
        })
        .chain([PermissionRule { server: "team-*".into(), tools: vec!["*".into()], ..Default::default() }])
        .collect();
    let mut policy = Policy::default();
    policy.add_role(&Role { id: "r".into(), tenant_id: "acme".into(), name: "analyst".into(), rules });
    let mut credentials = Credentials::default();
    let key = ApiKey {
        id: "k".into(),
        digest: api_key_digest("mcpgw_bench").to_vec(),
        tenant_id: "acme".into(),
        roles: vec!["analyst".into()],
        permissions: vec![PermissionRule {
            server: "server-*".into(),
            tools: vec!["read_*".into()],
            ..Default::default()
        }],
        ..Default::default()
    };
    credentials.add_api_key(&key).unwrap();
    let auth =
        AuthSettings { anonymous: false, public_url: url::Url::parse("http://127.0.0.1:8080").unwrap() };
    let mut req = pingora::http::RequestHeader::build("POST", b"/mcp/server-500", None).unwrap();
    req.insert_header("authorization", "Bearer mcpgw_bench").unwrap();
    let principal = auth
        .authenticate(&req, Noted::ANY, &credentials, Some("server-500"), std::time::SystemTime::now())
        .unwrap();
    let server = format!("server-{}", n / 2);
    let tool = format!("read_{}_rows", n / 2);
    assert!(policy.allows(&principal, "acme", &server, Some((ItemKind::Tool, &tool))));
    b.bench(|| {
        policy.allows(
            divan::black_box(&principal),
            "acme",
            divan::black_box(&server),
            Some((ItemKind::Tool, divan::black_box(&tool))),
        )
    });
}

/// Filtering a `tools/list` answer of 500 tools (JSON, 87 KiB) for a caller whose role allows the `get_*`
/// tools: parsing, deciding each tool and serializing what is left.
#[divan::bench]
fn filter_tools_list_500(b: divan::Bencher) {
    use mcpgw_proto::v1::{PermissionRule, Role};
    use mcpgw_proxy::policy::ListFilter;
    let mut resources = vec![Resource {
        kind: Some(Kind::Server(Server {
            id: "s".into(),
            name: "alpha".into(),
            transport: Transport::StreamableHttp as i32,
            ..Default::default()
        })),
    }];
    resources.push(Resource {
        kind: Some(Kind::Role(Role {
            id: "r".into(),
            tenant_id: "default".into(),
            name: "getter".into(),
            rules: vec![PermissionRule {
                server: "alpha".into(),
                tools: vec!["get_*".into()],
                ..Default::default()
            }],
        })),
    });
    resources.push(Resource {
        kind: Some(Kind::ApiKey(ApiKey {
            id: "k".into(),
            digest: api_key_digest("mcpgw_lister").to_vec(),
            roles: vec!["getter".into()],
            ..Default::default()
        })),
    });
    let set = ResourceSet::new(1, resources).unwrap();
    let settings = PeerSettings {
        connect_timeout: Duration::from_secs(1),
        pool_idle_timeout: Duration::from_secs(1),
        dns_refresh: Duration::ZERO,
        ssrf: Default::default(),
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let table = Arc::new(
        rt.block_on(RoutingTable::build(
            &set,
            &RoutingTable::default(),
            &InstanceStates::default(),
            &settings,
        ))
        .unwrap(),
    );
    let auth =
        AuthSettings { anonymous: false, public_url: url::Url::parse("http://127.0.0.1:8080").unwrap() };
    let mut req = pingora::http::RequestHeader::build("POST", b"/mcp/alpha", None).unwrap();
    req.insert_header("authorization", "Bearer mcpgw_lister").unwrap();
    let principal = auth
        .authenticate(&req, Noted::ANY, table.credentials(), Some("alpha"), std::time::SystemTime::now())
        .unwrap();
    let server = table.server("alpha").unwrap().clone();
    let filter = ListFilter::of("tools/list", &table, &principal, &server).expect("a restricted caller");
    let tools: Vec<serde_json::Value> = (0..500)
        .map(|i| {
            let verb = if i % 2 == 0 { "get" } else { "set" };
            serde_json::json!({"name": format!("{verb}_item_{i}"), "description": "Reads or writes one item of the catalog.",
                "inputSchema": {"type": "object", "properties": {"id": {"type": "string"}, "limit": {"type": "integer"}}}})
        })
        .collect();
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": tools}}).to_string();
    let kept = filter.apply(body.as_bytes(), false);
    assert!(kept.len() < body.len() && std::str::from_utf8(&kept).unwrap().contains("get_item_0"));
    b.bench(|| filter.apply(divan::black_box(body.as_bytes()), false));
}

/// A local rate limit on a `tools/call` of an API key: the bucket key, the limit's buckets and one GCRA
/// step (what `RateLimits::take` does for a local limit), with a quota the benchmark never reaches.
#[divan::bench]
fn rate_limit_local(b: divan::Bencher) {
    use mcpgw_proxy::limits::{LimitRule, RateLimits};
    let rule = LimitRule::from_proto(&mcpgw_proto::v1::RateLimit {
        id: "l".into(),
        tenant_id: "acme".into(),
        scope: "api_key".into(),
        server: "server-*".into(),
        requests: 1_000_000_000,
        per_ms: 1_000,
        burst: 1_000_000_000,
        ..Default::default()
    })
    .unwrap();
    let mut credentials = Credentials::default();
    let key = ApiKey {
        id: "k".into(),
        digest: api_key_digest("mcpgw_bench").to_vec(),
        tenant_id: "acme".into(),
        ..Default::default()
    };
    credentials.add_api_key(&key).unwrap();
    let auth =
        AuthSettings { anonymous: false, public_url: url::Url::parse("http://127.0.0.1:8080").unwrap() };
    let mut req = pingora::http::RequestHeader::build("POST", b"/mcp/server-1", None).unwrap();
    req.insert_header("authorization", "Bearer mcpgw_bench").unwrap();
    let principal = auth
        .authenticate(&req, Noted::ANY, &credentials, Some("server-1"), std::time::SystemTime::now())
        .unwrap();
    let control_plane =
        Arc::new(mcpgw_proxy::rpc::ControlPlane::new("http://127.0.0.1:1", None, None).unwrap());
    let limits = RateLimits::new(control_plane);
    b.bench(|| {
        let key = rule.key(divan::black_box(&principal), "server-1", Some("read_rows")).unwrap();
        limits.limiter(&rule).check(key, std::time::Instant::now())
    });
}

/// A typical `tools/call` record as `Gateway::logging` writes it (its fields in wire form, the UUIDv7, the
/// trace id and the session digest), put on the audit queue and taken off it again (the shipper's side).
fn audit_record(trace: &[u8], session: &[u8]) -> mcpgw_proxy::audit::wire::Encoded {
    use mcpgw_proxy::audit::{capture, record_id, wire::RecordWriter};
    let key_id: Arc<str> = Arc::from("6f1d5c1e-8a53-4b8e-9c55-1b7f0a8e2d31");
    let client_addr = std::net::IpAddr::from([127, 0, 0, 1]).to_string();
    let digest = capture::session_digest(session);
    let trace_id =
        mcpgw_proto::otlp::TraceParent::parse(trace).map(|t| t.trace_id.to_string()).unwrap_or_default();
    let mut w = RecordWriter::default();
    w.bytes(1, &record_id(1_764_000_000_000))
        .int(2, 1_764_000_000_000_000, false)
        .text(3, &["api-key:", &key_id])
        .text(4, &["acme"])
        .text(5, &["server-1"])
        .text(6, &["0b5c8a8e-7e0c-4f53-a3b5-88d2c8a6f0c1"])
        .text(7, &["2025-06-18"])
        .text(8, &["tools/call"])
        .text(9, &["read_rows"])
        .text(10, &["17"])
        .text(11, &["ok"])
        .uint(12, 200)
        .uint(14, 850)
        .uint(15, 160)
        .uint(16, 1100)
        .text(17, &[&client_addr])
        .text(18, &[&digest])
        .text(19, &[&trace_id])
        .text(21, &["proxy-1"]);
    w.finish()
}

#[divan::bench]
fn audit_record_queued(b: divan::Bencher) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let trace = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let session = b"AXk3b2xhbmQtc2Vzc2lvbi10b2tlbi1zZWFsZWQtYnktdGhlLXByb3h5LWtleQ";
    b.bench_local(|| {
        tx.try_send(audit_record(divan::black_box(trace), divan::black_box(session))).unwrap();
        rx.try_recv().unwrap()
    });
}

/// The shipper's framing of a full batch (1,000 records), per record.
#[divan::bench]
fn audit_batch_per_record(b: divan::Bencher) {
    let trace = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let records: Vec<_> = (0..1000).map(|_| audit_record(trace, b"token")).collect();
    b.counter(divan::counter::ItemsCount::new(1000usize))
        .bench(|| mcpgw_proxy::audit::wire::Batch::of(divan::black_box(&records)));
}

/// Whether an answer is a JSON-RPC result or error, from a typical ~1 KiB `tools/call` answer's bytes.
#[divan::bench]
fn audit_answer_outcome(b: divan::Bencher) {
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":17,"result":{{"content":[{{"type":"text","text":"{}"}}],"isError":false}}}}"#,
        "x".repeat(1024)
    );
    b.bench(|| mcpgw_proxy::audit::capture::answer(divan::black_box(body.as_bytes())));
}

/// A request's trace when nothing is exported: a new trace id, and the `traceparent` the upstream gets.
#[divan::bench]
fn trace_unrecorded(b: divan::Bencher) {
    use mcpgw_proxy::trace::Trace;
    let req = pingora::http::RequestHeader::build("POST", b"/mcp/server-1", None).unwrap();
    let instance: Arc<str> = Arc::from("0b5c8a8e-7e0c-4f53-a3b5-88d2c8a6f0c1");
    b.bench(|| {
        let mut trace = Trace::start(divan::black_box(&req), Noted::ANY, None);
        trace.upstream(&instance, "127.0.0.1:9000")
    });
}

/// A recorded request with the collector down: its phase marks, one upstream attempt, and its six spans
/// built and offered to the export queue (full: dropped and counted).
#[divan::bench]
fn trace_recorded(b: divan::Bencher) {
    use mcpgw_proxy::trace::{Root, Trace, Tracer};
    let args = mcpgw_proto::otlp::Args {
        otlp_endpoint: Some("http://127.0.0.1:1".into()),
        otlp_protocol: mcpgw_proto::otlp::Protocol::HttpProtobuf,
        otlp_sample_ratio: 1.0,
    };
    let settings = args.validate().unwrap().unwrap();
    let (exporter, _worker) =
        mcpgw_proto::otlp::Exporter::new(&settings.endpoint, settings.protocol, "bench", "bench").unwrap();
    let tracer = Tracer::new(exporter, settings);
    let mut req = pingora::http::RequestHeader::build("POST", b"/mcp/server-1", None).unwrap();
    req.insert_header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    let instance: Arc<str> = Arc::from("0b5c8a8e-7e0c-4f53-a3b5-88d2c8a6f0c1");
    let server: Arc<str> = Arc::from("server-1");
    b.bench(|| {
        let started = std::time::Instant::now();
        let mut trace = Trace::start(divan::black_box(&req), Noted::ANY, Some(&tracer));
        for mark in [&mut trace.body_read, &mut trace.authenticated, &mut trace.admitted] {
            Trace::mark(true, mark);
        }
        let header = trace.upstream(&instance, "127.0.0.1:9000");
        trace.attempt_ended(Some(std::time::Instant::now()));
        let root = Root {
            http_method: "POST",
            path: "/mcp/server-1",
            status: 200,
            mcp_method: Some("tools/call"),
            target: Some("read_rows"),
            request_id: Some("17"),
            protocol_version: Some("2026-07-28"),
            server: Some(&server),
            instance: Some(&instance),
            outcome: "ok",
        };
        trace.export(&tracer, started, root);
        header
    });
}
