//! Which worker loop (shard) an incoming datagram belongs to, sans-IO.
//!
//! Every peer shares one UDP port, and peers live in several worker loops. A browser's first
//! datagrams are STUN binding requests whose USERNAME is `<our ufrag>:<its ufrag>`; the ufrag is
//! in our SDP answer, so it names the session. The source address of such a request is then
//! remembered, and DTLS, SRTP and SRTCP from that address go to the same session. A datagram from
//! an address nobody announced is dropped (str0m would drop it too): no scan over every peer.
//!
//! An address is only mapped, never trusted: str0m still checks each STUN request's integrity
//! with the session's ICE password before it uses a candidate pair.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// A session id, shared between the router, the shard and the API.
pub type SessionId = Arc<str>;

/// Where to deliver a datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub shard: usize,
    pub session: SessionId,
}

/// A peer may be reached from a few addresses (one per candidate pair the browser tries);
/// beyond this many a flood of forged STUN requests cannot grow the table.
const MAX_ADDRESSES_PER_SESSION: usize = 8;

struct Entry {
    route: Route,
    ufrag: String,
    addresses: Vec<SocketAddr>,
}

#[derive(Default)]
pub struct Router {
    sessions: HashMap<SessionId, Entry>,
    by_ufrag: HashMap<String, SessionId>,
    by_address: HashMap<SocketAddr, SessionId>,
}

impl Router {
    /// A new session, reached by STUN requests naming `ufrag` (our ICE username fragment).
    pub fn add(&mut self, session: SessionId, shard: usize, ufrag: &str) {
        self.by_ufrag.insert(ufrag.to_string(), session.clone());
        self.sessions.insert(
            session.clone(),
            Entry {
                route: Route { shard, session },
                ufrag: ufrag.to_string(),
                addresses: Vec::new(),
            },
        );
    }

    /// Forgets a session and every address that led to it.
    pub fn remove(&mut self, session: &str) -> Option<Route> {
        let entry = self.sessions.remove(session)?;
        self.by_ufrag.remove(&entry.ufrag);
        for a in &entry.addresses {
            self.by_address.remove(a);
        }
        Some(entry.route)
    }

    /// The shard of a session (for API calls that name it).
    pub fn shard_of(&self, session: &str) -> Option<usize> {
        self.sessions.get(session).map(|e| e.route.shard)
    }

    /// Where a datagram from `source` goes, learning the address from a STUN request.
    pub fn route(&mut self, source: SocketAddr, datagram: &[u8]) -> Option<Route> {
        if let Some(ufrag) = stun_local_ufrag(datagram) {
            let session = self.by_ufrag.get(ufrag)?.clone();
            let entry = self.sessions.get(&session)?;
            let route = entry.route.clone();
            if !entry.addresses.contains(&source)
                && entry.addresses.len() < MAX_ADDRESSES_PER_SESSION
            {
                // An address moves to the session that last named it (a browser reusing a port).
                if let Some(old) = self.by_address.insert(source, session.clone()) {
                    if let Some(e) = self.sessions.get_mut(&old) {
                        e.addresses.retain(|a| *a != source);
                    }
                }
                if let Some(e) = self.sessions.get_mut(&session) {
                    e.addresses.push(source);
                }
            }
            return Some(route);
        }
        let session = self.by_address.get(&source)?;
        self.sessions.get(session).map(|e| e.route.clone())
    }
}

/// Our ufrag from a STUN request's USERNAME attribute (`ours:theirs`), if the datagram is STUN.
pub fn stun_local_ufrag(d: &[u8]) -> Option<&str> {
    // RFC 8489: 20-byte header (top two bits 0, magic cookie 0x2112A442), then TLV attributes
    // padded to 4 bytes.
    if d.len() < 20 || d[0] & 0xc0 != 0 || d[4..8] != [0x21, 0x12, 0xa4, 0x42] {
        return None;
    }
    let length = u16::from_be_bytes([d[2], d[3]]) as usize;
    let body = d.get(20..20 + length)?;
    let mut at = 0;
    while at + 4 <= body.len() {
        let kind = u16::from_be_bytes([body[at], body[at + 1]]);
        let len = u16::from_be_bytes([body[at + 2], body[at + 3]]) as usize;
        let value = body.get(at + 4..at + 4 + len)?;
        if kind == 0x0006 {
            let username = std::str::from_utf8(value).ok()?;
            return username.split(':').next().filter(|u| !u.is_empty());
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    None
}

/// Our ICE ufrag, from an SDP answer (`a=ice-ufrag:`).
pub fn sdp_ufrag(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A STUN binding request with a USERNAME and one more attribute after it.
    fn binding_request(username: &str) -> Vec<u8> {
        let mut attrs = Vec::new();
        attrs.extend_from_slice(&0x0006u16.to_be_bytes());
        attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attrs.extend_from_slice(username.as_bytes());
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        attrs.extend_from_slice(&[0x80, 0x28, 0, 4, 1, 2, 3, 4]); // FINGERPRINT-shaped
        let mut d = vec![0x00, 0x01];
        d.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        d.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        d.extend_from_slice(&[7; 12]);
        d.extend_from_slice(&attrs);
        d
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn reads_the_ufrag_from_stun_and_nothing_from_other_bytes() {
        assert_eq!(
            stun_local_ufrag(&binding_request("abcd:wxyz")),
            Some("abcd")
        );
        assert_eq!(stun_local_ufrag(&binding_request("odd:x")), Some("odd"));
        let mut truncated = binding_request("abcd:wxyz");
        truncated.truncate(26);
        assert_eq!(stun_local_ufrag(&truncated), None);
        // DTLS (content type 22) and RTP (version 2) are not STUN.
        assert_eq!(
            stun_local_ufrag(&[22, 254, 253, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            None
        );
        assert_eq!(stun_local_ufrag(&[0x80; 40]), None);
        assert_eq!(stun_local_ufrag(&[]), None);
    }

    #[test]
    fn learns_addresses_from_stun_and_forgets_them_with_the_session() {
        let mut r = Router::default();
        r.add("s1".into(), 0, "aaaa");
        r.add("s2".into(), 1, "bbbb");
        // DTLS from an unknown address goes nowhere.
        assert_eq!(r.route(addr(5000), &[22, 254, 253]), None);
        let got = r.route(addr(5000), &binding_request("bbbb:zz")).unwrap();
        assert_eq!((got.shard, &*got.session), (1, "s2"));
        let got = r.route(addr(5000), &[22, 254, 253]).unwrap();
        assert_eq!(&*got.session, "s2");
        // Unknown ufrag: dropped, the address is not learned.
        assert_eq!(r.route(addr(6000), &binding_request("nope:zz")), None);
        assert_eq!(r.route(addr(6000), &[0x80; 12]), None);
        assert_eq!(r.remove("s2").unwrap().shard, 1);
        assert_eq!(r.route(addr(5000), &[22, 254, 253]), None);
        assert_eq!(r.route(addr(5000), &binding_request("bbbb:zz")), None);
        assert_eq!(r.sessions.len(), 1);
    }

    #[test]
    fn forged_requests_cannot_grow_the_table() {
        let mut r = Router::default();
        r.add("s1".into(), 0, "aaaa");
        for port in 1000..2000 {
            r.route(addr(port), &binding_request("aaaa:zz"));
        }
        assert!(r.by_address.len() <= MAX_ADDRESSES_PER_SESSION);
        r.remove("s1");
        assert!(r.by_address.is_empty() && r.by_ufrag.is_empty());
    }

    #[test]
    fn finds_the_ufrag_in_an_answer() {
        let sdp =
            "v=0\r\na=group:BUNDLE 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=ice-ufrag:Ab12\r\n";
        assert_eq!(sdp_ufrag(sdp), Some("Ab12"));
        assert_eq!(sdp_ufrag("v=0\r\n"), None);
    }
}
