//! The livelens capture-time SEI message.
//!
//! `testsrc://` puts one H.264 SEI NAL unit (type 6) in every access unit, holding one
//! `user_data_unregistered` message (payload type 5):
//!
//! | bytes | content                                                                  |
//! |-------|--------------------------------------------------------------------------|
//! | 16    | UUID `6c69766c-656e-732d-7469-6d652d7631` (the ASCII text `livelens-time-v1`) |
//! | 8     | capture wall-clock time, microseconds since the Unix epoch, big-endian i64 |
//! | 4     | frame sequence number since the source started, big-endian u32            |
//!
//! so any output or client can measure end-to-end latency as `now - capture_time`.

use super::h264::{add_emulation_prevention, nal_type, remove_emulation_prevention, NAL_SEI};

pub const LIVELENS_TIME_UUID: [u8; 16] = *b"livelens-time-v1";
const USER_DATA_UNREGISTERED: u32 = 5;
const PAYLOAD_LEN: usize = 16 + 8 + 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureTime {
    pub unix_us: i64,
    pub sequence: u32,
}

/// Builds the SEI NAL unit (without start code or length prefix) carrying `time`.
pub fn write_capture_time(time: CaptureTime) -> Vec<u8> {
    let mut rbsp = Vec::with_capacity(3 + PAYLOAD_LEN + 1);
    rbsp.push(USER_DATA_UNREGISTERED as u8);
    rbsp.push(PAYLOAD_LEN as u8);
    rbsp.extend_from_slice(&LIVELENS_TIME_UUID);
    rbsp.extend_from_slice(&time.unix_us.to_be_bytes());
    rbsp.extend_from_slice(&time.sequence.to_be_bytes());
    rbsp.push(0x80); // rbsp_trailing_bits
    let mut nal = vec![NAL_SEI]; // nal_ref_idc 0, type 6
    nal.extend_from_slice(&add_emulation_prevention(&rbsp));
    nal
}

/// Reads the livelens capture time from an SEI NAL unit; `None` for any other NAL or SEI.
pub fn read_capture_time(nal: &[u8]) -> Option<CaptureTime> {
    if nal_type(nal) != NAL_SEI {
        return None;
    }
    let rbsp = remove_emulation_prevention(&nal[1..]);
    let mut pos = 0;
    // An SEI NAL may hold several messages; walk them until the trailing bits.
    while pos < rbsp.len() && rbsp[pos] != 0x80 {
        let (payload_type, n) = read_ff_coded(&rbsp[pos..])?;
        pos += n;
        let (size, n) = read_ff_coded(&rbsp[pos..])?;
        pos += n;
        let payload = rbsp.get(pos..pos + size as usize)?;
        pos += size as usize;
        if payload_type == USER_DATA_UNREGISTERED
            && payload.len() == PAYLOAD_LEN
            && payload[..16] == LIVELENS_TIME_UUID
        {
            return Some(CaptureTime {
                unix_us: i64::from_be_bytes(payload[16..24].try_into().ok()?),
                sequence: u32::from_be_bytes(payload[24..28].try_into().ok()?),
            });
        }
    }
    None
}

/// SEI payload type and size are coded as a run of 0xFF bytes plus a final byte.
fn read_ff_coded(data: &[u8]) -> Option<(u32, usize)> {
    let mut value = 0u32;
    for (i, &b) in data.iter().enumerate() {
        value = value.checked_add(b as u32)?;
        if b != 0xff {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let t = CaptureTime {
            unix_us: 1_795_000_000_123_456,
            sequence: 42,
        };
        let nal = write_capture_time(t);
        assert_eq!(nal_type(&nal), NAL_SEI);
        assert_eq!(read_capture_time(&nal), Some(t));
    }

    #[test]
    fn round_trip_with_bytes_that_need_escaping() {
        // Zeros in the timestamp force emulation-prevention bytes into the NAL.
        let t = CaptureTime {
            unix_us: 0x0000_0001_0000_0000,
            sequence: 0x0000_0001,
        };
        let nal = write_capture_time(t);
        assert!(!nal.windows(3).any(|w| w == [0, 0, 1]));
        assert_eq!(read_capture_time(&nal), Some(t));
    }

    #[test]
    fn ignores_other_sei_and_garbage() {
        assert_eq!(read_capture_time(&[0x65, 1, 2, 3]), None);
        assert_eq!(read_capture_time(&[NAL_SEI, 5, 28, 1, 2]), None);
        // A recovery-point SEI (type 6) followed by ours is still found.
        let mut nal = write_capture_time(CaptureTime {
            unix_us: 7,
            sequence: 1,
        });
        nal.splice(1..1, [6u8, 1, 0x84]);
        assert_eq!(read_capture_time(&nal).map(|t| t.unix_us), Some(7));
        assert_eq!(read_capture_time(&[NAL_SEI, 0xff, 0xff]), None);
    }
}
