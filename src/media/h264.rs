//! H.264 bitstream helpers, sans-IO: Annex B splitting, length-prefix conversion, NAL types,
//! emulation prevention and the RFC 6381 codec string.

use bytes::{BufMut, Bytes, BytesMut};

pub const NAL_SLICE: u8 = 1;
pub const NAL_IDR: u8 = 5;
pub const NAL_SEI: u8 = 6;
pub const NAL_SPS: u8 = 7;
pub const NAL_PPS: u8 = 8;
pub const NAL_AUD: u8 = 9;

pub fn nal_type(nal: &[u8]) -> u8 {
    nal.first().map_or(0, |b| b & 0x1f)
}

/// Splits an Annex B byte stream (`00 00 01` or `00 00 00 01` start codes) into NAL units.
/// Bytes before the first start code are ignored; empty NAL units are skipped.
pub fn split_annex_b(data: &[u8]) -> Vec<&[u8]> {
    let mut nals = Vec::new();
    let mut start: Option<usize> = None;
    let mut i = 0;
    while i + 2 < data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            if let Some(s) = start {
                // A 4-byte start code leaves one trailing zero on the previous NAL: trim zeros.
                let mut end = i;
                while end > s && data[end - 1] == 0 {
                    end -= 1;
                }
                if end > s {
                    nals.push(&data[s..end]);
                }
            }
            i += 3;
            start = Some(i);
        } else {
            i += 1;
        }
    }
    if let Some(s) = start {
        if s < data.len() {
            nals.push(&data[s..]);
        }
    }
    nals
}

/// Iterates over the NAL units of a 4-byte length-prefixed access unit. Stops at the first
/// truncated entry rather than panicking on bad input.
pub fn length_prefixed_nals(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.len() < 4 {
            return None;
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if rest.len() < 4 + len {
            return None;
        }
        let nal = &rest[4..4 + len];
        rest = &rest[4 + len..];
        Some(nal)
    })
}

/// Builds a 4-byte length-prefixed access unit from NAL units.
pub fn to_length_prefixed<'a>(nals: impl IntoIterator<Item = &'a [u8]>) -> Bytes {
    let mut out = BytesMut::new();
    for nal in nals {
        out.put_u32(nal.len() as u32);
        out.put_slice(nal);
    }
    out.freeze()
}

/// Appends NAL units to `out` in Annex B form (4-byte start codes).
pub fn append_annex_b<'a>(out: &mut Vec<u8>, nals: impl IntoIterator<Item = &'a [u8]>) {
    for nal in nals {
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(nal);
    }
}

/// Inserts emulation-prevention bytes: `00 00 0x` (x ≤ 3) becomes `00 00 03 0x`.
pub fn add_emulation_prevention(rbsp: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rbsp.len() + rbsp.len() / 64 + 1);
    let mut zeros = 0;
    for &b in rbsp {
        if zeros >= 2 && b <= 3 {
            out.push(3);
            zeros = 0;
        }
        out.push(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
    out
}

/// Removes emulation-prevention bytes (the inverse of [`add_emulation_prevention`]).
pub fn remove_emulation_prevention(ebsp: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ebsp.len());
    let mut zeros = 0;
    for &b in ebsp {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        out.push(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
    out
}

/// RFC 6381 codec string from an SPS NAL unit: `avc1.PPCCLL` (profile, constraints, level).
pub fn rfc6381_codec(sps: &[u8]) -> Option<String> {
    if sps.len() < 4 || nal_type(sps) != NAL_SPS {
        return None;
    }
    Some(format!("avc1.{:02x}{:02x}{:02x}", sps[1], sps[2], sps[3]))
}

/// Picture width and height (after cropping) from an H.264 SPS NAL unit.
pub fn sps_dimensions(sps: &[u8]) -> Option<(u32, u32)> {
    use super::bits::BitReader;
    if nal_type(sps) != NAL_SPS {
        return None;
    }
    let rbsp = remove_emulation_prevention(&sps[1..]);
    let mut r = BitReader::new(&rbsp);
    type Sizes = ((u64, u64), (u64, u64));
    let parse = |r: &mut BitReader<'_>| -> Result<Sizes, super::bits::OutOfBits> {
        let profile_idc = r.bits(8)?;
        r.skip(16)?; // constraint flags, level_idc
        r.ue()?; // seq_parameter_set_id
        let mut chroma_format_idc = 1;
        if matches!(
            profile_idc,
            100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
        ) {
            chroma_format_idc = r.ue()?;
            if chroma_format_idc == 3 {
                r.bit()?; // separate_colour_plane_flag
            }
            r.ue()?; // bit_depth_luma_minus8
            r.ue()?; // bit_depth_chroma_minus8
            r.bit()?; // qpprime_y_zero_transform_bypass_flag
            if r.bit()? == 1 {
                // seq_scaling_matrix_present_flag: skip the scaling lists.
                let lists = if chroma_format_idc == 3 { 12 } else { 8 };
                for i in 0..lists {
                    if r.bit()? == 1 {
                        let size = if i < 6 { 16 } else { 64 };
                        let (mut last, mut next) = (8i64, 8i64);
                        for _ in 0..size {
                            if next != 0 {
                                // delta_scale should be -128..=127; a hostile one must not
                                // overflow.
                                next = (last + i64::from(r.se()?)).rem_euclid(256);
                            }
                            if next != 0 {
                                last = next;
                            }
                        }
                    }
                }
            }
        }
        r.ue()?; // log2_max_frame_num_minus4
        match r.ue()? {
            0 => {
                r.ue()?;
            }
            1 => {
                r.bit()?;
                r.se()?;
                r.se()?;
                for _ in 0..r.ue()? {
                    r.se()?;
                }
            }
            _ => {}
        }
        r.ue()?; // max_num_ref_frames
        r.bit()?; // gaps_in_frame_num_value_allowed_flag
        let width_mbs = u64::from(r.ue()?) + 1;
        let height_map_units = u64::from(r.ue()?) + 1;
        let frame_mbs_only = r.bit()?;
        if frame_mbs_only == 0 {
            r.bit()?; // mb_adaptive_frame_field_flag
        }
        r.bit()?; // direct_8x8_inference_flag
        let (mut crop_x, mut crop_y) = (0u64, 0u64);
        if r.bit()? == 1 {
            let mut field = || r.ue().map(u64::from);
            let (left, right, top, bottom) = (field()?, field()?, field()?, field()?);
            let (sub_w, sub_h) = match chroma_format_idc {
                1 => (2, 2),
                2 => (2, 1),
                _ => (1, 1),
            };
            let (unit_x, unit_y) = if chroma_format_idc == 0 {
                (1, 2 - frame_mbs_only)
            } else {
                (sub_w, sub_h * (2 - frame_mbs_only))
            };
            crop_x = (left + right) * unit_x;
            crop_y = (top + bottom) * u64::from(unit_y);
        }
        let width = width_mbs * 16;
        let height = u64::from(2 - frame_mbs_only) * height_map_units * 16;
        Ok(((width, height), (crop_x, crop_y)))
    };
    let (coded, crop) = parse(&mut r).ok()?;
    super::picture_size(coded, crop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_sps_sizes_are_refused_not_overflowed() {
        // Found by the h264_sps fuzz target (kept in fuzz/regressions/h264_sps/).
        for sps in [
            &include_bytes!("../../fuzz/regressions/h264_sps/width-multiply-overflow")[..],
            include_bytes!("../../fuzz/regressions/h264_sps/scaling-list-delta-overflow"),
            include_bytes!("../../fuzz/regressions/h264_sps/zero-height-crop-larger-than-picture"),
        ] {
            for nal in [sps.to_vec(), {
                let mut v = sps.to_vec();
                v[0] = (v[0] & 0xe0) | NAL_SPS;
                v
            }] {
                if let Some((w, h)) = sps_dimensions(&nal) {
                    let side = 1..=crate::media::MAX_PICTURE_SIDE;
                    assert!(side.contains(&w) && side.contains(&h), "{w}x{h}");
                }
            }
        }
    }

    #[test]
    fn splits_three_and_four_byte_start_codes() {
        let data = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 5,
        ];
        let nals = split_annex_b(&data);
        assert_eq!(
            nals,
            vec![&[0x67, 1, 2][..], &[0x68, 3][..], &[0x65, 4, 5][..]]
        );
    }

    #[test]
    fn length_prefix_round_trip() {
        let nals: [&[u8]; 2] = [&[0x67, 1, 2], &[0x65, 9]];
        let au = to_length_prefixed(nals);
        assert_eq!(&au[..], &[0, 0, 0, 3, 0x67, 1, 2, 0, 0, 0, 2, 0x65, 9]);
        let back: Vec<&[u8]> = length_prefixed_nals(&au).collect();
        assert_eq!(back, nals.to_vec());
    }

    #[test]
    fn truncated_length_prefix_stops_without_panic() {
        let back: Vec<&[u8]> = length_prefixed_nals(&[0, 0, 0, 9, 1, 2]).collect();
        assert!(back.is_empty());
    }

    #[test]
    fn emulation_prevention_round_trip() {
        let rbsp = [0, 0, 0, 0, 0, 1, 0, 0, 2, 0, 0, 3, 0, 0, 4, 0, 0];
        let ebsp = add_emulation_prevention(&rbsp);
        assert_eq!(
            ebsp,
            [0, 0, 3, 0, 0, 3, 0, 1, 0, 0, 3, 2, 0, 0, 3, 3, 0, 0, 4, 0, 0]
        );
        // No start code may appear inside an escaped payload.
        assert!(!ebsp.windows(3).any(|w| w == [0, 0, 1]));
        assert_eq!(remove_emulation_prevention(&ebsp), rbsp);
    }

    #[test]
    fn dimensions_from_real_sps() {
        // x264 High profile 1920x1080 (cropped from 1088) and openh264 Baseline 1280x720.
        let hd = [
            0x67, 0x64, 0x00, 0x28, 0xac, 0xd9, 0x40, 0x78, 0x02, 0x27, 0xe5, 0xc0, 0x44, 0x00,
            0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0xf0, 0x3c, 0x60, 0xc6, 0x58,
        ];
        assert_eq!(sps_dimensions(&hd), Some((1920, 1080)));
        assert_eq!(sps_dimensions(&[0x68, 1, 2]), None);
        assert_eq!(sps_dimensions(&[0x67, 0x64]), None);
    }

    #[test]
    fn codec_string_from_sps() {
        assert_eq!(
            rfc6381_codec(&[0x67, 0x42, 0xc0, 0x1f, 0xaa]).as_deref(),
            Some("avc1.42c01f")
        );
        assert_eq!(rfc6381_codec(&[0x68, 0x42, 0xc0, 0x1f]), None);
    }
}
