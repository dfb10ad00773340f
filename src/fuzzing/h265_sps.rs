//! H.265 SPS parsing (`media::h265::sps_info`): the `hvc1.…` codec string and the cropped
//! picture size, for sources without an SDP (MPEG-TS, raw Annex B).
//!
//! Invariants:
//! - never panics (huge Exp-Golomb values, sub-layer loops, conformance window arithmetic);
//! - a size it returns is within what any H.265 level allows (≤ 16 888 per side, not zero;
//!   `LIVELENS_FUZZ_NO_BOUNDS=1` skips this check);
//! - the codec string has the ISO/IEC 14496-15 annex E shape:
//!   `hvc1.[A-C]?<profile>.<compat hex>.<L|H><level>(.<hex>){0,6}`.

use crate::fuzzing::{debug, no_bounds};
use crate::media::{h265, MAX_PICTURE_SIDE};

fn check_codec_string(codec: &str) {
    let parts: Vec<&str> = codec.split('.').collect();
    assert!(parts.len() >= 4 && parts.len() <= 10, "{codec}");
    assert_eq!(parts[0], "hvc1", "{codec}");
    let profile = parts[1].trim_start_matches(['A', 'B', 'C']);
    assert!(parts[1].len() - profile.len() <= 1, "{codec}");
    let idc: u32 = profile.parse().unwrap_or_else(|_| panic!("{codec}"));
    assert!(idc < 32, "{codec}");
    assert!(
        !parts[2].is_empty()
            && parts[2].len() <= 8
            && parts[2].bytes().all(|b| b.is_ascii_hexdigit()),
        "{codec}"
    );
    let tier_level = parts[3];
    assert!(
        tier_level.starts_with('L') || tier_level.starts_with('H'),
        "{codec}"
    );
    let level: u32 = tier_level[1..]
        .parse()
        .unwrap_or_else(|_| panic!("{codec}"));
    assert!(level < 256, "{codec}");
    for c in &parts[4..] {
        assert!(
            !c.is_empty() && c.len() <= 2 && c.bytes().all(|b| b.is_ascii_hexdigit()),
            "{codec}"
        );
    }
}

/// Checks the invariants above on one input: returns when they hold, panics when one breaks.
pub fn check(data: &[u8]) {
    let mut as_sps = data.to_vec();
    if as_sps.len() >= 2 {
        as_sps[0] = (as_sps[0] & 0x81) | (h265::NAL_SPS << 1);
    }
    for nal in [data, &as_sps[..]] {
        let info = h265::sps_info(nal);
        if debug() {
            eprintln!("sps_info = {info:?}");
        }
        if let Some((codec, w, h)) = info {
            assert_eq!((nal[0] >> 1) & 0x3f, h265::NAL_SPS);
            check_codec_string(&codec);
            if !no_bounds() {
                assert!(
                    (1..=MAX_PICTURE_SIDE).contains(&w) && (1..=MAX_PICTURE_SIDE).contains(&h),
                    "SPS gives an impossible picture size {w}x{h}"
                );
            }
        }
    }
}
