//! The MSE WebSocket endpoints: `/api/cameras/{id}/mse` and go2rtc's `/api/ws?src={id}`.
//!
//! This file only moves messages: [`MseSession`] decides what to send. Each connection is
//! counted (websockets, and an MSE viewer while subscribed), ends when the camera stops, when the
//! client leaves, when it stays too slow, or at server shutdown.

use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, SharedState};
use crate::hub::Camera;
use crate::output::mse::{ClientCodecs, MseSession, Outgoing};
use crate::resources::{spawn_task, Counted, Resource, ViewerKind};
use futures_util::{Sink, SinkExt, StreamExt};

/// A send that takes longer than this means the client stopped reading: disconnect it.
const SEND_TIMEOUT: Duration = Duration::from_secs(20);
/// Read buffer per socket (see [`upgrade_or_400`]).
const READ_BUFFER: usize = 4096;
/// The largest message a client may send: a WebRTC offer over go2rtc's signalling is the
/// largest thing it has to say.
const MAX_CLIENT_MESSAGE: usize = 64 << 10;
/// How long a go2rtc client gets to say which codecs it plays.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
pub struct MseQuery {
    /// Codecs the browser plays, comma-separated (go2rtc's form); all when absent.
    codecs: Option<String>,
}

/// The camera is looked up before the upgrade is checked, so an unknown camera is a 404 whether
/// or not the request is a WebSocket upgrade.
fn upgrade_or_400(
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<WebSocketUpgrade, ApiError> {
    upgrade
        .map(|u| {
            // tungstenite zero-fills its whole read buffer on every read attempt, and a viewer's
            // socket is polled for reading after every frame it is sent: with the default
            // 128 KiB that was half the CPU of 300 viewers. Clients only send short JSON.
            u.read_buffer_size(READ_BUFFER)
                .max_message_size(MAX_CLIENT_MESSAGE)
                .max_frame_size(MAX_CLIENT_MESSAGE)
        })
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("this endpoint is a WebSocket: {}", e.body_text()),
            )
        })
}

pub async fn livelens(
    State(state): State<SharedState>,
    Path(id): Path<String>,
    Query(query): Query<MseQuery>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let camera = state.hub.get(&id)?;
    let upgrade = upgrade_or_400(upgrade)?;
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

#[derive(Deserialize)]
pub struct Go2rtcQuery {
    src: Option<String>,
}

pub async fn go2rtc(
    State(state): State<SharedState>,
    Query(query): Query<Go2rtcQuery>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let id = query.src.ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "missing query parameter src (the camera id)",
        )
    })?;
    let camera = state.hub.get(&id)?;
    let upgrade = upgrade_or_400(upgrade)?;
    Ok(upgrade.on_upgrade(move |socket| async move {
        let _ws = Counted::new(Resource::WebSocket);
        // go2rtc's players speak first: {"type":"mse","value":"<codecs>"}.
        run(socket, camera, None, state).await;
    }))
}

#[derive(Deserialize)]
struct ClientMessage {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    value: serde_json::Value,
}

async fn send<S>(socket: &mut S, message: Message) -> Result<(), ()>
where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    match tokio::time::timeout(SEND_TIMEOUT, socket.send(message)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

async fn send_error<S>(socket: &mut S, text: &str)
where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    let msg = json!({"type": "error", "value": text}).to_string();
    let _ = send(socket, Message::Text(Utf8Bytes::from(msg))).await;
}

/// go2rtc's signalling: waits for `{"type":"mse","value":codecs}` (returned), answering
/// `{"type":"webrtc/offer","value":sdp}` with `{"type":"webrtc/answer","value":sdp}` meanwhile.
/// WebRTC sessions made here are listed in `sessions` and end with the socket.
async fn hello(
    socket: &mut WebSocket,
    camera: &std::sync::Arc<Camera>,
    state: &SharedState,
    sessions: &mut Vec<String>,
) -> Option<ClientCodecs> {
    let deadline = tokio::time::Instant::now() + HELLO_TIMEOUT;
    loop {
        // Once a WebRTC session exists the socket is its signalling channel: no deadline.
        let next = if sessions.is_empty() {
            match tokio::time::timeout_at(deadline, socket.recv()).await {
                Ok(m) => m,
                Err(_) => {
                    send_error(socket, "mse: no {\"type\":\"mse\"} request within 10 s").await;
                    return None;
                }
            }
        } else {
            socket.recv().await
        };
        let Some(Ok(msg)) = next else {
            return None;
        };
        let Message::Text(text) = msg else {
            continue;
        };
        let m = match serde_json::from_str::<ClientMessage>(&text) {
            Ok(m) => m,
            Err(e) => {
                send_error(socket, &format!("malformed message: {e}")).await;
                continue;
            }
        };
        match m.kind.as_str() {
            "mse" => return Some(ClientCodecs::parse(m.value.as_str().unwrap_or(""))),
            "webrtc/offer" | "webrtc" => {
                // "webrtc/offer" carries the SDP; the older "webrtc" form an {type, sdp} object.
                let sdp = m
                    .value
                    .as_str()
                    .or_else(|| m.value.get("sdp").and_then(|v| v.as_str()))
                    .unwrap_or("");
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
                        if send(socket, Message::Text(Utf8Bytes::from(msg)))
                            .await
                            .is_err()
                        {
                            return None;
                        }
                    }
                    Err(e) => send_error(socket, &e).await,
                }
            }
            // livelens is ICE-lite with its candidates in the answer: browser candidates are not needed.
            "webrtc/candidate" => {}
            other => {
                let reply = format!("unsupported message type {other:?} (livelens speaks \"mse\" and \"webrtc/offer\")");
                send_error(socket, &reply).await;
            }
        }
    }
}

/// Serves one socket; WebRTC sessions signalled over it end with it (go2rtc's players may run
/// WebRTC and MSE side by side on one socket and close the loser).
async fn run(
    socket: WebSocket,
    camera: std::sync::Arc<Camera>,
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

async fn serve(
    mut socket: WebSocket,
    camera: std::sync::Arc<Camera>,
    codecs: Option<ClientCodecs>,
    state: &SharedState,
    sessions: &mut Vec<String>,
) {
    let shutdown = state.shutdown.clone();
    let codecs = match codecs {
        Some(c) => c,
        None => {
            let said = tokio::select! {
                c = hello(&mut socket, &camera, state, sessions) => c,
                _ = shutdown.cancelled() => None,
            };
            match said {
                Some(c) => c,
                None => return,
            }
        }
    };
    let Some(mut viewer) = camera.stream.subscribe(ViewerKind::Mse) else {
        send_error(
            &mut socket,
            &format!("mse: camera {:?} is stopped", camera.id()),
        )
        .await;
        return;
    };
    // The client's messages are read by a task of their own: polling the socket for reading
    // after every frame sent cost more than the sending itself. It cancels `stop` when the
    // client closes; the server's shutdown cancels it too.
    let (mut sink, mut stream) = socket.split();
    let stop = shutdown.child_token();
    let reader = {
        let stop = stop.clone();
        spawn_task(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    msg = stream.next() => match msg {
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                        // Clients may re-send their hello or ping; nothing to do.
                        Some(Ok(_)) => {}
                    },
                }
            }
            stop.cancel();
        })
    };
    let mut session = MseSession::new(codecs);
    let mut stopped = std::pin::pin!(stop.cancelled());
    let reason = loop {
        let frame = tokio::select! {
            frame = viewer.next() => frame,
            _ = &mut stopped => break None,
        };
        let frame = match frame {
            Ok(f) => f,
            Err(end) => break Some(end.to_string()),
        };
        let mut messages = Vec::with_capacity(2);
        messages.extend(session.on_dropped(viewer.dropped_frames()));
        // The audio description only matters when a keyframe may start a new init segment.
        let audio = if frame.is_video() && frame.keyframe {
            camera.stream.audio()
        } else {
            None
        };
        match session.on_frame(&frame, audio.as_ref()) {
            Ok(m) => messages.extend(m),
            Err(text) => {
                send_error(&mut sink, &text).await;
                break Some(text);
            }
        }
        if emit_all(&mut sink, messages).await.is_err() {
            break Some("the viewer stopped reading".into());
        }
    };
    stop.cancel();
    let _ = reader.await;
    let reason = match reason {
        Some(r) => r,
        None if shutdown.is_cancelled() => "the server is shutting down".into(),
        // The client closed: nothing more to say to it.
        None => return,
    };
    tracing::debug!(camera = camera.id(), %reason, "MSE viewer ended");
    let _ = send(
        &mut sink,
        Message::Close(Some(axum::extract::ws::CloseFrame {
            code: 1000,
            reason: Utf8Bytes::from(reason.chars().take(120).collect::<String>()),
        })),
    )
    .await;
}

fn message(m: Outgoing) -> Message {
    match m {
        Outgoing::Text(t) => Message::Text(Utf8Bytes::from(t)),
        Outgoing::Binary(b) => Message::Binary(b),
    }
}

/// Sends a frame's messages with one flush (one write to the socket for the moof and the mdat).
/// The send timeout's timer is only set when the socket does not take the bytes at once, which
/// is rare: a timer per frame per viewer was a measurable cost.
async fn emit_all<S>(sink: &mut S, messages: Vec<Outgoing>) -> Result<(), ()>
where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    let write = async {
        for m in messages {
            sink.feed(message(m)).await?;
        }
        sink.flush().await
    };
    let mut write = std::pin::pin!(write);
    let result = match futures_util::poll!(write.as_mut()) {
        std::task::Poll::Ready(r) => r,
        std::task::Poll::Pending => match tokio::time::timeout(SEND_TIMEOUT, write).await {
            Ok(r) => r,
            Err(_) => return Err(()),
        },
    };
    result.map_err(|_| ())
}
