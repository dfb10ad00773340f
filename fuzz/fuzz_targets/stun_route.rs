//! Fuzz target `stun_route`: the input format and invariants are on `livelens::fuzzing::stun_route`
//! (src/fuzzing/stun_route.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| livelens::fuzzing::stun_route::check(data));
