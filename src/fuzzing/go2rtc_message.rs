//! go2rtc's WebSocket signalling (`api::mse` and `output::mse`): the client's JSON text
//! message (`{"type":"mse","value":"<codecs>"}`, `{"type":"webrtc/offer","value":"<sdp>"}`…)
//! as `api::mse::hello` reads it, then `ClientCodecs::parse` and an `MseSession`'s first
//! messages for the codecs the client listed.
//!
//! Invariants:
//! - parsing never panics, for any text;
//! - `ClientCodecs::parse` is case-insensitive and ignores blanks and empty entries;
//! - an MSE session for an H.264 / H.265 camera with AAC audio fails exactly when the client
//!   listed codecs and none is `avc1`/`avc3` (`hvc1`/`hev1`); otherwise it sends a JSON text
//!   `{"type":"mse","value":"video/mp4; codecs=\"…\""}` (with `mp4a` exactly when the client
//!   accepts AAC), the init segment (ftyp…), the moof and the mdat;
//! - the `drop` message is JSON with the count of frames lost;
//! - an offer's SDP goes to str0m's parser without panicking.

use std::sync::Arc;

use bytes::Bytes;

use crate::api::mse::ClientMessage;
use crate::fuzzing::debug;
use crate::hub::packet::Packet;
use crate::media::{AudioCodec, Frame, TrackKind, VideoCodec};
use crate::output::mse::{ClientCodecs, MseSession, Outgoing};

fn video(codec: &'static str) -> Arc<VideoCodec> {
    let (rfc6381, parameter_sets) = match codec {
        "h264" => (
            "avc1.64001e",
            vec![
                Bytes::from_static(&[0x67, 0x64, 0x00, 0x1e, 0xac]),
                Bytes::from_static(&[0x68, 0xce]),
            ],
        ),
        _ => (
            "hvc1.1.6.L60.90",
            vec![
                Bytes::from_static(&[0x40, 0x01, 0x0c]),
                Bytes::from_static(&[
                    0x42, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03,
                    0x00, 0x00, 0x03, 0x00, 0x3c, 0xa0, 0x0a, 0x08, 0x0f, 0x16, 0x59, 0x59, 0xa4,
                ]),
                Bytes::from_static(&[0x44, 0x01, 0xc1]),
            ],
        ),
    };
    Arc::new(VideoCodec {
        codec,
        rfc6381: rfc6381.into(),
        width: 640,
        height: 360,
        fps: Some(25.0),
        parameter_sets,
    })
}

fn aac() -> AudioCodec {
    AudioCodec {
        codec: "aac",
        rfc6381: Some("mp4a.40.2".into()),
        sample_rate: 48_000,
        channels: 1,
        extra_data: Bytes::from_static(&[0x11, 0x88]),
    }
}

fn check_session(list: &str, codec: &'static str) {
    let entries: Vec<String> = list
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty())
        .collect();
    let accepts = |prefixes: &[&str]| {
        entries.is_empty()
            || entries
                .iter()
                .any(|e| prefixes.iter().any(|p| e.starts_with(p)))
    };
    let video_ok = match codec {
        "h264" => accepts(&["avc1", "avc3"]),
        _ => accepts(&["hvc1", "hev1"]),
    };
    let audio_ok = accepts(&["mp4a"]);

    let mut session = MseSession::new(ClientCodecs::parse(list));
    let packet = Packet::new(
        Frame {
            track: TrackKind::Video,
            pts: 0,
            dts: 0,
            keyframe: true,
            capture_time_us: None,
            video_codec: Some(video(codec)),
            data: Bytes::from_static(&[0, 0, 0, 2, 0x65, 0x88]),
        },
        1,
        3600,
    );
    match session.on_frame(&packet, Some(&aac())) {
        Err(e) => {
            assert!(!video_ok, "{codec} refused for {list:?}: {e}");
            assert!(e.starts_with("mse: "), "{e}");
        }
        Ok(out) => {
            assert!(video_ok, "{codec} accepted for {list:?}");
            assert_eq!(out.len(), 4);
            let Outgoing::Text(text) = &out[0] else {
                panic!("no mse message")
            };
            let v: serde_json::Value = serde_json::from_str(text).expect("mse message is JSON");
            assert_eq!(v["type"], "mse");
            let mime = v["value"].as_str().expect("mse value is a string");
            assert!(mime.starts_with("video/mp4; codecs=\""), "{mime}");
            assert_eq!(mime.contains("mp4a"), audio_ok, "{mime} for {list:?}");
            assert!(matches!(&out[1], Outgoing::Binary(b) if &b[4..8] == b"ftyp"));
            assert!(matches!(&out[2], Outgoing::Binary(b) if &b[4..8] == b"moof"));
            assert!(matches!(&out[3], Outgoing::Binary(b) if b[..] == [0, 0, 0, 2, 0x65, 0x88]));
        }
    }
}

/// Checks the invariants above on one input: returns when they hold, panics when one breaks.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // What the server reads off the socket.
    let Ok(m) = serde_json::from_str::<ClientMessage>(text) else {
        // Codec lists arrive in the query string too (`?codecs=` on /api/cameras/{id}/mse).
        check_codec_list(text);
        return;
    };
    if debug() {
        eprintln!("type {:?}, value {}", m.kind, m.value);
    }
    match m.kind.as_str() {
        "mse" => check_codec_list(m.value.as_str().unwrap_or("")),
        "webrtc/offer" | "webrtc" => {
            let sdp = m.sdp();
            let _ = str0m::change::SdpOffer::from_sdp_string(sdp);
            let _ = crate::output::webrtc::codec::offered_video(sdp);
        }
        _ => {}
    }
    let mut s = MseSession::new(ClientCodecs::all());
    let total = data.len() as u64 * 1_000_003;
    if let Some(Outgoing::Text(t)) = s.on_dropped(total) {
        let v: serde_json::Value = serde_json::from_str(&t).expect("drop message is JSON");
        assert_eq!(v["type"], "drop");
        assert_eq!(v["frames"].as_u64(), Some(total));
    } else {
        assert_eq!(total, 0);
    }
}

fn check_codec_list(list: &str) {
    let parsed = ClientCodecs::parse(list);
    assert_eq!(parsed, ClientCodecs::parse(&list.to_ascii_uppercase()));
    let normal: Vec<String> = list
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(parsed, ClientCodecs::parse(&normal.join(" , ")));
    if normal.is_empty() {
        assert_eq!(parsed, ClientCodecs::all());
    }
    check_session(list, "h264");
    check_session(list, "h265");
}
