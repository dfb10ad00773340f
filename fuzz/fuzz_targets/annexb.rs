//! Fuzz target `annexb`: the input format and invariants are on `livelens::fuzzing::annexb`
//! (src/fuzzing/annexb.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| livelens::fuzzing::annexb::check(data));
