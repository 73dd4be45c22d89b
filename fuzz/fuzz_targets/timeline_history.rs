#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| walproto::fuzzing::timeline_history(data));
