//! `cargo bench --bench audio`: what a camera's audio costs, printed as tables.
//!
//! Per camera, in process, on 60 s of real camera-style audio (espeak-ng speech with pauses,
//! encoded by FFmpeg as 48 kHz mono AAC at 64 kb/s): thread CPU time of the speech path (decode,
//! then resample to 16 kHz, then VAD) and of the WebRTC transcoder (AAC to 48 kHz Opus), as % of
//! one core; the speech path is also run on the transcoder's Opus. Then the real binary with one
//! RTSP AAC camera (the fixture's tone): server CPU % with speech-to-text off and on.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{cpu_seconds, require, RtspCamera, Server};
use livelens::analysis::asr::{AsrConfig, Pipeline};
use livelens::media::audio::{AudioDecoder, Resampler};
use livelens::media::mpegts::split_adts;
use livelens::media::AudioCodec;
use livelens::output::webrtc::transcode::ToOpus;
use serde_json::json;

const AUDIO_SECONDS: f64 = 60.0;

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// % of one core that `work` needs to keep up with `AUDIO_SECONDS` of live audio.
fn percent_of_core(mut work: impl FnMut()) -> f64 {
    let start = thread_cpu();
    work();
    100.0 * (thread_cpu() - start).as_secs_f64() / AUDIO_SECONDS
}

/// 60 s of speech with pauses as raw AAC frames, and their codec description.
fn aac_speech() -> (AudioCodec, Vec<(i64, Bytes)>) {
    require("espeak-ng", "espeak-ng");
    require("ffmpeg", "ffmpeg");
    require("sox", "sox");
    let dir = common::temp_dir("bench-audio");
    let voice = dir.join("voice.wav");
    let ok = Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "120", "-w"])
        .arg(&voice)
        .arg("camera one is online. the door is open. motion in the yard.")
        .status()
        .unwrap();
    assert!(ok.success());
    // Two seconds of silence after the sentences, as between people talking.
    let padded = dir.join("padded.wav");
    let ok = Command::new("sox")
        .arg(&voice)
        .arg(&padded)
        .args(["pad", "0", "2"])
        .status()
        .unwrap();
    assert!(ok.success());
    let adts = dir.join("speech.aac");
    let ok = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-stream_loop",
            "-1",
            "-i",
        ])
        .arg(&padded)
        .args(["-t", "60", "-ar", "48000", "-ac", "1"])
        .args(["-c:a", "aac", "-b:a", "64k", "-f", "adts"])
        .arg(&adts)
        .status()
        .unwrap();
    assert!(ok.success());
    let frames = split_adts(&Bytes::from(std::fs::read(&adts).unwrap()));
    let first = &frames[0];
    let codec = AudioCodec {
        codec: "aac",
        rfc6381: Some("mp4a.40.2".into()),
        sample_rate: first.sample_rate,
        channels: first.channels,
        extra_data: Bytes::copy_from_slice(&first.config),
    };
    let frames = frames
        .iter()
        .enumerate()
        .map(|(i, f)| (i as i64 * 1024, f.data.clone()))
        .collect();
    (codec, frames)
}

fn in_process() {
    let (aac, frames) = aac_speech();
    let seconds = frames.len() as f64 * 1024.0 / aac.sample_rate as f64;
    assert!((59.0..61.0).contains(&seconds), "{seconds} s of audio");
    let asr: AsrConfig =
        serde_json::from_value(json!({"endpoint": "http://127.0.0.1:9/v1", "model": "bench"}))
            .unwrap();

    let decode = percent_of_core(|| {
        let mut d = AudioDecoder::new(&aac).unwrap();
        let mut out = Vec::new();
        for (_, f) in &frames {
            out.clear();
            d.decode(f, &mut out).unwrap();
        }
    });
    let resample = percent_of_core(|| {
        let mut d = AudioDecoder::new(&aac).unwrap();
        let mut r = Resampler::new(aac.sample_rate, 16_000);
        let (mut pcm, mut out) = (Vec::new(), Vec::new());
        for (_, f) in &frames {
            pcm.clear();
            out.clear();
            d.decode(f, &mut pcm).unwrap();
            r.push(&pcm, &mut out);
        }
    });
    let mut segments = 0;
    let speech_aac = percent_of_core(|| {
        let mut p = Pipeline::new(&aac, &asr).unwrap();
        for (_, f) in &frames {
            segments += p.push(f).unwrap().len();
        }
    });
    let mut opus_packets = Vec::new();
    let transcode = percent_of_core(|| {
        let mut t = ToOpus::new(&aac).unwrap();
        for (pts, f) in &frames {
            opus_packets.extend(t.push(*pts, f).unwrap());
        }
    });
    let opus = AudioCodec {
        codec: "opus",
        rfc6381: Some("opus".into()),
        sample_rate: 48_000,
        channels: 1,
        extra_data: Bytes::new(),
    };
    let mut opus_segments = 0;
    let speech_opus = percent_of_core(|| {
        let mut p = Pipeline::new(&opus, &asr).unwrap();
        for (_, packet) in &opus_packets {
            opus_segments += p.push(packet).unwrap().len();
        }
    });
    println!(
        "\n## Audio path per camera, in process (60 s of 48 kHz mono speech; % of one core)\n"
    );
    println!("| stage | CPU % of a core |");
    println!("|---|---|");
    println!("| AAC decode (symphonia) | {decode:.2} |");
    println!("| AAC decode + resample to 16 kHz | {resample:.2} |");
    println!(
        "| speech path on AAC: decode + resample + VAD ({segments} segments) | {speech_aac:.2} |"
    );
    println!("| WebRTC transcoder: AAC decode + resample to 48 kHz + Opus encode ({} packets) | {transcode:.2} |", opus_packets.len());
    println!("| speech path on Opus: decode + resample + VAD ({opus_segments} segments) | {speech_opus:.2} |");
}

fn server_cpu_percent(server: &Server, seconds: u64) -> f64 {
    let pid = server.pid();
    let before = cpu_seconds(pid);
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    100.0 * (cpu_seconds(pid) - before) / start.elapsed().as_secs_f64()
}

fn end_to_end() {
    let camera = RtspCamera::start(&["--size", "640x360", "--audio", "aac"]);
    let server = Server::start(&[]);
    let r = server.post_json(
        "/api/cameras",
        &json!({"id": "cam", "source": camera.url()}),
    );
    assert!(r.status().is_success());
    server.wait_live("cam", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(1));
    let off = server_cpu_percent(&server, 10);
    let r = server
        .http
        .patch(server.url("/api/cameras/cam"))
        .json(
            &json!({"analysis": {"asr": {"endpoint": "http://127.0.0.1:9/v1", "model": "bench"}}}),
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    std::thread::sleep(Duration::from_secs(1));
    let on = server_cpu_percent(&server, 10);
    println!("\n## Real binary, one RTSP camera (640x360 H.264 + 48 kHz AAC tone; 10 s each)\n");
    println!("| speech-to-text | server CPU % (incl. the demo camera) |");
    println!("|---|---|");
    println!("| off | {off:.1} |");
    println!("| on | {on:.1} (+{:.1}) |", on - off);
}

fn main() {
    in_process();
    end_to_end();
}
