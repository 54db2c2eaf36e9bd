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
use khachapuri_protocol::{SignedPayerToken, Usdc};
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
    /// Reads a payer's terms with a provider; `None`: no payer filter (the providers refuse what they must).
    pub terms: Option<Arc<dyn PayerTerms>>,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            ipfs: Vec::new(),
            max_tries: 3,
            max_body_bytes: 1 << 20,
            refresh: Duration::from_secs(5),
            offer_timeout: Duration::from_secs(2),
            terms: None,
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
            .field("terms", &self.terms.is_some())
            .finish()
    }
}

/// A payer's terms with a provider, as the escrow holds them.
pub trait PayerTerms: Send + Sync + 'static {
    /// Whether one request at `price` by provider `payee` fits `payer`'s terms with it.
    fn covers(
        &self,
        payer: Address,
        payee: Address,
        price: Usdc,
    ) -> BoxFuture<'_, Result<bool, String>>;
}

#[cfg(feature = "chain")]
impl PayerTerms for khachapuri_chain::Chain {
    fn covers(
        &self,
        payer: Address,
        payee: Address,
        price: Usdc,
    ) -> BoxFuture<'_, Result<bool, String>> {
        Box::pin(async move {
            self.terms(payer, payee)
                .await
                .map(|terms| terms.covers(price))
                .map_err(|e| e.to_string())
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

/// A provider the table knows, as of the last refresh.
#[derive(Debug, Clone)]
pub struct Known {
    /// Its label.
    pub label: Label,
    /// Its route (server, payee, key id).
    pub route: Route,
    /// Its offer (`GET /_provider`), or why it could not be read.
    pub offer: Result<Offer, String>,
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
    /// Skipped until then after failing to connect (backing off, 1 s doubling to 30 s).
    #[serde(skip)]
    down_until: Option<Instant>,
    #[serde(skip)]
    backoff: Duration,
}

impl Health {
    /// The share of calls it was reachable for, smoothed so that a newcomer starts near 1.
    pub fn availability(&self) -> f64 {
        (self.answered as f64 + 1.0) / ((self.answered + self.unreachable) as f64 + 1.0)
    }

    fn weight(&self) -> f64 {
        // Unknown latency counts as 1 ms: a newcomer gets a fair share and is measured.
        let latency = self.latency_ms.unwrap_or(1.0).max(0.05);
        self.availability().powi(2) / latency
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
    health: Mutex<HashMap<Label, Health>>,
    specs: Mutex<HashMap<Cid, Arc<Result<SpecFacts, String>>>>,
    /// Refusals of a spec by a provider, remembered until the instant.
    refusals: Mutex<HashMap<(Cid, Label), Instant>>,
    /// The payer a sealed spec's calls without a token were charged to (its owner): learned from answers.
    owners: Mutex<HashMap<Cid, Address>>,
    /// Whether (payer, payee, price) was covered, and when that was read.
    terms: Mutex<HashMap<TermsKey, (bool, Instant)>>,
}

/// A payer, a provider's payee, a price.
type TermsKey = (Address, Address, Usdc);

/// Most specs (and learned owners, remembered refusals) kept; past it the map starts again.
const MAX_CACHED: usize = 4096;
/// How long a read of a payer's terms is trusted.
const TERMS_TTL: Duration = Duration::from_secs(2);

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
            health: Mutex::default(),
            specs: Mutex::default(),
            refusals: Mutex::default(),
            owners: Mutex::default(),
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
        let bytes = self
            .fetcher
            .get(cid, khachapuri_spec::MAX_SPEC_BYTES)
            .await?;
        let facts = Arc::new(read_facts(&bytes));
        bounded_insert(&mut lock(&self.specs), *cid, facts.clone());
        Ok(facts)
    }

    /// The payer of a call to `cid` carrying `token`: the one the token names, else the owner (an open
    /// spec's, or a sealed spec's as its earlier answers showed). `None`: not known yet.
    pub fn payer(
        &self,
        cid: &Cid,
        facts: &SpecFacts,
        token: Option<&SignedPayerToken>,
    ) -> Option<Address> {
        if let Some(token) = token {
            return token.payer;
        }
        match facts {
            SpecFacts::Open(spec) => Some(spec.owner),
            SpecFacts::Sealed(_) => lock(&self.owners).get(cid).copied(),
        }
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
        token: Option<&SignedPayerToken>,
        live: impl Fn(&Label) -> bool,
    ) -> Result<Vec<(Known, Usdc)>, NoCandidate> {
        let table = self.providers();
        let now = Instant::now();
        // Who runs this spec at all.
        let runners: Vec<&Known> = table
            .iter()
            .filter(|k| match facts {
                SpecFacts::Sealed(recipients) => {
                    k.route.key_id.is_some_and(|id| recipients.contains(&id))
                }
                // An operator who refuses open specs refuses them whatever they name; an unreadable offer
                // is told apart below.
                SpecFacts::Open(spec) => {
                    (spec.provider.is_none() || spec.is_for(k.label.as_str()))
                        && k.offer.as_ref().map_or(true, |o| o.open_specs)
                }
            })
            .filter(|k| match token.map(|t| t.token.provider) {
                Some(named) if named != khachapuri_protocol::eip712::ANY_PROVIDER => {
                    k.route.payee == Some(named)
                }
                _ => true,
            })
            .collect();
        if runners.is_empty() {
            return Err(NoCandidate::NoRunner(match facts {
                SpecFacts::Sealed(r) => format!(
                    "it is sealed to {} key(s), and no registered provider has one of them",
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
        let payer = self.payer(cid, facts, token);
        if let (Some(payer), Some(_)) = (payer, &self.config.terms) {
            let mut covered = Vec::with_capacity(able.len());
            for (k, price) in &able {
                let Some(payee) = k.route.payee else { continue };
                // A read that fails leaves the provider in: it checks the terms itself, and fails closed.
                if self.covers(payer, payee, *price).await.unwrap_or(true) {
                    covered.push((k.clone(), *price));
                }
            }
            if covered.is_empty() {
                return Err(NoCandidate::NotReserved {
                    payer,
                    runners: able.into_iter().map(|(k, p)| (k.label, p)).collect(),
                    unavailable: why_not.join("; "),
                });
            }
            able = covered;
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
        let terms = self.config.terms.as_ref().ok_or("no terms source")?;
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
                // Efraimidis–Spirakis: u^(1/w) sorted high to low draws by weight without replacement.
                let u: f64 = rand::random::<f64>().max(f64::MIN_POSITIVE);
                (k.label.clone(), (h.is_down(now), u.powf(1.0 / h.weight())))
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
        let reads = labels.iter().map(|label| async move {
            let route = self.directory.lookup(label).await.ok().flatten()?;
            let offer = self.read_offer(label, &route).await;
            Some(Known {
                label: label.clone(),
                route,
                offer,
            })
        });
        let table: Vec<Known> = futures::future::join_all(reads)
            .await
            .into_iter()
            .flatten()
            .collect();
        router.retain(&labels.into_iter().collect());
        router.set_providers(table);
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
        let response = tokio::time::timeout(
            router.config.offer_timeout,
            self.forward(label, route, "/_provider".into(), request),
        )
        .await
        .map_err(|_| "its offer did not arrive in time".to_owned())?
        .map_err(|e| e.reason())?;
        if response.status() != StatusCode::OK {
            return Err(format!("its offer answered {}", response.status()));
        }
        let body = collect(boxed(response.into_body()), MAX_OFFER_BYTES)
            .await
            .map_err(|e| format!("reading its offer: {e}"))?;
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
                    "offer": k.offer.as_ref().ok(),
                    "offerError": k.offer.as_ref().err(),
                    "price": k.offer.as_ref().ok().map(|o| o.price.to_string()),
                    "observed": router.health(&k.label),
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
        let token = match read_token(req.headers()) {
            Ok(token) => token,
            Err(response) => return *response,
        };
        let live = self.tunnels.labels();
        let candidates = match router
            .candidates(&cid, facts, token.as_ref(), |l| live.contains(l))
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
                Err(_) => {
                    return named(
                        provider_timeout(&label, self.config.response_timeout),
                        &label,
                    );
                }
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
                let answer = Response::from_parts(head, full(bytes));
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
            if token.is_none()
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
                &format!(
                    "reserve with one of them: `khachapuri escrow reserve --provider {label} --price {price} --amount {price}`"
                ),
            )
        }
    }
}
