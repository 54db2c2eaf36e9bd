// The real x402 client pays a Khachapuri function: `@x402/fetch` with `@x402/evm`'s exact scheme and a viem
// account, as any x402 app would (docs/PROTOCOL.md §14). Run by agents/khachapuri-provider/tests/e2e.rs.
//
//   X402_URL=<function url> X402_KEY=<payer's hex key> X402_USDC=<token> X402_NETWORK=eip155:<id> node pay.mjs
//
// Prints one JSON line: the status, the body, and the decoded PAYMENT-RESPONSE.
import { wrapFetchWithPaymentFromConfig, decodePaymentResponseHeader } from "@x402/fetch";
import { ExactEvmScheme } from "@x402/evm";
import { privateKeyToAccount } from "viem/accounts";

const { X402_URL, X402_KEY, X402_USDC, X402_NETWORK } = process.env;
if (!X402_URL || !X402_KEY || !X402_USDC || !X402_NETWORK) {
  console.error("set X402_URL, X402_KEY, X402_USDC and X402_NETWORK");
  process.exit(2);
}
const account = privateKeyToAccount(X402_KEY);
const pay = wrapFetchWithPaymentFromConfig(fetch, {
  schemes: [{ network: X402_NETWORK, client: new ExactEvmScheme(account) }],
  // The dev chain's USDC is not a token the SDK knows: allowed here by address, as the SDK asks.
  spendControls: { allowedAssets: [{ network: X402_NETWORK, asset: X402_USDC }] },
});
const response = await pay(X402_URL, { method: "POST", body: "x402 client" });
const header = response.headers.get("PAYMENT-RESPONSE");
console.log(
  JSON.stringify({
    status: response.status,
    body: await response.text(),
    payer: account.address,
    paymentResponse: header ? decodePaymentResponseHeader(header) : null,
  }),
);
