/**
 * The sealed spec envelope (docs/PROTOCOL.md §5) with WebCrypto, so a browser can seal a spec to a
 * provider's RSA key (its resolver's `rsaKey` record, SPKI DER) with no Rust: RSA-OAEP-SHA256 wraps a fresh
 * AES-256-GCM key, and the header is the associated data.
 */
import { concatBytes, uintBytes } from "./bytes.js";

const MAGIC = new TextEncoder().encode("KPSE");
const subtle = () => globalThis.crypto.subtle;
const view = (b: Uint8Array): Uint8Array<ArrayBuffer> => new Uint8Array(b);

/** SHA-256 of the key's SPKI DER: the envelope's key id. */
export async function keyId(publicKeyDer: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await subtle().digest("SHA-256", view(publicKeyDer)));
}

/** Encrypts `plaintext` (the spec's JSON) to the holder of `publicKeyDer`. */
export async function sealEnvelope(publicKeyDer: Uint8Array, plaintext: Uint8Array): Promise<Uint8Array> {
  const rsa = await subtle().importKey("spki", view(publicKeyDer), { name: "RSA-OAEP", hash: "SHA-256" }, false, [
    "encrypt",
  ]);
  const contentKey = globalThis.crypto.getRandomValues(new Uint8Array(32));
  const wrapped = new Uint8Array(await subtle().encrypt({ name: "RSA-OAEP" }, rsa, contentKey));
  const nonce = globalThis.crypto.getRandomValues(new Uint8Array(12));
  const header = concatBytes(
    MAGIC,
    Uint8Array.of(1, 1),
    await keyId(publicKeyDer),
    uintBytes(BigInt(wrapped.length), 2),
    wrapped,
    nonce,
  );
  const aes = await subtle().importKey("raw", contentKey, "AES-GCM", false, ["encrypt"]);
  const sealed = await subtle().encrypt({ name: "AES-GCM", iv: nonce, additionalData: view(header) }, aes, view(plaintext));
  return concatBytes(header, new Uint8Array(sealed));
}

/** Opens an envelope with the recipient's PKCS#8 private key (DER). */
export async function openEnvelope(privateKeyPkcs8: Uint8Array, envelope: Uint8Array): Promise<Uint8Array> {
  const undecryptable = () => new Error("the spec could not be decrypted with this key");
  if (envelope.length < 40 || !MAGIC.every((b, i) => envelope[i] === b)) throw new Error("not an encrypted spec envelope");
  if (envelope[4] !== 1 || envelope[5] !== 1) throw new Error(`envelope version ${envelope[4]}, algorithm ${envelope[5]}: not supported`);
  const wrappedLength = (envelope[38] << 8) | envelope[39];
  const headerLength = 40 + wrappedLength + 12;
  if (envelope.length < headerLength + 16) throw undecryptable();
  try {
    const rsa = await subtle().importKey("pkcs8", view(privateKeyPkcs8), { name: "RSA-OAEP", hash: "SHA-256" }, false, [
      "decrypt",
    ]);
    const contentKey = await subtle().decrypt({ name: "RSA-OAEP" }, rsa, view(envelope.slice(40, 40 + wrappedLength)));
    if (contentKey.byteLength !== 32) throw undecryptable();
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

/** The DER inside a PEM block (`-----BEGIN ...-----`). */
export function pemToDer(pem: string): Uint8Array {
  const body = pem.replace(/-----(BEGIN|END)[^-]+-----/g, "").replace(/\s+/g, "");
  return Uint8Array.from(atob(body), (c) => c.charCodeAt(0));
}
