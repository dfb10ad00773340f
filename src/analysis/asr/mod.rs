//! Speech-to-text on the cameras' audio: decode ([`audio`]) → 16 kHz mono → voice activity
//! detection and segmentation ([`vad`]) → one WAV per segment to any OpenAI-compatible
//! `/v1/audio/transcriptions` endpoint (or a `worker:NAME`) → `transcript` events.
//!
//! One request in flight per camera; segments cut while the model is busy are dropped and
//! counted (`asr_dropped`), never queued.

pub mod vad;

use crate::media::audio::{self, AudioDecoder, Resampler};
use crate::media::AudioCodec;
use vad::{Segment, Vad, VadConfig};

pub use crate::config::analysis::AsrConfig;

impl AsrConfig {
    /// The voice-activity settings.
    pub fn vad(&self) -> VadConfig {
        let d = VadConfig::default();
        let duration = crate::common::parse_duration;
        VadConfig {
            threshold_db: self.threshold,
            min_speech: duration(&self.min_speech).unwrap_or(d.min_speech),
            min_silence: duration(&self.min_silence).unwrap_or(d.min_silence),
            max_segment: duration(&self.max_segment).unwrap_or(d.max_segment),
            pad: duration(&self.pad).unwrap_or(d.pad),
        }
    }
}

/// Camera audio → speech segments.
pub struct Pipeline {
    codec: AudioCodec,
    decoder: AudioDecoder,
    resampler: Resampler,
    vad: Vad,
    decoded: Vec<f32>,
    resampled: Vec<f32>,
    pcm: Vec<i16>,
    /// Frames in a row that did not decode.
    failed_in_a_row: u32,
    /// A decode error was reported and no frame has decoded since.
    failure_reported: bool,
}

/// A single bad frame (a reconnect, a lost packet) is no error; this many in a row is.
pub const FAILED_FRAMES_ERROR: u32 = 50;

/// What speech segments are sent at.
pub const SPEECH_RATE: u32 = vad::RATE;

impl Pipeline {
    pub fn new(codec: &AudioCodec, config: &AsrConfig) -> Result<Pipeline, String> {
        let decoder = AudioDecoder::new(codec)?;
        Ok(Pipeline {
            codec: codec.clone(),
            resampler: Resampler::new(decoder.rate(codec), SPEECH_RATE),
            decoder,
            vad: Vad::new(config.vad()),
            decoded: Vec::new(),
            resampled: Vec::new(),
            pcm: Vec::new(),
            failed_in_a_row: 0,
            failure_reported: false,
        })
    }

    pub fn codec(&self) -> &AudioCodec {
        &self.codec
    }

    /// True once, when audio decodes again after a reported decode error.
    pub fn take_recovered(&mut self) -> bool {
        let recovered = self.failure_reported && self.failed_in_a_row == 0;
        if recovered {
            self.failure_reported = false;
        }
        recovered
    }

    /// Feeds one audio frame; returns the segments it completed. An error is the camera's
    /// audio failing: [`FAILED_FRAMES_ERROR`] frames in a row that did not decode.
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<Segment>, String> {
        self.decoded.clear();
        if let Err(e) = self.decoder.decode(data, &mut self.decoded) {
            self.failed_in_a_row += 1;
            if self.failed_in_a_row == FAILED_FRAMES_ERROR {
                self.failure_reported = true;
                return Err(format!(
                    "{FAILED_FRAMES_ERROR} audio frames in a row did not decode: {e}"
                ));
            }
            return Ok(Vec::new());
        }
        self.failed_in_a_row = 0;
        self.resampled.clear();
        self.resampler.push(&self.decoded, &mut self.resampled);
        self.pcm.clear();
        audio::to_i16(&self.resampled, &mut self.pcm);
        self.vad.push(&self.pcm);
        Ok(std::iter::from_fn(|| self.vad.pull()).collect())
    }
}

/// Sends one segment; returns the recognised text (possibly empty).
pub async fn transcribe(
    http: &reqwest::Client,
    base: &str,
    config: &AsrConfig,
    wav: Vec<u8>,
) -> Result<String, String> {
    let url = format!("{}/audio/transcriptions", base.trim_end_matches('/'));
    let file = reqwest::multipart::Part::bytes(wav)
        .file_name("segment.wav")
        .mime_str("audio/wav")
        .map_err(|e| e.to_string())?;
    let mut form = reqwest::multipart::Form::new()
        .part("file", file)
        .text("model", config.model.clone())
        .text("response_format", "json");
    if let Some(language) = &config.language {
        form = form.text("language", language.clone());
    }
    let mut request = http.post(&url).multipart(form);
    if let Some(key) = &config.api_key {
        request = request.bearer_auth(key);
    }
    let body = super::http::call(request, &url, config.timeout()).await?;
    let v: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| format!("the transcription server answered with invalid JSON: {e}"))?;
    v["text"]
        .as_str()
        .map(|t| t.trim().to_string())
        .ok_or_else(|| "the transcription answer has no text field".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_that_keeps_failing_to_decode_is_an_error_once_and_a_bad_frame_is_not() {
        let opus = AudioCodec {
            codec: "opus",
            rfc6381: None,
            sample_rate: 48_000,
            channels: 1,
            extra_data: bytes::Bytes::new(),
        };
        let config: AsrConfig =
            serde_json::from_value(serde_json::json!({"endpoint": "http://x/v1", "model": "m"}))
                .unwrap();
        let mut p = Pipeline::new(&opus, &config).unwrap();
        let garbage = [0x03, 0xff];
        let mut errors = Vec::new();
        for _ in 0..(FAILED_FRAMES_ERROR * 2) {
            if let Err(e) = p.push(&garbage) {
                errors.push(e);
            }
        }
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("did not decode: Opus decode: invalid packet"),
            "{}",
            errors[0]
        );
        assert!(!p.take_recovered(), "still failing");
        // A good frame resets the run (and is the recovery, said once): the next bad frames are
        // no error until there are 50 again.
        let mut encoder = crate::media::opus::Encoder::new(32_000).unwrap();
        let good = encoder.encode(&[0.0; 960]).unwrap().to_vec();
        p.push(&good).unwrap();
        assert!(p.take_recovered());
        assert!(!p.take_recovered());
        for _ in 0..FAILED_FRAMES_ERROR - 1 {
            p.push(&garbage).unwrap();
        }
    }
}
