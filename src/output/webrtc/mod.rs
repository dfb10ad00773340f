//! WebRTC on str0m (sans-IO): ICE-lite, one UDP port for every peer. Viewers (WHEP) get
//! H.264/H.265 as it is, audio as it is or through a per-camera Opus transcoder; publishers
//! (WHIP, [`publisher`]) send a `publish:` camera its frames.
//!
//! Layout (each part owns what it names, and nothing waits on what may wait on it):
//! - [`WebRtc`] (this file): binds the sockets, answers offers, owns the tasks below.
//! - socket readers (one per socket): route each datagram to its peer's worker loop through
//!   [`route::Router`] and a bounded `try_send` — a full queue drops it, like the network would.
//! - worker loops ([`shard::Shard`], one per core): each owns a share of the peers and their
//!   feeds of frames, and drives str0m synchronously.
//! - [`transcode::Transcoders`]: one AAC/G.711 → Opus transcoder per camera, shared by its peers
//!   in every loop, leased without waiting.
//!
//! Every peer is counted in `peer_connections` while it exists, and its hub subscription in
//! `viewers.webrtc` while its feed runs.

pub mod codec;
pub mod dtls;
pub mod end;
pub mod peer;
pub mod publisher;
pub mod route;
pub mod rtptime;
pub mod sdpfrag;
pub mod send;
pub mod shard;
pub mod transcode;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use str0m::change::SdpOffer;
use str0m::{Candidate, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::hub::Stream;
use crate::resources::spawn_task;
use crate::resources::PublisherKind;
use crate::source::publish::AttachError;
use peer::Peer;
use publisher::Publishing;
use route::{Router, SessionId};
use shard::{Command, Datagram, Shard, Sockets, DATAGRAM_QUEUE};
use transcode::Transcoders;

#[derive(Debug)]
pub enum OfferError {
    /// The body is not an SDP offer (400).
    Malformed(String),
    /// No offered codec matches the camera (422).
    NoCodec(String),
    /// A publisher's offer that sends no video (`recvonly`, `inactive`) (400).
    NotSending(String),
    /// WebRTC is not running (503).
    Unavailable(String),
    /// The camera takes no publisher (its source is not `publish:`, or it is stopped) (405).
    NotPublishable(String),
    /// Another publisher is live on the camera (409).
    Busy(String),
}

impl std::fmt::Display for OfferError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OfferError::Malformed(m)
            | OfferError::NoCodec(m)
            | OfferError::NotSending(m)
            | OfferError::Unavailable(m)
            | OfferError::NotPublishable(m)
            | OfferError::Busy(m) => f.write_str(m),
        }
    }
}

/// RTP packets of video each peer keeps for retransmission.
const SEND_BUFFER_PACKETS: usize = 256;

/// A peer's `Rtc`, configured as every answer is made (also by the `whep_sdp` fuzz check).
pub(crate) fn peer_rtc(cert: &str0m::config::DtlsCert, now: Instant) -> Rtc {
    let mut config = Rtc::builder()
        .set_ice_lite(true)
        // Frames are packetized once per camera (`output::rtp::video_payloads`) and written as RTP.
        .set_rtp_mode(true)
        .set_dtls_cert(cert.clone())
        // Packets kept for retransmission (NACK): ~1 s of a 2 Mb/s camera, not str0m's
        // default 1000 (~1.2 MB per viewer).
        .set_send_buffer_video(SEND_BUFFER_PACKETS)
        .clear_codecs()
        .enable_h264(true)
        .enable_h265(true)
        .enable_opus(true, false)
        .enable_pcma(true, false)
        .enable_pcmu(true, false);
    // Chromium's only H.264 receive profile above Main is High 4:4:4 Predictive (f4001f), whose
    // decoders take High: str0m's defaults lack it, and str0m answers only profiles it knows, so
    // a High camera's viewer would be left with payload types that cannot decode it.
    config
        .codec_config()
        .add_h264(39.into(), Some(40.into()), true, 0xf4001f);
    config.build(now)
}

/// A worker loop as the handle sees it.
struct ShardHandle {
    commands: mpsc::Sender<Command>,
    datagrams: mpsc::Sender<(SessionId, Datagram)>,
}

/// Handle to the WebRTC output.
pub struct WebRtc {
    shards: Vec<ShardHandle>,
    router: Arc<Mutex<Router>>,
    transcoders: Arc<Transcoders>,
    candidates: Vec<SocketAddr>,
    /// One DTLS certificate for every peer: generating a key pair per offer cost milliseconds
    /// of CPU each (a first frame a second late with 300 viewers arriving at once).
    cert: str0m::config::DtlsCert,
    next_shard: AtomicUsize,
    tasks: tokio::sync::Mutex<Vec<JoinHandle<()>>>,
    cancel: CancellationToken,
}

impl WebRtc {
    /// Binds `listen` (on every candidate address when it is a wildcard) and starts one worker
    /// loop per core. When the port is taken, an ephemeral port is used instead, with a warning.
    pub async fn start(listen: SocketAddr, extra: &[IpAddr]) -> std::io::Result<WebRtc> {
        let loops = std::thread::available_parallelism().map_or(2, |n| n.get());
        WebRtc::start_with(listen, extra, loops).await
    }

    /// As [`WebRtc::start`], with `loops` worker loops.
    pub async fn start_with(
        listen: SocketAddr,
        extra: &[IpAddr],
        loops: usize,
    ) -> std::io::Result<WebRtc> {
        let crypto = dtls::provider();
        let cert = crypto
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| std::io::Error::other("cannot generate a DTLS certificate"))?;
        crypto.install_process_default();
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
            let local = socket.local_addr()?;
            port = local.port();
            sockets.push(send::Socket::new(local, Arc::new(socket))?);
        }
        let candidates: Vec<SocketAddr> = sockets.iter().map(|s| s.local).collect();
        tracing::info!(?candidates, loops, "WebRTC listening");
        let sockets: Sockets = Arc::new(sockets);
        let cancel = CancellationToken::new();
        let router = Arc::new(Mutex::new(Router::default()));
        let transcoders = Arc::new(Transcoders::default());
        let mut shards = Vec::new();
        let mut tasks = Vec::new();
        for index in 0..loops.max(1) {
            let (commands, commands_rx) = mpsc::channel(256);
            let (datagrams, datagrams_rx) = mpsc::channel(DATAGRAM_QUEUE);
            let shard = Shard::new(index, sockets.clone(), router.clone(), transcoders.clone());
            tasks.push(spawn_task(shard.run(
                commands_rx,
                datagrams_rx,
                cancel.clone(),
            )));
            shards.push(ShardHandle {
                commands,
                datagrams,
            });
        }
        let inboxes: Vec<mpsc::Sender<(SessionId, Datagram)>> =
            shards.iter().map(|s| s.datagrams.clone()).collect();
        for s in sockets.iter() {
            tasks.push(spawn_task(read_socket(
                s.local,
                s.socket.clone(),
                router.clone(),
                inboxes.clone(),
                cancel.clone(),
            )));
        }
        Ok(WebRtc {
            shards,
            router,
            transcoders,
            candidates,
            cert,
            next_shard: AtomicUsize::new(0),
            tasks: tokio::sync::Mutex::new(tasks),
            cancel,
        })
    }

    pub fn candidates(&self) -> &[SocketAddr] {
        &self.candidates
    }

    /// Accepts a viewer's SDP offer for `camera` (WHEP); returns the session id and the answer.
    pub async fn offer(
        &self,
        camera: Arc<Stream>,
        sdp: &str,
    ) -> Result<(String, String), OfferError> {
        let offer = parse_offer(sdp)?;
        let offered = codec::offered_video(sdp);
        let sends = camera
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
        // H.264 under a payload type whose decoder cannot take it (High with B-frames as
        // Constrained Baseline) breaks the viewer's pictures and timestamps: refused.
        let profile = camera.view().video.as_deref().and_then(|v| {
            (v.codec == "h264")
                .then(|| v.parameter_sets.first())
                .flatten()
                .and_then(|sps| codec::H264Profile::of_sps(sps))
        });
        if let Some(profile) = profile {
            if let Some(why) = codec::h264_refusal(&codec::offered_h264_profiles(sdp), profile) {
                return Err(OfferError::NoCodec(format!(
                    "camera {:?}: {why}",
                    camera.id()
                )));
            }
        }
        let remote_ufrag = sdpfrag::sdp_ice_ufrag(sdp).map(str::to_string);
        self.answer(offer, |session, rtc, now| {
            let seq = u16::from_str_radix(&session[..4], 16).unwrap_or(0);
            let mut peer = Peer::new(session, camera, rtc, now, seq);
            peer.set_remote_ufrag(remote_ufrag);
            Ok(peer)
        })
        .await
    }

    /// Accepts a publisher's SDP offer for `camera` (WHIP); returns the session id and the
    /// answer. The camera is taken only for an offer that could be answered (a refused request
    /// never flips it to starting), and is let go when the peer ends, whatever way.
    pub async fn publish(
        &self,
        camera: Arc<Stream>,
        sdp: &str,
    ) -> Result<(String, String), OfferError> {
        let offer = check_publish_offer(sdp)?;
        let remote_ufrag = sdpfrag::sdp_ice_ufrag(sdp).map(str::to_string);
        self.answer(offer, |session, rtc, now| {
            let publication = camera
                .inlet()
                .attach(PublisherKind::Whip)
                .map_err(|e| match e {
                    AttachError::NotPublishable => OfferError::NotPublishable(e.to_string()),
                    AttachError::Busy => OfferError::Busy(e.to_string()),
                })?;
            let publishing = Publishing::new(publication);
            let mut peer = Peer::publisher(session, camera, rtc, now, publishing);
            peer.set_remote_ufrag(remote_ufrag);
            Ok(peer)
        })
        .await
    }

    /// Answers an offer and hands the peer `make` builds to a worker loop.
    async fn answer(
        &self,
        offer: SdpOffer,
        make: impl FnOnce(SessionId, Rtc, Instant) -> Result<Peer, OfferError>,
    ) -> Result<(String, String), OfferError> {
        let now = Instant::now();
        let mut rtc = peer_rtc(&self.cert, now);
        for addr in &self.candidates {
            if let Ok(c) = Candidate::host(*addr, "udp") {
                let _ = rtc.add_local_candidate(c);
            }
        }
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| OfferError::Malformed(format!("the offer cannot be answered: {e}")))?
            .to_sdp_string();
        // No ufrag means str0m found no media line it could answer, although the line scan of
        // `offered_video` saw one (e.g. two SDP sessions in one body): the client's mistake.
        let ufrag = route::sdp_ufrag(&answer)
            .ok_or_else(|| {
                OfferError::Malformed("not a valid SDP offer (no media line to answer)".into())
            })?
            .to_string();
        let session: SessionId = crate::common::random_hex(16).into();
        let peer = make(session.clone(), rtc, now)?;
        let index = self.next_shard.fetch_add(1, Ordering::Relaxed) % self.shards.len();
        // A slot in the loop's queue first: between routing and handing over there is no
        // await, so a cancelled offer cannot leave a route behind.
        let permit = self.shards[index]
            .commands
            .reserve()
            .await
            .map_err(|_| OfferError::Unavailable("WebRTC is shutting down".into()))?;
        // Routed before the answer leaves, so the browser's first STUN request finds its loop.
        self.router
            .lock()
            .unwrap()
            .add(session.clone(), index, &ufrag);
        permit.send(Command::Add(Box::new(peer)));
        Ok((session.to_string(), answer))
    }

    /// Ends a session of `camera` at once (WHEP DELETE). False when `camera` has no such session.
    pub async fn remove(&self, camera: &str, session: &str) -> bool {
        let Some(index) = self.router.lock().unwrap().shard_of(session) else {
            return false;
        };
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Remove {
            camera: camera.to_string(),
            session: session.into(),
            reply,
        };
        self.shards[index].commands.send(cmd).await.is_ok() && rx.await.unwrap_or(false)
    }

    /// A WHIP/WHEP PATCH of a session of `camera` (`application/trickle-ice-sdpfrag`):
    /// trickled candidates are applied; an ICE restart is refused. Returns how many
    /// candidates were applied.
    pub async fn patch(
        &self,
        camera: &str,
        session: &str,
        body: &str,
        if_match_star: bool,
    ) -> Result<usize, sdpfrag::PatchError> {
        let frag = sdpfrag::parse(body)?;
        let Some(index) = self.router.lock().unwrap().shard_of(session) else {
            return Err(sdpfrag::PatchError::UnknownSession(session.to_string()));
        };
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Patch {
            camera: camera.to_string(),
            session: session.into(),
            frag,
            if_match_star,
            reply,
        };
        if self.shards[index].commands.send(cmd).await.is_err() {
            return Err(sdpfrag::PatchError::Unavailable);
        }
        rx.await.unwrap_or(Err(sdpfrag::PatchError::UnknownSession(
            session.to_string(),
        )))
    }

    /// Ends every session of a camera (it was stopped or deleted).
    pub async fn remove_camera(&self, camera: &str) {
        let mut replies = Vec::new();
        for shard in &self.shards {
            let (reply, rx) = oneshot::channel();
            let cmd = Command::RemoveCamera {
                camera: camera.to_string(),
                reply,
            };
            if shard.commands.send(cmd).await.is_ok() {
                replies.push(rx);
            }
        }
        for rx in replies {
            let _ = rx.await;
        }
    }

    /// Stops the loops, the readers and every peer and transcoder, and waits for them.
    pub async fn stop(&self) {
        self.cancel.cancel();
        let tasks: Vec<JoinHandle<()>> = self.tasks.lock().await.drain(..).collect();
        for task in tasks {
            let _ = task.await;
        }
        self.transcoders.stop().await;
    }
}

/// A publisher's (WHIP) offer, checked for what it is before any camera is looked up or made:
/// SDP, with H.264 or H.265 video that it sends.
pub fn check_publish_offer(sdp: &str) -> Result<SdpOffer, OfferError> {
    let offer = parse_offer(sdp)?;
    let offered = codec::offered_video(sdp);
    if !offered.iter().any(|c| c == "H264" || c == "H265") {
        return Err(OfferError::NoCodec(format!(
            "a published stream must be H.264 or H.265 video: the offer has [{}]",
            offered.join(", "),
        )));
    }
    if !codec::offer_sends_video(sdp) {
        return Err(OfferError::NotSending(
            "a publisher must send its video: the offer's video is recvonly or inactive \
             (make it sendonly)"
                .into(),
        ));
    }
    Ok(offer)
}

fn parse_offer(sdp: &str) -> Result<SdpOffer, OfferError> {
    SdpOffer::from_sdp_string(sdp).map_err(|e| {
        // str0m's parse errors end with a pointer into our memory: not for clients.
        let text = e.to_string();
        let words = text.split(" at PointerOffset").next().unwrap_or_default();
        OfferError::Malformed(format!("not a valid SDP offer ({words})"))
    })
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

/// Reads one socket and hands each datagram to its peer's loop, never waiting on a loop.
async fn read_socket(
    local: SocketAddr,
    socket: Arc<UdpSocket>,
    router: Arc<Mutex<Router>>,
    shards: Vec<mpsc::Sender<(SessionId, Datagram)>>,
    cancel: CancellationToken,
) {
    let mut buf = vec![0u8; 2000];
    loop {
        let (n, source) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(v) => v,
                Err(_) => continue,
            },
        };
        let Some(route) = router.lock().unwrap().route(source, &buf[..n]) else {
            continue;
        };
        let d = Datagram {
            data: buf[..n].to_vec(),
            source,
            destination: local,
        };
        if let Some(shard) = shards.get(route.shard) {
            // Full: dropped, as a congested network would; the loop is never waited on.
            let _ = shard.try_send((route.session, d));
        }
    }
}
