//! Hole 7 of issue 28: the fan-out's ring was bounded in frames, not bytes. A publisher sending
//! 3 MiB pictures and one MSE viewer that stops reading held the ring's 256 frames (~870 MiB of
//! RSS per camera). Now the ring, a viewer's backlog and its unsent batch have byte budgets: a
//! stalled viewer falls off the ring, is told what it lost and resumes at a keyframe when it
//! reads again, and one that never reads again is cut.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use livelens::media::h264;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use super::common::{self, counts, require, wait_until, Server};

const CONFIG: &str = "[rtmp]\nlisten = \"127.0.0.1:0\"\n\n\
                      [[camera]]\nid = \"big\"\nsource = \"publish:\"\n";

/// The most the server's RSS may grow while viewers stall (the bar).
const MAX_GROWTH_MIB: i64 = 100;

/// livelens's resident memory, from the kernel.
fn rss_mib(pid: u32) -> i64 {
    (common::rss_kib(pid) / 1024) as i64
}

/// An intra-only, lossless encode of noise: every picture is a keyframe of about 3 MiB.
fn big_pictures(frames: usize) -> std::path::PathBuf {
    require("ffmpeg", "ffmpeg");
    let path = common::temp_dir("attacks-fanout-clip").join("big.flv");
    let made = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=1600x900:rate=25,noise=alls=100:allf=t")
        .args(["-frames:v", &frames.to_string()])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
        ])
        .args(["-x264-params", "keyint=1", "-qp", "0"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(made.success());
    let sizes = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "packet=size",
            "-of",
            "csv=p=0",
        ])
        .arg(&path)
        .output()
        .unwrap();
    let smallest = String::from_utf8_lossy(&sizes.stdout)
        .lines()
        .filter_map(|l| l.trim().parse::<usize>().ok())
        .min()
        .expect("packet sizes");
    assert!(smallest > 2_800_000, "pictures of {smallest} bytes");
    path
}

/// Publishes the clip in a loop, in real time (25 fps × 3 MiB ≈ 75 MiB/s).
fn publish(clip: &std::path::Path, port: u16) -> Child {
    Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-loglevel",
            "error",
            "-re",
            "-stream_loop",
            "-1",
            "-i",
        ])
        .arg(clip)
        .args(["-c", "copy", "-f", "flv"])
        .arg(format!("rtmp://127.0.0.1:{port}/live/big"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// An MSE viewer with a 4 KiB receive buffer, so that when it stops reading the server's writes
/// back up at once.
async fn viewer(server: &Server) -> Ws {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let addr: std::net::SocketAddr = server.base.trim_start_matches("http://").parse().unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let url = format!("ws://{addr}/api/cameras/big/mse");
    tokio_tungstenite::client_async(url, stream)
        .await
        .unwrap()
        .0
}

async fn next(ws: &mut Ws) -> Message {
    tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("a message within 10 s")
        .expect("open")
        .expect("ok")
}

/// Reads the `mse` message and the init segment: the viewer is set up.
async fn read_init(ws: &mut Ws) {
    let Message::Text(t) = next(ws).await else {
        panic!("first an mse message")
    };
    assert!(t.contains("\"mse\""), "{t}");
    let Message::Binary(init) = next(ws).await else {
        panic!("then the init segment")
    };
    assert_eq!(&init[4..8], b"ftyp");
}

/// Reads until a fragment's payload; returns the `drop` notice seen on the way, if any, and
/// whether that payload is a keyframe.
async fn next_picture(ws: &mut Ws) -> (Option<u64>, bool) {
    let mut dropped = None;
    let mut after_moof = false;
    loop {
        match next(ws).await {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "drop" {
                    dropped = v["frames"].as_u64();
                }
            }
            Message::Binary(b) => {
                // The message after a moof (which ends with the mdat's header) is its payload.
                if after_moof {
                    let idr = h264::length_prefixed_nals(&b).any(|n| h264::nal_type(n) == 5);
                    return (dropped, idr);
                }
                after_moof = b.get(4..8) == Some(b"moof");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn viewers_that_stop_reading_big_pictures_cost_bounded_memory() {
    // The issue's own scale (one camera, ~3 MiB pictures, one viewer stalled for ~20 s) takes
    // seconds; full scale stalls eight viewers for good instead of one (each holds its unsent
    // batch). The first stall outlasts the ring's 256 frames, so the unfixed ring fills; the
    // peak is followed until the viewers that never read again are cut.
    let stall_frames: u64 = 270;
    let never_again = if super::full_scale() { 8 } else { 1 };
    let clip = big_pictures(25);
    let config = common::write_config("attacks-fanout", CONFIG);
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let port = server.get_json("/api/outputs")["rtmp"]["port"]
        .as_u64()
        .expect("the RTMP port") as u16;
    let mut publisher = publish(&clip, port);
    server.wait_live("big", Duration::from_secs(20));
    let baseline = counts(&server.resources());
    let pid = server.pid();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // Viewers take their init segment and stop reading: `a` for a while, the others for good.
        let mut a = viewer(&server).await;
        read_init(&mut a).await;
        let mut gone = Vec::new();
        for _ in 0..never_again {
            let mut b = viewer(&server).await;
            read_init(&mut b).await;
            gone.push(b);
        }
        let rss_before = rss_mib(pid);
        let start_frames = server.camera_frames("big");
        let stalled_at = Instant::now();
        let mut peak = rss_before;
        // Under the MSE send timeout (20 s), so that `a` is still there when it reads again.
        let deadline = Duration::from_secs(19);
        while server.camera_frames("big") < start_frames + stall_frames {
            assert!(
                stalled_at.elapsed() < deadline,
                "the publisher did not reach {stall_frames} frames in {deadline:?}"
            );
            peak = peak.max(rss_mib(pid));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let growth = peak - rss_before;
        eprintln!(
            "RSS {rss_before} MiB before the stall, peak {peak} MiB (+{growth} MiB) over \
             {stall_frames} frames of ~3 MiB in {:.1} s",
            stalled_at.elapsed().as_secs_f64()
        );
        assert!(
            growth < MAX_GROWTH_MIB,
            "RSS grew by {growth} MiB while {} viewers stalled",
            never_again + 1
        );

        // `a` reads again: told what it lost, it resumes at a keyframe.
        let (dropped, keyframe) = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let (dropped, keyframe) = next_picture(&mut a).await;
                if dropped.is_some() {
                    break (dropped, keyframe);
                }
            }
        })
        .await
        .expect("a drop notice when the stalled viewer reads again");
        assert!(dropped.unwrap() > 0);
        assert!(keyframe, "the first picture after the drop is a keyframe");
        let _ = a.close(None).await;

        // A new viewer gets video at once.
        let mut c = viewer(&server).await;
        read_init(&mut c).await;
        let (_, keyframe) = next_picture(&mut c).await;
        assert!(keyframe, "a new viewer starts at a keyframe");
        let _ = c.close(None).await;

        // The others never read again: they are cut (viewers and sockets gone) while their
        // clients still hold the connections open.
        let mse = || server.resources()["viewers"]["mse"].as_i64().unwrap();
        let b_cut = Instant::now();
        while mse() != baseline["viewers"]["mse"].as_i64().unwrap() {
            assert!(
                b_cut.elapsed() < Duration::from_secs(40),
                "the stalled viewers were never cut"
            );
            peak = peak.max(rss_mib(pid));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let growth = peak - rss_before;
        eprintln!(
            "the stalled viewers were cut {:.1} s after the stall began; peak RSS {peak} MiB \
             (+{growth} MiB) over the whole stall",
            stalled_at.elapsed().as_secs_f64()
        );
        assert!(growth < MAX_GROWTH_MIB, "RSS grew by {growth} MiB");
        // What the server had queued drains, then the connection ends.
        for mut b in gone {
            let drained = tokio::time::timeout(Duration::from_secs(20), async {
                while let Some(Ok(_)) = b.next().await {}
            })
            .await;
            assert!(drained.is_ok(), "a cut viewer's connection did not end");
        }
    });
    wait_until(
        Duration::from_secs(10),
        "every count back to its baseline",
        || counts(&server.resources()) == baseline,
    );
    let _ = publisher.kill();
    let _ = publisher.wait();
}
