//! Tunnels for providers behind NAT: the provider's end ([`client`]), the WebSocket byte stream both ends
//! run HTTP/2 over ([`WsIo`]), and the HTTP forwarding plumbing the gateway shares ([`proxy`]). The
//! gateway's end is `khachapuri-gateway`'s `tunnel::server`; the handshake messages are
//! [`khachapuri_protocol::tunnel`].
//!
//! A provider's agent opens a WebSocket to the gateway at [`TUNNEL_PATH`] and proves it holds the key of
//! its label's payee:
//!
//! ```text
//! agent   -> gateway  {"type":"hello","label":"alice","version":1}
//! gateway -> agent    {"type":"challenge","label":"alice","gateway":"<id>","nonce":"<hex>","expires_at":<unix s>}
//! agent   -> gateway  {"type":"answer","signature":"0x<65 bytes>"}      EIP-191 over challenge_message()
//! gateway -> agent    {"type":"accepted"}  or  {"type":"refused","error":...,"hint":...}
//! ```
//!
//! After `accepted` the socket carries binary frames only: an HTTP/2 connection in which the gateway is
//! the client and the agent the server. HTTP/2 gives the multiplexing (many requests in flight, each a
//! stream), per-stream and per-connection flow control (back-pressure on large bodies) and keep-alive
//! pings that notice a dead socket.
//!
//! One label has at most one tunnel: a newer tunnel that passes the handshake **replaces** the older
//! one (a restarted agent must not wait for its dead socket to time out). Requests already in flight on
//! the old tunnel finish; new ones go to the new tunnel. Only the payee's key passes the handshake, so
//! a stranger cannot take a label over; two agents run with the same key displace each other.

pub mod client;
pub mod proxy;
mod ws_io;

pub use khachapuri_protocol::tunnel::{
    Challenge, Handshake, PROTOCOL_VERSION, TUNNEL_PATH, challenge_message,
};
pub use ws_io::WsIo;
