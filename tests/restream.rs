//! The RTSP re-stream: FFmpeg (ffprobe, ffmpeg) and GStreamer (`rtspsrc`) play
//! `rtsp://HOST:PORT/{camera}` over TCP and UDP; credentials are asked for and checked; bad,
//! oversized and out-of-order requests get their RFC status; 200 sessions come and go and leave
//! every count at its baseline.

use crate::common;

use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

use common::rtsp::{rtp_payload, Client};
use common::{counts, require, wait_until, RtspCamera, Server};

/// A camera of livelens's own test source, and the RTSP server on a free port.
const TESTSRC: &str = "[rtsp]\nlisten = \"127.0.0.1:0\"\n\n[[camera]]\nid = \"cam\"\n\
                       source = \"testsrc://?size=640x360&fps=25&gop=25\"\n";

fn rtsp_port(server: &Server) -> u16 {
    server.get_json("/api/outputs")["rtsp"]["port"]
        .as_u64()
        .expect("the RTSP server runs") as u16
}

fn start(name: &str, config: &str) -> (Server, u16) {
    let path = common::write_config(name, config);
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    server.wait_live("cam", Duration::from_secs(15));
    let port = rtsp_port(&server);
    (server, port)
}

/// `ffprobe` of the re-stream: each stream's codec and size, as CSV lines.
fn ffprobe(url: &str, transport: &str) -> Result<Vec<String>, String> {
    require("ffprobe", "ffmpeg");
    let out = Command::new("timeout")
        .args(["20", "ffprobe", "-v", "error", "-rtsp_transport", transport])
        .args([
            "-show_entries",
            "stream=codec_type,codec_name,width,height,sample_rate",
        ])
        .args(["-of", "csv=p=0", url])
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_end_matches(',').to_string())
        .collect())
}

/// Decodes 3 s of the re-stream's video with ffmpeg: the frames decoded and the wall time.
fn ffmpeg_frames(url: &str, transport: &str) -> (u64, Duration) {
    require("ffmpeg", "ffmpeg");
    let started = Instant::now();
    let out = Command::new("timeout")
        .args([
            "20",
            "ffmpeg",
            "-nostdin",
            "-rtsp_transport",
            transport,
            "-i",
            url,
        ])
        .args(["-t", "3", "-map", "0:v", "-f", "null", "-"])
        .output()
        .unwrap();
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "ffmpeg over {transport} failed:\n{err}"
    );
    let frames = err
        .rsplit("frame=")
        .next()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no frame count in:\n{err}"));
    (frames, took)
}

#[test]
fn ffprobe_and_ffmpeg_read_the_restream_over_tcp_and_udp() {
    let camera = RtspCamera::start(&["--size", "640x360", "--audio", "aac", "--gop", "25"]);
    let config = format!(
        "[rtsp]\nlisten = \"127.0.0.1:0\"\n\n[[camera]]\nid = \"cam\"\nsource = \"{}\"\n",
        camera.url()
    );
    let (server, port) = start("restream-ffmpeg", &config);
    let url = format!("rtsp://127.0.0.1:{port}/cam");
    for transport in ["tcp", "udp"] {
        let streams = ffprobe(&url, transport).unwrap_or_else(|e| panic!("{transport}: {e}"));
        assert!(
            streams.contains(&"h264,video,640,360".to_string()),
            "{transport}: {streams:?}"
        );
        assert!(
            streams.iter().any(|s| s.starts_with("aac,audio,")),
            "{transport}: the camera's AAC goes too: {streams:?}"
        );
        let (frames, took) = ffmpeg_frames(&url, transport);
        // 3 s of 25 fps video; the first picture is the GOP cache's keyframe, at once.
        assert!(frames >= 50, "{transport}: {frames} frames in 3 s of video");
        assert!(took < Duration::from_secs(8), "{transport}: took {took:?}");
    }
    wait_until(Duration::from_secs(5), "RTSP viewers gone", || {
        let r = server.resources();
        r["viewers"]["rtsp"] == 0 && r["rtsp_connections"] == 0
    });
}

#[test]
fn gstreamer_rtspsrc_plays_it_over_tcp_and_udp() {
    require("gst-launch-1.0", "gstreamer1.0-tools");
    let (_server, port) = start("restream-gst", TESTSRC);
    for protocol in ["tcp", "udp"] {
        let out = Command::new("timeout")
            .args(["30", "gst-launch-1.0", "-q", "rtspsrc"])
            .arg(format!("location=rtsp://127.0.0.1:{port}/cam"))
            .arg(format!("protocols={protocol}"))
            .args([
                "latency=0",
                "!",
                "rtph264depay",
                "!",
                "h264parse",
                "!",
                "avdec_h264",
            ])
            .args(["!", "identity", "eos-after=50", "!", "fakesink"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{protocol}: gst-launch did not decode 50 pictures:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn credentials_are_asked_for_and_checked_and_never_shown() {
    let config = format!(
        "[server]\ntoken = \"tok-9f8e\"\n\n[rtsp]\nlisten = \"127.0.0.1:0\"\n\
         users = {{ nvr = \"s3cret-pw\" }}\n\n{}",
        TESTSRC.split_once("\n\n").unwrap().1
    );
    let (server, port) = start("restream-auth", &config);
    let outputs = server.get_json("/api/outputs");
    assert_eq!(outputs["rtsp"]["auth"], true);
    let at = |userinfo: &str| format!("rtsp://{userinfo}127.0.0.1:{port}/cam");
    let refused = ffprobe(&at(""), "tcp").expect_err("no credentials");
    assert!(refused.contains("401"), "{refused}");
    assert!(ffprobe(&at("nvr:wrong@"), "tcp").is_err());
    assert!(ffprobe(&at("other:s3cret-pw@"), "tcp").is_err());
    for good in ["nvr:s3cret-pw@", "anyone:tok-9f8e@"] {
        let streams = ffprobe(&at(good), "tcp").unwrap_or_else(|e| panic!("{good}: {e}"));
        assert!(
            streams.contains(&"h264,video,640,360".to_string()),
            "{streams:?}"
        );
    }
    // A raw client gets the challenges; OPTIONS is open, as clients probe with it.
    let mut c = Client::connect(port);
    assert_eq!(c.request("OPTIONS", &at(""), &[]).0, 200);
    let (status, head, _) = c.request("DESCRIBE", &at(""), &[]);
    assert_eq!(status, 401);
    assert!(
        head.contains("WWW-Authenticate: Digest realm=\"livelens\""),
        "{head}"
    );
    // A client that keeps failing is guessing: after 5 refusals the connection is closed.
    for _ in 1..5 {
        assert_eq!(c.request("DESCRIBE", &at(""), &[]).0, 401);
    }
    let asked = Instant::now();
    assert!(!c.fill(), "the connection stayed open after 5 refusals");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "closed by a timeout, not at once"
    );
    for path in [
        "/api/outputs",
        "/api/cameras",
        "/api/config/status",
        "/api/openapi.json",
    ] {
        let body = server.get(path).text().unwrap();
        assert!(!body.contains("s3cret-pw"), "{path} shows the password");
    }
}

#[test]
fn off_loopback_without_credentials_livelens_refuses_to_start() {
    // Refused before anything binds: nothing listens beyond loopback.
    let path = common::write_config(
        "restream-open",
        "[rtsp]\nlisten = \"0.0.0.0:0\"\n\n[[camera]]\nid = \"cam\"\nsource = \"testsrc://\"\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_livelens"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--config",
            path.to_str().unwrap(),
        ])
        .env_remove("LIVELENS_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to serve RTSP on 0.0.0.0:0 without credentials"),
        "{err}"
    );
}

#[test]
fn hostile_and_out_of_order_requests_get_their_status_and_cost_nothing() {
    let (server, port) = start("restream-hostile", TESTSRC);
    let baseline = counts(&server.resources());
    let url = format!("rtsp://127.0.0.1:{port}/cam");
    // Not RTSP at all: 400, and the connection is closed.
    let mut c = Client::connect(port);
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.response().0, 400);
    assert_eq!(c.response().0, 0, "closed after a malformed request");
    // A head that never ends: 413 once it is over the limit.
    let mut c = Client::connect(port);
    let mut big = format!("OPTIONS {url} RTSP/1.0\r\nCSeq: 1\r\n").into_bytes();
    big.extend(std::iter::repeat_n(b'a', 20_000));
    c.send(&big);
    assert_eq!(c.response().0, 413);
    // A body over the limit is refused before it is read.
    let mut c = Client::connect(port);
    c.send(
        format!("SET_PARAMETER {url} RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 99999999\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(c.response().0, 413);
    let mut c = Client::connect(port);
    assert_eq!(
        c.request("DESCRIBE", &format!("rtsp://127.0.0.1:{port}/nope"), &[])
            .0,
        404
    );
    assert_eq!(
        c.request(
            "DESCRIBE",
            &format!("rtsp://127.0.0.1:{port}/../etc/passwd"),
            &[]
        )
        .0,
        404
    );
    assert_eq!(
        c.request("PLAY", &url, &[("Session", "0123456789abcdef")])
            .0,
        454,
        "a guessed session"
    );
    assert_eq!(c.request("PLAY", &url, &[]).0, 455, "PLAY before SETUP");
    assert_eq!(c.request("ANNOUNCE", &url, &[]).0, 405);
    assert_eq!(
        c.request(
            "SETUP",
            &format!("{url}/trackID=0"),
            &[("Transport", "RTP/AVP;multicast")]
        )
        .0,
        461
    );
    // Another connection's session is not this one's.
    let mut a = Client::connect(port);
    let session = a.play(port, None);
    let mut b = Client::connect(port);
    assert_eq!(b.request("TEARDOWN", &url, &[("Session", &session)]).0, 454);
    // `a` still plays: video comes (after the sender reports that PLAY sends first).
    let (channel, data) = (0..4)
        .map(|_| a.interleaved())
        .find(|(channel, _)| *channel == 0)
        .expect("video after the sender reports");
    assert_eq!(channel, 0);
    rtp_payload(&data);
    // 50 clients at once, each dropped mid-play.
    let handles: Vec<_> = (0..50)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Client::connect(port);
                c.play(port, None);
                c.interleaved();
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    drop((a, b, c));
    wait_until(
        Duration::from_secs(5),
        "every count back at its baseline",
        || counts(&server.resources()) == baseline,
    );
}

#[test]
fn two_hundred_sessions_come_and_go_and_every_count_returns() {
    let (server, port) = start("restream-cycles", TESTSRC);
    let baseline = counts(&server.resources());
    assert_eq!(baseline["viewers"]["rtsp"], 0);
    assert_eq!(baseline["rtsp_connections"], 0);
    let url = format!("rtsp://127.0.0.1:{port}/cam");
    for i in 0..200 {
        let mut c = Client::connect(port);
        let udp = (i % 4 == 3).then(|| {
            // An even port and the next one, as RTP asks.
            loop {
                let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
                let p = rtp.local_addr().unwrap().port();
                if p % 2 == 0 {
                    if let Ok(rtcp) = UdpSocket::bind(("127.0.0.1", p + 1)) {
                        break (rtp, rtcp);
                    }
                }
            }
        });
        let ports = udp.as_ref().map(|(a, b)| {
            (
                a.local_addr().unwrap().port(),
                b.local_addr().unwrap().port(),
            )
        });
        let session = c.play(port, ports);
        // The first packet is the GOP cache's keyframe, its SPS first.
        let first = match &udp {
            // After the sender reports PLAY sends first (RTCP channels are odd).
            None => {
                (0..4)
                    .map(|_| c.interleaved())
                    .find(|(channel, _)| *channel == 0)
                    .expect("video after the sender reports")
                    .1
            }
            Some((rtp, _)) => {
                rtp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut buf = vec![0u8; 2048];
                let n = rtp.recv(&mut buf).expect("an RTP datagram");
                buf.truncate(n);
                buf
            }
        };
        assert_eq!(rtp_payload(&first)[0] & 0x1f, 7, "cycle {i}: SPS first");
        if i % 2 == 0 {
            assert_eq!(c.request("TEARDOWN", &url, &[("Session", &session)]).0, 200);
        }
    }
    wait_until(
        Duration::from_secs(5),
        "every count back at its baseline",
        || counts(&server.resources()) == baseline,
    );
    // And a new client is served.
    let streams = ffprobe(&url, "tcp").unwrap();
    assert!(
        streams.contains(&"h264,video,640,360".to_string()),
        "{streams:?}"
    );
}

#[test]
fn h265_goes_through_as_it_is() {
    let camera = RtspCamera::start(&["--codec", "h265", "--size", "640x360", "--gop", "25"]);
    let config = format!(
        "[rtsp]\nlisten = \"127.0.0.1:0\"\n\n[[camera]]\nid = \"cam\"\nsource = \"{}\"\n",
        camera.url()
    );
    let (_server, port) = start("restream-h265", &config);
    let url = format!("rtsp://127.0.0.1:{port}/cam");
    let streams = ffprobe(&url, "tcp").unwrap();
    assert_eq!(streams, ["hevc,video,640,360"]);
    let (frames, _) = ffmpeg_frames(&url, "tcp");
    assert!(frames >= 50, "{frames} frames in 3 s of video");
}

#[test]
fn silent_clients_are_dropped_after_the_session_timeout_but_tcp_players_need_not_speak() {
    let config = TESTSRC.replace(
        "listen = \"127.0.0.1:0\"\n",
        "listen = \"127.0.0.1:0\"\nsession_timeout = \"2s\"\n",
    );
    let (server, port) = start("restream-timeout", &config);
    let baseline = counts(&server.resources());
    // A connection that never sends a request, and a UDP player that sends nothing more.
    let mut idle = Client::connect(port);
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let p = rtp.local_addr().unwrap().port();
    let mut udp_player = Client::connect(port);
    udp_player.play(port, Some((p, p + 1)));
    let mut tcp_player = Client::connect(port);
    tcp_player.play(port, None);
    let started = Instant::now();
    assert!(!idle.fill(), "the idle connection is closed");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(6),
        "closed after {took:?}"
    );
    // The UDP player is gone too; the TCP player still gets video well past the timeout.
    wait_until(Duration::from_secs(5), "the UDP player dropped", || {
        server.resources()["viewers"]["rtsp"] == 1
    });
    let deadline = Instant::now() + Duration::from_secs(4);
    while Instant::now() < deadline {
        let (channel, data) = tcp_player.interleaved();
        if channel == 0 {
            rtp_payload(&data);
        }
    }
    drop((udp_player, tcp_player));
    wait_until(
        Duration::from_secs(5),
        "every count back at its baseline",
        || counts(&server.resources()) == baseline,
    );
}

#[test]
fn pause_and_play_again_continue_the_rtp_stream() {
    let (_server, port) = start("restream-pause", TESTSRC);
    let url = format!("rtsp://127.0.0.1:{port}/cam");
    let mut c = Client::connect(port);
    let session = c.play(port, None);
    let seq = |p: &[u8]| u16::from_be_bytes([p[2], p[3]]);
    let mut last = 0;
    for _ in 0..20 {
        let (channel, data) = c.interleaved();
        if channel == 0 {
            last = seq(&data);
        }
    }
    // PLAY while playing changes nothing; PAUSE then PLAY goes on after the last number.
    for method in ["PLAY", "PAUSE", "PLAY"] {
        assert_eq!(
            c.request(method, &url, &[("Session", &session)]).0,
            200,
            "{method}"
        );
    }
    for _ in 0..40 {
        let (channel, data) = c.interleaved();
        if channel == 0 {
            let now = seq(&data);
            let step = now.wrapping_sub(last);
            assert!((1..1_000).contains(&step), "sequence {last} then {now}");
            last = now;
        }
    }
}
