//! The recorded captures of `testdata/` and their expected ("golden") files, for the
//! data-driven tests that decode them: walproto's (`expected/<name>.summary`) and the CLI's
//! (`<name>.jsonl`).
//!
//! Which captures must exist is said once, in the variant table of `testdata/README.md` (a
//! variant and the majors it is recorded on): [`pairs`] checks the files against it, so a test
//! fails when a capture or an expected file is missing or left over, never passing on fewer.
//!
//! ```no_run
//! let update = pgtest::testdata::update_expect();
//! let dir = pgtest::testdata::dir();
//! for (capture, expected) in pgtest::testdata::pairs(&dir.join("expected"), "summary", update) {
//!     // ... decode `capture`, compare with `expected` or, when `update`, write it ...
//! }
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The environment variable that makes the tests rewrite the expected files: `1` rewrites,
/// unset (or empty or `0`) compares.
pub const UPDATE_VAR: &str = "UPDATE_EXPECT";

/// The extension of a capture file.
const CAPTURE_EXT: &str = "walcap";

/// The workspace's `testdata` directory.
pub fn dir() -> PathBuf {
    // This crate sits at `<workspace>/crates/pgtest`.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata");
    dir.canonicalize().unwrap_or(dir)
}

/// Whether the tests should rewrite the expected files instead of comparing with them.
///
/// # Panics
///
/// When [`UPDATE_VAR`] is set to anything but `1`, `0` or nothing (a typo must not quietly
/// compare, nor any value rewrite), and when it asks to rewrite under CI (`CI` set): there the
/// expected files are checked, never regenerated from the code they check.
#[allow(
    clippy::panic,
    reason = "test support: a request the tests cannot honour fails them"
)]
pub fn update_expect() -> bool {
    let value = std::env::var_os(UPDATE_VAR).unwrap_or_default();
    let update = match value.to_str() {
        Some("" | "0") => false,
        Some("1") => true,
        _ => panic!(
            "{UPDATE_VAR}={value:?}: set {UPDATE_VAR}=1 to rewrite the expected files, or unset \
             it to compare with them"
        ),
    };
    if update && std::env::var_os("CI").is_some() {
        panic!(
            "{UPDATE_VAR}=1 under CI (CI is set): the expected files are checked there, not \
             rewritten"
        );
    }
    update
}

/// The captures `testdata/README.md` lists, as file stems (`pg15-v1`, ...), sorted: for each
/// row of its variant table, one per major of the row's `majors` range.
///
/// # Panics
///
/// When the README cannot be read or its table has no rows.
#[allow(
    clippy::panic,
    reason = "test support: a list that cannot be read fails the test"
)]
pub fn listed_captures() -> Vec<String> {
    let path = dir().join("README.md");
    let readme =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    listed_in(&readme).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every listed capture with its expected file `<expected_dir>/<name>.<ext>`, sorted by name.
///
/// # Panics
///
/// Unless the `.walcap` files of [`dir`] and the `.<ext>` files of `expected_dir` are exactly
/// the [`listed_captures`]: a listed capture or expected file that is missing (an expected
/// file may be missing when `update`, which is about to write it), or a capture or expected
/// file that is not listed. The message names every one.
#[allow(
    clippy::panic,
    reason = "test support: a missing or orphan file fails the test"
)]
pub fn pairs(expected_dir: &Path, ext: &str, update: bool) -> Vec<(PathBuf, PathBuf)> {
    let listed: BTreeSet<String> = listed_captures().into_iter().collect();
    let testdata = dir();
    let mut problems = Vec::new();
    let mut compare = |what: &str, dir: &Path, ext: &str, may_be_missing: bool| {
        let found = stems(dir, ext);
        for name in listed.difference(&found) {
            if !may_be_missing {
                problems.push(format!(
                    "missing {what} {}",
                    dir.join(format!("{name}.{ext}")).display()
                ));
            }
        }
        for name in found.difference(&listed) {
            problems.push(format!(
                "{what} {} is not listed in testdata/README.md",
                dir.join(format!("{name}.{ext}")).display()
            ));
        }
    };
    compare("capture", &testdata, CAPTURE_EXT, false);
    compare("expected file", expected_dir, ext, update);
    if !problems.is_empty() {
        panic!(
            "testdata does not match the captures its README lists ({} of them):\n{}\n\
             (`cargo xtask capture` records captures, {UPDATE_VAR}=1 rewrites expected files)",
            listed.len(),
            problems.join("\n")
        );
    }
    listed
        .iter()
        .map(|name| {
            (
                testdata.join(format!("{name}.{CAPTURE_EXT}")),
                expected_dir.join(format!("{name}.{ext}")),
            )
        })
        .collect()
}

/// The stems of the files in `dir` that end in `.<ext>` (none when `dir` cannot be read).
fn stems(dir: &Path, ext: &str) -> BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeSet::new();
    };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_owned()))
        .collect()
}

/// The captures of a README's variant table: the table whose header starts `| variant |` and
/// has a `majors` column (`15-18` or `16`), with each variant in backquotes.
fn listed_in(readme: &str) -> Result<Vec<String>, String> {
    let mut lines = readme.lines().skip_while(|l| !l.starts_with("| variant |"));
    let header = lines
        .next()
        .ok_or("no table whose header starts `| variant |`")?;
    let majors_column = cells(header)
        .position(|c| c == "majors")
        .ok_or("the variant table has no `majors` column")?;
    let mut names = Vec::new();
    // The separator row, then the rows until the table ends.
    for row in lines.skip(1).take_while(|l| l.starts_with('|')) {
        let variant = cells(row)
            .next()
            .and_then(|c| c.strip_prefix('`')?.strip_suffix('`'))
            .ok_or_else(|| format!("a row without a `variant`: {row}"))?;
        let majors = cells(row)
            .nth(majors_column)
            .ok_or_else(|| format!("a row without majors: {row}"))?;
        let (first, last) = majors.split_once('-').unwrap_or((majors, majors));
        let range = first
            .trim()
            .parse::<u32>()
            .ok()
            .zip(last.trim().parse::<u32>().ok());
        let (first, last) = range.ok_or_else(|| format!("majors {majors:?} in: {row}"))?;
        names.extend((first..=last).map(|major| format!("pg{major}-{variant}")));
    }
    if names.is_empty() {
        return Err("the variant table lists no capture".to_owned());
    }
    names.sort();
    Ok(names)
}

/// The trimmed cells of a Markdown table row.
fn cells(row: &str) -> impl Iterator<Item = &str> {
    row.trim()
        .trim_start_matches('|')
        .trim_end_matches('|')
        .split('|')
        .map(str::trim)
}

/// A fuzz target's function, as [`fuzz_regressions`] replays it.
pub type FuzzTarget = fn(&[u8]);

/// Replays the inputs a fuzzer once crashed on, for the test of each crate that owns fuzz
/// targets: every target of `fuzz/fuzz_targets/` that takes wire bytes (`|data: &[u8]|`) and
/// calls `<krate>::fuzzing::` has a directory `testdata/malformed/<target>/` whose every file
/// goes through `replay(target)`.
///
/// # Panics
///
/// On a target without a replay or without inputs, and on a directory there that names no
/// target, so the test never passes by replaying nothing; and when a replay panics.
#[allow(
    clippy::panic,
    clippy::unwrap_used,
    reason = "test support: a missing file fails the test"
)]
pub fn fuzz_regressions(krate: &str, replay: impl Fn(&str) -> Option<FuzzTarget>) {
    let dir = self::dir().join("malformed");
    assert!(
        dir.join("README.md").is_file(),
        "{}: not the fuzz regressions directory (no README.md)",
        dir.display()
    );
    // Every target, and its one-line body.
    let mut targets: Vec<(String, String)> =
        std::fs::read_dir(self::dir().join("../fuzz/fuzz_targets"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "rs"))
            .map(|p| {
                let name = p.file_stem().unwrap().to_str().unwrap().to_owned();
                (name, std::fs::read_to_string(&p).unwrap())
            })
            .collect();
    targets.sort();
    assert!(!targets.is_empty(), "no fuzz targets in fuzz/fuzz_targets");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(
            name == "README.md" || (path.is_dir() && targets.iter().any(|(t, _)| t == name)),
            "{}: not a fuzz target",
            path.display()
        );
    }
    let call = format!("{krate}::fuzzing::");
    let mut checked = 0;
    for (target, body) in &targets {
        if !body.contains(&call) || !body.contains("&[u8]") {
            continue;
        }
        let check = replay(target)
            .unwrap_or_else(|| panic!("fuzz target {target}: no replay in {krate}'s test"));
        let inputs = dir.join(target);
        let mut replayed = 0;
        for input in
            std::fs::read_dir(&inputs).unwrap_or_else(|e| panic!("{}: {e}", inputs.display()))
        {
            let input = input.unwrap().path();
            println!("{target}: {}", input.display());
            check(&std::fs::read(&input).unwrap());
            replayed += 1;
        }
        assert!(replayed > 0, "{}: nothing to replay", inputs.display());
        checked += 1;
    }
    assert!(checked > 0, "no fuzz target calls {call}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variant_table_lists_each_variant_for_each_major_of_its_range() {
        let readme = "# Captures\n\ntext\n\n\
            | variant | proto_version | majors |\n\
            | --- | --- | --- |\n\
            | `v1` | 1 | 15-16 |\n\
            | `v4-parallel` | 4 | 17 |\n\
            \nafter the table | not | a row\n";
        assert_eq!(
            listed_in(readme).unwrap(),
            ["pg15-v1", "pg16-v1", "pg17-v4-parallel"]
        );
        assert!(listed_in("no table").is_err());
        assert!(listed_in("| variant | majors |\n| --- | --- |\n").is_err());
        assert!(listed_in("| variant | majors |\n| --- | --- |\n| `v1` | x |\n").is_err());
    }

    #[test]
    fn the_readme_lists_every_variant_on_its_majors() {
        let listed = listed_captures();
        assert!(listed.contains(&"pg15-v1".to_owned()), "{listed:?}");
        assert!(listed.contains(&"pg16-v4-parallel".to_owned()));
        assert!(!listed.contains(&"pg15-v4-parallel".to_owned()));
    }
}
