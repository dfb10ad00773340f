//! Cameras that push over RTSP: FFmpeg publishes (`-f rtsp`, ANNOUNCE/RECORD) to a `publish:`
//! camera, which is idle without a publisher, live while one sends, and idle again when it goes
//! (even by SIGKILL); every output reads it back; a second publisher gets 409; 200 publish
//! cycles leave every count at its baseline.

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::media::{self, ffprobe, Push};
use common::rtsp::{session_id, Client};
use common::{counts, wait_until, Server};

const CONFIG: &str = "[rtsp]\nlisten = \"127.0.0.1:0\"\n\n\
                      [[camera]]\nid = \"pub\"\nsource = \"publish:\"\n\n\
                      [[camera]]\nid = \"cam\"\nsource = \"testsrc://?size=320x240&fps=25&gop=25\"\n";

fn start(name: &str) -> (Server, u16) {
    let path = common::write_config(name, CONFIG);
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    server.wait_live("cam", Duration::from_secs(15));
    let port = server.get_json("/api/outputs")["rtsp"]["port"]
        .as_u64()
        .unwrap() as u16;
    (server, port)
}

fn ffmpeg_publisher(url: &str) -> Child {
    media::ffmpeg_publisher(url, Push::Rtsp("tcp"))
}

#[test]
fn ffmpeg_publishes_and_every_output_reads_it_back_until_it_is_killed() {
    let (server, port) = start("publish-ffmpeg");
    assert_eq!(server.camera_state("pub"), "idle", "no publisher yet");
    let url = format!("rtsp://127.0.0.1:{port}/pub");
    let mut first = ffmpeg_publisher(&url);
    server.wait_live("pub", Duration::from_secs(15));
    assert_eq!(server.resources()["publishers"]["rtsp"], 1);
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
    // Read back: the RTSP re-stream, and a snapshot decoded from the published picture.
    let streams = ffprobe(&url);
    assert!(streams.contains(&"h264,320,240".to_string()), "{streams:?}");
    assert!(streams.iter().any(|s| s.starts_with("aac")), "{streams:?}");
    let jpeg = server.get("/api/cameras/pub/snapshot.jpg").bytes().unwrap();
    let picture = image::load_from_memory(&jpeg).expect("a JPEG");
    assert_eq!((picture.width(), picture.height()), (320, 240));
    // A second publisher is refused while the first sends, and the first goes on.
    let second = ffmpeg_publisher(&url);
    let out = second.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("409"), "{err}");
    assert_eq!(server.camera_state("pub"), "live");
    // SIGKILL: no TEARDOWN, the connection just ends. The camera is idle again at once.
    first.kill().unwrap();
    let _ = first.wait();
    wait_until(
        Duration::from_secs(5),
        "the camera idle, its publisher gone",
        || server.camera_state("pub") == "idle" && server.resources()["publishers"]["rtsp"] == 0,
    );
    // And a new publisher is taken.
    let mut again = ffmpeg_publisher(&url);
    server.wait_live("pub", Duration::from_secs(15));
    again.kill().unwrap();
    let _ = again.wait();
}

#[test]
fn an_announce_the_camera_cannot_take_gets_its_status() {
    let (server, port) = start("publish-refused");
    let baseline = counts(&server.resources());
    let sdp = "v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:streamid=0\r\n";
    let announce = |camera: &str, body: &str| {
        let mut c = Client::connect(port);
        let url = format!("rtsp://127.0.0.1:{port}/{camera}");
        let length = body.len().to_string();
        c.request_with_body(
            "ANNOUNCE",
            &url,
            &[
                ("Content-Type", "application/sdp"),
                ("Content-Length", &length),
            ],
            body,
        )
        .0
    };
    assert_eq!(
        announce("cam", sdp),
        405,
        "a testsrc camera takes no publisher"
    );
    assert_eq!(announce("nope", sdp), 404);
    assert_eq!(
        announce("pub", "v=0\r\nm=audio 0 RTP/AVP 0\r\n"),
        400,
        "no video track"
    );
    assert_eq!(server.camera_state("pub"), "idle");
    wait_until(
        Duration::from_secs(5),
        "every count back at its baseline",
        || counts(&server.resources()) == baseline,
    );
}

/// The `cam` camera's re-stream, read by a client, is what a relay publishes to `pub`: real
/// H.264 with its SDP (sprop-parameter-sets), without an encoder process per cycle.
#[test]
fn two_hundred_publish_cycles_leave_every_count_at_baseline() {
    let (server, port) = start("publish-cycles");
    let baseline = counts(&server.resources());
    let cam = format!("rtsp://127.0.0.1:{port}/cam");
    let publish = format!("rtsp://127.0.0.1:{port}/pub");
    for i in 0..200 {
        let mut reader = Client::connect(port);
        let (_, _, sdp) = reader.request("DESCRIBE", &cam, &[]);
        reader.play(port, None);
        let sdp = String::from_utf8(sdp).unwrap();
        let mut publisher = Client::connect(port);
        let length = sdp.len().to_string();
        let (status, head, _) = publisher.request_with_body(
            "ANNOUNCE",
            &publish,
            &[
                ("Content-Type", "application/sdp"),
                ("Content-Length", &length),
            ],
            &sdp,
        );
        assert_eq!(status, 200, "cycle {i}: {head}");
        let (status, head, _) = publisher.request(
            "SETUP",
            &format!("{publish}/trackID=0"),
            &[(
                "Transport",
                "RTP/AVP/TCP;unicast;interleaved=0-1;mode=record",
            )],
        );
        assert_eq!(status, 200, "cycle {i}: {head}");
        let session = session_id(&head);
        assert_eq!(
            publisher
                .request("RECORD", &publish, &[("Session", &session)])
                .0,
            200
        );
        // The keyframe from the GOP cache, then a few more frames, relayed as they come.
        let mut packets = 0;
        while packets < 40 {
            let (channel, data) = reader.interleaved();
            if channel == 0 {
                let mut framed = vec![b'$', 0];
                framed.extend_from_slice(&(data.len() as u16).to_be_bytes());
                framed.extend_from_slice(&data);
                publisher.send(&framed);
                packets += 1;
            }
        }
        if i % 50 == 0 {
            server.wait_live("pub", Duration::from_secs(10));
        }
        if i % 2 == 0 {
            assert_eq!(
                publisher
                    .request("TEARDOWN", &publish, &[("Session", &session)])
                    .0,
                200
            );
        }
        drop(publisher);
        // The next ANNOUNCE would get 409 while this publisher's connection is still closing.
        wait_until(Duration::from_secs(5), "the publisher gone", || {
            server.resources()["publishers"]["rtsp"] == 0
        });
    }
    wait_until(
        Duration::from_secs(10),
        "every count back at its baseline, the camera idle",
        || counts(&server.resources()) == baseline && server.camera_state("pub") == "idle",
    );
    // And a real publisher is taken afterwards.
    let mut p = ffmpeg_publisher(&publish);
    server.wait_live("pub", Duration::from_secs(15));
    p.kill().unwrap();
    let _ = p.wait();
}

#[test]
fn h265_with_opus_is_published_as_it_is() {
    let (server, port) = start("publish-h265");
    let url = format!("rtsp://127.0.0.1:{port}/pub");
    let mut publisher = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args([
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-x265-params",
            "log-level=error:keyint=25",
        ])
        .args(["-pix_fmt", "yuv420p", "-c:a", "libopus", "-b:a", "48k"])
        .args(["-f", "rtsp", "-rtsp_transport", "tcp", &url])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    server.wait_live("pub", Duration::from_secs(20));
    let camera = server.get_json("/api/cameras/pub");
    assert_eq!(camera["video"]["codec"], "h265", "{camera}");
    assert_eq!(camera["audio"]["codec"], "opus", "{camera}");
    let streams = ffprobe(&url);
    assert!(streams.contains(&"hevc,320,240".to_string()), "{streams:?}");
    assert!(streams.iter().any(|s| s.starts_with("opus")), "{streams:?}");
    publisher.kill().unwrap();
    let _ = publisher.wait();
    wait_until(Duration::from_secs(5), "the camera idle again", || {
        server.camera_state("pub") == "idle"
    });
}

#[test]
fn with_credentials_set_a_publisher_needs_them_and_the_token_in_the_url_will_do() {
    let config = format!(
        "[server]\ntoken = \"tok-7c1d\"\n\n{}",
        CONFIG.replace(
            "listen = \"127.0.0.1:0\"\n",
            "listen = \"127.0.0.1:0\"\nusers = { cam1 = \"pw-1\" }\n"
        )
    );
    let path = common::write_config("publish-auth", &config);
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    let port = server.get_json("/api/outputs")["rtsp"]["port"]
        .as_u64()
        .unwrap() as u16;
    // Without credentials: 401, and the camera stays idle.
    let out = ffmpeg_publisher(&format!("rtsp://127.0.0.1:{port}/pub"))
        .wait_with_output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(server.camera_state("pub"), "idle");
    for url in [
        format!("rtsp://127.0.0.1:{port}/pub?token=tok-7c1d"),
        format!("rtsp://cam1:pw-1@127.0.0.1:{port}/pub"),
    ] {
        let mut p = ffmpeg_publisher(&url);
        server.wait_live("pub", Duration::from_secs(15));
        p.kill().unwrap();
        let _ = p.wait();
        wait_until(Duration::from_secs(5), "idle again", || {
            server.camera_state("pub") == "idle"
        });
    }
}

#[test]
fn ffmpeg_publishes_over_udp_too() {
    let (server, port) = start("publish-udp");
    let baseline = counts(&server.resources());
    let url = format!("rtsp://127.0.0.1:{port}/pub");
    let mut publisher = media::ffmpeg_publisher(&url, Push::Rtsp("udp"));
    server.wait_live("pub", Duration::from_secs(15));
    let camera = server.get_json("/api/cameras/pub");
    assert_eq!(camera["audio"]["codec"], "aac", "{camera}");
    // Video keeps coming over UDP at the publisher's rate.
    wait_until(Duration::from_secs(8), "video at 25 fps", || {
        server.get_json("/api/cameras/pub")["stats"]["fps"]
            .as_f64()
            .unwrap_or(0.0)
            >= 20.0
    });
    let streams = ffprobe(&url);
    assert!(streams.contains(&"h264,320,240".to_string()), "{streams:?}");
    publisher.kill().unwrap();
    let _ = publisher.wait();
    wait_until(
        Duration::from_secs(5),
        "idle, and every count back at its baseline",
        || server.camera_state("pub") == "idle" && counts(&server.resources()) == baseline,
    );
}

/// `[publish]`: a new publisher takes over from the live one, an unknown camera id is made for
/// its publisher, and a publisher that sends no media is let go after `timeout`.
#[test]
fn publish_settings_take_over_make_cameras_and_time_out() {
    let path = common::write_config(
        "publish-settings",
        &format!("[publish]\ntakeover = true\nauto_create = true\ntimeout = \"2s\"\n{CONFIG}"),
    );
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    server.wait_live("cam", Duration::from_secs(15));
    let port = server.get_json("/api/outputs")["rtsp"]["port"]
        .as_u64()
        .unwrap() as u16;
    let url = format!("rtsp://127.0.0.1:{port}/pub");
    // Takeover: the second publisher replaces the first, whose connection is closed.
    let mut first = ffmpeg_publisher(&url);
    wait_until(Duration::from_secs(15), "live", || {
        server.camera_state("pub") == "live"
    });
    let mut second = ffmpeg_publisher(&url);
    wait_until(
        Duration::from_secs(15),
        "the first publisher let go",
        || first.try_wait().unwrap().is_some(),
    );
    let frames = |s: &Server| s.camera_frames("pub");
    let before = frames(&server);
    wait_until(
        Duration::from_secs(10),
        "frames from the second publisher",
        || frames(&server) > before + 50,
    );
    assert_eq!(server.camera_state("pub"), "live");
    assert_eq!(server.resources()["publishers"]["rtsp"], 1);
    let _ = second.kill();
    let _ = second.wait();
    wait_until(Duration::from_secs(5), "idle", || {
        server.camera_state("pub") == "idle"
    });
    // auto_create: publishing to an id no camera has makes a publish: camera for it.
    assert_eq!(server.get("/api/cameras/made").status(), 404);
    let mut maker = ffmpeg_publisher(&format!("rtsp://127.0.0.1:{port}/made"));
    wait_until(Duration::from_secs(15), "the made camera live", || {
        server.get("/api/cameras/made").status() == 200 && server.camera_state("made") == "live"
    });
    assert_eq!(server.get_json("/api/cameras/made")["source"], "publish:");
    let _ = maker.kill();
    let _ = maker.wait();
    // An id a camera may not have is still refused (404), and nothing is made for it.
    let mut c = Client::connect(port);
    let sdp = "v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:streamid=0\r\n";
    let length = sdp.len().to_string();
    let bad = format!("rtsp://127.0.0.1:{port}/bad%20id");
    let headers = [
        ("Content-Type", "application/sdp"),
        ("Content-Length", length.as_str()),
    ];
    assert_eq!(c.request_with_body("ANNOUNCE", &bad, &headers, sdp).0, 404);
    // timeout: a publisher that records but sends nothing is let go after 2 s.
    let mut silent = Client::connect(port);
    assert_eq!(
        silent.request_with_body("ANNOUNCE", &url, &headers, sdp).0,
        200
    );
    let (status, head, _) = silent.request(
        "SETUP",
        &format!("{url}/streamid=0"),
        &[(
            "Transport",
            "RTP/AVP/TCP;unicast;interleaved=0-1;mode=record",
        )],
    );
    assert_eq!(status, 200, "{head}");
    let session = session_id(&head);
    assert_eq!(
        silent.request("RECORD", &url, &[("Session", &session)]).0,
        200
    );
    let started = std::time::Instant::now();
    wait_until(
        Duration::from_secs(6),
        "the silent publisher let go",
        || server.resources()["publishers"]["rtsp"] == 0 && server.camera_state("pub") == "idle",
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "let go after {:?}",
        started.elapsed()
    );
}

/// `publish_key`: a camera's own secret for its publishers. Asked for even on loopback where the
/// server asks for nothing; it opens that camera's publishing only (not another camera, and no
/// reading); never shown by the API.
#[test]
fn a_cameras_publish_key_is_asked_for_and_opens_that_camera_only() {
    let config = format!(
        "{CONFIG}\n[[camera]]\nid = \"keyed\"\nsource = \"publish:\"\npublish_key = \"k3y-for-keyed\"\n"
    );
    let path = common::write_config("publish-key", &config);
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    server.wait_live("cam", Duration::from_secs(15));
    let port = server.get_json("/api/outputs")["rtsp"]["port"]
        .as_u64()
        .unwrap() as u16;
    let shown = server.get("/api/cameras/keyed").text().unwrap();
    assert!(!shown.contains("k3y-for-keyed"), "{shown}");
    assert!(shown.contains("\"publish_key\":\"***\""), "{shown}");
    // Without the key: 401, although this server asks nothing of readers on loopback.
    let out = ffmpeg_publisher(&format!("rtsp://127.0.0.1:{port}/keyed"))
        .wait_with_output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    assert_eq!(server.camera_state("keyed"), "idle");
    // With it, as a password (Digest) or in the URL.
    for url in [
        format!("rtsp://any:k3y-for-keyed@127.0.0.1:{port}/keyed"),
        format!("rtsp://127.0.0.1:{port}/keyed?token=k3y-for-keyed"),
    ] {
        let mut p = ffmpeg_publisher(&url);
        server.wait_live("keyed", Duration::from_secs(15));
        p.kill().unwrap();
        let _ = p.wait();
        wait_until(Duration::from_secs(5), "idle again", || {
            server.camera_state("keyed") == "idle"
        });
    }
    // A camera without a key is as before (open on loopback).
    let mut p = ffmpeg_publisher(&format!("rtsp://127.0.0.1:{port}/pub"));
    server.wait_live("pub", Duration::from_secs(15));
    p.kill().unwrap();
    let _ = p.wait();
}
