//! Instruction counts per message of parsing and decoding, walproto against pg_walstream, on
//! the parse benches' three corpora: figures that do not depend on the machine or its load.
//!
//! `benches/benches/instructions.rs` runs one mode over one corpus; each run goes under
//! `valgrind --tool=callgrind` (no cache simulation: instructions only), whose `summary:` line
//! is the run's instruction count. The `load` mode only loads the corpus (and copies its
//! frames into a `Bytes`, as every mode does); its count is subtracted from each other mode's,
//! so that what is divided by the corpus's messages is the pass itself: walking the frames,
//! parsing (or decoding) and touching every value of every row. The checksums of the four
//! modes must agree. Counts repeat exactly on one build, so `--compare` holds them to within
//! [`TOLERANCE`].

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{cargo, run, Result};

/// `--compare`: an instruction count worse than the saved one by more than this fraction is
/// flagged (they repeat exactly; the slack is for a different toolchain or libc).
pub(super) const TOLERANCE: f64 = 0.02;

/// The prefix of this bench's figure keys (how `--compare` knows to apply [`TOLERANCE`]).
pub(super) const KEY_PREFIX: &str = "instructions.";

/// The corpora, in report order (as the parse bench names them).
const CORPORA: [&str; 3] = ["mixed", "wide", "streamed"];

/// The measured modes of the bench binary (its baseline, `load`, is run apart).
const MODES: [&str; 4] = [
    "walproto-parse",
    "walproto-decode",
    "pg_walstream-parse",
    "pg_walstream-decode",
];

/// The most instructions per message walproto's parse may take on the mixed corpus (issue 18).
const TARGET_MIXED_PARSE: f64 = 600.0;

/// One corpus's counts.
pub(super) struct CorpusCounts {
    /// The corpus's name.
    corpus: &'static str,
    /// Its messages.
    messages: u64,
    /// Instructions of the `load` run (the baseline).
    baseline: u64,
    /// Instructions per message of each of [`MODES`], the baseline subtracted.
    per_message: Vec<f64>,
}

/// What the bench measured: one entry per corpus that exists or could be recorded.
pub(super) struct Counts {
    /// valgrind's version line.
    valgrind: String,
    /// Per corpus.
    corpora: Vec<CorpusCounts>,
}

/// Builds the bench binary, records a missing corpus, and counts every mode on every corpus.
/// `None` (with a warning) when valgrind is not installed.
pub(super) fn run_bench(root: &Path) -> Result<Option<Counts>> {
    let Some(valgrind) = valgrind_version() else {
        eprintln!(
            "==> instructions: valgrind is not installed, skipped (apt-get install valgrind)"
        );
        return Ok(None);
    };
    eprintln!("==> instruction counts ({valgrind})");
    let bin = build(root)?;
    let out_dir = root.join("target/bench/callgrind");
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| format!("creating {}: {e}", out_dir.display()))?;
    let mut corpora = Vec::new();
    for corpus in CORPORA {
        let path = root.join(format!("target/bench/corpus/{corpus}.walcap"));
        if !path.exists() {
            run(Command::new(cargo())
                .current_dir(root)
                .args([
                    "run",
                    "-p",
                    "benches",
                    "--release",
                    "--bin",
                    "gen-corpus",
                    "--",
                ])
                .arg(corpus))?;
        }
        let (messages, _, baseline) = count(&bin, &out_dir, "load", corpus)?;
        let mut per_message = Vec::new();
        let mut checksum = None;
        for mode in MODES {
            let (_, sum, total) = count(&bin, &out_dir, mode, corpus)?;
            if *checksum.get_or_insert(sum) != sum {
                return Err(format!(
                    "instructions: {mode} on {corpus} touched {sum}, the others {checksum:?}"
                ));
            }
            let per = total.saturating_sub(baseline) as f64 / messages.max(1) as f64;
            eprintln!("    {corpus:<8} {mode:<20} {per:>8.1} instructions/message");
            per_message.push(per);
        }
        corpora.push(CorpusCounts {
            corpus,
            messages,
            baseline,
            per_message,
        });
    }
    Ok(Some(Counts { valgrind, corpora }))
}

/// `valgrind --version`, if valgrind runs.
fn valgrind_version() -> Option<String> {
    let out = Command::new("valgrind").arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Builds `benches/benches/instructions.rs` (bench profile) and returns its executable.
fn build(root: &Path) -> Result<PathBuf> {
    let mut cmd = Command::new(cargo());
    cmd.current_dir(root).args([
        "build",
        "--profile",
        "bench",
        "-p",
        "benches",
        "--bench",
        "instructions",
        "--message-format=json-render-diagnostics",
    ]);
    let out = cmd.output().map_err(|e| format!("running {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .filter(|l| l.contains("\"name\":\"instructions\""))
        .find_map(|l| {
            let (_, rest) = l.split_once("\"executable\":\"")?;
            let (path, _) = rest.split_once('"')?;
            Some(PathBuf::from(path))
        })
        .ok_or_else(|| format!("{cmd:?}: no executable for the instructions bench"))
}

/// Runs `bin MODE CORPUS` under callgrind: its messages, checksum and instruction count.
fn count(bin: &Path, out_dir: &Path, mode: &str, corpus: &str) -> Result<(u64, u64, u64)> {
    let out_file = out_dir.join(format!("{corpus}.{mode}.out"));
    let mut cmd = Command::new("valgrind");
    cmd.args(["--tool=callgrind", "--quiet"])
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(bin)
        .args([mode, corpus]);
    let out = cmd.output().map_err(|e| format!("running {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let value = |name: &str| {
        stdout
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('=')?.parse::<u64>().ok())
            .ok_or_else(|| format!("{cmd:?}: no {name}= in its output {stdout:?}"))
    };
    let (messages, checksum) = (value("messages")?, value("checksum")?);
    let text = std::fs::read_to_string(&out_file)
        .map_err(|e| format!("reading {}: {e}", out_file.display()))?;
    let total = summary(&text).ok_or_else(|| format!("{}: no summary line", out_file.display()))?;
    Ok((messages, checksum, total))
}

/// The `summary:` line of a callgrind output file: the run's instructions.
fn summary(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("summary:"))
        .and_then(|n| n.trim().parse().ok())
}

impl Counts {
    /// walproto's instructions per message over pg_walstream's (parse or decode) on `c`.
    fn ratio(c: &CorpusCounts, walproto: usize, pg_walstream: usize) -> f64 {
        let (Some(a), Some(b)) = (c.per_message.get(walproto), c.per_message.get(pg_walstream))
        else {
            return f64::NAN;
        };
        a / b
    }

    /// The figures `--compare` holds to [`TOLERANCE`]: instructions per message of each mode
    /// on each corpus, and the walproto / pg_walstream ratios.
    pub(super) fn figures(&self) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        for c in &self.corpora {
            for (mode, per) in MODES.iter().zip(&c.per_message) {
                out.push((format!("{KEY_PREFIX}{}.{mode}", c.corpus), *per));
            }
            out.push((
                format!("{KEY_PREFIX}{}.parse_vs_pg_walstream", c.corpus),
                Self::ratio(c, 0, 2),
            ));
            out.push((
                format!("{KEY_PREFIX}{}.decode_vs_pg_walstream", c.corpus),
                Self::ratio(c, 1, 3),
            ));
        }
        out.retain(|(_, v)| v.is_finite());
        out
    }

    /// The report's section: a table of instructions per message, and the target.
    pub(super) fn report_md(&self) -> String {
        let mut md = format!(
            "\n## Instructions per message (callgrind)\n\n{}, `--tool=callgrind`, instructions \
             only; each mode's count minus that of a run that only loads the corpus, divided by \
             its messages: walking the frames, parsing (or decoding) and reading every value of \
             every row. They repeat exactly on one build: `--compare` flags more than {:.0}%.\n\n\
             | corpus | messages | walproto parse | pg_walstream parse | ratio | walproto decode \
             | pg_walstream decode | ratio | load only |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
            self.valgrind,
            TOLERANCE * 100.0
        );
        let cell = |c: &CorpusCounts, i: usize| {
            c.per_message
                .get(i)
                .map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"))
        };
        for c in &self.corpora {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {:.2} | {} | {} | {:.2} | {:.0} |",
                c.corpus,
                c.messages,
                cell(c, 0),
                cell(c, 2),
                Self::ratio(c, 0, 2),
                cell(c, 1),
                cell(c, 3),
                Self::ratio(c, 1, 3),
                c.baseline as f64 / c.messages.max(1) as f64,
            );
        }
        if let Some(mixed) = self.corpora.iter().find(|c| c.corpus == "mixed") {
            let parse = mixed.per_message.first().copied().unwrap_or(f64::NAN);
            let _ = writeln!(
                md,
                "\nTarget: walproto parse on the mixed corpus at most {TARGET_MIXED_PARSE:.0} \
                 instructions per message: {parse:.0} ({}).",
                if parse <= TARGET_MIXED_PARSE {
                    "met"
                } else {
                    "NOT met"
                }
            );
        }
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_reads_the_instruction_count_of_a_callgrind_file() {
        let text = "version: 1\ncreator: callgrind-3.19.0\nevents: Ir\nsummary: 261596749\n\
                    totals: 261596749\n";
        assert_eq!(summary(text), Some(261_596_749));
        assert_eq!(summary("events: Ir\n"), None);
    }

    #[test]
    fn figures_hold_per_message_counts_and_ratios() {
        let counts = Counts {
            valgrind: "valgrind-3.19.0".to_owned(),
            corpora: vec![CorpusCounts {
                corpus: "mixed",
                messages: 10,
                baseline: 100,
                per_message: vec![500.0, 600.0, 2000.0, 4000.0],
            }],
        };
        let figures = counts.figures();
        assert_eq!(figures.len(), 6);
        assert!(figures
            .iter()
            .any(|(k, v)| k == "instructions.mixed.parse_vs_pg_walstream" && *v == 0.25));
        assert!(counts.report_md().contains("500 (met)"));
    }

    #[test]
    fn compare_holds_instruction_counts_to_two_percent() {
        let old =
            "    {\"key\": \"instructions.mixed.walproto-parse\", \"value\": 1000.0000},\n    \
                   {\"key\": \"parse.mixed.x.ns_per_message\", \"value\": 1000.0000}";
        let new = vec![
            ("instructions.mixed.walproto-parse".to_owned(), 1030.0),
            ("parse.mixed.x.ns_per_message".to_owned(), 1030.0),
        ];
        assert_eq!(super::super::report::compare(old, &new).len(), 1);
        let new = vec![("instructions.mixed.walproto-parse".to_owned(), 1015.0)];
        assert!(super::super::report::compare(old, &new).is_empty());
    }
}
