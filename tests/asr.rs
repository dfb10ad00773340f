//! Speech-to-text end to end: speech made with espeak-ng is served with a test picture by the RTSP
//! fixture, as AAC and as Opus; livelens decodes, resamples to 16 kHz, cuts segments with its
//! VAD and sends WAVs to a real recogniser (PocketSphinx with a phrase grammar,
//! `tests/fixtures/stt_server.py`), which answers only for correctly decoded, resampled and
//! segmented speech.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{require, write_config, RtspCamera, Server};
use serde_json::{json, Value};

// Phrases of the recogniser's grammar that PocketSphinx still recognises after AAC coding (its
// "camera one is online" does not, even at 128 kbit/s, while the WAV original does).
const PHRASES: [&str; 2] = ["the door is open", "motion in the yard"];

struct SttServer {
    child: Child,
    port: u16,
}

impl SttServer {
    fn start(extra: &[&str]) -> SttServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/stt_server.py");
        let mut child = Command::new("python3")
            .args(["-W", "ignore", script, "--port", &port.to_string()])
            .args(extra)
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

    fn max_in_flight(&self) -> u64 {
        let stats: Value = reqwest::blocking::get(format!("http://127.0.0.1:{}/stats", self.port))
            .unwrap()
            .json()
            .unwrap();
        stats["max_in_flight"].as_u64().unwrap()
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

/// Waits (30 s at most) until both phrases are transcript events; returns every transcript event.
fn wait_for_phrases(server: &Server, context: impl Fn() -> String) -> Vec<Value> {
    let mut found: Vec<Value> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !PHRASES
        .iter()
        .all(|p| found.iter().any(|e| e["data"]["text"] == *p))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "both phrases not transcribed in 30 s; events {found:?}; {}; status {}",
            context(),
            server.get_json("/api/cameras/talk")["analysis_status"]
        );
        std::thread::sleep(Duration::from_millis(200));
        found = server
            .get_json("/api/events?kind=transcript")
            .as_array()
            .unwrap()
            .clone();
    }
    found
}

/// The RTSP fixture looping the phrases (see [`speech`]) as `codec` audio with a test picture.
fn talking_camera(name: &str, codec: &str) -> RtspCamera {
    require("espeak-ng", "espeak-ng");
    require("sox", "sox");
    let wav = speech(&common::temp_dir(name));
    RtspCamera::start(&[
        "--size",
        "320x240",
        "--audio",
        codec,
        "--audio-file",
        wav.to_str().unwrap(),
    ])
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
    let camera = talking_camera(&format!("asr-speech-{codec}"), codec);
    let stt = SttServer::start(&[]);
    let config = format!(
        "[[camera]]\nid = \"talk\"\nsource = \"{}\"\n\
         [camera.analysis.asr]\nendpoint = \"http://127.0.0.1:{}/v1\"\nmodel = \"pocketsphinx\"\nlanguage = \"en\"\npad = \"500ms\"\n",
        camera.url(),
        stt.port
    );
    let path = write_config(&format!("asr-{codec}"), &config);
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    server.wait_live("talk", Duration::from_secs(10));
    let found = wait_for_phrases(&server, || format!("recogniser saw {:?}", stt.requests()));
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

#[test]
fn a_worker_backed_recogniser_starts_on_demand_and_is_gone_after_shutdown() {
    let camera = talking_camera("asr-worker", "aac");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/stt_server.py");
    let config = format!(
        "[[worker]]\nname = \"stt\"\ncommand = \"python3 -W ignore {script} --port {{port}}\"\n\
         health = \"http://127.0.0.1:{{port}}/health\"\non_demand = true\n\n\
         [[camera]]\nid = \"talk\"\nsource = \"{}\"\n",
        camera.url()
    );
    let path = write_config("asr-worker-config", &config);
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    server.wait_live("talk", Duration::from_secs(10));
    // Nobody needs the recogniser yet: it does not run.
    let worker = || server.get_json("/api/workers")[0].clone();
    assert_eq!(worker()["state"], "idle", "{}", worker());
    assert_eq!(server.resources()["child_processes"], 0);
    // Speech-to-text through the worker starts it, and its answers become events.
    let r = server.patch_camera("talk", &json!({"analysis": {"asr": {"endpoint": "worker:stt", "model": "pocketsphinx", "pad": "500ms"}}}),
    );
    assert_eq!(r.status(), 200);
    wait_for_phrases(&server, || format!("worker {}", worker()));
    let w = worker();
    assert_eq!(w["state"], "ready", "{w}");
    assert_eq!(w["starts"], 1, "{w}");
    let pid = w["pid"].as_u64().unwrap() as u32;
    assert!(common::is_running(pid));
    // Shutdown stops it: nothing of the worker is left once livelens has exited.
    let livelens = server.pid();
    let (status, took) = server.terminate();
    assert!(status.success(), "{status:?}");
    assert!(!common::is_running(pid), "worker {pid} survived shutdown");
    assert!(common::children_of(livelens).is_empty());
    eprintln!("shutdown with a running recogniser worker took {took:?}");
}

#[test]
fn two_hundred_speech_to_text_switches_leave_nothing_behind() {
    let camera = RtspCamera::start(&["--size", "320x240", "--audio", "aac"]);
    let stt = SttServer::start(&[]);
    let config = format!("[[camera]]\nid = \"talk\"\nsource = \"{}\"\n", camera.url());
    let path = write_config("asr-cycles", &config);
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    server.wait_live("talk", Duration::from_secs(10));
    let baseline = server.resources();
    let on = json!({"asr": {
        "endpoint": format!("http://127.0.0.1:{}/v1", stt.port), "model": "pocketsphinx"}});
    common::analysis_cycles(&server, "talk", &on, 200, || {
        server.get_json("/api/cameras/talk")["analysis_status"]["asr"]["state"] == "waiting"
            && server.resources()["viewers"]["analysis"] == 1
    });
    let after = server.resources();
    eprintln!("200 speech-to-text cycles: {baseline} → {after}");
    for key in [
        "tasks",
        "streams_live",
        "websockets",
        "child_processes",
        "viewers",
    ] {
        assert_eq!(after[key], baseline[key], "{key}");
    }
    assert_eq!(server.camera_state("talk"), "live");
    assert!(server.get_json("/api/cameras/talk")["analysis"].is_null());
}

#[test]
fn a_recogniser_that_falls_behind_gets_one_segment_at_a_time_and_the_rest_are_counted() {
    let camera = talking_camera("asr-slow", "aac");
    // Each answer takes 8 s; a phrase is cut every ~3.5 s.
    let stt = SttServer::start(&["--delay", "8"]);
    let config = format!(
        "[[camera]]\nid = \"talk\"\nsource = \"{}\"\n\
         [camera.analysis.asr]\nendpoint = \"http://127.0.0.1:{}/v1\"\nmodel = \"pocketsphinx\"\npad = \"500ms\"\n",
        camera.url(),
        stt.port
    );
    let path = write_config("asr-slow-config", &config);
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    server.wait_live("talk", Duration::from_secs(10));
    let status = || server.get_json("/api/cameras/talk")["analysis_status"]["asr"].clone();
    common::wait_until(
        Duration::from_secs(30),
        "two segments dropped and one answer",
        || {
            let s = status();
            s["asr_dropped"].as_u64().unwrap_or(0) >= 2 && !stt.requests().is_empty()
        },
    );
    let s = status();
    // Never more than one request at a time, and every segment is either sent or counted.
    assert_eq!(stt.max_in_flight(), 1, "{s}");
    let sent = stt.requests().len() as u64;
    let segments = s["segments"].as_u64().unwrap();
    let dropped = s["asr_dropped"].as_u64().unwrap();
    assert!(
        segments >= sent + dropped && segments <= sent + dropped + 1,
        "{segments} segments, {sent} answered, {dropped} dropped (one may be in flight)"
    );
    // What was answered is still right.
    let events = server.get_json("/api/events?kind=transcript");
    for e in events.as_array().unwrap() {
        assert!(
            PHRASES.contains(&e["data"]["text"].as_str().unwrap()),
            "{e}"
        );
    }
}

#[test]
fn transcripts_reach_sse_mqtt_and_the_players_caption() {
    use common::browser::Browser;
    use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
    let _serial = common::browser::serial();
    let camera = talking_camera("asr-delivery", "aac");
    let stt = SttServer::start(&[]);
    let broker = common::Mosquitto::start();
    let (client, mut connection) =
        Client::new(MqttOptions::new("asr-test", "127.0.0.1", broker.port), 16);
    client
        .subscribe("livelens/talk/transcript", QoS::AtLeastOnce)
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let listener = std::thread::spawn(move || {
        for notification in connection.iter() {
            match notification {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx.send(String::from_utf8_lossy(&p.payload).into()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    let config = format!(
        "[mqtt]\nurl = \"{}\"\n\n[[camera]]\nid = \"talk\"\nsource = \"{}\"\n\
         [camera.analysis.asr]\nendpoint = \"http://127.0.0.1:{}/v1\"\nmodel = \"pocketsphinx\"\npad = \"500ms\"\n",
        broker.url(),
        camera.url(),
        stt.port
    );
    let path = write_config("asr-delivery-config", &config);
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    let sse = common::first_sse_event(server.url("/api/events/stream"), "transcript");
    server.wait_live("talk", Duration::from_secs(10));
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let browser = Browser::start().await;
        browser.client.goto(&server.base).await.unwrap();
        // The caption under the player shows what was said, in quotes.
        let phrases = serde_json::to_string(&PHRASES).unwrap();
        browser
            .until(
                Duration::from_secs(30),
                "a spoken phrase as the player's caption",
                &format!(
                    "const c = document.querySelector('.tile[data-id=\"talk\"] .caption'); \
                     return !!c && {phrases}.some(p => c.textContent === '\u{201c}' + p + '\u{201d}');"
                ),
            )
            .await;
        browser.close().await;
    });
    let event = sse.join().unwrap();
    assert_eq!(event["camera"], "talk");
    assert!(
        PHRASES.contains(&event["data"]["text"].as_str().unwrap()),
        "{event}"
    );
    let said = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("an MQTT transcript");
    assert!(PHRASES.contains(&said.as_str()), "MQTT said {said:?}");
    client.disconnect().unwrap();
    let _ = listener.join();
}
