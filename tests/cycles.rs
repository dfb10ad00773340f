//! Lifecycle: 1,000 stop/start cycles through the API leave every counted resource at its
//! baseline, open file descriptors flat and RSS growth under 5 MiB.

use crate::common;

use std::time::Duration;

use common::{wait_until, Server};
use reqwest::StatusCode;
use serde_json::Value;

const CYCLES: usize = 1_000;
const WARM_UP: usize = 200;
const MAX_RSS_GROWTH: i64 = 5 << 20;

/// Every count in /api/resources except the process figures, which are checked separately.
fn counts(r: &Value) -> Value {
    let mut r = r.clone();
    let obj = r.as_object_mut().unwrap();
    obj.remove("open_fds");
    obj.remove("rss_bytes");
    r
}

#[test]
fn a_thousand_stop_start_cycles_leave_nothing_behind() {
    let server = Server::start(&[]);
    server.wait_live("demo", Duration::from_secs(5));
    let cycle = |i: usize| {
        let r = server.post("/api/cameras/demo/stop");
        assert_eq!(r.status(), StatusCode::OK, "stop {i}");
        let state: Value = r.json().unwrap();
        assert_eq!(state["state"], "stopped", "stop {i} returns once stopped");
        assert_eq!(
            server.post("/api/cameras/demo/start").status(),
            StatusCode::OK
        );
        // Now and then let the camera go live, so cycles also stop an encoder mid-stream.
        if i % 100 == 0 {
            server.wait_live("demo", Duration::from_secs(5));
        }
    };

    // The allocator settles during a warm-up; growth is measured from there.
    for i in 0..WARM_UP {
        cycle(i);
    }
    server.wait_live("demo", Duration::from_secs(5));
    let baseline = server.resources();
    eprintln!("baseline: {baseline}");

    let started = std::time::Instant::now();
    for i in 0..CYCLES {
        cycle(i);
    }
    let took = started.elapsed();
    server.wait_live("demo", Duration::from_secs(5));
    eprintln!(
        "{CYCLES} cycles in {took:?} ({:.0} cycles/s)",
        CYCLES as f64 / took.as_secs_f64()
    );

    // Counts settle as soon as the last start has gone live; wait for that, not for time.
    wait_until(Duration::from_secs(5), "counts back at baseline", || {
        counts(&server.resources()) == counts(&baseline)
    });
    let after = server.resources();
    eprintln!("after:    {after}");
    assert_eq!(after["open_fds"], baseline["open_fds"], "open fds grew");
    let growth = after["rss_bytes"].as_i64().unwrap() - baseline["rss_bytes"].as_i64().unwrap();
    assert!(
        growth < MAX_RSS_GROWTH,
        "RSS grew by {} KiB over {CYCLES} cycles",
        growth / 1024
    );
}
