//! A cache directory being written: its files written atomically (and,
//! when updating, durably, narinfos by group commit), each path's NAR,
//! listing and debug-info entries, its narinfo, and `store-paths`.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::commit::{self, BatchPolicy, GroupCommit};
use super::pipeline::{check, compress_and_hash, plan};
use super::publication::Publication;
use super::{
    CacheError, DIRECTORIES, Options, STORE_PATHS, TEMP_FILE_DIRS, read_error, write_error,
};
use crate::format::cache_info::{CacheInfo, Upstreams};
use crate::format::debuginfo;
use crate::format::nar::listing;
use crate::format::narinfo::{self, NarInfo, Sig};
use crate::format::store_path::{self, PathInfo, StorePath};
use crate::support::files::{self, DirLock, TempNames};
use crate::support::progress::{Progress, Totals, human_bytes};
use crate::support::schedule;

/// How a run's files reach their names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// A new output that nothing reads before the run ends, and that is
    /// removed if it fails, as a Nix build's `$out`: files are written
    /// straight under their names, and nothing is synced (Nix makes the
    /// output durable when it registers it). A small NAR is compressed in
    /// memory, since its name is its FileHash. On 10,000 small paths the
    /// renames this saves were a fifth of the directory operations.
    New,
    /// A cache that others may read, or write to, during the run, and that
    /// a crash must not damage: every file is written under a temporary
    /// name and renamed into place. NARs, listings and debug-info entries
    /// are not synced one by one: narinfos are committed in batches
    /// ([`super::commit`]), each after one sync of the filesystem, which
    /// makes everything they point to durable first (see
    /// [`super::update_cache`]).
    Update,
}

/// The largest NAR that [`Mode::New`] compresses in memory to write it
/// under its final name; larger ones go through a temporary file, whose
/// rename costs nothing beside their compression. Each worker holds at most
/// this much (and its compressed form) at once.
const IN_MEMORY_NAR: u64 = 1 << 20;

/// A cache directory being written.
pub(super) struct Cache<'a> {
    root: &'a Path,
    mode: Mode,
    temp: TempNames,
    /// Debug-info entries written by this run: entry name -> the store path
    /// it was written for.
    debug_entries: Mutex<HashMap<String, StorePath>>,
}

impl<'a> Cache<'a> {
    pub(super) fn new(root: &'a Path, mode: Mode) -> Self {
        Cache {
            root,
            mode,
            temp: TempNames::default(),
            debug_entries: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn create_directories(&self) -> Result<(), CacheError> {
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

    pub(super) fn narinfo_path(&self, path: &StorePath) -> PathBuf {
        self.root.join(narinfo::file_name(path.hash_part()))
    }

    /// Writes `contents` to `dest`, replacing it: in [`Mode::Update`]
    /// through a temporary file, synced, and a rename. For files no
    /// narinfo points to (`nix-cache-info`, `store-paths`).
    pub(super) fn write_file(&self, dest: &Path, contents: &[u8]) -> Result<(), CacheError> {
        if self.mode == Mode::New {
            return fs::write(dest, contents).map_err(write_error(dest));
        }
        let tmp = self.temp.next(dest);
        let written = File::create(&tmp)
            .and_then(|mut f| {
                f.write_all(contents)?;
                f.sync_all()
            })
            .and_then(|()| fs::rename(&tmp, dest));
        written.map_err(|e| {
            let _ = fs::remove_file(&tmp);
            write_error(dest)(e)
        })
    }

    /// Writes `contents` to `dest`, a file a narinfo will point to: in
    /// [`Mode::Update`] through a temporary file, unsynced (the commit of
    /// the narinfo syncs it), and [`Self::place`].
    fn write_entry(&self, dest: &Path, contents: &[u8]) -> Result<(), CacheError> {
        if self.mode == Mode::New {
            return fs::write(dest, contents).map_err(write_error(dest));
        }
        let tmp = self.temp.next(dest);
        let written = File::create(&tmp)
            .and_then(|mut f| f.write_all(contents))
            .and_then(|()| self.place(&tmp, dest));
        written.map_err(|e| {
            let _ = fs::remove_file(&tmp);
            write_error(dest)(e)
        })
    }

    /// Renames the unsynced temporary file `tmp` to `dest`. A `dest` that
    /// exists may be what a committed narinfo points to (a path with the
    /// same NAR, or one another run committed since this run looked): it is
    /// replaced only by a synced file, or a crash could leave that narinfo
    /// pointing at an empty one.
    fn place(&self, tmp: &Path, dest: &Path) -> io::Result<()> {
        if files::rename_new(tmp, dest)? {
            return Ok(());
        }
        File::open(tmp)?.sync_all()?;
        fs::rename(tmp, dest)
    }

    /// Makes the renames done in `dir` durable.
    pub(super) fn sync_dir(&self, dir: &Path) -> Result<(), CacheError> {
        if self.mode == Mode::Update {
            files::sync_dir(dir).map_err(write_error(dir))?;
        }
        Ok(())
    }

    /// Writes every path of `closure`; returns the totals.
    ///
    /// NARs are written in the order [`schedule`] picks, but a narinfo is
    /// published only once the narinfos of all its references are: at any
    /// moment, the cache is closed under references.
    pub(super) fn write_paths(
        &self,
        closure: &[PathInfo],
        opts: &Options,
        progress: &Progress,
    ) -> Result<Totals, CacheError> {
        let plan = plan(closure)?;
        progress.begin(plan.len(), plan.iter().map(|(size, _)| size).sum());
        let publication = Publication::new(closure)?;
        let group = GroupCommit::new(BatchPolicy::default());
        let totals = Mutex::new(Totals::default());
        let done = |info: &NarInfo| {
            let file_size = info.file_size.unwrap_or(info.nar_size);
            progress.log(format_args!(
                "cached {}: NAR {} -> {} {}",
                info.store_path.name(),
                human_bytes(info.nar_size),
                info.compression,
                human_bytes(file_size),
            ));
            totals.lock().unwrap().add(info.nar_size, file_size);
        };
        let commit = |batch: Vec<NarInfo>| {
            self.commit(&batch)?;
            batch.iter().for_each(done);
            Ok(())
        };
        let publish = |info: NarInfo| match self.mode {
            Mode::New => {
                let text = info.to_string();
                self.write_file(&self.narinfo_path(&info.store_path), text.as_bytes())?;
                done(&info);
                Ok(())
            }
            Mode::Update => group.add(info, commit),
        };
        let threshold = opts.compression.multithread_threshold();
        schedule::run(
            &plan,
            |(size, _)| *size,
            threshold,
            opts.jobs,
            |&(size, path), threads| {
                let info = self.write_path(path, size, opts, threads, progress)?;
                // Counted now, with its bytes; its line comes with its narinfo.
                progress.path_done();
                publication.ready(info, publish)
            },
        )?;
        group.finish(commit)?;
        Ok(totals.into_inner().unwrap())
    }

    /// Commits a batch of narinfos whose references are committed or in
    /// the batch (see [`super::commit`]): on return, they are durable.
    fn commit(&self, batch: &[NarInfo]) -> Result<(), CacheError> {
        let mut temps = Vec::with_capacity(batch.len());
        let written = batch.iter().try_for_each(|info| {
            let dest = self.narinfo_path(&info.store_path);
            let tmp = self.temp.next(&dest);
            // Pushed first, so that a partial one is removed too.
            temps.push(Some(tmp.clone()));
            fs::write(&tmp, info.to_string()).map_err(write_error(&dest))
        });
        let renamed = written
            .and_then(|()| self.sync_filesystems())
            .and_then(|()| {
                for level in commit::levels(batch)? {
                    for i in level {
                        let dest = self.narinfo_path(&batch[i].store_path);
                        let tmp = temps[i].take().expect("each narinfo is renamed once");
                        if let Err(e) = fs::rename(&tmp, &dest) {
                            temps[i] = Some(tmp);
                            return Err(write_error(&dest)(e));
                        }
                    }
                    // The next level's narinfos must not outlive these in a crash.
                    self.sync_dir(self.root)?;
                }
                Ok(())
            });
        if renamed.is_err() {
            for tmp in temps.into_iter().flatten() {
                let _ = fs::remove_file(tmp);
            }
        }
        renamed
    }

    /// Syncs the filesystem of the cache, and those of `nar/` and
    /// `debuginfo/` where they are others (a mount, or a symlink to one).
    fn sync_filesystems(&self) -> Result<(), CacheError> {
        let mut synced = Vec::new();
        for dir in TEMP_FILE_DIRS.map(|sub| self.root.join(sub)) {
            let device = fs::metadata(&dir).map_err(read_error(&dir))?.dev();
            if !synced.contains(&device) {
                files::sync_filesystem(&dir).map_err(write_error(&dir))?;
                synced.push(device);
            }
        }
        Ok(())
    }

    /// Writes the NAR, listing and debug-info entries of `path`, in that
    /// order (durable once the narinfo is committed); returns its narinfo,
    /// still to be published.
    fn write_path(
        &self,
        path: &PathInfo,
        nar_size: u64,
        opts: &Options,
        threads: u32,
        progress: &Progress,
    ) -> Result<NarInfo, CacheError> {
        let (info, listing) = self.write_nar(path, nar_size, opts, threads, progress)?;
        if let Some(listing) = listing {
            if opts.write_nar_listing {
                let ls = self.root.join(format!("{}.ls", path.path.hash_part()));
                self.write_entry(&ls, &listing.to_ls_json())?;
            }
            if opts.index_debug_info {
                self.index_debug_info(&path.path, &info.url, &listing)?;
            }
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
                Some(_) => self.write_entry(&dest, entry.as_bytes())?,
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
    /// Unsynced: the commit of the narinfo it was written for syncs it. In
    /// [`Mode::Update`] an empty `dest`, as a power loss leaves a file
    /// renamed into place unsynced, counts as none, and is replaced by a
    /// synced file.
    fn create_file(&self, dest: &Path, contents: &[u8]) -> Result<bool, CacheError> {
        if self.mode == Mode::New {
            return match File::create_new(dest).and_then(|mut f| f.write_all(contents)) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(write_error(dest)(e)),
            };
        }
        let tmp = self.temp.next(dest);
        let result = File::create(&tmp)
            .and_then(|mut f| f.write_all(contents))
            // A hard link, unlike a rename, never replaces its destination.
            .and_then(|()| match fs::hard_link(&tmp, dest) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if fs::metadata(dest)?.len() > 0 {
                        return Ok(false);
                    }
                    File::open(&tmp)?.sync_all()?;
                    fs::rename(&tmp, dest).map(|()| true)
                }
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
        nar_size: u64,
        opts: &Options,
        threads: u32,
        progress: &Progress,
    ) -> Result<(NarInfo, Option<listing::Node>), CacheError> {
        let nar_dir = self.root.join("nar");
        let in_memory = self.mode == Mode::New && nar_size <= IN_MEMORY_NAR;
        let (url, file_hash, file_size, nar) = if in_memory {
            let (bytes, file) = compress_and_hash(
                path,
                nar_size,
                Vec::new(),
                &nar_dir,
                opts,
                threads,
                progress,
            )?;
            check(path, file.nar.hash, file.nar.size)?;
            let url = file.url(opts.compression);
            let dest = self.root.join(&url);
            // Two paths with the same contents have the same file: the
            // first one writes it.
            match File::create_new(&dest).and_then(|mut f| f.write_all(&bytes)) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                    return Err(CacheError::WriteNar {
                        path: path.path.clone(),
                        file: dest,
                        source: e,
                    });
                }
                _ => {}
            }
            (url, file.hash, file.size, file.nar)
        } else {
            let tmp = self.temp.next(&nar_dir.join(path.path.hash_part()));
            let sink = File::create(&tmp).map_err(write_error(&tmp))?;
            let checked = compress_and_hash(path, nar_size, sink, &tmp, opts, threads, progress)
                .and_then(|(_, file)| check(path, file.nar.hash, file.nar.size).map(|()| file));
            let file = match checked {
                Ok(file) => file,
                Err(e) => {
                    let _ = fs::remove_file(&tmp);
                    return Err(e);
                }
            };
            let url = file.url(opts.compression);
            let dest = self.root.join(&url);
            let placed = match self.mode {
                Mode::New => fs::rename(&tmp, &dest),
                Mode::Update => self.place(&tmp, &dest),
            };
            placed.map_err(|e| {
                let _ = fs::remove_file(&tmp);
                write_error(&dest)(e)
            })?;
            (url, file.hash, file.size, file.nar)
        };
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
            // What the store holds, carried over as `nix copy` does.
            signatures: path.signatures.iter().cloned().map(Sig::Valid).collect(),
            ca: path.ca.clone(),
        };
        Ok((info, nar.listing))
    }

    /// Adds `roots` to `store-paths`, keeping the paths it lists.
    pub(super) fn add_store_paths(
        &self,
        roots: &[StorePath],
        store_dir: &str,
    ) -> Result<(), CacheError> {
        let file = self.root.join(STORE_PATHS);
        // Runs into the same cache take turns to read, merge and replace it.
        let root = File::open(self.root).map_err(read_error(self.root))?;
        let _lock = DirLock::exclusive(root).map_err(write_error(self.root))?;
        let mut paths = super::read_store_paths(self.root, store_dir)?;
        let before = paths.len();
        store_path::append_new(&mut paths, roots.iter().cloned());
        if paths.len() == before && file.exists() {
            return Ok(());
        }
        let list: String = paths.iter().map(|p| format!("{p}\n")).collect();
        self.write_file(&file, list.as_bytes())
    }

    /// Adds to the `nix-cache-info` at `file` the upstreams it does not name
    /// yet, keeping its other settings.
    pub(super) fn add_upstreams(
        &self,
        file: &Path,
        upstreams: &Upstreams,
    ) -> Result<(), CacheError> {
        if upstreams.is_empty() {
            return Ok(());
        }
        // Runs into the same cache take turns, as for `store-paths`.
        let root = File::open(self.root).map_err(read_error(self.root))?;
        let _lock = DirLock::exclusive(root).map_err(write_error(self.root))?;
        let text = fs::read_to_string(file).map_err(read_error(file))?;
        let mut info: CacheInfo = text.parse().map_err(|source| CacheError::CacheInfo {
            path: file.to_owned(),
            source,
        })?;
        if !info.upstreams.add(upstreams) {
            return Ok(());
        }
        self.write_file(file, info.to_string().as_bytes())
    }

    /// Removes temporary files that processes no longer running left behind.
    pub(super) fn remove_stale_temp_files(&self) -> Result<(), CacheError> {
        for dir in TEMP_FILE_DIRS.map(|sub| self.root.join(sub)) {
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
