//! RTSP/1.0 messages for the re-stream server, sans-IO: bytes in, requests (or interleaved
//! binary frames) out; responses to bytes. Every size is bounded before it is buffered.

use std::fmt::Write as _;

/// Request line and headers at most; more is refused (413).
pub const MAX_HEAD: usize = 8 * 1024;
/// A request body at most (ANNOUNCE's SDP, SET_PARAMETER).
pub const MAX_BODY: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Options,
    Describe,
    Setup,
    Play,
    Pause,
    Teardown,
    GetParameter,
    SetParameter,
    Announce,
    Record,
    Other(String),
}

impl Method {
    fn parse(s: &str) -> Method {
        match s {
            "OPTIONS" => Method::Options,
            "DESCRIBE" => Method::Describe,
            "SETUP" => Method::Setup,
            "PLAY" => Method::Play,
            "PAUSE" => Method::Pause,
            "TEARDOWN" => Method::Teardown,
            "GET_PARAMETER" => Method::GetParameter,
            "SET_PARAMETER" => Method::SetParameter,
            "ANNOUNCE" => Method::Announce,
            "RECORD" => Method::Record,
            other => Method::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Options => "OPTIONS",
            Method::Describe => "DESCRIBE",
            Method::Setup => "SETUP",
            Method::Play => "PLAY",
            Method::Pause => "PAUSE",
            Method::Teardown => "TEARDOWN",
            Method::GetParameter => "GET_PARAMETER",
            Method::SetParameter => "SET_PARAMETER",
            Method::Announce => "ANNOUNCE",
            Method::Record => "RECORD",
            Method::Other(s) => s,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub uri: String,
    /// Header names as sent; looked up without regard to case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn cseq(&self) -> Option<u32> {
        self.header("CSeq")?.trim().parse().ok()
    }
}

/// One message from a client: a request, or a binary frame interleaved on the connection
/// (`$`, channel, 16-bit length: RTCP receiver reports, or media when publishing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Request(Request),
    Interleaved { channel: u8, data: Vec<u8> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Head or body over the limits (answer 413 and close).
    TooLarge,
    /// Not RTSP (answer 400 and close); the text says what.
    Malformed(String),
}

/// Parses the message at the front of `buf`: `Ok(None)` when more bytes are needed, else the
/// message and the bytes it took.
pub fn parse(buf: &[u8]) -> Result<Option<(Incoming, usize)>, ParseError> {
    if buf.first() == Some(&b'$') {
        if buf.len() < 4 {
            return Ok(None);
        }
        let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        if buf.len() < 4 + len {
            return Ok(None);
        }
        return Ok(Some((
            Incoming::Interleaved {
                channel: buf[1],
                data: buf[4..4 + len].to_vec(),
            },
            4 + len,
        )));
    }
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        // A head within the limit has its blank line within MAX_HEAD + 4 bytes: decided the
        // same however the bytes arrive.
        return if buf.len() >= MAX_HEAD + 4 {
            Err(ParseError::TooLarge)
        } else {
            Ok(None)
        };
    };
    if head_end > MAX_HEAD {
        return Err(ParseError::TooLarge);
    }
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| ParseError::Malformed("the request head is not UTF-8".into()))?;
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::Malformed(format!(
            "not a request line: {:?}",
            truncate(line)
        )));
    };
    if version != "RTSP/1.0" {
        return Err(ParseError::Malformed(format!(
            "not RTSP/1.0: {:?}",
            truncate(version)
        )));
    }
    let mut headers = Vec::new();
    for l in lines {
        let Some((name, value)) = l.split_once(':') else {
            return Err(ParseError::Malformed(format!(
                "not a header: {:?}",
                truncate(l)
            )));
        };
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
        .map(|(_, v)| {
            v.parse::<usize>()
                .map_err(|_| ParseError::Malformed(format!("bad Content-Length {:?}", truncate(v))))
        })
        .transpose()?
        .unwrap_or(0);
    if length > MAX_BODY {
        return Err(ParseError::TooLarge);
    }
    let start = head_end + 4;
    if buf.len() < start + length {
        return Ok(None);
    }
    Ok(Some((
        Incoming::Request(Request {
            method: Method::parse(method),
            uri: uri.to_string(),
            headers,
            body: buf[start..start + length].to_vec(),
        }),
        start + length,
    )))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// At most 64 characters of client text in an error message.
fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// A response, built then turned into bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    /// A response echoing the request's `CSeq` (when it had one).
    pub fn new(status: u16, cseq: Option<u32>) -> Response {
        let mut r = Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        };
        if let Some(c) = cseq {
            r = r.header("CSeq", c.to_string());
        }
        r
    }

    /// Replaces the value of header `name` (adds it when absent).
    pub fn set_header(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self
            .headers
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some(h) => h.1 = value,
            None => self.headers.push((name.to_string(), value)),
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn body(mut self, content_type: &str, body: Vec<u8>) -> Response {
        self.headers
            .push(("Content-Type".to_string(), content_type.to_string()));
        self.body = body;
        self
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut head = format!("RTSP/1.0 {} {}\r\n", self.status, reason(self.status));
        for (n, v) in &self.headers {
            // Values are ours, but a newline in one would forge a header: never let it through.
            let v: String = v.chars().filter(|c| *c != '\r' && *c != '\n').collect();
            let _ = write!(head, "{n}: {v}\r\n");
        }
        if !self.body.is_empty() {
            let _ = write!(head, "Content-Length: {}\r\n", self.body.len());
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Request Entity Too Large",
        454 => "Session Not Found",
        455 => "Method Not Valid in This State",
        459 => "Aggregate Operation Not Allowed",
        461 => "Unsupported Transport",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// A binary frame on the RTSP connection (`$`, channel, length, data); `data` at most 65,535 bytes.
pub fn interleaved(channel: u8, data: &[u8]) -> Vec<u8> {
    let len = data.len().min(usize::from(u16::MAX));
    let mut out = Vec::with_capacity(4 + len);
    out.push(b'$');
    out.push(channel);
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&data[..len]);
    out
}

/// How a client wants a track delivered (the first alternative of `Transport:` this server
/// can do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// RTP and RTCP inside the RTSP connection, on these two channels.
    Tcp { rtp: u8, rtcp: u8 },
    /// RTP and RTCP over UDP to these client ports.
    Udp { rtp: u16, rtcp: u16 },
}

/// Reads `Transport:` (RFC 2326 §12.39): comma-separated alternatives, each
/// `RTP/AVP[/TCP|/UDP];unicast;interleaved=a-b|client_port=a-b`. Multicast is not offered.
pub fn parse_transport(value: &str) -> Result<Transport, String> {
    for alternative in value.split(',') {
        let mut params = alternative.split(';').map(str::trim);
        let proto = params.next().unwrap_or_default();
        let tcp = match proto {
            "RTP/AVP/TCP" => true,
            "RTP/AVP" | "RTP/AVP/UDP" => false,
            _ => continue,
        };
        let mut multicast = false;
        let mut pair: Option<(u32, u32)> = None;
        for p in params {
            let (key, val) = p.split_once('=').unwrap_or((p, ""));
            match key {
                "multicast" => multicast = true,
                "interleaved" if tcp => pair = parse_pair(val),
                "client_port" if !tcp => pair = parse_pair(val),
                _ => {}
            }
        }
        if multicast {
            continue;
        }
        match (tcp, pair) {
            (true, Some((a, b))) if a <= 255 && b <= 255 => {
                return Ok(Transport::Tcp {
                    rtp: a as u8,
                    rtcp: b as u8,
                })
            }
            (true, None) => return Ok(Transport::Tcp { rtp: 0, rtcp: 1 }),
            (false, Some((a, b))) if (1..=65535).contains(&a) && (1..=65535).contains(&b) => {
                return Ok(Transport::Udp {
                    rtp: a as u16,
                    rtcp: b as u16,
                })
            }
            _ => continue,
        }
    }
    Err(format!(
        "no transport this server offers in {:?} (RTP/AVP/TCP with interleaved=, or RTP/AVP with client_port=)",
        truncate(value)
    ))
}

/// `a-b` (or `a`, meaning `a-(a+1)`).
fn parse_pair(v: &str) -> Option<(u32, u32)> {
    match v.split_once('-') {
        Some((a, b)) => Some((a.trim().parse().ok()?, b.trim().parse().ok()?)),
        None => {
            let a: u32 = v.trim().parse().ok()?;
            Some((a, a + 1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_parsed_whole_and_only_when_complete() {
        let bytes =
            b"ANNOUNCE rtsp://h/cam RTSP/1.0\r\nCSeq: 3\r\ncontent-length: 4\r\n\r\nv=0\nOPTIONS";
        for cut in 0..bytes.len() - "OPTIONS".len() {
            assert_eq!(parse(&bytes[..cut]), Ok(None), "cut at {cut}");
        }
        let (msg, used) = parse(bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len() - "OPTIONS".len());
        let Incoming::Request(r) = msg else {
            panic!("a request")
        };
        assert_eq!(r.method, Method::Announce);
        assert_eq!(r.uri, "rtsp://h/cam");
        assert_eq!(r.cseq(), Some(3));
        assert_eq!(r.header("CONTENT-LENGTH"), Some("4"));
        assert_eq!(r.body, b"v=0\n");
    }

    #[test]
    fn interleaved_frames_round_trip() {
        let frame = interleaved(1, b"rtcp");
        assert_eq!(frame, b"$\x01\x00\x04rtcp");
        assert_eq!(parse(&frame[..5]), Ok(None));
        assert_eq!(
            parse(&frame),
            Ok(Some((
                Incoming::Interleaved {
                    channel: 1,
                    data: b"rtcp".to_vec()
                },
                8
            )))
        );
    }

    #[test]
    fn hostile_requests_are_refused_with_bounded_work() {
        assert_eq!(parse(&vec![b'A'; MAX_HEAD + 3]), Ok(None));
        assert_eq!(parse(&vec![b'A'; MAX_HEAD + 4]), Err(ParseError::TooLarge));
        let big = format!(
            "SET_PARAMETER * RTSP/1.0\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert_eq!(parse(big.as_bytes()), Err(ParseError::TooLarge));
        for bad in [
            "GET / HTTP/1.1\r\n\r\n",
            "OPTIONS * RTSP/1.0 extra\r\n\r\n",
            "OPTIONS * RTSP/1.0\r\nno colon\r\n\r\n",
            "OPTIONS * RTSP/1.0\r\nContent-Length: -1\r\n\r\n",
        ] {
            assert!(
                matches!(parse(bad.as_bytes()), Err(ParseError::Malformed(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse(b"OPTIONS * RTSP/1.0\r\n\xff: x\r\n\r\n"),
            Err(ParseError::Malformed(_))
        ));
    }

    #[test]
    fn responses_carry_cseq_length_and_no_forged_headers() {
        let r = Response::new(200, Some(7))
            .header("Session", "abc\r\nX-Evil: 1")
            .body("application/sdp", b"v=0\r\n".to_vec())
            .to_bytes();
        assert_eq!(
            String::from_utf8(r).unwrap(),
            "RTSP/1.0 200 OK\r\nCSeq: 7\r\nSession: abcX-Evil: 1\r\nContent-Type: application/sdp\r\nContent-Length: 5\r\n\r\nv=0\r\n"
        );
        assert_eq!(
            Response::new(454, None).to_bytes(),
            b"RTSP/1.0 454 Session Not Found\r\n\r\n"
        );
    }

    #[test]
    fn transports_pick_the_first_alternative_this_server_does() {
        assert_eq!(
            parse_transport("RTP/AVP/TCP;unicast;interleaved=2-3"),
            Ok(Transport::Tcp { rtp: 2, rtcp: 3 })
        );
        assert_eq!(
            parse_transport("RTP/AVP;unicast;client_port=5000-5001"),
            Ok(Transport::Udp {
                rtp: 5000,
                rtcp: 5001
            })
        );
        assert_eq!(
            parse_transport("RTP/AVP;multicast;port=5000-5001,RTP/AVP/TCP;unicast"),
            Ok(Transport::Tcp { rtp: 0, rtcp: 1 })
        );
        assert_eq!(
            parse_transport("RTP/AVP;unicast;client_port=7000"),
            Ok(Transport::Udp {
                rtp: 7000,
                rtcp: 7001
            })
        );
        assert!(parse_transport("RAW/RAW/UDP;unicast").is_err());
        assert!(parse_transport("RTP/AVP/TCP;interleaved=300-301").is_err());
        assert!(parse_transport("RTP/AVP;unicast;client_port=0-1").is_err());
        assert!(parse_transport("RTP/AVP;unicast").is_err());
    }
}
