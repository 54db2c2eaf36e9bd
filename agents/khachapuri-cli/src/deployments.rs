//! `khachapuri deployments`: what this owner deployed, where, and what it costs. `deploy` (and `dev`, for its
//! examples) records each deployment in `./.khachapuri/deployed.jsonl`; this command reads the records of
//! the connected chain and owner, and asks the chain whether each was revoked and each provider what it
//! counted (calls, what they charged the owner, the spending cap's period), with the owner's logs grant.

use std::io::Write as _;
use std::path::Path;

use alloy::primitives::{Address, B256};
use anyhow::{Context, anyhow};
use khachapuri_chain::{Chain, Usdc};
use khachapuri_protocol::logs::{CapSpent, Totals};
use khachapuri_spec::SpendCap;
use serde::{Deserialize, Serialize};

use crate::args::{ChainArgs, at};
use crate::deploy::Published;
use crate::logs::LogsEndpoint;

/// The record file, relative to the directory the commands run in.
pub(crate) const RECORD: &str = ".khachapuri/deployed.jsonl";

/// One deployment as `deploy` recorded it: a JSON line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Deployed {
    /// The spec's CID.
    pub cid: String,
    /// The URL `deploy` printed.
    pub url: String,
    /// The provider label it was deployed to.
    pub provider: String,
    /// Whether the spec is open (any provider may run it).
    pub open: bool,
    /// The owner: signed the terms, pays plain calls.
    pub owner: Address,
    /// The chain and escrow of its terms.
    pub chain_id: u64,
    /// The escrow of its terms.
    pub escrow: Address,
    /// What `khachapuri revoke` records.
    pub terms_hash: B256,
    /// The program's CID and entry module.
    pub program: String,
    /// The entry module.
    pub entry: String,
    /// The most it pays per request.
    #[serde(with = "khachapuri_protocol::usdc::units")]
    pub max_price: Usdc,
    /// Its spending cap, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spend_cap: Option<SpendCap>,
    /// When it was deployed, unix seconds.
    pub deployed_at: u64,
}

impl Deployed {
    /// The record of `published`, deployed to provider `label`, answering at `url`.
    pub(crate) fn new(published: &Published, label: &str, url: &str) -> Self {
        let spec = &published.signed;
        Self {
            cid: published.spec.to_string(),
            url: url.to_owned(),
            provider: label.to_owned(),
            open: spec.provider.is_none(),
            owner: spec.owner,
            chain_id: spec.chain_id,
            escrow: spec.escrow,
            terms_hash: published.terms_hash,
            program: spec.program.clone(),
            entry: spec.entry.clone(),
            max_price: Usdc::from_u256(spec.max_price),
            spend_cap: spec.spend_cap,
            deployed_at: crate::args::unix_now(),
        }
    }
}

/// Appends `deployed` to the record in `dir`.
pub(crate) fn record(dir: &Path, deployed: &Deployed) -> anyhow::Result<()> {
    let path = dir.join(RECORD);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let mut line = serde_json::to_vec(deployed)?;
    line.push(b'\n');
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(&line))
        .with_context(|| format!("cannot record the deployment in {}", path.display()))
}

/// The records in `dir`; a line that does not read is skipped with a warning naming it.
pub(crate) fn read(dir: &Path) -> anyhow::Result<Vec<Deployed>> {
    let path = dir.join(RECORD);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(anyhow!("cannot read {}: {e}", path.display())),
    };
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .filter_map(|(n, line)| match serde_json::from_str(line) {
            Ok(deployed) => Some(deployed),
            Err(e) => {
                eprintln!("warning: {}:{}: skipped ({e})", path.display(), n + 1);
                None
            }
        })
        .collect())
}

/// Drops the records of the escrow `escrow` on chain `chain_id` (a new dev chain has none of the old one's
/// deployments), keeping every other line as it was; the file is replaced whole.
pub(crate) fn forget(dir: &Path, chain_id: u64, escrow: Address) -> anyhow::Result<()> {
    let path = dir.join(RECORD);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(anyhow!("cannot read {}: {e}", path.display())),
    };
    let kept: String = text
        .lines()
        .filter(|line| {
            serde_json::from_str::<Deployed>(line)
                .map_or(true, |d| (d.chain_id, d.escrow) != (chain_id, escrow))
        })
        .flat_map(|line| [line, "\n"])
        .collect();
    let tmp = path.with_extension("jsonl.tmp");
    std::fs::write(&tmp, kept)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .with_context(|| format!("cannot rewrite {}", path.display()))
}

/// The record of the function at `url` by `owner` on `chain`, if this directory deployed it.
pub(crate) fn find(chain: &Chain, owner: Address, url: &str) -> Option<Deployed> {
    let dir = std::env::current_dir().ok()?;
    let d = chain.deployment();
    read(&dir).ok()?.into_iter().rev().find(|r| {
        r.url.trim_end_matches('/') == url.trim_end_matches('/')
            && r.owner == owner
            && r.chain_id == d.chain_id
            && r.escrow == d.escrow
    })
}

/// `khachapuri deployments` options.
#[derive(clap::Args, Debug)]
pub struct DeploymentsArgs {
    /// Show revoked deployments too.
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    chain: ChainArgs,
}

/// What is known of one deployment now.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    #[serde(flatten)]
    deployed: Deployed,
    /// When its owner revoked it, unix seconds.
    revoked_at: Option<u64>,
    /// What its provider said of it (`totals`, `capSpent`), if it answered.
    counted: Option<Counted>,
    /// Why the provider did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    unknown: Option<String>,
}

/// The counts of a provider's logs answer.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Counted {
    /// Calls and the owner's charges since the provider began counting; `None`: none counted.
    totals: Option<Totals>,
    /// The spending cap's current period.
    cap_spent: Option<CapSpent>,
}

/// Lists this owner's deployments on the connected chain, with their state and counts.
pub async fn deployments(args: DeploymentsArgs, json: bool) -> anyhow::Result<()> {
    let chain = args.chain.connect(true).await?;
    let owner = chain.address().map_err(|e| anyhow!("{e}"))?;
    let dir = std::env::current_dir()?;
    let d = chain.deployment();
    let mine: Vec<Deployed> = read(&dir)?
        .into_iter()
        .filter(|r| r.owner == owner && r.chain_id == d.chain_id && r.escrow == d.escrow)
        .collect();

    let mut shown = Vec::new();
    for deployed in mine {
        let revoked_at = crate::progress::wait(
            format!("checking {}", deployed.cid),
            chain.revoked_at(owner, deployed.terms_hash),
        )
        .await
        .with_context(|| format!("reading whether {} is revoked", deployed.cid))?;
        if revoked_at.is_some() && !args.all {
            continue;
        }
        let counted = async {
            let mut endpoint =
                LogsEndpoint::find(&chain, &deployed.url, Some(deployed.provider.clone())).await?;
            endpoint.fetch(&chain, u64::MAX).await
        };
        let (counted, unknown) = match counted.await {
            Ok(logs) => {
                let (totals, cap_spent) = (logs.totals, logs.cap_spent);
                (Some(Counted { totals, cap_spent }), None)
            }
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        shown.push(Status {
            deployed,
            revoked_at,
            counted,
            unknown,
        });
    }

    if json {
        println!("{}", serde_json::to_string_pretty(&shown)?);
        return Ok(());
    }
    if shown.is_empty() {
        eprintln!(
            "{owner} has no {}deployments recorded in {} on chain {} (`khachapuri deploy` records them there)",
            if args.all { "" } else { "live " },
            dir.join(RECORD).display(),
            d.chain_id
        );
    }
    for status in &shown {
        print!("{}", show(status));
    }
    Ok(())
}

/// One deployment for people: where, what it pays, and what its provider counted.
fn show(status: &Status) -> String {
    let d = &status.deployed;
    let mut out = format!("{}\n", d.url);
    let open = if d.open { ", open" } else { "" };
    out.push_str(&format!(
        "    {} on `{}`{open}, deployed {}; pays up to {} per call",
        d.entry,
        d.provider,
        at(d.deployed_at),
        d.max_price
    ));
    if let Some(cap) = &d.spend_cap {
        out.push_str(&format!(", at most {cap}"));
    }
    out.push('\n');
    if let Some(revoked) = status.revoked_at {
        out.push_str(&format!("    revoked {}\n", at(revoked)));
    }
    let Some(counted) = &status.counted else {
        if let Some(why) = &status.unknown {
            out.push_str(&format!("    calls unknown: {why}\n"));
        }
        return out;
    };
    match &counted.totals {
        Some(t) => out.push_str(&format!(
            "    {} call{}, {} charged to you, since {}\n",
            t.calls,
            if t.calls == 1 { "" } else { "s" },
            t.owner_charged,
            at(t.since_ms / 1000),
        )),
        None => {
            out.push_str("    no calls counted (since the provider last started, under this URL)\n")
        }
    }
    if let (Some(spent), Some(cap)) = (&counted.cap_spent, &d.spend_cap) {
        out.push_str(&format!(
            "    {} of the cap's {} spent this period; it resets {}\n",
            spent.spent,
            Usdc::from_u256(cap.amount),
            at(spent.resets_at)
        ));
    }
    out
}
