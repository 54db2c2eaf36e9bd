/**
 * Resolving a provider's label (docs/PROTOCOL.md §2 Registry, Resolver): the Registry maps
 * `keccak256(label)` to the provider's resolver, whose `records()` name its payee (who signs receipts and
 * whom payer tokens name), its server, and its RSA key (what a spec is sealed to).
 */
import { keccak256, parseAbi, zeroAddress, type Address, type Hex, type PublicClient } from "viem";

import type { Deployment } from "./escrow.js";
import { bytes } from "./bytes.js";

const registryAbi = parseAbi(["function resolver(bytes32 node) view returns (address)"]);
const resolverAbi = parseAbi([
  "function records() view returns (address payee, string server, bytes publicKeyDer, uint64 keyVersion)",
]);

/** A provider as its resolver describes it. */
export interface ProviderRecord {
  label: string;
  resolver: Address;
  /** Signs receipts; payer tokens and logs grants name it. */
  payee: Address;
  /** Its base URL, or `tunnel:` for a provider behind a gateway's tunnel. */
  server: string;
  /** Its RSA public key, SPKI DER: what `sealEnvelope` seals a spec to. */
  rsaKey: Uint8Array;
  keyVersion: bigint;
}

/** The Registry's key of a label. */
export const labelHash = (label: string): Hex => keccak256(new TextEncoder().encode(label));

/** Reads `label`'s records; an unregistered label is an error that says so. */
export async function resolveProvider(
  client: PublicClient,
  deployment: Deployment,
  label: string,
): Promise<ProviderRecord> {
  const resolver = await client.readContract({
    address: deployment.registry,
    abi: registryAbi,
    functionName: "resolver",
    args: [labelHash(label)],
  });
  if (resolver === zeroAddress) {
    throw new Error(`provider \`${label}\` is not registered on chain ${deployment.chainId}`);
  }
  const [payee, server, publicKeyDer, keyVersion] = await client.readContract({
    address: resolver,
    abi: resolverAbi,
    functionName: "records",
  });
  // A zero payee is no provider's, and a payer token made out to it reads as one for any provider.
  if (payee === zeroAddress) {
    throw new Error(`the resolver of \`${label}\` (${resolver}) names no payee: not a usable provider`);
  }
  return { label, resolver, payee, server, rsaKey: bytes(publicKeyDer), keyVersion };
}
