//! Spilling the changes of large in-progress transactions to a temporary file, and reading
//! them back at commit.
//!
//! A record is a `u32` length, then: the change kind, the change's LSN and xid, the index of
//! its relation in the file's relation table (kept in memory: relations are few and small),
//! then the row images as pgoutput encodes them (count, then columns). Reading a record back
//! validates it with walproto, exactly as a message from the server is validated.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use walproto::owned::TupleBuf;
use walproto::pgoutput::{encode_columns, TupleData};
use walproto::{Lsn, RelationInfo, Xid};

use super::change::{Change, ChangeKind};
use crate::logical::event::{Delete, Insert, LogicalMessage, OldRow, Row, Truncate, Update};

/// The largest record read back: a change is at most one pgoutput message, which PostgreSQL
/// bounds at 1 GiB.
const MAX_RECORD: usize = 1 << 30;

const INSERT: u8 = b'I';
const UPDATE: u8 = b'U';
const DELETE: u8 = b'D';
const TRUNCATE: u8 = b'T';
const MESSAGE: u8 = b'M';

/// A temporary file of one transaction's changes, deleted when dropped.
#[derive(Debug)]
pub(crate) struct SpillFile {
    path: PathBuf,
    writer: Option<BufWriter<File>>,
    relations: Vec<Arc<RelationInfo>>,
    index: HashMap<usize, u32>,
    count: usize,
    bytes: u64,
}

impl SpillFile {
    /// Creates a new, empty spill file in `dir`.
    pub(crate) fn create(dir: &Path) -> io::Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("walstream-spill-{}-{n}", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok(Self {
            path,
            writer: Some(BufWriter::with_capacity(256 * 1024, file)),
            relations: Vec::new(),
            index: HashMap::new(),
            count: 0,
            bytes: 0,
        })
    }

    /// The number of changes written.
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// Bytes written.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Appends `change`.
    pub(crate) fn write(&mut self, change: &Change) -> io::Result<()> {
        let mut body = BytesMut::with_capacity(128);
        body.put_u8(kind_tag(&change.kind));
        body.put_u64(change.lsn.get());
        let xid = change.xid();
        body.put_u8(u8::from(xid.is_some()));
        body.put_u32(xid.map_or(0, |x| x.0));
        match &change.kind {
            ChangeKind::Insert(i) => {
                body.put_u32(self.relation(&i.relation));
                tuple(&mut body, &i.new);
            }
            ChangeKind::Update(u) => {
                body.put_u32(self.relation(&u.relation));
                old_row(&mut body, u.old.as_ref());
                tuple(&mut body, &u.new);
            }
            ChangeKind::Delete(d) => {
                body.put_u32(self.relation(&d.relation));
                old_row(&mut body, Some(&d.old));
            }
            ChangeKind::Truncate(t) => {
                body.put_u32(u32::try_from(t.relations.len()).unwrap_or(u32::MAX));
                for r in &t.relations {
                    let i = self.relation(r);
                    body.put_u32(i);
                }
                body.put_u8(u8::from(t.cascade) | (u8::from(t.restart_identity) << 1));
            }
            ChangeKind::Message(m) => {
                body.put_u8(u8::from(m.transactional));
                body.put_u64(m.lsn.get());
                body.put_u32(u32::try_from(m.prefix.len()).unwrap_or(u32::MAX));
                body.put_slice(m.prefix.as_bytes());
                body.put_u32(u32::try_from(m.content.len()).unwrap_or(u32::MAX));
                body.put_slice(&m.content);
            }
        }
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| io::Error::other("the spill file is already being read"))?;
        let len = u32::try_from(body.len()).map_err(|_| io::Error::other("change too large"))?;
        writer.write_all(&len.to_be_bytes())?;
        writer.write_all(&body)?;
        self.count += 1;
        self.bytes += 4 + u64::from(len);
        Ok(())
    }

    /// Ends writing; the file can then be read any number of times.
    pub(crate) fn finish(&mut self) -> io::Result<()> {
        if let Some(mut w) = self.writer.take() {
            w.flush()?;
        }
        Ok(())
    }

    /// A reader of the changes, in order.
    pub(crate) fn reader(self: &Arc<Self>) -> io::Result<SpillReader> {
        Ok(SpillReader {
            file: Arc::clone(self),
            input: BufReader::with_capacity(256 * 1024, File::open(&self.path)?),
            left: self.count,
        })
    }

    fn relation(&mut self, rel: &Arc<RelationInfo>) -> u32 {
        let key = Arc::as_ptr(rel) as usize;
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        let i = u32::try_from(self.relations.len()).unwrap_or(u32::MAX);
        self.relations.push(Arc::clone(rel));
        self.index.insert(key, i);
        i
    }
}

impl Drop for SpillFile {
    fn drop(&mut self) {
        self.writer = None;
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), "removing a spill file: {e}");
        }
    }
}

/// Reads a finished spill file back.
#[derive(Debug)]
pub(crate) struct SpillReader {
    file: Arc<SpillFile>,
    input: BufReader<File>,
    left: usize,
}

impl SpillReader {
    /// The next change, `None` after the last.
    pub(crate) fn next_change(&mut self) -> io::Result<Option<Change>> {
        if self.left == 0 {
            return Ok(None);
        }
        let mut len = [0u8; 4];
        self.input.read_exact(&mut len)?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_RECORD {
            return Err(bad("record length"));
        }
        let mut buf = vec![0u8; len];
        self.input.read_exact(&mut buf)?;
        self.left -= 1;
        decode(&Bytes::from(buf), &self.file.relations).map(Some)
    }
}

fn kind_tag(kind: &ChangeKind) -> u8 {
    match kind {
        ChangeKind::Insert(_) => INSERT,
        ChangeKind::Update(_) => UPDATE,
        ChangeKind::Delete(_) => DELETE,
        ChangeKind::Truncate(_) => TRUNCATE,
        ChangeKind::Message(_) => MESSAGE,
    }
}

fn tuple(out: &mut BytesMut, row: &Row) {
    let mut encoded = Vec::with_capacity(row.tuple().len().into());
    encode_columns(row.tuple().columns(), &mut encoded);
    out.put_u32(u32::try_from(encoded.len()).unwrap_or(u32::MAX));
    out.put_slice(&encoded);
}

fn old_row(out: &mut BytesMut, old: Option<&OldRow>) {
    match old {
        None => out.put_u8(0),
        Some(OldRow::Key(r)) => {
            out.put_u8(1);
            tuple(out, r);
        }
        Some(OldRow::Full(r)) => {
            out.put_u8(2);
            tuple(out, r);
        }
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("corrupt spill file: {what}"),
    )
}

/// Reads fields off a record, every read checked.
struct Record {
    buf: Bytes,
}

impl Record {
    fn need(&self, n: usize, what: &str) -> io::Result<()> {
        if self.buf.remaining() < n {
            return Err(bad(what));
        }
        Ok(())
    }

    fn u8(&mut self) -> io::Result<u8> {
        self.need(1, "u8")?;
        Ok(self.buf.get_u8())
    }

    fn u32(&mut self) -> io::Result<u32> {
        self.need(4, "u32")?;
        Ok(self.buf.get_u32())
    }

    fn u64(&mut self) -> io::Result<u64> {
        self.need(8, "u64")?;
        Ok(self.buf.get_u64())
    }

    fn bytes(&mut self) -> io::Result<Bytes> {
        let n = self.u32()? as usize;
        self.need(n, "length")?;
        Ok(self.buf.split_to(n))
    }

    fn relation(&mut self, relations: &[Arc<RelationInfo>]) -> io::Result<Arc<RelationInfo>> {
        let i = self.u32()? as usize;
        relations
            .get(i)
            .cloned()
            .ok_or_else(|| bad("relation index"))
    }

    fn row(&mut self, rel: &Arc<RelationInfo>) -> io::Result<Row> {
        let bytes = self.bytes()?;
        let view = TupleData::parse(&bytes).map_err(|e| bad(&e.to_string()))?;
        let tuple = TupleBuf::from_view(&bytes, &view).ok_or_else(|| bad("tuple"))?;
        Ok(Row::new(Arc::clone(rel), tuple))
    }

    fn old(&mut self, rel: &Arc<RelationInfo>) -> io::Result<Option<OldRow>> {
        Ok(match self.u8()? {
            0 => None,
            1 => Some(OldRow::Key(self.row(rel)?)),
            2 => Some(OldRow::Full(self.row(rel)?)),
            _ => return Err(bad("old row kind")),
        })
    }
}

fn decode(buf: &Bytes, relations: &[Arc<RelationInfo>]) -> io::Result<Change> {
    let mut r = Record { buf: buf.clone() };
    let tag = r.u8()?;
    let lsn = Lsn::new(r.u64()?);
    let has_xid = r.u8()? != 0;
    let xid = Some(Xid(r.u32()?)).filter(|_| has_xid);
    let kind = match tag {
        INSERT => {
            let relation = r.relation(relations)?;
            ChangeKind::Insert(Insert {
                xid,
                new: r.row(&relation)?,
                relation,
            })
        }
        UPDATE => {
            let relation = r.relation(relations)?;
            ChangeKind::Update(Update {
                xid,
                old: r.old(&relation)?,
                new: r.row(&relation)?,
                relation,
            })
        }
        DELETE => {
            let relation = r.relation(relations)?;
            ChangeKind::Delete(Delete {
                xid,
                old: r
                    .old(&relation)?
                    .ok_or_else(|| bad("delete without old row"))?,
                relation,
            })
        }
        TRUNCATE => {
            let n = r.u32()? as usize;
            r.need(n.saturating_mul(4), "relation count")?;
            let mut rels = Vec::with_capacity(n);
            for _ in 0..n {
                rels.push(r.relation(relations)?);
            }
            let options = r.u8()?;
            ChangeKind::Truncate(Truncate {
                xid,
                relations: rels,
                cascade: options & 1 != 0,
                restart_identity: options & 2 != 0,
            })
        }
        MESSAGE => {
            let transactional = r.u8()? != 0;
            let lsn = Lsn::new(r.u64()?);
            let prefix = String::from_utf8(r.bytes()?.to_vec()).map_err(|_| bad("prefix"))?;
            ChangeKind::Message(LogicalMessage {
                xid,
                transactional,
                lsn,
                prefix,
                content: r.bytes()?,
            })
        }
        _ => return Err(bad("change kind")),
    };
    if r.buf.has_remaining() {
        return Err(bad("trailing bytes"));
    }
    Ok(Change { lsn, kind })
}
