//! Live analysis against the real binary: motion on the test camera, a VLM through a loopback
//! OpenAI-compatible server that checks every request for real, events in SQLite on disk, on
//! SSE and on a real mosquitto broker, and analysis switched on and off 200 times.

use crate::common;

use std::time::{Duration, Instant};

use common::vlm_server::{Failure, VlmServer};
use common::{wait_until, Mosquitto, Server};
use serde_json::{json, Value};

/// The strip of capture-time bits along the top and the clock in the bottom-left corner change
/// every frame; like a camera's timestamp overlay, they are masked.
const MASKS: &str = "masks = [[0.0, 0.0, 1.0, 0.06], [0.0, 0.8, 0.45, 0.2]]";

fn events(server: &Server, query: &str) -> Vec<Value> {
    server
        .get_json(&format!("/api/events?{query}"))
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn motion_events_follow_the_picture() {
    let dir = common::temp_dir("motion");
    let config = format!(
        "[storage]\npath = \"{}\"\n\n[[camera]]\nid = \"cam\"\nsource = \"testsrc://?size=640x360&fps=25&motion=0\"\n[camera.analysis.motion]\n{MASKS}\n",
        dir.join("events.db").display()
    );
    let path = common::write_config("motion-cfg", &config);
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    server.wait_live("cam", Duration::from_secs(5));
    // A still picture: no motion event in 10 s, while the analyser is demonstrably running.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        assert!(
            events(&server, "kind=motion").is_empty(),
            "motion in a still picture"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let status = server.get_json("/api/cameras/cam")["analysis_status"].clone();
    assert_eq!(status["motion"]["active"], false, "{status}");
    assert_eq!(server.resources()["viewers"]["analysis"], 1);

    // The box starts moving: a start event within 2 s of the camera being live again.
    assert_eq!(
        server
            .patch_camera(
                "cam",
                &json!({"source": "testsrc://?size=640x360&fps=25&motion=1"})
            )
            .status(),
        200
    );
    server.wait_live("cam", Duration::from_secs(5));
    let live = Instant::now();
    let mut start = Value::Null;
    wait_until(Duration::from_secs(2), "a motion start event", || {
        start = events(&server, "kind=motion")
            .first()
            .cloned()
            .unwrap_or(Value::Null);
        start["data"]["state"] == "start"
    });
    eprintln!("motion start {:?} after live", live.elapsed());
    assert!(start["data"]["area"].as_f64().unwrap() >= 0.01, "{start}");
    // It comes with the picture it was seen in.
    let jpeg = server
        .get(&format!("/api/events/{}/snapshot.jpg", start["id"]))
        .bytes()
        .unwrap();
    let img = image::load_from_memory(&jpeg).expect("the event snapshot decodes");
    assert_eq!(img.width(), 320);

    // Still again: the motion ends.
    assert_eq!(
        server
            .patch_camera(
                "cam",
                &json!({"source": "testsrc://?size=640x360&fps=25&motion=0"})
            )
            .status(),
        200
    );
    wait_until(Duration::from_secs(5), "a motion end event", || {
        events(&server, "kind=motion").first().unwrap()["data"]["state"] == "end"
    });
    // Stored on disk, in SQLite.
    let db = rusqlite::Connection::open(dir.join("events.db")).unwrap();
    let rows: i64 = db
        .query_row(
            "SELECT count(*) FROM events WHERE kind = 'motion'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(rows >= 2, "{rows} rows");
}

/// One livelens with two cameras, each watched by its own model server.
struct VlmSetup {
    server: Server,
    fast: VlmServer,
    slow: VlmServer,
    _runtime: tokio::runtime::Runtime,
}

const PROMPT: &str = "What is in the picture? One sentence.";

fn vlm_setup(name: &str, mqtt: Option<&str>) -> VlmSetup {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fast = runtime.block_on(VlmServer::start(320, PROMPT));
    let slow = runtime.block_on(VlmServer::start(320, PROMPT));
    slow.set(|b| b.delay = Duration::from_secs(5));
    let camera = |id: &str, url: &str| {
        format!(
            "[[camera]]\nid = \"{id}\"\nsource = \"testsrc://?size=640x360&fps=25\"\n\
             [camera.analysis.vlm]\nendpoint = \"{url}\"\nmodel = \"test-vlm\"\napi_key = \"sk-test-secret\"\n\
             prompt = \"{PROMPT}\"\ninterval = \"1s\"\nimage_width = 320\n\n"
        )
    };
    let mut config = String::new();
    if let Some(url) = mqtt {
        config.push_str(&format!("[mqtt]\nurl = \"{url}\"\n\n"));
    }
    config.push_str(&camera("fast", &fast.url));
    config.push_str(&camera("slow", &slow.url));
    let path = common::write_config(name, &config);
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    VlmSetup {
        server,
        fast,
        slow,
        _runtime: runtime,
    }
}

#[test]
fn the_model_is_asked_at_the_interval_and_never_twice_at_once() {
    let s = vlm_setup("vlm-rate", None);
    s.server.wait_live("fast", Duration::from_secs(5));
    // The SSE stream, read on a thread, collects the first vlm event.
    let sse = common::first_sse_event(s.server.url("/api/events/stream"), "vlm");
    let window = Instant::now();
    std::thread::sleep(Duration::from_secs(8));
    let span = window.elapsed();

    // Fast model: about one request per second, each one well-formed.
    let fast = s.fast.requests();
    eprintln!("fast model: {} requests in {span:?}", fast.len());
    assert!(
        (5..=9).contains(&fast.len()),
        "{} requests in {span:?}",
        fast.len()
    );
    for pair in fast.windows(2) {
        let gap = pair[1].started - pair[0].started;
        assert!(gap >= Duration::from_millis(950), "requests {gap:?} apart");
    }
    for r in &fast {
        assert_eq!(r.problem, None, "{r:?}");
        assert_eq!((r.width, r.height), (320, 180));
        assert_eq!(r.prompt, PROMPT);
    }
    // Slow model (5 s per answer, 1 s interval): never two requests at once, pictures skipped.
    let slow = s.slow.requests();
    for pair in slow.windows(2) {
        assert!(
            pair[1].started >= pair[0].ended,
            "overlapping requests: {pair:?}"
        );
    }
    let cam = s.server.get_json("/api/cameras/slow");
    let status = &cam["analysis_status"]["vlm"];
    assert!(status["skipped"].as_u64().unwrap() >= 3, "{status}");
    assert!(status["requests"].as_u64().unwrap() <= 2, "{status}");
    // The key never shows.
    assert_eq!(cam["analysis"]["vlm"]["api_key"], "***");
    assert!(!cam.to_string().contains("sk-test-secret"));

    // Each answer is an event with the text, the model and the latency split.
    let vlm_events: Vec<Value> = events(&s.server, "camera=fast&kind=vlm");
    assert!(vlm_events.len() >= 4, "{} events", vlm_events.len());
    let e = &vlm_events[0];
    assert_eq!(
        e["data"]["text"],
        "A test pattern with colour bars and a white box."
    );
    assert_eq!(e["data"]["model"], "test-vlm");
    for part in ["grab", "encode", "request", "total"] {
        assert!(e["data"]["latency_ms"][part].as_f64().is_some(), "{e}");
    }
    let jpeg = s
        .server
        .get(&format!("/api/events/{}/snapshot.jpg", e["id"]))
        .bytes()
        .unwrap();
    assert_eq!(image::load_from_memory(&jpeg).unwrap().width(), 320);
    let pushed = sse.join().unwrap();
    assert_eq!(pushed["kind"], "vlm");
    assert_eq!(pushed["data"]["model"], "test-vlm");
    // Filters work.
    assert!(events(&s.server, "camera=nope").is_empty());
    let until = e["time_ms"].as_i64().unwrap() - 1;
    assert!(events(&s.server, &format!("camera=fast&until={until}")).len() < vlm_events.len());
    assert_eq!(s.server.get("/api/events?limit=x").status(), 400);
    s.fast.stop();
    s.slow.stop();
}

#[test]
fn a_broken_model_server_is_an_error_that_recovers() {
    let s = vlm_setup("vlm-errors", None);
    s.server.wait_live("fast", Duration::from_secs(5));
    let vlm =
        |server: &Server| server.get_json("/api/cameras/fast")["analysis_status"]["vlm"].clone();
    let expect = |failure: Failure, words: &str| {
        s.fast.set(|b| b.failure = failure);
        wait_until(Duration::from_secs(5), words, || {
            let v = vlm(&s.server);
            v["state"] == "error" && v["reason"].as_str().unwrap_or("").contains(words)
        });
    };
    expect(Failure::Status500, "500");
    expect(Failure::InvalidJson, "invalid JSON");
    expect(Failure::NoText, "no text");
    // Recovers by itself at the next interval.
    s.fast.set(|b| b.failure = Failure::None);
    wait_until(Duration::from_secs(5), "recovered", || {
        vlm(&s.server)["state"] == "ok"
    });
    // A server that is gone: connection refused, and the video goes on.
    s.fast.stop();
    wait_until(Duration::from_secs(5), "refused", || {
        vlm(&s.server)["reason"]
            .as_str()
            .unwrap_or("")
            .contains("refused")
    });
    let cam = s.server.get_json("/api/cameras/fast");
    assert_eq!(cam["state"], "live", "{cam}");
    assert!(cam["stats"]["fps"].as_f64().unwrap() > 20.0, "{cam}");
    assert_eq!(s.server.camera_state("slow"), "live");
    s.slow.stop();
}

/// A hostile model server: it cannot send the request (and its key) elsewhere, cannot make
/// livelens read 300 MiB, and cannot put lines or control characters into the public reason.
#[test]
fn a_hostile_model_server_cannot_redirect_flood_or_write_the_reason() {
    let s = vlm_setup("vlm-hostile", None);
    s.server.wait_live("fast", Duration::from_secs(5));
    let reason = |server: &Server| {
        let v = server.get_json("/api/cameras/fast")["analysis_status"]["vlm"].clone();
        (v["state"] == "error").then(|| v["reason"].as_str().unwrap_or("").to_string())
    };
    let wait_reason = |failure: Failure, words: &str| -> String {
        s.fast.set(|b| b.failure = failure);
        let mut last = None;
        wait_until(Duration::from_secs(10), words, || {
            last = reason(&s.server).filter(|r| r.contains(words));
            last.is_some()
        });
        last.unwrap()
    };
    let noisy = wait_reason(Failure::Status500Noisy, "500");
    assert!(noisy.contains("model crashed"), "{noisy}");
    assert!(noisy.chars().all(|c| !c.is_control()), "{noisy:?}");
    assert!(
        noisy.chars().count() < 250,
        "{} chars",
        noisy.chars().count()
    );

    let served = s.fast.requests().len();
    let redirected = wait_reason(Failure::RedirectElsewhere, "another host");
    assert!(!redirected.contains("sk-test-secret"), "{redirected}");
    // Every request was one of ours to the configured host: none followed the redirect.
    let requests = s.fast.requests().len() - served;
    assert!(requests >= 1, "{requests}");

    let rss = |server: &Server| server.resources()["rss_bytes"].as_i64().unwrap();
    let before = rss(&s.server);
    let huge = wait_reason(Failure::Huge, "MiB");
    assert!(huge.contains("more than 4 MiB"), "{huge}");
    let grown = (rss(&s.server) - before) >> 20;
    assert!(grown < 64, "RSS grew by {grown} MiB reading a huge answer");
    // And it recovers once the server behaves.
    s.fast.set(|b| b.failure = Failure::None);
    wait_until(Duration::from_secs(5), "recovered", || {
        s.server.get_json("/api/cameras/fast")["analysis_status"]["vlm"]["state"] == "ok"
    });
    s.fast.stop();
    s.slow.stop();
}

#[test]
fn events_reach_mqtt_with_the_last_will() {
    use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
    let broker = Mosquitto::start();
    let mut options = MqttOptions::new("livelens-test", "127.0.0.1", broker.port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut connection) = Client::new(options, 64);
    client.subscribe("livelens/#", QoS::AtLeastOnce).unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<(String, String, bool)>();
    let listener = std::thread::spawn(move || {
        for notification in connection.iter() {
            match notification {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let payload = String::from_utf8_lossy(&p.payload).to_string();
                    if tx.send((p.topic.clone(), payload, p.retain)).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    let s = vlm_setup("vlm-mqtt", Some(&broker.url()));
    let mut seen: Vec<(String, String, bool)> = Vec::new();
    let mut wait_for = |what: &str, f: &dyn Fn(&(String, String, bool)) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if seen.iter().any(f) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(m) => seen.push(m),
                Err(_) => panic!("no MQTT message {what}; seen: {seen:?}"),
            }
        }
    };
    eprintln!("livelens started; waiting for MQTT messages");
    wait_for("online", &|m| {
        m.0 == "livelens/available" && m.1 == "online"
    });
    wait_for("vlm text", &|m| {
        m.0 == "livelens/fast/vlm" && m.1 == "A test pattern with colour bars and a white box."
    });
    wait_for("event JSON", &|m| {
        m.0 == "livelens/events"
            && serde_json::from_str::<Value>(&m.1)
                .is_ok_and(|v| v["kind"] == "vlm" && v["camera"] == "fast")
    });
    // Motion switched on at runtime: ON, retained.
    let r = s.server.patch_camera(
        "fast",
        &json!({"analysis": {"motion": {"masks": [[0.0, 0.0, 1.0, 0.06], [0.0, 0.8, 0.45, 0.2]]}}}),
    );
    assert_eq!(r.status(), 200);
    wait_for("motion ON", &|m| {
        m.0 == "livelens/fast/motion" && m.1 == "ON"
    });
    // Killed without a chance to say goodbye: the broker publishes the last will.
    s.server.kill_hard();
    wait_for("offline (last will)", &|m| {
        m.0 == "livelens/available" && m.1 == "offline"
    });
    // DISCONNECT ends the listener's connection loop.
    client.disconnect().unwrap();
    let _ = listener.join();
}

#[test]
fn two_hundred_analysis_switches_leave_nothing_behind() {
    let path = common::write_config(
        "analysis-cycles",
        "[[camera]]\nid = \"cam\"\nsource = \"testsrc://?size=640x360&fps=25\"\n",
    );
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    server.wait_live("cam", Duration::from_secs(5));
    let baseline = server.resources();
    let on = json!({"motion": {"fps": 5}});
    common::analysis_cycles(&server, "cam", &on, 200, || {
        server.get_json("/api/cameras/cam")["analysis_status"]["motion"]["area"]
            .as_f64()
            .is_some()
            && server.resources()["viewers"]["analysis"] == 1
    });
    let after = server.resources();
    eprintln!("200 analysis cycles: {baseline} → {after}");
    for key in ["tasks", "streams_live", "websockets", "child_processes"] {
        assert_eq!(after[key], baseline[key], "{key}");
    }
    assert_eq!(after["viewers"]["analysis"], 0);
    assert_eq!(server.camera_state("cam"), "live");
    // Bad analysis settings are refused with the field named, and change nothing.
    let r = server.patch_camera("cam", &json!({"analysis": {"motion": {"sensitivity": 3}}}));
    assert_eq!(r.status(), 422);
    let body: Value = r.json().unwrap();
    assert!(
        body.to_string().contains("analysis.motion.sensitivity"),
        "{body}"
    );
    let r = server.patch_camera(
        "cam",
        &json!({"analysis": {"vlm": {"endpoint": "http://x/v1"}}}),
    );
    assert_eq!(r.status(), 422, "a vlm without a model");
    assert!(server.get_json("/api/cameras/cam")["analysis"].is_null());
    // A camera can be added with its analysis.
    let r = server.post_json(
        "/api/cameras",
        &json!({"id": "watched", "source": "testsrc://?size=320x240&fps=10",
                "analysis": {"motion": {"fps": 2}}}),
    );
    assert_eq!(r.status(), 201);
    wait_until(Duration::from_secs(5), "the new camera analysed", || {
        !server.get_json("/api/cameras/watched")["analysis_status"]["motion"].is_null()
    });
    let r = server.post_json(
        "/api/cameras",
        &json!({"id": "bad", "source": "testsrc://", "analysis": {"motion": {"fps": 0}}}),
    );
    assert_eq!(r.status(), 422);
    assert_eq!(server.get("/api/cameras/bad").status(), 404);
}
