// Conformance: every format of this SDK against test/vectors/protocol.json, the file the Rust side makes
// (agents/khachapuri-provider/tests/vectors.rs) and Solidity recomputes (test/Vectors.t.sol). The SDK must
// produce the same bytes from the same inputs and keys, and read what the file holds.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { hashDomain, keccak256, type Hex } from "viem";
import { privateKeyToAccount } from "viem/accounts";

import {
  decodePayerToken,
  decodeReceipt,
  encodeReceipt,
  MalformedReceiptError,
  merkleTree,
  processProof,
  receiptLeaf,
  signReceipts,
  envDigest,
  escrowDomain,
  formatUsdc,
  keyId,
  MalformedTokenError,
  AnotherKeyError,
  openEnvelope,
  openProgram,
  parseUsdc,
  payerTokenHash,
  pemToDer,
  receiptHash,
  recoverPayer,
  requestDigest,
  responseDigest,
  sealEnvelope,
  sealProgram,
  signLogsAccess,
  signPayerToken,
  signReceipt,
  specTermsHash,
  termsDigest,
  types,
  verifyReceipt,
  verifySpec,
  type Spec,
} from "../src/index.js";
import { bytes, hex } from "../src/bytes.js";

const v = JSON.parse(readFileSync(new URL("../../../test/vectors/protocol.json", import.meta.url), "utf8"));
const domain = escrowDomain(v.domain.chainId, v.domain.verifyingContract);

test("the escrow's domain and every type hash are the protocol's", () => {
  assert.equal(hashDomain({ domain, types: { EIP712Domain: [
    { name: "name", type: "string" },
    { name: "version", type: "string" },
    { name: "chainId", type: "uint256" },
    { name: "verifyingContract", type: "address" },
  ] } }), v.domain.separator);
  for (const [name, fields] of Object.entries(types)) {
    const encoded = `${name}(${fields.map((f) => `${f.type} ${f.name}`).join(",")})`;
    assert.equal(keccak256(new TextEncoder().encode(encoded)), v.typeHashes[name], name);
  }
});

test("a payer token is the same bytes as the Rust CLI's, and reads back", async () => {
  const t = v.payerToken;
  const fields = {
    provider: t.provider,
    spec: t.spec,
    maxPrice: BigInt(t.maxPrice),
    expiry: BigInt(t.expiry),
    session: t.session as Hex,
  };
  assert.equal(payerTokenHash(domain, fields), t.signingHash);
  const encoded = await signPayerToken(privateKeyToAccount(t.signerKey), domain, fields);
  assert.equal(encoded, t.encoded);
  const decoded = decodePayerToken(`Bearer ${t.encoded}`);
  assert.deepEqual({ ...decoded }, { ...fields, payer: t.payer, signature: t.signature });
  assert.equal(await recoverPayer(domain, decoded), t.payer);
  // Altered after signing: refused as not the named payer's.
  await assert.rejects(recoverPayer(domain, { ...decoded, maxPrice: 10_000_000n }), /not signed by the payer/);
  for (const bad of ["", "kp3.AAAA", "kp2.AAAA", "kp2.!!!", "kp1.AAAA"]) {
    assert.throws(() => decodePayerToken(bad), MalformedTokenError, bad);
  }
});

test("a receipt has the protocol's digests and bytes, and verifies against its call", async () => {
  const r = v.receipt;
  const request = r.request;
  assert.equal(requestDigest(request.method, request.pathAndQuery, request.body), r.requestDigest);
  assert.equal(responseDigest(r.response.status, r.response.body), r.responseDigest);
  const fields = {
    provider: r.provider,
    payer: r.payer,
    spec: r.spec,
    price: BigInt(r.price),
    sequence: BigInt(r.sequence),
    requestDigest: r.requestDigest as Hex,
    responseDigest: r.responseDigest as Hex,
  };
  assert.equal(receiptHash(domain, { ...fields, signature: "0x" }), r.signingHash);
  // kr1 (signed alone, before groups) still decodes, re-encodes to the same bytes and verifies.
  const decoded = decodeReceipt(r.encoded);
  assert.equal(decoded.signature, r.signature);
  assert.equal(decoded.proof, undefined);
  assert.equal(encodeReceipt(decoded), r.encoded);
  const call = { payee: r.provider, request, response: r.response };
  await verifyReceipt(domain, decoded, call);
  await assert.rejects(verifyReceipt(domain, decoded, { ...call, payee: r.payer }), /not the payee/);
  await assert.rejects(
    verifyReceipt(domain, decoded, { ...call, response: { ...r.response, body: "Gaumarjos, HI!\n" } }),
    /another answer/,
  );
});

test("a group's receipts share one signature over their root, and each verifies against its call", async () => {
  const r = v.receipt;
  const g = v.receiptGroup;
  const fields = (sequence: bigint) => ({
    provider: r.provider,
    payer: r.payer,
    spec: r.spec,
    price: BigInt(r.price),
    sequence,
    requestDigest: r.requestDigest as Hex,
    responseDigest: r.responseDigest as Hex,
  });
  const signed = await signReceipts(
    privateKeyToAccount(r.signerKey),
    domain,
    g.receipts.map((x: { sequence: number }) => fields(BigInt(x.sequence))),
  );
  assert.deepEqual(signed, g.receipts.map((x: { encoded: string }) => x.encoded), "the same bytes as Rust");
  const call = { payee: r.provider, request: r.request, response: r.response };
  for (const [i, x] of g.receipts.entries()) {
    const decoded = decodeReceipt(x.encoded);
    assert.equal(receiptLeaf(decoded), x.leaf);
    assert.deepEqual(decoded.proof, x.proof);
    assert.equal(processProof(x.leaf, x.proof), g.root);
    assert.equal(receiptHash(domain, decoded), g.signingHash);
    await verifyReceipt(domain, decoded, call);
    // Another receipt's proof, or a changed field, leads to another root: not the provider's signature.
    const other = g.receipts[(i + 1) % g.receipts.length].proof;
    await assert.rejects(verifyReceipt(domain, { ...decoded, proof: other }, call), /not by the provider's payee/);
    await assert.rejects(verifyReceipt(domain, { ...decoded, price: 1n }, call), /not by the provider's payee/);
  }
  const alone = decodeReceipt(await signReceipt(privateKeyToAccount(r.signerKey), domain, fields(7n)));
  assert.deepEqual(alone.proof, []);
  await verifyReceipt(domain, alone, call);
  const { root, proofs } = merkleTree(g.receipts.map((x: { leaf: Hex }) => x.leaf));
  assert.equal(root, g.root);
  assert.deepEqual(proofs, g.receipts.map((x: { proof: Hex[] }) => x.proof));
  for (const bad of ["kr3.AAAA", "kr2.AAAA", `${g.receipts[0].encoded.slice(0, 300)}`]) {
    assert.throws(() => decodeReceipt(bad), MalformedReceiptError, bad);
  }
});

test("a spec's terms hash and its owner's signature are the protocol's", async () => {
  const s = v.spec;
  const spec: Spec = JSON.parse(s.json);
  assert.equal(envDigest(spec.env), s.envDigest);
  assert.equal(termsDigest(spec.terms), s.termsDigest);
  assert.equal(specTermsHash(spec), s.signingHash);
  assert.equal(await verifySpec(spec), true);
  const signature = await privateKeyToAccount(s.signerKey).sign({ hash: specTermsHash(spec) });
  assert.equal(signature, s.signature);
  assert.equal(await verifySpec({ ...spec, spendCap: undefined }), false, "the cap is signed");
  assert.equal(await verifySpec({ ...spec, maxPrice: "1" }), false);
});

test("the canonical environment sorts keys by UTF-8 bytes and escapes as serde_json does", () => {
  assert.equal(envDigest({ B: "2", A: "1" }), envDigest({ A: "1", B: "2" }));
  assert.equal(envDigest(), keccak256(new TextEncoder().encode("{}")));
});

test("a logs grant is the same bytes as the Rust CLI's", async () => {
  const g = v.logsAccess;
  const encoded = await signLogsAccess(privateKeyToAccount(g.signerKey), domain, {
    provider: g.provider,
    spec: g.spec,
    expiry: BigInt(g.expiry),
  });
  assert.equal(encoded, g.encoded);
});

test("the sealed envelope opens with WebCrypto, and what WebCrypto seals opens too", async () => {
  const e = v.envelope;
  const privateKey = pemToDer(e.privateKeyPem);
  const opened = await openEnvelope(privateKey, bytes(e.sealed));
  assert.equal(new TextDecoder().decode(opened), e.plaintext);
  const publicKey = bytes(e.publicKeyDer);
  assert.equal(hex(await keyId(publicKey)), e.keyId);
  const sealed = await sealEnvelope(publicKey, new TextEncoder().encode("{\"from\":\"a browser\"}"));
  assert.equal(hex(sealed.slice(6, 38)), e.keyId, "the header names the recipient's key");
  assert.equal(new TextDecoder().decode(await openEnvelope(privateKey, sealed)), "{\"from\":\"a browser\"}");
  const tampered = sealed.slice();
  tampered[tampered.length - 1] ^= 1;
  await assert.rejects(openEnvelope(privateKey, tampered), /could not be decrypted/);
});

test("an envelope for two opens with either key, and what WebCrypto seals for two opens too", async () => {
  const e = v.envelopeToTwo;
  const [alice, bob] = e.recipients.map((r: { privateKeyPem: string; publicKeyDer: `0x${string}` }) => ({
    secret: pemToDer(r.privateKeyPem),
    public: bytes(r.publicKeyDer),
  }));
  const sealedByRust = bytes(e.sealed);
  for (const [i, r] of [alice, bob].entries()) {
    assert.equal(new TextDecoder().decode(await openEnvelope(r.secret, sealedByRust)), e.plaintext);
    // The key id is SHA-256 of the SPKI DER, and the header lists the recipients' ids in order.
    assert.equal(hex(await keyId(r.public)), e.recipients[i].keyId);
    const at = 7 + i * (32 + 2 + 384); // 3072-bit keys: 384-byte wrapped keys
    assert.equal(hex(sealedByRust.slice(at, at + 32)), e.recipients[i].keyId);
  }
  const sealed = await sealEnvelope([alice.public, bob.public], new TextEncoder().encode("for two"));
  assert.deepEqual(Array.from(sealed.slice(4, 7)), [2, 1, 2], "version 2, two recipients");
  for (const r of [alice, bob]) assert.equal(new TextDecoder().decode(await openEnvelope(r.secret, sealed)), "for two");
  // Sealed to alice alone: bob is no recipient.
  const aliceOnly = await sealEnvelope(alice.public, new TextEncoder().encode("for alice"));
  await assert.rejects(openEnvelope(bob.secret, aliceOnly), (err: unknown) => err instanceof AnotherKeyError && /sealed to another RSA key/.test((err as Error).message));
  await assert.rejects(sealEnvelope([alice.public, alice.public], new Uint8Array()), /named twice/);
});

test("a private program opens with WebCrypto, and what WebCrypto seals opens too", async () => {
  const p = v.privateProgram;
  const key = bytes(p.key);
  const plaintext = new TextEncoder().encode(p.plaintext);
  assert.deepEqual(await openProgram(key, bytes(p.sealed)), plaintext);
  const sealed = await sealProgram(key, plaintext, p.chunkLog2);
  assert.equal(sealed.length, bytes(p.sealed).length, "the same layout");
  assert.deepEqual(await openProgram(key, sealed), plaintext);
  await assert.rejects(openProgram(key, sealed.slice(0, 14 + 2 * (1024 + 16))), /does not authenticate/);
  await assert.rejects(openProgram(new Uint8Array(32), sealed), /chunk 0/);
});

test("USDC amounts read and write as the CLI's", () => {
  assert.equal(parseUsdc("0.30"), 300_000n);
  assert.equal(parseUsdc("1 USDC"), 1_000_000n);
  assert.equal(parseUsdc("0.000001"), 1n);
  assert.equal(formatUsdc(300_000n), "0.30 USDC");
  assert.equal(formatUsdc(1n), "0.000001 USDC");
  assert.equal(formatUsdc(12_000_000n), "12.00 USDC");
  assert.throws(() => parseUsdc("0.0000001"), /more than 6 decimals/);
  assert.throws(() => parseUsdc("-1"), /negative/);
  assert.throws(() => parseUsdc("1e3"), /not an amount/);
});

test("malformed tokens and receipts are refused with typed errors", async () => {
  const { MalformedReceiptError, base64url, fromBase64url, call } = await import("../src/index.js");
  // A token whose signature's v is not 27 or 28.
  const raw = fromBase64url(v.payerToken.encoded.slice(4));
  raw[20 + 156] = 5;
  assert.throws(() => decodePayerToken(`kp2.${base64url(raw)}`), /v is 5/);
  for (const bad of ["kr2.AAAA", "kr1.!!", "kr1.AAAA"]) {
    assert.throws(() => decodeReceipt(bad), MalformedReceiptError, bad);
  }
  // Padding and non-zero trailing bits are not base64url.
  assert.throws(() => fromBase64url("AA=="));
  assert.throws(() => fromBase64url("AB"));
  await assert.rejects(call("http://127.0.0.1:9/x", { method: "GET", body: "x" }), /has no body/);
});
