//! [`Change`]: one change of a transaction, and what it costs in the memory budget.

use std::sync::Arc;

use bytes::Bytes;
use walproto::{Lsn, RelationInfo, Xid};

use crate::logical::event::{Delete, Insert, LogicalMessage, OldRow, Truncate, Update};

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

    /// The relation of a row change (insert, update, delete); `None` for a truncate, which
    /// may name several ([`Truncate::relations`]), and for a message.
    pub fn relation(&self) -> Option<&Arc<RelationInfo>> {
        match &self.kind {
            ChangeKind::Insert(c) => Some(&c.relation),
            ChangeKind::Update(c) => Some(&c.relation),
            ChangeKind::Delete(c) => Some(&c.relation),
            ChangeKind::Truncate(_) | ChangeKind::Message(_) => None,
        }
    }

    /// The same change holding only its own bytes: its rows and message content copied out
    /// of the frame they came in. A held change counts in the budget for what it really
    /// keeps alive this way, not for a whole read buffer its frame would share.
    pub(super) fn detached(self) -> Self {
        let kind = match self.kind {
            ChangeKind::Insert(c) => ChangeKind::Insert(Insert {
                new: c.new.detached(),
                ..c
            }),
            ChangeKind::Update(c) => ChangeKind::Update(Update {
                old: c.old.as_ref().map(OldRow::detached),
                new: c.new.detached(),
                ..c
            }),
            ChangeKind::Delete(c) => ChangeKind::Delete(Delete {
                old: c.old.detached(),
                ..c
            }),
            ChangeKind::Message(c) => ChangeKind::Message(LogicalMessage {
                content: Bytes::copy_from_slice(&c.content),
                ..c
            }),
            kind @ ChangeKind::Truncate(_) => kind,
        };
        Change {
            lsn: self.lsn,
            kind,
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
