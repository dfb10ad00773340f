//! The SDP a DESCRIBE answers (RFC 8866, RFC 6184 for H.264, RFC 7798 for H.265, RFC 3640 for
//! AAC, RFC 7587 for Opus): one media section per track, from the camera's codec descriptions.

use std::fmt::Write as _;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::media::{AudioCodec, VideoCodec};

pub const VIDEO_PAYLOAD_TYPE: u8 = 96;
pub const AUDIO_PAYLOAD_TYPE: u8 = 97;
/// The `a=control` of each track, relative to the stream's URL.
pub const VIDEO_CONTROL: &str = "trackID=0";
pub const AUDIO_CONTROL: &str = "trackID=1";

/// The audio's payload type and `rtpmap` encoding, when RTP can carry it.
pub fn audio_payload(a: &AudioCodec) -> Option<(u8, String)> {
    match a.codec {
        "pcmu" => Some((0, format!("PCMU/{}/{}", a.sample_rate, a.channels))),
        "pcma" => Some((8, format!("PCMA/{}/{}", a.sample_rate, a.channels))),
        "opus" => Some((AUDIO_PAYLOAD_TYPE, "opus/48000/2".to_string())),
        "aac" if !a.extra_data.is_empty() => Some((
            AUDIO_PAYLOAD_TYPE,
            format!("MPEG4-GENERIC/{}/{}", a.sample_rate, a.channels),
        )),
        _ => None,
    }
}

/// The session description of a camera; `None` when its video codec cannot go in RTP here.
pub fn describe(video: &VideoCodec, audio: Option<&AudioCodec>) -> Option<String> {
    let mut out = String::new();
    out.push_str("v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=livelens\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n");
    out.push_str("a=control:*\r\n");
    let b64 = |b: &[u8]| STANDARD.encode(b);
    let pt = VIDEO_PAYLOAD_TYPE;
    let _ = write!(out, "m=video 0 RTP/AVP {pt}\r\n");
    match video.codec {
        "h264" => {
            let sps = video
                .parameter_sets
                .iter()
                .find(|p| p.first().map(|b| b & 0x1f) == Some(7));
            let pps = video
                .parameter_sets
                .iter()
                .find(|p| p.first().map(|b| b & 0x1f) == Some(8));
            let _ = write!(
                out,
                "a=rtpmap:{pt} H264/90000\r\na=fmtp:{pt} packetization-mode=1"
            );
            if let Some(sps) = sps.filter(|s| s.len() >= 4) {
                let _ = write!(
                    out,
                    ";profile-level-id={:02x}{:02x}{:02x}",
                    sps[1], sps[2], sps[3]
                );
            }
            if let (Some(sps), Some(pps)) = (sps, pps) {
                let _ = write!(out, ";sprop-parameter-sets={},{}", b64(sps), b64(pps));
            }
            out.push_str("\r\n");
        }
        "h265" => {
            let of_type = |t: u8| {
                video
                    .parameter_sets
                    .iter()
                    .find(|p| p.first().map(|b| (b >> 1) & 0x3f) == Some(t))
            };
            let _ = write!(out, "a=rtpmap:{pt} H265/90000\r\n");
            if let (Some(vps), Some(sps), Some(pps)) = (of_type(32), of_type(33), of_type(34)) {
                let _ = write!(
                    out,
                    "a=fmtp:{pt} sprop-vps={};sprop-sps={};sprop-pps={}\r\n",
                    b64(vps),
                    b64(sps),
                    b64(pps)
                );
            }
        }
        _ => return None,
    }
    let _ = write!(out, "a=control:{VIDEO_CONTROL}\r\n");
    if let Some(a) = audio {
        if let Some((apt, encoding)) = audio_payload(a) {
            let _ = write!(
                out,
                "m=audio 0 RTP/AVP {apt}\r\na=rtpmap:{apt} {encoding}\r\n"
            );
            match a.codec {
                "aac" => {
                    let config: String = a.extra_data.iter().map(|b| format!("{b:02x}")).collect();
                    let _ = write!(
                        out,
                        "a=fmtp:{apt} streamtype=5;profile-level-id=1;mode=AAC-hbr;sizelength=13;\
                         indexlength=3;indexdeltalength=3;config={config}\r\n"
                    );
                }
                "opus" => {
                    let _ = write!(
                        out,
                        "a=fmtp:{apt} sprop-stereo={}\r\n",
                        u8::from(a.channels > 1)
                    );
                }
                _ => {}
            }
            let _ = write!(out, "a=control:{AUDIO_CONTROL}\r\n");
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// The fMP4 tests' H.264 description (SPS 67 42 c0 1f …, PPS 68 ce 3c 80).
    fn h264() -> VideoCodec {
        crate::output::fmp4::tests::test_video()
    }

    #[test]
    fn h264_with_aac_names_both_tracks_with_their_parameters() {
        let aac = AudioCodec {
            codec: "aac",
            rfc6381: Some("mp4a.40.2".into()),
            sample_rate: 48_000,
            channels: 2,
            extra_data: Bytes::from_static(&[0x11, 0x90]),
        };
        let sdp = describe(&h264(), Some(&aac)).unwrap();
        let lines: Vec<&str> = sdp.split("\r\n").collect();
        assert_eq!(lines[0], "v=0");
        assert!(lines.contains(&"m=video 0 RTP/AVP 96"));
        assert!(lines.contains(&"a=rtpmap:96 H264/90000"));
        assert!(lines.contains(
            &"a=fmtp:96 packetization-mode=1;profile-level-id=42c01f;sprop-parameter-sets=Z0LAH4yN,aM48gA=="
        ));
        assert!(lines.contains(&"a=control:trackID=0"));
        assert!(lines.contains(&"m=audio 0 RTP/AVP 97"));
        assert!(lines.contains(&"a=rtpmap:97 MPEG4-GENERIC/48000/2"));
        assert!(sdp.contains(";config=1190\r\n"));
        assert!(lines.contains(&"a=control:trackID=1"));
        assert!(sdp.ends_with("\r\n"));
    }

    #[test]
    fn h265_g711_and_unsupported_codecs() {
        let h265 = VideoCodec {
            codec: "h265",
            rfc6381: "hvc1.1.6.L93.B0".into(),
            width: 640,
            height: 360,
            fps: None,
            parameter_sets: vec![
                Bytes::from_static(&[0x40, 0x01, 0x0c]),
                Bytes::from_static(&[0x42, 0x01, 0x01]),
                Bytes::from_static(&[0x44, 0x01, 0xc0]),
            ],
        };
        let pcma = AudioCodec {
            codec: "pcma",
            rfc6381: None,
            sample_rate: 8000,
            channels: 1,
            extra_data: Bytes::new(),
        };
        let sdp = describe(&h265, Some(&pcma)).unwrap();
        assert!(sdp.contains("a=rtpmap:96 H265/90000\r\n"));
        assert!(sdp.contains("a=fmtp:96 sprop-vps=QAEM;sprop-sps=QgEB;sprop-pps=RAHA\r\n"));
        assert!(sdp.contains("m=audio 0 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000/1\r\n"));
        let mut vp8 = h264();
        vp8.codec = "vp8";
        assert_eq!(describe(&vp8, None), None);
        // AAC without its AudioSpecificConfig cannot be described: the video goes alone.
        let bare = AudioCodec {
            codec: "aac",
            rfc6381: None,
            sample_rate: 44_100,
            channels: 2,
            extra_data: Bytes::new(),
        };
        assert!(!describe(&h264(), Some(&bare)).unwrap().contains("m=audio"));
    }
}
