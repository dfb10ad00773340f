//! Motion detection, sans-IO: small grayscale pictures in, `start`/`end` transitions out.
//!
//! Each picture is compared with the previous analysed one: a pixel "moved" when its luma changed
//! by more than a threshold set by `sensitivity`; the picture has motion when the moved pixels
//! outside the masks cover at least `min_area` of the picture. Motion starts at the first such
//! picture and ends after `hold` without one, so a pause in a walk is not two events.

use std::time::Duration;

pub use crate::config::analysis::MotionConfig;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MotionChange {
    /// Motion started; the changed fraction of the picture.
    Start {
        area: f64,
    },
    End,
}

pub struct MotionDetector {
    config: MotionConfig,
    previous: Option<Vec<u8>>,
    size: (usize, usize),
    active: bool,
    quiet_for: Duration,
    hold: Duration,
    /// The changed fraction in the last picture, for the API.
    pub last_area: f64,
}

impl MotionDetector {
    pub fn new(config: MotionConfig) -> MotionDetector {
        MotionDetector {
            config,
            previous: None,
            size: (0, 0),
            active: false,
            quiet_for: Duration::ZERO,
            hold: Duration::from_secs(2),
            last_area: 0.0,
        }
    }

    pub fn active(&self) -> bool {
        self.active
    }

    /// Feeds one grayscale picture (`width * height` bytes), taken `since_last` after the
    /// previous one. Returns a transition when motion starts or ends.
    pub fn push(
        &mut self,
        gray: &[u8],
        width: usize,
        height: usize,
        since_last: Duration,
    ) -> Option<MotionChange> {
        if gray.len() != width * height || width == 0 {
            return None;
        }
        let Some(previous) = self
            .previous
            .as_ref()
            .filter(|_| self.size == (width, height))
        else {
            self.previous = Some(gray.to_vec());
            self.size = (width, height);
            return None;
        };
        // sensitivity 1 → a 6-level change counts; 0 → only 100 levels.
        let threshold = (100.0 - 94.0 * self.config.sensitivity).round() as i16;
        let masks: Vec<(usize, usize, usize, usize)> = self
            .config
            .masks
            .iter()
            .map(|m| {
                let x0 = (m[0] * width as f64) as usize;
                let y0 = (m[1] * height as f64) as usize;
                let x1 = ((m[0] + m[2]) * width as f64).ceil() as usize;
                let y1 = ((m[1] + m[3]) * height as f64).ceil() as usize;
                (x0, y0, x1.min(width), y1.min(height))
            })
            .collect();
        let (mut changed, mut counted) = (0usize, 0usize);
        for y in 0..height {
            let row = y * width;
            for x in 0..width {
                if masks
                    .iter()
                    .any(|&(x0, y0, x1, y1)| x >= x0 && x < x1 && y >= y0 && y < y1)
                {
                    continue;
                }
                counted += 1;
                let d = gray[row + x] as i16 - previous[row + x] as i16;
                if d.abs() > threshold {
                    changed += 1;
                }
            }
        }
        self.previous = Some(gray.to_vec());
        let area = if counted == 0 {
            0.0
        } else {
            changed as f64 / counted as f64
        };
        self.last_area = area;
        let moving = area >= self.config.min_area && changed > 0;
        if moving {
            self.quiet_for = Duration::ZERO;
            if !self.active {
                self.active = true;
                return Some(MotionChange::Start { area });
            }
        } else if self.active {
            self.quiet_for += since_last;
            if self.quiet_for >= self.hold {
                self.active = false;
                return Some(MotionChange::End);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: usize = 40;
    const H: usize = 30;

    fn picture(box_at: Option<(usize, usize)>) -> Vec<u8> {
        let mut p = vec![50u8; W * H];
        if let Some((bx, by)) = box_at {
            for y in by..by + 6 {
                for x in bx..bx + 6 {
                    p[y * W + x] = 220;
                }
            }
        }
        p
    }

    const STEP: Duration = Duration::from_millis(500);

    #[test]
    fn a_moving_box_starts_and_a_still_picture_ends_motion() {
        let mut d = MotionDetector::new(MotionConfig::default());
        assert_eq!(d.push(&picture(Some((2, 2))), W, H, STEP), None);
        // The box moved: 2 × 36 pixels of 1200 changed (6 %).
        let start = d.push(&picture(Some((20, 2))), W, H, STEP);
        assert!(matches!(start, Some(MotionChange::Start { area }) if (area - 0.06).abs() < 0.001));
        // Still for 1.5 s: motion holds; at 2 s it ends.
        for _ in 0..3 {
            assert_eq!(d.push(&picture(Some((20, 2))), W, H, STEP), None);
        }
        assert_eq!(
            d.push(&picture(Some((20, 2))), W, H, STEP),
            Some(MotionChange::End)
        );
    }

    #[test]
    fn small_changes_and_masked_changes_do_not_count() {
        let config = MotionConfig {
            min_area: 0.05,
            ..MotionConfig::default()
        };
        let mut d = MotionDetector::new(config);
        d.push(&picture(None), W, H, STEP);
        // One 6×6 box appearing is 3 % < 5 %.
        assert_eq!(d.push(&picture(Some((2, 2))), W, H, STEP), None);
        let masked = MotionConfig {
            masks: vec![[0.0, 0.0, 1.0, 0.5]],
            ..MotionConfig::default()
        };
        let mut d = MotionDetector::new(masked);
        d.push(&picture(Some((2, 2))), W, H, STEP);
        assert_eq!(d.push(&picture(Some((20, 2))), W, H, STEP), None);
        assert_eq!(d.last_area, 0.0);
    }

    #[test]
    fn sensitivity_sets_the_luma_threshold() {
        let mut low = MotionDetector::new(MotionConfig {
            sensitivity: 0.0,
            ..MotionConfig::default()
        });
        let a = vec![50u8; W * H];
        let b = vec![120u8; W * H]; // +70 everywhere: below the 100-level threshold
        low.push(&a, W, H, STEP);
        assert_eq!(low.push(&b, W, H, STEP), None);
        let mut high = MotionDetector::new(MotionConfig::default());
        high.push(&a, W, H, STEP);
        assert!(high.push(&b, W, H, STEP).is_some());
    }

    #[test]
    fn bad_settings_are_named() {
        let c = MotionConfig {
            sensitivity: 2.0,
            masks: vec![[0.5, 0.5, 0.0, 0.1]],
            ..MotionConfig::default()
        };
        let keys: Vec<&str> = c.problems().iter().map(|p| p.0).collect();
        assert_eq!(keys, vec!["sensitivity", "masks"]);
    }
}
