//! A vision-language model describing the picture, through any OpenAI-compatible
//! `/v1/chat/completions` endpoint (Ollama, vLLM, SGLang, llama.cpp, NIM, OpenAI) or a
//! `worker:NAME`.
//!
//! One request in flight per camera: pictures that arrive while the model is busy are skipped,
//! never queued. The API key is sent as a bearer token and never logged or shown.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VlmConfig {
    #[serde(default = "crate::analysis::enabled_by_default")]
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

/// The request body for one picture.
pub fn request_body(config: &VlmConfig, jpeg_base64: &str) -> Value {
    json!({
        "model": config.model,
        "max_tokens": config.max_tokens,
        "messages": [{
            "role": "user",
            "content": [
                { "type": "text", "text": config.prompt },
                { "type": "image_url", "image_url": { "url": format!("data:image/jpeg;base64,{jpeg_base64}") } }
            ]
        }]
    })
}

/// The answer's text, or why there is none.
pub fn answer_text(body: &[u8]) -> Result<String, String> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| format!("the model server answered with invalid JSON: {e}"))?;
    let content = &v["choices"][0]["message"]["content"];
    let text = match content {
        Value::String(s) => s.clone(),
        // Some servers answer with content parts.
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    };
    let text = text.trim().to_string();
    if text.is_empty() {
        return Err("the model's answer has no text (choices[0].message.content)".into());
    }
    Ok(text)
}

/// Sends one request. `base` is the endpoint URL (a worker's already resolved).
pub async fn ask(
    http: &reqwest::Client,
    base: &str,
    config: &VlmConfig,
    jpeg_base64: &str,
) -> Result<String, String> {
    let url = format!("{}/chat/completions", base.trim_end_matches('/'));
    let mut request = http.post(&url).json(&request_body(config, jpeg_base64));
    if let Some(key) = &config.api_key {
        request = request.bearer_auth(key);
    }
    let body = super::http::call(request, &url, config.timeout()).await?;
    answer_text(&body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> VlmConfig {
        toml::from_str(
            r#"endpoint = "http://127.0.0.1:11434/v1"
               model = "llava"
               api_key = "sk-secret""#,
        )
        .unwrap()
    }

    #[test]
    fn defaults_and_masking() {
        let c = config();
        assert_eq!(c.interval(), Duration::from_secs(2));
        assert_eq!(c.image_width, 640);
        assert!(c.problems().is_empty());
        assert_eq!(c.masked().api_key.as_deref(), Some("***"));
        assert!(!format!("{:?}", c.masked()).contains("sk-secret"));
    }

    #[test]
    fn the_request_follows_the_chat_completions_contract() {
        let body = request_body(&config(), "QUJD");
        assert_eq!(body["model"], "llava");
        let parts = &body["messages"][0]["content"];
        assert_eq!(parts[0]["text"], "Describe what you see in one sentence.");
        assert_eq!(parts[1]["image_url"]["url"], "data:image/jpeg;base64,QUJD");
    }

    #[test]
    fn answers_are_read_or_refused_with_a_reason() {
        let ok = br#"{"choices":[{"message":{"role":"assistant","content":" A red car. "}}]}"#;
        assert_eq!(answer_text(ok).unwrap(), "A red car.");
        let parts = br#"{"choices":[{"message":{"content":[{"type":"text","text":"Two"},{"type":"text","text":" cats"}]}}]}"#;
        assert_eq!(answer_text(parts).unwrap(), "Two cats");
        assert!(answer_text(b"<html>").unwrap_err().contains("invalid JSON"));
        assert!(answer_text(br#"{"choices":[]}"#)
            .unwrap_err()
            .contains("no text"));
    }

    #[test]
    fn bad_settings_are_named() {
        let mut c = config();
        c.endpoint = "ftp://x".into();
        c.interval = "soon".into();
        c.image_width = 10;
        let keys: Vec<&str> = c.problems().iter().map(|p| p.0).collect();
        assert_eq!(keys, vec!["endpoint", "interval", "image_width"]);
    }
}
