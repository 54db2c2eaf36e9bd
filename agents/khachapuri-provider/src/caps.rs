//! Spending caps: a spec may cap what the agent charges its owner per period ([`SpendCap`]), so an
//! owner-pays URL that leaks costs at most the cap per period until the owner revokes it. Only charges to
//! the owner count (a payer token spends its signer's money, under its own max price); periods are fixed
//! windows counted from the unix epoch, the same for every agent and for the owner's own arithmetic.
//!
//! The count lives in this agent's memory, keyed by the terms hash (every CID of the same signed terms
//! shares it). A charge is taken from the cap before the claim and given back if the claim fails, so
//! concurrent calls can never together pass it. What it does not do: survive a restart of the agent, or
//! add up the charges of other agents running the same open spec; the escrow's reserve bounds those.

use std::collections::HashMap;
use std::sync::Mutex;

use khachapuri_chain::{B256, Usdc};
use khachapuri_protocol::logs::CapSpent;
use khachapuri_spec::SpendCap;

/// Remembered windows past which those that ended are dropped (live ones never are: dropping one would
/// reopen its cap); the bound then doubles past what is left, so pruning stays rare.
const PRUNE_AT: usize = 65_536;

/// What the owner was charged, per deployment, in the current window.
pub(crate) struct SpendCaps {
    state: Mutex<State>,
}

struct State {
    windows: HashMap<B256, Window>,
    prune_at: usize,
}

impl Default for SpendCaps {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                windows: HashMap::new(),
                prune_at: PRUNE_AT,
            }),
        }
    }
}

#[derive(Clone, Copy)]
struct Window {
    /// `unix / period` of the window.
    index: u64,
    /// When it ends, unix seconds.
    ends_at: u64,
    /// Charged to the owner in it.
    spent: Usdc,
}

/// A charge counted against a cap; [`SpendCaps::give_back`] undoes it when the claim fails.
#[must_use = "give it back if the claim fails"]
pub(crate) struct Taken {
    spec: B256,
    index: u64,
    price: Usdc,
}

/// A charge that would pass the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reached {
    /// The cap.
    pub cap: Usdc,
    /// Already charged in this window.
    pub spent: Usdc,
    /// When the window ends (the cap opens again), unix seconds.
    pub resets_at: u64,
}

impl SpendCaps {
    /// Counts `price` against deployment `spec`'s cap in the window `now` falls in, or says it is reached.
    pub(crate) fn take(
        &self,
        spec: B256,
        cap: &SpendCap,
        price: Usdc,
        now: u64,
    ) -> Result<Taken, Reached> {
        let (index, ends_at) = cap.window(now);
        let limit = Usdc::from_u256(cap.amount);
        let mut state = self.lock();
        if state.windows.len() >= state.prune_at {
            state.windows.retain(|_, w| w.ends_at > now);
            state.prune_at = (state.windows.len() * 2).max(PRUNE_AT);
        }
        let window = state.windows.entry(spec).or_insert(Window {
            index,
            ends_at,
            spent: Usdc::ZERO,
        });
        // Only a later window starts a new count: a request that read the clock just before the turn (or
        // a clock stepped back) counts against the newer window, never erases it.
        if index > window.index {
            *window = Window {
                index,
                ends_at,
                spent: Usdc::ZERO,
            };
        }
        match window.spent.checked_add(price) {
            Some(total) if total <= limit => {
                window.spent = total;
                Ok(Taken {
                    spec,
                    index: window.index,
                    price,
                })
            }
            _ => Err(Reached {
                cap: limit,
                spent: window.spent,
                resets_at: window.ends_at,
            }),
        }
    }

    /// What deployment `spec` charged its owner in the window `now` falls in, and when that window ends.
    pub(crate) fn spent(&self, spec: B256, cap: &SpendCap, now: u64) -> CapSpent {
        let (index, resets_at) = cap.window(now);
        let spent = self
            .lock()
            .windows
            .get(&spec)
            .filter(|w| w.index == index)
            .map_or(Usdc::ZERO, |w| w.spent);
        CapSpent { spent, resets_at }
    }

    /// Undoes a [`Self::take`] whose claim failed (nothing was charged).
    pub(crate) fn give_back(&self, taken: Taken) {
        let mut state = self.lock();
        if let Some(window) = state.windows.get_mut(&taken.spec)
            && window.index == taken.index
        {
            window.spent = window.spent.saturating_sub(taken.price);
            // A deployment that was never charged leaves nothing behind (unfunded specs cannot grow this).
            if window.spent == Usdc::ZERO {
                state.windows.remove(&taken.spec);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use khachapuri_chain::U256;

    const DAY: u64 = 86_400;

    fn cap(usdc: u64) -> SpendCap {
        SpendCap {
            amount: U256::from(usdc * 1_000_000),
            period_seconds: DAY,
        }
    }

    #[test]
    fn a_cap_admits_charges_up_to_it_and_opens_again_next_period() {
        let caps = SpendCaps::default();
        let spec = B256::repeat_byte(1);
        let price = Usdc::from_units(400_000);
        let now = 10 * DAY + 5;
        assert!(caps.take(spec, &cap(1), price, now).is_ok());
        assert!(caps.take(spec, &cap(1), price, now + 1).is_ok());
        let reached = caps
            .take(spec, &cap(1), price, now + 2)
            .err()
            .expect("a third 0.40 passes a 1.00 cap");
        assert_eq!(
            reached,
            Reached {
                cap: Usdc::from_whole(1),
                spent: Usdc::from_units(800_000),
                resets_at: 11 * DAY,
            }
        );
        // Another deployment has its own count.
        assert!(caps.take(B256::repeat_byte(2), &cap(1), price, now).is_ok());
        assert_eq!(
            caps.spent(spec, &cap(1), now).spent,
            Usdc::from_units(800_000)
        );
        // The next window starts from zero.
        assert_eq!(caps.spent(spec, &cap(1), 11 * DAY).spent, Usdc::ZERO);
        assert!(caps.take(spec, &cap(1), price, 11 * DAY).is_ok());
    }

    #[test]
    fn a_failed_claim_gives_its_charge_back_but_not_into_a_later_window() {
        let caps = SpendCaps::default();
        let spec = B256::repeat_byte(1);
        let price = Usdc::from_whole(1);
        let taken = caps.take(spec, &cap(1), price, 5).ok().unwrap();
        assert!(caps.take(spec, &cap(1), price, 6).is_err());
        caps.give_back(taken);
        let taken = caps.take(spec, &cap(1), price, 7).ok().unwrap();
        // The window turned between the take and the give-back: the new window is not credited.
        assert!(caps.take(spec, &cap(1), price, DAY).is_ok());
        caps.give_back(taken);
        assert!(caps.take(spec, &cap(1), price, DAY + 1).is_err());
    }

    #[test]
    fn a_late_request_from_the_last_window_never_erases_the_new_one() {
        let caps = SpendCaps::default();
        let spec = B256::repeat_byte(1);
        let price = Usdc::from_units(600_000);
        assert!(caps.take(spec, &cap(1), price, DAY).is_ok());
        // It read the clock at DAY - 1 and got the lock after: counted in the new window, and refused.
        let reached = caps.take(spec, &cap(1), price, DAY - 1).err().unwrap();
        assert_eq!((reached.spent, reached.resets_at), (price, 2 * DAY));
        assert_eq!(caps.spent(spec, &cap(1), DAY).spent, price);
    }

    #[test]
    fn a_claim_that_charged_nothing_leaves_no_entry() {
        let caps = SpendCaps::default();
        for i in 0..100u8 {
            let taken = caps
                .take(B256::repeat_byte(i), &cap(1), Usdc::from_units(1), 5)
                .ok()
                .unwrap();
            caps.give_back(taken);
        }
        assert!(caps.lock().windows.is_empty());
    }

    #[test]
    fn a_price_above_the_cap_never_fits() {
        let caps = SpendCaps::default();
        let reached = caps
            .take(B256::ZERO, &cap(1), Usdc::from_whole(2), 0)
            .err()
            .unwrap();
        assert_eq!(reached.spent, Usdc::ZERO);
    }
}
