//! The checks behind the fuzz targets in `fuzz/` (cargo-fuzz, nightly), kept in the crate so
//! that they call its real code, private parts included, and so that the stable test suite runs
//! them too.
//!
//! One module per target: its doc says what the target feeds livelens and which invariants it
//! checks, and its `check(data)` runs them on one input, panicking when one breaks.
//! `fuzz/fuzz_targets/<target>.rs` only hands libFuzzer's inputs to
//! `livelens::fuzzing::<target>::check`. The unit tests below replay `fuzz/corpus/<target>/` and
//! `fuzz/regressions/<target>/`, then check simple mutations of those inputs for a moment.
//!
//! Compiled for tests and under `--cfg fuzzing` only (cargo-fuzz passes it to every crate).

pub mod annexb;
pub mod config_toml;
pub mod config_write_back;
pub mod cursor;
pub mod fmp4_mux;
pub mod go2rtc_message;
pub mod h264_sps;
pub mod h265_sps;
pub mod mpegts;
pub mod recording_segment;
pub mod rtmp_flv;
pub mod rtp_depacketize;
pub mod rtp_roundtrip;
pub mod rtsp_publish;
pub mod rtsp_request;
pub mod sei;
pub mod stun_route;
pub mod whep_sdp;
pub mod ws_frame;

use std::path::PathBuf;
use std::sync::OnceLock;

pub use cursor::Cursor;

/// Whether `LIVELENS_FUZZ_DEBUG` is set: checks then print what they parsed (to check seeds:
/// `LIVELENS_FUZZ_DEBUG=1 cargo +nightly fuzz run <t> corpus/<t>/<file> -j1 -- -runs=1`).
pub fn debug() -> bool {
    static DEBUG: OnceLock<bool> = OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("LIVELENS_FUZZ_DEBUG").is_some())
}

/// A scratch folder of this process for targets that write files, `livelens-fuzz-NAME-PID`:
/// in `/dev/shm` where there is one (the writes are synced, and memory makes that cheap),
/// else in the temp dir. Made if missing.
pub fn scratch_dir(name: &str) -> PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("livelens-fuzz-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// Whether `LIVELENS_FUZZ_NO_BOUNDS` is set: the SPS checks then skip their "sane picture
/// size" assertions, to look past a known finding for other crashes.
pub fn no_bounds() -> bool {
    static NO_BOUNDS: OnceLock<bool> = OnceLock::new();
    *NO_BOUNDS.get_or_init(|| std::env::var_os("LIVELENS_FUZZ_NO_BOUNDS").is_some())
}

/// What every publisher ingest (RTSP's RTP, RTMP's FLV) must hand the camera: no empty frame,
/// and video frames with a description whose data is whole 4-byte length-prefixed NAL units.
pub fn assert_published_frames(frames: &[crate::media::Frame]) {
    for f in frames {
        assert!(!f.data.is_empty(), "an empty frame");
        if f.is_video() {
            assert!(
                f.video_codec.is_some(),
                "a video frame without a description"
            );
            let mut at = 0;
            while at < f.data.len() {
                assert!(at + 4 <= f.data.len(), "a NAL length cut short");
                let len = u32::from_be_bytes(f.data[at..at + 4].try_into().unwrap()) as usize;
                assert!(at + 4 + len <= f.data.len(), "a NAL unit past the frame");
                at += 4 + len;
            }
        }
    }
}

/// Every target over its seeds and regressions, then a short deterministic mutation run: not
/// coverage-guided like libFuzzer, but it runs each check on a few thousand inputs near the
/// seeds in every `cargo test`.
///
/// A failure names the target, the file or the mutation (seed and iteration) and the input in
/// hex. `LIVELENS_FUZZ_MS` sets the mutation time per target (default 250 ms),
/// `LIVELENS_FUZZ_SEED` the seed (default: one per target). Note that `cargo test --release`
/// has no overflow checks: arithmetic overflow panics only in a debug build
/// (`cargo test --lib fuzzing`) or under cargo-fuzz.
#[cfg(test)]
mod tests {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant};

    /// How long each target checks mutated inputs, unless `LIVELENS_FUZZ_MS` says otherwise.
    const MUTATE_MS: u64 = 250;
    /// Mutated inputs each target checks however slow the machine (or short the time).
    const MIN_RUNS: u64 = 100;
    /// The longest mutated input (or twice the longest seed, if that is more).
    const MAX_LEN: usize = 4096;

    /// xorshift64* (Vigna): small, fast, and the same sequence on every machine.
    struct Rng(u64);

    impl Rng {
        fn new(seed: u64) -> Rng {
            Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
        }

        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        /// A number in `0..n` (0 when `n` is 0).
        fn below(&mut self, n: usize) -> usize {
            if n == 0 {
                0
            } else {
                (self.next() % n as u64) as usize
            }
        }
    }

    /// Values that often sit at a parser's edges, for single bytes and big-endian words.
    const INTERESTING_8: [u8; 6] = [0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff];
    const INTERESTING_32: [u32; 8] = [
        0,
        0xffff,
        0x8000,
        0x7fff,
        0x7fff_ffff,
        0x8000_0000,
        0xffff_ffff,
        0x0001_0000,
    ];

    /// One mutation of `input`; `other` is another input to splice with.
    fn mutate_once(rng: &mut Rng, input: &mut Vec<u8>, other: &[u8]) {
        let len = input.len();
        match rng.below(10) {
            0 if len > 0 => {
                let at = rng.below(len);
                input[at] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let at = rng.below(len);
                input[at] = INTERESTING_8[rng.below(INTERESTING_8.len())];
            }
            2 if len > 0 => {
                let at = rng.below(len);
                input[at] = rng.next() as u8;
            }
            3 if len > 0 => {
                let at = rng.below(len);
                input[at] = input[at].wrapping_add(rng.below(33) as u8).wrapping_sub(16);
            }
            4 if len > 0 => {
                // A big-endian word (2 or 4 bytes) set to an edge value: most length fields.
                let word = INTERESTING_32[rng.below(INTERESTING_32.len())].to_be_bytes();
                let word = if rng.below(2) == 0 {
                    &word[2..]
                } else {
                    &word[..]
                };
                let at = rng.below(len);
                let n = word.len().min(len - at);
                input[at..at + n].copy_from_slice(&word[..n]);
            }
            5 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                input.splice(at..at, bytes);
            }
            6 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(64));
                input.drain(at..at + n);
            }
            7 if len > 0 => {
                // A range copied elsewhere (repeated packets, NALs, boxes…).
                let from = rng.below(len);
                let n = 1 + rng.below((len - from).min(256));
                let copy = input[from..from + n].to_vec();
                let at = rng.below(len + 1);
                input.splice(at..at, copy);
            }
            8 => {
                // The head of this input, the tail of another.
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                input.truncate(cut);
                input.extend_from_slice(&other[from..]);
            }
            _ if len > 0 => input.truncate(rng.below(len)),
            _ => input.push(rng.next() as u8),
        }
    }

    /// The files of `dir`, sorted by name, with their bytes.
    fn files(dir: &Path) -> std::io::Result<Vec<(PathBuf, Vec<u8>)>> {
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_file() {
                paths.push(path);
            }
        }
        paths.sort();
        paths
            .into_iter()
            .map(|p| std::fs::read(&p).map(|data| (p, data)))
            .collect()
    }

    fn hex(data: &[u8]) -> String {
        data.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Runs `check` on `data`; a panic becomes its message.
    fn attempt(check: fn(&[u8]), data: &[u8]) -> Result<(), String> {
        catch_unwind(AssertUnwindSafe(|| check(data))).map_err(|payload| {
            if let Some(s) = payload.downcast_ref::<&str>() {
                s.to_string()
            } else if let Some(s) = payload.downcast_ref::<String>() {
                s.clone()
            } else {
                "a panic without a message".to_string()
            }
        })
    }

    fn env_u64(name: &str) -> Option<u64> {
        let v = std::env::var(name).ok()?;
        let v = v.trim();
        let parsed = match v.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => v.parse(),
        };
        Some(parsed.unwrap_or_else(|_| panic!("{name}={v} is not a number")))
    }

    /// FNV-1a of the target's name: each target its own, fixed, seed.
    fn default_seed(target: &str) -> u64 {
        target.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    }

    fn run(target: &str, check: fn(&[u8])) {
        let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let corpus_dir = fuzz.join("corpus").join(target);
        let corpus = files(&corpus_dir)
            .unwrap_or_else(|e| panic!("{target}: cannot read {}: {e}", corpus_dir.display()));
        assert!(
            !corpus.is_empty(),
            "{target}: no seeds in {}",
            corpus_dir.display()
        );
        let regressions_dir = fuzz.join("regressions").join(target);
        let regressions = if regressions_dir.exists() {
            files(&regressions_dir).unwrap_or_else(|e| {
                panic!("{target}: cannot read {}: {e}", regressions_dir.display())
            })
        } else {
            Vec::new()
        };
        for (path, data) in corpus.iter().chain(&regressions) {
            if let Err(message) = attempt(check, data) {
                panic!(
                    "{target}: {} fails: {message}\ninput ({} bytes): {}",
                    path.display(),
                    data.len(),
                    hex(data)
                );
            }
        }

        let seed = env_u64("LIVELENS_FUZZ_SEED").unwrap_or_else(|| default_seed(target));
        let time = Duration::from_millis(env_u64("LIVELENS_FUZZ_MS").unwrap_or(MUTATE_MS));
        let mut rng = Rng::new(seed);
        let mut pool: Vec<Vec<u8>> = corpus.into_iter().chain(regressions).map(|f| f.1).collect();
        let seeds = pool.len();
        let longest = pool.iter().map(Vec::len).max().unwrap_or(0);
        let max_len = MAX_LEN.max(2 * longest);
        let start = Instant::now();
        let mut runs: u64 = 0;
        while runs < MIN_RUNS || start.elapsed() < time {
            let mut input = pool[rng.below(pool.len())].clone();
            for _ in 0..1 + rng.below(4) {
                let other = &pool[rng.below(pool.len())];
                mutate_once(&mut rng, &mut input, other);
            }
            input.truncate(max_len);
            if let Err(message) = attempt(check, &input) {
                panic!(
                    "{target}: mutated input {runs} (LIVELENS_FUZZ_SEED={seed:#x}) fails: \
                     {message}\ninput ({} bytes): {}",
                    input.len(),
                    hex(&input)
                );
            }
            // Some mutants become bases for more mutation (further from the seeds); the seeds
            // themselves always stay.
            if rng.below(4) == 0 {
                if pool.len() < seeds + 64 {
                    pool.push(input);
                } else {
                    let slot = seeds + rng.below(64);
                    pool[slot] = input;
                }
            }
            runs += 1;
        }
        eprintln!(
            "{target}: {seeds} seeds and regressions, {runs} mutated inputs in {:?}",
            start.elapsed()
        );
    }

    macro_rules! targets {
        ($($target:ident),* $(,)?) => {
            $(
                #[test]
                fn $target() {
                    run(stringify!($target), super::$target::check);
                }
            )*
        };
    }

    targets!(
        annexb,
        fmp4_mux,
        go2rtc_message,
        h264_sps,
        h265_sps,
        mpegts,
        rtp_depacketize,
        rtp_roundtrip,
        rtmp_flv,
        rtsp_publish,
        rtsp_request,
        sei,
        stun_route,
        whep_sdp,
        ws_frame,
    );

    #[test]
    fn recording_segment() {
        run("recording_segment", super::recording_segment::check);
        super::recording_segment::remove_scratch();
    }

    #[test]
    fn config_toml() {
        run("config_toml", super::config_toml::check);
        super::config_toml::remove_scratch();
    }

    /// The write-back property over many generated configs and change sequences, besides the
    /// seeds and their mutations: random inputs long enough for several changes each.
    #[test]
    fn config_write_back() {
        run("config_write_back", super::config_write_back::check);
        let runs = env_u64("LIVELENS_WRITE_BACK_RUNS").unwrap_or(1500);
        let mut rng = Rng::new(env_u64("LIVELENS_FUZZ_SEED").unwrap_or(7));
        let before = super::config_write_back::CHECKED.load(std::sync::atomic::Ordering::Relaxed);
        for i in 0..runs {
            let len = 32 + rng.below(224);
            let input: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if let Err(message) = attempt(super::config_write_back::check, &input) {
                panic!(
                    "config_write_back: random input {i} fails: {message}\ninput: {}",
                    hex(&input)
                );
            }
        }
        let checked =
            super::config_write_back::CHECKED.load(std::sync::atomic::Ordering::Relaxed) - before;
        eprintln!("config_write_back: {checked} changes written back and checked in {runs} runs");
        assert!(
            checked as u64 >= runs,
            "only {checked} changes reached the write-back in {runs} runs"
        );
        super::config_write_back::remove_scratch();
    }

    #[test]
    fn every_target_has_a_test() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
        let mut names: Vec<String> = files(&dir)
            .expect("fuzz/fuzz_targets")
            .into_iter()
            .filter_map(|(p, _)| Some(p.file_stem()?.to_str()?.to_string()))
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "annexb",
                "config_toml",
                "config_write_back",
                "fmp4_mux",
                "go2rtc_message",
                "h264_sps",
                "h265_sps",
                "mpegts",
                "recording_segment",
                "rtmp_flv",
                "rtp_depacketize",
                "rtp_roundtrip",
                "rtsp_publish",
                "rtsp_request",
                "sei",
                "stun_route",
                "whep_sdp",
                "ws_frame"
            ],
            "a fuzz target without its test here (or the other way round)"
        );
    }
}
