//! Opus encode and decode, safe and owned: a thin wrapper over libopus (transpiled to Rust by
//! the `unsafe-libopus` crate, so nothing beyond cargo is needed to build it).
//!
//! Both sides work at 48 kHz mono: what WebRTC's `opus/48000/2` accepts from a camera (mono is
//! a valid Opus stream) and what the speech path resamples from.

use unsafe_libopus as unsafe_opus;

pub const RATE: u32 = 48_000;
/// 20 ms at 48 kHz: the frame size browsers expect by default.
pub const FRAME_SAMPLES: usize = 960;
/// The largest Opus frame: 120 ms at 48 kHz.
const MAX_FRAME_SAMPLES: usize = 5760;
/// Enough for one packet at any bitrate we ask for (libopus's own recommendation is 4000).
const MAX_PACKET: usize = 4000;

fn error_text(code: i32) -> String {
    match code {
        unsafe_opus::OPUS_BAD_ARG => "bad argument".into(),
        unsafe_opus::OPUS_BUFFER_TOO_SMALL => "buffer too small".into(),
        unsafe_opus::OPUS_INTERNAL_ERROR => "internal error".into(),
        unsafe_opus::OPUS_INVALID_PACKET => "invalid packet".into(),
        unsafe_opus::OPUS_UNIMPLEMENTED => "unimplemented".into(),
        unsafe_opus::OPUS_INVALID_STATE => "invalid state".into(),
        unsafe_opus::OPUS_ALLOC_FAIL => "allocation failed".into(),
        other => format!("error {other}"),
    }
}

/// A mono 48 kHz Opus encoder that takes 20 ms frames.
pub struct Encoder {
    state: *mut unsafe_opus::OpusEncoder,
    packet: Vec<u8>,
}

// SAFETY: the encoder state is plain memory owned by this value and used through `&mut self`.
unsafe impl Send for Encoder {}

impl Encoder {
    pub fn new(bitrate: i32) -> Result<Encoder, String> {
        let mut error = 0;
        // SAFETY: valid arguments; the result is checked before use and freed in Drop.
        let state = unsafe {
            unsafe_opus::opus_encoder_create(
                RATE as i32,
                1,
                unsafe_opus::OPUS_APPLICATION_AUDIO,
                &mut error,
            )
        };
        if state.is_null() || error != unsafe_opus::OPUS_OK {
            return Err(format!("Opus encoder: {}", error_text(error)));
        }
        // SAFETY: `state` is a live encoder; the request takes one i32.
        let r = unsafe {
            unsafe_opus::opus_encoder_ctl!(state, unsafe_opus::OPUS_SET_BITRATE_REQUEST, bitrate)
        };
        let encoder = Encoder {
            state,
            packet: vec![0; MAX_PACKET],
        };
        if r != unsafe_opus::OPUS_OK {
            return Err(format!("Opus bitrate {bitrate}: {}", error_text(r)));
        }
        Ok(encoder)
    }

    /// Encodes exactly [`FRAME_SAMPLES`] samples (−1..1) into one packet.
    pub fn encode(&mut self, pcm: &[f32]) -> Result<&[u8], String> {
        assert_eq!(pcm.len(), FRAME_SAMPLES, "Opus frames are 20 ms");
        // SAFETY: `pcm` holds one frame of mono samples; `packet` has `MAX_PACKET` bytes.
        let n = unsafe {
            unsafe_opus::opus_encode_float(
                self.state,
                pcm.as_ptr(),
                FRAME_SAMPLES as i32,
                self.packet.as_mut_ptr(),
                MAX_PACKET as i32,
            )
        };
        if n < 0 {
            return Err(format!("Opus encode: {}", error_text(n)));
        }
        Ok(&self.packet[..n as usize])
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        // SAFETY: created by opus_encoder_create, freed once.
        unsafe { unsafe_opus::opus_encoder_destroy(self.state) }
    }
}

/// A 48 kHz Opus decoder producing mono samples (a stereo stream is down-mixed by libopus).
pub struct Decoder {
    state: *mut unsafe_opus::OpusDecoder,
    pcm: Vec<f32>,
}

// SAFETY: as for Encoder.
unsafe impl Send for Decoder {}

impl Decoder {
    pub fn new() -> Result<Decoder, String> {
        let mut error = 0;
        // SAFETY: valid arguments; checked before use and freed in Drop.
        let state = unsafe { unsafe_opus::opus_decoder_create(RATE as i32, 1, &mut error) };
        if state.is_null() || error != unsafe_opus::OPUS_OK {
            return Err(format!("Opus decoder: {}", error_text(error)));
        }
        Ok(Decoder {
            state,
            pcm: vec![0.0; MAX_FRAME_SAMPLES],
        })
    }

    /// Decodes one packet, appending its samples (−1..1) to `out`.
    pub fn decode(&mut self, packet: &[u8], out: &mut Vec<f32>) -> Result<(), String> {
        if packet.is_empty() {
            return Err("Opus decode: empty packet".into());
        }
        // SAFETY: `packet` is a valid slice; `pcm` has room for the largest frame.
        let n = unsafe {
            unsafe_opus::opus_decode_float(
                self.state,
                packet.as_ptr(),
                packet.len() as i32,
                self.pcm.as_mut_ptr(),
                MAX_FRAME_SAMPLES as i32,
                0,
            )
        };
        if n < 0 {
            return Err(format!("Opus decode: {}", error_text(n)));
        }
        out.extend_from_slice(&self.pcm[..n as usize]);
        Ok(())
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        // SAFETY: created by opus_decoder_create, freed once.
        unsafe { unsafe_opus::opus_decoder_destroy(self.state) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(hz: f64, n: usize, offset: usize) -> Vec<f32> {
        (offset..offset + n)
            .map(|i| {
                (0.5 * (2.0 * std::f64::consts::PI * hz * i as f64 / RATE as f64).sin()) as f32
            })
            .collect()
    }

    /// Energy of `signal` at `hz` (one DFT bin), per sample.
    fn energy_at(signal: &[f32], hz: f64) -> f64 {
        let (mut re, mut im) = (0.0, 0.0);
        for (i, s) in signal.iter().enumerate() {
            let a = 2.0 * std::f64::consts::PI * hz * i as f64 / RATE as f64;
            re += *s as f64 * a.cos();
            im += *s as f64 * a.sin();
        }
        (re * re + im * im).sqrt() / signal.len() as f64
    }

    #[test]
    fn a_tone_survives_encode_and_decode() {
        let mut encoder = Encoder::new(32_000).unwrap();
        let mut decoder = Decoder::new().unwrap();
        let mut decoded = Vec::new();
        let mut bytes = 0;
        for f in 0..50 {
            let packet = encoder
                .encode(&tone(440.0, FRAME_SAMPLES, f * FRAME_SAMPLES))
                .unwrap()
                .to_vec();
            bytes += packet.len();
            decoder.decode(&packet, &mut decoded).unwrap();
        }
        assert_eq!(decoded.len(), 50 * FRAME_SAMPLES);
        // One second of 32 kb/s is about 4000 bytes.
        assert!((2000..6000).contains(&bytes), "{bytes} bytes for 1 s");
        // Past the codec's start-up, the 440 Hz bin carries the tone (amplitude 0.5 → 0.25) and a
        // far bin carries almost nothing.
        let steady = &decoded[RATE as usize / 2..];
        let at_tone = energy_at(steady, 440.0);
        let elsewhere = energy_at(steady, 3000.0);
        assert!((0.15..0.3).contains(&at_tone), "440 Hz: {at_tone}");
        assert!(elsewhere < at_tone / 50.0, "3 kHz: {elsewhere}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut decoder = Decoder::new().unwrap();
        let mut out = Vec::new();
        assert!(decoder.decode(&[], &mut out).is_err());
        // A code-3 packet claiming 63 frames in 2 bytes is invalid.
        assert!(decoder.decode(&[0x03, 0xff], &mut out).is_err());
    }
}
