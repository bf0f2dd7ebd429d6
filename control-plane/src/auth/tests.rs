//! Unit tests of the parts of authentication that need no database.

use actix_web::test::TestRequest;

use super::*;

#[test]
fn token_matches_only_itself() {
    let t = SecretToken::new("s3cret");
    assert!(t.matches("s3cret"));
    assert!(!t.matches("s3cre"));
    assert!(!t.matches("s3cret "));
    assert!(!t.matches(""));
    assert_eq!(format!("{t:?}"), "SecretToken(***)");
}

#[test]
fn bearer_values() {
    assert_eq!(bearer("Bearer tok"), Some("tok"));
    assert_eq!(bearer("bearer  tok "), Some("tok"));
    assert_eq!(bearer("Basic dG9r"), None);
    assert_eq!(bearer("Bearer "), None);
    assert_eq!(bearer("tok"), None);
}

fn step(token: Option<&SecretToken>, authorization: Option<&str>) -> Step {
    let mut req = TestRequest::default();
    if let Some(value) = authorization {
        req = req.insert_header(("Authorization", value));
    }
    first_step(token, req.to_http_request().headers())
}

fn code(step: Step) -> Option<Code> {
    match step {
        Step::Done(Err(e)) => Some(e.code()),
        _ => None,
    }
}

#[test]
fn header_rules() {
    let t = SecretToken::new("tok");
    assert_eq!(step(Some(&t), Some("Bearer tok")), Step::Done(Ok(Principal::AdminToken)));
    assert_eq!(step(Some(&t), Some("bearer tok")), Step::Done(Ok(Principal::AdminToken)));
    assert_eq!(code(step(Some(&t), None)), Some(Code::MissingAuthorization));
    assert_eq!(code(step(None, None)), Some(Code::MissingAuthorization));
    assert_eq!(code(step(Some(&t), Some("Bearer nope"))), Some(Code::InvalidAdminToken));
    assert_eq!(code(step(Some(&t), Some("Basic dG9r"))), Some(Code::InvalidAdminToken));
    assert_eq!(code(step(None, Some("Bearer tok"))), Some(Code::AdminTokenNotConfigured));
}

#[test]
fn api_keys_are_looked_up_by_digest() {
    let t = SecretToken::new("tok");
    let key = "mcpgw_abc";
    assert_eq!(step(Some(&t), Some(&format!("Bearer {key}"))), Step::LookUp(api_key_digest(key)));
    // Without --admin-token, admin API keys still work.
    assert_eq!(step(None, Some(&format!("Bearer {key}"))), Step::LookUp(api_key_digest(key)));
}

#[test]
fn error_messages_never_echo_the_credential() {
    let t = SecretToken::new("tok");
    for presented in ["Bearer wrong-secret-value", "Basic wrong-secret-value"] {
        let Step::Done(Err(e)) = step(Some(&t), Some(presented)) else { panic!("refused") };
        assert!(!e.message().contains("wrong-secret-value"), "{}", e.message());
    }
}

#[test]
fn only_the_admin_role_is_admin() {
    let key = |role: &str| Principal::ApiKey {
        id: Uuid::nil(),
        name: "k".into(),
        tenant_id: "default".into(),
        role: role.into(),
    };
    assert!(Admin::check(Ok(Principal::AdminToken)).is_ok());
    assert!(Admin::check(Ok(key("admin"))).is_ok());
    for role in ["user", "server_owner", "admins"] {
        let refused = Admin::check(Ok(key(role))).expect_err("not an admin");
        assert_eq!(refused.code(), Code::InsufficientPermissions);
        assert_eq!(refused.code().status().as_u16(), 403);
    }
    let missing = ApiError::new(Code::MissingAuthorization, "m");
    assert_eq!(Admin::check(Err(missing)).expect_err("refused").code(), Code::MissingAuthorization);
}

#[test]
fn what_each_administrator_manages() {
    let user = |tenant: &str, admin: bool| Principal::User {
        id: Uuid::nil(),
        email: None,
        tenant_id: tenant.into(),
        admin,
        server_owner: false,
    };
    let key = |tenant: &str, role: &str| Principal::ApiKey {
        id: Uuid::nil(),
        name: "k".into(),
        tenant_id: tenant.into(),
        role: role.into(),
    };
    assert_eq!(user("default", true).admin_tenant(), Some(None), "the default tenant's IdP admins");
    assert_eq!(
        user("acme", true).admin_tenant(),
        Some(Some("acme")),
        "a mapped tenant's admins: theirs only"
    );
    assert_eq!(user("acme", false).admin_tenant(), None);
    assert_eq!(key("acme", PLATFORM_ADMIN_ROLE).admin_tenant(), Some(None));
    // Reads are narrowed to the tenant an administrator manages, whatever it asks.
    let tenant_admin = Admin::check(Ok(key("acme", "admin"))).expect("admin");
    assert_eq!(tenant_admin.scope(None).as_deref(), Some("acme"));
    assert_eq!(tenant_admin.scope(Some("globex")).as_deref(), Some("acme"));
    let platform = Admin::check(Ok(Principal::AdminToken)).expect("admin");
    assert_eq!((platform.scope(None), platform.scope(Some("globex")).as_deref()), (None, Some("globex")));
}

fn server(tenant: Option<&str>, owner: Option<&str>) -> crate::model::ServerRow {
    let now = Utc::now();
    crate::model::ServerRow {
        id: Uuid::new_v4(),
        name: "s".into(),
        transport_type: "streamable_http".into(),
        description: None,
        tags: vec![],
        created_at: now,
        updated_at: now,
        load_balancing: "round_robin".into(),
        hash_key: None,
        circuit_breaker: None,
        tenant_id: tenant.map(str::to_owned),
        version: None,
        capabilities: serde_json::json!({}),
        auto_discover: false,
        health_check_enabled: true,
        health_interval_ms: None,
        health_timeout_ms: None,
        healthy_threshold: None,
        unhealthy_threshold: None,
        owner: owner.map(str::to_owned),
        audit_arguments: "none".into(),
        name_prefix: "always".into(),
        priority: 0,
    }
}

fn status(outcome: Result<(), ApiError>) -> u16 {
    outcome.map_or_else(|e| e.code().status().as_u16(), |()| 200)
}

#[test]
fn a_server_owner_manages_the_servers_it_registered_in_its_tenant() {
    let key = |role: &str| Principal::ApiKey {
        id: Uuid::new_v4(),
        name: "k".into(),
        tenant_id: "acme".into(),
        role: role.into(),
    };
    let owner_key = key(SERVER_OWNER_ROLE);
    let label = owner_key.owner_label().expect("a key has a label");
    assert_eq!(label, owner_key.label());
    let owner = ServerManager::check(Ok(owner_key), "x").expect("server_owner may manage servers");
    assert_eq!((owner.tenant(), owner.owner().as_deref()), (Some("acme"), Some(label.as_str())));
    assert_eq!(status(owner.may_manage(&server(Some("acme"), Some(&label)))), 200, "its own");
    assert_eq!(status(owner.may_manage(&server(Some("acme"), None))), 403, "the tenant admin's");
    assert_eq!(status(owner.may_manage(&server(Some("acme"), Some("api-key:other")))), 403);
    assert_eq!(status(owner.may_manage(&server(Some("globex"), Some(&label)))), 404, "another tenant");
    assert_eq!(status(owner.may_manage(&server(None, None))), 404, "the default tenant's");
    assert_eq!(owner.tenant_for(None).expect("own"), "acme");
    assert_eq!(owner.tenant_for(Some("globex")).expect_err("other").code(), Code::InsufficientPermissions);

    let admin = ServerManager::check(Ok(key("admin")), "x").expect("an admin");
    assert_eq!(status(admin.may_manage(&server(Some("acme"), Some(&label)))), 200, "its owner's too");
    assert_eq!(status(admin.may_manage(&server(Some("globex"), None))), 404);
    let platform = ServerManager::check(Ok(Principal::AdminToken), "x").expect("the admin token");
    assert_eq!((platform.owner(), status(platform.may_manage(&server(Some("globex"), None)))), (None, 200));

    for role in ["user", "custom", "platform_admins"] {
        let refused = ServerManager::check(Ok(key(role)), "x").expect_err("no right on servers");
        assert_eq!(refused.code(), Code::InsufficientPermissions, "{role}");
    }
    // The role does not widen anything else: every other admin route still needs `admin`.
    assert!(Admin::check(Ok(key(SERVER_OWNER_ROLE))).is_err());
}

#[test]
fn a_signed_in_user_holds_server_owner_from_its_idp_roles() {
    let user = |admin: bool, server_owner: bool| Principal::User {
        id: Uuid::nil(),
        email: None,
        tenant_id: "acme".into(),
        admin,
        server_owner,
    };
    let owner = ServerManager::check(Ok(user(false, true)), "x").expect("a server owner");
    assert_eq!(owner.owner().as_deref(), Some("user:00000000-0000-0000-0000-000000000000"));
    assert_eq!(status(owner.may_manage(&server(Some("acme"), owner.owner().as_deref()))), 200);
    assert_eq!(status(owner.may_manage(&server(Some("acme"), None))), 403);
    let refused = ServerManager::check(Ok(user(false, false)), "x").expect_err("neither");
    assert_eq!(refused.code(), Code::InsufficientPermissions);
    let admin = ServerManager::check(Ok(user(true, true)), "x").expect("an administrator");
    assert_eq!(status(admin.may_manage(&server(Some("acme"), None))), 200, "an administrator first");
}
