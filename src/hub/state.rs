//! The camera state machine, as a pure function of (state, event), so every transition is
//! unit-tested without a source, a clock or a runtime.
//!
//! ```text
//!  stopped ──start──► starting ──first frame──► live
//!     ▲                  │                       │
//!     │               error                   error
//!   stop (from any)      ▼                       ▼
//!     │             retrying(reason) ◄──────────┘      (retried with back-off)
//!     │                  │ permanent error (from starting, live or retrying)
//!     └──────────── failed(reason) ──start──► starting
//!
//!  on-demand cameras also have  idle ──start (a viewer)──► starting,  and
//!  starting / live / retrying ──park (idle timeout)──► idle;  stopped ──park──► idle
//! ```

use serde::Serialize;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum State {
    #[default]
    Stopped,
    /// An on-demand camera with no viewer: enabled, its source not running.
    Idle,
    Starting,
    Live,
    Retrying {
        reason: String,
    },
    Failed {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The user (or the config) asked for the camera to run.
    Start,
    /// The source delivered a frame.
    Frame,
    /// The source stopped delivering frames.
    Error { reason: String, permanent: bool },
    /// The user asked for the camera to stop.
    Stop,
    /// An on-demand camera's source is (or stays) off until a viewer arrives.
    Park,
}

/// The name and reason of a state, as the API shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StateName {
    Stopped,
    Idle,
    Starting,
    Live,
    Retrying,
    Failed,
}

impl State {
    pub fn on(&self, event: &Event) -> State {
        use State::*;
        match (self, event) {
            (_, Event::Stop) => Stopped,
            (Failed { .. }, Event::Park) => self.clone(),
            (_, Event::Park) => Idle,
            (Stopped | Idle | Failed { .. }, Event::Start) => Starting,
            (s, Event::Start) => s.clone(),
            (Starting | Live | Retrying { .. }, Event::Frame) => Live,
            (Starting | Live | Retrying { .. }, Event::Error { reason, permanent }) => {
                if *permanent {
                    Failed {
                        reason: reason.clone(),
                    }
                } else {
                    Retrying {
                        reason: reason.clone(),
                    }
                }
            }
            // Late events from a source that is already stopped or failed change nothing.
            (s @ (Stopped | Idle | Failed { .. }), Event::Frame | Event::Error { .. }) => s.clone(),
        }
    }

    pub fn name(&self) -> StateName {
        match self {
            State::Stopped => StateName::Stopped,
            State::Idle => StateName::Idle,
            State::Starting => StateName::Starting,
            State::Live => StateName::Live,
            State::Retrying { .. } => StateName::Retrying,
            State::Failed { .. } => StateName::Failed,
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            State::Retrying { reason } | State::Failed { reason } => Some(reason),
            _ => None,
        }
    }

    /// Whether the camera is enabled: a source task exists, or (idle) starts with a viewer.
    pub fn is_running(&self) -> bool {
        matches!(
            self,
            State::Idle | State::Starting | State::Live | State::Retrying { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::State::*;
    use super::*;

    fn err(reason: &str, permanent: bool) -> Event {
        Event::Error {
            reason: reason.into(),
            permanent,
        }
    }

    #[test]
    fn happy_path() {
        let s = Stopped.on(&Event::Start);
        assert_eq!(s, Starting);
        let s = s.on(&Event::Frame);
        assert_eq!(s, Live);
        assert_eq!(s.on(&Event::Frame), Live);
        assert_eq!(s.on(&Event::Stop), Stopped);
    }

    #[test]
    fn errors_retry_then_recover() {
        let s = Starting.on(&err("connection refused", false));
        assert_eq!(s.name(), StateName::Retrying);
        assert_eq!(s.reason(), Some("connection refused"));
        let s = s.on(&err("timeout after 10s", false));
        assert_eq!(s.reason(), Some("timeout after 10s"));
        assert_eq!(s.on(&Event::Frame), Live);
        assert_eq!(Live.on(&err("eof", false)).name(), StateName::Retrying);
    }

    #[test]
    fn permanent_errors_fail_and_start_again() {
        for from in [Starting, Live, Retrying { reason: "x".into() }] {
            let s = from.on(&err("bad config", true));
            assert_eq!(
                s,
                Failed {
                    reason: "bad config".into()
                }
            );
            assert_eq!(s.on(&Event::Start), Starting);
        }
    }

    #[test]
    fn stop_always_wins_and_late_events_are_ignored() {
        for from in [
            Stopped,
            Starting,
            Live,
            Retrying { reason: "r".into() },
            Failed { reason: "f".into() },
        ] {
            assert_eq!(from.on(&Event::Stop), Stopped);
        }
        assert_eq!(Stopped.on(&Event::Frame), Stopped);
        assert_eq!(Stopped.on(&err("late", false)), Stopped);
        let failed = Failed { reason: "f".into() };
        assert_eq!(failed.on(&Event::Frame), failed);
    }

    #[test]
    fn on_demand_parks_and_wakes() {
        assert_eq!(Stopped.on(&Event::Park), Idle);
        assert_eq!(Idle.on(&Event::Frame), Idle);
        let s = Idle.on(&Event::Start);
        assert_eq!(s, Starting);
        for from in [Starting, Live, Retrying { reason: "r".into() }] {
            assert_eq!(from.on(&Event::Park), Idle);
        }
        let failed = Failed { reason: "f".into() };
        assert_eq!(failed.on(&Event::Park), failed);
        assert_eq!(Idle.on(&Event::Stop), Stopped);
        assert!(Idle.is_running());
    }

    #[test]
    fn start_is_idempotent_while_running() {
        assert_eq!(Live.on(&Event::Start), Live);
        assert_eq!(Starting.on(&Event::Start), Starting);
        let r = Retrying { reason: "r".into() };
        assert_eq!(r.on(&Event::Start), r);
        assert!(!Stopped.is_running() && Live.is_running());
    }
}
