//! Fuzz target `mpegts`: the input format and invariants are on `livelens::fuzzing::mpegts`
//! (src/fuzzing/mpegts.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| livelens::fuzzing::mpegts::check(data));
