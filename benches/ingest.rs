//! `cargo bench --bench ingest`: the cost of RTSP ingest, printed as a table.
//!
//! One real RTSP camera (gst-rtsp-server, 1280x720 25 fps 2 Mb/s, one shared encoder) feeds 1, 8
//! and 32 livelens cameras with no viewers. For each count: livelens CPU % and RSS over 10 s, and
//! start → live time p50/p99 over stop/start of every camera.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{cpu_seconds, RtspCamera, Server};
use serde_json::json;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    // Noise, so the encoder really spends its 2 Mb/s.
    let cam = RtspCamera::start(&[
        "--size",
        "1280x720",
        "--fps",
        "25",
        "--bitrate",
        "2000",
        "--pattern",
        "snow",
    ]);
    println!();
    println!("| RTSP cameras | kbit/s each | livelens CPU % | livelens RSS | RSS per camera | start → live p50 / p99 |");
    println!("|---|---|---|---|---|---|");
    for n in [1usize, 8, 32] {
        let dir = common::temp_dir(&format!("bench-ingest-{n}"));
        let config = dir.join("livelens.toml");
        std::fs::write(&config, "").unwrap();
        let server = Server::start(&["--config", config.to_str().unwrap()]);
        let rss_empty = server.resources()["rss_bytes"].as_i64().unwrap();
        for i in 0..n {
            let r = server.post_json(
                "/api/cameras",
                &json!({"id": format!("c{i}"), "source": cam.url()}),
            );
            assert!(r.status().is_success());
        }
        for i in 0..n {
            server.wait_live(&format!("c{i}"), Duration::from_secs(30));
        }
        std::thread::sleep(Duration::from_secs(2));
        let pid = server.pid();
        let (c0, t0) = (cpu_seconds(pid), Instant::now());
        std::thread::sleep(Duration::from_secs(10));
        let cpu = (cpu_seconds(pid) - c0) / t0.elapsed().as_secs_f64() * 100.0;
        let rss = server.resources()["rss_bytes"].as_i64().unwrap();
        let kbps = server.get_json("/api/cameras/c0")["stats"]["bitrate_kbps"]
            .as_f64()
            .unwrap();

        let mut lives = Vec::new();
        for round in 0..(64 / n).max(2) {
            let _ = round;
            for i in 0..n {
                let id = format!("c{i}");
                server.post(&format!("/api/cameras/{id}/stop"));
                let t = Instant::now();
                server.post(&format!("/api/cameras/{id}/start"));
                server.wait_live(&id, Duration::from_secs(30));
                lives.push(t.elapsed());
            }
        }
        lives.sort();
        println!(
            "| {n} | {kbps:.0} | {cpu:.1} | {:.1} MiB | {:.2} MiB | {:.0} / {:.0} ms (n={}) |",
            rss as f64 / 1048576.0,
            (rss - rss_empty) as f64 / n as f64 / 1048576.0,
            percentile(&lives, 0.5).as_secs_f64() * 1e3,
            percentile(&lives, 0.99).as_secs_f64() * 1e3,
            lives.len()
        );
    }
}
