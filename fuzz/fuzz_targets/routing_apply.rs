//! Routing updates as a proxy receives them from the control plane: each decoded with prost and applied
//! to the proxy's current `ResourceSet` (`mcpgw_proto::resources`), then every resource of the result
//! checked with the proxy's pure per-resource validation (server names, hash keys, endpoint URLs, API keys,
//! trusted issuers' JWKS, roles, rate limits). The table build itself is not run: it resolves upstream
//! hosts.
//!
//! Input: a sequence of length-delimited `RoutingUpdate` messages, applied in order; one that fails leaves
//! the set as it was, as in the proxy. Invariants: an applied update gives its version; the snapshot of the
//! result rebuilds it; the delta from the old set to the new one applied to the old set gives the new one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcpgw_proto::ResourceSet;
use mcpgw_proto::v1::{self, RoutingUpdate, resource::Kind};
use mcpgw_proto::validate;
use prost::Message;

/// NaN (a `failure_ratio`) is not equal to itself, so such sets are not compared by value.
fn comparable(set: &ResourceSet) -> bool {
    !format!("{set:?}").contains("NaN")
}

/// The checks the proxy runs on every resource of a table before it builds it.
fn check_resources(set: &ResourceSet) {
    let mut credentials = mcpgw_proxy::identity::Credentials::default();
    let mut access = mcpgw_proxy::policy::Policy::default();
    for resource in set.iter() {
        match &resource.kind {
            Some(Kind::Server(s)) => {
                let _ = validate::server_name(&s.name);
                let _ = validate::hash_key(&s.hash_key);
                let _ = v1::Transport::try_from(s.transport);
            }
            Some(Kind::Instance(i)) => {
                let parsed = if i.endpoint_url.starts_with("ws") {
                    validate::websocket_url(&i.endpoint_url)
                } else {
                    validate::endpoint_url(&i.endpoint_url)
                };
                if let Ok(url) = parsed {
                    // Accepted ⇒ its own serialization is accepted again as the same URL.
                    let again = if url.scheme().starts_with("ws") {
                        validate::websocket_url(url.as_str())
                    } else {
                        validate::endpoint_url(url.as_str())
                    };
                    assert_eq!(again.as_ref().ok(), Some(&url), "endpoint URL does not round-trip");
                    let _ = validate::redacted(&url);
                }
                let _ = validate::redacted_str(&i.endpoint_url);
            }
            Some(Kind::ApiKey(key)) => {
                let _ = credentials.add_api_key(key);
            }
            Some(Kind::TrustedIssuer(issuer)) => {
                let _ = credentials.add_issuer(issuer);
            }
            Some(Kind::Role(role)) => access.add_role(role),
            Some(Kind::RateLimit(limit)) => {
                let _ = mcpgw_proxy::limits::LimitRule::from_proto(limit);
            }
            Some(Kind::InstanceHealth(_) | Kind::Catalog(_)) | None => {}
        }
    }
    let _ = credentials.issuer_names();
}

fuzz_target!(|data: &[u8]| {
    let mut buf = data;
    let mut set = ResourceSet::default();
    // A handful of updates is enough to reach every state; more only slows each run.
    for _ in 0..8 {
        if buf.is_empty() {
            break;
        }
        let Ok(update) = RoutingUpdate::decode_length_delimited(&mut buf) else { break };
        let Ok(next) = set.apply(&update) else { continue };
        assert_eq!(next.version(), update.version);
        if comparable(&next) {
            let snapshot = next.snapshot();
            assert_eq!(ResourceSet::default().apply(&snapshot).as_ref(), Ok(&next), "snapshot round trip");
            // What the control plane would send for the same change.
            if next.version() > set.version() {
                let delta = set.delta_to(&next);
                assert_eq!(set.apply(&delta).as_ref(), Ok(&next), "delta round trip");
            }
            // Encoded and decoded again, the snapshot is the same table.
            let wire = snapshot.encode_to_vec();
            let decoded = RoutingUpdate::decode(wire.as_slice()).expect("own encoding decodes");
            assert_eq!(ResourceSet::default().apply(&decoded).as_ref(), Ok(&next), "wire round trip");
        }
        check_resources(&next);
        set = next;
    }
});
