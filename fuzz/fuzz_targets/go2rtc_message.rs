//! Fuzz target `go2rtc_message`: the input format and invariants are on `livelens::fuzzing::go2rtc_message`
//! (src/fuzzing/go2rtc_message.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| livelens::fuzzing::go2rtc_message::check(data));
