//! The physical stream's configuration and its builder.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use walproto::Lsn;

use crate::error::{Error, Result};
use crate::logical::config::DEFAULT_STATUS_INTERVAL;
use crate::session::driver::MAX_BATCH_BYTES;
use crate::session::retry::RetryPolicy;

/// The most WAL one XLogData message carries: the walsender's `MAX_SEND_SIZE`, 16 pages of
/// the default 8 kB (a server built with larger pages sends larger messages, which only
/// loosens the memory bound of [`PhysicalStreamConfigBuilder::buffer_bytes`]).
pub const MAX_WAL_MESSAGE: usize = 16 * 8192;

/// How many bytes of WAL may wait for a consumer that does not read; see
/// [`PhysicalStreamConfigBuilder::buffer_bytes`].
pub const DEFAULT_BUFFER_BYTES: usize = 4 << 20;

/// The configuration of a [`PhysicalReplicationStream`](crate::physical::PhysicalReplicationStream).
///
/// Made with [`PhysicalStreamConfig::builder`]:
///
/// ```
/// use std::time::Duration;
/// use walstream::physical::PhysicalStreamConfig;
/// use walstream::Lsn;
///
/// let config = PhysicalStreamConfig::builder()
///     .slot("archiver")
///     .create_slot_if_missing(true)
///     .end_lsn(Lsn::new(0x500_0000))
///     .status_interval(Duration::from_secs(5))
///     .build()?;
/// assert_eq!(config.slot(), Some("archiver"));
/// # Ok::<(), walstream::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct PhysicalStreamConfig {
    pub(crate) slot: Option<String>,
    pub(crate) create_slot: bool,
    pub(crate) temporary_slot: bool,
    pub(crate) start_lsn: Option<Lsn>,
    pub(crate) timeline: Option<u32>,
    pub(crate) end_lsn: Option<Lsn>,
    pub(crate) status_interval: Duration,
    /// `None`: derived from `wal_sender_timeout` at connect.
    pub(crate) receive_timeout: Option<Duration>,
    pub(crate) retry: RetryPolicy,
    pub(crate) hot_standby_feedback: bool,
    pub(crate) buffer_bytes: usize,
    pub(crate) cancel: CancellationToken,
}

impl PhysicalStreamConfig {
    /// A builder with the defaults: no slot, start at the server's current WAL position
    /// (rounded down to its segment's start, as `pg_receivewal` starts) on its timeline, no
    /// end, status every 10 s (or a third of `wal_sender_timeout`), the default
    /// [`RetryPolicy`], no hot standby feedback, [`DEFAULT_BUFFER_BYTES`] of buffer.
    pub fn builder() -> PhysicalStreamConfigBuilder {
        PhysicalStreamConfigBuilder {
            config: PhysicalStreamConfig {
                slot: None,
                create_slot: false,
                temporary_slot: false,
                start_lsn: None,
                timeline: None,
                end_lsn: None,
                status_interval: DEFAULT_STATUS_INTERVAL,
                receive_timeout: None,
                retry: RetryPolicy::default(),
                hot_standby_feedback: false,
                buffer_bytes: DEFAULT_BUFFER_BYTES,
                cancel: CancellationToken::new(),
            },
        }
    }

    /// The physical slot, if any.
    pub fn slot(&self) -> Option<&str> {
        self.slot.as_deref()
    }

    /// The end position, if any.
    pub fn end_lsn(&self) -> Option<Lsn> {
        self.end_lsn
    }

    /// The retry policy.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// The cancellation token the stream obeys.
    pub fn cancellation_token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// How many batches the channel to the consumer holds for [`buffer_bytes`]: each batch
    /// is at most a batch's bytes plus one message.
    ///
    /// [`buffer_bytes`]: PhysicalStreamConfigBuilder::buffer_bytes
    pub(crate) fn channel_batches(&self) -> usize {
        (self.buffer_bytes / (MAX_BATCH_BYTES + MAX_WAL_MESSAGE)).max(1)
    }
}

/// Builds a [`PhysicalStreamConfig`]; see [`PhysicalStreamConfig::builder`].
#[derive(Clone, Debug)]
#[must_use]
pub struct PhysicalStreamConfigBuilder {
    config: PhysicalStreamConfig,
}

impl PhysicalStreamConfigBuilder {
    /// Stream from the physical slot `name`: the server keeps the WAL from the slot's
    /// `restart_lsn` on, the status updates move it, and by default streaming starts at
    /// the start of its segment (`READ_REPLICATION_SLOT`, PostgreSQL 15+).
    pub fn slot(mut self, name: impl Into<String>) -> Self {
        self.config.slot = Some(name.into());
        self
    }

    /// Create the slot, a permanent physical slot that reserves WAL at once (`RESERVE_WAL`),
    /// when it does not exist (as `pg_receivewal --create-slot` does, but in the same run).
    pub fn create_slot_if_missing(mut self, on: bool) -> Self {
        self.config.create_slot = on;
        self
    }

    /// Make the slot a temporary one, created on each connection that streams (the server
    /// drops it when that connection ends, so a killed process leaves nothing behind, as
    /// `pg_basebackup`'s slot for `-X stream`). It holds WAL only while connected: after a
    /// reconnect, streaming resumes only if the server still has the WAL from the resume
    /// position (otherwise the stream ends with the server's error).
    pub fn temporary_slot(mut self, on: bool) -> Self {
        self.config.temporary_slot = on;
        self
    }

    /// Start at `lsn` (a WAL directory's
    /// [`resume_position`](crate::physical::WalWriter::resume_position), say) instead of the
    /// slot's `restart_lsn` or the server's current segment.
    pub fn start_lsn(mut self, lsn: Lsn) -> Self {
        self.config.start_lsn = Some(lsn);
        self
    }

    /// The timeline of the start position, by default the slot's (`restart_tli`) or the
    /// server's. An older timeline is streamed to its end and then followed to the next one.
    pub fn timeline(mut self, timeline: u32) -> Self {
        self.config.timeline = Some(timeline);
        self
    }

    /// Stop once WAL up to `lsn` has been received (as `pg_receivewal --endpos`): the data
    /// beyond it is cut off, [`WalEvent::EndPosition`](crate::physical::WalEvent) follows, and
    /// the stream ends. The driver keeps reporting acknowledgements until shut down.
    pub fn end_lsn(mut self, lsn: Lsn) -> Self {
        self.config.end_lsn = Some(lsn);
        self
    }

    /// The most time between status updates. The server's `wal_sender_timeout` shortens it to
    /// a third of that timeout; a `reply_requested` keepalive is answered at once regardless.
    pub fn status_interval(mut self, interval: Duration) -> Self {
        self.config.status_interval = interval;
        self
    }

    /// The receive timeout, as the logical stream's
    /// ([`ReplicationStreamConfigBuilder::receive_timeout`](crate::ReplicationStreamConfigBuilder::receive_timeout)):
    /// silence this long while reading is a dead connection; zero turns it off.
    pub fn receive_timeout(mut self, timeout: Duration) -> Self {
        self.config.receive_timeout = Some(timeout);
        self
    }

    /// How connection failures are retried.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.config.retry = policy;
        self
    }

    /// Send hot standby feedback with every status update: the xmin set with
    /// [`WalStream::set_standby_xmin`](crate::physical::WalStream::set_standby_xmin) (none
    /// until then), which the server keeps as the slot's (or walsender's) xmin so that
    /// vacuum leaves the rows a standby's queries still see.
    pub fn hot_standby_feedback(mut self, on: bool) -> Self {
        self.config.hot_standby_feedback = on;
        self
    }

    /// About how many bytes of WAL may wait for a consumer that does not read (at least one
    /// batch). The driver hands WAL over in batches closed at
    /// [`MAX_BATCH_BYTES`](crate::MAX_BATCH_BYTES), so a batch holds at most that plus one
    /// message ([`MAX_WAL_MESSAGE`]); the channel holds `n / (MAX_BATCH_BYTES +
    /// MAX_WAL_MESSAGE)` batches (at least 1), and with the batch the driver is filling and the
    /// one the consumer is reading, the WAL held in memory stays below `n` plus two batches.
    /// Past that the socket is not read and the server waits.
    pub fn buffer_bytes(mut self, n: usize) -> Self {
        self.config.buffer_bytes = n;
        self
    }

    /// The token that cancels the stream: on cancellation it sends a last status update, ends
    /// the replication cleanly and ends the stream.
    pub fn cancellation_token(mut self, token: CancellationToken) -> Self {
        self.config.cancel = token;
        self
    }

    /// Checks what can be checked without a server and returns the configuration.
    pub fn build(self) -> Result<PhysicalStreamConfig> {
        let c = &self.config;
        if c.slot.as_deref().is_some_and(str::is_empty) {
            return Err(Error::config("the slot name is empty"));
        }
        if (c.create_slot || c.temporary_slot) && c.slot.is_none() {
            return Err(Error::config(
                "create_slot_if_missing and temporary_slot need a slot name",
            ));
        }
        if c.timeline == Some(0) {
            return Err(Error::config(
                "timeline 0 does not exist (timelines start at 1)",
            ));
        }
        if let (Some(start), Some(end)) = (c.start_lsn, c.end_lsn) {
            if end <= start {
                return Err(Error::config(format!(
                    "the end position {end} is not after the start {start}"
                )));
            }
        }
        if c.status_interval.is_zero() {
            return Err(Error::config("the status interval must not be zero"));
        }
        Ok(self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn builds_refuse_what_cannot_work() {
        let bad = [
            PhysicalStreamConfig::builder().slot(""),
            PhysicalStreamConfig::builder().create_slot_if_missing(true),
            PhysicalStreamConfig::builder().temporary_slot(true),
            PhysicalStreamConfig::builder().timeline(0),
            PhysicalStreamConfig::builder()
                .start_lsn(Lsn::new(10))
                .end_lsn(Lsn::new(10)),
            PhysicalStreamConfig::builder().status_interval(Duration::ZERO),
        ];
        for b in bad {
            let e = b.clone().build().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Config, "{b:?}");
        }
        let c = PhysicalStreamConfig::builder().build().unwrap();
        assert_eq!(c.slot(), None);
        assert_eq!(
            c.channel_batches(),
            DEFAULT_BUFFER_BYTES / (MAX_BATCH_BYTES + MAX_WAL_MESSAGE)
        );
        let tiny = PhysicalStreamConfig::builder()
            .buffer_bytes(1)
            .build()
            .unwrap();
        assert_eq!(tiny.channel_batches(), 1);
    }
}
