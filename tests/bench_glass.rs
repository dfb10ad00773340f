//! Benchmark (not CI; `scripts/bench-glass` runs it): glass-to-glass latency of a camera
//! published over WHIP and watched over WHEP, in one real Chromium page, and livelens's CPU for
//! the published 2 Mb/s stream.
//!
//! The page draws a time strip (24 black or white blocks: the page's clock in milliseconds)
//! over a moving picture on a 1280×720 canvas, publishes the canvas at 25 fps and 2 Mb/s over
//! WHIP, and plays the camera back with `<livelens-player mode="webrtc">`. For each frame the
//! player presents (`requestVideoFrameCallback`), the strip is read back from the picture: the
//! latency is the page's clock then minus the clock the strip shows. Both ends are the same
//! page, so the clocks are the same clock.

use crate::common;

use std::time::Duration;

use common::browser::Browser;
use common::{cpu_seconds, wait_until, Server};

const PAGE: &str = r#"
const W = 1280, H = 720, BITS = 24, BLOCK = 40;
const canvas = document.createElement('canvas'); canvas.width = W; canvas.height = H;
const g = canvas.getContext('2d');
let t0 = performance.now();
function draw() {
  const now = performance.now();
  const x = ((now - t0) / 8) % W;
  const grad = g.createLinearGradient(x, 0, x + W, H);
  grad.addColorStop(0, '#246'); grad.addColorStop(0.5, '#c84'); grad.addColorStop(1, '#246');
  g.fillStyle = grad; g.fillRect(0, 0, W, H);
  for (let i = 0; i < 40; i++) {
    g.fillStyle = `hsl(${(i * 37 + now / 20) % 360}, 70%, 50%)`;
    g.fillRect((i * 97 + now / 5) % W, 80 + (i * 53) % (H - 120), 60, 40);
  }
  const ms = Math.floor(now) & 0xffffff;
  g.fillStyle = '#808080'; g.fillRect(0, 0, BITS * BLOCK + 16, BLOCK + 16);
  for (let b = 0; b < BITS; b++) {
    g.fillStyle = (ms >> (BITS - 1 - b)) & 1 ? '#fff' : '#000';
    g.fillRect(8 + b * BLOCK, 8, BLOCK, BLOCK);
  }
  requestAnimationFrame(draw);
}
draw();
const media = canvas.captureStream(25);
// A camera's picture keeps its size: the encoder lowers quality, not resolution, under load.
media.getVideoTracks()[0].contentHint = 'detail';
const pc = new RTCPeerConnection();
const tr = pc.addTransceiver(media.getVideoTracks()[0], { direction: 'sendonly',
  sendEncodings: [{ maxBitrate: 2000000, maxFramerate: 25 }] });
tr.setCodecPreferences(RTCRtpSender.getCapabilities('video').codecs.filter(
  (c) => c.mimeType === 'video/H264' && /packetization-mode=1/.test(c.sdpFmtpLine || '')));
const offer = await pc.createOffer();
await pc.setLocalDescription(offer);
const r = await fetch('/api/cameras/glass/whip', { method: 'POST',
  headers: { 'content-type': 'application/sdp' }, body: offer.sdp });
if (r.status !== 201) return `WHIP ${r.status} ${await r.text()}`;
await pc.setRemoteDescription({ type: 'answer', sdp: await r.text() });
window.publisher = pc;
return 'ok';
"#;

const VIEWER: &str = r#"
await import('/player.js');
const p = document.createElement('livelens-player');
p.setAttribute('mode', 'MODE'); p.setAttribute('src', 'glass');
p.style.width = '1280px'; document.body.append(p);
window.p = p;
window.latencies = [];
const read = document.createElement('canvas'); read.width = 1280; read.height = 720;
const rg = read.getContext('2d', { willReadFrequently: true });
const video = p.video;
if (!video) return 'no video element';
const BITS = 24, BLOCK = 40;
function onFrame() {
  const now = performance.now();
  window.sizes = `${video.videoWidth}x${video.videoHeight}`;
  if (video.videoWidth > 0) {
    rg.drawImage(video, 0, 0, 1280, 720);
    const px = rg.getImageData(0, 0, BITS * BLOCK + 16, BLOCK + 16).data;
    let ms = 0;
    for (let b = 0; b < BITS; b++) {
      const x = 8 + b * BLOCK + BLOCK / 2, y = 8 + BLOCK / 2;
      const i = (y * (BITS * BLOCK + 16) + x) * 4;
      ms = (ms << 1) | (px[i] > 128 ? 1 : 0);
    }
    const latency = ((Math.floor(now) & 0xffffff) - ms + 0x1000000) % 0x1000000;
    window.last = [ms, latency];
    if (latency < 10000) window.latencies.push(latency);
  }
  video.requestVideoFrameCallback(onFrame);
}
video.requestVideoFrameCallback(onFrame);
return 'ok';
"#;

#[test]
#[ignore = "benchmark: scripts/bench-glass"]
fn glass_to_glass_whip_to_whep() {
    let _serial = common::browser::serial();
    let config = common::write_config(
        "bench-glass",
        "[[camera]]\nid = \"glass\"\nsource = \"publish:\"\n",
    );
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let seconds: u64 = std::env::var("SECONDS_PER_RUN")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let browser = Browser::start().await;
        browser.blank_page(&server.base).await;
        assert_eq!(browser.run(PAGE).await, "ok");
        wait_until(Duration::from_secs(15), "the published camera live", || {
            server.camera_state("glass") == "live"
        });
        println!("| path | frames measured | decoded / dropped (video element) | p50 ms | p95 ms | p99 ms | max ms | camera kbit/s | livelens CPU |");
        println!("|---|---|---|---|---|---|---|---|---|");
        for (mode, label) in [("webrtc", "WHIP → WHEP"), ("mse", "WHIP → MSE")] {
            assert_eq!(browser.run(&VIEWER.replace("MODE", mode)).await, "ok");
            browser
                .until(
                    Duration::from_secs(15),
                    "the viewer presenting frames",
                    "window.p.stats.error = `${window.sizes} ${window.last}`; return window.latencies.length >= 25;",
                )
                .await;
            // Settle (MSE moves to the live edge), then measure.
            tokio::time::sleep(Duration::from_secs(3)).await;
            browser.run("window.latencies = []; const q = window.p.video.getVideoPlaybackQuality(); window.q0 = [q.totalVideoFrames, q.droppedVideoFrames]; return true;").await;
            let cpu0 = cpu_seconds(server.pid());
            let wall = std::time::Instant::now();
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            let cpu = (cpu_seconds(server.pid()) - cpu0) / wall.elapsed().as_secs_f64() * 100.0;
            let mut l: Vec<f64> =
                serde_json::from_value(browser.run("return window.latencies;").await).unwrap();
            // What the video element itself counts over the run: pictures decoded and dropped.
            let q = browser
                .run("const q = window.p.video.getVideoPlaybackQuality(); return [q.totalVideoFrames - window.q0[0], q.droppedVideoFrames - window.q0[1]];")
                .await;
            l.sort_by(|a, b| a.partial_cmp(b).unwrap());
            // Too few frames read back is itself a result (a player dropping or stalling):
            // the row is printed either way, then the run fails.
            assert!(!l.is_empty(), "{label}: no frame measured");
            let pct = |p: f64| l[((l.len() - 1) as f64 * p) as usize];
            let camera = server.get_json("/api/cameras/glass");
            let kbps = camera["stats"]["bitrate_kbps"].as_f64().unwrap_or(0.0);
            println!(
                "| {label} | {} | {} / {} | {:.0} | {:.0} | {:.0} | {:.0} | {kbps:.0} | {cpu:.1} % |",
                l.len(),
                q[0],
                q[1],
                pct(0.5),
                pct(0.95),
                pct(0.99),
                l[l.len() - 1],
            );
            assert!(
                l.len() as u64 >= seconds * 10,
                "{label}: only {} frames measured in {seconds} s",
                l.len()
            );
            browser.run("window.p.remove(); return true;").await;
        }
        browser.close().await;
    });
}
