//! Voice activity detection and segmentation, sans-IO: 16 kHz mono samples in, speech segments
//! out.
//!
//! Each 20 ms frame is "voiced" when three tests agree: WebRTC's voice activity detector (the
//! `webrtc-vad` crate: libfvad, Google's GMM speech/noise classifier, built from C source) says it
//! is speech; its RMS level is `threshold` dB above the running noise floor (so `threshold` keeps
//! far-away chatter and a room's murmur out, and a constant hum raises the floor); and its
//! zero-crossing rate is in the range of voiced speech (libfvad takes loud hiss for speech). A segment
//! starts after `min_speech` of voiced frames, ends after `min_silence` of unvoiced ones (or at
//! `max_segment`), and is padded by `pad` on both sides so word edges are not clipped.

use std::collections::VecDeque;
use std::time::Duration;

pub const RATE: u32 = 16_000;
const FRAME: usize = 320; // 20 ms

#[derive(Debug, Clone, PartialEq)]
pub struct VadConfig {
    /// How far above the noise floor a frame's level must be, in dB (default 12).
    pub threshold_db: f32,
    pub min_speech: Duration,
    pub min_silence: Duration,
    pub max_segment: Duration,
    pub pad: Duration,
}

impl Default for VadConfig {
    fn default() -> Self {
        VadConfig {
            threshold_db: 12.0,
            min_speech: Duration::from_millis(200),
            min_silence: Duration::from_millis(500),
            max_segment: Duration::from_secs(15),
            pad: Duration::from_millis(200),
        }
    }
}

/// A cut segment: samples and its place in the stream (sample offsets at 16 kHz).
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub start: u64,
    pub end: u64,
    pub samples: Vec<i16>,
}

impl Segment {
    pub fn start_time(&self) -> Duration {
        Duration::from_secs_f64(self.start as f64 / RATE as f64)
    }
    pub fn end_time(&self) -> Duration {
        Duration::from_secs_f64(self.end as f64 / RATE as f64)
    }
}

/// libfvad's state: plain memory owned by this value, so it may move between threads.
struct Classifier(webrtc_vad::Vad);

// SAFETY: the fvad instance is only reached through `&mut self`, and libfvad keeps no global or
// thread-local state.
unsafe impl Send for Classifier {}

impl Classifier {
    fn new() -> Classifier {
        Classifier(webrtc_vad::Vad::new_with_rate_and_mode(
            webrtc_vad::SampleRate::Rate16kHz,
            webrtc_vad::VadMode::Aggressive,
        ))
    }

    fn is_speech(&mut self, frame: &[i16]) -> bool {
        // 20 ms at 16 kHz is a frame length libfvad accepts, so there is no error to handle.
        self.0.is_voice_segment(frame).unwrap_or(false)
    }
}

pub struct Vad {
    config: VadConfig,
    classifier: Classifier,
    pending: Vec<i16>,
    /// Samples kept before a segment for padding (and for the frames that confirm speech).
    history: VecDeque<i16>,
    /// Stream position (samples) of `history[0]`.
    history_start: u64,
    position: u64,
    noise_floor: f32,
    voiced_run: usize,
    unvoiced_run: usize,
    segment: Option<Segment>,
    ready: VecDeque<Segment>,
}

fn frames(d: Duration) -> usize {
    ((d.as_secs_f64() * RATE as f64) as usize)
        .div_ceil(FRAME)
        .max(1)
}

impl Vad {
    pub fn new(config: VadConfig) -> Vad {
        Vad {
            config,
            classifier: Classifier::new(),
            pending: Vec::new(),
            history: VecDeque::new(),
            history_start: 0,
            position: 0,
            noise_floor: 100.0,
            voiced_run: 0,
            unvoiced_run: 0,
            segment: None,
            ready: VecDeque::new(),
        }
    }

    pub fn push(&mut self, samples: &[i16]) {
        self.pending.extend_from_slice(samples);
        let whole = self.pending.len() / FRAME * FRAME;
        let taken: Vec<i16> = self.pending.drain(..whole).collect();
        for frame in taken.chunks(FRAME) {
            self.frame(frame);
        }
    }

    pub fn pull(&mut self) -> Option<Segment> {
        self.ready.pop_front()
    }

    /// End of stream: a segment in progress is complete.
    pub fn flush(&mut self) {
        if let Some(s) = self.segment.take() {
            self.ready.push_back(s);
        }
    }

    fn voiced(&mut self, frame: &[i16]) -> bool {
        let energy = frame.iter().map(|s| (*s as f32).powi(2)).sum::<f32>() / frame.len() as f32;
        let rms = energy.sqrt().max(1.0);
        let crossings = frame
            .windows(2)
            .filter(|w| (w[0] >= 0) != (w[1] >= 0))
            .count() as f32
            / frame.len() as f32;
        let above = 20.0 * (rms / self.noise_floor).log10();
        // Voiced speech (pitch ≥ ~65 Hz) crosses zero ≥ 0.008 times per sample at 16 kHz; mains
        // hum (50/60 Hz) less, and broadband hiss — which libfvad alone takes for speech — more
        // than 0.4.
        let voiced = above >= self.config.threshold_db
            && (0.008..0.4).contains(&crossings)
            && self.classifier.is_speech(frame);
        if !voiced {
            // The floor follows quiet frames: fast down, slow up.
            let a = if rms < self.noise_floor { 0.3 } else { 0.02 };
            self.noise_floor = (self.noise_floor * (1.0 - a) + rms * a).max(30.0);
        }
        voiced
    }

    fn frame(&mut self, frame: &[i16]) {
        let voiced = self.voiced(frame);
        self.history.extend(frame.iter().copied());
        let keep = (frames(self.config.pad) + frames(self.config.min_speech)) * FRAME;
        while self.history.len() > keep {
            self.history.pop_front();
            self.history_start += 1;
        }
        self.position += frame.len() as u64;
        if voiced {
            self.voiced_run += 1;
            self.unvoiced_run = 0;
        } else {
            self.unvoiced_run += 1;
            self.voiced_run = 0;
        }
        match &mut self.segment {
            None => {
                if self.voiced_run >= frames(self.config.min_speech) {
                    // Start at the first voiced frame, minus the padding.
                    let first_voiced = self.position - (self.voiced_run * FRAME) as u64;
                    let start = first_voiced
                        .saturating_sub((frames(self.config.pad) * FRAME) as u64)
                        .max(self.history_start);
                    let skip = (start - self.history_start) as usize;
                    self.segment = Some(Segment {
                        start,
                        end: self.position,
                        samples: self.history.iter().skip(skip).copied().collect(),
                    });
                }
            }
            Some(segment) => {
                segment.samples.extend_from_slice(frame);
                segment.end = self.position;
                let long = segment.samples.len() as u64
                    >= (self.config.max_segment.as_secs_f64() * RATE as f64) as u64;
                let silence =
                    self.unvoiced_run >= frames(self.config.min_silence) + frames(self.config.pad);
                if silence || long {
                    let mut done = self.segment.take().unwrap();
                    if silence {
                        // Keep `pad` of the trailing silence, drop the rest.
                        let extra = (self.unvoiced_run - frames(self.config.pad)) * FRAME;
                        let keep = done.samples.len().saturating_sub(extra);
                        done.samples.truncate(keep);
                        done.end = done.start + keep as u64;
                    }
                    self.voiced_run = 0;
                    self.ready.push_back(done);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `seconds` of a tone (speech-like zero crossings) or of quiet noise.
    fn tone(seconds: f64, hz: f64, amplitude: f64) -> Vec<i16> {
        (0..(seconds * RATE as f64) as usize)
            .map(|i| {
                (amplitude * (2.0 * std::f64::consts::PI * hz * i as f64 / RATE as f64).sin())
                    as i16
            })
            .collect()
    }

    fn quiet(seconds: f64) -> Vec<i16> {
        // Low-level deterministic noise.
        let mut x: u32 = 12345;
        (0..(seconds * RATE as f64) as usize)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                ((x % 61) as i16) - 30
            })
            .collect()
    }

    fn run(audio: &[i16], config: VadConfig) -> Vec<Segment> {
        let mut vad = Vad::new(config);
        for chunk in audio.chunks(1000) {
            vad.push(chunk);
        }
        vad.flush();
        std::iter::from_fn(|| vad.pull()).collect()
    }

    fn near(actual: Duration, expected: f64, what: &str) {
        let d = (actual.as_secs_f64() - expected).abs();
        assert!(
            d <= 0.05,
            "{what}: {actual:?}, expected {expected} s ±50 ms"
        );
    }

    #[test]
    fn tone_bursts_in_silence_give_segments_at_their_edges() {
        let config = VadConfig {
            pad: Duration::ZERO,
            ..VadConfig::default()
        };
        let mut audio = quiet(1.0);
        audio.extend(tone(1.0, 440.0, 8000.0)); // 1.0 – 2.0 s
        audio.extend(quiet(1.5));
        audio.extend(tone(0.6, 300.0, 6000.0)); // 3.5 – 4.1 s
        audio.extend(quiet(1.0));
        let segments = run(&audio, config);
        assert_eq!(
            segments.len(),
            2,
            "{:?}",
            segments
                .iter()
                .map(|s| (s.start_time(), s.end_time()))
                .collect::<Vec<_>>()
        );
        near(segments[0].start_time(), 1.0, "first start");
        near(segments[0].end_time(), 2.0, "first end");
        near(segments[1].start_time(), 3.5, "second start");
        near(segments[1].end_time(), 4.1, "second end");
        assert_eq!(
            segments[0].samples.len() as u64,
            segments[0].end - segments[0].start
        );
    }

    #[test]
    fn padding_widens_segments() {
        let mut audio = quiet(1.0);
        audio.extend(tone(1.0, 440.0, 8000.0));
        audio.extend(quiet(1.5));
        let segments = run(&audio, VadConfig::default());
        assert_eq!(segments.len(), 1);
        near(segments[0].start_time(), 0.8, "padded start");
        near(segments[0].end_time(), 2.2, "padded end");
    }

    #[test]
    fn silence_and_hum_give_nothing_and_long_speech_is_cut() {
        assert!(run(&quiet(3.0), VadConfig::default()).is_empty());
        let mut hum = quiet(0.5);
        hum.extend(tone(3.0, 50.0, 3000.0)); // mains hum
        assert!(run(&hum, VadConfig::default()).is_empty());
        // Loud hiss (a fan, rain) is far above the floor but is not speech.
        let mut hiss = quiet(0.5);
        hiss.extend(quiet(3.0).iter().map(|s| s * 200));
        assert!(
            run(&hiss, VadConfig::default()).is_empty(),
            "hiss is speech"
        );
        // A loud 200 Hz motor whine passes level and zero-crossing tests; libfvad knows it is not
        // speech.
        let mut whine = quiet(0.5);
        whine.extend(tone(3.0, 200.0, 8000.0));
        assert!(
            run(&whine, VadConfig::default()).is_empty(),
            "a whine is speech"
        );
        let config = VadConfig {
            max_segment: Duration::from_secs(2),
            pad: Duration::ZERO,
            ..VadConfig::default()
        };
        let mut long = quiet(0.5);
        long.extend(tone(5.0, 440.0, 8000.0));
        let segments = run(&long, config);
        assert!(segments.len() >= 2, "{} segments", segments.len());
        near(
            segments[0].end_time() - segments[0].start_time(),
            2.0,
            "cut length",
        );
    }
}
