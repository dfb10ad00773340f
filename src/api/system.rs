//! Process-level endpoints: health, counted resources, Prometheus metrics.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::SharedState;
use crate::hub::StateName;
use crate::resources::{self, ViewerKind};

pub async fn healthz(State(state): State<SharedState>) -> Json<serde_json::Value> {
    let cameras = state.cameras.list();
    let live = cameras
        .iter()
        .filter(|c| c.stream.state().name() == StateName::Live)
        .count();
    Json(
        json!({ "status": "ok", "cameras": cameras.len(), "live": live, "pid": std::process::id() }),
    )
}

/// The `[[worker]]` processes: state, reason, pid and port.
pub async fn workers(State(state): State<SharedState>) -> Json<Vec<crate::supervisor::WorkerView>> {
    Json(state.workers.list())
}

/// Where the outputs that are not under this HTTP server are: the RTSP re-stream's address
/// (`host` null when it listens on every interface: use the host the page came from), its UDP
/// ports and whether it asks for credentials; the RTMP publish server's address and whether
/// publishers need the token; each `null` when it is off.
pub async fn outputs(State(state): State<SharedState>) -> Json<serde_json::Value> {
    let rtsp = state.rtsp.as_ref().map(|r| {
        let local = r.local_addr();
        serde_json::json!({
            "host": (!local.ip().is_unspecified()).then(|| local.ip().to_string()),
            "port": local.port(),
            "udp_ports": r.udp_ports().map(|(a, b)| [a, b]),
            "auth": r.auth(),
        })
    });
    let rtmp = state.rtmp.as_ref().map(|r| {
        let local = r.local_addr();
        serde_json::json!({
            "host": (!local.ip().is_unspecified()).then(|| local.ip().to_string()),
            "port": local.port(),
            "auth": state.token.is_some(),
        })
    });
    Json(serde_json::json!({ "rtsp": rtsp, "rtmp": rtmp }))
}

pub async fn resources() -> Json<resources::Snapshot> {
    Json(resources::snapshot())
}

/// Prometheus text. The gauges are set from the RAII counts at scrape time, so they can't drift.
pub async fn metrics(State(state): State<SharedState>) -> Response {
    let Some(handle) = &state.metrics else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder not installed",
        )
            .into_response();
    };
    let r = resources::snapshot();
    metrics::gauge!("livelens_streams_live").set(r.streams_live as f64);
    metrics::gauge!("livelens_tasks").set(r.tasks as f64);
    for kind in ViewerKind::ALL {
        let n = resources::count(resources::Resource::Viewer(kind));
        metrics::gauge!("livelens_viewers", "kind" => kind.name()).set(n as f64);
    }
    metrics::gauge!("livelens_peer_connections").set(r.peer_connections as f64);
    metrics::gauge!("livelens_websockets").set(r.websockets as f64);
    metrics::gauge!("livelens_child_processes").set(r.child_processes as f64);
    metrics::gauge!("livelens_transcoders").set(r.transcoders as f64);
    metrics::gauge!("livelens_rtsp_connections").set(r.rtsp_connections as f64);
    metrics::gauge!("livelens_rtmp_connections").set(r.rtmp_connections as f64);
    for kind in resources::PublisherKind::ALL {
        let n = resources::count(resources::Resource::Publisher(kind));
        metrics::gauge!("livelens_publishers", "kind" => kind.name()).set(n as f64);
    }
    metrics::gauge!("livelens_playback_downloads").set(r.playback_downloads as f64);
    metrics::gauge!("livelens_open_fds").set(r.open_fds as f64);
    metrics::gauge!("livelens_rss_bytes").set(r.rss_bytes as f64);
    for camera in state.cameras.list() {
        let view = camera.stream.view();
        let id = camera.id().to_string();
        let live = f64::from(u8::from(view.state.name() == StateName::Live));
        metrics::gauge!("livelens_camera_live", "camera" => id.clone()).set(live);
        metrics::gauge!("livelens_camera_frames", "camera" => id.clone())
            .set(view.stats.frames as f64);
        metrics::gauge!("livelens_camera_bytes", "camera" => id.clone())
            .set(view.stats.bytes as f64);
        metrics::gauge!("livelens_camera_viewers", "camera" => id).set(view.viewers as f64);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response()
}
