//! Writing a flat-file binary cache: the per-path pipeline and its scheduling.
//!
//! Each path is read once. Its NAR streams through a hasher (NarHash,
//! NarSize), the compressor and a second hasher (FileHash, FileSize) into a
//! temporary file, which is renamed to `nar/<FileHash>.nar<ext>` once
//! complete; the listing and debug-info entries (recorded during the same
//! pass) follow, and the narinfo comes last, once the narinfos of the path's
//! references are written too (`Publication`). [`schedule`] decides which path
//! is written when, and with how many threads.
//!
//! Two entry points:
//! - [`write_cache`] makes a new cache, as a Nix builder does: the output
//!   must not exist, and is removed if anything fails.
//! - [`update_cache`] adds to a cache that may exist, as `mk-binary-cache
//!   build` does. It is crash-safe: every file is written under a temporary
//!   name unique to the process, fsynced and renamed, and a path's narinfo is
//!   renamed into place only once its NAR (and listing) and the narinfos of
//!   its references are durable. A run killed at any moment leaves every
//!   narinfo pointing at a complete NAR and at references the cache holds, at
//!   worst with an unreferenced NAR or a stale temporary file, which the next
//!   run replaces or removes; paths with a narinfo are skipped, so the next
//!   run completes the cache. Runs into the same directory at once do not
//!   clash: they write the same bytes under different temporary names.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use thiserror::Error;

use crate::format::cache_info::{self, CacheInfo, CacheInfoError};
use crate::format::compression::Compression;
use crate::format::debuginfo;
use crate::format::hash::{HashingWriter, Sha256};
use crate::format::nar::dump::{self, DumpError};
use crate::format::nar::listing;
use crate::format::narinfo::NarInfo;
use crate::format::store_path::{self, DEFAULT_STORE_DIR, PathInfo, StorePath};
use crate::support::files::{self, DirLock, TempNames};
use crate::support::progress::{Progress, Totals};
use crate::support::schedule;

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
    let cache = Cache::new(out, false);
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
/// them. Compression may differ from path to path: each narinfo names its own.
/// Listings and debug-info entries are written for the paths written now.
pub fn update_cache(
    dir: &Path,
    closure: &[PathInfo],
    opts: &Options,
    progress: &Progress,
) -> Result<Updated, CacheError> {
    fs::create_dir_all(dir).map_err(write_error(dir))?;
    let cache = Cache::new(dir, true);
    let info_file = dir.join(cache_info::FILE_NAME);
    match fs::read_to_string(&info_file) {
        Ok(text) => check_cache_info(&info_file, &text, opts)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if !is_empty_but_for_temp_files(dir)? {
                return Err(CacheError::NotACache(dir.to_owned()));
            }
            cache.write_file(&info_file, cache_info(opts).to_string().as_bytes())?;
        }
        Err(e) => return Err(read_error(&info_file)(e)),
    }
    cache.create_directories()?;
    cache.remove_stale_temp_files()?;

    let (present, missing): (Vec<&PathInfo>, Vec<&PathInfo>) = closure
        .iter()
        .partition(|p| cache.narinfo_path(&p.path).exists());
    let missing: Vec<PathInfo> = missing.into_iter().cloned().collect();
    if !present.is_empty() {
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

/// The `nix-cache-info` this run writes.
pub fn cache_info(opts: &Options) -> CacheInfo {
    CacheInfo {
        store_dir: Some(opts.store_dir.clone()),
        want_mass_query: opts.want_mass_query,
        // At most MAX_PRIORITY, an i32: the options are checked when read.
        priority: opts.priority.map(|p| p as i64),
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

/// A cache directory being written.
struct Cache<'a> {
    root: &'a Path,
    /// Whether to fsync files and directories before relying on them.
    durable: bool,
    temp: TempNames,
    /// Debug-info entries written by this run: entry name -> the store path
    /// it was written for.
    debug_entries: Mutex<HashMap<String, StorePath>>,
}

impl<'a> Cache<'a> {
    fn new(root: &'a Path, durable: bool) -> Self {
        Cache {
            root,
            durable,
            temp: TempNames::default(),
            debug_entries: Mutex::new(HashMap::new()),
        }
    }

    fn create_directories(&self) -> Result<(), CacheError> {
        for dir in DIRECTORIES {
            let dir = self.root.join(dir);
            match fs::create_dir(&dir) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                    return Err(write_error(&dir)(e));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn narinfo_path(&self, path: &StorePath) -> PathBuf {
        self.root.join(format!("{}.narinfo", path.hash_part()))
    }

    /// Writes `contents` to `dest` through a temporary file and a rename.
    fn write_file(&self, dest: &Path, contents: &[u8]) -> Result<(), CacheError> {
        let tmp = self.temp.next(dest);
        let written = File::create(&tmp)
            .and_then(|mut f| {
                f.write_all(contents)?;
                self.sync(&f)
            })
            .and_then(|()| fs::rename(&tmp, dest));
        written.map_err(|e| {
            let _ = fs::remove_file(&tmp);
            write_error(dest)(e)
        })
    }

    fn sync(&self, file: &File) -> io::Result<()> {
        if self.durable {
            file.sync_all()
        } else {
            Ok(())
        }
    }

    /// Makes the renames done in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> Result<(), CacheError> {
        if self.durable {
            files::sync_dir(dir).map_err(write_error(dir))?;
        }
        Ok(())
    }

    /// Writes every path of `closure`; returns the totals.
    ///
    /// NARs are written in the order [`schedule`] picks, but a narinfo is
    /// published only once the narinfos of all its references are: at any
    /// moment, the cache is closed under references.
    fn write_paths(
        &self,
        closure: &[PathInfo],
        opts: &Options,
        progress: &Progress,
    ) -> Result<Totals, CacheError> {
        let plan = plan(closure)?;
        progress.begin(plan.len(), plan.iter().map(|(size, _)| size).sum());
        let publication = Publication::new(closure);
        let totals = Mutex::new(Totals::default());
        let publish = |info: &NarInfo| {
            self.write_file(
                &self.narinfo_path(&info.store_path),
                info.to_string().as_bytes(),
            )?;
            // A dependent's narinfo must not outlive this one in a crash.
            self.sync_dir(self.root)?;
            progress.path_done(info);
            totals.lock().unwrap().add(info);
            Ok(())
        };
        let threshold = opts.compression.multithread_threshold();
        schedule::run(
            &plan,
            |(size, _)| *size,
            threshold,
            opts.jobs,
            |(_, path), threads| {
                let info = self.write_path(path, opts, threads, progress)?;
                publication.ready(info, publish)
            },
        )?;
        Ok(totals.into_inner().unwrap())
    }

    /// Writes the NAR, listing and debug-info entries of `path`, in that
    /// order, and makes them durable; returns its narinfo, still to be
    /// written.
    fn write_path(
        &self,
        path: &PathInfo,
        opts: &Options,
        threads: u32,
        progress: &Progress,
    ) -> Result<NarInfo, CacheError> {
        let (info, listing) = self.write_nar(path, opts, threads, progress)?;
        if let Some(listing) = listing {
            if opts.write_nar_listing {
                let ls = self.root.join(format!("{}.ls", path.path.hash_part()));
                self.write_file(&ls, &listing.to_ls_json())?;
            }
            if opts.index_debug_info {
                self.index_debug_info(&path.path, &info.url, &listing)?;
            }
        }
        // The narinfo must never be seen before what it points to.
        self.sync_dir(&self.root.join("nar"))?;
        if opts.index_debug_info {
            self.sync_dir(&self.root.join("debuginfo"))?;
        }
        Ok(info)
    }

    /// Adds a `debuginfo/` entry for each debug file in `listing`.
    ///
    /// An entry that was there before this run is kept, as Nix keeps it.
    /// Between paths of this run that hold the same build ID, the smallest
    /// store path wins, whatever order the workers reach them in, so that
    /// the cache's bytes do not depend on the number of cores.
    fn index_debug_info(
        &self,
        path: &StorePath,
        nar_url: &str,
        listing: &listing::Node,
    ) -> Result<(), CacheError> {
        let files = debuginfo::debug_files(listing);
        if files.is_empty() {
            return Ok(());
        }
        let mut written = self.debug_entries.lock().unwrap();
        for file in files {
            let dest = self.root.join("debuginfo").join(&file.file_name);
            let entry = file.index_entry(nar_url);
            match written.get(&file.file_name) {
                Some(by) if by <= path => continue,
                Some(_) => self.write_file(&dest, entry.as_bytes())?,
                None => {
                    if !self.create_file(&dest, entry.as_bytes())? {
                        continue;
                    }
                }
            }
            written.insert(file.file_name, path.clone());
        }
        Ok(())
    }

    /// Writes `dest` atomically unless it exists; returns whether it did.
    fn create_file(&self, dest: &Path, contents: &[u8]) -> Result<bool, CacheError> {
        let tmp = self.temp.next(dest);
        let result = File::create(&tmp)
            .and_then(|mut f| {
                f.write_all(contents)?;
                self.sync(&f)
            })
            // A hard link, unlike a rename, never replaces its destination.
            .and_then(|()| match fs::hard_link(&tmp, dest) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e),
            });
        let _ = fs::remove_file(&tmp);
        result.map_err(write_error(dest))
    }

    /// Writes `nar/<FileHash>.nar<ext>` for `path`; returns its narinfo and,
    /// when a listing or debug-info index is wanted, its listing.
    fn write_nar(
        &self,
        path: &PathInfo,
        opts: &Options,
        threads: u32,
        progress: &Progress,
    ) -> Result<(NarInfo, Option<listing::Node>), CacheError> {
        let nar_dir = self.root.join("nar");
        let tmp = self.temp.next(&nar_dir.join(path.path.hash_part()));
        let file = File::create(&tmp).map_err(write_error(&tmp))?;
        let result = match opts.compression {
            // The file is the NAR itself: hashing it again would be wasted work.
            Compression::None => compress_nar(path, file, &tmp, opts, threads, progress)
                .map(|(file, nar)| (file, nar.hash, nar.size, nar)),
            _ => compress_nar(
                path,
                HashingWriter::new(file),
                &tmp,
                opts,
                threads,
                progress,
            )
            .map(|(sink, nar)| {
                let (file, file_hash, file_size) = sink.finish();
                (file, file_hash, file_size, nar)
            }),
        };
        let checked = result.and_then(|(file, file_hash, file_size, nar)| {
            check(path, nar.hash, nar.size)?;
            self.sync(&file).map_err(write_error(&tmp))?;
            Ok((file_hash, file_size, nar))
        });
        let (file_hash, file_size, nar) = match checked {
            Ok(r) => r,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        let url = format!(
            "nar/{}.nar{}",
            file_hash.to_nix32(),
            opts.compression.extension()
        );
        let dest = self.root.join(&url);
        fs::rename(&tmp, &dest).map_err(write_error(&dest))?;
        let info = NarInfo {
            store_path: path.path.clone(),
            nar_hash: nar.hash,
            nar_size: nar.size,
            references: path.references.clone(),
            url,
            compression: opts.compression.name().to_owned(),
            file_hash: Some(file_hash),
            file_size: Some(file_size),
            deriver: path.deriver.clone(),
            signatures: Vec::new(),
            ca: path.ca.clone(),
        };
        Ok((info, nar.listing))
    }

    /// Adds `roots` to `store-paths`, keeping the paths it lists.
    fn add_store_paths(&self, roots: &[StorePath], store_dir: &str) -> Result<(), CacheError> {
        let file = self.root.join(STORE_PATHS);
        // Runs into the same cache take turns to read, merge and replace it.
        let root = File::open(self.root).map_err(read_error(self.root))?;
        let _lock = DirLock::exclusive(root).map_err(write_error(self.root))?;
        let mut paths = match fs::read_to_string(&file) {
            Ok(text) => text
                .lines()
                .filter(|l| !l.is_empty())
                .map(|line| {
                    StorePath::parse(line, store_dir).map_err(|_| CacheError::StorePathsLine {
                        path: file.clone(),
                        line: line.to_owned(),
                        store_dir: store_dir.to_owned(),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(read_error(&file)(e)),
        };
        let before = paths.len();
        store_path::append_new(&mut paths, roots.iter().cloned());
        if paths.len() == before && file.exists() {
            return Ok(());
        }
        let list: String = paths.iter().map(|p| format!("{p}\n")).collect();
        self.write_file(&file, list.as_bytes())
    }

    /// Removes temporary files that processes no longer running left behind.
    fn remove_stale_temp_files(&self) -> Result<(), CacheError> {
        for dir in [
            self.root.to_owned(),
            self.root.join("nar"),
            self.root.join("debuginfo"),
        ] {
            for entry in fs::read_dir(&dir).map_err(read_error(&dir))? {
                let entry = entry.map_err(read_error(&dir))?;
                if TempNames::is_stale(&entry.file_name()) {
                    let path = entry.path();
                    files::remove_temporary(&path).map_err(write_error(&path))?;
                }
            }
        }
        Ok(())
    }
}

/// Publishes narinfos references first: a path's narinfo is written once
/// its NAR is ready and the narinfos of all its references are written, so
/// that a consumer, or a run killed part-way, never sees a path whose
/// references the cache lacks. References outside the paths being written
/// are taken to be in the cache already.
struct Publication {
    state: Mutex<PublicationState>,
}

struct PublicationState {
    /// For each path being written, how many of its references (itself
    /// aside) have no narinfo yet.
    waiting_for: HashMap<StorePath, usize>,
    /// For each path, the paths that refer to it.
    dependents: HashMap<StorePath, Vec<StorePath>>,
    /// Narinfos whose NAR is written, waiting for their references.
    ready: HashMap<StorePath, NarInfo>,
}

impl Publication {
    fn new(closure: &[PathInfo]) -> Self {
        let writing: HashSet<&StorePath> = closure.iter().map(|p| &p.path).collect();
        let mut waiting_for = HashMap::with_capacity(closure.len());
        let mut dependents: HashMap<StorePath, Vec<StorePath>> = HashMap::new();
        for info in closure {
            let references: HashSet<&StorePath> = info
                .references
                .iter()
                .filter(|r| **r != info.path && writing.contains(r))
                .collect();
            for reference in &references {
                dependents
                    .entry((*reference).clone())
                    .or_default()
                    .push(info.path.clone());
            }
            waiting_for.insert(info.path.clone(), references.len());
        }
        Publication {
            state: Mutex::new(PublicationState {
                waiting_for,
                dependents,
                ready: HashMap::new(),
            }),
        }
    }

    /// `info`'s NAR is written: publishes it with `publish` if its references
    /// are published, and then every ready path that was waiting only for it.
    /// Narinfos are written outside the lock, by the thread that completes
    /// the last reference.
    fn ready(
        &self,
        info: NarInfo,
        publish: impl Fn(&NarInfo) -> Result<(), CacheError>,
    ) -> Result<(), CacheError> {
        let mut publishable = Vec::new();
        {
            let mut state = self.state.lock().unwrap();
            if state.waiting_for[&info.store_path] == 0 {
                publishable.push(info);
            } else {
                state.ready.insert(info.store_path.clone(), info);
            }
        }
        while let Some(info) = publishable.pop() {
            publish(&info)?;
            let mut state = self.state.lock().unwrap();
            for dependent in state
                .dependents
                .remove(&info.store_path)
                .unwrap_or_default()
            {
                let waiting = state.waiting_for.get_mut(&dependent).unwrap();
                *waiting -= 1;
                if *waiting == 0 {
                    publishable.extend(state.ready.remove(&dependent));
                }
            }
        }
        Ok(())
    }
}

/// The paths to write with their NAR sizes, largest first, in store-path
/// order among equal sizes.
fn plan(closure: &[PathInfo]) -> Result<Vec<(u64, &PathInfo)>, CacheError> {
    let mut sized = closure
        .iter()
        .map(|p| Ok((nar_size_of(p)?, p)))
        .collect::<Result<Vec<_>, CacheError>>()?;
    sized.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.path.cmp(&b.1.path)));
    Ok(sized)
}

fn nar_size_of(p: &PathInfo) -> Result<u64, CacheError> {
    match p.nar_size {
        Some(size) => Ok(size),
        None => Ok(dump::nar_size(Path::new(&p.path.to_absolute()))?),
    }
}

/// What one pass over a store path learnt about its NAR.
struct Nar {
    hash: Sha256,
    size: u64,
    listing: Option<listing::Node>,
}

/// Streams the NAR of `path` through `sink`'s compressor, returning the
/// sink and what was learnt of the NAR. A listing is recorded when the
/// options need one.
fn compress_nar<S: Write>(
    path: &PathInfo,
    sink: S,
    sink_path: &Path,
    opts: &Options,
    threads: u32,
    progress: &Progress,
) -> Result<(S, Nar), CacheError> {
    let source = PathBuf::from(path.path.to_absolute());
    let expected_size = nar_size_of(path)?;
    let nar_error = |source| CacheError::WriteNar {
        path: path.path.clone(),
        file: sink_path.to_owned(),
        source,
    };
    let encoder = opts
        .compression
        .encoder(sink, opts.level, expected_size, threads)
        .map_err(nar_error)?;
    // The NAR comes in many small tokens; batch them before hashing.
    let mut nar = BufWriter::with_capacity(
        256 << 10,
        Reporting {
            inner: HashingWriter::new(encoder),
            progress,
        },
    );
    let listing = if opts.write_nar_listing || opts.index_debug_info {
        Some(listing::dump(&source, &mut nar)?)
    } else {
        dump::dump(&source, &mut nar)?;
        None
    };
    let (encoder, hash, size) = nar
        .into_inner()
        .map_err(|e| e.into_error())
        .map_err(nar_error)?
        .inner
        .finish();
    let sink = encoder.finish().map_err(nar_error)?;
    Ok((
        sink,
        Nar {
            hash,
            size,
            listing,
        },
    ))
}

/// Tells the progress display how many NAR bytes went through.
struct Reporting<'p, W> {
    inner: W,
    progress: &'p Progress,
}

impl<W: Write> Write for Reporting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Compares what was read with what Nix recorded when the path was made.
fn check(path: &PathInfo, nar_hash: Sha256, nar_size: u64) -> Result<(), CacheError> {
    if let Some(expected) = path.nar_size.filter(|&s| s != nar_size) {
        return Err(CacheError::SizeMismatch {
            path: path.path.clone(),
            expected,
            actual: nar_size,
        });
    }
    if let Some(expected) = path.nar_hash.filter(|&h| h != nar_hash) {
        return Err(CacheError::HashMismatch {
            path: path.path.clone(),
            expected,
            actual: nar_hash,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(name: &str) -> StorePath {
        let hash = format!("{:0<32}", name.len());
        StorePath::from_base_name(&format!("{hash}-{name}"), "/nix/store").unwrap()
    }

    fn info(name: &str, references: &[&str]) -> PathInfo {
        PathInfo {
            path: path(name),
            nar_hash: None,
            nar_size: Some(1),
            references: references.iter().map(|r| path(r)).collect(),
            deriver: None,
            ca: None,
        }
    }

    fn narinfo(p: &PathInfo) -> NarInfo {
        NarInfo {
            store_path: p.path.clone(),
            nar_hash: Sha256::digest(b""),
            nar_size: 1,
            references: p.references.clone(),
            url: String::new(),
            compression: "none".to_owned(),
            file_hash: None,
            file_size: None,
            deriver: None,
            signatures: Vec::new(),
            ca: None,
        }
    }

    #[test]
    fn narinfos_are_published_after_those_of_their_references() {
        // top -> {left, right, top}, left -> leaf, right -> {leaf, cached};
        // `cached` is already in the cache, so nobody waits for it.
        let closure = [
            info("top", &["left", "right", "top"]),
            info("left", &["leaf"]),
            info("right", &["leaf", "cached"]),
            info("leaf", &[]),
        ];
        let publication = Publication::new(&closure);
        let published = Mutex::new(Vec::new());
        let publish = |i: &NarInfo| {
            published
                .lock()
                .unwrap()
                .push(i.store_path.name().to_owned());
            Ok(())
        };
        // NARs finish in the worst order: every dependent before its references.
        for p in &closure {
            publication.ready(narinfo(p), publish).unwrap();
            if p.path.name() != "leaf" {
                assert!(published.lock().unwrap().is_empty());
            }
        }
        let published = published.into_inner().unwrap();
        assert_eq!(published.len(), 4);
        let at = |name: &str| published.iter().position(|n| n == name).unwrap();
        assert!(
            at("leaf") < at("left") && at("leaf") < at("right"),
            "{published:?}"
        );
        assert!(
            at("left") < at("top") && at("right") < at("top"),
            "{published:?}"
        );
    }

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
