//! RTSP ingest against a real RTSP server (gst-rtsp-server, tests/fixtures/rtsp_camera.py).

use crate::common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{cpu_seconds, temp_dir, wait_until, RtspCamera, Server};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn add(server: &Server, body: Value) {
    let r = server.post_json("/api/cameras", &body);
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text());
}

fn camera(server: &Server, id: &str) -> Value {
    server.get_json(&format!("/api/cameras/{id}"))
}

/// Waits for `id` to be live, showing its reason if it is not.
fn wait_live(server: &Server, id: &str, within: Duration) {
    let start = Instant::now();
    loop {
        let c = camera(server, id);
        if c["state"] == "live" {
            return;
        }
        assert!(
            start.elapsed() < within,
            "{id} not live after {within:?}: {} {}",
            c["state"],
            c["reason"]
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn snapshot_size(server: &Server, id: &str) -> (u32, u32) {
    let mut bytes = Vec::new();
    wait_until(Duration::from_secs(5), "a snapshot", || {
        let r = server.get(&format!("/api/cameras/{id}/snapshot.jpg"));
        if r.status() != StatusCode::OK {
            return false;
        }
        bytes = r.bytes().unwrap().to_vec();
        true
    });
    let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg).unwrap();
    (img.width(), img.height())
}

#[test]
fn h264_aac_live_over_tcp_and_udp() {
    let cam = RtspCamera::start(&["--size", "640x360", "--audio", "aac"]);
    let server = Server::start(&[]);
    add(&server, json!({"id": "tcp", "source": cam.url()}));
    // The second client once the first plays: gst-rtsp-server 1.22 can abort
    // (`gst_rtsp_media_get_rates: assertion failed`) when two clients set up one shared
    // media at the same instant — the fixture's bug, seen once in CI, not livelens's.
    wait_live(&server, "tcp", Duration::from_secs(10));
    add(
        &server,
        json!({"id": "udp", "source": cam.url(), "transport": "udp"}),
    );
    for id in ["tcp", "udp"] {
        wait_live(&server, id, Duration::from_secs(10));
        let c = camera(&server, id);
        assert_eq!(c["video"]["codec"], "h264");
        assert_eq!(c["video"]["width"], 640);
        assert_eq!(c["video"]["height"], 360);
        assert_eq!(c["video"]["fps"], 25.0);
        let codec = c["video"]["codec_string"]
            .as_str()
            .unwrap()
            .to_ascii_lowercase();
        assert!(codec.starts_with("avc1.42c0"), "{codec}");
        assert_eq!(c["audio"]["codec"], "aac");
        assert_eq!(c["audio"]["rfc6381"], "mp4a.40.2");
        assert_eq!(c["audio"]["sample_rate"], 48000);
        assert_eq!(c["audio"]["channels"], 1);
        // Real pictures come through: the snapshot decodes at the camera's size.
        assert_eq!(snapshot_size(&server, id), (640, 360));
    }
    assert_eq!(camera(&server, "udp")["transport"], "udp");
    wait_until(
        Duration::from_secs(5),
        "both cameras counting frames",
        || {
            ["tcp", "udp"]
                .iter()
                .all(|id| camera(&server, id)["stats"]["fps"].as_f64().unwrap() > 15.0)
        },
    );
}

#[test]
fn h264_opus_is_read_from_raw_packets_with_both_tracks() {
    use livelens::resources::ViewerKind;

    let cam = RtspCamera::start(&["--size", "320x240", "--audio", "opus", "--gop", "10"]);
    let out = Command::new(env!("CARGO_BIN_EXE_livelens"))
        .args(["probe", &cam.url()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("audio opus 48000 Hz 2 ch (ingested)"),
        "{text}"
    );
    // gst-rtsp-server answers a second client of a shared Opus media with 503: one at a time.
    wait_until(Duration::from_secs(5), "the probe to leave", || {
        cam.clients() == 0
    });

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let camera = common::hub_with_camera(&format!("source = \"{}\"", cam.url())).await;
        let mut viewer = camera.subscribe(ViewerKind::Analysis).expect("running");
        let (mut video, mut audio) = (0, 0);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while video < 25 || audio < 25 {
            let frame = tokio::time::timeout_at(deadline, viewer.next())
                .await
                .unwrap_or_else(|_| {
                    panic!("{video} video, {audio} audio frames; {:?}", camera.state())
                })
                .unwrap();
            if frame.is_video() {
                if video == 0 {
                    assert!(frame.keyframe);
                }
                video += 1;
            } else {
                assert!(
                    !frame.data.is_empty() && frame.data.len() < 1500,
                    "one Opus packet"
                );
                audio += 1;
            }
        }
        let view = camera.view();
        let codec = view.video.unwrap();
        assert_eq!((codec.codec, codec.width, codec.height), ("h264", 320, 240));
        assert_eq!(view.audio.unwrap().codec, "opus");
        // The video our own depacketizer rebuilt decodes.
        let jpeg = livelens::output::snapshot::encode_jpeg_from_gop(&camera.gop()).unwrap();
        let img = image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg).unwrap();
        assert_eq!((img.width(), img.height()), (320, 240));
        camera.stop().await;
    });
}

#[test]
fn h265_is_described_and_live() {
    let cam = RtspCamera::start(&["--codec", "h265", "--size", "640x360"]);
    let server = Server::start(&[]);
    add(&server, json!({"id": "hevc", "source": cam.url()}));
    wait_live(&server, "hevc", Duration::from_secs(15));
    let c = camera(&server, "hevc");
    assert_eq!(c["video"]["codec"], "h265");
    let codec = c["video"]["codec_string"].as_str().unwrap();
    assert!(codec.starts_with("hvc1."), "{codec}");
    assert_eq!(
        (c["video"]["width"].as_u64(), c["video"]["height"].as_u64()),
        (Some(640), Some(360))
    );
}

/// `livelens probe --json ARGS…`: its exit code and the JSON it printed (on success and failure).
fn probe_json(args: &[&str]) -> (Option<i32>, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_livelens"))
        .args(["probe", "--json"])
        .args(args)
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), json)
}

#[test]
fn probe_reports_tracks_timings_and_gop() {
    let cam = RtspCamera::start(&[
        "--size", "320x240", "--fps", "25", "--gop", "10", "--audio", "aac",
    ]);
    let (code, report) = probe_json(&[&cam.url()]);
    assert_eq!(code, Some(0), "{report}");
    let video = &report["tracks"][0];
    assert_eq!(video["encoding"], "h264");
    assert_eq!(
        (video["width"].as_u64(), video["height"].as_u64()),
        (Some(320), Some(240))
    );
    assert_eq!(report["tracks"][1]["codec"], "mp4a.40.2");
    assert_eq!(report["gop_frames"], 10);
    assert!(report["describe_ms"].as_f64().unwrap() > 0.0);
    assert!(
        report["first_keyframe_ms"].as_f64().unwrap() >= report["first_frame_ms"].as_f64().unwrap()
    );
    // A refused connection: exit 1 and the reason.
    let out = Command::new(env!("CARGO_BIN_EXE_livelens"))
        .args(["probe", "--timeout", "2s", "rtsp://u:secret@127.0.0.1:1/x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("connection refused") && !err.contains("secret"),
        "{err}"
    );
    // With --json a failure is JSON too, on stdout, still without the password.
    let (code, v) = probe_json(&["--timeout", "2s", "rtsp://u:secret@127.0.0.1:1/x"]);
    assert_eq!(code, Some(1));
    let err = v["error"].as_str().unwrap();
    assert!(err.contains("connection refused"), "{v}");
    assert!(!v.to_string().contains("secret"), "{v}");
    // The sources the UI's Test takes: testsrc:// too, and a clear refusal for the others.
    let (code, v) = probe_json(&["testsrc://?size=640x360&fps=10&gop=20"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["tracks"][0]["width"], 640);
    assert_eq!(v["tracks"][0]["fps"], 10.0);
    assert_eq!(v["gop_frames"], 20);
    let (code, v) = probe_json(&["exec:ffmpeg -i x -f mpegts -"]);
    assert_eq!(code, Some(1));
    assert!(
        v["error"].as_str().unwrap().contains("cannot be probed"),
        "{v}"
    );
}

#[test]
fn wrong_password_retries_with_the_reason_then_a_fixed_source_goes_live() {
    let cam = RtspCamera::start(&[
        "--size",
        "320x240",
        "--user",
        "admin",
        "--password",
        "right",
    ]);
    let server = Server::start(&[]);
    add(
        &server,
        json!({"id": "door", "source": cam.url_with("admin", "wrong")}),
    );
    wait_until(Duration::from_secs(10), "401 reason", || {
        let c = camera(&server, "door");
        c["state"] == "retrying"
            && c["reason"]
                .as_str()
                .unwrap_or("")
                .contains("401 unauthorized")
    });
    let listed = server.get("/api/cameras").text().unwrap();
    assert!(
        !listed.contains("wrong") && listed.contains("rtsp://***:***@127.0.0.1"),
        "{listed}"
    );
    let r = server
        .http
        .patch(server.url("/api/cameras/door"))
        .json(&json!({"source": cam.url_with("admin", "right")}))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    wait_live(&server, "door", Duration::from_secs(10));
}

/// Digest authentication works too (retina answers either challenge).
#[test]
fn digest_auth() {
    let cam = RtspCamera::start(&[
        "--size",
        "320x240",
        "--user",
        "u",
        "--password",
        "p",
        "--auth",
        "digest",
    ]);
    let server = Server::start(&[]);
    add(
        &server,
        json!({"id": "d", "source": cam.url_with("u", "p")}),
    );
    wait_live(&server, "d", Duration::from_secs(10));
}

#[test]
fn a_camera_that_dies_and_returns_20_times_resumes_for_an_attached_viewer() {
    use livelens::resources::ViewerKind;

    let mut cam = RtspCamera::start(&["--size", "320x240", "--fps", "25", "--gop", "10"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let camera = common::hub_with_camera(&format!(
            "source = \"{}\"
timeout = \"2s\"",
            cam.url()
        ))
        .await;
        let mut viewer = camera.subscribe(ViewerKind::Analysis).unwrap();
        let mut last_pts = i64::MIN;
        for round in 0..=20 {
            if round > 0 {
                cam.restart();
            }
            // The same subscription receives frames again, starting at a keyframe, with time
            // still moving forward.
            let mut frames = 0;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
            while frames < 5 {
                let frame = tokio::time::timeout_at(deadline, viewer.next())
                    .await
                    .unwrap_or_else(|_| {
                        panic!("round {round}: no frames; state {:?}", camera.state())
                    })
                    .expect("the viewer stays attached");
                if frame.is_video() {
                    if frames == 0 {
                        assert!(frame.keyframe, "round {round}: resumed mid-GOP");
                    }
                    assert!(frame.pts > last_pts, "round {round}: time went back");
                    last_pts = frame.pts;
                    frames += 1;
                }
            }
        }
        camera.stop().await;
    });
}

#[test]
fn five_hundred_stop_start_cycles_leave_nothing_on_either_side() {
    let cam = RtspCamera::start(&["--size", "320x240"]);
    let server = Server::start(&[]);
    add(&server, json!({"id": "cam", "source": cam.url()}));
    wait_live(&server, "cam", Duration::from_secs(10));
    let counts = |r: &Value| {
        let mut r = r.clone();
        r.as_object_mut().unwrap().remove("rss_bytes");
        r
    };
    let baseline = server.resources();
    for i in 0..500 {
        let t = Instant::now();
        assert_eq!(
            server.post("/api/cameras/cam/stop").status(),
            StatusCode::OK
        );
        let took = t.elapsed();
        assert!(took < Duration::from_millis(1000), "stop {i} took {took:?}");
        assert_eq!(
            server.post("/api/cameras/cam/start").status(),
            StatusCode::OK
        );
        if i % 50 == 0 {
            wait_live(&server, "cam", Duration::from_secs(10));
        }
    }
    wait_live(&server, "cam", Duration::from_secs(10));
    wait_until(Duration::from_secs(5), "counts back at baseline", || {
        counts(&server.resources()) == counts(&baseline)
    });
    // The camera sees exactly one client: no session was left behind.
    wait_until(
        Duration::from_secs(5),
        "one RTSP client at the camera",
        || cam.clients() == 1,
    );
    server.post("/api/cameras/cam/stop");
    wait_until(
        Duration::from_secs(5),
        "no RTSP client at the camera",
        || cam.clients() == 0,
    );
}

/// A TCP server that accepts and then does `behaviour` with each connection. Returns its port
/// and a count of the connections it accepted.
fn bad_server(behaviour: fn(std::net::TcpStream)) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            counter.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || behaviour(stream));
        }
    });
    (port, accepted)
}

#[test]
fn broken_cameras_get_clear_reasons_without_busy_looping() {
    let refused = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (garbage, _) = bad_server(|mut s| {
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf);
        let _ = s.write_all(b"HELLO THIS IS NOT RTSP\r\n\r\n\x00\x01\x02garbage");
        let _ = s.flush();
        std::thread::sleep(Duration::from_secs(1));
    });
    let (silent, _) = bad_server(|mut s| {
        let mut buf = [0u8; 1024];
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    });
    let dir = temp_dir("broken-cameras");
    let config = dir.join("livelens.toml");
    std::fs::write(
        &config,
        format!(
            "[[camera]]\nid = \"refused\"\nsource = \"rtsp://127.0.0.1:{refused}/x\"\n\
             [[camera]]\nid = \"garbage\"\nsource = \"rtsp://127.0.0.1:{garbage}/x\"\ntimeout = \"1s\"\n\
             [[camera]]\nid = \"silent\"\nsource = \"rtsp://127.0.0.1:{silent}/x\"\ntimeout = \"1s\"\n"
        ),
    )
    .unwrap();
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let reason = |id: &str| {
        camera(&server, id)["reason"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    wait_until(Duration::from_secs(10), "reasons for all three", || {
        reason("refused") == "connection refused"
            && reason("garbage").contains("RTSP")
            && reason("silent") == "timeout after 1s"
    });
    for id in ["refused", "garbage", "silent"] {
        assert_eq!(camera(&server, id)["state"], "retrying", "{id}");
    }
    // Retrying costs (almost) nothing: back-off, not a busy loop.
    let pid = server.pid();
    let (c0, t0) = (cpu_seconds(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(4));
    let cpu = (cpu_seconds(pid) - c0) / t0.elapsed().as_secs_f64() * 100.0;
    assert!(cpu < 1.0, "livelens used {cpu:.2} % CPU while retrying");

    // Stops during connect/DESCRIBE and during back-off return promptly.
    for id in ["silent", "refused", "garbage"] {
        let t = Instant::now();
        assert_eq!(
            server.post(&format!("/api/cameras/{id}/stop")).status(),
            StatusCode::OK
        );
        let took = t.elapsed();
        assert!(
            took < Duration::from_millis(200),
            "stopping {id} took {took:?}"
        );
    }
    // Every camera task is gone: the same tasks as a server that never had a camera.
    let empty = dir.join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let idle = Server::start(&["--config", empty.to_str().unwrap()]).resources()["tasks"].clone();
    let r = server.resources();
    assert_eq!(r["tasks"], idle, "camera tasks left behind: {r}");
}

#[test]
fn stop_during_describe_is_prompt() {
    let (silent, accepted) = bad_server(|mut s| {
        let mut buf = [0u8; 1024];
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    });
    let server = Server::start(&[]);
    add(
        &server,
        json!({"id": "s", "source": format!("rtsp://127.0.0.1:{silent}/x")}),
    );
    // Connected and unanswered, with the default 10 s timeout far away: inside DESCRIBE.
    wait_until(Duration::from_secs(5), "the camera to connect", || {
        accepted.load(Ordering::SeqCst) >= 1
    });
    assert_eq!(camera(&server, "s")["state"], "starting");
    let t = Instant::now();
    server.post("/api/cameras/s/stop");
    assert!(
        t.elapsed() < Duration::from_millis(200),
        "stop took {:?}",
        t.elapsed()
    );
}

#[test]
fn pcma_audio_is_described() {
    let cam = RtspCamera::start(&["--size", "320x240", "--audio", "pcma"]);
    let server = Server::start(&[]);
    add(&server, json!({"id": "g711", "source": cam.url()}));
    wait_live(&server, "g711", Duration::from_secs(10));
    wait_until(Duration::from_secs(5), "audio described", || {
        camera(&server, "g711")["audio"]["codec"] == "pcma"
    });
    assert_eq!(camera(&server, "g711")["audio"]["sample_rate"], 8000);
}

#[test]
fn a_camera_restarted_with_new_settings_gives_viewers_a_new_description() {
    use livelens::resources::ViewerKind;
    use std::sync::Arc;

    let mut cam = RtspCamera::start(&["--size", "640x360", "--gop", "10"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let camera = common::hub_with_camera(&format!("source = \"{}\"", cam.url())).await;
        let mut viewer = camera.subscribe(ViewerKind::Analysis).expect("running");
        let first = tokio::time::timeout(Duration::from_secs(10), viewer.next())
            .await
            .unwrap()
            .unwrap();
        let before = first.video_codec.clone().unwrap();
        assert_eq!((before.width, before.height), (640, 360));
        cam.restart_with(&["--size", "320x240", "--gop", "10"]);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let f = tokio::time::timeout_at(deadline, viewer.next())
                .await
                .expect("frames again")
                .unwrap();
            let codec = f.video_codec.clone().unwrap();
            if !Arc::ptr_eq(&codec, &before) {
                assert!(f.keyframe, "a new description starts at a keyframe");
                assert_eq!((codec.width, codec.height), (320, 240));
                assert_ne!(codec.parameter_sets, before.parameter_sets);
                break;
            }
        }
        camera.stop().await;
    });
}
