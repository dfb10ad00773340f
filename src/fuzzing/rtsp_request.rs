//! What an RTSP client sends the re-stream server (`output::rtsp::message`): a byte stream of
//! requests and interleaved frames, and the `Transport:` header values in them.
//!
//! Input: byte 0 picks the chunk size the stream arrives in; the rest is the stream.
//!
//! Invariants:
//! - nothing panics; a message is never larger than the limits (head `MAX_HEAD`, body
//!   `MAX_BODY`, frame 65,535 bytes), and an over-limit head is refused before it is whole;
//! - the messages, and the error that ends them, are the same however the stream is chunked
//!   (a parser that buffers until a message is whole);
//! - each message takes at least one byte, and what it reports taking was in the buffer;
//! - a response built from a request's values never carries a line break inside a header;
//! - the session state machine (`output::rtsp::session::Conn`) fed every request answers each
//!   with a status it knows, echoes the CSeq, and keeps a session of at most two tracks of one
//!   camera whose interleaved channels never overlap.

use crate::output::rtsp::message::{
    parse, parse_transport, Incoming, Method, ParseError, Response, Transport, MAX_BODY, MAX_HEAD,
};
use crate::output::rtsp::session::{Conn, Lookup};

fn read(stream: &[u8], chunk: usize) -> (Vec<Incoming>, Option<ParseError>) {
    let mut buffer: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    for c in stream.chunks(chunk.max(1)) {
        buffer.extend_from_slice(c);
        loop {
            match parse(&buffer) {
                Ok(Some((message, used))) => {
                    assert!(
                        used >= 1 && used <= buffer.len(),
                        "took {used} of {}",
                        buffer.len()
                    );
                    buffer.drain(..used);
                    out.push(message);
                }
                Ok(None) => {
                    assert!(
                        buffer.len() <= MAX_HEAD + MAX_BODY + 4,
                        "buffered {} bytes without a message or an error",
                        buffer.len()
                    );
                    break;
                }
                Err(e) => return (out, Some(e)),
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
    let (messages, error) = read(stream, chunk);
    let (whole, whole_error) = read(stream, stream.len().max(1));
    assert_eq!(messages, whole, "chunking changed the messages");
    assert_eq!(error, whole_error, "chunking changed the error");
    let mut conn = Conn::new(
        "0123abcd".into(),
        u128::from(selector) * 0x9e37_79b9,
        Some((8000, 8001)),
        60,
    );
    for m in &messages {
        match m {
            Incoming::Interleaved { data, .. } => assert!(data.len() <= usize::from(u16::MAX)),
            Incoming::Request(r) => {
                assert!(r.body.len() <= MAX_BODY);
                if let Some(t) = r.header("Transport") {
                    let _ = parse_transport(t);
                }
                // Values a server might echo: a session id, the URI.
                let response = Response::new(200, r.cseq())
                    .header("Session", r.header("Session").unwrap_or_default())
                    .header("Content-Base", r.uri.clone())
                    .to_bytes();
                let text = String::from_utf8_lossy(&response);
                let head = text.split("\r\n\r\n").next().unwrap_or_default();
                for line in head.split("\r\n") {
                    assert!(!line.contains('\r') && !line.contains('\n'), "{line:?}");
                }
                assert_eq!(
                    head.split("\r\n").count(),
                    1 + 2 + usize::from(r.cseq().is_some()),
                    "a header was forged: {head:?}"
                );
                let lookup = match r.method {
                    Method::Announce => Lookup::Publishable,
                    _ => Lookup::Found {
                        sdp: "v=0\r\n".into(),
                        audio: selector % 2 == 0,
                    },
                };
                let reply = conn.handle(r, lookup);
                let status = reply.response.status;
                assert!(
                    [200, 400, 401, 404, 405, 409, 413, 454, 455, 459, 461, 501, 503]
                        .contains(&status),
                    "status {status}"
                );
                let text = String::from_utf8_lossy(&reply.response.to_bytes()).into_owned();
                match r.cseq() {
                    Some(c) => assert!(text.contains(&format!("\r\nCSeq: {c}\r\n")), "{text}"),
                    None => assert_eq!(status, 400),
                }
                if let Some(session) = conn.session() {
                    assert!(session.tracks.len() <= 2 && !session.camera.is_empty());
                    let channels: Vec<u8> = session
                        .tracks
                        .iter()
                        .filter_map(|t| match t.transport {
                            Transport::Tcp { rtp, rtcp } => Some([rtp, rtcp]),
                            Transport::Udp { .. } => None,
                        })
                        .flatten()
                        .collect();
                    let mut unique = channels.clone();
                    unique.sort_unstable();
                    unique.dedup();
                    assert_eq!(
                        unique.len(),
                        channels.len(),
                        "channels overlap: {channels:?}"
                    );
                }
            }
        }
    }
}
