//! Matching Stripe's objects with Tally's: pure, so every rule is a unit test.
//!
//! | Stripe | Tally | matched by | compared |
//! |---|---|---|---|
//! | invoice | `payments.invoices` | Stripe invoice id | amount due, status |
//! | charge | payment (succeeded) or attempt (failed) | charge id | amount, amount refunded, status |
//! | refund | refund | Stripe refund id | amount, status |
//! | balance transaction (`charge`, `refund`) | the ledger transaction of the payment or refund | source id | amount |
//!
//! Anything Stripe has that Tally does not know is `missing_in_tally`; what
//! Tally created in the window and Stripe does not have is
//! `missing_in_stripe` (the caller confirms it with a direct read first).

use std::collections::HashMap;

use tally_domain::money::Money;

use crate::stripe::{
    RemoteBalanceTransaction, RemoteCharge, RemoteInvoice, RemoteInvoiceStatus, RemoteRefund,
    RemoteRefundStatus,
};

/// Kind of disagreement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FindingKind {
    /// Stripe has it, Tally does not.
    MissingInTally,
    /// Tally has it, Stripe does not.
    MissingInStripe,
    /// Amounts or currencies differ.
    AmountMismatch,
    /// Statuses are incompatible.
    StatusMismatch,
}

impl FindingKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::MissingInTally => "missing_in_tally",
            FindingKind::MissingInStripe => "missing_in_stripe",
            FindingKind::AmountMismatch => "amount_mismatch",
            FindingKind::StatusMismatch => "status_mismatch",
        }
    }
}

/// What a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// Invoice.
    Invoice,
    /// Payment / charge.
    Payment,
    /// Refund.
    Refund,
    /// Balance transaction / ledger entry.
    BalanceTransaction,
}

impl ObjectKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Invoice => "invoice",
            ObjectKind::Payment => "payment",
            ObjectKind::Refund => "refund",
            ObjectKind::BalanceTransaction => "balance_transaction",
        }
    }
}

/// One disagreement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Kind.
    pub kind: FindingKind,
    /// Object.
    pub object: ObjectKind,
    /// Tally's id (empty when missing in Tally).
    pub tally_id: String,
    /// Stripe's id (empty when missing in Stripe).
    pub stripe_id: String,
    /// Tally's amount.
    pub tally_amount: Option<Money>,
    /// Stripe's amount.
    pub stripe_amount: Option<Money>,
    /// Tally's status.
    pub tally_status: String,
    /// Stripe's status.
    pub stripe_status: String,
    /// Explanation.
    pub description: String,
}

/// A Tally invoice as payments holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TallyInvoice {
    /// `inv_…`.
    pub id: String,
    /// `in_…`, once mirrored.
    pub stripe_invoice_id: Option<String>,
    /// Amount due.
    pub amount_due: Money,
    /// `payments.invoices.status`.
    pub status: String,
}

/// A Tally payment that collected money (or a failed attempt's charge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TallyCharge {
    /// `pay_…`.
    pub payment_id: String,
    /// `ch_…`.
    pub stripe_charge_id: String,
    /// Amount collected (the payment's amount).
    pub amount: Money,
    /// Refunded so far.
    pub amount_refunded: Money,
    /// Payment status, or `failed` for a failed attempt's charge.
    pub status: String,
    /// Whether the ledger records the collection.
    pub in_ledger: bool,
}

/// A Tally refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TallyRefund {
    /// `ref_…`.
    pub id: String,
    /// `re_…`.
    pub stripe_refund_id: String,
    /// Amount.
    pub amount: Money,
    /// `pending`, `succeeded`, `failed`.
    pub status: String,
    /// Whether the ledger records it.
    pub in_ledger: bool,
}

/// Tally's side: what Stripe's objects point at, and what Tally created in the window.
#[derive(Debug, Clone, Default)]
pub struct TallySide {
    /// Invoices.
    pub invoices: Vec<TallyInvoice>,
    /// Collected payments and failed attempts' charges.
    pub charges: Vec<TallyCharge>,
    /// Refunds with a Stripe id.
    pub refunds: Vec<TallyRefund>,
}

/// Stripe's side: the objects created in the window.
#[derive(Debug, Clone, Default)]
pub struct StripeSide {
    /// Invoices.
    pub invoices: Vec<RemoteInvoice>,
    /// Charges.
    pub charges: Vec<RemoteCharge>,
    /// Refunds.
    pub refunds: Vec<RemoteRefund>,
    /// Balance transactions.
    pub balance_transactions: Vec<RemoteBalanceTransaction>,
}

/// The result of matching.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matching {
    /// Pairs that agree.
    pub matched: u64,
    /// Disagreements.
    pub findings: Vec<Finding>,
    /// Tally ids (invoice, charge, refund) Stripe's lists did not contain:
    /// the caller reads them from Stripe before calling them missing.
    pub unseen: Unseen,
}

/// Tally objects Stripe's lists did not contain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unseen {
    /// Invoices (with their Stripe ids, when mirrored).
    pub invoices: Vec<TallyInvoice>,
    /// Charges.
    pub charges: Vec<TallyCharge>,
    /// Refunds.
    pub refunds: Vec<TallyRefund>,
}

fn finding(kind: FindingKind, object: ObjectKind) -> Finding {
    Finding {
        kind,
        object,
        tally_id: String::new(),
        stripe_id: String::new(),
        tally_amount: None,
        stripe_amount: None,
        tally_status: String::new(),
        stripe_status: String::new(),
        description: String::new(),
    }
}

fn invoice_statuses_agree(tally: &str, stripe: RemoteInvoiceStatus) -> bool {
    match tally {
        "syncing" => matches!(
            stripe,
            RemoteInvoiceStatus::Draft | RemoteInvoiceStatus::Open
        ),
        other => other == stripe.as_str(),
    }
}

fn charge_statuses_agree(tally: &str, stripe: &str) -> bool {
    match tally {
        "succeeded" | "partially_refunded" | "refunded" | "disputed" => stripe == "succeeded",
        "failed" => stripe == "failed",
        _ => false,
    }
}

fn refund_statuses_agree(tally: &str, stripe: RemoteRefundStatus) -> bool {
    matches!(
        (tally, stripe),
        ("succeeded", RemoteRefundStatus::Succeeded)
            | ("pending", RemoteRefundStatus::Pending)
            | ("failed", RemoteRefundStatus::Failed)
    )
}

/// Compares one invoice pair; returns the findings (empty when they agree).
pub fn compare_invoice(tally: &TallyInvoice, stripe: &RemoteInvoice) -> Vec<Finding> {
    let mut findings = Vec::new();
    let base = |kind| Finding {
        tally_id: tally.id.clone(),
        stripe_id: stripe.id.clone(),
        tally_amount: Some(tally.amount_due),
        stripe_amount: Some(stripe.amount_due),
        tally_status: tally.status.clone(),
        stripe_status: stripe.status.as_str().to_owned(),
        ..finding(kind, ObjectKind::Invoice)
    };
    if stripe.status != RemoteInvoiceStatus::Draft && tally.amount_due != stripe.amount_due {
        findings.push(Finding {
            description: format!(
                "invoice {} is due {} in Tally and {} in Stripe ({})",
                tally.id, tally.amount_due, stripe.amount_due, stripe.id
            ),
            ..base(FindingKind::AmountMismatch)
        });
    }
    if !invoice_statuses_agree(&tally.status, stripe.status) {
        findings.push(Finding {
            description: format!(
                "invoice {} is {} in Tally and {} in Stripe ({})",
                tally.id,
                tally.status,
                stripe.status.as_str(),
                stripe.id
            ),
            ..base(FindingKind::StatusMismatch)
        });
    }
    findings
}

/// Compares one charge pair.
pub fn compare_charge(tally: &TallyCharge, stripe: &RemoteCharge) -> Vec<Finding> {
    let mut findings = Vec::new();
    let base = |kind| Finding {
        tally_id: tally.payment_id.clone(),
        stripe_id: stripe.id.clone(),
        tally_amount: Some(tally.amount),
        stripe_amount: Some(stripe.amount),
        tally_status: tally.status.clone(),
        stripe_status: stripe.status.clone(),
        ..finding(kind, ObjectKind::Payment)
    };
    if tally.status != "failed" {
        if tally.amount != stripe.amount {
            findings.push(Finding {
                description: format!(
                    "payment {} collected {} in Tally, charge {} is {}",
                    tally.payment_id, tally.amount, stripe.id, stripe.amount
                ),
                ..base(FindingKind::AmountMismatch)
            });
        } else if tally.amount_refunded != stripe.amount_refunded {
            findings.push(Finding {
                tally_amount: Some(tally.amount_refunded),
                stripe_amount: Some(stripe.amount_refunded),
                description: format!(
                    "payment {} has {} refunded in Tally, charge {} has {}",
                    tally.payment_id, tally.amount_refunded, stripe.id, stripe.amount_refunded
                ),
                ..base(FindingKind::AmountMismatch)
            });
        }
    }
    if !charge_statuses_agree(&tally.status, &stripe.status) {
        findings.push(Finding {
            description: format!(
                "payment {} is {} in Tally, charge {} is {}",
                tally.payment_id, tally.status, stripe.id, stripe.status
            ),
            ..base(FindingKind::StatusMismatch)
        });
    }
    findings
}

/// Compares one refund pair.
pub fn compare_refund(tally: &TallyRefund, stripe: &RemoteRefund) -> Vec<Finding> {
    let mut findings = Vec::new();
    let base = |kind| Finding {
        tally_id: tally.id.clone(),
        stripe_id: stripe.id.clone(),
        tally_amount: Some(tally.amount),
        stripe_amount: Some(stripe.amount),
        tally_status: tally.status.clone(),
        stripe_status: stripe.status_name.clone(),
        ..finding(kind, ObjectKind::Refund)
    };
    if tally.amount != stripe.amount {
        findings.push(Finding {
            description: format!(
                "refund {} is {} in Tally and {} in Stripe ({})",
                tally.id, tally.amount, stripe.amount, stripe.id
            ),
            ..base(FindingKind::AmountMismatch)
        });
    }
    if !refund_statuses_agree(&tally.status, stripe.status) {
        findings.push(Finding {
            description: format!(
                "refund {} is {} in Tally and {} in Stripe ({})",
                tally.id, tally.status, stripe.status_name, stripe.id
            ),
            ..base(FindingKind::StatusMismatch)
        });
    }
    findings
}

fn missing_in_tally(object: ObjectKind, stripe_id: &str, amount: Money, status: &str) -> Finding {
    Finding {
        stripe_id: stripe_id.to_owned(),
        stripe_amount: Some(amount),
        stripe_status: status.to_owned(),
        description: format!(
            "Stripe {} {stripe_id} ({amount}) is unknown to Tally",
            object.as_str()
        ),
        ..finding(FindingKind::MissingInTally, object)
    }
}

impl TallyInvoice {
    /// The finding when Stripe does not have this invoice.
    pub fn missing_in_stripe(&self) -> Finding {
        let stripe_id = self.stripe_invoice_id.as_deref().unwrap_or("");
        missing_in_stripe(
            ObjectKind::Invoice,
            &self.id,
            self.amount_due,
            &self.status,
            stripe_id,
        )
    }
}

impl TallyCharge {
    /// The finding when Stripe does not have this charge.
    pub fn missing_in_stripe(&self) -> Finding {
        let (id, amount, status) = (&self.payment_id, self.amount, &self.status);
        missing_in_stripe(
            ObjectKind::Payment,
            id,
            amount,
            status,
            &self.stripe_charge_id,
        )
    }
}

impl TallyRefund {
    /// The finding when Stripe does not have this refund.
    pub fn missing_in_stripe(&self) -> Finding {
        let (id, amount, status) = (&self.id, self.amount, &self.status);
        missing_in_stripe(
            ObjectKind::Refund,
            id,
            amount,
            status,
            &self.stripe_refund_id,
        )
    }
}

/// A Tally object Stripe does not have.
fn missing_in_stripe(
    object: ObjectKind,
    tally_id: &str,
    amount: Money,
    status: &str,
    stripe_id: &str,
) -> Finding {
    let named = if stripe_id.is_empty() {
        String::new()
    } else {
        format!(" (Tally names {stripe_id})")
    };
    Finding {
        tally_id: tally_id.to_owned(),
        tally_amount: Some(amount),
        tally_status: status.to_owned(),
        description: format!(
            "Tally {} {tally_id} ({amount}) is not in Stripe{named}",
            object.as_str()
        ),
        ..finding(FindingKind::MissingInStripe, object)
    }
}

fn add(matching: &mut Matching, findings: Vec<Finding>) {
    if findings.is_empty() {
        matching.matched += 1;
    } else {
        matching.findings.extend(findings);
    }
}

/// Matches both sides.
pub fn reconcile(tally: &TallySide, stripe: &StripeSide) -> Matching {
    let mut matching = Matching::default();
    let invoices: HashMap<&str, &TallyInvoice> = tally
        .invoices
        .iter()
        .filter_map(|invoice| invoice.stripe_invoice_id.as_deref().map(|id| (id, invoice)))
        .collect();
    let charges: HashMap<&str, &TallyCharge> = tally
        .charges
        .iter()
        .map(|charge| (charge.stripe_charge_id.as_str(), charge))
        .collect();
    let refunds: HashMap<&str, &TallyRefund> = tally
        .refunds
        .iter()
        .map(|refund| (refund.stripe_refund_id.as_str(), refund))
        .collect();

    for remote in &stripe.invoices {
        match invoices.get(remote.id.as_str()) {
            Some(local) => add(&mut matching, compare_invoice(local, remote)),
            None => matching.findings.push(missing_in_tally(
                ObjectKind::Invoice,
                &remote.id,
                remote.amount_due,
                remote.status.as_str(),
            )),
        }
    }
    for remote in &stripe.charges {
        match charges.get(remote.id.as_str()) {
            Some(local) => add(&mut matching, compare_charge(local, remote)),
            None => matching.findings.push(missing_in_tally(
                ObjectKind::Payment,
                &remote.id,
                remote.amount,
                &remote.status,
            )),
        }
    }
    for remote in &stripe.refunds {
        match refunds.get(remote.id.as_str()) {
            Some(local) => add(&mut matching, compare_refund(local, remote)),
            None => matching.findings.push(missing_in_tally(
                ObjectKind::Refund,
                &remote.id,
                remote.amount,
                &remote.status_name,
            )),
        }
    }
    for remote in &stripe.balance_transactions {
        let recorded = match (remote.kind.as_str(), remote.source.as_deref()) {
            ("charge" | "payment", Some(source)) => charges
                .get(source)
                .filter(|charge| charge.in_ledger && charge.status != "failed")
                .map(|charge| (charge.payment_id.clone(), charge.amount)),
            ("refund" | "payment_refund", Some(source)) => refunds
                .get(source)
                .filter(|refund| refund.in_ledger)
                .map(|refund| (refund.id.clone(), refund.amount.negated())),
            // Payouts, fees and adjustments are not Tally's to book.
            _ => continue,
        };
        match recorded {
            None => matching.findings.push(missing_in_tally(
                ObjectKind::BalanceTransaction,
                &remote.id,
                remote.amount,
                &remote.kind,
            )),
            Some((tally_id, amount)) if amount != remote.amount => {
                matching.findings.push(Finding {
                    tally_id: tally_id.clone(),
                    stripe_id: remote.id.clone(),
                    tally_amount: Some(amount),
                    stripe_amount: Some(remote.amount),
                    tally_status: "posted".into(),
                    stripe_status: remote.kind.clone(),
                    description: format!(
                        "ledger records {amount} for {tally_id}, balance transaction {} is {}",
                        remote.id, remote.amount
                    ),
                    ..finding(FindingKind::AmountMismatch, ObjectKind::BalanceTransaction)
                });
            }
            Some(_) => matching.matched += 1,
        }
    }

    let listed_invoices: Vec<&str> = stripe
        .invoices
        .iter()
        .map(|invoice| invoice.id.as_str())
        .collect();
    let listed_charges: Vec<&str> = stripe
        .charges
        .iter()
        .map(|charge| charge.id.as_str())
        .collect();
    let listed_refunds: Vec<&str> = stripe
        .refunds
        .iter()
        .map(|refund| refund.id.as_str())
        .collect();
    matching.unseen = Unseen {
        invoices: tally
            .invoices
            .iter()
            .filter(|invoice| {
                invoice
                    .stripe_invoice_id
                    .as_deref()
                    .is_none_or(|id| !listed_invoices.contains(&id))
            })
            .cloned()
            .collect(),
        charges: tally
            .charges
            .iter()
            .filter(|charge| !listed_charges.contains(&charge.stripe_charge_id.as_str()))
            .cloned()
            .collect(),
        refunds: tally
            .refunds
            .iter()
            .filter(|refund| !listed_refunds.contains(&refund.stripe_refund_id.as_str()))
            .cloned()
            .collect(),
    };
    matching
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use rust_decimal_macros::dec;
    use tally_domain::money::Currency;

    fn usd(amount: rust_decimal::Decimal) -> Money {
        Money::new(amount, Currency::USD)
    }

    fn remote_invoice(id: &str, due: Money, status: RemoteInvoiceStatus) -> RemoteInvoice {
        RemoteInvoice {
            id: id.into(),
            status,
            amount_due: due,
            amount_paid: due,
            payment_intent: None,
            charge: None,
            attempt_count: 1,
            tally_invoice_id: None,
            created: Utc.timestamp_opt(0, 0).unwrap(),
        }
    }

    fn local_invoice(id: &str, stripe: &str, due: Money, status: &str) -> TallyInvoice {
        TallyInvoice {
            id: id.into(),
            stripe_invoice_id: Some(stripe.into()),
            amount_due: due,
            status: status.into(),
        }
    }

    #[test]
    fn agreeing_sides_have_no_findings() {
        let tally = TallySide {
            invoices: vec![local_invoice("inv_1", "in_1", usd(dec!(10.00)), "paid")],
            ..TallySide::default()
        };
        let stripe = StripeSide {
            invoices: vec![remote_invoice(
                "in_1",
                usd(dec!(10)),
                RemoteInvoiceStatus::Paid,
            )],
            ..StripeSide::default()
        };
        let matching = reconcile(&tally, &stripe);
        assert_eq!(matching.matched, 1);
        assert!(matching.findings.is_empty());
        assert!(matching.unseen.invoices.is_empty());
    }

    #[test]
    fn each_kind_of_disagreement_is_named() {
        let tally = TallySide {
            invoices: vec![
                local_invoice("inv_1", "in_1", usd(dec!(10.00)), "open"),
                local_invoice("inv_2", "in_2", usd(dec!(5.00)), "open"),
            ],
            ..TallySide::default()
        };
        let stripe = StripeSide {
            invoices: vec![
                remote_invoice("in_1", usd(dec!(10.01)), RemoteInvoiceStatus::Paid),
                remote_invoice("in_9", usd(dec!(1.00)), RemoteInvoiceStatus::Open),
            ],
            ..StripeSide::default()
        };
        let matching = reconcile(&tally, &stripe);
        let kinds: Vec<(FindingKind, &str, &str)> = matching
            .findings
            .iter()
            .map(|finding| {
                (
                    finding.kind,
                    finding.tally_id.as_str(),
                    finding.stripe_id.as_str(),
                )
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                (FindingKind::AmountMismatch, "inv_1", "in_1"),
                (FindingKind::StatusMismatch, "inv_1", "in_1"),
                (FindingKind::MissingInTally, "", "in_9"),
            ]
        );
        assert_eq!(
            matching.unseen.invoices.len(),
            1,
            "inv_2 is checked against Stripe directly"
        );
        assert_eq!(matching.matched, 0);
    }
}
