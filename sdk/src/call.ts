/**
 * Calling a function (docs/PROTOCOL.md §8, §9): like `fetch`, adding a payer token signed on the spot when
 * a payer is given, and reading what the provider answered: the price charged, the payer, the receipt,
 * and for a refusal its typed reason (with x402's offer on a 402).
 */
import type { Address, Hex, TypedDataDomain } from "viem";

import { PAYER_TOKEN_HEADER, signPayerToken } from "./payerToken.js";
import { type Signer } from "./signer.js";
import { RECEIPT_HEADER, decodeReceipt, verifyReceipt, type Receipt } from "./receipt.js";

/** The header a gateway adds to a routed call's answer (`{gateway}/{cid}`): the label that answered. */
export const PROVIDER_HEADER = "X-Khachapuri-Provider";
/** The header every provider answer carries: `yes` when the request was charged, `no` otherwise. */
export const CHARGED_HEADER = "X-Khachapuri-Charged";

/** Why a provider refused or failed a call (`error` in the protocol's error body, §9). */
export type FailureCode =
  | "not_approved"
  | "price_above_terms"
  | "insufficient_reserve"
  | "payer_frozen"
  | "settlement_refused"
  | "price_above_token"
  | "x402_payment_invalid"
  | "x402_payment_refused"
  | "spend_cap_reached"
  | "spec_revoked"
  | "program_trap"
  | "program_timeout"
  | (string & {});

/** The protocol's error body. */
export interface Failure {
  code: FailureCode;
  message: string;
  hint?: string;
}

/** Who pays a call with a payer token made for it. */
export interface Payer {
  /** Signs the token: a viem account, or a wallet client (its user is asked). */
  account: Signer;
  /** The escrow's domain (`escrowDomain(chainId, escrow)`). */
  domain: TypedDataDomain;
  /** The provider's payee address (its resolver's `payee`). */
  provider: Address;
  /** The most the call may cost, base units. */
  maxPrice: bigint;
  /** How long the token stays valid, seconds (default 300). */
  lifetime?: number;
}

export interface CallResult {
  status: number;
  headers: Headers;
  body: Uint8Array;
  /** The price charged, base units, as the receipt states it. */
  price?: bigint;
  /** Who was charged, as the receipt states it. */
  payer?: Address;
  /** The provider's receipt, when the call was charged. */
  receipt?: Receipt;
  /** Why a receipt header did not decode, when one did not. */
  receiptError?: string;
  /** Why it failed, when it did (the body is the protocol's error body). */
  failure?: Failure;
  /** The request as the provider digests it, for `verifyCall`. */
  request: { method: string; pathAndQuery: string; body: Uint8Array };
}

/** The spec CID in a function URL: the first path segment that looks like a CID (`bafy…`, `Qm…`). */
export function specOf(url: URL): string {
  const segment = url.pathname.split("/").find((s) => /^(baf[a-z2-7]{50,}|Qm[1-9A-HJ-NP-Za-km-z]{44})$/.test(s));
  if (!segment) throw new Error(`${url} names no spec CID: write {gateway}/{label}/{cid}, as deploy printed it`);
  return segment;
}

/** Calls the function at `url`; with `payer`, pays with a payer token signed here for this spec. */
export async function call(
  url: string | URL,
  init: { method?: string; body?: string | Uint8Array; headers?: Record<string, string>; payer?: Payer } = {},
): Promise<CallResult> {
  const target = new URL(url);
  const method = init.method ?? (init.body === undefined ? "GET" : "POST");
  if ((method === "GET" || method === "HEAD") && init.body !== undefined) {
    throw new Error(`a ${method} request has no body: use POST (or leave the body out)`);
  }
  const body = typeof init.body === "string" ? new TextEncoder().encode(init.body) : (init.body ?? new Uint8Array());
  const headers = new Headers(init.headers);
  if (init.payer) {
    const p = init.payer;
    const token = await signPayerToken(p.account, p.domain, {
      provider: p.provider,
      spec: specOf(target),
      maxPrice: p.maxPrice,
      expiry: BigInt(Math.floor(Date.now() / 1000) + (p.lifetime ?? 300)),
      session: randomSession(),
    });
    headers.set(PAYER_TOKEN_HEADER, token);
  }
  const response = await fetch(target, {
    method,
    headers,
    body: method === "GET" || method === "HEAD" ? undefined : new Uint8Array(body),
  });
  const answer = new Uint8Array(await response.arrayBuffer());
  // The receipt is what the provider signed: price and payer come from it when there is one. A receipt
  // that does not decode leaves them out, and says why, without losing the (maybe charged) answer.
  let receipt: Receipt | undefined;
  let receiptError: string | undefined;
  const header = response.headers.get(RECEIPT_HEADER);
  if (header) {
    try {
      receipt = decodeReceipt(header);
    } catch (e) {
      receiptError = (e as Error).message;
    }
  }
  const result: CallResult = {
    status: response.status,
    headers: response.headers,
    body: answer,
    price: receipt?.price,
    payer: receipt?.payer,
    receipt,
    receiptError,
    request: { method, pathAndQuery: `${target.pathname}${target.search}`, body },
  };
  if (!response.ok) result.failure = failure(answer, response.status);
  return result;
}

/** The protocol's error body, or the status when the body is not one. */
function failure(body: Uint8Array, status: number): Failure {
  try {
    const json = JSON.parse(new TextDecoder().decode(body)) as { error?: string; message?: string; hint?: string };
    if (json.error && json.message) return { code: json.error, message: json.message, hint: json.hint };
  } catch {
    // not the protocol's body
  }
  return { code: `http_${status}`, message: `HTTP ${status}` };
}

/**
 * Verifies a charged call's receipt: signed by `payee`, over this request and this answer. Through a gateway
 * in path mode the provider saw the path without `/{label}`: pass `prefix` (e.g. `/alice`) to strip it.
 */
export async function verifyCall(
  result: CallResult,
  domain: TypedDataDomain,
  payee: Address,
  prefix = "",
): Promise<void> {
  if (!result.receipt) throw new Error("the call carries no receipt (it was not charged)");
  const { method, pathAndQuery, body } = result.request;
  const seen = prefix && pathAndQuery.startsWith(`${prefix}/`) ? pathAndQuery.slice(prefix.length) : pathAndQuery;
  await verifyReceipt(domain, result.receipt, {
    payee,
    request: { method, pathAndQuery: seen, body },
    response: { status: result.status, body: result.body },
  });
}

function randomSession(): Hex {
  const bytes = globalThis.crypto.getRandomValues(new Uint8Array(32));
  return `0x${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}
