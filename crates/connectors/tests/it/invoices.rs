//! Orb's invoices read through the biller boundary: every page of Orb's
//! cursor, the period and customer asked, amounts exactly as Orb wrote them.

use std::str::FromStr as _;

use rust_decimal::Decimal;
use serde_json::{Value, json};
use tally_connectors::ExternalBiller;
use tally_connectors::biller::{BillerCustomer, InvoiceQuery};
use tally_connectors::orb::Jitter;
use wiremock::ResponseTemplate;

use crate::billing_fake::{BillingHarness, fixture};
use crate::support::at;

/// An invoice of the Orb customer `XuxCbt7x9L82yyeF` (external id `acme`).
pub fn invoice(n: u32, subtotal: &str, discount: &str, minimum: &str, total: &str) -> Value {
    let mut invoice = fixture("invoice");
    invoice["id"] = json!(format!("inv_orb_{n}"));
    invoice["invoice_number"] = json!(format!("ACME-{n:05}"));
    invoice["invoice_date"] = json!(format!("2026-11-{:02}T00:00:00+00:00", n + 1));
    invoice["subtotal"] = json!(subtotal);
    invoice["total"] = json!(total);
    invoice["amount_due"] = json!(total);
    let line = &mut invoice["line_items"][0];
    line["subtotal"] = json!(subtotal);
    line["adjusted_subtotal"] = json!(total);
    line["amount"] = json!(total);
    line["adjustments"][0]["amount"] = json!(discount);
    if minimum != "0" {
        let mut adjustment = line["adjustments"][0].clone();
        adjustment["id"] = json!("adj_minimum");
        adjustment["adjustment_type"] = json!("minimum");
        adjustment["amount"] = json!(minimum);
        adjustment["minimum_amount"] = json!("50.00");
        adjustment["item_id"] = json!("item_api_calls");
        adjustment
            .as_object_mut()
            .unwrap()
            .remove("percentage_discount");
        line["adjustments"].as_array_mut().unwrap().push(adjustment);
    }
    invoice
}

/// Five invoices over three pages of two.
pub fn five_invoices() -> Vec<Value> {
    vec![
        invoice(1, "200.00", "-20.00", "0", "180.00"),
        invoice(2, "0.10", "0.00", "0", "0.10"),
        invoice(
            3,
            "12345678901234.5678",
            "-0.0001",
            "0",
            "12345678901234.5677",
        ),
        invoice(4, "10.00", "-1.00", "41.00", "50.00"),
        invoice(5, "33.33", "-3.333", "0", "29.997"),
    ]
}

fn d(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap()
}

#[tokio::test]
async fn a_customers_invoices_are_read_over_three_pages_with_exact_amounts() {
    let h = BillingHarness::open(Jitter::None).await;
    h.fake.0.lock().unwrap().invoices = five_invoices();
    let query = InvoiceQuery {
        customer: BillerCustomer::Id("XuxCbt7x9L82yyeF".into()),
        from: at("2026-11-01T00:00:00Z"),
        to: at("2026-12-01T00:00:00Z"),
    };
    let invoices = h.client.list_invoices(&query).await.unwrap();

    let ids: Vec<&str> = invoices.iter().map(|invoice| invoice.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "inv_orb_1",
            "inv_orb_2",
            "inv_orb_3",
            "inv_orb_4",
            "inv_orb_5"
        ]
    );
    let amounts: Vec<(Decimal, Decimal, Decimal, Decimal, Decimal)> = invoices
        .iter()
        .map(|i| (i.subtotal, i.discounts, i.minimums, i.total, i.amount_due))
        .collect();
    assert_eq!(
        amounts,
        [
            (d("200.00"), d("-20.00"), d("0"), d("180.00"), d("180.00")),
            (d("0.10"), d("0.00"), d("0"), d("0.10"), d("0.10")),
            (
                d("12345678901234.5678"),
                d("-0.0001"),
                d("0"),
                d("12345678901234.5677"),
                d("12345678901234.5677")
            ),
            (d("10.00"), d("-1.00"), d("41.00"), d("50.00"), d("50.00")),
            (d("33.33"), d("-3.333"), d("0"), d("29.997"), d("29.997")),
        ]
    );
    // Exact to the written scale, not just equal in value.
    assert_eq!(invoices[1].subtotal.to_string(), "0.10");
    assert_eq!(invoices[2].total.to_string(), "12345678901234.5677");
    let line = &invoices[0].lines[0];
    assert_eq!(
        (line.name.as_str(), line.price_id.as_str(), line.quantity),
        ("API calls", "price_api_calls", d("100000"))
    );

    let requests = h.orb.received_requests().await.unwrap();
    let queries: Vec<String> = requests
        .iter()
        .map(|request| request.url.query().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(queries.len(), 3, "three pages: {queries:?}");
    let base = "customer_id=XuxCbt7x9L82yyeF&invoice_date%5Bgte%5D=2026-11-01T00%3A00%3A00Z\
                &invoice_date%5Blt%5D=2026-12-01T00%3A00%3A00Z&limit=100";
    assert_eq!(
        queries,
        [
            base.to_owned(),
            format!("{base}&cursor=2"),
            format!("{base}&cursor=4")
        ]
    );
}

#[tokio::test]
async fn a_page_that_fails_is_retried_and_the_listing_goes_on() {
    let h = BillingHarness::open(Jitter::None).await;
    h.fake.0.lock().unwrap().invoices = five_invoices();
    // The fake's script applies to POSTs; fail a page with a mock mounted first.
    wiremock::Mock::given(wiremock::matchers::method("GET"))
        .and(wiremock::matchers::query_param("cursor", "2"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&h.orb)
        .await;
    let invoices = h
        .client
        .list_invoices(&InvoiceQuery {
            customer: BillerCustomer::ExternalId("acme".into()),
            from: at("2026-11-01T00:00:00Z"),
            to: at("2026-12-01T00:00:00Z"),
        })
        .await
        .unwrap();
    assert_eq!(invoices.len(), 5);
    assert_eq!(h.orb.received_requests().await.unwrap().len(), 5);
}
