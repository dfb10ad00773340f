//! Sending a worker loop's datagrams, batched with UDP GSO where the kernel has it.
//!
//! A 2 Mb/s frame is ~9 RTP packets to each peer, all of the same size but the last. One
//! `sendmsg` with a GSO segment size hands the kernel the whole run in one buffer: one pass
//! through the UDP/IP stack instead of nine (quinn-udp does the cmsg work, and turns GSO off by
//! itself on a kernel or device that refuses it). Grouping is sans-IO ([`runs`]).

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;

use quinn_udp::{UdpSockRef, UdpSocketState};
use str0m::net::Transmit;
use tokio::net::UdpSocket;

/// One of the UDP sockets (one per advertised address, all on the same port).
pub struct Socket {
    pub local: SocketAddr,
    pub socket: Arc<UdpSocket>,
    state: UdpSocketState,
}

impl Socket {
    pub fn new(local: SocketAddr, socket: Arc<UdpSocket>) -> std::io::Result<Socket> {
        let state = UdpSocketState::new(UdpSockRef::from(&*socket))?;
        Ok(Socket {
            local,
            socket,
            state,
        })
    }

    /// Sends `contents` (datagrams of `segment` bytes, the last possibly shorter) to `to`. A full
    /// socket buffer drops them, as the network would: nothing here ever waits.
    fn send(&self, to: SocketAddr, contents: &[u8], segment: Option<usize>) {
        let transmit = quinn_udp::Transmit {
            destination: to,
            ecn: None,
            contents,
            segment_size: segment,
            src_ip: None,
        };
        let _ = self
            .state
            .try_send(UdpSockRef::from(&*self.socket), &transmit);
    }

    fn max_segments(&self) -> usize {
        self.state.max_gso_segments()
    }
}

/// Sends and empties `transmits`, one GSO send per run (`scratch` is reused between calls).
pub fn send_all(sockets: &[Socket], transmits: &mut Vec<Transmit>, scratch: &mut Vec<u8>) {
    if transmits.is_empty() {
        return;
    }
    let Some(max) = sockets.iter().map(Socket::max_segments).min() else {
        transmits.clear();
        return;
    };
    let key = |t: &Transmit| (t.source, t.destination, t.contents.len());
    for run in runs(transmits, max, key) {
        let first = &transmits[run.start];
        let Some(socket) = sockets.iter().find(|s| s.local == first.source) else {
            continue;
        };
        if run.len() == 1 {
            socket.send(first.destination, &first.contents, None);
            continue;
        }
        scratch.clear();
        for t in &transmits[run.clone()] {
            scratch.extend_from_slice(&t.contents);
        }
        socket.send(first.destination, scratch, Some(first.contents.len()));
    }
    transmits.clear();
}

/// Runs of datagrams that one GSO send can carry: same source and destination, each as long as
/// the first except the last, which may be shorter (and ends the run); at most `max` long.
/// `key` gives a datagram's (source, destination, length).
pub fn runs<T>(
    datagrams: &[T],
    max: usize,
    key: impl Fn(&T) -> (SocketAddr, SocketAddr, usize),
) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < datagrams.len() {
        let (src, dst, size) = key(&datagrams[start]);
        let mut end = start + 1;
        while end < datagrams.len() && end - start < max.max(1) {
            let (s, d, len) = key(&datagrams[end]);
            if s != src || d != dst || len > size {
                break;
            }
            end += 1;
            if len < size {
                break; // a shorter datagram can only be the last of a run
            }
        }
        out.push(start..end);
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn runs_group_same_size_datagrams_per_destination() {
        let (l, p, q) = (a(1), a(2), a(3));
        let d = [
            (l, p, 1200),
            (l, p, 1200),
            (l, p, 700), // shorter: ends the run
            (l, p, 1200),
            (l, q, 1200), // another peer
            (l, q, 1300), // longer than the first: a new run
            (l, q, 80),
        ];
        let key = |d: &(SocketAddr, SocketAddr, usize)| *d;
        assert_eq!(runs(&d, 64, key), [0..3, 3..4, 4..5, 5..7]);
        assert_eq!(runs(&d[..3], 2, key), [0..2, 2..3], "at most max per run");
        assert!(runs(&[], 64, key).is_empty());
    }
}
