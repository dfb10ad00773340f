//! `GET /api/cameras/stream` (Server-Sent Events: the camera list, pushed every second and at
//! once on connect) and `POST /api/probe` (what a source offers, without adding it).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures_util::Stream;
use serde::Deserialize;
use serde_json::Value;

use super::cameras::camera_json;
use super::{ApiError, JsonBody, SharedState};
use crate::common::parse_duration;
use crate::source::probe;
use crate::source::rtsp::RtspOptions;

const PUSH_EVERY: Duration = Duration::from_secs(1);
const PROBE_TIMEOUT: Duration = Duration::from_secs(8);

/// The camera list as an event stream. It ends at server shutdown.
pub async fn camera_stream(
    State(state): State<SharedState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let shutdown = state.shutdown.clone();
    let stream = futures_util::stream::unfold((state, true), move |(state, first)| {
        let shutdown = shutdown.clone();
        async move {
            if !first {
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(PUSH_EVERY) => {}
                }
            }
            let list: Vec<_> = state
                .cameras
                .list()
                .iter()
                .map(|c| camera_json(c))
                .collect();
            let event = Event::default()
                .event("cameras")
                .json_data(list)
                .unwrap_or_else(|_| Event::default().comment("serialization failed"));
            Some((Ok(event), (state, false)))
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeRequest {
    source: String,
    transport: Option<String>,
    timeout: Option<String>,
}

/// Probes a source the way `livelens probe` does, for the UI's "Test" button.
pub async fn probe(
    State(_state): State<SharedState>,
    JsonBody(req): JsonBody<ProbeRequest>,
) -> Result<Json<Value>, ApiError> {
    let mut options = RtspOptions {
        timeout: PROBE_TIMEOUT,
        ..RtspOptions::default()
    };
    if let Some(t) = &req.transport {
        options.transport = RtspOptions::parse_transport(t).map_err(|e| {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("transport: {e}"))
        })?;
    }
    if let Some(t) = &req.timeout {
        options.timeout = parse_duration(t)
            .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("timeout: {e}")))?
            .min(PROBE_TIMEOUT);
    }
    let report = probe::probe(&req.source, &options)
        .await
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("source: {e}")))?;
    Ok(Json(serde_json::to_value(report).unwrap_or_default()))
}
