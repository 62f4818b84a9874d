//! `GetRevenue`: revenue recognised in a month by product line, meter and
//! plan, exact to the cent, tying out to the trial balance.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use tally_finance::AnalyticsApi;
use tally_proto::finance::GetRevenueRequest;
use tally_proto::finance::analytics_service_server::AnalyticsService;
use tally_proto::invoicing::InvoiceLineKind;

use crate::mrr_support::{finalized, recurring};
use crate::support::{Books, at, credit_note, invoice, line, range, usage_line, voided};

/// `GetRevenue` over `[from, to)`: (total, by product line, by meter, by plan).
async fn revenue(
    api: &AnalyticsApi,
    from: &str,
    to: &str,
) -> (
    String,
    Vec<(String, String)>,
    Vec<(String, String)>,
    Vec<(String, String)>,
) {
    let response = api
        .get_revenue(tonic::Request::new(GetRevenueRequest {
            currency: "USD".into(),
            range: range(from, to),
        }))
        .await
        .unwrap()
        .into_inner();
    let pairs = |amounts: Vec<tally_proto::finance::RevenueAmount>| {
        amounts
            .into_iter()
            .map(|amount| (amount.key, amount.amount.unwrap().amount))
            .collect::<Vec<_>>()
    };
    (
        response.total.unwrap().amount,
        pairs(response.by_product_line),
        pairs(response.by_meter),
        pairs(response.by_plan),
    )
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(key, amount)| ((*key).to_owned(), (*amount).to_owned()))
        .collect()
}

/// The revenue accounts' balances summed (contra-revenue is negative).
fn revenue_balance(balances: &BTreeMap<String, Decimal>) -> Decimal {
    balances
        .iter()
        .filter(|(code, _)| code.starts_with('4'))
        .map(|(_, balance)| *balance)
        .sum()
}

#[tokio::test]
async fn revenue_of_a_month_by_product_line_meter_and_plan() {
    let books = Books::open("2026-01-01T00:05:00Z").await;
    let api = AnalyticsApi::new(books.database.pool.clone(), books.clock.clone());

    // Customer B: a yearly 365.00 plan from 1 January (31.00 in January,
    // 28.00 in February), December's usage (12.34) and a one-off 5.00.
    let extras = invoice(
        "inv_b",
        "cus_b",
        &[
            usage_line(
                "il_b_tokens",
                "tokens",
                "12.34",
                ("2025-12-01T00:00:00Z", "2026-01-01T00:00:00Z"),
            ),
            line(
                "il_b_setup",
                InvoiceLineKind::Adjustment,
                "5.00",
                ("2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"),
            ),
        ],
    )
    .lines;
    let mut lines = vec![recurring(
        "il_b_fee",
        "pv_team",
        "365.00",
        ("01-01", "2027-01-01T00:00:00Z"),
    )];
    lines.extend(extras);
    let b = finalized("inv_b", "cus_b", "sub_b", lines, "2026-01-01T00:05:00Z");
    // Customer C: 31.00 for January, voided after ten days recognised.
    let c = finalized(
        "inv_c",
        "cus_c",
        "sub_c",
        vec![recurring("il_c_fee", "pv_pro", "31.00", ("01-01", "02-01"))],
        "2026-01-01T00:05:00Z",
    );
    for event in [&b, &c] {
        assert!(books.invoices.apply(&event.event_id, event).await.unwrap());
    }
    books.recognise("2026-01-11T00:00:00Z").await;
    let void = voided(c.invoice.clone().unwrap(), "2026-01-11T00:00:00Z");
    assert!(books.invoices.apply(&void.event_id, &void).await.unwrap());

    // Customer A: Stripe's example, 31.00 a month from 15 January (17.00
    // recognised in January), and a 3.00 credit note on 20 January.
    books.recognise("2026-01-15T00:05:00Z").await;
    let a = finalized(
        "inv_a",
        "cus_a",
        "sub_a",
        vec![recurring("il_a_fee", "pv_pro", "31.00", ("01-15", "02-15"))],
        "2026-01-15T00:05:00Z",
    );
    assert!(books.invoices.apply(&a.event_id, &a).await.unwrap());
    books.recognise("2026-01-20T00:00:00Z").await;
    let note = credit_note(
        a.invoice.clone().unwrap(),
        "cn_a",
        "3.00",
        "",
        "2026-01-20T00:00:00Z",
    );
    assert!(books.invoices.apply(&note.event_id, &note).await.unwrap());
    books.recognise("2026-02-01T00:00:00Z").await;

    let january = revenue(&api, "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z").await;
    assert_eq!(
        january,
        (
            "62.34".to_owned(),
            owned(&[
                ("recurring_fees", "48.00"),
                ("one_off", "5.00"),
                ("usage", "12.34"),
                ("contra_revenue", "-3.00"),
            ]),
            owned(&[("tokens", "12.34")]),
            // C's ten days and their reversal cancel under no plan (its fee
            // row went with the void).
            owned(&[("", "14.34"), ("pv_pro", "17.00"), ("pv_team", "31.00")]),
        )
    );
    // It ties out: the revenue accounts' balances at the month's end.
    assert_eq!(
        revenue_balance(&books.balances(Some("2026-02-01T00:00:00Z")).await),
        "62.34".parse::<Decimal>().unwrap()
    );

    books.recognise("2026-03-01T00:00:00Z").await;
    let february = revenue(&api, "2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z").await;
    assert_eq!(
        february,
        (
            "42.00".to_owned(),
            owned(&[("recurring_fees", "42.00")]),
            Vec::new(),
            owned(&[("pv_pro", "14.00"), ("pv_team", "28.00")]),
        )
    );
    let domain = api
        .revenue(
            tally_domain::money::Currency::USD,
            at("2026-01-01T00:00:00Z"),
            at("2026-03-01T00:00:00Z"),
        )
        .await
        .unwrap();
    assert_eq!(domain.total.amount(), "104.34".parse::<Decimal>().unwrap());
}

#[tokio::test]
async fn revenue_needs_a_currency_and_a_range() {
    let books = Books::open("2026-01-01T00:05:00Z").await;
    let api = AnalyticsApi::new(books.database.pool.clone(), books.clock.clone());
    let status = api
        .get_revenue(tonic::Request::new(GetRevenueRequest {
            currency: "USD".into(),
            range: None,
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let status = api
        .get_revenue(tonic::Request::new(GetRevenueRequest {
            currency: String::new(),
            range: range("2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}
