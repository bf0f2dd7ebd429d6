//! Unit tests of request validation: every field rule and its error code.

use super::*;

fn req(name: &str, url: &str) -> ServerRequest {
    ServerRequest {
        name: name.into(),
        endpoint_url: url.into(),
        transport_type: None,
        description: None,
        tags: None,
    }
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
    r.transport_type = Some("stdio".into());
    assert_eq!(code(r), Code::InvalidTransportType);
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
