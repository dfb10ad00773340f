//! WHEP / go2rtc SDP offers, as `output::webrtc::WebRtc::offer` handles them: the checks of
//! `api::webrtc::sdp_text` (UTF-8, starts with `v=0`), str0m's parser
//! `SdpOffer::from_sdp_string`, livelens' own scan `codec::offered_video`, an answer from an
//! `Rtc` configured as livelens configures every peer's (`output::webrtc::peer_rtc`),
//! `route::sdp_ufrag` on that answer, and the payload-type choice the peer makes
//! (`codec::choose_*`) for each media str0m added.
//!
//! Invariants:
//! - nothing panics, in livelens or in str0m;
//! - `offered_video` names are upper-case, unique, and never RTX/RED/ULPFEC/FLEXFEC-03;
//! - every offer str0m accepts gives an answer that str0m parses back, and when livelens
//!   answers it (the answer has an ICE ufrag; else livelens answers 400) the ufrag is not
//!   empty;
//! - a payload type the peer would choose is one of the media's offered ones, of the right
//!   codec; and when an H.264 one exists for a video media, `offered_video` lists H264 (else
//!   livelens refuses, 422, an offer it could serve).

use std::sync::OnceLock;
use std::time::Instant;

use bytes::Bytes;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::{Codec, PayloadParams};
use str0m::media::MediaKind;
use str0m::{Event, Output};

use crate::api::webrtc::sdp_text;
use crate::fuzzing::debug;
use crate::output::webrtc::{codec, peer_rtc, route};

fn cert() -> &'static str0m::config::DtlsCert {
    static CERT: OnceLock<str0m::config::DtlsCert> = OnceLock::new();
    CERT.get_or_init(|| {
        let crypto = str0m::crypto::from_feature_flags();
        let cert = crypto
            .dtls_provider
            .generate_certificate()
            .expect("a DTLS certificate");
        crypto.install_process_default();
        cert
    })
}

/// Checks the invariants above on one input: returns when they hold, panics when one breaks.
pub fn check(data: &[u8]) {
    let body = Bytes::copy_from_slice(data);
    let Ok(sdp) = sdp_text(&body) else {
        return;
    };
    let offered = codec::offered_video(sdp);
    for (i, name) in offered.iter().enumerate() {
        assert_eq!(*name, name.to_ascii_uppercase());
        assert!(!offered[..i].contains(name), "{name} twice");
        assert!(!matches!(
            name.as_str(),
            "RTX" | "RED" | "ULPFEC" | "FLEXFEC-03"
        ));
    }
    let Ok(offer) = SdpOffer::from_sdp_string(sdp) else {
        return;
    };
    let now = Instant::now();
    let mut rtc = peer_rtc(cert(), now);
    if let Ok(c) = str0m::Candidate::host("127.0.0.1:8555".parse().unwrap(), "udp") {
        let _ = rtc.add_local_candidate(c);
    }
    let answer = match rtc.sdp_api().accept_offer(offer) {
        Ok(a) => a.to_sdp_string(),
        Err(e) => {
            if debug() {
                eprintln!("offer refused: {e}");
            }
            return;
        }
    };
    if debug() {
        eprintln!("offered video {offered:?}\nanswer:\n{answer}");
    }
    // str0m also accepts offers with no media it knows (`m=VIDEO …`, or a second session in the
    // body that only `offered_video`'s line scan sees), answering without any m-line and so
    // without an ufrag: livelens then answers 400. When there is one, it is not empty.
    if let Some(ufrag) = route::sdp_ufrag(&answer) {
        assert!(!ufrag.is_empty());
    }
    SdpAnswer::from_sdp_string(&answer).expect("str0m cannot parse its own answer");

    // The media str0m announces, and the payload types the peer would pick for them.
    let mut added = Vec::new();
    for _ in 0..64 {
        match rtc.poll_output() {
            Ok(Output::Event(Event::MediaAdded(m))) => added.push((m.mid, m.kind)),
            Ok(Output::Timeout(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    for (mid, kind) in added {
        let Some(media) = rtc.media(mid) else {
            continue;
        };
        let remote = media.remote_pts().to_vec();
        let params: Vec<PayloadParams> = rtc
            .codec_config()
            .params()
            .iter()
            .filter(|p| remote.contains(&p.pt()))
            .cloned()
            .collect();
        let codec_of = |pt| params.iter().find(|p| p.pt() == pt).map(|p| p.spec().codec);
        match kind {
            MediaKind::Video => {
                let profiles = [None, Some(0x42e01f), Some(0x4d001f), Some(0x64001f)];
                for profile in
                    profiles.map(|p| p.map(|id| codec::H264Profile::of_level_id(Some(id))))
                {
                    if let Some(pt) = codec::choose_h264(params.iter(), profile) {
                        assert!(remote.contains(&pt));
                        assert_eq!(codec_of(pt), Some(Codec::H264));
                        assert!(
                            offered.iter().any(|n| n == "H264"),
                            "str0m negotiated H.264 (pt {pt}) but offered_video says {offered:?}"
                        );
                    }
                }
                if let Some(pt) = codec::choose_h265(params.iter()) {
                    assert!(remote.contains(&pt));
                    assert_eq!(codec_of(pt), Some(Codec::H265));
                }
            }
            MediaKind::Audio => {
                for (camera, want) in [
                    ("opus", Codec::Opus),
                    ("pcma", Codec::PCMA),
                    ("pcmu", Codec::PCMU),
                ] {
                    if let Some(pt) = codec::choose_audio(params.iter(), camera) {
                        assert!(remote.contains(&pt));
                        assert_eq!(codec_of(pt), Some(want));
                    }
                }
                assert_eq!(codec::choose_audio(params.iter(), "aac"), None);
                if let Some(pt) = codec::choose_transcoded(params.iter()) {
                    assert_eq!(codec_of(pt), Some(Codec::Opus));
                }
            }
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }
}
