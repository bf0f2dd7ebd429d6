//! `GET /docs`: a self-contained API explorer (HTML and a small script, compiled into the binary: no
//! asset is downloaded at build or run time) that renders `/api/v1/openapi.json` and can send requests.

use actix_web::HttpResponse;

const PAGE: &str = include_str!("docs.html");

/// `GET /docs`.
pub async fn page() -> HttpResponse {
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(PAGE)
}
