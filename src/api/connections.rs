//! Accepting HTTP connections, with limits a flood cannot get past: a bound on the connections
//! open at once (in all and per client address; more are answered 503 and closed at once), and a
//! deadline for each request's headers (a client that sends nothing, or half a request, or sits
//! idle between requests, is closed after it), and a write deadline (a client that takes no byte
//! of a response for [`WRITE_STALL`] is closed, and the response's body, a playback download
//! say, dropped with it). Each connection, WebSockets included, holds its
//! slot and a counted `http_connections` resource until its socket closes.
//!
//! HTTP/1.1 only: browsers speak HTTP/2 only over TLS, and a plain-text HTTP/2 preface would have
//! to be read before any header deadline could start.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::resources::{Counted, Resource};

/// How long (30 s) a response may wait on a client whose socket takes no byte before the
/// connection is closed. A client that reads nothing while its buffers are full is gone or
/// hostile, and would otherwise hold what its response holds (a playback download's place and
/// files) for as long as it likes. Generous for a live client: a paused player that stopped
/// reading comes back with a `Range` request. WebSockets write to the socket themselves and keep
/// their own rules.
pub const WRITE_STALL: Duration = Duration::from_secs(30);

/// What hyper buffers for a connection (64 KiB; its default is ~400 KiB): a request's head may
/// be this long, and a response's body is queued this far ahead of the socket. A client that
/// stops reading holds what is queued for it, so 256 stalled playback downloads held ~0.7 MiB
/// each (215 MiB) with the default and hold a quarter of that with this; writes go out as
/// `writev` of the queued chunks either way, and no real request head comes near 64 KiB.
const BUFFER: usize = 64 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub total: usize,
    pub per_ip: usize,
    /// How long a client has to send a request's headers (also the keep-alive idle limit).
    pub header_timeout: Duration,
}

/// Serves `app` on `listener` until `shutdown`; then open connections get `drain` to finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let admission = Arc::new(Admission::new(limits));
    let connections = TaskTracker::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(BUFFER);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors (or a connection reset before accept): wait for one to close
                // instead of spinning on the error.
                tracing::warn!("accepting a connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = admission.admit(peer.ip()) else {
            refuse(&stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(Connection {
            stream,
            _slot: slot,
            stall: None,
        });
        // Handlers that bound something per client address find it as `ConnectInfo`.
        let service = TowerToHyperService::new(app.clone().map_request(
            move |r: hyper::Request<hyper::body::Incoming>| {
                let mut r = r.map(axum::body::Body::new);
                r.extensions_mut().insert(ConnectInfo(peer));
                r
            },
        ));
        let conn = http.serve_connection(io, service).with_upgrades();
        let stop = shutdown.clone();
        connections.spawn(async move {
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(drain, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still open at shutdown; closing them");
    }
}

/// Over a limit: a 503 written without waiting (the socket's buffer is empty), then closed.
fn refuse(stream: &TcpStream) {
    const BODY: &str = "{\"error\":\"too many connections; try again shortly\"}";
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = stream.try_write(response.as_bytes());
}

/// The connection counts, in all and per client address.
struct Admission {
    limits: Limits,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

impl Admission {
    fn new(limits: Limits) -> Admission {
        Admission {
            limits,
            open: Mutex::new((0, HashMap::new())),
        }
    }

    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per_ip) = &mut *open;
        let mine = per_ip.entry(ip).or_insert(0);
        if *total >= self.limits.total || *mine >= self.limits.per_ip {
            if *mine == 0 {
                per_ip.remove(&ip);
            }
            return None;
        }
        *mine += 1;
        *total += 1;
        Some(Slot {
            admission: self.clone(),
            ip,
            _counted: Counted::new(Resource::HttpConnection),
        })
    }

    fn release(&self, ip: IpAddr) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per_ip) = &mut *open;
        *total -= 1;
        if let Some(mine) = per_ip.get_mut(&ip) {
            *mine -= 1;
            if *mine == 0 {
                per_ip.remove(&ip);
            }
        }
    }
}

/// One admitted connection's place in the counts, given back when the socket is dropped.
struct Slot {
    admission: Arc<Admission>,
    ip: IpAddr,
    _counted: Counted,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.admission.release(self.ip);
    }
}

/// The socket with its slot: an upgraded WebSocket keeps the slot for as long as it is open
/// (`api::ws` takes it back from hyper after the upgrade to write to the socket directly).
pub(crate) struct Connection {
    stream: TcpStream,
    _slot: Slot,
    /// Armed while a write waits on the client: [`WRITE_STALL`] from the first write it
    /// refused; `None` until a write first waits (the timer is kept and reset after that).
    stall: Option<(bool, Pin<Box<tokio::time::Sleep>>)>,
}

impl Connection {
    pub(crate) fn tcp(&self) -> &TcpStream {
        &self.stream
    }

    /// A write's outcome, past the write deadline: a write that waits arms the timer (and
    /// registers for its wake-up), one that goes through disarms it.
    fn deadline<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            if let Some((armed, _)) = &mut self.stall {
                *armed = false;
            }
            return polled;
        }
        let (armed, timer) = self
            .stall
            .get_or_insert_with(|| (false, Box::pin(tokio::time::sleep(WRITE_STALL))));
        if !*armed {
            *armed = true;
            timer
                .as_mut()
                .reset(tokio::time::Instant::now() + WRITE_STALL);
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took no byte of the response for 30 s",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.deadline(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.deadline(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Raises the open-file limit to its hard limit (a server holds a descriptor per viewer) and
/// returns the new soft limit.
pub fn raise_open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct passed by pointer, nothing else.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(total: usize, per_ip: usize) -> Arc<Admission> {
        Arc::new(Admission::new(Limits {
            total,
            per_ip,
            header_timeout: Duration::from_secs(1),
        }))
    }

    #[test]
    fn per_ip_and_total_limits_hold_and_slots_come_back() {
        let a = admission(3, 2);
        let one: IpAddr = [10, 0, 0, 1].into();
        let two: IpAddr = [10, 0, 0, 2].into();
        let s1 = a.admit(one).unwrap();
        let s2 = a.admit(one).unwrap();
        assert!(a.admit(one).is_none(), "third from one address");
        let s3 = a.admit(two).unwrap();
        assert!(a.admit(two).is_none(), "fourth in all");
        drop(s1);
        let s4 = a.admit(one).unwrap();
        drop((s2, s3, s4));
        let open = a.open.lock().unwrap();
        assert_eq!(open.0, 0);
        assert!(open.1.is_empty(), "no address is remembered once closed");
    }
}
