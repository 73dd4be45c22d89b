//! JSON lines for replication messages: the schema of `shared/CLI.md` ("JSON lines").
//!
//! The contract's lines are written by [`walproto::json`], which the wasm capture inspector
//! shares, so that the page and `walstream decode` agree byte for byte. This module puts the
//! CLI's choices in front of it: the [`Output`] of `--format` and `--typed`. With `--typed`,
//! row values go through `typed.rs`; with `--format wal2json`, messages go to `wal2json.rs`
//! instead, and the lines wal2json has no form for (relations, reconnects; `decode` leaves out
//! keepalives) are left out.

use walproto::json::ValueWriter;
pub(crate) use walproto::json::{base64, keepalive, string, tag_display, type_name, RenderError};
use walproto::pgoutput::{Column, Message, Streaming};
use walproto::{Decoder, Lsn, RelationInfo};

/// `--format`: the contract's JSON lines, or wal2json's `format-version 2`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// One object per pgoutput message, with "type" and "lsn" first.
    #[default]
    Json,
    /// wal2json's format-version 2: one object per change.
    Wal2json,
}

/// How lines are written: the format, and whether values are rendered by their types
/// (`--typed`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Output {
    /// `--format`.
    pub(crate) format: Format,
    /// `--typed`.
    pub(crate) typed: bool,
}

impl Output {
    /// Whether the format has lines for keepalives, relations and reconnects (wal2json has
    /// none).
    fn contract(self) -> bool {
        self.format == Format::Json
    }

    /// The writer of row values: `--typed`'s, or the contract's untyped form.
    fn values(self) -> ValueWriter {
        if self.typed {
            crate::typed::typed
        } else {
            walproto::json::untyped_value
        }
    }
}

/// Warns on stderr about a Stream Abort that matched no open streamed transaction
/// ([`walproto::Decoded::stray_abort`]): CLI.md prints it as any other line, and says so on
/// stderr. PostgreSQL 18 sends such messages even with streaming off; they change nothing.
pub(crate) fn warn_stray_abort(lsn: Lsn, msg: &Message<'_>, streaming: Streaming) {
    let Message::StreamAbort(a) = msg else {
        return;
    };
    let why = if streaming == Streaming::Off {
        "streaming is off"
    } else {
        "no streamed transaction of that xid is open"
    };
    tracing::warn!(
        "stray stream_abort at LSN {lsn} for xid {} (subxid {}): {why}; PostgreSQL 18 sends \
         such messages, and it changes nothing",
        a.xid,
        a.subxid
    );
}

/// Appends the line for `msg`, carried by the XLogData whose `wal_start` is `lsn`, in the
/// format of `output` (wal2json writes none for some messages, several for a truncate).
///
/// `decoder` must be the one that just decoded `msg`: row messages take `schema` and `table`
/// (and column names) from its relation cache. On error, `out` may hold part of a line; the
/// caller discards it.
pub(crate) fn message(
    out: &mut String,
    lsn: Lsn,
    msg: &Message<'_>,
    decoder: &Decoder,
    output: Output,
) -> Result<(), RenderError> {
    if output.format == Format::Wal2json {
        return crate::wal2json::message(out, msg, decoder, output.typed);
    }
    walproto::json::message(out, lsn, msg, decoder, output.values())
}

/// The `relation` line of a table of the initial snapshot (described by walstream from the
/// catalog, in the shape of pgoutput's Relation message).
pub(crate) fn relation_info(out: &mut String, lsn: Lsn, rel: &RelationInfo, output: Output) {
    if output.contract() {
        walproto::json::relation_info(out, lsn, rel);
    }
}

/// The `reconnected` line of CLI.md ("Reconnects"): printed before the first line of a new
/// connection, so that a reader knows to drop the transactions it has not seen end; with the
/// old and the new timeline after a failover.
pub(crate) fn reconnected(
    out: &mut String,
    resume_lsn: Lsn,
    reason: &str,
    timelines: Option<(u32, u32)>,
    output: Output,
) {
    if output.contract() {
        walproto::json::reconnected(out, resume_lsn, reason, timelines);
    }
}

/// The `insert` line of a row of the initial snapshot (binary values, from `COPY`).
pub(crate) fn snapshot_insert<'c>(
    out: &mut String,
    lsn: Lsn,
    rel: &RelationInfo,
    columns: impl Iterator<Item = Column<'c>>,
    output: Output,
) -> Result<(), RenderError> {
    if output.format == Format::Wal2json {
        return crate::wal2json::snapshot_insert(out, rel, None, output.typed, columns);
    }
    walproto::json::insert(out, lsn, rel, columns, output.values())
}
