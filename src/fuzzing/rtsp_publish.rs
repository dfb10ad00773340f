//! What an RTSP publisher sends (`output::rtp_ingest`): the SDP it announces and the RTP
//! packets of its tracks, all chosen by the publisher.
//!
//! Input: a chunk (u8 length) of SDP text, then packets, each a track byte (even: video, odd:
//! audio) and a chunk (u16 length) of RTP.
//!
//! Invariants:
//! - nothing panics, whatever the SDP, the header fields (CSRC count, extension length,
//!   padding) or the payloads;
//! - every video frame out has a description, and its data is the hub's 4-byte length-prefixed
//!   NAL units, each inside the data;
//! - no frame is empty.

use super::Cursor;
use crate::media::TrackKind;
use crate::output::rtp_ingest::{parse_announce, Ingest};

/// Used when the input's SDP is not one: H.264 with x264's 1080p SPS, and AAC.
const FALLBACK: &str = "v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
    a=fmtp:96 packetization-mode=1;sprop-parameter-sets=Z2QAKKzZQHgCJ+XARAAAAwAEAAADAPA8YMZY,aM48gA==\r\n\
    a=control:v\r\nm=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/48000/2\r\n\
    a=fmtp:97 mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3;config=1190\r\na=control:a\r\n";

pub fn check(data: &[u8]) {
    let mut input = Cursor::new(data);
    let sdp = String::from_utf8_lossy(input.chunk8()).into_owned();
    let announced = parse_announce(&sdp)
        .or_else(|_| parse_announce(FALLBACK))
        .unwrap();
    let mut ingest = Ingest::new(&announced);
    let mut frames = Vec::new();
    while !input.is_empty() {
        let track = if input.u8() % 2 == 0 {
            TrackKind::Video
        } else {
            TrackKind::Audio
        };
        let packet = input.chunk16();
        let _ = ingest.push(track, packet, &mut frames);
    }
    super::assert_published_frames(&frames);
}
