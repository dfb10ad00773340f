//! The WebRTC datagram router (`output::webrtc::route`): which worker loop and session a UDP
//! datagram from the network belongs to, learnt from STUN binding requests (`USERNAME =
//! ours:theirs`); `stun_local_ufrag` parses the STUN header and attributes of any datagram.
//!
//! Input: a list of operations, each one byte of opcode, then
//! - 0: add session `s` (byte) on shard (byte) with ufrag `u` (byte), skipped when the session
//!   or ufrag is in use (ids and ufrags are random and unique in livelens);
//! - 1: remove session `s`;
//! - 2: a STUN binding request for ufrag `u` (or a made-up one) from address `a` (byte);
//! - 3: a raw datagram (u16-length chunk) from address `a`.
//!
//! Invariants (against a model of the router):
//! - `stun_local_ufrag` never panics, and what it returns is a non-empty slice of the datagram
//!   without ':';
//! - a STUN request naming a live session's ufrag routes to that session and shard; naming no
//!   live session, nowhere;
//! - any other datagram routes to the live session that last learnt its source address (at
//!   most 8 addresses per session), or nowhere; never to a removed session;
//! - `shard_of` and `remove` agree with the model.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::fuzzing::Cursor;
use crate::output::webrtc::route::{stun_local_ufrag, Router};

const MAX_ADDRESSES: usize = 8;

fn binding_request(username: &[u8], extra: &[u8]) -> Vec<u8> {
    let mut attrs = Vec::new();
    attrs.extend_from_slice(&0x0006u16.to_be_bytes());
    attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
    attrs.extend_from_slice(username);
    while attrs.len() % 4 != 0 {
        attrs.push(0);
    }
    attrs.extend_from_slice(extra);
    let mut d = vec![0x00, 0x01];
    d.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    d.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
    d.extend_from_slice(&[7; 12]);
    d.extend_from_slice(&attrs);
    d
}

#[derive(Default)]
struct Model {
    /// session → (shard, ufrag, addresses learnt)
    sessions: HashMap<String, (usize, String, Vec<SocketAddr>)>,
    by_address: HashMap<SocketAddr, String>,
}

fn check_ufrag(d: &[u8]) -> Option<String> {
    let u = stun_local_ufrag(d)?;
    assert!(!u.is_empty() && !u.contains(':'));
    let (start, end) = (u.as_ptr() as usize, u.as_ptr() as usize + u.len());
    let base = d.as_ptr() as usize;
    assert!(
        start >= base + 20 && end <= base + d.len(),
        "ufrag outside the datagram"
    );
    Some(u.to_string())
}

/// Checks the invariants above on one input: returns when they hold, panics when one breaks.
pub fn check(data: &[u8]) {
    let mut c = Cursor::new(data);
    let mut router = Router::default();
    let mut model = Model::default();
    let addr = |b: u8| SocketAddr::from(([127, 0, 0, 1 + (b >> 4)], 5000 + (b & 0x0f) as u16));
    let ufrag_of = |b: u8| format!("u{}", b % 16);
    let session_of = |b: u8| format!("s{}", b % 16);
    let mut ops = 0;
    while !c.is_empty() && ops < 256 {
        ops += 1;
        match c.u8() % 4 {
            0 => {
                let (s, shard, u) = (session_of(c.u8()), c.u8() as usize, ufrag_of(c.u8()));
                if model.sessions.contains_key(&s) || model.sessions.values().any(|e| e.1 == u) {
                    continue;
                }
                router.add(s.clone().into(), shard, &u);
                model.sessions.insert(s, (shard, u, Vec::new()));
            }
            1 => {
                let s = session_of(c.u8());
                let got = router.remove(&s).map(|r| (r.shard, r.session.to_string()));
                let want = model.sessions.remove(&s).map(|e| {
                    for a in &e.2 {
                        model.by_address.remove(a);
                    }
                    (e.0, s.clone())
                });
                assert_eq!(got, want, "remove({s})");
                assert_eq!(router.shard_of(&s), None);
            }
            2 => {
                let u = c.u8();
                let made_up = u & 0x80 != 0;
                let ufrag = if made_up {
                    format!("x{}", u & 0x7f)
                } else {
                    ufrag_of(u)
                };
                let theirs = c.chunk8();
                let mut username = ufrag.clone().into_bytes();
                username.push(b':');
                username.extend_from_slice(theirs);
                let source = addr(c.u8());
                let d = binding_request(&username, c.chunk8());
                let parsed = check_ufrag(&d);
                if std::str::from_utf8(&username).is_ok() {
                    assert_eq!(parsed.as_deref(), Some(ufrag.as_str()));
                }
                route(&mut router, &mut model, source, &d, parsed);
            }
            _ => {
                let d = c.chunk16().to_vec();
                let source = addr(c.u8());
                let parsed = check_ufrag(&d);
                route(&mut router, &mut model, source, &d, parsed);
            }
        }
        for (s, e) in &model.sessions {
            assert_eq!(router.shard_of(s), Some(e.0));
        }
    }
}

fn route(
    router: &mut Router,
    model: &mut Model,
    source: SocketAddr,
    d: &[u8],
    ufrag: Option<String>,
) {
    let got = router
        .route(source, d)
        .map(|r| (r.shard, r.session.to_string()));
    let want = match ufrag {
        Some(u) => {
            let found = model
                .sessions
                .iter()
                .find(|(_, e)| e.1 == u)
                .map(|(s, _)| s.clone());
            found.map(|s| {
                let e = &model.sessions[&s];
                let shard = e.0;
                if !e.2.contains(&source) && e.2.len() < MAX_ADDRESSES {
                    if let Some(old) = model.by_address.insert(source, s.clone()) {
                        if let Some(o) = model.sessions.get_mut(&old) {
                            o.2.retain(|a| *a != source);
                        }
                    }
                    model.sessions.get_mut(&s).unwrap().2.push(source);
                }
                (shard, s)
            })
        }
        None => model
            .by_address
            .get(&source)
            .and_then(|s| model.sessions.get(s).map(|e| (e.0, s.clone()))),
    };
    assert_eq!(got, want, "route from {source} of {} bytes", d.len());
    for e in model.sessions.values() {
        assert!(e.2.len() <= MAX_ADDRESSES);
    }
}
