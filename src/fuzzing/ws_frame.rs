//! The client side of the video WebSockets (`api::ws::frame::Decoder`): whatever bytes a client
//! sends after the upgrade.
//!
//! Input: byte 0 picks the chunk size the bytes are pushed in; the rest is the byte stream.
//!
//! Invariants:
//! - nothing panics, and memory is bounded by the message limit (a huge announced length is
//!   refused before its bytes arrive);
//! - the messages, and the violation that ends them, are the same however the stream is chunked;
//! - no message is larger than the limit, text is UTF-8 (by type), control payloads ≤ 125 bytes;
//! - after a violation nothing more is read (the connection is closed with its code).

use crate::api::ws::frame::{Decoder, Incoming, Violation};
use crate::fuzzing::debug;

/// Small, so that the fuzzer reaches the limit easily.
const LIMIT: usize = 300;

fn read(stream: &[u8], chunk: usize) -> (Vec<Incoming>, Option<Violation>) {
    let mut d = Decoder::new(LIMIT);
    let mut out = Vec::new();
    for c in stream.chunks(chunk.max(1)) {
        d.push(c);
        loop {
            match d.next() {
                Ok(Some(m)) => out.push(m),
                Ok(None) => break,
                Err(v) => return (out, Some(v)),
            }
        }
    }
    (out, None)
}

/// Checks the invariants above on one input: returns when they hold, panics when one breaks.
pub fn check(data: &[u8]) {
    let Some((&selector, stream)) = data.split_first() else {
        return;
    };
    let chunk = selector as usize + 1;
    let whole = read(stream, stream.len());
    let chunked = read(stream, chunk);
    assert_eq!(
        whole, chunked,
        "chunking changed the messages (chunk {chunk})"
    );
    if debug() {
        eprintln!("{whole:?}");
    }
    for m in &whole.0 {
        match m {
            Incoming::Text(t) => assert!(t.len() <= LIMIT),
            Incoming::Binary(b) => assert!(b.len() <= LIMIT),
            Incoming::Ping(p) => assert!(p.len() <= 125),
            Incoming::Pong | Incoming::Close(_) => {}
        }
    }
    if let Some(v) = &whole.1 {
        assert!([1002, 1007, 1009].contains(&v.code), "{v:?}");
    }
}
