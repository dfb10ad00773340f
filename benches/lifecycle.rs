//! `cargo bench --bench lifecycle`: the foundation's figures, printed as a table.
//!
//! Runs the real binary (release) and measures, from outside, what an operator would:
//! stop/start cycles per second, stop latency while live (p50/p99), RSS per idle live testsrc
//! camera, CPU % of one 720p25 testsrc camera, time to live and snapshot latency.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

struct Server {
    child: Child,
    base: String,
    http: reqwest::blocking::Client,
}

impl Server {
    fn start() -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_livelens"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("LIVELENS_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn livelens");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line
            .trim()
            .trim_start_matches("livelens listening on ")
            .trim_end_matches('/')
            .to_string();
        Server {
            child,
            base,
            http: reqwest::blocking::Client::new(),
        }
    }
    fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .unwrap()
            .json()
            .unwrap()
    }
    fn post(&self, path: &str, body: Option<Value>) -> reqwest::StatusCode {
        let mut r = self.http.post(format!("{}{path}", self.base));
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send().unwrap().status()
    }
    fn wait_live(&self, id: &str) -> Duration {
        let start = Instant::now();
        while self.get(&format!("/api/cameras/{id}"))["state"] != "live" {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{id} never went live"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        start.elapsed()
    }
    fn rss(&self) -> i64 {
        self.get("/api/resources")["rss_bytes"].as_i64().unwrap()
    }
    /// CPU seconds (user + system) of the server process so far.
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        // SAFETY: sysconf has no preconditions.
        ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let server = Server::start();
    let first_live = server.wait_live("demo");

    // CPU of one 720p25 camera with no viewers: draw + encode, over 10 s.
    std::thread::sleep(Duration::from_secs(2));
    let (c0, t0) = (server.cpu_seconds(), Instant::now());
    std::thread::sleep(Duration::from_secs(10));
    let cpu_pct = (server.cpu_seconds() - c0) / t0.elapsed().as_secs_f64() * 100.0;

    // Snapshot latency (cache misses: one request per 1.1 s cache period).
    let mut snaps = Vec::new();
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(1100));
        let t = Instant::now();
        let r = server
            .http
            .get(format!("{}/api/cameras/demo/snapshot.jpg", server.base))
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
        server.post("/api/cameras/demo/stop", None);
        stops.push(t.elapsed());
        server.post("/api/cameras/demo/start", None);
        lives.push(server.wait_live("demo"));
    }
    stops.sort();
    lives.sort();

    // Back-to-back stop/start cycles.
    let n = 1000;
    let t = Instant::now();
    for _ in 0..n {
        server.post("/api/cameras/demo/stop", None);
        server.post("/api/cameras/demo/start", None);
    }
    let cycles_per_sec = n as f64 / t.elapsed().as_secs_f64();
    server.wait_live("demo");

    // RSS per idle live 720p25 testsrc camera: add 4, measure the difference once live.
    std::thread::sleep(Duration::from_secs(1));
    let rss_before = server.rss();
    let extra = 4;
    for i in 0..extra {
        let id = format!("cam{i}");
        server.post(
            "/api/cameras",
            Some(json!({"id": id, "source": "testsrc://?size=1280x720&fps=25"})),
        );
        server.wait_live(&id);
    }
    std::thread::sleep(Duration::from_secs(3));
    let rss_per_camera = (server.rss() - rss_before) / extra;

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
