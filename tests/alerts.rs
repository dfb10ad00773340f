//! Alert rules against the real binary: the model is a loopback server that judges each picture
//! it gets (where testsrc's white box is), so alerts start and end as the picture really
//! changes, and the test checks every alert against the picture it came with; alerts reach a
//! real mosquitto with Home Assistant discovery; rule add/remove cycles leave nothing behind.

use crate::common;

use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::vlm_server::VlmServer;
use common::{counts, wait_until, Mosquitto, Server};
use serde_json::{json, Value};

const PROMPT: &str = "Describe the scene.";
const QUESTION: &str = "Is the white box in the left half of the picture?";

/// Where the test picture's white box is: the middle of the white pixels on the middle row,
/// as a fraction of the width (the colour bars are at most 75 % grey; only the box is white).
fn box_x(img: &image::DynamicImage) -> Option<f64> {
    let rgb = img.to_rgb8();
    let y = rgb.height() / 2;
    let xs: Vec<u32> = (0..rgb.width())
        .filter(|&x| rgb.get_pixel(x, y).0.iter().all(|&c| c > 225))
        .collect();
    if xs.len() < 3 {
        return None;
    }
    let mean = xs.iter().map(|&x| x as f64).sum::<f64>() / xs.len() as f64;
    Some(mean / rgb.width() as f64)
}

fn judge() -> common::vlm_server::Judge {
    Arc::new(|img, prompt| {
        if !prompt.starts_with(QUESTION) {
            return None;
        }
        Some(match box_x(img) {
            Some(x) if x < 0.5 => "Yes, the white box is on the left.".into(),
            Some(_) => "No. The box is in the right half.".into(),
            None => "No white box is visible.".into(),
        })
    })
}

fn mqtt(broker: &Mosquitto) -> (rumqttc::Client, Receiver<(String, String)>) {
    use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
    let mut options = MqttOptions::new("alerts-test", "127.0.0.1", broker.port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut connection) = Client::new(options, 256);
    client.subscribe("livelens/#", QoS::AtLeastOnce).unwrap();
    client
        .subscribe("homeassistant/#", QoS::AtLeastOnce)
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for n in connection.iter() {
            match n {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let payload = String::from_utf8_lossy(&p.payload).to_string();
                    if tx.send((p.topic.clone(), payload)).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    (client, rx)
}

fn wait_message(
    rx: &Receiver<(String, String)>,
    seen: &mut Vec<(String, String)>,
    what: &str,
    f: impl Fn(&(String, String)) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen.iter().any(&f) {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(m) => seen.push(m),
            Err(_) => panic!(
                "no MQTT message {what}; seen topics: {:?}",
                seen.iter().map(|m| &m.0).collect::<Vec<_>>()
            ),
        }
    }
}

#[test]
fn alerts_follow_the_picture_and_reach_mqtt_and_home_assistant() {
    let broker = Mosquitto::start();
    let (client, rx) = mqtt(&broker);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let vlm = runtime.block_on(VlmServer::start(320, PROMPT));
    // A slow model: were the description and the rule ever asked at once, requests would overlap.
    vlm.set(|b| {
        b.judge = Some(judge());
        b.delay = Duration::from_millis(150);
    });
    let dir = common::temp_dir("alerts");
    let config = format!(
        "[storage]\npath = \"{}\"\n[mqtt]\nurl = \"{}\"\n\n[[camera]]\nid = \"cam\"\nsource = \"testsrc://?size=640x360&fps=25\"\n\
         [camera.analysis.vlm]\nendpoint = \"{}\"\nmodel = \"m\"\nprompt = \"{PROMPT}\"\ninterval = \"1s\"\nimage_width = 320\n\
         [[camera.analysis.alert]]\nname = \"box_left\"\nquestion = \"{QUESTION}\"\ninterval = \"500ms\"\n",
        dir.join("events.db").display(),
        broker.url(),
        vlm.url
    );
    let path = common::write_config("alerts-cfg", &config);
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    // The box crosses the picture in ~4 s each way: two starts and two ends within ~20 s.
    let mut alerts = Vec::new();
    wait_until(
        Duration::from_secs(40),
        "two alert starts and two ends",
        || {
            alerts = server
                .get_json("/api/events?kind=alert&limit=1000")
                .as_array()
                .unwrap()
                .clone();
            let n = |s: &str| alerts.iter().filter(|e| e["data"]["state"] == s).count();
            n("start") >= 2 && n("end") >= 2
        },
    );
    alerts.reverse(); // oldest first
    let mut expect = "start";
    for e in &alerts {
        assert_eq!(e["data"]["name"], "box_left");
        assert_eq!(e["data"]["question"], QUESTION);
        assert_eq!(e["data"]["state"], expect, "alerts alternate: {alerts:#?}");
        expect = if expect == "start" { "end" } else { "start" };
        // Checked against the picture the model judged.
        let jpeg = server
            .get(&format!("/api/events/{}/snapshot.jpg", e["id"]))
            .bytes()
            .unwrap();
        let img = image::load_from_memory(&jpeg).unwrap();
        let x = box_x(&img);
        match e["data"]["state"].as_str().unwrap() {
            "start" => assert!(x.is_some_and(|x| x < 0.5), "start with the box at {x:?}"),
            _ => assert!(x.is_none_or(|x| x >= 0.5), "end with the box at {x:?}"),
        }
    }
    // One request in flight for the camera, description and rule together.
    let mut requests = vlm.requests();
    requests.sort_by_key(|r| r.started);
    for w in requests.windows(2) {
        assert!(w[1].started >= w[0].ended, "two requests at once: {:?}", w);
    }
    assert!(
        requests.iter().all(|r| r.problem.is_none()),
        "{:?}",
        requests.iter().find(|r| r.problem.is_some())
    );
    let described = requests.iter().filter(|r| r.prompt == PROMPT).count();
    let asked = requests
        .iter()
        .filter(|r| r.prompt.starts_with(QUESTION))
        .count();
    assert!(
        described >= 3 && asked >= 6,
        "{described} descriptions, {asked} questions"
    );
    let status = &server.get_json("/api/cameras/cam")["analysis_status"]["alerts"][0];
    assert_eq!(status["name"], "box_left");
    assert!(status["requests"].as_u64().unwrap() >= 6, "{status}");

    // MQTT: the alert's state (retained) and Home Assistant discovery.
    let mut seen = Vec::new();
    wait_message(&rx, &mut seen, "alert ON", |m| {
        m.0 == "livelens/cam/alert/box_left" && m.1 == "ON"
    });
    wait_message(&rx, &mut seen, "alert OFF", |m| {
        m.0 == "livelens/cam/alert/box_left" && m.1 == "OFF"
    });
    let config_topic = "homeassistant/binary_sensor/livelens_cam/alert_box_left/config";
    wait_message(&rx, &mut seen, "the alert's discovery config", |m| {
        m.0 == config_topic && !m.1.is_empty()
    });
    let config: Value =
        serde_json::from_str(&seen.iter().find(|m| m.0 == config_topic).unwrap().1).unwrap();
    assert_eq!(config["state_topic"], "livelens/cam/alert/box_left");
    assert_eq!(config["availability_topic"], "livelens/available");
    assert_eq!(config["device"]["identifiers"][0], "livelens_cam");
    for topic in [
        "homeassistant/sensor/livelens_cam/description/config",
        "homeassistant/sensor/livelens_cam/transcript/config",
        "homeassistant/image/livelens_cam/snapshot/config",
    ] {
        wait_message(&rx, &mut seen, topic, |m| m.0 == topic);
    }
    wait_message(&rx, &mut seen, "the snapshot URL", |m| {
        m.0 == "livelens/cam/snapshot_url"
            && m.1 == format!("{}/api/cameras/cam/snapshot.jpg", server.base)
    });
    assert_eq!(server.get("/api/cameras/cam/snapshot.jpg").status(), 200);
    // The rule removed: its discovery config is emptied, so Home Assistant drops the entity.
    let r = server.patch_camera("cam", &json!({"analysis": {"vlm": {"endpoint": vlm.url, "model": "m", "prompt": PROMPT, "interval": "1s", "image_width": 320}}}));
    assert_eq!(r.status(), 200);
    wait_message(&rx, &mut seen, "the alert's config emptied", |m| {
        m.0 == config_topic && m.1.is_empty()
    });
    client.disconnect().unwrap();
    vlm.stop();
}

#[test]
fn rules_are_checked_and_two_hundred_add_remove_cycles_leave_every_count_at_baseline() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let vlm = runtime.block_on(VlmServer::start(320, PROMPT));
    vlm.set(|b| b.judge = Some(judge()));
    let path = common::write_config(
        "alerts-cycles",
        "[[camera]]\nid = \"cam\"\nsource = \"testsrc://?size=640x360&fps=25\"\n",
    );
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    server.wait_live("cam", Duration::from_secs(5));
    // Bad rules get 422 with each problem's place.
    for (rule, place) in [
        (
            json!({"name": "Box Left", "question": QUESTION}),
            "analysis.alert[0].name",
        ),
        (
            json!({"name": "a", "question": " "}),
            "analysis.alert[0].question",
        ),
        (
            json!({"name": "a", "question": QUESTION, "interval": "soon"}),
            "analysis.alert[0].interval",
        ),
    ] {
        let r = server.patch_camera("cam", &json!({"analysis": {"vlm": {"endpoint": vlm.url, "model": "m", "image_width": 320}, "alert": [rule]}}));
        assert_eq!(r.status(), 422);
        let body: Value = r.json().unwrap();
        assert!(
            body["problems"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["field"] == place),
            "{body}"
        );
    }
    let r = server.patch_camera(
        "cam",
        &json!({"analysis": {"alert": [{"name": "a", "question": QUESTION}]}}),
    );
    assert_eq!(r.status(), 422, "a rule needs the model of vlm");
    let baseline = counts(&server.resources());
    let on = json!({
        "vlm": {"enabled": false, "endpoint": vlm.url, "model": "m", "prompt": PROMPT, "image_width": 320},
        "alert": [{"name": "box_left", "question": QUESTION, "interval": "200ms"}]
    });
    common::analysis_cycles(&server, "cam", &on, 200, || {
        server.get_json("/api/cameras/cam")["analysis_status"]["alerts"][0]["requests"]
            .as_u64()
            .is_some_and(|n| n > 0)
    });
    let mut now = Value::Null;
    wait_until(Duration::from_secs(10), "counts at baseline", || {
        now = counts(&server.resources());
        now == baseline
    });
    // Only the rule asked (the describer is off), and a new rule works after.
    assert!(vlm
        .requests()
        .iter()
        .all(|r| r.prompt.starts_with(QUESTION)));
    assert_eq!(
        server
            .patch_camera("cam", &json!({"analysis": on}))
            .status(),
        200
    );
    wait_until(
        Duration::from_secs(15),
        "an answer after the cycles",
        || server.get_json("/api/cameras/cam")["analysis_status"]["alerts"][0]["state"] == "ok",
    );
    vlm.stop();
}

#[test]
fn search_finds_what_was_seen_summaries_read_the_log_and_the_model_can_be_tried() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let vlm = runtime.block_on(VlmServer::start(320, PROMPT));
    vlm.set(|b| b.judge = Some(judge()));
    let dir = common::temp_dir("search");
    let config = format!(
        "[storage]\npath = \"{}\"\n\n[[camera]]\nid = \"cam\"\nsource = \"testsrc://?size=640x360&fps=25\"\n\
         [camera.analysis.vlm]\nendpoint = \"{}\"\nmodel = \"m\"\napi_key = \"sk-secret\"\nprompt = \"{PROMPT}\"\ninterval = \"1s\"\nimage_width = 320\n\
         [[camera.analysis.alert]]\nname = \"box_left\"\nquestion = \"{QUESTION}\"\ninterval = \"500ms\"\n\n\
         [[camera]]\nid = \"other\"\nsource = \"testsrc://?size=320x240&fps=5\"\n",
        dir.join("events.db").display(),
        vlm.url
    );
    let path = common::write_config("search-cfg", &config);
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    let started = common_now_ms();
    wait_until(Duration::from_secs(30), "descriptions and an alert", || {
        let e = server.get_json("/api/events?limit=1000");
        let e = e.as_array().unwrap();
        e.iter().filter(|e| e["kind"] == "vlm").count() >= 2
            && e.iter()
                .any(|e| e["kind"] == "alert" && e["data"]["state"] == "start")
    });
    let search = |q: &str| -> Vec<Value> {
        server
            .get_json(&format!("/api/events/search?{q}"))
            .as_array()
            .unwrap()
            .clone()
    };
    // What the describer said: only its descriptions, the words marked.
    let found = search("q=colour%20bars");
    assert!(!found.is_empty());
    for f in &found {
        assert_eq!(f["kind"], "vlm", "{f}");
        let hits: Vec<String> = f["snippet"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["hit"] == true)
            .map(|r| r["text"].as_str().unwrap().to_lowercase())
            .collect();
        assert!(
            hits.iter().all(|h| h == "colour" || h == "bars") && hits.len() == 2,
            "{hits:?}"
        );
    }
    // What the rule's answers said: only alerts, and only those whose answer says it.
    let left = search("q=left");
    assert!(
        !left.is_empty()
            && left
                .iter()
                .all(|f| f["kind"] == "alert"
                    && f["data"]["answer"].as_str().unwrap().contains("left")),
        "{left:?}"
    );
    assert!(search("q=zebra").is_empty());
    assert!(search("q=colour&camera=other").is_empty());
    assert_eq!(server.get("/api/events/search?q=").status(), 400);
    assert_eq!(server.get("/api/events/search?q=x&colour=1").status(), 400);

    // A summary of the period: a text-only request with the log, its answer stored and found.
    let until = common_now_ms();
    let r = server
        .http
        .post(server.url("/api/cameras/cam/summary"))
        .json(&json!({"since": started, "until": until}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let summary: Value = r.json().unwrap();
    assert_eq!(summary["kind"], "summary");
    let logged: Vec<Value> = server
        .get_json(&format!(
            "/api/events?camera=cam&since={started}&until={until}&limit=1000"
        ))
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| ["vlm", "alert", "transcript"].contains(&e["kind"].as_str().unwrap()))
        .cloned()
        .collect();
    let alerts = logged.iter().filter(|e| e["kind"] == "alert").count();
    assert_eq!(
        summary["data"]["text"],
        format!("{} log lines, {alerts} of them alerts.", logged.len())
    );
    assert_eq!(summary["data"]["events"], logged.len());
    let asked = vlm
        .requests()
        .into_iter()
        .find(|r| r.width == 0)
        .expect("a text-only request");
    assert!(
        asked.prompt.starts_with("Summarise") && asked.problem.is_none(),
        "{}",
        asked.prompt
    );
    assert_eq!(search("q=log%20lines")[0]["id"], summary["id"]);
    let r = server
        .http
        .post(server.url("/api/cameras/cam/summary"))
        .json(&json!({"since": 1000, "until": 2000}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 422, "nothing to summarise");

    // The model settings tried on the picture now (the key shown masked is the saved one).
    let r = server.http.post(server.url("/api/cameras/cam/analysis/test"))
        .json(&json!({"vlm": {"endpoint": vlm.url, "model": "m", "api_key": "***", "image_width": 320}, "question": QUESTION}))
        .send().unwrap();
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().unwrap();
    let text = answer["answer"].as_str().unwrap();
    assert!(
        text.starts_with("Yes") || text.starts_with("No"),
        "{answer}"
    );
    let r = server
        .http
        .post(server.url("/api/cameras/cam/analysis/test"))
        .json(&json!({"vlm": {"endpoint": "ftp://x", "model": "m"}}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 422);
    let body: Value = r.json().unwrap();
    assert_eq!(
        body["problems"][0]["field"], "analysis.vlm.endpoint",
        "{body}"
    );
    let r = server
        .http
        .post(server.url("/api/cameras/cam/analysis/test"))
        .json(&json!({"vlm": {"endpoint": "http://127.0.0.1:9/v1", "model": "m", "api_key": "sk-given"}}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 502);
    assert!(!r.text().unwrap().contains("sk-given"));
    // The saved key never goes to another endpoint.
    let r = server
        .http
        .post(server.url("/api/cameras/cam/analysis/test"))
        .json(
            &json!({"vlm": {"endpoint": "http://127.0.0.1:9/v1", "model": "m", "api_key": "***"}}),
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), 422);
    let body = r.text().unwrap();
    assert!(
        body.contains("analysis.vlm.api_key") && !body.contains("sk-secret"),
        "{body}"
    );
    vlm.stop();
}

fn common_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn summaries_come_on_their_schedule() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let vlm = runtime.block_on(VlmServer::start(320, PROMPT));
    let config = format!(
        "[[camera]]\nid = \"cam\"\nsource = \"testsrc://?size=640x360&fps=25\"\n\
         [camera.analysis.vlm]\nendpoint = \"{}\"\nmodel = \"m\"\nprompt = \"{PROMPT}\"\ninterval = \"1s\"\nimage_width = 320\n\
         [camera.analysis.summary]\nevery = \"10s\"\nprompt = \"Sum up the log.\"\n",
        vlm.url
    );
    let path = common::write_config("summary-every", &config);
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    let mut summaries = Vec::new();
    wait_until(Duration::from_secs(30), "a scheduled summary", || {
        summaries = server
            .get_json("/api/events?kind=summary")
            .as_array()
            .unwrap()
            .clone();
        !summaries.is_empty()
    });
    let s = &summaries[0];
    let (since, until) = (
        s["data"]["since"].as_i64().unwrap(),
        s["data"]["until"].as_i64().unwrap(),
    );
    assert_eq!(until - since, 10_000);
    let described = server
        .get_json(&format!(
            "/api/events?kind=vlm&since={since}&until={until}&limit=1000"
        ))
        .as_array()
        .unwrap()
        .len();
    assert!(described >= 1, "{described}");
    assert_eq!(
        s["data"]["text"],
        format!("{described} log lines, 0 of them alerts.")
    );
    let asked = vlm.requests().into_iter().find(|r| r.width == 0).unwrap();
    assert!(asked.prompt.starts_with("Sum up the log."));
    vlm.stop();
}
