//! Admin listener: liveness, readiness (a first routing table applied), Prometheus metrics, and the routing
//! table being served (for operators and tests).

use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;

use mcpgw_proto::v1::{HealthStatus, Transport};

use crate::balance::Gate;
use crate::metrics;
use crate::routing::Routes;

pub struct AdminApp {
    pub routes: Arc<Routes>,
}

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .body(body)
        .unwrap_or_default()
}

fn json_reply(status: StatusCode, value: serde_json::Value) -> Response<Vec<u8>> {
    reply(status, "application/json", value.to_string().into_bytes())
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        match session.req_header().uri.path() {
            "/healthz" => json_reply(StatusCode::OK, json!({"status": "ok"})),
            "/readyz" => match self.routes.load() {
                Some(table) => {
                    json_reply(StatusCode::OK, json!({"status": "ready", "version": table.version}))
                }
                None => json_reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"status": "not_ready", "reason": "no routing table received from the control plane yet"}),
                ),
            },
            "/metrics" => reply(StatusCode::OK, "text/plain; version=0.0.4", metrics::render()),
            "/routes" => json_reply(StatusCode::OK, self.routes_json()),
            _ => json_reply(StatusCode::NOT_FOUND, json!({"error": "not found"})),
        }
    }
}

fn health_label(h: HealthStatus) -> &'static str {
    match h {
        HealthStatus::Healthy => "healthy",
        HealthStatus::Unhealthy => "unhealthy",
        HealthStatus::Unknown => "unknown",
    }
}

fn gate_label(g: Gate) -> &'static str {
    match g {
        Gate::Closed => "closed",
        Gate::Open => "open",
        Gate::HalfOpen => "half_open",
    }
}

fn transport_label(t: Transport) -> &'static str {
    match t {
        Transport::Sse => "sse",
        Transport::Websocket => "websocket",
        Transport::Stdio => "stdio",
        _ => "streamable_http",
    }
}

impl AdminApp {
    fn routes_json(&self) -> serde_json::Value {
        let table = self.routes.current();
        let mut servers: Vec<_> = table
            .servers()
            .map(|s| {
                let instances: Vec<_> = s
                    .instances
                    .iter()
                    .map(|i| {
                        json!({
                            "id": &*i.id,
                            "endpoint_url": mcpgw_proto::validate::redacted(&i.endpoint),
                            "weight": i.weight,
                            "health": health_label(i.health),
                            "breaker": gate_label(i.state.gate()),
                            "active_requests": i.state.active.load(std::sync::atomic::Ordering::Relaxed),
                            "resolve_error": i.peer.as_ref().err(),
                        })
                    })
                    .collect();
                json!({
                    "id": s.id,
                    "name": &*s.name,
                    "transport": transport_label(s.transport),
                    "load_balancing": s.policy.name(),
                    "instances": instances,
                })
            })
            .collect();
        servers.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        json!({"version": table.version, "ready": self.routes.is_ready(), "servers": servers})
    }
}
