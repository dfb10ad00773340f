//! `GET /api/cameras/{id}/mjpeg` and go2rtc's `/api/stream.mjpeg?src={id}`: the camera as
//! `multipart/x-mixed-replace` JPEG pictures, which an `<img>` shows as video.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{ApiError, SharedState, Src};
use crate::output::mjpeg;

pub async fn livelens(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    respond(&state, &id)
}

pub async fn go2rtc(
    State(state): State<SharedState>,
    Query(query): Query<Src>,
) -> Result<Response, ApiError> {
    respond(&state, &query.id()?)
}

fn respond(state: &SharedState, id: &str) -> Result<Response, ApiError> {
    let camera = state.cameras.get(id)?;
    if !camera.stream.state().is_running() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("camera {id:?} is stopped; start it first"),
        ));
    }
    let encoder = camera
        .mjpeg
        .encoder(&camera.stream, state.cameras.mjpeg_settings());
    let body = Body::from_stream(mjpeg::parts(encoder, state.shutdown.clone()));
    Ok((
        [
            (header::CONTENT_TYPE, mjpeg::CONTENT_TYPE),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response())
}
