//! Fuzz target `sei`: the input format and invariants are on `livelens::fuzzing::sei`
//! (src/fuzzing/sei.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| livelens::fuzzing::sei::check(data));
