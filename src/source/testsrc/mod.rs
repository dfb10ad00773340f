//! `testsrc://?size=1280x720&fps=25&gop=50&bitrate=2000k&motion=1` — a synthetic camera, encoded
//! in-process, so livelens shows live video with nothing external installed.
//!
//! The picture is drawn and encoded with openh264 on a dedicated thread (encoding is blocking work,
//! principle 2). The thread waits for the next frame time on its stop channel, so a stop wakes it at
//! once; `run` joins it before returning. Every access unit carries the capture-time SEI
//! ([`crate::media::sei`]) and the picture carries the same time in its top strip.

mod font;
pub mod picture;

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, IntraFramePeriod, RateControlMode, UsageType,
};
use openh264::OpenH264API;
use tokio_util::sync::CancellationToken;

use super::Publisher;
use super::SourceError;
use crate::media::{h264, sei, Frame, TrackKind, VideoCodec};
use crate::resources::spawn_thread;
use picture::Picture;

#[derive(Debug, Clone, PartialEq)]
pub struct TestsrcParams {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// Frames between keyframes.
    pub gop: u32,
    pub bitrate_bps: u32,
    pub motion: bool,
}

impl Default for TestsrcParams {
    fn default() -> Self {
        TestsrcParams {
            width: 1280,
            height: 720,
            fps: 25,
            gop: 50,
            bitrate_bps: 2_000_000,
            motion: true,
        }
    }
}

impl TestsrcParams {
    /// Parses the query part of a `testsrc://` URL (with or without the leading `?`).
    pub fn parse(query: &str) -> Result<TestsrcParams, String> {
        let query = query.trim_start_matches('/').trim_start_matches('?');
        let mut p = TestsrcParams::default();
        let mut gop_given = false;
        for pair in query.split('&').filter(|s| !s.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let bad = |what: &str| format!("testsrc parameter {key}={value:?}: {what}");
            match key {
                "size" => {
                    let (w, h) = value
                        .split_once('x')
                        .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
                        .ok_or_else(|| bad("expected WIDTHxHEIGHT, e.g. 1280x720"))?;
                    if !(128..=3840).contains(&w) || !(96..=2160).contains(&h) {
                        return Err(bad("must be between 128x96 and 3840x2160"));
                    }
                    if w % 2 != 0 || h % 2 != 0 {
                        return Err(bad("width and height must be even"));
                    }
                    p.width = w;
                    p.height = h;
                }
                "fps" => {
                    p.fps = value
                        .parse()
                        .ok()
                        .filter(|f| (1..=60).contains(f))
                        .ok_or_else(|| bad("expected a whole number from 1 to 60"))?;
                }
                "gop" => {
                    p.gop = value
                        .parse()
                        .ok()
                        .filter(|g| (1..=600).contains(g))
                        .ok_or_else(|| bad("expected a whole number of frames from 1 to 600"))?;
                    gop_given = true;
                }
                "bitrate" => {
                    p.bitrate_bps = parse_bitrate(value)
                        .filter(|b| (50_000..=50_000_000).contains(b))
                        .ok_or_else(|| bad("expected e.g. 2000k or 2M, from 50k to 50M"))?;
                }
                "motion" => {
                    p.motion = match value {
                        "1" | "true" | "on" => true,
                        "0" | "false" | "off" => false,
                        _ => return Err(bad("expected 0 or 1")),
                    }
                }
                _ => {
                    return Err(format!(
                        "unknown testsrc parameter {key:?} (known: size, fps, gop, bitrate, motion)"
                    ))
                }
            }
        }
        if !gop_given {
            p.gop = p.fps * 2;
        }
        Ok(p)
    }
}

fn parse_bitrate(value: &str) -> Option<u32> {
    let lower = value.to_ascii_lowercase();
    let (digits, factor) = if let Some(d) = lower.strip_suffix('k') {
        (d, 1_000)
    } else if let Some(d) = lower.strip_suffix('m') {
        (d, 1_000_000)
    } else {
        (lower.as_str(), 1)
    };
    digits.parse::<u32>().ok()?.checked_mul(factor)
}

/// Runs the test source until `cancel` fires. The encoder thread is joined before this returns.
pub async fn run(
    params: TestsrcParams,
    publisher: &Publisher,
    cancel: &CancellationToken,
) -> Result<(), SourceError> {
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
    let thread_publisher = publisher.clone();
    let thread = spawn_thread(format!("testsrc-{}", publisher.camera_id()), move || {
        let result = encode_loop(&params, &thread_publisher, &stop_rx);
        let _ = done_tx.send(result);
    })
    .map_err(|e| SourceError::retryable(format!("cannot start the testsrc thread: {e}")))?;

    let result = tokio::select! {
        _ = cancel.cancelled() => {
            // Dropping the sender wakes the thread from its frame wait at once.
            drop(stop_tx);
            let _ = (&mut done_rx).await;
            Ok(())
        }
        r = &mut done_rx => r.unwrap_or_else(|_| Err(SourceError::retryable("the testsrc encoder thread panicked"))),
    };
    // The thread has sent its result, so it is past all work and join returns at once.
    let _ = thread.join();
    result
}

fn encode_loop(
    params: &TestsrcParams,
    publisher: &Publisher,
    stop: &mpsc::Receiver<()>,
) -> Result<(), SourceError> {
    let config = EncoderConfig::new()
        .bitrate(BitRate::from_bps(params.bitrate_bps))
        .max_frame_rate(FrameRate::from_hz(params.fps as f32))
        .rate_control_mode(RateControlMode::Bitrate)
        .usage_type(UsageType::CameraVideoRealTime)
        .skip_frames(true)
        .intra_frame_period(IntraFramePeriod::from_num_frames(params.gop))
        .num_threads(1);
    let mut encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
        .map_err(|e| SourceError::permanent(format!("openh264 encoder: {e}")))?;
    let mut picture = Picture::new(params.width as usize, params.height as usize);
    let frame_interval = Duration::from_secs_f64(1.0 / params.fps as f64);
    let ticks_per_frame = 90_000 / params.fps as i64;
    let started = Instant::now();
    let mut codec: Option<Arc<VideoCodec>> = None;

    for sequence in 0u64.. {
        // Pace by an absolute schedule so encoding time does not accumulate as drift; a stop
        // (sender dropped) ends the wait at once.
        let due = started + frame_interval.mul_f64(sequence as f64);
        match stop.recv_timeout(due.saturating_duration_since(Instant::now())) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return Ok(()),
        }
        let capture_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        picture.draw(sequence, (capture_us / 1000) as u64, params.motion);
        if sequence % params.gop as u64 == 0 {
            encoder.force_intra_frame();
        }
        let annex_b = encoder
            .encode(&picture)
            .map_err(|e| SourceError::retryable(format!("openh264 encode: {e}")))?
            .to_vec();

        let nals = h264::split_annex_b(&annex_b);
        if !nals
            .iter()
            .any(|n| matches!(h264::nal_type(n), h264::NAL_SLICE | h264::NAL_IDR))
        {
            continue; // the rate control skipped this picture
        }
        let keyframe = nals.iter().any(|n| h264::nal_type(n) == h264::NAL_IDR);
        if keyframe {
            codec = Some(update_codec(codec, &nals, params)?);
        }
        let Some(codec) = codec.clone() else {
            continue; // nothing decodable before the first keyframe
        };
        let sei = sei::write_capture_time(sei::CaptureTime {
            unix_us: capture_us,
            sequence: sequence as u32,
        });
        // Parameter sets live in the codec description; the access unit is SEI + slices.
        let slices = nals
            .iter()
            .copied()
            .filter(|n| !matches!(h264::nal_type(n), h264::NAL_SPS | h264::NAL_PPS));
        let data: Bytes = h264::to_length_prefixed(std::iter::once(&sei[..]).chain(slices));
        let pts = sequence as i64 * ticks_per_frame;
        publisher.publish(Frame {
            track: TrackKind::Video,
            pts,
            dts: pts,
            keyframe,
            capture_time_us: Some(capture_us),
            video_codec: Some(codec),
            data,
        });
    }
    Ok(())
}

/// Returns the codec description for a keyframe: the previous `Arc` when its parameter sets are
/// unchanged, so outputs only see a new description when there really is one.
fn update_codec(
    current: Option<Arc<VideoCodec>>,
    nals: &[&[u8]],
    params: &TestsrcParams,
) -> Result<Arc<VideoCodec>, SourceError> {
    let find = |t| nals.iter().find(|n| h264::nal_type(n) == t).copied();
    let (Some(sps), Some(pps)) = (find(h264::NAL_SPS), find(h264::NAL_PPS)) else {
        return current
            .ok_or_else(|| SourceError::retryable("openh264 produced a keyframe without SPS/PPS"));
    };
    if let Some(c) = &current {
        if c.parameter_sets[0] == sps && c.parameter_sets[1] == pps {
            return Ok(c.clone());
        }
    }
    Ok(Arc::new(VideoCodec {
        codec: "h264",
        rfc6381: h264::rfc6381_codec(sps).unwrap_or_else(|| "avc1.42c01f".into()),
        width: params.width,
        height: params.height,
        fps: Some(params.fps as f64),
        parameter_sets: vec![Bytes::copy_from_slice(sps), Bytes::copy_from_slice(pps)],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_full_parse() {
        let p = TestsrcParams::parse("").unwrap();
        assert_eq!(p, TestsrcParams::default());
        let p = TestsrcParams::parse("?size=640x360&fps=30&bitrate=1M&motion=0").unwrap();
        assert_eq!((p.width, p.height, p.fps, p.gop), (640, 360, 30, 60));
        assert_eq!(p.bitrate_bps, 1_000_000);
        assert!(!p.motion);
        assert_eq!(TestsrcParams::parse("gop=10").unwrap().gop, 10);
    }

    #[test]
    fn bad_parameters_name_the_problem() {
        for (query, expected) in [
            ("size=big", "size=\"big\": expected WIDTHxHEIGHT"),
            ("size=641x360", "must be even"),
            ("size=10x10", "between 128x96"),
            ("fps=0", "fps=\"0\""),
            ("gop=abc", "gop=\"abc\""),
            ("bitrate=fast", "bitrate=\"fast\""),
            ("motion=maybe", "expected 0 or 1"),
            ("colour=red", "unknown testsrc parameter \"colour\""),
        ] {
            let err = TestsrcParams::parse(query).unwrap_err();
            assert!(err.contains(expected), "{query}: {err}");
        }
    }
}
