//! livelens: live cameras in, browsers out, models watching — one binary.
//!
//! Data flows left to right, and each module depends only on those to its left:
//! `media` → `source` → `hub` → `output` → `cameras` → `api`. Beside that flow: `common`,
//! `resources`, `demand` and `backoff` are leaves any module may use; `supervisor` (child
//! processes) sits under `source`; `config` (typed settings) under `hub`; `analysis` over `hub`;
//! `cameras` (each camera one owned unit, and the one path that changes it, reload included)
//! over `output`, `analysis` and `recording` (fMP4 segments and playback, over `output`);
//! `serve` on top.
//! `tests/layering.rs` keeps the top-level modules free of cycles. See `docs/ARCHITECTURE.md`
//! for the principles every module follows.

pub mod analysis;
pub mod api;
pub mod backoff;
pub mod cameras;
pub mod common;
pub mod config;
pub mod demand;
/// The checks behind the fuzz targets in `fuzz/` (one module per target, each with its
/// invariants), replayed over the seed corpus by the unit tests. Only in tests and in
/// `cargo fuzz` builds (`--cfg fuzzing`).
#[cfg(any(test, fuzzing))]
pub mod fuzzing;
pub mod hub;
pub mod media;
pub mod output;
pub mod recording;
pub mod resources;
pub mod serve;
pub mod source;
pub mod supervisor;
