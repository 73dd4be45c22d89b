//! `COPY ... TO STDOUT`: the rows of a copy as raw CopyData payloads, one at a time
//! ([`CopyOut::next`]) or all those one read brought at once ([`CopyOut::next_chunk`]).

use bytes::Bytes;
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;

use crate::conn::{server_error, unexpected, Connection};
use crate::error::{Error, Result};

/// The tag of a CopyData message.
const COPY_DATA_TAG: u8 = b'd';

/// A message's header: its tag and its length (which counts itself, not the tag).
const HEADER_LEN: usize = 5;

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
        loop {
            if self.done {
                return Ok(None);
            }
            if self.error.is_some() {
                return self.end_with_error().await;
            }
            match self.conn.read_raw().await? {
                Message::CopyData(body) => return Ok(Some(body.into_bytes())),
                other => self.control(other).await?,
            }
        }
    }

    /// Every CopyData message already read from the socket, at least one (waiting for it),
    /// as one [`CopyChunk`]; `None` once the copy has ended and the connection is ready for
    /// the next command. What [`next`](Self::next) would return one by one, without a `Bytes`
    /// per message: the fast way through a big copy.
    ///
    /// Cancel-safe, as [`next`](Self::next) is: only whole messages are taken.
    pub async fn next_chunk(&mut self) -> Result<Option<CopyChunk>> {
        loop {
            if self.done {
                return Ok(None);
            }
            if self.error.is_some() {
                return self.end_with_error().await;
            }
            if self.conn.fill_frame().await? == COPY_DATA_TAG {
                let buf = self.conn.read_buf();
                let (mut end, mut payload) = (0, 0);
                // The first frame is whole (`fill_frame`); take the whole ones after it too.
                while let Some(header) = buf.get(end..).and_then(|b| b.first_chunk::<HEADER_LEN>())
                {
                    let [tag, len @ ..] = *header;
                    let len = u32::from_be_bytes(len) as usize;
                    if tag != COPY_DATA_TAG || len < 4 || buf.len() - end <= len {
                        break;
                    }
                    payload += len - 4;
                    end += len + 1;
                }
                if end == 0 {
                    return Err(Error::protocol(
                        "a CopyData message shorter than its header",
                    ));
                }
                let frames = buf.split_to(end).freeze();
                return Ok(Some(CopyChunk { frames, payload }));
            }
            let msg = self.conn.read_raw().await?;
            self.control(msg).await?;
        }
    }

    /// Handles a message other than CopyData: the copy's end, or the server's error.
    async fn control(&mut self, msg: Message) -> Result<()> {
        match msg {
            Message::CopyDone | Message::CommandComplete(_) | Message::ParameterStatus(_) => Ok(()),
            Message::ReadyForQuery(_) => {
                self.done = true;
                self.conn.end_operation();
                Ok(())
            }
            Message::ErrorResponse(body) => {
                self.error = Some(server_error(&body)?);
                self.end_with_error::<()>().await.map(|_| ())
            }
            other => Err(unexpected(&other, "COPY data")),
        }
    }

    /// Reads up to `ReadyForQuery` after the server's error, then returns the error.
    async fn end_with_error<T>(&mut self) -> Result<Option<T>> {
        self.conn.read_until_ready().await?;
        self.done = true;
        self.conn.end_operation();
        Err(self.error.take().unwrap_or_else(Error::poisoned))
    }
}

/// CopyData messages of a [`CopyOut`], as one read brought them
/// ([`CopyOut::next_chunk`]): whole messages, in order, sharing the connection's read buffer.
#[derive(Clone, Debug)]
pub struct CopyChunk {
    /// Whole CopyData messages, headers included.
    frames: Bytes,
    /// The bytes of their payloads.
    payload: usize,
}

impl CopyChunk {
    /// The payloads' bytes, all together.
    pub fn len(&self) -> usize {
        self.payload
    }

    /// Whether the payloads hold no bytes (a chunk holds at least one message, which may be
    /// empty).
    pub fn is_empty(&self) -> bool {
        self.payload == 0
    }

    /// Each message's payload, in order (for binary format: parts of one byte stream).
    pub fn payloads(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut rest: &[u8] = &self.frames;
        std::iter::from_fn(move || {
            let header = rest.first_chunk::<HEADER_LEN>()?;
            let [_, len @ ..] = *header;
            let len = u32::from_be_bytes(len) as usize;
            // Checked when the chunk was taken: each length is at least 4 and inside it.
            let payload = rest.get(HEADER_LEN..len + 1)?;
            rest = rest.get(len + 1..).unwrap_or_default();
            Some(payload)
        })
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use crate::{Config, Connection};

    /// A backend message: tag, length, body.
    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    /// Startup (trust), then a `COPY` of `rows` CopyData messages written in pieces of
    /// `piece` bytes; `error` ends it with an ErrorResponse instead of CopyDone.
    async fn copy(rows: &[&[u8]], piece: usize, error: bool) -> (Vec<Vec<u8>>, Option<String>) {
        let (client, server) = tokio::io::duplex(1 << 16);
        let (mut from_client, mut to_client) = tokio::io::split(server);
        let mut script = msg(b'R', &0u32.to_be_bytes());
        script.extend(msg(b'Z', b"I"));
        let mut copy = msg(b'H', &[1, 0, 0]);
        for row in rows {
            copy.extend(msg(b'd', row));
        }
        if error {
            copy.extend(msg(b'E', b"SERROR\0C22012\0Mdivision by zero\0\0"));
        } else {
            copy.extend(msg(b'c', b""));
            copy.extend(msg(b'C', b"COPY 3\0"));
        }
        copy.extend(msg(b'Z', b"I"));
        let server = async move {
            let mut buf = [0; 4096];
            let _ = from_client.read(&mut buf).await;
            to_client.write_all(&script).await.unwrap();
            let _ = from_client.read(&mut buf).await;
            for p in copy.chunks(piece) {
                to_client.write_all(p).await.unwrap();
                tokio::task::yield_now().await;
            }
            let _ = from_client.read(&mut buf).await;
        };
        let client = async move {
            let config = Config::parse_with_env("user=u dbname=d", |_| None).unwrap();
            let mut conn = Connection::over_pipe(client, &config).await.unwrap();
            copy_client(&mut conn).await
        };
        tokio::join!(server, client).1
    }

    async fn copy_client(conn: &mut Connection) -> (Vec<Vec<u8>>, Option<String>) {
        let mut copy = conn.copy_out("COPY t TO STDOUT").await.unwrap();
        let mut got = Vec::new();
        loop {
            match copy.next_chunk().await {
                Ok(Some(chunk)) => {
                    let payloads: Vec<Vec<u8>> = chunk.payloads().map(<[u8]>::to_vec).collect();
                    assert!(!payloads.is_empty());
                    assert_eq!(chunk.len(), payloads.iter().map(Vec::len).sum::<usize>());
                    got.extend(payloads);
                }
                Ok(None) => return (got, None),
                Err(e) => return (got, Some(e.to_string())),
            }
        }
    }

    #[test]
    fn next_chunk_gives_every_payload_in_order_however_they_arrive() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let rows: [&[u8]; 4] = [b"first row", b"", b"third", &[7; 3000]];
        for piece in [1, 5, 100, 1 << 16] {
            let (got, error) = rt.block_on(copy(&rows, piece, false));
            assert_eq!(got, rows.map(<[u8]>::to_vec), "pieces of {piece}");
            assert_eq!(error, None);
            let (got, error) = rt.block_on(copy(&rows, piece, true));
            assert_eq!(got.len(), 4);
            assert!(
                error.unwrap().contains("division by zero"),
                "pieces of {piece}"
            );
        }
    }
}
