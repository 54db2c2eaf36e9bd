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
import { formatUsdc } from "./usdc.js";
import { DEFAULT_LIMITS, checkSpec, signSpec, specTermsHash, type Spec } from "./spec.js";

/** Why a module cannot be deployed: every provider would refuse it. */
export class ModuleError extends Error {
  override name = "ModuleError";
}

/** The names a module exports as functions, read from its export section (nothing is compiled). */
export function exportedFunctions(module: Uint8Array): string[] {
  const magic = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
  if (module.length < 8 || !magic.every((b, i) => module[i] === b)) {
    throw new ModuleError("no WebAssembly header (\\0asm, version 1)");
  }
  let at = 8;
  const leb = () => {
    let value = 0;
    for (let shift = 0; shift < 35; shift += 7) {
      if (at >= module.length) throw new ModuleError("cut short");
      const b = module[at++];
      value += (b & 0x7f) * 2 ** shift;
      if (!(b & 0x80)) return value;
    }
    throw new ModuleError("a malformed LEB128 number");
  };
  while (at < module.length) {
    const id = module[at++];
    const size = leb();
    const end = at + size;
    if (end > module.length) throw new ModuleError(`section ${id} runs past the end`);
    if (id === 7) {
      const names: string[] = [];
      for (let count = leb(); count > 0; count--) {
        const length = leb();
        if (at + length > end) throw new ModuleError("an export name runs past its section");
        const name = new TextDecoder().decode(module.subarray(at, at + length));
        at += length;
        const kind = module[at++];
        leb(); // index
        if (kind === 0) names.push(name);
      }
      return names;
    }
    at = end;
  }
  return [];
}

/**
 * Checks that `module` is a WebAssembly command (it exports `_start`), as providers require. It reads the
 * export section without compiling (a browser compiles only small modules synchronously, and not every
 * feature a provider's engine has); the provider validates the whole module when it runs it.
 */
export function checkModule(module: Uint8Array, name = "the module"): void {
  let exports: string[];
  try {
    exports = exportedFunctions(module);
  } catch (e) {
    throw new ModuleError(
      `${name} is not a WebAssembly module (${(e as Error).message}); build it with \`cargo build --target wasm32-wasip1 --release\``,
    );
  }
  if (module.length > MAX_MODULE_BYTES) {
    throw new ModuleError(`${name} is ${(module.length / 2 ** 20).toFixed(1)} MiB; providers take modules up to 32 MiB`);
  }
  if (!exports.includes("_start")) {
    throw new ModuleError(
      `${name} exports no \`_start\`: it is a library, and every provider would refuse it; build a command (a \`fn main\` binary, not a cdylib)`,
    );
  }
}

/** The largest module a provider takes (the runtime's package limit). */
export const MAX_MODULE_BYTES = 32 << 20;

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
  /** The provider the spec is sealed to (`resolveProvider`), or several: any of them runs it. */
  provider: ProviderRecord | ProviderRecord[];
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
  /** The providers' offers (`readOffer`): a spec one would refuse is refused here, before any upload. */
  offer?: Offer | Offer[];
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
  const providers = [o.provider].flat();
  if (providers.length === 0) throw new Error("name at least one provider: a sealed spec needs a recipient");
  checkModule(o.module, o.entry);
  if (o.spendCap && o.spendCap.amount < o.maxPrice) {
    throw new Error("the spending cap is below the price of one call: no call would fit in it");
  }
  // Every check a provider makes before anything is uploaded or signed: the spec's fields, then its offer.
  const key = o.publicProgram ? undefined : globalThis.crypto.getRandomValues(new Uint8Array(32));
  const unsigned: Spec = {
    version: 1,
    program: "",
    entry: o.entry,
    env: o.env ?? {},
    owner: signerAddress(o.owner) as Address,
    provider: providers.map((p) => p.label).join(","),
    maxPrice: o.maxPrice.toString(),
    limits: o.limits ?? DEFAULT_LIMITS,
    terms: o.terms ?? "",
    chainId: o.deployment.chainId,
    escrow: o.deployment.escrow,
    ...(key ? { programKey: hex(key) } : {}),
    ...(o.spendCap ? { spendCap: { amount: o.spendCap.amount.toString(), periodSeconds: o.spendCap.periodSeconds } } : {}),
  };
  checkSpec(unsigned);
  // Each provider's offer, matched by label (an offer for no provider named is a mistake, not a check).
  for (const offer of [o.offer ?? []].flat()) {
    if (!providers.some((p) => p.label === offer.label)) {
      throw new Error(`the offer of \`${offer.label}\` is for none of the providers deployed to`);
    }
    checkOffer(offer, unsigned);
  }
  const ids = new Set(providers.map((p) => Array.from(p.rsaKey).join(",")));
  if (ids.size !== providers.length) throw new Error("two of the providers publish the same RSA key: deploy to one of them");
  const zip = await zipModule(o.entry, o.module);
  const program = key ? await sealProgram(key, zip) : zip;
  step(`uploading the program (${kib(program.length)}, zipped${key ? ", encrypted" : ""})`);
  const spec = { ...unsigned, program: await ipfsAdd(o.ipfsApi, o.entry, program) };
  step("signing the spec's terms");
  const signed = await signSpec(o.owner, spec);
  step(`encrypting the spec to ${providers.map((p) => `\`${p.label}\``).join(", ")}`);
  const sealed = await sealEnvelope(
    providers.map((p) => p.rsaKey),
    new TextEncoder().encode(JSON.stringify(signed)),
  );
  step("uploading the spec");
  const specCid = await ipfsAdd(o.ipfsApi, "spec", sealed);
  return { spec: specCid, program: spec.program, termsHash: specTermsHash(signed), signed };
}

/** What a provider offers (`GET {provider}/_provider`, docs/PROTOCOL.md §8): its price, caps and chain. */
export interface Offer {
  label: string;
  payee: Address;
  /** Base units, as a decimal string. */
  price: string;
  chainId: number;
  escrow: Address;
  caps: { memoryBytes: number; timeoutMs: number; outputBytes: number };
  maxBodyBytes: number;
  /** Whether it runs specs in the clear (absent: it does). */
  openSpecs?: boolean;
}

/** Reads a provider's offer from its base URL (through a gateway: `{gateway}/{label}`). */
export async function readOffer(base: string): Promise<Offer> {
  const url = `${base.replace(/\/+$/, "")}/_provider`;
  const response = await fetch(url).catch((e: Error) => {
    throw new Error(`cannot read the provider's offer at ${url} (${e.message})`);
  });
  if (!response.ok) throw new Error(`cannot read the provider's offer at ${url}: HTTP ${response.status}`);
  return (await response.json()) as Offer;
}

/** Refuses a spec that `offer`'s provider would refuse at every call (`Offer::check` in Rust). */
export function checkOffer(offer: Offer, spec: Spec): void {
  if (offer.chainId !== spec.chainId || offer.escrow.toLowerCase() !== spec.escrow.toLowerCase()) {
    throw new Error(`\`${offer.label}\` settles on chain ${offer.chainId} escrow ${offer.escrow}, not this one`);
  }
  if (BigInt(offer.price) > BigInt(spec.maxPrice)) {
    throw new Error(
      `\`${offer.label}\` charges ${formatUsdc(BigInt(offer.price))} per request, more than ${formatUsdc(BigInt(spec.maxPrice))}: it would refuse every call; pay it at least its price`,
    );
  }
  const limits = spec.limits ?? DEFAULT_LIMITS;
  const over = (
    [
      ["memory", limits.memoryBytes, offer.caps.memoryBytes],
      ["time", limits.timeoutMs, offer.caps.timeoutMs],
      ["output", limits.outputBytes, offer.caps.outputBytes],
    ] as const
  ).find(([, asked, cap]) => asked > cap);
  if (over) {
    throw new Error(`the spec asks for ${over[1]} of ${over[0]}; \`${offer.label}\` offers at most ${over[2]}: lower it`);
  }
}

/** A function's URL through a gateway in path mode. */
export const functionUrl = (gateway: string, label: string, spec: string) =>
  `${gateway.replace(/\/+$/, "")}/${label}/${spec}`;

