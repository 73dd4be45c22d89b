#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| walconn::fuzzing::cert_walk(data));
