//! Reading sources and manifests as text: the `*.rs` files, which of them are test-only, the
//! calls and attributes the rules look for, and a hand parse of Cargo manifests' tables.

use std::fs;
use std::path::{Path, PathBuf};

use crate::Result;

/// One `[table]` of a TOML file: its name and its `key = value` lines, values as written.
pub(super) struct Section {
    /// The table name, `workspace.lints.rust` for `[workspace.lints.rust]`.
    pub(super) name: String,
    /// Each key and its raw value (comments removed, whitespace trimmed).
    entries: Vec<(String, String)>,
}

impl Section {
    /// The raw value of `key`.
    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The tables of a Cargo manifest. A hand parse that is enough for the keys tidy reads: one
/// `key = value` per line; lines of multi-line arrays (which hold no `=`) are skipped. Keys
/// before the first table are in a section named `""`.
pub(super) fn toml_sections(text: &str) -> Vec<Section> {
    let mut sections = vec![Section {
        name: String::new(),
        entries: Vec::new(),
    }];
    for line in text.lines() {
        let line = strip_toml_comment(line).trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            if !name.starts_with('[') && !name.is_empty() {
                sections.push(Section {
                    name: name.trim().to_owned(),
                    entries: Vec::new(),
                });
                continue;
            }
        }
        if let (Some((key, value)), Some(section)) = (line.split_once('='), sections.last_mut()) {
            section
                .entries
                .push((key.trim().to_owned(), value.trim().to_owned()));
        }
    }
    sections
}

/// `line` without a `#` comment (a `#` inside a quoted string is kept).
fn strip_toml_comment(line: &str) -> &str {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted => return line.get(..i).unwrap_or(line),
            _ => {}
        }
    }
    line
}

/// The level of a lint entry: `"warn"` or `{ level = "warn", priority = -1 }`.
pub(super) fn lint_level(value: &str) -> String {
    let level = match value.trim().strip_prefix('{') {
        Some(table) => table
            .split(',')
            .find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                (k.trim() == "level").then_some(v)
            })
            .unwrap_or(""),
        None => value,
    };
    unquote(level)
}

/// A TOML string value without its quotes.
pub(super) fn unquote(value: &str) -> String {
    value.trim().trim_matches('"').to_owned()
}

/// `.unwrap()`, spelled so that this file's own source does not contain it.
const UNWRAP: &str = concat!(".unw", "rap()");

/// `.expect(`, spelled so that this file's own source does not contain it.
const EXPECT: &str = concat!(".exp", "ect(");

/// The 1-based lines of non-test code in `text` that call `.unwrap()` or `.expect(`, with the
/// call. Comment lines and the text after `//` are skipped, and so is everything from the
/// first `#[cfg(test)]` line on: by the project's convention tests come last in a file.
pub(super) fn unwraps(text: &str) -> Vec<(usize, &'static str)> {
    let mut found = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with(concat!("#[cfg", "(test)]")) {
            break;
        }
        let code = trimmed.split("//").next().unwrap_or("");
        for call in [UNWRAP, EXPECT] {
            if code.contains(call) {
                found.push((i + 1, call));
            }
        }
    }
    found
}

/// `text` with every line comment blanked (line numbers kept), so that prose about an
/// attribute is not taken for one.
fn without_comments(text: &str) -> String {
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The 1-based lines of every `allow(` list naming `unsafe_code` without a `reason`.
pub(super) fn unsafe_allows_without_reason(text: &str) -> Vec<usize> {
    let code = without_comments(text);
    attribute_lists(&code, concat!("al", "low("), '(', ')')
        .into_iter()
        .filter(|(_, list)| names(list, "unsafe_code") && !names(list, "reason"))
        .map(|(line, _)| line)
        .collect()
}

/// The 1-based lines of every inner attribute (`#![...]`, which applies to the whole crate
/// or module) that allows `missing_docs`.
pub(super) fn crate_allows_missing_docs(text: &str) -> Vec<usize> {
    let code = without_comments(text);
    attribute_lists(&code, concat!("#!", "["), '[', ']')
        .into_iter()
        .filter(|(_, attr)| attr.contains(concat!("al", "low(")) && names(attr, "missing_docs"))
        .map(|(line, _)| line)
        .collect()
}

/// Every occurrence of `start` in `code` (which ends with `open`) with the text up to its
/// matching `close`, and the 1-based line it starts on.
fn attribute_lists<'a>(
    code: &'a str,
    start: &str,
    open: char,
    close: char,
) -> Vec<(usize, &'a str)> {
    let mut out = Vec::new();
    for (at, _) in code.match_indices(start) {
        let Some(rest) = code.get(at + start.len()..) else {
            continue;
        };
        let mut depth = 1usize;
        let end = rest.char_indices().find_map(|(i, c)| {
            if c == open {
                depth += 1;
            } else if c == close {
                depth -= 1;
            }
            (depth == 0).then_some(i)
        });
        let list = rest.get(..end.unwrap_or(rest.len())).unwrap_or(rest);
        let line = code
            .get(..at)
            .map_or(0, |before| before.matches('\n').count())
            + 1;
        out.push((line, list));
    }
    out
}

/// Whether `list` contains `word` as a whole identifier.
fn names(list: &str, word: &str) -> bool {
    list.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .any(|w| w == word)
}

/// Whether `path` (relative to the workspace root, so that where the repository is checked
/// out does not matter) is a test-only file: `tests.rs`, `*_tests.rs`, under a `tests`
/// directory, or in the test-support crate `crates/pgtest`.
pub(super) fn is_test_only(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    // pgtest is the test-support crate: only ever a dev-dependency (the layers rule checks
    // that), so a panic in it fails a test, which is what test support is for.
    path.starts_with("crates/pgtest")
        || name == "tests.rs"
        || name.ends_with("_tests.rs")
        || path
            .parent()
            .is_some_and(|dir| dir.components().any(|c| c.as_os_str() == "tests"))
}

/// Adds every `*.rs` file under `dir` to `out`, skipping build output (`target`) and hidden
/// directories.
pub(super) fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("reading {}: {e}", dir.display()))?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let kind = entry
            .file_type()
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        if kind.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, out)?;
            }
        } else if kind.is_file() && name.ends_with(".rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// The contents of `path`, naming it on failure.
pub(super) fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The inputs below are spelled in pieces (concat!) so that tidy, which reads this file
    // too, does not find the very patterns these tests feed it.

    #[test]
    fn unwraps_skip_comments_and_tests() {
        let text = concat!(
            "fn a() { x.unw",
            "rap(); }\n",
            "// x.unw",
            "rap() in prose\n",
            "fn b() { y.unwrap_or(0); z.exp",
            "ect(\"why\"); } // x.unw",
            "rap()\n",
            "#[cfg",
            "(test)]\n",
            "fn c() { x.unw",
            "rap(); }\n",
        );
        assert_eq!(unwraps(text), [(1, UNWRAP), (3, EXPECT)]);
    }

    #[test]
    fn unsafe_allows_need_a_reason() {
        let text = concat!(
            "#[al",
            "low(unsafe_code)]\n",
            "fn a() {}\n",
            "#[al",
            "low(\n    unsafe_code,\n    reason = \"libc (no wrapper)\"\n)]\n",
            "fn b() {}\n",
            "// #[al",
            "low(unsafe_code)] in prose\n",
            "#[al",
            "low(dead_code)]\n",
        );
        assert_eq!(unsafe_allows_without_reason(text), [1]);
    }

    #[test]
    fn only_crate_level_missing_docs_allows_are_found() {
        let text = concat!(
            "//! Docs.\n",
            "#![warn(missing_docs)]\n",
            "#![al",
            "low(dead_code, missing_docs)]\n",
            "#[al",
            "low(missing_docs)]\n",
            "fn a() {}\n",
        );
        assert_eq!(crate_allows_missing_docs(text), [3]);
    }

    #[test]
    fn manifests_are_read_by_table() {
        let toml = "[package]\nname = \"x\" # the name\n\n[lints]\nworkspace = true\n\n\
                    [workspace]\nmembers = [\n    \"a\",\n]\n\n[workspace.lints.rust]\n\
                    unsafe_code = \"deny\"\nrust_2018_idioms = { level = \"warn\", priority = -1 }\n";
        let sections = toml_sections(toml);
        let names: Vec<&str> = sections.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["", "package", "lints", "workspace", "workspace.lints.rust"]
        );
        let lints = sections.iter().find(|s| s.name == "workspace.lints.rust");
        let level = |key| lints.and_then(|s| s.get(key)).map(lint_level);
        assert_eq!(level("unsafe_code").as_deref(), Some("deny"));
        assert_eq!(level("rust_2018_idioms").as_deref(), Some("warn"));
        let package = sections.iter().find(|s| s.name == "package");
        assert_eq!(package.and_then(|s| s.get("name")), Some("\"x\""));
    }

    #[test]
    fn test_only_files() {
        for path in [
            "crates/w/src/tests.rs",
            "crates/w/src/x/tests.rs",
            "crates/w/src/transaction_tests.rs",
            "crates/w/tests/it/main.rs",
            "crates/pgtest/src/fake.rs",
        ] {
            assert!(is_test_only(Path::new(path)), "{path}");
        }
        for path in [
            "crates/w/src/lib.rs",
            "crates/w/src/contests.rs",
            "crates/pgserver/src/lib.rs",
        ] {
            assert!(!is_test_only(Path::new(path)), "{path}");
        }
    }
}
