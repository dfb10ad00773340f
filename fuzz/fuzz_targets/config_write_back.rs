//! Fuzz target `config_write_back`: the input format and invariants are on `livelens::fuzzing::config_write_back`
//! (src/fuzzing/config_write_back.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| livelens::fuzzing::config_write_back::check(data));
