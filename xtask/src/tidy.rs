//! `cargo xtask tidy`: the checks the repository makes of itself.
//!
//! Each rule is a function that returns what is wrong, one message per problem, each naming
//! the file. The `tests` module runs every rule as a `#[test]` (as rust-analyzer's
//! `xtask/src/tidy.rs` does), so `cargo test` and `cargo xtask test` fail when one is broken;
//! `.ci/run` also runs `cargo xtask tidy` before clippy, so a broken rule is reported before
//! the long steps. The rules:
//!
//! - **file size**: no non-test source file (`*.rs` under a workspace member's `src/` or
//!   `fuzz/fuzz_targets/`) is over [`MAX_LINES`] lines; `tests.rs`, `*_tests.rs`, everything
//!   under a `tests/` directory and the test-support crate `crates/pgtest` are exempt.
//! - **layers**: each crate's `[dependencies]` (and build-dependencies) name only the
//!   workspace crates below it ([`LAYERS`]); only the tooling ([`TOOLING`]) depends on
//!   `pgtest` outside `[dev-dependencies]`.
//! - **lint table**: one workspace lint table. Every member has `[lints] workspace = true` and
//!   no lint table of its own; the table denies `unsafe_code` and keeps `missing_docs` on (so
//!   clippy's `-D warnings` enforces docs on every public item); every
//!   `allow(unsafe_code)` carries a `reason`; no crate or module under `src/` allows
//!   `missing_docs`.
//! - **no unwrap**: no `.unwrap()` or `.expect(` in non-test code (comment lines and
//!   everything from a file's first `#[cfg(test)]` on are skipped: tests come last), and the
//!   table keeps clippy's `unwrap_used` and `expect_used` on.
//! - **rust-version**: the workspace's `rust-version` is the highest `rust-version` of any
//!   package the lock file resolves for the workspace (its normal, dev and build dependencies,
//!   on this machine's platform), so it is the one the lock file really needs; and this
//!   machine's `rustc` is at least that.
//! - **copies**: `crates/walstream-cli/CLI.md`, the contract the CLI crate ships, is the same
//!   as `../shared/CLI.md` when that exists (`copies.rs`).

mod copies;
mod metadata;
mod scan;

use std::path::{Path, PathBuf};

use serde_json::Value;

use metadata::{
    array_of, cargo_metadata, needed_rust_version, parse_version, rustc_version, str_of,
};
use scan::{
    crate_allows_missing_docs, is_test_only, lint_level, read, rust_files, toml_sections, unquote,
    unsafe_allows_without_reason, unwraps, Section,
};

use crate::{workspace_root, Result};

/// The most lines a non-test source file may have. Past it a file usually holds more than one
/// concern, and a reader can no longer hold its shape in mind.
const MAX_LINES: usize = 1000;

/// Each workspace crate and the workspace crates its `[dependencies]` may name: the layers of
/// ARCHITECTURE.md, each depending only on those below it. `walstream-pgserver` (finding, starting and
/// stopping PostgreSQL servers) is not test support: the CLI's `demo` and `pgtest` both use it.
/// A member missing here fails the rule, so that a new crate is given its place when it is
/// added.
const LAYERS: &[(&str, &[&str])] = &[
    ("walproto", &[]),
    ("walconn", &["walproto"]),
    ("walstream", &["walconn", "walproto"]),
    (
        "walstream-cli",
        &["walstream", "walproto", "walstream-pgserver"],
    ),
    ("walstream-pgserver", &[]),
    ("pgtest", &["walstream-pgserver"]),
    ("nostd-check", &["walproto"]),
    ("walcap-inspector", &["walproto"]),
    ("walstream-jetstream", &["walstream"]),
];

/// Repository tooling, which may depend on any workspace crate, `pgtest` included: it is never
/// published and never linked into a crate a user builds.
const TOOLING: &[&str] = &["xtask", "benches"];

/// The test support crate, which only tooling and `[dev-dependencies]` may name.
const TEST_SUPPORT: &str = "pgtest";

/// A rule: the problems it finds in the workspace, one message each.
type Rule = fn(&Workspace) -> Result<Vec<String>>;

/// Every rule, by name, in the order `cargo xtask tidy` runs them.
const RULES: [(&str, Rule); 6] = [
    ("file size", file_sizes),
    ("layers", layers),
    ("lint table", lint_table),
    ("no unwrap", no_unwrap),
    ("rust-version", rust_version),
    ("copies", |ws| Ok(copies::cli_contract(&ws.root))),
];

/// `cargo xtask tidy`: runs every rule and fails if any finds a problem.
pub(crate) fn main(args: &[String]) -> Result<()> {
    if !args.is_empty() {
        return Err("usage: cargo xtask tidy".to_owned());
    }
    let ws = Workspace::load()?;
    let mut problems = 0;
    for (name, rule) in RULES {
        let found = rule(&ws)?;
        if found.is_empty() {
            println!("tidy: {name}: ok");
        }
        for problem in &found {
            eprintln!("tidy: {name}: {problem}");
        }
        problems += found.len();
    }
    if problems == 0 {
        Ok(())
    } else {
        Err(format!("tidy found {problems} problem(s)"))
    }
}

/// The workspace as `cargo metadata --no-deps` describes it.
struct Workspace {
    /// The directory of the root `Cargo.toml`.
    root: PathBuf,
    /// Every member, in the order cargo lists them.
    members: Vec<Member>,
}

/// One workspace member.
struct Member {
    /// The package name.
    name: String,
    /// Its `Cargo.toml`.
    manifest: PathBuf,
    /// Its dependencies of every kind, as declared.
    deps: Vec<Dependency>,
}

/// One declared dependency of a member.
struct Dependency {
    /// The package name (not a `package = ...` rename).
    name: String,
    /// `None` for `[dependencies]`, else `dev` or `build`.
    kind: Option<String>,
}

impl Workspace {
    /// Reads the workspace with `cargo metadata --no-deps` (which needs no network).
    fn load() -> Result<Workspace> {
        let meta = cargo_metadata(&workspace_root(), &["--no-deps"])?;
        let root = PathBuf::from(str_of(&meta, "workspace_root")?);
        let mut members = Vec::new();
        for package in array_of(&meta, "packages")? {
            let deps = array_of(package, "dependencies")?
                .iter()
                .map(|d| {
                    Ok(Dependency {
                        name: str_of(d, "name")?.to_owned(),
                        kind: d.get("kind").and_then(Value::as_str).map(str::to_owned),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            members.push(Member {
                name: str_of(package, "name")?.to_owned(),
                manifest: PathBuf::from(str_of(package, "manifest_path")?),
                deps,
            });
        }
        Ok(Workspace { root, members })
    }

    /// `path` relative to the workspace root, for messages.
    fn rel(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .display()
            .to_string()
    }

    /// Whether `name` is a workspace member.
    fn has_member(&self, name: &str) -> bool {
        self.members.iter().any(|m| m.name == name)
    }

    /// Every non-test source file: `*.rs` under each member's `src/` and under
    /// `fuzz/fuzz_targets/` (the fuzz crate is outside the workspace, but its code is ours),
    /// sorted.
    fn non_test_sources(&self) -> Result<Vec<PathBuf>> {
        let mut dirs: Vec<PathBuf> = self
            .members
            .iter()
            .filter_map(|m| m.manifest.parent().map(|d| d.join("src")))
            .collect();
        dirs.push(self.root.join("fuzz").join("fuzz_targets"));
        let mut files = Vec::new();
        for dir in dirs {
            if dir.is_dir() {
                rust_files(&dir, &mut files)?;
            }
        }
        files.retain(|f| !is_test_only(f.strip_prefix(&self.root).unwrap_or(f)));
        files.sort();
        Ok(files)
    }

    /// Every `*.rs` file of the repository (build output and hidden directories aside), sorted.
    fn all_sources(&self) -> Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        rust_files(&self.root, &mut files)?;
        files.sort();
        Ok(files)
    }

    /// The root `Cargo.toml`, parsed.
    fn root_manifest(&self) -> Result<Vec<Section>> {
        Ok(toml_sections(&read(&self.root.join("Cargo.toml"))?))
    }
}

/// Rule: no non-test source file is over [`MAX_LINES`] lines.
fn file_sizes(ws: &Workspace) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for file in ws.non_test_sources()? {
        let lines = read(&file)?.lines().count();
        if lines > MAX_LINES {
            problems.push(format!(
                "{}: {lines} lines, more than {MAX_LINES}: split it by concern (only test files, \
                 tests.rs, *_tests.rs and tests/, may be longer)",
                ws.rel(&file)
            ));
        }
    }
    Ok(problems)
}

/// Rule: each member's `[dependencies]` and `[build-dependencies]` name only the workspace
/// crates [`LAYERS`] allows it, and only [`TOOLING`] names [`TEST_SUPPORT`] there.
fn layers(ws: &Workspace) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for member in &ws.members {
        if TOOLING.contains(&member.name.as_str()) {
            continue;
        }
        let manifest = ws.rel(&member.manifest);
        let Some((_, allowed)) = LAYERS.iter().find(|(name, _)| *name == member.name) else {
            problems.push(format!(
                "{manifest}: crate {} has no place in tidy's LAYERS table (xtask/src/tidy.rs): \
                 add it with the workspace crates it may depend on",
                member.name
            ));
            continue;
        };
        for dep in &member.deps {
            let section = match dep.kind.as_deref() {
                Some("dev") => continue,
                Some("build") => "build-dependencies",
                _ => "dependencies",
            };
            if !ws.has_member(&dep.name) || allowed.contains(&dep.name.as_str()) {
                continue;
            }
            if dep.name == TEST_SUPPORT {
                problems.push(format!(
                    "{manifest}: {} has {TEST_SUPPORT} in [{section}]: test support belongs in \
                     [dev-dependencies] (only {} may use it outside tests)",
                    member.name,
                    TOOLING.join(" and ")
                ));
            } else {
                problems.push(format!(
                    "{manifest}: {} depends on {} in [{section}], but may only depend on {}: each \
                     layer depends only on those below it (ARCHITECTURE.md)",
                    member.name,
                    dep.name,
                    if allowed.is_empty() {
                        "no workspace crate".to_owned()
                    } else {
                        allowed.join(", ")
                    }
                ));
            }
        }
    }
    Ok(problems)
}

/// Rule: one workspace lint table, used by every member; `unsafe_code` denied and allowed
/// only with a reason; `missing_docs` on and never allowed for a whole crate.
fn lint_table(ws: &Workspace) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let root = ws.root_manifest()?;
    let table = "workspace.lints.rust";
    problems.extend(check_level(
        &root,
        table,
        "unsafe_code",
        &["deny", "forbid"],
        |level| {
            format!(
                "Cargo.toml: [{table}] unsafe_code is {level}, not \"deny\": unsafe code must be \
             refused everywhere except items that allow it with a reason"
            )
        },
    ));
    problems.extend(check_level(&root, table, "missing_docs", ON, |level| {
        format!(
            "Cargo.toml: [{table}] missing_docs is {level}, not \"warn\" or \"deny\": clippy's \
             -D warnings is what makes every public item documented"
        )
    }));
    for member in &ws.members {
        let manifest = ws.rel(&member.manifest);
        let sections = toml_sections(&read(&member.manifest)?);
        let inherits = sections
            .iter()
            .any(|s| s.name == "lints" && s.get("workspace") == Some("true"));
        if !inherits {
            problems.push(format!(
                "{manifest}: no `[lints] workspace = true`: every member uses the workspace's \
                 lint table"
            ));
        }
        for own in sections.iter().filter(|s| s.name.starts_with("lints.")) {
            problems.push(format!(
                "{manifest}: a lint table of its own, [{}]: use the workspace's (allow a lint on \
                 the item that needs it, with a reason)",
                own.name
            ));
        }
    }
    for file in ws.all_sources()? {
        let text = read(&file)?;
        for line in unsafe_allows_without_reason(&text) {
            problems.push(format!(
                "{}:{line}: unsafe_code allowed without a `reason = \"...\"`: say why the \
                 unsafe code is needed and why it is sound",
                ws.rel(&file)
            ));
        }
    }
    // Only the code under `src/` has public items that a reader of the API needs documented:
    // test and bench crates have none, and their harness macros (`criterion_group!`) generate
    // undocumented `pub fn`s, which such a crate may allow.
    for file in ws.non_test_sources()? {
        for line in crate_allows_missing_docs(&read(&file)?) {
            problems.push(format!(
                "{}:{line}: missing_docs allowed for a whole crate or module: document the \
                 items instead",
                ws.rel(&file)
            ));
        }
    }
    Ok(problems)
}

/// Rule: no `.unwrap()` or `.expect(` in non-test code, and the lint table keeps clippy's
/// `unwrap_used` and `expect_used` on.
fn no_unwrap(ws: &Workspace) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let root = ws.root_manifest()?;
    let table = "workspace.lints.clippy";
    for lint in ["unwrap_used", "expect_used"] {
        problems.extend(check_level(&root, table, lint, ON, |level| {
            format!(
                "Cargo.toml: [{table}] {lint} is {level}, not \"warn\" or \"deny\": data from the \
                 network must never panic the process"
            )
        }));
    }
    for file in ws.non_test_sources()? {
        for (line, call) in unwraps(&read(&file)?) {
            problems.push(format!(
                "{}:{line}: {call} outside tests: return the error, or make the impossible case \
                 explicit (unwrap_or, ok_or, unreachable! with the reason)",
                ws.rel(&file)
            ));
        }
    }
    Ok(problems)
}

/// Rule: the workspace's `rust-version` is the one the lock file needs, and this machine's
/// `rustc` is at least that.
fn rust_version(ws: &Workspace) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let root = ws.root_manifest()?;
    let Some(declared) = root
        .iter()
        .find(|s| s.name == "workspace.package")
        .and_then(|s| s.get("rust-version"))
        .map(unquote)
    else {
        return Ok(vec![
            "Cargo.toml: [workspace.package] has no rust-version".to_owned()
        ]);
    };
    let declared_v = parse_version(&declared)
        .ok_or_else(|| format!("Cargo.toml: rust-version {declared:?} is not a version"))?;
    let (needed, by) = needed_rust_version(&ws.root)?;
    let needed_v = parse_version(&needed)
        .ok_or_else(|| format!("{by}: rust-version {needed:?} is not a version"))?;
    if declared_v != needed_v {
        problems.push(format!(
            "Cargo.toml: [workspace.package] rust-version is {declared}, but the highest any \
             package of the lock file needs is {needed} ({by}): set it to {needed}"
        ));
    }
    let rustc = rustc_version()?;
    match parse_version(&rustc) {
        Some(v) if v >= declared_v => {}
        _ => problems.push(format!(
            "rustc {rustc} is older than the workspace's rust-version {declared} (Cargo.toml): \
             update the toolchain"
        )),
    }
    Ok(problems)
}

/// Lint levels that keep a lint on (`warn` becomes an error under clippy's `-D warnings`).
const ON: &[&str] = &["warn", "deny", "forbid"];

/// A problem when `lint` in `[table]` is not one of `levels` (`message` gets the level found).
fn check_level(
    sections: &[Section],
    table: &str,
    lint: &str,
    levels: &[&str],
    message: impl Fn(&str) -> String,
) -> Option<String> {
    let level = sections
        .iter()
        .find(|s| s.name == table)
        .and_then(|s| s.get(lint))
        .map(lint_level);
    match level {
        Some(level) if levels.contains(&level.as_str()) => None,
        Some(level) => Some(message(&format!("\"{level}\""))),
        None => Some(message("missing")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the rule called `name` on this workspace, as `cargo xtask tidy` does, and fails
    /// with every problem it finds.
    fn check(name: &str) {
        let ws = Workspace::load().unwrap_or_else(|e| unreachable!("{e}"));
        let (_, rule) = RULES
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| unreachable!("no rule {name}"));
        let found = rule(&ws).unwrap_or_else(|e| unreachable!("{e}"));
        assert!(
            found.is_empty(),
            "cargo xtask tidy, {name}:\n{}",
            found.join("\n")
        );
    }

    #[test]
    fn tidy_file_size() {
        check("file size");
    }

    #[test]
    fn tidy_layers() {
        check("layers");
    }

    #[test]
    fn tidy_lint_table() {
        check("lint table");
    }

    #[test]
    fn tidy_no_unwrap() {
        check("no unwrap");
    }

    #[test]
    fn tidy_rust_version() {
        check("rust-version");
    }

    #[test]
    fn tidy_copies() {
        check("copies");
    }
}
