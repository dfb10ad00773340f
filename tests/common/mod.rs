//! Test harness: runs the real `livelens` binary on a free port and talks to it over HTTP.
#![allow(dead_code)]

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
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_livelens"));
        cmd.arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("LIVELENS_LOG", "warn")
            .env_remove("LIVELENS_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
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

    pub fn resources(&self) -> Value {
        self.get_json("/api/resources")
    }

    pub fn camera_state(&self, id: &str) -> String {
        self.get_json(&format!("/api/cameras/{id}"))["state"]
            .as_str()
            .unwrap()
            .to_string()
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
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
