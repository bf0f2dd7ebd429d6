//! One bounded look at a JSON-RPC request body: its id, method and target name, without building a tree
//! of the (possibly large) params.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

/// Parses a JSON body. A body that is UTF-8 (every valid one) is checked as a whole once and parsed as
/// text: parsed as bytes, serde_json checks every string it reads on its own (~100 instructions each, ~15 a
/// `tools/call`). One that is not is parsed as bytes, so it is refused exactly as before.
pub fn from_body<'a, T: Deserialize<'a>>(body: &'a [u8]) -> serde_json::Result<T> {
    match std::str::from_utf8(body) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(body),
    }
}

/// The kind of `params.ref` of `completion/complete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference {
    /// `ref/prompt`: a prompt by name.
    Prompt,
    /// `ref/resource`: a resource template by URI.
    Resource,
}

/// What the gateway needs to know about a JSON-RPC body.
#[derive(Debug, Clone, PartialEq)]
pub enum Rpc {
    /// One request or notification (`id` is `None` for a notification). `name` is `params.name` or
    /// `params.uri`; `protocol_version` is `params._meta["io.modelcontextprotocol/protocolVersion"]`.
    Message {
        id: Option<Value>,
        method: String,
        name: Option<String>,
        protocol_version: Option<String>,
        /// `completion/complete`: what `params.ref` names (its name or URI is `name`).
        reference: Option<Reference>,
        /// Whether `params._meta["io.modelcontextprotocol/clientCapabilities"]` is an object (the last one
        /// when the member repeats, as a JSON object's reader takes it): a 2026-07-28 request must carry it.
        client_capabilities: bool,
    },
    /// A JSON-RPC response sent by the client (to a server-initiated request).
    Response { id: Value },
    /// A batch (only the 2025-03-26 revision allows them).
    Batch,
}

impl Rpc {
    /// Parses `body` as JSON-RPC; `None` when it is not (the upstream will answer with its own error).
    pub fn inspect(body: &[u8]) -> Option<Self> {
        let first = body.iter().find(|b| !b.is_ascii_whitespace())?;
        if *first == b'[' {
            return from_body::<IgnoredAny>(body).ok().map(|_| Self::Batch);
        }
        let env: Envelope<'_> = from_body(body).ok()?;
        if env.jsonrpc.as_deref() != Some("2.0") {
            return None;
        }
        match env.method {
            Some(method) => {
                let params = env.params.unwrap_or_default();
                // What the method names: a resource by its URI, anything else by its name (a body that
                // carries both cannot make the gateway decide on one and the upstream act on the other).
                // `completion/complete` names a prompt or a resource template in `params.ref`.
                let (name, reference) = if method == "completion/complete" {
                    match params.reference {
                        Some(r) if r.kind.as_deref() == Some("ref/prompt") => {
                            (r.name.map(Cow::Owned), Some(Reference::Prompt))
                        }
                        Some(r) if r.kind.as_deref() == Some("ref/resource") => {
                            (r.uri.map(Cow::Owned), Some(Reference::Resource))
                        }
                        _ => (None, None),
                    }
                } else if method.starts_with("resources/") {
                    (params.uri, None)
                } else {
                    (params.name.or(params.uri), None)
                };
                Some(Self::Message {
                    id: env.id,
                    method: method.into_owned(),
                    name: name.map(Cow::into_owned),
                    protocol_version: params.meta.version.map(Cow::into_owned),
                    reference,
                    client_capabilities: params.meta.capabilities,
                })
            }
            None => env.id.map(|id| Self::Response { id }),
        }
    }

    /// The id a JSON-RPC error answer must carry (`null` when the message had none).
    pub fn error_id(&self) -> Value {
        match self {
            Self::Message { id: Some(id), .. } | Self::Response { id } => id.clone(),
            _ => Value::Null,
        }
    }

    /// Bounded metrics label for the method.
    pub fn method_label(&self) -> &'static str {
        match self {
            Self::Message { method, .. } => method_label(method),
            Self::Response { .. } => "response",
            Self::Batch => "batch",
        }
    }
}

/// MCP methods known by name; anything else is counted as `other` so labels stay bounded.
const KNOWN_METHODS: &[&str] = &[
    "initialize",
    "ping",
    "server/discover",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "subscriptions/listen",
    "tasks/get",
    "tasks/result",
    "tasks/list",
    "tasks/cancel",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
];

/// The `_meta` member of a request's `params` (null when absent, not an object, repeated, or the body is
/// unreadable), read without building the rest of the body: other members are skipped, not allocated.
pub fn params_meta(body: &[u8]) -> Value {
    #[derive(Deserialize)]
    struct Doc {
        #[serde(default)]
        params: Option<MetaOnly>,
    }
    struct MetaOnly(Option<Value>);
    impl<'de> Deserialize<'de> for MetaOnly {
        fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = MetaOnly;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("JSON-RPC params")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MetaOnly, A::Error> {
                    let mut meta = None;
                    while let Some(key) = map.next_key::<StrOrOther<'de>>()? {
                        if key.0.as_deref() != Some("_meta") {
                            map.next_value::<IgnoredAny>()?;
                        } else if meta.replace(map.next_value::<Value>()?).is_some() {
                            return Err(de::Error::custom("duplicate _meta in params"));
                        }
                    }
                    Ok(MetaOnly(meta))
                }
                fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<MetaOnly, A::Error> {
                    while seq.next_element::<IgnoredAny>()?.is_some() {}
                    Ok(MetaOnly(None))
                }
            }
            d.deserialize_any(V)
        }
    }
    from_body::<Doc>(body).ok().and_then(|d| d.params?.0).filter(Value::is_object).unwrap_or(Value::Null)
}

pub fn method_label(method: &str) -> &'static str {
    KNOWN_METHODS.iter().find(|m| **m == method).copied().unwrap_or("other")
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default, borrow)]
    jsonrpc: Option<Cow<'a, str>>,
    #[serde(default)]
    id: Option<Value>,
    #[serde(default, borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    params: Option<Params<'a>>,
}

/// `params.name` / `params.uri` / what the gateway reads of `params._meta`; anything else is skipped
/// without allocation.
#[derive(Default)]
struct Params<'a> {
    name: Option<Cow<'a, str>>,
    uri: Option<Cow<'a, str>>,
    meta: Meta<'a>,
    reference: Option<RefParams>,
}

/// `params.ref` of `completion/complete`.
#[derive(Deserialize)]
struct RefParams {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    uri: Option<String>,
}

/// The `_meta` member naming a request's protocol revision (2026-07-28).
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// The `_meta` member carrying a 2026-07-28 client's capabilities, on every request.
pub const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";

/// The protocol version in a `_meta` object, and whether it carries the client's capabilities as an object
/// (read without building them: a 2026-07-28 client sends them on every request). A repeated member: the
/// last one counts.
#[derive(Default)]
struct Meta<'a> {
    version: Option<Cow<'a, str>>,
    capabilities: bool,
}

impl<'de: 'a, 'a> Deserialize<'de> for Meta<'a> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Meta<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a _meta object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Meta<'a>, A::Error> {
                let mut meta = Meta::default();
                while let Some(key) = map.next_key::<StrOrOther<'de>>()? {
                    match key.0.as_deref() {
                        Some(META_PROTOCOL_VERSION) => {
                            meta.version = map.next_value::<StrOrOther<'a>>()?.0;
                        }
                        Some(META_CLIENT_CAPABILITIES) => {
                            meta.capabilities = map.next_value::<IsObject>()?.0;
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(meta)
            }
            fn visit_unit<E>(self) -> Result<Meta<'a>, E> {
                Ok(Meta::default())
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Meta<'a>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Meta::default())
            }
            fn visit_str<E>(self, _: &str) -> Result<Meta<'a>, E> {
                Ok(Meta::default())
            }
            fn visit_bool<E>(self, _: bool) -> Result<Meta<'a>, E> {
                Ok(Meta::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<Meta<'a>, E> {
                Ok(Meta::default())
            }
            fn visit_u64<E>(self, _: u64) -> Result<Meta<'a>, E> {
                Ok(Meta::default())
            }
            fn visit_f64<E>(self, _: f64) -> Result<Meta<'a>, E> {
                Ok(Meta::default())
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// Any JSON value, skipped: whether it is an object.
struct IsObject(bool);

impl<'de> Deserialize<'de> for IsObject {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = IsObject;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<IsObject, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(IsObject(true))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<IsObject, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(IsObject(false))
            }
            fn visit_str<E>(self, _: &str) -> Result<IsObject, E> {
                Ok(IsObject(false))
            }
            fn visit_bool<E>(self, _: bool) -> Result<IsObject, E> {
                Ok(IsObject(false))
            }
            fn visit_i64<E>(self, _: i64) -> Result<IsObject, E> {
                Ok(IsObject(false))
            }
            fn visit_u64<E>(self, _: u64) -> Result<IsObject, E> {
                Ok(IsObject(false))
            }
            fn visit_f64<E>(self, _: f64) -> Result<IsObject, E> {
                Ok(IsObject(false))
            }
            fn visit_unit<E>(self) -> Result<IsObject, E> {
                Ok(IsObject(false))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Params<'a> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Params<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("JSON-RPC params")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Params<'a>, A::Error> {
                let mut params = Params::default();
                let mut seen = [false; 4];
                while let Some(key) = map.next_key::<StrOrOther<'de>>()? {
                    // Parsers disagree on repeated keys (first wins, last wins, error): a body that repeats
                    // one the gateway decides on is not read (nor let through for restricted callers).
                    let slot = match key.0.as_deref().unwrap_or_default() {
                        "name" => Some(0),
                        "uri" => Some(1),
                        "_meta" => Some(2),
                        "ref" => Some(3),
                        _ => None,
                    };
                    if let Some(i) = slot {
                        if seen[i] {
                            return Err(de::Error::custom(format!(
                                "duplicate key {:?} in params",
                                key.0.unwrap_or_default()
                            )));
                        }
                        seen[i] = true;
                    }
                    match key.0.as_deref().unwrap_or_default() {
                        "name" => params.name = map.next_value::<Option<StrOrOther<'a>>>()?.and_then(|s| s.0),
                        "uri" => params.uri = map.next_value::<Option<StrOrOther<'a>>>()?.and_then(|s| s.0),
                        "_meta" => params.meta = map.next_value::<Meta<'a>>()?,
                        "ref" => params.reference = map.next_value::<Option<RefParams>>()?,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(params)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Params<'a>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Params::default())
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// A string, or `None` for any other JSON value (which is skipped). Object keys are read with it too: it
/// borrows from the body unless the string holds escapes (serde's own `Cow<str>` always copies).
struct StrOrOther<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for StrOrOther<'a> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = StrOrOther<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(StrOrOther(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(StrOrOther(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(StrOrOther(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(StrOrOther(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(StrOrOther(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(StrOrOther(None))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(StrOrOther(None))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(StrOrOther(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(StrOrOther(None))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn inspect(v: Value) -> Option<Rpc> {
        Rpc::inspect(v.to_string().as_bytes())
    }

    #[test]
    fn client_capabilities_are_found_as_params_meta_finds_them() {
        let key = "io.modelcontextprotocol/clientCapabilities";
        let declared =
            |body: &[u8]| matches!(Rpc::inspect(body), Some(Rpc::Message { client_capabilities: true, .. }));
        // Each after `{"jsonrpc":"2.0","id":1,"method":"tools/call",` (or alone where it starts with `[` or
        // is not an object).
        let rests: &[&str] = &[
            r#""params":{"name":"e","arguments":{"m":"x\"y"},"_meta":{"io.modelcontextprotocol/clientCapabilities":{"a":[1,{"b":2}]},"io.modelcontextprotocol/clientInfo":{"name":"c"}}}}"#,
            r#""params":{"_meta":{"io.modelcontextprotocol/clientCapabilities":{}}}}"#,
            r#""params":{"_meta":{"io.modelcontextprotocol/clientCapabilities":5}}}"#,
            r#""params":{"_meta":{"io.modelcontextprotocol/clientCapabilities":[]}}}"#,
            r#""params":{"_meta":{"io.modelcontextprotocol/clientCapabilities":null}}}"#,
            r#""params":{"_meta":{"io.modelcontextprotocol/clientCapabilities":"x"}}}"#,
            r#""params":{"_meta":{"io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/clientCapabilities":1}}}"#,
            r#""params":{"_meta":{"io.modelcontextprotocol/clientCapabilities":1,"io.modelcontextprotocol/clientCapabilities":{}}}}"#,
            r#""params":{"_meta":{"other":{}}}}"#,
            r#""params":{"_meta":{"io.modelcontextprotocol/clientCapabilities":{}},"_meta":{}}}"#,
            r#""params":{"_meta":{"io.modelcontextprotocol/clientCapabilities":{}}},"params":{}}"#,
            r#""params":{"_meta":5}}"#,
            r#""params":{"_meta":null}}"#,
            r#""params":[{"_meta":{"io.modelcontextprotocol/clientCapabilities":{}}}]}"#,
            r#""params":"x"}"#,
            r#""params":{"_meta":{"io.modelcontextprotocol/clientCapabilities":{}}}} trailing"#,
            r#""params":{"_meta":{"io.modelcontextprotocol/clientCapabilities":{"#,
            r#""params":{"_meta":{"io.model\u0063ontextprotocol/clientCapabilities":{}}}}"#,
        ];
        let mut bodies: Vec<String> =
            rests.iter().map(|r| format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call",{r}"#)).collect();
        bodies.extend(
            [
                r#"[{"jsonrpc":"2.0","id":1,"method":"x","params":{"_meta":{"io.modelcontextprotocol/clientCapabilities":{}}}}]"#,
                "not json",
                "",
            ]
            .map(String::from),
        );
        for body in &bodies {
            let expected = params_meta(body.as_bytes()).get(key).is_some_and(Value::is_object);
            assert_eq!(declared(body.as_bytes()), expected, "{body}");
        }
        assert!(declared(bodies[0].as_bytes()), "the case that matters");
        assert!(declared(bodies[7].as_bytes()), "the last of a repeated member counts");
        assert!(declared(bodies[17].as_bytes()), "an escaped name is the name");
        for body in [
            &b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\",\"params\":{\"_meta\":{\"k\":{}}}}\xff"[..],
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\",\"params\":{\"x\":\"\xff\",\"_meta\":{\"io.modelcontextprotocol/clientCapabilities\":{}}}}",
        ] {
            let expected = params_meta(body).get(key).is_some_and(Value::is_object);
            assert_eq!(declared(body), expected, "not UTF-8: {body:?}");
        }
    }

    #[test]
    fn params_meta_reads_only_meta() {
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"big":[1,2,{"_meta":0}]},"_meta":{"progressToken":7}}}"#;
        assert_eq!(params_meta(body), serde_json::json!({"progressToken": 7}));
        assert_eq!(params_meta(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#), Value::Null);
        assert_eq!(params_meta(br#"{"params":[1]}"#), Value::Null, "positional params have no _meta");
        assert_eq!(params_meta(b"not json"), Value::Null);
        assert_eq!(params_meta(br#"{"params":{"_meta":{"a":1},"_meta":{"b":2}}}"#), Value::Null, "repeated");
        assert_eq!(params_meta(br#"{"params":{"_meta":5}}"#), Value::Null, "not an object");
    }

    #[test]
    fn requests_and_notifications() {
        let call = inspect(json!({"jsonrpc":"2.0","id":3,"method":"tools/call",
            "params":{"arguments":{"name":"not me","big":[1,2,3]},"name":"echo"}}));
        assert_eq!(
            call,
            Some(Rpc::Message {
                id: Some(json!(3)),
                method: "tools/call".into(),
                name: Some("echo".into()),
                protocol_version: None,
                reference: None,
                client_capabilities: false,
            })
        );
        let modern = inspect(json!({"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{
            "io.modelcontextprotocol/clientCapabilities":{"x":[1]},
            "io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}));
        assert!(
            matches!(modern, Some(Rpc::Message { protocol_version: Some(ref v), .. }) if v == "2026-07-28")
        );
        assert_eq!(call.as_ref().unwrap().method_label(), "tools/call");
        let read =
            inspect(json!({"jsonrpc":"2.0","id":"a","method":"resources/read","params":{"uri":"file:///x"}}));
        assert!(matches!(read, Some(Rpc::Message { name: Some(ref n), .. }) if n == "file:///x"));
        let note = inspect(json!({"jsonrpc":"2.0","method":"notifications/initialized"})).unwrap();
        assert_eq!(note.error_id(), Value::Null);
        let odd = inspect(json!({"jsonrpc":"2.0","id":1,"method":"x/y","params":[1,2]})).unwrap();
        assert_eq!(odd.method_label(), "other");
        let non_str_name =
            inspect(json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":{"a":1}}}));
        assert!(matches!(non_str_name, Some(Rpc::Message { name: None, .. })));
        let escaped =
            Rpc::inspect(br#"{"jsonrpc":"2.0","id":1,"method":"tools\/call","params":{"name":"e\u0063ho"}}"#);
        assert!(
            matches!(escaped, Some(Rpc::Message { ref method, name: Some(ref n), .. }) if method == "tools/call" && n == "echo")
        );
    }

    #[test]
    fn responses_batches_and_garbage() {
        assert_eq!(
            inspect(json!({"jsonrpc":"2.0","id":9,"result":{}})),
            Some(Rpc::Response { id: json!(9) })
        );
        assert_eq!(Rpc::inspect(b" [{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}]"), Some(Rpc::Batch));
        assert_eq!(Rpc::inspect(b"{not json"), None);
        assert_eq!(Rpc::inspect(b""), None);
        assert_eq!(inspect(json!({"id":1,"method":"ping"})), None, "jsonrpc member is required");
        assert_eq!(inspect(json!({"jsonrpc":"1.0","id":1,"method":"ping"})), None);
    }

    #[test]
    fn text_and_bytes_read_alike() {
        // UTF-8 bodies are parsed as text, others as bytes: the same answers either way.
        let body =
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"météo","arguments":{}}}"#;
        let Some(Rpc::Message { name, .. }) = Rpc::inspect(body.as_bytes()) else { panic!("a request") };
        assert_eq!(name.as_deref(), Some("météo"));
        let invalid =
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"\xff\"}}";
        assert!(serde_json::from_slice::<serde_json::Value>(invalid).is_err());
        assert_eq!(Rpc::inspect(invalid), None, "a string that is not UTF-8 is refused as before");
        let lone = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\xff";
        assert_eq!(Rpc::inspect(lone), None, "trailing bytes that are not UTF-8 are refused as before");
    }
}
