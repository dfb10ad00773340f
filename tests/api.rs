//! The foundation against the real binary: demo camera, snapshots, camera CRUD and bad input,
//! tokens, config write-back, check-config and shutdown.

use crate::common;

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{temp_dir, wait_until, Server};
use reqwest::StatusCode;
use serde_json::{json, Value};

use livelens::source::testsrc::picture::read_time_strip;

/// Decodes a JPEG and reads the testsrc time strip from its pixels.
fn decode_snapshot(jpeg: &[u8]) -> (u32, u32, Option<u64>) {
    let img = image::load_from_memory_with_format(jpeg, image::ImageFormat::Jpeg)
        .expect("snapshot is a valid JPEG")
        .to_rgb8();
    let (w, h) = img.dimensions();
    let luma: Vec<u8> = img
        .pixels()
        .map(|p| (0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32) as u8)
        .collect();
    (
        w,
        h,
        read_time_strip(&luma, w as usize, h as usize, w as usize),
    )
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn snapshot(server: &Server, id: &str) -> Vec<u8> {
    let r = server.get(&format!("/api/cameras/{id}/snapshot.jpg"));
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    r.bytes().unwrap().to_vec()
}

#[test]
fn demo_camera_is_live_within_3s_and_described() {
    let server = Server::start(&[]);
    let took = server.wait_live("demo", Duration::from_secs(3));
    eprintln!("demo live after {took:?}");
    let cameras = server.get_json("/api/cameras");
    assert_eq!(cameras.as_array().unwrap().len(), 1);
    let demo = &cameras[0];
    assert_eq!(demo["id"], "demo");
    assert_eq!(demo["video"]["codec"], "h264");
    assert_eq!(demo["video"]["width"], 1280);
    assert_eq!(demo["video"]["height"], 720);
    assert!(demo["video"]["codec_string"]
        .as_str()
        .unwrap()
        .starts_with("avc1."));
    wait_until(Duration::from_secs(3), "frames counted", || {
        let s = &server.get_json("/api/cameras/demo")["stats"];
        s["frames"].as_u64().unwrap() > 10 && s["fps"].as_f64().unwrap() > 5.0
    });
    assert_eq!(server.resources()["streams_live"], 1);
    let health = server.get_json("/healthz");
    assert_eq!(health["live"], 1);
    let metrics = server.get("/metrics").text().unwrap();
    assert!(metrics.contains("livelens_streams_live 1"), "{metrics}");
    let openapi = server.get_json("/api/openapi.json");
    assert!(openapi["paths"]["/api/cameras/{id}/snapshot.jpg"].is_object());
    assert!(server.get("/").text().unwrap().contains("livelens"));
}

#[test]
fn snapshot_is_a_jpeg_of_the_picture_and_moves_on() {
    let server = Server::start(&[]);
    server.wait_live("demo", Duration::from_secs(5));
    let first = snapshot(&server, "demo");
    let (w, h, t1) = decode_snapshot(&first);
    assert_eq!((w, h), (1280, 720));
    let t1 = t1.expect("the time strip survives H.264 and JPEG");
    // The picture is current: captured within the last 2 s.
    let age = now_ms() as i64 - t1 as i64;
    assert!((0..2000).contains(&age), "snapshot is {age} ms old");

    // A second snapshot after the 1 s cache shows a later picture.
    let mut second = first.clone();
    wait_until(Duration::from_secs(3), "a newer snapshot", || {
        second = snapshot(&server, "demo");
        second != first
    });
    let t2 = decode_snapshot(&second).2.expect("time strip");
    assert!(
        t2 >= t1 + 900,
        "second snapshot {t2} is not ≥1 s after {t1}"
    );
    // go2rtc's snapshot URL serves the same thing.
    let r = server.get("/api/frame.jpeg?src=demo");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(server.resources()["viewers"]["snapshot"], 0);
}

fn error_of(r: reqwest::blocking::Response, status: StatusCode) -> String {
    assert_eq!(r.status(), status);
    let body: Value = r.json().expect("errors are JSON");
    body["error"].as_str().expect("{error}").to_string()
}

#[test]
fn camera_crud_and_every_bad_input() {
    let server = Server::start(&[]);
    server.wait_live("demo", Duration::from_secs(5));

    // Create.
    let r = server.post_json(
        "/api/cameras",
        &json!({"id": "yard", "source": "testsrc://?size=320x240&fps=10"}),
    );
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["location"], "/api/cameras/yard");
    server.wait_live("yard", Duration::from_secs(5));
    let yard = server.get_json("/api/cameras/yard");
    assert_eq!(yard["video"]["width"], 320);

    // Bad input: each names the problem and changes nothing.
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (
            json!({"id": "Front Door", "source": "testsrc://"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "not a valid camera id",
        ),
        (
            json!({"id": "x", "source": "http://cam/x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown source scheme \"http\"",
        ),
        (
            json!({"id": "x", "source": "testsrc://?size=7x7"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "testsrc parameter size",
        ),
        (
            json!({"id": "x", "source": "testsrc://?fps=zero"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "testsrc parameter fps",
        ),
        (
            json!({"id": "x", "source": "testsrc://?flavour=1"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown testsrc parameter \"flavour\"",
        ),
        (
            json!({"id": "yard", "source": "testsrc://"}),
            StatusCode::CONFLICT,
            "already exists",
        ),
        (
            json!({"id": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing field `source`",
        ),
        (
            json!({"id": "x", "source": "testsrc://", "zoom": 2}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown field `zoom`",
        ),
        (
            json!({"id": "x", "source": "exec:ffmpeg -i a -f mpegts -"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "allow_exec",
        ),
    ];
    for (body, status, needle) in cases {
        let msg = error_of(server.post_json("/api/cameras", &body), status);
        assert!(msg.contains(needle), "{body}: {msg:?} lacks {needle:?}");
    }
    let r = server
        .http
        .post(server.url("/api/cameras"))
        .header("content-type", "application/json")
        .body("{\"id\": \"x\",")
        .send()
        .unwrap();
    assert!(error_of(r, StatusCode::BAD_REQUEST).contains("parse"));
    let huge = json!({"id": "x", "source": "a".repeat(70 * 1024)});
    let msg = error_of(
        // Its own connection: the server may close it after refusing the body unread, which would
        // fail the next request on a pooled connection.
        reqwest::blocking::Client::new()
            .post(server.url("/api/cameras"))
            .json(&huge)
            .send()
            .unwrap(),
        StatusCode::PAYLOAD_TOO_LARGE,
    );
    assert!(msg.contains("64 KiB"), "{msg}");

    // Credentials are masked in the API.
    let r = server.post_json(
        "/api/cameras",
        &json!({"id": "x", "source": "rtsp://admin:hunter2@127.0.0.1:1/s"}),
    );
    let text = r.text().unwrap();
    assert!(!text.contains("hunter2"), "{text}");

    // Unknown camera: 404 with a JSON error, for every verb.
    for (method, path) in [
        ("GET", "/api/cameras/nope"),
        ("PATCH", "/api/cameras/nope"),
        ("DELETE", "/api/cameras/nope"),
        ("POST", "/api/cameras/nope/start"),
        ("POST", "/api/cameras/nope/stop"),
        ("GET", "/api/cameras/nope/snapshot.jpg"),
    ] {
        let r = server
            .http
            .request(method.parse().unwrap(), server.url(path))
            .json(&json!({}))
            .send()
            .unwrap();
        assert!(
            error_of(r, StatusCode::NOT_FOUND).contains("\"nope\""),
            "{method} {path}"
        );
    }

    // Patch: a new source restarts the camera with it; a bad patch changes nothing.
    let r = server
        .http
        .patch(server.url("/api/cameras/yard"))
        .json(&json!({"source": "testsrc://?size=640x360&fps=10"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    wait_until(Duration::from_secs(5), "yard at 640x360", || {
        server.get_json("/api/cameras/yard")["video"]["width"] == 640
    });
    let r = server
        .http
        .patch(server.url("/api/cameras/yard"))
        .json(&json!({"source": "nope://"}))
        .send()
        .unwrap();
    assert!(error_of(r, StatusCode::UNPROCESSABLE_ENTITY).contains("unknown source scheme"));
    assert_eq!(
        server.get_json("/api/cameras/yard")["source"],
        "testsrc://?size=640x360&fps=10"
    );

    // Stop, snapshot of a stopped camera, start.
    let stopped = server
        .post("/api/cameras/yard/stop")
        .json::<Value>()
        .unwrap();
    assert_eq!(stopped["state"], "stopped");
    let msg = error_of(
        server.get("/api/cameras/yard/snapshot.jpg"),
        StatusCode::SERVICE_UNAVAILABLE,
    );
    assert!(msg.contains("no picture"), "{msg}");
    server.post("/api/cameras/yard/start");
    server.wait_live("yard", Duration::from_secs(5));

    // Delete; the other camera never noticed any of this.
    assert_eq!(
        server
            .http
            .delete(server.url("/api/cameras/yard"))
            .send()
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        server.get("/api/cameras/yard").status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(server.camera_state("demo"), "live");
    wait_until(Duration::from_secs(3), "one live stream", || {
        server.resources()["streams_live"] == 1
    });
}

#[test]
fn cameras_added_by_the_api_survive_a_restart() {
    let dir = temp_dir("writeback");
    let config = dir.join("livelens.toml");
    std::fs::write(
        &config,
        "# my cameras\n[[camera]]\n# the porch camera\nid = \"porch\"\nsource = \"testsrc://?size=320x240&fps=5\"\n",
    )
    .unwrap();
    let path = config.to_str().unwrap();
    let server = Server::start(&["--config", path]);
    server.wait_live("porch", Duration::from_secs(5));
    let r = server.post_json(
        "/api/cameras",
        &json!({"id": "yard", "source": "testsrc://?size=320x240&fps=5&motion=0"}),
    );
    assert_eq!(r.status(), StatusCode::CREATED);
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains("# the porch camera") && text.contains("yard"),
        "{text}"
    );
    let (status, _) = server.terminate();
    assert!(status.success());

    let server = Server::start(&["--config", path]);
    assert_eq!(camera_ids(&server), ["porch", "yard"]);
    server.wait_live("yard", Duration::from_secs(5));
}

/// The ids of the cameras the server runs, in its order.
fn camera_ids(server: &Server) -> Vec<String> {
    server
        .get_json("/api/cameras")
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn without_a_config_file_changes_are_saved_to_the_default_file_and_read_back() {
    let home = temp_dir("config-home");
    let env = [("XDG_CONFIG_HOME", home.to_str().unwrap())];
    let file = home.join("livelens").join("livelens.toml");
    let server = Server::start_with_env(&[], &env);
    server.wait_live("demo", Duration::from_secs(5));
    // Named before anything is saved; nothing written until a change.
    let status = server.get_json("/api/config/status");
    assert_eq!(status["file"], file.to_str().unwrap(), "{status}");
    assert!(!file.exists());
    let r = server.post_json(
        "/api/cameras",
        &json!({"id": "door", "source": "testsrc://?size=320x240&fps=5"}),
    );
    assert_eq!(r.status(), StatusCode::CREATED);
    // Read back by the binary's own checker: the demo and the new camera, valid as written.
    let check = |expect: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_livelens"))
            .arg("check-config")
            .arg(&file)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains(expect), "{text}");
    };
    check("ok (2 camera(s))");
    let status = server.get_json("/api/config/status");
    assert_eq!(status["write_back"]["ok"], true, "{status}");
    let (status, _) = server.terminate();
    assert!(status.success());

    // The next start reads it: both cameras, and the file is now watched and written as any.
    let server = Server::start_with_env(&[], &env);
    assert_eq!(camera_ids(&server), ["demo", "door"]);
    server.wait_live("door", Duration::from_secs(5));
    let r = reqwest::blocking::Client::new()
        .delete(server.url("/api/cameras/demo"))
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    check("ok (1 camera(s))");
    let (status, _) = server.terminate();
    assert!(status.success());
    // Deleting the demo camera is kept too: the next start serves only what was saved.
    let server = Server::start_with_env(&[], &env);
    assert_eq!(camera_ids(&server), ["door"]);
}

#[test]
fn state_changes_need_the_token_when_one_is_set() {
    let server = Server::start_with_env(&[], &[("LIVELENS_TOKEN", "s3cret")]);
    let msg = error_of(
        server.post("/api/cameras/demo/stop"),
        StatusCode::UNAUTHORIZED,
    );
    assert!(msg.contains("Authorization: Bearer"), "{msg}");
    let r = server
        .http
        .post(server.url("/api/cameras/demo/stop"))
        .header("authorization", "Bearer wrong")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Reading needs no token; the refused stop changed nothing.
    server.wait_live("demo", Duration::from_secs(5));
    let r = server
        .http
        .post(server.url("/api/cameras/demo/stop"))
        .bearer_auth("s3cret")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(server.camera_state("demo"), "stopped");
}

#[test]
fn refuses_to_listen_off_loopback_without_a_token() {
    let out = Command::new(env!("CARGO_BIN_EXE_livelens"))
        .args(["serve", "--listen", "0.0.0.0:0"])
        .env_remove("LIVELENS_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("without an API token") && err.contains("--insecure"),
        "{err}"
    );
}

#[test]
fn check_config_lists_every_problem_with_its_place() {
    let dir = temp_dir("check-config");
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nlisten = \"nowhere\"\n[[camera]]\nid = \"A B\"\nsource = \"ftp://x\"\n[[camera]]\nid = \"ok\"\nsource = \"testsrc://?gop=0\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_livelens"))
        .args(["check-config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    // FILE:LINE: the camera by its id: the key: the message.
    for needle in [
        "bad.toml:2: server.listen: \"nowhere\"",
        "bad.toml:4: camera \"A B\": id: \"A B\" is not a valid camera id",
        "bad.toml:5: camera \"A B\": source: unknown source scheme \"ftp\"",
        "bad.toml:8: camera \"ok\": source: testsrc parameter gop=\"0\"",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    // A bad config stops `serve` with the same list.
    let out = Command::new(env!("CARGO_BIN_EXE_livelens"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--config",
            bad.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("4 problem(s)"));

    let good = dir.join("good.toml");
    std::fs::write(&good, "[[camera]]\nid = \"a\"\nsource = \"testsrc://\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_livelens"))
        .args(["check-config", good.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let syntax = dir.join("syntax.toml");
    std::fs::write(&syntax, "[[camera]]\nid = \n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_livelens"))
        .args(["check-config", syntax.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("syntax.toml:2: "), "{text}");
}

#[test]
fn sigterm_exits_zero_within_2s() {
    let server = Server::start(&[]);
    server.wait_live("demo", Duration::from_secs(5));
    // A request in flight does not hold the exit up.
    let _ = snapshot(&server, "demo");
    let (status, took) = server.terminate();
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(2), "exit took {took:?}");
}

#[test]
fn probe_and_the_camera_stream() {
    let server = Server::start(&[]);
    server.wait_live("demo", Duration::from_secs(5));
    let r = server.post_json(
        "/api/probe",
        &json!({"source": "testsrc://?size=640x360&fps=10"}),
    );
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().unwrap();
    assert_eq!(v["tracks"][0]["width"], 640);
    let msg = error_of(
        server.post_json("/api/probe", &json!({"source": "ftp://x"})),
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    assert!(msg.contains("unknown source scheme"), "{msg}");
    let msg = error_of(
        server.post_json("/api/probe", &json!({"source": "rtsp://127.0.0.1:1/x"})),
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    assert!(msg.contains("connection refused"), "{msg}");
    // The camera list as Server-Sent Events: the first event comes at once.
    let mut r = reqwest::blocking::Client::new()
        .get(server.url("/api/cameras/stream"))
        .send()
        .unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut buf = [0u8; 4096];
    let n = std::io::Read::read(&mut r, &mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(
        text.contains("event: cameras") && text.contains("\"id\":\"demo\""),
        "{text}"
    );
}

/// `viewers` counts people; the recorder and the analysers are `subscribers` of their own kind.
#[test]
fn viewers_count_people_and_the_recorder_is_shown_apart() {
    let dir = temp_dir("api-viewers");
    let config = common::write_config(
        "api-viewers",
        &format!(
            "[recording]\npath = \"{}\"\n\n[[camera]]\nid = \"rec\"\n\
             source = \"testsrc://?size=320x240&fps=25&gop=25\"\nrecord = true\n",
            dir.join("rec").display()
        ),
    );
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    server.wait_live("rec", Duration::from_secs(10));
    let camera = || server.get_json("/api/cameras/rec");
    wait_until(Duration::from_secs(5), "the recorder subscribed", || {
        camera()["subscribers"]["recording"] == 1
    });
    assert_eq!(camera()["viewers"], 0, "the recorder counted as a viewer");
    std::thread::scope(|scope| {
        let watcher = scope.spawn(|| common::sync::mse_bytes(&server, "rec", 3.0));
        wait_until(Duration::from_secs(3), "one MSE viewer", || {
            let c = camera();
            c["viewers"] == 1 && c["subscribers"]["mse"] == 1 && c["subscribers"]["recording"] == 1
        });
        assert!(
            !watcher.join().unwrap().is_empty(),
            "the MSE viewer got nothing"
        );
    });
    wait_until(Duration::from_secs(5), "the viewer gone", || {
        let c = camera();
        c["viewers"] == 0 && c["subscribers"]["mse"] == 0 && c["subscribers"]["recording"] == 1
    });
}
