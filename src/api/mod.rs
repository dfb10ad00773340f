//! The HTTP API (axum). The only module that knows HTTP: it maps requests to hub and output calls
//! and every error to a status code and a JSON `{"error": …}` body in one place ([`ApiError`]).

mod cameras;
mod events;
mod live;
mod mse;
mod openapi;
mod system;
mod webrtc;

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::config::Problem;
use crate::hub::{Hub, HubError};
use crate::output::snapshot::{SnapshotError, Snapshots};

/// Request bodies larger than this get 413.
pub const MAX_BODY: usize = 64 * 1024;

pub struct AppState {
    pub hub: Arc<Hub>,
    pub snapshots: Snapshots,
    /// When set, every state-changing request needs `Authorization: Bearer <token>`.
    pub token: Option<String>,
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// The WebRTC task; `None` when its UDP port could not be opened.
    pub webrtc: Option<Arc<crate::output::webrtc::WebRtc>>,
    /// Cancelled at shutdown: long-lived connections (WebSockets) end on it.
    pub shutdown: tokio_util::sync::CancellationToken,
    pub workers: Arc<crate::supervisor::Workers>,
    pub analysis: Arc<crate::analysis::Analysis>,
}

pub type SharedState = Arc<AppState>;

pub fn router(state: SharedState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/healthz", get(system::healthz))
        .route("/metrics", get(system::metrics))
        .route("/api/resources", get(system::resources))
        .route("/api/workers", get(system::workers))
        .route("/api/openapi.json", get(openapi::document))
        .route("/player.js", get(player_js))
        .route("/app.js", get(app_js))
        .route("/analysis.js", get(analysis_js))
        .route("/api/cameras/stream", get(live::camera_stream))
        .route("/api/probe", axum::routing::post(live::probe))
        .route("/api/cameras/{id}/mse", get(mse::livelens))
        .route("/api/ws", get(mse::go2rtc))
        .route(
            "/api/cameras/{id}/whep",
            axum::routing::post(webrtc::whep_post).options(webrtc::whep_options),
        )
        .route(
            "/api/cameras/{id}/whep/{session}",
            axum::routing::delete(webrtc::whep_delete).patch(webrtc::whep_patch),
        )
        .route("/api/webrtc", axum::routing::post(webrtc::go2rtc))
        .merge(cameras::routes())
        .merge(events::routes())
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
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

async fn player_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../web/player.js"),
    )
}

/// Refuses state-changing requests without the configured token (DESIGN principle 8).
async fn require_token(State(state): State<SharedState>, request: Request, next: Next) -> Response {
    // Watching (WHEP, go2rtc's WebRTC offer) changes no camera: it needs no token, like MSE.
    let path = request.uri().path();
    let watching = path.ends_with("/whep") || path.contains("/whep/") || path == "/api/webrtc";
    let changes_state = !watching
        && !matches!(
            *request.method(),
            Method::GET | Method::HEAD | Method::OPTIONS
        );
    if let (true, Some(token)) = (changes_state, &state.token) {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this call changes state and needs the header Authorization: Bearer <token>",
            )
            .into_response();
        }
    }
    next.run(request).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An error as the client sees it: a status and a message that names the problem.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    problems: Vec<Problem>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            problems: Vec::new(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message });
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

impl From<HubError> for ApiError {
    fn from(e: HubError) -> ApiError {
        let status = match &e {
            HubError::NotFound(_) => StatusCode::NOT_FOUND,
            HubError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            HubError::Conflict(_) => StatusCode::CONFLICT,
            HubError::Persist(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = e.to_string();
        let problems = match e {
            HubError::Invalid(problems) => problems,
            _ => Vec::new(),
        };
        ApiError {
            status,
            message,
            problems,
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
