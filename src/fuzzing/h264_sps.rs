//! H.264 SPS parsing (`media::h264`): the picture size and the RFC 6381 codec string of an SPS
//! NAL unit as it arrives from a camera (RTP, MPEG-TS, Annex B), plus emulation prevention.
//!
//! Invariants:
//! - `sps_dimensions` never panics (no arithmetic overflow on huge Exp-Golomb values) and a size
//!   it returns is within what any H.264 level allows (≤ 16 888 per side; set
//!   `LIVELENS_FUZZ_NO_BOUNDS=1` to skip this check) and not zero;
//! - `rfc6381_codec` is `Some` exactly for SPS NALs of ≥ 4 bytes and is `avc1.` + 6 hex digits;
//! - `add_emulation_prevention` output contains no `00 00 0x` (x ≤ 2) and
//!   `remove_emulation_prevention` inverts it.

use crate::fuzzing::{debug, no_bounds};
use crate::media::{h264, MAX_PICTURE_SIDE};

/// Checks the invariants above on one input: returns when they hold, panics when one breaks.
pub fn check(data: &[u8]) {
    // Whatever the first byte is, also try the input as an SPS (type 7) so the fuzzer need
    // not find the header by chance.
    let mut as_sps = data.to_vec();
    if let Some(b) = as_sps.first_mut() {
        *b = (*b & 0xe0) | h264::NAL_SPS;
    }
    for nal in [data, &as_sps[..]] {
        let dims = h264::sps_dimensions(nal);
        if debug() {
            eprintln!(
                "sps_dimensions = {dims:?}, codec = {:?}",
                h264::rfc6381_codec(nal)
            );
        }
        if let Some((w, h)) = dims {
            assert_eq!(h264::nal_type(nal), h264::NAL_SPS);
            if !no_bounds() {
                assert!(
                    (1..=MAX_PICTURE_SIDE).contains(&w) && (1..=MAX_PICTURE_SIDE).contains(&h),
                    "SPS gives an impossible picture size {w}x{h}"
                );
            }
        }
        match h264::rfc6381_codec(nal) {
            Some(codec) => {
                assert!(nal.len() >= 4 && h264::nal_type(nal) == h264::NAL_SPS);
                assert_eq!(codec.len(), 11, "{codec}");
                assert!(codec.starts_with("avc1."));
                assert!(codec[5..].bytes().all(|b| b.is_ascii_hexdigit()));
            }
            None => assert!(nal.len() < 4 || h264::nal_type(nal) != h264::NAL_SPS),
        }
    }

    let escaped = h264::add_emulation_prevention(data);
    assert!(
        !escaped
            .windows(3)
            .any(|w| w[0] == 0 && w[1] == 0 && w[2] <= 2),
        "start code or forbidden pattern left in escaped payload"
    );
    assert_eq!(h264::remove_emulation_prevention(&escaped), data);
}
