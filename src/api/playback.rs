//! Playback of recordings, shaped like MediaMTX's playback server so its clients work:
//! `GET /api/playback/list?path={camera}&start=&end=` → `[{start, duration, url}]` and
//! `GET /api/playback/get?path={camera}&start=&duration=&format=fmp4|mp4` → one stitched file,
//! streamed from the segment files (never loaded whole), with byte ranges for seeking.
//! Reads of video need no token, like every other way to watch.

use std::collections::HashMap;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use super::{ApiError, SharedState};
use crate::common::{check_camera_id, parse_rfc3339, rfc3339};
use crate::recording::playback::{byte_range, Format, Piece};
use crate::recording::Span;
use crate::resources::{Counted, Resource};

/// The longest clip one request may ask for (its sample table is held while it streams).
const MAX_DURATION: Duration = Duration::from_secs(4 * 3600);
/// What the body reads (on the blocking pool, one batch per call) and sends at a time.
const CHUNK: usize = 64 * 1024;
/// Playback bodies streaming at once, in all (256). A body waiting on a client that does not
/// read costs what hyper has queued for it (≤ its 64 KiB buffer and a [`CHUNK`]), its segment
/// files and its socket: 256 stalled bodies took RSS from 19 to ~58 MiB in the attack test. 256
/// downloads and seeking players at once is far more than a camera server's viewers make.
const MAX_BODIES: usize = 256;
/// Playback bodies streaming at once to one client address (16): a player seeking keeps one or
/// two requests open, a page of clips a handful; one address can never take the whole of
/// [`MAX_BODIES`] (the first attack held 560).
const MAX_BODIES_PER_ADDRESS: usize = 16;
/// Playback reads on the blocking pool at once, for every request together (8): preparing an
/// answer (its moofs) or reading one 64 KiB batch of a body takes a thread for that long, and
/// 256 bodies starting together would otherwise start a thread each (the pool grew by 80 in the
/// attack test); a few reads at a time keep a disk busy.
const MAX_READS: usize = 8;
/// What a refused client is told to wait, in seconds.
const RETRY_AFTER: &str = "2";

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
    Ok(Json(entries(&id, spans)))
}

/// The list's entries for `spans`. Every entry's URL must play: a span longer than a request
/// may ask for ([`MAX_DURATION`]) is listed as consecutive entries of at most that, and a
/// duration is rounded up to the millisecond the URL writes (never `0.000`).
fn entries(id: &str, spans: Vec<Span>) -> Vec<ListEntry> {
    let most = MAX_DURATION.as_micros() as i64;
    let mut out = Vec::new();
    for span in spans {
        let mut start = span.start_us;
        while start < span.end_us {
            let end = span.end_us.min(start + most);
            // Whole milliseconds from `start`, at least one.
            let length = ((end - start + 999) / 1000 * 1000).clamp(1000, most);
            out.push(ListEntry {
                start: text_time(start),
                duration: length as f64 / 1e6,
                url: get_url(id, start, length, ""),
            });
            start = end;
        }
    }
    out
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
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
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
    // Taken before any work: a refused client costs nothing.
    let ip = peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.0 .0.ip());
    let permit = match BODIES.admit(ip) {
        Ok(permit) => permit,
        Err(refused) => return Ok(refused.into_response()),
    };
    let recording = state.cameras.recording().clone();
    let camera_id = id.clone();
    // Preparing the answer reads the segments' moofs: one of the reads at a time.
    let reading = READS.acquire().await.map_err(internal)?;
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
    drop(reading);
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
    response
        .body(body(pieces, answer.files, permit))
        .map_err(internal)
}

/// Places for the batch reads of every body (one HTTP API a process).
static READS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_READS);

/// The playback bodies streaming now, in all and per client address.
static BODIES: LazyLock<Arc<Bodies>> =
    LazyLock::new(|| Arc::new(Bodies::new(MAX_BODIES, MAX_BODIES_PER_ADDRESS)));

/// Counts of the bodies streaming, in all and per address: a place is taken before the answer
/// is prepared and given back when the body is dropped (finished, or its connection gone).
struct Bodies {
    total: usize,
    per_address: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// Why a body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// This address streams [`MAX_BODIES_PER_ADDRESS`] already: 429.
    Address,
    /// [`MAX_BODIES`] stream already: 503.
    Full,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Refused::Address => (
                StatusCode::TOO_MANY_REQUESTS,
                format!("this address has {MAX_BODIES_PER_ADDRESS} playback downloads open; try again when one ends"),
            ),
            Refused::Full => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{MAX_BODIES} playback downloads are open; try again shortly"),
            ),
        };
        let mut response = ApiError::new(status, message).into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER));
        response
    }
}

impl Bodies {
    fn new(total: usize, per_address: usize) -> Bodies {
        Bodies {
            total,
            per_address,
            open: Mutex::new((0, HashMap::new())),
        }
    }

    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Refused> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per_ip) = &mut *open;
        let mine = per_ip.get(&ip).copied().unwrap_or(0);
        if mine >= self.per_address {
            return Err(Refused::Address);
        }
        if *total >= self.total {
            return Err(Refused::Full);
        }
        *per_ip.entry(ip).or_insert(0) += 1;
        *total += 1;
        Ok(Permit {
            bodies: self.clone(),
            ip,
            _counted: Counted::new(Resource::PlaybackDownload),
        })
    }
}

/// A body's place in [`Bodies`].
struct Permit {
    bodies: Arc<Bodies>,
    ip: IpAddr,
    _counted: Counted,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self.bodies.open.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per_ip) = &mut *open;
        *total -= 1;
        if let Some(mine) = per_ip.get_mut(&self.ip) {
            *mine -= 1;
            if *mine == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

/// Where a body is: the pieces still to send and the files opened so far.
struct Reading {
    pieces: std::vec::IntoIter<Piece>,
    paths: Arc<[PathBuf]>,
    files: Vec<Option<File>>,
    _permit: Permit,
}

/// Streams `pieces` in batches of [`CHUNK`]. Each batch is read by one short call on the
/// blocking pool when hyper asks for it, so a client that stops reading holds no thread (it
/// holds the batch hyper is writing, its place in [`Bodies`] and the open files); a client that
/// takes nothing is let go by the connection's write deadline.
fn body(pieces: Vec<Piece>, paths: Vec<PathBuf>, permit: Permit) -> Body {
    let reading = Reading {
        files: paths.iter().map(|_| None).collect(),
        paths: paths.into(),
        pieces: pieces.into_iter(),
        _permit: permit,
    };
    let stream = futures_util::stream::unfold(Some(reading), |state| async move {
        let mut reading = state?;
        let mut batch = Vec::new();
        let mut len = 0;
        for piece in reading.pieces.by_ref() {
            len += match &piece {
                Piece::Bytes(b) => b.len(),
                Piece::File { len, .. } => *len as usize,
            };
            batch.push(piece);
            if len >= CHUNK {
                break;
            }
        }
        if batch.is_empty() {
            return None;
        }
        let Ok(_reading) = READS.acquire().await else {
            return None; // never closed
        };
        let read = tokio::task::spawn_blocking(move || {
            let result = read_batch(&reading.paths, &mut reading.files, batch, len);
            (reading, result)
        })
        .await;
        match read {
            Ok((reading, Ok(bytes))) => Some((Ok(bytes), Some(reading))),
            Ok((_, Err(e))) => {
                // The answer is cut short; a file vanished under it (retention, by hand).
                tracing::warn!("playback read failed: {e}");
                Some((Err(e), None))
            }
            Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
        }
    });
    Body::from_stream(stream)
}

/// Reads one batch of pieces into one buffer of `len` bytes.
fn read_batch(
    paths: &[PathBuf],
    files: &mut [Option<File>],
    batch: Vec<Piece>,
    len: usize,
) -> std::io::Result<Bytes> {
    let mut out = BytesMut::with_capacity(len);
    for piece in batch {
        match piece {
            Piece::Bytes(b) => out.extend_from_slice(&b),
            Piece::File { file, offset, len } => {
                let f = match &mut files[file] {
                    Some(f) => f,
                    slot => slot.insert(File::open(&paths[file])?),
                };
                let at = out.len();
                out.resize(at + len as usize, 0);
                f.read_exact_at(&mut out[at..], offset)?;
            }
        }
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_bounded_per_address_then_in_all_and_places_come_back() {
        let bodies = Arc::new(Bodies::new(3, 2));
        let one: IpAddr = [10, 0, 0, 1].into();
        let two: IpAddr = [10, 0, 0, 2].into();
        let a = bodies.admit(one).unwrap();
        let b = bodies.admit(one).unwrap();
        assert_eq!(bodies.admit(one).err(), Some(Refused::Address));
        let c = bodies.admit(two).unwrap();
        assert_eq!(bodies.admit(two).err(), Some(Refused::Full));
        drop(a);
        let d = bodies.admit(two).unwrap();
        drop((b, c, d));
        let open = bodies.open.lock().unwrap();
        assert_eq!(open.0, 0);
        assert!(open.1.is_empty(), "no address is remembered once done");
    }

    #[test]
    fn every_listed_entry_asks_for_what_a_request_may() {
        let hour = 3_600_000_000;
        let spans = vec![
            Span {
                start_us: 0,
                end_us: 9 * hour + 1,
            },
            Span {
                start_us: 20 * hour,
                end_us: 20 * hour + 300,
            },
        ];
        let got = entries("cam", spans);
        let durations: Vec<f64> = got.iter().map(|e| e.duration).collect();
        assert_eq!(durations, [14_400.0, 14_400.0, 3_600.001, 0.001]);
        assert!(got[1].url.contains("duration=14400.000"), "{}", got[1].url);
        assert!(got[3].url.contains("duration=0.001"), "{}", got[3].url);
        assert_eq!(got[1].start, text_time(4 * hour));
    }
}
