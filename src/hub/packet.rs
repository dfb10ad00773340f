//! A frame as the hub publishes it: shared by every viewer, packaged once (DESIGN principle 6).
//!
//! Muxing a frame into fMP4 (or converting it to Annex B for RTP) costs far more than sending
//! it: done once per viewer, 300 MSE viewers of a 2 Mb/s camera spent most of their CPU copying
//! the same bytes into the same boxes. A [`Packet`] carries what the stream knows about the frame's
//! place in the camera-wide timeline (sequence, duration), and slots in which an output stores
//! its packaging the first time a viewer asks for it. Every later viewer gets a reference count.
//!
//! The hub only holds the slots; what goes in them is each output's business (`output/fmp4.rs`,
//! `output/webrtc/`), so the hub does not depend on any container code.

use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::media::{Frame, TrackKind};

/// A published frame, shared (`Arc`) by every viewer and the GOP cache.
#[derive(Debug)]
pub struct Packet {
    pub frame: Frame,
    /// The frame's number in the stream (1, 2, …; never reset while the camera exists).
    pub sequence: u32,
    /// Distance to the previous frame of the same track, in the track's clock; 0 when unknown
    /// (the first frame). The best sample duration available without waiting for the next frame.
    pub duration: u32,
    /// Which bitstream the frame belongs to: it changes when the source is restarted or lost,
    /// so a viewer knows to wait for a keyframe of the new one.
    pub epoch: u32,
    fmp4: OnceLock<Result<Packaged, String>>,
    rtp: OnceLock<RtpPayloads>,
}

/// A frame's RTP payloads, in order; shared (`Arc`) so that every peer sends the same bytes.
pub type RtpPayloads = Arc<[Arc<[u8]>]>;

impl Deref for Packet {
    type Target = Frame;
    fn deref(&self) -> &Frame {
        &self.frame
    }
}

impl Packet {
    pub fn new(frame: Frame, sequence: u32, duration: u32) -> Arc<Packet> {
        Packet::in_epoch(frame, sequence, duration, 0)
    }

    pub fn in_epoch(frame: Frame, sequence: u32, duration: u32, epoch: u32) -> Arc<Packet> {
        Arc::new(Packet {
            frame,
            sequence,
            duration,
            epoch,
            fmp4: OnceLock::new(),
            rtp: OnceLock::new(),
        })
    }

    /// The frame's fMP4 fragment (moof + mdat), made by `make` for the first viewer that asks.
    pub fn fmp4(
        &self,
        make: impl FnOnce(&Packet) -> Result<Packaged, String>,
    ) -> Result<Packaged, String> {
        self.fmp4.get_or_init(|| make(self)).clone()
    }

    /// The frame's RTP payloads, made once. `Arc<[u8]>`s because that is what str0m's RTP
    /// writer takes: every peer gets reference counts, not copies.
    pub fn rtp(&self, make: impl FnOnce(&Packet) -> RtpPayloads) -> RtpPayloads {
        self.rtp.get_or_init(|| make(self)).clone()
    }
}

/// A frame's packaging as every viewer shares it, but for one big-endian number in its short
/// head that each viewer sets itself (fMP4: the decode time, so that each viewer's own timeline
/// starts at 0, which every MSE player expects). The body (the payload, the bulk of the bytes)
/// is sent as it is: a viewer costs a copy of the head and a reference count of the body.
#[derive(Debug, Clone)]
pub struct Packaged {
    pub head: Bytes,
    /// Where the per-viewer number is in `head`, and its width in bytes (4 or 8).
    pub field_at: usize,
    pub field_len: usize,
    /// The number as packaged (on the camera-wide timeline).
    pub field: u64,
    pub body: Bytes,
}

impl Packaged {
    /// The head with `value` in the per-viewer field (the packaged head when it is unchanged).
    pub fn head_with(&self, value: u64) -> Bytes {
        if value == self.field {
            return self.head.clone();
        }
        let mut head = self.head.to_vec();
        let field = &mut head[self.field_at..self.field_at + self.field_len];
        match self.field_len {
            8 => field.copy_from_slice(&value.to_be_bytes()),
            _ => field.copy_from_slice(&(value as u32).to_be_bytes()),
        }
        Bytes::from(head)
    }
}

/// Gives each published frame its sequence number and duration: the stream's timeline state.
#[derive(Debug, Default)]
pub struct Sequencer {
    sequence: u32,
    epoch: u32,
    video: TrackClock,
    audio: TrackClock,
}

#[derive(Debug, Default)]
struct TrackClock {
    last_dts: Option<i64>,
    last_duration: u32,
    /// The last intervals between frames (video), newest last.
    recent: std::collections::VecDeque<u32>,
}

/// Intervals a video frame's duration looks back over.
const RECENT_INTERVALS: usize = 8;

impl Sequencer {
    pub fn packet(&mut self, frame: Frame) -> Arc<Packet> {
        self.sequence = self.sequence.wrapping_add(1).max(1);
        let clock = match frame.track {
            TrackKind::Video => &mut self.video,
            TrackKind::Audio => &mut self.audio,
        };
        let mut duration = match clock.last_dts {
            Some(last) if frame.dts > last => (frame.dts - last).min(u32::MAX as i64) as u32,
            // Same or earlier time (a restart rebased by the timeline, a glitch): keep the pace.
            _ => clock.last_duration,
        };
        if frame.track == TrackKind::Video && clock.last_dts.is_some() {
            // The longest recent interval, not the last one: a browser's player (MSE) takes a
            // decode-time step over twice the previous picture's duration as a discontinuity
            // and drops every picture until the next keyframe. A source with uneven capture
            // times (a browser publishing over WHIP: 20 ms, then 60 ms) tripped it every few
            // pictures, and the player showed 5-8 of 25 a second.
            if clock.recent.len() == RECENT_INTERVALS {
                clock.recent.pop_front();
            }
            clock.recent.push_back(duration);
            duration = clock.recent.iter().copied().max().unwrap_or(duration);
        }
        clock.last_dts = Some(frame.dts);
        clock.last_duration = duration;
        Packet::in_epoch(frame, self.sequence, duration, self.epoch)
    }

    /// The bitstream does not continue: later packets are of a new epoch.
    pub fn discontinuity(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(track: TrackKind, dts: i64) -> Frame {
        Frame {
            track,
            pts: dts,
            dts,
            keyframe: true,
            capture_time_us: None,
            video_codec: None,
            data: Bytes::from_static(b"x"),
        }
    }

    #[test]
    fn sequence_and_durations_per_track() {
        let mut s = Sequencer::default();
        let p: Vec<_> = [
            frame(TrackKind::Video, 0),
            frame(TrackKind::Audio, 100),
            frame(TrackKind::Video, 3600),
            frame(TrackKind::Audio, 1124),
            frame(TrackKind::Video, 3600), // a repeated time keeps the last pace
        ]
        .into_iter()
        .map(|f| s.packet(f))
        .collect();
        let got: Vec<(u32, u32)> = p.iter().map(|p| (p.sequence, p.duration)).collect();
        assert_eq!(got, [(1, 0), (2, 0), (3, 3600), (4, 1024), (5, 3600)]);
    }

    #[test]
    fn uneven_pictures_last_the_longest_recent_interval() {
        let mut s = Sequencer::default();
        // 25 fps on average, captured unevenly (90 kHz): 20, 60, 20, 60 ms ...
        let mut dts = 0;
        let mut durations = Vec::new();
        for i in 0..40 {
            durations.push(s.packet(frame(TrackKind::Video, dts)).duration);
            dts += if i % 2 == 0 { 1800 } else { 5400 };
        }
        // Once both intervals were seen, no step to the next picture is over twice a picture's
        // duration (MSE's discontinuity); the last interval alone gave 20 ms, then a 60 ms step.
        for (i, d) in durations.iter().enumerate().skip(2) {
            let step = if i % 2 == 0 { 1800 } else { 5400 };
            assert!(step <= 2 * d, "picture {i}: step {step}, duration {d}");
        }
        // A steady source keeps its exact frame time.
        let mut s = Sequencer::default();
        let steady: Vec<u32> = (0..10)
            .map(|i| s.packet(frame(TrackKind::Video, i * 3600)).duration)
            .collect();
        assert!(steady[1..].iter().all(|d| *d == 3600), "{steady:?}");
    }

    #[test]
    fn packaging_is_made_once() {
        let p = Packet::new(frame(TrackKind::Video, 0), 1, 0);
        let mut calls = 0;
        let make = |_: &Packet| Packaged {
            head: Bytes::from_static(&[9, 0, 0, 0, 7, 9]),
            field_at: 1,
            field_len: 4,
            field: 7,
            body: Bytes::from_static(b"payload"),
        };
        for _ in 0..3 {
            let b = p.fmp4(|p| {
                calls += 1;
                Ok(make(p))
            });
            let b = b.unwrap();
            assert_eq!(&b.head_with(7)[..], &[9, 0, 0, 0, 7, 9]);
            assert_eq!(&b.head_with(0x0102_0304)[..], &[9, 1, 2, 3, 4, 9]);
        }
        assert_eq!(calls, 1);
        let a = p.rtp(|_| Arc::from(vec![Arc::from(&[0u8, 0, 0, 1][..])]));
        let b = p.rtp(|_| unreachable!("made once"));
        assert!(Arc::ptr_eq(&a, &b), "shared, not copied");
    }
}
