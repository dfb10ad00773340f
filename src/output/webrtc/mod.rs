//! WebRTC output on str0m (sans-IO): ICE-lite, one UDP port for every peer, H.264 passthrough.
//!
//! Ownership: one task owns every `Rtc` (str0m's chat-example shape) and drives each one to
//! `Timeout` after every input. UDP sockets (one per advertised address, all on the same port)
//! are read by reader tasks owned by that loop. A peer starts a frame forwarder (its hub
//! subscription) once ICE/DTLS connects, so the cached GOP arrives at once; the loop joins the
//! forwarder when the peer goes. Every peer is counted in `peer_connections` while it exists.
//! AAC audio reaches browsers through one [`transcode::Transcoder`] per camera, shared by its
//! peers and owned by the same loop.

pub mod codec;
pub mod transcode;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::SdpOffer;
use str0m::media::{Frequency, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::hub::Camera;
use crate::media::{h264, Frame, VideoCodec};
use crate::resources::{spawn_task, Counted, Resource, ViewerKind};
use transcode::Transcoder;

/// A peer whose ICE stays disconnected this long is removed.
const ICE_DISCONNECTED_LIMIT: Duration = Duration::from_secs(10);
/// A peer that never connects (the browser went away mid-offer) is removed after this long.
const CONNECT_LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub enum OfferError {
    /// The body is not an SDP offer (400).
    Malformed(String),
    /// No offered codec matches the camera (422).
    NoCodec(String),
    /// WebRTC is not running (503).
    Unavailable(String),
}

impl std::fmt::Display for OfferError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OfferError::Malformed(m) | OfferError::NoCodec(m) | OfferError::Unavailable(m) => {
                f.write_str(m)
            }
        }
    }
}

enum Command {
    Add(Box<Peer>),
    Remove {
        session: String,
        reply: oneshot::Sender<bool>,
    },
    RemoveCamera {
        camera: String,
        reply: oneshot::Sender<()>,
    },
}

struct Peer {
    session: String,
    camera: Arc<Camera>,
    rtc: Rtc,
    video: Option<(Mid, Pt)>,
    /// Where and how the camera's audio is sent, when it can be.
    audio: Option<PeerAudio>,
    last_keyframe_request: Option<Instant>,
    connected: bool,
    created: Instant,
    disconnected_since: Option<Instant>,
    forwarder: Option<(CancellationToken, JoinHandle<()>)>,
    /// Forwarders replaced after a keyframe request, joined when the peer ends.
    old_forwarders: Vec<JoinHandle<()>>,
    /// The description whose parameter sets were last sent.
    sent_codec: Option<Arc<VideoCodec>>,
    _counted: Counted,
}

#[derive(Clone, Copy)]
struct PeerAudio {
    mid: Mid,
    pt: Pt,
    clock: Frequency,
    /// The camera's audio goes through its transcoder (AAC → Opus) rather than as it is.
    transcoded: bool,
}

/// The transcoders of the cameras whose peers want transcoded audio, by camera id.
type Transcoders = HashMap<String, Transcoder>;

/// Handle to the WebRTC task.
pub struct WebRtc {
    commands: mpsc::Sender<Command>,
    candidates: Vec<SocketAddr>,
    task: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    cancel: CancellationToken,
}

static SESSION_COUNTER: AtomicU64 = AtomicU64::new(1);

impl WebRtc {
    /// Binds `listen` (on every candidate address when it is a wildcard) and starts the task.
    /// When the port is taken, an ephemeral port is used instead, with a warning.
    pub async fn start(listen: SocketAddr, extra: &[IpAddr]) -> std::io::Result<WebRtc> {
        str0m::crypto::from_feature_flags().install_process_default();
        let ips: Vec<IpAddr> = if listen.ip().is_unspecified() {
            let mut ips = local_ipv4_addresses();
            ips.extend(extra.iter().copied());
            ips.dedup();
            ips
        } else {
            vec![listen.ip()]
        };
        let mut port = listen.port();
        let mut sockets = Vec::new();
        for ip in &ips {
            let addr = SocketAddr::new(*ip, port);
            let socket = match UdpSocket::bind(addr).await {
                Ok(s) => s,
                Err(e) if sockets.is_empty() && port != 0 => {
                    tracing::warn!(%addr, "WebRTC port unavailable ({e}); using a free port");
                    UdpSocket::bind(SocketAddr::new(*ip, 0)).await?
                }
                Err(e) => return Err(e),
            };
            port = socket.local_addr()?.port();
            sockets.push(Arc::new(socket));
        }
        let candidates: Vec<SocketAddr> =
            sockets.iter().filter_map(|s| s.local_addr().ok()).collect();
        tracing::info!(?candidates, "WebRTC listening");
        let (tx, rx) = mpsc::channel(64);
        let cancel = CancellationToken::new();
        let task = spawn_task(run(sockets, rx, cancel.clone()));
        Ok(WebRtc {
            commands: tx,
            candidates,
            task: tokio::sync::Mutex::new(Some(task)),
            cancel,
        })
    }

    pub fn candidates(&self) -> &[SocketAddr] {
        &self.candidates
    }

    /// Accepts an SDP offer for `camera`; returns the session id and the SDP answer.
    pub async fn offer(
        &self,
        camera: Arc<Camera>,
        sdp: &str,
    ) -> Result<(String, String), OfferError> {
        let offer = SdpOffer::from_sdp_string(sdp)
            .map_err(|e| OfferError::Malformed(format!("not an SDP offer: {e}")))?;
        let offered = codec::offered_video(sdp);
        let sends = camera
            .stream
            .view()
            .video
            .map_or("H264".to_string(), |v| v.codec.to_uppercase());
        if !offered.contains(&sends) {
            return Err(OfferError::NoCodec(format!(
                "no offered video codec matches the camera: the offer has [{}], camera {:?} sends {sends}",
                offered.join(", "),
                camera.id(),
            )));
        }
        let mut rtc = Rtc::builder()
            .set_ice_lite(true)
            .clear_codecs()
            .enable_h264(true)
            .enable_h265(true)
            .enable_opus(true, false)
            .enable_pcma(true, false)
            .enable_pcmu(true, false)
            .build(Instant::now());
        for addr in &self.candidates {
            if let Ok(c) = Candidate::host(*addr, "udp") {
                let _ = rtc.add_local_candidate(c);
            }
        }
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| OfferError::Malformed(format!("the offer cannot be answered: {e}")))?;
        let session = format!(
            "{:016x}",
            SESSION_COUNTER.fetch_add(1, Ordering::Relaxed) ^ 0x5bd1_e995_0000_0000
        );
        let peer = Peer {
            session: session.clone(),
            camera,
            rtc,
            video: None,
            audio: None,
            last_keyframe_request: None,
            connected: false,
            created: Instant::now(),
            disconnected_since: None,
            forwarder: None,
            old_forwarders: Vec::new(),
            sent_codec: None,
            _counted: Counted::new(Resource::PeerConnection),
        };
        self.commands
            .send(Command::Add(Box::new(peer)))
            .await
            .map_err(|_| OfferError::Unavailable("WebRTC is shutting down".into()))?;
        Ok((session, answer.to_sdp_string()))
    }

    /// Ends a session at once (WHEP DELETE). False when there is no such session.
    pub async fn remove(&self, session: &str) -> bool {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Remove {
            session: session.to_string(),
            reply,
        };
        self.commands.send(cmd).await.is_ok() && rx.await.unwrap_or(false)
    }

    /// Ends every session of a camera (it was stopped or deleted).
    pub async fn remove_camera(&self, camera: &str) {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::RemoveCamera {
            camera: camera.to_string(),
            reply,
        };
        if self.commands.send(cmd).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Stops the task and every peer, and waits for them.
    pub async fn stop(&self) {
        self.cancel.cancel();
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
    }
}

/// IPv4 addresses of the up interfaces, loopback included (for local use).
fn local_ipv4_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    // SAFETY: getifaddrs fills a list we walk read-only and free with freeifaddrs.
    unsafe {
        let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut ifap) != 0 {
            return vec![IpAddr::from([127, 0, 0, 1])];
        }
        let mut cur = ifap;
        while !cur.is_null() {
            let ifa = &*cur;
            if !ifa.ifa_addr.is_null()
                && (*ifa.ifa_addr).sa_family as i32 == libc::AF_INET
                && ifa.ifa_flags & libc::IFF_UP as u32 != 0
            {
                let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                out.push(IpAddr::from(
                    u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                ));
            }
            cur = ifa.ifa_next;
        }
        libc::freeifaddrs(ifap);
    }
    out.sort();
    out.dedup();
    out
}

struct Datagram {
    data: Vec<u8>,
    source: SocketAddr,
    destination: SocketAddr,
}

async fn read_socket(
    socket: Arc<UdpSocket>,
    tx: mpsc::Sender<Datagram>,
    cancel: CancellationToken,
) {
    let Ok(destination) = socket.local_addr() else {
        return;
    };
    let mut buf = vec![0u8; 2000];
    loop {
        let (n, source) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(v) => v,
                Err(_) => continue,
            },
        };
        let d = Datagram {
            data: buf[..n].to_vec(),
            source,
            destination,
        };
        if tx.send(d).await.is_err() {
            return;
        }
    }
}

async fn run(
    sockets: Vec<Arc<UdpSocket>>,
    mut commands: mpsc::Receiver<Command>,
    cancel: CancellationToken,
) {
    // Fault injection for tests: behave as if a firewall dropped every incoming datagram.
    let drop_input = std::env::var_os("LIVELENS_TEST_DROP_WEBRTC_INPUT").is_some();
    let (dgram_tx, mut dgrams) = mpsc::channel::<Datagram>(1024);
    let readers: Vec<JoinHandle<()>> = sockets
        .iter()
        .map(|s| spawn_task(read_socket(s.clone(), dgram_tx.clone(), cancel.clone())))
        .collect();
    drop(dgram_tx);
    let (frames_tx, mut frames) = mpsc::channel::<(String, Frame)>(1024);
    let mut peers: HashMap<String, Peer> = HashMap::new();
    let mut transcoders = Transcoders::new();
    loop {
        // Drive every peer to its next timeout; a peer that panics is dropped, not the loop.
        let mut next = Instant::now() + Duration::from_millis(100);
        let mut dead = Vec::new();
        for peer in peers.values_mut() {
            let out = std::panic::catch_unwind(AssertUnwindSafe(|| drain(peer)));
            match out {
                Ok(Ok((transmits, t, events))) => {
                    next = next.min(t);
                    for (dest, src, data) in transmits {
                        if let Some(s) = sockets.iter().find(|s| s.local_addr().ok() == Some(src)) {
                            let _ = s.try_send_to(&data, dest);
                        }
                    }
                    for e in events {
                        on_event(peer, e, &frames_tx, &mut transcoders);
                    }
                }
                _ => peer.rtc.disconnect(),
            }
            let never_connected = !peer.connected && peer.created.elapsed() > CONNECT_LIMIT;
            if never_connected
                || peer
                    .disconnected_since
                    .is_some_and(|t| t.elapsed() > ICE_DISCONNECTED_LIMIT)
            {
                peer.rtc.disconnect();
            }
            if !peer.rtc.is_alive() {
                dead.push(peer.session.clone());
            }
        }
        let any_dead = !dead.is_empty();
        for session in dead {
            if let Some(peer) = peers.remove(&session) {
                end_peer(peer).await;
            }
        }
        if any_dead {
            stop_unused_transcoders(&peers, &mut transcoders).await;
        }
        let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(next));
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = sleep => {
                let now = Instant::now();
                for peer in peers.values_mut() {
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| peer.rtc.handle_input(Input::Timeout(now))));
                }
            }
            Some(d) = dgrams.recv() => {
                if drop_input {
                    continue;
                }
                let Ok(contents) = d.data.as_slice().try_into() else { continue };
                let input = Input::Receive(Instant::now(), Receive {
                    proto: Protocol::Udp,
                    source: d.source,
                    destination: d.destination,
                    contents,
                });
                if let Some(peer) = peers.values_mut().find(|p| p.rtc.accepts(&input)) {
                    let r = std::panic::catch_unwind(AssertUnwindSafe(|| peer.rtc.handle_input(input)));
                    if !matches!(r, Ok(Ok(()))) {
                        peer.rtc.disconnect();
                    }
                }
            }
            Some((session, frame)) = frames.recv() => {
                if let Some(peer) = peers.get_mut(&session) {
                    let r = std::panic::catch_unwind(AssertUnwindSafe(|| write_frame(peer, &frame)));
                    if r.is_err() {
                        peer.rtc.disconnect();
                    }
                }
            }
            Some(cmd) = commands.recv() => match cmd {
                Command::Add(peer) => { peers.insert(peer.session.clone(), *peer); }
                Command::Remove { session, reply } => {
                    let found = match peers.remove(&session) {
                        Some(peer) => { end_peer(peer).await; true }
                        None => false,
                    };
                    stop_unused_transcoders(&peers, &mut transcoders).await;
                    let _ = reply.send(found);
                }
                Command::RemoveCamera { camera, reply } => {
                    let sessions: Vec<String> = peers.values().filter(|p| p.camera.id() == camera).map(|p| p.session.clone()).collect();
                    for s in sessions {
                        if let Some(peer) = peers.remove(&s) { end_peer(peer).await; }
                    }
                    stop_unused_transcoders(&peers, &mut transcoders).await;
                    let _ = reply.send(());
                }
            },
        }
    }
    for (_, peer) in peers.drain() {
        end_peer(peer).await;
    }
    stop_unused_transcoders(&peers, &mut transcoders).await;
    for r in readers {
        let _ = r.await;
    }
}

type Drained = (Vec<(SocketAddr, SocketAddr, Vec<u8>)>, Instant, Vec<Event>);

/// Polls a peer until `Timeout`, collecting what to send and what happened.
fn drain(peer: &mut Peer) -> Result<Drained, str0m::RtcError> {
    let mut transmits = Vec::new();
    let mut events = Vec::new();
    loop {
        if !peer.rtc.is_alive() {
            return Ok((transmits, Instant::now(), events));
        }
        match peer.rtc.poll_output()? {
            Output::Transmit(t) => transmits.push((t.destination, t.source, t.contents.to_vec())),
            Output::Timeout(t) => return Ok((transmits, t, events)),
            Output::Event(e) => events.push(e),
        }
    }
}

/// Stops (and waits for) every transcoder no remaining peer needs.
async fn stop_unused_transcoders(peers: &HashMap<String, Peer>, transcoders: &mut Transcoders) {
    let wanted: HashSet<&str> = peers
        .values()
        .filter(|p| p.audio.is_some_and(|a| a.transcoded))
        .map(|p| p.camera.id())
        .collect();
    let unused: Vec<String> = transcoders
        .keys()
        .filter(|id| !wanted.contains(id.as_str()))
        .cloned()
        .collect();
    for id in unused {
        if let Some(t) = transcoders.remove(&id) {
            t.stop().await;
        }
    }
}

fn on_event(
    peer: &mut Peer,
    event: Event,
    frames_tx: &mpsc::Sender<(String, Frame)>,
    transcoders: &mut Transcoders,
) {
    match event {
        Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
            peer.disconnected_since.get_or_insert_with(Instant::now);
        }
        Event::IceConnectionStateChange(_) => peer.disconnected_since = None,
        Event::MediaAdded(m) if m.kind == str0m::media::MediaKind::Video => {
            let video = peer.camera.stream.view().video;
            if let Some(writer) = peer.rtc.writer(m.mid) {
                let pt = match video.as_deref() {
                    Some(v) if v.codec == "h265" => codec::choose_h265(writer.payload_params()),
                    v => {
                        let profile = v
                            .and_then(|v| v.parameter_sets.first().and_then(|s| s.get(1).copied()));
                        codec::choose_h264(writer.payload_params(), profile)
                    }
                };
                if let Some(pt) = pt {
                    peer.video = Some((m.mid, pt));
                }
            }
        }
        Event::MediaAdded(m) if m.kind == str0m::media::MediaKind::Audio => {
            let audio = peer.camera.stream.audio();
            if let (Some(a), Some(writer)) = (audio, peer.rtc.writer(m.mid)) {
                if let Some(pt) = codec::choose_audio(writer.payload_params(), a.codec) {
                    peer.audio = Some(PeerAudio {
                        mid: m.mid,
                        pt,
                        clock: Frequency::new(a.sample_rate).unwrap_or(Frequency::FORTY_EIGHT_KHZ),
                        transcoded: false,
                    });
                } else if let Some(pt) = codec::choose_transcoded(writer.payload_params()) {
                    peer.audio = Some(PeerAudio {
                        mid: m.mid,
                        pt,
                        clock: Frequency::FORTY_EIGHT_KHZ,
                        transcoded: true,
                    });
                } else {
                    tracing::info!(
                        camera = peer.camera.id(),
                        "WebRTC: {} audio is not sent (video only)",
                        a.codec
                    );
                }
                // str0m can announce media after ICE/DTLS connected: the running forwarder
                // carries no audio yet, so it is replaced by one that does.
                if peer.connected && peer.audio.is_some() {
                    start_forwarder(peer, frames_tx, transcoders);
                }
            }
        }
        // A PLI/FIR: the browser lost its reference. Restart the subscription, which begins with
        // the cached GOP (a keyframe), at most once a second.
        Event::KeyframeRequest(_)
            if peer.connected
                && peer
                    .last_keyframe_request
                    .is_none_or(|t| t.elapsed() > Duration::from_secs(1)) =>
        {
            peer.last_keyframe_request = Some(Instant::now());
            start_forwarder(peer, frames_tx, transcoders);
        }
        Event::Connected => {
            peer.connected = true;
            // Subscribe now, so the cached GOP goes out the moment media can flow.
            start_forwarder(peer, frames_tx, transcoders);
        }
        _ => {}
    }
}

/// Starts (or restarts) the peer's hub subscription; an old forwarder is left to finish on its
/// cancelled token and is joined when the peer ends. A peer with transcoded audio gets its
/// camera's audio from the camera's transcoder (started here for the first such peer) instead.
fn start_forwarder(
    peer: &mut Peer,
    frames_tx: &mpsc::Sender<(String, Frame)>,
    transcoders: &mut Transcoders,
) {
    // Finished forwarders need no join; keep only those still winding down.
    peer.old_forwarders.retain(|t| !t.is_finished());
    if let Some((cancel, task)) = peer.forwarder.take() {
        cancel.cancel();
        peer.old_forwarders.push(task);
    }
    let Some(mut sub) = peer.camera.stream.subscribe(ViewerKind::Webrtc) else {
        return;
    };
    let mut transcoded = match peer.audio {
        Some(a) if a.transcoded => {
            let id = peer.camera.id();
            // A transcoder whose task ended (its stream ended) is replaced; a finished task
            // needs no join.
            if transcoders.get(id).is_some_and(Transcoder::is_finished) {
                transcoders.remove(id);
            }
            let t = transcoders
                .entry(id.to_string())
                .or_insert_with(|| Transcoder::start(peer.camera.clone()));
            Some(t.subscribe())
        }
        _ => None,
    };
    // The camera's own audio goes out only when it passes through as it is: not before the
    // audio m-line is known, and not when the transcoder replaces it.
    let camera_audio = peer.audio.is_some_and(|a| !a.transcoded);
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    let tx = frames_tx.clone();
    let session = peer.session.clone();
    let task = spawn_task(async move {
        loop {
            let frame = tokio::select! {
                _ = stop.cancelled() => return,
                f = sub.next() => match f {
                    Ok(f) if !camera_audio && !f.is_video() => continue,
                    Ok(f) => f,
                    Err(_) => return,
                },
                Some(f) = next_transcoded(&mut transcoded) => f,
            };
            if tx.send((session.clone(), frame)).await.is_err() {
                return;
            }
        }
    });
    peer.forwarder = Some((cancel, task));
}

/// The next transcoded audio frame; `None` (never ready) without a transcoder, or once it
/// has gone. A peer that fell behind skips what it missed.
async fn next_transcoded(rx: &mut Option<broadcast::Receiver<Frame>>) -> Option<Frame> {
    loop {
        let Some(r) = rx.as_mut() else {
            return std::future::pending().await;
        };
        match r.recv().await {
            Ok(f) => return Some(f),
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => *rx = None,
        }
    }
}

fn write_frame(peer: &mut Peer, frame: &Frame) {
    if !frame.is_video() {
        // Opus and G.711 frames (the camera's, or its transcoder's) are RTP payloads already.
        if let Some(a) = peer.audio {
            let time = MediaTime::new(frame.pts.max(0) as u64, a.clock);
            if let Some(writer) = peer.rtc.writer(a.mid) {
                let _ = writer.write(a.pt, Instant::now(), time, frame.data.to_vec());
            }
        }
        return;
    }
    let Some((mid, pt)) = peer.video else { return };
    let Some(codec) = &frame.video_codec else {
        return;
    };
    // Parameter sets before every keyframe (and on a new description), in Annex B.
    let mut data = Vec::with_capacity(frame.data.len() + 64);
    let new_codec = !peer
        .sent_codec
        .as_ref()
        .is_some_and(|c| Arc::ptr_eq(c, codec));
    if frame.keyframe || new_codec {
        h264::append_annex_b(&mut data, codec.parameter_sets.iter().map(|p| &p[..]));
        peer.sent_codec = Some(codec.clone());
    }
    h264::append_annex_b(&mut data, h264::length_prefixed_nals(&frame.data));
    let time = MediaTime::new(frame.pts.max(0) as u64, Frequency::NINETY_KHZ);
    if let Some(writer) = peer.rtc.writer(mid) {
        let _ = writer.write(pt, Instant::now(), time, data);
    }
}

async fn end_peer(mut peer: Peer) {
    peer.rtc.disconnect();
    if let Some((cancel, task)) = peer.forwarder.take() {
        cancel.cancel();
        let _ = task.await;
    }
    for task in peer.old_forwarders.drain(..) {
        let _ = task.await;
    }
    tracing::debug!(session = %peer.session, camera = peer.camera.id(), "WebRTC peer ended");
}
