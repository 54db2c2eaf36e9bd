//! Escrow reads and writes, amounts in [`Usdc`].

use alloy::primitives::{Address, U256};
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

/// The terms in force now between a payer and a provider.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Allowance {
    /// The most the provider may charge per request.
    pub price_per_request: Usdc,
    /// What is left of the budget.
    pub budget_left: Usdc,
    /// Trial credits the provider granted the payer (spent first, need no approval).
    pub credits: Usdc,
}

/// A payer's pending withdrawal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingWithdrawal {
    /// The amount asked.
    pub amount: Usdc,
    /// When it may complete (unix seconds).
    pub ready_at: u64,
}

/// A lowering of terms not yet in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingCut {
    /// The new price per request.
    pub price_per_request: Usdc,
    /// The new budget.
    pub budget: Usdc,
    /// When it applies (unix seconds).
    pub effective_at: u64,
}

fn secs(v: U256) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

impl Chain {
    fn escrow(&self) -> Escrow::EscrowInstance<&alloy::providers::DynProvider> {
        Escrow::new(self.deployment().escrow, self.provider())
    }

    fn token(&self) -> TestUSDC::TestUSDCInstance<&alloy::providers::DynProvider> {
        TestUSDC::new(self.deployment().usdc, self.provider())
    }

    /* ------------------------------------------ reads ------------------------------------------ */

    /// The terms in force for `provider` charging `payer`, and `payer`'s credits with it.
    pub async fn allowance(
        &self,
        payer: Address,
        provider: Address,
    ) -> Result<Allowance, ChainError> {
        let a = self.escrow().allowance(payer, provider).call().await?;
        Ok(Allowance {
            price_per_request: a.pricePerRequest.into(),
            budget_left: a.budgetLeft.into(),
            credits: a.credits.into(),
        })
    }

    /// `payer`'s balance in the escrow (including any amount whose withdrawal is pending).
    pub async fn balance(&self, payer: Address) -> Result<Usdc, ChainError> {
        Ok(self.escrow().balanceOf(payer).call().await?.into())
    }

    /// The trial credits `provider` granted `user`.
    pub async fn credits(&self, user: Address, provider: Address) -> Result<Usdc, ChainError> {
        Ok(self.allowance(user, provider).await?.credits)
    }

    /// `payer`'s pending withdrawal, if any.
    pub async fn pending_withdrawal(
        &self,
        payer: Address,
    ) -> Result<Option<PendingWithdrawal>, ChainError> {
        let w = self.escrow().pendingWithdrawal(payer).call().await?;
        Ok((w.readyAt != U256::ZERO).then(|| PendingWithdrawal {
            amount: w.amount.into(),
            ready_at: secs(w.readyAt),
        }))
    }

    /// A lowering of `payer`'s terms for `provider` not yet in force, if any.
    pub async fn pending_cut(
        &self,
        payer: Address,
        provider: Address,
    ) -> Result<Option<PendingCut>, ChainError> {
        let c = self.escrow().pendingCut(payer, provider).call().await?;
        Ok((c.effectiveAt != U256::ZERO).then(|| PendingCut {
            price_per_request: c.pricePerRequest.into(),
            budget: c.budget.into(),
            effective_at: secs(c.effectiveAt),
        }))
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
    /// the token if its allowance is short.
    pub async fn deposit(&self, on_behalf: Address, amount: Usdc) -> Result<Receipt, ChainError> {
        let me = self.address()?;
        let escrow = self.deployment().escrow;
        let allowed = self.token().allowance(me, escrow).call().await?;
        if allowed < amount.to_u256() {
            self.send(self.token().approve(escrow, amount.to_u256()))
                .await?;
        }
        Ok((&self
            .send(self.escrow().deposit(on_behalf, amount.to_u256()))
            .await?)
            .into())
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

    /// Lets `provider` charge at most `price_per_request` per request and `budget` in total. Raising applies
    /// now; lowering after the withdrawal delay.
    pub async fn approve(
        &self,
        provider: Address,
        price_per_request: Usdc,
        budget: Usdc,
    ) -> Result<Receipt, ChainError> {
        Ok((&self
            .send(
                self.escrow()
                    .approve(provider, price_per_request.to_u256(), budget.to_u256()),
            )
            .await?)
            .into())
    }

    /// Starts (or restarts) a withdrawal of `amount`; it may complete after the withdrawal delay.
    pub async fn request_withdrawal(&self, amount: Usdc) -> Result<Receipt, ChainError> {
        Ok((&self
            .send(self.escrow().requestWithdrawal(amount.to_u256()))
            .await?)
            .into())
    }

    /// Cancels the signer's pending withdrawal.
    pub async fn cancel_withdrawal(&self) -> Result<Receipt, ChainError> {
        Ok((&self.send(self.escrow().cancelWithdrawal()).await?).into())
    }

    /// Completes the signer's withdrawal to `to` once its delay has passed.
    pub async fn withdraw(&self, to: Address) -> Result<Receipt, ChainError> {
        Ok((&self.send(self.escrow().withdraw(to)).await?).into())
    }

    /* ---------------------------------------- providers ---------------------------------------- */

    /// Charges `payer` one request at `price` (the signer is the provider).
    pub async fn consume(&self, payer: Address, price: Usdc) -> Result<Receipt, ChainError> {
        Ok((&self
            .send(self.escrow().consume(payer, price.to_u256()))
            .await?)
            .into())
    }

    /// Settles `charges` in one transaction; reverts whole if one is not allowed (see [`crate::Settler`]
    /// for a sender that drops the failing payer and settles the rest).
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
        if !self.deployment().test_token {
            return Err(ChainError::InvalidArgument(
                "this deployment's token is not the mintable TestUSDC".into(),
            ));
        }
        Ok((&self.send(self.token().mint(to, amount.to_u256())).await?).into())
    }
}
