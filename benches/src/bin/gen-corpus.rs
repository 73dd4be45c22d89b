//! Records the parse benchmarks' corpus from a real PostgreSQL server into
//! `target/bench/corpus/mixed.walcap`, unless it is already there.
//!
//! ```text
//! cargo run -p benches --release --bin gen-corpus [-- [--major N] [--force]]
//! ```

use std::process::ExitCode;

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
    let mut major = benches::DEFAULT_MAJOR;
    let mut force = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--force" => force = true,
            "--major" => {
                major = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or("--major needs a number")?;
            }
            _ => return Err("usage: gen-corpus [--major N] [--force]".into()),
        }
    }
    let path = benches::mixed_corpus_path();
    if force || !path.exists() {
        benches::record_mixed(major, &path)?;
    } else {
        println!(
            "reusing {} (pass --force to record it again)",
            path.display()
        );
    }
    let corpus = benches::Corpus::load(&path)?;
    println!("{}: {}", path.display(), corpus.summary());
    println!("header: {}", corpus.header);
    Ok(())
}
