//! Fuzz target `h264_sps`: the input format and invariants are on `livelens::fuzzing::h264_sps`
//! (src/fuzzing/h264_sps.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| livelens::fuzzing::h264_sps::check(data));
