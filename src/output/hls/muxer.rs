//! LL-HLS, sans-IO: published frames in; an init segment, parts, segments and playlists out.
//!
//! The frames are the camera's shared fMP4 fragments (one moof + mdat per frame, made once per
//! camera for every output), taken through an [`MseSession`] so HLS gets the same init segment
//! and timeline as an MSE viewer. A part is the fragments of ~`part_target` of video (a CMAF
//! part may hold several moof/mdat pairs); a segment is its parts, cut at the first keyframe at
//! least `segment_min` after the segment began, so every segment and every part marked
//! `INDEPENDENT` starts with a keyframe. Parts and segments never change once made, so they are
//! served as immutable; only the playlist moves.
//!
//! Numbering: segments by media sequence number (MSN); parts by a counter across the whole run
//! (`part{N}.mp4`), and in the playlist by their index within their segment (`_HLS_part`).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};

use crate::hub::Packet;
use crate::media::{AudioCodec, TrackKind, VideoCodec};
use crate::output::mse::{ClientCodecs, MseSession, Outgoing};

const VIDEO_RATE: f64 = 90_000.0;

/// How the muxer cuts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cuts {
    pub part_target: Duration,
    pub segment_min: Duration,
    /// Complete segments kept (and listed).
    pub keep: usize,
}

impl Default for Cuts {
    fn default() -> Cuts {
        Cuts {
            part_target: Duration::from_millis(200),
            segment_min: Duration::from_secs(1),
            keep: 7,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Part {
    /// The run-wide part number (its file name).
    pub number: u64,
    pub duration: f64,
    pub independent: bool,
    pub data: Bytes,
}

#[derive(Debug, Clone)]
pub struct Segment {
    pub msn: u64,
    pub parts: Vec<Part>,
    pub duration: f64,
    /// Wall-clock time of its first frame.
    pub date: SystemTime,
}

impl Segment {
    /// The whole segment: its parts one after the other.
    pub fn data(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.parts.iter().map(|p| p.data.len()).sum());
        for p in &self.parts {
            out.extend_from_slice(&p.data);
        }
        out.freeze()
    }
}

/// The segment being made: its complete parts and the part being filled.
#[derive(Debug)]
struct Open {
    msn: u64,
    parts: Vec<Part>,
    start_dts: i64,
    date: SystemTime,
    part_start_dts: i64,
    part_independent: bool,
    part_data: BytesMut,
    part_has_video: bool,
}

/// Whether a blocking playlist request can be answered (RFC 8216bis §6.2.5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// The asked-for segment or part exists: answer now.
    Ready,
    /// Not yet: wait for the next change.
    Wait,
    /// Further ahead than a client may ask (400).
    TooFar,
}

pub struct Muxer {
    cuts: Cuts,
    session: MseSession,
    codec: Option<Arc<VideoCodec>>,
    init: Option<Bytes>,
    /// `video/mp4; codecs="…"` of the init segment.
    mime: Option<String>,
    segments: VecDeque<Segment>,
    open: Option<Open>,
    next_msn: u64,
    next_part: u64,
    /// Counts restarts (new descriptions): the init segment's name carries it.
    generation: u64,
    /// Largest segment duration so far, rounded up (`EXT-X-TARGETDURATION`, which must not
    /// shrink).
    target: u64,
}

impl Muxer {
    pub fn new(cuts: Cuts) -> Muxer {
        Muxer {
            cuts,
            session: MseSession::new(ClientCodecs::all()),
            codec: None,
            init: None,
            mime: None,
            segments: VecDeque::new(),
            open: None,
            next_msn: 0,
            next_part: 0,
            generation: 0,
            target: cuts.segment_min.as_secs().max(1),
        }
    }

    pub fn init(&self) -> Option<&Bytes> {
        self.init.as_ref()
    }

    pub fn codec(&self) -> Option<&Arc<VideoCodec>> {
        self.codec.as_ref()
    }

    /// The codecs of the init segment, as `CODECS` wants them (`avc1.64001f,mp4a.40.2`).
    pub fn codecs(&self) -> Option<String> {
        let mime = self.mime.as_ref()?;
        let start = mime.find("codecs=\"")? + "codecs=\"".len();
        Some(mime[start..].trim_end_matches('"').to_string())
    }

    /// Adds a frame. A new codec description (camera restarted with new settings) starts the
    /// playlist over: old parts cannot be decoded with the new init segment.
    pub fn push(&mut self, packet: &Packet, audio: Option<&AudioCodec>, now: SystemTime) {
        let out = match self.session.on_frame(packet, audio) {
            Ok(out) => out,
            Err(e) => {
                tracing::debug!("hls: {e}");
                return;
            }
        };
        let mut fragment = BytesMut::new();
        for o in out {
            match o {
                Outgoing::Text(mime) => {
                    let value: serde_json::Value = serde_json::from_str(&mime).unwrap_or_default();
                    let new_mime = value["value"].as_str().map(str::to_string);
                    if self.init.is_some() {
                        self.restart();
                    }
                    self.mime = new_mime;
                    self.codec = packet.video_codec.clone();
                }
                Outgoing::Binary(b) if self.init.is_none() => self.init = Some(b),
                Outgoing::Binary(b) => fragment.extend_from_slice(&b),
            }
        }
        if fragment.is_empty() {
            return;
        }
        if packet.track == TrackKind::Video {
            self.cut_before(packet, now);
        }
        // Audio before the first keyframe's segment has nowhere to go.
        if let Some(open) = self.open.as_mut() {
            open.part_data.extend_from_slice(&fragment);
            open.part_has_video |= packet.track == TrackKind::Video;
        }
    }

    /// Closes the part (and the segment) that `packet` must not join.
    fn cut_before(&mut self, packet: &Packet, now: SystemTime) {
        let dts = packet.dts;
        let Some(open) = self.open.as_mut() else {
            if packet.keyframe {
                self.open = Some(self.new_open(dts, now));
            }
            return;
        };
        let segment_long = secs(dts - open.start_dts) >= self.cuts.segment_min.as_secs_f64();
        if packet.keyframe && segment_long {
            self.close_part(dts);
            self.close_segment(dts, now);
            return;
        }
        if secs(dts - open.part_start_dts) >= self.cuts.part_target.as_secs_f64() - 0.001 {
            self.close_part(dts);
            if let Some(open) = self.open.as_mut() {
                open.part_independent = packet.keyframe;
            }
        }
    }

    fn new_open(&mut self, dts: i64, now: SystemTime) -> Open {
        let msn = self.next_msn;
        self.next_msn += 1;
        Open {
            msn,
            parts: Vec::new(),
            start_dts: dts,
            date: now,
            part_start_dts: dts,
            part_independent: true,
            part_data: BytesMut::new(),
            part_has_video: false,
        }
    }

    fn close_part(&mut self, end_dts: i64) {
        let Some(open) = self.open.as_mut() else {
            return;
        };
        if !open.part_has_video {
            return;
        }
        let number = self.next_part;
        self.next_part += 1;
        open.parts.push(Part {
            number,
            duration: secs(end_dts - open.part_start_dts),
            independent: open.part_independent,
            data: std::mem::take(&mut open.part_data).freeze(),
        });
        open.part_start_dts = end_dts;
        open.part_independent = false;
        open.part_has_video = false;
    }

    fn close_segment(&mut self, end_dts: i64, now: SystemTime) {
        let Some(open) = self.open.take() else {
            return;
        };
        let duration = secs(end_dts - open.start_dts);
        let rounded = duration.round().max(1.0) as u64;
        if rounded > self.target {
            tracing::warn!(
                duration,
                "an HLS segment is longer than the target duration (keyframes further apart)"
            );
            self.target = rounded;
        }
        self.segments.push_back(Segment {
            msn: open.msn,
            parts: open.parts,
            duration,
            date: open.date,
        });
        while self.segments.len() > self.cuts.keep {
            self.segments.pop_front();
        }
        self.open = Some(self.new_open(end_dts, now));
    }

    /// A new description: everything made so far is gone. Numbers go on, so no cached file
    /// name is ever reused for other bytes.
    fn restart(&mut self) {
        self.segments.clear();
        self.open = None;
        self.init = None;
        self.generation += 1;
    }

    /// How many of the oldest segments end further than `until` seconds before the live edge
    /// (the open segment's parts included): the segments a delta update leaves out.
    fn skippable(&self, until: f64) -> usize {
        let open: f64 = self
            .open
            .iter()
            .flat_map(|o| o.parts.iter())
            .map(|p| p.duration)
            .sum();
        let mut after = open;
        let mut keep = 0;
        for s in self.segments.iter().rev() {
            if after >= until {
                break;
            }
            after += s.duration;
            keep += 1;
        }
        self.segments.len() - keep
    }

    /// The init segment's file name (without the prefix).
    pub fn init_name(&self) -> String {
        format!("init{}.mp4", self.generation)
    }

    /// `EXT-X-TARGETDURATION`, in seconds.
    pub fn target_duration(&self) -> u64 {
        self.target
    }

    /// Bits a second over the listed segments (`BANDWIDTH`).
    pub fn bandwidth(&self) -> u64 {
        let bytes: usize = self
            .segments
            .iter()
            .flat_map(|s| s.parts.iter())
            .map(|p| p.data.len())
            .sum();
        let secs: f64 = self.segments.iter().map(|s| s.duration).sum();
        if secs > 0.0 {
            (bytes as f64 * 8.0 / secs) as u64
        } else {
            0
        }
    }

    pub fn segment(&self, msn: u64) -> Option<&Segment> {
        self.segments.iter().find(|s| s.msn == msn)
    }

    pub fn part(&self, number: u64) -> Option<&Part> {
        self.segments
            .iter()
            .flat_map(|s| s.parts.iter())
            .chain(self.open.iter().flat_map(|o| o.parts.iter()))
            .find(|p| p.number == number)
    }

    /// The part number the preload hint names (the one being filled).
    pub fn next_part(&self) -> u64 {
        self.next_part
    }

    /// Whether there is a playlist worth serving: at least one complete segment.
    pub fn ready(&self) -> bool {
        self.init.is_some() && !self.segments.is_empty()
    }

    /// Whether segment `msn` (and part `part` of it) exists yet. A part index past the end of
    /// a complete segment means part 0 of the next one; a segment that is no longer listed is
    /// answered at once (with the whole playlist).
    pub fn wanted(&self, msn: u64, part: Option<u64>) -> Wanted {
        let Some(open) = self.open.as_ref() else {
            return Wanted::Wait;
        };
        if self.segments.front().is_some_and(|first| msn < first.msn) {
            return Wanted::Ready;
        }
        if msn > open.msn + 1 {
            return Wanted::TooFar;
        }
        let Some(p) = part else {
            return if msn < open.msn {
                Wanted::Ready
            } else {
                Wanted::Wait
            };
        };
        let known = match msn.cmp(&open.msn) {
            std::cmp::Ordering::Less => self.segment(msn).map_or(0, |s| s.parts.len()),
            std::cmp::Ordering::Equal => open.parts.len(),
            std::cmp::Ordering::Greater => 0,
        } as u64;
        if p >= known + self.advance_part_limit() {
            return Wanted::TooFar;
        }
        if p < known {
            return Wanted::Ready;
        }
        if msn < open.msn {
            let next_has_part = self.segment(msn + 1).is_some() || !open.parts.is_empty();
            if msn + 1 < open.msn || next_has_part {
                return Wanted::Ready;
            }
        }
        Wanted::Wait
    }

    /// How many parts a client may ask ahead of the last one: three seconds of them when parts
    /// are shorter than a second (RFC 8216bis §6.2.5.2), else 3.
    fn advance_part_limit(&self) -> u64 {
        let target = self.cuts.part_target.as_secs_f64();
        if target < 1.0 {
            (3.0 / target).ceil() as u64
        } else {
            3
        }
    }

    /// The media playlist. `base` is prefixed to every file name (e.g. `/api/cameras/x/hls/`).
    /// `skip` (`_HLS_skip=YES`): a delta update, where the segments further than
    /// `CAN-SKIP-UNTIL` from the live edge are one `EXT-X-SKIP` line (RFC 8216bis §6.2.5.1).
    pub fn playlist(&self, base: &str, skip: bool) -> String {
        let part_target = self
            .segments
            .iter()
            .flat_map(|s| s.parts.iter())
            .chain(self.open.iter().flat_map(|o| o.parts.iter()))
            .map(|p| p.duration)
            .fold(self.cuts.part_target.as_secs_f64(), f64::max);
        let part_target = (part_target * 1000.0).ceil() / 1000.0;
        let mut out = String::new();
        let _ = writeln!(out, "#EXTM3U");
        let _ = writeln!(out, "#EXT-X-VERSION:9");
        let _ = writeln!(out, "#EXT-X-TARGETDURATION:{}", self.target);
        let skip_until = 6 * self.target;
        let _ = writeln!(
            out,
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3},CAN-SKIP-UNTIL={skip_until}.0",
            part_target * 3.0
        );
        let _ = writeln!(out, "#EXT-X-PART-INF:PART-TARGET={part_target:.3}");
        let first = self.segments.front().map_or(self.next_msn, |s| s.msn);
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{first}");
        let skipped = if skip {
            self.skippable(skip_until as f64)
        } else {
            0
        };
        if skipped > 0 {
            // The client has the init segment's name from the full playlist.
            let _ = writeln!(out, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
        } else {
            let _ = writeln!(out, "#EXT-X-MAP:URI=\"{base}{}\"", self.init_name());
        }
        // Part lines only for the last segments (the spec's 3 target durations).
        let recent = self.segments.len().saturating_sub(3);
        for (i, s) in self.segments.iter().enumerate().skip(skipped) {
            let _ = writeln!(
                out,
                "#EXT-X-PROGRAM-DATE-TIME:{}",
                crate::common::rfc3339(s.date)
            );
            if i >= recent {
                write_parts(&mut out, base, &s.parts);
            }
            let _ = writeln!(out, "#EXTINF:{:.5},", s.duration);
            let _ = writeln!(out, "{base}seg{}.mp4", s.msn);
        }
        if let Some(open) = self.open.as_ref().filter(|o| !o.parts.is_empty()) {
            let _ = writeln!(
                out,
                "#EXT-X-PROGRAM-DATE-TIME:{}",
                crate::common::rfc3339(open.date)
            );
            write_parts(&mut out, base, &open.parts);
        }
        let _ = writeln!(
            out,
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{base}part{}.mp4\"",
            self.next_part
        );
        out
    }
}

fn write_parts(out: &mut String, base: &str, parts: &[Part]) {
    for p in parts {
        let _ = write!(
            out,
            "#EXT-X-PART:DURATION={:.5},URI=\"{base}part{}.mp4\"",
            p.duration, p.number
        );
        if p.independent {
            out.push_str(",INDEPENDENT=YES");
        }
        out.push('\n');
    }
}

fn secs(ticks: i64) -> f64 {
    ticks as f64 / VIDEO_RATE
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::packet::Sequencer;
    use crate::media::Frame;

    fn codec() -> Arc<VideoCodec> {
        Arc::new(crate::output::fmp4::tests::test_video())
    }

    /// `seconds` of 25 fps video with a keyframe every `gop` frames, pushed into a muxer.
    fn run(seconds: u32, gop: u32) -> Muxer {
        let mut m = Muxer::new(Cuts::default());
        let mut seq = Sequencer::default();
        let codec = codec();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        for i in 0..seconds * 25 {
            let dts = i64::from(i) * 3600;
            let frame = Frame {
                track: TrackKind::Video,
                pts: dts,
                dts,
                keyframe: i % gop == 0,
                capture_time_us: None,
                video_codec: Some(codec.clone()),
                data: Bytes::from(vec![0, 0, 0, 2, 0x65, i as u8]),
            };
            m.push(
                &seq.packet(frame),
                None,
                t0 + Duration::from_millis(u64::from(i) * 40),
            );
        }
        m
    }

    #[test]
    fn segments_start_at_keyframes_and_parts_are_near_the_target() {
        let m = run(5, 25);
        assert!(m.ready());
        let segs: Vec<&Segment> = m.segments.iter().collect();
        assert_eq!(segs.len(), 4, "4 complete 1 s segments, the 5th open");
        for s in &segs {
            assert!((s.duration - 1.0).abs() < 1e-9, "{}", s.duration);
            assert_eq!(s.parts.len(), 5);
            assert!(s.parts[0].independent);
            assert!(s.parts[1..].iter().all(|p| !p.independent));
            for p in &s.parts {
                assert!((p.duration - 0.2).abs() < 1e-9, "{}", p.duration);
                assert!(&p.data[4..8] == b"moof");
            }
            // A segment is its parts; its first bytes are the first frame's moof.
            assert_eq!(
                s.data().len(),
                s.parts.iter().map(|p| p.data.len()).sum::<usize>()
            );
        }
        let numbers: Vec<u64> = segs
            .iter()
            .flat_map(|s| s.parts.iter().map(|p| p.number))
            .collect();
        assert_eq!(numbers, (0..20).collect::<Vec<_>>());
        assert_eq!(&m.init().unwrap()[4..8], b"ftyp");
        assert_eq!(m.codecs().unwrap(), m.codec().unwrap().rfc6381);
    }

    #[test]
    fn a_long_gop_makes_longer_segments_and_raises_the_target() {
        let m = run(9, 50);
        assert!(m.segments.iter().all(|s| (s.duration - 2.0).abs() < 1e-9));
        assert_eq!(m.target, 2);
        assert!(m
            .playlist("/x/", false)
            .contains("#EXT-X-TARGETDURATION:2\n"));
    }

    #[test]
    fn the_playlist_lists_what_exists_and_hints_the_next_part() {
        let m = run(5, 25);
        let p = m.playlist("/h/", false);
        let lines: Vec<&str> = p.lines().collect();
        assert_eq!(lines[0], "#EXTM3U");
        assert!(p.contains("#EXT-X-MEDIA-SEQUENCE:0\n"));
        assert!(p.contains("#EXT-X-MAP:URI=\"/h/init0.mp4\"\n"));
        assert!(p.contains(
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.600,CAN-SKIP-UNTIL=6.0\n"
        ));
        assert!(p.contains("#EXT-X-PART-INF:PART-TARGET=0.200\n"));
        assert!(p.contains("#EXTINF:1.00000,\n/h/seg3.mp4\n"));
        assert!(p.contains("#EXT-X-PART:DURATION=0.20000,URI=\"/h/part15.mp4\",INDEPENDENT=YES\n"));
        // Parts only for the last three segments.
        assert!(!p.contains("/h/part0.mp4"));
        assert!(p.contains("/h/part5.mp4"));
        assert_eq!(
            lines.last().unwrap(),
            &format!(
                "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"/h/part{}.mp4\"",
                m.next_part()
            )
        );
        assert_eq!(
            p.matches("#EXT-X-PROGRAM-DATE-TIME:").count(),
            5,
            "each segment, the open one too"
        );
    }

    #[test]
    fn a_delta_update_skips_what_is_further_than_can_skip_until() {
        let m = run(10, 25);
        // 7 segments of 1 s kept, the 10th second open: 6 s from the edge reach back to the
        // segment that ends 6 s before it; the older ones are skipped.
        let full = m.playlist("/h/", false);
        let delta = m.playlist("/h/", true);
        let skipped = m.skippable(6.0);
        assert!(skipped >= 1, "{delta}");
        assert!(delta.contains(&format!("#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}\n")));
        assert!(
            !delta.contains("#EXT-X-MAP"),
            "the client has it from the full playlist"
        );
        assert_eq!(
            full.matches("#EXTINF:").count() - delta.matches("#EXTINF:").count(),
            skipped
        );
        // What remains is the same as the full playlist's end.
        let tail = delta
            .split_once(&format!("SKIPPED-SEGMENTS={skipped}\n"))
            .unwrap()
            .1;
        assert!(full.ends_with(tail));
        // Without enough history there is nothing to skip: the full playlist.
        let short = run(3, 25);
        assert_eq!(short.playlist("/h/", true), short.playlist("/h/", false));
    }

    #[test]
    fn blocking_requests_wait_for_what_does_not_exist_and_refuse_what_is_too_far() {
        let m = run(5, 25);
        // Complete: segments 0..=3; open: 4 with some parts.
        assert_eq!(m.wanted(3, None), Wanted::Ready);
        assert_eq!(m.wanted(3, Some(4)), Wanted::Ready);
        // Part 5 of segment 3 is past its end: part 0 of segment 4.
        let open_parts = m.open.as_ref().unwrap().parts.len() as u64;
        assert_eq!(
            m.wanted(3, Some(5)),
            if open_parts > 0 {
                Wanted::Ready
            } else {
                Wanted::Wait
            }
        );
        assert_eq!(m.wanted(4, None), Wanted::Wait);
        assert_eq!(m.wanted(4, Some(open_parts)), Wanted::Wait);
        if open_parts > 0 {
            assert_eq!(m.wanted(4, Some(open_parts - 1)), Wanted::Ready);
        }
        assert_eq!(m.wanted(5, Some(0)), Wanted::Wait);
        assert_eq!(m.wanted(5, None), Wanted::Wait);
        assert_eq!(m.wanted(6, None), Wanted::TooFar);
        assert_eq!(m.wanted(4, Some(open_parts + 15)), Wanted::TooFar);
        assert_eq!(m.wanted(4, Some(open_parts + 14)), Wanted::Wait);
    }

    #[test]
    fn a_new_description_starts_over_with_numbers_that_go_on() {
        let mut m = run(3, 25);
        let last_part = m.next_part();
        let mut seq = Sequencer::default();
        let mut other = crate::output::fmp4::tests::test_video();
        other.width = 1280;
        let other = Arc::new(other);
        for i in 0..50 {
            let dts = 1_000_000 + i64::from(i) * 3600;
            let frame = Frame {
                track: TrackKind::Video,
                pts: dts,
                dts,
                keyframe: i % 25 == 0,
                capture_time_us: None,
                video_codec: Some(other.clone()),
                data: Bytes::from(vec![0, 0, 0, 2, 0x65, i as u8]),
            };
            m.push(&seq.packet(frame), None, SystemTime::now());
        }
        assert!(Arc::ptr_eq(m.codec().unwrap(), &other));
        assert!(m.segments.iter().all(|s| s.msn >= 3));
        assert!(m.part(0).is_none());
        assert!(m.next_part() > last_part);
        assert_eq!(m.init_name(), "init1.mp4", "a new name for new bytes");
    }
}
