//! A stateful, sans-IO decoder for a whole pgoutput stream.

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::error::{Error, ErrorKind};
use crate::pgoutput::{
    Boundaries, Message, OldTuple, ParseContext, ProtocolVersion, Relation, ReplicaIdentity,
    Streaming, TupleData, Type,
};
use crate::types::{Oid, Xid};

/// Decodes the pgoutput messages of one replication session, in order.
///
/// The decoder keeps what a single message does not carry: whether it is inside a streamed
/// block (so the parse knows whether an xid comes first), the relations and types described so
/// far (a re-sent Relation replaces the earlier one), and where the stream is in a transaction
/// (a Commit without a Begin is an error). It checks every row against its relation's column
/// count and resolves it to that relation.
///
/// Call sequence: [`Decoder::new`] with the options the stream was started with, then
/// [`Decoder::decode`] for each XLogData payload in order. After a reconnect, start a new
/// decoder (or call [`Decoder::reset`]): the server describes every relation again.
///
/// A message that fails to decode leaves the decoder as it was.
///
/// ```
/// use walproto::{Decoder, pgoutput::{Message, ProtocolVersion, Streaming}};
///
/// let mut decoder = Decoder::new(ProtocolVersion::V1, Streaming::Off);
/// // Begin, Relation 16384 "public"."t" (one key column "id" int4), Insert (7), Commit.
/// let stream: [&[u8]; 4] = [
///     b"B\0\0\0\0\x01\x6B\x37\x48\0\0\0\0\0\0\0\0\0\0\x02\xE4",
///     b"R\0\0\x40\0public\0t\0d\0\x01\x01id\0\0\0\0\x17\xFF\xFF\xFF\xFF",
///     b"I\0\0\x40\0N\0\x01t\0\0\0\x017",
///     b"C\0\0\0\0\0\x01\x6B\x37\x48\0\0\0\0\x01\x6B\x37\x80\0\0\0\0\0\0\0\0",
/// ];
/// for payload in stream {
///     let decoded = decoder.decode(payload)?;
///     if let (Message::Insert(insert), Some(rel)) = (decoded.message, decoded.relation) {
///         assert_eq!((rel.namespace.as_str(), rel.name.as_str()), ("public", "t"));
///         assert_eq!(insert.new.columns().next().and_then(|c| c.as_str()), Some("7"));
///     }
/// }
/// # Ok::<(), walproto::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Decoder {
    boundaries: Boundaries,
    relations: BTreeMap<Oid, Arc<RelationInfo>>,
    types: BTreeMap<Oid, TypeInfo>,
    max_relations: usize,
    max_types: usize,
}

/// A decoded message, with the relation a row message refers to.
#[derive(Debug, Clone, Copy)]
pub struct Decoded<'a, 'd> {
    /// The message, borrowing from the decoded bytes.
    pub message: Message<'a>,
    /// For Insert, Update and Delete (and a Relation message itself), the relation as now
    /// cached.
    pub relation: Option<&'d Arc<RelationInfo>>,
    /// For a Stream Abort, whether it was stray: it matched no streamed transaction open
    /// before it ([`Boundaries::is_stray_abort`]). Always `false` for other messages.
    pub stray_abort: bool,
}

/// A relation as described by the last Relation message for its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationInfo {
    /// The relation's OID.
    pub id: Oid,
    /// The schema (empty for `pg_catalog`).
    pub namespace: String,
    /// The table name.
    pub name: String,
    /// The replica identity setting.
    pub replica_identity: ReplicaIdentity,
    /// The published columns, in order.
    pub columns: Vec<ColumnInfo>,
}

/// One column of a [`RelationInfo`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    /// The column name.
    pub name: String,
    /// The column's type OID.
    pub type_oid: Oid,
    /// The type modifier, `-1` for none.
    pub type_modifier: i32,
    /// Whether the column is part of the replica identity.
    pub key: bool,
}

/// A data type as described by a Type message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeInfo {
    /// The type's OID.
    pub id: Oid,
    /// The type's schema (empty for `pg_catalog`).
    pub namespace: String,
    /// The type's name.
    pub name: String,
}

/// The default bound on cached relations: far above any real publication, so that a hostile
/// server cannot grow the cache without limit.
///
/// It bounds the count, and [`MAX_NAME_LEN`](crate::pgoutput::MAX_NAME_LEN) each name; an
/// entry's size still grows with the column count a Relation message claims. Real tables take
/// a few KiB each. The worst case is 65,535 columns (the wire's `Int16` count; PostgreSQL
/// itself allows 1,600) named with the longest names: about 20 MB per relation (from a 17 MB
/// message), about 2 TB for a full cache of them. A client that must bound its memory against
/// a hostile server sets [`Decoder::with_max_relations`] to what it can afford at 20 MB each.
pub const DEFAULT_MAX_RELATIONS: usize = 100_000;

/// The default bound on cached types: far above the user-defined types any database uses in
/// its published columns (pgoutput describes only those), so that a hostile server cannot
/// grow the cache without limit. An entry is two names of at most
/// [`MAX_NAME_LEN`](crate::pgoutput::MAX_NAME_LEN) bytes and its bookkeeping, under 1 KiB, so
/// a full cache stays under 100 MB.
pub const DEFAULT_MAX_TYPES: usize = 100_000;

impl Decoder {
    /// A decoder for a stream started with this protocol version and streaming mode.
    pub fn new(version: ProtocolVersion, streaming: Streaming) -> Self {
        Decoder {
            boundaries: Boundaries::new(version, streaming),
            relations: BTreeMap::new(),
            types: BTreeMap::new(),
            max_relations: DEFAULT_MAX_RELATIONS,
            max_types: DEFAULT_MAX_TYPES,
        }
    }

    /// Sets the most relations the cache may hold; a Relation message beyond it is an error
    /// ([`ErrorKind::TooManyRelations`]). Re-describing a cached relation is always allowed.
    pub fn with_max_relations(mut self, max: usize) -> Self {
        self.max_relations = max;
        self
    }

    /// Sets the most types the cache may hold; a Type message beyond it is an error
    /// ([`ErrorKind::TooManyTypes`]). Re-describing a cached type is always allowed.
    pub fn with_max_types(mut self, max: usize) -> Self {
        self.max_types = max;
        self
    }

    /// The parse context for the next message.
    pub fn context(&self) -> ParseContext {
        self.boundaries.context()
    }

    /// Where the stream is between transaction boundaries: whether it is between
    /// transactions, the streamed block it is in.
    pub fn boundaries(&self) -> &Boundaries {
        &self.boundaries
    }

    /// The top-level xid of the streamed block the decoder is in, if any.
    pub fn stream_xid(&self) -> Option<Xid> {
        self.boundaries.stream_xid()
    }

    /// Whether the decoder is between transactions and streamed blocks (a streamed
    /// transaction may still be open between its blocks; see
    /// [`Boundaries::between_transactions`]).
    pub fn is_idle(&self) -> bool {
        self.boundaries.is_idle()
    }

    /// The cached description of a relation.
    pub fn relation(&self, id: Oid) -> Option<&Arc<RelationInfo>> {
        self.relations.get(&id)
    }

    /// The cached description of a type.
    pub fn type_info(&self, id: Oid) -> Option<&TypeInfo> {
        self.types.get(&id)
    }

    /// Forgets all state, as for a new replication session.
    pub fn reset(&mut self) {
        self.boundaries.reset();
        self.relations.clear();
        self.types.clear();
    }

    /// Decodes the next message of the stream, with the relation a row refers to.
    ///
    /// The result borrows the decoder (for the relation); use [`Decoder::decode_message`] when
    /// the decoder must be queried again while the message is alive (for the several
    /// relations of a Truncate, say).
    pub fn decode<'a>(&mut self, payload: &'a [u8]) -> Result<Decoded<'a, '_>, Error> {
        let message = Message::parse(payload, self.context())?;
        let tag = message.tag();
        // Everything that can fail is checked before the boundaries move, so a bad message
        // leaves the decoder as it was. Row messages look their relation up once.
        let checked = self.boundaries.checked(&message)?;
        let relation = match &message {
            Message::Relation(rel) => {
                self.store_relation(rel)?;
                self.relations.get(&rel.id)
            }
            Message::Type(t) => {
                self.store_type(t)?;
                None
            }
            Message::Insert(m) => Some(row(&self.relations, m.relation_id, &m.new, None, tag)?),
            Message::Update(m) => {
                let old = m.old.as_ref().map(OldTuple::tuple);
                Some(row(&self.relations, m.relation_id, &m.new, old, tag)?)
            }
            Message::Delete(m) => Some(row(
                &self.relations,
                m.relation_id,
                m.old.tuple(),
                None,
                tag,
            )?),
            Message::Truncate(m) => {
                for id in m.relation_ids.iter() {
                    known(&self.relations, id, tag)?;
                }
                None
            }
            _ => None,
        };
        // Judged before following it, which would close the streamed transaction it ends.
        let stray_abort =
            matches!(&message, Message::StreamAbort(a) if self.boundaries.is_stray_abort(a));
        self.boundaries.apply(checked);
        Ok(Decoded {
            message,
            relation,
            stray_abort,
        })
    }

    /// Decodes the next message of the stream, exactly as [`Decoder::decode`] does, returning
    /// only the message: it does not keep the decoder borrowed, so [`Decoder::relation`] can
    /// be called while it is alive.
    pub fn decode_message<'a>(&mut self, payload: &'a [u8]) -> Result<Message<'a>, Error> {
        self.decode(payload).map(|d| d.message)
    }

    fn store_type(&mut self, t: &Type<'_>) -> Result<(), Error> {
        if !self.types.contains_key(&t.id) && self.types.len() >= self.max_types {
            return Err(Error::new(
                ErrorKind::TooManyTypes,
                Some(crate::pgoutput::tag::TYPE),
                0,
            ));
        }
        self.types.insert(
            t.id,
            TypeInfo {
                id: t.id,
                namespace: t.namespace.to_string(),
                name: t.name.to_string(),
            },
        );
        Ok(())
    }

    fn store_relation(&mut self, rel: &Relation<'_>) -> Result<(), Error> {
        if !self.relations.contains_key(&rel.id) && self.relations.len() >= self.max_relations {
            return Err(Error::new(
                ErrorKind::TooManyRelations,
                Some(crate::pgoutput::tag::RELATION),
                0,
            ));
        }
        let columns = rel
            .columns
            .iter()
            .map(|c| ColumnInfo {
                name: c.name.to_string(),
                type_oid: c.type_oid,
                type_modifier: c.type_modifier,
                key: c.is_key(),
            })
            .collect();
        self.relations.insert(
            rel.id,
            Arc::new(RelationInfo {
                id: rel.id,
                namespace: rel.namespace.to_string(),
                name: rel.name.to_string(),
                replica_identity: rel.replica_identity,
                columns,
            }),
        );
        Ok(())
    }
}

/// The cached relation `id`, or [`ErrorKind::UnknownRelation`].
fn known(
    relations: &BTreeMap<Oid, Arc<RelationInfo>>,
    id: Oid,
    tag: u8,
) -> Result<&Arc<RelationInfo>, Error> {
    relations
        .get(&id)
        .ok_or(Error::new(ErrorKind::UnknownRelation(id), Some(tag), 0))
}

/// The relation of a row message, after checking that its tuples have its column count.
fn row<'r>(
    relations: &'r BTreeMap<Oid, Arc<RelationInfo>>,
    id: Oid,
    new: &TupleData<'_>,
    old: Option<&TupleData<'_>>,
    tag: u8,
) -> Result<&'r Arc<RelationInfo>, Error> {
    let rel = known(relations, id, tag)?;
    let expected = u16::try_from(rel.columns.len()).unwrap_or(u16::MAX);
    for tuple in core::iter::once(new).chain(old) {
        if tuple.len() != expected {
            return Err(Error::new(
                ErrorKind::ColumnCountMismatch {
                    expected,
                    found: tuple.len(),
                },
                Some(tag),
                0,
            ));
        }
    }
    Ok(rel)
}

impl RelationInfo {
    /// The column named `name`, with its position.
    pub fn column(&self, name: &str) -> Option<(usize, &ColumnInfo)> {
        self.columns
            .iter()
            .enumerate()
            .find(|(_, c)| c.name == name)
    }
}
