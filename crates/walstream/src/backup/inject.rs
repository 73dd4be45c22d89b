//! `-R` for tar backups: `base.tar` as the server sent it, except that the
//! `postgresql.auto.conf` member gets the `primary_conninfo` line appended (its header's size
//! and checksum patched, every other byte kept) and a `standby.signal` member is added before
//! the end-of-archive marker, as pg_basebackup's recovery injector does.

use bytes::Bytes;

use super::error::{Error, Result};
use super::tar::{patch_header, EntryKind, TarEntry, TarEvent, TarReader, BLOCK};

/// The member whose contents are replaced.
const AUTO_CONF: &str = "postgresql.auto.conf";

/// The largest `postgresql.auto.conf` held in memory to rewrite: the server's is a few
/// settings, and `ALTER SYSTEM` files of more than this are not plausible.
const MAX_AUTO_CONF: u64 = 1 << 20;

/// Rewrites the main archive's bytes as they pass; see the [module documentation](self).
#[derive(Debug)]
pub(crate) struct RecoveryInjector {
    reader: TarReader,
    /// What to append to `postgresql.auto.conf`.
    line: String,
    /// The size of the member being copied (for its padding).
    size: u64,
    /// `postgresql.auto.conf` while it is read: its original header and contents.
    conf: Option<([u8; BLOCK], Vec<u8>)>,
    seen_conf: bool,
}

impl RecoveryInjector {
    pub(crate) fn new(archive: &str, line: String) -> Self {
        Self {
            reader: TarReader::new(archive),
            line,
            size: 0,
            conf: None,
            seen_conf: false,
        }
    }

    /// Feeds the archive's next bytes; `out` receives the rewritten archive's.
    pub(crate) fn feed(
        &mut self,
        chunk: Bytes,
        out: &mut impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        self.reader.push(chunk);
        while let Some(event) = self.reader.next_event()? {
            match event {
                TarEvent::Entry(e) => {
                    self.size = e.size;
                    let header = *self.reader.last_header();
                    if e.path.as_os_str() == AUTO_CONF && e.kind == EntryKind::File {
                        if e.size > MAX_AUTO_CONF {
                            return Err(Error::Protocol(format!(
                                "{AUTO_CONF} has {} bytes, more than the {MAX_AUTO_CONF} \
                                 rewritten in memory",
                                e.size
                            )));
                        }
                        self.seen_conf = true;
                        self.conf = Some((header, Vec::new()));
                    } else {
                        out(&header)?;
                    }
                }
                TarEvent::Data(d) => match &mut self.conf {
                    Some((_, contents)) => contents.extend_from_slice(&d),
                    None => out(&d)?,
                },
                TarEvent::EntryEnd => match self.conf.take() {
                    Some((header, mut contents)) => {
                        contents.extend_from_slice(self.line.as_bytes());
                        let size = contents.len() as u64;
                        out(&patch_header(&header, None, size))?;
                        out(&contents)?;
                        out(&vec![0u8; padding(size)])?;
                    }
                    None => out(&vec![0u8; padding(self.size)])?,
                },
                TarEvent::End => {
                    if !self.seen_conf {
                        self.member(AUTO_CONF, self.line.clone().into_bytes(), out)?;
                    }
                    self.member("standby.signal", Vec::new(), out)?;
                    out(&[0u8; 2 * BLOCK])?;
                }
            }
        }
        Ok(())
    }

    /// The archive must have ended.
    pub(crate) fn finish(&self) -> Result<()> {
        Ok(self.reader.finish()?)
    }

    /// A new file member.
    fn member(
        &self,
        name: &str,
        contents: Vec<u8>,
        out: &mut impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let mtime = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
        let entry = TarEntry {
            path: name.into(),
            kind: EntryKind::File,
            size: contents.len() as u64,
            mode: 0o600,
            mtime,
            link: None,
        };
        let header = entry
            .header()
            .ok_or_else(|| Error::Protocol(format!("{name}: too long for tar")))?;
        out(&header)?;
        out(&contents)?;
        out(&vec![0u8; padding(entry.size)])
    }
}

/// The zeros after `size` bytes of data, up to the next block.
fn padding(size: u64) -> usize {
    let rem = (size % BLOCK as u64) as usize;
    (BLOCK - rem) % BLOCK
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;

    fn file(name: &str, contents: &[u8]) -> Vec<u8> {
        let entry = TarEntry {
            path: name.into(),
            kind: EntryKind::File,
            size: contents.len() as u64,
            mode: 0o600,
            mtime: 1,
            link: None,
        };
        let mut out = entry.header().unwrap().to_vec();
        out.extend_from_slice(contents);
        out.resize(out.len() + padding(entry.size), 0);
        out
    }

    #[test]
    fn appends_to_auto_conf_and_adds_standby_signal_keeping_the_rest() {
        let mut archive = file("PG_VERSION", b"17\n");
        archive.extend(file(AUTO_CONF, b"# Do not edit\n"));
        archive.extend(file("global/pg_control", &[9u8; 600]));
        archive.extend([0u8; 2 * BLOCK]);
        let line = "primary_conninfo = 'host=p'\n".to_owned();
        let mut injector = RecoveryInjector::new("base.tar", line);
        let mut out = Vec::new();
        for chunk in archive.chunks(100) {
            injector
                .feed(Bytes::copy_from_slice(chunk), &mut |b| {
                    out.extend_from_slice(b);
                    Ok(())
                })
                .unwrap();
        }
        injector.finish().unwrap();

        let mut reader = TarReader::new("out");
        reader.push(Bytes::from(out.clone()));
        let mut files = Vec::new();
        let mut data = Vec::new();
        while let Some(e) = reader.next_event().unwrap() {
            match e {
                TarEvent::Entry(e) => files.push(e.path.display().to_string()),
                TarEvent::Data(d) if files.last().unwrap() == AUTO_CONF => {
                    data.extend_from_slice(&d)
                }
                _ => {}
            }
        }
        reader.finish().unwrap();
        assert_eq!(
            files,
            [
                "PG_VERSION",
                AUTO_CONF,
                "global/pg_control",
                "standby.signal"
            ]
        );
        assert_eq!(data, b"# Do not edit\nprimary_conninfo = 'host=p'\n");
        // The members before and after are byte for byte the originals.
        assert_eq!(out[..BLOCK * 2], archive[..BLOCK * 2]);
        let control = file("global/pg_control", &[9u8; 600]);
        assert!(out.windows(control.len()).any(|w| w == control.as_slice()));
    }
}
