//! `khachapuri revoke`: the owner stops a deployment for good. Its URL is a bearer instrument (whoever
//! holds it spends the owner's money); after this, providers refuse every call to it, under any CID and
//! whoever pays. The escrow records the spec's terms hash (what the owner signed), which the provider
//! tells its owner (`GET /_logs/{cid}`) and `deploy --json` prints.

use alloy::primitives::B256;
use anyhow::{anyhow, bail};

use crate::args::{ChainArgs, report};
use crate::logs::LogsEndpoint;

/// `khachapuri revoke` options.
#[derive(clap::Args, Debug)]
pub struct RevokeArgs {
    /// The function's URL as `deploy` printed it, or its terms hash (0x + 64 hex, `deploy --json`'s
    /// `termsHash`).
    function: String,
    /// The provider's label, when the URL does not carry it.
    #[arg(long)]
    provider: Option<String>,
    #[command(flatten)]
    chain: ChainArgs,
}

/// Records the revocation on chain, as the spec's owner.
pub async fn revoke(args: RevokeArgs, json: bool) -> anyhow::Result<()> {
    let chain = args.chain.connect(true).await?;
    let owner = chain.address().map_err(|e| anyhow!("{e}"))?;
    let recorded = crate::deployments::find(&chain, owner, &args.function);
    let (terms_hash, cid) = match args.function.parse::<B256>() {
        Ok(hash) => (hash, None),
        Err(_) if reqwest::Url::parse(&args.function).is_ok() => {
            // The provider tells the owner its spec's terms hash (only the owner: it signs for it); the
            // record `deploy` wrote here stands in when the provider does not answer, and must agree
            // with it when it does.
            let asked = async {
                let mut endpoint =
                    LogsEndpoint::find(&chain, &args.function, args.provider.clone()).await?;
                let logs = endpoint.fetch(&chain, u64::MAX).await?;
                anyhow::Ok((logs.terms_hash, endpoint.cid))
            };
            match (asked.await, recorded) {
                (Ok((hash, _)), Some(r)) if hash != r.terms_hash => bail!(
                    "the provider says {} has terms hash {hash}, but {} records {}: one of them is wrong; \
                     pass the hash to revoke as the argument",
                    r.cid,
                    crate::deployments::RECORD,
                    r.terms_hash
                ),
                (Ok((hash, cid)), _) => (hash, Some(cid)),
                (Err(e), Some(r)) => {
                    eprintln!(
                        "note: the provider did not answer ({e:#}); revoking the terms hash {} recorded in {}",
                        r.terms_hash,
                        crate::deployments::RECORD
                    );
                    (r.terms_hash, Some(r.cid))
                }
                (Err(e), None) => bail!(
                    "cannot learn the spec's terms hash from its provider ({e:#}); pass the `termsHash` \
                     that `khachapuri deploy --json` printed instead"
                ),
            }
        }
        Err(_) => bail!(
            "`{}` is neither a function URL nor a terms hash (0x + 64 hex); pass the URL `khachapuri deploy` printed",
            args.function
        ),
    };
    let receipt = crate::progress::wait(
        format!("revoking {terms_hash}"),
        chain.revoke_spec(terms_hash),
    )
    .await
    .map_err(|e| anyhow!("revoking {terms_hash}: {e}"))?;
    let what = cid.as_deref().unwrap_or("the deployment");
    report(
        json,
        format!(
            "revoked {what} (terms {terms_hash}) as {owner}: providers refuse its calls within {} s if {owner} \
             signed it; charges they claimed before still settle",
            khachapuri_provider::REVOCATION_TTL.as_secs()
        ),
        serde_json::json!({ "spec": cid, "termsHash": terms_hash.to_string(), "owner": owner.to_string() }),
        Some(&receipt),
    );
    Ok(())
}
