//! HTTP on `--prometheus-addr:--prometheus-port` (contract §4.3): `/healthcheck/<label>`,
//! `/healthz` and the metrics path.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::Value;

use crate::metrics::Metrics;
use crate::probe::{Probe, ProbeStatus};

pub const HEALTHCHECK_PREFIX: &str = "/healthcheck/";
pub const HEALTHZ_PATH: &str = "/healthz";

struct HttpState {
    probes: HashMap<String, Arc<Probe>>,
    metrics: Arc<Metrics>,
    http: Arc<daemon_support::HttpStats>,
}

/// The router: one health check per probe label, `/healthz`, and metrics at `metrics_path`.
pub fn router(
    probes: &[Arc<Probe>],
    metrics: Arc<Metrics>,
    http: Arc<daemon_support::HttpStats>,
    metrics_path: &str,
) -> Router {
    let state = Arc::new(HttpState {
        probes: probes
            .iter()
            .map(|p| (p.spec.label.clone(), p.clone()))
            .collect(),
        metrics,
        http,
    });
    Router::new()
        .route("/healthcheck/{label}", get(healthcheck))
        .route("/readiness/{label}", get(readiness))
        .route(HEALTHZ_PATH, get(healthz))
        .route(metrics_path, get(metrics_text))
        .with_state(state)
}

/// The legacy JSON body: `{"IsOk":..,"LatencySeconds":..,"Err":".."}` (Go prints a zero
/// float64 as `0`).
pub fn status_body(status: &ProbeStatus) -> String {
    let latency = status.latency.as_secs_f64();
    let latency = if latency == 0.0 {
        Value::from(0)
    } else {
        Value::from(latency)
    };
    // Field order as Go's encoding/json writes the struct.
    format!(
        r#"{{"IsOk":{},"LatencySeconds":{latency},"Err":{}}}"#,
        status.ok,
        Value::from(status.error.as_str())
    )
}

/// Liveness: 200 while the probed server answers, also when it says "Not Ready" (kube-dns
/// before its first sync), so the kubelet does not restart a container that cannot do better.
async fn healthcheck(state: State<Arc<HttpState>>, label: Path<String>) -> Response {
    probe_response(state, label, |status| status.ok)
}

/// Readiness: 200 only while the probed server answers with records.
async fn readiness(state: State<Arc<HttpState>>, label: Path<String>) -> Response {
    probe_response(state, label, |status| status.ready)
}

fn probe_response(
    State(state): State<Arc<HttpState>>,
    Path(label): Path<String>,
    good: fn(&ProbeStatus) -> bool,
) -> Response {
    let Some(probe) = state.probes.get(&label) else {
        return (StatusCode::NOT_FOUND, "404 page not found\n").into_response();
    };
    let status = probe.status();
    let code = if good(&status) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        status_body(&status),
    )
        .into_response()
}

async fn healthz() -> String {
    format!("ok ({})\n", go_time(daemon_support::clock::wall()))
}

async fn metrics_text(State(state): State<Arc<HttpState>>) -> Response {
    let mut text = state.metrics.render();
    state.http.render("sidecar", &mut text);
    daemon_support::metrics_response(text)
}

/// `time.Time.String()` in UTC: `2006-01-02 15:04:05.999999999 +0000 UTC`.
pub fn go_time(t: SystemTime) -> String {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = daemon_support::clock::civil_from_days(days);
    let mut out = format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    );
    let nanos = since.subsec_nanos();
    if nanos != 0 {
        let fraction = format!("{nanos:09}");
        out.push('.');
        out.push_str(fraction.trim_end_matches('0'));
    }
    out.push_str(" +0000 UTC");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bodies_match_the_legacy_json() {
        let ok = ProbeStatus {
            ok: true,
            ready: true,
            latency: Duration::from_micros(1500),
            error: String::new(),
        };
        assert_eq!(
            status_body(&ok),
            r#"{"IsOk":true,"LatencySeconds":0.0015,"Err":""}"#
        );
        let failed = ProbeStatus {
            ok: false,
            ready: false,
            latency: Duration::ZERO,
            error: "waiting for first probe".into(),
        };
        assert_eq!(
            status_body(&failed),
            r#"{"IsOk":false,"LatencySeconds":0,"Err":"waiting for first probe"}"#
        );
    }

    #[test]
    fn go_time_format() {
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_764_115_115, 120_000_000);
        assert_eq!(go_time(t), "2025-11-25 23:58:35.12 +0000 UTC");
        assert_eq!(
            go_time(SystemTime::UNIX_EPOCH),
            "1970-01-01 00:00:00 +0000 UTC"
        );
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(go_time(leap), "2000-02-29 00:00:00 +0000 UTC");
    }
}
