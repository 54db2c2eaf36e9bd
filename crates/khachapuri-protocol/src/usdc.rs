//! USDC amounts: integers of the token's smallest unit (6 decimals), never floats.

use std::fmt;
use std::str::FromStr;

use alloy::primitives::U256;

/// Smallest units in one USDC.
const UNIT: u128 = 1_000_000;
/// Decimals of USDC.
const DECIMALS: usize = 6;

/// An amount of USDC, held as an integer of its smallest unit (10⁻⁶ USDC).
///
/// Displays as `0.30 USDC` (at least 2 decimals, up to 6, no rounding) and parses from `0.3`, `0.30`, `1`,
/// `0.000001` (an optional ` USDC` suffix is accepted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Usdc(u128);

/// Why a text is not an amount of USDC.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsdcParseError {
    /// Nothing to parse.
    #[error("empty amount")]
    Empty,
    /// A minus sign: amounts are never negative.
    #[error("negative amount `{0}`: USDC amounts are never negative")]
    Negative(String),
    /// More than the token's 6 decimals.
    #[error("`{0}` has more than 6 decimals (USDC's smallest unit is 0.000001)")]
    TooManyDecimals(String),
    /// Anything but digits and one decimal point.
    #[error("`{0}` is not an amount of USDC (expected digits like `0.30` or `1`)")]
    Invalid(String),
    /// Too large to hold.
    #[error("`{0}` is too large an amount")]
    Overflow(String),
}

impl Usdc {
    /// Zero.
    pub const ZERO: Self = Self(0);
    /// The largest amount this type holds (used for "unlimited" budgets).
    pub const MAX: Self = Self(u128::MAX);

    /// An amount in the token's smallest unit (1 = 0.000001 USDC).
    pub const fn from_units(units: u128) -> Self {
        Self(units)
    }

    /// A whole number of USDC (saturating).
    pub const fn from_whole(usdc: u64) -> Self {
        Self((usdc as u128).saturating_mul(UNIT))
    }

    /// The amount in the token's smallest unit.
    pub const fn units(self) -> u128 {
        self.0
    }

    /// The amount as an on-chain `uint256`.
    pub fn to_u256(self) -> U256 {
        U256::from(self.0)
    }

    /// An on-chain `uint256`, saturating at [`Usdc::MAX`] (the contracts clamp "unlimited" values anyway).
    pub fn from_u256(value: U256) -> Self {
        Self(u128::try_from(value).unwrap_or(u128::MAX))
    }

    /// `self + other`, or `None` on overflow.
    pub const fn checked_add(self, other: Self) -> Option<Self> {
        match self.0.checked_add(other.0) {
            Some(v) => Some(Self(v)),
            None => None,
        }
    }

    /// `self - other`, or `None` if it would be negative.
    pub const fn checked_sub(self, other: Self) -> Option<Self> {
        match self.0.checked_sub(other.0) {
            Some(v) => Some(Self(v)),
            None => None,
        }
    }

    /// `self + other`, at most [`Usdc::MAX`].
    pub const fn saturating_add(self, other: Self) -> Self {
        Self(self.0.saturating_add(other.0))
    }

    /// `self - other`, at least zero.
    pub const fn saturating_sub(self, other: Self) -> Self {
        Self(self.0.saturating_sub(other.0))
    }

    /// `self * n`, or `None` on overflow.
    pub const fn checked_mul(self, n: u128) -> Option<Self> {
        match self.0.checked_mul(n) {
            Some(v) => Some(Self(v)),
            None => None,
        }
    }
}

impl From<U256> for Usdc {
    fn from(value: U256) -> Self {
        Self::from_u256(value)
    }
}

impl From<Usdc> for U256 {
    fn from(value: Usdc) -> Self {
        value.to_u256()
    }
}

impl fmt::Display for Usdc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / UNIT;
        let frac = format!("{:06}", self.0 % UNIT);
        let trimmed = frac.trim_end_matches('0');
        let shown = if trimmed.len() < 2 {
            &frac[..2]
        } else {
            trimmed
        };
        write!(f, "{whole}.{shown} USDC")
    }
}

impl FromStr for Usdc {
    type Err = UsdcParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let text = text.strip_suffix("USDC").map_or(text, str::trim_end);
        if text.is_empty() {
            return Err(UsdcParseError::Empty);
        }
        if text.starts_with('-') {
            return Err(UsdcParseError::Negative(s.to_owned()));
        }
        let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
        let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty()
            || !digits(whole)
            || !digits(frac)
            || (text.contains('.') && frac.is_empty())
        {
            return Err(UsdcParseError::Invalid(s.to_owned()));
        }
        if frac.len() > DECIMALS {
            return Err(UsdcParseError::TooManyDecimals(s.to_owned()));
        }
        let overflow = || UsdcParseError::Overflow(s.to_owned());
        let whole: u128 = whole.parse().map_err(|_| overflow())?;
        let frac_units: u128 = if frac.is_empty() {
            0
        } else {
            let scale = 10u128.pow((DECIMALS - frac.len()) as u32);
            frac.parse::<u128>().map_err(|_| overflow())? * scale
        };
        whole
            .checked_mul(UNIT)
            .and_then(|w| w.checked_add(frac_units))
            .map(Self)
            .ok_or_else(overflow)
    }
}

/// Serde for a [`Usdc`] as its base units in a decimal string (`"10000"` is 0.01 USDC): JSON numbers
/// lose precision above 2^53. Use as `#[serde(with = "khachapuri_protocol::usdc::units")]`.
pub mod units {
    use super::Usdc;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    /// Writes the base units as a decimal string.
    pub fn serialize<S: Serializer>(v: &Usdc, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.units().to_string())
    }

    /// Reads a decimal string of base units.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Usdc, D::Error> {
        let text = String::deserialize(d)?;
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(D::Error::custom(format!(
                "`{text}`: expected a decimal string of USDC base units, e.g. \"10000\""
            )));
        }
        text.parse::<u128>()
            .map(Usdc::from_units)
            .map_err(|e| D::Error::custom(format!("`{text}`: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_two_to_six_decimals() {
        assert_eq!(Usdc::from_units(300_000).to_string(), "0.30 USDC");
        assert_eq!(Usdc::from_units(1_000_000).to_string(), "1.00 USDC");
        assert_eq!(Usdc::from_units(1).to_string(), "0.000001 USDC");
        assert_eq!(Usdc::from_units(1_234_500).to_string(), "1.2345 USDC");
        assert_eq!(Usdc::ZERO.to_string(), "0.00 USDC");
        assert_eq!(Usdc::from_units(10_000).to_string(), "0.01 USDC");
    }

    #[test]
    fn parses_plain_amounts() {
        for (text, units) in [
            ("0.3", 300_000),
            ("0.30", 300_000),
            ("1", 1_000_000),
            ("0.000001", 1),
            ("12.5 USDC", 12_500_000),
        ] {
            assert_eq!(text.parse::<Usdc>(), Ok(Usdc::from_units(units)), "{text}");
        }
    }

    #[test]
    fn rejects_bad_amounts_with_clear_errors() {
        assert!(matches!(
            "0.0000001".parse::<Usdc>(),
            Err(UsdcParseError::TooManyDecimals(_))
        ));
        assert!(matches!(
            "-1".parse::<Usdc>(),
            Err(UsdcParseError::Negative(_))
        ));
        assert!(matches!("".parse::<Usdc>(), Err(UsdcParseError::Empty)));
        for bad in ["abc", "1.", ".5", "1.2.3", "1e6", "+1"] {
            assert!(
                matches!(bad.parse::<Usdc>(), Err(UsdcParseError::Invalid(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            "999999999999999999999999999999999999999".parse::<Usdc>(),
            Err(UsdcParseError::Overflow(_))
        ));
        let msg = "0.0000001".parse::<Usdc>().map_err(|e| e.to_string());
        assert_eq!(
            msg,
            Err("`0.0000001` has more than 6 decimals (USDC's smallest unit is 0.000001)".into())
        );
    }

    #[test]
    fn display_parses_back() {
        for units in [0, 1, 10, 999_999, 1_000_000, 123_456_789] {
            let a = Usdc::from_units(units);
            assert_eq!(a.to_string().parse::<Usdc>(), Ok(a));
        }
    }
}
