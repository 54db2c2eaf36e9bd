//! Routing by CID (docs/PROTOCOL.md §10 "Routing by CID"): a call that names no provider, `{gateway}/{cid}`,
//! goes to a provider that can run the spec, and to the next one when it fails before charging.
//!
//! - **Who can run it.** The spec is read from IPFS once per CID: a sealed spec's recipients are in its
//!   envelope's header in the clear (key ids, matched against each label's RSA key); an open spec names
//!   its providers, or none (any provider whose offer says it runs open specs), and its max price and
//!   limits are checked against each offer.
//! - **Who may be paid.** The payer is the one a payer token names, or the open spec's owner, or the
//!   payer a sealed spec's earlier calls were charged to. A provider whose terms with that payer do not
//!   cover its price is never chosen.
//! - **Which first.** The cheapest, then by latency and availability as this gateway saw them: among
//!   providers at one price, a weighted draw (weight: availability over latency) spreads the load.
//! - **Failover.** A provider that fails before anything could be charged (no connection, no tunnel, or
//!   its own refusal marked `X-Khachapuri-Charged: no` that another provider may not share) is skipped and
//!   the next is tried, at most `max_tries` in all and within the response timeout. Once a request may
//!   have reached a provider's run, it is never sent again.
//!
//! The provider table (labels, routes, offers) is refreshed every `refresh` by [`Gateway::serve`].

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use alloy::primitives::Address;
use futures::future::BoxFuture;
use khachapuri_ipfs::{Cid, FetchError, Fetcher, Source};
use khachapuri_protocol::{SignedPayerToken, Usdc, reputation::Record};
use khachapuri_spec::{KeyId, Offer, Spec, envelope};

use crate::{directory::Route, label::Label};

/// Routing settings ([`crate::GatewayConfig::routing`]).
#[derive(Clone)]
pub struct RoutingConfig {
    /// Where specs are read from (a provider's sources, or any IPFS node that has them).
    pub ipfs: Vec<Source>,
    /// Most providers one call is sent to.
    pub max_tries: usize,
    /// Largest request body a routed call takes (it is kept for the next provider); a larger one must
    /// name its provider.
    pub max_body_bytes: usize,
    /// How often the provider table (labels, routes, offers) is read again.
    pub refresh: Duration,
    /// Most time to read one provider's offer.
    pub offer_timeout: Duration,
    /// What routing reads from the chain: payers' terms, the escrow's domain, providers' records
    /// ([`ChainReads`]). `None`: no payer filter (the providers refuse what they must), no reputation.
    pub chain: Option<Arc<dyn ChainView>>,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            ipfs: Vec::new(),
            max_tries: 3,
            max_body_bytes: 1 << 20,
            refresh: Duration::from_secs(5),
            offer_timeout: Duration::from_secs(2),
            chain: None,
        }
    }
}

impl std::fmt::Debug for RoutingConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoutingConfig")
            .field("ipfs", &self.ipfs)
            .field("max_tries", &self.max_tries)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("refresh", &self.refresh)
            .field("chain", &self.chain.is_some())
            .finish()
    }
}

/// What routing reads from the chain.
pub trait ChainView: Send + Sync + 'static {
    /// Whether one request at `price` by provider `payee` fits `payer`'s terms with it.
    fn covers(
        &self,
        payer: Address,
        payee: Address,
        price: Usdc,
    ) -> BoxFuture<'_, Result<bool, String>>;

    /// The escrow's EIP-712 domain: a payer token's signer is recovered in it before its payer is
    /// trusted to pick providers.
    fn domain(&self) -> alloy::sol_types::Eip712Domain;

    /// The records of providers (payee, label) from public data, read onwards since the last call.
    fn records(
        &self,
        providers: Vec<(Address, Label)>,
    ) -> BoxFuture<'_, Result<Vec<Record>, String>>;
}

/// The chain as routing reads it: a [`khachapuri_chain::Chain`] and its reputation scan.
#[cfg(feature = "chain")]
pub struct ChainReads {
    chain: khachapuri_chain::Chain,
    domain: alloy::sol_types::Eip712Domain,
    scan: tokio::sync::Mutex<khachapuri_chain::reputation::Scan>,
}

#[cfg(feature = "chain")]
impl ChainReads {
    /// Reads through `chain` (no signer needed).
    pub fn new(chain: khachapuri_chain::Chain) -> Arc<Self> {
        let scan = khachapuri_chain::reputation::Scan::new(&chain);
        Arc::new(Self {
            domain: chain.domain(),
            chain,
            scan: tokio::sync::Mutex::new(scan),
        })
    }
}

#[cfg(feature = "chain")]
impl ChainView for ChainReads {
    fn covers(
        &self,
        payer: Address,
        payee: Address,
        price: Usdc,
    ) -> BoxFuture<'_, Result<bool, String>> {
        Box::pin(async move {
            self.chain
                .terms(payer, payee)
                .await
                .map(|terms| terms.covers(price))
                .map_err(|e| e.to_string())
        })
    }

    fn domain(&self) -> alloy::sol_types::Eip712Domain {
        self.domain.clone()
    }

    fn records(
        &self,
        providers: Vec<(Address, Label)>,
    ) -> BoxFuture<'_, Result<Vec<Record>, String>> {
        Box::pin(async move {
            let mut scan = self.scan.lock().await;
            scan.update(&self.chain).await.map_err(|e| e.to_string())?;
            let mut records = Vec::with_capacity(providers.len());
            for (payee, label) in providers {
                records.push(scan.record(&self.chain, payee, label.as_str()).await);
            }
            Ok(records)
        })
    }
}

/// What routing needs of a spec.
#[derive(Debug)]
pub enum SpecFacts {
    /// Sealed: the key ids of its recipients (who they are, not what it says).
    Sealed(Vec<KeyId>),
    /// In the clear.
    Open(Box<Spec>),
}

/// How a routed call pays.
#[derive(Debug, Clone)]
pub enum Payment {
    /// No payment of its own: the spec's owner pays.
    Owner,
    /// A payer token; `payer` is its signer, recovered when the gateway reads terms, else as it names.
    Token {
        /// The token.
        token: Box<SignedPayerToken>,
        /// Who pays.
        payer: Option<Address>,
    },
    /// An x402 payment, made out to one payee: only that provider can take it.
    X402 {
        /// The payee the authorization pays.
        pay_to: Address,
    },
}

/// A provider the table knows, as of the last refresh.
#[derive(Debug, Clone)]
pub struct Known {
    /// Its label.
    pub label: Label,
    /// Its route (server, payee, key id).
    pub route: Route,
    /// Its offer (`GET /_provider`), or why it could not be read.
    pub offer: Result<Offer, String>,
    /// What the chain says of it (settled requests, payers, age), when the gateway reads the chain.
    pub record: Option<Record>,
    /// Whether its offer proves it holds the RSA key its resolver publishes (`keyProof`): only then is it
    /// a recipient of the specs sealed to that key.
    pub key_proven: bool,
}

/// What this gateway saw of a provider's answers.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// Calls it answered (any status it chose, charged or not).
    pub answered: u64,
    /// Calls it could not be reached for.
    pub unreachable: u64,
    /// Calls it refused without charging, in a way another provider may not (sent on to the next).
    pub refused: u64,
    /// Moving average of the time to its response head, milliseconds.
    pub latency_ms: Option<f64>,
    /// Charged answers whose receipt the gateway checked.
    pub receipts: u64,
    /// Of those, receipts that did not verify: not signed by its payee, or naming another provider,
    /// payer, spec or price than the answer.
    pub bad_receipts: u64,
    /// Receipts for another request digest than the one the gateway sent: shown, not scored (a proxy in
    /// front of an honest agent may rewrite a path it digests).
    pub digest_mismatches: u64,
    /// Skipped until then after failing to connect (backing off, 1 s doubling to 30 s).
    #[serde(skip)]
    down_until: Option<Instant>,
    #[serde(skip)]
    backoff: Duration,
}

impl Health {
    /// The share of calls it was reachable for, smoothed so that a newcomer starts near 1: what the ranking
    /// weighs (the reputation shows the share seen, [`Health::seen`]).
    pub fn smoothed_availability(&self) -> f64 {
        (self.answered as f64 + 1.0) / ((self.answered + self.unreachable) as f64 + 1.0)
    }

    fn weight(&self) -> f64 {
        // Unknown latency counts as 1 ms: a newcomer gets a fair share and is measured.
        let latency = self.latency_ms.unwrap_or(1.0).max(0.05);
        self.smoothed_availability().powi(2) / latency
    }

    /// What the reputation reads of it.
    pub fn seen(&self) -> khachapuri_protocol::reputation::Seen {
        khachapuri_protocol::reputation::Seen {
            answered: self.answered,
            unreachable: self.unreachable,
            receipts: self.receipts,
            bad_receipts: self.bad_receipts,
        }
    }

    fn is_down(&self, now: Instant) -> bool {
        self.down_until.is_some_and(|t| t > now)
    }
}

/// How long a provider's refusal of a spec is remembered, by its code: refusals about the spec and this
/// provider (not the caller) hold for a while; a missing block may turn up.
fn remembered_for(code: &str) -> Option<Duration> {
    match code {
        "undecryptable_spec"
        | "not_for_this_provider"
        | "price_above_spec"
        | "limits_above_provider"
        | "wrong_chain"
        | "open_specs_refused" => Some(Duration::from_secs(60)),
        "not_found" => Some(Duration::from_secs(10)),
        _ => None,
    }
}

/// Whether a refusal marked "nothing charged" is this provider's alone, so that another may serve the
/// call: its terms with the payer, its keys and offer, its IPFS sources, its chain RPC, its load.
pub fn is_provider_specific(code: &str) -> bool {
    remembered_for(code).is_some()
        || matches!(
            code,
            "not_approved"
                | "price_above_terms"
                | "insufficient_reserve"
                | "price_above_token"
                | "settlement_refused"
                | "spend_cap_reached"
                | "rate_limited"
                | "ipfs_unavailable"
                | "chain_unavailable"
                | "shutting_down"
        )
}

/// Why no provider can take a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoCandidate {
    /// No known provider runs this spec at all (recipients unknown, none open, none named).
    NoRunner(String),
    /// Runners exist, but none is reachable now or fits the spec's terms.
    NoneAvailable(String),
    /// Runners exist, but the payer has terms covering the price with none of them.
    NotReserved {
        /// The payer.
        payer: Address,
        /// Whether the spec's owner pays (the call brings no payment of its own).
        owner_pays: bool,
        /// The runners available now, and their prices.
        runners: Vec<(Label, Usdc)>,
        /// Why the other runners are not available now (empty: all are).
        unavailable: String,
    },
}

/// The router's state: the provider table, what it saw of them, specs by CID.
pub struct Router {
    pub(crate) config: RoutingConfig,
    fetcher: Fetcher,
    providers: Mutex<Arc<Vec<Known>>>,

    /// Whether the table was read at least once.
    ready: std::sync::atomic::AtomicBool,
    health: Mutex<HashMap<Label, Health>>,
    specs: Mutex<HashMap<Cid, Arc<Result<SpecFacts, String>>>>,
    /// Refusals of a spec by a provider, remembered until the instant.
    refusals: Mutex<HashMap<(Cid, Label), Instant>>,
    /// The payer a sealed spec's calls without a token were charged to (its owner): learned from answers.
    owners: Mutex<HashMap<Cid, Address>>,
    /// Payer tokens' signers, by the token's text.
    signers: Mutex<HashMap<String, Address>>,
    /// Whether (payer, payee, price) was covered, and when that was read.
    terms: Mutex<HashMap<TermsKey, (bool, Instant)>>,
}

/// A payer, a provider's payee, a price.
type TermsKey = (Address, Address, Usdc);

/// Most specs (and learned owners, remembered refusals) kept; past it the map starts again.
const MAX_CACHED: usize = 4096;
/// How long a read of a payer's terms is trusted.
const TERMS_TTL: Duration = Duration::from_secs(2);
/// Receipts of a provider checked one by one before sampling starts.
const RECEIPTS_ALWAYS_CHECKED: u64 = 64;
/// Past those, one receipt in this many is checked.
const RECEIPT_SAMPLING: u32 = 16;
/// Most providers whose terms one call reads (the cheapest).
const MAX_TERMS_READS: usize = 8;
/// Most time to read a payer's terms with one provider.
const TERMS_TIMEOUT: Duration = Duration::from_secs(2);
/// Most time to read a spec.
const SPEC_TIMEOUT: Duration = Duration::from_secs(10);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn bounded_insert<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>, key: K, value: V) {
    if map.len() >= MAX_CACHED {
        map.clear();
    }
    map.insert(key, value);
}

impl Router {
    /// A router with an empty table.
    pub fn new(config: RoutingConfig) -> Self {
        Self {
            fetcher: Fetcher::new(config.ipfs.clone()),
            config,
            providers: Mutex::default(),

            ready: std::sync::atomic::AtomicBool::new(false),
            health: Mutex::default(),
            specs: Mutex::default(),
            refusals: Mutex::default(),
            owners: Mutex::default(),
            signers: Mutex::default(),
            terms: Mutex::default(),
        }
    }

    /// The table as of the last refresh.
    pub fn providers(&self) -> Arc<Vec<Known>> {
        lock(&self.providers).clone()
    }

    /// Replaces the table.
    pub fn set_providers(&self, providers: Vec<Known>) {
        *lock(&self.providers) = Arc::new(providers);
        self.ready.store(true, std::sync::atomic::Ordering::Release);
    }

    /// What this gateway saw of `label`.
    pub fn health(&self, label: &Label) -> Health {
        lock(&self.health).get(label).cloned().unwrap_or_default()
    }

    /// The spec at `cid`, as routing reads it. A verdict on the bytes is kept; a fetch failure is not.
    pub async fn facts(&self, cid: &Cid) -> Result<Arc<Result<SpecFacts, String>>, FetchError> {
        if let Some(hit) = lock(&self.specs).get(cid) {
            return Ok(hit.clone());
        }
        let fetch = self.fetcher.get(cid, khachapuri_spec::MAX_SPEC_BYTES);
        let bytes = tokio::time::timeout(SPEC_TIMEOUT, fetch)
            .await
            .map_err(|_| {
                FetchError::Remote(format!("no IPFS source answered within {SPEC_TIMEOUT:?}"))
            })??;
        let facts = Arc::new(read_facts(&bytes));
        bounded_insert(&mut lock(&self.specs), *cid, facts.clone());
        Ok(facts)
    }

    /// The payer of a call to `cid` paid by `payment`, and whether it was learned (a sealed spec's owner,
    /// as its earlier answers named it) rather than read. `None`: not known (x402 pays no reserve).
    pub fn payer(
        &self,
        cid: &Cid,
        facts: &SpecFacts,
        payment: &Payment,
    ) -> Option<(Address, bool)> {
        match (payment, facts) {
            (Payment::Token { payer, .. }, _) => payer.map(|p| (p, false)),
            (Payment::X402 { .. }, _) => None,
            (Payment::Owner, SpecFacts::Open(spec)) => Some((spec.owner, false)),
            (Payment::Owner, SpecFacts::Sealed(_)) => {
                lock(&self.owners).get(cid).map(|p| (*p, true))
            }
        }
    }

    /// Forgets a sealed spec's learned owner.
    fn forget_owner(&self, cid: &Cid) {
        lock(&self.owners).remove(cid);
    }

    /// Remembers who a sealed spec's owner-paid call was charged to.
    pub fn learn_owner(&self, cid: &Cid, payer: Address) {
        bounded_insert(&mut lock(&self.owners), *cid, payer);
    }

    /// The providers to try for a call to `cid`, best first; `live` tells whether a tunneled label has its
    /// tunnel up now.
    pub async fn candidates(
        &self,
        cid: &Cid,
        facts: &SpecFacts,
        payment: &Payment,
        live: impl Fn(&Label) -> bool,
    ) -> Result<Vec<(Known, Usdc)>, NoCandidate> {
        if !self.ready.load(std::sync::atomic::Ordering::Acquire) {
            return Err(NoCandidate::NoneAvailable(
                "this gateway has not read its provider table yet".into(),
            ));
        }
        let token = match payment {
            Payment::Token { token, .. } => Some(&**token),
            _ => None,
        };
        let table = self.providers();
        let now = Instant::now();
        // Who runs this spec at all.
        let runners: Vec<&Known> = table
            .iter()
            .filter(|k| match facts {
                // Anyone can copy a provider's public key into a resolver of its own; only a label whose offer
                // proves it holds the key is a recipient by it.
                SpecFacts::Sealed(recipients) => {
                    k.key_proven && k.route.key_id.is_some_and(|id| recipients.contains(&id))
                }
                // An operator who refuses open specs refuses them whatever they name; an unreadable offer
                // is told apart below.
                SpecFacts::Open(spec) => {
                    (spec.provider.is_none() || spec.is_for(k.label.as_str()))
                        && k.offer.as_ref().map_or(true, |o| o.open_specs)
                }
            })
            .filter(|k| match payment {
                Payment::Token { token, .. }
                    if token.token.provider != khachapuri_protocol::eip712::ANY_PROVIDER =>
                {
                    k.route.payee == Some(token.token.provider)
                }
                Payment::X402 { pay_to } => k.route.payee == Some(*pay_to),
                _ => true,
            })
            .collect();
        if runners.is_empty() {
            return Err(NoCandidate::NoRunner(match facts {
                SpecFacts::Sealed(r) => format!(
                    "it is sealed to {} key(s), and no registered provider (that the payment names) proves it \
                     holds one of them",
                    r.len()
                ),
                SpecFacts::Open(spec) => match &spec.provider {
                    Some(p) => format!("it names {p}, and none of them is registered"),
                    None => "it is open, and no provider runs open specs".into(),
                },
            }));
        }
        // Those that can take it now: an offer read, reachable, the spec's terms fit, not refused lately.
        let mut why_not = Vec::new();
        let mut able = Vec::new();
        {
            let refusals = lock(&self.refusals);
            for k in runners {
                let offer = match &k.offer {
                    Ok(offer) => offer,
                    Err(e) => {
                        why_not.push(format!("{}: {e}", k.label));
                        continue;
                    }
                };
                if k.route.server == crate::directory::Server::Tunnel && !live(&k.label) {
                    why_not.push(format!("{}: its tunnel is down", k.label));
                    continue;
                }
                if let SpecFacts::Open(spec) = facts
                    && let Err(e) = offer.check(
                        spec.chain_id,
                        spec.escrow,
                        Usdc::from_u256(spec.max_price),
                        &spec.limits,
                    )
                {
                    why_not.push(format!("{}: {e}", k.label));
                    continue;
                }
                if token.is_some_and(|t| offer.price > t.max_price()) {
                    why_not.push(format!(
                        "{}: its price {} is above the payer token's maximum",
                        k.label, offer.price
                    ));
                    continue;
                }
                if refusals
                    .get(&(*cid, k.label.clone()))
                    .is_some_and(|until| *until > now)
                {
                    why_not.push(format!("{}: it refused this spec lately", k.label));
                    continue;
                }
                able.push((k.clone(), offer.price));
            }
        }
        if able.is_empty() {
            return Err(NoCandidate::NoneAvailable(why_not.join("; ")));
        }
        // Whose terms with the payer cover the price.
        // A call tries at most a few providers: the terms of the cheapest few are all it needs, and a token
        // from a fresh key cannot make the gateway read more.
        able.sort_by_key(|(_, price)| *price);
        able.truncate(MAX_TERMS_READS);
        let payer = self.payer(cid, facts, payment);
        if let (Some((payer, learned)), Some(_)) = (payer, &self.config.chain) {
            // Read in parallel, each bounded; a read that fails leaves the provider in: it checks the
            // terms itself, and fails closed.
            let reads = able.iter().map(|(k, price)| async move {
                let Some(payee) = k.route.payee else {
                    return false;
                };
                let read = tokio::time::timeout(TERMS_TIMEOUT, self.covers(payer, payee, *price));
                read.await.ok().and_then(Result::ok).unwrap_or(true)
            });
            let verdicts = futures::future::join_all(reads).await;
            let covered: Vec<(Known, Usdc)> = able
                .iter()
                .zip(verdicts)
                .filter(|(_, covers)| *covers)
                .map(|(a, _)| a.clone())
                .collect();
            match (covered.is_empty(), learned) {
                (false, _) => able = covered,
                // A learned owner is only a provider's word: when it rules everyone out, it is dropped.
                (true, true) => self.forget_owner(cid),
                (true, false) => {
                    return Err(NoCandidate::NotReserved {
                        payer,
                        owner_pays: matches!(payment, Payment::Owner),
                        runners: able.into_iter().map(|(k, p)| (k.label, p)).collect(),
                        unavailable: why_not.join("; "),
                    });
                }
            }
        }
        Ok(self.rank(able, now))
    }

    async fn covers(&self, payer: Address, payee: Address, price: Usdc) -> Result<bool, String> {
        let key = (payer, payee, price);
        if let Some((covers, at)) = lock(&self.terms).get(&key)
            && at.elapsed() < TERMS_TTL
        {
            return Ok(*covers);
        }
        let terms = self
            .config
            .chain
            .as_ref()
            .ok_or("no chain to read terms from")?;
        let covers = terms.covers(payer, payee, price).await?;
        bounded_insert(&mut lock(&self.terms), key, (covers, Instant::now()));
        Ok(covers)
    }

    /// Cheapest first; among one price a weighted draw without replacement (weight: availability² over
    /// latency), so a faster, steadier provider gets more of the calls but none gets all; providers
    /// backing off after a failed connection go last.
    fn rank(&self, mut able: Vec<(Known, Usdc)>, now: Instant) -> Vec<(Known, Usdc)> {
        let health = lock(&self.health);
        let keys: HashMap<Label, (bool, f64)> = able
            .iter()
            .map(|(k, _)| {
                let h = health.get(&k.label).cloned().unwrap_or_default();
                // Reputation beside speed: the chain's part scales the weight by 0.5 to 1, and receipts
                // that fail take most of it.
                let weight = h.weight() * reputation(k, &h).routing.max(1e-9);
                // Efraimidis–Spirakis: ln(u)/w sorted high to low (as u^(1/w), without its underflow)
                // draws by weight without replacement.
                let u: f64 = rand::random::<f64>().max(f64::MIN_POSITIVE);
                (k.label.clone(), (h.is_down(now), u.ln() / weight))
            })
            .collect();
        drop(health);
        able.sort_by(|(a, pa), (b, pb)| {
            let (down_a, key_a) = keys[&a.label];
            let (down_b, key_b) = keys[&b.label];
            down_a
                .cmp(&down_b)
                .then(pa.cmp(pb))
                .then(key_b.total_cmp(&key_a))
        });
        able
    }

    /// `label` answered, its head after `took`.
    pub fn answered(&self, label: &Label, took: Duration) {
        let mut health = lock(&self.health);
        let h = health.entry(label.clone()).or_default();
        h.answered += 1;
        let ms = took.as_secs_f64() * 1e3;
        h.latency_ms = Some(match h.latency_ms {
            Some(avg) => 0.8 * avg + 0.2 * ms,
            None => ms,
        });
        h.down_until = None;
        h.backoff = Duration::ZERO;
    }

    /// Whether to check `label`'s next receipt: every one of its first [`RECEIPTS_ALWAYS_CHECKED`], then one
    /// in [`RECEIPT_SAMPLING`] at random (recovering a signature costs more than the rest of a routed call;
    /// a random sample keeps the share of bad receipts unbiased).
    pub fn sample_receipt(&self, label: &Label) -> bool {
        let checked = lock(&self.health).get(label).map_or(0, |h| h.receipts);
        checked < RECEIPTS_ALWAYS_CHECKED || rand::random::<u32>().is_multiple_of(RECEIPT_SAMPLING)
    }

    /// `label`'s receipt on a charged answer, as checked.
    pub fn receipt(&self, label: &Label, checked: &Result<(), ReceiptMismatch>) {
        let mut health = lock(&self.health);
        let h = health.entry(label.clone()).or_default();
        h.receipts += 1;
        match checked {
            Ok(()) => {}
            Err(ReceiptMismatch::Digest) => h.digest_mismatches += 1,
            Err(ReceiptMismatch::Terms(_)) => h.bad_receipts += 1,
        }
    }

    /// `label` could not be reached: skipped for a while (1 s, doubling to 30 s while it stays down).
    pub fn unreachable(&self, label: &Label) {
        let mut health = lock(&self.health);
        let h = health.entry(label.clone()).or_default();
        h.unreachable += 1;
        h.backoff = (h.backoff * 2).clamp(Duration::from_secs(1), Duration::from_secs(30));
        h.down_until = Some(Instant::now() + h.backoff);
    }

    /// `label` refused `cid` with `code`, charging nothing.
    pub fn refused(&self, cid: &Cid, label: &Label, code: &str, took: Duration) {
        self.answered(label, took);
        lock(&self.health).entry(label.clone()).or_default().refused += 1;
        if let Some(ttl) = remembered_for(code) {
            bounded_insert(
                &mut lock(&self.refusals),
                (*cid, label.clone()),
                Instant::now() + ttl,
            );
        }
    }

    /// Forgets what it saw of labels no longer in the table.
    pub fn retain(&self, labels: &HashSet<Label>) {
        lock(&self.health).retain(|l, _| labels.contains(l));
    }
}

/// `known`'s reputation as this gateway weighs it: its chain record (none read: a newcomer's) and what
/// the gateway saw of it.
pub fn reputation(known: &Known, health: &Health) -> khachapuri_protocol::reputation::Score {
    let record = known.record.clone().unwrap_or_default();
    let now = khachapuri_protocol::unix_now();
    khachapuri_protocol::reputation::score(&record, now, &health.seen())
}

/// Reads a spec's bytes as routing needs them: a sealed envelope's recipients, or the open spec.
fn read_facts(bytes: &[u8]) -> Result<SpecFacts, String> {
    if envelope::is_envelope(bytes) {
        let header = envelope::header(bytes).map_err(|e| e.to_string())?;
        return Ok(SpecFacts::Sealed(
            header.recipients.iter().map(|r| *r.key_id).collect(),
        ));
    }
    Spec::from_json(bytes)
        .map(|spec| SpecFacts::Open(Box::new(spec)))
        .map_err(|e| format!("not a spec: {e}"))
}

// ---------------------------------------------------------------------------------------------------------
// The gateway's side: the table's refresh, the routed call, `/_providers`
// ---------------------------------------------------------------------------------------------------------

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use khachapuri_protocol::http::{CHARGED_HEADER, ErrorBody, PAYER_HEADER, PROVIDER_HEADER};

use crate::{
    proxy::{Body, add_forwarded, boxed, error_response, full, idle_limited, strip_hop_by_hop},
    server::Gateway,
};

/// The gateway's own path that lists the providers it routes to, with what it saw of them.
pub const PROVIDERS_PATH: &str = "/_providers";

/// Largest refusal body read to learn its code.
const MAX_REFUSAL_BYTES: usize = 64 << 10;
/// Largest offer read.
const MAX_OFFER_BYTES: usize = 16 << 10;
/// Offers read at once when the table is refreshed.
const OFFER_READS: usize = 8;

impl Gateway {
    /// Reads the provider table again every `refresh`, until the gateway shuts down.
    pub(crate) async fn refresh_providers_until_shutdown(self: Arc<Self>) {
        let Some(router) = &self.router else { return };
        let every = router.config.refresh;
        loop {
            self.refresh_providers().await;
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = self.shutdown_token().cancelled() => return,
            }
        }
    }

    /// Reads every label's route and offer now (what [`Gateway::serve`] does every `refresh`).
    pub async fn refresh_providers(&self) {
        let Some(router) = &self.router else { return };
        let labels = match self.directory.labels().await {
            Ok(labels) => labels,
            Err(e) => {
                return tracing::warn!(error = %e, "cannot list providers; routing keeps its table");
            }
        };
        // A few at a time, each bounded: one slow provider cannot hold the table back.
        let reads = labels.iter().cloned().map(|label| self.read_known(label));
        let table: Vec<Known> = futures::stream::iter(reads)
            .buffer_unordered(OFFER_READS)
            .filter_map(|k| async move { k })
            .collect()
            .await;
        // The table serves at once, with the records it had; the chain's records follow.
        let mut table = table;
        let previous = router.providers();
        for k in &mut table {
            k.record = previous
                .iter()
                .find(|p| p.label == k.label)
                .and_then(|p| p.record.clone());
        }
        router.retain(&labels.iter().cloned().collect());
        router.set_providers(table.clone());
        if let Some(chain) = &router.config.chain {
            let who: Vec<(Address, Label)> = table
                .iter()
                .filter_map(|k| Some((k.route.payee?, k.label.clone())))
                .collect();
            match chain.records(who.clone()).await {
                Ok(records) => {
                    let records: HashMap<Label, Record> =
                        who.into_iter().map(|(_, l)| l).zip(records).collect();
                    for k in &mut table {
                        k.record = records.get(&k.label).cloned();
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read providers' records; reputation waits")
                }
            }
            router.set_providers(table);
        }
    }

    /// `label`'s route and offer, as the table keeps them; `None`: not registered now.
    fn read_known(&self, label: Label) -> BoxFuture<'_, Option<Known>> {
        Box::pin(async move {
            let route = self.directory.lookup(&label).await.ok().flatten()?;
            let offer = self.read_offer(&label, &route).await;
            let key_proven = match (&offer, &route.rsa_key, route.payee) {
                (Ok(offer), Some(der), Some(payee)) => {
                    offer.key_proof.as_ref().is_some_and(|proof| {
                        khachapuri_spec::verify_proof(
                            der,
                            label.as_str(),
                            payee,
                            offer.chain_id,
                            proof,
                        )
                    })
                }
                _ => false,
            };
            Some(Known {
                label,
                route,
                offer,
                record: None,
                key_proven,
            })
        })
    }

    /// `GET /_provider` of `label`, directly or down its tunnel; an offer that names another label or
    /// payee than the chain's record is not this provider's.
    async fn read_offer(&self, label: &Label, route: &Route) -> Result<Offer, String> {
        let Some(router) = &self.router else {
            return Err("routing is off".into());
        };
        let request = Request::get("/_provider")
            .body(full(""))
            .map_err(|e| e.to_string())?;
        // The whole read, head and body, within the offer timeout.
        let read = async {
            let response = self
                .forward(label, route, "/_provider".into(), request)
                .await
                .map_err(|e| e.reason())?;
            if response.status() != StatusCode::OK {
                return Err(format!("its offer answered {}", response.status()));
            }
            collect(boxed(response.into_body()), MAX_OFFER_BYTES)
                .await
                .map_err(|e| format!("reading its offer: {e}"))
        };
        let body = tokio::time::timeout(router.config.offer_timeout, read)
            .await
            .map_err(|_| "its offer did not arrive in time".to_owned())??;
        let offer: Offer =
            serde_json::from_slice(&body).map_err(|e| format!("its offer is unreadable: {e}"))?;
        if offer.label != label.as_str() || Some(offer.payee) != route.payee {
            return Err(format!(
                "its offer is for {} ({}), not this label's on-chain record",
                offer.label, offer.payee
            ));
        }
        Ok(offer)
    }

    /// `GET /_providers`: the table, with what this gateway saw of each provider.
    pub(crate) fn providers_json(&self) -> Response<Body> {
        let Some(router) = &self.router else {
            return routing_off();
        };
        let live = self.tunnels.labels();
        let rows: Vec<serde_json::Value> = router
            .providers()
            .iter()
            .map(|k| {
                let tunneled = k.route.server == crate::directory::Server::Tunnel;
                serde_json::json!({
                    "label": k.label.as_str(),
                    "server": match &k.route.server {
                        crate::directory::Server::Url(url) => url.as_str(),
                        crate::directory::Server::Tunnel => "tunnel:",
                    },
                    "payee": k.route.payee,
                    "reachable": k.offer.is_ok() && (!tunneled || live.contains(&k.label)),
                    "keyProven": k.key_proven,
                    "offer": k.offer.as_ref().ok(),
                    "offerError": k.offer.as_ref().err(),
                    "price": k.offer.as_ref().ok().map(|o| o.price.to_string()),
                    "observed": router.health(&k.label),
                    "record": k.record,
                    "reputation": reputation(k, &router.health(&k.label)),
                })
            })
            .collect();
        let mut response =
            Response::new(full(serde_json::json!({ "providers": rows }).to_string()));
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }

    /// A call that names no provider: `/{cid}[/path][?query]`, sent to the best provider that can take it,
    /// and to the next while one refuses without charging.
    pub(crate) async fn route_call(
        &self,
        req: Request<Incoming>,
        remote: std::net::SocketAddr,
        host: Option<&str>,
    ) -> Response<Body> {
        let Some(router) = &self.router else {
            return routing_off();
        };
        let path_and_query = req
            .uri()
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned();
        let first = req.uri().path().trim_start_matches('/');
        let first = first.split('/').next().unwrap_or_default();
        let cid = match khachapuri_ipfs::parse_cid(first) {
            Ok(cid) => cid,
            Err(e) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "malformed_cid",
                    &e.to_string(),
                    "call /{cid}[/path], with the spec's CID",
                );
            }
        };
        let facts = match router.facts(&cid).await {
            Ok(facts) => facts,
            Err(e) => return fetch_error(&cid, e),
        };
        let facts = match facts.as_ref() {
            Ok(facts) => facts,
            Err(e) => {
                return error_response(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "unroutable_spec",
                    &format!("{cid} cannot be routed: {e}"),
                    "call the spec's CID, as `khachapuri deploy` printed it",
                );
            }
        };
        let payment = match router.payment(req.headers()) {
            Ok(payment) => payment,
            Err(response) => return *response,
        };
        let live = self.tunnels.labels();
        let candidates = match router
            .candidates(&cid, facts, &payment, |l| live.contains(l))
            .await
        {
            Ok(candidates) => candidates,
            Err(none) => return no_candidate(&cid, none),
        };

        let (mut parts, body) = req.into_parts();
        let idle = self.config.body_idle_timeout;
        let body = match collect(
            idle_limited(boxed(body), idle),
            router.config.max_body_bytes,
        )
        .await
        {
            Ok(body) => body,
            Err(e) if e.is::<TooLarge>() => {
                return error_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large_to_route",
                    &format!(
                        "a routed call's body is kept for the next provider, and this one is over {} bytes",
                        router.config.max_body_bytes
                    ),
                    "name the provider to stream a larger body: {gateway}/{label}/{cid}",
                );
            }
            Err(e) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "body_unreadable",
                    &format!("the request body could not be read: {e}"),
                    "send the request again",
                );
            }
        };
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(header::HOST);
        parts.headers.remove("x-forwarded-prefix");
        add_forwarded(
            &mut parts.headers,
            remote,
            host,
            &self.config.forwarded_proto,
        );

        let deadline = Instant::now() + self.config.response_timeout;
        let mut tried = Vec::new();
        let mut last_refusal = None;
        for (known, _) in candidates.into_iter().take(router.config.max_tries.max(1)) {
            let label = known.label;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let mut request = Request::new(full(body.clone()));
            *request.method_mut() = parts.method.clone();
            *request.headers_mut() = parts.headers.clone();
            let started = Instant::now();
            let sent = self.forward(&label, &known.route, path_and_query.clone(), request);
            let response = match tokio::time::timeout(left, sent).await {
                Ok(Ok(response)) => response,
                Ok(Err(e)) if e.before_sending() => {
                    tracing::info!(%label, %cid, reason = %e.reason(), "provider unreachable; trying the next");
                    router.unreachable(&label);
                    tried.push(format!("{label}: {}", e.reason()));
                    continue;
                }
                // It may be running: never sent again.
                Ok(Err(e)) => return named(e.into_response(&label), &label),
                Err(_) => return named(provider_timeout(&label, left), &label),
            };
            let took = started.elapsed();
            let charged = response
                .headers()
                .get(CHARGED_HEADER)
                .map(HeaderValue::as_bytes);
            let refused = charged == Some(b"no")
                && (response.status().is_client_error() || response.status().is_server_error());
            if refused {
                let (head, body) = response.into_parts();
                let bytes = collect(boxed(body), MAX_REFUSAL_BYTES);
                let bytes = match tokio::time::timeout(Duration::from_secs(5), bytes).await {
                    Ok(Ok(bytes)) => bytes,
                    _ => Bytes::new(),
                };
                let code = serde_json::from_slice::<ErrorBody>(&bytes)
                    .map(|b| b.error)
                    .unwrap_or_default();
                let mut answer = Response::from_parts(head, full(bytes));
                strip_hop_by_hop(answer.headers_mut());
                answer.headers_mut().remove(header::CONTENT_LENGTH);
                if is_provider_specific(&code) {
                    tracing::info!(%label, %cid, %code, "provider refused without charging; trying the next");
                    router.refused(&cid, &label, &code, took);
                    tried.push(format!("{label}: {code}"));
                    last_refusal = Some((label, answer));
                    continue;
                }
                router.answered(&label, took);
                return named(answer, &label);
            }
            router.answered(&label, took);
            // A charge the answer declares (its price) comes with a receipt the gateway can check.
            let checked = match (&router.config.chain, known.route.payee) {
                (Some(chain), Some(payee))
                    if charged == Some(b"yes")
                        && router.sample_receipt(&label)
                        && response
                            .headers()
                            .contains_key(khachapuri_protocol::http::PRICE_HEADER) =>
                {
                    let digest = khachapuri_protocol::receipt::request_digest(
                        parts.method.as_str(),
                        &path_and_query,
                        &body,
                    );
                    let checked =
                        check_receipt(response.headers(), &chain.domain(), payee, &cid, digest);
                    if let Err(why) = &checked {
                        tracing::warn!(%label, %cid, ?why, "a receipt that does not verify");
                    }
                    router.receipt(&label, &checked);
                    Some(checked.is_ok())
                }
                _ => None,
            };
            // Only an answer whose receipt verified teaches who a sealed spec's owner is.
            if checked == Some(true)
                && matches!(payment, Payment::Owner)
                && matches!(facts, SpecFacts::Sealed(_))
                && charged == Some(b"yes")
                && let Some(payer) = response
                    .headers()
                    .get(PAYER_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<Address>().ok())
            {
                router.learn_owner(&cid, payer);
            }
            let mut response = response.map(|b| idle_limited(boxed(b), idle));
            strip_hop_by_hop(response.headers_mut());
            return named(response, &label);
        }
        if let Some((label, answer)) = last_refusal {
            return named(answer, &label);
        }
        error_response(
            StatusCode::BAD_GATEWAY,
            "no_provider_answered",
            &format!(
                "no provider could take the call to {cid}: {}",
                tried.join("; ")
            ),
            &format!(
                "retry shortly; `GET {PROVIDERS_PATH}` on this gateway shows what it sees of each provider"
            ),
        )
    }
}

/// A body over the most [`collect`] reads.
#[derive(Debug, thiserror::Error)]
#[error("the body is over {0} bytes")]
struct TooLarge(usize);

/// Reads `body` whole, refusing more than `max` bytes ([`TooLarge`]).
async fn collect(mut body: Body, max: usize) -> Result<Bytes, crate::proxy::BoxError> {
    let mut bytes = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if bytes.len() + data.len() > max {
                return Err(Box::new(TooLarge(max)));
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes.freeze())
}

/// How a receipt failed the gateway's check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiptMismatch {
    /// Missing, or not signed by the payee, or naming another provider, payer, spec or price.
    Terms(&'static str),
    /// For another request digest than the gateway sent (a proxy may have rewritten the path).
    Digest,
}

/// Verifies a charged answer's receipt against what the gateway sent and was told: signed by the
/// provider's payee, for this spec, at the price and payer the answer names, and for this request.
fn check_receipt(
    headers: &http::HeaderMap,
    domain: &alloy::sol_types::Eip712Domain,
    payee: Address,
    cid: &Cid,
    request_digest: alloy::primitives::B256,
) -> Result<(), ReceiptMismatch> {
    use khachapuri_protocol::{http as wire, receipt};
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let signed = text(wire::RECEIPT_HEADER)
        .and_then(receipt::SignedReceipt::decode)
        .ok_or(ReceiptMismatch::Terms("missing or unreadable"))?;
    let spec = cid.to_string();
    let expected = receipt::Expected {
        provider: payee,
        spec: &spec,
        payer: text(PAYER_HEADER).and_then(|v| v.parse().ok()),
        price: text(wire::PRICE_HEADER)
            .and_then(|v| v.parse::<Usdc>().ok())
            .map(Usdc::to_u256),
        request_digest: None,
    };
    signed
        .verify(domain, &expected)
        .map_err(ReceiptMismatch::Terms)?;
    match signed.receipt.requestDigest == request_digest {
        true => Ok(()),
        false => Err(ReceiptMismatch::Digest),
    }
}

/// Adds the label of the provider that answered.
fn named(mut response: Response<Body>, label: &Label) -> Response<Body> {
    if let Ok(value) = HeaderValue::try_from(label.as_str()) {
        response.headers_mut().insert(PROVIDER_HEADER, value);
    }
    response
}

fn routing_off() -> Response<Body> {
    error_response(
        StatusCode::NOT_FOUND,
        "routing_off",
        "this gateway does not route calls that name no provider",
        "name the provider: {gateway}/{label}/{cid} (a gateway routes `/{cid}` when started with --ipfs)",
    )
}

fn provider_timeout(label: &Label, after: Duration) -> Response<Body> {
    error_response(
        StatusCode::GATEWAY_TIMEOUT,
        "provider_timeout",
        &format!("provider \"{label}\" did not answer within {after:?}"),
        "it may have run and charged the call, so it was not sent elsewhere; its receipt is lost: retry later",
    )
}

impl Router {
    /// How a routed call pays: an x402 payment (to one payee), a payer token (its signer recovered when
    /// the gateway reads terms), or neither (the owner). The provider checks all of it again.
    fn payment(&self, headers: &http::HeaderMap) -> Result<Payment, Box<Response<Body>>> {
        let x402 = headers.get(khachapuri_protocol::x402::PAYMENT_SIGNATURE_HEADER);
        let token = read_token(headers)?;
        match (x402, token) {
            (Some(_), Some(_)) => Err(Box::new(error_response(
                StatusCode::BAD_REQUEST,
                "two_payments",
                "the request brings both a payer token and an x402 payment",
                "send one of them",
            ))),
            (Some(value), None) => {
                let payload = value
                    .to_str()
                    .ok()
                    .and_then(|v| khachapuri_protocol::x402::PaymentPayload::decode(v).ok());
                match payload {
                    Some(p) => Ok(Payment::X402 {
                        pay_to: p.payload.authorization.to,
                    }),
                    None => Err(Box::new(error_response(
                        StatusCode::BAD_REQUEST,
                        "x402_payment_invalid",
                        "the PAYMENT-SIGNATURE header is not an x402 version 2 payment",
                        "sign the payment the 402's PAYMENT-REQUIRED asks for",
                    ))),
                }
            }
            (None, Some(token)) => {
                // The payer a token names picks providers only once its signature says it is theirs.
                // A caller sends one token many times: its signer is recovered once.
                let payer = match &self.config.chain {
                    Some(chain) => {
                        let text = token.encode();
                        let known = lock(&self.signers).get(&text).copied();
                        let signer = match known {
                            Some(signer) => signer,
                            None => {
                                let signer = token.recover(&chain.domain()).map_err(|e| {
                                    Box::new(error_response(
                                        StatusCode::UNAUTHORIZED,
                                        "bad_token_signature",
                                        &e.to_string(),
                                        "make a new token with `khachapuri token`",
                                    ))
                                })?;
                                bounded_insert(&mut lock(&self.signers), text, signer);
                                signer
                            }
                        };
                        Some(signer)
                    }
                    None => token.payer,
                };
                Ok(Payment::Token {
                    token: Box::new(token),
                    payer,
                })
            }
            (None, None) => Ok(Payment::Owner),
        }
    }
}

/// The request's payer token, decoded: a routed call picks providers by it (the provider checks it again).
fn read_token(headers: &http::HeaderMap) -> Result<Option<SignedPayerToken>, Box<Response<Body>>> {
    let malformed = |message: String| {
        Box::new(error_response(
            StatusCode::BAD_REQUEST,
            "malformed_token",
            &message,
            "send one payer token, in X-Khachapuri-Payer-Token (`khachapuri token --any-provider` makes one for routed calls)",
        ))
    };
    let value = match khachapuri_protocol::http::payer_token(headers) {
        Ok(Some(value)) => value,
        Ok(None) => return Ok(None),
        Err(e) => return Err(malformed(e.to_string())),
    };
    let text = value
        .to_str()
        .map_err(|_| malformed("the payer token is not text".into()))?;
    SignedPayerToken::decode(text)
        .map(Some)
        .map_err(|e| malformed(e.to_string()))
}

fn fetch_error(cid: &Cid, err: FetchError) -> Response<Body> {
    match err {
        FetchError::NotFound { .. } => error_response(
            StatusCode::NOT_FOUND,
            "spec_not_found",
            &format!("{cid} is on none of this gateway's IPFS sources"),
            "check the CID (`khachapuri deploy` prints it), or name a provider that has it: {gateway}/{label}/{cid}",
        ),
        FetchError::Block(e) => error_response(
            StatusCode::BAD_REQUEST,
            "malformed_cid",
            &e.to_string(),
            "call /{cid}[/path], with the spec's CID",
        ),
        FetchError::TooLarge { .. } => error_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            "spec_too_large",
            &format!("{cid} is larger than a spec may be"),
            "if this is a program's CID, call the spec's CID that `khachapuri deploy` printed",
        ),
        other => error_response(
            StatusCode::BAD_GATEWAY,
            "ipfs_unavailable",
            &format!("reading {cid}: {other}"),
            "retry later",
        ),
    }
}

fn no_candidate(cid: &Cid, none: NoCandidate) -> Response<Body> {
    match none {
        NoCandidate::NoRunner(why) => error_response(
            StatusCode::NOT_FOUND,
            "no_runner",
            &format!("no provider runs {cid}: {why}"),
            "deploy it to a registered provider (`khachapuri deploy --provider LABEL`)",
        ),
        NoCandidate::NoneAvailable(why) => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_provider_available",
            &format!("no provider can take {cid} now: {why}"),
            &format!(
                "retry shortly; `GET {PROVIDERS_PATH}` on this gateway shows what it sees of each provider"
            ),
        ),
        NoCandidate::NotReserved {
            payer,
            owner_pays,
            runners,
            unavailable,
        } => {
            let list: Vec<String> = runners.iter().map(|(l, p)| format!("{l} at {p}")).collect();
            let (label, price) = runners
                .iter()
                .min_by_key(|(_, p)| *p)
                .map(|(l, p)| (l.to_string(), p.to_string()))
                .unwrap_or_default();
            let price = price.trim_end_matches(" USDC");
            error_response(
                StatusCode::PAYMENT_REQUIRED,
                "not_approved",
                &format!(
                    "{payer} has no terms covering the price with any provider that can run {cid} now ({}){}; \
                     nothing was charged",
                    list.join(", "),
                    match unavailable.is_empty() {
                        true => String::new(),
                        false => format!("; not available now: {unavailable}"),
                    }
                ),
                &match owner_pays {
                    true => format!(
                        "the function's owner pays for calls without a payment of their own: pay yourself with a \
                         payer token (`khachapuri token --any-provider --spec {cid}`, sent as \
                         X-Khachapuri-Payer-Token), or the owner reserves with one of them: `khachapuri escrow \
                         reserve --provider {label} --price {price} --amount {price}`"
                    ),
                    false => format!(
                        "reserve with one of them: `khachapuri escrow reserve --provider {label} --price {price} \
                         --amount {price}`"
                    ),
                },
            )
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::directory::Server;

    fn known(label: &str, key: u8, price: u128, open_specs: bool) -> Known {
        let payee = Address::repeat_byte(key);
        Known {
            label: Label::new(label).unwrap(),
            route: Route {
                server: Server::Url(format!("http://{label}.test")),
                payee: Some(payee),
                key_id: Some([key; 32]),
                rsa_key: None,
            },
            offer: Ok(Offer {
                label: label.into(),
                payee,
                price: Usdc::from_units(price),
                chain_id: 31337,
                escrow: Address::repeat_byte(0xee),
                caps: khachapuri_spec::Caps {
                    memory_bytes: 1 << 30,
                    timeout_ms: 60_000,
                    output_bytes: 1 << 30,
                },
                max_body_bytes: 1 << 20,
                open_specs,
                key_proof: None,
            }),
            record: None,
            key_proven: true,
        }
    }

    fn cid() -> Cid {
        khachapuri_ipfs::parse_cid("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku")
            .unwrap()
    }

    fn labels(c: &[(Known, Usdc)]) -> Vec<&str> {
        c.iter().map(|(k, _)| k.label.as_str()).collect()
    }

    #[tokio::test]
    async fn sealed_specs_go_to_their_recipients_cheapest_first_and_never_by_an_unproven_key() {
        let router = Router::new(RoutingConfig::default());
        let sealed = SpecFacts::Sealed(vec![[1; 32], [2; 32]]);
        let live = |_: &Label| true;
        assert!(
            matches!(
                router
                    .candidates(&cid(), &sealed, &Payment::Owner, live)
                    .await,
                Err(NoCandidate::NoneAvailable(_))
            ),
            "no table read yet: retry, not 404"
        );
        router.set_providers(vec![
            known("alice", 1, 20, true),
            known("bob", 2, 10, true),
            known("carol", 3, 5, true),
        ]);
        let c = router
            .candidates(&cid(), &sealed, &Payment::Owner, live)
            .await
            .unwrap();
        assert_eq!(
            labels(&c),
            ["bob", "alice"],
            "recipients only, the cheapest first"
        );
        // mallory publishes bob's key, cheaper, and cannot prove it: bob keeps his calls, mallory gets none.
        let mut mallory = known("mallory", 2, 1, true);
        mallory.key_proven = false;
        router.set_providers(vec![
            known("alice", 1, 20, true),
            known("bob", 2, 10, true),
            mallory,
        ]);
        let c = router
            .candidates(&cid(), &sealed, &Payment::Owner, live)
            .await
            .unwrap();
        assert_eq!(labels(&c), ["bob", "alice"]);
        // An x402 payment goes to the provider it pays, and nowhere else.
        let to_alice = Payment::X402 {
            pay_to: Address::repeat_byte(1),
        };
        let c = router
            .candidates(&cid(), &sealed, &to_alice, live)
            .await
            .unwrap();
        assert_eq!(labels(&c), ["alice"]);
        let to_carol = Payment::X402 {
            pay_to: Address::repeat_byte(3),
        };
        assert!(matches!(
            router.candidates(&cid(), &sealed, &to_carol, live).await,
            Err(NoCandidate::NoRunner(_))
        ));
    }

    #[tokio::test]
    async fn refusals_of_the_spec_and_dead_providers_are_tried_last_or_not_at_all() {
        let router = Router::new(RoutingConfig::default());
        router.set_providers(vec![known("alice", 1, 10, true), known("bob", 2, 10, true)]);
        let sealed = SpecFacts::Sealed(vec![[1; 32], [2; 32]]);
        let live = |_: &Label| true;
        let alice = Label::new("alice").unwrap();
        router.unreachable(&alice);
        for _ in 0..20 {
            let c = router
                .candidates(&cid(), &sealed, &Payment::Owner, live)
                .await
                .unwrap();
            assert_eq!(
                labels(&c),
                ["bob", "alice"],
                "a provider that was unreachable goes last"
            );
        }
        router.refused(
            &cid(),
            &Label::new("bob").unwrap(),
            "undecryptable_spec",
            Duration::ZERO,
        );
        let c = router
            .candidates(&cid(), &sealed, &Payment::Owner, live)
            .await
            .unwrap();
        assert_eq!(
            labels(&c),
            ["alice"],
            "bob refused this spec: left out for a while"
        );
        // A refusal that is the caller's, not bob's, is not provider-specific and not remembered.
        assert!(!is_provider_specific("bad_spec_signature"));
        assert!(!is_provider_specific("spec_revoked"));
        assert!(is_provider_specific("insufficient_reserve"));
    }

    #[test]
    fn spec_bytes_read_as_recipients_or_an_open_spec() {
        let key = khachapuri_spec::ProviderKey::generate().unwrap();
        let sealed = khachapuri_spec::seal(key.public_key_der(), b"{}").unwrap();
        match read_facts(&sealed).unwrap() {
            SpecFacts::Sealed(ids) => assert_eq!(ids, [*key.id()]),
            other => panic!("{other:?}"),
        }
        assert!(read_facts(b"not a spec").is_err());
        assert!(read_facts(b"KPSE\x09").is_err(), "a broken envelope");
    }
}
