//! A small RTSP client on a raw socket, for tests that must see every byte of the server's
//! RTSP (the re-stream, publishing).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A small RTSP client on a raw socket: what the tests need to see every byte.
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    cseq: u32,
}

impl Client {
    pub fn connect(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Client {
            stream,
            buf: Vec::new(),
            cseq: 0,
        }
    }

    pub fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Sends a request; the status, head and body of its response (interleaved data before it
    /// is skipped).
    pub fn request(
        &mut self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
    ) -> (u16, String, Vec<u8>) {
        self.request_with_body(method, url, headers, "")
    }

    /// As [`Client::request`], with a body (the caller gives its Content-Length header).
    pub fn request_with_body(
        &mut self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, String, Vec<u8>) {
        self.cseq += 1;
        let mut text = format!("{method} {url} RTSP/1.0\r\nCSeq: {}\r\n", self.cseq);
        for (n, v) in headers {
            text.push_str(&format!("{n}: {v}\r\n"));
        }
        text.push_str("\r\n");
        text.push_str(body);
        self.send(text.as_bytes());
        self.response()
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next response; `(0, "", [])` when the server closed the connection first.
    pub fn response(&mut self) -> (u16, String, Vec<u8>) {
        loop {
            while self.buf.first() == Some(&b'$') && self.buf.len() >= 4 {
                let len = u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize;
                if self.buf.len() < 4 + len {
                    break;
                }
                self.buf.drain(..4 + len);
            }
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                if self.buf[0] != b'$' {
                    let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while self.buf.len() < end + 4 + length {
                        assert!(self.fill(), "closed inside a response");
                    }
                    let body = self.buf[end + 4..end + 4 + length].to_vec();
                    self.buf.drain(..end + 4 + length);
                    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
                    return (status, head, body);
                }
            }
            if !self.fill() {
                return (0, String::new(), Vec::new());
            }
        }
    }

    /// The next interleaved frame: its channel and data.
    pub fn interleaved(&mut self) -> (u8, Vec<u8>) {
        loop {
            if self.buf.len() >= 4 && self.buf[0] == b'$' {
                let len = u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize;
                if self.buf.len() >= 4 + len {
                    let data = self.buf[4..4 + len].to_vec();
                    let channel = self.buf[1];
                    self.buf.drain(..4 + len);
                    return (channel, data);
                }
            }
            assert!(
                self.buf.is_empty() || self.buf[0] == b'$',
                "expected interleaved data"
            );
            assert!(self.fill(), "the server closed the connection");
        }
    }

    /// DESCRIBE, SETUP of the video track (TCP channels 0-1, or these UDP client ports) and
    /// PLAY; returns the session id.
    pub fn play(&mut self, port: u16, udp: Option<(u16, u16)>) -> String {
        let url = format!("rtsp://127.0.0.1:{port}/cam");
        let (status, _, sdp) = self.request("DESCRIBE", &url, &[("Accept", "application/sdp")]);
        assert_eq!(status, 200);
        assert!(String::from_utf8_lossy(&sdp).contains("a=rtpmap:96 H264/90000"));
        let transport = match udp {
            None => "RTP/AVP/TCP;unicast;interleaved=0-1".to_string(),
            Some((a, b)) => format!("RTP/AVP;unicast;client_port={a}-{b}"),
        };
        let (status, head, _) = self.request(
            "SETUP",
            &format!("{url}/trackID=0"),
            &[("Transport", &transport)],
        );
        assert_eq!(status, 200, "{head}");
        let session = session_id(&head);
        let (status, head, _) = self.request("PLAY", &url, &[("Session", &session)]);
        assert_eq!(status, 200, "{head}");
        session
    }
}

/// The session id of a response head's `Session:` (without its `;timeout=`).
pub fn session_id(head: &str) -> String {
    head.lines()
        .find_map(|l| l.strip_prefix("Session: "))
        .expect("a Session header")
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

/// An RTP packet's payload, after checking its header: version 2, payload type 96.
pub fn rtp_payload(packet: &[u8]) -> &[u8] {
    assert!(packet.len() > 12, "an RTP packet");
    assert_eq!(packet[0] >> 6, 2, "RTP version 2");
    assert_eq!(packet[1] & 0x7f, 96, "the video payload type");
    &packet[12..]
}
