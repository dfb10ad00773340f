//! A WebRTC worker loop: owns a share of the peers and drives them (one loop per core).
//!
//! The rule that keeps it from ever deadlocking: the loop awaits nothing but its own inputs.
//! Datagrams arrive on a bounded queue that the socket readers fill with `try_send` (a full
//! queue drops the datagram, as a congested network would); frames come from the peers' feeds,
//! which the loop polls itself (so a slow loop makes a peer lag in the hub's ring and skip to
//! the next keyframe, never block a producer); API commands carry oneshot replies. Removing a
//! peer is synchronous: its feed is aborted and its subscription dropped on the loop's next poll.
//!
//! str0m is driven as its docs ask: after every input, `poll_output` until `Timeout`. Only the
//! peer that got the input is drained; timers are handled for the peers whose deadline is due.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::SelectAll;
use futures_util::StreamExt;
use str0m::net::{Protocol, Receive, Transmit};
use str0m::Input;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::end::{self, EndReason};
use super::peer::{FeedStream, Media, Peer};
use super::route::{Router, SessionId};
use super::sdpfrag::{self, Patch, PatchError, SdpFrag};
use super::send::{send_all, Socket};
use super::transcode::Transcoders;

/// Datagrams waiting for one loop; beyond this the readers drop (UDP loss, never a wait).
pub const DATAGRAM_QUEUE: usize = 4096;
/// Timers due this soon are handled together, so many peers cost few wake-ups.
const TIMER_SLACK: Duration = Duration::from_millis(2);
/// Peers are checked for expiry (never connected, ICE lost) at least this often.
const EXPIRY_CHECK: Duration = Duration::from_millis(250);

pub struct Datagram {
    pub data: Vec<u8>,
    pub source: SocketAddr,
    pub destination: SocketAddr,
}

pub enum Command {
    Add(Box<Peer>),
    /// Ends a session if it belongs to `camera`; replies whether it did.
    Remove {
        camera: String,
        session: SessionId,
        reply: oneshot::Sender<bool>,
    },
    /// A PATCH (trickle ICE, ICE restart) for a session of `camera`; replies how many
    /// candidates were applied, or why not.
    Patch {
        camera: String,
        session: SessionId,
        frag: SdpFrag,
        if_match_star: bool,
        reply: oneshot::Sender<Result<usize, PatchError>>,
    },
    /// Ends every session of a camera; replies how many.
    RemoveCamera {
        camera: String,
        reply: oneshot::Sender<usize>,
    },
}

/// The UDP sockets (one per advertised address, same port).
pub type Sockets = Arc<Vec<Socket>>;

pub struct Shard {
    index: usize,
    peers: HashMap<SessionId, Peer>,
    sockets: Sockets,
    router: Arc<Mutex<Router>>,
    transcoders: Arc<Transcoders>,
    /// Reused for every drain.
    transmits: Vec<Transmit>,
    /// Reused for every batched send.
    scratch: Vec<u8>,
    next_wake: Instant,
    last_expiry_check: Instant,
    drop_input: bool,
}

impl Shard {
    pub fn new(
        index: usize,
        sockets: Sockets,
        router: Arc<Mutex<Router>>,
        transcoders: Arc<Transcoders>,
    ) -> Shard {
        let now = Instant::now();
        Shard {
            index,
            peers: HashMap::new(),
            sockets,
            router,
            transcoders,
            transmits: Vec::new(),
            scratch: Vec::new(),
            next_wake: now + EXPIRY_CHECK,
            last_expiry_check: now,
            // Fault injection for tests: behave as if a firewall dropped every incoming datagram.
            drop_input: std::env::var_os("LIVELENS_TEST_DROP_WEBRTC_INPUT").is_some(),
        }
    }

    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut datagrams: mpsc::Receiver<(SessionId, Datagram)>,
        cancel: CancellationToken,
    ) {
        let mut feeds: SelectAll<FeedStream> = SelectAll::new();
        loop {
            // Timers first: a loop kept busy by frames and datagrams must still run str0m's
            // timers and the expiry check (the select below prefers its other inputs).
            if Instant::now() >= self.next_wake {
                self.timeouts(&mut feeds);
            }
            let wake = tokio::time::sleep_until(tokio::time::Instant::from_std(self.next_wake));
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                Some(cmd) = commands.recv() => self.command(cmd, &mut feeds),
                Some((session, d)) = datagrams.recv() => self.receive(&session, d, &mut feeds),
                Some((session, media)) = feeds.next() => self.media(&session, &media, &mut feeds),
                _ = wake => self.timeouts(&mut feeds),
            }
        }
        let sessions: Vec<SessionId> = self.peers.keys().cloned().collect();
        for s in sessions {
            self.end(&s, false, Some(EndReason::Shutdown));
        }
        // Dropping the feeds drops every subscription and transcoder lease.
        drop(feeds);
    }

    fn command(&mut self, cmd: Command, feeds: &mut SelectAll<FeedStream>) {
        match cmd {
            Command::Add(peer) => {
                let session = peer.session.clone();
                self.peers.insert(session.clone(), *peer);
                self.drive(&session, feeds);
            }
            Command::Remove {
                camera,
                session,
                reply,
            } => {
                let found = self
                    .peers
                    .get(&session)
                    .is_some_and(|p| p.camera.id() == camera);
                if found {
                    self.end(&session, true, Some(EndReason::Deleted));
                }
                let _ = reply.send(found);
            }
            Command::Patch {
                camera,
                session,
                frag,
                if_match_star,
                reply,
            } => {
                let result = match self.peers.get_mut(&session) {
                    Some(peer) if peer.camera.id() == camera => {
                        sdpfrag::classify(frag, peer.remote_ufrag(), if_match_star)
                            .and_then(|Patch::Trickle(c)| peer.trickle(&c))
                    }
                    _ => Err(PatchError::UnknownSession(session.to_string())),
                };
                if result.is_ok() {
                    self.drive(&session, feeds);
                }
                let _ = reply.send(result);
            }
            Command::RemoveCamera { camera, reply } => {
                let sessions: Vec<SessionId> = self
                    .peers
                    .values()
                    .filter(|p| p.camera.id() == camera)
                    .map(|p| p.session.clone())
                    .collect();
                for s in &sessions {
                    self.end(s, true, Some(EndReason::CameraStopped));
                }
                let _ = reply.send(sessions.len());
            }
        }
    }

    fn receive(&mut self, session: &SessionId, d: Datagram, feeds: &mut SelectAll<FeedStream>) {
        if self.drop_input {
            return;
        }
        let Some(peer) = self.peers.get_mut(session) else {
            return;
        };
        let Ok(contents) = d.data.as_slice().try_into() else {
            return;
        };
        let now = Instant::now();
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source: d.source,
                destination: d.destination,
                contents,
            },
        );
        // A datagram str0m does not take (a binding indication, a packet from a pair that has
        // not succeeded, a forgery naming the session's ufrag) is dropped; it neither ends the
        // peer nor counts as hearing from it.
        let mut accepted = true;
        guarded(peer, |p| {
            if !p.rtc.accepts(&input) {
                accepted = false;
                return Ok(());
            }
            p.rtc.handle_input(input)
        });
        if !accepted {
            return;
        }
        peer.heard(now);
        self.drive(session, feeds);
    }

    fn media(&mut self, session: &SessionId, media: &Media, feeds: &mut SelectAll<FeedStream>) {
        if matches!(media, Media::Ended) {
            // The camera stopped, or the viewer stayed too slow: a peer without media goes.
            self.end(session, true, Some(EndReason::FeedEnded));
            return;
        }
        let Some(peer) = self.peers.get_mut(session) else {
            return;
        };
        let now = Instant::now();
        guarded(peer, |p| {
            p.write(media, now);
            // str0m sends what was written on a timeout.
            p.handle_timeout(now)
        });
        self.drive(session, feeds);
    }

    fn timeouts(&mut self, feeds: &mut SelectAll<FeedStream>) {
        let now = Instant::now();
        let due: Vec<SessionId> = self
            .peers
            .values()
            .filter(|p| p.deadline <= now + TIMER_SLACK)
            .map(|p| p.session.clone())
            .collect();
        for session in &due {
            if let Some(peer) = self.peers.get_mut(session) {
                guarded(peer, |p| p.handle_timeout(now));
            }
            self.drive(session, feeds);
        }
        if now.duration_since(self.last_expiry_check) >= EXPIRY_CHECK {
            self.last_expiry_check = now;
            let expired: Vec<(SessionId, EndReason)> = self
                .peers
                .values()
                .filter_map(|p| p.expiry(now).map(|r| (p.session.clone(), r)))
                .collect();
            for (s, reason) in expired {
                self.end(&s, false, Some(reason));
            }
        }
        let earliest = self.peers.values().map(|p| p.deadline).min();
        let limit = now + EXPIRY_CHECK;
        self.next_wake = earliest
            .map_or(limit, |d| d.min(limit))
            .max(now + Duration::from_millis(1));
    }

    /// Drains a peer after an input: sends its datagrams, starts its feed, removes it if dead.
    fn drive(&mut self, session: &SessionId, feeds: &mut SelectAll<FeedStream>) {
        let Some(peer) = self.peers.get_mut(session) else {
            return;
        };
        let transmits = &mut self.transmits;
        let transcoders = &self.transcoders;
        let drained = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            peer.drain(transmits, transcoders)
        }));
        match drained {
            Ok(Ok(Some(feed))) => feeds.push(feed),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                peer.note_end(EndReason::Failed(e.to_string()));
                peer.rtc.disconnect();
            }
            Err(_) => {
                peer.note_end(EndReason::Panicked);
                peer.rtc.disconnect();
            }
        }
        self.next_wake = self.next_wake.min(peer.deadline);
        let alive = peer.rtc.is_alive();
        self.send();
        if !alive {
            self.end(session, false, None);
        }
    }

    fn send(&mut self) {
        send_all(&self.sockets, &mut self.transmits, &mut self.scratch);
    }

    /// Removes a peer and logs why it ended (`reason`, unless an earlier cause was noted).
    /// `tell` closes it properly first (RTCP BYE, DTLS close_notify), so the browser learns at
    /// once; a peer that is already dead or gone is just dropped.
    fn end(&mut self, session: &SessionId, tell: bool, reason: Option<EndReason>) {
        let Some(mut peer) = self.peers.remove(session) else {
            return;
        };
        if let Some(reason) = reason {
            peer.note_end(reason);
        }
        self.router.lock().unwrap().remove(session);
        if tell && peer.rtc.is_alive() {
            let transmits = &mut self.transmits;
            let transcoders = &self.transcoders;
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if peer.rtc.close().is_ok() {
                    let _ = peer.drain(transmits, transcoders);
                    let _ = peer.handle_timeout(Instant::now());
                    let _ = peer.drain(transmits, transcoders);
                }
            }));
            self.send();
        }
        peer.end_feed();
        end::log(
            &peer.end_reason(),
            peer.is_publisher(),
            peer.camera.id(),
            &peer.session,
        );
        tracing::debug!(session = %peer.session, shard = self.index, "WebRTC peer removed");
    }
}

/// Runs one input on a peer's str0m. An error, or a panic (str0m's "panic means bug": it must
/// never panic on input), ends that peer, never the loop; the error is noted as its end reason.
fn guarded(peer: &mut Peer, input: impl FnOnce(&mut Peer) -> Result<(), str0m::RtcError>) {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| input(peer)));
    let reason = match result {
        Ok(Ok(())) => return,
        Ok(Err(e)) => EndReason::Failed(e.to_string()),
        Err(_) => EndReason::Panicked,
    };
    peer.note_end(reason);
    peer.rtc.disconnect();
}
