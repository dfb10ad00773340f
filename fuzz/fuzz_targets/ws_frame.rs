//! Fuzz target `ws_frame`: the input format and invariants are on `livelens::fuzzing::ws_frame`
//! (src/fuzzing/ws_frame.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| livelens::fuzzing::ws_frame::check(data));
