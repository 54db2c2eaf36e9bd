// The SDK calls a live agent (run by agents/khachapuri-provider/tests/e2e.rs after `make test-sdk` built
// sdk/dist): a call paid with a payer token made by the SDK, its receipt verified against the provider's
// payee, and a refusal read as a typed reason with x402's offer.
//
//   SDK_URL=<function url> SDK_KEY=<payer's key> SDK_CHAIN_ID=<id> SDK_ESCROW=<address> SDK_PAYEE=<address> node call.mjs
import { privateKeyToAccount } from "viem/accounts";

import { call, escrowDomain, parseUsdc, verifyCall } from "../dist/src/index.js";

const { SDK_URL, SDK_KEY, SDK_CHAIN_ID, SDK_ESCROW, SDK_PAYEE } = process.env;
const domain = escrowDomain(BigInt(SDK_CHAIN_ID), SDK_ESCROW);
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
console.log(
  JSON.stringify({
    status: paid.status,
    body: new TextDecoder().decode(paid.body),
    price: paid.price?.toString(),
    payer: paid.payer,
    receiptPayer: paid.receipt?.payer,
    forged,
    refused: { status: refused.status, code: refused.failure?.code, x402: refused.headers.has("payment-required") },
  }),
);
