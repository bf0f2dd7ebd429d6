//! The registry import (`POST /api/v1/admin/import`, `mcpgw-control-plane import`): the YAML document
//! parsed as `RegistryDoc`, names checked for repeats, and each server validated into a `ServerSpec` by
//! `ServerRequest::validate`, as the handler does before anything touches the database (the SSRF and
//! tenant checks that follow need the running control plane).
//!
//! Invariants: the canonical form of a validated server (`ServerRequest::from_spec`, what export writes
//! and what import compares against to tell "unchanged") validates again, to a spec with the same canonical
//! form; written as YAML by export and read back, it is the same request.
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use mcpgw_control_plane::api::ServerRequest;
use mcpgw_control_plane::api::bulk::RegistryDoc;

fuzz_target!(|data: &[u8]| {
    let Ok(doc) = serde_yaml::from_slice::<RegistryDoc>(data) else { return };
    let mut names = HashSet::new();
    let mut canonical = Vec::new();
    for request in doc.servers {
        if !names.insert(request.name.clone()) {
            return; // "listed twice": the whole import is refused.
        }
        let Ok(spec) = request.validate() else { return };
        let form = ServerRequest::from_spec(&spec);
        let again = form.clone().validate().unwrap_or_else(|e| {
            panic!("the canonical form of a valid server is refused: {}\n{form:#?}", e.message())
        });
        assert_eq!(ServerRequest::from_spec(&again), form, "canonical form is not stable");
        canonical.push(form);
    }
    // Export then import: the same document.
    let exported = RegistryDoc { servers: canonical };
    let yaml = serde_yaml::to_string(&exported).expect("a registry serializes");
    let read: RegistryDoc =
        serde_yaml::from_str(&yaml).unwrap_or_else(|e| panic!("export is not importable: {e}\n{yaml}"));
    assert_eq!(read, exported, "export/import round trip");
});
