//! See the module list in tests/attacks.rs.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use super::common::rtsp::{session_id, Client};
use super::common::{self, counts, media, wait_until, Server};

const VIDEO_SDP: &str =
    "v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:streamid=0\r\n";

fn rtsp_port(server: &Server) -> u16 {
    server.get_json("/api/outputs")["rtsp"]["port"]
        .as_u64()
        .unwrap() as u16
}

/// ANNOUNCE of [`VIDEO_SDP`] to `url` on `client`; the status.
fn announce(client: &mut Client, url: &str) -> u16 {
    let length = VIDEO_SDP.len().to_string();
    client
        .request_with_body(
            "ANNOUNCE",
            url,
            &[
                ("Content-Type", "application/sdp"),
                ("Content-Length", &length),
            ],
            VIDEO_SDP,
        )
        .0
}

/// Hole 5: with `[server] token` set, the RTSP server on its default loopback address asked
/// publishers for nothing (readers need nothing there), so anyone on the machine could feed a
/// camera, and with `auto_create` make cameras that were written to the config file. WHIP and
/// RTMP ask for the token; RTSP now asks the same (`source::publish::publish_secrets`).
#[test]
fn with_a_token_rtsp_publishing_needs_it_even_on_loopback() {
    let token = "tok-rtsp-5511";
    let config = common::write_config(
        "attacks-rtsp-token",
        &format!(
            "[server]\ntoken = \"{token}\"\n\n[publish]\nauto_create = true\n\n\
             [rtsp]\nlisten = \"127.0.0.1:0\"\n\n\
             [[camera]]\nid = \"pub\"\nsource = \"publish:\"\n\n\
             [[camera]]\nid = \"cam\"\nsource = \"testsrc://?size=320x240&fps=25&gop=25\"\n"
        ),
    );
    let file_before = std::fs::read_to_string(&config).unwrap();
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    server.wait_live("cam", Duration::from_secs(15));
    let port = rtsp_port(&server);
    let baseline = counts(&server.resources());

    // A raw ANNOUNCE without credentials, to a camera and to an id auto_create would make.
    let mut statuses = Vec::new();
    for camera in ["pub", "made"] {
        let mut c = Client::connect(port);
        statuses.push(announce(
            &mut c,
            &format!("rtsp://127.0.0.1:{port}/{camera}"),
        ));
    }
    let made = server.get("/api/cameras/made").status();
    let file_after = std::fs::read_to_string(&config).unwrap();
    eprintln!(
        "without credentials: ANNOUNCE pub → {}, made → {}; camera made: {}; config file changed: {}",
        statuses[0],
        statuses[1],
        made == StatusCode::OK,
        file_after != file_before
    );
    assert_eq!(statuses, [401, 401]);
    assert_eq!(made, StatusCode::NOT_FOUND, "auto_create made a camera");
    assert_eq!(file_after, file_before, "the config file was written");

    // FFmpeg without credentials is refused; the camera stays idle.
    let out = media::ffmpeg_publisher(
        &format!("rtsp://127.0.0.1:{port}/pub"),
        media::Push::Rtsp("tcp"),
    )
    .wait_with_output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("401"), "{stderr}");
    assert_eq!(server.camera_state("pub"), "idle");
    wait_until(Duration::from_secs(5), "counts at their baseline", || {
        counts(&server.resources()) == baseline
    });

    // With the token as the password (Digest), or in the URL, it publishes.
    for url in [
        format!("rtsp://any:{token}@127.0.0.1:{port}/pub"),
        format!("rtsp://127.0.0.1:{port}/pub?token={token}"),
    ] {
        let mut p = media::ffmpeg_publisher(&url, media::Push::Rtsp("tcp"));
        server.wait_live("pub", Duration::from_secs(15));
        p.kill().unwrap();
        let _ = p.wait();
        wait_until(Duration::from_secs(5), "idle again", || {
            server.camera_state("pub") == "idle"
        });
    }

    // Reading on loopback still needs nothing, as before.
    let mut reader = Client::connect(port);
    let (status, head, _) = reader.request(
        "DESCRIBE",
        &format!("rtsp://127.0.0.1:{port}/cam"),
        &[("Accept", "application/sdp")],
    );
    assert_eq!(status, 200, "{head}");
}

/// The local UDP ports a process has bound (from /proc: its socket inodes in /proc/net/udp).
fn udp_ports_of(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().to_string();
                    Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let mut ports = Vec::new();
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() > 9 && inodes.iter().any(|i| i == fields[9]) {
                let port = fields[1].rsplit(':').next().unwrap();
                ports.push(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports.sort();
    ports
}

/// FFmpeg publishing video only over UDP.
fn udp_video_publisher(url: &str) -> Child {
    common::require("ffmpeg", "ffmpeg");
    Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc=size=320x240:rate=25"])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
        ])
        .args(["-g", "25", "-pix_fmt", "yuv420p", "-an"])
        .args(["-f", "rtsp", "-rtsp_transport", "udp", url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Hole 6: UDP publishers were found by the address their RTP comes from, and a later SETUP
/// naming the same client port replaced the earlier publisher's entry: the second publisher got
/// the first one's media, and when it left, it removed the entry, so the victim went idle.
#[test]
fn a_udp_publisher_cannot_take_another_publishers_ports() {
    let config = common::write_config(
        "attacks-rtsp-udp-ports",
        "[rtsp]\nlisten = \"127.0.0.1:0\"\n\n\
         [[camera]]\nid = \"a\"\nsource = \"publish:\"\n\n\
         [[camera]]\nid = \"b\"\nsource = \"publish:\"\n",
    );
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let port = rtsp_port(&server);
    let mut victim = udp_video_publisher(&format!("rtsp://127.0.0.1:{port}/a"));
    server.wait_live("a", Duration::from_secs(15));
    let ports = udp_ports_of(victim.id());
    // RTP on an even port, RTCP on the next (FFmpeg binds them as a pair).
    let rtp = *ports
        .iter()
        .find(|p| *p % 2 == 0 && ports.contains(&(*p + 1)))
        .unwrap_or_else(|| panic!("the publisher's UDP ports: {ports:?}"));

    // The attacker: ANNOUNCE to camera b, SETUP naming the victim's client ports, RECORD.
    let url = format!("rtsp://127.0.0.1:{port}/b");
    let mut attacker = Client::connect(port);
    assert_eq!(announce(&mut attacker, &url), 200);
    let transport = format!(
        "RTP/AVP/UDP;unicast;client_port={rtp}-{};mode=record",
        rtp + 1
    );
    let (setup, head, body) = attacker.request(
        "SETUP",
        &format!("{url}/streamid=0"),
        &[("Transport", &transport)],
    );
    let mut recorded = None;
    if setup == 200 {
        let session = session_id(&head);
        recorded = Some(attacker.request("RECORD", &url, &[("Session", &session)]).0);
        // Long enough for the taken-over media to show on camera b.
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) && server.camera_frames("b") == 0 {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let stolen = server.camera_frames("b");
    drop(attacker);
    wait_until(
        Duration::from_secs(5),
        "the attacker's publisher gone",
        || server.resources()["publishers"]["rtsp"] == 1,
    );
    // The victim's camera keeps taking its frames (25 fps: 50 in 4 s is a wide margin).
    let before = server.camera_frames("a");
    let start = Instant::now();
    let mut after = before;
    while start.elapsed() < Duration::from_secs(4) && after < before + 50 {
        std::thread::sleep(Duration::from_millis(100));
        after = server.camera_frames("a");
    }
    eprintln!(
        "attacker's SETUP on the victim's ports {rtp}-{}: {setup} (RECORD {recorded:?}); \
         frames stolen to b: {stolen}; victim's frames after the attacker left: {} in {:?}; \
         victim's camera {}",
        rtp + 1,
        after - before,
        start.elapsed(),
        server.camera_state("a")
    );
    let _ = victim.kill();
    let _ = victim.wait();
    assert_eq!(setup, 461, "{head}{}", String::from_utf8_lossy(&body));
    assert_eq!(stolen, 0);
    assert!(
        after >= before + 50,
        "the victim's camera stopped taking frames"
    );
}

/// An H.264 WHIP offer whose one video line has `direction`.
fn whip_offer(direction: &str) -> String {
    format!(
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
         m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na={direction}\r\na=rtcp-mux\r\n\
         a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
         a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
         a=setup:actpass\r\na=rtpmap:96 H264/90000\r\n\
         a=fmtp:96 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n"
    )
}

/// WHIP (issue 28 §3): a publisher must send. A `recvonly` (or `inactive`) offer was answered,
/// took the camera and, with `auto_create`, made one; now it is 400 before anything is made.
#[test]
fn a_whip_offer_that_sends_nothing_is_refused_and_makes_nothing() {
    let config = common::write_config(
        "attacks-whip-recvonly",
        "[publish]\nauto_create = true\n\n[[camera]]\nid = \"pub\"\nsource = \"publish:\"\n",
    );
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let baseline = counts(&server.resources());
    let offer = |camera: &str, direction: &str| {
        server
            .http
            .post(server.url(&format!("/api/cameras/{camera}/whip")))
            .header("content-type", "application/sdp")
            .body(whip_offer(direction))
            .send()
            .unwrap()
    };
    let mut seen = Vec::new();
    for (camera, direction) in [
        ("pub", "recvonly"),
        ("pub", "inactive"),
        ("made", "recvonly"),
    ] {
        let r = offer(camera, direction);
        let status = r.status();
        let location = r.headers().get("location").cloned();
        let text = r.text().unwrap();
        seen.push((camera, direction, status.as_u16(), text.clone()));
        if let Some(location) = location {
            let _ = server
                .http
                .delete(server.url(location.to_str().unwrap()))
                .send();
        }
    }
    let made = server.get("/api/cameras/made").status();
    eprintln!(
        "offers that send nothing: {:?}; camera made: {}",
        seen.iter().map(|s| (s.0, s.1, s.2)).collect::<Vec<_>>(),
        made == StatusCode::OK
    );
    for (camera, direction, status, text) in &seen {
        assert_eq!(*status, 400, "{camera} {direction}: {text}");
        assert!(text.contains("send"), "{text}");
    }
    assert_eq!(made, StatusCode::NOT_FOUND, "auto_create made a camera");
    assert_eq!(server.camera_state("pub"), "idle");
    wait_until(Duration::from_secs(5), "counts at their baseline", || {
        counts(&server.resources()) == baseline
    });
    // The same offer that sends is answered: the refusal is for the direction alone.
    let r = offer("pub", "sendonly");
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let r = server.http.delete(server.url(&location)).send().unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}
