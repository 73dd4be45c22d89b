#![no_main]
libfuzzer_sys::fuzz_target!(
    |case: walproto_fuzz::Case| case.with_sample(walproto::fuzzing::encode_parse)
);
