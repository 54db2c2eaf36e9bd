/**
 * Who signs: a viem account (a local key) or a wallet client (an EIP-1193 wallet such as a browser
 * extension, through `custom(window.ethereum)`). Every signature the SDK asks for goes through `signTyped`,
 * so a payer token, a spec or a logs grant is signed the same way by both.
 */
import type { Account, Address, Chain, Hex, Transport, TypedData, TypedDataDefinition, WalletClient } from "viem";

/** A wallet client with its account set (`createWalletClient({ account, transport })`). */
export type Wallet = WalletClient<Transport, Chain | undefined, Account>;

/** Anything that signs EIP-712 data: a viem account or a wallet client with an account. */
export type Signer = Account | Wallet;

/** A wallet client (`createWalletClient` always sets `transport`; an account never has one). */
function isWallet(s: Signer): s is Wallet {
  if (!("transport" in s)) return false;
  if (!s.account) {
    throw new Error("this wallet client has no account: create it with `account` (the wallet's address)");
  }
  return true;
}

/** The signer's address. */
export function signerAddress(signer: Signer): Address {
  return isWallet(signer) ? signer.account.address : signer.address;
}

/**
 * Signs typed data as `signer`. A wallet asks its user (`eth_signTypedData_v4`), who may refuse: that is a
 * viem `UserRejectedRequestError` (code 4001), thrown as is.
 */
export async function signTyped<const T extends TypedData | Record<string, unknown>, P extends keyof T | "EIP712Domain">(
  signer: Signer,
  typed: TypedDataDefinition<T, P>,
): Promise<Hex> {
  if (isWallet(signer)) return signer.signTypedData({ ...(typed as object), account: signer.account } as never);
  if (!signer.signTypedData) {
    throw new Error(`account ${signer.address} cannot sign typed data: use a local account or a wallet client`);
  }
  return signer.signTypedData(typed as never);
}
