//! Tests of the posting rules: each rule's entries, and a month of facts that ties out.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

use super::facts::{
    CreditFunding, CreditNoteAmounts, CreditNoteIssued, CreditNoteLine, CreditNoteSettlement,
    CreditSource, CreditsBurned, CreditsGranted, Fact, FinalizedLine, FinalizedLineKind,
    InvoiceFinalized, InvoiceVoided, PaymentSucceeded, RefundSucceeded, UsageRated,
};
use super::posting::{
    invoice_line_transaction_id, post_credit_note, post_credits_burned, post_credits_granted,
    post_fact, post_invoice_finalized, post_invoice_voided, post_payment, post_refund,
    post_usage_rated, post_usage_true_up,
};
use super::recognition::{line_schedule, recognition_transactions};
use super::*;
use crate::ids::{CreditGrantId, CreditNoteId, CustomerId, MeterCode};
use crate::ledger::{Ledger, Posted, Side, Transaction};
use crate::period::Period;

fn at(month: u32, day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, month, day, 0, 0, 0).unwrap()
}

fn usd(amount: Decimal) -> Money {
    Money::new(amount, Currency::USD)
}

fn external(text: &str) -> ExternalId {
    ExternalId::parse(text).unwrap()
}

fn tokens() -> MeterCode {
    MeterCode::parse("tokens").unwrap()
}

fn customer() -> CustomerId {
    CustomerId::parse("cus_1").unwrap()
}

fn line(id: &str, kind: FinalizedLineKind, amount: Decimal) -> FinalizedLine {
    FinalizedLine {
        line_id: external(id),
        kind,
        amount: usd(amount),
    }
}

fn invoice(id: &str, finalized_at: DateTime<Utc>, lines: Vec<FinalizedLine>) -> InvoiceFinalized {
    InvoiceFinalized {
        invoice: InvoiceId::parse(id).unwrap(),
        customer: customer(),
        currency: Currency::USD,
        finalized_at,
        lines,
    }
}

fn january_fee_period() -> Period {
    Period::new(at(1, 15), at(2, 15)).unwrap()
}

/// `(account code, side, amount)` of every entry, for comparing with a table.
fn entries(transactions: &[Transaction]) -> Vec<(String, Side, Decimal)> {
    transactions
        .iter()
        .flat_map(|transaction| transaction.entries())
        .map(|entry| {
            let code = entry
                .account
                .as_str()
                .trim_start_matches("acct_usd")
                .to_owned();
            (code, entry.side, entry.amount.amount())
        })
        .collect()
}

fn debit(code: &str, amount: Decimal) -> (String, Side, Decimal) {
    (code.to_owned(), Side::Debit, amount)
}

fn credit(code: &str, amount: Decimal) -> (String, Side, Decimal) {
    (code.to_owned(), Side::Credit, amount)
}

fn ledger() -> Ledger {
    let mut ledger = Ledger::new();
    open_fixed_accounts(&mut ledger, Currency::USD).unwrap();
    open_usage_account(&mut ledger, &tokens(), Currency::USD).unwrap();
    ledger
}

fn post_all(ledger: &mut Ledger, transactions: &[Transaction]) {
    for transaction in transactions {
        assert_eq!(ledger.post(transaction.clone()).unwrap(), Posted::Recorded);
    }
}

fn balance(ledger: &Ledger, account: &LedgerAccount) -> Decimal {
    ledger
        .balance(&account.id(Currency::USD).unwrap())
        .unwrap()
        .amount()
}

fn opening_invoice() -> InvoiceFinalized {
    invoice(
        "inv_1",
        at(1, 15),
        vec![
            line(
                "il_fee",
                FinalizedLineKind::RecurringFee {
                    service_period: january_fee_period(),
                },
                dec!(31.00),
            ),
            line("il_disc", FinalizedLineKind::Discount, dec!(-5.00)),
            line(
                "il_cred",
                FinalizedLineKind::CreditsApplied {
                    source: CreditSource::Prepaid,
                },
                dec!(-6.00),
            ),
            line("il_setup", FinalizedLineKind::OneOff, dec!(10.00)),
            line("il_zero", FinalizedLineKind::OneOff, dec!(0.00)),
        ],
    )
}

#[test]
fn invoice_lines_post_against_receivables_one_transaction_each() {
    let posted = post_invoice_finalized(&opening_invoice()).unwrap();
    assert_eq!(posted.len(), 4, "the zero line posts nothing");
    assert_eq!(
        entries(&posted),
        [
            debit("1100", dec!(31.00)),
            credit("2100", dec!(31.00)),
            debit("4910", dec!(5.00)),
            credit("1100", dec!(5.00)),
            debit("2200", dec!(6.00)),
            credit("1100", dec!(6.00)),
            debit("1100", dec!(10.00)),
            credit("4100", dec!(10.00)),
        ]
    );
    assert_eq!(
        posted[0].description(),
        "invoice_finalized invoice=inv_1 line=il_fee kind=recurring_fee customer=cus_1"
    );
    assert_eq!(posted[0].effective_at(), at(1, 15));
    assert_eq!(
        posted[0].id(),
        &invoice_line_transaction_id(&opening_invoice(), &external("il_fee")).unwrap()
    );
}

#[test]
fn a_replayed_fact_gives_byte_identical_transactions() {
    let first = post_invoice_finalized(&opening_invoice()).unwrap();
    let replay = post_invoice_finalized(&opening_invoice()).unwrap();
    assert_eq!(
        serde_json::to_string(&first).unwrap(),
        serde_json::to_string(&replay).unwrap()
    );
    let mut ledger = ledger();
    post_all(&mut ledger, &first);
    for transaction in replay {
        assert_eq!(ledger.post(transaction).unwrap(), Posted::AlreadyRecorded);
    }
    assert_eq!(
        balance(&ledger, &LedgerAccount::AccountsReceivable),
        dec!(30.00)
    );
}

#[test]
fn a_negative_invoice_is_owed_to_the_customer_as_credit_balance() {
    let proration_period = Period::new(at(1, 20), at(2, 1)).unwrap();
    let negative = invoice(
        "inv_2",
        at(1, 20),
        vec![
            line(
                "il_unused",
                FinalizedLineKind::ProrationCredit {
                    service_period: proration_period,
                },
                dec!(-20.00),
            ),
            line(
                "il_rest",
                FinalizedLineKind::ProrationCharge {
                    service_period: proration_period,
                },
                dec!(5.00),
            ),
        ],
    );
    let posted = post_invoice_finalized(&negative).unwrap();
    assert_eq!(
        entries(&posted),
        [
            debit("2100", dec!(20.00)),
            credit("2300", dec!(20.00)),
            debit("2300", dec!(5.00)),
            credit("2100", dec!(5.00)),
        ]
    );
    let mut ledger = ledger();
    post_all(&mut ledger, &posted);
    assert_eq!(
        balance(&ledger, &LedgerAccount::CustomerCreditBalance),
        dec!(15.00)
    );
    assert_eq!(
        balance(&ledger, &LedgerAccount::AccountsReceivable),
        dec!(0)
    );
    // The credit's schedule un-recognises its days: Dr revenue, Cr deferred revenue.
    let credit_line = &negative.lines[0];
    let schedule = line_schedule(credit_line, RecognitionPolicy::ByDay)
        .unwrap()
        .unwrap();
    assert_eq!(schedule.days().len(), 12);
    assert_eq!(schedule.days()[0].amount, usd(dec!(-1.67)));
    let first_day = recognition_transactions(&negative, credit_line, &schedule.days()[0]).unwrap();
    assert_eq!(
        entries(&first_day),
        [debit("4000", dec!(1.67)), credit("2100", dec!(1.67))]
    );
}

/// Invoice `inv_3`: 6.50 of tokens used in January.
fn january_usage_invoice() -> InvoiceFinalized {
    invoice(
        "inv_3",
        at(2, 1),
        vec![line(
            "il_use",
            FinalizedLineKind::Usage {
                meter: tokens(),
                service_period: Period::new(at(1, 1), at(2, 1)).unwrap(),
            },
            dec!(6.50),
        )],
    )
}

#[test]
fn usage_true_up_moves_the_difference_to_usage_revenue() {
    let usage_invoice = january_usage_invoice();
    let use_line = external("il_use");
    let under = post_usage_true_up(&usage_invoice, &use_line, usd(dec!(6.40))).unwrap();
    assert_eq!(
        entries(&under),
        [debit("1150", dec!(0.10)), credit("4200tokens", dec!(0.10))]
    );
    let over = post_usage_true_up(&usage_invoice, &use_line, usd(dec!(7.00))).unwrap();
    assert_eq!(
        entries(&over),
        [debit("4200tokens", dec!(0.50)), credit("1150", dec!(0.50))]
    );
    assert_eq!(under[0].id(), over[0].id(), "one true-up per line");
    assert_eq!(
        under[0].description(),
        "usage_true_up invoice=inv_3 line=il_use customer=cus_1 meter=tokens invoiced=6.50 recognised_daily=6.40"
    );
    assert!(
        post_usage_true_up(&usage_invoice, &use_line, usd(dec!(6.50)))
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        post_usage_true_up(&opening_invoice(), &external("il_fee"), usd(dec!(1))),
        Err(FinanceError::NotAUsageLine {
            invoice: InvoiceId::parse("inv_1").unwrap(),
            line: external("il_fee")
        })
    );
}

fn credit_note(settlement: CreditNoteSettlement, amounts: CreditNoteAmounts) -> CreditNoteIssued {
    CreditNoteIssued {
        credit_note: CreditNoteId::parse("cn_1").unwrap(),
        invoice: InvoiceId::parse("inv_1").unwrap(),
        customer: customer(),
        currency: Currency::USD,
        issued_at: at(1, 25),
        amounts,
        settlement,
    }
}

#[test]
fn credit_notes_credit_the_account_their_settlement_names() {
    let total = CreditNoteAmounts::Total {
        amount: usd(dec!(4.00)),
    };
    for (settlement, account) in [
        (CreditNoteSettlement::ReducesAmountDue, "1100"),
        (CreditNoteSettlement::CustomerCreditBalance, "2300"),
        (CreditNoteSettlement::Refunded, "2400"),
    ] {
        let posted = post_credit_note(&credit_note(settlement, total.clone())).unwrap();
        assert_eq!(
            entries(&posted),
            [debit("4900", dec!(4.00)), credit(account, dec!(4.00))]
        );
    }
    let per_line = CreditNoteAmounts::PerLine {
        lines: vec![
            CreditNoteLine {
                line_id: external("il_setup"),
                amount: usd(dec!(3.00)),
            },
            CreditNoteLine {
                line_id: external("il_fee"),
                amount: usd(dec!(1.50)),
            },
        ],
    };
    let posted = post_credit_note(&credit_note(
        CreditNoteSettlement::ReducesAmountDue,
        per_line,
    ))
    .unwrap();
    assert_eq!(posted.len(), 2);
    assert_eq!(
        posted[1].description(),
        "credit_note_issued credit_note=cn_1 invoice=inv_1 line=il_fee customer=cus_1"
    );
    assert_ne!(posted[0].id(), posted[1].id());
}

fn grant(funding: CreditFunding) -> CreditsGranted {
    CreditsGranted {
        grant: CreditGrantId::parse("grant_1").unwrap(),
        customer: customer(),
        amount: usd(dec!(20.00)),
        granted_at: at(1, 2),
        funding,
    }
}

fn burn(funding: CreditFunding, invoice: Option<&str>) -> CreditsBurned {
    CreditsBurned {
        burn_id: external("burn_1"),
        grant: CreditGrantId::parse("grant_1").unwrap(),
        customer: customer(),
        amount: usd(dec!(2.00)),
        burned_at: at(1, 20),
        funding,
        invoice: invoice.map(|id| InvoiceId::parse(id).unwrap()),
    }
}

#[test]
fn credits_are_a_liability_when_paid_and_contra_revenue_when_free() {
    assert_eq!(
        entries(&post_credits_granted(&grant(CreditFunding::Paid)).unwrap()),
        [debit("1100", dec!(20.00)), credit("2200", dec!(20.00))]
    );
    assert!(
        post_credits_granted(&grant(CreditFunding::Promotional))
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        entries(&post_credits_burned(&burn(CreditFunding::Paid, None)).unwrap()),
        [debit("2200", dec!(2.00)), credit("1150", dec!(2.00))]
    );
    assert_eq!(
        entries(&post_credits_burned(&burn(CreditFunding::Promotional, None)).unwrap()),
        [debit("4920", dec!(2.00)), credit("1150", dec!(2.00))]
    );
    assert!(
        post_credits_burned(&burn(CreditFunding::Paid, Some("inv_1")))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn bad_facts_are_refused_with_their_source() {
    let positive_discount = invoice(
        "inv_9",
        at(1, 1),
        vec![line("il_1", FinalizedLineKind::Discount, dec!(1.00))],
    );
    assert_eq!(
        post_invoice_finalized(&positive_discount),
        Err(FinanceError::WrongSign {
            context: "invoice_finalized invoice=inv_9 line=il_1 kind=discount customer=cus_1"
                .into(),
            amount: usd(dec!(1.00)),
        })
    );
    let unrounded = invoice(
        "inv_9",
        at(1, 1),
        vec![line("il_1", FinalizedLineKind::OneOff, dec!(1.005))],
    );
    assert!(matches!(
        post_invoice_finalized(&unrounded),
        Err(FinanceError::NotRounded { .. })
    ));
    let mut euros = invoice(
        "inv_9",
        at(1, 1),
        vec![line("il_1", FinalizedLineKind::OneOff, dec!(1))],
    );
    euros.currency = Currency::EUR;
    assert!(matches!(
        post_invoice_finalized(&euros),
        Err(FinanceError::CurrencyMismatch {
            expected: Currency::EUR,
            found: Currency::USD,
            ..
        })
    ));
    let twice = invoice(
        "inv_9",
        at(1, 1),
        vec![
            line("il_1", FinalizedLineKind::OneOff, dec!(1)),
            line("il_1", FinalizedLineKind::OneOff, dec!(2)),
        ],
    );
    assert!(matches!(
        post_invoice_finalized(&twice),
        Err(FinanceError::DuplicateLine { .. })
    ));
    let mut negative_refund = refund(dec!(4.00));
    negative_refund.amount = usd(dec!(-4.00));
    assert!(matches!(
        post_refund(&negative_refund),
        Err(FinanceError::WrongSign { .. })
    ));
}

fn payment(amount: Decimal) -> PaymentSucceeded {
    PaymentSucceeded {
        payment_id: external("pay_1"),
        invoice: InvoiceId::parse("inv_1").unwrap(),
        customer: customer(),
        amount: usd(amount),
        paid_at: at(1, 16),
    }
}

fn refund(amount: Decimal) -> RefundSucceeded {
    RefundSucceeded {
        refund_id: external("ref_4"),
        payment_id: external("pay_1"),
        invoice: InvoiceId::parse("inv_1").unwrap(),
        customer: customer(),
        amount: usd(amount),
        refunded_at: at(1, 26),
    }
}

fn usage(day: u32, sequence: u32, amount: Decimal) -> UsageRated {
    UsageRated {
        customer: customer(),
        meter: tokens(),
        day: NaiveDate::from_ymd_opt(2025, 1, day).unwrap(),
        sequence,
        amount: usd(amount),
    }
}

#[test]
fn usage_is_recognised_daily_and_corrections_post_their_change() {
    let first = post_usage_rated(&usage(2, 0, dec!(2.20))).unwrap();
    assert_eq!(
        entries(&first),
        [debit("1150", dec!(2.20)), credit("4200tokens", dec!(2.20))]
    );
    assert_eq!(first[0].effective_at(), at(1, 2));
    assert_eq!(
        first[0].description(),
        "usage_rated customer=cus_1 meter=tokens day=2025-01-02 sequence=0"
    );
    let correction = post_usage_rated(&usage(2, 1, dec!(-0.20))).unwrap();
    assert_eq!(
        entries(&correction),
        [debit("4200tokens", dec!(0.20)), credit("1150", dec!(0.20))]
    );
    assert_ne!(first[0].id(), correction[0].id());
}

/// A month for one customer, through every rule, against the ledger: each account ends
/// where the facts say, and the books tie out.
#[test]
fn a_month_of_facts_ties_out_to_the_cent() {
    let mut ledger = ledger();
    let opening = opening_invoice();
    let mut facts = vec![
        Fact::CreditsGranted(grant(CreditFunding::Paid)),
        Fact::InvoiceFinalized(opening.clone()),
        Fact::PaymentSucceeded(payment(dec!(30.00))),
        Fact::UsageRated(usage(1, 0, dec!(1.10))),
        Fact::UsageRated(usage(2, 0, dec!(2.20))),
        Fact::UsageRated(usage(3, 0, dec!(3.30))),
        Fact::UsageRated(usage(2, 1, dec!(-0.20))),
        Fact::CreditNoteIssued(credit_note(
            CreditNoteSettlement::Refunded,
            CreditNoteAmounts::PerLine {
                lines: vec![CreditNoteLine {
                    line_id: external("il_setup"),
                    amount: usd(dec!(4.00)),
                }],
            },
        )),
        Fact::RefundSucceeded(refund(dec!(4.00))),
    ];
    let usage_invoice = january_usage_invoice();
    facts.push(Fact::InvoiceFinalized(usage_invoice.clone()));
    for fact in &facts {
        for meter in fact.usage_meters() {
            open_usage_account(&mut ledger, meter, Currency::USD).unwrap();
        }
        post_all(&mut ledger, &post_fact(fact).unwrap());
    }
    // Facts are stored and replayed as JSON: the same facts come back.
    let stored = serde_json::to_string(&facts).unwrap();
    assert_eq!(serde_json::from_str::<Vec<Fact>>(&stored).unwrap(), facts);
    assert_eq!(facts.last().unwrap().usage_meters(), [&tokens()]);
    assert!(facts[0].usage_meters().is_empty());
    post_all(
        &mut ledger,
        &post_usage_true_up(&usage_invoice, &external("il_use"), usd(dec!(6.40))).unwrap(),
    );
    let fee_line = &opening.lines[0];
    let schedule = line_schedule(fee_line, RecognitionPolicy::ByDay)
        .unwrap()
        .unwrap();
    let january = NaiveDate::from_ymd_opt(2025, 1, 31).unwrap();
    for day in schedule.days().iter().filter(|day| day.day <= january) {
        post_all(
            &mut ledger,
            &recognition_transactions(&opening, fee_line, day).unwrap(),
        );
    }

    let expected = [
        (LedgerAccount::Cash, dec!(26.00)), // 30 collected − 4 refunded
        (LedgerAccount::AccountsReceivable, dec!(26.50)), // 20 grant + 30 − 30 paid + 6.50 usage
        (LedgerAccount::UnbilledReceivables, dec!(0.00)), // 6.40 recognised − 6.50 invoiced + 0.10
        (LedgerAccount::DeferredRevenue, dec!(14.00)), // 31 − 17 recognised in January
        (LedgerAccount::PrepaidCredits, dec!(14.00)), // 20 sold − 6 applied
        (LedgerAccount::CustomerCreditBalance, dec!(0)),
        (LedgerAccount::Refunds, dec!(0.00)), // 4 owed by the note − 4 paid out
        (
            LedgerAccount::Revenue(RevenueLine::RecurringFees),
            dec!(17.00),
        ),
        (LedgerAccount::Revenue(RevenueLine::OneOff), dec!(10.00)),
        (LedgerAccount::usage_revenue(&tokens()), dec!(6.50)),
        (
            LedgerAccount::ContraRevenue(ContraKind::CreditNotes),
            dec!(-4.00),
        ),
        (
            LedgerAccount::ContraRevenue(ContraKind::Discounts),
            dec!(-5.00),
        ),
        (
            LedgerAccount::ContraRevenue(ContraKind::PromotionalCredits),
            dec!(0),
        ),
    ];
    let mut debit_normal = Decimal::ZERO;
    let mut credit_normal = Decimal::ZERO;
    for (account, amount) in &expected {
        assert_eq!(balance(&ledger, account), *amount, "{}", account.name());
        match account.kind().normal_side() {
            Side::Debit => debit_normal += amount,
            Side::Credit => credit_normal += amount,
        }
    }
    // The trial balance: 52.50 of assets against 52.50 of liabilities and net revenue.
    assert_eq!(debit_normal, dec!(52.50));
    assert_eq!(credit_normal, dec!(52.50));
    // Billed for service (fee 31.00 + setup 10.00 + usage 6.50 = 47.50) = recognised
    // (recurring, one-off, usage) + still deferred.
    let recognised_and_deferred = [
        LedgerAccount::Revenue(RevenueLine::RecurringFees),
        LedgerAccount::Revenue(RevenueLine::OneOff),
        LedgerAccount::usage_revenue(&tokens()),
        LedgerAccount::DeferredRevenue,
    ]
    .iter()
    .map(|account| balance(&ledger, account))
    .sum::<Decimal>();
    assert_eq!(recognised_and_deferred, dec!(47.50));
}

#[test]
fn voiding_reverses_everything_posted_for_the_invoice() {
    let mut ledger = ledger();
    let opening = opening_invoice();
    let posted = post_invoice_finalized(&opening).unwrap();
    post_all(&mut ledger, &posted);
    let voided = InvoiceVoided {
        invoice: opening.invoice.clone(),
        customer: customer(),
        voided_at: at(1, 18),
    };
    let reversals = post_invoice_voided(&voided, &posted).unwrap();
    assert_eq!(reversals.len(), 4);
    assert_eq!(reversals[0].reverses(), Some(posted[0].id()));
    assert_eq!(reversals[0].effective_at(), at(1, 18));
    post_all(&mut ledger, &reversals);
    for account in LedgerAccount::fixed() {
        assert_eq!(balance(&ledger, &account), dec!(0), "{}", account.name());
    }
    // A redelivered void gives the same reversals; reversals are never reversed again.
    let again = post_invoice_voided(&voided, ledger.transactions()).unwrap();
    assert_eq!(again, reversals);
}

#[test]
fn facts_that_post_nothing_give_an_empty_list() {
    assert!(post_payment(&payment(dec!(0))).unwrap().is_empty());
    assert!(post_usage_rated(&usage(1, 0, dec!(0))).unwrap().is_empty());
    let all_zero = invoice(
        "inv_0",
        at(1, 1),
        vec![line("il_1", FinalizedLineKind::OneOff, dec!(0))],
    );
    assert!(post_invoice_finalized(&all_zero).unwrap().is_empty());
    assert_eq!(
        entries(&post_payment(&payment(dec!(30.00))).unwrap()),
        [debit("1000", dec!(30.00)), credit("1100", dec!(30.00))]
    );
    assert_eq!(
        entries(&post_refund(&refund(dec!(4.00))).unwrap()),
        [debit("2400", dec!(4.00)), credit("1000", dec!(4.00))]
    );
}
