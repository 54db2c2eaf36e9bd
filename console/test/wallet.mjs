// An injected EIP-1193 wallet for browser tests, as a browser extension would inject it: `window.ethereum`
// in the page, whose requests reach this Node process (playwright's exposeFunction), which answers them
// from anvil and its unlocked accounts. The test plays the wallet's user: it connects, switches the
// account or the chain, and may decline the next signature or transaction (code 4001, as wallets do).

const SIGNING = new Set(["eth_signTypedData_v4", "eth_sendTransaction", "personal_sign"]);

/** Installs the wallet in `page` (before any of its scripts run); returns the user's controls. */
export async function installWallet(page, { rpc, account, chainId }) {
  const state = { account, chainId, connected: false, declineNext: false, asked: [] };
  const emit = (event, value) => page.evaluate(([e, v]) => window.__walletEmit(e, v), [event, value]);
  const rpcCall = async (method, params) => {
    const response = await fetch(rpc, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method, params }),
    });
    const json = await response.json();
    if (json.error) return { error: { code: json.error.code, message: json.error.message, data: json.error.data } };
    return { result: json.result };
  };
  await page.exposeFunction("__walletRequest", async (method, params = []) => {
    state.asked.push(method);
    switch (method) {
      case "eth_requestAccounts":
        state.connected = true;
        return { result: [state.account] };
      case "eth_accounts":
        return { result: state.connected ? [state.account] : [] };
      case "eth_chainId":
        return { result: `0x${state.chainId.toString(16)}` };
      case "wallet_switchEthereumChain": {
        const wanted = Number(params[0].chainId);
        if (wanted !== chainId) return { error: { code: 4902, message: `chain ${wanted} is unknown to this wallet` } };
        state.chainId = wanted;
        setTimeout(() => void emit("chainChanged", params[0].chainId), 0);
        return { result: null };
      }
    }
    if (SIGNING.has(method)) {
      if (state.declineNext) {
        state.declineNext = false;
        return { error: { code: 4001, message: "User rejected the request." } };
      }
      if (state.chainId !== chainId) return { error: { code: 4100, message: "wrong chain" } };
    }
    return rpcCall(method, params);
  });
  await page.addInitScript(() => {
    const listeners = {};
    window.__walletEmit = (event, value) => (listeners[event] ?? []).forEach((f) => f(value));
    window.ethereum = {
      isKhachapuriTestWallet: true,
      async request({ method, params }) {
        const { result, error } = await window.__walletRequest(method, params ?? []);
        if (error) throw Object.assign(new Error(error.message), error);
        return result;
      },
      on(event, f) {
        (listeners[event] ??= []).push(f);
      },
      removeListener(event, f) {
        listeners[event] = (listeners[event] ?? []).filter((g) => g !== f);
      },
    };
  });
  return {
    state,
    /** The user switches to another account in the wallet. */
    async switchAccount(address) {
      state.account = address;
      await emit("accountsChanged", [address]);
    },
    /** The user will decline the next signature or transaction. */
    declineNext() {
      state.declineNext = true;
    },
  };
}
