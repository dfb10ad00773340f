//! Playback of recordings, shaped like MediaMTX's playback server so its clients work:
//! `GET /api/playback/list?path={camera}&start=&end=` → `[{start, duration, url}]` and
//! `GET /api/playback/get?path={camera}&start=&duration=&format=fmp4|mp4` → one stitched file,
//! streamed from the segment files (never loaded whole), with byte ranges for seeking.
//! Reads of video need no token, like every other way to watch.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use super::{ApiError, SharedState};
use crate::common::{check_camera_id, parse_rfc3339, rfc3339};
use crate::recording::playback::{byte_range, Format, Piece};

/// The longest clip one request may ask for (its sample table is held while it streams).
const MAX_DURATION: Duration = Duration::from_secs(4 * 3600);
/// What the body sends at a time.
const CHUNK: usize = 256 * 1024;

#[derive(Deserialize)]
pub struct ListQuery {
    path: Option<String>,
    start: Option<String>,
    end: Option<String>,
}

#[derive(Serialize)]
pub struct ListEntry {
    start: String,
    duration: f64,
    url: String,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

fn camera(path: Option<String>) -> Result<String, ApiError> {
    let id = path.ok_or_else(|| bad("missing query parameter path (the camera id)"))?;
    check_camera_id(&id).map_err(|e| bad(format!("path: {e}")))?;
    Ok(id)
}

fn time(name: &str, text: Option<&str>) -> Result<Option<i64>, ApiError> {
    text.map(|t| parse_rfc3339(t).map_err(|e| bad(format!("{name}: {e}"))))
        .transpose()
}

fn text_time(us: i64) -> String {
    rfc3339(UNIX_EPOCH + Duration::from_micros(us.max(0) as u64))
}

/// The URL of `duration_us` of `camera`'s footage from `start_us`.
pub fn get_url(camera: &str, start_us: i64, duration_us: i64, format: &str) -> String {
    let base = String::from("/api/playback/get?");
    let at = base.len();
    let mut url = url::form_urlencoded::Serializer::for_suffix(base, at);
    url.append_pair("path", camera)
        .append_pair("start", &text_time(start_us))
        .append_pair("duration", &format!("{:.3}", duration_us as f64 / 1e6));
    if !format.is_empty() {
        url.append_pair("format", format);
    }
    url.finish()
}

pub async fn list(
    State(state): State<SharedState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<ListEntry>>, ApiError> {
    let id = camera(q.path)?;
    let start = time("start", q.start.as_deref())?.unwrap_or(0);
    let end = time("end", q.end.as_deref())?.unwrap_or(i64::MAX / 2);
    if end <= start {
        return Err(bad("end must be after start"));
    }
    let recording = state.cameras.recording().clone();
    let camera_id = id.clone();
    let spans = tokio::task::spawn_blocking(move || recording.spans(&camera_id, start, end))
        .await
        .map_err(internal)?
        .map_err(internal)?;
    Ok(Json(
        spans
            .into_iter()
            .map(|s| ListEntry {
                start: text_time(s.start_us),
                duration: (s.end_us - s.start_us) as f64 / 1e6,
                url: get_url(&id, s.start_us, s.end_us - s.start_us, ""),
            })
            .collect(),
    ))
}

#[derive(Deserialize)]
pub struct GetQuery {
    path: Option<String>,
    start: Option<String>,
    duration: Option<String>,
    format: Option<String>,
    /// Any value: answer as an attachment (a download).
    download: Option<String>,
}

pub async fn get(
    State(state): State<SharedState>,
    Query(q): Query<GetQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = camera(q.path)?;
    let start = time("start", q.start.as_deref())?
        .ok_or_else(|| bad("missing query parameter start (RFC 3339)"))?;
    let seconds: f64 = q
        .duration
        .as_deref()
        .ok_or_else(|| bad("missing query parameter duration (seconds)"))?
        .parse()
        .ok()
        .filter(|d: &f64| d.is_finite() && *d > 0.0 && *d <= MAX_DURATION.as_secs_f64())
        .ok_or_else(|| {
            bad(format!(
                "duration must be a number of seconds from 0 to {}",
                MAX_DURATION.as_secs()
            ))
        })?;
    let format = match q.format.as_deref() {
        None | Some("fmp4") => Format::Fmp4,
        Some("mp4") => Format::Mp4,
        Some(other) => return Err(bad(format!("format {other:?}: use fmp4 or mp4"))),
    };
    let end = start + (seconds * 1e6) as i64;
    let recording = state.cameras.recording().clone();
    let camera_id = id.clone();
    let answer =
        tokio::task::spawn_blocking(move || recording.answer(&camera_id, start, end, format))
            .await
            .map_err(internal)?
            .map_err(internal)?
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("no recording of {id:?} from {}", text_time(start)),
                )
            })?;
    let len = answer.plan.len;
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let Some(range) = byte_range(range, len) else {
        return Ok((
            StatusCode::RANGE_NOT_SATISFIABLE,
            [(header::CONTENT_RANGE, format!("bytes */{len}"))],
        )
            .into_response());
    };
    let (status, pieces, from, to) = match range {
        Some((from, to)) => (
            StatusCode::PARTIAL_CONTENT,
            answer.plan.range(from, to),
            from,
            to,
        ),
        None => (StatusCode::OK, answer.plan.pieces.clone(), 0, len),
    };
    let mut response = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "video/mp4")
        .header(header::CONTENT_LENGTH, to - from)
        .header(header::ACCEPT_RANGES, "bytes")
        // The same URL can grow while its span is being recorded.
        .header(header::CACHE_CONTROL, "no-cache");
    if status == StatusCode::PARTIAL_CONTENT {
        response = response.header(
            header::CONTENT_RANGE,
            format!("bytes {from}-{}/{len}", to - 1),
        );
    }
    if q.download.is_some() {
        let name = format!(
            "{id}-{}.mp4",
            text_time(answer.plan.start_us).replace(':', "-")
        );
        if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
            response = response.header(header::CONTENT_DISPOSITION, v);
        }
    }
    response.body(body(pieces, answer.files)).map_err(internal)
}

/// Streams `pieces`, reading the file ranges on the blocking pool in batches of [`CHUNK`];
/// the reader stops as soon as the client is gone (its channel closes).
fn body(pieces: Vec<Piece>, paths: Vec<PathBuf>) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let mut files: Vec<Option<File>> = paths.iter().map(|_| None).collect();
        let mut batch = BytesMut::with_capacity(CHUNK);
        for piece in pieces {
            let result = match piece {
                Piece::Bytes(b) => {
                    batch.extend_from_slice(&b);
                    Ok(())
                }
                Piece::File { file, offset, len } => {
                    let opened = match &mut files[file] {
                        Some(f) => Ok(f),
                        slot => File::open(&paths[file]).map(|f| slot.insert(f)),
                    };
                    opened.and_then(|f| {
                        let at = batch.len();
                        batch.resize(at + len as usize, 0);
                        f.read_exact_at(&mut batch[at..], offset)
                    })
                }
            };
            if let Err(e) = result {
                // The answer is cut short; a file vanished under it (retention, by hand).
                tracing::warn!("playback read failed: {e}");
                let _ = tx.blocking_send(Err(e));
                return;
            }
            if batch.len() >= CHUNK && tx.blocking_send(Ok(batch.split().freeze())).is_err() {
                return;
            }
        }
        if !batch.is_empty() {
            let _ = tx.blocking_send(Ok(batch.freeze()));
        }
    });
    Body::from_stream(tokio_stream_from(rx))
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
