//! HTTP on `--healthz-port` (and `PROMETHEUS_PORT`): `/readiness`, `/healthz`, metrics, and
//! `/cache` for loopback clients when `--cache-dump` is given.

use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kube_dns_core::snapshot::ServiceRecordsKind;
use serde_json::{Value, json};

use crate::state::ServerState;

/// Legacy readiness path and body.
pub const READINESS_PATH: &str = "/readiness";
pub const READY_BODY: &str = "ok\n";
pub const HEALTHZ_PATH: &str = "/healthz";
pub const CACHE_PATH: &str = "/cache";

/// The router for every HTTP listener (legacy kube-dns served one mux on every port).
pub fn router(state: Arc<ServerState>, metrics_path: &str, cache_dump: bool) -> Router {
    let router = Router::new()
        .route(READINESS_PATH, get(readiness))
        .route(HEALTHZ_PATH, get(healthz))
        .route(metrics_path, get(metrics));
    let router = if cache_dump {
        router.route(CACHE_PATH, get(cache))
    } else {
        router
    };
    router.with_state(state)
}

async fn readiness(State(state): State<Arc<ServerState>>) -> Response {
    if state.is_ready() && state.serving_saved_zone() {
        // Ready: the saved zone is good data, and a cluster whose replicas all restarted while
        // the API is away keeps its DNS Service endpoints.
        (
            StatusCode::OK,
            "ok (answering from the saved zone; not synced with the API yet)\n",
        )
            .into_response()
    } else if state.is_ready() {
        (StatusCode::OK, READY_BODY).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics(State(state): State<Arc<ServerState>>) -> Response {
    let snapshot = state.snapshot.load();
    state.metrics.services.set(snapshot.service_count() as i64);
    state
        .metrics
        .endpoints
        .set(snapshot.endpoint_count() as i64);
    state.metrics.ready.set(i64::from(state.is_ready()));
    let mut text = state.metrics.render();
    let policy = state.forwarding.load();
    let mut upstreams: Vec<std::sync::Arc<dns_transport::upstream::Upstream>> = Vec::new();
    for server in policy.servers() {
        if !upstreams.iter().any(|u| u.addr == server.addr) {
            upstreams.push(server.clone());
        }
    }
    dns_transport::upstream::render_metrics("kubedns", &upstreams, &mut text);
    state.http.render("kubedns", &mut text);
    state.tcp.render("kubedns", "tcp", &mut text);
    state.inflight.render("kubedns", &mut text);
    state.udp.render("kubedns", &mut text);
    state.query_log_stats.render("kubedns", &mut text);
    daemon_support::metrics_response(text)
}

/// A JSON dump of the published snapshot (the legacy tree shape is not kept).
async fn cache(
    State(state): State<Arc<ServerState>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
) -> Response {
    if !peer.ip().is_loopback() {
        return (
            StatusCode::FORBIDDEN,
            "/cache is served to loopback clients only\n",
        )
            .into_response();
    }
    let snapshot = state.snapshot.load_full();
    let services: Vec<Value> = snapshot
        .services_sorted()
        .iter()
        .map(|s| {
            let ports: Vec<Value> = s
                .ports
                .iter()
                .map(|p| json!({"name": p.name.as_deref(), "protocol": &*p.protocol, "port": p.port}))
                .collect();
            let mut entry = json!({
                "name": &*s.name,
                "namespace": &*s.namespace,
                "fqdn": format!("{}.", s.fqdn),
                "ports": ports,
            });
            match &s.kind {
                ServiceRecordsKind::ClusterIp { ips } => {
                    entry["type"] = json!("ClusterIP");
                    entry["clusterIPs"] = json!(ips);
                }
                ServiceRecordsKind::Headless { endpoints } => {
                    entry["type"] = json!("Headless");
                    entry["endpoints"] = endpoints
                        .iter()
                        .map(|e| json!({"ip": e.ip, "label": &*e.label, "hostname": e.has_hostname}))
                        .collect();
                }
                ServiceRecordsKind::ExternalName { target } => {
                    entry["type"] = json!("ExternalName");
                    entry["externalName"] = json!(&**target);
                }
            }
            entry
        })
        .collect();
    let body = json!({
        "zone": &*snapshot.settings.zone,
        "synced": snapshot.synced,
        "serial": snapshot.serial,
        "services": services,
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string_pretty(&body).unwrap_or_default(),
    )
        .into_response()
}
