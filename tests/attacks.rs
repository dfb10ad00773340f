//! Hostile input against the real binary: each test is an attack that once got through (see
//! docs/SECURITY.md), and the answer it must get now.

use crate::common;

// The second attack run (issue 28), one file per surface: tests/attacks/*.rs.
/// The fan-out's byte budget (hole 7).
#[path = "attacks/fanout_budget.rs"]
mod fanout_budget;
/// Playback downloads that never read, and forged timestamps (hole 2).
#[path = "attacks/http_playback.rs"]
mod http_playback;
/// RTMP: memory before auth, per-address caps and handshake deadlines (holes 1 and 3).
#[path = "attacks/rtmp_limits.rs"]
mod rtmp_limits;
/// RTSP publishing: the token rule, UDP port takeover, per-address caps (holes 3, 5, 6); WHIP recvonly.
#[path = "attacks/rtsp_publish.rs"]
mod rtsp_publish;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::Server;
use reqwest::StatusCode;
use serde_json::json;

/// The full-scale attack run (`scripts/attack-run`, not CI): tests scale their counts up to the
/// figures of the original reproductions when `LIVELENS_ATTACK_FULL` is set.
pub(crate) fn full_scale() -> bool {
    std::env::var_os("LIVELENS_ATTACK_FULL").is_some()
}

/// The `host:port` the server listens on.
fn authority(server: &Server) -> String {
    server.base.trim_start_matches("http://").to_string()
}

/// Sends `request` as is over a new connection and returns the response's status and body
/// (for a `101`, the status and an empty body).
fn raw(server: &Server, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(authority(server)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut buf).expect("response");
        assert!(n > 0, "connection closed before a response: {got:?}");
        got.extend_from_slice(&buf[..n]);
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_string();
    let status: u16 = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while got.len() < head_end + length {
        let n = stream.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    (
        status,
        String::from_utf8_lossy(&got[head_end..]).to_string(),
    )
}

fn websocket_upgrade(path: &str, host: &str, origin: Option<&str>) -> String {
    let origin = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{origin}\r\n"
    )
}

#[test]
fn a_camera_named_whep_needs_the_token_like_any_other() {
    let server = Server::start_with_env(&[], &[("LIVELENS_TOKEN", "s3cret-token")]);
    let http = &server.http;
    let r = http
        .post(server.url("/api/cameras"))
        .bearer_auth("s3cret-token")
        .json(&json!({"id": "whep", "source": "testsrc://?size=320x240"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    // Once, the path ending in /whep was taken for a viewer's call and passed without a token.
    let source = json!({"source": "testsrc://?size=160x120"});
    let attempts = [
        http.patch(server.url("/api/cameras/whep")).json(&source),
        http.post(server.url("/api/cameras/whep/stop")),
        http.post(server.url("/api/cameras/whep/start")),
        http.delete(server.url("/api/cameras/whep")),
    ];
    for attempt in attempts {
        let r = attempt.send().unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{}", r.url());
    }
    let camera = server.get_json("/api/cameras/whep");
    assert_eq!(camera["source"], "testsrc://?size=320x240");
    assert_ne!(camera["state"], "stopped");
    // Watching it needs no token: the offer is refused for what it is, not for the token.
    let r = http
        .post(server.url("/api/cameras/whep/whep"))
        .header("content-type", "application/sdp")
        .body("hello")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = http
        .delete(server.url("/api/cameras/whep"))
        .bearer_auth("s3cret-token")
        .send()
        .unwrap();
    assert!(r.status().is_success());
}

#[test]
fn foreign_host_names_are_refused_before_anything_happens() {
    let server = Server::start(&[]);
    let port = authority(&server).rsplit(':').next().unwrap().to_string();
    let before = server.get_json("/api/cameras").as_array().unwrap().len();
    // DNS rebinding: the page's own name, resolved to 127.0.0.1.
    let body = r#"{"id":"rebound","source":"testsrc://"}"#;
    let add = |host: &str| {
        format!(
            "POST /api/cameras HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let (status, error) = raw(&server, &add(&format!("attacker.example:{port}")));
    assert_eq!(status, 421, "{error}");
    assert!(error.contains("allowed_hosts"), "{error}");
    let get = |host: &str| {
        format!("GET /api/cameras HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
    };
    for host in [
        "attacker.example",
        "127.0.0.1.attacker.example",
        "localhost.attacker.example:1",
    ] {
        assert_eq!(raw(&server, &get(host)).0, 421, "{host}");
    }
    // An absolute URI names the host too.
    let absolute = "GET http://attacker.example/api/cameras HTTP/1.1\r\nHost: attacker.example\r\nConnection: close\r\n\r\n";
    assert_eq!(raw(&server, absolute).0, 421);
    assert_eq!(
        server.get_json("/api/cameras").as_array().unwrap().len(),
        before,
        "nothing was added"
    );
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "[::1]".into(),
    ] {
        assert_eq!(raw(&server, &get(&host)).0, 200, "{host}");
    }

    // A name the owner lists is served.
    let config = common::write_config(
        "attacks-hosts",
        "[server]\nallowed_hosts = [\"cams.example\"]\n\n[[camera]]\nid = \"demo\"\nsource = \"testsrc://\"\n",
    );
    let listed = Server::start(&["--config", config.to_str().unwrap()]);
    assert_eq!(raw(&listed, &get("cams.example")).0, 200);
    assert_eq!(raw(&listed, &get("other.example")).0, 421);
}

#[test]
fn foreign_origins_cannot_open_websockets_or_change_state() {
    let server = Server::start(&[]);
    server.wait_live("demo", Duration::from_secs(5));
    let host = authority(&server);
    let own = format!("http://{host}");
    for path in ["/api/ws?src=demo", "/api/cameras/demo/mse"] {
        let (status, error) = raw(
            &server,
            &websocket_upgrade(path, &host, Some("http://evil.example")),
        );
        assert_eq!(status, 403, "{path}: {error}");
        assert!(error.contains("allowed_origins"), "{error}");
        assert_eq!(
            raw(&server, &websocket_upgrade(path, &host, Some("null"))).0,
            403
        );
        // The server's own page, and clients that are not browsers, may.
        assert_eq!(
            raw(&server, &websocket_upgrade(path, &host, Some(&own))).0,
            101,
            "{path}"
        );
        assert_eq!(
            raw(&server, &websocket_upgrade(path, &host, None)).0,
            101,
            "{path}"
        );
    }
    let r = server
        .http
        .post(server.url("/api/cameras"))
        .header("origin", "http://evil.example")
        .json(&json!({"id": "planted", "source": "testsrc://"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        server.get("/api/cameras/planted").status(),
        StatusCode::NOT_FOUND
    );
    // A cross-site form can send text/plain: an offer in it is not taken.
    let r = server
        .http
        .post(server.url("/api/webrtc?src=demo"))
        .header("content-type", "text/plain")
        .body("v=0\r\n")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = server
        .http
        .post(server.url("/api/cameras/demo/whep"))
        .header("origin", "http://evil.example")
        .header("content-type", "application/sdp")
        .body("v=0\r\n")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(server.resources()["peer_connections"], 0);
    // The accepted upgrades above were closed by the client; the server counts each down when
    // it reads the end, a moment later.
    common::wait_until(Duration::from_secs(5), "the test's WebSockets gone", || {
        server.resources()["websockets"] == 0
    });

    // An origin the owner lists is let in.
    let config = common::write_config(
        "attacks-origins",
        "[server]\nallowed_origins = [\"https://dash.example\"]\n\n[[camera]]\nid = \"demo\"\nsource = \"testsrc://\"\n",
    );
    let listed = Server::start(&["--config", config.to_str().unwrap()]);
    let host = authority(&listed);
    let upgrade = |origin| websocket_upgrade("/api/ws?src=demo", &host, Some(origin));
    assert_eq!(raw(&listed, &upgrade("https://dash.example")).0, 101);
    assert_eq!(raw(&listed, &upgrade("https://dash.example.evil")).0, 403);
}

/// A WHEP offer from an in-process str0m client; its peer never connects.
fn offer() -> String {
    use str0m::media::{Direction, MediaKind};
    str0m::crypto::from_feature_flags().install_process_default();
    let mut rtc = str0m::Rtc::builder()
        .clear_codecs()
        .enable_h264(true)
        .build(Instant::now());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, _pending) = api.apply().unwrap();
    offer.to_sdp_string()
}

#[test]
fn whep_sessions_are_unguessable_and_found_only_under_their_camera() {
    let server = Server::start(&[]);
    server.wait_live("demo", Duration::from_secs(5));
    let r = server.post_json(
        "/api/cameras",
        &json!({"id": "other", "source": "testsrc://"}),
    );
    assert!(r.status().is_success());
    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = server
            .http
            .post(server.url("/api/cameras/demo/whep"))
            .header("content-type", "application/sdp")
            .body(offer())
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let location = r.headers()["location"].to_str().unwrap().to_string();
        let id = location.rsplit('/').next().unwrap().to_string();
        // 128 random bits as hex.
        assert!(
            id.len() >= 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{id}"
        );
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1]);
    let shared: usize = ids[0]
        .bytes()
        .zip(ids[1].bytes())
        .filter(|(a, b)| a == b)
        .count();
    assert!(shared < 16, "ids {ids:?} share {shared} of 32 digits");
    assert_eq!(server.resources()["peer_connections"], 2);
    // Under another camera, the session does not exist.
    let r = server
        .http
        .delete(server.url(&format!("/api/cameras/other/whep/{}", ids[0])))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(server.resources()["peer_connections"], 2);
    for id in &ids {
        let r = server
            .http
            .delete(server.url(&format!("/api/cameras/demo/whep/{id}")))
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    assert_eq!(server.resources()["peer_connections"], 0);
}

#[test]
fn a_flood_of_half_sent_requests_neither_blocks_the_api_nor_stays() {
    const FLOOD: usize = 1500;
    // The test opens 1,500 sockets of its own.
    livelens::api::raise_open_file_limit();
    let config = common::write_config(
        "attacks-flood",
        "[server]\nheader_timeout = \"2s\"\n\n[[camera]]\nid = \"demo\"\nsource = \"testsrc://\"\n",
    );
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let baseline = server.resources();
    let mut flood = Vec::new();
    let started = Instant::now();
    for _ in 0..FLOOD {
        let mut s = TcpStream::connect(authority(&server)).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            .unwrap();
        flood.push(s);
    }
    eprintln!("{FLOOD} connections in {:?}", started.elapsed());
    common::wait_until(Duration::from_secs(5), "the flood to be accepted", || {
        server.resources()["http_connections"].as_i64().unwrap() >= FLOOD as i64
    });
    // The API answers during the flood, at once.
    let started = Instant::now();
    let fresh = reqwest::blocking::Client::new();
    let r = fresh.get(server.url("/healthz")).send().unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "/healthz took {:?} during the flood",
        started.elapsed()
    );
    // Past the header deadline every half-sent request is closed.
    for mut s in flood {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 1024];
        // EOF (0) or a reset: either way the server let go.
        if let Ok(n) = s.read(&mut buf) {
            assert!(
                n == 0 || buf.starts_with(b"HTTP/1.1 408"),
                "{:?}",
                String::from_utf8_lossy(&buf[..n])
            );
        }
    }
    drop(fresh);
    common::wait_until(
        Duration::from_secs(5),
        "the counts back at baseline",
        || {
            let r = server.resources();
            r["http_connections"].as_i64()
                <= Some(baseline["http_connections"].as_i64().unwrap() + 1)
                && r["open_fds"].as_i64() <= Some(baseline["open_fds"].as_i64().unwrap() + 1)
        },
    );
    assert_eq!(server.get("/healthz").status(), StatusCode::OK);
}

#[test]
fn over_the_connection_limits_clients_get_503_and_then_service() {
    let config = common::write_config(
        "attacks-limits",
        "[server]\nmax_connections_per_ip = 20\n\n[[camera]]\nid = \"demo\"\nsource = \"testsrc://\"\n",
    );
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let hold: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(authority(&server)).unwrap())
        .collect();
    common::wait_until(Duration::from_secs(5), "20 connections open", || {
        // This request needs a connection too: it is refused while 20 are held.
        raw_status_or_closed(&server) == Some(503)
    });
    drop(hold);
    common::wait_until(Duration::from_secs(5), "service again", || {
        raw_status_or_closed(&server) == Some(200)
    });
}

/// The status of `GET /healthz` on a fresh connection, `None` if the connection closed first.
fn raw_status_or_closed(server: &Server) -> Option<u16> {
    let mut stream = TcpStream::connect(authority(server)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ =
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    text.get(9..12)?.parse().ok()
}

#[test]
fn the_open_file_limit_is_raised_to_the_hard_limit() {
    let server = Server::start_with(&[], &[], |cmd| {
        use std::os::unix::process::CommandExt;
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let mut l = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
                l.rlim_cur = l.rlim_max.min(256);
                libc::setrlimit(libc::RLIMIT_NOFILE, &l);
                Ok(())
            });
        }
    });
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers[0], numbers[1], "{line}");
}

#[test]
fn sdp_errors_are_words_without_internal_addresses() {
    let server = Server::start(&[]);
    server.wait_live("demo", Duration::from_secs(5));
    // Found by fuzzing: two sessions in one body, the first with a broken m-line. The codec
    // scan sees H.264 in the second, str0m answers with no media: once a 503.
    let two_sessions = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fuzz/regressions/whep_sdp/two-sessions-answer-without-media"
    ))
    .unwrap();
    for body in [
        "v=0\r\nthis is not sdp\r\n",
        "v=0\r\no=- 1 1 IN IP4 0\r\ns=-\r\nm=video x",
        &two_sessions,
    ] {
        let r = server
            .http
            .post(server.url("/api/cameras/demo/whep"))
            .header("content-type", "application/sdp")
            .body(body.to_string())
            .send()
            .unwrap();
        // 422 when what is left of the offer is SDP but offers no H.264 profile that decodes
        // the camera (the WHEP profile rule); 400 when it is not SDP at all.
        let status = r.status();
        assert!(
            [StatusCode::BAD_REQUEST, StatusCode::UNPROCESSABLE_ENTITY].contains(&status),
            "{status}"
        );
        let error = r.json::<serde_json::Value>().unwrap()["error"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(error.contains("SDP") || error.contains("H.264"), "{error}");
        assert!(
            !error.contains("0x") && !error.contains("Pointer"),
            "{error}"
        );
    }
}

/// The UDP ports a process has open, as (address, port), from /proc/net/udp.
fn udp_sockets(pid: u32) -> Vec<(std::net::Ipv4Addr, u16)> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().to_string();
            Some(
                l.strip_prefix("socket:[")?
                    .trim_end_matches(']')
                    .to_string(),
            )
        })
        .collect();
    std::fs::read_to_string(format!("/proc/{pid}/net/udp"))
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if !inodes.iter().any(|i| i == f[9]) {
                return None;
            }
            let (ip, port) = f[1].split_once(':')?;
            let ip = u32::from_str_radix(ip, 16).ok()?;
            Some((
                std::net::Ipv4Addr::from(ip.swap_bytes()),
                u16::from_str_radix(port, 16).ok()?,
            ))
        })
        .collect()
}

#[test]
fn webrtc_udp_stays_on_loopback_when_http_does() {
    let server = Server::start(&[]);
    server.wait_live("demo", Duration::from_secs(5));
    let sockets = udp_sockets(server.pid());
    assert!(!sockets.is_empty(), "WebRTC has a UDP port");
    for (ip, port) in sockets {
        assert!(
            ip.is_loopback(),
            "UDP {ip}:{port} is reachable from the network"
        );
    }
    let r = server
        .http
        .post(server.url("/api/cameras/demo/whep"))
        .header("content-type", "application/sdp")
        .body(offer())
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let answer = r.text().unwrap();
    for candidate in answer.lines().filter(|l| l.starts_with("a=candidate")) {
        assert!(candidate.contains(" 127.0.0.1 "), "{candidate}");
    }
}

#[test]
fn config_write_back_keeps_mode_owner_and_symlink_and_syncs() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = common::temp_dir("attacks-writeback");
    let real_dir = dir.join("real");
    std::fs::create_dir_all(&real_dir).unwrap();
    let real = real_dir.join("livelens.toml");
    std::fs::write(
        &real,
        "# secrets inside\n[server]\ntoken = \"t0ken-for-writeback\"\n\n[[camera]]\nid = \"demo\"\nsource = \"testsrc://\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).unwrap();
    let link = dir.join("livelens.toml");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let owner = std::fs::metadata(&real).unwrap().uid();
    let server = Server::start(&["--config", link.to_str().unwrap()]);
    let r = server
        .http
        .post(server.url("/api/cameras"))
        .bearer_auth("t0ken-for-writeback")
        .json(&json!({"id": "added", "source": "testsrc://?size=320x240"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let link_meta = std::fs::symlink_metadata(&link).unwrap();
    assert!(
        link_meta.file_type().is_symlink(),
        "the symlink was replaced by a file"
    );
    let meta = std::fs::metadata(&real).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600, "mode {:o}", meta.mode() & 0o777);
    assert_eq!(meta.uid(), owner);
    let text = std::fs::read_to_string(&real).unwrap();
    assert!(
        text.contains("id = \"added\"") && text.contains("# secrets inside"),
        "{text}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&real_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn passwords_that_need_encoding_are_refused_and_never_shown() {
    let server = Server::start(&[]);
    for (source, password) in [
        ("rtsp://admin:se/cret@127.0.0.1:9/stream", "se/cret"),
        ("rtsp://admin:se?cret@127.0.0.1:9/stream", "se?cret"),
        ("rtsp://admin:se#cret@127.0.0.1:9/stream", "se#cret"),
        ("rtsp://admin:se cret@127.0.0.1:9/stream", "se cret"),
    ] {
        let r = server.post_json("/api/cameras", &json!({"id": "cam", "source": source}));
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{source}");
        let body = r.text().unwrap();
        assert!(
            body.contains("%2F") && body.contains("percent-encode"),
            "{body}"
        );
        assert!(!body.contains(password), "{body}");
    }
    // Encoded, it is taken, and shown masked.
    let r = server.post_json(
        "/api/cameras",
        &json!({"id": "cam", "source": "rtsp://admin:se%2Fcret@127.0.0.1:9/stream"}),
    );
    assert_eq!(r.status(), StatusCode::CREATED);
    let shown = server.get("/api/cameras/cam").text().unwrap();
    assert!(
        !shown.contains("cret") && shown.contains("***:***@127.0.0.1:9"),
        "{shown}"
    );
}

#[test]
fn secrets_survive_being_sent_back_as_shown() {
    let config = common::write_config(
        "attacks-secrets",
        "[[camera]]\nid = \"cam\"\nsource = \"testsrc://?size=320x240\"\n\
         [camera.analysis.vlm]\nendpoint = \"http://127.0.0.1:9/v1\"\nmodel = \"m\"\napi_key = \"sk-vlm-secret\"\n\
         [camera.analysis.asr]\nendpoint = \"http://127.0.0.1:9/v1\"\nmodel = \"m\"\napi_key = \"sk-asr-secret\"\n",
    );
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let shown = server.get_json("/api/cameras/cam");
    let text = shown.to_string();
    assert!(
        !text.contains("sk-vlm-secret") && !text.contains("sk-asr-secret"),
        "{text}"
    );
    assert_eq!(shown["analysis"]["asr"]["api_key"], "***");
    let r = server.patch_camera("cam", &json!({"analysis": shown["analysis"]}));
    assert!(r.status().is_success(), "{}", r.text().unwrap());
    let file = std::fs::read_to_string(&config).unwrap();
    assert!(file.contains("sk-vlm-secret"), "{file}");
    assert!(file.contains("sk-asr-secret"), "{file}");
    assert!(!file.contains("\"***\""), "{file}");

    // The source's password likewise: shown masked, sent back, kept.
    let r = server.patch_camera(
        "cam",
        &json!({"source": "rtsp://viewer:rtsp-secret@127.0.0.1:9/s"}),
    );
    assert!(r.status().is_success());
    let shown = server.get_json("/api/cameras/cam");
    assert_eq!(shown["source"], "rtsp://***:***@127.0.0.1:9/s");
    let r = server.patch_camera(
        "cam",
        &json!({"source": shown["source"], "on_demand": true}),
    );
    assert!(r.status().is_success());
    let file = std::fs::read_to_string(&config).unwrap();
    assert!(
        file.contains("rtsp://viewer:rtsp-secret@127.0.0.1:9/s"),
        "{file}"
    );
}

/// Issue 28, hole 4: `PATCH` with a masked key and a new `endpoint` sent the saved key to the
/// new endpoint (vlm, summary, asr). A listener stands in for the attacker's endpoint: nothing
/// may reach it, and nothing is saved.
#[test]
fn a_masked_key_is_never_sent_to_a_new_endpoint() {
    let config = common::write_config(
        "attacks-key-endpoint",
        "[[camera]]\nid = \"cam\"\nsource = \"testsrc://?size=320x240\"\n\
         [camera.analysis.vlm]\nendpoint = \"http://127.0.0.1:9/v1\"\nmodel = \"m\"\napi_key = \"sk-vlm-secret\"\n\
         [camera.analysis.summary]\nendpoint = \"http://127.0.0.1:9/v1\"\nmodel = \"m\"\napi_key = \"sk-sum-secret\"\nevery = \"1h\"\n\
         [camera.analysis.asr]\nendpoint = \"http://127.0.0.1:9/v1\"\nmodel = \"m\"\napi_key = \"sk-asr-secret\"\n",
    );
    let attacker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    attacker.set_nonblocking(true).unwrap();
    let elsewhere = format!("http://{}/v1", attacker.local_addr().unwrap());
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let file = std::fs::read_to_string(&config).unwrap();
    for section in ["vlm", "summary", "asr"] {
        let mut analysis = server.get_json("/api/cameras/cam")["analysis"].clone();
        assert_eq!(analysis[section]["api_key"], "***");
        analysis[section]["endpoint"] = json!(elsewhere);
        let r = server.patch_camera("cam", &json!({ "analysis": analysis }));
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{section}");
        let body: serde_json::Value = r.json().unwrap();
        assert_eq!(
            body["problems"][0]["field"],
            format!("analysis.{section}.api_key"),
            "{body}"
        );
        // The model test route follows the same rule.
        if section == "vlm" {
            let r = server.post_json(
                "/api/cameras/cam/analysis/test",
                &json!({ "vlm": analysis["vlm"] }),
            );
            assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        }
    }
    assert_eq!(std::fs::read_to_string(&config).unwrap(), file);
    assert_eq!(
        server.get_json("/api/cameras/cam")["analysis"]["vlm"]["endpoint"],
        "http://127.0.0.1:9/v1"
    );
    assert!(
        attacker.accept().is_err(),
        "livelens connected to the new endpoint"
    );
    // With the key typed again, the new endpoint is taken.
    let mut analysis = server.get_json("/api/cameras/cam")["analysis"].clone();
    analysis["vlm"]["endpoint"] = json!(elsewhere);
    analysis["vlm"]["api_key"] = json!("sk-typed-again");
    let r = server.patch_camera("cam", &json!({ "analysis": analysis }));
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().unwrap());
    let file = std::fs::read_to_string(&config).unwrap();
    assert!(
        file.contains("sk-typed-again") && file.contains("sk-sum-secret"),
        "{file}"
    );
}

#[test]
fn a_user_agent_with_a_line_break_is_refused_up_front() {
    let camera = common::RtspCamera::start(&["--size", "320x240"]);
    let server = Server::start(&[]);
    let r = server.post_json(
        "/api/cameras",
        &json!({"id": "ua", "source": camera.url(), "user_agent": "x\r\nInjected: 1"}),
    );
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().unwrap().contains("user_agent"));
    let r = server.post_json(
        "/api/cameras",
        &json!({"id": "ua", "source": camera.url(), "user_agent": "livelens-test/1"}),
    );
    assert_eq!(r.status(), StatusCode::CREATED);
    server.wait_live("ua", Duration::from_secs(10));
    let r = server.patch_camera("ua", &json!({"user_agent": "a\nb"}));
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(server.camera_state("ua"), "live");
}

#[test]
fn concurrent_changes_to_one_camera_end_in_agreement() {
    let config = common::write_config(
        "attacks-concurrent",
        "[[camera]]\nid = \"cam\"\nsource = \"testsrc://?size=320x240\"\n",
    );
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    server.wait_live("cam", Duration::from_secs(5));
    let sizes: Vec<(u32, u32)> = (0..12).map(|i| (160 + 16 * i, 120 + 8 * i)).collect();
    std::thread::scope(|s| {
        for (w, h) in &sizes {
            let server = &server;
            s.spawn(move || {
                let source = format!("testsrc://?size={w}x{h}");
                let r = server.patch_camera("cam", &json!({"source": source}));
                assert!(r.status().is_success(), "{}", r.status());
            });
        }
    });
    let shown = server.get_json("/api/cameras/cam");
    let source = shown["source"].as_str().unwrap().to_string();
    let file = std::fs::read_to_string(&config).unwrap();
    assert!(
        file.contains(&format!("source = \"{source}\"")),
        "API {source}, file {file}"
    );
    // The running source is the one the API shows.
    let size = source.rsplit('=').next().unwrap().to_string();
    common::wait_until(Duration::from_secs(10), "the shown source to run", || {
        let c = server.get_json("/api/cameras/cam");
        let v = &c["video"];
        c["state"] == "live" && format!("{}x{}", v["width"], v["height"]) == size
    });
}

#[test]
fn no_descendant_of_a_child_survives_sigkill_of_livelens() {
    common::require("ffmpeg", "ffmpeg");
    // A shell that leaves a background job behind, then becomes ffmpeg.
    let source = "exec:sh -c 'sleep 300 & exec ffmpeg -hide_banner -loglevel error -re -f lavfi \
                  -i testsrc2=size=160x120:rate=10 -c:v libx264 -preset ultrafast -g 10 -f mpegts -'";
    let config = common::write_config(
        "attacks-grandchild",
        &format!(
            "[sources]\nallow_exec = true\n\n[[camera]]\nid = \"shell\"\nsource = \"{}\"\n",
            source.replace('"', "\\\"")
        ),
    );
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    server.wait_live("shell", Duration::from_secs(10));
    // Every process descended from livelens.
    let descendants = |root: u32| {
        let all = common::processes();
        let mut found = vec![root];
        let mut i = 0;
        while i < found.len() {
            let parent = found[i];
            found.extend(all.iter().filter(|p| p.ppid == parent).map(|p| p.pid));
            i += 1;
        }
        found.remove(0);
        found
    };
    let family = descendants(server.pid());
    assert!(family.len() >= 3, "reaper, sleep and ffmpeg: {family:?}");
    server.kill_hard();
    common::wait_until(Duration::from_secs(2), "every descendant gone", || {
        family.iter().all(|p| !common::is_running(*p))
    });
}

#[test]
fn memory_returns_near_baseline_after_a_websocket_flood() {
    use futures_util::StreamExt;
    const SOCKETS: usize = 2000;
    livelens::api::raise_open_file_limit();
    // The flood comes from one address: let all of it in.
    let config = common::write_config(
        "attacks-memory",
        "[server]\nmax_connections_per_ip = 4000\n\n[[camera]]\nid = \"demo\"\nsource = \"testsrc://\"\n",
    );
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    server.wait_live("demo", Duration::from_secs(5));
    let rss = || server.resources()["rss_bytes"].as_i64().unwrap() >> 20;
    let baseline = rss();
    let url = server
        .url("/api/cameras/demo/mse")
        .replace("http://", "ws://");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let peak = runtime.block_on(async {
        let mut sockets = Vec::new();
        for chunk in 0..SOCKETS / 100 {
            let connects = (0..100).map(|_| tokio_tungstenite::connect_async(url.clone()));
            for connected in futures_util::future::join_all(connects).await {
                let (ws, _) = connected.unwrap_or_else(|e| panic!("batch {chunk}: {e}"));
                sockets.push(ws);
            }
        }
        // Every viewer gets its init segment and the first fragment.
        for ws in &mut sockets {
            for _ in 0..2 {
                tokio::time::timeout(Duration::from_secs(20), ws.next())
                    .await
                    .expect("a message within 20 s")
                    .expect("open")
                    .expect("a message");
            }
        }
        let peak = server.resources_async().await["rss_bytes"]
            .as_i64()
            .unwrap()
            >> 20;
        drop(sockets);
        peak
    });
    eprintln!("RSS {baseline} MiB → {peak} MiB with {SOCKETS} WebSockets");
    let mut last = peak;
    common::wait_until(
        Duration::from_secs(40),
        "RSS back near its baseline",
        || {
            last = rss();
            last < baseline + 40
        },
    );
    eprintln!("RSS {last} MiB after they closed");
    assert_eq!(server.resources()["websockets"], 0);
}

#[test]
fn sigterm_during_a_webrtc_load_exits_within_two_seconds() {
    const VIEWERS: usize = 150;
    let server = Server::start(&[]);
    server.wait_live("demo", Duration::from_secs(5));
    let url = server.url("/api/cameras/demo/whep");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let viewers = common::whep::live_viewers(&url, VIEWERS, 5, Duration::from_secs(30)).await;
        // Every peer is receiving when the signal comes.
        let (status, took) = tokio::task::spawn_blocking(move || server.terminate())
            .await
            .unwrap();
        eprintln!("SIGTERM with {VIEWERS} WebRTC viewers → exit in {took:?}");
        assert!(status.success(), "{status:?}");
        assert!(took < Duration::from_secs(2), "exit took {took:?}");
        for v in viewers {
            v.vanish().await;
        }
    });
}

/// Every secret livelens is given — the API token, an RTSP password (right and wrong), the MQTT
/// broker's password, model-server keys — is looked for in its whole debug log and in every GET
/// it answers, the live SSE stream included. None may appear.
#[test]
fn secrets_never_reach_logs_errors_or_api_output() {
    use std::io::BufRead;
    let broker = common::Mosquitto::start();
    let camera = common::RtspCamera::start(&[
        "--size",
        "320x240",
        "--user",
        "viewer",
        "--password",
        "rtsp-pass-4411",
    ]);
    let secrets = [
        "api-token-7781",
        "rtsp-pass-4411",
        "rtsp-wrong-9902",
        "mqtt-pass-5523",
        "sk-vlm-6634",
        "sk-asr-7745",
    ];
    let mqtt = broker
        .url()
        .replace("mqtt://", "mqtt://bus:mqtt-pass-5523@");
    let config = common::write_config(
        "attacks-secrets-everywhere",
        &format!(
            "[server]\ntoken = \"api-token-7781\"\n\n[mqtt]\nurl = \"{mqtt}\"\n\n\
             [[camera]]\nid = \"good\"\nsource = \"{}\"\n\
             [camera.analysis.vlm]\nendpoint = \"http://127.0.0.1:9/v1\"\nmodel = \"m\"\napi_key = \"sk-vlm-6634\"\ninterval = \"1s\"\n\
             [camera.analysis.asr]\nendpoint = \"http://127.0.0.1:9/v1\"\nmodel = \"m\"\napi_key = \"sk-asr-7745\"\n\n\
             [[camera]]\nid = \"wrong\"\nsource = \"{}\"\n",
            camera.url_with("viewer", "rtsp-pass-4411"),
            camera.url_with("viewer", "rtsp-wrong-9902"),
        ),
    );
    let log = common::temp_dir("attacks-secrets-log").join("stderr.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let server = Server::start_with(
        &["--config", config.to_str().unwrap()],
        &[("LIVELENS_LOG", "debug")],
        |cmd| {
            cmd.stderr(log_file);
        },
    );
    server.wait_live("good", Duration::from_secs(10));
    common::wait_until(
        Duration::from_secs(10),
        "the wrong password's reason",
        || server.get_json("/api/cameras/wrong")["reason"].is_string(),
    );
    // Let the VLM fail at least once (its endpoint refuses), so its reason exists.
    common::wait_until(Duration::from_secs(10), "the VLM's reason", || {
        server.get_json("/api/cameras/good")["analysis_status"]["vlm"]["reason"].is_string()
    });
    let mut seen = String::new();
    for path in [
        "/api/cameras",
        "/api/cameras/good",
        "/api/cameras/wrong",
        "/api/resources",
        "/api/workers",
        "/api/events",
        "/api/openapi.json",
        "/metrics",
        "/healthz",
        "/",
    ] {
        seen.push_str(&server.get(path).text().unwrap());
    }
    // The first events of the live camera stream.
    let response = reqwest::blocking::Client::new()
        .get(server.url("/api/cameras/stream"))
        .send()
        .unwrap();
    for line in std::io::BufReader::new(response).lines().take(20) {
        seen.push_str(&line.unwrap());
    }
    // Errors: a refused change and a bad token.
    let r = server
        .http
        .patch(server.url("/api/cameras/good"))
        .bearer_auth("api-token-778")
        .json(&json!({"source": "rtsp://a:b@"}))
        .send()
        .unwrap();
    seen.push_str(&r.text().unwrap());
    drop(server);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("MQTT connected"),
        "the log is the debug log"
    );
    for secret in secrets {
        assert!(!seen.contains(secret), "{secret} in the API output");
        let line = logged.lines().find(|l| l.contains(secret));
        assert!(line.is_none(), "{secret} in the log: {}", line.unwrap());
    }
}
