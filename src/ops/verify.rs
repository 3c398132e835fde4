//! Checking a flat-file binary cache before trusting it (`mk-binary-cache verify`).
//!
//! [`verify`] reads a cache, ours or one written by `nix copy`, and reports
//! every [`Problem`] it finds rather than stopping at the first:
//!
//! - `nix-cache-info` exists, parses, and its `StoreDir` is the one expected;
//! - every `<hash>.narinfo` parses, and its name is its `StorePath`'s hash part;
//! - its `URL` names a regular file inside the cache: never an absolute path
//!   or one with `.` or `..` segments, and symlinks on the way are followed
//!   only while they stay inside the cache (see [`resolve`]: nothing outside
//!   the cache is ever opened, or even looked at);
//! - that file has the `FileSize` and `FileHash` the narinfo gives;
//! - it decompresses (xz, zstd, bzip2 or none) to one well-formed NAR of
//!   `NarSize` bytes with hash `NarHash`. Decompression stops after
//!   `NarSize + 1` bytes, so a file that would expand without end (a
//!   decompression bomb) is reported, not followed;
//! - every reference has a narinfo in the cache: the cache is closed;
//! - signatures by the trusted keys are valid, and with
//!   [`Options::require_sigs`] every path has one. This is stricter than Nix,
//!   which also accepts a content-addressed path without any signature.
//!
//! Reading is streaming: a NAR file goes through one hasher, the
//! decompressor, a second hasher and the NAR parser in one pass, in buffers of
//! a fixed size, whatever the size of the NAR. NARs are checked in parallel,
//! largest first, by [`schedule::run`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use thiserror::Error;

use crate::format::cache_info::{self, CacheInfo};
use crate::format::compression;
use crate::format::hash::{HashingReader, Sha256};
use crate::format::nar;
use crate::format::narinfo::{NarInfo, Sig};
use crate::format::signing::PublicKey;
use crate::format::store_path::{DEFAULT_STORE_DIR, StorePath};
use crate::support::progress::{Progress, human_bytes};
use crate::support::schedule;

/// How many symlinks a file name may go through, as Linux allows.
const MAX_SYMLINKS: usize = 40;
/// A narinfo (or `nix-cache-info`) is a few hundred bytes; a larger file is
/// not read whole.
const MAX_NARINFO_SIZE: u64 = 1 << 20;
/// Buffer size of each stage of the NAR pipeline.
const BUFFER: usize = 64 * 1024;

/// What to check a cache against.
#[derive(Debug, Clone)]
pub struct Options {
    /// The store directory the cache must be for.
    pub store_dir: String,
    /// Keys whose signatures are checked.
    pub trusted_keys: Vec<PublicKey>,
    /// Whether a path without a valid signature by a trusted key is a problem.
    pub require_sigs: bool,
    /// Worker threads.
    pub jobs: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            store_dir: DEFAULT_STORE_DIR.to_owned(),
            trusted_keys: Vec::new(),
            require_sigs: false,
            jobs: 1,
        }
    }
}

/// Why a cache could not be checked at all. Everything wrong *inside* a
/// cache is a [`Problem`] instead.
#[derive(Debug, Error)]
pub enum VerifyError {
    #[error("cannot open the cache '{path}': {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot list the cache '{path}': {source}")]
    List { path: PathBuf, source: io::Error },
    #[error("requiring signatures needs at least one trusted key")]
    NoTrustedKeys,
}

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
    fn new(path: impl Into<String>, kind: ProblemKind, message: impl Into<String>) -> Self {
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
    pub problems: usize,
    /// Problems of each kind.
    pub by_kind: BTreeMap<ProblemKind, usize>,
    /// Bytes of NAR files read.
    pub file_bytes: u64,
    /// Bytes of NAR decompressed and parsed.
    pub nar_bytes: u64,
}

/// The outcome of [`verify`]: every problem found, and the counts.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The cache, as given.
    pub cache: PathBuf,
    pub store_dir: String,
    /// Whether no problem was found.
    pub ok: bool,
    pub counts: Counts,
    /// Problems about the cache as a whole first, then by narinfo file name.
    pub problems: Vec<Problem>,
}

impl Report {
    /// One line saying how it went, e.g. `checked 12 paths (NAR 3.1 MiB,
    /// files 1.2 MiB) in 0.42 s: no problems`.
    pub fn summary(&self, elapsed: Duration) -> String {
        let c = &self.counts;
        let mut line = format!(
            "checked {} paths (NAR {}, files {}) in {:.2} s: ",
            c.narinfos,
            human_bytes(c.nar_bytes),
            human_bytes(c.file_bytes),
            elapsed.as_secs_f64()
        );
        if self.ok {
            line += "no problems";
        } else {
            let s = if c.problems == 1 { "" } else { "s" };
            line += &format!("{} problem{s}, {} paths OK", c.problems, c.paths_ok);
        }
        if c.signed > 0 {
            line += &format!(", {} signed by a trusted key", c.signed);
        }
        line
    }
}

/// Checks the cache at `cache`; see the module documentation for what.
pub fn verify(cache: &Path, opts: &Options, progress: &Progress) -> Result<Report, VerifyError> {
    if opts.require_sigs && opts.trusted_keys.is_empty() {
        return Err(VerifyError::NoTrustedKeys);
    }
    let root = fs::canonicalize(cache).map_err(|source| VerifyError::Open {
        path: cache.to_owned(),
        source,
    })?;
    let mut problems = check_cache_info(&root, &opts.store_dir);

    let names = narinfo_names(&root)?;
    let mut checked: Vec<Checked> = names.iter().map(|n| read_narinfo(&root, n, opts)).collect();

    check_references(&mut checked);

    let file_bytes = AtomicU64::new(0);
    let nar_bytes = AtomicU64::new(0);
    let with_nar: Vec<usize> = (0..checked.len())
        .filter(|&i| checked[i].info.is_some())
        .collect();
    let size = |&i: &usize| {
        let info = checked[i].info.as_ref().expect("filtered on info");
        info.file_size.unwrap_or(info.nar_size)
    };
    progress.begin(with_nar.len(), with_nar.iter().map(size).sum());
    let found = Mutex::new(Vec::new());
    // No path gets more than one thread: a NAR is read and parsed in order.
    schedule::run(&with_nar, size, u64::MAX, opts.jobs, |&i, _threads| {
        let c = &checked[i];
        let info = c.info.as_ref().expect("filtered on info");
        let (nar_problems, read) = check_nar(&root, info, &c.subject);
        file_bytes.fetch_add(read.file, Ordering::Relaxed);
        nar_bytes.fetch_add(read.nar, Ordering::Relaxed);
        progress.advance(size(&i));
        progress.item_done(format_args!("checked {}", info.store_path));
        found.lock().unwrap().push((i, nar_problems));
        Ok::<(), Infallible>(())
    })
    .unwrap_or_else(|never| match never {});
    for (i, nar_problems) in found.into_inner().unwrap() {
        checked[i].problems.extend(nar_problems);
    }

    let mut counts = Counts {
        narinfos: checked.len(),
        file_bytes: file_bytes.into_inner(),
        nar_bytes: nar_bytes.into_inner(),
        ..Counts::default()
    };
    for c in checked {
        counts.paths_ok += usize::from(c.problems.is_empty());
        counts.signed += usize::from(c.signed);
        problems.extend(c.problems);
    }
    counts.problems = problems.len();
    for p in &problems {
        *counts.by_kind.entry(p.kind).or_default() += 1;
    }
    Ok(Report {
        cache: cache.to_owned(),
        store_dir: opts.store_dir.clone(),
        ok: problems.is_empty(),
        counts,
        problems,
    })
}

/// Reports every reference that has no narinfo describing it: a cache must
/// be closed under references.
fn check_references(checked: &mut [Checked]) {
    let described: HashMap<String, Option<StorePath>> = checked
        .iter()
        .map(|c| {
            let path = c.info.as_ref().map(|i| i.store_path.clone());
            (c.hash_part().to_owned(), path)
        })
        .collect();
    for c in checked.iter_mut() {
        let Some(info) = &c.info else { continue };
        for reference in info.references.iter().filter(|r| **r != info.store_path) {
            let message = match described.get(reference.hash_part()) {
                None => format!("refers to {reference}, which has no narinfo in the cache"),
                Some(Some(other)) if other != reference => format!(
                    "refers to {reference}, but {}.narinfo describes {other}",
                    reference.hash_part()
                ),
                // Present; or present but unreadable, which is reported already.
                Some(_) => continue,
            };
            c.problems.push(Problem::new(
                &c.subject,
                ProblemKind::MissingReference,
                message,
            ));
        }
    }
}

/// The problems with `nix-cache-info`.
fn check_cache_info(root: &Path, store_dir: &str) -> Vec<Problem> {
    let name = cache_info::FILE_NAME;
    let problem = |kind, message: String| vec![Problem::new(name, kind, message)];
    let path = match resolve(root, name) {
        Ok(path) => path,
        Err(Unreachable::Missing(_)) => {
            return problem(
                ProblemKind::MissingCacheInfo,
                "the cache has no nix-cache-info: Nix would try to create one, and fail on a read-only cache".into(),
            );
        }
        Err(e @ Unreachable::Escapes { .. }) => {
            return problem(ProblemKind::OutsideCache, e.to_string());
        }
        Err(e) => return problem(ProblemKind::CacheInfo, e.to_string()),
    };
    let text = match open_no_follow(&path).and_then(|f| {
        let mut bytes = Vec::new();
        f.take(MAX_NARINFO_SIZE)
            .read_to_end(&mut bytes)
            .map(|_| bytes)
    }) {
        Ok(bytes) => bytes,
        Err(e) => return problem(ProblemKind::Io, format!("cannot read it: {e}")),
    };
    let info: CacheInfo = match String::from_utf8(text) {
        Ok(text) => match text.parse() {
            Ok(info) => info,
            Err(e) => return problem(ProblemKind::CacheInfo, e.to_string()),
        },
        Err(_) => return problem(ProblemKind::CacheInfo, "it is not UTF-8 text".into()),
    };
    match info.store_dir {
        None => problem(
            ProblemKind::StoreDir,
            format!("it has no StoreDir line; expected StoreDir: {store_dir}"),
        ),
        Some(found) if found != store_dir => problem(
            ProblemKind::StoreDir,
            format!("the cache is for StoreDir {found}, not {store_dir}"),
        ),
        Some(_) => Vec::new(),
    }
}

/// The names of the `*.narinfo` files at the top of the cache, sorted.
fn narinfo_names(root: &Path) -> Result<Vec<String>, VerifyError> {
    let list_error = |source| VerifyError::List {
        path: root.to_owned(),
        source,
    };
    let mut names = Vec::new();
    for entry in fs::read_dir(root).map_err(list_error)? {
        let name = entry.map_err(list_error)?.file_name();
        // Nix names narinfos by hash part: a name that is not UTF-8 is no narinfo.
        if let Some(name) = name.to_str().filter(|n| n.ends_with(".narinfo")) {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// One narinfo file and what was found about it.
struct Checked {
    /// `<hash>.narinfo`.
    file: String,
    /// The store path, or the file name if the narinfo does not parse.
    subject: String,
    info: Option<NarInfo>,
    /// Whether a trusted key signed it.
    signed: bool,
    problems: Vec<Problem>,
}

impl Checked {
    /// The hash part the file name claims.
    fn hash_part(&self) -> &str {
        self.file.strip_suffix(".narinfo").unwrap_or(&self.file)
    }
}

/// Reads and parses one narinfo, and checks its name and signatures.
fn read_narinfo(root: &Path, file: &str, opts: &Options) -> Checked {
    let mut checked = Checked {
        file: file.to_owned(),
        subject: file.to_owned(),
        info: None,
        signed: false,
        problems: Vec::new(),
    };
    let text = match read_small(root, file) {
        Ok(text) => text,
        Err(problem) => {
            checked.problems.push(problem);
            return checked;
        }
    };
    let info = match NarInfo::parse(&text, &opts.store_dir) {
        Ok(info) => info,
        Err(e) => {
            checked
                .problems
                .push(Problem::new(file, ProblemKind::BadNarinfo, e.to_string()));
            return checked;
        }
    };
    checked.subject = info.store_path.to_string();
    let subject = checked.subject.as_str();
    if checked.hash_part() != info.store_path.hash_part() {
        checked.problems.push(Problem::new(
            subject,
            ProblemKind::NarinfoName,
            format!(
                "described by {file}, but its narinfo must be named {}.narinfo",
                info.store_path.hash_part()
            ),
        ));
    }
    let (signed, problems) = check_signatures(&info, subject, opts);
    checked.signed = signed;
    checked.problems.extend(problems);
    checked.info = Some(info);
    checked
}

/// Reads a narinfo inside the cache as text.
fn read_small(root: &Path, file: &str) -> Result<String, Problem> {
    let path = resolve(root, file).map_err(|e| {
        let kind = match e {
            Unreachable::Escapes { .. } | Unreachable::NotRelative { .. } => {
                ProblemKind::OutsideCache
            }
            _ => ProblemKind::BadNarinfo,
        };
        Problem::new(file, kind, e.to_string())
    })?;
    let io_problem =
        |e: io::Error| Problem::new(file, ProblemKind::Io, format!("cannot read it: {e}"));
    let mut bytes = Vec::new();
    open_no_follow(&path)
        .map_err(io_problem)?
        .take(MAX_NARINFO_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(io_problem)?;
    if bytes.len() as u64 > MAX_NARINFO_SIZE {
        return Err(Problem::new(
            file,
            ProblemKind::BadNarinfo,
            format!(
                "larger than {}: not a narinfo",
                human_bytes(MAX_NARINFO_SIZE)
            ),
        ));
    }
    String::from_utf8(bytes)
        .map_err(|_| Problem::new(file, ProblemKind::BadNarinfo, "not UTF-8 text"))
}

/// Checks the signatures by trusted keys; returns whether one is valid.
fn check_signatures(info: &NarInfo, subject: &str, opts: &Options) -> (bool, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut signed = false;
    let mut bad_trusted = false;
    let mut fingerprint = None;
    for sig in &info.signatures {
        let sig = match sig {
            Sig::Valid(sig) => sig,
            Sig::Malformed { text, error } => {
                problems.push(Problem::new(
                    subject,
                    ProblemKind::BadSignature,
                    format!("malformed Sig {text:?}: {error}"),
                ));
                continue;
            }
        };
        let Some(key) = opts.trusted_keys.iter().find(|k| k.name() == sig.key_name) else {
            continue;
        };
        let fingerprint = fingerprint.get_or_insert_with(|| info.fingerprint());
        if key.verify(fingerprint, sig) {
            signed = true;
        } else {
            bad_trusted = true;
            problems.push(Problem::new(
                subject,
                ProblemKind::BadSignature,
                format!(
                    "the signature by trusted key {} does not match the narinfo: it was altered after signing, or signed by another key of that name",
                    sig.key_name
                ),
            ));
        }
    }
    // A bad signature by a trusted key says it already: no second line.
    if opts.require_sigs && !signed && !bad_trusted {
        let by: Vec<&str> = info.signatures.iter().filter_map(Sig::key_name).collect();
        let message = if by.is_empty() {
            "no signature, and signatures are required".to_owned()
        } else {
            format!(
                "no valid signature by a trusted key (signed by: {})",
                by.join(", ")
            )
        };
        problems.push(Problem::new(
            subject,
            ProblemKind::MissingSignature,
            message,
        ));
    }
    (signed, problems)
}

/// Bytes read while checking one NAR.
#[derive(Debug, Default, Clone, Copy)]
struct BytesRead {
    file: u64,
    nar: u64,
}

/// Checks the NAR file of `info`.
fn check_nar(root: &Path, info: &NarInfo, subject: &str) -> (Vec<Problem>, BytesRead) {
    let mut problems = Vec::new();
    let mut problem = |kind, message: String| problems.push(Problem::new(subject, kind, message));
    let url = &info.url;
    let path = match resolve(root, url) {
        Ok(path) => path,
        Err(e) => {
            let kind = match e {
                Unreachable::NotRelative { .. } | Unreachable::Escapes { .. } => {
                    ProblemKind::OutsideCache
                }
                Unreachable::Io { .. } => ProblemKind::Io,
                _ => ProblemKind::MissingNar,
            };
            problem(kind, format!("URL {url}: {e}"));
            return (problems, BytesRead::default());
        }
    };
    let file = match open_no_follow(&path) {
        Ok(file) => file,
        Err(e) => {
            problem(ProblemKind::Io, format!("cannot open {url}: {e}"));
            return (problems, BytesRead::default());
        }
    };
    let reading = read_nar(file, &info.compression, info.nar_size);
    let read = BytesRead {
        file: reading.file_size,
        nar: reading.nar_size,
    };
    if let Some(e) = reading.file_error {
        problem(ProblemKind::Io, format!("reading {url} failed: {e}"));
        return (problems, read);
    }
    if let Some(expected) = info.file_size
        && expected != reading.file_size
    {
        problem(
            ProblemKind::FileSize,
            format!(
                "{url} is {} bytes, the narinfo says FileSize: {expected}",
                reading.file_size
            ),
        );
    }
    if let Some(expected) = info.file_hash
        && expected != reading.file_hash
    {
        problem(
            ProblemKind::FileHash,
            format!(
                "{url} has hash {}, the narinfo says FileHash: {expected}",
                reading.file_hash
            ),
        );
    }
    let expected_size = info.nar_size;
    match reading.outcome {
        NarOutcome::Unsupported => problem(
            ProblemKind::UnsupportedCompression,
            format!(
                "Compression: {}: cannot decompress {url} to check the NAR (known: xz, zstd, bzip2, none)",
                info.compression
            ),
        ),
        NarOutcome::Decompression(e) => problem(
            ProblemKind::Decompression,
            format!("{url} is not valid {} data: {e}", info.compression),
        ),
        NarOutcome::TooLong => problem(
            ProblemKind::NarSize,
            format!(
                "{url} decompresses to more than NarSize: {expected_size} bytes; stopped after {}",
                expected_size.saturating_add(1)
            ),
        ),
        NarOutcome::Read { size, hash, parsed } => {
            if let Err(e) = parsed {
                problem(
                    ProblemKind::BadNar,
                    format!("{url} is not a valid NAR: {e}"),
                );
            }
            if size != expected_size {
                problem(
                    ProblemKind::NarSize,
                    format!("the NAR is {size} bytes, the narinfo says NarSize: {expected_size}"),
                );
            }
            if hash != info.nar_hash {
                problem(
                    ProblemKind::NarHash,
                    format!(
                        "the NAR has hash {hash}, the narinfo says NarHash: {}",
                        info.nar_hash
                    ),
                );
            }
        }
    }
    (problems, read)
}

/// What reading a NAR file found.
struct NarReading {
    /// Length and hash of the whole file, as read.
    file_size: u64,
    file_hash: Sha256,
    /// Reading the file itself failed; nothing else is meaningful then.
    file_error: Option<io::Error>,
    /// Decompressed bytes read.
    nar_size: u64,
    outcome: NarOutcome,
}

enum NarOutcome {
    /// The compression is not one we can read.
    Unsupported,
    /// The decompressor failed.
    Decompression(io::Error),
    /// It decompressed to more than the NAR size; reading stopped there.
    TooLong,
    /// The NAR was read to its end: its length, hash and parse result.
    Read {
        size: u64,
        hash: Sha256,
        parsed: Result<(), nar::reader::NarError>,
    },
}

/// Reads a NAR file in one pass: `file` is hashed, decompressed, the NAR
/// hashed and parsed; no more than `nar_size + 1` bytes are decompressed.
/// The file is read to its end even when the NAR is not, so that its hash
/// covers all of it.
fn read_nar(file: impl Read, compression: &str, nar_size: u64) -> NarReading {
    let mut file_side = HashingReader::new(Latch::new(file));
    let mut decoded = 0;
    let outcome = match compression::decoder(
        compression,
        BufReader::with_capacity(BUFFER, &mut file_side),
    ) {
        None => NarOutcome::Unsupported,
        Some(Err(e)) => NarOutcome::Decompression(e),
        Some(Ok(decoder)) => {
            let limited = Latch::new(decoder).take(nar_size.saturating_add(1));
            let mut nar_side = HashingReader::new(limited);
            let parsed = nar::reader::validate(&mut nar_side).map(drop);
            // Hash the rest of the stream, up to the limit, unless the
            // decompressor has given up already.
            if parsed.is_err() && nar_side.get_ref().get_ref().error.is_none() {
                let _ = io::copy(&mut nar_side, &mut io::sink());
            }
            let (limited, hash, size) = nar_side.finish();
            decoded = size;
            if let Some(e) = limited.into_inner().error {
                NarOutcome::Decompression(e)
            } else if size > nar_size {
                NarOutcome::TooLong
            } else {
                NarOutcome::Read { size, hash, parsed }
            }
        }
    };
    if file_side.get_ref().error.is_none() {
        let _ = io::copy(&mut file_side, &mut io::sink());
    }
    let (latch, file_hash, file_size) = file_side.finish();
    NarReading {
        file_size,
        file_hash,
        file_error: latch.error,
        nar_size: decoded,
        outcome,
    }
}

/// Passes reads on, remembering the first error, so that a failure further
/// down the pipeline can be put down to the stage that caused it.
struct Latch<R> {
    inner: R,
    error: Option<io::Error>,
}

impl<R> Latch<R> {
    fn new(inner: R) -> Self {
        Latch { inner, error: None }
    }
}

impl<R: Read> Read for Latch<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if e.kind() != io::ErrorKind::Interrupted && self.error.is_none() {
                self.error = Some(io::Error::new(e.kind(), e.to_string()));
            }
        })
    }
}

/// Opens a file that [`resolve`] found, refusing a symlink put in its place since.
fn open_no_follow(path: &Path) -> io::Result<File> {
    File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Why a file named in the cache cannot be read from it. Paths are shown
/// relative to the cache.
#[derive(Debug, Error)]
enum Unreachable {
    #[error("{name:?} is not a plain relative path inside the cache: {why}")]
    NotRelative { name: String, why: &'static str },
    #[error("symlink {link} points to {}, outside the cache", target.display())]
    Escapes { link: String, target: PathBuf },
    #[error("{0} does not exist")]
    Missing(String),
    #[error("{0} is not a regular file")]
    NotAFile(String),
    #[error("more than {MAX_SYMLINKS} symlinks on the way to {0}")]
    TooManyLinks(String),
    #[error("cannot look at {path}: {source}")]
    Io { path: String, source: io::Error },
}

/// Finds the regular file that `name`, a path relative to the canonical
/// directory `root`, leads to, without ever leaving `root`.
///
/// `name` must be relative and have no empty, `.` or `..` segments, as Nix
/// requires of a local cache's file names. Each segment is looked at with
/// `lstat`; a symlink's target replaces it, a relative target read from the
/// symlink's directory, an absolute one only if it lies under `root`. Any
/// step that would leave `root`, by a `..` or an absolute target, is refused
/// before anything outside is touched, so what lies outside is never opened
/// or even looked at.
fn resolve(root: &Path, name: &str) -> Result<PathBuf, Unreachable> {
    let not_relative = |why| Unreachable::NotRelative {
        name: name.to_owned(),
        why,
    };
    if name.is_empty() {
        return Err(not_relative("it is empty"));
    }
    if name.contains("://") {
        return Err(not_relative("it is a URL, not a file name"));
    }
    if name.starts_with('/') {
        return Err(not_relative("it is absolute"));
    }
    if name.contains('\0') {
        return Err(not_relative("it contains a NUL byte"));
    }
    for segment in name.split('/') {
        match segment {
            "" => return Err(not_relative("it has an empty segment")),
            "." | ".." => return Err(not_relative("it has a '.' or '..' segment")),
            _ => {}
        }
    }

    let shown = |p: &Path| p.display().to_string();
    let mut pending: VecDeque<OsString> = name.split('/').map(OsString::from).collect();
    // What has been resolved so far, relative to `root`: directories only,
    // never a symlink, so `..` may simply drop the last segment.
    let mut current = PathBuf::new();
    let mut links = 0;
    // The last symlink followed, to name when a `..` leaves the cache.
    let mut last_link: Option<(PathBuf, PathBuf)> = None;
    while let Some(segment) = pending.pop_front() {
        if segment == ".." {
            if !current.pop() {
                let (link, target) = last_link.clone().expect("only a symlink brings in '..'");
                return Err(Unreachable::Escapes {
                    link: shown(&link),
                    target,
                });
            }
            continue;
        }
        let candidate = current.join(&segment);
        let meta =
            fs::symlink_metadata(root.join(&candidate)).map_err(|source| match source.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => {
                    Unreachable::Missing(shown(&candidate))
                }
                _ => Unreachable::Io {
                    path: shown(&candidate),
                    source,
                },
            })?;
        if meta.file_type().is_symlink() {
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(Unreachable::TooManyLinks(name.to_owned()));
            }
            let target =
                fs::read_link(root.join(&candidate)).map_err(|source| Unreachable::Io {
                    path: shown(&candidate),
                    source,
                })?;
            let relative = if target.is_absolute() {
                let Ok(inside) = target.strip_prefix(root) else {
                    return Err(Unreachable::Escapes {
                        link: shown(&candidate),
                        target,
                    });
                };
                current = PathBuf::new();
                inside.to_owned()
            } else {
                target.clone()
            };
            for component in relative.components().rev() {
                match component {
                    Component::Normal(s) => pending.push_front(s.to_owned()),
                    Component::ParentDir => pending.push_front("..".into()),
                    Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
                }
            }
            last_link = Some((candidate, target));
        } else if pending.is_empty() && !meta.is_file() {
            return Err(Unreachable::NotAFile(shown(&candidate)));
        } else {
            current = candidate;
        }
    }
    if current.as_os_str().is_empty() {
        // Only a symlink to the cache itself ends here.
        return Err(Unreachable::NotAFile(name.to_owned()));
    }
    Ok(root.join(current))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::symlink;

    use crate::format::compression::Compression;

    /// A NAR of one regular file holding `len` zero bytes.
    fn zeros_nar(len: u64) -> Vec<u8> {
        let mut nar = Vec::new();
        nar::writer::open(&mut nar)
            .unwrap()
            .regular(false, len, &mut io::repeat(0).take(len))
            .unwrap();
        nar
    }

    fn compress(c: Compression, data: &[u8]) -> Vec<u8> {
        let mut e = c
            .encoder(Vec::new(), c.default_level(), data.len() as u64, 1)
            .unwrap();
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn bzip2(data: &[u8]) -> Vec<u8> {
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn read_ok(reading: &NarReading) -> (u64, Sha256) {
        match &reading.outcome {
            NarOutcome::Read {
                size,
                hash,
                parsed: Ok(()),
            } => (*size, *hash),
            NarOutcome::Read { parsed: Err(e), .. } => panic!("parse failed: {e}"),
            NarOutcome::Unsupported => panic!("unsupported"),
            NarOutcome::Decompression(e) => panic!("decompression: {e}"),
            NarOutcome::TooLong => panic!("too long"),
        }
    }

    #[test]
    fn reads_every_supported_compression_to_the_same_nar() {
        let nar = zeros_nar(100_000);
        for (name, file) in [
            ("none", nar.clone()),
            ("xz", compress(Compression::Xz, &nar)),
            ("zstd", compress(Compression::Zstd, &nar)),
            ("bzip2", bzip2(&nar)),
            ("", bzip2(&nar)),
        ] {
            let reading = read_nar(&file[..], name, nar.len() as u64);
            assert_eq!(
                read_ok(&reading),
                (nar.len() as u64, Sha256::digest(&nar)),
                "{name:?}"
            );
            assert_eq!(reading.file_size, file.len() as u64, "{name:?}");
            assert_eq!(reading.file_hash, Sha256::digest(&file), "{name:?}");
        }
    }

    #[test]
    fn stops_decompressing_one_byte_after_the_nar_size() {
        // 64 MiB of NAR in a few KiB of zstd, claimed to be 1000 bytes long.
        let nar = zeros_nar(64 << 20);
        let bomb = compress(Compression::Zstd, &nar);
        let reading = read_nar(&bomb[..], "zstd", 1000);
        assert!(matches!(reading.outcome, NarOutcome::TooLong));
        assert_eq!(reading.nar_size, 1001);
        // The file is still read whole, for its hash.
        assert_eq!(reading.file_hash, Sha256::digest(&bomb));
    }

    #[test]
    fn data_after_the_nar_is_more_than_nar_size() {
        let mut file = zeros_nar(10);
        let nar_size = file.len() as u64;
        file.extend_from_slice(&[0; 8]);
        let reading = read_nar(&file[..], "none", nar_size);
        assert!(matches!(reading.outcome, NarOutcome::TooLong));
    }

    #[test]
    fn a_short_nar_is_read_whole_and_reported_with_its_size_and_hash() {
        let nar = zeros_nar(1000);
        let cut = &nar[..500];
        let reading = read_nar(cut, "none", nar.len() as u64);
        let NarOutcome::Read { size, hash, parsed } = reading.outcome else {
            panic!("expected a NAR read to its end");
        };
        assert!(matches!(
            parsed,
            Err(nar::reader::NarError::Truncated { .. })
        ));
        assert_eq!(size, 500);
        assert_eq!(hash, Sha256::digest(cut));
    }

    #[test]
    fn a_cut_compressed_file_is_a_decompression_error() {
        let nar = zeros_nar(100_000);
        for c in [Compression::Xz, Compression::Zstd] {
            let file = compress(c, &nar);
            let cut = &file[..file.len() - 9];
            let reading = read_nar(cut, c.name(), nar.len() as u64);
            assert!(
                matches!(reading.outcome, NarOutcome::Decompression(_)),
                "{c}"
            );
            assert_eq!(reading.file_size, cut.len() as u64);
            assert!(reading.file_error.is_none());
        }
    }

    #[test]
    fn an_unknown_compression_still_gets_its_file_hashed() {
        let reading = read_nar(&b"whatever"[..], "br", 8);
        assert!(matches!(reading.outcome, NarOutcome::Unsupported));
        assert_eq!(reading.file_hash, Sha256::digest(b"whatever"));
    }

    #[test]
    fn a_failing_file_is_an_io_error_not_a_decompression_error() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        let reading = read_nar(Failing, "xz", 100);
        assert!(
            reading
                .file_error
                .unwrap()
                .to_string()
                .contains("disk on fire")
        );
    }

    /// A canonical temporary directory laid out by `setup`.
    fn cache_dir(setup: impl FnOnce(&Path)) -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("cache");
        fs::create_dir_all(root.join("nar")).unwrap();
        fs::write(root.join("nar/a.nar"), "a").unwrap();
        fs::write(tmp.path().join("secret"), "outside").unwrap();
        setup(&root);
        let root = fs::canonicalize(root).unwrap();
        (tmp, root)
    }

    fn cache_info_kinds(root: &Path) -> Vec<ProblemKind> {
        check_cache_info(root, "/nix/store")
            .into_iter()
            .map(|p| p.kind)
            .collect()
    }

    #[test]
    fn checks_nix_cache_info_where_it_is_and_where_it_leads() {
        let (tmp, root) = cache_dir(|_| {});
        assert_eq!(cache_info_kinds(&root), [ProblemKind::MissingCacheInfo]);
        fs::write(root.join("nix-cache-info"), "StoreDir: /nix/store\n").unwrap();
        assert_eq!(cache_info_kinds(&root), []);
        fs::write(root.join("nix-cache-info"), "WantMassQuery: 1\n").unwrap();
        assert_eq!(cache_info_kinds(&root), [ProblemKind::StoreDir]);
        fs::write(root.join("nix-cache-info"), "Priority: first\n").unwrap();
        assert_eq!(cache_info_kinds(&root), [ProblemKind::CacheInfo]);
        fs::remove_file(root.join("nix-cache-info")).unwrap();
        symlink(tmp.path().join("secret"), root.join("nix-cache-info")).unwrap();
        assert_eq!(cache_info_kinds(&root), [ProblemKind::OutsideCache]);
    }

    #[test]
    fn resolves_plain_names_and_symlinks_that_stay_inside() {
        let (_tmp, root) = cache_dir(|root| {
            symlink("a.nar", root.join("nar/relative")).unwrap();
            symlink("../nar/./a.nar", root.join("nar/up-and-back")).unwrap();
            symlink(root.join("nar"), root.join("abs-dir")).unwrap();
        });
        let a = root.join("nar/a.nar");
        assert_eq!(resolve(&root, "nar/a.nar").unwrap(), a);
        assert_eq!(resolve(&root, "nar/relative").unwrap(), a);
        assert_eq!(resolve(&root, "nar/up-and-back").unwrap(), a);
        assert_eq!(resolve(&root, "abs-dir/relative").unwrap(), a);
    }

    #[test]
    fn refuses_names_that_are_not_plain_relative_paths() {
        let (_tmp, root) = cache_dir(|_| {});
        for name in [
            "",
            "/etc/passwd",
            "../secret",
            "nar/../nar/a.nar",
            "./nar/a.nar",
            "nar//a.nar",
            "https://example.org/nar/a.nar",
        ] {
            assert!(
                matches!(resolve(&root, name), Err(Unreachable::NotRelative { .. })),
                "{name:?}"
            );
        }
    }

    #[test]
    fn refuses_symlinks_that_lead_outside_without_following_them() {
        let (tmp, root) = cache_dir(|root| {
            symlink("../../secret", root.join("nar/relative-out")).unwrap();
            symlink("/etc/passwd", root.join("nar/absolute-out")).unwrap();
            symlink("../..", root.join("nar/parent")).unwrap();
            // Outside and missing: still refused as outside, not as missing.
            symlink("/nonexistent/x.nar", root.join("nar/dangling-out")).unwrap();
        });
        for name in [
            "nar/relative-out",
            "nar/absolute-out",
            "nar/parent/secret",
            "nar/dangling-out",
        ] {
            assert!(
                matches!(resolve(&root, name), Err(Unreachable::Escapes { .. })),
                "{name}"
            );
        }
        drop(tmp);
    }

    #[test]
    fn tells_missing_files_directories_and_loops_apart() {
        let (_tmp, root) = cache_dir(|root| {
            symlink("loop", root.join("nar/loop")).unwrap();
            symlink("nope", root.join("nar/dangling")).unwrap();
        });
        assert!(matches!(
            resolve(&root, "nar/b.nar"),
            Err(Unreachable::Missing(_))
        ));
        assert!(matches!(
            resolve(&root, "nar/dangling"),
            Err(Unreachable::Missing(_))
        ));
        assert!(matches!(
            resolve(&root, "nar/a.nar/x"),
            Err(Unreachable::Missing(_))
        ));
        assert!(matches!(
            resolve(&root, "nar"),
            Err(Unreachable::NotAFile(_))
        ));
        assert!(matches!(
            resolve(&root, "nar/loop"),
            Err(Unreachable::TooManyLinks(_))
        ));
    }
}
