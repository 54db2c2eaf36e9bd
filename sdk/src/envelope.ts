/**
 * The sealed spec envelope (docs/PROTOCOL.md §5) with WebCrypto, so a browser can seal a spec to a
 * provider's RSA key (its resolver's `rsaKey` record, SPKI DER), or to several, with no Rust: RSA-OAEP-SHA256
 * wraps a fresh AES-256-GCM key for each, and the header is the associated data.
 */
import { concatBytes, uintBytes } from "./bytes.js";

const MAGIC = new TextEncoder().encode("KPSE");
const subtle = () => globalThis.crypto.subtle;
const view = (b: Uint8Array): Uint8Array<ArrayBuffer> => new Uint8Array(b);

/** SHA-256 of the key's SPKI DER: the envelope's key id. */
export async function keyId(publicKeyDer: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await subtle().digest("SHA-256", view(publicKeyDer)));
}

/** The most recipients one envelope names. */
export const MAX_RECIPIENTS = 16;

/**
 * Encrypts `plaintext` (the spec's JSON) to the holder of `publicKeyDer`, or once to every holder of several
 * keys (version 2: any of them can open it).
 */
export async function sealEnvelope(publicKeyDer: Uint8Array | Uint8Array[], plaintext: Uint8Array): Promise<Uint8Array> {
  const keys = Array.isArray(publicKeyDer) ? publicKeyDer : [publicKeyDer];
  if (keys.length < 1 || keys.length > MAX_RECIPIENTS) {
    throw new Error(`an envelope has 1 to ${MAX_RECIPIENTS} recipients, not ${keys.length}`);
  }
  const contentKey = globalThis.crypto.getRandomValues(new Uint8Array(32));
  const parts: Uint8Array[] = [MAGIC, keys.length === 1 ? Uint8Array.of(1, 1) : Uint8Array.of(2, 1, keys.length)];
  const ids = new Set<string>();
  for (const der of keys) {
    const id = await keyId(der);
    const idHex = Array.from(id, (b) => b.toString(16).padStart(2, "0")).join("");
    if (ids.has(idHex)) throw new Error("a recipient is named twice");
    ids.add(idHex);
    const rsa = await subtle().importKey("spki", view(der), { name: "RSA-OAEP", hash: "SHA-256" }, false, ["encrypt"]);
    const wrapped = new Uint8Array(await subtle().encrypt({ name: "RSA-OAEP" }, rsa, contentKey));
    parts.push(id, uintBytes(BigInt(wrapped.length), 2), wrapped);
  }
  if (keys.length > 1) parts.push(await commitment(contentKey));
  const nonce = globalThis.crypto.getRandomValues(new Uint8Array(12));
  const header = concatBytes(...parts, nonce);
  const aes = await subtle().importKey("raw", contentKey, "AES-GCM", false, ["encrypt"]);
  const sealed = await subtle().encrypt({ name: "AES-GCM", iv: nonce, additionalData: view(header) }, aes, view(plaintext));
  return concatBytes(header, new Uint8Array(sealed));
}

/** Version 2's commitment to the content key: every recipient must unwrap the same key. */
async function commitment(contentKey: Uint8Array): Promise<Uint8Array> {
  const domain = new TextEncoder().encode("khachapuri envelope key");
  return new Uint8Array(await subtle().digest("SHA-256", view(concatBytes(domain, contentKey))));
}

/** Sealed to keys the opener does not hold (their ids are in the clear header). */
export class AnotherKeyError extends Error {
  override name = "AnotherKeyError";
}

/** The recipients (key id, wrapped key) an envelope lists, its key commitment, and where its header ends. */
function readHeader(envelope: Uint8Array, undecryptable: () => Error) {
  if (envelope.length < 8 || !MAGIC.every((b, i) => envelope[i] === b)) throw new Error("not an encrypted spec envelope");
  const version = envelope[4];
  if ((version !== 1 && version !== 2) || envelope[5] !== 1) {
    throw new Error(`envelope version ${version}, algorithm ${envelope[5]}: not supported`);
  }
  const count = version === 1 ? 1 : envelope[6];
  if (version === 2 && (count < 2 || count > MAX_RECIPIENTS)) throw undecryptable();
  let at = version === 1 ? 6 : 7;
  const recipients: { id: Uint8Array; wrapped: Uint8Array }[] = [];
  for (let i = 0; i < count; i++) {
    if (at + 34 > envelope.length) throw undecryptable();
    const length = (envelope[at + 32] << 8) | envelope[at + 33];
    recipients.push({ id: envelope.slice(at, at + 32), wrapped: envelope.slice(at + 34, at + 34 + length) });
    at += 34 + length;
  }
  let committed: Uint8Array | undefined;
  if (version === 2) {
    committed = envelope.slice(at, at + 32);
    at += 32;
  }
  const headerLength = at + 12;
  if (envelope.length < headerLength + 16) throw undecryptable();
  return { recipients, committed, headerLength };
}

/** Opens an envelope with a recipient's PKCS#8 private key (DER). */
export async function openEnvelope(privateKeyPkcs8: Uint8Array, envelope: Uint8Array): Promise<Uint8Array> {
  const undecryptable = () => new Error("the spec could not be decrypted with this key");
  const { recipients, committed, headerLength } = readHeader(envelope, undecryptable);
  const id = await keyId(await publicKeyOf(privateKeyPkcs8).catch(() => Promise.reject(new Error("not an RSA private key (PKCS#8 DER)"))));
  const mine = recipients.find((r) => r.id.every((b, i) => b === id[i]));
  if (!mine) {
    const ids = recipients.map((r) => Array.from(r.id, (b) => b.toString(16).padStart(2, "0")).join(""));
    throw new AnotherKeyError(`the spec is sealed to another RSA key (key id ${ids.join(", ")}), not this one`);
  }
  try {
    const rsa = await subtle().importKey("pkcs8", view(privateKeyPkcs8), { name: "RSA-OAEP", hash: "SHA-256" }, false, [
      "decrypt",
    ]);
    const contentKey = new Uint8Array(await subtle().decrypt({ name: "RSA-OAEP" }, rsa, view(mine.wrapped)));
    if (contentKey.byteLength !== 32) throw undecryptable();
    if (committed) {
      const actual = await commitment(contentKey);
      if (actual.some((b, i) => b !== committed[i])) throw undecryptable();
    }
    const aes = await subtle().importKey("raw", contentKey, "AES-GCM", false, ["decrypt"]);
    const plain = await subtle().decrypt(
      { name: "AES-GCM", iv: view(envelope.slice(headerLength - 12, headerLength)), additionalData: view(envelope.slice(0, headerLength)) },
      aes,
      view(envelope.slice(headerLength)),
    );
    return new Uint8Array(plain);
  } catch {
    throw undecryptable();
  }
}

/**
 * The SPKI DER of a PKCS#8 RSA private key's public half (what its key id hashes): the private key is
 * imported extractable only inside this function, to read its modulus and exponent.
 */
async function publicKeyOf(privateKeyPkcs8: Uint8Array): Promise<Uint8Array> {
  const rsa = await subtle().importKey("pkcs8", view(privateKeyPkcs8), { name: "RSA-OAEP", hash: "SHA-256" }, true, ["decrypt"]);
  const { n, e } = await subtle().exportKey("jwk", rsa);
  const pub = await subtle().importKey("jwk", { kty: "RSA", n, e, alg: "RSA-OAEP-256", ext: true }, { name: "RSA-OAEP", hash: "SHA-256" }, true, ["encrypt"]);
  return new Uint8Array(await subtle().exportKey("spki", pub));
}

/** The DER inside a PEM block (`-----BEGIN ...-----`). */
export function pemToDer(pem: string): Uint8Array {
  const body = pem.replace(/-----(BEGIN|END)[^-]+-----/g, "").replace(/\s+/g, "");
  return Uint8Array.from(atob(body), (c) => c.charCodeAt(0));
}
