//! H.265 SPS parsing, sans-IO: the picture size and the RFC 6381 `hvc1.…` codec string, for
//! sources that carry no SDP (MPEG-TS, raw Annex B).

use super::bits::{BitReader, OutOfBits};
use super::h264::remove_emulation_prevention;

pub const NAL_SPS: u8 = 33;

/// The codec string (ISO/IEC 14496-15 annex E) and the cropped picture size of an SPS NAL unit.
pub fn sps_info(sps: &[u8]) -> Option<(String, u32, u32)> {
    if sps.len() < 3 || (sps[0] >> 1) & 0x3f != NAL_SPS {
        return None;
    }
    let rbsp = remove_emulation_prevention(&sps[2..]);
    let (codec, coded, crop) = parse(&rbsp).ok()?;
    let (width, height) = super::picture_size(coded, crop)?;
    Some((codec, width, height))
}

/// The codec string, the coded size and the conformance-window crop, as read (unchecked).
type Parsed = (String, (u64, u64), (u64, u64));

fn parse(rbsp: &[u8]) -> Result<Parsed, OutOfBits> {
    let mut r = BitReader::new(rbsp);
    r.skip(4)?; // sps_video_parameter_set_id
    let max_sub_layers_minus1 = r.bits(3)?;
    r.skip(1)?; // temporal_id_nesting
                // general profile_tier_level
    let profile_space = r.bits(2)?;
    let tier = r.bit()?;
    let profile_idc = r.bits(5)?;
    let compat = r.bits(32)?;
    let mut constraints = [0u8; 6];
    for c in &mut constraints {
        *c = r.bits(8)? as u8;
    }
    let level_idc = r.bits(8)?;
    let mut sub_profile = Vec::new();
    let mut sub_level = Vec::new();
    for _ in 0..max_sub_layers_minus1 {
        sub_profile.push(r.bit()? == 1);
        sub_level.push(r.bit()? == 1);
    }
    if max_sub_layers_minus1 > 0 {
        r.skip(2 * (8 - max_sub_layers_minus1 as usize))?;
    }
    for i in 0..max_sub_layers_minus1 as usize {
        if sub_profile[i] {
            r.skip(88)?;
        }
        if sub_level[i] {
            r.skip(8)?;
        }
    }
    r.ue()?; // sps_seq_parameter_set_id
    let chroma_format_idc = r.ue()?;
    if chroma_format_idc == 3 {
        r.skip(1)?; // separate_colour_plane_flag
    }
    let coded = (u64::from(r.ue()?), u64::from(r.ue()?));
    let mut crop = (0u64, 0u64);
    if r.bit()? == 1 {
        // conformance window, in chroma units
        let (sub_w, sub_h) = match chroma_format_idc {
            1 => (2, 2),
            2 => (2, 1),
            _ => (1, 1),
        };
        let mut field = || r.ue().map(u64::from);
        let (l, rt, t, b) = (field()?, field()?, field()?, field()?);
        crop = (sub_w * (l + rt), sub_h * (t + b));
    }
    let space = ["", "A", "B", "C"][profile_space as usize];
    let mut codec = format!(
        "hvc1.{space}{profile_idc}.{:X}.{}{level_idc}",
        compat.reverse_bits(),
        if tier == 1 { 'H' } else { 'L' }
    );
    let used = constraints
        .iter()
        .rposition(|c| *c != 0)
        .map_or(0, |i| i + 1);
    for c in &constraints[..used] {
        codec.push_str(&format!(".{c:X}"));
    }
    Ok((codec, coded, crop))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_x265_sps() {
        // SPS of `ffmpeg -f lavfi -i testsrc2=size=320x240 -c:v libx265` (Main, level 2).
        let sps = [
            0x42, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00,
            0x00, 0x03, 0x00, 0x3c, 0xa0, 0x0a, 0x08, 0x0f, 0x16, 0x59, 0x59, 0xa4, 0x93, 0x2b,
            0xc0, 0x5a, 0x02, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00, 0x03, 0x00, 0x0a, 0x10,
        ];
        let (codec, w, h) = sps_info(&sps).unwrap();
        assert_eq!((w, h), (320, 240));
        assert_eq!(codec, "hvc1.1.6.L60.90");
    }

    #[test]
    fn hostile_sizes_are_refused_not_overflowed() {
        // Found by the h265_sps fuzz target (kept in fuzz/regressions/h265_sps/).
        for sps in [
            &include_bytes!("../../fuzz/regressions/h265_sps/zero-size")[..],
            include_bytes!(
                "../../fuzz/regressions/h265_sps/conformance-window-width-multiply-overflow"
            ),
            include_bytes!(
                "../../fuzz/regressions/h265_sps/conformance-window-height-multiply-overflow"
            ),
        ] {
            if let Some((_, w, h)) = sps_info(sps) {
                assert!((1..=crate::media::MAX_PICTURE_SIDE).contains(&w), "{w}x{h}");
                assert!((1..=crate::media::MAX_PICTURE_SIDE).contains(&h), "{w}x{h}");
            }
        }
    }

    #[test]
    fn refuses_other_nal_types() {
        assert!(sps_info(&[0x40, 0x01, 0x0c]).is_none());
    }
}
