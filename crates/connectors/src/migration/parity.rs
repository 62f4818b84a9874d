//! Parity: Tally's shadow invoice against the external biller's invoice for
//! the same period. Pure. The totals are compared separately — subtotal,
//! discounts, minimums, total and amount due — because an external `total`
//! may spread a minimum over prices; lines are compared one by one where an
//! external price is mapped to a Tally charge. A finding carries both
//! amounts and their difference (Tally − external), so a mismatch says by
//! how much.

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use super::model::{Finding, TallyInvoice};
use crate::biller::ExternalInvoice;

/// What a comparison found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    /// Every amount compared, in order.
    pub findings: Vec<Finding>,
    /// External lines whose price no Tally charge is mapped to.
    pub lines_not_compared: u32,
    /// Every finding matches (and both invoices exist).
    pub matched: bool,
}

/// Compares `tally` with the biller's invoices of the period. `prices` maps
/// an external price id to the Tally charge key it bills. Void external
/// invoices are ignored; more than one left is a finding of its own.
pub fn compare(
    tally: Option<&TallyInvoice>,
    external: &[ExternalInvoice],
    prices: &BTreeMap<String, String>,
) -> Comparison {
    let live: Vec<&ExternalInvoice> = external
        .iter()
        .filter(|invoice| invoice.status != "void")
        .collect();
    let (tally, theirs) = match (tally, live.as_slice()) {
        (Some(tally), [theirs]) => (tally, *theirs),
        (tally, live) => return missing(tally, live),
    };
    let mut findings = vec![
        Finding::amounts("subtotal", tally.subtotal, theirs.subtotal),
        Finding::amounts("discounts", tally.discounts, theirs.discounts),
        Finding::amounts("minimums", tally.minimums, theirs.minimums),
        Finding::amounts("total", tally.total, theirs.total),
        Finding::amounts("amount_due", tally.amount_due, theirs.amount_due),
    ];
    if tally.currency != theirs.currency {
        findings.push(Finding {
            subject: "currency".to_owned(),
            tally_amount: None,
            external_amount: None,
            difference: None,
            matches: false,
            note: format!(
                "Tally bills in {}, the biller in {}",
                tally.currency, theirs.currency
            ),
        });
    }
    let mut tally_lines: BTreeMap<&str, Decimal> = BTreeMap::new();
    for line in tally
        .lines
        .iter()
        .filter(|line| !line.charge_key.is_empty())
    {
        *tally_lines.entry(line.charge_key.as_str()).or_default() += line.amount;
    }
    let mut their_lines: BTreeMap<&str, Decimal> = BTreeMap::new();
    let mut lines_not_compared = 0_u32;
    for line in &theirs.lines {
        match prices.get(&line.price_id) {
            // The line's subtotal: before adjustments, which the totals compare.
            Some(charge) => *their_lines.entry(charge.as_str()).or_default() += line.subtotal,
            None => lines_not_compared += 1,
        }
    }
    for (charge, external_amount) in &their_lines {
        let tally_amount = tally_lines.get(charge).copied().unwrap_or_default();
        let mut finding =
            Finding::amounts(format!("line:{charge}"), tally_amount, *external_amount);
        if !tally_lines.contains_key(charge) {
            finding.note = "Tally has no line of this charge".to_owned();
        }
        findings.push(finding);
    }
    let matched = findings.iter().all(|finding| finding.matches);
    Comparison {
        findings,
        lines_not_compared,
        matched,
    }
}

/// One side has no invoice for the period, or the biller has several.
fn missing(tally: Option<&TallyInvoice>, live: &[&ExternalInvoice]) -> Comparison {
    let note = match (tally.is_some(), live.len()) {
        (false, 0) => "neither Tally nor the biller has an invoice for the period".to_owned(),
        (false, _) => "Tally has no shadow invoice for the period".to_owned(),
        (true, 0) => "the biller has no invoice for the period".to_owned(),
        (true, count) => format!(
            "the biller has {count} invoices for the period ({}): compare them by hand",
            live.iter()
                .map(|invoice| invoice.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let external_amount = match live {
        [one] => Some(one.amount_due),
        _ => None,
    };
    Comparison {
        findings: vec![Finding {
            subject: "invoice".to_owned(),
            tally_amount: tally.map(|invoice| invoice.amount_due),
            external_amount,
            difference: None,
            matches: false,
            note,
        }],
        lines_not_compared: 0,
        matched: false,
    }
}
