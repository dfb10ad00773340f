//! A sans-IO reader of raw H.264/H.265 Annex B byte streams (what `ffmpeg -f h264 -` writes):
//! bytes in, whole access units out.
//!
//! A byte stream has no timestamps and no explicit frame ends, so an access unit is known to be
//! complete only when the next one begins: at an access unit delimiter, at parameter sets or SEI
//! after a picture, or at a slice that starts a new picture. Output is therefore one access unit
//! behind the input; [`flush`](AnnexBReader::flush) returns the last one at end of stream.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::rtp_video::{is_keyframe_nal, nal_unit_type, VideoKind};

/// A NAL unit bigger than this is corrupt input: the buffer is dropped rather than grown.
const MAX_NAL: usize = 16 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnexBUnit {
    pub nals: Vec<Bytes>,
    pub keyframe: bool,
}

pub struct AnnexBReader {
    kind: VideoKind,
    buf: BytesMut,
    /// Where to resume the search for the next start code.
    scanned: usize,
    /// Offset of the NAL that starts after the first start code in `buf`.
    nal_start: Option<usize>,
    current: Vec<Bytes>,
    current_has_picture: bool,
    ready: VecDeque<AnnexBUnit>,
}

impl AnnexBReader {
    pub fn new(kind: VideoKind) -> Self {
        AnnexBReader {
            kind,
            buf: BytesMut::new(),
            scanned: 0,
            nal_start: None,
            current: Vec::new(),
            current_has_picture: false,
            ready: VecDeque::new(),
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        let mut i = self.scanned;
        while i + 3 <= self.buf.len() {
            if self.buf[i] == 0 && self.buf[i + 1] == 0 && self.buf[i + 2] == 1 {
                if let Some(start) = self.nal_start {
                    let mut end = i;
                    while end > start && self.buf[end - 1] == 0 {
                        end -= 1; // trailing zero of a 4-byte start code
                    }
                    let chunk = self.buf.split_to(i + 3).freeze();
                    if end > start {
                        self.nal(chunk.slice(start..end));
                    }
                } else {
                    let _ = self.buf.split_to(i + 3);
                }
                self.nal_start = Some(0);
                i = 0;
            } else {
                i += 1;
            }
        }
        self.scanned = i;
        if self.buf.len() > MAX_NAL {
            self.buf.clear();
            self.scanned = 0;
            self.nal_start = None;
        }
    }

    pub fn pull(&mut self) -> Option<AnnexBUnit> {
        self.ready.pop_front()
    }

    /// End of stream: the NAL and access unit in progress are complete.
    pub fn flush(&mut self) {
        if self.nal_start.is_some() {
            let mut rest = std::mem::take(&mut self.buf).freeze();
            while rest.last() == Some(&0) {
                rest.truncate(rest.len() - 1);
            }
            if !rest.is_empty() {
                self.nal(rest);
            }
        }
        self.nal_start = None;
        self.scanned = 0;
        self.emit();
    }

    fn nal(&mut self, nal: Bytes) {
        let t = nal_unit_type(self.kind, &nal);
        let (is_vcl, starts_picture, opens_unit) = match self.kind {
            // first_mb_in_slice == 0 is ue(v) "1": the top bit of the byte after the header.
            VideoKind::H264 => (
                (1..=5).contains(&t),
                nal.get(1).is_some_and(|b| b & 0x80 != 0),
                matches!(t, 6..=9 | 14..=18),
            ),
            VideoKind::H265 => (
                t < 32,
                nal.get(2).is_some_and(|b| b & 0x80 != 0),
                matches!(t, 32..=35 | 39 | 41..=44 | 48..=55),
            ),
        };
        if self.current_has_picture && ((is_vcl && starts_picture) || opens_unit) {
            self.emit();
        }
        self.current_has_picture |= is_vcl;
        self.current.push(nal);
    }

    fn emit(&mut self) {
        if self.current.is_empty() {
            return;
        }
        let nals = std::mem::take(&mut self.current);
        let keyframe = nals.iter().any(|n| is_keyframe_nal(self.kind, n));
        if self.current_has_picture {
            self.ready.push_back(AnnexBUnit { nals, keyframe });
        }
        self.current_has_picture = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(kind: VideoKind, stream: &[u8], chunk: usize) -> Vec<AnnexBUnit> {
        let mut r = AnnexBReader::new(kind);
        let mut out = Vec::new();
        for c in stream.chunks(chunk) {
            r.push(c);
            while let Some(u) = r.pull() {
                out.push(u);
            }
        }
        r.flush();
        while let Some(u) = r.pull() {
            out.push(u);
        }
        out
    }

    #[test]
    fn groups_h264_nals_into_access_units() {
        let stream: Vec<u8> = [
            &[0, 0, 0, 1, 0x67, 1, 2][..], // SPS
            &[0, 0, 0, 1, 0x68, 3],        // PPS
            &[0, 0, 1, 0x65, 0x88, 0, 0],  // IDR, first slice (trailing zeros are trimmed)
            &[0, 0, 1, 0x65, 0x40, 9],     // IDR, second slice of the same picture
            &[0, 0, 0, 1, 0x41, 0x9a, 7],  // P, new picture
            &[0, 0, 0, 1, 0x09, 0x10],     // AUD
            &[0, 0, 0, 1, 0x41, 0x9b, 8],  // P
        ]
        .concat();
        for chunk in [1, 2, 5, stream.len()] {
            let u = units(VideoKind::H264, &stream, chunk);
            assert_eq!(u.len(), 3, "chunk {chunk}");
            assert!(u[0].keyframe && !u[1].keyframe && !u[2].keyframe);
            assert_eq!(u[0].nals.len(), 4);
            assert_eq!(&u[0].nals[2][..], &[0x65, 0x88]);
            assert_eq!(&u[1].nals[0][..], &[0x41, 0x9a, 7]);
            assert_eq!(u[2].nals.len(), 2); // AUD + P
        }
    }

    #[test]
    fn groups_h265_nals_into_access_units() {
        let stream: Vec<u8> = [
            &[0, 0, 0, 1, 0x40, 0x01, 0xaa][..], // VPS
            &[0, 0, 0, 1, 0x42, 0x01, 0xbb],     // SPS
            &[0, 0, 0, 1, 0x44, 0x01, 0xcc],     // PPS
            &[0, 0, 0, 1, 0x26, 0x01, 0x80, 1],  // IDR_W_RADL, first slice segment
            &[0, 0, 0, 1, 0x02, 0x01, 0x80, 2],  // TRAIL_R, new picture
        ]
        .concat();
        let u = units(VideoKind::H265, &stream, 3);
        assert_eq!(u.len(), 2);
        assert!(u[0].keyframe && !u[1].keyframe);
        assert_eq!(u[0].nals.len(), 4);
    }

    #[test]
    fn garbage_without_start_codes_yields_nothing() {
        assert!(units(VideoKind::H264, &[1, 2, 3, 4, 5, 6, 7], 2).is_empty());
    }
}
