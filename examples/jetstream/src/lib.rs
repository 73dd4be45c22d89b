//! An example: committed PostgreSQL transactions into NATS JetStream, each change stored
//! exactly once, with the slot acknowledged only after JetStream has stored the transaction.
//!
//! The call sequence ([`run`] does all of it; the binary parses [`Options`] and calls it):
//!
//! 1. Connect to NATS and make sure the stream exists ([`ensure_stream`]): subjects
//!    `<prefix>.>`, file storage, a duplicate window ([`Options::duplicate_window`]).
//! 2. Open a [`walstream::TransactionStream`] on the slot.
//! 3. For each transaction, [`Publisher::store`]: publish its messages
//!    ([`message::change_message`] or [`message::TransactionBody`]), each with a
//!    `Nats-Msg-Id` made of the slot, the commit LSN and the change's index, and await
//!    JetStream's acknowledgement of every one (retrying the whole transaction until all are
//!    stored; what was stored already comes back as a duplicate and is dropped).
//! 4. Only then acknowledge the transaction on the slot ([`walstream::TransactionStream::ack`]).
//!
//! Why exactly once: the slot's confirmed position never passes a transaction JetStream has not
//! stored (step 4 after step 3), so nothing is lost; whatever PostgreSQL sends again (after a
//! reconnect, a server restart, or a restart of this process, which resumes from the slot's
//! last confirmed position) has the same commit LSN and so the same message ids, and
//! JetStream drops a message whose id it stored within the duplicate window. Within one
//! process a transaction at or below the last stored commit LSN is not even published again.
//! The guarantee therefore needs the duplicate window to be longer than the time between
//! storing a transaction and the slot confirming it plus the longest time this process may
//! be down, and JetStream must keep what it acknowledged (see the README on `sync_interval`).

pub mod message;

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind, stream::StorageType};
use walstream::{
    CancellationToken, LogicalReplicationStream, Lsn, ReplicationStreamConfig, RetryPolicy,
    Transaction, TransactionConfig,
};

pub use message::Granularity;

/// What the binary takes on its command line.
#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "walstream-jetstream",
    about = "Publish a logical replication slot's committed changes into NATS JetStream, \
             each exactly once"
)]
pub struct Options {
    /// The PostgreSQL connection string (key=value or URL).
    #[arg(long)]
    pub conninfo: String,
    /// The logical replication slot (created, permanent, if missing).
    #[arg(long)]
    pub slot: String,
    /// The publication to stream.
    #[arg(long)]
    pub publication: String,
    /// The NATS server.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// The JetStream stream, created with subjects `<subject-prefix>.>` if missing.
    #[arg(long, default_value = "WALSTREAM")]
    pub stream: String,
    /// The first subject token(s): changes go to `<prefix>.<schema>.<table>`.
    #[arg(long, default_value = "walstream")]
    pub subject_prefix: String,
    /// One message per change, or one per transaction.
    #[arg(long, value_enum, default_value_t = Granularity::PerChange)]
    pub granularity: Granularity,
    /// The duplicate window of a stream this creates, in seconds.
    #[arg(long, default_value_t = 120)]
    pub duplicate_window: u64,
    /// How often the slot's position is reported to PostgreSQL, in seconds.
    #[arg(long, default_value_t = 10)]
    pub status_interval: u64,
}

/// What can end [`run`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The replication stream failed (after its retries) or could not start.
    Replication(walstream::Error),
    /// NATS could not be reached at all.
    Connect(async_nats::ConnectError),
    /// The stream could not be created or read.
    Stream {
        /// The stream's name.
        name: String,
        /// Why.
        source: async_nats::Error,
    },
    /// A message of a transaction is larger than the server's `max_payload`: publishing it
    /// again cannot help (use one message per change, or raise `max_payload`).
    TooLarge {
        /// The transaction's commit LSN.
        commit_lsn: Lsn,
        /// The server's `max_payload`, in bytes.
        max_payload: usize,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Replication(e) => write!(f, "replication: {e}"),
            Error::Connect(e) => write!(f, "connecting to NATS: {e}"),
            Error::Stream { name, source } => write!(f, "JetStream stream {name}: {source}"),
            Error::TooLarge {
                commit_lsn,
                max_payload,
            } => write!(
                f,
                "transaction committed at {commit_lsn}: a message is larger than the NATS \
                 server's max_payload of {max_payload} bytes"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Replication(e) => Some(e),
            Error::Connect(e) => Some(e),
            Error::Stream { source, .. } => Some(source.as_ref()),
            Error::TooLarge { .. } => None,
        }
    }
}

impl From<walstream::Error> for Error {
    fn from(e: walstream::Error) -> Self {
        Error::Replication(e)
    }
}

/// Publishes awaiting their acknowledgement at most, per transaction: well under the client's
/// own limit of acknowledgements in flight (which would otherwise make the next publish wait
/// for a permit only an acknowledgement this loop has not awaited yet could free).
const MAX_IN_FLIGHT: usize = 256;

/// The first and the longest pause before publishing a transaction again after a failure.
const RETRY_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(2));

/// How long JetStream may take to acknowledge one publish before the transaction is sent again.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// What publishing one transaction did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stored {
    /// Messages JetStream acknowledged.
    pub messages: usize,
    /// Of those, the ones it had already (dropped as duplicates).
    pub duplicates: usize,
    /// Failed attempts before the one that stored everything.
    pub retries: usize,
}

/// Publishes transactions into JetStream; see the crate docs.
#[derive(Clone, Debug)]
pub struct Publisher {
    context: jetstream::Context,
    slot: String,
    prefix: String,
    granularity: Granularity,
}

impl Publisher {
    /// A publisher of the slot `slot`'s transactions on subjects under `prefix`.
    pub fn new(
        context: jetstream::Context,
        slot: impl Into<String>,
        prefix: impl Into<String>,
        granularity: Granularity,
    ) -> Self {
        Self {
            context,
            slot: slot.into(),
            prefix: prefix.into(),
            granularity,
        }
    }

    /// Publishes `tx` until JetStream has acknowledged every one of its messages, retrying the
    /// whole transaction with backoff after any failure (NATS down, a timeout): returns `None`
    /// when `cancel` fires first, and an error only for a message that can never be published.
    pub async fn store(
        &self,
        tx: &Transaction,
        cancel: &CancellationToken,
    ) -> Result<Option<Stored>, Error> {
        let mut retries = 0;
        let mut backoff = RETRY_BACKOFF.0;
        loop {
            let attempt = tokio::select! {
                _ = cancel.cancelled() => return Ok(None),
                r = self.publish_once(tx) => r,
            };
            match attempt {
                Ok(stored) => return Ok(Some(Stored { retries, ..stored })),
                Err(Attempt::Permanent(e)) => return Err(e),
                Err(Attempt::Failed(reason)) => {
                    retries += 1;
                    tracing::warn!(
                        commit_lsn = %tx.commit_lsn,
                        retries,
                        "publishing again in {backoff:?}: {reason}"
                    );
                    tokio::select! {
                        _ = cancel.cancelled() => return Ok(None),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(RETRY_BACKOFF.1);
                }
            }
        }
    }

    /// One attempt: every message of `tx`, then every acknowledgement.
    async fn publish_once(&self, tx: &Transaction) -> Result<Stored, Attempt> {
        let mut stored = Stored::default();
        let mut in_flight = VecDeque::new();
        let mut whole = message::TransactionBody::new(tx);
        let mut changes = tx.change_stream();
        let mut index = 0;
        let max_payload = self.max_payload();
        while let Some(change) = changes.next_change().await {
            // A spill file that cannot be read back will not be readable on the next attempt
            // either: the stream's own error.
            let change = change.map_err(|e| Attempt::Permanent(Error::Replication(e)))?;
            match self.granularity {
                Granularity::PerChange => {
                    let m =
                        message::change_message(&self.slot, &self.prefix, tx, index, &change.kind);
                    in_flight.push_back(self.publish(tx, m).await?);
                    if in_flight.len() >= MAX_IN_FLIGHT {
                        if let Some(ack) = in_flight.pop_front() {
                            count(&mut stored, ack.await)?;
                        }
                    }
                }
                Granularity::PerTransaction => {
                    whole.push(&change.kind);
                    // Refused as soon as it is too large, not after the whole (perhaps spilled)
                    // transaction was read into memory.
                    if whole.len() > max_payload {
                        return Err(self.too_large(tx));
                    }
                }
            }
            index += 1;
        }
        if self.granularity == Granularity::PerTransaction && !whole.is_empty() {
            let m = whole.finish(&self.slot, &self.prefix, tx);
            in_flight.push_back(self.publish(tx, m).await?);
        }
        for ack in in_flight {
            count(&mut stored, ack.await)?;
        }
        Ok(stored)
    }

    async fn publish(
        &self,
        tx: &Transaction,
        m: message::Outgoing,
    ) -> Result<jetstream::context::PublishAckFuture, Attempt> {
        self.context
            .publish_with_headers(m.subject, m.headers, m.body.into())
            .await
            .map_err(|e| match e.kind() {
                PublishErrorKind::MaxPayloadExceeded => self.too_large(tx),
                _ => Attempt::Failed(e.to_string()),
            })
    }
}

impl Publisher {
    /// The connected server's `max_payload` (the client's default, 1 MiB, before it connected):
    /// what the client itself checks each publish against.
    fn max_payload(&self) -> usize {
        self.context.client().max_payload()
    }

    fn too_large(&self, tx: &Transaction) -> Attempt {
        Attempt::Permanent(Error::TooLarge {
            commit_lsn: tx.commit_lsn,
            max_payload: self.max_payload(),
        })
    }
}

/// Why an attempt to store a transaction failed.
enum Attempt {
    /// Try again.
    Failed(String),
    /// Trying again cannot help.
    Permanent(Error),
}

fn count(
    stored: &mut Stored,
    ack: Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
) -> Result<(), Attempt> {
    let ack = ack.map_err(|e| Attempt::Failed(e.to_string()))?;
    stored.messages += 1;
    stored.duplicates += usize::from(ack.duplicate);
    Ok(())
}

/// The stream `name` with subjects `<prefix>.>`, file storage and a duplicate window of
/// `window`, created if missing (an existing stream is used as it is).
pub async fn ensure_stream(
    context: &jetstream::Context,
    name: &str,
    prefix: &str,
    window: Duration,
) -> Result<jetstream::stream::Stream, Error> {
    context
        .get_or_create_stream(jetstream::stream::Config {
            name: name.to_owned(),
            subjects: vec![format!("{prefix}.>")],
            storage: StorageType::File,
            duplicate_window: window,
            ..Default::default()
        })
        .await
        .map_err(|e| Error::Stream {
            name: name.to_owned(),
            source: e.into(),
        })
}

/// Connects to NATS with reconnects that never give up and come quickly (a restarted server
/// is found again within a second), including the first connection.
pub async fn connect_nats(url: &str) -> Result<async_nats::Client, Error> {
    async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis(100)
                .saturating_mul(u32::try_from(attempts).unwrap_or(u32::MAX))
                .min(Duration::from_secs(1))
        })
        .connect(url)
        .await
        .map_err(Error::Connect)
}

/// Streams the slot into JetStream until `cancel` fires (then ends cleanly at a transaction
/// boundary) or an error that retrying cannot help.
///
/// PostgreSQL and NATS must be reachable when it starts (the stream is looked up or created,
/// the slot is checked): a failure there is returned at once, for a supervisor to start the
/// process again. Once streaming, outages of either are ridden out: the replication stream
/// reconnects without a limit on attempts, and a transaction is published again until
/// JetStream has stored it.
pub async fn run(options: &Options, cancel: CancellationToken) -> Result<(), Error> {
    let client = connect_nats(&options.nats_url).await?;
    let context = jetstream::ContextBuilder::new()
        .timeout(ACK_TIMEOUT)
        .build(client);
    ensure_stream(
        &context,
        &options.stream,
        &options.subject_prefix,
        Duration::from_secs(options.duplicate_window),
    )
    .await?;
    let publisher = Publisher::new(
        context,
        &options.slot,
        &options.subject_prefix,
        options.granularity,
    );
    let config = ReplicationStreamConfig::builder(&options.slot, [&options.publication])
        .create_slot_if_missing(walstream::CreateSlot::Permanent)
        .retry(RetryPolicy::forever())
        .status_interval(Duration::from_secs(options.status_interval))
        .cancellation_token(cancel.child_token())
        .build()?;
    let mut txs = LogicalReplicationStream::connect(&options.conninfo, config)
        .await?
        .start()
        .into_transactions(TransactionConfig::default());
    tracing::info!(slot = %options.slot, stream = %options.stream, "streaming");
    // The commit LSN of the last transaction JetStream stored, from this process.
    let mut last_stored: Option<Lsn> = None;
    loop {
        let tx = tokio::select! {
            _ = cancel.cancelled() => break,
            tx = txs.next_transaction() => tx?,
        };
        let Some(tx) = tx else { break };
        // After a reconnect the server sends again what the slot had not confirmed: what this
        // process stored already is acknowledged without publishing it again.
        if last_stored.is_some_and(|l| tx.commit_lsn <= l) {
            txs.ack(&tx);
            continue;
        }
        let stored = match publisher.store(&tx, &cancel).await {
            Ok(Some(stored)) => stored,
            Ok(None) => break,
            Err(e) => {
                // A clean end all the same: the server learns what was stored before this
                // transaction, and sends it again from there to the next run.
                if let Err(shutdown) = txs.shutdown().await {
                    tracing::warn!("stopping the replication stream: {shutdown}");
                }
                return Err(e);
            }
        };
        tracing::info!(
            commit_lsn = %tx.commit_lsn,
            changes = tx.len(),
            messages = stored.messages,
            duplicates = stored.duplicates,
            retries = stored.retries,
            "stored"
        );
        last_stored = Some(tx.commit_lsn);
        txs.ack(&tx);
    }
    let confirmed = txs.shutdown().await?;
    tracing::info!(%confirmed, "stopped");
    Ok(())
}
