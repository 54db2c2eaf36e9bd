//! Escrow reads and writes, amounts in [`Usdc`].

use std::future::IntoFuture;

use alloy::primitives::{Address, B256, U256};
use alloy::signers::Signer;
use alloy::sol_types::{Eip712Domain, SolStruct};
use khachapuri_bindings::{Escrow, TestUSDC};

use crate::eip712::Permit;
use crate::{Chain, ChainError, Receipt, Usdc};

/// One line of a settlement: `count` requests of `payer`, each at `price`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Charge {
    /// Who pays.
    pub payer: Address,
    /// The price of one request.
    pub price: Usdc,
    /// How many requests.
    pub count: u32,
}

impl Charge {
    /// One request of `payer` at `price`.
    pub fn one(payer: Address, price: Usdc) -> Self {
        Self {
            payer,
            price,
            count: 1,
        }
    }

    /// `price * count`.
    pub fn total(&self) -> Usdc {
        self.price
            .checked_mul(u128::from(self.count))
            .unwrap_or(Usdc::MAX)
    }

    pub(crate) fn to_binding(self) -> Result<Escrow::Charge, ChainError> {
        let price = u64::try_from(self.price.units()).map_err(|_| {
            ChainError::InvalidArgument(format!("price {} is too large", self.price))
        })?;
        if price == 0 || self.count == 0 {
            return Err(ChainError::InvalidArgument(
                "a charge needs a non-zero price and count".into(),
            ));
        }
        Ok(Escrow::Charge {
            payer: self.payer,
            price,
            count: self.count,
        })
    }
}

/// What a payer has with one provider, as a charge made now would see it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Terms {
    /// The most the provider may charge per request.
    pub price_per_request: Usdc,
    /// Money set aside for the provider: the most it can still be paid from the payer's tokens.
    pub reserve: Usdc,
    /// Trial credits the provider granted the payer (spent first, backed by nothing).
    pub credits: Usdc,
    /// A lowered price waiting for the escrow's delay.
    pub price_cut: Option<Scheduled>,
    /// An amount waiting for the escrow's delay to go back from the reserve to the free balance.
    pub release: Option<Scheduled>,
    /// Released and not yet moved to the free balance (any transaction touching the pair moves it, or
    /// [`Chain::apply_pending`]).
    pub releasable: Usdc,
    /// The token's issuer froze (blacklisted) the payer: the escrow charges nothing from it, and moves
    /// none of its money, until the freeze is lifted.
    pub frozen: bool,
}

impl Terms {
    /// The price a claim made now may be charged at for as long as the delay runs: the lower of the price in
    /// force and a pending cut.
    pub fn claimable_price(&self) -> Usdc {
        match self.price_cut {
            Some(cut) => self.price_per_request.min(cut.amount),
            None => self.price_per_request,
        }
    }

    /// What a claim made now can count on from the reserve for as long as the delay runs: the reserve less
    /// a pending release.
    pub fn claimable_reserve(&self) -> Usdc {
        let releasing = self.release.map_or(0, |r| r.amount.units());
        Usdc::from_units(self.reserve.units().saturating_sub(releasing))
    }

    /// Whether one request at `price` fits these terms as the escrow charges them (credits first, then the
    /// price and the reserve a claim made now can count on), before any unsettled claim of a provider: a
    /// router's first filter; the provider itself counts its unsettled claims too.
    pub fn covers(&self, price: Usdc) -> bool {
        // Credits pay first; whatever they leave comes from the reserve, at a price the terms allow.
        let from_reserve = price.units().saturating_sub(self.credits.units());
        !self.frozen
            && (from_reserve == 0
                || (self.claimable_price() >= price
                    && self.claimable_reserve().units() >= from_reserve))
    }

    /// Whether the payer has set anything up with this provider.
    pub fn is_empty(&self) -> bool {
        Self {
            frozen: false,
            ..*self
        } == Self::default()
    }
}

/// A change of terms waiting for the escrow's delay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scheduled {
    /// The new price (a price cut) or the amount to release (a release).
    pub amount: Usdc,
    /// When it takes effect (unix seconds).
    pub at: u64,
}

fn secs(v: U256) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

fn scheduled(amount: U256, at: U256) -> Option<Scheduled> {
    (at != U256::ZERO).then(|| Scheduled {
        amount: amount.into(),
        at: secs(at),
    })
}

impl Chain {
    fn escrow(&self) -> Escrow::EscrowInstance<&alloy::providers::DynProvider> {
        Escrow::new(self.deployment().escrow, self.provider())
    }

    pub(crate) fn token(&self) -> TestUSDC::TestUSDCInstance<&alloy::providers::DynProvider> {
        TestUSDC::new(self.deployment().usdc, self.provider())
    }

    /* ------------------------------------------ reads ------------------------------------------ */

    /// What `payer` has with `provider`: terms in force, credits, pending changes.
    pub async fn terms(&self, payer: Address, provider: Address) -> Result<Terms, ChainError> {
        self.terms_at(payer, provider, alloy::eips::BlockId::latest())
            .await
    }

    /// [`Chain::terms`] as of the node's newest block, which must be `block` or later: a charge that
    /// landed in `block` is in them. A node behind it (a lagging replica behind a load balancer) is
    /// [`ChainError::Unavailable`]; one that cannot serve the block it named answers with an error (a
    /// lagging replica behind the same load balancer: "header not found"). Block 0 asks nothing of
    /// the node: [`Chain::terms`], in one round trip.
    pub async fn terms_since(
        &self,
        payer: Address,
        provider: Address,
        block: u64,
    ) -> Result<Terms, ChainError> {
        use alloy::providers::Provider;
        if block == 0 {
            return self.terms(payer, provider).await;
        }
        let head = self.provider().get_block_number().await?;
        if head < block {
            return Err(ChainError::Unavailable {
                message: format!(
                    "the RPC node is at block {head}, behind block {block} where this provider's last charge landed; retry when it catches up, or use another node"
                ),
            });
        }
        self.terms_at(payer, provider, alloy::eips::BlockId::number(head))
            .await
    }

    async fn terms_at(
        &self,
        payer: Address,
        provider: Address,
        block: alloy::eips::BlockId,
    ) -> Result<Terms, ChainError> {
        let escrow = self.escrow();
        let terms = escrow.terms(payer, provider).block(block);
        let frozen = escrow.isFrozen(payer).block(block);
        let (t, frozen) =
            futures::try_join!(terms.call().into_future(), frozen.call().into_future())?;
        Ok(Terms {
            frozen,
            price_per_request: t.price.into(),
            reserve: t.reserve.into(),
            credits: t.credits.into(),
            price_cut: scheduled(t.pendingPrice, t.priceAt),
            release: scheduled(t.pendingRelease, t.releaseAt),
            releasable: t.releasable.into(),
        })
    }

    /// `payer`'s free balance in the escrow: withdrawable at once, chargeable by nobody.
    pub async fn free_balance(&self, payer: Address) -> Result<Usdc, ChainError> {
        Ok(self.escrow().freeBalance(payer).call().await?.into())
    }

    /// The trial credits `provider` granted `user`.
    pub async fn credits(&self, user: Address, provider: Address) -> Result<Usdc, ChainError> {
        Ok(self.terms(user, provider).await?.credits)
    }

    /// The providers `payer` has ever set terms with (from the escrow's `TermsSet` and `ReleaseScheduled`
    /// events since the deployment's first block), in the order first seen.
    pub async fn providers_of(&self, payer: Address) -> Result<Vec<Address>, ChainError> {
        use alloy::providers::Provider;
        use alloy::rpc::types::Filter;
        use alloy::sol_types::SolEvent;
        let filter = Filter::new()
            .address(self.deployment().escrow)
            .from_block(self.deployment().deployment_block)
            .event_signature(vec![
                Escrow::TermsSet::SIGNATURE_HASH,
                Escrow::ReleaseScheduled::SIGNATURE_HASH,
            ])
            .topic1(payer.into_word());
        let logs = self.provider().get_logs(&filter).await?;
        let mut seen = Vec::new();
        for log in logs {
            if let Some(topic) = log.topics().get(2) {
                let provider = Address::from_word(*topic);
                if !seen.contains(&provider) {
                    seen.push(provider);
                }
            }
        }
        Ok(seen)
    }

    /// `provider`'s earnings, withdrawable at once.
    pub async fn earnings(&self, provider: Address) -> Result<Usdc, ChainError> {
        Ok(self.escrow().earnings(provider).call().await?.into())
    }

    /// USDC held by `owner` in its wallet (outside the escrow).
    pub async fn token_balance(&self, owner: Address) -> Result<Usdc, ChainError> {
        Ok(self.token().balanceOf(owner).call().await?.into())
    }

    /* ----------------------------------------- payers ----------------------------------------- */

    /// Deposits `amount` from the signer's wallet to `on_behalf`'s balance, first approving the escrow on
    /// the token if its allowance is short. What the escrow or the token would refuse (a frozen account, a
    /// paused token, a short wallet) is refused before any transaction; if the deposit still fails after an
    /// approval, the allowance is put back as it was, and the error says whether that worked.
    /// [`Chain::deposit_with_permit`] needs one transaction and leaves no allowance either way.
    pub async fn deposit(&self, on_behalf: Address, amount: Usdc) -> Result<Receipt, ChainError> {
        let me = self.address()?;
        self.check_deposit(me, on_behalf, amount).await?;
        let escrow = self.deployment().escrow;
        let allowed = self.token().allowance(me, escrow).call().await?;
        let approved = allowed < amount.to_u256();
        if approved {
            self.send(self.token().approve(escrow, amount.to_u256()))
                .await?;
        }
        match self
            .send(self.escrow().deposit(on_behalf, amount.to_u256()))
            .await
        {
            Ok(receipt) => Ok((&receipt).into()),
            Err(err) if !approved => Err(err),
            // No receipt in time: the deposit may still land, and then it needs the approval. Say so
            // rather than undo it and report a failure that may not be one.
            Err(err @ (ChainError::Unavailable { .. } | ChainError::Rpc { .. })) => {
                Err(err.with_note(&format!(
                    "the deposit's outcome is unknown: check `escrow balance` before depositing again; \
                     the approval of {amount} to the escrow {escrow} stays until the deposit spends it"
                )))
            }
            Err(err) => {
                let previous = Usdc::from_u256(allowed);
                let note = match self.send(self.token().approve(escrow, allowed)).await {
                    Ok(_) => format!(
                        "the approval sent for it was undone (the escrow's allowance is {previous} again)"
                    ),
                    Err(undo) => format!(
                        "an approval of {amount} to the escrow {escrow} is left on the token (undoing it failed: \
                         {undo}); revoke it from your wallet"
                    ),
                };
                Err(err.with_note(&note))
            }
        }
    }

    /// Refuses a deposit the escrow or the token would refuse, before any transaction: a frozen sender or
    /// beneficiary, a paused token, a wallet holding less than `amount`.
    pub async fn check_deposit(
        &self,
        from: Address,
        on_behalf: Address,
        amount: Usdc,
    ) -> Result<(), ChainError> {
        use alloy::sol_types::{Revert, SolError};
        let escrow = self.escrow();
        for account in [from, on_behalf] {
            if escrow.isFrozen(account).call().await? {
                return Err(ChainError::from_revert_data(
                    &Escrow::Frozen { account }.abi_encode(),
                ));
            }
        }
        // A token without `paused()` cannot be paused.
        if self.token().paused().call().await.unwrap_or(false) {
            return Err(ChainError::from_revert_data(
                &Revert::from("Pausable: paused").abi_encode(),
            ));
        }
        // The token's own refusal, read as the same sentence.
        let balance = self.token().balanceOf(from).call().await?;
        if balance < amount.to_u256() {
            let short = TestUSDC::ERC20InsufficientBalance {
                sender: from,
                balance,
                needed: amount.to_u256(),
            };
            return Err(ChainError::from_revert_data(&short.abi_encode()));
        }
        Ok(())
    }

    /// When `owner` revoked its deployment with terms hash `spec` (`Spec::terms_hash`), in unix seconds,
    /// if it did.
    pub async fn revoked_at(&self, owner: Address, spec: B256) -> Result<Option<u64>, ChainError> {
        let at = self.escrow().revokedAt(owner, spec).call().await?;
        Ok((!at.is_zero()).then(|| at.saturating_to::<u64>()))
    }

    /// Revokes the signer's deployment with terms hash `spec` (`Spec::terms_hash`) for good: providers
    /// refuse calls to it, under any CID, from now on.
    pub async fn revoke_spec(&self, spec: B256) -> Result<Receipt, ChainError> {
        Ok((&self.send(self.escrow().revokeSpec(spec)).await?).into())
    }

    /// Whether the token's issuer froze (blacklisted) `account`, so that the escrow moves none of its money.
    pub async fn is_frozen(&self, account: Address) -> Result<bool, ChainError> {
        Ok(self.escrow().isFrozen(account).call().await?)
    }

    /// Whether the token has EIP-2612 `permit` (its nonces and domain can be read), so that a deposit takes one
    /// transaction and leaves no allowance.
    pub async fn token_has_permit(&self) -> bool {
        let Ok(me) = self.address() else {
            return false;
        };
        self.token().nonces(me).call().await.is_ok() && self.token_domain().await.is_ok()
    }

    /// Deposits with an EIP-2612 permit signed locally against the token's domain (one transaction).
    pub async fn deposit_with_permit(
        &self,
        on_behalf: Address,
        amount: Usdc,
        deadline: u64,
    ) -> Result<Receipt, ChainError> {
        let signer = self.signer_required()?;
        let me = signer.address();
        self.check_deposit(me, on_behalf, amount).await?;
        let token = self.token();
        let nonce = token.nonces(me).call().await?;
        let permit = Permit {
            owner: me,
            spender: self.deployment().escrow,
            value: amount.to_u256(),
            nonce,
            deadline: U256::from(deadline),
        };
        let hash = permit.eip712_signing_hash(&self.token_domain().await?);
        let sig = signer
            .sign_hash(&hash)
            .await
            .map_err(|e| ChainError::Signer(e.to_string()))?;
        let v = 27 + u8::from(sig.v());
        let escrow = self.escrow();
        let call = escrow.depositWithPermit(
            on_behalf,
            amount.to_u256(),
            U256::from(deadline),
            v,
            sig.r().into(),
            sig.s().into(),
        );
        Ok((&self.send(call).await?).into())
    }

    /// The token's EIP-712 domain (for permits): ERC-5267 `eip712Domain()` where the token has it, else
    /// its `name()` with the version whose separator matches `DOMAIN_SEPARATOR()`.
    pub async fn token_domain(&self) -> Result<Eip712Domain, ChainError> {
        let token = self.token();
        let chain_id = U256::from(self.deployment().chain_id);
        let address = self.deployment().usdc;
        if let Ok(d) = token.eip712Domain().call().await {
            return Ok(Eip712Domain::new(
                Some(d.name.into()),
                Some(d.version.into()),
                Some(d.chainId),
                Some(d.verifyingContract),
                None,
            ));
        }
        let name = token.name().call().await?;
        let separator = token.DOMAIN_SEPARATOR().call().await?;
        ["2", "1"]
            .into_iter()
            .map(|v| {
                Eip712Domain::new(
                    Some(name.clone().into()),
                    Some(v.into()),
                    Some(chain_id),
                    Some(address),
                    None,
                )
            })
            .find(|d| d.separator() == separator)
            .ok_or_else(|| ChainError::Decode("cannot work out the token's EIP-712 domain".into()))
    }

    /// Whether `authorizer` already used (or cancelled) the token's EIP-3009 nonce `nonce`.
    pub async fn authorization_state(
        &self,
        authorizer: Address,
        nonce: B256,
    ) -> Result<bool, ChainError> {
        Ok(self
            .token()
            .authorizationState(authorizer, nonce)
            .call()
            .await?)
    }

    /// Settles an x402 payment: the token's EIP-3009 `transferWithAuthorization` in its bytes-signature
    /// form (an EOA's or an ERC-1271 wallet's signature), sent by this client's signer (anyone may send
    /// it; the money moves from `from` to `to` as signed).
    pub async fn transfer_with_authorization(
        &self,
        authorization: &khachapuri_protocol::x402::Authorization,
        signature: &alloy::primitives::Bytes,
    ) -> Result<Receipt, ChainError> {
        let token = self.token();
        let call = transfer_with_authorization_call(&token, authorization, signature);
        Ok((&self.send(call).await?).into())
    }

    /// Sends `amount` of the signer's free balance to `to`, at once.
    pub async fn withdraw(&self, to: Address, amount: Usdc) -> Result<Receipt, ChainError> {
        Ok((&self
            .send(self.escrow().withdraw(to, amount.to_u256()))
            .await?)
            .into())
    }

    /// Sets the most `provider` may charge per request and moves `amount` of the signer's free balance
    /// into its reserve with `provider`. Raises apply now; a lower price after the escrow's delay; the
    /// price in force changes nothing.
    pub async fn reserve(
        &self,
        provider: Address,
        price_per_request: Usdc,
        amount: Usdc,
    ) -> Result<Receipt, ChainError> {
        Ok((&self
            .send(
                self.escrow()
                    .reserve(provider, price_per_request.to_u256(), amount.to_u256()),
            )
            .await?)
            .into())
    }

    /// Schedules `amount` of the signer's reserve with `provider` to return to its free balance after the
    /// escrow's delay (replacing a pending release). [`Usdc::MAX`]: everything.
    pub async fn release(&self, provider: Address, amount: Usdc) -> Result<Receipt, ChainError> {
        Ok((&self
            .send(self.escrow().release(provider, amount.to_u256()))
            .await?)
            .into())
    }

    /// Drops the signer's pending price cut and release with `provider`.
    pub async fn cancel_pending(&self, provider: Address) -> Result<Receipt, ChainError> {
        Ok((&self.send(self.escrow().cancelPending(provider)).await?).into())
    }

    /// Puts `payer`'s pending changes with `provider` whose time has come into force (anyone may).
    pub async fn apply_pending(
        &self,
        payer: Address,
        provider: Address,
    ) -> Result<Receipt, ChainError> {
        Ok((&self
            .send(self.escrow().applyPending(payer, provider))
            .await?)
            .into())
    }

    /* ---------------------------------------- providers ---------------------------------------- */

    /// Charges `payer` one request at `price` (the signer is the provider).
    pub async fn consume(&self, payer: Address, price: Usdc) -> Result<Receipt, ChainError> {
        Ok((&self
            .send(self.escrow().consume(payer, price.to_u256()))
            .await?)
            .into())
    }

    /// Settles `charges` in one transaction: the lines that fit are charged, each other one is reported
    /// in a `ChargeRefused` event (see [`crate::Settler`], which tells every claim its outcome).
    pub async fn consume_batch(&self, charges: &[Charge]) -> Result<Receipt, ChainError> {
        let lines = charges
            .iter()
            .map(|c| c.to_binding())
            .collect::<Result<Vec<_>, _>>()?;
        Ok((&self.send(self.escrow().consumeBatch(lines)).await?).into())
    }

    /// Grants `user` `amount` of trial credits, spendable only with the signer.
    pub async fn grant_credits(&self, user: Address, amount: Usdc) -> Result<Receipt, ChainError> {
        Ok((&self
            .send(self.escrow().grantCredits(user, amount.to_u256()))
            .await?)
            .into())
    }

    /// Sends `amount` of the signer's earnings to `to`.
    pub async fn withdraw_earnings(
        &self,
        to: Address,
        amount: Usdc,
    ) -> Result<Receipt, ChainError> {
        Ok((&self
            .send(self.escrow().withdrawEarnings(to, amount.to_u256()))
            .await?)
            .into())
    }

    /* ------------------------------------------ token ------------------------------------------ */

    /// Mints test USDC to `to` (TestUSDC only: refused on a deployment with a real token).
    pub async fn mint_test_usdc(&self, to: Address, amount: Usdc) -> Result<Receipt, ChainError> {
        self.test_token_only()?;
        Ok((&self.send(self.token().mint(to, amount.to_u256())).await?).into())
    }

    /// Has TestUSDC blacklist `account` (USDC's freeze), or lift it: for trying frozen accounts locally. The
    /// signer must be the token's admin (its deployer).
    pub async fn freeze_test_account(
        &self,
        account: Address,
        frozen: bool,
    ) -> Result<Receipt, ChainError> {
        self.test_token_only()?;
        let token = self.token();
        let receipt = match frozen {
            true => self.send(token.blacklist(account)).await?,
            false => self.send(token.unBlacklist(account)).await?,
        };
        Ok((&receipt).into())
    }

    /// Has TestUSDC pause every transfer, or resume them. The signer must be the token's admin.
    pub async fn pause_test_token(&self, paused: bool) -> Result<Receipt, ChainError> {
        self.test_token_only()?;
        let token = self.token();
        let receipt = match paused {
            true => self.send(token.pause()).await?,
            false => self.send(token.unpause()).await?,
        };
        Ok((&receipt).into())
    }

    fn test_token_only(&self) -> Result<(), ChainError> {
        match self.deployment().test_token {
            true => Ok(()),
            false => Err(ChainError::InvalidArgument(
                "this deployment's token is not the mintable TestUSDC".into(),
            )),
        }
    }
}

/// The token call that settles an x402 payment: EIP-3009 `transferWithAuthorization` in its bytes-signature
/// form, as signed. [`Chain::transfer_with_authorization`] and the settlement task both send it.
pub(crate) fn transfer_with_authorization_call<'a, P: alloy::providers::Provider>(
    token: &'a TestUSDC::TestUSDCInstance<P>,
    a: &khachapuri_protocol::x402::Authorization,
    signature: &alloy::primitives::Bytes,
) -> alloy::contract::SolCallBuilder<&'a P, TestUSDC::transferWithAuthorization_0Call> {
    token.transferWithAuthorization_0(
        a.from,
        a.to,
        a.value,
        a.valid_after,
        a.valid_before,
        a.nonce,
        signature.clone(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(n: u128) -> Usdc {
        Usdc::from_units(n)
    }

    #[test]
    fn covers_reads_terms_as_the_escrow_charges_them() {
        let price = units(100);
        let none = Terms::default();
        assert!(!none.covers(price), "no terms");
        let reserved = Terms {
            price_per_request: price,
            reserve: price,
            ..Terms::default()
        };
        assert!(reserved.covers(price));
        assert!(!reserved.covers(units(101)), "a price above the terms");
        // Credits pay first, whatever the terms; what they leave needs the price and the reserve.
        let credits = Terms {
            credits: price,
            ..Terms::default()
        };
        assert!(credits.covers(price));
        let split = Terms {
            credits: units(40),
            reserve: units(60),
            price_per_request: price,
            ..Terms::default()
        };
        assert!(split.covers(price));
        assert!(
            !Terms {
                reserve: units(59),
                ..split
            }
            .covers(price)
        );
        // A pending cut and a pending release count as in force; a frozen payer pays nothing.
        let cut = Terms {
            price_cut: Some(Scheduled {
                amount: units(50),
                at: 1,
            }),
            ..reserved
        };
        assert!(!cut.covers(price));
        let release = Terms {
            release: Some(Scheduled {
                amount: units(1),
                at: 1,
            }),
            ..reserved
        };
        assert!(!release.covers(price));
        assert!(
            !Terms {
                frozen: true,
                ..reserved
            }
            .covers(price)
        );
    }
}
