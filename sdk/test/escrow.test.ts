// The SDK's escrow against a real anvil: the contracts deployed from bindings/artifacts, a payer who
// deposits with a permit, reserves for a provider, withdraws and releases, and an overdraft told as a
// sentence in USDC. Also: every escrow function the SDK calls is in the contract's own ABI.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { after, before, test } from "node:test";

import {
  createPublicClient,
  createWalletClient,
  http,
  parseAbi,
  toEventSelector,
  toFunctionSelector,
  type AbiEvent,
  type AbiFunction,
  type Address,
  type Hex,
  type PublicClient,
} from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { foundry } from "viem/chains";

import { Escrow, EscrowError, escrowAbi, parseUsdc, type Deployment } from "../src/index.js";

const root = new URL("../../../", import.meta.url);
const artifact = (name: string) =>
  JSON.parse(readFileSync(new URL(`bindings/artifacts/${name}.json`, root), "utf8")) as {
    abi: AbiFunction[];
    bytecode: { object: Hex };
  };
// anvil's public development keys.
const DEPLOYER = privateKeyToAccount("0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80");
const PAYER = privateKeyToAccount("0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d");
const PROVIDER: Address = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC";

let anvil: ChildProcess;
let client: PublicClient;
let deployment: Deployment;
let rpc: string;

before(async () => {
  const port = 20_000 + Math.floor(Math.random() * 30_000);
  rpc = `http://127.0.0.1:${port}`;
  anvil = spawn(new URL("node_modules/.bin/anvil", root).pathname, ["--port", String(port), "--silent"], {
    stdio: "ignore",
  });
  client = createPublicClient({ chain: foundry, transport: http(rpc) });
  for (let i = 0; ; i++) {
    try {
      await client.getChainId();
      break;
    } catch {
      if (i > 100) throw new Error("anvil did not start");
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  const deployer = createWalletClient({ account: DEPLOYER, chain: foundry, transport: http(rpc) });
  const deploy = async (name: string, args: unknown[]) => {
    const { abi, bytecode } = artifact(name);
    const hash = await deployer.deployContract({ abi, bytecode: bytecode.object, args } as never);
    const receipt = await client.waitForTransactionReceipt({ hash });
    return receipt.contractAddress as Address;
  };
  const usdc = await deploy("TestUSDC", []);
  const escrow = await deploy("Escrow", [usdc, 300n]);
  deployment = {
    chainId: foundry.id,
    deploymentBlock: 0,
    escrow,
    registry: "0x0000000000000000000000000000000000000001",
    resolverFactory: "0x0000000000000000000000000000000000000002",
    usdc,
    testToken: true,
    withdrawalDelay: 300,
  };
  const mint = await deployer.writeContract({
    address: usdc,
    abi: parseAbi(["function mint(address to, uint256 amount)"]),
    functionName: "mint",
    args: [PAYER.address, parseUsdc("100")],
  });
  await client.waitForTransactionReceipt({ hash: mint });
});

after(() => {
  anvil?.kill();
});

test("every escrow function the SDK calls is in the contract's ABI", () => {
  const contract = new Set(
    artifact("Escrow")
      .abi.filter((f) => f.type === "function")
      .map((f) => toFunctionSelector(f)),
  );
  const ours = (escrowAbi as readonly unknown[] as AbiFunction[]).filter((f) => f.type === "function");
  assert.ok(ours.length >= 10);
  for (const f of ours) {
    assert.ok(contract.has(toFunctionSelector(f)), `Escrow has no ${f.name}(${f.inputs.map((i) => i.type)})`);
  }
  // The events `providersOf` reads.
  const events = new Set(
    (artifact("Escrow").abi as unknown as AbiEvent[]).filter((e) => e.type === "event").map((e) => toEventSelector(e)),
  );
  for (const e of ["TermsSet(address,address,uint256,uint256)", "CreditsGranted(address,address,uint256)"]) {
    assert.ok(events.has(toEventSelector(e)), `Escrow has no event ${e}`);
  }
});

test("a payer deposits with a permit, reserves, withdraws and releases; an overdraft reads as a sentence", async () => {
  const wallet = createWalletClient({ account: PAYER, chain: foundry, transport: http(rpc) });
  const escrow = new Escrow(deployment, client, wallet);
  await escrow.depositWithPermit(parseUsdc("10"));
  let b = await escrow.balances(PAYER.address, PROVIDER);
  assert.equal(b.free, parseUsdc("10"));
  assert.equal(b.wallet, parseUsdc("90"));

  await escrow.reserve(PROVIDER, parseUsdc("0.05"), parseUsdc("5"));
  b = await escrow.balances(PAYER.address, PROVIDER);
  assert.equal(b.terms.price, parseUsdc("0.05"));
  assert.equal(b.terms.reserve, parseUsdc("5"));
  assert.equal(b.free, parseUsdc("5"));

  await assert.rejects(escrow.withdraw(PAYER.address, parseUsdc("100")), (e: unknown) => {
    assert.ok(e instanceof EscrowError);
    assert.equal(e.errorName, "InsufficientBalance");
    assert.equal(e.message, "the free balance is 5.00 USDC, 100.00 USDC needed");
    return true;
  });

  await escrow.withdraw(PAYER.address, parseUsdc("2"));
  await escrow.release(PROVIDER, parseUsdc("1"));
  b = await escrow.balances(PAYER.address, PROVIDER);
  assert.equal(b.free, parseUsdc("3"));
  assert.equal(b.wallet, parseUsdc("92"));
  assert.equal(b.terms.pendingRelease, parseUsdc("1"));
  assert.ok(b.terms.releaseAt > 0n, "the release waits for the escrow's delay");
  assert.equal(await escrow.earnings(PROVIDER), 0n);
  assert.deepEqual(await escrow.providersOf(PAYER.address), [PROVIDER], "the reserve's provider, found in the events");
  assert.deepEqual(await escrow.providersOf(PROVIDER), [], "a provider that never paid has no providers");

  const readOnly = new Escrow(deployment, client);
  await assert.rejects(readOnly.withdraw(PAYER.address, 1n), /no wallet to sign with/);
});
