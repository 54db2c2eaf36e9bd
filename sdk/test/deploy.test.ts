// Deploying from a browser, the parts that need no network: the module check, CRC-32 and the zip
// (the whole deploy runs in Chromium against `khachapuri dev` in agents/khachapuri-cli/tests/console.rs).
import assert from "node:assert/strict";
import { test } from "node:test";

import { ModuleError, checkModule, crc32, parseDeployment, zipModule } from "../src/index.js";

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
