//! LL-HLS: ffprobe and ffmpeg read the playlist; blocking playlist reloads wait for the part
//! they name; files are immutable and only this run's names are served; the muxer runs only
//! while requests come, and cycles leave every count at baseline.

use crate::common;

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
    let prefix = run_prefix(&text);
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

/// The muxer run's file-name prefix (what comes before `-` in its `EXT-X-MAP` URI).
fn run_prefix(playlist: &str) -> String {
    playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MAP:URI=\""))
        .unwrap()
        .split('-')
        .next()
        .unwrap()
        .to_string()
}

/// A media playlist as a client reads it.
#[derive(Debug)]
struct Listing {
    target: f64,
    media_sequence: u64,
    discontinuity_sequence: u64,
    skipped: u64,
    segments: Vec<Listed>,
}

#[derive(Debug, Default, Clone)]
struct Listed {
    msn: u64,
    parts: u64,
    complete: bool,
    duration: f64,
    discontinuity: bool,
    map: Option<String>,
}

fn tag<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.strip_prefix(prefix))
}

impl Listing {
    fn parse(text: &str) -> Listing {
        let value = |prefix: &str| tag(text, prefix);
        let media_sequence = value("#EXT-X-MEDIA-SEQUENCE:")
            .expect(text)
            .parse()
            .unwrap();
        let skipped: u64 = value("#EXT-X-SKIP:SKIPPED-SEGMENTS=").map_or(0, |v| v.parse().unwrap());
        let mut segments = Vec::new();
        let mut current = Listed {
            msn: media_sequence + skipped,
            ..Listed::default()
        };
        for line in text.lines() {
            if line == "#EXT-X-DISCONTINUITY" {
                current.discontinuity = true;
            } else if let Some(uri) = line.strip_prefix("#EXT-X-MAP:URI=\"") {
                current.map = Some(uri.trim_end_matches('"').to_string());
            } else if line.starts_with("#EXT-X-PART:") {
                current.parts += 1;
            } else if let Some(d) = line.strip_prefix("#EXTINF:") {
                current.duration = d.trim_end_matches(',').parse().unwrap();
            } else if !line.starts_with('#') && !line.is_empty() {
                current.complete = true;
                let next = current.msn + 1;
                segments.push(std::mem::take(&mut current));
                current.msn = next;
            }
        }
        if current.parts > 0 {
            segments.push(current);
        }
        Listing {
            target: value("#EXT-X-TARGETDURATION:")
                .expect(text)
                .parse()
                .unwrap(),
            media_sequence,
            discontinuity_sequence: value("#EXT-X-DISCONTINUITY-SEQUENCE:")
                .expect(text)
                .parse()
                .unwrap(),
            skipped,
            segments,
        }
    }

    /// Seconds of complete segments listed (a delta update lists fewer).
    fn seconds(&self) -> f64 {
        self.segments
            .iter()
            .filter(|s| s.complete)
            .map(|s| s.duration)
            .sum()
    }

    /// The last part listed, as `(msn, index in its segment)`.
    fn last_part(&self) -> (u64, u64) {
        let s = self
            .segments
            .iter()
            .rev()
            .find(|s| s.parts > 0)
            .expect("a part");
        (s.msn, s.parts - 1)
    }
}

/// The lead's "never empty": across a new description (PATCHed source), a stop and a start,
/// the playlist keeps its segments (≥ 3 target durations once it had them) behind an
/// `EXT-X-DISCONTINUITY` and a new `EXT-X-MAP`, media sequence numbers only go up, and every
/// blocking delta request (`_HLS_skip=YES`, as hls.js sends) is answered with the part it
/// asked for and a complete segment.
#[test]
fn source_restarts_keep_the_playlist_and_blocking_delta_requests_get_their_part() {
    let server = server("hls-restart", "");
    let full = |server: &Server| -> (String, Listing) {
        let text = server
            .get("/api/cameras/cam/hls/stream.m3u8")
            .text()
            .unwrap();
        let l = Listing::parse(&text);
        (text, l)
    };
    let (text, listing) = full(&server);
    let prefix = run_prefix(&text);
    let mut last = listing.last_part();
    let mut media_sequence = listing.media_sequence;
    let mut floor_reached = false;
    let started = Instant::now();
    let (mut patched, mut restarted) = (false, false);
    let mut answers = 0;
    while started.elapsed() < Duration::from_secs(17) {
        let t = started.elapsed();
        if !patched && t > Duration::from_secs(4) {
            // New settings: a new description, so a new init segment.
            let r = server.patch_camera(
                "cam",
                &serde_json::json!({"source": "testsrc://?size=320x180&fps=25&gop=25"}),
            );
            assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text());
            patched = true;
        }
        if !restarted && t > Duration::from_secs(9) {
            // Stopped and started again: the muxer follows the camera to its next run.
            assert_eq!(
                server.post("/api/cameras/cam/stop").status(),
                StatusCode::OK
            );
            let r = server.get("/api/cameras/cam/hls/stream.m3u8");
            assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "stopped");
            assert_eq!(
                server.post("/api/cameras/cam/start").status(),
                StatusCode::OK
            );
            server.wait_live("cam", Duration::from_secs(5));
            restarted = true;
        }
        let (msn, part) = (last.0, last.1 + 1);
        let r = server.get(&format!(
            "/api/cameras/cam/hls/stream.m3u8?_HLS_msn={msn}&_HLS_part={part}&_HLS_skip=YES"
        ));
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "{msn}.{part} at {t:?}: {:?}",
            r.text()
        );
        let text = r.text().unwrap();
        let answer = Listing::parse(&text);
        assert!(
            answer.segments.iter().any(|s| s.complete),
            "a complete segment in every answer:\n{text}"
        );
        let got = answer.last_part();
        assert!(
            got > last,
            "asked for {msn}.{part}, the answer ends at {got:?}:\n{text}"
        );
        if answer.skipped > 0 {
            assert!(
                text.contains(&format!(
                    "#EXT-X-SKIP:SKIPPED-SEGMENTS={}\n#EXT-X-",
                    answer.skipped
                )) && text
                    .split_once("#EXT-X-SKIP")
                    .unwrap()
                    .1
                    .contains("#EXT-X-MAP:"),
                "a delta update names the init segment of what it lists:\n{text}"
            );
        }
        last = got;
        answers += 1;
        // The whole playlist: never shorter than three target durations once it was.
        let (text, l) = full(&server);
        assert!(
            l.media_sequence >= media_sequence,
            "media sequence went back:\n{text}"
        );
        media_sequence = l.media_sequence;
        // RFC 8216 §4.3.3.1: the target never changes, and no segment rounds above it.
        assert_eq!(l.target, listing.target, "target duration changed:\n{text}");
        assert!(
            l.segments.iter().all(|s| s.duration.round() <= l.target),
            "a segment longer than the target:\n{text}"
        );
        if l.seconds() >= 3.0 * l.target {
            floor_reached = true;
        } else {
            assert!(
                !floor_reached,
                "{:.2} s listed with a target of {} s at {t:?}:\n{text}",
                l.seconds(),
                l.target
            );
        }
    }
    assert!(restarted && answers > 40, "{answers} answers");
    assert!(floor_reached);
    let (text, l) = full(&server);
    // The PATCH changed the description: a discontinuity with the new init segment (unless
    // it already rolled off, which the discontinuity sequence then counts).
    let tagged = l
        .segments
        .iter()
        .any(|s| s.discontinuity && s.map.is_some());
    assert!(tagged || l.discontinuity_sequence > 0, "{text}");
    assert!(text.contains("#EXT-X-MAP:URI=\""), "{text}");
    assert!(
        text.contains(&format!("{prefix}-")),
        "the same muxer (file names) throughout:\n{text}"
    );
    // Every init segment listed is served, and the newest plays the new size.
    for s in &l.segments {
        if let Some(map) = &s.map {
            let r = server.get(&format!("/api/cameras/cam/hls/{map}"));
            assert_eq!(r.status(), StatusCode::OK, "{map}");
        }
    }
}

/// A camera whose microphone starts late: its MPEG-TS announces AAC, but the first sound comes
/// 8 s after the first picture. The muxer, started before, is video-only until then; within
/// one segment of the camera reporting audio, the playlist's `CODECS` has it and a new init
/// segment (after `EXT-X-DISCONTINUITY`) carries the track.
#[test]
fn audio_that_a_camera_reports_late_joins_the_codecs_within_one_segment() {
    common::require("ffmpeg", "ffmpeg");
    let dir = common::temp_dir("hls-late-audio-clip");
    let clip = dir.join("late-audio.ts");
    let status = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-map", "0:v", "-map", "1:a", "-t", "16"])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
            "-bf",
            "0",
        ])
        .args(["-c:a", "aac", "-f", "mpegts"])
        .arg(&clip)
        .status()
        .unwrap();
    assert!(status.success());
    // FFmpeg alone cannot send pictures before sound: its MPEG-TS muxer waits for a packet of
    // every stream. So the camera is FFmpeg's stream with the audio packets (PID 0x101, the
    // second stream) held back for the first seconds, as a microphone that starts late.
    let script = dir.join("late_microphone.py");
    std::fs::write(&script, LATE_MICROPHONE).unwrap();
    let path = common::write_config(
        "hls-late-audio",
        &format!(
            "[sources]\nallow_exec = true\n\n[[camera]]\nid = \"late\"\n\
             source = \"exec:python3 {} {} 8\"\n",
            script.display(),
            clip.display()
        ),
    );
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    server.wait_live("late", Duration::from_secs(10));
    let codecs = |server: &Server| -> String {
        let text = server
            .get("/api/cameras/late/hls/index.m3u8")
            .text()
            .unwrap();
        text.split("CODECS=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string()
    };
    let first = codecs(&server);
    assert!(
        server.get_json("/api/cameras/late")["audio"].is_null(),
        "the camera already had audio: the test proves nothing"
    );
    assert!(!first.contains("mp4a"), "{first}");
    // Poll both until the playlist has the audio; note when each changed.
    let started = Instant::now();
    let (mut reported, mut listed) = (None, None);
    while listed.is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no audio in CODECS"
        );
        if reported.is_none() && !server.get_json("/api/cameras/late")["audio"].is_null() {
            reported = Some(Instant::now());
        }
        if codecs(&server).contains("mp4a.40.2") {
            listed = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(20)); // polling interval, not a wait for a state
    }
    let reported = reported.unwrap_or(listed.unwrap());
    let lag = listed.unwrap().duration_since(reported);
    // `CODECS` names the init segment in force from the keyframe that starts it; the segment
    // that needs it is listed once it is complete.
    let mut text = String::new();
    common::wait_until(
        Duration::from_secs(5),
        "the segment after the audio came",
        || {
            text = server
                .get("/api/cameras/late/hls/stream.m3u8")
                .text()
                .unwrap();
            Listing::parse(&text)
                .segments
                .iter()
                .any(|s| s.discontinuity)
        },
    );
    let l = Listing::parse(&text);
    eprintln!("CODECS had the audio {lag:?} after the camera reported it");
    // One segment (the 1 s GOP), and the polling interval.
    assert!(
        lag.as_secs_f64() <= l.target + 0.2,
        "audio joined CODECS {lag:?} after the camera reported it"
    );
    let new = l
        .segments
        .iter()
        .find(|s| s.discontinuity)
        .expect(&text)
        .map
        .clone()
        .expect("a new EXT-X-MAP after the discontinuity");
    let init = server
        .get(&format!("/api/cameras/late/hls/{new}"))
        .bytes()
        .unwrap();
    assert!(
        init.windows(4).any(|w| w == b"mp4a"),
        "the new init segment has the audio track"
    );
}

/// `late_microphone.py CLIP SECONDS`: FFmpeg's MPEG-TS of CLIP at its pace on stdout, without
/// the audio packets (PID 0x101) of its first SECONDS; the audio resumes at a packet that starts
/// a PES, so the first sound is whole.
const LATE_MICROPHONE: &str = r#"
import subprocess, sys, time
clip, after = sys.argv[1], float(sys.argv[2])
ffmpeg = subprocess.Popen(
    ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-i", clip,
     "-map", "0", "-c", "copy", "-f", "mpegts", "-"], stdout=subprocess.PIPE)
out = sys.stdout.buffer
began, pending, sound = time.monotonic(), b"", False
while True:
    data = ffmpeg.stdout.read1(65536)
    if not data:
        break
    pending += data
    whole = len(pending) // 188 * 188
    keep = bytearray()
    for i in range(0, whole, 188):
        packet = pending[i:i + 188]
        if not sound and ((packet[1] & 0x1F) << 8 | packet[2]) == 0x101:
            if time.monotonic() - began < after or not packet[1] & 0x40:
                continue
            sound = True
        keep += packet
    pending = pending[whole:]
    out.write(keep)
    out.flush()
sys.exit(ffmpeg.wait())
"#;

/// FFmpeg reads the sync clip's LL-HLS with sound and picture together, and the decode times
/// of the init segment and every part, as a low-latency client fetches them, only go forward.
#[test]
fn the_sync_clip_over_ll_hls_is_in_sync_and_its_decode_times_only_go_forward() {
    let clip = common::sync::clip_ts();
    let path = common::write_config(
        "hls-sync",
        &format!(
            "[[camera]]\nid = \"clip\"\nsource = \"file://{}\"\n",
            clip.display()
        ),
    );
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    server.wait_live("clip", Duration::from_secs(10));
    common::wait_until(Duration::from_secs(10), "the clip's audio", || {
        !server.get_json("/api/cameras/clip")["audio"].is_null()
    });
    // Parts as hls.js fetches them: the init segment, then each new part after a blocking
    // reload, for 8 s.
    let bytes = common::ll_hls::parts(&server.http, &server.base, "clip", 8.0);
    let tracks = common::sync::decode_times(&bytes);
    assert_eq!(tracks.len(), 2, "video and audio");
    assert!(tracks[&1].len() > 150, "{} pictures", tracks[&1].len());
    common::sync::assert_decode_times_monotonic("LL-HLS init + parts", &bytes);
    let offsets =
        common::sync::av_offsets(&server.url("/api/cameras/clip/hls/index.m3u8"), &[], 12.0);
    common::sync::assert_in_sync("LL-HLS read by FFmpeg", &offsets, 4, 0.040);
}
