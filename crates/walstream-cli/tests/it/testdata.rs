//! Recorded captures from real servers (`testdata/*.walcap`, see `testdata/README.md`) against
//! their committed expected output (`testdata/<same name>.jsonl`).
//!
//! `UPDATE_EXPECT=1 cargo test -p walstream-cli` rewrites the expected files from the current
//! output (refused under CI); review the diff like code before committing it. The captures are
//! those `testdata/README.md` lists: a missing capture or `.jsonl`, or one left over, fails
//! (`pgtest::testdata::pairs`).

use std::fs;
use std::path::Path;

use crate::support::walstream;

#[test]
fn recorded_captures_decode_to_their_expected_lines() {
    let dir = pgtest::testdata::dir();
    let update = pgtest::testdata::update_expect();
    // Every capture testdata/README.md lists, each with its `.jsonl`, and no file left over: a
    // missing capture fails here rather than leaving less to check.
    let captures = pgtest::testdata::pairs(&dir, "jsonl", update);
    let failures: Vec<String> = captures
        .iter()
        .filter_map(|(c, expected)| check(c, expected, update).err())
        .collect();
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
    assert_eq!(captures.len(), pgtest::testdata::listed_captures().len());
}

/// Decodes `capture` and compares the output with the file `expected` (or writes it).
fn check(capture: &Path, expected: &Path, update: bool) -> Result<(), String> {
    let name = capture.display();
    let run = walstream(&["decode", capture.to_str().unwrap()], b"");
    if run.code != 0 {
        return Err(format!("{name}: exit {}: {}", run.code, run.stderr));
    }
    // Whatever the expectation says, every line must be an object with a type and an LSN.
    for line in run.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if !(v["type"].is_string() && v["lsn"].is_string()) {
            return Err(format!("{name}: a line without type or lsn: {line}"));
        }
    }
    if update {
        fs::write(expected, &run.stdout).map_err(|e| format!("{}: {e}", expected.display()))?;
        return Ok(());
    }
    let want = fs::read_to_string(expected).map_err(|e| {
        format!(
            "{}: {e} (run with UPDATE_EXPECT=1 to create it)",
            expected.display()
        )
    })?;
    if run.stdout == want {
        return Ok(());
    }
    let (got_lines, want_lines): (Vec<_>, Vec<_>) =
        (run.stdout.lines().collect(), want.lines().collect());
    let at = got_lines
        .iter()
        .zip(&want_lines)
        .position(|(g, w)| g != w)
        .unwrap_or(got_lines.len().min(want_lines.len()));
    Err(format!(
        "{name}: output differs from {} at line {} ({} lines, expected {}; \
         UPDATE_EXPECT=1 rewrites it)\n  got:      {}\n  expected: {}",
        expected.display(),
        at + 1,
        got_lines.len(),
        want_lines.len(),
        got_lines.get(at).unwrap_or(&"<end>"),
        want_lines.get(at).unwrap_or(&"<end>"),
    ))
}
