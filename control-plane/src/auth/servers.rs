//! Who may read and who may change the servers of the registry: administrators every server of the
//! tenants they manage; holders of `server_owner` read their tenant's servers, register servers there and
//! change the ones they registered (their label is the server's `owner`).

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest};

use super::{Admin, Principal, authenticated, tenant_for};
use crate::api::{ApiError, Code};
use crate::model::{DEFAULT_TENANT, ServerRow};

/// The built-in role of principals that register servers and manage the ones they registered. On the
/// proxies it allows what `user` allows: every server of its tenant.
pub const SERVER_OWNER_ROLE: &str = "server_owner";

/// Why a principal may touch servers at all.
#[derive(Debug, Clone)]
enum Grant {
    /// Every server of the tenants the administrator manages.
    Admin(Admin),
    /// A holder of `server_owner`: the servers of `tenant`, all to read, those whose owner is `label` to
    /// change. Only an API key or a user holds the role, so both are always known.
    Owner { principal: Principal, tenant: String, label: String },
}

/// Proof that the caller may register servers and change some: an administrator (every server of the
/// tenants it manages) or a holder of `server_owner` (the servers of its tenant that it registered).
/// `may_manage` decides one server. Any other credential: 403, before the body is read.
#[derive(Debug, Clone)]
pub struct ServerManager(Grant);

impl ServerManager {
    /// Who is calling (for logs).
    pub fn principal(&self) -> &Principal {
        match &self.0 {
            Grant::Admin(admin) => admin.principal(),
            Grant::Owner { principal, .. } => principal,
        }
    }

    /// The one tenant whose servers this caller sees; `None` for a platform administrator (every tenant).
    pub fn tenant(&self) -> Option<&str> {
        match &self.0 {
            Grant::Admin(admin) => admin.tenant(),
            Grant::Owner { tenant, .. } => Some(tenant),
        }
    }

    /// The owner recorded on a server this caller registers (`None` for the admin token).
    pub fn owner(&self) -> Option<String> {
        self.principal().owner_label()
    }

    /// The tenant a server this caller registers goes to: the one given, else its own (`default` for a
    /// platform administrator); another tenant than its own is refused (403).
    pub fn tenant_for(&self, given: Option<&str>) -> Result<String, ApiError> {
        match &self.0 {
            Grant::Admin(admin) => admin.tenant_for(given),
            Grant::Owner { tenant, .. } => tenant_for(Some(tenant), given, "a server owner"),
        }
    }

    /// Whether a server of `tenant` (a stored `None` is the default tenant) exists for this caller.
    pub fn sees(&self, tenant: Option<&str>) -> bool {
        self.tenant().is_none_or(|own| own == tenant.unwrap_or(DEFAULT_TENANT))
    }

    /// Whether this caller may change `server` and its instances: an administrator of its tenant, or its
    /// owner. A server of a tenant the caller does not see is missing (404, like every object of another
    /// tenant); one it sees but did not register is 403 `insufficient_permissions`.
    pub fn may_manage(&self, server: &ServerRow) -> Result<(), ApiError> {
        if !self.sees(server.tenant_id.as_deref()) {
            return Err(crate::api::servers::not_found(server.id));
        }
        match &self.0 {
            Grant::Admin(_) => Ok(()),
            Grant::Owner { label, .. } if server.owner.as_deref() == Some(label.as_str()) => Ok(()),
            Grant::Owner { .. } => Err(ApiError::new(
                Code::InsufficientPermissions,
                format!(
                    "server {:?} was not registered by this caller: the \"server_owner\" role changes only \
                     the servers it registered (an administrator of the tenant changes every one)",
                    server.name
                ),
            )),
        }
    }

    /// Admits administrators and holders of `server_owner`; `what` names the permission in a refusal.
    pub(super) fn check(outcome: Result<Principal, ApiError>, what: &str) -> Result<Self, ApiError> {
        let principal = outcome?;
        if principal.is_admin() {
            return Ok(Self(Grant::Admin(Admin(principal))));
        }
        if principal.is_server_owner()
            && let (Some(tenant), Some(label)) = (principal.tenant(), principal.owner_label())
        {
            let tenant = tenant.to_owned();
            return Ok(Self(Grant::Owner { principal, tenant, label }));
        }
        let message = match &principal {
            Principal::ApiKey { role, .. } => {
                format!(
                    "this API key has the role {role:?}; {what} needs the \"admin\" or \"server_owner\" role"
                )
            }
            Principal::User { .. } => format!(
                "this user is neither an administrator (none of --oidc-admin-roles among their IdP roles or \
                 groups) nor a server owner (no IdP role or group \"server_owner\"); {what} needs one of them"
            ),
            Principal::AdminToken => String::new(),
        };
        Err(ApiError::new(Code::InsufficientPermissions, message))
    }
}

impl FromRequest for ServerManager {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Self::check(authenticated(req), "registering and changing servers"))
    }
}

/// Proof that the caller may read the servers of the tenants it sees (their list, one server, its
/// health): the same callers as `ServerManager`, a holder of `server_owner` seeing every server of its
/// tenant, its own or not. Any other credential: 403.
#[derive(Debug, Clone)]
pub struct ServerReader(ServerManager);

impl ServerReader {
    /// The one tenant whose servers this caller sees; `None` for a platform administrator (every tenant).
    pub fn tenant(&self) -> Option<&str> {
        self.0.tenant()
    }

    /// Whether a server of `tenant` (a stored `None` is the default tenant) exists for this caller.
    pub fn sees(&self, tenant: Option<&str>) -> bool {
        self.0.sees(tenant)
    }
}

impl FromRequest for ServerReader {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(ServerManager::check(authenticated(req), "reading servers").map(Self))
    }
}
