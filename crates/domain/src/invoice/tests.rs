use chrono::{Duration, TimeZone};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

use super::*;
use crate::credit::{CreditGrant, apply_credits};
use crate::ids::CreditGrantId;

fn usd(amount: Decimal) -> Money {
    Money::new(amount, Currency::USD)
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 2, 1, 0, 0, 0).unwrap()
}

fn draft() -> Invoice {
    Invoice::draft(
        InvoiceId::parse("inv_1").unwrap(),
        CustomerId::parse("cus_1").unwrap(),
        Currency::USD,
        RoundingMode::HalfUp,
    )
}

fn line(kind: LineKind, amount: Decimal) -> InvoiceLine {
    InvoiceLine::new(kind, format!("{kind:?}"), usd(amount), RoundingMode::HalfUp).unwrap()
}

#[test]
fn lines_round_once_and_totals_add_the_rounded_amounts() {
    let mut invoice = draft();
    invoice
        .add_line(line(LineKind::Usage, dec!(0.005)))
        .unwrap();
    invoice
        .add_line(line(LineKind::Usage, dec!(0.005)))
        .unwrap();
    invoice
        .add_line(line(LineKind::MinimumTrueUp, dec!(9.99)))
        .unwrap();
    invoice
        .add_line(line(LineKind::Adjustment, dec!(-1.001)))
        .unwrap();
    // 0.01 + 0.01 + 9.99 − 1.00
    assert_eq!(invoice.subtotal().unwrap(), usd(dec!(9.01)));
    assert_eq!(invoice.lines()[0].precise_amount(), usd(dec!(0.005)));
    let euros = InvoiceLine::new(
        LineKind::Usage,
        "eur",
        Money::new(dec!(1), Currency::EUR),
        RoundingMode::HalfUp,
    )
    .unwrap();
    assert!(matches!(
        invoice.add_line(euros),
        Err(InvoiceError::Money(MoneyError::CurrencyMismatch { .. }))
    ));
    assert!(matches!(
        InvoiceLine::new(
            LineKind::ProrationCredit,
            "x",
            usd(dec!(1)),
            RoundingMode::HalfUp
        ),
        Err(InvoiceError::LineSign { .. })
    ));
}

#[test]
fn credits_are_applied_without_going_negative() {
    let mut invoice = draft();
    invoice
        .add_line(line(LineKind::Recurring, dec!(30)))
        .unwrap();
    let grant = |id: &str, amount| {
        CreditGrant::new(
            CreditGrantId::parse(id).unwrap(),
            CustomerId::parse("cus_1").unwrap(),
            usd(amount),
            0,
            now() - Duration::days(1),
            None,
        )
        .unwrap()
    };
    let mut grants = vec![grant("grant_a", dec!(20)), grant("grant_b", dec!(50))];
    let application = apply_credits(&mut grants, invoice.total().unwrap(), now()).unwrap();
    invoice.apply_credits(&application).unwrap();
    assert_eq!(invoice.credits().unwrap(), usd(dec!(-30)));
    assert!(invoice.total().unwrap().is_zero());
    assert_eq!(grants[1].remaining(), usd(dec!(40)));
    // Applying the same application again would go negative.
    assert!(matches!(
        invoice.apply_credits(&application),
        Err(InvoiceError::CreditsExceedDue { .. })
    ));
}

#[test]
fn status_machine_and_immutability() {
    use InvoiceStatus::{Draft, Finalized, Paid, Uncollectible, Void};
    let all = [Draft, Finalized, Paid, Void, Uncollectible];
    let allowed = [
        (Draft, Finalized),
        (Finalized, Paid),
        (Finalized, Void),
        (Finalized, Uncollectible),
        (Uncollectible, Paid),
        (Uncollectible, Void),
    ];
    crate::test_support::assert_transition_table(&all, &allowed, |from, to| {
        from.can_transition_to(to)
    });
    let mut invoice = draft();
    invoice
        .add_line(line(LineKind::Recurring, dec!(10)))
        .unwrap();
    assert_eq!(
        invoice.mark_paid(),
        Err(InvoiceError::InvalidTransition {
            from: Draft,
            to: Paid
        })
    );
    invoice.finalize().unwrap();
    assert_eq!(
        invoice.add_line(line(LineKind::Usage, dec!(1))),
        Err(InvoiceError::NotDraft { status: Finalized })
    );
    invoice.mark_uncollectible().unwrap();
    invoice.mark_paid().unwrap();
    assert!(invoice.void().is_err());

    let mut negative = draft();
    negative
        .add_line(line(LineKind::ProrationCredit, dec!(-5)))
        .unwrap();
    assert!(matches!(
        negative.finalize(),
        Err(InvoiceError::NegativeTotal { .. })
    ));
}

#[test]
fn credit_notes_never_exceed_the_total() {
    let mut invoice = draft();
    invoice
        .add_line(line(LineKind::Usage, dec!(12.34)))
        .unwrap();
    let note = |id: &str| CreditNoteId::parse(id).unwrap();
    assert_eq!(
        invoice.issue_credit_note(note("cn_0"), usd(dec!(1)), "draft", now()),
        Err(InvoiceError::NotCreditable {
            status: InvoiceStatus::Draft
        })
    );
    invoice.finalize().unwrap();
    assert!(
        invoice
            .issue_credit_note(note("cn_1"), usd(dec!(0)), "zero", now())
            .is_err()
    );
    assert!(
        invoice
            .issue_credit_note(note("cn_1"), usd(dec!(0.001)), "fraction", now())
            .is_err()
    );
    invoice
        .issue_credit_note(note("cn_1"), usd(dec!(12.00)), "refund", now())
        .unwrap();
    invoice
        .issue_credit_note(note("cn_2"), usd(dec!(0.34)), "rest", now())
        .unwrap();
    assert!(matches!(
        invoice.issue_credit_note(note("cn_3"), usd(dec!(0.01)), "too much", now()),
        Err(InvoiceError::CreditNoteExceedsRemaining { .. })
    ));
    assert_eq!(invoice.credited().unwrap(), usd(dec!(12.34)));
}
