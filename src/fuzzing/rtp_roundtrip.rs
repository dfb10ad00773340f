//! The RTP video packetizer (`media::rtp_packetize::packetize`) against the depacketizer
//! (`media::rtp_video::VideoDepacketizer`): an access unit packetized and depacketized again
//! must come back as it was.
//!
//! Input: byte 0 bit 0 picks H.264 / H.265; a u16 sets the payload limit (header + 2 … 1 500
//! bytes over it, so fragments of one byte up to MTU-sized packets); then NAL units, each with a
//! u16 length.
//!
//! NAL units whose type the depacketizer reads as a payload structure (H.264 24 STAP-A and
//! 28 FU-A, H.265 48 AP and 49 FU) are left out: they are not valid in a video stream (H.264
//! "unspecified" / H.265 "reserved" types), and packetize sends them unchanged, so they cannot
//! round-trip.
//!
//! Invariants:
//! - every payload is at most the limit, and at least a header plus one byte;
//! - after a keyframe unit (to get past the depacketizer's wait for one), the payloads of the
//!   unit, with consecutive sequence numbers and the marker on the last, give back exactly one
//!   access unit whose NALs are the input NALs (those longer than a NAL header, in order).

use crate::fuzzing::{debug, Cursor};
use crate::media::rtp_packetize::packetize;
use crate::media::rtp_video::{nal_unit_type, VideoDepacketizer, VideoKind};

/// Checks the invariants above on one input: returns when they hold, panics when one breaks.
pub fn check(data: &[u8]) {
    let mut c = Cursor::new(data);
    let kind = if c.u8() & 1 == 0 {
        VideoKind::H264
    } else {
        VideoKind::H265
    };
    let (header_len, structures, idr): (usize, [u8; 2], &[u8]) = match kind {
        VideoKind::H264 => (1, [24, 28], &[0x65, 0x88]),
        VideoKind::H265 => (2, [48, 49], &[0x26, 0x01, 0xaf]),
    };
    let max = header_len + 2 + (c.u16() % 1500) as usize;
    let mut nals: Vec<&[u8]> = Vec::new();
    while !c.is_empty() && nals.len() < 64 {
        let nal = c.chunk16();
        if !structures.contains(&nal_unit_type(kind, nal)) {
            nals.push(nal);
        }
    }
    let payloads = packetize(kind, nals.iter().copied(), max);
    for p in payloads.iter() {
        assert!(
            p.len() <= max,
            "payload of {} bytes over the limit {max}",
            p.len()
        );
        assert!(p.len() > header_len, "payload of {} bytes", p.len());
    }
    let want: Vec<&[u8]> = nals
        .iter()
        .copied()
        .filter(|n| n.len() > header_len)
        .collect();
    if debug() {
        eprintln!(
            "{kind:?} max {max}: {} NALs → {} payloads",
            want.len(),
            payloads.len()
        );
    }
    if want.is_empty() {
        assert!(payloads.is_empty());
        return;
    }

    let mut d = VideoDepacketizer::new(kind);
    d.push(0, 0, true, idr).unwrap();
    let first = d.pull().expect("the keyframe unit");
    assert!(first.keyframe && d.pull().is_none());
    let last = payloads.len() - 1;
    for (i, p) in payloads.iter().enumerate() {
        d.push((i as u16).wrapping_add(1), 9000, i == last, p)
            .unwrap_or_else(|e| panic!("payload {i} of {}: {e}", payloads.len()));
    }
    let au = d.pull().expect("one access unit");
    assert!(d.pull().is_none(), "more than one access unit");
    assert_eq!(au.timestamp, 9000);
    let got: Vec<&[u8]> = au.nals.iter().map(|n| &n[..]).collect();
    assert_eq!(
        got, want,
        "the access unit did not survive packetize → depacketize"
    );
}
