//! Real headless Chromium, driven over WebDriver (chromedriver + fantoccini).
//!
//! Why WebDriver and fantoccini rather than CDP (chromiumoxide): fantoccini is small and builds
//! quickly, `execute`/`execute_async` is all these tests need, and chromedriver ships with
//! Debian's Chromium in the same version.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

pub const BROWSER_PACKAGES: &str = "chromium chromium-driver";

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Browser tests take this first: one Chromium (and one livelens under load) at a time keeps
/// their timings meaningful on a 2-core machine.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub struct Browser {
    driver: Child,
    pub client: fantoccini::Client,
}

impl Browser {
    pub async fn start() -> Browser {
        Browser::start_with(true).await
    }

    /// `loopback_webrtc: false` leaves Chromium's default: it won't use 127.0.0.1 ICE candidates,
    /// which makes a server that only offers those unreachable over WebRTC.
    pub async fn start_with(loopback_webrtc: bool) -> Browser {
        for bin in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
            assert!(
                std::path::Path::new(bin).exists(),
                "{bin} is missing: install the Debian packages {BROWSER_PACKAGES} (scripts/test does)"
            );
        }
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        // Its own process group, so Drop can take chromedriver and every Chromium with it.
        let mut driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let mut lines = BufReader::new(driver.stdout.take().unwrap()).lines();
        loop {
            match lines.next() {
                Some(Ok(l)) if l.contains("started successfully") => break,
                Some(Ok(_)) => continue,
                _ => panic!("chromedriver did not start"),
            }
        }
        std::thread::spawn(move || for _ in lines {});
        let profile =
            std::env::temp_dir().join(format!("livelens-chromium-{}-{port}", std::process::id()));
        let caps = json!({
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--autoplay-policy=no-user-gesture-required", "--enable-precise-memory-info",
                    "--js-flags=--expose-gc", "--window-size=1280,800",
                    "--allow-loopback-in-peer-connection",
                    // A webcam and microphone without hardware or a permission prompt (WHIP tests).
                    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                    format!("--user-data-dir={}", profile.display()),
                ]
            }
        });
        let Value::Object(mut caps) = caps else {
            unreachable!()
        };
        if !loopback_webrtc {
            let args = caps["goog:chromeOptions"]["args"].as_array_mut().unwrap();
            args.retain(|a| a != "--allow-loopback-in-peer-connection");
        }
        let client = fantoccini::ClientBuilder::new(
            hyper_util::client::legacy::connect::HttpConnector::new(),
        )
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a Chromium session");
        Browser { driver, client }
    }

    /// Runs `script` (an async function body; `return` gives the result) in the page.
    pub async fn run(&self, script: &str) -> Value {
        let wrapped = format!(
            "const done = arguments[arguments.length - 1];\
             (async () => {{ {script} }})().then(done, (e) => done({{__error: String(e && e.stack || e)}}));"
        );
        let v = self
            .client
            .execute_async(&wrapped, vec![])
            .await
            .expect("script");
        if let Some(e) = v.get("__error") {
            panic!("script failed: {e}");
        }
        v
    }

    /// Waits until `script` (returning a bool, possibly a promise) holds in the page; on timeout
    /// the panic shows the player's stats (`window.p`) and the start of the page's text.
    pub async fn until(&self, within: std::time::Duration, what: &str, script: &str) {
        let start = std::time::Instant::now();
        loop {
            if self.run(script).await == Value::Bool(true) {
                return;
            }
            if start.elapsed() > within {
                let stats = self
                    .run("return window.p ? window.p.stats : (window.recState || null);")
                    .await;
                let page = self
                    .run("return document.body.innerText.slice(0, 600);")
                    .await;
                panic!("timed out after {within:?} waiting for {what}; player stats: {stats}; page: {page}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Opens an empty page on `base` (same origin as livelens, so `/player.js` imports).
    pub async fn blank_page(&self, base: &str) {
        self.client.goto(&format!("{base}/healthz")).await.unwrap();
        self.run("document.documentElement.innerHTML = '<head></head><body></body>';")
            .await;
    }

    /// Opens livelens's UI at `base` and waits for its camera list.
    pub async fn open_ui(&self, base: &str) {
        self.client.goto(base).await.unwrap();
        self.until(
            std::time::Duration::from_secs(10),
            "the camera list",
            "return document.querySelectorAll('#list .cam').length > 0;",
        )
        .await;
    }

    /// Navigates the tab to `url` (the page being left gets its `pagehide`).
    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// Ends the WebDriver session (Chromium exits); Drop then stops chromedriver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group we created.
        unsafe { libc::kill(-(self.driver.id() as i32), libc::SIGKILL) };
        let _ = self.driver.wait();
    }
}
