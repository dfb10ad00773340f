//! `cargo bench --bench lifecycle`: the foundation's figures, printed as a table.
//!
//! Runs the real binary (release) and measures, from outside, what an operator would:
//! stop/start cycles per second, stop latency while live (p50/p99), RSS per idle live testsrc
//! camera, CPU % of one 720p25 testsrc camera, time to live and snapshot latency.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{cpu_seconds, Server};
use serde_json::json;

/// Start → live, polled every 2 ms: finer than the tests' wait, because here it is the figure.
fn wait_live(server: &Server, id: &str) -> Duration {
    let start = Instant::now();
    while server.camera_state(id) != "live" {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{id} never went live"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    start.elapsed()
}

fn rss(server: &Server) -> i64 {
    server.resources()["rss_bytes"].as_i64().unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let server = Server::start(&[]);
    let first_live = wait_live(&server, "demo");

    // CPU of one 720p25 camera with no viewers: draw + encode, over 10 s.
    std::thread::sleep(Duration::from_secs(2));
    let (c0, t0) = (cpu_seconds(server.pid()), Instant::now());
    std::thread::sleep(Duration::from_secs(10));
    let cpu_pct = (cpu_seconds(server.pid()) - c0) / t0.elapsed().as_secs_f64() * 100.0;

    // Snapshot latency (cache misses: one request per 1.1 s cache period).
    let mut snaps = Vec::new();
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(1100));
        let t = Instant::now();
        let r = server
            .http
            .get(server.url("/api/cameras/demo/snapshot.jpg"))
            .send()
            .unwrap();
        assert!(r.status().is_success());
        let _ = r.bytes().unwrap();
        snaps.push(t.elapsed());
    }
    snaps.sort();

    // Stop latency while live: stop only after the camera has gone live again.
    let mut stops = Vec::new();
    let mut lives = Vec::new();
    for _ in 0..100 {
        let t = Instant::now();
        server.post("/api/cameras/demo/stop");
        stops.push(t.elapsed());
        server.post("/api/cameras/demo/start");
        lives.push(wait_live(&server, "demo"));
    }
    stops.sort();
    lives.sort();

    // Back-to-back stop/start cycles.
    let n = 1000;
    let t = Instant::now();
    for _ in 0..n {
        server.post("/api/cameras/demo/stop");
        server.post("/api/cameras/demo/start");
    }
    let cycles_per_sec = n as f64 / t.elapsed().as_secs_f64();
    wait_live(&server, "demo");

    // RSS per idle live 720p25 testsrc camera: add 4, measure the difference once live.
    std::thread::sleep(Duration::from_secs(1));
    let rss_before = rss(&server);
    let extra = 4;
    for i in 0..extra {
        let id = format!("cam{i}");
        server.post_json(
            "/api/cameras",
            &json!({"id": id, "source": "testsrc://?size=1280x720&fps=25"}),
        );
        wait_live(&server, &id);
    }
    std::thread::sleep(Duration::from_secs(3));
    let rss_per_camera = (rss(&server) - rss_before) / extra;

    println!();
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| demo camera live after start | {:.0} ms |",
        first_live.as_secs_f64() * 1e3
    );
    println!("| CPU, one 720p25 testsrc camera, no viewers | {cpu_pct:.1} % of a core |");
    println!(
        "| snapshot (cache miss, 720p) p50 / max | {:.0} / {:.0} ms |",
        percentile(&snaps, 0.5).as_secs_f64() * 1e3,
        snaps.last().unwrap().as_secs_f64() * 1e3
    );
    println!(
        "| stop latency while live, p50 / p99 (n=100) | {:.2} / {:.2} ms |",
        percentile(&stops, 0.5).as_secs_f64() * 1e3,
        percentile(&stops, 0.99).as_secs_f64() * 1e3
    );
    println!(
        "| start → live, p50 / p99 (n=100) | {:.0} / {:.0} ms |",
        percentile(&lives, 0.5).as_secs_f64() * 1e3,
        percentile(&lives, 0.99).as_secs_f64() * 1e3
    );
    println!("| stop/start cycles per second (n={n}) | {cycles_per_sec:.0} |");
    println!(
        "| RSS per idle live 720p25 testsrc camera | {:.1} MiB |",
        rss_per_camera as f64 / 1048576.0
    );
}
