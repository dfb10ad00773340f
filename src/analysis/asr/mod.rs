//! Speech-to-text on the cameras' audio (the ASR capability). What exists so far: the voice
//! activity detector and segmenter ([`vad`]); audio decoding, resampling, the transcription
//! client and the AAC→Opus transcoder are still to come.

pub mod vad;
