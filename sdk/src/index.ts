/**
 * `@khachapuri/sdk`: Khachapuri's wire formats for dApps, on viem (docs/PROTOCOL.md). Amounts are bigint
 * USDC base units; every signature is EIP-712 through any viem account; sealing uses WebCrypto, so it runs
 * in a browser. Conformance: test/vectors.test.ts checks every format against test/vectors/protocol.json,
 * which the Rust side and Solidity check too.
 */
export * from "./usdc.js";
export * from "./eip712.js";
export * from "./payerToken.js";
export * from "./receipt.js";
export * from "./spec.js";
export * from "./logsAccess.js";
export * from "./envelope.js";
export * from "./program.js";
export { base64url, fromBase64url } from "./bytes.js";
export * from "./escrow.js";
export * from "./deployment.js";
export * from "./call.js";
export * from "./registry.js";
export * from "./signer.js";
export * from "./deploy.js";
