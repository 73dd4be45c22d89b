//! Copying one big table on several connections: its pages split into ranges
//! (`ctid >= '(a,0)' AND ctid < '(b,0)'`), each range one `COPY` on whichever connection is
//! free, every connection inside a `REPEATABLE READ` transaction that imported the slot's
//! exported snapshot, so every range sees the same rows the stream starts after.
//!
//! The ranges' rows reach the consumer interleaved, in the order the copies produce them.
//! Memory stays bounded: each range is streamed in batches of at most about
//! [`MAX_BATCH_BYTES`](crate::MAX_BATCH_BYTES), and the channel from the copies to the
//! delivery holds two batches per connection.

use std::sync::Arc;

use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinSet;
use walconn::{quote_literal, Connection};
use walproto::Lsn;

use super::{copy_rows, CopyOutBatch, Table};
use crate::error::{Error, ErrorKind, Result};
use crate::logical::event::ChangeEvent;

/// Ranges per connection: more ranges than connections, so that one slow range (pages
/// denser than the others) does not leave the other connections idle at the end.
const RANGES_PER_CONNECTION: u64 = 4;

/// One range of one table's pages: `None` bounds are open.
struct Job {
    table: Arc<Table>,
    sql: String,
    consistent_point: Lsn,
}

/// What the copying connections report.
enum Report {
    Rows(CopyOutBatch),
    /// A range copied: its rows and `COPY` bytes.
    Done(u64, u64),
}

/// The connections that copy ranges, each in its own task.
pub(super) struct Pool {
    jobs: Option<mpsc::UnboundedSender<Job>>,
    reports: mpsc::Receiver<Report>,
    workers: JoinSet<Result<()>>,
}

fn closed() -> Error {
    Error::new(
        ErrorKind::Closed,
        "a connection copying the initial snapshot stopped",
    )
}

impl Pool {
    /// Opens `n` connections, each importing `snapshot` before this returns.
    pub(super) async fn start(config: &walconn::Config, snapshot: &str, n: usize) -> Result<Self> {
        let import = format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT {}",
            quote_literal(snapshot)
        );
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            let mut conn = Connection::connect(config).await?;
            conn.simple_query(&import).await?;
            conns.push(conn);
        }
        let (jobs, rx) = mpsc::unbounded_channel();
        let rx = Arc::new(Mutex::new(rx));
        let (tx, reports) = mpsc::channel(2 * n);
        let mut workers = JoinSet::new();
        for conn in conns {
            workers.spawn(work(conn, rx.clone(), tx.clone()));
        }
        Ok(Self {
            jobs: Some(jobs),
            reports,
            workers,
        })
    }

    /// Copies `table` in ranges of its pages, handing the rows to `deliver`; returns the
    /// rows and `COPY` bytes.
    pub(super) async fn copy<F, Fut>(
        &mut self,
        table: &Table,
        consistent_point: Lsn,
        deliver: &mut F,
    ) -> Result<(u64, u64)>
    where
        F: FnMut(Vec<ChangeEvent>, usize) -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        let ranges = ranges(table.pages, self.workers.len());
        let count = ranges.len();
        let shared = Arc::new(table.clone());
        let jobs = self.jobs.as_ref().ok_or_else(closed)?;
        for range in ranges {
            jobs.send(Job {
                table: shared.clone(),
                sql: table.copy_sql(Some(range)),
                consistent_point,
            })
            .map_err(|_| closed())?;
        }
        let (mut done, mut rows, mut bytes) = (0, 0, 0);
        while done < count {
            let report = tokio::select! {
                report = self.reports.recv() => report.ok_or_else(closed)?,
                // A connection ends before `finish` only on an error or a panic: either way
                // its ranges would never be done.
                Some(ended) = self.workers.join_next() => {
                    return Err(ended_early(ended));
                }
            };
            match report {
                Report::Rows(batch) => deliver(batch.events, batch.bytes).await?,
                Report::Done(r, b) => {
                    done += 1;
                    rows += r;
                    bytes += b;
                }
            }
        }
        Ok((rows, bytes))
    }

    /// Ends the connections' transactions and closes them.
    pub(super) async fn finish(mut self) -> Result<()> {
        self.jobs = None;
        while let Some(joined) = self.workers.join_next().await {
            if !matches!(joined, Ok(Ok(()))) {
                return Err(ended_early(joined));
            }
        }
        Ok(())
    }
}

/// The error of a connection's task that ended while ranges were left.
fn ended_early(ended: std::result::Result<Result<()>, tokio::task::JoinError>) -> Error {
    match ended {
        Ok(Err(e)) => e,
        Ok(Ok(())) => closed(),
        Err(e) => Error::new(
            ErrorKind::Closed,
            format!("a connection copying the initial snapshot failed: {e}"),
        ),
    }
}

/// `workers` connections' share of `pages`: up to [`RANGES_PER_CONNECTION`] ranges each,
/// the first open at its start and the last at its end.
fn ranges(pages: u64, workers: usize) -> Vec<(Option<u64>, Option<u64>)> {
    let k = (workers as u64)
        .saturating_mul(RANGES_PER_CONNECTION)
        .clamp(1, pages.max(1));
    let bound = |i: u64| (u128::from(pages) * u128::from(i) / u128::from(k)) as u64;
    (0..k)
        .map(|i| {
            (
                Some(bound(i)).filter(|_| i > 0),
                Some(bound(i + 1)).filter(|_| i + 1 < k),
            )
        })
        .collect()
}

/// One connection: copies the ranges it takes until there are none, then commits.
async fn work(
    mut conn: Connection,
    jobs: Arc<Mutex<mpsc::UnboundedReceiver<Job>>>,
    reports: mpsc::Sender<Report>,
) -> Result<()> {
    loop {
        let job = jobs.lock().await.recv().await;
        let Some(job) = job else { break };
        let reports = &reports;
        let mut out = CopyOutBatch::default();
        let copied = copy_rows(
            &mut conn,
            &job.table,
            &job.sql,
            job.consistent_point,
            &mut out,
            |batch| async move {
                reports
                    .send(Report::Rows(batch))
                    .await
                    .map_err(|_| closed())
            },
        )
        .await;
        // On an error the task ends with it, which the delivery sees (`Pool::copy`).
        let (rows, bytes) = copied?;
        if !out.events.is_empty() {
            reports
                .send(Report::Rows(out))
                .await
                .map_err(|_| closed())?;
        }
        reports
            .send(Report::Done(rows, bytes))
            .await
            .map_err(|_| closed())?;
    }
    conn.simple_query("COMMIT").await?;
    conn.close().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_every_page_once() {
        assert_eq!(ranges(0, 3), [(None, None)]);
        assert_eq!(ranges(1, 3), [(None, None)]);
        assert_eq!(
            ranges(3, 1),
            [(None, Some(1)), (Some(1), Some(2)), (Some(2), None)]
        );
        for (pages, workers) in [(10, 2), (1000, 3), (7, 4), (12345, 8)] {
            let r = ranges(pages, workers);
            assert!(r.len() as u64 <= pages.min(workers as u64 * RANGES_PER_CONNECTION));
            assert_eq!(r.first().unwrap().0, None);
            assert_eq!(r.last().unwrap().1, None);
            for w in r.windows(2) {
                assert_eq!(w[0].1, w[1].0);
                assert!(w[0].1.unwrap() > w[0].0.unwrap_or(0));
            }
        }
    }
}
