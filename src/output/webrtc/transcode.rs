//! Camera audio → Opus for WebRTC viewers of cameras whose audio a browser cannot take over
//! WebRTC (AAC; G.711 to a browser that offers no G.711). One transcoder per camera, shared by all of its WebRTC peers: the WebRTC task
//! starts it for the first peer that wants audio and stops it (and waits for it) when the last
//! such peer has gone. Each one is counted in `transcoders` while it runs.
//!
//! [`ToOpus`] is the sans-IO part (frames in, 20 ms Opus packets with 48 kHz timestamps out);
//! [`Transcoder`] is the task that feeds it from the camera and fans the packets out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::hub::Stream;
use crate::media::audio::{AudioDecoder, Resampler};
use crate::media::{opus, AudioCodec, Frame};
use crate::resources::{spawn_task, Counted, Resource, ViewerKind};

/// Opus bitrate for camera audio: clear speech and ambient sound, a small share of the video.
const BITRATE: i32 = 32_000;
/// Packets a slow peer may fall behind before it skips ahead (1.28 s).
const CHANNEL_PACKETS: usize = 64;
/// A jump of more than this between where the audio should be and where the camera says it is
/// (a reconnect, lost frames) restarts the output timeline at the camera's time.
const RESYNC_48K: i64 = opus::RATE as i64 / 2;

/// Decodes one camera's audio and re-encodes it as 48 kHz mono Opus, sans-IO.
pub struct ToOpus {
    codec: AudioCodec,
    decoder: AudioDecoder,
    resampler: Resampler,
    encoder: opus::Encoder,
    decoder_rate: u32,
    decoded: Vec<f32>,
    /// 48 kHz samples not yet encoded (less than one 20 ms frame after each push).
    pending: Vec<f32>,
    /// Timestamp (48 kHz) of the first sample in `pending`.
    pending_pts: i64,
    /// Where the next camera frame should start (48 kHz), to detect jumps.
    expected_pts: Option<i64>,
}

impl ToOpus {
    pub fn new(codec: &AudioCodec) -> Result<ToOpus, String> {
        let decoder = AudioDecoder::new(codec)?;
        let decoder_rate = decoder.rate(codec);
        Ok(ToOpus {
            codec: codec.clone(),
            resampler: Resampler::new(decoder_rate, opus::RATE),
            decoder,
            encoder: opus::Encoder::new(BITRATE)?,
            decoder_rate,
            decoded: Vec::new(),
            pending: Vec::new(),
            pending_pts: 0,
            expected_pts: None,
        })
    }

    pub fn codec(&self) -> &AudioCodec {
        &self.codec
    }

    /// Feeds one camera audio frame (`pts` in the camera's audio clock); returns the Opus
    /// packets it completed, each with its 48 kHz timestamp.
    pub fn push(&mut self, pts: i64, data: &[u8]) -> Result<Vec<(i64, Bytes)>, String> {
        let pts48 = pts * opus::RATE as i64 / self.codec.sample_rate.max(1) as i64;
        if self
            .expected_pts
            .is_none_or(|e| (e - pts48).abs() > RESYNC_48K)
        {
            self.pending.clear();
            self.pending_pts = pts48;
        }
        self.decoded.clear();
        self.decoder.decode(data, &mut self.decoded)?;
        self.expected_pts =
            Some(pts48 + self.decoded.len() as i64 * opus::RATE as i64 / self.decoder_rate as i64);
        self.resampler.push(&self.decoded, &mut self.pending);
        let mut packets = Vec::new();
        let mut used = 0;
        while self.pending.len() - used >= opus::FRAME_SAMPLES {
            let frame = &self.pending[used..used + opus::FRAME_SAMPLES];
            let packet = Bytes::copy_from_slice(self.encoder.encode(frame)?);
            packets.push((self.pending_pts, packet));
            self.pending_pts += opus::FRAME_SAMPLES as i64;
            used += opus::FRAME_SAMPLES;
        }
        self.pending.drain(..used);
        Ok(packets)
    }
}

/// One camera's AAC/G.711 → Opus transcoder task and its fan-out. Counted in `transcoders` while
/// its task runs.
pub struct Transcoder {
    packets: broadcast::Sender<Frame>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Transcoder {
    pub fn start(camera: Arc<Stream>) -> Transcoder {
        let (packets, _) = broadcast::channel(CHANNEL_PACKETS);
        let cancel = CancellationToken::new();
        let running = run(camera, packets.clone(), cancel.clone());
        let task = spawn_task(async move {
            let _counted = Counted::new(Resource::Transcoder);
            running.await
        });
        Transcoder {
            packets,
            cancel,
            task,
        }
    }

    /// Opus frames from now on (48 kHz timestamps).
    pub fn subscribe(&self) -> broadcast::Receiver<Frame> {
        self.packets.subscribe()
    }

    /// True once the task has ended by itself (the camera's stream ended).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    pub async fn stop(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

/// The running transcoders, one per camera, shared by that camera's peers in every WebRTC
/// worker loop. Taking and releasing one never waits: a worker loop must not await (it drains
/// its own inputs). The last lease cancels the transcoder, whose task ends at once; the registry
/// keeps its handle and joins it at [`Transcoders::stop`] (or forgets it once finished).
#[derive(Default)]
pub struct Transcoders {
    inner: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    /// By camera id: the transcoder, its instance id and its number of leases.
    running: HashMap<String, (u64, Transcoder, usize)>,
    /// Cancelled, not yet joined.
    stopping: Vec<Transcoder>,
}

/// A peer's use of its camera's transcoder; dropping it releases the transcoder.
pub struct TranscoderLease {
    registry: Arc<Transcoders>,
    camera: String,
    id: u64,
}

impl Drop for TranscoderLease {
    fn drop(&mut self) {
        let mut r = self.registry.inner.lock().unwrap();
        let last = match r.running.get_mut(&self.camera) {
            Some((id, _, leases)) if *id == self.id => {
                *leases -= 1;
                *leases == 0
            }
            _ => false,
        };
        if last {
            if let Some((_, t, _)) = r.running.remove(&self.camera) {
                t.cancel.cancel();
                r.stopping.push(t);
            }
        }
    }
}

impl Transcoders {
    /// The camera's transcoded audio, starting its transcoder for the first peer.
    pub fn acquire(
        self: &Arc<Self>,
        camera: &Arc<Stream>,
    ) -> (broadcast::Receiver<Frame>, TranscoderLease) {
        let mut guard = self.inner.lock().unwrap();
        let r = &mut *guard;
        r.stopping.retain(|t| !t.is_finished());
        let id = camera.id();
        // A transcoder whose task ended (its stream stopped) is replaced.
        if r.running.get(id).is_some_and(|(_, t, _)| t.is_finished()) {
            if let Some((_, t, _)) = r.running.remove(id) {
                r.stopping.push(t);
            }
        }
        if !r.running.contains_key(id) {
            r.next_id += 1;
            let t = Transcoder::start(camera.clone());
            r.running.insert(id.to_string(), (r.next_id, t, 0));
        }
        let (instance, t, leases) = r.running.get_mut(id).expect("inserted above");
        *leases += 1;
        let lease = TranscoderLease {
            registry: self.clone(),
            camera: id.to_string(),
            id: *instance,
        };
        (t.subscribe(), lease)
    }

    /// Stops every transcoder and waits for their tasks.
    pub async fn stop(&self) {
        let all: Vec<Transcoder> = {
            let mut r = self.inner.lock().unwrap();
            let mut all: Vec<Transcoder> = r.stopping.drain(..).collect();
            all.extend(r.running.drain().map(|(_, (_, t, _))| t));
            all
        };
        for t in all {
            t.stop().await;
        }
    }
}

async fn run(camera: Arc<Stream>, packets: broadcast::Sender<Frame>, cancel: CancellationToken) {
    let Some(mut sub) = camera.subscribe(ViewerKind::Transcoder) else {
        return;
    };
    let mut state: Option<ToOpus> = None;
    let mut failed_for: Option<AudioCodec> = None;
    let mut warned = false;
    loop {
        let frame = tokio::select! {
            _ = cancel.cancelled() => return,
            f = sub.next() => match f { Ok(f) => f, Err(_) => return },
        };
        if frame.is_video() {
            continue;
        }
        let Some(codec) = camera.audio() else {
            continue;
        };
        // A camera that reconnects with other audio gets a new decoder.
        if state.as_ref().is_none_or(|s| *s.codec() != codec) {
            state = None;
            if failed_for.as_ref() == Some(&codec) {
                continue;
            }
            match ToOpus::new(&codec) {
                Ok(s) => state = Some(s),
                Err(e) => {
                    tracing::warn!(camera = camera.id(), "WebRTC audio is not sent: {e}");
                    failed_for = Some(codec);
                    continue;
                }
            }
        }
        let Some(s) = state.as_mut() else { continue };
        match s.push(frame.pts, &frame.data) {
            Ok(out) => {
                for (pts, data) in out {
                    // No receiver (between peers) is not an error.
                    let _ = packets.send(Frame::audio(pts, data));
                }
            }
            // One bad frame costs 20-odd ms of sound, not the transcoder. The first is a
            // warning (a camera whose audio never decodes must not be silent in the log too).
            Err(e) if !warned => {
                tracing::warn!(camera = camera.id(), "WebRTC audio: {e}");
                warned = true;
            }
            Err(e) => tracing::debug!(camera = camera.id(), "WebRTC audio: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// μ-law encoding of one sample (the G.711 reference algorithm), to feed the transcoder
    /// real camera-style frames without an AAC encoder.
    fn ulaw(sample: i16) -> u8 {
        let sign = if sample < 0 { 0x80 } else { 0 };
        let magnitude = (sample as i32).abs().min(32635) + 0x84;
        let exponent = (0..8)
            .rev()
            .find(|e| magnitude & (0x80 << e) != 0)
            .unwrap_or(0);
        let mantissa = (magnitude >> (exponent + 3)) & 0x0f;
        !(sign | ((exponent as u8) << 4) | mantissa as u8)
    }

    fn pcmu() -> AudioCodec {
        AudioCodec {
            codec: "pcmu",
            rfc6381: None,
            sample_rate: 8000,
            channels: 1,
            extra_data: Bytes::new(),
        }
    }

    /// 20 ms G.711 frames of a 440 Hz tone starting at `start` (8 kHz samples).
    fn tone_frames(start: usize, frames: usize) -> Vec<(i64, Vec<u8>)> {
        (0..frames)
            .map(|f| {
                let first = start + f * 160;
                let data = (first..first + 160)
                    .map(|i| {
                        let v =
                            0.5 * (2.0 * std::f64::consts::PI * 440.0 * i as f64 / 8000.0).sin();
                        ulaw((v * 32767.0) as i16)
                    })
                    .collect();
                (first as i64, data)
            })
            .collect()
    }

    #[test]
    fn camera_audio_becomes_20ms_opus_with_continuous_48k_timestamps() {
        let mut t = ToOpus::new(&pcmu()).unwrap();
        let mut packets = Vec::new();
        for (pts, data) in tone_frames(8000, 100) {
            packets.extend(t.push(pts, &data).unwrap());
        }
        // 2 s in; the resampler holds back a few samples, so at most one frame is still pending.
        assert!((99..=100).contains(&packets.len()), "{}", packets.len());
        assert_eq!(
            packets[0].0, 48_000,
            "starts at the camera's time, in 48 kHz"
        );
        for w in packets.windows(2) {
            assert_eq!(w[1].0 - w[0].0, 960);
        }
        // The packets decode to the tone.
        let mut decoder = opus::Decoder::new().unwrap();
        let mut pcm = Vec::new();
        for (_, p) in &packets {
            decoder.decode(p, &mut pcm).unwrap();
        }
        let steady = &pcm[24_000..];
        let crossings = steady
            .windows(2)
            .filter(|w| (w[0] >= 0.0) != (w[1] >= 0.0))
            .count() as f64;
        let hz = crossings / 2.0 / (steady.len() as f64 / 48_000.0);
        assert!((430.0..450.0).contains(&hz), "decoded tone at {hz} Hz");
        let peak = steady.iter().fold(0.0f32, |m, s| m.max(s.abs()));
        assert!((0.35..0.65).contains(&peak), "peak {peak}");
    }

    #[test]
    fn a_jump_in_camera_time_restarts_the_timeline_there() {
        let mut t = ToOpus::new(&pcmu()).unwrap();
        let mut last = 0;
        for (pts, data) in tone_frames(0, 50) {
            if let Some(p) = t.push(pts, &data).unwrap().last() {
                last = p.0;
            }
        }
        // The camera reconnects 10 s later.
        let mut after = Vec::new();
        for (pts, data) in tone_frames(88_000, 10) {
            after.extend(t.push(pts, &data).unwrap());
        }
        assert!(last < 48_000);
        assert_eq!(after.first().unwrap().0, 88_000 * 6);
    }

    #[test]
    fn undecodable_audio_is_an_error_per_frame() {
        let codec = AudioCodec {
            codec: "opus",
            sample_rate: 48_000,
            ..pcmu()
        };
        let mut t = ToOpus::new(&codec).unwrap();
        assert!(t.push(0, &[]).is_err());
    }
}
