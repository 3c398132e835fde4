//! What `verify` finds: each [`Problem`], its [`ProblemKind`], and the
//! [`Report`] with its [`Counts`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::support::progress::{count, human_bytes};

/// What is wrong, in a word; the JSON output's `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    /// There is no `nix-cache-info`.
    MissingCacheInfo,
    /// `nix-cache-info` cannot be read or has a malformed line.
    CacheInfo,
    /// `nix-cache-info` has no `StoreDir`, or another one than expected.
    StoreDir,
    /// A narinfo cannot be read or parsed.
    BadNarinfo,
    /// A narinfo's file name is not its store path's hash part.
    NarinfoName,
    /// A file name leads outside the cache.
    OutsideCache,
    /// The NAR file a narinfo names does not exist, or is not a file.
    MissingNar,
    FileSize,
    FileHash,
    /// The narinfo's `Compression` is one this program cannot read.
    UnsupportedCompression,
    /// The NAR file is not valid data of its compression.
    Decompression,
    /// The decompressed file is not a well-formed NAR.
    BadNar,
    NarSize,
    NarHash,
    /// A reference has no narinfo in the cache.
    MissingReference,
    /// The references of some narinfos form a cycle, which Nix never writes.
    ReferenceCycle,
    /// A signature is malformed, or does not verify for the trusted key it names.
    BadSignature,
    /// Signatures are required and the path has no valid one.
    MissingSignature,
    /// A file could not be read.
    Io,
}

impl ProblemKind {
    /// The kebab-case name, as in the JSON output.
    pub fn name(self) -> &'static str {
        use ProblemKind::*;
        match self {
            MissingCacheInfo => "missing-cache-info",
            CacheInfo => "cache-info",
            StoreDir => "store-dir",
            BadNarinfo => "bad-narinfo",
            NarinfoName => "narinfo-name",
            OutsideCache => "outside-cache",
            MissingNar => "missing-nar",
            FileSize => "file-size",
            FileHash => "file-hash",
            UnsupportedCompression => "unsupported-compression",
            Decompression => "decompression",
            BadNar => "bad-nar",
            NarSize => "nar-size",
            NarHash => "nar-hash",
            MissingReference => "missing-reference",
            ReferenceCycle => "reference-cycle",
            BadSignature => "bad-signature",
            MissingSignature => "missing-signature",
            Io => "io",
        }
    }
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One thing wrong with a cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The store path it is about or, when that is not known, the file,
    /// relative to the cache (`nix-cache-info`, `<hash>.narinfo`).
    pub path: String,
    pub kind: ProblemKind,
    /// What is wrong, for a person.
    pub message: String,
}

impl Problem {
    pub(super) fn new(
        path: impl Into<String>,
        kind: ProblemKind,
        message: impl Into<String>,
    ) -> Self {
        Problem {
            path: path.into(),
            kind,
            message: message.into(),
        }
    }
}

/// `<path>: <kind>: <message>`, one line.
impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.path, self.kind, self.message)
    }
}

/// What was checked, in numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Narinfo files in the cache.
    pub narinfos: usize,
    /// Narinfos about which nothing is wrong.
    pub paths_ok: usize,
    /// Narinfos with a valid signature by a trusted key.
    pub signed: usize,
    /// Narinfos with at least one `Sig:` line, whoever signed them.
    pub with_signatures: usize,
    pub problems: usize,
    /// Problems of each kind.
    pub by_kind: BTreeMap<ProblemKind, usize>,
    /// Bytes of NAR files read.
    pub file_bytes: u64,
    /// Bytes of NAR decompressed and parsed.
    pub nar_bytes: u64,
}

/// The outcome of [`verify`](super::verify): every problem found, and the counts.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The cache, as given.
    pub cache: PathBuf,
    pub store_dir: String,
    /// Whether trusted keys were given, so that signatures were checked.
    pub signatures_checked: bool,
    /// Whether no problem was found.
    pub ok: bool,
    pub counts: Counts,
    /// The upstreams its `nix-cache-info` names (`file:///…`, `key NAME`):
    /// the references it lacks are there.
    pub upstreams: Vec<String>,
    /// Problems about the cache as a whole first, then by narinfo file name.
    pub problems: Vec<Problem>,
}

/// `1 path`, `2 paths`.
fn paths(n: usize) -> String {
    count(n, "path", "paths")
}

impl Report {
    /// One line saying how it went, e.g. `checked 12 paths (NAR 3.1 MiB,
    /// files 1.2 MiB) in 0.42 s: no problems`.
    pub fn summary(&self, elapsed: Duration) -> String {
        let c = &self.counts;
        let mut line = format!(
            "checked {} (NAR {}, files {}) in {:.2} s: ",
            paths(c.narinfos),
            human_bytes(c.nar_bytes),
            human_bytes(c.file_bytes),
            elapsed.as_secs_f64()
        );
        if self.ok {
            line += "no problems";
        } else {
            line += &format!(
                "{}, {} OK",
                count(c.problems, "problem", "problems"),
                paths(c.paths_ok)
            );
        }
        if c.signed > 0 {
            line += &format!(", {} signed by a trusted key", c.signed);
        }
        // "No problems" must not read as "the signatures are good".
        if !self.signatures_checked && c.with_signatures > 0 {
            line += &format!(
                "; {} signed, signatures not checked (give --trusted-key or --trusted-key-file)",
                paths(c.with_signatures)
            );
        }
        if !self.upstreams.is_empty() {
            line += &format!("; a delta of {}", self.upstreams.join(", "));
        }
        line
    }
}
