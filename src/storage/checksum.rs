//! SHA-256 checksums, the ones recorded for every object, of bytes and of local files.

use std::path::Path as FsPath;

use sha2::{Digest, Sha256};

/// SHA-256 of a byte slice, hex: the checksum recorded for every object.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Copies `source` to `target` and returns the SHA-256 (hex) of what was copied.
pub(super) fn copy_and_hash(source: &FsPath, target: &FsPath) -> std::io::Result<String> {
    use std::io::Write;
    let mut output = std::fs::File::create(target)?;
    let checksum = hash_reading(source, |chunk| output.write_all(chunk))?;
    output.flush()?;
    Ok(checksum)
}

/// SHA-256 of a local file, hex, read in 1 MiB pieces (files may be larger than memory allows).
pub fn sha256_file(path: &FsPath) -> std::io::Result<String> {
    hash_reading(path, |_| Ok(()))
}

/// Reads a file in 1 MiB pieces, handing each to `each`; returns the SHA-256 (hex) of it all.
fn hash_reading(
    path: &FsPath,
    mut each: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buffer[..read]);
        each(&buffer[..read])?;
    }
}
