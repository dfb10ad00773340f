//! The fMP4 muxer's input (`output::fmp4`): arbitrary codec descriptions (whatever a camera's
//! SDP or in-band parameter sets said) and arbitrary frames, through the hub's `Sequencer`.
//!
//! Input (see `Cursor`): a flags byte (bit 0 H.265, bit 1 audio, bit 2 Opus instead of AAC,
//! bit 3 a codec name no muxer knows, bit 4 pad the SPS past 64 KiB, bit 5 fps from raw f64
//! bits), width and height (u32), fps (u16 / 100, 0 = none), VPS, SPS, PPS (u16-length
//! chunks), audio rate (u32), channels (u16) and AudioSpecificConfig (u8-length chunk); then
//! frames: flags (bit 0 audio, bit 1 keyframe), decode-time step (u32), composition offset
//! (i32), payload (u16-length chunk), and a viewer offset (u32) for `head_with`.
//!
//! Invariants:
//! - `init_segment` and `fragment` never panic;
//! - an init segment decodes with mp4-atom into exactly ftyp + moov (box sizes consistent, no
//!   trailing bytes), with one trak per track (video 1, audio 2), one trex each, the input
//!   parameter sets in avcC / hvcC, the audio clock as the audio track's timescale;
//! - a fragment is always made (a viewer is never left without a frame), and head + body decode
//!   into exactly moof + mdat: the frame's sequence number, track, decode time, sample size,
//!   non-zero duration, sync flag and composition offset; `data_offset` points at the payload,
//!   and the mdat holds the frame's bytes;
//! - `head_with(t)` (a viewer's own time) changes nothing but the decode time.

use std::sync::Arc;

use bytes::Bytes;
use mp4_atom::{Any, Codec, Decode, Moof, TrunSamples};

use crate::fuzzing::{debug, Cursor};
use crate::hub::packet::Sequencer;
use crate::media::{AudioCodec, Frame, TrackKind, VideoCodec};
use crate::output::fmp4::{self, Tracks, AUDIO_TRACK, VIDEO_TRACK};

fn decode_all(bytes: &[u8]) -> Vec<Any> {
    let mut buf: &[u8] = bytes;
    let mut out = Vec::new();
    while !buf.is_empty() {
        match Any::decode(&mut buf) {
            Ok(a) => out.push(a),
            Err(e) => panic!(
                "muxer output does not decode: {e} ({} bytes left of {})",
                buf.len(),
                bytes.len()
            ),
        }
    }
    out
}

fn check_init(tracks: &Tracks, init: &[u8]) {
    let boxes = decode_all(init);
    assert_eq!(boxes.len(), 2, "init segment is not ftyp + moov");
    assert!(matches!(boxes[0], Any::Ftyp(_)));
    let Any::Moov(moov) = &boxes[1] else {
        panic!("no moov")
    };
    let want_tracks = 1 + tracks.audio.is_some() as usize;
    assert_eq!(moov.trak.len(), want_tracks);
    assert_eq!(moov.mvex.as_ref().map(|m| m.trex.len()), Some(want_tracks));
    assert_eq!(moov.trak[0].tkhd.track_id, VIDEO_TRACK);
    let stsd = &moov.trak[0].mdia.minf.stbl.stsd;
    assert_eq!(stsd.codecs.len(), 1);
    let v = &tracks.video;
    match (&stsd.codecs[0], v.codec) {
        (Codec::Avc1(avc1), "h264") => {
            assert_eq!(
                avc1.avcc.sequence_parameter_sets,
                vec![v.parameter_sets[0].to_vec()]
            );
            assert_eq!(
                avc1.avcc.picture_parameter_sets,
                vec![v.parameter_sets[1].to_vec()]
            );
            assert_eq!(avc1.visual.width, v.width as u16);
            assert_eq!(avc1.visual.height, v.height as u16);
        }
        (Codec::Hvc1(hvc1), "h265") => {
            let sets: Vec<Vec<u8>> = hvc1
                .hvcc
                .arrays
                .iter()
                .flat_map(|a| a.nalus.clone())
                .collect();
            let want: Vec<Vec<u8>> = v.parameter_sets[..3].iter().map(|s| s.to_vec()).collect();
            assert_eq!(sets, want);
        }
        (c, name) => panic!("{name} muxed as {c:?}"),
    }
    if let Some(a) = &tracks.audio {
        assert_eq!(moov.trak[1].tkhd.track_id, AUDIO_TRACK);
        assert_eq!(moov.trak[1].mdia.mdhd.timescale, a.sample_rate);
    }
}

fn check_moof(moof: &Moof, frame: &Frame, sequence: u32, tfdt: u64, head_len: usize) {
    assert_eq!(moof.mfhd.sequence_number, sequence);
    assert_eq!(moof.traf.len(), 1);
    let traf = &moof.traf[0];
    let want_track = if frame.is_video() {
        VIDEO_TRACK
    } else {
        AUDIO_TRACK
    };
    assert_eq!(traf.tfhd.track_id, want_track);
    assert_eq!(
        traf.tfdt.as_ref().map(|t| t.base_media_decode_time),
        Some(tfdt)
    );
    assert_eq!(traf.trun.len(), 1);
    let trun = &traf.trun[0];
    assert_eq!(
        trun.data_offset,
        Some(head_len as i32),
        "data_offset does not point at the payload"
    );
    let TrunSamples::Explicit(entries) = &trun.samples else {
        panic!("samples not explicit")
    };
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(e.size, Some(frame.data.len() as u32));
    assert!(e.duration.is_some_and(|d| d > 0), "zero sample duration");
    let sync = !frame.is_video() || frame.keyframe;
    assert_eq!(
        e.flags.map(|f| f & 0x0001_0000 == 0),
        Some(sync),
        "sync flag"
    );
    if frame.is_video() {
        assert_eq!(e.cts, Some(frame.pts - frame.dts));
    }
}

/// Checks the invariants above on one input: returns when they hold, panics when one breaks.
pub fn check(data: &[u8]) {
    let mut c = Cursor::new(data);
    let flags = c.u8();
    let width = c.u32();
    let height = c.u32();
    let fps = if flags & 0x20 != 0 {
        Some(f64::from_bits(c.u64()))
    } else {
        Some(c.u16() as f64 / 100.0).filter(|f| *f > 0.0)
    };
    let vps = Bytes::copy_from_slice(c.chunk16());
    let mut sps = c.chunk16().to_vec();
    if flags & 0x10 != 0 {
        sps.resize(65_536 + 7, 0x5a);
    }
    let pps = Bytes::copy_from_slice(c.chunk16());
    let (codec, parameter_sets) = match (flags & 0x08 != 0, flags & 1) {
        (true, _) => ("vp8", vec![Bytes::from(sps), pps]),
        (false, 0) => ("h264", vec![Bytes::from(sps), pps]),
        (false, _) => ("h265", vec![vps, Bytes::from(sps), pps]),
    };
    let rfc6381 = crate::media::h264::rfc6381_codec(&parameter_sets[0])
        .unwrap_or_else(|| "avc1.42c01f".into());
    let video = VideoCodec {
        codec,
        rfc6381,
        width,
        height,
        fps,
        parameter_sets,
    };
    let sample_rate = c.u32();
    let channels = c.u16();
    let extra_data = Bytes::copy_from_slice(c.chunk8());
    let audio = (flags & 2 != 0).then(|| AudioCodec {
        codec: if flags & 4 != 0 { "opus" } else { "aac" },
        rfc6381: None,
        sample_rate,
        channels,
        extra_data,
    });
    let tracks = Tracks { video, audio };
    let _ = tracks.mime();
    let init = fmp4::init_segment(&tracks);
    if debug() {
        eprintln!("init segment: {:?}", init.as_ref().map(|b| b.len()));
    }
    if let Ok(init) = &init {
        check_init(&tracks, init);
    }

    let video_codec = Arc::new(tracks.video.clone());
    let mut seq = Sequencer::default();
    // Decode times on a realistic timeline (±2^52 ticks, some 1 600 years at 90 kHz).
    let mut dts: i64 = (c.u32() as i64) - (1 << 31);
    let mut frames = 0;
    while !c.is_empty() && frames < 32 {
        frames += 1;
        let f = c.u8();
        dts += c.u32() as i64 - (1 << 20);
        dts = dts.clamp(-(1 << 52), 1 << 52);
        let cts = c.u32() as i32 as i64;
        let payload = Bytes::copy_from_slice(c.chunk16());
        let viewer_offset = c.u32() as u64;
        let track = if f & 1 == 0 {
            TrackKind::Video
        } else {
            TrackKind::Audio
        };
        let frame = Frame {
            track,
            pts: dts + cts,
            dts,
            keyframe: f & 2 != 0,
            capture_time_us: None,
            video_codec: (track == TrackKind::Video).then(|| video_codec.clone()),
            data: payload,
        };
        let packet = seq.packet(frame);
        let packaged = fmp4::fragment(&packet).unwrap_or_else(|e| panic!("no fragment: {e}"));
        assert_eq!(packaged.body, packet.frame.data);
        assert_eq!(packaged.field, packet.frame.dts.max(0) as u64);
        let whole = [packaged.head.clone(), packaged.body.clone()].concat();
        let boxes = decode_all(&whole);
        assert_eq!(boxes.len(), 2, "fragment is not moof + mdat");
        let Any::Moof(moof) = &boxes[0] else {
            panic!("no moof")
        };
        check_moof(
            moof,
            &packet.frame,
            packet.sequence,
            packaged.field,
            packaged.head.len(),
        );
        let Any::Mdat(mdat) = &boxes[1] else {
            panic!("no mdat")
        };
        assert_eq!(mdat.data, packet.frame.data);

        // A viewer whose time zero is `viewer_offset` ticks after the camera's.
        let t = packaged.field.saturating_sub(viewer_offset);
        let head = packaged.head_with(t);
        assert_eq!(head.len(), packaged.head.len());
        let mut buf: &[u8] = &head[..head.len() - 8];
        let Ok(Any::Moof(moof2)) = Any::decode(&mut buf) else {
            panic!("rebased moof does not decode")
        };
        check_moof(
            &moof2,
            &packet.frame,
            packet.sequence,
            t,
            packaged.head.len(),
        );
        assert_eq!(&head[head.len() - 8..], &packaged.head[head.len() - 8..]);
    }
}
