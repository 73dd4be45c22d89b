#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| walstream::fuzzing::follow_assemble(data));
