//! `AuditService` over several chains: filters, pagination, get, heads and
//! verification with exported heads; chains not served are refused.

use std::sync::Arc;

use tally_audit::{AuditApi, Schema};
use tally_proto::audit::audit_service_server::AuditService;
use tally_proto::audit::{self as proto};
use tally_testkit::{ManualClock, postgres};
use tonic::{Code, Request};

use super::{at, record_many};

fn api(pool: &sqlx::PgPool, schemas: &[Schema]) -> AuditApi {
    AuditApi::new(pool.clone(), Arc::new(ManualClock::new(at(0))), schemas)
}

async fn list(
    api: &AuditApi,
    request: proto::ListAuditEntriesRequest,
) -> proto::ListAuditEntriesResponse {
    api.list_audit_entries(Request::new(request))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn entries_of_every_served_chain_are_listed_in_time_order_page_by_page() {
    let database = postgres::database().await;
    let pool = &database.pool;
    record_many(pool, Schema::Invoicing, 1..=5).await;
    record_many(pool, Schema::Payments, 1..=3).await;
    let api = api(pool, &Schema::ALL);

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(
            &api,
            proto::ListAuditEntriesRequest {
                page_size: 3,
                page_token: token.clone(),
                ..Default::default()
            },
        )
        .await;
        assert!(page.entries.len() <= 3);
        seen.extend(page.entries.into_iter().map(|entry| {
            (
                entry.recorded_at.unwrap().seconds,
                entry.chain,
                entry.sequence,
            )
        }));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    // Entries 1-3 of both chains share their instants: invoicing's before
    // payments' at each (chains in `Schema::ALL` order).
    let expected: Vec<(String, i64)> = [
        ("invoicing", 1),
        ("payments", 1),
        ("invoicing", 2),
        ("payments", 2),
        ("invoicing", 3),
        ("payments", 3),
        ("invoicing", 4),
        ("invoicing", 5),
    ]
    .into_iter()
    .map(|(chain, sequence)| (chain.to_owned(), sequence))
    .collect();
    assert_eq!(
        seen.iter()
            .map(|(_, chain, sequence)| (chain.clone(), *sequence))
            .collect::<Vec<_>>(),
        expected
    );
}

#[tokio::test]
async fn filters_combine_and_bad_requests_are_refused() {
    let database = postgres::database().await;
    let pool = &database.pool;
    record_many(pool, Schema::Invoicing, 1..=5).await;
    let api = api(pool, &[Schema::Invoicing, Schema::Auth]);

    let by_resource = list(
        &api,
        proto::ListAuditEntriesRequest {
            resource_id: "inv_2".into(),
            action: "invoice.voided".into(),
            actor_id: "key_test".into(),
            resource_type: "invoice".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(by_resource.entries.len(), 1);
    let entry = &by_resource.entries[0];
    assert_eq!(entry.resource_id, "inv_2");
    assert_eq!(
        entry.actor.as_ref().unwrap().kind(),
        proto::ActorKind::ApiKey
    );
    assert_eq!(
        entry.before_json,
        r#"{"id":"inv_2","status":"finalized","total":"10.00"}"#
    );

    let in_range = list(
        &api,
        proto::ListAuditEntriesRequest {
            from: Some(tally_proto::convert::timestamp(at(2))),
            to: Some(tally_proto::convert::timestamp(at(4))),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        in_range
            .entries
            .iter()
            .map(|entry| entry.sequence)
            .collect::<Vec<_>>(),
        vec![2, 3]
    );
    let nobody = list(
        &api,
        proto::ListAuditEntriesRequest {
            actor_id: "bill_run".into(),
            ..Default::default()
        },
    )
    .await;
    assert!(nobody.entries.is_empty());

    for request in [
        proto::ListAuditEntriesRequest {
            chain: "payments".into(),
            ..Default::default()
        },
        proto::ListAuditEntriesRequest {
            chain: "ledger".into(),
            ..Default::default()
        },
        proto::ListAuditEntriesRequest {
            page_token: "garbage".into(),
            ..Default::default()
        },
        proto::ListAuditEntriesRequest {
            from: Some(tally_proto::convert::timestamp(at(4))),
            to: Some(tally_proto::convert::timestamp(at(2))),
            ..Default::default()
        },
    ] {
        let status = api
            .list_audit_entries(Request::new(request.clone()))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{request:?}");
    }
}

#[tokio::test]
async fn get_head_and_verify_answer_for_the_served_chains() {
    let database = postgres::database().await;
    let pool = &database.pool;
    record_many(pool, Schema::Invoicing, 1..=3).await;
    let api = api(pool, &[Schema::Invoicing, Schema::Auth]);

    let entry = api
        .get_audit_entry(Request::new(proto::GetAuditEntryRequest {
            id: format!("aud_{:032x}", 2),
        }))
        .await
        .unwrap()
        .into_inner()
        .entry
        .unwrap();
    assert_eq!((entry.chain.as_str(), entry.sequence), ("invoicing", 2));
    assert_eq!(entry.hash.len(), 64);
    let missing = api
        .get_audit_entry(Request::new(proto::GetAuditEntryRequest {
            id: "aud_nope".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    let heads = api
        .get_audit_chain_head(Request::new(proto::GetAuditChainHeadRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let chains: Vec<(&str, i64)> = heads
        .heads
        .iter()
        .map(|head| (head.chain.as_str(), head.sequence))
        .collect();
    assert_eq!(chains, vec![("auth", 0), ("invoicing", 3)]);
    let invoicing_head = heads.heads[1].clone();
    assert_eq!(invoicing_head.hash, entry_hash(&api, 3).await);

    let verified = api
        .verify_audit_chain(Request::new(proto::VerifyAuditChainRequest {
            chain: String::new(),
            expected_heads: vec![invoicing_head.clone()],
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verified.chains.len(), 2);
    assert!(
        verified
            .chains
            .iter()
            .all(|chain| chain.broken_link.is_none())
    );

    let wrong = proto::AuditChainHead {
        hash: "00".repeat(32),
        ..invoicing_head
    };
    let refuted = api
        .verify_audit_chain(Request::new(proto::VerifyAuditChainRequest {
            chain: "invoicing".into(),
            expected_heads: vec![wrong],
        }))
        .await
        .unwrap()
        .into_inner();
    let broken = refuted.chains[0].broken_link.clone().unwrap();
    assert_eq!(broken.kind(), proto::BrokenLinkKind::ExportedHead);
    assert_eq!(broken.sequence, 3);

    let malformed = api
        .verify_audit_chain(Request::new(proto::VerifyAuditChainRequest {
            chain: String::new(),
            expected_heads: vec![proto::AuditChainHead {
                chain: "invoicing".into(),
                sequence: 1,
                hash: "xyz".into(),
            }],
        }))
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
}

async fn entry_hash(api: &AuditApi, sequence: i64) -> String {
    list(
        api,
        proto::ListAuditEntriesRequest {
            chain: "invoicing".into(),
            ..Default::default()
        },
    )
    .await
    .entries
    .into_iter()
    .find(|entry| entry.sequence == sequence)
    .unwrap()
    .hash
}
