//! Measures what every real client cares about: are sound and picture together, and do decode
//! times only go forward?
//!
//! The sync clip is black 720p25 with a white frame and a 1 kHz beep together every 1.92 s (the
//! first at 0.64 s), H.264 High with B-frames + AAC. FFmpeg decodes whatever a path delivered
//! (a file, a URL) and its own `blackdetect`/`silencedetect` find each flash and each beep on the
//! one timeline of that input; the offset is beep minus flash. Nothing here knows livelens.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use super::require;

/// Seconds between two flashes (and two beeps).
pub const PERIOD: f64 = 1.92;

/// The sync clip as MP4 (20 s), made once per test binary.
pub fn clip_mp4() -> PathBuf {
    static CLIP: OnceLock<PathBuf> = OnceLock::new();
    CLIP.get_or_init(|| make_clip("mp4")).clone()
}

/// The sync clip as MPEG-TS (20 s): what `-stream_loop -1` loops without losing packets.
pub fn clip_ts() -> PathBuf {
    static CLIP: OnceLock<PathBuf> = OnceLock::new();
    CLIP.get_or_init(|| make_clip("ts")).clone()
}

fn make_clip(ext: &str) -> PathBuf {
    require("ffmpeg", "ffmpeg");
    let dir = super::temp_dir(&format!("sync-clip-{ext}"));
    let path = dir.join(format!("sync.{ext}"));
    // Onsets every 1.92 s from 0.64 s: on a video frame (40 ms) and an AAC frame (1024 samples).
    let flash = "lt(mod(t+18.5601\\,1.92)\\,0.08)";
    let graph = format!(
        "[0:v]drawbox=x=0:y=0:w=iw:h=ih:color=white:t=fill:enable='{flash}'[v];\
         [1:a]volume=0:enable='not({flash})',aformat=channel_layouts=stereo[a]"
    );
    let status = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "color=black:size=1280x720:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000"])
        .args(["-filter_complex", &graph, "-map", "[v]", "-map", "[a]"])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-profile:v",
            "high",
        ])
        .args(["-bf", "2", "-g", "50", "-pix_fmt", "yuv420p", "-b:v", "2M"])
        .args(["-c:a", "aac", "-b:a", "128k", "-t", "20"])
        .arg(&path)
        .status()
        .expect("run ffmpeg");
    assert!(status.success(), "ffmpeg could not make the sync clip");
    path
}

/// Flash and beep onsets (seconds, on the input's own timeline) in what FFmpeg decodes from
/// `input` (a file or URL, after `input_args` such as `-rtsp_transport tcp`), for at most
/// `seconds` of it.
pub fn onsets(input: &str, input_args: &[&str], seconds: f64) -> (Vec<f64>, Vec<f64>) {
    require("ffmpeg", "ffmpeg");
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-nostats", "-loglevel", "info"])
        .args(input_args)
        .args(["-i", input, "-t", &seconds.to_string()])
        .args(["-vf", "blackdetect=d=0.01:pix_th=0.2"])
        // 2 ms audio frames: silencedetect reports onsets at frame granularity.
        .args(["-af", "asetnsamples=n=96,silencedetect=n=-30dB:d=0.05"])
        .args(["-f", "null", "-"])
        .stdin(Stdio::null())
        .output()
        .expect("run ffmpeg");
    let log = String::from_utf8_lossy(&out.stderr);
    onsets_in_log(&log)
}

/// Flash and beep onsets in FFmpeg's `blackdetect`/`silencedetect` log. Both filters also end
/// their last interval where the input ends: that is a cut, not an onset, so the last black
/// interval is dropped, and a silence end counts only when a new silence starts after it.
pub fn onsets_in_log(log: &str) -> (Vec<f64>, Vec<f64>) {
    let number = |rest: &str| -> Option<f64> { rest.split_whitespace().next()?.parse().ok() };
    let mut flashes: Vec<f64> = log
        .lines()
        .filter_map(|l| number(l.split_once("black_end:")?.1))
        .collect();
    flashes.pop();
    let mut beeps = Vec::new();
    let mut pending = None;
    for line in log.lines() {
        if let Some((_, rest)) = line.split_once("silence_end:") {
            pending = number(rest);
        } else if line.contains("silence_start:") {
            beeps.extend(pending.take());
        }
    }
    (flashes, beeps)
}

/// Each beep minus the flash it goes with (the nearest one within half a period), in seconds.
pub fn pair(flashes: &[f64], beeps: &[f64]) -> Vec<f64> {
    beeps
        .iter()
        .filter_map(|&b| {
            let f = flashes
                .iter()
                .copied()
                .min_by(|x, y| (x - b).abs().total_cmp(&(y - b).abs()))?;
            ((f - b).abs() < PERIOD / 2.0).then_some(b - f)
        })
        .collect()
}

/// A/V offsets (beep − flash, seconds) of what FFmpeg reads from `input` for `seconds`.
pub fn av_offsets(input: &str, input_args: &[&str], seconds: f64) -> Vec<f64> {
    let (flashes, beeps) = onsets(input, input_args, seconds);
    pair(&flashes, &beeps)
}

/// Asserts that at least `min_pairs` flash/beep pairs were found and every one is within
/// `tolerance` seconds (the bar is 0.040).
pub fn assert_in_sync(label: &str, offsets: &[f64], min_pairs: usize, tolerance: f64) {
    assert!(
        offsets.len() >= min_pairs,
        "{label}: {} flash/beep pairs found, expected at least {min_pairs}: {offsets:?}",
        offsets.len()
    );
    let worst = offsets.iter().copied().fold(0.0f64, |w, o| w.max(o.abs()));
    assert!(
        worst <= tolerance,
        "{label}: audio − video offsets {offsets:.3?} s; worst {worst:.3} s > {tolerance} s"
    );
}

/// Decode times (in the track's timescale) of every sample in an fMP4 byte stream — init
/// segments, moof+mdat fragments, concatenated as a viewer received them — per track id.
/// Reads `moof/traf/{tfhd,tfdt,trun}` itself: only sample durations are needed.
pub fn decode_times(bytes: &[u8]) -> BTreeMap<u32, Vec<u64>> {
    let mut tracks: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    let mut defaults: BTreeMap<u32, u32> = BTreeMap::new(); // trex default durations
    for (kind, body) in boxes(bytes) {
        match &kind {
            b"moov" => {
                for (k, b) in boxes(body) {
                    if &k == b"mvex" {
                        for (k, b) in boxes(b) {
                            if &k == b"trex" && b.len() >= 16 {
                                defaults.insert(be32(&b[4..]), be32(&b[12..]));
                            }
                        }
                    }
                }
            }
            b"moof" => {
                for (k, traf) in boxes(body) {
                    if &k != b"traf" {
                        continue;
                    }
                    let (mut track, mut default_duration, mut time) = (0, 0, None);
                    for (k, b) in boxes(traf) {
                        match &k {
                            b"tfhd" => {
                                let flags = be32(b) & 0xff_ffff;
                                track = be32(&b[4..]);
                                default_duration = defaults.get(&track).copied().unwrap_or(0);
                                let mut at = 8;
                                for (flag, len) in [(1, 8), (2, 4)] {
                                    if flags & flag != 0 {
                                        at += len;
                                    }
                                }
                                if flags & 8 != 0 {
                                    default_duration = be32(&b[at..]);
                                }
                            }
                            b"tfdt" => {
                                time = Some(if b[0] == 1 {
                                    u64::from_be_bytes(b[4..12].try_into().unwrap())
                                } else {
                                    be32(&b[4..]) as u64
                                });
                            }
                            b"trun" => {
                                let flags = be32(b) & 0xff_ffff;
                                let count = be32(&b[4..]) as usize;
                                let mut at = 8;
                                if flags & 1 != 0 {
                                    at += 4;
                                }
                                if flags & 4 != 0 {
                                    at += 4;
                                }
                                let fields = [0x100, 0x200, 0x400, 0x800]
                                    .iter()
                                    .filter(|f| flags & **f != 0)
                                    .count();
                                let mut t = time.expect("trun without tfdt");
                                let list = tracks.entry(track).or_default();
                                for i in 0..count {
                                    list.push(t);
                                    let d = if flags & 0x100 != 0 {
                                        be32(&b[at + i * fields * 4..])
                                    } else {
                                        default_duration
                                    };
                                    t += d as u64;
                                }
                                time = Some(t);
                            }
                            _ => {}
                        }
                    }
                }
            }
            _ => {}
        }
    }
    tracks
}

/// Asserts that no track's decode time ever decreases (ISO BMFF requires it).
pub fn assert_decode_times_monotonic(label: &str, bytes: &[u8]) {
    let tracks = decode_times(bytes);
    assert!(!tracks.is_empty(), "{label}: no fMP4 samples found");
    for (track, times) in &tracks {
        if let Some(i) = times.windows(2).position(|w| w[1] < w[0]) {
            let from = i.saturating_sub(3);
            panic!(
                "{label}: track {track} decode time goes back at sample {}: {:?}",
                i + 1,
                &times[from..(i + 4).min(times.len())]
            );
        }
    }
}

/// The top-level boxes of `bytes` as `(type, body)` (a box cut short ends the walk).
pub fn boxes(bytes: &[u8]) -> Vec<([u8; 4], &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 8 <= bytes.len() {
        let mut size = be32(&bytes[at..]) as usize;
        let kind: [u8; 4] = bytes[at + 4..at + 8].try_into().unwrap();
        let mut head = 8;
        if size == 1 && at + 16 <= bytes.len() {
            size = u64::from_be_bytes(bytes[at + 8..at + 16].try_into().unwrap()) as usize;
            head = 16;
        } else if size == 0 {
            size = bytes.len() - at;
        }
        if size < head || at + size > bytes.len() {
            break;
        }
        out.push((kind, &bytes[at + head..at + size]));
        at += size;
    }
    out
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap())
}

/// Writes `bytes` to a file in `dir` for FFmpeg to read (MSE bytes, joined LL-HLS parts).
pub fn to_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Each track's timescale (from the first `moov`'s `tkhd` and `mdhd`), by track id.
pub fn timescales(bytes: &[u8]) -> BTreeMap<u32, u32> {
    let mut out = BTreeMap::new();
    let Some((_, moov)) = boxes(bytes).into_iter().find(|(k, _)| k == b"moov") else {
        return out;
    };
    let field = |b: &[u8], v0: usize, v1: usize| be32(&b[if b[0] == 1 { v1 } else { v0 }..]);
    for (_, trak) in boxes(moov).into_iter().filter(|(k, _)| k == b"trak") {
        let (mut id, mut scale) = (None, None);
        for (k, b) in boxes(trak) {
            if &k == b"tkhd" {
                id = Some(field(b, 12, 20));
            } else if &k == b"mdia" {
                for (k, b) in boxes(b) {
                    if &k == b"mdhd" {
                        scale = Some(field(b, 12, 20));
                    }
                }
            }
        }
        if let (Some(id), Some(scale)) = (id, scale) {
            out.insert(id, scale);
        }
    }
    out
}

/// What an MSE viewer of `camera` receives in `seconds`: the init segment and fragments.
pub fn mse_bytes(server: &super::Server, camera: &str, seconds: f64) -> Vec<u8> {
    let url = format!(
        "{}/api/cameras/{camera}/mse",
        server.base.replace("http://", "ws://")
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket");
        let mut bytes = Vec::new();
        let end = tokio::time::Instant::now() + Duration::from_secs_f64(seconds);
        while let Ok(Some(message)) = tokio::time::timeout_at(end, ws.next()).await {
            match message.expect("a message") {
                Message::Binary(b) => bytes.extend_from_slice(&b),
                Message::Close(c) => panic!("the MSE viewer was closed: {c:?}"),
                _ => {}
            }
        }
        let _ = ws.close(None).await;
        bytes
    })
}
