// The SDK calls a live agent (run by agents/khachapuri-provider/tests/e2e.rs after `make test-sdk` built
// sdk/dist): a call paid with a payer token made by the SDK, its receipt verified against the provider's
// payee, and a refusal read as a typed reason with x402's offer.
//
//   SDK_URL=<function url> SDK_KEY=<payer's key> SDK_RPC=<rpc> SDK_DEPLOYMENT=<deployments/<id>.json> \
//   SDK_LABEL=<provider label> node call.mjs
import { readFileSync } from "node:fs";
import { createPublicClient, http } from "viem";
import { privateKeyToAccount } from "viem/accounts";

import { call, escrowDomain, keyId, parseUsdc, resolveProvider, verifyCall } from "../dist/src/index.js";

const { SDK_URL, SDK_KEY, SDK_RPC, SDK_DEPLOYMENT, SDK_LABEL } = process.env;
const deployment = JSON.parse(readFileSync(SDK_DEPLOYMENT, "utf8"));
const client = createPublicClient({ transport: http(SDK_RPC) });
// The payee comes from the chain: the Registry, then the label's resolver.
const record = await resolveProvider(client, deployment, SDK_LABEL);
const SDK_PAYEE = record.payee;
const domain = escrowDomain(BigInt(deployment.chainId), deployment.escrow);
const account = privateKeyToAccount(SDK_KEY);
const payer = { account, domain, provider: SDK_PAYEE, maxPrice: parseUsdc("0.05") };

const paid = await call(SDK_URL, { body: "sdk", payer });
await verifyCall(paid, domain, SDK_PAYEE);
let forged = "verified";
try {
  await verifyCall({ ...paid, body: new TextEncoder().encode("something else") }, domain, SDK_PAYEE);
} catch (e) {
  forged = e.message;
}
const refused = await call(SDK_URL, { body: "sdk", payer: { ...payer, maxPrice: 1n } });
let unknown = "";
try {
  await resolveProvider(client, deployment, "nobody-here");
} catch (e) {
  unknown = e.message;
}
console.log(
  JSON.stringify({
    status: paid.status,
    body: new TextDecoder().decode(paid.body),
    price: paid.price?.toString(),
    payer: paid.payer,
    receiptPayer: paid.receipt?.payer,
    forged,
    refused: { status: refused.status, code: refused.failure?.code, x402: refused.headers.has("payment-required") },
    record: { payee: record.payee, server: record.server, keyId: Buffer.from(await keyId(record.rsaKey)).toString("hex") },
    unknown,
  }),
);
