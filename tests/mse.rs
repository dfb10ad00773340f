//! MSE output: fMP4 bytes checked by ffprobe (Debian's ffmpeg), the WebSocket protocol spoken
//! exactly as go2rtc's players speak it, and the project's own player in headless Chromium
//! keeping to the live edge.

use crate::common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{temp_dir, wait_until, RtspCamera, Server};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use livelens::output::mse::{ClientCodecs, MseSession, Outgoing};
use livelens::resources::ViewerKind;

fn ffprobe(args: &[&str]) -> String {
    let out = Command::new("ffprobe")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ffprobe ({e}); install the Debian package ffmpeg"));
    assert!(
        out.status.success(),
        "ffprobe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Reads `frames` video frames (and the audio between them) of camera `source` through the hub
/// and muxes them into an fMP4 file. Returns the file's path.
fn record(name: &str, source: &str, frames: usize) -> std::path::PathBuf {
    let path = temp_dir(name).join("out.mp4");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let bytes = runtime.block_on(async {
        let camera = common::hub_with_camera(&format!("source = \"{source}\"")).await;
        let mut viewer = camera.subscribe(ViewerKind::Mse).unwrap();
        let mut out = Vec::new();
        // The same session code the WebSocket endpoint runs: init segment, then the camera's
        // shared fragments.
        let mut session = MseSession::new(ClientCodecs::all());
        let mut video = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while video < frames {
            let frame = tokio::time::timeout_at(deadline, viewer.next())
                .await
                .unwrap()
                .unwrap();
            let audio = camera.audio();
            for message in session.on_frame(&frame, audio.as_ref()).unwrap() {
                if let Outgoing::Binary(b) = message {
                    out.extend_from_slice(&b);
                }
            }
            if frame.is_video() {
                video += 1;
            }
        }
        camera.stop().await;
        out
    });
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn testsrc_fmp4_decodes_frame_for_frame_with_ffprobe() {
    let path = record("fmp4-testsrc", "testsrc://?size=320x240&fps=25&gop=25", 60);
    let csv = ffprobe(&[
        "-v",
        "error",
        "-select_streams",
        "v",
        "-show_entries",
        "frame=pts_time,key_frame,width,height",
        "-of",
        "csv=p=0",
        path.to_str().unwrap(),
    ]);
    // ffprobe prints the fields in its own order: key_frame, pts_time, width, height.
    let frames: Vec<Vec<&str>> = csv
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(frames.len(), 60, "{csv}");
    // Fragments carry the camera's timeline: the viewer's first frame is wherever the camera was.
    let first: f64 = frames[0][1].parse().unwrap();
    for (i, f) in frames.iter().enumerate() {
        let (key, pts, w, h): (&str, f64, &str, &str) = (f[0], f[1].parse().unwrap(), f[2], f[3]);
        assert_eq!((w, h), ("320", "240"));
        let pts = pts - first;
        assert!((pts - i as f64 * 0.04).abs() < 0.002, "frame {i} at {pts}");
        // The first frame is a keyframe; testsrc's GOP is 25.
        assert_eq!(key == "1", i % 25 == 0, "frame {i} key_frame={key}");
    }
}

#[test]
fn rtsp_h264_aac_and_h265_fmp4_decode_with_ffprobe() {
    let cam = RtspCamera::start(&["--size", "320x240", "--audio", "aac"]);
    let path = record("fmp4-aac", &cam.url(), 50);
    let streams = ffprobe(&[
        "-v",
        "error",
        "-show_entries",
        "stream=codec_name,width,height,sample_rate",
        "-of",
        "csv=p=0",
        path.to_str().unwrap(),
    ]);
    assert!(streams.contains("h264,320,240"), "{streams}");
    assert!(streams.contains("aac,48000"), "{streams}");
    let audio = ffprobe(&[
        "-v",
        "error",
        "-select_streams",
        "a",
        "-count_frames",
        "-show_entries",
        "stream=nb_read_frames",
        "-of",
        "csv=p=0",
        path.to_str().unwrap(),
    ]);
    // 50 frames at 25 fps ≈ 2 s of audio ≈ 90 AAC frames of 1024 samples at 48 kHz.
    let n: u32 = audio.trim().parse().unwrap();
    assert!((60..=110).contains(&n), "{n} AAC frames");

    let hevc = RtspCamera::start(&["--codec", "h265", "--size", "320x240"]);
    let path = record("fmp4-hevc", &hevc.url(), 30);
    let csv = ffprobe(&[
        "-v",
        "error",
        "-select_streams",
        "v",
        "-show_entries",
        "stream=codec_name,codec_tag_string,width,height",
        "-count_frames",
        "-show_entries",
        "stream=nb_read_frames",
        "-of",
        "csv=p=0",
        path.to_str().unwrap(),
    ]);
    assert!(csv.starts_with("hevc,hvc1,320,240,30"), "{csv}");
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(server: &Server, path: &str) -> Ws {
    let url = format!("{}{path}", server.base.replace("http://", "ws://"));
    tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket")
        .0
}

async fn next<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> Message
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("a message within 10 s")
        .expect("open")
        .expect("ok")
}

fn box_type(b: &[u8]) -> &str {
    std::str::from_utf8(&b[4..8]).unwrap()
}

#[test]
fn go2rtc_websocket_protocol_and_instant_start() {
    let server = Server::start(&[]);
    server.wait_live("demo", Duration::from_secs(5));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let started = Instant::now();
        let mut ws = connect(&server, "/api/ws?src=demo").await;
        // What go2rtc's video-rtc.js sends on sourceopen.
        ws.send(Message::text(
            json!({"type": "mse", "value": "avc1.640029,avc1.64002A,hvc1.1.6.L153.B0,mp4a.40.2,mp4a.40.5,flac,opus"}).to_string(),
        ))
        .await
        .unwrap();
        let Message::Text(t) = next(&mut ws).await else { panic!("mse message first") };
        let v: Value = serde_json::from_str(&t).unwrap();
        assert_eq!(v["type"], "mse");
        assert!(v["value"].as_str().unwrap().starts_with("video/mp4; codecs=\"avc1."), "{v}");
        let Message::Binary(init) = next(&mut ws).await else { panic!("init segment") };
        assert_eq!(box_type(&init), "ftyp");
        // Instant start: the cached GOP arrives at once, not a GOP later. Each fragment is a
        // moof (the viewer's own time, starting at 0) followed by the camera's shared mdat.
        let mut fragments = 0;
        while fragments < 10 {
            let Message::Binary(moof) = next(&mut ws).await else { panic!("fragment") };
            assert_eq!(box_type(&moof), "moof");
            // The moof message ends with the mdat's header; the payload is the next message.
            assert_eq!(&moof[moof.len() - 4..], b"mdat");
            let mdat_size = u32::from_be_bytes(moof[moof.len() - 8..moof.len() - 4].try_into().unwrap());
            let Message::Binary(payload) = next(&mut ws).await else { panic!("fragment") };
            assert_eq!(payload.len() + 8, mdat_size as usize);
            if fragments == 0 {
                let tfdt = moof.windows(4).position(|w| w == b"tfdt").unwrap();
                let time = &moof[tfdt + 8..tfdt + 12];
                assert!(time.iter().all(|b| *b == 0), "the first fragment is at 0: {time:?}");
            }
            fragments += 1;
        }
        let took = started.elapsed();
        eprintln!("10 fragments after {took:?}");
        assert!(took < Duration::from_millis(1000), "took {took:?}");
        assert_eq!(server.resources()["viewers"]["mse"], 1);
        assert_eq!(server.resources()["websockets"], 1);
        ws.close(None).await.unwrap();
    });
    wait_until(Duration::from_secs(5), "viewer counts back to 0", || {
        let r = server.resources();
        r["viewers"]["mse"] == 0 && r["websockets"] == 0
    });
}

#[test]
fn livelens_endpoint_errors_and_stop() {
    let hevc = RtspCamera::start(&["--codec", "h265", "--size", "320x240"]);
    let server = Server::start(&[]);
    server.wait_live("demo", Duration::from_secs(5));
    let r = server.post_json("/api/cameras", &json!({"id": "hevc", "source": hevc.url()}));
    assert!(r.status().is_success());
    server.wait_live("hevc", Duration::from_secs(10));
    assert_eq!(server.get("/api/cameras/nope/mse").status(), 404);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // A browser without H.265 is told so.
        let mut ws = connect(
            &server,
            "/api/cameras/hevc/mse?codecs=avc1.640029,mp4a.40.2",
        )
        .await;
        let Message::Text(t) = next(&mut ws).await else {
            panic!("error message")
        };
        let v: Value = serde_json::from_str(&t).unwrap();
        assert_eq!(v["type"], "error");
        assert!(
            v["value"]
                .as_str()
                .unwrap()
                .starts_with("mse: the browser cannot play h265"),
            "{v}"
        );

        // Stopping the camera ends the viewer with the reason.
        let mut ws = connect(&server, "/api/cameras/demo/mse").await;
        let Message::Text(_) = next(&mut ws).await else {
            panic!("mse message")
        };
        let http = reqwest::Client::new();
        http.post(server.url("/api/cameras/demo/stop"))
            .send()
            .await
            .unwrap();
        let close = loop {
            match next(&mut ws).await {
                Message::Close(c) => break c,
                _ => continue,
            }
        };
        assert!(close.unwrap().reason.contains("stopped"));
    });
    wait_until(Duration::from_secs(5), "no viewer left", || {
        let r = server.resources();
        r["viewers"]["mse"] == 0 && r["websockets"] == 0
    });
}

#[test]
fn many_viewers_share_frames_and_leave_nothing_behind() {
    let server = Arc::new(Server::start(&[]));
    server.wait_live("demo", Duration::from_secs(5));
    let baseline = server.resources();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        for _round in 0..5 {
            let mut sockets = Vec::new();
            for _ in 0..20 {
                let mut ws = connect(&server, "/api/cameras/demo/mse").await;
                let Message::Text(_) = next(&mut ws).await else {
                    panic!("mse")
                };
                sockets.push(ws);
            }
            assert_eq!(server.resources()["viewers"]["mse"], 20);
            for mut ws in sockets {
                ws.close(None).await.unwrap();
            }
        }
    });
    wait_until(Duration::from_secs(5), "counts at baseline", || {
        let r = server.resources();
        r["viewers"] == baseline["viewers"]
            && r["websockets"] == baseline["websockets"]
            && r["tasks"] == baseline["tasks"]
            && r["open_fds"] == baseline["open_fds"]
    });
}

/// A viewer that stops reading falls behind; when it reads again it is told how many frames it
/// lost and resumes at a keyframe, and the server's memory stays bounded meanwhile.
#[test]
fn a_stalled_viewer_resyncs_on_a_keyframe_with_bounded_memory() {
    use livelens::media::h264;
    // Noise at 20 Mb/s fills socket buffers quickly.
    let cam = RtspCamera::start(&[
        "--size",
        "640x360",
        "--pattern",
        "snow",
        "--bitrate",
        "20000",
        "--gop",
        "25",
    ]);
    let server = Server::start(&[]);
    let r = server.post_json("/api/cameras", &json!({"id": "noisy", "source": cam.url()}));
    assert!(r.status().is_success());
    server.wait_live("noisy", Duration::from_secs(10));
    let rss = || server.resources()["rss_bytes"].as_i64().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // A small receive buffer, so the stall backs up into the server quickly.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let addr: std::net::SocketAddr = server.base.trim_start_matches("http://").parse().unwrap();
        let stream = socket.connect(addr).await.unwrap();
        let url = format!("ws://{addr}/api/cameras/noisy/mse");
        let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
        let Message::Text(_) = next(&mut ws).await else {
            panic!("mse")
        };
        let rss_before = rss();
        // Stall: read nothing while the server produces far more than the backlog.
        let frames_at = |s: &Server| s.camera_frames("noisy");
        let start_frames = frames_at(&server);
        while frames_at(&server) < start_frames + 200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let rss_stalled = rss();
        // Read again: a drop report, then the next fragment is a keyframe.
        let mut dropped = None;
        let mut after_moof = false;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "no drop report");
            match next(&mut ws).await {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if v["type"] == "drop" {
                        dropped = v["frames"].as_u64();
                    }
                }
                Message::Binary(b) => {
                    // The message after a moof (which ends with the mdat's header) is the
                    // frame's payload.
                    let payload = after_moof;
                    after_moof = b.get(4..8) == Some(b"moof");
                    if payload && dropped.is_some() {
                        let idr = h264::length_prefixed_nals(&b).any(|n| h264::nal_type(n) == 5);
                        assert!(idr, "first fragment after the drop is not a keyframe");
                        break;
                    }
                }
                _ => {}
            }
        }
        assert!(dropped.unwrap() > 0);
        let growth = (rss_stalled - rss_before) / 1048576;
        eprintln!("dropped {dropped:?} frames; RSS grew {growth} MiB during the stall");
        assert!(
            growth < 48,
            "RSS grew by {growth} MiB while one viewer stalled"
        );
    });
}

/// The server's frames read off a raw socket: (opcode, payload) until a close frame.
async fn read_until_close(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    // Skip the HTTP answer.
    loop {
        let mut chunk = [0u8; 65536];
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .expect("a close frame within 10 s")
            .unwrap();
        assert!(n > 0, "closed without a close frame");
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let mut at = end + 4;
        loop {
            let b = &buf[at..];
            if b.len() < 2 {
                break;
            }
            assert_eq!(b[1] & 0x80, 0, "server frames are not masked");
            let (len, head) = match b[1] & 0x7f {
                126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
                127 if b.len() >= 10 => (
                    u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                126 | 127 => break,
                n => (n as usize, 2),
            };
            if b.len() < head + len {
                break;
            }
            if b[0] & 0x0f == 0x8 {
                return b[head..head + len].to_vec();
            }
            at += head + len;
        }
    }
}

/// Clients that ping get pongs while video flows; clients that break the protocol (an unmasked
/// frame, a message over the limit, text that is not UTF-8) get a close frame with the code
/// that says why, and nothing stays behind.
#[test]
fn hostile_websocket_clients_get_close_codes_and_pings_get_pongs() {
    use tokio::io::AsyncWriteExt;
    let server = Server::start(&[]);
    server.wait_live("demo", Duration::from_secs(5));
    let baseline = server.resources();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // A ping between fragments is answered with the same payload.
        let mut ws = connect(&server, "/api/cameras/demo/mse").await;
        ws.send(Message::Ping(b"are you there".to_vec().into()))
            .await
            .unwrap();
        loop {
            match next(&mut ws).await {
                Message::Pong(p) => {
                    assert_eq!(&p[..], b"are you there");
                    break;
                }
                Message::Close(c) => panic!("closed: {c:?}"),
                _ => {}
            }
        }
        // 100 KiB of text: over the 64 KiB limit → 1009.
        ws.send(Message::Text("x".repeat(100 << 10).into()))
            .await
            .unwrap();
        let close = loop {
            match next(&mut ws).await {
                Message::Close(c) => break c.expect("a close code"),
                _ => continue,
            }
        };
        assert_eq!(u16::from(close.code), 1009, "{close:?}");

        // Raw frames a browser never sends.
        let addr = server.base.trim_start_matches("http://").to_string();
        let handshake = format!(
            "GET /api/cameras/demo/mse HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        let unmasked = vec![0x81, 0x02, b'h', b'i'];
        let bad_utf8 = vec![0x81, 0x82, 0, 0, 0, 0, 0xff, 0xfe];
        for (frame, code) in [(unmasked, 1002u16), (bad_utf8, 1007)] {
            let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
            stream.write_all(handshake.as_bytes()).await.unwrap();
            stream.write_all(&frame).await.unwrap();
            let payload = read_until_close(&mut stream).await;
            assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), code);
        }

        // Not a complete handshake: a 400 that says what is missing.
        let r = reqwest::Client::new()
            .get(server.url("/api/cameras/demo/mse"))
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        assert!(r.text().await.unwrap().contains("Sec-WebSocket-Version"));
    });
    wait_until(Duration::from_secs(5), "counts back to baseline", || {
        let r = server.resources();
        r["viewers"]["mse"] == 0
            && r["websockets"] == 0
            && r["http_connections"] == baseline["http_connections"]
    });
    // And a new viewer is served.
    runtime.block_on(async {
        let mut ws = connect(&server, "/api/cameras/demo/mse").await;
        let Message::Text(t) = next(&mut ws).await else {
            panic!("mse message")
        };
        assert!(t.contains("\"mse\""), "{t}");
    });
}

/// Changing a camera's source restarts the source, not its viewers: an MSE viewer gets the new
/// codec description and init segment on the same WebSocket, and a WebRTC viewer keeps
/// receiving frames on the same peer connection.
#[test]
fn a_changed_source_keeps_its_viewers_attached() {
    use common::whep::LiveViewer;
    let server = Server::start(&[]);
    let r = server.post_json(
        "/api/cameras",
        &json!({"id": "switch", "source": "testsrc://?size=320x240&fps=25&gop=25"}),
    );
    assert!(r.status().is_success());
    server.wait_live("switch", Duration::from_secs(10));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let frames_at_least = |viewer: &LiveViewer, n: usize, what: &'static str| {
            let deadline = Instant::now() + Duration::from_secs(10);
            let frames = viewer.frames.clone();
            async move {
                while frames.load(std::sync::atomic::Ordering::Relaxed) < n {
                    assert!(Instant::now() < deadline, "{what}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let mut ws = connect(&server, "/api/cameras/switch/mse").await;
        let Message::Text(t) = next(&mut ws).await else {
            panic!("mse message first")
        };
        assert!(t.contains("\"mse\""), "{t}");
        let viewer = LiveViewer::start(&server.url("/api/cameras/switch/whep"))
            .await
            .expect("WHEP offer answered");
        frames_at_least(&viewer, 10, "no WebRTC frames before the change").await;
        let before = server.resources_async().await;
        assert_eq!(before["websockets"], 1);
        assert_eq!(before["peer_connections"], 1);

        let r = reqwest::Client::new()
            .patch(server.url("/api/cameras/switch"))
            .json(&json!({"source": "testsrc://?size=640x360&fps=25&gop=25"}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{:?}", r.text().await);
        let after = viewer.frames();

        // MSE: a new description and init segment arrive on the same socket, then fragments.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(
                Instant::now() < deadline,
                "no new mse message after the change"
            );
            match next(&mut ws).await {
                Message::Text(t) if t.contains("\"mse\"") => break,
                Message::Close(c) => panic!("the viewer was closed: {c:?}"),
                _ => {}
            }
        }
        let Message::Binary(init) = next(&mut ws).await else {
            panic!("init segment")
        };
        assert_eq!(box_type(&init), "ftyp");
        let Message::Binary(moof) = next(&mut ws).await else {
            panic!("fragment")
        };
        assert_eq!(box_type(&moof), "moof");
        // WebRTC: the same peer keeps receiving, pictures of the new source.
        frames_at_least(
            &viewer,
            after + 25,
            "WebRTC frames stopped after the change",
        )
        .await;

        let r = server.resources_async().await;
        assert_eq!(r["websockets"], 1, "same WebSocket");
        assert_eq!(r["peer_connections"], 1, "same peer connection");
        viewer.vanish().await;
        let _ = ws.close(None).await;
    });
    assert_eq!(server.get_json("/api/cameras/switch")["state"], "live");
}

/// `[mse] batch`: a viewer's pictures go out a few at a time (one write, several messages), with
/// the sound between them, and what arrives is still one playable stream (ffprobe decodes it).
#[test]
fn batched_writes_carry_several_frames_and_the_stream_still_decodes() {
    let cam = RtspCamera::start(&["--size", "320x240", "--fps", "25", "--audio", "aac"]);
    let config = format!(
        "[mse]\nbatch = \"200ms\"\n\n[[camera]]\nid = \"cam\"\nsource = \"{}\"\n",
        cam.url()
    );
    let path = common::write_config("mse-batch", &config);
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    server.wait_live("cam", Duration::from_secs(10));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (bytes, arrivals, videos) = runtime.block_on(async {
        let mut ws = connect(&server, "/api/cameras/cam/mse").await;
        let Message::Text(_) = next(&mut ws).await else {
            panic!("mse message first")
        };
        let mut bytes = Vec::new();
        // When each fragment arrived, and whether it was video.
        let mut arrivals: Vec<Instant> = Vec::new();
        let mut videos = 0;
        // Past the cached GOP (sent at once): the live frames that follow.
        while videos < 100 {
            let Message::Binary(b) = next(&mut ws).await else {
                panic!("binary")
            };
            // (Payloads follow their moof as messages of their own; only moofs are looked at.)
            if b.len() > 16 && &b[4..8] == b"moof" {
                // trak 1 is the video.
                let tfhd = b.windows(4).position(|w| w == b"tfhd").unwrap();
                if b[tfhd + 8..tfhd + 12] == [0, 0, 0, 1] {
                    videos += 1;
                    arrivals.push(Instant::now());
                }
            }
            bytes.extend_from_slice(&b);
        }
        // The last picture's payload.
        let Message::Binary(b) = next(&mut ws).await else {
            panic!("binary")
        };
        bytes.extend_from_slice(&b);
        ws.close(None).await.unwrap();
        (bytes, arrivals, videos)
    });
    // Writes, seen from the reader: pictures that arrived within 20 ms of the one before are
    // taken as one write. Batched, the 50 live pictures come in about a fifth as many writes
    // (a slow machine only merges more); written one by one they would be ~50.
    let live = &arrivals[arrivals.len() - 50..];
    let writes = 1 + live
        .windows(2)
        .filter(|w| w[1] - w[0] > Duration::from_millis(20))
        .count();
    assert!(writes <= 25, "50 pictures came in {writes} writes");
    let file = temp_dir("mse-batch").join("out.mp4");
    std::fs::write(&file, bytes).unwrap();
    let counts = ffprobe(&[
        "-v",
        "error",
        "-count_frames",
        "-show_entries",
        "stream=codec_name,nb_read_frames",
        "-of",
        "csv=p=0",
        file.to_str().unwrap(),
    ]);
    let frames = |codec: &str| -> u64 {
        counts
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{codec},")))
            .unwrap_or_else(|| panic!("no {codec} stream: {counts}"))
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(frames("h264"), videos);
    // The 2 s of live pictures alone span ~94 frames of 48 kHz AAC: the sound came along.
    assert!(frames("aac") > 75, "{counts}");
    wait_until(Duration::from_secs(5), "viewer counts back to 0", || {
        server.resources()["viewers"]["mse"] == 0
    });
}

/// The project's player (`<livelens-player mode="mse">`) in Chromium holds a short buffer, and
/// after a stall (the page's main thread blocked for 1.5 s while frames keep coming) it is back
/// at the live edge within a few seconds instead of staying behind.
#[test]
fn the_player_catches_up_with_the_live_edge_after_a_stall() {
    let _serial = common::browser::serial();
    let config = common::write_config(
        "mse-catch-up",
        "[[camera]]\nid = \"cam\"\nsource = \"testsrc://?size=640x360&fps=25\"\n",
    );
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    server.wait_live("cam", Duration::from_secs(10));
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let browser = common::browser::Browser::start().await;
        browser.blank_page(&server.base).await;
        browser
            .run(
                "await import('/player.js');
                 const p = document.createElement('livelens-player');
                 p.setAttribute('mode', 'mse'); p.setAttribute('src', 'cam');
                 p.style.width = '640px'; document.body.append(p);
                 window.p = p;",
            )
            .await;
        // The start (the camera's cached GOP, up to a second old) is played off or skipped.
        let settled = "const s = window.p.stats; \
                       return s.frames >= 25 && s.buffered <= 0.25 && s.latency !== null && s.latency <= 0.5;";
        browser
            .until(Duration::from_secs(10), "the player at the live edge", settled)
            .await;
        let before = browser.run("return window.p.stats;").await;
        eprintln!("before the stall: {before}");
        // A stall: nothing runs in the page for 1.5 s; the socket's frames pile up. A sampler
        // notes how far behind the live edge the player found itself.
        browser
            .run(
                "window.maxAhead = 0;
                 window.sampler = setInterval(() => {
                   const v = window.p.video, b = v.buffered;
                   if (b.length) window.maxAhead = Math.max(window.maxAhead, b.end(b.length - 1) - v.currentTime);
                 }, 10);
                 const t = performance.now(); while (performance.now() - t < 1500) {}
                 return true;",
            )
            .await;
        browser
            .until(
                Duration::from_secs(2),
                "the backlog to reach the buffer",
                "return window.maxAhead >= 0.5;",
            )
            .await;
        let caught = std::time::Instant::now();
        browser
            .until(Duration::from_secs(4), "the player back at the live edge", settled)
            .await;
        let after = browser.run("return window.p.stats;").await;
        let behind = browser
            .run("clearInterval(window.sampler); return window.maxAhead;")
            .await
            .as_f64()
            .unwrap_or(0.0);
        eprintln!(
            "{behind:.2} s behind after the stall; back at the live edge {:.2} s later: {after}",
            caught.elapsed().as_secs_f64()
        );
        assert_eq!(after["state"], "playing", "{after}");
        browser.run("window.p.remove(); return true;").await;
        browser.close().await;
    });
}
