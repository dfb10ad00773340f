//! Summaries of a period: the camera's descriptions, alerts and transcripts as a text log, sent
//! to a model as one text-only chat request; the answer is stored as a `summary` event.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{json, Value};

use super::events::Event;
pub use crate::config::analysis::SummaryConfig;

/// The kinds of event a summary reads.
pub const READS: [&str; 3] = ["vlm", "alert", "transcript"];

/// The period's events as a log, oldest first: `09:30:05 description: …` (UTC).
pub fn log_text(events: &[Event]) -> String {
    let mut lines: Vec<(i64, String)> = events
        .iter()
        .filter_map(|e| {
            let what = match e.kind.as_str() {
                "vlm" => format!("seen: {}", e.data["text"].as_str()?),
                "transcript" => format!("heard: {}", e.data["text"].as_str()?),
                "alert" => format!(
                    "alert {} {}{}",
                    e.data["name"].as_str()?,
                    e.data["state"].as_str()?,
                    e.data["answer"]
                        .as_str()
                        .map(|a| format!(" ({a})"))
                        .unwrap_or_default()
                ),
                _ => return None,
            };
            let time =
                crate::common::rfc3339(UNIX_EPOCH + Duration::from_millis(e.time_ms.max(0) as u64));
            Some((e.time_ms, format!("{} {what}", &time[11..19])))
        })
        .collect();
    lines.sort_by_key(|(t, _)| *t);
    lines
        .into_iter()
        .map(|(_, l)| l)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The chat request: the prompt and the log, text only.
pub fn request_body(model: &str, prompt: &str, log: &str) -> Value {
    json!({
        "model": model,
        "max_tokens": 300,
        "messages": [{ "role": "user", "content": format!("{prompt}\n\n{log}") }]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, ms: i64, data: Value) -> Event {
        Event {
            id: 0,
            camera: "c".into(),
            kind: kind.into(),
            time_ms: ms,
            data,
            has_snapshot: false,
        }
    }

    #[test]
    fn the_log_is_in_time_order_with_what_was_seen_heard_and_alerted() {
        let log = log_text(&[
            event("transcript", 2_000, json!({"text": "hello"})),
            event("vlm", 1_000, json!({"text": "a cat"})),
            event(
                "alert",
                3_000,
                json!({"name": "cat", "state": "start", "answer": "Yes."}),
            ),
            event("motion", 4_000, json!({"state": "start"})),
        ]);
        assert_eq!(
            log,
            "00:00:01 seen: a cat\n00:00:02 heard: hello\n00:00:03 alert cat start (Yes.)"
        );
        let body = request_body("m", "Sum up.", &log);
        assert_eq!(body["messages"][0]["content"], format!("Sum up.\n\n{log}"));
    }
}
