//! Live analysis of cameras: motion and a vision-language model, with events stored, pushed live
//! and sent over MQTT.
//!
//! Ownership: each camera owns its [`Analysers`] (token + task); the task owns
//! its decoder thread (`output::frames::Grabber`) and at most one model request. Changing a camera's
//! analysis stops its task (awaiting the thread) and starts a new one. Analysis subscribes to the
//! camera like a viewer (kind `analysis`), so it never slows the video path: a slow analyser
//! falls behind its own bounded queue and resumes at a keyframe.

pub mod alert;
pub mod asr;
pub mod events;
mod http;
pub mod latency;
pub mod motion;
pub mod mqtt;
pub mod summary;
pub mod vlm;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde::Serialize;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::hub::Stream;
use crate::output::frames::{Grabber, Picture};
use crate::resources::{spawn_task, ViewerKind};
use crate::supervisor::Workers;
use asr::{AsrConfig, Pipeline};
use events::EventStore;
use motion::{MotionChange, MotionDetector};
use vlm::VlmConfig;

/// Width of event thumbnails when no VLM asks for a larger picture.
const THUMBNAIL_WIDTH: u32 = 320;

pub use crate::config::analysis::AnalysisConfig;

/// What the API shows of a camera's analysis.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AnalysisStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub motion: Option<MotionStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vlm: Option<VlmStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asr: Option<AsrStatus>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<AlertStatus>,
}

/// An alert rule as the API shows it: whether it is on, and the model's last answer.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AlertStatus {
    pub name: String,
    pub active: bool,
    #[serde(flatten)]
    pub model: ModelState,
    pub requests: u64,
    /// Answers that said neither yes nor no (the state stayed as it was).
    pub unclear: u64,
}

/// Where a model-backed analyser (VLM, speech) stands, as the API shows it: one state machine
/// for both, so they report alike.
#[derive(Debug, Clone, Serialize)]
pub struct ModelState {
    /// "waiting" (no answer yet), "ok", "busy" or "error".
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The latest answer with words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

impl Default for ModelState {
    fn default() -> Self {
        ModelState {
            state: "waiting",
            reason: None,
            text: None,
        }
    }
}

impl ModelState {
    /// A request went out; an error stays shown until an answer comes.
    fn busy(&mut self) {
        if self.state != "error" {
            self.state = "busy";
        }
    }

    /// An answer came; `None` when it had no words (the last text stays).
    fn answered(&mut self, text: Option<String>) {
        self.state = "ok";
        self.reason = None;
        if text.is_some() {
            self.text = text;
        }
    }

    /// A failure; true when its reason is new (worth a warning, once).
    fn failed(&mut self, reason: String) -> bool {
        let new = self.reason.as_deref() != Some(reason.as_str());
        self.state = "error";
        self.reason = Some(reason);
        new
    }

    /// What failed works again, with no answer yet to show for it.
    fn recovered(&mut self) {
        self.state = if self.text.is_some() { "ok" } else { "waiting" };
        self.reason = None;
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct AsrStatus {
    #[serde(flatten)]
    pub model: ModelState,
    /// Speech segments cut by the VAD.
    pub segments: u64,
    /// Segments dropped because the model was still busy with the previous one.
    pub asr_dropped: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct MotionStatus {
    pub active: bool,
    /// Changed fraction of the last analysed picture.
    pub area: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct VlmStatus {
    #[serde(flatten)]
    pub model: ModelState,
    /// Requests for descriptions (alert questions count on their rule).
    pub requests: u64,
    pub skipped: u64,
    /// Requests that failed, descriptions and alert questions alike.
    pub errors: u64,
    /// Answer times (the request alone, without grabbing and encoding the picture) of
    /// descriptions and alert questions over the last 5 minutes; `null` before the first.
    pub latency_ms: Option<latency::LatencySummary>,
    #[serde(skip)]
    latency: latency::LatencyWindow,
}

impl VlmStatus {
    fn answered_in(&mut self, took: Duration) {
        self.latency.record(Instant::now(), took);
    }

    fn view(&self, now: Instant) -> VlmStatus {
        VlmStatus {
            model: self.model.clone(),
            requests: self.requests,
            skipped: self.skipped,
            errors: self.errors,
            latency_ms: self.latency.summary(now),
            latency: latency::LatencyWindow::default(),
        }
    }
}

/// One camera's running analysers: their task (which owns the decoder thread and at most one
/// model request) and what they see. Owned by the camera, stopped by it.
pub struct Analysers {
    cancel: CancellationToken,
    task: JoinHandle<()>,
    /// Summaries on a schedule (`[camera.analysis.summary] every`).
    summaries: Option<JoinHandle<()>>,
    status: Arc<Mutex<AnalysisStatus>>,
}

impl Analysers {
    /// Cancels the task and waits until it, its decoder thread and its requests are gone.
    pub async fn stop(self) {
        self.cancel.cancel();
        let _ = self.task.await;
        if let Some(t) = self.summaries {
            let _ = t.await;
        }
    }

    /// Starts winding down without waiting (shutdown cancels every camera first).
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// What the API shows: the latency window summed up, not copied.
    pub fn status(&self) -> AnalysisStatus {
        let s = self.status.lock().unwrap();
        AnalysisStatus {
            motion: s.motion.clone(),
            vlm: s.vlm.as_ref().map(|v| v.view(Instant::now())),
            asr: s.asr.clone(),
            alerts: s.alerts.clone(),
        }
    }
}

/// What every camera's analysers share: the event store, the workers and the HTTP client.
pub struct Analysis {
    events: Arc<EventStore>,
    workers: Arc<Workers>,
    http: reqwest::Client,
}

impl Analysis {
    pub fn new(events: Arc<EventStore>, workers: Arc<Workers>) -> Analysis {
        Analysis {
            events,
            workers,
            http: http::client(),
        }
    }

    pub fn events(&self) -> &Arc<EventStore> {
        &self.events
    }

    /// Starts analysing `stream` with `config`; `None` when the config asks for nothing.
    pub fn start(&self, stream: &Arc<Stream>, config: &AnalysisConfig) -> Option<Analysers> {
        if !config.is_active() {
            return None;
        }
        let status = Arc::new(Mutex::new(AnalysisStatus {
            motion: config.motion().map(|_| MotionStatus::default()),
            vlm: config.vlm().map(|_| VlmStatus::default()),
            asr: config.asr().map(|_| AsrStatus::default()),
            alerts: config
                .alerts()
                .iter()
                .map(|r| AlertStatus {
                    name: r.name.clone(),
                    ..AlertStatus::default()
                })
                .collect(),
        }));
        let cancel = CancellationToken::new();
        let ctx = Context {
            camera: stream.clone(),
            config: config.clone(),
            events: self.events.clone(),
            workers: self.workers.clone(),
            http: self.http.clone(),
            status: status.clone(),
        };
        let summaries = config
            .summary
            .as_ref()
            .filter(|s| s.enabled)
            .and_then(|s| s.every())
            .map(|every| {
                spawn_task(summarise_every(
                    self.clone_shared(),
                    stream.id().to_string(),
                    config.clone(),
                    every,
                    cancel.clone(),
                ))
            });
        let task = spawn_task(run(ctx, cancel.clone()));
        Some(Analysers {
            cancel,
            task,
            summaries,
            status,
        })
    }

    fn clone_shared(&self) -> Analysis {
        Analysis {
            events: self.events.clone(),
            workers: self.workers.clone(),
            http: self.http.clone(),
        }
    }

    /// Summarises `camera`'s descriptions, alerts and transcripts from `since_ms` to
    /// `until_ms` with the summary model (or the `vlm` one), stores and returns the `summary`
    /// event. `Ok(None)` when there was nothing to summarise.
    pub async fn summarise(
        &self,
        camera: &str,
        config: &AnalysisConfig,
        since_ms: i64,
        until_ms: i64,
    ) -> Result<Option<Arc<events::Event>>, String> {
        let (endpoint, model, key, prompt, timeout) = match (&config.summary, &config.vlm) {
            (Some(s), vlm) => (
                s.endpoint
                    .clone()
                    .or(vlm.as_ref().map(|v| v.endpoint.clone())),
                s.model.clone().or(vlm.as_ref().map(|v| v.model.clone())),
                if s.endpoint.is_some() {
                    s.api_key.clone()
                } else {
                    vlm.as_ref().and_then(|v| v.api_key.clone())
                },
                s.prompt.clone(),
                vlm.as_ref().map_or(Duration::from_secs(60), |v| {
                    v.timeout().max(Duration::from_secs(60))
                }),
            ),
            (None, Some(v)) => (
                Some(v.endpoint.clone()),
                Some(v.model.clone()),
                v.api_key.clone(),
                summary::SummaryConfig::default_prompt_text(),
                v.timeout().max(Duration::from_secs(60)),
            ),
            (None, None) => {
                return Err(
                    "this camera has no model: set [camera.analysis.vlm] or .summary".into(),
                )
            }
        };
        let (Some(endpoint), Some(model)) = (endpoint, model) else {
            return Err("no model for summaries: set summary.endpoint and summary.model".into());
        };
        let store = self.events.clone();
        let id = camera.to_string();
        // Each kind read apart, so that motion events never crowd the log out; at most the
        // newest 1000 of a kind (the log says when it was cut).
        let found = tokio::task::spawn_blocking(move || {
            let mut all = Vec::new();
            let mut cut = false;
            for kind in summary::READS {
                let some = store.query(&events::Query {
                    camera: Some(id.clone()),
                    kind: Some(kind.to_string()),
                    since_ms: Some(since_ms),
                    until_ms: Some(until_ms),
                    limit: Some(1000),
                })?;
                cut |= some.len() == 1000;
                all.extend(some);
            }
            Ok::<_, String>((all, cut))
        })
        .await
        .map_err(|e| e.to_string())??;
        let (read, truncated) = found;
        if read.is_empty() {
            return Ok(None);
        }
        let log = summary::log_text(&read);
        let (base, _lease) = model_base(&self.workers, &endpoint, timeout).await?;
        let url = format!("{}/chat/completions", base.trim_end_matches('/'));
        let mut request = self
            .http
            .post(&url)
            .json(&summary::request_body(&model, &prompt, &log));
        if let Some(key) = &key {
            request = request.bearer_auth(key);
        }
        let body = http::call(request, &url, timeout).await?;
        let text = vlm::answer_text(&body)?;
        let event = self.events.add(
            camera,
            "summary",
            json!({"text": text, "since": since_ms, "until": until_ms, "model": model, "events": read.len(), "truncated": truncated}),
            None,
        )?;
        Ok(Some(event))
    }

    /// Asks the model of `config` about the camera's picture now (`jpeg`, scaled to its image
    /// width here): `question` as an alert rule would, or its prompt. The answer and how long
    /// the request took.
    pub async fn test_model(
        &self,
        jpeg: bytes::Bytes,
        config: VlmConfig,
        question: Option<String>,
    ) -> Result<(String, Duration), String> {
        let width = config.image_width;
        let scaled = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, String> {
            let img = image::load_from_memory(&jpeg)
                .map_err(|e| format!("the snapshot does not decode: {e}"))?;
            let height = (u64::from(img.height()) * u64::from(width)
                / u64::from(img.width().max(1)))
            .max(1) as u32;
            let img = img.resize_exact(width, height, image::imageops::FilterType::Triangle);
            let mut out = Vec::new();
            img.to_rgb8()
                .write_to(
                    &mut std::io::Cursor::new(&mut out),
                    image::ImageFormat::Jpeg,
                )
                .map_err(|e| e.to_string())?;
            Ok(out)
        })
        .await
        .map_err(|e| e.to_string())??;
        let config = match question {
            Some(q) => VlmConfig {
                prompt: crate::config::analysis::question_prompt(&q),
                ..config
            },
            None => config,
        };
        let b64 = base64::engine::general_purpose::STANDARD.encode(&scaled);
        let started = Instant::now();
        let (base, _lease) = model_base(&self.workers, &config.endpoint, config.timeout()).await?;
        let answer = vlm::ask(&self.http, &base, &config, &b64).await?;
        Ok((answer, started.elapsed()))
    }
}

struct Context {
    camera: Arc<Stream>,
    config: AnalysisConfig,
    events: Arc<EventStore>,
    workers: Arc<Workers>,
    http: reqwest::Client,
    status: Arc<Mutex<AnalysisStatus>>,
}

type VlmCall = Pin<Box<dyn Future<Output = VlmOutcome> + Send>>;

/// What a model request was for: the description, or alert rule `i`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Purpose {
    Describe,
    Rule(usize),
}

struct VlmOutcome {
    purpose: Purpose,
    result: Result<String, String>,
    grab: Duration,
    encode: Duration,
    request: Duration,
    jpeg: Option<bytes::Bytes>,
}

/// Where a model is: its URL, or a `[[worker]]`'s (`worker:NAME`), whose lease keeps an
/// on-demand worker up while the caller holds it.
async fn model_base(
    workers: &Workers,
    endpoint: &str,
    timeout: Duration,
) -> Result<(String, Option<crate::supervisor::WorkerLease>), String> {
    match endpoint.strip_prefix("worker:") {
        Some(name) => {
            let lease = workers.acquire(name, timeout).await?;
            Ok((format!("{}/v1", lease.base_url), Some(lease)))
        }
        None => Ok((endpoint.to_string(), None)),
    }
}

/// A summary of the last `every`, each `every`, while the analysers run.
async fn summarise_every(
    analysis: Analysis,
    camera: String,
    config: AnalysisConfig,
    every: Duration,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    // A summary slower than `every` is not followed by a burst of overlapping ones.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let until = events::now_ms();
        let since = until - every.as_millis() as i64;
        tokio::select! {
            _ = cancel.cancelled() => return,
            done = analysis.summarise(&camera, &config, since, until) => {
                if let Err(reason) = done {
                    tracing::warn!(%camera, %reason, "summary failed");
                }
            }
        }
    }
}

/// One camera's analysis: subscribe (again after the camera stops and starts), decode on the
/// grabber thread, run motion on every picture and the VLM when it is due and idle.
async fn run(ctx: Context, cancel: CancellationToken) {
    let id = ctx.camera.id().to_string();
    let motion_fps = ctx.config.motion().map_or(0.0, |m| m.fps);
    // Read once: the config was validated before this task started.
    let vlm_interval = ctx.config.vlm().map_or(Duration::ZERO, |v| v.interval());
    let rules = ctx.config.alerts();
    // Pictures come as often as every question together needs them: one request per picture,
    // so with fewer, the description and each rule would be asked less often than set.
    let vlm_fps: f64 = ctx
        .config
        .vlm()
        .map(|_| vlm_interval)
        .into_iter()
        .chain(rules.iter().map(|r| r.interval()))
        .map(|d| 1.0 / d.as_secs_f64().max(0.04))
        .sum::<f64>()
        .min(25.0);
    let fps = motion_fps.max(vlm_fps).max(0.1);
    let rgb_width = ctx
        .config
        .vlm
        .as_ref()
        .map_or(THUMBNAIL_WIDTH, |v| v.image_width);
    let mut detector = ctx.config.motion().cloned().map(MotionDetector::new);
    let mut last_request: Option<Instant> = None;
    let mut rule_states: Vec<alert::RuleState> = rules
        .iter()
        .map(|r| alert::RuleState::new(r.min_duration()))
        .collect();
    let mut rule_asked: Vec<Option<Instant>> = vec![None; rules.len()];
    if ctx.config.motion().is_none()
        && ctx.config.vlm().is_none()
        && rules.is_empty()
        && ctx.config.asr().is_none()
    {
        // Summaries only (their own task): nothing needs the picture or the sound, so nothing
        // subscribes, and an on-demand camera may go idle.
        cancel.cancelled().await;
        return;
    }
    loop {
        let subscription = tokio::select! {
            _ = cancel.cancelled() => return,
            s = ctx.camera.subscribe_when_running(ViewerKind::Analysis) => s,
        };
        let mut subscription = subscription;
        let video_wanted =
            ctx.config.motion().is_some() || ctx.config.vlm().is_some() || !rules.is_empty();
        let mut grabber = if video_wanted {
            match Grabber::start(&id, rgb_width, fps) {
                Ok(g) => Some(g),
                Err(e) => {
                    tracing::error!(camera = %id, "cannot start the analysis decoder: {e}");
                    return;
                }
            }
        } else {
            None
        };
        // Without video analysers, a channel that never changes stands in for pictures.
        let (_no_pictures, idle_pictures) = tokio::sync::watch::channel(None);
        let mut pictures = grabber
            .as_ref()
            .map_or(idle_pictures, |g| g.pictures.clone());
        let mut speech: Option<Pipeline> = None;
        let mut transcribing: Option<AsrCall> = None;
        let mut last_picture: Option<Instant> = None;
        let mut call: Option<VlmCall> = None;
        let stopped = loop {
            enum Step {
                Cancelled,
                Frame(Arc<crate::hub::Packet>),
                Ended,
                Picture,
                Answer(VlmOutcome),
                Transcript(AsrOutcome),
            }
            let step = tokio::select! {
                _ = cancel.cancelled() => Step::Cancelled,
                frame = subscription.next() => match frame {
                    Ok(f) => Step::Frame(f),
                    Err(_) => Step::Ended,
                },
                changed = pictures.changed() => match changed {
                    Ok(()) => Step::Picture,
                    Err(_) => Step::Ended,
                },
                outcome = async { call.as_mut().unwrap().await }, if call.is_some() => Step::Answer(outcome),
                outcome = async { transcribing.as_mut().unwrap().await }, if transcribing.is_some() => Step::Transcript(outcome),
            };
            match step {
                Step::Cancelled => break true,
                Step::Ended => break false,
                Step::Frame(f) if f.is_video() => {
                    if let Some(g) = grabber.as_mut() {
                        g.push(&f);
                    }
                }
                Step::Frame(f) => {
                    if let Some(config) = ctx.config.asr() {
                        on_audio(&ctx, config, &mut speech, &mut transcribing, &f);
                    }
                }
                Step::Transcript(outcome) => {
                    transcribing = None;
                    record_transcript(&ctx, outcome);
                }
                Step::Answer(outcome) => {
                    call = None;
                    match outcome.purpose {
                        Purpose::Describe => record_answer(&ctx, outcome),
                        Purpose::Rule(i) => {
                            record_rule_answer(&ctx, i, &mut rule_states[i], outcome)
                        }
                    }
                }
                Step::Picture => {
                    let Some(picture) = pictures.borrow_and_update().clone() else {
                        continue;
                    };
                    let since = last_picture.map_or(Duration::ZERO, |t| picture.at - t);
                    last_picture = Some(picture.at);
                    if let Some(d) = detector.as_mut() {
                        on_motion(&ctx, d, &picture, since).await;
                    }
                    let Some(model) = ctx.config.vlm.as_ref() else {
                        continue;
                    };
                    let moving = detector.as_ref().is_some_and(|d| d.active());
                    // What is due: the description and each rule; the one waiting longest
                    // goes first (never asked counts as longest).
                    let mut next: Option<(Purpose, Option<Instant>)> = None;
                    let mut consider =
                        |purpose, asked: Option<Instant>, every: Duration, motion_only: bool| {
                            let due = asked.is_none_or(|t| t.elapsed() >= every);
                            if due
                                && (!motion_only || moving)
                                && next.is_none_or(|(_, a)| {
                                    a.is_some() && asked.is_none_or(|t| Some(t) < a)
                                })
                            {
                                next = Some((purpose, asked));
                            }
                        };
                    if let Some(vlm) = ctx.config.vlm() {
                        consider(
                            Purpose::Describe,
                            last_request,
                            vlm_interval,
                            vlm.on_motion_only,
                        );
                    }
                    for (i, rule) in rules.iter().enumerate() {
                        consider(
                            Purpose::Rule(i),
                            rule_asked[i],
                            rule.interval(),
                            // An active alert is asked on without motion, so that it can end.
                            rule.on_motion_only && !rule_states[i].active,
                        );
                    }
                    let Some((purpose, _)) = next else {
                        continue;
                    };
                    if call.is_some() {
                        // One request in flight per camera, for the description and every
                        // rule: this picture is skipped, never queued.
                        if let Some(s) = ctx.status.lock().unwrap().vlm.as_mut() {
                            s.skipped += 1;
                        }
                        continue;
                    }
                    let config = match purpose {
                        Purpose::Describe => {
                            last_request = Some(Instant::now());
                            model.clone()
                        }
                        Purpose::Rule(i) => {
                            rule_asked[i] = Some(Instant::now());
                            VlmConfig {
                                prompt: rules[i].prompt(),
                                max_tokens: model.max_tokens.min(32),
                                ..model.clone()
                            }
                        }
                    };
                    call = Some(Box::pin(ask_vlm(
                        ctx.http.clone(),
                        ctx.workers.clone(),
                        config,
                        picture,
                        purpose,
                    )));
                    let mut status = ctx.status.lock().unwrap();
                    match purpose {
                        Purpose::Describe => {
                            if let Some(s) = status.vlm.as_mut() {
                                s.requests += 1;
                                s.model.busy();
                            }
                        }
                        Purpose::Rule(i) => {
                            if let Some(s) = status.alerts.get_mut(i) {
                                s.requests += 1;
                                s.model.busy();
                            }
                        }
                    }
                }
            }
        };
        // An answer in flight is abandoned with its connection; the decoder thread is joined.
        drop(call);
        drop(transcribing);
        if let Some(g) = grabber {
            g.stop().await;
        }
        if let Some(d) = detector.as_mut() {
            // The stream stopped, or the analysis was changed or removed: a motion in progress
            // has ended.
            if d.active() {
                *d = MotionDetector::new(ctx.config.motion().cloned().unwrap_or_default());
                add_event(&ctx, "motion", json!({"state": "end"}), None);
            }
        }
        // Alerts in progress end with what watched for them.
        for (i, state) in rule_states.iter_mut().enumerate() {
            if state.active {
                *state = alert::RuleState::new(rules[i].min_duration());
                if let Some(s) = ctx.status.lock().unwrap().alerts.get_mut(i) {
                    s.active = false;
                }
                add_event(
                    &ctx,
                    "alert",
                    json!({"name": rules[i].name, "state": "end", "question": rules[i].question, "answer": null}),
                    None,
                );
            }
        }
        if stopped {
            return;
        }
    }
}

async fn on_motion(
    ctx: &Context,
    detector: &mut MotionDetector,
    picture: &Arc<Picture>,
    since: Duration,
) {
    let change = detector.push(
        &picture.gray,
        picture.gray_width,
        picture.gray_height,
        since,
    );
    if let Some(s) = ctx.status.lock().unwrap().motion.as_mut() {
        s.active = detector.active();
        s.area = (detector.last_area * 1000.0).round() / 1000.0;
    }
    match change {
        Some(MotionChange::Start { area }) => {
            let jpeg = encode_jpeg(picture.clone()).await.ok();
            add_event(
                ctx,
                "motion",
                json!({"state": "start", "area": (area * 1000.0).round() / 1000.0}),
                jpeg.as_deref(),
            );
        }
        Some(MotionChange::End) => add_event(ctx, "motion", json!({"state": "end"}), None),
        None => {}
    }
}

fn record_answer(ctx: &Context, outcome: VlmOutcome) {
    let Some(vlm) = ctx.config.vlm() else { return };
    let mut status = ctx.status.lock().unwrap();
    let Some(s) = status.vlm.as_mut() else { return };
    match outcome.result {
        Ok(text) => {
            s.model.answered(Some(text.clone()));
            s.answered_in(outcome.request);
            drop(status);
            let ms = |d: Duration| (d.as_secs_f64() * 1000.0 * 10.0).round() / 10.0;
            add_event(
                ctx,
                "vlm",
                json!({
                    "text": text,
                    "model": vlm.model,
                    "prompt": vlm.prompt,
                    "latency_ms": {
                        "grab": ms(outcome.grab),
                        "encode": ms(outcome.encode),
                        "request": ms(outcome.request),
                        "total": ms(outcome.grab + outcome.encode + outcome.request),
                    }
                }),
                outcome.jpeg.as_deref(),
            );
        }
        Err(reason) => {
            s.errors += 1;
            if s.model.failed(reason.clone()) {
                tracing::warn!(camera = %ctx.camera.id(), %reason, "VLM request failed; retrying at the interval");
            }
        }
    }
}

/// A rule's answer: read as yes or no, it may start or end the alert (an `alert` event with
/// the picture the model judged).
fn record_rule_answer(ctx: &Context, i: usize, state: &mut alert::RuleState, outcome: VlmOutcome) {
    let Some(rule) = ctx.config.alerts().get(i) else {
        return;
    };
    let mut status = ctx.status.lock().unwrap();
    // The model's figures count alert questions too: one model, one queue.
    if let Some(v) = status.vlm.as_mut() {
        match &outcome.result {
            Ok(_) => v.answered_in(outcome.request),
            Err(_) => v.errors += 1,
        }
    }
    let Some(s) = status.alerts.get_mut(i) else {
        return;
    };
    let text = match outcome.result {
        Ok(text) => text,
        Err(reason) => {
            if s.model.failed(reason.clone()) {
                tracing::warn!(camera = %ctx.camera.id(), alert = %rule.name, %reason, "alert question failed; asking again at the interval");
            }
            return;
        }
    };
    s.model.answered(Some(text.clone()));
    let Some(yes) = alert::yes_no(&text) else {
        s.unclear += 1;
        return;
    };
    let Some(flip) = state.answer(yes, Instant::now()) else {
        return;
    };
    s.active = state.active;
    drop(status);
    let word = match flip {
        alert::Flip::Start => "start",
        alert::Flip::End => "end",
    };
    add_event(
        ctx,
        "alert",
        json!({"name": rule.name, "state": word, "question": rule.question, "answer": text}),
        outcome.jpeg.as_deref(),
    );
}

fn add_event(ctx: &Context, kind: &str, data: serde_json::Value, jpeg: Option<&[u8]>) {
    if let Err(e) = ctx.events.add(ctx.camera.id(), kind, data, jpeg) {
        tracing::error!(camera = %ctx.camera.id(), "{e}");
    }
}

async fn encode_jpeg(picture: Arc<Picture>) -> Result<bytes::Bytes, String> {
    tokio::task::spawn_blocking(move || {
        let mut jpeg = Vec::with_capacity(picture.rgb.len() / 8);
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 80)
            .encode(
                &picture.rgb,
                picture.width,
                picture.height,
                image::ExtendedColorType::Rgb8,
            )
            .map_err(|e| format!("JPEG encode failed: {e}"))?;
        Ok(bytes::Bytes::from(jpeg))
    })
    .await
    .map_err(|e| format!("JPEG encoder failed: {e}"))?
}

async fn ask_vlm(
    http: reqwest::Client,
    workers: Arc<Workers>,
    config: VlmConfig,
    picture: Arc<Picture>,
    purpose: Purpose,
) -> VlmOutcome {
    let grab = picture.grab;
    let started = Instant::now();
    let jpeg = match encode_jpeg(picture).await {
        Ok(j) => j,
        Err(e) => {
            return VlmOutcome {
                purpose,
                result: Err(e),
                grab,
                encode: started.elapsed(),
                request: Duration::ZERO,
                jpeg: None,
            }
        }
    };
    let b64 = base64::engine::general_purpose::STANDARD.encode(&jpeg);
    let encode = started.elapsed();
    let started = Instant::now();
    let result = async {
        // A worker endpoint is resolved per request; the lease keeps an on-demand worker up.
        let (base, _lease) = model_base(&workers, &config.endpoint, config.timeout()).await?;
        vlm::ask(&http, &base, &config, &b64).await
    }
    .await;
    VlmOutcome {
        purpose,
        result,
        grab,
        encode,
        request: started.elapsed(),
        jpeg: Some(jpeg),
    }
}

type AsrCall = Pin<Box<dyn Future<Output = AsrOutcome> + Send>>;

struct AsrOutcome {
    result: Result<String, String>,
    start: Duration,
    end: Duration,
    request: Duration,
}

/// One audio frame through decode → resample → VAD; a finished segment is sent to the model
/// when it is idle, and dropped (counted) when it is not.
fn on_audio(
    ctx: &Context,
    config: &AsrConfig,
    speech: &mut Option<Pipeline>,
    transcribing: &mut Option<AsrCall>,
    frame: &crate::media::Frame,
) {
    let Some(codec) = ctx.camera.audio() else {
        return;
    };
    if speech.as_ref().is_none_or(|p| p.codec() != &codec) {
        match Pipeline::new(&codec, config) {
            Ok(p) => *speech = Some(p),
            Err(reason) => {
                set_asr_error(ctx, reason);
                return;
            }
        }
    }
    let Some(pipeline) = speech.as_mut() else {
        return;
    };
    let segments = match pipeline.push(&frame.data) {
        Ok(s) => s,
        Err(reason) => {
            set_asr_error(ctx, reason);
            return;
        }
    };
    if pipeline.take_recovered() {
        clear_asr_error(ctx);
    }
    for segment in segments {
        let mut status = ctx.status.lock().unwrap();
        let Some(s) = status.asr.as_mut() else { return };
        s.segments += 1;
        if transcribing.is_some() {
            s.asr_dropped += 1;
            tracing::warn!(camera = %ctx.camera.id(), dropped = s.asr_dropped, "speech model busy; segment dropped");
            continue;
        }
        s.model.busy();
        drop(status);
        *transcribing = Some(Box::pin(ask_asr(
            ctx.http.clone(),
            ctx.workers.clone(),
            config.clone(),
            segment,
        )));
    }
}

/// The audio decodes again: the error it caused is over.
fn clear_asr_error(ctx: &Context) {
    let mut status = ctx.status.lock().unwrap();
    if let Some(s) = status.asr.as_mut() {
        tracing::info!(camera = %ctx.camera.id(), "speech-to-text: the audio decodes again");
        s.model.recovered();
    }
}

fn set_asr_error(ctx: &Context, reason: String) {
    let mut status = ctx.status.lock().unwrap();
    if let Some(s) = status.asr.as_mut() {
        if s.model.failed(reason.clone()) {
            tracing::warn!(camera = %ctx.camera.id(), %reason, "speech-to-text failed");
        }
    }
}

async fn ask_asr(
    http: reqwest::Client,
    workers: Arc<Workers>,
    config: AsrConfig,
    segment: asr::vad::Segment,
) -> AsrOutcome {
    let (start, end) = (segment.start_time(), segment.end_time());
    let wav = crate::media::audio::wav(&segment.samples, asr::SPEECH_RATE);
    let started = Instant::now();
    let result = async {
        let (base, _lease) = model_base(&workers, &config.endpoint, config.timeout()).await?;
        asr::transcribe(&http, &base, &config, wav).await
    }
    .await;
    AsrOutcome {
        result,
        start,
        end,
        request: started.elapsed(),
    }
}

fn record_transcript(ctx: &Context, outcome: AsrOutcome) {
    let Some(config) = ctx.config.asr() else {
        return;
    };
    match outcome.result {
        Ok(text) => {
            {
                let mut status = ctx.status.lock().unwrap();
                if let Some(s) = status.asr.as_mut() {
                    s.model
                        .answered(Some(text.clone()).filter(|t| !t.is_empty()));
                }
            }
            if text.is_empty() {
                return; // the model heard no words in it
            }
            let secs = |d: Duration| (d.as_secs_f64() * 100.0).round() / 100.0;
            add_event(
                ctx,
                "transcript",
                json!({
                    "text": text,
                    "model": config.model,
                    "start": secs(outcome.start),
                    "end": secs(outcome.end),
                    "latency_ms": (outcome.request.as_secs_f64() * 1000.0).round(),
                }),
                None,
            );
        }
        Err(reason) => set_asr_error(ctx, reason),
    }
}
