//! Why a WebRTC peer ended, and how that is logged.
//!
//! Every peer (a WHEP viewer or a WHIP publisher) that ends says why, once: a failed DTLS
//! handshake or an ICE timeout must be found in the log, not guessed from "the publisher left".
//! The first reason noted wins — a str0m error that disconnects the peer is the cause, the
//! removal that follows is not.

use std::fmt;
use std::time::Duration;

/// Why a peer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The client's `DELETE` of its session URL.
    Deleted,
    /// The camera was stopped or removed.
    CameraStopped,
    /// The viewer's feed ended: the camera's stream stopped, or the viewer stayed too slow.
    FeedEnded,
    /// The camera let its publisher go (stopped, timed out, or replaced).
    PublisherReleased,
    /// The remote closed the connection (DTLS close_notify).
    ClosedByPeer,
    /// str0m failed on the peer's input: a DTLS handshake failure, a certificate that does not
    /// match the offer's fingerprint, a broken packet.
    Failed(String),
    /// str0m panicked on the peer's input (a bug in it); the peer was dropped, not the loop.
    Panicked,
    /// No ICE connectivity check arrived in time.
    IceNeverConnected(Duration),
    /// ICE connected, but the DTLS handshake did not complete in time.
    DtlsNeverConnected(Duration),
    /// A connected peer sent nothing (no RTCP, no consent check) for this long.
    Silent(Duration),
    /// ICE stayed disconnected for this long.
    IceDisconnected(Duration),
    /// The server is shutting down.
    Shutdown,
    /// str0m ended the connection without an error to report.
    Closed,
}

impl EndReason {
    /// A failure someone may need to look into (warn), rather than a peer ending normally (info).
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            EndReason::Failed(_)
                | EndReason::Panicked
                | EndReason::IceNeverConnected(_)
                | EndReason::DtlsNeverConnected(_)
                | EndReason::Silent(_)
                | EndReason::IceDisconnected(_)
        )
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndReason::Deleted => f.write_str("the client ended the session (DELETE)"),
            EndReason::CameraStopped => f.write_str("the camera was stopped or removed"),
            EndReason::FeedEnded => {
                f.write_str("the camera's stream ended, or the viewer stayed too slow")
            }
            EndReason::PublisherReleased => f.write_str("the camera let the publisher go"),
            EndReason::ClosedByPeer => f.write_str("the peer closed the connection"),
            EndReason::Failed(e) => write!(f, "WebRTC failure: {e}"),
            EndReason::Panicked => f.write_str("internal error in the WebRTC stack (panic)"),
            EndReason::IceNeverConnected(d) => {
                write!(f, "ICE timeout: no connectivity check in {} s", d.as_secs())
            }
            EndReason::DtlsNeverConnected(d) => write!(
                f,
                "DTLS timeout: ICE connected but the DTLS handshake did not complete in {} s",
                d.as_secs()
            ),
            EndReason::Silent(d) => write!(f, "the peer went silent for {} s", d.as_secs()),
            EndReason::IceDisconnected(d) => {
                write!(f, "ICE disconnected for {} s", d.as_secs())
            }
            EndReason::Shutdown => f.write_str("the server is shutting down"),
            EndReason::Closed => f.write_str("the connection closed"),
        }
    }
}

/// Logs a peer's end: `publisher` tells a WHIP publisher from a WHEP viewer.
pub fn log(reason: &EndReason, publisher: bool, camera: &str, session: &str) {
    let role = if publisher {
        "WHIP publisher"
    } else {
        "WebRTC viewer"
    };
    if reason.is_failure() {
        tracing::warn!(camera, session, %reason, "{role} ended: {reason}");
    } else {
        tracing::info!(camera, session, %reason, "{role} ended: {reason}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_told_from_normal_ends() {
        assert!(EndReason::Failed("DTLS handshake failed".into()).is_failure());
        assert!(EndReason::IceNeverConnected(Duration::from_secs(10)).is_failure());
        assert!(EndReason::DtlsNeverConnected(Duration::from_secs(10)).is_failure());
        assert!(!EndReason::Deleted.is_failure());
        assert!(!EndReason::ClosedByPeer.is_failure());
        assert!(!EndReason::CameraStopped.is_failure());
    }

    #[test]
    fn reasons_name_the_cause() {
        let dtls = EndReason::Failed("DTLS: certificate verify failed".into()).to_string();
        assert!(dtls.contains("certificate verify failed"), "{dtls}");
        let ice = EndReason::IceNeverConnected(Duration::from_secs(10)).to_string();
        assert!(ice.contains("ICE") && ice.contains("10 s"), "{ice}");
        assert!(EndReason::Deleted.to_string().contains("DELETE"));
    }
}
