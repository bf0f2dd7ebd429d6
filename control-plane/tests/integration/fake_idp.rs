//! A fake OAuth issuer for the integration tests (actix-web on 127.0.0.1:0): OIDC discovery and a JWKS whose
//! keys a test changes (a rotation) or turns into failures (500).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::{App, HttpResponse, HttpServer, web};
use serde_json::{Value, json};

#[derive(Default)]
pub struct IdpState {
    pub issuer: String,
    /// The `issuer` the metadata names (the real one unless a test makes it lie).
    pub named_issuer: Mutex<Option<String>>,
    pub jwks: Mutex<Value>,
    pub down: AtomicBool,
    pub jwks_requests: AtomicUsize,
}

pub struct FakeIdp {
    /// The issuer: `http://127.0.0.1:<port>`.
    pub issuer: String,
    pub state: Arc<IdpState>,
    handle: actix_web::dev::ServerHandle,
}

/// A JWK the proxies can verify with: an RSA signing key named `kid` (its modulus made from `kid`, so each
/// kid is a different key).
pub fn key(kid: &str) -> Value {
    use base64::Engine;
    let modulus: Vec<u8> = kid.bytes().cycle().take(256).collect();
    let n = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(modulus);
    json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": n, "e": "AQAB"})
}

/// A JWKS of the keys named `kids`.
pub fn jwks(kids: &[&str]) -> Value {
    json!({"keys": kids.iter().map(|k| key(k)).collect::<Vec<_>>()})
}

impl FakeIdp {
    /// Serves discovery and a JWKS with the key `k1`.
    pub async fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let issuer = format!("http://{}", listener.local_addr().expect("addr"));
        let state = Arc::new(IdpState {
            issuer: issuer.clone(),
            jwks: Mutex::new(jwks(&["k1"])),
            ..Default::default()
        });
        let data = web::Data::from(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/.well-known/openid-configuration", web::get().to(metadata))
                .route("/jwks", web::get().to(keys))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Self { issuer, state, handle }
    }

    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.issuer)
    }

    /// Serves `doc` as the JWKS from now on.
    pub fn set_jwks(&self, doc: Value) {
        *self.state.jwks.lock().unwrap_or_else(|p| p.into_inner()) = doc;
    }

    /// Answers the JWKS with 500 while `down`.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// Makes the metadata name another issuer.
    pub fn name_issuer(&self, issuer: &str) {
        *self.state.named_issuer.lock().unwrap_or_else(|p| p.into_inner()) = Some(issuer.to_owned());
    }
}

impl Drop for FakeIdp {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        actix_web::rt::spawn(async move { handle.stop(false).await });
    }
}

async fn metadata(state: web::Data<IdpState>) -> HttpResponse {
    let named = state.named_issuer.lock().unwrap_or_else(|p| p.into_inner()).clone();
    HttpResponse::Ok().json(json!({
        "issuer": named.unwrap_or_else(|| state.issuer.clone()),
        "jwks_uri": format!("{}/jwks", state.issuer),
        "authorization_endpoint": format!("{}/authorize", state.issuer),
        "token_endpoint": format!("{}/token", state.issuer),
    }))
}

async fn keys(state: web::Data<IdpState>) -> HttpResponse {
    state.jwks_requests.fetch_add(1, Ordering::SeqCst);
    if state.down.load(Ordering::SeqCst) {
        return HttpResponse::InternalServerError().body("the key store is down");
    }
    HttpResponse::Ok().json(state.jwks.lock().unwrap_or_else(|p| p.into_inner()).clone())
}
