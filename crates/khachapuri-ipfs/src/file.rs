//! Reading a UnixFS file back out of a local store (the embedded node's `cat` and plain
//! gateway responses). Remote, untrusted reads go through [`crate::Fetcher`] instead.

use std::io::{Error, ErrorKind};

use bytes::Bytes;
use cid::Cid;

use crate::block::{DAG_PB, RAW};
use crate::pb::{PbNode, UnixFsData, UnixFsType};
use crate::store::FsBlockstore;

/// A dag-pb block decoded as a UnixFS file node.
pub(crate) struct FileNode {
    pub links: Vec<Cid>,
    pub data: Option<Vec<u8>>,
    pub filesize: u64,
    pub blocksizes: Vec<u64>,
}

/// Decodes a dag-pb block that must be a UnixFS File (or legacy Raw) node.
pub(crate) fn decode_file_node(block: &[u8]) -> Result<FileNode, String> {
    let node = PbNode::decode(block).map_err(|e| e.to_string())?;
    let data = node.data.ok_or("dag-pb node has no UnixFS data")?;
    let unixfs = UnixFsData::decode(&data).map_err(|e| e.to_string())?;
    match unixfs.kind {
        UnixFsType::File | UnixFsType::Raw => {}
        other => return Err(format!("UnixFS {other:?} is not a file")),
    }
    let inline = unixfs.data.as_ref().map_or(0, Vec::len) as u64;
    let filesize = unixfs
        .filesize
        .unwrap_or(inline + unixfs.blocksizes.iter().sum::<u64>());
    Ok(FileNode {
        links: node.links.into_iter().map(|l| l.hash).collect(),
        data: unixfs.data,
        filesize,
        blocksizes: unixfs.blocksizes,
    })
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidData, msg.into())
}

/// The file length under `root` (read from its first block only).
pub fn file_size(store: &FsBlockstore, root: &Cid) -> std::io::Result<u64> {
    let block = store
        .get_block(root)?
        .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("{root} not found")))?;
    match root.codec() {
        RAW => Ok(block.len() as u64),
        DAG_PB => Ok(decode_file_node(&block).map_err(invalid)?.filesize),
        codec => Err(invalid(format!("unsupported codec 0x{codec:x}"))),
    }
}

/// The file's bytes under `root`, piece by piece in order (raw leaves, inline node data).
pub struct FileChunks {
    store: FsBlockstore,
    stack: Vec<Cid>,
}

impl FileChunks {
    /// Starts reading the file under `root`.
    pub fn new(store: FsBlockstore, root: Cid) -> Self {
        FileChunks {
            store,
            stack: vec![root],
        }
    }

    fn step(&mut self, cid: Cid) -> std::io::Result<Bytes> {
        let block = self
            .store
            .get_block(&cid)?
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("block {cid} not found")))?;
        match cid.codec() {
            RAW => Ok(block),
            DAG_PB => {
                let node = decode_file_node(&block).map_err(invalid)?;
                self.stack.extend(node.links.iter().rev());
                Ok(node.data.map(Bytes::from).unwrap_or_default())
            }
            codec => Err(invalid(format!("unsupported codec 0x{codec:x}"))),
        }
    }
}

impl Iterator for FileChunks {
    type Item = std::io::Result<Bytes>;

    fn next(&mut self) -> Option<Self::Item> {
        let cid = self.stack.pop()?;
        let out = self.step(cid);
        if out.is_err() {
            self.stack.clear();
        }
        Some(out)
    }
}
