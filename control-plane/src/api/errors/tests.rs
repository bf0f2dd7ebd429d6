//! Snapshot-style tests of the error table and the exact bodies users see.

use std::collections::HashSet;

use actix_web::body::to_bytes;
use serde_json::{Value, json};

use super::*;

async fn rendered(err: ApiError) -> (u16, Option<String>, Value) {
    let response = err.error_response();
    let status = response.status().as_u16();
    let www = response.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let bytes = to_bytes(response.into_body()).await.expect("body");
    (status, www, serde_json::from_slice(&bytes).expect("json body"))
}

#[test]
fn table_is_complete_and_unique() {
    let expected = [
        ("malformed_json", "invalid_request", 400),
        ("unknown_field", "invalid_request", 400),
        ("missing_field", "invalid_request", 400),
        ("invalid_server_name", "invalid_request", 400),
        ("invalid_endpoint_url", "invalid_request", 400),
        ("invalid_transport_type", "invalid_request", 400),
        ("conflicting_fields", "invalid_request", 400),
        ("invalid_instances", "invalid_request", 400),
        ("invalid_load_balancing", "invalid_request", 400),
        ("invalid_hash_key", "invalid_request", 400),
        ("invalid_circuit_breaker", "invalid_request", 400),
        ("invalid_tenant", "invalid_request", 400),
        ("invalid_version", "invalid_request", 400),
        ("invalid_capabilities", "invalid_request", 400),
        ("invalid_health_check", "invalid_request", 400),
        ("invalid_audit_arguments", "invalid_request", 400),
        ("invalid_name_prefix", "invalid_request", 400),
        ("invalid_priority", "invalid_request", 400),
        ("invalid_command", "invalid_request", 400),
        ("stdio_not_allowed", "invalid_request", 400),
        ("endpoint_url_not_allowed", "invalid_request", 400),
        ("invalid_query", "invalid_request", 400),
        ("invalid_import", "invalid_request", 400),
        ("invalid_description", "invalid_request", 400),
        ("invalid_tags", "invalid_request", 400),
        ("invalid_api_key_name", "invalid_request", 400),
        ("invalid_role", "invalid_request", 400),
        ("invalid_permissions", "invalid_request", 400),
        ("invalid_expires_at", "invalid_request", 400),
        ("invalid_upstream_auth", "invalid_request", 400),
        ("secrets_key_not_configured", "invalid_request", 400),
        ("invalid_issuer", "invalid_request", 400),
        ("invalid_jwks_uri", "invalid_request", 400),
        ("invalid_audiences", "invalid_request", 400),
        ("invalid_algorithms", "invalid_request", 400),
        ("invalid_claims", "invalid_request", 400),
        ("issuer_url_not_allowed", "invalid_request", 400),
        ("invalid_rate_limit", "invalid_request", 400),
        ("invalid_identity_provider", "invalid_request", 400),
        ("invalid_content_type", "invalid_request", 415),
        ("payload_too_large", "invalid_request", 413),
        ("server_name_taken", "invalid_request", 409),
        ("server_not_found", "invalid_request", 404),
        ("server_changed", "invalid_request", 412),
        ("instance_not_found", "invalid_request", 404),
        ("instance_endpoint_taken", "invalid_request", 409),
        ("api_key_not_found", "invalid_request", 404),
        ("trusted_issuer_taken", "invalid_request", 409),
        ("trusted_issuer_not_found", "invalid_request", 404),
        ("rate_limit_not_found", "invalid_request", 404),
        ("role_taken", "invalid_request", 409),
        ("role_not_found", "invalid_request", 404),
        ("identity_provider_taken", "invalid_request", 409),
        ("identity_provider_not_found", "invalid_request", 404),
        ("identity_provider_unavailable", "system", 502),
        ("discovery_failed", "system", 502),
        ("jwks_fetch_failed", "system", 502),
        ("missing_authorization", "auth", 401),
        ("invalid_admin_token", "auth", 401),
        ("admin_token_not_configured", "auth", 401),
        ("invalid_api_key", "auth", 401),
        ("insufficient_permissions", "auth", 403),
        ("invalid_session", "auth", 401),
        ("csrf_token_required", "auth", 403),
        ("too_many_authentication_failures", "auth", 429),
        ("route_not_found", "invalid_request", 404),
        ("method_not_allowed", "invalid_request", 405),
        ("database_unavailable", "system", 503),
        ("internal", "internal", 500),
    ];
    let table: Vec<_> =
        Code::ALL.iter().map(|c| (c.name(), c.error_type().as_str(), c.status().as_u16())).collect();
    assert_eq!(table, expected);
    let names: HashSet<_> = Code::ALL.iter().map(|c| c.name()).collect();
    assert_eq!(names.len(), Code::ALL.len(), "code names are unique");
}

#[actix_web::test]
async fn not_found_body() {
    let (status, www, body) = rendered(ApiError::new(Code::ServerNotFound, "no server has id \"x\"")).await;
    assert_eq!(status, 404);
    assert_eq!(www, None);
    assert_eq!(
        body,
        json!({
            "message": "no server has id \"x\"",
            "code": "server_not_found",
            "type": "invalid_request",
            "link": "https://github.com/mcpgw/mcpgw/blob/main/control-plane/README.md#errors"
        })
    );
}

#[actix_web::test]
async fn auth_errors_carry_www_authenticate() {
    for code in [
        Code::MissingAuthorization,
        Code::InvalidAdminToken,
        Code::AdminTokenNotConfigured,
        Code::InvalidApiKey,
    ] {
        let (status, www, body) = rendered(ApiError::new(code, "m")).await;
        assert_eq!(status, 401);
        assert_eq!(www.as_deref(), Some("Bearer"));
        assert_eq!(body["type"], "auth");
        assert_eq!(body["code"], code.name());
    }
    // Authenticated but not allowed: 403, and nothing to retry with another scheme.
    let (status, www, body) = rendered(ApiError::new(Code::InsufficientPermissions, "m")).await;
    assert_eq!((status, www, body["type"].as_str()), (403, None, Some("auth")));
}

#[actix_web::test]
async fn internal_errors_never_echo_detail() {
    let (status, _, body) = rendered(ApiError::internal("relation \"servers\" does not exist")).await;
    assert_eq!(status, 500);
    assert_eq!(
        body,
        json!({
            "message": "an internal error occurred; see the control plane's log",
            "code": "internal",
            "type": "internal",
            "link": ERROR_DOCS_LINK
        })
    );
    let (status, _, body) = rendered(ApiError::database_unavailable("connection refused")).await;
    assert_eq!(status, 503);
    assert_eq!(body["code"], "database_unavailable");
    assert_eq!(body["type"], "system");
    assert!(!body["message"].as_str().unwrap_or_default().contains("refused"));
}
