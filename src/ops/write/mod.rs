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

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

mod commit;
mod pipeline;
mod publication;
mod target;
mod writer;

use crate::cache::{CacheDir, CacheDirError, CacheLock, TEMP_FILE_DIRS, write_error};
use crate::format::cache_info::{CacheInfo, Upstreams};
use crate::format::compression::Compression;
use crate::format::hash::Sha256;
use crate::format::nar::dump::DumpError;
use crate::format::store_path::{DEFAULT_STORE_DIR, PathInfo, ReferenceCycle, StorePath};
use crate::ops::pins::files::{self as pin_files, PinRequest, PinsError};
use crate::support::files::{self, TempNames};
use crate::support::progress::{Progress, Totals};
use target::{ExistingCache, NewOutput};
use writer::Writer;

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
    Pins(#[from] PinsError),
    #[error(transparent)]
    Dump(#[from] DumpError),
    #[error(transparent)]
    Cache(#[from] CacheDirError),
    #[error("cannot write the NAR of '{path}' to '{file}': {source}")]
    WriteNar {
        path: StorePath,
        file: PathBuf,
        source: std::io::Error,
    },
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
    #[error("the closure to write: {0}")]
    Cycle(#[from] ReferenceCycle),
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
    let target = NewOutput {
        cache: CacheDir::create_new(out, cache_info(opts))?,
        temp: TempNames::default(),
    };
    let totals = Writer::new(&target).write_paths(closure, opts, progress)?;
    target.cache.create_store_paths(&opts.root_paths)?;
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
/// is written, so that a delta cache says so from its first narinfo on.
/// Compression may differ from path to path: each narinfo names its own.
/// Listings and debug-info entries are written for the paths written now.
pub fn update_cache(
    dir: &Path,
    closure: &[PathInfo],
    opts: &Options,
    progress: &Progress,
) -> Result<Updated, CacheError> {
    update(dir, closure, opts, None, progress)
}

/// [`update_cache`], recording `opts.root_paths` as a new revision of the
/// pin `pin` (`build --to --pin`), at `time` (seconds since 1970). The
/// revision is recorded once the narinfos are, before the roots join
/// `store-paths`, and while the cache lock is held: a prune sees the new
/// paths only with the revision that roots them.
pub fn update_cache_pinned(
    dir: &Path,
    closure: &[PathInfo],
    opts: &Options,
    pin: &PinRequest,
    time: u64,
    progress: &Progress,
) -> Result<Updated, CacheError> {
    // A bad name is refused before anything is written.
    crate::format::pin::check_name(&pin.name).map_err(PinsError::from)?;
    update(dir, closure, opts, Some((pin, time)), progress)
}

fn update(
    dir: &Path,
    closure: &[PathInfo],
    opts: &Options,
    pin: Option<(&PinRequest, u64)>,
    progress: &Progress,
) -> Result<Updated, CacheError> {
    // A path that is neither in the store nor in the cache (a closure file
    // that names a path this machine lacks) is refused before anything is
    // written, so that a bad input leaves no cache behind. (A narinfo that
    // is not a regular file is refused below, naming it.)
    let layout = CacheDir::unchecked(dir);
    let unreadable = closure.iter().find(|p| {
        fs::symlink_metadata(layout.narinfo_path(p.path.hash_part())).is_err()
            && fs::symlink_metadata(p.path.to_string()).is_err()
    });
    if let Some(path) = unreadable {
        return Err(CacheError::NotInStore(path.path.clone()));
    }
    let mut cache = CacheDir::open_or_create(dir, &cache_info(opts))?;
    cache.add_upstreams(&opts.upstreams)?;
    // Held until the end: `prune` waits for every run to have listed its
    // roots before it decides what the cache keeps.
    let _cache_lock = cache.lock(CacheLock::Shared, || {
        progress.message(&format!(
            "waiting for a prune that holds the lock of {}…",
            dir.display()
        ));
    })?;
    remove_stale_temp_files(&cache)?;

    let mut present = 0;
    let mut missing = Vec::new();
    for path in closure {
        if cache.has_narinfo(path.path.hash_part())? {
            present += 1;
        } else {
            missing.push(path.clone());
        }
    }
    if missing.is_empty() && present > 0 {
        let all = match present {
            1 => "the one path is".to_owned(),
            n => format!("all {n} paths are"),
        };
        progress.message(&format!("{all} already in the cache: nothing to do"));
    } else if present > 0 {
        // Some, not all: two paths at least.
        progress.message(&format!(
            "{present} of {} paths are already in the cache",
            closure.len()
        ));
    }
    let target = ExistingCache::new(cache);
    let written = Writer::new(&target).write_paths(&missing, opts, progress)?;
    if let Some((pin, time)) = pin {
        pin_files::record(&target.cache, pin, &opts.root_paths, time)?;
    }
    target.cache.add_store_paths(&opts.root_paths)?;
    Ok(Updated {
        written,
        skipped: present,
    })
}

/// Removes the temporary files that processes no longer running left in
/// the cache.
fn remove_stale_temp_files(cache: &CacheDir) -> Result<(), CacheError> {
    for sub in TEMP_FILE_DIRS {
        for entry in cache.entries(sub)? {
            if TempNames::is_stale(&entry.name) {
                files::remove_temporary(&entry.path).map_err(write_error(&entry.path))?;
            }
        }
    }
    Ok(())
}

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
