/**
 * Deploying a function with no Rust (docs/PROTOCOL.md §4, §5): the module checked and zipped, encrypted as
 * a private program under a fresh key, uploaded to an IPFS node's Kubo RPC API (`/api/v0/add`), the spec's
 * terms signed by its owner, the spec sealed to the provider's RSA key and uploaded. What `khachapuri
 * deploy` does, in a browser.
 */
import type { Address, Hex } from "viem";

import { concatBytes, hex, uintBytes } from "./bytes.js";
import { sealEnvelope } from "./envelope.js";
import type { Deployment } from "./escrow.js";
import { sealProgram } from "./program.js";
import type { ProviderRecord } from "./registry.js";
import { signerAddress, type Signer } from "./signer.js";
import { DEFAULT_LIMITS, signSpec, specTermsHash, type Spec } from "./spec.js";

/** Why a module cannot be deployed: every provider would refuse it. */
export class ModuleError extends Error {
  override name = "ModuleError";
}

/** Checks that `module` is a WebAssembly command (it exports `_start`), as providers require. */
export function checkModule(module: Uint8Array, name = "the module"): void {
  let compiled: WebAssembly.Module;
  try {
    compiled = new WebAssembly.Module(new Uint8Array(module));
  } catch (e) {
    throw new ModuleError(
      `${name} is not a WebAssembly module (${(e as Error).message}); build it with \`cargo build --target wasm32-wasip1 --release\``,
    );
  }
  const start = WebAssembly.Module.exports(compiled).some((e) => e.name === "_start" && e.kind === "function");
  if (!start) {
    throw new ModuleError(
      `${name} exports no \`_start\`: it is a library, and every provider would refuse it; build a command (a \`fn main\` binary, not a cdylib)`,
    );
  }
}

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32 (ISO-HDLC), as zip stores it. */
export function crc32(data: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of data) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

const le = (value: number, width: number) => uintBytes(BigInt(value), width).reverse();

async function deflateRaw(data: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([new Uint8Array(data)]).stream().pipeThrough(new CompressionStream("deflate-raw"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** A zip holding one file, `entry` (deflated), as `khachapuri deploy` packages a module. */
export async function zipModule(entry: string, module: Uint8Array): Promise<Uint8Array> {
  const name = new TextEncoder().encode(entry.replace(/^\/+/, ""));
  const data = await deflateRaw(module);
  const crc = crc32(module);
  // version needed 2.0, flags: UTF-8 name, method 8 (deflate), time 00:00, date 1980-01-01
  const common = concatBytes(le(20, 2), le(0x0800, 2), le(8, 2), le(0, 2), le(0x21, 2), le(crc, 4), le(data.length, 4), le(module.length, 4), le(name.length, 2), le(0, 2));
  const local = concatBytes(le(0x04034b50, 4), common, name, data);
  const central = concatBytes(
    le(0x02014b50, 4),
    le(0x031e, 2), // made by: unix, zip 3.0 (the external attributes are unix modes)
    common,
    le(0, 2), // comment
    le(0, 2), // disk
    le(0, 2), // internal attributes
    le(0o100644 * 0x10000, 4),
    le(0, 4), // the local header's offset
    name,
  );
  const end = concatBytes(le(0x06054b50, 4), le(0, 4), le(1, 2), le(1, 2), le(central.length, 4), le(local.length, 4), le(0, 2));
  return concatBytes(local, central, end);
}

/** Adds `data` as one file to the IPFS node at `api` (Kubo RPC, CIDv1, raw leaves); returns its CID. */
export async function ipfsAdd(api: string, name: string, data: Uint8Array): Promise<string> {
  const form = new FormData();
  form.append("file", new Blob([new Uint8Array(data)]), name);
  const url = `${api.replace(/\/+$/, "")}/api/v0/add?cid-version=1&raw-leaves=true`;
  let response: Response;
  try {
    response = await fetch(url, { method: "POST", body: form });
  } catch (e) {
    throw new Error(`cannot reach the IPFS node at ${api} (${(e as Error).message}); is it running, and does it allow this page's origin?`);
  }
  const text = await response.text();
  if (!response.ok) throw new Error(`the IPFS node at ${api} refused the upload: HTTP ${response.status} ${text.trim()}`);
  const last = text.trim().split("\n").pop() ?? "";
  try {
    const hash = (JSON.parse(last) as { Hash?: string }).Hash;
    if (hash) return hash;
  } catch {
    // not Kubo's answer
  }
  throw new Error(`the IPFS node at ${api} answered without a CID: ${last.slice(0, 200)}`);
}

/** What to deploy, and for whom. */
export interface DeployOptions {
  /** The IPFS node's Kubo RPC API, e.g. `http://127.0.0.1:5001`. */
  ipfsApi: string;
  /** The owner: signs the terms, and pays for calls that bring no payer token. */
  owner: Signer;
  deployment: Deployment;
  /** The provider the spec is sealed to (`resolveProvider`). */
  provider: ProviderRecord;
  /** The `.wasm` module, and its name in the zip (e.g. `hello.wasm`). */
  module: Uint8Array;
  entry: string;
  env?: Record<string, string>;
  /** The most the owner pays per request, base units. */
  maxPrice: bigint;
  limits?: Spec["limits"];
  terms?: string;
  /** The most the provider may charge the owner per period. */
  spendCap?: { amount: bigint; periodSeconds: number };
  /** Upload the program in the clear (default: encrypted, its key inside the sealed spec). */
  publicProgram?: boolean;
  /** Told each step as it starts ("uploading the program (12.3 KiB, zipped, encrypted)"). */
  onStep?: (step: string) => void;
}

/** What a deployment made. */
export interface Deployed {
  /** The spec's CID: the function's URL is `{gateway}/{label}/{spec}`. */
  spec: string;
  /** The program's CID (ciphertext, for a private program). */
  program: string;
  /** The terms hash: the deployment's key in the escrow's revocations. */
  termsHash: Hex;
  /** The signed spec, as the provider will read it once it opens the envelope. */
  signed: Spec;
}

const kib = (n: number) => `${(n / 1024).toFixed(1)} KiB`;

/** Deploys a function for `provider`, as `khachapuri deploy` does. */
export async function deploy(o: DeployOptions): Promise<Deployed> {
  const step = o.onStep ?? (() => {});
  checkModule(o.module, o.entry);
  if (o.maxPrice <= 0n) throw new Error("the price per request must be above zero");
  if (o.spendCap && o.spendCap.amount < o.maxPrice) {
    throw new Error("the spending cap is below the price of one call: no call would fit in it");
  }
  const zip = await zipModule(o.entry, o.module);
  const key = o.publicProgram ? undefined : globalThis.crypto.getRandomValues(new Uint8Array(32));
  const program = key ? await sealProgram(key, zip) : zip;
  step(`uploading the program (${kib(program.length)}, zipped${key ? ", encrypted" : ""})`);
  const programCid = await ipfsAdd(o.ipfsApi, o.entry, program);
  const spec: Spec = {
    version: 1,
    program: programCid,
    entry: o.entry,
    env: o.env ?? {},
    owner: signerAddress(o.owner) as Address,
    provider: o.provider.label,
    maxPrice: o.maxPrice.toString(),
    limits: o.limits ?? DEFAULT_LIMITS,
    terms: o.terms ?? "",
    chainId: o.deployment.chainId,
    escrow: o.deployment.escrow,
    ...(key ? { programKey: hex(key) } : {}),
    ...(o.spendCap ? { spendCap: { amount: o.spendCap.amount.toString(), periodSeconds: o.spendCap.periodSeconds } } : {}),
  };
  step("signing the spec's terms");
  const signed = await signSpec(o.owner, spec);
  step(`encrypting the spec to \`${o.provider.label}\`'s key`);
  const sealed = await sealEnvelope(o.provider.rsaKey, new TextEncoder().encode(JSON.stringify(signed)));
  step("uploading the spec");
  const specCid = await ipfsAdd(o.ipfsApi, "spec", sealed);
  return { spec: specCid, program: programCid, termsHash: specTermsHash(signed), signed };
}

/** A function's URL through a gateway in path mode. */
export const functionUrl = (gateway: string, label: string, spec: string) =>
  `${gateway.replace(/\/+$/, "")}/${label}/${spec}`;

