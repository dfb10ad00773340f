//! What a WHIP/WHEP `PATCH` asks for (RFC 9725 §4.3, RFC 8840 `application/trickle-ice-sdpfrag`),
//! sans-IO: trickled candidates for the running ICE session, or an ICE restart.
//!
//! livelens is ICE-lite and answers with every candidate it has, so a client's trickled
//! candidates are applied (str0m takes them) and answered 204. An ICE restart (new
//! ufrag/pwd, or `If-Match: *` as RFC 9725 §4.3.2 asks of a restart) is refused with 422, which
//! RFC 9725 prescribes for a session that supports trickle but not restarts: str0m restarts ICE
//! only through a full offer/answer, which WHIP/WHEP do not carry. Never a 204 that claims a
//! restart happened.

use std::fmt;

/// A parsed sdpfrag: the ICE credentials and candidate lines it carries.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SdpFrag {
    pub ufrag: Option<String>,
    pub pwd: Option<String>,
    /// `candidate:…` attribute values, without the `a=`.
    pub candidates: Vec<String>,
    pub end_of_candidates: bool,
}

/// What the PATCH is, once checked against the session.
#[derive(Debug, PartialEq, Eq)]
pub enum Patch {
    /// Candidates for the running ICE session (possibly none: only end-of-candidates).
    Trickle(Vec<String>),
}

#[derive(Debug, PartialEq, Eq)]
pub enum PatchError {
    /// No such session for this camera (404).
    UnknownSession(String),
    /// The body is not an sdpfrag (400).
    Malformed(String),
    /// An ICE restart, which livelens does not support (422).
    IceRestartUnsupported,
    /// WebRTC is not running (503).
    Unavailable,
}

impl fmt::Display for PatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PatchError::UnknownSession(s) => write!(f, "no session {s:?} on this camera"),
            PatchError::Malformed(m) => write!(f, "not a valid trickle-ice-sdpfrag: {m}"),
            PatchError::IceRestartUnsupported => f.write_str(
                "ICE restarts are not supported: end the session (DELETE its URL) and POST a \
                 new offer",
            ),
            PatchError::Unavailable => f.write_str("WebRTC is not running"),
        }
    }
}

/// Parses an `application/trickle-ice-sdpfrag` body (RFC 8840 §9).
pub fn parse(text: &str) -> Result<SdpFrag, PatchError> {
    let mut frag = SdpFrag::default();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let Some((kind, value)) = line.split_once('=') else {
            return Err(PatchError::Malformed(format!("line {line:?} is not SDP")));
        };
        if kind != "a" {
            // m=, c=, … describe the media line the candidates are for; livelens bundles every
            // media line on one transport, so they change nothing.
            continue;
        }
        let (name, arg) = value.split_once(':').unwrap_or((value, ""));
        match name {
            "ice-ufrag" => frag.ufrag = Some(arg.trim().to_string()),
            "ice-pwd" => frag.pwd = Some(arg.trim().to_string()),
            "candidate" => frag.candidates.push(value.to_string()),
            "end-of-candidates" => frag.end_of_candidates = true,
            _ => {}
        }
    }
    Ok(frag)
}

/// What `frag` asks of a session whose remote ICE ufrag is `remote_ufrag`. `if_match_star`:
/// the request carried `If-Match: *`, which RFC 9725 requires of (only) an ICE restart.
pub fn classify(
    frag: SdpFrag,
    remote_ufrag: Option<&str>,
    if_match_star: bool,
) -> Result<Patch, PatchError> {
    let new_credentials = match (&frag.ufrag, remote_ufrag) {
        (Some(given), Some(current)) => given != current,
        // Credentials the offer did not have cannot be the running session's.
        (Some(_), None) => true,
        (None, _) => false,
    };
    if new_credentials || if_match_star {
        return Err(PatchError::IceRestartUnsupported);
    }
    if frag.pwd.is_some() && frag.ufrag.is_none() {
        return Err(PatchError::Malformed(
            "a=ice-pwd without a=ice-ufrag".into(),
        ));
    }
    Ok(Patch::Trickle(frag.candidates))
}

/// The `a=ice-ufrag` of an SDP (the first; every bundled media line shares it).
pub fn sdp_ice_ufrag(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRICKLE: &str = "a=ice-ufrag:EsAw\r\n\
        a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
        a=mid:0\r\n\
        a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag EsAw network-id 1\r\n\
        a=candidate:3471623853 1 udp 2122194687 198.51.100.2 61765 typ host generation 0 ufrag EsAw network-id 2\r\n\
        a=end-of-candidates\r\n";

    #[test]
    fn trickled_candidates_for_the_running_session() {
        let frag = parse(TRICKLE).unwrap();
        assert_eq!(frag.ufrag.as_deref(), Some("EsAw"));
        assert_eq!(frag.candidates.len(), 2);
        assert!(frag.candidates[0].starts_with("candidate:1387637174 1 udp"));
        assert!(frag.end_of_candidates);
        let Patch::Trickle(c) = classify(frag, Some("EsAw"), false).unwrap();
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn a_browsers_candidates_are_what_str0m_takes() {
        for c in parse(TRICKLE).unwrap().candidates {
            str0m::Candidate::from_sdp_string(&c).unwrap_or_else(|e| panic!("{c}: {e}"));
        }
    }

    #[test]
    fn end_of_candidates_alone_is_a_trickle() {
        let frag = parse("a=end-of-candidates\r\n").unwrap();
        assert_eq!(classify(frag, Some("x"), false), Ok(Patch::Trickle(vec![])));
    }

    #[test]
    fn new_credentials_are_an_ice_restart_and_refused() {
        let frag = parse(&TRICKLE.replace("EsAw", "ZZZZ")).unwrap();
        assert_eq!(
            classify(frag, Some("EsAw"), false),
            Err(PatchError::IceRestartUnsupported)
        );
        // RFC 9725: a restart carries If-Match: *, whatever its body.
        let frag = parse(TRICKLE).unwrap();
        assert_eq!(
            classify(frag, Some("EsAw"), true),
            Err(PatchError::IceRestartUnsupported)
        );
        assert!(PatchError::IceRestartUnsupported
            .to_string()
            .contains("not supported"));
    }

    #[test]
    fn not_sdp_is_malformed() {
        assert!(matches!(parse("hello"), Err(PatchError::Malformed(_))));
        let frag = parse("a=ice-pwd:abc\r\n").unwrap();
        assert!(matches!(
            classify(frag, Some("x"), false),
            Err(PatchError::Malformed(_))
        ));
    }

    #[test]
    fn the_offer_ufrag_is_found() {
        let sdp = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=ice-ufrag:abcd\r\na=ice-pwd:x\r\n";
        assert_eq!(sdp_ice_ufrag(sdp), Some("abcd"));
        assert_eq!(sdp_ice_ufrag("v=0\r\n"), None);
    }
}
