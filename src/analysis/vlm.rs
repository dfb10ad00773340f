//! A vision-language model describing the picture, through any OpenAI-compatible
//! `/v1/chat/completions` endpoint (Ollama, vLLM, SGLang, llama.cpp, NIM, OpenAI) or a
//! `worker:NAME`.
//!
//! One request in flight per camera: pictures that arrive while the model is busy are skipped,
//! never queued. The API key is sent as a bearer token and never logged or shown.

use serde_json::{json, Value};

pub use crate::config::analysis::VlmConfig;

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
    use std::time::Duration;

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
