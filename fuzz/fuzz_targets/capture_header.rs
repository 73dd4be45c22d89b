#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| walproto::fuzzing::capture_header(data));
