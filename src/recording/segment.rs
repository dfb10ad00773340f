//! Sans-IO segment writing: a camera's frames in, what to do to the disk out.
//!
//! A segment is one fragmented MP4 file: the init segment (ftyp + moov), then the camera's
//! shared per-frame fragments (moof + mdat, [`Packet::fmp4`]) as they are. Fragments are held
//! until a part's worth (`part`, camera time) has gathered and then handed out in one
//! [`Action::Append`], which the recorder writes and syncs in one go: a crash (SIGKILL, power
//! loss) loses at most the part being gathered, and every file on disk is a readable fMP4 up to
//! its last complete part.
//!
//! A new segment starts, always at a video keyframe: at the first one; when the video
//! description changes (new parameter sets or size: a player could not go on with the old init
//! segment); when the audio track appears or goes; when the bitstream is a new one (the source
//! restarted: the camera-wide timeline is kept continuous across a gap, so wall-clock times
//! would drift from it); and when the segment is `segment` long.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::hub::Packet;
use crate::media::{AudioCodec, TrackKind, VideoCodec};
use crate::output::fmp4::{self, audio_fits_mp4, Tracks};

const VIDEO_RATE: i64 = 90_000;

/// How far (10 s) a frame's time on the camera's clock may stray from the wall clock at its
/// arrival, measured from the segment's first frame. Wall times inside a segment follow the
/// camera's clock, so a publisher that forges its timestamps (a jump of 49 days, as a 32-bit
/// millisecond RTMP clock allows) would make a segment claim that long. A frame past this ends
/// the segment there, frames wait for the next keyframe, and that keyframe starts a segment at
/// its arrival time. Not tighter: a recorder starts on the camera's cached group of pictures
/// (older than its arrival by up to the camera's keyframe interval, often 2–4 s and up to ~10 s),
/// and it may lag by the hub's backlog of a few seconds.
const MAX_CLOCK_DRIFT_US: i64 = 10_000_000;

/// What the recorder does next, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create a new file starting with `init`; its first frame was at wall time `start_us`.
    Open(Opened),
    /// Append `chunks` to the open file and sync it; afterwards the file is `size` bytes long
    /// and holds footage up to wall time `end_us`; `keyframes` are in these chunks.
    Append {
        chunks: Vec<Bytes>,
        size: u64,
        end_us: i64,
        keyframes: Vec<Keyframe>,
    },
    /// The open file is complete.
    Close { size: u64, end_us: i64 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Opened {
    pub init: Bytes,
    pub start_us: i64,
    /// The MIME type of the segment (`video/mp4; codecs="avc1.64001f,mp4a.40.2"`).
    pub codecs: String,
}

/// A keyframe's wall time and the offset of its fragment in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keyframe {
    pub time_us: i64,
    pub offset: u64,
}

/// Where segments are cut and parts are written.
#[derive(Debug, Clone, Copy)]
pub struct Cuts {
    pub segment: Duration,
    pub part: Duration,
}

pub struct Writer {
    cuts: Cuts,
    open: Option<Open>,
    /// The segment closed last: where the next one starts in wall time.
    last: Option<Closed>,
}

/// What the next segment needs of the last one.
struct Closed {
    epoch: u32,
    origin_us: i64,
    start_us: i64,
    end_us: i64,
    off_clock: bool,
}

struct Open {
    video: Arc<VideoCodec>,
    /// The audio track of the init segment, when it has one.
    audio: Option<AudioCodec>,
    epoch: u32,
    /// Camera time (µs) of the first frame, and its wall time.
    origin_us: i64,
    start_us: i64,
    /// Camera time (µs) at which the pending part began.
    part_began_us: i64,
    written: u64,
    pending: Vec<Bytes>,
    pending_len: u64,
    keyframes: Vec<Keyframe>,
    /// Wall time of the end of the last frame taken.
    end_us: i64,
    /// A frame's time strayed past [`MAX_CLOCK_DRIFT_US`]: nothing more is taken, and the next
    /// keyframe cuts.
    off_clock: bool,
}

impl Open {
    fn wall(&self, camera_us: i64) -> i64 {
        self.start_us + (camera_us - self.origin_us)
    }

    fn flush(&mut self) -> Option<Action> {
        if self.pending.is_empty() {
            return None;
        }
        self.written += self.pending_len;
        self.pending_len = 0;
        Some(Action::Append {
            chunks: std::mem::take(&mut self.pending),
            size: self.written,
            end_us: self.end_us,
            keyframes: std::mem::take(&mut self.keyframes),
        })
    }
}

/// A frame's time on the camera-wide timeline, in microseconds.
fn camera_us(dts: i64, rate: i64) -> i64 {
    (dts as i128 * 1_000_000 / rate.max(1) as i128) as i64
}

impl Writer {
    pub fn new(cuts: Cuts) -> Writer {
        Writer {
            cuts,
            open: None,
            last: None,
        }
    }

    /// Whether a segment is open.
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Takes one frame. `audio` is the camera's audio description now; `wall_us` the wall time
    /// of its arrival: given to the frame if it starts a segment, and the clock the camera's own
    /// must keep to within [`MAX_CLOCK_DRIFT_US`].
    pub fn push(
        &mut self,
        packet: &Packet,
        audio: Option<&AudioCodec>,
        wall_us: i64,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        let video_key = packet.track == TrackKind::Video && packet.keyframe;
        if video_key {
            if let Some(codec) = &packet.video_codec {
                let audio = audio.filter(|a| audio_fits_mp4(a));
                if self.must_cut(packet, codec, audio) {
                    actions.extend(self.finish());
                }
                if self.open.is_none() {
                    match self.start(packet, codec, audio, wall_us) {
                        Ok(opened) => actions.push(Action::Open(opened)),
                        Err(e) => {
                            tracing::warn!("cannot record this video: {e}");
                            return actions;
                        }
                    }
                }
            }
        }
        let Some(open) = self.open.as_mut() else {
            return actions;
        };
        let (rate, fits) = match packet.track {
            TrackKind::Video => (VIDEO_RATE, packet.epoch == open.epoch),
            TrackKind::Audio => match &open.audio {
                Some(a) => (i64::from(a.sample_rate), true),
                None => (1, false),
            },
        };
        if !fits || open.off_clock {
            return actions;
        }
        let at = camera_us(packet.dts, rate);
        if (open.wall(at) - wall_us).abs() > MAX_CLOCK_DRIFT_US {
            tracing::warn!(
                "recording: a frame's time strays {} s from the wall clock; the segment ends here",
                (open.wall(at) - wall_us) / 1_000_000
            );
            open.off_clock = true;
            return actions;
        }
        let Ok(fragment) = packet.fmp4(|p| fmp4::fragment(p).map_err(|e| e.to_string())) else {
            return actions;
        };
        if video_key {
            open.keyframes.push(Keyframe {
                time_us: open.wall(at),
                offset: open.written + open.pending_len,
            });
        }
        open.pending_len += (fragment.head.len() + fragment.body.len()) as u64;
        open.pending.push(fragment.head);
        open.pending.push(fragment.body);
        let length = camera_us(i64::from(packet.duration), rate);
        open.end_us = open.end_us.max(open.wall(at + length));
        if at - open.part_began_us >= self.cuts.part.as_micros() as i64 {
            open.part_began_us = at;
            actions.extend(open.flush());
        }
        actions
    }

    /// Writes what is pending and closes the open segment (the stream stopped, recording was
    /// switched off, or a cut).
    pub fn finish(&mut self) -> Vec<Action> {
        let Some(mut open) = self.open.take() else {
            return Vec::new();
        };
        let mut actions: Vec<Action> = open.flush().into_iter().collect();
        self.last = Some(Closed {
            epoch: open.epoch,
            origin_us: open.origin_us,
            start_us: open.start_us,
            end_us: open.end_us,
            off_clock: open.off_clock,
        });
        actions.push(Action::Close {
            size: open.written,
            end_us: open.end_us,
        });
        actions
    }

    /// Forgets the open segment without writing anything more (a write failed).
    pub fn abandon(&mut self) {
        self.open = None;
        self.last = None;
    }

    /// Wall time of a new segment whose first frame is at camera time `origin_us` and arrived
    /// at `wall_us`. The same bitstream keeps the last segment's clock, so a cut leaves neither
    /// gap nor overlap (arrival times jitter, and a first segment that began on the camera's
    /// cached group of pictures started late by its age). A new bitstream (another publisher, a
    /// restarted source) or a clock that jumped starts at its arrival, but never before the
    /// last segment's end: a publisher's clock may have run ahead of the wall clock, and
    /// overlapping segments would stitch into repeated timestamps.
    fn start_wall(&self, epoch: u32, origin_us: i64, wall_us: i64) -> i64 {
        let Some(last) = &self.last else {
            return wall_us;
        };
        let continued = last.start_us + (origin_us - last.origin_us);
        if last.epoch == epoch
            && !last.off_clock
            && (continued - wall_us).abs() <= MAX_CLOCK_DRIFT_US
        {
            continued
        } else {
            wall_us.max(last.end_us)
        }
    }

    fn must_cut(
        &self,
        packet: &Packet,
        codec: &Arc<VideoCodec>,
        audio: Option<&AudioCodec>,
    ) -> bool {
        let Some(open) = &self.open else {
            return false;
        };
        let at = camera_us(packet.dts, VIDEO_RATE);
        !Arc::ptr_eq(&open.video, codec) && *open.video != **codec
            || open.audio.as_ref() != audio
            || open.epoch != packet.epoch
            || open.off_clock
            || at - open.origin_us >= self.cuts.segment.as_micros() as i64
    }

    fn start(
        &mut self,
        packet: &Packet,
        codec: &Arc<VideoCodec>,
        audio: Option<&AudioCodec>,
        wall_us: i64,
    ) -> Result<Opened, fmp4::MuxError> {
        let tracks = Tracks {
            video: (**codec).clone(),
            audio: audio.cloned(),
        };
        let init = fmp4::init_segment(&tracks)?;
        let origin_us = camera_us(packet.dts, VIDEO_RATE);
        let wall_us = self.start_wall(packet.epoch, origin_us, wall_us);
        self.open = Some(Open {
            video: codec.clone(),
            audio: tracks.audio.clone(),
            epoch: packet.epoch,
            origin_us,
            start_us: wall_us,
            part_began_us: origin_us,
            written: init.len() as u64,
            pending: Vec::new(),
            pending_len: 0,
            keyframes: Vec::new(),
            end_us: wall_us,
            off_clock: false,
        });
        Ok(Opened {
            init,
            start_us: wall_us,
            codecs: tracks.mime(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::Frame;
    use crate::output::fmp4::tests::test_video;

    fn packet(codec: &Arc<VideoCodec>, n: i64, keyframe: bool, epoch: u32) -> Arc<Packet> {
        Packet::in_epoch(
            Frame {
                track: TrackKind::Video,
                pts: n * 3600,
                dts: n * 3600,
                keyframe,
                capture_time_us: None,
                video_codec: Some(codec.clone()),
                data: Bytes::from(vec![n as u8; 100]),
            },
            n as u32 + 1,
            3600,
            epoch,
        )
    }

    fn cuts(segment_s: u64) -> Cuts {
        Cuts {
            segment: Duration::from_secs(segment_s),
            part: Duration::from_secs(1),
        }
    }

    /// Runs frames 0..n (a keyframe every 50, 25 fps) and returns every action.
    fn record(
        writer: &mut Writer,
        codec: &Arc<VideoCodec>,
        frames: std::ops::Range<i64>,
        epoch: u32,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        for n in frames {
            actions.extend(writer.push(
                &packet(codec, n, n % 50 == 0, epoch),
                None,
                1_000_000_000 + n * 40_000,
            ));
        }
        actions
    }

    #[test]
    fn a_segment_is_its_init_then_whole_parts_and_keyframes_know_their_offsets() {
        let codec = Arc::new(test_video());
        let mut w = Writer::new(cuts(3600));
        let mut actions = record(&mut w, &codec, 0..100, 0);
        actions.extend(w.finish());
        let Action::Open(opened) = &actions[0] else {
            panic!("{actions:?}")
        };
        assert_eq!(opened.start_us, 1_000_000_000);
        assert!(opened.codecs.starts_with("video/mp4; codecs=\"avc1"));
        let mut file = opened.init.to_vec();
        let mut keyframes = Vec::new();
        for a in &actions[1..] {
            match a {
                Action::Append {
                    chunks,
                    size,
                    keyframes: k,
                    ..
                } => {
                    for c in chunks {
                        file.extend_from_slice(c);
                    }
                    assert_eq!(*size, file.len() as u64, "size after each part");
                    keyframes.extend_from_slice(k);
                }
                Action::Close { size, end_us } => {
                    assert_eq!(*size, file.len() as u64);
                    // 100 frames of 40 ms.
                    assert_eq!(*end_us, 1_000_000_000 + 4_000_000);
                }
                Action::Open(_) => panic!("one segment"),
            }
        }
        // 4 s of 1 s parts: at least 4 appends, and every append is whole fragments.
        let appends = actions
            .iter()
            .filter(|a| matches!(a, Action::Append { .. }))
            .count();
        assert!(appends >= 4, "{appends}");
        assert_eq!(keyframes.len(), 2);
        for k in &keyframes {
            assert_eq!(&file[k.offset as usize + 4..k.offset as usize + 8], b"moof");
        }
        assert_eq!(keyframes[1].time_us - keyframes[0].time_us, 2_000_000);
    }

    #[test]
    fn segments_are_cut_at_keyframes_on_length_codec_change_and_new_bitstream() {
        let codec = Arc::new(test_video());
        let mut w = Writer::new(cuts(3));
        // 6 s at 25 fps, keyframes every 2 s: cut at the keyframe at 4 s (the first ≥ 3 s in).
        let mut actions = record(&mut w, &codec, 0..150, 0);
        let opens = |a: &[Action]| a.iter().filter(|a| matches!(a, Action::Open(_))).count();
        assert_eq!(opens(&actions), 2);
        let closed = actions.iter().find_map(|a| match a {
            Action::Close { end_us, .. } => Some(*end_us),
            _ => None,
        });
        assert_eq!(closed, Some(1_000_000_000 + 4_000_000));
        // The same description again: no cut; a new description: a cut at its first keyframe.
        let mut other = test_video();
        other.width += 16;
        let other = Arc::new(other);
        actions = record(&mut w, &Arc::new(test_video()), 150..160, 0);
        assert_eq!(opens(&actions), 0);
        actions = record(&mut w, &other, 160..170, 0);
        assert_eq!(opens(&actions), 0, "no keyframe yet");
        actions = record(&mut w, &other, 200..201, 0);
        assert_eq!(opens(&actions), 1);
        // A new bitstream: its frames wait for its keyframe, which starts a segment.
        actions = record(&mut w, &other, 201..210, 1);
        assert!(actions.is_empty(), "{actions:?}");
        actions = record(&mut w, &other, 250..251, 1);
        assert_eq!(opens(&actions), 1);
    }

    #[test]
    fn a_camera_clock_that_jumps_ends_the_segment_and_the_next_keyframe_starts_at_arrival() {
        let codec = Arc::new(test_video());
        let mut w = Writer::new(cuts(3600));
        let day = 86_400 * 90_000;
        let mut actions = record(&mut w, &codec, 0..60, 0);
        // Frames 60.. claim to be a day later; they arrive at the usual pace.
        for n in 60..120 {
            let p = packet(&codec, n, n % 50 == 0, 0);
            let frame = Frame {
                pts: p.pts + day,
                dts: p.dts + day,
                ..p.frame.clone()
            };
            let p = Packet::in_epoch(frame, p.sequence, p.duration, 0);
            actions.extend(w.push(&p, None, 1_000_000_000 + n * 40_000));
        }
        actions.extend(w.finish());
        let opened: Vec<i64> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Open(o) => Some(o.start_us),
                _ => None,
            })
            .collect();
        // The second segment starts at its keyframe's arrival (frame 100), not a day later.
        assert_eq!(opened, [1_000_000_000, 1_000_000_000 + 100 * 40_000]);
        let ends: Vec<i64> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Close { end_us, .. } => Some(*end_us),
                _ => None,
            })
            .collect();
        assert_eq!(
            ends,
            [1_000_000_000 + 60 * 40_000, 1_000_000_000 + 120 * 40_000]
        );
    }

    fn opens_and_closes(actions: &[Action]) -> Vec<(char, i64)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Open(o) => Some(('o', o.start_us)),
                Action::Close { end_us, .. } => Some(('c', *end_us)),
                Action::Append { .. } => None,
            })
            .collect()
    }

    #[test]
    fn a_cut_continues_the_clock_and_a_new_bitstream_never_starts_before_the_last_end() {
        let codec = Arc::new(test_video());
        let mut w = Writer::new(cuts(3));
        // The first frames are the cached group of pictures, handed over 0.5 s late; later
        // keyframes arrive with 30 ms of jitter. The cut at 4 s continues the camera's clock.
        let mut actions = Vec::new();
        for n in 0..150 {
            let late = if n < 10 { 500_000 } else { 30_000 * (n % 2) };
            actions.extend(w.push(
                &packet(&codec, n, n % 50 == 0, 0),
                None,
                1_000_000_000 + n * 40_000 + late,
            ));
        }
        actions.extend(w.finish());
        let t0 = 1_000_500_000;
        assert_eq!(
            opens_and_closes(&actions),
            [
                ('o', t0),
                ('c', t0 + 4_000_000),
                ('o', t0 + 4_000_000),
                ('c', t0 + 6_000_000)
            ]
        );
        // A second publisher (a new bitstream) whose first keyframe arrives 0.127 s before the
        // end the first one's clock claimed: it starts at that end, not before.
        let end = t0 + 6_000_000;
        let actions = w.push(&packet(&codec, 500, true, 1), None, end - 127_000);
        assert_eq!(opens_and_closes(&actions), [('o', end)]);
        w.finish();
        // After a gap, at its arrival.
        let actions = w.push(&packet(&codec, 900, true, 2), None, end + 300_000);
        assert_eq!(opens_and_closes(&actions), [('o', end + 300_000)]);
    }

    #[test]
    fn nothing_is_written_before_the_first_keyframe() {
        let codec = Arc::new(test_video());
        let mut w = Writer::new(cuts(3600));
        assert!(record(&mut w, &codec, 1..49, 0).is_empty());
        assert!(w.finish().is_empty());
        assert!(!w.is_open());
    }
}
