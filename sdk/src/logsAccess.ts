/**
 * The logs grant `kl1.` (docs/PROTOCOL.md §13): the spec's owner lets itself read a provider's logs of the
 * spec until `expiry` (at most an hour ahead). Sent in `X-Khachapuri-Logs-Access`.
 */
import type { Address, TypedDataDomain } from "viem";

import { base64url, bytes, concatBytes, uintBytes } from "./bytes.js";
import { types } from "./eip712.js";
import { signTyped, type Signer } from "./signer.js";

export const LOGS_ACCESS_HEADER = "X-Khachapuri-Logs-Access";

/** Signs a grant as the spec's owner: `kl1.` + base64url(expiry ‖ signature). */
export async function signLogsAccess(
  owner: Signer,
  domain: TypedDataDomain,
  grant: { provider: Address; spec: string; expiry: bigint },
): Promise<string> {
  const signature = await signTyped(owner, { domain, types, primaryType: "LogsAccess", message: grant });
  return `kl1.${base64url(concatBytes(uintBytes(grant.expiry, 8), bytes(signature)))}`;
}
