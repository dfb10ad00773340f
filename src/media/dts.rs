//! Decode times for video that arrives with presentation times only (RTP carries PTS), sans-IO.
//!
//! With B-frames, pictures arrive in decode order but their PTS are not in order
//! (`0 3 1 2 6 4 5 …`); giving each DTS = PTS makes fMP4 decode times go backwards, which
//! ISO BMFF forbids (hls.js froze on it). A stream whose reorder depth is `k` (no picture is
//! preceded in decode order by more than `k` pictures it precedes in presentation order) has
//! every picture of presentation rank `r` arrive at decode rank ≤ `r + k`. So when picture `n`
//! arrives, every picture of presentation rank ≤ `n − k` has arrived, and the `(n − k)`-th
//! smallest PTS is known: that is its DTS. It never decreases, never exceeds the picture's own
//! PTS, and needs no look-ahead (no added latency) and no slice-header parsing: it holds the `k`
//! largest PTS seen and hands out the smallest of the rest.
//!
//! `k` starts from the profile (H.264 Baseline has no B-frames: 0; anything else: 2, which
//! covers the common encoders' B-frame settings and costs a stream without B-frames only a
//! composition offset of two frames) and grows when a picture shows a deeper reorder; that
//! picture and the next few (once per depth) get decode times just past the previous one, after
//! their PTS: negative composition offsets, which trun version 1 expresses.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use super::VideoCodec;

/// The deepest reorder taken into account (H.264 allows at most 16 reference frames).
const MAX_REORDER: usize = 16;
/// A PTS this far (90 kHz: 1 s) before the last decode time is a new timeline, not a reorder.
const JUMP: i64 = 90_000;

/// Decode times for one video track's pictures, in arrival (decode) order.
#[derive(Debug, Clone)]
pub struct DtsExtractor {
    reorder: usize,
    /// A frame time for the pictures before the first one whose DTS is known (90 kHz).
    step: i64,
    /// The PTS not yet handed out as a DTS (the `reorder` largest, once going).
    pending: BinaryHeap<Reverse<i64>>,
    /// The last PTS, to measure each picture's reorder depth.
    recent: VecDeque<i64>,
    last_dts: Option<i64>,
}

impl DtsExtractor {
    /// `reorder`: the depth assumed at first; `step`: a frame time, for the first pictures.
    pub fn new(reorder: usize, step: i64) -> DtsExtractor {
        DtsExtractor {
            reorder: reorder.min(MAX_REORDER),
            step: step.max(1),
            pending: BinaryHeap::new(),
            recent: VecDeque::new(),
            last_dts: None,
        }
    }

    /// An extractor for `codec`: its profile gives the depth assumed at first, its frame rate
    /// the frame time.
    pub fn for_codec(codec: &VideoCodec) -> DtsExtractor {
        // H.264 profile_idc 66 (Baseline, Constrained Baseline): no B-frames.
        let baseline = codec.codec == "h264"
            && codec
                .parameter_sets
                .first()
                .is_some_and(|sps| sps.get(1) == Some(&66));
        let step = codec
            .fps
            .filter(|f| f.is_finite() && *f > 0.0)
            .map_or(3600, |fps| (90_000.0 / fps) as i64);
        DtsExtractor::new(if baseline { 0 } else { 2 }, step)
    }

    /// The reorder depth in force.
    pub fn reorder(&self) -> usize {
        self.reorder
    }

    /// The decode time of the next picture, which presents at `pts`.
    pub fn extract(&mut self, pts: i64) -> i64 {
        if self.last_dts.is_some_and(|last| pts < last - JUMP) {
            // The source's clock went back: its pictures are a new timeline.
            let (reorder, step) = (self.reorder, self.step);
            *self = DtsExtractor::new(reorder, step);
        }
        // How many of the pictures before this one present after it.
        let depth = self.recent.iter().filter(|&&p| p > pts).count();
        let grew = depth > self.reorder;
        if grew {
            self.reorder = depth.min(MAX_REORDER);
        }
        self.recent.push_back(pts);
        if self.recent.len() > MAX_REORDER + 1 {
            self.recent.pop_front();
        }
        self.pending.push(Reverse(pts));
        let dts = if self.pending.len() > self.reorder {
            self.pending.pop().map(|Reverse(p)| p)
        } else {
            None
        };
        let dts = match (dts, self.last_dts) {
            (Some(d), Some(last)) => d.max(last + 1),
            (Some(d), None) => d,
            // Still filling: the first pictures get decode times a frame apart before the
            // first PTS; after a deeper reorder showed up, just past the last one.
            (None, None) => pts - self.reorder as i64 * self.step,
            (None, Some(last)) if grew => last + 1,
            (None, Some(last)) => (last + self.step).min(pts),
        };
        let dts = self.last_dts.map_or(dts, |last| dts.max(last + 1));
        self.last_dts = Some(dts);
        dts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// x264 `-bf 2` (High profile, 25 fps), as ffprobe lists an MP4 of it in decode order:
    /// PTS in a 12,800 Hz timescale (512 a frame), scaled here to 90 kHz (3,600 a frame).
    const X264_BF2: [i64; 30] = [
        0, 1536, 512, 1024, 3072, 2048, 2560, 4096, 3584, 5632, 4608, 5120, 7168, 6144, 6656, 8704,
        7680, 8192, 10240, 9216, 9728, 11776, 10752, 11264, 12288, 12800, 14336, 13312, 13824,
        15872,
    ];

    fn run(extractor: &mut DtsExtractor, pts: &[i64]) -> Vec<i64> {
        pts.iter().map(|&p| extractor.extract(p)).collect()
    }

    fn check(pts: &[i64], dts: &[i64]) {
        for (i, w) in dts.windows(2).enumerate() {
            assert!(w[1] > w[0], "DTS not increasing at {}: {dts:?}", i + 1);
        }
        for (p, d) in pts.iter().zip(dts) {
            assert!(d <= p, "DTS {d} after PTS {p}: {dts:?}");
        }
    }

    #[test]
    fn x264_b_frames_get_increasing_decode_times_before_their_presentation() {
        let pts: Vec<i64> = X264_BF2.iter().map(|p| p * 3600 / 512).collect();
        let mut e = DtsExtractor::new(2, 3600);
        let dts = run(&mut e, &pts);
        check(&pts, &dts);
        // From the third picture on, each decode time is a presentation time, a frame apart.
        assert_eq!(&dts[..4], &[-7200, -3600, 0, 3600]);
        assert!(dts[2..].windows(2).all(|w| w[1] - w[0] == 3600), "{dts:?}");
    }

    #[test]
    fn a_deeper_reorder_than_assumed_is_learned_once() {
        let pts: Vec<i64> = X264_BF2.iter().map(|p| p * 3600 / 512).collect();
        let mut e = DtsExtractor::new(0, 3600);
        let dts = run(&mut e, &pts);
        assert_eq!(e.reorder(), 1);
        for w in dts.windows(2) {
            assert!(w[1] > w[0], "{dts:?}");
        }
        // Only the pictures around the one that revealed the reorder decode after they present.
        let late: Vec<usize> = (0..pts.len()).filter(|&i| dts[i] > pts[i]).collect();
        assert_eq!(late, [2, 3], "{dts:?}");
    }

    #[test]
    fn without_b_frames_decode_times_follow_presentation() {
        let pts: Vec<i64> = (0..10).map(|i| 1000 + i * 3000).collect();
        let mut e = DtsExtractor::new(0, 3000);
        assert_eq!(run(&mut e, &pts), pts);
        // Assuming a reorder of 2 costs two frames of composition offset, nothing else.
        let mut e = DtsExtractor::new(2, 3000);
        let dts = run(&mut e, &pts);
        check(&pts, &dts);
        assert_eq!(&dts[2..], &pts[..8]);
    }

    #[test]
    fn a_clock_that_goes_back_starts_a_new_timeline() {
        let mut e = DtsExtractor::new(0, 3600);
        let before = run(&mut e, &[900_000, 903_600, 907_200]);
        assert_eq!(before, [900_000, 903_600, 907_200]);
        assert_eq!(run(&mut e, &[0, 3600]), [0, 3600]);
    }

    #[test]
    fn baseline_assumes_no_reorder() {
        let mut codec = VideoCodec {
            codec: "h264",
            rfc6381: "avc1.42c01e".into(),
            width: 320,
            height: 240,
            fps: Some(25.0),
            parameter_sets: vec![bytes::Bytes::from_static(&[0x67, 66, 0xc0, 0x1e])],
        };
        assert_eq!(DtsExtractor::for_codec(&codec).reorder(), 0);
        codec.parameter_sets = vec![bytes::Bytes::from_static(&[0x67, 100, 0, 0x28])];
        assert_eq!(DtsExtractor::for_codec(&codec).reorder(), 2);
    }
}
