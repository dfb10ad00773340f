//! The MSE WebSocket endpoints: `/api/cameras/{id}/mse` and go2rtc's `/api/ws?src={id}`.
//!
//! This file only moves messages: [`MseSession`] decides what to send. Each connection is
//! counted (websockets, and an MSE viewer while subscribed), ends when the camera stops, when the
//! client leaves, when it stays too slow, or at server shutdown.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::response::Response;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use super::ws::frame::{self, Incoming, Violation};
use super::ws::{Socket, Upgrade, Writer};
use super::{ApiError, SharedState, Src};
use crate::hub::Stream;
use crate::output::mse::{Batch, ClientCodecs, MseSession, Outgoing};
use crate::resources::{spawn_task, Counted, Resource, ViewerKind};

/// How long a go2rtc client gets to say which codecs it plays.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a closing message may take once the viewer is ending anyway.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Deserialize)]
pub struct MseQuery {
    /// Codecs the browser plays, comma-separated (go2rtc's form); all when absent.
    codecs: Option<String>,
}

/// The camera is looked up before the upgrade is checked, so an unknown camera is a 404 whether
/// or not the request is a WebSocket upgrade.
pub async fn livelens(
    State(state): State<SharedState>,
    Path(id): Path<String>,
    Query(query): Query<MseQuery>,
    upgrade: Result<Upgrade, ApiError>,
) -> Result<Response, ApiError> {
    let camera = state.cameras.stream(&id)?;
    let upgrade = upgrade?;
    // No wait for a hello here: without ?codecs= the viewer gets every track that fits MP4.
    let codecs = Some(
        query
            .codecs
            .as_deref()
            .map_or_else(ClientCodecs::all, ClientCodecs::parse),
    );
    Ok(upgrade.on_upgrade(move |socket| async move {
        let _ws = Counted::new(Resource::WebSocket);
        run(socket, camera, codecs, state).await;
    }))
}

pub async fn go2rtc(
    State(state): State<SharedState>,
    Query(query): Query<Src>,
    upgrade: Result<Upgrade, ApiError>,
) -> Result<Response, ApiError> {
    let camera = state.cameras.stream(&query.id()?)?;
    let upgrade = upgrade?;
    Ok(upgrade.on_upgrade(move |socket| async move {
        let _ws = Counted::new(Resource::WebSocket);
        // go2rtc's players speak first: {"type":"mse","value":"<codecs>"}.
        run(socket, camera, None, state).await;
    }))
}

/// A message from a go2rtc client.
#[derive(Deserialize)]
pub(crate) struct ClientMessage {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) value: serde_json::Value,
}

impl ClientMessage {
    /// The SDP of an offer: "webrtc/offer" carries it as the value; the older "webrtc" form as
    /// an {type, sdp} object.
    pub(crate) fn sdp(&self) -> &str {
        self.value
            .as_str()
            .or_else(|| self.value.get("sdp").and_then(|v| v.as_str()))
            .unwrap_or("")
    }
}

async fn send_error(writer: &Writer, text: &str) {
    let msg = json!({"type": "error", "value": text}).to_string();
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, writer.text(&msg)).await;
}

/// go2rtc's signalling: waits for `{"type":"mse","value":codecs}` (returned), answering
/// `{"type":"webrtc/offer","value":sdp}` with `{"type":"webrtc/answer","value":sdp}` meanwhile.
/// WebRTC sessions made here are listed in `sessions` and end with the socket.
async fn hello(
    socket: &mut Socket,
    camera: &Arc<Stream>,
    state: &SharedState,
    sessions: &mut Vec<String>,
) -> Option<ClientCodecs> {
    let deadline = tokio::time::Instant::now() + HELLO_TIMEOUT;
    let writer = socket.writer().clone();
    loop {
        // Once a WebRTC session exists the socket is its signalling channel: no deadline.
        let next = if sessions.is_empty() {
            match tokio::time::timeout_at(deadline, socket.recv()).await {
                Ok(m) => m,
                Err(_) => {
                    send_error(&writer, "mse: no {\"type\":\"mse\"} request within 10 s").await;
                    return None;
                }
            }
        } else {
            socket.recv().await
        };
        let text = match next? {
            Incoming::Text(text) => text,
            Incoming::Ping(payload) => {
                writer.pong(&payload).await.ok()?;
                continue;
            }
            Incoming::Close(_) => return None,
            Incoming::Binary(_) | Incoming::Pong => continue,
        };
        let m = match serde_json::from_str::<ClientMessage>(&text) {
            Ok(m) => m,
            Err(e) => {
                send_error(&writer, &format!("malformed message: {e}")).await;
                continue;
            }
        };
        match m.kind.as_str() {
            "mse" => return Some(ClientCodecs::parse(m.value.as_str().unwrap_or(""))),
            "webrtc/offer" | "webrtc" => {
                let sdp = m.sdp();
                let reply = match &state.webrtc {
                    None => Err("webrtc: WebRTC is not running".to_string()),
                    Some(w) => w
                        .offer(camera.clone(), sdp)
                        .await
                        .map_err(|e| format!("webrtc/offer: {e}")),
                };
                match reply {
                    Ok((session, answer)) => {
                        sessions.push(session);
                        let msg = json!({"type": "webrtc/answer", "value": answer}).to_string();
                        writer.text(&msg).await.ok()?;
                    }
                    Err(e) => send_error(&writer, &e).await,
                }
            }
            // livelens is ICE-lite with its candidates in the answer: browser candidates are not needed.
            "webrtc/candidate" => {}
            other => {
                let reply = format!("unsupported message type {other:?} (livelens speaks \"mse\" and \"webrtc/offer\")");
                send_error(&writer, &reply).await;
            }
        }
    }
}

/// Serves one socket; WebRTC sessions signalled over it end with it (go2rtc's players may run
/// WebRTC and MSE side by side on one socket and close the loser).
async fn run(
    socket: Socket,
    camera: Arc<Stream>,
    codecs: Option<ClientCodecs>,
    state: SharedState,
) {
    let mut sessions = Vec::new();
    let id = camera.id().to_string();
    serve(socket, camera, codecs, &state, &mut sessions).await;
    if let Some(w) = &state.webrtc {
        for session in &sessions {
            w.remove(&id, session).await;
        }
    }
}

/// How a viewer's connection ends: the close frame it is sent, if any.
enum Ending {
    /// Why livelens ends it (close code 1000 with the reason).
    Reason(String),
    /// The client closed, or its socket failed: answer its close, nothing to explain.
    ClientLeft,
    /// A write was cut off half-way (shutdown while the client was slow): no frame can follow.
    Broken,
    /// A write failed or timed out, maybe half-way: no close frame can follow, so the reason is
    /// only logged (a client that stopped reading would not read it anyway).
    Cut(String),
}

async fn serve(
    mut socket: Socket,
    camera: Arc<Stream>,
    codecs: Option<ClientCodecs>,
    state: &SharedState,
    sessions: &mut Vec<String>,
) {
    let shutdown = state.shutdown.clone();
    let writer = socket.writer().clone();
    let codecs = match codecs {
        Some(c) => c,
        None => {
            let said = tokio::select! {
                c = hello(&mut socket, &camera, state, sessions) => c,
                _ = shutdown.cancelled() => None,
            };
            match said {
                Some(c) => c,
                None => {
                    let (code, reason) = match socket.violation() {
                        Some(v) => (v.code, v.reason),
                        None => (frame::CLOSE_NORMAL, ""),
                    };
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, writer.close(code, reason)).await;
                    return;
                }
            }
        }
    };
    let Some(mut viewer) = camera.subscribe(ViewerKind::Mse) else {
        let text = format!("mse: camera {:?} is stopped", camera.id());
        send_error(&writer, &text).await;
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, writer.close(frame::CLOSE_NORMAL, &text)).await;
        return;
    };
    // The client's messages are read by a task of their own, so the frame loop below only ever
    // waits for frames. It cancels `stop` when the client closes (or breaks the protocol: its
    // result); the server's shutdown cancels it too. Pings are answered by the frame loop, the
    // socket's only writer, after the next frame (a slot, not a channel in the select: polling
    // one more queue per frame per viewer was a measurable cost).
    let stop = shutdown.child_token();
    let pong: Arc<Mutex<Option<Bytes>>> = Arc::default();
    let pong_slot = pong.clone();
    let reader = {
        let stop = stop.clone();
        spawn_task(async move {
            let violation = loop {
                tokio::select! {
                    _ = stop.cancelled() => return None,
                    msg = socket.recv() => match msg {
                        Some(Incoming::Ping(payload)) => {
                            *pong_slot.lock().unwrap() = Some(payload);
                        }
                        Some(Incoming::Close(_)) => break None,
                        None => break socket.violation(),
                        // Clients may re-send their hello; nothing to do.
                        Some(_) => {}
                    },
                }
            };
            stop.cancel();
            violation
        })
    };
    let mut session = MseSession::new(codecs);
    let mut batch = Batch::new(state.mse.batch);
    let mut stopped = std::pin::pin!(stop.cancelled());
    let ending = loop {
        // Frames already waiting join the write: a viewer that is behind catches up in fewer.
        if batch.full() || (!viewer.ready() && batch.due(Instant::now())) {
            let messages = batch.take();
            let parts: Vec<(u8, &[u8])> = messages.iter().map(as_frame).collect();
            tokio::select! {
                biased;
                sent = writer.send(&parts) => if let Err(e) = sent {
                    break Ending::Cut(format!("the viewer stopped reading ({e})"));
                },
                _ = &mut stopped => break Ending::Broken,
            }
            let ping = pong.lock().unwrap().take();
            if let Some(payload) = ping {
                if writer.pong(&payload).await.is_err() {
                    break Ending::ClientLeft;
                }
            }
        }
        let deadline = batch.deadline();
        // While a picture waits out `[mse] batch`, this task sleeps instead of waking for each
        // frame: the frames queue and are taken together at the deadline.
        let take_next = !batch.holds_picture() || viewer.ready();
        let frame = tokio::select! {
            biased;
            _ = &mut stopped => break Ending::ClientLeft,
            frame = viewer.next(), if take_next => frame,
            // `next` may be skipping to a keyframe: what waits goes out meanwhile.
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now).into()), if deadline.is_some() => continue,
        };
        let frame = match frame {
            Ok(f) => f,
            Err(end) => break Ending::Reason(end.to_string()),
        };
        let now = Instant::now();
        batch.push(session.on_dropped(viewer.dropped_frames()), false, now);
        // The audio description only matters when a keyframe may start a new init segment.
        let audio = if frame.is_video() && frame.keyframe {
            camera.audio()
        } else {
            None
        };
        match session.on_frame(&frame, audio.as_ref()) {
            Ok(m) => batch.push(m, !frame.is_video(), now),
            Err(text) => {
                send_error(&writer, &text).await;
                break Ending::Reason(text);
            }
        }
    };
    stop.cancel();
    let violation = reader.await.ok().flatten();
    let (code, reason) = match (violation, ending) {
        (_, Ending::Broken) => return,
        (_, Ending::Cut(reason)) => {
            tracing::debug!(camera = camera.id(), %reason, "MSE viewer cut");
            return;
        }
        (Some(Violation { code, reason }), _) => (code, reason.to_string()),
        (None, Ending::Reason(r)) => (frame::CLOSE_NORMAL, r),
        (None, Ending::ClientLeft) if shutdown.is_cancelled() => {
            (frame::CLOSE_NORMAL, "the server is shutting down".into())
        }
        (None, Ending::ClientLeft) => (frame::CLOSE_NORMAL, String::new()),
    };
    if !reason.is_empty() {
        tracing::debug!(camera = camera.id(), %reason, "MSE viewer ended");
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, writer.close(code, &reason)).await;
}

fn as_frame(m: &Outgoing) -> (u8, &[u8]) {
    match m {
        Outgoing::Text(t) => (frame::OP_TEXT, t.as_bytes()),
        Outgoing::Binary(b) => (frame::OP_BINARY, &b[..]),
    }
}
