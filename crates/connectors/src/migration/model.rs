//! The billing system of record: its states, the rules of moving between
//! them, and what a parity report is. Pure: no I/O; the service
//! ([`super::Migrations`]) reads what the rules need and stores what they
//! decide.

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;

/// Who bills a customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BillingSystemState {
    /// The external biller bills; Tally may mirror.
    External,
    /// Both compute; Tally's invoices stay drafts, never finalized or collected.
    Shadow,
    /// Tally bills from a period boundary on.
    Cutover,
    /// Back to the external biller before Tally's next invoice date.
    RolledBack,
}

impl BillingSystemState {
    /// The stored (and wire) name.
    pub fn as_str(self) -> &'static str {
        match self {
            BillingSystemState::External => "external",
            BillingSystemState::Shadow => "shadow",
            BillingSystemState::Cutover => "cutover",
            BillingSystemState::RolledBack => "rolled_back",
        }
    }

    /// Reads a stored name; an unknown one is `None` (an error to the caller).
    pub fn parse(name: &str) -> Option<Self> {
        [
            BillingSystemState::External,
            BillingSystemState::Shadow,
            BillingSystemState::Cutover,
            BillingSystemState::RolledBack,
        ]
        .into_iter()
        .find(|state| state.as_str() == name)
    }

    /// Whether Tally finalizes this customer's invoices (only after cutover):
    /// in every other state invoicing keeps them as drafts.
    pub fn tally_bills(self) -> bool {
        matches!(self, BillingSystemState::Cutover)
    }
}

/// A customer's billing system of record as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillingSystem {
    /// `cus_…`.
    pub customer_id: String,
    /// `orb` or `stripe_billing`.
    pub biller: String,
    /// Who bills.
    pub state: BillingSystemState,
    /// The boundary Tally bills from (only in `Cutover`).
    pub cutover_at: Option<DateTime<Utc>>,
    /// One more per change.
    pub version: i64,
    /// When the record was made.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// A billing period of the customer's subscription in Tally, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BillingPeriod {
    /// Its first instant (a boundary).
    pub start: DateTime<Utc>,
    /// The next boundary: Tally's next invoice date.
    pub end: DateTime<Utc>,
}

/// What the cutover rule is configured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CutoverPolicy {
    /// Shadow periods that must have matched, the last ones before the boundary.
    pub matching_periods: u32,
    /// How long after a boundary a cutover still counts as at the boundary.
    pub boundary_tolerance: Duration,
}

impl Default for CutoverPolicy {
    fn default() -> Self {
        Self {
            matching_periods: 2,
            boundary_tolerance: Duration::hours(1),
        }
    }
}

/// One period's parity outcome, as the cutover rule reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeriodOutcome {
    /// The period's start.
    pub start: DateTime<Utc>,
    /// The period's end.
    pub end: DateTime<Utc>,
    /// Every amount compared matched.
    pub matched: bool,
}

/// Why a change of state was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The change does not start from this state.
    #[error("the customer is in {state}, and {action} needs {needs}")]
    WrongState {
        /// Where the customer is.
        state: &'static str,
        /// What was asked.
        action: &'static str,
        /// The states it starts from.
        needs: &'static str,
    },
    /// The customer has no subscription in Tally billing now.
    #[error("the customer has no subscription billing in Tally now: nothing to cut over to")]
    NoPeriod,
    /// Not at a period boundary.
    #[error(
        "not at a period boundary: the period began at {period_start} and cutover is possible until {deadline}; the next boundary is {next_boundary}"
    )]
    NotAtBoundary {
        /// The current period's start.
        period_start: DateTime<Utc>,
        /// The last instant that still counts as the boundary.
        deadline: DateTime<Utc>,
        /// The next boundary.
        next_boundary: DateTime<Utc>,
    },
    /// Fewer than N consecutive matching shadow periods end at the boundary.
    #[error(
        "{matched} of the last {required} shadow periods before {boundary} matched: {detail} (run `tally migrate compare` for each period)"
    )]
    NotEnoughMatchingPeriods {
        /// N.
        required: u32,
        /// How many consecutive matching periods end at the boundary.
        matched: u32,
        /// The boundary.
        boundary: DateTime<Utc>,
        /// The first period that breaks the run, and how.
        detail: String,
    },
    /// Tally's next invoice date has passed since the cutover.
    #[error(
        "Tally has billed since the cutover at {cutover_at}: rollback was possible until {next_invoice_at}"
    )]
    TallyAlreadyBilled {
        /// The cutover boundary.
        cutover_at: DateTime<Utc>,
        /// Tally's first invoice date after it.
        next_invoice_at: DateTime<Utc>,
    },
}

/// Whether a customer in `state` may enter shadow.
pub fn decide_shadow(state: Option<BillingSystemState>) -> Result<(), Refusal> {
    match state {
        None | Some(BillingSystemState::External) | Some(BillingSystemState::RolledBack) => Ok(()),
        Some(state @ (BillingSystemState::Shadow | BillingSystemState::Cutover)) => {
            Err(Refusal::WrongState {
                state: state.as_str(),
                action: "shadow",
                needs: "external or rolled_back",
            })
        }
    }
}

/// Whether a customer in `state` may be cut over at `now`, in `period` (the
/// current period of its subscription in Tally), given its parity outcomes.
/// Answers the boundary Tally bills from: the current period's start.
///
/// The rule: the customer is in shadow; `now` is within the policy's
/// tolerance after the period's start; and the last `matching_periods`
/// outcomes form an unbroken run of matching periods that ends exactly at
/// that boundary.
pub fn decide_cutover(
    state: BillingSystemState,
    now: DateTime<Utc>,
    period: Option<BillingPeriod>,
    outcomes: &[PeriodOutcome],
    policy: CutoverPolicy,
) -> Result<DateTime<Utc>, Refusal> {
    if state != BillingSystemState::Shadow {
        return Err(Refusal::WrongState {
            state: state.as_str(),
            action: "cutover",
            needs: "shadow",
        });
    }
    let period = period.ok_or(Refusal::NoPeriod)?;
    let boundary = period.start;
    let deadline = boundary + policy.boundary_tolerance;
    if now < boundary || now > deadline {
        return Err(Refusal::NotAtBoundary {
            period_start: boundary,
            deadline,
            next_boundary: period.end,
        });
    }
    let mut before: Vec<&PeriodOutcome> = outcomes
        .iter()
        .filter(|outcome| outcome.end <= boundary)
        .collect();
    before.sort_by_key(|outcome| std::cmp::Reverse(outcome.end));
    let mut expected_end = boundary;
    let mut matched = 0_u32;
    let mut detail = String::new();
    for outcome in before.iter().take(policy.matching_periods as usize) {
        if outcome.end != expected_end {
            detail = format!("no report for the period ending {expected_end}");
            break;
        }
        if !outcome.matched {
            detail = format!(
                "the period {} – {} did not match",
                outcome.start, outcome.end
            );
            break;
        }
        matched += 1;
        expected_end = outcome.start;
    }
    if matched >= policy.matching_periods {
        return Ok(boundary);
    }
    if detail.is_empty() {
        detail = format!("no report for the period ending {expected_end}");
    }
    Err(Refusal::NotEnoughMatchingPeriods {
        required: policy.matching_periods,
        matched,
        boundary,
        detail,
    })
}

/// Whether a customer may be rolled back at `now`: from shadow always; from
/// cutover only while `period` (the current one) is the first Tally bills,
/// i.e. before Tally's next invoice date.
pub fn decide_rollback(
    system: &BillingSystem,
    now: DateTime<Utc>,
    period: Option<BillingPeriod>,
) -> Result<(), Refusal> {
    match system.state {
        BillingSystemState::Shadow => Ok(()),
        BillingSystemState::Cutover => {
            let cutover_at = system.cutover_at.unwrap_or(system.updated_at);
            match period {
                Some(period) if period.start <= cutover_at && now < period.end => Ok(()),
                Some(period) => Err(Refusal::TallyAlreadyBilled {
                    cutover_at,
                    next_invoice_at: if period.start <= cutover_at {
                        period.end
                    } else {
                        period.start
                    },
                }),
                // No subscription billing: Tally has nothing to invoice.
                None => Ok(()),
            }
        }
        state @ (BillingSystemState::External | BillingSystemState::RolledBack) => {
            Err(Refusal::WrongState {
                state: state.as_str(),
                action: "rollback",
                needs: "shadow or cutover",
            })
        }
    }
}

/// Tally's invoice for a period, in the terms parity compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TallyInvoice {
    /// `inv_…`.
    pub id: String,
    /// `draft` while shadowed.
    pub status: String,
    /// ISO 4217.
    pub currency: String,
    /// The service period's start.
    pub period_start: DateTime<Utc>,
    /// The service period's end.
    pub period_end: DateTime<Utc>,
    /// Charges before minimums (recurring, usage, proration, adjustments).
    pub subtotal: Decimal,
    /// Discounts (Tally has none today: zero).
    pub discounts: Decimal,
    /// Minimum true-ups.
    pub minimums: Decimal,
    /// Subtotal plus discounts and minimums.
    pub total: Decimal,
    /// What Tally would ask the customer to pay.
    pub amount_due: Decimal,
    /// Charge lines, by the plan's charge key.
    pub lines: Vec<TallyInvoiceLine>,
}

/// One charge line of a [`TallyInvoice`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TallyInvoiceLine {
    /// The plan's charge key (empty for a line of no charge).
    pub charge_key: String,
    /// What the line says.
    pub description: String,
    /// Its amount.
    pub amount: Decimal,
}

/// One amount a parity report compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// `subtotal`, `discounts`, `minimums`, `total`, `amount_due`,
    /// `line:<charge key>` or `invoice`.
    pub subject: String,
    /// Tally's amount (absent when Tally has none).
    pub tally_amount: Option<Decimal>,
    /// The external biller's amount (absent when it has none).
    pub external_amount: Option<Decimal>,
    /// Tally − external, when both exist.
    pub difference: Option<Decimal>,
    /// Both exist and are equal.
    pub matches: bool,
    /// Why, when there is more to say.
    pub note: String,
}

impl Finding {
    /// Compares two amounts.
    pub fn amounts(subject: impl Into<String>, tally: Decimal, external: Decimal) -> Self {
        Self {
            subject: subject.into(),
            tally_amount: Some(tally),
            external_amount: Some(external),
            difference: Some(tally - external),
            matches: tally == external,
            note: String::new(),
        }
    }
}

/// A parity report: one customer, one period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParityReport {
    /// `cus_…`.
    pub customer_id: String,
    /// The period compared.
    pub period: BillingPeriod,
    /// `orb`, `stripe_billing`.
    pub biller: String,
    /// Tally's invoice (empty when none).
    pub tally_invoice_id: String,
    /// The biller's invoice (empty when none).
    pub external_invoice_id: String,
    /// ISO 4217.
    pub currency: String,
    /// Every finding matches.
    pub matched: bool,
    /// Lines of the biller whose price no Tally charge is mapped to.
    pub lines_not_compared: u32,
    /// Every amount compared, in order.
    pub findings: Vec<Finding>,
    /// When.
    pub compared_at: DateTime<Utc>,
}
