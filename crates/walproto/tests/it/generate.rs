//! The property tests draw their messages from the generator the fuzz targets use
//! (`walproto::fuzzing`, feature `arbitrary`): proptest draws the bytes and `arbitrary` reads a
//! message description from them, so one description of the messages serves both. Shrinking
//! shortens and lowers the bytes, which gives smaller and simpler messages.

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use walproto::fuzzing::{Case, PgoutputCase};

/// The most bytes one case is read from: enough for a dozen columns of a few dozen bytes each,
/// few enough that checking every truncation of the message stays quick.
const MAX_INPUT: usize = 512;

/// A pgoutput message and a context it is valid under.
pub(crate) fn pgoutput() -> impl Strategy<Value = PgoutputCase> {
    proptest::collection::vec(any::<u8>(), 0..MAX_INPUT)
        .prop_filter_map("arbitrary refused the bytes", |bytes| {
            PgoutputCase::generate(&bytes)
        })
}

/// Any input of the `encode_parse` fuzz target: a pgoutput message, or a replication message
/// of either direction.
pub(crate) fn fuzz_case() -> impl Strategy<Value = Case> {
    proptest::collection::vec(any::<u8>(), 0..MAX_INPUT)
        .prop_filter_map("arbitrary refused the bytes", |bytes| {
            Case::generate(&bytes)
        })
}

/// `cases` cases, with failures persisted in the crate's `proptest-regressions/<file>`, where
/// they are committed. (proptest's default for a test binary in `tests/it/` would be a folder
/// under `tests/`.)
pub(crate) fn config(cases: u32, file: &'static str) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(file))),
        ..ProptestConfig::default()
    }
}

/// The path of `proptest-regressions/<name>.txt` in this crate, for [`config`].
macro_rules! regressions {
    ($name:literal) => {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/proptest-regressions/",
            $name,
            ".txt"
        )
    };
}
pub(crate) use regressions;
