/** Byte helpers the formats share: base64url without padding, fixed-width big-endian integers. */
import { bytesToHex, getAddress, hexToBytes, type Address, type Hex } from "viem";

const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/** RFC 4648 §5, no padding. */
export function base64url(bytes: Uint8Array): string {
  let out = "";
  let bits = 0;
  let value = 0;
  for (const b of bytes) {
    value = (value << 8) | b;
    bits += 8;
    while (bits >= 6) {
      out += ALPHABET[(value >> (bits - 6)) & 63];
      bits -= 6;
    }
  }
  if (bits > 0) out += ALPHABET[(value << (6 - bits)) & 63];
  return out;
}

/** The inverse of `base64url`; refuses padding, foreign characters and non-zero trailing bits. */
export function fromBase64url(text: string): Uint8Array {
  const out: number[] = [];
  let bits = 0;
  let value = 0;
  for (const c of text) {
    const i = ALPHABET.indexOf(c);
    if (i < 0) throw new Error(`not base64url: \`${c}\``);
    value = ((value << 6) | i) & 0xffff;
    bits += 6;
    if (bits >= 8) {
      out.push((value >> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  if (bits >= 6 || (value & ((1 << bits) - 1)) !== 0) throw new Error("not base64url: trailing bits");
  return Uint8Array.from(out);
}

/** `n` as `width` big-endian bytes. */
export function uintBytes(n: bigint, width: number): Uint8Array {
  if (n < 0n || n >= 1n << BigInt(8 * width)) throw new RangeError(`${n} does not fit in ${width} bytes`);
  const out = new Uint8Array(width);
  for (let i = width - 1; i >= 0; i--) {
    out[i] = Number(n & 0xffn);
    n >>= 8n;
  }
  return out;
}

/** Big-endian bytes as a bigint. */
export function readUint(bytes: Uint8Array): bigint {
  let n = 0n;
  for (const b of bytes) n = (n << 8n) | BigInt(b);
  return n;
}

export function concatBytes(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export const hex = (bytes: Uint8Array): Hex => bytesToHex(bytes);
export const bytes = (h: Hex): Uint8Array => hexToBytes(h);
export const address = (b: Uint8Array): Address => getAddress(bytesToHex(b));
