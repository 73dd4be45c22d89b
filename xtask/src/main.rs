//! Repository automation, run as `cargo xtask <command>` (see `.cargo/config.toml`).

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("nostd") => nostd(),
        _ => {
            eprintln!("usage: cargo xtask <nostd>");
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
fn nostd() -> Result<(), String> {
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

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let status = cmd
        .status()
        .map_err(|e| format!("running {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed: {status}"))
    }
}
