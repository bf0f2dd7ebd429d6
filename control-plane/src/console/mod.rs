//! The web console under `/ui`: three files compiled into the binary (nothing fetched at build or run time,
//! nothing from a CDN), served with a strict Content-Security-Policy and never frameable. It is a client of
//! the REST API like any other: every figure it shows and every change it makes is an `/api/v1` request,
//! authenticated by its session (`session`) and held to the same permissions and tenant rules. Sign-in
//! with the bootstrap admin token or an API key (`POST /ui/session`), or through the company IdP via the
//! authorization server (`login`).

pub mod login;
pub mod session;

use std::sync::OnceLock;

use actix_web::http::header::{self, HeaderValue};
use actix_web::web::{self, ServiceConfig};
use actix_web::{HttpRequest, HttpResponse};
use sha2::{Digest, Sha256};

/// The console's Content-Security-Policy: its own script, style and API only; no inline code, no frames.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// One embedded file.
struct Asset {
    body: &'static [u8],
    content_type: &'static str,
}

const ASSETS: &[(&str, Asset)] = &[
    ("", Asset { body: include_bytes!("../../ui/index.html"), content_type: "text/html; charset=utf-8" }),
    (
        "app.js",
        Asset { body: include_bytes!("../../ui/app.js"), content_type: "text/javascript; charset=utf-8" },
    ),
    ("app.css", Asset { body: include_bytes!("../../ui/app.css"), content_type: "text/css; charset=utf-8" }),
];

/// Each asset's `ETag` (its contents' SHA-256), computed once.
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|(_, a)| {
                let hash = Sha256::digest(a.body);
                format!("\"{}\"", hash[..12].iter().map(|b| format!("{b:02x}")).collect::<String>())
            })
            .collect()
    })
}

/// The headers every console response carries.
fn secure_headers(response: &mut HttpResponse) {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::HeaderName::from_static("cross-origin-opener-policy"), "same-origin"),
        (header::HeaderName::from_static("cross-origin-resource-policy"), "same-origin"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

/// `GET /ui/{file}`: an embedded file, revalidated by its `ETag` on every use (a new binary serves new
/// files at once).
async fn asset(req: HttpRequest, file: web::Path<String>) -> HttpResponse {
    let Some(i) = ASSETS.iter().position(|(name, _)| *name == file.as_str()) else {
        let mut response =
            HttpResponse::NotFound().content_type("text/plain; charset=utf-8").body("no such file");
        secure_headers(&mut response);
        return response;
    };
    let (asset, etag) = (&ASSETS[i].1, &etags()[i]);
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if fresh {
        HttpResponse::NotModified().finish()
    } else {
        HttpResponse::Ok().content_type(asset.content_type).body(asset.body)
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, HeaderValue::from_str(etag).expect("hex"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    secure_headers(&mut response);
    response
}

/// `GET /ui`: to `/ui/`, so the page's relative references resolve under it.
async fn to_slash() -> HttpResponse {
    HttpResponse::PermanentRedirect().insert_header((header::LOCATION, "/ui/")).finish()
}

/// The console's routes (registered before the REST API's fallback).
pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(web::resource("/ui").get(to_slash))
        .service(web::resource("/ui/session").get(session::get).post(session::create).delete(session::delete))
        .service(web::resource("/ui/login").get(login::start))
        .service(web::resource("/ui/callback").get(login::callback))
        .service(web::resource("/ui/{file:.*}").get(asset));
}
