//! CustomerService.

use tally_proto::invoicing::*;
use tonic::Code;

use crate::support::*;

fn request(external_id: &str) -> CreateCustomerRequest {
    CreateCustomerRequest {
        external_id: external_id.into(),
        name: "Acme".into(),
        billing_email: "billing@acme.test".into(),
        currency: "EUR".into(),
        billing_address: Some(Address {
            line1: "1 Main St".into(),
            city: "Berlin".into(),
            country: "DE".into(),
            ..Default::default()
        }),
        metadata: [
            ("tier".to_owned(), "gold".to_owned()),
            ("region".to_owned(), "eu".to_owned()),
        ]
        .into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn create_is_idempotent_by_external_id() {
    let mut h = harness(at(2025, 1, 1), config(0)).await;
    let first = h
        .customers
        .create_customer(request("acme"))
        .await
        .unwrap()
        .into_inner();
    assert!(first.created);
    let customer = first.customer.unwrap();
    assert_eq!(
        customer.collection_mode,
        CollectionMode::ChargeAutomatically as i32
    );
    let replay = h
        .customers
        .create_customer(request("acme"))
        .await
        .unwrap()
        .into_inner();
    assert!(!replay.created);
    assert_eq!(replay.customer.unwrap(), customer);
    let mut different = request("acme");
    different.billing_email = "other@acme.test".into();
    let status = h.customers.create_customer(different).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert!(
        status.message().contains("billing_email"),
        "{}",
        status.message()
    );
    let by_external = h
        .customers
        .get_customer(GetCustomerRequest {
            lookup: Some(get_customer_request::Lookup::ExternalId("acme".into())),
        })
        .await
        .unwrap()
        .into_inner()
        .customer
        .unwrap();
    assert_eq!(by_external.id, customer.id);
}

#[tokio::test]
async fn invalid_requests_name_every_field() {
    let mut h = harness(at(2025, 1, 1), config(0)).await;
    let mut bad = request("");
    bad.currency = "XYZ".into();
    bad.billing_email = "nope".into();
    bad.billing_address.as_mut().unwrap().country = "germany".into();
    let status = h.customers.create_customer(bad).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    for field in [
        "external_id",
        "currency",
        "billing_email",
        "billing_address.country",
    ] {
        assert!(
            status.message().contains(field),
            "{field} in {}",
            status.message()
        );
    }
    let status = h
        .customers
        .get_customer(GetCustomerRequest {
            lookup: Some(get_customer_request::Lookup::CustomerId(
                "cus_missing".into(),
            )),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn update_list_and_archive() {
    let mut h = harness(at(2025, 1, 1), config(0)).await;
    let mut ids = Vec::new();
    for index in 0..5 {
        ids.push(h.customer(&format!("c{index}")).await);
    }
    let updated = h
        .customers
        .update_customer(UpdateCustomerRequest {
            customer: Some(Customer {
                id: ids[0].clone(),
                name: "Renamed".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["name".into()],
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .customer
        .unwrap();
    assert_eq!(
        (updated.name.as_str(), updated.currency.as_str()),
        ("Renamed", "USD")
    );
    let status = h
        .customers
        .update_customer(UpdateCustomerRequest {
            customer: Some(Customer {
                id: ids[0].clone(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["status".into()],
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("update_mask.paths[0]"));
    // Pages of two, oldest first.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = h
            .customers
            .list_customers(ListCustomersRequest {
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.customers.into_iter().map(|customer| customer.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ids);
    // A customer with a live subscription cannot be archived or change currency.
    let plan = h.plan("basic", PlanSpec::advance("10.00")).await;
    h.subscribe(&ids[1], &plan, at(2025, 1, 1)).await;
    let status = h
        .customers
        .archive_customer(ArchiveCustomerRequest {
            customer_id: ids[1].clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let status = h
        .customers
        .update_customer(UpdateCustomerRequest {
            customer: Some(Customer {
                id: ids[1].clone(),
                currency: "EUR".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["currency".into()],
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let archived = h
        .customers
        .archive_customer(ArchiveCustomerRequest {
            customer_id: ids[2].clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .customer
        .unwrap();
    assert_eq!(archived.status, CustomerStatus::Archived as i32);
    let key = h.key();
    let status = h
        .subscriptions
        .create_subscription(CreateSubscriptionRequest {
            idempotency_key: key,
            customer_id: ids[2].clone(),
            plan_version_id: plan,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
}
