//! Every escrow path end to end against a real anvil, and the revert sentences people read.

use khachapuri_bindings::Escrow::EscrowErrors;
use khachapuri_chain::testing::Devnet;
use khachapuri_chain::{Allowance, ChainError, Charge, ContractError, Usdc};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

fn usdc(s: &str) -> Usdc {
    s.parse().expect("a valid amount")
}

const PAYER: u32 = 1;
const PROVIDER: u32 = 2;

#[tokio::test]
async fn deposit_approve_consume_and_withdraw_earnings() -> Result {
    let net = Devnet::start().await?;
    let (payer, provider) = (net.chain(PAYER), net.chain(PROVIDER));
    let (p, v) = (net.address(PAYER), net.address(PROVIDER));
    net.fund(PAYER, usdc("10")).await?;

    payer.deposit(p, usdc("5")).await?;
    assert_eq!(payer.balance(p).await?, usdc("5"));
    assert_eq!(payer.token_balance(p).await?, usdc("5"));

    payer.approve(v, usdc("0.10"), usdc("1")).await?;
    let a = payer.allowance(p, v).await?;
    assert_eq!(
        a,
        Allowance {
            price_per_request: usdc("0.10"),
            budget_left: usdc("1"),
            credits: Usdc::ZERO
        }
    );

    let receipt = provider.consume(p, usdc("0.10")).await?;
    assert!(receipt.gas_used > 0 && receipt.block_number > 0);
    provider
        .consume_batch(&[Charge {
            payer: p,
            price: usdc("0.05"),
            count: 4,
        }])
        .await?;
    assert_eq!(provider.earnings(v).await?, usdc("0.30"));
    assert_eq!(payer.balance(p).await?, usdc("4.70"));
    assert_eq!(payer.allowance(p, v).await?.budget_left, usdc("0.70"));

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
    assert_eq!(payer.balance(other).await?, usdc("2.5"));
    assert_eq!(payer.balance(p).await?, Usdc::ZERO);
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
    Ok(())
}

#[tokio::test]
async fn credits_are_spent_first_without_approval() -> Result {
    let net = Devnet::start().await?;
    let (payer, provider) = (net.chain(PAYER), net.chain(PROVIDER));
    let (p, v) = (net.address(PAYER), net.address(PROVIDER));
    provider.grant_credits(p, usdc("0.25")).await?;
    assert_eq!(payer.credits(p, v).await?, usdc("0.25"));
    // No approval, no balance: credits alone pay.
    provider
        .consume_batch(&[Charge {
            payer: p,
            price: usdc("0.1"),
            count: 2,
        }])
        .await?;
    assert_eq!(provider.credits(p, v).await?, usdc("0.05"));
    assert_eq!(provider.earnings(v).await?, Usdc::ZERO);
    // The rest would need an approval.
    let err = provider
        .consume(p, usdc("0.1"))
        .await
        .err()
        .ok_or("charged without approval")?;
    assert_eq!(
        err.to_string(),
        format!("no approval from {p} for provider {v}")
    );
    assert_eq!(err.payer(), Some(p));
    // With an approval and a balance, credits go first and the balance pays the rest.
    net.fund(PAYER, usdc("1")).await?;
    payer.deposit(p, usdc("1")).await?;
    payer.approve(v, usdc("0.1"), usdc("1")).await?;
    provider.consume(p, usdc("0.1")).await?;
    assert_eq!(provider.credits(p, v).await?, Usdc::ZERO);
    assert_eq!(provider.earnings(v).await?, usdc("0.05"));
    assert_eq!(payer.balance(p).await?, usdc("0.95"));
    Ok(())
}

#[tokio::test]
async fn refusals_read_as_sentences() -> Result {
    let net = Devnet::start().await?;
    let (payer, provider) = (net.chain(PAYER), net.chain(PROVIDER));
    let (p, v) = (net.address(PAYER), net.address(PROVIDER));
    net.fund(PAYER, usdc("1")).await?;
    payer.deposit(p, usdc("0.4")).await?;
    payer.approve(v, usdc("0.10"), usdc("0.30")).await?;

    let price = provider
        .consume(p, usdc("0.20"))
        .await
        .err()
        .ok_or("price above approved")?;
    assert_eq!(
        price.to_string(),
        format!("price 0.20 USDC is above the approved 0.10 USDC per request (payer {p})")
    );
    assert!(matches!(
        price.contract_error(),
        Some(ContractError::Escrow(EscrowErrors::PriceAboveApproved(_)))
    ));

    let batch = [Charge {
        payer: p,
        price: usdc("0.10"),
        count: 5,
    }];
    let budget = provider
        .consume_batch(&batch)
        .await
        .err()
        .ok_or("budget exceeded")?;
    assert_eq!(
        budget.to_string(),
        format!("budget exhausted: 0.30 USDC left, 0.50 USDC asked (payer {p})")
    );

    payer.approve(v, usdc("0.10"), usdc("10")).await?;
    let funds = provider
        .consume_batch(&batch)
        .await
        .err()
        .ok_or("overdrawn")?;
    assert_eq!(
        funds.to_string(),
        format!("insufficient balance: payer {p} has 0.40 USDC in the escrow, 0.50 USDC asked")
    );

    let withdraw = payer
        .request_withdrawal(usdc("1"))
        .await
        .err()
        .ok_or("withdrawal above balance")?;
    assert_eq!(
        withdraw.to_string(),
        "insufficient balance: 0.40 USDC in the escrow, 1.00 USDC requested"
    );
    let none = payer
        .withdraw(p)
        .await
        .err()
        .ok_or("withdraw without request")?;
    assert_eq!(none.to_string(), "no withdrawal is pending");
    for err in [&price, &budget, &funds, &withdraw, &none] {
        assert!(matches!(err, ChainError::Reverted { .. }) && !err.is_unavailable());
    }
    Ok(())
}

#[tokio::test]
async fn withdrawal_waits_for_the_delay_and_providers_still_consume() -> Result {
    let net = Devnet::start().await?;
    let (payer, provider) = (net.chain(PAYER), net.chain(PROVIDER));
    let (p, v) = (net.address(PAYER), net.address(PROVIDER));
    net.fund(PAYER, usdc("2")).await?;
    payer.deposit(p, usdc("2")).await?;
    payer.approve(v, usdc("0.5"), usdc("2")).await?;

    payer.request_withdrawal(usdc("2")).await?;
    let pending = payer
        .pending_withdrawal(p)
        .await?
        .ok_or("no pending withdrawal")?;
    assert_eq!(pending.amount, usdc("2"));
    let early = payer
        .withdraw(p)
        .await
        .err()
        .ok_or("withdrew before the delay")?;
    assert!(
        early
            .to_string()
            .starts_with("withdrawal not ready until 20"),
        "{early}"
    );
    assert!(
        early
            .to_string()
            .contains(&format!("(unix {})", pending.ready_at)),
        "{early}"
    );

    // During the delay the provider still settles under the old terms.
    provider.consume(p, usdc("0.5")).await?;
    net.increase_time(net.deployment.withdrawal_delay).await?;
    payer.withdraw(p).await?;
    // It sends what is left: the balance was consumed meanwhile.
    assert_eq!(payer.token_balance(p).await?, usdc("1.5"));
    assert_eq!(payer.balance(p).await?, Usdc::ZERO);
    assert_eq!(payer.pending_withdrawal(p).await?, None);

    // Cancel: a new request, cancelled, leaves nothing pending.
    payer.deposit(p, usdc("1")).await?;
    payer.request_withdrawal(usdc("1")).await?;
    payer.cancel_withdrawal().await?;
    assert_eq!(payer.pending_withdrawal(p).await?, None);
    net.increase_time(net.deployment.withdrawal_delay + 1)
        .await?;
    assert!(payer.withdraw(p).await.is_err());
    assert_eq!(payer.balance(p).await?, usdc("1"));
    Ok(())
}

#[tokio::test]
async fn lowering_an_approval_applies_after_the_delay() -> Result {
    let net = Devnet::start().await?;
    let (payer, provider) = (net.chain(PAYER), net.chain(PROVIDER));
    let (p, v) = (net.address(PAYER), net.address(PROVIDER));
    net.fund(PAYER, usdc("5")).await?;
    payer.deposit(p, usdc("5")).await?;
    payer.approve(v, usdc("0.5"), usdc("3")).await?;
    payer.approve(v, usdc("0.1"), usdc("1")).await?;

    let cut = payer.pending_cut(p, v).await?.ok_or("no pending cut")?;
    assert_eq!(
        (cut.price_per_request, cut.budget),
        (usdc("0.1"), usdc("1"))
    );
    // Old terms hold until then.
    assert_eq!(payer.allowance(p, v).await?.price_per_request, usdc("0.5"));
    provider.consume(p, usdc("0.5")).await?;

    net.increase_time(net.deployment.withdrawal_delay).await?;
    assert_eq!(payer.pending_cut(p, v).await?, None);
    let a = payer.allowance(p, v).await?;
    assert_eq!(
        (a.price_per_request, a.budget_left),
        (usdc("0.1"), usdc("1"))
    );
    let err = provider
        .consume(p, usdc("0.5"))
        .await
        .err()
        .ok_or("old price after the cut")?;
    assert!(
        err.to_string()
            .starts_with("price 0.50 USDC is above the approved 0.10 USDC"),
        "{err}"
    );
    provider.consume(p, usdc("0.1")).await?;
    assert_eq!(provider.earnings(v).await?, usdc("0.6"));
    Ok(())
}

#[tokio::test]
async fn writes_need_a_signer_and_reads_do_not() -> Result {
    let net = Devnet::start().await?;
    let reader = khachapuri_chain::Chain::new(
        &net.anvil.url(),
        None,
        net.deployment.clone(),
        Default::default(),
    )?;
    assert_eq!(reader.balance(net.address(1)).await?, Usdc::ZERO);
    assert!(matches!(
        reader.approve(net.address(2), usdc("1"), usdc("1")).await,
        Err(ChainError::NoSigner)
    ));
    Ok(())
}
