//! Alert rules' settings (`[[camera.analysis.alert]]`, `analysis::alert`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// Names the rule in events, MQTT topics and Home Assistant (`a-z`, `0-9`, `_`, `-`).
    pub name: String,
    /// A yes/no question about the picture, e.g. "Is a person at the door?".
    pub question: String,
    /// How often it is asked (default 5s).
    #[serde(default = "default_interval")]
    pub interval: String,
    /// Asked only while motion analysis sees motion.
    #[serde(default)]
    pub on_motion_only: bool,
    /// A new answer must hold this long before the alert starts or ends (default: at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_duration: Option<String>,
}

/// A yes/no question as the model is asked it (by a rule, or by a test from the UI).
pub fn question_prompt(question: &str) -> String {
    format!("{} Answer yes or no first.", question.trim())
}

fn default_interval() -> String {
    "5s".into()
}

impl AlertRule {
    pub fn interval(&self) -> Duration {
        crate::common::parse_duration(&self.interval).unwrap_or(Duration::from_secs(5))
    }

    pub fn min_duration(&self) -> Duration {
        self.min_duration
            .as_deref()
            .and_then(|d| crate::common::parse_duration(d).ok())
            .unwrap_or(Duration::ZERO)
    }

    /// The prompt the model gets: the question, and how to answer it.
    pub fn prompt(&self) -> String {
        question_prompt(&self.question)
    }

    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !name_ok {
            out.push((
                "name",
                format!("{:?} must be 1 to 64 of a-z, 0-9, _ and -", self.name),
            ));
        }
        if self.question.trim().is_empty() {
            out.push(("question", "is empty".into()));
        }
        if let Err(e) = crate::common::parse_duration(&self.interval) {
            out.push(("interval", e));
        }
        if let Some(d) = &self.min_duration {
            if let Err(e) = crate::common::parse_duration(d) {
                out.push(("min_duration", e));
            }
        }
        out
    }
}
