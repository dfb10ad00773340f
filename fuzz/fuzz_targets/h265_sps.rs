//! Fuzz target `h265_sps`: the input format and invariants are on `livelens::fuzzing::h265_sps`
//! (src/fuzzing/h265_sps.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| livelens::fuzzing::h265_sps::check(data));
