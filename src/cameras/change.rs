//! What a change to a camera is, decided once and without I/O: a PATCH applied to a config
//! ([`CameraPatch::apply`]), and what the difference between two configs restarts
//! ([`Change::between`]). The API, start-up and reload all go through these.

use crate::config::{CameraConfig, Problem, Record};

/// A change to a camera (PATCH); absent fields stay as they are.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraPatch {
    pub source: Option<String>,
    pub on_demand: Option<bool>,
    /// `Some(None)` (JSON null) removes the option.
    #[serde(default, deserialize_with = "present")]
    pub idle_timeout: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub transport: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub timeout: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub user_agent: Option<Option<String>>,
    /// Analysis settings (motion, vlm, asr); null removes them. Applied without a restart.
    #[serde(default, deserialize_with = "present_value")]
    pub analysis: Option<Option<serde_json::Value>>,
    /// `true`, `false` or `{"keep": "30d"}`; null removes the setting (not recorded).
    #[serde(default, deserialize_with = "present_record")]
    pub record: Option<Option<Record>>,
}

fn present_record<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<Record>>, D::Error> {
    use serde::Deserialize;
    Option::<Record>::deserialize(d).map(Some)
}

fn present_value<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<serde_json::Value>>, D::Error> {
    use serde::Deserialize;
    Option::<serde_json::Value>::deserialize(d).map(Some)
}

/// Distinguishes a field that is absent (keep) from one that is null (remove).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    use serde::Deserialize;
    Option::<String>::deserialize(d).map(Some)
}

/// Analysis settings sent as JSON, as the TOML table the config file keeps.
pub fn analysis_table(json: serde_json::Value) -> Result<toml::Table, Problem> {
    serde_json::from_value::<toml::Table>(json).map_err(|e| Problem {
        place: "analysis".into(),
        message: format!("must be an object of analysers: {e}"),
    })
}

impl CameraPatch {
    /// The config `old` becomes with this patch. Secrets and credentials sent back as the API
    /// showed them (masked) keep their stored values.
    pub fn apply(self, old: &CameraConfig) -> Result<CameraConfig, Problem> {
        let mut new = old.clone();
        if let Some(source) = self.source {
            new.source = crate::common::restore_masked_credentials(&source, &old.source);
        }
        if let Some(on_demand) = self.on_demand {
            new.on_demand = on_demand;
        }
        if let Some(v) = self.idle_timeout {
            new.idle_timeout = v;
        }
        if let Some(v) = self.transport {
            new.transport = v;
        }
        if let Some(v) = self.timeout {
            new.timeout = v;
        }
        if let Some(v) = self.user_agent {
            new.user_agent = v;
        }
        if let Some(v) = self.record {
            new.record = v;
        }
        if let Some(v) = self.analysis {
            new.analysis = v.map(analysis_table).transpose()?;
            if let Some(analysis) = new.analysis.as_mut() {
                crate::config::restore_masked_secrets(analysis, old.analysis.as_ref(), "analysis")
                    .map_err(|mut problems| problems.remove(0))?;
            }
        }
        Ok(new)
    }
}

/// What a new config restarts in a running camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Change {
    /// The source or how it runs: the source task is replaced; viewers stay attached and
    /// resume at the new source's first keyframe.
    pub source: bool,
    /// The analysers: they are replaced; video and viewers are not touched. A new source URL
    /// replaces them too: it is a new scene, and a motion detector that compared the old
    /// camera's picture with the new one would report motion that never happened.
    pub analysis: bool,
    /// Recording switched on or off: the recorder starts or stops; nothing else is touched.
    pub recording: bool,
}

impl Change {
    pub fn between(old: &CameraConfig, new: &CameraConfig) -> Change {
        Change {
            source: old.source != new.source
                || old.on_demand != new.on_demand
                || old.idle_timeout != new.idle_timeout
                || old.transport != new.transport
                || old.timeout != new.timeout
                || old.user_agent != new.user_agent
                || old.publish_key != new.publish_key,
            analysis: old.analysis != new.analysis || old.source != new.source,
            recording: old.record.as_ref().is_some_and(Record::is_on)
                != new.record.as_ref().is_some_and(Record::is_on),
        }
    }

    pub fn is_none(&self) -> bool {
        *self == Change::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn camera(toml: &str) -> CameraConfig {
        toml::from_str(&format!("id = \"c\"\n{toml}")).unwrap()
    }

    fn patch(json: serde_json::Value) -> CameraPatch {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_patch_that_repeats_the_config_changes_nothing() {
        let old = camera("source = \"testsrc://\"\non_demand = true\nidle_timeout = \"5s\"");
        let new = patch(serde_json::json!({"on_demand": true, "source": "testsrc://"}))
            .apply(&old)
            .unwrap();
        assert_eq!(new, old);
        assert!(Change::between(&old, &new).is_none());
    }

    #[test]
    fn source_options_restart_only_the_source_and_analysis_only_the_analysers() {
        let old = camera("source = \"testsrc://\"");
        let new = patch(serde_json::json!({"source": "testsrc://?fps=10"}))
            .apply(&old)
            .unwrap();
        assert_eq!(
            Change::between(&old, &new),
            Change {
                source: true,
                analysis: true,
                recording: false
            },
            "a new scene starts the analysers over"
        );
        for json in [
            serde_json::json!({"on_demand": true}),
            serde_json::json!({"idle_timeout": "3s"}),
            serde_json::json!({"transport": "udp"}),
            serde_json::json!({"timeout": "4s"}),
            serde_json::json!({"user_agent": "x"}),
        ] {
            let new = patch(json.clone()).apply(&old).unwrap();
            let change = Change::between(&old, &new);
            assert_eq!(
                change,
                Change {
                    source: true,
                    analysis: false,
                    recording: false
                },
                "{json}"
            );
        }
        let new = patch(serde_json::json!({"analysis": {"motion": {}}}))
            .apply(&old)
            .unwrap();
        assert_eq!(
            Change::between(&old, &new),
            Change {
                source: false,
                analysis: true,
                recording: false
            }
        );
        // Recording on and off touches only the recorder; a new keep is not a change of it.
        let on = patch(serde_json::json!({"record": true}))
            .apply(&old)
            .unwrap();
        assert_eq!(
            Change::between(&old, &on),
            Change {
                recording: true,
                ..Change::default()
            }
        );
        let keep = patch(serde_json::json!({"record": {"keep": "30d"}}))
            .apply(&on)
            .unwrap();
        assert!(!Change::between(&on, &keep).recording);
        let off = patch(serde_json::json!({"record": false}))
            .apply(&keep)
            .unwrap();
        assert!(Change::between(&keep, &off).recording);
    }

    #[test]
    fn null_removes_an_option_and_absent_keeps_it() {
        let old = camera("source = \"testsrc://\"\ntimeout = \"4s\"\nanalysis = { motion = {} }");
        let kept = patch(serde_json::json!({})).apply(&old).unwrap();
        assert_eq!(kept, old);
        let removed = patch(serde_json::json!({"timeout": null, "analysis": null}))
            .apply(&old)
            .unwrap();
        assert_eq!(removed.timeout, None);
        assert_eq!(removed.analysis, None);
    }

    #[test]
    fn masked_secrets_and_credentials_sent_back_keep_their_values() {
        let old = camera(
            "source = \"rtsp://u:secret@cam/1\"\n[analysis.vlm]\nendpoint = \"http://m\"\nmodel = \"x\"\napi_key = \"k1\"",
        );
        let new = patch(serde_json::json!({
            "source": "rtsp://***:***@cam/1",
            "analysis": {"vlm": {"endpoint": "http://m", "model": "x", "api_key": "***"}},
        }))
        .apply(&old)
        .unwrap();
        assert_eq!(new, old);
    }

    #[test]
    fn analysis_that_is_not_an_object_is_a_problem_at_its_place() {
        let old = camera("source = \"testsrc://\"");
        let problem = patch(serde_json::json!({"analysis": [1, 2]}))
            .apply(&old)
            .unwrap_err();
        assert_eq!(problem.place, "analysis");
    }
}
