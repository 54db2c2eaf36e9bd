//! `khachapuri token`: a payer token for `Authorization: Bearer`.

use alloy::primitives::{B256, U256};
use anyhow::Context;
use khachapuri_chain::PayerToken;

use crate::args::{ChainArgs, parse_duration, parse_usdc, resolve_payee, unix_now};

/// `khachapuri token` options.
#[derive(clap::Args, Debug)]
pub struct TokenArgs {
    /// The provider label the token is for (its payee is read from chain).
    #[arg(long)]
    provider: String,
    /// The spec CID the token is limited to [default: any spec].
    #[arg(long)]
    spec: Option<String>,
    /// Most the provider may charge per request, in USDC (e.g. 0.05).
    #[arg(long, default_value = "0.05")]
    max_price: String,
    /// Lifetime: seconds, or with a unit: 90s, 30m, 12h, 7d.
    #[arg(long, default_value = "1h")]
    expires_in: String,
    #[command(flatten)]
    chain: ChainArgs,
}

/// Prints a payer token.
pub async fn token(args: TokenArgs, json: bool) -> anyhow::Result<()> {
    let max_price = parse_usdc("--max-price", &args.max_price)?;
    let lifetime = parse_duration("--expires-in", &args.expires_in)?;
    let chain = args.chain.connect(true).await?;
    let payee = resolve_payee(&chain, &args.provider).await?;
    let expiry = unix_now() + lifetime.as_secs();
    let token = PayerToken {
        provider: payee,
        spec: args.spec.clone().unwrap_or_default(),
        maxPrice: U256::from(max_price.units()),
        expiry,
        session: B256::random(),
    };
    let signer = chain.signer().context("no signer")?.clone();
    let signed = token
        .sign(&signer, &chain.domain())
        .await
        .context("signing the payer token")?;
    let encoded = signed.encode();
    if json {
        let value = serde_json::json!({
            "token": encoded,
            "payer": signer.address().to_string(),
            "provider": args.provider,
            "payee": payee.to_string(),
            "spec": args.spec,
            "maxPrice": max_price.to_string(),
            "expiry": expiry,
            "header": format!("Authorization: Bearer {encoded}"),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("{encoded}");
        eprintln!(
            "payer {} lets `{}` charge up to {max_price} per request{} until unix {expiry}; use it as:\n  curl -H 'Authorization: Bearer {encoded}' ...",
            signer.address(),
            args.provider,
            args.spec
                .as_deref()
                .map(|s| format!(" for spec {s}"))
                .unwrap_or_default(),
        );
    }
    Ok(())
}

