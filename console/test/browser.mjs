// The web console in headless Chromium (Debian's chromium-headless-shell, driven by playwright-core) with
// an injected wallet backed by anvil, against a running `khachapuri dev`: connect (on the wrong chain
// first), deposit with a permit, reserve for `dev`, a paid call whose receipt the page verifies, a
// signature the user declines, a withdrawal, a deploy from the browser and a paid call to it, then the provider's view (its
// earnings withdrawn, trial credits granted). Run by agents/khachapuri-cli/tests/console.rs:
//
//   CONSOLE_URL=... DEV_JSON=.khachapuri/dev.json MODULE=hello.wasm SCREENSHOTS=target/console node browser.mjs
//
// Prints one JSON line of what it saw; a step that does not happen fails with the page's notice.
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

import { chromium } from "playwright-core";
import { createWalletClient, http, parseAbi } from "viem";

import { installWallet } from "./wallet.mjs";

const { CONSOLE_URL, DEV_JSON, MODULE, SCREENSHOTS } = process.env;
const dev = JSON.parse(readFileSync(DEV_JSON, "utf8"));
const provider = dev.accounts.find((a) => a.label === "provider").address;
// anvil's account 5: not used by `khachapuri dev`, so it starts with no USDC and nothing in the escrow.
const USER = "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc";
const hello = dev.functions.find((f) => f.name === "hello").url;
// Sealed to both dev providers, and named by neither: the gateway routes it.
const routed = dev.functions.find((f) => f.name === "hello-any-provider").url;

// The user's USDC, minted by anvil's account 0 (TestUSDC's mint is open on a local network).
const minter = createWalletClient({ account: "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266", transport: http(dev.rpcUrl) });
await minter.writeContract({
  address: dev.contracts.usdc,
  abi: parseAbi(["function mint(address to, uint256 amount)"]),
  functionName: "mint",
  args: [USER, 20_000_000n],
  chain: null,
});

// Debian's headless shell, found on the PATH (make test installs it); CHROMIUM names another.
const executablePath =
  process.env.CHROMIUM ??
  process.env.PATH.split(":")
    .map((dir) => join(dir, "chromium-headless-shell"))
    .find(existsSync);
if (!executablePath) {
  console.error("chromium-headless-shell is not installed: run `make test` (it installs it), or set CHROMIUM");
  process.exit(1);
}
mkdirSync(SCREENSHOTS, { recursive: true });
const browser = await chromium.launch({
  executablePath,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
});
const seen = {};
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 1500 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  // The wallet starts on Ethereum mainnet: the console must ask for its own chain.
  const wallet = await installWallet(page, { rpc: dev.rpcUrl, account: USER, chainId: dev.chainId });
  wallet.state.chainId = 1;
  await page.goto(CONSOLE_URL);

  const notice = () => page.locator("#notice").textContent();
  const text = (id) => page.locator(id).textContent();
  /** Waits until `selector` shows `value` (the page reads its figures again after each action). */
  const shows = async (selector, value) => {
    try {
      await page.waitForFunction(([s, v]) => document.querySelector(s)?.textContent === v, [selector, value], { timeout: 15_000 });
    } catch {
      assert.equal(await page.locator(selector).textContent(), value, `${selector} never showed ${value}`);
    }
  };
  const cell = (field) => `#reserves tr[data-provider="${provider}"] td[data-field="${field}"]`;
  /** Submits a form and waits until its button is enabled again; returns the notice. */
  const submit = async (form, fields = {}) => {
    for (const [name, value] of Object.entries(fields)) await page.fill(`${form} [name=${name}]`, value);
    await page.click(`${form} button`);
    await page.waitForFunction((f) => !document.querySelector(`${f} button`).disabled, form);
    return notice();
  };

  await page.waitForSelector("#connect");
  assert.match(await notice(), /Connect a wallet/);
  await page.click("#connect");
  await page.waitForSelector("#switch-chain", { state: "visible" });
  seen.wrongChain = await notice();
  assert.match(seen.wrongChain, new RegExp(`on chain 1; this console works on chain ${dev.chainId}`));
  await page.click("#switch-chain");
  await page.waitForSelector("#app", { state: "visible" });
  await page.waitForFunction(() => document.querySelector("#free-balance").textContent.includes("USDC"));
  await shows("#wallet-usdc", "20.00 USDC");
  await shows("#free-balance", "0.00 USDC");

  seen.deposit = await submit("#deposit-form", { amount: "10" });
  assert.equal(seen.deposit, "Deposited 10.00 USDC into the escrow.");
  await shows("#free-balance", "10.00 USDC");
  await shows("#wallet-usdc", "10.00 USDC");

  seen.reserve = await submit("#reserve-form", { provider: "dev", price: "0.05", amount: "5" });
  assert.match(seen.reserve, /5\.00 USDC more reserved for dev, at up to 0\.05 USDC per request/);
  await shows("#free-balance", "5.00 USDC");
  await shows(cell("reserve"), "5.00 USDC");

  seen.call = await submit("#call-form", { url: hello, body: "browser", maxPrice: "0.05" });
  assert.equal(seen.call, "Called; you paid 0.01 USDC.");
  assert.equal(await text("#call-status"), "200");
  assert.equal(await text("#call-answer"), "Hello from Khachapuri, browser!\n");
  assert.equal(await text("#call-payer"), USER);
  seen.receipt = await text("#call-receipt");
  assert.match(seen.receipt, new RegExp(`^verified: signed by dev's payee ${provider}$`));
  seen.screenshot = join(SCREENSHOTS, "paid-call.png");
  await page.screenshot({ path: seen.screenshot, fullPage: true });

  // A routed call: a token for any provider (this spec only); the wallet has a reserve with dev alone, so
  // the gateway sends it to dev, and the receipt is checked against the provider the answer names.
  seen.routed = await submit("#call-form", { url: routed, body: "anyone", maxPrice: "0.05" });
  assert.equal(seen.routed, "Called; you paid 0.01 USDC.");
  assert.equal(await text("#call-answer"), "Hello from Khachapuri, anyone!\n");
  assert.match(await text("#call-receipt"), new RegExp(`^verified: signed by dev's payee ${provider}$`));

  wallet.declineNext();
  seen.declined = await submit("#deposit-form", { amount: "1" });
  assert.equal(seen.declined, "You declined in your wallet: nothing was signed or sent.");
  await shows("#free-balance", "5.00 USDC");
  wallet.declineNext();
  seen.declinedCall = await submit("#call-form", { url: hello, body: "again", maxPrice: "0.05" });
  assert.equal(seen.declinedCall, "You declined in your wallet: nothing was signed or sent.");

  // A URL on another origin gets no token: it could be replayed at the real gateway.
  const signatures = () => wallet.state.asked.filter((m) => m === "eth_signTypedData_v4").length;
  const signedBefore = signatures();
  seen.foreign = await submit("#call-form", { url: hello.replace("127.0.0.1", "localhost"), body: "x", maxPrice: "0.05" });
  assert.match(seen.foreign, /^http:\/\/localhost:\d+ is not this console's gateway/);
  assert.equal(signatures(), signedBefore, "nothing was signed for it");

  seen.overdraft = await submit("#withdraw-form", { amount: "100" });
  assert.equal(seen.overdraft, "the free balance is 5.00 USDC, 100.00 USDC needed");
  seen.withdraw = await submit("#withdraw-form", { amount: "1" });
  assert.equal(seen.withdraw, "Withdrew 1.00 USDC to your wallet.");
  await shows("#free-balance", "4.00 USDC");
  await shows("#wallet-usdc", "11.00 USDC");

  seen.release = await submit("#release-form", { provider: "dev", amount: "1" });
  assert.match(seen.release, /release of 1\.00 USDC from dev is scheduled/);
  assert.match(await page.locator(cell("pending")).textContent(), /^release of 1\.00 USDC at .* \(in \d+ (s|min)\)$/);

  // A price cut waits for the escrow's delay, shown beside the pending release; both can be cancelled.
  seen.cut = await submit("#reserve-form", { provider: "dev", price: "0.02", amount: "0" });
  assert.match(seen.cut, /^Terms with dev set; the price cut to 0\.02 USDC per request applies after the escrow's delay \(0\.05 USDC until then\)\.$/);
  assert.match(await page.locator(cell("pending")).textContent(), /^price cut to 0\.02 USDC at .*; release of 1\.00 USDC at /);
  await page.click(`#reserves tr[data-provider="${provider}"] button`);
  await page.waitForFunction((c) => document.querySelector(c)?.textContent === "none", cell("pending"));
  seen.cancelled = await notice();
  assert.equal(seen.cancelled, "The pending changes with dev are cancelled.");

  await page.setInputFiles("#deploy-module", MODULE);
  await page.fill("#deploy-form [name=env]", "# the greeting\nGREETING=Hello from the browser");
  // Below the provider's price: refused before anything is uploaded or signed.
  seen.deployRefused = await submit("#deploy-form", { maxPrice: "0.001" });
  assert.match(seen.deployRefused, /`dev` charges 0\.01 USDC per request, more than 0\.001 USDC/);
  assert.equal(await page.locator("#deploy-steps li").count(), 0);
  assert.equal(signatures(), signedBefore);
  seen.deploy = await submit("#deploy-form", { maxPrice: "0.05" });
  assert.match(seen.deploy, /^Deployed hello\.wasm for dev/);
  seen.deploySteps = await page.locator("#deploy-steps li").allTextContents();
  seen.deployedUrl = await text("#deploy-url");
  assert.ok(seen.deployedUrl.startsWith(`${dev.gateway}/dev/bafk`), seen.deployedUrl);
  // The deployed function, called paid from the page (the call form now holds its URL).
  assert.equal(await page.inputValue("#call-url"), seen.deployedUrl);
  seen.callDeployed = await submit("#call-form", { body: "browser" });
  assert.equal(seen.callDeployed, "Called; you paid 0.01 USDC.");
  assert.equal(await text("#call-answer"), "Hello from the browser, browser!\n");
  assert.match(await text("#call-receipt"), /^verified: /);

  // The provider's view: the wallet's user switches to the dev provider's account.
  await wallet.switchAccount(provider);
  await page.waitForFunction((p) => document.querySelector("#account").textContent === p, provider);
  await page.waitForFunction(() => /\d/.test(document.querySelector("#earnings").textContent));
  // The paid call's charge reaches the escrow with the agent's next settlement batch.
  // (the page reads its figures again every few seconds)
  await page.waitForFunction(() => document.querySelector("#earnings").textContent === "0.03 USDC", null, { timeout: 60_000, polling: 500 });
  seen.earnings = await text("#earnings");
  assert.equal(seen.earnings, "0.03 USDC");
  seen.earningsWithdrawn = await submit("#earnings-form", { amount: "0.03" });
  assert.equal(seen.earningsWithdrawn, "Withdrew 0.03 USDC of earnings to your wallet.");
  await shows("#earnings", "0.00 USDC");
  seen.credits = await submit("#credits-form", { user: USER, amount: "0.10" });
  assert.match(seen.credits, /Granted 0\.10 USDC of trial credits to 0x9965/);
  seen.badUser = await submit("#credits-form", { user: "alice", amount: "0.10" });
  assert.match(seen.badUser, /`alice` is not an address/);
  seen.pageErrors = errors;
  assert.deepEqual(errors, []);
  await page.screenshot({ path: join(SCREENSHOTS, "provider.png"), fullPage: true });
} catch (e) {
  console.error(`the console test failed: ${e.message}`);
  console.error(JSON.stringify(seen, null, 2));
  await browser.close();
  process.exit(1);
}
await browser.close();
console.log(JSON.stringify(seen));
