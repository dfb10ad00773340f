//! The end-to-end tests: one test binary, one module per surface.
//!
//! They were 28 binaries, and each linked livelens, tokio, reqwest and str0m again: most of
//! `scripts/test`'s build time. One binary builds once; `cargo test --test e2e hls::` runs one
//! module. Each module is a file here (`tests/<module>.rs`); `common` is what they share.
//! Tests in different modules run side by side in one process, so anything a test writes goes
//! in its own `common::temp_dir`, and chromium is taken one test at a time (`common::browser`).

mod common;

mod aiortc;
mod alerts;
mod analysis;
mod api;
mod asr;
mod attacks;
mod bench_glass;
mod browser;
mod cors;
mod cycles;
mod exec;
mod hls;
mod hlsjs;
mod layering;
mod mjpeg;
mod mse;
mod package;
mod publish;
mod readme;
mod recording;
mod reload;
mod restream;
mod rtmp;
mod rtsp;
mod sync;
mod sync_tools;
mod ui;
mod vlc;
mod webrtc;
mod whip;
mod workers;
