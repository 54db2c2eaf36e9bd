/**
 * The deployment spec's signed terms (docs/PROTOCOL.md §4): `SpecTerms` in the escrow's domain of the
 * spec's own `chainId` and `escrow`. `specTermsHash` is also the deployment's key in the escrow's
 * revocations (`Escrow.revokeSpec`).
 */
import { hashTypedData, isAddressEqual, keccak256, recoverAddress, type Address, type Hex } from "viem";

import { escrowDomain, types } from "./eip712.js";
import { signTyped, signerAddress, type Signer } from "./signer.js";

/** A spec as its JSON reads (amounts as decimal strings of base units). */
export interface Spec {
  version: number;
  program: string;
  entry: string;
  env?: Record<string, string>;
  owner: Address;
  provider?: string | null;
  maxPrice: string;
  limits?: { memoryBytes: number; timeoutMs: number; outputBytes: number };
  terms?: string;
  chainId: number;
  escrow: Address;
  spendCap?: { amount: string; periodSeconds: number };
  programKey?: Hex;
  signature?: Hex;
}

/** The limits a spec without `limits` gets. */
export const DEFAULT_LIMITS = { memoryBytes: 64 << 20, timeoutMs: 5_000, outputBytes: 4 << 20 };

/** Compares strings by their UTF-8 bytes (the Rust side's `BTreeMap<String, _>` order). */
function utf8Order(a: string, b: string): number {
  const [x, y] = [new TextEncoder().encode(a), new TextEncoder().encode(b)];
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    if (x[i] !== y[i]) return x[i] - y[i];
  }
  return x.length - y.length;
}

/** The environment's canonical JSON: compact, keys sorted by UTF-8 bytes, strings escaped as serde_json does. */
export function canonicalEnv(env: Record<string, string>): string {
  const keys = Object.keys(env).sort(utf8Order);
  return `{${keys.map((k) => `${JSON.stringify(k)}:${JSON.stringify(env[k])}`).join(",")}}`;
}

/** `keccak256` of the canonical environment JSON. */
export const envDigest = (env: Record<string, string> = {}): Hex =>
  keccak256(new TextEncoder().encode(canonicalEnv(env)));

/** `keccak256` of the terms text. */
export const termsDigest = (terms = ""): Hex => keccak256(new TextEncoder().encode(terms));

/** The typed message the owner signs. */
export function specTerms(spec: Spec) {
  const limits = spec.limits ?? DEFAULT_LIMITS;
  const units = (field: string, text: string) => {
    if (!/^\d+$/.test(text)) throw new Error(`${field} \`${text}\`: a decimal string of USDC base units, e.g. "10000"`);
    return BigInt(text);
  };
  return {
    program: spec.program,
    entry: spec.entry,
    envDigest: envDigest(spec.env),
    provider: spec.provider ?? "",
    owner: spec.owner,
    maxPrice: units("maxPrice", spec.maxPrice),
    memoryBytes: BigInt(limits.memoryBytes),
    timeoutMs: BigInt(limits.timeoutMs),
    outputBytes: BigInt(limits.outputBytes),
    termsDigest: termsDigest(spec.terms ?? ""),
    spendCap: spec.spendCap ? units("spendCap.amount", spec.spendCap.amount) : 0n,
    spendPeriod: spec.spendCap ? BigInt(spec.spendCap.periodSeconds) : 0n,
  };
}

/** The EIP-712 digest the owner signs: the spec's terms hash. */
export function specTermsHash(spec: Spec): Hex {
  return hashTypedData({
    domain: escrowDomain(spec.chainId, spec.escrow),
    types,
    primaryType: "SpecTerms",
    message: specTerms(spec),
  });
}

/** Whether the spec's `signature` is its owner's over its terms. */
export async function verifySpec(spec: Spec): Promise<boolean> {
  if (!spec.signature) return false;
  try {
    const signer = await recoverAddress({ hash: specTermsHash(spec), signature: spec.signature });
    return isAddressEqual(signer, spec.owner);
  } catch {
    return false;
  }
}

/** Signs the spec's terms as its owner (`signer` must be `spec.owner`); returns the spec with its signature. */
export async function signSpec(signer: Signer, spec: Spec): Promise<Spec> {
  if (!isAddressEqual(signerAddress(signer), spec.owner)) {
    throw new Error(`the spec's owner is ${spec.owner} but the signer is ${signerAddress(signer)}`);
  }
  const signature = await signTyped(signer, {
    domain: escrowDomain(spec.chainId, spec.escrow),
    types,
    primaryType: "SpecTerms",
    message: specTerms(spec),
  });
  return { ...spec, signature };
}

/** A spec field that can never be valid: every provider would refuse the spec (`Spec::check` in Rust). */
export class SpecError extends Error {
  override name = "SpecError";
}

const U64_MAX = 2n ** 64n - 1n;

/**
 * The structural checks a provider makes of every spec, before anything is signed or uploaded:
 * the entry a relative path without `..`, environment names of `[A-Za-z0-9_]` (as the CLI takes them),
 * limits and the price above zero, a cap with an amount and a period.
 */
export function checkSpec(spec: Spec): void {
  const fail = (field: string, reason: string): never => {
    throw new SpecError(`${field}: ${reason}`);
  };
  if (!spec.entry || spec.entry.includes("..") || spec.entry.startsWith("/")) {
    fail("entry", `\`${spec.entry}\` must be a relative path inside the program, without \`..\``);
  }
  // `provider`: one label or several, comma-separated (a spec sealed to each), each a label once.
  if (spec.provider != null) {
    const labels = spec.provider.split(",");
    if (labels.length > 16) fail("provider", `${labels.length} providers: a spec is sealed to at most 16`);
    for (const [i, label] of labels.entries()) {
      if (!/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(label) || label.slice(2, 4) === "--") {
        fail("provider", `\`${label}\` is not a provider label (lower-case letters, digits and -)`);
      }
      if (labels.indexOf(label) !== i) fail("provider", `\`${label}\` is named twice`);
    }
  }
  for (const key of Object.keys(spec.env ?? {})) {
    if (!/^[A-Za-z0-9_]+$/.test(key)) fail("env", `\`${key}\`: a variable name is letters, digits and _`);
  }
  if (!/^\d+$/.test(spec.maxPrice) || BigInt(spec.maxPrice) === 0n) fail("maxPrice", "above zero, in base units");
  const limits = spec.limits ?? DEFAULT_LIMITS;
  for (const [name, value] of Object.entries(limits)) {
    if (!Number.isSafeInteger(value) || value <= 0 || BigInt(value) > U64_MAX) {
      fail(`limits.${name}`, `${value} is not a whole number above zero`);
    }
  }
  if (spec.spendCap) {
    if (!/^\d+$/.test(spec.spendCap.amount) || BigInt(spec.spendCap.amount) === 0n) {
      fail("spendCap", "a zero cap allows no call: leave it out for no cap");
    }
    if (!Number.isSafeInteger(spec.spendCap.periodSeconds) || spec.spendCap.periodSeconds <= 0) {
      fail("spendCap", "the period must be at least one second");
    }
  }
}
