#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| walstream::fuzzing::backup_manifest(data));
