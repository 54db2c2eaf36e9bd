/**
 * The receipt (docs/PROTOCOL.md §7): what a provider signs for every charged answer. Decode it, recompute
 * both digests from your request and the answer you got, and check that its signer is the provider's payee
 * (from its resolver). Agents send `kr2.`: one signature covers a group of receipts through their Merkle
 * root, and each receipt carries its inclusion proof. `kr1.` (signed alone) still decodes and verifies.
 */
import {
  concat,
  encodeAbiParameters,
  hashStruct,
  hashTypedData,
  isAddressEqual,
  keccak256,
  recoverAddress,
  type Address,
  type Hex,
  type TypedDataDomain,
} from "viem";

import { address, base64url, bytes, concatBytes, fromBase64url, hex, readUint, uintBytes } from "./bytes.js";
import { types } from "./eip712.js";
import { signTyped, type Signer } from "./signer.js";

/** The response header that carries a receipt. */
export const RECEIPT_HEADER = "X-Khachapuri-Receipt";

export interface Receipt {
  provider: Address;
  payer: Address;
  spec: string;
  price: bigint;
  sequence: bigint;
  requestDigest: Hex;
  responseDigest: Hex;
  signature: Hex;
  /**
   * `kr2.`: the siblings from this receipt's struct hash up to the root its group's signature covers (empty:
   * a group of one). Absent: `kr1.`, the signature is over the receipt itself.
   */
  proof?: Hex[];
}

/** The longest proof a `kr2.` receipt may carry (groups of up to 65,536). */
export const MAX_PROOF = 16;

type Body = string | Uint8Array;
const asBytes = (b: Body) => (typeof b === "string" ? new TextEncoder().encode(b) : b);

/** `keccak256(abi.encode(string method, string pathAndQuery, bytes32 keccak256(body)))`. */
export function requestDigest(method: string, pathAndQuery: string, body: Body): Hex {
  return keccak256(
    encodeAbiParameters([{ type: "string" }, { type: "string" }, { type: "bytes32" }], [
      method,
      pathAndQuery,
      keccak256(asBytes(body)),
    ]),
  );
}

/** `keccak256(abi.encode(uint256 status, bytes32 keccak256(body)))`. */
export function responseDigest(status: number, body: Body): Hex {
  return keccak256(
    encodeAbiParameters([{ type: "uint256" }, { type: "bytes32" }], [BigInt(status), keccak256(asBytes(body))]),
  );
}

const message = (r: Receipt) => ({
  provider: r.provider,
  payer: r.payer,
  spec: r.spec,
  price: r.price,
  sequence: r.sequence,
  requestDigest: r.requestDigest,
  responseDigest: r.responseDigest,
});

/** A receipt's EIP-712 struct hash: its leaf in a group's Merkle tree. */
export function receiptLeaf(receipt: Omit<Receipt, "signature">): Hex {
  return hashStruct({ types, primaryType: "Receipt", data: message({ ...receipt, signature: "0x" }) });
}

/** `keccak256` of two nodes, the smaller first (OpenZeppelin's `MerkleProof`). */
const hashPair = (a: Hex, b: Hex): Hex => (BigInt(a) <= BigInt(b) ? keccak256(concat([a, b])) : keccak256(concat([b, a])));

/** The root that `leaf` and its `proof` lead to. */
export function processProof(leaf: Hex, proof: readonly Hex[]): Hex {
  return proof.reduce(hashPair, leaf);
}

/** The root of `leaves` and each leaf's proof: adjacent pairs, a level's odd last node moves up unchanged. */
export function merkleTree(leaves: readonly Hex[]): { root: Hex; proofs: Hex[][] } {
  const proofs: Hex[][] = leaves.map(() => []);
  let level = leaves.map((node, i) => ({ node, under: [i] }));
  while (level.length > 1) {
    const next: typeof level = [];
    for (let i = 0; i < level.length; i += 2) {
      const [left, right] = [level[i], level[i + 1]];
      if (!right) {
        next.push(left);
        continue;
      }
      left.under.forEach((leaf) => proofs[leaf].push(right.node));
      right.under.forEach((leaf) => proofs[leaf].push(left.node));
      next.push({ node: hashPair(left.node, right.node), under: [...left.under, ...right.under] });
    }
    level = next;
  }
  return { root: level[0]?.node ?? `0x${"00".repeat(32)}`, proofs };
}

/** The EIP-712 digest a receipt's signature is over: its group's (`kr2.`), or its own (`kr1.`). */
export function receiptHash(domain: TypedDataDomain, receipt: Receipt): Hex {
  if (!receipt.proof) return hashTypedData({ domain, types, primaryType: "Receipt", message: message(receipt) });
  const root = processProof(receiptLeaf(receipt), receipt.proof);
  return hashTypedData({ domain, types, primaryType: "ReceiptGroup", message: { root } });
}

/**
 * Signs receipts as a provider's payee, with one signature over their group (what an agent does; for tests
 * and other providers): their `kr2.` encodings, in order.
 */
export async function signReceipts(
  signer: Signer,
  domain: TypedDataDomain,
  receipts: readonly Omit<Receipt, "signature" | "proof">[],
): Promise<string[]> {
  const { root, proofs } = merkleTree(receipts.map(receiptLeaf));
  const signature = await signTyped(signer, { domain, types, primaryType: "ReceiptGroup", message: { root } });
  return receipts.map((r, i) => encodeReceipt({ ...r, signature, proof: proofs[i] }));
}

/** Signs one receipt alone (`kr2.`, a group of one). */
export async function signReceipt(
  signer: Signer,
  domain: TypedDataDomain,
  receipt: Omit<Receipt, "signature" | "proof">,
): Promise<string> {
  const [encoded] = await signReceipts(signer, domain, [receipt]);
  return encoded;
}

/**
 * `kr2.` + base64url(provider ‖ payer ‖ price ‖ sequence ‖ requestDigest ‖ responseDigest ‖ signature ‖
 * proof length (1 byte) ‖ proof ‖ spec); without a proof, `kr1.` and neither the length nor the proof.
 */
export function encodeReceipt(r: Receipt): string {
  if (bytes(r.signature).length !== 65) throw new Error("the signature is 65 bytes, r ‖ s ‖ v");
  if (r.proof && r.proof.length > MAX_PROOF) throw new Error(`a proof has at most ${MAX_PROOF} hashes`);
  const proof = r.proof ? [Uint8Array.of(r.proof.length), ...r.proof.map(bytes)] : [];
  return `${r.proof ? "kr2." : "kr1."}${base64url(
    concatBytes(
      bytes(r.provider),
      bytes(r.payer),
      uintBytes(r.price, 32),
      uintBytes(r.sequence, 8),
      bytes(r.requestDigest),
      bytes(r.responseDigest),
      bytes(r.signature),
      ...proof,
      new TextEncoder().encode(r.spec),
    ),
  )}`;
}

/** A receipt that does not decode. */
export class MalformedReceiptError extends Error {
  override name = "MalformedReceiptError";
}

/** Reads a `kr2.` or `kr1.` receipt. */
export function decodeReceipt(text: string): Receipt {
  const t = text.trim();
  const grouped = t.startsWith("kr2.");
  if (!grouped && !t.startsWith("kr1.")) throw new MalformedReceiptError("not a kr2. (or kr1.) receipt");
  let raw: Uint8Array;
  try {
    raw = fromBase64url(t.slice(4));
  } catch (e) {
    throw new MalformedReceiptError((e as Error).message);
  }
  if (raw.length < 209 + Number(grouped)) throw new MalformedReceiptError("a receipt is at least 209 bytes");
  if (![0, 1, 27, 28].includes(raw[208])) throw new MalformedReceiptError(`the signature's v is ${raw[208]}`);
  let proof: Hex[] | undefined;
  let at = 209;
  if (grouped) {
    const levels = raw[209];
    at = 210 + 32 * levels;
    if (levels > MAX_PROOF) throw new MalformedReceiptError(`a proof has at most ${MAX_PROOF} hashes, not ${levels}`);
    if (raw.length < at) throw new MalformedReceiptError("the receipt ends inside its proof");
    proof = Array.from({ length: levels }, (_, i) => hex(raw.slice(210 + 32 * i, 242 + 32 * i)));
  }
  let spec: string;
  try {
    spec = new TextDecoder("utf-8", { fatal: true }).decode(raw.slice(at));
  } catch {
    throw new MalformedReceiptError("the spec is not UTF-8");
  }
  return {
    provider: address(raw.slice(0, 20)),
    payer: address(raw.slice(20, 40)),
    price: readUint(raw.slice(40, 72)),
    sequence: readUint(raw.slice(72, 80)),
    requestDigest: hex(raw.slice(80, 112)),
    responseDigest: hex(raw.slice(112, 144)),
    signature: hex(raw.slice(144, 209)),
    spec,
    ...(proof && { proof }),
  };
}

/** Why a receipt does not verify. */
export class ReceiptError extends Error {
  override name = "ReceiptError";
}

/**
 * Checks a receipt against the call it came with: signed by `payee` (the provider's, from its resolver),
 * naming it, and covering exactly this request and this answer.
 */
export async function verifyReceipt(
  domain: TypedDataDomain,
  receipt: Receipt,
  expected: {
    payee: Address;
    request: { method: string; pathAndQuery: string; body: Body };
    response: { status: number; body: Body };
  },
): Promise<void> {
  const signer = await recoverAddress({ hash: receiptHash(domain, receipt), signature: receipt.signature });
  if (!isAddressEqual(receipt.provider, expected.payee)) {
    throw new ReceiptError(`the receipt names provider ${receipt.provider}, not the payee ${expected.payee}`);
  }
  if (!isAddressEqual(signer, expected.payee)) {
    throw new ReceiptError(`the receipt is signed by ${signer}, not by the provider's payee ${expected.payee}`);
  }
  const { request, response } = expected;
  const same = (a: Hex, b: Hex) => a.toLowerCase() === b.toLowerCase();
  if (!same(receipt.requestDigest, requestDigest(request.method, request.pathAndQuery, request.body))) {
    throw new ReceiptError("the receipt covers another request");
  }
  if (!same(receipt.responseDigest, responseDigest(response.status, response.body))) {
    throw new ReceiptError("the receipt covers another answer");
  }
}
