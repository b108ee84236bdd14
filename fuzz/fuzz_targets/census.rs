#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| herd_fuzz::census(data));
