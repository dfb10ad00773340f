//! Summaries' settings (`[camera.analysis.summary]`, `analysis::summary`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SummaryConfig {
    #[serde(default = "super::enabled_by_default")]
    pub enabled: bool,
    /// A summary of the last period this often (e.g. "15m"); none on a schedule when unset
    /// (`POST /api/cameras/{id}/summary` still makes them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
    /// Another model for summaries (text only); by default the `vlm` section's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    #[serde(default = "default_prompt")]
    pub prompt: String,
}

fn default_prompt() -> String {
    SummaryConfig::default_prompt_text()
}

impl SummaryConfig {
    pub fn default_prompt_text() -> String {
        "Summarise in a few sentences what happened on this camera, from its log below. Mention times.".into()
    }

    pub fn every(&self) -> Option<Duration> {
        self.every
            .as_deref()
            .and_then(|e| crate::config::parse_long_duration(e).ok())
    }

    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(e) = &self.every {
            match crate::config::parse_long_duration(e) {
                Ok(d) if d < Duration::from_secs(10) => {
                    out.push(("every", "must be at least 10s".into()))
                }
                Ok(_) => {}
                Err(m) => out.push(("every", m)),
            }
        }
        if let Some(endpoint) = &self.endpoint {
            if !endpoint.starts_with("worker:")
                && url::Url::parse(endpoint).map_or(true, |u| u.scheme() != "http")
            {
                out.push(("endpoint", "must be an http:// URL or worker:NAME".into()));
            }
        }
        if self.prompt.trim().is_empty() {
            out.push(("prompt", "is empty".into()));
        }
        out
    }

    pub fn masked(&self) -> SummaryConfig {
        SummaryConfig {
            api_key: self.api_key.as_ref().map(|_| "***".into()),
            ..self.clone()
        }
    }
}
