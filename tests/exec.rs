//! Exec sources, on-demand cameras and the child-process supervisor, against the real binary and
//! Debian's FFmpeg: video reaches a viewer, failing commands give reasons and are retried with
//! back-off, a command that ignores SIGTERM is SIGKILLed, and no child — running or zombie — is
//! left after stops, SIGTERM, or SIGKILL of livelens itself.

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    children_of, is_running, require, running_in_group, wait_until, write_config, Server,
};
use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

/// FFmpeg's test picture and a tone, encoded live to H.264 + AAC in MPEG-TS on stdout.
const TS_COMMAND: &str = "exec:ffmpeg -hide_banner -nostdin -loglevel error -re \
    -f lavfi -i testsrc2=size=320x240:rate=25 -f lavfi -i sine=frequency=440:sample_rate=48000 \
    -c:v libx264 -preset ultrafast -tune zerolatency -g 25 -c:a aac -b:a 64k -f mpegts -";
/// The same picture as raw H.264 (Annex B), no container, no audio.
const RAW_COMMAND: &str = "ffmpeg -hide_banner -nostdin -loglevel error -re \
    -f lavfi -i testsrc2=size=320x240:rate=25 \
    -c:v libx264 -preset ultrafast -tune zerolatency -g 25 -flush_packets 1 -f h264 -";

fn config(cameras: &str) -> String {
    format!("[sources]\nallow_exec = true\n\n{cameras}")
}

fn camera(id: &str, source: &str, extra: &str) -> String {
    format!("[[camera]]\nid = \"{id}\"\nsource = '{source}'\n{extra}\n")
}

fn ffprobe(args: &[&str]) -> String {
    let out = Command::new("ffprobe")
        .args(args)
        .output()
        .expect("ffprobe (Debian package ffmpeg)");
    assert!(
        out.status.success(),
        "ffprobe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Plays camera `id` through its MSE WebSocket until `fragments` media fragments arrived, and
/// returns the fMP4 bytes (init segment first).
async fn play_mse(server: &Server, id: &str, fragments: usize) -> Vec<u8> {
    let url = format!(
        "{}/api/cameras/{id}/mse",
        server.base.replace("http://", "ws://")
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket");
    let mut out = Vec::new();
    let mut count = 0;
    let mut after_moof = false;
    while count <= fragments {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("an MSE message within 10 s")
            .expect("open")
            .expect("ok");
        if let Message::Binary(b) = msg {
            // A fragment is a moof message (ending with the mdat's header), then the payload.
            if after_moof {
                count += 1;
            }
            after_moof = b.get(4..8) == Some(b"moof");
            out.extend_from_slice(&b);
        }
    }
    let _ = ws.close(None).await;
    out
}

/// Decodes an fMP4 recording with ffprobe: (video frames, audio frames, width, height).
fn decode(name: &str, bytes: &[u8]) -> (usize, usize, String) {
    let path = common::temp_dir(name).join("play.mp4");
    std::fs::write(&path, bytes).unwrap();
    let p = path.to_str().unwrap();
    let video = ffprobe(&[
        "-v",
        "error",
        "-select_streams",
        "v:0",
        "-count_frames",
        "-show_entries",
        "stream=codec_name,width,height,nb_read_frames",
        "-of",
        "csv=p=0",
        p,
    ]);
    let audio = ffprobe(&[
        "-v",
        "error",
        "-select_streams",
        "a:0",
        "-count_frames",
        "-show_entries",
        "stream=nb_read_frames",
        "-of",
        "csv=p=0",
        p,
    ]);
    let fields: Vec<&str> = video.trim().split(',').collect();
    let frames = fields.last().unwrap().parse().unwrap_or(0);
    let audio_frames = audio.trim().parse().unwrap_or(0);
    (frames, audio_frames, fields[..3].join(","))
}

#[test]
fn an_mpegts_command_plays_video_and_audio() {
    require("ffmpeg", "ffmpeg");
    let path = write_config("exec-ts", &config(&camera("ts", TS_COMMAND, "")));
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    let took = server.wait_live("ts", Duration::from_secs(10));
    eprintln!("exec MPEG-TS camera live after {took:?}");
    let mut cam = Value::Null;
    wait_until(Duration::from_secs(5), "audio described", || {
        cam = server.get_json("/api/cameras/ts");
        !cam["audio"].is_null()
    });
    assert_eq!(cam["video"]["codec"], "h264", "{cam}");
    assert_eq!(cam["video"]["width"], 320);
    assert_eq!(cam["audio"]["codec"], "aac", "{cam}");
    assert_eq!(cam["audio"]["sample_rate"], 48000);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // One fragment per frame, video and audio interleaved.
    let bytes = runtime.block_on(play_mse(&server, "ts", 80));
    let (video, audio, desc) = decode("exec-ts", &bytes);
    eprintln!("decoded {video} video and {audio} audio frames ({desc})");
    assert_eq!(desc, "h264,320,240");
    assert!(video >= 25, "decoded only {video} video frames");
    assert!(audio >= 25, "decoded only {audio} audio frames");
    assert!(
        video + audio >= 75,
        "{video} + {audio} frames from 80 fragments"
    );
    assert_eq!(server.resources()["child_processes"], 1);
    let (status, took) = server.terminate();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(2), "exit took {took:?}");
}

#[test]
fn a_raw_h264_command_plays() {
    require("ffmpeg", "ffmpeg");
    let path = write_config(
        "exec-raw",
        &config(&camera("raw", &format!("exec+h264:{RAW_COMMAND}"), "")),
    );
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    server.wait_live("raw", Duration::from_secs(10));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let bytes = runtime.block_on(play_mse(&server, "raw", 30));
    let (video, _, desc) = decode("exec-raw", &bytes);
    assert_eq!(desc, "h264,320,240");
    assert!(video >= 25, "decoded only {video} video frames");
    // Arrival timestamps: 25 fps input arrives as ~25 frames/s once the stats window is full.
    wait_until(Duration::from_secs(8), "about 25 fps", || {
        let fps = server.get_json("/api/cameras/raw")["stats"]["fps"]
            .as_f64()
            .unwrap();
        (22.0..=28.0).contains(&fps)
    });
}

#[test]
fn a_file_source_loops() {
    require("ffmpeg", "ffmpeg");
    let dir = common::temp_dir("file-source-clip");
    let file = dir.join("clip.ts");
    let made = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25",
            "-t",
            "1",
        ])
        .args(["-c:v", "libx264", "-g", "25", "-y", file.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(made.success());
    let path = write_config(
        "file-source",
        &camera("clip", &format!("file://{}", file.display()), ""),
    );
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    server.wait_live("clip", Duration::from_secs(10));
    let pids = |s: &Server| -> Vec<u32> { children_of(s.pid()).iter().map(|c| c.0).collect() };
    let child = pids(&server);
    // A one-second clip still delivers frames after three seconds: it loops.
    let frames = |s: &Server| s.camera_frames("clip");
    std::thread::sleep(Duration::from_secs(3));
    let before = frames(&server);
    wait_until(Duration::from_secs(5), "frames after the loop", || {
        frames(&server) > before + 10
    });
    assert!(
        before > 50,
        "only {before} frames in 3 s of a looping 25 fps clip"
    );
    // Looped by the one FFmpeg, not by starting another at each end of the file.
    assert_eq!(child.len(), 1, "{child:?}");
    assert_eq!(pids(&server), child);
}

#[test]
fn failing_commands_give_reasons_and_are_retried_with_backoff() {
    let dir = common::temp_dir("exec-fail");
    let runs = dir.join("runs");
    let cameras = [
        camera("false", "exec:false", ""),
        camera("missing", "exec:livelens-no-such-command -x", ""),
        camera(
            "counted",
            &format!(
                "exec:sh -c \"echo run >> {}; echo bad input >&2; exit 3\"",
                runs.display()
            ),
            "",
        ),
    ]
    .concat();
    let path = write_config("exec-fail", &config(&cameras));
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    let reason = |id: &str| {
        server.get_json(&format!("/api/cameras/{id}"))["reason"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    wait_until(Duration::from_secs(5), "reasons", || {
        reason("false").contains("false exited with status 1")
            && reason("missing").contains("command not found")
            && reason("counted") == "sh exited with status 3: bad input"
    });
    assert_eq!(server.camera_state("false"), "retrying");
    // Back-off: 1 s, 2 s, 4 s… so in ~4 s the command ran 2 or 3 times, not hundreds.
    let started = Instant::now();
    wait_until(Duration::from_secs(8), "a third run", || {
        std::fs::read_to_string(&runs)
            .unwrap_or_default()
            .lines()
            .count()
            >= 3
    });
    let took = started.elapsed();
    let count = std::fs::read_to_string(&runs).unwrap().lines().count();
    assert!(count <= 4, "{count} runs in {took:?}: no back-off");
    assert!(
        took >= Duration::from_secs(2),
        "third run after {took:?}: no back-off"
    );
    // Every child that exited was reaped at once: no zombie, nothing running.
    let children = children_of(server.pid());
    assert!(children.iter().all(|c| c.1 != 'Z'), "zombies: {children:?}");
}

#[test]
fn a_child_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let source = "exec:sh -c \"trap '' TERM; sleep 1000 & wait; sleep 1000\"";
    let path = write_config(
        "exec-stubborn",
        &config(&format!(
            "[[camera]]\nid = \"stubborn\"\nsource = \"{}\"\n",
            source.replace('"', "\\\"")
        )),
    );
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    wait_until(Duration::from_secs(5), "the child", || {
        server.resources()["child_processes"] == 1
    });
    let children = children_of(server.pid());
    assert_eq!(children.len(), 1, "{children:?}");
    let pgid = children[0].2;
    // The group: the reaper, the shell and the shell's sleep.
    wait_until(Duration::from_secs(5), "the shell's own child", || {
        running_in_group(pgid).len() == 3
    });
    let started = Instant::now();
    let r = server.post("/api/cameras/stubborn/stop");
    let took = started.elapsed();
    assert_eq!(r.status(), 200);
    eprintln!("stop of a SIGTERM-ignoring child took {took:?}");
    assert!(
        took >= Duration::from_millis(2900),
        "stopped after {took:?}: no grace period"
    );
    assert!(took < Duration::from_secs(5), "stop took {took:?}");
    assert!(running_in_group(pgid).is_empty(), "group {pgid} still runs");
    assert!(children_of(server.pid()).is_empty());
    assert_eq!(server.resources()["child_processes"], 0);
}

#[test]
fn three_hundred_stop_start_cycles_leave_no_process() {
    require("ffmpeg", "ffmpeg");
    let path = write_config("exec-cycles", &config(&camera("ts", TS_COMMAND, "")));
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    server.wait_live("ts", Duration::from_secs(10));
    let baseline = server.resources();
    let pid = server.pid();
    let mut started = 0;
    for i in 0..300 {
        // This cycle's child groups (older pgids may be reused by other tests' processes). A
        // child caught between fork and setpgid is still in livelens's group: skip it here,
        // the children check below covers it.
        let groups: Vec<u32> = children_of(pid)
            .iter()
            .filter(|c| c.0 == c.2)
            .map(|c| c.2)
            .collect();
        started += groups.len();
        let r = server.post("/api/cameras/ts/stop");
        assert_eq!(r.status(), 200, "stop {i}");
        // Once stop returns, nothing of any child's group is left, and no zombie.
        let children = children_of(pid);
        assert!(
            children.is_empty(),
            "cycle {i}: children after stop: {children:?}"
        );
        for g in groups {
            let left = running_in_group(g);
            let what: Vec<String> = left
                .iter()
                .map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default())
                .collect();
            assert!(left.is_empty(), "cycle {i}: group {g} still runs: {what:?}");
        }
        assert_eq!(server.resources()["child_processes"], 0, "cycle {i}");
        assert_eq!(server.post("/api/cameras/ts/start").status(), 200);
        if i % 50 == 0 {
            server.wait_live("ts", Duration::from_secs(10));
        }
    }
    server.wait_live("ts", Duration::from_secs(10));
    let after = server.resources();
    for key in ["streams_live", "tasks", "child_processes", "websockets"] {
        assert_eq!(after[key], baseline[key], "{key}: {baseline} → {after}");
    }
    eprintln!(
        "300 exec cycles: {started} children stopped, fds {} → {}",
        baseline["open_fds"], after["open_fds"]
    );
    assert!(after["open_fds"].as_i64().unwrap() <= baseline["open_fds"].as_i64().unwrap() + 2);
}

/// Three exec cameras and one worker: the load for the two exit tests.
fn busy_config(name: &str) -> std::path::PathBuf {
    let mut text = config(
        &[
            camera("a", TS_COMMAND, ""),
            camera("b", TS_COMMAND, ""),
            camera("c", &format!("exec+h264:{RAW_COMMAND}"), ""),
        ]
        .concat(),
    );
    text.push_str(WORKER);
    write_config(name, &text)
}

/// A tiny HTTP server as a worker: Python's http.server answers the health check.
const WORKER: &str = r#"
[[worker]]
name = "web"
command = ["/usr/bin/python3", "-m", "http.server", "--bind", "127.0.0.1", "{port}"]
health = "http://127.0.0.1:{port}/"
"#;

fn wait_busy(server: &Server) -> Vec<u32> {
    for id in ["a", "b", "c"] {
        server.wait_live(id, Duration::from_secs(10));
    }
    wait_until(Duration::from_secs(10), "worker ready", || {
        server.get_json("/api/workers")[0]["state"] == "ready"
    });
    let children: Vec<u32> = children_of(server.pid()).iter().map(|c| c.0).collect();
    assert_eq!(children.len(), 4, "{children:?}");
    children
}

#[test]
fn sigkill_of_livelens_takes_its_children_along() {
    require("ffmpeg", "ffmpeg");
    let server = Server::start(&["--config", busy_config("exec-sigkill").to_str().unwrap()]);
    let children = wait_busy(&server);
    let killed = Instant::now();
    server.kill_hard();
    wait_until(
        Duration::from_secs(2),
        "every child gone after SIGKILL",
        || children.iter().all(|p| !is_running(*p)),
    );
    eprintln!("children gone {:?} after SIGKILL", killed.elapsed());
}

#[test]
fn sigterm_exits_within_two_seconds_with_every_child_gone() {
    require("ffmpeg", "ffmpeg");
    let server = Server::start(&["--config", busy_config("exec-sigterm").to_str().unwrap()]);
    let children = wait_busy(&server);
    let (status, took) = server.terminate();
    eprintln!("SIGTERM → exit in {took:?}");
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(2), "exit took {took:?}");
    let left: Vec<u32> = children.into_iter().filter(|p| is_running(*p)).collect();
    assert!(left.is_empty(), "still running: {left:?}");
}

#[test]
fn an_on_demand_camera_runs_only_while_watched() {
    require("ffmpeg", "ffmpeg");
    let path = write_config(
        "exec-on-demand",
        &config(&camera(
            "od",
            TS_COMMAND,
            "on_demand = true\nidle_timeout = \"1s\"",
        )),
    );
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    // No viewer: idle, and no child process at all.
    let cam = server.get_json("/api/cameras/od");
    assert_eq!(cam["state"], "idle", "{cam}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(server.resources()["child_processes"], 0);
    assert!(children_of(server.pid()).is_empty());

    let runtime = tokio::runtime::Runtime::new().unwrap();
    for round in 0..2 {
        // A viewer arrives: the source starts and the viewer plays within 2 s.
        let started = Instant::now();
        let bytes = runtime.block_on(play_mse(&server, "od", 5));
        let took = started.elapsed();
        eprintln!("on-demand round {round}: first 5 fragments after {took:?}");
        assert!(
            took < Duration::from_secs(3),
            "round {round}: took {took:?}"
        );
        let (video, _, _) = decode("exec-on-demand", &bytes);
        assert!(video >= 5, "decoded {video} frames");
        // The viewer left: the source stops after the idle timeout.
        wait_until(Duration::from_secs(5), "idle again", || {
            server.camera_state("od") == "idle" && server.resources()["child_processes"] == 0
        });
        assert!(children_of(server.pid()).is_empty());
    }
    // A snapshot wakes it too.
    let r = server.get("/api/cameras/od/snapshot.jpg");
    assert_eq!(r.status(), 200);
    assert_eq!(&r.bytes().unwrap()[..2], &[0xff, 0xd8]);
}

#[test]
fn a_worker_is_health_checked_restarted_and_stopped() {
    let path = write_config("worker", WORKER);
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    let ready = |s: &Server| -> Value {
        let mut found = Value::Null;
        wait_until(Duration::from_secs(10), "worker ready", || {
            found = s.get_json("/api/workers")[0].clone();
            found["state"] == "ready"
        });
        found
    };
    let first = ready(&server);
    let port = first["port"].as_u64().unwrap();
    let pid = first["pid"].as_u64().unwrap() as u32;
    // It really serves on the port livelens chose.
    let r = reqwest::blocking::get(format!("http://127.0.0.1:{port}/")).unwrap();
    assert_eq!(r.status(), 200);
    // Killed behind livelens's back: reaped, reported, restarted on a fresh port.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    wait_until(Duration::from_secs(10), "restarted", || {
        let w = server.get_json("/api/workers")[0].clone();
        w["state"] == "ready" && w["starts"] == 2
    });
    let second = server.get_json("/api/workers")[0].clone();
    let new_pid = second["pid"].as_u64().unwrap() as u32;
    assert_ne!(new_pid, pid);
    assert!(!is_running(pid));
    assert!(children_of(server.pid()).iter().all(|c| c.1 != 'Z'));
    let (status, _) = server.terminate();
    assert!(status.success());
    assert!(!is_running(new_pid), "worker survived shutdown");
}

#[test]
fn h265_video_and_opus_audio_in_mpegts() {
    require("ffmpeg", "ffmpeg");
    let command = "exec:ffmpeg -hide_banner -nostdin -loglevel error -re \
        -f lavfi -i testsrc2=size=320x240:rate=25 -f lavfi -i sine=frequency=440:sample_rate=48000 \
        -c:v libx265 -preset ultrafast -x265-params log-level=none:keyint=25 \
        -c:a libopus -b:a 48k -f mpegts -";
    let path = write_config("exec-hevc-opus", &config(&camera("hevc", command, "")));
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    server.wait_live("hevc", Duration::from_secs(15));
    let mut cam = Value::Null;
    wait_until(Duration::from_secs(5), "audio described", || {
        cam = server.get_json("/api/cameras/hevc");
        !cam["audio"].is_null()
    });
    assert_eq!(cam["video"]["codec"], "h265", "{cam}");
    assert!(
        cam["video"]["codec_string"]
            .as_str()
            .unwrap()
            .starts_with("hvc1.1.6.L"),
        "{cam}"
    );
    assert_eq!(
        (
            cam["video"]["width"].as_u64(),
            cam["video"]["height"].as_u64()
        ),
        (Some(320), Some(240))
    );
    assert_eq!(cam["audio"]["codec"], "opus", "{cam}");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let bytes = runtime.block_on(play_mse(&server, "hevc", 80));
    let (video, audio, desc) = decode("exec-hevc-opus", &bytes);
    eprintln!("decoded {video} H.265 and {audio} Opus frames ({desc})");
    assert_eq!(desc, "hevc,320,240");
    assert!(
        video >= 20 && audio >= 20,
        "{video} video, {audio} audio frames"
    );
}
