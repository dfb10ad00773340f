//! Real headless Chromium plays livelens cameras through MSE.

use crate::common;

use std::time::{Duration, Instant};

use common::browser::Browser;
use common::{wait_until, RtspCamera, Server};
use serde_json::json;

#[test]
fn chromium_plays_the_demo_camera_with_low_latency() {
    let _serial = common::browser::serial();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let server = Server::start(&[]);
        server.wait_live("demo", Duration::from_secs(5));
        let browser = Browser::start().await;
        browser.blank_page(&server.base).await;
        browser
            .run(
                "await import('/player.js');
             const p = document.createElement('livelens-player'); p.setAttribute('mode', 'mse');
             p.setAttribute('src', 'demo');
             p.style.width = '640px';
             document.body.append(p);
             window.p = p;",
            )
            .await;
        browser
            .until(
                Duration::from_secs(10),
                "50 frames",
                "return window.p.stats.frames >= 50;",
            )
            .await;
        // Latency settles once the player has moved to the live edge.
        browser
            .until(
                Duration::from_secs(10),
                "latency under 1.5 s",
                "const l = window.p.stats.latency; return l !== null && l >= 0 && l <= 1.5;",
            )
            .await;
        let stats = browser.run("return window.p.stats;").await;
        eprintln!("player stats: {stats}");
        let first = stats["firstFrameMs"].as_f64().unwrap();
        assert!(first <= 500.0, "first frame after {first} ms");
        assert_eq!(stats["mode"], "mse");
        assert_eq!(server.resources()["viewers"]["mse"], 1);
        browser.run("window.p.remove();").await;
        wait_until(Duration::from_secs(5), "the MSE viewer to leave", || {
            server.resources()["viewers"]["mse"] == 0
        });
        browser.close().await;
    });
}

#[test]
fn chromium_plays_an_rtsp_camera_through_the_go2rtc_protocol() {
    let _serial = common::browser::serial();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
    let cam = RtspCamera::start(&["--size", "640x360", "--audio", "aac", "--gop", "25"]);
    let server = Server::start(&[]);
    let r = server.post_json("/api/cameras", &json!({"id": "cam", "source": cam.url()}));
    assert!(r.status().is_success());
    server.wait_live("cam", Duration::from_secs(10));
    let browser = Browser::start().await;
    browser.blank_page(&server.base).await;
    // The protocol as go2rtc's video-rtc.js speaks it: open the socket, then on the
    // MediaSource's sourceopen send {"type":"mse","value":<codecs>}; answer {"type":"mse"}
    // adds a SourceBuffer of that type; binary messages are appended in order.
    browser
        .run(
            "const v = document.createElement('video');
             v.muted = true; v.autoplay = true; document.body.append(v);
             window.g = { frames: 0, mime: null };
             const ws = new WebSocket(`ws://${location.host}/api/ws?src=cam`);
             ws.binaryType = 'arraybuffer';
             let sb = null; const queue = [];
             const pump = () => {
               if (!sb || sb.updating || !queue.length) return;
               const total = queue.reduce((n, b) => n + b.byteLength, 0);
               const data = new Uint8Array(total); let o = 0;
               for (const b of queue.splice(0)) { data.set(new Uint8Array(b), o); o += b.byteLength; }
               sb.appendBuffer(data);
             };
             ws.onopen = () => {
               const ms = new MediaSource();
               ms.addEventListener('sourceopen', () => {
                 ws.send(JSON.stringify({type: 'mse', value: 'avc1.640029,avc1.64002A,avc1.640033,hvc1.1.6.L153.B0,mp4a.40.2,mp4a.40.5,flac,opus'}));
               }, {once: true});
               ws.onmessage = (ev) => {
                 if (typeof ev.data === 'string') {
                   const msg = JSON.parse(ev.data);
                   if (msg.type === 'mse') {
                     window.g.mime = msg.value;
                     sb = ms.addSourceBuffer(msg.value);
                     sb.mode = 'segments';
                     sb.addEventListener('updateend', pump);
                   }
                 } else { queue.push(ev.data); pump(); }
               };
               v.src = URL.createObjectURL(ms);
               v.play().catch(() => {});
             };
             const count = () => { window.g.frames++; v.requestVideoFrameCallback(count); };
             v.requestVideoFrameCallback(count);",
        )
        .await;
    let start = Instant::now();
    loop {
        let g = browser.run("return window.g;").await;
        if g["frames"].as_u64().unwrap_or(0) >= 50 {
            let mime = g["mime"].as_str().unwrap();
            assert!(
                mime.contains("avc1.") && mime.contains("mp4a.40.2"),
                "{mime}"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "go2rtc-style player: {g}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    browser.close().await;
    });
}

#[test]
fn a_viewer_that_joins_late_plays() {
    let _serial = common::browser::serial();
    let server = Server::start(&[]);
    // The camera has been running for 10 s (250 frames at 25 fps) when the viewer arrives.
    wait_until(Duration::from_secs(20), "10 s of frames", || {
        server.camera_frames("demo") >= 250
    });
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let browser = Browser::start().await;
        browser.blank_page(&server.base).await;
        browser
            .run(
                "await import('/player.js');
                 const p = document.createElement('livelens-player'); p.setAttribute('mode', 'mse');
                 p.setAttribute('src', 'demo'); document.body.append(p); window.p = p;",
            )
            .await;
        browser
            .until(
                Duration::from_secs(10),
                "25 frames",
                "return window.p.stats.frames >= 25;",
            )
            .await;
        browser.close().await;
    });
}

#[test]
fn switching_and_removing_players_leaks_nothing() {
    let _serial = common::browser::serial();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let server = Server::start(&[]);
        let r = server.post_json(
            "/api/cameras",
            &json!({"id": "small", "source": "testsrc://?size=320x240&fps=25&gop=25"}),
        );
        assert!(r.status().is_success());
        server.wait_live("demo", Duration::from_secs(5));
        server.wait_live("small", Duration::from_secs(5));
        let baseline = server.resources();
        let browser = Browser::start().await;
        browser.blank_page(&server.base).await;
        // Count the page's WebSockets that are connecting or open.
        browser
            .run(
                "const Native = window.WebSocket; window.sockets = new Set();
             window.WebSocket = class extends Native {
               constructor(...args) { super(...args); window.sockets.add(this); }
             };
             window.liveSockets = () => {
               let n = 0;
               for (const s of window.sockets) {
                 if (s.readyState <= 1) n++; else window.sockets.delete(s);
               }
               return n;
             };
             await import('/player.js');
             const p = document.createElement('livelens-player'); p.setAttribute('mode', 'mse');
             p.setAttribute('src', 'demo'); document.body.append(p); window.p = p;",
            )
            .await;
        browser
            .until(
                Duration::from_secs(10),
                "first frames",
                "return window.p.stats.frames >= 10;",
            )
            .await;
        let heap = "window.gc(); return performance.memory.usedJSHeapSize;";
        let heap_before = browser.run(heap).await.as_f64().unwrap();

        let mse_viewers = || server.resources()["viewers"]["mse"].as_i64().unwrap();
        for i in 0..200 {
            let id = if i % 2 == 0 { "small" } else { "demo" };
            let live = browser
                .run(&format!(
                    "window.p.setAttribute('src', '{id}'); return window.liveSockets();"
                ))
                .await;
            assert!(
                live.as_i64().unwrap() <= 1,
                "switch {i}: {live} sockets open in the page"
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
            wait_until(Duration::from_secs(3), "at most one MSE viewer", || {
                mse_viewers() <= 1
            });
        }
        for i in 0..200 {
            let live = browser
                .run(
                    "const src = window.p.getAttribute('src'); window.p.remove();
                 const p = document.createElement('livelens-player'); p.setAttribute('mode', 'mse');
                 p.setAttribute('src', src); document.body.append(p); window.p = p;
                 return window.liveSockets();",
                )
                .await;
            assert!(
                live.as_i64().unwrap() <= 1,
                "re-add {i}: {live} sockets open in the page"
            );
            wait_until(Duration::from_secs(3), "at most one MSE viewer", || {
                mse_viewers() <= 1
            });
        }
        browser
            .until(
                Duration::from_secs(10),
                "the last player plays",
                "return window.p.stats.frames >= 10;",
            )
            .await;
        browser.run("window.p.remove(); window.p = null;").await;
        let heap_after = browser.run(heap).await.as_f64().unwrap();
        let growth = (heap_after - heap_before) / 1048576.0;
        eprintln!(
            "JS heap: {:.1} MiB → {:.1} MiB",
            heap_before / 1048576.0,
            heap_after / 1048576.0
        );
        assert!(growth <= 10.0, "JS heap grew by {growth:.1} MiB");
        assert_eq!(browser.run("return window.liveSockets();").await, json!(0));
        wait_until(
            Duration::from_secs(5),
            "server counts back at baseline",
            || {
                let r = server.resources();
                r["viewers"] == baseline["viewers"]
                    && r["websockets"] == baseline["websockets"]
                    && r["tasks"] == baseline["tasks"]
            },
        );
        browser.close().await;
    });
}

#[test]
fn h265_is_refused_in_the_browser_and_a_new_description_rebuilds_the_player() {
    let _serial = common::browser::serial();
    let hevc = RtspCamera::start(&["--codec", "h265", "--size", "320x240"]);
    let server = Server::start(&[]);
    let r = server.post_json("/api/cameras", &json!({"id": "hevc", "source": hevc.url()}));
    assert!(r.status().is_success());
    server.wait_live("hevc", Duration::from_secs(10));
    let r = server.post_json(
        "/api/cameras",
        &json!({"id": "cam", "source": "testsrc://?size=320x240&fps=25&gop=25"}),
    );
    assert!(r.status().is_success());
    server.wait_live("cam", Duration::from_secs(5));
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let browser = Browser::start().await;
        browser.blank_page(&server.base).await;
        // Chromium has no H.265: the player shows the server's reason.
        browser
            .run(
                "await import('/player.js');
                 const p = document.createElement('livelens-player'); p.setAttribute('mode', 'mse');
                 p.setAttribute('src', 'hevc'); document.body.append(p); window.p = p;",
            )
            .await;
        browser.until(
            Duration::from_secs(10),
            "the H.265 error",
            "const e = window.p.stats.error; return !!e && e.includes('cannot play h265');",
        )
        .await;
        // A camera whose description changes (new size) keeps playing in the same element.
        browser.run("window.p.setAttribute('src', 'cam');").await;
        browser.until( Duration::from_secs(10), "320x240 frames",
            "const v = window.p.querySelector('video'); return window.p.stats.frames >= 10 && v.videoWidth === 320;").await;
        let r = reqwest::Client::new()
            .patch(server.url("/api/cameras/cam"))
            .json(&json!({"source": "testsrc://?size=640x360&fps=25&gop=25"}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        browser.until( Duration::from_secs(15), "640x360 frames in the same element",
            "const v = window.p.querySelector('video'); return v.videoWidth === 640 && window.p.stats.frames >= 5;").await;
        browser.close().await;
    });
}
