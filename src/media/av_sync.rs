//! One timeline for the audio and video of an RTP session, from the sender's RTCP sender
//! reports (RFC 3550 §6.4.1), sans-IO.
//!
//! Each RTP stream has its own clock with a random start: the times of two tracks say nothing
//! about each other. A sender report ties a track's RTP time to the sender's wall clock (NTP),
//! the same wall clock for every track of the sender, so two reports put both tracks on one
//! timeline. Counting each track from its own first packet (what the ingest did) put audio
//! anywhere from −0.5 to +0.9 s off video.
//!
//! Until both tracks have a report, the tracks are aligned on arrival: a track's first packet
//! gets the time since the session's first packet (of either track). That is right within the
//! network's jitter and costs no latency (holding frames until reports arrive would delay every
//! start: WebRTC senders report after a second or so; FFmpeg reports before its first packet, so
//! it is corrected before a frame goes out). Once both are known, video stays as it is and audio
//! is moved once onto the reports' timeline. A move forward leaves a gap; a move back would
//! rewind audio, so audio that would present at or before what was already sent is dropped
//! until it passes it (a short silence, once). Later reports are not followed: the sender's two
//! clocks hardly drift apart within a session, and every move costs the viewer a glitch.

use super::TrackKind;

/// A correction larger than this means a sender's reports are not to be trusted.
const MAX_CORRECTION_US: i64 = 10_000_000;

/// A sender report: the sender's wall clock (µs since the Unix epoch) and the RTP time then.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Report {
    pub wall_us: i64,
    pub rtp: u32,
}

#[derive(Debug, Clone, Default)]
struct Track {
    rate: i64,
    /// Added to the track's unwrapped RTP time (counted from its first packet).
    offset: Option<i64>,
    /// The last RTP time seen and its unwrapped value, to unwrap a report's RTP time.
    last: Option<(u32, i64)>,
    report: Option<Report>,
    /// The last time handed out.
    last_out: Option<i64>,
}

impl Track {
    /// The report's RTP time, unwrapped like the packets' (near the last packet).
    fn report_ext(&self) -> Option<(i64, i64)> {
        let report = self.report?;
        let (rtp, ext) = self.last?;
        Some((
            report.wall_us,
            ext + i64::from(report.rtp.wrapping_sub(rtp) as i32),
        ))
    }
}

/// Maps each track's unwrapped RTP time onto the session's one timeline.
#[derive(Debug, Clone)]
pub struct AvSync {
    /// When the session's first packet arrived (µs on the caller's monotonic clock).
    origin_us: Option<i64>,
    video: Track,
    audio: Track,
    /// Audio was put on the reports' timeline (or found unfit to be).
    settled: bool,
}

impl AvSync {
    pub fn new(video_rate: u32, audio_rate: u32) -> AvSync {
        let track = |rate: u32| Track {
            rate: i64::from(rate.max(1)),
            ..Track::default()
        };
        AvSync {
            origin_us: None,
            video: track(video_rate),
            audio: track(audio_rate),
            settled: false,
        }
    }

    fn track(&mut self, kind: TrackKind) -> &mut Track {
        match kind {
            TrackKind::Video => &mut self.video,
            TrackKind::Audio => &mut self.audio,
        }
    }

    /// A sender report for `kind`'s stream.
    pub fn report(&mut self, kind: TrackKind, report: Report) {
        self.track(kind).report = Some(report);
        self.settle();
    }

    /// The time on the session's timeline of a packet of `kind` with RTP time `rtp` (unwrapped:
    /// `ext`, counted from the track's first packet), arrived at `now_us`. `None`: drop it (audio
    /// that a correction moved back, until it passes what was sent).
    pub fn map(&mut self, kind: TrackKind, rtp: u32, ext: i64, now_us: i64) -> Option<i64> {
        let origin = *self.origin_us.get_or_insert(now_us);
        let track = self.track(kind);
        track.last = Some((rtp, ext));
        if track.offset.is_none() {
            track.offset = Some((now_us - origin).max(0) * track.rate / 1_000_000);
            self.settle();
        }
        let track = self.track(kind);
        let out = ext + track.offset.unwrap_or(0);
        if kind == TrackKind::Audio && track.last_out.is_some_and(|last| out <= last) {
            return None;
        }
        track.last_out = Some(out);
        Some(out)
    }

    /// Once both tracks have packets and reports: moves audio onto the reports' timeline.
    fn settle(&mut self) {
        if self.settled {
            return;
        }
        let (Some((v_wall, v_ext)), Some((a_wall, a_ext)), Some(v_off), Some(a_off)) = (
            self.video.report_ext(),
            self.audio.report_ext(),
            self.video.offset,
            self.audio.offset,
        ) else {
            return;
        };
        self.settled = true;
        // Where video is, in µs on the session timeline, at the audio report's wall time;
        // the audio report's RTP time belongs there.
        let (v_rate, a_rate) = (self.video.rate as i128, self.audio.rate as i128);
        let video_us =
            (i128::from(v_ext + v_off) * 1_000_000 / v_rate) + i128::from(a_wall - v_wall);
        let offset = (video_us * a_rate / 1_000_000) as i64 - a_ext;
        let change_us = (offset - a_off) as i128 * 1_000_000 / a_rate;
        if change_us.unsigned_abs() > MAX_CORRECTION_US as u128 {
            tracing::debug!(
                change_us = change_us as i64,
                "sender reports ignored: too far off"
            );
            return;
        }
        self.audio.offset = Some(offset);
    }
}

/// The sender reports in an RTCP compound packet: each one's SSRC and report.
pub fn sender_reports(rtcp: &[u8]) -> Vec<(u32, Report)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(head) = rtcp.get(at..at + 4) {
        if head[0] >> 6 != 2 {
            break;
        }
        let len = 4 * (usize::from(u16::from_be_bytes([head[2], head[3]])) + 1);
        let Some(packet) = rtcp.get(at..at + len) else {
            break;
        };
        if head[1] == 200 && packet.len() >= 28 {
            let word = |i: usize| {
                u32::from_be_bytes([packet[i], packet[i + 1], packet[i + 2], packet[i + 3]])
            };
            let ntp = (u64::from(word(8)) << 32) | u64::from(word(12));
            out.push((
                word(4),
                Report {
                    wall_us: ntp_to_unix_us(ntp),
                    rtp: word(16),
                },
            ));
        }
        at += len;
    }
    out
}

/// Whether a datagram on an RTP port is RTCP (RFC 5761 §4: packet types 192–223).
pub fn is_rtcp(packet: &[u8]) -> bool {
    packet.len() >= 8 && packet[0] >> 6 == 2 && (192..=223).contains(&packet[1])
}

/// A 64-bit NTP timestamp as µs since the Unix epoch.
pub fn ntp_to_unix_us(ntp: u64) -> i64 {
    const NTP_UNIX_OFFSET: i64 = 2_208_988_800;
    let secs = (ntp >> 32) as i64 - NTP_UNIX_OFFSET;
    let frac = ((ntp & 0xffff_ffff) * 1_000_000) >> 32;
    secs * 1_000_000 + frac as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sender whose audio (48 kHz) and video (90 kHz) clocks start at random points, with a
    /// report of each for wall time `wall_us`.
    fn report(rtp_start: u32, rate: i64, media_us: i64, wall_us: i64) -> Report {
        Report {
            wall_us,
            rtp: rtp_start.wrapping_add((media_us * rate / 1_000_000) as u32),
        }
    }

    #[test]
    fn reports_put_both_tracks_on_one_timeline() {
        // Content time t (µs) is at RTP v0 + t·90k and a0 + t·48k; wall = 1e15 + t.
        let (v0, a0, wall0) = (4_000_000_000u32, 123_456u32, 1_000_000_000_000_000i64);
        let rtp_v = |t: i64| v0.wrapping_add((t * 90_000 / 1_000_000) as u32);
        let rtp_a = |t: i64| a0.wrapping_add((t * 48_000 / 1_000_000) as u32);
        let mut sync = AvSync::new(90_000, 48_000);
        // FFmpeg's order: a report, then the track's first packet. Video's first packet is the
        // content at 0.5 s (the first audio frame is at 0) and arrives 0.3 s before audio's.
        sync.report(
            TrackKind::Video,
            report(v0, 90_000, 500_000, wall0 + 500_000),
        );
        let v = sync.map(TrackKind::Video, rtp_v(500_000), 0, 0).unwrap();
        sync.report(TrackKind::Audio, report(a0, 48_000, 0, wall0));
        let a = sync.map(TrackKind::Audio, rtp_a(0), 0, 300_000).unwrap();
        assert_eq!(v, 0);
        // Audio content at 0 is 0.5 s before video content at 0.5 s.
        assert_eq!(a, -24_000);
        // Later packets keep the relation: content at 2 s in both tracks is at the same time.
        let v2 = sync
            .map(TrackKind::Video, rtp_v(2_000_000), 135_000, 400_000)
            .unwrap();
        let a2 = sync
            .map(TrackKind::Audio, rtp_a(2_000_000), 96_000, 400_000)
            .unwrap();
        assert!((v2 as f64 / 90_000.0 - a2 as f64 / 48_000.0).abs() < 1e-4);
    }

    #[test]
    fn arrival_aligns_until_reports_then_audio_moves_once_never_back() {
        let mut sync = AvSync::new(90_000, 48_000);
        // No reports: the first audio packet arrives 0.1 s after the first video packet.
        assert_eq!(sync.map(TrackKind::Video, 1000, 0, 5_000_000), Some(0));
        assert_eq!(sync.map(TrackKind::Audio, 7, 0, 5_100_000), Some(4800));
        assert_eq!(
            sync.map(TrackKind::Audio, 7 + 1024, 1024, 5_120_000),
            Some(5824)
        );
        // Reports say audio's RTP 7 is 0.05 s after video's RTP 1000: audio moves 0.05 s back.
        sync.report(
            TrackKind::Video,
            Report {
                wall_us: 10_000_000,
                rtp: 1000,
            },
        );
        sync.report(
            TrackKind::Audio,
            Report {
                wall_us: 10_050_000,
                rtp: 7,
            },
        );
        // 2048 would be 2048 + 2400 = 4448 ≤ 5824: dropped, as is 3072 (5472).
        assert_eq!(sync.map(TrackKind::Audio, 7 + 2048, 2048, 5_140_000), None);
        assert_eq!(sync.map(TrackKind::Audio, 7 + 3072, 3072, 5_160_000), None);
        assert_eq!(
            sync.map(TrackKind::Audio, 7 + 4096, 4096, 5_180_000),
            Some(6496)
        );
        // Video never moves; later reports change nothing.
        sync.report(
            TrackKind::Audio,
            Report {
                wall_us: 10_000_000,
                rtp: 7,
            },
        );
        assert_eq!(
            sync.map(TrackKind::Video, 4600, 3600, 5_200_000),
            Some(3600)
        );
        assert_eq!(
            sync.map(TrackKind::Audio, 7 + 5120, 5120, 5_200_000),
            Some(7520)
        );
    }

    #[test]
    fn reports_far_off_are_ignored() {
        let mut sync = AvSync::new(90_000, 48_000);
        sync.map(TrackKind::Video, 0, 0, 0);
        sync.map(TrackKind::Audio, 0, 0, 0);
        sync.report(TrackKind::Video, Report { wall_us: 0, rtp: 0 });
        sync.report(
            TrackKind::Audio,
            Report {
                wall_us: 3_600_000_000,
                rtp: 0,
            },
        );
        assert_eq!(sync.map(TrackKind::Audio, 48, 48, 1000), Some(48));
    }

    #[test]
    fn sender_reports_are_read_from_compound_packets() {
        // A receiver report (no sender info), then a sender report, as one compound packet.
        let mut rtcp = vec![0x80, 201, 0, 1, 0, 0, 0, 9];
        rtcp.extend_from_slice(&[0x80, 200, 0, 6]);
        rtcp.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        // 2023-11-14 22:13:20.5 UTC: NTP seconds 3,908,988,800, half a second of fraction.
        rtcp.extend_from_slice(&3_908_988_800u32.to_be_bytes());
        rtcp.extend_from_slice(&0x8000_0000u32.to_be_bytes());
        rtcp.extend_from_slice(&1000u32.to_be_bytes());
        rtcp.extend_from_slice(&[0; 8]);
        assert!(is_rtcp(&rtcp));
        assert!(
            !is_rtcp(&[0x80, 0xe0, 0, 1, 0, 0, 0, 0]),
            "RTP, PT 96 with the marker"
        );
        let reports = sender_reports(&rtcp);
        assert_eq!(
            reports,
            [(
                0x1234_5678,
                Report {
                    wall_us: 1_700_000_000_500_000,
                    rtp: 1000
                }
            )]
        );
        assert!(sender_reports(b"\x80\xc8\x00\x06short").is_empty());
    }
}
