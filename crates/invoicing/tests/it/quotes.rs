//! Quotes (`QuoteService`): the preview in exact cents, gapless numbers per year, a
//! revision chain, accepting twice (one subscription), an expired quote refused, and an
//! amendment that co-terminates with the current term. Real PostgreSQL, rating
//! in-process, a manual clock.

use chrono::{DateTime, Utc};
use rust_decimal_macros::dec;
use tally_audit::{Filter, Schema};
use tally_domain::ids::{ChargeCode, PlanId};
use tally_domain::money::{Currency, Money};
use tally_domain::subscription::PlanRef;
use tally_domain::terms::{
    Discount, DiscountDuration, DiscountTarget, DiscountValue, OverridePrice, PriceOverride,
    RampPhase, SubscriptionTermsSpec, TermSet,
};
use tally_proto::convert::terms::subscription_terms_value;
use tally_proto::invoicing::quote_service_client::QuoteServiceClient;
use tally_proto::invoicing::{
    AcceptQuoteRequest, CancelQuoteRequest, CreateQuoteRequest, FinalizeQuoteRequest,
    GetQuoteRequest, ListQuotesRequest, ListSubscriptionsRequest, NewCustomer, Quote, QuoteContent,
    QuoteStatus, quote_content,
};
use tally_proto::rating::BillingTiming;
use tonic::transport::Channel;

use crate::support::{Harness, PlanSpec, at, config, harness, ts};

type Quotes = QuoteServiceClient<Channel>;

fn usd(amount: rust_decimal::Decimal) -> Money {
    Money::new(amount, Currency::USD)
}

/// A monthly plan: a 1 000.00 platform fee in advance, API calls at 0.01, a 2 000.00
/// minimum commitment.
async fn ai_plan(h: &mut Harness, code: &str) -> String {
    h.plan(
        code,
        PlanSpec {
            fee: Some(("1000.00", BillingTiming::InAdvance)),
            per_call: Some("0.01"),
            minimum: Some("2000.00"),
            trial_days: 0,
        },
    )
    .await
}

/// The negotiated deal: months 1–3 at a 5 000.00 minimum with the platform fee at
/// 600.00 and 20 % off it, months 4–12 at a 20 000.00 minimum.
fn ramp_terms(start: DateTime<Utc>) -> tally_proto::invoicing::SubscriptionTerms {
    let platform = ChargeCode::parse("platform").unwrap();
    let plan = PlanRef {
        plan: PlanId::parse("plan_any").unwrap(),
        version: 1,
    };
    let mut spec = SubscriptionTermsSpec::list_price(plan, Currency::USD, start);
    spec.base.discounts = vec![Discount {
        name: "Launch discount".into(),
        value: DiscountValue::Percentage { percent: dec!(20) },
        applies_to: DiscountTarget::Charges {
            charges: vec![platform.clone()],
        },
        starts_at: None,
        duration: DiscountDuration::Periods { count: 3 },
    }];
    let months_4 = start + chrono::Months::new(3);
    spec.ramp = vec![
        RampPhase {
            name: "Months 1–3".into(),
            starts_at: start,
            ends_at: Some(months_4),
            terms: TermSet {
                overrides: vec![PriceOverride {
                    charge: platform,
                    price: OverridePrice::UnitPrice {
                        unit_price: dec!(600),
                    },
                    starts_at: None,
                    ends_at: None,
                }],
                minimum: Some(usd(dec!(5000))),
                ..TermSet::default()
            },
        },
        RampPhase {
            name: "Months 4–12".into(),
            starts_at: months_4,
            ends_at: None,
            terms: TermSet {
                minimum: Some(usd(dec!(20000))),
                ..TermSet::default()
            },
        },
    ];
    subscription_terms_value(&spec)
}

fn new_customer(external_id: &str) -> Option<quote_content::Party> {
    Some(quote_content::Party::NewCustomer(NewCustomer {
        external_id: external_id.into(),
        name: format!("{external_id}, Inc."),
        billing_email: format!("ap@{external_id}.example"),
    }))
}

fn content(
    party: Option<quote_content::Party>,
    plan: &str,
    start: DateTime<Utc>,
    expires: DateTime<Utc>,
) -> QuoteContent {
    QuoteContent {
        party,
        plan_version_id: plan.into(),
        terms: None,
        start_at: Some(ts(start)),
        term_months: 12,
        expires_at: Some(ts(expires)),
        ..Default::default()
    }
}

async fn create(quotes: &mut Quotes, content: QuoteContent, from: &str) -> Quote {
    quotes
        .create_quote(CreateQuoteRequest {
            idempotency_key: format!("create-{}", uuid_like()),
            quote: Some(content),
            from_quote_id: from.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .quote
        .unwrap()
}

async fn finalize(quotes: &mut Quotes, id: &str) -> Result<Quote, tonic::Status> {
    Ok(quotes
        .finalize_quote(FinalizeQuoteRequest {
            idempotency_key: format!("finalize-{id}"),
            quote_id: id.into(),
        })
        .await?
        .into_inner()
        .quote
        .unwrap())
}

async fn accept(
    quotes: &mut Quotes,
    id: &str,
    key: &str,
    (signed_by, signed_at): (&str, DateTime<Utc>),
) -> Result<(Quote, bool), tonic::Status> {
    let answer = quotes
        .accept_quote(AcceptQuoteRequest {
            idempotency_key: key.into(),
            quote_id: id.into(),
            signed_by: signed_by.into(),
            signed_at: Some(ts(signed_at)),
            document_sha256: "ab".repeat(32),
        })
        .await?
        .into_inner();
    Ok((answer.quote.unwrap(), answer.accepted_now))
}

fn uuid_like() -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    u128::from(NEXT.fetch_add(1, Ordering::Relaxed))
}

fn status(quote: &Quote) -> QuoteStatus {
    QuoteStatus::try_from(quote.status).unwrap()
}

fn amount(money: Option<&tally_proto::common::Money>) -> String {
    money.map(|money| money.amount.clone()).unwrap_or_default()
}

async fn audited(h: &Harness, action: &str) -> usize {
    tally_audit::list(
        &h.db.pool,
        &[Schema::Invoicing],
        &Filter::default(),
        None,
        1000,
    )
    .await
    .unwrap()
    .0
    .iter()
    .filter(|entry| entry.action == action)
    .count()
}

#[tokio::test]
async fn the_preview_is_exact_and_numbers_are_gapless_per_year() {
    let mut h = harness(at(2026, 12, 1), config(0)).await;
    let mut quotes = h.quotes().await;
    let plan = ai_plan(&mut h, "ai").await;
    let start = at(2027, 1, 1);
    let mut offer = content(new_customer("acme-ai"), &plan, start, at(2026, 12, 24));
    offer.terms = Some(ramp_terms(start));
    let first = create(&mut quotes, offer.clone(), "").await;
    assert_eq!(status(&first), QuoteStatus::Draft);
    assert_eq!(first.number, "");
    assert_eq!(first.ends_at, Some(ts(at(2028, 1, 1))));
    let preview = first.preview.clone().unwrap();
    // 600.00 − 20 % + the 5 000.00 minimum for months 1–3; 1 000.00 + 20 000.00 after.
    let periods: Vec<String> = preview
        .periods
        .iter()
        .map(|period| amount(period.amount.as_ref()))
        .collect();
    let mut expected = vec!["5480.00".to_owned(); 3];
    expected.extend(vec!["21000.00".to_owned(); 9]);
    assert_eq!(periods, expected);
    assert_eq!(preview.periods[0].phase, "Months 1–3");
    assert_eq!(amount(preview.first_period.as_ref()), "5480.00");
    assert_eq!(preview.recurring, None);
    assert_eq!(amount(preview.total_contract_value.as_ref()), "205440.00");

    // Numbers: given at finalization, gapless per year; a canceled draft takes none, a
    // revision keeps its chain's.
    let canceled = create(&mut quotes, offer.clone(), "").await;
    quotes
        .cancel_quote(CancelQuoteRequest {
            idempotency_key: "cancel-draft".into(),
            quote_id: canceled.id.clone(),
            reason: "duplicate".into(),
        })
        .await
        .unwrap();
    let second = create(&mut quotes, offer.clone(), "").await;
    assert_eq!(
        finalize(&mut quotes, &first.id).await.unwrap().number,
        "Q-2026-000001"
    );
    assert_eq!(
        finalize(&mut quotes, &second.id).await.unwrap().number,
        "Q-2026-000002"
    );
    let revision = create(&mut quotes, offer.clone(), &first.id).await;
    assert_eq!(
        (revision.number.as_str(), revision.revision),
        ("Q-2026-000001", 2)
    );
    assert_eq!(
        finalize(&mut quotes, &revision.id).await.unwrap().number,
        "Q-2026-000001"
    );
    h.clock.set(at(2027, 1, 2)).unwrap();
    let mut next_year = content(
        new_customer("beta-ai"),
        &plan,
        at(2027, 2, 1),
        at(2027, 1, 20),
    );
    next_year.term_months = 3;
    let third = create(&mut quotes, next_year, "").await;
    assert_eq!(
        finalize(&mut quotes, &third.id).await.unwrap().number,
        "Q-2027-000001"
    );
    // A finalize replayed with its key answers the same.
    assert_eq!(
        finalize(&mut quotes, &third.id).await.unwrap().number,
        "Q-2027-000001"
    );
}

#[tokio::test]
async fn accepting_twice_makes_one_subscription() {
    let mut h = harness(at(2026, 12, 1), config(0)).await;
    let mut quotes = h.quotes().await;
    let plan = ai_plan(&mut h, "ai").await;
    let start = at(2027, 1, 1);
    let mut offer = content(new_customer("acme-ai"), &plan, start, at(2026, 12, 24));
    offer.terms = Some(ramp_terms(start));
    let quote = create(&mut quotes, offer, "").await;
    let draft = accept(
        &mut quotes,
        &quote.id,
        "accept-draft",
        ("Jane Doe", at(2026, 12, 1)),
    )
    .await;
    assert_eq!(draft.unwrap_err().code(), tonic::Code::FailedPrecondition);
    finalize(&mut quotes, &quote.id).await.unwrap();
    let signature = ("Jane Doe <jane@acme-ai.example>", at(2026, 12, 1));
    let (accepted, now) = accept(&mut quotes, &quote.id, "accept-1", signature)
        .await
        .unwrap();
    assert!(now);
    assert_eq!(status(&accepted), QuoteStatus::Accepted);
    assert!(accepted.subscription_id.starts_with("sub_"));
    assert!(accepted.customer_id.starts_with("cus_"));
    assert_eq!(accepted.document_sha256, "ab".repeat(32));
    // Again, under another key (a CPQ tool's retry after a lost answer): the same result.
    let (again, now) = accept(&mut quotes, &quote.id, "accept-2", signature)
        .await
        .unwrap();
    assert!(!now);
    assert_eq!(again.subscription_id, accepted.subscription_id);
    // Under the first key: the first answer.
    let (replayed, _) = accept(&mut quotes, &quote.id, "accept-1", signature)
        .await
        .unwrap();
    assert_eq!(replayed.subscription_id, accepted.subscription_id);
    // Another signature is refused.
    let other = accept(
        &mut quotes,
        &quote.id,
        "accept-3",
        ("Someone Else", at(2026, 12, 1)),
    )
    .await;
    let refused = other.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("already accepted"),
        "{refused:?}"
    );

    let subscriptions = h
        .subscriptions
        .list_subscriptions(ListSubscriptionsRequest {
            customer_id: accepted.customer_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .subscriptions;
    assert_eq!(subscriptions.len(), 1);
    let subscription = &subscriptions[0];
    assert_eq!(subscription.id, accepted.subscription_id);
    assert_eq!(subscription.plan_version_id, plan);
    assert_eq!(subscription.start_at, Some(ts(start)));
    assert_eq!(subscription.metadata.get("quote_id"), Some(&quote.id));
    // The subscription carries the quote's terms.
    let terms = subscription.terms.clone().expect("the quote's terms");
    assert_eq!(terms.ramp.len(), 2);
    assert_eq!(terms.ramp[0].name, "Months 1–3");
    // Amending a contract with terms is not supported yet: refused when quoted.
    let mut amendment = content(
        Some(quote_content::Party::CustomerId(
            accepted.customer_id.clone(),
        )),
        &plan,
        at(2027, 4, 1),
        at(2026, 12, 24),
    );
    amendment.amends_subscription_id = accepted.subscription_id.clone();
    let refused = quotes
        .create_quote(CreateQuoteRequest {
            idempotency_key: "amend-terms".into(),
            quote: Some(amendment),
            from_quote_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(refused.message().contains("contract terms"), "{refused:?}");
    assert_eq!(audited(&h, "quote.accepted").await, 1);
    assert_eq!(audited(&h, "customer.created").await, 1);
    assert_eq!(audited(&h, "subscription.created").await, 1);
}

#[tokio::test]
async fn an_expired_quote_is_refused_and_a_revision_renews_it() {
    let mut h = harness(at(2026, 12, 1), config(0)).await;
    let mut quotes = h.quotes().await;
    let plan = ai_plan(&mut h, "ai").await;
    let customer = h.customer("acme").await;
    let party = Some(quote_content::Party::CustomerId(customer.clone()));
    let quote = create(
        &mut quotes,
        content(party.clone(), &plan, at(2027, 1, 1), at(2026, 12, 8)),
        "",
    )
    .await;
    finalize(&mut quotes, &quote.id).await.unwrap();
    h.clock.set(at(2026, 12, 8)).unwrap();
    let refused = accept(
        &mut quotes,
        &quote.id,
        "late",
        ("Jane Doe", at(2026, 12, 7)),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused
            .message()
            .contains("expired at 2026-12-08 00:00:00 UTC"),
        "{refused:?}"
    );
    let read = quotes
        .get_quote(GetQuoteRequest {
            quote_id: quote.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .quote
        .unwrap();
    assert_eq!(status(&read), QuoteStatus::Expired);
    let expired = quotes
        .list_quotes(ListQuotesRequest {
            customer_id: customer.clone(),
            statuses: vec![QuoteStatus::Expired as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .quotes;
    assert_eq!(expired.len(), 1);
    assert_eq!(audited(&h, "quote.accepted").await, 0);

    // A revision with a later expiry is the way on.
    let renewed = create(
        &mut quotes,
        content(party, &plan, at(2027, 1, 1), at(2026, 12, 20)),
        &quote.id,
    )
    .await;
    assert_eq!(renewed.revision, 2);
    finalize(&mut quotes, &renewed.id).await.unwrap();
    let (accepted, _) = accept(
        &mut quotes,
        &renewed.id,
        "renewed",
        ("Jane Doe", at(2026, 12, 8)),
    )
    .await
    .unwrap();
    assert_eq!(accepted.customer_id, customer);
}

#[tokio::test]
async fn a_revision_chain_keeps_one_open_revision_and_is_accepted_once() {
    let mut h = harness(at(2026, 12, 1), config(0)).await;
    let mut quotes = h.quotes().await;
    let plan = ai_plan(&mut h, "ai").await;
    let offer = content(
        new_customer("acme-ai"),
        &plan,
        at(2027, 1, 1),
        at(2026, 12, 24),
    );
    let first = create(&mut quotes, offer.clone(), "").await;
    finalize(&mut quotes, &first.id).await.unwrap();
    let second = create(&mut quotes, offer.clone(), &first.id).await;
    assert_eq!(
        (second.revision, second.from_quote_id.as_str()),
        (2, first.id.as_str())
    );
    // The first stays open until the revision is finalized, then it is superseded.
    let third = create(&mut quotes, offer.clone(), &second.id).await;
    assert_eq!(third.revision, 3);
    finalize(&mut quotes, &third.id).await.unwrap();
    let read = |id: String| {
        let mut quotes = quotes.clone();
        async move {
            quotes
                .get_quote(GetQuoteRequest { quote_id: id })
                .await
                .unwrap()
                .into_inner()
                .quote
                .unwrap()
        }
    };
    let superseded = read(first.id.clone()).await;
    assert_eq!(status(&superseded), QuoteStatus::Canceled);
    assert_eq!(superseded.status_reason, "superseded by revision 3");
    assert_eq!(status(&read(second.id.clone()).await), QuoteStatus::Draft);
    let signature = ("Jane Doe", at(2026, 12, 1));
    let refused = accept(&mut quotes, &first.id, "first", signature)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    accept(&mut quotes, &third.id, "third", signature)
        .await
        .unwrap();
    // Once accepted, the chain takes no more revisions (a change is an amendment).
    let status = quotes
        .create_quote(CreateQuoteRequest {
            idempotency_key: "after".into(),
            quote: Some(offer),
            from_quote_id: third.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
}

#[tokio::test]
async fn an_amendment_co_terminates_with_the_current_term() {
    let mut h = harness(at(2026, 12, 1), config(0)).await;
    let mut quotes = h.quotes().await;
    let plan = ai_plan(&mut h, "ai").await;
    let bigger = h
        .plan(
            "ai_plus",
            PlanSpec {
                fee: Some(("3000.00", BillingTiming::InAdvance)),
                per_call: Some("0.008"),
                minimum: None,
                trial_days: 0,
            },
        )
        .await;
    let offer = content(
        new_customer("acme-ai"),
        &plan,
        at(2027, 1, 1),
        at(2026, 12, 24),
    );
    let quote = create(&mut quotes, offer, "").await;
    finalize(&mut quotes, &quote.id).await.unwrap();
    let (accepted, _) = accept(
        &mut quotes,
        &quote.id,
        "sign",
        ("Jane Doe", at(2026, 12, 1)),
    )
    .await
    .unwrap();
    let party = Some(quote_content::Party::CustomerId(
        accepted.customer_id.clone(),
    ));

    // From 1 April, for "24 months": it ends with the contract, on 1 January 2028.
    let mut amendment = content(party.clone(), &bigger, at(2027, 4, 1), at(2026, 12, 24));
    amendment.amends_subscription_id = accepted.subscription_id.clone();
    amendment.term_months = 24;
    let amended = create(&mut quotes, amendment.clone(), "").await;
    assert_eq!(amended.ends_at, Some(ts(at(2028, 1, 1))));
    let preview = amended.preview.clone().unwrap();
    assert_eq!(preview.periods.len(), 9);
    assert_eq!(amount(preview.recurring.as_ref()), "3000.00");
    assert_eq!(amount(preview.total_contract_value.as_ref()), "27000.00");

    // Inside a billing period: refused.
    let mut mid_period = amendment.clone();
    mid_period.start_at = Some(ts(at(2027, 4, 15)));
    let refused = quotes
        .create_quote(CreateQuoteRequest {
            idempotency_key: "mid".into(),
            quote: Some(mid_period),
            from_quote_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);

    finalize(&mut quotes, &amended.id).await.unwrap();
    let (done, now) = accept(
        &mut quotes,
        &amended.id,
        "amend",
        ("Jane Doe", at(2026, 12, 1)),
    )
    .await
    .unwrap();
    assert!(now);
    assert_eq!(done.subscription_id, accepted.subscription_id);
    let subscription = h.subscription(&accepted.subscription_id).await;
    let phases: Vec<(String, Option<prost_types::Timestamp>)> = subscription
        .phases
        .iter()
        .map(|phase| (phase.plan_version_id.clone(), phase.start_at))
        .collect();
    assert_eq!(
        phases,
        [
            (plan.clone(), Some(ts(at(2027, 1, 1)))),
            (bigger.clone(), Some(ts(at(2027, 4, 1))))
        ]
    );
    // A second amendment co-terminates with the same end.
    amendment.start_at = Some(ts(at(2027, 7, 1)));
    let later = create(&mut quotes, amendment, "").await;
    assert_eq!(later.ends_at, Some(ts(at(2028, 1, 1))));
    assert_eq!(audited(&h, "subscription.plan_changed").await, 1);
}

#[tokio::test]
async fn bad_input_names_its_field() {
    let mut h = harness(at(2026, 12, 1), config(0)).await;
    let mut quotes = h.quotes().await;
    let plan = ai_plan(&mut h, "ai").await;
    let cases: Vec<(QuoteContent, &str)> = vec![
        (
            QuoteContent {
                term_months: 121,
                ..content(new_customer("a"), &plan, at(2027, 1, 1), at(2026, 12, 24))
            },
            "quote.term_months",
        ),
        (
            content(
                Some(quote_content::Party::CustomerId("sub_1".into())),
                &plan,
                at(2027, 1, 1),
                at(2026, 12, 24),
            ),
            "quote.customer_id",
        ),
        (
            content(new_customer("a"), &plan, at(2027, 1, 1), at(2026, 11, 24)),
            "quote.expires_at",
        ),
    ];
    for (quote, field) in cases {
        let status = quotes
            .create_quote(CreateQuoteRequest {
                idempotency_key: format!("bad-{field}"),
                quote: Some(quote),
                from_quote_id: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(
            tally_testkit::only_violation(&status).0,
            field,
            "{status:?}"
        );
    }
}
