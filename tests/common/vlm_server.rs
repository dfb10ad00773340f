//! A small OpenAI-compatible `/v1/chat/completions` server on loopback for the VLM tests. It
//! checks every request for real — the image is a JPEG that decodes, of the expected width, and
//! the prompt is the expected one — and answers by the API's contract, after a configurable delay
//! or with a configurable failure. It records when each request started and ended, so tests can
//! check rates and overlap.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Failure {
    None,
    Status500,
    InvalidJson,
    NoText,
    /// A 500 whose body is long, multi-line and full of control characters.
    Status500Noisy,
    /// A 307 to the same server under another host name (`localhost`).
    RedirectElsewhere,
    /// A 200 with a 300 MiB body, sent chunked (no length up front).
    Huge,
}

#[derive(Debug, Clone)]
pub struct Request {
    pub started: Instant,
    pub ended: Instant,
    pub width: u32,
    pub height: u32,
    pub prompt: String,
    /// What was wrong with the request, if anything.
    pub problem: Option<String>,
}

/// Answers a prompt from the decoded picture (`None`: not a prompt it judges).
pub type Judge = Arc<dyn Fn(&image::DynamicImage, &str) -> Option<String> + Send + Sync>;

pub struct Behaviour {
    /// When set, prompts it judges are answered from the picture's content.
    pub judge: Option<Judge>,
    pub delay: Duration,
    pub failure: Failure,
    pub expected_width: u32,
    pub expected_prompt: String,
    pub answer: String,
}

#[derive(Clone)]
pub struct VlmServer {
    pub url: String,
    pub behaviour: Arc<Mutex<Behaviour>>,
    pub requests: Arc<Mutex<Vec<Request>>>,
    shutdown: tokio_util::sync::CancellationToken,
}

impl VlmServer {
    /// Starts on a free loopback port, in the current runtime.
    pub async fn start(expected_width: u32, expected_prompt: &str) -> VlmServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        let server = VlmServer {
            url,
            behaviour: Arc::new(Mutex::new(Behaviour {
                judge: None,
                delay: Duration::ZERO,
                failure: Failure::None,
                expected_width,
                expected_prompt: expected_prompt.to_string(),
                answer: "A test pattern with colour bars and a white box.".into(),
            })),
            requests: Arc::new(Mutex::new(Vec::new())),
            shutdown: tokio_util::sync::CancellationToken::new(),
        };
        let app = Router::new()
            .route("/v1/chat/completions", post(completions))
            .with_state(server.clone());
        let stop = server.shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
                .unwrap();
        });
        server
    }

    pub fn set(&self, f: impl FnOnce(&mut Behaviour)) {
        f(&mut self.behaviour.lock().unwrap());
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    pub fn stop(&self) {
        self.shutdown.cancel();
    }
}

/// Checks the request against the chat-completions contract; returns (width, height, prompt) or
/// what is wrong.
fn check(
    body: &Value,
    expected_width: u32,
    expected_prompt: &str,
) -> (
    u32,
    u32,
    String,
    Option<String>,
    Option<image::DynamicImage>,
) {
    let content = &body["messages"][0]["content"];
    let prompt = content[0]["text"].as_str().unwrap_or("").to_string();
    let url = content[1]["image_url"]["url"].as_str().unwrap_or("");
    let mut problem = None;
    if body["model"].as_str().unwrap_or("").is_empty() {
        problem = Some("no model".to_string());
    }
    if prompt != expected_prompt {
        problem = Some(format!("prompt {prompt:?}, expected {expected_prompt:?}"));
    }
    let Some(b64) = url.strip_prefix("data:image/jpeg;base64,") else {
        return (0, 0, prompt, Some("no JPEG data URL".into()), None);
    };
    let jpeg = match base64::engine::general_purpose::STANDARD.decode(b64) {
        Ok(j) => j,
        Err(e) => return (0, 0, prompt, Some(format!("bad base64: {e}")), None),
    };
    match image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg) {
        Ok(img) => {
            if img.width() != expected_width {
                problem = Some(format!(
                    "image {} wide, expected {expected_width}",
                    img.width()
                ));
            }
            (img.width(), img.height(), prompt, problem, Some(img))
        }
        Err(e) => (
            0,
            0,
            prompt,
            Some(format!("JPEG does not decode: {e}")),
            None,
        ),
    }
}

/// A text-only request (a summary): answered from the log it carries — how many entries and
/// how many of them alerts — and refused if a picture came with it.
fn summarise(server: &VlmServer, body: &Value, started: Instant) -> Response {
    let text = body["messages"][0]["content"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let entries: Vec<&str> = text
        .lines()
        .filter(|l| l.len() > 9 && l.as_bytes()[2] == b':' && l.as_bytes()[5] == b':')
        .collect();
    let alerts = entries
        .iter()
        .filter(|l| l[9..].starts_with("alert "))
        .count();
    let count = entries.len();
    let problem = (body["model"].as_str().unwrap_or("").is_empty()).then(|| "no model".to_string());
    server.requests.lock().unwrap().push(Request {
        started,
        ended: Instant::now(),
        width: 0,
        height: 0,
        prompt: text,
        problem,
    });
    let answer = format!("{count} log lines, {alerts} of them alerts.");
    Json(json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": answer}}]}))
        .into_response()
}

async fn completions(State(server): State<VlmServer>, Json(body): Json<Value>) -> Response {
    let started = Instant::now();
    if body["messages"][0]["content"].is_string() {
        return summarise(&server, &body, started);
    }
    let (delay, failure, width, prompt, mut answer, judge) = {
        let b = server.behaviour.lock().unwrap();
        (
            b.delay,
            b.failure,
            b.expected_width,
            b.expected_prompt.clone(),
            b.answer.clone(),
            b.judge.clone(),
        )
    };
    let (w, h, got_prompt, mut problem, img) = check(&body, width, &prompt);
    // A judged prompt is answered from the picture it came with.
    if let (Some(judge), Some(img)) = (&judge, &img) {
        if let Some(judged) = judge(img, &got_prompt) {
            answer = judged;
            problem = problem.filter(|p| !p.starts_with("prompt "));
        }
    }
    tokio::time::sleep(delay).await;
    server.requests.lock().unwrap().push(Request {
        started,
        ended: Instant::now(),
        width: w,
        height: h,
        prompt: got_prompt,
        problem: problem.clone(),
    });
    if let Some(p) = problem {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {"message": p}})),
        )
            .into_response();
    }
    match failure {
        Failure::Status500 => (StatusCode::INTERNAL_SERVER_ERROR, "model crashed").into_response(),
        Failure::InvalidJson => (StatusCode::OK, "{not json").into_response(),
        Failure::Status500Noisy => {
            let body = format!("model\r\ncrashed\x1b[2J\n{}", "trace ".repeat(2000));
            (StatusCode::INTERNAL_SERVER_ERROR, body).into_response()
        }
        Failure::RedirectElsewhere => {
            let port = server
                .url
                .rsplit(':')
                .next()
                .unwrap()
                .trim_end_matches("/v1");
            let to = format!("http://localhost:{port}/v1/chat/completions");
            (
                StatusCode::TEMPORARY_REDIRECT,
                [(axum::http::header::LOCATION, to)],
            )
                .into_response()
        }
        Failure::Huge => {
            let chunk = bytes::Bytes::from(vec![b'x'; 1 << 20]);
            let chunks = futures_util::stream::iter(
                (0..300).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
            );
            (StatusCode::OK, axum::body::Body::from_stream(chunks)).into_response()
        }
        Failure::NoText => {
            Json(json!({"choices": [{"message": {"role": "assistant", "content": ""}}]}))
                .into_response()
        }
        Failure::None => Json(json!({
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": answer}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}
        }))
        .into_response(),
    }
}
