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

/// The H.264 payload type to send a camera's stream with: packetization-mode 1 and the camera's
/// profile when offered; else the first packetization-mode 1 H.264 (browsers decode higher
/// profiles than they offer, and Chromium offers no High profile at all).
pub fn choose_h264<'a>(
    params: impl Iterator<Item = &'a PayloadParams>,
    camera_profile: Option<u8>,
) -> Option<Pt> {
    let h264: Vec<&PayloadParams> = params
        .filter(|p| p.spec().codec == Codec::H264 && p.spec().format.packetization_mode == Some(1))
        .collect();
    let profile_of =
        |p: &PayloadParams| p.spec().format.profile_level_id.map(|id| (id >> 16) as u8);
    camera_profile
        .and_then(|want| h264.iter().find(|p| profile_of(p) == Some(want)))
        .or_else(|| h264.first())
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

    #[test]
    fn lists_offered_video_codecs() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96 97 102\r\na=rtpmap:96 VP8/90000\r\n\
                   a=rtpmap:97 rtx/90000\r\na=rtpmap:102 H264/90000\r\n";
        assert_eq!(offered_video(sdp), ["VP8", "H264"]);
        assert!(offered_video("v=0\r\n").is_empty());
    }
}
