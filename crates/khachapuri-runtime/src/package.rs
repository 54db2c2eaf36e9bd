//! Program packaging: a bare WebAssembly module, or a zip holding the entry module.

use std::io::{Cursor, Read};

use crate::error::{Error, Result};

/// The first 8 bytes of a WebAssembly core module (magic + version 1).
const WASM_HEADER: [u8; 8] = *b"\0asm\x01\0\0\0";
/// The first 4 bytes of a zip (a local file header).
const ZIP_MAGIC: [u8; 4] = *b"PK\x03\x04";
/// Most entries a program zip may list.
const MAX_ZIP_ENTRIES: usize = 10_000;

/// Size caps for program packages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackageLimits {
    /// Largest module accepted, bare or unzipped, in bytes.
    pub max_module_bytes: u64,
    /// Largest total a zip may claim to unpack to, in bytes (the sum over all its entries).
    pub max_unzipped_bytes: u64,
}

impl Default for PackageLimits {
    fn default() -> Self {
        Self {
            max_module_bytes: 32 << 20,
            max_unzipped_bytes: 64 << 20,
        }
    }
}

/// Extract the entry module from a program: `bytes` is a bare module or a zip.
///
/// In a zip, `entry` names the module's path; without it the zip must hold exactly one
/// `*.wasm` file. Only that entry is decompressed, and only into memory: nothing outside the
/// zip is ever read. The sizes claimed by the central directory are checked first, then the
/// actual decompressed size is enforced while reading (so a zip whose headers lie is stopped).
pub fn extract_module(
    bytes: &[u8],
    entry: Option<&str>,
    limits: &PackageLimits,
) -> Result<Vec<u8>> {
    if bytes.starts_with(&ZIP_MAGIC) {
        return Ok(unzip_module(bytes, entry, limits)?.1);
    }
    check_module(bytes, limits)?;
    Ok(bytes.to_vec())
}

/// The entry module of a program zip and its path in the zip (`entry`, or the only `*.wasm`), with the
/// same checks as [`extract_module`].
pub fn unzip_module(
    zip: &[u8],
    entry: Option<&str>,
    limits: &PackageLimits,
) -> Result<(String, Vec<u8>)> {
    let (name, module) = unzip_entry(zip, entry, limits)?;
    check_module(&module, limits)?;
    Ok((name, module))
}

/// Check that `bytes` starts like a WebAssembly core module and is not over the size cap.
pub fn check_module(bytes: &[u8], limits: &PackageLimits) -> Result<()> {
    if bytes.len() as u64 > limits.max_module_bytes {
        return Err(Error::ModuleTooLarge {
            size: bytes.len() as u64,
            max: limits.max_module_bytes,
        });
    }
    if bytes.starts_with(b"\0asm") && !bytes.starts_with(&WASM_HEADER) {
        return Err(Error::NotWasm(
            "a WebAssembly component or unknown version; a core module is required".into(),
        ));
    }
    if !bytes.starts_with(&WASM_HEADER) {
        return Err(Error::NotWasm("missing the `\\0asm` header".into()));
    }
    if exports_no_start(bytes) {
        return Err(Error::MissingStart);
    }
    Ok(())
}

/// True when the module's exports are readable and none is the function `_start` (a library, a
/// `cdylib`, rather than a command): it could never run, so a deploy refuses it on the developer's
/// machine. A module whose exports cannot be read is left for the engine to judge.
fn exports_no_start(bytes: &[u8]) -> bool {
    use wasmparser::{ExternalKind, Parser, Payload};
    for payload in Parser::new(0).parse_all(bytes) {
        match payload {
            Ok(Payload::ExportSection(exports)) => {
                let mut has_start = false;
                for export in exports {
                    match export {
                        Ok(e) if e.name == "_start" && e.kind == ExternalKind::Func => {
                            has_start = true;
                        }
                        Ok(_) => {}
                        Err(_) => return false,
                    }
                }
                return !has_start;
            }
            Ok(Payload::End(_)) => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    false
}

/// Package `module` as a program zip holding it under `entry` (deflated), the form `khachapuri deploy`
/// uploads; [`extract_module`] reads it back. The module is checked first, so a deploy fails here, on the
/// developer's machine, rather than on every provider.
pub fn zip_module(entry: &str, module: &[u8], limits: &PackageLimits) -> Result<Vec<u8>> {
    check_module(module, limits)?;
    let bad = |e: zip::result::ZipError| Error::BadPackage(e.to_string());
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(0o644);
    writer
        .start_file(entry.trim_start_matches('/'), options)
        .map_err(bad)?;
    std::io::Write::write_all(&mut writer, module).map_err(|e| Error::BadPackage(e.to_string()))?;
    Ok(writer.finish().map_err(bad)?.into_inner())
}

fn unzip_entry(
    bytes: &[u8],
    entry: Option<&str>,
    limits: &PackageLimits,
) -> Result<(String, Vec<u8>)> {
    let bad = |e: zip::result::ZipError| Error::BadPackage(e.to_string());
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(bad)?;
    if archive.len() > MAX_ZIP_ENTRIES {
        return Err(Error::BadPackage(format!(
            "zip has {} entries, more than {MAX_ZIP_ENTRIES}",
            archive.len()
        )));
    }
    // What the central directory claims, before decompressing anything.
    let mut claimed_total: u64 = 0;
    let mut wasm_entries = Vec::new();
    for i in 0..archive.len() {
        let file = archive.by_index_raw(i).map_err(bad)?;
        claimed_total = claimed_total.saturating_add(file.size());
        if file.is_file() && file.name().ends_with(".wasm") {
            wasm_entries.push(file.name().to_string());
        }
    }
    if claimed_total > limits.max_unzipped_bytes {
        return Err(Error::UnzippedTooLarge {
            max: limits.max_unzipped_bytes,
        });
    }
    let name = match entry {
        Some(name) => name.trim_start_matches('/').to_string(),
        None => match wasm_entries.as_slice() {
            [only] => only.clone(),
            [] => return Err(Error::BadPackage("zip holds no .wasm module".into())),
            _ => {
                return Err(Error::BadPackage(
                    "zip holds several .wasm modules; name the entry".into(),
                ));
            }
        },
    };
    let file = archive
        .by_name(&name)
        .map_err(|_| Error::BadPackage(format!("entry module {name:?} is not in the zip")))?;
    if !file.is_file() {
        return Err(Error::BadPackage(format!("entry {name:?} is not a file")));
    }
    if file.size() > limits.max_module_bytes {
        return Err(Error::ModuleTooLarge {
            size: file.size(),
            max: limits.max_module_bytes,
        });
    }
    // Enforce the caps on what actually comes out, whatever the headers said.
    let cap = limits.max_module_bytes.min(limits.max_unzipped_bytes);
    let mut module = Vec::with_capacity(file.size().min(cap) as usize);
    file.take(cap + 1)
        .read_to_end(&mut module)
        .map_err(|e| Error::BadPackage(format!("cannot decompress {name:?}: {e}")))?;
    if module.len() as u64 > cap {
        return Err(if cap == limits.max_unzipped_bytes {
            Error::UnzippedTooLarge { max: cap }
        } else {
            Error::ModuleTooLarge {
                size: module.len() as u64,
                max: cap,
            }
        });
    }
    Ok((name, module))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod start_tests {
    use super::*;

    fn module(wat: &str) -> Vec<u8> {
        wat::parse_str(wat).unwrap()
    }

    #[test]
    fn a_module_without_a_start_function_is_refused_before_anything_compiles_it() {
        let limits = PackageLimits::default();
        let command = module(r#"(module (func (export "_start")))"#);
        assert!(check_module(&command, &limits).is_ok());
        let library = module(r#"(module (func (export "greet")))"#);
        assert!(matches!(
            check_module(&library, &limits),
            Err(Error::MissingStart)
        ));
        let nothing = module("(module)");
        assert!(matches!(
            check_module(&nothing, &limits),
            Err(Error::MissingStart)
        ));
        let not_a_function = module(r#"(module (memory (export "_start") 1))"#);
        assert!(matches!(
            check_module(&not_a_function, &limits),
            Err(Error::MissingStart)
        ));
        assert!(zip_module("lib.wasm", &library, &limits).is_err());
    }
}
