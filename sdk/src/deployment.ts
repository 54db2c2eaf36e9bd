/**
 * `deployments/<chainId>.json` (docs/PROTOCOL.md §3): where the contracts of one chain are, as
 * `script/Deploy.s.sol` (or `khachapuri dev`) writes it. `parseDeployment` reads one from JSON and refuses
 * a file that lacks an address, so that nothing is ever sent to a missing or malformed one.
 */
import { getAddress, isAddress } from "viem";

import type { Deployment } from "./escrow.js";

/** Reads a deployments file's JSON (`JSON.parse` of it); `where` names it in errors. */
export function parseDeployment(json: unknown, where = "the deployments file"): Deployment {
  if (typeof json !== "object" || json === null) throw new Error(`${where} is not a JSON object`);
  const o = json as Record<string, unknown>;
  const integer = (key: string, optional = false): number => {
    const v = o[key];
    if (v === undefined && optional) return 0;
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
      throw new Error(`${where}: \`${key}\` is ${JSON.stringify(v)}, not a whole number`);
    }
    return v;
  };
  const address = (key: string) => {
    const v = o[key];
    if (typeof v !== "string" || !isAddress(v, { strict: false })) {
      throw new Error(`${where}: \`${key}\` is ${JSON.stringify(v)}, not an address (deploy the contracts again?)`);
    }
    return getAddress(v);
  };
  return {
    chainId: integer("chainId"),
    deploymentBlock: integer("deploymentBlock", true),
    escrow: address("escrow"),
    registry: address("registry"),
    resolverFactory: address("resolverFactory"),
    usdc: address("usdc"),
    testToken: o.testToken === true,
    withdrawalDelay: integer("withdrawalDelay", true),
  };
}
