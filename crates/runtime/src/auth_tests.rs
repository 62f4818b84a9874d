//! Unit tests of `auth` (a sibling file keeps auth.rs under 700 lines).

use super::*;

fn registry_with(scopes: &[Scope]) -> (ApiKeyRegistry, String) {
    let registry = ApiKeyRegistry::default();
    let plaintext = generate_key();
    registry.insert(
        hash_key(&plaintext),
        ApiKey {
            id: "key_1".into(),
            name: "test".into(),
            scopes: scopes.iter().copied().collect(),
        },
    );
    (registry, plaintext)
}

#[test]
fn scopes_by_method_name() {
    let cases = [
        ("/tally.ingest.v1.IngestService/IngestBatch", Scope::Ingest),
        ("/tally.ingest.v1.IngestService/IngestStream", Scope::Ingest),
        ("/tally.ingest.v1.IngestService/ReadEvents", Scope::Read),
        ("/tally.ingest.v1.IngestService/OpenBackfill", Scope::Admin),
        ("/tally.ingest.v1.IngestService/CloseBackfill", Scope::Admin),
        ("/tally.ingest.v1.IngestService/ListBackfills", Scope::Read),
        ("/tally.finance.v1.LedgerService/ClosePeriod", Scope::Admin),
        (
            "/tally.finance.v1.LedgerService/RebuildLedger",
            Scope::Admin,
        ),
        (
            "/tally.finance.v1.LedgerService/GetTrialBalance",
            Scope::Read,
        ),
        ("/tally.clock.v1.ClockService/GetTime", Scope::Admin),
        ("/tally.audit.v1.AuditService/VerifyAuditChain", Scope::Read),
        ("/tally.audit.v1.AuditService/ListAuditEntries", Scope::Read),
        (
            "/tally.payments.v1.ReconciliationService/GetReconciliationReport",
            Scope::Admin,
        ),
        (
            "/tally.invoicing.v1.InvoiceService/PreviewUpcomingInvoice",
            Scope::Read,
        ),
        (
            "/tally.rating.v1.RatingService/BatchGetUsageCharges",
            Scope::Read,
        ),
        (
            "/tally.invoicing.v1.SubscriptionService/ChangePlan",
            Scope::Write,
        ),
    ];
    for (path, expected) in cases {
        assert_eq!(Scope::required_for(path), expected, "{path}");
    }
}

#[test]
fn unknown_missing_and_underprivileged_keys_are_refused() {
    let (registry, plaintext) = registry_with(&[Scope::Ingest]);
    let ingest = "/tally.ingest.v1.IngestService/IngestBatch";
    assert_eq!(registry.authorize(None, ingest), Err(AuthError::Missing));
    assert_eq!(
        registry.authorize(Some("tally_nope"), ingest),
        Err(AuthError::Invalid)
    );
    assert_eq!(
        registry.authorize(Some(&plaintext), ingest).unwrap().id,
        "key_1"
    );
    let error = registry
        .authorize(
            Some(&plaintext),
            "/tally.invoicing.v1.CustomerService/CreateCustomer",
        )
        .unwrap_err();
    assert!(matches!(
        error,
        AuthError::Forbidden {
            required: Scope::Write,
            ..
        }
    ));
    assert_eq!(
        tonic::Status::from(error).code(),
        tonic::Code::PermissionDenied
    );
    assert_eq!(
        tonic::Status::from(AuthError::Invalid).code(),
        tonic::Code::Unauthenticated
    );
}

#[test]
fn admin_implies_everything_and_write_implies_read() {
    let (registry, admin) = registry_with(&[Scope::Admin]);
    assert!(
        registry
            .authorize(Some(&admin), "/tally.clock.v1.ClockService/AdvanceTime")
            .is_ok()
    );
    assert!(
        registry
            .authorize(Some(&admin), "/tally.ingest.v1.IngestService/IngestBatch")
            .is_ok()
    );
    let (registry, writer) = registry_with(&[Scope::Write]);
    assert!(
        registry
            .authorize(
                Some(&writer),
                "/tally.invoicing.v1.InvoiceService/GetInvoice"
            )
            .is_ok()
    );
    assert!(
        registry
            .authorize(Some(&writer), "/tally.ingest.v1.IngestService/IngestBatch")
            .is_err()
    );
}

#[test]
fn backfills_are_opened_and_closed_only_with_admin() {
    let (registry, writer) = registry_with(&[Scope::Write]);
    for method in ["OpenBackfill", "CloseBackfill"] {
        let path = format!("/tally.ingest.v1.IngestService/{method}");
        assert!(
            matches!(
                registry.authorize(Some(&writer), &path),
                Err(AuthError::Forbidden {
                    required: Scope::Admin,
                    ..
                })
            ),
            "{method} with a write key"
        );
    }
    assert!(
        registry
            .authorize(
                Some(&writer),
                "/tally.ingest.v1.IngestService/ListBackfills"
            )
            .is_ok(),
        "listing backfills is a read"
    );
    let (registry, admin) = registry_with(&[Scope::Admin]);
    assert!(
        registry
            .authorize(Some(&admin), "/tally.ingest.v1.IngestService/CloseBackfill")
            .is_ok()
    );
}

#[test]
fn keys_are_random_and_hashed() {
    let first = generate_key();
    assert_ne!(first, generate_key());
    assert_eq!(first.len(), "tally_".len() + 64);
    assert_eq!(
        hash_key("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}
