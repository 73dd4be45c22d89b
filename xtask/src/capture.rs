//! `cargo xtask capture`: records pgoutput streams into `testdata/` (filled in below).

use crate::Result;

/// `cargo xtask capture`.
pub(crate) fn main(_args: &[String]) -> Result<()> {
    Err("capture: not written yet".into())
}
