//! `UPLOAD_MANIFEST` (PostgreSQL 17+): a backup manifest sent to the server over CopyIn, for
//! the `INCREMENTAL` `BASE_BACKUP` that follows on the same connection.

use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;

use crate::conn::{server_error, unexpected, Connection};
use crate::error::{Error, Result};

/// The most manifest bytes sent in one CopyData message, and about the most buffered before
/// they are written: a manifest of any size costs this much memory on its way out.
const UPLOAD_CHUNK_LEN: usize = 64 * 1024;

impl Connection {
    /// `UPLOAD_MANIFEST` on a `replication=true` connection: sends `manifest` (the backup
    /// manifest of an earlier backup, as `BASE_BACKUP` with `MANIFEST 'yes'` produced it) in
    /// CopyData messages of at most 64 KiB, then CopyDone, and reads the server's
    /// CommandComplete and ReadyForQuery. The server keeps it for the next
    /// [`base_backup`](Self::base_backup) with [`incremental`](crate::BaseBackupOptions::incremental)
    /// on this connection.
    ///
    /// PostgreSQL 17+: an older server is refused with
    /// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) before anything is sent. The
    /// server's error (a manifest it cannot parse, say) is returned as
    /// [`ErrorKind::Db`](crate::ErrorKind::Db) once the connection is back in step: the
    /// server ignores the CopyData and CopyDone that follow its error.
    ///
    /// Not cancel-safe: a future dropped before it completes poisons the connection (see
    /// [`ErrorKind::Poisoned`](crate::ErrorKind::Poisoned)), after which every call fails
    /// without touching the socket and the connection must be discarded.
    pub async fn upload_manifest(&mut self, manifest: &[u8]) -> Result<()> {
        self.check_poisoned()?;
        self.require_version(17, "UPLOAD_MANIFEST")?;
        self.begin_operation()?;
        let result = self.upload_manifest_inner(manifest).await;
        self.end_operation();
        result
    }

    async fn upload_manifest_inner(&mut self, manifest: &[u8]) -> Result<()> {
        frontend::query("UPLOAD_MANIFEST", self.write_buf())
            .map_err(|e| Error::config("command contains a NUL byte").with_source(e))?;
        self.flush().await?;
        loop {
            match self.read_raw().await? {
                Message::CopyInResponse(_) => break,
                Message::ErrorResponse(body) => {
                    let e = server_error(&body)?;
                    self.read_until_ready().await?;
                    return Err(e);
                }
                Message::ParameterStatus(_) => {}
                other => return Err(unexpected(&other, "UPLOAD_MANIFEST")),
            }
        }
        for chunk in manifest.chunks(UPLOAD_CHUNK_LEN) {
            frontend::CopyData::new(chunk)
                .map_err(|e| Error::protocol("CopyData too large").with_source(e))?
                .write(self.write_buf());
            self.flush().await?;
        }
        frontend::copy_done(self.write_buf());
        self.flush().await?;
        let mut error = None;
        loop {
            match self.read_raw().await? {
                Message::ReadyForQuery(_) => break,
                Message::ErrorResponse(body) => error = Some(server_error(&body)?),
                Message::CommandComplete(_) | Message::ParameterStatus(_) => {}
                other => return Err(unexpected(&other, "the end of UPLOAD_MANIFEST")),
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
