//! Fuzz target `rtmp_flv`: the input format and invariants are on
//! `livelens::fuzzing::rtmp_flv` (src/fuzzing/rtmp_flv.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| livelens::fuzzing::rtmp_flv::check(data));
