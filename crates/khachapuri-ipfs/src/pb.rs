//! Hand-written protobuf for the two tiny schemas IPFS files need: dag-pb (`PBNode`/`PBLink`)
//! and the UnixFS `Data` message carried inside a dag-pb node.
//!
//! Encoding follows the dag-pb spec's canonical form (Links are written before Data) and the
//! UnixFS field order used by Kubo, so the bytes — and so the CIDs — match Kubo's.

use cid::Cid;

/// A dag-pb or UnixFS message that could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("malformed {what}: {why}")]
pub struct DecodeError {
    what: &'static str,
    why: String,
}

fn err(what: &'static str, why: impl Into<String>) -> DecodeError {
    DecodeError {
        what,
        why: why.into(),
    }
}

/// One link of a dag-pb node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PbLink {
    /// The child's CID.
    pub hash: Cid,
    /// The link name; file chunks use `Some("")` as Kubo does.
    pub name: Option<String>,
    /// Cumulative size of the child's DAG (encoded bytes of every block under it).
    pub tsize: Option<u64>,
}

/// A dag-pb node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PbNode {
    /// Links to children, in order.
    pub links: Vec<PbLink>,
    /// Opaque data; for UnixFS an encoded [`UnixFsData`].
    pub data: Option<Vec<u8>>,
}

/// UnixFS node types (`Data.Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnixFsType {
    /// Raw bytes (legacy leaves).
    Raw,
    /// Directory.
    Directory,
    /// File.
    File,
    /// Metadata.
    Metadata,
    /// Symlink.
    Symlink,
    /// HAMT-sharded directory.
    HamtShard,
}

impl UnixFsType {
    fn from_code(code: u64) -> Result<Self, DecodeError> {
        Ok(match code {
            0 => Self::Raw,
            1 => Self::Directory,
            2 => Self::File,
            3 => Self::Metadata,
            4 => Self::Symlink,
            5 => Self::HamtShard,
            other => return Err(err("UnixFS Data", format!("unknown type {other}"))),
        })
    }

    fn code(self) -> u64 {
        match self {
            Self::Raw => 0,
            Self::Directory => 1,
            Self::File => 2,
            Self::Metadata => 3,
            Self::Symlink => 4,
            Self::HamtShard => 5,
        }
    }
}

/// The UnixFS `Data` message (only the fields files use; others are skipped when decoding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixFsData {
    /// Node type.
    pub kind: UnixFsType,
    /// Inline file bytes (absent for nodes over raw leaves).
    pub data: Option<Vec<u8>>,
    /// Total file bytes under this node.
    pub filesize: Option<u64>,
    /// File bytes under each child link, in link order.
    pub blocksizes: Vec<u64>,
}

// ---------------------------------------------------------------------------------------------
// wire helpers

/// Appends `v` as an unsigned LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads an unsigned varint from the front of `buf`, returning it and the bytes consumed.
pub fn get_varint(buf: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

fn put_bytes_field(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_varint(out, field << 3 | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_varint_field(out: &mut Vec<u8>, field: u64, v: u64) {
    put_varint(out, field << 3);
    put_varint(out, v);
}

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// Iterates `(field number, value)` over a protobuf message.
fn fields<'a>(
    what: &'static str,
    mut buf: &'a [u8],
) -> impl Iterator<Item = Result<(u64, Value<'a>), DecodeError>> {
    std::iter::from_fn(move || {
        if buf.is_empty() {
            return None;
        }
        let step = (|| {
            let (key, n) = get_varint(buf).ok_or_else(|| err(what, "bad field key"))?;
            buf = &buf[n..];
            let value = match key & 7 {
                0 => {
                    let (v, n) = get_varint(buf).ok_or_else(|| err(what, "bad varint"))?;
                    buf = &buf[n..];
                    Value::Varint(v)
                }
                2 => {
                    let (len, n) = get_varint(buf).ok_or_else(|| err(what, "bad length"))?;
                    let len = usize::try_from(len).map_err(|_| err(what, "length overflow"))?;
                    let rest = &buf[n..];
                    if rest.len() < len {
                        return Err(err(what, "truncated field"));
                    }
                    let (bytes, tail) = rest.split_at(len);
                    buf = tail;
                    Value::Bytes(bytes)
                }
                1 | 5 => {
                    let size = if key & 7 == 1 { 8 } else { 4 };
                    if buf.len() < size {
                        return Err(err(what, "truncated fixed field"));
                    }
                    buf = &buf[size..];
                    Value::Fixed
                }
                other => return Err(err(what, format!("unsupported wire type {other}"))),
            };
            Ok((key >> 3, value))
        })();
        if step.is_err() {
            buf = &[];
        }
        Some(step)
    })
}

// ---------------------------------------------------------------------------------------------
// dag-pb

impl PbNode {
    /// Encodes the node in canonical dag-pb form (Links, then Data).
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(self.links.len() * 48 + self.data.as_ref().map_or(0, Vec::len) + 8);
        let mut link_buf = Vec::with_capacity(64);
        for link in &self.links {
            link_buf.clear();
            put_bytes_field(&mut link_buf, 1, &link.hash.to_bytes());
            if let Some(name) = &link.name {
                put_bytes_field(&mut link_buf, 2, name.as_bytes());
            }
            if let Some(tsize) = link.tsize {
                put_varint_field(&mut link_buf, 3, tsize);
            }
            put_bytes_field(&mut out, 2, &link_buf);
        }
        if let Some(data) = &self.data {
            put_bytes_field(&mut out, 1, data);
        }
        out
    }

    /// Decodes a dag-pb node.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut node = PbNode::default();
        for field in fields("dag-pb node", buf) {
            match field? {
                (1, Value::Bytes(b)) => node.data = Some(b.to_vec()),
                (2, Value::Bytes(b)) => node.links.push(decode_link(b)?),
                (n, _) => return Err(err("dag-pb node", format!("unexpected field {n}"))),
            }
        }
        Ok(node)
    }
}

fn decode_link(buf: &[u8]) -> Result<PbLink, DecodeError> {
    let (mut hash, mut name, mut tsize) = (None, None, None);
    for field in fields("dag-pb link", buf) {
        match field? {
            (1, Value::Bytes(b)) => {
                hash = Some(
                    Cid::try_from(b).map_err(|e| err("dag-pb link", format!("bad CID: {e}")))?,
                )
            }
            (2, Value::Bytes(b)) => {
                name = Some(
                    String::from_utf8(b.to_vec())
                        .map_err(|_| err("dag-pb link", "name is not UTF-8"))?,
                )
            }
            (3, Value::Varint(v)) => tsize = Some(v),
            (n, _) => return Err(err("dag-pb link", format!("unexpected field {n}"))),
        }
    }
    let hash = hash.ok_or_else(|| err("dag-pb link", "missing Hash"))?;
    Ok(PbLink { hash, name, tsize })
}

// ---------------------------------------------------------------------------------------------
// UnixFS

impl UnixFsData {
    /// A File node over children (no inline data), as Kubo builds over raw leaves.
    pub fn file(blocksizes: Vec<u64>) -> Self {
        UnixFsData {
            kind: UnixFsType::File,
            data: None,
            filesize: Some(blocksizes.iter().sum()),
            blocksizes,
        }
    }

    /// Encodes in field order (Type, Data, filesize, blocksizes unpacked), as Kubo does.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.blocksizes.len() * 4);
        put_varint_field(&mut out, 1, self.kind.code());
        if let Some(data) = &self.data {
            put_bytes_field(&mut out, 2, data);
        }
        if let Some(size) = self.filesize {
            put_varint_field(&mut out, 3, size);
        }
        for &size in &self.blocksizes {
            put_varint_field(&mut out, 4, size);
        }
        out
    }

    /// Decodes a UnixFS `Data` message; fields other than the four above are skipped.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let (mut kind, mut data, mut filesize, mut blocksizes) = (None, None, None, Vec::new());
        for field in fields("UnixFS Data", buf) {
            match field? {
                (1, Value::Varint(v)) => kind = Some(UnixFsType::from_code(v)?),
                (2, Value::Bytes(b)) => data = Some(b.to_vec()),
                (3, Value::Varint(v)) => filesize = Some(v),
                (4, Value::Varint(v)) => blocksizes.push(v),
                (4, Value::Bytes(packed)) => {
                    let mut rest = packed;
                    while !rest.is_empty() {
                        let (v, n) =
                            get_varint(rest).ok_or_else(|| err("UnixFS Data", "bad blocksizes"))?;
                        blocksizes.push(v);
                        rest = &rest[n..];
                    }
                }
                (1..=4, _) => return Err(err("UnixFS Data", "wrong wire type")),
                _ => {}
            }
        }
        let kind = kind.ok_or_else(|| err("UnixFS Data", "missing Type"))?;
        Ok(UnixFsData {
            kind,
            data,
            filesize,
            blocksizes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_roundtrip() {
        for v in [0, 1, 127, 128, 300, 262_144, u64::MAX] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            assert_eq!(get_varint(&buf), Some((v, buf.len())));
        }
        assert_eq!(get_varint(&[0x80]), None);
    }

    #[test]
    fn unixfs_roundtrip_and_layout() {
        let d = UnixFsData::file(vec![262_144, 5]);
        let enc = d.encode();
        // Type=2, filesize=262149, blocksizes unpacked
        assert_eq!(&enc[..2], &[0x08, 0x02]);
        assert_eq!(enc[2], 0x18);
        assert_eq!(UnixFsData::decode(&enc).expect("decodes"), d);
    }

    #[test]
    fn pbnode_links_before_data() {
        let cid: Cid = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
            .parse()
            .expect("cid");
        let node = PbNode {
            links: vec![PbLink {
                hash: cid,
                name: Some(String::new()),
                tsize: Some(0),
            }],
            data: Some(vec![8, 2]),
        };
        let enc = node.encode();
        assert_eq!(enc[0], 0x12, "links come first");
        assert_eq!(PbNode::decode(&enc).expect("decodes"), node);
        assert!(
            PbNode::decode(&[0x12, 0x05, 0x0a]).is_err(),
            "truncated input is an error"
        );
    }
}
