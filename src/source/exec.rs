//! `exec:` sources: a supervised child process that writes MPEG-TS (`exec:`) or raw Annex B
//! (`exec+h264:`, `exec+h265:`) to stdout — a USB camera through FFmpeg, a file, anything FFmpeg
//! reads — and `file://` sources, which are FFmpeg reading the file, looped.
//!
//! The child is owned by [`run`]: however `run` ends (cancel, EOF, silence, error), the child has
//! been stopped and reaped before it returns (principle 4).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use super::Publisher;
use super::SourceError;
use crate::media::annexb::AnnexBReader;
use crate::media::mpegts::{split_adts, split_opus, Pes, StreamKind, TsDemuxer, Unwrapper};
use crate::media::rtp_video::{is_keyframe_nal, VideoKind};
use crate::media::{h264, video_params, AudioCodec, Frame, TrackKind, VideoCodec};
use crate::supervisor::{stop_grace, ChildProcess, ChildSpec};

/// Without video from the child for this long, the source is restarted.
const SILENCE_LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecFormat {
    MpegTs,
    AnnexB(VideoKind),
}

/// A parsed exec source: what to run and what it writes.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecCommand {
    pub format: ExecFormat,
    pub argv: Vec<String>,
}

impl ExecCommand {
    /// `file:///path` as an FFmpeg command: read at native rate, copy the streams, write MPEG-TS,
    /// looped by FFmpeg itself. One child for every loop: a restart at each end of file took
    /// about a second without pictures (players stalled, and each stall added to their latency
    /// for good) and began a new source session each time (sound and picture drifted apart by
    /// 10–30 ms a loop). `-stream_loop` keeps the timestamps of both tracks going forward by the
    /// file's duration at each loop, so they stay together. (What breaks in FFmpeg 5.1 is
    /// `-stream_loop` with an explicit `-bsf:v h264_mp4toannexb`; the bitstream filter the
    /// MPEG-TS muxer inserts on its own loops an MP4 without losing a packet.)
    pub fn for_file(path: &str) -> ExecCommand {
        let argv = [
            "ffmpeg",
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-re",
            "-stream_loop",
            "-1",
            "-i",
            path,
            "-map",
            "0:v:0",
            "-map",
            "0:a:0?",
            "-c",
            "copy",
            // Each packet out as it comes: by default the MPEG-TS muxer gathers audio into
            // ~3 KB PES packets and delays for interleaving, so the sound came 0.4–0.85 s after
            // the picture of the same time, and a low-latency player (0.5 s behind the
            // picture) ran out of sound and stalled. With these, 0.02–0.2 s.
            "-max_interleave_delta",
            "0",
            "-muxdelay",
            "0",
            "-pes_payload_size",
            "0",
            "-flush_packets",
            "1",
            "-f",
            "mpegts",
            "-",
        ];
        ExecCommand {
            format: ExecFormat::MpegTs,
            argv: argv.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// Runs the command until `cancel` (Ok) or until it ends or fails (Err with the reason).
/// `clean_exit_ok`: a child that exits with status 0 returns Ok (file sources loop on it).
pub async fn run(
    command: &ExecCommand,
    publisher: &Publisher,
    cancel: &CancellationToken,
    clean_exit_ok: bool,
) -> Result<(), SourceError> {
    let spec = ChildSpec {
        owner: format!("camera {}", publisher.camera_id()),
        program: command.argv[0].clone(),
        args: command.argv[1..].to_vec(),
        capture_stdout: true,
    };
    let mut child = ChildProcess::spawn(&spec).map_err(SourceError::retryable)?;
    let Some(mut stdout) = child.take_stdout() else {
        child.stop(stop_grace()).await;
        return Err(SourceError::retryable("the child has no stdout"));
    };
    let mut reader = Reader::new(command.format, publisher);
    let mut buf = vec![0u8; 64 << 10];
    let mut last_video = Instant::now();
    enum End {
        Cancelled,
        Eof,
        Silent,
    }
    let end = loop {
        let deadline = tokio::time::Instant::from_std(last_video + SILENCE_LIMIT);
        tokio::select! {
            _ = cancel.cancelled() => break End::Cancelled,
            _ = tokio::time::sleep_until(deadline) => break End::Silent,
            read = stdout.read(&mut buf) => match read {
                Ok(0) | Err(_) => break End::Eof,
                Ok(n) => {
                    if reader.push(&buf[..n]) {
                        last_video = Instant::now();
                    }
                }
            },
        }
    };
    drop(stdout);
    match end {
        End::Cancelled => {
            child.stop(stop_grace()).await;
            Ok(())
        }
        End::Silent => {
            child.stop(stop_grace()).await;
            Err(SourceError::retryable(format!(
                "no {} from the command for {}s{}",
                if reader.saw_video {
                    "video"
                } else {
                    "H.264/H.265 video"
                },
                SILENCE_LIMIT.as_secs(),
                reader.found_streams()
            )))
        }
        End::Eof => {
            // EOF on stdout: the child is exiting (or closed stdout, which ends it as a source).
            let status = tokio::select! {
                s = child.wait() => Some(s),
                _ = tokio::time::sleep(Duration::from_secs(1)) => None,
            };
            let status = match status {
                Some(s) => s,
                None => child.stop(stop_grace()).await,
            };
            reader.flush();
            if clean_exit_ok && status.success() {
                return Ok(());
            }
            Err(SourceError::retryable(child.describe_exit(status)))
        }
    }
}

/// Bytes from the child → frames to the publisher.
struct Reader<'a> {
    publisher: &'a Publisher,
    format: ExecFormat,
    ts: TsDemuxer,
    annexb: Option<AnnexBReader>,
    video: Option<Arc<VideoCodec>>,
    audio: Option<AudioCodec>,
    pts: Unwrapper,
    dts: Unwrapper,
    audio_pts: Unwrapper,
    started: Instant,
    saw_video: bool,
}

impl<'a> Reader<'a> {
    fn new(format: ExecFormat, publisher: &'a Publisher) -> Self {
        Reader {
            publisher,
            format,
            ts: TsDemuxer::new(),
            annexb: match format {
                ExecFormat::AnnexB(kind) => Some(AnnexBReader::new(kind)),
                ExecFormat::MpegTs => None,
            },
            video: None,
            audio: None,
            pts: Unwrapper::default(),
            dts: Unwrapper::default(),
            audio_pts: Unwrapper::default(),
            started: Instant::now(),
            saw_video: false,
        }
    }

    /// Returns whether a video frame was published.
    fn push(&mut self, data: &[u8]) -> bool {
        let mut published = false;
        if let Some(annexb) = &mut self.annexb {
            annexb.push(data);
            let ExecFormat::AnnexB(kind) = self.format else {
                return false;
            };
            while let Some(unit) = self.annexb.as_mut().and_then(|a| a.pull()) {
                // No timestamps in a byte stream: the arrival time, on the 90 kHz clock.
                let t = (self.started.elapsed().as_micros() as i64) * 9 / 100;
                published |= self.video_frame(kind, unit.nals, t, t);
            }
        } else {
            self.ts.push(data);
            while let Some(pes) = self.ts.pull() {
                published |= self.pes(pes);
            }
        }
        published
    }

    fn flush(&mut self) {
        if let Some(a) = &mut self.annexb {
            a.flush();
        } else {
            self.ts.flush();
        }
        self.push(&[]);
    }

    fn pes(&mut self, pes: Pes) -> bool {
        let arrival = || (self.started.elapsed().as_micros() as i64) * 9 / 100;
        match pes.kind {
            StreamKind::H264 | StreamKind::H265 => {
                let kind = if pes.kind == StreamKind::H264 {
                    VideoKind::H264
                } else {
                    VideoKind::H265
                };
                let pts = pes.pts.map_or_else(arrival, |t| self.pts.unwrap(t));
                let dts = pes.dts.map_or(pts, |t| self.dts.unwrap(t));
                let nals = h264::split_annex_b(&pes.data)
                    .into_iter()
                    .map(|n| pes.data.slice_ref(n))
                    .collect();
                self.video_frame(kind, nals, pts, dts)
            }
            StreamKind::Aac => {
                let Some(pts90) = pes.pts.map(|t| self.audio_pts.unwrap(t)) else {
                    return false;
                };
                for (i, f) in split_adts(&pes.data).into_iter().enumerate() {
                    self.set_audio(AudioCodec {
                        codec: "aac",
                        rfc6381: Some(format!("mp4a.40.{}", f.config[0] >> 3)),
                        sample_rate: f.sample_rate,
                        channels: f.channels,
                        extra_data: Bytes::copy_from_slice(&f.config),
                    });
                    let pts = pts90 * f.sample_rate as i64 / 90_000 + 1024 * i as i64;
                    self.audio_frame(pts, f.data);
                }
                false
            }
            StreamKind::Opus { channels } => {
                let Some(pts90) = pes.pts.map(|t| self.audio_pts.unwrap(t)) else {
                    return false;
                };
                self.set_audio(AudioCodec {
                    codec: "opus",
                    rfc6381: Some("opus".into()),
                    sample_rate: 48_000,
                    channels,
                    extra_data: Bytes::new(),
                });
                let mut pts = pts90 * 48_000 / 90_000;
                for packet in split_opus(&pes.data) {
                    let duration = opus_duration_48k(&packet);
                    self.audio_frame(pts, packet);
                    pts += duration;
                }
                false
            }
        }
    }

    fn video_frame(&mut self, kind: VideoKind, nals: Vec<Bytes>, pts: i64, dts: i64) -> bool {
        self.video = video_params::update(kind, self.video.take(), &nals, None);
        let Some(codec) = self.video.clone() else {
            return false; // no parameter sets yet: nothing a decoder could start from
        };
        self.saw_video = true;
        self.publisher.publish(Frame {
            track: TrackKind::Video,
            pts,
            dts,
            keyframe: nals.iter().any(|n| is_keyframe_nal(kind, n)),
            capture_time_us: None,
            video_codec: Some(codec),
            data: video_params::frame_data(kind, &nals),
        });
        true
    }

    fn set_audio(&mut self, codec: AudioCodec) {
        if self.audio.as_ref() != Some(&codec) {
            self.publisher.set_audio(Some(codec.clone()));
            self.audio = Some(codec);
        }
    }

    fn audio_frame(&self, pts: i64, data: Bytes) {
        self.publisher.publish(Frame::audio(pts, data));
    }

    /// " (streams found: …)" for the silence reason, so a user sees what the command did write.
    fn found_streams(&self) -> String {
        if self.annexb.is_some() {
            return String::new();
        }
        let kinds: Vec<String> = self.ts.streams().map(|(_, k)| format!("{k:?}")).collect();
        if kinds.is_empty() {
            " (no MPEG-TS program found in its output)".into()
        } else {
            format!(" (streams found: {})", kinds.join(", "))
        }
    }
}

/// Duration of an Opus packet in 48 kHz samples, from its TOC byte (RFC 6716 §3.1).
pub fn opus_duration_48k(packet: &[u8]) -> i64 {
    let Some(&toc) = packet.first() else {
        return 960;
    };
    let config = toc >> 3;
    let frame = match config {
        0..=11 => [480, 960, 1920, 2880][(config & 3) as usize],
        12..=15 => [480, 960][(config & 1) as usize],
        _ => [120, 240, 480, 960][(config & 3) as usize],
    };
    let frames = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => packet.get(1).map_or(1, |b| (b & 0x3f) as i64),
    };
    frame * frames
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_looped_by_one_ffmpeg() {
        let argv = ExecCommand::for_file("/clips/a b.mp4").argv;
        let at = |arg: &str| argv.iter().position(|a| a == arg).unwrap();
        // An input option: it must come before the `-i` it applies to.
        assert_eq!(argv[at("-stream_loop") + 1], "-1");
        assert!(at("-stream_loop") < at("-i"));
        assert_eq!(argv[at("-i") + 1], "/clips/a b.mp4");
    }

    #[test]
    fn opus_durations_from_the_toc() {
        assert_eq!(opus_duration_48k(&[0xfc]), 960); // CELT FB 20 ms, one frame
        assert_eq!(opus_duration_48k(&[0x79]), 2 * 960); // config 15 (hybrid 20 ms), two frames
        assert_eq!(opus_duration_48k(&[0x1b, 0x03]), 3 * 2880); // SILK 60 ms, three frames
    }
}
