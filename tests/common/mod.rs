//! Test harness: runs the real `livelens` binary on a free port and talks to it over HTTP.
#![allow(dead_code)]

pub mod browser;
pub mod hlsjs;
pub mod ll_hls;
pub mod media;
pub mod rtsp;
pub mod sync;
pub mod tools;
pub mod vlm_server;
pub mod whep;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Server {
    child: Option<Child>,
    pub base: String,
    pub http: reqwest::blocking::Client,
}

impl Server {
    /// Starts `livelens serve` with `args` (plus `--listen 127.0.0.1:0`) and waits for the line
    /// that announces the address. Panics with the server's output if it does not come up.
    pub fn start(args: &[&str]) -> Server {
        Server::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::start_with(args, env, |_| {})
    }

    /// As [`Server::start_with_env`], with a last change to the command (e.g. limits).
    pub fn start_with(
        args: &[&str],
        env: &[(&str, &str)],
        adjust: impl FnOnce(&mut Command),
    ) -> Server {
        Server::launch(
            Command::new(env!("CARGO_BIN_EXE_livelens")),
            args,
            env,
            adjust,
        )
    }

    /// Starts livelens through `wrapper` (a command that ends by running the rest of its
    /// arguments, e.g. `unshare -m sh -c '… && exec "$@"' sh`).
    pub fn start_wrapped(wrapper: &[&str], args: &[&str]) -> Server {
        let mut cmd = Command::new(wrapper[0]);
        cmd.args(&wrapper[1..]).arg(env!("CARGO_BIN_EXE_livelens"));
        Server::launch(cmd, args, &[], |_| {})
    }

    /// Starts `cmd serve …` for a livelens other than the one under test (an installed one),
    /// as [`Server::start`] does.
    pub fn start_program(cmd: Command, args: &[&str]) -> Server {
        Server::launch(cmd, args, &[], |_| {})
    }

    fn launch(
        mut cmd: Command,
        args: &[&str],
        env: &[(&str, &str)],
        adjust: impl FnOnce(&mut Command),
    ) -> Server {
        cmd.arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("LIVELENS_LOG", "warn")
            .env_remove("LIVELENS_TOKEN")
            // Without --config, cameras are read from and saved to the default file under
            // here: each server its own, never the user's.
            .env("XDG_CONFIG_HOME", temp_dir("config-home"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        adjust(&mut cmd);
        let mut child = cmd.spawn().expect("spawn livelens");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read livelens stdout");
        let base = line
            .trim()
            .strip_prefix("livelens listening on ")
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!("livelens did not announce its address; first line: {line:?}")
            })
            .trim_end_matches('/')
            .to_string();
        Server {
            child: Some(child),
            base,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                // Shorter than the shortest idle limit a test gives the server (2 s): a pooled
                // connection the server is closing at that moment fails the request instead.
                .pool_idle_timeout(Duration::from_secs(1))
                .build()
                .unwrap(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn get(&self, path: &str) -> reqwest::blocking::Response {
        self.http.get(self.url(path)).send().expect("GET")
    }

    pub fn get_json(&self, path: &str) -> Value {
        let r = self.get(path);
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().expect("JSON body")
    }

    pub fn post(&self, path: &str) -> reqwest::blocking::Response {
        self.http.post(self.url(path)).send().expect("POST")
    }

    pub fn post_json(&self, path: &str, body: &Value) -> reqwest::blocking::Response {
        self.http
            .post(self.url(path))
            .json(body)
            .send()
            .expect("POST")
    }

    /// `PATCH /api/cameras/{id}` with a JSON body.
    pub fn patch_camera(&self, id: &str, body: &Value) -> reqwest::blocking::Response {
        self.http
            .patch(self.url(&format!("/api/cameras/{id}")))
            .json(body)
            .send()
            .expect("PATCH")
    }

    pub fn resources(&self) -> Value {
        self.get_json("/api/resources")
    }

    pub fn camera_state(&self, id: &str) -> String {
        self.get_json(&format!("/api/cameras/{id}"))["state"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The frames camera `id` has taken from its source so far.
    pub fn camera_frames(&self, id: &str) -> u64 {
        self.get_json(&format!("/api/cameras/{id}"))["stats"]["frames"]
            .as_u64()
            .unwrap()
    }

    /// Waits until camera `id` is live; returns how long that took.
    pub fn wait_live(&self, id: &str, deadline: Duration) -> Duration {
        let start = Instant::now();
        wait_until(deadline, &format!("camera {id} live"), || {
            self.camera_state(id) == "live"
        });
        start.elapsed()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGKILLs the server (no chance to clean up) and reaps it.
    pub fn kill_hard(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Sends SIGTERM and waits for the exit; returns the status and how long the exit took.
    pub fn terminate(mut self) -> (ExitStatus, Duration) {
        let mut child = self.child.take().unwrap();
        let start = Instant::now();
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = start + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (status, start.elapsed());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("livelens did not exit within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `condition` until it holds or `deadline` passes (then panics naming `what`).
pub fn wait_until(deadline: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    loop {
        if condition() {
            return;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A fresh directory under the target dir for one test's files.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    // Numbered per call: every test module shares this process, and two tests asking for the
    // same name must not share (or wipe) each other's files.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Debian packages the RTSP test camera needs (installed by scripts/test).
pub const RTSP_FIXTURE_PACKAGES: &str = "gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-base \
     gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav";

/// A real RTSP camera: tests/fixtures/rtsp_camera.py (gst-rtsp-server) on 127.0.0.1.
pub struct RtspCamera {
    child: Option<Child>,
    pub port: u16,
    pub path: String,
    args: Vec<String>,
    clients: std::sync::Arc<std::sync::atomic::AtomicI64>,
    /// The fixture's stderr (its last 64 KiB), printed when a test fails: a camera that died
    /// says why.
    stderr: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl RtspCamera {
    /// Starts the fixture on a free port with extra fixture options (`--codec h265`, …).
    pub fn start(args: &[&str]) -> RtspCamera {
        RtspCamera::start_on(0, args.iter().map(|s| s.to_string()).collect())
    }

    fn start_on(port: u16, args: Vec<String>) -> RtspCamera {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rtsp_camera.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .args(["--port", &port.to_string()])
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run /usr/bin/python3 for the RTSP fixture ({e}); install: {RTSP_FIXTURE_PACKAGES}")
            });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = match lines.next() {
            Some(Ok(line)) if line.starts_with("READY ") => line,
            other => {
                let _ = child.kill();
                let mut err = String::new();
                let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
                let _ = child.wait();
                panic!(
                    "the RTSP fixture did not start ({other:?}). It needs the Debian packages {RTSP_FIXTURE_PACKAGES} \
                     (scripts/test installs them). Its stderr:\n{err}"
                );
            }
        };
        let url = ready.trim_start_matches("READY ").to_string();
        let rest = url.trim_start_matches("rtsp://127.0.0.1:");
        let (port, path) = rest.split_at(rest.find('/').unwrap());
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        if let Some(mut pipe) = child.stderr.take() {
            let sink = stderr.clone();
            // Drained all along, so the fixture never blocks on a full pipe.
            std::thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = std::io::Read::read(&mut pipe, &mut chunk) {
                    if n == 0 {
                        break;
                    }
                    let mut buf = sink.lock().unwrap();
                    buf.extend_from_slice(&chunk[..n]);
                    let excess = buf.len().saturating_sub(64 * 1024);
                    buf.drain(..excess);
                }
            });
        }
        let clients = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
        let counter = clients.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Some(n) = line.strip_prefix("CLIENTS ") {
                    counter.store(n.parse().unwrap_or(-1), std::sync::atomic::Ordering::SeqCst);
                }
            }
        });
        RtspCamera {
            child: Some(child),
            port: port.parse().unwrap(),
            path: path.to_string(),
            args,
            clients,
            stderr,
        }
    }

    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}{}", self.port, self.path)
    }

    pub fn url_with(&self, user: &str, password: &str) -> String {
        format!(
            "rtsp://{user}:{password}@127.0.0.1:{}{}",
            self.port, self.path
        )
    }

    /// RTSP clients connected right now, as the fixture reports them.
    pub fn clients(&self) -> i64 {
        self.clients.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Kills the camera process (SIGKILL: no goodbye to its clients).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the camera again on the same port with the same options.
    pub fn restart(&mut self) {
        let args: Vec<String> = self.args.clone();
        self.restart_with(&args.iter().map(String::as_str).collect::<Vec<_>>());
    }

    /// Starts the camera again on the same port with other options (a camera reconfigured).
    pub fn restart_with(&mut self, args: &[&str]) {
        self.args = args.iter().map(|s| s.to_string()).collect();
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // The port can take a moment to be free again after the kill.
            let attempt =
                std::panic::catch_unwind(|| RtspCamera::start_on(self.port, self.args.clone()));
            match attempt {
                Ok(camera) => {
                    *self = camera;
                    return;
                }
                Err(e) if Instant::now() > deadline => std::panic::resume_unwind(e),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

impl Drop for RtspCamera {
    fn drop(&mut self) {
        let exited = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        self.kill();
        if std::thread::panicking() {
            let stderr = self.stderr.lock().unwrap();
            eprintln!(
                "RTSP fixture on port {} ({}), its stderr:\n{}",
                self.port,
                exited.map_or("running".to_string(), |s| format!("exited: {s}")),
                String::from_utf8_lossy(&stderr)
            );
        }
    }
}

/// CPU seconds (user + system) used so far by process `pid`.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
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

impl Server {
    /// `GET /api/resources` from async code (the blocking client must not run inside a runtime).
    pub async fn resources_async(&self) -> Value {
        reqwest::Client::new()
            .get(self.url("/api/resources"))
            .send()
            .await
            .expect("GET /api/resources")
            .json()
            .await
            .expect("JSON")
    }

    /// Waits until `check` holds for `/api/resources`, from async code.
    pub async fn resources_until(
        &self,
        within: Duration,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) {
        let start = Instant::now();
        loop {
            let r = self.resources_async().await;
            if check(&r) {
                return;
            }
            if start.elapsed() > within {
                panic!("timed out after {within:?} waiting for {what}; resources: {r}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A stream in the test process for camera `cam` made from `toml` camera keys (e.g.
/// `source = "…"`), started, for tests that subscribe to the hub directly.
pub async fn hub_with_camera(keys: &str) -> std::sync::Arc<livelens::hub::Stream> {
    let config: livelens::config::CameraConfig =
        toml::from_str(&format!("id = \"cam\"\n{keys}")).expect("camera keys");
    let spec = livelens::config::source_spec(&config, false).expect("a valid source");
    let stream = std::sync::Arc::new(livelens::hub::Stream::new("cam"));
    stream.start(spec, None).await;
    stream
}

/// `(pid, state, pgid)` of every process whose parent is `parent` (zombies included: a zombie
/// is a child that was not reaped, which is a leak too).
pub fn children_of(parent: u32) -> Vec<(u32, char, u32)> {
    processes()
        .into_iter()
        .filter(|p| p.ppid == parent)
        .map(|p| (p.pid, p.state, p.pgid))
        .collect()
}

/// Processes in process group `pgid` that have not exited (zombies excluded).
pub fn running_in_group(pgid: u32) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|p| p.pgid == pgid && p.state != 'Z')
        .map(|p| p.pid)
        .collect()
}

/// Whether `pid` exists and has not exited (a zombie has exited).
pub fn is_running(pid: u32) -> bool {
    processes().iter().any(|p| p.pid == pid && p.state != 'Z')
}

pub struct ProcInfo {
    pub pid: u32,
    pub state: char,
    pub ppid: u32,
    pub pgid: u32,
}

/// Every process, from /proc/*/stat.
pub fn processes() -> Vec<ProcInfo> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue; // exited while we looked
        };
        // The command name may contain spaces and parentheses: fields follow the last ')'.
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        if fields.len() < 4 {
            continue;
        }
        out.push(ProcInfo {
            pid,
            state: fields[0].chars().next().unwrap_or('?'),
            ppid: fields[1].parse().unwrap_or(0),
            pgid: fields[2].parse().unwrap_or(0),
        });
    }
    out
}

/// `/api/resources` without what settles in its own time (descriptors, memory) or belongs to the
/// test's own pooled clients (HTTP connections): the counts a load must return to.
pub fn counts(r: &Value) -> Value {
    let mut r = r.clone();
    let obj = r.as_object_mut().unwrap();
    for key in ["open_fds", "rss_bytes", "http_connections"] {
        obj.remove(key);
    }
    r
}

/// A number from `/proc/PID/status` (`Threads:`, or a memory field such as `VmRSS:` in KiB).
pub fn proc_status(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// A process's resident memory, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    proc_status(pid, "VmRSS:")
}

/// Writes `text` to `name` in a fresh temp dir and returns the path.
pub fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let path = temp_dir(name).join("livelens.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Fails with the package name when a program the test needs is missing.
pub fn require(program: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{program} is not installed: install the Debian package {package} (scripts/test does)"
    );
}

/// A real mosquitto broker on a free loopback port, killed on drop.
pub struct Mosquitto {
    child: Child,
    pub port: u16,
}

impl Mosquitto {
    pub fn start() -> Mosquitto {
        let program = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("mosquitto is not installed: install the Debian package mosquitto");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = temp_dir(&format!("mosquitto-{port}"));
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
        )
        .unwrap();
        let child = Command::new(program)
            .args(["-c", conf.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        wait_until(Duration::from_secs(5), "mosquitto listening", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Mosquitto { child, port }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the SSE stream on a thread until the first `event: NAME`; returns its data.
pub fn first_sse_event(url: String, name: &'static str) -> std::thread::JoinHandle<Value> {
    std::thread::spawn(move || {
        let response = reqwest::blocking::Client::new().get(url).send().unwrap();
        let mut lines = BufReader::new(response).lines();
        while let Some(Ok(line)) = lines.next() {
            if line == format!("event: {name}") {
                for line in lines.by_ref() {
                    if let Some(data) = line.unwrap().strip_prefix("data: ") {
                        return serde_json::from_str::<Value>(data).unwrap();
                    }
                }
            }
        }
        panic!("the SSE stream ended");
    })
}

/// Switches a camera's analysis on (`on`, the whole `analysis` value) and off `cycles` times.
/// Every 50th time it waits, with a deadline, until `running` says the analyser is at work, so
/// some cycles stop one that is busy rather than one just starting.
pub fn analysis_cycles(
    server: &Server,
    id: &str,
    on: &Value,
    cycles: usize,
    mut running: impl FnMut() -> bool,
) {
    let on = serde_json::json!({ "analysis": on });
    let off = serde_json::json!({ "analysis": null });
    for i in 0..cycles {
        assert_eq!(server.patch_camera(id, &on).status(), 200, "on {i}");
        if i % 50 == 0 {
            wait_until(Duration::from_secs(5), "the analyser at work", &mut running);
        }
        assert_eq!(server.patch_camera(id, &off).status(), 200, "off {i}");
    }
}
