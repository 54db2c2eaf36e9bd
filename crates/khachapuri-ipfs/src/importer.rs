//! Bytes → UnixFS DAG, the way Kubo's `ipfs add --cid-version=1` builds it: 256 KiB fixed
//! chunks stored as raw leaves, a balanced tree of dag-pb File nodes with at most 174 links
//! each, CIDv1 sha2-256 throughout, and a single-chunk file reduced to its raw leaf.

use std::io::Read;

use bytes::Bytes;
use cid::Cid;

use crate::block::{DAG_PB, RAW, cid_of};
use crate::pb::{PbLink, PbNode, UnixFsData};

/// Chunk size of Kubo's default `size-262144` chunker.
pub const CHUNK_SIZE: usize = 262_144;
/// Links per node of Kubo's balanced layout.
pub const MAX_LINKS: usize = 174;

/// Where an import puts the blocks it makes.
pub trait BlockSink {
    /// Stores one block; `cid` was computed from `data` by the importer.
    fn put_block(&mut self, cid: &Cid, data: Bytes) -> std::io::Result<()>;
}

/// Keeps blocks in memory, in the order they were made (leaves before their parents).
impl BlockSink for Vec<(Cid, Bytes)> {
    fn put_block(&mut self, cid: &Cid, data: Bytes) -> std::io::Result<()> {
        self.push((*cid, data));
        Ok(())
    }
}

impl<S: BlockSink + ?Sized> BlockSink for &mut S {
    fn put_block(&mut self, cid: &Cid, data: Bytes) -> std::io::Result<()> {
        (**self).put_block(cid, data)
    }
}

/// The outcome of an import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Imported {
    /// Root CID of the file.
    pub cid: Cid,
    /// File length in bytes.
    pub size: u64,
    /// Cumulative DAG size (every block's bytes), what Kubo reports as `Size`.
    pub dag_size: u64,
}

#[derive(Clone, Copy)]
struct Child {
    cid: Cid,
    tsize: u64,
    filesize: u64,
}

/// Streaming importer: feed bytes with [`Importer::write`], then [`Importer::finish`].
///
/// Memory stays bounded by one chunk plus one pending link list per tree level.
pub struct Importer<S: BlockSink> {
    sink: S,
    buf: Vec<u8>,
    /// `levels[0]` holds leaves waiting for a parent, `levels[1]` their parents, …
    levels: Vec<Vec<Child>>,
    size: u64,
}

impl<S: BlockSink> Importer<S> {
    /// A new importer writing blocks to `sink`.
    pub fn new(sink: S) -> Self {
        Importer {
            sink,
            buf: Vec::with_capacity(CHUNK_SIZE),
            levels: vec![Vec::new()],
            size: 0,
        }
    }

    /// Adds file bytes.
    pub fn write(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        self.size += data.len() as u64;
        while !data.is_empty() {
            if self.buf.is_empty() && data.len() >= CHUNK_SIZE {
                let (chunk, rest) = data.split_at(CHUNK_SIZE);
                self.leaf(Bytes::copy_from_slice(chunk))?;
                data = rest;
                continue;
            }
            let take = (CHUNK_SIZE - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == CHUNK_SIZE {
                let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_SIZE));
                self.leaf(Bytes::from(chunk))?;
            }
        }
        Ok(())
    }

    /// Closes the file: writes the remaining chunk and the parent nodes, returns the root.
    pub fn finish(mut self) -> std::io::Result<(Imported, S)> {
        // A file of 0 bytes is one empty chunk, like Kubo and ipfs-unixfs-importer.
        if !self.buf.is_empty() || self.size == 0 {
            let chunk = std::mem::take(&mut self.buf);
            self.leaf(Bytes::from(chunk))?;
        }
        let mut level = 0;
        let root = loop {
            let top = self.levels.len() - 1;
            let pending = std::mem::take(&mut self.levels[level]);
            if level == top && pending.len() == 1 {
                break pending[0];
            }
            if !pending.is_empty() {
                self.parent(level, pending)?;
            }
            level += 1;
        };
        let imported = Imported {
            cid: root.cid,
            size: self.size,
            dag_size: root.tsize,
        };
        Ok((imported, self.sink))
    }

    fn leaf(&mut self, chunk: Bytes) -> std::io::Result<()> {
        let cid = cid_of(RAW, &chunk);
        let len = chunk.len() as u64;
        self.sink.put_block(&cid, chunk)?;
        self.push(
            0,
            Child {
                cid,
                tsize: len,
                filesize: len,
            },
        )
    }

    fn push(&mut self, level: usize, child: Child) -> std::io::Result<()> {
        if self.levels.len() <= level {
            self.levels.push(Vec::new());
        }
        self.levels[level].push(child);
        if self.levels[level].len() == MAX_LINKS {
            let full = std::mem::take(&mut self.levels[level]);
            self.parent(level, full)?;
        }
        Ok(())
    }

    /// Writes a File node over `children` and queues it one level up.
    fn parent(&mut self, level: usize, children: Vec<Child>) -> std::io::Result<()> {
        let data = UnixFsData::file(children.iter().map(|c| c.filesize).collect());
        let node = PbNode {
            links: children
                .iter()
                .map(|c| PbLink {
                    hash: c.cid,
                    name: Some(String::new()),
                    tsize: Some(c.tsize),
                })
                .collect(),
            data: Some(data.encode()),
        };
        let encoded = node.encode();
        let cid = cid_of(DAG_PB, &encoded);
        let tsize = encoded.len() as u64 + children.iter().map(|c| c.tsize).sum::<u64>();
        let filesize = data.filesize.unwrap_or_default();
        self.sink.put_block(&cid, Bytes::from(encoded))?;
        self.push(
            level + 1,
            Child {
                cid,
                tsize,
                filesize,
            },
        )
    }
}

/// Imports a byte slice into `sink`.
pub fn import_bytes<S: BlockSink>(data: &[u8], sink: S) -> std::io::Result<Imported> {
    let mut importer = Importer::new(sink);
    importer.write(data)?;
    Ok(importer.finish()?.0)
}

/// Imports everything `reader` yields into `sink`, one chunk at a time.
pub fn import_reader<R: Read, S: BlockSink>(mut reader: R, sink: S) -> std::io::Result<Imported> {
    let mut importer = Importer::new(sink);
    let mut buf = vec![0u8; CHUNK_SIZE];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => importer.write(&buf[..n])?,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(importer.finish()?.0)
}

/// The CID Kubo would give `data` (`ipfs add --cid-version=1 --only-hash`).
pub fn cid_for(data: &[u8]) -> Cid {
    let mut discard = Discard;
    // Discard never fails, so neither does the import.
    import_bytes(data, &mut discard)
        .map(|i| i.cid)
        .unwrap_or_default()
}

struct Discard;

impl BlockSink for Discard {
    fn put_block(&mut self, _: &Cid, _: Bytes) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_files_are_raw_leaves() {
        assert_eq!(
            cid_for(b"").to_string(),
            "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
        );
        assert_eq!(cid_for(b"hello").codec(), RAW);
        assert_eq!(cid_for(&vec![7; CHUNK_SIZE]).codec(), RAW);
        assert_eq!(cid_for(&vec![7; CHUNK_SIZE + 1]).codec(), DAG_PB);
    }

    #[test]
    fn streaming_equals_one_shot() {
        let data: Vec<u8> = (0..CHUNK_SIZE * 3 + 17)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let one = cid_for(&data);
        let mut blocks = Vec::new();
        let mut imp = Importer::new(&mut blocks);
        for piece in data.chunks(1000) {
            imp.write(piece).expect("write");
        }
        let (streamed, _) = imp.finish().expect("finish");
        assert_eq!(streamed.cid, one);
        assert_eq!(streamed.size, data.len() as u64);
        assert_eq!(blocks.len(), 5, "4 leaves + 1 root");
        let total: u64 = blocks.iter().map(|(_, b)| b.len() as u64).sum();
        assert_eq!(streamed.dag_size, total);
    }
}
