//! `[[worker]]`: long-running helper processes (a local faster-whisper or llama.cpp server) that
//! livelens starts on a free port, health-checks over HTTP, restarts with back-off when they die
//! or stop answering, and stops on shutdown. Analysers reach one as `worker:NAME`
//! ([`Workers::acquire`]); an `on_demand` worker runs only while a lease on it exists, plus its
//! idle timeout.
//!
//! Ownership: [`Workers`] owns one supervising task per worker (token + handle); each task owns
//! its [`ChildProcess`]. [`Workers::stop`] cancels and awaits them, so every child is reaped.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{split_command, stop_grace, ChildProcess, ChildSpec};
use crate::backoff::Backoff;
use crate::demand::{Demand, DemandLease};
use crate::resources::spawn_task;

const DEFAULT_IDLE: Duration = Duration::from_secs(60);
const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(60);
const HEALTH_EVERY: Duration = Duration::from_secs(5);
/// Consecutive failed health checks of a ready worker before it is restarted.
const HEALTH_FAILURES: u32 = 3;

/// A worker's command: an argument list, or one string split like a shell would.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum CommandLine {
    Args(Vec<String>),
    Line(String),
}

impl CommandLine {
    pub fn argv(&self) -> Result<Vec<String>, String> {
        match self {
            CommandLine::Args(a) if a.is_empty() || a[0].is_empty() => {
                Err("the command is empty".into())
            }
            CommandLine::Args(a) => Ok(a.clone()),
            CommandLine::Line(l) => split_command(l),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    pub name: String,
    /// `{port}` anywhere in it is replaced by the port livelens chose.
    pub command: CommandLine,
    /// An HTTP URL that answers 2xx when the worker is ready, e.g.
    /// `http://127.0.0.1:{port}/health`. Without it, a running process counts as ready.
    #[serde(default)]
    pub health: Option<String>,
    #[serde(default)]
    pub on_demand: bool,
    /// How long an on-demand worker keeps running after its last user (default 60s).
    #[serde(default)]
    pub idle_timeout: Option<String>,
    /// How long a starting worker may take to answer its health check (default 60s).
    #[serde(default)]
    pub start_timeout: Option<String>,
}

impl WorkerConfig {
    /// Problems with this worker as `(key, message)`; empty when it can run.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Err(e) = crate::common::check_camera_id(&self.name) {
            out.push(("name", e.replace("camera id", "worker name")));
        }
        if let Err(e) = self.command.argv() {
            out.push(("command", e));
        }
        if let Some(h) = &self.health {
            let url = h.replace("{port}", "1");
            match url::Url::parse(&url) {
                Ok(u) if u.scheme() == "http" => {}
                Ok(u) => out.push((
                    "health",
                    format!("must be an http:// URL, not {}://", u.scheme()),
                )),
                Err(e) => out.push(("health", format!("is not a URL: {e}"))),
            }
        }
        for (key, value) in [
            ("idle_timeout", &self.idle_timeout),
            ("start_timeout", &self.start_timeout),
        ] {
            if let Some(v) = value {
                if let Err(e) = crate::common::parse_duration(v) {
                    out.push((key, e));
                }
            }
        }
        out
    }

    fn duration(value: &Option<String>, default: Duration) -> Duration {
        value
            .as_deref()
            .and_then(|v| crate::common::parse_duration(v).ok())
            .unwrap_or(default)
    }
}

/// What the API shows of a worker.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WorkerView {
    pub name: String,
    /// "idle" (on-demand, not wanted), "starting", "ready", "retrying", "stopped".
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Times the process was started.
    pub starts: u64,
    pub on_demand: bool,
    pub users: usize,
}

struct Worker {
    config: WorkerConfig,
    status: Mutex<Status>,
    /// The port while the worker is ready, `None` otherwise.
    ready: watch::Sender<Option<u16>>,
    demand: Demand,
}

#[derive(Default)]
struct Status {
    state: &'static str,
    reason: Option<String>,
    pid: Option<u32>,
    port: Option<u16>,
    starts: u64,
}

/// A use of a worker: its base URL, and (for on-demand workers) the reason it keeps running.
#[derive(Debug)]
pub struct WorkerLease {
    pub base_url: String,
    _demand: DemandLease,
}

pub struct Workers {
    workers: BTreeMap<String, Arc<Worker>>,
    running: tokio::sync::Mutex<Vec<(CancellationToken, JoinHandle<()>)>>,
}

impl Workers {
    pub fn new(configs: &[WorkerConfig]) -> Workers {
        let workers = configs
            .iter()
            .map(|c| {
                let worker = Worker {
                    config: c.clone(),
                    status: Mutex::new(Status {
                        state: "stopped",
                        ..Status::default()
                    }),
                    ready: watch::channel(None).0,
                    demand: Demand::new(),
                };
                (c.name.clone(), Arc::new(worker))
            })
            .collect();
        Workers {
            workers,
            running: tokio::sync::Mutex::new(Vec::new()),
        }
    }

    /// Starts supervising every worker (on-demand ones wait for their first user).
    pub async fn start(&self) {
        let mut running = self.running.lock().await;
        if !running.is_empty() {
            return;
        }
        for worker in self.workers.values() {
            let cancel = CancellationToken::new();
            let task = spawn_task(supervise(worker.clone(), cancel.clone()));
            running.push((cancel, task));
        }
    }

    /// Stops every worker and waits until each child is reaped.
    pub async fn stop(&self) {
        let running = std::mem::take(&mut *self.running.lock().await);
        for (cancel, _) in &running {
            cancel.cancel();
        }
        for (_, task) in running {
            let _ = task.await;
        }
    }

    pub fn list(&self) -> Vec<WorkerView> {
        self.workers.values().map(|w| w.view()).collect()
    }

    pub fn get(&self, name: &str) -> Option<WorkerView> {
        self.workers.get(name).map(|w| w.view())
    }

    /// A lease on worker `name`, once it is ready (starting it if it is on demand). The error
    /// says why not: unknown name, or not ready within `timeout` (with the worker's reason).
    pub async fn acquire(&self, name: &str, timeout: Duration) -> Result<WorkerLease, String> {
        let worker = self
            .workers
            .get(name)
            .ok_or_else(|| format!("no worker named {name:?}"))?;
        let demand = worker.demand.lease();
        let mut ready = worker.ready.subscribe();
        let port = match tokio::time::timeout(timeout, ready.wait_for(|p| p.is_some())).await {
            Ok(Ok(port)) => port.unwrap_or_default(),
            _ => {
                let view = worker.view();
                return Err(format!(
                    "worker {name:?} is not ready after {timeout:?} (state {}{})",
                    view.state,
                    view.reason.map(|r| format!(": {r}")).unwrap_or_default()
                ));
            }
        };
        Ok(WorkerLease {
            base_url: format!("http://127.0.0.1:{port}"),
            _demand: demand,
        })
    }
}

impl Worker {
    fn view(&self) -> WorkerView {
        let s = self.status.lock().unwrap();
        WorkerView {
            name: self.config.name.clone(),
            state: s.state,
            reason: s.reason.clone(),
            pid: s.pid,
            port: s.port,
            starts: s.starts,
            on_demand: self.config.on_demand,
            users: self.demand.count(),
        }
    }

    fn set(&self, state: &'static str, reason: Option<String>) {
        let mut s = self.status.lock().unwrap();
        s.state = state;
        s.reason = reason;
        if state != "starting" && state != "ready" {
            s.pid = None;
            s.port = None;
        }
    }
}

/// A port that was free a moment ago. The worker binds it itself; the short race with another
/// process taking it ends as a failed start, retried on a new port.
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

enum Outcome {
    Cancelled,
    /// The worker failed; retry after back-off.
    Failed(String),
    /// An on-demand worker went idle; wait for the next user.
    Idle,
}

async fn supervise(worker: Arc<Worker>, cancel: CancellationToken) {
    let seed = std::process::id() as u64 ^ worker.config.name.len() as u64;
    let mut backoff = Backoff::new(seed);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .build()
        .expect("an HTTP client without TLS always builds");
    loop {
        if worker.config.on_demand {
            worker.set("idle", None);
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = worker.demand.wait_wanted() => {}
            }
        }
        match run_once(&worker, &http, &cancel).await {
            Outcome::Cancelled => break,
            Outcome::Idle => backoff.reset(),
            Outcome::Failed(reason) => {
                let delay = backoff.next_delay();
                tracing::warn!(worker = %worker.config.name, %reason, retry_in = ?delay, "worker failed");
                worker.set("retrying", Some(reason));
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    worker.set("stopped", None);
}

/// Starts the worker once and runs it until it fails, goes idle or is cancelled. The child is
/// stopped and reaped before this returns.
async fn run_once(worker: &Worker, http: &reqwest::Client, cancel: &CancellationToken) -> Outcome {
    let config = &worker.config;
    let port = match free_port() {
        Ok(p) => p,
        Err(e) => return Outcome::Failed(format!("no free port: {e}")),
    };
    let argv: Vec<String> = match config.command.argv() {
        Ok(a) => a
            .iter()
            .map(|a| a.replace("{port}", &port.to_string()))
            .collect(),
        Err(e) => return Outcome::Failed(e),
    };
    let health = config
        .health
        .as_ref()
        .map(|h| h.replace("{port}", &port.to_string()));
    let spec = ChildSpec {
        owner: format!("worker {}", config.name),
        program: argv[0].clone(),
        args: argv[1..].to_vec(),
        capture_stdout: false,
    };
    let mut child = match ChildProcess::spawn(&spec) {
        Ok(c) => c,
        Err(e) => return Outcome::Failed(e),
    };
    {
        let mut s = worker.status.lock().unwrap();
        s.state = "starting";
        s.reason = None;
        s.pid = Some(child.pid());
        s.port = Some(port);
        s.starts += 1;
    }
    let start_timeout = WorkerConfig::duration(&config.start_timeout, DEFAULT_START_TIMEOUT);
    enum Started {
        Ready,
        Exited(std::process::ExitStatus),
        Failed(String),
        Cancelled,
    }
    let started = tokio::select! {
        _ = cancel.cancelled() => Started::Cancelled,
        status = child.wait() => Started::Exited(status),
        r = wait_healthy(http, health.as_deref(), start_timeout) => match r {
            Ok(()) => Started::Ready,
            Err(e) => Started::Failed(e),
        },
    };
    match started {
        Started::Ready => {}
        Started::Cancelled => {
            child.stop(stop_grace()).await;
            return Outcome::Cancelled;
        }
        Started::Exited(status) => return Outcome::Failed(child.describe_exit(status)),
        Started::Failed(reason) => {
            child.stop(stop_grace()).await;
            return Outcome::Failed(reason);
        }
    }
    worker.set("ready", None);
    worker.ready.send_replace(Some(port));
    tracing::info!(worker = %config.name, port, pid = child.pid(), "worker ready");

    let idle = WorkerConfig::duration(&config.idle_timeout, DEFAULT_IDLE);
    let went_idle = async {
        if config.on_demand {
            worker.demand.wait_idle(idle).await
        } else {
            std::future::pending().await
        }
    };
    let unhealthy = async {
        let Some(url) = health.as_deref() else {
            return std::future::pending().await;
        };
        let mut failures = 0;
        loop {
            tokio::time::sleep(HEALTH_EVERY).await;
            match check(http, url).await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    if failures >= HEALTH_FAILURES {
                        return format!("health check failed {failures} times: {e}");
                    }
                }
            }
        }
    };
    enum Running {
        Cancelled,
        Exited(std::process::ExitStatus),
        Unhealthy(String),
        Idle,
    }
    let running = tokio::select! {
        _ = cancel.cancelled() => Running::Cancelled,
        status = child.wait() => Running::Exited(status),
        reason = unhealthy => Running::Unhealthy(reason),
        _ = went_idle => Running::Idle,
    };
    worker.ready.send_replace(None);
    match running {
        Running::Cancelled => {
            child.stop(stop_grace()).await;
            Outcome::Cancelled
        }
        Running::Exited(status) => Outcome::Failed(child.describe_exit(status)),
        Running::Unhealthy(reason) => {
            child.stop(stop_grace()).await;
            Outcome::Failed(reason)
        }
        Running::Idle => {
            tracing::info!(worker = %config.name, "worker idle; stopping it");
            child.stop(stop_grace()).await;
            Outcome::Idle
        }
    }
}

async fn wait_healthy(
    http: &reqwest::Client,
    url: Option<&str>,
    limit: Duration,
) -> Result<(), String> {
    let Some(url) = url else { return Ok(()) };
    let deadline = tokio::time::Instant::now() + limit;
    let mut last = String::from("no answer yet");
    while tokio::time::Instant::now() < deadline {
        match check(http, url).await {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("not healthy within {limit:?}: {last}"))
}

async fn check(http: &reqwest::Client, url: &str) -> Result<(), String> {
    match http.get(url).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("{url} answered {}", r.status())),
        Err(e) if e.is_connect() => Err(format!("{url}: connection refused")),
        Err(e) if e.is_timeout() => Err(format!("{url}: timed out")),
        Err(e) => Err(format!("{url}: {e}")),
    }
}
