//! actix extractor configs whose errors are mapped into the error table, so no plain-text actix error escapes.

use actix_web::error::{JsonPayloadError, PathError, PayloadError, QueryPayloadError};
use actix_web::{HttpRequest, web};
use serde_json::error::Category;

use super::{ApiError, Code};

/// JSON bodies: `application/json` (or `+json`) required, size limited to `limit` bytes.
pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .content_type_required(true)
        .error_handler(|err, _req: &HttpRequest| from_json_error(err).into())
}

/// A raw body (the YAML import), held to the same `--api-body-limit` as JSON ones, with the same error.
pub async fn read_body(mut payload: web::Payload, limit: usize) -> Result<web::Bytes, super::ApiError> {
    use futures_util::StreamExt;
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| from_json_error(JsonPayloadError::Payload(e)))?;
        if body.len() + chunk.len() > limit {
            return Err(from_json_error(JsonPayloadError::Overflow { limit }));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Path parameters: a segment that does not parse names nothing, so it is a 404.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|err: PathError, req: &HttpRequest| {
        ApiError::new(Code::RouteNotFound, format!("no route matches {}: {err}", req.path())).into()
    })
}

/// Query strings: a value of the wrong type or an unknown parameter is `invalid_query`.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err: QueryPayloadError, _req: &HttpRequest| {
        ApiError::new(Code::InvalidQuery, format!("invalid query string: {err}")).into()
    })
}

/// Maps a JSON extraction failure to its code.
pub fn from_json_error(err: JsonPayloadError) -> ApiError {
    match err {
        JsonPayloadError::OverflowKnownLength { length, limit } => ApiError::new(
            Code::PayloadTooLarge,
            format!("the body is {length} bytes; the limit is {limit} bytes"),
        ),
        JsonPayloadError::Overflow { limit } => ApiError::new(
            Code::PayloadTooLarge,
            format!("the body is larger than the limit of {limit} bytes"),
        ),
        JsonPayloadError::Payload(PayloadError::Overflow) => {
            ApiError::new(Code::PayloadTooLarge, "the body is larger than the limit")
        }
        JsonPayloadError::ContentType => ApiError::new(
            Code::InvalidContentType,
            "the body must be JSON, sent with `Content-Type: application/json`",
        ),
        JsonPayloadError::Deserialize(e) => from_serde(&e),
        JsonPayloadError::Payload(e) => {
            ApiError::new(Code::MalformedJson, format!("the body could not be read: {e}"))
        }
        other => ApiError::internal(other),
    }
}

/// Classifies a serde_json error: unknown and missing fields get their own codes; anything else is
/// malformed JSON (syntax, end of input, or a value of the wrong type).
pub fn from_serde(e: &serde_json::Error) -> ApiError {
    let text = e.to_string();
    if e.classify() == Category::Data {
        if text.starts_with("unknown field") {
            return ApiError::new(Code::UnknownField, text);
        }
        if text.starts_with("missing field") {
            return ApiError::new(Code::MissingField, text);
        }
    }
    ApiError::new(Code::MalformedJson, format!("the body is not valid JSON for this endpoint: {text}"))
}

/// `?tenant_id=` of the reads that span tenants (stats, users, export): it narrows a platform
/// administrator's read to one tenant; a tenant administrator reads its own whatever it says.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantQuery {
    pub tenant_id: Option<String>,
}

impl TenantQuery {
    /// The tenant `admin` reads (`None`: every tenant), as [`crate::auth::Admin::scope`] decides.
    pub fn scope(&self, admin: &crate::auth::Admin) -> Result<Option<String>, ApiError> {
        super::servers::list::reject_nul(&[&self.tenant_id])?;
        Ok(admin.scope(self.tenant_id.as_deref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ServerRequest;

    fn code_of(body: &str) -> Code {
        match serde_json::from_str::<ServerRequest>(body) {
            Ok(_) => panic!("{body} parsed"),
            Err(e) => from_serde(&e).code(),
        }
    }

    #[test]
    fn classifies_serde_errors() {
        assert_eq!(code_of("{"), Code::MalformedJson);
        assert_eq!(code_of(""), Code::MalformedJson);
        assert_eq!(code_of("[]"), Code::MalformedJson);
        assert_eq!(code_of(r#"{"name": 3, "endpoint_url": "http://h"}"#), Code::MalformedJson);
        assert_eq!(code_of(r#"{"name": "a", "endpoint_url": "http://h", "x": 1}"#), Code::UnknownField);
        assert_eq!(code_of(r#"{"endpoint_url": "http://h"}"#), Code::MissingField);
    }

    #[test]
    fn maps_payload_errors() {
        let too_big = JsonPayloadError::OverflowKnownLength { length: 10, limit: 5 };
        assert_eq!(from_json_error(too_big).code(), Code::PayloadTooLarge);
        assert_eq!(from_json_error(JsonPayloadError::Overflow { limit: 5 }).code(), Code::PayloadTooLarge);
        assert_eq!(from_json_error(JsonPayloadError::ContentType).code(), Code::InvalidContentType);
        let incomplete = JsonPayloadError::Payload(PayloadError::Incomplete(None));
        assert_eq!(from_json_error(incomplete).code(), Code::MalformedJson);
    }
}
