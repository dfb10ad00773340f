//! Per-stream traffic figures: totals, and frame rate and bitrate over a sliding window.
//! Time is passed in, so the arithmetic is tested without a clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;

const WINDOW: Duration = Duration::from_secs(2);
/// Bounds the window's memory even for an absurd frame rate.
const MAX_SAMPLES: usize = 1_000;

#[derive(Debug, Default)]
pub struct StreamStats {
    frames: u64,
    bytes: u64,
    /// (arrival, size) of recent video frames; audio counts in the bitrate only.
    recent: VecDeque<(Instant, usize, bool)>,
    /// When the last picture arrived: a frozen camera is told apart from a live one by its age.
    last_picture: Option<Instant>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct StatsView {
    pub frames: u64,
    pub bytes: u64,
    pub bitrate_kbps: f64,
    pub fps: f64,
    /// Milliseconds since the last picture arrived (null before the first).
    pub last_frame_age_ms: Option<u64>,
}

impl StreamStats {
    pub fn record(&mut self, now: Instant, size: usize, video: bool) {
        self.frames += 1;
        self.bytes += size as u64;
        if video {
            self.last_picture = Some(now);
        }
        self.recent.push_back((now, size, video));
        self.expire(now);
        while self.recent.len() > MAX_SAMPLES {
            self.recent.pop_front();
        }
    }

    pub fn frames(&self) -> u64 {
        self.frames
    }

    fn expire(&mut self, now: Instant) {
        while self
            .recent
            .front()
            .is_some_and(|(t, _, _)| now.duration_since(*t) > WINDOW)
        {
            self.recent.pop_front();
        }
    }

    pub fn view(&mut self, now: Instant) -> StatsView {
        self.expire(now);
        let secs = WINDOW.as_secs_f64();
        let video_frames = self.recent.iter().filter(|s| s.2).count();
        let bytes: usize = self.recent.iter().map(|s| s.1).sum();
        StatsView {
            frames: self.frames,
            bytes: self.bytes,
            bitrate_kbps: (bytes as f64 * 8.0 / 1000.0 / secs * 10.0).round() / 10.0,
            fps: (video_frames as f64 / secs * 10.0).round() / 10.0,
            last_frame_age_ms: self
                .last_picture
                .map(|t| now.saturating_duration_since(t).as_millis() as u64),
        }
    }

    /// Forgets the window (the source stopped), keeping the totals.
    pub fn clear_window(&mut self) {
        self.recent.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_over_the_window() {
        let t0 = Instant::now();
        let mut s = StreamStats::default();
        // 25 fps of 1250-byte frames for 4 s = 250 kbit/s.
        for i in 0..100 {
            s.record(t0 + Duration::from_millis(40 * i), 1250, true);
        }
        let v = s.view(t0 + Duration::from_millis(3960));
        assert_eq!(v.frames, 100);
        assert_eq!(v.bytes, 125_000);
        assert!((v.fps - 25.0).abs() <= 0.5, "{}", v.fps);
        assert!((v.bitrate_kbps - 250.0).abs() <= 5.0, "{}", v.bitrate_kbps);
        // Silence: the window empties, the totals stay.
        let v = s.view(t0 + Duration::from_secs(10));
        assert_eq!((v.fps, v.bitrate_kbps, v.frames), (0.0, 0.0, 100));
        // The last picture came at 3.96 s: its age grows while nothing arrives, and audio alone
        // does not make a frozen picture live.
        assert_eq!(v.last_frame_age_ms, Some(6040));
        s.record(t0 + Duration::from_secs(11), 300, false);
        let v = s.view(t0 + Duration::from_secs(12));
        assert_eq!(v.last_frame_age_ms, Some(8040));
        assert_eq!(StreamStats::default().view(t0).last_frame_age_ms, None);
    }
}
