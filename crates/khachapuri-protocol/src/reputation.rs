//! A provider's reputation (docs/PROTOCOL.md §10 "Reputation"): its [`Record`] from public data (the
//! escrow's events, read by `khachapuri_chain::reputation::Scan`), and the [`score`] that weighs it with
//! what one gateway saw of the provider.

use serde::Serialize;

use crate::Usdc;

/// What the chain says of one provider (its payee).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// Requests settled with money from payers' reserves (credits alone excluded: the provider grants
    /// them itself).
    pub settled_requests: u64,
    /// What payers' reserves paid it.
    #[serde(serialize_with = "as_text")]
    pub volume: Usdc,
    /// Distinct payers whose reserves paid it.
    pub payers: u64,
    /// Requests its own trial credits paid in full: shown, never scored.
    pub credit_requests: u64,
    /// When its label was registered (unix seconds), if it has one.
    pub registered_at: Option<u64>,
    /// When a charge to it last settled (unix seconds).
    pub last_settled_at: Option<u64>,
}

/// What one gateway saw of a provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen {
    /// Calls it answered.
    pub answered: u64,
    /// Calls it could not be reached for.
    pub unreachable: u64,
    /// Charged answers it checked the receipt of.
    pub receipts: u64,
    /// Of those, receipts that did not verify (signer, provider, payer, spec or price).
    pub bad_receipts: u64,
}

impl Seen {
    /// Answered over answered and unreachable; 1 when nothing was seen.
    pub fn availability(&self) -> f64 {
        match self.answered + self.unreachable {
            0 => 1.0,
            n => self.answered as f64 / n as f64,
        }
    }

    /// `1 / (1 + 10 × bad / checked)`: a provider whose receipts fail often loses most of its weight, and
    /// one slip among many good receipts fades as good ones follow.
    pub fn receipts(&self) -> f64 {
        match self.receipts {
            0 => 1.0,
            n => 1.0 / (1.0 + 10.0 * self.bad_receipts.min(n) as f64 / n as f64),
        }
    }
}

/// A provider's reputation with its parts, each in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Score {
    /// Distinct paying payers, saturating: `1 - e^(-payers / 10)`.
    pub payers: f64,
    /// Age of the label, saturating: `1 - e^(-days / 30)`.
    pub age: f64,
    /// From the chain alone: `0.5 + 0.25 payers + 0.25 age`, in [0.5, 1].
    pub chain: f64,
    /// Availability as one gateway saw it ([`Seen::availability`]).
    pub availability: f64,
    /// Its receipts as one gateway checked them ([`Seen::receipts`]).
    pub receipts: f64,
    /// `chain × receipts`: what a router multiplies a provider's weight by, beside the speed and
    /// availability it measures itself.
    pub routing: f64,
    /// `chain × availability × receipts`.
    pub total: f64,
}

/// Weighs `record` (as of `now`, unix seconds) with what one gateway `seen`. Settled volume is shown but
/// not scored: a provider can pay itself through payers of its own for gas alone.
pub fn score(record: &Record, now: u64, seen: &Seen) -> Score {
    let payers = 1.0 - (-(record.payers as f64) / 10.0).exp();
    let days = record
        .registered_at
        .map_or(0.0, |at| now.saturating_sub(at) as f64 / 86_400.0);
    let age = 1.0 - (-days / 30.0).exp();
    let chain = 0.5 + 0.25 * payers + 0.25 * age;
    let (availability, receipts) = (seen.availability(), seen.receipts());
    Score {
        payers,
        age,
        chain,
        availability,
        receipts,
        routing: chain * receipts,
        total: chain * availability * receipts,
    }
}

/// `0.20 USDC`, as every amount is shown.
fn as_text<S: serde::Serializer>(amount: &Usdc, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&amount.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_saturate_and_bad_receipts_weigh_by_their_share() {
        let nothing = Seen::default();
        let fresh = score(&Record::default(), 1_000, &nothing);
        assert_eq!(
            (fresh.payers, fresh.age, fresh.chain, fresh.total),
            (0.0, 0.0, 0.5, 0.5)
        );
        let seasoned = Record {
            payers: 50,
            registered_at: Some(0),
            ..Record::default()
        };
        let year = 365 * 86_400;
        let s = score(&seasoned, year, &nothing);
        assert!(s.chain > 0.99 && s.chain <= 1.0, "{s:?}");
        let half_down = Seen {
            answered: 5,
            unreachable: 5,
            ..Seen::default()
        };
        assert!((score(&seasoned, year, &half_down).total - s.total / 2.0).abs() < 1e-12);
        let forger = Seen {
            answered: 10,
            receipts: 10,
            bad_receipts: 10,
            ..Seen::default()
        };
        assert!(score(&seasoned, year, &forger).routing < 0.1);
        let one_slip = Seen {
            answered: 1000,
            receipts: 1000,
            bad_receipts: 1,
            ..Seen::default()
        };
        assert!(score(&seasoned, year, &one_slip).routing > 0.98);
    }
}
