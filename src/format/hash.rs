//! SHA-256 hashes in the notations Nix uses, and a writer that hashes and
//! counts the bytes that pass through it.
//!
//! Nix has written a NAR hash as `sha256:<nix32>` (narinfo, exportReferencesGraph),
//! `sha256:<hex>` (old caches) and SRI `sha256-<base64>` (`nix path-info --json`
//! since 2.4); Nix also reads `sha256:<base64>`. We read all four and always
//! write `sha256:<nix32>`.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256 as Hasher};
use thiserror::Error;

use crate::format::nixbase32;

/// A SHA-256 digest: a NAR's hash (narinfo `NarHash`) or a NAR file's (`FileHash`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256(pub [u8; 32]);

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParseHashError {
    #[error("unsupported hash algorithm in {0:?}: only sha256 is used for NARs")]
    Algorithm(String),
    #[error(
        "malformed sha256 hash {0:?}: expected sha256:<nix32>, sha256:<hex>, sha256:<base64> or sha256-<base64>"
    )]
    Malformed(String),
}

impl Sha256 {
    pub fn digest(data: &[u8]) -> Self {
        Sha256(Hasher::digest(data).into())
    }

    /// The 52-character Nix base32 form, as used in file names.
    pub fn to_nix32(&self) -> String {
        nixbase32::encode(&self.0)
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn to_sri(&self) -> String {
        format!("sha256-{}", STANDARD.encode(self.0))
    }
}

impl FromStr for Sha256 {
    type Err = ParseHashError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || ParseHashError::Malformed(s.to_owned());
        let bytes = if let Some(rest) = s.strip_prefix("sha256:") {
            match rest.len() {
                52 => nixbase32::decode(rest, 32).map_err(|_| malformed())?,
                64 => decode_hex(rest).ok_or_else(malformed)?,
                // Nix also takes base64 after the colon, as it does in SRI.
                44 => STANDARD.decode(rest).map_err(|_| malformed())?,
                _ => return Err(malformed()),
            }
        } else if let Some(rest) = s.strip_prefix("sha256-") {
            STANDARD.decode(rest).map_err(|_| malformed())?
        } else if let Some((algo, _)) = s.split_once([':', '-']) {
            return Err(ParseHashError::Algorithm(algo.to_owned()));
        } else {
            return Err(malformed());
        };
        Ok(Sha256(bytes.try_into().map_err(|_| malformed())?))
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// `sha256:<nix32>`, the form narinfo files and fingerprints use.
impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_nix32())
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A running SHA-256 and byte count: what both hashing adapters keep.
struct Running {
    hasher: Hasher,
    len: u64,
}

impl Running {
    fn new() -> Self {
        Running {
            hasher: Hasher::new(),
            len: 0,
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
    }

    fn finish(self) -> (Sha256, u64) {
        (Sha256(self.hasher.finalize().into()), self.len)
    }
}

/// Passes writes on to `inner` while hashing them and counting their length.
pub struct HashingWriter<W> {
    inner: W,
    running: Running,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            running: Running::new(),
        }
    }

    /// The inner writer, and the hash and length of everything written.
    pub fn finish(self) -> (W, Sha256, u64) {
        let (hash, len) = self.running.finish();
        (self.inner, hash, len)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.running.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Passes reads from `inner` on while hashing them and counting their length:
/// the reading side of [`HashingWriter`].
pub struct HashingReader<R> {
    inner: R,
    running: Running,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            running: Running::new(),
        }
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.running.len
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The hash and length of everything read so far.
    pub fn finish(self) -> (R, Sha256, u64) {
        let (hash, len) = self.running.finish();
        (self.inner, hash, len)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.running.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The same digest three ways, as `nix-hash --to-base32`/`--to-sri` print it.
    const NIX32: &str = "sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73";
    const HEX: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const SRI: &str = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";

    #[test]
    fn parses_every_notation_nix_has_used() {
        let expected = Sha256::digest(b"");
        let colon_base64 = SRI.replacen('-', ":", 1);
        for s in [NIX32, HEX, SRI, &colon_base64] {
            assert_eq!(s.parse::<Sha256>().unwrap(), expected, "{s}");
        }
    }

    #[test]
    fn displays_as_sha256_nix32() {
        let h = Sha256::digest(b"");
        assert_eq!(h.to_string(), NIX32);
        assert_eq!(h.to_sri(), SRI);
        assert_eq!(format!("sha256:{}", h.to_hex()), HEX);
    }

    #[test]
    fn rejects_other_algorithms_and_garbage() {
        assert!(matches!(
            "md5:abc".parse::<Sha256>(),
            Err(ParseHashError::Algorithm(a)) if a == "md5"
        ));
        for bad in [
            "",
            "sha256:",
            "sha256:xyz",
            "sha256-!!!",
            "sha256-AAAA",
            "0mdqa9w1",
        ] {
            assert!(bad.parse::<Sha256>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hashing_reader_hashes_and_counts_what_it_passes_on() {
        let mut r = HashingReader::new(&b"hello world"[..]);
        let mut head = [0; 6];
        r.read_exact(&mut head).unwrap();
        assert_eq!(r.bytes_read(), 6);
        io::copy(&mut r, &mut io::sink()).unwrap();
        let (_, hash, len) = r.finish();
        assert_eq!(len, 11);
        assert_eq!(hash, Sha256::digest(b"hello world"));
    }

    #[test]
    fn hashing_writer_hashes_and_counts_what_it_passes_on() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"hello ").unwrap();
        w.write_all(b"world").unwrap();
        let (inner, hash, len) = w.finish();
        assert_eq!(inner, b"hello world");
        assert_eq!(len, 11);
        assert_eq!(hash, Sha256::digest(b"hello world"));
    }
}
