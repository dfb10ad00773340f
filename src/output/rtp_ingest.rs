//! What a publisher sends, sans-IO: over RTSP (ANNOUNCE + RECORD) the SDP it announces, then
//! its RTP packets in, the camera's frames out. WHIP publishers' RTP comes through here too.
//!
//! Video goes through livelens's own depacketizer (`media::rtp_video`, RFC 6184 / 7798) and
//! in-band parameter sets update the description (`media::video_params`); AAC is RFC 3640
//! (AAC-hbr: 13-bit sizes, any number of access units per packet); Opus and G.711 are one frame
//! per packet. RTP time is unwrapped to a 64-bit count from the first packet; the publisher's
//! RTCP sender reports put audio and video on one timeline (`media::av_sync`), and video gets
//! decode times that never go back, B-frames or not (`media::dts`): RTP carries only PTS.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;

use crate::media::av_sync::{self, AvSync, Report};
use crate::media::dts::DtsExtractor;
use crate::media::rtp_video::{VideoDepacketizer, VideoKind};
use crate::media::{video_params, AudioCodec, Frame, TrackKind, VideoCodec};

/// A track the publisher announced: its `a=control`, payload type and codec.
#[derive(Debug, Clone, PartialEq)]
pub struct Announced {
    pub video: Option<AnnouncedVideo>,
    pub audio: Option<AnnouncedAudio>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AnnouncedVideo {
    pub control: String,
    pub payload_type: u8,
    pub kind: VideoKind,
    /// From `sprop-parameter-sets` (or `sprop-vps/sps/pps`), when the SDP had them.
    pub codec: Option<Arc<VideoCodec>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AnnouncedAudio {
    pub control: String,
    pub payload_type: u8,
    pub codec: AudioCodec,
}

impl Announced {
    /// The track whose control URL ends with `control` (what SETUP names).
    pub fn track(&self, control: &str) -> Option<TrackKind> {
        if self.video.as_ref().is_some_and(|v| v.control == control) {
            return Some(TrackKind::Video);
        }
        if self.audio.as_ref().is_some_and(|a| a.control == control) {
            return Some(TrackKind::Audio);
        }
        None
    }
}

/// Reads an ANNOUNCE body. A video track is required (H.264 or H.265); the first audio track
/// livelens can carry (AAC, Opus, PCMA, PCMU) is kept, others are ignored.
pub fn parse_announce(sdp: &str) -> Result<Announced, String> {
    struct Media {
        kind: String,
        payload_type: Option<u8>,
        rtpmap: Option<String>,
        fmtp: String,
        control: Option<String>,
    }
    let mut media: Vec<Media> = Vec::new();
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            let mut parts = m.split_whitespace();
            let kind = parts.next().unwrap_or_default().to_string();
            let payload_type = parts.nth(2).and_then(|p| p.parse().ok());
            media.push(Media {
                kind,
                payload_type,
                rtpmap: None,
                fmtp: String::new(),
                control: None,
            });
            continue;
        }
        let Some(m) = media.last_mut() else { continue };
        let Some((pt, rest)) = line
            .strip_prefix("a=rtpmap:")
            .or_else(|| line.strip_prefix("a=fmtp:"))
            .and_then(|r| r.split_once(' '))
            .map(|(pt, rest)| (pt.parse::<u8>().ok(), rest.trim()))
        else {
            if let Some(c) = line.strip_prefix("a=control:") {
                m.control = Some(c.trim().to_string());
            }
            continue;
        };
        if pt != m.payload_type {
            continue;
        }
        if line.starts_with("a=rtpmap:") {
            m.rtpmap = Some(rest.to_string());
        } else {
            m.fmtp = rest.to_string();
        }
    }
    let fmtp = |text: &str, key: &str| {
        text.split(';')
            .filter_map(|p| p.trim().split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(key))
            .map(|(_, v)| v.trim().to_string())
    };
    let mut video = None;
    let mut audio = None;
    for m in &media {
        let (Some(pt), Some(rtpmap), Some(control)) = (m.payload_type, &m.rtpmap, &m.control)
        else {
            continue;
        };
        let mut map = rtpmap.split('/');
        let encoding = map.next().unwrap_or_default().to_ascii_lowercase();
        let clock: u32 = map.next().and_then(|c| c.parse().ok()).unwrap_or(0);
        let channels: u16 = map.next().and_then(|c| c.parse().ok()).unwrap_or(1);
        match (m.kind.as_str(), encoding.as_str()) {
            ("video", "h264" | "h265") if video.is_none() => {
                let kind = if encoding == "h264" {
                    VideoKind::H264
                } else {
                    VideoKind::H265
                };
                let decode = |v: &str| STANDARD.decode(v.trim()).ok().map(Bytes::from);
                let sets: Vec<Bytes> = match kind {
                    VideoKind::H264 => fmtp(&m.fmtp, "sprop-parameter-sets")
                        .map(|v| v.split(',').filter_map(decode).collect())
                        .unwrap_or_default(),
                    VideoKind::H265 => ["sprop-vps", "sprop-sps", "sprop-pps"]
                        .iter()
                        .filter_map(|k| fmtp(&m.fmtp, k).and_then(|v| decode(&v)))
                        .collect(),
                };
                video = Some(AnnouncedVideo {
                    control: control.clone(),
                    payload_type: pt,
                    kind,
                    codec: video_params::update(kind, None, &sets, None),
                });
            }
            ("audio", _) if audio.is_none() => {
                let codec = match encoding.as_str() {
                    "mpeg4-generic" => {
                        let config = fmtp(&m.fmtp, "config").and_then(|hex| {
                            (0..hex.len())
                                .step_by(2)
                                .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                                .collect::<Option<Vec<u8>>>()
                        });
                        let Some(config) = config.filter(|c| !c.is_empty()) else {
                            continue;
                        };
                        AudioCodec {
                            codec: "aac",
                            rfc6381: Some(format!("mp4a.40.{}", config[0] >> 3)),
                            sample_rate: clock,
                            channels,
                            extra_data: Bytes::from(config),
                        }
                    }
                    "opus" => AudioCodec {
                        codec: "opus",
                        rfc6381: Some("opus".into()),
                        sample_rate: 48_000,
                        channels: channels.max(1),
                        extra_data: Bytes::new(),
                    },
                    "pcma" | "pcmu" => AudioCodec {
                        codec: if encoding == "pcma" { "pcma" } else { "pcmu" },
                        rfc6381: None,
                        sample_rate: if clock == 0 { 8_000 } else { clock },
                        channels,
                        extra_data: Bytes::new(),
                    },
                    _ => continue,
                };
                if codec.sample_rate == 0 {
                    continue;
                }
                audio = Some(AnnouncedAudio {
                    control: control.clone(),
                    payload_type: pt,
                    codec,
                });
            }
            _ => {}
        }
    }
    if video.is_none() {
        return Err(
            "the announced session has no H.264 or H.265 video track with an a=control".into(),
        );
    }
    Ok(Announced { video, audio })
}

/// RTP time as a 64-bit count from the first packet, across wraps and reordering.
#[derive(Debug, Default)]
struct Unwrap {
    last: Option<(u32, i64)>,
}

impl Unwrap {
    fn extend(&mut self, time: u32) -> i64 {
        let extended = match self.last {
            None => 0,
            Some((last, ext)) => ext + i64::from(time.wrapping_sub(last) as i32),
        };
        self.last = Some((time, extended));
        extended
    }
}

/// What the ingest needs of an RTP header.
#[derive(Debug, Clone, Copy)]
pub struct RtpFields {
    pub sequence: u16,
    pub time: u32,
    pub marker: bool,
    pub payload_type: u8,
}

/// One publisher's tracks being turned back into frames.
pub struct Ingest {
    video: Option<(AnnouncedVideo, VideoDepacketizer, Unwrap)>,
    audio: Option<(AnnouncedAudio, Unwrap)>,
    sync: AvSync,
    /// Made with the first description (its profile and frame rate are its first guesses).
    dts: Option<DtsExtractor>,
}

/// Where an RTP packet's payload starts, after its header, CSRCs and extension; and the
/// header's sequence number, time and marker. `None` for anything that is not RTP version 2.
fn rtp_header(packet: &[u8]) -> Option<(u16, u32, bool, u8, std::ops::Range<usize>)> {
    if packet.len() < 12 || packet[0] >> 6 != 2 {
        return None;
    }
    let mut start = 12 + 4 * usize::from(packet[0] & 0x0f);
    if packet[0] & 0x10 != 0 {
        let words = u16::from_be_bytes([*packet.get(start + 2)?, *packet.get(start + 3)?]);
        start += 4 + 4 * usize::from(words);
    }
    let mut end = packet.len();
    if packet[0] & 0x20 != 0 {
        end = end.checked_sub(usize::from(*packet.last()?))?;
    }
    if start > end {
        return None;
    }
    let sequence = u16::from_be_bytes([packet[2], packet[3]]);
    let time = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
    Some((
        sequence,
        time,
        packet[1] & 0x80 != 0,
        packet[1] & 0x7f,
        start..end,
    ))
}

impl Ingest {
    pub fn new(announced: &Announced) -> Ingest {
        let audio_rate = announced.audio.as_ref().map_or(1, |a| a.codec.sample_rate);
        Ingest {
            sync: AvSync::new(90_000, audio_rate),
            dts: None,
            video: announced
                .video
                .clone()
                .map(|v| (v.clone(), VideoDepacketizer::new(v.kind), Unwrap::default())),
            audio: announced.audio.clone().map(|a| (a, Unwrap::default())),
        }
    }

    pub fn audio(&self) -> Option<AudioCodec> {
        self.audio.as_ref().map(|(a, _)| a.codec.clone())
    }

    /// One RTCP packet (compound) of `track`'s stream: its sender report, if any, ties the
    /// track's RTP time to the publisher's wall clock.
    pub fn push_rtcp(&mut self, track: TrackKind, packet: &[u8]) {
        if let Some((_, report)) = av_sync::sender_reports(packet).into_iter().last() {
            self.sender_report(track, report);
        }
    }

    /// A sender report of `track`'s stream (read by str0m, for WHIP).
    pub fn sender_report(&mut self, track: TrackKind, report: Report) {
        self.sync.report(track, report);
    }

    /// As [`Ingest::push_at`], for packets whose arrival time is not known (all taken as
    /// arriving at once).
    pub fn push(
        &mut self,
        track: TrackKind,
        packet: &[u8],
        out: &mut Vec<Frame>,
    ) -> Result<(), String> {
        self.push_at(track, packet, 0, out)
    }

    /// One RTP packet of `track`, arrived at `now_us` (a monotonic clock, µs): the frames it
    /// completes are appended to `out`. An error describes a packet that was not usable (it is
    /// dropped; the stream goes on).
    pub fn push_at(
        &mut self,
        track: TrackKind,
        packet: &[u8],
        now_us: i64,
        out: &mut Vec<Frame>,
    ) -> Result<(), String> {
        let (sequence, time, marker, payload_type, range) =
            rtp_header(packet).ok_or("not an RTP packet")?;
        let fields = RtpFields {
            sequence,
            time,
            marker,
            payload_type,
        };
        self.push_rtp(track, fields, &packet[range], now_us, out)
    }

    /// As [`Ingest::push_at`], for a packet whose header was read already (str0m's, for WHIP).
    pub fn push_rtp(
        &mut self,
        track: TrackKind,
        header: RtpFields,
        payload: &[u8],
        now_us: i64,
        out: &mut Vec<Frame>,
    ) -> Result<(), String> {
        let RtpFields {
            sequence,
            time,
            marker,
            payload_type: pt,
        } = header;
        match track {
            TrackKind::Video => {
                let Some((announced, depacketizer, clock)) = &mut self.video else {
                    return Err("no video track was set up".into());
                };
                if pt != announced.payload_type {
                    return Err(format!(
                        "payload type {pt}, not the announced {}",
                        announced.payload_type
                    ));
                }
                let extended = clock.extend(time);
                let timestamp = self
                    .sync
                    .map(TrackKind::Video, time, extended, now_us)
                    .unwrap_or(extended);
                depacketizer.push(sequence, timestamp, marker, payload)?;
                while let Some(au) = depacketizer.pull() {
                    announced.codec = video_params::update(
                        announced.kind,
                        announced.codec.take(),
                        &au.nals,
                        None,
                    );
                    let Some(codec) = announced.codec.clone() else {
                        continue; // no parameter sets yet: nothing can decode this
                    };
                    let data = video_params::frame_data(announced.kind, &au.nals);
                    if data.is_empty() {
                        continue; // parameter sets alone: they went into the description
                    }
                    let dts = self
                        .dts
                        .get_or_insert_with(|| DtsExtractor::for_codec(&codec))
                        .extract(au.timestamp);
                    out.push(Frame {
                        track: TrackKind::Video,
                        pts: au.timestamp,
                        dts,
                        keyframe: au.keyframe,
                        capture_time_us: None,
                        video_codec: Some(codec),
                        data,
                    });
                }
                Ok(())
            }
            TrackKind::Audio => {
                let Some((announced, clock)) = &mut self.audio else {
                    return Err("no audio track was set up".into());
                };
                if pt != announced.payload_type {
                    return Err(format!(
                        "payload type {pt}, not the announced {}",
                        announced.payload_type
                    ));
                }
                let extended = clock.extend(time);
                let Some(pts) = self.sync.map(TrackKind::Audio, time, extended, now_us) else {
                    return Ok(()); // moved back by the sender reports: already covered
                };
                if announced.codec.codec != "aac" {
                    if !payload.is_empty() {
                        out.push(Frame::audio(pts, Bytes::copy_from_slice(payload)));
                    }
                    return Ok(());
                }
                // RFC 3640: AU-headers-length in bits, 16-bit headers (13-bit size, 3-bit
                // index), then the access units, 1024 samples apart.
                if payload.len() < 2 {
                    return Err("an AAC packet without AU headers".into());
                }
                let bits = usize::from(u16::from_be_bytes([payload[0], payload[1]]));
                let headers = bits.div_ceil(8);
                if bits % 16 != 0 || 2 + headers > payload.len() {
                    return Err("AAC AU headers that are not AAC-hbr".into());
                }
                let mut at = 2 + headers;
                for (i, h) in payload[2..2 + headers].chunks_exact(2).enumerate() {
                    let size = usize::from(u16::from_be_bytes([h[0], h[1]]) >> 3);
                    let Some(au) = payload.get(at..at + size) else {
                        return Err(
                            "an AAC access unit beyond its packet (fragmented AUs are not taken)"
                                .into(),
                        );
                    };
                    if !au.is_empty() {
                        let pts = pts + 1024 * i as i64;
                        out.push(Frame::audio(pts, Bytes::copy_from_slice(au)));
                    }
                    at += size;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::rtp::RtpWriter;

    /// What `ffmpeg -c copy -f rtsp` announces for H.264 + AAC.
    const FFMPEG: &str = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=No Name\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
        a=tool:libavformat\r\nm=video 0 RTP/AVP 96\r\nb=AS:2000\r\na=rtpmap:96 H264/90000\r\n\
        a=fmtp:96 packetization-mode=1; sprop-parameter-sets=Z2QAKKzZQHgCJ+XARAAAAwAEAAADAPA8YMZY,aM48gA==; profile-level-id=640028\r\n\
        a=control:streamid=0\r\nm=audio 0 RTP/AVP 97\r\nb=AS:128\r\n\
        a=rtpmap:97 MPEG4-GENERIC/48000/2\r\n\
        a=fmtp:97 profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3; config=1190\r\n\
        a=control:streamid=1\r\n";

    #[test]
    fn ffmpegs_announce_gives_both_tracks_and_the_sdps_parameter_sets() {
        let a = parse_announce(FFMPEG).unwrap();
        let v = a.video.as_ref().unwrap();
        assert_eq!(
            (v.control.as_str(), v.payload_type, v.kind),
            ("streamid=0", 96, VideoKind::H264)
        );
        let codec = v.codec.as_ref().expect("sprop-parameter-sets read");
        assert_eq!(codec.parameter_sets.len(), 2);
        assert_eq!((codec.width, codec.height), (1920, 1080));
        let audio = a.audio.as_ref().unwrap();
        assert_eq!(audio.control, "streamid=1");
        assert_eq!(
            (
                audio.codec.codec,
                audio.codec.sample_rate,
                audio.codec.channels
            ),
            ("aac", 48_000, 2)
        );
        assert_eq!(&audio.codec.extra_data[..], &[0x11, 0x90]);
        assert_eq!(audio.codec.rfc6381.as_deref(), Some("mp4a.40.2"));
        assert_eq!(a.track("streamid=1"), Some(TrackKind::Audio));
        assert_eq!(a.track("streamid=9"), None);
    }

    #[test]
    fn without_video_an_announce_is_refused() {
        let audio_only = "v=0\r\nm=audio 0 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=control:a\r\n";
        assert!(parse_announce(audio_only).is_err());
        assert!(parse_announce("").is_err());
        let no_control = "v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n";
        assert!(parse_announce(no_control).is_err());
    }

    #[test]
    fn what_the_restream_sends_comes_back_as_the_same_frames() {
        // Our packetizer's output (the re-stream) is a publisher's input: the round trip must
        // give back the frames, with in-band parameter sets before the keyframe.
        // x264's SPS for 1920×1080 (as in `media::h264`'s tests) and a PPS.
        let sps: &[u8] = &[
            0x67, 0x64, 0x00, 0x28, 0xac, 0xd9, 0x40, 0x78, 0x02, 0x27, 0xe5, 0xc0, 0x44, 0x00,
            0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0xf0, 0x3c, 0x60, 0xc6, 0x58,
        ];
        let codec = Arc::new(VideoCodec {
            parameter_sets: vec![
                Bytes::from_static(sps),
                Bytes::from_static(&[0x68, 0xce, 0x3c, 0x80]),
            ],
            ..crate::output::fmp4::tests::test_video()
        });
        let announced = Announced {
            video: Some(AnnouncedVideo {
                control: "v".into(),
                payload_type: 96,
                kind: VideoKind::H264,
                codec: None,
            }),
            audio: Some(AnnouncedAudio {
                control: "a".into(),
                payload_type: 97,
                codec: AudioCodec {
                    codec: "aac",
                    rfc6381: Some("mp4a.40.2".into()),
                    sample_rate: 48_000,
                    channels: 2,
                    extra_data: Bytes::from_static(&[0x11, 0x90]),
                },
            }),
        };
        let mut ingest = Ingest::new(&announced);
        let mut writer = RtpWriter::new(96, 1, 65_530, u32::MAX - 1000, 90_000);
        let mut frames = Vec::new();
        let big: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        for (n, keyframe) in [(0i64, true), (1, false), (2, false)] {
            let mut data = vec![0, 0, 0x13, 0x89, if keyframe { 0x65 } else { 0x41 }];
            data.extend_from_slice(&big);
            let packet = crate::hub::Packet::new(
                Frame {
                    track: TrackKind::Video,
                    pts: n * 3600,
                    dts: n * 3600,
                    keyframe,
                    capture_time_us: None,
                    video_codec: Some(codec.clone()),
                    data: Bytes::from(data),
                },
                1,
                0,
            );
            let payloads = crate::output::rtp::video_payloads(&packet);
            for (i, p) in payloads.iter().enumerate() {
                let mut bytes = Vec::new();
                writer.write(&mut bytes, p, packet.pts, i + 1 == payloads.len(), 0);
                ingest.push(TrackKind::Video, &bytes, &mut frames).unwrap();
            }
        }
        // The last access unit completes with its marker bit too.
        assert_eq!(frames.len(), 3);
        assert!(frames[0].keyframe && !frames[1].keyframe);
        assert_eq!(
            frames.iter().map(|f| f.pts).collect::<Vec<_>>(),
            [0, 3600, 7200],
            "unwrapped across the 32-bit wrap"
        );
        assert_eq!(
            frames[0].video_codec.as_ref().unwrap().parameter_sets,
            codec.parameter_sets
        );
        assert_eq!(frames[1].data.len(), 4 + 1 + 5000);
        // Two AAC access units in one packet, 1024 samples apart.
        let mut aac = vec![0, 32, 0, 3 << 3, 0, 2 << 3];
        aac.extend_from_slice(&[1, 2, 3, 4, 5]);
        let mut bytes = Vec::new();
        RtpWriter::new(97, 2, 0, 0, 48_000).write(&mut bytes, &aac, 0, true, 0);
        let mut audio = Vec::new();
        ingest.push(TrackKind::Audio, &bytes, &mut audio).unwrap();
        assert_eq!(audio.len(), 2);
        assert_eq!((&audio[0].data[..], audio[0].pts), (&[1u8, 2, 3][..], 0));
        assert_eq!((&audio[1].data[..], audio[1].pts), (&[4u8, 5][..], 1024));
        // Not RTP, another payload type, an AU past its packet: refused, nothing out.
        audio.clear();
        assert!(ingest.push(TrackKind::Audio, b"junk", &mut audio).is_err());
        let mut wrong = Vec::new();
        RtpWriter::new(98, 2, 1, 0, 48_000).write(&mut wrong, &aac, 0, true, 0);
        assert!(ingest.push(TrackKind::Audio, &wrong, &mut audio).is_err());
        let mut short = Vec::new();
        RtpWriter::new(97, 2, 2, 0, 48_000).write(
            &mut short,
            &[0, 16, 0xff, 0xf8, 1],
            4096,
            true,
            0,
        );
        assert!(ingest.push(TrackKind::Audio, &short, &mut audio).is_err());
        assert!(audio.is_empty());
    }
}
