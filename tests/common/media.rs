//! Real FFmpeg as a publisher and ffprobe as a reader, shared by the publishing tests.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::require;

/// How an FFmpeg publisher sends.
#[derive(Clone, Copy)]
pub enum Push {
    /// RTSP ANNOUNCE/RECORD, media over `"tcp"` or `"udp"`.
    Rtsp(&'static str),
    /// RTMP (FLV).
    Rtmp,
}

/// `ffmpeg` publishing a 320×240 25 fps H.264 test picture (a keyframe a second) with 48 kHz
/// AAC to `url`, in real time, until killed. Its stderr is piped (refusals are printed there).
pub fn ffmpeg_publisher(url: &str, push: Push) -> Child {
    require("ffmpeg", "ffmpeg");
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
        ])
        .args([
            "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k",
        ]);
    match push {
        Push::Rtsp(transport) => cmd.args(["-f", "rtsp", "-rtsp_transport", transport]),
        Push::Rtmp => cmd.args(["-f", "flv"]),
    };
    cmd.arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// `ffprobe` of `url` (RTSP over TCP): a line per stream, `codec,width,height,sample_rate`
/// (the fields a stream has: `h264,320,240`, `aac,48000`).
pub fn ffprobe(url: &str) -> Vec<String> {
    require("ffprobe", "ffmpeg");
    let mut cmd = Command::new("timeout");
    cmd.args(["20", "ffprobe", "-v", "error"]);
    if url.starts_with("rtsp://") {
        cmd.args(["-rtsp_transport", "tcp"]);
    }
    let out = cmd
        .args([
            "-show_entries",
            "stream=codec_name,width,height,sample_rate",
        ])
        .args(["-of", "csv=p=0", url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffprobe {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_end_matches(',').to_string())
        .collect()
}

/// ffprobe's view of a file: the format's duration and each stream's codec.
pub fn probe_file(path: &Path) -> (f64, Vec<String>) {
    require("ffprobe", "ffmpeg");
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration:stream=codec_name",
        ])
        .args(["-of", "default=nw=1"])
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "ffprobe {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let duration = text
        .lines()
        .find_map(|l| l.strip_prefix("duration="))
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0);
    let codecs = text
        .lines()
        .filter_map(|l| l.strip_prefix("codec_name="))
        .map(str::to_string)
        .collect();
    (duration, codecs)
}
