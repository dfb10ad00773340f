//! Speech-to-text's settings (`analysis::asr`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AsrConfig {
    #[serde(default = "super::enabled_by_default")]
    pub enabled: bool,
    /// Base URL ending before `/audio/transcriptions` (e.g. `http://127.0.0.1:8000/v1`), or
    /// `worker:NAME`.
    pub endpoint: String,
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// dB above the noise floor that counts as voice (default 12).
    #[serde(default = "default_threshold")]
    pub threshold: f32,
    #[serde(default = "default_min_speech")]
    pub min_speech: String,
    #[serde(default = "default_min_silence")]
    pub min_silence: String,
    #[serde(default = "default_max_segment")]
    pub max_segment: String,
    #[serde(default = "default_pad")]
    pub pad: String,
    #[serde(default = "default_timeout")]
    pub timeout: String,
}

fn default_threshold() -> f32 {
    12.0
}
fn default_min_speech() -> String {
    "200ms".into()
}
fn default_min_silence() -> String {
    "500ms".into()
}
fn default_max_segment() -> String {
    "15s".into()
}
fn default_pad() -> String {
    "200ms".into()
}
fn default_timeout() -> String {
    "30s".into()
}

fn duration(v: &str) -> Result<Duration, String> {
    crate::common::parse_duration(v)
}

impl AsrConfig {
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !self.endpoint.starts_with("worker:") {
            match url::Url::parse(&self.endpoint) {
                Ok(u) if u.scheme() == "http" => {}
                Ok(u) => out.push((
                    "endpoint",
                    format!("must be http:// (or worker:NAME), not {}://", u.scheme()),
                )),
                Err(e) => out.push(("endpoint", format!("is not a URL: {e}"))),
            }
        }
        if self.model.trim().is_empty() {
            out.push(("model", "is empty".into()));
        }
        if !(0.0..=60.0).contains(&self.threshold) {
            out.push((
                "threshold",
                "must be between 0 and 60 (dB above the noise floor)".into(),
            ));
        }
        for (key, v) in [
            ("min_speech", &self.min_speech),
            ("min_silence", &self.min_silence),
            ("max_segment", &self.max_segment),
            ("pad", &self.pad),
            ("timeout", &self.timeout),
        ] {
            if let Err(e) = duration(v) {
                out.push((key, e));
            }
        }
        out
    }

    pub fn timeout(&self) -> Duration {
        duration(&self.timeout).unwrap_or(Duration::from_secs(30))
    }

    pub fn masked(&self) -> AsrConfig {
        AsrConfig {
            api_key: self.api_key.as_ref().map(|_| "***".into()),
            ..self.clone()
        }
    }
}
