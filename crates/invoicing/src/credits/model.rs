//! The credit tables' enums, stored as text (the CHECKs of
//! `20261121000010_invoicing.sql` list the same names). A stored name this
//! code does not know is an error when read, never a default; the wire
//! enums are made from them at the edge (`mapping.rs`).

use crate::text_enum::text_enum;

text_enum! {
    /// What a ledger entry records (`credit_ledger_entries.kind`).
    pub enum EntryKind {
        Grant = "grant",
        Burn = "burn",
        Expiry = "expiry",
        Void = "void",
        Reversal = "reversal",
    }
}

text_enum! {
    /// Who paid for a grant (`credit_grants.kind`).
    pub enum GrantKind {
        Prepaid = "prepaid",
        Promotional = "promotional",
    }
}

text_enum! {
    /// Why a grant can no longer be burned (`credit_grants.closed`; NULL
    /// while it can).
    pub enum Closure {
        Expired = "expired",
        Void = "void",
    }
}
