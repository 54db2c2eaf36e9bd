/**
 * Private programs (docs/PROTOCOL.md §5 "The private program"): a program package encrypted with AES-256-GCM
 * in chunks (the STREAM construction), with WebCrypto, byte for byte the format the Rust side reads.
 */
import { concatBytes, uintBytes } from "./bytes.js";

const MAGIC = new TextEncoder().encode("KPPE");
const HEADER = 14;
const TAG = 16;
const subtle = () => globalThis.crypto.subtle;
const view = (b: Uint8Array): Uint8Array<ArrayBuffer> => new Uint8Array(b);

const nonce = (prefix: Uint8Array, index: number, last: boolean) =>
  view(concatBytes(prefix, uintBytes(BigInt(index), 4), Uint8Array.of(last ? 1 : 0)));

const aesKey = (key: Uint8Array, use: KeyUsage) => subtle().importKey("raw", view(key), "AES-GCM", false, [use]);

/** Encrypts `pkg` under the 32-byte `key`, in chunks of 2^`chunkLog2` bytes (default 64 KiB). */
export async function sealProgram(key: Uint8Array, pkg: Uint8Array, chunkLog2 = 16): Promise<Uint8Array> {
  if (chunkLog2 < 10 || chunkLog2 > 24) throw new RangeError("the chunk size is 2^10 to 2^24 bytes");
  const chunk = 2 ** chunkLog2;
  const prefix = globalThis.crypto.getRandomValues(new Uint8Array(7));
  const header = concatBytes(MAGIC, Uint8Array.of(1, 1, chunkLog2), prefix);
  const k = await aesKey(key, "encrypt");
  const count = Math.max(1, Math.ceil(pkg.length / chunk));
  const parts = [header];
  for (let i = 0; i < count; i++) {
    const part = pkg.slice(i * chunk, (i + 1) * chunk);
    const iv = nonce(prefix, i, i + 1 === count);
    parts.push(new Uint8Array(await subtle().encrypt({ name: "AES-GCM", iv, additionalData: view(header) }, k, part)));
  }
  return concatBytes(...parts);
}

/** Decrypts a sealed program; any tampering (a chunk swapped, cut, altered, or a wrong key) throws. */
export async function openProgram(key: Uint8Array, sealed: Uint8Array): Promise<Uint8Array> {
  if (!MAGIC.every((b, i) => sealed[i] === b)) throw new Error("the program is not encrypted (no KPPE header)");
  if (sealed.length < HEADER + TAG) throw new Error("the sealed program is cut short");
  if (sealed[4] !== 1 || sealed[5] !== 1) throw new Error("sealed program version or algorithm not supported");
  const log2 = sealed[6];
  if (log2 < 10 || log2 > 24) throw new Error("sealed program chunk size out of range");
  const header = sealed.slice(0, HEADER);
  const prefix = sealed.slice(7, HEADER);
  const body = sealed.slice(HEADER);
  const sealedChunk = 2 ** log2 + TAG;
  const count = Math.ceil(body.length / sealedChunk);
  if (body.length - (count - 1) * sealedChunk < TAG) throw new Error("the sealed program is cut short");
  const k = await aesKey(key, "decrypt");
  const parts: Uint8Array[] = [];
  for (let i = 0; i < count; i++) {
    const part = body.slice(i * sealedChunk, (i + 1) * sealedChunk);
    try {
      const iv = nonce(prefix, i, i + 1 === count);
      parts.push(new Uint8Array(await subtle().decrypt({ name: "AES-GCM", iv, additionalData: view(header) }, k, part)));
    } catch {
      throw new Error(`chunk ${i} of the sealed program does not authenticate: a wrong key, or altered, swapped or cut-off bytes`);
    }
  }
  return concatBytes(...parts);
}
