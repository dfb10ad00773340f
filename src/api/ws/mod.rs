//! Server WebSockets written straight to the socket.
//!
//! The video WebSockets (`/api/cameras/{id}/mse`, go2rtc's `/api/ws`) send every viewer the same
//! shared fragments. A WebSocket library copies each payload into its own write buffer and
//! polls through a `Sink`: with 1,000 viewers of a 2 Mb/s camera that copy and that machinery
//! were most of livelens's own CPU. Here the upgrade is answered by hand, the connection is taken
//! back from hyper ([`Connection`]: it keeps its slot in the connection limits and its count),
//! and each message is one `writev` of a few header bytes and the shared payload.
//!
//! [`Upgrade`] is the extractor (checks the handshake, 400 otherwise); [`Socket`] reads the
//! client's messages ([`frame::Decoder`]); [`Writer`] (cloneable, for a reader task beside the
//! writing loop) writes messages, waiting at most [`SEND_TIMEOUT`] for a client that stopped
//! reading.

pub mod frame;

use std::future::Future;
use std::io::{self, IoSlice};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;

use self::frame::{Decoder, Header, Incoming, Violation};
use super::connections::Connection;
use super::ApiError;
use crate::resources::spawn_task;

/// A send that takes longer than this means the client stopped reading.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(20);
/// The largest message a client may send: a WebRTC offer over go2rtc's signalling is the
/// largest thing it has to say.
pub const MAX_CLIENT_MESSAGE: usize = 64 << 10;
/// Bytes read from a client at a time: clients only send short messages.
const READ_CHUNK: usize = 4096;

/// A checked WebSocket handshake (RFC 6455 §4.2.1), to be answered with [`Upgrade::on_upgrade`].
pub struct Upgrade {
    accept: String,
    on_upgrade: OnUpgrade,
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 §4.2.2): the key and the
/// protocol's GUID, SHA-1, base64.
fn accept_key(key: &[u8]) -> String {
    use base64::Engine;
    use sha1::{Digest, Sha1};
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

fn has_token(headers: &HeaderMap, name: axum::http::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Upgrade, ApiError> {
        let refuse = |why: &str| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("this endpoint is a WebSocket: {why}"),
            )
        };
        if parts.method != Method::GET {
            return Err(refuse("the request must be a GET"));
        }
        let h = &parts.headers;
        if !has_token(h, CONNECTION, "upgrade") || !has_token(h, UPGRADE, "websocket") {
            return Err(refuse(
                "`Connection: upgrade` and `Upgrade: websocket` are missing",
            ));
        }
        if h.get(SEC_WEBSOCKET_VERSION) != Some(&HeaderValue::from_static("13")) {
            return Err(refuse("`Sec-WebSocket-Version` must be 13"));
        }
        let Some(key) = h.get(SEC_WEBSOCKET_KEY) else {
            return Err(refuse("`Sec-WebSocket-Key` is missing"));
        };
        let accept = accept_key(key.as_bytes());
        let on_upgrade = parts
            .extensions
            .remove::<OnUpgrade>()
            .ok_or_else(|| refuse("this connection cannot be upgraded"))?;
        Ok(Upgrade { accept, on_upgrade })
    }
}

impl Upgrade {
    /// The 101 answer; `serve` runs with the socket once hyper hands the connection over.
    pub fn on_upgrade<F, Fut>(self, serve: F) -> Response
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let on_upgrade = self.on_upgrade;
        spawn_task(async move {
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            match Socket::from_upgraded(upgraded) {
                Some(socket) => serve(socket).await,
                None => {
                    tracing::error!("a WebSocket upgrade on a connection livelens did not accept")
                }
            }
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(CONNECTION, "upgrade")
            .header(UPGRADE, "websocket")
            .header(SEC_WEBSOCKET_ACCEPT, self.accept)
            .body(Body::empty())
            .expect("a valid 101 response")
    }
}

/// The reading side of a WebSocket, and a way to its [`Writer`].
pub struct Socket {
    writer: Writer,
    decoder: Decoder,
    /// Set once the connection ended.
    done: bool,
    violation: Option<Violation>,
}

/// The writing side: shared with a reader task, messages are written whole, one at a time
/// (a writer task and a reader task must not both write; only one of them holds a `Writer`
/// that is used at any time, or the messages go through a channel).
#[derive(Clone)]
pub struct Writer {
    conn: Arc<Connection>,
}

impl Socket {
    fn from_upgraded(upgraded: Upgraded) -> Option<Socket> {
        let parts = upgraded.downcast::<TokioIo<Connection>>().ok()?;
        let mut decoder = Decoder::new(MAX_CLIENT_MESSAGE);
        decoder.push(&parts.read_buf);
        Some(Socket {
            writer: Writer {
                conn: Arc::new(parts.io.into_inner()),
            },
            decoder,
            done: false,
            violation: None,
        })
    }

    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// The client's next message; `None` once the connection ended or the client broke the
    /// protocol ([`Socket::violation`] then says how; the owner answers with a close frame).
    /// Cancel-safe. Never writes, so a reader task cannot interleave with the writer.
    pub async fn recv(&mut self) -> Option<Incoming> {
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            if self.done || self.violation.is_some() {
                return None;
            }
            match self.decoder.next() {
                Ok(Some(message)) => return Some(message),
                Ok(None) => {}
                Err(v) => {
                    self.violation = Some(v);
                    return None;
                }
            }
            let tcp = self.writer.conn.tcp();
            if tcp.readable().await.is_err() {
                self.done = true;
                continue;
            }
            match tcp.try_read(&mut chunk) {
                Ok(0) => self.done = true,
                Ok(n) => self.decoder.push(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => self.done = true,
            }
        }
    }

    /// How the client broke the protocol, if it did.
    pub fn violation(&self) -> Option<Violation> {
        self.violation.clone()
    }
}

impl Writer {
    /// Writes `parts` (whole WebSocket frames) in order: at once when the socket has room,
    /// which is the usual case (no timer set), else waiting for room until [`SEND_TIMEOUT`].
    pub async fn write_all(&self, mut parts: &mut [IoSlice<'_>]) -> io::Result<()> {
        let tcp = self.conn.tcp();
        let mut deadline = None;
        while !parts.is_empty() {
            match tcp.try_write_vectored(parts) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut parts, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let at =
                        *deadline.get_or_insert_with(|| tokio::time::Instant::now() + SEND_TIMEOUT);
                    tokio::time::timeout_at(at, tcp.writable())
                        .await
                        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Sends messages, each `(opcode, payload)`, in one write.
    pub async fn send(&self, messages: &[(u8, &[u8])]) -> io::Result<()> {
        let headers: Vec<Header> = messages
            .iter()
            .map(|(op, payload)| Header::new(*op, payload.len()))
            .collect();
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(messages.len() * 2);
        for (header, (_, payload)) in headers.iter().zip(messages) {
            slices.push(IoSlice::new(header.as_bytes()));
            if !payload.is_empty() {
                slices.push(IoSlice::new(payload));
            }
        }
        self.write_all(&mut slices).await
    }

    pub async fn text(&self, text: &str) -> io::Result<()> {
        self.send(&[(frame::OP_TEXT, text.as_bytes())]).await
    }

    pub async fn pong(&self, payload: &[u8]) -> io::Result<()> {
        self.send(&[(frame::OP_PONG, payload)]).await
    }

    /// A close frame with its code and reason (cut to fit a control frame).
    pub async fn close(&self, code: u16, reason: &str) -> io::Result<()> {
        let payload = frame::close_payload(code, reason);
        self.send(&[(frame::OP_CLOSE, &payload)]).await?;
        // The client answers with its own close and then closes; nothing more is read.
        shutdown_write(self.conn.tcp());
        Ok(())
    }
}

/// Half-closes the socket for writing: the client sees the end of the stream after our close
/// frame even while a reader task still holds the connection.
fn shutdown_write(tcp: &tokio::net::TcpStream) {
    use std::os::fd::AsRawFd;
    // SAFETY: shutdown(2) on a descriptor `tcp` owns and keeps open; it does not close it.
    unsafe { libc::shutdown(tcp.as_raw_fd(), libc::SHUT_WR) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_is_rfc_6455s_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
