//! `BASE_BACKUP` with the option list of PostgreSQL 15+: its result sets and the CopyOut
//! stream of archive messages, handed out as raw CopyData payloads.

use bytes::Bytes;
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use walproto::Lsn;

use crate::commands::{column_names, parse, parse_field, quote_literal, text_values};
use crate::conn::{server_error, unexpected, Connection};
use crate::error::{Error, Result};
use crate::QueryResult;

/// How the server starts the backup's checkpoint (`CHECKPOINT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Checkpoint {
    /// As soon as possible, with as much I/O as it takes (`'fast'`).
    Fast,
    /// Spread over `checkpoint_completion_target` (`'spread'`, the server's default).
    Spread,
}

/// Whether the server sends a backup manifest (`MANIFEST`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Manifest {
    /// A manifest (`'yes'`).
    Yes,
    /// No manifest (`'no'`, the server's default).
    No,
    /// A manifest with every file name hex-encoded (`'force-encode'`).
    ForceEncode,
}

/// Where the server sends the backup (`TARGET`).
///
/// Only the client for now: the other targets (`server`, `blackhole`) send no archives
/// over the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackupTarget {
    /// Over this connection (`'client'`, the server's default).
    Client,
}

/// Options of [`Connection::base_backup`]: the option list of PostgreSQL 15+'s
/// `BASE_BACKUP`. `None` and `false` leave an option out, so the server's default applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseBackupOptions {
    /// The backup's label (`LABEL`, shown in `backup_label`).
    pub label: Option<String>,
    /// Ask the server for the size of each tablespace before the data (`PROGRESS`).
    pub progress: bool,
    /// How the checkpoint at the start is taken (`CHECKPOINT`).
    pub checkpoint: Option<Checkpoint>,
    /// Include the WAL the backup needs in the main archive (`WAL`).
    pub wal: bool,
    /// Wait for the WAL to be archived at the end (`WAIT`, the server's default): `false`
    /// sends `WAIT false`.
    pub wait: bool,
    /// The backup manifest (`MANIFEST`).
    pub manifest: Option<Manifest>,
    /// The manifest's checksum algorithm (`MANIFEST_CHECKSUMS`: `NONE`, `CRC32C`, `SHA224`,
    /// `SHA256`, `SHA384` or `SHA512`), passed through.
    pub manifest_checksums: Option<String>,
    /// Verify the data checksums while reading (`VERIFY_CHECKSUMS`, the server's default
    /// when checksums are on): `false` sends `VERIFY_CHECKSUMS false`.
    pub verify_checksums: bool,
    /// The largest transfer rate in kB per second (`MAX_RATE`, 32 to 1048576).
    pub max_rate: Option<u32>,
    /// Include `tablespace_map` instead of symbolic links (`TABLESPACE_MAP`).
    pub tablespace_map: bool,
    /// Where the backup goes (`TARGET`).
    pub target: Option<BackupTarget>,
    /// An incremental backup relative to the manifest uploaded before it (`INCREMENTAL`,
    /// PostgreSQL 17+).
    pub incremental: bool,
    /// The server-side compression algorithm (`COMPRESSION`: `gzip`, `lz4`, `zstd`, `none`),
    /// passed through.
    pub compression: Option<String>,
    /// The compression's details (`COMPRESSION_DETAIL`, such as `level=5`), passed through.
    pub compression_detail: Option<String>,
}

impl Default for BaseBackupOptions {
    fn default() -> Self {
        Self {
            label: None,
            progress: false,
            checkpoint: None,
            wal: false,
            wait: true,
            manifest: None,
            manifest_checksums: None,
            verify_checksums: true,
            max_rate: None,
            tablespace_map: false,
            target: None,
            incremental: false,
            compression: None,
            compression_detail: None,
        }
    }
}

impl BaseBackupOptions {
    /// The `BASE_BACKUP` command with these options.
    pub fn to_sql(&self) -> String {
        let mut opts: Vec<String> = Vec::new();
        if let Some(label) = &self.label {
            opts.push(format!("LABEL {}", quote_literal(label)));
        }
        if self.progress {
            opts.push("PROGRESS".into());
        }
        if let Some(c) = self.checkpoint {
            opts.push(match c {
                Checkpoint::Fast => "CHECKPOINT 'fast'".into(),
                Checkpoint::Spread => "CHECKPOINT 'spread'".into(),
            });
        }
        if self.wal {
            opts.push("WAL".into());
        }
        if !self.wait {
            opts.push("WAIT false".into());
        }
        if let Some(m) = self.manifest {
            opts.push(match m {
                Manifest::Yes => "MANIFEST 'yes'".into(),
                Manifest::No => "MANIFEST 'no'".into(),
                Manifest::ForceEncode => "MANIFEST 'force-encode'".into(),
            });
        }
        if let Some(c) = &self.manifest_checksums {
            opts.push(format!("MANIFEST_CHECKSUMS {}", quote_literal(c)));
        }
        if !self.verify_checksums {
            opts.push("VERIFY_CHECKSUMS false".into());
        }
        if let Some(rate) = self.max_rate {
            opts.push(format!("MAX_RATE {rate}"));
        }
        if self.tablespace_map {
            opts.push("TABLESPACE_MAP".into());
        }
        if let Some(BackupTarget::Client) = self.target {
            opts.push("TARGET 'client'".into());
        }
        if self.incremental {
            opts.push("INCREMENTAL".into());
        }
        if let Some(c) = &self.compression {
            opts.push(format!("COMPRESSION {}", quote_literal(c)));
        }
        if let Some(d) = &self.compression_detail {
            opts.push(format!("COMPRESSION_DETAIL {}", quote_literal(d)));
        }
        if opts.is_empty() {
            "BASE_BACKUP".into()
        } else {
            format!("BASE_BACKUP ({})", opts.join(", "))
        }
    }
}

/// A WAL position with its timeline: where a backup starts or ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackupPosition {
    /// The WAL position.
    pub lsn: Lsn,
    /// Its timeline.
    pub timeline: u32,
}

/// One tablespace of a backup, in the order its archive arrives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tablespace {
    /// The tablespace's OID; `None` for the main data directory.
    pub oid: Option<u32>,
    /// Its directory on the server; `None` for the main data directory.
    pub location: Option<String>,
    /// Its estimated size in kB, with [`BaseBackupOptions::progress`].
    pub size_kb: Option<u64>,
}

impl Connection {
    /// Starts `BASE_BACKUP` with `options` on a `replication=true` connection, reads its
    /// start position and tablespaces, and returns the reader of its archives; see
    /// [`BaseBackup`] for the call sequence.
    ///
    /// PostgreSQL 15+ (the option list and the archive-message stream), and 17+ with
    /// [`BaseBackupOptions::incremental`]; an older server is refused with
    /// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) before anything is sent.
    /// The server's error (a bad option, say) is returned with the connection back in step.
    ///
    /// Not cancel-safe: the connection is poisoned from the start of this call until the
    /// backup has ended, so a future of this dropped before it completes, or a
    /// [`BaseBackup`] dropped before [`BaseBackup::next`] has returned `None` or the
    /// server's error, leaves it poisoned: every later call fails with
    /// [`ErrorKind::Poisoned`](crate::ErrorKind::Poisoned) without touching the socket, and
    /// the connection must be discarded.
    pub async fn base_backup(&mut self, options: &BaseBackupOptions) -> Result<BaseBackup<'_>> {
        self.check_poisoned()?;
        self.require_version(15, "BASE_BACKUP with an option list")?;
        if options.incremental {
            self.require_version(17, "an INCREMENTAL BASE_BACKUP")?;
        }
        self.begin_operation()?;
        match self.base_backup_start(&options.to_sql()).await {
            Ok((start, tablespaces)) => Ok(BaseBackup {
                conn: self,
                start,
                tablespaces,
                end_columns: Vec::new(),
                end: None,
                copy_done: false,
                done: false,
                error: None,
            }),
            Err(e) => {
                self.end_operation();
                Err(e)
            }
        }
    }

    /// Sends `sql` and reads the two result sets before the CopyOutResponse.
    async fn base_backup_start(&mut self, sql: &str) -> Result<(BackupPosition, Vec<Tablespace>)> {
        frontend::query(sql, self.write_buf()).map_err(|e| {
            Error::config("a BASE_BACKUP option contains a NUL byte").with_source(e)
        })?;
        self.flush().await?;
        let mut results: Vec<QueryResult> = Vec::new();
        let mut current = QueryResult::default();
        loop {
            match self.read_raw().await? {
                Message::RowDescription(desc) => current.columns = column_names(&desc)?,
                Message::DataRow(row) => current.rows.push(text_values(&row)?),
                Message::CommandComplete(_) => results.push(std::mem::take(&mut current)),
                Message::CopyOutResponse(_) => break,
                Message::ErrorResponse(body) => {
                    let e = server_error(&body)?;
                    self.read_until_ready().await?;
                    return Err(e);
                }
                Message::ParameterStatus(_) => {}
                other => return Err(unexpected(&other, "the start of BASE_BACKUP")),
            }
        }
        let [start, spaces] = <[QueryResult; 2]>::try_from(results).map_err(|r| {
            Error::protocol(format!(
                "BASE_BACKUP sent {} result sets before its archives, not 2",
                r.len()
            ))
        })?;
        let start = BackupPosition {
            lsn: parse_field(&start, "recptr")?,
            timeline: parse_field(&start, "tli")?,
        };
        let tablespaces = (0..spaces.rows.len())
            .map(|row| {
                Ok(Tablespace {
                    oid: spaces.get(row, "spcoid").map(parse).transpose()?,
                    location: spaces.get(row, "spclocation").map(str::to_owned),
                    size_kb: spaces.get(row, "size").map(parse).transpose()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((start, tablespaces))
    }
}

/// A running `BASE_BACKUP`; see [`Connection::base_backup`].
///
/// The call sequence:
///
/// 1. [`Connection::base_backup`] sends the command and reads the first two result sets:
///    [`start`](Self::start) (the start position and timeline) and
///    [`tablespaces`](Self::tablespaces) (OID, location and, with `PROGRESS`, size).
/// 2. [`next`](Self::next) returns each CopyData payload of the archive stream as `Bytes`
///    split from the read buffer. Its first byte is the message type: `n` a new archive
///    (its name and tablespace location), `d` data of the current archive or manifest,
///    `p` progress (bytes sent so far), `m` the manifest follows.
/// 3. After the stream, `next` reads the last result set and returns `None`:
///    [`end`](Self::end) is then the end position and timeline, and the connection is ready
///    for the next command.
///
/// A server error at any point (also mid-stream) is returned by `next` as
/// [`ErrorKind::Db`](crate::ErrorKind::Db) with its SQLSTATE, once the connection is back
/// in step.
#[derive(Debug)]
pub struct BaseBackup<'c> {
    conn: &'c mut Connection,
    start: BackupPosition,
    tablespaces: Vec<Tablespace>,
    /// The columns of the last result set, read after the stream.
    end_columns: Vec<String>,
    end: Option<BackupPosition>,
    copy_done: bool,
    done: bool,
    /// The server's error, held while the messages up to `ReadyForQuery` are skipped, so
    /// that a call dropped meanwhile loses nothing: the next call finishes the skipping and
    /// returns it.
    error: Option<Error>,
}

impl BaseBackup<'_> {
    /// Where the backup starts: the WAL position of its checkpoint's redo and its timeline.
    pub fn start(&self) -> BackupPosition {
        self.start
    }

    /// The tablespaces, the main data directory included, in the order of their archives.
    pub fn tablespaces(&self) -> &[Tablespace] {
        &self.tablespaces
    }

    /// Where the backup ends, once [`next`](Self::next) has returned `None`.
    pub fn end(&self) -> Option<BackupPosition> {
        self.end
    }

    /// The next CopyData payload of the archive stream, or `None` once the backup has ended
    /// (then [`end`](Self::end) is known) and the connection is ready for the next command.
    ///
    /// Cancel-safe: a dropped call consumes no payload (frames are taken only when whole, and
    /// what the end's result set has said is kept), and a server error read before the drop
    /// is kept for the next call, so the next call returns what the dropped one would have.
    /// The backup itself must still be read to its end: dropping the `BaseBackup` earlier
    /// poisons the connection (see [`Connection::base_backup`]).
    pub async fn next(&mut self) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        if self.error.is_some() {
            return Err(self.finish_with_error().await);
        }
        loop {
            match self.conn.read_raw().await? {
                Message::CopyData(body) if !self.copy_done => return Ok(Some(body.into_bytes())),
                Message::CopyDone if !self.copy_done => self.copy_done = true,
                Message::RowDescription(desc) if self.copy_done => {
                    self.end_columns = column_names(&desc)?;
                }
                Message::DataRow(row) if self.copy_done => {
                    let r = QueryResult {
                        columns: std::mem::take(&mut self.end_columns),
                        rows: vec![text_values(&row)?],
                        tag: String::new(),
                    };
                    self.end = Some(BackupPosition {
                        lsn: parse_field(&r, "recptr")?,
                        timeline: parse_field(&r, "tli")?,
                    });
                }
                Message::CommandComplete(_) | Message::ParameterStatus(_) => {}
                Message::ReadyForQuery(_) => {
                    self.done = true;
                    self.conn.end_operation();
                    if self.end.is_none() {
                        return Err(Error::protocol(
                            "BASE_BACKUP ended without its end position",
                        ));
                    }
                    return Ok(None);
                }
                Message::ErrorResponse(body) => {
                    self.error = Some(server_error(&body)?);
                    return Err(self.finish_with_error().await);
                }
                other => return Err(unexpected(&other, "the archives of BASE_BACKUP")),
            }
        }
    }

    /// Skips to `ReadyForQuery` after the server's error and returns the error.
    async fn finish_with_error(&mut self) -> Error {
        if let Err(e) = self.conn.read_until_ready().await {
            // The server may close the connection after its error (a FATAL one): its error
            // says why, so it is the one returned; the connection stays unusable.
            self.done = true;
            return self.error.take().unwrap_or(e);
        }
        self.done = true;
        self.conn.end_operation();
        self.error.take().unwrap_or_else(Error::poisoned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_option_in_the_option_list() {
        let options = BaseBackupOptions {
            label: Some("it's a label".into()),
            progress: true,
            checkpoint: Some(Checkpoint::Fast),
            wal: true,
            wait: false,
            manifest: Some(Manifest::ForceEncode),
            manifest_checksums: Some("SHA256".into()),
            verify_checksums: false,
            max_rate: Some(1024),
            tablespace_map: true,
            target: Some(BackupTarget::Client),
            incremental: true,
            compression: Some("gzip".into()),
            compression_detail: Some("level=5".into()),
        };
        assert_eq!(
            options.to_sql(),
            "BASE_BACKUP (LABEL 'it''s a label', PROGRESS, CHECKPOINT 'fast', WAL, WAIT false, \
             MANIFEST 'force-encode', MANIFEST_CHECKSUMS 'SHA256', VERIFY_CHECKSUMS false, MAX_RATE 1024, \
             TABLESPACE_MAP, TARGET 'client', INCREMENTAL, COMPRESSION 'gzip', \
             COMPRESSION_DETAIL 'level=5')"
        );
        let spread = BaseBackupOptions {
            checkpoint: Some(Checkpoint::Spread),
            manifest: Some(Manifest::Yes),
            ..BaseBackupOptions::default()
        };
        assert_eq!(
            spread.to_sql(),
            "BASE_BACKUP (CHECKPOINT 'spread', MANIFEST 'yes')"
        );
        assert_eq!(BaseBackupOptions::default().to_sql(), "BASE_BACKUP");
    }
}
