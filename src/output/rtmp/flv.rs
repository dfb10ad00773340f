//! What an RTMP publisher sends, sans-IO: FLV tag bodies (VIDEODATA, AUDIODATA) and their RTMP
//! timestamps in, the camera's frames out.
//!
//! Video is H.264 (codec id 7): a sequence header carries the AVCDecoderConfigurationRecord
//! (its SPS and PPS become the camera's description through `media::video_params`, as
//! in-band parameter sets do for RTSP and WHIP), then each tag is one access unit of
//! length-prefixed NAL units. RTMP timestamps are the decode time in milliseconds; the tag's
//! composition time makes the presentation time. Audio is AAC (sound format 10): a sequence
//! header carries the AudioSpecificConfig, then each tag is one raw AAC frame.

use std::sync::Arc;

use bytes::Bytes;

use crate::media::mpegts::AAC_SAMPLE_RATES;
use crate::media::rtp_video::{is_keyframe_nal, VideoKind, MAX_ACCESS_UNIT};
use crate::media::{video_params, AudioCodec, Frame, TrackKind, VideoCodec};

const CODEC_AVC: u8 = 7;
const SOUND_AAC: u8 = 10;

/// One publisher's tags being turned into frames.
#[derive(Debug, Default)]
pub struct FlvIngest {
    /// NAL length size from the configuration record (1, 2 or 4).
    length_size: usize,
    video: Option<Arc<VideoCodec>>,
    audio: Option<AudioCodec>,
    /// Frames of another codec were dropped (reported once).
    pub unsupported: Option<String>,
}

/// What a tag did besides frames.
#[derive(Debug, PartialEq)]
pub enum Tag {
    /// Nothing to tell (a frame, or a header that changed nothing).
    None,
    /// The audio description changed (the camera must learn it before the frames).
    Audio(Option<AudioCodec>),
}

impl FlvIngest {
    pub fn new() -> FlvIngest {
        FlvIngest {
            length_size: 4,
            ..FlvIngest::default()
        }
    }

    /// One VIDEODATA body at `ms` (the RTMP timestamp). A frame it completes is appended to
    /// `out`; an error describes a tag that was not usable (it is dropped).
    pub fn video(&mut self, data: &[u8], ms: u32, out: &mut Vec<Frame>) -> Result<(), String> {
        let [head, packet_type, c0, c1, c2, body @ ..] = data else {
            return Err("a video tag shorter than its header".into());
        };
        if head & 0x0f != CODEC_AVC {
            self.unsupported = Some(format!(
                "video codec id {} (only H.264, id 7, is taken)",
                head & 0x0f
            ));
            return Ok(());
        }
        // Composition time: a signed 24-bit count of milliseconds.
        let cts = i32::from_be_bytes([*c0, *c1, *c2, 0]) >> 8;
        match packet_type {
            0 => self.configuration(body),
            1 => {
                if body.len() > MAX_ACCESS_UNIT {
                    return Err("an access unit over the size limit".into());
                }
                let nals = self.split(body)?;
                let Some(codec) = self.video.clone() else {
                    return Ok(()); // nothing decodes before the sequence header
                };
                // Parameter sets sent in-band update the description, as in every other ingest.
                let codec = video_params::update(VideoKind::H264, Some(codec.clone()), &nals, None)
                    .unwrap_or(codec);
                self.video = Some(codec.clone());
                let frame_data = video_params::frame_data(VideoKind::H264, &nals);
                if frame_data.is_empty() {
                    return Ok(());
                }
                let dts = i64::from(ms) * 90;
                out.push(Frame {
                    track: TrackKind::Video,
                    pts: dts + i64::from(cts) * 90,
                    dts,
                    keyframe: nals.iter().any(|n| is_keyframe_nal(VideoKind::H264, n)),
                    capture_time_us: None,
                    video_codec: Some(codec),
                    data: frame_data,
                });
                Ok(())
            }
            // End of sequence.
            2 => Ok(()),
            t => Err(format!("AVC packet type {t}")),
        }
    }

    /// An AVCDecoderConfigurationRecord (ISO 14496-15 §5.3.3.1): its SPS and PPS.
    fn configuration(&mut self, record: &[u8]) -> Result<(), String> {
        let bad = || "an AVC configuration record that is cut short".to_string();
        if record.len() < 6 || record[0] != 1 {
            return Err("not an AVC configuration record (version 1)".into());
        }
        self.length_size = usize::from(record[4] & 0x03) + 1;
        if self.length_size == 3 {
            return Err("a NAL length size of 3 bytes".into());
        }
        let mut at = 5;
        let mut nals = Vec::new();
        for mask in [0x1f, 0xff] {
            let count = record.get(at).ok_or_else(bad)? & mask;
            at += 1;
            for _ in 0..count {
                let len = usize::from(u16::from_be_bytes([
                    *record.get(at).ok_or_else(bad)?,
                    *record.get(at + 1).ok_or_else(bad)?,
                ]));
                let nal = record.get(at + 2..at + 2 + len).ok_or_else(bad)?;
                nals.push(Bytes::copy_from_slice(nal));
                at += 2 + len;
            }
        }
        // A new record describes the stream afresh (a new encoder session may change size).
        match video_params::update(VideoKind::H264, None, &nals, None) {
            Some(codec) => {
                self.video = Some(codec);
                Ok(())
            }
            None => Err("an AVC configuration record without a readable SPS and PPS".into()),
        }
    }

    /// Length-prefixed NAL units.
    fn split(&self, mut body: &[u8]) -> Result<Vec<Bytes>, String> {
        let mut nals = Vec::new();
        while !body.is_empty() {
            let Some((size, rest)) = body.split_at_checked(self.length_size) else {
                return Err("a NAL length cut short".into());
            };
            let len = size.iter().fold(0usize, |n, b| n << 8 | usize::from(*b));
            let Some((nal, rest)) = rest.split_at_checked(len) else {
                return Err("a NAL unit longer than its tag".into());
            };
            if !nal.is_empty() {
                nals.push(Bytes::copy_from_slice(nal));
            }
            body = rest;
        }
        Ok(nals)
    }

    /// One AUDIODATA body at `ms`.
    pub fn audio(&mut self, data: &[u8], ms: u32, out: &mut Vec<Frame>) -> Result<Tag, String> {
        let [head, rest @ ..] = data else {
            return Err("an empty audio tag".into());
        };
        if head >> 4 != SOUND_AAC {
            self.unsupported = Some(format!(
                "audio sound format {} (only AAC, 10, is taken)",
                head >> 4
            ));
            return Ok(Tag::None);
        }
        let [packet_type, body @ ..] = rest else {
            return Err("an AAC tag without its packet type".into());
        };
        match packet_type {
            0 => {
                let codec = aac_codec(body)?;
                if self.audio.as_ref() == Some(&codec) {
                    return Ok(Tag::None);
                }
                self.audio = Some(codec.clone());
                Ok(Tag::Audio(Some(codec)))
            }
            1 => {
                let Some(codec) = &self.audio else {
                    return Ok(Tag::None); // nothing decodes before the sequence header
                };
                if !body.is_empty() {
                    let pts = i64::from(ms) * i64::from(codec.sample_rate) / 1000;
                    out.push(Frame::audio(pts, Bytes::copy_from_slice(body)));
                }
                Ok(Tag::None)
            }
            t => Err(format!("AAC packet type {t}")),
        }
    }
}

/// An AAC description from its AudioSpecificConfig (ISO 14496-3 §1.6.2.1).
fn aac_codec(config: &[u8]) -> Result<AudioCodec, String> {
    let [b0, b1, ..] = config else {
        return Err("an AudioSpecificConfig shorter than 2 bytes".into());
    };
    let object_type = b0 >> 3;
    let rate_index = usize::from((b0 & 0x07) << 1 | b1 >> 7);
    let channels = u16::from((b1 >> 3) & 0x0f);
    let sample_rate = *AAC_SAMPLE_RATES
        .get(rate_index)
        .ok_or("an AudioSpecificConfig with an explicit sample rate")?;
    if object_type == 0 || object_type == 31 || channels == 0 {
        return Err("an AudioSpecificConfig livelens cannot describe".into());
    }
    Ok(AudioCodec {
        codec: "aac",
        rfc6381: Some(format!("mp4a.40.{object_type}")),
        sample_rate,
        channels,
        extra_data: Bytes::copy_from_slice(config),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An SPS (640×360 High) and PPS, as x264 writes them.
    const SPS: &[u8] = &[
        0x67, 0x64, 0x00, 0x1e, 0xac, 0xd9, 0x40, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03,
        0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x32, 0x0f, 0x16, 0x2d, 0x96,
    ];
    const PPS: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];

    fn record() -> Vec<u8> {
        let mut r = vec![1, 0x64, 0x00, 0x1e, 0xff, 0xe1];
        r.extend_from_slice(&(SPS.len() as u16).to_be_bytes());
        r.extend_from_slice(SPS);
        r.push(1);
        r.extend_from_slice(&(PPS.len() as u16).to_be_bytes());
        r.extend_from_slice(PPS);
        r
    }

    fn tag(head: u8, packet_type: u8, cts: i32, body: &[u8]) -> Vec<u8> {
        let mut t = vec![head, packet_type];
        t.extend_from_slice(&cts.to_be_bytes()[1..]);
        t.extend_from_slice(body);
        t
    }

    fn nalus(nals: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for n in nals {
            out.extend_from_slice(&(n.len() as u32).to_be_bytes());
            out.extend_from_slice(n);
        }
        out
    }

    #[test]
    fn a_sequence_header_then_frames_with_their_times() {
        let mut ingest = FlvIngest::new();
        let mut out = Vec::new();
        // Frames before the sequence header decode nothing: dropped.
        let idr: &[u8] = &[0x65, 0x88, 0x84, 0x00];
        ingest
            .video(&tag(0x17, 1, 0, &nalus(&[idr])), 0, &mut out)
            .unwrap();
        assert!(out.is_empty());
        ingest
            .video(&tag(0x17, 0, 0, &record()), 0, &mut out)
            .unwrap();
        ingest
            .video(&tag(0x17, 1, 80, &nalus(&[idr])), 1000, &mut out)
            .unwrap();
        let slice: &[u8] = &[0x41, 0x9a, 0x02];
        ingest
            .video(&tag(0x27, 1, -40, &nalus(&[slice])), 1040, &mut out)
            .unwrap();
        assert_eq!(out.len(), 2);
        let codec = out[0].video_codec.as_ref().unwrap();
        assert_eq!((codec.width, codec.height), (640, 360));
        assert_eq!(
            (out[0].dts, out[0].pts, out[0].keyframe),
            (90_000, 97_200, true)
        );
        assert_eq!(
            (out[1].dts, out[1].pts, out[1].keyframe),
            (93_600, 90_000, false)
        );
        assert_eq!(&out[0].data[4..], idr);
    }

    #[test]
    fn aac_gets_its_description_then_frames_in_its_clock() {
        let mut ingest = FlvIngest::new();
        let mut out = Vec::new();
        // 44.1 kHz stereo AAC-LC.
        let tag0 = [0xaf, 0, 0x12, 0x10];
        let Tag::Audio(Some(codec)) = ingest.audio(&tag0, 0, &mut out).unwrap() else {
            panic!("no description")
        };
        assert_eq!((codec.sample_rate, codec.channels), (44_100, 2));
        assert_eq!(codec.rfc6381.as_deref(), Some("mp4a.40.2"));
        assert_eq!(ingest.audio(&tag0, 0, &mut out).unwrap(), Tag::None);
        ingest
            .audio(&[0xaf, 1, 0x21, 0x10], 1000, &mut out)
            .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].pts, 44_100);
    }

    #[test]
    fn damaged_and_foreign_tags_are_refused_not_trusted() {
        let mut ingest = FlvIngest::new();
        let mut out = Vec::new();
        assert!(ingest.video(&[0x17, 0], 0, &mut out).is_err());
        assert!(ingest
            .video(
                &tag(0x17, 0, 0, &[1, 0x64, 0, 0x1e, 0xff, 0xe1, 0, 200]),
                0,
                &mut out
            )
            .is_err());
        ingest
            .video(&tag(0x17, 0, 0, &record()), 0, &mut out)
            .unwrap();
        // A NAL length past the tag.
        assert!(ingest
            .video(&tag(0x17, 1, 0, &[0, 0, 1, 0, 0x65]), 0, &mut out)
            .is_err());
        // VP6 (codec id 4) is not taken, and says so.
        ingest.video(&tag(0x14, 1, 0, &[0]), 0, &mut out).unwrap();
        assert!(ingest.unsupported.as_deref().unwrap().contains("id 4"));
        assert!(ingest.audio(&[0xaf, 0, 0xf8], 0, &mut out).is_err());
        assert!(out.is_empty());
    }
}
