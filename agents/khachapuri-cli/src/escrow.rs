//! `khachapuri escrow`: a payer's side of the escrow. Deposit (with a permit: one transaction), set money
//! aside for a provider (`reserve`), take it back (`release`, after the escrow's delay), withdraw the free
//! balance at once, and see everything at a glance (`balance`).

use alloy::primitives::Address;
use anyhow::{Context, anyhow, bail};
use khachapuri_chain::{Chain, Terms, Usdc};
use serde_json::json;

use crate::args::{ChainArgs, at, or_me, parse_usdc, report, resolve_payee, unix_now};
use crate::progress;

/// `khachapuri escrow ...`
#[derive(clap::Subcommand, Debug)]
pub enum EscrowCommand {
    /// Deposit USDC from the wallet into the escrow's free balance.
    Deposit {
        /// How much, in USDC (e.g. 10 or 2.50).
        amount: String,
        /// Require an EIP-2612 permit (one transaction, no allowance left behind). Without --permit or
        /// --approve, a permit is used where the token has it.
        #[arg(long, conflicts_with = "approve")]
        permit: bool,
        /// Send a token approval, then the deposit (two transactions), even where the token has permit.
        #[arg(long)]
        approve: bool,
        /// Credit this account's free balance instead of the signer's.
        #[arg(long)]
        to: Option<Address>,
        #[command(flatten)]
        chain: ChainArgs,
    },
    /// Set money aside for a provider (--amount, from the free balance, at once) and the most it may charge
    /// per request (--price: a raise applies at once, a cut after the escrow's delay).
    Reserve {
        /// The provider label.
        #[arg(long)]
        provider: String,
        /// Most per request, USDC [default: the price in force].
        #[arg(long)]
        price: Option<String>,
        /// USDC to move from the free balance into the reserve with this provider.
        #[arg(long)]
        amount: Option<String>,
        #[command(flatten)]
        chain: ChainArgs,
    },
    /// Ask for an amount of a provider's reserve (or `all`) back in the free balance, after the escrow's
    /// delay; the provider may still charge it until then.
    Release {
        /// The provider label.
        #[arg(long)]
        provider: String,
        /// How much, in USDC, or `all`.
        amount: String,
        #[command(flatten)]
        chain: ChainArgs,
    },
    /// Drop a pending price cut and release with a provider: the terms in force stay.
    Cancel {
        /// The provider label.
        #[arg(long)]
        provider: String,
        #[command(flatten)]
        chain: ChainArgs,
    },
    /// Send free balance (and any reserve whose release is due) back to the wallet, at once.
    Withdraw {
        /// How much, in USDC, or `all`.
        amount: String,
        /// Where the USDC goes [default: the signing account].
        #[arg(long)]
        to: Option<Address>,
        #[command(flatten)]
        chain: ChainArgs,
    },
    /// Wallet, free balance and every reserve with its price, credits and pending changes.
    Balance {
        /// Whose balances [default: the signing account].
        #[arg(long)]
        address: Option<Address>,
        /// Show only this provider label's terms.
        #[arg(long)]
        provider: Option<String>,
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
            approve,
            to,
            chain,
        } => {
            let amount = parse_usdc("amount", &amount)?;
            let chain = chain.connect(true).await?;
            let me = or_me(&chain, None)?;
            let to = to.unwrap_or(me);
            // Frozen accounts, a paused token and a short wallet are refused before anything is sent, by
            // both deposit paths (`Chain::check_deposit`).
            let permit = permit || (!approve && chain.token_has_permit().await);
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
            let free = chain
                .free_balance(to)
                .await
                .context("reading the free balance")?;
            report(
                json,
                format!(
                    "deposited {amount} into the escrow for {to}; its free balance is {free} (set some aside for a \
                     provider with `khachapuri escrow reserve`)"
                ),
                json!({"deposited": amount.to_string(), "to": to.to_string(), "free": free.to_string(), "permit": permit}),
                Some(&r),
            );
            Ok(())
        }
        EscrowCommand::Reserve {
            provider,
            price,
            amount,
            chain,
        } => reserve(provider, price, amount, chain, json).await,
        EscrowCommand::Release {
            provider,
            amount,
            chain,
        } => release(provider, amount, chain, json).await,
        EscrowCommand::Cancel { provider, chain } => cancel(provider, chain, json).await,
        EscrowCommand::Withdraw { amount, to, chain } => withdraw(amount, to, chain, json).await,
        EscrowCommand::Balance {
            address,
            provider,
            chain,
        } => balance(address, provider, chain, json).await,
    }
}

async fn terms(chain: &Chain, payer: Address, provider: Address) -> anyhow::Result<Terms> {
    chain
        .terms(payer, provider)
        .await
        .context("reading the terms with the provider")
}

async fn reserve(
    label: String,
    price: Option<String>,
    amount: Option<String>,
    chain: ChainArgs,
    json: bool,
) -> anyhow::Result<()> {
    if price.is_none() && amount.is_none() {
        bail!(
            "nothing to change: give --amount (USDC to set aside), --price (most per request), or both"
        );
    }
    let amount = amount
        .map(|a| parse_usdc("--amount", &a))
        .transpose()?
        .unwrap_or(Usdc::ZERO);
    let chain = chain.connect(true).await?;
    let me = or_me(&chain, None)?;
    let payee = resolve_payee(&chain, &label).await?;
    let before = terms(&chain, me, payee).await?;
    let price = match price {
        Some(p) => parse_usdc("--price", &p)?,
        None if before.price_per_request == Usdc::ZERO => bail!(
            "`{label}` has no price from you yet: give --price (the most it may charge per request)"
        ),
        None => before.price_per_request,
    };
    if amount > Usdc::ZERO {
        let free = chain
            .free_balance(me)
            .await
            .context("reading the free balance")?;
        if amount > free {
            bail!(
                "{me} has {free} free in the escrow, less than {amount}; deposit first with `khachapuri escrow \
                 deposit`"
            );
        }
    }
    let r = progress::wait(
        format!("reserving for `{label}`"),
        chain.reserve(payee, price, amount),
    )
    .await
    .map_err(|e| anyhow!("reserve failed: {e}"))?;
    let after = terms(&chain, me, payee).await?;

    let mut said = vec![format!(
        "`{label}` ({payee}) has {} reserved, up to {} per request",
        after.reserve, after.price_per_request
    )];
    if price < before.price_per_request {
        let cut = after
            .price_cut
            .context("the price cut is not pending after its transaction")?;
        said.push(format!(
            "the price cut to {price} takes effect at {} (the escrow's delay); until then {} holds",
            at(cut.at),
            after.price_per_request
        ));
        if let Some(old) = before.price_cut {
            said.push(format!(
                "it replaces the pending cut to {} that was due at {}",
                old.amount,
                at(old.at)
            ));
        }
    } else if price > before.price_per_request
        && let Some(old) = before.price_cut
    {
        said.push(format!(
            "the raise drops the pending cut to {} that was due at {}",
            old.amount,
            at(old.at)
        ));
    }
    report(
        json,
        said.join("; "),
        json!({
            "provider": label, "payee": payee.to_string(), "added": amount.to_string(),
            "terms": terms_json(&after),
            "replacedPriceCut": before.price_cut.filter(|_| price != before.price_per_request).map(|c| scheduled_json(c.amount, c.at)),
        }),
        Some(&r),
    );
    Ok(())
}

async fn release(
    label: String,
    amount: String,
    chain: ChainArgs,
    json: bool,
) -> anyhow::Result<()> {
    let chain = chain.connect(true).await?;
    let me = or_me(&chain, None)?;
    let payee = resolve_payee(&chain, &label).await?;
    let before = terms(&chain, me, payee).await?;
    let amount = if amount.trim() == "all" {
        Usdc::MAX
    } else {
        parse_usdc("amount", &amount)?
    };
    if amount == Usdc::ZERO {
        bail!("nothing to release: give an amount in USDC, or `all`");
    }
    if before.reserve == Usdc::ZERO {
        bail!("{me} has nothing reserved for `{label}`; nothing to release");
    }
    let r = progress::wait(
        format!("asking `{label}` to release"),
        chain.release(payee, amount),
    )
    .await
    .map_err(|e| anyhow!("release failed: {e}"))?;
    let after = terms(&chain, me, payee).await?;
    let pending = after
        .release
        .context("the release is not pending after its transaction")?;
    let shown = if amount == Usdc::MAX {
        format!("all of the reserve ({} now)", after.reserve)
    } else {
        amount.to_string()
    };
    let mut human = format!(
        "{shown} of the reserve with `{label}` goes back to the free balance at {} (the escrow's delay); until \
         then `{label}` may still charge it",
        at(pending.at)
    );
    if let Some(old) = before.release {
        human.push_str(&format!(
            "; this replaces the pending release of {} that was due at {}",
            old.amount,
            at(old.at)
        ));
    }
    report(
        json,
        human,
        json!({
            "provider": label, "payee": payee.to_string(),
            "release": scheduled_json(pending.amount, pending.at),
            "replaced": before.release.map(|o| scheduled_json(o.amount, o.at)),
        }),
        Some(&r),
    );
    Ok(())
}

async fn cancel(label: String, chain: ChainArgs, json: bool) -> anyhow::Result<()> {
    let chain = chain.connect(true).await?;
    let me = or_me(&chain, None)?;
    let payee = resolve_payee(&chain, &label).await?;
    let before = terms(&chain, me, payee).await?;
    if before.price_cut.is_none() && before.release.is_none() {
        bail!(
            "{me} has nothing pending with `{label}`: no price cut, no release; nothing to cancel"
        );
    }
    let r = progress::wait(
        format!("cancelling what is pending with `{label}`"),
        chain.cancel_pending(payee),
    )
    .await
    .map_err(|e| anyhow!("cancel failed: {e}"))?;
    let mut dropped = Vec::new();
    if let Some(c) = before.price_cut {
        dropped.push(format!("the price cut to {} due at {}", c.amount, at(c.at)));
    }
    if let Some(c) = before.release {
        dropped.push(format!("the release of {} due at {}", c.amount, at(c.at)));
    }
    report(
        json,
        format!(
            "dropped {}; `{label}` keeps {} reserved at up to {} per request",
            dropped.join(" and "),
            before.reserve,
            before.price_per_request
        ),
        json!({
            "provider": label, "payee": payee.to_string(),
            "droppedPriceCut": before.price_cut.map(|c| scheduled_json(c.amount, c.at)),
            "droppedRelease": before.release.map(|c| scheduled_json(c.amount, c.at)),
        }),
        Some(&r),
    );
    Ok(())
}

async fn withdraw(
    amount: String,
    to: Option<Address>,
    chain: ChainArgs,
    json: bool,
) -> anyhow::Result<()> {
    let chain = chain.connect(true).await?;
    let me = or_me(&chain, None)?;
    let to = to.unwrap_or(me);
    // Reserves whose release is due are moved to the free balance first (one transaction each).
    for provider in chain
        .providers_of(me)
        .await
        .context("reading the providers you have terms with")?
    {
        let t = terms(&chain, me, provider).await?;
        if t.releasable > Usdc::ZERO {
            progress::wait(
                format!(
                    "moving {} released by {provider} to the free balance",
                    t.releasable
                ),
                chain.apply_pending(me, provider),
            )
            .await
            .map_err(|e| anyhow!("applying the release of {provider} failed: {e}"))?;
        }
    }
    let free = chain
        .free_balance(me)
        .await
        .context("reading the free balance")?;
    let amount = if amount.trim() == "all" {
        free
    } else {
        parse_usdc("amount", &amount)?
    };
    if amount == Usdc::ZERO {
        bail!(
            "nothing to withdraw: {me} has {free} free in the escrow (reserved money comes back with `khachapuri \
             escrow release`)"
        );
    }
    if amount > free {
        bail!(
            "{me} has {free} free in the escrow, less than {amount}; withdraw at most that (or `all`); reserved \
             money comes back with `khachapuri escrow release`"
        );
    }
    let r = progress::wait(
        format!("withdrawing {amount} to {to}"),
        chain.withdraw(to, amount),
    )
    .await
    .map_err(|e| anyhow!("withdrawing failed: {e}"))?;
    report(
        json,
        format!("withdrew {amount} from the escrow to {to}"),
        json!({"amount": amount.to_string(), "to": to.to_string()}),
        Some(&r),
    );
    Ok(())
}

fn scheduled_json(amount: Usdc, at: u64) -> serde_json::Value {
    json!({"amount": amount.to_string(), "at": at})
}

fn terms_json(t: &Terms) -> serde_json::Value {
    json!({
        "pricePerRequest": t.price_per_request.to_string(),
        "reserve": t.reserve.to_string(),
        "credits": t.credits.to_string(),
        "priceCut": t.price_cut.map(|c| json!({"price": c.amount.to_string(), "at": c.at})),
        "release": t.release.map(|c| scheduled_json(c.amount, c.at)),
        "releasable": t.releasable.to_string(),
    })
}

/// One line of `balance`: a provider's reserve, price, credits and what is pending.
fn terms_line(name: &str, t: &Terms, now: u64) -> String {
    let mut line = format!(
        "{name}: {} reserved, up to {} per request, {} credits",
        t.reserve, t.price_per_request, t.credits
    );
    if let Some(c) = t.price_cut {
        line.push_str(&format!("; price cut to {} at {}", c.amount, at(c.at)));
    }
    if let Some(r) = t.release {
        let left = r.at.saturating_sub(now);
        line.push_str(&format!(
            "; releasing {} at {} ({left} s)",
            r.amount,
            at(r.at)
        ));
    }
    if t.releasable > Usdc::ZERO {
        line.push_str(&format!(
            "; {} released (moves to free with `khachapuri escrow withdraw`)",
            t.releasable
        ));
    }
    line
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
    let free = chain
        .free_balance(who)
        .await
        .context("reading the free balance")?;
    let providers: Vec<(String, Address)> = match &provider {
        Some(label) => vec![(format!("`{label}`"), resolve_payee(&chain, label).await?)],
        None => {
            let payees = chain
                .providers_of(who)
                .await
                .context("reading the providers you have terms with")?;
            // Named by label where one pays out to them (a name is not worth failing for).
            let labels = chain.labels_of(&payees).await.unwrap_or_default();
            payees
                .into_iter()
                .map(|a| match labels.get(&a) {
                    Some(label) => (format!("`{label}` ({a})"), a),
                    None => (a.to_string(), a),
                })
                .collect()
        }
    };
    let frozen = chain
        .is_frozen(who)
        .await
        .context("asking the escrow whether the token froze this account")?;
    let now = chain.block_timestamp().await.unwrap_or_else(|_| unix_now());
    let mut reserved = Usdc::ZERO;
    let mut pending = Usdc::ZERO;
    let mut rows = Vec::new();
    let mut lines = Vec::new();
    for (name, payee) in &providers {
        let t = terms(&chain, who, *payee).await?;
        reserved = reserved.saturating_add(t.reserve);
        pending = pending.saturating_add(t.release.map_or(Usdc::ZERO, |r| r.amount.min(t.reserve)));
        lines.push(format!("  {}", terms_line(name, &t, now)));
        let mut row = terms_json(&t);
        row["payee"] = json!(payee.to_string());
        if let Some(label) = &provider {
            row["label"] = json!(label);
        }
        rows.push(row);
    }
    if json {
        let mut value = json!({
            "address": who.to_string(),
            "wallet": wallet.to_string(),
            "free": free.to_string(),
            "reserved": reserved.to_string(),
            "releasing": pending.to_string(),
            "frozen": frozen,
        });
        // With --provider, its terms under `provider`; else every provider's under `providers`.
        let key = if provider.is_some() {
            "provider"
        } else {
            "providers"
        };
        value[key] = match provider {
            Some(_) => rows.pop().unwrap_or_default(),
            None => json!(rows),
        };
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!("account   {who}");
    if frozen {
        println!(
            "FROZEN    the token's issuer blacklisted this account: the escrow moves none of its money, in or out, \
             until the issuer lifts the freeze (nothing is lost meanwhile)"
        );
    }
    println!("wallet    {wallet}");
    println!("free      {free}   (withdraw at once)");
    println!("reserved  {reserved}   ({pending} of it releasing)");
    for l in lines {
        println!("{l}");
    }
    Ok(())
}
