//! JPEG snapshots: decode the cached GOP (keyframe + following frames) with openh264 and encode
//! the newest picture as JPEG.
//!
//! Decoding is blocking work, so it runs on the blocking pool and is awaited. Each camera's
//! [`Cache`] keeps a picture for up to [`MAX_AGE`], and concurrent requests share one decode.

use std::time::{Duration, Instant};

use bytes::Bytes;
use openh264::decoder::{DecodedYUV, Decoder, DecoderConfig, Flush};
use openh264::formats::YUVSource;
use openh264::OpenH264API;

use crate::hub::{StateName, Stream};
use crate::media::{h264, Frame};
use crate::resources::{Counted, Resource, ViewerKind};

/// How long a snapshot waits for an idle or starting camera to show a picture.
const WAKE_LIMIT: Duration = Duration::from_secs(10);
pub const MAX_AGE: Duration = Duration::from_secs(1);
const JPEG_QUALITY: u8 = 80;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotError {
    /// The camera has no picture to show (not live yet, or stopped); the text says why.
    NoPicture(String),
    Decode(String),
}

impl std::fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotError::NoPicture(m) | SnapshotError::Decode(m) => f.write_str(m),
        }
    }
}

/// One camera's snapshot cache, owned by its camera and gone with it.
#[derive(Default)]
pub struct Cache {
    /// Held across the decode, so one request decodes and the others wait for its result.
    in_flight: tokio::sync::Mutex<Option<(Instant, Bytes)>>,
}

impl Cache {
    /// The current picture of `stream` as JPEG, at most [`MAX_AGE`] old.
    pub async fn get(&self, stream: &Stream) -> Result<Bytes, SnapshotError> {
        let mut cached = self.in_flight.lock().await;
        if let Some((at, jpeg)) = &*cached {
            if at.elapsed() <= MAX_AGE {
                return Ok(jpeg.clone());
            }
        }
        let mut gop = stream.gop();
        if gop.is_empty() && matches!(stream.state().name(), StateName::Idle | StateName::Starting)
        {
            // An on-demand camera starts for the snapshot; a starting one gets a moment.
            stream.wake(WAKE_LIMIT).await;
            gop = stream.gop();
        }
        if gop.is_empty() {
            let state = stream.state();
            return Err(SnapshotError::NoPicture(format!(
                "camera {:?} has no picture yet (state: {:?}{})",
                stream.id(),
                state.name(),
                state.reason().map(|r| format!(", {r}")).unwrap_or_default()
            )));
        }
        let _viewer = Counted::new(Resource::Viewer(ViewerKind::Snapshot));
        let jpeg = tokio::task::spawn_blocking(move || encode_jpeg_from_gop(&gop))
            .await
            .map_err(|e| SnapshotError::Decode(format!("snapshot worker failed: {e}")))??;
        *cached = Some((Instant::now(), jpeg.clone()));
        Ok(jpeg)
    }
}

/// Decodes `gop` (starting at a keyframe) and returns the last picture as JPEG.
pub fn encode_jpeg_from_gop(gop: &[Frame]) -> Result<Bytes, SnapshotError> {
    let codec = gop
        .iter()
        .find_map(|f| f.video_codec.clone())
        .ok_or_else(|| SnapshotError::NoPicture("no video in the cache".into()))?;
    if codec.codec != "h264" {
        return Err(SnapshotError::Decode(format!(
            "snapshots of {} video are not supported",
            codec.codec
        )));
    }
    let config = DecoderConfig::new().flush_after_decode(Flush::NoFlush);
    let mut decoder = Decoder::with_api_config(OpenH264API::from_source(), config)
        .map_err(|e| SnapshotError::Decode(format!("openh264 decoder: {e}")))?;
    let mut last: Option<(Vec<u8>, u32, u32)> = None;
    let mut annex_b = Vec::new();
    let keep = |pic: DecodedYUV<'_>, last: &mut Option<(Vec<u8>, u32, u32)>| {
        let (w, h) = pic.dimensions();
        let mut rgb = vec![0u8; w * h * 3];
        pic.write_rgb8(&mut rgb);
        *last = Some((rgb, w as u32, h as u32));
    };
    let video: Vec<&Frame> = gop.iter().filter(|f| f.is_video()).collect();
    for (i, frame) in video.iter().enumerate() {
        annex_b.clear();
        if i == 0 {
            h264::append_annex_b(&mut annex_b, codec.parameter_sets.iter().map(|p| &p[..]));
        }
        h264::append_annex_b(&mut annex_b, h264::length_prefixed_nals(&frame.data));
        // Only the newest picture matters, but each one is a reference for the next.
        let is_last = i + 1 == video.len();
        match decoder.decode(&annex_b) {
            Ok(Some(pic)) if is_last => keep(pic, &mut last),
            Ok(_) => {}
            Err(e) => return Err(SnapshotError::Decode(format!("H.264 decode failed: {e}"))),
        }
    }
    if last.is_none() {
        // Decoders that hold pictures back for reordering (B-frames) release them here.
        if let Ok(remaining) = decoder.flush_remaining() {
            if let Some(pic) = remaining.into_iter().last() {
                keep(pic, &mut last);
            }
        }
    }
    let (rgb, w, h) =
        last.ok_or_else(|| SnapshotError::Decode("the decoder produced no picture".into()))?;
    encode_jpeg(&rgb, w, h, JPEG_QUALITY)
        .map_err(|e| SnapshotError::Decode(format!("JPEG encode failed: {e}")))
}

/// An RGB picture as JPEG (snapshots and MJPEG).
pub fn encode_jpeg(rgb: &[u8], width: u32, height: u32, quality: u8) -> image::ImageResult<Bytes> {
    let mut jpeg = Vec::with_capacity(rgb.len() / 10);
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, quality).encode(
        rgb,
        width,
        height,
        image::ExtendedColorType::Rgb8,
    )?;
    Ok(Bytes::from(jpeg))
}
