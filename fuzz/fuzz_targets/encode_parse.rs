#![no_main]
libfuzzer_sys::fuzz_target!(
    |case: walproto::fuzzing::Case| case.with_sample(walproto::fuzzing::encode_parse)
);
