//! Sources: where a camera's frames come from. One file per source kind.
//!
//! A source is an async function that runs until it is cancelled or fails. It hands every frame to
//! a [`Publisher`] and owns whatever it creates (threads, sockets, children): when it returns, all
//! of that is gone.
//!
//! [`Publish`] is defined here and implemented by the hub's stream: the hub runs sources, so
//! sources must not depend on the hub.

pub mod exec;
pub mod probe;
pub mod publish;
pub mod rtsp;
pub mod testsrc;

use crate::common::{check_url_credentials, mask_credentials};
use std::fmt;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::media::rtp_video::VideoKind;
use crate::media::{AudioCodec, Frame};
pub use testsrc::TestsrcParams;

/// A parsed, validated source URL.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    Testsrc(TestsrcParams),
    /// `rtsp://` (and `rtsps://`, which parses but which retina cannot read).
    Rtsp {
        url: String,
        options: rtsp::RtspOptions,
    },
    /// `exec:COMMAND` (MPEG-TS on stdout), `exec+h264:` / `exec+h265:` (raw Annex B).
    Exec(exec::ExecCommand),
    /// `file:///path`: FFmpeg reads the file at its native rate, looped.
    File(String),
    /// `publish:`: whoever publishes to the camera (RTSP ANNOUNCE/RECORD, WHIP), one at a time,
    /// under the `[publish]` rules.
    Publish(publish::PublishRules),
}

pub const SCHEMES: &str =
    "testsrc://, rtsp://, rtsps://, exec:, exec+h264:, exec+h265:, file://, publish:";

impl SourceSpec {
    /// Parses a source URL. The error names the problem in words a user can act on.
    pub fn parse(url: &str) -> Result<SourceSpec, String> {
        let url = url.trim();
        if url.is_empty() {
            return Err("is empty".into());
        }
        if url == "publish:" {
            return Ok(SourceSpec::Publish(publish::PublishRules::default()));
        }
        if let Some(query) = url.strip_prefix("testsrc://") {
            return TestsrcParams::parse(query).map(SourceSpec::Testsrc);
        }
        if url.starts_with("rtsp://") || url.starts_with("rtsps://") {
            check_url_credentials(url)?;
            let rest = url.split_once("://").map(|x| x.1).unwrap_or("");
            let authority = rest.split('/').next().unwrap_or("");
            let host = authority.rsplit('@').next().unwrap_or("");
            if host.is_empty() {
                return Err(format!("{} has no host", mask_credentials(url)));
            }
            return Ok(SourceSpec::Rtsp {
                url: url.to_string(),
                options: rtsp::RtspOptions::default(),
            });
        }
        for (prefix, format) in [
            ("exec:", exec::ExecFormat::MpegTs),
            ("exec+h264:", exec::ExecFormat::AnnexB(VideoKind::H264)),
            ("exec+h265:", exec::ExecFormat::AnnexB(VideoKind::H265)),
        ] {
            if let Some(command) = url.strip_prefix(prefix) {
                if command.trim().is_empty() {
                    return Err(format!(
                        "{prefix} needs a command, e.g. {prefix}ffmpeg -i … -f {} -",
                        if prefix == "exec:" {
                            "mpegts"
                        } else {
                            &prefix[5..9]
                        }
                    ));
                }
                let argv = crate::supervisor::split_command(command)
                    .map_err(|e| format!("{prefix} {e}"))?;
                return Ok(SourceSpec::Exec(exec::ExecCommand { format, argv }));
            }
        }
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(format!(
                    "file:// needs an absolute path (file:///path/video.mp4), got {url:?}"
                ));
            }
            return Ok(SourceSpec::File(path.to_string()));
        }
        let scheme = url.split(':').next().unwrap_or(url);
        Err(format!(
            "unknown source scheme {:?} (expected one of {SCHEMES})",
            mask_credentials(scheme)
        ))
    }

    /// Whether this build can run the source. Kinds that parse but whose ingest has not landed
    /// are refused up front, so a user gets a 4xx instead of a camera that can never work.
    pub fn check_supported(&self) -> Result<(), String> {
        match self {
            SourceSpec::Testsrc(_) => Ok(()),
            SourceSpec::Rtsp { url, .. } if url.starts_with("rtsps://") => Err(
                "rtsps:// (RTSP over TLS) is not supported: the RTSP client (retina) speaks plain rtsp:// only"
                    .into(),
            ),
            SourceSpec::Rtsp { .. } | SourceSpec::Exec(_) | SourceSpec::Publish(_) => Ok(()),
            SourceSpec::File(path) => match std::fs::metadata(path) {
                Ok(m) if m.is_file() => Ok(()),
                Ok(_) => Err(format!("{path} is not a file")),
                Err(e) => Err(format!("cannot read {path}: {e}")),
            },
        }
    }

    pub fn is_exec(&self) -> bool {
        matches!(self, SourceSpec::Exec(_))
    }
}

/// Why a source stopped delivering frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceError {
    pub reason: String,
    /// A permanent error (bad configuration) is not retried.
    pub permanent: bool,
}

impl SourceError {
    pub fn retryable(reason: impl Into<String>) -> Self {
        SourceError {
            reason: reason.into(),
            permanent: false,
        }
    }
    pub fn permanent(reason: impl Into<String>) -> Self {
        SourceError {
            reason: reason.into(),
            permanent: true,
        }
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

/// Where a source's frames go.
pub trait Publish: Send + Sync {
    /// The camera's id, for thread names and logs.
    fn camera_id(&self) -> &str;
    /// One frame, on the source's own timeline.
    fn publish(&self, frame: Frame);
    /// The audio track's description (none: no audio).
    fn set_audio(&self, audio: Option<AudioCodec>);
    /// Called before each (re)start of the source: its timestamps will continue the stream's.
    fn new_session(&self);
}

/// A shared handle to where a source publishes (a thread of the source may hold one too).
pub type Publisher = Arc<dyn Publish>;

/// Runs `spec` until `cancel` fires (Ok) or the source fails (Err). Everything the source created
/// is released before this returns.
pub async fn run(
    spec: &SourceSpec,
    publisher: &Publisher,
    cancel: &CancellationToken,
) -> Result<(), SourceError> {
    match spec {
        SourceSpec::Testsrc(params) => testsrc::run(params.clone(), publisher, cancel).await,
        SourceSpec::Rtsp { url, options } if !url.starts_with("rtsps://") => {
            rtsp::run(url, options, publisher, cancel).await
        }
        SourceSpec::Exec(command) => exec::run(command, publisher, cancel, false).await,
        SourceSpec::File(path) => {
            let command = exec::ExecCommand::for_file(path);
            // FFmpeg loops the file itself and should never end; if it does (it crashed, the
            // file went away), it is started again and the timeline keeps going forward.
            loop {
                exec::run(&command, publisher, cancel, true).await?;
                if cancel.is_cancelled() {
                    return Ok(());
                }
                publisher.new_session();
            }
        }
        // The stream runs its publish loop for these, never a source.
        SourceSpec::Publish(_) => Err(SourceError::permanent(
            "a publish: camera is fed by its publishers, not run",
        )),
        other => Err(SourceError::permanent(
            other.check_supported().err().unwrap_or_default(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_whose_password_needs_encoding_are_refused_with_how() {
        for url in [
            "rtsp://admin:pa/ss@cam/s",
            "rtsp://admin:p?w@cam",
            "rtsp://a:p w@cam",
        ] {
            let e = SourceSpec::parse(url).unwrap_err();
            assert!(e.contains("%2F") && !e.contains("admin"), "{e}");
        }
        assert!(SourceSpec::parse("rtsp://admin:pa%2Fss@cam/s").is_ok());
    }

    #[test]
    fn parses_known_schemes() {
        assert!(matches!(
            SourceSpec::parse("testsrc://"),
            Ok(SourceSpec::Testsrc(_))
        ));
        assert!(matches!(
            SourceSpec::parse("rtsp://u:p@cam:554/s"),
            Ok(SourceSpec::Rtsp { .. })
        ));
        assert!(matches!(
            SourceSpec::parse("exec:ffmpeg -i x -f mpegts -"),
            Ok(SourceSpec::Exec(_))
        ));
        assert!(matches!(
            SourceSpec::parse("file:///a.mp4"),
            Ok(SourceSpec::File(_))
        ));
    }

    #[test]
    fn rejects_bad_urls_with_a_reason() {
        let e = SourceSpec::parse("http://u:pw@x/y").unwrap_err();
        assert!(e.contains("unknown source scheme \"http\""), "{e}");
        assert!(!e.contains("pw"));
        assert!(SourceSpec::parse("").unwrap_err().contains("empty"));
        assert!(SourceSpec::parse("rtsp://u:p@/x")
            .unwrap_err()
            .contains("no host"));
        assert!(SourceSpec::parse("file://rel.mp4")
            .unwrap_err()
            .contains("absolute"));
        assert!(SourceSpec::parse("exec:  ")
            .unwrap_err()
            .contains("needs a command"));
    }
}
