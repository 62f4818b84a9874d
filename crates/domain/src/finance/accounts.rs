//! The chart of accounts: one set of accounts per currency, with stable codes and ids.
//!
//! An account id is `acct_` + the lower-case currency code + the account's numeric code, e.g.
//! `acct_usd1100` for accounts receivable in USD. A usage revenue account appends its meter
//! code, spelled with letters and digits only (ids allow nothing else): `_` → `U`, `.` → `D`,
//! `-` → `H` (meter codes are lower case, so the upper-case letters cannot collide), e.g.
//! `llm.tokens_out` in USD is `acct_usd4200llmDtokensUout`. A meter code longer than the 57
//! characters left in the 64-character id body keeps its first 24 characters and appends `Z`
//! plus a 128-bit FNV-1a hash of the whole code in hex: still deterministic, unique in practice.

use serde::{Deserialize, Serialize};

use super::FinanceError;
use super::ids::fnv1a_128_hex;
use crate::ids::{AccountId, MAX_ID_BODY_LEN, MeterCode};
use crate::ledger::{Account, AccountKind, Ledger};
use crate::money::Currency;

/// A product line that earns revenue.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "line", rename_all = "snake_case")]
pub enum RevenueLine {
    /// Subscription fees (recurring charges, proration charges and credits), recognised
    /// ratably over their service period.
    RecurringFees,
    /// Usage of one meter, recognised daily as it is consumed.
    Usage {
        /// The meter.
        meter: MeterCode,
    },
    /// One-off charges, adjustments and minimum-commitment true-ups, recognised when invoiced.
    OneOff,
}

/// What reduces revenue without being a cost (a contra-revenue account, debit balance).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContraKind {
    /// Credit notes issued against finalized invoices.
    CreditNotes,
    /// Discount lines on invoices.
    Discounts,
    /// Promotional (free) credits, when they are used.
    PromotionalCredits,
}

/// An account of the chart, without its currency.
///
/// | account | kind | code | what its balance means |
/// |---|---|---|---|
/// | `Cash` | asset | 1000 | collected through Stripe, less refunds paid out |
/// | `AccountsReceivable` | asset | 1100 | invoiced, not yet paid or credited |
/// | `UnbilledReceivables` | asset | 1150 | usage consumed and recognised, not yet invoiced |
/// | `DeferredRevenue` | liability | 2100 | fees invoiced for service not yet delivered |
/// | `PrepaidCredits` | liability | 2200 | paid credits sold, not yet used |
/// | `CustomerCreditBalance` | liability | 2300 | credit customers hold (negative invoices, credit notes not refunded) |
/// | `Refunds` | liability | 2400 | refunds clearing: refunds owed by credit notes less refunds paid out; zero when reconciled |
/// | `Revenue(RecurringFees)` | revenue | 4000 | recognised subscription fees |
/// | `Revenue(OneOff)` | revenue | 4100 | one-off charges, adjustments, minimum true-ups |
/// | `Revenue(Usage { meter })` | revenue | 4200/meter | recognised usage of a meter |
/// | `ContraRevenue(CreditNotes)` | revenue (contra) | 4900 | credit notes |
/// | `ContraRevenue(Discounts)` | revenue (contra) | 4910 | discounts |
/// | `ContraRevenue(PromotionalCredits)` | revenue (contra) | 4920 | promotional credits used |
///
/// `Refunds` is a **clearing** account, not a contra-cash or expense account: a credit note
/// settled by refund credits it (the revenue correction), the refund that pays it out debits
/// it (the cash leaving). A debit balance is a refund without a credit note, a credit balance
/// a refund promised and not yet paid out: both are reconciliation findings.
///
/// Contra-revenue accounts have the ledger kind [`AccountKind::Revenue`], so their balance
/// (read on the credit side) is negative and revenue totals net them without special cases.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerAccount {
    /// Invoiced, not yet paid.
    AccountsReceivable,
    /// Usage consumed and recognised, not yet invoiced.
    UnbilledReceivables,
    /// Fees billed in advance, not yet recognised.
    DeferredRevenue,
    /// Paid credits sold, not yet used.
    PrepaidCredits,
    /// Earned income of a product line.
    Revenue(RevenueLine),
    /// A reduction of revenue.
    ContraRevenue(ContraKind),
    /// Money collected.
    Cash,
    /// Refunds clearing (see the type's docs).
    Refunds,
    /// Credit a customer holds and can spend on later invoices.
    CustomerCreditBalance,
}

impl LedgerAccount {
    /// Every account except the per-meter usage revenue accounts, in code order.
    pub fn fixed() -> [LedgerAccount; 12] {
        [
            LedgerAccount::Cash,
            LedgerAccount::AccountsReceivable,
            LedgerAccount::UnbilledReceivables,
            LedgerAccount::DeferredRevenue,
            LedgerAccount::PrepaidCredits,
            LedgerAccount::CustomerCreditBalance,
            LedgerAccount::Refunds,
            LedgerAccount::Revenue(RevenueLine::RecurringFees),
            LedgerAccount::Revenue(RevenueLine::OneOff),
            LedgerAccount::ContraRevenue(ContraKind::CreditNotes),
            LedgerAccount::ContraRevenue(ContraKind::Discounts),
            LedgerAccount::ContraRevenue(ContraKind::PromotionalCredits),
        ]
    }

    /// The usage revenue account of `meter`.
    pub fn usage_revenue(meter: &MeterCode) -> LedgerAccount {
        LedgerAccount::Revenue(RevenueLine::Usage {
            meter: meter.clone(),
        })
    }

    /// The ledger kind, which fixes the normal balance side.
    pub fn kind(&self) -> AccountKind {
        match self {
            LedgerAccount::Cash
            | LedgerAccount::AccountsReceivable
            | LedgerAccount::UnbilledReceivables => AccountKind::Asset,
            LedgerAccount::DeferredRevenue
            | LedgerAccount::PrepaidCredits
            | LedgerAccount::CustomerCreditBalance
            | LedgerAccount::Refunds => AccountKind::Liability,
            LedgerAccount::Revenue(_) | LedgerAccount::ContraRevenue(_) => AccountKind::Revenue,
        }
    }

    /// The numeric code of the chart (the meter's usage accounts share 4200).
    fn number(&self) -> &'static str {
        match self {
            LedgerAccount::Cash => "1000",
            LedgerAccount::AccountsReceivable => "1100",
            LedgerAccount::UnbilledReceivables => "1150",
            LedgerAccount::DeferredRevenue => "2100",
            LedgerAccount::PrepaidCredits => "2200",
            LedgerAccount::CustomerCreditBalance => "2300",
            LedgerAccount::Refunds => "2400",
            LedgerAccount::Revenue(RevenueLine::RecurringFees) => "4000",
            LedgerAccount::Revenue(RevenueLine::OneOff) => "4100",
            LedgerAccount::Revenue(RevenueLine::Usage { .. }) => "4200",
            LedgerAccount::ContraRevenue(ContraKind::CreditNotes) => "4900",
            LedgerAccount::ContraRevenue(ContraKind::Discounts) => "4910",
            LedgerAccount::ContraRevenue(ContraKind::PromotionalCredits) => "4920",
        }
    }

    /// The stable code an ERP maps: `1100`, or `4200/<meter>` for usage revenue.
    pub fn code(&self) -> String {
        if let LedgerAccount::Revenue(RevenueLine::Usage { meter }) = self {
            return format!("{}/{}", self.number(), meter);
        }
        self.number().to_owned()
    }

    /// The display name, e.g. `Revenue — usage llm.tokens`.
    pub fn name(&self) -> String {
        let name = match self {
            LedgerAccount::Cash => "Cash",
            LedgerAccount::AccountsReceivable => "Accounts receivable",
            LedgerAccount::UnbilledReceivables => "Unbilled receivables",
            LedgerAccount::DeferredRevenue => "Deferred revenue",
            LedgerAccount::PrepaidCredits => "Prepaid credits",
            LedgerAccount::CustomerCreditBalance => "Customer credit balance",
            LedgerAccount::Refunds => "Refunds clearing",
            LedgerAccount::Revenue(RevenueLine::RecurringFees) => "Revenue — recurring fees",
            LedgerAccount::Revenue(RevenueLine::OneOff) => "Revenue — one-off",
            LedgerAccount::Revenue(RevenueLine::Usage { meter }) => {
                return format!("Revenue — usage {meter}");
            }
            LedgerAccount::ContraRevenue(ContraKind::CreditNotes) => {
                "Contra-revenue — credit notes"
            }
            LedgerAccount::ContraRevenue(ContraKind::Discounts) => "Contra-revenue — discounts",
            LedgerAccount::ContraRevenue(ContraKind::PromotionalCredits) => {
                "Contra-revenue — promotional credits"
            }
        };
        name.to_owned()
    }

    /// The deterministic id of this account in `currency` (see the module docs).
    ///
    /// ```
    /// use tally_domain::finance::LedgerAccount;
    /// use tally_domain::ids::MeterCode;
    /// use tally_domain::money::Currency;
    ///
    /// let receivable = LedgerAccount::AccountsReceivable.id(Currency::USD).unwrap();
    /// assert_eq!(receivable.as_str(), "acct_usd1100");
    /// let tokens = LedgerAccount::usage_revenue(&MeterCode::parse("llm.tokens_out").unwrap());
    /// assert_eq!(tokens.id(Currency::EUR).unwrap().as_str(), "acct_eur4200llmDtokensUout");
    /// ```
    pub fn id(&self, currency: Currency) -> Result<AccountId, FinanceError> {
        let mut body = currency.code().to_ascii_lowercase();
        body.push_str(self.number());
        if let LedgerAccount::Revenue(RevenueLine::Usage { meter }) = self {
            body.push_str(&meter_id_part(meter, MAX_ID_BODY_LEN - body.len()));
        }
        Ok(AccountId::from_body(&body)?)
    }

    /// The ledger account in `currency`: id, name and kind.
    pub fn account(&self, currency: Currency) -> Result<Account, FinanceError> {
        Ok(Account {
            id: self.id(currency)?,
            name: format!("{} {} ({currency})", self.code(), self.name()),
            kind: self.kind(),
            currency,
        })
    }
}

/// The meter code spelled with ASCII letters and digits in at most `room` characters.
fn meter_id_part(meter: &MeterCode, room: usize) -> String {
    let escaped: String = meter
        .as_str()
        .chars()
        .map(|character| match character {
            '_' => 'U',
            '.' => 'D',
            '-' => 'H',
            other => other,
        })
        .collect();
    if escaped.len() <= room {
        return escaped;
    }
    // `Z` never appears in an escaped code, so a hashed part never equals an escaped one.
    let hash = fnv1a_128_hex(meter.as_str());
    let keep = room.saturating_sub(hash.len() + 1);
    format!("{}Z{hash}", &escaped[..keep])
}

/// Opens every fixed account of `currency` (re-opening is harmless: identical accounts).
pub fn open_fixed_accounts(ledger: &mut Ledger, currency: Currency) -> Result<(), FinanceError> {
    for account in LedgerAccount::fixed() {
        ledger.open_account(account.account(currency)?);
    }
    Ok(())
}

/// Opens the usage revenue account of `meter` in `currency`, on demand (before posting a
/// fact that names the meter).
pub fn open_usage_account(
    ledger: &mut Ledger,
    meter: &MeterCode,
    currency: Currency,
) -> Result<(), FinanceError> {
    ledger.open_account(LedgerAccount::usage_revenue(meter).account(currency)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn fixed_accounts_have_distinct_codes_ids_and_the_right_kinds() {
        let ids: BTreeSet<String> = LedgerAccount::fixed()
            .iter()
            .map(|account| account.id(Currency::USD).unwrap().to_string())
            .collect();
        assert_eq!(ids.len(), 12);
        assert!(ids.contains("acct_usd1000"));
        assert!(ids.contains("acct_usd4920"));
        assert_eq!(LedgerAccount::Refunds.kind(), AccountKind::Liability);
        assert_eq!(
            LedgerAccount::ContraRevenue(ContraKind::Discounts).kind(),
            AccountKind::Revenue
        );
        assert_eq!(
            LedgerAccount::AccountsReceivable
                .account(Currency::JPY)
                .unwrap(),
            Account {
                id: AccountId::parse("acct_jpy1100").unwrap(),
                name: "1100 Accounts receivable (JPY)".into(),
                kind: AccountKind::Asset,
                currency: Currency::JPY,
            }
        );
    }

    #[test]
    fn usage_accounts_escape_the_meter_code_and_hash_long_ones() {
        let meter = |code: &str| LedgerAccount::usage_revenue(&MeterCode::parse(code).unwrap());
        assert_eq!(
            meter("a_b.c-d").id(Currency::USD).unwrap().as_str(),
            "acct_usd4200aUbDcHd"
        );
        assert_eq!(meter("a_b.c-d").code(), "4200/a_b.c-d");
        let long = "m".repeat(60);
        let long_id = meter(&long).id(Currency::USD).unwrap();
        assert_eq!(long_id.as_str().len(), "acct_".len() + MAX_ID_BODY_LEN);
        assert!(long_id.as_str().starts_with("acct_usd4200mmm"));
        let other = format!("{}n", "m".repeat(59));
        assert_ne!(meter(&other).id(Currency::USD).unwrap(), long_id);
        // 57 characters still fit unhashed: 7 for `usd4200` + 57 = 64.
        let fits = "m".repeat(57);
        assert_eq!(
            meter(&fits).id(Currency::USD).unwrap().as_str(),
            format!("acct_usd4200{fits}")
        );
    }

    #[test]
    fn accounts_serialise_and_come_back() {
        let mut accounts = LedgerAccount::fixed().to_vec();
        accounts.push(LedgerAccount::usage_revenue(
            &MeterCode::parse("tokens").unwrap(),
        ));
        let json = serde_json::to_string(&accounts).unwrap();
        assert!(json.contains(r#"{"revenue":{"line":"usage","meter":"tokens"}}"#));
        assert!(json.contains(r#"{"contra_revenue":"discounts"}"#));
        assert!(json.starts_with(r#"["cash","accounts_receivable","#));
        let back: Vec<LedgerAccount> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, accounts);
    }

    #[test]
    fn opening_accounts_in_a_ledger() {
        let mut ledger = Ledger::new();
        open_fixed_accounts(&mut ledger, Currency::EUR).unwrap();
        open_fixed_accounts(&mut ledger, Currency::EUR).unwrap();
        let tokens = MeterCode::parse("tokens").unwrap();
        open_usage_account(&mut ledger, &tokens, Currency::EUR).unwrap();
        let id = LedgerAccount::usage_revenue(&tokens)
            .id(Currency::EUR)
            .unwrap();
        assert!(ledger.balance(&id).unwrap().is_zero());
        let cash = LedgerAccount::Cash.id(Currency::EUR).unwrap();
        assert!(ledger.balance(&cash).unwrap().is_zero());
    }
}
