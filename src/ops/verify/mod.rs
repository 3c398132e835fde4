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
//! largest first, by [`schedule::run`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use thiserror::Error;

mod nar_file;
mod report;
mod resolve;

pub use report::{Counts, Problem, ProblemKind, Report};

use crate::format::cache_info::{self, CacheInfo, Upstreams};
use crate::format::narinfo::{self, NarInfo, Sig};
use crate::format::signing::PublicKey;
use crate::format::store_path::{DEFAULT_STORE_DIR, ReferenceCycle, StorePath};
use crate::support::graph::{Cycle, Graph};
use crate::support::progress::{Progress, human_bytes};
use crate::support::schedule;
use nar_file::{BytesRead, check_nar};
use resolve::{Unreachable, open_no_follow, resolve};

/// A narinfo (or `nix-cache-info`, no bigger) is read no further than this.
const MAX_NARINFO_SIZE: u64 = narinfo::MAX_SIZE;

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

    let names = narinfo_names(&root)?;
    let mut checked: Vec<Checked> = names.iter().map(|n| read_narinfo(&root, n, opts)).collect();

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
    progress.begin(with_nar.len(), with_nar.iter().map(size).sum());
    let found = Mutex::new(Vec::new());
    // No path gets more than one thread: a NAR is read and parsed in order.
    schedule::run(&with_nar, size, u64::MAX, jobs, |&i, _threads| {
        let c = &checked[i];
        let info = c.info.as_ref().expect("filtered on info");
        let (nar_problems, read) = check_nar(root, info, &c.subject);
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
    match String::from_utf8(text) {
        Ok(text) => match text.parse() {
            Ok(info) => Ok(info),
            Err(e) => problem(ProblemKind::CacheInfo, e.to_string()),
        },
        Err(_) => problem(ProblemKind::CacheInfo, "it is not UTF-8 text".into()),
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
