//! The payments ledger on PostgreSQL: replays, conflicts, reversals, and the
//! database refusing any edit.

use rust_decimal_macros::dec;
use tally_domain::ledger::{Fact, LedgerError, Posted};
use tally_domain::money::{Currency, Money};
use tally_payments::ledger::{self, Book, PostError};

use crate::support::*;

#[tokio::test]
async fn facts_post_once_reversals_once_and_rows_never_change() {
    let harness = harness().await;
    let mut connection = harness.db.pool.acquire().await.unwrap();
    let now = start_time();
    let usd = |amount| Money::new(amount, Currency::USD);
    let invoice_finalized = Fact::InvoiceFinalized("inv_1".into());
    let finalized = ledger::transfer(
        &invoice_finalized,
        now,
        Book::Receivable,
        Book::Invoiced,
        usd(dec!(12.34)),
    )
    .unwrap();
    assert_eq!(
        ledger::post(&mut connection, &finalized, now)
            .await
            .unwrap(),
        Posted::Recorded
    );
    assert_eq!(
        ledger::post(&mut connection, &finalized, now)
            .await
            .unwrap(),
        Posted::AlreadyRecorded,
        "a replay of the same fact"
    );
    let different = ledger::transfer(
        &invoice_finalized,
        now,
        Book::Receivable,
        Book::Invoiced,
        usd(dec!(12.35)),
    )
    .unwrap();
    assert!(matches!(
        ledger::post(&mut connection, &different, now).await,
        Err(PostError::Ledger(
            LedgerError::ExistsWithDifferentContent { .. }
        ))
    ));
    assert_eq!(
        ledger::balance(&mut connection, Book::Receivable, Currency::USD)
            .await
            .unwrap(),
        usd(dec!(12.34))
    );

    let reversal = finalized.reversal(
        ledger::transaction_id(&Fact::InvoiceVoided("inv_1".into())),
        now,
    );
    assert_eq!(
        ledger::post(&mut connection, &reversal, now).await.unwrap(),
        Posted::Recorded
    );
    // Another id (the void of another invoice) reversing the same transaction.
    let second = finalized.reversal(
        ledger::transaction_id(&Fact::InvoiceVoided("inv_2".into())),
        now,
    );
    assert!(matches!(
        ledger::post(&mut connection, &second, now).await,
        Err(PostError::Ledger(LedgerError::AlreadyReversed { .. }))
    ));
    assert_eq!(
        ledger::balance(&mut connection, Book::Receivable, Currency::USD)
            .await
            .unwrap(),
        usd(dec!(0))
    );

    for statement in [
        "UPDATE payments.ledger_entries SET amount = 1",
        "DELETE FROM payments.ledger_entries",
        "UPDATE payments.ledger_transactions SET description = 'edited'",
        "DELETE FROM payments.ledger_transactions",
    ] {
        let error = sqlx::query(statement)
            .execute(&mut *connection)
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("append-only"),
            "{statement}: {error}"
        );
    }
}
