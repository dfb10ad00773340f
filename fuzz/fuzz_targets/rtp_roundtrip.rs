//! Fuzz target `rtp_roundtrip`: the input format and invariants are on `livelens::fuzzing::rtp_roundtrip`
//! (src/fuzzing/rtp_roundtrip.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| livelens::fuzzing::rtp_roundtrip::check(data));
