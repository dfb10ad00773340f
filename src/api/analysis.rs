//! Asking a camera's model on demand: `POST /api/cameras/{id}/summary` (a summary of a period,
//! stored as a `summary` event) and `POST /api/cameras/{id}/analysis/test` (the model settings
//! a form is about to save, tried on the camera's picture now).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, JsonBody, SharedState};
use crate::analysis::events::now_ms;
use crate::config::analysis::VlmConfig;
use crate::config::Problem;

pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/api/cameras/{id}/summary", post(summary))
        .route("/api/cameras/{id}/analysis/test", post(test))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Period {
    /// Milliseconds since the epoch; by default the last 15 minutes (or the summary's `every`).
    since: Option<i64>,
    until: Option<i64>,
}

async fn summary(
    State(state): State<SharedState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let camera = state.cameras.get(&id)?;
    let config = camera.analysis();
    let period: Period = if body.is_empty() {
        Period::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("expected {{since, until}} in ms: {e}"),
            )
        })?
    };
    let until = period.until.unwrap_or_else(now_ms);
    let span = config
        .summary
        .as_ref()
        .and_then(|s| s.every())
        .map_or(15 * 60_000, |d| d.as_millis() as i64);
    let since = period.since.unwrap_or(until - span);
    if since >= until {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "since must be before until",
        ));
    }
    match state.analysis.summarise(&id, &config, since, until).await {
        Ok(Some(event)) => Ok((StatusCode::CREATED, Json(&*event)).into_response()),
        Ok(None) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "nothing to summarise: no descriptions, alerts or transcripts in that period",
        )),
        Err(reason) => Err(ApiError::new(StatusCode::BAD_GATEWAY, reason)),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestRequest {
    vlm: serde_json::Value,
    /// Asked as an alert rule would ask it; without one, the settings' prompt.
    question: Option<String>,
}

async fn test(
    State(state): State<SharedState>,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<TestRequest>,
) -> Result<Response, ApiError> {
    let camera = state.cameras.get(&id)?;
    let mut table: toml::Table = serde_json::from_value(request.vlm)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("vlm: {e}")))?;
    // A key shown masked is the camera's own, and goes only where it is saved to go: a test
    // must not send it to another endpoint (the rule every masked secret follows).
    let saved = camera.config().analysis.and_then(|a| a.get("vlm").cloned());
    crate::config::restore_masked_secrets(
        &mut table,
        saved.as_ref().and_then(|v| v.as_table()),
        "analysis.vlm",
    )
    .map_err(crate::cameras::CameraError::Invalid)?;
    let vlm: VlmConfig = toml::Value::Table(table)
        .try_into()
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("vlm: {e}")))?;
    let problems: Vec<Problem> = vlm
        .problems()
        .into_iter()
        .map(|(key, message)| Problem {
            place: format!("analysis.vlm.{key}"),
            message,
        })
        .chain(
            request
                .question
                .as_deref()
                .filter(|q| q.trim().is_empty())
                .map(|_| Problem {
                    place: "question".into(),
                    message: "is empty".into(),
                }),
        )
        .collect();
    if !problems.is_empty() {
        return Err(crate::cameras::CameraError::Invalid(problems).into());
    }
    let jpeg = camera.snapshot.get(&camera.stream).await?;
    match state.analysis.test_model(jpeg, vlm, request.question).await {
        Ok((answer, took)) => Ok(Json(json!({
            "ok": true,
            "answer": answer,
            "latency_ms": took.as_millis() as u64,
        }))
        .into_response()),
        Err(reason) => Err(ApiError::new(StatusCode::BAD_GATEWAY, reason)),
    }
}
