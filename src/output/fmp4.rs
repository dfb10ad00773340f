//! Sans-IO fragmented MP4: codec descriptions in, an init segment (ftyp + moov) out; a published
//! frame in, its fragment (moof + mdat) out.
//!
//! A fragment depends on the frame alone, never on the viewer, so it is made once per camera and
//! shared by every viewer ([`Packet::fmp4`]): one fragment per access unit (latency of one frame),
//! `tfdt` = the frame's decode time on the camera-wide timeline (which the hub keeps continuous
//! across source restarts), the sequence number = the frame's number in the stream, the sample
//! duration = the distance to the previous frame of the same track. Track 1 is video, track 2
//! audio, in every init segment, so the same audio fragment fits every viewer with an audio
//! track; viewers without one are not sent audio fragments.
//!
//! Players of go2rtc's protocol expect a viewer's time to start near 0 (a live stream that
//! starts minutes in leaves them waiting at 0, before the first buffered picture). So the moof
//! (~100 bytes) and the mdat are packaged apart ([`Packaged`]): each viewer sends a copy of the
//! moof with its own `tfdt`, then the shared mdat. MSE parses the byte stream, not messages, so
//! the two halves may arrive as two WebSocket messages.

use bytes::{BufMut, Bytes};
use mp4_atom::{
    Audio, Avc1, Avcc, Codec, Dinf, Dops, Dref, Encode, Esds, Ftyp, Hdlr, Hvc1, HvcCArray, Hvcc,
    Mdhd, Mdia, Mfhd, Minf, Moof, Moov, Mp4a, Mvex, Mvhd, Opus, Smhd, Stbl, Stco, Stsc, Stsd, Stsz,
    Stts, Tfdt, Tfhd, Tkhd, Traf, Trak, Trex, Trun, TrunEntry, TrunSamples, Url, Visual, Vmhd,
};

use crate::hub::{Packaged, Packet};
use crate::media::bits::BitReader;
use crate::media::h264::remove_emulation_prevention;
use crate::media::{AudioCodec, TrackKind, VideoCodec};

const VIDEO_TIMESCALE: u32 = 90_000;
pub const VIDEO_TRACK: u32 = 1;
pub const AUDIO_TRACK: u32 = 2;
const SYNC_SAMPLE: u32 = 0x0200_0000;
const NON_SYNC_SAMPLE: u32 = 0x0101_0000;

/// Which of a camera's tracks a viewer gets.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracks {
    pub video: VideoCodec,
    /// Present only when the audio codec can go in MP4 (AAC, Opus).
    pub audio: Option<AudioCodec>,
}

impl Tracks {
    /// The MIME type for `MediaSource.addSourceBuffer`, e.g. `video/mp4; codecs="avc1.64001f,mp4a.40.2"`.
    pub fn mime(&self) -> String {
        let mut codecs = vec![self.video.rfc6381.clone()];
        if let Some(a) = &self.audio {
            codecs.push(audio_codec_string(a));
        }
        format!("video/mp4; codecs=\"{}\"", codecs.join(","))
    }
}

pub fn audio_codec_string(a: &AudioCodec) -> String {
    match a.codec {
        "opus" => "opus".into(),
        _ => a.rfc6381.clone().unwrap_or_else(|| "mp4a.40.2".into()),
    }
}

/// Whether an audio codec can be carried in fMP4 for MSE.
pub fn audio_fits_mp4(a: &AudioCodec) -> bool {
    match a.codec {
        "aac" => !a.extra_data.is_empty(),
        "opus" => true,
        _ => false,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MuxError(pub String);

impl std::fmt::Display for MuxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn mux_err(e: impl std::fmt::Display) -> MuxError {
    MuxError(format!("fMP4: {e}"))
}

/// ftyp + moov for `tracks` (video as track 1, audio as track 2).
pub fn init_segment(tracks: &Tracks) -> Result<Bytes, MuxError> {
    let mut out = Vec::new();
    Ftyp {
        major_brand: b"iso5".into(),
        minor_version: 512,
        compatible_brands: vec![b"iso5".into(), b"iso6".into(), b"mp41".into()],
    }
    .encode(&mut out)
    .map_err(mux_err)?;
    let mut traks = vec![video_trak(&tracks.video)?];
    let mut trexs = vec![trex(VIDEO_TRACK)];
    if let Some(a) = &tracks.audio {
        traks.push(audio_trak(a)?);
        trexs.push(trex(AUDIO_TRACK));
    }
    Moov {
        mvhd: Mvhd {
            timescale: 1000,
            rate: 1.into(),
            volume: 1.into(),
            next_track_id: traks.len() as u32 + 1,
            ..Default::default()
        },
        mvex: Some(Mvex {
            mehd: None,
            trex: trexs,
        }),
        trak: traks,
        ..Default::default()
    }
    .encode(&mut out)
    .map_err(mux_err)?;
    Ok(Bytes::from(out))
}

/// moof + mdat for one published frame, the same bytes for every viewer but the moof's `tfdt`.
pub fn fragment(packet: &Packet) -> Result<Packaged, MuxError> {
    let frame = &packet.frame;
    let (track_id, duration) = match frame.track {
        TrackKind::Video => {
            // The first frame has no predecessor: a nominal frame time.
            let nominal = frame
                .video_codec
                .as_ref()
                .and_then(|c| c.fps)
                // A camera's SDP may claim any rate, even 1e9 or infinity: one tick at least.
                .filter(|f| f.is_finite() && *f > 0.0)
                .map_or(3600, |fps| ((VIDEO_TIMESCALE as f64 / fps) as u32).max(1));
            (VIDEO_TRACK, nonzero(packet.duration, nominal))
        }
        // 1024 samples: an AAC frame (Opus frames are 960; only the first frame guesses).
        TrackKind::Audio => (AUDIO_TRACK, nonzero(packet.duration, 1024)),
    };
    let sync = frame.track == TrackKind::Audio || frame.keyframe;
    let cts = (frame.track == TrackKind::Video).then_some(frame.pts - frame.dts);
    let head = sample_head(&FragmentSample {
        sequence: packet.sequence,
        track_id,
        dts: frame.dts.max(0) as u64,
        duration,
        size: frame.data.len(),
        sync,
        cts,
    })?;
    let (field_at, field_len) = tfdt_field(&head)?;
    Ok(Packaged {
        head,
        field_at,
        field_len,
        field: frame.dts.max(0) as u64,
        body: frame.data.clone(),
    })
}

/// One sample as a fragment of its own describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct FragmentSample {
    pub sequence: u32,
    pub track_id: u32,
    pub dts: u64,
    pub duration: u32,
    pub size: usize,
    pub sync: bool,
    /// Composition offset (video only).
    pub cts: Option<i64>,
}

/// The moof of a one-sample fragment and the header of its mdat: the sample's bytes follow.
pub fn sample_head(s: &FragmentSample) -> Result<Bytes, MuxError> {
    let mut moof = Moof {
        mfhd: Mfhd {
            sequence_number: s.sequence,
        },
        traf: vec![Traf {
            tfhd: Tfhd {
                track_id: s.track_id,
                default_base_is_moof: true,
                ..Default::default()
            },
            tfdt: Some(Tfdt {
                base_media_decode_time: s.dts,
            }),
            trun: vec![Trun {
                data_offset: Some(0),
                samples: TrunSamples::Explicit(vec![TrunEntry {
                    duration: Some(s.duration),
                    size: Some(s.size as u32),
                    flags: Some(if s.sync { SYNC_SAMPLE } else { NON_SYNC_SAMPLE }),
                    cts: s.cts,
                }]),
            }],
            ..Default::default()
        }],
    };
    // The data offset counts from the moof's start to the mdat's payload; its value does not
    // change the moof's size, so one trial encoding tells it.
    let mut head = Vec::with_capacity(256);
    moof.encode(&mut head).map_err(mux_err)?;
    moof.traf[0].trun[0].data_offset = Some(head.len() as i32 + 8);
    head.clear();
    moof.encode(&mut head).map_err(mux_err)?;
    // The mdat's header goes with the moof, so the body is the sample's own bytes: no copy.
    let mdat_size = u32::try_from(8 + s.size).map_err(mux_err)?;
    head.put_u32(mdat_size);
    head.put_slice(b"mdat");
    Ok(Bytes::from(head))
}

/// Where `tfdt`'s baseMediaDecodeTime is in an encoded moof, and its width (version 1: 8 bytes).
/// The search starts after the moof header and the mfhd (8 + 16 bytes), whose sequence number
/// could otherwise spell "tfdt".
fn tfdt_field(moof: &[u8]) -> Result<(usize, usize), MuxError> {
    const AFTER_MFHD: usize = 24;
    let at = moof
        .get(AFTER_MFHD..)
        .and_then(|rest| rest.windows(4).position(|w| w == b"tfdt"))
        .map(|p| p + AFTER_MFHD)
        .ok_or_else(|| MuxError("fMP4: moof without tfdt".into()))?;
    // type(4) version(1) flags(3), then the time.
    let width = if moof.get(at + 4) == Some(&1) { 8 } else { 4 };
    Ok((at + 8, width))
}

fn nonzero(value: u32, default: u32) -> u32 {
    if value == 0 {
        default
    } else {
        value
    }
}

fn trex(track_id: u32) -> Trex {
    Trex {
        track_id,
        default_sample_description_index: 1,
        ..Default::default()
    }
}

fn stbl(codec: Codec) -> Stbl {
    Stbl {
        stsd: Stsd {
            codecs: vec![codec],
        },
        stts: Stts::default(),
        stsc: Stsc::default(),
        stsz: Stsz::default(),
        stco: Some(Stco::default()),
        ..Default::default()
    }
}

fn video_trak(v: &VideoCodec) -> Result<Trak, MuxError> {
    // avcC and hvcC store each parameter set's length in 16 bits.
    if v.parameter_sets
        .iter()
        .any(|s| s.len() > usize::from(u16::MAX))
    {
        return Err(MuxError("a parameter set of 64 KiB or more".into()));
    }
    let visual = Visual {
        width: v.width as u16,
        height: v.height as u16,
        ..Default::default()
    };
    let codec: Codec = match v.codec {
        "h264" => {
            let (sps, pps) = match v.parameter_sets.as_slice() {
                [sps, pps, ..] if sps.len() >= 4 => (sps, pps),
                _ => return Err(MuxError("H.264 description without SPS/PPS".into())),
            };
            Avc1 {
                visual,
                avcc: Avcc {
                    configuration_version: 1,
                    avc_profile_indication: sps[1],
                    profile_compatibility: sps[2],
                    avc_level_indication: sps[3],
                    length_size: 4,
                    sequence_parameter_sets: vec![sps.to_vec()],
                    picture_parameter_sets: vec![pps.to_vec()],
                    ext: None,
                },
                ..Default::default()
            }
            .into()
        }
        "h265" => Hvc1 {
            visual,
            hvcc: hvcc(&v.parameter_sets)?,
            ..Default::default()
        }
        .into(),
        other => return Err(MuxError(format!("{other} video cannot go in MP4"))),
    };
    let tkhd = Tkhd {
        track_id: VIDEO_TRACK,
        enabled: true,
        in_movie: true,
        width: (v.width as u16).into(),
        height: (v.height as u16).into(),
        ..Default::default()
    };
    let minf = Minf {
        vmhd: Some(Vmhd::default()),
        ..Default::default()
    };
    Ok(trak(
        tkhd,
        VIDEO_TIMESCALE,
        b"vide",
        "livelens video",
        minf,
        codec,
    ))
}

/// A track of a fragmented file: no samples in the moov, one sample entry.
fn trak(
    tkhd: Tkhd,
    timescale: u32,
    handler: &[u8; 4],
    name: &str,
    minf: Minf,
    codec: Codec,
) -> Trak {
    Trak {
        tkhd,
        mdia: Mdia {
            mdhd: Mdhd {
                timescale,
                language: "und".into(),
                ..Default::default()
            },
            hdlr: Hdlr {
                handler: handler.into(),
                name: name.into(),
            },
            minf: Minf {
                dinf: Dinf {
                    dref: Dref {
                        entries: vec![Url::default().into()],
                    },
                },
                stbl: stbl(codec),
                ..minf
            },
        },
        ..Default::default()
    }
}

/// hvcC from VPS/SPS/PPS; the profile fields come from the SPS's profile_tier_level.
fn hvcc(sets: &[Bytes]) -> Result<Hvcc, MuxError> {
    let [vps, sps, pps, ..] = sets else {
        return Err(MuxError("H.265 description without VPS/SPS/PPS".into()));
    };
    let rbsp = remove_emulation_prevention(sps.get(2..).unwrap_or(&[]));
    // sps_video_parameter_set_id(4) max_sub_layers_minus1(3) temporal_id_nesting(1), then the
    // 12 bytes of general profile_tier_level.
    let ptl = rbsp
        .get(1..13)
        .ok_or_else(|| MuxError("H.265 SPS too short".into()))?;
    let mut r = BitReader::new(ptl);
    let bad = |_| MuxError("H.265 SPS too short".into());
    let profile_space = r.bits(2).map_err(bad)? as u8;
    let tier = r.bit().map_err(bad)? == 1;
    let profile_idc = r.bits(5).map_err(bad)? as u8;
    let array = |t: u8, nal: &Bytes| HvcCArray {
        completeness: true,
        nal_unit_type: t,
        nalus: vec![nal.to_vec()],
    };
    Ok(Hvcc {
        configuration_version: 1,
        general_profile_space: profile_space,
        general_tier_flag: tier,
        general_profile_idc: profile_idc,
        general_profile_compatibility_flags: ptl[1..5].try_into().unwrap_or_default(),
        general_constraint_indicator_flags: ptl[5..11].try_into().unwrap_or_default(),
        general_level_idc: ptl[11],
        min_spatial_segmentation_idc: 0,
        parallelism_type: 0,
        chroma_format_idc: 1,
        bit_depth_luma_minus8: 0,
        bit_depth_chroma_minus8: 0,
        avg_frame_rate: 0,
        constant_frame_rate: 0,
        num_temporal_layers: 1,
        temporal_id_nested: true,
        length_size_minus_one: 3,
        arrays: vec![array(32, vps), array(33, sps), array(34, pps)],
    })
}

fn audio_trak(a: &AudioCodec) -> Result<Trak, MuxError> {
    let audio = Audio {
        data_reference_index: 1,
        channel_count: a.channels,
        sample_size: 16,
        sample_rate: (a.sample_rate.min(65535) as u16).into(),
    };
    let codec: Codec = match a.codec {
        "aac" => {
            let asc = &a.extra_data;
            if asc.len() < 2 {
                return Err(MuxError("AAC without an AudioSpecificConfig".into()));
            }
            let mut esds = Esds::default();
            esds.es_desc.es_id = 2;
            esds.es_desc.dec_config.object_type_indication = 0x40;
            esds.es_desc.dec_config.stream_type = 5;
            esds.es_desc.dec_config.dec_specific = Some(mp4_atom::esds::DecoderSpecific {
                profile: asc[0] >> 3,
                freq_index: ((asc[0] & 0x07) << 1) | (asc[1] >> 7),
                chan_conf: (asc[1] >> 3) & 0x0f,
                raw: asc.to_vec(),
            });
            Mp4a {
                audio,
                esds,
                btrt: None,
                taic: None,
            }
            .into()
        }
        "opus" => Opus {
            audio: Audio {
                sample_rate: 48000u16.into(),
                ..audio
            },
            dops: Dops {
                output_channel_count: a.channels as u8,
                pre_skip: 0,
                input_sample_rate: 48_000,
                output_gain: 0,
                channel_mapping: None,
            },
            btrt: None,
        }
        .into(),
        other => return Err(MuxError(format!("{other} audio cannot go in MP4"))),
    };
    let tkhd = Tkhd {
        track_id: AUDIO_TRACK,
        alternate_group: 1,
        enabled: true,
        in_movie: true,
        volume: 1.into(),
        ..Default::default()
    };
    let minf = Minf {
        smhd: Some(Smhd::default()),
        ..Default::default()
    };
    Ok(trak(
        tkhd,
        a.sample_rate,
        b"soun",
        "livelens audio",
        minf,
        codec,
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::media::Frame;
    use mp4_atom::{Any, Decode};
    use std::sync::Arc;

    pub fn test_video() -> VideoCodec {
        VideoCodec {
            codec: "h264",
            rfc6381: "avc1.42c01f".into(),
            width: 1280,
            height: 720,
            fps: Some(25.0),
            parameter_sets: vec![
                Bytes::from_static(&[0x67, 0x42, 0xc0, 0x1f, 0x8c, 0x8d]),
                Bytes::from_static(&[0x68, 0xce, 0x3c, 0x80]),
            ],
        }
    }

    fn frame(track: TrackKind, dts: i64, keyframe: bool, codec: &Arc<VideoCodec>) -> Frame {
        Frame {
            track,
            pts: dts,
            dts,
            keyframe,
            capture_time_us: None,
            video_codec: (track == TrackKind::Video).then(|| codec.clone()),
            data: Bytes::from_static(&[0, 0, 0, 2, 0x65, 0x88]),
        }
    }

    #[test]
    fn init_segment_decodes_with_the_right_tracks() {
        let aac = AudioCodec {
            codec: "aac",
            rfc6381: Some("mp4a.40.2".into()),
            sample_rate: 48_000,
            channels: 1,
            extra_data: Bytes::from_static(&[0x11, 0x88]),
        };
        let tracks = Tracks {
            video: test_video(),
            audio: Some(aac),
        };
        assert_eq!(tracks.mime(), "video/mp4; codecs=\"avc1.42c01f,mp4a.40.2\"");
        let init = init_segment(&tracks).unwrap();
        let mut buf = std::io::Cursor::new(&init[..]);
        assert!(matches!(Any::decode(&mut buf).unwrap(), Any::Ftyp(_)));
        let Any::Moov(moov) = Any::decode(&mut buf).unwrap() else {
            panic!("no moov")
        };
        assert_eq!(moov.trak.len(), 2);
        assert_eq!(moov.mvex.unwrap().trex.len(), 2);
        let Codec::Avc1(avc1) = &moov.trak[0].mdia.minf.stbl.stsd.codecs[0] else {
            panic!("not avc1")
        };
        assert_eq!(avc1.avcc.avc_profile_indication, 0x42);
        assert_eq!(avc1.visual.width, 1280);
        assert_eq!(moov.trak[1].mdia.mdhd.timescale, 48_000);
    }

    #[test]
    fn fragments_carry_the_camera_timeline_flags_and_the_payload() {
        let codec = Arc::new(test_video());
        let mut seq = crate::hub::packet::Sequencer::default();
        let first = seq.packet(frame(TrackKind::Video, 900_000, true, &codec));
        let audio = seq.packet(frame(TrackKind::Audio, 480_000, true, &codec));
        let second = seq.packet(frame(TrackKind::Video, 903_600, false, &codec));
        for (packet, want_track, want_seq, want_tfdt, want_flags) in [
            (&first, VIDEO_TRACK, 1, 900_000, SYNC_SAMPLE),
            (&audio, AUDIO_TRACK, 2, 480_000, SYNC_SAMPLE),
            (&second, VIDEO_TRACK, 3, 903_600, NON_SYNC_SAMPLE),
        ] {
            let packaged = fragment(packet).unwrap();
            let bytes = [packaged.head.clone(), packaged.body.clone()].concat();
            // A viewer that started at 880 000 sees its own time; everything else is the same.
            let rebased = packaged.head_with(want_tfdt - 1000);
            let mut buf = std::io::Cursor::new(&rebased[..]);
            let Any::Moof(moof) = Any::decode(&mut buf).unwrap() else {
                panic!("no moof")
            };
            assert_eq!(
                moof.traf[0].tfdt.as_ref().unwrap().base_media_decode_time,
                want_tfdt - 1000
            );
            let mut buf = std::io::Cursor::new(&bytes[..]);
            let Any::Moof(moof) = Any::decode(&mut buf).unwrap() else {
                panic!("no moof")
            };
            assert_eq!(moof.mfhd.sequence_number, want_seq);
            let traf = &moof.traf[0];
            assert_eq!(traf.tfhd.track_id, want_track);
            assert_eq!(
                traf.tfdt.as_ref().unwrap().base_media_decode_time,
                want_tfdt
            );
            let trun = &traf.trun[0];
            let TrunSamples::Explicit(entries) = &trun.samples else {
                panic!("explicit samples")
            };
            assert_eq!(entries[0].flags, Some(want_flags));
            // The first frame of each track gets a nominal duration, later ones the real gap.
            let want_duration = if want_track == AUDIO_TRACK {
                1024
            } else {
                3600
            };
            assert_eq!(entries[0].duration, Some(want_duration));
            // data_offset points at the payload inside the mdat.
            let offset = trun.data_offset.unwrap() as usize;
            assert_eq!(&bytes[offset..], &[0, 0, 0, 2, 0x65, 0x88]);
            assert_eq!(&bytes[offset - 4..offset], b"mdat");
            let mdat_size = u32::from_be_bytes(bytes[offset - 8..offset - 4].try_into().unwrap());
            assert_eq!(mdat_size as usize, bytes.len() - (offset - 8));
        }
    }
}
