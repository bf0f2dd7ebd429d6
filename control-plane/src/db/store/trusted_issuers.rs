//! Trusted issuer queries. Proxies hold every issuer with its JWKS in their routing table, so a registration
//! change and a changed JWKS bump `routing_state.version` in the same transaction; a refresh that finds the
//! same JWKS (or fails) bumps nothing.

use diesel::PgExpressionMethods;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde_json::Value;
use uuid::Uuid;

use super::bump_version;
use crate::db::schema::trusted_issuers as ti;
use crate::model::{TrustedIssuerRow, TrustedIssuerSpec};

/// Name of the unique constraint on `trusted_issuers.issuer`.
const ISSUER_CONSTRAINT: &str = "trusted_issuers_issuer_key";

/// Whether `error` says another issuer already has this `issuer` string.
pub fn is_taken(error: &DieselError) -> bool {
    matches!(error, DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info)
        if info.constraint_name() == Some(ISSUER_CONSTRAINT))
}

/// Where a registration's JWKS comes from and what it was when the registration was checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Fetched {
    pub jwks_uri: String,
    pub discovered: bool,
    pub jwks: Value,
}

#[derive(AsChangeset)]
#[diesel(table_name = ti, treat_none_as_null = true)]
struct IssuerValues<'a> {
    issuer: &'a str,
    audiences: &'a [String],
    algorithms: &'a [String],
    subject_claim: &'a str,
    tenant_claim: Option<&'a str>,
    roles_claim: &'a str,
    groups_claim: &'a str,
    default_tenant: &'a str,
}

fn values(spec: &TrustedIssuerSpec) -> IssuerValues<'_> {
    IssuerValues {
        issuer: &spec.issuer,
        audiences: &spec.audiences,
        algorithms: &spec.algorithms,
        subject_claim: &spec.subject_claim,
        tenant_claim: spec.tenant_claim.as_deref(),
        roles_claim: &spec.roles_claim,
        groups_claim: &spec.groups_claim,
        default_tenant: &spec.default_tenant,
    }
}

/// Stores a registration with the JWKS fetched for it; returns the row and the new routing version.
pub async fn create(
    conn: &mut AsyncPgConnection,
    spec: &TrustedIssuerSpec,
    fetched: &Fetched,
) -> QueryResult<(TrustedIssuerRow, i64)> {
    let (spec, fetched) = (spec.clone(), fetched.clone());
    conn.transaction(async |conn| {
        let row = diesel::insert_into(ti::table)
            .values((
                ti::id.eq(Uuid::new_v4()),
                ti::issuer.eq(&spec.issuer),
                ti::jwks_uri.eq(&fetched.jwks_uri),
                ti::jwks_uri_discovered.eq(fetched.discovered),
                ti::audiences.eq(&spec.audiences),
                ti::algorithms.eq(&spec.algorithms),
                ti::subject_claim.eq(&spec.subject_claim),
                ti::tenant_claim.eq(spec.tenant_claim.as_deref()),
                ti::roles_claim.eq(&spec.roles_claim),
                ti::groups_claim.eq(&spec.groups_claim),
                ti::default_tenant.eq(&spec.default_tenant),
                ti::jwks.eq(&fetched.jwks),
                ti::jwks_fetched_at.eq(diesel::dsl::now),
                ti::jwks_changed_at.eq(diesel::dsl::now),
                ti::last_attempt_at.eq(diesel::dsl::now),
            ))
            .returning(TrustedIssuerRow::as_returning())
            .get_result(conn)
            .await?;
        Ok((row, bump_version(conn).await?))
    })
    .await
}

/// Replaces a registration; with `fetched`, its JWKS source and document too (the issuer or `jwks_uri`
/// changed). `None` when no issuer has this id (nothing written).
pub async fn update(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    spec: &TrustedIssuerSpec,
    fetched: Option<&Fetched>,
) -> QueryResult<Option<(TrustedIssuerRow, i64)>> {
    let (spec, fetched) = (spec.clone(), fetched.cloned());
    conn.transaction(async |conn| {
        let updated = diesel::update(ti::table.find(id))
            .set((values(&spec), ti::updated_at.eq(diesel::dsl::now)))
            .execute(conn)
            .await?;
        if updated == 0 {
            return Ok(None);
        }
        if let Some(fetched) = &fetched {
            diesel::update(ti::table.find(id))
                .set((
                    ti::jwks_uri.eq(&fetched.jwks_uri),
                    ti::jwks_uri_discovered.eq(fetched.discovered),
                    ti::jwks.eq(&fetched.jwks),
                    ti::jwks_fetched_at.eq(diesel::dsl::now),
                    ti::jwks_changed_at.eq(diesel::dsl::now),
                    ti::last_attempt_at.eq(diesel::dsl::now),
                    ti::last_error.eq(None::<String>),
                ))
                .execute(conn)
                .await?;
        }
        let row = ti::table.find(id).select(TrustedIssuerRow::as_select()).first(conn).await?;
        Ok(Some((row, bump_version(conn).await?)))
    })
    .await
}

/// Every issuer, oldest first.
pub async fn list(conn: &mut AsyncPgConnection) -> QueryResult<Vec<TrustedIssuerRow>> {
    ti::table
        .select(TrustedIssuerRow::as_select())
        .order((ti::created_at.asc(), ti::id.asc()))
        .load(conn)
        .await
}

/// One issuer, if it exists.
pub async fn get(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Option<TrustedIssuerRow>> {
    ti::table.find(id).select(TrustedIssuerRow::as_select()).first(conn).await.optional()
}

/// Deletes an issuer; the new routing version, or `None` when no issuer has this id.
pub async fn delete(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Option<i64>> {
    conn.transaction(async |conn| {
        if diesel::delete(ti::table.find(id)).execute(conn).await? == 0 {
            return Ok(None);
        }
        Ok(Some(bump_version(conn).await?))
    })
    .await
}

/// Records a successful fetch of `jwks` from `jwks_uri`. When the document differs from the stored one it
/// is written and the routing version bumped (returned); the condition is evaluated on the row as
/// committed, so concurrent refreshes with the same result bump once. A fetch from a URI the issuer no
/// longer uses (changed meanwhile) writes nothing.
pub async fn record_jwks(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    jwks_uri: &str,
    jwks: &Value,
) -> QueryResult<Option<i64>> {
    let (jwks_uri, jwks) = (jwks_uri.to_owned(), jwks.clone());
    conn.transaction(async |conn| {
        let mine = ti::id.eq(id).and(ti::jwks_uri.eq(&jwks_uri));
        let changed = diesel::update(ti::table.filter(mine).filter(ti::jwks.is_distinct_from(&jwks)))
            .set((
                ti::jwks.eq(&jwks),
                ti::jwks_fetched_at.eq(diesel::dsl::now),
                ti::jwks_changed_at.eq(diesel::dsl::now),
                ti::last_attempt_at.eq(diesel::dsl::now),
                ti::last_error.eq(None::<String>),
            ))
            .execute(conn)
            .await?;
        if changed > 0 {
            return Ok(Some(bump_version(conn).await?));
        }
        diesel::update(ti::table.filter(mine))
            .set((
                ti::jwks_fetched_at.eq(diesel::dsl::now),
                ti::last_attempt_at.eq(diesel::dsl::now),
                ti::last_error.eq(None::<String>),
            ))
            .execute(conn)
            .await?;
        Ok(None)
    })
    .await
}

/// Records a failed fetch: the stored JWKS stays, the error is kept for the issuer's view.
pub async fn record_error(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    jwks_uri: &str,
    error: &str,
) -> QueryResult<()> {
    diesel::update(ti::table.filter(ti::id.eq(id)).filter(ti::jwks_uri.eq(jwks_uri)))
        .set((ti::last_attempt_at.eq(diesel::dsl::now), ti::last_error.eq(error)))
        .execute(conn)
        .await
        .map(drop)
}
