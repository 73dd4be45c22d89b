//! Repository automation, run as `cargo xtask <command>` (see `.cargo/config.toml`).
//!
//! - `nostd`: builds walproto for a target without `std`.
//! - `lean`: walconn and walstream with `--no-default-features` (no TLS, no typed values):
//!   clippy clean, and walconn's tests of the build without TLS.
//! - `pg install` / `pg list`: PostgreSQL 16-18 server binaries for the live tests.
//! - `test [args]`: the project's test command (installs servers, prints the PostgreSQL majors
//!   found, then runs every test, `tidy`'s rules among them).
//! - `tidy`: the repository's checks of itself: file sizes, layering, one lint table, no
//!   `unwrap` outside tests, `rust-version` (`xtask/src/tidy.rs`).
//! - `capture`: records pgoutput streams from each installed major into `testdata/`.
//! - `bench [--quick] [--rows N] [--rounds N] [--majors LIST] [--no-parse] [--no-big]
//!   [--compare OLD.json] ...`: the drain benchmark against pg_walstream and pg_recvlogical on
//!   PostgreSQL 15 and the newest installed major, the big-transaction bench, and the criterion
//!   parse benches; one report with ratios and a chart (`benches/README.md`).
//! - `fuzz [--seconds N] [TARGET...]` / `fuzz seed`: the cargo-fuzz targets of `fuzz/` on
//!   stable, each for a time box, with seeds from `testdata/` (`fuzz/README.md`).
//! - `wasm [--test] [--screenshot]`: the capture inspector, walproto compiled to wasm
//!   (`xtask/src/wasm.rs`).

mod bench;
mod capture;
mod fuzz;
mod pg;
mod tidy;
mod wasm;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// xtask errors are messages for a person at a terminal.
type Result<T> = std::result::Result<T, String>;

const USAGE: &str = "usage: cargo xtask <command>
  nostd             build walproto for a target without std
  lean              walconn and walstream without default features (no TLS, no typed
                    values): clippy -D warnings, and walconn's no-TLS tests
  pg install        fetch PostgreSQL 16-18 server binaries into the cache (idempotent)
  pg list           show which PostgreSQL majors the tests will use
  test [ARGS...]    pg install, then run every test (ARGS go to nextest or cargo test)
  tidy              check file sizes, layering, the lint table, unwrap outside tests and
                    rust-version
  capture           record pgoutput streams from each installed major into testdata/
  bench [--quick] [--rows N] [--rounds N] [--majors 15,18] [--no-parse] [--parse-time S]
        [--big-mb N] [--budget-mib N] [--no-big] [--compare OLD.json] [--wrap CMD]
        [--drain-bins DIR] [--only drain,big,parse,backup] [--backup-size-mb N] ...
                    backup bench (walstream basebackup/receivewal vs pg_basebackup/receivewal),
                    drain benchmark (walstream vs pg_walstream vs pg_recvlogical) on PG 15 and
                    the newest installed major, one big streamed transaction through
                    TransactionStream, and the criterion parse benches; report in
                    target/bench/report.md (+ .json, ratios chart .svg); --compare fails on
                    any figure more than 10% worse than OLD.json
  fuzz [--seconds N] [TARGET...]
                    run each fuzz target N seconds (default 30), installing cargo-fuzz
  fuzz seed         write seed corpora from testdata/*.walcap into fuzz/corpus/
  wasm [--test] [--screenshot]
                    build the capture inspector (walproto in wasm) into target/inspector/ and
                    print the module's size; --test runs it in Node.js and headless Chromium
                    against `walstream decode`; --screenshot writes docs/inspector.png";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or_default();
    let result = match args.first().map(String::as_str) {
        Some("nostd") => nostd(),
        Some("lean") => lean(),
        Some("pg") => pg::main(rest),
        Some("test") => test(rest),
        Some("capture") => capture::main(rest),
        Some("bench") => bench::main(rest),
        Some("fuzz") => fuzz::main(rest),
        Some("tidy") => tidy::main(rest),
        Some("wasm") => wasm::main(rest),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Builds `walproto` through the `#![no_std]` check crate for a target that has no `std` at all,
/// so any use of `std` in walproto or its dependencies fails the build.
fn nostd() -> Result<()> {
    const TARGET: &str = "thumbv7em-none-eabi";
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(|e| format!("running rustup: {e}"))?;
    if !String::from_utf8_lossy(&installed.stdout).contains(TARGET) {
        run(Command::new("rustup").args(["target", "add", TARGET]))?;
    }
    run(Command::new(cargo()).args(["build", "-p", "nostd-check", "--target", TARGET]))
}

/// The libraries as `default-features = false` leaves them: walconn without TLS and walstream
/// without TLS or typed values must build warning-free (clippy, `-D warnings`; walconn with its
/// tests, which must compile either way), and walconn's tests of the plaintext-only build (the
/// `tls` module's stand-in, `tls_off.rs`) must pass. walstream's tests are not built here:
/// its dev-dependency on itself turns the default features back on.
fn lean() -> Result<()> {
    let clippy = |args: &[&str]| {
        run(Command::new(cargo())
            .args(["clippy", "--no-default-features"])
            .args(args)
            .args(["--", "-D", "warnings"]))
    };
    clippy(&["-p", "walconn", "--all-targets"])?;
    clippy(&["-p", "walstream"])?;
    run(Command::new(cargo()).args([
        "test",
        "-p",
        "walconn",
        "--no-default-features",
        "--lib",
        "--",
        "tls::tests",
    ]))
}

/// `pg install`, the PostgreSQL majors found (each with its version and directory), then every
/// test of the workspace: through cargo-nextest when it is installed
/// (each test in its own process; the doctests, which nextest does not run, through
/// `cargo test --doc`), else through `cargo test`. `args` go to the test runner; package
/// selections (`-p NAME`, `--package NAME`) replace `--workspace` and apply to the doctests too.
fn test(args: &[String]) -> Result<()> {
    pg::install()?;
    let cache = pg::cache_dir();
    // Every log of a test run shows what it was tested on. This process searches as the tests
    // will: they get its environment, plus `WALSTREAM_PG_CACHE=cache`, and `cache` is the
    // first cache directory pgtest searches in this process too.
    println!("\n==> PostgreSQL servers the tests run against");
    pg::print_majors();
    // Package selections in `args` reach the runner with the rest of `args`.
    let packages = package_args(args);
    let workspace = if packages.is_empty() {
        &["--workspace"][..]
    } else {
        &[]
    };
    let doc_scope = if packages.is_empty() {
        vec!["--workspace".to_owned()]
    } else {
        packages
    };
    let nextest = Command::new(cargo())
        .args(["nextest", "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let runner: &[&str] = if nextest {
        &["nextest", "run"]
    } else {
        &["test"]
    };
    run(Command::new(cargo())
        .args(runner)
        .args(workspace)
        .args(args)
        .env("WALSTREAM_PG_CACHE", &cache))?;
    if nextest {
        run(Command::new(cargo())
            .args(["test", "--doc"])
            .args(&doc_scope)
            .env("WALSTREAM_PG_CACHE", &cache))?;
    }
    Ok(())
}

/// The `-p NAME`, `--package NAME` and `--package=NAME` arguments in `args`.
fn package_args(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--" {
            break;
        }
        if arg == "-p" || arg == "--package" {
            out.push(arg.clone());
            out.extend(iter.next().cloned());
        } else if arg.starts_with("--package=") || (arg.starts_with("-p") && arg.len() > 2) {
            out.push(arg.clone());
        }
    }
    out
}

/// The workspace root: this crate lives in `<root>/xtask`.
fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The cargo that runs xtask (`$CARGO`), so that nested commands use the same toolchain.
fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// Runs `cmd` to its end; an error names the command and how it failed.
fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().map_err(|e| format!("running {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed: {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_args_are_found_before_a_double_dash() {
        let args: Vec<String> = [
            "-p",
            "pgtest",
            "--package=walproto",
            "-pxtask",
            "filter",
            "--",
            "-p",
            "x",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        assert_eq!(
            package_args(&args),
            ["-p", "pgtest", "--package=walproto", "-pxtask"]
        );
        assert!(package_args(&["some_test".to_owned()]).is_empty());
    }
}
