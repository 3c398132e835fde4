//! How a run's files reach their names, decided once per run: written in
//! place into a new output ([`NewOutput`]), or under a temporary name and
//! renamed into an existing cache ([`ExistingCache`]), whose narinfos are
//! made durable by group commit.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use super::CacheError;
use super::commit::{BatchPolicy, GroupCommit};
use crate::cache::{CacheDir, write_error};
use crate::format::narinfo::NarInfo;
use crate::support::files::{self, TempNames};

/// The largest NAR that [`NewOutput`] compresses in memory to write it
/// under its final name; larger ones go through a temporary file, whose
/// rename costs nothing beside their compression. Each worker holds at most
/// this much (and its compressed form) at once.
const IN_MEMORY_NAR: u64 = 1 << 20;

/// Where a run writes, and how its files reach their names.
pub(super) trait Target: Sync {
    fn cache(&self) -> &CacheDir;

    /// Temporary names for the files it writes.
    fn temp(&self) -> &TempNames;

    /// Whether a NAR of `nar_size` bytes is compressed in memory, to be
    /// written straight under its name (its FileHash, known only at the end).
    fn in_memory(&self, nar_size: u64) -> bool;

    /// Writes `contents` to `dest`, a file a narinfo will point to,
    /// replacing it.
    fn write_entry(&self, dest: &Path, contents: &[u8]) -> io::Result<()>;

    /// Writes `dest`, a file a narinfo will point to, unless it exists;
    /// returns whether it did.
    fn create_entry(&self, dest: &Path, contents: &[u8]) -> io::Result<bool>;

    /// Renames the complete file `tmp` to `dest`.
    fn place(&self, tmp: &Path, dest: &Path) -> io::Result<()>;

    /// Publishes `info`, whose NAR and whose references' narinfos are
    /// published; `done` is called for each narinfo once it is in place.
    fn publish(&self, info: NarInfo, done: &(dyn Fn(&NarInfo) + Sync)) -> Result<(), CacheError>;

    /// Publishes whatever [`Self::publish`] holds back.
    fn finish(&self, done: &(dyn Fn(&NarInfo) + Sync)) -> Result<(), CacheError>;
}

/// A new output that nothing reads before the run ends, and that is removed
/// if it fails, as a Nix build's `$out`: files are written straight under
/// their names, and nothing is synced (Nix makes the output durable when it
/// registers it). A small NAR is compressed in memory, since its name is
/// its FileHash. On 10,000 small paths the renames this saves were a fifth
/// of the directory operations.
pub(super) struct NewOutput {
    pub(super) cache: CacheDir,
    pub(super) temp: TempNames,
}

impl Target for NewOutput {
    fn cache(&self) -> &CacheDir {
        &self.cache
    }

    fn temp(&self) -> &TempNames {
        &self.temp
    }

    fn in_memory(&self, nar_size: u64) -> bool {
        nar_size <= IN_MEMORY_NAR
    }

    fn write_entry(&self, dest: &Path, contents: &[u8]) -> io::Result<()> {
        fs::write(dest, contents)
    }

    fn create_entry(&self, dest: &Path, contents: &[u8]) -> io::Result<bool> {
        match File::create_new(dest).and_then(|mut f| f.write_all(contents)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn place(&self, tmp: &Path, dest: &Path) -> io::Result<()> {
        fs::rename(tmp, dest)
    }

    fn publish(&self, info: NarInfo, done: &(dyn Fn(&NarInfo) + Sync)) -> Result<(), CacheError> {
        let dest = self.cache.narinfo_path(info.store_path.hash_part());
        fs::write(&dest, info.to_string()).map_err(write_error(&dest))?;
        done(&info);
        Ok(())
    }

    fn finish(&self, _done: &(dyn Fn(&NarInfo) + Sync)) -> Result<(), CacheError> {
        Ok(())
    }
}

/// A cache that others may read, or write to, during the run, and that a
/// crash must not damage: every file is written under a temporary name and
/// renamed into place. NARs, listings and debug-info entries are not synced
/// one by one: narinfos are committed in batches ([`super::commit`]), each
/// after one sync of the filesystem, which makes everything they point to
/// durable first.
pub(super) struct ExistingCache {
    pub(super) cache: CacheDir,
    pub(super) temp: TempNames,
    pub(super) group: GroupCommit,
}

impl ExistingCache {
    pub(super) fn new(cache: CacheDir) -> Self {
        ExistingCache {
            cache,
            temp: TempNames::default(),
            group: GroupCommit::new(BatchPolicy::default()),
        }
    }

    /// Writes `contents` to `tmp`, unsynced, and renames it to `dest`
    /// ([`Target::place`]); `tmp` is removed on failure.
    fn write_through(&self, tmp: &Path, dest: &Path, contents: &[u8]) -> io::Result<()> {
        let written = File::create(tmp)
            .and_then(|mut f| f.write_all(contents))
            .and_then(|()| self.place(tmp, dest));
        if written.is_err() {
            let _ = fs::remove_file(tmp);
        }
        written
    }

    fn commit(
        &self,
        batch: Vec<NarInfo>,
        done: &(dyn Fn(&NarInfo) + Sync),
    ) -> Result<(), CacheError> {
        super::commit::commit(&self.cache, &self.temp, &batch)?;
        batch.iter().for_each(done);
        Ok(())
    }
}

impl Target for ExistingCache {
    fn cache(&self) -> &CacheDir {
        &self.cache
    }

    fn temp(&self) -> &TempNames {
        &self.temp
    }

    fn in_memory(&self, _nar_size: u64) -> bool {
        false
    }

    fn write_entry(&self, dest: &Path, contents: &[u8]) -> io::Result<()> {
        self.write_through(&self.temp.next(dest), dest, contents)
    }

    /// An empty `dest`, as a power loss leaves a file renamed into place
    /// unsynced, counts as none, and is replaced by a synced file.
    fn create_entry(&self, dest: &Path, contents: &[u8]) -> io::Result<bool> {
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
        result
    }

    /// A `dest` that exists may be what a committed narinfo points to (a
    /// path with the same NAR, or one another run committed since this run
    /// looked): it is replaced only by a synced file, or a crash could leave
    /// that narinfo pointing at an empty one.
    fn place(&self, tmp: &Path, dest: &Path) -> io::Result<()> {
        if files::rename_new(tmp, dest)? {
            return Ok(());
        }
        File::open(tmp)?.sync_all()?;
        fs::rename(tmp, dest)
    }

    fn publish(&self, info: NarInfo, done: &(dyn Fn(&NarInfo) + Sync)) -> Result<(), CacheError> {
        self.group.add(info, |batch| self.commit(batch, done))
    }

    fn finish(&self, done: &(dyn Fn(&NarInfo) + Sync)) -> Result<(), CacheError> {
        self.group.finish(|batch| self.commit(batch, done))
    }
}
