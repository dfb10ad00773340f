//! The vision-language model's settings (`analysis::vlm`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VlmConfig {
    #[serde(default = "super::enabled_by_default")]
    pub enabled: bool,
    /// Base URL ending before `/chat/completions` (e.g. `http://127.0.0.1:11434/v1`), or
    /// `worker:NAME`.
    pub endpoint: String,
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    #[serde(default = "default_prompt")]
    pub prompt: String,
    /// Minimum time between requests (default 2s).
    #[serde(default = "default_interval")]
    pub interval: String,
    #[serde(default)]
    pub on_motion_only: bool,
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// Bound on one request (default 30s).
    #[serde(default = "default_timeout")]
    pub timeout: String,
    /// Pictures are scaled to this width before JPEG encoding (default 640).
    #[serde(default = "default_width")]
    pub image_width: u32,
}

fn default_prompt() -> String {
    "Describe what you see in one sentence.".into()
}
fn default_interval() -> String {
    "2s".into()
}
fn default_timeout() -> String {
    "30s".into()
}
fn default_max_tokens() -> u32 {
    100
}
fn default_width() -> u32 {
    640
}

impl VlmConfig {
    pub fn interval(&self) -> Duration {
        crate::common::parse_duration(&self.interval).unwrap_or(Duration::from_secs(2))
    }

    pub fn timeout(&self) -> Duration {
        crate::common::parse_duration(&self.timeout).unwrap_or(Duration::from_secs(30))
    }

    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(name) = self.endpoint.strip_prefix("worker:") {
            if name.is_empty() {
                out.push(("endpoint", "worker: needs a worker name".to_string()));
            }
        } else {
            match url::Url::parse(&self.endpoint) {
                Ok(u) if u.scheme() == "http" => {}
                Ok(u) if u.scheme() == "https" => out.push((
                    "endpoint",
                    "https:// endpoints are not supported by this build (no TLS client); use a local http:// endpoint or a worker".into(),
                )),
                Ok(u) => out.push(("endpoint", format!("must be http://, not {}://", u.scheme()))),
                Err(e) => out.push(("endpoint", format!("is not a URL: {e}"))),
            }
        }
        if self.model.trim().is_empty() {
            out.push(("model", "is empty".into()));
        }
        if self.prompt.trim().is_empty() {
            out.push(("prompt", "is empty".into()));
        }
        for (key, v) in [("interval", &self.interval), ("timeout", &self.timeout)] {
            if let Err(e) = crate::common::parse_duration(v) {
                out.push((key, e));
            }
        }
        if !(64..=4096).contains(&self.image_width) {
            out.push(("image_width", "must be between 64 and 4096".into()));
        }
        if self.max_tokens == 0 {
            out.push(("max_tokens", "must be at least 1".into()));
        }
        out
    }

    /// The settings as the API shows them: the key masked.
    pub fn masked(&self) -> VlmConfig {
        VlmConfig {
            api_key: self.api_key.as_ref().map(|_| "***".into()),
            ..self.clone()
        }
    }
}
