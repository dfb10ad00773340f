//! Camera audio to PCM, sans-IO: frames in (AAC, Opus, G.711), mono samples out, a resampler
//! to the rate a consumer needs (16 kHz for speech, 48 kHz for Opus), and PCM as a WAV file.
//!
//! AAC is decoded with symphonia, Opus with libopus ([`super::opus`]); G.711 is a table lookup.
//! Resampling is a windowed-sinc low-pass interpolator (8 taps each side, Hann window), which
//! keeps speech intact and removes what would alias above the new Nyquist frequency.

use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{CodecParameters, Decoder, DecoderOptions, CODEC_TYPE_AAC};
use symphonia::core::formats::Packet;

use super::{opus, AudioCodec};

pub enum AudioDecoder {
    Aac {
        decoder: Box<dyn Decoder>,
        buffer: Option<SampleBuffer<f32>>,
        channels: usize,
    },
    Opus(opus::Decoder),
    Alaw,
    Ulaw,
}

impl AudioDecoder {
    /// A decoder for `codec`, or why there is none.
    pub fn new(codec: &AudioCodec) -> Result<AudioDecoder, String> {
        match codec.codec {
            "aac" => {
                let mut params = CodecParameters::new();
                params
                    .for_codec(CODEC_TYPE_AAC)
                    .with_sample_rate(codec.sample_rate)
                    .with_extra_data(codec.extra_data.to_vec().into_boxed_slice());
                let decoder = symphonia::default::get_codecs()
                    .make(&params, &DecoderOptions::default())
                    .map_err(|e| format!("AAC decoder: {e}"))?;
                Ok(AudioDecoder::Aac {
                    decoder,
                    buffer: None,
                    channels: codec.channels.max(1) as usize,
                })
            }
            "opus" => Ok(AudioDecoder::Opus(opus::Decoder::new()?)),
            "pcma" => Ok(AudioDecoder::Alaw),
            "pcmu" => Ok(AudioDecoder::Ulaw),
            other => Err(format!("{other} audio cannot be decoded by this build")),
        }
    }

    /// The rate of the samples [`decode`](Self::decode) produces.
    pub fn rate(&self, codec: &AudioCodec) -> u32 {
        match self {
            AudioDecoder::Opus(_) => opus::RATE,
            _ => codec.sample_rate,
        }
    }

    /// Decodes one frame to mono samples in -1..1 (appended to `out`).
    pub fn decode(&mut self, data: &[u8], out: &mut Vec<f32>) -> Result<(), String> {
        match self {
            AudioDecoder::Aac {
                decoder,
                buffer,
                channels,
            } => {
                let packet = Packet::new_from_slice(0, 0, 1024, data);
                let decoded = decoder
                    .decode(&packet)
                    .map_err(|e| format!("AAC decode: {e}"))?;
                let spec = *decoded.spec();
                let frames = decoded.capacity();
                let buf = buffer.get_or_insert_with(|| SampleBuffer::new(frames as u64, spec));
                if buf.capacity() < frames * spec.channels.count() {
                    *buf = SampleBuffer::new(frames as u64, spec);
                }
                buf.copy_interleaved_ref(decoded);
                let n = spec.channels.count().max(1);
                *channels = n;
                for chunk in buf.samples().chunks(n) {
                    out.push(chunk.iter().sum::<f32>() / n as f32);
                }
                Ok(())
            }
            AudioDecoder::Opus(decoder) => decoder.decode(data, out),
            AudioDecoder::Alaw => {
                out.extend(data.iter().map(|b| alaw(*b) as f32 / 32768.0));
                Ok(())
            }
            AudioDecoder::Ulaw => {
                out.extend(data.iter().map(|b| ulaw(*b) as f32 / 32768.0));
                Ok(())
            }
        }
    }
}

fn alaw(b: u8) -> i16 {
    let a = b ^ 0x55;
    let exponent = (a >> 4) & 0x07;
    let mantissa = (a & 0x0f) as i16;
    let magnitude = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    if a & 0x80 != 0 {
        magnitude
    } else {
        -magnitude
    }
}

fn ulaw(b: u8) -> i16 {
    let u = !b;
    let exponent = (u >> 4) & 0x07;
    let mantissa = (u & 0x0f) as i16;
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    if u & 0x80 != 0 {
        -magnitude
    } else {
        magnitude
    }
}

const TAPS: isize = 8;

/// Streaming windowed-sinc resampler from one rate to another.
pub struct Resampler {
    /// Same rate in and out: samples pass as they are.
    passthrough: bool,
    step: f64,
    cutoff: f64,
    /// Input not yet consumed, with `TAPS` samples of history before `position`.
    input: Vec<f32>,
    /// Position of the next output sample, in input samples from `input[0]`.
    position: f64,
}

impl Resampler {
    pub fn new(in_rate: u32, out_rate: u32) -> Resampler {
        let ratio = out_rate as f64 / in_rate as f64;
        Resampler {
            passthrough: in_rate == out_rate,
            step: 1.0 / ratio,
            cutoff: ratio.min(1.0) * 0.95,
            input: vec![0.0; TAPS as usize],
            position: TAPS as f64,
        }
    }

    /// Resamples `samples` (−1..1), appending the output samples (−1..1) to `out`.
    pub fn push(&mut self, samples: &[f32], out: &mut Vec<f32>) {
        if self.passthrough {
            out.extend_from_slice(samples);
            return;
        }
        self.input.extend_from_slice(samples);
        while self.position + (TAPS as f64) < self.input.len() as f64 {
            let centre = self.position.floor() as isize;
            let frac = self.position - centre as f64;
            let mut acc = 0.0f64;
            let mut norm = 0.0f64;
            for k in -TAPS + 1..=TAPS {
                let x = k as f64 - frac;
                let w = 0.5 + 0.5 * (std::f64::consts::PI * x / TAPS as f64).cos();
                let s = if x.abs() < 1e-9 {
                    1.0
                } else {
                    (std::f64::consts::PI * self.cutoff * x).sin()
                        / (std::f64::consts::PI * x)
                        / self.cutoff
                };
                let coef = s * w;
                acc += coef * self.input[(centre + k) as usize] as f64;
                norm += coef;
            }
            out.push((acc / norm).clamp(-1.0, 1.0) as f32);
            self.position += self.step;
        }
        // Keep TAPS samples of history before the next position.
        let drop = (self.position.floor() as isize - TAPS).max(0) as usize;
        self.input.drain(..drop);
        self.position -= drop as f64;
    }
}

/// Samples (−1..1) as 16-bit PCM.
pub fn to_i16(samples: &[f32], out: &mut Vec<i16>) {
    out.extend(
        samples
            .iter()
            .map(|s| (s.clamp(-1.0, 1.0) * 32767.0) as i16),
    );
}

/// Mono 16-bit PCM at `rate` as a WAV file.
pub fn wav(samples: &[i16], rate: u32) -> Vec<u8> {
    let data_len = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, hz: f64, seconds: f64) -> Vec<f32> {
        (0..(rate as f64 * seconds) as usize)
            .map(|i| 0.5 * (2.0 * std::f64::consts::PI * hz * i as f64 / rate as f64).sin() as f32)
            .collect()
    }

    const OUT_RATE: u32 = 16_000;

    fn crossings(s: &[i16]) -> usize {
        s.windows(2).filter(|w| (w[0] >= 0) != (w[1] >= 0)).count()
    }

    /// Resamples to 16 kHz in chunks, as 16-bit samples.
    fn resample(r: &mut Resampler, input: &[f32], chunk: usize) -> Vec<i16> {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        for c in input.chunks(chunk) {
            buf.clear();
            r.push(c, &mut buf);
            to_i16(&buf, &mut out);
        }
        out
    }

    #[test]
    fn the_same_rate_passes_samples_unchanged() {
        let input = tone(48_000, 440.0, 0.1);
        let mut out = Vec::new();
        Resampler::new(48_000, 48_000).push(&input, &mut out);
        assert_eq!(out, input);
    }

    #[test]
    fn resampling_keeps_speech_frequencies_and_drops_the_rest() {
        for rate in [48_000, 44_100, 8_000] {
            let mut r = Resampler::new(rate, OUT_RATE);
            let out = resample(&mut r, &tone(rate, 1000.0, 1.0), 777);
            let expected = OUT_RATE as usize;
            assert!(
                out.len().abs_diff(expected) <= 20,
                "{rate}: {} samples",
                out.len()
            );
            // 1 kHz for 1 s: ~2000 zero crossings; amplitude kept (0.5 → ~16383).
            let c = crossings(&out[100..out.len() - 100]);
            assert!((1940..=2000).contains(&c), "{rate}: {c} crossings");
            let peak = out[100..out.len() - 100]
                .iter()
                .map(|s| s.unsigned_abs())
                .max()
                .unwrap();
            assert!((15_500..=17_200).contains(&peak), "{rate}: peak {peak}");
        }
        // 12 kHz at 48 kHz is above the new Nyquist: it must not alias into the band.
        let mut r = Resampler::new(48_000, OUT_RATE);
        let out = resample(&mut r, &tone(48_000, 12_000.0, 0.5), 24_000);
        let peak = out[100..out.len() - 100]
            .iter()
            .map(|s| s.unsigned_abs())
            .max()
            .unwrap();
        assert!(peak < 1_500, "aliasing: peak {peak}");
    }

    #[test]
    fn g711_decodes_known_values() {
        assert_eq!(ulaw(0xff), 0);
        assert_eq!(ulaw(0x80), 32124);
        assert_eq!(ulaw(0x00), -32124);
        assert_eq!(alaw(0xd5), 8);
        assert_eq!(alaw(0x55), -8);
    }

    #[test]
    fn wav_header_is_16k_mono_pcm16() {
        let w = wav(&[1, -1, 300], 16_000);
        assert_eq!(&w[0..4], b"RIFF");
        assert_eq!(u32::from_le_bytes(w[24..28].try_into().unwrap()), 16_000);
        assert_eq!(u16::from_le_bytes(w[22..24].try_into().unwrap()), 1);
        assert_eq!(u32::from_le_bytes(w[40..44].try_into().unwrap()), 6);
        assert_eq!(w.len(), 50);
    }
}
