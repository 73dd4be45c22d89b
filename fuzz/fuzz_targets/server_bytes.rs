#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| walconn::fuzzing::server_bytes(data));
