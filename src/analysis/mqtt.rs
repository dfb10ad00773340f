//! Events to MQTT (rumqttc), when `[mqtt] url` is set:
//!
//! | topic | payload |
//! |---|---|
//! | `livelens/available` | `online` / `offline` (retained; `offline` is also the last will) |
//! | `livelens/events` | every event as JSON |
//! | `livelens/{camera}/motion` | `ON` / `OFF` (retained) |
//! | `livelens/{camera}/vlm` | the model's text |
//! | `livelens/{camera}/transcript` | transcribed speech |
//!
//! Ownership: [`Mqtt`] owns one task that polls the client's event loop (which reconnects by
//! itself) and forwards events from the store; [`Mqtt::stop`] publishes `offline`, disconnects and
//! awaits it.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, LastWill, MqttOptions, QoS};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::events::{Event, EventStore};
use crate::config::MqttEndpoint;
use crate::resources::spawn_task;

pub const PREFIX: &str = "livelens";

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
        _ => None,
    }
}

impl Mqtt {
    pub fn start(endpoint: &MqttEndpoint, store: Arc<EventStore>) -> Mqtt {
        let client_id = format!("livelens-{}", std::process::id());
        let (client, mut eventloop) = AsyncClient::new(options(endpoint, &client_id), 64);
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let mut events = store.subscribe();
        // For the log: the broker's address, without its credentials.
        let url = format!("mqtt://{}:{}", endpoint.host, endpoint.port);
        let task = spawn_task(async move {
            let available = format!("{PREFIX}/available");
            let mut connected = false;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    polled = eventloop.poll() => match polled {
                        Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                            connected = true;
                            tracing::info!(%url, "MQTT connected");
                            let _ = client.try_publish(&available, QoS::AtLeastOnce, true, "online");
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
