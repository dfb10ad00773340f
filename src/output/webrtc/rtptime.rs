//! One peer's RTP times and the wallclock str0m puts in its RTCP sender reports (sans-IO).
//!
//! Two rules, both about what a receiver can infer from the wire:
//! - A keyframe request restarts the peer's feed with the cached GOP: frames this peer already
//!   got, stamped before what it was last sent. Sent at their own times they would take RTP time
//!   back, which a receiver reads as a 32-bit wrap (aiortc does) and then holds every later frame
//!   ~13 hours out. A frame sent again goes out one tick after the latest video time sent
//!   instead: the replay is decodable and over in a blink, and the frames after it keep their own
//!   times (no lasting shift, so sound and picture stay together). Audio sent again is dropped:
//!   it was heard already and needs no reference.
//! - The wallclock beside each RTP time maps media time to one clock for both tracks, so the
//!   sender reports line audio and video up as the camera stamped them. Stamping each packet
//!   with when it was written would put the transcoder's latency (audio leaves later than the
//!   video of the same instant) and the GOP burst into that mapping.

use std::time::{Duration, Instant};

/// RTP's video clock.
pub const VIDEO_RATE: u32 = 90_000;

#[derive(Debug, Default)]
pub struct RtpTimes {
    /// The wallclock of media time `.1` (ns): media time `t` was at `.0 + (t - .1)`.
    anchor: Option<(Instant, i128)>,
    /// The latest video RTP time sent (90 kHz, before the 32-bit cut).
    video_max: Option<i64>,
    /// The latest time given to a frame sent again: new frames go after it (B-frames may
    /// otherwise go back a little, as their own times say).
    replay_max: Option<i64>,
    /// The hub sequence numbers of the last video and camera audio frames sent.
    video_seq: Option<u32>,
    audio_seq: Option<u32>,
}

impl RtpTimes {
    /// The RTP time and wallclock of a video frame (`sequence`: its hub number, `pts`: 90 kHz).
    pub fn video(&mut self, sequence: u32, pts: i64, now: Instant) -> (u32, Instant) {
        let pts = pts.max(0);
        let again = self.video_seq.is_some_and(|last| sequence <= last);
        let time = match (self.video_max, self.replay_max) {
            (Some(max), _) if again => max + 1,
            (_, Some(replayed)) => pts.max(replayed + 1),
            _ => pts,
        };
        if again {
            self.replay_max = Some(time);
        } else {
            self.video_seq = Some(sequence);
        }
        self.video_max = Some(self.video_max.map_or(time, |m| m.max(time)));
        let wallclock = self.wallclock(nanos(time, VIDEO_RATE), now);
        (time as u32, wallclock)
    }

    /// The RTP time and wallclock of an audio frame (`pts` in its `rate`); `None` for a camera
    /// frame this peer was sent already (`sequence`: its hub number; `None` for a transcoded
    /// frame, which is never sent twice).
    pub fn audio(
        &mut self,
        sequence: Option<u32>,
        pts: i64,
        rate: u32,
        now: Instant,
    ) -> Option<(u32, Instant)> {
        if let Some(sequence) = sequence {
            if self.audio_seq.is_some_and(|last| sequence <= last) {
                return None;
            }
            self.audio_seq = Some(sequence);
        }
        let pts = pts.max(0);
        let wallclock = self.wallclock(nanos(pts, rate), now);
        Some((pts as u32, wallclock))
    }

    /// The wallclock of media time `ns`: on the one anchor, moved earlier whenever a frame
    /// would otherwise be stamped in the future (str0m sends no report for such a time), so it
    /// settles on the earliest-arriving frame's lateness.
    fn wallclock(&mut self, ns: i128, now: Instant) -> Instant {
        let at = |(instant, base): (Instant, i128)| {
            let d = Duration::from_nanos(u64::try_from((ns - base).unsigned_abs()).ok()?);
            if ns >= base {
                instant.checked_add(d)
            } else {
                instant.checked_sub(d)
            }
        };
        match self.anchor.and_then(at) {
            Some(w) if w <= now => w,
            _ => {
                self.anchor = Some((now, ns));
                now
            }
        }
    }
}

/// Media time `pts` (at `rate`) in nanoseconds.
fn nanos(pts: i64, rate: u32) -> i128 {
    i128::from(pts) * 1_000_000_000 / i128::from(rate.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: i64 = 3600; // 40 ms at 90 kHz

    #[test]
    fn a_replayed_gop_never_takes_video_time_back_and_live_frames_keep_their_times() {
        let now = Instant::now();
        let mut t = RtpTimes::default();
        // Frames 1..=10 live (keyframe at 1), then a keyframe request replays 1..=10, then 11.
        let mut wire = Vec::new();
        for seq in 1..=10u32 {
            wire.push(t.video(seq, 1_000_000 + seq as i64 * FRAME, now).0);
        }
        let last_live = *wire.last().unwrap();
        for seq in 1..=10u32 {
            wire.push(t.video(seq, 1_000_000 + seq as i64 * FRAME, now).0);
        }
        wire.push(t.video(11, 1_000_000 + 11 * FRAME, now).0);
        for w in wire.windows(2) {
            assert!(w[1] > w[0], "RTP time went back: {wire:?}");
        }
        let replayed = &wire[10..20];
        assert_eq!(replayed[0], last_live + 1);
        assert_eq!(replayed[9], last_live + 10);
        assert_eq!(*wire.last().unwrap(), (1_000_000 + 11 * FRAME) as u32);
    }

    #[test]
    fn a_replay_longer_than_the_gap_pushes_on_without_going_back() {
        let now = Instant::now();
        let mut t = RtpTimes::default();
        assert_eq!(t.video(5, 100, now).0, 100);
        assert_eq!(t.video(5, 100, now).0, 101);
        assert_eq!(t.video(5, 100, now).0, 102);
        // The next new frame, stamped before the replay ended, goes just after it.
        assert_eq!(t.video(6, 101, now).0, 103);
        assert_eq!(t.video(7, 200, now).0, 200);
    }

    #[test]
    fn camera_audio_sent_again_is_dropped_and_transcoded_audio_always_goes() {
        let now = Instant::now();
        let mut t = RtpTimes::default();
        assert!(t.audio(Some(2), 960, 48_000, now).is_some());
        assert!(t.audio(Some(4), 1920, 48_000, now).is_some());
        assert!(t.audio(Some(2), 960, 48_000, now).is_none(), "replayed");
        assert!(t.audio(Some(4), 1920, 48_000, now).is_none(), "replayed");
        assert_eq!(t.audio(Some(6), 2880, 48_000, now).unwrap().0, 2880);
        assert_eq!(t.audio(None, 960, 48_000, now).unwrap().0, 960);
        assert_eq!(t.audio(None, 960, 48_000, now).unwrap().0, 960);
    }

    #[test]
    fn wallclocks_follow_media_time_on_one_clock_for_both_tracks() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        let mut t = RtpTimes::default();
        // Video at 10 s arrives at `start`; its audio (48 kHz) 80 ms later from a transcoder.
        let (_, v) = t.video(1, 10 * 90_000, start);
        assert_eq!(v, start);
        let (_, a) = t.audio(None, 10 * 48_000, 48_000, start + ms(80)).unwrap();
        assert_eq!(a, start, "the same instant of media, the same wallclock");
        // A burst of older frames (a GOP, written at once) keeps its media spacing.
        let (_, v) = t.video(2, 10 * 90_000 + 3600, start + ms(90));
        assert_eq!(v, start + ms(40));
        // A frame that arrives earlier than the anchor predicts moves it: never in the future.
        let (_, v) = t.video(3, 12 * 90_000, start + ms(1500));
        assert_eq!(v, start + ms(1500));
        let (_, a) = t
            .audio(None, 12 * 48_000, 48_000, start + ms(1600))
            .unwrap();
        assert_eq!(a, start + ms(1500));
        // Media time near 0 long after the clock started: no underflow.
        let mut t = RtpTimes::default();
        let (_, w) = t.audio(None, 0, 48_000, start).unwrap();
        assert_eq!(w, start);
    }
}
