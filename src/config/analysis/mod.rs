//! `[camera.analysis]`: the settings of each analyser (motion, VLM, speech-to-text), parsed and
//! checked here; what the analysers do with them is in the top-level `analysis` module.

mod alert;
mod asr;
mod motion;
mod summary;
mod vlm;

use serde::{Deserialize, Serialize};

pub use alert::{question_prompt, AlertRule};
pub use asr::AsrConfig;
pub use motion::MotionConfig;
pub use summary::SummaryConfig;
pub use vlm::VlmConfig;

/// Checks the `analysis` table of a camera: problems as `(key, message)`.
pub fn check(table: &toml::Table) -> Vec<(String, String)> {
    match AnalysisConfig::from_table(table) {
        Ok(c) => c.problems(),
        Err(e) => vec![(String::new(), e)],
    }
}

/// `[camera.analysis]`: each analyser is optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub motion: Option<MotionConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlm: Option<VlmConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asr: Option<AsrConfig>,
    /// Alert rules: yes/no questions to the model of `vlm` (`[[camera.analysis.alert]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alert: Vec<AlertRule>,
    /// Summaries of a period's descriptions, alerts and transcripts (text only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<SummaryConfig>,
}

impl AnalysisConfig {
    pub fn from_table(table: &toml::Table) -> Result<AnalysisConfig, String> {
        AnalysisConfig::deserialize(toml::Value::Table(table.clone())).map_err(|e| e.to_string())
    }

    /// Problems as `(key under analysis, message)`.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(m) = &self.motion {
            out.extend(
                m.problems()
                    .into_iter()
                    .map(|(k, v)| (format!("motion.{k}"), v)),
            );
        }
        if let Some(v) = &self.vlm {
            out.extend(
                v.problems()
                    .into_iter()
                    .map(|(k, m)| (format!("vlm.{k}"), m)),
            );
            if v.on_motion_only && self.motion().is_none() {
                out.push((
                    "vlm.on_motion_only".into(),
                    "needs motion analysis ([camera.analysis.motion]) to know when there is motion"
                        .into(),
                ));
            }
        }
        for (i, rule) in self.alert.iter().enumerate() {
            out.extend(
                rule.problems()
                    .into_iter()
                    .map(|(k, m)| (format!("alert[{i}].{k}"), m)),
            );
            if self.alert[..i].iter().any(|r| r.name == rule.name) {
                out.push((
                    format!("alert[{i}].name"),
                    format!("duplicate alert name {:?}", rule.name),
                ));
            }
            if rule.on_motion_only && self.motion().is_none() {
                out.push((
                    format!("alert[{i}].on_motion_only"),
                    "needs motion analysis ([camera.analysis.motion]) to know when there is motion"
                        .into(),
                ));
            }
        }
        if let Some(s) = &self.summary {
            out.extend(
                s.problems()
                    .into_iter()
                    .map(|(k, m)| (format!("summary.{k}"), m)),
            );
            if s.endpoint.is_none() && self.vlm.is_none() {
                out.push((
                    "summary".into(),
                    "needs a model: set summary.endpoint and summary.model, or [camera.analysis.vlm]".into(),
                ));
            }
        }
        if !self.alert.is_empty() && self.vlm.is_none() {
            out.push((
                "alert".into(),
                "alert rules ask the model of [camera.analysis.vlm]: set its endpoint and model (enabled = false keeps it from describing)".into(),
            ));
        }
        if let Some(a) = &self.asr {
            out.extend(
                a.problems()
                    .into_iter()
                    .map(|(k, m)| (format!("asr.{k}"), m)),
            );
        }
        out
    }

    pub fn asr(&self) -> Option<&AsrConfig> {
        self.asr.as_ref().filter(|a| a.enabled)
    }

    pub fn motion(&self) -> Option<&MotionConfig> {
        self.motion.as_ref().filter(|m| m.enabled)
    }

    pub fn vlm(&self) -> Option<&VlmConfig> {
        self.vlm.as_ref().filter(|v| v.enabled)
    }

    pub fn is_active(&self) -> bool {
        self.motion().is_some()
            || self.vlm().is_some()
            || self.asr().is_some()
            || !self.alerts().is_empty()
            || self
                .summary
                .as_ref()
                .is_some_and(|s| s.enabled && s.every.is_some())
    }

    /// The alert rules that can run (they need the model of `vlm`, enabled or not).
    pub fn alerts(&self) -> &[AlertRule] {
        if self.vlm.is_some() {
            &self.alert
        } else {
            &[]
        }
    }

    /// The settings as the API shows them (API key masked).
    pub fn masked(&self) -> AnalysisConfig {
        AnalysisConfig {
            vlm: self.vlm.as_ref().map(VlmConfig::masked),
            asr: self.asr.as_ref().map(AsrConfig::masked),
            summary: self.summary.as_ref().map(SummaryConfig::masked),
            ..self.clone()
        }
    }
}

/// Serde default of every analyser's `enabled`: configuring one turns it on.
pub(crate) fn enabled_by_default() -> bool {
    true
}
