//! Speech-to-text end to end: speech made with espeak-ng is served with a test picture by the RTSP
//! fixture, as AAC and as Opus; livelens decodes, resamples to 16 kHz, cuts segments with its
//! VAD and sends WAVs to a real recogniser (PocketSphinx with a phrase grammar,
//! `tests/fixtures/stt_server.py`), which answers only for correctly decoded, resampled and
//! segmented speech.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{require, write_config, RtspCamera, Server};
use serde_json::Value;

// Phrases of the recogniser's grammar that PocketSphinx still recognises after AAC coding (its
// "camera one is online" does not, even at 128 kbit/s, while the WAV original does).
const PHRASES: [&str; 2] = ["the door is open", "motion in the yard"];

struct SttServer {
    child: Child,
    port: u16,
}

impl SttServer {
    fn start() -> SttServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/stt_server.py");
        let mut child = Command::new("python3")
            .args(["-W", "ignore", script, "--port", &port.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            "READY",
            "the STT server did not start: install PyPI pocketsphinx 5 (python3 -m pip install pocketsphinx; scripts/test does)"
        );
        SttServer { child, port }
    }

    fn requests(&self) -> Vec<Value> {
        reqwest::blocking::get(format!("http://127.0.0.1:{}/requests", self.port))
            .unwrap()
            .json::<Vec<Value>>()
            .unwrap()
    }
}

impl Drop for SttServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two phrases, each after two seconds of silence, as a WAV file.
fn speech(dir: &std::path::Path) -> std::path::PathBuf {
    let mut parts = Vec::new();
    let silence = dir.join("silence.wav");
    let ok = Command::new("sox")
        .args([
            "-n",
            "-r",
            "22050",
            "-c",
            "1",
            silence.to_str().unwrap(),
            "trim",
            "0",
            "2",
        ])
        .status()
        .expect("sox (Debian package sox)");
    assert!(ok.success());
    for (i, phrase) in PHRASES.iter().enumerate() {
        let f = dir.join(format!("p{i}.wav"));
        let ok = Command::new("espeak-ng")
            .args([
                "-v",
                "en-us",
                "-s",
                "120",
                "-w",
                f.to_str().unwrap(),
                phrase,
            ])
            .status()
            .expect("espeak-ng (Debian package espeak-ng)");
        assert!(ok.success());
        parts.push(silence.clone());
        parts.push(f);
    }
    parts.push(silence.clone());
    let out = dir.join("speech.wav");
    let mut sox = Command::new("sox");
    sox.args(&parts).arg(&out);
    assert!(sox.status().unwrap().success());
    out
}

#[test]
fn spoken_phrases_in_aac_become_transcript_events() {
    spoken_phrases_become_transcript_events("aac");
}

#[test]
fn spoken_phrases_in_opus_become_transcript_events() {
    spoken_phrases_become_transcript_events("opus");
}

/// The RTSP fixture loops two phrases (each after 2 s of silence) as `codec` audio; both must
/// come back as transcript events, and nothing else.
fn spoken_phrases_become_transcript_events(codec: &str) {
    require("espeak-ng", "espeak-ng");
    require("sox", "sox");
    let dir = common::temp_dir(&format!("asr-speech-{codec}"));
    let wav = speech(&dir);
    let camera = RtspCamera::start(&[
        "--size",
        "320x240",
        "--audio",
        codec,
        "--audio-file",
        wav.to_str().unwrap(),
    ]);
    let stt = SttServer::start();
    let config = format!(
        "[[camera]]\nid = \"talk\"\nsource = \"{}\"\n\
         [camera.analysis.asr]\nendpoint = \"http://127.0.0.1:{}/v1\"\nmodel = \"pocketsphinx\"\nlanguage = \"en\"\npad = \"500ms\"\n",
        camera.url(),
        stt.port
    );
    let path = write_config(&format!("asr-{codec}"), &config);
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    server.wait_live("talk", Duration::from_secs(10));
    // Both phrases come back, each as its own transcript event.
    let mut found: Vec<Value> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !PHRASES
        .iter()
        .all(|p| found.iter().any(|e| e["data"]["text"] == *p))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "both phrases not transcribed in 30 s; events {found:?}; recogniser saw {:?}; status {}",
            stt.requests(),
            server.get_json("/api/cameras/talk")["analysis_status"]
        );
        std::thread::sleep(Duration::from_millis(200));
        found = server
            .get_json("/api/events?kind=transcript")
            .as_array()
            .unwrap()
            .clone();
    }
    for e in &found {
        let text = e["data"]["text"].as_str().unwrap();
        assert!(
            PHRASES.contains(&text),
            "a transcript of something never said: {e}"
        );
        let (start, end) = (
            e["data"]["start"].as_f64().unwrap(),
            e["data"]["end"].as_f64().unwrap(),
        );
        // A phrase lasts 1.5–2.5 s; with 0.5 s of padding on each side, 2.5–3.5 s.
        assert!(
            (2.2..=3.8).contains(&(end - start)),
            "segment {start}–{end} s: {e}"
        );
    }
    // Silence makes no segment: every segment sent held a phrase.
    let requests = stt.requests();
    assert!(!requests.is_empty());
    for r in &requests {
        assert!(
            r["text"].as_str().is_some_and(|t| !t.is_empty()),
            "a segment without speech: {r}"
        );
        assert_eq!(r["model"], "pocketsphinx");
        assert_eq!(r["language"], "en");
    }
    let status = server.get_json("/api/cameras/talk")["analysis_status"]["asr"].clone();
    assert_eq!(status["asr_dropped"], 0, "{status}");
    let audio = server.get_json("/api/cameras/talk")["audio"]["codec"].clone();
    assert_eq!(audio, codec);
}
