//! What the triggers refuse, and what verification catches when someone
//! with the power to disable them edits the log anyway.

use sqlx::PgPool;
use tally_audit::{BrokenLinkKind, Schema};
use tally_testkit::postgres;

use super::record_many;

/// Runs `sql` with the log's triggers disabled (as a table owner or
/// superuser can), like an administrator editing history.
async fn behind_the_triggers(pool: &PgPool, statements: &[&str]) {
    let mut connection = pool.acquire().await.unwrap();
    sqlx::query("ALTER TABLE invoicing.audit_log DISABLE TRIGGER USER")
        .execute(&mut *connection)
        .await
        .unwrap();
    sqlx::query("ALTER TABLE invoicing.audit_chain_head DISABLE TRIGGER USER")
        .execute(&mut *connection)
        .await
        .unwrap();
    for statement in statements {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_string()))
            .execute(&mut *connection)
            .await
            .unwrap();
    }
    sqlx::query("ALTER TABLE invoicing.audit_log ENABLE TRIGGER USER")
        .execute(&mut *connection)
        .await
        .unwrap();
    sqlx::query("ALTER TABLE invoicing.audit_chain_head ENABLE TRIGGER USER")
        .execute(&mut *connection)
        .await
        .unwrap();
}

#[tokio::test]
async fn update_delete_and_truncate_through_sql_are_refused() {
    let database = postgres::database().await;
    let pool = &database.pool;
    record_many(pool, Schema::Invoicing, 1..=2).await;
    for statement in [
        "UPDATE invoicing.audit_log SET reason = 'nothing to see' WHERE sequence = 1",
        "DELETE FROM invoicing.audit_log WHERE sequence = 2",
        "TRUNCATE invoicing.audit_log",
        "UPDATE invoicing.audit_chain_head SET sequence = 1",
        "DELETE FROM invoicing.audit_chain_head",
    ] {
        let error = sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(pool)
            .await
            .unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("append-only")
                || message.contains("audit_chain_head")
                || message.contains("refused"),
            "{statement}: {message}"
        );
    }
    let verification = tally_audit::verify(pool, Schema::Invoicing).await.unwrap();
    assert_eq!(
        (verification.entries_checked, verification.broken),
        (2, None)
    );
}

#[tokio::test]
async fn an_edit_without_recomputing_the_hash_is_caught_by_verify() {
    let database = postgres::database().await;
    let pool = &database.pool;
    record_many(pool, Schema::Invoicing, 1..=5).await;
    behind_the_triggers(
        pool,
        &["UPDATE invoicing.audit_log SET after_state = '{\"status\":\"finalized\"}' WHERE sequence = 3"],
    )
    .await;
    let verification = tally_audit::verify(pool, Schema::Invoicing).await.unwrap();
    let broken = verification.broken.expect("the edit is found");
    assert_eq!((broken.kind, broken.sequence), (BrokenLinkKind::Hash, 3));
    assert_eq!(verification.head.sequence, 2, "the last good link");
    assert_ne!(broken.expected, broken.found);
}

#[tokio::test]
async fn a_deleted_entry_is_a_sequence_gap() {
    let database = postgres::database().await;
    let pool = &database.pool;
    record_many(pool, Schema::Invoicing, 1..=4).await;
    behind_the_triggers(
        pool,
        &["DELETE FROM invoicing.audit_log WHERE sequence = 2"],
    )
    .await;
    let broken = tally_audit::verify(pool, Schema::Invoicing)
        .await
        .unwrap()
        .broken
        .expect("the gap is found");
    assert_eq!(broken.kind, BrokenLinkKind::SequenceGap);
    assert_eq!(
        (broken.expected.as_str(), broken.found.as_str()),
        ("2", "3")
    );
}

/// Rewrites entry `sequence` and every later one with recomputed hashes,
/// and moves the head: a consistent forgery.
pub(super) async fn forge_from(pool: &PgPool, sequence: i64) {
    behind_the_triggers(
        pool,
        &[&format!(
            "UPDATE invoicing.audit_log SET reason = 'customer asked', actor_id = 'key_someone_else' \
             WHERE sequence = {sequence}"
        )],
    )
    .await;
    let (entries, _) = tally_audit::list(
        pool,
        &[Schema::Invoicing],
        &tally_audit::Filter::default(),
        None,
        1000,
    )
    .await
    .unwrap();
    let mut previous = entries[usize::try_from(sequence).unwrap() - 2].hash.clone();
    for mut entry in entries
        .into_iter()
        .skip(usize::try_from(sequence).unwrap() - 1)
    {
        entry.previous_hash = previous;
        let hash = entry.computed_hash();
        behind_the_triggers(
            pool,
            &[
                &format!(
                    "UPDATE invoicing.audit_log SET previous_hash = '\\x{}', hash = '\\x{}' WHERE sequence = {}",
                    hex::encode(&entry.previous_hash),
                    hex::encode(hash),
                    entry.sequence
                ),
                &format!(
                    "UPDATE invoicing.audit_chain_head SET sequence = {}, hash = '\\x{}'",
                    entry.sequence,
                    hex::encode(hash)
                ),
            ],
        )
        .await;
        previous = hash.to_vec();
    }
}

#[tokio::test]
async fn a_rewrite_with_recomputed_hashes_is_caught_only_by_an_earlier_head() {
    let database = postgres::database().await;
    let pool = &database.pool;
    record_many(pool, Schema::Invoicing, 1..=2).await;
    let before_the_rewrite = tally_audit::head(pool, Schema::Invoicing).await.unwrap();
    record_many(pool, Schema::Invoicing, 3..=4).await;
    let exported = tally_audit::head(pool, Schema::Invoicing).await.unwrap();
    record_many(pool, Schema::Invoicing, 5..=6).await;

    forge_from(pool, 3).await;

    // The forged chain is consistent in itself…
    let alone = tally_audit::verify(pool, Schema::Invoicing).await.unwrap();
    assert_eq!((alone.entries_checked, alone.broken), (6, None));
    // …but entry 4 no longer has the hash exported before the rewrite.
    let against = tally_audit::verify_against(pool, Schema::Invoicing, &[exported])
        .await
        .unwrap();
    let broken = against.broken.expect("the rewrite is found");
    assert_eq!(
        (broken.kind, broken.sequence),
        (BrokenLinkKind::ExportedHead, 4)
    );
    assert_eq!(broken.expected, exported.hash_hex());
    // A head exported before the rewritten entry does not see it (the limit
    // the operations guide states).
    let blind = tally_audit::verify_against(pool, Schema::Invoicing, &[before_the_rewrite])
        .await
        .unwrap();
    assert_eq!(blind.broken, None);
}

#[tokio::test]
async fn a_truncated_tail_is_caught_by_an_earlier_head() {
    let database = postgres::database().await;
    let pool = &database.pool;
    record_many(pool, Schema::Invoicing, 1..=3).await;
    let exported = tally_audit::head(pool, Schema::Invoicing).await.unwrap();
    let (entries, _) = tally_audit::list(
        pool,
        &[Schema::Invoicing],
        &tally_audit::Filter::default(),
        None,
        10,
    )
    .await
    .unwrap();
    behind_the_triggers(
        pool,
        &[
            "DELETE FROM invoicing.audit_log WHERE sequence = 3",
            &format!(
                "UPDATE invoicing.audit_chain_head SET sequence = 2, hash = '\\x{}'",
                hex::encode(&entries[1].hash)
            ),
        ],
    )
    .await;
    assert_eq!(
        tally_audit::verify(pool, Schema::Invoicing)
            .await
            .unwrap()
            .broken,
        None
    );
    let broken = tally_audit::verify_against(pool, Schema::Invoicing, &[exported])
        .await
        .unwrap()
        .broken
        .expect("the missing tail is found");
    assert_eq!(broken.kind, BrokenLinkKind::ExportedHead);
    assert_eq!(broken.found, "no entry");
}
