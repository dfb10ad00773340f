//! The measuring tools of tests/common/sync.rs measure: the sync clip itself is in sync, a
//! shifted copy is measured as shifted, and a stream with B-frames keeps its decode order.

use crate::common;

use std::process::Command;

use common::sync;

#[test]
fn the_sync_clip_is_in_sync_and_a_shift_is_measured() {
    let clip = sync::clip_mp4();
    let offsets = sync::av_offsets(clip.to_str().unwrap(), &[], 20.0);
    sync::assert_in_sync("the clip", &offsets, 9, 0.005);

    // The same clip with audio 0.2 s late must measure +0.2 s, or the tool proves nothing.
    let dir = common::temp_dir("sync-shift");
    let shifted = dir.join("shifted.mp4");
    let status = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y", "-i"])
        .arg(&clip)
        .args(["-itsoffset", "0.2", "-i"])
        .arg(&clip)
        .args(["-map", "0:v", "-map", "1:a", "-c", "copy"])
        .arg(&shifted)
        .status()
        .unwrap();
    assert!(status.success());
    let offsets = sync::av_offsets(shifted.to_str().unwrap(), &[], 20.0);
    assert!(offsets.len() >= 8, "{offsets:?}");
    assert!(
        offsets.iter().all(|o| (o - 0.2).abs() < 0.005),
        "a 0.2 s shift measured as {offsets:?}"
    );
}

#[test]
fn decode_times_of_an_ffmpeg_fragmented_mp4_never_decrease() {
    let dir = common::temp_dir("sync-frag");
    let frag = dir.join("frag.mp4");
    let status = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y", "-i"])
        .arg(sync::clip_mp4())
        .args([
            "-c",
            "copy",
            "-movflags",
            "frag_keyframe+empty_moov+default_base_moof",
        ])
        .arg(&frag)
        .status()
        .unwrap();
    assert!(status.success());
    let bytes = std::fs::read(&frag).unwrap();
    let tracks = sync::decode_times(&bytes);
    assert_eq!(tracks.len(), 2, "video and audio");
    assert!(
        tracks.values().all(|t| t.len() > 400),
        "{:?}",
        tracks.values().map(Vec::len).collect::<Vec<_>>()
    );
    sync::assert_decode_times_monotonic("ffmpeg's fMP4", &bytes);
}
