//! Plans and plan versions: `CreatePlanRequest` → [`PlanAttributes`], and a
//! version's `PlanVersionSpec` → the domain [`Plan`] with every violation.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rust_decimal::Decimal;
use tally_domain::ids::{ChargeCode, MeterCode, PlanId};
use tally_domain::meter::Meter;
use tally_domain::money::Currency;
use tally_domain::period::BillingInterval;
use tally_domain::plan::{
    AnchorPolicy, BillingTiming, ChargeKind, Plan, PlanCharge, PlanError, PlanSpec,
};
use tally_domain::pricing::{ChargePrice, ChargePriceSpec};
use tally_proto::rating as proto;
use tally_proto::rating::price::Model;
use tally_runtime::idempotency::{fingerprint, request_fingerprint};

use super::price::{self, PriceContext};
use super::values::{
    Bound, MAX_DESCRIPTION_CHARS, MAX_NAME_CHARS, Rule, Violations, code, known_enum, max_length,
    minimum_not_above_maximum, name_and_description, optional_bounded, optional_money,
    required_text,
};

const MAX_CODE_CHARS: usize = 64;
const MAX_METADATA_ENTRIES: usize = 50;
const MAX_METADATA_KEY_CHARS: usize = 40;
const MAX_METADATA_VALUE_CHARS: usize = 500;

/// A validated `CreatePlan` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanAttributes {
    /// Unique code.
    pub code: String,
    /// Display name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Metadata, sorted by key.
    pub metadata: BTreeMap<String, String>,
}

impl PlanAttributes {
    /// SHA-256 of the canonical attributes (metadata in key order).
    pub fn definition_hash(&self) -> Vec<u8> {
        let attributes = [&self.code, &self.name, &self.description];
        let metadata = self.metadata.iter().flat_map(|(key, value)| [key, value]);
        fingerprint(attributes.into_iter().chain(metadata).map(String::as_bytes))
            .as_bytes()
            .to_vec()
    }
}

/// Validates a `CreatePlan` request (paths from the request root).
pub fn plan_attributes(request: &proto::CreatePlanRequest) -> Result<PlanAttributes, Violations> {
    let mut violations = Violations::default();
    plan_code(&request.code, &mut violations);
    name_and_description(&request.name, &request.description, &mut violations);
    let metadata: BTreeMap<String, String> = request
        .metadata
        .iter()
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    if metadata.len() > MAX_METADATA_ENTRIES {
        violations.add(
            "metadata",
            Rule::MaxEntries,
            format!(
                "metadata has {} keys, at most {MAX_METADATA_ENTRIES} are allowed",
                metadata.len()
            ),
        );
    }
    for (key, value) in &metadata {
        if key.is_empty() {
            violations.add(
                "metadata",
                Rule::Required,
                "metadata keys must not be empty",
            );
            continue;
        }
        let field = format!("metadata.{key}");
        if key.chars().count() > MAX_METADATA_KEY_CHARS {
            violations.add(
                &field,
                Rule::MaxLength,
                format!("metadata key {key:?} is longer than {MAX_METADATA_KEY_CHARS} characters"),
            );
        }
        max_length(value, &field, MAX_METADATA_VALUE_CHARS, &mut violations);
    }
    violations.into_result(Some(PlanAttributes {
        code: request.code.clone(),
        name: request.name.clone(),
        description: request.description.clone(),
        metadata,
    }))
}

/// Plan codes: lower snake case, `[a-z][a-z0-9_]*`, 1–64 characters.
fn plan_code(value: &str, violations: &mut Violations) {
    let mut characters = value.chars();
    match characters.next() {
        None => {
            violations.missing::<()>("code", "");
        }
        Some(first) if !first.is_ascii_lowercase() => violations.add(
            "code",
            Rule::InvalidCharacters,
            format!("code {value:?} must start with a lower-case letter"),
        ),
        Some(_) => {
            if let Some(bad) =
                characters.find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
            {
                violations.add(
                    "code",
                    Rule::InvalidCharacters,
                    format!("code {value:?} contains {bad:?}; allowed: a-z, 0-9 and _"),
                );
            }
            max_length(value, "code", MAX_CODE_CHARS, violations);
        }
    }
}

/// Who a version belongs to: what the domain plan carries besides the spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanIdentity {
    /// The plan.
    pub plan_id: PlanId,
    /// The version number.
    pub version: u32,
    /// The plan's display name.
    pub name: String,
}

/// Validates a version's spec against the domain and the existing `meters`
/// (by code) and builds the domain plan. Paths start at `spec.`.
pub fn plan(
    identity: &PlanIdentity,
    spec: &proto::PlanVersionSpec,
    meters: &BTreeMap<String, Meter>,
) -> Result<Plan, Violations> {
    let mut violations = Violations::default();
    let content = content(spec, meters, &mut violations);
    let Some(content) = content.filter(|_| violations.is_empty()) else {
        return Err(violations);
    };
    let plan_spec = PlanSpec {
        id: identity.plan_id.clone(),
        version: identity.version,
        name: identity.name.clone(),
        currency: content.currency,
        interval: content.interval,
        // Alignment is the subscription's business (its billing anchor, in
        // the invoicing contract), so a version always follows it.
        anchor: AnchorPolicy::SubscriptionStart,
        trial_days: spec.trial_days,
        minimum_commitment: content.minimum_commitment,
        charges: content.charges,
    };
    Plan::new(plan_spec).map_err(|error| {
        let (field, rule) = plan_error_field(&error);
        violations.add(field, rule, error.to_string());
        violations
    })
}

/// What makes a spec unstorable even as a draft (malformed decimals, unknown
/// enum numbers); everything else waits for validation or publication.
pub fn structural_violations(spec: &proto::PlanVersionSpec) -> Violations {
    let mut violations = Violations::default();
    let _ = content(spec, &BTreeMap::new(), &mut violations);
    violations.structural()
}

/// The fingerprint of a `CreatePlanVersion` request (the runtime's
/// `request_fingerprint`): protobuf maps (matrix cells' `dimension_values`) encode in
/// hash-map order, so they are taken out and fingerprinted sorted.
pub fn version_request_hash(request: &proto::CreatePlanVersionRequest) -> Vec<u8> {
    let mut canonical = request.clone();
    let mut maps: Vec<HashMap<String, String>> = Vec::new();
    if let Some(proto::create_plan_version_request::Source::Spec(spec)) = &mut canonical.source {
        for charge in &mut spec.charges {
            if let Some(proto::Price {
                model: Some(Model::Matrix(matrix)),
            }) = &mut charge.price
            {
                for cell in &mut matrix.cells {
                    maps.push(std::mem::take(&mut cell.dimension_values));
                }
            }
        }
    }
    let maps: Vec<&HashMap<String, String>> = maps.iter().collect();
    request_fingerprint(&canonical, &maps).as_bytes().to_vec()
}

/// A version's content in domain terms.
struct Content {
    currency: Currency,
    interval: BillingInterval,
    minimum_commitment: Option<Decimal>,
    charges: Vec<PlanCharge>,
}

fn content(
    spec: &proto::PlanVersionSpec,
    meters: &BTreeMap<String, Meter>,
    violations: &mut Violations,
) -> Option<Content> {
    let currency = match Currency::from_code(&spec.currency) {
        Ok(currency) => Some(currency),
        Err(_) if spec.currency.is_empty() => violations.missing("spec.currency", ""),
        Err(error) => {
            violations.add("spec.currency", Rule::UnknownCurrency, error.to_string());
            None
        }
    };
    let written_currency = (!spec.currency.is_empty()).then_some(spec.currency.as_str());
    let interval = interval(spec.billing_interval, violations);
    if spec.interval_count > 1 {
        violations.add(
            "spec.interval_count",
            Rule::Unsupported,
            format!(
                "spec.interval_count {} is not supported: periods are one billing_interval long \
                 (use QUARTER for three months)",
                spec.interval_count
            ),
        );
    }
    max_length(
        &spec.description,
        "spec.description",
        MAX_DESCRIPTION_CHARS,
        violations,
    );
    let minimum_commitment = optional_money(
        spec.minimum_commitment.as_ref(),
        "spec.minimum_commitment",
        written_currency,
        violations,
    );
    if spec.charges.is_empty() {
        violations.add(
            "spec.charges",
            Rule::Required,
            "spec.charges needs at least one charge",
        );
    }
    let mut keys_seen: BTreeMap<&str, usize> = BTreeMap::new();
    let mut charges = Vec::with_capacity(spec.charges.len());
    for (index, charge) in spec.charges.iter().enumerate() {
        let path = format!("spec.charges[{index}]");
        if !charge.key.is_empty() {
            if let Some(first) = keys_seen.get(charge.key.as_str()) {
                violations.add(
                    format!("{path}.key"),
                    Rule::Duplicate,
                    format!(
                        "charge key {:?} is already used by spec.charges[{first}]",
                        charge.key
                    ),
                );
            } else {
                keys_seen.insert(&charge.key, index);
            }
        }
        charges.push(plan_charge(
            charge,
            &path,
            written_currency,
            meters,
            violations,
        ));
    }
    let charges = charges.into_iter().collect::<Option<Vec<PlanCharge>>>()?;
    Some(Content {
        currency: currency?,
        interval: interval?,
        minimum_commitment: minimum_commitment?,
        charges,
    })
}

fn interval(value: i32, violations: &mut Violations) -> Option<BillingInterval> {
    let field = "spec.billing_interval";
    match known_enum(value, field, violations)? {
        proto::BillingInterval::Unspecified => {
            violations.missing(field, "DAY, WEEK, MONTH, QUARTER or YEAR")
        }
        proto::BillingInterval::Day => Some(BillingInterval::Day),
        proto::BillingInterval::Week => Some(BillingInterval::Week),
        proto::BillingInterval::Month => Some(BillingInterval::Month),
        proto::BillingInterval::Quarter => Some(BillingInterval::Quarter),
        proto::BillingInterval::Year => Some(BillingInterval::Year),
    }
}

fn plan_charge(
    charge: &proto::Charge,
    path: &str,
    currency: Option<&str>,
    meters: &BTreeMap<String, Meter>,
    violations: &mut Violations,
) -> Option<PlanCharge> {
    let key = code(
        &charge.key,
        &format!("{path}.key"),
        ChargeCode::parse,
        violations,
    );
    required_text(
        &charge.name,
        &format!("{path}.name"),
        MAX_NAME_CHARS,
        violations,
    );
    let (kind, meter) = charge_kind(charge, path, meters, violations);
    let price_path = format!("{path}.price");
    let model = match charge.price.as_ref().and_then(|price| price.model.as_ref()) {
        Some(model) => Some(model),
        None => {
            violations.add(
                &price_path,
                Rule::Required,
                format!("{price_path} needs a price model"),
            );
            None
        }
    };
    let is_recurring = charge.meter_code.is_empty();
    if let Some(model) = model
        && is_recurring
        && !price::is_quantity_model(model)
    {
        violations.add(
            &price_path,
            Rule::NotAllowedForRecurring,
            format!(
                "a recurring charge is priced on one quantity; {} pricing needs usage",
                price::model_field(model)
            ),
        );
    }
    let context = PriceContext { currency, meter };
    let price_model =
        model.and_then(|model| price::price_model(model, &price_path, context, violations));
    let free_units = free_units(charge, path, model, violations);
    let minimum = optional_money(
        charge.minimum_amount.as_ref(),
        &format!("{path}.minimum_amount"),
        currency,
        violations,
    );
    let maximum_field = format!("{path}.maximum_amount");
    let maximum = optional_money(
        charge.maximum_amount.as_ref(),
        &maximum_field,
        currency,
        violations,
    );
    if !minimum_not_above_maximum(
        minimum.flatten(),
        maximum.flatten(),
        &maximum_field,
        violations,
    ) {
        return None;
    }
    let price = ChargePrice::new(ChargePriceSpec {
        model: price_model?,
        free_units: free_units?,
        minimum: minimum?,
        maximum: maximum?,
    })
    .map_err(|error| price::domain_violation(&error, &price_path, violations))
    .ok()?;
    Some(PlanCharge {
        code: key?,
        name: charge.name.clone(),
        kind: kind?,
        price,
    })
}

/// Recurring (no meter) or usage (a meter that exists, billed in arrears).
fn charge_kind<'a>(
    charge: &proto::Charge,
    path: &str,
    meters: &'a BTreeMap<String, Meter>,
    violations: &mut Violations,
) -> (Option<ChargeKind>, Option<&'a Meter>) {
    let timing_field = format!("{path}.billing_timing");
    let timing = match known_enum(charge.billing_timing, &timing_field, violations) {
        Some(proto::BillingTiming::InAdvance) => Some(BillingTiming::InAdvance),
        Some(proto::BillingTiming::InArrears) => Some(BillingTiming::InArrears),
        Some(proto::BillingTiming::Unspecified) => {
            violations.missing(&timing_field, "IN_ADVANCE or IN_ARREARS")
        }
        None => None,
    };
    if charge.meter_code.is_empty() {
        return (timing.map(|timing| ChargeKind::Recurring { timing }), None);
    }
    let meter_field = format!("{path}.meter_code");
    let code = code(
        &charge.meter_code,
        &meter_field,
        MeterCode::parse,
        violations,
    );
    let meter = meters.get(&charge.meter_code);
    if code.is_some() && meter.is_none() {
        violations.add(
            &meter_field,
            Rule::UnknownMeter,
            format!(
                "meter {:?} does not exist; create it first",
                charge.meter_code
            ),
        );
    }
    if timing == Some(BillingTiming::InAdvance) {
        violations.add(
            &timing_field,
            Rule::UsageChargeInArrears,
            "a usage charge is billed IN_ARREARS (usage is known only at the period's end)",
        );
    }
    let kind = code
        .filter(|_| meter.is_some() && timing == Some(BillingTiming::InArrears))
        .map(|meter| ChargeKind::Usage { meter });
    (kind, meter)
}

fn free_units(
    charge: &proto::Charge,
    path: &str,
    model: Option<&Model>,
    violations: &mut Violations,
) -> Option<Decimal> {
    let field = format!("{path}.included_quantity");
    let free_units = optional_bounded(
        charge.included_quantity.as_ref(),
        &field,
        Bound::Quantity,
        violations,
    )?
    .unwrap_or_default();
    if let Some(model) = model
        && !free_units.is_zero()
        && !price::is_quantity_model(model)
    {
        violations.add(
            &field,
            Rule::NotApplicable,
            format!(
                "included_quantity does not apply to {} pricing",
                price::model_field(model)
            ),
        );
        return None;
    }
    Some(free_units)
}

fn plan_error_field(error: &PlanError) -> (&'static str, Rule) {
    match error {
        PlanError::InvalidVersion => ("version", Rule::MustBePositive),
        PlanError::EmptyName => ("name", Rule::Required),
        PlanError::NoCharges => ("spec.charges", Rule::Required),
        PlanError::DuplicateChargeCode { .. } => ("spec.charges", Rule::Duplicate),
        PlanError::RecurringChargeNeedsQuantityModel { .. } => {
            ("spec.charges", Rule::NotAllowedForRecurring)
        }
        PlanError::NegativeMinimumCommitment { .. } => {
            ("spec.minimum_commitment", Rule::MustNotBeNegative)
        }
    }
}

/// Meter codes a spec's usage charges name (to load only those meters).
pub fn meter_codes(spec: &proto::PlanVersionSpec) -> Vec<String> {
    let codes: BTreeSet<&str> = spec
        .charges
        .iter()
        .map(|charge| charge.meter_code.as_str())
        .filter(|code| !code.is_empty())
        .collect();
    codes.into_iter().map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn request(pairs: &[(&str, &str)]) -> proto::CreatePlanVersionRequest {
        let cell = proto::MatrixCell {
            dimension_values: pairs
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect::<HashMap<_, _>>(),
            unit_price: None,
        };
        let charge = proto::Charge {
            price: Some(proto::Price {
                model: Some(Model::Matrix(proto::MatrixPrice {
                    cells: vec![cell],
                    ..Default::default()
                })),
            }),
            ..Default::default()
        };
        proto::CreatePlanVersionRequest {
            idempotency_key: "k".into(),
            plan_id: "plan_1".into(),
            source: Some(proto::create_plan_version_request::Source::Spec(
                proto::PlanVersionSpec {
                    charges: vec![charge],
                    ..Default::default()
                },
            )),
        }
    }

    /// Stored in `rating.plan_versions.request_hash` (and the meters' and plans'
    /// definition hashes): the runtime's fingerprint gives the bytes rating wrote before it.
    #[test]
    fn request_hashes_are_the_bytes_stored_before_the_runtime_fingerprint() {
        let request = request(&[("region", "eu"), ("tier", "gold")]);
        assert_eq!(
            hex(&version_request_hash(&request)),
            "ce3966c752deba5ef38abc8eb1a48f058875867d12d69c16ead298dcc8f67118"
        );
        let attributes = PlanAttributes {
            code: "pro".into(),
            name: "Pro".into(),
            description: "The pro plan".into(),
            metadata: [("owner".to_owned(), "sales".to_owned())].into(),
        };
        assert_eq!(
            hex(&attributes.definition_hash()),
            "ba883d25b636647907644249594a8339be2ad5f1cf2006909bea49a77914bbd1"
        );
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    #[test]
    fn the_request_hash_ignores_map_order_but_not_content() {
        let pairs: Vec<(String, String)> = (0..16)
            .map(|index| (format!("d{index}"), format!("v{index}")))
            .collect();
        let forward: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect();
        let mut backward = forward.clone();
        backward.reverse();
        let hash = version_request_hash(&request(&forward));
        for _ in 0..8 {
            assert_eq!(version_request_hash(&request(&backward)), hash);
        }
        backward[0].1 = "other";
        assert_ne!(version_request_hash(&request(&backward)), hash);
    }

    #[test]
    fn plan_codes_are_lower_snake_case() {
        for (code, rule) in [
            ("", Some(Rule::Required)),
            ("Pro", Some(Rule::InvalidCharacters)),
            ("pro-monthly", Some(Rule::InvalidCharacters)),
            ("pro_monthly_2", None),
        ] {
            let mut violations = Violations::default();
            plan_code(code, &mut violations);
            assert_eq!(
                violations.iter().next().map(|violation| violation.rule),
                rule,
                "{code:?}"
            );
        }
    }
}
