//! Every change through `/api/v1` leaves one audit record: a handler makes its change and the record in one
//! transaction (`audited`); a refused or failed change is recorded by the `track` middleware after the
//! answer, with the error table's code. `track` also gives every request its id (`X-Request-Id`).

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{ResponseError, web};
use chrono::Utc;
use diesel_async::{AnsiTransactionManager, AsyncPgConnection, TransactionManager};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::{ApiError, AppState};
use crate::auth::Principal;
use crate::model::DEFAULT_TENANT;

mod record;

use record::AdminRow;

/// The header a request id is taken from and echoed in.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Longest request id accepted from a client; a longer one is replaced.
const MAX_REQUEST_ID: usize = 128;
/// Longest unmatched path kept in a record's `method`.
const MAX_PATH: usize = 256;

/// Successful changes no handler recorded (a mutating route that does not go through `audited`).
static UNAUDITED: AtomicU64 = AtomicU64::new(0);

/// How many successful `/api/v1` changes were answered without a record of their own transaction since
/// the process started; the middleware wrote a record without before/after for each. Stays 0 unless a
/// mutating route misses `audited` (the integration tests drive every route and check it).
pub fn unaudited_changes() -> u64 {
    UNAUDITED.load(Ordering::Relaxed)
}

/// The client's `X-Request-Id` when it is 1-128 visible ASCII characters, else a new UUIDv7.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| (1..=MAX_REQUEST_ID).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| Uuid::now_v7().to_string(), str::to_owned)
}

/// What became of a mutating request's change, as far as the middleware must know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handled {
    /// Nothing recorded yet.
    Open,
    /// Committed with its record.
    Recorded,
    /// Nothing was changed, so nothing is recorded (a dry run).
    Unchanged,
}

/// The audit context of one mutating request, in a task-local while its handler runs.
struct Context {
    request_id: String,
    /// `<HTTP method> <route pattern>`.
    method: String,
    client_addr: Option<String>,
    /// The authenticated principal's label and tenant (`authenticate` sets it).
    principal: RefCell<Option<(String, Option<String>)>>,
    handled: Cell<Handled>,
}

tokio::task_local! {
    static CONTEXT: Rc<Context>;
}

/// Records who is calling, for the request's audit records (called by `auth::authenticate`).
pub(crate) fn set_principal(principal: &Principal) {
    let _ = CONTEXT.try_with(|c| {
        *c.principal.borrow_mut() = Some((principal.label(), principal.tenant().map(str::to_owned)));
    });
}

/// Declares that this successful mutating request changed nothing (an import's dry run), so no record
/// is expected of it.
pub(crate) fn unchanged() {
    let _ = CONTEXT.try_with(|c| c.handled.set(Handled::Unchanged));
}

/// The object a change touched: `<kind>:<id>`, and its tenant (the record's; platform-wide objects have
/// none and are recorded under the caller's tenant).
#[derive(Debug, Clone)]
pub(crate) struct Target {
    name: String,
    tenant: Option<String>,
}

impl Target {
    pub(crate) fn new(kind: &str, id: impl fmt::Display, tenant: Option<&str>) -> Self {
        Self { name: format!("{kind}:{id}"), tenant: tenant.map(str::to_owned) }
    }

    /// A server's (a stored `None` tenant is `default`'s).
    pub(crate) fn server(id: Uuid, tenant: Option<&str>) -> Self {
        Self::new("server", id, Some(tenant.unwrap_or(DEFAULT_TENANT)))
    }
}

/// What a change did, for its record: the object as the API shows it before and after (never a secret:
/// views only, not rows), and the status the change is answered with.
#[derive(Debug)]
pub(crate) struct Audit {
    target: Target,
    before: Option<Value>,
    after: Option<Value>,
    status: StatusCode,
}

fn view(value: &impl Serialize) -> Option<Value> {
    serde_json::to_value(value)
        .inspect_err(|error| tracing::error!(%error, "An audited view does not serialize."))
        .ok()
}

impl Audit {
    /// A new object (201).
    pub(crate) fn created(target: Target, after: &impl Serialize) -> Self {
        Self { target, before: None, after: view(after), status: StatusCode::CREATED }
    }

    /// A changed object (200).
    pub(crate) fn updated(target: Target, before: &impl Serialize, after: &impl Serialize) -> Self {
        Self { target, before: view(before), after: view(after), status: StatusCode::OK }
    }

    /// A removed object (204).
    pub(crate) fn deleted(target: Target, before: &impl Serialize) -> Self {
        Self { target, before: view(before), after: None, status: StatusCode::NO_CONTENT }
    }

    /// A change of many objects at once, described by `summary` (200; the import).
    pub(crate) fn applied(target: Target, summary: &impl Serialize) -> Self {
        Self { target, before: None, after: view(summary), status: StatusCode::OK }
    }
}

type Transactions = AnsiTransactionManager;

/// Runs `change` and writes its record in one transaction: both are committed or neither. Store functions
/// that open their own transaction run as savepoints inside it. `change` returns its value and what it
/// did; a failed record fails the change (500). Outside a request `track` follows it refuses (500).
///
/// The transaction is opened by hand because `AsyncConnection::transaction` bounds its closure with a
/// trait diesel-async does not export, so no generic function can forward one. A handler dropped halfway
/// returns its connection inside the transaction, which the pool discards as broken.
pub(crate) async fn audited<T>(
    conn: &mut AsyncPgConnection,
    change: impl AsyncFnOnce(&mut AsyncPgConnection) -> Result<(T, Audit), ApiError>,
) -> Result<T, ApiError> {
    let context = CONTEXT
        .try_with(Rc::clone)
        .map_err(|_| ApiError::internal("an audited change outside a request of /api/v1"))?;
    let principal = context.principal.borrow().clone();
    let value = commit(conn, principal, context.origin(), change).await?;
    context.handled.set(Handled::Recorded);
    Ok(value)
}

/// [`audited`] for a change the control plane makes by itself (Kubernetes service discovery): recorded
/// under `principal` and `method`, on a connection of `pool`.
pub(crate) async fn system<T>(
    principal: &str,
    method: &str,
    pool: &crate::db::DbPool,
    change: impl AsyncFnOnce(&mut AsyncPgConnection) -> Result<(T, Audit), ApiError>,
) -> Result<T, ApiError> {
    let mut conn = pool.get().await.map_err(ApiError::internal)?;
    let request_id = Uuid::now_v7().to_string();
    let origin = Origin { request_id: &request_id, method, client_addr: None };
    commit(&mut conn, Some((principal.to_owned(), None)), origin, change).await
}

/// [`audited`] for a console sign-in or sign-out (`/ui/session`, `/ui/callback`, outside `/api/v1`):
/// recorded under the principal who signed in or out, as `method`, from `client_addr`.
pub(crate) async fn console<T>(
    principal: &Principal,
    method: &str,
    client_addr: Option<&str>,
    pool: &crate::db::DbPool,
    change: impl AsyncFnOnce(&mut AsyncPgConnection) -> Result<(T, Audit), ApiError>,
) -> Result<T, ApiError> {
    let mut conn = pool.get().await.map_err(ApiError::database_unavailable)?;
    let request_id = Uuid::now_v7().to_string();
    let origin = Origin { request_id: &request_id, method, client_addr };
    let who = Some((principal.label(), principal.tenant().map(str::to_owned)));
    commit(&mut conn, who, origin, change).await
}

/// Records a refused console sign-in (`refusal`'s code, no principal); a record that cannot be written is
/// logged, never in the way of the answer.
pub(crate) async fn console_refused(
    method: &str,
    client_addr: Option<&str>,
    pool: &crate::db::DbPool,
    refusal: &ApiError,
) {
    let request_id = Uuid::now_v7().to_string();
    let origin = Origin { request_id: &request_id, method, client_addr };
    let row = origin.row(None, None, refusal.code().name(), refusal.status_code());
    let written = async {
        let mut conn = pool.get().await.map_err(|e| e.to_string())?;
        record::prepare(&mut conn, row.time).await;
        record::insert(&mut conn, &row).await.map_err(|e| e.to_string())
    };
    if let Err(error) = written.await {
        tracing::error!(%error, method, "Could not write the audit record of a refused console sign-in.");
    }
}

/// Runs `change` and writes its record in one transaction.
async fn commit<T>(
    conn: &mut AsyncPgConnection,
    principal: Option<(String, Option<String>)>,
    origin: Origin<'_>,
    change: impl AsyncFnOnce(&mut AsyncPgConnection) -> Result<(T, Audit), ApiError>,
) -> Result<T, ApiError> {
    record::prepare(conn, Utc::now()).await;
    <Transactions as TransactionManager<_>>::begin_transaction(conn).await.map_err(ApiError::internal)?;
    let outcome = async {
        let (value, audit) = change(&mut *conn).await?;
        let tenant = audit.target.tenant.clone().or_else(|| principal.as_ref().and_then(|p| p.1.clone()));
        let row = origin.row(principal.as_ref(), tenant.as_deref(), "ok", audit.status);
        let row = AdminRow {
            target: Some(&audit.target.name),
            before: audit.before.as_ref(),
            after: audit.after.as_ref(),
            ..row
        };
        record::insert(conn, &row).await.map_err(ApiError::internal)?;
        Ok(value)
    }
    .await;
    match outcome {
        Ok(value) => {
            <Transactions as TransactionManager<_>>::commit_transaction(conn)
                .await
                .map_err(ApiError::internal)?;
            Ok(value)
        }
        Err(e) => {
            if let Err(error) = <Transactions as TransactionManager<_>>::rollback_transaction(conn).await {
                tracing::warn!(%error, "Could not roll back a failed change.");
            }
            Err(e)
        }
    }
}

impl Context {
    fn new(req: &ServiceRequest, request_id: String) -> Self {
        let route = req.match_pattern().unwrap_or_else(|| req.path().chars().take(MAX_PATH).collect());
        Self {
            request_id,
            method: format!("{} {route}", req.method()),
            client_addr: req.peer_addr().map(|a| a.ip().to_string()),
            principal: RefCell::new(None),
            handled: Cell::new(Handled::Open),
        }
    }

    /// Where this request's records come from.
    fn origin(&self) -> Origin<'_> {
        Origin {
            request_id: &self.request_id,
            method: &self.method,
            client_addr: self.client_addr.as_deref(),
        }
    }

    /// A record of this request without target, before and after.
    fn row<'a>(
        &'a self,
        principal: Option<&'a (String, Option<String>)>,
        tenant: Option<&'a str>,
        outcome: &'a str,
        status: StatusCode,
    ) -> AdminRow<'a> {
        self.origin().row(principal, tenant, outcome, status)
    }
}

/// What an admin record says of the request (or the control plane's own work) that made the change.
#[derive(Clone, Copy)]
struct Origin<'a> {
    request_id: &'a str,
    /// `<HTTP method> <route pattern>`, or what the control plane did (`SYNC kubernetes`).
    method: &'a str,
    client_addr: Option<&'a str>,
}

impl<'a> Origin<'a> {
    /// A record without target, before and after.
    fn row(
        self,
        principal: Option<&'a (String, Option<String>)>,
        tenant: Option<&'a str>,
        outcome: &'a str,
        status: StatusCode,
    ) -> AdminRow<'a> {
        AdminRow {
            time: Utc::now(),
            id: Uuid::now_v7(),
            tenant_id: tenant.unwrap_or(DEFAULT_TENANT),
            principal: principal.map_or("", |p| p.0.as_str()),
            method: self.method,
            target: None,
            request_id: Some(self.request_id),
            outcome,
            status: Some(i32::from(status.as_u16())),
            client_addr: self.client_addr,
            trace_id: mcpgw_proto::otlp::current().map(|t| t.to_string()),
            before: None,
            after: None,
        }
    }
}

fn mutating(method: &Method) -> bool {
    [Method::POST, Method::PUT, Method::PATCH, Method::DELETE].contains(method)
}

/// Middleware of `/api/v1` (outside `authenticate`): gives the request its id, echoed in `X-Request-Id`;
/// runs a mutating request's handler with its audit context, and records it afterwards when the handler
/// did not: a refusal or failure (4xx/5xx) with the error's code, or a change that missed `audited`.
pub async fn track(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let request_id = request_id(req.headers());
    let echoed = HeaderValue::from_str(&request_id).map_err(actix_web::error::ErrorInternalServerError)?;
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let context = mutating(req.method()).then(|| Rc::new(Context::new(&req, request_id)));
    let call = next.call(req);
    let answered = match &context {
        Some(context) => CONTEXT.scope(context.clone(), call).await,
        None => call.await,
    };
    if let (Some(context), Some(state)) = (context, state) {
        let (status, error) = match &answered {
            Ok(response) => (response.status(), response.response().error()),
            // An inner middleware's error: actix answers it from its `ResponseError`.
            Err(e) => (e.as_response_error().status_code(), Some(e)),
        };
        finish(&state, &context, status, error).await;
    }
    let mut response = answered?;
    response.headers_mut().insert(REQUEST_ID, echoed);
    Ok(response)
}

/// The record `track` writes after a mutating request's answer, if any, in a statement of its own.
async fn finish(state: &AppState, context: &Context, status: StatusCode, error: Option<&actix_web::Error>) {
    let failed = status.is_client_error() || status.is_server_error();
    let outcome = match (failed, context.handled.get()) {
        (_, Handled::Unchanged) | (false, Handled::Recorded) => return,
        (true, Handled::Recorded) => {
            // The change and its record are committed; the answer failed after that.
            tracing::warn!(method = %context.method, %status,
                "A recorded change was answered with an error.");
            return;
        }
        (true, Handled::Open) => error
            .and_then(|e| e.as_error::<ApiError>())
            .map_or_else(|| format!("http_{}", status.as_u16()), |e| e.code().name().to_owned()),
        (false, Handled::Open) => {
            UNAUDITED.fetch_add(1, Ordering::Relaxed);
            tracing::error!(method = %context.method, request_id = %context.request_id,
                "A change was answered without its audit record; recording it without before and after.");
            "ok".to_owned()
        }
    };
    let principal = context.principal.borrow().clone();
    let tenant = principal.as_ref().and_then(|p| p.1.as_deref());
    let row = context.row(principal.as_ref(), tenant, &outcome, status);
    let written = async {
        let mut conn = state.pool.get().await.map_err(|e| e.to_string())?;
        record::prepare(&mut conn, row.time).await;
        record::insert(&mut conn, &row).await.map_err(|e| e.to_string())
    };
    if let Err(error) = written.await {
        tracing::error!(%error, method = %context.method, request_id = %context.request_id, %outcome,
            "Could not write the audit record of a refused change.");
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::HeaderMap;

    use super::*;

    fn id_of(value: &str) -> String {
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID, HeaderValue::from_str(value).expect("a header value"));
        request_id(&headers)
    }

    #[test]
    fn keeps_sane_request_ids_only() {
        assert_eq!(id_of("req-1/abc"), "req-1/abc");
        assert_eq!(id_of(&"a".repeat(128)), "a".repeat(128));
        for bad in ["", "has space", &"a".repeat(129)] {
            let generated = id_of(bad);
            assert_ne!(generated, bad);
            assert_eq!(Uuid::parse_str(&generated).map(|u| u.get_version_num()).ok(), Some(7));
        }
        assert_eq!(
            Uuid::parse_str(&request_id(&HeaderMap::new())).map(|u| u.get_version_num()).ok(),
            Some(7)
        );
    }
}
