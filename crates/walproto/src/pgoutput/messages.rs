//! The pgoutput messages other than Relation and Type, each with its parser and encoder.
//!
//! Field order and widths follow "Logical Replication Message Formats" in the PostgreSQL
//! documentation; each `read` is the inverse of the `write` beside it.

use bytes::BufMut;

use super::tuple::TupleData;
use super::{put_cstr, put_xid};
use crate::error::{Error, ErrorKind};
use crate::reader::Reader;
use crate::types::{Lsn, Oid, Timestamp, Xid};

/// `B`: the start of a transaction (not sent for streamed transactions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Begin {
    /// The final LSN of the transaction (its commit record's LSN).
    pub final_lsn: Lsn,
    /// The commit time.
    pub commit_time: Timestamp,
    /// The transaction's xid.
    pub xid: Xid,
}

/// `C`: the end of a transaction that began with [`Begin`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Commit {
    /// Flags; currently unused (0).
    pub flags: u8,
    /// The LSN of the commit record.
    pub commit_lsn: Lsn,
    /// The end LSN of the transaction: acknowledge this to move past it.
    pub end_lsn: Lsn,
    /// The commit time.
    pub commit_time: Timestamp,
}

/// `O`: the transaction came from another node (replication origin).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin<'a> {
    /// The commit LSN on the origin server.
    pub commit_lsn: Lsn,
    /// The origin's name.
    pub name: &'a str,
}

/// `I`: a new row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insert<'a> {
    /// The xid of the (sub)transaction, present only inside a streamed block (protocol 2+).
    pub xid: Option<Xid>,
    /// The relation, as described by an earlier [`super::Relation`].
    pub relation_id: Oid,
    /// The new row.
    pub new: TupleData<'a>,
}

/// The old row image that Update and Delete may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OldTuple<'a> {
    /// `K`: the replica identity (key) columns only; other columns are sent as NULL.
    Key(TupleData<'a>),
    /// `O`: the whole old row (`REPLICA IDENTITY FULL`).
    Full(TupleData<'a>),
}

impl<'a> OldTuple<'a> {
    /// The tuple, whichever kind it is.
    pub const fn tuple(&self) -> &TupleData<'a> {
        match self {
            OldTuple::Key(t) | OldTuple::Full(t) => t,
        }
    }

    fn read(r: &mut Reader<'a>, marker: u8, at: usize) -> Result<Self, Error> {
        match marker {
            b'K' => Ok(OldTuple::Key(TupleData::read(r)?)),
            b'O' => Ok(OldTuple::Full(TupleData::read(r)?)),
            other => Err(r.error_at(ErrorKind::UnexpectedTupleMarker(other), at)),
        }
    }

    fn write(&self, out: &mut impl BufMut) {
        match self {
            OldTuple::Key(t) => {
                out.put_u8(b'K');
                t.encode(out);
            }
            OldTuple::Full(t) => {
                out.put_u8(b'O');
                t.encode(out);
            }
        }
    }
}

/// `U`: a changed row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Update<'a> {
    /// The xid of the (sub)transaction, present only inside a streamed block (protocol 2+).
    pub xid: Option<Xid>,
    /// The relation, as described by an earlier [`super::Relation`].
    pub relation_id: Oid,
    /// The old key or row, sent when the key changed or with `REPLICA IDENTITY FULL`.
    pub old: Option<OldTuple<'a>>,
    /// The new row; unchanged TOASTed columns are [`super::Column::UnchangedToast`].
    pub new: TupleData<'a>,
}

/// `D`: a deleted row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delete<'a> {
    /// The xid of the (sub)transaction, present only inside a streamed block (protocol 2+).
    pub xid: Option<Xid>,
    /// The relation, as described by an earlier [`super::Relation`].
    pub relation_id: Oid,
    /// The old key or row.
    pub old: OldTuple<'a>,
}

/// `T`: one or more tables truncated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Truncate<'a> {
    /// The xid of the (sub)transaction, present only inside a streamed block (protocol 2+).
    pub xid: Option<Xid>,
    /// Option bits: 1 for `CASCADE`, 2 for `RESTART IDENTITY`.
    pub options: u8,
    /// The truncated relations.
    pub relation_ids: RelationIds<'a>,
}

impl Truncate<'_> {
    /// Whether `CASCADE` was given.
    pub const fn cascade(&self) -> bool {
        self.options & 1 != 0
    }

    /// Whether `RESTART IDENTITY` was given.
    pub const fn restart_identity(&self) -> bool {
        self.options & 2 != 0
    }
}

/// The relation OIDs of a [`Truncate`], read lazily.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RelationIds<'a> {
    data: &'a [u8],
}

impl<'a> RelationIds<'a> {
    /// Views `bytes` as a sequence of big-endian OIDs; fails unless the length is a multiple
    /// of four.
    pub fn new(bytes: &'a [u8]) -> Result<Self, Error> {
        if !bytes.len().is_multiple_of(4) {
            return Err(Error::new(
                ErrorKind::TrailingBytes,
                None,
                bytes.len() / 4 * 4,
            ));
        }
        Ok(RelationIds { data: bytes })
    }

    /// The number of relations.
    pub const fn len(&self) -> usize {
        self.data.len() / 4
    }

    /// Whether there are none.
    pub const fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The OIDs, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Oid> + 'a {
        self.data
            .chunks_exact(4)
            .map(|c| Oid(c.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b))))
    }
}

impl core::fmt::Debug for RelationIds<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// `M`: a logical decoding message (`pg_logical_emit_message`), when `messages` is on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct LogicalMessage<'a> {
    /// The xid of the transaction, present only inside a streamed block (protocol 2+).
    pub xid: Option<Xid>,
    /// Flags; bit 1 marks a transactional message.
    pub flags: u8,
    /// The LSN of the message.
    pub lsn: Lsn,
    /// The prefix given by the writer.
    pub prefix: &'a str,
    /// The content, arbitrary bytes.
    pub content: &'a [u8],
}

impl core::fmt::Debug for LogicalMessage<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LogicalMessage")
            .field("xid", &self.xid)
            .field("flags", &self.flags)
            .field("lsn", &self.lsn)
            .field("prefix", &self.prefix)
            .field(
                "content",
                &format_args!("b\"{}\"", self.content.escape_ascii()),
            )
            .finish()
    }
}

impl LogicalMessage<'_> {
    /// Whether the message was emitted as part of its transaction.
    pub const fn transactional(&self) -> bool {
        self.flags & 1 != 0
    }
}

/// `S`: the start of a block of changes of a streamed, in-progress transaction (protocol 2+).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamStart {
    /// The top-level transaction's xid.
    pub xid: Xid,
    /// Whether this is the first block streamed for this transaction.
    pub first_segment: bool,
}

/// `c`: a streamed transaction committed (protocol 2+).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamCommit {
    /// The transaction's xid.
    pub xid: Xid,
    /// Flags; currently unused (0).
    pub flags: u8,
    /// The LSN of the commit record.
    pub commit_lsn: Lsn,
    /// The end LSN of the transaction.
    pub end_lsn: Lsn,
    /// The commit time.
    pub commit_time: Timestamp,
}

/// `A`: a streamed transaction or one of its subtransactions aborted (protocol 2+).
///
/// PostgreSQL 18 also sends stray ones, for transactions it never streamed, even to protocol 1
/// clients with streaming off; they match no open streamed transaction and can be ignored
/// ([`Boundaries::is_stray_abort`](super::Boundaries::is_stray_abort) tells them apart).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamAbort {
    /// The top-level transaction's xid.
    pub xid: Xid,
    /// The aborted subtransaction's xid; equal to `xid` when the whole transaction aborted.
    pub subxid: Xid,
    /// The abort LSN and time, sent only with protocol 4 and `streaming = parallel`.
    pub parallel: Option<AbortInfo>,
}

/// The extra fields of a [`StreamAbort`] under protocol 4 parallel streaming.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortInfo {
    /// The LSN of the abort.
    pub abort_lsn: Lsn,
    /// The abort time.
    pub abort_time: Timestamp,
}

/// `b`: the start of a prepared transaction (protocol 3+, `two_phase`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BeginPrepare<'a> {
    /// The LSN of the prepare record.
    pub prepare_lsn: Lsn,
    /// The end LSN of the prepared transaction.
    pub end_lsn: Lsn,
    /// The prepare time.
    pub prepare_time: Timestamp,
    /// The transaction's xid.
    pub xid: Xid,
    /// The global identifier given to `PREPARE TRANSACTION`.
    pub gid: &'a str,
}

/// `P` (Prepare) and `p` (Stream Prepare): the end of a prepared transaction (protocol 3+).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prepare<'a> {
    /// Flags; currently unused (0).
    pub flags: u8,
    /// The LSN of the prepare record.
    pub prepare_lsn: Lsn,
    /// The end LSN of the prepared transaction.
    pub end_lsn: Lsn,
    /// The prepare time.
    pub prepare_time: Timestamp,
    /// The transaction's xid.
    pub xid: Xid,
    /// The global identifier given to `PREPARE TRANSACTION`.
    pub gid: &'a str,
}

/// `K`: a prepared transaction committed (protocol 3+).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitPrepared<'a> {
    /// Flags; currently unused (0).
    pub flags: u8,
    /// The LSN of the commit record.
    pub commit_lsn: Lsn,
    /// The end LSN of the commit.
    pub end_lsn: Lsn,
    /// The commit time.
    pub commit_time: Timestamp,
    /// The transaction's xid.
    pub xid: Xid,
    /// The global identifier.
    pub gid: &'a str,
}

/// `r`: a prepared transaction rolled back (protocol 3+).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RollbackPrepared<'a> {
    /// Flags; currently unused (0).
    pub flags: u8,
    /// The end LSN of the prepared transaction.
    pub prepare_end_lsn: Lsn,
    /// The end LSN of the rollback.
    pub rollback_end_lsn: Lsn,
    /// The prepare time.
    pub prepare_time: Timestamp,
    /// The rollback time.
    pub rollback_time: Timestamp,
    /// The transaction's xid.
    pub xid: Xid,
    /// The global identifier.
    pub gid: &'a str,
}

impl Begin {
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(Begin {
            final_lsn: r.lsn()?,
            commit_time: r.timestamp()?,
            xid: r.xid()?,
        })
    }

    pub(crate) fn write(&self, out: &mut impl BufMut) {
        out.put_u64(self.final_lsn.get());
        out.put_i64(self.commit_time.micros_since_2000());
        out.put_u32(self.xid.0);
    }
}

impl Commit {
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(Commit {
            flags: r.u8()?,
            commit_lsn: r.lsn()?,
            end_lsn: r.lsn()?,
            commit_time: r.timestamp()?,
        })
    }

    pub(crate) fn write(&self, out: &mut impl BufMut) {
        out.put_u8(self.flags);
        out.put_u64(self.commit_lsn.get());
        out.put_u64(self.end_lsn.get());
        out.put_i64(self.commit_time.micros_since_2000());
    }
}

impl<'a> Origin<'a> {
    pub(crate) fn read(r: &mut Reader<'a>) -> Result<Self, Error> {
        Ok(Origin {
            commit_lsn: r.lsn()?,
            name: r.cstr()?,
        })
    }

    pub(crate) fn write(&self, out: &mut impl BufMut) {
        out.put_u64(self.commit_lsn.get());
        put_cstr(out, self.name);
    }
}

/// Reads the `N` marker and the new tuple that ends Insert and Update. Inlined, as
/// [`Insert::read`] is, so that the reader stays in registers on the hot path (callgrind: about
/// 20 instructions per Insert).
#[inline(always)]
fn read_new<'a>(r: &mut Reader<'a>) -> Result<TupleData<'a>, Error> {
    let at = r.offset();
    match r.u8()? {
        b'N' => TupleData::read(r),
        other => Err(r.error_at(ErrorKind::UnexpectedTupleMarker(other), at)),
    }
}

impl<'a> Insert<'a> {
    #[inline(always)]
    pub(crate) fn read(r: &mut Reader<'a>, xid: Option<Xid>) -> Result<Self, Error> {
        Ok(Insert {
            xid,
            relation_id: r.oid()?,
            new: read_new(r)?,
        })
    }

    pub(crate) fn write(&self, out: &mut impl BufMut) {
        put_xid(out, self.xid);
        out.put_u32(self.relation_id.0);
        out.put_u8(b'N');
        self.new.encode(out);
    }
}

impl<'a> Update<'a> {
    pub(crate) fn read(r: &mut Reader<'a>, xid: Option<Xid>) -> Result<Self, Error> {
        let relation_id = r.oid()?;
        let at = r.offset();
        let old = match r.u8()? {
            b'N' => None,
            marker => {
                let old = OldTuple::read(r, marker, at)?;
                let at = r.offset();
                match r.u8()? {
                    b'N' => {}
                    other => return Err(r.error_at(ErrorKind::UnexpectedTupleMarker(other), at)),
                }
                Some(old)
            }
        };
        Ok(Update {
            xid,
            relation_id,
            old,
            new: TupleData::read(r)?,
        })
    }

    pub(crate) fn write(&self, out: &mut impl BufMut) {
        put_xid(out, self.xid);
        out.put_u32(self.relation_id.0);
        if let Some(old) = &self.old {
            old.write(out);
        }
        out.put_u8(b'N');
        self.new.encode(out);
    }
}

impl<'a> Delete<'a> {
    pub(crate) fn read(r: &mut Reader<'a>, xid: Option<Xid>) -> Result<Self, Error> {
        let relation_id = r.oid()?;
        let at = r.offset();
        let marker = r.u8()?;
        Ok(Delete {
            xid,
            relation_id,
            old: OldTuple::read(r, marker, at)?,
        })
    }

    pub(crate) fn write(&self, out: &mut impl BufMut) {
        put_xid(out, self.xid);
        out.put_u32(self.relation_id.0);
        self.old.write(out);
    }
}

impl<'a> Truncate<'a> {
    pub(crate) fn read(r: &mut Reader<'a>, xid: Option<Xid>) -> Result<Self, Error> {
        let at = r.offset();
        let n = r.u32()?;
        let options = r.u8()?;
        r.check_count(n, 4, at)?;
        let data = r.bytes(n as usize * 4)?;
        Ok(Truncate {
            xid,
            options,
            relation_ids: RelationIds { data },
        })
    }

    pub(crate) fn write(&self, out: &mut impl BufMut) {
        put_xid(out, self.xid);
        out.put_u32(u32::try_from(self.relation_ids.len()).unwrap_or(u32::MAX));
        out.put_u8(self.options);
        out.put_slice(self.relation_ids.data);
    }
}

impl<'a> LogicalMessage<'a> {
    pub(crate) fn read(r: &mut Reader<'a>, xid: Option<Xid>) -> Result<Self, Error> {
        Ok(LogicalMessage {
            xid,
            flags: r.u8()?,
            lsn: r.lsn()?,
            prefix: r.cstr()?,
            content: r.len_prefixed()?,
        })
    }

    pub(crate) fn write(&self, out: &mut impl BufMut) {
        put_xid(out, self.xid);
        out.put_u8(self.flags);
        out.put_u64(self.lsn.get());
        put_cstr(out, self.prefix);
        out.put_u32(u32::try_from(self.content.len()).unwrap_or(u32::MAX));
        out.put_slice(self.content);
    }
}

impl StreamStart {
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(StreamStart {
            xid: r.xid()?,
            first_segment: r.u8()? != 0,
        })
    }

    pub(crate) fn write(&self, out: &mut impl BufMut) {
        out.put_u32(self.xid.0);
        out.put_u8(u8::from(self.first_segment));
    }
}

impl StreamCommit {
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(StreamCommit {
            xid: r.xid()?,
            flags: r.u8()?,
            commit_lsn: r.lsn()?,
            end_lsn: r.lsn()?,
            commit_time: r.timestamp()?,
        })
    }

    pub(crate) fn write(&self, out: &mut impl BufMut) {
        out.put_u32(self.xid.0);
        out.put_u8(self.flags);
        out.put_u64(self.commit_lsn.get());
        out.put_u64(self.end_lsn.get());
        out.put_i64(self.commit_time.micros_since_2000());
    }
}

impl StreamAbort {
    pub(crate) fn read(r: &mut Reader<'_>, parallel: bool) -> Result<Self, Error> {
        let xid = r.xid()?;
        let subxid = r.xid()?;
        let parallel = if parallel {
            Some(AbortInfo {
                abort_lsn: r.lsn()?,
                abort_time: r.timestamp()?,
            })
        } else {
            None
        };
        Ok(StreamAbort {
            xid,
            subxid,
            parallel,
        })
    }

    pub(crate) fn write(&self, out: &mut impl BufMut) {
        out.put_u32(self.xid.0);
        out.put_u32(self.subxid.0);
        if let Some(p) = &self.parallel {
            out.put_u64(p.abort_lsn.get());
            out.put_i64(p.abort_time.micros_since_2000());
        }
    }
}

impl<'a> BeginPrepare<'a> {
    pub(crate) fn read(r: &mut Reader<'a>) -> Result<Self, Error> {
        Ok(BeginPrepare {
            prepare_lsn: r.lsn()?,
            end_lsn: r.lsn()?,
            prepare_time: r.timestamp()?,
            xid: r.xid()?,
            gid: r.cstr()?,
        })
    }

    pub(crate) fn write(&self, out: &mut impl BufMut) {
        out.put_u64(self.prepare_lsn.get());
        out.put_u64(self.end_lsn.get());
        out.put_i64(self.prepare_time.micros_since_2000());
        out.put_u32(self.xid.0);
        put_cstr(out, self.gid);
    }
}

impl<'a> Prepare<'a> {
    pub(crate) fn read(r: &mut Reader<'a>) -> Result<Self, Error> {
        Ok(Prepare {
            flags: r.u8()?,
            prepare_lsn: r.lsn()?,
            end_lsn: r.lsn()?,
            prepare_time: r.timestamp()?,
            xid: r.xid()?,
            gid: r.cstr()?,
        })
    }

    pub(crate) fn write(&self, out: &mut impl BufMut) {
        out.put_u8(self.flags);
        out.put_u64(self.prepare_lsn.get());
        out.put_u64(self.end_lsn.get());
        out.put_i64(self.prepare_time.micros_since_2000());
        out.put_u32(self.xid.0);
        put_cstr(out, self.gid);
    }
}

impl<'a> CommitPrepared<'a> {
    pub(crate) fn read(r: &mut Reader<'a>) -> Result<Self, Error> {
        Ok(CommitPrepared {
            flags: r.u8()?,
            commit_lsn: r.lsn()?,
            end_lsn: r.lsn()?,
            commit_time: r.timestamp()?,
            xid: r.xid()?,
            gid: r.cstr()?,
        })
    }

    pub(crate) fn write(&self, out: &mut impl BufMut) {
        out.put_u8(self.flags);
        out.put_u64(self.commit_lsn.get());
        out.put_u64(self.end_lsn.get());
        out.put_i64(self.commit_time.micros_since_2000());
        out.put_u32(self.xid.0);
        put_cstr(out, self.gid);
    }
}

impl<'a> RollbackPrepared<'a> {
    pub(crate) fn read(r: &mut Reader<'a>) -> Result<Self, Error> {
        Ok(RollbackPrepared {
            flags: r.u8()?,
            prepare_end_lsn: r.lsn()?,
            rollback_end_lsn: r.lsn()?,
            prepare_time: r.timestamp()?,
            rollback_time: r.timestamp()?,
            xid: r.xid()?,
            gid: r.cstr()?,
        })
    }

    pub(crate) fn write(&self, out: &mut impl BufMut) {
        out.put_u8(self.flags);
        out.put_u64(self.prepare_end_lsn.get());
        out.put_u64(self.rollback_end_lsn.get());
        out.put_i64(self.prepare_time.micros_since_2000());
        out.put_i64(self.rollback_time.micros_since_2000());
        out.put_u32(self.xid.0);
        put_cstr(out, self.gid);
    }
}
