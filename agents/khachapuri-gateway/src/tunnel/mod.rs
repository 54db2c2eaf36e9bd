//! Tunnels for providers behind NAT: the gateway's end ([`server`]). The protocol, the provider's end and
//! the byte stream are in `khachapuri-tunnel`, re-exported here.

pub mod server;

pub use khachapuri_tunnel::{
    Challenge, Handshake, PROTOCOL_VERSION, TUNNEL_PATH, WsIo, challenge_message, client,
};

pub(crate) use khachapuri_protocol::unix_now;
