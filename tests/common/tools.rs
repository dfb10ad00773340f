//! Clients nobody on the project wrote, installed by `scripts/test` under `target/test-tools`:
//! npm's hls.js and PyPI's aiortc (in a venv). A missing one fails the test and names it.

use std::path::PathBuf;

fn tools() -> PathBuf {
    std::env::var_os("LIVELENS_TEST_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-tools"))
}

/// hls.js's minified build (npm `hls.js` 1.7.x), to inject into a Chromium page.
pub fn hls_js() -> String {
    let path = tools().join("node_modules/hls.js/dist/hls.min.js");
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "hls.js is not installed at {} ({e}): install the npm package hls.js@1.7.4 \
             (scripts/test does)",
            path.display()
        )
    })
}

/// axe-core (npm `axe-core` 4.10), the accessibility checker, as a script to inject.
pub fn axe_core() -> String {
    let path = tools().join("node_modules/axe-core/axe.min.js");
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "axe-core is not installed at {} ({e}): install the npm package axe-core@4.10.3 \
             (scripts/test does)",
            path.display()
        )
    })
}

/// A Python with aiortc (PyPI `aiortc` 1.16) importable.
pub fn aiortc_python() -> PathBuf {
    let python = tools().join("venv/bin/python");
    let ok = std::process::Command::new(&python)
        .args(["-c", "import aiortc"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "aiortc is not installed in {}: install the PyPI package aiortc==1.16 into that venv \
         (scripts/test does; it needs the Debian package python3-venv)",
        python.display()
    );
    python
}
