//! Fuzz target `rtsp_request`: the input format and invariants are on
//! `livelens::fuzzing::rtsp_request` (src/fuzzing/rtsp_request.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| livelens::fuzzing::rtsp_request::check(data));
