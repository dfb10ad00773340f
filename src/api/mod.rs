//! The HTTP API (axum). The only module that knows HTTP: it maps requests to camera and output calls
//! and every error to a status code and a JSON `{"error": …}` body in one place ([`ApiError`]).

mod analysis;
mod cameras;
mod connections;
mod cors;
mod events;
mod guard;
mod hls;
mod live;
mod mjpeg;
mod monitor;
pub(crate) mod mse;
mod openapi;
mod playback;
mod system;
pub(crate) mod webrtc;
pub(crate) mod ws;

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::http::{header, StatusCode};
use axum::middleware;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::cameras::{CameraError, Cameras};
use crate::config::Problem;
use crate::output::snapshot::SnapshotError;

/// Request bodies larger than this get 413.
pub const MAX_BODY: usize = 64 * 1024;

pub struct AppState {
    /// Every camera, and the one path that changes them.
    pub cameras: Arc<Cameras>,
    /// When set, every state-changing request needs `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// The Host and Origin exceptions (`[server] allowed_hosts`, `allowed_origins`,
    /// `player_origins`).
    pub access: Access,
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// The WebRTC task; `None` when its UDP port could not be opened.
    pub webrtc: Option<Arc<crate::output::webrtc::WebRtc>>,
    /// The RTSP re-stream; `None` when off or its port could not be opened.
    pub rtsp: Option<Arc<crate::output::rtsp::RtspServer>>,
    pub rtmp: Option<Arc<crate::output::rtmp::RtmpServer>>,
    /// Cancelled at shutdown: long-lived connections (WebSockets) end on it.
    pub shutdown: tokio_util::sync::CancellationToken,
    pub workers: Arc<crate::supervisor::Workers>,
    pub analysis: Arc<crate::analysis::Analysis>,
    /// `[mse]`: how MSE viewers are written to.
    pub mse: crate::config::MseSettings,
}

pub use connections::{raise_open_file_limit, serve, Limits};

/// go2rtc's `?src={camera id}`, which every one of its stream URLs takes.
#[derive(serde::Deserialize)]
pub struct Src {
    src: Option<String>,
}

impl Src {
    /// The camera id, or 400 naming the missing parameter.
    pub fn id(self) -> Result<String, ApiError> {
        self.src.ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "missing query parameter src (the camera id)",
            )
        })
    }
}
pub use cors::Scope;
pub use guard::Access;

pub type SharedState = Arc<AppState>;

pub fn router(state: SharedState) -> Router {
    // Watching: media out and a WHEP viewer's own session. No token (still subject to the Host
    // and Origin checks); a page in `[server] player_origins` may use these across origins.
    let player = Router::new()
        .route("/api/playback/list", get(playback::list))
        .route("/api/playback/get", get(playback::get))
        .route("/api/cameras/{id}/snapshot.jpg", get(cameras::snapshot))
        // go2rtc's snapshot URL, so existing clients work unchanged.
        .route("/api/frame.jpeg", get(cameras::frame_jpeg))
        .route("/api/cameras/{id}/mse", get(mse::livelens))
        .route("/api/ws", get(mse::go2rtc))
        .route("/api/cameras/{id}/mjpeg", get(mjpeg::livelens))
        .route("/api/stream.mjpeg", get(mjpeg::go2rtc))
        .route("/api/cameras/{id}/hls/index.m3u8", get(hls::multivariant))
        .route("/api/cameras/{id}/hls/stream.m3u8", get(hls::media))
        .route("/api/cameras/{id}/hls/{file}", get(hls::file))
        .route("/api/stream.m3u8", get(hls::go2rtc))
        .route(
            "/api/cameras/{id}/whep",
            axum::routing::post(webrtc::whep_post).options(webrtc::whep_options),
        )
        .route(
            "/api/cameras/{id}/whep/{session}",
            axum::routing::delete(webrtc::whep_delete).patch(webrtc::whep_patch),
        )
        .route("/api/webrtc", axum::routing::post(webrtc::go2rtc))
        .layer(middleware::from_fn_with_state(
            (state.clone(), Scope::Player),
            guard::cors,
        ));
    // The rest of what needs no token: pages, status, the camera list's stream, and WHIP, which
    // checks its own secret (the token, or the camera's publish key: see
    // `source::publish::may_publish`). Across origins only for `allowed_origins`.
    let open = Router::new()
        .route("/", get(index))
        .route("/healthz", get(system::healthz))
        .route("/metrics", get(system::metrics))
        .route("/api/resources", get(system::resources))
        .route("/api/workers", get(system::workers))
        .route("/api/outputs", get(system::outputs))
        .route("/api/openapi.json", get(openapi::document))
        .route("/player.js", get(player_js))
        .route("/app.js", get(app_js))
        .route("/analysis.js", get(analysis_js))
        .route("/webcam.js", get(webcam_js))
        .route("/recordings.js", get(recordings_js))
        .route("/system.js", get(system_js))
        .route("/api/cameras/stream", get(live::camera_stream))
        .route(
            "/api/cameras/{id}/whip",
            axum::routing::post(webrtc::whip_post).options(webrtc::whep_options),
        )
        .route(
            "/api/cameras/{id}/whip/{session}",
            axum::routing::delete(webrtc::whip_delete).patch(webrtc::whep_patch),
        );
    // Everything else that is not a GET needs the token. Which routes these are is decided by
    // the route that matched (a `route_layer`), not by the text of the path.
    let control = Router::new()
        .route("/api/probe", axum::routing::post(live::probe))
        .route("/api/system", get(monitor::system))
        .merge(cameras::routes())
        .merge(events::routes())
        .merge(analysis::routes())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            guard::require_token,
        ));
    let control = open.merge(control).layer(middleware::from_fn_with_state(
        (state.clone(), Scope::Control),
        guard::cors,
    ));
    player
        .merge(control)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            guard::check_host_and_origin,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

async fn index() -> Html<&'static str> {
    Html(include_str!("../../web/index.html"))
}

async fn app_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../web/app.js"),
    )
}

async fn analysis_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../web/analysis.js"),
    )
}

async fn recordings_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../web/recordings.js"),
    )
}

async fn system_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../web/system.js"),
    )
}

async fn webcam_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../web/webcam.js"),
    )
}

async fn player_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../web/player.js"),
    )
}

/// An error as the client sees it: a status and a message that names the problem.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    problems: Vec<Problem>,
    /// A 500 whose message is meant for the user (it names what failed, never internals).
    shown: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            problems: Vec::new(),
            shown: false,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // A server-side failure is logged with its cause; the client gets words, not internals
        // (SQLite or join errors, paths). 503s say what is unavailable and are kept.
        let message = if self.status == StatusCode::INTERNAL_SERVER_ERROR && !self.shown {
            tracing::error!(status = %self.status, cause = %self.message, "request failed");
            "internal error; the server log has the cause".to_string()
        } else {
            if self.status.is_server_error() {
                tracing::warn!(status = %self.status, reason = %self.message, "request refused");
            }
            self.message
        };
        let mut body = json!({ "error": message });
        if !self.problems.is_empty() {
            body["problems"] = self
                .problems
                .iter()
                .map(|p| json!({ "field": p.place, "message": p.message }))
                .collect();
        }
        (self.status, Json(body)).into_response()
    }
}

impl From<CameraError> for ApiError {
    fn from(e: CameraError) -> ApiError {
        let status = match &e {
            CameraError::NotFound(_) => StatusCode::NOT_FOUND,
            CameraError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            CameraError::Conflict(_) => StatusCode::CONFLICT,
            CameraError::Persist(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = e.to_string();
        // A config write-back that was refused says where: the user has to fix their file.
        let shown = matches!(e, CameraError::Persist(_));
        if shown {
            tracing::error!(status = %status, "{message}");
        }
        let problems = match e {
            CameraError::Invalid(problems) => problems,
            _ => Vec::new(),
        };
        ApiError {
            status,
            message,
            problems,
            shown,
        }
    }
}

impl From<SnapshotError> for ApiError {
    fn from(e: SnapshotError) -> ApiError {
        let status = match e {
            SnapshotError::NoPicture(_) => StatusCode::SERVICE_UNAVAILABLE,
            SnapshotError::Decode(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

/// `Json<T>` whose rejections (bad syntax, wrong field, too large) are JSON errors too.
pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(JsonBody(v)),
            Err(rejection) => {
                let status = rejection.status();
                let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    format!("request body is larger than {} KiB", MAX_BODY / 1024)
                } else {
                    rejection.body_text()
                };
                Err(ApiError::new(status, message))
            }
        }
    }
}
