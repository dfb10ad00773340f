//! One camera's stream: its source task, its state, its fan-out and its figures.
//!
//! Ownership (principle 1): the [`Stream`] owns one supervisor task while running, through its
//! `JoinHandle` and a `CancellationToken`. The supervisor owns the source (which owns its threads,
//! sockets and children). `stop()` cancels, awaits the supervisor — so the source and everything it
//! made are gone — and only then closes the fan-out and releases the GOP cache.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::fanout::{FanOut, Subscription};
use super::state::{Event, State};
use super::stats::{StatsView, StreamStats};
use super::timeline::Timeline;
use crate::backoff::Backoff;
use crate::media::{AudioCodec, Frame, TrackKind, VideoCodec};
use crate::resources::{spawn_task, Counted, Resource, ViewerKind};
use crate::source::publish::{Inlet, Published};
use crate::source::{self, SourceError, SourceSpec};

pub struct Stream {
    shared: Arc<Shared>,
    /// Serialises start and stop; holds the running supervisor.
    control: tokio::sync::Mutex<Option<Running>>,
}

struct Running {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

struct Shared {
    id: String,
    fanout: FanOut,
    /// Where publishers attach, for a `publish:` camera.
    inlet: Inlet,
    status: Mutex<Status>,
    /// Woken whenever the state changes, for [`Stream::wake`].
    changed: tokio::sync::Notify,
}

#[derive(Default)]
struct Status {
    state: State,
    /// Held while the state is `Live`, so `streams_live` counts exactly the live streams.
    live: Option<Counted>,
    stats: StreamStats,
    video: Option<Arc<VideoCodec>>,
    audio: Option<AudioCodec>,
    timeline: Timeline,
}

impl Status {
    fn apply(&mut self, event: &Event) {
        self.state = self.state.on(event);
        if self.state == State::Live {
            self.live
                .get_or_insert_with(|| Counted::new(Resource::StreamLive));
        } else {
            self.live = None;
            self.stats.clear_window();
        }
    }
}

/// What the API shows of a stream.
#[derive(Debug, Clone)]
pub struct StreamView {
    pub state: State,
    pub video: Option<Arc<VideoCodec>>,
    pub audio: Option<AudioCodec>,
    /// People watching ([`ViewerKind::is_person`]).
    pub viewers: usize,
    /// Every subscription of the stream, by kind (`ViewerKind::name`).
    pub subscribers: std::collections::BTreeMap<&'static str, usize>,
    pub stats: StatsView,
}

/// What a source publishes into: the stream's state and fan-out.
struct Input {
    shared: Arc<Shared>,
}

impl source::Publish for Input {
    fn camera_id(&self) -> &str {
        &self.shared.id
    }

    fn publish(&self, mut frame: Frame) {
        {
            let mut status = self.shared.status.lock().unwrap();
            // Live means pictures: audio that arrives before the first video frame doesn't count.
            if status.state != State::Live && frame.is_video() {
                status.apply(&Event::Frame);
                self.shared.changed.notify_waiters();
            }
            let rate = match frame.track {
                TrackKind::Video => 90_000,
                TrackKind::Audio => status.audio.as_ref().map_or(48_000, |a| a.sample_rate),
            };
            let mut pts = status.timeline.map(frame.track, frame.pts, rate);
            frame.dts += pts - frame.pts;
            if frame.dts < 0 {
                let lift = -frame.dts;
                status.timeline.lift(frame.track, lift, rate);
                frame.dts += lift;
                pts += lift;
            }
            frame.pts = pts;
            status
                .stats
                .record(Instant::now(), frame.data.len(), frame.is_video());
            if let Some(codec) = &frame.video_codec {
                if !status.video.as_ref().is_some_and(|c| Arc::ptr_eq(c, codec)) {
                    status.video = Some(codec.clone());
                }
            }
        }
        self.shared.fanout.publish(frame);
    }

    fn set_audio(&self, audio: Option<AudioCodec>) {
        self.shared.status.lock().unwrap().audio = audio;
    }

    fn new_session(&self) {
        let mut status = self.shared.status.lock().unwrap();
        status.timeline.new_session();
    }
}

impl Stream {
    pub fn new(id: &str) -> Stream {
        Stream {
            shared: Arc::new(Shared {
                id: id.to_string(),
                fanout: FanOut::new(),
                inlet: Inlet::default(),
                status: Mutex::new(Status::default()),
                changed: tokio::sync::Notify::new(),
            }),
            control: tokio::sync::Mutex::new(None),
        }
    }

    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// Starts the source unless it is already running. Returns once the supervisor task exists;
    /// the state then moves on by itself (starting → live, or retrying with a reason).
    /// With `on_demand = Some(idle)` the camera is enabled but idle: its source starts when the
    /// first viewer subscribes and stops `idle` after the last one leaves.
    pub async fn start(&self, spec: SourceSpec, on_demand: Option<Duration>) {
        let mut control = self.control.lock().await;
        if let Some(running) = control.take() {
            if !running.task.is_finished() {
                *control = Some(running);
                return;
            }
            // The supervisor gave up (failed state); reap it before starting afresh.
            let _ = running.task.await;
        }
        self.shared.fanout.open();
        self.spawn(&mut control, spec, on_demand);
    }

    /// Replaces the running source with `spec` (a changed source setting). Unlike stop + start,
    /// viewers stay attached: they skip to the new source's first keyframe (with a new codec
    /// description if it changed), as after a reconnect. Starts the source if it was not
    /// running.
    pub async fn restart(&self, spec: SourceSpec, on_demand: Option<Duration>) {
        let mut control = self.control.lock().await;
        if let Some(running) = control.take() {
            running.cancel.cancel();
            let _ = running.task.await;
        }
        self.shared.fanout.reset_gop();
        self.shared.status.lock().unwrap().apply(&Event::Stop);
        self.shared.fanout.open();
        self.spawn(&mut control, spec, on_demand);
    }

    fn spawn(&self, control: &mut Option<Running>, spec: SourceSpec, on_demand: Option<Duration>) {
        let cancel = CancellationToken::new();
        let task = match (spec, on_demand) {
            (SourceSpec::Publish(rules), _) => {
                self.shared.status.lock().unwrap().apply(&Event::Park);
                self.shared.inlet.set_rules(rules.takeover, rules.key);
                self.shared.inlet.set_open(true);
                spawn_task(publish_loop(
                    self.shared.clone(),
                    rules.timeout,
                    cancel.clone(),
                ))
            }
            (spec, None) => {
                self.shared.status.lock().unwrap().apply(&Event::Start);
                spawn_task(supervise(self.shared.clone(), spec, cancel.clone()))
            }
            (spec, Some(idle)) => {
                self.shared.status.lock().unwrap().apply(&Event::Park);
                spawn_task(on_demand_loop(
                    self.shared.clone(),
                    spec,
                    idle,
                    cancel.clone(),
                ))
            }
        };
        *control = Some(Running { cancel, task });
        self.shared.changed.notify_waiters();
    }

    /// Stops the source and waits until it, and every task and thread it made, is gone. Viewers
    /// are ended with "the camera was stopped"; the GOP cache is released.
    pub async fn stop(&self) {
        let mut control = self.control.lock().await;
        if let Some(running) = control.take() {
            running.cancel.cancel();
            let _ = running.task.await;
        }
        self.shared.status.lock().unwrap().apply(&Event::Stop);
        self.shared.changed.notify_waiters();
        self.shared.fanout.close();
    }

    pub fn state(&self) -> State {
        self.shared.status.lock().unwrap().state.clone()
    }

    /// The audio description (cheap: no figures computed).
    pub fn audio(&self) -> Option<AudioCodec> {
        self.shared.status.lock().unwrap().audio.clone()
    }

    pub fn view(&self) -> StreamView {
        let subscribers = self.shared.fanout.subscribers();
        let mut status = self.shared.status.lock().unwrap();
        StreamView {
            state: status.state.clone(),
            video: status.video.clone(),
            audio: status.audio.clone(),
            viewers: subscribers
                .iter()
                .filter(|(k, _)| k.is_person())
                .map(|(_, n)| n)
                .sum(),
            subscribers: subscribers.iter().map(|(k, n)| (k.name(), *n)).collect(),
            stats: status.stats.view(Instant::now()),
        }
    }

    /// Makes an on-demand camera start (if it is idle) and waits until it is live, at most
    /// `limit`. Returns whether it is live. The camera stays wanted while this waits; afterwards
    /// the idle timeout gives the caller time to subscribe.
    pub async fn wake(&self, limit: Duration) -> bool {
        let _want = self.shared.fanout.demand().lease();
        let deadline = tokio::time::Instant::now() + limit;
        let settled = self.when_changed(|| match self.state() {
            State::Live => Some(true),
            State::Stopped | State::Failed { .. } => Some(false),
            _ => None,
        });
        match tokio::time::timeout_at(deadline, settled).await {
            Ok(live) => live,
            Err(_) => self.state() == State::Live,
        }
    }

    /// Attaches a viewer once the stream runs (at once if it does). For analysers, which follow
    /// a camera through stops and starts.
    pub async fn subscribe_when_running(&self, kind: ViewerKind) -> Subscription {
        self.when_changed(|| self.subscribe(kind)).await
    }

    /// Evaluates `check` now and after every state change until it gives a value.
    async fn when_changed<T>(&self, mut check: impl FnMut() -> Option<T>) -> T {
        loop {
            let changed = self.shared.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable(); // registered before the check, so no change is missed
            if let Some(value) = check() {
                return value;
            }
            changed.await;
        }
    }

    /// Attaches a viewer; `None` when the stream is not running.
    pub fn subscribe(&self, kind: ViewerKind) -> Option<Subscription> {
        self.shared.fanout.subscribe(kind)
    }

    /// Where publishers attach (a `publish:` camera takes them while it runs).
    pub fn inlet(&self) -> &Inlet {
        &self.shared.inlet
    }

    /// The frames since the last keyframe, for outputs that decode (snapshots).
    pub fn gop(&self) -> Vec<Frame> {
        self.shared.fanout.gop()
    }
}

/// Runs the source, and again after failures with back-off, until cancelled or a permanent error.
async fn supervise(shared: Arc<Shared>, spec: SourceSpec, cancel: CancellationToken) {
    let publisher: source::Publisher = Arc::new(Input {
        shared: shared.clone(),
    });
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut backoff = Backoff::new(seed);
    loop {
        publisher.new_session();
        let frames_before = shared.status.lock().unwrap().stats.frames();
        // A panic in a source (ours or a library's) is a failure like any other: the camera
        // retries with a reason instead of staying "starting" for ever.
        let run = std::panic::AssertUnwindSafe(source::run(&spec, &publisher, &cancel));
        let result = match futures_util::FutureExt::catch_unwind(run).await {
            Ok(result) => result,
            Err(_) => Err(SourceError::retryable(
                "the source crashed (a bug in livelens; the log has the details)",
            )),
        };
        if cancel.is_cancelled() {
            return;
        }
        let error = match result {
            Ok(()) => SourceError::retryable("the source ended"),
            Err(e) => e,
        };
        {
            let mut status = shared.status.lock().unwrap();
            if status.stats.frames() > frames_before {
                backoff.reset(); // it worked for a while: start the back-off from 1 s again
            }
            status.apply(&Event::Error {
                reason: error.reason.clone(),
                permanent: error.permanent,
            });
        }
        shared.changed.notify_waiters();
        // The old bitstream does not continue; late joiners wait for the next keyframe.
        shared.fanout.reset_gop();
        if error.permanent {
            tracing::error!(camera = %shared.id, reason = %error, "source failed; not retrying");
            return;
        }
        let delay = backoff.next_delay();
        tracing::warn!(camera = %shared.id, reason = %error, retry_in = ?delay, "source failed");
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// A `publish:` camera: idle until a publisher attaches, live while it sends, idle again when
/// it leaves (its connection ends, or it sends no media for `timeout`). With `[publish]
/// takeover`, a new publisher's feed replaces the live one's, which ends that publication.
async fn publish_loop(shared: Arc<Shared>, timeout: Duration, cancel: CancellationToken) {
    let input = Input {
        shared: shared.clone(),
    };
    // Closed again however this ends, so no publisher waits on a camera that stopped.
    struct Close<'a>(&'a Inlet);
    impl Drop for Close<'_> {
        fn drop(&mut self) {
            self.0.set_open(false);
        }
    }
    let _close = Close(&shared.inlet);
    loop {
        let mut feed = tokio::select! {
            _ = cancel.cancelled() => return,
            feed = shared.inlet.next() => feed,
        };
        shared.status.lock().unwrap().apply(&Event::Start);
        shared.changed.notify_waiters();
        tracing::info!(camera = %shared.id, "a publisher arrived");
        source::Publish::new_session(&input);
        // Only media keeps a publisher: requests or audio descriptions alone do not hold a
        // camera.
        let mut deadline = tokio::time::Instant::now() + timeout;
        let why = loop {
            let item = tokio::select! {
                _ = cancel.cancelled() => return,
                item = tokio::time::timeout_at(deadline, feed.recv()) => item,
                newer = shared.inlet.next() => {
                    // Taken over: the old feed is dropped (its publisher sees it closed), and
                    // the new publisher's bitstream starts afresh at its first keyframe.
                    tracing::info!(camera = %shared.id, "a new publisher took over");
                    feed = newer;
                    deadline = tokio::time::Instant::now() + timeout;
                    source::Publish::new_session(&input);
                    continue;
                }
            };
            match item {
                Ok(Some(Published::Frame(frame))) => {
                    deadline = tokio::time::Instant::now() + timeout;
                    source::Publish::publish(&input, frame)
                }
                Ok(Some(Published::Audio(audio))) => source::Publish::set_audio(&input, audio),
                Ok(None) => break "the publisher left".to_string(),
                Err(_) => break format!("the publisher sent nothing for {timeout:?}"),
            }
        };
        drop(feed);
        tracing::info!(camera = %shared.id, "{why}; waiting for the next publisher");
        shared.fanout.reset_gop();
        source::Publish::set_audio(&input, None);
        shared.status.lock().unwrap().apply(&Event::Park);
        shared.changed.notify_waiters();
    }
}

/// An on-demand camera: idle until a viewer wants it, then the source runs (with the usual
/// supervision) until nobody has wanted it for `idle`. Viewers that subscribe while it starts
/// simply wait for the first keyframe.
async fn on_demand_loop(
    shared: Arc<Shared>,
    spec: SourceSpec,
    idle: Duration,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = shared.fanout.demand().wait_wanted() => {}
        }
        shared.status.lock().unwrap().apply(&Event::Start);
        shared.changed.notify_waiters();
        tracing::info!(camera = %shared.id, "a viewer arrived; starting the on-demand source");
        let source_cancel = cancel.child_token();
        let mut source = std::pin::pin!(supervise(
            shared.clone(),
            spec.clone(),
            source_cancel.clone()
        ));
        let gave_up = tokio::select! {
            _ = &mut source => true,
            _ = shared.fanout.demand().wait_idle(idle) => false,
            _ = cancel.cancelled() => false,
        };
        if gave_up {
            return; // a permanent error: the state says failed, with the reason
        }
        source_cancel.cancel();
        source.await;
        if cancel.is_cancelled() {
            return;
        }
        tracing::info!(camera = %shared.id, "no viewers for {idle:?}; source stopped");
        shared.fanout.reset_gop();
        shared.status.lock().unwrap().apply(&Event::Park);
        shared.changed.notify_waiters();
    }
}
