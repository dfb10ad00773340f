//! What playback reads back from disk (`recording::files`, `recording::playback`): a segment
//! file as a crash, a full disk or a damaged drive may have left it — any bytes.
//!
//! Input: the file's bytes. The check writes them to a scratch file, reads its init segment
//! and its fragments as playback does, and stitches a clip of them in both formats.
//!
//! Invariants:
//! - nothing panics, whatever the boxes, sizes, offsets and times;
//! - every sample read lies inside the file, inside its fragment's mdat;
//! - every file range of a plan lies inside the file, the plan's length is the sum of its
//!   pieces, and any byte range of it is exactly as long as asked.

use std::path::PathBuf;

use crate::recording::files::{read_init, scan};
use crate::recording::playback::{fmp4, mp4, read_moov, Clip, Piece, Plan, Run};

fn scratch() -> PathBuf {
    std::env::temp_dir().join(format!("livelens-fuzz-segment-{}.mp4", std::process::id()))
}

/// Deletes the scratch file (the test calls it when done).
pub fn remove_scratch() {
    let _ = std::fs::remove_file(scratch());
}

fn check_plan(plan: &Plan, file_len: u64) {
    let mut sum = 0;
    for piece in &plan.pieces {
        sum += match piece {
            Piece::Bytes(b) => b.len() as u64,
            Piece::File { offset, len, .. } => {
                assert!(
                    offset + len <= file_len,
                    "a range past the file: {offset}+{len} > {file_len}"
                );
                *len
            }
        };
    }
    assert_eq!(sum, plan.len);
    let (from, to) = (plan.len / 3, plan.len - plan.len / 4);
    let got: u64 = plan
        .range(from, to)
        .iter()
        .map(|p| match p {
            Piece::Bytes(b) => b.len() as u64,
            Piece::File { len, .. } => *len,
        })
        .sum();
    assert_eq!(got, to - from);
}

pub fn check(data: &[u8]) {
    let path = scratch();
    std::fs::write(&path, data).expect("scratch file");
    let len = data.len() as u64;
    let Ok(init) = read_init(&path) else {
        return;
    };
    let from = init.len() as u64;
    let Ok(scanned) = scan(&path, from, |_| false) else {
        return;
    };
    for s in &scanned.samples {
        assert!(
            s.offset >= from && s.offset + u64::from(s.size) <= len,
            "{s:?}"
        );
    }
    assert!(scanned.end <= len);
    let Ok(moov) = read_moov(&init) else {
        return;
    };
    let clip = Clip {
        moov,
        runs: vec![Run {
            file: 0,
            anchor_us: 1_000_000,
            samples: scanned.samples,
        }],
        start_us: 1_500_000,
        end_us: 4_000_000,
    };
    for plan in [fmp4(&clip), mp4(&clip)].into_iter().flatten() {
        check_plan(&plan, len);
    }
}
