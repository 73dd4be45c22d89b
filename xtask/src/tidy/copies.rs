//! Files kept as copies of a file outside the repository: they must not drift from it.

use std::path::Path;

/// `crates/walstream-cli/CLI.md` is the CLI's contract as the published crate ships it (and
/// as its README links it): a copy of `../shared/CLI.md`, the contract the project is built
/// against, which lives beside the repository, not in it.
const CLI_CONTRACT: &str = "crates/walstream-cli/CLI.md";

/// Where the original of [`CLI_CONTRACT`] is, relative to the workspace root.
const CLI_CONTRACT_ORIGINAL: &str = "../shared/CLI.md";

/// The copy exists, and is byte for byte the original when the original exists (a clone
/// without `../shared` checks only that the copy is there).
pub(super) fn cli_contract(root: &Path) -> Vec<String> {
    let copy = root.join(CLI_CONTRACT);
    let Ok(copied) = std::fs::read(&copy) else {
        return vec![format!(
            "{CLI_CONTRACT} is missing: copy {CLI_CONTRACT_ORIGINAL} there"
        )];
    };
    match std::fs::read(root.join(CLI_CONTRACT_ORIGINAL)) {
        Ok(original) if original != copied => vec![format!(
            "{CLI_CONTRACT} differs from {CLI_CONTRACT_ORIGINAL}: copy it again \
             (cp {CLI_CONTRACT_ORIGINAL} {CLI_CONTRACT})"
        )],
        _ => Vec::new(),
    }
}
