//! Fuzz target `rtsp_publish`: the input format and invariants are on
//! `livelens::fuzzing::rtsp_publish` (src/fuzzing/rtsp_publish.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| livelens::fuzzing::rtsp_publish::check(data));
