//! VLC 3.0 (Debian `vlc-bin` + `vlc-plugin-base`, its `adaptive` HLS demuxer: whole segments,
//! no LL-HLS parts) plays livelens's LL-HLS of a looping `file://` camera of the A/V sync clip.
//! VLC re-muxes what it demuxed to MPEG-TS (`--sout`), and FFmpeg reads that file back: decode
//! times must run on without a step back or a gap (issue #29 saw VLC skip a segment and
//! restart its timeline 2–3 times in 20 s), with the flash and beep together.
//!
//! Together means within 0.1 s here, not the ±40 ms of the other paths: VLC 3.0's `adaptive`
//! demuxer puts a B-frame stream's video late by about its reordering delay in any fMP4 HLS.
//! Measured on this clip: livelens's LL-HLS −80 ms (2 B-frames), and FFmpeg's own fMP4 HLS of
//! the same file (`-f hls -hls_segment_type fmp4`, with an edit list) −59 ms, while VLC
//! re-muxing the MP4 file itself reads 0 ms, as do FFmpeg and hls.js reading livelens's LL-HLS.

use crate::common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{sync, Server};

/// Seconds VLC plays (`--run-time`).
const SECONDS: u32 = 20;

/// Decode times (seconds) of one stream of `file`, as ffprobe reads them.
fn decode_times(file: &str, stream: &str) -> Vec<f64> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", stream])
        .args(["-show_entries", "packet=dts_time", "-of", "csv=p=0", file])
        .output()
        .expect("run ffprobe");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect()
}

/// Decode times strictly increase, in steps under `max_step` s, over at least `span` s.
fn assert_continuous(label: &str, times: &[f64], max_step: f64, span: f64) {
    assert!(times.len() > 10, "{label}: {} packets", times.len());
    for w in times.windows(2) {
        assert!(
            w[1] > w[0] && w[1] - w[0] < max_step,
            "{label}: decode time {:.3} s → {:.3} s (a step back or a gap)",
            w[0],
            w[1]
        );
    }
    let covered = times[times.len() - 1] - times[0];
    assert!(covered >= span, "{label}: only {covered:.2} s");
}

#[test]
fn vlc_plays_ll_hls_with_a_continuous_timeline_in_sync() {
    common::require("cvlc", "vlc-bin and vlc-plugin-base");
    common::require("ffprobe", "ffmpeg");
    let clip = sync::clip_mp4();
    let config = common::write_config(
        "vlc",
        &format!(
            "[[camera]]\nid = \"clip\"\nsource = \"file://{}\"\n",
            clip.display()
        ),
    );
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    server.wait_live("clip", Duration::from_secs(15));

    let dir = common::temp_dir("vlc");
    let out = dir.join("vlc.ts");
    let url = server.url("/api/cameras/clip/hls/index.m3u8");
    let mut vlc = Command::new("cvlc");
    // VLC refuses to run as root: under CI (root) it runs as `nobody`, who must write `out`.
    if unsafe { libc::geteuid() } == 0 {
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .expect("open the output directory to nobody");
        vlc = Command::new("runuser");
        vlc.args(["-u", "nobody", "--", "cvlc"]);
    }
    let status = vlc
        .args(["-q", "--no-video-title-show", &url])
        .arg("--sout")
        .arg(format!("#std{{access=file,mux=ts,dst={}}}", out.display()))
        .arg(format!("--run-time={SECONDS}"))
        .arg("vlc://quit")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run cvlc");
    assert!(status.success(), "cvlc exited with {status}");
    let out = out.to_str().unwrap();

    let span = SECONDS as f64 - 4.0;
    assert_continuous("VLC's video", &decode_times(out, "v:0"), 0.1, span);
    assert_continuous("VLC's audio", &decode_times(out, "a:0"), 0.1, span);
    // Not the last seconds: VLC stops mid-segment at --run-time, and a flash or beep cut
    // there pairs with nothing.
    let offsets = sync::av_offsets(out, &[], SECONDS as f64 - 3.0);
    println!("VLC over LL-HLS: A/V offsets {offsets:.3?} s");
    sync::assert_in_sync("VLC over LL-HLS", &offsets, 5, 0.100);
}
