//! What cargo and rustc say: `cargo metadata` (the members, and the lock file's resolved
//! graph with each package's `rust-version`) and the local toolchain's version and host.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::{cargo, Result};

/// The highest `rust-version` among the packages that the lock file resolves for the
/// workspace on this machine's platform (reachable from the members through normal, dev and
/// build dependencies; past the members, through normal and build ones), and the package
/// that declares it.
pub(super) fn needed_rust_version(root: &Path) -> Result<(String, String)> {
    let host = rustc_host()?;
    let meta = cargo_metadata(root, &["--filter-platform", &host])?;
    let packages = array_of(&meta, "packages")?;
    let nodes = array_of(
        meta.get("resolve")
            .ok_or("cargo metadata printed no resolve graph")?,
        "nodes",
    )?;
    let members: BTreeSet<&str> = array_of(&meta, "workspace_members")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let mut reached: BTreeSet<&str> = BTreeSet::new();
    let mut todo: Vec<&str> = members.iter().copied().collect();
    while let Some(id) = todo.pop() {
        if !reached.insert(id) {
            continue;
        }
        let Some(node) = nodes
            .iter()
            .find(|n| n.get("id").and_then(Value::as_str) == Some(id))
        else {
            continue;
        };
        for dep in node
            .get("deps")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let kinds: Vec<Option<&str>> = dep
                .get("dep_kinds")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|k| k.get("kind").and_then(Value::as_str))
                .collect();
            // Dev-dependencies count for the workspace's own crates (their tests build), not
            // for a dependency's.
            let used = kinds
                .iter()
                .any(|k| *k != Some("dev") || members.contains(id));
            if let (true, Some(pkg)) = (used, dep.get("pkg").and_then(Value::as_str)) {
                todo.push(pkg);
            }
        }
    }
    let mut best: Option<([u64; 3], String, String)> = None;
    for package in packages {
        let id = str_of(package, "id")?;
        let Some(version) = package.get("rust_version").and_then(Value::as_str) else {
            continue;
        };
        let Some(parsed) = parse_version(version) else {
            continue;
        };
        if reached.contains(id) && best.as_ref().is_none_or(|(b, _, _)| parsed > *b) {
            let by = format!(
                "{} {}",
                str_of(package, "name")?,
                str_of(package, "version")?
            );
            best = Some((parsed, version.to_owned(), by));
        }
    }
    best.map(|(_, version, by)| (version, by))
        .ok_or_else(|| "no package of the lock file declares a rust-version".to_owned())
}

/// `cargo metadata --format-version 1` in `root` with `extra` arguments, parsed.
pub(super) fn cargo_metadata(root: &Path, extra: &[&str]) -> Result<Value> {
    let out = Command::new(cargo())
        .args(["metadata", "--format-version", "1"])
        .args(extra)
        .current_dir(root)
        .output()
        .map_err(|e| format!("running cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo metadata failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("parsing cargo metadata: {e}"))
}

/// The version of this machine's `rustc`, as `1.95.0` (a pre-release suffix dropped).
pub(super) fn rustc_version() -> Result<String> {
    let out = rustc_output(&["--version"])?;
    out.split_whitespace()
        .nth(1)
        .map(|v| v.split('-').next().unwrap_or(v).to_owned())
        .ok_or_else(|| format!("rustc --version printed {out:?}"))
}

/// The target triple `rustc` builds for by default.
fn rustc_host() -> Result<String> {
    let out = rustc_output(&["-vV"])?;
    out.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
        .ok_or_else(|| format!("rustc -vV printed no host: {out:?}"))
}

/// The standard output of `rustc args` (`$RUSTC` when set, as cargo does).
fn rustc_output(args: &[&str]) -> Result<String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let out = Command::new(&rustc)
        .args(args)
        .output()
        .map_err(|e| format!("running {rustc}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{rustc} {} failed: {}", args.join(" "), out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `1.89`, `1.89.0` as comparable numbers (a missing patch is 0).
pub(super) fn parse_version(v: &str) -> Option<[u64; 3]> {
    let mut parts = v.trim().split('.');
    let mut out = [0; 3];
    for (i, slot) in out.iter_mut().enumerate() {
        match (parts.next(), i) {
            (Some(p), _) => *slot = p.parse().ok()?,
            (None, 0) => return None,
            (None, _) => {}
        }
    }
    parts.next().is_none().then_some(out)
}

/// The string field `key` of a JSON object.
pub(super) fn str_of<'a>(value: &'a Value, key: &str) -> Result<&'a str> {
    value
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("cargo metadata: no string {key:?}"))
}

/// The array field `key` of a JSON object.
pub(super) fn array_of<'a>(value: &'a Value, key: &str) -> Result<&'a [Value]> {
    value
        .get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .ok_or_else(|| format!("cargo metadata: no array {key:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_by_number() {
        assert_eq!(parse_version("1.89"), Some([1, 89, 0]));
        assert_eq!(parse_version("1.89"), parse_version("1.89.0"));
        assert!(parse_version("1.100") > parse_version("1.99.9"));
        assert_eq!(parse_version("1.x"), None);
        assert_eq!(parse_version("1.2.3.4"), None);
    }
}
