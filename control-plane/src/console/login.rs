//! Signing in to the console through the company IdP: `/ui/login` starts the authorization server's own
//! flow for its built-in first-party client (`mcpgw-console`: no consent page) with PKCE and a state bound
//! to this browser by a cookie; the IdP round trip, user record and code are the authorization server's;
//! `/ui/callback` checks the state, redeems the code in-process (the console's codes cannot be redeemed at
//! `/oauth/token`: no such client is registered) and opens a session for the user.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::session::{self, Holder};
use crate::api::AppState;
use crate::auth;
use crate::auth::cookies::{self, SameSite};
use crate::oauth::authorize::{CONSOLE_CLIENT_ID, console_sign_in};
use crate::oauth::keys::random_token;
use crate::oauth::{redeem_code, s256};

/// The cookie holding `<state>.<PKCE verifier>` between `/ui/login` and `/ui/callback`.
const LOGIN_COOKIE: &str = "mcpgw_console_login";
/// How long a sign-in may take at the IdP.
const LOGIN_TTL_SECS: u64 = 600;

/// Where the authorization server sends the browser back: `/ui/callback` on the origin the browser used
/// to reach the console (behind a reverse proxy, as `Forwarded` / `X-Forwarded-*` name it).
fn callback_url(req: &HttpRequest) -> String {
    let info = req.connection_info();
    format!("{}://{}/ui/callback", info.scheme(), info.host())
}

/// A small page for a sign-in that failed, with the way back.
fn failed(status: StatusCode, why: &str) -> HttpResponse {
    let escaped = why.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;");
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::CONTENT_SECURITY_POLICY, super::CSP))
        .body(format!(
            "<!doctype html><meta charset=\"utf-8\"><title>Sign-in failed</title><h1>Sign-in failed</h1>\
             <p>{escaped}</p><p><a href=\"/ui/\">Back to the console</a></p>"
        ))
}

fn login_cookie(req: &HttpRequest, value: &str, max_age: u64) -> Option<HeaderValue> {
    let secure = req.connection_info().scheme() == "https";
    // Lax: the IdP's redirect back is a cross-site top-level navigation, which Strict would strip.
    cookies::set(LOGIN_COOKIE, value, max_age, SameSite::Lax, secure)
}

/// `GET /ui/login`.
pub async fn start(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    if state.oauth.is_none() {
        return failed(
            StatusCode::NOT_FOUND,
            "Signing in with a company account needs the authorization server (--secrets-key and an identity \
             provider); sign in with the admin token or an API key instead.",
        );
    }
    let (client_state, verifier) = (random_token(24), random_token(48));
    let page = match console_sign_in(&state, callback_url(&req), client_state.clone(), s256(&verifier)).await
    {
        Ok(page) => page,
        Err(e) => return failed(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let mut response = page.into_response();
    if let Some(cookie) = login_cookie(&req, &format!("{client_state}.{verifier}"), LOGIN_TTL_SECS) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

#[derive(Deserialize)]
pub struct Back {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /ui/callback`.
pub async fn callback(state: web::Data<AppState>, req: HttpRequest, back: web::Query<Back>) -> HttpResponse {
    let headers = req.headers();
    let kept = cookies::either(headers, LOGIN_COOKIE);
    let Some((expected_state, verifier)) = kept.as_deref().and_then(|k| k.split_once('.')) else {
        return failed(
            StatusCode::BAD_REQUEST,
            "This sign-in was not started in this browser (or took over 10 minutes).",
        );
    };
    if back.state.as_deref() != Some(expected_state) {
        return failed(
            StatusCode::BAD_REQUEST,
            "The sign-in's state does not match the one this browser started.",
        );
    }
    if let Some(error) = &back.error {
        return failed(StatusCode::FORBIDDEN, back.error_description.as_deref().unwrap_or(error));
    }
    let Some(code) = back.code.as_deref() else {
        return failed(StatusCode::BAD_REQUEST, "The authorization server sent no code.");
    };
    let user_id = {
        let Ok(mut conn) = state.pool.get().await else {
            return failed(
                StatusCode::SERVICE_UNAVAILABLE,
                "The database is unavailable; try again shortly.",
            );
        };
        match redeem_code(&mut conn, CONSOLE_CLIENT_ID, code, verifier, Some(&callback_url(&req))).await {
            Ok(row) => row.user_id,
            Err(e) => return failed(StatusCode::BAD_REQUEST, &e.to_string()),
        }
    };
    let principal = match auth::user(&state, user_id).await {
        Ok(Some(principal)) => principal,
        Ok(None) => return failed(StatusCode::FORBIDDEN, "The user no longer exists."),
        Err(e) => return failed(StatusCode::SERVICE_UNAVAILABLE, e.message()),
    };
    let (_, cookie) =
        match session::open(&state, &req, "GET /ui/callback", Holder::User(user_id), &principal).await {
            Ok(opened) => opened,
            Err(e) => return failed(StatusCode::SERVICE_UNAVAILABLE, e.message()),
        };
    let mut response = HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/ui/"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish();
    response.headers_mut().append(header::SET_COOKIE, cookie);
    if let Some(clear) = login_cookie(&req, "", 0) {
        response.headers_mut().append(header::SET_COOKIE, clear);
    }
    response
}
