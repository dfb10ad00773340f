//! Fuzz target `recording_segment`: the input format and invariants are on
//! `livelens::fuzzing::recording_segment` (src/fuzzing/recording_segment.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| livelens::fuzzing::recording_segment::check(data));
