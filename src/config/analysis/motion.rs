//! Motion detection's settings (`analysis::motion`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MotionConfig {
    #[serde(default = "super::enabled_by_default")]
    pub enabled: bool,
    /// 0.0 (only large changes) ..= 1.0 (tiny changes); default 0.5.
    #[serde(default = "half")]
    pub sensitivity: f64,
    /// Fraction of the picture that must change, 0.0..=1.0; default 0.01 (1 %).
    #[serde(default = "one_percent")]
    pub min_area: f64,
    /// Rectangles ignored, as fractions of the picture: `[x, y, width, height]`.
    #[serde(default)]
    pub masks: Vec<[f64; 4]>,
    /// Pictures analysed per second (default 2).
    #[serde(default = "two")]
    pub fps: f64,
}

fn half() -> f64 {
    0.5
}
fn one_percent() -> f64 {
    0.01
}
fn two() -> f64 {
    2.0
}

impl Default for MotionConfig {
    fn default() -> Self {
        MotionConfig {
            enabled: true,
            sensitivity: half(),
            min_area: one_percent(),
            masks: Vec::new(),
            fps: two(),
        }
    }
}

impl MotionConfig {
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !(0.0..=1.0).contains(&self.sensitivity) {
            out.push(("sensitivity", "must be between 0 and 1".to_string()));
        }
        if !(0.0..=1.0).contains(&self.min_area) {
            out.push((
                "min_area",
                "must be between 0 and 1 (a fraction of the picture)".into(),
            ));
        }
        if !(0.1..=25.0).contains(&self.fps) {
            out.push(("fps", "must be between 0.1 and 25".into()));
        }
        for (i, m) in self.masks.iter().enumerate() {
            if m.iter().any(|v| !(0.0..=1.0).contains(v)) || m[2] <= 0.0 || m[3] <= 0.0 {
                out.push((
                    "masks",
                    format!("mask {i} must be [x, y, width, height] as fractions 0..1"),
                ));
            }
        }
        out
    }
}
