//! The RTSP re-stream's IO: the TCP listener, one task per connection, and the UDP port pair.
//!
//! Each connection task reads requests (and interleaved RTCP) and writes responses and media in
//! one `select!`: nothing it awaits can be waiting on it. Its viewer is a hub subscription, so
//! a slow client skips to the next keyframe like every other viewer, and a client that stops
//! reading altogether is cut off after [`WRITE_TIMEOUT`]. The protocol itself is
//! [`session::Conn`] (sans-IO); this file only moves bytes and time.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::auth::{check_publisher, Auth, Credential, PublishGrant};
use super::message::{self, parse_transport, Incoming, Method, ParseError, Transport};
use super::sdp;
use super::session::{self, target, Action, Conn, Lookup, Setup};
use crate::common::random_hex;
use crate::hub::{Packet, Stream, Subscription};
use crate::media::av_sync::is_rtcp;
use crate::media::{AudioCodec, Frame, TrackKind};
use crate::output::accept::{accept_loop, ServerTasks};
use crate::output::rtp::{audio_payload, ntp_time, video_payloads, RtpWriter};
use crate::output::rtp_ingest::{parse_announce, Ingest};
use crate::resources::{spawn_task, PublisherKind, Resource, ViewerKind};
use crate::source::publish::{publish_secrets, AttachError, Publication};

/// Finds a camera's stream by id (the camera registry lives above the outputs).
pub type FindStream = Arc<dyn Fn(&str) -> Option<Arc<Stream>> + Send + Sync>;
pub use crate::output::FindPublishTarget;

/// Requests refused for their credentials (401) before a connection is closed.
const MAX_AUTH_FAILURES: u32 = 5;
/// A client that does not take a frame's packets within this long is cut off.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long DESCRIBE waits for an on-demand camera to come up.
const WAKE_LIMIT: Duration = Duration::from_secs(8);
/// RTCP sender reports, per track, this often.
const REPORT_EVERY: Duration = Duration::from_secs(5);
/// At most this many RTSP connections at once; more are closed at accept.
const MAX_CONNECTIONS: usize = 4_096;
/// At most this many from one address: 128 (an NVR reading 64 cameras' main and sub streams),
/// so that one address cannot take every slot.
const MAX_CONNECTIONS_PER_ADDRESS: usize = 128;
/// A connection must send its first request within this long (10 s, like HTTP's header
/// deadline): an idle socket must not hold a slot for the whole session timeout.
const FIRST_REQUEST_LIMIT: Duration = Duration::from_secs(10);
/// The UDP ports tried first (MediaMTX's defaults, so firewall rules carry over).
const UDP_PORTS: (u16, u16) = (8000, 8001);

pub struct RtspSettings {
    pub listen: SocketAddr,
    /// Who may read; empty: anyone who can connect.
    pub credentials: Vec<Credential>,
    /// The API token: publishers need it (or the camera's publish key) wherever it is set, as
    /// WHIP and RTMP publishers do, whatever readers need.
    pub token: Option<String>,
    /// A connection that hears nothing for this long is closed (unless it plays over TCP only,
    /// where a vanished client shows as a write that does not finish).
    pub session_timeout: Duration,
}

pub struct RtspServer {
    local: SocketAddr,
    udp_ports: Option<(u16, u16)>,
    auth: bool,
    tasks: ServerTasks,
}

/// What every connection task shares.
struct Shared {
    find: FindStream,
    find_publish_target: FindPublishTarget,
    credentials: Vec<Credential>,
    token: Option<String>,
    udp: Option<Arc<Udp>>,
    cancel: CancellationToken,
    session_timeout: Duration,
}

/// A UDP publisher's RTP packets, with their track, on their way to its connection's task.
/// Its channel is also who owns an entry of [`UdpSources`] (`same_channel`).
type UdpMedia = mpsc::Sender<(TrackKind, Vec<u8>)>;

/// UDP publishers by the address their RTP comes from (the RTSP peer's address and the client
/// port its SETUP named): its track and its connection's queue.
type UdpSources = HashMap<SocketAddr, (TrackKind, UdpMedia)>;

/// Whether `from` is another connection's source: a SETUP naming it gets 461, as a publisher
/// must not receive, nor on leaving remove, someone else's media.
fn taken_by_other(map: &UdpSources, from: SocketAddr, own: &UdpMedia) -> bool {
    map.get(&from).is_some_and(|(_, to)| !to.same_channel(own))
}

/// Registers a connection's sources (at RECORD), all or none: `Err` names the first that is
/// another connection's (two SETUPs may name the same port before either records). Its own
/// `previous` entries are replaced.
fn claim_sources(
    map: &mut UdpSources,
    previous: &[SocketAddr],
    sources: &[(SocketAddr, TrackKind)],
    own: &UdpMedia,
) -> Result<(), SocketAddr> {
    if let Some((from, _)) = sources
        .iter()
        .find(|(from, _)| taken_by_other(map, *from, own))
    {
        return Err(*from);
    }
    release_sources(map, previous, own);
    for (from, track) in sources {
        map.insert(*from, (*track, own.clone()));
    }
    Ok(())
}

/// Removes a connection's own entries among `sources`, never another's.
fn release_sources(map: &mut UdpSources, sources: &[SocketAddr], own: &UdpMedia) {
    for from in sources {
        if map.get(from).is_some_and(|(_, to)| to.same_channel(own)) {
            map.remove(from);
        }
    }
}

/// The server's UDP pair, and when each playing UDP client's RTCP was last heard.
struct Udp {
    rtp: UdpSocket,
    rtcp: UdpSocket,
    ports: (u16, u16),
    heard: Mutex<HashMap<SocketAddr, Instant>>,
    /// Where each UDP publisher's RTP goes: its connection's task, by the address it sends from.
    publishers: Mutex<UdpSources>,
}

impl RtspServer {
    pub async fn start(
        settings: RtspSettings,
        find: FindStream,
        find_publish_target: FindPublishTarget,
    ) -> std::io::Result<RtspServer> {
        let listener = match listen(settings.listen) {
            Ok(l) => l,
            Err(e) if settings.listen.port() != 0 => {
                tracing::warn!(listen = %settings.listen, "RTSP port unavailable ({e}); using a free port");
                listen(SocketAddr::new(settings.listen.ip(), 0))?
            }
            Err(e) => return Err(e),
        };
        let local = listener.local_addr()?;
        let udp = match bind_udp_pair(local.ip()).await {
            Ok(u) => Some(Arc::new(u)),
            Err(e) => {
                tracing::warn!("RTSP over UDP is off (TCP still works): {e}");
                None
            }
        };
        let udp_ports = udp.as_ref().map(|u| u.ports);
        let cancel = CancellationToken::new();
        let auth = !settings.credentials.is_empty();
        let shared = Arc::new(Shared {
            find,
            find_publish_target,
            credentials: settings.credentials,
            token: settings.token,
            session_timeout: settings.session_timeout,
            udp,
            cancel: cancel.clone(),
        });
        let connections = TaskTracker::new();
        let mut tasks = vec![spawn_task(accept(
            listener,
            shared.clone(),
            connections.clone(),
        ))];
        if shared.udp.is_some() {
            tasks.push(spawn_task(hear_rtcp(shared.clone())));
            tasks.push(spawn_task(hear_rtp(shared.clone())));
        }
        tracing::info!(url = %format!("rtsp://{local}/{{camera}}"), ?udp_ports, auth, "RTSP re-stream listening");
        Ok(RtspServer {
            local,
            udp_ports,
            auth,
            tasks: ServerTasks::new(cancel, tasks, connections),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn udp_ports(&self) -> Option<(u16, u16)> {
        self.udp_ports
    }

    /// Whether clients must authenticate.
    pub fn auth(&self) -> bool {
        self.auth
    }

    /// Closes the listener and every connection, and waits for them.
    pub async fn stop(&self) {
        self.tasks.stop().await;
    }
}

/// The listener, with a deep accept queue: a wall of NVR channels or a burst of clients
/// reconnecting would otherwise wait out SYN retransmits of a second and more.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// An even RTP port and the next one for RTCP (RFC 3550 §11): the usual pair if free, else
/// the first free pair the system gives.
async fn bind_udp_pair(ip: IpAddr) -> std::io::Result<Udp> {
    let pair = |rtp: u16| async move {
        let a = UdpSocket::bind(SocketAddr::new(ip, rtp)).await?;
        let rtp = a.local_addr()?.port();
        if rtp % 2 != 0 || rtp == u16::MAX {
            return Err(std::io::Error::other("odd port"));
        }
        let b = UdpSocket::bind(SocketAddr::new(ip, rtp + 1)).await?;
        Ok::<_, std::io::Error>((a, b, rtp))
    };
    let mut last = None;
    for attempt in 0..20 {
        let port = if attempt == 0 { UDP_PORTS.0 } else { 0 };
        match pair(port).await {
            Ok((rtp, rtcp, port)) => {
                return Ok(Udp {
                    rtp,
                    rtcp,
                    ports: (port, port + 1),
                    heard: Mutex::new(HashMap::new()),
                    publishers: Mutex::new(HashMap::new()),
                })
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no UDP port pair")))
}

async fn accept(listener: TcpListener, shared: Arc<Shared>, connections: TaskTracker) {
    let cancel = shared.cancel.clone();
    accept_loop(
        "RTSP",
        listener,
        MAX_CONNECTIONS,
        MAX_CONNECTIONS_PER_ADDRESS,
        Resource::RtspConnection,
        connections,
        cancel,
        move |socket, peer| {
            let shared = shared.clone();
            async move { connection(&shared, socket, peer).await }
        },
    )
    .await
}

/// Notes when each playing UDP client's receiver reports arrive: its sign of life.
async fn hear_rtcp(shared: Arc<Shared>) {
    let Some(udp) = &shared.udp else { return };
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, from) = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            r = udp.rtcp.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(_) => continue,
            },
        };
        // Only clients that play are in the map: nobody else can grow it.
        if let Some(t) = udp.heard.lock().unwrap().get_mut(&from) {
            *t = Instant::now();
        }
        // A UDP publisher's sender reports go to its connection with its RTP.
        if let Some((track, to)) = udp.publishers.lock().unwrap().get(&from) {
            let _ = to.try_send((*track, buf[..n].to_vec()));
        }
    }
}

/// UDP publishers' RTP, handed to their connections' tasks (a full queue loses the packet:
/// this loop never waits on a connection).
async fn hear_rtp(shared: Arc<Shared>) {
    let Some(udp) = &shared.udp else { return };
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, from) = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            r = udp.rtp.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(_) => continue,
            },
        };
        // Only registered publishers are in the map: anyone else's datagrams are dropped.
        if let Some((track, to)) = udp.publishers.lock().unwrap().get(&from) {
            let _ = to.try_send((*track, buf[..n].to_vec()));
        }
    }
}

/// Why a connection ended, for the log.
type End = String;

async fn connection(shared: &Shared, socket: TcpStream, peer: SocketAddr) -> End {
    let _ = socket.set_nodelay(true);
    let (mut reader, mut writer) = socket.into_split();
    let random = u128::from_str_radix(&random_hex(16), 16).unwrap_or_default();
    let mut conn = Conn::new(
        random_hex(16),
        random,
        shared.udp.as_ref().map(|u| u.ports),
        shared.session_timeout.as_secs().max(1),
    );
    let auth = Auth::new(shared.credentials.clone(), random_hex(16));
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut sending: Option<Sending> = None;
    let mut paused: Option<Writers> = None;
    let mut publishing: Option<Publishing> = None;
    // A UDP publisher's RTP, from the server's UDP loop.
    let (udp_media, mut udp_in) = mpsc::channel::<(TrackKind, Vec<u8>)>(1024);
    // Credentials checked once hold for the connection: a client given `?token=` in its URL
    // does not repeat it in the track URLs it builds from `Content-Base`.
    let mut authenticated = false;
    // Authorized by a publish secret only (the token, a camera's key): its publishing session.
    let mut keyed = false;
    let mut refused = 0;
    let mut heard = Instant::now();
    let connected = Instant::now();
    let mut requested = false;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut out = Vec::with_capacity(64 * 1024);
    loop {
        tokio::select! {
            read = reader.read_buf(&mut buf) => match read {
                Ok(0) => return "the client closed the connection".into(),
                Err(e) => return format!("read failed: {e}"),
                Ok(_) => {}
            },
            packet = next_packet(&mut sending) => {
                let Some(s) = sending.as_mut() else { continue };
                let packet = match packet {
                    Ok(p) => p,
                    Err(end) => return format!("the camera's stream ended: {end}"),
                };
                out.clear();
                if let Err(e) = s.send(&packet, &mut out).await {
                    return e;
                }
                if !out.is_empty() {
                    if let Err(e) = write(&mut writer, &out).await {
                        return e.to_string();
                    }
                }
                continue;
            }
            Some((track, data)) = udp_in.recv() => {
                heard = Instant::now();
                if let Some(p) = publishing.as_mut() {
                    if let Err(why) = p.take_track(track, &data) {
                        return why;
                    }
                }
                continue;
            }
            _ = tick.tick() => {
                if publishing.as_ref().is_some_and(|p| p.publication.is_closed()) {
                    return "the camera let this publisher go".into();
                }
                if !requested && connected.elapsed() > FIRST_REQUEST_LIMIT {
                    return format!("no request within {FIRST_REQUEST_LIMIT:?}");
                }
                // A client playing over TCP only need not speak: if it vanishes, the writes stop
                // finishing. Any other must send requests or RTCP reports (every client does).
                let tcp_only = sending.as_ref().is_some_and(|s| s.rtcp_addresses.is_empty());
                let udp_heard = sending.as_ref().and_then(Sending::udp_heard);
                let last = udp_heard.map_or(heard, |u| u.max(heard));
                if !tcp_only && last.elapsed() > shared.session_timeout {
                    return format!("nothing heard for {:?}", shared.session_timeout);
                }
                if let Some(s) = sending.as_mut() {
                    out.clear();
                    s.reports(&mut out).await;
                    if !out.is_empty() {
                        if let Err(e) = write(&mut writer, &out).await {
                            return e.to_string();
                        }
                    }
                }
                continue;
            }
        }
        // Every whole message in the buffer, in order.
        loop {
            let (incoming, used) = match message::parse(&buf) {
                Ok(None) => break,
                Ok(Some(m)) => m,
                Err(e) => {
                    let (status, why) = match e {
                        ParseError::TooLarge => (413, "the request is too large".to_string()),
                        ParseError::Malformed(why) => (400, why),
                    };
                    let _ =
                        write(&mut writer, &session::error(status, None, &why).to_bytes()).await;
                    return format!("bad request: {why}");
                }
            };
            buf.drain(..used);
            heard = Instant::now();
            let request = match incoming {
                Incoming::Request(r) => {
                    requested = true;
                    r
                }
                Incoming::Interleaved { channel, data } => {
                    // A publisher's media; otherwise RTCP reports: a sign of life, nothing more.
                    if let Some(p) = publishing.as_mut() {
                        if let Err(why) = p.take(channel, &data) {
                            return why;
                        }
                    }
                    continue;
                }
            };
            let mut attached = None;
            let mut reply = answer(
                shared,
                &mut conn,
                (&auth, &mut authenticated, &mut keyed),
                &request,
                (peer.ip(), &udp_media),
                &mut attached,
            )
            .await;
            match reply.action {
                Action::Announce => {
                    if let (Some(publication), Some(announced)) =
                        (attached.take(), conn.announced())
                    {
                        publishing = Some(Publishing {
                            publication,
                            ingest: Ingest::new(announced),
                            channels: Vec::new(),
                            frames: Vec::new(),
                            udp_sources: Vec::new(),
                            udp: None,
                            own: udp_media.clone(),
                            started: Instant::now(),
                        });
                    }
                }
                Action::Record => {
                    if let (Some(p), Some(session)) = (publishing.as_mut(), conn.session()) {
                        let sources: Vec<(SocketAddr, TrackKind)> = session
                            .tracks
                            .iter()
                            .flat_map(|t| match t.transport {
                                // RTCP too: its sender reports put the tracks on one timeline.
                                Transport::Udp { rtp, rtcp } => vec![
                                    (SocketAddr::new(peer.ip(), rtp), t.track),
                                    (SocketAddr::new(peer.ip(), rtcp), t.track),
                                ],
                                Transport::Tcp { .. } => Vec::new(),
                            })
                            .collect();
                        if let Some(udp) = &shared.udp {
                            let mut map = udp.publishers.lock().unwrap();
                            if let Err(from) =
                                claim_sources(&mut map, &p.udp_sources, &sources, &udp_media)
                            {
                                drop(map);
                                conn.play_failed();
                                reply.response = session::error(
                                    461,
                                    request.cseq(),
                                    &format!("client port {} is another publisher's", from.port()),
                                );
                                reply.action = Action::None;
                            } else {
                                p.udp_sources = sources.iter().map(|(from, _)| *from).collect();
                                p.udp = Some(udp.clone());
                            }
                        }
                    }
                }
                Action::Teardown => publishing = None,
                _ => {}
            }
            if reply.action == Action::Record {
                if let (Some(p), Some(session)) = (publishing.as_mut(), conn.session()) {
                    p.channels = session
                        .tracks
                        .iter()
                        .filter_map(|t| match t.transport {
                            Transport::Tcp { rtp, .. } => Some((rtp, t.track)),
                            Transport::Udp { .. } => None,
                        })
                        .collect();
                    // Audio only when its track was set up: else viewers would be told of a
                    // track that never carries anything.
                    let audio_set_up = session.tracks.iter().any(|t| t.track == TrackKind::Audio);
                    p.publication
                        .set_audio(p.ingest.audio().filter(|_| audio_set_up));
                }
            }
            // PLAY while playing changes nothing (a new subscription would replay the GOP
            // with earlier timestamps on the same SSRC).
            let mut reports_now = false;
            if reply.action == Action::Play && sending.is_none() {
                match Sending::start(shared, &conn, peer.ip(), paused.take()) {
                    Ok(s) => {
                        reply
                            .response
                            .set_header("RTP-Info", s.rtp_info(&request.uri));
                        sending = Some(s);
                        reports_now = true;
                    }
                    Err(why) => {
                        conn.play_failed();
                        reply.response = session::error(503, request.cseq(), &why);
                        reply.action = Action::None;
                    }
                }
            }
            match reply.action {
                // After PAUSE the RTP streams go on where they stopped: a receiver discards
                // sequence numbers below those it has seen.
                Action::Pause => paused = sending.take().map(|s| s.writers()),
                Action::Teardown => (sending, paused) = (None, None),
                _ => {}
            }
            if let Err(e) = write(&mut writer, &reply.response.to_bytes()).await {
                return e.to_string();
            }
            // Sender reports right after PLAY, before the first packet: a client aligns the
            // tracks from the start instead of after the first periodic report.
            if let Some(s) = sending.as_mut().filter(|_| reports_now) {
                out.clear();
                s.reports(&mut out).await;
                if !out.is_empty() {
                    if let Err(e) = write(&mut writer, &out).await {
                        return e.to_string();
                    }
                }
            }
            // A client asks once without credentials and once with them; one that keeps
            // failing is guessing, and gets no more tries on this connection.
            if reply.response.status == 401 {
                refused += 1;
                if refused >= MAX_AUTH_FAILURES {
                    return format!("{refused} requests refused for credentials");
                }
            }
        }
    }
}

async fn write(writer: &mut OwnedWriteHalf, bytes: &[u8]) -> std::io::Result<()> {
    match tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(bytes)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::other(format!(
            "the client took nothing for {} s",
            WRITE_TIMEOUT.as_secs()
        ))),
    }
}

/// Authenticates, finds the camera a DESCRIBE or SETUP names (or attaches the publisher an
/// ANNOUNCE brings, into `attached`), and lets the session answer.
async fn answer(
    shared: &Shared,
    conn: &mut Conn,
    auth: (&Auth, &mut bool, &mut bool),
    request: &message::Request,
    (peer, own): (IpAddr, &UdpMedia),
    attached: &mut Option<Publication>,
) -> session::Reply {
    // OPTIONS is how clients probe; everything that touches a camera needs the credentials.
    let (auth, authenticated, keyed) = auth;
    let refuse = |challenge| session::Reply {
        response: challenge,
        action: Action::None,
    };
    // ANNOUNCE needs a publish secret (the API token, the camera's key) wherever one is set,
    // the same rule as WHIP and RTMP, or the server's own credentials; checked before
    // `[publish] auto_create` could make a camera. A secret opens its publishing session only.
    if request.method == Method::Announce {
        let existing = target(&request.uri).and_then(|t| (shared.find)(&t.camera));
        let secrets = publish_secrets(
            shared.token.as_deref(),
            existing.as_ref().map(|s| s.inlet()),
        );
        let publish = auth.with_credentials(
            secrets
                .into_iter()
                .map(|password| Credential {
                    user: None,
                    password,
                })
                .collect(),
        );
        match check_publisher(auth, &publish, *authenticated, request) {
            Ok(PublishGrant::Server) => *authenticated = true,
            Ok(PublishGrant::Publisher) => *keyed = true,
            Err(challenge) => return refuse(challenge),
        }
    } else if *keyed
        && conn.announced().is_some()
        && matches!(
            request.method,
            Method::Setup
                | Method::Record
                | Method::Teardown
                | Method::GetParameter
                | Method::SetParameter
        )
    {
        // The publisher's own session, opened by its publish secret.
    } else if request.method != Method::Options && !*authenticated {
        if let Err(challenge) = auth.check(request) {
            return session::Reply {
                response: challenge,
                action: Action::None,
            };
        }
        *authenticated = true;
    }
    let lookup = match (&request.method, target(&request.uri)) {
        // A publisher's SETUP names its own announced tracks: nothing to look up, but its
        // client port must not be another publisher's.
        (Method::Setup, _) if conn.announced().is_some() => {
            let rtp = match request.header("Transport").map(parse_transport) {
                Some(Ok(Transport::Udp { rtp, .. })) => Some(rtp),
                _ => None,
            };
            let taken = rtp.zip(shared.udp.as_ref()).is_some_and(|(rtp, udp)| {
                let map = udp.publishers.lock().unwrap();
                taken_by_other(&map, SocketAddr::new(peer, rtp), own)
            });
            match rtp {
                Some(rtp) if taken => Lookup::Refused {
                    status: 461,
                    why: format!(
                        "client port {rtp} is another publisher's: choose other client ports"
                    ),
                },
                _ => Lookup::Publishable,
            }
        }
        (Method::Describe | Method::Setup, Some(t)) => describe(shared, &t.camera).await,
        (Method::Announce, Some(t)) if conn.session().is_none() && conn.announced().is_none() => {
            let refused = |e: AttachError| Lookup::Refused {
                status: match e {
                    AttachError::NotPublishable => 405,
                    AttachError::Busy => 409,
                },
                why: e.to_string(),
            };
            match (shared.find_publish_target)(t.camera.clone()).await {
                None => Lookup::NotFound,
                Some(s) if !s.inlet().takes_publishers() => refused(AttachError::NotPublishable),
                // An SDP the session answers 400 must not attach: the camera would flip to
                // starting and back for a request that was refused.
                Some(_) if parse_announce(&String::from_utf8_lossy(&request.body)).is_err() => {
                    Lookup::Publishable
                }
                Some(s) => match s.inlet().attach(PublisherKind::Rtsp) {
                    Ok(p) => {
                        *attached = Some(p);
                        Lookup::Publishable
                    }
                    Err(e) => refused(e),
                },
            }
        }
        _ => Lookup::NotFound,
    };
    conn.handle(request, lookup)
}

async fn describe(shared: &Shared, camera: &str) -> Lookup {
    let Some(stream) = (shared.find)(camera) else {
        return Lookup::NotFound;
    };
    if !stream.wake(WAKE_LIMIT).await {
        return Lookup::Unavailable(format!(
            "the camera is not live ({})",
            format!("{:?}", stream.state().name()).to_lowercase()
        ));
    }
    let view = stream.view();
    let Some(video) = view.video else {
        return Lookup::Unavailable("the camera has sent no picture yet".into());
    };
    let audio = view.audio.filter(|a| sdp::audio_payload(a).is_some());
    match sdp::describe(&video, audio.as_ref()) {
        Some(sdp) => Lookup::Found {
            sdp,
            audio: audio.is_some(),
        },
        None => Lookup::Unavailable(format!("{} video cannot be re-streamed", video.codec)),
    }
}

/// A publisher on this connection: its hold on the camera, and its RTP turned into frames.
struct Publishing {
    publication: Publication,
    ingest: Ingest,
    /// The interleaved channel each announced track's RTP comes on (set at RECORD).
    channels: Vec<(u8, TrackKind)>,
    frames: Vec<Frame>,
    /// The addresses a UDP publisher sends from, registered with the server's UDP loop.
    udp_sources: Vec<SocketAddr>,
    udp: Option<Arc<Udp>>,
    /// This connection's UDP media queue: which entries of the map are its own.
    own: UdpMedia,
    /// The clock packets' arrival is counted on.
    started: Instant,
}

impl Drop for Publishing {
    fn drop(&mut self) {
        // The map is the server's: an entry must not outlive its publisher, and a publisher
        // removes its own entries only.
        if let Some(udp) = &self.udp {
            let mut map = udp.publishers.lock().unwrap();
            release_sources(&mut map, &self.udp_sources, &self.own);
        }
    }
}

impl Publishing {
    /// One interleaved frame: media on a recorded track's RTP channel goes to the camera;
    /// RTCP and anything before RECORD is ignored. `Err` ends the connection.
    fn take(&mut self, channel: u8, data: &[u8]) -> Result<(), End> {
        // RTCP comes on the channel after its track's RTP channel (its sender reports count).
        let Some(&(_, track)) = self
            .channels
            .iter()
            .find(|(c, _)| *c == channel || c.checked_add(1) == Some(channel))
        else {
            return Ok(());
        };
        self.take_track(track, data)
    }

    /// One RTP or RTCP packet of `track` (interleaved or UDP).
    fn take_track(&mut self, track: TrackKind, data: &[u8]) -> Result<(), End> {
        if is_rtcp(data) {
            self.ingest.push_rtcp(track, data);
            return Ok(());
        }
        let now_us = self.started.elapsed().as_micros() as i64;
        if let Err(e) = self.ingest.push_at(track, data, now_us, &mut self.frames) {
            tracing::debug!("publisher's RTP dropped: {e}");
        }
        for frame in self.frames.drain(..) {
            if !self.publication.publish(frame) {
                return Err("the camera no longer takes this publisher".into());
            }
        }
        Ok(())
    }
}

/// A session's video and audio RTP streams.
type Writers = (Option<RtpWriter>, Option<RtpWriter>);

/// What a playing session sends: its viewer of the camera and an RTP stream per track.
struct Sending {
    subscription: Subscription,
    video: Option<(Setup, RtpWriter)>,
    audio: Option<(Setup, RtpWriter, AudioCodec)>,
    /// The video codec the client was described; another one ends the session.
    video_codec: Option<&'static str>,
    peer: IpAddr,
    /// The client RTCP addresses whose reports count as its sign of life (UDP).
    rtcp_addresses: Vec<SocketAddr>,
    udp: Option<Arc<Udp>>,
    /// When the last sender reports went; none yet: they go at once.
    last_report: Option<Instant>,
    /// The session's one wall clock for every track: this NTP time is this time (seconds) on
    /// the camera's timeline. Sender reports of all tracks follow it, so a client aligns the
    /// tracks from the first reports (sent at PLAY) on.
    clock: Option<(u64, f64)>,
    /// The timeline time (seconds) the play starts at: the first frame of the cached GOP.
    start_secs: Option<f64>,
    scratch: Vec<u8>,
}

impl Sending {
    /// `previous`: the RTP streams of the same session before a PAUSE, continued.
    fn start(
        shared: &Shared,
        conn: &Conn,
        peer: IpAddr,
        previous: Option<Writers>,
    ) -> Result<Sending, String> {
        let (mut previous_video, mut previous_audio) = previous.unwrap_or_default();
        let session = conn.session().ok_or("no session")?;
        let stream = (shared.find)(&session.camera).ok_or("the camera was removed")?;
        // The play starts at the cached GOP's keyframe; its last frame is the live edge, which
        // is now on the wall clock. (The GOP may move on before the subscription: the play
        // then starts a little later, on the same timeline.)
        let gop = stream.gop();
        let video_secs = |f: &Frame| f.is_video().then(|| f.pts as f64 / 90_000.0);
        let start_secs = gop.iter().find_map(video_secs);
        let live_secs = gop.iter().filter_map(video_secs).reduce(f64::max);
        let subscription = stream
            .subscribe(ViewerKind::Rtsp)
            .ok_or("the camera is not running")?;
        let view = stream.view();
        let mut video = None;
        let mut audio = None;
        for setup in &session.tracks {
            match setup.track {
                TrackKind::Video => {
                    let w = previous_video.take().unwrap_or_else(|| {
                        RtpWriter::new(
                            sdp::VIDEO_PAYLOAD_TYPE,
                            setup.ssrc,
                            setup.sequence,
                            setup.time_offset,
                            90_000,
                        )
                    });
                    video = Some((*setup, w));
                }
                TrackKind::Audio => {
                    let codec = view.audio.clone().ok_or("the camera has no audio now")?;
                    let (pt, _) =
                        sdp::audio_payload(&codec).ok_or("the audio cannot be re-streamed")?;
                    let w = previous_audio.take().unwrap_or_else(|| {
                        RtpWriter::new(
                            pt,
                            setup.ssrc,
                            setup.sequence,
                            setup.time_offset,
                            codec.sample_rate,
                        )
                    });
                    audio = Some((*setup, w, codec));
                }
            }
        }
        let rtcp_addresses: Vec<SocketAddr> = session
            .tracks
            .iter()
            .filter_map(|t| match t.transport {
                Transport::Udp { rtcp, .. } => Some(SocketAddr::new(peer, rtcp)),
                Transport::Tcp { .. } => None,
            })
            .collect();
        if let Some(udp) = &shared.udp {
            let mut heard = udp.heard.lock().unwrap();
            for a in &rtcp_addresses {
                heard.insert(*a, Instant::now());
            }
        }
        Ok(Sending {
            subscription,
            video,
            audio,
            video_codec: view.video.map(|v| v.codec),
            peer,
            rtcp_addresses,
            udp: shared.udp.clone(),
            last_report: None,
            clock: live_secs.map(|secs| (now_ntp(), secs)),
            start_secs,
            scratch: Vec::with_capacity(2048),
        })
    }

    /// `RTP-Info` for the PLAY answer: each track's next sequence number and the RTP time of
    /// the play's start.
    fn rtp_info(&self, uri: &str) -> String {
        let time = |w: &RtpWriter| {
            self.start_secs
                .map(|secs| w.rtp_time((secs * f64::from(w.clock_rate())).round() as i64))
        };
        let mut tracks = Vec::new();
        if let Some((_, w)) = &self.video {
            tracks.push((TrackKind::Video, w.next_sequence(), time(w)));
        }
        if let Some((_, w, _)) = &self.audio {
            tracks.push((TrackKind::Audio, w.next_sequence(), time(w)));
        }
        session::rtp_info(uri, &tracks)
    }

    /// Puts `packet` on the wire: TCP packets are appended to `out` (the caller writes them in
    /// one go), UDP ones are sent at once.
    async fn send(&mut self, packet: &Packet, out: &mut Vec<u8>) -> Result<(), End> {
        let now = now_ntp();
        if self.clock.is_none() {
            // Nothing was cached at PLAY: the first frame sent is the live edge.
            let rate = match (packet.is_video(), &self.audio) {
                (true, _) => 90_000,
                (false, Some((_, w, _))) => w.clock_rate(),
                (false, None) => return Ok(()),
            };
            self.clock = Some((now, packet.pts as f64 / f64::from(rate)));
            self.reports(out).await;
        }
        let udp = self.udp.as_deref();
        if packet.is_video() {
            let Some((setup, writer)) = &mut self.video else {
                return Ok(());
            };
            if let (Some(was), Some(now)) = (self.video_codec, &packet.video_codec) {
                if was != now.codec {
                    return Err(format!(
                        "the camera's video changed from {was} to {}",
                        now.codec
                    ));
                }
            }
            let payloads = packet.rtp(video_payloads);
            let last = payloads.len().saturating_sub(1);
            for (i, payload) in payloads.iter().enumerate() {
                emit(
                    setup,
                    writer,
                    payload,
                    packet.pts,
                    i == last,
                    now,
                    out,
                    &mut self.scratch,
                    udp,
                    self.peer,
                )
                .await;
            }
        } else if let Some((setup, writer, codec)) = &mut self.audio {
            if let Some(payload) = audio_payload(codec, &packet.data) {
                emit(
                    setup,
                    writer,
                    &payload,
                    packet.pts,
                    true,
                    now,
                    out,
                    &mut self.scratch,
                    udp,
                    self.peer,
                )
                .await;
            }
        }
        Ok(())
    }

    /// The RTP streams, to continue after a PAUSE.
    fn writers(mut self) -> Writers {
        (
            self.video.take().map(|(_, w)| w),
            self.audio.take().map(|(_, w, _)| w),
        )
    }

    /// RTCP sender reports for every track, when they are due.
    async fn reports(&mut self, out: &mut Vec<u8>) {
        let udp = self.udp.clone();
        let udp = udp.as_deref();
        if self.last_report.is_some_and(|t| t.elapsed() < REPORT_EVERY) {
            return;
        }
        let Some((at_ntp, at_secs)) = self.clock else {
            return;
        };
        self.last_report = Some(Instant::now());
        let now = now_ntp();
        let secs = at_secs + now.saturating_sub(at_ntp) as f64 / 4_294_967_296.0;
        let tracks = self
            .video
            .iter()
            .map(|(s, w)| (s, w))
            .chain(self.audio.iter().map(|(s, w, _)| (s, w)));
        for (setup, writer) in tracks {
            let pts = (secs * f64::from(writer.clock_rate())).round() as i64;
            let report = writer.sender_report_at(now, writer.rtp_time(pts));
            match setup.transport {
                Transport::Tcp { rtcp, .. } => {
                    out.extend_from_slice(&message::interleaved(rtcp, &report))
                }
                Transport::Udp { rtcp, .. } => {
                    if let Some(udp) = udp {
                        let _ = udp
                            .rtcp
                            .send_to(&report, SocketAddr::new(self.peer, rtcp))
                            .await;
                    }
                }
            }
        }
    }

    fn udp_heard(&self) -> Option<Instant> {
        let heard = self.udp.as_ref()?.heard.lock().unwrap();
        self.rtcp_addresses
            .iter()
            .filter_map(|a| heard.get(a).copied())
            .max()
    }
}

impl Drop for Sending {
    fn drop(&mut self) {
        // The map is the server's: an entry must not outlive its session.
        if let Some(udp) = &self.udp {
            let mut heard = udp.heard.lock().unwrap();
            for a in &self.rtcp_addresses {
                heard.remove(a);
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn emit(
    setup: &Setup,
    writer: &mut RtpWriter,
    payload: &[u8],
    pts: i64,
    marker: bool,
    now: u64,
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    udp: Option<&Udp>,
    peer: IpAddr,
) {
    match setup.transport {
        Transport::Tcp { rtp, .. } => {
            out.push(b'$');
            out.push(rtp);
            out.extend_from_slice(&((12 + payload.len()) as u16).to_be_bytes());
            writer.write(out, payload, pts, marker, now);
        }
        Transport::Udp { rtp, .. } => {
            scratch.clear();
            writer.write(scratch, payload, pts, marker, now);
            if let Some(udp) = udp {
                // A lost datagram is what UDP is; the client's receiver reports keep it alive.
                let _ = udp.rtp.send_to(scratch, SocketAddr::new(peer, rtp)).await;
            }
        }
    }
}

fn now_ntp() -> u64 {
    ntp_time(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default(),
    )
}

/// The next frame for a playing session; never, while none plays.
async fn next_packet(sending: &mut Option<Sending>) -> Result<Arc<Packet>, crate::hub::ViewerEnd> {
    match sending {
        Some(s) => s.subscription.next().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_udp_source_belongs_to_the_connection_that_claimed_it() {
        let (a, _a_rx) = mpsc::channel(1);
        let (b, _b_rx) = mpsc::channel(1);
        let video: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let audio: SocketAddr = "127.0.0.1:5002".parse().unwrap();
        let mut map = UdpSources::new();
        claim_sources(&mut map, &[], &[(video, TrackKind::Video)], &a).unwrap();
        assert!(!taken_by_other(&map, video, &a), "its own");
        assert!(taken_by_other(&map, video, &b));
        assert!(!taken_by_other(&map, audio, &b));
        // All or none: b's free port is not claimed either.
        assert_eq!(
            claim_sources(
                &mut map,
                &[],
                &[(audio, TrackKind::Audio), (video, TrackKind::Video)],
                &b
            ),
            Err(video)
        );
        assert!(!map.contains_key(&audio));
        // b leaving removes nothing of a's.
        release_sources(&mut map, &[video], &b);
        assert!(map[&video].1.same_channel(&a));
        // a claiming again replaces its own entries, then leaves.
        claim_sources(&mut map, &[video], &[(audio, TrackKind::Audio)], &a).unwrap();
        assert!(!map.contains_key(&video) && map[&audio].1.same_channel(&a));
        release_sources(&mut map, &[audio], &a);
        assert!(map.is_empty());
    }
}
