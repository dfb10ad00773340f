//! WebSocket framing (RFC 6455 §5), sans-IO: the server's frame headers out, the client's
//! frames in.
//!
//! The server writes its own frames so that a video fragment shared by every viewer goes to the
//! socket as it is, in one vectored write behind a header of a few bytes (a WebSocket library
//! copies every payload into its own buffer first: one copy per viewer per frame). Clients
//! only send short control messages, so the decoder is strict and small: masked frames only,
//! no extensions, a size limit, UTF-8 text.

use bytes::{Buf, Bytes, BytesMut};

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Close codes (RFC 6455 §7.4.1).
pub const CLOSE_NORMAL: u16 = 1000;
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
pub const CLOSE_INVALID_DATA: u16 = 1007;
pub const CLOSE_TOO_BIG: u16 = 1009;

/// The header of an unmasked server frame with FIN set: 2, 4 or 10 bytes.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    bytes: [u8; 10],
    len: u8,
}

impl Header {
    pub fn new(opcode: u8, payload_len: usize) -> Header {
        let mut bytes = [0u8; 10];
        bytes[0] = 0x80 | (opcode & 0x0f);
        let len = if payload_len < 126 {
            bytes[1] = payload_len as u8;
            2
        } else if payload_len <= u16::MAX as usize {
            bytes[1] = 126;
            bytes[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
            4
        } else {
            bytes[1] = 127;
            bytes[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
            10
        };
        Header { bytes, len }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// The payload of a close frame: the code, then a reason of at most 123 bytes (cut at a
/// character boundary), as control frames are limited to 125 bytes.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    payload
}

/// A message from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Text(String),
    Binary(Bytes),
    Ping(Bytes),
    Pong,
    /// The client's close code, if it gave one.
    Close(Option<u16>),
}

/// Why the client's bytes cannot be read any further: the close code to answer with, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub code: u16,
    pub reason: &'static str,
}

fn violation(code: u16, reason: &'static str) -> Violation {
    Violation { code, reason }
}

/// Reassembles the client's frames into messages.
#[derive(Debug)]
pub struct Decoder {
    buffer: BytesMut,
    /// A fragmented message being received: its opcode and the payload so far.
    partial: Option<(u8, Vec<u8>)>,
    max_message: usize,
}

impl Decoder {
    /// `max_message`: the largest message (all its fragments together) a client may send.
    pub fn new(max_message: usize) -> Decoder {
        Decoder {
            buffer: BytesMut::new(),
            partial: None,
            max_message,
        }
    }

    /// Bytes read from the socket.
    pub fn push(&mut self, data: &[u8]) {
        self.buffer.extend_from_slice(data);
    }

    /// The next complete message, `Ok(None)` when more bytes are needed. After an `Err` the
    /// connection must be closed with the violation's code.
    pub fn next(&mut self) -> Result<Option<Incoming>, Violation> {
        loop {
            let Some((fin, opcode, payload)) = self.frame()? else {
                return Ok(None);
            };
            match opcode {
                OP_PING => return Ok(Some(Incoming::Ping(payload.freeze()))),
                OP_PONG => return Ok(Some(Incoming::Pong)),
                OP_CLOSE => {
                    let code = match payload.len() {
                        0 => None,
                        1 => return Err(violation(CLOSE_PROTOCOL_ERROR, "a 1-byte close frame")),
                        _ => Some(u16::from_be_bytes([payload[0], payload[1]])),
                    };
                    return Ok(Some(Incoming::Close(code)));
                }
                OP_TEXT | OP_BINARY => {
                    if self.partial.is_some() {
                        return Err(violation(
                            CLOSE_PROTOCOL_ERROR,
                            "a new message inside a fragmented one",
                        ));
                    }
                    if fin {
                        return message(opcode, payload.freeze()).map(Some);
                    }
                    self.partial = Some((opcode, payload.to_vec()));
                }
                OP_CONTINUATION => {
                    let Some((first, mut data)) = self.partial.take() else {
                        return Err(violation(CLOSE_PROTOCOL_ERROR, "a continuation of nothing"));
                    };
                    data.extend_from_slice(&payload);
                    if data.len() > self.max_message {
                        return Err(violation(CLOSE_TOO_BIG, "message too big"));
                    }
                    if fin {
                        return message(first, Bytes::from(data)).map(Some);
                    }
                    self.partial = Some((first, data));
                }
                _ => return Err(violation(CLOSE_PROTOCOL_ERROR, "unknown opcode")),
            }
        }
    }

    /// One whole frame off the buffer, unmasked: (FIN, opcode, payload).
    fn frame(&mut self) -> Result<Option<(bool, u8, BytesMut)>, Violation> {
        let b = &self.buffer[..];
        if b.len() < 2 {
            return Ok(None);
        }
        let (fin, rsv, opcode) = (b[0] & 0x80 != 0, b[0] & 0x70, b[0] & 0x0f);
        let masked = b[1] & 0x80 != 0;
        if rsv != 0 {
            return Err(violation(CLOSE_PROTOCOL_ERROR, "reserved bits set"));
        }
        if !masked {
            return Err(violation(CLOSE_PROTOCOL_ERROR, "an unmasked client frame"));
        }
        let control = opcode & 0x8 != 0;
        let (len, at) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as u64, 4),
            127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().unwrap()), 10),
            126 | 127 => return Ok(None),
            n => (n as u64, 2),
        };
        if control && (!fin || len > 125) {
            return Err(violation(
                CLOSE_PROTOCOL_ERROR,
                "a fragmented or long control frame",
            ));
        }
        let partial = self.partial.as_ref().map_or(0, |(_, d)| d.len()) as u64;
        // Saturating: a 64-bit length near 2^64 must not wrap past the limit.
        if len.saturating_add(partial) > self.max_message as u64 {
            return Err(violation(CLOSE_TOO_BIG, "message too big"));
        }
        let len = len as usize;
        if b.len() < at + 4 + len {
            return Ok(None);
        }
        let mask: [u8; 4] = b[at..at + 4].try_into().unwrap();
        self.buffer.advance(at + 4);
        let mut payload = self.buffer.split_to(len);
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= mask[i & 3];
        }
        Ok(Some((fin, opcode, payload)))
    }
}

fn message(opcode: u8, payload: Bytes) -> Result<Incoming, Violation> {
    if opcode == OP_BINARY {
        return Ok(Incoming::Binary(payload));
    }
    String::from_utf8(payload.to_vec())
        .map(Incoming::Text)
        .map_err(|_| violation(CLOSE_INVALID_DATA, "text that is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame as a browser sends it (masked).
    fn client(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    #[test]
    fn server_headers_use_the_shortest_length_form() {
        assert_eq!(Header::new(OP_TEXT, 5).as_bytes(), [0x81, 5]);
        assert_eq!(Header::new(OP_BINARY, 125).as_bytes(), [0x82, 125]);
        assert_eq!(Header::new(OP_BINARY, 126).as_bytes(), [0x82, 126, 0, 126]);
        assert_eq!(
            Header::new(OP_BINARY, 65535).as_bytes(),
            [0x82, 126, 0xff, 0xff]
        );
        assert_eq!(
            Header::new(OP_BINARY, 65536).as_bytes(),
            [0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]
        );
        assert_eq!(Header::new(OP_CLOSE, 2).as_bytes(), [0x88, 2]);
    }

    #[test]
    fn close_reasons_are_cut_at_a_character_boundary() {
        let p = close_payload(1000, &"é".repeat(100));
        assert_eq!(&p[..2], &[0x03, 0xe8]);
        assert!(p.len() <= 125);
        assert!(std::str::from_utf8(&p[2..]).is_ok());
    }

    #[test]
    fn reads_the_rfc_example_in_any_chunking() {
        // RFC 6455 §5.7: a masked "Hello".
        let bytes = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        for split in 0..bytes.len() {
            let mut d = Decoder::new(1024);
            d.push(&bytes[..split]);
            assert_eq!(d.next(), Ok(None), "split at {split}");
            d.push(&bytes[split..]);
            assert_eq!(d.next(), Ok(Some(Incoming::Text("Hello".into()))));
            assert_eq!(d.next(), Ok(None));
        }
    }

    #[test]
    fn reassembles_fragments_with_control_frames_between() {
        let mut d = Decoder::new(1024);
        d.push(&client(0x01, b"{\"type\":", MASK));
        d.push(&client(0x89, b"hi", MASK));
        d.push(&client(0x80, b"\"mse\"}", MASK));
        d.push(&client(0x88, &[0x03, 0xe8], MASK));
        assert_eq!(
            d.next(),
            Ok(Some(Incoming::Ping(Bytes::from_static(b"hi"))))
        );
        assert_eq!(
            d.next(),
            Ok(Some(Incoming::Text("{\"type\":\"mse\"}".into())))
        );
        assert_eq!(d.next(), Ok(Some(Incoming::Close(Some(1000)))));
    }

    #[test]
    fn long_lengths() {
        let big = vec![7u8; 70_000];
        let mut d = Decoder::new(100_000);
        d.push(&client(0x82, &big, MASK));
        assert_eq!(d.next(), Ok(Some(Incoming::Binary(Bytes::from(big)))));
        let mid = vec![1u8; 300];
        d.push(&client(0x82, &mid, MASK));
        assert_eq!(d.next(), Ok(Some(Incoming::Binary(Bytes::from(mid)))));
    }

    #[test]
    fn refuses_what_a_client_must_not_send() {
        let cases: Vec<(Vec<u8>, u16)> = vec![
            (vec![0x81, 0x02, b'h', b'i'], CLOSE_PROTOCOL_ERROR), // unmasked
            (client(0xc1, b"x", MASK), CLOSE_PROTOCOL_ERROR),     // RSV1 without an extension
            (client(0x83, b"x", MASK), CLOSE_PROTOCOL_ERROR),     // opcode 3
            (client(0x80, b"x", MASK), CLOSE_PROTOCOL_ERROR),     // continuation of nothing
            (client(0x09, b"x", MASK), CLOSE_PROTOCOL_ERROR),     // fragmented ping
            (client(0x89, &[0; 126], MASK), CLOSE_PROTOCOL_ERROR), // long ping
            (client(0x88, &[3], MASK), CLOSE_PROTOCOL_ERROR),     // 1-byte close
            (client(0x81, &[0xff, 0xfe], MASK), CLOSE_INVALID_DATA),
            (client(0x82, &[0; 65], MASK), CLOSE_TOO_BIG),
            (
                [client(0x01, b"x", MASK), client(0x01, b"y", MASK)].concat(),
                CLOSE_PROTOCOL_ERROR,
            ),
            (
                [client(0x02, &[0; 40], MASK), client(0x80, &[0; 40], MASK)].concat(),
                CLOSE_TOO_BIG,
            ),
        ];
        for (bytes, code) in cases {
            let mut d = Decoder::new(64);
            d.push(&bytes);
            let got = loop {
                match d.next() {
                    Ok(Some(_)) => continue,
                    other => break other,
                }
            };
            assert_eq!(got.map_err(|v| v.code), Err(code), "{bytes:02x?}");
        }
    }

    #[test]
    fn a_huge_announced_length_is_refused_before_its_bytes_arrive() {
        let mut d = Decoder::new(64 << 10);
        d.push(&[0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(d.next().map_err(|v| v.code), Err(CLOSE_TOO_BIG));
        // Found by fuzzing: after a first fragment, a length near 2^64 wrapped the sum.
        let mut d = Decoder::new(64);
        d.push(&client(0x02, b"x", MASK));
        d.push(&[0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(d.next().map_err(|v| v.code), Err(CLOSE_TOO_BIG));
    }
}
