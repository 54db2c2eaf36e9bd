//! Every escrow path end to end against a real anvil, and the revert sentences people read.

use alloy::providers::Provider;
use khachapuri_bindings::Escrow::{self, EscrowErrors};
use khachapuri_chain::testing::Devnet;
use khachapuri_chain::{B256, Chain, ChainError, Charge, ContractError, Scheduled, Terms, Usdc};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

fn usdc(s: &str) -> Usdc {
    s.parse().expect("a valid amount")
}

const PAYER: u32 = 1;
const PROVIDER: u32 = 2;
const OTHER_PROVIDER: u32 = 3;

/// Mines a block at exactly `timestamp` (the views then read the chain at that time).
async fn mine_at(net: &Devnet, timestamp: u64) -> Result {
    net.set_next_block_timestamp(timestamp).await?;
    net.mine().await?;
    Ok(())
}

/// The lines of the batch transaction `tx` the escrow refused: (index, the sentence of the reason).
async fn refusals(chain: &Chain, tx: B256) -> Result<Vec<(u64, String)>> {
    let receipt = chain
        .provider()
        .get_transaction_receipt(tx)
        .await?
        .ok_or("no receipt for the batch")?;
    let mut out = Vec::new();
    for log in receipt.inner.logs() {
        if let Ok(log) = log.log_decode::<Escrow::ChargeRefused>() {
            let event = log.inner.data;
            out.push((
                u64::try_from(event.index)?,
                ChainError::from_revert_data(&event.reason).to_string(),
            ));
        }
    }
    Ok(out)
}

#[tokio::test]
async fn deposit_reserve_consume_and_withdraw_earnings() -> Result {
    let net = Devnet::start().await?;
    let (payer, provider) = (net.chain(PAYER), net.chain(PROVIDER));
    let (p, v) = (net.address(PAYER), net.address(PROVIDER));
    net.fund(PAYER, usdc("10")).await?;

    payer.deposit(p, usdc("5")).await?;
    assert_eq!(payer.free_balance(p).await?, usdc("5"));
    assert_eq!(payer.token_balance(p).await?, usdc("5"));
    assert!(payer.terms(p, v).await?.is_empty());

    // A raise of price and reserve applies at once: the reserve comes out of the free balance.
    payer.reserve(v, usdc("0.10"), usdc("1")).await?;
    let t = payer.terms(p, v).await?;
    assert_eq!(
        t,
        Terms {
            price_per_request: usdc("0.10"),
            reserve: usdc("1"),
            ..Terms::default()
        }
    );
    assert_eq!(
        (t.claimable_price(), t.claimable_reserve()),
        (usdc("0.10"), usdc("1"))
    );
    assert_eq!(payer.free_balance(p).await?, usdc("4"));

    let receipt = provider.consume(p, usdc("0.10")).await?;
    assert!(receipt.gas_used > 0 && receipt.block_number > 0);
    let batch = provider
        .consume_batch(&[Charge {
            payer: p,
            price: usdc("0.05"),
            count: 4,
        }])
        .await?;
    assert_eq!(refusals(&provider, batch.tx_hash).await?, vec![]);
    assert_eq!(provider.earnings(v).await?, usdc("0.30"));
    // Charges come out of the reserve, never out of the free balance.
    assert_eq!(payer.terms(p, v).await?.reserve, usdc("0.70"));
    assert_eq!(payer.free_balance(p).await?, usdc("4"));

    let to = net.address(5);
    provider.withdraw_earnings(to, usdc("0.25")).await?;
    assert_eq!(provider.token_balance(to).await?, usdc("0.25"));
    assert_eq!(provider.earnings(v).await?, usdc("0.05"));
    let err = provider
        .withdraw_earnings(to, usdc("1"))
        .await
        .err()
        .ok_or("withdrew more than earned")?;
    assert_eq!(
        err.to_string(),
        "insufficient earnings: 0.05 USDC earned, 1.00 USDC requested"
    );
    // Conservation: the escrow holds the free balance, the reserve and the earnings.
    assert_eq!(
        payer.token_balance(net.deployment.escrow).await?,
        usdc("4.75")
    );
    Ok(())
}

#[tokio::test]
async fn deposit_with_permit_for_another() -> Result {
    let net = Devnet::start().await?;
    let payer = net.chain(PAYER);
    let (p, other) = (net.address(PAYER), net.address(3));
    net.fund(PAYER, usdc("3")).await?;
    let deadline = payer.block_timestamp().await? + 3600;
    payer
        .deposit_with_permit(other, usdc("2.5"), deadline)
        .await?;
    assert_eq!(payer.free_balance(other).await?, usdc("2.5"));
    assert_eq!(payer.free_balance(p).await?, Usdc::ZERO);
    assert_eq!(payer.token_balance(p).await?, usdc("0.5"));
    // The same permit nonce is used up: a permit over more than the wallet holds fails cleanly.
    let err = payer
        .deposit_with_permit(p, usdc("1"), deadline)
        .await
        .err()
        .ok_or("overdrawn deposit")?;
    assert!(matches!(err, ChainError::Reverted { .. }), "{err:?}");
    assert!(
        err.to_string().contains("not enough USDC in the wallet"),
        "{err}"
    );
    // A plain deposit for another lands in its free balance too.
    payer.deposit(other, usdc("0.5")).await?;
    assert_eq!(payer.free_balance(other).await?, usdc("3"));
    assert_eq!(payer.token_balance(p).await?, Usdc::ZERO);
    Ok(())
}

#[tokio::test]
async fn a_price_raise_applies_now_and_a_cut_waits_for_the_delay() -> Result {
    let net = Devnet::start().await?;
    let (payer, provider) = (net.chain(PAYER), net.chain(PROVIDER));
    let (p, v) = (net.address(PAYER), net.address(PROVIDER));
    let delay = net.deployment.withdrawal_delay;
    net.fund(PAYER, usdc("5")).await?;
    payer.deposit(p, usdc("5")).await?;
    payer.reserve(v, usdc("0.5"), usdc("3")).await?;

    // A lower price, and more reserve: the reserve applies now, the price waits.
    payer.reserve(v, usdc("0.1"), usdc("1")).await?;
    let at = payer.block_timestamp().await? + delay;
    let t = payer.terms(p, v).await?;
    assert_eq!(
        t,
        Terms {
            price_per_request: usdc("0.5"),
            reserve: usdc("4"),
            price_cut: Some(Scheduled {
                amount: usdc("0.1"),
                at
            }),
            ..Terms::default()
        }
    );
    // A claim made now may count only on the lower price; the provider still charges the old one.
    assert_eq!(t.claimable_price(), usdc("0.1"));
    assert_eq!(t.claimable_reserve(), usdc("4"));
    assert_eq!(payer.free_balance(p).await?, usdc("1"));
    provider.consume(p, usdc("0.5")).await?;

    // Not yet, one second before the deadline.
    mine_at(&net, at - 1).await?;
    let t = payer.terms(p, v).await?;
    assert_eq!(
        (t.price_per_request, t.price_cut.map(|c| c.at)),
        (usdc("0.5"), Some(at))
    );
    mine_at(&net, at).await?;
    // In force from the deadline (shown by the view before any transaction applies it).
    let t = payer.terms(p, v).await?;
    assert_eq!(
        (t.price_per_request, t.price_cut, t.reserve),
        (usdc("0.1"), None, usdc("3.5"))
    );
    let err = provider
        .consume(p, usdc("0.5"))
        .await
        .err()
        .ok_or("old price after the cut")?;
    assert_eq!(
        err.to_string(),
        format!("price 0.50 USDC is above the 0.10 USDC per request payer {p} allows provider {v}")
    );
    provider.consume(p, usdc("0.1")).await?;
    assert_eq!(provider.earnings(v).await?, usdc("0.6"));

    // A new cut replaces a pending one (its delay starts again); a raise drops it at once.
    payer.reserve(v, usdc("0.05"), Usdc::ZERO).await?;
    net.increase_time(60).await?;
    payer.reserve(v, usdc("0.08"), Usdc::ZERO).await?;
    let at = payer.block_timestamp().await? + delay;
    let t = payer.terms(p, v).await?;
    assert_eq!(
        (t.price_per_request, t.price_cut),
        (
            usdc("0.1"),
            Some(Scheduled {
                amount: usdc("0.08"),
                at
            })
        )
    );
    payer.reserve(v, usdc("0.2"), Usdc::ZERO).await?;
    let t = payer.terms(p, v).await?;
    assert_eq!((t.price_per_request, t.price_cut), (usdc("0.2"), None));
    net.increase_time(delay + 1).await?;
    assert_eq!(payer.terms(p, v).await?.price_per_request, usdc("0.2"));
    Ok(())
}

#[tokio::test]
async fn a_release_waits_for_the_delay_then_returns_to_the_free_balance() -> Result {
    let net = Devnet::start().await?;
    let (payer, provider) = (net.chain(PAYER), net.chain(PROVIDER));
    let (p, v) = (net.address(PAYER), net.address(PROVIDER));
    let delay = net.deployment.withdrawal_delay;
    net.fund(PAYER, usdc("3")).await?;
    payer.deposit(p, usdc("3")).await?;
    payer.reserve(v, usdc("0.5"), usdc("2")).await?;

    // Release 0.5 of 2: an amount to take out, not a new total.
    payer.release(v, usdc("0.5")).await?;
    let at = payer.block_timestamp().await? + delay;
    let t = payer.terms(p, v).await?;
    assert_eq!(
        (t.reserve, t.release, t.releasable),
        (
            usdc("2"),
            Some(Scheduled {
                amount: usdc("0.5"),
                at
            }),
            Usdc::ZERO
        )
    );
    assert_eq!(t.claimable_reserve(), usdc("1.5"));
    // During the delay the provider still charges the whole reserve.
    provider.consume(p, usdc("0.5")).await?;
    mine_at(&net, at - 1).await?;
    assert_eq!(payer.terms(p, v).await?.release.map(|r| r.at), Some(at));
    assert_eq!(payer.free_balance(p).await?, usdc("1"));
    mine_at(&net, at).await?;

    // Due: the view shows it released, but the money moves only when a transaction touches the pair.
    let t = payer.terms(p, v).await?;
    assert_eq!(
        (t.reserve, t.release, t.releasable),
        (usdc("1"), None, usdc("0.5"))
    );
    assert_eq!(payer.free_balance(p).await?, usdc("1"));
    // Anyone may apply it.
    net.chain(7).apply_pending(p, v).await?;
    let t = payer.terms(p, v).await?;
    assert_eq!((t.reserve, t.releasable), (usdc("1"), Usdc::ZERO));
    assert_eq!(payer.free_balance(p).await?, usdc("1.5"));

    // Release everything; the provider charges 0.5 first: only what is left goes back.
    payer.release(v, Usdc::MAX).await?;
    assert_eq!(payer.terms(p, v).await?.claimable_reserve(), Usdc::ZERO);
    let at = payer.block_timestamp().await? + delay;
    provider.consume(p, usdc("0.5")).await?;
    mine_at(&net, at).await?;
    let t = payer.terms(p, v).await?;
    assert_eq!((t.reserve, t.releasable), (Usdc::ZERO, usdc("0.5")));
    // A charge sees it released: nothing is reserved any more (the refused charge reverts, moving nothing).
    let err = provider
        .consume(p, usdc("0.5"))
        .await
        .err()
        .ok_or("charged a released reserve")?;
    assert_eq!(
        err.to_string(),
        format!("payer {p} has 0.00 USDC reserved for provider {v}, 0.50 USDC needed")
    );
    // The payer's own change applies it (here a new reserve of nothing at the same price).
    payer.reserve(v, usdc("0.5"), Usdc::ZERO).await?;
    assert_eq!(payer.terms(p, v).await?.releasable, Usdc::ZERO);
    assert_eq!(payer.free_balance(p).await?, usdc("2"));
    assert_eq!(provider.earnings(v).await?, usdc("1"));
    // Applying with nothing due is harmless.
    payer.apply_pending(p, v).await?;
    assert_eq!(payer.free_balance(p).await?, usdc("2"));
    Ok(())
}

#[tokio::test]
async fn cancel_pending_keeps_the_terms_in_force() -> Result {
    let net = Devnet::start().await?;
    let payer = net.chain(PAYER);
    let (p, v) = (net.address(PAYER), net.address(PROVIDER));
    let delay = net.deployment.withdrawal_delay;
    net.fund(PAYER, usdc("2")).await?;
    payer.deposit(p, usdc("2")).await?;
    payer.reserve(v, usdc("0.5"), usdc("2")).await?;
    payer.reserve(v, usdc("0.1"), Usdc::ZERO).await?;
    payer.release(v, usdc("1")).await?;
    let t = payer.terms(p, v).await?;
    assert!(t.price_cut.is_some() && t.release.is_some(), "{t:?}");
    let at = payer.block_timestamp().await? + delay;

    payer.cancel_pending(v).await?;
    let kept = Terms {
        price_per_request: usdc("0.5"),
        reserve: usdc("2"),
        ..Terms::default()
    };
    assert_eq!(payer.terms(p, v).await?, kept);
    mine_at(&net, at).await?;
    assert_eq!(payer.terms(p, v).await?, kept);
    assert_eq!(payer.free_balance(p).await?, Usdc::ZERO);

    let err = payer
        .cancel_pending(v)
        .await
        .err()
        .ok_or("cancelled nothing")?;
    assert_eq!(
        err.to_string(),
        format!("nothing is pending with provider {v}")
    );
    assert!(matches!(
        err.contract_error(),
        Some(ContractError::Escrow(EscrowErrors::NothingPending(_)))
    ));
    Ok(())
}

#[tokio::test]
async fn withdraw_takes_the_free_balance_in_one_step() -> Result {
    let net = Devnet::start().await?;
    let payer = net.chain(PAYER);
    let (p, v, to) = (net.address(PAYER), net.address(PROVIDER), net.address(6));
    net.fund(PAYER, usdc("2")).await?;
    payer.deposit(p, usdc("2")).await?;
    payer.reserve(v, usdc("0.1"), usdc("0.5")).await?;

    payer.withdraw(to, usdc("1")).await?;
    assert_eq!(payer.token_balance(to).await?, usdc("1"));
    assert_eq!(payer.free_balance(p).await?, usdc("0.5"));
    payer.withdraw(p, usdc("0.5")).await?;
    assert_eq!(payer.token_balance(p).await?, usdc("0.5"));
    assert_eq!(payer.free_balance(p).await?, Usdc::ZERO);
    // The reserve is not free balance.
    let err = payer
        .withdraw(p, usdc("0.01"))
        .await
        .err()
        .ok_or("withdrew the reserve")?;
    assert_eq!(
        err.to_string(),
        "insufficient free balance: 0.00 USDC free in the escrow, 0.01 USDC requested"
    );
    assert_eq!(payer.terms(p, v).await?.reserve, usdc("0.5"));
    Ok(())
}

/// The promise: a charge claimed within the payer's terms lands if settled within the delay, whatever the
/// payer does in between (empty its free balance, release everything, cut the price, reserve elsewhere).
#[tokio::test]
async fn emptying_the_free_balance_cannot_touch_what_is_reserved() -> Result {
    let net = Devnet::start().await?;
    let (payer, provider) = (net.chain(PAYER), net.chain(PROVIDER));
    let (p, v, w) = (
        net.address(PAYER),
        net.address(PROVIDER),
        net.address(OTHER_PROVIDER),
    );
    let delay = net.deployment.withdrawal_delay;
    net.fund(PAYER, usdc("5")).await?;
    payer.deposit(p, usdc("5")).await?;
    payer.reserve(v, usdc("0.5"), usdc("2")).await?;

    // The provider claims four requests at 0.5 against these terms, to settle later.
    let t = provider.terms(p, v).await?;
    assert_eq!(
        (t.claimable_price(), t.claimable_reserve()),
        (usdc("0.5"), usdc("2"))
    );

    // The payer empties its free balance, at once.
    payer.withdraw(p, usdc("3")).await?;
    assert_eq!(payer.free_balance(p).await?, Usdc::ZERO);
    assert_eq!(payer.token_balance(p).await?, usdc("3"));
    // It cannot withdraw more, nor move the reserve to another provider.
    let more = payer
        .withdraw(p, usdc("2"))
        .await
        .err()
        .ok_or("withdrew the reserve")?;
    assert_eq!(
        more.to_string(),
        "insufficient free balance: 0.00 USDC free in the escrow, 2.00 USDC requested"
    );
    let elsewhere = payer
        .reserve(w, usdc("0.5"), usdc("2"))
        .await
        .err()
        .ok_or("reserved the same money twice")?;
    assert_eq!(
        elsewhere.to_string(),
        "insufficient free balance: 0.00 USDC free in the escrow, 2.00 USDC requested"
    );
    // It releases everything and cuts the price: new claims see nothing to count on...
    payer.release(v, Usdc::MAX).await?;
    let released_at = payer.block_timestamp().await?;
    payer.reserve(v, usdc("0.01"), Usdc::ZERO).await?;
    let t = provider.terms(p, v).await?;
    assert_eq!(
        (t.claimable_price(), t.claimable_reserve()),
        (usdc("0.01"), Usdc::ZERO)
    );
    // ...and no other provider can charge the reserve.
    let stranger = net
        .chain(OTHER_PROVIDER)
        .consume(p, usdc("0.5"))
        .await
        .err()
        .ok_or("another provider charged the reserve")?;
    assert_eq!(
        stranger.to_string(),
        format!(
            "payer {p} has no terms with provider {w} (no price, nothing reserved), and its trial credits with it do not cover the charge"
        )
    );

    // The claimed charges, settled in the last second of the delay, land in full.
    let release_at = t.release.map(|r| r.at).ok_or("no release pending")?;
    assert!(t.price_cut.is_some_and(|c| c.at >= release_at));
    assert_eq!(release_at, released_at + delay);
    net.set_next_block_timestamp(release_at - 1).await?;
    let batch = provider
        .consume_batch(&[Charge {
            payer: p,
            price: usdc("0.5"),
            count: 4,
        }])
        .await?;
    assert_eq!(provider.block_timestamp().await?, release_at - 1);
    assert_eq!(refusals(&provider, batch.tx_hash).await?, vec![]);
    assert_eq!(provider.earnings(v).await?, usdc("2"));
    assert_eq!(provider.terms(p, v).await?.reserve, Usdc::ZERO);
    assert_eq!(
        provider.token_balance(net.deployment.escrow).await?,
        usdc("2")
    );
    provider.withdraw_earnings(v, usdc("2")).await?;
    assert_eq!(
        provider.token_balance(net.deployment.escrow).await?,
        Usdc::ZERO
    );
    Ok(())
}

#[tokio::test]
async fn a_batch_settles_what_fits_and_reports_each_refused_line() -> Result {
    let net = Devnet::start().await?;
    let (payer, provider) = (net.chain(PAYER), net.chain(PROVIDER));
    let (p, v, stranger) = (net.address(PAYER), net.address(PROVIDER), net.address(8));
    net.fund(PAYER, usdc("1")).await?;
    payer.deposit(p, usdc("1")).await?;
    payer.reserve(v, usdc("0.1"), usdc("0.5")).await?;

    let batch = provider
        .consume_batch(&[
            Charge {
                payer: p,
                price: usdc("0.1"),
                count: 3,
            },
            Charge::one(stranger, usdc("0.1")),
            Charge::one(p, usdc("0.2")),
            Charge {
                payer: p,
                price: usdc("0.1"),
                count: 3,
            },
            Charge {
                payer: p,
                price: usdc("0.1"),
                count: 2,
            },
        ])
        .await?;
    assert_eq!(
        refusals(&provider, batch.tx_hash).await?,
        vec![
            (
                1,
                format!(
                    "payer {stranger} has no terms with provider {v} (no price, nothing reserved), and its trial credits with it do not cover the charge"
                )
            ),
            (
                2,
                format!(
                    "price 0.20 USDC is above the 0.10 USDC per request payer {p} allows provider {v}"
                )
            ),
            // Lines are charged in order: the first took 0.3 of the 0.5.
            (
                3,
                format!("payer {p} has 0.20 USDC reserved for provider {v}, 0.30 USDC needed")
            ),
        ]
    );
    assert_eq!(provider.earnings(v).await?, usdc("0.5"));
    assert_eq!(provider.terms(p, v).await?.reserve, Usdc::ZERO);
    Ok(())
}

#[tokio::test]
async fn credits_are_spent_first_without_a_reserve() -> Result {
    let net = Devnet::start().await?;
    let (payer, provider) = (net.chain(PAYER), net.chain(PROVIDER));
    let (p, v) = (net.address(PAYER), net.address(PROVIDER));
    provider.grant_credits(p, usdc("0.25")).await?;
    assert_eq!(payer.credits(p, v).await?, usdc("0.25"));
    assert_eq!(
        payer.terms(p, v).await?,
        Terms {
            credits: usdc("0.25"),
            ..Terms::default()
        }
    );
    // Credits are the granting provider's alone.
    assert_eq!(
        payer.credits(p, net.address(OTHER_PROVIDER)).await?,
        Usdc::ZERO
    );
    // No terms, no balance: credits alone pay.
    let batch = provider
        .consume_batch(&[Charge {
            payer: p,
            price: usdc("0.1"),
            count: 2,
        }])
        .await?;
    assert_eq!(refusals(&provider, batch.tx_hash).await?, vec![]);
    assert_eq!(provider.credits(p, v).await?, usdc("0.05"));
    assert_eq!(provider.earnings(v).await?, Usdc::ZERO);
    // The rest would need a reserve (the credits left are not spent by a refused charge).
    let err = provider
        .consume(p, usdc("0.1"))
        .await
        .err()
        .ok_or("charged without terms")?;
    assert_eq!(
        err.to_string(),
        format!(
            "payer {p} has no terms with provider {v} (no price, nothing reserved), and its trial credits with it do not cover the charge"
        )
    );
    assert_eq!(err.payer(), Some(p));
    assert_eq!(provider.credits(p, v).await?, usdc("0.05"));
    // With a reserve, credits go first and the reserve pays the rest.
    net.fund(PAYER, usdc("1")).await?;
    payer.deposit(p, usdc("1")).await?;
    payer.reserve(v, usdc("0.1"), usdc("1")).await?;
    provider.consume(p, usdc("0.1")).await?;
    assert_eq!(provider.credits(p, v).await?, Usdc::ZERO);
    assert_eq!(provider.earnings(v).await?, usdc("0.05"));
    assert_eq!(payer.terms(p, v).await?.reserve, usdc("0.95"));
    assert_eq!(payer.free_balance(p).await?, Usdc::ZERO);
    // Credits are backed by nothing: the escrow holds only the reserve and the earnings.
    assert_eq!(payer.token_balance(net.deployment.escrow).await?, usdc("1"));
    Ok(())
}

#[tokio::test]
async fn providers_of_lists_every_provider_a_payer_set_terms_with() -> Result {
    let net = Devnet::start().await?;
    let payer = net.chain(PAYER);
    let p = net.address(PAYER);
    let (v, w, x, y) = (
        net.address(2),
        net.address(3),
        net.address(4),
        net.address(5),
    );
    assert!(payer.providers_of(p).await?.is_empty());
    net.fund(PAYER, usdc("2")).await?;
    payer.deposit(p, usdc("2")).await?;
    payer.reserve(w, usdc("0.1"), usdc("0.5")).await?;
    payer.reserve(v, usdc("0.2"), Usdc::ZERO).await?;
    payer.reserve(w, usdc("0.05"), Usdc::ZERO).await?;
    // A release alone names a provider too.
    payer.release(x, usdc("1")).await?;
    // Another payer's terms are not this payer's.
    net.chain(6).reserve(y, usdc("0.1"), Usdc::ZERO).await?;
    // Credits are not terms.
    net.chain(5).grant_credits(p, usdc("0.1")).await?;
    assert_eq!(payer.providers_of(p).await?, vec![w, v, x]);
    assert_eq!(payer.providers_of(net.address(6)).await?, vec![y]);
    Ok(())
}

#[tokio::test]
async fn refusals_read_as_sentences() -> Result {
    let net = Devnet::start().await?;
    let (payer, provider) = (net.chain(PAYER), net.chain(PROVIDER));
    let (p, v) = (net.address(PAYER), net.address(PROVIDER));
    let escrow = net.deployment.escrow;
    net.fund(PAYER, usdc("1")).await?;

    let not_approved = provider
        .consume(p, usdc("0.10"))
        .await
        .err()
        .ok_or("charged without terms")?;
    assert_eq!(
        not_approved.to_string(),
        format!(
            "payer {p} has no terms with provider {v} (no price, nothing reserved), and its trial credits with it do not cover the charge"
        )
    );
    assert!(matches!(
        not_approved.contract_error(),
        Some(ContractError::Escrow(EscrowErrors::NotApproved(_)))
    ));

    payer.deposit(p, usdc("0.4")).await?;
    payer.reserve(v, usdc("0.10"), usdc("0.30")).await?;
    let price = provider
        .consume(p, usdc("0.20"))
        .await
        .err()
        .ok_or("price above terms")?;
    assert_eq!(
        price.to_string(),
        format!("price 0.20 USDC is above the 0.10 USDC per request payer {p} allows provider {v}")
    );
    assert!(matches!(
        price.contract_error(),
        Some(ContractError::Escrow(EscrowErrors::PriceAboveTerms(_)))
    ));

    // A reserve with a zero price is no consent to any price.
    net.fund(4, usdc("1")).await?;
    let q = net.address(4);
    net.chain(4).deposit(q, usdc("1")).await?;
    net.chain(4).reserve(v, Usdc::ZERO, usdc("1")).await?;
    let zero_price = provider
        .consume(q, usdc("0.01"))
        .await
        .err()
        .ok_or("charged a zero-price reserve")?;
    assert_eq!(
        zero_price.to_string(),
        format!("price 0.01 USDC is above the 0.00 USDC per request payer {q} allows provider {v}")
    );

    let reserve = provider
        .consume_batch(&[Charge {
            payer: p,
            price: usdc("0.10"),
            count: 5,
        }])
        .await?;
    let reserve = refusals(&provider, reserve.tx_hash).await?;
    assert_eq!(
        reserve,
        vec![(
            0,
            format!("payer {p} has 0.30 USDC reserved for provider {v}, 0.50 USDC needed")
        )]
    );
    // The refused batch charged nothing: three single charges empty the reserve, the fourth is refused.
    for _ in 0..3 {
        provider.consume(p, usdc("0.10")).await?;
    }
    let reserve_single = provider
        .consume(p, usdc("0.10"))
        .await
        .err()
        .ok_or("overdrew the reserve")?;
    assert_eq!(
        reserve_single.to_string(),
        format!("payer {p} has 0.00 USDC reserved for provider {v}, 0.10 USDC needed")
    );
    assert!(matches!(
        reserve_single.contract_error(),
        Some(ContractError::Escrow(EscrowErrors::InsufficientReserve(_)))
    ));

    let withdraw = payer
        .withdraw(p, usdc("1"))
        .await
        .err()
        .ok_or("withdrawal above balance")?;
    assert_eq!(
        withdraw.to_string(),
        "insufficient free balance: 0.10 USDC free in the escrow, 1.00 USDC requested"
    );
    let reserve_more = payer
        .reserve(v, usdc("0.10"), usdc("0.11"))
        .await
        .err()
        .ok_or("reserved more than free")?;
    assert_eq!(
        reserve_more.to_string(),
        "insufficient free balance: 0.10 USDC free in the escrow, 0.11 USDC requested"
    );
    assert!(matches!(
        reserve_more.contract_error(),
        Some(ContractError::Escrow(EscrowErrors::InsufficientBalance(_)))
    ));

    let nothing = payer
        .cancel_pending(v)
        .await
        .err()
        .ok_or("cancelled nothing")?;
    assert_eq!(
        nothing.to_string(),
        format!("nothing is pending with provider {v}")
    );

    let sentence = "the escrow itself cannot receive: tokens sent there could never leave";
    let to_escrow = payer
        .withdraw(escrow, usdc("0.1"))
        .await
        .err()
        .ok_or("withdrew to the escrow")?;
    assert_eq!(to_escrow.to_string(), sentence);
    assert!(matches!(
        to_escrow.contract_error(),
        Some(ContractError::Escrow(EscrowErrors::EscrowAsRecipient(_)))
    ));
    let deposit_escrow = payer
        .deposit(escrow, usdc("0.1"))
        .await
        .err()
        .ok_or("deposited for the escrow")?;
    // The approval sent for the refused deposit was undone.
    assert_eq!(
        deposit_escrow.to_string(),
        format!(
            "{sentence}; the approval sent for it was undone (the escrow's allowance is 0.00 USDC again)"
        )
    );
    let token = khachapuri_bindings::TestUSDC::new(net.deployment.usdc, payer.provider());
    assert_eq!(
        token.allowance(p, escrow).call().await?,
        alloy::primitives::U256::ZERO
    );
    let earnings_escrow = provider
        .withdraw_earnings(escrow, usdc("0.1"))
        .await
        .err()
        .ok_or("withdrew earnings to the escrow")?;
    assert_eq!(earnings_escrow.to_string(), sentence);

    let zero = payer
        .release(v, Usdc::ZERO)
        .await
        .err()
        .ok_or("released nothing")?;
    assert_eq!(zero.to_string(), "the amount, price or count is zero");

    for err in [
        &not_approved,
        &price,
        &zero_price,
        &reserve_single,
        &withdraw,
        &reserve_more,
        &nothing,
        &to_escrow,
        &deposit_escrow,
        &earnings_escrow,
        &zero,
    ] {
        assert!(matches!(err, ChainError::Reverted { .. }) && !err.is_unavailable());
    }
    // The charge refusals name their payer; the payer's own refusals do not.
    assert_eq!(
        [&not_approved, &price, &zero_price, &reserve_single].map(|e| e.payer()),
        [Some(p), Some(p), Some(q), Some(p)]
    );
    assert_eq!(withdraw.payer(), None);
    Ok(())
}

#[tokio::test]
async fn writes_need_a_signer_and_reads_do_not() -> Result {
    let net = Devnet::start().await?;
    let reader = Chain::new(
        &net.anvil.url(),
        None,
        net.deployment.clone(),
        Default::default(),
    )?;
    assert_eq!(reader.free_balance(net.address(1)).await?, Usdc::ZERO);
    assert!(
        reader
            .terms(net.address(1), net.address(2))
            .await?
            .is_empty()
    );
    assert!(matches!(
        reader.reserve(net.address(2), usdc("1"), usdc("1")).await,
        Err(ChainError::NoSigner)
    ));
    assert!(matches!(
        reader.withdraw(net.address(1), usdc("1")).await,
        Err(ChainError::NoSigner)
    ));
    Ok(())
}

/// USDC's freeze: a payer the issuer blacklisted moves nothing out of the escrow, is charged nothing (a batch
/// refuses its line and settles the rest), and its deposit is refused before any transaction is sent, so no
/// approval is left behind. Lifting the freeze gives everything back.
#[tokio::test]
async fn a_frozen_payer_moves_nothing_and_gets_everything_back() -> Result {
    let net = Devnet::start().await?;
    let (payer, provider) = (net.chain(PAYER), net.chain(PROVIDER));
    let (p, v) = (net.address(PAYER), net.address(PROVIDER));
    let clean = net.address(5);
    net.fund(PAYER, usdc("3")).await?;
    payer.deposit(p, usdc("2")).await?;
    payer.reserve(v, usdc("0.10"), usdc("1")).await?;
    net.fund(OTHER_PROVIDER, usdc("1")).await?;
    let other = net.chain(OTHER_PROVIDER);
    let o = net.address(OTHER_PROVIDER);
    other.deposit(o, usdc("1")).await?;
    other.reserve(v, usdc("0.10"), usdc("1")).await?;

    net.freeze(p, true).await?;
    assert!(payer.is_frozen(p).await?);
    assert!(
        payer.terms(p, v).await?.frozen,
        "terms say the payer is frozen"
    );
    let frozen = format!(
        "{p} is frozen by the token's issuer (blacklisted): the escrow moves none of its money, in or out, until \
         the issuer lifts the freeze; nothing is lost meanwhile"
    );

    // Out to a clean address: refused by the escrow (USDC alone would let it through).
    let err = payer
        .withdraw(clean, usdc("1"))
        .await
        .err()
        .ok_or("a frozen payer withdrew")?;
    assert_eq!(err.to_string(), frozen);
    assert!(matches!(
        err.contract_error(),
        Some(ContractError::Escrow(EscrowErrors::Frozen(_)))
    ));

    // Charged: refused alone, and in a batch its line is refused while the other payer's settles.
    let err = provider
        .consume(p, usdc("0.10"))
        .await
        .err()
        .ok_or("charged a frozen payer")?;
    assert_eq!(err.to_string(), frozen);
    let lines = [
        Charge {
            payer: p,
            price: usdc("0.10"),
            count: 2,
        },
        Charge {
            payer: o,
            price: usdc("0.10"),
            count: 2,
        },
    ];
    let batch = provider.consume_batch(&lines).await?;
    assert_eq!(
        refusals(&provider, batch.tx_hash).await?,
        vec![(0, frozen.clone())]
    );
    assert_eq!(
        provider.earnings(v).await?,
        usdc("0.20"),
        "the clean payer's line settled"
    );

    // A deposit by the frozen payer is refused before anything is sent: no nonce used, no approval left.
    let nonce = payer.provider().get_transaction_count(p).await?;
    let err = payer
        .deposit(p, usdc("1"))
        .await
        .err()
        .ok_or("a frozen payer deposited")?;
    assert_eq!(err.to_string(), frozen);
    assert_eq!(
        payer.provider().get_transaction_count(p).await?,
        nonce,
        "nothing was sent"
    );
    let token = khachapuri_bindings::TestUSDC::new(net.deployment.usdc, payer.provider());
    assert_eq!(
        token.allowance(p, net.deployment.escrow).call().await?,
        alloy::primitives::U256::ZERO
    );
    // Nor may anyone deposit on its behalf.
    let err = other
        .deposit(p, usdc("0.5"))
        .await
        .err()
        .ok_or("deposited for a frozen payer")?;
    assert_eq!(err.to_string(), frozen);

    // A paused token: refused before sending too, with the token's reason and what to do.
    net.freeze(p, false).await?;
    net.pause_token(true).await?;
    let err = payer
        .deposit(p, usdc("1"))
        .await
        .err()
        .ok_or("deposited while paused")?;
    assert_eq!(
        err.to_string(),
        "the token refused: Pausable: paused: the token's issuer has paused all transfers; retry once it resumes"
    );
    net.pause_token(false).await?;

    // Lifted: nothing was lost.
    assert!(!payer.terms(p, v).await?.frozen);
    provider.consume(p, usdc("0.10")).await?;
    payer.withdraw(clean, usdc("1")).await?;
    assert_eq!(payer.token_balance(clean).await?, usdc("1"));
    assert_eq!(payer.terms(p, v).await?.reserve, usdc("0.90"));
    Ok(())
}
