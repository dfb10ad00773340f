//! `cargo bench --bench analysis`: what analysis costs, printed as a table.
//!
//! One 720p25 testsrc camera in the real binary. CPU % of the server is measured over 10 s with
//! no analysis, then with motion at 2 and at 5 analysed pictures per second (the difference is
//! the analysis: decode + scale + compare). Then a VLM against a loopback model server that
//! answers at once, every 200 ms: the per-request overhead from the events' own latency split
//! (grab = decode + scale on the analysis thread, encode = JPEG, request = HTTP round trip).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::vlm_server::VlmServer;
use common::{cpu_seconds, Server};
use serde_json::{json, Value};

const SECONDS: u64 = 10;

fn cpu_percent(server: &Server) -> f64 {
    let pid = server.pid();
    let before = cpu_seconds(pid);
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(SECONDS));
    100.0 * (cpu_seconds(pid) - before) / start.elapsed().as_secs_f64()
}

fn set_analysis(server: &Server, analysis: Value) {
    let r = server
        .http
        .patch(server.url("/api/cameras/demo"))
        .json(&json!({ "analysis": analysis }))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text());
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let server = Server::start(&[]);
    server.wait_live("demo", Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(1));
    let base = cpu_percent(&server);
    let mut rows = Vec::new();
    for fps in [2.0, 5.0] {
        set_analysis(&server, json!({ "motion": { "fps": fps } }));
        std::thread::sleep(Duration::from_secs(1));
        let with = cpu_percent(&server);
        rows.push((fps, with, with - base));
    }
    println!("\n## Motion analysis, one 720p25 testsrc camera (2 cores; {SECONDS} s each)\n");
    println!("| analysed pictures/s | server CPU % | of which analysis |");
    println!("|---|---|---|");
    println!("| none | {base:.1} | — |");
    for (fps, with, delta) in rows {
        println!("| {fps} | {with:.1} | {delta:.1} |");
    }

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let vlm = runtime.block_on(VlmServer::start(
        640,
        "Describe what you see in one sentence.",
    ));
    set_analysis(
        &server,
        json!({ "vlm": { "endpoint": vlm.url, "model": "bench", "interval": "200ms", "image_width": 640 } }),
    );
    std::thread::sleep(Duration::from_secs(SECONDS));
    set_analysis(&server, Value::Null);
    let events = server.get_json("/api/events?kind=vlm&limit=1000");
    let parts = |key: &str| -> Vec<f64> {
        let mut v: Vec<f64> = events
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["data"]["latency_ms"][key].as_f64())
            .collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v
    };
    let (grab, encode, request) = (parts("grab"), parts("encode"), parts("request"));
    let overhead: Vec<f64> = {
        let mut v: Vec<f64> = events
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| {
                let l = &e["data"]["latency_ms"];
                Some(l["grab"].as_f64()? + l["encode"].as_f64()?)
            })
            .collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v
    };
    println!(
        "\n## VLM overhead per request, 720p → 640 px JPEG (n = {})\n",
        grab.len()
    );
    println!("| part | p50 ms | p99 ms |");
    println!("|---|---|---|");
    for (name, v) in [
        ("grab (decode + scale)", &grab),
        ("JPEG encode", &encode),
        ("grab + encode", &overhead),
        ("HTTP request (loopback, instant answer)", &request),
    ] {
        println!(
            "| {name} | {:.1} | {:.1} |",
            percentile(v, 0.5),
            percentile(v, 0.99)
        );
    }
    vlm.stop();
}
