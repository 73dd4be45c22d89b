#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| walproto::fuzzing::decoder_sequence(data));
