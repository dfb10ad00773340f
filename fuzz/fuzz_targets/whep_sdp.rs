//! Fuzz target `whep_sdp`: the input format and invariants are on `livelens::fuzzing::whep_sdp`
//! (src/fuzzing/whep_sdp.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| livelens::fuzzing::whep_sdp::check(data));
