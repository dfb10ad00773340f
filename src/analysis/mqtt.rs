//! Events to MQTT (rumqttc), when `[mqtt] url` is set:
//!
//! | topic | payload |
//! |---|---|
//! | `livelens/available` | `online` / `offline` (retained; `offline` is also the last will) |
//! | `livelens/events` | every event as JSON |
//! | `livelens/{camera}/motion` | `ON` / `OFF` (retained) |
//! | `livelens/{camera}/vlm` | the model's text |
//! | `livelens/{camera}/transcript` | transcribed speech |
//! | `livelens/{camera}/alert/{name}` | `ON` / `OFF` (retained) |
//! | `livelens/{camera}/snapshot_url` | the camera's snapshot URL (retained, for Home Assistant) |
//! | `homeassistant/…/config` | Home Assistant MQTT discovery (retained; emptied when a camera or rule goes) |
//!
//! Discovery: each camera is a Home Assistant device with a `binary_sensor` for motion and one
//! per alert rule, `sensor`s for its latest description and transcript, and an `image` entity
//! (its snapshot URL); every entity is available while `livelens/available` is `online`. The
//! configs are published on connect and again whenever the cameras or their rules change.
//! Ownership: [`Mqtt`] owns one task that polls the client's event loop (which reconnects by
//! itself) and forwards events from the store; [`Mqtt::stop`] publishes `offline`, disconnects and
//! awaits it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use rumqttc::{AsyncClient, LastWill, MqttOptions, QoS};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::events::{Event, EventStore};
use crate::config::MqttEndpoint;
use crate::resources::spawn_task;

pub const PREFIX: &str = "livelens";
pub const DISCOVERY_PREFIX: &str = "homeassistant";

/// What discovery announces of a camera.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    pub camera: String,
    pub motion: bool,
    pub alerts: Vec<String>,
}

/// The cameras to announce, asked for again every few seconds (the registry is above analysis).
pub type DiscoverySource = Arc<dyn Fn() -> Vec<Discovered> + Send + Sync>;

/// Every retained discovery message (topic → payload) for `cameras`; `base_url` is where
/// livelens serves HTTP (for the snapshot URL).
pub fn discovery(cameras: &[Discovered], base_url: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for c in cameras {
        let id = &c.camera;
        // `-` is allowed in discovery ids: front-door and front_door stay two devices.
        let node = format!("livelens_{id}");
        let device = json!({"identifiers": [node], "name": id, "manufacturer": "livelens", "model": "camera"});
        let mut entity = |component: &str, object: &str, name: &str, extra: serde_json::Value| {
            let mut config = json!({
                "name": name,
                "unique_id": format!("{node}_{object}"),
                "object_id": format!("{node}_{object}"),
                "availability_topic": format!("{PREFIX}/available"),
                "device": device,
            });
            if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
                config.extend(extra.clone());
            }
            out.insert(
                format!("{DISCOVERY_PREFIX}/{component}/{node}/{object}/config"),
                config.to_string(),
            );
        };
        let on_off =
            |topic: String| json!({"state_topic": topic, "payload_on": "ON", "payload_off": "OFF"});
        if c.motion {
            let mut m = on_off(format!("{PREFIX}/{id}/motion"));
            m["device_class"] = json!("motion");
            entity("binary_sensor", "motion", "Motion", m);
        }
        for name in &c.alerts {
            entity(
                "binary_sensor",
                &format!("alert_{name}"),
                &format!("Alert {name}"),
                on_off(format!("{PREFIX}/{id}/alert/{name}")),
            );
        }
        entity(
            "sensor",
            "description",
            "Description",
            json!({"state_topic": format!("{PREFIX}/{id}/vlm"), "icon": "mdi:text-box-outline"}),
        );
        entity(
            "sensor",
            "transcript",
            "Transcript",
            json!({"state_topic": format!("{PREFIX}/{id}/transcript"), "icon": "mdi:microphone"}),
        );
        entity(
            "image",
            "snapshot",
            "Snapshot",
            json!({"url_topic": format!("{PREFIX}/{id}/snapshot_url")}),
        );
        out.insert(
            format!("{PREFIX}/{id}/snapshot_url"),
            format!(
                "{}/api/cameras/{id}/snapshot.jpg",
                base_url.trim_end_matches('/')
            ),
        );
    }
    out
}

pub struct Mqtt {
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

/// Parses `mqtt://host:port` (port 1883 by default) into client options.
pub fn options(endpoint: &MqttEndpoint, client_id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, endpoint.host.clone(), endpoint.port);
    o.set_keep_alive(Duration::from_secs(5));
    o.set_last_will(LastWill::new(
        format!("{PREFIX}/available"),
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    if let Some((user, password)) = endpoint.credentials.clone() {
        o.set_credentials(user, password);
    }
    o
}

/// The topic and payload of an event's per-camera message (besides `livelens/events`).
pub fn camera_message(event: &Event) -> Option<(String, String, bool)> {
    let topic = |leaf: &str| format!("{PREFIX}/{}/{leaf}", event.camera);
    match event.kind.as_str() {
        "motion" => {
            let on = event.data["state"] == "start";
            Some((topic("motion"), if on { "ON" } else { "OFF" }.into(), true))
        }
        "vlm" => Some((
            topic("vlm"),
            event.data["text"].as_str()?.to_string(),
            false,
        )),
        "transcript" => Some((
            topic("transcript"),
            event.data["text"].as_str()?.to_string(),
            false,
        )),
        "alert" => {
            let on = event.data["state"] == "start";
            let name = event.data["name"].as_str()?;
            Some((
                topic(&format!("alert/{name}")),
                if on { "ON" } else { "OFF" }.into(),
                true,
            ))
        }
        _ => None,
    }
}

/// Publishes what changed from `before` to `now` (everything in `now` when `all`), and empties
/// what is gone. Returns what the broker is now known to hold: a message the client's queue
/// could not take stays as it was, so the next check tries it again.
fn announce(
    client: &AsyncClient,
    before: &BTreeMap<String, String>,
    now: &BTreeMap<String, String>,
    all: bool,
) -> BTreeMap<String, String> {
    let mut held = BTreeMap::new();
    for (topic, payload) in before.iter().filter(|(t, _)| !now.contains_key(*t)) {
        if client
            .try_publish(topic, QoS::AtLeastOnce, true, "")
            .is_err()
        {
            held.insert(topic.clone(), payload.clone());
        }
    }
    for (topic, payload) in now {
        let same = !all && before.get(topic) == Some(payload);
        if same
            || client
                .try_publish(topic, QoS::AtLeastOnce, true, payload.clone())
                .is_ok()
        {
            held.insert(topic.clone(), payload.clone());
        } else if let Some(old) = before.get(topic) {
            held.insert(topic.clone(), old.clone());
        }
    }
    held
}

impl Mqtt {
    /// Starts publishing `store`'s events, and discovery for what `cameras` lists (served at
    /// `base_url`).
    pub fn start(
        endpoint: &MqttEndpoint,
        store: Arc<EventStore>,
        cameras: DiscoverySource,
        base_url: String,
    ) -> Mqtt {
        let client_id = format!("livelens-{}", std::process::id());
        let (client, mut eventloop) = AsyncClient::new(options(endpoint, &client_id), 256);
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let mut events = store.subscribe();
        // For the log: the broker's address, without its credentials.
        let url = format!("mqtt://{}:{}", endpoint.host, endpoint.port);
        let task = spawn_task(async move {
            let available = format!("{PREFIX}/available");
            let mut connected = false;
            // `online` waits until the client's queue takes it.
            let mut online_pending = false;
            // What discovery has published (retained), to empty what goes away.
            let mut announced: BTreeMap<String, String> = BTreeMap::new();
            let mut recheck = tokio::time::interval(Duration::from_secs(2));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = recheck.tick(), if connected => {
                        if online_pending {
                            online_pending = client.try_publish(&available, QoS::AtLeastOnce, true, "online").is_err();
                        }
                        let now = discovery(&cameras(), &base_url);
                        if now != announced {
                            announced = announce(&client, &announced, &now, false);
                        }
                    }
                    polled = eventloop.poll() => match polled {
                        Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                            connected = true;
                            tracing::info!(%url, "MQTT connected");
                            online_pending = client.try_publish(&available, QoS::AtLeastOnce, true, "online").is_err();
                            // A new session: everything again (the broker may have lost it),
                            // and what went away meanwhile emptied.
                            let now = discovery(&cameras(), &base_url);
                            announced = announce(&client, &announced, &now, true);
                        }
                        Ok(_) => {}
                        Err(e) => {
                            if connected {
                                tracing::warn!(%url, "MQTT connection lost: {e}");
                            }
                            connected = false;
                            // rumqttc reconnects on the next poll; don't spin while it can't.
                            tokio::select! {
                                _ = stop.cancelled() => break,
                                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            }
                        }
                    },
                    event = events.recv() => match event {
                        // While the broker is away the client's queue would only fill up
                        // (and crowd out `online` and discovery at reconnection).
                        Ok(_) if !connected => {}
                        Ok(event) => {
                            // try_publish: a broker that is away must not stall analysis; the
                            // client's queue is bounded and overflow drops the message.
                            if let Ok(json) = serde_json::to_string(&*event) {
                                let _ = client.try_publish(format!("{PREFIX}/events"), QoS::AtLeastOnce, false, json);
                            }
                            if let Some((topic, payload, retain)) = camera_message(&event) {
                                let _ = client.try_publish(topic, QoS::AtLeastOnce, retain, payload);
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!("MQTT fell behind; {n} events not published");
                        }
                        Err(_) => break,
                    },
                }
            }
            // A clean goodbye: `offline`, then DISCONNECT, driven through the event loop.
            if connected {
                let _ = client.try_publish(&available, QoS::AtLeastOnce, true, "offline");
                let _ = client.try_disconnect();
                let drain = async {
                    while let Ok(event) = eventloop.poll().await {
                        if matches!(
                            event,
                            rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)
                        ) {
                            break;
                        }
                    }
                };
                let _ = tokio::time::timeout(Duration::from_millis(500), drain).await;
            }
        });
        Mqtt {
            cancel,
            task: Some(task),
        }
    }

    pub async fn stop(&mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(kind: &str, data: serde_json::Value) -> Event {
        Event {
            id: 1,
            camera: "front".into(),
            kind: kind.into(),
            time_ms: 0,
            data,
            has_snapshot: false,
        }
    }

    #[test]
    fn topics_per_event_kind() {
        assert_eq!(
            camera_message(&event("motion", json!({"state": "start"}))),
            Some(("livelens/front/motion".into(), "ON".into(), true))
        );
        assert_eq!(
            camera_message(&event("motion", json!({"state": "end"})))
                .unwrap()
                .1,
            "OFF"
        );
        assert_eq!(
            camera_message(&event("vlm", json!({"text": "a cat"}))),
            Some(("livelens/front/vlm".into(), "a cat".into(), false))
        );
        assert_eq!(camera_message(&event("analysis_error", json!({}))), None);
        assert_eq!(
            camera_message(&event("alert", json!({"name": "person", "state": "start"}))),
            Some(("livelens/front/alert/person".into(), "ON".into(), true))
        );
    }

    #[test]
    fn discovery_announces_each_camera_as_a_device_with_its_entities() {
        let cams = vec![Discovered {
            camera: "front-door".into(),
            motion: true,
            alerts: vec!["person".into()],
        }];
        let d = discovery(&cams, "http://127.0.0.1:8080/");
        let motion: serde_json::Value = serde_json::from_str(
            &d["homeassistant/binary_sensor/livelens_front-door/motion/config"],
        )
        .unwrap();
        assert_eq!(motion["state_topic"], "livelens/front-door/motion");
        assert_eq!(motion["device_class"], "motion");
        assert_eq!(motion["availability_topic"], "livelens/available");
        assert_eq!(motion["device"]["identifiers"][0], "livelens_front-door");
        assert!(
            d.contains_key("homeassistant/binary_sensor/livelens_front-door/alert_person/config")
        );
        assert!(d.contains_key("homeassistant/sensor/livelens_front-door/description/config"));
        assert!(d.contains_key("homeassistant/image/livelens_front-door/snapshot/config"));
        assert_eq!(
            d["livelens/front-door/snapshot_url"],
            "http://127.0.0.1:8080/api/cameras/front-door/snapshot.jpg"
        );
        assert_eq!(d.len(), 6);
    }

    #[test]
    fn options_carry_the_endpoint_and_its_credentials() {
        let endpoint = crate::config::mqtt_endpoint("mqtt://u:p@127.0.0.1:1884").unwrap();
        let o = options(&endpoint, "x");
        assert_eq!(o.broker_address(), ("127.0.0.1".to_string(), 1884));
        let login = o.credentials().expect("credentials");
        assert_eq!(
            (login.username.as_str(), login.password.as_str()),
            ("u", "p")
        );
        assert!(crate::config::mqtt_endpoint("http://x")
            .unwrap_err()
            .contains("mqtt://"));
    }
}
