/**
 * The escrow's EIP-712 domain and the structures signed in it (docs/PROTOCOL.md §6, §7, §4, §13):
 * `PayerToken`, `Receipt`, `ReceiptGroup`, `SpecTerms`, `LogsAccess`. Every signature this SDK makes or
 * checks is over one of these, with viem's `hashTypedData`.
 */
import type { Address } from "viem";

/** The escrow's domain name and version. */
export const DOMAIN_NAME = "Khachapuri";
export const DOMAIN_VERSION = "1";

/** The escrow's EIP-712 domain on `chainId` at `escrow`. */
export function escrowDomain(chainId: number | bigint, escrow: Address) {
  return { name: DOMAIN_NAME, version: DOMAIN_VERSION, chainId: BigInt(chainId), verifyingContract: escrow };
}

/** The escrow's domain, as `escrowDomain` makes it. */
export type EscrowDomain = ReturnType<typeof escrowDomain>;

export const types = {
  PayerToken: [
    { name: "provider", type: "address" },
    { name: "spec", type: "string" },
    { name: "maxPrice", type: "uint256" },
    { name: "expiry", type: "uint64" },
    { name: "session", type: "bytes32" },
  ],
  Receipt: [
    { name: "provider", type: "address" },
    { name: "payer", type: "address" },
    { name: "spec", type: "string" },
    { name: "price", type: "uint256" },
    { name: "sequence", type: "uint64" },
    { name: "requestDigest", type: "bytes32" },
    { name: "responseDigest", type: "bytes32" },
  ],
  ReceiptGroup: [{ name: "root", type: "bytes32" }],
  SpecTerms: [
    { name: "program", type: "string" },
    { name: "entry", type: "string" },
    { name: "envDigest", type: "bytes32" },
    { name: "provider", type: "string" },
    { name: "owner", type: "address" },
    { name: "maxPrice", type: "uint256" },
    { name: "memoryBytes", type: "uint64" },
    { name: "timeoutMs", type: "uint64" },
    { name: "outputBytes", type: "uint64" },
    { name: "termsDigest", type: "bytes32" },
    { name: "spendCap", type: "uint256" },
    { name: "spendPeriod", type: "uint64" },
  ],
  LogsAccess: [
    { name: "provider", type: "address" },
    { name: "spec", type: "string" },
    { name: "expiry", type: "uint64" },
  ],
} as const;
