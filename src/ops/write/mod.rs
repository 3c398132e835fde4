//! Writing a flat-file binary cache: the per-path pipeline and its scheduling.
//!
//! Each path is read once. Its NAR streams through a hasher (NarHash,
//! NarSize), the compressor and a second hasher (FileHash, FileSize) into a
//! temporary file, which is renamed to `nar/<FileHash>.nar<ext>` once
//! complete (or, for a small NAR in a new output, into memory, and then
//! straight to its name); the listing and debug-info entries (recorded during
//! the same pass) follow, and the narinfo comes last, once the narinfos of
//! the path's references are written too (`Publication`).
//! [`schedule`](crate::support::schedule) decides which path is written when,
//! and with how many threads.
//!
//! Two entry points:
//! - [`write_cache`] makes a new cache, as a Nix builder does: the output
//!   must not exist, and is removed if anything fails. Nothing reads it
//!   before the run ends, so files are written in place, unsynced.
//! - [`update_cache`] adds to a cache that may exist, as `mk-binary-cache
//!   build` does. It is crash-safe: every file is written under a temporary
//!   name unique to the process and renamed, and a path's narinfo is renamed
//!   into place only once its own contents, its NAR (and listing) and the
//!   narinfos of its references are durable. Narinfos are made durable in
//!   batches ([`commit`]): one `syncfs` per batch rather than fsyncs per
//!   file. A run killed at any moment, or a power loss, leaves every
//!   narinfo pointing at a complete NAR and at references the cache holds, at
//!   worst with an unreferenced NAR or a stale temporary file, which the next
//!   run replaces or removes; paths with a narinfo are skipped, so the next
//!   run completes the cache. Runs into the same directory at once do not
//!   clash: they write the same bytes under different temporary names.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

mod cache_dir;
mod commit;
mod pipeline;
mod publication;

use crate::format::cache_info::{self, CacheInfo, CacheInfoError, Upstreams};
use crate::format::compression::Compression;
use crate::format::hash::Sha256;
use crate::format::nar::dump::DumpError;
use crate::format::narinfo;
use crate::format::store_path::{self, DEFAULT_STORE_DIR, PathInfo, ReferenceCycle, StorePath};
use crate::support::files::{self, DirLock, TempNames};
use crate::support::progress::{Progress, Totals};
use cache_dir::{Cache, Mode};

/// Directories Nix's `LocalBinaryCacheStore` creates when it opens a cache
/// (`realisations/` up to 2.34, `build-trace-v2/` from 2.35, `debuginfo/` when
/// indexing debug info). Creating them now lets Nix open the cache from a
/// read-only mount.
pub const DIRECTORIES: [&str; 5] = ["nar", "log", "realisations", "build-trace-v2", "debuginfo"];

/// The file listing the cache's root paths, one per line.
pub const STORE_PATHS: &str = "store-paths";

/// How to write a cache.
#[derive(Debug, Clone)]
pub struct Options {
    pub compression: Compression,
    pub level: i32,
    /// Worker threads; output does not depend on it.
    pub jobs: usize,
    pub store_dir: String,
    /// `Priority:` in `nix-cache-info`.
    pub priority: Option<u64>,
    /// `WantMassQuery:` in `nix-cache-info`.
    pub want_mass_query: Option<bool>,
    /// Written to `store-paths`, one per line.
    pub root_paths: Vec<StorePath>,
    /// Write a `<hashpart>.ls` listing next to each narinfo.
    pub write_nar_listing: bool,
    /// Index `lib/debug/.build-id` files under `debuginfo/`.
    pub index_debug_info: bool,
    /// The upstreams whose paths this run leaves out: `nix-cache-info`
    /// names them (and keeps naming those of earlier runs).
    pub upstreams: Upstreams,
}

impl Default for Options {
    /// What `mkBinaryCache` does when given only `rootPaths`.
    fn default() -> Self {
        let compression = Compression::default();
        Options {
            compression,
            level: compression.default_level(),
            jobs: 1,
            store_dir: DEFAULT_STORE_DIR.to_owned(),
            priority: None,
            want_mass_query: None,
            root_paths: Vec::new(),
            write_nar_listing: false,
            index_debug_info: false,
            upstreams: Upstreams::default(),
        }
    }
}

#[derive(Debug, Error)]
pub enum CacheError {
    #[error(transparent)]
    Dump(#[from] DumpError),
    #[error("cannot write '{path}': {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot write the NAR of '{path}' to '{file}': {source}")]
    WriteNar {
        path: StorePath,
        file: PathBuf,
        source: io::Error,
    },
    #[error("cannot read '{path}': {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "'{path}' has NAR hash {actual}, but the closure says {expected}: the store path was modified or is corrupt"
    )]
    HashMismatch {
        path: StorePath,
        expected: Sha256,
        actual: Sha256,
    },
    #[error(
        "'{path}' has NAR size {actual}, but the closure says {expected}: the store path was modified or is corrupt"
    )]
    SizeMismatch {
        path: StorePath,
        expected: u64,
        actual: u64,
    },
    #[error("output '{0}' already exists")]
    OutputExists(PathBuf),
    #[error("'{0}' is not in the store, and the cache has no narinfo for it")]
    NotInStore(StorePath),
    #[error(
        "'{0}' is not empty and has no nix-cache-info: refusing to write a cache into a directory that is not one"
    )]
    NotACache(PathBuf),
    #[error("'{path}': {source}")]
    CacheInfo {
        path: PathBuf,
        source: CacheInfoError,
    },
    #[error("'{path}' says {key}: {found}, but this run asks for {key}: {expected}")]
    CacheInfoMismatch {
        path: PathBuf,
        key: &'static str,
        found: String,
        expected: String,
    },
    #[error("the closure to write: {0}")]
    Cycle(#[from] ReferenceCycle),
    #[error("'{path}' lists '{line}', which is not a store path in {store_dir}")]
    StorePathsLine {
        path: PathBuf,
        line: String,
        store_dir: String,
    },
}

fn write_error(path: &Path) -> impl FnOnce(io::Error) -> CacheError + '_ {
    move |source| CacheError::Write {
        path: path.to_owned(),
        source,
    }
}

fn read_error(path: &Path) -> impl FnOnce(io::Error) -> CacheError + '_ {
    move |source| CacheError::Read {
        path: path.to_owned(),
        source,
    }
}

/// Writes a new cache of `closure` at `out`, which must not exist yet.
/// On failure nothing is left at `out`.
pub fn write_cache(
    out: &Path,
    closure: &[PathInfo],
    opts: &Options,
    progress: &Progress,
) -> Result<Totals, CacheError> {
    if out.symlink_metadata().is_ok() {
        return Err(CacheError::OutputExists(out.to_owned()));
    }
    let result = write_new(out, closure, opts, progress);
    if result.is_err() {
        let _ = fs::remove_dir_all(out);
    }
    result
}

fn write_new(
    out: &Path,
    closure: &[PathInfo],
    opts: &Options,
    progress: &Progress,
) -> Result<Totals, CacheError> {
    fs::create_dir(out).map_err(write_error(out))?;
    let cache = Cache::new(out, Mode::New);
    let info = cache_info(opts).to_string();
    cache.write_file(&out.join(cache_info::FILE_NAME), info.as_bytes())?;
    cache.create_directories()?;
    let totals = cache.write_paths(closure, opts, progress)?;
    let list: String = opts.root_paths.iter().map(|p| format!("{p}\n")).collect();
    cache.write_file(&out.join(STORE_PATHS), list.as_bytes())?;
    Ok(totals)
}

/// What [`update_cache`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Updated {
    /// The paths written in this run.
    pub written: Totals,
    /// Paths of the closure whose narinfo was already in the cache.
    pub skipped: usize,
}

/// Adds `closure` to the cache at `dir`, creating it if need be; paths that
/// already have a narinfo there are skipped. `store-paths` becomes the union
/// of the paths it listed and `opts.root_paths`.
///
/// An existing `nix-cache-info` is kept, and must agree with `opts`: the same
/// `StoreDir`, and the same `Priority` and `WantMassQuery` when `opts` sets
/// them; the upstreams of `opts` it lacks are added to it before any path
/// is written, so that a delta cache says so from its first narinfo on. Compression may differ from path to path: each narinfo names its own.
/// Listings and debug-info entries are written for the paths written now.
pub fn update_cache(
    dir: &Path,
    closure: &[PathInfo],
    opts: &Options,
    progress: &Progress,
) -> Result<Updated, CacheError> {
    // A path that is neither in the store nor in the cache (a closure file
    // that names a path this machine lacks) is refused before anything is
    // written, so that a bad input leaves no cache behind.
    let unreadable = closure.iter().find(|p| {
        !dir.join(narinfo::file_name(p.path.hash_part())).exists()
            && fs::symlink_metadata(p.path.to_string()).is_err()
    });
    if let Some(path) = unreadable {
        return Err(CacheError::NotInStore(path.path.clone()));
    }
    fs::create_dir_all(dir).map_err(write_error(dir))?;
    let cache = Cache::new(dir, Mode::Update);
    let info_file = dir.join(cache_info::FILE_NAME);
    match fs::read_to_string(&info_file) {
        Ok(text) => {
            check_cache_info(&info_file, &text, opts)?;
            cache.add_upstreams(&info_file, &opts.upstreams)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if !is_empty_but_for_temp_files(dir)? {
                return Err(CacheError::NotACache(dir.to_owned()));
            }
            cache.write_file(&info_file, cache_info(opts).to_string().as_bytes())?;
        }
        Err(e) => return Err(read_error(&info_file)(e)),
    }
    cache.create_directories()?;
    // Held until the end: `prune` waits for every run to have listed its
    // roots before it decides what the cache keeps.
    let _cache_lock = lock_cache(dir, CacheLock::Shared)?;
    cache.remove_stale_temp_files()?;

    let (present, missing): (Vec<&PathInfo>, Vec<&PathInfo>) = closure
        .iter()
        .partition(|p| cache.narinfo_path(&p.path).exists());
    let missing: Vec<PathInfo> = missing.into_iter().cloned().collect();
    if missing.is_empty() && !present.is_empty() {
        let all = match present.len() {
            1 => "the one path is".to_owned(),
            n => format!("all {n} paths are"),
        };
        progress.message(&format!("{all} already in the cache: nothing to do"));
    } else if !present.is_empty() {
        // Some, not all: two paths at least.
        progress.message(&format!(
            "{} of {} paths are already in the cache",
            present.len(),
            closure.len()
        ));
    }
    let written = cache.write_paths(&missing, opts, progress)?;
    cache.add_store_paths(&opts.root_paths, &opts.store_dir)?;
    cache.sync_dir(dir)?;
    Ok(Updated {
        written,
        skipped: present.len(),
    })
}

/// The directories of a cache, relative to it, where its writers make
/// temporary files.
pub(super) const TEMP_FILE_DIRS: [&str; 3] = ["", "nar", "debuginfo"];

/// Removes the temporary files this process made in the cache at `dir`, for
/// a run of [`update_cache`] that was interrupted: nothing will rename them
/// into place. The narinfos they would have become are missing, so the cache
/// stays valid; returns how many files went.
pub fn remove_own_temp_files(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for sub in TEMP_FILE_DIRS {
        match files::remove_own_temporaries(&dir.join(sub)) {
            Ok(n) => removed += n,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

/// The roots the cache at `dir` lists in `store-paths`, in order and without
/// repeats; none when it has no such file.
pub fn read_store_paths(dir: &Path, store_dir: &str) -> Result<Vec<StorePath>, CacheError> {
    let file = dir.join(STORE_PATHS);
    let text = match fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(read_error(&file)(e)),
    };
    let listed = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            StorePath::parse(line, store_dir).map_err(|_| CacheError::StorePathsLine {
                path: file.clone(),
                line: line.to_owned(),
                store_dir: store_dir.to_owned(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut roots = Vec::new();
    store_path::append_new(&mut roots, listed);
    Ok(roots)
}

/// How [`lock_cache`] takes the cache lock.
pub enum CacheLock {
    /// As a run that adds paths takes it: runs write at once.
    Shared,
    /// As `prune` takes it: alone.
    Exclusive,
}

/// Takes the cache lock: a `flock` on the cache's `nar/` directory (the
/// cache directory's own lock guards `store-paths`). Every [`update_cache`]
/// run holds it shared from before it looks for the paths already cached
/// until its roots are in `store-paths`, and `prune` holds it exclusively, so
/// runs write at once, but never while a prune decides what to keep and
/// deletes the rest.
pub fn lock_cache(dir: &Path, how: CacheLock) -> Result<DirLock, CacheError> {
    let nar = dir.join("nar");
    let handle = File::open(&nar).map_err(read_error(&nar))?;
    match how {
        CacheLock::Shared => DirLock::shared(handle),
        CacheLock::Exclusive => DirLock::exclusive(handle),
    }
    .map_err(write_error(&nar))
}

/// The `nix-cache-info` this run writes.
pub fn cache_info(opts: &Options) -> CacheInfo {
    CacheInfo {
        store_dir: Some(opts.store_dir.clone()),
        want_mass_query: opts.want_mass_query,
        // At most MAX_PRIORITY, an i32: the options are checked when read.
        priority: opts.priority.map(|p| p as i64),
        upstreams: opts.upstreams.clone(),
    }
}

/// Checks an existing `nix-cache-info` against what this run would write:
/// a setting this run does not ask for may be anything, or missing.
fn check_cache_info(path: &Path, text: &str, opts: &Options) -> Result<(), CacheError> {
    let found: CacheInfo = text.parse().map_err(|source| CacheError::CacheInfo {
        path: path.to_owned(),
        source,
    })?;
    let wanted = cache_info(opts);
    let expect = |key: &'static str, found: Option<String>, expected: Option<String>| match (
        found, expected,
    ) {
        (Some(found), Some(expected)) if found != expected => Err(CacheError::CacheInfoMismatch {
            path: path.to_owned(),
            key,
            found,
            expected,
        }),
        _ => Ok(()),
    };
    let want_mass_query = |w: Option<bool>| w.map(|w| u8::from(w).to_string());
    let priority = |p: Option<i64>| p.map(|p| p.to_string());
    expect("StoreDir", found.store_dir, wanted.store_dir)?;
    expect(
        "Priority",
        priority(found.priority),
        priority(wanted.priority),
    )?;
    expect(
        "WantMassQuery",
        want_mass_query(found.want_mass_query),
        want_mass_query(wanted.want_mass_query),
    )
}

/// Whether `dir` holds nothing, or only what a run killed before writing
/// `nix-cache-info` may have left.
fn is_empty_but_for_temp_files(dir: &Path) -> Result<bool, CacheError> {
    for entry in fs::read_dir(dir).map_err(read_error(dir))? {
        let name = entry.map_err(read_error(dir))?.file_name();
        if TempNames::owner(&name).is_none() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Paths and narinfos for the unit tests of this module's parts.
#[cfg(test)]
mod testing {
    use crate::format::hash::Sha256;
    use crate::format::narinfo::NarInfo;
    use crate::format::store_path::{PathInfo, StorePath};

    /// A store path named `name`, with a hash part made from its length.
    pub(super) fn path(name: &str) -> StorePath {
        let hash = format!("{:0<32}", name.len());
        StorePath::from_base_name(&format!("{hash}-{name}"), "/nix/store").unwrap()
    }

    /// The path `name` referring to `references`, as a closure lists it.
    pub(super) fn path_info(name: &str, references: &[&str]) -> PathInfo {
        PathInfo {
            path: path(name),
            nar_hash: None,
            nar_size: Some(1),
            references: references.iter().map(|r| path(r)).collect(),
            deriver: None,
            ca: None,
            signatures: Vec::new(),
        }
    }

    /// A narinfo for `info`.
    pub(super) fn narinfo_of(info: &PathInfo) -> NarInfo {
        NarInfo {
            store_path: info.path.clone(),
            nar_hash: Sha256::digest(info.path.name().as_bytes()),
            nar_size: 1,
            references: info.references.clone(),
            url: format!("nar/{}.nar", info.path.name()),
            compression: "none".to_owned(),
            file_hash: None,
            file_size: None,
            deriver: None,
            signatures: Vec::new(),
            ca: None,
        }
    }

    /// A narinfo for the path `name` referring to `references`.
    pub(super) fn narinfo(name: &str, references: &[&str]) -> NarInfo {
        narinfo_of(&path_info(name, references))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn existing_cache_info_must_agree_with_the_options() {
        let path = Path::new("/c/nix-cache-info");
        let opts = Options {
            priority: Some(30),
            ..Options::default()
        };
        let text = "StoreDir: /nix/store\nPriority: 30\n";
        assert!(check_cache_info(path, text, &opts).is_ok());
        // Settings this run does not ask for are left as they are.
        assert!(check_cache_info(path, "StoreDir: /nix/store\n", &Options::default()).is_ok());
        let e = check_cache_info(path, "StoreDir: /gnu/store\n", &opts).unwrap_err();
        assert!(
            matches!(&e, CacheError::CacheInfoMismatch { key: "StoreDir", found, .. } if found == "/gnu/store"),
            "{e}"
        );
        let e = check_cache_info(path, "StoreDir: /nix/store\nPriority: 40\n", &opts).unwrap_err();
        assert_eq!(
            e.to_string(),
            "'/c/nix-cache-info' says Priority: 40, but this run asks for Priority: 30"
        );
    }

    #[test]
    fn existing_cache_info_is_read_as_nix_cache_info_reads_it() {
        // The same parser as sign and verify: a repeated key or a value no
        // writer produces is an error naming the file, not a guess.
        let path = Path::new("/c/nix-cache-info");
        for text in [
            "StoreDir: /nix/store\nStoreDir: /gnu/store\n",
            "Priority: high\n",
        ] {
            let e = check_cache_info(path, text, &Options::default()).unwrap_err();
            assert!(matches!(e, CacheError::CacheInfo { .. }), "{e}");
            assert!(e.to_string().starts_with("'/c/nix-cache-info': "), "{e}");
        }
    }
}
