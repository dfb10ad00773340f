//! Fuzz target `rtp_depacketize`: the input format and invariants are on `livelens::fuzzing::rtp_depacketize`
//! (src/fuzzing/rtp_depacketize.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| livelens::fuzzing::rtp_depacketize::check(data));
