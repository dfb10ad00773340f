//! Retry back-off: 1 s doubling to 30 s, with ±20 % jitter so cameras that fail together
//! (a switch reboot) do not retry in lock-step. Pure: the caller sleeps, racing its cancel token.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    attempt: u32,
    seed: u64,
    initial: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(seed: u64) -> Backoff {
        Backoff {
            attempt: 0,
            seed: seed | 1,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let base = self
            .initial
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        // xorshift64: enough randomness for jitter, no dependency.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let jitter = (self.seed % 401) as f64 / 1000.0 - 0.2; // -0.2 ..= +0.2
        base.mul_f64(1.0 + jitter)
    }

    /// Called when the source works again, so the next failure starts from 1 s.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_with_bounded_jitter() {
        let mut b = Backoff::new(12345);
        let expected = [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0];
        for base in expected {
            let d = b.next_delay().as_secs_f64();
            assert!(
                d >= base * 0.8 - 1e-9 && d <= base * 1.2 + 1e-9,
                "{d} vs {base}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(1200));
    }
}
