//! Fan-out of one camera's frames to its viewers (DESIGN principle 6).
//!
//! - Frames are shared: each viewer receives a clone of the [`Frame`], i.e. reference counts on
//!   the same `Bytes`, never a copy of the payload.
//! - Every viewer reads from one bounded ring (`tokio::sync::broadcast`), so memory is bounded by
//!   the ring's capacity whatever the number or speed of viewers.
//! - A viewer that falls off the ring is told how many frames it lost; it then skips to the next
//!   keyframe, so it never decodes a broken reference chain. [`LagPolicy`] decides when a viewer
//!   that keeps falling behind is disconnected, with a reason.
//! - The GOP cache holds the frames since the last keyframe, so a new viewer starts decoding at once
//!   instead of waiting up to a GOP for the next keyframe.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use super::packet::{Packet, Sequencer};
use crate::demand::{Demand, DemandLease};
use crate::media::Frame;
use crate::resources::{Counted, Resource, ViewerKind};

/// Frames in the ring: about 5 s of 25 fps video plus its audio.
pub const RING_CAPACITY: usize = 256;
/// A viewer with more frames than this waiting for it is behind: it skips to the next keyframe
/// (about 2 s of video with its audio). Smaller than the ring, so a slow viewer resyncs before
/// the ring would lap it.
pub const MAX_BACKLOG: usize = 96;
/// Bounds for the GOP cache; beyond them the cache is dropped until the next keyframe, so a
/// camera with a very long GOP costs late joiners a wait, never unbounded memory.
const GOP_MAX_FRAMES: usize = 1_000;
const GOP_MAX_BYTES: usize = 32 << 20;

#[derive(Default)]
struct Gop {
    frames: Vec<Arc<Packet>>,
    bytes: usize,
    /// Set when the cache overflowed; cleared at the next keyframe.
    overflowed: bool,
}

/// The producer side, owned by a stream.
pub struct FanOut {
    inner: Mutex<Inner>,
    /// Every subscription holds a lease: on-demand cameras run while it is wanted.
    demand: Demand,
}

struct Inner {
    /// Present while the stream is running. Dropping it ends every subscription with
    /// [`ViewerEnd::StreamStopped`].
    sender: Option<broadcast::Sender<Arc<Packet>>>,
    gop: Gop,
    /// Numbers frames and measures their durations on the camera-wide timeline.
    sequencer: Sequencer,
}

/// Why a subscription ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewerEnd {
    StreamStopped,
    TooSlow(String),
}

impl std::fmt::Display for ViewerEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ViewerEnd::StreamStopped => f.write_str("the camera was stopped"),
            ViewerEnd::TooSlow(reason) => f.write_str(reason),
        }
    }
}

impl Default for FanOut {
    fn default() -> Self {
        FanOut::new()
    }
}

impl FanOut {
    pub fn new() -> FanOut {
        FanOut {
            inner: Mutex::new(Inner {
                sender: None,
                gop: Gop::default(),
                sequencer: Sequencer::default(),
            }),
            demand: Demand::new(),
        }
    }

    /// Opens the ring (the stream started).
    pub fn open(&self) {
        let mut inner = self.inner.lock().unwrap();
        if inner.sender.is_none() {
            inner.sender = Some(broadcast::channel(RING_CAPACITY).0);
        }
    }

    /// Closes the ring and releases the GOP cache (the stream stopped). Subscribers end.
    pub fn close(&self) {
        let mut inner = self.inner.lock().unwrap();
        inner.sender = None;
        inner.gop = Gop::default();
    }

    /// The bitstream does not continue (the source was lost or replaced): the GOP cache goes, so
    /// late joiners wait for the new source's first keyframe, and later packets are of a new
    /// epoch, so attached viewers skip to that keyframe too (and stay attached).
    pub fn reset_gop(&self) {
        let mut inner = self.inner.lock().unwrap();
        inner.gop = Gop::default();
        inner.sequencer.discontinuity();
    }

    /// Hands a frame to every viewer and the GOP cache, as one shared [`Packet`]. Dropped when
    /// the ring is closed, so a stopped stream holds no frames.
    pub fn publish(&self, frame: Frame) {
        let mut inner = self.inner.lock().unwrap();
        if inner.sender.is_none() {
            return;
        }
        let frame = inner.sequencer.packet(frame);
        let gop = &mut inner.gop;
        if frame.is_video() && frame.keyframe {
            *gop = Gop::default();
        }
        if !gop.overflowed && (frame.keyframe || !gop.frames.is_empty()) {
            gop.bytes += frame.data.len();
            gop.frames.push(frame.clone());
            if gop.frames.len() > GOP_MAX_FRAMES || gop.bytes > GOP_MAX_BYTES {
                *gop = Gop {
                    overflowed: true,
                    ..Gop::default()
                };
            }
        }
        if let Some(sender) = &inner.sender {
            // An error only means nobody is subscribed right now.
            let _ = sender.send(frame);
        }
    }

    /// The frames since the last keyframe (cheap: reference counts).
    pub fn gop(&self) -> Vec<Frame> {
        let inner = self.inner.lock().unwrap();
        inner.gop.frames.iter().map(|p| p.frame.clone()).collect()
    }

    /// Attaches a viewer of `kind`. `None` when the stream is not running.
    pub fn subscribe(&self, kind: ViewerKind) -> Option<Subscription> {
        let inner = self.inner.lock().unwrap();
        // Subscribing and copying the cache under one lock: no frame is missed or seen twice.
        let receiver = inner.sender.as_ref()?.subscribe();
        Some(Subscription {
            pending: inner.gop.frames.iter().cloned().collect(),
            receiver,
            awaiting_keyframe: inner.gop.frames.is_empty(),
            epoch: None,
            policy: LagPolicy::default(),
            dropped_frames: 0,
            _counted: Counted::new(Resource::Viewer(kind)),
            _demand: self.demand.lease(),
        })
    }

    /// Viewers (and waiters) that want the source running.
    pub fn demand(&self) -> &Demand {
        &self.demand
    }

    pub fn viewer_count(&self) -> usize {
        self.inner
            .lock()
            .unwrap()
            .sender
            .as_ref()
            .map_or(0, |s| s.receiver_count())
    }
}

/// One viewer's view of the stream. Counted as a viewer of its kind while it exists.
pub struct Subscription {
    pending: VecDeque<Arc<Packet>>,
    receiver: broadcast::Receiver<Arc<Packet>>,
    awaiting_keyframe: bool,
    /// The epoch of the last packet handed out.
    epoch: Option<u32>,
    policy: LagPolicy,
    dropped_frames: u64,
    _counted: Counted,
    _demand: DemandLease,
}

impl Subscription {
    /// The next frame for this viewer; the first video frame is always a keyframe.
    pub async fn next(&mut self) -> Result<Arc<Packet>, ViewerEnd> {
        loop {
            if self.pending.is_empty() && self.receiver.len() > MAX_BACKLOG {
                // Behind the live edge: drop the backlog and wait for the next keyframe.
                let lost = self.receiver.len() as u64;
                self.receiver = self.receiver.resubscribe();
                self.dropped_frames += lost;
                self.policy.on_lag(Instant::now(), lost)?;
                self.awaiting_keyframe = true;
            }
            let frame = match self.pending.pop_front() {
                Some(f) => f,
                None => match self.receiver.recv().await {
                    Ok(f) => f,
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err(ViewerEnd::StreamStopped)
                    }
                    Err(broadcast::error::RecvError::Lagged(lost)) => {
                        self.dropped_frames += lost;
                        self.policy.on_lag(Instant::now(), lost)?;
                        self.awaiting_keyframe = true;
                        continue;
                    }
                },
            };
            // A new bitstream (the source restarted): nothing of it decodes before its keyframe.
            if self.epoch.is_some_and(|e| e != frame.epoch) {
                self.awaiting_keyframe = true;
            }
            if self.awaiting_keyframe {
                if !(frame.is_video() && frame.keyframe) {
                    continue;
                }
                self.awaiting_keyframe = false;
            }
            self.epoch = Some(frame.epoch);
            return Ok(frame);
        }
    }

    /// Whether a frame is already waiting: [`Subscription::next`] would not have to wait (unless
    /// it skips every waiting frame to reach a keyframe).
    pub fn ready(&self) -> bool {
        !self.pending.is_empty() || !self.receiver.is_empty()
    }

    /// Frames this viewer lost by falling behind.
    pub fn dropped_frames(&self) -> u64 {
        self.dropped_frames
    }
}

/// Decides when a viewer that keeps falling behind is disconnected: more than `max_lags` lag
/// events within `window`. A single stall (a tab in the background, a GC pause) only costs a skip.
#[derive(Debug, Clone)]
pub struct LagPolicy {
    max_lags: usize,
    window: Duration,
    recent: VecDeque<Instant>,
}

impl Default for LagPolicy {
    fn default() -> Self {
        LagPolicy::new(3, Duration::from_secs(10))
    }
}

impl LagPolicy {
    pub fn new(max_lags: usize, window: Duration) -> LagPolicy {
        LagPolicy {
            max_lags,
            window,
            recent: VecDeque::new(),
        }
    }

    pub fn on_lag(&mut self, now: Instant, lost: u64) -> Result<(), ViewerEnd> {
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.window)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        if self.recent.len() > self.max_lags {
            return Err(ViewerEnd::TooSlow(format!(
                "viewer too slow: fell behind {} times in {} s (last time by {lost} frames)",
                self.recent.len(),
                self.window.as_secs()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::TrackKind;
    use bytes::Bytes;

    fn frame(n: i64, keyframe: bool, size: usize) -> Frame {
        Frame {
            track: TrackKind::Video,
            pts: n,
            dts: n,
            keyframe,
            capture_time_us: None,
            video_codec: None,
            data: Bytes::from(vec![n as u8; size]),
        }
    }

    #[test]
    fn gop_cache_starts_at_the_last_keyframe() {
        let f = FanOut::new();
        f.publish(frame(1, true, 1)); // closed: dropped
        assert!(f.gop().is_empty());
        f.open();
        f.publish(frame(0, false, 1)); // before any keyframe: not cached
        f.publish(frame(1, true, 1));
        f.publish(frame(2, false, 1));
        f.publish(frame(3, true, 1));
        f.publish(frame(4, false, 1));
        let pts: Vec<i64> = f.gop().iter().map(|f| f.pts).collect();
        assert_eq!(pts, [3, 4]);
        f.close();
        assert!(f.gop().is_empty());
    }

    #[tokio::test]
    async fn late_joiner_gets_gop_then_live_without_gaps() {
        let f = FanOut::new();
        f.open();
        f.publish(frame(1, true, 1));
        f.publish(frame(2, false, 1));
        let mut sub = f.subscribe(ViewerKind::Mse).unwrap();
        f.publish(frame(3, false, 1));
        for want in 1..=3 {
            assert_eq!(sub.next().await.unwrap().pts, want);
        }
    }

    #[tokio::test]
    async fn frames_are_shared_not_copied() {
        let f = FanOut::new();
        f.open();
        let mut a = f.subscribe(ViewerKind::Mse).unwrap();
        let mut b = f.subscribe(ViewerKind::Mse).unwrap();
        f.publish(frame(1, true, 1000));
        let fa = a.next().await.unwrap();
        let fb = b.next().await.unwrap();
        assert!(Arc::ptr_eq(&fa, &fb), "one packet, shared");
        assert_eq!(fa.data.as_ptr(), fb.data.as_ptr());
    }

    /// Calls `next` while another task keeps publishing (keyframe every 10), as a live camera would.
    async fn next_while_live(
        f: &std::sync::Arc<FanOut>,
        sub: &mut Subscription,
        from: i64,
    ) -> Result<Arc<Packet>, ViewerEnd> {
        let publisher = f.clone();
        let feed = tokio::spawn(async move {
            for n in from..from + 100 {
                publisher.publish(frame(n, n % 10 == 0, 100));
                tokio::task::yield_now().await;
            }
        });
        let result = sub.next().await;
        feed.abort();
        let _ = feed.await;
        result
    }

    #[tokio::test]
    async fn slow_viewer_skips_to_next_keyframe_with_bounded_memory() {
        let f = std::sync::Arc::new(FanOut::new());
        f.open();
        let mut slow = f.subscribe(ViewerKind::Mse).unwrap();
        // The viewer reads nothing while far more than the ring's worth is published; the ring
        // holds at most its capacity, so memory stays bounded whatever the viewer does.
        let total = RING_CAPACITY as i64 * 4;
        for n in 0..total {
            f.publish(frame(n, n % 50 == 0, 100));
        }
        // It resumes at a live keyframe, never in the middle of a GOP.
        let first = next_while_live(&f, &mut slow, total).await.unwrap();
        assert!(first.keyframe, "resumed at pts {}", first.pts);
        assert!(
            first.pts >= total,
            "resumed at the live edge, pts {}",
            first.pts
        );
        assert!(slow.dropped_frames() >= MAX_BACKLOG as u64);
    }

    #[tokio::test]
    async fn viewer_that_stays_behind_is_dropped_with_a_reason() {
        let f = std::sync::Arc::new(FanOut::new());
        f.open();
        let mut slow = f.subscribe(ViewerKind::Mse).unwrap();
        let mut n = 0;
        let mut outcome = Ok(());
        for _ in 0..10 {
            for _ in 0..RING_CAPACITY * 2 {
                f.publish(frame(n, n % 10 == 0, 10));
                n += 1;
            }
            match next_while_live(&f, &mut slow, n).await {
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
                Ok(_) => n += 100,
            }
        }
        match outcome {
            Err(ViewerEnd::TooSlow(reason)) => assert!(reason.contains("too slow"), "{reason}"),
            other => panic!("expected the viewer to be dropped, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn close_ends_subscriptions_and_counts_return() {
        let kind = ViewerKind::Rtsp;
        let before = crate::resources::count(Resource::Viewer(kind));
        let f = FanOut::new();
        assert!(f.subscribe(kind).is_none(), "not running: no subscription");
        f.open();
        let mut sub = f.subscribe(kind).unwrap();
        assert_eq!(crate::resources::count(Resource::Viewer(kind)), before + 1);
        f.close();
        assert_eq!(sub.next().await.unwrap_err(), ViewerEnd::StreamStopped);
        drop(sub);
        assert_eq!(crate::resources::count(Resource::Viewer(kind)), before);
    }

    #[tokio::test]
    async fn viewers_stay_attached_across_a_new_bitstream_and_resume_at_its_keyframe() {
        let f = FanOut::new();
        f.open();
        let mut sub = f.subscribe(ViewerKind::Mse).unwrap();
        f.publish(frame(1, true, 1));
        f.publish(frame(2, false, 1));
        assert_eq!(sub.next().await.unwrap().pts, 1);
        // The source is replaced: the old bitstream's tail and the new one's frames before its
        // first keyframe are skipped; the viewer is not ended.
        f.reset_gop();
        f.publish(frame(10, false, 1));
        f.publish(frame(11, true, 1));
        f.publish(frame(12, false, 1));
        assert_eq!(
            sub.next().await.unwrap().pts,
            2,
            "the old frame already in the ring"
        );
        assert_eq!(
            sub.next().await.unwrap().pts,
            11,
            "resumes at the new keyframe"
        );
        assert_eq!(sub.next().await.unwrap().pts, 12);
        assert!(f.gop().iter().all(|p| p.pts >= 11), "the old GOP is gone");
    }

    #[test]
    fn lag_policy_window() {
        let t0 = Instant::now();
        let mut p = LagPolicy::new(2, Duration::from_secs(10));
        assert!(p.on_lag(t0, 5).is_ok());
        assert!(p.on_lag(t0 + Duration::from_secs(1), 5).is_ok());
        // Old lags age out of the window.
        assert!(p.on_lag(t0 + Duration::from_secs(20), 5).is_ok());
        assert!(p.on_lag(t0 + Duration::from_secs(21), 5).is_ok());
        assert!(p.on_lag(t0 + Duration::from_secs(22), 5).is_err());
    }

    #[test]
    fn gop_cache_is_bounded() {
        let f = FanOut::new();
        f.open();
        f.publish(frame(0, true, 1));
        for n in 1..=(GOP_MAX_FRAMES as i64 + 10) {
            f.publish(frame(n, false, 1));
        }
        assert!(f.gop().is_empty(), "overflowed cache is dropped");
        f.publish(frame(9999, true, 1));
        assert_eq!(f.gop().len(), 1);
    }
}
