//! WebRTC (WHEP) against real Chromium, and every bad offer.

mod common;

use std::time::{Duration, Instant};

use common::browser::Browser;
use common::{wait_until, RtspCamera, Server};
use reqwest::StatusCode;
use serde_json::{json, Value};

const VP8_ONLY: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\na=rtcp-mux\r\n\
a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
a=setup:actpass\r\na=rtpmap:96 VP8/90000\r\n";

fn error_of(r: reqwest::blocking::Response, status: StatusCode) -> String {
    assert_eq!(r.status(), status);
    let v: Value = r.json().expect("JSON error");
    v["error"].as_str().unwrap().to_string()
}

#[test]
fn bad_offers_get_the_right_4xx() {
    let server = Server::start(&[]);
    server.wait_live("demo", Duration::from_secs(5));
    let post = |ct: &str, body: Vec<u8>| {
        server
            .http
            .post(server.url("/api/cameras/demo/whep"))
            .header("content-type", ct)
            .body(body)
            .send()
            .unwrap()
    };
    assert!(error_of(post("application/sdp", vec![]), StatusCode::BAD_REQUEST).contains("empty"));
    assert!(error_of(
        post("application/sdp", b"hello".to_vec()),
        StatusCode::BAD_REQUEST
    )
    .contains("not SDP"));
    let msg = error_of(
        post("application/sdp", VP8_ONLY.as_bytes().to_vec()),
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    assert!(msg.contains("VP8") && msg.contains("H264"), "{msg}");
    assert!(error_of(
        post("application/json", VP8_ONLY.as_bytes().to_vec()),
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    )
    .contains("application/sdp"));
    let huge = vec![b'a'; 1 << 20];
    assert_eq!(
        post("application/sdp", huge).status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let r = server
        .http
        .post(server.url("/api/cameras/nope/whep"))
        .header("content-type", "application/sdp")
        .body(VP8_ONLY)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = server
        .http
        .delete(server.url("/api/cameras/demo/whep/nosuch"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = server
        .http
        .request(
            reqwest::Method::OPTIONS,
            server.url("/api/cameras/demo/whep"),
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(r.headers()["allow"].to_str().unwrap().contains("POST"));
    assert_eq!(server.resources()["peer_connections"], 0);
    // Last: the server closes the connection after refusing a 1 MiB body.
    let huge = vec![b'a'; 1 << 20];
    assert_eq!(post("application/sdp", huge).status(), StatusCode::PAYLOAD_TOO_LARGE);
}

/// A WHEP client in the page: offer → answer, frames counted from getStats.
const WHEP_CLIENT: &str = "
  window.whep = async (id) => {
    const pc = new RTCPeerConnection();
    pc.addTransceiver('video', {direction: 'recvonly'});
    const v = document.createElement('video');
    v.muted = true; v.autoplay = true; v.playsInline = true; document.body.append(v);
    pc.ontrack = (ev) => { v.srcObject = ev.streams[0] || new MediaStream([ev.track]); v.play().catch(() => {}); };
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    const r = await fetch(`/api/cameras/${id}/whep`, {method: 'POST', headers: {'content-type': 'application/sdp'}, body: offer.sdp});
    if (r.status !== 201) throw new Error(`WHEP ${r.status}: ${await r.text()}`);
    const location = r.headers.get('location');
    await pc.setRemoteDescription({type: 'answer', sdp: await r.text()});
    const state = {pc, v, location, started: performance.now(), firstFrameMs: null};
    const onFrame = () => { if (state.firstFrameMs === null) state.firstFrameMs = performance.now() - state.started; v.requestVideoFrameCallback(onFrame); };
    v.requestVideoFrameCallback(onFrame);
    return state;
  };
  window.framesDecoded = async (pc) => {
    let n = 0;
    (await pc.getStats()).forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video') n = s.framesDecoded || 0; });
    return n;
  };";

#[test]
fn chromium_plays_the_demo_camera_over_whep() {
    let _serial = common::browser::serial();
    let server = Server::start(&[]);
    server.wait_live("demo", Duration::from_secs(5));
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let browser = Browser::start().await;
        browser.blank_page(&server.base).await;
        browser.run(&format!("{WHEP_CLIENT} const m = await import('/player.js'); window.readTimeStrip = m.readTimeStrip;")).await;
        browser.run("window.s = await window.whep('demo');").await;
        let start = Instant::now();
        loop {
            let n = browser.run("return await window.framesDecoded(window.s.pc);").await.as_u64().unwrap_or(0);
            if n >= 50 {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(15), "only {n} frames decoded; state {}",
                browser.run("return window.s.pc.iceConnectionState + '/' + window.s.pc.connectionState;").await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let first = browser.run("return window.s.firstFrameMs;").await.as_f64().unwrap();
        eprintln!("WebRTC first frame after {first:.0} ms");
        assert!(first <= 1000.0, "first frame after {first} ms");
        // Latency from the time strip in the decoded picture.
        let mut best = f64::MAX;
        for _ in 0..20 {
            let l = browser
                .run("const c = document.createElement('canvas'); const t = window.readTimeStrip(window.s.v, c); return t === null ? null : Date.now() - t;")
                .await;
            if let Some(ms) = l.as_f64() {
                best = best.min(ms);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!("WebRTC latency (best of 20 samples) {best} ms");
        assert!(best <= 300.0, "latency {best} ms");
        assert_eq!(server.resources()["peer_connections"], 1);
        assert_eq!(server.resources()["viewers"]["webrtc"], 1);
        // WHEP DELETE ends the session at once.
        let status = browser.run("const r = await fetch(window.s.location, {method: 'DELETE'}); window.s.pc.close(); return r.status;").await;
        assert_eq!(status, json!(200));
        wait_until(Duration::from_secs(1), "the peer to be gone", || {
            let r = server.resources();
            r["peer_connections"] == 0 && r["viewers"]["webrtc"] == 0
        });
        browser.close().await;
    });
}

#[test]
fn stopping_a_camera_removes_its_peers_and_rtsp_plays() {
    let _serial = common::browser::serial();
    let cam = RtspCamera::start(&["--size", "640x360", "--profile", "baseline"]);
    let server = Server::start(&[]);
    let r = server.post_json("/api/cameras", &json!({"id": "cam", "source": cam.url()}));
    assert!(r.status().is_success());
    server.wait_live("cam", Duration::from_secs(10));
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let browser = Browser::start().await;
        browser.blank_page(&server.base).await;
        browser.run(WHEP_CLIENT).await;
        browser.run("window.s = await window.whep('cam');").await;
        let start = Instant::now();
        while browser
            .run("return await window.framesDecoded(window.s.pc);")
            .await
            .as_u64()
            .unwrap_or(0)
            < 25
        {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "RTSP camera over WebRTC: no frames"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(server.resources()["peer_connections"], 1);
        let t = Instant::now();
        server.post("/api/cameras/cam/stop");
        assert_eq!(
            server.resources()["peer_connections"],
            0,
            "peer removed with the camera"
        );
        assert!(t.elapsed() < Duration::from_secs(1));
        browser.close().await;
    });
}
