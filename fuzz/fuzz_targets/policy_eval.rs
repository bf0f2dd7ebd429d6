//! Authorization decisions (`proxy/src/policy.rs`): custom roles (`Policy::add_role`) and an API key's own
//! permissions (`Credentials::add_api_key`, which compiles them with `policy::compile`) built from the
//! input with `arbitrary`, the principal obtained the way the proxy obtains it (`authenticate` with the key),
//! then `Policy::allows` / `Policy::unrestricted` decided for a request.
//!
//! Invariants: `Glob::matches` agrees with a plain backtracking matcher written here; allowing an item on a
//! server implies allowing the server; an unrestricted caller is allowed every item; a principal of another
//! tenant is allowed nothing unless it is a platform admin.
#![no_main]

use std::time::SystemTime;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use mcpgw_proto::v1;
use mcpgw_proto::validate::api_key_digest;
use mcpgw_proxy::headers::Noted;
use mcpgw_proxy::identity::{AuthSettings, Credentials};
use mcpgw_proxy::policy::{Glob, ItemKind, PLATFORM_ADMIN, Policy};
use pingora::http::RequestHeader;

#[derive(Debug, Arbitrary)]
struct Rule {
    server: String,
    tools: Vec<String>,
    prompts: Vec<String>,
    resources: Vec<String>,
}

impl Rule {
    fn proto(&self) -> v1::PermissionRule {
        v1::PermissionRule {
            server: self.server.clone(),
            tools: self.tools.clone(),
            prompts: self.prompts.clone(),
            resources: self.resources.clone(),
        }
    }
}

#[derive(Debug, Arbitrary)]
struct Role {
    tenant: String,
    name: String,
    rules: Vec<Rule>,
}

#[derive(Debug, Arbitrary)]
struct Input {
    roles: Vec<Role>,
    key_tenant: String,
    /// Indexes into `roles` (a role the key holds by name), or a built-in role.
    key_roles: Vec<(u8, String)>,
    key_permissions: Vec<Rule>,
    /// The server's tenant (`None`: the key's own).
    server_tenant: Option<String>,
    server: String,
    item: Option<(u8, String)>,
    glob: (String, String),
}

/// `*` matches any run of characters; everything else itself (dynamic programming over both strings).
fn reference_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // row[j]: the pattern so far matches the first j characters of the text.
    let mut row = vec![false; t.len() + 1];
    row[0] = true;
    for c in &p {
        let mut next = vec![false; t.len() + 1];
        for j in 0..=t.len() {
            next[j] = if *c == '*' {
                row[j] || (j > 0 && next[j - 1])
            } else {
                j > 0 && row[j - 1] && t[j - 1] == *c
            };
        }
        row = next;
    }
    row[t.len()]
}

/// Small enough for the quadratic reference.
fn small(pattern: &str, text: &str) -> bool {
    pattern.len() <= 512 && text.len() <= 512
}

fn kind(selector: u8) -> ItemKind {
    match selector % 3 {
        0 => ItemKind::Tool,
        1 => ItemKind::Prompt,
        _ => ItemKind::Resource,
    }
}

const SECRET: &str = "mcpgw_policy";

fuzz_target!(|input: Input| {
    // The glob alone, against the reference (bounded: the reference backtracks).
    let (pattern, text) = &input.glob;
    if small(pattern, text) {
        assert_eq!(
            Glob::new(pattern).matches(text),
            reference_match(pattern, text),
            "{pattern:?} on {text:?}"
        );
    }

    let mut policy = Policy::default();
    for role in &input.roles {
        let rules: Vec<v1::PermissionRule> = role.rules.iter().map(Rule::proto).collect();
        policy.add_role(&v1::Role {
            id: format!("r-{}", role.name),
            tenant_id: role.tenant.clone(),
            name: role.name.clone(),
            rules,
        });
    }
    let key_roles: Vec<String> = input
        .key_roles
        .iter()
        .map(|(i, builtin)| match input.roles.get(usize::from(*i)) {
            Some(role) if i % 2 == 0 => role.name.clone(),
            _ => builtin.clone(),
        })
        .collect();
    let mut credentials = Credentials::default();
    credentials
        .add_api_key(&v1::ApiKey {
            id: "k".into(),
            digest: api_key_digest(SECRET).to_vec(),
            tenant_id: input.key_tenant.clone(),
            roles: key_roles.clone(),
            permissions: input.key_permissions.iter().map(Rule::proto).collect(),
            ..Default::default()
        })
        .expect("a 32-byte digest");
    let settings =
        AuthSettings { anonymous: false, public_url: url::Url::parse("https://gw.example/").expect("URL") };
    let mut req = RequestHeader::build("POST", b"/mcp/s", None).expect("request");
    req.insert_header("authorization", format!("Bearer {SECRET}")).expect("header");
    let principal = settings.authenticate(&req, Noted::ANY, &credentials, Some("s"), SystemTime::now()).expect("the key");

    let own_tenant = principal.tenant.to_string();
    let tenant = input.server_tenant.clone().unwrap_or(own_tenant.clone());
    let server = input.server.as_str();
    let item = input.item.as_ref().map(|(k, name)| (kind(*k), name.as_str()));
    let to_server = policy.allows(&principal, &tenant, server, None);
    let to_item = item.map(|item| policy.allows(&principal, &tenant, server, Some(item)));
    let unrestricted = policy.unrestricted(&principal, &tenant);
    if to_item == Some(true) {
        assert!(to_server, "an item is allowed on a server that is not");
    }
    if unrestricted {
        assert!(to_server && to_item != Some(false), "unrestricted, yet refused");
        assert!(input.key_permissions.is_empty(), "a key with permissions is never unrestricted");
    }
    let platform = key_roles.iter().any(|r| r == PLATFORM_ADMIN);
    if tenant != own_tenant && !platform {
        assert!(!to_server && !unrestricted, "another tenant's server was allowed");
    }
    // The key's own permissions narrow: what they do not allow is refused whatever the roles say.
    if !input.key_permissions.is_empty() {
        let narrow = input
            .key_permissions
            .iter()
            .any(|r| !small(&r.server, server) || reference_match(&r.server, server));
        if !narrow {
            assert!(!to_server, "allowed outside the key's permissions");
        }
    }
});
