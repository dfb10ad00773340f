//! The Debian package (`scripts/package`, cargo-deb) installed into this machine with dpkg:
//! its config checks, its unit verifies, the installed binary serves a camera as the
//! `livelens` user with the packaged config (and writes a camera added by the API back to it),
//! and removing the package leaves only the conffile and the data.
//!
//! Needs root (dpkg) and the package built first: `scripts/test` runs `scripts/package
//! --no-build` after building.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::Server;
use reqwest::StatusCode;
use serde_json::json;

fn the_package() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/debian");
    let mut debs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    debs.retain(|p| p.extension().is_some_and(|e| e == "deb"));
    debs.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    debs.pop().unwrap_or_else(|| {
        panic!(
            "no package in {}: run scripts/package --no-build (scripts/test does)",
            dir.display()
        )
    })
}

fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn must(program: &str, args: &[&str]) -> String {
    let (ok, text) = run(program, args);
    assert!(ok, "{program} {args:?} failed:\n{text}");
    text
}

/// Purges the package when the test ends, passed or not: the machine as it was.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = run("dpkg", &["--purge", "livelens"]);
    }
}

#[test]
fn the_debian_package_installs_serves_as_its_user_and_removes_cleanly() {
    common::require("dpkg", "dpkg");
    common::require("systemd-analyze", "systemd");
    common::require("setpriv", "util-linux");
    // SAFETY: geteuid(2) has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "installing a package needs root (dpkg -i)"
    );
    let deb = the_package();
    let _purge = Purge;
    must("dpkg", &["-i", deb.to_str().unwrap()]);
    let conf = "/etc/livelens/livelens.toml";
    let text = must("/usr/bin/livelens", &["check-config", conf]);
    assert!(text.contains("ok (1 camera(s))"), "{text}");
    let unit = "/usr/lib/systemd/system/livelens.service";
    assert!(Path::new(unit).exists(), "{unit} not installed");
    // The unit as systemd reads it (its binary, its user, every directive known).
    let (ok, text) = run("systemd-analyze", &["verify", unit]);
    assert!(
        ok && !text.contains("Unknown"),
        "systemd-analyze verify:\n{text}"
    );
    let listed = must("dpkg", &["-L", "livelens"]);
    for path in ["/usr/bin/livelens", conf, unit] {
        assert!(
            listed.lines().any(|l| l == path),
            "{path} not in:\n{listed}"
        );
    }
    let user = must("id", &["livelens"]);
    assert!(
        user.contains("(video)"),
        "livelens is not in the video group: {user}"
    );

    // The installed binary, as the unit runs it: the livelens user, the packaged config.
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=livelens",
        "--regid=livelens",
        "--init-groups",
        "--",
    ])
    .arg("/usr/bin/livelens")
    .current_dir("/var/lib/livelens");
    let server = Server::start_program(cmd, &["--config", conf, "--no-watch"]);
    server.wait_live("demo", Duration::from_secs(10));
    let r = server.get("/api/cameras/demo/snapshot.jpg");
    assert_eq!(r.status(), StatusCode::OK);
    let jpeg = r.bytes().unwrap();
    assert!(jpeg.starts_with(&[0xff, 0xd8]) && jpeg.len() > 1000);
    // Its data where the package says, owned by its user.
    let db = Path::new("/var/lib/livelens/events.db");
    common::wait_until(Duration::from_secs(5), "the events database", || {
        db.exists()
    });
    let owner = must("stat", &["-c", "%U", db.to_str().unwrap()]);
    assert_eq!(owner.trim(), "livelens");
    // A camera added in the UI is written back to the conffile, which still checks.
    let r = server.post_json(
        "/api/cameras",
        &json!({"id": "door", "source": "testsrc://?size=320x240&fps=5"}),
    );
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().unwrap());
    let text = must("/usr/bin/livelens", &["check-config", conf]);
    assert!(text.contains("ok (2 camera(s))"), "{text}");
    let (status, _) = server.terminate();
    assert!(status.success(), "{status}");

    // Removed (not purged): the binary and the unit go; the conffile and the data stay.
    must("dpkg", &["-r", "livelens"]);
    for gone in ["/usr/bin/livelens", unit] {
        assert!(!Path::new(gone).exists(), "{gone} left behind");
    }
    assert!(Path::new(conf).exists(), "the conffile went with remove");
    assert!(db.exists(), "the data went with remove");
    let status = must("dpkg-query", &["-W", "-f=${Status}", "livelens"]);
    assert_eq!(status, "deinstall ok config-files");
    // Purged: nothing at all.
    must("dpkg", &["--purge", "livelens"]);
    for gone in [conf, "/var/lib/livelens"] {
        assert!(!Path::new(gone).exists(), "{gone} left after purge");
    }
}
