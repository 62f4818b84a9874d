//! `ConnectorService`: the mapping, the listing with its filters and pages, the stats.

use tally_proto::connectors::connector_service_server::ConnectorService;
use tally_proto::connectors::{
    ForwardingState, GetForwardingStatsRequest, ListForwardedEventsRequest, MapOrbCustomerRequest,
};
use tally_runtime::error::status_violations;

use crate::support::*;

fn map_request(customer: &str, external: &str) -> tonic::Request<MapOrbCustomerRequest> {
    tonic::Request::new(MapOrbCustomerRequest {
        customer_id: customer.into(),
        external_customer_id: external.into(),
    })
}

#[tokio::test]
async fn mapping_is_idempotent_and_an_external_id_belongs_to_one_customer() {
    let h = Harness::open().await;
    let first = h
        .api
        .map_orb_customer(map_request("cus_acme", "acme-orb"))
        .await
        .unwrap()
        .into_inner();
    assert!(first.changed);
    let mapping = first.mapping.unwrap();
    assert_eq!(mapping.external_customer_id, "acme-orb");

    let again = h
        .api
        .map_orb_customer(map_request("cus_acme", "acme-orb"))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.changed);
    assert_eq!(again.mapping.unwrap().created_at, mapping.created_at);

    let taken = h
        .api
        .map_orb_customer(map_request("cus_globex", "acme-orb"))
        .await
        .unwrap_err();
    assert_eq!(taken.code(), tonic::Code::AlreadyExists);
    assert!(taken.message().contains("cus_acme"), "{}", taken.message());

    let moved = h
        .api
        .map_orb_customer(map_request("cus_acme", "acme-2"))
        .await
        .unwrap()
        .into_inner();
    assert!(moved.changed);

    for (customer, external, field) in [
        ("sub_acme", "x", "customer_id"),
        ("cus_acme", "", "external_customer_id"),
        ("cus_acme", "a\nb", "external_customer_id"),
    ] {
        let status = h
            .api
            .map_orb_customer(map_request(customer, external))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(status_violations(&status)[0].field, field);
    }
}

#[tokio::test]
async fn forwarded_events_are_listed_by_customer_and_state_in_pages() {
    let h = Harness::open().await;
    h.map("cus_acme", "acme-orb").await;
    let batch: Vec<_> = (1..=5)
        .map(|n| usage(n, "cus_acme", &format!("evt_{n}"), &[]))
        .chain((6..=7).map(|n| usage(n, "cus_initech", &format!("evt_{n}"), &[])))
        .collect();
    h.forwarder.forward(&batch).await;

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = h
            .api
            .list_forwarded_events(tonic::Request::new(ListForwardedEventsRequest {
                customer_id: "cus_acme".into(),
                state: ForwardingState::Forwarded.into(),
                page_size: 2,
                page_token: token,
            }))
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.events.into_iter().map(|event| event.event_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ["evt_1", "evt_2", "evt_3", "evt_4", "evt_5"]);
    assert_eq!(h.events(ForwardingState::NotMapped).await.len(), 2);

    let bad = h
        .api
        .list_forwarded_events(tonic::Request::new(ListForwardedEventsRequest {
            page_token: "nonsense".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(status_violations(&bad)[0].rule, "invalid_page_token");

    let stats = h
        .api
        .get_forwarding_stats(tonic::Request::new(GetForwardingStatsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            stats.forwarded,
            stats.rejected,
            stats.not_mapped,
            stats.mapped_customers
        ),
        (5, 0, 2, 1)
    );
    assert_eq!(
        stats.last_forwarded_at,
        Some(tally_proto::convert::timestamp(at("2026-12-07T12:00:00Z")))
    );
    let initech = h
        .api
        .get_forwarding_stats(tonic::Request::new(GetForwardingStatsRequest {
            customer_id: "cus_initech".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            initech.forwarded,
            initech.not_mapped,
            initech.mapped_customers
        ),
        (0, 2, 0)
    );
    assert!(initech.last_forwarded_at.is_none());
}
