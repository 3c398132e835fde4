//! The cache on disk: [`CacheDir`] is the one type that knows how a
//! flat-file binary cache is laid out and how its files are found and read.
//!
//! ```text
//! nix-cache-info          StoreDir, WantMassQuery, Priority
//! <hash>.narinfo          one per path (hash: 32 nix32 characters)
//! <hash>.ls               its listing, when written
//! nar/<FileHash>.nar<ext> the NARs
//! debuginfo/<id>.debug    the debug-info index, when written
//! log/ realisations/ build-trace-v2/   what Nix may add
//! store-paths             the roots, one per line (ours, not Nix's)
//! pins/NAME               the named pins and their revisions (ours)
//! ```
//!
//! Every operation (writing, signing, verifying, pruning, publishing,
//! excluding a cache's paths) opens a cache here, lists its narinfos with
//! [`CacheDir::narinfos`] and reads one with [`CacheDir::read_narinfo`]:
//! bounded by [`narinfo::MAX_SIZE`], and never through a symlink, so that
//! nothing outside the cache is read on a narinfo's behalf. A subdirectory
//! that is a symlink is refused when the cache is opened, for the same
//! reason. How files are written (temporary names, syncs) is the writers'
//! business; this module writes only `nix-cache-info`, `store-paths` and
//! the pin files.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::format::cache_info::{self, CacheInfo, CacheInfoError, Upstreams};
use crate::format::narinfo;
use crate::format::store_path::{self, DEFAULT_STORE_DIR, StorePath};
use crate::support::files::{self, DirLock, TempNames};
use crate::support::progress::human_bytes;

mod narinfos;
mod pins;

pub use narinfos::{CacheFile, Entry, narinfo_hash_part};
pub use pins::PinsError;

/// Where the NARs are: `nar/<FileHash>.nar<ext>`.
pub const NAR_DIR: &str = "nar";
/// The debug-info index: `debuginfo/<build id>.debug`.
pub const DEBUGINFO_DIR: &str = "debuginfo";
/// The subdirectories a cache is made with: those `nix copy` makes (`nar/`,
/// `log/`), those Nix may write to (`realisations/` up to 2.34,
/// `build-trace-v2/` from 2.35), and `debuginfo/`. Creating them at once
/// lets Nix open the cache from a read-only mount.
pub const SUBDIRECTORIES: [&str; 5] = [
    NAR_DIR,
    "log",
    "realisations",
    "build-trace-v2",
    DEBUGINFO_DIR,
];
/// The directories of a cache, relative to it, where its writers make
/// temporary files: the cache directory, `nar/` and `debuginfo/`.
pub const TEMP_FILE_DIRS: [&str; 3] = ["", NAR_DIR, DEBUGINFO_DIR];
/// The file listing the cache's root paths, one per line.
pub const STORE_PATHS: &str = "store-paths";
/// The named pins, `pins/NAME` (`format::pin`), read and written through
/// [`CacheDir::pins`], [`CacheDir::read_pin`] and [`CacheDir::write_pin`].
pub const PINS_DIR: &str = crate::format::pin::DIR;

/// What is wrong with a cache, or with one of its files.
#[derive(Debug, Error)]
pub enum CacheDirError {
    #[error("'{0}' is not a binary cache: it has no nix-cache-info")]
    NotACache(PathBuf),
    #[error("'{0}' is not a directory")]
    NotADirectory(PathBuf),
    #[error(
        "'{0}' is not empty and has no nix-cache-info: refusing to write a cache into a directory that is not one"
    )]
    NotEmpty(PathBuf),
    #[error(
        "'{0}' is a symlink: what it points to is outside the cache, and is neither read nor written"
    )]
    Symlink(PathBuf),
    #[error("'{0}' is not a regular file")]
    NotAFile(PathBuf),
    #[error("'{path}' is larger than {}: not a narinfo", human_bytes(*max))]
    TooLarge { path: PathBuf, max: u64 },
    #[error("'{0}' is not UTF-8 text")]
    NotText(PathBuf),
    #[error("'{path}': {source}")]
    Narinfo {
        path: PathBuf,
        source: narinfo::ParseError,
    },
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
    #[error("cannot read '{path}': {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write '{path}': {source}")]
    Write { path: PathBuf, source: io::Error },
}

pub(crate) fn read_error(path: &Path) -> impl FnOnce(io::Error) -> CacheDirError + '_ {
    move |source| CacheDirError::Read {
        path: path.to_owned(),
        source,
    }
}

pub(crate) fn write_error(path: &Path) -> impl FnOnce(io::Error) -> CacheDirError + '_ {
    move |source| CacheDirError::Write {
        path: path.to_owned(),
        source,
    }
}

/// How [`CacheDir::lock`] takes the cache lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheLock {
    /// As a run that adds paths takes it: runs write at once.
    Shared,
    /// As `prune` takes it: alone.
    Exclusive,
}

/// A binary cache directory: where it is and what its `nix-cache-info` says.
#[derive(Debug, Clone)]
pub struct CacheDir {
    root: PathBuf,
    info: CacheInfo,
}

impl CacheDir {
    /// Opens the existing cache at `dir`: a directory without
    /// `nix-cache-info` is not a cache, and one whose `nar/` or `debuginfo/`
    /// is a symlink is refused.
    pub fn open(dir: &Path) -> Result<Self, CacheDirError> {
        let info = match read_cache_info(dir)? {
            Some((info, _)) => info,
            None => return Err(CacheDirError::NotACache(dir.to_owned())),
        };
        let cache = CacheDir {
            root: dir.to_owned(),
            info,
        };
        cache.refuse_symlinked_directories()?;
        Ok(cache)
    }

    /// The directory `dir` taken for a cache without a look at it: for
    /// `verify`, which reports what is wrong with a cache rather than
    /// refusing it. Its store directory is the default.
    pub fn unchecked(dir: &Path) -> Self {
        CacheDir {
            root: dir.to_owned(),
            info: CacheInfo::default(),
        }
    }

    /// Makes a new cache at `dir`, which must not exist, with `info` and
    /// every subdirectory. Written in place and unsynced: for a new output
    /// that nothing reads before the run ends.
    pub fn create_new(dir: &Path, info: CacheInfo) -> Result<Self, CacheDirError> {
        fs::create_dir(dir).map_err(write_error(dir))?;
        let cache = CacheDir {
            root: dir.to_owned(),
            info,
        };
        let file = cache.cache_info_file();
        fs::write(&file, cache.info.to_string()).map_err(write_error(&file))?;
        cache.create_subdirectories()?;
        Ok(cache)
    }

    /// Opens the cache at `dir` to add to it, making it first if `dir` is
    /// missing or empty (but for temporary files a killed run left).
    ///
    /// An existing `nix-cache-info` must agree with `wanted`: the same
    /// `StoreDir`, and the same `Priority` and `WantMassQuery` where it has
    /// them. A setting `wanted` has and the file lacks is added to the file
    /// (atomically), never ignored.
    pub fn open_or_create(dir: &Path, wanted: &CacheInfo) -> Result<Self, CacheDirError> {
        match fs::metadata(dir) {
            Ok(meta) if !meta.is_dir() => return Err(CacheDirError::NotADirectory(dir.to_owned())),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(dir).map_err(write_error(dir))?;
            }
            Err(e) => return Err(read_error(dir)(e)),
        }
        let cache = match read_cache_info(dir)? {
            Some((found, text)) => {
                let file = dir.join(cache_info::FILE_NAME);
                let merged = merge_cache_info(&file, found.clone(), wanted)?;
                let added = CacheInfo {
                    store_dir: None,
                    want_mass_query: merged
                        .want_mass_query
                        .filter(|_| found.want_mass_query.is_none()),
                    priority: merged.priority.filter(|_| found.priority.is_none()),
                    upstreams: Upstreams::default(),
                };
                let cache = CacheDir {
                    root: dir.to_owned(),
                    info: merged,
                };
                if added != CacheInfo::default() {
                    // The lines it has stay as they are, unknown ones too.
                    let mut text = text;
                    if !text.is_empty() && !text.ends_with('\n') {
                        text.push('\n');
                    }
                    text.push_str(&added.to_string());
                    cache.replace_file(&file, text.as_bytes())?;
                }
                cache
            }
            None => {
                if !is_empty_but_for_temp_files(dir)? {
                    return Err(CacheDirError::NotEmpty(dir.to_owned()));
                }
                let cache = CacheDir {
                    root: dir.to_owned(),
                    info: wanted.clone(),
                };
                let file = cache.cache_info_file();
                cache.replace_file(&file, cache.info.to_string().as_bytes())?;
                cache
            }
        };
        cache.refuse_symlinked_directories()?;
        cache.create_subdirectories()?;
        Ok(cache)
    }

    /// Adds to `nix-cache-info` the upstreams of `upstreams` it does not
    /// name yet, after the lines it has (unknown ones too), atomically:
    /// a cache that leaves paths out says so before it does. Runs into the
    /// same cache take turns, as for `store-paths`.
    pub fn add_upstreams(&mut self, upstreams: &Upstreams) -> Result<(), CacheDirError> {
        if upstreams.is_empty() {
            return Ok(());
        }
        let _lock = self.lock_store_paths()?;
        let Some((found, text)) = read_cache_info(&self.root)? else {
            return Err(CacheDirError::NotACache(self.root.clone()));
        };
        let mut all = found.upstreams.clone();
        if !all.add(upstreams) {
            self.info.upstreams = all;
            return Ok(());
        }
        // Its other lines stay as they are, unknown ones too; the upstreams
        // follow them, those it named first, URLs before key names.
        let mut text: String = text
            .lines()
            .filter(|line| {
                !line
                    .split_once(':')
                    .is_some_and(|(key, _)| cache_info::is_upstream_key(key))
            })
            .map(|line| format!("{line}\n"))
            .collect();
        let lines = CacheInfo {
            upstreams: all.clone(),
            ..CacheInfo::default()
        };
        text.push_str(&lines.to_string());
        self.replace_file(&self.cache_info_file(), text.as_bytes())?;
        self.info.upstreams = all;
        Ok(())
    }

    /// The cache directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// What its `nix-cache-info` says.
    pub fn info(&self) -> &CacheInfo {
        &self.info
    }

    /// The store directory its paths are in (`StoreDir`, by default
    /// `/nix/store`, as Nix assumes).
    pub fn store_dir(&self) -> &str {
        self.info.store_dir.as_deref().unwrap_or(DEFAULT_STORE_DIR)
    }

    /// `nix-cache-info`.
    pub fn cache_info_file(&self) -> PathBuf {
        self.root.join(cache_info::FILE_NAME)
    }

    /// `nar/`.
    pub fn nar_dir(&self) -> PathBuf {
        self.root.join(NAR_DIR)
    }

    /// `debuginfo/`.
    pub fn debuginfo_dir(&self) -> PathBuf {
        self.root.join(DEBUGINFO_DIR)
    }

    /// `store-paths`.
    pub fn store_paths_file(&self) -> PathBuf {
        self.root.join(STORE_PATHS)
    }

    /// The file a narinfo's `URL` (relative to the cache) names. Where it
    /// leads is for the caller to check: the URL is untrusted.
    pub fn file(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    /// `<hash>.narinfo`, the narinfo of the path with hash part `hash_part`.
    pub fn narinfo_path(&self, hash_part: &str) -> PathBuf {
        self.root.join(narinfo::file_name(hash_part))
    }

    /// `<hash>.ls`, the listing of the path with hash part `hash_part`.
    pub fn listing_path(&self, hash_part: &str) -> PathBuf {
        self.root.join(format!("{hash_part}.ls"))
    }

    /// Makes the subdirectories the cache lacks.
    fn create_subdirectories(&self) -> Result<(), CacheDirError> {
        for sub in SUBDIRECTORIES {
            let dir = self.root.join(sub);
            match fs::create_dir(&dir) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                    return Err(write_error(&dir)(e));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Refuses a subdirectory that is a symlink: what it holds is outside
    /// the cache, and no operation reads, writes or deletes there.
    fn refuse_symlinked_directories(&self) -> Result<(), CacheDirError> {
        for sub in SUBDIRECTORIES {
            let dir = self.root.join(sub);
            match dir.symlink_metadata() {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(CacheDirError::Symlink(dir));
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(read_error(&dir)(e)),
            }
        }
        Ok(())
    }

    /// Takes the cache lock: a `flock` on `nar/` (the cache directory's own
    /// lock guards `store-paths`). Every `build --to` holds it shared from
    /// before it looks for the paths already cached until its roots are in
    /// `store-paths`, and `prune` holds it exclusively, so runs write at
    /// once, but never while a prune decides what to keep and deletes the
    /// rest. When another holds it, `waiting` is called once before this
    /// waits for it.
    pub fn lock(&self, how: CacheLock, waiting: impl FnOnce()) -> Result<DirLock, CacheDirError> {
        let nar = self.nar_dir();
        let open = || File::open(&nar).map_err(read_error(&nar));
        let taken = match how {
            CacheLock::Shared => DirLock::try_shared(open()?),
            CacheLock::Exclusive => DirLock::try_exclusive(open()?),
        };
        if let Some(lock) = taken.map_err(write_error(&nar))? {
            return Ok(lock);
        }
        waiting();
        match how {
            CacheLock::Shared => DirLock::shared(open()?),
            CacheLock::Exclusive => DirLock::exclusive(open()?),
        }
        .map_err(write_error(&nar))
    }

    /// The roots `store-paths` lists, in order and without repeats; none
    /// when there is no such file.
    pub fn store_paths(&self) -> Result<Vec<StorePath>, CacheDirError> {
        let file = self.store_paths_file();
        let text = match fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(read_error(&file)(e)),
        };
        let store_dir = self.store_dir();
        let listed = text
            .lines()
            .filter(|l| !l.is_empty())
            .map(|line| {
                StorePath::parse(line, store_dir).map_err(|_| CacheDirError::StorePathsLine {
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

    /// Adds `roots` to `store-paths`, keeping the paths it lists; writes
    /// nothing when it lists them all already.
    pub fn add_store_paths(&self, roots: &[StorePath]) -> Result<(), CacheDirError> {
        let _lock = self.lock_store_paths()?;
        let mut paths = self.store_paths()?;
        let before = paths.len();
        store_path::append_new(&mut paths, roots.iter().cloned());
        if paths.len() == before && self.store_paths_file().exists() {
            return Ok(());
        }
        self.write_store_paths(&paths)
    }

    /// Makes `store-paths` list `roots` and nothing else.
    pub fn replace_store_paths(&self, roots: &[StorePath]) -> Result<(), CacheDirError> {
        let _lock = self.lock_store_paths()?;
        self.write_store_paths(roots)
    }

    /// Writes `store-paths` of a new output, in place.
    pub fn create_store_paths(&self, roots: &[StorePath]) -> Result<(), CacheDirError> {
        let file = self.store_paths_file();
        fs::write(&file, store_paths_text(roots)).map_err(write_error(&file))
    }

    /// Runs into the same cache take turns to read, merge and replace
    /// `store-paths`, under the lock of the cache directory itself.
    fn lock_store_paths(&self) -> Result<DirLock, CacheDirError> {
        let root = File::open(&self.root).map_err(read_error(&self.root))?;
        DirLock::exclusive(root).map_err(write_error(&self.root))
    }

    fn write_store_paths(&self, roots: &[StorePath]) -> Result<(), CacheDirError> {
        let file = self.store_paths_file();
        self.replace_file(&file, store_paths_text(roots).as_bytes())
    }

    /// Replaces `dest` with `contents` atomically and durably: a synced
    /// temporary file renamed into place, and the directory synced.
    fn replace_file(&self, dest: &Path, contents: &[u8]) -> Result<(), CacheDirError> {
        let tmp = TempNames::default().next(dest);
        let written = File::create(&tmp)
            .and_then(|mut f| {
                f.write_all(contents)?;
                f.sync_all()
            })
            .and_then(|()| fs::rename(&tmp, dest))
            .and_then(|()| files::sync_dir(&self.root));
        written.map_err(|e| {
            let _ = fs::remove_file(&tmp);
            write_error(dest)(e)
        })
    }
}

fn store_paths_text(roots: &[StorePath]) -> String {
    roots.iter().map(|p| format!("{p}\n")).collect()
}

/// Reads `nix-cache-info` in `dir`, bounded and without following a
/// symlink: what it says and its text; None if there is none.
fn read_cache_info(dir: &Path) -> Result<Option<(CacheInfo, String)>, CacheDirError> {
    let path = dir.join(cache_info::FILE_NAME);
    let bytes = match read_bounded(&path) {
        Ok(bytes) => bytes,
        Err(CacheDirError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let text = String::from_utf8(bytes).map_err(|_| CacheDirError::NotText(path.clone()))?;
    match text.parse() {
        Ok(info) => Ok(Some((info, text))),
        Err(source) => Err(CacheDirError::CacheInfo { path, source }),
    }
}

/// Reads the small file `path` of a cache (a narinfo, `nix-cache-info`, a
/// debug-info entry) whole: refused if it is a symlink, not a regular file,
/// or larger than [`narinfo::MAX_SIZE`] (then nothing of it is read).
pub fn read_bounded(path: &Path) -> Result<Vec<u8>, CacheDirError> {
    let max = narinfo::MAX_SIZE;
    // O_NONBLOCK: a FIFO under a narinfo's name must not hang the open.
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => CacheDirError::Symlink(path.to_owned()),
            _ => read_error(path)(e),
        })?;
    let meta = file.metadata().map_err(read_error(path))?;
    if !meta.is_file() {
        return Err(CacheDirError::NotAFile(path.to_owned()));
    }
    if meta.len() > max {
        return Err(CacheDirError::TooLarge {
            path: path.to_owned(),
            max,
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may grow after the check: the read stops past the bound.
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error(path))?;
    if bytes.len() as u64 > max {
        return Err(CacheDirError::TooLarge {
            path: path.to_owned(),
            max,
        });
    }
    Ok(bytes)
}

/// `found`, with what `wanted` adds to it; an error naming the file and
/// the key when they disagree on a setting both have.
fn merge_cache_info(
    path: &Path,
    found: CacheInfo,
    wanted: &CacheInfo,
) -> Result<CacheInfo, CacheDirError> {
    fn merge<T: Clone + PartialEq + ToString>(
        path: &Path,
        key: &'static str,
        found: Option<T>,
        wanted: &Option<T>,
    ) -> Result<Option<T>, CacheDirError> {
        match (found, wanted) {
            (Some(found), Some(wanted)) if found != *wanted => {
                Err(CacheDirError::CacheInfoMismatch {
                    path: path.to_owned(),
                    key,
                    found: found.to_string(),
                    expected: wanted.to_string(),
                })
            }
            (Some(found), _) => Ok(Some(found)),
            (None, wanted) => Ok(wanted.clone()),
        }
    }
    // A cache without StoreDir is for /nix/store, as Nix reads it; the
    // line is not added.
    let store_dir = found
        .store_dir
        .clone()
        .or(Some(DEFAULT_STORE_DIR.to_owned()));
    merge(path, "StoreDir", store_dir, &wanted.store_dir)?;
    let priority = merge(path, "Priority", found.priority, &wanted.priority)?;
    // WantMassQuery is shown 1 or 0, as in the file.
    let flag = |w: Option<bool>| w.map(u8::from);
    let want_mass_query = merge(
        path,
        "WantMassQuery",
        flag(found.want_mass_query),
        &flag(wanted.want_mass_query),
    )?;
    Ok(CacheInfo {
        store_dir: found.store_dir,
        priority,
        want_mass_query: want_mass_query.map(|w| w == 1),
        // The upstreams are added by `add_upstreams`, under the lock.
        upstreams: found.upstreams,
    })
}

/// Whether `dir` holds nothing, or only what a run killed before writing
/// `nix-cache-info` may have left.
fn is_empty_but_for_temp_files(dir: &Path) -> Result<bool, CacheDirError> {
    for entry in fs::read_dir(dir).map_err(read_error(dir))? {
        let name = entry.map_err(read_error(dir))?.file_name();
        if TempNames::owner(&name).is_none() {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn wanted(priority: Option<i64>, want_mass_query: Option<bool>) -> CacheInfo {
        CacheInfo {
            store_dir: Some(DEFAULT_STORE_DIR.to_owned()),
            want_mass_query,
            priority,
            upstreams: Upstreams::default(),
        }
    }

    #[test]
    fn an_existing_cache_info_must_agree_with_what_a_run_asks_for() {
        let path = Path::new("/c/nix-cache-info");
        let found = |text: &str| text.parse::<CacheInfo>().unwrap();
        let merged = merge_cache_info(
            path,
            found("StoreDir: /nix/store\nPriority: 30\n"),
            &wanted(Some(30), None),
        );
        assert_eq!(merged.unwrap().priority, Some(30));
        let e = merge_cache_info(path, found("StoreDir: /gnu/store\n"), &wanted(None, None))
            .unwrap_err();
        assert!(
            matches!(&e, CacheDirError::CacheInfoMismatch { key: "StoreDir", found, .. } if found == "/gnu/store"),
            "{e}"
        );
        let e = merge_cache_info(
            path,
            found("StoreDir: /nix/store\nPriority: 40\n"),
            &wanted(Some(30), None),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "'/c/nix-cache-info' says Priority: 40, but this run asks for Priority: 30"
        );
        let e = merge_cache_info(path, found("WantMassQuery: 0\n"), &wanted(None, Some(true)))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "'/c/nix-cache-info' says WantMassQuery: 0, but this run asks for WantMassQuery: 1"
        );
    }

    #[test]
    fn a_setting_the_cache_info_lacks_is_added_and_others_kept() {
        let path = Path::new("/c/nix-cache-info");
        // No StoreDir means /nix/store to Nix: it agrees, and is not added.
        let merged = merge_cache_info(
            path,
            "Priority: 10\n".parse().unwrap(),
            &wanted(None, Some(false)),
        )
        .unwrap();
        assert_eq!(
            merged,
            CacheInfo {
                store_dir: None,
                want_mass_query: Some(false),
                priority: Some(10),
                upstreams: Upstreams::default(),
            }
        );
    }

    #[test]
    fn upstreams_the_cache_info_lacks_are_added_after_its_other_lines() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(cache_info::FILE_NAME);
        fs::write(
            &file,
            "StoreDir: /nix/store\nSomethingNew: 1\nUpstream: file:///a\n",
        )
        .unwrap();
        let mut cache = CacheDir::open(dir.path()).unwrap();
        let upstreams = Upstreams {
            urls: vec!["file:///a".into(), "https://b".into()],
            keys: vec!["k-1".into()],
        };
        cache.add_upstreams(&upstreams).unwrap();
        let text = fs::read_to_string(&file).unwrap();
        assert_eq!(
            text,
            "StoreDir: /nix/store\nSomethingNew: 1\nUpstream: file:///a\n\
             Upstream: https://b\nUpstreamKey: k-1\n"
        );
        assert_eq!(cache.info().upstreams, upstreams);
        // Named already: the file is left as it is.
        cache.add_upstreams(&upstreams).unwrap();
        assert_eq!(fs::read_to_string(&file).unwrap(), text);
    }

    #[test]
    fn narinfos_are_the_entries_named_for_a_hash_part_whatever_their_type() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CacheDir::unchecked(dir.path());
        let (a, b) = ("0".repeat(32), "1".repeat(32));
        fs::write(cache.narinfo_path(&a), "").unwrap();
        // A symlink is listed, to be refused when read.
        symlink("/etc/hostname", cache.narinfo_path(&b)).unwrap();
        for other in [
            "x.narinfo",
            ".tmp.narinfo",
            "00000000000000000000000000000000e.narinfo",
        ] {
            fs::write(dir.path().join(other), "").unwrap();
        }
        fs::create_dir(dir.path().join("nar")).unwrap();
        fs::write(dir.path().join("nar").join(format!("{a}.narinfo")), "").unwrap();
        assert_eq!(cache.narinfos().unwrap(), [a, b]);
    }

    #[test]
    fn a_narinfo_is_read_only_as_a_file_of_the_cache_and_no_larger_than_a_narinfo() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CacheDir::unchecked(dir.path());
        let [link, huge, fifo, missing] = ["0", "1", "2", "3"].map(|c| c.repeat(32));
        let outside = dir.path().join("outside");
        fs::write(&outside, "StorePath: /nix/store/x\n").unwrap();
        symlink(&outside, cache.narinfo_path(&link)).unwrap();
        let file = File::create(cache.narinfo_path(&huge)).unwrap();
        file.set_len(narinfo::MAX_SIZE + 1).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(cache.narinfo_path(&fifo))
            .status();
        assert!(made.unwrap().success());

        let e = cache.read_narinfo_bytes(&link).unwrap_err();
        assert!(matches!(e, CacheDirError::Symlink(_)), "{e}");
        assert!(matches!(
            cache.has_narinfo(&link),
            Err(CacheDirError::Symlink(_))
        ));
        let e = cache.read_narinfo_bytes(&huge).unwrap_err();
        assert!(matches!(e, CacheDirError::TooLarge { .. }), "{e}");
        assert!(matches!(
            cache.has_narinfo(&huge),
            Err(CacheDirError::TooLarge { .. })
        ));
        // Opened without blocking, and refused.
        let e = cache.read_narinfo_bytes(&fifo).unwrap_err();
        assert!(matches!(e, CacheDirError::NotAFile(_)), "{e}");
        assert!(!cache.has_narinfo(&missing).unwrap());
    }

    #[test]
    fn a_cache_with_a_symlinked_subdirectory_is_not_opened() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        CacheDir::create_new(&cache, wanted(None, None)).unwrap();
        fs::rename(cache.join("debuginfo"), dir.path().join("elsewhere")).unwrap();
        symlink(dir.path().join("elsewhere"), cache.join("debuginfo")).unwrap();
        let e = CacheDir::open(&cache).unwrap_err();
        assert!(
            matches!(&e, CacheDirError::Symlink(p) if p.ends_with("debuginfo")),
            "{e}"
        );
    }

    #[test]
    fn store_paths_are_merged_in_order_without_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CacheDir::create_new(&dir.path().join("c"), wanted(None, None)).unwrap();
        let p = |name: &str| {
            StorePath::parse(
                &format!("/nix/store/{}-{name}", "0".repeat(32)),
                "/nix/store",
            )
            .unwrap()
        };
        assert!(cache.store_paths().unwrap().is_empty());
        cache.add_store_paths(&[p("b"), p("a")]).unwrap();
        cache.add_store_paths(&[p("a"), p("c")]).unwrap();
        assert_eq!(cache.store_paths().unwrap(), [p("b"), p("a"), p("c")]);
        cache.replace_store_paths(&[p("c")]).unwrap();
        assert_eq!(
            fs::read_to_string(cache.store_paths_file()).unwrap(),
            format!("{}\n", p("c"))
        );
    }
}
