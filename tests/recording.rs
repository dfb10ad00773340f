//! Recording and playback against the real binary: FFmpeg publishes a camera with sound, the
//! recordings are listed and cut through the MediaMTX-shaped API, and ffprobe/ffmpeg read what
//! comes back; a SIGKILL loses at most a part; retention deletes the oldest; a full or
//! unwritable folder pauses recording while live view goes on; record on/off cycles leave every
//! count at its baseline; a large index lists fast; events link to their footage.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::media::{ffmpeg_publisher, probe_file as probe, Push};
use common::{counts, wait_until, Server};
use serde_json::{json, Value};

fn list(server: &Server, camera: &str) -> Vec<Value> {
    server
        .get_json(&format!("/api/playback/list?path={camera}"))
        .as_array()
        .unwrap()
        .clone()
}

/// Seconds since the epoch of an RFC 3339 time (UTC, as livelens writes them).
fn seconds(rfc3339: &str) -> f64 {
    let out = Command::new("date")
        .args(["-u", "-d", rfc3339, "+%s.%N"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn rfc3339(secs: f64) -> String {
    let out = Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("@{secs:.3}"),
            "+%Y-%m-%dT%H:%M:%S.%3NZ",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The first span's length once it is at least `at_least` seconds long.
fn wait_recorded(server: &Server, camera: &str, at_least: f64, deadline: Duration) -> Value {
    let mut found = Value::Null;
    wait_until(deadline, &format!("{at_least} s recorded"), || {
        found = list(server, camera).first().cloned().unwrap_or(Value::Null);
        found["duration"].as_f64().unwrap_or(0.0) >= at_least
    });
    found
}

/// Decodes every frame of the video; returns how many, and asserts there was no error.
fn decode(path: &Path) -> u64 {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-map", "0:v", "-f", "framemd5", "-"])
        .output()
        .unwrap();
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && errors.trim().is_empty(),
        "decoding {}: {errors}",
        path.display()
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .count() as u64
}

/// Downloads `url` to `to`.
fn fetch(server: &Server, url: &str, to: &Path) {
    let r = server
        .http
        .get(server.url(url))
        .timeout(Duration::from_secs(30))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "GET {url}");
    assert_eq!(r.headers()["accept-ranges"], "bytes");
    assert_eq!(r.headers()["content-type"], "video/mp4");
    std::fs::write(to, r.bytes().unwrap()).unwrap();
}

#[test]
fn five_seconds_from_the_middle_of_twenty_with_sound_come_back_exact_and_whole() {
    let dir = common::temp_dir("rec-get");
    let config = format!(
        "[rtsp]\nlisten = \"127.0.0.1:0\"\n[rtmp]\nenabled = false\n[recording]\npath = \"{}\"\nsegment = \"8s\"\n\n[[camera]]\nid = \"cam\"\nsource = \"publish:\"\nrecord = true\n",
        dir.join("rec").display()
    );
    let path = common::write_config("rec-get-cfg", &config);
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    let port = server.get_json("/api/outputs")["rtsp"]["port"]
        .as_u64()
        .unwrap();
    let mut publisher =
        ffmpeg_publisher(&format!("rtsp://127.0.0.1:{port}/cam"), Push::Rtsp("tcp"));
    let span = wait_recorded(&server, "cam", 20.0, Duration::from_secs(40));
    let status = server.get_json("/api/cameras/cam");
    assert_eq!(status["recording"]["state"], "recording", "{status}");
    assert_eq!(status["record"], true);
    // Segments of 8 s: the middle 5 s cross from the second segment into the third.
    let start = rfc3339(seconds(span["start"].as_str().unwrap()) + 12.3);
    for format in ["mp4", "fmp4"] {
        let file = dir.join(format!("clip.{format}"));
        let url = format!("/api/playback/get?path=cam&start={start}&duration=5&format={format}");
        fetch(&server, &url, &file);
        let (duration, codecs) = probe(&file);
        assert!((duration - 5.0).abs() <= 0.04, "{format}: {duration} s");
        assert_eq!(codecs, vec!["h264", "aac"], "{format}");
        let frames = decode(&file);
        // 5 s at 25 fps; fMP4 also hands over the frames from the keyframe before the start
        // (a keyframe a second), each lasting a tick.
        match format {
            "mp4" => assert!((124..=126).contains(&frames), "{format}: {frames} frames"),
            _ => assert!((124..=151).contains(&frames), "{format}: {frames} frames"),
        }
        // Byte ranges are the file's bytes.
        let whole = std::fs::read(&file).unwrap();
        let len = whole.len();
        for (header, expect) in [
            ("bytes=0-1023".to_string(), &whole[..1024]),
            (format!("bytes={}-", len - 100), &whole[len - 100..]),
            ("bytes=-10".to_string(), &whole[len - 10..]),
        ] {
            let r = server
                .http
                .get(server.url(&url))
                .header("range", &header)
                .send()
                .unwrap();
            assert_eq!(r.status(), 206, "{header}");
            let content_range = r.headers()["content-range"].to_str().unwrap().to_string();
            assert!(
                content_range.ends_with(&format!("/{len}")),
                "{content_range}"
            );
            assert_eq!(&r.bytes().unwrap()[..], expect, "{header}");
        }
        let r = server
            .http
            .get(server.url(&url))
            .header("range", format!("bytes={len}-"))
            .send()
            .unwrap();
        assert_eq!(r.status(), 416);
    }
    // The span as a download.
    let r = server.get(&format!(
        "/api/playback/get?path=cam&start={start}&duration=2&format=mp4&download=1"
    ));
    assert!(r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment; filename=\"cam-"));
    // Nothing recorded there, and requests that make no sense.
    assert_eq!(
        server
            .get("/api/playback/get?path=cam&start=2001-01-01T00:00:00Z&duration=5")
            .status(),
        404
    );
    for bad in [
        "/api/playback/get?start=2001-01-01T00:00:00Z&duration=5",
        "/api/playback/get?path=cam&start=yesterday&duration=5",
        "/api/playback/get?path=cam&start=2001-01-01T00:00:00Z&duration=0",
        "/api/playback/get?path=cam&start=2001-01-01T00:00:00Z&duration=99999999",
        "/api/playback/get?path=cam&start=2001-01-01T00:00:00Z&duration=5&format=avi",
        "/api/playback/get?path=../etc&start=2001-01-01T00:00:00Z&duration=5",
        "/api/playback/list",
        "/api/playback/list?path=cam&start=2026-01-02T00:00:00Z&end=2026-01-01T00:00:00Z",
    ] {
        let r = server.get(bad);
        assert_eq!(r.status(), 400, "{bad}");
        assert!(r.json::<Value>().unwrap()["error"].is_string(), "{bad}");
    }
    // Switched off, the segment is closed; a span is listed until the last part.
    let _ = publisher.kill();
    let _ = publisher.wait();
    assert_eq!(
        server
            .patch_camera("cam", &json!({"record": false}))
            .status(),
        200
    );
    let status = server.get_json("/api/cameras/cam");
    assert_eq!(status["recording"]["state"], "off", "{status}");
    for entry in std::fs::read_dir(dir.join("rec/cam")).unwrap() {
        let (duration, codecs) = probe(&entry.unwrap().path());
        assert!(
            duration > 1.0 && codecs == vec!["h264", "aac"],
            "{duration} {codecs:?}"
        );
    }
}

#[test]
fn a_sigkill_loses_at_most_a_part_and_what_was_written_plays() {
    let dir = common::temp_dir("rec-kill");
    let config = |record: bool| {
        format!(
            "[recording]\npath = \"{}\"\npart = \"1s\"\n\n[[camera]]\nid = \"cam\"\nsource = \"testsrc://?size=640x360&fps=25&gop=50\"\nrecord = {record}\n",
            dir.join("rec").display()
        )
    };
    let path = common::write_config("rec-kill-cfg", &config(true));
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    wait_recorded(&server, "cam", 7.0, Duration::from_secs(30));
    let killed_at = now();
    server.kill_hard();
    std::fs::write(&path, config(false)).unwrap();
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    let spans = list(&server, "cam");
    assert_eq!(spans.len(), 1, "{spans:?}");
    let end = seconds(spans[0]["start"].as_str().unwrap()) + spans[0]["duration"].as_f64().unwrap();
    let lost = killed_at - end;
    assert!(
        lost <= 2.0,
        "lost {lost:.2} s (at most a part and a second)"
    );
    let status = server.get_json("/api/cameras/cam");
    assert_eq!(status["recording"]["state"], "off");
    // The interrupted file is readable as it is, and its last seconds play.
    for entry in std::fs::read_dir(dir.join("rec/cam")).unwrap() {
        let (duration, _) = probe(&entry.unwrap().path());
        assert!(duration >= 5.0, "{duration}");
    }
    let file = dir.join("last.mp4");
    let url = format!(
        "/api/playback/get?path=cam&start={}&duration=3&format=mp4",
        rfc3339(end - 3.0)
    );
    fetch(&server, &url, &file);
    let (duration, _) = probe(&file);
    assert!((duration - 3.0).abs() <= 0.08, "{duration}");
    assert!(decode(&file) >= 70);
}

fn folder_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn retention_deletes_the_oldest_when_the_size_limit_is_passed() {
    let dir = common::temp_dir("rec-size");
    let config = format!(
        "[recording]\npath = \"{}\"\nsegment = \"2s\"\nmax_size = \"300KB\"\n\n[[camera]]\nid = \"cam\"\nsource = \"testsrc://?size=640x360&fps=25&gop=25\"\nrecord = true\n",
        dir.join("rec").display()
    );
    let path = common::write_config("rec-size-cfg", &config);
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    let first = wait_recorded(&server, "cam", 1.0, Duration::from_secs(20))["start"]
        .as_str()
        .unwrap()
        .to_string();
    let folder = dir.join("rec/cam");
    let first_file = folder.join(format!("{}.mp4", first.replace(':', "-")));
    assert!(first_file.exists(), "{}", first_file.display());
    let mut biggest = 0;
    wait_until(Duration::from_secs(60), "the first segment deleted", || {
        for e in std::fs::read_dir(&folder).unwrap().flatten() {
            biggest = biggest.max(e.metadata().unwrap().len());
        }
        !first_file.exists()
    });
    // The limit holds but for the segment being written and one just closed.
    let size = folder_size(&folder);
    assert!(size <= 300_000 + 2 * biggest, "{size} bytes on disk");
    let spans = list(&server, "cam");
    assert!(
        spans[0]["start"].as_str().unwrap() > first.as_str(),
        "{spans:?}"
    );
}

#[test]
fn a_full_or_unwritable_folder_pauses_recording_with_a_reason_and_live_view_goes_on() {
    // Unwritable: the folder would be inside a file.
    let dir = common::temp_dir("rec-blocked");
    std::fs::write(dir.join("file"), "not a folder").unwrap();
    let camera = "[[camera]]\nid = \"cam\"\nsource = \"testsrc://?size=640x360&fps=25&gop=25\"\nrecord = true\n";
    let config = format!(
        "[recording]\npath = \"{}\"\n\n{camera}",
        dir.join("file/rec").display()
    );
    let path = common::write_config("rec-blocked-cfg", &config);
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    paused_while_live(&server, &["cannot create"]);
    drop(server);

    // Full: a 300 KB tmpfs of its own (a private mount namespace: nothing is left mounted).
    let full = common::temp_dir("rec-full");
    let config = format!("[recording]\npath = \"{}\"\n\n{camera}", full.display());
    let path = common::write_config("rec-full-cfg", &config);
    let mount = format!(
        "mount -t tmpfs -o size=300k livelens-test '{}' && exec \"$@\"",
        full.display()
    );
    let probe = Command::new("unshare")
        .args(["-m", "sh", "-c", &mount, "sh", "true"])
        .status();
    assert!(
        probe.is_ok_and(|s| s.success()),
        "this test mounts a small tmpfs in a private mount namespace: it needs root (CAP_SYS_ADMIN) and util-linux's unshare"
    );
    let server = Server::start_wrapped(
        &["unshare", "-m", "sh", "-c", &mount, "sh"],
        &["--config", path.to_str().unwrap()],
    );
    // The file's write or the index's may be the first to find the disk full.
    paused_while_live(&server, &["No space left", "disk is full"]);
}

fn paused_while_live(server: &Server, reasons: &[&str]) {
    server.wait_live("cam", Duration::from_secs(15));
    let mut status = Value::Null;
    wait_until(Duration::from_secs(40), "recording paused", || {
        status = server.get_json("/api/cameras/cam")["recording"].clone();
        status["state"] == "paused"
    });
    assert!(
        reasons
            .iter()
            .any(|r| status["reason"].as_str().unwrap().contains(r)),
        "{status}"
    );
    // Live view is untouched: frames keep coming and a viewer gets a picture.
    let before = server.camera_frames("cam");
    wait_until(Duration::from_secs(5), "frames after the pause", || {
        server.camera_frames("cam") > before + 25
    });
    assert_eq!(server.get("/api/cameras/cam/snapshot.jpg").status(), 200);
    assert_eq!(server.camera_state("cam"), "live");
}

#[test]
fn two_hundred_record_on_off_cycles_leave_every_count_at_baseline_and_recording_works_after() {
    let dir = common::temp_dir("rec-cycles");
    let config = format!(
        "[recording]\npath = \"{}\"\n\n[[camera]]\nid = \"cam\"\nsource = \"testsrc://?size=320x240&fps=25&gop=25\"\n",
        dir.join("rec").display()
    );
    let path = common::write_config("rec-cycles-cfg", &config);
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    server.wait_live("cam", Duration::from_secs(15));
    let baseline = counts(&server.resources());
    for i in 0..200 {
        assert_eq!(
            server
                .patch_camera("cam", &json!({"record": true}))
                .status(),
            200,
            "cycle {i}"
        );
        if i % 50 == 0 {
            // The camera's owner applies the change after the answer: a moment later.
            wait_until(Duration::from_secs(2), "the recorder attached", || {
                server.resources()["viewers"]["recording"] == 1
            });
        }
        assert_eq!(
            server
                .patch_camera("cam", &json!({"record": false}))
                .status(),
            200,
            "cycle {i}"
        );
    }
    let mut now = Value::Null;
    wait_until(Duration::from_secs(5), "counts at baseline", || {
        now = counts(&server.resources());
        now == baseline
    });
    // And the next recording is served.
    assert_eq!(
        server
            .patch_camera("cam", &json!({"record": {"keep": "1d"}}))
            .status(),
        200
    );
    wait_recorded(&server, "cam", 2.0, Duration::from_secs(20));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("record = { keep = \"1d\" }"), "{text}");
    assert_eq!(
        server
            .patch_camera("cam", &json!({"record": false}))
            .status(),
        200
    );
    wait_until(Duration::from_secs(5), "counts at baseline after", || {
        counts(&server.resources()) == baseline
    });
}

#[test]
fn listing_over_ten_thousand_indexed_segments_takes_under_50_ms() {
    let dir = common::temp_dir("rec-index");
    let rec = dir.join("rec");
    std::fs::create_dir_all(&rec).unwrap();
    {
        let index = livelens::recording::index::Index::open(&rec.join("index.db")).unwrap();
        // 10,000 one-minute segments from a week ago, a 5 s gap after every tenth: 1,000 spans.
        let week_ago = (now() as i64 - 7 * 86_400) * 1_000_000;
        let rows: Vec<_> = (0..10_000i64)
            .map(|i| {
                let start = week_ago + i * 60_000_000 + (i / 10) * 5_000_000;
                (
                    "cam".to_string(),
                    start,
                    start + 60_000_000,
                    format!("cam/{i}.mp4"),
                    1_000_000,
                    "video/mp4".to_string(),
                )
            })
            .collect();
        index.add_closed_many(&rows).unwrap();
    }
    let config = format!(
        "[recording]\npath = \"{}\"\nkeep = \"30d\"\n\n[[camera]]\nid = \"cam\"\nsource = \"testsrc://?size=320x240&fps=5\"\n",
        rec.display()
    );
    let path = common::write_config("rec-index-cfg", &config);
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    let mut times = Vec::new();
    for _ in 0..7 {
        let start = Instant::now();
        let spans = list(&server, "cam");
        times.push(start.elapsed());
        assert_eq!(spans.len(), 1_000);
        assert_eq!(spans[0]["duration"].as_f64().unwrap(), 600.0);
    }
    times.sort();
    assert!(
        times[3] < Duration::from_millis(50),
        "median {:?} of {times:?}",
        times[3]
    );
}

#[test]
fn events_of_a_recorded_camera_link_to_their_footage() {
    let dir = common::temp_dir("rec-events");
    let config = format!(
        "[storage]\npath = \"{}\"\n[recording]\npath = \"{}\"\npre_roll = \"2s\"\npost_roll = \"2s\"\n\n\
         [[camera]]\nid = \"cam\"\nsource = \"testsrc://?size=320x240&fps=25&gop=25\"\nrecord = true\n\n\
         [[camera]]\nid = \"other\"\nsource = \"testsrc://?size=320x240&fps=25&gop=25\"\n[camera.analysis.motion]\n",
        dir.join("events.db").display(),
        dir.join("rec").display()
    );
    let path = common::write_config("rec-events-cfg", &config);
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    // Motion is watched from when the camera has been recording a while: its events are
    // inside the footage.
    wait_recorded(&server, "cam", 2.0, Duration::from_secs(20));
    assert_eq!(
        server
            .patch_camera("cam", &json!({"analysis": {"motion": {}}}))
            .status(),
        200
    );
    let mut events = Vec::new();
    wait_until(
        Duration::from_secs(40),
        "motion events of both cameras, the recorded one's 3 s old",
        || {
            events = server
                .get_json("/api/events?kind=motion&limit=1000")
                .as_array()
                .unwrap()
                .clone();
            let old = (now() - 3.0) * 1000.0;
            events
                .iter()
                .any(|e| e["camera"] == "cam" && e["time_ms"].as_f64().unwrap() < old)
                && events.iter().any(|e| e["camera"] == "other")
        },
    );
    for e in &events {
        match e["camera"].as_str().unwrap() {
            "other" => assert!(e.get("clip").is_none(), "not recorded: {e}"),
            _ => assert!(e["clip"].is_string(), "recorded: {e}"),
        }
    }
    let old = (now() - 3.0) * 1000.0;
    let event = events
        .iter()
        .find(|e| e["camera"] == "cam" && e["time_ms"].as_f64().unwrap() < old)
        .unwrap();
    let clip = event["clip"].as_str().unwrap();
    assert!(
        clip.contains("format=mp4") && clip.contains("duration=4.000"),
        "{clip}"
    );
    let file = dir.join("clip.mp4");
    fetch(&server, clip, &file);
    let (duration, codecs) = probe(&file);
    assert_eq!(codecs, vec!["h264"]);
    assert!((duration - 4.0).abs() <= 0.04, "{duration}");
    assert!(decode(&file) >= 99);
}

/// ffprobe's duration of each stream of a file, video first.
fn stream_durations(path: &Path) -> (f64, f64) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "stream=codec_type,duration"])
        .args(["-of", "csv=p=0"])
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let of = |kind: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{kind},")))
            .and_then(|d| d.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {kind} duration in {text:?}"))
    };
    (of("video"), of("audio"))
}

/// The presentation times ffprobe reads for one stream (`a` or `v`), in file order.
fn packet_times(path: &Path, stream: &str) -> Vec<f64> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", stream])
        .args(["-show_entries", "packet=pts_time", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect()
}

#[test]
fn one_mp4_across_two_publishers_has_no_repeated_time_and_keeps_sound_with_picture() {
    across_two_publishers("mp4");
}

#[test]
fn one_fmp4_across_two_publishers_has_no_repeated_time_and_keeps_sound_with_picture() {
    across_two_publishers("fmp4");
}

/// Two publishers, one after the other, read back as one `format` file through
/// /api/playback/get.
fn across_two_publishers(format: &str) {
    common::require("ffmpeg", "ffmpeg");
    let dir = common::temp_dir(&format!("rec-publishers-{format}"));
    let config = format!(
        "[rtsp]\nlisten = \"127.0.0.1:0\"\n[rtmp]\nlisten = \"127.0.0.1:0\"\n[publish]\ntakeover = true\n\
         [recording]\npath = \"{}\"\n\n\
         [[camera]]\nid = \"cam\"\nsource = \"publish:\"\nrecord = true\n",
        dir.join("rec").display()
    );
    let path = common::write_config(&format!("rec-publishers-cfg-{format}"), &config);
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    let port = server.get_json("/api/outputs")["rtmp"]["port"]
        .as_u64()
        .unwrap();
    // Two publishers of the sync clip (B-frames, AAC) over RTMP, one after the other: the
    // second takes the camera over ([publish] takeover) once the first has been recorded for
    // 5 s, so the one leaves and the other starts within a moment, as when a camera's encoder
    // reconnects.
    let clip = common::sync::clip_mp4();
    let publish = || {
        Command::new("ffmpeg")
            .args(["-nostdin", "-loglevel", "error", "-re", "-i"])
            .arg(&clip)
            .args(["-t", "8", "-c", "copy", "-f", "flv"])
            .arg(format!("rtmp://127.0.0.1:{port}/live/cam"))
            .spawn()
            .unwrap()
    };
    let began = Instant::now();
    let mut first = publish();
    let at_takeover = wait_recorded(&server, "cam", 5.0, Duration::from_secs(20))["duration"]
        .as_f64()
        .unwrap();
    let mut second = publish();
    assert!(
        second.wait().unwrap().success(),
        "the second publisher failed"
    );
    let _ = first.kill();
    let _ = first.wait();
    eprintln!("published in {:.1} s", began.elapsed().as_secs_f64());
    // Both publishers' footage is listed (one span: the gap between them is short): what the
    // first had recorded at the takeover and the second's 8 s, less at most its startup.
    let mut spans = Vec::new();
    let recorded =
        |spans: &[Value]| -> f64 { spans.iter().map(|s| s["duration"].as_f64().unwrap()).sum() };
    wait_until(Duration::from_secs(10), "both publishers recorded", || {
        spans = list(&server, "cam");
        recorded(&spans) >= at_takeover + 7.5
    });
    eprintln!("{at_takeover:.2} s recorded at the takeover; then {spans:?}");
    assert_eq!(spans.len(), 1, "{spans:?}");
    let span = &spans[0];
    let start = span["start"].as_str().unwrap();
    let duration = span["duration"].as_f64().unwrap();
    let sent_difference = {
        let sent = dir.join("sent.flv");
        let status = Command::new("ffmpeg")
            .args(["-nostdin", "-loglevel", "error", "-y", "-i"])
            .arg(&clip)
            .args(["-t", "8", "-c", "copy", "-f", "flv"])
            .arg(&sent)
            .status()
            .unwrap();
        assert!(status.success());
        let extent = |stream: &str| {
            let times = packet_times(&sent, stream);
            let step = times
                .windows(2)
                .map(|w| (w[1] - w[0]).abs())
                .fold(f64::MAX, f64::min);
            let last = times.iter().copied().fold(f64::MIN, f64::max);
            let first = times.iter().copied().fold(f64::MAX, f64::min);
            last + step - first
        };
        extent("v") - extent("a")
    };
    {
        let file = dir.join(format!("both.{format}"));
        fetch(
            &server,
            &format!(
                "/api/playback/get?path=cam&start={start}&duration={duration}&format={format}"
            ),
            &file,
        );
        let (video, audio) = stream_durations(&file);
        eprintln!("{format}: video {video:.3} s, audio {audio:.3} s (span {duration:.3} s)");
        assert!(video >= 12.5, "{format}: only {video} s of video");
        // As long as each other as the publishers sent them: what FFmpeg sends of the clip
        // ends its video `sent_difference` after its audio (B-frame delay, AAC priming).
        assert!(
            ((video - audio) - sent_difference).abs() <= 0.040,
            "{format}: video lasts {video:.3} s, audio {audio:.3} s; sent {sent_difference:.3} s apart"
        );
        let times = packet_times(&file, "a");
        // AAC frames (1024 samples at 48 kHz) cover the audio but for the seam, where the
        // first publisher left with its last sound a little behind its picture.
        let covered = times.len() as f64 * 1024.0 / 48_000.0;
        assert!(
            covered >= audio - 0.5,
            "{format}: {} audio packets ({covered:.2} s) for {audio:.2} s",
            times.len()
        );
        let repeats: Vec<_> = times.windows(2).filter(|w| w[1] <= w[0]).collect();
        assert!(
            repeats.is_empty(),
            "{format}: audio times do not increase at {repeats:?}"
        );
        let offsets = common::sync::av_offsets(file.to_str().unwrap(), &[], 60.0);
        eprintln!("{format} across two publishers, A/V offsets: {offsets:?}");
        // ~5 s of the first publisher and 8 s of the second: a flash and beep at 0.64 s and
        // every 1.92 s after.
        common::sync::assert_in_sync(
            &format!("playback across two publishers ({format})"),
            &offsets,
            6,
            0.040,
        );
    }
}
