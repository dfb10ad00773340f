//! Fuzz target `fmp4_mux`: the input format and invariants are on `livelens::fuzzing::fmp4_mux`
//! (src/fuzzing/fmp4_mux.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| livelens::fuzzing::fmp4_mux::check(data));
