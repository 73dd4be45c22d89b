//! The report writers: Markdown for people, JSON for `--compare` and scripts, an SVG chart of
//! the headline, and the comparison with an earlier run's JSON.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use super::stats::{field, kib_to_mb, ratio, str_field, Big, Drain, Ratio, Sample};
use super::{BASE_MAJOR, BIG_CONSUMERS, BIG_VALUE_BYTES, CONSUMERS, ROWS_PER_TX};
use crate::Result;

/// The targets of the issue: CPU time against each baseline, and peak RSS. This one is the
/// most CPU time `walstream` may take per CPU second of pg_walstream.
const TARGET_VS_PG_WALSTREAM: f64 = 0.5;
/// The most CPU time `walstream` may take per CPU second of pg_recvlogical.
const TARGET_VS_PG_RECVLOGICAL: f64 = 1.0;
/// The most peak RSS, in MB, that `walstream` may use to drain the backlog.
const TARGET_RSS_MB: f64 = 8.0;

/// `--compare`: a figure worse than the saved one by more than this fraction is flagged.
const COMPARE_TOLERANCE: f64 = 0.10;

/// The run as a whole: its options, the machine, how long it took.
pub(super) struct RunInfo {
    /// Rows of the drain backlog.
    pub(super) rows: u64,
    /// Rounds per consumer.
    pub(super) rounds: usize,
    /// Available parallelism of the machine.
    pub(super) cores: usize,
    /// The 1-minute load average at the end of the run.
    pub(super) load: String,
    /// The CPU model name.
    pub(super) cpu: String,
    /// `--wrap`, if given.
    pub(super) wrap: Option<String>,
    /// `--drain-bins`, if given.
    pub(super) drain_bins: Option<String>,
    /// Whether the parse benches ran in this run (else their summary is an earlier run's).
    pub(super) parse_ran: bool,
    /// `--quick`.
    pub(super) quick: bool,
    /// Wall time of the whole run.
    pub(super) seconds: f64,
}

/// The CPU model name from `/proc/cpuinfo` (empty when there is none).
pub(super) fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        })
        .unwrap_or_default()
}

/// The Markdown report: the headline, a table per drain, the big transaction, the backup
/// bench's section (`backup`, written by `backup::report_md`) and the parse summary.
pub(super) fn report_md(
    run: &RunInfo,
    headline: &[Ratio],
    drains: &[Drain],
    big: Option<&Big>,
    backup: Option<&str>,
    parse: Option<&str>,
) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# cargo xtask bench{}\n",
        if run.quick { " --quick" } else { "" }
    );
    let _ = writeln!(
        md,
        "Machine: {} cores ({}), load average {} at the end of the run; {:.0} s in all. \
         Figures are noisy on a shared machine: the ratios within one run are what counts.\n",
        run.cores, run.cpu, run.load, run.seconds
    );
    if let Some(dir) = &run.drain_bins {
        let _ = writeln!(
            md,
            "**The drain consumers are the binaries of `{dir}`, not this checkout's.**\n"
        );
    }
    if let Some(wrap) = &run.wrap {
        let _ = writeln!(
            md,
            "**Every consumer ran under `{wrap}`: the figures include the wrapper.**\n"
        );
    }
    let _ = writeln!(
        md,
        "## Headline: ours / baseline (below 1: walstream ahead)\n\n\
         Chart: `report-ratios.svg`.\n\n| ratio | value |\n|---|---:|"
    );
    for r in headline {
        let _ = writeln!(md, "| {} | **{:.2}** |", r.label, r.value);
    }
    for d in drains {
        let _ = writeln!(
            md,
            "\n## Drain, PostgreSQL {}\n\n{} single-row inserts ({ROWS_PER_TX} per transaction, \
             {} bytes of WAL), pgoutput protocol 1, streaming off; median of {} round(s) (each \
             figure on its own); `pg_recvlogical` is PostgreSQL {BASE_MAJOR}'s.\n",
            d.version, run.rows, d.wal_bytes, run.rounds
        );
        let pgw = d.cpu("pg_walstream");
        let recv = d.cpu("pg_recvlogical");
        let _ = writeln!(
            md,
            "| consumer | wall s | rows/s | user s | sys s | CPU s | peak RSS MB | waits | CPU vs pg_walstream | CPU vs pg_recvlogical |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (name, s) in CONSUMERS.iter().zip(&d.medians) {
            let _ = writeln!(
                md,
                "| {name} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} | {} | {:.2} | {:.2} |",
                s.wall_s,
                run.rows as f64 / s.wall_s,
                s.user_s,
                s.sys_s,
                s.cpu_s(),
                kib_to_mb(s.max_rss_kib),
                s.nvcsw,
                ratio(s.cpu_s(), pgw),
                ratio(s.cpu_s(), recv),
            );
        }
        let a = ratio(d.cpu("walstream"), pgw);
        let b = ratio(d.cpu("walstream"), recv);
        let rss = d.rss("walstream");
        let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
        let _ = writeln!(
            md,
            "\nTargets for `walstream`: CPU at most {TARGET_VS_PG_WALSTREAM} x pg_walstream: {a:.2} \
             ({}); at most {TARGET_VS_PG_RECVLOGICAL} x pg_recvlogical: {b:.2} ({}); peak RSS at \
             most {TARGET_RSS_MB} MB: {rss:.1} MB ({}). waits: voluntary context switches \
             (`ru_nvcsw`).",
            verdict(a <= TARGET_VS_PG_WALSTREAM),
            verdict(b <= TARGET_VS_PG_RECVLOGICAL),
            verdict(rss <= TARGET_RSS_MB),
        );
        if run.rounds > 1 {
            let _ = writeln!(md, "\nEvery round (CPU s / peak RSS MB):\n");
            for (name, list) in CONSUMERS.iter().zip(&d.samples) {
                let rounds: Vec<String> = list
                    .iter()
                    .map(|s| format!("{:.2} / {:.1}", s.cpu_s(), kib_to_mb(s.max_rss_kib)))
                    .collect();
                let _ = writeln!(md, "- {name}: {}", rounds.join(", "));
            }
        }
    }
    if let Some(b) = big {
        let _ = writeln!(
            md,
            "\n## Big transaction, PostgreSQL {}\n\nOne transaction of {} rows ({} MiB of \
             {BIG_VALUE_BYTES}-byte text values, {} bytes of WAL), streamed while in progress \
             (protocol {}, `streaming = on`). `walstream-tx`: a `TransactionStream` with \
             `memory_budget({} MiB)`, every change read (`tx.changes()`, spilled ones back \
             from their file); `pg_recvlogical` for reference (writes the stream to /dev/null). \
             One round.\n",
            b.version,
            b.rows,
            b.mb,
            b.wal_bytes,
            super::runs::big_protocol(b.major).number(),
            b.budget_mib
        );
        let _ = writeln!(
            md,
            "| consumer | wall s | MB/s | user s | sys s | CPU s | peak RSS MB | peak RSS / budget |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|"
        );
        for (name, s) in BIG_CONSUMERS.iter().zip(&b.samples) {
            let _ = writeln!(
                md,
                "| {name} | {:.2} | {:.1} | {:.2} | {:.2} | {:.2} | {:.1} | {:.2} |",
                s.wall_s,
                b.mb as f64 / s.wall_s,
                s.user_s,
                s.sys_s,
                s.cpu_s(),
                kib_to_mb(s.max_rss_kib),
                kib_to_mb(s.max_rss_kib) / b.budget_mib as f64,
            );
        }
        let _ = b.major;
    }
    if let Some(backup) = backup {
        md.push_str(backup);
    }
    if let Some(parse) = parse {
        let _ = writeln!(
            md,
            "\n## Parse (criterion, `target/bench/parse-summary.md`{})\n\n\
             Per corpus; `walstream/owned` is walstream's owned events built through walproto's \
             public API (`Decoder` + `TupleBuf::from_view` + the relation's `Arc`), as the \
             driver's `Follower` (crate-private) makes them, each value read as an owned \
             `ColumnValue` (`values()`); `walstream/owned-view` the same events with the values \
             read borrowed (`tuple().columns()`).\n\n{}",
            if run.parse_ran {
                ", this run"
            } else {
                ", from an earlier run: not re-run with --no-parse"
            },
            parse.trim_end()
        );
    }
    md
}

/// A number for the JSON report: NaN and infinities, which JSON lacks, become `null`.
pub(super) fn json_num(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.4}")
    } else {
        "null".to_owned()
    }
}

/// A string for the JSON report: quotes and backslashes dropped, so no escaping is needed.
pub(super) fn json_str(s: &str) -> String {
    s.replace(['"', '\\'], "")
}

/// One consumer's figures as a one-line JSON object; `extra` is appended inside it.
pub(super) fn sample_json(name: &str, s: &Sample, extra: &str) -> String {
    format!(
        "{{\"name\": \"{name}\", \"wall_s\": {}, \"user_s\": {}, \"sys_s\": {}, \"cpu_s\": {}, \
         \"peak_rss_mb\": {}, \"waits\": {}, \"rows_decoded\": {}{extra}}}",
        json_num(s.wall_s),
        json_num(s.user_s),
        json_num(s.sys_s),
        json_num(s.cpu_s()),
        json_num(kib_to_mb(s.max_rss_kib)),
        s.nvcsw,
        s.rows.map_or("null".to_owned(), |r| r.to_string()),
    )
}

/// The JSON report (`report.json`), written one object per line where `--compare` and
/// `parse_summary` read it back; `backup` is the backup bench's object (`backup::report_json`).
pub(super) fn report_json(
    run: &RunInfo,
    headline: &[Ratio],
    drains: &[Drain],
    big: Option<&Big>,
    backup: Option<&str>,
    parse: Option<&str>,
    figures: &[(String, f64)],
) -> String {
    let mut json = String::new();
    let _ = write!(
        json,
        "{{\n  \"quick\": {},\n  \"cores\": {},\n  \"cpu\": \"{}\",\n  \"load_average\": \"{}\",\n  \
         \"seconds\": {:.0},\n  \"rows\": {},\n  \"rows_per_transaction\": {ROWS_PER_TX},\n  \
         \"rounds\": {},\n  \"headline\": [",
        run.quick,
        run.cores,
        json_str(&run.cpu),
        json_str(&run.load),
        run.seconds,
        run.rows,
        run.rounds
    );
    for (i, r) in headline.iter().enumerate() {
        let _ = write!(
            json,
            "{}\n    {{\"key\": \"{}\", \"label\": \"{}\", \"ratio\": {}}}",
            if i == 0 { "" } else { "," },
            r.key,
            json_str(&r.label),
            json_num(r.value)
        );
    }
    json.push_str("\n  ],\n  \"drain\": [");
    for (i, d) in drains.iter().enumerate() {
        let pgw = d.cpu("pg_walstream");
        let recv = d.cpu("pg_recvlogical");
        let _ = write!(
            json,
            "{}\n    {{\"major\": {}, \"server_version\": \"{}\", \"wal_bytes\": {}, \"consumers\": [",
            if i == 0 { "" } else { "," },
            d.major,
            json_str(&d.version),
            d.wal_bytes
        );
        for (j, (name, s)) in CONSUMERS.iter().zip(&d.medians).enumerate() {
            let extra = format!(
                ", \"cpu_vs_pg_walstream\": {}, \"cpu_vs_pg_recvlogical\": {}",
                json_num(ratio(s.cpu_s(), pgw)),
                json_num(ratio(s.cpu_s(), recv))
            );
            let _ = write!(
                json,
                "{}\n      {}",
                if j == 0 { "" } else { "," },
                sample_json(name, s, &extra)
            );
        }
        json.push_str("\n    ]}");
    }
    json.push_str("\n  ],\n  \"big_transaction\": ");
    match big {
        Some(b) => {
            let _ = write!(
                json,
                "{{\"major\": {}, \"server_version\": \"{}\", \"mib\": {}, \"rows\": {}, \
                 \"wal_bytes\": {}, \"budget_mib\": {}, \"consumers\": [",
                b.major,
                json_str(&b.version),
                b.mb,
                b.rows,
                b.wal_bytes,
                b.budget_mib
            );
            for (j, (name, s)) in BIG_CONSUMERS.iter().zip(&b.samples).enumerate() {
                let _ = write!(
                    json,
                    "{}\n      {}",
                    if j == 0 { "" } else { "," },
                    sample_json(name, s, "")
                );
            }
            json.push_str("\n    ]}");
        }
        None => json.push_str("null"),
    }
    json.push_str(",\n  \"backup\": ");
    json.push_str(backup.unwrap_or("null"));
    json.push_str(",\n  \"parse\": ");
    match parse {
        Some(p) => json.push_str(p.trim().replace('\n', "\n  ").as_str()),
        None => json.push_str("null"),
    }
    json.push_str(",\n  \"figures\": [");
    for (i, (key, value)) in figures.iter().enumerate() {
        let _ = write!(
            json,
            "{}\n    {{\"key\": \"{key}\", \"value\": {}}}",
            if i == 0 { "" } else { "," },
            json_num(*value)
        );
    }
    json.push_str("\n  ]\n}\n");
    json
}

/// A horizontal bar chart of the headline ratios, written by hand (no plotting dependency):
/// one bar per ratio on a linear axis from 0, a line at 1 (parity), green at or below it.
pub(super) fn ratios_svg(headline: &[Ratio]) -> String {
    const LABEL_W: f64 = 470.0;
    const BAR_W: f64 = 420.0;
    const ROW_H: f64 = 22.0;
    const TOP: f64 = 50.0;
    let max = headline
        .iter()
        .map(|r| r.value)
        .fold(1.5f64, f64::max)
        .min(5.0)
        .ceil();
    let x = |v: f64| LABEL_W + BAR_W * (v.min(max) / max);
    let height = TOP + ROW_H * headline.len() as f64 + 40.0;
    let width = LABEL_W + BAR_W + 70.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"20\" font-size=\"15\" font-weight=\"bold\">walstream / baseline \
         (lower is better; below 1: walstream ahead)</text>\n"
    );
    // Grid: every 0.5.
    let mut tick = 0.0;
    while tick <= max + 1e-9 {
        let _ = writeln!(
            svg,
            "<line x1=\"{0:.1}\" y1=\"{1}\" x2=\"{0:.1}\" y2=\"{2}\" stroke=\"{3}\" \
             stroke-width=\"{4}\"/>\n<text x=\"{0:.1}\" y=\"{5}\" text-anchor=\"middle\" \
             fill=\"#555\">{tick:.1}</text>",
            x(tick),
            TOP - 8.0,
            TOP + ROW_H * headline.len() as f64,
            if (tick - 1.0).abs() < 1e-9 {
                "#333"
            } else {
                "#ddd"
            },
            if (tick - 1.0).abs() < 1e-9 { 1.5 } else { 1.0 },
            TOP - 12.0
        );
        tick += 0.5;
    }
    for (i, r) in headline.iter().enumerate() {
        let y = TOP + ROW_H * i as f64;
        let color = if r.value <= 1.0 { "#2e7d32" } else { "#c62828" };
        let label = r
            .label
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{label}</text>\n\
             <rect x=\"{LABEL_W}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{color}\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\">{:.2}{}</text>",
            LABEL_W - 8.0,
            y + 15.0,
            y + 4.0,
            (x(r.value) - LABEL_W).max(1.0),
            ROW_H - 8.0,
            x(r.value) + 4.0,
            y + 15.0,
            r.value,
            if r.value > max { " (off scale)" } else { "" }
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// A figure worse than in the saved run.
pub(super) struct Worse {
    /// The figure's key.
    key: String,
    /// Its value in the saved run.
    old: f64,
    /// Its value in this run.
    new: f64,
}

/// The figures more than [`COMPARE_TOLERANCE`] worse than in `old` (a `report.json`); keys in
/// only one of the two are skipped.
pub(super) fn compare(old: &str, new: &[(String, f64)]) -> Vec<Worse> {
    let old: Vec<(String, f64)> = old
        .lines()
        .filter_map(|l| Some((str_field(l, "key")?.to_owned(), field(l, "value")?)))
        .collect();
    new.iter()
        .filter_map(|(key, new)| {
            let (_, old) = old.iter().find(|(k, _)| k == key)?;
            // A small absolute slack, so that 0 -> 0.00001 allocations is not a regression.
            let tolerance = if key.starts_with(super::instructions::KEY_PREFIX) {
                super::instructions::TOLERANCE
            } else {
                COMPARE_TOLERANCE
            };
            let worse = *new > old * (1.0 + tolerance) && *new - *old > 1e-3;
            worse.then(|| Worse {
                key: key.clone(),
                old: *old,
                new: *new,
            })
        })
        .collect()
}

/// The section of the Markdown report on the comparison with `path`: what got more than
/// [`COMPARE_TOLERANCE`] worse, or that nothing did.
pub(super) fn compare_md(md: &mut String, path: &Path, worse: &[Worse]) {
    let _ = writeln!(
        md,
        "\n## Compared with `{}` (flagged: more than {:.0}% worse)\n",
        path.display(),
        COMPARE_TOLERANCE * 100.0
    );
    if worse.is_empty() {
        let _ = writeln!(md, "Nothing is more than 10% worse.");
    } else {
        let _ = writeln!(md, "| figure | old | new | change |\n|---|---:|---:|---:|");
        for w in worse {
            let _ = writeln!(
                md,
                "| {} | {:.4} | {:.4} | {:+.1}% |",
                w.key,
                w.old,
                w.new,
                (w.new / w.old - 1.0) * 100.0
            );
        }
    }
}

/// Writes `contents` to `path`, naming the path on failure.
pub(super) fn write(path: &Path, contents: &str) -> Result<()> {
    fs::write(path, contents).map_err(|e| format!("writing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_flags_only_what_got_more_than_ten_percent_worse() {
        let old = "  \"figures\": [\n    {\"key\": \"a\", \"value\": 1.0000},\n    \
                   {\"key\": \"b\", \"value\": 2.0000},\n    {\"key\": \"c\", \"value\": 0.0000}\n  ]";
        let new = vec![
            ("a".to_owned(), 1.05),
            ("b".to_owned(), 2.5),
            ("c".to_owned(), 0.0),
            ("d".to_owned(), 9.0),
        ];
        let worse = compare(old, &new);
        assert_eq!(worse.len(), 1);
        assert_eq!(worse.first().map(|w| w.key.as_str()), Some("b"));
    }
}
