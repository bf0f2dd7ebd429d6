//! Unit tests of request validation: every field rule and its error code.

use serde_json::json;

use super::request::MAX_DESCRIPTION_CHARS;
use super::*;
use crate::model::{LoadBalancing, TransportType};

fn req(name: &str, url: &str) -> ServerRequest {
    ServerRequest { name: name.into(), endpoint_url: Some(url.into()), ..Default::default() }
}

fn parse(value: serde_json::Value) -> ServerRequest {
    serde_json::from_value(value).expect("the body parses")
}

fn code(r: ServerRequest) -> Code {
    match r.validate() {
        Ok(spec) => panic!("{spec:?} validated"),
        Err(e) => e.code(),
    }
}

#[test]
fn accepts_a_minimal_request_with_defaults() {
    let spec = req("py-server-2", "http://127.0.0.1:3001/mcp").validate().expect("valid");
    assert_eq!(spec.transport, TransportType::StreamableHttp);
    assert!(spec.tags.is_empty());
    assert_eq!(spec.description, None);
    assert_eq!(spec.instances.len(), 1);
    assert_eq!(spec.instances[0].weight, 1);
    assert_eq!(spec.load_balancing, LoadBalancing::RoundRobin);
}

#[test]
fn instances_list_and_conflicts() {
    let spec = parse(json!({"name": "a", "load_balancing": "weighted", "instances": [
        {"endpoint_url": "http://h1/mcp", "weight": 3, "metadata": {"zone": "a"}},
        {"endpoint_url": "http://h2/mcp"}]}))
    .validate()
    .expect("valid");
    assert_eq!(spec.instances.len(), 2);
    assert_eq!(spec.instances[0].weight, 3);
    assert_eq!(spec.instances[0].metadata.get("zone").map(String::as_str), Some("a"));
    assert_eq!(spec.load_balancing, LoadBalancing::Weighted);

    let both =
        json!({"name": "a", "endpoint_url": "http://h/", "instances": [{"endpoint_url": "http://h/"}]});
    assert_eq!(code(parse(both)), Code::ConflictingFields);
    assert_eq!(code(parse(json!({"name": "a"}))), Code::MissingField);
    let empty =
        parse(json!({"name": "a", "instances": []})).validate().expect("no instance is a valid state");
    assert!(empty.instances.is_empty());
    for bad in [
        json!([{"endpoint_url": "http://h/"}, {"endpoint_url": "http://h/"}]),
        json!([{"endpoint_url": "http://h/", "weight": 0}]),
        json!([{"endpoint_url": "http://h/", "weight": 10001}]),
        json!([{"endpoint_url": "http://h/", "metadata": {"n": 1}}]),
    ] {
        assert_eq!(code(parse(json!({"name": "a", "instances": bad}))), Code::InvalidInstances, "{bad}");
    }
    let bad_url = json!({"name": "a", "instances": [{"endpoint_url": "ftp://h/"}]});
    assert_eq!(code(parse(bad_url)), Code::InvalidEndpointUrl);
}

#[test]
fn balancing_hash_key_and_breaker() {
    assert_eq!(
        code(parse(json!({"name": "a", "endpoint_url": "http://h/", "load_balancing": "fastest"}))),
        Code::InvalidLoadBalancing
    );
    assert_eq!(
        code(parse(json!({"name": "a", "endpoint_url": "http://h/", "hash_key": "cookie:x"}))),
        Code::InvalidHashKey
    );
    let spec = parse(json!({"name": "a", "endpoint_url": "http://h/", "load_balancing": "consistent_hash",
        "hash_key": "header:X-User", "circuit_breaker": {"consecutive_failures": 5, "window": "90s", "open": "1s"}}))
    .validate()
    .expect("valid");
    assert_eq!(spec.hash_key.as_deref(), Some("header:X-User"));
    let breaker = spec.circuit_breaker.expect("breaker");
    assert_eq!(breaker.window.as_deref(), Some("1m 30s"), "durations are stored in canonical form");
    for bad in [
        json!({"failure_ratio": 0.0}),
        json!({"failure_ratio": 1.5}),
        json!({"window": "soon"}),
        json!({"open": "0s"}),
        json!({"open": "10s", "max_open": "1s"}),
    ] {
        let r = parse(json!({"name": "a", "endpoint_url": "http://h/", "circuit_breaker": bad}));
        assert_eq!(code(r), Code::InvalidCircuitBreaker, "{bad}");
    }
}

#[test]
fn transport_aliases() {
    for (raw, want) in [
        ("http", TransportType::StreamableHttp),
        ("streamable_http", TransportType::StreamableHttp),
        ("sse", TransportType::Sse),
    ] {
        let mut r = req("a", "https://h/mcp");
        r.transport_type = Some(raw.into());
        assert_eq!(r.validate().expect("valid").transport, want);
    }
    let mut r = req("a", "https://h/mcp");
    r.transport_type = Some("grpc".into());
    assert_eq!(code(r), Code::InvalidTransportType);
}

#[test]
fn websocket_endpoints_are_ws_urls() {
    let spec = parse(json!({"name": "a", "transport_type": "websocket", "endpoint_url": "wss://h/ws"}))
        .validate()
        .expect("valid");
    assert_eq!((spec.transport, spec.instances[0].command.is_none()), (TransportType::WebSocket, true));
    for (transport, url) in
        [("websocket", "https://h/ws"), ("websocket", "ws://"), ("streamable_http", "ws://h/ws")]
    {
        let r = parse(json!({"name": "a", "transport_type": transport, "endpoint_url": url}));
        assert_eq!(code(r), Code::InvalidEndpointUrl, "{transport} {url}");
    }
}

#[test]
fn stdio_servers_take_commands() {
    let stdio = |extra: serde_json::Value| {
        let mut body = json!({"name": "a", "transport_type": "stdio"});
        body.as_object_mut().expect("object").extend(extra.as_object().cloned().unwrap_or_default());
        parse(body)
    };
    let spec = stdio(json!({"command": {"program": "npx", "args": ["-y", "srv"], "secret_env": {"K": "v"}}}))
        .validate()
        .expect("valid");
    assert_eq!(spec.instances[0].endpoint_url, "stdio:npx");
    assert!(spec.has_new_secret());
    let two = stdio(
        json!({"instances": [{"command": {"program": "npx"}}, {"command": {"program": "uvx"}, "weight": 2}]}),
    )
    .validate()
    .expect("valid");
    assert_eq!(two.instances[1].endpoint_url, "stdio:uvx");
    for (extra, want) in [
        (json!({}), Code::MissingField),
        (json!({"endpoint_url": "http://h/"}), Code::InvalidEndpointUrl),
        (json!({"command": {"program": "npx"}, "endpoint_url": "http://h/"}), Code::ConflictingFields),
        (json!({"command": {"program": "npx"}, "instances": []}), Code::ConflictingFields),
        (json!({"instances": [{"endpoint_url": "http://h/"}]}), Code::InvalidEndpointUrl),
        (json!({"instances": [{"weight": 2}]}), Code::MissingField),
        (
            json!({"instances": [{"command": {"program": "npx"}}, {"command": {"program": "npx", "args": ["x"]}}]}),
            Code::InvalidInstances,
        ),
        (json!({"command": {"program": "npx\u{0}"}}), Code::InvalidCommand),
        (
            json!({"instances": [{"command": {"program": "npx", "env": {"K": "\u{0}"}}}]}),
            Code::InvalidCommand,
        ),
        (json!({"command": {"program": ""}}), Code::InvalidCommand),
        (
            json!({"command": {"program": "npx"}, "upstream_auth": {"type": "static_header", "header": "X", "value": "v"}}),
            Code::InvalidUpstreamAuth,
        ),
        (
            json!({"instances": [{"command": {"program": "npx"}, "upstream_auth": {"type": "token_exchange"}}]}),
            Code::InvalidUpstreamAuth,
        ),
    ] {
        assert_eq!(code(stdio(extra.clone())), want, "{extra}");
    }
    let http_with_command = parse(json!({"name": "a", "command": {"program": "npx"}}));
    assert_eq!(code(http_with_command), Code::InvalidCommand);
    let ws_with_command = parse(
        json!({"name": "a", "transport_type": "websocket", "instances": [{"command": {"program": "npx"}}]}),
    );
    assert_eq!(code(ws_with_command), Code::InvalidCommand);
}

#[test]
fn bad_names() {
    let long = "a".repeat(64);
    for bad in ["", "Upper", "-lead", "trail-", "a_b", "a b", long.as_str()] {
        assert_eq!(code(req(bad, "http://h/")), Code::InvalidServerName, "{bad:?}");
    }
}

#[test]
fn bad_urls() {
    for bad in ["/mcp", "mcp", "ftp://h/x", "http://", "http://u:p@h/", "http://h/#f", "file:///etc/passwd"] {
        assert_eq!(code(req("a", bad)), Code::InvalidEndpointUrl, "{bad:?}");
    }
}

#[test]
fn description_and_tags() {
    let mut r = req("a", "http://h/");
    r.description = Some("d".repeat(MAX_DESCRIPTION_CHARS + 1));
    assert_eq!(code(r), Code::InvalidDescription);
    for tags in
        [vec![String::new()], vec!["x".repeat(65)], vec!["a".into(), "a".into()], vec!["t".into(); 33]]
    {
        let mut r = req("a", "http://h/");
        r.tags = Some(tags);
        assert_eq!(code(r), Code::InvalidTags);
    }
    let mut r = req("a", "http://h/");
    r.tags = Some(vec!["prod".into(), "team-a".into()]);
    assert_eq!(r.validate().expect("valid").tags, ["prod", "team-a"]);
}

#[test]
fn nul_characters_are_refused_anywhere() {
    for body in [
        json!({"name": "a", "endpoint_url": "http://h/", "description": "x\u{0}y"}),
        json!({"name": "a", "instances": [{"endpoint_url": "http://h/", "metadata": {"k": "\u{0}"}}]}),
        json!({"name": "a", "endpoint_url": "http://h/", "capabilities": {"\u{0}": 1}}),
    ] {
        assert_eq!(code(parse(body.clone())), Code::MalformedJson, "{body}");
    }
}
