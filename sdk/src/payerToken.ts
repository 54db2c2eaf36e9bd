/**
 * The payer token `kp2.` (docs/PROTOCOL.md §6): a payer's consent that one provider may charge it, per
 * request, at most `maxPrice`, until `expiry`, for one spec (or any, `""`). Signed in the escrow's domain;
 * the same bytes the Rust CLI makes for the same key and fields.
 */
import {
  hashTypedData,
  isAddressEqual,
  recoverAddress,
  type Address,
  type Hex,
  type TypedDataDomain,
} from "viem";

import { address, base64url, bytes, concatBytes, fromBase64url, hex, readUint, uintBytes } from "./bytes.js";
import { types } from "./eip712.js";
import { signTyped, signerAddress, type Signer } from "./signer.js";

/** The header that carries a token. */
export const PAYER_TOKEN_HEADER = "X-Khachapuri-Payer-Token";

/**
 * A token's `provider` for any provider: for calls a gateway routes (`{gateway}/{cid}`). Whoever holds such a
 * token can spend it at every provider the payer reserved with (or that granted it credits), within those
 * terms, until it expires: limit it to one spec and a short lifetime.
 */
export const ANY_PROVIDER: Address = "0x0000000000000000000000000000000000000000";

export interface PayerTokenFields {
  /** The provider's payee address, or {@link ANY_PROVIDER}. */
  provider: Address;
  /** The spec's CID (canonical), or `""` for any spec of that provider. */
  spec: string;
  /** The most per request, USDC base units. */
  maxPrice: bigint;
  /** Unix seconds. */
  expiry: bigint;
  /** 32 bytes telling tokens apart. */
  session: Hex;
}

export interface PayerToken extends PayerTokenFields {
  /** The payer the token names (`kp2.`); `undefined` for a `kp1.` token, which names nobody. */
  payer: Address | undefined;
  signature: Hex;
}

/** A token that does not decode. */
export class MalformedTokenError extends Error {
  override name = "MalformedTokenError";
}

const message = (t: PayerTokenFields) => ({
  provider: t.provider,
  spec: t.spec,
  maxPrice: t.maxPrice,
  expiry: t.expiry,
  session: t.session,
});

/** The EIP-712 digest a token's signature is over. */
export function payerTokenHash(domain: TypedDataDomain, fields: PayerTokenFields): Hex {
  return hashTypedData({ domain, types, primaryType: "PayerToken", message: message(fields) });
}

/** Signs a token as `signer` (a viem local account, or a wallet client whose user agrees). */
export async function signPayerToken(
  signer: Signer,
  domain: TypedDataDomain,
  fields: PayerTokenFields,
): Promise<string> {
  const signature = await signTyped(signer, { domain, types, primaryType: "PayerToken", message: message(fields) });
  return encodePayerToken({ ...fields, payer: signerAddress(signer), signature });
}

/** `kp2.` + base64url(payer ‖ provider ‖ maxPrice ‖ expiry ‖ session ‖ signature ‖ spec). */
export function encodePayerToken(token: PayerToken): string {
  if (!token.payer) throw new Error("a kp2. token names its payer");
  if (bytes(token.session).length !== 32) throw new Error("the session is 32 bytes");
  if (bytes(token.signature).length !== 65) throw new Error("the signature is 65 bytes, r ‖ s ‖ v");
  const body = concatBytes(
    bytes(token.payer),
    bytes(token.provider),
    uintBytes(token.maxPrice, 32),
    uintBytes(token.expiry, 8),
    bytes(token.session),
    bytes(token.signature),
    new TextEncoder().encode(token.spec),
  );
  return `kp2.${base64url(body)}`;
}

/** Reads a `kp2.` (or the first format, `kp1.`) token; a leading `Bearer ` is dropped. */
export function decodePayerToken(text: string): PayerToken {
  let t = text.trim();
  if (t.startsWith("Bearer ")) t = t.slice(7).trim();
  const named = t.startsWith("kp2.");
  if (!named && !t.startsWith("kp1.")) throw new MalformedTokenError("not a kp2. (or kp1.) payer token");
  let raw: Uint8Array;
  try {
    raw = fromBase64url(t.slice(4));
  } catch (e) {
    throw new MalformedTokenError(`not base64url: ${(e as Error).message}`);
  }
  const at = named ? 20 : 0;
  if (raw.length < at + 157) throw new MalformedTokenError("too short");
  let spec: string;
  try {
    spec = new TextDecoder("utf-8", { fatal: true }).decode(raw.slice(at + 157));
  } catch {
    throw new MalformedTokenError("the spec is not UTF-8");
  }
  const v = raw[at + 156];
  if (![0, 1, 27, 28].includes(v)) throw new MalformedTokenError(`the signature's v is ${v}, not 27 or 28`);
  return {
    payer: named ? address(raw.slice(0, 20)) : undefined,
    provider: address(raw.slice(at, at + 20)),
    maxPrice: readUint(raw.slice(at + 20, at + 52)),
    expiry: readUint(raw.slice(at + 52, at + 60)),
    session: hex(raw.slice(at + 60, at + 92)),
    signature: hex(raw.slice(at + 92, at + 157)),
    spec,
  };
}

/** Who signed `token`; for a `kp2.` token it must be the payer it names, else this throws. */
export async function recoverPayer(domain: TypedDataDomain, token: PayerToken): Promise<Address> {
  const signer = await recoverAddress({ hash: payerTokenHash(domain, token), signature: token.signature });
  if (token.payer && !isAddressEqual(signer, token.payer)) {
    throw new Error(`the token is not signed by the payer it names, ${token.payer}`);
  }
  return signer;
}
