//! Codec choice for WebRTC, sans-IO: what an offer contains, and which H.264 payload type fits
//! the camera.

use str0m::format::{Codec, PayloadParams};
use str0m::media::Pt;

/// The video codec names in an SDP offer (`a=rtpmap:<pt> <NAME>/<rate>` under `m=video`),
/// upper-case, without repeats, in offer order.
pub fn offered_video(sdp: &str) -> Vec<String> {
    let mut in_video = false;
    let mut names: Vec<String> = Vec::new();
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            in_video = m.starts_with("video");
        } else if let (true, Some(map)) = (in_video, line.strip_prefix("a=rtpmap:")) {
            if let Some(name) = map
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.split('/').next())
            {
                let name = name.to_ascii_uppercase();
                if !matches!(name.as_str(), "RTX" | "RED" | "ULPFEC" | "FLEXFEC-03")
                    && !names.contains(&name)
                {
                    names.push(name);
                }
            }
        }
    }
    names
}

/// Whether an offer sends video: a video line whose direction (its own `a=sendrecv|sendonly|
/// recvonly|inactive`, else the session's, else sendrecv, RFC 8866 §6.7) includes sending. A
/// WHIP publisher that sends nothing would take its camera and never feed it.
pub fn offer_sends_video(sdp: &str) -> bool {
    fn direction(line: &str) -> Option<&str> {
        let d = line.strip_prefix("a=")?;
        matches!(d, "sendrecv" | "sendonly" | "recvonly" | "inactive").then_some(d)
    }
    let lines: Vec<&str> = sdp.lines().map(str::trim).collect();
    let first_media = lines
        .iter()
        .position(|l| l.starts_with("m="))
        .unwrap_or(lines.len());
    let session = lines[..first_media]
        .iter()
        .find_map(|l| direction(l))
        .unwrap_or("sendrecv");
    let mut starts: Vec<usize> = (first_media..lines.len())
        .filter(|i| lines[*i].starts_with("m="))
        .collect();
    starts.push(lines.len());
    starts.windows(2).any(|w| {
        let section = &lines[w[0]..w[1]];
        let is_video = section[0].starts_with("m=video ");
        let d = section[1..]
            .iter()
            .find_map(|l| direction(l))
            .unwrap_or(session);
        is_video && matches!(d, "sendrecv" | "sendonly")
    })
}

/// An H.264 profile: `profile_idc` and the constraint flags byte (as in an SPS, and in the first
/// two bytes of `profile-level-id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H264Profile {
    pub idc: u8,
    pub constraints: u8,
}

impl H264Profile {
    /// From an SPS NAL unit (header byte first); `None` when too short.
    pub fn of_sps(sps: &[u8]) -> Option<H264Profile> {
        Some(H264Profile {
            idc: *sps.get(1)?,
            constraints: *sps.get(2)?,
        })
    }

    /// From `profile-level-id` (RFC 6184 §8.1; absent means 42000a, Baseline).
    pub fn of_level_id(id: Option<u32>) -> H264Profile {
        let id = id.unwrap_or(0x42000a);
        H264Profile {
            idc: (id >> 16) as u8,
            constraints: (id >> 8) as u8,
        }
    }

    /// Constrained Baseline: Baseline (or Main) with constraint_set1 — no B-frames, CAVLC.
    fn constrained_baseline(self) -> bool {
        matches!(self.idc, 66 | 77) && self.constraints & 0x40 != 0
    }

    /// Constrained High (constraint_set4 and set5 on High): no B-frames.
    fn constrained_high(self) -> bool {
        self.idc == 100 && self.constraints & 0x0c == 0x0c
    }

    /// Whether a decoder of profile `self` (an offered payload type) decodes a `stream` of
    /// that profile (ITU-T H.264 Annex A.2: each higher profile's decoders take the lower
    /// ones' streams). Plain Baseline streams are taken as constrained (cameras use no FMO/ASO).
    pub fn decodes(self, stream: H264Profile) -> bool {
        if stream.constrained_baseline() || stream.idc == 66 {
            // Every profile's decoder but Extended takes Constrained Baseline.
            return self.idc != 88 || stream.idc == 66;
        }
        if self.constrained_baseline() || self.idc == 66 {
            return false;
        }
        if self.constrained_high() {
            // No B-frames: only a stream that says it has none.
            return stream.constrained_high();
        }
        let rank = |idc: u8| match idc {
            77 => Some(1),
            100 => Some(2),
            110 => Some(3),
            122 => Some(4),
            244 => Some(5),
            _ => None,
        };
        match (rank(self.idc), rank(stream.idc)) {
            (Some(decoder), Some(s)) => decoder >= s,
            // Extended and others decode only their own streams.
            _ => self.idc == stream.idc,
        }
    }

    /// Its name, for messages.
    pub fn name(self) -> &'static str {
        if self.constrained_baseline() {
            return "Constrained Baseline";
        }
        if self.constrained_high() {
            return "Constrained High";
        }
        match self.idc {
            66 => "Baseline",
            77 => "Main",
            88 => "Extended",
            100 => "High",
            110 => "High 10",
            122 => "High 4:2:2",
            244 => "High 4:4:4 Predictive",
            _ => "an unknown profile",
        }
    }
}

impl std::fmt::Display for H264Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({:02x}{:02x})",
            self.name(),
            self.idc,
            self.constraints
        )
    }
}

/// The profiles of the packetization-mode 1 H.264 payload types of an offer's video lines,
/// in offer order (what [`choose_h264`] will choose from).
pub fn offered_h264_profiles(sdp: &str) -> Vec<H264Profile> {
    let mut in_video = false;
    let mut h264_pts: Vec<String> = Vec::new();
    let mut fmtp: Vec<(String, String)> = Vec::new();
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            in_video = m.starts_with("video");
        } else if !in_video {
            continue;
        } else if let Some(map) = line.strip_prefix("a=rtpmap:") {
            let mut parts = map.split_whitespace();
            if let (Some(pt), Some(name)) = (parts.next(), parts.next()) {
                if name.to_ascii_uppercase().starts_with("H264/") {
                    h264_pts.push(pt.to_string());
                }
            }
        } else if let Some(f) = line.strip_prefix("a=fmtp:") {
            if let Some((pt, params)) = f.split_once(' ') {
                fmtp.push((pt.to_string(), params.to_string()));
            }
        }
    }
    h264_pts
        .iter()
        .filter_map(|pt| {
            let params = fmtp
                .iter()
                .find(|(p, _)| p == pt)
                .map_or("", |(_, v)| v.as_str());
            let param = |name: &str| {
                params.split(';').find_map(|kv| {
                    let (k, v) = kv.trim().split_once('=')?;
                    k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
                })
            };
            (param("packetization-mode") == Some("1")).then(|| {
                H264Profile::of_level_id(
                    param("profile-level-id").and_then(|v| u32::from_str_radix(v, 16).ok()),
                )
            })
        })
        .collect()
}

/// Why an offer cannot take a camera's H.264, or `None` when one of its payload types decodes
/// it (`offered` from [`offered_h264_profiles`]).
pub fn h264_refusal(offered: &[H264Profile], camera: H264Profile) -> Option<String> {
    if offered.iter().any(|o| o.decodes(camera)) {
        return None;
    }
    let list: Vec<String> = offered.iter().map(|o| o.to_string()).collect();
    Some(format!(
        "the camera sends H.264 {camera}, which none of the offered H.264 payload types          (packetization-mode=1: [{}]) decodes; offer an H.264 payload type of that profile          or a higher one, or watch over MSE or HLS",
        list.join(", ")
    ))
}

/// The H.264 payload type to send a camera's stream with (packetization-mode 1): one of the
/// camera's own profile, else the first whose profile decodes it (Chromium offers no High, but
/// High 4:4:4 Predictive, whose decoders take High). `None` when none does: sending under a
/// payload type whose decoder cannot take the stream (High with B-frames as Constrained
/// Baseline) gives the viewer broken pictures and timestamps. An unknown camera profile takes
/// the first.
pub fn choose_h264<'a>(
    params: impl Iterator<Item = &'a PayloadParams>,
    camera_profile: Option<H264Profile>,
) -> Option<Pt> {
    let h264: Vec<&PayloadParams> = params
        .filter(|p| p.spec().codec == Codec::H264 && p.spec().format.packetization_mode == Some(1))
        .collect();
    let profile_of = |p: &PayloadParams| H264Profile::of_level_id(p.spec().format.profile_level_id);
    let Some(camera) = camera_profile else {
        return h264.first().map(|p| p.pt());
    };
    h264.iter()
        .find(|p| {
            let o = profile_of(p);
            o.idc == camera.idc && o.decodes(camera)
        })
        .or_else(|| h264.iter().find(|p| profile_of(p).decodes(camera)))
        .map(|p| p.pt())
}

/// The H.265 payload type, for a browser that offers it.
pub fn choose_h265<'a>(mut params: impl Iterator<Item = &'a PayloadParams>) -> Option<Pt> {
    params
        .find(|p| p.spec().codec == Codec::H265)
        .map(|p| p.pt())
}

/// The payload type for passing a camera's audio through: Opus, PCMA or PCMU when offered.
/// AAC has no WebRTC payload (it needs transcoding): `None`.
pub fn choose_audio<'a>(
    mut params: impl Iterator<Item = &'a PayloadParams>,
    camera_codec: &str,
) -> Option<Pt> {
    let want = match camera_codec {
        "opus" => Codec::Opus,
        "pcma" => Codec::PCMA,
        "pcmu" => Codec::PCMU,
        _ => return None,
    };
    params.find(|p| p.spec().codec == want).map(|p| p.pt())
}

/// The Opus payload type for a camera whose audio cannot pass through (AAC, or G.711 to a browser
/// that offers neither PCMA nor PCMU): it is transcoded to Opus. `None` when Opus is not offered.
pub fn choose_transcoded<'a>(mut params: impl Iterator<Item = &'a PayloadParams>) -> Option<Pt> {
    params
        .find(|p| p.spec().codec == Codec::Opus)
        .map(|p| p.pt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offer_sends_video_when_a_video_line_says_so() {
        let offer = |session: &str, video: &str, audio: &str| {
            format!(
                "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n{session}\
                 m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n{audio}a=rtpmap:111 opus/48000/2\r\n\
                 m=video 9 UDP/TLS/RTP/SAVPF 96\r\n{video}a=rtpmap:96 H264/90000\r\n"
            )
        };
        let sends = |s: &str, v: &str, a: &str| offer_sends_video(&offer(s, v, a));
        assert!(sends("", "a=sendonly\r\n", ""));
        assert!(sends("", "a=sendrecv\r\n", ""));
        assert!(sends("", "", ""), "no attribute: sendrecv");
        assert!(
            sends("a=recvonly\r\n", "a=sendonly\r\n", ""),
            "the line's own wins"
        );
        assert!(
            !sends("", "a=recvonly\r\n", "a=sendonly\r\n"),
            "audio alone"
        );
        assert!(!sends("", "a=inactive\r\n", ""));
        assert!(!sends("a=recvonly\r\n", "", ""), "the session's direction");
        assert!(!offer_sends_video("v=0\r\nm=audio 9 RTP/AVP 0\r\n"));
    }

    const CB: H264Profile = H264Profile {
        idc: 0x42,
        constraints: 0xe0,
    };
    const HIGH: H264Profile = H264Profile {
        idc: 0x64,
        constraints: 0x00,
    };

    #[test]
    fn a_decoder_takes_its_own_and_lower_profiles() {
        let of = |id: u32| H264Profile::of_level_id(Some(id));
        // Chromium's offer: 42001f, 42e01f, 4d001f, f4001f.
        assert!(of(0xf4001f).decodes(HIGH), "High 4:4:4 decoders take High");
        assert!(of(0x64001f).decodes(HIGH));
        assert!(!of(0x4d001f).decodes(HIGH), "Main does not take High");
        assert!(!of(0x42e01f).decodes(HIGH), "Constrained Baseline does not");
        assert!(!of(0x42001f).decodes(HIGH));
        assert!(
            !of(0x640c1f).decodes(HIGH),
            "Constrained High has no B-frames"
        );
        for decoder in [0x42e01f, 0x42001f, 0x4d001f, 0x64001f, 0xf4001f] {
            assert!(
                of(decoder).decodes(CB),
                "{decoder:x} takes Constrained Baseline"
            );
        }
        assert_eq!(H264Profile::of_level_id(None), of(0x42000a));
    }

    #[test]
    fn an_offer_that_cannot_decode_the_camera_is_refused_naming_profiles() {
        // aiortc 1.16 offers Constrained Baseline and Baseline only.
        let aiortc = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 97 98 99 100 101 102\r\n\
                      a=rtpmap:97 VP8/90000\r\na=rtpmap:99 H264/90000\r\n\
                      a=fmtp:99 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f\r\n\
                      a=rtpmap:101 H264/90000\r\n\
                      a=fmtp:101 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n";
        let offered = offered_h264_profiles(aiortc);
        assert_eq!(offered.len(), 2);
        let why = h264_refusal(&offered, HIGH).expect("refused");
        assert!(why.contains("High (6400)"), "{why}");
        assert!(why.contains("Constrained Baseline (42e0)"), "{why}");
        assert_eq!(h264_refusal(&offered, CB), None);
        // packetization-mode 0 does not count.
        let pm0 = "v=0\r\nm=video 9 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
                   a=fmtp:96 profile-level-id=64001f\r\n";
        assert!(offered_h264_profiles(pm0).is_empty());
    }

    #[test]
    fn lists_offered_video_codecs() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96 97 102\r\na=rtpmap:96 VP8/90000\r\n\
                   a=rtpmap:97 rtx/90000\r\na=rtpmap:102 H264/90000\r\n";
        assert_eq!(offered_video(sdp), ["VP8", "H264"]);
        assert!(offered_video("v=0\r\n").is_empty());
    }
}
