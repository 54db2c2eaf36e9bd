/**
 * The Khachapuri web console: a static page on the SDK (`sdk/`), served by `khachapuri dev` and by the
 * gateway at `/_console/`, which also serves `config.json` (the chain, the contracts, where to upload).
 * Every write goes through the injected EIP-1193 wallet (`window.ethereum`); so does every read, once the
 * wallet is on the console's chain.
 */
import {
  BaseError,
  UserRejectedRequestError,
  createPublicClient,
  createWalletClient,
  custom,
  defineChain,
  getAddress,
  isAddress,
  type Address,
  type EIP1193Provider,
  type PublicClient,
} from "viem";

import {
  ANY_PROVIDER,
  Escrow,
  EscrowError,
  PROVIDER_HEADER,
  call,
  deploy,
  escrowDomain,
  formatUsdc,
  functionUrl,
  parseDeployment,
  parseUsdc,
  readOffer,
  resolveProvider,
  specOf,
  verifyCall,
  type Deployment,
  type ProviderRecord,
  type Wallet,
} from "../../sdk/src/index.js";

/** What the gateway serves at `/_console/config.json`. */
interface ConsoleConfig {
  chainId: number;
  deployment: Deployment;
  /** A public RPC a wallet may add for this chain. */
  rpcUrl: string | null;
  /** The IPFS node's Kubo RPC API that deploys upload to. */
  ipfsApi: string | null;
  /** The gateway functions are called through (null: this page's origin). */
  gateway: string | null;
  /** Provider labels to suggest. */
  providers: string[];
}

declare global {
  interface Window {
    ethereum?: EIP1193Provider;
  }
}

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;

/** The connected session: the wallet's account on the console's chain. */
interface Session {
  account: Address;
  client: PublicClient;
  wallet: Wallet;
  escrow: Escrow;
  /** The providers found in the escrow's events so far, and the block to scan from next. */
  providers: Set<Address>;
  scannedTo: bigint;
}

let config: ConsoleConfig;
let session: Session | undefined;
const records = new Map<string, ProviderRecord>();

// -------------------------------------------------------------------------------------------------
// Messages
// -------------------------------------------------------------------------------------------------

/** Shows `text` above everything (an error in red). */
function notice(text: string, error = false) {
  const el = $("notice");
  el.textContent = text;
  el.className = error ? "error" : "";
  el.hidden = false;
}

/** An error as a sentence a person reads: the escrow's, the wallet's, or the message beneath. */
const DECLINED = "You declined in your wallet: nothing was signed or sent.";

function describe(e: unknown): string {
  if (e instanceof EscrowError) return e.errorName === "UserRejected" ? DECLINED : e.message;
  if (e instanceof BaseError) {
    if (e.walk((x) => x instanceof UserRejectedRequestError)) {
      return DECLINED;
    }
    return e.shortMessage;
  }
  if ((e as { code?: number }).code === 4001) return DECLINED;
  return e instanceof Error ? e.message : String(e);
}

/** Runs a form's action with its button disabled; its outcome goes to the notice. */
function onSubmit(id: string, action: (data: FormData) => Promise<string | void>) {
  const form = $<HTMLFormElement>(id);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button")!;
    button.disabled = true;
    try {
      if (!session) throw new Error("Connect a wallet first.");
      const done = await action(new FormData(form));
      if (done) notice(done);
    } catch (e) {
      notice(describe(e), true);
    }
    // The figures after it (their own failure is not the action's); the button comes back once they show.
    await refresh().catch((e) => notice(`Done, but the figures could not be read again: ${describe(e)}`, true));
    button.disabled = false;
  });
}

const amount = (data: FormData, field: string) => parseUsdc(String(data.get(field) ?? ""));

// -------------------------------------------------------------------------------------------------
// Wallet
// -------------------------------------------------------------------------------------------------

const hexChain = (id: number) => `0x${id.toString(16)}`;

async function connect() {
  const ethereum = window.ethereum;
  if (!ethereum) {
    notice("No wallet in this browser: install one (such as MetaMask), then reload this page.", true);
    return;
  }
  try {
    const accounts = (await ethereum.request({ method: "eth_requestAccounts" })) as Address[];
    await useAccount(accounts[0]);
  } catch (e) {
    notice(describe(e), true);
  }
}

/** Starts a session for `account` when the wallet is on the console's chain; says what to do when not. */
async function useAccount(account: Address | undefined) {
  const ethereum = window.ethereum!;
  session = undefined;
  $("app").hidden = true;
  // What the previous account did is not this one's.
  for (const id of ["call-result", "deploy-result"]) $(id).hidden = true;
  $("deploy-steps").replaceChildren();
  if (!account) {
    $("account").textContent = "";
    $("connect").hidden = false;
    notice("Your wallet shares no account with this page: connect again.");
    return;
  }
  const chainId = Number(await ethereum.request({ method: "eth_chainId" }));
  $("account").textContent = getAddress(account);
  $("connect").hidden = true;
  if (chainId !== config.chainId) {
    $("switch-chain").hidden = false;
    notice(`Your wallet is on chain ${chainId}; this console works on chain ${config.chainId}. Switch network to go on.`, true);
    return;
  }
  $("switch-chain").hidden = true;
  const client = createPublicClient({ transport: custom(ethereum) }) as PublicClient;
  // The chain tells viem to check, before each transaction, that the wallet is still on it.
  const chain = defineChain({
    id: config.chainId,
    name: `Khachapuri ${config.chainId}`,
    nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 },
    rpcUrls: { default: { http: config.rpcUrl ? [config.rpcUrl] : [] } },
  });
  const wallet = createWalletClient({ account: getAddress(account), chain, transport: custom(ethereum) }) as Wallet;
  session = {
    account: getAddress(account),
    client,
    wallet,
    escrow: new Escrow(config.deployment, client, wallet),
    providers: new Set(),
    scannedTo: BigInt(config.deployment.deploymentBlock),
  };
  $("app").hidden = false;
  $("notice").hidden = true;
  await refresh();
}

async function switchChain() {
  const ethereum = window.ethereum!;
  const chainId = hexChain(config.chainId);
  try {
    await ethereum.request({ method: "wallet_switchEthereumChain", params: [{ chainId }] });
  } catch (e) {
    // 4902: the wallet does not know the chain; add it when there is a public RPC to give.
    if ((e as { code?: number }).code !== 4902 || !config.rpcUrl) {
      notice(describe(e), true);
      return;
    }
    await ethereum.request({
      method: "wallet_addEthereumChain",
      params: [{ chainId, chainName: `Khachapuri ${config.chainId}`, rpcUrls: [config.rpcUrl], nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 } }],
    });
  }
  const accounts = (await ethereum.request({ method: "eth_accounts" })) as Address[];
  await useAccount(accounts[0]);
}

// -------------------------------------------------------------------------------------------------
// Providers: a label or an address
// -------------------------------------------------------------------------------------------------

async function record(label: string): Promise<ProviderRecord> {
  const known = records.get(label);
  if (known) return known;
  const found = await resolveProvider(session!.client, config.deployment, label);
  records.set(label, found);
  return found;
}

/** A provider's payee from what was typed: an address as is, a label through the Registry. */
async function payeeOf(text: string): Promise<Address> {
  const t = text.trim();
  if (isAddress(t)) return getAddress(t);
  return (await record(t)).payee;
}

/** The label of a payee, when it is one this page has resolved. */
function labelOf(payee: Address): string | undefined {
  for (const [label, r] of records) if (r.payee === payee) return label;
  return undefined;
}

// -------------------------------------------------------------------------------------------------
// Figures
// -------------------------------------------------------------------------------------------------

function when(at: bigint): string {
  const seconds = Number(at) - Math.floor(Date.now() / 1000);
  const local = new Date(Number(at) * 1000).toLocaleString();
  if (seconds <= 0) return `since ${local}`;
  const span = seconds < 120 ? `${seconds} s` : seconds < 7200 ? `${Math.round(seconds / 60)} min` : `${Math.round(seconds / 3600)} h`;
  return `at ${local} (in ${span})`;
}

/** Reads the figures again every few seconds while a wallet is connected (charges land in batches). */
setInterval(() => {
  if (session && !reading) void refresh().catch(() => undefined);
}, 3_000);
let reading = false;
/** The newest read: an older one that finishes later (read before a transaction landed) shows nothing. */
let newest = 0;

async function refresh() {
  if (!session) return;
  const mine = ++newest;
  reading = true;
  try {
    await show(session, mine);
  } finally {
    if (mine === newest) reading = false;
  }
}

async function show(current: Session, mine: number) {
  const { account, escrow } = current;
  for (const label of config.providers) await record(label).catch(() => undefined);
  const known = [...records.values()].map((r) => r.payee);
  // The escrow's events are scanned once, then only from the block after the last scan.
  const latest = await current.client.getBlockNumber();
  if (latest >= current.scannedTo) {
    for (const p of await escrow.providersOf(account, current.scannedTo, latest)) current.providers.add(p);
    current.scannedTo = latest + 1n;
  }
  const providers = [...new Set([...current.providers, ...known])];
  const rows = await Promise.all(providers.map(async (p) => ({ provider: p, b: await escrow.balances(account, p) })));
  // The free balance and the wallet's USDC come with every provider's row (and with no provider, alone).
  const { free, wallet } = rows[0]?.b ?? (await escrow.balances(account, account));
  const earnings = await escrow.earnings(account);
  // The account or the chain changed while reading, or a newer read began: that one shows.
  if (session !== current || mine !== newest) return;
  $("wallet-usdc").textContent = formatUsdc(wallet);
  $("free-balance").textContent = formatUsdc(free);
  const body = $("reserves").querySelector("tbody")!;
  body.replaceChildren(
    ...rows
      .filter(({ b }) => b.terms.price > 0n || b.terms.reserve > 0n || b.terms.credits > 0n || b.terms.pendingRelease > 0n)
      .map(({ provider, b }) => {
        const t = b.terms;
        const pending: string[] = [];
        if (t.priceAt > 0n) pending.push(`price cut to ${formatUsdc(t.pendingPrice)} ${when(t.priceAt)}`);
        if (t.pendingRelease > 0n) pending.push(`release of ${formatUsdc(t.pendingRelease)} ${when(t.releaseAt)}`);
        const row = document.createElement("tr");
        row.dataset.provider = provider;
        const label = labelOf(provider);
        const cells = {
          provider: label ? `${label} (${provider.slice(0, 8)}…)` : provider,
          price: formatUsdc(t.price),
          reserve: formatUsdc(t.reserve),
          credits: formatUsdc(t.credits),
          pending: pending.join("; ") || "none",
        };
        for (const [field, text] of Object.entries(cells)) {
          const td = document.createElement("td");
          td.dataset.field = field;
          td.textContent = text;
          row.append(td);
        }
        const td = document.createElement("td");
        if (pending.length) {
          const cancel = document.createElement("button");
          cancel.textContent = "Cancel pending";
          cancel.addEventListener("click", () =>
            guarded(cancel, async () => {
              await escrow.cancelPending(provider);
              return `The pending changes with ${label ?? provider} are cancelled.`;
            }),
          );
          td.append(cancel);
        }
        row.append(td);
        return row;
      }),
  );
  $("earnings").textContent = formatUsdc(earnings);
}

async function guarded(button: HTMLButtonElement, action: () => Promise<string>) {
  button.disabled = true;
  try {
    notice(await action());
  } catch (e) {
    notice(describe(e), true);
  }
  await refresh().catch(() => undefined);
  button.disabled = false;
}

// -------------------------------------------------------------------------------------------------
// Actions
// -------------------------------------------------------------------------------------------------

onSubmit("deposit-form", async (data) => {
  const value = amount(data, "amount");
  await session!.escrow.depositWithPermit(value);
  return `Deposited ${formatUsdc(value)} into the escrow.`;
});

onSubmit("reserve-form", async (data) => {
  const provider = String(data.get("provider"));
  const [payee, price, value] = [await payeeOf(provider), amount(data, "price"), amount(data, "amount")];
  const before = (await session!.escrow.balances(session!.account, payee)).terms.price;
  await session!.escrow.reserve(payee, price, value);
  const more = value > 0n ? `${formatUsdc(value)} more reserved for ${provider}` : `Terms with ${provider} set`;
  if (price < before) {
    return `${more}; the price cut to ${formatUsdc(price)} per request applies after the escrow's delay (${formatUsdc(before)} until then).`;
  }
  return `${more}, at up to ${formatUsdc(price)} per request.`;
});

onSubmit("release-form", async (data) => {
  const provider = String(data.get("provider"));
  const value = amount(data, "amount");
  await session!.escrow.release(await payeeOf(provider), value);
  return `The release of ${formatUsdc(value)} from ${provider} is scheduled: it returns to your free balance after the escrow's delay.`;
});

onSubmit("withdraw-form", async (data) => {
  const value = amount(data, "amount");
  await session!.escrow.withdraw(session!.account, value);
  return `Withdrew ${formatUsdc(value)} to your wallet.`;
});

onSubmit("earnings-form", async (data) => {
  const value = amount(data, "amount");
  await session!.escrow.withdrawEarnings(session!.account, value);
  return `Withdrew ${formatUsdc(value)} of earnings to your wallet.`;
});

onSubmit("credits-form", async (data) => {
  const user = String(data.get("user")).trim();
  if (!isAddress(user)) throw new Error(`\`${user}\` is not an address (0x and 40 hex digits).`);
  const value = amount(data, "amount");
  await session!.escrow.grantCredits(getAddress(user), value);
  return `Granted ${formatUsdc(value)} of trial credits to ${user}, spendable only with you.`;
});

onSubmit("call-form", async (data) => {
  const { account, wallet } = session!;
  const url = new URL(String(data.get("url")).trim());
  // A token is signed only for this console's gateway: one sent elsewhere could be replayed there.
  const gateway = new URL(config.gateway ?? location.origin);
  if (url.origin !== gateway.origin) {
    throw new Error(`${url.origin} is not this console's gateway (${gateway.origin}): call it with the URL deploy printed for this network.`);
  }
  // Path mode: {gateway}/{label}/{cid}, the label's payee named by the token and signing the receipt; or
  // {gateway}/{cid}, routed: the token is for any provider (this spec only), and the receipt is checked
  // against the payee of the provider the gateway names in its answer.
  const segments = url.pathname.split("/");
  const at = segments.indexOf(specOf(url)); // a URL without a spec CID is refused before anything is signed
  const named = at > 1 ? segments[at - 1] : undefined;
  const prefix = segments.slice(0, at).join("/");
  const domain = escrowDomain(config.chainId, config.deployment.escrow);
  const payee = named ? (await record(named)).payee : ANY_PROVIDER;
  const result = await call(url, {
    body: String(data.get("body") ?? ""),
    payer: { account: wallet, domain, provider: payee, maxPrice: amount(data, "maxPrice") },
  });
  const label = named ?? result.headers.get(PROVIDER_HEADER) ?? undefined;
  const provider = label ? await record(label) : undefined;
  $("call-result").hidden = false;
  $("call-status").textContent = `${result.status}${result.failure ? `: ${result.failure.message}` : ""}`;
  $("call-price").textContent = result.price === undefined ? "not charged" : formatUsdc(result.price);
  $("call-payer").textContent = result.payer ?? "–";
  $("call-answer").textContent = new TextDecoder().decode(result.body);
  const receipt = $("call-receipt");
  if (!result.receipt) {
    receipt.textContent = result.receiptError ?? "none (the call was not charged)";
    receipt.className = "";
  } else {
    try {
      if (!provider) throw new Error("the answer names no provider to check its receipt against");
      await verifyCall(result, domain, provider.payee, prefix);
      receipt.textContent = `verified: signed by ${label}'s payee ${provider.payee}`;
      receipt.className = "ok";
    } catch (e) {
      receipt.textContent = `NOT verified: ${describe(e)}`;
      receipt.className = "bad";
    }
  }
  if (result.failure) throw new Error(`${result.failure.message}${result.failure.hint ? ` (${result.failure.hint})` : ""}`);
  if (result.payer && result.payer !== account) return `Called; ${result.payer} paid.`;
  return `Called; you paid ${result.price === undefined ? "nothing" : formatUsdc(result.price)}.`;
});

onSubmit("deploy-form", async (data) => {
  if (!config.ipfsApi) throw new Error("This console has no IPFS node to upload to: deploy with `khachapuri deploy`.");
  const file = data.get("module") as File | null;
  if (!file || file.size === 0) throw new Error("Pick a .wasm module first.");
  const label = String(data.get("provider"));
  // As the CLI's --env-file reads it: KEY=value lines, # comments and blank lines skipped.
  const env: Record<string, string> = {};
  for (const line of String(data.get("env") ?? "").split(/\r?\n/)) {
    if (!line.trim() || line.trimStart().startsWith("#")) continue;
    const at = line.indexOf("=");
    if (at <= 0) throw new Error(`\`${line}\` is not KEY=value.`);
    env[line.slice(0, at)] = line.slice(at + 1);
  }
  const cap = String(data.get("cap") ?? "").trim();
  const steps = $("deploy-steps");
  steps.replaceChildren();
  $("deploy-result").hidden = true;
  const deployed = await deploy({
    ipfsApi: config.ipfsApi,
    owner: session!.wallet,
    deployment: config.deployment,
    provider: await record(label),
    module: new Uint8Array(await file.arrayBuffer()),
    entry: file.name,
    env,
    maxPrice: amount(data, "maxPrice"),
    limits: { memoryBytes: Number(data.get("memory")) * 2 ** 20, timeoutMs: Number(data.get("timeout")), outputBytes: 4 * 2 ** 20 },
    offer: await readOffer(`${config.gateway ?? location.origin}/${label}`),
    spendCap: cap ? { amount: parseUsdc(cap), periodSeconds: 86_400 } : undefined,
    publicProgram: data.get("publicProgram") === "on",
    onStep: (text) => {
      const li = document.createElement("li");
      li.textContent = text;
      steps.append(li);
    },
  });
  const url = functionUrl(config.gateway ?? location.origin, label, deployed.spec);
  const link = $<HTMLAnchorElement>("deploy-url");
  link.href = url;
  link.textContent = url;
  $("deploy-curl").textContent = `curl -d hi ${url}`;
  $("deploy-result").hidden = false;
  $<HTMLInputElement>("call-url").value = url;
  return `Deployed ${file.name} for ${label}: its URL answers now.`;
});

// -------------------------------------------------------------------------------------------------
// Start
// -------------------------------------------------------------------------------------------------

async function start() {
  try {
    const response = await fetch("config.json", { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    config = (await response.json()) as ConsoleConfig;
    config.deployment = parseDeployment(config.deployment, "config.json's `deployment`");
  } catch (e) {
    notice(`Cannot read this console's config.json (${describe(e)}): is the gateway running with --console?`, true);
    return;
  }
  $("network").textContent = `chain ${config.chainId} · escrow ${config.deployment.escrow}`;
  const labels = $("provider-labels");
  const select = $<HTMLSelectElement>("deploy-provider");
  for (const label of config.providers) {
    labels.append(new Option(label));
    select.append(new Option(label, label));
  }
  $("connect").addEventListener("click", connect);
  $("switch-chain").addEventListener("click", () => void switchChain().catch((e) => notice(describe(e), true)));
  const ethereum = window.ethereum;
  if (!ethereum) {
    notice("No wallet in this browser: install one (such as MetaMask), then reload this page.", true);
    return;
  }
  ethereum.on("accountsChanged", (accounts) => void useAccount((accounts as Address[])[0]).catch((e) => notice(describe(e), true)));
  ethereum.on("chainChanged", () => {
    records.clear();
    void ethereum
      .request({ method: "eth_accounts" })
      .then((accounts) => useAccount((accounts as Address[])[0]))
      .catch((e) => notice(describe(e), true));
  });
  // A wallet that already trusts this page connects without a prompt.
  const accounts = (await ethereum.request({ method: "eth_accounts" })) as Address[];
  if (accounts[0]) await useAccount(accounts[0]);
  else notice("Connect a wallet to begin.");
}

void start();
