//! What the runs measured and what is computed from it: the medians of the rounds, the
//! headline ratios against the baselines, and the figures `--compare` looks at.

use super::{BIG_CONSUMERS, CONSUMERS};

/// One child process's measurements.
#[derive(Clone, Debug, Default)]
pub(super) struct Sample {
    /// Wall time from spawn to reaping, seconds.
    pub(super) wall_s: f64,
    /// User CPU time, seconds.
    pub(super) user_s: f64,
    /// System CPU time, seconds.
    pub(super) sys_s: f64,
    /// Peak resident set size, KiB.
    pub(super) max_rss_kib: u64,
    /// Voluntary context switches: how often the consumer blocked waiting for the socket.
    pub(super) nvcsw: u64,
    /// Row events the consumer reported decoding (`None` for pg_recvlogical).
    pub(super) rows: Option<u64>,
}

impl Sample {
    /// User plus system CPU time, seconds.
    pub(super) fn cpu_s(&self) -> f64 {
        self.user_s + self.sys_s
    }
}

/// The drain of one major: the medians per consumer (in [`CONSUMERS`] order) and every round.
pub(super) struct Drain {
    /// The PostgreSQL major drained from.
    pub(super) major: u32,
    /// The server's `server_version`.
    pub(super) version: String,
    /// WAL bytes from the oldest slot's restart LSN to the end of the backlog.
    pub(super) wal_bytes: u64,
    /// The median of each figure per consumer.
    pub(super) medians: Vec<Sample>,
    /// Every round's sample per consumer.
    pub(super) samples: Vec<Vec<Sample>>,
}

impl Drain {
    /// The medians of consumer `name`.
    pub(super) fn get(&self, name: &str) -> Option<&Sample> {
        CONSUMERS
            .iter()
            .position(|c| *c == name)
            .and_then(|i| self.medians.get(i))
    }

    /// The median CPU seconds of consumer `name` (NaN when it did not run).
    pub(super) fn cpu(&self, name: &str) -> f64 {
        self.get(name).map_or(f64::NAN, Sample::cpu_s)
    }

    /// The median peak RSS of consumer `name` in MB (NaN when it did not run).
    pub(super) fn rss(&self, name: &str) -> f64 {
        self.get(name)
            .map_or(f64::NAN, |s| kib_to_mb(s.max_rss_kib))
    }
}

/// The big-transaction bench.
pub(super) struct Big {
    /// The PostgreSQL major it ran on (the newest installed).
    pub(super) major: u32,
    /// The server's `server_version`.
    pub(super) version: String,
    /// MiB of row values in the transaction.
    pub(super) mb: u64,
    /// Rows in the transaction.
    pub(super) rows: u64,
    /// WAL bytes of the transaction.
    pub(super) wal_bytes: u64,
    /// The `TransactionStream`'s memory budget, MiB.
    pub(super) budget_mib: u64,
    /// In [`BIG_CONSUMERS`] order.
    pub(super) samples: Vec<Sample>,
}

/// The median of each figure on its own (the middle value; the mean of the two middle ones
/// for an even count).
pub(super) fn median(samples: &[Sample]) -> Sample {
    fn mid(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        match n {
            0 => 0.0,
            _ if n % 2 == 1 => v.get(n / 2).copied().unwrap_or(0.0),
            _ => {
                (v.get(n / 2 - 1).copied().unwrap_or(0.0) + v.get(n / 2).copied().unwrap_or(0.0))
                    / 2.0
            }
        }
    }
    Sample {
        wall_s: mid(samples.iter().map(|s| s.wall_s).collect()),
        user_s: mid(samples.iter().map(|s| s.user_s).collect()),
        sys_s: mid(samples.iter().map(|s| s.sys_s).collect()),
        max_rss_kib: mid(samples.iter().map(|s| s.max_rss_kib as f64).collect()) as u64,
        nvcsw: mid(samples.iter().map(|s| s.nvcsw as f64).collect()) as u64,
        rows: samples.first().and_then(|s| s.rows),
    }
}

/// KiB (as `ru_maxrss` counts) to MB (MiB, as the report prints).
pub(super) fn kib_to_mb(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// `a / b`, or NaN when the baseline `b` is missing or zero (NaN figures are left out).
pub(super) fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        f64::NAN
    }
}

/// One bench of one corpus from `parse-summary.json`.
#[derive(Clone, Debug, Default)]
pub(super) struct ParseRow {
    /// The corpus name (`mixed`, `wide`, ...).
    pub(super) corpus: String,
    /// The bench name (`walproto/borrowed`, `pg_walstream/parse`, ...).
    pub(super) bench: String,
    /// Nanoseconds per message.
    pub(super) ns: f64,
    /// Allocations per message (NaN when the summary has none).
    pub(super) allocs: f64,
}

/// The numeric field `key` of a one-line JSON object.
pub(super) fn field(line: &str, key: &str) -> Option<f64> {
    let pat = format!("\"{key}\": ");
    let rest = &line[line.find(&pat)? + pat.len()..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest.get(..end)?.trim().parse().ok()
}

/// The string field `key` of a one-line JSON object.
pub(super) fn str_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\": \"");
    let rest = &line[line.find(&pat)? + pat.len()..];
    rest.get(..rest.find('"')?)
}

/// The rows of `parse-summary.json` as the parse bench writes it (one object per line).
pub(super) fn parse_summary(json: &str) -> Vec<ParseRow> {
    let mut corpus = String::new();
    let mut rows = Vec::new();
    for line in json.lines() {
        if line.contains("\"frame_bytes\"") {
            corpus = str_field(line, "name").unwrap_or_default().to_owned();
        } else if let (Some(bench), Some(ns)) =
            (str_field(line, "name"), field(line, "ns_per_message"))
        {
            rows.push(ParseRow {
                corpus: corpus.clone(),
                bench: bench.to_owned(),
                ns,
                allocs: field(line, "allocs_per_message").unwrap_or(f64::NAN),
            });
        }
    }
    rows
}

/// The time per message of `bench` on `corpus` (NaN when the summary lacks it).
fn parse_ns(parse: &[ParseRow], corpus: &str, bench: &str) -> f64 {
    parse
        .iter()
        .find(|r| r.corpus == corpus && r.bench == bench)
        .map_or(f64::NAN, |r| r.ns)
}

/// A ratio of the headline: ours over a baseline's, lower is better, 1 is parity.
pub(super) struct Ratio {
    /// A stable key, for the JSON report and `--compare`.
    pub(super) key: String,
    /// What the ratio compares, in words.
    pub(super) label: String,
    /// Ours over the baseline.
    pub(super) value: f64,
}

/// The headline ratios: parse time per corpus, drain CPU, wall time and RSS per major, and
/// the big transaction's RSS against its budget; ratios that could not be computed are left out.
pub(super) fn headline(drains: &[Drain], big: Option<&Big>, parse: &[ParseRow]) -> Vec<Ratio> {
    let mut out = Vec::new();
    let mut push = |key: String, label: String, value: f64| {
        if value.is_finite() {
            out.push(Ratio { key, label, value });
        }
    };
    let mut corpora: Vec<&str> = Vec::new();
    for r in parse {
        if !corpora.contains(&r.corpus.as_str()) {
            corpora.push(&r.corpus);
        }
    }
    for c in corpora {
        let pgw_parse = parse_ns(parse, c, "pg_walstream/parse");
        let pgw_decoder = parse_ns(parse, c, "pg_walstream/decoder");
        push(
            format!("parse.{c}.borrowed_vs_pg_walstream_parse"),
            format!("parse {c}: walproto borrowed parse time / pg_walstream parser"),
            ratio(parse_ns(parse, c, "walproto/borrowed"), pgw_parse),
        );
        push(
            format!("parse.{c}.decoder_vs_pg_walstream_parse"),
            format!("parse {c}: walproto Decoder time / pg_walstream parser"),
            ratio(parse_ns(parse, c, "walproto/decoder"), pgw_parse),
        );
        push(
            format!("parse.{c}.owned_vs_pg_walstream_decoder"),
            format!("parse {c}: owned events time / pg_walstream decoder"),
            ratio(parse_ns(parse, c, "walstream/owned"), pgw_decoder),
        );
        push(
            format!("parse.{c}.owned_view_vs_pg_walstream_decoder"),
            format!("parse {c}: owned events, values read borrowed, time / pg_walstream decoder"),
            ratio(parse_ns(parse, c, "walstream/owned-view"), pgw_decoder),
        );
    }
    for d in drains {
        let m = d.major;
        let pgw = d.cpu("pg_walstream");
        push(
            format!("drain.pg{m}.walstream_cpu_vs_pg_walstream"),
            format!("drain PG {m}: walstream CPU / pg_walstream"),
            ratio(d.cpu("walstream"), pgw),
        );
        push(
            format!("drain.pg{m}.walstream_cpu_vs_pg_recvlogical"),
            format!("drain PG {m}: walstream CPU / pg_recvlogical"),
            ratio(d.cpu("walstream"), d.cpu("pg_recvlogical")),
        );
        push(
            format!("drain.pg{m}.nocoalesce_cpu_vs_pg_walstream"),
            format!("drain PG {m}: walstream, coalescing off, CPU / pg_walstream"),
            ratio(d.cpu("walstream-nocoalesce"), pgw),
        );
        push(
            format!("drain.pg{m}.walstream_wall_vs_pg_walstream"),
            format!("drain PG {m}: walstream wall time / pg_walstream"),
            ratio(
                d.get("walstream").map_or(f64::NAN, |s| s.wall_s),
                d.get("pg_walstream").map_or(f64::NAN, |s| s.wall_s),
            ),
        );
        push(
            format!("drain.pg{m}.walstream_rss_vs_pg_walstream"),
            format!("drain PG {m}: walstream peak RSS / pg_walstream"),
            ratio(d.rss("walstream"), d.rss("pg_walstream")),
        );
    }
    if let Some(b) = big {
        if let (Some(tx), Some(recv)) = (b.samples.first(), b.samples.get(1)) {
            push(
                "big.walstream_tx_rss_vs_budget".to_owned(),
                format!(
                    "big transaction ({} MiB): walstream-tx peak RSS / budget ({} MiB)",
                    b.mb, b.budget_mib
                ),
                ratio(kib_to_mb(tx.max_rss_kib), b.budget_mib as f64),
            );
            push(
                "big.walstream_tx_cpu_vs_pg_recvlogical".to_owned(),
                format!(
                    "big transaction ({} MiB): walstream-tx CPU / pg_recvlogical",
                    b.mb
                ),
                ratio(tx.cpu_s(), recv.cpu_s()),
            );
            push(
                "big.walstream_tx_wall_vs_pg_recvlogical".to_owned(),
                format!(
                    "big transaction ({} MiB): walstream-tx wall time / pg_recvlogical",
                    b.mb
                ),
                ratio(tx.wall_s, recv.wall_s),
            );
        }
    }
    out
}

/// Every figure `--compare` looks at, lower is better. Absolute figures carry the size of the
/// workload in their key, so that only runs of the same size are compared.
pub(super) fn figures(
    drains: &[Drain],
    big: Option<&Big>,
    parse: &[ParseRow],
) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = headline(drains, big, parse)
        .into_iter()
        .map(|r| (format!("ratio.{}", r.key), r.value))
        .collect();
    for d in drains {
        let rows = d.medians.first().and_then(|s| s.rows).unwrap_or(0);
        for (name, s) in CONSUMERS.iter().zip(&d.medians) {
            let k = format!("drain.pg{}.rows{rows}.{name}", d.major);
            out.push((format!("{k}.wall_s"), s.wall_s));
            out.push((format!("{k}.cpu_s"), s.cpu_s()));
            out.push((format!("{k}.peak_rss_mb"), kib_to_mb(s.max_rss_kib)));
        }
    }
    if let Some(b) = big {
        for (name, s) in BIG_CONSUMERS.iter().zip(&b.samples) {
            let k = format!("big.{}mib.budget{}mib.{name}", b.mb, b.budget_mib);
            out.push((format!("{k}.wall_s"), s.wall_s));
            out.push((format!("{k}.cpu_s"), s.cpu_s()));
            out.push((format!("{k}.peak_rss_mb"), kib_to_mb(s.max_rss_kib)));
        }
    }
    for r in parse {
        let k = format!("parse.{}.{}", r.corpus, r.bench);
        out.push((format!("{k}.ns_per_message"), r.ns));
        out.push((format!("{k}.allocs_per_message"), r.allocs));
    }
    out.retain(|(_, v)| v.is_finite());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_takes_each_figure_on_its_own() {
        let s = |cpu: f64, rss: u64| Sample {
            user_s: cpu,
            max_rss_kib: rss,
            ..Sample::default()
        };
        let m = median(&[s(3.0, 10), s(1.0, 30), s(2.0, 20)]);
        assert_eq!((m.user_s, m.max_rss_kib), (2.0, 20));
    }

    #[test]
    fn parse_summary_reads_the_bench_rows() {
        let json = "{\n  \"corpora\": [\n    {\"name\": \"mixed\", \"messages\": 10, \"frame_bytes\": 100, \"benches\": [\n      \
                    {\"name\": \"floor\", \"ns_per_message\": 10.500, \"mb_per_s\": 1.0, \"allocs_per_message\": 0.00000}\n    ]}\n  ]\n}\n";
        let rows = parse_summary(json);
        assert_eq!(rows.len(), 1);
        let r = rows.first().cloned().unwrap_or_default();
        assert_eq!(
            (r.corpus.as_str(), r.bench.as_str(), r.ns),
            ("mixed", "floor", 10.5)
        );
    }
}
