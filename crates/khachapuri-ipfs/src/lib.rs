//! Khachapuri's IPFS content layer.
//!
//! - [`importer`]: bytes → UnixFS DAG with the CIDs Kubo's `ipfs add --cid-version=1` gives.
//! - [`car`]: CAR v1 export and verified import.
//! - [`FsBlockstore`] and [`Node`]: the embedded node — a blockstore on disk served over HTTP as a
//!   trustless gateway and a Kubo RPC subset (`add`, `cat`, `block/get`).
//! - [`Fetcher`]: verified fetching from the local store, Kubo RPC endpoints and gateways.

pub mod block;
pub mod car;
mod fetch;
mod file;
mod importer;
mod pb;
mod server;
mod store;

pub use block::{BlockError, parse_cid};
pub use cid::Cid;
pub use fetch::{AddResponse, FetchError, Fetcher, KuboClient, Source};
pub use importer::{
    CHUNK_SIZE, Imported, Importer, MAX_LINKS, cid_for, import_bytes, import_reader,
};
pub use server::Node;
pub use store::FsBlockstore;
