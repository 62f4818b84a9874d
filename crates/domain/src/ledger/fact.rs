//! Ledger facts: what a ledger transaction records, and its idempotency key.
//!
//! A service that posts one transaction per business fact (payments: an
//! invoice finalized, a payment collected, a refund succeeded, …) derives the
//! transaction's id from the fact's key, so posting the same fact twice is a
//! replay, never a second entry. The key is also the transaction's stored
//! description. Both are stored forever, so the text of every key is fixed:
//! `<subject>:<id>:<event>` (`invoice:inv_1:finalized`), as the payments
//! ledger has written it since it was first posted. The table test below pins
//! every variant to that text.

use std::fmt;
use std::str::FromStr;

/// One fact a ledger transaction records, named by the id of its subject.
///
/// ```
/// use tally_domain::ledger::Fact;
///
/// let fact = Fact::InvoiceFinalized("inv_1".into());
/// assert_eq!(fact.as_key(), "invoice:inv_1:finalized");
/// assert_eq!("invoice:inv_1:finalized".parse::<Fact>(), Ok(fact));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Fact {
    /// An invoice was finalized: its amount due becomes receivable
    /// (`invoice:<inv>:finalized`).
    InvoiceFinalized(String),
    /// A finalized invoice was voided: the finalization is reversed
    /// (`invoice:<inv>:voided`).
    InvoiceVoided(String),
    /// A payment was collected (`payment:<pay>:collected`).
    PaymentCollected(String),
    /// Dunning gave up on a payment: bad debt (`payment:<pay>:written_off`).
    PaymentWrittenOff(String),
    /// A refund succeeded in the payment processor (`refund:<ref>:succeeded`).
    RefundSucceeded(String),
    /// A dispute was opened on a charge; the id is the processor's
    /// (`dispute:<dp>:created`).
    DisputeCreated(String),
    /// A credit note was issued (`credit_note:<cn>:issued`).
    CreditNoteIssued(String),
}

/// A key that is not a ledger fact.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{key:?} is not a ledger fact (expected <subject>:<id>:<event>, e.g. invoice:inv_1:finalized)"
)]
pub struct FactError {
    /// The text that was given.
    pub key: String,
}

impl Fact {
    /// The subject, the id and the event: the three parts of the key.
    fn parts(&self) -> (&'static str, &str, &'static str) {
        match self {
            Fact::InvoiceFinalized(invoice) => ("invoice", invoice, "finalized"),
            Fact::InvoiceVoided(invoice) => ("invoice", invoice, "voided"),
            Fact::PaymentCollected(payment) => ("payment", payment, "collected"),
            Fact::PaymentWrittenOff(payment) => ("payment", payment, "written_off"),
            Fact::RefundSucceeded(refund) => ("refund", refund, "succeeded"),
            Fact::DisputeCreated(dispute) => ("dispute", dispute, "created"),
            Fact::CreditNoteIssued(credit_note) => ("credit_note", credit_note, "issued"),
        }
    }

    /// The id of the fact's subject (an invoice, a payment, a refund, …).
    pub fn subject_id(&self) -> &str {
        self.parts().1
    }

    /// The idempotency key (and stored description) of the fact's transaction.
    pub fn as_key(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Fact {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (subject, id, event) = self.parts();
        write!(formatter, "{subject}:{id}:{event}")
    }
}

impl FromStr for Fact {
    type Err = FactError;

    /// Reads a key back. The id is everything between the first and the last
    /// colon, so any id that [`Display`](fmt::Display) wrote reads back.
    fn from_str(key: &str) -> Result<Fact, FactError> {
        let refuse = || FactError {
            key: key.to_owned(),
        };
        let (subject, rest) = key.split_once(':').ok_or_else(refuse)?;
        let (id, event) = rest.rsplit_once(':').ok_or_else(refuse)?;
        if id.is_empty() {
            return Err(refuse());
        }
        let id = id.to_owned();
        let fact = match (subject, event) {
            ("invoice", "finalized") => Fact::InvoiceFinalized(id),
            ("invoice", "voided") => Fact::InvoiceVoided(id),
            ("payment", "collected") => Fact::PaymentCollected(id),
            ("payment", "written_off") => Fact::PaymentWrittenOff(id),
            ("refund", "succeeded") => Fact::RefundSucceeded(id),
            ("dispute", "created") => Fact::DisputeCreated(id),
            ("credit_note", "issued") => Fact::CreditNoteIssued(id),
            _ => return Err(refuse()),
        };
        Ok(fact)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant and the exact key stored today (payments.ledger_transactions:
    /// the id is derived from it and it is the description). Never change a row.
    #[test]
    fn every_fact_has_the_key_stored_today() {
        let table = [
            (
                Fact::InvoiceFinalized("inv_01".into()),
                "invoice:inv_01:finalized",
            ),
            (
                Fact::InvoiceVoided("inv_01".into()),
                "invoice:inv_01:voided",
            ),
            (
                Fact::PaymentCollected("pay_01".into()),
                "payment:pay_01:collected",
            ),
            (
                Fact::PaymentWrittenOff("pay_01".into()),
                "payment:pay_01:written_off",
            ),
            (
                Fact::RefundSucceeded("ref_01".into()),
                "refund:ref_01:succeeded",
            ),
            (
                Fact::DisputeCreated("dp_1Abc".into()),
                "dispute:dp_1Abc:created",
            ),
            (
                Fact::CreditNoteIssued("cn_01".into()),
                "credit_note:cn_01:issued",
            ),
        ];
        for (fact, key) in table {
            assert_eq!(fact.as_key(), key);
            assert_eq!(fact.to_string(), key);
            assert_eq!(key.parse::<Fact>(), Ok(fact));
        }
    }

    #[test]
    fn an_id_with_colons_reads_back() {
        let fact = Fact::DisputeCreated("a:b".into());
        assert_eq!(fact.as_key().parse::<Fact>(), Ok(fact.clone()));
        assert_eq!(fact.subject_id(), "a:b");
    }

    #[test]
    fn other_text_is_not_a_fact() {
        for key in [
            "",
            "invoice",
            "invoice:inv_1",
            "invoice::finalized",
            "invoice:inv_1:paid",
            "payment:pay_1:succeeded",
            "scheduled:2026-01-01T00:00:00+00:00",
        ] {
            assert_eq!(
                key.parse::<Fact>(),
                Err(FactError {
                    key: key.to_owned()
                }),
                "{key:?}"
            );
        }
    }
}
