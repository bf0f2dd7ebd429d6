//! `/api/v1/trusted-issuers`: register, list, read, change (JSON merge patch) and remove the OAuth / OIDC
//! issuers whose JWT access tokens the proxies accept. A registration is checked completely before anything
//! is written: its fields, then its metadata and JWKS, fetched through the SSRF guard. Every change is
//! published to the proxies right after its commit; the leader refreshes each JWKS afterwards (`jwks`).

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use serde_json::Value;
use uuid::Uuid;

use super::audited::{Audit, Target, audited};
use super::servers::publish;
use super::{ApiError, AppState, Code};
use crate::auth::PlatformAdmin;
use crate::db::store::{self, trusted_issuers::Fetched};
use crate::jwks::FetchError;
use crate::model::{TrustedIssuerSpec, TrustedIssuerView};

mod request;

pub use request::{ClaimsRequest, TrustedIssuerRequest};

fn not_found(id: &str) -> ApiError {
    ApiError::new(Code::TrustedIssuerNotFound, format!("no trusted issuer has id {id:?}"))
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| not_found(raw))
}

/// Trusted issuers concern every tenant: their records go to the caller's.
fn target(id: Uuid) -> Target {
    Target::new("trusted-issuer", id, None)
}

fn from_db(issuer: &str) -> impl FnOnce(diesel::result::Error) -> ApiError + '_ {
    move |e| {
        if store::trusted_issuers::is_taken(&e) {
            ApiError::new(Code::TrustedIssuerTaken, format!("the issuer {issuer:?} is already trusted"))
        } else {
            ApiError::internal(e)
        }
    }
}

/// Resolves where the JWKS is (given, or read from the issuer's metadata) and fetches it: what a
/// registration is checked against before it is stored.
async fn fetch(state: &AppState, spec: &TrustedIssuerSpec) -> Result<Fetched, ApiError> {
    let failed = |e: FetchError| match e {
        FetchError::Refused { .. } => ApiError::new(Code::IssuerUrlNotAllowed, format!("not allowed: {e}")),
        e => ApiError::new(Code::JwksFetchFailed, format!("the issuer's keys could not be fetched: {e}")),
    };
    let (jwks_uri, discovered) = match &spec.jwks_uri {
        Some(uri) => (uri.clone(), false),
        None => (state.jwks.discover(&spec.issuer).await.map_err(failed)?, true),
    };
    let jwks = state.jwks.jwks(&jwks_uri).await.map_err(failed)?;
    Ok(Fetched { jwks_uri, discovered, jwks })
}

/// `POST /api/v1/trusted-issuers`: 201 with the issuer and the keys fetched for it.
pub async fn create(
    admin: PlatformAdmin,
    state: web::Data<AppState>,
    body: web::Json<TrustedIssuerRequest>,
) -> Result<HttpResponse, ApiError> {
    let spec = body.into_inner().validate()?;
    let fetched = fetch(&state, &spec).await?;
    let mut conn = state.conn().await?;
    let (row, version) = audited(&mut conn, async |conn| {
        let (row, version) =
            store::trusted_issuers::create(conn, &spec, &fetched).await.map_err(from_db(&spec.issuer))?;
        let audit = Audit::created(target(row.id), &row.view());
        Ok(((row, version), audit))
    })
    .await?;
    drop(conn);
    tracing::info!(id = %row.id, issuer = %row.issuer, jwks_uri = %row.jwks_uri, by = %admin.principal().label(),
        version, "Trusted a new issuer.");
    publish(&state).await;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/v1/trusted-issuers/{}", row.id)))
        .json(row.view()))
}

/// `GET /api/v1/trusted-issuers`: every issuer, oldest first.
pub async fn list(_admin: PlatformAdmin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut conn = state.conn().await?;
    let rows = store::trusted_issuers::list(&mut conn).await.map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(rows.iter().map(|r| r.view()).collect::<Vec<TrustedIssuerView>>()))
}

/// `GET /api/v1/trusted-issuers/{id}`: the registration, its keys and the last refresh's outcome.
pub async fn get(
    _admin: PlatformAdmin,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let uuid = parse_id(&id)?;
    let mut conn = state.conn().await?;
    let row = store::trusted_issuers::get(&mut conn, uuid).await.map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(row.ok_or_else(|| not_found(&id))?.view()))
}

/// RFC 7396: objects merge recursively, `null` removes a member, anything else replaces.
fn merge_patch(target: &mut Value, patch: Value) {
    let Value::Object(patch) = patch else {
        *target = patch;
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(map) = target {
        for (key, value) in patch {
            if value.is_null() {
                map.remove(&key);
            } else {
                merge_patch(map.entry(key).or_insert(Value::Null), value);
            }
        }
    }
}

/// `PATCH /api/v1/trusted-issuers/{id}`: a JSON merge patch of the registration (`null` resets a field to
/// its default). A changed `issuer` or `jwks_uri` is fetched again before anything is written.
pub async fn patch(
    admin: PlatformAdmin,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let uuid = parse_id(&id)?;
    let patch = body.into_inner();
    if !patch.is_object() {
        return Err(ApiError::new(Code::MalformedJson, "a PATCH body must be a JSON object"));
    }
    let mut conn = state.conn().await?;
    let row = store::trusted_issuers::get(&mut conn, uuid)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| not_found(&id))?;
    drop(conn);
    let stored = row.spec();
    let mut merged =
        serde_json::to_value(TrustedIssuerRequest::from_spec(&stored)).map_err(ApiError::internal)?;
    merge_patch(&mut merged, patch);
    let request: TrustedIssuerRequest =
        serde_json::from_value(merged).map_err(|e| super::extract::from_serde(&e))?;
    let spec = request.validate()?;
    let fetched = if spec.issuer != stored.issuer || spec.jwks_uri != stored.jwks_uri {
        Some(fetch(&state, &spec).await?)
    } else {
        None
    };
    let mut conn = state.conn().await?;
    let (row, version) = audited(&mut conn, async |conn| {
        let before = store::trusted_issuers::get(conn, uuid)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| not_found(&id))?
            .view();
        let (row, version) = store::trusted_issuers::update(conn, uuid, &spec, fetched.as_ref())
            .await
            .map_err(from_db(&spec.issuer))?
            .ok_or_else(|| not_found(&id))?;
        let audit = Audit::updated(target(uuid), &before, &row.view());
        Ok(((row, version), audit))
    })
    .await?;
    drop(conn);
    tracing::info!(id = %row.id, issuer = %row.issuer, refetched = fetched.is_some(), by = %admin.principal().label(),
        version, "Changed a trusted issuer.");
    publish(&state).await;
    Ok(HttpResponse::Ok().json(row.view()))
}

/// `DELETE /api/v1/trusted-issuers/{id}`: 204; its tokens are refused by every proxy once the change is
/// published (before this answer on this replica's streams).
pub async fn delete(
    admin: PlatformAdmin,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let uuid = parse_id(&id)?;
    let mut conn = state.conn().await?;
    let version = audited(&mut conn, async |conn| {
        let before = store::trusted_issuers::get(conn, uuid)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| not_found(&id))?
            .view();
        let version = store::trusted_issuers::delete(conn, uuid)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| not_found(&id))?;
        Ok((version, Audit::deleted(target(uuid), &before)))
    })
    .await?;
    drop(conn);
    tracing::info!(id = %uuid, by = %admin.principal().label(), version, "Removed a trusted issuer.");
    publish(&state).await;
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::merge_patch;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut doc =
            json!({"issuer": "a", "claims": {"subject": "sub", "tenant": "tid"}, "audiences": ["x"]});
        merge_patch(
            &mut doc,
            json!({"claims": {"tenant": null, "roles": "r"}, "audiences": ["y"], "jwks_uri": null}),
        );
        assert_eq!(
            doc,
            json!({"issuer": "a", "claims": {"subject": "sub", "roles": "r"}, "audiences": ["y"]})
        );
    }
}
