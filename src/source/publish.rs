//! Cameras that push: a camera whose source is `publish:` takes its frames from whoever publishes
//! to it (RTSP ANNOUNCE/RECORD, WHIP), one publisher at a time.
//!
//! The [`Inlet`] is the meeting point, owned by the camera's stream: a protocol server attaches
//! a publisher ([`Inlet::attach`] → a [`Publication`]), and the stream's publish loop takes its
//! feed ([`Inlet::next`]) and hands the frames on as any source does. The feed is a bounded
//! channel the loop drains with nothing else to wait on; a publisher whose frames the camera
//! cannot take (full: the loop is behind) loses them rather than waiting, so no protocol task
//! ever blocks on the camera. A publication ends when it is dropped, whatever way its
//! connection ended; the camera is then idle again and a new publisher may come.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};

use crate::media::{AudioCodec, Frame};
use crate::resources::{Counted, PublisherKind, Resource};

/// Frames a publisher may be ahead of its camera (about 10 s of 25 fps video with its audio).
const FEED_CAPACITY: usize = 512;

/// How a `publish:` camera treats its publishers (`[publish]` in the config).
#[derive(Clone, PartialEq)]
pub struct PublishRules {
    /// A publisher that sends no media for this long is let go (the camera goes idle).
    pub timeout: Duration,
    /// A new publisher replaces the live one, instead of being refused.
    pub takeover: bool,
    /// The camera's own publish key (`[[camera]] publish_key`).
    pub key: Option<String>,
}

impl std::fmt::Debug for PublishRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is a secret: never in a log.
        f.debug_struct("PublishRules")
            .field("timeout", &self.timeout)
            .field("takeover", &self.takeover)
            .field("key", &self.key.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Default for PublishRules {
    fn default() -> PublishRules {
        PublishRules {
            timeout: Duration::from_secs(10),
            takeover: false,
            key: None,
        }
    }
}

/// What a publisher sends its camera.
#[derive(Debug)]
pub enum Published {
    Audio(Option<AudioCodec>),
    Frame(Frame),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachError {
    /// The camera's source is not `publish:`, or it is stopped.
    NotPublishable,
    /// Another publisher is live on this camera.
    Busy,
}

impl std::fmt::Display for AttachError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AttachError::NotPublishable => "this camera does not take published streams (its source is not publish:, or it is stopped)",
            AttachError::Busy => "another publisher is live on this camera",
        })
    }
}

#[derive(Default)]
pub struct Inlet {
    state: Mutex<InletState>,
    arrived: Notify,
}

#[derive(Default)]
struct InletState {
    /// The camera's publish loop runs and takes publishers.
    open: bool,
    /// A new publisher replaces the live one (`[publish] takeover`).
    takeover: bool,
    /// The camera's publish key.
    key: Option<String>,
    /// A publisher's feed the loop has not taken yet.
    pending: Option<mpsc::Receiver<Published>>,
    /// The live publication's feed, to refuse a second one. Weak, so that it does not keep
    /// the feed open; a feed the camera let go of (the publisher timed out) is not live.
    live: Option<mpsc::WeakSender<Published>>,
}

/// One publisher's hold on its camera; counted in `publishers` while it exists.
pub struct Publication {
    feed: mpsc::Sender<Published>,
    /// Video frames are dropped until the next keyframe (one was lost).
    skipping: AtomicBool,
    _counted: Counted,
}

impl Publication {
    /// Hands the camera a frame; `false` once the camera no longer takes this publisher (it was
    /// stopped, removed, or timed out waiting for media), which ends the publication.
    pub fn publish(&self, frame: Frame) -> bool {
        // Once a video frame was lost (the feed was full), video resumes at a keyframe: the
        // frames in between would not decode, and viewers would show a broken picture.
        let video = frame.is_video();
        if video && frame.keyframe {
            self.skipping.store(false, Ordering::Relaxed);
        } else if video && self.skipping.load(Ordering::Relaxed) {
            return !self.feed.is_closed();
        }
        match self.feed.try_send(Published::Frame(frame)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.skipping.store(true, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    pub fn set_audio(&self, audio: Option<AudioCodec>) -> bool {
        self.send(Published::Audio(audio))
    }

    /// Whether video is being dropped until the next keyframe (a frame was lost): a publisher
    /// that can be asked for one (WHIP) should be.
    pub fn wants_keyframe(&self) -> bool {
        self.skipping.load(Ordering::Relaxed)
    }

    /// The camera let this publisher go (stopped, or no media for its timeout).
    pub fn is_closed(&self) -> bool {
        self.feed.is_closed()
    }

    fn send(&self, item: Published) -> bool {
        match self.feed.try_send(item) {
            Ok(()) => true,
            // Behind: the frame is lost (the camera's viewers skip to the next keyframe).
            Err(mpsc::error::TrySendError::Full(_)) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

impl Inlet {
    /// Attaches a publisher, unless another is live (and the camera does not let a new one
    /// take over) or the camera takes none. A publisher taken over from finds its feed closed.
    pub fn attach(&self, kind: PublisherKind) -> Result<Publication, AttachError> {
        let mut state = self.state.lock().unwrap();
        if !state.open {
            return Err(AttachError::NotPublishable);
        }
        let live = state.live.as_ref().and_then(|w| w.upgrade());
        if !state.takeover && live.is_some_and(|feed| !feed.is_closed()) {
            return Err(AttachError::Busy);
        }
        let (feed, receiver) = mpsc::channel(FEED_CAPACITY);
        state.live = Some(feed.downgrade());
        state.pending = Some(receiver);
        drop(state);
        self.arrived.notify_one();
        Ok(Publication {
            feed,
            skipping: AtomicBool::new(false),
            _counted: Counted::new(Resource::Publisher(kind)),
        })
    }

    /// Whether the camera takes publishers at all (its source is `publish:` and it runs).
    pub fn takes_publishers(&self) -> bool {
        self.state.lock().unwrap().open
    }

    /// The camera takes publishers (its publish loop started) or not (it stopped: a waiting
    /// feed is dropped, which ends its publication).
    pub fn set_open(&self, open: bool) {
        let mut state = self.state.lock().unwrap();
        state.open = open;
        if !open {
            state.pending = None;
        }
    }

    /// Whether a new publisher replaces the live one, and the camera's publish key.
    pub fn set_rules(&self, takeover: bool, key: Option<String>) {
        let mut state = self.state.lock().unwrap();
        state.takeover = takeover;
        state.key = key;
    }

    /// The camera's publish key (see [`publish_secrets`]).
    pub fn key(&self) -> Option<String> {
        self.state.lock().unwrap().key.clone()
    }

    /// Waits for the next publisher's feed.
    pub async fn next(&self) -> mpsc::Receiver<Published> {
        loop {
            let arrived = self.arrived.notified();
            if let Some(feed) = self.state.lock().unwrap().pending.take() {
                return feed;
            }
            arrived.await;
        }
    }
}

/// The secrets any one of which lets a publisher send to a camera whose inlet is `inlet`
/// (`None`: no such camera yet, which `[publish] auto_create` would make): the API token, which
/// opens every camera, and the camera's publish key, which opens that camera alone. Empty: no
/// secret is asked for. Protocols that compute with the secret (RTSP Digest) take the list;
/// the others ask [`may_publish`].
pub fn publish_secrets(token: Option<&str>, inlet: Option<&Inlet>) -> Vec<String> {
    token
        .map(str::to_string)
        .into_iter()
        .chain(inlet.and_then(Inlet::key))
        .collect()
}

/// Whether a publisher that gave `given` (a Bearer, a `?token=`) may send to a camera whose
/// inlet is `inlet`: one of its [`publish_secrets`], or none asked for.
pub fn may_publish(token: Option<&str>, inlet: Option<&Inlet>, given: Option<&str>) -> bool {
    let secrets = publish_secrets(token, inlet);
    if secrets.is_empty() {
        return true;
    }
    let Some(given) = given else {
        return false;
    };
    // Every secret is compared, so the time does not tell which one was close.
    secrets.iter().fold(false, |ok, s| {
        ok | crate::common::constant_time_eq(s.as_bytes(), given.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_opens_every_camera_and_a_key_its_own() {
        let open = Inlet::default();
        let keyed = Inlet::default();
        keyed.set_rules(false, Some("camera-key".into()));
        // Nothing configured: nothing asked.
        assert!(may_publish(None, Some(&open), None));
        assert!(may_publish(None, None, None));
        // A key: asked for even without a token, and only that key opens.
        assert!(!may_publish(None, Some(&keyed), None));
        assert!(!may_publish(None, Some(&keyed), Some("wrong")));
        assert!(may_publish(None, Some(&keyed), Some("camera-key")));
        // A token: it opens every camera; a key opens its camera only.
        assert!(may_publish(Some("tok"), Some(&keyed), Some("tok")));
        assert!(may_publish(Some("tok"), Some(&keyed), Some("camera-key")));
        assert!(!may_publish(Some("tok"), Some(&open), Some("camera-key")));
        assert!(!may_publish(Some("tok"), None, None));
        // The list RTSP checks Digest against: the same secrets.
        assert!(publish_secrets(None, Some(&open)).is_empty());
        assert_eq!(publish_secrets(None, Some(&keyed)), ["camera-key"]);
        assert_eq!(publish_secrets(Some("tok"), None), ["tok"]);
        assert_eq!(
            publish_secrets(Some("tok"), Some(&keyed)),
            ["tok", "camera-key"]
        );
    }

    #[tokio::test]
    async fn with_takeover_a_new_publisher_replaces_the_live_one() {
        let inlet = Inlet::default();
        inlet.set_open(true);
        inlet.set_rules(true, None);
        let first = inlet.attach(PublisherKind::Rtsp).unwrap();
        let first_feed = inlet.next().await;
        let second = inlet.attach(PublisherKind::Whip).expect("takes over");
        // The camera's loop takes the new feed and lets the old one go.
        let second_feed = inlet.next().await;
        drop(first_feed);
        assert!(first.is_closed());
        assert!(!second.is_closed());
        drop(second_feed);
        assert!(second.is_closed());
    }

    #[tokio::test]
    async fn one_publisher_at_a_time_and_only_while_open() {
        let inlet = Inlet::default();
        assert_eq!(
            inlet.attach(PublisherKind::Rtsp).err(),
            Some(AttachError::NotPublishable)
        );
        inlet.set_open(true);
        let first = inlet.attach(PublisherKind::Rtsp).unwrap();
        assert_eq!(
            inlet.attach(PublisherKind::Rtsp).err(),
            Some(AttachError::Busy)
        );
        let mut feed = inlet.next().await;
        assert!(first.set_audio(None));
        assert!(matches!(feed.recv().await, Some(Published::Audio(None))));
        drop(first);
        assert!(
            feed.recv().await.is_none(),
            "the feed ends with its publication"
        );
        let second = inlet.attach(PublisherKind::Rtsp).expect("free again");
        // The camera stops: the waiting feed goes, and the publisher is told.
        inlet.set_open(false);
        assert!(!second.set_audio(None));
        assert_eq!(
            inlet.attach(PublisherKind::Rtsp).err(),
            Some(AttachError::NotPublishable)
        );
    }

    #[tokio::test]
    async fn a_publisher_the_camera_let_go_of_does_not_hold_it() {
        // A squatter: attached, then silent until the camera's timeout dropped its feed.
        let inlet = Inlet::default();
        inlet.set_open(true);
        let squatter = inlet.attach(PublisherKind::Rtsp).unwrap();
        drop(inlet.next().await);
        assert!(squatter.is_closed());
        let next = inlet
            .attach(PublisherKind::Rtsp)
            .expect("the camera is free for the next publisher");
        assert!(!next.is_closed());
    }

    #[tokio::test]
    async fn a_full_feed_loses_frames_and_never_waits() {
        let inlet = Inlet::default();
        inlet.set_open(true);
        let p = inlet.attach(PublisherKind::Rtsp).unwrap();
        let _feed = inlet.next().await;
        for _ in 0..FEED_CAPACITY * 2 {
            assert!(p.set_audio(None));
        }
    }

    fn video(keyframe: bool) -> Frame {
        Frame {
            track: crate::media::TrackKind::Video,
            pts: 0,
            dts: 0,
            keyframe,
            capture_time_us: None,
            video_codec: None,
            data: bytes::Bytes::from_static(&[0, 0, 0, 1, 0x41]),
        }
    }

    #[tokio::test]
    async fn after_a_lost_frame_video_resumes_at_a_keyframe() {
        let inlet = Inlet::default();
        inlet.set_open(true);
        let p = inlet.attach(PublisherKind::Rtsp).unwrap();
        let mut feed = inlet.next().await;
        assert!(p.publish(video(true)));
        for _ in 1..FEED_CAPACITY {
            assert!(p.publish(video(false)));
        }
        // Full: this one is lost, and so is every following frame until a keyframe.
        assert!(p.publish(video(false)));
        while feed.try_recv().is_ok() {}
        assert!(p.publish(video(false)));
        assert!(
            feed.try_recv().is_err(),
            "a frame after the loss went through"
        );
        assert!(p.publish(Frame::audio(0, bytes::Bytes::from_static(&[1]))));
        assert!(p.publish(video(true)));
        assert!(p.publish(video(false)));
        let kinds: Vec<(bool, bool)> = std::iter::from_fn(|| feed.try_recv().ok())
            .map(|item| match item {
                Published::Frame(f) => (f.is_video(), f.keyframe),
                Published::Audio(_) => unreachable!(),
            })
            .collect();
        assert_eq!(kinds, [(false, true), (true, true), (true, false)]);
    }
}
