// Deploying from a browser, the parts that need no network: the module check, CRC-32 and the zip
// (the whole deploy runs in Chromium against `khachapuri dev` in agents/khachapuri-cli/tests/console.rs).
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  ModuleError,
  SpecError,
  checkModule,
  checkOffer,
  checkSpec,
  crc32,
  exportedFunctions,
  parseDeployment,
  zipModule,
  type Offer,
  type Spec,
} from "../src/index.js";

const EMPTY_MODULE = Uint8Array.of(0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00);
// (module (func (export "_start")))
const COMMAND = Uint8Array.of(
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x04, 0x01, 0x60, 0x00, 0x00, 0x03, 0x02, 0x01, 0x00,
  0x07, 0x0a, 0x01, 0x06, 0x5f, 0x73, 0x74, 0x61, 0x72, 0x74, 0x00, 0x00, 0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b,
);

test("a module without _start, or not a module, is refused with what to do", () => {
  checkModule(COMMAND, "hello.wasm");
  assert.throws(() => checkModule(EMPTY_MODULE, "lib.wasm"), (e: unknown) => {
    assert.ok(e instanceof ModuleError);
    assert.match((e as Error).message, /lib\.wasm exports no `_start`.*fn main/);
    return true;
  });
  assert.throws(() => checkModule(new TextEncoder().encode("hello"), "notes.txt"), /notes\.txt is not a WebAssembly module.*cargo build/);
});

test("crc32 is zip's CRC-32", () => {
  assert.equal(crc32(new TextEncoder().encode("123456789")), 0xcbf43926);
  assert.equal(crc32(new Uint8Array()), 0);
});

test("zipModule writes one deflated entry whose data inflates to the module", async () => {
  const module = new Uint8Array(70_000).map((_, i) => (i * 7) % 251);
  const zip = await zipModule("/hello.wasm", module);
  const u16 = (at: number) => zip[at] | (zip[at + 1] << 8);
  const u32 = (at: number) => (u16(at) | (u16(at + 2) << 16)) >>> 0;
  assert.equal(u32(0), 0x04034b50, "a local file header first");
  assert.equal(u16(8), 8, "deflated");
  assert.equal(u32(14), crc32(module));
  assert.equal(u32(22), module.length);
  const nameLength = u16(26);
  assert.equal(new TextDecoder().decode(zip.slice(30, 30 + nameLength)), "hello.wasm", "the leading slash is dropped");
  const data = zip.slice(30 + nameLength, 30 + nameLength + u32(18));
  const inflated = new Uint8Array(
    await new Response(new Blob([data]).stream().pipeThrough(new DecompressionStream("deflate-raw"))).arrayBuffer(),
  );
  assert.deepEqual(inflated, module);
  const end = zip.length - 22;
  assert.equal(u32(end), 0x06054b50, "the end of the central directory last");
  assert.equal(u16(end + 10), 1, "one entry");
  assert.equal(u32(u32(end + 16)), 0x02014b50, "the central directory where the end says");
});

test("a deployments file reads with checksummed addresses; one without an escrow is refused", () => {
  // What `khachapuri dev` wrote to deployments/31337.json.
  const file = {
    chainId: 31337,
    deploymentBlock: 0,
    usdc: "0x5fbdb2315678afecb367f032d93f642f64180aa3",
    registry: "0xe7f1725e7734ce288f8367e1bb143e90bb3f0512",
    resolverFactory: "0x9fe46736679d2d9a65f0992f2272de9f3c7fa6e0",
    resolverImplementation: "0x75537828f2ce51be7289709686a69cbfdbb714f1",
    escrow: "0xcf7ed3acca5a467e9e704c703e8d87f634fb0fc9",
    withdrawalDelay: 300,
    minCommitmentAge: 1,
    maxCommitmentAge: 86400,
    testToken: true,
  };
  const d = parseDeployment(file);
  assert.equal(d.chainId, 31337);
  assert.equal(d.escrow, "0xCf7Ed3AccA5a467e9e704C703E8D87F634fB0Fc9");
  assert.equal(d.withdrawalDelay, 300);
  assert.throws(() => parseDeployment({ ...file, escrow: "0x12" }, "deployments/31337.json"), /deployments\/31337\.json: `escrow` is "0x12", not an address/);
  assert.throws(() => parseDeployment([]), /`chainId` is undefined, not a whole number/);
});

const SPEC: Spec = {
  version: 1,
  program: "bafkreidvbhs33ighmljlvr7zbv2ywwzcmp5adtf4kqvlly67cy56bdtmve",
  entry: "hello.wasm",
  env: { GREETING: "Gaumarjos" },
  owner: "0x90F79bf6EB2c4f870365E785982E1f101E93b906",
  provider: "dev",
  maxPrice: "20000",
  limits: { memoryBytes: 64 << 20, timeoutMs: 5000, outputBytes: 4 << 20 },
  chainId: 31337,
  escrow: "0xCf7Ed3AccA5a467e9e704C703E8D87F634fB0Fc9",
};

test("the exports are read from the export section, without compiling", () => {
  assert.deepEqual(exportedFunctions(COMMAND), ["_start"]);
  assert.deepEqual(exportedFunctions(EMPTY_MODULE), []);
  assert.throws(() => exportedFunctions(COMMAND.slice(0, 20)), /runs past the end|cut short/);
});

test("a spec every provider would refuse is refused before anything is uploaded", () => {
  checkSpec(SPEC);
  const refused = (change: Partial<Spec>, reason: RegExp) =>
    assert.throws(() => checkSpec({ ...SPEC, ...change }), (e: unknown) => e instanceof SpecError && reason.test((e as Error).message));
  refused({ entry: "../hello.wasm" }, /^entry: .*without `\.\.`/);
  refused({ entry: "/hello.wasm" }, /^entry:/);
  refused({ env: { "A B": "x" } }, /^env: `A B`/);
  refused({ maxPrice: "0" }, /^maxPrice/);
  refused({ limits: { memoryBytes: 0, timeoutMs: 5000, outputBytes: 1 } }, /^limits\.memoryBytes: 0/);
  refused({ limits: { memoryBytes: 2 ** 60, timeoutMs: 5000, outputBytes: 1 } }, /^limits\.memoryBytes/);
  refused({ spendCap: { amount: "0", periodSeconds: 60 } }, /^spendCap: a zero cap/);
  checkSpec({ ...SPEC, provider: "dev,bob" });
  refused({ provider: "dev,dev" }, /^provider: `dev` is named twice/);
  refused({ provider: "dev, bob" }, /^provider: ` bob` is not a provider label/);
  refused({ provider: "Dev" }, /^provider: `Dev`/);
  refused({ provider: Array.from({ length: 17 }, (_, i) => `p${i}`).join(",") }, /^provider: 17 providers/);
});

test("a spec above a provider's price or caps, or for another chain, is refused with what to change", () => {
  const offer: Offer = {
    label: "dev",
    payee: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
    price: "10000",
    chainId: 31337,
    escrow: SPEC.escrow,
    caps: { memoryBytes: 128 << 20, timeoutMs: 10_000, outputBytes: 8 << 20 },
    maxBodyBytes: 1 << 20,
  };
  checkOffer(offer, SPEC);
  assert.throws(() => checkOffer({ ...offer, price: "30000" }, SPEC), /`dev` charges 0\.03 USDC per request, more than 0\.02 USDC/);
  assert.throws(() => checkOffer({ ...offer, caps: { ...offer.caps, timeoutMs: 1000 } }, SPEC), /asks for 5000 of time; `dev` offers at most 1000/);
  assert.throws(() => checkOffer({ ...offer, chainId: 1 }, SPEC), /settles on chain 1/);
});
