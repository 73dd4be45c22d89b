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
    /// step. Not cancel-safe: drop the connection after dropping a future of this or of
    /// [`CopyOut::next`].
    pub async fn copy_out(&mut self, sql: &str) -> Result<CopyOut<'_>> {
        frontend::query(sql, self.write_buf())
            .map_err(|e| Error::config("query text contains a NUL byte").with_source(e))?;
        self.flush().await?;
        loop {
            match self.read_raw().await? {
                Message::CopyOutResponse(_) => {
                    return Ok(CopyOut {
                        conn: self,
                        done: false,
                    })
                }
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
}

impl CopyOut<'_> {
    /// The next CopyData payload (for text and CSV formats a row; for binary format a part of
    /// the stream, the first starting with the header), or `None` once the copy has ended
    /// and the connection is ready for the next command.
    pub async fn next(&mut self) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        loop {
            match self.conn.read_raw().await? {
                Message::CopyData(body) => return Ok(Some(body.into_bytes())),
                Message::CopyDone | Message::CommandComplete(_) | Message::ParameterStatus(_) => {}
                Message::ReadyForQuery(_) => {
                    self.done = true;
                    return Ok(None);
                }
                Message::ErrorResponse(body) => {
                    let e = server_error(&body)?;
                    self.conn.read_until_ready().await?;
                    self.done = true;
                    return Err(e);
                }
                other => return Err(unexpected(&other, "COPY data")),
            }
        }
    }
}
