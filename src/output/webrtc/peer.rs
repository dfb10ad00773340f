//! One WebRTC peer: its str0m `Rtc`, the media it was negotiated, and its feed of frames (a
//! viewer), or its hold on the camera it sends to (a WHIP publisher, [`Publishing`]).
//!
//! Everything here is synchronous: a worker loop calls these methods with what arrived (a
//! datagram, a frame, the time) and sends what they return. A peer's frames come from its
//! [`Feed`], a stream the worker loop polls among all its peers' feeds; nothing a peer owns
//! ever waits on the loop, so the loop can never wait on itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{AbortHandle, Abortable, BoxStream};
use futures_util::StreamExt;
use str0m::format::PayloadParams;
use str0m::media::{MediaKind, Mid, Pt};
use str0m::net::Transmit;
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Event, IceConnectionState, Input, Output, Rtc, RtcError};
use tokio::sync::broadcast;

use super::codec;
use super::end::EndReason;
use super::publisher::{self, Publishing};
use super::route::SessionId;
use super::rtptime::RtpTimes;
use super::sdpfrag::PatchError;
use super::transcode::{TranscoderLease, Transcoders};
use crate::hub::{Packet, Stream, Subscription};
use crate::media::Frame;
use crate::output::rtp::video_payloads;
use crate::resources::{Counted, Resource, ViewerKind};

/// A peer whose ICE stays disconnected this long is removed.
pub const ICE_DISCONNECTED_LIMIT: Duration = Duration::from_secs(10);
/// A peer that never connects (the browser went away mid-offer) is removed after this long.
pub const CONNECT_LIMIT: Duration = Duration::from_secs(10);
/// A connected peer that sends nothing for this long is gone (a killed tab, a lost network): a
/// browser sends RTCP reports about every second and STUN consent checks every few seconds, so
/// silence this long is no hiccup. Without this, ICE alone takes ~25 s to give up.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(8);
/// At most one feed restart per this long for a browser's keyframe requests (PLI/FIR).
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_secs(1);

/// What a peer's feed yields.
pub enum Media {
    /// The camera's own frame (video, and audio that passes through as it is).
    Camera(Arc<Packet>),
    /// An Opus packet from the camera's transcoder.
    Transcoded(Frame),
    /// The subscription ended (camera stopped, viewer too slow): the last item of a feed.
    Ended,
}

/// A feed as the worker loop polls it: frames tagged with their session.
pub type FeedStream = BoxStream<'static, (SessionId, Media)>;

pub struct Peer {
    pub session: SessionId,
    pub camera: Arc<Stream>,
    pub rtc: Rtc,
    video: Option<(Mid, Pt)>,
    audio: Option<PeerAudio>,
    last_keyframe_request: Option<Instant>,
    connected: bool,
    /// ICE has connected at least once (tells an ICE timeout from a DTLS one).
    ice_connected: bool,
    /// Why the peer is ending, once known (the first cause noted wins).
    end_reason: Option<EndReason>,
    created: Instant,
    disconnected_since: Option<Instant>,
    /// When the last datagram from the browser arrived.
    last_heard: Instant,
    /// Ends the running feed (its subscription is dropped when the loop next polls it).
    feed: Option<AbortHandle>,
    /// When str0m next wants `Input::Timeout`.
    pub deadline: Instant,
    /// The next RTP sequence numbers (str0m's RTP mode leaves them to us).
    video_seq: u64,
    audio_seq: u64,
    /// RTP's marker bit on audio starts a talkspurt: the first packet only.
    audio_marker: bool,
    /// RTP times that never go back across feed restarts, and the sender reports' wallclock.
    times: RtpTimes,
    /// Set for a WHIP publisher, which sends to its camera instead of watching it.
    publishing: Option<Box<Publishing>>,
    /// The remote's ICE ufrag from its offer: a PATCH with another one is an ICE restart.
    remote_ufrag: Option<String>,
    _counted: Counted,
}

#[derive(Clone, Copy)]
struct PeerAudio {
    mid: Mid,
    pt: Pt,
    /// The camera's audio goes through its transcoder (AAC → Opus) rather than as it is.
    transcoded: bool,
}

impl Peer {
    /// `rtc` must be in RTP mode: frames are packetized once per camera, not once per peer.
    /// `seq` seeds the sequence numbers (random, as RFC 3550 asks).
    pub fn new(session: SessionId, camera: Arc<Stream>, rtc: Rtc, now: Instant, seq: u16) -> Peer {
        Peer {
            session,
            camera,
            rtc,
            video: None,
            audio: None,
            last_keyframe_request: None,
            connected: false,
            ice_connected: false,
            end_reason: None,
            created: now,
            disconnected_since: None,
            last_heard: now,
            feed: None,
            deadline: now,
            video_seq: seq as u64,
            audio_seq: seq.wrapping_mul(7) as u64,
            audio_marker: true,
            times: RtpTimes::default(),
            publishing: None,
            remote_ufrag: None,
            _counted: Counted::new(Resource::PeerConnection),
        }
    }

    /// A WHIP publisher sending to `camera` through `publishing`.
    pub fn publisher(
        session: SessionId,
        camera: Arc<Stream>,
        rtc: Rtc,
        now: Instant,
        publishing: Publishing,
    ) -> Peer {
        let mut peer = Peer::new(session, camera, rtc, now, 0);
        peer.publishing = Some(Box::new(publishing));
        peer
    }

    /// Polls str0m until `Timeout`: datagrams go to `transmits`, and events are acted on. A
    /// returned feed replaces the peer's old one (the loop starts polling it).
    pub fn drain(
        &mut self,
        transmits: &mut Vec<Transmit>,
        transcoders: &Arc<Transcoders>,
    ) -> Result<Option<FeedStream>, RtcError> {
        let mut feed = None;
        while self.rtc.is_alive() {
            match self.rtc.poll_output()? {
                Output::Transmit(t) => transmits.push(t),
                Output::Timeout(t) => {
                    let keyframe = self.publishing.as_ref().and_then(|p| p.next_wake());
                    self.deadline = keyframe.map_or(t, |k| k.min(t));
                    break;
                }
                Output::Event(e) => {
                    if self.on_event(e) {
                        feed = Some(self.start_feed(transcoders));
                    }
                }
            }
        }
        Ok(feed.flatten())
    }

    /// Feeds `Input::Timeout(now)`: str0m sends what was written and runs its timers on it.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), RtcError> {
        if let Some(mid) = self.publishing.as_mut().and_then(|p| p.keyframe_due(now)) {
            publisher::request_keyframe(&mut self.rtc, mid);
        }
        self.rtc.handle_input(Input::Timeout(now))
    }

    /// The remote's ICE ufrag, as its offer gave it.
    pub fn set_remote_ufrag(&mut self, ufrag: Option<String>) {
        self.remote_ufrag = ufrag;
    }

    pub fn remote_ufrag(&self) -> Option<&str> {
        self.remote_ufrag.as_deref()
    }

    /// Trickled remote candidates (`candidate:…` values): all are applied, or none when one
    /// does not parse. Returns how many were applied.
    pub fn trickle(&mut self, candidates: &[String]) -> Result<usize, PatchError> {
        let parsed = candidates
            .iter()
            .map(|c| {
                str0m::Candidate::from_sdp_string(c)
                    .map_err(|e| PatchError::Malformed(format!("candidate {c:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let n = parsed.len();
        for c in parsed {
            self.rtc.add_remote_candidate(c);
        }
        Ok(n)
    }

    /// A datagram from the browser arrived.
    pub fn heard(&mut self, now: Instant) {
        self.last_heard = now;
    }

    /// Why the peer should be removed now, if it should: it closed, never connected, went
    /// silent, or lost ICE for too long.
    pub fn expiry(&self, now: Instant) -> Option<EndReason> {
        if !self.rtc.is_alive() {
            return Some(self.end_reason.clone().unwrap_or(EndReason::Closed));
        }
        if self.publishing.as_ref().is_some_and(|p| p.is_closed()) {
            return Some(EndReason::PublisherReleased);
        }
        if !self.connected && now.duration_since(self.created) > CONNECT_LIMIT {
            return Some(if self.ice_connected {
                EndReason::DtlsNeverConnected(CONNECT_LIMIT)
            } else {
                EndReason::IceNeverConnected(CONNECT_LIMIT)
            });
        }
        if self.connected && now.duration_since(self.last_heard) > SILENCE_LIMIT {
            return Some(EndReason::Silent(SILENCE_LIMIT));
        }
        if self
            .disconnected_since
            .is_some_and(|t| now.duration_since(t) > ICE_DISCONNECTED_LIMIT)
        {
            return Some(EndReason::IceDisconnected(ICE_DISCONNECTED_LIMIT));
        }
        None
    }

    /// Notes why the peer is ending; a cause noted earlier is kept.
    pub fn note_end(&mut self, reason: EndReason) {
        self.end_reason.get_or_insert(reason);
    }

    /// The cause noted for the peer's end (str0m closed it without one: [`EndReason::Closed`]).
    pub fn end_reason(&self) -> EndReason {
        self.end_reason.clone().unwrap_or(EndReason::Closed)
    }

    /// A WHIP publisher rather than a viewer.
    pub fn is_publisher(&self) -> bool {
        self.publishing.is_some()
    }

    /// Acts on one str0m event; true when the feed must (re)start.
    fn on_event(&mut self, event: Event) -> bool {
        if let Some(publishing) = self.publishing.as_mut() {
            match event {
                Event::RtpPacket(packet) => {
                    if !publishing.packet(&packet) {
                        // The camera let this publisher go (stopped, or timed out).
                        self.end_reason.get_or_insert(EndReason::PublisherReleased);
                        self.rtc.disconnect();
                    }
                    return false;
                }
                Event::MediaAdded(m) => {
                    let params = payload_params(&self.rtc, m.mid);
                    publishing.media_added(m.mid, m.kind, &params);
                    return false;
                }
                Event::Connected => {
                    self.connected = true;
                    publishing.connected(Instant::now());
                    return false;
                }
                // A publisher has no feed: nothing else it says starts one.
                Event::KeyframeRequest(_) => return false,
                _ => {}
            }
        }
        match event {
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.disconnected_since.get_or_insert_with(Instant::now);
                false
            }
            Event::IceConnectionStateChange(state) => {
                if matches!(
                    state,
                    IceConnectionState::Connected | IceConnectionState::Completed
                ) {
                    self.ice_connected = true;
                }
                self.disconnected_since = None;
                false
            }
            // close_notify from the remote: str0m is no longer alive after this.
            Event::Closed => {
                self.end_reason.get_or_insert(EndReason::ClosedByPeer);
                false
            }
            Event::MediaAdded(m) if m.kind == MediaKind::Video => {
                let video = self.camera.view().video;
                let params = payload_params(&self.rtc, m.mid);
                let pt = match video.as_deref() {
                    Some(v) if v.codec == "h265" => codec::choose_h265(params.iter()),
                    v => {
                        let profile = v.and_then(|v| {
                            v.parameter_sets
                                .first()
                                .and_then(|s| codec::H264Profile::of_sps(s))
                        });
                        codec::choose_h264(params.iter(), profile).or_else(|| {
                            // The offer had a payload type that decodes the camera (else
                            // it was refused), but str0m did not answer it: send as before.
                            tracing::warn!(
                                camera = self.camera.id(),
                                "WebRTC: no answered H.264 payload type decodes the camera's \
                                 profile; sending under the first one"
                            );
                            codec::choose_h264(params.iter(), None)
                        })
                    }
                };
                if let Some(pt) = pt {
                    self.video = Some((m.mid, pt));
                }
                false
            }
            Event::MediaAdded(m) if m.kind == MediaKind::Audio => {
                let Some(a) = self.camera.audio() else {
                    return false;
                };
                let params = payload_params(&self.rtc, m.mid);
                if let Some(pt) = codec::choose_audio(params.iter(), a.codec) {
                    self.audio = Some(PeerAudio {
                        mid: m.mid,
                        pt,
                        transcoded: false,
                    });
                } else if let Some(pt) = codec::choose_transcoded(params.iter()) {
                    self.audio = Some(PeerAudio {
                        mid: m.mid,
                        pt,
                        transcoded: true,
                    });
                } else {
                    tracing::info!(
                        camera = self.camera.id(),
                        "WebRTC: {} audio is not sent (video only)",
                        a.codec
                    );
                }
                // str0m can announce media after ICE/DTLS connected: the running feed carries
                // no audio yet, so it is replaced by one that does.
                self.connected && self.audio.is_some()
            }
            // A PLI/FIR: the browser lost its reference. Restart the feed, which begins with
            // the cached GOP (a keyframe), at most once a second.
            Event::KeyframeRequest(_)
                if self.connected
                    && self
                        .last_keyframe_request
                        .is_none_or(|t| t.elapsed() > KEYFRAME_REQUEST_INTERVAL) =>
            {
                self.last_keyframe_request = Some(Instant::now());
                true
            }
            // Subscribe now, so the cached GOP goes out the moment media can flow.
            Event::Connected => {
                self.connected = true;
                true
            }
            _ => false,
        }
    }

    /// A new feed from the camera (its GOP first), ending the old one. `None` when the camera
    /// is not running.
    fn start_feed(&mut self, transcoders: &Arc<Transcoders>) -> Option<FeedStream> {
        self.end_feed();
        let subscription = self.camera.subscribe(ViewerKind::Webrtc)?;
        let transcoded = match self.audio {
            Some(a) if a.transcoded => Some(transcoders.acquire(&self.camera)),
            _ => None,
        };
        let feed = Feed {
            subscription,
            ended: false,
            // The camera's own audio goes out only when it passes through as it is: not before
            // the audio m-line is known, and not when the transcoder replaces it.
            camera_audio: self.audio.is_some_and(|a| !a.transcoded),
            transcoded,
        };
        let (abort, registration) = AbortHandle::new_pair();
        self.feed = Some(abort);
        let session = self.session.clone();
        let stream = futures_util::stream::unfold(feed, |mut feed| async move {
            let media = feed.next().await?;
            Some((media, feed))
        })
        .map(move |media| (session.clone(), media));
        Some(Abortable::new(stream, registration).boxed())
    }

    /// Ends the feed: its subscription (and transcoder lease) go when the loop next polls it.
    pub fn end_feed(&mut self) {
        if let Some(abort) = self.feed.take() {
            abort.abort();
        }
    }

    /// Hands one frame to str0m as RTP packets (sent on the next timeout).
    pub fn write(&mut self, media: &Media, now: Instant) {
        match media {
            Media::Camera(p) if p.is_video() => self.write_video(p, now),
            // Opus and G.711 frames (the camera's, or its transcoder's) are RTP payloads already.
            Media::Camera(p) => self.write_audio(&p.frame, Some(p.sequence), now),
            Media::Transcoded(f) => self.write_audio(f, None, now),
            Media::Ended => {}
        }
    }

    fn write_audio(&mut self, frame: &Frame, sequence: Option<u32>, now: Instant) {
        let Some(a) = self.audio else { return };
        let mut api = self.rtc.direct_api();
        let Some(stream) = api.stream_tx_by_mid(a.mid, None) else {
            return;
        };
        // Audio timestamps are in the codec's clock, as RTP wants them.
        let rate = match a.transcoded {
            true => crate::media::opus::RATE,
            false => self.camera.audio().map_or(48_000, |c| c.sample_rate),
        };
        let Some((time, wallclock)) = self.times.audio(sequence, frame.pts, rate, now) else {
            return;
        };
        let payload: Arc<[u8]> = Arc::from(&frame.data[..]);
        stream.write_rtp(
            RtpWrite::new(a.pt, SeqNo::from(self.audio_seq), time, wallclock, payload)
                .marker(std::mem::take(&mut self.audio_marker))
                .nackable(false),
        );
        self.audio_seq += 1;
    }

    fn write_video(&mut self, packet: &Packet, now: Instant) {
        let Some((mid, pt)) = self.video else { return };
        // Packetized once per frame for every peer; each peer takes reference counts.
        let payloads = packet.rtp(video_payloads);
        let mut api = self.rtc.direct_api();
        let Some(stream) = api.stream_tx_by_mid(mid, None) else {
            return;
        };
        let (time, wallclock) = self.times.video(packet.sequence, packet.pts, now);
        let last = payloads.len().saturating_sub(1);
        for (i, payload) in payloads.iter().enumerate() {
            stream.write_rtp(
                RtpWrite::new(
                    pt,
                    SeqNo::from(self.video_seq),
                    time,
                    wallclock,
                    payload.clone(),
                )
                .marker(i == last)
                .nackable(true),
            );
            self.video_seq += 1;
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.end_feed();
    }
}

/// The payload types a media line of the remote's offer accepts.
fn payload_params(rtc: &Rtc, mid: Mid) -> Vec<PayloadParams> {
    let Some(media) = rtc.media(mid) else {
        return Vec::new();
    };
    rtc.codec_config()
        .params()
        .iter()
        .filter(|p| media.remote_pts().contains(&p.pt()))
        .cloned()
        .collect()
}

/// One peer's frames: its hub subscription (video, and the camera's audio when it passes
/// through) merged with its camera's transcoded audio.
struct Feed {
    subscription: Subscription,
    ended: bool,
    camera_audio: bool,
    transcoded: Option<(broadcast::Receiver<Frame>, TranscoderLease)>,
}

impl Feed {
    async fn next(&mut self) -> Option<Media> {
        if self.ended {
            return None;
        }
        loop {
            tokio::select! {
                p = self.subscription.next() => match p {
                    Ok(p) if !self.camera_audio && !p.is_video() => continue,
                    Ok(p) => return Some(Media::Camera(p)),
                    Err(_) => {
                        self.ended = true;
                        return Some(Media::Ended);
                    }
                },
                Some(f) = next_transcoded(&mut self.transcoded) => return Some(Media::Transcoded(f)),
            }
        }
    }
}

/// The next transcoded audio frame; never ready without a transcoder, or once it has gone.
/// A peer that fell behind skips what it missed.
async fn next_transcoded(
    rx: &mut Option<(broadcast::Receiver<Frame>, TranscoderLease)>,
) -> Option<Frame> {
    loop {
        let Some((r, _)) = rx.as_mut() else {
            return std::future::pending().await;
        };
        match r.recv().await {
            Ok(f) => return Some(f),
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => *rx = None,
        }
    }
}
