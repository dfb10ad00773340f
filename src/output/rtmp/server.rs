//! The RTMP publish server's IO: the listener on `[rtmp] listen`, a task per connection driving
//! rml_rtmp's sans-IO handshake and server session, and the FLV ingest (`flv.rs`) feeding the
//! camera's `Publication`.
//!
//! A connection publishes to `rtmp://HOST:PORT/{app}/{camera}`: the stream key names the camera
//! (any app name is taken; `live` is the usual one). With a token configured, the stream key
//! carries it as `{camera}?token=…`. The session's results are written in the order the
//! library made them (its chunk headers are compressed against the previous packet), and
//! nothing the task does waits on the camera: frames go to the publication with `try_send`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::chunks::ChunkGuard;
use super::flv::{FlvIngest, Tag};
use crate::output::accept::{accept_loop, ServerTasks};
use crate::output::rtsp::FindStream;
use crate::output::FindPublishTarget;
use crate::resources::{spawn_task, PublisherKind, Resource};
use crate::source::publish::{may_publish, AttachError, Publication};

/// Open RTMP connections at most; more are closed at once.
const MAX_CONNECTIONS: usize = 1024;
/// Open RTMP connections from one address at most: 128, so that one address cannot take every
/// slot (an encoder box publishing a camera a connection stays far below it).
const MAX_CONNECTIONS_PER_ADDRESS: usize = 128;
/// The read buffer until `publish` is accepted (commands are a few hundred bytes): 4 KiB, so
/// that a connection nobody has authorised holds little.
const READ_BEFORE_PUBLISHING: usize = 4 << 10;
/// The read buffer of a publisher.
const READ_WHILE_PUBLISHING: usize = 64 << 10;
/// A client must finish the handshake and start publishing within this long.
const START_LIMIT: Duration = Duration::from_secs(10);
/// A write the client does not take within this long ends the connection.
const WRITE_LIMIT: Duration = Duration::from_secs(5);
/// How often a publishing connection checks that its camera still takes it.
const CHECK_EVERY: Duration = Duration::from_millis(250);

#[derive(Clone)]
pub struct RtmpSettings {
    pub listen: SocketAddr,
    /// The API token: when set, a publisher must give it (`{camera}?token=…`).
    pub token: Option<String>,
}

impl std::fmt::Debug for RtmpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtmpSettings")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}

struct Shared {
    token: Option<String>,
    find: FindStream,
    find_publish_target: FindPublishTarget,
    cancel: CancellationToken,
}

pub struct RtmpServer {
    local: SocketAddr,
    tasks: ServerTasks,
}

impl RtmpServer {
    /// Listens on `settings.listen`, or on a free port of the same address when it is taken.
    pub async fn start(
        settings: RtmpSettings,
        find: FindStream,
        find_publish_target: FindPublishTarget,
    ) -> std::io::Result<RtmpServer> {
        let listener = match TcpListener::bind(settings.listen).await {
            Ok(l) => l,
            Err(e) if settings.listen.port() != 0 => {
                tracing::warn!(listen = %settings.listen, "RTMP port unavailable ({e}); using a free port");
                TcpListener::bind(SocketAddr::new(settings.listen.ip(), 0)).await?
            }
            Err(e) => return Err(e),
        };
        let local = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let shared = Arc::new(Shared {
            token: settings.token,
            find,
            find_publish_target,
            cancel: cancel.clone(),
        });
        let connections = TaskTracker::new();
        let task = spawn_task(accept(listener, shared, connections.clone()));
        tracing::info!(url = %format!("rtmp://{local}/live/{{camera}}"), "RTMP publishing listening");
        Ok(RtmpServer {
            local,
            tasks: ServerTasks::new(cancel, vec![task], connections),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Closes the listener and every connection, and waits for them.
    pub async fn stop(&self) {
        self.tasks.stop().await;
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>, connections: TaskTracker) {
    let cancel = shared.cancel.clone();
    accept_loop(
        "RTMP",
        listener,
        MAX_CONNECTIONS,
        MAX_CONNECTIONS_PER_ADDRESS,
        Resource::RtmpConnection,
        connections,
        cancel,
        move |socket, _peer| {
            let shared = shared.clone();
            async move { connection(&shared, socket).await }
        },
    )
    .await
}

/// A connection's hold on its camera.
struct Publishing {
    camera: String,
    publication: Publication,
    ingest: FlvIngest,
    frames: Vec<crate::media::Frame>,
    reported: bool,
}

/// Why a connection ended (for the log).
type End = String;

async fn connection(shared: &Shared, mut socket: TcpStream) -> End {
    let _ = socket.set_nodelay(true);
    let mut buf = vec![0u8; READ_BEFORE_PUBLISHING];
    let leftover = match tokio::time::timeout(START_LIMIT, handshake(&mut socket, &mut buf)).await {
        Ok(Ok(rest)) => rest,
        Ok(Err(why)) => return why,
        Err(_) => return format!("no handshake within {START_LIMIT:?}"),
    };
    let (mut session, initial) = match ServerSession::new(ServerSessionConfig::new()) {
        Ok(s) => s,
        Err(e) => return format!("cannot start an RTMP session: {e}"),
    };
    let mut results: VecDeque<ServerSessionResult> = initial.into();
    // Every byte is checked by the guard before the library buffers it.
    let mut guard = ChunkGuard::new();
    if let Err(e) = guard.feed(&leftover) {
        return format!("refused: {e}");
    }
    match handle_input(&mut session, &leftover) {
        Ok(r) => results.extend(r),
        Err(why) => return why,
    }
    let mut publishing: Option<Publishing> = None;
    let started = tokio::time::Instant::now();
    let mut check = tokio::time::interval(CHECK_EVERY);
    loop {
        while let Some(result) = results.pop_front() {
            let event = match result {
                ServerSessionResult::OutboundResponse(packet) => {
                    match tokio::time::timeout(WRITE_LIMIT, socket.write_all(&packet.bytes)).await {
                        Ok(Ok(())) => continue,
                        Ok(Err(e)) => return format!("write failed: {e}"),
                        Err(_) => return format!("the client took no data for {WRITE_LIMIT:?}"),
                    }
                }
                ServerSessionResult::RaisedEvent(event) => event,
                ServerSessionResult::UnhandleableMessageReceived(_) => continue,
            };
            let more = match event {
                ServerSessionEvent::ConnectionRequested { request_id, .. } => {
                    session.accept_request(request_id)
                }
                ServerSessionEvent::PublishStreamRequested {
                    request_id,
                    stream_key,
                    ..
                } if publishing.is_none() => match attach(shared, &stream_key).await {
                    Ok(p) => {
                        tracing::info!(camera = %p.camera, "RTMP publisher attached");
                        publishing = Some(p);
                        guard.publishing();
                        buf.resize(READ_WHILE_PUBLISHING, 0);
                        session.accept_request(request_id)
                    }
                    Err((code, why)) => {
                        // The refusal goes out first; then the connection ends.
                        if let Ok(r) = session.reject_request(request_id, code, &why) {
                            for packet in r.into_iter().filter_map(|r| match r {
                                ServerSessionResult::OutboundResponse(p) => Some(p),
                                _ => None,
                            }) {
                                let _ = tokio::time::timeout(
                                    WRITE_LIMIT,
                                    socket.write_all(&packet.bytes),
                                )
                                .await;
                            }
                        }
                        return format!("publish refused: {why}");
                    }
                },
                ServerSessionEvent::PublishStreamFinished { .. } => {
                    publishing = None;
                    continue;
                }
                ServerSessionEvent::VideoDataReceived {
                    data, timestamp, ..
                } => {
                    if let Some(p) = publishing.as_mut() {
                        if let Err(e) = p.ingest.video(&data, timestamp.value, &mut p.frames) {
                            tracing::debug!(camera = %p.camera, "RTMP video tag dropped: {e}");
                        }
                        if !p.hand_over() {
                            return "the camera let this publisher go".into();
                        }
                    }
                    continue;
                }
                ServerSessionEvent::AudioDataReceived {
                    data, timestamp, ..
                } => {
                    if let Some(p) = publishing.as_mut() {
                        match p.ingest.audio(&data, timestamp.value, &mut p.frames) {
                            Ok(Tag::Audio(audio)) => {
                                let _ = p.publication.set_audio(audio);
                            }
                            Ok(Tag::None) => {}
                            Err(e) => {
                                tracing::debug!(camera = %p.camera, "RTMP audio tag dropped: {e}")
                            }
                        }
                        if !p.hand_over() {
                            return "the camera let this publisher go".into();
                        }
                    }
                    continue;
                }
                _ => continue,
            };
            match more {
                Ok(r) => results.extend(r),
                Err(e) => return format!("RTMP session error: {e}"),
            }
        }
        let n = tokio::select! {
            read = socket.read(&mut buf) => match read {
                Ok(0) => return "the client closed the connection".into(),
                Ok(n) => n,
                Err(e) => return format!("read failed: {e}"),
            },
            _ = check.tick() => {
                if publishing.as_ref().is_some_and(|p| p.publication.is_closed()) {
                    return "the camera let this publisher go".into();
                }
                // Connections that never publish (or stop publishing) do not stay.
                if publishing.is_none() && started.elapsed() > START_LIMIT {
                    return format!("not publishing {START_LIMIT:?} after connecting");
                }
                continue;
            }
        };
        if let Err(e) = guard.feed(&buf[..n]) {
            return format!("refused: {e}");
        }
        match handle_input(&mut session, &buf[..n]) {
            Ok(r) => results.extend(r),
            Err(why) => return why,
        }
    }
}

impl Publishing {
    /// Hands the frames a tag completed to the camera; false once the camera let go.
    fn hand_over(&mut self) -> bool {
        if let Some(what) = self.ingest.unsupported.as_ref().filter(|_| !self.reported) {
            tracing::warn!(camera = %self.camera, "RTMP publisher sends {what}: dropped");
            self.reported = true;
        }
        let publication = &self.publication;
        self.frames.drain(..).all(|f| publication.publish(f))
    }
}

/// The handshake; returns the bytes that followed it (the session's first).
async fn handshake(socket: &mut TcpStream, buf: &mut [u8]) -> Result<Vec<u8>, End> {
    let mut handshake = Handshake::new(PeerType::Server);
    loop {
        let n = match socket.read(buf).await {
            Ok(0) => return Err("closed during the handshake".into()),
            Ok(n) => n,
            Err(e) => return Err(format!("read failed: {e}")),
        };
        let (response, rest) = match handshake.process_bytes(&buf[..n]) {
            Ok(HandshakeProcessResult::InProgress { response_bytes }) => (response_bytes, None),
            Ok(HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            }) => (response_bytes, Some(remaining_bytes)),
            Err(e) => return Err(format!("not an RTMP handshake: {e}")),
        };
        if let Err(e) = socket.write_all(&response).await {
            return Err(format!("write failed: {e}"));
        }
        if let Some(rest) = rest {
            return Ok(rest);
        }
    }
}

/// The session's reading of bytes. A panic in the library on hostile input ends this
/// connection, never the server.
fn handle_input(
    session: &mut ServerSession,
    bytes: &[u8],
) -> Result<Vec<ServerSessionResult>, End> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| session.handle_input(bytes))) {
        Ok(Ok(results)) => Ok(results),
        Ok(Err(e)) => Err(format!("RTMP session error: {e}")),
        Err(_) => Err("a message the RTMP library could not read".into()),
    }
}

/// The camera a publish request names, checked and attached; else an RTMP status code and why.
async fn attach(shared: &Shared, stream_key: &str) -> Result<Publishing, (&'static str, String)> {
    let (camera, query) = stream_key.split_once('?').unwrap_or((stream_key, ""));
    let given = query.split('&').find_map(|kv| kv.strip_prefix("token="));
    let existing = (shared.find)(camera);
    if !may_publish(
        shared.token.as_deref(),
        existing.as_ref().map(|s| s.inlet()),
        given,
    ) {
        return Err((
            "NetStream.Publish.Unauthorized",
            "publishing needs the token or the camera's publish key: \
             rtmp://HOST/live/{camera}?token=…"
                .into(),
        ));
    }
    let Some(stream) = (shared.find_publish_target)(camera.to_string()).await else {
        return Err(("NetStream.Publish.BadName", format!("no camera {camera:?}")));
    };
    match stream.inlet().attach(PublisherKind::Rtmp) {
        Ok(publication) => Ok(Publishing {
            camera: camera.to_string(),
            publication,
            ingest: FlvIngest::new(),
            frames: Vec::new(),
            reported: false,
        }),
        Err(e) => Err((
            match e {
                AttachError::NotPublishable => "NetStream.Publish.Rejected",
                AttachError::Busy => "NetStream.Publish.BadName",
            },
            e.to_string(),
        )),
    }
}
