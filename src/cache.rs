//! Writing a flat-file binary cache: the per-path pipeline and its scheduling.
//!
//! Each path is read once. Its NAR streams through a hasher (NarHash,
//! NarSize), the compressor and a second hasher (FileHash, FileSize) into a
//! temporary file, which is renamed to `nar/<FileHash>.nar<ext>` once
//! complete; the narinfo follows. Paths go largest first: those big enough for
//! a multithreaded encoder one at a time with every core on their blocks,
//! then the rest on a pool of one worker per core.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use thiserror::Error;

use crate::compression::Compression;
use crate::hash::{HashingWriter, NarHash};
use crate::nar::dump::{self, DumpError};
use crate::narinfo::NarInfo;
use crate::progress::{Progress, Totals};
use crate::store_path::{PathInfo, StorePath};

/// Directories Nix's `LocalBinaryCacheStore` creates when it opens a cache
/// (`realisations/` up to 2.34, `build-trace-v2/` from 2.35, `debuginfo/` when
/// indexing debug info). Creating them now lets Nix open the cache from a
/// read-only mount.
pub const DIRECTORIES: [&str; 5] = ["nar", "log", "realisations", "build-trace-v2", "debuginfo"];

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
    /// Written to `store-paths`, one per line, when not empty.
    pub root_paths: Vec<StorePath>,
}

#[derive(Debug, Error)]
pub enum CacheError {
    #[error(transparent)]
    Dump(#[from] DumpError),
    #[error("cannot write '{path}': {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error(
        "'{path}' has NAR hash {actual}, but the closure says {expected}: the store path was modified or is corrupt"
    )]
    HashMismatch {
        path: StorePath,
        expected: NarHash,
        actual: NarHash,
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
}

fn write_error(path: &Path) -> impl FnOnce(io::Error) -> CacheError + '_ {
    move |source| CacheError::Write {
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
    let result = write_into(out, closure, opts, progress);
    if result.is_err() {
        let _ = fs::remove_dir_all(out);
    }
    result
}

fn write_into(
    out: &Path,
    closure: &[PathInfo],
    opts: &Options,
    progress: &Progress,
) -> Result<Totals, CacheError> {
    fs::create_dir(out).map_err(write_error(out))?;
    for dir in DIRECTORIES {
        let dir = out.join(dir);
        fs::create_dir(&dir).map_err(write_error(&dir))?;
    }
    write_file(&out.join("nix-cache-info"), cache_info(opts).as_bytes())?;

    let infos = Mutex::new(Vec::with_capacity(closure.len()));
    for_each_path(closure, opts, |path, threads| {
        let info = write_nar(out, path, opts, threads)?;
        let narinfo = out.join(format!("{}.narinfo", info.store_path.hash_part()));
        write_file(&narinfo, info.to_string().as_bytes())?;
        progress.path_done(&info);
        infos.lock().unwrap().push(info);
        Ok(())
    })?;

    if !opts.root_paths.is_empty() {
        let list: String = opts.root_paths.iter().map(|p| format!("{p}\n")).collect();
        write_file(&out.join("store-paths"), list.as_bytes())?;
    }
    let mut totals = Totals::default();
    for info in infos.into_inner().unwrap().iter() {
        totals.add(info);
    }
    Ok(totals)
}

/// The text of `nix-cache-info`.
pub fn cache_info(opts: &Options) -> String {
    let mut text = format!("StoreDir: {}\n", opts.store_dir);
    if let Some(want) = opts.want_mass_query {
        text += &format!("WantMassQuery: {}\n", u8::from(want));
    }
    if let Some(priority) = opts.priority {
        text += &format!("Priority: {priority}\n");
    }
    text
}

fn write_file(path: &Path, contents: &[u8]) -> Result<(), CacheError> {
    fs::write(path, contents).map_err(write_error(path))
}

/// Runs `work(path, threads)` on every path, largest first: paths that
/// get a multithreaded encoder one at a time with `jobs` threads, then the
/// others on `jobs` workers. Stops at the first error and returns it.
fn for_each_path<F>(closure: &[PathInfo], opts: &Options, work: F) -> Result<(), CacheError>
where
    F: Fn(&PathInfo, u32) -> Result<(), CacheError> + Sync,
{
    let mut sized = closure
        .iter()
        .map(|p| Ok((nar_size_of(p)?, p)))
        .collect::<Result<Vec<_>, CacheError>>()?;
    sized.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.path.cmp(&b.1.path)));
    let threshold = opts.compression.multithread_threshold();
    let split = sized.partition_point(|(size, _)| *size >= threshold);
    let (large, small) = sized.split_at(split);
    let jobs = opts.jobs.max(1);

    for (_, path) in large {
        work(path, jobs as u32)?;
    }

    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(small.len()) {
            scope.spawn(|| {
                while !failed.load(Ordering::Relaxed) {
                    let Some((_, path)) = small.get(next.fetch_add(1, Ordering::Relaxed)) else {
                        break;
                    };
                    if let Err(e) = work(path, 1) {
                        failed.store(true, Ordering::Relaxed);
                        first_error.lock().unwrap().get_or_insert(e);
                    }
                }
            });
        }
    });
    match first_error.into_inner().unwrap() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn nar_size_of(p: &PathInfo) -> Result<u64, CacheError> {
    match p.nar_size {
        Some(size) => Ok(size),
        None => Ok(dump::nar_size(Path::new(&p.path.to_absolute()))?),
    }
}

/// Streams the NAR of `path` through `sink`'s compressor, returning the
/// sink, and the NAR's hash and size.
fn compress_nar<S: Write>(
    path: &PathInfo,
    sink: S,
    opts: &Options,
    threads: u32,
) -> Result<(S, NarHash, u64), CacheError> {
    let source = PathBuf::from(path.path.to_absolute());
    let expected_size = nar_size_of(path)?;
    let encoder = opts
        .compression
        .encoder(sink, opts.level, expected_size, threads)
        .map_err(write_error(&source))?;
    // The NAR comes in many small tokens; batch them before hashing.
    let mut nar = BufWriter::with_capacity(256 << 10, HashingWriter::new(encoder));
    dump::dump(&source, &mut nar)?;
    let (encoder, nar_hash, nar_size) = nar
        .into_inner()
        .map_err(|e| e.into_error())
        .map_err(write_error(&source))?
        .finish();
    let sink = encoder.finish().map_err(write_error(&source))?;
    Ok((sink, nar_hash, nar_size))
}

/// Writes `nar/<FileHash>.nar<ext>` for `path` and returns its narinfo.
fn write_nar(
    out: &Path,
    path: &PathInfo,
    opts: &Options,
    threads: u32,
) -> Result<NarInfo, CacheError> {
    let tmp = out
        .join("nar")
        .join(format!(".{}.tmp", path.path.hash_part()));
    let file = File::create(&tmp).map_err(write_error(&tmp))?;
    let result = match opts.compression {
        // The file is the NAR itself: hashing it again would be wasted work.
        Compression::None => {
            compress_nar(path, file, opts, threads).map(|(_, hash, size)| (hash, size, hash, size))
        }
        _ => {
            compress_nar(path, HashingWriter::new(file), opts, threads).map(|(sink, hash, size)| {
                let (_, file_hash, file_size) = sink.finish();
                (hash, size, file_hash, file_size)
            })
        }
    };
    let (nar_hash, nar_size, file_hash, file_size) =
        match result.and_then(|r| check(path, r.0, r.1).map(|_| r)) {
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
    let dest = out.join(&url);
    fs::rename(&tmp, &dest).map_err(write_error(&dest))?;
    Ok(NarInfo {
        store_path: path.path.clone(),
        nar_hash,
        nar_size,
        references: path.references.clone(),
        url,
        compression: opts.compression.name().to_owned(),
        file_hash: Some(file_hash),
        file_size: Some(file_size),
        deriver: path.deriver.clone(),
        signatures: Vec::new(),
        ca: path.ca.clone(),
    })
}

/// Compares what was read with what Nix recorded when the path was made.
fn check(path: &PathInfo, nar_hash: NarHash, nar_size: u64) -> Result<(), CacheError> {
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
