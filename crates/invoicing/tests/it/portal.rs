//! A customer portal token (`runtime::portal`) reads its customer through
//! invoicing — the customer, its subscriptions, invoices (listed, one by id,
//! the upcoming one) and credit balance — and is refused every other
//! customer's with PERMISSION_DENIED, as well as any call outside the portal.

use tally_proto::invoicing::credit_service_client::CreditServiceClient;
use tally_proto::invoicing::customer_service_client::CustomerServiceClient;
use tally_proto::invoicing::invoice_service_client::InvoiceServiceClient;
use tally_proto::invoicing::subscription_service_client::SubscriptionServiceClient;
use tally_proto::invoicing::*;
use tally_testkit::keys::serve_with_portal_token;
use tonic::Code;

use crate::support::*;

#[tokio::test]
async fn a_portal_token_reads_its_customer_and_nothing_else() {
    let mut h = harness(at(2025, 1, 1), config(0)).await;
    let (acme, acme_subscription, acme_invoice) = h.first_invoice("40.00").await;
    let plan = h.plan("other", PlanSpec::advance("10.00")).await;
    let globex = h.customer("globex").await;
    let globex_subscription = h.subscribe(&globex, &plan, at(2025, 1, 1)).await;
    h.bill_at(at(2025, 1, 1)).await;
    let globex_invoice = h.invoice_at(&globex_subscription, at(2025, 1, 1)).await;

    let channel = serve_with_portal_token(h.invoicing.grpc_server(16 << 20), &h.shutdown, &acme)
        .await
        .unwrap();
    let mut customers = CustomerServiceClient::new(channel.clone());
    let mut subscriptions = SubscriptionServiceClient::new(channel.clone());
    let mut invoices = InvoiceServiceClient::new(channel.clone());
    let mut credits = CreditServiceClient::new(channel);
    let by_id = |id: &str| GetCustomerRequest {
        lookup: Some(get_customer_request::Lookup::CustomerId(id.to_owned())),
    };
    let list_invoices = |customer: &str| ListInvoicesRequest {
        customer_id: customer.to_owned(),
        page_size: 10,
        ..Default::default()
    };
    let list_subscriptions = |customer: &str| ListSubscriptionsRequest {
        customer_id: customer.to_owned(),
        page_size: 10,
        ..Default::default()
    };
    let balance = |customer: &str| GetCreditBalanceRequest {
        customer_id: customer.to_owned(),
        as_of: None,
    };

    // Its own customer: every portal read answers.
    customers.get_customer(by_id(&acme)).await.unwrap();
    let external = GetCustomerRequest {
        lookup: Some(get_customer_request::Lookup::ExternalId("acme".into())),
    };
    customers.get_customer(external).await.unwrap();
    subscriptions
        .list_subscriptions(list_subscriptions(&acme))
        .await
        .unwrap();
    let listed = invoices.list_invoices(list_invoices(&acme)).await.unwrap();
    assert!(
        listed
            .into_inner()
            .invoices
            .iter()
            .any(|invoice| invoice.id == acme_invoice)
    );
    invoices
        .get_invoice(GetInvoiceRequest {
            invoice_id: acme_invoice.clone(),
        })
        .await
        .unwrap();
    invoices
        .preview_upcoming_invoice(PreviewUpcomingInvoiceRequest {
            subscription_id: acme_subscription,
        })
        .await
        .unwrap();
    credits.get_credit_balance(balance(&acme)).await.unwrap();

    // Another customer, or every customer: PERMISSION_DENIED.
    let refused = |result: Result<_, tonic::Status>, what: &str| {
        let status = result.err().unwrap_or_else(|| panic!("{what} answered"));
        assert_eq!(status.code(), Code::PermissionDenied, "{what}: {status:?}");
    };
    refused(
        customers.get_customer(by_id(&globex)).await.map(drop),
        "GetCustomer of another",
    );
    let other_external = GetCustomerRequest {
        lookup: Some(get_customer_request::Lookup::ExternalId("globex".into())),
    };
    refused(
        customers.get_customer(other_external).await.map(drop),
        "GetCustomer by another's external id",
    );
    for customer in [globex.as_str(), ""] {
        refused(
            subscriptions
                .list_subscriptions(list_subscriptions(customer))
                .await
                .map(drop),
            "ListSubscriptions",
        );
        refused(
            invoices
                .list_invoices(list_invoices(customer))
                .await
                .map(drop),
            "ListInvoices",
        );
        refused(
            credits
                .get_credit_balance(balance(customer))
                .await
                .map(drop),
            "GetCreditBalance",
        );
    }
    refused(
        invoices
            .get_invoice(GetInvoiceRequest {
                invoice_id: globex_invoice.clone(),
            })
            .await
            .map(drop),
        "GetInvoice of another",
    );
    refused(
        invoices
            .preview_upcoming_invoice(PreviewUpcomingInvoiceRequest {
                subscription_id: globex_subscription,
            })
            .await
            .map(drop),
        "PreviewUpcomingInvoice of another",
    );
    // Outside the portal's calls, even for its own customer.
    refused(
        customers
            .list_customers(ListCustomersRequest::default())
            .await
            .map(drop),
        "ListCustomers",
    );
    refused(
        invoices
            .void_invoice(VoidInvoiceRequest {
                idempotency_key: "portal-void".into(),
                invoice_id: acme_invoice,
                reason: "no".into(),
            })
            .await
            .map(drop),
        "VoidInvoice",
    );
}
