//! ISO 4217 currencies and their minor-unit exponents.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::MoneyError;

/// An ISO 4217 currency: its alphabetic code and its minor-unit exponent.
///
/// The exponent is the number of decimal places of the currency's minor unit:
/// 0 for JPY (no minor unit), 2 for USD (cents), 3 for KWD (fils), 4 for CLF.
/// A `Currency` can only come from the table below, so its exponent is always right.
///
/// ```
/// use tally_domain::money::Currency;
///
/// let yen = Currency::from_code("JPY").unwrap();
/// assert_eq!(yen.minor_units(), 0);
/// assert_eq!(Currency::from_code("KWD").unwrap().minor_units(), 3);
/// assert_eq!(Currency::USD.code(), "USD");
/// assert!(Currency::from_code("usd").is_err()); // codes are upper case
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    code: &'static str,
    minor_units: u32,
}

macro_rules! currency_table {
    ($( $code:ident => $minor:literal ),+ $(,)?) => {
        impl Currency {
            $(
                #[doc = concat!("ISO 4217 `", stringify!($code), "`, ", stringify!($minor), " decimal place(s).")]
                pub const $code: Currency = Currency { code: stringify!($code), minor_units: $minor };
            )+
        }

        /// Every supported currency, sorted by code (binary-searched by [`Currency::from_code`]).
        const ALL_CURRENCIES: &[Currency] = &[$(Currency::$code),+];
    };
}

// ISO 4217 list one, active codes (amendments up to 2025, including ZWG, XCG and SLE).
// Codes without a minor unit ("N.A.": precious metals, XDR, test codes) cannot carry an
// amount in minor units and are deliberately absent. Keep this list sorted.
currency_table! {
    AED => 2, AFN => 2, ALL => 2, AMD => 2, ANG => 2, AOA => 2, ARS => 2, AUD => 2, AWG => 2,
    AZN => 2, BAM => 2, BBD => 2, BDT => 2, BGN => 2, BHD => 3, BIF => 0, BMD => 2, BND => 2,
    BOB => 2, BOV => 2, BRL => 2, BSD => 2, BTN => 2, BWP => 2, BYN => 2, BZD => 2, CAD => 2,
    CDF => 2, CHE => 2, CHF => 2, CHW => 2, CLF => 4, CLP => 0, CNY => 2, COP => 2, COU => 2,
    CRC => 2, CUP => 2, CVE => 2, CZK => 2, DJF => 0, DKK => 2, DOP => 2, DZD => 2, EGP => 2,
    ERN => 2, ETB => 2, EUR => 2, FJD => 2, FKP => 2, GBP => 2, GEL => 2, GHS => 2, GIP => 2,
    GMD => 2, GNF => 0, GTQ => 2, GYD => 2, HKD => 2, HNL => 2, HTG => 2, HUF => 2, IDR => 2,
    ILS => 2, INR => 2, IQD => 3, IRR => 2, ISK => 0, JMD => 2, JOD => 3, JPY => 0, KES => 2,
    KGS => 2, KHR => 2, KMF => 0, KPW => 2, KRW => 0, KWD => 3, KYD => 2, KZT => 2, LAK => 2,
    LBP => 2, LKR => 2, LRD => 2, LSL => 2, LYD => 3, MAD => 2, MDL => 2, MGA => 2, MKD => 2,
    MMK => 2, MNT => 2, MOP => 2, MRU => 2, MUR => 2, MVR => 2, MWK => 2, MXN => 2, MXV => 2,
    MYR => 2, MZN => 2, NAD => 2, NGN => 2, NIO => 2, NOK => 2, NPR => 2, NZD => 2, OMR => 3,
    PAB => 2, PEN => 2, PGK => 2, PHP => 2, PKR => 2, PLN => 2, PYG => 0, QAR => 2, RON => 2,
    RSD => 2, RUB => 2, RWF => 0, SAR => 2, SBD => 2, SCR => 2, SDG => 2, SEK => 2, SGD => 2,
    SHP => 2, SLE => 2, SOS => 2, SRD => 2, SSP => 2, STN => 2, SVC => 2, SYP => 2, SZL => 2,
    THB => 2, TJS => 2, TMT => 2, TND => 3, TOP => 2, TRY => 2, TTD => 2, TWD => 2, TZS => 2,
    UAH => 2, UGX => 0, USD => 2, USN => 2, UYI => 0, UYU => 2, UYW => 4, UZS => 2, VED => 2,
    VES => 2, VND => 0, VUV => 0, WST => 2, XAF => 0, XCD => 2, XCG => 2, XOF => 0, XPF => 0,
    YER => 2, ZAR => 2, ZMW => 2, ZWG => 2,
}

impl Currency {
    /// Looks up an upper-case ISO 4217 code such as `"EUR"`.
    pub fn from_code(code: &str) -> Result<Currency, MoneyError> {
        ALL_CURRENCIES
            .binary_search_by(|currency| currency.code.cmp(code))
            .map(|index| ALL_CURRENCIES[index])
            .map_err(|_| MoneyError::UnknownCurrency {
                code: code.to_owned(),
            })
    }

    /// The three-letter ISO 4217 code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The minor-unit exponent: how many decimal places an invoiced amount has.
    pub fn minor_units(&self) -> u32 {
        self.minor_units
    }

    /// Every supported currency, sorted by code.
    pub fn all() -> &'static [Currency] {
        ALL_CURRENCIES
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.code)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.code)
    }
}

impl std::str::FromStr for Currency {
    type Err = MoneyError;

    fn from_str(code: &str) -> Result<Self, Self::Err> {
        Currency::from_code(code)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code)
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        Currency::from_code(&code).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique_so_lookup_finds_every_code() {
        for pair in ALL_CURRENCIES.windows(2) {
            assert!(
                pair[0].code < pair[1].code,
                "{} before {}",
                pair[0],
                pair[1]
            );
        }
        for currency in ALL_CURRENCIES {
            assert_eq!(Currency::from_code(currency.code()).unwrap(), *currency);
        }
    }

    #[test]
    fn exponents_of_well_known_currencies() {
        let cases = [
            ("USD", 2),
            ("EUR", 2),
            ("JPY", 0),
            ("KRW", 0),
            ("KWD", 3),
            ("BHD", 3),
            ("CLF", 4),
            ("ISK", 0),
        ];
        for (code, exponent) in cases {
            assert_eq!(
                Currency::from_code(code).unwrap().minor_units(),
                exponent,
                "{code}"
            );
        }
    }

    #[test]
    fn unknown_codes_are_rejected() {
        for code in ["", "US", "usd", "XAU", "ABC", "USDD"] {
            assert!(Currency::from_code(code).is_err(), "{code}");
        }
    }

    #[test]
    fn serde_round_trips_as_the_code() {
        let json = serde_json::to_string(&Currency::JPY).unwrap();
        assert_eq!(json, "\"JPY\"");
        assert_eq!(
            serde_json::from_str::<Currency>(&json).unwrap(),
            Currency::JPY
        );
        assert!(serde_json::from_str::<Currency>("\"XXX\"").is_err());
    }
}
