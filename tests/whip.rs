//! Cameras that push over WHIP: headless Chromium publishes its (fake) webcam and microphone
//! through the UI's own module (`/webcam.js`) to a `publish:` camera; players on the page read it
//! back over WHEP and MSE and ffprobe over the RTSP re-stream; the camera is idle again as soon
//! as the publisher leaves (DELETE, the page going away, or the connection closing without a
//! word); a second publisher gets 409; 200 publish cycles leave every count at its baseline.

use crate::common;

use std::time::Duration;

use common::browser::Browser;
use common::{counts, wait_until, Server};

const CONFIG: &str = "[rtsp]\nlisten = \"127.0.0.1:0\"\n\n\
                      [[camera]]\nid = \"pub\"\nsource = \"publish:\"\n\n\
                      [[camera]]\nid = \"cam\"\nsource = \"testsrc://?size=320x240&fps=25&gop=25\"\n";

fn start(name: &str, extra: &str) -> Server {
    let path = common::write_config(name, &format!("{extra}\n{CONFIG}"));
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    server.wait_live("cam", Duration::from_secs(15));
    server
}

/// Loads the UI's publisher module into the page as `window.Webcam`.
async fn load_webcam(browser: &Browser, base: &str) {
    browser.blank_page(base).await;
    browser
        .run("const m = await import('/webcam.js'); window.Webcam = m.Webcam; return true;")
        .await;
}

/// Starts a publisher in the page as `window[name]`; returns the error message, if refused.
async fn publish(
    browser: &Browser,
    name: &str,
    camera: &str,
    token: Option<&str>,
) -> Option<String> {
    let token = token.map_or("null".to_string(), |t| format!("'{t}'"));
    let v = browser
        .run(&format!(
            "window.{name} = new Webcam();
             try {{ await window.{name}.start('{camera}', {token}); return null; }}
             catch (e) {{ return String(e.message || e); }}"
        ))
        .await;
    v.as_str().map(str::to_string)
}

fn ffprobe_rtsp(server: &Server, camera: &str) -> Vec<String> {
    let port = server.get_json("/api/outputs")["rtsp"]["port"]
        .as_u64()
        .unwrap();
    common::media::ffprobe(&format!("rtsp://127.0.0.1:{port}/{camera}"))
}

#[test]
fn chromium_publishes_its_webcam_and_every_output_plays_it() {
    let _serial = common::browser::serial();
    let server = start("whip-publish", "");
    let baseline = counts(&server.resources());
    assert_eq!(server.camera_state("pub"), "idle");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let browser = Browser::start().await;
        load_webcam(&browser, &server.base).await;
        assert_eq!(publish(&browser, "w", "pub", None).await, None);
        wait_until(Duration::from_secs(10), "the published camera live", || {
            server.camera_state("pub") == "live"
        });
        let r = server.resources();
        assert_eq!(r["publishers"]["whip"], 1, "{r}");
        // What the browser sent is a camera like any other: H.264 and Opus, as they are.
        let camera = server.get_json("/api/cameras/pub");
        assert_eq!(camera["video"]["codec"], "h264", "{camera}");
        assert_eq!(camera["audio"]["codec"], "opus", "{camera}");
        let probed = ffprobe_rtsp(&server, "pub");
        assert!(probed.iter().any(|s| s.starts_with("h264,")), "{probed:?}");
        assert!(probed.iter().any(|s| s.starts_with("opus")), "{probed:?}");
        // Players on the page: one over WHEP, one over MSE.
        browser
            .run(
                "await import('/player.js');
                 for (const mode of ['webrtc', 'mse']) {
                   const p = document.createElement('livelens-player');
                   p.setAttribute('mode', mode); p.setAttribute('src', 'pub');
                   p.style.width = '320px'; document.body.append(p);
                   window['p_' + mode] = p;
                 }
                 window.p = window.p_webrtc;
                 return true;",
            )
            .await;
        browser
            .until(
                Duration::from_secs(15),
                "both players showing frames",
                "return window.p_webrtc.stats.frames >= 25 && window.p_mse.stats.frames >= 25
                   && window.p_webrtc.stats.mode === 'webrtc' && window.p_mse.stats.mode === 'mse';",
            )
            .await;
        browser
            .run("window.p_webrtc.remove(); window.p_mse.remove(); return true;")
            .await;
        // DELETE: the camera is idle at once, and the publisher's peer is gone.
        browser.run("await window.w.stop(); return true;").await;
        wait_until(Duration::from_secs(2), "idle after the publisher left", || {
            server.camera_state("pub") == "idle"
        });
        wait_until(Duration::from_secs(5), "counts back at baseline", || {
            counts(&server.resources()) == baseline
        });
        browser.close().await;
    });
}

#[test]
fn a_second_publisher_a_wrong_camera_and_a_vanished_publisher() {
    let _serial = common::browser::serial();
    let server = start("whip-refusals", "");
    let baseline = counts(&server.resources());
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let browser = Browser::start().await;
        load_webcam(&browser, &server.base).await;
        // A camera that does not take publishers, and one that does not exist.
        let refused = publish(&browser, "x", "cam", None).await.expect("refused");
        assert!(
            refused.contains("does not take published streams"),
            "{refused}"
        );
        let refused = publish(&browser, "x", "nope", None).await.expect("refused");
        assert!(refused.contains("nope"), "{refused}");
        assert_eq!(publish(&browser, "a", "pub", None).await, None);
        wait_until(Duration::from_secs(10), "live", || {
            server.camera_state("pub") == "live"
        });
        // A second publisher is refused and the first keeps going.
        let busy = publish(&browser, "b", "pub", None).await.expect("busy");
        assert!(busy.contains("another publisher"), "{busy}");
        let frames = |s: &Server| s.camera_frames("pub");
        let before = frames(&server);
        wait_until(
            Duration::from_secs(5),
            "the first publisher still sending",
            || frames(&server) > before + 25,
        );
        // The publisher vanishes without a DELETE (its connection closes): idle within seconds.
        browser
            .run("window.a.location = null; window.a.pc.close(); return true;")
            .await;
        wait_until(
            Duration::from_secs(5),
            "idle after the connection closed",
            || server.camera_state("pub") == "idle",
        );
        // The page goes away while publishing: its pagehide DELETE frees the camera.
        assert_eq!(publish(&browser, "c", "pub", None).await, None);
        wait_until(Duration::from_secs(10), "live again", || {
            server.camera_state("pub") == "live"
        });
        browser.goto(&format!("{}/healthz", server.base)).await;
        wait_until(
            Duration::from_secs(3),
            "idle after the page went away",
            || server.camera_state("pub") == "idle",
        );
        wait_until(Duration::from_secs(5), "counts back at baseline", || {
            counts(&server.resources()) == baseline
        });
        browser.close().await;
    });
}

#[test]
fn with_a_token_a_publisher_needs_it_and_cycles_leave_nothing_behind() {
    let _serial = common::browser::serial();
    let config = format!(
        "{CONFIG}\n[[camera]]\nid = \"keyed\"\nsource = \"publish:\"\npublish_key = \"k3y-for-keyed\"\n"
    );
    let server = Server::start_with_env(
        &[
            "--config",
            common::write_config("whip-token", &config)
                .to_str()
                .unwrap(),
        ],
        &[("LIVELENS_TOKEN", "s3cret-whip")],
    );
    server.wait_live("cam", Duration::from_secs(15));
    let baseline = counts(&server.resources());
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let browser = Browser::start().await;
        load_webcam(&browser, &server.base).await;
        let refused = publish(&browser, "x", "pub", None).await.expect("refused");
        assert!(refused.contains("Bearer"), "{refused}");
        let refused = publish(&browser, "x", "pub", Some("wrong")).await.expect("refused");
        assert!(refused.contains("Bearer"), "{refused}");
        assert_eq!(server.camera_state("pub"), "idle");
        // A camera's publish key opens that camera, and no other.
        let refused = publish(&browser, "x", "pub", Some("k3y-for-keyed")).await.expect("refused");
        assert!(refused.contains("Bearer"), "{refused}");
        assert_eq!(publish(&browser, "k", "keyed", Some("k3y-for-keyed")).await, None);
        wait_until(Duration::from_secs(10), "the keyed camera live", || {
            server.camera_state("keyed") == "live"
        });
        browser.run("await window.k.stop(); return true;").await;
        wait_until(Duration::from_secs(5), "the keyed camera idle", || {
            server.camera_state("keyed") == "idle"
        });
        // 200 publish/unpublish cycles: each answered, each let go.
        let done = browser
            .run(
                "const media = await navigator.mediaDevices.getUserMedia({video: true, audio: true});
                 for (let i = 0; i < 200; i++) {
                   const pc = new RTCPeerConnection();
                   for (const t of media.getTracks()) pc.addTransceiver(t, {direction: 'sendonly'});
                   const offer = await pc.createOffer();
                   await pc.setLocalDescription(offer);
                   const r = await fetch('/api/cameras/pub/whip', {method: 'POST',
                     headers: {'content-type': 'application/sdp', authorization: 'Bearer s3cret-whip'},
                     body: offer.sdp});
                   if (r.status !== 201) return `cycle ${i}: ${r.status} ${await r.text()}`;
                   const d = await fetch(r.headers.get('location'), {method: 'DELETE',
                     headers: {authorization: 'Bearer s3cret-whip'}});
                   if (d.status !== 200) return `cycle ${i}: DELETE ${d.status}`;
                   pc.close();
                 }
                 for (const t of media.getTracks()) t.stop();
                 return 'done';",
            )
            .await;
        assert_eq!(done, "done");
        wait_until(Duration::from_secs(5), "counts back at baseline", || {
            counts(&server.resources()) == baseline
        });
        // And a new publisher is served.
        assert_eq!(publish(&browser, "w", "pub", Some("s3cret-whip")).await, None);
        wait_until(Duration::from_secs(10), "live after the cycles", || {
            server.camera_state("pub") == "live"
        });
        browser.run("await window.w.stop(); return true;").await;
        wait_until(Duration::from_secs(5), "counts back at baseline", || {
            counts(&server.resources()) == baseline
        });
        browser.close().await;
    });
}

#[test]
fn the_ui_button_publishes_this_browsers_camera_to_a_camera_it_makes() {
    let _serial = common::browser::serial();
    let server = start("whip-ui", "");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let browser = Browser::start().await;
        browser.open_ui(&server.base).await;
        browser
            .run("document.querySelector('#webcam').click(); return true;")
            .await;
        // No camera takes publishers under the selection: the button makes "webcam" for it.
        // Until the page's POST lands the camera is a 404 (camera_state would panic on it).
        wait_until(Duration::from_secs(10), "the webcam camera live", || {
            let r = server.get("/api/cameras/webcam");
            r.status().is_success() && r.json::<serde_json::Value>().unwrap()["state"] == "live"
        });
        assert_eq!(server.get_json("/api/cameras/webcam")["source"], "publish:");
        // Its card offers where encoders publish to it.
        browser
            .until(
                Duration::from_secs(5),
                "the webcam card with its RTMP link",
                "const l = document.querySelector('#list [data-id=\"webcam\"] [data-link=\"rtmp\"]');
                 return !!l && l.value.startsWith('rtmp://');",
            )
            .await;
        let links = browser
            .run(
                "const c = document.querySelector('#list [data-id=\"webcam\"]');
                 const rtmp = c.querySelector('[data-link=\"rtmp\"]');
                 const whip = c.querySelector('[data-link=\"whip\"]');
                 return [rtmp.closest('label').hidden, rtmp.value, whip.value];",
            )
            .await;
        let rtmp_port = server.get_json("/api/outputs")["rtmp"]["port"].as_u64().unwrap();
        assert_eq!(links[0], false, "{links}");
        assert_eq!(links[1], format!("rtmp://127.0.0.1:{rtmp_port}/live/webcam"), "{links}");
        assert_eq!(links[2], format!("{}/api/cameras/webcam/whip", server.base), "{links}");
        browser
            .until(
                Duration::from_secs(15),
                "the single view playing the published camera",
                "const t = document.querySelector('.tile[data-id=\"webcam\"] livelens-player');
                 window.p = t; return !!t && t.stats.frames >= 25;",
            )
            .await;
        let label = browser
            .run("return document.querySelector('#webcam').textContent;")
            .await;
        assert_eq!(label, "Stop my camera");
        browser
            .run("document.querySelector('#webcam').click(); return true;")
            .await;
        wait_until(Duration::from_secs(3), "idle after Stop my camera", || {
            server.camera_state("webcam") == "idle"
        });
        assert_eq!(server.resources()["publishers"]["whip"], 0);
        browser.close().await;
    });
}

#[test]
fn the_model_sees_the_published_picture() {
    let _serial = common::browser::serial();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let vlm = runtime.block_on(common::vlm_server::VlmServer::start(
        320,
        "Describe the scene.",
    ));
    let analysis = format!(
        "[[camera]]\nid = \"seen\"\nsource = \"publish:\"\n\
         [camera.analysis.vlm]\nendpoint = \"{}\"\nmodel = \"m\"\nprompt = \"Describe the scene.\"\n\
         interval = \"1s\"\nimage_width = 320\n",
        vlm.url
    );
    let server = start("whip-vlm", &analysis);
    runtime.block_on(async {
        let browser = Browser::start().await;
        load_webcam(&browser, &server.base).await;
        assert_eq!(publish(&browser, "w", "seen", None).await, None);
        wait_until(Duration::from_secs(10), "live", || {
            server.camera_state("seen") == "live"
        });
        let video = server.get_json("/api/cameras/seen")["video"].clone();
        let (w, h) = (
            video["width"].as_u64().unwrap(),
            video["height"].as_u64().unwrap(),
        );
        // Two requests whose picture decoded at the configured width and the publisher's shape.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let good: Vec<_> = vlm
                .requests()
                .into_iter()
                .filter(|r| r.problem.is_none())
                .collect();
            if good.len() >= 2 {
                for r in &good {
                    assert_eq!(r.width, 320);
                    let expected = 320 * h / w;
                    assert!(
                        (r.height as i64 - expected as i64).abs() <= 2,
                        "a {}×{} picture from a {w}×{h} camera",
                        r.width,
                        r.height
                    );
                }
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the model got no good picture: {:?}",
                vlm.requests()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        browser.run("await window.w.stop(); return true;").await;
        browser.close().await;
    });
    vlm.stop();
}

/// A Python with GStreamer's webrtcbin importable (only Debian's own Python has python3-gi).
fn webrtcbin_python() -> &'static str {
    let python = "/usr/bin/python3";
    let ok = std::process::Command::new(python)
        .args([
            "-c",
            "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstWebRTC', '1.0'); \
             from gi.repository import Gst, GstWebRTC; Gst.init(None); \
             assert all(Gst.ElementFactory.find(e) for e in ('webrtcbin', 'nicesrc', 'x264enc', 'opusenc'))",
        ])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "GStreamer's webrtcbin is not usable from {python}: install the Debian packages \
         python3-gi gir1.2-gst-plugins-bad-1.0 gstreamer1.0-plugins-bad gstreamer1.0-nice \
         gstreamer1.0-plugins-ugly gstreamer1.0-plugins-good (scripts/test does)"
    );
    python
}

/// A server whose log (at info) goes to a file the test reads: `(server, log path)`.
fn start_logged(name: &str) -> (Server, std::path::PathBuf) {
    let path = common::write_config(name, CONFIG);
    let log = path.with_file_name("livelens.log");
    let file = std::fs::File::create(&log).unwrap();
    let server = Server::start_with(
        &["--config", path.to_str().unwrap()],
        &[("LIVELENS_LOG", "info")],
        |cmd| {
            cmd.stderr(file);
        },
    );
    (server, log)
}

/// The server's log so far, without its ANSI colours.
fn read_log(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters… final letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// GStreamer's webrtcbin (OpenSSL, an RSA-2048 DTLS certificate) publishes over WHIP: DTLS
/// completes, the camera goes live and its frames are read back over the RTSP re-stream; the
/// DELETE it sends at the end is logged as the publisher's end reason.
#[test]
fn gstreamer_webrtcbin_publishes_with_an_rsa_certificate() {
    let python = webrtcbin_python();
    let (server, log) = start_logged("whip-webrtcbin");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/webrtcbin_whip.py"
    );
    let client = std::process::Command::new(python)
        .args([script, &server.url("/api/cameras/pub/whip"), "6"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run webrtcbin_whip.py");
    wait_until(
        Duration::from_secs(20),
        "the webrtcbin publisher live",
        || server.camera_state("pub") == "live",
    );
    let camera = server.get_json("/api/cameras/pub");
    assert_eq!(camera["video"]["codec"], "h264", "{camera}");
    // Frames keep coming, and a reader gets them back.
    let before = server.camera_frames("pub");
    wait_until(Duration::from_secs(5), "25 more published frames", || {
        server.camera_frames("pub") >= before + 25
    });
    let probed = ffprobe_rtsp(&server, "pub");
    assert!(
        probed.iter().any(|s| s.starts_with("h264,320,240")),
        "{probed:?}"
    );
    let out = client.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "webrtcbin_whip.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("connection connected"), "{stdout}");
    assert!(stdout.contains("deleted 200"), "{stdout}");
    wait_until(Duration::from_secs(5), "the publisher's end logged", || {
        read_log(&log).contains("WHIP publisher ended: the client ended the session (DELETE)")
    });
    let text = read_log(&log);
    let line = text
        .lines()
        .find(|l| l.contains("WHIP publisher ended"))
        .unwrap();
    assert!(
        line.contains("camera=\"pub\"") || line.contains("camera=pub"),
        "{line}"
    );
    assert!(line.contains("session="), "{line}");
}

/// An SDP offer (H.264, receive only) from a str0m peer that is then dropped.
fn offer_that_never_connects() -> String {
    use str0m::media::{Direction, MediaKind};
    str0m::crypto::from_feature_flags().install_process_default();
    let mut rtc = str0m::Rtc::builder()
        .clear_codecs()
        .enable_h264(true)
        .build(std::time::Instant::now());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, _pending) = api.apply().expect("an offer");
    offer.to_sdp_string()
}

/// A peer that answers nothing after its offer (no ICE at all) ends with an ICE timeout in the
/// log, at warn, naming camera and session; a viewer that DELETEs ends with that reason.
#[test]
fn every_peers_end_reason_is_logged() {
    let (server, log) = start_logged("whip-end-reasons");
    server.wait_live("cam", Duration::from_secs(15));
    // A WHEP viewer over the project's str0m client, then its DELETE.
    let url = server.url("/api/cameras/cam/whep");
    let want = common::whep::Wanted {
        video: 10,
        audio: None,
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let received = rt
        .block_on(common::whep::session(
            &url,
            "h264",
            want,
            Duration::from_secs(15),
        ))
        .expect("WHEP frames");
    let viewer = received.location.rsplit('/').next().unwrap().to_string();
    assert_eq!(
        server
            .http
            .delete(&received.location)
            .send()
            .unwrap()
            .status(),
        200
    );
    wait_until(Duration::from_secs(5), "the DELETE logged", || {
        read_log(&log).lines().any(|l| {
            l.contains(&viewer)
                && l.contains("WebRTC viewer ended: the client ended the session (DELETE)")
        })
    });
    // An offer whose ICE never comes: a client that went away after its POST.
    let offer = offer_that_never_connects();
    let r = server
        .http
        .post(&url)
        .header("Content-Type", "application/sdp")
        .body(offer)
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let session = r.headers()["location"]
        .to_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    wait_until(Duration::from_secs(20), "the ICE timeout logged", || {
        read_log(&log).contains(&session) && read_log(&log).contains("ICE timeout")
    });
    let text = read_log(&log);
    let line = text.lines().find(|l| l.contains(&session)).unwrap();
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("WebRTC viewer ended: ICE timeout"), "{line}");
    assert!(line.contains("cam"), "{line}");
}
