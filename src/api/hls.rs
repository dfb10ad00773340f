//! LL-HLS over HTTP: `/api/cameras/{id}/hls/index.m3u8` (multivariant), `…/hls/stream.m3u8`
//! (the media playlist, with blocking reload), `…/hls/{file}` (init segment, parts, segments),
//! and go2rtc's `/api/stream.m3u8?src={id}`.
//!
//! Caching, so a CDN can sit in front: parts, segments and init segments never change under
//! their name (`max-age=3600, immutable`); a blocking playlist request names the part it
//! waited for, so its answer may be kept for a few target durations; a plain playlist request
//! is `no-cache`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{ApiError, SharedState, Src};
use crate::cameras::Camera;
use crate::output::hls::muxer::Wanted;
use crate::output::hls::Running;

const PLAYLIST: &str = "application/vnd.apple.mpegurl";
const IMMUTABLE: &str = "public, max-age=3600, immutable";
/// How long a new muxer gets to make its first segment (a keyframe interval or two).
const FIRST_SEGMENT: Duration = Duration::from_secs(10);

pub async fn multivariant(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    multivariant_for(&state, &id, "stream.m3u8".into()).await
}

/// go2rtc's HLS URL: the same multivariant playlist, naming the media playlist by path.
pub async fn go2rtc(
    State(state): State<SharedState>,
    Query(query): Query<Src>,
) -> Result<Response, ApiError> {
    let id = query.id()?;
    let media = format!("/api/cameras/{id}/hls/stream.m3u8");
    multivariant_for(&state, &id, media).await
}

async fn multivariant_for(
    state: &SharedState,
    id: &str,
    media: String,
) -> Result<Response, ApiError> {
    let (_camera, running) = start(state, id).await?;
    let text = running.with(|m| {
        let codec = m.codec().cloned();
        let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-INDEPENDENT-SEGMENTS\n");
        out.push_str(&format!(
            "#EXT-X-STREAM-INF:BANDWIDTH={},CODECS=\"{}\"",
            m.bandwidth().max(1),
            m.codecs().unwrap_or_default()
        ));
        if let Some(c) = codec {
            out.push_str(&format!(",RESOLUTION={}x{}", c.width, c.height));
        }
        out.push('\n');
        out.push_str(&media);
        out.push('\n');
        out
    });
    Ok(playlist_response(text, "no-cache"))
}

/// The camera's muxer, started if needed, once it has a first segment.
async fn start(state: &SharedState, id: &str) -> Result<(Arc<Camera>, Arc<Running>), ApiError> {
    let camera = state.cameras.get(id)?;
    if !camera.stream.state().is_running() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("camera {id:?} is stopped; start it first"),
        ));
    }
    // Twice at most: a muxer found just as its camera restarted ends at once, and a new one
    // follows the camera's new run.
    for _ in 0..2 {
        let running = camera
            .hls
            .running(&camera.stream, state.cameras.hls_settings());
        let ready = running
            .wait_for(FIRST_SEGMENT, |m| m.ready().then_some(()))
            .await;
        if ready.is_some() {
            return Ok((camera, running));
        }
        if !running.ended() {
            break;
        }
    }
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("camera {id:?} has no HLS segment yet (no video, or no keyframe)"),
    ))
}

/// `_HLS_msn`, `_HLS_part`, `_HLS_skip` (RFC 8216bis §6.2.5).
fn delivery(query: &HashMap<String, String>) -> Result<Option<(u64, Option<u64>)>, ApiError> {
    let number = |key: &str| -> Result<Option<u64>, ApiError> {
        query
            .get(key)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!("{key} must be a whole number"),
                    )
                })
            })
            .transpose()
    };
    let (msn, part) = (number("_HLS_msn")?, number("_HLS_part")?);
    match (msn, part) {
        (None, Some(_)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "_HLS_part needs _HLS_msn",
        )),
        (None, None) => Ok(None),
        (Some(m), p) => Ok(Some((m, p))),
    }
}

pub async fn media(
    State(state): State<SharedState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let wanted = delivery(&query)?;
    let (_camera, running) = start(&state, &id).await?;
    let base = format!("{}-", running.prefix);
    let cache = match wanted {
        None => "no-cache".to_string(),
        Some((msn, part)) => {
            if running.with(|m| m.wanted(msn, part)) == Wanted::TooFar {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "_HLS_msn/_HLS_part is further ahead than the playlist can reach",
                ));
            }
            let target = running.with(|m| m.target_duration());
            let within = Duration::from_secs(3 * target);
            let found = running
                .wait_for(within, |m| {
                    (m.wanted(msn, part) == Wanted::Ready).then_some(())
                })
                .await;
            if found.is_none() {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the asked-for part did not come in time",
                ));
            }
            format!("public, max-age={}", 6 * target)
        }
    };
    // Delta updates for clients that ask (hls.js, Safari): `YES` or `v2`.
    let skip = query
        .get("_HLS_skip")
        .is_some_and(|v| v == "YES" || v == "v2");
    let text = running.with(|m| m.playlist(&base, skip));
    Ok(playlist_response(text, &cache))
}

fn playlist_response(text: String, cache: &str) -> Response {
    (
        [
            (header::CONTENT_TYPE, PLAYLIST.to_string()),
            (header::CACHE_CONTROL, cache.to_string()),
        ],
        text,
    )
        .into_response()
}

/// What a file name asks for.
#[derive(Debug, PartialEq)]
enum File {
    Init(String),
    Segment(u64),
    Part(u64),
}

fn parse_file<'a>(name: &'a str, prefix: &str) -> Option<File> {
    let rest: &'a str = name.strip_prefix(prefix)?.strip_prefix('-')?;
    let stem = rest.strip_suffix(".mp4")?;
    if stem.starts_with("init") {
        return Some(File::Init(rest.to_string()));
    }
    if let Some(n) = stem.strip_prefix("seg") {
        return n.parse().ok().map(File::Segment);
    }
    stem.strip_prefix("part")?.parse().ok().map(File::Part)
}

pub async fn file(
    State(state): State<SharedState>,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let camera = state.cameras.get(&id)?;
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, format!("no HLS file {name:?}"));
    let running = camera.hls.current().ok_or_else(not_found)?;
    let bytes = match parse_file(&name, &running.prefix).ok_or_else(not_found)? {
        File::Init(file) => running.with(|m| m.init_file(&file).cloned()),
        File::Segment(msn) => running.with(|m| m.segment(msn).map(|s| s.data())),
        File::Part(n) => {
            // The part a preload hint names (or one just after) is sent once it is complete.
            let ahead = running.with(|m| n >= m.next_part() && n <= m.next_part() + 3);
            if ahead {
                let within = Duration::from_secs(3 * running.with(|m| m.target_duration()));
                running
                    .wait_for(within, |m| m.part(n).map(|p| p.data.clone()))
                    .await
            } else {
                running.with(|m| m.part(n).map(|p| p.data.clone()))
            }
        }
    };
    let bytes = bytes.ok_or_else(not_found)?;
    Ok((
        [
            (header::CONTENT_TYPE, "video/mp4"),
            (header::CACHE_CONTROL, IMMUTABLE),
        ],
        bytes,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_read_only_with_this_runs_prefix() {
        assert_eq!(
            parse_file("ab12-init0.mp4", "ab12"),
            Some(File::Init("init0.mp4".into()))
        );
        assert_eq!(parse_file("ab12-seg7.mp4", "ab12"), Some(File::Segment(7)));
        assert_eq!(parse_file("ab12-part70.mp4", "ab12"), Some(File::Part(70)));
        assert_eq!(parse_file("cd34-part70.mp4", "ab12"), None);
        assert_eq!(parse_file("ab12-part70.ts", "ab12"), None);
        assert_eq!(parse_file("ab12-part-1.mp4", "ab12"), None);
        assert_eq!(parse_file("ab12-segx.mp4", "ab12"), None);
        assert_eq!(parse_file("../etc/passwd", "ab12"), None);
    }

    #[test]
    fn part_without_msn_and_bad_numbers_are_refused() {
        let q = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(delivery(&q(&[("_HLS_part", "1")])).is_err());
        assert!(delivery(&q(&[("_HLS_msn", "x")])).is_err());
        assert!(delivery(&q(&[("_HLS_msn", "-1")])).is_err());
        assert_eq!(delivery(&q(&[])).unwrap(), None);
        assert_eq!(
            delivery(&q(&[("_HLS_msn", "4"), ("_HLS_part", "2")])).unwrap(),
            Some((4, Some(2)))
        );
    }
}
