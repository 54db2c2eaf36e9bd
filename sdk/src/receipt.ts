/**
 * The receipt `kr1.` (docs/PROTOCOL.md §7): what a provider signs for every charged answer. Decode it,
 * recompute both digests from your request and the answer you got, and check that its signer is the
 * provider's payee (from its resolver).
 */
import {
  encodeAbiParameters,
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
}

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

/** The EIP-712 digest a receipt's signature is over. */
export function receiptHash(domain: TypedDataDomain, receipt: Receipt): Hex {
  return hashTypedData({ domain, types, primaryType: "Receipt", message: message(receipt) });
}

/** Signs a receipt as a provider's payee (what an agent does; for tests and other providers). */
export async function signReceipt(
  signer: Signer,
  domain: TypedDataDomain,
  receipt: Omit<Receipt, "signature">,
): Promise<string> {
  const signature = await signTyped(signer, {
    domain,
    types,
    primaryType: "Receipt",
    message: message({ ...receipt, signature: "0x" }),
  });
  return encodeReceipt({ ...receipt, signature });
}

/** `kr1.` + base64url(provider ‖ payer ‖ price ‖ sequence ‖ requestDigest ‖ responseDigest ‖ signature ‖ spec). */
export function encodeReceipt(r: Receipt): string {
  if (bytes(r.signature).length !== 65) throw new Error("the signature is 65 bytes, r ‖ s ‖ v");
  return `kr1.${base64url(
    concatBytes(
      bytes(r.provider),
      bytes(r.payer),
      uintBytes(r.price, 32),
      uintBytes(r.sequence, 8),
      bytes(r.requestDigest),
      bytes(r.responseDigest),
      bytes(r.signature),
      new TextEncoder().encode(r.spec),
    ),
  )}`;
}

/** A receipt that does not decode. */
export class MalformedReceiptError extends Error {
  override name = "MalformedReceiptError";
}

/** Reads a `kr1.` receipt. */
export function decodeReceipt(text: string): Receipt {
  const t = text.trim();
  if (!t.startsWith("kr1.")) throw new MalformedReceiptError("not a kr1. receipt");
  let raw: Uint8Array;
  try {
    raw = fromBase64url(t.slice(4));
  } catch (e) {
    throw new MalformedReceiptError((e as Error).message);
  }
  if (raw.length < 209) throw new MalformedReceiptError("a kr1. receipt is at least 209 bytes");
  if (![0, 1, 27, 28].includes(raw[208])) throw new MalformedReceiptError(`the signature's v is ${raw[208]}`);
  let spec: string;
  try {
    spec = new TextDecoder("utf-8", { fatal: true }).decode(raw.slice(209));
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
