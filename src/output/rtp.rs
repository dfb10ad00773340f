//! RTP for the outputs that send it (WebRTC, the RTSP re-stream), sans-IO.
//!
//! A video frame's payloads are made once per camera and shared by every peer and every RTSP
//! client ([`video_payloads`] through `Packet::rtp`); what is a receiver's own is only the 12-byte
//! header (its SSRC, sequence numbers and time offset, [`RtpWriter`]). WebRTC writes its headers
//! through str0m; the RTSP server through [`RtpWriter`], which also makes the RTCP sender reports
//! that tie RTP time to wall-clock time for the client's lip sync.

use std::sync::Arc;

use crate::hub::{Packet, RtpPayloads};
use crate::media::rtp_packetize::{packetize, MAX_PAYLOAD};
use crate::media::rtp_video::VideoKind;
use crate::media::AudioCodec;

/// A video frame's RTP payloads: the parameter sets before every keyframe (a viewer's first
/// video frame is always one, so it always gets them), then the frame's NAL units.
pub fn video_payloads(packet: &Packet) -> RtpPayloads {
    let Some(codec) = &packet.video_codec else {
        return Arc::from(Vec::new());
    };
    let kind = if codec.codec == "h265" {
        VideoKind::H265
    } else {
        VideoKind::H264
    };
    let sets = packet
        .keyframe
        .then_some(&codec.parameter_sets)
        .into_iter()
        .flatten()
        .map(|s| &s[..]);
    let nals = sets.chain(crate::media::h264::length_prefixed_nals(&packet.data));
    Arc::from(packetize(kind, nals, MAX_PAYLOAD))
}

/// An audio frame's RTP payload for `codec`: AAC gets the RFC 3640 AU header section (one
/// access unit, `sizelength=13;indexlength=3`), Opus and G.711 go as they are. `None` when the
/// frame cannot be sent (an AAC frame over the 13-bit size field, a codec RTP cannot carry here).
pub fn audio_payload(codec: &AudioCodec, frame: &[u8]) -> Option<Vec<u8>> {
    match codec.codec {
        "aac" => {
            let size = u16::try_from(frame.len()).ok().filter(|s| *s < 1 << 13)?;
            let mut out = Vec::with_capacity(4 + frame.len());
            out.extend_from_slice(&16u16.to_be_bytes()); // AU-headers-length in bits
            out.extend_from_slice(&(size << 3).to_be_bytes()); // AU-size, AU-index 0
            out.extend_from_slice(frame);
            Some(out)
        }
        "opus" | "pcma" | "pcmu" => Some(frame.to_vec()),
        _ => None,
    }
}

/// Seconds between 1900 (NTP's epoch) and 1970 (Unix's).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// A wall-clock time as a 64-bit NTP timestamp (32.32 fixed point).
pub fn ntp_time(since_unix: std::time::Duration) -> u64 {
    let secs = since_unix.as_secs() + NTP_UNIX_OFFSET;
    let frac = (u64::from(since_unix.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// One RTP stream as one receiver gets it: its SSRC, sequence numbers and time offset, and
/// what its sender reports need (packets and octets sent, the last RTP time and when).
#[derive(Debug, Clone)]
pub struct RtpWriter {
    payload_type: u8,
    ssrc: u32,
    sequence: u16,
    clock_rate: u32,
    time_offset: u32,
    packets: u32,
    octets: u32,
    /// The RTP time of the last packet and the NTP time it was written at.
    last: Option<(u32, u64)>,
}

impl RtpWriter {
    /// `sequence` and `time_offset` are the stream's random starting points (RFC 3550 §5.1).
    pub fn new(
        payload_type: u8,
        ssrc: u32,
        sequence: u16,
        time_offset: u32,
        clock_rate: u32,
    ) -> RtpWriter {
        RtpWriter {
            payload_type,
            ssrc,
            sequence,
            clock_rate,
            time_offset,
            packets: 0,
            octets: 0,
            last: None,
        }
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// The sequence number the next packet gets.
    pub fn next_sequence(&self) -> u16 {
        self.sequence
    }

    /// The RTP time of a media time `pts` (in the track's clock).
    pub fn rtp_time(&self, pts: i64) -> u32 {
        (pts as u32).wrapping_add(self.time_offset)
    }

    /// Appends one RTP packet (header and `payload`) to `out`; `now_ntp` is when it is sent.
    pub fn write(
        &mut self,
        out: &mut Vec<u8>,
        payload: &[u8],
        pts: i64,
        marker: bool,
        now_ntp: u64,
    ) {
        let time = self.rtp_time(pts);
        out.push(0x80); // version 2, no padding, extension or CSRC
        out.push(self.payload_type | if marker { 0x80 } else { 0 });
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(&time.to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        out.extend_from_slice(payload);
        self.sequence = self.sequence.wrapping_add(1);
        self.packets = self.packets.wrapping_add(1);
        self.octets = self.octets.wrapping_add(payload.len() as u32);
        self.last = Some((time, now_ntp));
    }

    /// An RTCP sender report (RFC 3550 §6.4.1) for `now_ntp`, its RTP time extrapolated from the
    /// last packet at the track's clock rate; `None` before the first packet.
    pub fn sender_report(&self, now_ntp: u64) -> Option<Vec<u8>> {
        let (time, at) = self.last?;
        let elapsed = now_ntp.saturating_sub(at);
        let ticks = ((u128::from(elapsed) * u128::from(self.clock_rate)) >> 32) as u32;
        Some(self.sender_report_at(now_ntp, time.wrapping_add(ticks)))
    }

    /// The track's clock rate.
    pub fn clock_rate(&self) -> u32 {
        self.clock_rate
    }

    /// An RTCP sender report saying that `now_ntp` is RTP time `time`: what a sender with one
    /// wall clock for all its tracks reports, so a receiver can align them (RFC 3550 §6.4.1).
    pub fn sender_report_at(&self, now_ntp: u64, time: u32) -> Vec<u8> {
        let mut out = Vec::with_capacity(28);
        out.extend_from_slice(&[0x80, 200]); // version 2, no report blocks; SR
        out.extend_from_slice(&6u16.to_be_bytes()); // length in 32-bit words, less one
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        out.extend_from_slice(&now_ntp.to_be_bytes());
        out.extend_from_slice(&time.to_be_bytes());
        out.extend_from_slice(&self.packets.to_be_bytes());
        out.extend_from_slice(&self.octets.to_be_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{Frame, TrackKind, VideoCodec};
    use bytes::Bytes;

    #[test]
    fn parameter_sets_go_before_keyframes_only() {
        let codec = Arc::new(VideoCodec {
            codec: "h264",
            rfc6381: "avc1.42c01f".into(),
            width: 64,
            height: 64,
            fps: None,
            parameter_sets: vec![
                Bytes::from_static(&[0x67, 1]),
                Bytes::from_static(&[0x68, 2]),
            ],
        });
        let frame = |keyframe| Frame {
            track: TrackKind::Video,
            pts: 0,
            dts: 0,
            keyframe,
            capture_time_us: None,
            video_codec: Some(codec.clone()),
            data: Bytes::from_static(&[0, 0, 0, 2, 0x65, 9]),
        };
        let key = video_payloads(&Packet::new(frame(true), 1, 0));
        let key: Vec<&[u8]> = key.iter().map(|p| &p[..]).collect();
        assert_eq!(key, [&[0x67, 1][..], &[0x68, 2][..], &[0x65, 9][..]]);
        let delta = video_payloads(&Packet::new(frame(false), 2, 0));
        assert_eq!(delta.len(), 1);
        assert_eq!(&delta[0][..], &[0x65, 9]);
    }

    #[test]
    fn headers_count_on_from_the_random_start_and_wrap() {
        let mut w = RtpWriter::new(96, 0x1122_3344, 0xffff, 10, 90_000);
        let mut out = Vec::new();
        w.write(&mut out, b"ab", 3600, false, 0);
        w.write(&mut out, b"c", u32::MAX as i64, true, 0);
        assert_eq!(
            &out[..14],
            &[0x80, 96, 0xff, 0xff, 0, 0, 0x0e, 0x1a, 0x11, 0x22, 0x33, 0x44, b'a', b'b']
        );
        // Sequence and time wrap; the marker bit is set on the payload type.
        assert_eq!(&out[14..22], &[0x80, 0x80 | 96, 0, 0, 0, 0, 0, 9]);
        assert_eq!(w.next_sequence(), 1);
    }

    #[test]
    fn sender_report_extrapolates_rtp_time_at_the_clock_rate() {
        let mut w = RtpWriter::new(96, 7, 0, 0, 90_000);
        assert!(
            w.sender_report(0).is_none(),
            "nothing sent, nothing to report"
        );
        let t0 = ntp_time(std::time::Duration::from_secs(1_000));
        w.write(&mut Vec::new(), &[0; 100], 9_000, true, t0);
        let half_second_later = t0 + (1u64 << 31);
        let sr = w.sender_report(half_second_later).unwrap();
        assert_eq!(sr.len(), 28);
        assert_eq!(&sr[..4], &[0x80, 200, 0, 6]);
        assert_eq!(u32::from_be_bytes(sr[4..8].try_into().unwrap()), 7);
        assert_eq!(
            u64::from_be_bytes(sr[8..16].try_into().unwrap()),
            half_second_later
        );
        assert_eq!(
            u32::from_be_bytes(sr[16..20].try_into().unwrap()),
            9_000 + 45_000
        );
        assert_eq!(u32::from_be_bytes(sr[20..24].try_into().unwrap()), 1);
        assert_eq!(u32::from_be_bytes(sr[24..28].try_into().unwrap()), 100);
    }

    #[test]
    fn ntp_time_is_seconds_since_1900_in_32_32() {
        let t = ntp_time(std::time::Duration::from_millis(1_500));
        assert_eq!(t >> 32, NTP_UNIX_OFFSET + 1);
        assert_eq!(t & 0xffff_ffff, 1 << 31);
    }

    #[test]
    fn aac_gets_its_au_header_and_oversized_frames_are_refused() {
        let aac = AudioCodec {
            codec: "aac",
            rfc6381: Some("mp4a.40.2".into()),
            sample_rate: 48_000,
            channels: 2,
            extra_data: Bytes::from_static(&[0x11, 0x90]),
        };
        let p = audio_payload(&aac, &[1, 2, 3]).unwrap();
        // 16 bits of AU headers; size 3 << 3, index 0.
        assert_eq!(p, [0, 16, 0, 24, 1, 2, 3]);
        assert!(audio_payload(&aac, &vec![0; 8192]).is_none());
        assert_eq!(
            audio_payload(&aac, &vec![0; 8191]).unwrap()[2..4],
            [0xff, 0xf8]
        );
        let pcmu = AudioCodec {
            codec: "pcmu",
            rfc6381: None,
            sample_rate: 8_000,
            channels: 1,
            extra_data: Bytes::new(),
        };
        assert_eq!(audio_payload(&pcmu, &[5, 6]).unwrap(), [5, 6]);
    }
}
