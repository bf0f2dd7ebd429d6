//! The one table of REST error codes (code → machine name, type, HTTP status) and the `ApiError` built on it.

use std::fmt;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// Where every error body points for an explanation of its code.
pub const ERROR_DOCS_LINK: &str = "https://github.com/mcpgw/mcpgw/blob/main/control-plane/README.md#errors";

/// Broad class of an error, for clients that branch on kind rather than code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    /// The request itself is wrong; retrying it unchanged fails again.
    InvalidRequest,
    /// The caller is not authenticated (401), or not allowed (403).
    Auth,
    /// A dependency (the database) is unavailable; retry later.
    System,
    /// A bug or an unexpected failure; details are in the control plane's log.
    Internal,
}

impl ErrorType {
    /// The name used in error bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::Auth => "auth",
            Self::System => "system",
            Self::Internal => "internal",
        }
    }
}

macro_rules! make_error_codes {
    ($($(#[$doc:meta])* $variant:ident => ($name:literal, $ty:ident, $status:ident);)*) => {
        /// Every error the REST API can answer with. Adding a variant is adding a row: name, type, status.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $($(#[$doc])* $variant,)*
        }

        impl Code {
            /// Every code, in table order (the README table and the tests walk it).
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The stable machine-readable name, the `code` field of the body.
            pub fn name(self) -> &'static str {
                match self { $(Code::$variant => $name,)* }
            }

            /// The `type` field of the body.
            pub fn error_type(self) -> ErrorType {
                match self { $(Code::$variant => ErrorType::$ty,)* }
            }

            /// The HTTP status answered with.
            pub fn status(self) -> StatusCode {
                match self { $(Code::$variant => StatusCode::$status,)* }
            }
        }
    };
}

make_error_codes! {
    /// The body is not valid JSON, or a field has the wrong JSON type.
    MalformedJson => ("malformed_json", InvalidRequest, BAD_REQUEST);
    /// The body has a field the endpoint does not know.
    UnknownField => ("unknown_field", InvalidRequest, BAD_REQUEST);
    /// The body lacks a required field.
    MissingField => ("missing_field", InvalidRequest, BAD_REQUEST);
    /// `name` does not match `[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?`.
    InvalidServerName => ("invalid_server_name", InvalidRequest, BAD_REQUEST);
    /// `endpoint_url` is not an absolute http(s) URL (ws(s) for a WebSocket server) with a host, or is
    /// given to a stdio server.
    InvalidEndpointUrl => ("invalid_endpoint_url", InvalidRequest, BAD_REQUEST);
    /// `transport_type` is not `streamable_http`, `http`, `sse`, `websocket` or `stdio`.
    InvalidTransportType => ("invalid_transport_type", InvalidRequest, BAD_REQUEST);
    /// Both `endpoint_url` and `instances` were given; give one.
    ConflictingFields => ("conflicting_fields", InvalidRequest, BAD_REQUEST);
    /// `instances` is too long, lists an endpoint twice, or has a bad weight or metadata.
    InvalidInstances => ("invalid_instances", InvalidRequest, BAD_REQUEST);
    /// `load_balancing` is not one of the policies.
    InvalidLoadBalancing => ("invalid_load_balancing", InvalidRequest, BAD_REQUEST);
    /// `hash_key` is not `client_ip` or `header:<name>`.
    InvalidHashKey => ("invalid_hash_key", InvalidRequest, BAD_REQUEST);
    /// `circuit_breaker` has an out-of-range ratio or a bad duration.
    InvalidCircuitBreaker => ("invalid_circuit_breaker", InvalidRequest, BAD_REQUEST);
    /// `tenant_id` is empty after trimming, too long, or has characters outside `[A-Za-z0-9._-]`.
    InvalidTenant => ("invalid_tenant", InvalidRequest, BAD_REQUEST);
    /// `version` is too long or has control characters.
    InvalidVersion => ("invalid_version", InvalidRequest, BAD_REQUEST);
    /// `capabilities` is too large.
    InvalidCapabilities => ("invalid_capabilities", InvalidRequest, BAD_REQUEST);
    /// `health_check` has a bad duration or threshold.
    InvalidHealthCheck => ("invalid_health_check", InvalidRequest, BAD_REQUEST);
    /// `audit_arguments` is not `none`, `redacted` or `hashed`.
    InvalidAuditArguments => ("invalid_audit_arguments", InvalidRequest, BAD_REQUEST);
    /// `name_prefix` is not `always`, `on_conflict` or `never`.
    InvalidNamePrefix => ("invalid_name_prefix", InvalidRequest, BAD_REQUEST);
    /// `priority` is not an integer from -1000 to 1000.
    InvalidPriority => ("invalid_priority", InvalidRequest, BAD_REQUEST);
    /// A stdio server's `command` is missing or not valid: an empty program, a relative path, NUL
    /// characters, too many or too long arguments or environment entries, a bad environment name, a
    /// relative working directory, or a `secret_env` name without a value where none is stored to keep.
    InvalidCommand => ("invalid_command", InvalidRequest, BAD_REQUEST);
    /// A stdio server's program is not in the control plane's `--stdio-programs` (empty by default: every
    /// stdio server is refused).
    StdioNotAllowed => ("stdio_not_allowed", InvalidRequest, BAD_REQUEST);
    /// The endpoint URL points where the control plane must not connect (cloud metadata, link-local,
    /// `--ssrf-deny`).
    EndpointUrlNotAllowed => ("endpoint_url_not_allowed", InvalidRequest, BAD_REQUEST);
    /// A query parameter is malformed or out of range.
    InvalidQuery => ("invalid_query", InvalidRequest, BAD_REQUEST);
    /// The import document is not valid YAML of the expected shape, or lists a name twice.
    InvalidImport => ("invalid_import", InvalidRequest, BAD_REQUEST);
    /// `description` is too long.
    InvalidDescription => ("invalid_description", InvalidRequest, BAD_REQUEST);
    /// `tags` has an empty, too long or duplicated tag, or too many tags.
    InvalidTags => ("invalid_tags", InvalidRequest, BAD_REQUEST);
    /// An API key's `name` is empty, longer than 100 characters, or has control characters.
    InvalidApiKeyName => ("invalid_api_key_name", InvalidRequest, BAD_REQUEST);
    /// `role` is not `admin`, `server_owner`, `user` or a custom role name of `[a-z0-9_-]{1,64}`.
    InvalidRole => ("invalid_role", InvalidRequest, BAD_REQUEST);
    /// `permissions` has an empty or too long server or pattern, or too many entries.
    InvalidPermissions => ("invalid_permissions", InvalidRequest, BAD_REQUEST);
    /// `expires_at` is not an RFC 3339 date-time in the future.
    InvalidExpiresAt => ("invalid_expires_at", InvalidRequest, BAD_REQUEST);
    /// `upstream_auth` has an unknown type, a bad or reserved header name, a bad value, or no value where
    /// none is stored to keep.
    InvalidUpstreamAuth => ("invalid_upstream_auth", InvalidRequest, BAD_REQUEST);
    /// A new upstream credential, but the control plane was started without `--secrets-key`.
    SecretsKeyNotConfigured => ("secrets_key_not_configured", InvalidRequest, BAD_REQUEST);
    /// A trusted issuer's `issuer` is not an https URL (http only on loopback), or has a query or fragment.
    InvalidIssuer => ("invalid_issuer", InvalidRequest, BAD_REQUEST);
    /// `jwks_uri` is not an https URL (http only on loopback).
    InvalidJwksUri => ("invalid_jwks_uri", InvalidRequest, BAD_REQUEST);
    /// `audiences` has an empty, too long or duplicated entry, or too many.
    InvalidAudiences => ("invalid_audiences", InvalidRequest, BAD_REQUEST);
    /// `algorithms` is empty, duplicated, or names `none`, an HMAC or an unknown algorithm.
    InvalidAlgorithms => ("invalid_algorithms", InvalidRequest, BAD_REQUEST);
    /// A claim name in `claims` is empty, too long or has control characters.
    InvalidClaims => ("invalid_claims", InvalidRequest, BAD_REQUEST);
    /// The issuer's metadata or JWKS URL points where the control plane must not connect.
    IssuerUrlNotAllowed => ("issuer_url_not_allowed", InvalidRequest, BAD_REQUEST);
    /// A rate limit's scope, match, requests, per or burst is not valid (or `global`, not available yet).
    InvalidRateLimit => ("invalid_rate_limit", InvalidRequest, BAD_REQUEST);
    /// An identity provider's `name`, `issuer`, `client_id`, `client_secret` or `scopes` is not valid.
    InvalidIdentityProvider => ("invalid_identity_provider", InvalidRequest, BAD_REQUEST);
    /// The request body is not `application/json`.
    InvalidContentType => ("invalid_content_type", InvalidRequest, UNSUPPORTED_MEDIA_TYPE);
    /// The request body is larger than `--api-body-limit`.
    PayloadTooLarge => ("payload_too_large", InvalidRequest, PAYLOAD_TOO_LARGE);
    /// Another server already has this name.
    ServerNameTaken => ("server_name_taken", InvalidRequest, CONFLICT);
    /// No server has this id.
    ServerNotFound => ("server_not_found", InvalidRequest, NOT_FOUND);
    /// The server changed since the version the request was based on (`If-Match`, or during a PATCH).
    ServerChanged => ("server_changed", InvalidRequest, PRECONDITION_FAILED);
    /// The server has no instance with this id.
    InstanceNotFound => ("instance_not_found", InvalidRequest, NOT_FOUND);
    /// The server already has an instance at this endpoint URL.
    InstanceEndpointTaken => ("instance_endpoint_taken", InvalidRequest, CONFLICT);
    /// No API key has this id.
    ApiKeyNotFound => ("api_key_not_found", InvalidRequest, NOT_FOUND);
    /// Another trusted issuer has this `issuer`.
    TrustedIssuerTaken => ("trusted_issuer_taken", InvalidRequest, CONFLICT);
    /// No trusted issuer has this id.
    TrustedIssuerNotFound => ("trusted_issuer_not_found", InvalidRequest, NOT_FOUND);
    /// No rate limit has this id.
    RateLimitNotFound => ("rate_limit_not_found", InvalidRequest, NOT_FOUND);
    /// The tenant already has a role of this name.
    RoleTaken => ("role_taken", InvalidRequest, CONFLICT);
    /// No role has this id.
    RoleNotFound => ("role_not_found", InvalidRequest, NOT_FOUND);
    /// Another identity provider has this name.
    IdentityProviderTaken => ("identity_provider_taken", InvalidRequest, CONFLICT);
    /// No identity provider has this id.
    IdentityProviderNotFound => ("identity_provider_not_found", InvalidRequest, NOT_FOUND);
    /// A new identity provider's discovery metadata or keys could not be fetched or used (nothing was
    /// written), or the authorization server is off (no `--secrets-key`).
    IdentityProviderUnavailable => ("identity_provider_unavailable", System, BAD_GATEWAY);
    /// The server could not be reached or did not answer as an MCP server (detail in the message).
    DiscoveryFailed => ("discovery_failed", System, BAD_GATEWAY);
    /// A trusted issuer's metadata or JWKS could not be fetched, or is not usable (detail in the message;
    /// nothing was written).
    JwksFetchFailed => ("jwks_fetch_failed", System, BAD_GATEWAY);
    /// An `/api/v1` request came without an `Authorization` header.
    MissingAuthorization => ("missing_authorization", Auth, UNAUTHORIZED);
    /// The bearer token is wrong, or the header does not use the Bearer scheme.
    InvalidAdminToken => ("invalid_admin_token", Auth, UNAUTHORIZED);
    /// The control plane runs without `--admin-token` and the credential is not an API key.
    AdminTokenNotConfigured => ("admin_token_not_configured", Auth, UNAUTHORIZED);
    /// The bearer token looks like an API key (`mcpgw_…`) but none is valid: unknown, revoked or expired.
    InvalidApiKey => ("invalid_api_key", Auth, UNAUTHORIZED);
    /// A valid API key whose role may not do this (the admin API needs the `admin` role).
    InsufficientPermissions => ("insufficient_permissions", Auth, FORBIDDEN);
    /// A console request's session cookie names no session: never opened, signed out, expired, or the key,
    /// user or admin token it was opened with is gone.
    InvalidSession => ("invalid_session", Auth, UNAUTHORIZED);
    /// A console request carries the session cookie without the session's `X-CSRF-Token` header.
    CsrfTokenRequired => ("csrf_token_required", Auth, FORBIDDEN);
    /// Too many refused credentials from this address: refused without checking for a while.
    TooManyAuthenticationFailures => ("too_many_authentication_failures", Auth, TOO_MANY_REQUESTS);
    /// No route has this path.
    RouteNotFound => ("route_not_found", InvalidRequest, NOT_FOUND);
    /// The path exists but not with this method.
    MethodNotAllowed => ("method_not_allowed", InvalidRequest, METHOD_NOT_ALLOWED);
    /// PostgreSQL cannot be reached right now.
    DatabaseUnavailable => ("database_unavailable", System, SERVICE_UNAVAILABLE);
    /// An unexpected failure; the detail is in the log, never in the body.
    Internal => ("internal", Internal, INTERNAL_SERVER_ERROR);
}

/// An error answered by the REST API: a code from the table and a message for humans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    code: Code,
    message: String,
}

/// The stable JSON body of every error.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody<'a> {
    pub message: &'a str,
    pub code: &'static str,
    #[serde(rename = "type")]
    pub error_type: &'static str,
    pub link: &'static str,
}

impl ApiError {
    /// An error with `code` and a message the caller can act on.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    /// An internal error: `detail` goes to the log, the caller sees only a generic message.
    pub fn internal(detail: impl fmt::Display) -> Self {
        tracing::error!(error = %detail, "Request failed with an internal error.");
        Self::new(Code::Internal, "an internal error occurred; see the control plane's log")
    }

    /// The database could not be reached; `detail` goes to the log.
    pub fn database_unavailable(detail: impl fmt::Display) -> Self {
        tracing::warn!(error = %detail, "The database is unavailable.");
        Self::new(Code::DatabaseUnavailable, "the database is unavailable; retry later")
    }

    pub fn code(&self) -> Code {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// The body as it is sent.
    pub fn body(&self) -> ErrorBody<'_> {
        ErrorBody {
            message: &self.message,
            code: self.code.name(),
            error_type: self.code.error_type().as_str(),
            link: ERROR_DOCS_LINK,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.name(), self.message)
    }
}

impl std::error::Error for ApiError {}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        // RFC 6750: a 401 names the scheme the caller should authenticate with.
        if self.code.status() == StatusCode::UNAUTHORIZED {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        if self.code == Code::TooManyAuthenticationFailures {
            response.insert_header((header::RETRY_AFTER, crate::auth::FAILURE_WINDOW.as_secs().to_string()));
        }
        response.json(self.body())
    }
}

#[cfg(test)]
mod tests;
