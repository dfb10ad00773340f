//! A sans-IO RTP depacketizer for H.264 (RFC 6184) and H.265 (RFC 7798): RTP payloads in,
//! access units (lists of NAL units) out.
//!
//! retina depacketizes video itself, but only inside its demuxer, which refuses sessions that
//! carry a track it cannot depacketize (Opus). Cameras with Opus audio are read from raw packets,
//! and their video goes through this.
//!
//! Usage: after every [`push`](VideoDepacketizer::push), call [`pull`](VideoDepacketizer::pull)
//! until it returns `None`. After packet loss, access units are dropped until the next keyframe,
//! so a decoder never sees a broken reference chain.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoKind {
    H264,
    H265,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessUnit {
    /// RTP timestamp in the 90 kHz clock, as the caller passed it.
    pub timestamp: i64,
    pub nals: Vec<Bytes>,
    pub keyframe: bool,
}

pub struct VideoDepacketizer {
    kind: VideoKind,
    nals: Vec<Bytes>,
    timestamp: Option<i64>,
    fragment: Option<BytesMut>,
    last_seq: Option<u16>,
    /// Set after loss: drop access units until one is a keyframe.
    awaiting_keyframe: bool,
    ready: VecDeque<AccessUnit>,
    /// Payload bytes taken into the access unit being built.
    pending_bytes: usize,
}

/// The most an access unit may take (far above any level's picture): a sender that never ends
/// one (no marker, one timestamp) must not grow memory without bound.
pub const MAX_ACCESS_UNIT: usize = 8 << 20;

impl VideoDepacketizer {
    pub fn new(kind: VideoKind) -> Self {
        VideoDepacketizer {
            kind,
            nals: Vec::new(),
            timestamp: None,
            fragment: None,
            last_seq: None,
            awaiting_keyframe: true,
            ready: VecDeque::new(),
            pending_bytes: 0,
        }
    }

    pub fn pull(&mut self) -> Option<AccessUnit> {
        self.ready.pop_front()
    }

    /// Feeds one RTP packet. An error describes a malformed payload; the depacketizer has then
    /// dropped the damaged access unit and goes on with the next packet.
    pub fn push(
        &mut self,
        sequence: u16,
        timestamp: i64,
        marker: bool,
        payload: &[u8],
    ) -> Result<(), String> {
        if let Some(last) = self.last_seq {
            if sequence != last.wrapping_add(1) {
                self.discard();
            }
        }
        self.last_seq = Some(sequence);
        if self.timestamp.is_some_and(|t| t != timestamp) {
            // The previous access unit ended without a marker bit.
            self.finish();
        }
        self.timestamp = Some(timestamp);
        self.pending_bytes += payload.len();
        if self.pending_bytes > MAX_ACCESS_UNIT {
            self.discard();
            return Err(format!(
                "an access unit over {MAX_ACCESS_UNIT} bytes: dropped"
            ));
        }
        if let Err(e) = self.payload(payload) {
            self.discard();
            return Err(e);
        }
        if marker {
            self.finish();
        }
        Ok(())
    }

    fn header_len(&self) -> usize {
        match self.kind {
            VideoKind::H264 => 1,
            VideoKind::H265 => 2,
        }
    }

    fn payload(&mut self, payload: &[u8]) -> Result<(), String> {
        let hl = self.header_len();
        if payload.len() < hl {
            return Err("RTP payload shorter than a NAL header".into());
        }
        let (aggregate, fragment) = match self.kind {
            VideoKind::H264 => (24, 28),
            VideoKind::H265 => (48, 49),
        };
        let t = nal_unit_type(self.kind, payload);
        if t == aggregate {
            let mut rest = &payload[hl..];
            while !rest.is_empty() {
                if rest.len() < 2 {
                    return Err("truncated aggregation packet".into());
                }
                let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
                let nal = rest.get(2..2 + len).ok_or("truncated aggregation packet")?;
                if nal.len() >= hl {
                    self.nals.push(Bytes::copy_from_slice(nal));
                }
                rest = &rest[2 + len..];
            }
        } else if t == fragment {
            let fu_header = *payload.get(hl).ok_or("fragment without FU header")?;
            let (start, end) = (fu_header & 0x80 != 0, fu_header & 0x40 != 0);
            let body = &payload[hl + 1..];
            if start {
                let mut nal = BytesMut::with_capacity(body.len() * 8);
                match self.kind {
                    VideoKind::H264 => {
                        nal.extend_from_slice(&[(payload[0] & 0xe0) | (fu_header & 0x1f)])
                    }
                    VideoKind::H265 => nal.extend_from_slice(&[
                        (payload[0] & 0x81) | ((fu_header & 0x3f) << 1),
                        payload[1],
                    ]),
                }
                nal.extend_from_slice(body);
                self.fragment = Some(nal);
            } else {
                let nal = self
                    .fragment
                    .as_mut()
                    .ok_or("fragment continuation without a start")?;
                nal.extend_from_slice(body);
            }
            if end {
                if let Some(nal) = self.fragment.take() {
                    self.nals.push(nal.freeze());
                }
            }
        } else {
            self.nals.push(Bytes::copy_from_slice(payload));
        }
        Ok(())
    }

    fn finish(&mut self) {
        self.fragment = None;
        self.pending_bytes = 0;
        let nals = std::mem::take(&mut self.nals);
        let Some(timestamp) = self.timestamp.take() else {
            return;
        };
        if nals.is_empty() {
            return;
        }
        let keyframe = nals.iter().any(|n| is_keyframe_nal(self.kind, n));
        if self.awaiting_keyframe && !keyframe {
            return;
        }
        self.awaiting_keyframe = false;
        self.ready.push_back(AccessUnit {
            timestamp,
            nals,
            keyframe,
        });
    }

    fn discard(&mut self) {
        self.pending_bytes = 0;
        self.nals.clear();
        self.fragment = None;
        self.timestamp = None;
        self.awaiting_keyframe = true;
    }
}

pub fn nal_unit_type(kind: VideoKind, nal: &[u8]) -> u8 {
    match kind {
        VideoKind::H264 => nal.first().map_or(0, |b| b & 0x1f),
        VideoKind::H265 => nal.first().map_or(0, |b| (b >> 1) & 0x3f),
    }
}

/// IDR for H.264; IRAP (BLA, IDR, CRA) for H.265.
pub fn is_keyframe_nal(kind: VideoKind, nal: &[u8]) -> bool {
    let t = nal_unit_type(kind, nal);
    match kind {
        VideoKind::H264 => t == 5,
        VideoKind::H265 => (16..=21).contains(&t),
    }
}

/// Parameter-set NAL types: SPS, PPS (and VPS for H.265), in the order a decoder wants them.
pub fn parameter_set_types(kind: VideoKind) -> &'static [u8] {
    match kind {
        VideoKind::H264 => &[7, 8],
        VideoKind::H265 => &[32, 33, 34],
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_access_unit_that_never_ends_is_dropped_at_the_cap() {
        let mut d = super::VideoDepacketizer::new(super::VideoKind::H264);
        let chunk = vec![0x7c; 60_000];
        let mut start = vec![0x7c, 0x85];
        start.extend_from_slice(&chunk);
        assert!(d.push(0, 0, false, &start).is_ok());
        let mut middle = vec![0x7c, 0x05];
        middle.extend_from_slice(&chunk);
        let mut refused = None;
        for seq in 1..200u16 {
            if let Err(e) = d.push(seq, 0, false, &middle) {
                refused = Some((seq, e));
                break;
            }
        }
        let (seq, why) = refused.expect("refused before 12 MB");
        assert!(
            usize::from(seq) * 60_000 <= super::MAX_ACCESS_UNIT + 60_000,
            "{seq}"
        );
        assert!(why.contains("over"), "{why}");
        assert_eq!(d.pending_bytes, 0, "what it held was let go");
    }

    use super::*;

    fn pull_all(d: &mut VideoDepacketizer) -> Vec<AccessUnit> {
        std::iter::from_fn(|| d.pull()).collect()
    }

    #[test]
    fn h264_single_stap_and_fu() {
        let mut d = VideoDepacketizer::new(VideoKind::H264);
        // STAP-A with SPS and PPS, then an IDR in three FU-A fragments, marker on the last.
        let stap = [24u8, 0, 3, 0x67, 1, 2, 0, 2, 0x68, 3];
        d.push(1, 0, false, &stap).unwrap();
        d.push(2, 0, false, &[0x7c, 0x85, 10, 11]).unwrap();
        d.push(3, 0, false, &[0x7c, 0x05, 12]).unwrap();
        d.push(4, 0, true, &[0x7c, 0x45, 13]).unwrap();
        let aus = pull_all(&mut d);
        assert_eq!(aus.len(), 1);
        let au = &aus[0];
        assert!(au.keyframe);
        assert_eq!(au.nals.len(), 3);
        assert_eq!(&au.nals[0][..], &[0x67, 1, 2]);
        assert_eq!(&au.nals[2][..], &[0x65, 10, 11, 12, 13]);
        // A P frame as one NAL; a timestamp change ends an access unit without a marker.
        d.push(5, 3600, false, &[0x41, 9]).unwrap();
        d.push(6, 7200, true, &[0x41, 8]).unwrap();
        let aus = pull_all(&mut d);
        assert_eq!(
            aus.iter().map(|a| a.timestamp).collect::<Vec<_>>(),
            [3600, 7200]
        );
        assert!(!aus[0].keyframe);
    }

    #[test]
    fn loss_drops_until_the_next_keyframe() {
        let mut d = VideoDepacketizer::new(VideoKind::H264);
        d.push(1, 0, true, &[0x65, 1]).unwrap();
        assert_eq!(pull_all(&mut d).len(), 1);
        d.push(3, 3600, true, &[0x41, 1]).unwrap(); // seq 2 lost
        d.push(4, 7200, true, &[0x41, 2]).unwrap();
        assert!(pull_all(&mut d).is_empty());
        d.push(5, 10800, true, &[0x65, 3]).unwrap();
        let aus = pull_all(&mut d);
        assert_eq!(aus.len(), 1);
        assert!(aus[0].keyframe);
    }

    #[test]
    fn before_the_first_keyframe_nothing_comes_out() {
        let mut d = VideoDepacketizer::new(VideoKind::H264);
        d.push(1, 0, true, &[0x41, 1]).unwrap();
        assert!(pull_all(&mut d).is_empty());
    }

    #[test]
    fn h265_fu_and_ap() {
        let mut d = VideoDepacketizer::new(VideoKind::H265);
        // AP (type 48) with VPS (32) and SPS (33), then an IDR_W_RADL (19) in two FUs (type 49).
        let ap = [96u8, 1, 0, 3, 64, 1, 7, 0, 3, 66, 1, 8];
        d.push(10, 0, false, &ap).unwrap();
        d.push(11, 0, false, &[98, 1, 0x80 | 19, 1, 2]).unwrap();
        d.push(12, 0, true, &[98, 1, 0x40 | 19, 3]).unwrap();
        let aus = pull_all(&mut d);
        assert_eq!(aus.len(), 1);
        assert!(aus[0].keyframe);
        assert_eq!(&aus[0].nals[2][..], &[38, 1, 1, 2, 3]);
        assert_eq!(nal_unit_type(VideoKind::H265, &aus[0].nals[2]), 19);
    }

    #[test]
    fn malformed_payloads_are_errors_not_panics() {
        let mut d = VideoDepacketizer::new(VideoKind::H264);
        assert!(d.push(1, 0, true, &[]).is_err());
        assert!(d.push(2, 0, true, &[24, 0, 9, 1]).is_err());
        assert!(d.push(3, 0, true, &[28]).is_err());
        assert!(d.push(4, 0, true, &[0x7c, 0x05, 1]).is_err());
        let mut d = VideoDepacketizer::new(VideoKind::H265);
        assert!(d.push(1, 0, true, &[98]).is_err());
    }
}
