//! CAR v1: a header (dag-cbor `{roots, version: 1}`) and `varint | CID | block` sections.

use std::io::{Read, Write};

use bytes::Bytes;
use cid::Cid;

use crate::block::{BlockError, DAG_PB, verify};
use crate::pb::{PbNode, get_varint, put_varint};
use crate::store::FsBlockstore;

/// Largest header or section accepted when reading (a 256 KiB chunk plus slack, with room).
pub const MAX_SECTION: u64 = 4 << 20;

/// A CAR that could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CarError {
    /// Reading or writing failed.
    #[error("CAR I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes are not a CAR v1.
    #[error("malformed CAR: {0}")]
    Malformed(String),
    /// A block failed verification.
    #[error("CAR block rejected: {0}")]
    Block(#[from] BlockError),
    /// A block the DAG needs is not in the store.
    #[error("block {0} is missing")]
    Missing(Cid),
}

/// The CAR v1 header for one root, in dag-cbor canonical form.
pub fn header(root: &Cid) -> Vec<u8> {
    let cid = root.to_bytes();
    let mut cbor = vec![0xa2, 0x65];
    cbor.extend_from_slice(b"roots");
    cbor.extend_from_slice(&[0x81, 0xd8, 0x2a]); // array(1), tag(42)
    cbor_head(&mut cbor, 2, cid.len() as u64 + 1);
    cbor.push(0x00); // multibase identity prefix
    cbor.extend_from_slice(&cid);
    cbor.push(0x67);
    cbor.extend_from_slice(b"version");
    cbor.push(0x01);
    let mut out = Vec::with_capacity(cbor.len() + 2);
    put_varint(&mut out, cbor.len() as u64);
    out.extend_from_slice(&cbor);
    out
}

fn cbor_head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    match n {
        0..=23 => out.push(m | n as u8),
        24..=0xff => out.extend_from_slice(&[m | 24, n as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
            out.push(m | 26);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }
}

/// One CAR section (`varint(len) | CID | data`).
pub fn section(cid: &Cid, data: &[u8]) -> Vec<u8> {
    let cid = cid.to_bytes();
    let mut out = Vec::with_capacity(cid.len() + data.len() + 10);
    put_varint(&mut out, (cid.len() + data.len()) as u64);
    out.extend_from_slice(&cid);
    out.extend_from_slice(data);
    out
}

/// Writes a CAR of the DAG under `root`, read from `store` depth-first (root first), as Kubo
/// and trustless gateways order it.
pub fn export<W: Write>(store: &FsBlockstore, root: &Cid, mut out: W) -> Result<(), CarError> {
    out.write_all(&header(root))?;
    for block in DagWalk::new(store.clone(), *root) {
        let (cid, data) = block?;
        out.write_all(&section(&cid, &data))?;
    }
    Ok(())
}

/// Depth-first, pre-order walk over a DAG in a store, yielding each block once per link.
pub struct DagWalk {
    store: FsBlockstore,
    stack: Vec<Cid>,
}

impl DagWalk {
    /// A walk starting at `root`.
    pub fn new(store: FsBlockstore, root: Cid) -> Self {
        DagWalk {
            store,
            stack: vec![root],
        }
    }
}

impl Iterator for DagWalk {
    type Item = Result<Block, CarError>;

    fn next(&mut self) -> Option<Self::Item> {
        let cid = self.stack.pop()?;
        let step = (|| {
            let data = self.store.get_block(&cid)?.ok_or(CarError::Missing(cid))?;
            if cid.codec() == DAG_PB {
                let node = PbNode::decode(&data).map_err(|e| CarError::Malformed(e.to_string()))?;
                self.stack.extend(node.links.iter().rev().map(|l| l.hash));
            }
            Ok((cid, data))
        })();
        if step.is_err() {
            self.stack.clear();
        }
        Some(step)
    }
}

/// A block with its CID.
pub type Block = (Cid, Bytes);

/// Reads a CAR v1, verifying every block against its CID. Returns the roots and the blocks.
pub fn read<R: Read>(mut input: R) -> Result<(Vec<Cid>, Vec<Block>), CarError> {
    let header =
        read_section(&mut input)?.ok_or_else(|| CarError::Malformed("empty input".into()))?;
    let roots = parse_header(&header)?;
    let mut blocks = Vec::new();
    while let Some(sec) = read_section(&mut input)? {
        let mut cursor = std::io::Cursor::new(&sec[..]);
        let cid = Cid::read_bytes(&mut cursor)
            .map_err(|e| CarError::Malformed(format!("section CID: {e}")))?;
        let data = Bytes::copy_from_slice(&sec[cursor.position() as usize..]);
        verify(&cid, &data)?;
        blocks.push((cid, data));
    }
    Ok((roots, blocks))
}

/// Reads a CAR into `store` (every block verified first). Returns the roots.
pub fn import<R: Read>(store: &FsBlockstore, input: R) -> Result<Vec<Cid>, CarError> {
    let (roots, blocks) = read(input)?;
    for (cid, data) in blocks {
        store.put_block(&cid, &data)?;
    }
    Ok(roots)
}

/// Reads one varint-prefixed section, `None` at a clean end of input.
fn read_section<R: Read>(input: &mut R) -> Result<Option<Vec<u8>>, CarError> {
    let mut prefix = Vec::with_capacity(10);
    let mut byte = [0u8; 1];
    loop {
        if input.read(&mut byte)? == 0 {
            if prefix.is_empty() {
                return Ok(None);
            }
            return Err(CarError::Malformed("truncated length".into()));
        }
        prefix.push(byte[0]);
        if byte[0] & 0x80 == 0 || prefix.len() == 10 {
            break;
        }
    }
    let (len, _) = get_varint(&prefix).ok_or_else(|| CarError::Malformed("bad length".into()))?;
    if len > MAX_SECTION {
        return Err(CarError::Malformed(format!(
            "section of {len} bytes exceeds {MAX_SECTION}"
        )));
    }
    let mut buf = vec![0u8; len as usize];
    input
        .read_exact(&mut buf)
        .map_err(|_| CarError::Malformed("truncated section".into()))?;
    Ok(Some(buf))
}

/// Minimal dag-cbor reader for the CAR header: a map with `version: 1` and `roots: [CID…]`.
fn parse_header(buf: &[u8]) -> Result<Vec<Cid>, CarError> {
    let bad = |why: &str| CarError::Malformed(format!("header: {why}"));
    let mut c = Cbor { buf, pos: 0 };
    let (major, entries) = c.head()?;
    if major != 5 {
        return Err(bad("not a map"));
    }
    let (mut roots, mut version) = (None, None);
    for _ in 0..entries {
        let key = c.text()?;
        match key.as_str() {
            "version" => {
                let (major, v) = c.head()?;
                if major != 0 {
                    return Err(bad("version is not an integer"));
                }
                version = Some(v);
            }
            "roots" => {
                let (major, n) = c.head()?;
                if major != 4 {
                    return Err(bad("roots is not an array"));
                }
                let mut list = Vec::new();
                for _ in 0..n {
                    list.push(c.cid()?);
                }
                roots = Some(list);
            }
            _ => return Err(bad(&format!("unexpected key {key:?}"))),
        }
    }
    if version != Some(1) {
        return Err(bad(&format!("version {version:?}, only 1 is supported")));
    }
    roots.ok_or_else(|| bad("no roots"))
}

struct Cbor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Cbor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], CarError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| CarError::Malformed("header: truncated".into()))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn head(&mut self) -> Result<(u8, u64), CarError> {
        let first = self.take(1)?[0];
        let info = first & 0x1f;
        let n = match info {
            0..=23 => u64::from(info),
            24..=27 => {
                let len = 1usize << (info - 24);
                self.take(len)?
                    .iter()
                    .fold(0u64, |acc, &b| acc << 8 | u64::from(b))
            }
            _ => {
                return Err(CarError::Malformed(
                    "header: indefinite lengths are not dag-cbor".into(),
                ));
            }
        };
        Ok((first >> 5, n))
    }

    fn text(&mut self) -> Result<String, CarError> {
        let (major, n) = self.head()?;
        if major != 3 {
            return Err(CarError::Malformed("header: map key is not text".into()));
        }
        let bytes = self.take(n as usize)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| CarError::Malformed("header: key not UTF-8".into()))
    }

    fn cid(&mut self) -> Result<Cid, CarError> {
        let bad = |why: &str| CarError::Malformed(format!("header root: {why}"));
        if self.head()? != (6, 42) {
            return Err(bad("not tag 42"));
        }
        let (major, n) = self.head()?;
        if major != 2 {
            return Err(bad("not a byte string"));
        }
        let bytes = self.take(n as usize)?;
        match bytes.split_first() {
            Some((0, cid)) => Cid::try_from(cid).map_err(|e| bad(&e.to_string())),
            _ => Err(bad("missing 0x00 prefix")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_tamper() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsBlockstore::open(dir.path()).expect("open");
        let data: Vec<u8> = (0..700_000u32).map(|i| (i % 253) as u8).collect();
        let root = store.put(&data).expect("put").cid;
        let mut car = Vec::new();
        export(&store, &root, &mut car).expect("export");
        let (roots, blocks) = read(&car[..]).expect("read");
        assert_eq!(roots, vec![root]);
        assert_eq!(blocks.len(), 4);
        assert_eq!(blocks[0].0, root, "root first");

        let last = car.len() - 1;
        car[last] ^= 1;
        assert!(matches!(
            read(&car[..]),
            Err(CarError::Block(BlockError::HashMismatch { .. }))
        ));
        assert!(matches!(
            read(&car[..car.len() - 5]),
            Err(CarError::Malformed(_))
        ));
    }
}
