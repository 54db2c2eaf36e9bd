/**
 * USDC amounts as bigint base units (6 decimals), never floats: `parseUsdc("0.30")` is `300000n`, and
 * `formatUsdc(300000n)` is `"0.30 USDC"` (at least 2 decimals, at most 6, never rounded), as the CLI writes
 * them (docs/PROTOCOL.md, Conventions).
 */

/** Base units in one USDC. */
export const USDC_UNIT = 1_000_000n;

/** Why a text is not an amount of USDC. */
export class UsdcParseError extends Error {
  override name = "UsdcParseError";
}

/** Reads `0.3`, `0.30`, `1`, `0.000001`, with an optional ` USDC` suffix. */
export function parseUsdc(text: string): bigint {
  let t = text.trim();
  if (t.endsWith("USDC")) t = t.slice(0, -4).trimEnd();
  if (t === "") throw new UsdcParseError("empty amount");
  if (t.startsWith("-")) throw new UsdcParseError(`negative amount \`${text}\`: USDC amounts are never negative`);
  const match = /^(\d+)(?:\.(\d+))?$/.exec(t);
  if (!match) throw new UsdcParseError(`\`${text}\` is not an amount of USDC (expected digits like \`0.30\` or \`1\`)`);
  const [, whole, frac = ""] = match;
  if (frac.length > 6) {
    throw new UsdcParseError(`\`${text}\` has more than 6 decimals (USDC's smallest unit is 0.000001)`);
  }
  return BigInt(whole) * USDC_UNIT + BigInt(frac.padEnd(6, "0"));
}

/** Writes `units` as people read it: `0.30 USDC`, `0.000001 USDC`, `12.00 USDC`. */
export function formatUsdc(units: bigint): string {
  if (units < 0n) throw new RangeError("USDC amounts are never negative");
  const whole = units / USDC_UNIT;
  let frac = (units % USDC_UNIT).toString().padStart(6, "0").replace(/0+$/, "");
  if (frac.length < 2) frac = frac.padEnd(2, "0");
  return `${whole}.${frac} USDC`;
}
