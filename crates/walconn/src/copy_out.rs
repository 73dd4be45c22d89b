//! `COPY ... TO STDOUT`: the rows of a copy as raw CopyData payloads.

use bytes::Bytes;
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;

use crate::conn::{server_error, unexpected, Connection};
use crate::error::{Error, Result};

impl Connection {
    /// Starts `sql`, a `COPY ... TO STDOUT` (any format), and returns the reader of its data.
    ///
    /// The server's error (a missing table, say) is returned with the connection back in
    /// step.
    ///
    /// Not cancel-safe: the connection is poisoned from the start of this call until the
    /// copy has ended, so a future of this dropped before it completes, or a [`CopyOut`]
    /// dropped before [`CopyOut::next`] has returned `None` or the server's error, leaves it
    /// poisoned: every later call fails with [`ErrorKind::Poisoned`](crate::ErrorKind::Poisoned)
    /// without touching the socket, and the connection must be discarded.
    pub async fn copy_out(&mut self, sql: &str) -> Result<CopyOut<'_>> {
        self.begin_operation()?;
        match self.copy_out_inner(sql).await {
            Ok(()) => Ok(CopyOut {
                conn: self,
                done: false,
                error: None,
            }),
            Err(e) => {
                self.end_operation();
                Err(e)
            }
        }
    }

    async fn copy_out_inner(&mut self, sql: &str) -> Result<()> {
        frontend::query(sql, self.write_buf())
            .map_err(|e| Error::config("query text contains a NUL byte").with_source(e))?;
        self.flush().await?;
        loop {
            match self.read_raw().await? {
                Message::CopyOutResponse(_) => return Ok(()),
                Message::ErrorResponse(body) => {
                    let e = server_error(&body)?;
                    self.read_until_ready().await?;
                    return Err(e);
                }
                Message::ParameterStatus(_) => {}
                other => return Err(unexpected(&other, "COPY TO STDOUT")),
            }
        }
    }
}

/// The data of a `COPY ... TO STDOUT`; see [`Connection::copy_out`].
#[derive(Debug)]
pub struct CopyOut<'c> {
    conn: &'c mut Connection,
    done: bool,
    /// The server's error, held while the messages up to `ReadyForQuery` are skipped, so
    /// that a call dropped meanwhile loses nothing: the next call finishes the skipping and
    /// returns it.
    error: Option<Error>,
}

impl CopyOut<'_> {
    /// The next CopyData payload (for text and CSV formats a row; for binary format a part of
    /// the stream, the first starting with the header), or `None` once the copy has ended
    /// and the connection is ready for the next command.
    ///
    /// Cancel-safe: a dropped call consumes no payload (frames are taken only when whole),
    /// and a server error read before the drop is kept for the next call, so the next call
    /// returns what the dropped one would have. The copy itself must still be read to its
    /// end: dropping the `CopyOut` earlier poisons the connection (see
    /// [`Connection::copy_out`]).
    pub async fn next(&mut self) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        if self.error.is_some() {
            self.conn.read_until_ready().await?;
            self.done = true;
            self.conn.end_operation();
            return Err(self.error.take().unwrap_or_else(Error::poisoned));
        }
        loop {
            match self.conn.read_raw().await? {
                Message::CopyData(body) => return Ok(Some(body.into_bytes())),
                Message::CopyDone | Message::CommandComplete(_) | Message::ParameterStatus(_) => {}
                Message::ReadyForQuery(_) => {
                    self.done = true;
                    self.conn.end_operation();
                    return Ok(None);
                }
                Message::ErrorResponse(body) => {
                    self.error = Some(server_error(&body)?);
                    self.conn.read_until_ready().await?;
                    self.done = true;
                    self.conn.end_operation();
                    return Err(self.error.take().unwrap_or_else(Error::poisoned));
                }
                other => return Err(unexpected(&other, "COPY data")),
            }
        }
    }
}
