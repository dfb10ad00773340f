//! Cameras that push over RTMP: FFmpeg publishes (`-f flv rtmp://…/live/{camera}`) to a
//! `publish:` camera, which is live while it sends and idle when it goes (even by SIGKILL);
//! ffprobe reads it back over the RTSP re-stream and LL-HLS; a second publisher, a camera that
//! takes none and a publisher without the token are refused; 200 publish cycles leave every
//! count at its baseline.

use crate::common;

use std::process::{Child, Command};
use std::time::Duration;

use common::media::{self, ffprobe, Push};
use common::{counts, require, wait_until, Server};

// The HLS muxer the test starts closes a second after the last request, not a minute.
const CONFIG: &str = "[rtsp]\nlisten = \"127.0.0.1:0\"\n[rtmp]\nlisten = \"127.0.0.1:0\"\n\
                      [hls]\nclose_after = \"1s\"\n\n\
                      [[camera]]\nid = \"pub\"\nsource = \"publish:\"\n\n\
                      [[camera]]\nid = \"cam\"\nsource = \"testsrc://?size=320x240&fps=25&gop=25\"\n\n\
                      [[camera]]\nid = \"keyed\"\nsource = \"publish:\"\npublish_key = \"k3y-for-keyed\"\n";

fn start(name: &str, env: &[(&str, &str)]) -> (Server, u16) {
    let path = common::write_config(name, CONFIG);
    let server = Server::start_with_env(&["--config", path.to_str().unwrap()], env);
    server.wait_live("cam", Duration::from_secs(15));
    let port = server.get_json("/api/outputs")["rtmp"]["port"]
        .as_u64()
        .expect("the RTMP port in /api/outputs") as u16;
    (server, port)
}

fn ffmpeg_publisher(url: &str) -> Child {
    media::ffmpeg_publisher(url, Push::Rtmp)
}

/// Waits for a publisher to end; returns what it printed on stderr.
fn ended(mut child: Child, within: Duration) -> String {
    wait_until(within, "the publisher to end", || {
        child.try_wait().unwrap().is_some()
    });
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    err
}

#[test]
fn ffmpeg_publishes_and_the_camera_is_read_back_until_it_is_killed() {
    let (server, port) = start("rtmp-publish", &[]);
    let baseline = counts(&server.resources());
    assert_eq!(server.camera_state("pub"), "idle");
    let mut publisher = ffmpeg_publisher(&format!("rtmp://127.0.0.1:{port}/live/pub"));
    wait_until(Duration::from_secs(15), "the published camera live", || {
        server.camera_state("pub") == "live"
    });
    let r = server.resources();
    assert_eq!(r["publishers"]["rtmp"], 1, "{r}");
    assert_eq!(r["rtmp_connections"], 1, "{r}");
    let camera = server.get_json("/api/cameras/pub");
    assert_eq!(camera["video"]["codec"], "h264", "{camera}");
    assert_eq!(
        (
            camera["video"]["width"].as_u64(),
            camera["video"]["height"].as_u64()
        ),
        (Some(320), Some(240))
    );
    assert_eq!(camera["audio"]["codec"], "aac", "{camera}");
    // Read back through two other outputs: the RTSP re-stream and LL-HLS.
    let rtsp = server.get_json("/api/outputs")["rtsp"]["port"]
        .as_u64()
        .unwrap();
    let probed = ffprobe(&format!("rtsp://127.0.0.1:{rtsp}/pub"));
    assert!(probed.contains(&"h264,320,240".to_string()), "{probed:?}");
    assert!(probed.contains(&"aac,48000".to_string()), "{probed:?}");
    let probed = ffprobe(&server.url("/api/cameras/pub/hls/index.m3u8"));
    assert!(probed.contains(&"h264,320,240".to_string()), "{probed:?}");
    // SIGKILL: the connection closes, the camera is idle at once, nothing is left.
    publisher.kill().unwrap();
    publisher.wait().unwrap();
    wait_until(
        Duration::from_secs(3),
        "idle after the publisher was killed",
        || server.camera_state("pub") == "idle",
    );
    wait_until(Duration::from_secs(10), "counts back at baseline", || {
        counts(&server.resources()) == baseline
    });
}

#[test]
fn a_second_publisher_a_camera_that_takes_none_and_a_missing_token_are_refused() {
    let (server, port) = start("rtmp-refused", &[("LIVELENS_TOKEN", "rtmp-s3cret")]);
    let baseline = counts(&server.resources());
    let url = |camera: &str| format!("rtmp://127.0.0.1:{port}/live/{camera}");
    // Without the token, or with a wrong one.
    let err = ended(ffmpeg_publisher(&url("pub")), Duration::from_secs(10));
    assert!(err.contains("publishing needs the token"), "{err}");
    let err = ended(
        ffmpeg_publisher(&url("pub?token=wrong")),
        Duration::from_secs(10),
    );
    assert!(err.contains("publishing needs the token"), "{err}");
    // A camera that takes no publisher, and one that does not exist.
    let err = ended(
        ffmpeg_publisher(&url("cam?token=rtmp-s3cret")),
        Duration::from_secs(10),
    );
    assert!(err.contains("does not take published streams"), "{err}");
    let err = ended(
        ffmpeg_publisher(&url("nope?token=rtmp-s3cret")),
        Duration::from_secs(10),
    );
    assert!(err.contains("no camera"), "{err}");
    assert_eq!(server.camera_state("pub"), "idle");
    // With the token: live. A second publisher is refused and the first goes on.
    let mut first = ffmpeg_publisher(&url("pub?token=rtmp-s3cret"));
    wait_until(Duration::from_secs(15), "live", || {
        server.camera_state("pub") == "live"
    });
    let err = ended(
        ffmpeg_publisher(&url("pub?token=rtmp-s3cret")),
        Duration::from_secs(10),
    );
    assert!(err.contains("another publisher"), "{err}");
    let frames = |s: &Server| s.camera_frames("pub");
    let before = frames(&server);
    wait_until(
        Duration::from_secs(5),
        "the first publisher still sending",
        || frames(&server) > before + 25,
    );
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first publisher ended"
    );
    // The token never shows in the API.
    let body = server.get("/api/cameras/pub").text().unwrap();
    assert!(!body.contains("rtmp-s3cret"), "{body}");
    first.kill().unwrap();
    first.wait().unwrap();
    wait_until(Duration::from_secs(10), "counts back at baseline", || {
        counts(&server.resources()) == baseline && server.camera_state("pub") == "idle"
    });
}

#[test]
fn two_hundred_publish_cycles_leave_every_count_at_baseline() {
    require("ffmpeg", "ffmpeg");
    let (server, port) = start("rtmp-cycles", &[]);
    let baseline = counts(&server.resources());
    // A short FLV clip made once, sent as it is in every cycle (no encoder per cycle).
    let clip = common::temp_dir("rtmp-cycles-clip").join("clip.flv");
    let made = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
        .args([
            "-t",
            "0.4",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
        ])
        .args(["-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "flv"])
        .arg(&clip)
        .status()
        .unwrap();
    assert!(made.success());
    let url = format!("rtmp://127.0.0.1:{port}/live/pub");
    for i in 0..200 {
        let out = Command::new("ffmpeg")
            .args(["-nostdin", "-loglevel", "error", "-i"])
            .arg(&clip)
            .args(["-c", "copy", "-f", "flv", &url])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cycle {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if i % 50 == 0 {
            let frames = server.camera_frames("pub");
            assert!(frames > 0, "cycle {i}: no frame reached the camera");
        }
        // The next publisher would get refused while this one's connection is still closing.
        wait_until(Duration::from_secs(5), "the publisher gone", || {
            server.resources()["publishers"]["rtmp"] == 0
        });
    }
    wait_until(
        Duration::from_secs(10),
        "every count back at its baseline, the camera idle",
        || counts(&server.resources()) == baseline && server.camera_state("pub") == "idle",
    );
    // And a real publisher is taken afterwards.
    let mut publisher = ffmpeg_publisher(&url);
    wait_until(Duration::from_secs(15), "live after the cycles", || {
        server.camera_state("pub") == "live"
    });
    publisher.kill().unwrap();
    publisher.wait().unwrap();
}
