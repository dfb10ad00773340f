//! Fuzz target `config_toml`: the input format and invariants are on `livelens::fuzzing::config_toml`
//! (src/fuzzing/config_toml.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| livelens::fuzzing::config_toml::check(data));
