//! Tracks in-band parameter sets (SPS/PPS, and VPS for H.265) of a video track and builds the
//! [`VideoCodec`] description from them, for sources whose parameter sets arrive in the
//! bitstream (raw RTP, MPEG-TS, Annex B) rather than in an SDP.

use std::sync::Arc;

use bytes::Bytes;

use super::rtp_video::{nal_unit_type, parameter_set_types, VideoKind};
use super::{h264, h265, VideoCodec};

/// Applies the parameter sets among `nals`: a changed set makes a new description (a new `Arc`,
/// which outputs take as "new init segment"); otherwise `current` is returned as it is. `None`
/// until every set has been seen.
pub fn update(
    kind: VideoKind,
    current: Option<Arc<VideoCodec>>,
    nals: &[Bytes],
    fps: Option<f64>,
) -> Option<Arc<VideoCodec>> {
    let types = parameter_set_types(kind);
    let mut sets: Vec<Option<Bytes>> = types
        .iter()
        .map(|t| {
            current.as_ref().and_then(|c| {
                c.parameter_sets
                    .iter()
                    .find(|p| nal_unit_type(kind, p) == *t)
                    .cloned()
            })
        })
        .collect();
    let mut changed = false;
    for nal in nals {
        if let Some(i) = types.iter().position(|t| *t == nal_unit_type(kind, nal)) {
            if sets[i].as_ref() != Some(nal) {
                sets[i] = Some(nal.clone());
                changed = true;
            }
        }
    }
    if !changed {
        return current;
    }
    let Some(sets) = sets.into_iter().collect::<Option<Vec<Bytes>>>() else {
        return current; // not all parameter sets seen yet
    };
    let (codec, rfc6381, (width, height)) = match kind {
        VideoKind::H264 => (
            "h264",
            h264::rfc6381_codec(&sets[0])?,
            h264::sps_dimensions(&sets[0])?,
        ),
        VideoKind::H265 => match h265::sps_info(&sets[1]) {
            Some((rfc6381, w, h)) => ("h265", rfc6381, (w, h)),
            // An SPS we cannot read: keep the SDP's description for name and size.
            None => {
                let c = current.as_ref()?;
                ("h265", c.rfc6381.clone(), (c.width, c.height))
            }
        },
    };
    Some(Arc::new(VideoCodec {
        codec,
        rfc6381,
        width,
        height,
        fps: fps.or(current.and_then(|c| c.fps)),
        parameter_sets: sets,
    }))
}

/// The NAL units of an access unit without its parameter sets and delimiters, 4-byte length
/// prefixed (the hub's convention; parameter sets travel in the [`VideoCodec`]).
pub fn frame_data(kind: VideoKind, nals: &[Bytes]) -> Bytes {
    let skip: &[u8] = match kind {
        VideoKind::H264 => &[7, 8, 9],
        VideoKind::H265 => &[32, 33, 34, 35],
    };
    h264::to_length_prefixed(
        nals.iter()
            .filter(|n| !skip.contains(&nal_unit_type(kind, n)))
            .map(|n| &n[..]),
    )
}
