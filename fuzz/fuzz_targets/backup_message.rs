#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| walproto::fuzzing::backup_message(data));
