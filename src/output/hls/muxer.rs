//! LL-HLS, sans-IO: published frames in; init segments, parts, segments and playlists out.
//!
//! The frames are the camera's shared fMP4 fragments (one moof + mdat per frame, made once per
//! camera for every output); what is the muxer's own is a copy of each ~100-byte moof head with
//! its decode time on the muxer's timeline and its `mfhd` sequence number (continuous across
//! parts and segments: VLC skipped a segment when they jumped). A part is the fragments of
//! ~`part_target` of video (a CMAF part may hold several moof/mdat pairs); a segment is its
//! parts, cut at the first keyframe at least `segment_min` after the segment began, so every
//! part marked `INDEPENDENT` starts with a keyframe, and so does every segment of a camera whose
//! keyframes come at least once per target duration. `EXT-X-TARGETDURATION` is fixed before the
//! first playlist (`segment_min` + 1 s, rounded up) and never changes (RFC 8216 §4.3.3.1: hls.js
//! and AVPlayer keep the first value); a keyframe later than that still ends the segment at the
//! target, at a part boundary, and the next segment starts with a part that is not independent.
//! Parts and segments never change once made, so they are served as immutable; only the
//! playlist moves.
//!
//! A source restart (a new bitstream, a new description, audio that comes or goes) never empties
//! the playlist: the segment before it ends there, and when the init segment changes the next
//! one carries `EXT-X-DISCONTINUITY` and a new `EXT-X-MAP` (RFC 8216 §4.3.2.3), counted by
//! `EXT-X-DISCONTINUITY-SEQUENCE` as segments roll off. The muxer's timeline only goes forward:
//! a keyframe whose time does not follow the previous picture (a restarted source, a camera
//! whose clock jumped) continues where the last picture ended.
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
use crate::output::fmp4::{self, audio_fits_mp4, Tracks};

const VIDEO_RATE: i64 = 90_000;
/// A keyframe further than this past where the last picture ended starts the timeline anew
/// (the source stalled or its clock jumped forward).
const MAX_GAP: i64 = VIDEO_RATE;

/// How the muxer cuts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cuts {
    pub part_target: Duration,
    pub segment_min: Duration,
    /// Complete segments kept (and listed), as long as they last three target durations.
    pub keep: usize,
}

impl Default for Cuts {
    fn default() -> Cuts {
        Cuts {
            // Short parts are low latency (see PART_HOLD_BACK): at 25 fps a part is 3
            // frames (0.12 s), 8 part requests a second per LL-HLS viewer.
            part_target: Duration::from_millis(100),
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
    /// Wall-clock time of its first picture (`EXT-X-PROGRAM-DATE-TIME`).
    pub date: SystemTime,
    /// The init segment it needs.
    pub generation: u64,
    /// Whether it starts a discontinuity (a new init segment).
    pub discontinuity: bool,
    /// Its discontinuity sequence number.
    pub disc_seq: u64,
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
    /// Start on the muxer's timeline (90 kHz).
    start: i64,
    generation: u64,
    discontinuity: bool,
    disc_seq: u64,
    part_start: i64,
    part_independent: bool,
    part_data: BytesMut,
    part_has_video: bool,
}

/// An init segment and what it was made from.
#[derive(Debug)]
struct Init {
    generation: u64,
    bytes: Bytes,
    video: Arc<VideoCodec>,
    audio: Option<AudioCodec>,
    /// `CODECS` (`avc1.64001f,mp4a.40.2`).
    codecs: String,
}

/// Where the camera's timestamps land on the muxer's timeline.
#[derive(Debug, Default)]
struct Clock {
    /// Added to a video DTS (90 kHz) to give the muxer's time.
    shift: i64,
    epoch: Option<u32>,
    /// Muxer time of the last picture, and where it ends.
    last_video: Option<i64>,
    video_end: Option<i64>,
    /// Where the last audio frame ends (muxer time in the audio clock).
    audio_end: Option<i64>,
    /// Audio before this muxer time (90 kHz) is not sent: the first picture of a new timeline
    /// is where sound and picture start together.
    audio_from: i64,
    /// Wall-clock seconds minus muxer seconds: the smallest seen since the bitstream began
    /// (frames replayed from the GOP cache arrive late; live ones set it).
    anchor: Option<f64>,
    awaiting_keyframe: bool,
    new_bitstream: bool,
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
    /// The init segments the listed segments need, oldest first; the last is in force.
    inits: VecDeque<Init>,
    segments: VecDeque<Segment>,
    open: Option<Open>,
    clock: Clock,
    next_msn: u64,
    next_part: u64,
    next_generation: u64,
    /// Discontinuities so far (the open segment's `disc_seq` when it starts one).
    discontinuities: u64,
    /// A discontinuity whose segment was dropped before it had a part: the next one has it.
    carried_discontinuity: bool,
    /// `mfhd` of the next fragment.
    next_fragment: u32,
    /// `EXT-X-TARGETDURATION`, fixed for the run: no segment is longer (rounded).
    target: u64,
}

impl Muxer {
    pub fn new(cuts: Cuts) -> Muxer {
        Muxer {
            cuts,
            inits: VecDeque::new(),
            segments: VecDeque::new(),
            open: None,
            clock: Clock::default(),
            next_msn: 0,
            next_part: 0,
            next_generation: 0,
            discontinuities: 0,
            carried_discontinuity: false,
            next_fragment: 1,
            target: target_duration(&cuts),
        }
    }

    /// The init segment in force.
    pub fn init(&self) -> Option<&Bytes> {
        self.inits.back().map(|i| &i.bytes)
    }

    /// The init segment named `name` (`init{N}.mp4`), while a listed segment needs it.
    pub fn init_file(&self, name: &str) -> Option<&Bytes> {
        self.inits
            .iter()
            .find(|i| init_name(i.generation) == name)
            .map(|i| &i.bytes)
    }

    pub fn codec(&self) -> Option<&Arc<VideoCodec>> {
        self.inits.back().map(|i| &i.video)
    }

    /// The codecs of the init segment in force, as `CODECS` wants them (`avc1.64001f,mp4a.40.2`).
    pub fn codecs(&self) -> Option<String> {
        self.inits.back().map(|i| i.codecs.clone())
    }

    /// The frames that follow come from a new subscription (the camera was stopped and
    /// started): they start a new bitstream at their first keyframe.
    pub fn resubscribed(&mut self) {
        self.clock.new_bitstream = true;
    }

    /// Adds a frame. `audio` is the camera's audio description now; `taken` when the frame was
    /// captured (or arrived), for `EXT-X-PROGRAM-DATE-TIME`.
    pub fn push(&mut self, packet: &Packet, audio: Option<&AudioCodec>, taken: SystemTime) {
        match packet.track {
            TrackKind::Video => self.push_video(packet, audio, taken),
            TrackKind::Audio => self.push_audio(packet),
        }
    }

    fn push_video(&mut self, packet: &Packet, audio: Option<&AudioCodec>, taken: SystemTime) {
        let Some(codec) = packet.video_codec.as_ref() else {
            return;
        };
        let new_description = !self
            .inits
            .back()
            .is_some_and(|i| Arc::ptr_eq(&i.video, codec));
        if self.clock.epoch != Some(packet.epoch) || new_description {
            self.clock.new_bitstream = true;
        }
        self.clock.epoch = Some(packet.epoch);
        if self.clock.new_bitstream {
            self.clock.awaiting_keyframe = true;
        }
        if self.clock.awaiting_keyframe && !packet.keyframe {
            return;
        }
        let mut time = packet.dts + self.clock.shift;
        // Before any cut: a segment's date counts the picture that closes it (the first live
        // one after a replayed GOP).
        self.note_wall(taken, time);
        if packet.keyframe {
            let audio = audio.filter(|a| audio_fits_mp4(a)).cloned();
            let new_init = match self.refresh_init(codec, audio) {
                Ok(changed) => changed,
                Err(e) => {
                    tracing::debug!("hls: {e}");
                    return;
                }
            };
            let follows = match (self.clock.last_video, self.clock.video_end) {
                (Some(last), Some(end)) => time > last && time <= end + MAX_GAP,
                _ => false,
            };
            if !follows || self.clock.awaiting_keyframe || new_init {
                let first = self.clock.video_end.is_none();
                if !follows {
                    // The timeline continues where the last picture ended (0 at the start).
                    let at = self.clock.video_end.unwrap_or(0);
                    self.clock.shift = at - packet.dts;
                    time = at;
                    self.clock.audio_from = time + (packet.pts - packet.dts).max(0);
                }
                self.close_segment(time);
                if std::mem::take(&mut self.clock.new_bitstream) || !follows {
                    // A new bitstream's wall clock is its own (a restart takes time).
                    self.clock.anchor = None;
                }
                self.clock.awaiting_keyframe = false;
                self.open = Some(self.new_open(time, new_init && !first));
            } else {
                self.cut_before(time, true);
            }
        } else {
            if self.clock.last_video.is_some_and(|last| time <= last) {
                // Decode time went back: nothing decodes until the next keyframe.
                self.clock.awaiting_keyframe = true;
                return;
            }
            self.cut_before(time, false);
        }
        self.note_wall(taken, time);
        // A frame's duration is its distance from the previous one: after a jump, the jump.
        let duration = match i64::from(packet.duration) {
            0 => 3600,
            d => d.min(MAX_GAP),
        };
        self.clock.last_video = Some(time);
        self.clock.video_end = Some(time + duration);
        self.append(packet, time, true);
    }

    /// The picture at muxer time `time` was taken (or arrived) at `taken`.
    fn note_wall(&mut self, taken: SystemTime, time: i64) {
        let wall = taken
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let offset = wall - secs(time);
        self.clock.anchor = Some(self.clock.anchor.map_or(offset, |a| a.min(offset)));
    }

    fn push_audio(&mut self, packet: &Packet) {
        let Some(rate) = self
            .inits
            .back()
            .and_then(|i| i.audio.as_ref())
            .map(|a| i64::from(a.sample_rate))
        else {
            return; // the init segment has no audio track
        };
        if self.clock.awaiting_keyframe || self.open.is_none() {
            return;
        }
        let shift = (self.clock.shift as f64 * rate as f64 / VIDEO_RATE as f64).round() as i64;
        let time = packet.dts + shift;
        let duration = match i64::from(packet.duration) {
            0 => 1024,
            d => d.min(rate / 5),
        };
        if ((time + duration) as f64 / rate as f64) <= secs(self.clock.audio_from) {
            return; // sound from before the first picture of this timeline
        }
        if self
            .clock
            .audio_end
            .is_some_and(|end| time < end - duration / 2)
        {
            return; // overlaps what was sent: decode times must not go back
        }
        self.clock.audio_end = Some(time + duration);
        self.append(packet, time, false);
    }

    /// The init segment for these tracks; `true` when it differs from the one in force.
    fn refresh_init(
        &mut self,
        codec: &Arc<VideoCodec>,
        audio: Option<AudioCodec>,
    ) -> Result<bool, fmp4::MuxError> {
        if let Some(current) = self.inits.back() {
            if Arc::ptr_eq(&current.video, codec) && current.audio == audio {
                return Ok(false);
            }
        }
        let tracks = Tracks {
            video: (**codec).clone(),
            audio,
        };
        let bytes = fmp4::init_segment(&tracks)?;
        if let Some(current) = self.inits.back_mut() {
            if current.bytes == bytes {
                // The same description again (a looped file): nothing changes.
                current.video = codec.clone();
                current.audio = tracks.audio;
                return Ok(false);
            }
        }
        let mime = tracks.mime();
        let codecs = mime
            .split_once("codecs=\"")
            .map_or("", |(_, c)| c.trim_end_matches('"'))
            .to_string();
        let generation = self.next_generation;
        self.next_generation += 1;
        self.inits.push_back(Init {
            generation,
            bytes,
            video: codec.clone(),
            audio: tracks.audio,
            codecs,
        });
        Ok(true)
    }

    /// The frame's shared fragment with the muxer's decode time and fragment number, into the
    /// part being filled.
    fn append(&mut self, packet: &Packet, time: i64, video: bool) {
        let Some(open) = self.open.as_mut() else {
            return;
        };
        let fragment = match packet.fmp4(|p| fmp4::fragment(p).map_err(|e| e.to_string())) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!("hls: {e}");
                return;
            }
        };
        let mut head = fragment.head.to_vec();
        let field = &mut head[fragment.field_at..fragment.field_at + fragment.field_len];
        let time = time.max(0) as u64;
        match fragment.field_len {
            8 => field.copy_from_slice(&time.to_be_bytes()),
            _ => field.copy_from_slice(&(time as u32).to_be_bytes()),
        }
        // moof header (8), mfhd header (8), version and flags (4), then the sequence number.
        if head.get(12..16) == Some(b"mfhd") {
            head[20..24].copy_from_slice(&self.next_fragment.to_be_bytes());
        }
        self.next_fragment = self.next_fragment.wrapping_add(1).max(1);
        open.part_data.extend_from_slice(&head);
        open.part_data.extend_from_slice(&fragment.body);
        open.part_has_video |= video;
    }

    /// Closes the part (and the segment) that a picture at `time` must not join.
    fn cut_before(&mut self, time: i64, keyframe: bool) {
        let Some(open) = self.open.as_ref() else {
            return;
        };
        let length = secs(time - open.start);
        let segment_long = length >= self.cuts.segment_min.as_secs_f64();
        // At the target without a keyframe: end it anyway (its length rounds to the target).
        let at_target = length >= self.target as f64 - 0.001;
        if (keyframe && segment_long) || at_target {
            self.close_segment(time);
            let mut open = self.new_open(time, false);
            open.part_independent = keyframe;
            self.open = Some(open);
            return;
        }
        if secs(time - open.part_start) >= self.cuts.part_target.as_secs_f64() - 0.001 {
            self.close_part(time);
            if let Some(open) = self.open.as_mut() {
                open.part_independent = keyframe;
            }
        }
    }

    fn new_open(&mut self, start: i64, discontinuity: bool) -> Open {
        let carried = std::mem::take(&mut self.carried_discontinuity);
        if discontinuity && !carried {
            self.discontinuities += 1;
        }
        let discontinuity = discontinuity || carried;
        let msn = self.next_msn;
        self.next_msn += 1;
        Open {
            msn,
            parts: Vec::new(),
            start,
            generation: self.inits.back().map_or(0, |i| i.generation),
            discontinuity,
            disc_seq: self.discontinuities,
            part_start: start,
            part_independent: true,
            part_data: BytesMut::new(),
            part_has_video: false,
        }
    }

    fn close_part(&mut self, end: i64) {
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
            duration: secs(end - open.part_start),
            independent: open.part_independent,
            data: std::mem::take(&mut open.part_data).freeze(),
        });
        open.part_start = end;
        open.part_independent = false;
        open.part_has_video = false;
    }

    /// Ends the open segment at `end` (a segment with no picture is dropped, its number reused).
    fn close_segment(&mut self, end: i64) {
        self.close_part(end);
        let Some(open) = self.open.take() else {
            return;
        };
        if open.parts.is_empty() {
            self.next_msn = open.msn;
            // Carried to the segment that replaces it.
            self.carried_discontinuity = open.discontinuity;
            return;
        }
        let duration = secs(end - open.start);
        let date = self.date(open.start);
        self.segments.push_back(Segment {
            msn: open.msn,
            parts: open.parts,
            duration,
            date,
            generation: open.generation,
            discontinuity: open.discontinuity,
            disc_seq: open.disc_seq,
        });
        // RFC 8216 §6.2.2: never less than three target durations listed.
        let floor = 3.0 * self.target as f64;
        while self.segments.len() > self.cuts.keep {
            let total: f64 = self.segments.iter().map(|s| s.duration).sum();
            if total - self.segments[0].duration < floor {
                break;
            }
            self.segments.pop_front();
        }
        // Init segments no listed segment needs any more.
        let oldest = self.segments.front().map_or(0, |s| s.generation);
        while self.inits.len() > 1 && self.inits[0].generation < oldest {
            self.inits.pop_front();
        }
    }

    /// Wall-clock time of muxer time `time`.
    fn date(&self, time: i64) -> SystemTime {
        let at = self.clock.anchor.unwrap_or(0.0) + secs(time);
        SystemTime::UNIX_EPOCH + Duration::from_secs_f64(at.max(0.0))
    }

    /// How many of the oldest segments a delta update leaves out: those that end further than
    /// `until` seconds before the live edge (the open segment's parts included), up to the
    /// first that starts a discontinuity, whose tag the client must see.
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
        let skippable = self.segments.len() - keep;
        let first_break = self
            .segments
            .iter()
            .skip(1)
            .position(|s| s.discontinuity)
            .map_or(usize::MAX, |i| i + 1);
        skippable.min(first_break)
    }

    /// The init segment's file name in force (without the prefix).
    pub fn init_name(&self) -> String {
        init_name(self.inits.back().map_or(0, |i| i.generation))
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
        !self.inits.is_empty() && !self.segments.is_empty()
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

    /// `PART-TARGET`: no part is longer.
    fn part_target(&self) -> f64 {
        let longest = self
            .segments
            .iter()
            .flat_map(|s| s.parts.iter())
            .chain(self.open.iter().flat_map(|o| o.parts.iter()))
            .map(|p| p.duration)
            .fold(self.cuts.part_target.as_secs_f64(), f64::max);
        (longest * 1000.0).ceil() / 1000.0
    }

    /// The media playlist. `base` is prefixed to every file name (e.g. `/api/cameras/x/hls/`).
    /// `skip` (`_HLS_skip=YES`): a delta update, where the segments further than
    /// `CAN-SKIP-UNTIL` from the live edge are one `EXT-X-SKIP` line (RFC 8216bis §6.2.5.1).
    pub fn playlist(&self, base: &str, skip: bool) -> String {
        let part_target = self.part_target();
        let mut out = String::new();
        let _ = writeln!(out, "#EXTM3U");
        let _ = writeln!(out, "#EXT-X-VERSION:9");
        let _ = writeln!(out, "#EXT-X-TARGETDURATION:{}", self.target);
        let skip_until = 6 * self.target;
        let _ = writeln!(
            out,
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3},CAN-SKIP-UNTIL={skip_until}.0",
            part_target * PART_HOLD_BACK
        );
        let _ = writeln!(out, "#EXT-X-PART-INF:PART-TARGET={part_target:.3}");
        let first = self.segments.front();
        let _ = writeln!(
            out,
            "#EXT-X-MEDIA-SEQUENCE:{}",
            first.map_or(self.next_msn, |s| s.msn)
        );
        let _ = writeln!(
            out,
            "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
            first.map_or(self.discontinuities, |s| s.disc_seq)
        );
        let skipped = if skip {
            self.skippable(skip_until as f64)
        } else {
            0
        };
        if skipped > 0 {
            let _ = writeln!(out, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
        }
        // Part lines only for the last segments (the spec's 3 target durations).
        let recent = self.segments.len().saturating_sub(3);
        let mut generation = None;
        for (i, s) in self.segments.iter().enumerate().skip(skipped) {
            self.segment_head(
                &mut out,
                base,
                &mut generation,
                i > 0,
                s.discontinuity,
                s.generation,
            );
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
            let listed = !self.segments.is_empty();
            self.segment_head(
                &mut out,
                base,
                &mut generation,
                listed,
                open.discontinuity,
                open.generation,
            );
            let _ = writeln!(
                out,
                "#EXT-X-PROGRAM-DATE-TIME:{}",
                crate::common::rfc3339(self.date(open.start))
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

    /// `EXT-X-DISCONTINUITY` (not on the playlist's first segment: the discontinuity sequence
    /// counts it) and `EXT-X-MAP` where the init segment changes or the listing starts.
    fn segment_head(
        &self,
        out: &mut String,
        base: &str,
        listed: &mut Option<u64>,
        not_first: bool,
        discontinuity: bool,
        generation: u64,
    ) {
        if discontinuity && not_first {
            let _ = writeln!(out, "#EXT-X-DISCONTINUITY");
        }
        if *listed != Some(generation) {
            let _ = writeln!(out, "#EXT-X-MAP:URI=\"{base}{}\"", init_name(generation));
            *listed = Some(generation);
        }
    }
}

/// `EXT-X-TARGETDURATION` for `cuts`: a whole second more than the shortest segment, so a
/// camera with a keyframe every `segment_min` to `segment_min` + 1 s (rounded) gets segments
/// that each start with one.
fn target_duration(cuts: &Cuts) -> u64 {
    (cuts.segment_min.as_secs_f64() + 1.0).ceil() as u64
}

/// `PART-HOLD-BACK` in part targets: the RFC 8216bis minimum (it asks for at least 2 and
/// recommends 3). hls.js starts this far behind the edge it loaded and, at under 1 s of
/// latency, never catches up (it speeds up only with more than 1 s buffered ahead), so this is
/// the latency a viewer keeps, plus the browser's start-up: decoding from the segment's
/// keyframe to the start position, 0.1–0.5 s in a loaded Chromium. With 0.2 s parts and 3
/// (0.6 s) warm viewers measured 0.9–1.1 s; with 2, 0.62–1.03 s (first viewers 0.74–1.09 s);
/// with 0.1 s parts (0.12 s at 25 fps) and 2, 0.56–0.61 s (first 0.70–0.81 s), over 120 s
/// (tests/hlsjs.rs).
const PART_HOLD_BACK: f64 = 2.0;

fn init_name(generation: u64) -> String {
    format!("init{generation}.mp4")
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
    ticks as f64 / VIDEO_RATE as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::packet::Sequencer;
    use crate::media::Frame;

    fn codec() -> Arc<VideoCodec> {
        Arc::new(crate::output::fmp4::tests::test_video())
    }

    fn aac() -> AudioCodec {
        AudioCodec {
            codec: "aac",
            rfc6381: Some("mp4a.40.2".into()),
            sample_rate: 48_000,
            channels: 2,
            extra_data: Bytes::from_static(&[0x11, 0x90]),
        }
    }

    const T0: u64 = 1_800_000_000;

    /// A camera as the hub publishes it: 25 fps video with B-frame-like composition offsets (a
    /// keyframe every `gop` frames), and 48 kHz AAC frames in between when `audio` is set.
    struct Camera {
        seq: Sequencer,
        codec: Arc<VideoCodec>,
        audio: Option<AudioCodec>,
        gop: u32,
        frame: u32,
        /// Added to every video timestamp (90 kHz): a source whose clock starts elsewhere.
        offset: i64,
        audio_next: i64,
        /// Frames before this one arrive with it (replayed from the GOP cache).
        burst: u32,
    }

    impl Camera {
        fn new(gop: u32) -> Camera {
            Camera {
                seq: Sequencer::default(),
                codec: codec(),
                audio: None,
                gop,
                frame: 0,
                offset: 0,
                audio_next: 0,
                burst: 0,
            }
        }

        /// `seconds` more of the camera into `m`; the wall clock is 40 ms a frame from T0.
        fn feed(&mut self, m: &mut Muxer, seconds: f64) {
            let frames = (seconds * 25.0).round() as u32;
            for _ in 0..frames {
                let i = self.frame;
                self.frame += 1;
                let dts = i64::from(i) * 3600 + self.offset;
                let wall = SystemTime::UNIX_EPOCH
                    + Duration::from_secs(T0)
                    + Duration::from_millis(u64::from(i.max(self.burst)) * 40);
                let frame = Frame {
                    track: TrackKind::Video,
                    pts: dts + 7200,
                    dts,
                    keyframe: i % self.gop == 0,
                    capture_time_us: None,
                    video_codec: Some(self.codec.clone()),
                    data: Bytes::from(vec![0, 0, 0, 2, 0x65, i as u8]),
                };
                let packet = self.seq.packet(frame);
                m.push(&packet, self.audio.as_ref(), wall);
                if self.audio.is_some() {
                    // Audio up to this picture's end (48 kHz, 1024-sample frames).
                    let until = (dts + 3600) * 48_000 / 90_000;
                    while self.audio_next + 1024 <= until {
                        let f = Frame::audio(self.audio_next, Bytes::from_static(&[1, 2, 3]));
                        self.audio_next += 1024;
                        m.push(&self.seq.packet(f), self.audio.as_ref(), wall);
                    }
                }
            }
        }

        /// The source restarts: a new description `Arc` (the same bytes unless `width`), a new
        /// bitstream whose first frame, a keyframe, is at `dts_restart` (90 kHz). The wall
        /// clock goes on (and skips the rest of the GOP).
        fn restart(&mut self, width: Option<u32>, dts_restart: i64) {
            let mut c = (*self.codec).clone();
            if let Some(w) = width {
                c.width = w;
            }
            self.codec = Arc::new(c);
            let r = self.frame % self.gop;
            if r != 0 {
                self.frame += self.gop - r;
            }
            self.offset = dts_restart - i64::from(self.frame) * 3600;
            self.seq.discontinuity();
        }
    }

    /// The cuts most tests here count with: 0.2 s parts, five to a 1 s segment.
    fn fifths() -> Cuts {
        Cuts {
            part_target: Duration::from_millis(200),
            ..Cuts::default()
        }
    }

    /// `seconds` of 25 fps video with a keyframe every `gop` frames, pushed into a muxer.
    fn run(seconds: u32, gop: u32) -> Muxer {
        let mut m = Muxer::new(fifths());
        Camera::new(gop).feed(&mut m, f64::from(seconds));
        m
    }

    /// Every fragment's (track, mfhd, tfdt) in `bytes` (parts or segments joined).
    fn fragments(bytes: &[u8]) -> Vec<(u32, u32, u64)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at + 8 <= bytes.len() {
            let size = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            if &bytes[at + 4..at + 8] == b"moof" {
                let moof = &bytes[at..at + size];
                let seq = u32::from_be_bytes(moof[20..24].try_into().unwrap());
                let track_at = moof.windows(4).position(|w| w == b"tfhd").unwrap() + 8;
                let track = u32::from_be_bytes(moof[track_at..track_at + 4].try_into().unwrap());
                let t = moof.windows(4).position(|w| w == b"tfdt").unwrap() + 4;
                let time = if moof[t] == 1 {
                    u64::from_be_bytes(moof[t + 4..t + 12].try_into().unwrap())
                } else {
                    u64::from(u32::from_be_bytes(moof[t + 4..t + 8].try_into().unwrap()))
                };
                out.push((track, seq, time));
            }
            at += size.max(8);
        }
        out
    }

    /// Everything the muxer lists, as a player reads it: every segment, then the open parts.
    fn listed_bytes(m: &Muxer) -> Vec<u8> {
        let mut out = Vec::new();
        for s in &m.segments {
            out.extend_from_slice(&s.data());
        }
        for p in m.open.iter().flat_map(|o| o.parts.iter()) {
            out.extend_from_slice(&p.data);
        }
        out
    }

    fn listed_seconds(m: &Muxer) -> f64 {
        m.segments.iter().map(|s| s.duration).sum()
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
    fn a_two_second_gop_makes_two_second_segments_within_the_target() {
        let m = run(9, 50);
        assert!(m.segments.iter().all(|s| (s.duration - 2.0).abs() < 1e-9));
        assert_eq!(m.target, 2);
        assert!(m
            .playlist("/x/", false)
            .contains("#EXT-X-TARGETDURATION:2\n"));
        assert!(m.segments.iter().all(|s| s.parts[0].independent));
    }

    #[test]
    fn keyframes_further_apart_than_the_target_never_raise_it() {
        // A keyframe every 5 s: segments end at the 2 s target, between keyframes.
        let m = run(21, 125);
        assert_eq!(m.target, 2);
        assert!(m
            .playlist("/x/", false)
            .contains("#EXT-X-TARGETDURATION:2\n"));
        for s in &m.segments {
            assert!(s.duration.round() as u64 <= 2, "{}", s.duration);
        }
        // Only the parts that begin with a keyframe are marked independent.
        let firsts: Vec<bool> = m.segments.iter().map(|s| s.parts[0].independent).collect();
        assert!(
            firsts.contains(&true) && firsts.contains(&false),
            "{firsts:?}"
        );
    }

    #[test]
    fn default_parts_are_three_frames_at_25_fps_and_the_hold_back_two_of_them() {
        let mut m = Muxer::new(Cuts::default());
        Camera::new(25).feed(&mut m, 5.0);
        assert_eq!(m.segments.len(), 4);
        for s in &m.segments {
            // 8 parts of 3 frames and the segment's last frame.
            let parts: Vec<f64> = s
                .parts
                .iter()
                .map(|p| (p.duration * 100.0).round())
                .collect();
            assert_eq!(parts, [12.0, 12.0, 12.0, 12.0, 12.0, 12.0, 12.0, 12.0, 4.0]);
        }
        let p = m.playlist("/h/", false);
        assert!(p.contains(",PART-HOLD-BACK=0.240,"), "{p}");
        assert!(p.contains("#EXT-X-PART-INF:PART-TARGET=0.120\n"), "{p}");
        // Three seconds of parts may be asked ahead (RFC 8216bis §6.2.5.2).
        assert_eq!(m.advance_part_limit(), 30);
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
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.400,CAN-SKIP-UNTIL=12.0\n"
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
        // 20 segments of 1 s kept, the 25th second open: 12 s (6 target durations) from the
        // edge reach back to the segment that ends 12 s before it; the older ones are skipped.
        let mut m = Muxer::new(Cuts {
            keep: 20,
            ..Cuts::default()
        });
        Camera::new(25).feed(&mut m, 25.0);
        let full = m.playlist("/h/", false);
        let delta = m.playlist("/h/", true);
        let skipped = m.skippable(12.0);
        assert!(skipped >= 1, "{delta}");
        assert!(delta.contains(&format!("#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}\n")));
        assert!(
            delta.contains(&format!(
                "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}\n#EXT-X-MAP:URI=\"/h/init0.mp4\"\n"
            )),
            "the init segment of what it lists: {delta}"
        );
        assert_eq!(
            full.matches("#EXTINF:").count() - delta.matches("#EXTINF:").count(),
            skipped
        );
        // What remains is the same as the full playlist's end.
        let tail = delta.split_once("init0.mp4\"\n").unwrap().1;
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
    fn a_restart_with_the_same_description_keeps_the_playlist_and_the_timeline() {
        let mut m = Muxer::new(Cuts::default());
        let mut cam = Camera::new(25);
        cam.audio = Some(aac());
        cam.feed(&mut m, 3.3);
        let first = m.segments.front().unwrap().msn;
        let listed = m.segments.len();
        // A looped file: a new bitstream (a new description `Arc`, same bytes) whose clock
        // starts at 0 again.
        cam.restart(None, 0);
        cam.audio_next = 0;
        cam.feed(&mut m, 2.5);
        let p = m.playlist("/h/", false);
        assert!(!p.contains("#EXT-X-DISCONTINUITY\n"), "{p}");
        assert_eq!(p.matches("#EXT-X-MAP").count(), 1, "{p}");
        assert_eq!(m.segments.front().unwrap().msn, first, "nothing rolled off");
        assert!(m.segments.len() > listed);
        // The muxer's clock went on: every picture follows the previous one.
        let video: Vec<u64> = fragments(&listed_bytes(&m))
            .into_iter()
            .filter(|f| f.0 == 1)
            .map(|f| f.2)
            .collect();
        assert!(video.windows(2).all(|w| w[1] == w[0] + 3600), "{video:?}");
    }

    #[test]
    fn a_new_description_keeps_the_segments_behind_a_discontinuity_and_a_new_map() {
        let mut m = Muxer::new(Cuts::default());
        let mut cam = Camera::new(25);
        cam.feed(&mut m, 5.0);
        let before = m.segments.len();
        // Restarted with other settings, and a clock 5 s ahead.
        cam.restart(Some(640), 10 * 90_000);
        cam.feed(&mut m, 3.0);
        assert_eq!(m.codec().unwrap().width, 640);
        assert!(m.segments.len() > before, "the old segments stay");
        let p = m.playlist("/h/", false);
        let d = p.find("#EXT-X-DISCONTINUITY\n").expect(&p);
        assert_eq!(
            p[d..].lines().nth(1),
            Some("#EXT-X-MAP:URI=\"/h/init1.mp4\""),
            "{p}"
        );
        assert!(p[..d].contains("#EXT-X-MAP:URI=\"/h/init0.mp4\"\n"));
        assert!(p.contains("#EXT-X-DISCONTINUITY-SEQUENCE:0\n"));
        assert!(m.init_file("init0.mp4").is_some() && m.init_file("init1.mp4").is_some());
        // As the old segments roll off, the sequence counts the discontinuity that went.
        cam.feed(&mut m, 12.0);
        let p = m.playlist("/h/", false);
        assert!(p.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"), "{p}");
        assert!(!p.contains("#EXT-X-DISCONTINUITY\n"), "{p}");
        assert!(!p.contains("init0.mp4"), "{p}");
        assert!(m.init_file("init0.mp4").is_none());
        let msns: Vec<u64> = m.segments.iter().map(|s| s.msn).collect();
        assert!(msns.windows(2).all(|w| w[1] == w[0] + 1), "{msns:?}");
    }

    #[test]
    fn restarts_never_leave_less_than_three_target_durations_listed() {
        let mut m = Muxer::new(Cuts::default());
        let mut cam = Camera::new(50);
        cam.feed(&mut m, 10.0);
        let mut reached = false;
        for round in 0..40u32 {
            // Restarts 0.4–1.2 s apart (short segments), every third with new settings.
            let width = (round % 3 == 0).then_some(600 + round);
            cam.restart(width, i64::from(round % 2) * 90_000 * 30);
            for _ in 0..(10 + round % 20) {
                cam.feed(&mut m, 0.04);
                let listed = listed_seconds(&m);
                let floor = 3.0 * m.target as f64;
                if listed >= floor {
                    reached = true;
                } else {
                    assert!(!reached, "round {round}: {listed} s listed < {floor}");
                }
                assert!(m.ready());
                let p = m.playlist("/h/", false);
                for uri in p
                    .lines()
                    .filter_map(|l| l.strip_prefix("#EXT-X-MAP:URI=\"/h/"))
                {
                    let name = uri.trim_end_matches('"');
                    assert!(m.init_file(name).is_some(), "{name} is listed but gone");
                }
                // Each listed segment after the first that starts a discontinuity is tagged.
                let tagged = m
                    .segments
                    .iter()
                    .skip(1)
                    .filter(|s| s.discontinuity)
                    .count()
                    + usize::from(
                        m.open
                            .as_ref()
                            .is_some_and(|o| o.discontinuity && !o.parts.is_empty()),
                    );
                assert_eq!(p.matches("#EXT-X-DISCONTINUITY\n").count(), tagged, "{p}");
                let first = m.segments[0].disc_seq;
                assert!(p.contains(&format!("#EXT-X-DISCONTINUITY-SEQUENCE:{first}\n")));
            }
        }
        assert!(reached);
        let msns: Vec<u64> = m.segments.iter().map(|s| s.msn).collect();
        assert!(msns.windows(2).all(|w| w[1] == w[0] + 1), "{msns:?}");
    }

    #[test]
    fn audio_that_appears_joins_the_init_segment_at_the_next_keyframe() {
        let mut m = Muxer::new(Cuts::default());
        let mut cam = Camera::new(25);
        cam.feed(&mut m, 3.0);
        assert_eq!(m.codecs().unwrap(), "avc1.42c01f");
        // The camera reports audio now; its first keyframe after that is within a segment.
        cam.audio = Some(aac());
        cam.audio_next = i64::from(cam.frame) * 3600 * 48_000 / 90_000;
        cam.feed(&mut m, 1.0);
        assert_eq!(m.codecs().unwrap(), "avc1.42c01f,mp4a.40.2");
        cam.feed(&mut m, 1.0);
        let p = m.playlist("/h/", false);
        let d = p.find("#EXT-X-DISCONTINUITY\n").expect(&p);
        assert_eq!(
            p[d..].lines().nth(1),
            Some("#EXT-X-MAP:URI=\"/h/init1.mp4\"")
        );
        let frags = fragments(&listed_bytes(&m));
        assert!(frags.iter().any(|f| f.0 == 2), "audio fragments follow");
    }

    #[test]
    fn fragment_numbers_and_decode_times_run_on_across_parts_segments_and_restarts() {
        let mut m = Muxer::new(Cuts::default());
        let mut cam = Camera::new(25);
        cam.audio = Some(aac());
        cam.feed(&mut m, 3.3);
        cam.restart(None, 0); // the clock goes back
        cam.audio_next = 0;
        cam.feed(&mut m, 2.2);
        cam.restart(None, 90_000 * 100); // and jumps ahead
        cam.audio_next = 100 * 48_000;
        cam.feed(&mut m, 2.0);
        let frags = fragments(&listed_bytes(&m));
        assert!(frags.len() > 300);
        assert!(
            frags.windows(2).all(|w| w[1].1 == w[0].1 + 1),
            "mfhd numbers are consecutive"
        );
        for track in [1, 2] {
            let times: Vec<u64> = frags.iter().filter(|f| f.0 == track).map(|f| f.2).collect();
            assert!(
                times.windows(2).all(|w| w[1] > w[0]),
                "track {track}: {times:?}"
            );
        }
        let video: Vec<u64> = frags.iter().filter(|f| f.0 == 1).map(|f| f.2).collect();
        assert!(video.windows(2).all(|w| w[1] == w[0] + 3600), "{video:?}");
        // Sound and picture keep together across the restarts.
        let last_audio = frags.iter().rev().find(|f| f.0 == 2).unwrap().2 as f64 / 48_000.0;
        let last_video = *video.last().unwrap() as f64 / 90_000.0;
        assert!(
            (last_audio - last_video).abs() < 0.05,
            "{last_audio} {last_video}"
        );
    }

    #[test]
    fn program_date_times_follow_the_frames_not_their_replay() {
        let mut m = Muxer::new(Cuts::default());
        let mut cam = Camera::new(25);
        // The first GOP comes from the GOP cache: all at once, when the next keyframe is live.
        cam.burst = 25;
        cam.feed(&mut m, 6.0);
        let first = m.segments[0].date;
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(T0);
        assert_eq!(first, t0, "the first picture was taken at T0");
        for w in m.segments.iter().collect::<Vec<_>>().windows(2) {
            let gap = w[1].date.duration_since(w[0].date).unwrap().as_secs_f64();
            assert!(
                (gap - w[0].duration).abs() < 0.001,
                "{gap} vs EXTINF {}",
                w[0].duration
            );
        }
    }

    #[test]
    fn a_blocking_delta_update_always_lists_the_part_asked_for() {
        let mut m = Muxer::new(Cuts::default());
        let mut cam = Camera::new(25);
        cam.audio = Some(aac());
        cam.feed(&mut m, 3.0);
        for round in 0..300u32 {
            if round % 60 == 59 {
                cam.restart((round % 120 == 59).then_some(640 + round), 0);
                cam.audio_next = 0;
            }
            cam.feed(&mut m, 0.04);
            let open = m.open.as_ref().unwrap();
            let Some(last) = open.parts.last() else {
                continue;
            };
            let (msn, part) = (open.msn, open.parts.len() as u64 - 1);
            assert_eq!(m.wanted(msn, Some(part)), Wanted::Ready);
            let delta = m.playlist("/h/", true);
            let full = m.playlist("/h/", false);
            assert!(
                delta.contains(&format!("URI=\"/h/part{}.mp4\"", last.number)),
                "round {round}: {delta}"
            );
            assert!(delta.contains("#EXTINF:"), "a complete segment: {delta}");
            if let Some((_, rest)) = delta.split_once("#EXT-X-SKIP:SKIPPED-SEGMENTS=") {
                let (n, rest) = rest.split_once('\n').unwrap();
                let n: usize = n.parse().unwrap();
                assert!(
                    rest.starts_with("#EXT-X-DISCONTINUITY\n#EXT-X-MAP:")
                        || rest.starts_with("#EXT-X-MAP:"),
                    "{delta}"
                );
                assert_eq!(
                    full.matches("#EXTINF:").count(),
                    delta.matches("#EXTINF:").count() + n
                );
                assert!(n <= m.segments.len());
            }
        }
    }
}
