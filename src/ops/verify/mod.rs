//! Checking a flat-file binary cache before trusting it (`mk-binary-cache verify`).
//!
//! [`verify`] reads a cache, ours or one written by `nix copy`, and reports
//! every [`Problem`] it finds rather than stopping at the first:
//!
//! - `nix-cache-info` exists, parses, and its `StoreDir` is the one expected;
//! - every `<hash>.narinfo` parses, and its name is its `StorePath`'s hash part;
//! - its `URL` names a regular file inside the cache: never an absolute path
//!   or one with `.` or `..` segments, and symlinks on the way are followed
//!   only while they stay inside the cache (see `resolve`: nothing outside
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
//! largest first, by [`schedule::run_by`]; a large zstd NAR that gets several
//! threads has its frames decoded on them, ahead of the one hasher and
//! parser, a fixed number of frames at a time.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use thiserror::Error;

mod nar_file;
mod report;
mod resolve;

pub use report::{Counts, Problem, ProblemKind, Report};

use crate::cache::{self, CacheDir, CacheDirError};
use crate::format::cache_info::{self, CacheInfo, Upstreams};
use crate::format::narinfo::{self, NarInfo, Sig};
use crate::format::signing::PublicKey;
use crate::format::store_path::{DEFAULT_STORE_DIR, ReferenceCycle, StorePath};
use crate::support::graph::{Cycle, Graph};
use crate::support::progress::{Progress, human_bytes};
use crate::support::schedule;
use nar_file::{BytesRead, check_nar};

/// zstd files of at least this many bytes (about three frames of NAR) may
/// have their frames decoded on several threads.
const PARALLEL_DECODE_THRESHOLD: u64 = 16 << 20;

/// What to check a cache against.
#[derive(Debug, Clone)]
pub struct Options {
    /// The store directory the cache must be for.
    pub store_dir: String,
    /// Keys whose signatures are checked.
    pub trusted_keys: Vec<PublicKey>,
    /// Whether a path without a valid signature by a trusted key is a problem.
    pub require_sigs: bool,
    /// Whether the cache is a delta cache (written with `exclude`), which
    /// leaves out paths its consumers have already: a reference with no
    /// narinfo is then no problem.
    pub delta: bool,
    /// Worker threads.
    pub jobs: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            store_dir: DEFAULT_STORE_DIR.to_owned(),
            trusted_keys: Vec::new(),
            require_sigs: false,
            delta: false,
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

/// Checks the cache at `cache`; see the module documentation for what.
pub fn verify(cache: &Path, opts: &Options, progress: &Progress) -> Result<Report, VerifyError> {
    if opts.require_sigs && opts.trusted_keys.is_empty() {
        return Err(VerifyError::NoTrustedKeys);
    }
    let root = fs::canonicalize(cache).map_err(|source| VerifyError::Open {
        path: cache.to_owned(),
        source,
    })?;
    let (mut problems, upstreams) = check_cache_info(&root, &opts.store_dir);

    // Not opened as a cache: what is wrong with it is reported, not refused.
    let dir = CacheDir::unchecked(&root);
    let hashes = dir.narinfos().map_err(|e| VerifyError::List {
        path: root.clone(),
        source: match e {
            CacheDirError::Read { source, .. } => source,
            other => io::Error::other(other.to_string()),
        },
    })?;
    let mut checked: Vec<Checked> = hashes.iter().map(|h| read_narinfo(&dir, h, opts)).collect();

    // A cache that names its upstreams says it is a delta of them.
    check_references(&mut checked, opts.delta || !upstreams.is_empty());
    check_reference_order(&mut checked);
    let read = check_nars(&root, &mut checked, opts.jobs, progress);

    let mut counts = Counts {
        narinfos: checked.len(),
        file_bytes: read.file,
        nar_bytes: read.nar,
        ..Counts::default()
    };
    for c in checked {
        counts.paths_ok += usize::from(c.problems.is_empty());
        counts.signed += usize::from(c.signed);
        counts.with_signatures += usize::from(
            c.info
                .as_ref()
                .is_some_and(|info| !info.signatures.is_empty()),
        );
        problems.extend(c.problems);
    }
    counts.problems = problems.len();
    for p in &problems {
        *counts.by_kind.entry(p.kind).or_default() += 1;
    }
    Ok(Report {
        cache: cache.to_owned(),
        store_dir: opts.store_dir.clone(),
        signatures_checked: !opts.trusted_keys.is_empty(),
        ok: problems.is_empty(),
        counts,
        upstreams: upstreams
            .urls
            .iter()
            .cloned()
            .chain(upstreams.keys.iter().map(|k| format!("key {k}")))
            .collect(),
        problems,
    })
}

/// Checks the NAR file of every narinfo that parsed, in parallel, largest
/// first; adds what is wrong to each and returns the bytes read in all.
fn check_nars(root: &Path, checked: &mut [Checked], jobs: usize, progress: &Progress) -> BytesRead {
    let file_bytes = AtomicU64::new(0);
    let nar_bytes = AtomicU64::new(0);
    let with_nar: Vec<usize> = (0..checked.len())
        .filter(|&i| checked[i].info.is_some())
        .collect();
    let size = |&i: &usize| {
        let info = checked[i].info.as_ref().expect("filtered on info");
        info.file_size.unwrap_or(info.nar_size)
    };
    // A large zstd file can have its frames decoded on several threads;
    // anything else is read on one.
    let parallel = |&i: &usize| {
        let info = checked[i].info.as_ref().expect("filtered on info");
        info.compression == "zstd" && size(&i) >= PARALLEL_DECODE_THRESHOLD
    };
    progress.begin(with_nar.len(), with_nar.iter().map(size).sum());
    let found = Mutex::new(Vec::new());
    schedule::run_by(&with_nar, size, parallel, jobs, |&i, threads| {
        let c = &checked[i];
        let info = c.info.as_ref().expect("filtered on info");
        let (nar_problems, read) = check_nar(root, info, &c.subject, threads as usize);
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
    BytesRead {
        file: file_bytes.into_inner(),
        nar: nar_bytes.into_inner(),
    }
}

/// Reports every reference that has no narinfo describing it: a cache must
/// be closed under references, but for a `delta` one, whose missing
/// references are where its consumers already are. A narinfo named for a
/// reference that describes another path is a problem either way.
fn check_references(checked: &mut [Checked], delta: bool) {
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
                None if delta => continue,
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

/// Reports a cycle among the narinfos' references, on each narinfo on it:
/// no reader can substitute those paths, since each waits for the other.
/// (One cycle is found; another, if any, shows once this one is mended.)
fn check_reference_order(checked: &mut [Checked]) {
    let hashes: Vec<&str> = checked.iter().map(Checked::hash_part).collect();
    let graph = Graph::by_key(&hashes, |i| {
        checked[i]
            .info
            .iter()
            .flat_map(|info| info.references.iter().map(|r| r.hash_part()))
    });
    // Cycle policy: a problem, and verify goes on checking everything else.
    let Err(Cycle(nodes)) = graph.levels() else {
        return;
    };
    let cycle = ReferenceCycle(
        nodes
            .iter()
            .filter_map(|&i| checked[i].info.as_ref())
            .map(|info| info.store_path.clone())
            .collect(),
    );
    for i in nodes {
        let c = &mut checked[i];
        c.problems.push(Problem::new(
            &c.subject,
            ProblemKind::ReferenceCycle,
            cycle.to_string(),
        ));
    }
}

/// The problems with `nix-cache-info`, and the upstreams it names.
fn check_cache_info(root: &Path, store_dir: &str) -> (Vec<Problem>, Upstreams) {
    match read_cache_info(root) {
        Ok(info) => (store_dir_problems(&info, store_dir), info.upstreams),
        Err(problems) => (problems, Upstreams::default()),
    }
}

fn store_dir_problems(info: &CacheInfo, store_dir: &str) -> Vec<Problem> {
    let problem = |kind, message: String| vec![Problem::new(cache_info::FILE_NAME, kind, message)];
    match &info.store_dir {
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

/// `nix-cache-info`, read without leaving the cache, or what is wrong with it.
fn read_cache_info(root: &Path) -> Result<CacheInfo, Vec<Problem>> {
    let name = cache_info::FILE_NAME;
    let problem = |kind, message: String| Err(vec![Problem::new(name, kind, message)]);
    let text = match cache::read_bounded(&root.join(name)) {
        Ok(bytes) => bytes,
        Err(CacheDirError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return problem(
                ProblemKind::MissingCacheInfo,
                "the cache has no nix-cache-info: Nix would try to create one, and fail on a read-only cache".into(),
            );
        }
        Err(e) => {
            let (kind, message) = unreadable(e);
            return problem(kind, message);
        }
    };
    match String::from_utf8(text) {
        Ok(text) => match text.parse() {
            Ok(info) => Ok(info),
            Err(e) => problem(ProblemKind::CacheInfo, e.to_string()),
        },
        Err(_) => problem(ProblemKind::CacheInfo, "it is not UTF-8 text".into()),
    }
}

/// What to report of a small file of the cache that could not be read: a
/// symlink is not followed, a file too large to be what it claims is not
/// read.
fn unreadable(e: CacheDirError) -> (ProblemKind, String) {
    match e {
        CacheDirError::Symlink(_) => (
            ProblemKind::OutsideCache,
            "it is a symlink: what it points to is not the cache's, and is not read".to_owned(),
        ),
        CacheDirError::TooLarge { max, .. } => (
            ProblemKind::BadNarinfo,
            format!("larger than {}: not a narinfo", human_bytes(max)),
        ),
        CacheDirError::NotAFile(_) => (ProblemKind::BadNarinfo, "not a regular file".to_owned()),
        CacheDirError::Read { source, .. } => {
            (ProblemKind::Io, format!("cannot read it: {source}"))
        }
        other => (ProblemKind::Io, other.to_string()),
    }
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
fn read_narinfo(cache: &CacheDir, hash_part: &str, opts: &Options) -> Checked {
    let file = narinfo::file_name(hash_part);
    let file = file.as_str();
    let mut checked = Checked {
        file: file.to_owned(),
        subject: file.to_owned(),
        info: None,
        signed: false,
        problems: Vec::new(),
    };
    let text = match cache.read_narinfo_text(hash_part) {
        Ok(text) => text,
        Err(CacheDirError::NotText(_)) => {
            checked.problems.push(Problem::new(
                file,
                ProblemKind::BadNarinfo,
                "not UTF-8 text",
            ));
            return checked;
        }
        Err(e) => {
            let (kind, message) = unreadable(e);
            checked.problems.push(Problem::new(file, kind, message));
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn cache_info_kinds(root: &Path) -> Vec<ProblemKind> {
        check_cache_info(root, "/nix/store")
            .0
            .into_iter()
            .map(|p| p.kind)
            .collect()
    }

    #[test]
    fn checks_nix_cache_info_where_it_is_and_where_it_leads() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("secret"), "outside").unwrap();
        fs::create_dir(tmp.path().join("cache")).unwrap();
        let root = fs::canonicalize(tmp.path().join("cache")).unwrap();
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
}
