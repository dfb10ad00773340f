//! Codec-neutral media types shared by sources, the hub and outputs.
//!
//! Conventions, so that no output has to guess:
//! - Video access units are stored as 4-byte length-prefixed NAL units (AVCC/HVCC style, what MP4
//!   and retina's `FrameFormat::MP4` use). Parameter sets travel in [`VideoCodec`], not in frames.
//! - Timestamps are in the track's clock rate (90 kHz for video).
//! - Payloads are `bytes::Bytes`: fan-out clones a reference count, never the data.

pub mod annexb;
pub mod audio;
pub mod av_sync;
pub mod bits;
pub mod dts;
pub mod h264;
pub mod h265;
pub mod mpegts;
pub mod opus;
pub mod rtp_packetize;
pub mod rtp_video;
pub mod sei;
pub mod video_params;

use std::sync::Arc;

use bytes::Bytes;

/// The largest picture side any H.264 or H.265 level allows (level 6.2: 139,264 macroblocks as
/// a square-ish 8:1 frame). A parameter set claiming more is corrupt or hostile.
pub const MAX_PICTURE_SIDE: u32 = 16_888;

/// A picture size from an SPS's raw fields (coded size minus cropping, all as read from the
/// bitstream, so possibly huge): `None` unless both sides are within 1..=[`MAX_PICTURE_SIDE`].
/// Wide arithmetic first, so no field value can overflow.
pub fn picture_size(coded: (u64, u64), crop: (u64, u64)) -> Option<(u32, u32)> {
    let side = |coded: u64, crop: u64| {
        let side = coded.checked_sub(crop)?;
        (1..=u64::from(MAX_PICTURE_SIDE))
            .contains(&side)
            .then_some(side as u32)
    };
    Some((side(coded.0, crop.0)?, side(coded.1, crop.1)?))
}
use serde::Serialize;

/// Which elementary stream a frame belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackKind {
    Video,
    Audio,
}

/// The description of a video track: everything an output needs to build an init segment or an SDP.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoCodec {
    /// "h264" or "h265".
    pub codec: &'static str,
    /// RFC 6381 codec string, e.g. `avc1.64001f`.
    pub rfc6381: String,
    pub width: u32,
    pub height: u32,
    /// Nominal frame rate when the source declares one.
    pub fps: Option<f64>,
    /// Parameter sets without start codes or length prefixes (SPS, PPS; VPS first for H.265).
    pub parameter_sets: Vec<Bytes>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AudioCodec {
    /// "aac", "opus", "pcma", "pcmu".
    pub codec: &'static str,
    /// RFC 6381 codec string where one exists, e.g. `mp4a.40.2`.
    pub rfc6381: Option<String>,
    /// Timestamps of audio frames are in this clock rate.
    pub sample_rate: u32,
    pub channels: u16,
    /// Decoder configuration (AAC AudioSpecificConfig); empty for G.711.
    #[serde(skip)]
    pub extra_data: Bytes,
}

/// One access unit (video) or audio frame.
#[derive(Debug, Clone)]
pub struct Frame {
    pub track: TrackKind,
    /// Presentation time in the track's clock rate.
    pub pts: i64,
    /// Decode time in the track's clock rate.
    pub dts: i64,
    /// True for a video access unit a decoder can start at.
    pub keyframe: bool,
    /// Wall-clock capture time in microseconds since the Unix epoch, when the source knows it.
    pub capture_time_us: Option<i64>,
    /// The codec description this frame belongs to. A change of description (new SPS/PPS) is a new
    /// `Arc`, so outputs detect it by pointer comparison and frames can never outrun it.
    pub video_codec: Option<Arc<VideoCodec>>,
    pub data: Bytes,
}

impl AudioCodec {
    /// Opus as RTP carries it (RFC 7587: a 48 kHz clock, two channels declared).
    pub fn opus() -> AudioCodec {
        AudioCodec {
            codec: "opus",
            rfc6381: Some("opus".into()),
            sample_rate: 48_000,
            channels: 2,
            extra_data: Bytes::new(),
        }
    }

    /// G.711 (`"pcma"` or `"pcmu"`) at its usual 8 kHz, mono.
    pub fn g711(codec: &'static str) -> AudioCodec {
        AudioCodec {
            codec,
            rfc6381: None,
            sample_rate: 8_000,
            channels: 1,
            extra_data: Bytes::new(),
        }
    }
}

impl Frame {
    /// An audio frame: every audio frame is a sync point and has no decode reordering.
    pub fn audio(pts: i64, data: Bytes) -> Frame {
        Frame {
            track: TrackKind::Audio,
            pts,
            dts: pts,
            keyframe: true,
            capture_time_us: None,
            video_codec: None,
            data,
        }
    }

    pub fn is_video(&self) -> bool {
        self.track == TrackKind::Video
    }
}
