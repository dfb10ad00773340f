//! The TOML configuration (`config::Config::parse`: TOML syntax, then every semantic check:
//! listen addresses, `[webrtc]`, `[storage]`, `[mqtt]` URLs, workers, camera ids, source URLs
//! and their options, analysis settings) and the write-back of cameras
//! (`config::write_cameras`, what the API does when cameras change).
//!
//! Invariants:
//! - parsing never panics, for any text (error positions, spans, UTF-8 boundaries…);
//! - a refused config lists at least one problem, each with a message;
//! - a config that validates, serialised again (`toml::to_string` of the same fields), parses
//!   and validates again to an equal config;
//! - a config that validates, with its cameras written back into its own text by
//!   `write_cameras`, still validates, with equal cameras and equal other sections;
//! - the accessors give values within their documented ranges.
//!
//! Configs with NaN floats (`nan`, which never compares equal) skip the equality checks.

use std::path::PathBuf;
use std::sync::OnceLock;

use serde::Serialize;

use crate::config::{write_cameras, CameraConfig, Config};
use crate::fuzzing::debug;
use crate::supervisor::WorkerConfig;

/// The fields of `Config` that a valid config can have (`Config` itself is not `Serialize`).
#[derive(Serialize)]
struct Mirror<'a> {
    server: Server<'a>,
    sources: Sources,
    #[serde(skip_serializing_if = "Option::is_none")]
    webrtc: Option<&'a toml::Table>,
    #[serde(skip_serializing_if = "Option::is_none")]
    storage: Option<&'a toml::Table>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mqtt: Option<&'a toml::Table>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mjpeg: Option<&'a toml::Table>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hls: Option<&'a toml::Table>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rtsp: Option<&'a toml::Table>,
    camera: &'a [CameraConfig],
    worker: &'a [WorkerConfig],
}

#[derive(Serialize)]
struct Server<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
}

#[derive(Serialize)]
struct Sources {
    allow_exec: bool,
}

fn same(a: &Config, b: &Config, what: &str, text: &str) {
    let ctx = || format!("{what}\n--- text ---\n{text}");
    assert_eq!(a.server.listen, b.server.listen, "{}", ctx());
    assert_eq!(a.server.token, b.server.token, "{}", ctx());
    assert_eq!(a.sources.allow_exec, b.sources.allow_exec, "{}", ctx());
    assert_eq!(a.webrtc, b.webrtc, "{}", ctx());
    assert_eq!(a.storage, b.storage, "{}", ctx());
    assert_eq!(a.mqtt, b.mqtt, "{}", ctx());
    assert_eq!(a.mjpeg, b.mjpeg, "{}", ctx());
    assert_eq!(a.hls, b.hls, "{}", ctx());
    assert_eq!(a.rtsp, b.rtsp, "{}", ctx());
    assert_eq!(a.worker, b.worker, "{}", ctx());
    assert_eq!(a.camera, b.camera, "{}", ctx());
    assert_eq!(a.typed, b.typed, "{}", ctx());
}

/// Where `write_cameras` writes: a directory of this process in `/dev/shm` (or the temp dir).
fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| crate::fuzzing::scratch_dir("config"))
}

/// Checks the invariants above on one input: returns when they hold, panics when one breaks.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = match Config::parse(text) {
        Ok(c) => c,
        Err(problems) => {
            assert!(!problems.is_empty(), "refused without a problem");
            for p in &problems {
                assert!(!p.message.is_empty(), "{p:?}");
                let _ = p.to_string();
            }
            if debug() {
                eprintln!("problems: {problems:#?}");
            }
            return;
        }
    };
    let days = config.typed.keep.as_secs() / 86_400;
    assert!((1..=36_500).contains(&days), "keep {days} days");
    if let Some(listen) = &config.server.listen {
        assert_eq!(config.typed.listen, listen.parse().ok());
    }
    assert!(!config.cameras_or_demo().is_empty());
    for cam in &config.camera {
        let _ = cam.masked_source();
    }
    let check_equal = !text.to_ascii_lowercase().contains("nan");

    // Serialise the same fields again and parse them back.
    let mirror = Mirror {
        server: Server {
            listen: config.server.listen.as_deref(),
            token: config.server.token.as_deref(),
        },
        sources: Sources {
            allow_exec: config.sources.allow_exec,
        },
        webrtc: config.webrtc.as_ref(),
        storage: config.storage.as_ref(),
        mqtt: config.mqtt.as_ref(),
        mjpeg: config.mjpeg.as_ref(),
        hls: config.hls.as_ref(),
        rtsp: config.rtsp.as_ref(),
        camera: &config.camera,
        worker: &config.worker,
    };
    let again =
        toml::to_string(&mirror).unwrap_or_else(|e| panic!("cannot serialise a valid config: {e}"));
    if debug() {
        eprintln!("--- serialised ---\n{again}");
    }
    let back = Config::parse(&again).unwrap_or_else(|p| panic!("re-serialised config refused: {p:#?}\n--- serialised ---\n{again}\n--- original ---\n{text}"));
    if check_equal {
        same(
            &config,
            &back,
            "serialise → parse changed the config",
            &again,
        );
    }

    // The API's write-back of cameras into the same file.
    let path = scratch().join("livelens.toml");
    std::fs::write(&path, text).expect("write scratch config");
    write_cameras(&path, &config.camera)
        .unwrap_or_else(|e| panic!("write_cameras failed on a valid config: {e}"));
    let written = std::fs::read_to_string(&path).expect("read back");
    let reloaded = Config::parse(&written)
        .unwrap_or_else(|p| panic!("config refused after write_cameras: {p:#?}\n--- written ---\n{written}\n--- original ---\n{text}"));
    if check_equal {
        same(
            &config,
            &reloaded,
            "write_cameras changed the config",
            &written,
        );
    }
}

/// Removes this process's scratch directory (the unit test's clean-up).
#[cfg(test)]
pub(super) fn remove_scratch() {
    let _ = std::fs::remove_dir_all(scratch());
}
