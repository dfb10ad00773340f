//! What a source offers, without adding it as a camera. `livelens probe` and the UI's Test
//! (`POST /api/probe`) both answer from here, so they accept the same sources.

use super::rtsp::{self, ProbeReport, ProbeTrack, RtspOptions};
use super::{SourceSpec, TestsrcParams};

/// Probes the source URL `source`; `options` bound an RTSP probe (transport, timeout).
/// The error says what is wrong in words, without credentials.
pub async fn probe(source: &str, options: &RtspOptions) -> Result<ProbeReport, String> {
    let spec = SourceSpec::parse(source)?;
    spec.check_supported()?;
    match spec {
        SourceSpec::Testsrc(p) => Ok(testsrc(&p)),
        SourceSpec::Rtsp { url, .. } => rtsp::probe(&url, options).await,
        SourceSpec::Exec(_) | SourceSpec::File(_) => Err(
            "exec: and file:// sources are read by FFmpeg and cannot be probed: add the camera and watch its state"
                .into(),
        ),
        SourceSpec::Publish(_) => {
            Err("a publish: camera has nothing to probe until someone publishes to it".into())
        }
    }
}

/// The built-in test source is synthesised in-process: its parameters are its report.
fn testsrc(p: &TestsrcParams) -> ProbeReport {
    ProbeReport {
        tracks: vec![ProbeTrack {
            media: "video".into(),
            encoding: "h264".into(),
            clock_rate: 90_000,
            codec: None,
            width: Some(p.width),
            height: Some(p.height),
            fps: Some(f64::from(p.fps)),
            sample_rate: None,
            channels: None,
            ingested: true,
        }],
        describe_ms: None,
        first_frame_ms: None,
        first_keyframe_ms: None,
        gop_frames: Some(p.gop),
        measured_fps: None,
        note: Some("testsrc is synthesised in-process; it starts at once".into()),
    }
}
