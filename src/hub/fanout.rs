//! Fan-out of one camera's frames to its viewers (DESIGN principle 6).
//!
//! - Frames are shared: each viewer receives a clone of the [`Frame`], i.e. reference counts on
//!   the same `Bytes`, never a copy of the payload.
//! - Every viewer reads from one bounded ring ([`Ring`]), so memory is bounded by the ring's
//!   capacity whatever the number or speed of viewers. The capacity is in frames *and* bytes: a
//!   ring of 256 frames of 3 MiB pictures was 768 MiB per camera held for one viewer that
//!   stopped reading (issue 28, hole 7).
//! - A viewer that falls off the ring is told how many frames it lost; it then skips to the next
//!   keyframe, so it never decodes a broken reference chain. [`LagPolicy`] decides when a viewer
//!   that keeps falling behind is disconnected, with a reason.
//! - The GOP cache holds the frames since the last keyframe, so a new viewer starts decoding at once
//!   instead of waiting up to a GOP for the next keyframe.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::packet::{Packet, Sequencer};
use crate::demand::{Demand, DemandLease};
use crate::media::Frame;
use crate::resources::{Counted, Resource, ViewerKind};

/// Frames in the ring: about 5 s of 25 fps video plus its audio.
pub const RING_CAPACITY: usize = 256;
/// Bytes of frame payload the ring holds at most (32 MiB): 5 s of a 50 Mb/s camera, so no real
/// camera reaches it before [`RING_CAPACITY`]; a publisher of 3 MiB pictures does after ~10
/// frames, and the oldest frames then leave the ring (viewers still on them skip, as when the
/// ring laps them). At least the newest frame is always held.
pub const RING_MAX_BYTES: usize = 32 << 20;
/// A viewer with more frames than this waiting for it is behind: it skips to the next keyframe
/// (about 2 s of video with its audio). Smaller than the ring, so a slow viewer resyncs before
/// the ring would lap it.
pub const MAX_BACKLOG: usize = 96;
/// A viewer with more bytes than this waiting for it is behind too (16 MiB: ~2.5 s of a
/// 50 Mb/s camera, half of [`RING_MAX_BYTES`] for the same reason as [`MAX_BACKLOG`]).
pub const MAX_BACKLOG_BYTES: usize = 16 << 20;
/// Bounds for the GOP cache; beyond them the cache is dropped until the next keyframe, so a
/// camera with a very long GOP (or a publisher that sends one keyframe and then only
/// P-frames) costs late joiners a wait, never unbounded memory. 32 MiB: a 10 s GOP of a
/// 25 Mb/s camera; the cache and the ring share their newest frames.
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
    /// Subscriptions of this stream by kind (the process-wide counts are in `resources`).
    kinds: Arc<KindCounts>,
}

struct Inner {
    /// Present while the stream is running. Closing it ends every subscription with
    /// [`ViewerEnd::StreamStopped`].
    ring: Option<Arc<Ring>>,
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
                ring: None,
                gop: Gop::default(),
                sequencer: Sequencer::default(),
            }),
            demand: Demand::new(),
            kinds: Arc::default(),
        }
    }

    /// Opens the ring (the stream started).
    pub fn open(&self) {
        let mut inner = self.inner.lock().unwrap();
        if inner.ring.is_none() {
            inner.ring = Some(Arc::new(Ring::new(RING_CAPACITY, RING_MAX_BYTES)));
        }
    }

    /// Closes the ring and releases the GOP cache (the stream stopped). Subscribers end.
    pub fn close(&self) {
        let mut inner = self.inner.lock().unwrap();
        if let Some(ring) = inner.ring.take() {
            ring.close();
        }
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
        if inner.ring.is_none() {
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
        if let Some(ring) = &inner.ring {
            ring.push(frame);
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
        let receiver = Receiver::new(inner.ring.as_ref()?.clone());
        Some(Subscription {
            pending: inner.gop.frames.iter().cloned().collect(),
            receiver,
            awaiting_keyframe: inner.gop.frames.is_empty(),
            epoch: None,
            policy: LagPolicy::default(),
            dropped_frames: 0,
            _counted: Counted::new(Resource::Viewer(kind)),
            _kind: KindLease::new(&self.kinds, kind),
            _demand: self.demand.lease(),
        })
    }

    /// This stream's subscriptions by kind.
    pub fn subscribers(&self) -> [(ViewerKind, usize); ViewerKind::ALL.len()] {
        ViewerKind::ALL.map(|k| (k, self.kinds.0[k as usize].load(Ordering::Relaxed)))
    }

    /// Viewers (and waiters) that want the source running.
    pub fn demand(&self) -> &Demand {
        &self.demand
    }
}

/// One viewer's view of the stream. Counted as a viewer of its kind while it exists.
pub struct Subscription {
    pending: VecDeque<Arc<Packet>>,
    receiver: Receiver,
    awaiting_keyframe: bool,
    /// The epoch of the last packet handed out.
    epoch: Option<u32>,
    policy: LagPolicy,
    dropped_frames: u64,
    _counted: Counted,
    _kind: KindLease,
    _demand: DemandLease,
}

/// One count per [`ViewerKind`], for one stream.
#[derive(Default)]
struct KindCounts([AtomicUsize; ViewerKind::ALL.len()]);

/// A subscription's place in its stream's [`KindCounts`], given back on drop.
struct KindLease {
    counts: Arc<KindCounts>,
    kind: ViewerKind,
}

impl KindLease {
    fn new(counts: &Arc<KindCounts>, kind: ViewerKind) -> KindLease {
        counts.0[kind as usize].fetch_add(1, Ordering::Relaxed);
        KindLease {
            counts: counts.clone(),
            kind,
        }
    }
}

impl Drop for KindLease {
    fn drop(&mut self) {
        self.counts.0[self.kind as usize].fetch_sub(1, Ordering::Relaxed);
    }
}

impl Subscription {
    /// The next frame for this viewer; the first video frame is always a keyframe.
    pub async fn next(&mut self) -> Result<Arc<Packet>, ViewerEnd> {
        loop {
            if self.pending.is_empty() {
                let (frames, bytes) = self.receiver.backlog();
                if frames > MAX_BACKLOG || bytes > MAX_BACKLOG_BYTES {
                    // Behind the live edge: drop the backlog and wait for the next keyframe.
                    let lost = self.receiver.skip_to_live();
                    self.dropped_frames += lost;
                    self.policy.on_lag(Instant::now(), lost)?;
                    self.awaiting_keyframe = true;
                }
            }
            let frame = match self.pending.pop_front() {
                Some(f) => f,
                None => match self.receiver.recv().await {
                    Recv::Packet(f) => f,
                    Recv::Closed => return Err(ViewerEnd::StreamStopped),
                    Recv::Lagged(lost) => {
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
        !self.pending.is_empty() || self.receiver.ready()
    }

    /// Frames this viewer lost by falling behind.
    pub fn dropped_frames(&self) -> u64 {
        self.dropped_frames
    }
}

/// The ring every viewer of a camera reads: the frames published since the slowest viewer's
/// position, within a budget of frames and bytes. A slot counts the viewers that have yet to
/// read it and lets go of its packet when the last one has, so viewers that keep up cost
/// nothing; the budget only bites for viewers behind, and they find out on their next read
/// ([`Recv::Lagged`]), as with `tokio::sync::broadcast`, which has no byte budget.
struct Ring {
    state: Mutex<RingState>,
    /// Woken on every push and at close.
    pushed: Notify,
}

struct RingState {
    /// Frames from number `first` on.
    slots: VecDeque<Slot>,
    first: u64,
    /// Payload bytes of the slots still holding their packet.
    bytes: usize,
    /// Payload bytes ever pushed: a viewer's backlog in bytes is this minus its slot's `start`.
    pushed_bytes: u64,
    receivers: usize,
    max_frames: usize,
    max_bytes: usize,
    closed: bool,
}

struct Slot {
    /// `None` once every viewer that was attached when it came has read it (or left).
    packet: Option<Arc<Packet>>,
    /// Viewers yet to read it.
    unread: usize,
    /// `pushed_bytes` before it.
    start: u64,
}

/// What a [`Receiver`] found.
enum Recv {
    Packet(Arc<Packet>),
    /// The ring let go of this many frames before this viewer read them.
    Lagged(u64),
    Closed,
}

impl RingState {
    fn end(&self) -> u64 {
        self.first + self.slots.len() as u64
    }

    /// One viewer is done with slot `n`.
    fn release(&mut self, n: u64) {
        let Some(slot) = n
            .checked_sub(self.first)
            .and_then(|i| self.slots.get_mut(i as usize))
        else {
            return;
        };
        slot.unread -= 1;
        if slot.unread == 0 {
            if let Some(p) = slot.packet.take() {
                self.bytes -= p.data.len();
            }
        }
    }

    /// Releases slots `from..end` for a viewer that leaves them unread.
    fn release_from(&mut self, from: u64) {
        for n in from.max(self.first)..self.end() {
            self.release(n);
        }
        self.trim();
    }

    /// Drops leading slots nobody will read (read by all, or over the budget).
    fn trim(&mut self) {
        while let Some(front) = self.slots.front() {
            let over = self.slots.len() > self.max_frames
                || (self.bytes > self.max_bytes && self.slots.len() > 1);
            if front.unread > 0 && !over {
                break;
            }
            if let Some(p) = self.slots.pop_front().and_then(|s| s.packet) {
                self.bytes -= p.data.len();
            }
            self.first += 1;
        }
    }
}

impl Ring {
    fn new(max_frames: usize, max_bytes: usize) -> Ring {
        Ring {
            state: Mutex::new(RingState {
                slots: VecDeque::new(),
                first: 0,
                bytes: 0,
                pushed_bytes: 0,
                receivers: 0,
                max_frames,
                max_bytes,
                closed: false,
            }),
            pushed: Notify::new(),
        }
    }

    /// Adds a frame for every attached viewer; without viewers it is not kept.
    fn push(&self, packet: Arc<Packet>) {
        let mut s = self.state.lock().unwrap();
        if s.closed || s.receivers == 0 {
            return;
        }
        let len = packet.data.len();
        let slot = Slot {
            packet: Some(packet),
            unread: s.receivers,
            start: s.pushed_bytes,
        };
        s.slots.push_back(slot);
        s.bytes += len;
        s.pushed_bytes += len as u64;
        s.trim();
        drop(s);
        self.pushed.notify_waiters();
    }

    /// Lets go of every frame; viewers end at their next read.
    fn close(&self) {
        let mut s = self.state.lock().unwrap();
        s.closed = true;
        s.first = s.end();
        s.slots.clear();
        s.bytes = 0;
        drop(s);
        self.pushed.notify_waiters();
    }
}

/// One viewer's place in the [`Ring`]: the number of the next frame it reads.
struct Receiver {
    ring: Arc<Ring>,
    next: u64,
}

impl Receiver {
    /// Attached at the live edge: it reads frames pushed from now on.
    fn new(ring: Arc<Ring>) -> Receiver {
        let mut s = ring.state.lock().unwrap();
        s.receivers += 1;
        let next = s.end();
        drop(s);
        Receiver { ring, next }
    }

    fn try_recv(&mut self) -> Option<Recv> {
        let mut s = self.ring.state.lock().unwrap();
        if s.closed {
            return Some(Recv::Closed);
        }
        if self.next < s.first {
            let lost = s.first - self.next;
            self.next = s.first;
            return Some(Recv::Lagged(lost));
        }
        let i = (self.next - s.first) as usize;
        let packet = s.slots.get(i)?.packet.clone()?;
        s.release(self.next);
        s.trim();
        self.next += 1;
        Some(Recv::Packet(packet))
    }

    /// The next frame, or why there is none. Cancel-safe: nothing is taken until it returns.
    async fn recv(&mut self) -> Recv {
        loop {
            let ring = self.ring.clone();
            let mut pushed = std::pin::pin!(ring.pushed.notified());
            // Registered before looking, so a push between the look and the wait still wakes.
            pushed.as_mut().enable();
            if let Some(r) = self.try_recv() {
                return r;
            }
            pushed.await;
        }
    }

    /// Frames and payload bytes waiting for this viewer.
    fn backlog(&self) -> (usize, usize) {
        let s = self.ring.state.lock().unwrap();
        let from = self.next.max(s.first);
        let frames = s.end().saturating_sub(self.next) as usize;
        let bytes = match from
            .checked_sub(s.first)
            .and_then(|i| s.slots.get(i as usize))
        {
            Some(slot) => (s.pushed_bytes - slot.start) as usize,
            None => 0,
        };
        (frames, bytes)
    }

    /// Whether `recv` would not wait.
    fn ready(&self) -> bool {
        let s = self.ring.state.lock().unwrap();
        s.closed || self.next < s.end()
    }

    /// Leaves what waits unread and moves to the live edge; returns how many frames it skipped.
    fn skip_to_live(&mut self) -> u64 {
        let mut s = self.ring.state.lock().unwrap();
        s.release_from(self.next);
        let end = s.end();
        let skipped = end.saturating_sub(self.next);
        self.next = end;
        skipped
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut s = self.ring.state.lock().unwrap();
        s.receivers -= 1;
        s.release_from(self.next);
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

    #[test]
    fn subscribers_are_counted_per_stream_by_kind() {
        let count = |f: &FanOut, kind: ViewerKind| {
            f.subscribers()
                .into_iter()
                .find(|(k, _)| *k == kind)
                .map(|(_, n)| n)
        };
        let (a, b) = (FanOut::new(), FanOut::new());
        a.open();
        b.open();
        let recorder = a.subscribe(ViewerKind::Recording).unwrap();
        let viewers = [a.subscribe(ViewerKind::Mse), a.subscribe(ViewerKind::Mse)];
        let other = b.subscribe(ViewerKind::Mse).unwrap();
        assert_eq!(count(&a, ViewerKind::Mse), Some(2));
        assert_eq!(count(&a, ViewerKind::Recording), Some(1));
        assert_eq!(
            count(&b, ViewerKind::Mse),
            Some(1),
            "another stream's viewers"
        );
        drop(viewers);
        assert_eq!(count(&a, ViewerKind::Mse), Some(0));
        drop((recorder, other));
        assert_eq!(count(&a, ViewerKind::Recording), Some(0));
        assert_eq!(count(&b, ViewerKind::Mse), Some(0));
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
    #[test]
    fn gop_cache_is_bounded_in_bytes() {
        let f = FanOut::new();
        f.open();
        // One keyframe, then P-frames only (a publisher that never sends another keyframe).
        f.publish(frame(0, true, 1 << 20));
        for n in 1..=(GOP_MAX_BYTES >> 20) as i64 {
            f.publish(frame(n, false, 1 << 20));
        }
        assert!(f.gop().is_empty(), "overflowed cache is dropped");
    }

    /// The payload bytes the ring holds now.
    fn ring_bytes(f: &FanOut) -> usize {
        let inner = f.inner.lock().unwrap();
        let bytes = inner.ring.as_ref().unwrap().state.lock().unwrap().bytes;
        bytes
    }

    /// Readers the ring itself counts (the API counts subscriptions by kind instead).
    fn ring_receivers(f: &FanOut) -> usize {
        let inner = f.inner.lock().unwrap();
        let receivers = inner.ring.as_ref().unwrap().state.lock().unwrap().receivers;
        receivers
    }

    #[tokio::test]
    async fn the_ring_is_bounded_in_bytes_and_a_viewer_behind_it_skips() {
        let f = FanOut::new();
        f.open();
        let mut stalled = f.subscribe(ViewerKind::Mse).unwrap();
        let big = 3 << 20;
        // Far fewer frames than the ring's capacity, far more bytes than its budget.
        for n in 0..40 {
            f.publish(frame(n, true, big));
            assert!(ring_bytes(&f) <= RING_MAX_BYTES, "{} bytes", ring_bytes(&f));
        }
        assert!(ring_bytes(&f) > RING_MAX_BYTES - big, "the budget is used");
        // The viewer lost what waited for it and resumes at the next keyframe.
        let (first, ()) = tokio::join!(stalled.next(), async {
            tokio::task::yield_now().await;
            f.publish(frame(40, true, big));
        });
        assert_eq!(first.unwrap().pts, 40, "resumed at the live edge");
        assert_eq!(stalled.dropped_frames(), 40);
    }

    #[tokio::test]
    async fn a_backlog_over_its_byte_budget_skips_before_the_ring_laps_it() {
        let f = FanOut::new();
        f.open();
        let mut slow = f.subscribe(ViewerKind::Mse).unwrap();
        let big = 1 << 20;
        let n = (MAX_BACKLOG_BYTES / big) as i64 + 2;
        // Within the ring's budgets, over the viewer's: it skips them all.
        for i in 0..n {
            f.publish(frame(i, true, big));
        }
        // `next` skips the backlog and waits; then a live keyframe comes.
        let (first, ()) = tokio::join!(slow.next(), async {
            tokio::task::yield_now().await;
            f.publish(frame(n, true, big));
        });
        assert_eq!(first.unwrap().pts, n, "resumed at the live edge");
        assert_eq!(slow.dropped_frames(), n as u64);
    }

    #[tokio::test]
    async fn frames_read_by_every_viewer_or_left_by_a_departed_one_are_let_go() {
        let f = FanOut::new();
        f.open();
        let mut a = f.subscribe(ViewerKind::Mse).unwrap();
        let b = f.subscribe(ViewerKind::Mse).unwrap();
        for n in 0..10 {
            f.publish(frame(n, n == 0, 1000));
        }
        assert_eq!(ring_bytes(&f), 10_000);
        for _ in 0..10 {
            a.next().await.unwrap();
        }
        assert_eq!(ring_bytes(&f), 10_000, "b has not read them");
        drop(b);
        assert_eq!(ring_bytes(&f), 0, "nobody will read them");
        assert_eq!(ring_receivers(&f), 1);
        drop(a);
        f.publish(frame(10, true, 1000));
        assert_eq!(ring_bytes(&f), 0, "no viewer: nothing kept");
    }
}
