//! Analysis events: the query API, the JPEG each event came from, and the live SSE stream.

use std::convert::Infallible;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::Stream;
use serde::{Deserialize, Serialize};

use super::{ApiError, SharedState};
use crate::analysis::events::{self, Event};
use crate::recording::Recording;

pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/api/events", get(list))
        .route("/api/events/stream", get(stream))
        .route("/api/events/search", get(search))
        .route("/api/events/{id}/snapshot.jpg", get(snapshot))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventQuery {
    camera: Option<String>,
    kind: Option<String>,
    /// Milliseconds since the Unix epoch (inclusive).
    since: Option<i64>,
    until: Option<i64>,
    /// At most 1000 (default 100).
    limit: Option<u32>,
}

/// 400 for a query string that does not parse, naming what it takes.
fn bad_query(e: impl std::fmt::Display, first: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        format!("bad query ({e}); use {first}, since, until (ms since the epoch), limit"),
    )
}

async fn list(
    State(state): State<SharedState>,
    query: Result<Query<EventQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<EventJson>>, ApiError> {
    let Query(q) = query.map_err(|e| bad_query(e, "camera, kind"))?;
    let store = state.analysis.events().clone();
    let query = events::Query {
        camera: q.camera,
        kind: q.kind,
        since_ms: q.since,
        until_ms: q.until,
        limit: q.limit,
    };
    let recording = state.cameras.recording().clone();
    let found = tokio::task::spawn_blocking(move || {
        let found = store.query(&query)?;
        Ok::<_, String>(with_clips(&recording, found))
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok(Json(found))
}

/// An event as the API shows it: with the URL of its footage when that was recorded.
#[derive(Serialize)]
struct EventJson {
    #[serde(flatten)]
    event: Event,
    #[serde(skip_serializing_if = "Option::is_none")]
    clip: Option<String>,
}

/// Each event with its clip.
fn with_clips(recording: &Recording, events: Vec<Event>) -> Vec<EventJson> {
    events
        .into_iter()
        .map(|event| EventJson {
            clip: clip(recording, &event),
            event,
        })
        .collect()
}

/// An event's clip: `[recording] pre_roll` before it to `post_roll` after, as MP4, when the
/// camera was recording at the event's time.
fn clip(recording: &Recording, event: &Event) -> Option<String> {
    let settings = recording.settings();
    let (pre, post) = (
        settings.pre_roll.as_micros() as i64,
        settings.post_roll.as_micros() as i64,
    );
    let at = event.time_ms * 1000;
    let recorded = recording
        .spans(&event.camera, at - 1, at + 1)
        .is_ok_and(|s| !s.is_empty());
    recorded.then(|| super::playback::get_url(&event.camera, at - pre, pre + post, "mp4"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchQuery {
    q: Option<String>,
    camera: Option<String>,
    since: Option<i64>,
    until: Option<i64>,
    limit: Option<u32>,
}

#[derive(Serialize)]
struct FoundJson {
    #[serde(flatten)]
    found: events::Found,
    #[serde(skip_serializing_if = "Option::is_none")]
    clip: Option<String>,
}

/// Full-text search over descriptions, transcripts, summaries and alert answers, best first.
async fn search(
    State(state): State<SharedState>,
    query: Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<FoundJson>>, ApiError> {
    let Query(q) = query.map_err(|e| bad_query(e, "q, camera"))?;
    let words = q.q.unwrap_or_default();
    if words.trim().is_empty() || words.len() > 500 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "q must be 1 to 500 characters of words to find",
        ));
    }
    let store = state.analysis.events().clone();
    let recording = state.cameras.recording().clone();
    let filter = events::Query {
        camera: q.camera,
        kind: None,
        since_ms: q.since,
        until_ms: q.until,
        limit: q.limit,
    };
    let found = tokio::task::spawn_blocking(move || {
        let found = store.search(&words, &filter)?;
        Ok::<_, String>(
            found
                .into_iter()
                .map(|found| FoundJson {
                    clip: clip(&recording, &found.event),
                    found,
                })
                .collect::<Vec<_>>(),
        )
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok(Json(found))
}

async fn snapshot(
    State(state): State<SharedState>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let store = state.analysis.events().clone();
    let jpeg = tokio::task::spawn_blocking(move || store.snapshot(id))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("event {id} has no snapshot (or does not exist)"),
            )
        })?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            (header::CACHE_CONTROL, "max-age=86400"),
        ],
        jpeg,
    )
        .into_response())
}

/// Every new event as `event: <kind>` with the event as JSON, until the client leaves or the
/// server shuts down. A client that falls behind is told how many it missed.
async fn stream(
    State(state): State<SharedState>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let receiver = state.analysis.events().subscribe();
    let shutdown = state.shutdown.clone();
    let stream = futures_util::stream::unfold(receiver, move |mut receiver| {
        let shutdown = shutdown.clone();
        async move {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return None,
                r = receiver.recv() => r,
            };
            let sse = match next {
                Ok(event) => SseEvent::default()
                    .event(event.kind.clone())
                    .id(event.id.to_string())
                    .json_data(&*event)
                    .unwrap_or_else(|_| SseEvent::default().comment("serialization failed")),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    SseEvent::default().event("lagged").data(n.to_string())
                }
                Err(_) => return None,
            };
            Some((Ok(sse), receiver))
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
