//! Shrinking a cache to the closure of its roots (`mk-binary-cache prune`).
//!
//! A cache grown by `build --to` over many releases keeps every path it was
//! ever given. [`prune`] keeps the closure of the roots (those `store-paths`
//! lists, or the ones given, which then replace `store-paths`, and those of
//! the revisions its pins retain) and removes
//! everything else the cache's writers leave: other narinfos and their `.ls`
//! listings, `debuginfo/` entries whose NAR goes, NARs that no kept narinfo
//! names (including those an interrupted `build` left without a narinfo),
//! and temporary files of processes no longer running.
//!
//! Pins (`ops::pins`) first lose the revisions their policy drops, and
//! `store-paths` the roots only those revisions named (a path added under a
//! pin is a root through its pin alone); both files are replaced atomically
//! before anything is removed, so a prune killed later never leaves a pin or
//! `store-paths` naming a path that is gone.
//!
//! It is crash-safe by the order it removes things in, each step made
//! durable before the next: narinfos first, a path's before those of its
//! references (so the narinfos left are always closed under references),
//! then listings and debug-info entries, then NARs and temporary files. A
//! prune killed at any point leaves a cache whose every narinfo has its NAR
//! and its references; running it again finishes the job.
//!
//! It removes only directory entries it finds by listing the cache
//! directory, `nar/` and `debuginfo/`, never a path read from a file: a
//! symlink is removed as a link, never followed, and a `nar/` or
//! `debuginfo/` that is itself a symlink is refused, since what it holds is
//! outside the cache. A narinfo that is a symlink, or larger than a
//! narinfo can be, is refused too: prune decides nothing on what it might
//! say. It holds the cache lock ([`CacheDir::lock`])
//! exclusively, so it never runs while a `build --to` into the same
//! directory is between finding what the cache holds and listing its roots.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::cache::{CacheDir, CacheDirError, CacheLock, DEBUGINFO_DIR, NAR_DIR};
use crate::format::pin::{Pin, Retention};
use crate::format::store_path::{self, ReferenceCycle, StorePath};
use crate::input::local_store::{self, BuildError};
use crate::ops::pins::files::{self as pin_files, PinsError};
use crate::support::files;
use crate::support::progress::{count, human_bytes};

pub(crate) mod plan;

use plan::{Entry, closure, in_dir, kept_closure, plan, read_narinfos};

#[derive(Debug, Error)]
pub enum PruneError {
    #[error(transparent)]
    Cache(#[from] CacheDirError),
    #[error(
        "'{0}' is missing or empty and no pin names a root: give the paths to keep with --keep"
    )]
    NoRoots(PathBuf),
    #[error(transparent)]
    Pins(#[from] PinsError),
    #[error("--keep: {0}")]
    Keep(Box<BuildError>),
    #[error("--keep '{path}': the cache has no narinfo for it ('{narinfo}')")]
    KeepNotCached { path: StorePath, narinfo: PathBuf },
    #[error("'{path}' belongs to the kept closure but cannot be read: {reason}")]
    UnreadableKept { path: PathBuf, reason: String },
    #[error("cannot remove '{path}': {source}")]
    Remove { path: PathBuf, source: io::Error },
    #[error("{0}; nothing was removed (Nix never writes such narinfos: remove them by hand)")]
    Cycle(ReferenceCycle),
}

/// What to keep, and whether to delete anything.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The roots to keep, replacing those `store-paths` lists (store paths,
    /// paths inside them, or symlinks to them).
    pub keep: Option<Vec<PathBuf>>,
    /// Only say what would be removed.
    pub dry_run: bool,
}

/// What a file that goes was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// The narinfo of a path outside the kept closure (its store path, when
    /// the narinfo could be read).
    Narinfo(Option<StorePath>),
    /// A `.ls` listing of a path that is not kept.
    Listing,
    /// A `debuginfo/` entry whose NAR is not kept.
    DebugInfo,
    /// A NAR that no kept narinfo names.
    Nar,
    /// A temporary file of a process that is no longer running.
    TempFile,
}

/// One file that goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// Relative to the cache directory.
    pub file: PathBuf,
    pub kind: Kind,
    /// Its size (of the link itself, for a symlink).
    pub bytes: u64,
}

impl fmt::Display for Removal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Narinfo(Some(path)) => write!(f, "{path} ({})", self.file.display()),
            _ => write!(f, "{}", self.file.display()),
        }
    }
}

/// What [`prune`] did, or would do.
#[derive(Debug, Clone)]
pub struct Report {
    pub dry_run: bool,
    /// The roots kept.
    pub roots: Vec<StorePath>,
    /// Roots from `store-paths` that have no narinfo in the cache (as in a
    /// delta cache whose roots were excluded).
    pub roots_not_cached: Vec<StorePath>,
    /// How many paths the cache keeps.
    pub kept: usize,
    /// In the order they go (went).
    pub removals: Vec<Removal>,
    /// What each pin kept and freed, by name.
    pub pins: Vec<PinReport>,
}

/// What [`prune`] did (would do) to one pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinReport {
    pub name: String,
    pub retention: Retention,
    /// The numbers of the revisions retained, newest first.
    pub kept: Vec<u64>,
    /// The numbers of the revisions the policy drops, newest first.
    pub dropped: Vec<u64>,
    /// Paths in the closure of the retained revisions.
    pub kept_paths: usize,
    /// Narinfos removed that the dropped revisions' closures held.
    pub freed_paths: usize,
    /// Their bytes, and those of their listings and of the NARs removed
    /// that they named.
    pub freed_bytes: u64,
}

impl fmt::Display for PinReport {
    /// `pin release (the newest 2 revisions): kept revisions 3, 2 (5 paths); dropped revision 1: 2 paths, 1.2 KiB (1234 bytes)`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let numbers = |n: &[u64]| {
            let list: Vec<String> = n.iter().map(u64::to_string).collect();
            format!(
                "{} {}",
                if n.len() == 1 {
                    "revision"
                } else {
                    "revisions"
                },
                list.join(", ")
            )
        };
        write!(
            f,
            "pin {} ({}): kept {} ({} paths)",
            self.name,
            self.retention,
            numbers(&self.kept),
            self.kept_paths
        )?;
        if !self.dropped.is_empty() {
            write!(
                f,
                "; dropped {}: {} paths, {} ({} bytes)",
                numbers(&self.dropped),
                self.freed_paths,
                human_bytes(self.freed_bytes),
                self.freed_bytes
            )?;
        }
        Ok(())
    }
}

impl Report {
    /// Bytes the removals free (free, with --dry-run).
    pub fn bytes(&self) -> u64 {
        self.removals.iter().map(|r| r.bytes).sum()
    }

    fn count(&self, matches: impl Fn(&Kind) -> bool) -> usize {
        self.removals.iter().filter(|r| matches(&r.kind)).count()
    }

    /// One line per removal: `removed …`, or `would remove …`.
    pub fn lines(&self) -> impl Iterator<Item = String> + '_ {
        let verb = if self.dry_run {
            "would remove"
        } else {
            "removed"
        };
        let drop = if self.dry_run {
            "would drop"
        } else {
            "dropped"
        };
        let revisions = self.pins.iter().flat_map(move |pin| {
            pin.dropped
                .iter()
                .map(move |n| format!("{drop} revision {n} of pin {}", pin.name))
        });
        revisions.chain(self.removals.iter().map(move |r| format!("{verb} {r}")))
    }
}

impl fmt::Display for Report {
    /// The summary: what was kept, what went and the bytes freed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.bytes();
        let (remove, free) = if self.dry_run {
            ("dry run: would remove", "would free")
        } else {
            ("pruned: removed", "freed")
        };
        write!(
            f,
            "{remove} {}, {}, {}, {}, {}; {free} {} ({bytes} bytes); kept {} of {}",
            count(
                self.count(|k| matches!(k, Kind::Narinfo(_))),
                "path",
                "paths"
            ),
            count(self.count(|k| *k == Kind::Nar), "NAR", "NARs"),
            count(self.count(|k| *k == Kind::Listing), "listing", "listings"),
            count(
                self.count(|k| *k == Kind::DebugInfo),
                "debug-info entry",
                "debug-info entries"
            ),
            count(
                self.count(|k| *k == Kind::TempFile),
                "temporary file",
                "temporary files"
            ),
            human_bytes(bytes),
            count(self.kept, "path", "paths"),
            count(self.roots.len(), "root", "roots"),
        )
    }
}

/// Prunes the cache at `dir` to the closure of its roots; see the module
/// documentation. When another run holds the cache lock, `waiting` is
/// called once before the prune waits for it.
pub fn prune(dir: &Path, opts: &Options, waiting: impl FnOnce()) -> Result<Report, PruneError> {
    // Refuses a nar/ or debuginfo/ that is a symlink: what it holds is
    // outside the cache.
    let cache = CacheDir::open(dir)?;
    // The cache lock is taken on nar/. A cache without one holds no NAR: a
    // prune makes it to lock it; a dry run changes nothing and reads unlocked.
    let nar_dir = cache.nar_dir();
    if !opts.dry_run && !nar_dir.exists() {
        fs::create_dir(&nar_dir).map_err(|source| CacheDirError::Write {
            path: nar_dir.clone(),
            source,
        })?;
    }
    let _cache_lock = match nar_dir.exists() {
        true => Some(cache.lock(CacheLock::Exclusive, waiting)?),
        false => None,
    };

    let narinfos = read_narinfos(&cache)?;
    let listed = match &opts.keep {
        Some(keep) => {
            let roots = local_store::resolve_roots(keep, cache.store_dir())
                .map_err(|e| PruneError::Keep(Box::new(e)))?;
            if let Some(path) = roots.iter().find(|r| !narinfos.contains_key(r.hash_part())) {
                return Err(PruneError::KeepNotCached {
                    path: path.clone(),
                    narinfo: cache.narinfo_path(path.hash_part()),
                });
            }
            roots
        }
        None => cache.store_paths()?,
    };
    let pins = cache.pins()?;
    let now = pin_files::now();
    let retained = pin_files::retained_roots(&pins, now);
    let dropped = pin_files::dropped_roots(&pins, now);
    // What `store-paths` lists after the prune: its roots (or --keep) but
    // those only dropped revisions named, and, with --keep, the pinned ones.
    let mut store_paths = pin_files::without_dropped_roots(&listed, &dropped);
    if opts.keep.is_some() {
        store_path::append_new(&mut store_paths, retained.iter().cloned());
    }
    let mut roots = store_paths.clone();
    store_path::append_new(&mut roots, retained);
    if roots.is_empty() {
        return Err(PruneError::NoRoots(cache.store_paths_file()));
    }

    let kept = kept_closure(&cache, &roots, &narinfos)?;
    let stages = plan(&cache, &narinfos, &kept)?;
    let removals: Vec<Removal> = stages.iter().flatten().cloned().collect();
    let report = Report {
        dry_run: opts.dry_run,
        roots_not_cached: roots
            .iter()
            .filter(|r| !narinfos.contains_key(r.hash_part()))
            .cloned()
            .collect(),
        pins: pins
            .iter()
            .map(|pin| pin_report(pin, now, &narinfos, &kept, &removals))
            .collect(),
        roots: roots.clone(),
        kept: kept.len(),
        removals,
    };
    if opts.dry_run {
        return Ok(report);
    }
    // Before anything goes: a prune killed later must not leave a pin or
    // `store-paths` naming paths that are gone.
    let changed_pins: Vec<Pin> = pins
        .iter()
        .filter_map(|p| pin_files::without_dropped_revisions(p, now))
        .collect();
    if !changed_pins.is_empty() {
        let _lock = cache.lock_pins()?;
        for kept in &changed_pins {
            cache.write_pin(kept)?;
        }
    }
    if opts.keep.is_some() || store_paths != listed {
        // Under the lock `build --to` takes to merge it.
        cache.replace_store_paths(&store_paths)?;
    }
    for stage in &stages {
        for removal in stage {
            remove(&dir.join(&removal.file))?;
        }
        // Each stage is durable before the next begins.
        for sub in [".", NAR_DIR, DEBUGINFO_DIR] {
            if stage.iter().any(|r| in_dir(&r.file, sub)) {
                sync_dir(&dir.join(sub))?;
            }
        }
    }
    Ok(report)
}

/// What the prune keeps of `pin` and frees of its dropped revisions.
fn pin_report(
    pin: &Pin,
    now: u64,
    narinfos: &BTreeMap<String, Entry>,
    kept: &BTreeSet<String>,
    removals: &[Removal],
) -> PinReport {
    let (retained, dropped) = pin.split(now);
    let hashes = |revisions: &[&crate::format::pin::Revision]| {
        let roots: Vec<&str> = revisions
            .iter()
            .flat_map(|r| r.roots.iter().map(StorePath::hash_part))
            .collect();
        closure(roots, narinfos)
    };
    let freed: BTreeSet<String> = hashes(&dropped)
        .into_iter()
        .filter(|h| !kept.contains(h))
        .collect();
    // The files removed that belong to the freed paths: narinfos, listings
    // and the NARs they name.
    let nars: BTreeSet<String> = freed
        .iter()
        .filter_map(|h| narinfos[h].info.as_ref().ok())
        .map(|info| info.url.trim_start_matches("./").to_owned())
        .collect();
    let freed_bytes = removals
        .iter()
        .filter(|r| {
            let file = r.file.to_string_lossy();
            let stem = file
                .strip_suffix(".narinfo")
                .or_else(|| file.strip_suffix(".ls"));
            stem.is_some_and(|h| freed.contains(h)) || nars.contains(&*file)
        })
        .map(|r| r.bytes)
        .sum();
    PinReport {
        name: pin.name.clone(),
        retention: pin.retention,
        kept: retained.iter().map(|r| r.number).collect(),
        dropped: dropped.iter().map(|r| r.number).collect(),
        kept_paths: hashes(&retained).len(),
        freed_paths: freed.len(),
        freed_bytes,
    }
}

/// Removes `path` itself (a symlink as a link); gone already is fine.
fn remove(path: &Path) -> Result<(), PruneError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(PruneError::Remove {
            path: path.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> Result<(), PruneError> {
    files::sync_dir(dir).map_err(|source| PruneError::Remove {
        path: dir.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::plan::{is_nar_name, nar_file_name};
    use super::*;

    #[test]
    fn nar_names_are_what_writers_write() {
        for good in [
            "0wspvgvn8qfh2yv4h92wc3xp18s9yx1kszn3a3lc9ynikzr7bvci.nar.xz",
            "x.nar",
            "x.nar.zst",
        ] {
            assert!(is_nar_name(good), "{good}");
        }
        for bad in [
            ".x.nar.tmp.1.2",
            "README",
            ".nar",
            "x.nar.",
            "x.narx",
            "x.nar.a/b",
        ] {
            assert!(!is_nar_name(bad), "{bad}");
        }
    }

    #[test]
    fn only_urls_directly_in_nar_name_a_nar_file() {
        let name = |url: &str, up| nar_file_name(Path::new(url), up);
        assert_eq!(name("nar/a.nar.xz", 0).as_deref(), Some("a.nar.xz"));
        assert_eq!(name("./nar/a.nar", 0).as_deref(), Some("a.nar"));
        assert_eq!(name("../nar/a.nar", 1).as_deref(), Some("a.nar"));
        assert_eq!(name("../nar/a.nar", 0), None);
        assert_eq!(name("nar/../a.nar", 0), None);
        assert_eq!(name("/nar/a.nar", 0), None);
        assert_eq!(name("nar/sub/a.nar", 0), None);
        assert_eq!(name("../../nar/a.nar", 1), None);
    }

    #[test]
    fn the_summary_counts_each_kind_and_the_bytes() {
        let removal = |file: &str, kind, bytes| Removal {
            file: PathBuf::from(file),
            kind,
            bytes,
        };
        let report = Report {
            dry_run: true,
            roots: Vec::new(),
            roots_not_cached: Vec::new(),
            kept: 3,
            pins: Vec::new(),
            removals: vec![
                removal("a.narinfo", Kind::Narinfo(None), 100),
                removal("nar/a.nar", Kind::Nar, 2000),
                removal("debuginfo/x.debug", Kind::DebugInfo, 50),
            ],
        };
        assert_eq!(
            report.to_string(),
            "dry run: would remove 1 path, 1 NAR, 0 listings, 1 debug-info entry, 0 temporary files; \
             would free 2.1 KiB (2150 bytes); kept 3 paths of 0 roots"
        );
    }
}
