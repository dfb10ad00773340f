//! The web UI in real Chromium: add/edit/delete through the form, grid, keyboard switching,
//! screenshots checked for real pictures.

use crate::common;

use std::time::Duration;

use common::browser::Browser;
use common::{RtspCamera, Server};
use serde_json::json;

/// Frames presented by the player of camera `id` in the page.
fn frames_of(id: &str) -> String {
    format!(
        "const t = document.querySelector('.tile[data-id=\"{id}\"] livelens-player'); return t && t.stats ? t.stats.frames : 0;"
    )
}

#[test]
fn add_a_camera_from_the_form_then_delete_it() {
    let _serial = common::browser::serial();
    let cam = RtspCamera::start(&["--size", "640x360", "--profile", "baseline"]);
    let server = Server::start(&[]);
    server.wait_live("demo", Duration::from_secs(5));
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let browser = Browser::start().await;
        browser.open_ui(&server.base).await;
        // The Id field's pattern compiles (Chromium compiles it with the regex `v` flag, where a
        // bare `-` in a class is an error: the check was silently off) and there is an icon.
        let checks = browser
            .run(
                "const id = document.querySelector('#camera-form').elements.id;
                 const valid = (v) => { id.value = v; return id.checkValidity(); };
                 const r = [valid('front-door_2'), valid('Front Door!')];
                 id.value = '';
                 const icon = document.querySelector('link[rel=icon]');
                 return [...r, !!icon && icon.href.startsWith('data:image/svg+xml')];",
            )
            .await;
        assert_eq!(checks, json!([true, false, true]), "id pattern, icon");
        // A bad URL: the API's message appears beside the source field and nothing is added.
        browser
            .run(
                "document.querySelector('#add').click();
                 const f = document.querySelector('#camera-form');
                 f.elements.id.value = 'porch'; f.elements.source.value = 'http://nope/x';
                 document.querySelector('#save').click();",
            )
            .await;
        browser.until( Duration::from_secs(5), "the source error",
            "return document.querySelector('.field-error[data-field=\"source\"]').textContent.includes('unknown source scheme');").await;
        let cameras = server.resources_async().await; // the server is unchanged
        assert_eq!(cameras["streams_live"], 1);
        // Test, then save the real camera.
        browser
            .run(&format!(
                "const f = document.querySelector('#camera-form'); f.elements.source.value = '{}';
                 document.querySelector('#probe').click();",
                cam.url()
            ))
            .await;
        browser.until( Duration::from_secs(10), "the probe result",
            "return document.querySelector('#probe-result').textContent.includes('640×360');").await;
        // A model set in the same form: a missing field is named beside it, nothing is added.
        browser.run("const f = document.querySelector('#camera-form'); document.querySelector('#editor-model').open = true;
                     f.elements.vlm_endpoint.value = 'http://127.0.0.1:9/v1'; f.elements.vlm_prompt.value = 'Describe it.';
                     document.querySelector('#save').click();").await;
        browser.until(Duration::from_secs(5), "the model field's error",
            "return document.querySelector('#camera-form .field-error[data-field=\"analysis.vlm.model\"]').textContent.includes('empty');").await;
        assert_eq!(reqwest::get(server.url("/api/cameras/porch")).await.unwrap().status(), 404);
        browser.run("document.querySelector('#camera-form').elements.vlm_model.value = 'm';
                     document.querySelector('#save').click();").await;
        browser.until( Duration::from_secs(10), "porch in the list",
            "return !!document.querySelector('#list [data-id=\"porch\"]');").await;
        // Without --config the change went to the default file, and the UI says where.
        let status: serde_json::Value = reqwest::get(server.url("/api/config/status")).await.unwrap().json().await.unwrap();
        let file = status["file"].as_str().unwrap().to_string();
        assert!(file.ends_with("/livelens/livelens.toml"), "{file}");
        browser.until(Duration::from_secs(5), "where porch was saved",
            &format!("return document.querySelector('#message').textContent === 'Saved porch in {file}';")).await;
        assert!(std::fs::read_to_string(&file).unwrap().contains("id = \"porch\""));
        let saved: serde_json::Value = reqwest::get(server.url("/api/cameras/porch")).await.unwrap().json().await.unwrap();
        assert_eq!(saved["analysis"]["vlm"]["model"], "m", "{saved}");
        assert_eq!(saved["analysis"]["vlm"]["prompt"], "Describe it.", "{saved}");
        browser.until( Duration::from_secs(15), "porch live and playing",
            &format!("return document.querySelector('#list [data-id=\"porch\"] .badge').textContent === 'live' && (() => {{ {} }})() >= 10;", frames_of("porch"))).await;
        // The card offers its URLs for other players, and they serve.
        let links = browser
            .run("const c = document.querySelector('#list [data-id=\"porch\"]');
                  const hls = c.querySelector('[data-link=\"hls\"]').value;
                  const mjpeg = c.querySelector('[data-link=\"mjpeg\"]').value;
                  const rtsp = c.querySelector('[data-link=\"rtsp\"]').value;
                  const r = await fetch(hls);
                  const m = await fetch(mjpeg); const type = m.headers.get('content-type'); await m.body.cancel();
                  return {hls, mjpeg, rtsp, hlsStatus: r.status, playlist: await r.text(), type};")
            .await;
        assert!(links["hls"].as_str().unwrap().ends_with("/api/cameras/porch/hls/index.m3u8"), "{links}");
        assert_eq!(links["hlsStatus"], 200, "{links}");
        assert!(links["playlist"].as_str().unwrap().starts_with("#EXTM3U"), "{links}");
        assert_eq!(links["type"], "multipart/x-mixed-replace; boundary=frame", "{links}");
        // The RTSP link plays in a real RTSP client.
        let rtsp = links["rtsp"].as_str().unwrap();
        assert!(rtsp.starts_with("rtsp://127.0.0.1:") && rtsp.ends_with("/porch"), "{links}");
        common::require("ffprobe", "ffmpeg");
        let probe = std::process::Command::new("timeout")
            .args(["20", "ffprobe", "-v", "error", "-show_entries", "stream=width,height", "-of", "csv=p=0", rtsp])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&probe.stdout).trim(), "640,360", "{}", String::from_utf8_lossy(&probe.stderr));
        // Delete asks first, naming what goes; Cancel (the default) deletes nothing.
        let delete = "document.querySelector('#list [data-id=\"porch\"] [data-act=\"delete\"]').click();";
        browser.run(delete).await;
        browser.until(Duration::from_secs(2), "the confirmation naming porch",
            "const d = document.querySelector('#confirm-delete'); return d.open \
                && d.textContent.includes('Delete porch?') && d.textContent.includes('recordings and events stay') \
                && document.activeElement.textContent === 'Cancel';").await;
        browser.run("document.activeElement.click();").await;
        browser.until(Duration::from_secs(2), "the confirmation closed",
            "return !document.querySelector('#confirm-delete').open;").await;
        let r = reqwest::get(server.url("/api/cameras/porch")).await.unwrap();
        assert_eq!(r.status(), 200, "Cancel deleted the camera");
        assert!(browser.run("return !!document.querySelector('#list [data-id=\"porch\"]');").await.as_bool().unwrap());
        // Confirmed: gone from the list and from the server, with its viewers.
        browser.run(delete).await;
        browser.until(Duration::from_secs(2), "the confirmation open",
            "return document.querySelector('#confirm-delete').open;").await;
        browser.run("document.querySelector('#confirm-yes').click();").await;
        browser.until( Duration::from_secs(5), "porch removed",
            "return !document.querySelector('#list [data-id=\"porch\"]') && !document.querySelector('.tile[data-id=\"porch\"]');").await;
        let r = reqwest::get(server.url("/api/cameras/porch")).await.unwrap();
        assert_eq!(r.status(), 404);
        server
            .resources_until(Duration::from_secs(5), "one camera's viewers left", |r| r["streams_live"] == 1)
            .await;
        browser.close().await;
    });
}

#[test]
fn grid_of_four_plays_all_and_keyboard_switching_keeps_one_connection() {
    let _serial = common::browser::serial();
    let server = Server::start(&[]);
    for i in 1..=3 {
        let r = server.post_json(
            "/api/cameras",
            &json!({"id": format!("cam{i}"), "source": "testsrc://?size=320x240&fps=25&gop=25"}),
        );
        assert!(r.status().is_success());
    }
    for id in ["demo", "cam1", "cam2", "cam3"] {
        server.wait_live(id, Duration::from_secs(5));
    }
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let browser = Browser::start().await;
        browser.client.set_window_size(1280, 800).await.unwrap();
        browser.open_ui(&server.base).await;
        for id in ["demo", "cam1", "cam2", "cam3"] {
            browser.until( Duration::from_secs(15), &format!("{id} playing in the grid"),
                &format!("return (() => {{ {} }})() >= 10;", frames_of(id))).await;
        }
        screenshots(&browser, "grid").await;

        // Single view, then 100 switches with the keyboard.
        browser
            .run(
                "const Native = window.WebSocket; window.conns = new Set();
                 window.WebSocket = class extends Native { constructor(...a) { super(...a); window.conns.add(this); } };
                 const NativePc = window.RTCPeerConnection;
                 window.RTCPeerConnection = class extends NativePc {
                   constructor(...a) { super(...a); window.conns.add(this); }
                 };
                 window.liveConns = () => [...window.conns].filter((c) =>
                   c instanceof Native ? c.readyState <= 1 : c.connectionState !== 'closed').length;
                 document.querySelector('#view-toggle').click();",
            )
            .await;
        browser.until( Duration::from_secs(10), "the single view playing",
            "const p = document.querySelector('.tile.single-tile livelens-player'); return !!p && p.stats.frames >= 5;").await;
        screenshots(&browser, "single").await;
        for i in 0..100 {
            let live = browser
                .run("document.dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowRight'})); return window.liveConns();")
                .await;
            assert!(live.as_u64().unwrap() <= 1, "switch {i}: {live} player connections alive");
        }
        browser.until( Duration::from_secs(10), "the last camera playing",
            "const p = document.querySelector('.tile.single-tile livelens-player'); return p.stats.frames >= 5;").await;
        // Back to one viewer on the server.
        server
            .resources_until(Duration::from_secs(15), "one viewer on the server", |r| {
                r["viewers"]["mse"].as_i64().unwrap() + r["viewers"]["webrtc"].as_i64().unwrap() <= 1
                    && r["peer_connections"].as_i64().unwrap() <= 1
            })
            .await;
        browser.close().await;
    });
}

/// Where the UI tests leave their screenshots (the README's come from here).
fn shots_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-shots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The page as it is now, as `target/ui-shots/{name}.png`.
async fn shot(browser: &Browser, name: &str) {
    let png = browser.client.screenshot().await.unwrap();
    std::fs::write(shots_dir().join(format!("{name}.png")), png).unwrap();
}

/// Saves screenshots at desktop and phone width and checks the video areas are pictures.
async fn screenshots(browser: &Browser, name: &str) {
    let dir = shots_dir();
    for (w, h) in [(1280u32, 800u32), (390, 844)] {
        browser.client.set_window_size(w, h).await.unwrap();
        // Let the layout settle on the new size: wait for a presented frame after the resize.
        browser.until(
            Duration::from_secs(10),
            "a frame after resizing",
            "const p = document.querySelector('.tile livelens-player'); const n = p.stats.frames; \
             return new Promise((ok) => setTimeout(() => ok(p.stats.frames > n), 300));",
        )
        .await;
        let png = browser.client.screenshot().await.unwrap();
        let path = dir.join(format!("{name}-{w}x{h}.png"));
        std::fs::write(&path, &png).unwrap();
        // The first tile's rectangle, in CSS pixels (the screenshot is at device pixel ratio 1).
        let rect = browser
            .run("const r = document.querySelector('.tile').getBoundingClientRect(); return [r.x, r.y, r.width, r.height];")
            .await;
        let r: Vec<f64> = serde_json::from_value(rect).unwrap();
        let img = image::load_from_memory_with_format(&png, image::ImageFormat::Png)
            .unwrap()
            .to_luma8();
        let (x0, y0) = (r[0].max(0.0) as u32, r[1].max(0.0) as u32);
        let x1 = ((r[0] + r[2]) as u32).min(img.width());
        let y1 = ((r[1] + r[3]) as u32).min(img.height());
        assert!(
            x1 > x0 + 10 && y1 > y0 + 10,
            "{name} {w}x{h}: tile not on screen {r:?}"
        );
        let px: Vec<f64> = (y0..y1)
            .flat_map(|y| (x0..x1).map(move |x| (x, y)))
            .map(|(x, y)| img.get_pixel(x, y)[0] as f64)
            .collect();
        let mean = px.iter().sum::<f64>() / px.len() as f64;
        let var = px.iter().map(|p| (p - mean).powi(2)).sum::<f64>() / px.len() as f64;
        assert!(
            var > 200.0,
            "{name} {w}x{h}: the video area is blank (variance {var:.0}) — see {}",
            path.display()
        );
    }
    browser.client.set_window_size(1280, 800).await.unwrap();
}

#[test]
fn model_answers_over_the_player_a_timeline_and_a_prompt_editor() {
    let _serial = common::browser::serial();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let vlm = runtime.block_on(common::vlm_server::VlmServer::start(
        320,
        "Describe the scene.",
    ));
    vlm.set(|b| b.answer = "A white box over colour bars.".into());
    let config = format!(
        "[[camera]]\nid = \"cam\"\nsource = \"testsrc://?size=640x360&fps=25\"\n\
         [camera.analysis.vlm]\nendpoint = \"{}\"\nmodel = \"m\"\nprompt = \"Describe the scene.\"\n\
         interval = \"1s\"\nimage_width = 320\n",
        vlm.url
    );
    let path = common::write_config("ui-analysis", &config);
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    server.wait_live("cam", Duration::from_secs(5));
    runtime.block_on(async {
        let browser = Browser::start().await;
        browser.open_ui(&server.base).await;
        // The latest answer is shown over the player.
        browser.until(Duration::from_secs(10), "the caption",
            "return [...document.querySelectorAll('.tile[data-id=\"cam\"] .caption')].some(c => c.textContent === 'A white box over colour bars.');").await;
        // Single view: the timeline, with thumbnails that load.
        browser.client.set_window_size(1280, 800).await.unwrap();
        browser.run("document.querySelector('#view-toggle').click();").await;
        browser.until(Duration::from_secs(10), "timeline thumbnails",
            "const imgs = [...document.querySelectorAll('#timeline li[data-kind=\"vlm\"] img')]; return imgs.length >= 2 && imgs.every(i => i.complete && i.naturalWidth === 320);").await;
        // At 1280×800 the player, the model's live answer and the events are all on the first
        // screen, without scrolling: the answer in the side panel in words.
        browser.until(Duration::from_secs(5), "the live answer beside the player",
            "return document.querySelector('#live-answer .answer').textContent === 'A white box over colour bars.';").await;
        let placed = browser.run(
            "scrollTo(0, 0); const vh = innerHeight, vw = innerWidth;
             const within = (sel) => { const r = document.querySelector(sel).getBoundingClientRect();
               return r.height > 0 && r.top >= 0 && r.top < vh && r.left >= 0 && r.right <= vw + 1 ? null : [sel, r.top, r.bottom, r.left, r.right, vh]; };
             return ['.tile.single-tile', '#live-answer .answer', '#timeline li'].map(within).filter(Boolean);").await;
        assert_eq!(placed, json!([]), "not within the first 1280×800 screen (selector, top, bottom, left, right, height)");
        let player = browser.run("const r = document.querySelector('.tile.single-tile').getBoundingClientRect(); return r.bottom <= innerHeight;").await;
        assert_eq!(player, json!(true), "the player runs below the first screen");
        shot(&browser, "single-model-1280x800").await;
        let frames_before: u64 = browser.run(&frames_of("cam")).await.as_u64().unwrap_or(0);
        // A new prompt applies at once: the model gets it, and the picture never stopped.
        vlm.set(|b| b.expected_prompt = "Count the boxes.".into());
        browser.run("document.querySelector('#prompt').value = 'Count the boxes.'; document.querySelector('#prompt-form button').click();").await;
        browser.until(Duration::from_secs(5), "applied",
            "return document.querySelector('#prompt-status').textContent === 'applied';").await;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            if vlm.requests().iter().any(|r| r.prompt == "Count the boxes." && r.problem.is_none()) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the model never got the new prompt");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The player keeps presenting frames (the read above may have been moments ago, so wait
        // for the next frames rather than compare at once).
        let more = frames_of("cam").replace("return t && t.stats ? t.stats.frames : 0;",
            &format!("return t && t.stats && t.stats.frames >= {};", frames_before + 5));
        browser.until(Duration::from_secs(5), "the player still playing after the prompt change", &more).await;
        let r = server.resources_async().await;
        assert_eq!(r["streams_live"], 1);
        browser.close().await;
    });
    vlm.stop();
}

#[test]
fn the_speaker_button_shows_for_cameras_with_sound_and_unmutes_them() {
    let _serial = common::browser::serial();
    let aac = RtspCamera::start(&["--size", "320x240", "--audio", "aac"]);
    let server = Server::start(&[]);
    let r = server.post_json("/api/cameras", &json!({"id": "loud", "source": aac.url()}));
    assert!(r.status().is_success());
    server.wait_live("loud", Duration::from_secs(10));
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let browser = Browser::start().await;
        browser.open_ui(&server.base).await;
        let tile = |id: &str| format!("document.querySelector('.tile[data-id=\"{id}\"] livelens-player')");
        // Both tiles play; only the camera with sound gets a speaker, and it starts muted.
        for id in ["demo", "loud"] {
            browser
                .until(Duration::from_secs(10), &format!("{id} playing"),
                    &format!("const p = {}; return !!p && p.stats.frames >= 10;", tile(id)))
                .await;
        }
        browser
            .until(Duration::from_secs(5), "a speaker on the camera with sound",
                &format!("const b = {}.querySelector('.sound'); return !b.hidden && b.title === 'Unmute';", tile("loud")))
            .await;
        let demo_button = browser
            .run(&format!("return {}.querySelector('.sound').hidden;", tile("demo")))
            .await;
        assert_eq!(demo_button, json!(true), "the demo camera has no sound");
        // A click unmutes: the element plays sound and the button offers to mute again.
        browser
            .run(&format!("{}.querySelector('.sound').click();", tile("loud")))
            .await;
        let state = browser
            .run(&format!(
                "const p = {}; return [p.muted, p.video.muted, p.querySelector('.sound').title, p.stats.mode];",
                tile("loud")
            ))
            .await;
        assert_eq!(state[0], json!(false), "{state}");
        assert_eq!(state[1], json!(false), "{state}");
        assert_eq!(state[2], json!("Mute"), "{state}");
        eprintln!("player state after unmute: {state}");
        // Over WebRTC, the AAC camera's sound arrives (transcoded) with the fixture's tone level.
        if state[3] == "webrtc" {
            browser
                .until(Duration::from_secs(5), "audible sound",
                    &format!("const p = {}; let level = 0; (await p.session.pc.getStats()).forEach((s) => {{ if (s.type === 'inbound-rtp' && s.kind === 'audio') level = s.audioLevel || 0; }}); return level > 0.05;", tile("loud")))
                .await;
        }
        browser.close().await;
    });
}

#[test]
fn the_recordings_panel_switches_recording_on_shows_the_day_plays_a_span_and_goes_back_to_live() {
    let _serial = common::browser::serial();
    let dir = common::temp_dir("ui-recordings");
    let config = format!(
        "[recording]\npath = \"{}\"\n\n[[camera]]\nid = \"cam\"\nsource = \"testsrc://?size=640x360&fps=25&gop=25\"\n",
        dir.join("rec").display()
    );
    let path = common::write_config("ui-recordings-cfg", &config);
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    server.wait_live("cam", Duration::from_secs(5));
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let browser = Browser::start().await;
        browser.open_ui(&server.base).await;
        browser.run("document.querySelector('#view-toggle').click();").await;
        browser.until(Duration::from_secs(5), "the recordings panel",
            "const s = document.querySelector('#recording-state'); return !!s && s.dataset.state === 'off';").await;
        // Record: the switch goes through the API and the state follows.
        browser.run("document.querySelector('#record-toggle').click();").await;
        browser.until(Duration::from_secs(10), "recording",
            "return document.querySelector('#recording-state').dataset.state === 'recording';").await;
        assert_eq!(server.get_json("/api/cameras/cam")["record"], true);
        // The day's timeline shows the span once a few seconds are recorded.
        browser.until(Duration::from_secs(30), "a recorded span of 4 s on the timeline",
            "document.querySelector('#rec-day').dispatchEvent(new Event('change'));
             await new Promise(r => setTimeout(r, 300));
             const s = document.querySelector('#rec-timeline .rec-span');
             return !!s && Number(s.dataset.duration) >= 4;").await;
        // Pressing just before the span plays the recording from its start, in place of the
        // live player. (On the day's bar a pixel is over a minute: a press in the span's
        // middle may land in its last second, so the press is where it snaps to the start.)
        browser.run(
            "const bar = document.querySelector('#rec-timeline');
             const s = bar.querySelector('.rec-span').getBoundingClientRect();
             const x = s.left - 0.5, y = s.top + s.height / 2;
             const opts = {bubbles: true, clientX: x, clientY: y, pointerId: 1};
             bar.dispatchEvent(new PointerEvent('pointerdown', opts));
             bar.dispatchEvent(new PointerEvent('pointerup', opts));").await;
        browser.until(Duration::from_secs(10), "the recording playing",
            "const v = document.querySelector('#rec-video');
             window.recState = [v.hidden, v.videoWidth, v.currentTime, v.readyState, v.networkState, v.paused, v.ended, v.error && v.error.message, v.src];
             return !v.hidden && v.videoWidth === 640 && v.currentTime > 0.5 && v.src.includes('format=mp4');").await;
        // Back to live: the recording stops and the live player presents frames again.
        browser.run("document.querySelector('#rec-live').click();").await;
        browser.until(Duration::from_secs(5), "the recording closed",
            "const v = document.querySelector('#rec-video'); return v.hidden && !v.getAttribute('src');").await;
        let more = frames_of("cam").replace("return t && t.stats ? t.stats.frames : 0;",
            "return !!t && !!t.stats && t.stats.frames >= 10;");
        browser.until(Duration::from_secs(10), "live again", &more).await;
        // The download link asks for an MP4 attachment, and the server gives one.
        let href = browser.run("return document.querySelector('#rec-download').getAttribute('href');").await;
        let href = href.as_str().unwrap().to_string();
        assert!(href.contains("format=mp4") && href.contains("download=1"), "{href}");
        // Switching off from the panel.
        browser.run("document.querySelector('#record-toggle').click();").await;
        browser.until(Duration::from_secs(10), "off",
            "return document.querySelector('#recording-state').dataset.state === 'off';").await;
        browser.close().await;
    });
    assert_eq!(server.resources()["viewers"]["recording"], 0);
}

#[test]
fn search_plays_a_found_moment_and_the_model_form_saves_rules_with_field_errors() {
    let _serial = common::browser::serial();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let vlm = runtime.block_on(common::vlm_server::VlmServer::start(
        320,
        "Describe the scene.",
    ));
    vlm.set(|b| {
        b.answer = "A red car in the driveway.".into();
        // The rule's question, answered from the picture: is anything red in it (the bars are)?
        b.judge = Some(std::sync::Arc::new(|img, prompt| {
            prompt.starts_with("Is there a car?").then(|| {
                let red = img
                    .to_rgb8()
                    .pixels()
                    .any(|p| p.0[0] > 150 && p.0[1] < 90 && p.0[2] < 90);
                if red {
                    "Yes, there is something red."
                } else {
                    "No."
                }
                .to_string()
            })
        }));
    });
    let dir = common::temp_dir("ui-search");
    let config = format!(
        "[storage]\npath = \"{}\"\n[recording]\npath = \"{}\"\n\n[[camera]]\nid = \"cam\"\nsource = \"testsrc://?size=640x360&fps=25&gop=25\"\nrecord = true\n\
         [camera.analysis.vlm]\nendpoint = \"{}\"\nmodel = \"m\"\napi_key = \"sk-ui-secret\"\nprompt = \"Describe the scene.\"\ninterval = \"1s\"\nimage_width = 320\n",
        dir.join("events.db").display(),
        dir.join("rec").display(),
        vlm.url
    );
    let path = common::write_config("ui-search-cfg", &config);
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    server.wait_live("cam", Duration::from_secs(5));
    // A description inside the recording (its clip needs footage around it).
    common::wait_until(Duration::from_secs(30), "a description with a clip", || {
        server
            .get_json("/api/events/search?q=car")
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["clip"].is_string())
    });
    runtime.block_on(async {
        let browser = Browser::start().await;
        browser.open_ui(&server.base).await;
        browser.run("const i = document.querySelector('#search'); i.value = 'driveway'; i.dispatchEvent(new Event('input'));").await;
        browser.until(Duration::from_secs(5), "results with the word marked",
            "const r = document.querySelectorAll('#search-results .search-result[data-camera=\"cam\"]');
             const marks = [...document.querySelectorAll('#search-results mark')];
             return r.length > 0 && marks.length > 0 && marks.every(m => m.textContent.toLowerCase() === 'driveway');").await;
        browser.run("document.querySelector('#search-results .search-result .search-play').click();").await;
        browser.until(Duration::from_secs(10), "the found moment playing",
            "const v = document.querySelector('#rec-video');
             return window.livelensUi.selected === 'cam' && !!v && !v.hidden && v.currentTime > 0.3;").await;
        // The model form: a rule without a name or question gets its errors beside its fields.
        browser.run("document.querySelector('#model-settings').open = true;").await;
        browser.until(Duration::from_secs(5), "the form loaded",
            "const f = document.querySelector('#model-form'); return f.elements.endpoint.value !== '' && f.elements.api_key.value === '***';").await;
        browser.run("document.querySelector('#alert-add').click(); document.querySelector('#model-form button[type=submit]').click();").await;
        browser.until(Duration::from_secs(5), "the rule's errors",
            "const e = (f) => document.querySelector(`.field-error[data-field=\"${f}\"]`);
             return !!e('analysis.alert[0].name') && e('analysis.alert[0].name').textContent !== '' && e('analysis.alert[0].question').textContent !== '';").await;
        browser.run("const r = document.querySelector('.alert-rule');
             r.querySelector('input[data-key=name]').value = 'car';
             r.querySelector('input[data-key=question]').value = 'Is there a car?';
             document.querySelector('#model-form button[type=submit]').click();").await;
        browser.until(Duration::from_secs(5), "saved", "return document.querySelector('#model-status').textContent === 'saved';").await;
        browser.until(Duration::from_secs(15), "the rule's live state",
            "const b = document.querySelector('.alert-state[data-name=\"car\"]'); return !!b && b.dataset.active === 'true';").await;
        browser.run("document.querySelector('#model-test').click();").await;
        browser.until(Duration::from_secs(10), "the test's answer",
            "const t = document.querySelector('#model-test-result'); return t.textContent.includes('A red car') && !t.classList.contains('error');").await;
        browser.close().await;
    });
    let camera = server.get_json("/api/cameras/cam");
    assert_eq!(camera["analysis"]["alert"][0]["name"], "car");
    assert_eq!(camera["analysis"]["vlm"]["api_key"], "***");
    // The key kept its saved value (the model got requests with it; the file keeps it).
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .contains("sk-ui-secret"));
    vlm.stop();
}

/// The grid never passes a dead, stopped or idle camera off as live: each tile says its state in
/// the API's words with the reason, a publish: camera nobody sends to shows where to send, and
/// REC, an active alert (by name, also in the list) and a failing model are marked on the tile,
/// each within 2 s of the API saying so.
#[test]
fn every_tile_says_its_cameras_state_and_marks_rec_alerts_and_failing_models() {
    let _serial = common::browser::serial();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    const QUESTION: &str = "Is there a picture?";
    let vlm = runtime.block_on(common::vlm_server::VlmServer::start(320, "Describe."));
    // Answered from the picture: yes while it has detail (testsrc's pattern), no when flat.
    vlm.set(|b| {
        b.judge = Some(std::sync::Arc::new(|img, prompt| {
            if !prompt.starts_with(QUESTION) {
                return None;
            }
            let luma = img.to_luma8();
            let n = luma.pixels().len() as f64;
            let mean = luma.pixels().map(|p| p[0] as f64).sum::<f64>() / n;
            let var = luma
                .pixels()
                .map(|p| (p[0] as f64 - mean).powi(2))
                .sum::<f64>()
                / n;
            Some(if var > 200.0 { "Yes." } else { "No." }.to_string())
        }))
    });
    let dir = common::temp_dir("ui-states");
    let config = format!(
        "[recording]\npath = \"{rec}\"\n\n\
         [[camera]]\nid = \"ok\"\nsource = \"testsrc://?size=320x240&fps=25&gop=25\"\n\
         [camera.analysis.vlm]\nendpoint = \"{url}\"\nmodel = \"m\"\nprompt = \"Describe.\"\ninterval = \"1s\"\nimage_width = 320\n\
         [[camera.analysis.alert]]\nname = \"picture\"\nquestion = \"{QUESTION}\"\ninterval = \"500ms\"\n\n\
         [[camera]]\nid = \"dead\"\nsource = \"rtsp://127.0.0.1:9/nothing\"\n\n\
         [[camera]]\nid = \"pub\"\nsource = \"publish:\"\n\n\
         [[camera]]\nid = \"rec\"\nsource = \"testsrc://?size=320x240&fps=25&gop=25\"\nrecord = true\n\
         [camera.analysis.vlm]\nendpoint = \"http://127.0.0.1:9/v1\"\nmodel = \"m\"\ninterval = \"1s\"\n",
        rec = dir.join("rec").display(),
        url = vlm.url,
    );
    let path = common::write_config("ui-states-cfg", &config);
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    server.wait_live("ok", Duration::from_secs(5));
    let tile = |id: &str, js: &str| {
        format!("const t = document.querySelector('.tile[data-id=\"{id}\"]'); if (!t) return false; {js}")
    };
    runtime.block_on(async {
        let browser = Browser::start().await;
        browser.client.set_window_size(1280, 800).await.unwrap();
        browser.open_ui(&server.base).await;
        // The camera that cannot connect: its state and the reason, in words, on the tile.
        browser.until(Duration::from_secs(15), "the dead camera's reason on its tile",
            &tile("dead", "return ['retrying', 'failed'].includes(t.dataset.state) \
                && t.querySelector('.state').textContent === t.dataset.state \
                && t.querySelector('.why').textContent.includes('connection refused') \
                && getComputedStyle(t.querySelector('.status')).display !== 'none';")).await;
        // Nobody publishes to `pub`: where to send, and the browser's own camera.
        browser.until(Duration::from_secs(5), "the publish: camera's waiting tile",
            &tile("pub", "const p = t.querySelector('.publish'); \
                return t.querySelector('.state').textContent === 'waiting for a publisher' && !p.hidden \
                && p.textContent.includes(location.origin + '/api/cameras/pub/whip') \
                && [...p.querySelectorAll('button')].some((b) => b.textContent === 'Use my camera');")).await;
        // REC, and the model that refuses connections, on the recording camera.
        browser.until(Duration::from_secs(10), "REC and the failing model on the recording tile",
            &tile("rec", "const m = [...t.querySelectorAll('.mark')]; \
                return m.some((x) => x.classList.contains('rec') && x.textContent === 'REC') \
                && m.some((x) => x.classList.contains('model-error') && x.title.includes('connection refused'));")).await;
        // The live camera: no state box over its picture, and its alert once the model says yes.
        browser.until(Duration::from_secs(5), "the live tile without a state box",
            &tile("ok", "return t.dataset.state === 'live' \
                && getComputedStyle(t.querySelector('.status')).display === 'none' \
                && Number(getComputedStyle(t.querySelector('livelens-player')).opacity) === 1;")).await;
        common::wait_until(Duration::from_secs(20), "the alert active in the API", || {
            server.get_json("/api/cameras/ok")["analysis_status"]["alerts"][0]["active"] == true
        });
        browser.until(Duration::from_secs(2), "the alert's badge on the tile and in the list",
            &tile("ok", "return [...t.querySelectorAll('.mark.alert')].some((x) => x.textContent === 'picture') \
                && document.querySelector('.cam[data-id=\"ok\"] .alerts').textContent.includes('picture');")).await;
        screenshots_of_states(&browser).await;

        // Stopped: said within 2 s, and the last picture is dimmed, not shown as live.
        assert!(server.post("/api/cameras/ok/stop").status().is_success());
        browser.until(Duration::from_secs(2), "the stopped tile",
            &tile("ok", "return t.dataset.state === 'stopped' && t.querySelector('.state').textContent === 'stopped' \
                && Number(getComputedStyle(t.querySelector('livelens-player')).opacity) < 0.5 \
                && t.querySelectorAll('.mark.alert').length === 0;")).await;
        // Recording off: REC goes within 2 s.
        assert!(server.patch_camera("rec", &json!({"record": false})).status().is_success());
        browser.until(Duration::from_secs(2), "REC gone",
            &tile("rec", "return t.querySelectorAll('.mark.rec').length === 0;")).await;
        browser.close().await;
    });
}

/// The state grid at desktop and phone width, for the README (target/ui-shots).
async fn screenshots_of_states(browser: &Browser) {
    let dir = shots_dir();
    for (w, h) in [(1280u32, 800u32), (390, 844)] {
        browser.client.set_window_size(w, h).await.unwrap();
        browser.until(Duration::from_secs(5), "the layout at the new size",
            "return await new Promise((ok) => requestAnimationFrame(() => requestAnimationFrame(() => ok(true))));").await;
        let png = browser.client.screenshot().await.unwrap();
        std::fs::write(dir.join(format!("states-{w}x{h}.png")), &png).unwrap();
    }
    browser.client.set_window_size(1280, 800).await.unwrap();
}

/// Fraction of the viewport the grid's tiles cover (each tile's rectangle clipped to it).
const COVERAGE: &str = "const vw = innerWidth, vh = innerHeight; let a = 0;
    for (const t of document.querySelectorAll('#grid .tile')) {
      const r = t.getBoundingClientRect();
      a += Math.max(0, Math.min(r.right, vw) - Math.max(r.left, 0)) * Math.max(0, Math.min(r.bottom, vh) - Math.max(r.top, 0));
    }
    return a / (vw * vh);";

#[test]
fn a_wall_of_six_fills_the_screen_with_layouts_and_fullscreen_by_keyboard() {
    let _serial = common::browser::serial();
    let server = Server::start(&[]);
    let ids = ["demo", "w1", "w2", "w3", "w4", "w5"];
    for id in &ids[1..] {
        let r = server.post_json(
            "/api/cameras",
            &json!({"id": id, "source": "testsrc://?size=320x240&fps=10&gop=10"}),
        );
        assert!(r.status().is_success());
    }
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let browser = Browser::start().await;
        browser.client.set_window_size(1920, 1080).await.unwrap();
        browser.open_ui(&server.base).await;
        browser.run("localStorage.clear();").await;
        browser.open_ui(&server.base).await;
        browser.until(Duration::from_secs(10), "six tiles", "return document.querySelectorAll('#grid .tile').length === 6;").await;
        for id in ids {
            browser.until(Duration::from_secs(15), &format!("{id} playing"),
                &format!("return (() => {{ {} }})() >= 3;", frames_of(id))).await;
        }
        shot(&browser, "wall-1920x1080").await;
        // With the camera list shown, and folded away.
        let shown = browser.run(COVERAGE).await.as_f64().unwrap();
        browser.run("document.querySelector('#list-toggle').click();").await;
        let folded = browser.run(COVERAGE).await.as_f64().unwrap();
        println!("six tiles at 1920×1080 cover {:.0} % of the viewport with the list, {:.0} % without", shown * 100.0, folded * 100.0);
        assert!(shown >= 0.70, "six tiles cover {:.0} % of the viewport", shown * 100.0);
        assert!(folded > shown, "folding the list gave the grid nothing ({folded:.2} ≤ {shown:.2})");
        assert_eq!(browser.run("return document.querySelector('#list-toggle').getAttribute('aria-expanded');").await, json!("false"));

        // 2×2: four tiles fill the viewport, the others wait below it; kept across a reload.
        browser.run("const s = document.querySelector('#layout'); s.value = '2x2'; s.dispatchEvent(new Event('change'));").await;
        let rows = browser.run("return [...document.querySelectorAll('#grid .tile')].map((t) => { const r = t.getBoundingClientRect(); return [r.top, r.bottom]; });").await;
        let rows: Vec<[f64; 2]> = serde_json::from_value(rows).unwrap();
        let vh = browser.run("return innerHeight;").await.as_f64().unwrap();
        assert!(rows[..4].iter().all(|r| r[1] <= vh + 1.0), "2×2: the first four not all in view: {rows:?}");
        // (below the first four and main's bottom padding: at most its 16 px show)
        assert!(rows[4][0] >= vh - 16.5, "2×2: a fifth tile within the viewport: {rows:?} (height {vh})");
        browser.open_ui(&server.base).await;
        browser.until(Duration::from_secs(10), "the layout kept", "return document.querySelector('#layout').value === '2x2' \
            && document.body.classList.contains('list-hidden') && document.querySelectorAll('#grid .tile').length === 6;").await;

        // Keyboard only: Tab to the first tile's name, f for fullscreen and f to leave, Enter
        // opens the camera.
        let mut on_tile = false;
        for _ in 0..40 {
            browser.client.active_element().await.unwrap().send_keys("\u{E004}").await.unwrap();
            if browser.run("return document.activeElement.classList.contains('label');").await == json!(true) {
                on_tile = true;
                break;
            }
        }
        assert!(on_tile, "Tab never reached a tile");
        let id = browser.run("return document.activeElement.closest('.tile').dataset.id;").await;
        let focus_ring = browser.run("return getComputedStyle(document.activeElement).outlineStyle;").await;
        assert_ne!(focus_ring, json!("none"), "the focused tile shows no focus");
        browser.client.active_element().await.unwrap().send_keys("f").await.unwrap();
        browser.until(Duration::from_secs(5), "the tile in fullscreen",
            &format!("const f = document.fullscreenElement; return !!f && f.dataset.id === {id};")).await;
        browser.client.active_element().await.unwrap().send_keys("f").await.unwrap();
        browser.until(Duration::from_secs(5), "fullscreen left", "return document.fullscreenElement === null;").await;
        browser.client.active_element().await.unwrap().send_keys("\u{E007}").await.unwrap();
        browser.until(Duration::from_secs(5), "the camera opened",
            &format!("return window.livelensUi.view === 'single' && window.livelensUi.selected === {id};")).await;
        browser.close().await;
    });
}

/// axe-core's serious and critical violations on the page as it is now, within `scope` (a
/// JavaScript expression: `document`, or a selector in quotes): `(rule, impact, nodes)`.
async fn axe(browser: &Browser, scope: &str) -> Vec<(String, String, Vec<String>)> {
    let loaded = browser
        .run(&format!(
            "if (!window.axe) {{ const s = document.createElement('script'); s.textContent = {}; document.head.append(s); }} return !!window.axe;",
            serde_json::to_string(&common::tools::axe_core()).unwrap()
        ))
        .await;
    assert_eq!(loaded, json!(true), "axe-core did not load");
    let result = browser
        .run(&format!(
            "const r = await axe.run({scope}, {{ resultTypes: ['violations'] }});
             console.log('axe-core: ' + r.violations.map((v) => v.id + ' (' + v.impact + ')').join(', '));
             window.axeAll = (window.axeAll || []).concat(r.violations.map((v) => v.id + ' (' + v.impact + ', ' + v.nodes.length + ')'));
             return r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
               .map((v) => [v.id, v.impact, v.nodes.map((n) => n.target.join(' ') + ': ' + (n.failureSummary || '').split('\\n').slice(1, 2).join(''))]);",
        ))
        .await;
    serde_json::from_value(result).unwrap()
}

#[test]
fn axe_core_finds_no_serious_violation_in_the_grid_single_view_and_forms() {
    let _serial = common::browser::serial();
    let dir = common::temp_dir("ui-axe");
    let config = format!(
        "[recording]\npath = \"{rec}\"\n\n\
         [[camera]]\nid = \"front\"\nsource = \"testsrc://?size=320x240&fps=10&gop=10\"\nrecord = true\n\
         [camera.analysis.vlm]\nendpoint = \"http://127.0.0.1:9/v1\"\nmodel = \"m\"\ninterval = \"5s\"\n\
         [[camera.analysis.alert]]\nname = \"person\"\nquestion = \"Is there a person?\"\n\n\
         [[camera]]\nid = \"dead\"\nsource = \"rtsp://127.0.0.1:9/nothing\"\n\n\
         [[camera]]\nid = \"pub\"\nsource = \"publish:\"\n",
        rec = dir.join("rec").display(),
    );
    let path = common::write_config("ui-axe-cfg", &config);
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    server.wait_live("front", Duration::from_secs(10));
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let browser = Browser::start().await;
        browser.client.set_window_size(1280, 800).await.unwrap();
        browser.open_ui(&server.base).await;
        browser.until(Duration::from_secs(10), "three tiles", "return document.querySelectorAll('#grid .tile').length === 3 \
            && document.querySelectorAll('#list .cam').length === 3;").await;
        // The grid with the system panel open.
        browser.run("document.querySelector('#system-toggle').click();").await;
        browser.until(Duration::from_secs(5), "the system panel's rows",
            "return document.querySelectorAll('#system tbody tr').length === 3;").await;
        let mut found = Vec::new();
        found.push(("grid and system panel", axe(&browser, "document").await));
        shot(&browser, "system-1280x800").await;
        // The single view with its recordings panel and the model form open.
        browser.run("document.querySelector('.tile[data-id=\"front\"]').click();").await;
        browser.until(Duration::from_secs(10), "the single view's panels",
            "return !document.querySelector('#recordings').hidden && !document.querySelector('#analysis').hidden;").await;
        browser.run("document.querySelector('#model-settings').open = true;").await;
        found.push(("single view, recordings and model form", axe(&browser, "document").await));
        // The add form.
        browser.run("document.querySelector('#add').click();").await;
        browser.until(Duration::from_secs(2), "the add form", "return document.querySelector('#editor').open;").await;
        found.push(("add form", axe(&browser, "'#editor'").await));
        let all = browser.run("return window.axeAll;").await;
        println!("axe-core, every violation (rule, impact, nodes): {all}");
        browser.close().await;
        for (page, v) in &found {
            println!("axe-core, {page}: {} serious or critical: {v:#?}", v.len());
        }
        assert!(found.iter().all(|(_, v)| v.is_empty()), "serious or critical accessibility violations: {found:#?}");
    });
}

#[test]
fn the_system_panel_shows_cpu_memory_gpu_and_the_models_answer_times_as_the_api_does() {
    let _serial = common::browser::serial();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let vlm = runtime.block_on(common::vlm_server::VlmServer::start(320, "Describe."));
    let config = format!(
        "[[camera]]\nid = \"ok\"\nsource = \"testsrc://?size=320x240&fps=10&gop=10\"\n\
         [camera.analysis.vlm]\nendpoint = \"{url}\"\nmodel = \"m\"\nprompt = \"Describe.\"\ninterval = \"500ms\"\nimage_width = 320\n\n\
         [[camera]]\nid = \"dead\"\nsource = \"rtsp://127.0.0.1:9/nothing\"\n",
        url = vlm.url,
    );
    let path = common::write_config("ui-system-cfg", &config);
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    server.wait_live("ok", Duration::from_secs(10));
    common::wait_until(Duration::from_secs(15), "three answers", || {
        server.get_json("/api/cameras/ok")["analysis_status"]["vlm"]["latency_ms"]["count"].as_u64()
            >= Some(3)
    });
    runtime.block_on(async {
        let browser = Browser::start().await;
        browser.client.set_window_size(1280, 800).await.unwrap();
        browser.open_ui(&server.base).await;
        browser.run("document.querySelector('#system-toggle').click();").await;
        browser.until(Duration::from_secs(5), "the system panel with both cameras",
            "const s = document.querySelector('#system'); return !s.hidden && s.querySelectorAll('tbody tr').length === 2 \
                && /CPU [0-9.]+ %/.test(s.querySelector('.sys-cpu').textContent);").await;
        // What the panel says against what the API says, read in the same moment by the page.
        let ms = "const ms = (v) => v >= 1000 ? (v / 1000).toFixed(2) + ' s' : Math.round(v) + ' ms';";
        browser.until(Duration::from_secs(10), "the model's answer times as the API has them",
            &format!("{ms} const c = await (await fetch('/api/cameras/ok')).json(); const l = c.analysis_status.vlm.latency_ms; \
                const cell = document.querySelector('#system tr[data-id=\"ok\"] .sys-latency').textContent; \
                return cell === ms(l.p50) + ' / ' + ms(l.p95) \
                    && !!document.querySelector('#system tr[data-id=\"ok\"] svg polyline');")).await;
        let rss_ui = browser.run("return parseFloat(document.querySelector('#system .sys-rss').textContent.replace('memory ', ''));").await;
        let rss_api = server.resources()["rss_bytes"].as_f64().unwrap() / 1048576.0;
        let rss_ui = rss_ui.as_f64().unwrap();
        assert!((rss_ui - rss_api).abs() <= rss_api * 0.2, "RSS: the panel says {rss_ui} MB, /api/resources {rss_api:.0} MB");
        let gpu = browser.run("return document.querySelector('#system .sys-gpu').textContent;").await;
        let gpu_api = server.get_json("/api/system")["gpu"].clone();
        if gpu_api["available"] == false {
            assert!(gpu.as_str().unwrap().contains(gpu_api["reason"].as_str().unwrap()), "GPU: {gpu} vs {gpu_api}");
        }
        // The failing camera's row says so; closing the panel stops the polling.
        browser.until(Duration::from_secs(5), "the dead camera's state",
            "const r = document.querySelector('#system tr[data-id=\"dead\"]'); return !!r && ['retrying', 'failed'].includes(r.children[1].textContent);").await;
        browser.run("document.querySelector('#system-toggle').click();").await;
        assert_eq!(browser.run("return document.querySelector('#system').hidden;").await, json!(true));
        browser.close().await;
    });
}
