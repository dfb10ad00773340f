//! Alert rules against the real binary: the model is a loopback server that judges each picture
//! it gets (where testsrc's white box is), so alerts start and end as the picture really
//! changes, and the test checks every alert against the picture it came with; alerts reach a
//! real mosquitto with Home Assistant discovery; rule add/remove cycles leave nothing behind.

mod common;

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
