//! The livelens capture-time SEI (`media::sei`): read from any NAL unit a camera or a
//! `testsrc://` stream sends, written by testsrc.
//!
//! Invariants:
//! - `read_capture_time` never panics on arbitrary NAL units;
//! - write → read round trip for any time and sequence (taken from the input);
//! - the written NAL is an SEI whose payload has no start code (`00 00 0x`, x ≤ 2) in it;
//! - our SEI is still found when other SEI messages (from the input) come before it.

use crate::fuzzing::{debug, Cursor};
use crate::media::h264::{add_emulation_prevention, nal_type, NAL_SEI};
use crate::media::sei::{read_capture_time, write_capture_time, CaptureTime};

/// Checks the invariants above on one input: returns when they hold, panics when one breaks.
pub fn check(data: &[u8]) {
    let got = read_capture_time(data);
    if debug() {
        eprintln!("read_capture_time = {got:?}");
    }
    if got.is_some() {
        assert_eq!(nal_type(data), NAL_SEI);
    }

    let mut c = Cursor::new(data);
    let time = CaptureTime {
        unix_us: c.i64(),
        sequence: c.u32(),
    };
    let nal = write_capture_time(time);
    assert_eq!(nal_type(&nal), NAL_SEI);
    assert!(!nal.windows(3).any(|w| w[0] == 0 && w[1] == 0 && w[2] <= 2));
    assert_eq!(read_capture_time(&nal), Some(time));

    // Other well-formed SEI messages before ours: (type, size, payload) from the input, types
    // other than user_data_unregistered so that ours is the only match.
    let mut rbsp = Vec::new();
    for _ in 0..(c.u8() % 4) {
        let kind = c.u8();
        let payload = c.chunk8();
        // 5 would be a second user_data_unregistered; 0xff needs a longer type coding; 0x80 is
        // taken by the reader as the rbsp trailing bits (type 128 is reserved in H.264).
        if kind == 5 || kind == 0xff || kind == 0x80 {
            continue;
        }
        rbsp.push(kind);
        rbsp.push(payload.len() as u8);
        if payload.len() == 0xff {
            rbsp.push(0); // 0xff-coded size: 255 + 0
        }
        rbsp.extend_from_slice(payload);
    }
    // Our message's rbsp (header byte dropped, escaping undone), after the others.
    let ours = crate::media::h264::remove_emulation_prevention(&nal[1..]);
    rbsp.extend_from_slice(&ours);
    let mut combined = vec![NAL_SEI];
    combined.extend_from_slice(&add_emulation_prevention(&rbsp));
    assert_eq!(
        read_capture_time(&combined),
        Some(time),
        "after {} other bytes",
        rbsp.len() - ours.len()
    );
}
