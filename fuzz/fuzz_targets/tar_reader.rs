#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| walstream::fuzzing::tar_reader(data));
