//! `--metrics-addr` and `--stats-interval`: a running stream's [`StreamStats`] as a Prometheus
//! text exposition at `http://HOST:PORT/metrics` (the names of CLI.md), and as a one-line
//! progress and lag summary on stderr every `--stats-interval` seconds.
//!
//! The endpoint is a small HTTP/1.1 responder on tokio's `TcpListener`: it answers a `GET` of
//! `/metrics` (anything else: 404) and closes the connection. One scrape is a few hundred
//! bytes, so an HTTP framework would add far more than it saves.

use std::fmt::Write as _;
use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use walstream::{CancellationToken, Lsn, StatsHandle, StreamStats};

/// `--metrics-addr` and `--stats-interval`, which `tail` and `record` take.
#[derive(Debug, Default, clap::Args)]
pub(crate) struct ReportArgs {
    /// Serve the stream's metrics in Prometheus text format at http://HOST:PORT/metrics
    /// (port 0: any free port, logged at info level).
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) metrics_addr: Option<String>,
    /// Print a one-line progress and lag summary on stderr every SECS seconds.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub(crate) stats_interval: Option<u64>,
}

/// The longest request head read (a scraper's is a few hundred bytes).
const MAX_REQUEST: usize = 8 * 1024;

/// How long a scraper may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The metrics endpoint and the stats line of one stream; both stop when this is dropped.
#[derive(Debug)]
pub(crate) struct Reporting {
    stop: CancellationToken,
}

impl Drop for Reporting {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Serves `/metrics` on `--metrics-addr` (when given) and prints the stats line every
/// `--stats-interval` (when given) for the stream of `slot` that `stats` reads.
pub(crate) async fn start(
    slot: &str,
    stats: StatsHandle,
    args: &ReportArgs,
) -> io::Result<Reporting> {
    let stop = CancellationToken::new();
    let interval = args.stats_interval.map(Duration::from_secs);
    if let Some(addr) = args.metrics_addr.as_deref() {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("--metrics-addr {addr}: {e}")))?;
        tracing::info!(addr = %listener.local_addr()?, "serving /metrics");
        tokio::spawn(serve(
            listener,
            slot.to_owned(),
            stats.clone(),
            stop.clone(),
        ));
    }
    if let Some(interval) = interval {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.tick().await;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => eprintln!("{}", stats_line(&stats.stats())),
                }
            }
        });
    }
    Ok(Reporting { stop })
}

/// Accepts scrapers until `stop`.
async fn serve(listener: TcpListener, slot: String, stats: StatsHandle, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((socket, _)) => {
                let body = exposition(&slot, &stats.stats());
                tokio::spawn(async move {
                    if let Err(e) = respond(socket, &body).await {
                        tracing::debug!(error = %e, "a /metrics request");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting a /metrics connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads one request head and answers it.
async fn respond(mut socket: TcpStream, body: &str) -> io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = socket.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(buf.get(..n).unwrap_or_default());
            if head.len() > MAX_REQUEST {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "request head too long",
                ));
            }
        }
        Ok(())
    };
    tokio::time::timeout(REQUEST_TIMEOUT, read)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "request too slow"))??;
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (parts.next(), parts.next());
    let path = path.map(|p| p.split(|&b| b == b'?').next().unwrap_or_default());
    let (status, content_type, body) = match (method, path) {
        (Some(b"GET"), Some(b"/metrics")) => {
            ("200 OK", "text/plain; version=0.0.4; charset=utf-8", body)
        }
        (Some(b"GET"), _) => ("404 Not Found", "text/plain", "not found: try /metrics\n"),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n"),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(response.as_bytes()).await?;
    socket.shutdown().await
}

/// `s` as a Prometheus label value (backslash, quote and newline escaped).
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text exposition of `stats` for the stream of `slot`.
pub(crate) fn exposition(slot: &str, stats: &StreamStats) -> String {
    let slot = label(slot);
    let mut out = String::with_capacity(4096);
    let mut metric = |name: &str, kind: &str, help: &str, values: &[(String, String)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in values {
            let _ = writeln!(out, "{name}{{slot=\"{slot}\"{labels}}} {value}");
        }
    };
    let one = |v: String| vec![(String::new(), v)];
    metric(
        "walstream_received_lsn",
        "gauge",
        "The furthest WAL position received, as a number.",
        &one(stats.received.get().to_string()),
    );
    metric(
        "walstream_flushed_lsn",
        "gauge",
        "The WAL position acknowledged (flushed): what the next status update reports, as a number.",
        &one(stats.safe_flush.get().to_string()),
    );
    metric(
        "walstream_server_wal_end_lsn",
        "gauge",
        "The server's wal_end as last sent, as a number.",
        &one(stats.server_wal_end.get().to_string()),
    );
    metric(
        "walstream_lag_bytes",
        "gauge",
        "The server's wal_end minus the flushed position.",
        &one(stats.lag_bytes.to_string()),
    );
    metric(
        "walstream_lag_seconds",
        "gauge",
        "Now minus the commit time of the newest transaction delivered (0 while idle and caught up).",
        &one(stats.lag_seconds.to_string()),
    );
    let kinds: Vec<(String, String)> = stats
        .events
        .iter()
        .map(|(kind, n)| (format!(",kind=\"{kind}\""), n.to_string()))
        .collect();
    metric(
        "walstream_events_total",
        "counter",
        "Events delivered, by kind.",
        &kinds,
    );
    metric(
        "walstream_transactions_total",
        "counter",
        "Transactions delivered.",
        &one(stats.transactions.to_string()),
    );
    metric(
        "walstream_received_bytes_total",
        "counter",
        "Bytes of replication stream received.",
        &one(stats.received_bytes.to_string()),
    );
    metric(
        "walstream_spilled_bytes_total",
        "counter",
        "Bytes of large transactions' changes written to spill files.",
        &one(stats.spilled_bytes.to_string()),
    );
    metric(
        "walstream_reconnects_total",
        "counter",
        "Reconnects after a lost connection.",
        &one(stats.reconnects.to_string()),
    );
    metric(
        "walstream_status_updates_total",
        "counter",
        "Status updates sent to the server.",
        &one(stats.status_updates.to_string()),
    );
    if let Some(status) = &stats.slot_wal_status {
        metric(
            "walstream_slot_wal_status",
            "gauge",
            "The slot's wal_status as last read: 1 for the current status.",
            &status
                .gauge_samples()
                .into_iter()
                .map(|(name, v)| (format!(",status=\"{name}\""), v.to_string()))
                .collect::<Vec<_>>(),
        );
    }
    if let Some(size) = stats.slot_safe_wal_size {
        metric(
            "walstream_slot_safe_wal_size_bytes",
            "gauge",
            "The slot's safe_wal_size as last read.",
            &one(size.to_string()),
        );
    }
    out
}

/// The `--stats-interval` line.
pub(crate) fn stats_line(s: &StreamStats) -> String {
    format!(
        "walstream: received {}, acknowledged {}, server wal_end {}, lag {} bytes {:.1} s; \
         {} events, {} transactions, {} bytes received, {} reconnects",
        s.received,
        s.safe_flush,
        s.server_wal_end,
        s.lag_bytes,
        s.lag_seconds,
        s.events.total(),
        s.transactions,
        s.received_bytes,
        s.reconnects,
    )
}

/// `record`'s `--stats-interval` line: frames and bytes written, the end of the last whole
/// transaction written, and what the server was told is flushed.
pub(crate) fn record_line(frames: u64, bytes: u64, written: Lsn, acknowledged: Lsn) -> String {
    format!(
        "walstream record: {frames} frames, {bytes} bytes written, transactions written to \
         {written}, acknowledged {acknowledged}"
    )
}

/// A timer that fires every interval, or never without one (a `select!` arm).
pub(crate) struct Ticker(Option<tokio::time::Interval>);

impl Ticker {
    /// Fires every `every` (the first time after one interval), or never.
    pub(crate) fn new(every: Option<Duration>) -> Self {
        Self(every.map(|every| {
            let start = tokio::time::Instant::now() + every;
            let mut interval = tokio::time::interval_at(start, every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval
        }))
    }

    /// The next tick.
    pub(crate) async fn tick(&mut self) {
        match &mut self.0 {
            Some(interval) => {
                interval.tick().await;
            }
            None => std::future::pending().await,
        }
    }
}
