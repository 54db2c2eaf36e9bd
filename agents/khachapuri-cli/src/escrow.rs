//! `khachapuri escrow`: a payer's side of the escrow. Deposit (with a permit: one transaction), approve a
//! provider, show balances, allowances and credits, and the two-step withdrawal.

use alloy::primitives::Address;
use anyhow::{Context, anyhow, bail};
use khachapuri_chain::{Chain, Usdc};
use serde_json::json;

use crate::args::{ChainArgs, at, or_me, parse_usdc, report, resolve_payee, unix_now};
use crate::progress;

/// `khachapuri escrow ...`
#[derive(clap::Subcommand, Debug)]
pub enum EscrowCommand {
    /// Deposit USDC from the wallet into the escrow.
    Deposit {
        /// How much, in USDC (e.g. 10 or 2.50).
        amount: String,
        /// Sign an EIP-2612 permit instead of sending a token approval: one transaction instead of two.
        #[arg(long)]
        permit: bool,
        /// Credit this account's escrow balance instead of the signer's.
        #[arg(long)]
        to: Option<Address>,
        #[command(flatten)]
        chain: ChainArgs,
    },
    /// Let a provider charge up to --price per request, --budget in all.
    Approve {
        /// The provider label.
        #[arg(long)]
        provider: String,
        /// Most per request, USDC.
        #[arg(long)]
        price: String,
        /// Most in all, USDC.
        #[arg(long)]
        budget: String,
        #[command(flatten)]
        chain: ChainArgs,
    },
    /// Wallet and escrow balances; with --provider, the allowance and credits with it.
    Balance {
        /// Whose balances [default: the signing account].
        #[arg(long)]
        address: Option<Address>,
        /// A provider label: show the allowance (price per request, budget left) and credits with it.
        #[arg(long)]
        provider: Option<String>,
        #[command(flatten)]
        chain: ChainArgs,
    },
    /// Take USDC out of the escrow: `start`, wait the escrow's delay, `finish` (or `cancel`).
    Withdraw {
        #[command(subcommand)]
        command: WithdrawCommand,
    },
}

/// `khachapuri escrow withdraw ...`
#[derive(clap::Subcommand, Debug)]
pub enum WithdrawCommand {
    /// Ask to withdraw an amount (or `all`); providers see it and settle their claims before it is ready.
    Start {
        /// How much, in USDC, or `all`.
        amount: String,
        #[command(flatten)]
        chain: ChainArgs,
    },
    /// Complete the pending withdrawal once its delay has passed, sending the USDC to --to.
    Finish {
        /// Where the USDC goes [default: the signing account].
        #[arg(long)]
        to: Option<Address>,
        #[command(flatten)]
        chain: ChainArgs,
    },
    /// Cancel the pending withdrawal.
    Cancel {
        #[command(flatten)]
        chain: ChainArgs,
    },
}

/// Runs an escrow command.
pub async fn escrow(command: EscrowCommand, json: bool) -> anyhow::Result<()> {
    match command {
        EscrowCommand::Deposit {
            amount,
            permit,
            to,
            chain,
        } => {
            let amount = parse_usdc("amount", &amount)?;
            let chain = chain.connect(true).await?;
            let me = or_me(&chain, None)?;
            let to = to.unwrap_or(me);
            let wallet = chain
                .token_balance(me)
                .await
                .context("reading the USDC balance")?;
            if wallet < amount {
                bail!("{me} holds {wallet}, less than {amount}; get USDC into this wallet first");
            }
            let r = if permit {
                let deadline = unix_now() + 3600;
                progress::wait(
                    format!("depositing {amount} with a permit"),
                    chain.deposit_with_permit(to, amount, deadline),
                )
                .await
            } else {
                progress::wait(format!("depositing {amount}"), chain.deposit(to, amount)).await
            }
            .map_err(|e| anyhow!("deposit failed: {e}"))?;
            let balance = chain
                .balance(to)
                .await
                .context("reading the escrow balance")?;
            report(
                json,
                format!("deposited {amount} into the escrow for {to}; its balance is {balance}"),
                json!({"deposited": amount.to_string(), "to": to.to_string(), "balance": balance.to_string(), "permit": permit}),
                Some(&r),
            );
            Ok(())
        }
        EscrowCommand::Approve {
            provider,
            price,
            budget,
            chain,
        } => {
            let price = parse_usdc("--price", &price)?;
            let budget = parse_usdc("--budget", &budget)?;
            let chain = chain.connect(true).await?;
            let payee = resolve_payee(&chain, &provider).await?;
            let r = progress::wait(
                format!("approving `{provider}`"),
                chain.approve(payee, price, budget),
            )
            .await
            .map_err(|e| anyhow!("approve failed: {e}"))?;
            let me = or_me(&chain, None)?;
            let cut = chain
                .pending_cut(me, payee)
                .await
                .context("reading the pending cut")?;
            let value = json!({
                "provider": provider, "payee": payee.to_string(),
                "pricePerRequest": price.to_string(), "budget": budget.to_string(),
                "effectiveAt": cut.map(|c| c.effective_at),
            });
            let human = match cut {
                Some(cut) => format!(
                    "lowering `{provider}` ({payee}) to {} per request, {} in all takes effect at {} (the escrow's \
                     delay); until then the old terms hold",
                    cut.price_per_request,
                    cut.budget,
                    at(cut.effective_at)
                ),
                None => format!(
                    "provider `{provider}` ({payee}) may charge up to {price} per request, {budget} in all"
                ),
            };
            report(json, human, value, Some(&r));
            Ok(())
        }
        EscrowCommand::Balance {
            address,
            provider,
            chain,
        } => balance(address, provider, chain, json).await,
        EscrowCommand::Withdraw { command } => withdraw(command, json).await,
    }
}

async fn balance(
    address: Option<Address>,
    provider: Option<String>,
    chain: ChainArgs,
    json: bool,
) -> anyhow::Result<()> {
    let chain = chain.connect(address.is_none()).await?;
    let who = or_me(&chain, address)?;
    let wallet = chain
        .token_balance(who)
        .await
        .context("reading the USDC balance")?;
    let escrowed = chain
        .balance(who)
        .await
        .context("reading the escrow balance")?;
    let pending = chain
        .pending_withdrawal(who)
        .await
        .context("reading the pending withdrawal")?;
    let mut value = json!({
        "address": who.to_string(),
        "wallet": wallet.to_string(),
        "escrow": escrowed.to_string(),
        "pendingWithdrawal": pending.as_ref().map(|p| json!({"amount": p.amount.to_string(), "readyAt": p.ready_at})),
    });
    let mut lines = vec![
        format!("account  {who}"),
        format!("wallet   {wallet}"),
        format!("escrow   {escrowed}"),
    ];
    if let Some(p) = &pending {
        lines.push(format!(
            "pending  {} withdrawal, ready at {}",
            p.amount,
            at(p.ready_at)
        ));
    }
    if let Some(label) = provider {
        let payee = resolve_payee(&chain, &label).await?;
        let a = chain
            .allowance(who, payee)
            .await
            .context("reading the allowance")?;
        value["provider"] = json!({
            "label": label,
            "payee": payee.to_string(),
            "pricePerRequest": a.price_per_request.to_string(),
            "budgetLeft": a.budget_left.to_string(),
            "credits": a.credits.to_string(),
        });
        lines.push(format!(
            "provider `{label}` ({payee}): up to {} per request, {} budget left, {} credits",
            a.price_per_request, a.budget_left, a.credits
        ));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        for l in lines {
            println!("{l}");
        }
    }
    Ok(())
}

async fn withdraw(command: WithdrawCommand, json: bool) -> anyhow::Result<()> {
    match command {
        WithdrawCommand::Start { amount, chain } => {
            let chain = chain.connect(true).await?;
            let me = or_me(&chain, None)?;
            let balance = chain
                .balance(me)
                .await
                .context("reading the escrow balance")?;
            let amount = if amount.trim() == "all" {
                balance
            } else {
                parse_usdc("amount", &amount)?
            };
            if amount == Usdc::ZERO {
                bail!("nothing to withdraw: the escrow holds {balance} for {me}");
            }
            if amount > balance {
                bail!(
                    "the escrow holds {balance} for {me}, less than {amount}; withdraw at most that (or `all`)"
                );
            }
            let r = progress::wait(
                format!("starting a withdrawal of {amount}"),
                chain.request_withdrawal(amount),
            )
            .await
            .map_err(|e| anyhow!("starting the withdrawal failed: {e}"))?;
            let pending = chain
                .pending_withdrawal(me)
                .await
                .context("reading the pending withdrawal")?
                .context("the withdrawal is not pending after its transaction")?;
            report(
                json,
                format!(
                    "withdrawal of {amount} started; finish it after {} with `khachapuri escrow withdraw finish`",
                    at(pending.ready_at)
                ),
                json!({"amount": amount.to_string(), "readyAt": pending.ready_at}),
                Some(&r),
            );
            Ok(())
        }
        WithdrawCommand::Finish { to, chain } => {
            let chain = chain.connect(true).await?;
            let me = or_me(&chain, None)?;
            let to = to.unwrap_or(me);
            let pending = ready_withdrawal(&chain, me).await?;
            let r = progress::wait(
                format!("withdrawing {} to {to}", pending.amount),
                chain.withdraw(to),
            )
            .await
            .map_err(|e| anyhow!("withdrawing failed: {e}"))?;
            report(
                json,
                format!("withdrew {} from the escrow to {to}", pending.amount),
                json!({"amount": pending.amount.to_string(), "to": to.to_string()}),
                Some(&r),
            );
            Ok(())
        }
        WithdrawCommand::Cancel { chain } => {
            let chain = chain.connect(true).await?;
            let me = or_me(&chain, None)?;
            let Some(pending) = chain
                .pending_withdrawal(me)
                .await
                .context("reading the pending withdrawal")?
            else {
                bail!("{me} has no withdrawal pending; nothing to cancel");
            };
            let r = progress::wait("cancelling the withdrawal", chain.cancel_withdrawal())
                .await
                .map_err(|e| anyhow!("cancelling failed: {e}"))?;
            report(
                json,
                format!(
                    "withdrawal of {} cancelled; it stays in the escrow",
                    pending.amount
                ),
                json!({"cancelled": pending.amount.to_string()}),
                Some(&r),
            );
            Ok(())
        }
    }
}

/// The signer's pending withdrawal, if its delay has passed; else an error saying when it will be.
async fn ready_withdrawal(
    chain: &Chain,
    me: Address,
) -> anyhow::Result<khachapuri_chain::PendingWithdrawal> {
    let Some(pending) = chain
        .pending_withdrawal(me)
        .await
        .context("reading the pending withdrawal")?
    else {
        bail!(
            "{me} has no withdrawal pending; start one with `khachapuri escrow withdraw start AMOUNT`"
        );
    };
    let now = chain
        .block_timestamp()
        .await
        .context("reading the chain's time")?;
    if now < pending.ready_at {
        bail!(
            "the withdrawal of {} is ready at {} ({} s from now); run `khachapuri escrow withdraw finish` then",
            pending.amount,
            at(pending.ready_at),
            pending.ready_at - now
        );
    }
    Ok(pending)
}
