//! Relation and Type: the schema messages, with lazily read columns.

use bytes::BufMut;
use core::fmt;

use super::{put_cstr, put_xid};
use crate::error::{Error, ErrorKind};
use crate::reader::Reader;
use crate::types::{Oid, Xid};

/// The longest schema, table, column or type name accepted in a Relation or Type message, in
/// bytes: with it, what one such message makes the [`Decoder`](crate::Decoder) keep is bounded
/// by the message's column count, not by its length (up to 1 GiB). A longer name is an
/// [`ErrorKind::NameTooLong`] at the offset where it starts.
///
/// PostgreSQL truncates identifiers to `NAMEDATALEN - 1` = 63 bytes in the server's encoding,
/// and pgoutput converts them to the client encoding as it writes them (`pq_sendstring`),
/// which must be UTF-8 here (names are `&str`). No server encoding grows more than threefold
/// on the way to UTF-8 (the single-byte encodings map into the Basic Multilingual Plane, at
/// most 3 bytes a character; the combined characters of SHIFT_JIS_2004 and EUC_JIS_2004 take
/// 2 bytes and become 6), so a real name is at most 189 bytes. 256 leaves room above that,
/// and for the ASCII names of a server built with a `NAMEDATALEN` of up to 257.
pub const MAX_NAME_LEN: usize = 256;

/// `R`: describes a table before the first row of it in a session, and again after any change.
///
/// A re-sent Relation for the same id replaces the earlier description.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Relation<'a> {
    /// The xid of the (sub)transaction, present only inside a streamed block (protocol 2+).
    pub xid: Option<Xid>,
    /// The relation's OID.
    pub id: Oid,
    /// The schema; pgoutput sends the empty string for `pg_catalog`.
    pub namespace: &'a str,
    /// The table name.
    pub name: &'a str,
    /// The table's replica identity setting.
    pub replica_identity: ReplicaIdentity,
    /// The published columns, in order.
    pub columns: RelationColumns<'a>,
}

/// A table's `REPLICA IDENTITY`: which old values Update and Delete carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReplicaIdentity {
    /// `d`: the primary key columns.
    Default,
    /// `n`: nothing.
    Nothing,
    /// `f`: all columns.
    Full,
    /// `i`: the columns of a chosen unique index.
    Index,
}

impl ReplicaIdentity {
    /// The byte pgoutput sends for this setting.
    pub const fn as_byte(self) -> u8 {
        match self {
            ReplicaIdentity::Default => b'd',
            ReplicaIdentity::Nothing => b'n',
            ReplicaIdentity::Full => b'f',
            ReplicaIdentity::Index => b'i',
        }
    }

    /// The setting for a byte, if it is one of `d`, `n`, `f`, `i`.
    pub const fn from_byte(b: u8) -> Option<Self> {
        match b {
            b'd' => Some(ReplicaIdentity::Default),
            b'n' => Some(ReplicaIdentity::Nothing),
            b'f' => Some(ReplicaIdentity::Full),
            b'i' => Some(ReplicaIdentity::Index),
            _ => None,
        }
    }
}

/// One column of a [`Relation`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RelationColumn<'a> {
    /// Column flags; bit 1 marks a replica identity (key) column.
    pub flags: u8,
    /// The column name.
    pub name: &'a str,
    /// The OID of the column's type (a domain's own OID, not its base type's).
    pub type_oid: Oid,
    /// The type modifier (`atttypmod`), `-1` when there is none.
    pub type_modifier: i32,
}

impl RelationColumn<'_> {
    /// Whether the column is part of the replica identity.
    pub const fn is_key(&self) -> bool {
        self.flags & 1 != 0
    }

    /// Appends this column's wire form to `out`.
    pub fn encode(&self, out: &mut impl BufMut) {
        out.put_u8(self.flags);
        put_cstr(out, self.name);
        out.put_u32(self.type_oid.0);
        out.put_i32(self.type_modifier);
    }
}

/// The columns of a [`Relation`], validated when parsed and read lazily.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RelationColumns<'a> {
    ncols: u16,
    data: &'a [u8],
}

/// Smallest wire size of a relation column: flags, an empty name's NUL, type OID, modifier.
const MIN_COLUMN_LEN: usize = 1 + 1 + 4 + 4;

impl<'a> RelationColumns<'a> {
    /// Validates `bytes` as a column count (`Int16`) followed by that many columns.
    ///
    /// Callers building a Relation to encode write the count and each
    /// [`RelationColumn::encode`], then view the bytes with this.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Error> {
        let mut r = Reader::new(bytes);
        let c = Self::read(&mut r)?;
        r.finish()?;
        Ok(c)
    }

    pub(crate) fn read(r: &mut Reader<'a>) -> Result<Self, Error> {
        let at = r.offset();
        let ncols = r.u16()?;
        r.check_count(u32::from(ncols), MIN_COLUMN_LEN, at)?;
        let start = r.rest();
        for _ in 0..ncols {
            r.u8()?;
            r.name()?;
            r.u32()?;
            r.i32()?;
        }
        let used = start.len() - r.remaining();
        let data = start
            .get(..used)
            .ok_or_else(|| r.error(ErrorKind::UnexpectedEof))?;
        Ok(RelationColumns { ncols, data })
    }

    /// The number of columns.
    pub const fn len(&self) -> u16 {
        self.ncols
    }

    /// Whether the relation has no published columns.
    pub const fn is_empty(&self) -> bool {
        self.ncols == 0
    }

    /// The columns, in order.
    pub fn iter(&self) -> RelationColumnIter<'a> {
        RelationColumnIter {
            reader: Reader::new(self.data),
            left: self.ncols,
        }
    }

    /// Appends the count and columns to `out`.
    pub fn encode(&self, out: &mut impl BufMut) {
        out.put_u16(self.ncols);
        out.put_slice(self.data);
    }
}

impl fmt::Debug for RelationColumns<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for RelationColumns<'a> {
    type Item = RelationColumn<'a>;
    type IntoIter = RelationColumnIter<'a>;

    fn into_iter(self) -> RelationColumnIter<'a> {
        self.iter()
    }
}

/// Iterator over [`RelationColumns`].
pub struct RelationColumnIter<'a> {
    reader: Reader<'a>,
    left: u16,
}

impl<'a> Iterator for RelationColumnIter<'a> {
    type Item = RelationColumn<'a>;

    fn next(&mut self) -> Option<RelationColumn<'a>> {
        // Validated when parsed: the `ok()?`s never stop early, they only rule out panics.
        self.left = self.left.checked_sub(1)?;
        let r = &mut self.reader;
        Some(RelationColumn {
            flags: r.u8().ok()?,
            name: r.cstr().ok()?,
            type_oid: r.oid().ok()?,
            type_modifier: r.i32().ok()?,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::from(self.left), Some(usize::from(self.left)))
    }
}

impl ExactSizeIterator for RelationColumnIter<'_> {}

impl<'a> Relation<'a> {
    pub(crate) fn read(r: &mut Reader<'a>, xid: Option<Xid>) -> Result<Self, Error> {
        let id = r.oid()?;
        let namespace = r.name()?;
        let name = r.name()?;
        let at = r.offset();
        let ri = r.u8()?;
        let replica_identity = ReplicaIdentity::from_byte(ri)
            .ok_or_else(|| r.error_at(ErrorKind::UnknownReplicaIdentity(ri), at))?;
        let columns = RelationColumns::read(r)?;
        Ok(Relation {
            xid,
            id,
            namespace,
            name,
            replica_identity,
            columns,
        })
    }

    pub(crate) fn write(&self, out: &mut impl BufMut) {
        put_xid(out, self.xid);
        out.put_u32(self.id.0);
        put_cstr(out, self.namespace);
        put_cstr(out, self.name);
        out.put_u8(self.replica_identity.as_byte());
        self.columns.encode(out);
    }
}

/// `Y`: describes a non-built-in data type before a relation that uses it.
///
/// For a domain, PostgreSQL sends the domain's own OID with the schema and name of its base
/// type (a domain over `int4` arrives as `""`, `"int4"`); the recorded captures show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Type<'a> {
    /// The xid of the (sub)transaction, present only inside a streamed block (protocol 2+).
    pub xid: Option<Xid>,
    /// The type's OID.
    pub id: Oid,
    /// The type's schema; pgoutput sends the empty string for `pg_catalog`.
    pub namespace: &'a str,
    /// The type's name.
    pub name: &'a str,
}

impl<'a> Type<'a> {
    pub(crate) fn read(r: &mut Reader<'a>, xid: Option<Xid>) -> Result<Self, Error> {
        Ok(Type {
            xid,
            id: r.oid()?,
            namespace: r.name()?,
            name: r.name()?,
        })
    }

    pub(crate) fn write(&self, out: &mut impl BufMut) {
        put_xid(out, self.xid);
        out.put_u32(self.id.0);
        put_cstr(out, self.namespace);
        put_cstr(out, self.name);
    }
}
