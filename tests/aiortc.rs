//! aiortc (PyPI aiortc 1.16, the seed system's own WebRTC library) as a WHEP viewer and a WHIP
//! publisher, checked on what it decodes and on what livelens reads back from it, with the A/V
//! sync clip (a flash and a beep together every 1.92 s).

use crate::common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{sync, wait_until, Server};
use serde_json::Value;

fn script(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Runs the aiortc WHEP viewer for `seconds`; returns its JSON report (the decoded picture and
/// sound are written to `out`).
fn aiortc_whep(url: &str, seconds: u32, out: &std::path::Path, extra: &[&str]) -> Value {
    let python = common::tools::aiortc_python();
    let output = Command::new(python)
        .arg(script("aiortc_whep.py"))
        .args([url, &seconds.to_string(), out.to_str().unwrap()])
        .args(extra)
        .output()
        .expect("run aiortc_whep.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_else(|| {
        panic!(
            "aiortc_whep.py printed nothing; stderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

const SYNC_CAMERA: &str = "sync";

/// The sync clip (720p25 H.264 High with B-frames + AAC) as a looping `file://` camera, and
/// the same picture re-encoded to Constrained Baseline 320x180 (no B-frames) through `exec:`.
fn start(name: &str) -> Server {
    let clip = sync::clip_ts();
    let clip = clip.to_str().unwrap();
    let config = format!(
        "[sources]\nallow_exec = true\n\n[[camera]]\nid = \"{SYNC_CAMERA}\"\nsource = \"file://{clip}\"\n\n\
         [[camera]]\nid = \"baseline\"\nsource = \"exec:ffmpeg -hide_banner -nostdin -loglevel error \
         -re -stream_loop -1 -i {clip} -vf scale=320:180 -c:v libx264 -preset ultrafast \
         -profile:v baseline -g 25 -c:a copy -f mpegts -\"\n\n\
         [[camera]]\nid = \"pub\"\nsource = \"publish:\"\n\n[rtsp]\nlisten = \"127.0.0.1:0\"\n"
    );
    let path = common::write_config(name, &config);
    Server::start(&["--config", path.to_str().unwrap()])
}

/// aiortc offers only Baseline H.264 profiles: a High camera with B-frames is refused with a
/// 4xx naming both profiles instead of being sent under a Constrained Baseline payload type.
/// A Constrained Baseline camera plays: frames decode, their times only increase (also across
/// the GOP replay a keyframe request causes), video keeps coming for the whole run (past the
/// GOP burst), and audio comes too.
#[test]
fn aiortc_watches_over_whep_and_a_profile_it_cannot_decode_is_refused() {
    let server = start("aiortc-whep");
    server.wait_live(SYNC_CAMERA, Duration::from_secs(20));
    server.wait_live("baseline", Duration::from_secs(20));
    let dir = common::temp_dir("aiortc-whep-out");

    let refused = aiortc_whep(
        &server.url(&format!("/api/cameras/{SYNC_CAMERA}/whep")),
        1,
        &dir.join("refused.mkv"),
        &[],
    );
    assert_eq!(refused["status"], 422, "{refused}");
    let why = refused["error"].as_str().unwrap();
    assert!(why.contains("High") && why.contains("Baseline"), "{why}");

    let baseline = server.url("/api/cameras/baseline/whep");
    // A keyframe request mid-run: livelens replays its cached GOP to this viewer.
    let report = aiortc_whep(&baseline, 9, &dir.join("baseline.mkv"), &["--pli-at", "4"]);
    assert_eq!(report["status"], 201, "{report}");
    let floats = |key: &str| -> Vec<f64> {
        report[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_f64().unwrap())
            .collect()
    };
    let (times, clock) = (floats("video_times"), floats("video_clock"));
    assert!(times.len() >= 100, "only {} frames", times.len());
    // aiortc reads an RTP time that goes back as a 32-bit wrap (~13 h on): frames before and
    // after the replay must be a frame or so apart, never hours.
    for w in times.windows(2) {
        assert!(
            w[1] > w[0] && w[1] - w[0] < 1.0,
            "frame times must increase by less than a second: {} then {}",
            w[0],
            w[1]
        );
    }
    // The replay went out (livelens stamps frames it sends again 1 tick apart, after the last).
    let replayed = times.windows(2).filter(|w| w[1] - w[0] < 0.001).count();
    assert!(replayed >= 1, "no GOP replay after the keyframe request");
    let pli = report["pli_clock"].as_f64().expect("the PLI was sent");
    let after = clock.iter().filter(|&&c| c > pli + 1.0).count();
    assert!(
        after >= 50,
        "only {after} frames more than 1 s after the PLI"
    );
    // Still coming 5 s after the first frame (the GOP burst is over in well under a second).
    let span = clock.last().unwrap() - clock.first().unwrap();
    assert!(span >= 5.0, "video flowed for only {span:.2} s");
    assert!(report["audio_frames"].as_u64().unwrap() > 100, "{report}");
}

/// A/V of what aiortc decoded from a WHEP session, on the sender's clock as a browser lines
/// the tracks up (RTP times through the RTCP sender reports; aiortc itself ignores the
/// reports, so the script applies them). The first 2 s (the GOP burst) are left out.
#[test]
fn aiortc_over_whep_has_sound_and_picture_together() {
    let server = start("aiortc-whep-av");
    server.wait_live("baseline", Duration::from_secs(20));
    let dir = common::temp_dir("aiortc-whep-av-out");
    let baseline = server.url("/api/cameras/baseline/whep");
    let out = dir.join("baseline-sender-clock.mkv");
    let report = aiortc_whep(&baseline, 11, &out, &["--sender-clock"]);
    assert_eq!(report["status"], 201, "{report}");
    let offsets = sync::av_offsets(out.to_str().unwrap(), &["-ss", "2"], 10.0);
    eprintln!("aiortc WHEP A/V offsets: {offsets:?}");
    sync::assert_in_sync("aiortc over WHEP", &offsets, 3, 0.040);
}

/// aiortc publishes the sync clip over WHIP (its MediaPlayer, H.264 and Opus): the camera goes
/// live, and the RTSP re-stream carries it with sound and picture together.
#[test]
fn aiortc_publishes_the_sync_clip_over_whip() {
    let server = start("aiortc-whip");
    let python = common::tools::aiortc_python();
    let clip = sync::clip_mp4();
    let mut publisher = Command::new(python)
        .arg(script("aiortc_whip.py"))
        .args([
            &server.url("/api/cameras/pub/whip"),
            clip.to_str().unwrap(),
            "16",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run aiortc_whip.py");
    wait_until(Duration::from_secs(20), "the aiortc publisher live", || {
        server.camera_state("pub") == "live"
    });
    // Until both tracks' first RTCP sender reports, the ingest aligns them on arrival (within
    // the machine's jitter: 57 ms once on a loaded CI machine); aiortc sends its first ones
    // about a second in. Read from 3 s of pictures on, when the reports have placed audio.
    let before = server.camera_frames("pub");
    wait_until(Duration::from_secs(8), "3 s of published frames", || {
        server.camera_frames("pub") >= before + 75
    });
    let port = server.get_json("/api/outputs")["rtsp"]["port"]
        .as_u64()
        .unwrap();
    let url = format!("rtsp://127.0.0.1:{port}/pub");
    let offsets = sync::av_offsets(&url, &["-rtsp_transport", "tcp"], 8.0);
    eprintln!("aiortc WHIP read back over RTSP, A/V offsets: {offsets:?}");
    // A browser watching it over MSE: every picture, decode times that only go forward.
    let mse = sync::mse_bytes(&server, "pub", 4.0);
    let status = publisher.wait().unwrap();
    assert!(status.success(), "aiortc_whip.py failed");
    sync::assert_in_sync("aiortc WHIP read back over RTSP", &offsets, 3, 0.040);
    assert_steady("aiortc WHIP over MSE", &mse);
}

/// Decode times of every track strictly increase with no step over 0.5 s, and video carries
/// the clip's 25 pictures a second (a publisher's pictures lost on the way, or decode times
/// that repeat or jump, make a browser show a few frames a second).
fn assert_steady(label: &str, mse: &[u8]) {
    let scales = sync::timescales(mse);
    let tracks = sync::decode_times(mse);
    assert_eq!(tracks.len(), 2, "{label}: tracks {:?}", tracks.keys());
    for (track, times) in &tracks {
        let scale = scales[track] as f64;
        let steps: Vec<f64> = times
            .windows(2)
            .map(|w| (w[1] as f64 - w[0] as f64) / scale)
            .collect();
        if let Some(i) = steps.iter().position(|s| *s <= 0.0 || *s > 0.5) {
            panic!(
                "{label}: track {track} decode time steps {:.4} s at sample {}: {:?}",
                steps[i],
                i + 1,
                &times[i.saturating_sub(3)..(i + 4).min(times.len())]
            );
        }
        let span = (times[times.len() - 1] - times[0]) as f64 / scale;
        eprintln!(
            "{label}: track {track}: {} samples over {span:.2} s",
            times.len()
        );
    }
    let video = tracks.keys().find(|t| scales[*t] == 90_000);
    let times = &tracks[video.expect("a 90 kHz video track")];
    let fps = (times.len() - 1) as f64 * 90_000.0 / (times[times.len() - 1] - times[0]) as f64;
    assert!(
        (fps - 25.0).abs() < 2.0 && times.len() >= 75,
        "{label}: {} pictures at {fps:.1} a second, the clip has 25",
        times.len()
    );
}
