//! Admin authentication: the bootstrap bearer token and the `AdminAuth` extractor every mutation requires.

use std::fmt;
use std::future::{Ready, ready};

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};
use sha2::{Digest, Sha256};

use crate::api::{ApiError, AppState, Code};

/// The bootstrap admin token, kept only as a SHA-256 digest so comparisons take the same time for any input.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken {
    digest: [u8; 32],
}

impl AdminToken {
    /// Keeps the digest of `token`.
    pub fn new(token: &str) -> Self {
        Self { digest: sha256(token) }
    }

    /// Whether `candidate` is the token. Both sides are hashed to fixed-length digests and every byte is
    /// compared, so neither the length nor the first differing byte of the secret leaks through timing.
    pub fn matches(&self, candidate: &str) -> bool {
        let other = sha256(candidate);
        let diff = self.digest.iter().zip(other.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(***)")
    }
}

fn sha256(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// Proof that the request carries the admin bearer token. Put it first in a handler's arguments: the
/// handler then cannot run, and no body is parsed, without it.
#[derive(Debug, Clone, Copy)]
pub struct AdminAuth(());

impl AdminAuth {
    /// Checks the `Authorization` header against the configured token.
    pub fn check(token: Option<&AdminToken>, req: &HttpRequest) -> Result<Self, ApiError> {
        let Some(token) = token else {
            return Err(ApiError::new(
                Code::AdminTokenNotConfigured,
                "mutations are disabled: this control plane was started without --admin-token",
            ));
        };
        let Some(value) = req.headers().get(header::AUTHORIZATION) else {
            return Err(ApiError::new(
                Code::MissingAuthorization,
                "this request needs an `Authorization: Bearer <admin token>` header",
            ));
        };
        let presented = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        match presented {
            Some(candidate) if token.matches(candidate) => Ok(Self(())),
            Some(_) => Err(ApiError::new(Code::InvalidAdminToken, "the admin token is not valid")),
            None => Err(ApiError::new(
                Code::InvalidAdminToken,
                "the Authorization header must use the Bearer scheme: `Authorization: Bearer <admin token>`",
            )),
        }
    }
}

impl FromRequest for AdminAuth {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let token = req.app_data::<web::Data<AppState>>().and_then(|s| s.admin_token.clone());
        ready(Self::check(token.as_ref(), req))
    }
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    #[test]
    fn token_matches_only_itself() {
        let t = AdminToken::new("s3cret");
        assert!(t.matches("s3cret"));
        assert!(!t.matches("s3cre"));
        assert!(!t.matches("s3cret "));
        assert!(!t.matches(""));
        assert_eq!(format!("{t:?}"), "AdminToken(***)");
    }

    #[test]
    fn header_rules() {
        let t = AdminToken::new("tok");
        let code =
            |req: TestRequest| AdminAuth::check(Some(&t), &req.to_http_request()).map_err(|e| e.code());
        assert!(code(TestRequest::default().insert_header(("Authorization", "Bearer tok"))).is_ok());
        assert!(code(TestRequest::default().insert_header(("Authorization", "bearer tok"))).is_ok());
        assert_eq!(code(TestRequest::default()).unwrap_err(), Code::MissingAuthorization);
        assert_eq!(
            code(TestRequest::default().insert_header(("Authorization", "Bearer nope"))).unwrap_err(),
            Code::InvalidAdminToken
        );
        assert_eq!(
            code(TestRequest::default().insert_header(("Authorization", "Basic dG9r"))).unwrap_err(),
            Code::InvalidAdminToken
        );
        let none = AdminAuth::check(None, &TestRequest::default().to_http_request()).map_err(|e| e.code());
        assert_eq!(none.unwrap_err(), Code::AdminTokenNotConfigured);
    }
}
