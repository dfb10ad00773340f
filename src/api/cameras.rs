//! `/api/cameras…`: list, add, change, remove, start, stop, snapshot.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::{ApiError, JsonBody, SharedState, Src};
use crate::analysis::{AnalysisConfig, AnalysisStatus};
use crate::cameras::{change::analysis_table, Camera, CameraError, CameraPatch};
use crate::config::CameraConfig;
use crate::hub::StateName;
use crate::media::AudioCodec;

pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/api/cameras", get(list).post(create))
        .route("/api/cameras/{id}", get(show).patch(update).delete(remove))
        .route("/api/cameras/{id}/start", post(start))
        .route("/api/cameras/{id}/stop", post(stop))
        .route("/api/config/status", get(config_status))
    // Snapshots (and go2rtc's `/api/frame.jpeg`) are watching routes: see `api::router`.
}

#[derive(Debug, Serialize)]
pub struct CameraJson {
    id: String,
    /// The source URL with credentials masked.
    source: String,
    on_demand: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    idle_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    transport: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_agent: Option<String>,
    /// `"***"` when the camera has a publish key (the key itself is never shown).
    #[serde(skip_serializing_if = "Option::is_none")]
    publish_key: Option<&'static str>,
    state: StateName,
    reason: Option<String>,
    video: Option<VideoJson>,
    audio: Option<AudioCodec>,
    /// People watching: MSE, WebRTC and RTSP re-stream viewers.
    viewers: usize,
    /// Every subscription of the stream by kind, people or not (`recording`, `analysis`; one
    /// `hls` muxer and one `transcoder` per camera however many players use them).
    subscribers: std::collections::BTreeMap<&'static str, usize>,
    stats: crate::hub::stats::StatsView,
    /// The analysis settings (API key masked) and what the analysers see now.
    #[serde(skip_serializing_if = "Option::is_none")]
    analysis: Option<AnalysisConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    analysis_status: Option<AnalysisStatus>,
    /// The `record` setting, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    record: Option<crate::config::Record>,
    recording: crate::recording::RecordingStatus,
}

#[derive(Debug, Serialize)]
struct VideoJson {
    codec: &'static str,
    codec_string: String,
    width: u32,
    height: u32,
    fps: Option<f64>,
}

pub fn camera_json(camera: &Camera) -> CameraJson {
    let config = camera.config();
    let analysis = config
        .analysis
        .is_some()
        .then(|| camera.analysis().masked());
    let view = camera.stream.view();
    CameraJson {
        id: config.id.clone(),
        source: config.masked_source(),
        on_demand: config.on_demand,
        idle_timeout: config.idle_timeout.clone(),
        transport: config.transport.clone(),
        timeout: config.timeout.clone(),
        user_agent: config.user_agent.clone(),
        publish_key: config.publish_key.as_ref().map(|_| crate::config::MASKED),
        state: view.state.name(),
        reason: view.state.reason().map(str::to_string),
        video: view.video.as_ref().map(|v| VideoJson {
            codec: v.codec,
            codec_string: v.rfc6381.clone(),
            width: v.width,
            height: v.height,
            fps: v.fps.or((view.stats.fps > 0.0).then_some(view.stats.fps)),
        }),
        audio: view.audio,
        viewers: view.viewers,
        subscribers: view.subscribers,
        stats: view.stats,
        analysis,
        analysis_status: camera.analysis_status(),
        record: config.record.clone(),
        recording: camera.recorder.status(),
    }
}

/// Whether the config file as it is now is applied, and every problem when it is not.
async fn config_status(State(state): State<SharedState>) -> Json<crate::cameras::ConfigStatus> {
    Json(state.cameras.config_status())
}

async fn list(State(state): State<SharedState>) -> Json<Vec<CameraJson>> {
    Json(
        state
            .cameras
            .list()
            .iter()
            .map(|c| camera_json(c))
            .collect(),
    )
}

async fn show(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<Json<CameraJson>, ApiError> {
    Ok(Json(camera_json(&*state.cameras.get(&id)?)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCamera {
    id: String,
    source: String,
    #[serde(default)]
    on_demand: bool,
    idle_timeout: Option<String>,
    transport: Option<String>,
    timeout: Option<String>,
    user_agent: Option<String>,
    /// Analysis settings (motion, vlm, asr), as in `PATCH`.
    analysis: Option<serde_json::Value>,
    /// `true` or `{"keep": "30d"}` to record it.
    record: Option<crate::config::Record>,
}

async fn create(
    State(state): State<SharedState>,
    JsonBody(new): JsonBody<NewCamera>,
) -> Result<Response, ApiError> {
    let config = CameraConfig {
        id: new.id,
        source: new.source,
        on_demand: new.on_demand,
        idle_timeout: new.idle_timeout,
        transport: new.transport,
        timeout: new.timeout,
        user_agent: new.user_agent,
        analysis: match new.analysis {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(analysis_table(v).map_err(|p| CameraError::Invalid(vec![p]))?),
        },
        publish_key: None,
        record: new.record,
        unknown: BTreeMap::new(),
    };
    let camera = state.cameras.add(config).await?;
    let location = format!("/api/cameras/{}", camera.id());
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(camera_json(&camera)),
    )
        .into_response())
}

async fn update(
    State(state): State<SharedState>,
    Path(id): Path<String>,
    JsonBody(patch): JsonBody<CameraPatch>,
) -> Result<Json<CameraJson>, ApiError> {
    // A changed source restarts the source only: MSE and WebRTC viewers stay attached and
    // resume at the new source's first keyframe; new analysis settings restart only the
    // analysers; a change that changes nothing does nothing.
    let camera = state.cameras.update(&id, patch).await?;
    Ok(Json(camera_json(&camera)))
}

async fn remove(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.cameras.remove(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn start(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<Json<CameraJson>, ApiError> {
    Ok(Json(camera_json(&*state.cameras.start(&id).await?)))
}

async fn stop(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<Json<CameraJson>, ApiError> {
    let camera = state.cameras.stop(&id).await?;
    Ok(Json(camera_json(&camera)))
}

pub(super) async fn snapshot(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let camera = state.cameras.get(&id)?;
    let jpeg = camera.snapshot.get(&camera.stream).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        jpeg,
    )
        .into_response())
}

pub(super) async fn frame_jpeg(
    state: State<SharedState>,
    Query(query): Query<Src>,
) -> Result<Response, ApiError> {
    snapshot(state, Path(query.id()?)).await
}
