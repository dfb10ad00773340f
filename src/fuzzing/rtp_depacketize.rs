//! The RTP video depacketizer (`media::rtp_video::VideoDepacketizer`, RFC 6184 / RFC 7798):
//! payloads straight off the network from a camera (single NAL units, STAP-A / AP aggregates,
//! FU-A / FU fragments), with their sequence numbers, timestamps and marker bits.
//!
//! Input: byte 0 bit 0 picks H.264 / H.265; then packets, each
//! `[flags][seq step][ts step][len: u16 BE][payload]`: flags bit 0 = marker, bit 1 = jump the
//! sequence number by `seq step` (loss / reordering; otherwise +1), bit 2 = a new timestamp
//! (+ `ts step` · 100).
//!
//! Invariants:
//! - never panics; errors leave the depacketizer usable;
//! - the NAL bytes out never exceed the payload bytes in;
//! - every access unit is non-empty, each NAL at least a NAL header long, `keyframe` is true
//!   exactly when a NAL is a keyframe NAL, and the first unit out (and the first after a
//!   sequence gap or an error) is a keyframe;
//! - units come out with the timestamps the packets had, in order (no unit repeats a timestamp
//!   that an earlier unit had unless another timestamp came between).

use crate::fuzzing::{debug, Cursor};
use crate::media::rtp_video::{is_keyframe_nal, AccessUnit, VideoDepacketizer, VideoKind};

/// Checks the invariants above on one input: returns when they hold, panics when one breaks.
pub fn check(data: &[u8]) {
    let mut c = Cursor::new(data);
    let kind = if c.u8() & 1 == 0 {
        VideoKind::H264
    } else {
        VideoKind::H265
    };
    let header_len = match kind {
        VideoKind::H264 => 1,
        VideoKind::H265 => 2,
    };
    let mut d = VideoDepacketizer::new(kind);
    let mut seq: u16 = c.u16();
    let mut ts: i64 = 0;
    let mut bytes_in = 0usize;
    let mut bytes_out = 0usize;
    let mut need_keyframe = true;
    let mut timestamps_seen: Vec<i64> = Vec::new();
    let mut units = 0usize;
    let mut first = true;
    while !c.is_empty() {
        let flags = c.u8();
        let seq_step = c.u8();
        let ts_step = c.u8();
        let payload = c.chunk16();
        if !first {
            if flags & 2 != 0 {
                seq = seq.wrapping_add(seq_step as u16);
                if seq_step != 1 {
                    need_keyframe = true;
                }
            } else {
                seq = seq.wrapping_add(1);
            }
        }
        first = false;
        if flags & 4 != 0 {
            ts += ts_step as i64 * 100;
        }
        timestamps_seen.push(ts);
        bytes_in += payload.len();
        let result = d.push(seq, ts, flags & 1 != 0, payload);
        // Units this push completed (at a timestamp change) came before any error in it.
        while let Some(AccessUnit {
            timestamp,
            nals,
            keyframe,
        }) = d.pull()
        {
            units += 1;
            assert!(!nals.is_empty());
            assert!(
                timestamps_seen.contains(&timestamp),
                "unit with a timestamp never pushed"
            );
            for n in &nals {
                assert!(n.len() >= header_len, "NAL shorter than its header: {n:?}");
                bytes_out += n.len();
            }
            assert_eq!(keyframe, nals.iter().any(|n| is_keyframe_nal(kind, n)));
            if need_keyframe {
                assert!(
                    keyframe,
                    "a unit after loss / an error / the start that is no keyframe"
                );
            }
            need_keyframe = false;
        }
        if result.is_err() {
            need_keyframe = true;
        }
    }
    if debug() {
        eprintln!("{kind:?}: {units} units, {bytes_out} NAL bytes of {bytes_in}");
    }
    assert!(
        bytes_out <= bytes_in,
        "{bytes_out} NAL bytes out of {bytes_in} payload bytes"
    );
}
