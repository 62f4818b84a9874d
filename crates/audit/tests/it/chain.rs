//! Recording: same transaction, the chain's links, the lock, the secret guard.

use std::sync::Arc;

use tally_audit::{AuditError, GENESIS_HASH, Schema};
use tally_testkit::postgres;

use super::{record_many, void_entry};

async fn count(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM invoicing.audit_log")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_entry_commits_with_its_transaction_and_a_rollback_leaves_none() {
    let database = postgres::database().await;
    let pool = &database.pool;

    let mut transaction = pool.begin().await.unwrap();
    tally_audit::record(&mut transaction, Schema::Invoicing, void_entry(1, "inv_1"))
        .await
        .unwrap();
    transaction.rollback().await.unwrap();
    assert_eq!(count(pool).await, 0);
    let head = tally_audit::head(pool, Schema::Invoicing).await.unwrap();
    assert_eq!((head.sequence, head.hash), (0, GENESIS_HASH));

    let mut transaction = pool.begin().await.unwrap();
    let recorded = tally_audit::record(&mut transaction, Schema::Invoicing, void_entry(2, "inv_2"))
        .await
        .unwrap();
    transaction.commit().await.unwrap();
    assert_eq!(count(pool).await, 1);
    assert_eq!(
        recorded.sequence, 1,
        "the rolled-back entry used no sequence"
    );
    let head = tally_audit::head(pool, Schema::Invoicing).await.unwrap();
    assert_eq!((head.sequence, head.hash), (1, recorded.hash));
}

#[tokio::test]
async fn entries_link_from_the_genesis_hash_and_keep_canonical_json() {
    let database = postgres::database().await;
    let pool = &database.pool;
    record_many(pool, Schema::Invoicing, 1..=3).await;

    let (entries, more) = tally_audit::list(
        pool,
        &[Schema::Invoicing],
        &tally_audit::Filter::default(),
        None,
        10,
    )
    .await
    .unwrap();
    assert!(!more);
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0].previous_hash, GENESIS_HASH.to_vec());
    for pair in entries.windows(2) {
        assert_eq!(pair[1].previous_hash, pair[0].hash);
        assert_eq!(pair[1].sequence, pair[0].sequence + 1);
    }
    for entry in &entries {
        assert_eq!(entry.computed_hash().to_vec(), entry.hash);
    }
    let first = &entries[0];
    assert_eq!(
        first.before_state.as_deref(),
        Some(r#"{"id":"inv_1","status":"finalized","total":"10.00"}"#)
    );
    assert_eq!(first.actor_kind, "api_key");
    assert_eq!(first.actor_id, "key_test");
    assert_eq!(first.actor_name, "finance-team");
    assert_eq!(first.request_id.as_deref(), Some("req-1"));
    assert_eq!(first.reason.as_deref(), Some("duplicate"));

    let verification = tally_audit::verify(pool, Schema::Invoicing).await.unwrap();
    assert_eq!(verification.broken, None);
    assert_eq!(verification.entries_checked, 3);
    assert_eq!(verification.head.hash.to_vec(), entries[2].hash);
    // Chains are separate: nothing was written to payments'.
    let payments = tally_audit::verify(pool, Schema::Payments).await.unwrap();
    assert_eq!((payments.entries_checked, payments.broken), (0, None));
}

#[tokio::test]
async fn twenty_concurrent_transactions_leave_one_unbroken_chain() {
    let database = postgres::database().await;
    // Twenty connections, so all twenty transactions are open (each with a
    // transaction id) before any of them appends.
    let pool = Arc::new(
        tally_runtime::db::connect_url(&database.url, 20)
            .await
            .unwrap(),
    );
    let barrier = Arc::new(tokio::sync::Barrier::new(20));
    let tasks: Vec<_> = (1..=20u32)
        .map(|number| {
            let pool = Arc::clone(&pool);
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                let mut transaction = pool.begin().await.unwrap();
                sqlx::query("SELECT txid_current()")
                    .execute(&mut *transaction)
                    .await
                    .unwrap();
                barrier.wait().await;
                tally_audit::record(
                    &mut transaction,
                    Schema::Invoicing,
                    void_entry(number, &format!("inv_{number}")),
                )
                .await
                .unwrap();
                transaction.commit().await.unwrap();
            })
        })
        .collect();
    for task in futures::future::join_all(tasks).await {
        task.unwrap();
    }
    let verification = tally_audit::verify(&pool, Schema::Invoicing).await.unwrap();
    assert_eq!(verification.broken, None);
    assert_eq!(verification.entries_checked, 20);
    assert_eq!(verification.head.sequence, 20);
    let sequences: Vec<i64> =
        sqlx::query_scalar("SELECT sequence FROM invoicing.audit_log ORDER BY sequence")
            .fetch_all(&*pool)
            .await
            .unwrap();
    assert_eq!(sequences, (1..=20).collect::<Vec<i64>>());
}

#[tokio::test]
async fn an_entry_holding_a_secret_is_refused_and_nothing_is_written() {
    let database = postgres::database().await;
    let pool = &database.pool;
    let key = tally_runtime::auth::generate_key();
    let cases = [
        void_entry(1, "inv_1").after(serde_json::json!({"note": key})),
        void_entry(2, "inv_2").comment("use sk_test_51Habcdef to retry"),
        void_entry(3, "inv_3").before(serde_json::json!({"secret": "whsec_abc"})),
    ];
    for entry in cases {
        let mut transaction = pool.begin().await.unwrap();
        let error = tally_audit::record(&mut transaction, Schema::Invoicing, entry)
            .await
            .unwrap_err();
        assert!(matches!(error, AuditError::SecretInEntry { .. }), "{error}");
        transaction.commit().await.unwrap();
    }
    assert_eq!(count(pool).await, 0);
}

#[tokio::test]
async fn several_entries_of_one_transaction_are_chained_in_order() {
    let database = postgres::database().await;
    let pool = &database.pool;
    record_many(pool, Schema::Invoicing, 1..=1).await;
    let mut transaction = pool.begin().await.unwrap();
    let batch = (2..=4)
        .map(|number| void_entry(number, &format!("inv_{number}")))
        .collect();
    let recorded = tally_audit::record_many(&mut transaction, Schema::Invoicing, batch)
        .await
        .unwrap();
    transaction.commit().await.unwrap();
    assert_eq!(
        recorded
            .iter()
            .map(|entry| entry.sequence)
            .collect::<Vec<_>>(),
        [2, 3, 4]
    );
    record_many(pool, Schema::Invoicing, 5..=5).await;
    let verification = tally_audit::verify(pool, Schema::Invoicing).await.unwrap();
    assert_eq!(
        (verification.entries_checked, verification.broken),
        (5, None)
    );
    let head = tally_audit::head(pool, Schema::Invoicing).await.unwrap();
    assert_eq!(head.sequence, 5);
    // An empty batch records nothing and takes no lock.
    let mut transaction = pool.begin().await.unwrap();
    let nothing = tally_audit::record_many(&mut transaction, Schema::Invoicing, Vec::new())
        .await
        .unwrap();
    assert!(nothing.is_empty());
}
