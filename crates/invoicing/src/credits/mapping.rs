//! The credit model's enums on the wire.

use tally_proto::invoicing::{CreditGrantKind, CreditLedgerEntryKind};

use super::model::{EntryKind, GrantKind};

/// The wire kind of a ledger entry.
pub fn entry_kind_to_wire(kind: EntryKind) -> CreditLedgerEntryKind {
    match kind {
        EntryKind::Grant => CreditLedgerEntryKind::Grant,
        EntryKind::Burn => CreditLedgerEntryKind::Burn,
        EntryKind::Expiry => CreditLedgerEntryKind::Expiry,
        EntryKind::Void => CreditLedgerEntryKind::Void,
        EntryKind::Reversal => CreditLedgerEntryKind::Reversal,
    }
}

/// The wire kind of a grant.
pub fn grant_kind_to_wire(kind: GrantKind) -> CreditGrantKind {
    match kind {
        GrantKind::Prepaid => CreditGrantKind::Prepaid,
        GrantKind::Promotional => CreditGrantKind::Promotional,
    }
}
