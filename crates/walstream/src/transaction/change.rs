//! [`Change`]: one change of a transaction, and what it costs in the memory budget.

use walproto::{Lsn, Xid};

use crate::logical::event::{Delete, Insert, LogicalMessage, Truncate, Update};

/// What a change costs in the budget besides its row bytes (the event, the `Arc`s, the
/// vector slot): an estimate, on the high side.
const CHANGE_OVERHEAD: usize = 160;

/// One change of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The LSN of the XLogData that carried it.
    pub lsn: Lsn,
    /// What changed.
    pub kind: ChangeKind,
}

impl Change {
    /// The xid pgoutput sent with the change inside a streamed block: the (sub)transaction
    /// that made it.
    pub fn xid(&self) -> Option<Xid> {
        match &self.kind {
            ChangeKind::Insert(c) => c.xid,
            ChangeKind::Update(c) => c.xid,
            ChangeKind::Delete(c) => c.xid,
            ChangeKind::Truncate(c) => c.xid,
            ChangeKind::Message(c) => c.xid,
        }
    }

    /// An estimate of the memory the change holds.
    pub(super) fn size(&self) -> usize {
        let rows = match &self.kind {
            ChangeKind::Insert(c) => c.new.byte_size(),
            ChangeKind::Update(c) => {
                c.new.byte_size() + c.old.as_ref().map_or(0, |o| o.row().byte_size())
            }
            ChangeKind::Delete(c) => c.old.row().byte_size(),
            ChangeKind::Truncate(c) => c.relations.len() * 8,
            ChangeKind::Message(c) => c.content.len() + c.prefix.len(),
        };
        rows + CHANGE_OVERHEAD
    }
}

/// The kinds of [`Change`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChangeKind {
    /// A row was inserted.
    Insert(Insert),
    /// A row was updated.
    Update(Update),
    /// A row was deleted.
    Delete(Delete),
    /// Tables were truncated.
    Truncate(Truncate),
    /// A transactional logical decoding message.
    Message(LogicalMessage),
}
