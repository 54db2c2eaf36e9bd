//! The tunnel handshake: how a provider behind NAT proves to a gateway that it holds its label's payee key
//! (docs/PROTOCOL.md, "10. The gateway and the tunnel"). Both ends speak these messages: the provider's
//! client and the gateway's server.
//!
//! ```text
//! agent   -> gateway  {"type":"hello","label":"alice","version":1}
//! gateway -> agent    {"type":"challenge","label":"alice","gateway":"<id>","nonce":"<hex>","expires_at":<unix s>}
//! agent   -> gateway  {"type":"answer","signature":"0x<65 bytes>"}      EIP-191 over challenge_message()
//! gateway -> agent    {"type":"accepted"}  or  {"type":"refused","error":...,"hint":...}
//! ```
//!
//! After `accepted` the socket carries binary frames only: an HTTP/2 connection in which the gateway is
//! the client and the agent the server.

use serde::{Deserialize, Serialize};

/// The gateway path that accepts tunnel WebSockets, on any host that is not a label's
/// (`ws://khachapuri.xyz/_tunnel`, `ws://127.0.0.1:8080/_tunnel`; on `alice.khachapuri.xyz` the path
/// belongs to alice). `_tunnel` is not a valid label, so it never shadows one in path mode.
pub const TUNNEL_PATH: &str = "/_tunnel";

/// The handshake version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// The gateway's challenge: the agent signs [`challenge_message`] of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// The label the agent asked for.
    pub label: String,
    /// The gateway's id, so that a signature made for one gateway is useless at another.
    pub gateway: String,
    /// 32 random bytes, hex.
    pub nonce: String,
    /// Unix seconds after which the answer is refused.
    pub expires_at: u64,
}

/// The text signed with EIP-191 (`personal_sign`) to answer a [`Challenge`].
pub fn challenge_message(c: &Challenge) -> String {
    format!(
        "Khachapuri gateway tunnel\nlabel: {}\ngateway: {}\nnonce: {}\nexpires: {}",
        c.label, c.gateway, c.nonce, c.expires_at
    )
}

/// The handshake messages (JSON text frames).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Handshake {
    /// Agent: the label it serves.
    Hello {
        /// The label.
        label: String,
        /// [`PROTOCOL_VERSION`].
        version: u32,
    },
    /// Gateway: sign this.
    Challenge(Challenge),
    /// Agent: the EIP-191 signature, `0x` + 65 bytes hex.
    Answer {
        /// The signature.
        signature: String,
    },
    /// Gateway: the tunnel is up; HTTP/2 follows.
    Accepted,
    /// Gateway: refused, and what to do about it.
    Refused {
        /// What went wrong.
        error: String,
        /// What to do next.
        hint: String,
    },
}
