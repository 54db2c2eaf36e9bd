/**
 * The escrow over viem clients (docs/PROTOCOL.md §2): balances and terms, deposit (with an EIP-2612 permit:
 * one transaction, no allowance left), reserve / cut for a provider, release, withdraw, earnings, credits,
 * revocation. Amounts are bigint USDC base units in and out; a refusal is an `EscrowError` whose message is
 * a sentence with amounts in USDC, as the CLI says it, never raw revert data.
 */
import {
  BaseError,
  ContractFunctionRevertedError,
  UserRejectedRequestError,
  parseAbiItem,
  hashDomain,
  parseAbi,
  parseSignature,
  type Address,
  type Hash,
  type Hex,
  type PublicClient,
  type TypedDataDomain,
} from "viem";

const DOMAIN_TYPES = [
  { name: "name", type: "string" },
  { name: "version", type: "string" },
  { name: "chainId", type: "uint256" },
  { name: "verifyingContract", type: "address" },
] as const;

import { type Wallet } from "./signer.js";
import { formatUsdc } from "./usdc.js";

/** What `deployments/<chainId>.json` says (script/Deploy.s.sol; PROTOCOL §3). */
export interface Deployment {
  chainId: number;
  deploymentBlock: number;
  escrow: Address;
  registry: Address;
  resolverFactory: Address;
  usdc: Address;
  testToken: boolean;
  withdrawalDelay: number;
}

/** The escrow functions this SDK calls; `sdk/test` checks each against the contract's own ABI. */
export const escrowAbi = parseAbi([
  "struct Terms { uint256 price; uint256 reserve; uint256 credits; uint256 pendingPrice; uint256 priceAt; uint256 pendingRelease; uint256 releaseAt; uint256 releasable; }",
  "function deposit(address onBehalf, uint256 amount)",
  "function depositWithPermit(address onBehalf, uint256 amount, uint256 deadline, uint8 v, bytes32 r, bytes32 s)",
  "function withdraw(address to, uint256 amount)",
  "function reserve(address provider, uint256 pricePerRequest, uint256 amount)",
  "function release(address provider, uint256 amount)",
  "function cancelPending(address provider)",
  "function revokeSpec(bytes32 spec)",
  "function grantCredits(address user, uint256 amount)",
  "function withdrawEarnings(address to, uint256 amount)",
  "function freeBalance(address payer) view returns (uint256)",
  "function earnings(address provider) view returns (uint256)",
  "function terms(address payer, address provider) view returns (Terms)",
  "function revokedAt(address owner, bytes32 spec) view returns (uint256)",
  "error ZeroAmount()",
  "error ZeroAddress()",
  "error InsufficientBalance(uint256 available, uint256 requested)",
  "error InsufficientEarnings(uint256 available, uint256 requested)",
  "error InsufficientReserve(address payer, address provider, uint256 reserve, uint256 needed)",
  "error NotApproved(address payer, address provider)",
  "error PermitFailed()",
  "error AlreadyRevoked(bytes32 spec)",
  "error Frozen(address account)",
  "error NothingPending(address provider)",
]);

const TERMS_SET = parseAbiItem(
  "event TermsSet(address indexed payer, address indexed provider, uint256 price, uint256 reserve)",
);
const CREDITS_GRANTED = parseAbiItem(
  "event CreditsGranted(address indexed provider, address indexed user, uint256 amount)",
);

/** The token functions this SDK calls (USDC's, EIP-2612's). */
export const usdcAbi = parseAbi([
  "function balanceOf(address owner) view returns (uint256)",
  "function nonces(address owner) view returns (uint256)",
  "function name() view returns (string)",
  "function DOMAIN_SEPARATOR() view returns (bytes32)",
  "function eip712Domain() view returns (bytes1 fields, string name, string version, uint256 chainId, address verifyingContract, bytes32 salt, uint256[] extensions)",
]);

/** A payer's money in the escrow, with one provider. */
export interface Balances {
  /** Spendable by withdraw, deposit into reserves. */
  free: bigint;
  /** USDC in the wallet. */
  wallet: bigint;
  /** The terms with the provider (price per request, reserve, credits, pending changes). */
  terms: {
    price: bigint;
    reserve: bigint;
    credits: bigint;
    pendingPrice: bigint;
    priceAt: bigint;
    pendingRelease: bigint;
    releaseAt: bigint;
    releasable: bigint;
  };
}

/** A refusal by the escrow or the token, told as a sentence (amounts in USDC). */
export class EscrowError extends Error {
  override name = "EscrowError";
  constructor(
    message: string,
    /** The contract's error name, e.g. `InsufficientBalance`. */
    readonly errorName?: string,
  ) {
    super(message);
  }
}

/** Turns a viem error into an `EscrowError` whose message a person reads. */
export function explain(error: unknown): EscrowError {
  if (error instanceof BaseError) {
    if (error.walk((e) => e instanceof UserRejectedRequestError)) {
      return new EscrowError("declined in the wallet: nothing was signed or sent", "UserRejected");
    }
    const reverted = error.walk((e) => e instanceof ContractFunctionRevertedError);
    if (reverted instanceof ContractFunctionRevertedError && reverted.data) {
      const { errorName, args = [] } = reverted.data;
      const a = args as readonly unknown[];
      const usdc = (i: number) => formatUsdc(a[i] as bigint);
      const sentence: Record<string, () => string> = {
        InsufficientBalance: () => `the free balance is ${usdc(0)}, ${usdc(1)} needed`,
        InsufficientEarnings: () => `the earnings are ${usdc(0)}, ${usdc(1)} needed`,
        InsufficientReserve: () => `${a[0]} has ${usdc(2)} reserved for ${a[1]}, ${usdc(3)} needed`,
        NotApproved: () => `${a[0]} has no terms with provider ${a[1]}`,
        ZeroAmount: () => "the amount is zero",
        ZeroAddress: () => "the zero address was given",
        PermitFailed: () => "the token refused the permit (a wrong signature, nonce or deadline)",
        AlreadyRevoked: () => `the deployment ${a[0]} is already revoked`,
        Frozen: () => `${a[0]} is frozen by the token's issuer`,
        NothingPending: () => `nothing is pending with provider ${a[0]}`,
      };
      return new EscrowError(sentence[errorName]?.() ?? `the contract refused: ${errorName}`, errorName);
    }
    return new EscrowError(error.shortMessage);
  }
  return new EscrowError(String(error));
}

/** The escrow of `deployment`, read through `client`, written through `wallet` (when given). */
export class Escrow {
  constructor(
    readonly deployment: Deployment,
    readonly client: PublicClient,
    readonly wallet?: Wallet,
  ) {}

  private async write(functionName: string, args: readonly unknown[]): Promise<Hash> {
    const wallet = this.wallet;
    if (!wallet) throw new EscrowError("no wallet to sign with: pass a wallet client");
    let hash: Hash | undefined;
    try {
      const { request } = await this.client.simulateContract({
        address: this.deployment.escrow,
        abi: escrowAbi,
        functionName: functionName as never,
        args: args as never,
        account: wallet.account,
      });
      hash = await wallet.writeContract(request as never);
      const receipt = await this.client.waitForTransactionReceipt({ hash });
      if (receipt.status !== "success") throw new EscrowError(`transaction ${hash} reverted`);
      return hash;
    } catch (e) {
      if (e instanceof EscrowError) throw e;
      // Sent, but not seen mined: say so with its hash, so that nobody sends it again blindly.
      if (hash) throw new EscrowError(`transaction ${hash} was sent but its receipt could not be read (${explain(e).message}): look it up before sending again`);
      throw explain(e);
    }
  }

  /** `payer`'s free balance, wallet, and terms with `provider`. */
  async balances(payer: Address, provider: Address): Promise<Balances> {
    const [free, wallet, terms] = await Promise.all([
      this.client.readContract({ address: this.deployment.escrow, abi: escrowAbi, functionName: "freeBalance", args: [payer] }),
      this.client.readContract({ address: this.deployment.usdc, abi: usdcAbi, functionName: "balanceOf", args: [payer] }),
      this.client.readContract({ address: this.deployment.escrow, abi: escrowAbi, functionName: "terms", args: [payer, provider] }),
    ]);
    return { free, wallet, terms: { ...terms } };
  }

  /**
   * The providers `payer` has had terms or trial credits with, from the escrow's `TermsSet` and
   * `CreditsGranted` events from `fromBlock` (default: the deployment block) to `toBlock` (default: the
   * latest), in the order they first appeared. A page that polls passes the block after its last scan.
   */
  async providersOf(payer: Address, fromBlock = BigInt(this.deployment.deploymentBlock ?? 0), toBlock?: bigint): Promise<Address[]> {
    const address = this.deployment.escrow;
    const [terms, credits] = await Promise.all([
      this.client.getLogs({ address, event: TERMS_SET, args: { payer }, fromBlock, toBlock }),
      this.client.getLogs({ address, event: CREDITS_GRANTED, args: { user: payer }, fromBlock, toBlock }),
    ]);
    const seen = [...terms, ...credits]
      .sort((a, b) => Number((a.blockNumber ?? 0n) - (b.blockNumber ?? 0n)) || (a.logIndex ?? 0) - (b.logIndex ?? 0))
      .map((log) => log.args.provider as Address);
    return [...new Set(seen)];
  }

  /** Earnings of `provider`, withdrawable by it. */
  earnings(provider: Address): Promise<bigint> {
    return this.client.readContract({ address: this.deployment.escrow, abi: escrowAbi, functionName: "earnings", args: [provider] });
  }

  /**
   * Deposits `amount` from the wallet to `onBehalf`'s free balance with an EIP-2612 permit signed here:
   * one transaction, and no allowance left behind.
   */
  async depositWithPermit(amount: bigint, onBehalf?: Address, deadline?: bigint): Promise<Hash> {
    if (!this.wallet) throw new EscrowError("no wallet to sign with: pass a wallet client");
    if (amount <= 0n) throw new EscrowError("the amount is zero");
    const owner = this.wallet.account.address;
    let domain: TypedDataDomain;
    let nonce: bigint;
    try {
      [domain, nonce] = await Promise.all([
        this.tokenDomain(),
        this.client.readContract({ address: this.deployment.usdc, abi: usdcAbi, functionName: "nonces", args: [owner] }),
      ]);
    } catch (e) {
      throw e instanceof EscrowError ? e : explain(e);
    }
    const until = deadline ?? BigInt(Math.floor(Date.now() / 1000) + 3600);
    const signature: Hex = await this.wallet
      .signTypedData({
        account: this.wallet.account,
        domain,
      types: {
        Permit: [
          { name: "owner", type: "address" },
          { name: "spender", type: "address" },
          { name: "value", type: "uint256" },
          { name: "nonce", type: "uint256" },
          { name: "deadline", type: "uint256" },
        ],
      },
        primaryType: "Permit",
        message: { owner, spender: this.deployment.escrow, value: amount, nonce, deadline: until },
      })
      .catch((e: unknown) => {
        throw explain(e);
      });
    const { r, s, v, yParity } = parseSignature(signature);
    const vByte = Number(v ?? BigInt(27 + yParity));
    return this.write("depositWithPermit", [onBehalf ?? owner, amount, until, vByte, r, s]);
  }

  /**
   * The token's EIP-712 domain (for permits): ERC-5267 `eip712Domain()` where the token has it, else its
   * `name()` with the version whose separator matches `DOMAIN_SEPARATOR()` (Circle's USDC: "2").
   */
  async tokenDomain(): Promise<TypedDataDomain> {
    const usdc = this.deployment.usdc;
    try {
      const [, name, version, chainId, verifyingContract] = await this.client.readContract({
        address: usdc,
        abi: usdcAbi,
        functionName: "eip712Domain",
      });
      return { name, version, chainId, verifyingContract };
    } catch {
      const [name, separator] = await Promise.all([
        this.client.readContract({ address: usdc, abi: usdcAbi, functionName: "name" }),
        this.client.readContract({ address: usdc, abi: usdcAbi, functionName: "DOMAIN_SEPARATOR" }),
      ]);
      for (const version of ["2", "1"]) {
        const domain = { name, version, chainId: BigInt(this.deployment.chainId), verifyingContract: usdc };
        if (hashDomain({ domain, types: { EIP712Domain: DOMAIN_TYPES } }) === separator) return domain;
      }
      throw new EscrowError("cannot work out the token's EIP-712 domain (no eip712Domain(), no matching separator)");
    }
  }

  /** Sets the terms with `provider`: `pricePerRequest` at most, and `amount` more set aside for it. */
  reserve(provider: Address, pricePerRequest: bigint, amount: bigint): Promise<Hash> {
    return this.write("reserve", [provider, pricePerRequest, amount]);
  }

  /** Asks `amount` of the reserve with `provider` back to the free balance (after the escrow's delay). */
  release(provider: Address, amount: bigint): Promise<Hash> {
    return this.write("release", [provider, amount]);
  }

  /** Drops a pending cut or release with `provider`. */
  cancelPending(provider: Address): Promise<Hash> {
    return this.write("cancelPending", [provider]);
  }

  /** Sends `amount` of the free balance to `to`, at once. */
  withdraw(to: Address, amount: bigint): Promise<Hash> {
    return this.write("withdraw", [to, amount]);
  }

  /** Sends `amount` of a provider's earnings to `to` (the wallet is the provider's payee). */
  withdrawEarnings(to: Address, amount: bigint): Promise<Hash> {
    return this.write("withdrawEarnings", [to, amount]);
  }

  /** Grants `user` trial credits with this provider (the wallet is the provider's payee). */
  grantCredits(user: Address, amount: bigint): Promise<Hash> {
    return this.write("grantCredits", [user, amount]);
  }

  /** Revokes a deployment for good, by its terms hash (`specTermsHash`), as its owner. */
  revokeSpec(termsHash: Hex): Promise<Hash> {
    return this.write("revokeSpec", [termsHash]);
  }
}
