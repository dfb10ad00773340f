//! LL-HLS output: one [`muxer::Muxer`] per camera, started by the first request for its
//! playlist and stopped `[hls] close_after` after the last request.
//!
//! Ownership: the camera owns its [`Hls`] slot; the slot owns the running muxer's task (a hub
//! subscription feeding the sans-IO muxer) and awaits it when the camera goes. Requests that
//! must wait (a blocking playlist reload, the part a preload hint names) wait on a `watch`
//! version the task bumps after each frame, with a deadline; nothing the task does waits on a
//! request.
//!
//! File names carry a prefix drawn when the muxer starts, so a name never means two different
//! bytes, even across muxer restarts: parts and segments can be cached as immutable.

pub mod muxer;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::hub::Stream;
use crate::resources::{spawn_task, ViewerKind};
use muxer::{Cuts, Muxer};

pub use crate::config::HlsSettings as Settings;

/// A camera's HLS slot.
#[derive(Default)]
pub struct Hls {
    slot: Mutex<Slot>,
}

#[derive(Default)]
struct Slot {
    running: Option<Arc<Running>>,
    tasks: Vec<JoinHandle<()>>,
}

/// A running muxer, shared by the requests that read it.
pub struct Running {
    muxer: Mutex<Muxer>,
    version: watch::Sender<u64>,
    last_request: Mutex<Instant>,
    /// Requests waiting on the muxer right now (a first segment, a blocking reload): a muxer
    /// with a waiter is in use however long ago its last request came.
    waiting: AtomicUsize,
    cancel: CancellationToken,
    /// Starts every file name of this run.
    pub prefix: String,
}

impl Hls {
    /// The camera's running muxer, started if none runs. Each call counts as a request (it
    /// keeps the muxer from closing).
    pub fn running(&self, stream: &Arc<Stream>, settings: Settings) -> Arc<Running> {
        let mut slot = self.slot.lock().unwrap();
        if let Some(r) = slot.running.as_ref().filter(|r| !r.cancel.is_cancelled()) {
            *r.last_request.lock().unwrap() = Instant::now();
            return r.clone();
        }
        slot.tasks.retain(|t| !t.is_finished());
        let running = Arc::new(Running {
            muxer: Mutex::new(Muxer::new(Cuts::default())),
            version: watch::channel(0).0,
            last_request: Mutex::new(Instant::now()),
            waiting: AtomicUsize::new(0),
            cancel: CancellationToken::new(),
            prefix: prefix(),
        });
        slot.tasks
            .push(spawn_task(run(stream.clone(), running.clone(), settings)));
        slot.running = Some(running.clone());
        running
    }

    /// The running muxer if there is one (for file requests, which never start one).
    pub fn current(&self) -> Option<Arc<Running>> {
        let slot = self.slot.lock().unwrap();
        let r = slot.running.as_ref().filter(|r| !r.cancel.is_cancelled())?;
        *r.last_request.lock().unwrap() = Instant::now();
        Some(r.clone())
    }

    /// Stops the muxer and waits for every muxer task (the camera is going).
    pub async fn stop(&self) {
        let tasks = {
            let mut slot = self.slot.lock().unwrap();
            if let Some(r) = slot.running.take() {
                r.cancel.cancel();
            }
            std::mem::take(&mut slot.tasks)
        };
        for t in tasks {
            let _ = t.await;
        }
    }
}

impl Running {
    /// Whether this muxer has stopped (its camera stopped, or no request came for a while).
    pub fn ended(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Reads the muxer.
    pub fn with<T>(&self, f: impl FnOnce(&Muxer) -> T) -> T {
        f(&self.muxer.lock().unwrap())
    }

    /// Waits until `f` finds what it looks for in the muxer, for at most `within`; `None` when
    /// the time ran out or the muxer stopped.
    pub async fn wait_for<T>(
        &self,
        within: Duration,
        mut f: impl FnMut(&Muxer) -> Option<T>,
    ) -> Option<T> {
        let _waiting = Waiting::new(self);
        let mut version = self.version.subscribe();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(t) = self.with(&mut f) {
                return Some(t);
            }
            tokio::select! {
                changed = version.changed() => changed.ok()?,
                _ = tokio::time::sleep_until(deadline) => return None,
                _ = self.cancel.cancelled() => return None,
            }
        }
    }
}

/// A request waiting on a muxer; when it stops waiting, that counts as its request time.
struct Waiting<'a>(&'a Running);

impl<'a> Waiting<'a> {
    fn new(running: &'a Running) -> Self {
        running.waiting.fetch_add(1, Ordering::Relaxed);
        Waiting(running)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        *self.0.last_request.lock().unwrap() = Instant::now();
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Feeds the camera's frames to the muxer until the muxer has had no request for
/// `close_after` or the camera goes. A camera that stops and starts again keeps its muxer (and
/// its players their playlist): the muxer follows it to its new run.
async fn run(stream: Arc<Stream>, running: Arc<Running>, settings: Settings) {
    let Some(mut frames) = stream.subscribe(ViewerKind::Hls) else {
        running.cancel.cancel();
        return;
    };
    let mut idle = tokio::time::interval(Duration::from_secs(1));
    let idle_for = |running: &Running| {
        running.waiting.load(Ordering::Relaxed) == 0
            && running.last_request.lock().unwrap().elapsed() > settings.close_after
    };
    // Frames the hub dropped for this muxer (it fell behind): each drop is a hole in the
    // playlist's media that players must seek over, so it is logged.
    let mut dropped = 0;
    'run: loop {
        tokio::select! {
            _ = running.cancel.cancelled() => break,
            frame = frames.next() => match frame {
                Ok(packet) => {
                    if frames.dropped_frames() > dropped {
                        tracing::warn!(
                            camera = %stream.id(),
                            frames = frames.dropped_frames() - dropped,
                            "the HLS muxer fell behind the camera: frames skipped to the next keyframe"
                        );
                        dropped = frames.dropped_frames();
                    }
                    let audio = stream.audio();
                    // EXT-X-PROGRAM-DATE-TIME: when the picture was taken, when known.
                    let taken = packet
                        .capture_time_us
                        .and_then(|us| u64::try_from(us).ok())
                        .map_or_else(SystemTime::now, |us| {
                            SystemTime::UNIX_EPOCH + Duration::from_micros(us)
                        });
                    running
                        .muxer
                        .lock()
                        .unwrap()
                        .push(&packet, audio.as_ref(), taken);
                    running.version.send_modify(|v| *v += 1);
                }
                Err(_) => {
                    // The camera stopped: wait for its next run while players still ask.
                    loop {
                        tokio::select! {
                            _ = running.cancel.cancelled() => break 'run,
                            next = stream.subscribe_when_running(ViewerKind::Hls) => {
                                frames = next;
                                dropped = 0;
                                running.muxer.lock().unwrap().resubscribed();
                                break;
                            }
                            _ = idle.tick() => if idle_for(&running) {
                                tracing::debug!(camera = %stream.id(), "HLS muxer closed: no request");
                                break 'run;
                            }
                        }
                    }
                }
            },
            _ = idle.tick() => if idle_for(&running) {
                tracing::debug!(camera = %stream.id(), "HLS muxer closed: no request");
                break;
            }
        }
    }
    running.cancel.cancel();
}

/// Eight hex digits, different for each muxer started (time and a counter, hashed).
fn prefix() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::AtomicU64;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    format!("{:08x}", h.finish() as u32)
}
