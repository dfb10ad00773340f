//! Raw Annex B byte streams (`media::annexb::AnnexBReader`, what `exec:` sources read from
//! ffmpeg), then the parameter-set tracking (`media::video_params`) and the hub's frame format,
//! and the one-shot splitter `media::h264::split_annex_b`.
//!
//! Input: byte 0 picks the codec (bit 0) and the chunk size the stream is pushed in; the rest
//! is the byte stream.
//!
//! Invariants:
//! - the access units are the same however the stream is chunked (one push vs. many);
//! - every NAL unit is non-empty, has no start code inside and no trailing zero byte, and the
//!   NAL bytes out never exceed the bytes in;
//! - every unit holds a picture (a VCL NAL), and `keyframe` is true exactly when one of its NALs
//!   is a keyframe NAL;
//! - `video_params::update` only describes a codec whose parameter sets are the stream's, with
//!   the size the SPS parser gives; `frame_data` is a well-formed length-prefixed access unit
//!   holding exactly the unit's non-parameter-set NALs;
//! - `split_annex_b` gives NALs without start codes, totalling no more than the input.

use bytes::Bytes;

use crate::fuzzing::debug;
use crate::media::annexb::{AnnexBReader, AnnexBUnit};
use crate::media::h264;
use crate::media::rtp_video::{is_keyframe_nal, nal_unit_type, parameter_set_types, VideoKind};
use crate::media::video_params;

fn read(kind: VideoKind, stream: &[u8], chunk: usize) -> Vec<AnnexBUnit> {
    let mut r = AnnexBReader::new(kind);
    let mut out = Vec::new();
    for c in stream.chunks(chunk.max(1)) {
        r.push(c);
        while let Some(u) = r.pull() {
            out.push(u);
        }
    }
    r.flush();
    while let Some(u) = r.pull() {
        out.push(u);
    }
    out
}

fn has_start_code(nal: &[u8]) -> bool {
    nal.windows(3).any(|w| w == [0, 0, 1])
}

/// Checks the invariants above on one input: returns when they hold, panics when one breaks.
pub fn check(data: &[u8]) {
    let Some((&selector, stream)) = data.split_first() else {
        return;
    };
    let kind = if selector & 1 == 0 {
        VideoKind::H264
    } else {
        VideoKind::H265
    };
    let chunk = (selector >> 1) as usize + 1;

    let whole = read(kind, stream, stream.len());
    let chunked = read(kind, stream, chunk);
    assert_eq!(
        whole, chunked,
        "chunking changed the access units (chunk {chunk})"
    );
    if debug() {
        eprintln!("{kind:?}: {} access units", whole.len());
    }

    let total: usize = whole.iter().flat_map(|u| &u.nals).map(|n| n.len()).sum();
    assert!(
        total <= stream.len(),
        "{total} NAL bytes from {} input bytes",
        stream.len()
    );
    let is_vcl = |n: &Bytes| match kind {
        VideoKind::H264 => (1..=5).contains(&nal_unit_type(kind, n)),
        VideoKind::H265 => nal_unit_type(kind, n) < 32,
    };
    let mut codec = None;
    for unit in &whole {
        assert!(!unit.nals.is_empty());
        assert!(
            unit.nals.iter().any(is_vcl),
            "access unit without a picture"
        );
        assert_eq!(
            unit.keyframe,
            unit.nals.iter().any(|n| is_keyframe_nal(kind, n))
        );
        for nal in &unit.nals {
            assert!(!nal.is_empty());
            assert_ne!(nal.last(), Some(&0), "trailing zero kept");
            assert!(!has_start_code(nal), "start code inside a NAL");
        }

        let before = codec.clone();
        codec = video_params::update(kind, codec, &unit.nals, None);
        if let Some(c) = &codec {
            let types = parameter_set_types(kind);
            assert_eq!(c.parameter_sets.len(), types.len());
            for (set, t) in c.parameter_sets.iter().zip(types) {
                assert_eq!(nal_unit_type(kind, set), *t);
            }
            let fresh = before
                .as_ref()
                .is_none_or(|b| !std::sync::Arc::ptr_eq(b, c));
            if fresh {
                match kind {
                    VideoKind::H264 => {
                        let sps = &c.parameter_sets[0];
                        assert_eq!(h264::sps_dimensions(sps), Some((c.width, c.height)));
                        assert_eq!(h264::rfc6381_codec(sps).as_deref(), Some(&c.rfc6381[..]));
                    }
                    VideoKind::H265 => {
                        // With no earlier description an unreadable SPS gives none.
                        if let Some((rfc, w, h)) =
                            crate::media::h265::sps_info(&c.parameter_sets[1])
                        {
                            assert_eq!((rfc, w, h), (c.rfc6381.clone(), c.width, c.height));
                        }
                    }
                }
            }
        }

        let frame = video_params::frame_data(kind, &unit.nals);
        let back: Vec<&[u8]> = h264::length_prefixed_nals(&frame).collect();
        let skip: &[u8] = match kind {
            VideoKind::H264 => &[7, 8, 9],
            VideoKind::H265 => &[32, 33, 34, 35],
        };
        let want: Vec<&[u8]> = unit
            .nals
            .iter()
            .filter(|n| !skip.contains(&nal_unit_type(kind, n)))
            .map(|n| &n[..])
            .collect();
        assert_eq!(back, want);
        assert_eq!(frame.len(), want.iter().map(|n| 4 + n.len()).sum::<usize>());
    }

    let nals = h264::split_annex_b(stream);
    let total: usize = nals.iter().map(|n| n.len()).sum();
    assert!(total <= stream.len());
    for nal in nals {
        assert!(!nal.is_empty() && !has_start_code(nal));
    }
}
