//! Sound and picture together, and decode times that only go forward, on the paths where RTP
//! carries the media: an RTSP camera (gst-rtsp-server serving the sync clip), FFmpeg publishing
//! over RTSP (TCP and UDP) and RTMP. Each is read back over livelens's RTSP re-stream by FFmpeg
//! from its first second; the RTSP camera and an RTSP publisher also over MSE and LL-HLS (fMP4
//! bytes, as a browser gets them) and as recordings played back.
//!
//! One server with every camera, the publishers and readers at once: the file stays fast.

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{sync, RtspCamera, Server};

/// Seconds of each path FFmpeg reads back: three flash/beep pairs at least.
const READ_SECONDS: f64 = 7.0;

/// FFmpeg sending the sync clip as it is (`-c copy`: B-frames and all), in real time.
fn publish(url: &str, format: &[&str]) -> Child {
    common::require("ffmpeg", "ffmpeg");
    Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-re", "-i"])
        .arg(sync::clip_mp4())
        .args(["-c", "copy"])
        .args(format)
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// An LL-HLS player's bytes of `camera`: the init segment and every complete segment the
/// media playlist lists (each init again where `EXT-X-MAP` changes).
fn ll_hls_segments(server: &Server, camera: &str) -> Vec<u8> {
    let base = format!("/api/cameras/{camera}/hls");
    let playlist = server.get(&format!("{base}/stream.m3u8")).text().unwrap();
    let (mut bytes, mut init) = (Vec::new(), String::new());
    for line in playlist.lines() {
        let uri = if let Some(map) = line.strip_prefix("#EXT-X-MAP:URI=\"") {
            let map = map.split('"').next().unwrap();
            if map == init {
                continue;
            }
            init = map.to_string();
            map
        } else if line.starts_with('#') || line.is_empty() {
            continue;
        } else {
            line
        };
        let r = server.get(&format!("{base}/{uri}"));
        assert_eq!(r.status(), 200, "{camera}: {uri}");
        bytes.extend_from_slice(&r.bytes().unwrap());
    }
    assert!(!init.is_empty(), "{camera}: no EXT-X-MAP in {playlist}");
    bytes
}

/// The first recorded span of `camera` once it is at least `seconds` long.
fn recorded(server: &Server, camera: &str, seconds: f64) -> serde_json::Value {
    let mut span = serde_json::Value::Null;
    common::wait_until(
        Duration::from_secs(20),
        &format!("{seconds} s of {camera} recorded"),
        || {
            span = server.get_json(&format!("/api/playback/list?path={camera}"))[0].clone();
            span["duration"].as_f64().unwrap_or(0.0) >= seconds
        },
    );
    span
}

#[test]
fn every_rtp_path_keeps_sound_and_picture_together_and_decode_times_in_order() {
    let camera = RtspCamera::start(&["--file", sync::clip_mp4().to_str().unwrap()]);
    let dir = common::temp_dir("sync-paths-files");
    let config = format!(
        "[rtsp]\nlisten = \"127.0.0.1:0\"\n[rtmp]\nlisten = \"127.0.0.1:0\"\n\
         [recording]\npath = \"{}\"\nsegment = \"4s\"\n\n\
         [[camera]]\nid = \"cam\"\nsource = \"{}\"\nrecord = true\n\n\
         [[camera]]\nid = \"tcp\"\nsource = \"publish:\"\nrecord = true\n\n\
         [[camera]]\nid = \"udp\"\nsource = \"publish:\"\n\n\
         [[camera]]\nid = \"rtmp\"\nsource = \"publish:\"\n",
        dir.join("rec").display(),
        camera.url()
    );
    let path = common::write_config("sync-paths", &config);
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    let outputs = server.get_json("/api/outputs");
    let rtsp = outputs["rtsp"]["port"].as_u64().unwrap();
    let rtmp = outputs["rtmp"]["port"].as_u64().unwrap();
    let mut publishers = [
        publish(
            &format!("rtsp://127.0.0.1:{rtsp}/tcp"),
            &["-f", "rtsp", "-rtsp_transport", "tcp"],
        ),
        publish(
            &format!("rtsp://127.0.0.1:{rtsp}/udp"),
            &["-f", "rtsp", "-rtsp_transport", "udp"],
        ),
        publish(
            &format!("rtmp://127.0.0.1:{rtmp}/live/rtmp"),
            &["-f", "flv"],
        ),
    ];
    for id in ["cam", "tcp", "udp", "rtmp"] {
        server.wait_live(id, Duration::from_secs(15));
    }
    // LL-HLS muxers start on a first request; read their segments at the end.
    for id in ["cam", "tcp"] {
        let r = server.get(&format!("/api/cameras/{id}/hls/index.m3u8"));
        assert_eq!(r.status(), 200, "{id}: LL-HLS");
    }
    // Every path read back at once over the RTSP re-stream, from the first second; and the
    // RTSP publisher's MSE bytes.
    let readers: Vec<_> = ["cam", "tcp", "udp", "rtmp"]
        .into_iter()
        .map(|id| {
            let url = format!("rtsp://127.0.0.1:{rtsp}/{id}");
            std::thread::spawn(move || {
                let offsets = sync::av_offsets(&url, &["-rtsp_transport", "tcp"], READ_SECONDS);
                (id, offsets)
            })
        })
        .collect();
    let cam_mse = sync::mse_bytes(&server, "cam", READ_SECONDS);
    let tcp_mse = sync::mse_bytes(&server, "tcp", 3.0);
    let mut failures = Vec::new();
    for reader in readers {
        let (id, offsets) = reader.join().unwrap();
        eprintln!("{id} over the RTSP re-stream: {offsets:?}");
        if let Err(e) = std::panic::catch_unwind(|| {
            sync::assert_in_sync(&format!("{id} over RTSP"), &offsets, 3, 0.040)
        }) {
            failures.push(format!("{id}: {e:?}"));
        }
    }
    let dir = common::temp_dir("sync-mse");
    let file = sync::to_file(&dir, "cam.mp4", &cam_mse);
    let offsets = sync::av_offsets(file.to_str().unwrap(), &[], 20.0);
    eprintln!("cam over MSE: {offsets:?}");
    sync::assert_in_sync("the RTSP camera over MSE", &offsets, 3, 0.040);
    sync::assert_decode_times_monotonic("the RTSP camera (B-frames) over MSE", &cam_mse);
    sync::assert_decode_times_monotonic("an RTSP publisher (B-frames) over MSE", &tcp_mse);
    // The same two B-frame sources as LL-HLS segments and as recordings played back.
    for (id, what) in [("cam", "the RTSP camera"), ("tcp", "an RTSP publisher")] {
        let hls = ll_hls_segments(&server, id);
        assert!(
            sync::decode_times(&hls)
                .get(&1)
                .is_some_and(|v| v.len() >= 50),
            "{what}: LL-HLS segments hold too few pictures"
        );
        sync::assert_decode_times_monotonic(&format!("{what} (B-frames) over LL-HLS"), &hls);
        let span = recorded(&server, id, 5.0);
        let start = span["start"].as_str().unwrap();
        let duration = span["duration"].as_f64().unwrap();
        let get = |format: &str| {
            let r = server.get(&format!(
                "/api/playback/get?path={id}&start={start}&duration={duration:.3}&format={format}"
            ));
            assert_eq!(r.status(), 200, "{what}: playback as {format}");
            r.bytes().unwrap().to_vec()
        };
        sync::assert_decode_times_monotonic(
            &format!("{what} (B-frames) played back as fMP4"),
            &get("fmp4"),
        );
        let file = sync::to_file(&dir, &format!("{id}-playback.mp4"), &get("mp4"));
        let offsets = sync::av_offsets(file.to_str().unwrap(), &[], duration);
        eprintln!("{id} played back: {offsets:?}");
        sync::assert_in_sync(&format!("{what} played back"), &offsets, 2, 0.040);
    }
    for p in &mut publishers {
        let _ = p.kill();
        let _ = p.wait();
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The RTSP fixture serving a live test pattern with AAC whose RTP times jump back `back`
/// seconds once `after` seconds were served; `jumped` is set when it says it did.
struct JumpingCamera {
    child: Child,
    url: String,
    jumped: std::sync::Arc<std::sync::OnceLock<std::time::Instant>>,
}

impl JumpingCamera {
    fn start(after: f64, back: f64) -> JumpingCamera {
        use std::io::BufRead;
        let script = format!(
            "{}/tests/fixtures/rtsp_camera.py",
            env!("CARGO_MANIFEST_DIR")
        );
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .args(["--port", "0", "--audio", "aac", "--size", "640x360"])
            .args(["--bitrate", "800", "--gop", "25"])
            .args([
                "--jump-after",
                &after.to_string(),
                "--jump-back",
                &back.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run the RTSP fixture with /usr/bin/python3");
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = lines.next().and_then(Result::ok).unwrap_or_default();
        let url = ready
            .strip_prefix("READY ")
            .unwrap_or_else(|| panic!("the RTSP fixture did not start: {ready:?}"))
            .to_string();
        let jumped = std::sync::Arc::new(std::sync::OnceLock::new());
        let told = jumped.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if line == "JUMPED pay0" {
                    let _ = told.set(std::time::Instant::now());
                }
            }
        });
        JumpingCamera { child, url, jumped }
    }
}

impl Drop for JumpingCamera {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts that each track's decode times step forward by less than a second (no jump back,
/// none far ahead) and cover at least `seconds` (it kept playing).
fn assert_steady(label: &str, bytes: &[u8], seconds: f64) {
    sync::assert_decode_times_monotonic(label, bytes);
    let tracks = sync::decode_times(bytes);
    let scales = sync::timescales(bytes);
    assert_eq!(tracks.len(), 2, "{label}: video and audio");
    for (track, times) in &tracks {
        let scale = f64::from(scales[track]);
        let worst = times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0) as f64 / scale;
        let span = (times.last().unwrap() - times.first().unwrap()) as f64 / scale;
        eprintln!(
            "{label}: track {track}: {} samples over {span:.2} s, largest step {worst:.3} s",
            times.len()
        );
        assert!(
            worst < 1.0,
            "{label}: track {track} steps {worst:.3} s at once"
        );
        assert!(
            span >= seconds,
            "{label}: track {track} covers only {span:.2} s"
        );
    }
}

/// Item 12: an RTSP camera whose RTP times jump back 2 s mid-session. An MSE viewer, an LL-HLS
/// client and the recording (read back through /api/playback/get) all see decode times that
/// only go forward, and picture and sound keep coming after the jump.
#[test]
fn a_camera_clock_that_jumps_back_keeps_mse_ll_hls_and_recording_monotonic() {
    let camera = JumpingCamera::start(6.0, 2.0);
    let dir = common::temp_dir("sync-jump");
    let config = format!(
        "[recording]\npath = \"{}\"\n\n[[camera]]\nid = \"cam\"\nsource = \"{}\"\nrecord = true\n",
        dir.join("rec").display(),
        camera.url
    );
    let path = common::write_config("sync-jump-cfg", &config);
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    server.wait_live("cam", Duration::from_secs(15));
    common::wait_until(Duration::from_secs(10), "the camera's audio", || {
        !server.get_json("/api/cameras/cam")["audio"].is_null()
    });
    let began = std::time::Instant::now();
    let hls = {
        let (http, base) = (server.http.clone(), server.base.clone());
        std::thread::spawn(move || common::ll_hls::parts(&http, &base, "cam", 12.0))
    };
    let mse = sync::mse_bytes(&server, "cam", 12.0);
    let hls = hls.join().unwrap();
    let jumped = *camera.jumped.get().expect("the camera's clock jumped back");
    let after = 12.0 - jumped.duration_since(began).as_secs_f64();
    eprintln!(
        "the camera jumped back {:.1} s into the viewers' 12 s",
        12.0 - after
    );
    assert!(
        after >= 3.0,
        "the jump came too late to see what follows it"
    );

    assert_steady("MSE across the jump", &mse, 10.0);
    assert_steady("LL-HLS parts across the jump", &hls, 10.0);

    let mut spans = Vec::new();
    common::wait_until(
        Duration::from_secs(10),
        "the recording across the jump",
        || {
            spans = server
                .get_json("/api/playback/list?path=cam")
                .as_array()
                .unwrap()
                .clone();
            spans
                .iter()
                .map(|s| s["duration"].as_f64().unwrap())
                .sum::<f64>()
                >= 12.0
        },
    );
    assert_eq!(spans.len(), 1, "one span across the jump: {spans:?}");
    let url = spans[0]["url"].as_str().unwrap().to_string() + "&format=fmp4";
    let recorded = server.get(&url).bytes().unwrap();
    assert_steady("the recording across the jump", &recorded, 11.0);
}
