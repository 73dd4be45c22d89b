//! Records the parse benchmarks' corpora from a real PostgreSQL server into
//! `target/bench/corpus/{mixed,wide,streamed}.walcap`, each unless it is already there.
//!
//! ```text
//! cargo run -p benches --release --bin gen-corpus [-- [--major N] [--force] [WORKLOAD...]]
//! ```
//!
//! Without workloads, all of them. `--major` overrides each workload's default server
//! (PostgreSQL 15; the newest installed 16+ for `streamed`, which needs protocol 4).

use std::process::ExitCode;

use benches::Workload;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gen-corpus: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), benches::Error> {
    let usage = "usage: gen-corpus [--major N] [--force] [mixed|wide|streamed]...";
    let mut major = None;
    let mut force = false;
    let mut workloads = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--force" => force = true,
            "--major" => {
                major = Some(
                    args.next()
                        .and_then(|n| n.parse().ok())
                        .ok_or("--major needs a number")?,
                );
            }
            name => workloads.push(Workload::from_name(name).ok_or(usage)?),
        }
    }
    if workloads.is_empty() {
        workloads = Workload::ALL.to_vec();
    }
    for workload in workloads {
        let path = workload.corpus_path();
        if force || !path.exists() {
            let major = match major {
                Some(m) => m,
                None => workload.default_major()?,
            };
            benches::record(workload, major, &path)?;
        } else {
            println!(
                "reusing {} (pass --force to record it again)",
                path.display()
            );
        }
        let corpus = benches::Corpus::load(&path)?;
        println!("{}: {}", path.display(), corpus.summary());
        println!("header: {}", corpus.header);
    }
    Ok(())
}
