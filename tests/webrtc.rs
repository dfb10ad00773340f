//! WebRTC (WHEP) against real Chromium, and every bad offer.

use crate::common;

use std::time::{Duration, Instant};

use common::browser::Browser;
use common::{RtspCamera, Server};
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
    // A fresh connection per request: the server may close one after refusing a body it did not
    // read (415, 413), and a pooled connection would then fail the next request.
    let http = reqwest::blocking::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let post = |ct: &str, body: Vec<u8>| {
        http.post(server.url("/api/cameras/demo/whep"))
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
    let r = http
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
    assert_eq!(
        post("application/sdp", huge).status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
}

/// A WHEP client in the page: offer → answer, frames counted from getStats.
const WHEP_CLIENT: &str = "
  window.whep = async (id, audio) => {
    const pc = new RTCPeerConnection();
    pc.addTransceiver('video', {direction: 'recvonly'});
    if (audio) pc.addTransceiver('audio', {direction: 'recvonly'});
    const v = document.createElement('video');
    // Unmuted when there is audio: Chromium measures audioLevel on audio it plays out.
    v.muted = !audio; v.autoplay = true; v.playsInline = true; document.body.append(v);
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
  window.audioPackets = async (pc) => {
    let n = 0;
    (await pc.getStats()).forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'audio') n = s.packetsReceived || 0; });
    return n;
  };
  window.audioStats = async (pc) => {
    let a = {samples: 0, level: 0};
    (await pc.getStats()).forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'audio') a = {samples: s.totalSamplesReceived || 0, level: s.audioLevel || 0}; });
    return a;
  };
  // The loudest frequency of the received audio, through WebAudio (what a listener hears).
  window.audioPeakHz = async (pc) => {
    const track = pc.getReceivers().map((r) => r.track).find((t) => t.kind === 'audio');
    const ctx = new AudioContext();
    await ctx.resume();
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 8192;
    ctx.createMediaStreamSource(new MediaStream([track])).connect(analyser);
    await new Promise((r) => setTimeout(r, 500));
    const bins = new Float32Array(analyser.frequencyBinCount);
    analyser.getFloatFrequencyData(bins);
    let best = 0;
    for (let i = 1; i < bins.length; i++) if (bins[i] > bins[best]) best = i;
    await ctx.close();
    return best * ctx.sampleRate / analyser.fftSize;
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
        let r = server.resources_async().await;
        assert_eq!((r["peer_connections"].as_i64(), r["viewers"]["webrtc"].as_i64()), (Some(1), Some(1)));
        // WHEP DELETE ends the session at once.
        let status = browser.run("const r = await fetch(window.s.location, {method: 'DELETE'}); window.s.pc.close(); return r.status;").await;
        assert_eq!(status, json!(200));
        server
            .resources_until(Duration::from_secs(1), "the peer to be gone", |r| {
                r["peer_connections"] == 0 && r["viewers"]["webrtc"] == 0
            })
            .await;
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
        assert_eq!(server.resources_async().await["peer_connections"], 1);
        let t = Instant::now();
        reqwest::Client::new()
            .post(server.url("/api/cameras/cam/stop"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            server.resources_async().await["peer_connections"],
            0,
            "peer removed with the camera"
        );
        assert!(t.elapsed() < Duration::from_secs(1));
        browser.close().await;
    });
}

#[test]
fn the_player_plays_over_webrtc_with_low_latency() {
    let _serial = common::browser::serial();
    let server = Server::start(&[]);
    server.wait_live("demo", Duration::from_secs(5));
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let browser = Browser::start().await;
        browser.blank_page(&server.base).await;
        browser
            .run(&format!(
                "{WHEP_CLIENT} await import('/player.js');
                 const p = document.createElement('livelens-player');
                 p.setAttribute('mode', 'webrtc'); p.setAttribute('src', 'demo');
                 p.style.width = '640px'; document.body.append(p); window.p = p;"
            ))
            .await;
        browser.until( Duration::from_secs(10), "50 decoded frames",
            "return window.p.session && window.p.session.pc && await window.framesDecoded(window.p.session.pc) >= 50;").await;
        browser.until( Duration::from_secs(5), "latency under 300 ms",
            "const l = window.p.stats.latency; return l !== null && l >= 0 && l <= 0.3;").await;
        let stats = browser.run("return window.p.stats;").await;
        eprintln!("player stats over WebRTC: {stats}");
        assert_eq!(stats["mode"], "webrtc");
        assert!(stats["firstFrameMs"].as_f64().unwrap() <= 1000.0, "{stats}");
        browser.run("window.p.remove();").await;
        server
            .resources_until(Duration::from_secs(1), "the peer to be gone (WHEP DELETE)", |r| {
                r["peer_connections"] == 0
            })
            .await;
        browser.close().await;
    });
}

#[test]
fn the_player_falls_back_to_mse_when_webrtc_cannot_connect() {
    let _serial = common::browser::serial();
    // UDP blocked: the server drops every incoming datagram (its fault-injection hook).
    let server = Server::start_with_env(&[], &[("LIVELENS_TEST_DROP_WEBRTC_INPUT", "1")]);
    server.wait_live("demo", Duration::from_secs(5));
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let browser = Browser::start().await;
        browser.blank_page(&server.base).await;
        browser
            .run(
                "await import('/player.js');
                 const p = document.createElement('livelens-player');
                 p.setAttribute('mode', 'webrtc,mse'); p.setAttribute('src', 'demo');
                 document.body.append(p); window.p = p;",
            )
            .await;
        browser
            .until(
                Duration::from_secs(15),
                "MSE frames after the fallback",
                "return window.p.stats.mode === 'mse' && window.p.stats.frames >= 25;",
            )
            .await;
        server
            .resources_until(Duration::from_secs(2), "the failed peer to be gone", |r| {
                r["peer_connections"] == 0
            })
            .await;
        browser.close().await;
    });
}

#[test]
fn two_hundred_webrtc_switches_leave_one_peer_at_most() {
    let _serial = common::browser::serial();
    let server = Server::start(&[]);
    let r = server.post_json(
        "/api/cameras",
        &json!({"id": "small", "source": "testsrc://?size=320x240&fps=25&gop=25"}),
    );
    assert!(r.status().is_success());
    server.wait_live("demo", Duration::from_secs(5));
    server.wait_live("small", Duration::from_secs(5));
    let baseline = server.resources();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let browser = Browser::start().await;
        browser.blank_page(&server.base).await;
        browser
            .run(
                "const Native = window.RTCPeerConnection; window.pcs = new Set();
                 window.RTCPeerConnection = class extends Native {
                   constructor(...a) { super(...a); window.pcs.add(this); }
                   close() { window.pcs.delete(this); return super.close(); }
                 };
                 await import('/player.js');
                 const p = document.createElement('livelens-player');
                 p.setAttribute('mode', 'webrtc'); p.setAttribute('src', 'demo');
                 document.body.append(p); window.p = p;",
            )
            .await;
        browser
            .until(
                Duration::from_secs(10),
                "first frames",
                "return window.p.stats.frames >= 5;",
            )
            .await;
        for i in 0..200 {
            let id = if i % 2 == 0 { "small" } else { "demo" };
            let alive = browser
                .run(&format!(
                    "window.p.setAttribute('src', '{id}'); return window.pcs.size;"
                ))
                .await;
            assert!(
                alive.as_u64().unwrap() <= 1,
                "switch {i}: {alive} peer connections alive in the page"
            );
            if i % 25 == 0 {
                browser
                    .until(
                        Duration::from_secs(10),
                        "frames after a switch",
                        "return window.p.stats.frames >= 3;",
                    )
                    .await;
            }
            server
                .resources_until(
                    Duration::from_secs(3),
                    "at most one peer on the server",
                    |r| r["peer_connections"].as_i64().unwrap() <= 1,
                )
                .await;
        }
        browser.run("window.p.remove();").await;
        assert_eq!(browser.run("return window.pcs.size;").await, json!(0));
        server
            .resources_until(Duration::from_secs(3), "counts back at baseline", |r| {
                r["peer_connections"] == baseline["peer_connections"]
                    && r["viewers"] == baseline["viewers"]
                    && r["tasks"] == baseline["tasks"]
            })
            .await;
        browser.close().await;
    });
}

#[test]
fn audio_reaches_chromium_from_opus_pcma_and_aac_cameras() {
    let _serial = common::browser::serial();
    let opus = RtspCamera::start(&["--size", "320x240", "--audio", "opus"]);
    let pcma = RtspCamera::start(&["--size", "320x240", "--audio", "pcma"]);
    let aac = RtspCamera::start(&["--size", "320x240", "--audio", "aac"]);
    let server = Server::start(&[]);
    for (id, cam) in [("opus", &opus), ("pcma", &pcma), ("aac", &aac)] {
        let r = server.post_json("/api/cameras", &json!({"id": id, "source": cam.url()}));
        assert!(r.status().is_success());
        server.wait_live(id, Duration::from_secs(10));
    }
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let browser = Browser::start().await;
        browser.blank_page(&server.base).await;
        browser.run(WHEP_CLIENT).await;
        for id in ["opus", "pcma", "aac"] {
            browser
                .run(&format!("window.s = await window.whep('{id}', true);"))
                .await;
            let start = Instant::now();
            loop {
                let audio = browser
                    .run("return await window.audioPackets(window.s.pc);")
                    .await
                    .as_u64()
                    .unwrap_or(0);
                let video = browser
                    .run("return await window.framesDecoded(window.s.pc);")
                    .await
                    .as_u64()
                    .unwrap_or(0);
                if audio >= 25 && video >= 10 {
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(15),
                    "{id}: {audio} audio packets, {video} frames"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // The browser decodes sound, not silence: samples keep arriving and the level of the
            // fixture's 440 Hz tone (volume 0.3) shows.
            let stats = || async {
                let s = browser
                    .run("return await window.audioStats(window.s.pc);")
                    .await;
                (
                    s["samples"].as_f64().unwrap_or(0.0),
                    s["level"].as_f64().unwrap_or(0.0),
                )
            };
            let (samples_before, _) = stats().await;
            let start = Instant::now();
            loop {
                let (samples, level) = stats().await;
                if samples >= samples_before + 24_000.0 && level > 0.05 {
                    eprintln!("{id}: audioLevel {level:.3}, {samples} samples received");
                    assert!(level < 0.5, "{id}: audioLevel {level} for a 0.3 tone");
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "{id}: totalSamplesReceived {samples_before} -> {samples}, audioLevel {level}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // What plays is the fixture's tone (a wrong decode, or AAC sent as Opus, is not).
            let hz = browser
                .run("return await window.audioPeakHz(window.s.pc);")
                .await
                .as_f64()
                .unwrap_or(0.0);
            eprintln!("{id}: loudest frequency {hz:.1} Hz");
            assert!(
                (425.0..455.0).contains(&hz),
                "{id}: loudest frequency {hz:.1} Hz"
            );
            // Only the AAC camera needs a transcoder, and only while it has a viewer.
            let transcoders = server.resources()["transcoders"].as_i64().unwrap();
            assert_eq!(transcoders, (id == "aac") as i64, "{id}");
            browser
                .run("await fetch(window.s.location, {method: 'DELETE'}); window.s.pc.close();")
                .await;
            server
                .resources_until(Duration::from_secs(3), "no transcoder left", |r| {
                    r["transcoders"] == 0 && r["viewers"]["transcoder"] == 0
                })
                .await;
        }
        browser.close().await;
    });
}

#[test]
fn go2rtc_webrtc_offer_over_the_websocket() {
    let _serial = common::browser::serial();
    let server = Server::start(&[]);
    server.wait_live("demo", Duration::from_secs(5));
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let browser = Browser::start().await;
        browser.blank_page(&server.base).await;
        // As go2rtc's video-rtc.js signals: offer and candidates over /api/ws, answer back.
        browser
            .run(&format!(
                "{WHEP_CLIENT}
                 const pc = new RTCPeerConnection();
                 pc.addTransceiver('video', {{direction: 'recvonly'}});
                 const v = document.createElement('video'); v.muted = true; document.body.append(v);
                 pc.ontrack = (ev) => {{ v.srcObject = new MediaStream([ev.track]); v.play().catch(() => {{}}); }};
                 const ws = new WebSocket(`ws://${{location.host}}/api/ws?src=demo`);
                 await new Promise((ok) => ws.onopen = ok);
                 pc.onicecandidate = (ev) => {{ if (ev.candidate) ws.send(JSON.stringify({{type: 'webrtc/candidate', value: ev.candidate.candidate}})); }};
                 ws.onmessage = async (ev) => {{
                   const msg = JSON.parse(ev.data);
                   if (msg.type === 'webrtc/answer') await pc.setRemoteDescription({{type: 'answer', sdp: msg.value}});
                 }};
                 const offer = await pc.createOffer();
                 await pc.setLocalDescription(offer);
                 ws.send(JSON.stringify({{type: 'webrtc/offer', value: offer.sdp}}));
                 window.g = {{pc, ws}};"
            ))
            .await;
        let start = Instant::now();
        while browser.run("return await window.framesDecoded(window.g.pc);").await.as_u64().unwrap_or(0) < 25 {
            assert!(start.elapsed() < Duration::from_secs(15), "no frames over go2rtc signalling");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(server.resources_async().await["peer_connections"], 1);
        // Closing the signalling socket ends the session.
        browser.run("window.g.ws.close();").await;
        server
            .resources_until(Duration::from_secs(2), "the peer to end with its socket", |r| {
                r["peer_connections"] == 0
            })
            .await;
        browser.close().await;
    });
}

#[test]
fn a_str0m_client_receives_decodable_h264_and_h265_over_whep() {
    use livelens::media::h264;
    use openh264::formats::YUVSource;
    let hevc = RtspCamera::start(&["--codec", "h265", "--size", "320x240", "--gop", "10"]);
    let server = Server::start(&[]);
    server.wait_live("demo", Duration::from_secs(5));
    let r = server.post_json("/api/cameras", &json!({"id": "hevc", "source": hevc.url()}));
    assert!(r.status().is_success());
    server.wait_live("hevc", Duration::from_secs(10));
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        // H.264 from the demo camera decodes with openh264 at the camera's size.
        let url = server.url("/api/cameras/demo/whep");
        let frames = common::whep::receive(&url, "h264", 30, Duration::from_secs(10))
            .await
            .unwrap();
        let first = h264::split_annex_b(&frames[0]);
        assert!(
            first.iter().any(|n| h264::nal_type(n) == h264::NAL_SPS),
            "first frame starts with SPS"
        );
        let mut decoder = openh264::decoder::Decoder::new().unwrap();
        let mut decoded = 0;
        for f in &frames {
            if let Ok(Some(pic)) = decoder.decode(f) {
                assert_eq!(pic.dimensions(), (1280, 720));
                decoded += 1;
            }
        }
        assert!(
            decoded >= 25,
            "{decoded} of {} frames decoded",
            frames.len()
        );
        // H.265 is sent to a client that offers it, starting with VPS/SPS/PPS and a keyframe.
        let url = server.url("/api/cameras/hevc/whep");
        let frames = common::whep::receive(&url, "h265", 10, Duration::from_secs(10))
            .await
            .unwrap();
        // (str0m may hand the parameter sets and the slices over as separate units.)
        let types: Vec<u8> = frames[..3]
            .iter()
            .flat_map(|f| {
                h264::split_annex_b(f)
                    .into_iter()
                    .map(|n| (n[0] >> 1) & 0x3f)
                    .collect::<Vec<_>>()
            })
            .collect();
        let irap = types
            .iter()
            .position(|t| (16..=21).contains(t))
            .unwrap_or_else(|| panic!("no keyframe in {types:?}"));
        let sets = &types[..irap];
        assert!(
            sets.contains(&32) && sets.contains(&33) && sets.contains(&34),
            "{types:?}"
        );
        // A client offering only H.264 for an H.265 camera is told why.
        let err = common::whep::receive(&url, "h264", 1, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(err.contains("422") && err.contains("H265"), "{err}");
    });
}

#[test]
fn go2rtc_webrtc_post_and_abandoned_peers_are_removed() {
    use str0m::media::{Direction, MediaKind};
    let server = Server::start(&[]);
    server.wait_live("demo", Duration::from_secs(5));
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        // go2rtc's JSON form: {type:"offer", sdp} in, {type:"answer", sdp} out.
        str0m::crypto::from_feature_flags().install_process_default();
        let mut rtc = str0m::Rtc::builder()
            .clear_codecs()
            .enable_h264(true)
            .build(Instant::now());
        let mut api = rtc.sdp_api();
        api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        let (offer, _pending) = api.apply().unwrap();
        let answer: Value = reqwest::Client::new()
            .post(server.url("/api/webrtc?src=demo"))
            .json(&json!({"type": "offer", "sdp": offer.to_sdp_string()}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(answer["type"], "answer");
        assert!(answer["sdp"].as_str().unwrap().starts_with("v=0"));
        // A peer that never connects is removed.
        server
            .resources_until(Duration::from_secs(15), "the unconnected peer to go", |r| {
                r["peer_connections"] == 0
            })
            .await;
        // A viewer that vanishes (no DELETE, no more packets) is removed once ICE gives up.
        let url = server.url("/api/cameras/demo/whep");
        common::whep::receive(&url, "h264", 10, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(server.resources_async().await["peer_connections"], 1);
        server
            .resources_until(Duration::from_secs(40), "the vanished peer to go", |r| {
                r["peer_connections"] == 0 && r["viewers"]["webrtc"] == 0
            })
            .await;
    });
}

/// Zero crossings per second / 2: the frequency of a clean tone.
fn tone_hz(pcm: &[f32], rate: f64) -> f64 {
    let crossings = pcm
        .windows(2)
        .filter(|w| (w[0] >= 0.0) != (w[1] >= 0.0))
        .count() as f64;
    crossings / 2.0 / (pcm.len() as f64 / rate)
}

/// A WHEP viewer offering only Opus receives (50 packets of) the fixture's 440 Hz tone; the
/// session is deleted after.
async fn opus_viewer_hears_the_tone(url: &str, http: &reqwest::Client) {
    use common::whep::{session, Wanted};
    let want = Wanted {
        video: 1,
        audio: Some(50),
    };
    let one = session(url, "h264", want, Duration::from_secs(10))
        .await
        .unwrap();
    let mut decoder = livelens::media::opus::Decoder::new().unwrap();
    let mut pcm = Vec::new();
    for p in &one.audio {
        decoder.decode(p, &mut pcm).unwrap();
    }
    let steady = &pcm[pcm.len() / 2..];
    let hz = tone_hz(steady, 48_000.0);
    let peak = steady.iter().fold(0.0f32, |m, s| m.max(s.abs()));
    assert!((425.0..455.0).contains(&hz), "decoded tone at {hz:.1} Hz");
    assert!(peak > 0.1, "decoded peak {peak}");
    let status = http.delete(&one.location).send().await.unwrap().status();
    assert_eq!(status, StatusCode::OK);
}

#[test]
fn a_g711_camera_reaches_an_opus_only_viewer_through_the_transcoder() {
    let pcmu = RtspCamera::start(&["--size", "320x240", "--audio", "pcmu"]);
    let server = Server::start(&[]);
    let r = server.post_json("/api/cameras", &json!({"id": "pcmu", "source": pcmu.url()}));
    assert!(r.status().is_success());
    server.wait_live("pcmu", Duration::from_secs(10));
    let url = server.url("/api/cameras/pcmu/whep");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        opus_viewer_hears_the_tone(&url, &reqwest::Client::new()).await;
    });
    // The transcoder ends on the worker loop's next turn after the DELETE.
    common::wait_until(Duration::from_secs(1), "the transcoder to stop", || {
        server.resources()["transcoders"] == 0
    });
}

#[test]
fn aac_viewers_share_one_transcoder_and_200_viewer_cycles_leave_nothing() {
    use common::whep::{session, Wanted};
    let aac = RtspCamera::start(&["--size", "320x240", "--audio", "aac"]);
    let server = Server::start(&[]);
    let r = server.post_json("/api/cameras", &json!({"id": "aac", "source": aac.url()}));
    assert!(r.status().is_success());
    server.wait_live("aac", Duration::from_secs(10));
    let baseline = server.resources();
    assert_eq!(baseline["transcoders"], 0);
    let url = server.url("/api/cameras/aac/whep");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let http = reqwest::Client::new();
        // The Opus a viewer receives is the camera's 440 Hz tone.
        opus_viewer_hears_the_tone(&url, &http).await;
        // The transcoder ends on the worker loop's next turn after the DELETE.
        server
            .resources_until(Duration::from_secs(1), "the transcoder to stop", |r| {
                r["transcoders"] == 0
            })
            .await;

        let started = Instant::now();
        for cycle in 0..200 {
            let want = || Wanted {
                video: 1,
                audio: Some(3),
            };
            let (a, b) = tokio::join!(
                session(&url, "h264", want(), Duration::from_secs(10)),
                session(&url, "h264", want(), Duration::from_secs(10)),
            );
            let (a, b) = (a.unwrap(), b.unwrap());
            let r = server.resources();
            assert_eq!(r["peer_connections"], 2, "cycle {cycle}");
            assert_eq!(
                r["transcoders"], 1,
                "cycle {cycle}: two viewers, one transcoder"
            );
            assert_eq!(r["viewers"]["transcoder"], 1, "cycle {cycle}");
            for s in [&a, &b] {
                let status = http.delete(&s.location).send().await.unwrap().status();
                assert_eq!(status, StatusCode::OK, "cycle {cycle}");
            }
            // DELETE returns once the peer is gone; its feed and the unused transcoder end
            // on the worker loop's next turn (the loop never waits for them).
            assert_eq!(server.resources()["peer_connections"], 0, "cycle {cycle}");
            server
                .resources_until(
                    Duration::from_secs(1),
                    "the unused transcoder to stop",
                    |r| r["transcoders"] == 0 && r["viewers"]["webrtc"] == 0,
                )
                .await;
        }
        eprintln!(
            "200 cycles of two AAC WebRTC viewers in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    });
    // The test's HTTP clients are gone; the server closes their sockets as it notices.
    let keys = [
        "peer_connections",
        "transcoders",
        "tasks",
        "viewers",
        "open_fds",
    ];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let after = server.resources();
        if keys.iter().all(|k| after[k] == baseline[k]) {
            break;
        }
        if Instant::now() > deadline {
            for key in keys {
                assert_eq!(after[key], baseline[key], "{key}");
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The deadlock that froze every peer: viewers leaving all at once while frames of a realistic
/// camera (a 720p25 clip at 2 Mb/s, so the WebRTC loops have real work) keep coming. 200
/// in-process viewers receive; then half are DELETEd at once and the other half vanish and their
/// camera is stopped. Every count is back within 2 s, and a new viewer plays.
#[test]
fn two_hundred_viewers_removed_at_once_drain_and_a_new_viewer_plays() {
    const VIEWERS: usize = 200;
    common::require("ffmpeg", "ffmpeg");
    let clip = common::temp_dir("webrtc-load").join("clip.mp4");
    let made = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i"])
        // 640x360 at 800 kb/s: this test counts peers, not bits (the bench pushes 2 Mb/s), and
        // its own 200 receivers share the 2 cores with livelens.
        .arg("testsrc2=size=640x360:rate=25")
        .args([
            "-vf",
            "noise=alls=12:allf=t",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ])
        .args([
            "-profile:v",
            "main",
            "-b:v",
            "800k",
            "-g",
            "50",
            "-bf",
            "0",
            "-t",
            "4",
            "-y",
        ])
        .arg(&clip)
        .status()
        .expect("ffmpeg (Debian package ffmpeg)");
    assert!(made.success(), "ffmpeg could not make the test clip");
    let server = Server::start(&[]);
    let r = server.post_json(
        "/api/cameras",
        &json!({"id": "clip", "source": format!("file://{}", clip.display())}),
    );
    assert!(r.status().is_success());
    server.wait_live("clip", Duration::from_secs(10));
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let baseline = server.resources_async().await;
        let url = server.url("/api/cameras/clip/whep");
        let viewers = common::whep::live_viewers(&url, VIEWERS, 5, Duration::from_secs(30)).await;
        assert_eq!(server.resources_async().await["peer_connections"], VIEWERS);

        let (deleted, vanishing) = {
            let mut v = viewers;
            let rest = v.split_off(VIEWERS / 2);
            (v, rest)
        };
        // Half leave by DELETE, all at once, while they (and the rest) keep receiving.
        let http = reqwest::Client::new();
        let started = Instant::now();
        let statuses =
            futures_util::future::join_all(deleted.iter().map(|v| http.delete(&v.location).send()))
                .await;
        for s in statuses {
            assert_eq!(s.expect("DELETE answered").status(), 200);
        }
        server
            .resources_until(Duration::from_secs(2), "the deleted peers to go", |r| {
                r["peer_connections"] == VIEWERS / 2
            })
            .await;
        // The other half vanish without a word, and their camera stops: nothing waits on them.
        futures_util::future::join_all(vanishing.into_iter().map(|v| v.vanish())).await;
        let stop = http
            .post(server.url("/api/cameras/clip/stop"))
            .send()
            .await
            .unwrap();
        assert_eq!(stop.status(), 200);
        server
            .resources_until(Duration::from_secs(2), "every peer and viewer gone", |r| {
                r["peer_connections"] == 0 && r["viewers"]["webrtc"] == 0
            })
            .await;
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
        for v in deleted {
            v.vanish().await;
        }
        // A new viewer plays.
        let start = http
            .post(server.url("/api/cameras/clip/start"))
            .send()
            .await
            .unwrap();
        assert_eq!(start.status(), 200);
        server.wait_live("clip", Duration::from_secs(10));
        let new = common::whep::LiveViewer::start(&url).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while new.frames() < 10 {
            assert!(
                Instant::now() < deadline,
                "the new viewer got {} frames",
                new.frames()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            http.delete(&new.location).send().await.unwrap().status(),
            200
        );
        new.vanish().await;
        server
            .resources_until(
                Duration::from_secs(2),
                "every count back to baseline",
                |r| {
                    r["peer_connections"] == 0
                        && r["viewers"] == baseline["viewers"]
                        && r["tasks"] == baseline["tasks"]
                        && r["transcoders"] == baseline["transcoders"]
                },
            )
            .await;
    });
}

/// A browser that closes its peer connection without a DELETE (DTLS close_notify), and a tab that
/// navigates away from a playing `<livelens-player>` (its `pagehide` DELETE), free the peer in
/// under 2 s, not when ICE gives up.
#[test]
fn a_closed_peer_connection_or_tab_frees_its_peer_within_two_seconds() {
    let _serial = common::browser::serial();
    let server = Server::start(&[]);
    server.wait_live("demo", Duration::from_secs(5));
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let browser = Browser::start().await;
        browser.blank_page(&server.base).await;
        browser.run(WHEP_CLIENT).await;
        browser.run("window.s = await window.whep('demo');").await;
        browser
            .until(Duration::from_secs(10), "10 decoded frames",
                "return await window.framesDecoded(window.s.pc) >= 10;")
            .await;
        assert_eq!(server.resources_async().await["peer_connections"], 1);
        browser.run("window.s.pc.close();").await;
        let closed = Instant::now();
        server
            .resources_until(Duration::from_secs(2), "the closed peer to go", |r| {
                r["peer_connections"] == 0 && r["viewers"]["webrtc"] == 0
            })
            .await;
        eprintln!("peer freed {:?} after pc.close()", closed.elapsed());

        browser
            .run(&format!(
                "{WHEP_CLIENT} await import('/player.js');
                 const p = document.createElement('livelens-player');
                 p.setAttribute('mode', 'webrtc'); p.setAttribute('src', 'demo');
                 document.body.append(p); window.p = p;"
            ))
            .await;
        browser
            .until(Duration::from_secs(10), "the player to decode 10 frames",
                "return window.p.session && window.p.session.pc && await window.framesDecoded(window.p.session.pc) >= 10;")
            .await;
        assert_eq!(server.resources_async().await["peer_connections"], 1);
        // Leaving the page: no script of ours runs but the player's pagehide handler.
        browser.goto(&server.url("/healthz")).await;
        let left = Instant::now();
        server
            .resources_until(Duration::from_secs(2), "the left page's peer to go", |r| {
                r["peer_connections"] == 0 && r["viewers"]["webrtc"] == 0
            })
            .await;
        eprintln!("peer freed {:?} after the tab left the page", left.elapsed());
        browser.close().await;
    });
}

/// An H.264 receive-only offer from a str0m peer that is then dropped, and its ICE ufrag.
fn offer_and_ufrag() -> (String, String) {
    use str0m::media::{Direction, MediaKind};
    str0m::crypto::from_feature_flags().install_process_default();
    let mut rtc = str0m::Rtc::builder()
        .clear_codecs()
        .enable_h264(true)
        .build(Instant::now());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, _pending) = api.apply().expect("an offer");
    let sdp = offer.to_sdp_string();
    let ufrag = sdp
        .lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
        .expect("ufrag")
        .to_string();
    (sdp, ufrag)
}

/// WHEP/WHIP PATCH (RFC 9725 §4.3): trickled candidates for a known session are applied (204);
/// an ICE restart (new ufrag/pwd, or If-Match: *) is refused with 422 saying it is not
/// supported; an unknown or ended session is 404; a broken candidate 400; another body type 415.
#[test]
fn patch_applies_trickle_refuses_ice_restarts_and_knows_its_sessions() {
    let server = Server::start(&[]);
    server.wait_live("demo", Duration::from_secs(5));
    let http = reqwest::blocking::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let patch = |path: &str, body: &str, if_match: Option<&str>| {
        let mut r = http
            .patch(server.url(path))
            .header("content-type", "application/trickle-ice-sdpfrag")
            .body(body.to_string());
        if let Some(m) = if_match {
            r = r.header("if-match", m);
        }
        r.send().unwrap()
    };
    let frag = |ufrag: &str, candidate: &str| {
        format!(
            "a=ice-ufrag:{ufrag}\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n{candidate}a=end-of-candidates\r\n"
        )
    };
    let candidate = "a=candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host\r\n";
    let unknown = error_of(
        patch(
            "/api/cameras/demo/whep/0123456789abcdef",
            &frag("x", candidate),
            None,
        ),
        StatusCode::NOT_FOUND,
    );
    assert!(unknown.contains("0123456789abcdef"), "{unknown}");

    let (offer, ufrag) = offer_and_ufrag();
    let r = http
        .post(server.url("/api/cameras/demo/whep"))
        .header("content-type", "application/sdp")
        .body(offer)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    // Trickle: the candidate is applied.
    assert_eq!(
        patch(&location, &frag(&ufrag, candidate), None).status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        patch(&location, "a=end-of-candidates\r\n", None).status(),
        StatusCode::NO_CONTENT
    );
    // The same session under another camera is not that camera's.
    let other = location.replace("/demo/", "/nope/");
    assert_eq!(
        patch(&other, &frag(&ufrag, candidate), None).status(),
        StatusCode::NOT_FOUND
    );
    // An ICE restart: new credentials, or If-Match: * — refused, never a 204.
    let restart = error_of(
        patch(&location, &frag("newufrag", candidate), None),
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    assert!(
        restart.contains("ICE restarts are not supported"),
        "{restart}"
    );
    let restart = error_of(
        patch(&location, &frag(&ufrag, candidate), Some("*")),
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    assert!(restart.contains("not supported"), "{restart}");
    // A candidate that is not one.
    let broken = error_of(
        patch(&location, &frag(&ufrag, "a=candidate:garbage\r\n"), None),
        StatusCode::BAD_REQUEST,
    );
    assert!(broken.contains("candidate"), "{broken}");
    let r = http
        .patch(server.url(&location))
        .header("content-type", "application/sdp")
        .body("v=0\r\n")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Once ended, the session is unknown.
    assert_eq!(
        http.delete(server.url(&location)).send().unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        patch(&location, &frag(&ufrag, candidate), None).status(),
        StatusCode::NOT_FOUND
    );
}
