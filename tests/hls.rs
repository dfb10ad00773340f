//! LL-HLS: ffprobe and ffmpeg read the playlist; blocking playlist reloads wait for the part
//! they name; files are immutable and only this run's names are served; the muxer runs only
//! while requests come, and cycles leave every count at baseline.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::Server;
use reqwest::StatusCode;
use serde_json::Value;

const CAMERA: &str =
    "[[camera]]\nid = \"cam\"\nsource = \"testsrc://?size=640x360&fps=25&gop=25\"\n";

fn server(name: &str, extra: &str) -> Server {
    let path = common::write_config(name, &format!("{extra}\n{CAMERA}"));
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    server.wait_live("cam", Duration::from_secs(5));
    server
}

/// `(media sequence of the open segment, parts it has, preload hint URI)` from a playlist.
fn open_segment(playlist: &str) -> (u64, u64, String) {
    let first: u64 = playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .expect("media sequence")
        .parse()
        .unwrap();
    let complete = playlist.matches("#EXTINF:").count() as u64;
    let after_last = playlist
        .rsplit_once(".mp4\n#EXT-X-PROGRAM-DATE-TIME")
        .map_or(playlist, |(_, rest)| rest);
    let open_parts = after_last.matches("#EXT-X-PART:").count() as u64;
    let hint = playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\""))
        .expect("preload hint")
        .trim_end_matches('"')
        .to_string();
    (first + complete, open_parts, hint)
}

#[test]
fn ffprobe_and_ffmpeg_read_the_playlist() {
    common::require("ffprobe", "ffmpeg");
    let server = server("hls-ffmpeg", "");
    for url in [
        server.url("/api/cameras/cam/hls/index.m3u8"),
        server.url("/api/stream.m3u8?src=cam"),
    ] {
        let out = Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "stream=codec_name,width,height",
            ])
            .args(["-of", "json", &url])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let probe: Value = serde_json::from_slice(&out.stdout).unwrap();
        let stream = &probe["streams"][0];
        assert_eq!(stream["codec_name"], "h264", "{probe}");
        assert_eq!(
            (stream["width"].as_u64(), stream["height"].as_u64()),
            (Some(640), Some(360))
        );
    }
    // 50 frames decoded, within 3 s.
    let started = Instant::now();
    let out = Command::new("timeout")
        .args(["3", "ffmpeg", "-v", "error", "-i"])
        .arg(server.url("/api/cameras/cam/hls/index.m3u8"))
        .args(["-frames:v", "50", "-f", "framemd5", "-"])
        .output()
        .unwrap();
    let frames = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("0,"))
        .count();
    assert!(
        frames >= 50,
        "{frames} frames in {:?}: {}",
        started.elapsed(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_blocking_reload_waits_for_the_next_part_and_bad_ones_get_400() {
    let server = server("hls-blocking", "");
    let playlist = server.get("/api/cameras/cam/hls/stream.m3u8");
    assert_eq!(playlist.status(), StatusCode::OK);
    assert_eq!(playlist.headers()["cache-control"], "no-cache");
    assert_eq!(
        playlist.headers()["content-type"],
        "application/vnd.apple.mpegurl"
    );
    let text = playlist.text().unwrap();
    assert!(
        text.contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES"),
        "{text}"
    );
    for round in 0..5 {
        let text = server
            .get("/api/cameras/cam/hls/stream.m3u8")
            .text()
            .unwrap();
        let (msn, parts, hint) = open_segment(&text);
        // The part after the last listed one: the one the preload hint names.
        let started = Instant::now();
        let r = server.get(&format!(
            "/api/cameras/cam/hls/stream.m3u8?_HLS_msn={msn}&_HLS_part={parts}"
        ));
        let waited = started.elapsed();
        assert_eq!(r.status(), StatusCode::OK, "round {round}");
        assert!(
            r.headers()["cache-control"]
                .to_str()
                .unwrap()
                .starts_with("public, max-age="),
            "a blocking answer names its part and may be cached"
        );
        let answer = r.text().unwrap();
        assert!(
            answer.contains(&format!("URI=\"{hint}\"")),
            "round {round}: the answer lists the part it waited for ({hint}):\n{answer}"
        );
        // A part is 200 ms: the answer came when it existed, not a reload interval later.
        assert!(
            waited < Duration::from_millis(1500),
            "round {round}: waited {waited:?}"
        );
    }
    let text = server
        .get("/api/cameras/cam/hls/stream.m3u8")
        .text()
        .unwrap();
    let (msn, _, _) = open_segment(&text);
    for query in [
        format!("_HLS_msn={}", msn + 5),
        format!("_HLS_msn={msn}&_HLS_part=500"),
        "_HLS_part=1".to_string(),
        "_HLS_msn=-1".to_string(),
        "_HLS_msn=x".to_string(),
    ] {
        let r = server.get(&format!("/api/cameras/cam/hls/stream.m3u8?{query}"));
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{query}");
    }
}

#[test]
fn files_are_immutable_and_only_this_runs_names_are_served() {
    let server = server("hls-files", "");
    let text = server
        .get("/api/cameras/cam/hls/stream.m3u8")
        .text()
        .unwrap();
    let init = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MAP:URI=\""))
        .unwrap()
        .trim_end_matches('"')
        .to_string();
    let segment = text
        .lines()
        .find(|l| l.ends_with(".mp4") && !l.starts_with('#'))
        .unwrap()
        .to_string();
    let part = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-PART:"))
        .and_then(|l| l.split("URI=\"").nth(1))
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    for (name, first_box) in [(&init, "ftyp"), (&segment, "moof"), (&part, "moof")] {
        let r = server.get(&format!("/api/cameras/cam/hls/{name}"));
        assert_eq!(r.status(), StatusCode::OK, "{name}");
        assert_eq!(r.headers()["content-type"], "video/mp4");
        assert_eq!(
            r.headers()["cache-control"],
            "public, max-age=3600, immutable"
        );
        let bytes = r.bytes().unwrap();
        assert_eq!(&bytes[4..8], first_box.as_bytes(), "{name}");
    }
    let prefix = init.split('-').next().unwrap();
    let other = if prefix == "00000000" {
        "00000001"
    } else {
        "00000000"
    };
    for name in [
        segment.replacen(prefix, other, 1),
        format!("{prefix}-seg999999.mp4"),
        format!("{prefix}-part999999.mp4"),
        format!("{prefix}-init7.mp4"),
        "..%2F..%2Fetc%2Fpasswd".to_string(),
    ] {
        let r = server.get(&format!("/api/cameras/cam/hls/{name}"));
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{name}");
    }
    assert_eq!(
        server.get("/api/cameras/nope/hls/index.m3u8").status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        server.get("/api/stream.m3u8").status(),
        StatusCode::BAD_REQUEST
    );
}

#[test]
fn the_muxer_closes_without_requests_and_cycles_leave_nothing_behind() {
    let server = server("hls-close", "[hls]\nclose_after = \"1s\"\n");
    let baseline = common::counts(&server.resources());
    assert_eq!(baseline["viewers"]["hls"], 0);
    let text = server
        .get("/api/cameras/cam/hls/stream.m3u8")
        .text()
        .unwrap();
    let prefix = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MAP:URI=\""))
        .unwrap()
        .split('-')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(server.resources()["viewers"]["hls"], 1);
    // No request for a second: the muxer stops, and its files are gone with it.
    common::wait_until(Duration::from_secs(5), "the muxer closed", || {
        common::counts(&server.resources()) == baseline
    });
    assert_eq!(
        server
            .get(&format!("/api/cameras/cam/hls/{prefix}-init0.mp4"))
            .status(),
        StatusCode::NOT_FOUND
    );
    // Cycles: a playlist starts the muxer (and waits for its first 1 s segment), stopping the
    // camera ends it.
    for i in 0..20 {
        let r = server.get("/api/cameras/cam/hls/stream.m3u8");
        assert_eq!(r.status(), StatusCode::OK, "cycle {i}: {:?}", r.text());
        assert_eq!(
            server.post("/api/cameras/cam/stop").status(),
            StatusCode::OK
        );
        let r = server.get("/api/cameras/cam/hls/stream.m3u8");
        assert_eq!(
            r.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "cycle {i}: stopped"
        );
        assert_eq!(
            server.post("/api/cameras/cam/start").status(),
            StatusCode::OK
        );
    }
    server.wait_live("cam", Duration::from_secs(5));
    common::wait_until(Duration::from_secs(5), "counts back at baseline", || {
        common::counts(&server.resources()) == baseline
    });
    // And a new client is served, by a new muxer with new names.
    let text = server
        .get("/api/cameras/cam/hls/stream.m3u8")
        .text()
        .unwrap();
    assert!(text.contains("#EXTINF:"), "{text}");
    assert!(!text.contains(&format!("{prefix}-")));
}

#[test]
fn a_request_waiting_longer_than_close_after_keeps_its_muxer() {
    // A 3 s GOP: the first segment takes longer than `close_after`, and the request waiting
    // for it must not see its muxer closed under it for want of requests.
    let path = common::write_config(
        "hls-slow-gop",
        "[hls]\nclose_after = \"1s\"\n[[camera]]\nid = \"cam\"\n\
         source = \"testsrc://?size=320x180&fps=25&gop=75\"\n",
    );
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    server.wait_live("cam", Duration::from_secs(5));
    let r = server.get("/api/cameras/cam/hls/stream.m3u8");
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text());
    assert!(r.text().unwrap().contains("#EXTINF:"));
}

#[test]
fn chromium_plays_the_playlist_through_the_player_and_natively() {
    use common::browser::Browser;
    let _serial = common::browser::serial();
    let server = server("hls-chromium", "");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let browser = Browser::start().await;
        browser.blank_page(&server.base).await;
        // Cold start: the muxer starts with the player's request. Chromium's own HLS player
        // starts three segments back and fails on fewer, so the player waits for three.
        browser
            .run(
                "await import('/player.js');
                 const p = document.createElement('livelens-player'); p.setAttribute('mode', 'hls');
                 p.setAttribute('src', 'cam'); document.body.append(p); window.p = p;",
            )
            .await;
        browser
            .until(
                Duration::from_secs(25),
                "50 frames through <livelens-player mode=hls>",
                "return window.p.stats.frames >= 50;",
            )
            .await;
        browser
            .until(
                Duration::from_secs(10),
                "a latency reading from the time strip",
                "return window.p.stats.latency !== null;",
            )
            .await;
        let stats = browser.run("return window.p.stats;").await;
        eprintln!("LL-HLS player stats: {stats}");
        assert_eq!(stats["mode"], "hls", "{stats}");
        assert!(stats["error"].is_null(), "{stats}");
        browser.run("window.p.remove();").await;
        // A plain <video> with the playlist, the muxer now warm.
        browser
            .run(
                "const v = document.createElement('video'); v.muted = true; v.autoplay = true;
                 v.src = '/api/cameras/cam/hls/index.m3u8'; document.body.append(v);
                 window.v = v; window.vframes = 0;
                 const count = () => { window.vframes++; v.requestVideoFrameCallback(count); };
                 v.requestVideoFrameCallback(count);",
            )
            .await;
        browser
            .until(
                Duration::from_secs(15),
                "50 frames in a native <video>",
                "return window.vframes >= 50 && window.v.videoWidth === 640 && !window.v.error;",
            )
            .await;
        browser
            .run("window.v.removeAttribute('src'); window.v.load(); window.v.remove();")
            .await;
        browser.close().await;
    });
}
