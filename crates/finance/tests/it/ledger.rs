//! A quarter of one customer's billing through finance, to the cent:
//! Stripe's recognition example (a monthly 31.00 subscription from 15
//! January: 17.00 recognised in January, 14.00 deferred), usage, a credit
//! note, a refund after the books closed, a voided invoice, and every
//! event delivered twice and replayed under new message ids.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tally_proto::events::{InvoiceEvent, PaymentEvent};
use tally_proto::finance::ledger_service_server::LedgerService;
use tally_proto::finance::{GetRevenueScheduleRequest, ListJournalTransactionsRequest};
use tally_proto::invoicing::InvoiceLineKind::Recurring;

use crate::support::{
    Books, credit_note, finalized, invoice, line, paid, refunded, usage_line, voided,
};

fn expect(pairs: &[(&str, Decimal)]) -> BTreeMap<String, Decimal> {
    pairs
        .iter()
        .map(|(code, amount)| ((*code).to_owned(), *amount))
        .collect()
}

/// Every message applied, then applied again (a redelivery: the inbox
/// skips it).
async fn deliver_invoice(books: &Books, event: &InvoiceEvent) {
    assert!(books.invoices.apply(&event.event_id, event).await.unwrap());
    assert!(!books.invoices.apply(&event.event_id, event).await.unwrap());
}

async fn deliver_payment(books: &Books, event: &PaymentEvent) {
    assert!(books.payments.apply(&event.event_id, event).await.unwrap());
    assert!(!books.payments.apply(&event.event_id, event).await.unwrap());
}

#[tokio::test]
async fn a_quarter_of_billing_is_booked_once_and_balances_to_the_cent() {
    let books = Books::open("2026-01-15T00:00:00Z").await;
    let january = invoice(
        "inv_jan",
        "cus_1",
        &[line(
            "il_fee_jan",
            Recurring,
            "31.00",
            ("2026-01-15T00:00:00Z", "2026-02-15T00:00:00Z"),
        )],
    );
    let mut events = vec![finalized(january.clone(), "2026-01-15T00:00:00Z")];
    deliver_invoice(&books, &events[0]).await;
    let payment = paid(
        "inv_jan",
        "cus_1",
        "pay_jan",
        "31.00",
        "2026-01-16T00:00:00Z",
    );
    deliver_payment(&books, &payment).await;
    assert_eq!(
        books.balances(None).await,
        expect(&[
            ("1000", dec!(31.00)),
            ("1100", dec!(0)),
            ("2100", dec!(31.00))
        ])
    );

    // Stripe's example: at the end of January, 17 of 31 days are recognised.
    assert_eq!(books.recognise("2026-02-01T00:00:00Z").await, 17);
    assert_eq!(books.recognise("2026-02-01T00:00:00Z").await, 0, "once");
    let end_of_january = expect(&[
        ("1000", dec!(31.00)),
        ("1100", dec!(0)),
        ("2100", dec!(14.00)),
        ("4000", dec!(17.00)),
    ]);
    assert_eq!(books.balances(None).await, end_of_january);

    // January is closed; a refund dated 20 January arrives late: it is
    // booked on 1 February, naming its own date.
    let close = books
        .api
        .close_period(
            "2026-02-01T00:00:00Z".parse().unwrap(),
            "January",
            &tally_audit::Origin::system("test"),
        )
        .await
        .unwrap();
    assert_eq!(close.memo, "January");
    let note = credit_note(
        january.clone(),
        "cn_refund",
        "1.00",
        "1.00",
        "2026-01-20T00:00:00Z",
    );
    deliver_invoice(&books, &note).await;
    let refund = refunded(
        "inv_jan",
        "cus_1",
        "pay_jan",
        "ref_1",
        "1.00",
        "2026-01-20T00:00:00Z",
    );
    deliver_payment(&books, &refund).await;
    assert_eq!(
        books.balances(Some("2026-02-01T00:00:00Z")).await,
        end_of_january,
        "a closed month does not change"
    );
    let late = books
        .api
        .list_journal_transactions(tonic::Request::new(ListJournalTransactionsRequest {
            source_id: "ref_1".into(),
            ..ListJournalTransactionsRequest::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .transactions;
    assert_eq!(late.len(), 1);
    assert_eq!(
        late[0].effective_at,
        Some(tally_proto::convert::timestamp(
            "2026-02-01T00:00:00Z".parse().unwrap()
        ))
    );
    assert_eq!(
        late[0].original_effective_at,
        Some(tally_proto::convert::timestamp(
            "2026-01-20T00:00:00Z".parse().unwrap()
        ))
    );

    // February: the next fee in advance, January's usage, a credit note on
    // the unpaid invoice, then its payment.
    books
        .clock
        .set("2026-02-15T00:00:00Z".parse().unwrap())
        .unwrap();
    let february = invoice(
        "inv_feb",
        "cus_1",
        &[
            line(
                "il_fee_feb",
                Recurring,
                "31.00",
                ("2026-02-15T00:00:00Z", "2026-03-15T00:00:00Z"),
            ),
            usage_line(
                "il_tokens",
                "llm.tokens",
                "12.34",
                ("2026-01-15T00:00:00Z", "2026-02-15T00:00:00Z"),
            ),
        ],
    );
    let february_events = [
        finalized(february.clone(), "2026-02-15T00:00:00Z"),
        credit_note(
            february.clone(),
            "cn_goodwill",
            "5.00",
            "",
            "2026-02-15T12:00:00Z",
        ),
    ];
    for event in &february_events {
        deliver_invoice(&books, event).await;
    }
    let february_payment = paid(
        "inv_feb",
        "cus_1",
        "pay_feb",
        "38.34",
        "2026-02-16T00:00:00Z",
    );
    deliver_payment(&books, &february_payment).await;

    // 1 March: January's fee done (1.00 a day), February's 31.00 over 28
    // days: 1.107… a day, the 20 cents left over go to the first 20 days, so
    // 15 February – 28 February recognise 14 × 1.11.
    assert_eq!(books.recognise("2026-03-01T00:00:00Z").await, 14 + 14);
    assert_eq!(
        books.balances(None).await,
        expect(&[
            ("1000", dec!(68.34)),
            ("1100", dec!(0)),
            ("1150", dec!(0)),
            ("2100", dec!(15.46)),
            ("2400", dec!(0)),
            ("4000", dec!(46.54)),
            ("4200/llm.tokens", dec!(12.34)),
            ("4900", dec!(-6.00)),
        ])
    );

    // March: an invoice finalized by mistake, recognised for two days, voided.
    let march = invoice(
        "inv_mar",
        "cus_1",
        &[line(
            "il_fee_mar",
            Recurring,
            "10.00",
            ("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z"),
        )],
    );
    books
        .clock
        .set("2026-03-01T00:00:00Z".parse().unwrap())
        .unwrap();
    let march_finalized = finalized(march.clone(), "2026-03-01T00:00:00Z");
    deliver_invoice(&books, &march_finalized).await;
    // 10.00 over 31 days: 0.32 a day, the first 8 days 0.33.
    assert_eq!(books.recognise("2026-03-03T00:00:00Z").await, 2 + 2);
    let march_voided = voided(march.clone(), "2026-03-03T00:00:00Z");
    deliver_invoice(&books, &march_voided).await;
    assert_eq!(
        books.recognise("2026-03-05T00:00:00Z").await,
        2,
        "only February's fee: a voided invoice recognises nothing more"
    );
    let final_balances = expect(&[
        ("1000", dec!(68.34)),
        ("1100", dec!(0)),
        ("1150", dec!(0)),
        ("2100", dec!(11.02)),
        ("2400", dec!(0)),
        ("4000", dec!(50.98)),
        ("4200/llm.tokens", dec!(12.34)),
        ("4900", dec!(-6.00)),
    ]);
    assert_eq!(books.balances(None).await, final_balances);

    let schedule = books
        .api
        .get_revenue_schedule(tonic::Request::new(GetRevenueScheduleRequest {
            invoice_id: "inv_feb".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(schedule.lines.len(), 1, "the usage line is not deferred");
    let fee = &schedule.lines[0];
    assert_eq!(fee.line_id, "il_fee_feb");
    assert_eq!(fee.days.len(), 28);
    assert_eq!(fee.recognised.as_ref().unwrap().amount, "19.98");
    assert_eq!(fee.deferred.as_ref().unwrap().amount, "11.02");

    // A replay of every fact under new message ids (a rebuild from the
    // topics) posts nothing new.
    let journal_before = journal_ids(&books).await;
    events.extend([note, march_finalized, march_voided]);
    events.extend(february_events);
    for event in &events {
        let mut replayed = event.clone();
        replayed.event_id = format!("replay_{}", event.event_id);
        assert!(
            books
                .invoices
                .apply(&replayed.event_id, &replayed)
                .await
                .unwrap()
        );
    }
    for event in [payment, refund, february_payment] {
        let id = format!("replay_{}", event.event_id);
        assert!(books.payments.apply(&id, &event).await.unwrap());
    }
    assert_eq!(journal_ids(&books).await, journal_before);
    assert_eq!(books.balances(None).await, final_balances);

    // A rebuild from the kept facts gives the same journal, transaction for
    // transaction (ids, dates, entries; only posted_at may differ), the same
    // balances at every instant, and keeps the close.
    let before = journal(&books).await;
    let at_close = books.balances(Some("2026-02-01T00:00:00Z")).await;
    let rebuilt = books
        .api
        .rebuild(&tally_audit::Origin::system("test"))
        .await
        .unwrap();
    assert_eq!(
        rebuilt.facts, 9,
        "every fact applied once, replays not kept twice"
    );
    assert_eq!(usize::try_from(rebuilt.transactions).unwrap(), before.len());
    let after = journal(&books).await;
    for (was, is) in before.iter().zip(&after) {
        assert_eq!(was, is, "the same transaction after the rebuild");
    }
    assert_eq!(after.len(), before.len());
    assert_eq!(books.balances(None).await, final_balances);
    assert_eq!(books.balances(Some("2026-02-01T00:00:00Z")).await, at_close);
    // Twice is the same again.
    books
        .api
        .rebuild(&tally_audit::Origin::system("test"))
        .await
        .unwrap();
    assert_eq!(journal(&books).await, before);
}

/// The journal without `posted_at`, by transaction id (posting order may
/// differ: a rebuild recognises days as it replays, not when the job ran).
async fn journal(books: &Books) -> Vec<tally_proto::finance::JournalTransaction> {
    let page = books
        .api
        .list_journal_transactions(tonic::Request::new(ListJournalTransactionsRequest {
            page_size: 1000,
            ..ListJournalTransactionsRequest::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(page.next_page_token.is_empty());
    let mut transactions: Vec<_> = page
        .transactions
        .into_iter()
        .map(|mut transaction| {
            transaction.posted_at = None;
            transaction
        })
        .collect();
    transactions.sort_by(|left, right| left.id.cmp(&right.id));
    transactions
}

async fn journal_ids(books: &Books) -> Vec<String> {
    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let page = books
            .api
            .list_journal_transactions(tonic::Request::new(ListJournalTransactionsRequest {
                page_size: 7,
                page_token: token.clone(),
                ..ListJournalTransactionsRequest::default()
            }))
            .await
            .unwrap()
            .into_inner();
        ids.extend(
            page.transactions
                .into_iter()
                .map(|transaction| transaction.id),
        );
        if page.next_page_token.is_empty() {
            return ids;
        }
        token = page.next_page_token;
    }
}
