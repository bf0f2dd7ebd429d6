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
