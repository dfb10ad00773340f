//! Keeps each track's timestamps continuous across source restarts and clock jumps.
//!
//! A reconnected camera starts its RTP timeline afresh (retina's timestamps restart near 0), and a
//! restarted child process does the same. Viewers that stay attached through the outage must not
//! see time jump backwards, so each new source session is rebased to continue one frame after the
//! last timestamp the viewers saw.
//!
//! A source may also jump within one session: a camera whose clock is reset, gst-rtsp-server
//! restarting a shared mount's timestamps when a second client joins. Outputs (MSE, LL-HLS,
//! recordings) must never see time go back, so a jump back (more than [`JUMP_BACK_SECS`]: B-frames
//! go back a few frames, never that far) or far forward ([`JUMP_FORWARD_SECS`]) is rebased like a
//! new session. Both tracks jump together, so the second track to see the jump takes the same
//! shift (in seconds) as the first, which keeps sound and picture together; only if that would
//! still take it back does it rebase on its own.

use crate::media::TrackKind;

/// A timestamp this far before the last one of its track is a jump, not reordering.
pub const JUMP_BACK_SECS: f64 = 1.0;
/// A timestamp this far after the last one of its track is a jump, not a pause.
pub const JUMP_FORWARD_SECS: f64 = 10.0;

#[derive(Debug, Default, Clone)]
pub struct TrackTimeline {
    offset: i64,
    last: Option<i64>,
    /// The last source timestamp (before the offset), to see jumps.
    last_in: Option<i64>,
    /// The most recent positive distance between frames, used as the gap at a rebase.
    step: i64,
    rebase: bool,
    /// The track's clock rate, as last given.
    rate: u32,
}

impl TrackTimeline {
    /// Marks the start of a new source session: its first timestamp will follow the last one.
    pub fn new_session(&mut self) {
        self.rebase = true;
    }

    /// Whether `pts` (of a track clocked at `rate`) jumps away from the last source timestamp.
    fn jumps(&self, pts: i64, rate: u32) -> bool {
        let rate = f64::from(rate.max(1));
        self.last_in.is_some_and(|last| {
            let secs = (pts - last) as f64 / rate;
            !(-JUMP_BACK_SECS..=JUMP_FORWARD_SECS).contains(&secs)
        })
    }

    /// Maps a source timestamp to the stream's continuous timeline (`shift`: an offset to try
    /// first at a rebase, the one the other track took for the same jump).
    fn map_with(&mut self, pts: i64, shift: Option<i64>) -> i64 {
        if std::mem::take(&mut self.rebase) {
            if let Some(last) = self.last {
                let own = last + self.step.max(1) - pts;
                self.offset = match shift {
                    Some(offset) if pts + offset > last => offset,
                    _ => own,
                };
            }
        }
        self.last_in = Some(pts);
        let out = pts + self.offset;
        if let Some(last) = self.last {
            if out > last {
                self.step = out - last;
            }
        }
        self.last = Some(out);
        out
    }

    /// Moves the track `ticks` later from now on.
    fn lift(&mut self, ticks: i64) {
        self.offset += ticks;
        if let Some(last) = self.last.as_mut() {
            *last += ticks;
        }
    }

    /// Maps a source timestamp to the stream's continuous timeline.
    pub fn map(&mut self, pts: i64) -> i64 {
        self.map_with(pts, None)
    }

    /// The offset in force, for mapping other timestamps of the same frame (DTS).
    pub fn offset(&self) -> i64 {
        self.offset
    }
}

/// A stream's two tracks, rebased together.
#[derive(Debug, Default, Clone)]
pub struct Timeline {
    video: TrackTimeline,
    audio: TrackTimeline,
    /// A jump one track rebased and the other has not seen yet: the shift in seconds.
    pending: Option<(TrackKind, f64)>,
    /// A [`Timeline::lift`] made before the other track was seen: its start, in seconds.
    lift_unseen: f64,
}

impl Timeline {
    /// A new source session: both tracks continue where they were.
    pub fn new_session(&mut self) {
        self.video.new_session();
        self.audio.new_session();
        self.pending = None;
    }

    /// Maps a timestamp of `track` (clocked at `rate`) to the stream's continuous timeline.
    pub fn map(&mut self, track: TrackKind, pts: i64, rate: u32) -> i64 {
        let (t, other) = match track {
            TrackKind::Video => (&mut self.video, &self.audio),
            TrackKind::Audio => (&mut self.audio, &self.video),
        };
        let rate = rate.max(1);
        if t.rate == 0 && self.lift_unseen > 0.0 {
            t.offset += (std::mem::take(&mut self.lift_unseen) * f64::from(rate)).ceil() as i64;
        }
        t.rate = rate;
        // A new session (another publisher, a reconnect) is shifted like a jump: both tracks by
        // one time, so the source's own sync carries over; rebasing each track on its own
        // would put the new audio where the old audio ended, which is not where the old video
        // ended (one publisher leaves with its audio ahead of or behind its video).
        if t.rebase || t.jumps(pts, rate) {
            t.rebase = true;
            let r = f64::from(rate);
            let shift = match self.pending.take() {
                Some((kind, secs)) if kind != track => Some(t.offset + (secs * r).round() as i64),
                _ => {
                    // The first track to see the jump: a shift that takes this track one frame
                    // past its last, and the other (assumed to jump to the same place) one frame
                    // past its own last too, whichever is further.
                    let own = t.last.map_or(0, |l| l + t.step.max(1) - pts);
                    let other_needs = other.last.map_or(i64::MIN, |l| {
                        let o = f64::from(other.rate.max(1));
                        let secs = (l + other.step.max(1)) as f64 / o - pts as f64 / r;
                        (secs * r).ceil() as i64
                    });
                    Some(own.max(other_needs))
                }
            };
            let before = t.offset;
            let out = t.map_with(pts, shift);
            if !matches!(self.pending, Some((kind, _)) if kind != track) {
                self.pending = Some((track, (t.offset - before) as f64 / r));
            }
            return out;
        }
        t.map(pts)
    }

    /// Moves both tracks `ticks` (of `track`, clocked at `rate`) later: for a picture whose
    /// decode time came out negative. A stream's first pictures decode before they present
    /// (B-frames, and `media::dts`'s two frames of margin), so a source whose times start at 0
    /// has decode times below 0, which no MP4 can hold: writers clamped them to 0 and so moved
    /// those pictures' presentation later (a recording's first GOP presented 80 ms late, and
    /// FFmpeg then read every picture of it 40 ms early).
    pub fn lift(&mut self, track: TrackKind, ticks: i64, rate: u32) {
        if ticks <= 0 {
            return;
        }
        let secs = ticks as f64 / f64::from(rate.max(1));
        let (t, other) = match track {
            TrackKind::Video => (&mut self.video, &mut self.audio),
            TrackKind::Audio => (&mut self.audio, &mut self.video),
        };
        t.lift(ticks);
        if other.rate == 0 {
            // Not seen yet: it starts lifted when it is (its rate is known then).
            self.lift_unseen += secs;
        } else {
            other.lift((secs * f64::from(other.rate)).ceil() as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_decode_times_lift_both_tracks_together() {
        let mut t = Timeline::default();
        // Audio first, then a picture presenting at 0 that decodes two frames before.
        assert_eq!(t.map(TrackKind::Audio, 0, 48_000), 0);
        assert_eq!(t.map(TrackKind::Video, 0, 90_000), 0);
        t.lift(TrackKind::Video, 7200, 90_000);
        // Both moved 80 ms: audio's next frame (1024) and video's next picture follow on.
        assert_eq!(t.map(TrackKind::Audio, 1024, 48_000), 1024 + 3840);
        assert_eq!(t.map(TrackKind::Video, 3600, 90_000), 3600 + 7200);
        // Video lifted before audio was seen: audio starts lifted too.
        let mut t = Timeline::default();
        assert_eq!(t.map(TrackKind::Video, 0, 90_000), 0);
        t.lift(TrackKind::Video, 7200, 90_000);
        assert_eq!(t.map(TrackKind::Audio, 0, 44_100), 3528);
    }

    #[test]
    fn continues_after_a_restart() {
        let mut t = TrackTimeline::default();
        assert_eq!(t.map(0), 0);
        assert_eq!(t.map(3600), 3600);
        assert_eq!(t.map(7200), 7200);
        t.new_session();
        // The new session starts near zero again; viewers see it one frame after 7200.
        assert_eq!(t.map(15), 10_800);
        assert_eq!(t.map(3615), 14_400);
        assert_eq!(t.offset(), 10_785);
    }

    #[test]
    fn first_session_is_unchanged() {
        let mut t = TrackTimeline::default();
        t.new_session();
        assert_eq!(t.map(90_000), 90_000);
    }

    #[test]
    fn a_clock_that_jumps_back_mid_session_continues_with_both_tracks_together() {
        let mut t = Timeline::default();
        // 2.4 s of a camera: video at 25 fps, AAC at 48 kHz; B-frames go back a frame or two.
        for (v, a) in [(216_000, 115_200), (205_200, 116_224), (212_400, 117_248)] {
            assert_eq!(t.map(TrackKind::Video, v, 90_000), v);
            assert_eq!(t.map(TrackKind::Audio, a, 48_000), a);
        }
        // The camera's clock restarts at 0.04 s (video) and 0.04 s (audio).
        let v = t.map(TrackKind::Video, 3600, 90_000);
        // Audio was 2.443 s in (a frame past it: 2.464 s); video restarts at 0.04 s: a shift
        // of 2.424 s takes both past what they sent.
        assert_eq!(
            v,
            3600 + 218_160,
            "past the last picture and the last sound"
        );
        let a = t.map(TrackKind::Audio, 1920, 48_000);
        assert!(a > 117_248, "audio does not go back: {a}");
        // Both moved by the same time: the same content is still at the same time.
        let v_secs = (v - 3600) as f64 / 90_000.0;
        let a_secs = (a - 1920) as f64 / 48_000.0;
        assert!((v_secs - a_secs).abs() < 1e-4, "{v_secs} vs {a_secs}");
        // And it goes on from there.
        assert_eq!(t.map(TrackKind::Video, 7200, 90_000), v + 3600);
    }

    #[test]
    fn a_new_session_moves_both_tracks_by_one_time() {
        let mut t = Timeline::default();
        // A publisher leaves with its video at 5.2 s and its audio at 4.98 s.
        assert_eq!(t.map(TrackKind::Video, 464_400, 90_000), 464_400);
        assert_eq!(t.map(TrackKind::Video, 468_000, 90_000), 468_000);
        assert_eq!(t.map(TrackKind::Audio, 238_080, 48_000), 238_080);
        assert_eq!(t.map(TrackKind::Audio, 239_104, 48_000), 239_104);
        t.new_session();
        // The next starts both at 0: video one frame after its last, audio by the same time
        // (its sound stays with its picture), past its own last.
        let v = t.map(TrackKind::Video, 0, 90_000);
        assert_eq!(v, 471_600);
        let a = t.map(TrackKind::Audio, 0, 48_000);
        assert_eq!(a, 471_600 * 48_000 / 90_000);
        assert!(a > 239_104);
        assert_eq!(t.map(TrackKind::Audio, 1024, 48_000), a + 1024);
    }

    #[test]
    fn a_jump_far_forward_is_rebased_and_a_short_pause_is_not() {
        let mut t = Timeline::default();
        t.map(TrackKind::Video, 0, 90_000);
        assert_eq!(t.map(TrackKind::Video, 5 * 90_000, 90_000), 450_000);
        let out = t.map(TrackKind::Video, 3600 * 90_000, 90_000);
        assert_eq!(out, 450_000 + 450_000, "continues one step after the last");
        t.new_session();
        assert_eq!(t.map(TrackKind::Video, 0, 90_000), 900_000 + 450_000);
    }
}
