//! `[[worker]]` supervision in-process: an on-demand worker runs only while an analyser holds a
//! lease on it (plus its idle timeout), is health-checked before the lease is granted, and is
//! gone — reaped — after it goes idle and after `stop`.

use crate::common;

use std::time::Duration;

use common::is_running;
use livelens::resources::{count, Resource};
use livelens::supervisor::{WorkerConfig, Workers};

fn worker(extra: &str) -> WorkerConfig {
    toml::from_str(&format!(
        r#"
        name = "web"
        command = ["/usr/bin/python3", "-m", "http.server", "--bind", "127.0.0.1", "{{port}}"]
        health = "http://127.0.0.1:{{port}}/"
        {extra}
        "#
    ))
    .expect("worker config")
}

/// The tests read process-wide counters, so they run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits (asynchronously) until `check` holds, at most 10 s.
async fn until(what: &str, check: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_demand_worker_runs_only_while_used() {
    let _serial = SERIAL.lock().await;
    let workers = Workers::new(&[worker("on_demand = true\nidle_timeout = \"1s\"")]);
    workers.start().await;
    let view = || workers.get("web").unwrap();
    until("idle", || view().state == "idle").await;
    assert_eq!(
        count(Resource::ChildProcess),
        0,
        "an unused on-demand worker runs"
    );

    for round in 0..2 {
        let lease = workers
            .acquire("web", Duration::from_secs(10))
            .await
            .expect("the worker starts for its first user");
        let v = view();
        assert_eq!((v.state, v.users), ("ready", 1), "round {round}");
        let pid = v.pid.unwrap();
        // The lease's URL reaches the worker on the port livelens chose.
        let r = reqwest::get(format!("{}/", lease.base_url)).await.unwrap();
        assert_eq!(r.status(), 200);
        drop(lease);
        until("idle after the last user", || view().state == "idle").await;
        assert!(!is_running(pid), "round {round}: worker {pid} still runs");
        assert_eq!(count(Resource::ChildProcess), 0);
        assert_eq!(view().starts, round + 1);
    }

    let e = workers
        .acquire("nope", Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(e.contains("no worker named \"nope\""), "{e}");
    workers.stop().await;
    assert_eq!(view().state, "stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_never_gets_healthy_is_restarted_with_a_reason() {
    let _serial = SERIAL.lock().await;
    // Serves nothing on {port}: the health check cannot pass.
    let mut config = worker("start_timeout = \"1s\"");
    config.command = livelens::supervisor::worker::CommandLine::Line("sleep 1000".into());
    let workers = Workers::new(&[config]);
    workers.start().await;
    let e = workers
        .acquire("web", Duration::from_secs(3))
        .await
        .unwrap_err();
    assert!(e.contains("not ready"), "{e}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let v = workers.get("web").unwrap();
        if v.state == "retrying" {
            let reason = v.reason.unwrap();
            assert!(reason.contains("not healthy within 1s"), "{reason}");
            assert!(reason.contains("connection refused"), "{reason}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no retry: {v:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    workers.stop().await;
    assert_eq!(count(Resource::ChildProcess), 0);
}
