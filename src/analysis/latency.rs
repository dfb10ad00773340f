//! A model's answer times over the last minutes, for the system monitor: percentiles and the
//! recent values a small chart draws. Sans-IO: the caller gives the time of each answer.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;

/// How far back the percentiles look.
pub const WINDOW: Duration = Duration::from_secs(5 * 60);
/// Answers kept at most (a model answering 10 times a second for 5 minutes is 3,000).
const MAX_SAMPLES: usize = 4096;
/// Values the chart gets.
const RECENT: usize = 60;

#[derive(Debug, Clone, Default)]
pub struct LatencyWindow {
    samples: VecDeque<(Instant, f64)>,
}

/// What the API shows: milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LatencySummary {
    pub last: f64,
    pub p50: f64,
    pub p95: f64,
    /// Answers within the window.
    pub count: usize,
    /// The latest answers' times, oldest first.
    pub recent: Vec<f64>,
}

impl LatencyWindow {
    pub fn record(&mut self, at: Instant, took: Duration) {
        self.samples
            .push_back((at, (took.as_secs_f64() * 10_000.0).round() / 10.0));
        if self.samples.len() > MAX_SAMPLES {
            self.samples.pop_front();
        }
        self.expire(at);
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(t, _)) = self.samples.front() {
            if now.saturating_duration_since(t) <= WINDOW {
                break;
            }
            self.samples.pop_front();
        }
    }

    /// The answers of the last [`WINDOW`] before `now`; `None` when there were none.
    pub fn summary(&self, now: Instant) -> Option<LatencySummary> {
        let values: Vec<f64> = self
            .samples
            .iter()
            .filter(|(t, _)| now.saturating_duration_since(*t) <= WINDOW)
            .map(|&(_, v)| v)
            .collect();
        let last = *values.last()?;
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        // Nearest rank: the smallest value with at least q of the answers at or below it.
        let rank =
            |q: f64| sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1];
        Some(LatencySummary {
            last,
            p50: rank(0.5),
            p95: rank(0.95),
            count: values.len(),
            recent: values[values.len().saturating_sub(RECENT)..].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn percentiles_by_nearest_rank_and_the_last_answer() {
        let t0 = Instant::now();
        let mut w = LatencyWindow::default();
        assert_eq!(w.summary(t0), None);
        for (i, v) in [300u64, 100, 200, 400, 1000].iter().enumerate() {
            w.record(t0 + Duration::from_secs(i as u64), ms(*v));
        }
        let s = w.summary(t0 + Duration::from_secs(5)).unwrap();
        assert_eq!((s.last, s.p50, s.p95, s.count), (1000.0, 300.0, 1000.0, 5));
        assert_eq!(s.recent, vec![300.0, 100.0, 200.0, 400.0, 1000.0]);
    }

    #[test]
    fn answers_older_than_the_window_leave_it() {
        let t0 = Instant::now();
        let mut w = LatencyWindow::default();
        w.record(t0, ms(5000));
        w.record(t0 + Duration::from_secs(200), ms(100));
        let later = t0 + WINDOW + Duration::from_secs(1);
        let s = w.summary(later).unwrap();
        assert_eq!(
            (s.count, s.p95),
            (1, 100.0),
            "the 5 s answer is over 5 minutes old"
        );
        assert_eq!(w.summary(later + WINDOW).map(|s| s.count), None);
    }

    #[test]
    fn the_chart_gets_the_latest_sixty_and_memory_is_bounded() {
        let t0 = Instant::now();
        let mut w = LatencyWindow::default();
        for i in 0..(MAX_SAMPLES as u64 + 100) {
            w.record(t0 + Duration::from_millis(i), ms(i % 1000));
        }
        assert_eq!(w.samples.len(), MAX_SAMPLES);
        let s = w.summary(t0 + Duration::from_secs(10)).unwrap();
        assert_eq!(s.recent.len(), RECENT);
        assert_eq!(s.last, ((MAX_SAMPLES as u64 + 99) % 1000) as f64);
    }
}
