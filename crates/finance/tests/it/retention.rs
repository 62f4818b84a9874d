//! Cohort retention through `AnalyticsService.GetRetention`, on the MRR
//! scenario of `mrr.rs` (every customer a January cohort member).
//!
//! MRR at the end of January (just before 1 Feb) and of February:
//!
//! | customer | January | February | min |
//! |---|---:|---:|---:|
//! | cus_new | 50 | 50 | 50 |
//! | cus_upgrade | 60 | 60 | 60 |
//! | cus_downgrade | 60 | 30 | 30 |
//! | cus_churn | 40 | 0 | 0 |
//! | cus_react | 25 | 25 | 25 |
//! | cus_yearly | 100 | 100 | 100 |
//! | cus_trial | 31 | 31 | 31 |
//! | cus_paused (paused 20 Jan – 10 Feb) | 0 | 45 | 0 |
//! | **total** | **366** | **341** | **296** |

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tally_proto::finance::GetRetentionRequest;
use tally_proto::finance::analytics_service_server::AnalyticsService;

use crate::mrr::in_order;
use crate::mrr_support::{amount, day, instant};
use crate::support::range;

fn request(cohorts: (&str, &str), as_of: &str) -> GetRetentionRequest {
    GetRetentionRequest {
        currency: "USD".into(),
        cohorts: range(&day(cohorts.0), &day(cohorts.1)),
        as_of: instant(as_of),
    }
}

fn fraction(value: Option<&tally_proto::common::Decimal>) -> Option<Decimal> {
    value.map(|value| value.value.parse().unwrap())
}

#[tokio::test]
async fn a_january_cohort_measured_at_the_ends_of_january_and_february() {
    let analytics = in_order().await;
    let response = analytics
        .api
        .get_retention(tonic::Request::new(request(("01-01", "02-01"), "03-01")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.currency, "USD");
    assert_eq!(response.cohorts.len(), 1);
    let january = &response.cohorts[0];
    assert_eq!(january.month, instant("01-01"));
    assert_eq!(january.customers, 8);
    assert_eq!(amount(january.starting_mrr.as_ref()), dec!(366));
    let measured: Vec<_> = january
        .months
        .iter()
        .map(|month| {
            (
                month.offset,
                month.month,
                month.retained_customers,
                amount(month.mrr.as_ref()),
                fraction(month.net_retention.as_ref()),
                fraction(month.gross_retention.as_ref()),
            )
        })
        .collect();
    assert_eq!(
        measured,
        vec![
            (
                0,
                instant("01-01"),
                7,
                dec!(366),
                Some(dec!(1)),
                Some(dec!(1))
            ),
            (
                1,
                instant("02-01"),
                7,
                dec!(341),
                Some((dec!(341) / dec!(366)).normalize()),
                Some((dec!(296) / dec!(366)).normalize()),
            ),
        ],
        "March has not ended by 1 March"
    );
}

#[tokio::test]
async fn cohorts_outside_the_range_or_not_yet_ended_are_not_listed() {
    let analytics = in_order().await;
    for (cohorts, as_of) in [
        // February's cohort is empty (every customer first paid in January).
        (("02-01", "03-01"), "06-01"),
        // January has not ended on 31 January.
        (("01-01", "02-01"), "01-31"),
        // A range starting mid-January begins with February's cohort.
        (("01-15", "03-01"), "06-01"),
    ] {
        let response = analytics
            .api
            .get_retention(tonic::Request::new(request(cohorts, as_of)))
            .await
            .unwrap()
            .into_inner();
        assert!(
            response.cohorts.is_empty(),
            "{cohorts:?} at {as_of}: {response:?}"
        );
    }
}

#[tokio::test]
async fn a_request_without_cohorts_names_the_field() {
    let analytics = in_order().await;
    let status = analytics
        .api
        .get_retention(tonic::Request::new(GetRetentionRequest {
            currency: "USD".into(),
            cohorts: None,
            as_of: None,
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with("cohorts"),
        "{}",
        status.message()
    );
}
